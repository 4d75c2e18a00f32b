//! Restart: rebuild the engine's per-subject state from the database.
//!
//! The engine's state (streaks, open episodes, the newest fix, late runs) is
//! a function of the fixes it was fed, in order. So a restart replays stored
//! fixes in their original arrival order (`received_at`, then `seq`, which
//! also marks message boundaries), through the same [`judge::message`] as
//! live processing, per device from
//! - the start of the subject's oldest open live episode (its first fix
//!   re-opens it with the same key), or
//! - `lookback` before the device's newest fix (longer than any rule's
//!   `enter_span`, so a streak in progress is not cut),
//! - for a victim's phone, the oldest open episode of the subjects whose
//!   proximity rules name it,
//!
//! whichever is earlier. Transitions the replay produces were committed with
//! the fixes that caused them (same transaction), so they are discarded, not
//! stored or sent again: a restart neither drops nor duplicates a transition.

use crate::judge;
use crate::rows::SEQ_PER_MESSAGE;
use geofence::Position;
use reference::SharedCore;
use rustc_hash::FxHashMap;
use sqlx::PgPool;
use std::time::Duration;
use store::{Millis, Stamp};

/// What the replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Devices with stored fixes.
    pub devices: usize,
    /// Subjects with an open live episode.
    pub open_subjects: usize,
    /// Fixes fed to the engine.
    pub fixes: u64,
}

/// A stored fix, as replayed: at the time it was judged at
/// (`judged_at` when its clock was suspect, see `clock`).
#[derive(sqlx::FromRow)]
struct ReplayRow {
    device_id: String,
    fix_time: Millis,
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    suspect: bool,
    received_at: Stamp,
    seq: i32,
}

impl ReplayRow {
    /// Whether `other` came in the same original message: same commit,
    /// same message index, same device.
    fn same_message(&self, other: &ReplayRow) -> bool {
        other.received_at == self.received_at
            && other.seq / SEQ_PER_MESSAGE == self.seq / SEQ_PER_MESSAGE
            && other.device_id == self.device_id
    }

    fn fix(&self) -> Option<geofence::Fix> {
        Some(geofence::Fix {
            time: geofence::jiff::Timestamp::from_millisecond(self.fix_time.0).ok()?,
            position: Position::new(self.lon, self.lat).ok()?,
            accuracy_m: f64::from(self.accuracy_m),
            suspect: self.suspect,
        })
    }
}

/// Replays recent fixes into `core` (see the module docs).
pub async fn rebuild(
    pool: &PgPool,
    core: &SharedCore,
    lookback: Duration,
) -> Result<Rebuilt, sqlx::Error> {
    let open = open_episodes(pool).await?;
    let (devices, from) = replay_starts(pool, core, &open, lookback).await?;
    let mut done = Rebuilt {
        devices: devices.len(),
        open_subjects: open.len(),
        fixes: 0,
    };
    if devices.is_empty() {
        return Ok(done);
    }
    let rows: Vec<ReplayRow> = sqlx::query_as(
        "SELECT f.device_id, coalesce(f.judged_at, f.fix_time) AS fix_time, f.lat, f.lon, f.accuracy_m, f.suspect, f.received_at, f.seq \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(d, f0) \
         JOIN fixes f ON f.device_id = u.d AND f.fix_time >= u.f0 \
         ORDER BY f.received_at, f.seq",
    )
    .bind(&devices)
    .bind(&from)
    .fetch_all(pool)
    .await?;
    let mut core = core.lock();
    let mut out = Vec::new();
    let mut fixes = Vec::new();
    for message in rows.chunk_by(ReplayRow::same_message) {
        let Some(dev) = core.registry.get(&message[0].device_id).cloned() else {
            continue;
        };
        fixes.clear();
        fixes.extend(message.iter().filter_map(ReplayRow::fix));
        done.fixes += fixes.len() as u64;
        judge::message(&mut core, &dev, &fixes, &mut out, |_| {});
        out.clear();
    }
    Ok(done)
}

/// The start of each subject's oldest open live episode (ms).
async fn open_episodes(pool: &PgPool) -> Result<FxHashMap<u64, i64>, sqlx::Error> {
    let open: Vec<(i64, Millis)> = sqlx::query_as(
        "SELECT subject_id, min(at) FROM ( \
             SELECT DISTINCT ON (subject_id, rule_id, zone_id) subject_id, kind, at \
             FROM rule_transitions WHERE NOT historical \
             ORDER BY subject_id, rule_id, zone_id, at DESC, confirmed_at DESC \
         ) last \
         WHERE kind IN ('exclusion_entered', 'inclusion_left', 'curfew_violation_started', 'proximity_entered') \
         GROUP BY subject_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(open.into_iter().map(|(s, t)| (s as u64, t.0)).collect())
}

/// The devices to replay and the fix time each replay starts from.
async fn replay_starts(
    pool: &PgPool,
    core: &SharedCore,
    open: &FxHashMap<u64, i64>,
    lookback: Duration,
) -> Result<(Vec<String>, Vec<Millis>), sqlx::Error> {
    let heads: Vec<(String, Millis)> =
        sqlx::query_as("SELECT device_id, head_time FROM device_state WHERE head_time IS NOT NULL")
            .fetch_all(pool)
            .await?;
    // A phone's fixes matter to the proximity rules that name it: replay them
    // from the oldest open episode of those subjects too.
    let watchers: Vec<(String, i64)> = sqlx::query_as(
        "SELECT other_device, subject_id FROM rules WHERE kind = 'proximity' AND other_device IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut phone_open: FxHashMap<String, i64> = FxHashMap::default();
    for (phone, subject) in watchers {
        if let Some(t) = open.get(&(subject as u64)) {
            let e = phone_open.entry(phone).or_insert(*t);
            *e = (*e).min(*t);
        }
    }
    let lookback_ms = lookback.as_millis() as i64;
    let core = core.lock();
    Ok(heads
        .into_iter()
        .filter_map(|(d, head)| {
            let dev = core.registry.get(&d)?;
            let mut from = head.0.saturating_sub(lookback_ms);
            if let Some(t) = dev.subject.and_then(|s| open.get(&s.0)) {
                from = from.min(*t);
            }
            if let Some(t) = phone_open.get(&d) {
                from = from.min(*t);
            }
            Some((d, Millis(from)))
        })
        .unzip())
}
