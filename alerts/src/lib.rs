//! `alerts`: what officers are told, and when.
//!
//! Issue 5 is in progress. Built so far, as a pure core with no I/O (time is
//! an argument, so tests are deterministic):
//! - `policy`: alert types, default severities, per-agency overrides and
//!   escalation delays;
//! - `silence`: a deadline wheel that finds bracelets gone silent, O(1) per
//!   message, without scanning every device per tick;
//! - `book`: the alert lifecycle (open → acknowledged → resolved), dedup per
//!   episode, tamper alerts resolved only with a note, escalation to the
//!   supervisor and then the duty desk, and the append-only event log;
//! - `router`: violation transitions, device events and silences to raises
//!   and resolutions.
//!
//! Delivery (MQTT, webhooks, SSE), persistence and the wiring into `emtrack`
//! follow.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod book;
pub mod policy;
pub mod router;
pub mod silence;

pub use book::{Alert, AlertBook, AlertEvent, AlertId, AlertKey, AlertState, BookError, Raised};
pub use policy::{AlertType, Policy, Severity};
pub use router::{DeviceEvent, Input, Router, ViolationKind};
pub use silence::{SilenceEvent, SilenceWheel};
