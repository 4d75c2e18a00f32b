//! Ground truth: what the simulation did, in a JSON-lines file that end-to-end
//! tests compare the backend against.
//!
//! One JSON object per line, with a `type` field:
//! - `episode`: a violation the subject committed, long enough to count under
//!   the engine's default hysteresis. `start`/`end` are the instants the true
//!   path crossed the boundary, in the device's own clock (fix time). A
//!   backend's transition time must lie within `[start + window_s[0],
//!   start + window_s[1]]` (likewise for `end`), because fixes are discrete and
//!   a fix counts only when its whole accuracy disc is past the boundary.
//!   `historical` is true when the episode happened inside a store-and-forward
//!   gap and so reaches the backend only in a late batch. `end` is null when the
//!   run stopped before a backend could confirm the end; `cut_short` marks an
//!   episode the run stopped in the middle of, which a backend may or may not
//!   report.
//! - `event`: every device event sent (tamper, battery, charger, GPS).
//! - `silence`: a time the device sent nothing at all (`powered_off`,
//!   `battery_dead`) or only later (`coverage_gap`, store-and-forward).
//! - `gps_loss`: no fixes while heartbeats report motion.
//! - `malformed`: a hostile or broken message and the rejection reason a
//!   backend must give. A `suspect_jump` fix is valid and counted, but lies about
//!   2,200 km from the device's true track: a backend must store it flagged as
//!   suspect and judge the fixes after it against the last *unflagged* fix.
//! - `device`: per device, the exact number of valid fixes sent.
//! - `summary`: totals.
//!
//! Lines are sorted (by device, then time), so the same seed gives the same
//! file byte for byte.

use jiff::Timestamp;
use serde::Serialize;
use std::io::Write;

/// What kind of rule an episode broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    /// Out of an inclusion zone (the city).
    Inclusion,
    /// Into a personal exclusion zone.
    Exclusion,
    /// Away from home during curfew.
    Curfew,
    /// Into a category's zone.
    Category,
    /// Within the protected distance of a victim's phone.
    Proximity,
}

/// One line of the ground truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A violation episode.
    Episode {
        /// Subject id.
        subject: u64,
        /// Bracelet id.
        device: String,
        /// Rule id.
        rule: u64,
        /// Zone id (`None` for proximity).
        zone: Option<u64>,
        /// The victim's device (proximity only).
        other_device: Option<String>,
        /// Rule kind.
        kind: EpisodeKind,
        /// Device time the true path crossed into violation.
        #[serde(serialize_with = "ts")]
        start: Timestamp,
        /// Device time it crossed back (`None` if the run stopped first).
        #[serde(serialize_with = "opt_ts")]
        end: Option<Timestamp>,
        /// Seconds around `start`/`end` within which a backend reports it.
        window_s: [i64; 2],
        /// Reached the backend only in a late store-and-forward batch.
        historical: bool,
        /// The run stopped less than `plan::MIN_EPISODE_S` after the start:
        /// whether a backend reports this episode depends on how much of it
        /// arrived, so a backend may or may not list it.
        cut_short: bool,
        /// The behaviour that caused it.
        behaviour: &'static str,
    },
    /// A device event the device sent.
    Event {
        /// Device id.
        device: String,
        /// Event name (`protocol::EventKind::as_str`).
        event: &'static str,
        /// Device time.
        #[serde(serialize_with = "ts")]
        t: Timestamp,
        /// Sent late, in a store-and-forward batch.
        late: bool,
    },
    /// A period without communication (wall-clock simulation time).
    Silence {
        /// Device id.
        device: String,
        /// First instant of silence.
        #[serde(serialize_with = "ts")]
        from: Timestamp,
        /// When the device spoke again (`None` if never within the run).
        #[serde(serialize_with = "opt_ts")]
        to: Option<Timestamp>,
        /// `powered_off`, `battery_dead` or `coverage_gap`.
        cause: &'static str,
    },
    /// No GNSS fixes while the device reports motion.
    GpsLoss {
        /// Device id.
        device: String,
        /// Start (device time).
        #[serde(serialize_with = "ts")]
        from: Timestamp,
        /// End (device time).
        #[serde(serialize_with = "ts")]
        to: Timestamp,
    },
    /// A malformed or hostile message.
    Malformed {
        /// Device whose topic it was sent on.
        device: String,
        /// Topic.
        topic: String,
        /// Simulation time it was sent.
        #[serde(serialize_with = "ts")]
        at: Timestamp,
        /// The reason a backend must give (`protocol` reason labels, or
        /// `suspect_jump` for a valid fix that must be flagged).
        reason: &'static str,
        /// For `suspect_jump`: the fix time.
        #[serde(serialize_with = "opt_ts")]
        fix_time: Option<Timestamp>,
        /// For `suspect_jump`: where it claims to be.
        position: Option<[f64; 2]>,
    },
    /// Valid fixes sent by one device.
    Device {
        /// Device id.
        device: String,
        /// Exact count of valid fixes (including `suspect_jump` ones).
        valid_fixes: u64,
        /// Device events sent.
        events: u64,
        /// Heartbeats sent.
        heartbeats: u64,
    },
    /// Totals.
    Summary {
        /// Seed.
        seed: u64,
        /// Simulated start.
        #[serde(serialize_with = "ts")]
        start: Timestamp,
        /// Simulated time the run reached.
        #[serde(serialize_with = "ts")]
        end: Timestamp,
        /// Messages sent.
        messages: u64,
        /// Valid fixes sent.
        valid_fixes: u64,
        /// Episodes listed.
        episodes: u64,
        /// Malformed messages sent.
        malformed: u64,
        /// Behaviours drawn but dropped because no safe place was found.
        behaviours_dropped: u64,
    },
}

impl Record {
    /// Sort key: device, then time.
    pub(crate) fn key(&self) -> (String, i64, u8) {
        let ms = |t: &Timestamp| t.as_millisecond();
        match self {
            Record::Episode { device, start, .. } => (device.clone(), ms(start), 0),
            Record::Event { device, t, .. } => (device.clone(), ms(t), 1),
            Record::Silence { device, from, .. } => (device.clone(), ms(from), 2),
            Record::GpsLoss { device, from, .. } => (device.clone(), ms(from), 3),
            Record::Malformed { device, at, .. } => (device.clone(), ms(at), 4),
            Record::Device { device, .. } => (device.clone(), i64::MAX, 5),
            Record::Summary { .. } => ("~".into(), i64::MAX, 6),
        }
    }
}

fn ts<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{t:.3}"))
}

fn opt_ts<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts(t, s),
        None => s.serialize_none(),
    }
}

/// Writes records as JSON lines, sorted.
pub fn write_jsonl(mut records: Vec<Record>, out: &mut impl Write) -> std::io::Result<()> {
    records.sort_by(|a, b| {
        a.key()
            .cmp(&b.key())
            .then_with(|| format!("{a:?}").cmp(&format!("{b:?}")))
    });
    for r in &records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
