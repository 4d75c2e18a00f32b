//! The middle of a batch: from checked messages to the rows it writes.
//! Fixes already stored are dropped (a fix newer than its device's newest
//! stored fix cannot be; older ones are looked up in one query), implausible
//! jumps are flagged `suspect`, events are marked `late` when older than one
//! already seen, and each bracelet message makes one [`Report`] for the
//! alert service.

use crate::check::{Checked, Refusal};
use crate::device_state::DevState;
use bus::{ObservedEvent, Report, StoredTransition};
use geofence::Position;
use protocol::Body;
use reference::DeviceKind;
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Instant;
use store::Millis;

/// A worker's devices, by protocol id.
pub(crate) type States = FxHashMap<Arc<str>, DevState>;

/// `fixes.seq` is message index * this + fix index: more than
/// `protocol::MAX_BATCH` fixes per message, so a replay can find message
/// boundaries again.
pub(crate) const SEQ_PER_MESSAGE: i32 = 2048;

/// A fix row to store.
pub(crate) struct FixRow {
    /// Index into [`Rows::names`].
    pub(crate) dev: u32,
    /// Arrival order within the commit: message index * 2048 + fix index.
    pub(crate) seq: i32,
    pub(crate) time_ms: i64,
    pub(crate) fix: protocol::Fix,
    pub(crate) suspect: bool,
}

/// A device event row to store.
pub(crate) struct EventRow {
    /// Index into [`Rows::names`].
    pub(crate) dev: u32,
    pub(crate) event: protocol::Event,
    pub(crate) late: bool,
}

/// The fixes of one message, to judge together.
pub(crate) struct MessageFixes {
    /// Index into the checked messages.
    pub(crate) message: usize,
    /// Its rows: `Rows::fixes[first..end]`.
    pub(crate) first: usize,
    pub(crate) end: usize,
}

/// Everything one batch writes, and what it tells the alert service.
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) fixes: Vec<FixRow>,
    /// The batch's distinct devices; rows refer to them by index.
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) events: Vec<EventRow>,
    pub(crate) refused: Vec<Refusal>,
    pub(crate) transitions: Vec<StoredTransition>,
    pub(crate) states: Vec<(u32, DevState)>,
    /// Fix times judged live (for the lag metric).
    pub(crate) live_fix_ms: Vec<i64>,
    pub(crate) alert_events: Vec<ObservedEvent>,
    pub(crate) reports: Vec<Report>,
    pub(crate) messages: Vec<MessageFixes>,
    pub(crate) heartbeats: u64,
    /// Fixes dropped as already stored or repeated within the batch.
    pub(crate) duplicates: u64,
}

/// The (device, fix time) pairs that may already be stored: those not newer
/// than the device's newest stored fix (or an earlier fix of the batch).
pub(crate) fn maybe_stored(checked: &[Checked], states: &States) -> Vec<(String, i64)> {
    let mut maybe = Vec::new();
    let mut heads: FxHashMap<&str, i64> = FxHashMap::default();
    for c in checked {
        if let Body::Fixes(fixes) = &c.body {
            let name = &*c.dev.name;
            let head = heads
                .entry(name)
                .or_insert_with(|| states.get(name).map_or(i64::MIN, |s| s.head));
            for f in fixes {
                let t = f.time.as_millisecond();
                if t > *head {
                    *head = t;
                } else {
                    maybe.push((name.to_owned(), t));
                }
            }
        }
    }
    maybe
}

/// Fix times already stored, by device: looked up by `&str`, so checking a
/// fix allocates nothing.
pub(crate) type StoredFixes = FxHashMap<String, FxHashSet<i64>>;

/// Which of `keys` are stored in `fixes`.
pub(crate) async fn stored_among(
    pool: &PgPool,
    keys: &[(String, i64)],
) -> Result<StoredFixes, sqlx::Error> {
    let devs: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let times: Vec<Millis> = keys.iter().map(|k| Millis(k.1)).collect();
    let rows: Vec<(String, Millis)> = sqlx::query_as(
        "SELECT u.d, u.t FROM UNNEST($1::text[], $2::timestamptz[]) AS u(d, t) \
         WHERE EXISTS (SELECT 1 FROM fixes f WHERE f.device_id = u.d AND f.fix_time = u.t)",
    )
    .bind(&devs)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    let mut stored = StoredFixes::default();
    for (d, t) in rows {
        stored.entry(d).or_default().insert(t.0);
    }
    Ok(stored)
}

