//! `emtrack`, the ingest service: MQTT → validate → evaluate → durable store →
//! ack.
//!
//! Built so far (issue 4 is in progress): configuration, the database schema and
//! its migrations, partition maintenance, and importing a `device-sim` world.
//! The MQTT consumer, the store path and the HTTP endpoints follow.
//!
//! # Layout
//! - `config`: defaults ← TOML file ← `EMTRACK_*` environment ← flags.
//! - `db`: connect (creating the database if missing), migrate, and keep the
//!   daily partitions of `fixes` and `device_events` (or the TimescaleDB
//!   retention policy).
//! - `world`: `import-world`, upserting a `device-sim world` export.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod db;
pub mod world;

pub use db::MIGRATOR;
