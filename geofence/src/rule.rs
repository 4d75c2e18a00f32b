//! Rules: what one subject must do, and how much evidence a violation needs.

use crate::id::{CategoryId, DeviceId, RuleId, ZoneId};
use crate::schedule::Schedule;
use crate::zone::ZoneKind;
use jiff::SignedDuration;

/// What a rule requires of its subject.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// Obey one zone by its kind: stay inside an inclusion zone, out of an
    /// exclusion zone. Transitions: `InclusionLeft`/`InclusionReturned` or
    /// `ExclusionEntered`/`ExclusionLeft`.
    Zone(ZoneId),
    /// Be inside this inclusion zone (home) whenever the rule's schedule is in
    /// force; outside it the zone imposes nothing. Transitions:
    /// `CurfewViolationStarted`/`CurfewViolationEnded`.
    Curfew(ZoneId),
    /// Stay out of every global zone of the category. Each zone is tracked
    /// separately, so transitions name the zone entered.
    Category(CategoryId),
    /// Keep at least `min_distance_m` from another device (a mobile exclusion
    /// zone, e.g. around a protected victim). Positions older than `max_age`
    /// relative to the evaluated fix make the result uncertain.
    Proximity {
        /// The other party's device.
        device: DeviceId,
        /// The protected radius in metres (a closed disc: exactly this far is inside).
        min_distance_m: f64,
        /// How old the other party's (or the subject's) position may be.
        max_age: SignedDuration,
    },
}

/// How much evidence opens and closes a violation episode.
///
/// An episode starts once `enter_fixes` consecutive definite violating fixes span
/// at least `enter_span` (first to last). It ends after `exit_fixes` consecutive
/// definite compliant fixes. Uncertain results neither count nor break a streak,
/// unless `count_uncertain` is set (then they count as violating). During the first
/// `grace` of each in-force period of the rule's or zone's schedule, fixes count
/// for nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    /// Consecutive definite violating fixes needed (at least 1; defaults use 2 or 3
    /// so a single stray fix never opens an episode).
    pub enter_fixes: u16,
    /// Minimum time from the first to the last of those fixes.
    pub enter_span: SignedDuration,
    /// Consecutive definite compliant fixes that close an episode.
    pub exit_fixes: u16,
    /// Fixes in the first `grace` of an in-force period are ignored.
    pub grace: SignedDuration,
    /// Count uncertain results as violations (strict mode for high-risk cases).
    pub count_uncertain: bool,
}

impl Hysteresis {
    /// Exclusion zones (critical: victims, schools). SCRAM tolerates up to four
    /// points inside; we confirm on two fixes at least 30 s apart, so at a fix a
    /// minute the alert is raised on the second fix inside.
    pub const EXCLUSION: Hysteresis = Hysteresis {
        enter_fixes: 2,
        enter_span: SignedDuration::from_secs(30),
        exit_fixes: 3,
        grace: SignedDuration::ZERO,
        count_uncertain: false,
    };
    /// Inclusion zones (serious: leaving the city). Three fixes over two minutes.
    pub const INCLUSION: Hysteresis = Hysteresis {
        enter_fixes: 3,
        enter_span: SignedDuration::from_secs(120),
        exit_fixes: 3,
        grace: SignedDuration::ZERO,
        count_uncertain: false,
    };
    /// Curfews: as inclusion, plus 5 minutes' grace after each curfew starts.
    pub const CURFEW: Hysteresis = Hysteresis {
        enter_fixes: 3,
        enter_span: SignedDuration::from_secs(120),
        exit_fixes: 3,
        grace: SignedDuration::from_mins(5),
        count_uncertain: false,
    };
    /// Victim proximity (critical): as exclusion.
    pub const PROXIMITY: Hysteresis = Hysteresis::EXCLUSION;

    pub(crate) fn thresholds(&self) -> Option<Thresholds> {
        let span = self.enter_span.as_millis();
        let grace = self.grace.as_millis();
        if self.enter_fixes == 0 || self.exit_fixes == 0 || span < 0 || grace < 0 {
            return None;
        }
        Some(Thresholds {
            enter_fixes: self.enter_fixes,
            enter_span_ms: i64::try_from(span).ok()?,
            exit_fixes: self.exit_fixes,
            grace_ms: i64::try_from(grace).ok()?,
            count_uncertain: self.count_uncertain,
        })
    }
}

/// [`Hysteresis`] in the integer form the hot path uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub(crate) enter_fixes: u16,
    pub(crate) enter_span_ms: i64,
    pub(crate) exit_fixes: u16,
    pub(crate) grace_ms: i64,
    pub(crate) count_uncertain: bool,
}

/// One rule of one subject.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    /// Stable id (e.g. the assignment's database key).
    pub id: RuleId,
    /// What the rule requires.
    pub kind: RuleKind,
    /// When the rule is in force (a curfew's hours).
    pub schedule: Schedule,
    /// Evidence thresholds; `None` takes the default for the rule's kind.
    pub hysteresis: Option<Hysteresis>,
}

impl RuleSpec {
    /// An always-in-force rule with default hysteresis.
    pub fn new(id: RuleId, kind: RuleKind) -> RuleSpec {
        RuleSpec {
            id,
            kind,
            schedule: Schedule::Always,
            hysteresis: None,
        }
    }

    /// Sets the schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> RuleSpec {
        self.schedule = schedule;
        self
    }

    /// Sets the hysteresis.
    pub fn with_hysteresis(mut self, hysteresis: Hysteresis) -> RuleSpec {
        self.hysteresis = Some(hysteresis);
        self
    }

    /// The hysteresis in effect, given the kind of the zone the rule names.
    pub(crate) fn effective_hysteresis(&self, zone_kind: Option<ZoneKind>) -> Hysteresis {
        self.hysteresis.unwrap_or(match (&self.kind, zone_kind) {
            (RuleKind::Curfew(_), _) => Hysteresis::CURFEW,
            (RuleKind::Proximity { .. }, _) => Hysteresis::PROXIMITY,
            (RuleKind::Zone(_), Some(ZoneKind::Inclusion)) => Hysteresis::INCLUSION,
            _ => Hysteresis::EXCLUSION,
        })
    }
}
