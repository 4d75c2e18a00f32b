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
//!
//! Historical transitions (from late store-and-forward uploads) raise alerts
//! marked `historical` with their true time; their ends resolve them.

use crate::book::{AlertBook, AlertKey, Raised};
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
}

/// The router's state: open episodes by their start, and the open device
/// conditions per subject.
#[derive(Debug, Default)]
pub struct Router {
    book: AlertBook,
    episodes: HashMap<(u64, ViolationKind, u64, bool), AlertKey>,
    conditions: HashMap<(u64, AlertType), AlertKey>,
}

impl Router {
    /// A router over `book`.
    pub fn new(book: AlertBook) -> Router {
        Router {
            book,
            ..Router::default()
        }
    }

    /// The alert book.
    pub fn book(&mut self) -> &mut AlertBook {
        &mut self.book
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
                    let key = AlertKey {
                        subject,
                        kind: kind.alert(),
                        scope,
                        episode_ms: at_ms,
                    };
                    self.episodes.insert(slot, key);
                    Some(self.book.raise(key, at_ms, historical, now_ms))
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
            } => {
                let key = |kind| AlertKey {
                    subject,
                    kind,
                    scope: 0,
                    episode_ms: at_ms,
                };
                match event {
                    DeviceEvent::StrapOpened => {
                        Some(
                            self.book
                                .raise(key(AlertType::StrapTamper), at_ms, false, now_ms),
                        )
                    }
                    DeviceEvent::CaseOpened => {
                        Some(
                            self.book
                                .raise(key(AlertType::CaseTamper), at_ms, false, now_ms),
                        )
                    }
                    DeviceEvent::BatteryLow | DeviceEvent::BatteryCritical => {
                        let kind = if event == DeviceEvent::BatteryLow {
                            AlertType::BatteryLow
                        } else {
                            AlertType::BatteryCritical
                        };
                        let k = *self.conditions.entry((subject, kind)).or_insert(key(kind));
                        Some(self.book.raise(k, at_ms, false, now_ms))
                    }
                    DeviceEvent::ChargerConnected | DeviceEvent::ChargerDisconnected => {
                        let kind = if event == DeviceEvent::ChargerConnected {
                            for b in [AlertType::BatteryLow, AlertType::BatteryCritical] {
                                if let Some(k) = self.conditions.remove(&(subject, b)) {
                                    self.book.end_episode(&k, now_ms);
                                }
                            }
                            AlertType::ChargerConnected
                        } else {
                            AlertType::ChargerDisconnected
                        };
                        let k = key(kind);
                        let r = self.book.raise(k, at_ms, false, now_ms);
                        self.book.end_episode(&k, now_ms);
                        Some(r)
                    }
                }
            }
            Input::Silent {
                subject,
                last_seen_ms,
            } => {
                let k = AlertKey {
                    subject,
                    kind: AlertType::NoCommunication,
                    scope: 0,
                    episode_ms: last_seen_ms,
                };
                self.conditions
                    .insert((subject, AlertType::NoCommunication), k);
                Some(self.book.raise(k, last_seen_ms, false, now_ms))
            }
            Input::BackOnline { subject } => {
                if let Some(k) = self
                    .conditions
                    .remove(&(subject, AlertType::NoCommunication))
                {
                    self.book.end_episode(&k, now_ms);
                }
                None
            }
        }
    }
}
