//! `emtrack run`: the services wired together, started in order, stopped in
//! order.
//!
//! Startup: LISTEN for reference changes, load the reference data into the
//! engine, rebuild per-device state from stored fixes, start the alert
//! service (lock, restore, re-read), then serve HTTP, apply reference
//! changes, keep partitions, and consume MQTT. Shutdown (SIGTERM, Ctrl-C, or
//! a task that failed): stop consuming, let the workers commit and ack what
//! they hold, store the alert service's last changes and release its lock,
//! disconnect; bounded by 10 s.

use crate::config::Config;
use crate::shutdown::{self, Supervisor};
use alert_service::{AlertHandle, AlertStartError};
use ingest::Ingest;
use reference::{Scope, SharedCore};
use sqlx::PgPool;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::Lease;
use tokio_util::sync::CancellationToken;

/// The running service's handles.
#[derive(Debug)]
pub struct Service {
    /// The operators' HTTP address actually bound (`/metrics`, `/readyz`).
    pub http: SocketAddr,
    /// The officer API's address actually bound.
    pub api: SocketAddr,
    /// Every metric (what `/metrics` renders).
    pub registry: prometheus::Registry,
    /// Ingest's metrics.
    pub ingest: ingest::Metrics,
    /// The reference loader's metrics.
    pub reference: reference::Metrics,
    /// The alert service.
    pub alerts: AlertHandle,
    /// Connected to the broker and subscribed.
    pub subscribed: Arc<AtomicBool>,
    tasks: Supervisor,
    /// Kept by the `lease` task; released once every task has stopped.
    lease: Arc<tokio::sync::Mutex<Lease>>,
}

impl Service {
    /// Waits until every task has ended, then gives the lease up (a
    /// standby takes over at its next poll); returns the failures.
    pub async fn stopped(self) -> Vec<String> {
        let failures = self.tasks.wait().await;
        self.lease.lock().await.release().await;
        failures
    }

