//! The standby: an `emtrack run` started while another one is the active
//! node of the same database waits here until it can take the service lease
//! (`store::lease`), serving only the operators' listener meanwhile
//! (`/readyz` answers 503 `role standby`, `/metrics` says
//! `emtrack_lease_active 0`). It connects to no broker: both nodes share one
//! MQTT client id and so one persistent session, which the standby takes
//! over, with whatever the broker held for it, once it is active.

use crate::config::Config;
use crate::service::StartError;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use store::Lease;
use tokio_util::sync::CancellationToken;

/// How often a standby tries to take the lease.
pub const POLL: Duration = Duration::from_secs(1);

/// Takes the lease for this node, waiting as the standby while another node
/// holds it. `None` if `stop` is cancelled first.
pub async fn take(
    config: &Config,
    pool: &PgPool,
    stop: &CancellationToken,
) -> Result<Option<Lease>, StartError> {
    let holder = store::lease::holder_name();
    let period = Duration::from_secs(config.lease_period_s);
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        Lease::try_take(pool, &holder, period),
    )
    .await
    .unwrap_or(Err(sqlx::Error::PoolTimedOut));
    if let Some(lease) = first.map_err(|e| StartError::Db("take the service lease", e))? {
        return Ok(Some(lease));
    }
    let active = Lease::holder(pool).await.ok().flatten();
    tracing::info!(
        active = active.as_deref().unwrap_or("unknown"),
        "standby: another emtrack is the active node of this database; waiting to take over"
    );
    let registry = prometheus::Registry::new();
    crate::metrics::register_process(&registry);
    crate::metrics::register_role(&registry, Arc::new(AtomicBool::new(false)));
    crate::metrics::register_pool(&registry, pool.clone());
    let (listener, addr) = crate::service::bind(&config.http_listen).await?;
    let https = config
        .https()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let router = api::ops_router(api::HttpState {
        metrics: registry,
        probes: Vec::new(),
        notes: Vec::new(),
        pool: pool.clone(),
        role: api::Role::Standby,
    });
    let serving = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, https, router, serving.clone()));
    tracing::info!(http = %addr, "standby: serving /healthz, /readyz and /metrics");
    let lease = Lease::wait(pool, &holder, period, POLL, stop).await;
    // The active node's listener binds the same address next.
    serving.cancel();
    let _ = server.await;
    if let Some(l) = &lease {
        tracing::info!(
            epoch = l.epoch(),
            "took the service lease: this node is active now"
        );
    }
    Ok(lease)
}
