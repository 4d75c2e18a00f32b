//! `emtrack run`: wires the pieces together and runs until SIGTERM or Ctrl-C.
//!
//! Startup order: connect and migrate; create the partitions ahead; load the
//! reference data into the engine; rebuild per-device state from stored
//! fixes; then serve HTTP, listen for reference changes, keep partitions, and
//! consume MQTT. Shutdown: stop consuming, let the workers commit and ack
//! what they hold, disconnect; bounded by 10 s.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineConfig, Shared};
use crate::reference::{self, Core, Scope};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The running service's handles (tests use them).
#[derive(Debug, Clone)]
pub struct Service {
    /// Pipeline state: metrics, engine, transitions channel.
    pub shared: Arc<Shared>,
    /// The HTTP address actually bound.
    pub http: std::net::SocketAddr,
    /// The alert service.
    pub alerting: crate::alerting::Alerting,
}

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database step named failed.
    Db(&'static str, sqlx::Error),
    /// The HTTP listener could not bind.
    Http(String, std::io::Error),
    /// A worker stopped while running (see the log).
    Failed,
    /// The configuration is unusable.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Db(what, e) => write!(f, "cannot {what}: {e}"),
            StartError::Http(addr, e) => write!(
                f,
                "cannot listen on {addr} for HTTP: {e} (set http_listen / EMTRACK_HTTP_LISTEN)"
            ),
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Failed => write!(
                f,
                "a worker stopped unexpectedly (see the log); unacked messages will be redelivered"
            ),
        }
    }
}

impl std::error::Error for StartError {}

impl From<&Config> for PipelineConfig {
    fn from(c: &Config) -> Self {
        PipelineConfig {
            mqtt_host: c.mqtt_host.clone(),
            mqtt_port: c.mqtt_port,
            client_id: c.mqtt_client_id.clone(),
            workers: c.workers,
            max_in_flight: c.max_in_flight,
            max_batch: c.max_batch,
            linger: Duration::from_millis(c.linger_ms),
            future_skew: Duration::from_secs(c.future_skew_s),
            max_age: Duration::from_secs(u64::from(c.retention_days.saturating_sub(1)) * 86_400),
            max_speed_kmh: c.max_speed_kmh,
        }
    }
}

/// Starts everything on an already migrated pool; returns once consuming has
/// begun. The tasks stop when `stop` fires; `done` is cancelled when the
/// pipeline has drained.
pub async fn start(
    config: &Config,
    pool: PgPool,
    stop: CancellationToken,
    done: CancellationToken,
) -> Result<Service, StartError> {
    let metrics = Metrics::new();
    let core = Arc::new(Mutex::new(Core::default()));
    // LISTEN before the initial load, so that no change made in between is missed.
    let mut changes = PgListener::connect_with(&pool)
        .await
        .map_err(|e| StartError::Db("LISTEN for reference changes", e))?;
    changes
        .listen("emtrack_reference")
        .await
        .map_err(|e| StartError::Db("LISTEN for reference changes", e))?;
    let loaded = reference::sync(&pool, &core, &Scope::all())
        .await
        .map_err(|e| StartError::Db("load zones, subjects and devices", e))?;
    for e in &loaded.errors {
        tracing::error!(%e, "reference row skipped");
    }
    metrics.reference_errors.inc_by(loaded.errors.len() as u64);
    let rebuilt =
        crate::rebuild::rebuild(&pool, &core, Duration::from_secs(config.rebuild_lookback_s))
            .await
            .map_err(|e| StartError::Db("rebuild device state", e))?;
    metrics.rebuild_fixes.inc_by(rebuilt.fixes);
    {
        let c = core.lock().unwrap_or_else(|e| e.into_inner());
        let (zones, subjects) = c.counts();
        tracing::info!(
            zones,
            subjects,
            devices = c.registry.len(),
            replayed_fixes = rebuilt.fixes,
            open_subjects = rebuilt.open_subjects,
            "engine loaded"
        );
    }
    let shared = Arc::new(Shared::new(pool.clone(), core, metrics, config.into()));
    let engine_loaded = Arc::new(AtomicBool::new(true));
    let policy = config
        .alerts
        .policy()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let alerting = crate::alerting::start(
        shared.clone(),
        config.alerts.clone(),
        policy,
        crate::delivery::MqttTarget {
            host: config.mqtt_host.clone(),
            port: config.mqtt_port,
            client_id: format!("{}-alerts", config.mqtt_client_id),
        },
        stop.clone(),
    )
    .await
    .map_err(|e| StartError::Config(e.to_string()))?;

    let listener = tokio::net::TcpListener::bind(&config.http_listen)
        .await
        .map_err(|e| StartError::Http(config.http_listen.clone(), e))?;
    let http = listener
        .local_addr()
        .map_err(|e| StartError::Http(config.http_listen.clone(), e))?;
    let app = crate::http::router(crate::http::HttpState {
        shared: shared.clone(),
        engine_loaded,
        alerting: alerting.clone(),
    });
    let http_stop = done.clone();
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    tokio::spawn(listen_reference(shared.clone(), changes, stop.clone()));
    tokio::spawn(maintain(
        pool,
        config.partitions_ahead_days,
        config.retention_days,
        Duration::from_secs(config.maintenance_interval_s),
        stop.clone(),
    ));
    let s = shared.clone();
    tokio::spawn(async move {
        pipeline::run(s, stop).await;
        done.cancel();
    });
    Ok(Service {
        shared,
        http,
        alerting,
    })
}

