//! What a worker remembers of each of its devices between batches, and what
//! it reads back from `device_state` the first time it sees a device in this
//! process.

use crate::clock::Timeline;
use geofence::Position;
use rustc_hash::FxHashMap;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use store::Millis;

/// What a worker remembers of a device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DevState {
    /// Newest stored fix time (ms), `i64::MIN` if none.
    pub(crate) head: i64,
    /// The device's timeline as judged (see [`crate::clock`]).
    pub(crate) timeline: Timeline,
    /// Its last fix's clock was suspect: a finding is recorded when this
    /// turns true, not for every fix of a faulty clock.
    pub(crate) clock_faulty: bool,
    /// Last good fix: reference of the jump check.
    pub(crate) good: Option<(Position, i64)>,
    /// Newest event time seen (ms): an older event is `late`.
    pub(crate) event_head: i64,
    /// Last heard from (monotonic).
    pub(crate) seen: Option<Instant>,
    /// Backlog announced by the last heartbeat.
    pub(crate) pending: Option<u16>,
}

impl Default for DevState {
    /// A device with nothing stored yet.
    fn default() -> Self {
        DevState {
            head: i64::MIN,
            timeline: Timeline::default(),
            clock_faulty: false,
            good: None,
            event_head: i64::MIN,
            seen: None,
            pending: None,
        }
    }
}

/// A `device_state` row.
#[derive(sqlx::FromRow)]
struct StateRow {
    device_id: String,
    head_time: Option<Millis>,
    judged_head: Option<Millis>,
    good_time: Option<Millis>,
    good_lat: Option<f64>,
    good_lon: Option<f64>,
}

/// The stored state of `devices` (those with none are absent).
pub(crate) async fn load(
    pool: &PgPool,
    devices: &[String],
) -> Result<FxHashMap<String, DevState>, sqlx::Error> {
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT device_id, head_time, judged_head, good_time, good_lat, good_lon \
         FROM device_state WHERE device_id = ANY($1)",
    )
    .bind(devices)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let good = match (r.good_time, r.good_lat, r.good_lon) {
                (Some(t), Some(lat), Some(lon)) => Position::new(lon, lat).ok().map(|p| (p, t.0)),
                _ => None,
            };
            let head = r.head_time.map_or(i64::MIN, i64::from);
            let state = DevState {
                head,
                timeline: Timeline::resumed(r.judged_head.map_or(head, i64::from)),
                good,
                ..DevState::default()
            };
            (r.device_id, state)
        })
        .collect())
}

/// Devices of a worker heard from in the last 5 minutes.
pub(crate) fn census(states: &crate::rows::States) -> i64 {
    states
        .values()
        .filter(|s| {
            s.seen
                .is_some_and(|t| t.elapsed() < Duration::from_secs(300))
        })
        .count() as i64
}
