//! `device-sim`: a simulated fleet of ankle bracelets (and victims' phones)
//! that behaves like real tags, knows exactly which violations it committed,
//! and can load emtrack to its limits.
//!
//! # Layout
//! - `space`: local metres around Almaty, and seeded random streams keyed by id.
//! - `world`: the city, schools and playgrounds, subjects with homes, work,
//!   curfews and rules, victims, officers; export as GeoJSON and JSON.
//! - `plan`: each person's day (true path, behaviours, incidents) and the
//!   violation episodes the true path implies.
//! - `stream`: devices as state machines merged into one deterministic message
//!   stream, with the ground truth of every message taken.
//! - `truth`: the ground-truth JSON-lines format.
//! - `publish`: the MQTT publisher (rumqttc), its pacing modes and counters.
//! - `testbed`: fixtures for tests and benchmarks: a private tuned Mosquitto,
//!   and the check of reported transitions against the ground truth.
//!
//! # Determinism
//! Every random choice comes from a stream seeded by `(seed, kind, id, day)`,
//! and every output is written in a fixed order, so one `--seed` gives
//! byte-identical world files, messages and ground truth, for a given
//! `Cargo.lock` (rand's `StdRng` may change between rand versions).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod plan;
pub mod probe;
pub mod publish;
pub mod space;
pub mod stream;
pub mod testbed;
pub mod truth;
pub mod world;
