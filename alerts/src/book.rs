//! The alert lifecycle: raise (with dedup), acknowledge, resolve, escalate,
//! and the append-only log of every change.
//!
//! - One alert per [`AlertKey`]: subject, type, scope (rule, zone or device)
//!   and episode start. Raising an existing key at a new time updates the
//!   alert (a count and an event) and never creates a second one, even after
//!   it was resolved; raising it with the same time again (a redelivery, a
//!   restart's re-read) changes nothing.
//! - `open` → `acknowledged` (by an officer, optional note) → `resolved`.
//!   Resolution is automatic when the episode ends ([`AlertBook::end_episode`])
//!   or manual with a note. Tamper alerts are resolved only manually, with a
//!   note.
//! - An alert not acknowledged within its severity's delay escalates: officer
//!   → supervisor → duty desk. Deadlines are data (`escalate_at_ms`), so a
//!   store can persist and reload them.
//! - Every change appends an [`AlertEvent`] (who, when, what, note); the
//!   caller drains them with [`AlertBook::take_events`] and stores them.
//!
//! Times are milliseconds since the epoch, passed in by the caller.

use crate::policy::{AlertType, Policy, Severity};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Stable alert id (also the idempotency key of deliveries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertId(pub u64);

/// What makes two raises the same alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlertKey {
    /// The subject.
    pub subject: u64,
    /// The alert type.
    pub kind: AlertType,
    /// Rule or zone id for violations; 0 for device alerts.
    pub scope: u64,
    /// Episode start (fix or event time, ms); for device alerts, the time the
    /// condition began.
    pub episode_ms: i64,
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Raised, nobody has taken it.
    Open,
    /// An officer has taken it.
    Acknowledged,
    /// Over.
    Resolved,
}

impl AlertState {
    /// Every state.
    pub const ALL: [AlertState; 3] = [
        AlertState::Open,
        AlertState::Acknowledged,
        AlertState::Resolved,
    ];

    /// Stable label, for storage and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    /// The state whose [`AlertState::as_str`] label is `name`.
    pub fn from_name(name: &str) -> Option<AlertState> {
        AlertState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Who escalation has reached: 0 the officer, 1 the supervisor, 2 the duty desk.
pub type Level = u8;

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Its id.
    pub id: AlertId,
    /// Its key.
    pub key: AlertKey,
    /// Severity under the policy when raised.
    pub severity: Severity,
    /// State.
    pub state: AlertState,
    /// When it happened (fix or event time).
    pub event_ms: i64,
    /// Found in a late store-and-forward upload: a past episode.
    pub historical: bool,
    /// When the backend raised it.
    pub raised_ms: i64,
    /// Raises of the same key after the first.
    pub repeats: u32,
    /// Escalation level reached.
    pub level: Level,
    /// When it escalates next, if unacknowledged.
    pub escalate_at_ms: Option<i64>,
    /// Changes logged so far (the version of its newest [`AlertEvent`]).
    pub version: u32,
    /// When it was resolved.
    pub resolved_ms: Option<i64>,
    /// When the device reported its condition over (a tamper alert's
    /// strap or case closed again: device time, ms); the alert stays open
    /// until an officer resolves it.
    pub condition_ended_ms: Option<i64>,
}

/// Who did something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// emtrack itself.
    System,
    /// A user of the officer API, by account id (`users.id`): the
    /// authenticated caller, never a claimed id.
    User(u64),
}

/// How an officer closed an alert: what reports use to tell signal and
/// device problems from the subject's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// The subject did violate the order.
    ViolationConfirmed,
    /// Nothing happened: a false alarm (drift, a bad fix).
    FalseAlarm,
    /// The device failed (battery, strap, GPS, clock).
    DeviceFault,
    /// The officer had approved it (an absence arranged after the fact).
    ApprovedByOfficer,
}

impl Disposition {
    /// Every disposition.
    pub const ALL: [Disposition; 4] = [
        Disposition::ViolationConfirmed,
        Disposition::FalseAlarm,
        Disposition::DeviceFault,
        Disposition::ApprovedByOfficer,
    ];

