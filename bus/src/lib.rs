//! `bus`: the contract between emtrack's evidence side and its alert service.
//!
//! Ingest publishes what each commit stored ([`Observed`]); the reference
//! loader publishes which bracelets are to be watched for silence
//! ([`Fleet`]). The alert service consumes both. Both sides import this
//! crate and neither imports the other, so data flows one way: a message
//! carries everything the alert service needs (device names included), and
//! the alert service never reaches into the engine or the pipeline.
//!
//! **API Boundary:** a message is sent only after what it describes is
//! committed, so a restart can always re-read it from the store.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use geofence::Transition;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// A rule transition as stored (`rule_transitions`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTransition {
    /// The engine's transition.
    pub transition: Transition,
    /// The subject's device whose fix caused it (`None` when a reference
    /// change closed the episode).
    pub device: Option<String>,
    /// The other party's device (proximity rules).
    pub other_device: Option<String>,
}

/// A device event of a subject's bracelet, as stored (`device_events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    /// The subject.
    pub subject: u64,
    /// The bracelet.
    pub device: String,
    /// What.
    pub kind: protocol::EventKind,
    /// Event time (ms).
    pub at_ms: i64,
    /// Older than an event already stored for the device (store-and-forward).
    pub late: bool,
}

/// One accepted message of a subject's bracelet, for silence and
/// location-failure detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The bracelet's engine id (as in [`Watched::device`]).
    pub device: u32,
    /// Its protocol id, for the notifications of alerts it raises.
    pub name: Arc<str>,
    /// Its subject.
    pub subject: u64,
    /// Newest record time in the message (device clock, ms).
    pub time_ms: i64,
    /// The message carried a position.
    pub fix: bool,
    /// A heartbeat showed motion.
    pub motion: bool,
}

/// What emtrack concluded about a device's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// A fix dated ahead of its arrival by more than the clock tolerance.
    ClockAhead,
    /// Fixes dated back by a constant lag while sent in real time: the
    /// device's clock jumped back.
    ClockBehind,
    /// A record disagreeing with one already stored for the same device and
    /// time: cloning, forgery, or a broken device.
    ConflictingFix,
}

impl FindingKind {
    /// Every kind, in code order.
    pub const ALL: [FindingKind; 3] = [
        FindingKind::ClockAhead,
        FindingKind::ClockBehind,
        FindingKind::ConflictingFix,
    ];

    /// Stable label (`device_findings.kind`, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ClockAhead => "clock_ahead",
            FindingKind::ClockBehind => "clock_behind",
            FindingKind::ConflictingFix => "conflicting_fix",
        }
    }

    /// The kind whose [`FindingKind::as_str`] label is `name`.
    pub fn from_name(name: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A finding about a subject's bracelet, as stored (`device_findings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The subject.
    pub subject: u64,
    /// The bracelet.
    pub device: String,
    /// What.
    pub kind: FindingKind,
    /// The time of the record that showed it (device clock, ms).
    pub at_ms: i64,
}

/// What one commit stored that the alert service needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Wall clock just after the commit (ms).
    pub committed_ms: i64,
    /// Rule transitions.
    pub transitions: Vec<StoredTransition>,
    /// Device events of bracelets with a subject.
    pub events: Vec<ObservedEvent>,
    /// One per accepted message of a bracelet with a subject.
    pub reports: Vec<Report>,
    /// Findings about bracelets with a subject.
    pub findings: Vec<Finding>,
    /// The engine ids of protected persons' phones heard from (one per
    /// accepted message), for their silence.
    pub phones: Vec<u32>,
}

impl Observed {
    /// Nothing for the alert service.
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
            && self.events.is_empty()
            && self.reports.is_empty()
            && self.findings.is_empty()
            && self.phones.is_empty()
    }
}

/// A bracelet to watch for silence: assigned to a subject, not retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// Its engine id (dense, assigned by the reference loader).
    pub device: u32,
    /// Its protocol id.
    pub name: Arc<str>,
    /// Its subject.
    pub subject: u64,
    /// How often it reports (`devices.report_interval_s`).
    pub report_interval_s: u32,
}

/// Every bracelet to watch: a snapshot, replaced whenever devices,
/// assignments or retirements change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// The bracelets.
    pub bracelets: Vec<Watched>,
    /// The protected persons' phones (proximity orders need their
    /// positions: one silent degrades the protection of the subjects it
    /// is protected from).
    pub phones: Vec<WatchedPhone>,
}

/// A protected person's phone to watch for silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedPhone {
    /// Its engine id (dense, assigned by the reference loader; distinct
    /// from every bracelet's).
    pub device: u32,
    /// Its protocol id.
    pub name: Arc<str>,
    /// The subjects it is protected from (`victims.protected_from`).
    pub protects: Vec<u64>,
    /// How often it reports (`devices.report_interval_s`).
    pub report_interval_s: u32,
}

/// How many commits may wait for the alert service. Bounded: a slow alert
/// service holds ingest back (the broker keeps the messages) rather than
/// lose an alert.
pub const OBSERVED_CAPACITY: usize = 4_096;

/// Ingest's end of the commit stream.
pub type ObservedTx = mpsc::Sender<Observed>;
/// The alert service's end of the commit stream.
pub type ObservedRx = mpsc::Receiver<Observed>;
/// The reference loader's end of the fleet snapshot.
pub type FleetTx = watch::Sender<Arc<Fleet>>;
/// The alert service's end of the fleet snapshot (the latest wins).
pub type FleetRx = watch::Receiver<Arc<Fleet>>;

/// The commit stream from ingest to the alert service.
pub fn observed() -> (ObservedTx, ObservedRx) {
    mpsc::channel(OBSERVED_CAPACITY)
}

/// The fleet snapshot, starting from `initial`.
pub fn fleet(initial: Fleet) -> (FleetTx, FleetRx) {
    watch::channel(Arc::new(initial))
}
