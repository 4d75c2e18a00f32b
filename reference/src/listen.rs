//! Keeping the engine current while running: `NOTIFY emtrack_reference`
//! (the triggers of `migrations/0002_ingest.sql`) and the times at which
//! assignments and retirements take effect, which no NOTIFY marks.
//!
//! Each change applied may close episodes (a rule or subject went away):
//! those transitions go to ingest, which stores and publishes them like any
//! other. When devices may have changed, the new [`bus::Fleet`] goes to the
//! alert service.

use crate::metrics::Metrics;
use crate::registry::SharedCore;
use crate::sync::{Scope, sync};
use bus::FleetTx;
use geofence::Transition;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::{Backoff, Millis, now_ms, retry_always};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The NOTIFY channel of the reference tables' triggers.
pub const CHANNEL: &str = "emtrack_reference";

/// Episodes closed by a reference change, for ingest to store.
pub type ClosuresTx = mpsc::Sender<Vec<Transition>>;

/// Starts listening for reference changes. Call before the initial load, so
/// that no change made in between is missed.
pub async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Where a running listener's results go.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Episodes closed by a change.
    pub closures: ClosuresTx,
    /// The bracelets to watch, after a change of devices.
    pub fleet: FleetTx,
    /// Counters.
    pub metrics: Metrics,
    /// True while notifications are flowing; false from a lost connection
    /// until everything has been read again. The caller sets it true once
    /// the initial load (after `listen`) is done.
    pub current: Arc<AtomicBool>,
}

/// Applies reference changes until `stop`. Notifications arriving within
/// 50 ms are applied together; if the listener's connection was lost
/// (notifications may be missing), everything is re-read. `listener` was
/// listening before the initial load.
pub async fn run(
    pool: PgPool,
    core: SharedCore,
    mut listener: PgListener,
    out: Outputs,
    stop: CancellationToken,
) {
    let mut scope = Scope::default();
    let mut since = now_ms();
    let mut next = next_boundary(&pool, since).await;
    loop {
        if !scope.is_empty() {
            // While the database is down, `apply` retries; a stop ends it (a
            // restart reads everything again).
            tokio::select! {
                _ = apply(&pool, &core, &scope, &out) => {}
                _ = stop.cancelled() => return,
            }
            if scope.all {
                out.current.store(true, Ordering::Relaxed);
            }
            scope = Scope::default();
            // From `since`, not from now: a boundary that passed while the
            // change was read is still applied (at once).
            next = next_boundary(&pool, since).await;
        }
        let wake = next.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis((t - now_ms()).clamp(0, 3_600_000) as u64)
        });
        let first = tokio::select! {
            n = listener.try_recv() => n,
            _ = tokio::time::sleep(wake) => {
                let now = now_ms();
                match boundary_scope(&pool, since, now).await {
                    Ok(s) => {
                        scope = s;
                        since = now;
                        next = next_boundary(&pool, since).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read assignment times; retrying in 1 s");
                        next = Some(now + 1_000);
                    }
                }
                continue;
            }
            _ = stop.cancelled() => return,
        };
        match first {
            Ok(Some(n)) => {
                scope.add(n.payload());
            }
            Ok(None) => {
                out.current.store(false, Ordering::Relaxed);
                tracing::warn!("reference listener reconnected; re-reading all reference data");
                scope = Scope::all();
                continue;
            }
            Err(e) => {
                out.current.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "reference listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                scope = Scope::all();
                continue;
            }
        }
        scope = gather(&mut listener, scope).await;
    }
}

/// Adds the notifications that arrive within 50 ms of the first; beyond
/// 10,000 rows, or on a lost connection, everything is read again.
async fn gather(listener: &mut PgListener, mut scope: Scope) -> Scope {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    while let Ok(r) = tokio::time::timeout_at(deadline, listener.try_recv()).await {
        match r {
            Ok(Some(n)) => {
                if scope.len() > 10_000 {
                    scope = Scope::all();
                } else if !scope.all {
                    scope.add(n.payload());
                }
            }
            _ => return Scope::all(),
        }
    }
    scope
}

/// The first time after `after` (ms) an assignment starts or ends, or a
/// device retires; it may have passed already (then it is due now).
async fn next_boundary(pool: &PgPool, after: i64) -> Option<i64> {
    sqlx::query_scalar::<_, Option<Millis>>(
        "SELECT min(t) FROM ( \
             SELECT valid_from AS t FROM assignments WHERE valid_from > $1 \
             UNION ALL SELECT valid_to FROM assignments WHERE valid_to > $1 \
             UNION ALL SELECT retired_at FROM devices WHERE retired_at > $1) b",
    )
    .bind(Millis(after))
    .fetch_one(pool)
    .await
    .map(|t| t.map(i64::from))
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read assignment times");
        // Look again in a minute.
        Some(now_ms() + 60_000)
    })
}

/// The subjects and devices whose assignment or retirement took effect in
/// (`since`, `now`].
async fn boundary_scope(pool: &PgPool, since: i64, now: i64) -> Result<Scope, sqlx::Error> {
    let (since, now) = (Millis(since), Millis(now));
    let subjects: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT subject_id FROM assignments \
         WHERE (valid_from > $1 AND valid_from <= $2) OR (valid_to > $1 AND valid_to <= $2)",
    )
    .bind(since)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let devices: Vec<String> =
        sqlx::query_scalar("SELECT id FROM devices WHERE retired_at > $1 AND retired_at <= $2")
            .bind(since)
            .bind(now)
            .fetch_all(pool)
            .await?;
    Ok(Scope {
        subjects,
        devices,
        ..Scope::default()
    })
}

/// Applies `scope`, retrying (every second) until the database answers.
async fn apply(pool: &PgPool, core: &SharedCore, scope: &Scope, out: &Outputs) {
    let done = retry_always(
        Backoff::STEADY,
        || sync(pool, core, scope),
        |e: &sqlx::Error, _| tracing::warn!(error = %e, "cannot read reference data; retrying"),
    )
    .await;
    out.metrics.record(&done.errors);
    out.metrics.reloads.inc();
    if !done.transitions.is_empty() {
        // Closed only when ingest stopped; a restart replays from the store.
        let _ = out.closures.send(done.transitions).await;
    }
    if let Some(fleet) = done.fleet {
        out.fleet.send_replace(Arc::new(fleet));
    }
    tracing::info!(
        zones = done.zones,
        subjects = done.subjects,
        devices = done.devices,
        "reference change applied"
    );
}
