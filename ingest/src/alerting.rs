//! The alert service: the `alerts` core (router, book, silence wheel, GPS
//! watch) driven by what the pipeline committed, persisted in Postgres, and
//! handed to delivery.
//!
//! One task owns the core. Each step:
//! 1. takes what the workers committed ([`Observed`]: transitions, device
//!    events, one report per message), officers' commands, and the clock
//!    (silence wheel, escalation deadlines);
//! 2. writes every alert change, its `alert_events` line and its deliveries
//!    (the outbox) in one transaction, and advances `alert_progress`;
//! 3. only then hands the deliveries to the senders ([`crate::delivery`]) and
//!    the in-process broadcast (for SSE).
//!
//! Restart: unresolved alerts (and those resolved within the replay window)
//! are loaded back with their escalation deadlines; transitions and device
//! events stored since a little before `alert_progress` are read again. The
//! alerts' unique key makes the re-read idempotent: no alert is lost, none is
//! made twice.

use crate::config::AlertConfig;
use crate::delivery::{self, Delivery};
use crate::pipeline::{self, Observed, Shared};
use alerts::{
    Actor, Alert, AlertBook, AlertEvent, AlertId, AlertKey, AlertState, AlertType, BookError,
    Change, DeviceEvent, GpsEvent, GpsWatch, Input, Policy, Raised, Router, Severity, SilenceEvent,
    SilenceWheel, ViolationKind,
};
use geofence::TransitionKind;
use protocol::EventKind;
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The duty desk's topic (last level of escalation, and alerts of subjects
/// with no officer).
pub const DUTY_TOPIC: &str = "em/v1/duty/alerts";

/// An officer's (or supervisor's) alert topic.
pub fn officer_topic(officer: i64) -> String {
    format!("em/v1/officers/{officer}/alerts")
}

/// What an officer asks of an alert.
#[derive(Debug)]
pub enum Command {
    /// Take it (escalation stops).
    Acknowledge {
        /// The alert.
        alert: u64,
        /// Who.
        officer: u64,
        /// Optional note.
        note: Option<String>,
        /// The outcome, once stored.
        reply: Reply,
    },
    /// Close it, with a note.
    Resolve {
        /// The alert.
        alert: u64,
        /// Who.
        officer: u64,
        /// The note (required).
        note: Option<String>,
        /// The outcome, once stored.
        reply: Reply,
    },
}

/// Handles to the running alert service.
#[derive(Clone, Debug)]
pub struct Alerting {
    /// Officers' commands.
    pub commands: mpsc::Sender<Command>,
    /// Every notification's JSON as stored, for SSE subscribers (a receiver
    /// that lags is told how many it missed; the table has them all).
    pub broadcast: broadcast::Sender<Arc<str>>,
    /// Cancelled once the service stopped (its last changes stored, its
    /// lock released).
    pub stopped: CancellationToken,
}

fn transition_kind(s: &str) -> Option<TransitionKind> {
    [
        TransitionKind::ExclusionEntered,
        TransitionKind::ExclusionLeft,
        TransitionKind::InclusionLeft,
        TransitionKind::InclusionReturned,
        TransitionKind::CurfewViolationStarted,
        TransitionKind::CurfewViolationEnded,
        TransitionKind::ProximityEntered,
        TransitionKind::ProximityLeft,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

fn alert_type(s: &str) -> Option<AlertType> {
    AlertType::ALL.into_iter().find(|t| t.as_str() == s)
}

fn severity(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "serious" => Severity::Serious,
        _ => Severity::Info,
    }
}

fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Open => "open",
        AlertState::Acknowledged => "acknowledged",
        AlertState::Resolved => "resolved",
    }
}

