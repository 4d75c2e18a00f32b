//! `store`: emtrack's PostgreSQL edge, shared by every service.
//!
//! # Layout
//! - `connect`: connect (creating the database if it is missing), migrate
//!   ([`MIGRATOR`], the `migrations/` folder, embedded).
//! - `partitions`: daily partitions of `fixes` and `device_events` (or the
//!   TimescaleDB retention policy), and [`Days`], the cache of days whose
//!   partitions exist.
//! - `retry`: which errors are worth retrying ([`transient`]) and the retry
//!   loops with capped exponential backoff ([`retry_transient`],
//!   [`retry_always`]).
//! - `time`: [`Millis`], milliseconds since the epoch stored as
//!   `timestamptz`, the one time conversion between Rust and SQL.
//! - `lease`: which `emtrack run` is the active node ([`Lease`]) and the
//!   fence each write transaction checks ([`Fence`], [`fenced`]).
//! - `label`: text columns holding a closed set of labels, decoded loudly
//!   ([`label`]: an unknown value is an error naming it, never a default).
//!
//! Each service keeps the SQL of its own tables beside its code (ingest the
//! evidence, the reference loader the reference tables, the alert service
//! the alerts and their outbox); this crate holds what they share.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod connect;
mod label;
pub mod lease;
mod partitions;
pub mod retention;
mod retry;
mod time;

pub use connect::{DbError, MIGRATOR, connect, connect_existing, migrate};
pub use label::{UnknownLabel, label};
pub use lease::{Fence, Lease, LeaseLost, fenced};
pub use partitions::{Days, Maintenance, keep_tables, maintain_partitions, no_partition};
pub use retention::{Retention, expire};
pub use retry::{Backoff, retry_always, retry_transient, transient};
pub use time::{Millis, Stamp, now_ms};