    /// Stable label, for storage, payloads and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::ViolationConfirmed => "violation_confirmed",
            Disposition::FalseAlarm => "false_alarm",
            Disposition::DeviceFault => "device_fault",
            Disposition::ApprovedByOfficer => "approved_by_officer",
        }
    }

    /// The disposition with this label.
    pub fn from_name(name: &str) -> Option<Disposition> {
        Disposition::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// What happened to an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Raised.
    Raised,
    /// Raised again (same key).
    Repeated,
    /// Acknowledged.
    Acknowledged,
    /// Escalated to a level.
    Escalated(Level),
    /// The device reported the condition over (a strap or case closed
    /// again, at the device time in the event's note); the alert stays
    /// open.
    ConditionEnded,
    /// Resolved; `automatic` when by the episode ending, else with the
    /// officer's disposition.
    Resolved {
        /// Resolved automatically.
        automatic: bool,
        /// How the officer closed it (`None` when automatic).
        disposition: Option<Disposition>,
    },
}

impl Change {
    /// Stable label, for storage and payloads (`change`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Raised => "raised",
            Change::Repeated => "repeated",
            Change::Acknowledged => "acknowledged",
            Change::Escalated(_) => "escalated",
            Change::ConditionEnded => "condition_ended",
            Change::Resolved { .. } => "resolved",
        }
    }
}

/// One line of the alert log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertEvent {
    /// The alert.
    pub alert: AlertId,
    /// When (ms).
    pub at_ms: i64,
    /// Who.
    pub who: Actor,
    /// What.
    pub what: Change,
    /// The officer's note, if any.
    pub note: Option<String>,
    /// The alert's version after this change: 1 for `Raised`, then +1 per
    /// change. (alert, version) names a change, and so a notification.
    pub version: u32,
}

/// What [`AlertBook::raise`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raised {
    /// A new alert.
    New(AlertId),
    /// The key's alert, still open or acknowledged, was updated.
    Repeated(AlertId),
    /// The key's alert is already resolved; nothing changed.
    AlreadyResolved(AlertId),
}

/// Why an officer's action was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookError {
    /// No such alert.
    Unknown(AlertId),
    /// The alert is resolved.
    Resolved(AlertId),
    /// Tamper alerts (and manual resolutions in general) need a note.
    NoteRequired(AlertId),
    /// A note over [`MAX_NOTE_BYTES`] or with a NUL character.
    BadNote(AlertId),
}

/// Longest officer's note taken, in bytes.
pub const MAX_NOTE_BYTES: usize = 4_096;

/// What an officer does to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfficerAction {
    /// Take it: escalation stops ([`AlertBook::acknowledge`]).
    Acknowledge,
    /// Close it, with a note and a disposition ([`AlertBook::resolve`]).
    Resolve(Disposition),
}

impl fmt::Display for BookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookError::Unknown(id) => write!(f, "no alert {}", id.0),
            BookError::Resolved(id) => write!(f, "alert {} is already resolved", id.0),
            BookError::NoteRequired(id) => {
                write!(f, "alert {} can only be resolved with a note", id.0)
            }
            BookError::BadNote(id) => write!(
                f,
                "the note on alert {} must be text of at most {MAX_NOTE_BYTES} bytes, without NUL characters",
                id.0
            ),
        }
    }
}

impl std::error::Error for BookError {}

/// Every alert, the open ones by key, and the escalation deadlines.
#[derive(Debug, Default)]
pub struct AlertBook {
    policy: Policy,
    next: u64,
    alerts: HashMap<AlertId, Alert>,
    by_key: HashMap<AlertKey, AlertId>,
    deadlines: BTreeSet<(i64, AlertId)>,
    events: Vec<AlertEvent>,
}

impl AlertBook {
    /// An empty book under `policy`; ids start after `last_id` (the largest
    /// stored, after a restart).
    pub fn new(policy: Policy, last_id: u64) -> AlertBook {
        AlertBook {
            policy,
            next: last_id,
            ..AlertBook::default()
        }
    }

    fn log(&mut self, alert: AlertId, at_ms: i64, who: Actor, what: Change, note: Option<String>) {
        let version = match self.alerts.get_mut(&alert) {
            Some(a) => {
                a.version += 1;
                a.version
            }
            None => 0,
        };
        self.events.push(AlertEvent {
            alert,
            at_ms,
            who,
            what,
            note,
            version,
        });
    }

