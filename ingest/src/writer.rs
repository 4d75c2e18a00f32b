//! The end of a batch: everything it produced, in one transaction.
//!
//! Messages (chain of custody), fixes, conflicting fix versions, events,
//! device state, rule transitions, findings and refused messages are written
//! with `UNNEST … ON CONFLICT`, so a redelivered message inserts nothing
//! (`messages` answers a stored copy's id with a no-op `DO UPDATE`; a trusted
//! fix replacing a clock-suspect one is an `UPDATE`, see `custody`). Transient errors are retried with the batch's acks held;
//! a batch the database refuses outright is kept raw in `rejected_messages`
//! as `storage_failed` ([`Writer::quarantine`]).

use crate::check::Checked;
use crate::custody;
use crate::metrics::Metrics;
use crate::rows::Rows;
use bus::StoredTransition;
use rumqttc::Publish;
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use store::{Backoff, Days, Fence, Millis, retry_always, retry_transient};

/// Rows actually inserted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Written {
    pub(crate) fixes: u64,
    pub(crate) events: u64,
    /// Conflicting fix versions kept (new rows of `fix_conflicts`).
    pub(crate) conflicts: u64,
    /// Reasons of the refused messages stored (a copy already stored, sent
    /// again as DUP or retained, is neither stored nor counted).
    pub(crate) refused: Vec<&'static str>,
}

/// Longest topic stored in `rejected_messages` (bytes); longer ones are cut.
pub(crate) const MAX_TOPIC_STORED: usize = 512;
/// Longest refusal detail stored (bytes).
const MAX_DETAIL_STORED: usize = 1024;

/// The fence refused a write: another node is the active one.
#[derive(Debug)]
pub(crate) struct Fenced;

/// Writes batches (one per worker, sharing the partition cache).
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: PgPool,
    pub(crate) metrics: Metrics,
    /// Days whose partitions exist.
    days: Days,
    /// Checked first in each transaction: only the active node writes.
    pub(crate) fence: Fence,
}

impl Writer {
    pub(crate) fn new(pool: PgPool, metrics: Metrics, fence: Fence) -> Writer {
        Writer {
            pool,
            metrics,
            days: Days::default(),
            fence,
        }
    }

    /// Runs `op` while its errors are transient, with the batch's acks held
    /// (the broker keeps the messages); a permanent error is returned.
    pub(crate) async fn held<T, F, Fut>(&self, what: &str, op: F) -> Result<T, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        retry_transient(Backoff::HELD, op, |e, wait| {
            self.metrics.commit_retries.inc();
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot {what}; acks held, retrying");
        })
        .await
    }

    /// Writes `rows` in one transaction, retrying transient errors.
    pub(crate) async fn commit(
        &self,
        rows: &Rows,
        checked: &[Checked],
    ) -> Result<Written, sqlx::Error> {
        self.held("commit a batch", || self.write(rows, checked))
            .await
    }

    async fn write(&self, rows: &Rows, checked: &[Checked]) -> Result<Written, sqlx::Error> {
        let r = self.write_once(rows, checked).await;
        if let Err(e) = &r {
            self.days.forget_if_missing(e);
        }
        r
    }

    async fn write_once(&self, rows: &Rows, checked: &[Checked]) -> Result<Written, sqlx::Error> {
        let times = rows.fixes.iter().map(|f| f.time_ms);
        let times = times.chain(rows.events.iter().map(|e| e.event.time.as_millisecond()));
        self.days.ensure(&self.pool, times).await?;
        let mut tx = self.fence.begin(&self.pool).await?;
        let ids = custody::insert_messages(&mut tx, rows, checked).await?;
        let fixes = insert_fixes(&mut tx, rows, &ids).await?;
        let conflicts = custody::keep_conflicts(&mut tx, rows, &ids).await?;
        custody::replace_fixes(&mut tx, rows, &ids).await?;
        let written = Written {
            fixes,
            conflicts,
            events: insert_events(&mut tx, rows, &ids).await?,
            refused: insert_refused(&mut tx, &rows.refused).await?,
        };
        upsert_states(&mut tx, rows).await?;
        insert_transitions(&mut tx, &rows.transitions).await?;
        custody::insert_findings(&mut tx, rows, &ids).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// The database refuses a batch outright (a bug, or data the schema does
    /// not allow). Its messages are kept, raw, in `rejected_messages` with
    /// reason `storage_failed` and the error, so they can be published again
    /// once the cause is fixed; then they are acked like any refusal. If even
    /// that is refused, the batch stays held (never acked, never dropped);
    /// `Fenced` if this node lost the lease meanwhile (do not ack).
    pub(crate) async fn quarantine(
        &self,
        batch: &[Publish],
        error: &sqlx::Error,
    ) -> Result<(), Fenced> {
        tracing::error!(%error, messages = batch.len(), "the database refused a batch; its messages are kept in rejected_messages (storage_failed)");
        let rows = Rows {
            refused: batch
                .iter()
                .map(|p| crate::check::Refusal::of(p, "storage_failed", error.to_string()))
                .collect(),
            ..Rows::default()
        };
        let written = retry_always(
            Backoff::PATIENT,
            || async {
                match self.held("quarantine a refused batch", || self.write(&rows, &[])).await {
                    Err(e) if store::fenced(&e) => Ok(Err(Fenced)),
                    r => r.map(Ok),
                }
            },
            |e: &sqlx::Error, wait| {
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot quarantine the batch either; it stays held, unacked");
            },
        )
        .await;
        written?;
        self.metrics
            .rejected
            .with_label_values(&["storage_failed"])
            .inc_by(batch.len() as u64);
        Ok(())
    }
}