/// Builds the rows of `checked`, updating each device's state.
pub(crate) fn build(
    checked: &[Checked],
    states: &mut States,
    stored: &StoredFixes,
    max_speed_kmh: f64,
    refused: Vec<Refusal>,
) -> Rows {
    let mut rows = Rows {
        refused,
        ..Rows::default()
    };
    let mut b = Builder {
        stored,
        max_speed_m_s: max_speed_kmh / 3.6,
        in_batch: FxHashSet::default(),
        index: FxHashMap::default(),
        now: Instant::now(),
    };
    for (ci, c) in checked.iter().enumerate() {
        let dev = b.device_index(&mut rows, &c.dev.name);
        let st = states.entry(c.dev.name.clone()).or_default();
        st.seen = Some(b.now);
        match &c.body {
            Body::Fixes(fixes) => b.fixes(&mut rows, st, ci, dev, c, fixes),
            Body::Events(events) => events_rows(&mut rows, st, dev, c, events),
            Body::Heartbeats(hbs) => {
                rows.heartbeats += hbs.len() as u64;
                if let Some(h) = hbs.iter().max_by_key(|h| h.time) {
                    st.pending = Some(h.pending);
                }
            }
        }
        rows.reports.extend(report(c));
    }
    for (i, d) in rows.names.iter().enumerate() {
        if let Some(s) = states.get(d) {
            rows.states.push((i as u32, *s));
        }
    }
    rows
}

/// The batch-wide bookkeeping of [`build`].
struct Builder<'a> {
    stored: &'a StoredFixes,
    max_speed_m_s: f64,
    /// Fixes accepted in this batch, by (device index, time).
    in_batch: FxHashSet<(u32, i64)>,
    index: FxHashMap<Arc<str>, u32>,
    now: Instant,
}

impl Builder<'_> {
    fn device_index(&mut self, rows: &mut Rows, name: &Arc<str>) -> u32 {
        *self.index.entry(name.clone()).or_insert_with(|| {
            rows.names.push(name.clone());
            (rows.names.len() - 1) as u32
        })
    }

    /// One message's fixes: duplicates dropped, jumps flagged.
    fn fixes(
        &mut self,
        rows: &mut Rows,
        st: &mut DevState,
        ci: usize,
        dev: u32,
        c: &Checked,
        fixes: &[protocol::Fix],
    ) {
        let first = rows.fixes.len();
        for (k, f) in fixes.iter().enumerate() {
            let t = f.time.as_millisecond();
            let already = self
                .stored
                .get(&*c.dev.name)
                .is_some_and(|times| times.contains(&t));
            if already || !self.in_batch.insert((dev, t)) {
                rows.duplicates += 1;
                continue;
            }
            // protocol bounds coordinates, so `pos` is always Some; a fix
            // without one would be stored but never judged.
            let pos = Position::new(f.lon(), f.lat()).ok();
            let jump = match (st.good, pos) {
                (Some((p, gt)), Some(pos)) => {
                    let dt = (t - gt).abs().max(1) as f64 / 1000.0;
                    p.distance_m(pos) / dt > self.max_speed_m_s
                }
                _ => false,
            };
            // An accuracy radius the engine refuses: evidence, not a location.
            let vague = f64::from(f.accuracy_m) > geofence::MAX_ACCURACY_M;
            let suspect = jump || vague || pos.is_none();
            if let (false, Some(pos)) = (suspect, pos) {
                st.good = Some((pos, t));
            }
            st.head = st.head.max(t);
            rows.fixes.push(FixRow {
                dev,
                seq: (ci as i32).saturating_mul(SEQ_PER_MESSAGE) + k as i32,
                time_ms: t,
                fix: *f,
                suspect,
            });
        }
        rows.messages.push(MessageFixes {
            message: ci,
            first,
            end: rows.fixes.len(),
        });
    }
}

/// One message's events; a bracelet's also go to the alert service.
fn events_rows(
    rows: &mut Rows,
    st: &mut DevState,
    dev: u32,
    c: &Checked,
    events: &[protocol::Event],
) {
    for e in events {
        let t = e.time.as_millisecond();
        let late = t < st.event_head;
        st.event_head = st.event_head.max(t);
        rows.events.push(EventRow {
            dev,
            event: *e,
            late,
        });
        if let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) {
            rows.alert_events.push(ObservedEvent {
                subject: subject.0,
                device: c.dev.name.to_string(),
                kind: e.kind,
                at_ms: t,
                late,
            });
        }
    }
}

/// The report of a subject's bracelet message (silence, location failure).
fn report(c: &Checked) -> Option<Report> {
    let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) else {
        return None;
    };
    Some(Report {
        // An id the silence wheel cannot index is not watched either.
        device: u32::try_from(c.dev.engine.0).ok()?,
        name: c.dev.name.clone(),
        subject: subject.0,
        time_ms: c.newest_ms,
        fix: matches!(c.body, Body::Fixes(_)),
        motion: matches!(&c.body, Body::Heartbeats(v) if v.iter().any(|h| h.flags.motion)),
    })
}
