//! From what ingest saw to alerts: violation transitions, device events and
//! silences become raises and resolutions in the [`AlertBook`].
//!
//! | input | alert |
//! |---|---|
//! | exclusion zone entered (personal or category) | `exclusion_zone_entered`, resolved when left |
//! | inclusion zone left (home, city) | `inclusion_zone_left`, resolved on return |
//! | curfew violation started | `curfew_violation`, resolved when it ends |
//! | victim proximity entered | `victim_proximity`, resolved when apart |
//! | strap / case opened | `strap_tamper` / `case_tamper`, one per event, resolved only by an officer with a note |
//! | battery low / critical | one open alert per subject, resolved when the charger is connected |
//! | charger connected / disconnected | `info`, resolved at once (a record, not a task) |
//! | silence past the allowance | `no_communication`, resolved when the device speaks again (`device_back_online`) |
//! | motion without a fix past the limit ([`crate::GpsWatch`]) | `location_failure`, resolved by the next fix |
//! | a fix clock ahead of arrival, or jumped back (ingest's finding) | `device_clock_fault`, one open alert per subject, resolved by an officer |
//! | a record conflicting with a stored one (ingest's finding) | `device_integrity`, one open alert per subject, resolved only with a note |
//!
//! Historical transitions (from late store-and-forward uploads) raise alerts
//! marked `historical` with their true time; their ends resolve them.

use crate::book::{
    Alert, AlertBook, AlertEvent, AlertId, AlertKey, AlertState, BookError, Level, OfficerAction,
    Raised,
};
use crate::policy::AlertType;
use std::collections::HashMap;

/// The kind of rule a transition belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// An exclusion zone (personal, or of a barred category).
    Exclusion,
    /// An inclusion zone (home by rule, the city).
    Inclusion,
    /// A curfew.
    Curfew,
    /// Distance from a protected victim.
    Proximity,
}

impl ViolationKind {
    /// The violation kind an alert type belongs to, if any.
    pub fn of(t: AlertType) -> Option<ViolationKind> {
        Some(match t {
            AlertType::ExclusionZoneEntered => ViolationKind::Exclusion,
            AlertType::InclusionZoneLeft => ViolationKind::Inclusion,
            AlertType::CurfewViolation => ViolationKind::Curfew,
            AlertType::VictimProximity => ViolationKind::Proximity,
            _ => return None,
        })
    }

    /// The kind of rule a transition belongs to.
    pub fn of_transition(t: geofence::TransitionKind) -> ViolationKind {
        use geofence::TransitionKind as T;
        match t {
            T::ExclusionEntered | T::ExclusionLeft => ViolationKind::Exclusion,
            T::InclusionLeft | T::InclusionReturned => ViolationKind::Inclusion,
            T::CurfewViolationStarted | T::CurfewViolationEnded => ViolationKind::Curfew,
            T::ProximityEntered | T::ProximityLeft => ViolationKind::Proximity,
        }
    }

    fn alert(self) -> AlertType {
        match self {
            ViolationKind::Exclusion => AlertType::ExclusionZoneEntered,
            ViolationKind::Inclusion => AlertType::InclusionZoneLeft,
            ViolationKind::Curfew => AlertType::CurfewViolation,
            ViolationKind::Proximity => AlertType::VictimProximity,
        }
    }
}

/// Device events that matter to officers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceEvent {
    /// Strap opened or cut.
    StrapOpened,
    /// Case opened.
    CaseOpened,
    /// Battery low.
    BatteryLow,
    /// Battery critical.
    BatteryCritical,
    /// Charger connected.
    ChargerConnected,
    /// Charger disconnected.
    ChargerDisconnected,
    /// Ingest found the device's clock at odds with arrival.
    ClockFault,
    /// Ingest found a record conflicting with a stored one.
    ConflictingRecord,
    /// The device detected GNSS jamming or shielding.
    ShieldingDetected,
    /// The strap closed again: recorded on the open strap tamper alert.
    StrapClosed,
    /// The case closed again: recorded on the open case tamper alert.
    CaseClosed,
}