fn change_str(c: &Change) -> &'static str {
    match c {
        Change::Raised => "raised",
        Change::Repeated => "repeated",
        Change::Acknowledged => "acknowledged",
        Change::Escalated(_) => "escalated",
        Change::Resolved { .. } => "resolved",
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A subject's chain of recipients: officer, supervisor.
#[derive(Clone, Copy, Debug, Default)]
struct Chain {
    officer: Option<i64>,
    supervisor: Option<i64>,
}

impl Chain {
    /// Who is told at `level`, and as what.
    fn target(&self, level: u8) -> (String, &'static str) {
        match (level, self.officer, self.supervisor) {
            (0, Some(o), _) => (officer_topic(o), "officer"),
            (1, _, Some(s)) => (officer_topic(s), "supervisor"),
            _ => (DUTY_TOPIC.to_owned(), "duty_desk"),
        }
    }
}

/// An active webhook.
#[derive(Clone, Debug)]
struct Hook {
    id: i64,
}

struct Alerter {
    shared: Arc<Shared>,
    cfg: AlertConfig,
    router: Router,
    wheel: SilenceWheel,
    gps: GpsWatch,
    /// Engine device id → subject, for silences.
    subject_of: Vec<u64>,
    watched: FxHashSet<u32>,
    watched_generation: u64,
    /// The registry's generation, read without the core's lock.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The bracelet each alert is about (for notifications).
    devices: FxHashMap<AlertId, String>,
    /// The fix or event that confirmed each live alert (ms): its latency
    /// is measured from here.
    triggers: FxHashMap<AlertId, i64>,
    /// Everything committed up to here is in the book.
    watermark: i64,
    stored_watermark: i64,
    mqtt: mpsc::Sender<Delivery>,
    webhook: mpsc::Sender<Delivery>,
    sweep: Arc<tokio::sync::Notify>,
    broadcast: broadcast::Sender<Arc<str>>,
    open: FxHashMap<AlertId, Severity>,
    replies: Vec<(Reply, Result<(), ActionError>)>,
    /// A change the database refused: `alert_progress` stays where it is, so
    /// that a restart re-reads from before it.
    refused: bool,
    /// Deliveries the senders hold (see [`delivery::Held`]).
    held: delivery::Held,
    /// Holds [`ALERT_LOCK`] while the service runs.
    lock: Option<sqlx::PgConnection>,
}

/// The answer to an officer's action.
pub type Reply = oneshot::Sender<Result<(), ActionError>>;

/// Why an officer's action was not done.
#[derive(Debug)]
pub enum ActionError {
    /// The lifecycle refused it.
    Book(BookError),
    /// The database refused to store it.
    NotStored,
}

/// A delivery to write: alert, version, channel, target, JSON, live trigger time.
type NewDelivery = (i64, i32, &'static str, String, String, Option<i64>);

/// A delivery as written: id, alert, version, channel, target, JSON, live trigger time.
type DeliveryRow = (i64, i64, i32, String, String, String, Option<i64>);

/// A stored transition to re-read: subject, rule, zone, kind, at, historical,
/// confirmed at, the subject's bracelet then.
type StoredTransitionRow = (i64, i64, i64, String, i64, bool, i64, Option<String>);

type AlertRow = (
    i64,
    i64,
    String,
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    bool,
    i32,
    i16,
    Option<i64>,
    Option<String>,
    i32,
    Option<i64>,
);

/// Why the alert service could not start.
#[derive(Debug)]
pub enum AlertStartError {
    /// A database step failed.
    Db(sqlx::Error),
    /// Another emtrack process runs the alert service of this database.
    Locked,
    /// `start` was called twice on one pipeline.
    Twice,
}

impl std::fmt::Display for AlertStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlertStartError::Db(e) => write!(f, "cannot load the alert state: {e}"),
            AlertStartError::Locked => write!(
                f,
                "another emtrack process runs the alerts of this database (advisory lock {ALERT_LOCK} held); run one emtrack per database"
            ),
            AlertStartError::Twice => write!(f, "the alert service was started twice"),
        }
    }
}

impl std::error::Error for AlertStartError {}

impl From<sqlx::Error> for AlertStartError {
    fn from(e: sqlx::Error) -> Self {
        AlertStartError::Db(e)
    }
}

/// The advisory lock that makes one alert service per database (alert ids
/// are assigned by the service).
pub const ALERT_LOCK: i64 = 0x656d_7472_616c_7274;

