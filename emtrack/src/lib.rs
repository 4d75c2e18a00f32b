//! `emtrack`: the service's glue. It reads the configuration, starts each
//! concern's crate in order, wires them together with typed channels, and
//! stops them on one signal. It holds no logic of its own; `main.rs` is the
//! command line over it.
//!
//! # Layout
//! - `config`: defaults ← TOML file ← `EMTRACK_*` environment (every key;
//!   figment) ← flags, and
//!   each service's part of it.
//! - `service`: [`service::start`] wires `reference` → `ingest` → `bus` →
//!   `alert-service`, and `api` over their handles; [`service::run`] runs
//!   until a signal.
//! - `shutdown`: the one stop signal and the one failure path.
//! - `standby`: a second `run` on the same database waits as the standby
//!   until it can take the service lease (`store::lease`).
//! - `metrics`: build info, `process_*`, the pool, the engine's size and the
//!   node's role, read at scrape time.
//!
//! The crates it wires, upstream first: `store` (the database), `reference`
//! (reference data into the engine), `ingest` (messages to evidence),
//! `bus` (what ingest tells the alert service), `alert-service` (alerts and
//! their delivery), `api` (HTTP). See ARCHITECTURE.md.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod broker;
pub mod config;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod standby;