impl DeviceEvent {
    /// The alert-worthy device event of a protocol event kind, if it is one.
    pub fn of(k: protocol::EventKind) -> Option<DeviceEvent> {
        use protocol::EventKind as K;
        Some(match k {
            K::StrapOpened => DeviceEvent::StrapOpened,
            K::CaseOpened => DeviceEvent::CaseOpened,
            K::StrapClosed => DeviceEvent::StrapClosed,
            K::CaseClosed => DeviceEvent::CaseClosed,
            K::BatteryLow => DeviceEvent::BatteryLow,
            K::BatteryCritical => DeviceEvent::BatteryCritical,
            K::ChargerConnected => DeviceEvent::ChargerConnected,
            K::ChargerDisconnected => DeviceEvent::ChargerDisconnected,
            K::ShieldingDetected => DeviceEvent::ShieldingDetected,
            _ => return None,
        })
    }
}

/// One thing that happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A rule transition.
    Violation {
        /// Subject.
        subject: u64,
        /// Rule kind.
        kind: ViolationKind,
        /// Zone id, or the rule id for proximity.
        scope: u64,
        /// Opens (else closes) the episode.
        start: bool,
        /// Fix time of the transition (ms).
        at_ms: i64,
        /// From a late upload.
        historical: bool,
    },
    /// A device event of the subject's bracelet.
    Event {
        /// Subject.
        subject: u64,
        /// What.
        event: DeviceEvent,
        /// Event time (ms).
        at_ms: i64,
        /// From a late store-and-forward upload.
        historical: bool,
    },
    /// The subject's bracelet went silent (from the silence wheel).
    Silent {
        /// Subject.
        subject: u64,
        /// Last heard from (ms).
        last_seen_ms: i64,
    },
    /// The subject's bracelet spoke again.
    BackOnline {
        /// Subject.
        subject: u64,
    },
    /// The subject's bracelet reports motion but no fix (from [`crate::GpsWatch`]).
    LocationFailure {
        /// Subject.
        subject: u64,
        /// Last fix (ms).
        last_fix_ms: i64,
        /// The report that showed it (ms).
        at_ms: i64,
    },
    /// A fix again after a location failure.
    LocationRestored {
        /// Subject.
        subject: u64,
    },
    /// The phone of a person protected from the subject went silent.
    ProtectionDegraded {
        /// Subject.
        subject: u64,
        /// The phone was last heard from (ms).
        last_seen_ms: i64,
    },
    /// That phone spoke again.
    ProtectionRestored {
        /// Subject.
        subject: u64,
    },
    /// A fleet outage started or ended ([`crate::OutageWatch`]): the
    /// incident is a condition of subject 0, for the duty desk.
    FleetSilence {
        /// It started (else ended).
        start: bool,
        /// When it started (ms).
        at_ms: i64,
    },
}

impl Input {
    /// The input of an engine transition: the zone is the scope (the rule for
    /// proximity), the episode starts at the transition's `at`.
    pub fn violation(t: &geofence::Transition) -> Input {
        Input::Violation {
            subject: t.subject.0,
            kind: ViolationKind::of_transition(t.kind),
            scope: t.zone.map_or(t.rule.0, |z| z.0),
            start: t.kind.is_start(),
            at_ms: t.at.as_millisecond(),
            historical: t.historical,
        }
    }
}

/// The "subject" of fleet incidents ([`AlertType::FleetSilent`]): no
/// subject has id 0, so they go to the duty desk.
pub const FLEET: u64 = 0;

/// The router's state: open episodes by their start, and the open device
/// conditions per subject.
#[derive(Debug, Default)]
pub struct Router {
    book: AlertBook,
    episodes: HashMap<(u64, ViolationKind, u64, bool), AlertKey>,
    conditions: HashMap<(u64, AlertType), AlertKey>,
    /// Each subject's newest strap and case tamper alert.
    tampers: HashMap<(u64, AlertType), AlertKey>,
}

impl Router {
    /// A router over `book`.
    pub fn new(book: AlertBook) -> Router {
        Router {
            book,
            ..Router::default()
        }
    }

