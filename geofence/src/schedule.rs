//! Schedules: when a zone or rule is in force.
//!
//! A schedule is either [`Schedule::Always`] or a set of weekly windows in an IANA
//! time zone, plus dated exceptions.
//!
//! # Semantics
//! - A weekly window is `[start, end)` in local wall-clock time, on each of its
//!   weekdays. The weekday is the day the window *starts*. If `end <= start` the
//!   window ends the next day (`22:00–06:00` crosses midnight); `end == start` is a
//!   24-hour window.
//! - Each wall-clock boundary is placed in time on its own date, so windows follow
//!   DST: a 22:00–06:00 curfew over the spring-forward night lasts 7 hours, over
//!   the fall-back night 9 hours. A boundary inside a gap (02:30 on a
//!   spring-forward night) is placed just after the gap (03:30 new time); a
//!   boundary inside a fold (01:30 on a fall-back night) is placed at its first
//!   occurrence. This is jiff's "compatible" disambiguation, the one RFC 5545
//!   (iCalendar) prescribes.
//! - Dated exceptions are one-off `[start, end)` windows in the same time zone:
//!   [`ExceptionKind::Extra`] puts the schedule in force (an extra curfew night),
//!   [`ExceptionKind::Suspended`] takes it out of force (an approved absence).
//!   Suspension wins over everything else.
//! - Back-to-back windows (Mon 20:00–24:00 and Tue 00:00–06:00) form one period: a
//!   grace period applies only once, from the period's start.
//!
//! # Cost
//! Looking a time up resolves about two weeks of windows through the time-zone
//! database (a few microseconds). The engine caches the resulting constant segment
//! in a [`ScheduleCursor`], so a fix costs two integer comparisons until the next
//! boundary.

use crate::error::ScheduleError;
use jiff::civil::{self, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

const DAY_MS: i64 = 86_400_000;
/// How far a lookup resolves windows on either side of the looked-up time.
const HORIZON_DAYS: i64 = 7;

/// A set of weekdays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    /// Every day of the week.
    pub const EVERY_DAY: Weekdays = Weekdays(0x7f);
    /// Monday to Friday.
    pub const MONDAY_TO_FRIDAY: Weekdays = Weekdays(0x1f);

    /// The set of the given days.
    pub fn of(days: impl IntoIterator<Item = Weekday>) -> Weekdays {
        Weekdays(
            days.into_iter()
                .fold(0, |bits, d| bits | 1 << d.to_monday_zero_offset()),
        )
    }

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A window repeated on some weekdays, in local wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// The days on which the window starts.
    pub days: Weekdays,
    /// Local start time.
    pub start: civil::Time,
    /// Local end time; at or before `start` means the next day.
    pub end: civil::Time,
}

/// What a dated exception does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionKind {
    /// In force during the exception (e.g. an extra curfew night ordered by a court).
    Extra,
    /// Not in force during the exception (e.g. an approved hospital visit).
    Suspended,
}

/// A one-off window in the schedule's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatedException {
    /// What the exception does.
    pub kind: ExceptionKind,
    /// Local start.
    pub start: civil::DateTime,
    /// Local end (exclusive).
    pub end: civil::DateTime,
    from_ms: i64,
    until_ms: i64,
}

/// When a zone or rule is in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Schedule {
    /// Always in force.
    #[default]
    Always,
    /// In force during weekly windows and dated exceptions.
    Windows(Box<WindowSchedule>),
}

/// Weekly windows and dated exceptions in one time zone.
#[derive(Clone, Debug)]
pub struct WindowSchedule {
    tz_name: String,
    tz: TimeZone,
    windows: Vec<WeeklyWindow>,
    exceptions: Vec<DatedException>,
}

impl PartialEq for WindowSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.tz_name == other.tz_name
            && self.windows == other.windows
            && self.exceptions == other.exceptions
    }
}

