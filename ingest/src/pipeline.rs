//! The hot path: MQTT consume → validate → evaluate → durable store → ack.
//!
//! # Flow
//! - The **poll task** (`Consumer`) owns the rumqttc event loop. It puts each
//!   publish on the bounded queue of the worker that owns its device (FNV hash
//!   of the device id), at most `max_in_flight` messages across the workers.
//!   Beyond that it keeps a backlog, and stops reading the socket once the
//!   backlog is full too (unless acks wait to be written): TCP backpressure
//!   then reaches the broker, whose in-flight window stops it.
//! - Each **worker** owns a shard of devices, so one device's messages are
//!   handled in arrival order. It closes a batch on `max_batch` messages or a
//!   `linger` that starts at the batch's first message, then:
//!   1. decodes every payload (`protocol::decode`) and checks the device
//!      (unknown, retired, unassigned) and the clock (`future_timestamp`);
//!   2. drops fixes whose (device, fix time) is already stored: a fix newer
//!      than the device's newest stored fix cannot be, older ones are looked
//!      up in one query;
//!   3. flags implausible jumps (speed over `max_speed_kmh` from the last
//!      good fix) as `suspect`: stored, never judged;
//!   4. judges the fixes with the engine (one lock per batch), calling
//!      `close_late_run` after each message that carried late fixes;
//!   5. writes fixes, events, device state, rule transitions and refused
//!      messages in **one transaction** (`UNNEST … ON CONFLICT DO NOTHING`),
//!      retrying while the error is transient (connection lost, server
//!      restarting); a batch the database refuses outright is kept raw in
//!      `rejected_messages` as `storage_failed`;
//!   6. only then hands the batch back to the poll task, which acks it, and
//!      publishes the transitions on the in-process channel.
//!
//! A refused message is stored in `rejected_messages` and acked like any
//! other: redelivering it would only loop.
//!
//! # Acks
//! rumqttc's request channel is drained only while the event loop is polled,
//! so only the poll task puts acks on it (`try_ack`, keeping the rest for its
//! next turn). A worker never waits on that channel, and the poll task never
//! waits on a worker: neither can stall the other.

use crate::metrics::Metrics;
use crate::reference::{Core, DeviceKind};
use geofence::{Outcome, Position, SubjectId, Transition};
use jiff::Timestamp;
use protocol::{Body, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Tuning of the pipeline (from [`crate::config::Config`]).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Broker host.
    pub mqtt_host: String,
    /// Broker port.
    pub mqtt_port: u16,
    /// Stable client id: the broker keeps the session (subscriptions and
    /// unacked messages) across restarts.
    pub client_id: String,
    /// Worker tasks (device shards).
    pub workers: usize,
    /// Messages received and not yet acked, at most.
    pub max_in_flight: usize,
    /// Messages per batch, at most.
    pub max_batch: usize,
    /// How long a batch waits for more messages after its first.
    pub linger: Duration,
    /// Fixes and events dated further ahead than this are refused.
    pub future_skew: Duration,
    /// Records older than this are refused (`timestamp_too_old`): their
    /// day's partition is past retention, or about to be dropped.
    pub max_age: Duration,
    /// Above this speed from the last good fix, a fix is suspect.
    pub max_speed_kmh: f64,
}

/// A transition as stored, for the alerts consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTransition {
    /// The engine's transition.
    pub transition: Transition,
    /// The subject's device whose fix caused it (`None` when a reference
    /// change closed the episode).
    pub device: Option<String>,
    /// The other party's device (proximity rules).
    pub other_device: Option<String>,
}

/// One report of a device, for silence and location-failure detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The engine's id of the bracelet.
    pub device: u32,
    /// Its subject.
    pub subject: u64,
    /// Newest record time in the message (device clock, ms).
    pub time_ms: i64,
    /// The message carried a position.
    pub fix: bool,
    /// A heartbeat showed motion.
    pub motion: bool,
}

/// A device event of a subject's bracelet, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    /// The subject.
    pub subject: u64,
    /// The bracelet.
    pub device: String,
    /// What.
    pub kind: protocol::EventKind,
    /// Event time (ms).
    pub at_ms: i64,
    /// Older than an event already stored for the device (store-and-forward).
    pub late: bool,
}

/// What one commit stored that the alert service needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Wall clock just after the commit (ms).
    pub committed_ms: i64,
    /// Rule transitions.
    pub transitions: Vec<StoredTransition>,
    /// Device events of bracelets with a subject.
    pub events: Vec<ObservedEvent>,
    /// One per accepted message of a bracelet with a subject.
    pub reports: Vec<Report>,
}

/// What the pipeline's tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub pool: PgPool,
    /// Engine and registry.
    pub core: Arc<Mutex<Core>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Tuning.
    pub cfg: PipelineConfig,
    /// What each commit stored that alerts care about, for the alert
    /// service. Bounded: a slow alert service holds the workers back (the
    /// broker queues) rather than lose an alert.
    pub observed: mpsc::Sender<Observed>,
    /// The receiving end, until the alert service takes it.
    pub observed_rx: Mutex<Option<mpsc::Receiver<Observed>>>,
    /// Connected to the broker and subscribed.
    pub mqtt_ready: AtomicBool,
    /// A worker died: the service stops and exits non-zero.
    pub failed: AtomicBool,
    /// UTC days (days since 1970-01-01) whose partitions are known to exist.
    partitions: Mutex<FxHashSet<i32>>,
}