    /// The alert book, to read. Changes go through the router, so that its
    /// episodes and conditions always match the book.
    pub fn book(&self) -> &AlertBook {
        &self.book
    }

    /// Puts back an alert read from the store (after a restart): the book
    /// keeps it (dedup, escalation deadline), and, if unresolved, the end of
    /// its episode, a charger or the device speaking again resolves it, and a
    /// repeat of its condition updates it.
    pub fn restore(&mut self, alert: Alert) {
        self.adopt(&alert);
        self.book.restore(alert);
    }

    /// An officer acknowledges ([`AlertBook::acknowledge`]) or resolves
    /// ([`AlertBook::resolve`]) an alert.
    pub fn act(
        &mut self,
        id: AlertId,
        officer: u64,
        action: OfficerAction,
        note: Option<String>,
        now_ms: i64,
    ) -> Result<(), BookError> {
        match action {
            OfficerAction::Acknowledge => self.book.acknowledge(id, officer, note, now_ms),
            OfficerAction::Resolve(d) => self.book.resolve(id, officer, d, note, now_ms),
        }
    }

    /// Escalates what is due at `now_ms` ([`AlertBook::escalate_due`]).
    pub fn escalate_due(&mut self, now_ms: i64) -> Vec<(AlertId, Level)> {
        self.book.escalate_due(now_ms)
    }

    /// Drains the book's log lines ([`AlertBook::take_events`]).
    pub fn take_events(&mut self) -> Vec<AlertEvent> {
        self.book.take_events()
    }

    /// Drops an alert the store refused or already has under another id
    /// ([`AlertBook::forget`]).
    pub fn forget(&mut self, id: AlertId) {
        self.book.forget(id);
    }

    /// Drops alerts resolved before `before_ms` from memory
    /// ([`AlertBook::forget_resolved`]).
    pub fn forget_resolved(&mut self, before_ms: i64) -> usize {
        self.book.forget_resolved(before_ms)
    }

    fn adopt(&mut self, alert: &Alert) {
        if alert.state == AlertState::Resolved {
            return;
        }
        let k = alert.key;
        if matches!(k.kind, AlertType::StrapTamper | AlertType::CaseTamper) {
            self.note_tamper(k);
        }
        if let Some(kind) = ViolationKind::of(k.kind) {
            self.episodes
                .insert((k.subject, kind, k.scope, alert.historical), k);
        } else if matches!(
            k.kind,
            AlertType::BatteryLow
                | AlertType::BatteryCritical
                | AlertType::NoCommunication
                | AlertType::LocationFailure
                | AlertType::FleetSilent
                | AlertType::ProtectionDegraded
        ) {
            self.conditions.insert((k.subject, k.kind), k);
        }
    }

    /// Raises the subject's open condition of `kind`, or a new one (since
    /// `since_ms`) if there is none or an officer resolved it meanwhile.
    fn condition(
        &mut self,
        subject: u64,
        kind: AlertType,
        since_ms: i64,
        at_ms: i64,
        now_ms: i64,
    ) -> Raised {
        let fresh = AlertKey {
            subject,
            kind,
            scope: 0,
            episode_ms: since_ms,
        };
        let k = match self.conditions.get(&(subject, kind)) {
            Some(k) if self.is_open(k) => *k,
            _ => {
                self.conditions.insert((subject, kind), fresh);
                fresh
            }
        };
        self.book.raise(k, at_ms, false, now_ms)
    }

    /// Whether the subject's condition of `kind` has an unresolved alert.
    pub fn has_open(&self, subject: u64, kind: AlertType) -> bool {
        self.conditions
            .get(&(subject, kind))
            .is_some_and(|k| self.is_open(k))
    }

    fn is_open(&self, k: &AlertKey) -> bool {
        matches!(self.book.state_of(k), Some(s) if s != AlertState::Resolved)
    }

    fn end_condition(&mut self, subject: u64, kind: AlertType, now_ms: i64) {
        if let Some(k) = self.conditions.remove(&(subject, kind)) {
            self.book.end_episode(&k, now_ms);
        }
    }

