//! `ingest`: bracelet messages from MQTT to committed evidence, judged, then
//! acknowledged.
//!
//! # Layout (in the order a batch goes through it)
//! - `consumer`: the poll task. It owns the MQTT event loop, shards messages
//!   to workers by device, and acks what they committed.
//! - `worker`: one shard of devices; closes batches (size or linger) and
//!   takes each through the stages below.
//! - `check`: decode ([`protocol::decode`]) and check the device, its
//!   format and the clock; refusals are kept raw with their reason; an
//!   accepted message carries its chain-of-custody record (SHA-256, topic,
//!   arrival).
//! - `device_state`: what a worker remembers of each device (newest fix,
//!   judged timeline, last good position), read back from `device_state`
//!   once per process.
//! - `clock`: each fix's judged time, so that a device clock ahead of its
//!   arrival or jumping back cannot blind judging.
//! - `rows`: drop fixes already stored (the same record), keep conflicting
//!   versions aside, judge clocks, flag implausible jumps, build the rows,
//!   the reports and the findings for the alert service.
//! - `judge`: the engine's verdict on a message's fixes; the one function
//!   live processing and the restart replay share.
//! - `writer`: everything a batch produced in one transaction; transient
//!   errors retried with acks held; refused batches quarantined. `custody`:
//!   its evidence rows (messages, conflicts, findings).
//! - then the worker publishes what was stored on the [`bus`] and hands the
//!   batch back for acking.
//! - `rebuild`: the engine's state after a restart, replayed from stored
//!   fixes through `judge`.
//! - `closures`: episodes closed by reference changes, stored and published
//!   the same way.
//! - `replay`: `emtrack rejected replay`, quarantined messages published
//!   again.
//! - `pipeline`: [`Ingest`], the handle that starts, runs and drains it all.
//! - `config`, `metrics`.
//!
//! **Architecture Invariant:** nothing here knows about alerts beyond the
//! bus it publishes on: this crate does not depend on the alert service.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod clock;
mod closures;
mod config;
mod consumer;
mod custody;
mod device_state;
mod judge;
mod metrics;
mod pipeline;
pub mod rebuild;
pub mod replay;
mod rows;
mod worker;
mod writer;

pub use config::{IngestConfig, MAX_PACKET_BYTES};
pub use metrics::Metrics;
pub use pipeline::{Ingest, IngestError, SessionLoss};
