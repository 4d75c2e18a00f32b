//! `emtrack`, the ingest service: MQTT → validate → evaluate → durable store →
//! ack.
//!
//! See `ARCHITECTURE.md` for the invariants (ack after commit, idempotent
//! storage, one device's messages in order).
//!
//! # Layout
//! - `config`: defaults ← TOML file ← `EMTRACK_*` environment ← flags.
//! - `db`: connect (creating the database if missing), migrate, and keep the
//!   daily partitions of `fixes` and `device_events` (or the TimescaleDB
//!   retention policy).
//! - `world`: `import-world`, upserting a `device-sim world` export.
//! - `reference`: zones, subjects, rules and devices into the engine, at
//!   startup and on `NOTIFY`.
//! - `rebuild`: per-device engine state after a restart, replayed from fixes.
//! - `pipeline`: the MQTT consumer, workers, batching, storage and acks.
//! - `alerting`: the alert service (the `alerts` core on what the pipeline
//!   committed, persisted with its outbox, restart-safe).
//! - `delivery`: MQTT, webhook and sweeper senders of the outbox.
//! - `metrics`, `http`: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`.
//! - `service`: `emtrack run`, wiring and graceful shutdown.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alerting;
pub mod config;
pub mod db;
pub mod delivery;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod rebuild;
pub mod reference;
pub mod service;
pub mod world;

pub use db::MIGRATOR;
