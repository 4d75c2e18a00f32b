//! Retention for every table that holds personal data, beside the evidence
//! partitions (`fixes`, `device_events`, dropped whole by
//! [`crate::maintain_partitions`]).
//!
//! Each table has its own period ([`Retention`], the `[retention]` table of
//! the configuration): raw refused payloads far shorter than evidence, the
//! audit log longer than the evidence it tells about. The records that go
//! with each fix (transitions, message digests, conflicts, findings) follow
//! the evidence period. Rows go in batches of [`BATCH`], each its own
//! transaction, so retention never holds long locks on tables ingest and
//! the alert service write. What is kept:
//! - alerts not yet resolved, whatever their age, with their history;
//! - deliveries still pending;
//! - the current version of every order (`valid_to IS NULL`);
//! - credentials not yet expired or revoked.
//!
//! `audit_log` is append-only (a trigger refuses every UPDATE, DELETE and
//! TRUNCATE); its trigger lets through only the DELETE of rows older than
//! the cutoff a retention transaction declares for itself
//! (`emtrack.audit_retention_before`), and the purge is itself audited.

use crate::connect::DbError;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Rows deleted per transaction, at most.
pub const BATCH: i64 = 10_000;

/// Days each table keeps its rows (the `[retention]` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Refused messages with their raw payloads (`rejected_messages`), by
    /// arrival: kept to diagnose and replay, not as evidence.
    pub rejected_messages_days: u32,
    /// Resolved alerts with their history (`alerts`, `alert_events`), by
    /// resolution.
    pub alerts_days: u32,
    /// Delivered or dead notifications (`alert_deliveries`, each a copy of
    /// an alert's content), by creation.
    pub deliveries_days: u32,
    /// The audit log, by time: longer than the evidence it tells about.
    pub audit_log_days: u32,
    /// Superseded order versions (`order_versions`), by their end.
    pub order_versions_days: u32,
    /// Expired or revoked logins and tokens (`credentials`), by their end.
    pub credentials_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            rejected_messages_days: 30,
            alerts_days: 6 * 365 + 2,
            deliveries_days: 90,
            audit_log_days: 7 * 365 + 2,
            order_versions_days: 6 * 365 + 2,
            credentials_days: 90,
        }
    }
}

impl Retention {
    /// Every period, named as in the configuration.
    pub fn periods(&self) -> [(&'static str, u32); 6] {
        [
            ("rejected_messages_days", self.rejected_messages_days),
            ("alerts_days", self.alerts_days),
            ("deliveries_days", self.deliveries_days),
            ("audit_log_days", self.audit_log_days),
            ("order_versions_days", self.order_versions_days),
            ("credentials_days", self.credentials_days),
        ]
    }
}

/// Rows deleted, per table.
pub type Expired = Vec<(&'static str, u64)>;

/// One table's rule: the table and the condition that makes a row
/// expire, with `$1` the cutoff.
const RULES: [(&str, &str, Period); 8] = [
    ("rule_transitions", "at < $1", Period::Evidence),
    ("messages", "received_at < $1", Period::Evidence),
    ("fix_conflicts", "fix_time < $1", Period::Evidence),
    ("device_findings", "at < $1", Period::Evidence),
    ("rejected_messages", "received_at < $1", Period::Rejected),
    (
        "alert_deliveries",
        "state IN ('delivered', 'dead') AND created_at < $1",
        Period::Deliveries,
    ),
    (
        "order_versions",
        "valid_to IS NOT NULL AND valid_to < $1",
        Period::OrderVersions,
    ),
    (
        "credentials",
        "coalesce(revoked_at, expires_at) < $1",
        Period::Credentials,
    ),
];

#[derive(Clone, Copy)]
enum Period {
    Evidence,
    Rejected,
    Deliveries,
    OrderVersions,
    Credentials,
}

fn cutoff(now: Timestamp, days: u32) -> jiff_sqlx::Timestamp {
    let back = jiff::SignedDuration::from_hours(24 * i64::from(days));
    jiff_sqlx::Timestamp::from(now.checked_sub(back).unwrap_or(Timestamp::MIN))
}

/// Deletes what every table keeps no longer at `now` (`evidence_days` for
/// the records that go with fixes); returns the rows deleted per table.
pub async fn expire(
    pool: &PgPool,
    now: Timestamp,
    evidence_days: u32,
    r: &Retention,
) -> Result<Expired, DbError> {
    let mut out = Expired::new();
    for (table, condition, period) in RULES {
        let days = match period {
            Period::Evidence => evidence_days,
            Period::Rejected => r.rejected_messages_days,
            Period::Deliveries => r.deliveries_days,
            Period::OrderVersions => r.order_versions_days,
            Period::Credentials => r.credentials_days,
        };
        out.push((
            table,
            expire_rows(pool, table, condition, cutoff(now, days)).await?,
        ));
    }
    // The audit log past its append-only trigger, in its own way.
    out.push((
        "audit_log",
        expire_audit(pool, cutoff(now, r.audit_log_days)).await?,
    ));
    // Deliveries first (above), then resolved alerts with what remains of
    // theirs.
    out.push((
        "alerts",
        expire_alerts(pool, cutoff(now, r.alerts_days)).await?,
    ));
    Ok(out)
}

async fn expire_rows(
    pool: &PgPool,
    table: &str,
    condition: &str,
    at: jiff_sqlx::Timestamp,
) -> Result<u64, DbError> {
    // `table` and `condition` are this module's constants, never input.
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {condition} LIMIT {BATCH}))"
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(&sql)
            .bind(at)
            .execute(pool)
            .await
            .map_err(DbError::Query)?
            .rows_affected();
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Resolved alerts resolved before `at`, with their events and remaining
/// deliveries, a batch per transaction.
async fn expire_alerts(pool: &PgPool, at: jiff_sqlx::Timestamp) -> Result<u64, DbError> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await.map_err(DbError::Query)?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < $1 ORDER BY id LIMIT 1000",
        )
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::Query)?;
        if ids.is_empty() {
            return Ok(total);
        }
        for table in ["alert_deliveries", "alert_events"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE alert_id = ANY($1)"))
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(DbError::Query)?;
        }
        sqlx::query("DELETE FROM alerts WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(DbError::Query)?;
        tx.commit().await.map_err(DbError::Query)?;
        total += ids.len() as u64;
        if ids.len() < 1000 {
            return Ok(total);
        }
    }
}

/// The audit log's rows before `at`, in one transaction that declares the
/// cutoff to the append-only trigger and records the purge in the log.
async fn expire_audit(pool: &PgPool, at: jiff_sqlx::Timestamp) -> Result<u64, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::Query)?;
    sqlx::query("SELECT set_config('emtrack.audit_retention_before', $1::timestamptz::text, true)")
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(DbError::Query)?;
    let n = sqlx::query("DELETE FROM audit_log WHERE at < $1")
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(DbError::Query)?
        .rows_affected();
    if n > 0 {
        sqlx::query(
            "INSERT INTO audit_log (action, detail) \
             VALUES ('retention', jsonb_build_object('table', 'audit_log', 'before', $1::timestamptz, 'deleted', $2::bigint))",
        )
        .bind(at)
        .bind(n as i64)
        .execute(&mut *tx)
        .await
        .map_err(DbError::Query)?;
    }
    tx.commit().await.map_err(DbError::Query)?;
    Ok(n)
}