    /// Applies one input at `now_ms`; returns the alerts raised (new or repeated).
    pub fn handle(&mut self, input: Input, now_ms: i64) -> Option<Raised> {
        match input {
            Input::Violation {
                subject,
                kind,
                scope,
                start,
                at_ms,
                historical,
            } => {
                let slot = (subject, kind, scope, historical);
                if start {
                    Some(self.start_episode(slot, at_ms, now_ms))
                } else {
                    if let Some(key) = self.episodes.remove(&slot) {
                        self.book.end_episode(&key, now_ms);
                    }
                    None
                }
            }
            Input::Event {
                subject,
                event,
                at_ms,
                historical,
            } => self.event(subject, event, at_ms, historical, now_ms),
            Input::Silent {
                subject,
                last_seen_ms,
            } => Some(self.condition(
                subject,
                AlertType::NoCommunication,
                last_seen_ms,
                last_seen_ms,
                now_ms,
            )),
            Input::BackOnline { subject } => {
                self.end_condition(subject, AlertType::NoCommunication, now_ms);
                None
            }
            Input::LocationFailure {
                subject,
                last_fix_ms,
                at_ms,
            } => Some(self.condition(
                subject,
                AlertType::LocationFailure,
                last_fix_ms,
                at_ms,
                now_ms,
            )),
            Input::LocationRestored { subject } => {
                self.end_condition(subject, AlertType::LocationFailure, now_ms);
                None
            }
            Input::ProtectionDegraded {
                subject,
                last_seen_ms,
            } => Some(self.condition(
                subject,
                AlertType::ProtectionDegraded,
                last_seen_ms,
                last_seen_ms,
                now_ms,
            )),
            Input::ProtectionRestored { subject } => {
                self.end_condition(subject, AlertType::ProtectionDegraded, now_ms);
                None
            }
            Input::FleetSilence { start: true, at_ms } => {
                Some(self.condition(FLEET, AlertType::FleetSilent, at_ms, at_ms, now_ms))
            }
            Input::FleetSilence { start: false, .. } => {
                self.end_condition(FLEET, AlertType::FleetSilent, now_ms);
                None
            }
        }
    }

    /// A violation episode starts in `slot` (subject, kind, scope, historical).
    fn start_episode(
        &mut self,
        slot: (u64, ViolationKind, u64, bool),
        at_ms: i64,
        now_ms: i64,
    ) -> Raised {
        let (subject, kind, scope, historical) = slot;
        // A start while the slot's episode is still open (the engine lost
        // track of it, e.g. a rebuild that did not reach back to its start)
        // continues that episode.
        if let Some(open) = self.episodes.get(&slot).copied()
            && open.episode_ms != at_ms
            && self.is_open(&open)
        {
            return self.book.raise(open, at_ms, historical, now_ms);
        }
        let key = AlertKey {
            subject,
            kind: kind.alert(),
            scope,
            episode_ms: at_ms,
        };
        self.episodes.insert(slot, key);
        self.book.raise(key, at_ms, historical, now_ms)
    }

    /// Remembers `k` as its subject's newest tamper alert of its kind.
    fn note_tamper(&mut self, k: AlertKey) {
        let slot = self.tampers.entry((k.subject, k.kind)).or_insert(k);
        if slot.episode_ms < k.episode_ms {
            *slot = k;
        }
    }

    /// A strap or case closed again: recorded on the subject's open tamper
    /// alert of that kind, which stays open for an officer's note.
    fn tamper_closed(&mut self, subject: u64, kind: AlertType, at_ms: i64, now_ms: i64) {
        if let Some(k) = self.tampers.get(&(subject, kind)).copied()
            && k.episode_ms <= at_ms
        {
            self.book.condition_ended(&k, at_ms, now_ms);
        }
    }