    /// The metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database step named failed.
    Db(&'static str, sqlx::Error),
    /// The alert service could not start (its lock, its state).
    Alerts(AlertStartError),
    /// The HTTP listener could not bind.
    Http(String, std::io::Error),
    /// The configuration is unusable.
    Config(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Db(what, e) => write!(f, "cannot {what}: {e}"),
            StartError::Alerts(e) => e.fmt(f),
            StartError::Http(addr, e) => write!(
                f,
                "cannot listen on {addr} for HTTP: {e} (set http_listen / EMTRACK_HTTP_LISTEN \
                 for the operators' listener, api_listen / EMTRACK_API_LISTEN for the officer API)"
            ),
            StartError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Why `emtrack run` ended other than by a signal.
#[derive(Debug)]
pub enum RunError {
    /// It could not start.
    Start(StartError),
    /// A task failed while running (each named with why); unacked messages
    /// are redelivered to the next start.
    Failed(Vec<String>),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Start(e) => e.fmt(f),
            RunError::Failed(failures) => write!(
                f,
                "stopped after a failure ({}); unacked messages will be redelivered",
                failures.join("; ")
            ),
        }
    }
}

impl std::error::Error for RunError {}

/// Starts everything on an already migrated pool, as the active node
/// holding `lease`; returns once consuming has begun. Everything stops when
/// `stop` is cancelled, a task fails or the lease is lost.
pub async fn start(
    config: &Config,
    pool: PgPool,
    lease: Lease,
    stop: CancellationToken,
) -> Result<Service, StartError> {
    let registry = prometheus::Registry::new();
    let fence = lease.fence();
    let Kept {
        lease,
        keeper,
        unless_started,
    } = keep(lease, &stop);
    // Every file the peers need is read before anything starts.
    let peers = Peers::from(config)?;
    let (loaded, alert_inputs) = load(config, &pool, &registry, fence).await?;
    crate::metrics::register_active(&registry, &pool, &loaded.core);
    let core = loaded.core.clone();
    let ref_metrics = loaded.reference.clone();
    let (alerts, alert_service) =
        start_alerts(config, &pool, &peers, &registry, alert_inputs, &stop).await?;
    let (ops_listener, http) = bind(&config.http_listen).await?;
    let (api_listener, api) = bind(&config.api_listen).await?;
    let mut tasks = Supervisor::new(stop.clone());
    unless_started.disarm();
    tasks.spawn("lease", async move {
        keeper
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    });
    // Current: the initial load ran after LISTEN began.
    let reference_current = Arc::new(AtomicBool::new(true));
    let ingest = loaded.ingest.clone();
    spawn_background(
        &mut tasks,
        config,
        &pool,
        loaded,
        reference_current.clone(),
        &stop,
    );
    tasks.spawn("alerts", alert_service.run(stop.clone()));
    let ops = ops_router(&registry, &ingest, core, reference_current, &alerts, &pool);
    let officer = api::officer_router(
        api::ApiState::new(
            pool,
            alerts.clone(),
            Arc::new(EngineRules),
            config.api(),
            &registry,
        )
        .with_broker(peers.broker)
        .with_seal(peers.outbound.webhook_seal),
    );
    // HTTP stays up until the pipeline has drained.
    let drained = CancellationToken::new();
    for (name, listener, router) in [("http", ops_listener, ops), ("api", api_listener, officer)] {
        let serve = api::serve(listener, peers.https.clone(), router, drained.clone());
        tasks.spawn(name, serve);
    }
    let (subscribed, metrics) = (ingest.subscribed(), ingest.metrics().clone());
    tasks.spawn("ingest", async move {
        let r = ingest.run(stop).await;
        drained.cancel();
        r
    });
    Ok(Service {
        http,
        api,
        registry,
        ingest: metrics,
        reference: ref_metrics,
        alerts,
        subscribed,
        tasks,
        lease,
    })
}

/// The lease of a starting service, renewed in the background.
struct Kept {
    /// Shared with the renewals; released at shutdown.
    lease: Arc<tokio::sync::Mutex<Lease>>,
    /// The renewals: they end when the lease is lost or `stop` comes.
    keeper: tokio::task::JoinHandle<Result<(), store::LeaseLost>>,
    /// Ends the renewals when dropped, unless disarmed once started.
    unless_started: tokio_util::sync::DropGuard,
}

/// Renews `lease` from now on (loading the engine and the alerts may take
/// longer than its period) until `stop`, or until the returned guard is
/// dropped: a start that fails ends the renewals too.
fn keep(lease: Lease, stop: &CancellationToken) -> Kept {
    let lease = Arc::new(tokio::sync::Mutex::new(lease));
    let keeping = stop.child_token();
    let unless_started = keeping.clone().drop_guard();
    let held = lease.clone();
    let keeper = tokio::spawn(async move { held.lock().await.keep(&keeping).await });
    Kept {
        lease,
        keeper,
        unless_started,
    }
}

/// Seals stored webhook secrets, then loads the alert service.
async fn start_alerts(
    config: &Config,
    pool: &PgPool,
    peers: &Peers,
    registry: &prometheus::Registry,
    inputs: alert_service::Inputs,
    stop: &CancellationToken,
) -> Result<(AlertHandle, alert_service::AlertService), StartError> {
    let policy = config
        .alerts
        .policy()
        .map_err(|e| StartError::Config(e.to_string()))?;
    seal_webhook_secrets(pool, peers.outbound.webhook_seal.as_deref()).await?;
    alert_service::start(
        pool.clone(),
        config.alerts.clone(),
        policy,
        peers.outbound.clone(),
        alert_service::Metrics::new(registry),
        inputs,
        stop.clone(),
    )
    .await
    .map_err(StartError::Alerts)
}

/// The officer API's order checks: the engine's own rules, from `reference`.
struct EngineRules;

impl api::orders::OrderCheck for EngineRules {
    fn zone(&self, z: &api::orders::NewZone) -> Result<(), String> {
        reference::check::zone(&reference::check::ZoneDraft {
            name: z.name.clone(),
            kind: z.kind.clone(),
            geometry: z.geometry.clone(),
            radius_m: z.radius_m,
            buffer_m: z.buffer_m,
            schedule: z.schedule.clone(),
        })
    }

    fn schedule(&self, s: &serde_json::Value) -> Result<(), String> {
        reference::check::schedule(s)
    }