    /// Puts back an alert read from the store (after a restart): its key
    /// dedups again, and its escalation deadline, if any, is armed. Ids later
    /// raised follow the largest restored.
    pub fn restore(&mut self, alert: Alert) {
        if let Some(t) = alert.escalate_at_ms
            && alert.state == AlertState::Open
        {
            self.deadlines.insert((t, alert.id));
        }
        self.next = self.next.max(alert.id.0);
        self.by_key.insert(alert.key, alert.id);
        self.alerts.insert(alert.id, alert);
    }

    /// Drops an alert from memory (the store refused it, or it is long
    /// resolved); the store still has it.
    pub fn forget(&mut self, id: AlertId) {
        self.cancel_escalation(id);
        if let Some(a) = self.alerts.remove(&id)
            && self.by_key.get(&a.key) == Some(&id)
        {
            self.by_key.remove(&a.key);
        }
    }

    /// Drops alerts resolved before `before_ms` from memory, so that a
    /// long-running book holds the open alerts and recent history only.
    /// Their keys then dedup in the store (its unique key), not here.
    pub fn forget_resolved(&mut self, before_ms: i64) -> usize {
        let old: Vec<AlertId> = self
            .alerts
            .values()
            .filter(|a| a.resolved_ms.is_some_and(|t| t < before_ms))
            .map(|a| a.id)
            .collect();
        for id in &old {
            self.forget(*id);
        }
        old.len()
    }