async fn insert_fixes(tx: &mut PgConnection, rows: &Rows, ids: &[i64]) -> Result<u64, sqlx::Error> {
    // A replacing fix's instant is stored: `custody::replace_fixes` writes it.
    let f: Vec<&crate::rows::FixRow> = rows.fixes.iter().filter(|r| !r.replaces).collect();
    if f.is_empty() {
        return Ok(0);
    }
    let q = sqlx::query(
        "INSERT INTO fixes (device_id, fix_time, lat, lon, accuracy_m, speed_m_s, heading_deg, battery_pct, flags, suspect, seq, \
                            message_id, judged_at) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::float4[], $6::float4[], \
                              $7::float4[], $8::int2[], $9::int2[], $10::bool[], $11::int4[], $12::int8[], $13::timestamptz[]) \
         ON CONFLICT (device_id, fix_time) DO NOTHING",
    )
    .bind(f.iter().map(|r| &*rows.names[r.dev as usize]).collect::<Vec<&str>>())
    .bind(f.iter().map(|r| Millis(r.time_ms)).collect::<Vec<_>>());
    Ok(crate::rows::FixColumns::of(f.iter().map(|r| &r.fix))
        .bind(q)
        .bind(f.iter().map(|r| r.suspect).collect::<Vec<_>>())
        .bind(f.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(f.iter().map(|r| ids[r.msg as usize]).collect::<Vec<_>>())
        .bind(
            f.iter()
                .map(|r| custody::judged_at(r.time_ms, r.judged_ms))
                .collect::<Vec<_>>(),
        )
        .execute(tx)
        .await?
        .rows_affected())
}

async fn insert_events(
    tx: &mut PgConnection,
    rows: &Rows,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    if rows.events.is_empty() {
        return Ok(0);
    }
    let e = &rows.events;
    Ok(sqlx::query(
        "INSERT INTO device_events (device_id, event_time, kind, battery_pct, flags, late, message_id) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::int2[], $5::int2[], $6::bool[], $7::int8[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(e.iter().map(|r| &*rows.names[r.dev as usize]).collect::<Vec<&str>>())
    .bind(e.iter().map(|r| Millis(r.event.time.as_millisecond())).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event.kind.as_str()).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event.battery_pct.map(i16::from)).collect::<Vec<_>>())
    .bind(e.iter().map(|r| i16::from(r.event.flags.to_byte())).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.late).collect::<Vec<_>>())
    .bind(e.iter().map(|r| ids[r.msg as usize]).collect::<Vec<_>>())
    .execute(tx)
    .await?
    .rows_affected())
}