    fn tuning(&self, t: &serde_json::Value) -> Result<(), String> {
        reference::check::tuning(t)
    }
}

/// Binds an HTTP listener; returns it with the address actually bound.
pub(crate) async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Http(addr.to_owned(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Http(addr.to_owned(), e))?;
    Ok((listener, bound))
}

/// What `run` says about a database without subjects or devices.
const EMPTY_DATABASE: &str = "the database holds no subjects and no devices: nothing is judged. \
     Import reference data (emtrack import-world, or the officer API), or check database_url: \
     is it the agency's database?";

/// The database part of a URL (host, port, name), never its credentials.
fn redacted_target(url: &str) -> String {
    url.rsplit_once('@')
        .map_or(url, |(_, rest)| rest)
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// `/readyz`'s warnings: an empty database, a lost broker session.
fn readiness_notes(ingest: &ingest::Ingest, core: SharedCore) -> Vec<(&'static str, api::Note)> {
    let session = ingest.session_loss();
    let empty = (
        "reference",
        Arc::new(move || {
            let n = core.counts();
            (n.subjects == 0 && n.devices == 0).then(|| EMPTY_DATABASE.to_owned())
        }) as api::Note,
    );
    vec![
        empty,
        (
            "broker_session",
            Arc::new(move || {
                session.lost().map(|(n, at_ms)| {
                let at = jiff::Timestamp::from_millisecond(at_ms)
                    .map_or_else(|_| at_ms.to_string(), |t| t.to_string());
                format!(
                    "the broker lost emtrack's session {n} time(s), last at {at}: messages it held may be lost (README: \"The broker lost emtrack's session\")"
                )
            })
            }),
        ),
    ]
}

/// The reference listener, the recorder of the episodes it closes, and
/// partition maintenance.
fn spawn_background(
    tasks: &mut Supervisor,
    config: &Config,
    pool: &PgPool,
    loaded: Loaded,
    current: Arc<AtomicBool>,
    stop: &CancellationToken,
) {
    let (closures_tx, closures_rx) = tokio::sync::mpsc::channel(64);
    let outputs = reference::listen::Outputs {
        closures: closures_tx,
        fleet: loaded.fleet,
        metrics: loaded.reference,
        current,
    };
    tasks.spawn_endless(
        "reference",
        reference::listen::run(
            pool.clone(),
            loaded.core,
            loaded.changes,
            outputs,
            stop.clone(),
        ),
    );
    let (ingest, s) = (loaded.ingest, stop.clone());
    tasks.spawn_endless("closures", async move {
        ingest.record_closures(closures_rx, s).await
    });
    tasks.spawn_endless(
        "partitions",
        store::keep_tables(
            pool.clone(),
            config.partitions_ahead_days,
            config.retention_days,
            config.retention.clone(),
            Duration::from_secs(config.maintenance_interval_s),
            stop.clone(),
        ),
    );
}

/// What the background tasks take over once the alert service has started.
struct Loaded {
    core: SharedCore,
    /// Listening for reference changes since before the load.
    changes: sqlx::postgres::PgListener,
    reference: reference::Metrics,
    fleet: bus::FleetTx,
    ingest: Ingest,
}

/// The operators' endpoints: metrics, health, and readiness from what each
/// part reports.
fn ops_router(
    registry: &prometheus::Registry,
    ingest: &Ingest,
    core: SharedCore,
    reference_current: Arc<AtomicBool>,
    alerts: &AlertHandle,
    pool: &PgPool,
) -> axum::Router {
    let probes: Vec<(&'static str, api::Probe)> = vec![
        ("broker", flag(ingest.subscribed())),
        ("reference", flag(reference_current)),
        ("alerts", running(alerts.stopped())),
    ];
    api::ops_router(api::HttpState {
        metrics: registry.clone(),
        probes,
        notes: readiness_notes(ingest, core),
        pool: pool.clone(),
        role: api::Role::Active,
    })
}

/// How the service reaches and serves its peers, built from the
/// configuration's files (passwords, certificates, keys).
struct Peers {
    /// Where alerts go: the broker and webhooks.
    outbound: alert_service::Outbound,
    /// Both HTTP listeners' TLS, if configured.
    https: Option<tokio_rustls::TlsAcceptor>,
    /// The broker's admin side, for the API's device credentials.
    broker: Option<Arc<identities::Broker>>,
}

impl Peers {
    fn from(config: &Config) -> Result<Peers, StartError> {
        let config_error = |e: crate::config::ConfigError| StartError::Config(e.to_string());
        let broker = config.admin_link().map_err(config_error)?.map(|l| {
            Arc::new(identities::Broker::new(
                l,
                format!("{}-admin", config.mqtt_client_id),
            ))
        });
        Ok(Peers {
            outbound: config.outbound().map_err(config_error)?,
            https: config.https().map_err(config_error)?,
            broker,
        })
    }
}

/// Seals the webhook secrets stored in plain text, or warns that they are
/// when there is no key.
async fn seal_webhook_secrets(
    pool: &PgPool,
    key: Option<&link::SealKey>,
) -> Result<(), StartError> {
    match key {
        Some(key) => {
            let sealed = alert_service::seal_stored_secrets(pool, key)
                .await
                .map_err(|e| StartError::Db("seal webhook secrets", e))?;
            if sealed > 0 {
                tracing::info!(
                    sealed,
                    "webhook secrets stored in plain text are now sealed"
                );
            }
            let unopened = alert_service::unopened_secrets(pool, key)
                .await
                .map_err(|e| StartError::Db("check webhook secrets", e))?;
            if !unopened.is_empty() {
                // Alerts still reach officers over MQTT; these webhooks'
                // deliveries fail, counted, until the key is put right.
                tracing::error!(webhooks = ?unopened, "webhook secrets do not open with alerts.webhook_key_file: is it the key they were sealed with?");
            }
        }
        None => {
            let plain: i64 =
                sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE secret IS NOT NULL")
                    .fetch_one(pool)
                    .await
                    .map_err(|e| StartError::Db("count webhook secrets", e))?;
            if plain > 0 {
                tracing::warn!(
                    webhooks = plain,
                    "webhook secrets are stored in plain text: set alerts.webhook_key_file to seal them"
                );
            }
        }
    }
    Ok(())
}

/// Loads the reference data into the engine (listening for changes first,
/// so that none made in between is missed), and rebuilds the engine's state
/// from stored fixes.
async fn load(
    config: &Config,
    pool: &PgPool,
    registry: &prometheus::Registry,
    fence: store::Fence,
) -> Result<(Loaded, alert_service::Inputs), StartError> {
    let reference = reference::Metrics::new(registry);
    let ingest_config = config
        .ingest()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let core = SharedCore::new(ingest_config.max_age);
    let changes = reference::listen::listen(pool)
        .await
        .map_err(|e| StartError::Db("LISTEN for reference changes", e))?;
    let synced = reference::sync(pool, &core, &Scope::all())
        .await
        .map_err(|e| StartError::Db("load zones, subjects and devices", e))?;
    reference.record(&synced.errors);
    let (observed_tx, observed_rx) = bus::observed();
    let (fleet_tx, fleet_rx) = bus::fleet(synced.fleet.unwrap_or_default());
    let ingest = Ingest::new(
        ingest_config,
        pool.clone(),
        core.clone(),
        ingest::Metrics::new(registry),
        observed_tx,
        fence.clone(),
    );
    let rebuilt = ingest
        .rebuild()
        .await
        .map_err(|e| StartError::Db("rebuild device state", e))?;
    tracing::info!(
        zones = synced.zones,
        subjects = synced.subjects,
        devices = synced.devices,
        replayed_fixes = rebuilt.fixes,
        open_subjects = rebuilt.open_subjects,
        "engine loaded"
    );
    if synced.subjects == 0 && synced.devices == 0 {
        // Loud, not fatal: a new agency starts empty and adds subjects
        // through the API while the service runs.
        tracing::error!(database = %redacted_target(&config.database_url), "{EMPTY_DATABASE}");
    }
    let loaded = Loaded {
        core,
        changes,
        reference,
        fleet: fleet_tx,
        ingest,
    };
    let inputs = alert_service::Inputs {
        observed: observed_rx,
        fleet: fleet_rx,
        fence,
    };
    Ok((loaded, inputs))
}

fn flag(f: Arc<AtomicBool>) -> api::Probe {
    Arc::new(move || f.load(Ordering::Relaxed))
}

fn running(stopped: CancellationToken) -> api::Probe {
    Arc::new(move || !stopped.is_cancelled())
}

/// Runs until SIGTERM or Ctrl-C (or a task fails), then shuts down within
/// 10 s.
pub async fn run(config: &Config, pool: PgPool) -> Result<(), RunError> {
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        signalled.cancel();
    });
    let Some(lease) = crate::standby::take(config, &pool, &stop)
        .await
        .map_err(RunError::Start)?
    else {
        tracing::info!("signal received while standby; stopping");
        return Ok(());
    };
    let svc = start(config, pool, lease, stop.clone())
        .await
        .map_err(RunError::Start)?;
    tracing::info!(http = %svc.http, api = %svc.api, broker = %format!("{}:{}", config.mqtt_host, config.mqtt_port), "emtrack running");
    // A signal, a failed task or the lease lost.
    stop.cancelled().await;
    tracing::info!("stopping");
    let failures = svc.tasks.failures();
    let stopped = tokio::time::timeout(Duration::from_secs(10), svc.stopped()).await;
    let failures = match stopped {
        Ok(failures) => failures,
        Err(_) => {
            tracing::error!(
                "shutdown took longer than 10 s; exiting with messages unacked (the broker redelivers them)"
            );
            failures.snapshot()
        }
    };
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RunError::Failed(failures))
    }
}