    /// The next escalation deadline (ms), if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|d| d.0)
    }

    /// Raises the alert for `key` (see the module docs for dedup).
    pub fn raise(&mut self, key: AlertKey, event_ms: i64, historical: bool, now_ms: i64) -> Raised {
        if let Some(&id) = self.by_key.get(&key) {
            let Some(a) = self.alerts.get_mut(&id) else {
                return Raised::AlreadyResolved(id);
            };
            if a.state == AlertState::Resolved {
                return Raised::AlreadyResolved(id);
            }
            if a.event_ms == event_ms {
                // The same input again (a redelivery, a restart's re-read):
                // nothing happened.
                return Raised::Repeated(id);
            }
            a.event_ms = a.event_ms.max(event_ms);
            a.repeats += 1;
            self.log(id, now_ms, Actor::System, Change::Repeated, None);
            return Raised::Repeated(id);
        }
        self.next += 1;
        let id = AlertId(self.next);
        let severity = self.policy.severity(key.kind);
        let escalate_at_ms = self
            .policy
            .escalation_delay(severity)
            .map(|s| now_ms + i64::from(s) * 1000);
        if let Some(t) = escalate_at_ms {
            self.deadlines.insert((t, id));
        }
        self.alerts.insert(
            id,
            Alert {
                id,
                key,
                severity,
                state: AlertState::Open,
                event_ms,
                historical,
                raised_ms: now_ms,
                repeats: 0,
                level: 0,
                escalate_at_ms,
                version: 0,
                resolved_ms: None,
                condition_ended_ms: None,
            },
        );
        self.by_key.insert(key, id);
        self.log(id, now_ms, Actor::System, Change::Raised, None);
        Raised::New(id)
    }

    /// An officer takes the alert; escalation stops.
    pub fn acknowledge(
        &mut self,
        id: AlertId,
        officer: u64,
        note: Option<String>,
        now_ms: i64,
    ) -> Result<(), BookError> {
        check_note(id, note.as_deref())?;
        let a = self.alerts.get_mut(&id).ok_or(BookError::Unknown(id))?;
        match a.state {
            AlertState::Resolved => return Err(BookError::Resolved(id)),
            AlertState::Acknowledged => {}
            AlertState::Open => {
                a.state = AlertState::Acknowledged;
                self.cancel_escalation(id);
            }
        }
        self.log(id, now_ms, Actor::User(officer), Change::Acknowledged, note);
        Ok(())
    }

    /// A user resolves the alert, with a note (required) and a disposition.
    pub fn resolve(
        &mut self,
        id: AlertId,
        officer: u64,
        disposition: Disposition,
        note: Option<String>,
        now_ms: i64,
    ) -> Result<(), BookError> {
        check_note(id, note.as_deref())?;
        let a = self.alerts.get(&id).ok_or(BookError::Unknown(id))?;
        if a.state == AlertState::Resolved {
            return Err(BookError::Resolved(id));
        }
        let Some(note) = note.filter(|n| !n.trim().is_empty()) else {
            return Err(BookError::NoteRequired(id));
        };
        self.close(id, now_ms);
        self.log(
            id,
            now_ms,
            Actor::User(officer),
            Change::Resolved {
                automatic: false,
                disposition: Some(disposition),
            },
            Some(note),
        );
        Ok(())
    }

    /// The device reports the condition behind an unresolved alert over at
    /// `at_ms` (device time): a tamper alert's strap or case closed again.
    /// Logged once per report (a re-read after a restart adds nothing); the
    /// alert stays open for an officer's note. `None` if `key` has no
    /// unresolved alert or this report is not newer than the last.
    pub fn condition_ended(&mut self, key: &AlertKey, at_ms: i64, now_ms: i64) -> Option<AlertId> {
        let id = *self.by_key.get(key)?;
        let a = self.alerts.get_mut(&id)?;
        if a.state == AlertState::Resolved || a.condition_ended_ms.is_some_and(|t| t >= at_ms) {
            return None;
        }
        a.condition_ended_ms = Some(at_ms);
        let when = geofence::jiff::Timestamp::from_millisecond(at_ms)
            .map_or_else(|_| format!("{at_ms} ms"), |t| t.to_string());
        let what = match key.kind {
            AlertType::StrapTamper => "strap closed",
            AlertType::CaseTamper => "case closed",
            _ => "condition over",
        };
        self.log(
            id,
            now_ms,
            Actor::System,
            Change::ConditionEnded,
            Some(format!("{what} at {when} (device time)")),
        );
        Some(id)
    }

    /// The episode behind `key` ended (the subject returned, the curfew
    /// violation ended, the device spoke again): its alert resolves, unless it
    /// is a tamper alert, which waits for an officer's note.
    pub fn end_episode(&mut self, key: &AlertKey, now_ms: i64) -> Option<AlertId> {
        let id = *self.by_key.get(key)?;
        let a = self.alerts.get(&id)?;
        if a.state == AlertState::Resolved || a.key.kind.needs_note_to_resolve() {
            return None;
        }
        self.close(id, now_ms);
        self.log(
            id,
            now_ms,
            Actor::System,
            Change::Resolved {
                automatic: true,
                disposition: None,
            },
            None,
        );
        Some(id)
    }

    fn close(&mut self, id: AlertId, now_ms: i64) {
        if let Some(a) = self.alerts.get_mut(&id) {
            a.state = AlertState::Resolved;
            a.resolved_ms = Some(now_ms);
        }
        self.cancel_escalation(id);
    }

    fn cancel_escalation(&mut self, id: AlertId) {
        if let Some(t) = self
            .alerts
            .get_mut(&id)
            .and_then(|a| a.escalate_at_ms.take())
        {
            self.deadlines.remove(&(t, id));
        }
    }

    /// Escalates every unacknowledged alert whose deadline is at or before
    /// `now_ms`, one level each (the next deadline follows at the same
    /// delay, until the duty desk). Returns them with their new level.
    pub fn escalate_due(&mut self, now_ms: i64) -> Vec<(AlertId, Level)> {
        let mut done = Vec::new();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now_ms {
                break;
            }
            self.deadlines.remove(&(t, id));
            let Some(a) = self.alerts.get_mut(&id) else {
                continue;
            };
            a.level = (a.level + 1).min(2);
            a.escalate_at_ms = if a.level < 2 {
                self.policy
                    .escalation_delay(a.severity)
                    .map(|s| t + i64::from(s) * 1000)
            } else {
                None
            };
            if let Some(next) = a.escalate_at_ms {
                self.deadlines.insert((next, id));
            }
            let level = a.level;
            done.push((id, level));
            self.log(id, t, Actor::System, Change::Escalated(level), None);
        }
        done
    }

    /// The state of the alert of `key`, if the book holds it.
    pub fn state_of(&self, key: &AlertKey) -> Option<AlertState> {
        self.by_key
            .get(key)
            .and_then(|id| self.alerts.get(id))
            .map(|a| a.state)
    }

    /// The alert `id`.
    pub fn get(&self, id: AlertId) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// Open or acknowledged alerts, by severity.
    pub fn open_count(&self, severity: Severity) -> usize {
        self.alerts
            .values()
            .filter(|a| a.severity == severity && a.state != AlertState::Resolved)
            .count()
    }

    /// Every alert of `kind`, by id.
    pub fn ids_of(&self, kind: AlertType) -> Vec<AlertId> {
        let mut v: Vec<AlertId> = self
            .alerts
            .values()
            .filter(|a| a.key.kind == kind)
            .map(|a| a.id)
            .collect();
        v.sort();
        v
    }

    /// Every alert.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Drains the log lines written since the last call.
    pub fn take_events(&mut self) -> Vec<AlertEvent> {
        std::mem::take(&mut self.events)
    }
}

