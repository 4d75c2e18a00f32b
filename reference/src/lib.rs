//! `reference`: the reference data (zones, subjects, rules, devices,
//! assignments, victims) from PostgreSQL into the geofence engine and the
//! device registry, at startup and live.
//!
//! # Layout
//! - `registry`: [`Core`] (the engine and the device [`Registry`]) and
//!   [`SharedCore`], the one lock around it.
//! - `rows`: the stored rows and what the engine takes from them (zone and
//!   rule specs, GeoJSON geometry, schedules).
//! - `sync`: [`sync`], reading what a [`Scope`] names and applying it as a
//!   diff.
//! - `listen`: the running loop: `NOTIFY emtrack_reference`, assignment and
//!   retirement times, closed episodes to ingest, the watched fleet to the
//!   alert service.
//! - `check`: a zone or schedule checked before it is written (the officer
//!   API's orders), with the engine's own rules.
//! - `world`: `import-world`, a `device-sim world` export into the tables.
//! - `metrics`: reloads and skipped rows.
//!
//! **API Boundary:** the engine is reached only through [`SharedCore`];
//! this crate locks it to apply changes, ingest to judge.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod listen;
mod metrics;
mod registry;
mod rows;
mod sync;
pub mod world;

pub use metrics::Metrics;
pub use registry::{Core, DeviceKind, DeviceRef, Loaded, Registry, SharedCore};
pub use sync::{RowError, Scope, Synced, sync};