    /// A device event: tamper opens an alert of its own (its closing is
    /// recorded on it), battery a condition (ended by the charger), charger
    /// events are records (resolved at once).
    fn event(
        &mut self,
        subject: u64,
        event: DeviceEvent,
        at_ms: i64,
        historical: bool,
        now_ms: i64,
    ) -> Option<Raised> {
        let key = |kind| AlertKey {
            subject,
            kind,
            scope: 0,
            episode_ms: at_ms,
        };
        Some(match event {
            DeviceEvent::StrapOpened | DeviceEvent::CaseOpened => {
                let kind = if event == DeviceEvent::StrapOpened {
                    AlertType::StrapTamper
                } else {
                    AlertType::CaseTamper
                };
                self.note_tamper(key(kind));
                self.book.raise(key(kind), at_ms, historical, now_ms)
            }
            DeviceEvent::StrapClosed => {
                self.tamper_closed(subject, AlertType::StrapTamper, at_ms, now_ms);
                return None;
            }
            DeviceEvent::CaseClosed => {
                self.tamper_closed(subject, AlertType::CaseTamper, at_ms, now_ms);
                return None;
            }
            DeviceEvent::BatteryLow => {
                self.condition(subject, AlertType::BatteryLow, at_ms, at_ms, now_ms)
            }
            // Conditions: one open alert per subject, however many records
            // show it, until an officer resolves it.
            DeviceEvent::ClockFault => {
                self.condition(subject, AlertType::DeviceClockFault, at_ms, at_ms, now_ms)
            }
            DeviceEvent::ConflictingRecord => {
                self.condition(subject, AlertType::DeviceIntegrity, at_ms, at_ms, now_ms)
            }
            DeviceEvent::ShieldingDetected => {
                self.condition(subject, AlertType::ShieldingDetected, at_ms, at_ms, now_ms)
            }
            DeviceEvent::BatteryCritical => {
                self.condition(subject, AlertType::BatteryCritical, at_ms, at_ms, now_ms)
            }
            DeviceEvent::ChargerConnected | DeviceEvent::ChargerDisconnected => {
                let kind = if event == DeviceEvent::ChargerConnected {
                    for b in [AlertType::BatteryLow, AlertType::BatteryCritical] {
                        self.end_condition(subject, b, now_ms);
                    }
                    AlertType::ChargerConnected
                } else {
                    AlertType::ChargerDisconnected
                };
                let k = key(kind);
                let r = self.book.raise(k, at_ms, historical, now_ms);
                self.book.end_episode(&k, now_ms);
                r
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn state(r: &mut Router, kind: AlertType) -> Vec<AlertState> {
        let ids = r.book().ids_of(kind);
        ids.iter()
            .filter_map(|id| r.book().get(*id).map(|a| a.state))
            .collect()
    }

    /// Every input kind raises its alert type, and each condition ends the
    /// way the module table says.
    #[test]
    fn every_alert_type_from_its_input_and_its_end() {
        let mut r = Router::new(AlertBook::new(Policy::default(), 0));
        let s = 7;
        for (kind, scope) in [
            (ViolationKind::Exclusion, 70),
            (ViolationKind::Inclusion, 71),
            (ViolationKind::Curfew, 72),
            (ViolationKind::Proximity, 73),
        ] {
            let v = |start, at_ms| Input::Violation {
                subject: s,
                kind,
                scope,
                start,
                at_ms,
                historical: false,
            };
            assert!(matches!(
                r.handle(v(true, 1_000), 2_000),
                Some(Raised::New(_))
            ));
            assert!(matches!(
                r.handle(v(true, 1_000), 2_500),
                Some(Raised::Repeated(_))
            ));
            assert_eq!(r.handle(v(false, 5_000), 6_000), None);
            assert_eq!(state(&mut r, kind.alert()), vec![AlertState::Resolved]);
        }
        let ev = |event, at_ms| Input::Event {
            subject: s,
            event,
            at_ms,
            historical: false,
        };
        r.handle(ev(DeviceEvent::StrapOpened, 10_000), 10_100);
        r.handle(ev(DeviceEvent::CaseOpened, 10_000), 10_100);
        r.handle(ev(DeviceEvent::BatteryLow, 11_000), 11_100);
        r.handle(ev(DeviceEvent::BatteryLow, 12_000), 12_100);
        r.handle(ev(DeviceEvent::BatteryCritical, 13_000), 13_100);
        assert_eq!(
            r.book().ids_of(AlertType::BatteryLow).len(),
            1,
            "one open battery alert per condition"
        );
        r.handle(ev(DeviceEvent::ChargerConnected, 14_000), 14_100);
        r.handle(ev(DeviceEvent::ChargerDisconnected, 15_000), 15_100);
        r.handle(
            Input::Silent {
                subject: s,
                last_seen_ms: 16_000,
            },
            17_000,
        );
        r.handle(
            Input::Silent {
                subject: s,
                last_seen_ms: 16_500,
            },
            17_500,
        );
        assert_eq!(r.book().ids_of(AlertType::NoCommunication).len(), 1);
        r.handle(Input::BackOnline { subject: s }, 18_000);
        r.handle(
            Input::LocationFailure {
                subject: s,
                last_fix_ms: 19_000,
                at_ms: 20_000,
            },
            20_100,
        );
        r.handle(Input::LocationRestored { subject: s }, 21_000);
        // Ingest's findings: one open alert per subject however many.
        r.handle(ev(DeviceEvent::ClockFault, 22_000), 22_100);
        r.handle(ev(DeviceEvent::ClockFault, 23_000), 23_100);
        r.handle(ev(DeviceEvent::ConflictingRecord, 24_000), 24_100);
        r.handle(ev(DeviceEvent::ConflictingRecord, 25_000), 25_100);
        r.handle(ev(DeviceEvent::ShieldingDetected, 26_000), 26_100);
        r.handle(ev(DeviceEvent::ShieldingDetected, 27_000), 27_100);
        // A fleet outage: one incident of subject 0, however often started.
        for start in [28_000, 28_500] {
            r.handle(
                Input::FleetSilence {
                    start: true,
                    at_ms: start,
                },
                start,
            );
        }
        assert_eq!(r.book().ids_of(AlertType::FleetSilent).len(), 1);
        r.handle(
            Input::ProtectionDegraded {
                subject: s,
                last_seen_ms: 29_000,
            },
            29_500,
        );
        r.handle(Input::ProtectionRestored { subject: s }, 29_800);
        r.handle(
            Input::FleetSilence {
                start: false,
                at_ms: 28_000,
            },
            29_000,
        );
        for (kind, want) in [
            (AlertType::ProtectionDegraded, AlertState::Resolved),
            (AlertType::FleetSilent, AlertState::Resolved),
            (AlertType::ShieldingDetected, AlertState::Open),
            (AlertType::DeviceClockFault, AlertState::Open),
            (AlertType::DeviceIntegrity, AlertState::Open),
            (AlertType::StrapTamper, AlertState::Open),
            (AlertType::CaseTamper, AlertState::Open),
            (AlertType::BatteryLow, AlertState::Resolved),
            (AlertType::BatteryCritical, AlertState::Resolved),
            (AlertType::ChargerConnected, AlertState::Resolved),
            (AlertType::ChargerDisconnected, AlertState::Resolved),
            (AlertType::NoCommunication, AlertState::Resolved),
            (AlertType::LocationFailure, AlertState::Resolved),
        ] {
            assert_eq!(state(&mut r, kind), vec![want], "{kind:?}");
        }
        let raised: std::collections::BTreeSet<AlertType> =
            r.book().alerts().map(|a| a.key.kind).collect();
        assert_eq!(raised.len(), AlertType::ALL.len(), "every type raised");
    }

    /// A strap closing again is recorded on the open strap tamper alert
    /// (once, whatever replays it, also after a restart), which stays open
    /// for an officer's note; a case closing with no case alert open adds
    /// nothing.
    #[test]
    fn a_closed_strap_is_recorded_on_its_open_tamper_alert() {
        let ev = |event, at_ms| Input::Event {
            subject: 4,
            event,
            at_ms,
            historical: false,
        };
        let mut r = Router::new(AlertBook::new(Policy::default(), 0));
        r.handle(ev(DeviceEvent::StrapOpened, 10_000), 10_100);
        r.take_events();
        r.handle(ev(DeviceEvent::StrapClosed, 70_000), 70_100);
        r.handle(ev(DeviceEvent::StrapClosed, 70_000), 70_200);
        r.handle(ev(DeviceEvent::CaseClosed, 71_000), 71_100);
        let events = r.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].what, crate::Change::ConditionEnded);
        let note = events[0].note.as_deref().unwrap_or("");
        assert!(
            note.starts_with("strap closed at 1970-01-01T00:01:10Z"),
            "{note}"
        );
        assert_eq!(
            state(&mut r, AlertType::StrapTamper),
            vec![AlertState::Open]
        );
        // After a restart: the stored alert remembers it.
        let stored = r.book().alerts().next().cloned().expect("the alert");
        assert_eq!(stored.condition_ended_ms, Some(70_000));
        let mut after = Router::new(AlertBook::new(Policy::default(), 0));
        after.restore(stored);
        after.handle(ev(DeviceEvent::StrapClosed, 70_000), 80_000);
        assert!(after.take_events().is_empty(), "a re-read adds nothing");
        after.handle(ev(DeviceEvent::StrapClosed, 90_000), 90_100);
        assert_eq!(after.take_events().len(), 1, "a later closing is recorded");
    }

    /// After a restart, an adopted alert is ended by its episode's end and
    /// updated (not duplicated) by a repeat of its condition.
    #[test]
    fn adopted_alerts_end_and_dedup_as_before() {
        let mut before = Router::new(AlertBook::new(Policy::default(), 0));
        before.handle(
            Input::Violation {
                subject: 1,
                kind: ViolationKind::Curfew,
                scope: 5,
                start: true,
                at_ms: 100,
                historical: false,
            },
            200,
        );
        before.handle(
            Input::Silent {
                subject: 2,
                last_seen_ms: 300,
            },
            400,
        );
        let stored: Vec<_> = before.book().alerts().cloned().collect();
        let mut after = Router::new(AlertBook::new(Policy::default(), 0));
        for a in stored {
            after.restore(a);
        }
        assert!(matches!(
            after.handle(
                Input::Silent {
                    subject: 2,
                    last_seen_ms: 350
                },
                500
            ),
            Some(Raised::Repeated(_))
        ));
        after.handle(
            Input::Violation {
                subject: 1,
                kind: ViolationKind::Curfew,
                scope: 5,
                start: false,
                at_ms: 600,
                historical: false,
            },
            700,
        );
        after.handle(Input::BackOnline { subject: 2 }, 800);
        assert!(
            after
                .book()
                .alerts()
                .all(|a| a.state == AlertState::Resolved)
        );
        let Some(Raised::New(next)) = after.handle(
            Input::Event {
                subject: 3,
                event: DeviceEvent::StrapOpened,
                at_ms: 0,
                historical: false,
            },
            900,
        ) else {
            panic!("new")
        };
        assert_eq!(next.0, 3, "ids continue after the restored ones");
    }

    /// A condition an officer closed by hand starts a new alert when it
    /// comes back; a second start of an episode still open continues it.
    #[test]
    fn a_resolved_condition_comes_back_and_an_open_episode_continues() {
        let mut r = Router::new(AlertBook::new(Policy::default(), 0));
        let low = |at_ms| Input::Event {
            subject: 1,
            event: DeviceEvent::BatteryLow,
            at_ms,
            historical: false,
        };
        let Some(Raised::New(first)) = r.handle(low(1_000), 1_100) else {
            panic!("new")
        };
        r.act(
            first,
            3,
            OfficerAction::Resolve(crate::Disposition::ViolationConfirmed),
            Some("spoke to the subject".into()),
            2_000,
        )
        .expect("resolved");
        let Some(Raised::New(second)) = r.handle(low(3_000), 3_100) else {
            panic!("a new alert, not suppressed by the resolved one")
        };
        assert_ne!(first, second);

        let start = |at_ms| Input::Violation {
            subject: 2,
            kind: ViolationKind::Curfew,
            scope: 9,
            start: true,
            at_ms,
            historical: false,
        };
        let Some(Raised::New(ep)) = r.handle(start(10_000), 10_100) else {
            panic!("new")
        };
        assert_eq!(r.handle(start(20_000), 20_100), Some(Raised::Repeated(ep)));
        assert_eq!(r.book().ids_of(AlertType::CurfewViolation), vec![ep]);
    }
}
