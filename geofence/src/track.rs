//! The hysteresis state machine of one (subject, rule, zone) track.
//!
//! A track turns a stream of per-fix verdicts into episode edges. It knows
//! nothing of zones or time zones: times are milliseconds since the epoch.

use crate::rule::Thresholds;

/// What one fix says about one track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A definite violation.
    Violating,
    /// Definitely compliant.
    Compliant,
    /// Counts for nothing: uncertain position, grace period, stale other party.
    Neutral,
    /// The obligation itself is gone (schedule out of force, zone removed): an
    /// open episode ends at once and any streak is dropped.
    Void(EndCause),
}

/// Why an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// Enough consecutive compliant fixes.
    Compliant,
    /// The rule's or zone's schedule went out of force (curfew over).
    ScheduleEnded,
    /// A late-fix run ended with the episode still open; the evidence stops at the
    /// run's last fix (see the crate docs on late fixes).
    EvidenceEnded,
    /// The zone was removed.
    ZoneRemoved,
    /// The rule (or its subject) was removed or replaced by one of another kind.
    RuleRemoved,
}

impl EndCause {
    /// A stable lower-case label, for storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Compliant => "compliant",
            EndCause::ScheduleEnded => "schedule_ended",
            EndCause::EvidenceEnded => "evidence_ended",
            EndCause::ZoneRemoved => "zone_removed",
            EndCause::RuleRemoved => "rule_removed",
        }
    }
}

/// An episode edge produced by a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Edge {
    /// An episode opened; `at` is the first fix of the streak that confirmed it.
    Started { at: i64 },
    /// An episode closed; `at` is the first fix of the compliant streak, or the
    /// fix at which the obligation went away.
    Ended { at: i64, cause: EndCause },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Track {
    /// Time of the last fix stepped.
    pub(crate) head: i64,
    /// Start of the open episode.
    episode: Option<i64>,
    /// The last closed episode, `[start, end)`.
    last_closed: Option<(i64, i64)>,
    /// Consecutive fixes against the current state (violating while no episode
    /// is open, compliant while one is).
    streak: u16,
    streak_start: i64,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            head: i64::MIN,
            episode: None,
            last_closed: None,
            streak: 0,
            streak_start: 0,
        }
    }
}

impl Track {
    pub(crate) fn step(&mut self, t: i64, verdict: Verdict, th: &Thresholds) -> Option<Edge> {
        self.head = t;
        match (self.episode, verdict) {
            (_, Verdict::Neutral) => None,
            (None, Verdict::Violating) => {
                if self.streak == 0 {
                    self.streak_start = t;
                }
                self.streak = self.streak.saturating_add(1);
                if self.streak >= th.enter_fixes && t - self.streak_start >= th.enter_span_ms {
                    self.episode = Some(self.streak_start);
                    self.streak = 0;
                    return Some(Edge::Started {
                        at: self.streak_start,
                    });
                }
                None
            }
            (None, Verdict::Compliant | Verdict::Void(_)) => {
                self.streak = 0;
                None
            }
            (Some(_), Verdict::Violating) => {
                self.streak = 0;
                None
            }
            (Some(_), Verdict::Compliant) => {
                if self.streak == 0 {
                    self.streak_start = t;
                }
                self.streak = self.streak.saturating_add(1);
                if self.streak >= th.exit_fixes {
                    return Some(self.end(self.streak_start, EndCause::Compliant));
                }
                None
            }
            (Some(_), Verdict::Void(cause)) => Some(self.end(t, cause)),
        }
    }

    /// Ends an open episode now (rule removed, late run closed). `at` defaults to
    /// the last fix stepped.
    pub(crate) fn close(&mut self, cause: EndCause) -> Option<Edge> {
        self.episode?;
        Some(self.end(self.head, cause))
    }

    fn end(&mut self, at: i64, cause: EndCause) -> Edge {
        if let Some(start) = self.episode.take() {
            self.last_closed = Some((start, at));
        }
        self.streak = 0;
        Edge::Ended { at, cause }
    }

    /// Whether an episode this track reported covers time `t`.
    pub(crate) fn covers(&self, t: i64) -> bool {
        self.episode.is_some_and(|start| start <= t)
            || self.last_closed.is_some_and(|(s, e)| s <= t && t < e)
    }

    /// Nothing to remember: no episode, no streak.
    pub(crate) fn is_idle(&self) -> bool {
        self.episode.is_none() && self.streak == 0
    }
}
