//! Restart: rebuild the engine's per-subject state from the database.
//!
//! The engine's state (streaks, open episodes, the newest fix, late runs) is
//! a function of the fixes it was fed, in order. So a restart replays stored
//! fixes in their original arrival order (`received_at`, then `seq`, which
//! also marks message boundaries for `close_late_run`), per device from
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

use crate::pipeline::SEQ_PER_MESSAGE;
use crate::reference::{Core, DeviceKind};
use geofence::{Outcome, Position, SubjectId};
use jiff::Timestamp;
use rustc_hash::FxHashMap;
use sqlx::PgPool;
use std::sync::Mutex;
use std::time::Duration;

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

type ReplayRow = (String, i64, f64, f64, f32, bool, i64, i32);

/// Replays recent fixes into `core` (see the module docs).
pub async fn rebuild(
    pool: &PgPool,
    core: &Mutex<Core>,
    lookback: Duration,
) -> Result<Rebuilt, sqlx::Error> {
    let open: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT subject_id, min(at_ms)::int8 FROM ( \
             SELECT DISTINCT ON (subject_id, rule_id, zone_id) subject_id, kind, \
                    (extract(epoch FROM at) * 1000)::int8 AS at_ms \
             FROM rule_transitions WHERE NOT historical \
             ORDER BY subject_id, rule_id, zone_id, at DESC, confirmed_at DESC \
         ) last \
         WHERE kind IN ('exclusion_entered', 'inclusion_left', 'curfew_violation_started', 'proximity_entered') \
         GROUP BY subject_id",
    )
    .fetch_all(pool)
    .await?;
    let open: FxHashMap<u64, i64> = open.into_iter().map(|(s, t)| (s as u64, t)).collect();
    let heads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT device_id, (extract(epoch FROM head_time) * 1000)::int8 FROM device_state \
         WHERE head_time IS NOT NULL",
    )
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
    let (devices, from): (Vec<String>, Vec<i64>) = {
        let core = core.lock().unwrap_or_else(|e| e.into_inner());
        heads
            .into_iter()
            .filter_map(|(d, head)| {
                let dev = core.registry.get(&d)?;
                let mut from = head.saturating_sub(lookback_ms);
                if let Some(s) = dev.subject
                    && let Some(t) = open.get(&s.0)
                {
                    from = from.min(*t);
                }
                if let Some(t) = phone_open.get(&d) {
                    from = from.min(*t);
                }
                Some((d, from))
            })
            .unzip()
    };
    let mut done = Rebuilt {
        devices: devices.len(),
        open_subjects: open.len(),
        fixes: 0,
    };
    if devices.is_empty() {
        return Ok(done);
    }
    let rows: Vec<ReplayRow> = sqlx::query_as(
        "SELECT f.device_id, (extract(epoch FROM f.fix_time) * 1000)::int8, f.lat, f.lon, f.accuracy_m, \
                f.suspect, (extract(epoch FROM f.received_at) * 1000000)::int8, f.seq \
         FROM UNNEST($1::text[], $2::int8[]) AS u(d, f0) \
         JOIN fixes f ON f.device_id = u.d AND f.fix_time >= 'epoch'::timestamptz + u.f0 * interval '1 millisecond' \
         ORDER BY f.received_at, f.seq",
    )
    .bind(&devices)
    .bind(&from)
    .fetch_all(pool)
    .await?;

    let mut guard = core.lock().unwrap_or_else(|e| e.into_inner());
    let core = &mut *guard;
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        // One original message: same commit, same message index, same device.
        let (dev, _, _, _, _, _, recv, seq) = &rows[i];
        let msg = seq / SEQ_PER_MESSAGE;
        let mut j = i;
        while j < rows.len()
            && rows[j].6 == *recv
            && rows[j].7 / SEQ_PER_MESSAGE == msg
            && rows[j].0 == *dev
        {
            j += 1;
        }
        let Some(d) = core.registry.get(dev).cloned() else {
            i = j;
            continue;
        };
        let handle = match (d.kind, d.subject) {
            (DeviceKind::Bracelet, Some(SubjectId(s))) => core.engine.subject_handle(SubjectId(s)),
            _ => None,
        };
        let mut any_late = false;
        for (_, t, lat, lon, acc, suspect, _, _) in &rows[i..j] {
            let (Ok(position), Ok(time)) =
                (Position::new(*lon, *lat), Timestamp::from_millisecond(*t))
            else {
                continue;
            };
            let fix = geofence::Fix {
                time,
                position,
                accuracy_m: f64::from(*acc),
                suspect: *suspect,
            };
            done.fixes += 1;
            let outcome = match (handle, d.kind) {
                (Some(h), _) => core.engine.evaluate(h, &fix, &mut out),
                (None, DeviceKind::VictimPhone) => {
                    core.engine.observe_device(d.engine, &fix, &mut out)
                }
                (None, DeviceKind::Bracelet) => Ok(Outcome::Skipped),
            };
            any_late |= matches!(outcome, Ok(Outcome::Late));
        }
        if any_late && let Some(h) = handle {
            let _ = core.engine.close_late_run(h, &mut out);
        }
        out.clear();
        i = j;
    }
    Ok(done)
}