impl Shared {
    /// Shared state for a pipeline.
    pub fn new(
        pool: PgPool,
        core: Arc<Mutex<Core>>,
        metrics: Metrics,
        cfg: PipelineConfig,
    ) -> Shared {
        let (tx, rx) = mpsc::channel(4_096);
        Shared {
            pool,
            core,
            metrics,
            cfg,
            observed: tx,
            observed_rx: Mutex::new(Some(rx)),
            mqtt_ready: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            partitions: Mutex::new(FxHashSet::default()),
        }
    }
}

/// What a worker remembers of a device.
#[derive(Clone, Copy, Debug)]
struct DevState {
    /// Newest stored fix time (ms), `i64::MIN` if none.
    head: i64,
    /// Last good fix: reference of the jump check.
    good: Option<(Position, i64)>,
    /// Newest event time seen (ms): an older event is `late`.
    event_head: i64,
    /// Last heard from (monotonic).
    seen: Option<Instant>,
    /// Backlog announced by the last heartbeat.
    pending: Option<u16>,
}

impl Default for DevState {
    /// A device with nothing stored yet.
    fn default() -> Self {
        DevState {
            head: i64::MIN,
            good: None,
            event_head: i64::MIN,
            seen: None,
            pending: None,
        }
    }
}

fn shard_of(topic: &str, workers: usize) -> usize {
    let device = match Topic::parse(topic) {
        Ok(t) => t.device().as_str().to_owned(),
        Err(_) => topic.to_owned(),
    };
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// Largest MQTT packet taken from the broker (4 MiB).
pub const MAX_PACKET_BYTES: usize = 4 << 20;

/// The MQTT options the service uses.
pub fn mqtt_options(cfg: &PipelineConfig) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.mqtt_host.clone(), cfg.mqtt_port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(false);
    o.set_manual_acks(true);
    // Far above what the protocol accepts: an oversized payload must reach the
    // decoder and be refused (`payload_too_large`). A packet over rumqttc's
    // limit would drop the connection, and the broker would redeliver it
    // forever. Keep the broker's `max_packet_size` below this.
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_request_channel_capacity(cfg.max_in_flight * 2 + 64);
    o
}

/// Runs the pipeline until `stop` fires, then drains: stops taking messages,
/// lets the workers commit what they hold, flushes their acks, and
/// disconnects. Returns when done.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let cfg = shared.cfg.clone();
    let (client, eventloop) = AsyncClient::new(mqtt_options(&cfg), cfg.max_in_flight * 2 + 64);
    let workers = cfg.workers.max(1);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Vec<Publish>>();
    let mut txs = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel::<Publish>(cfg.max_in_flight.max(1));
        txs.push(tx);
        handles.push(tokio::spawn(worker(rx, shared.clone(), done_tx.clone())));
    }
    drop(done_tx);
    let consumer = Consumer {
        shared: shared.clone(),
        client,
        txs: Some(txs),
        backlog: VecDeque::new(),
        acks: VecDeque::new(),
        in_workers: 0,
        in_channel: 0,
    };
    // A worker that ends before shutdown (a panic) would leave its messages
    // held and the consumer stalled: stop the service instead, so that a
    // supervisor restarts it and the broker redelivers.
    let mut workers = tokio::task::JoinSet::new();
    for h in handles {
        workers.spawn(h);
    }
    let watch_stop = stop.clone();
    let watch_shared = shared.clone();
    let watcher = tokio::spawn(async move {
        while let Some(r) = workers.join_next().await {
            let failed = !matches!(r, Ok(Ok(())));
            if failed || !watch_stop.is_cancelled() {
                tracing::error!(
                    "a worker stopped unexpectedly; shutting down so that the broker redelivers"
                );
                watch_shared.failed.store(true, Ordering::Relaxed);
                watch_stop.cancel();
            }
        }
    });
    consumer.run(eventloop, done_rx, stop).await;
    let _ = watcher.await;
}

/// The poll task's state. It alone drives the event loop, so it alone hands
/// acks to rumqttc (whose request channel only the event loop drains): a
/// worker never waits on that channel, and the task never waits on a worker.
struct Consumer {
    shared: Arc<Shared>,
    client: AsyncClient,
    /// Worker queues; `None` once draining.
    txs: Option<Vec<mpsc::Sender<Publish>>>,
    /// Received, not yet given to a worker (workers hold `max_in_flight`).
    backlog: VecDeque<Publish>,
    /// Committed, ack not yet queued in rumqttc's request channel.
    acks: VecDeque<Publish>,
    /// Given to workers, not yet committed.
    in_workers: usize,
    /// Acks queued in the request channel, not yet written to the socket.
    in_channel: usize,
}

impl Consumer {
    fn depth(&self) -> i64 {
        (self.backlog.len() + self.in_workers + self.acks.len() + self.in_channel) as i64
    }