/// The state of a schedule at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScheduleState {
    pub(crate) active: bool,
    /// Start (ms since the epoch) of the in-force period containing the instant;
    /// `i64::MIN` when it is not known to start within the lookup horizon.
    pub(crate) period_start: i64,
}

/// A cached constant segment `[from, until)` of a schedule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScheduleCursor {
    from: i64,
    until: i64,
    state: ScheduleState,
}

impl Default for ScheduleCursor {
    fn default() -> Self {
        // Empty segment: the first lookup always computes.
        ScheduleCursor {
            from: 1,
            until: 0,
            state: ScheduleState {
                active: false,
                period_start: i64::MIN,
            },
        }
    }
}

impl Schedule {
    /// Weekly windows in the IANA time zone `tz` (e.g. `"Asia/Almaty"`).
    pub fn weekly(
        tz: &str,
        windows: impl IntoIterator<Item = WeeklyWindow>,
    ) -> Result<Schedule, ScheduleError> {
        let zone = TimeZone::get(tz).map_err(|_| ScheduleError::UnknownTimeZone(tz.to_owned()))?;
        let windows: Vec<WeeklyWindow> = windows.into_iter().collect();
        if windows.iter().any(|w| w.days.is_empty()) {
            return Err(ScheduleError::NoWeekdays);
        }
        Ok(Schedule::Windows(Box::new(WindowSchedule {
            tz_name: tz.to_owned(),
            tz: zone,
            windows,
            exceptions: Vec::new(),
        })))
    }

    /// Adds a dated exception, in the schedule's time zone. `Always` schedules
    /// take no exceptions: give them a time zone with [`Schedule::weekly`] and a
    /// 24-hour window on every day.
    pub fn with_exception(
        self,
        kind: ExceptionKind,
        start: civil::DateTime,
        end: civil::DateTime,
    ) -> Result<Schedule, ScheduleError> {
        let Schedule::Windows(mut w) = self else {
            return Err(ScheduleError::BadException(
                "an Always schedule has no time zone; build it with Schedule::weekly".into(),
            ));
        };
        let resolve = |dt: civil::DateTime| {
            resolve_ms(&w.tz, dt).ok_or_else(|| {
                ScheduleError::BadException(format!("{dt} cannot be placed in {}", w.tz_name))
            })
        };
        let (from_ms, until_ms) = (resolve(start)?, resolve(end)?);
        if until_ms <= from_ms {
            return Err(ScheduleError::BadException(format!(
                "{start}..{end} is empty; the end must be after the start"
            )));
        }
        w.exceptions.push(DatedException {
            kind,
            start,
            end,
            from_ms,
            until_ms,
        });
        Ok(Schedule::Windows(w))
    }

    /// Removes every exception with this kind, start and end.
    pub fn without_exception(
        self,
        kind: ExceptionKind,
        start: civil::DateTime,
        end: civil::DateTime,
    ) -> Schedule {
        match self {
            Schedule::Always => Schedule::Always,
            Schedule::Windows(mut w) => {
                w.exceptions
                    .retain(|e| !(e.kind == kind && e.start == start && e.end == end));
                Schedule::Windows(w)
            }
        }
    }

    /// Whether the schedule is in force at `t` (uncached; for tests and tools).
    pub fn is_active(&self, t: Timestamp) -> bool {
        self.state(t.as_millisecond(), &mut ScheduleCursor::default())
            .active
    }

    /// The in-force period containing `t`, as `[start, end)`, if the schedule is
    /// in force at `t` and the period starts and ends within a week of `t`.
    pub fn period_containing(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let Schedule::Windows(w) = self else {
            return None;
        };
        let t_ms = t.as_millisecond();
        let seg = w.segment(t_ms);
        if !seg.state.active || seg.state.period_start == i64::MIN {
            return None;
        }
        // Walk forward over back-to-back segments to the period's end.
        let mut end = seg.until;
        while end < t_ms + HORIZON_DAYS * DAY_MS {
            let next = w.segment(end);
            if !next.state.active {
                break;
            }
            end = next.until;
        }
        Some((
            Timestamp::from_millisecond(seg.state.period_start).ok()?,
            Timestamp::from_millisecond(end).ok()?,
        ))
    }