async fn upsert_states(tx: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    if rows.states.is_empty() {
        return Ok(());
    }
    let s = &rows.states;
    sqlx::query(
        "INSERT INTO device_state (device_id, head_time, good_time, good_lat, good_lon, last_seen_at, pending, judged_head) \
         SELECT d, h, g, la, lo, now(), p, j \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::float8[], $5::float8[], $6::int4[], $7::timestamptz[]) \
              AS u(d, h, g, la, lo, p, j) \
         ON CONFLICT (device_id) DO UPDATE SET head_time = EXCLUDED.head_time, judged_head = EXCLUDED.judged_head, \
             good_time = EXCLUDED.good_time, \
             good_lat = EXCLUDED.good_lat, good_lon = EXCLUDED.good_lon, last_seen_at = EXCLUDED.last_seen_at, \
             pending = COALESCE(EXCLUDED.pending, device_state.pending)",
    )
    .bind(s.iter().map(|(d, _)| &*rows.names[*d as usize]).collect::<Vec<&str>>())
    .bind(
        s.iter()
            .map(|(_, st)| (st.head != i64::MIN).then_some(Millis(st.head)))
            .collect::<Vec<_>>(),
    )
    .bind(s.iter().map(|(_, st)| st.good.map(|g| Millis(g.1))).collect::<Vec<_>>())
    .bind(s.iter().map(|(_, st)| st.good.map(|g| g.0.lat())).collect::<Vec<_>>())
    .bind(s.iter().map(|(_, st)| st.good.map(|g| g.0.lon())).collect::<Vec<_>>())
    .bind(s.iter().map(|(_, st)| st.pending.map(i32::from)).collect::<Vec<_>>())
    .bind(
        s.iter()
            .map(|(_, st)| (st.timeline.head != i64::MIN).then_some(Millis(st.timeline.head)))
            .collect::<Vec<_>>(),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores transitions; the key (subject, rule, zone, kind, at, historical)
/// makes a repeat insert nothing.
pub(crate) async fn insert_transitions(
    conn: &mut PgConnection,
    ts: &[StoredTransition],
) -> Result<u64, sqlx::Error> {
    if ts.is_empty() {
        return Ok(0);
    }
    let t = |s: &StoredTransition| s.transition;
    Ok(sqlx::query(
        "INSERT INTO rule_transitions (subject_id, rule_id, zone_id, kind, at, historical, confirmed_at, other_device, end_cause, zone_version) \
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::timestamptz[], $6::bool[], \
                              $7::timestamptz[], $8::text[], $9::text[], $10::int8[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(ts.iter().map(|s| t(s).subject.0 as i64).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).rule.0 as i64).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).zone.map_or(0, |z| z.0 as i64)).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).kind.as_str()).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| Millis(t(s).at.as_millisecond())).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).historical).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| Millis(t(s).confirmed_at.as_millisecond())).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| s.other_device.as_deref()).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).end_cause.map(|c| c.as_str())).collect::<Vec<_>>())
    .bind(ts.iter().map(|s| t(s).zone_version.map(|v| v as i64)).collect::<Vec<_>>())
    .execute(conn)
    .await?
    .rows_affected())
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn insert_refused(
    tx: &mut PgConnection,
    r: &[crate::check::Refusal],
) -> Result<Vec<&'static str>, sqlx::Error> {
    if r.is_empty() {
        return Ok(Vec::new());
    }
    // A message sent again (DUP after a crash between commit and ack, or
    // retained, on every new subscription) whose copy is already stored is
    // not stored again. The index of what was stored comes back.
    let stored: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO rejected_messages (topic, reason, detail, payload) \
         SELECT t, r, d, p FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[]) \
              AS u(t, r, d, p, repeat) \
         WHERE NOT (repeat AND EXISTS (SELECT 1 FROM rejected_messages x \
                                       WHERE x.topic = u.t AND md5(x.payload) = md5(u.p) AND x.payload = u.p)) \
         RETURNING reason",
    )
    // MQTT topics may be 65,535 bytes; an index row may not.
    .bind(r.iter().map(|x| truncate(&x.topic, MAX_TOPIC_STORED)).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.reason).collect::<Vec<_>>())
    .bind(r.iter().map(|x| truncate(&x.detail, MAX_DETAIL_STORED)).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.payload.as_ref()).collect::<Vec<&[u8]>>())
    .bind(r.iter().map(|x| x.repeat).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    // Back to the static labels (the metric's label set).
    Ok(stored
        .iter()
        .filter_map(|(reason,)| r.iter().find(|x| x.reason == reason).map(|x| x.reason))
        .collect())
}