/// Takes the alert lock on a connection of its own, kept for the life of the
/// service. A predecessor killed a moment ago may still hold it until the
/// server notices its connection is gone: wait up to 15 s.
async fn lock(pool: &PgPool) -> Result<sqlx::PgConnection, AlertStartError> {
    // Detached: dropping it closes the connection, which releases the lock.
    let mut conn = pool.acquire().await?.detach();
    for _ in 0..150 {
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(ALERT_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            return Ok(conn);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AlertStartError::Locked)
}

/// Loads the alert state, re-reads what may not have been processed, and
/// starts the alert service and its senders. Call before the pipeline
/// consumes, so that the re-read sees a settled store.
pub async fn start(
    shared: Arc<Shared>,
    cfg: AlertConfig,
    policy: Policy,
    mqtt: delivery::MqttTarget,
    stop: CancellationToken,
) -> Result<Alerting, AlertStartError> {
    let pool = shared.pool.clone();
    let lock = lock(&pool).await?;
    let (processed_to,): (i64,) = sqlx::query_as(
        "SELECT (extract(epoch FROM processed_to) * 1000)::int8 FROM alert_progress WHERE id = 1",
    )
    .fetch_one(&pool)
    .await?;
    let since = processed_to - i64::from(cfg.replay_s) * 1000;
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT id, subject_id, kind, scope, (extract(epoch FROM episode_at) * 1000)::int8, severity, state, \
                (extract(epoch FROM event_at) * 1000)::int8, (extract(epoch FROM raised_at) * 1000)::int8, \
                historical, repeats, level, (extract(epoch FROM escalate_at) * 1000)::int8, device_id, version, \
                (extract(epoch FROM resolved_at) * 1000)::int8 \
         FROM alerts WHERE state <> 'resolved' OR resolved_at >= 'epoch'::timestamptz + $1 * interval '1 millisecond'",
    )
    .bind(since)
    .fetch_all(&pool)
    .await?;
    let (max_id,): (Option<i64>,) = sqlx::query_as("SELECT max(id) FROM alerts")
        .fetch_one(&pool)
        .await?;
    let mut router = Router::new(AlertBook::new(policy, max_id.unwrap_or(0) as u64));
    let mut devices = FxHashMap::default();
    let mut open = FxHashMap::default();
    for r in rows {
        let Some(kind) = alert_type(&r.2) else {
            continue;
        };
        let a = Alert {
            id: AlertId(r.0 as u64),
            key: AlertKey {
                subject: r.1 as u64,
                kind,
                scope: r.3 as u64,
                episode_ms: r.4,
            },
            severity: severity(&r.5),
            state: match r.6.as_str() {
                "open" => AlertState::Open,
                "acknowledged" => AlertState::Acknowledged,
                _ => AlertState::Resolved,
            },
            event_ms: r.7,
            raised_ms: r.8,
            historical: r.9,
            repeats: r.10.max(0) as u32,
            level: r.11.clamp(0, 2) as u8,
            escalate_at_ms: r.12,
            version: r.14.max(0) as u32,
            resolved_ms: r.15,
        };
        if let Some(d) = r.13 {
            devices.insert(a.id, d);
        }
        if a.state != AlertState::Resolved {
            open.insert(a.id, a.severity);
        }
        router.adopt(&a);
        router.book().restore(a);
    }
    for s in [Severity::Critical, Severity::Serious, Severity::Info] {
        let n = open.values().filter(|v| **v == s).count();
        shared
            .metrics
            .alerts_open
            .with_label_values(&[s.as_str()])
            .set(n as i64);
    }

    let now = now_ms();
    let held: delivery::Held = Arc::default();
    let (mqtt_tx, mqtt_rx) = mpsc::channel(cfg.delivery_queue);
    let (webhook_tx, webhook_rx) = mpsc::channel(cfg.delivery_queue);
    let sweep = Arc::new(tokio::sync::Notify::new());
    let (broadcast_tx, _) = broadcast::channel(4_096);
    let mut alerter = Alerter {
        shared: shared.clone(),
        cfg: cfg.clone(),
        router,
        wheel: SilenceWheel::new(4_096, (now / 1000) as u64),
        gps: GpsWatch::new(cfg.location_failure_after_s),
        subject_of: Vec::new(),
        watched: FxHashSet::default(),
        watched_generation: u64::MAX,
        generation: shared
            .core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .registry
            .generation(),
        devices,
        triggers: FxHashMap::default(),
        watermark: processed_to,
        stored_watermark: processed_to,
        mqtt: mqtt_tx.clone(),
        webhook: webhook_tx.clone(),
        sweep: sweep.clone(),
        broadcast: broadcast_tx.clone(),
        open,
        replies: Vec::new(),
        lock: Some(lock),
        held: held.clone(),
        refused: false,
    };
    alerter.start_watching(&pool).await?;
    let replayed = alerter.replay(&pool, since).await?;
    tracing::info!(
        replayed,
        open = alerter.open.len(),
        "alert state loaded and recent transitions re-read"
    );
    alerter.flush().await;

    let rx = shared
        .observed_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(rx) = rx else {
        return Err(AlertStartError::Twice);
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let senders = delivery::Senders {
        held,
        pool: pool.clone(),
        metrics: shared.metrics.clone(),
        cfg: cfg.clone(),
    };
    tokio::spawn(delivery::mqtt(
        senders.clone(),
        mqtt,
        mqtt_rx,
        sweep.clone(),
        stop.clone(),
    ));
    tokio::spawn(delivery::webhooks(
        senders.clone(),
        webhook_rx,
        stop.clone(),
    ));
    tokio::spawn(delivery::sweeper(
        senders,
        mqtt_tx,
        webhook_tx,
        sweep,
        stop.clone(),
    ));
    let stopped = CancellationToken::new();
    let done = stopped.clone();
    tokio::spawn(async move {
        alerter.run(rx, cmd_rx, stop).await;
        done.cancel();
    });
    Ok(Alerting {
        commands: cmd_tx,
        broadcast: broadcast_tx,
        stopped,
    })
}

impl Alerter {
    /// Watches every assigned bracelet, from its last message (stored).
    /// Watches every assigned bracelet from now: after an outage of emtrack,
    /// a device gets one allowance to be heard (its backlog is still in the
    /// broker) before it counts as silent. Devices with an open
    /// `no_communication` or `location_failure` alert are marked, so that
    /// their next message or fix resolves it.
    async fn start_watching(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let fixes: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT device_id, (extract(epoch FROM coalesce(good_time, head_time)) * 1000)::int8 FROM device_state",
        )
        .fetch_all(pool)
        .await?;
        self.sync_watches();
        let core = self.shared.core.lock().unwrap_or_else(|e| e.into_inner());
        let engine = |d: &str| {
            core.registry
                .get(d)
                .and_then(|r| u32::try_from(r.engine.0).ok())
        };
        for (d, last_fix) in fixes {
            if let (Some(id), Some(f)) = (engine(&d), last_fix) {
                self.gps.start(id, (f / 1000).max(0) as u64);
            }
        }
        // The subject's bracelet now, for alerts stored without a device.
        let mut bracelet: FxHashMap<u64, u32> = FxHashMap::default();
        for (_, d) in core.registry.iter() {
            if let (Some(s), crate::reference::DeviceKind::Bracelet, false) =
                (d.subject, d.kind, d.retired)
                && let Ok(id) = u32::try_from(d.engine.0)
            {
                bracelet.insert(s.0, id);
            }
        }
        for (kind, silence) in [
            (AlertType::NoCommunication, true),
            (AlertType::LocationFailure, false),
        ] {
            for id in self.router.book().ids_of(kind) {
                let Some(a) = self.router.book().get(id) else {
                    continue;
                };
                if a.state == AlertState::Resolved {
                    continue;
                }
                let subject = a.key.subject;
                let dev = self
                    .devices
                    .get(&id)
                    .and_then(|d| engine(d))
                    .or_else(|| bracelet.get(&subject).copied());
                match (dev, silence) {
                    (Some(d), true) => self.wheel.mark_silent(d),
                    (Some(d), false) => self.gps.mark_failing(d),
                    (None, _) => {}
                }
            }
        }
        Ok(())
    }

    /// Follows the registry: newly assigned bracelets are watched from now,
    /// unassigned or retired ones no longer.
    fn sync_watches(&mut self) {
        let now_s = (now_ms() / 1000) as u64;
        let core = self.shared.core.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a change after this read bumps it again.
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if generation == self.watched_generation {
            return;
        }
        self.watched_generation = generation;
        let mut now_watched = FxHashSet::default();
        for (_, d) in core.registry.iter() {
            let Some(subject) = d.subject else { continue };
            if d.retired || d.kind != crate::reference::DeviceKind::Bracelet {
                continue;
            }
            let Ok(id) = u32::try_from(d.engine.0) else {
                continue;
            };
            let allowance = d
                .report_interval_s
                .saturating_add(self.cfg.silence_buffer_s);
            let from = if self.watched.contains(&id) { 0 } else { now_s };
            self.wheel.watch(id, allowance, from);
            if self.subject_of.len() <= id as usize {
                self.subject_of.resize(id as usize + 1, 0);
            }
            self.subject_of[id as usize] = subject.0;
            now_watched.insert(id);
        }
        for id in self.watched.difference(&now_watched) {
            self.wheel.unwatch(*id);
        }
        self.watched = now_watched;
    }

    /// Re-reads transitions and device events stored since `since_ms`.
    async fn replay(&mut self, pool: &PgPool, since_ms: i64) -> Result<usize, sqlx::Error> {
        // The subject's bracelet at the time (rule_transitions does not name it).
        let transitions: Vec<StoredTransitionRow> = sqlx::query_as(
            "SELECT t.subject_id, t.rule_id, t.zone_id, t.kind, (extract(epoch FROM t.at) * 1000)::int8, t.historical, \
                    (extract(epoch FROM t.confirmed_at) * 1000)::int8, \
                    (SELECT a.device_id FROM assignments a JOIN devices d ON d.id = a.device_id AND d.kind = 'bracelet' \
                     WHERE a.subject_id = t.subject_id AND a.valid_from <= t.at \
                       AND (a.valid_to IS NULL OR a.valid_to > t.at) ORDER BY a.valid_from DESC LIMIT 1) \
             FROM rule_transitions t WHERE t.recorded_at >= 'epoch'::timestamptz + $1 * interval '1 millisecond' \
             ORDER BY t.recorded_at, t.at",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await?;
        let events: Vec<(String, i64, String, i64, bool)> = sqlx::query_as(
            "SELECT e.device_id, a.subject_id, e.kind, (extract(epoch FROM e.event_time) * 1000)::int8, e.late \
             FROM device_events e \
             JOIN devices d ON d.id = e.device_id AND d.kind = 'bracelet' \
             JOIN assignments a ON a.device_id = e.device_id AND a.valid_from <= e.event_time \
                  AND (a.valid_to IS NULL OR a.valid_to > e.event_time) \
             WHERE e.received_at >= 'epoch'::timestamptz + $1 * interval '1 millisecond' \
             ORDER BY e.received_at, e.event_time",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await?;
        let n = transitions.len() + events.len();
        let now = now_ms();
        for (subject, rule, zone, kind, at, historical, confirmed, device) in transitions {
            let Some(k) = transition_kind(&kind) else {
                continue;
            };
            let scope = if zone != 0 { zone } else { rule };
            let r = self.router.handle(
                Input::Violation {
                    subject: subject as u64,
                    kind: ViolationKind::of_transition(k),
                    scope: scope as u64,
                    start: k.is_start(),
                    at_ms: at,
                    historical,
                },
                now,
            );
            if let Some(Raised::New(id)) = r {
                if let Some(d) = device {
                    self.devices.insert(id, d);
                }
                self.triggers.insert(id, confirmed);
            }
        }
        for (device, subject, kind, at, late) in events {
            let Some(ev) = DeviceEvent::of(event_kind(&kind)) else {
                continue;
            };
            let r = self.router.handle(
                Input::Event {
                    subject: subject as u64,
                    event: ev,
                    at_ms: at,
                    historical: late,
                },
                now,
            );
            if let Some(Raised::New(id)) = r {
                self.devices.insert(id, device);
                self.triggers.insert(id, at);
            }
        }
        Ok(n)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Observed>,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) {
        let mut buf = Vec::with_capacity(256);
        let mut last_evict = std::time::Instant::now();
        let mut last_lock_check = std::time::Instant::now();
        loop {
            let now = now_ms();
            // Wake at the next second (silence wheel) or escalation deadline.
            let next = self
                .router
                .book()
                .next_deadline()
                .unwrap_or(i64::MAX)
                .min((now / 1000 + 1) * 1000);
            let wait = Duration::from_millis((next - now).clamp(1, 1000) as u64);
            tokio::select! {
                n = rx.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        break;
                    }
                    let now = now_ms();
                    for o in buf.drain(..) {
                        self.apply(o, now);
                    }
                }
                c = commands.recv() => {
                    if let Some(c) = c {
                        self.command(c, now_ms());
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            self.tick(now_ms());
            self.flush().await;
            if last_lock_check.elapsed() > Duration::from_secs(30) {
                last_lock_check = std::time::Instant::now();
                if !self.keep_lock().await {
                    tracing::error!(
                        "the alert service lost its database lock and another emtrack holds it; stopping"
                    );
                    self.shared
                        .failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    stop.cancel();
                    break;
                }
            }
            if last_evict.elapsed() > Duration::from_secs(600) {
                last_evict = std::time::Instant::now();
                let gone = self
                    .router
                    .book()
                    .forget_resolved(now_ms() - 3_600_000 - i64::from(self.cfg.replay_s) * 1000);
                if gone > 0 {
                    let book = self.router.book();
                    self.devices.retain(|id, _| book.get(*id).is_some());
                    self.triggers.retain(|id, _| book.get(*id).is_some());
                }
            }
        }
        // What was received but not stored is re-read after a restart.
        self.flush().await;
        if let Some(c) = self.lock.take() {
            // Closing the connection releases the lock.
            let _ = sqlx::Connection::close(c).await;
        }
    }

    fn apply(&mut self, o: Observed, now: i64) {
        for t in &o.transitions {
            let tr = t.transition;
            let r = self.router.handle(Input::violation(&tr), now);
            if let Some(Raised::New(id)) = r {
                if let Some(d) = &t.device {
                    self.devices.insert(id, d.clone());
                }
                self.triggers.insert(id, tr.confirmed_at.as_millisecond());
            }
        }
        for e in &o.events {
            let Some(ev) = DeviceEvent::of(e.kind) else {
                continue;
            };
            let r = self.router.handle(
                Input::Event {
                    subject: e.subject,
                    event: ev,
                    at_ms: e.at_ms,
                    historical: e.late,
                },
                now,
            );
            if let Some(Raised::New(id)) = r {
                self.devices.insert(id, e.device.clone());
                self.triggers.insert(id, e.at_ms);
            }
        }
        let arrived_s = (o.committed_ms / 1000).max(0) as u64;
        for r in &o.reports {
            if self.subject_of.len() <= r.device as usize {
                self.subject_of.resize(r.device as usize + 1, 0);
            }
            self.subject_of[r.device as usize] = r.subject;
            if let Some(SilenceEvent::BackOnline { .. }) = self.wheel.seen(r.device, arrived_s) {
                self.router
                    .handle(Input::BackOnline { subject: r.subject }, now);
            }
            match self
                .gps
                .report(r.device, (r.time_ms / 1000).max(0) as u64, r.fix, r.motion)
            {
                Some(GpsEvent::Failure {
                    last_fix_s, at_s, ..
                }) => {
                    let raised = self.router.handle(
                        Input::LocationFailure {
                            subject: r.subject,
                            last_fix_ms: last_fix_s as i64 * 1000,
                            at_ms: at_s as i64 * 1000,
                        },
                        now,
                    );
                    self.note_device(raised, r.device);
                }
                Some(GpsEvent::Restored { .. }) => {
                    self.router
                        .handle(Input::LocationRestored { subject: r.subject }, now);
                }
                None => {}
            }
        }
        self.watermark = self.watermark.max(o.committed_ms);
    }

    /// Checks that the lock's connection is alive; if it is gone, takes the
    /// lock again on a new one. False if another process has it.
    async fn keep_lock(&mut self) -> bool {
        if let Some(c) = self.lock.as_mut()
            && sqlx::query("SELECT 1").execute(&mut *c).await.is_ok()
        {
            return true;
        }
        tracing::warn!("the alert lock's connection was lost; taking the lock again");
        match lock(&self.shared.pool).await {
            Ok(c) => {
                self.lock = Some(c);
                true
            }
            Err(AlertStartError::Locked) => false,
            // The database is unreachable: nobody else can take the lock
            // through it either; try again at the next check.
            Err(_) => true,
        }
    }

    /// Remembers the bracelet of a new device-condition alert (silence,
    /// location failure): the notification names it, and a restart marks it.
    fn note_device(&mut self, raised: Option<Raised>, device: u32) {
        if let Some(Raised::New(id)) = raised {
            let core = self.shared.core.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(name) = core.registry.name_of(geofence::DeviceId(u64::from(device))) {
                self.devices.insert(id, name.to_owned());
            }
        }
    }

    fn command(&mut self, c: Command, now: i64) {
        let (reply, result) = match c {
            Command::Acknowledge {
                alert,
                officer,
                note,
                reply,
            } => (
                reply,
                self.router
                    .book()
                    .acknowledge(AlertId(alert), officer, note, now),
            ),
            Command::Resolve {
                alert,
                officer,
                note,
                reply,
            } => (
                reply,
                self.router
                    .book()
                    .resolve(AlertId(alert), officer, note, now),
            ),
        };
        self.replies
            .push((reply, result.map_err(ActionError::Book)));
    }

    fn tick(&mut self, now: i64) {
        // The core's lock only when the devices changed: workers hold it
        // while judging.
        if self.watched_generation != self.generation.load(std::sync::atomic::Ordering::Acquire) {
            self.sync_watches();
        }
        let mut silent = Vec::new();
        self.wheel.poll((now / 1000).max(0) as u64, &mut silent);
        for s in silent {
            if let SilenceEvent::NoCommunication {
                device,
                last_seen_s,
                ..
            } = s
            {
                let Some(&subject) = self.subject_of.get(device as usize) else {
                    continue;
                };
                if subject == 0 {
                    continue;
                }
                let raised = self.router.handle(
                    Input::Silent {
                        subject,
                        last_seen_ms: last_seen_s as i64 * 1000,
                    },
                    now,
                );
                self.note_device(raised, device);
            }
        }
        self.router.book().escalate_due(now);
    }

    /// Stores the book's new events with their deliveries, then sends.
    async fn flush(&mut self) {
        let events = self.router.book().take_events();
        let replies = std::mem::take(&mut self.replies);
        if events.is_empty() {
            // Move the re-read point along now and then even when nothing happens.
            if !self.refused && self.watermark > self.stored_watermark + 10_000 {
                let r = sqlx::query(
                    "UPDATE alert_progress SET processed_to = greatest(processed_to, 'epoch'::timestamptz + $1 * interval '1 millisecond') WHERE id = 1",
                )
                .bind(self.watermark)
                .execute(&self.shared.pool)
                .await;
                if r.is_ok() {
                    self.stored_watermark = self.watermark;
                }
            }
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
            return;
        }
        let mut ids: Vec<AlertId> = events.iter().map(|e| e.alert).collect();
        ids.sort();
        ids.dedup();
        let snapshots: FxHashMap<AlertId, Alert> = ids
            .iter()
            .filter_map(|id| self.router.book().get(*id).cloned().map(|a| (*id, a)))
            .collect();
        let subjects: Vec<i64> = snapshots
            .values()
            .map(|a| a.key.subject as i64)
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        let mut attempt = 0u32;
        let (stored, conflicts) = loop {
            let r = store(self, &events, &snapshots, &subjects).await;
            match r {
                Ok(v) => break v,
                Err(e) if pipeline::transient(&e) => {
                    attempt += 1;
                    self.shared.metrics.alert_store_retries.inc();
                    tracing::warn!(error = %e, attempt, "cannot store alerts; retrying");
                    tokio::time::sleep(Duration::from_millis(
                        (100u64 << attempt.min(6)).min(5_000),
                    ))
                    .await;
                }
                Err(e) => {
                    // Not stored, so not sent. New alerts leave the book (a
                    // later change of theirs would refer to nothing); the
                    // re-read point stays, so a restart raises them again.
                    tracing::error!(error = %e, alerts = ids.len(), "the database refused alert changes; they are not stored and not sent");
                    self.refused = true;
                    let new: Vec<AlertId> = events
                        .iter()
                        .filter(|e| e.what == Change::Raised)
                        .map(|e| e.alert)
                        .collect();
                    for id in &new {
                        self.router.book().forget(*id);
                        self.devices.remove(id);
                        self.triggers.remove(id);
                    }
                    for (reply, result) in replies {
                        let _ = reply.send(result.and(Err(ActionError::NotStored)));
                    }
                    return;
                }
            }
        };
        if !self.refused {
            self.stored_watermark = self.stored_watermark.max(self.watermark);
        }
        for id in &conflicts {
            self.shared.metrics.alert_key_conflicts.inc();
            self.router.book().forget(*id);
            self.devices.remove(id);
            self.triggers.remove(id);
        }
        let m = &self.shared.metrics;
        for e in &events {
            if conflicts.contains(&e.alert) {
                continue;
            }
            let Some(a) = snapshots.get(&e.alert) else {
                continue;
            };
            match e.what {
                Change::Raised => {
                    m.alerts_raised
                        .with_label_values(&[a.key.kind.as_str(), a.severity.as_str()])
                        .inc();
                    self.open.insert(a.id, a.severity);
                }
                Change::Resolved { .. } => {
                    self.open.remove(&a.id);
                }
                Change::Escalated(l) => {
                    m.alert_escalations
                        .with_label_values(&[&l.to_string()])
                        .inc();
                }
                Change::Acknowledged => {
                    if e.who != Actor::System {
                        m.alert_ack_seconds
                            .observe((e.at_ms - a.raised_ms).max(0) as f64 / 1000.0);
                    }
                }
                Change::Repeated => {}
            }
        }
        for s in [Severity::Critical, Severity::Serious, Severity::Info] {
            let n = self.open.values().filter(|v| **v == s).count();
            m.alerts_open.with_label_values(&[s.as_str()]).set(n as i64);
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        let mut spilled: Vec<i64> = Vec::new();
        // One broadcast per change (an MQTT change may go to several topics).
        let mut told: FxHashSet<(i64, i32)> = FxHashSet::default();
        for d in stored {
            if d.channel == "mqtt" && told.insert((d.alert, d.version)) {
                let _ = self
                    .broadcast
                    .send(Arc::from(String::from_utf8_lossy(&d.payload).into_owned()));
            }
            let (q, name) = if d.channel == "mqtt" {
                (&self.mqtt, "mqtt")
            } else {
                (&self.webhook, "webhook")
            };
            let id = d.id;
            delivery::hold(&self.held, id);
            match q.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    delivery::release(&self.held, &[id]);
                    m.delivery_overflow.with_label_values(&[name]).inc();
                    spilled.push(id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    delivery::release(&self.held, &[id]);
                }
            }
        }
        if !spilled.is_empty() {
            // The sweeper sends them as soon as the queue has room.
            let r = sqlx::query(
                "UPDATE alert_deliveries SET next_attempt_at = now() WHERE id = ANY($1) AND state = 'pending'",
            )
            .bind(&spilled)
            .execute(&self.shared.pool)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, n = spilled.len(), "overflowed deliveries wait for their lease to end");
            }
            self.sweep.notify_one();
        }
    }
}

fn event_kind(s: &str) -> EventKind {
    [
        EventKind::StrapOpened,
        EventKind::CaseOpened,
        EventKind::BatteryLow,
        EventKind::BatteryCritical,
        EventKind::ChargerConnected,
        EventKind::ChargerDisconnected,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .unwrap_or(EventKind::MotionStarted)
}

/// A notification's JSON (documented in README, "Alerts").
fn payload(
    a: &Alert,
    e: &AlertEvent,
    device: Option<&str>,
    trigger: Option<i64>,
    chain: &Chain,
    to: &str,
) -> String {
    let (who, note) = match &e.who {
        Actor::System => (None, e.note.clone()),
        Actor::Officer(o) => (Some(*o), e.note.clone()),
    };
    serde_json::json!({
        "alert_id": a.id.0,
        "version": e.version,
        "change": change_str(&e.what),
        "type": a.key.kind.as_str(),
        "severity": a.severity.as_str(),
        "state": state_str(a.state),
        "subject_id": a.key.subject,
        "device_id": device,
        "scope": a.key.scope,
        "episode_time": rfc3339(a.key.episode_ms),
        "event_time": rfc3339(a.event_ms),
        "trigger_time": trigger.map(rfc3339),
        "raised_at": rfc3339(a.raised_ms),
        "changed_at": rfc3339(e.at_ms),
        "historical": a.historical,
        "level": a.level,
        "officer_id": chain.officer,
        "recipient": to,
        "by_officer_id": who,
        "note": note,
    })
    .to_string()
}

type Stored = (Vec<Delivery>, Vec<AlertId>);

async fn store(
    al: &Alerter,
    events: &[AlertEvent],
    snapshots: &FxHashMap<AlertId, Alert>,
    subjects: &[i64],
) -> Result<Stored, sqlx::Error> {
    let pool = &al.shared.pool;
    let chains: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.id, s.officer_id, o.supervisor_id FROM subjects s LEFT JOIN officers o ON o.id = s.officer_id \
         WHERE s.id = ANY($1)",
    )
    .bind(subjects)
    .fetch_all(pool)
    .await?;
    let chains: FxHashMap<u64, Chain> = chains
        .into_iter()
        .map(|(s, officer, supervisor)| {
            (
                s as u64,
                Chain {
                    officer,
                    supervisor,
                },
            )
        })
        .collect();
    let hooks: Vec<(i64,)> = sqlx::query_as("SELECT id FROM webhooks WHERE active ORDER BY id")
        .fetch_all(pool)
        .await?;
    let hooks: Vec<Hook> = hooks.into_iter().map(|(id,)| Hook { id }).collect();

    let mut tx = pool.begin().await?;
    // New alerts first, on their own: one whose key the store already has
    // (under another id) is a conflict, and the stored one stands.
    let new: Vec<&Alert> = events
        .iter()
        .filter(|e| e.what == Change::Raised)
        .filter_map(|e| snapshots.get(&e.alert))
        .collect();
    let mut conflicts: Vec<AlertId> = Vec::new();
    if !new.is_empty() {
        let ids: Vec<i64> = new.iter().map(|a| a.id.0 as i64).collect();
        let inserted: Vec<(i64,)> = sqlx::query_as(
            "INSERT INTO alerts (id, subject_id, kind, scope, episode_at, severity, state, event_at, raised_at, historical, device_id, version) \
             SELECT id, subject_id, kind, scope, 'epoch'::timestamptz + episode * interval '1 millisecond', severity, 'open', \
                    'epoch'::timestamptz + ev * interval '1 millisecond', 'epoch'::timestamptz + raised * interval '1 millisecond', \
                    historical, device, 1 \
             FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::int8[], $8::int8[], $9::bool[], $10::text[]) \
                  AS u(id, subject_id, kind, scope, episode, severity, ev, raised, historical, device) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&ids)
        .bind(new.iter().map(|a| a.key.subject as i64).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.key.kind.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.key.scope as i64).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.key.episode_ms).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.severity.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.event_ms).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.raised_ms).collect::<Vec<_>>())
        .bind(new.iter().map(|a| a.historical).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|a| al.devices.get(&a.id).cloned())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        let got: FxHashSet<i64> = inserted.into_iter().map(|r| r.0).collect();
        let missing: Vec<i64> = ids.iter().copied().filter(|i| !got.contains(i)).collect();
        if !missing.is_empty() {
            // Ours already (an earlier attempt committed after all), or a conflict.
            let keys: Vec<AlertKey> = missing
                .iter()
                .filter_map(|i| snapshots.get(&AlertId(*i as u64)).map(|a| a.key))
                .collect();
            let ours: Vec<(i64,)> = sqlx::query_as(
                "SELECT a.id FROM alerts a JOIN UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[]) \
                     AS u(id, subject_id, kind, scope, episode) \
                 ON a.id = u.id AND a.subject_id = u.subject_id AND a.kind = u.kind AND a.scope = u.scope \
                    AND a.episode_at = 'epoch'::timestamptz + u.episode * interval '1 millisecond'",
            )
            .bind(&missing)
            .bind(keys.iter().map(|k| k.subject as i64).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.scope as i64).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.episode_ms).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
            let ours: FxHashSet<i64> = ours.into_iter().map(|r| r.0).collect();
            conflicts = missing
                .into_iter()
                .filter(|i| !ours.contains(i))
                .map(|i| AlertId(i as u64))
                .collect();
        }
    }
    let keep: Vec<&Alert> = snapshots
        .values()
        .filter(|a| !conflicts.contains(&a.id))
        .collect();
    sqlx::query(
        "UPDATE alerts a SET state = u.state, repeats = u.repeats, level = u.level, \
             escalate_at = CASE WHEN u.escalate IS NULL THEN NULL ELSE 'epoch'::timestamptz + u.escalate * interval '1 millisecond' END, \
             resolved_at = CASE WHEN u.resolved IS NULL THEN NULL ELSE 'epoch'::timestamptz + u.resolved * interval '1 millisecond' END, \
             version = greatest(a.version, u.version), updated_at = now() \
         FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int2[], $5::int8[], $6::int8[], $7::int4[]) \
              AS u(id, state, repeats, level, escalate, resolved, version) \
         WHERE a.id = u.id",
    )
    .bind(keep.iter().map(|a| a.id.0 as i64).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| state_str(a.state)).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| a.repeats as i32).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| i16::from(a.level)).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| a.escalate_at_ms).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| a.resolved_ms).collect::<Vec<_>>())
    .bind(keep.iter().map(|a| a.version as i32).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    let evs: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| !conflicts.contains(&e.alert))
        .collect();
    sqlx::query(
        "INSERT INTO alert_events (alert_id, version, at, officer_id, change, level, automatic, note) \
         SELECT id, version, 'epoch'::timestamptz + at * interval '1 millisecond', officer, change, level, automatic, note \
         FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::int8[], $5::text[], $6::int2[], $7::bool[], $8::text[]) \
              AS u(id, version, at, officer, change, level, automatic, note) \
         ON CONFLICT (alert_id, version) DO NOTHING",
    )
    .bind(evs.iter().map(|e| e.alert.0 as i64).collect::<Vec<_>>())
    .bind(evs.iter().map(|e| e.version as i32).collect::<Vec<_>>())
    .bind(evs.iter().map(|e| e.at_ms).collect::<Vec<_>>())
    .bind(
        evs.iter()
            .map(|e| match e.who {
                Actor::System => None,
                Actor::Officer(o) => Some(o as i64),
            })
            .collect::<Vec<_>>(),
    )
    .bind(evs.iter().map(|e| change_str(&e.what)).collect::<Vec<_>>())
    .bind(
        evs.iter()
            .map(|e| match e.what {
                Change::Escalated(l) => Some(i16::from(l)),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        evs.iter()
            .map(|e| match e.what {
                Change::Resolved { automatic } => Some(automatic),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(evs.iter().map(|e| e.note.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    // Deliveries: MQTT to whoever the change concerns, webhooks for every change.
    let mut out: Vec<NewDelivery> = Vec::new();
    for e in &evs {
        let Some(a) = snapshots.get(&e.alert) else {
            continue;
        };
        if e.what == Change::Repeated {
            continue;
        }
        let chain = chains.get(&a.key.subject).copied().unwrap_or_default();
        let device = al.devices.get(&a.id).map(String::as_str);
        let trigger = al.triggers.get(&a.id).copied();
        let live = (!a.historical).then(|| trigger.unwrap_or(a.event_ms));
        let levels: Vec<u8> = match e.what {
            Change::Raised => vec![0],
            Change::Escalated(l) => vec![l],
            _ => (0..=a.level).collect(),
        };
        let mut topics: Vec<(String, &'static str)> = Vec::new();
        for l in levels {
            let t = chain.target(l);
            if !topics.iter().any(|x| x.0 == t.0) {
                topics.push(t);
            }
        }
        let live_for_raise = if e.what == Change::Raised { live } else { None };
        for (topic, to) in topics {
            out.push((
                a.id.0 as i64,
                e.version as i32,
                "mqtt",
                topic,
                payload(a, e, device, trigger, &chain, to),
                live_for_raise,
            ));
        }
        let (_, to) = chain.target(a.level);
        for h in &hooks {
            out.push((
                a.id.0 as i64,
                e.version as i32,
                "webhook",
                h.id.to_string(),
                payload(a, e, device, trigger, &chain, to),
                live_for_raise,
            ));
        }
    }
    let mut delivered: Vec<Delivery> = Vec::new();
    if !out.is_empty() {
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "INSERT INTO alert_deliveries (alert_id, version, channel, target, payload, next_attempt_at, live_event_at) \
             SELECT id, version, channel, target, payload, now() + $7 * interval '1 second', \
                    CASE WHEN live IS NULL THEN NULL ELSE 'epoch'::timestamptz + live * interval '1 millisecond' END \
             FROM UNNEST($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
                  AS u(id, version, channel, target, payload, live) \
             ON CONFLICT (alert_id, version, channel, target) DO NOTHING \
             RETURNING id, alert_id, version, channel, target, payload, \
                       (extract(epoch FROM live_event_at) * 1000)::int8",
        )
        .bind(out.iter().map(|d| d.0).collect::<Vec<_>>())
        .bind(out.iter().map(|d| d.1).collect::<Vec<_>>())
        .bind(out.iter().map(|d| d.2).collect::<Vec<_>>())
        .bind(out.iter().map(|d| d.3.clone()).collect::<Vec<_>>())
        .bind(out.iter().map(|d| d.4.clone()).collect::<Vec<_>>())
        .bind(out.iter().map(|d| d.5).collect::<Vec<_>>())
        .bind(i64::from(al.cfg.delivery_lease_s))
        .fetch_all(&mut *tx)
        .await?;
        delivered = rows
            .into_iter()
            .map(
                |(id, alert, version, channel, target, payload, live)| Delivery {
                    id,
                    alert,
                    version,
                    channel,
                    target,
                    payload: bytes::Bytes::from(payload),
                    attempts: 0,
                    live_event_ms: live,
                },
            )
            .collect();
    }
    if !al.refused {
        sqlx::query(
            "UPDATE alert_progress SET processed_to = greatest(processed_to, 'epoch'::timestamptz + $1 * interval '1 millisecond') WHERE id = 1",
        )
        .bind(al.watermark)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((delivered, conflicts))
}