    /// The schedule's state at `t_ms`, through the cursor's cached segment.
    #[inline]
    pub(crate) fn state(&self, t_ms: i64, cursor: &mut ScheduleCursor) -> ScheduleState {
        match self {
            Schedule::Always => ScheduleState {
                active: true,
                period_start: i64::MIN,
            },
            Schedule::Windows(w) => {
                if !(cursor.from <= t_ms && t_ms < cursor.until) {
                    *cursor = w.segment(t_ms);
                }
                cursor.state
            }
        }
    }
}

impl WindowSchedule {
    /// Computes the constant segment containing `t`.
    // Over 80 lines: one scan of the windows around `t` in local time,
    // DST gaps and folds included; its bounds are locals of that scan.
    fn segment(&self, t: i64) -> ScheduleCursor {
        let lo = t.saturating_sub(HORIZON_DAYS * DAY_MS);
        let hi = t.saturating_add(HORIZON_DAYS * DAY_MS);
        // (start, end, suspends)
        let mut intervals: Vec<(i64, i64, bool)> = Vec::new();
        if let Ok(ts) = Timestamp::from_millisecond(t) {
            let today = self.tz.to_datetime(ts).date();
            for k in -(HORIZON_DAYS + 1)..=(HORIZON_DAYS + 1) {
                let Ok(day) = today.checked_add(k.days()) else {
                    continue;
                };
                for w in &self.windows {
                    if !w.days.contains(day.weekday()) {
                        continue;
                    }
                    let end_day = if w.end <= w.start {
                        match day.tomorrow() {
                            Ok(d) => d,
                            Err(_) => continue,
                        }
                    } else {
                        day
                    };
                    if let (Some(s), Some(e)) = (
                        resolve_ms(&self.tz, day.to_datetime(w.start)),
                        resolve_ms(&self.tz, end_day.to_datetime(w.end)),
                    ) && e > s
                    {
                        intervals.push((s, e, false));
                    }
                }
            }
        }
        for e in &self.exceptions {
            intervals.push((e.from_ms, e.until_ms, e.kind == ExceptionKind::Suspended));
        }
        let active = |x: i64| {
            intervals.iter().any(|&(s, e, sus)| !sus && s <= x && x < e)
                && !intervals.iter().any(|&(s, e, sus)| sus && s <= x && x < e)
        };
        let last_boundary_at_or_before = |x: i64| {
            intervals
                .iter()
                .flat_map(|&(s, e, _)| [s, e])
                .filter(|&b| b <= x)
                .max()
                .unwrap_or(lo)
                .max(lo)
        };
        let from = last_boundary_at_or_before(t);
        let until = intervals
            .iter()
            .flat_map(|&(s, e, _)| [s, e])
            .filter(|&b| b > t)
            .min()
            .unwrap_or(hi)
            .min(hi);
        let is_active = active(t);
        let mut period_start = i64::MIN;
        if is_active {
            let mut start = from;
            loop {
                if start <= lo {
                    start = i64::MIN;
                    break;
                }
                if !active(start - 1) {
                    break;
                }
                start = last_boundary_at_or_before(start - 1);
            }
            period_start = start;
        }
        ScheduleCursor {
            from,
            until,
            state: ScheduleState {
                active: is_active,
                period_start,
            },
        }
    }
}

/// Places a local wall-clock time in time (see the module docs on gaps and folds).
fn resolve_ms(tz: &TimeZone, dt: civil::DateTime) -> Option<i64> {
    tz.to_ambiguous_timestamp(dt)
        .compatible()
        .ok()
        .map(Timestamp::as_millisecond)
}