/// An officer's note is bounded text: it goes to every recipient and into
/// `alert_events`.
fn check_note(id: AlertId, note: Option<&str>) -> Result<(), BookError> {
    match note {
        Some(n) if n.len() > MAX_NOTE_BYTES || n.contains('\0') => Err(BookError::BadNote(id)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn key(kind: AlertType, episode_ms: i64) -> AlertKey {
        AlertKey {
            subject: 7,
            kind,
            scope: 70,
            episode_ms,
        }
    }

    #[test]
    fn every_type_raises_with_its_severity() {
        let mut b = AlertBook::new(Policy::default(), 0);
        for (i, t) in AlertType::ALL.into_iter().enumerate() {
            let Raised::New(id) = b.raise(key(t, 0), 0, false, 1_000) else {
                panic!("{t:?} is new");
            };
            assert_eq!(id, AlertId(i as u64 + 1));
            let a = b.get(id).expect("stored");
            assert_eq!(a.severity, t.default_severity());
            assert_eq!(a.state, AlertState::Open);
        }
        assert_eq!(b.open_count(Severity::Critical), 6);
        assert_eq!(b.open_count(Severity::Serious), 8);
        assert_eq!(b.open_count(Severity::Info), 3);
    }

    #[test]
    fn one_alert_per_episode() {
        let mut b = AlertBook::new(Policy::default(), 41);
        let k = key(AlertType::ExclusionZoneEntered, 5 * MIN);
        assert_eq!(
            b.raise(k, 5 * MIN, false, 6 * MIN),
            Raised::New(AlertId(42))
        );
        assert_eq!(
            b.raise(k, 5 * MIN, false, 7 * MIN),
            Raised::Repeated(AlertId(42)),
            "the same input again: no new alert"
        );
        assert_eq!(
            b.get(AlertId(42)).map(|a| a.repeats),
            Some(0),
            "and no change"
        );
        assert_eq!(
            b.raise(k, 6 * MIN, false, 7 * MIN),
            Raised::Repeated(AlertId(42)),
            "the condition again, later"
        );
        assert_eq!(b.get(AlertId(42)).map(|a| a.repeats), Some(1));
        assert_eq!(b.end_episode(&k, 8 * MIN), Some(AlertId(42)));
        assert_eq!(
            b.raise(k, 5 * MIN, false, 9 * MIN),
            Raised::AlreadyResolved(AlertId(42)),
            "a redelivered transition does not reopen it"
        );
        let next = key(AlertType::ExclusionZoneEntered, 30 * MIN);
        assert_eq!(
            b.raise(next, 30 * MIN, false, 31 * MIN),
            Raised::New(AlertId(43))
        );
        let log: Vec<Change> = b.take_events().into_iter().map(|e| e.what).collect();
        assert_eq!(
            log,
            vec![
                Change::Raised,
                Change::Repeated,
                Change::Resolved {
                    automatic: true,
                    disposition: None,
                },
                Change::Raised
            ]
        );
    }

    #[test]
    fn episodes_end_alerts_but_tamper_needs_a_note() {
        let mut b = AlertBook::new(Policy::default(), 0);
        let curfew = key(AlertType::CurfewViolation, 0);
        let strap = key(AlertType::StrapTamper, 0);
        let Raised::New(c) = b.raise(curfew, 0, false, 1) else {
            panic!()
        };
        let Raised::New(s) = b.raise(strap, 0, false, 1) else {
            panic!()
        };
        assert_eq!(b.end_episode(&curfew, 2), Some(c));
        assert_eq!(
            b.end_episode(&strap, 2),
            None,
            "tamper never ends by itself"
        );
        assert_eq!(
            b.resolve(s, 3, Disposition::DeviceFault, None, 3),
            Err(BookError::NoteRequired(s))
        );
        assert_eq!(
            b.resolve(s, 3, Disposition::DeviceFault, Some("  ".into()), 3),
            Err(BookError::NoteRequired(s))
        );
        b.resolve(
            s,
            3,
            Disposition::DeviceFault,
            Some("strap replaced at the office".into()),
            4,
        )
        .expect("resolves with a note");
        assert_eq!(b.get(s).map(|a| a.state), Some(AlertState::Resolved));
        assert_eq!(
            b.resolve(s, 3, Disposition::DeviceFault, Some("again".into()), 5),
            Err(BookError::Resolved(s))
        );
        let last = b.take_events().pop().expect("logged");
        assert_eq!(last.who, Actor::User(3));
        assert_eq!(last.note.as_deref(), Some("strap replaced at the office"));
    }

    #[test]
    fn escalation_to_supervisor_then_duty_desk_unless_acknowledged() {
        let mut b = AlertBook::new(Policy::default(), 0);
        let Raised::New(crit) = b.raise(key(AlertType::VictimProximity, 0), 0, false, 0) else {
            panic!()
        };
        let Raised::New(ser) = b.raise(key(AlertType::CurfewViolation, 0), 0, false, 0) else {
            panic!()
        };
        let Raised::New(info) = b.raise(key(AlertType::BatteryLow, 0), 0, false, 0) else {
            panic!()
        };
        assert!(b.escalate_due(5 * MIN - 1).is_empty());
        assert_eq!(b.escalate_due(5 * MIN), vec![(crit, 1)], "critical: 5 min");
        assert_eq!(
            b.escalate_due(10 * MIN),
            vec![(crit, 2)],
            "then the duty desk"
        );
        assert_eq!(b.escalate_due(15 * MIN), vec![(ser, 1)], "serious: 15 min");
        b.acknowledge(ser, 9, Some("on my way".into()), 16 * MIN)
            .expect("acknowledged");
        assert!(
            b.escalate_due(24 * 60 * MIN).is_empty(),
            "acknowledged, info and the desk stop"
        );
        assert_eq!(b.get(info).map(|a| a.level), Some(0));
        assert_eq!(b.get(crit).and_then(|a| a.escalate_at_ms), None);
    }

    /// Deadlines are data: an alert stored with its deadline and restored
    /// after a restart escalates at the same time; an acknowledged one does
    /// not; new ids follow the restored ones.
    #[test]
    fn restored_alerts_keep_their_escalation_deadlines() {
        let mut before = AlertBook::new(Policy::default(), 0);
        let Raised::New(a) = before.raise(key(AlertType::StrapTamper, 0), 0, false, 0) else {
            panic!()
        };
        let Raised::New(b) = before.raise(key(AlertType::CaseTamper, 0), 0, false, 0) else {
            panic!()
        };
        before.acknowledge(b, 4, None, MIN).expect("acknowledged");
        assert_eq!(before.escalate_due(5 * MIN), vec![(a, 1)]);
        let stored: Vec<Alert> = before.alerts().cloned().collect();

        let mut after = AlertBook::new(Policy::default(), 0);
        for s in stored {
            after.restore(s);
        }
        assert_eq!(after.next_deadline(), Some(10 * MIN));
        assert!(after.escalate_due(10 * MIN - 1).is_empty());
        assert_eq!(
            after.escalate_due(10 * MIN),
            vec![(a, 2)],
            "the duty desk, on time"
        );
        assert_eq!(
            after.get(a).map(|x| x.version),
            Some(3),
            "raised, escalated, escalated"
        );
        let Raised::New(c) = after.raise(key(AlertType::BatteryLow, 1), 0, false, 11 * MIN) else {
            panic!()
        };
        assert_eq!(c, AlertId(3));
    }
}