    async fn run(
        mut self,
        mut eventloop: EventLoop,
        mut done_rx: mpsc::UnboundedReceiver<Vec<Publish>>,
        stop: CancellationToken,
    ) {
        let max = self.shared.cfg.max_in_flight.max(1);
        let mut connected_once = false;
        let mut subscribe_pending = false;
        let mut backoff = Duration::from_millis(100);
        let mut jitter = self.shared.cfg.client_id.len() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut workers_done = false;
        loop {
            // Queue what acks fit; the event loop writes them out as it is polled.
            while let Some(p) = self.acks.front() {
                if self.client.try_ack(p).is_err() {
                    break;
                }
                // QoS 0 needs no ack: nothing goes on the channel.
                if p.qos != QoS::AtMostOnce {
                    self.in_channel += 1;
                }
                self.acks.pop_front();
                self.shared.metrics.messages_acked.inc();
            }
            // Give workers what they can take.
            if let Some(txs) = &self.txs {
                while self.in_workers < max {
                    let Some(p) = self.backlog.pop_front() else {
                        break;
                    };
                    let shard = shard_of(&p.topic, txs.len());
                    // Never full: a queue holds max_in_flight.
                    if txs[shard].try_send(p).is_err() {
                        tracing::error!("worker {shard} has stopped");
                    } else {
                        self.in_workers += 1;
                    }
                }
            }
            self.shared.metrics.queue_depth.set(self.depth());
            if stop.is_cancelled() && self.txs.is_some() {
                tracing::info!("shutting down: the workers commit what they hold");
                // Not acked, so the broker redelivers them to the next session.
                self.backlog.clear();
                self.txs = None;
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_millis(9_500));
            }
            if let Some(deadline) = drain_deadline {
                let flushed = workers_done && self.acks.is_empty() && self.in_channel == 0;
                if flushed || tokio::time::Instant::now() >= deadline {
                    if !flushed {
                        tracing::warn!(
                            unacked = self.depth(),
                            "shutdown deadline: leaving messages unacked (the broker redelivers them)"
                        );
                    }
                    let _ = self.client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(300), async {
                        loop {
                            match eventloop.poll().await {
                                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => {
                                    break;
                                }
                                Ok(_) => {}
                            }
                        }
                    })
                    .await;
                    self.shared.metrics.mqtt_connected.set(0);
                    self.shared.mqtt_ready.store(false, Ordering::Relaxed);
                    return;
                }
            }
            // The subscription of the last ConnAck, until the request
            // channel (full of acks after a reconnect) takes it.
            if subscribe_pending {
                let topics = protocol::SUBSCRIPTIONS
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new((*t).to_owned(), QoS::AtLeastOnce));
                subscribe_pending = self.client.try_subscribe_many(topics).is_err();
            }
            // Stop reading the socket when the backlog is full and no ack is
            // waiting to go out: TCP backpressure then reaches the broker.
            let read = self.backlog.len() < max || self.in_channel > 0 || !self.acks.is_empty();
            let event = tokio::select! {
                e = eventloop.poll(), if read => e,
                d = done_rx.recv(), if !workers_done => {
                    match d {
                        Some(batch) => {
                            self.in_workers -= batch.len();
                            self.acks.extend(batch);
                        }
                        None => workers_done = true,
                    }
                    continue;
                }
                _ = stop.cancelled(), if self.txs.is_some() => continue,
                _ = tokio::time::sleep(Duration::from_millis(50)), if drain_deadline.is_some() => continue,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.shared.metrics.messages_received.inc();
                    if self.txs.is_some() {
                        self.backlog.push_back(p);
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(_))) => {
                    self.in_channel = self.in_channel.saturating_sub(1);
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if connected_once {
                        self.shared.metrics.mqtt_reconnects.inc();
                    }
                    connected_once = true;
                    backoff = Duration::from_millis(100);
                    self.shared.metrics.mqtt_connected.set(1);
                    tracing::info!(
                        session_present = ack.session_present,
                        "connected to the broker"
                    );
                    // Queued at the top of the loop, retried until the request
                    // channel has room.
                    subscribe_pending = true;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    self.shared.mqtt_ready.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    // rumqttc drops the acks still in its channel: the broker
                    // redelivers those messages, and storage is idempotent.
                    self.in_channel = 0;
                    self.shared.metrics.mqtt_connected.set(0);
                    self.shared.mqtt_ready.store(false, Ordering::Relaxed);
                    if drain_deadline.is_some() {
                        // Nothing more can be acked on this connection.
                        self.acks.clear();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    // Capped exponential backoff with jitter (xorshift).
                    jitter ^= jitter << 13;
                    jitter ^= jitter >> 7;
                    jitter ^= jitter << 17;
                    let wait = backoff.mul_f64(0.5 + (jitter % 1000) as f64 / 1000.0);
                    if connected_once {
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker connection lost");
                    } else {
                        tracing::warn!(
                            error = %e,
                            host = %self.shared.cfg.mqtt_host,
                            port = self.shared.cfg.mqtt_port,
                            retry_in_ms = wait.as_millis() as u64,
                            "cannot reach the MQTT broker (is mosquitto running? check mqtt_host / mqtt_port)"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// A decoded, checked message.
struct Checked {
    device: String,
    dev: crate::reference::DeviceRef,
    body: Body,
    /// Its newest record time (ms).
    newest_ms: i64,
}

/// A fix row to store.
struct FixRow {
    /// Index into `Rows::names`.
    dev: u32,
    /// Arrival order within the commit: message index * 2048 + fix index.
    seq: i32,
    time_ms: i64,
    fix: protocol::Fix,
    suspect: bool,
}

/// Everything one batch writes.
#[derive(Default)]
struct Rows {
    fixes: Vec<FixRow>,
    /// The batch's distinct devices; rows refer to them by index.
    names: Vec<String>,
    events: Vec<(u32, protocol::Event, bool)>,
    /// Topic, reason, detail, payload, and whether the broker marked it a
    /// redelivery (DUP).
    rejected: Vec<(String, &'static str, String, Vec<u8>, bool)>,
    transitions: Vec<StoredTransition>,
    alert_events: Vec<ObservedEvent>,
    reports: Vec<Report>,
    states: Vec<(u32, DevState)>,
    live_fix_ms: Vec<i64>,
    heartbeats: u64,
}

async fn worker(
    mut rx: mpsc::Receiver<Publish>,
    shared: Arc<Shared>,
    done: mpsc::UnboundedSender<Vec<Publish>>,
) {
    let mut states: FxHashMap<String, DevState> = FxHashMap::default();
    let mut last_census = Instant::now();
    // This worker's share of the devices-seen gauge.
    let mut counted = 0i64;
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + shared.cfg.linger;
        while batch.len() < shared.cfg.max_batch {
            match rx.try_recv() {
                Ok(m) => {
                    batch.push(m);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => batch.push(m),
                Ok(None) | Err(_) => break,
            }
        }
        process(&shared, &mut states, &batch).await;
        // Committed: the poll task acks them.
        if done.send(batch).is_err() {
            break;
        }
        if last_census.elapsed() > Duration::from_secs(10) {
            last_census = Instant::now();
            let n = census(&states);
            shared.metrics.devices_seen_5m.add(n - counted);
            counted = n;
        }
    }
    shared.metrics.devices_seen_5m.sub(counted);
}

/// Devices of this worker heard from in the last 5 minutes.
fn census(states: &FxHashMap<String, DevState>) -> i64 {
    states
        .values()
        .filter(|s| {
            s.seen
                .is_some_and(|t| t.elapsed() < Duration::from_secs(300))
        })
        .count() as i64
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

async fn process(shared: &Shared, states: &mut FxHashMap<String, DevState>, batch: &[Publish]) {
    let m = &shared.metrics;
    let cfg = &shared.cfg;
    let mut rows = Rows::default();

    // 1. Decode (no lock).
    let mut decoded = Vec::with_capacity(batch.len());
    for p in batch {
        match protocol::decode(&p.topic, &p.payload) {
            Ok(msg) => decoded.push(Some(msg)),
            Err(e) => {
                rows.rejected.push((
                    p.topic.clone(),
                    e.reason(),
                    e.to_string(),
                    p.payload.to_vec(),
                    p.dup,
                ));
                decoded.push(None);
            }
        }
    }

    // 2. Device checks (registry read under the lock, briefly).
    let now = now_ms();
    let skew_ms = cfg.future_skew.as_millis() as i64;
    let mut checked: Vec<Checked> = Vec::with_capacity(batch.len());
    {
        let core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
        for (p, msg) in batch.iter().zip(decoded) {
            let Some(msg) = msg else { continue };
            let device = msg.uplink.device.as_str();
            let reject = |reason: &'static str, detail: String| {
                (p.topic.clone(), reason, detail, p.payload.to_vec(), p.dup)
            };
            let Some(dev) = core.registry.get(device) else {
                rows.rejected.push(reject(
                    "unknown_device",
                    format!("{device} is not in the devices table"),
                ));
                continue;
            };
            if dev.retired {
                rows.rejected
                    .push(reject("device_retired", format!("{device} is retired")));
                continue;
            }
            let assigned = match dev.kind {
                DeviceKind::Bracelet => dev.subject.is_some(),
                DeviceKind::VictimPhone => dev.protects,
            };
            if !assigned {
                rows.rejected.push(reject(
                    "device_unassigned",
                    format!("{device} has no current assignment"),
                ));
                continue;
            }
            let oldest = match &msg.uplink.body {
                Body::Fixes(v) => v.iter().map(|f| f.time.as_millisecond()).min(),
                Body::Events(v) => v.iter().map(|e| e.time.as_millisecond()).min(),
                Body::Heartbeats(v) => v.iter().map(|h| h.time.as_millisecond()).min(),
            };
            let max_age_ms = i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX);
            if let Some(t) = oldest
                && t < now.saturating_sub(max_age_ms)
            {
                rows.rejected.push(reject(
                    "timestamp_too_old",
                    format!(
                        "a record is dated {} days ago, beyond the retention period",
                        (now - t) / DAY_MS
                    ),
                ));
                continue;
            }
            let newest = match &msg.uplink.body {
                Body::Fixes(v) => v.iter().map(|f| f.time.as_millisecond()).max(),
                Body::Events(v) => v.iter().map(|e| e.time.as_millisecond()).max(),
                Body::Heartbeats(v) => v.iter().map(|h| h.time.as_millisecond()).max(),
            };
            if let Some(t) = newest
                && t > now + skew_ms
            {
                rows.rejected.push(reject(
                    "future_timestamp",
                    format!(
                        "a record is dated {} s ahead of the server clock (limit {} s)",
                        (t - now) / 1000,
                        skew_ms / 1000
                    ),
                ));
                continue;
            }
            checked.push(Checked {
                device: device.to_owned(),
                dev: dev.clone(),
                body: msg.uplink.body,
                newest_ms: newest.unwrap_or(0),
            });
        }
    }

    // Device state of devices this worker has not seen yet in this process.
    let unseen: Vec<String> = checked
        .iter()
        .filter(|c| !states.contains_key(&c.device))
        .map(|c| c.device.clone())
        .collect::<FxHashSet<_>>()
        .into_iter()
        .collect();
    if !unseen.is_empty() {
        let loaded = retry(shared, "load device state", || {
            load_states(&shared.pool, &unseen)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot load device state; starting these devices afresh");
            FxHashMap::default()
        });
        for d in unseen {
            let s = loaded.get(&d).copied().unwrap_or_default();
            states.insert(d, s);
        }
    }

    // 3. Duplicates: fixes not newer than the device's head may be stored already.
    let mut maybe: Vec<(String, i64)> = Vec::new();
    {
        let mut heads: FxHashMap<&str, i64> = FxHashMap::default();
        for c in &checked {
            if let Body::Fixes(fixes) = &c.body {
                let head = heads
                    .entry(c.device.as_str())
                    .or_insert_with(|| states.get(&c.device).map_or(i64::MIN, |s| s.head));
                for f in fixes {
                    let t = f.time.as_millisecond();
                    if t > *head {
                        *head = t;
                    } else {
                        maybe.push((c.device.clone(), t));
                    }
                }
            }
        }
    }
    let stored: FxHashSet<(String, i64)> = if maybe.is_empty() {
        FxHashSet::default()
    } else {
        retry(shared, "look up duplicates", || {
            stored_among(&shared.pool, &maybe)
        })
        .await
        .unwrap_or_else(|e| {
            // Storage still refuses duplicate rows; only the judging may see them.
            tracing::error!(error = %e, "cannot look up duplicates");
            FxHashSet::default()
        })
    };

    // 4. Build rows, flag jumps, judge.
    let max_speed = cfg.max_speed_kmh / 3.6;
    // Fixes accepted in this batch, by (device index, time).
    let mut in_batch: FxHashSet<(u32, i64)> = FxHashSet::default();
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    let mut judge: Vec<(usize, SubjectId, bool, usize)> = Vec::new(); // (checked idx, subject, phone, first row)
    let mut duplicates = 0u64;
    let now_instant = Instant::now();
    for (ci, c) in checked.iter().enumerate() {
        let dev = *index.entry(c.device.as_str()).or_insert_with(|| {
            rows.names.push(c.device.clone());
            (rows.names.len() - 1) as u32
        });
        if !states.contains_key(&c.device) {
            states.insert(c.device.clone(), DevState::default());
        }
        let Some(st) = states.get_mut(&c.device) else {
            continue;
        };
        st.seen = Some(now_instant);
        match &c.body {
            Body::Fixes(fixes) => {
                let first_row = rows.fixes.len();
                for (k, f) in fixes.iter().enumerate() {
                    let t = f.time.as_millisecond();
                    let already = !stored.is_empty() && stored.contains(&(c.device.clone(), t));
                    if already || !in_batch.insert((dev, t)) {
                        duplicates += 1;
                        continue;
                    }
                    // protocol bounds coordinates, so `pos` is always Some; a
                    // fix without one would be stored but never judged.
                    let pos = Position::new(f.lon(), f.lat()).ok();
                    let jump = match (st.good, pos) {
                        (Some((p, gt)), Some(pos)) => {
                            let dt = (t - gt).abs().max(1) as f64 / 1000.0;
                            p.distance_m(pos) / dt > max_speed
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
                let subject = c.dev.subject.unwrap_or(SubjectId(0));
                judge.push((
                    ci,
                    subject,
                    c.dev.kind == DeviceKind::VictimPhone,
                    first_row,
                ));
            }
            Body::Events(events) => {
                for e in events {
                    let t = e.time.as_millisecond();
                    let late = t < st.event_head;
                    st.event_head = st.event_head.max(t);
                    rows.events.push((dev, *e, late));
                    if let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) {
                        rows.alert_events.push(ObservedEvent {
                            subject: subject.0,
                            device: c.device.clone(),
                            kind: e.kind,
                            at_ms: t,
                            late,
                        });
                    }
                }
            }
            Body::Heartbeats(hbs) => {
                rows.heartbeats += hbs.len() as u64;
                if let Some(h) = hbs.iter().max_by_key(|h| h.time) {
                    st.pending = Some(h.pending);
                }
            }
        }
        if let (DeviceKind::Bracelet, Some(subject), Ok(device)) =
            (c.dev.kind, c.dev.subject, u32::try_from(c.dev.engine.0))
        {
            rows.reports.push(Report {
                device,
                subject: subject.0,
                time_ms: c.newest_ms,
                fix: matches!(c.body, Body::Fixes(_)),
                motion: matches!(&c.body, Body::Heartbeats(v) if v.iter().any(|h| h.flags.motion)),
            });
        }
    }
    for (i, d) in rows.names.iter().enumerate() {
        if let Some(s) = states.get(d) {
            rows.states.push((i as u32, *s));
        }
    }

    let eval_start = Instant::now();
    if !judge.is_empty() {
        let mut out: Vec<Transition> = Vec::new();
        let mut core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
        let mut ends: Vec<usize> = judge.iter().skip(1).map(|j| j.3).collect();
        ends.push(rows.fixes.len());
        for (j, end) in judge.iter().zip(ends) {
            let (ci, subject, phone, start) = *j;
            let c = &checked[ci];
            let handle = if phone {
                None
            } else {
                core.engine.subject_handle(subject)
            };
            let mut any_late = false;
            for row in &rows.fixes[start..end] {
                let Ok(position) = Position::new(row.fix.lon(), row.fix.lat()) else {
                    continue;
                };
                let fix = geofence::Fix {
                    time: row.fix.time,
                    position,
                    accuracy_m: f64::from(row.fix.accuracy_m),
                    suspect: row.suspect,
                };
                let before = out.len();
                let outcome = match handle {
                    Some(h) => core.engine.evaluate(h, &fix, &mut out),
                    None if phone => core.engine.observe_device(c.dev.engine, &fix, &mut out),
                    None => Ok(Outcome::Skipped),
                };
                match outcome {
                    Ok(Outcome::Live) => rows.live_fix_ms.push(row.time_ms),
                    Ok(Outcome::Late) => any_late = true,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(device = %c.device, error = %e, "fix not judged"),
                }
                for t in &out[before..] {
                    rows.transitions.push(StoredTransition {
                        transition: *t,
                        device: Some(c.device.clone()),
                        other_device: t
                            .device
                            .and_then(|d| core.registry.name_of(d))
                            .map(str::to_owned),
                    });
                }
            }
            if any_late && let Some(h) = handle {
                let before = out.len();
                let _ = core.engine.close_late_run(h, &mut out);
                for t in &out[before..] {
                    rows.transitions.push(StoredTransition {
                        transition: *t,
                        device: Some(c.device.clone()),
                        other_device: t
                            .device
                            .and_then(|d| core.registry.name_of(d))
                            .map(str::to_owned),
                    });
                }
            }
        }
    }
    m.evaluation_seconds
        .observe(eval_start.elapsed().as_secs_f64());

    // 5. Store, retrying until it commits.
    let commit_start = Instant::now();
    let written = match retry(shared, "commit a batch", || write(shared, &rows)).await {
        Ok(w) => w,
        Err(e) => {
            quarantine(shared, batch, &e).await;
            return;
        }
    };
    let commit_s = commit_start.elapsed().as_secs_f64();
    m.commit_seconds.observe(commit_s);
    m.batch_size.observe(batch.len() as f64);
    let committed = now_ms();
    for t in &rows.live_fix_ms {
        m.ingest_lag_seconds
            .observe((committed - t).max(0) as f64 / 1000.0);
    }
    m.fixes_accepted.inc_by(written.fixes);
    m.fixes_duplicate
        .inc_by(duplicates + (rows.fixes.len() as u64 - written.fixes));
    m.fixes_suspect
        .inc_by(rows.fixes.iter().filter(|f| f.suspect).count() as u64);
    m.events_stored.inc_by(written.events);
    m.heartbeats.inc_by(rows.heartbeats);
    for r in &rows.rejected {
        m.rejected.with_label_values(&[r.1]).inc();
    }
    for t in &rows.transitions {
        m.transitions
            .with_label_values(&[t.transition.kind.as_str()])
            .inc();
    }
    if !(rows.transitions.is_empty() && rows.alert_events.is_empty() && rows.reports.is_empty()) {
        let observed = Observed {
            committed_ms: committed,
            transitions: std::mem::take(&mut rows.transitions),
            events: std::mem::take(&mut rows.alert_events),
            reports: std::mem::take(&mut rows.reports),
        };
        // Closed only when the alert service stopped; the store has it all
        // and a restart re-reads it.
        let _ = shared.observed.send(observed).await;
    }
}

/// Whether a database error may go away by itself (connection lost, server
/// restarting, lock conflict) rather than be refused again (bad data, a bug).
/// PostgreSQL found no partition for a row (SQLSTATE 23514, like any check
/// violation, but only this one is cured by creating the partition).
fn no_partition(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of relation")
}

pub(crate) fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // 08 connection exception, 53 insufficient resources, 57P0x
            // shutdown or crash, 40001/40P01 serialization failure or
            // deadlock, 55P03 lock not available. Anything else (bad data,
            // a constraint, an index row too large, a bug) fails again.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || matches!(code, "40001" | "40P01" | "55P03")
                // A day's partition dropped by retention after it was cached:
                // the cache is cleared and the retry recreates it.
                || no_partition(db.as_ref())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Retries `f` with capped backoff while it fails transiently; the batch's
/// acks are held meanwhile, so the broker keeps the messages. A permanent
/// error is returned.
async fn retry<T, F, Fut>(shared: &Shared, what: &str, mut f: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                shared.metrics.commit_retries.inc();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot {what}; acks held, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The database refuses a batch outright (a bug, or data the schema does not
/// allow). Its messages are kept, raw, in `rejected_messages` with reason
/// `storage_failed` and the error, so they can be published again once the
/// cause is fixed; then they are acked like any refusal.
async fn quarantine(shared: &Shared, batch: &[Publish], error: &sqlx::Error) {
    tracing::error!(%error, messages = batch.len(), "the database refused a batch; its messages are kept in rejected_messages (storage_failed)");
    let rows = Rows {
        rejected: batch
            .iter()
            .map(|p| {
                (
                    p.topic.clone(),
                    "storage_failed",
                    error.to_string(),
                    p.payload.to_vec(),
                    p.dup,
                )
            })
            .collect(),
        ..Rows::default()
    };
    // If even that is refused, the batch stays held (never acked, never
    // dropped): retry with a long backoff and let an operator see the errors.
    let mut wait = Duration::from_secs(1);
    while let Err(e) = retry(shared, "quarantine a refused batch", || {
        write(shared, &rows)
    })
    .await
    {
        tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot quarantine the batch either; it stays held, unacked");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    shared
        .metrics
        .rejected
        .with_label_values(&["storage_failed"])
        .inc_by(batch.len() as u64);
}

async fn load_states(
    pool: &PgPool,
    devices: &[String],
) -> Result<FxHashMap<String, DevState>, sqlx::Error> {
    type StateRow = (String, Option<i64>, Option<i64>, Option<f64>, Option<f64>);
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT device_id, (extract(epoch FROM head_time) * 1000)::int8, \
                (extract(epoch FROM good_time) * 1000)::int8, good_lat, good_lon \
         FROM device_state WHERE device_id = ANY($1)",
    )
    .bind(devices)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(d, head, gt, lat, lon)| {
            let good = match (gt, lat, lon) {
                (Some(t), Some(lat), Some(lon)) => Position::new(lon, lat).ok().map(|p| (p, t)),
                _ => None,
            };
            (
                d,
                DevState {
                    head: head.unwrap_or(i64::MIN),
                    good,
                    ..DevState::default()
                },
            )
        })
        .collect())
}

async fn stored_among(
    pool: &PgPool,
    keys: &[(String, i64)],
) -> Result<FxHashSet<(String, i64)>, sqlx::Error> {
    let devs: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let times: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT u.d, u.t FROM UNNEST($1::text[], $2::int8[]) AS u(d, t) \
         WHERE EXISTS (SELECT 1 FROM fixes f WHERE f.device_id = u.d \
                       AND f.fix_time = 'epoch'::timestamptz + u.t * interval '1 millisecond')",
    )
    .bind(&devs)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Rows actually inserted.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    fixes: u64,
    events: u64,
}

const DAY_MS: i64 = 86_400_000;

/// Longest topic stored in `rejected_messages` (bytes); longer ones are cut.
pub(crate) const MAX_TOPIC_STORED: usize = 512;

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `fixes.seq` is message index * this + fix index: more than
/// `protocol::MAX_BATCH` fixes per message, so a replay can find message
/// boundaries again.
pub(crate) const SEQ_PER_MESSAGE: i32 = 2048;

async fn ensure_days(shared: &Shared, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut days: FxHashSet<i32> = rows
        .fixes
        .iter()
        .map(|f| f.time_ms.div_euclid(DAY_MS) as i32)
        .chain(
            rows.events
                .iter()
                .map(|e| e.1.time.as_millisecond().div_euclid(DAY_MS) as i32),
        )
        .collect();
    {
        let known = shared.partitions.lock().unwrap_or_else(|e| e.into_inner());
        days.retain(|d| !known.contains(d));
    }
    for d in days {
        sqlx::query(
            "SELECT emtrack_ensure_partitions(DATE '1970-01-01' + $1, DATE '1970-01-01' + $1)",
        )
        .bind(d)
        .execute(&shared.pool)
        .await?;
        shared
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d);
    }
    Ok(())
}

async fn write(shared: &Shared, rows: &Rows) -> Result<Written, sqlx::Error> {
    let r = write_once(shared, rows).await;
    if let Err(sqlx::Error::Database(db)) = &r
        && no_partition(db.as_ref())
    {
        // No partition for a row's day: the cache is stale (retention dropped
        // it). Forget it, so the retry creates the partition again.
        shared
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
    r
}

async fn write_once(shared: &Shared, rows: &Rows) -> Result<Written, sqlx::Error> {
    ensure_days(shared, rows).await?;
    let mut tx = shared.pool.begin().await?;
    let mut w = Written::default();
    if !rows.fixes.is_empty() {
        let n = rows.fixes.len();
        let (
            mut dev,
            mut t,
            mut lat,
            mut lon,
            mut acc,
            mut spd,
            mut hdg,
            mut bat,
            mut flg,
            mut sus,
            mut seq,
        ) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in &rows.fixes {
            dev.push(rows.names[r.dev as usize].as_str());
            t.push(r.time_ms);
            lat.push(r.fix.lat());
            lon.push(r.fix.lon());
            acc.push(f32::from(r.fix.accuracy_m));
            spd.push(r.fix.speed_m_s().map(|v| v as f32));
            hdg.push(r.fix.heading_deg().map(|v| v as f32));
            bat.push(r.fix.battery_pct.map(i16::from));
            flg.push(i16::from(r.fix.flags.to_byte()));
            sus.push(r.suspect);
            seq.push(r.seq);
        }
        w.fixes = sqlx::query(
            "INSERT INTO fixes (device_id, fix_time, lat, lon, accuracy_m, speed_m_s, heading_deg, battery_pct, flags, suspect, seq) \
             SELECT d, 'epoch'::timestamptz + t * interval '1 millisecond', la, lo, a, s, h, b, f, su, q \
             FROM UNNEST($1::text[], $2::int8[], $3::float8[], $4::float8[], $5::float4[], $6::float4[], $7::float4[], \
                         $8::int2[], $9::int2[], $10::bool[], $11::int4[]) AS u(d, t, la, lo, a, s, h, b, f, su, q) \
             ON CONFLICT (device_id, fix_time) DO NOTHING",
        )
        .bind(&dev)
        .bind(&t)
        .bind(&lat)
        .bind(&lon)
        .bind(&acc)
        .bind(&spd)
        .bind(&hdg)
        .bind(&bat)
        .bind(&flg)
        .bind(&sus)
        .bind(&seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !rows.events.is_empty() {
        let dev: Vec<&str> = rows
            .events
            .iter()
            .map(|e| rows.names[e.0 as usize].as_str())
            .collect();
        let t: Vec<i64> = rows
            .events
            .iter()
            .map(|e| e.1.time.as_millisecond())
            .collect();
        let kind: Vec<&str> = rows.events.iter().map(|e| e.1.kind.as_str()).collect();
        let bat: Vec<Option<i16>> = rows
            .events
            .iter()
            .map(|e| e.1.battery_pct.map(i16::from))
            .collect();
        let flg: Vec<i16> = rows
            .events
            .iter()
            .map(|e| i16::from(e.1.flags.to_byte()))
            .collect();
        let late: Vec<bool> = rows.events.iter().map(|e| e.2).collect();
        w.events = sqlx::query(
            "INSERT INTO device_events (device_id, event_time, kind, battery_pct, flags, late) \
             SELECT d, 'epoch'::timestamptz + t * interval '1 millisecond', k, b, f, l \
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int2[], $5::int2[], $6::bool[]) AS u(d, t, k, b, f, l) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&dev)
        .bind(&t)
        .bind(&kind)
        .bind(&bat)
        .bind(&flg)
        .bind(&late)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !rows.states.is_empty() {
        let dev: Vec<&str> = rows
            .states
            .iter()
            .map(|s| rows.names[s.0 as usize].as_str())
            .collect();
        let head: Vec<Option<i64>> = rows
            .states
            .iter()
            .map(|s| (s.1.head != i64::MIN).then_some(s.1.head))
            .collect();
        let gt: Vec<Option<i64>> = rows.states.iter().map(|s| s.1.good.map(|g| g.1)).collect();
        let glat: Vec<Option<f64>> = rows
            .states
            .iter()
            .map(|s| s.1.good.map(|g| g.0.lat()))
            .collect();
        let glon: Vec<Option<f64>> = rows
            .states
            .iter()
            .map(|s| s.1.good.map(|g| g.0.lon()))
            .collect();
        let pending: Vec<Option<i32>> = rows
            .states
            .iter()
            .map(|s| s.1.pending.map(i32::from))
            .collect();
        sqlx::query(
            "INSERT INTO device_state (device_id, head_time, good_time, good_lat, good_lon, last_seen_at, pending) \
             SELECT d, 'epoch'::timestamptz + h * interval '1 millisecond', \
                    'epoch'::timestamptz + g * interval '1 millisecond', la, lo, now(), p \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::float8[], $5::float8[], $6::int4[]) AS u(d, h, g, la, lo, p) \
             ON CONFLICT (device_id) DO UPDATE SET head_time = EXCLUDED.head_time, good_time = EXCLUDED.good_time, \
                 good_lat = EXCLUDED.good_lat, good_lon = EXCLUDED.good_lon, last_seen_at = EXCLUDED.last_seen_at, \
                 pending = COALESCE(EXCLUDED.pending, device_state.pending)",
        )
        .bind(&dev)
        .bind(&head)
        .bind(&gt)
        .bind(&glat)
        .bind(&glon)
        .bind(&pending)
        .execute(&mut *tx)
        .await?;
    }
    if !rows.transitions.is_empty() {
        insert_transitions(&mut tx, &rows.transitions).await?;
    }
    if !rows.rejected.is_empty() {
        // MQTT topics may be 65,535 bytes; an index row may not.
        let topic: Vec<&str> = rows
            .rejected
            .iter()
            .map(|r| truncate(&r.0, MAX_TOPIC_STORED))
            .collect();
        let reason: Vec<&str> = rows.rejected.iter().map(|r| r.1).collect();
        let detail: Vec<&str> = rows.rejected.iter().map(|r| truncate(&r.2, 1024)).collect();
        let payload: Vec<&[u8]> = rows.rejected.iter().map(|r| r.3.as_slice()).collect();
        let dup: Vec<bool> = rows.rejected.iter().map(|r| r.4).collect();
        // A redelivered message (DUP) whose copy is already stored was stored
        // before a crash that came between commit and ack.
        sqlx::query(
            "INSERT INTO rejected_messages (topic, reason, detail, payload) \
             SELECT t, r, d, p FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[]) AS u(t, r, d, p, dup) \
             WHERE NOT (dup AND EXISTS (SELECT 1 FROM rejected_messages x \
                                        WHERE x.topic = u.t AND md5(x.payload) = md5(u.p) AND x.payload = u.p))",
        )
        .bind(&topic)
        .bind(&reason)
        .bind(&detail)
        .bind(&payload)
        .bind(&dup)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(w)
}

/// Stores transitions; the key (subject, rule, zone, kind, at, historical)
/// makes a repeat insert nothing.
pub(crate) async fn insert_transitions(
    conn: &mut sqlx::PgConnection,
    ts: &[StoredTransition],
) -> Result<u64, sqlx::Error> {
    let subject: Vec<i64> = ts.iter().map(|t| t.transition.subject.0 as i64).collect();
    let rule: Vec<i64> = ts.iter().map(|t| t.transition.rule.0 as i64).collect();
    let zone: Vec<i64> = ts
        .iter()
        .map(|t| t.transition.zone.map_or(0, |z| z.0 as i64))
        .collect();
    let kind: Vec<&str> = ts.iter().map(|t| t.transition.kind.as_str()).collect();
    let at: Vec<i64> = ts
        .iter()
        .map(|t| t.transition.at.as_millisecond())
        .collect();
    let hist: Vec<bool> = ts.iter().map(|t| t.transition.historical).collect();
    let conf: Vec<i64> = ts
        .iter()
        .map(|t| t.transition.confirmed_at.as_millisecond())
        .collect();
    let other: Vec<Option<&str>> = ts.iter().map(|t| t.other_device.as_deref()).collect();
    let cause: Vec<Option<&str>> = ts
        .iter()
        .map(|t| t.transition.end_cause.map(|c| c.as_str()))
        .collect();
    Ok(sqlx::query(
        "INSERT INTO rule_transitions (subject_id, rule_id, zone_id, kind, at, historical, confirmed_at, other_device, end_cause) \
         SELECT s, r, z, k, 'epoch'::timestamptz + a * interval '1 millisecond', h, \
                'epoch'::timestamptz + c * interval '1 millisecond', o, e \
         FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[], $6::bool[], $7::int8[], $8::text[], $9::text[]) \
              AS u(s, r, z, k, a, h, c, o, e) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&subject)
    .bind(&rule)
    .bind(&zone)
    .bind(&kind)
    .bind(&at)
    .bind(&hist)
    .bind(&conf)
    .bind(&other)
    .bind(&cause)
    .execute(conn)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_lands_on_the_same_shard() {
        let a = shard_of("em/v1/dev/EM-000001/fix", 4);
        assert_eq!(a, shard_of("em/v1/dev/EM-000001/event", 4));
        assert_eq!(a, shard_of("em/v1/dev/EM-000001/hb", 4));
        let spread: FxHashSet<usize> = (0..64)
            .map(|i| shard_of(&format!("em/v1/dev/EM-{i:06}/fix"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 devices use all 4 shards");
    }
}
