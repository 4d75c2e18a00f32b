//! Daily partitions of the evidence tables (`fixes`, `device_events`), or
//! the TimescaleDB retention policy when those are hypertables.

use crate::connect::DbError;
use jiff::civil::Date;
use rustc_hash::FxHashSet;
use sqlx::PgPool;
use std::sync::{Mutex, PoisonError};

/// What partition maintenance did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maintenance {
    /// Daily partitions created.
    pub created: i32,
    /// Daily partitions dropped (past retention).
    pub dropped: i32,
}

/// Ensures daily partitions from `today - 1` to `today + ahead_days`, and drops
/// those wholly older than `today - retention_days`. Under TimescaleDB it sets
/// the retention policy instead.
pub async fn maintain_partitions(
    pool: &PgPool,
    today: Date,
    ahead_days: u32,
    retention_days: u32,
) -> Result<Maintenance, DbError> {
    let day = |offset: i64| {
        today
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(today)
    };
    let native: bool = sqlx::query_scalar("SELECT emtrack_native_partitions()")
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    if !native {
        for table in ["fixes", "device_events"] {
            // Replaced, not kept: a changed retention_days takes effect.
            // (Not exercised by the tests, which run without TimescaleDB.)
            sqlx::query("SELECT remove_retention_policy($1::regclass, if_exists => true)")
                .bind(table)
                .execute(pool)
                .await
                .map_err(DbError::Query)?;
            sqlx::query("SELECT add_retention_policy($1::regclass, make_interval(days => $2))")
                .bind(table)
                .bind(retention_days as i32)
                .execute(pool)
                .await
                .map_err(DbError::Query)?;
        }
        return Ok(Maintenance {
            created: 0,
            dropped: 0,
        });
    }
    let created: i32 = sqlx::query_scalar("SELECT emtrack_ensure_partitions($1, $2)")
        .bind(jiff_sqlx::Date::from(day(-1)))
        .bind(jiff_sqlx::Date::from(day(i64::from(ahead_days))))
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    let dropped: i32 = sqlx::query_scalar("SELECT emtrack_drop_partitions_before($1)")
        .bind(jiff_sqlx::Date::from(day(-i64::from(retention_days))))
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    Ok(Maintenance { created, dropped })
}

const DAY_MS: i64 = 86_400_000;

/// UTC days whose partitions are known to exist, so that a write creates a
/// day's partitions (a late upload, a clock far off) only the first time.
#[derive(Debug, Default)]
pub struct Days(Mutex<FxHashSet<i32>>);

impl Days {
    /// Creates the partitions of every day of `times_ms` not known yet.
    pub async fn ensure(
        &self,
        pool: &PgPool,
        times_ms: impl Iterator<Item = i64>,
    ) -> Result<(), sqlx::Error> {
        let mut days: FxHashSet<i32> = times_ms.map(|t| t.div_euclid(DAY_MS) as i32).collect();
        {
            let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            days.retain(|d| !known.contains(d));
        }
        for d in days {
            sqlx::query(
                "SELECT emtrack_ensure_partitions(DATE '1970-01-01' + $1, DATE '1970-01-01' + $1)",
            )
            .bind(d)
            .execute(pool)
            .await?;
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(d);
        }
        Ok(())
    }

    /// After a failed write: if a row found no partition, the cache is stale
    /// (retention dropped a day after it was cached). Forgets every day, so
    /// that the retry creates it again.
    pub fn forget_if_missing(&self, error: &sqlx::Error) {
        if let sqlx::Error::Database(db) = error
            && no_partition(db.as_ref())
        {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

/// PostgreSQL found no partition for a row (SQLSTATE 23514, like any check
/// violation, but only this one is cured by creating the partition).
pub fn no_partition(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of relation")
}

/// Runs [`maintain_partitions`] and retention ([`crate::expire`]) every
/// `every` until `stop`; a failure is logged and tried again at the next
/// turn.
pub async fn keep_tables(
    pool: PgPool,
    ahead_days: u32,
    retention_days: u32,
    retention: crate::Retention,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = jiff::Timestamp::now();
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        match crate::expire(&pool, now, retention_days, &retention).await {
            Ok(expired) => {
                for (table, rows) in expired.into_iter().filter(|(_, n)| *n > 0) {
                    tracing::info!(table, rows, "retention: expired rows deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
        match maintain_partitions(&pool, today, ahead_days, retention_days).await {
            Ok(m) if m.created + m.dropped > 0 => {
                tracing::info!(
                    created = m.created,
                    dropped = m.dropped,
                    "partition maintenance"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "partition maintenance failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
