//! `alerts`: what officers are told, and when.
//!
//! A pure core with no I/O (time is
//! an argument, so tests are deterministic):
//! - `policy`: alert types, default severities, per-agency overrides and
//!   escalation delays;
//! - `silence`: a deadline wheel that finds bracelets gone silent, O(1) per
//!   message, without scanning every device per tick;
//! - `book`: the alert lifecycle (open → acknowledged → resolved), dedup per
//!   episode, tamper alerts resolved only with a note, escalation to the
//!   supervisor and then the duty desk, and the append-only event log;
//! - `gps`: location failure, motion reported without a fix for too long;
//! - `outage`: mass silence, many bracelets silent at once, turned into one
//!   fleet incident instead of an alert per bracelet;
//! - `router`: violation transitions, device events, silences and location
//!   failures to raises and resolutions.
//!
//! The runtime around it (persistence, the input from ingest, delivery over
//! MQTT, webhooks and the in-process broadcast) is the `alert-service` crate,
//! beside the database and broker it needs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod book;
pub mod gps;
pub mod outage;
pub mod policy;
pub mod router;
pub mod silence;

pub use book::{
    Actor, Alert, AlertBook, AlertEvent, AlertId, AlertKey, AlertState, BookError, Change,
    Disposition, Level, MAX_NOTE_BYTES, OfficerAction, Raised,
};
pub use gps::{GpsEvent, GpsWatch};
pub use outage::{OutageConfig, OutageEvent, OutageWatch, Silence};
pub use policy::{AlertType, Policy, Severity};
pub use router::{DeviceEvent, FLEET, Input, Router, ViolationKind};
pub use silence::{SilenceEvent, SilenceWheel};