/// Applies `NOTIFY emtrack_reference` changes. Notifications arriving within
/// 50 ms are applied together; if the listener's connection was lost
/// (notifications may be missing), everything is re-read. `listener` was
/// listening before the initial load.
async fn listen_reference(shared: Arc<Shared>, mut listener: PgListener, stop: CancellationToken) {
    let mut scope = Scope::default();
    // Assignments and retirements take effect at their own times, which no
    // NOTIFY marks: wake at the next one and re-read what it changes.
    let mut since = now_ms();
    let mut next = next_boundary(&shared.pool).await;
    loop {
        if !scope.is_empty() {
            apply(&shared, &scope).await;
            scope = Scope::default();
            next = next_boundary(&shared.pool).await;
        }
        let wake = next.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis((t - now_ms()).clamp(0, 3_600_000) as u64)
        });
        let first = tokio::select! {
            n = listener.try_recv() => n,
            _ = tokio::time::sleep(wake) => {
                let now = now_ms();
                match boundary_scope(&shared.pool, since, now).await {
                    Ok(s) => {
                        scope = s;
                        since = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read assignment times; retrying"),
                }
                next = next_boundary(&shared.pool).await;
                continue;
            }
            _ = stop.cancelled() => return,
        };
        match first {
            Ok(Some(n)) => {
                scope.add(n.payload());
            }
            Ok(None) => {
                tracing::warn!("reference listener reconnected; re-reading all reference data");
                scope = Scope::all();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reference listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                scope = Scope::all();
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        while let Ok(r) = tokio::time::timeout_at(deadline, listener.try_recv()).await {
            match r {
                Ok(Some(n)) => {
                    if scope.zones.len() + scope.subjects.len() + scope.devices.len() > 10_000 {
                        scope = Scope::all();
                    } else if !scope.all {
                        scope.add(n.payload());
                    }
                }
                _ => {
                    scope = Scope::all();
                    break;
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The next time an assignment starts or ends, or a device retires (ms).
async fn next_boundary(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT (extract(epoch FROM min(t)) * 1000)::int8 FROM ( \
             SELECT valid_from AS t FROM assignments WHERE valid_from > now() \
             UNION ALL SELECT valid_to FROM assignments WHERE valid_to > now() \
             UNION ALL SELECT retired_at FROM devices WHERE retired_at > now()) b",
    )
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read assignment times");
        // Look again in a minute.
        Some(now_ms() + 60_000)
    })
}

/// The subjects and devices whose assignment or retirement took effect in
/// (`since`, `now`].
async fn boundary_scope(pool: &PgPool, since: i64, now: i64) -> Result<Scope, sqlx::Error> {
    let subjects: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT subject_id FROM assignments, \
             LATERAL (SELECT 'epoch'::timestamptz + $1 * interval '1 millisecond' AS a, \
                             'epoch'::timestamptz + $2 * interval '1 millisecond' AS b) w \
         WHERE (valid_from > w.a AND valid_from <= w.b) OR (valid_to > w.a AND valid_to <= w.b)",
    )
    .bind(since)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let devices: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM devices WHERE retired_at > 'epoch'::timestamptz + $1 * interval '1 millisecond' \
         AND retired_at <= 'epoch'::timestamptz + $2 * interval '1 millisecond'",
    )
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

async fn apply(shared: &Shared, scope: &Scope) {
    loop {
        match reference::sync(&shared.pool, &shared.core, scope).await {
            Ok(done) => {
                for e in &done.errors {
                    tracing::error!(%e, "reference row skipped");
                }
                shared
                    .metrics
                    .reference_errors
                    .inc_by(done.errors.len() as u64);
                shared.metrics.reference_reloads.inc();
                if !done.transitions.is_empty() {
                    store_closures(shared, done.transitions).await;
                }
                tracing::info!(
                    zones = done.zones,
                    subjects = done.subjects,
                    devices = done.devices,
                    "reference change applied"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read reference data; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Episodes closed because a rule or subject went away.
async fn store_closures(shared: &Shared, ts: Vec<geofence::Transition>) {
    let stored: Vec<pipeline::StoredTransition> = {
        let core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
        ts.into_iter()
            .map(|t| pipeline::StoredTransition {
                transition: t,
                device: None,
                other_device: t
                    .device
                    .and_then(|d| core.registry.name_of(d))
                    .map(str::to_owned),
            })
            .collect()
    };
    loop {
        let r = async {
            let mut conn = shared.pool.acquire().await?;
            pipeline::insert_transitions(&mut conn, &stored).await
        }
        .await;
        match r {
            Ok(_) => break,
            Err(e) if pipeline::transient(&e) => {
                tracing::warn!(error = %e, "cannot store closed episodes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                // Refused outright: retrying would block every later change.
                tracing::error!(error = %e, closures = stored.len(), "the database refused the episodes closed by a reference change; they are not stored");
                return;
            }
        }
    }
    for t in &stored {
        shared
            .metrics
            .transitions
            .with_label_values(&[t.transition.kind.as_str()])
            .inc();
    }
    let _ = shared
        .observed
        .send(pipeline::Observed {
            committed_ms: now_ms(),
            transitions: stored,
            ..pipeline::Observed::default()
        })
        .await;
}

/// Creates partitions ahead and drops those past retention, periodically.
async fn maintain(
    pool: PgPool,
    ahead: u32,
    retention: u32,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        match crate::db::maintain_partitions(&pool, today, ahead, retention).await {
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

/// Runs until SIGTERM or Ctrl-C, then shuts down within 10 s.
pub async fn run(config: &Config, pool: PgPool) -> Result<(), StartError> {
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let svc = start(config, pool, stop.clone(), done.clone()).await?;
    tracing::info!(http = %svc.http, broker = %format!("{}:{}", config.mqtt_host, config.mqtt_port), "emtrack running");
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("signal received; stopping"),
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    let drained = async {
        done.cancelled().await;
        svc.alerting.stopped.cancelled().await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .is_err()
    {
        tracing::error!(
            "shutdown took longer than 10 s; exiting with messages unacked (the broker redelivers them)"
        );
    }
    if svc.shared.failed.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(StartError::Failed);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
