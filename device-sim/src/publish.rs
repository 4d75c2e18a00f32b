//! Publishing a message stream to an MQTT broker with rumqttc, and a null
//! subscriber that counts what arrives.
//!
//! Many devices share one MQTT connection (device index modulo the number of
//! connections), as a load generator should; `conn_per_device` gives each
//! device its own, as real bracelets have. Each connection's event loop runs in
//! its own task and only counts: PUBACKs for QoS 1, writes for QoS 0.
//! `AsyncClient::publish_bytes` waits when the connection's request queue is
//! full, so a slow broker slows the generator instead of growing memory.

use crate::stream::Outgoing;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing as Out, Packet, QoS, SubscribeFilter,
};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How fast to publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the broker takes it.
    Max,
    /// This many fixes per second overall (messages without fixes are free).
    Rate(f64),
    /// Simulated time runs this many times faster than wall time.
    Speedup(f64),
}

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// QoS of every publish.
    pub qos: QoS,
    /// Connections shared by the devices.
    pub connections: usize,
    /// One connection per device instead.
    pub conn_per_device: bool,
    /// MQTT over TLS, trusting these roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Each device's broker identity (its id and password), by device
    /// index: as a secured broker demands, every device then connects on its
    /// own, with its id as user name and client id.
    pub identities: Option<Arc<Vec<(String, link::Secret)>>>,
    /// Client ids are `{prefix}-{n}`.
    pub client_id_prefix: String,
    /// Pacing.
    pub pace: Pace,
    /// Stop after this much wall time.
    pub duration: Duration,
    /// Stop after this many valid fixes.
    pub max_fixes: Option<u64>,
    /// Progress line interval.
    pub progress_every: Duration,
    /// Unacknowledged QoS 1 publishes per connection.
    pub inflight: u16,
    /// With [`Pace::Speedup`]: the simulated start is a wall-clock instant
    /// (`--start now`), and messages follow the wall clock from it. Setting up
    /// the scenario and connections takes seconds; messages due meanwhile go
    /// out at once, so fix times match send times instead of trailing them by
    /// the setup time.
    pub wall_clock: bool,
}

/// What a run achieved.
#[derive(Clone, Debug, Default)]
pub struct PublishReport {
    /// Messages published.
    pub messages: u64,
    /// Valid fixes in them.
    pub fixes: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// PUBACKs received (QoS 1) or publishes written (QoS 0). After a
    /// reconnect, a resent QoS 1 publish may be acked twice, so this can exceed
    /// `messages`; `connection_errors` then is non-zero.
    pub acked: u64,
    /// Wall time from the first publish to the last ack.
    pub elapsed: Duration,
    /// `stream_end`, `duration` or `fixes`.
    pub stopped_by: &'static str,
    /// Connection errors seen (each followed by a reconnect).
    pub connection_errors: u64,
}

impl PublishReport {
    /// Messages per second.
    pub fn message_rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Fixes per second.
    pub fn fix_rate(&self) -> f64 {
        self.fixes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published {} messages ({} fixes, {} payload bytes) in {:.2} s: {:.0} msg/s, {:.0} fixes/s; acked {}; stopped by {}; connection errors {}",
            self.messages,
            self.fixes,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.message_rate(),
            self.fix_rate(),
            self.acked,
            self.stopped_by,
            self.connection_errors
        )
    }
}

/// Why publishing failed.
#[derive(Debug)]
pub enum PublishError {
    /// No CONNACK within the timeout.
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The last error seen.
        detail: String,
    },
    /// The client's request channel closed (its event loop died).
    Client(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Unreachable { addr, detail } => write!(
                f,
                "cannot connect to the MQTT broker at {addr} ({detail}); start it (mosquitto -c deploy/mosquitto/insecure-loopback-demo.conf) or pass --host/--port"
            ),
            PublishError::Client(e) => write!(f, "MQTT client failed: {e}"),
        }
    }
}

impl std::error::Error for PublishError {}

struct Counters {
    acked: AtomicU64,
    errors: AtomicU64,
}

fn options(mut o: MqttOptions, inflight: u16) -> MqttOptions {
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(inflight.max(1));
    o.set_max_packet_size(300 * 1024, 300 * 1024);
    o.set_request_channel_capacity(usize::from(inflight.max(1)) * 2);
    o
}

/// Polls one connection forever: counts acks, reconnects after errors with a
/// capped exponential backoff, and reports the first CONNACK.
async fn drive(
    mut el: EventLoop,
    qos: QoS,
    counters: Arc<Counters>,
    connected: watch::Sender<Option<String>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(50);
                let _ = connected.send(Some(String::new()));
            }
            Ok(Event::Incoming(Packet::PubAck(_))) if qos != QoS::AtMostOnce => {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Out::Publish(_))) if qos == QoS::AtMostOnce => {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Out::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                // Before the first CONNACK, keep the error for the caller.
                let _ = connected.send_if_modified(|v| {
                    if v.as_deref().is_some_and(str::is_empty) {
                        false
                    } else {
                        *v = Some(format!("error: {e}"));
                        true
                    }
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes `stream` until it ends or a bound is hit, then waits (up to 30 s)
/// for every QoS 1 publish to be acknowledged.
// Over 80 lines: one loop owns pacing, the connections and ack counting;
// split, its locals would be shared across functions.
pub async fn publish(
    stream: &mut dyn Iterator<Item = Outgoing>,
    devices: usize,
    cfg: &PublishConfig,
    sim_start_ms: i64,
) -> Result<PublishReport, PublishError> {
    let n = if cfg.conn_per_device || cfg.identities.is_some() {
        devices.max(1)
    } else {
        cfg.connections.clamp(1, devices.max(1))
    };
    let counters = Arc::new(Counters {
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut clients = Vec::with_capacity(n);
    let mut loops = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    for k in 0..n {
        let link = link::MqttLink {
            tls: cfg.tls.clone(),
            ..link::MqttLink::plain(cfg.host.clone(), cfg.port)
        };
        let (link, id) = match cfg.identities.as_ref().and_then(|ids| ids.get(k)) {
            Some((user, password)) => (
                link.as_identity(user.clone(), password.clone()),
                user.clone(),
            ),
            None => (link, format!("{}-{k}", cfg.client_id_prefix)),
        };
        let (client, el) = AsyncClient::new(
            options(link.options(id), cfg.inflight),
            usize::from(cfg.inflight.max(1)) * 2,
        );
        let (tx, rx) = watch::channel(None);
        loops.push(tokio::spawn(drive(el, cfg.qos, counters.clone(), tx)));
        clients.push(client);
        ready.push(rx);
    }
    let addr = format!("{}:{}", cfg.host, cfg.port);
    for rx in &mut ready {
        let ok = matches!(
            tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|v| v.as_deref().is_some_and(str::is_empty))
            )
            .await,
            Ok(Ok(_))
        );
        if !ok {
            let detail = rx.borrow().clone().unwrap_or_else(|| "no answer".into());
            for l in &loops {
                l.abort();
            }
            return Err(PublishError::Unreachable { addr, detail });
        }
    }

    let start = Instant::now();
    // The instant simulated time `sim_start_ms` is due.
    let anchor = if cfg.wall_clock {
        let behind = (jiff::Timestamp::now().as_millisecond() - sim_start_ms).max(0);
        start
            .checked_sub(Duration::from_millis(behind as u64))
            .unwrap_or(start)
    } else {
        start
    };
    let mut report = PublishReport {
        stopped_by: "stream_end",
        ..PublishReport::default()
    };
    let mut next_progress = start + cfg.progress_every;
    let mut last_progress = (start, 0u64);
    // Bounds are checked before a message is taken, so that every message taken
    // from the stream (and so counted in its ground truth) is published.
    loop {
        let now = Instant::now();
        if now - start >= cfg.duration {
            report.stopped_by = "duration";
            break;
        }
        if cfg.max_fixes.is_some_and(|m| report.fixes >= m) {
            report.stopped_by = "fixes";
            break;
        }
        let Some(msg) = stream.next() else { break };
        let due = match cfg.pace {
            Pace::Max => None,
            Pace::Rate(r) => {
                Some(start + Duration::from_secs_f64(report.fixes as f64 / r.max(1e-9)))
            }
            Pace::Speedup(x) => Some(
                anchor
                    + Duration::from_secs_f64(
                        (msg.at - sim_start_ms).max(0) as f64 / 1000.0 / x.max(1e-9),
                    ),
            ),
        };
        if let Some(due) = due
            && due > now + Duration::from_millis(1)
        {
            tokio::time::sleep_until(due).await;
        }
        if now >= next_progress {
            let acked = counters.acked.load(Ordering::Relaxed);
            let dt = (now - last_progress.0).as_secs_f64().max(1e-9);
            println!(
                "[{:>7.1}s] sim {:.0} | sent {} msgs, {} fixes ({:.0} fixes/s now) | acked {} | pending {}",
                (now - start).as_secs_f64(),
                jiff::Timestamp::from_millisecond(msg.at).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                report.messages,
                report.fixes,
                (report.fixes - last_progress.1) as f64 / dt,
                acked,
                report.messages.saturating_sub(acked)
            );
            last_progress = (now, report.fixes);
            next_progress = now + cfg.progress_every;
        }
        let k = msg.device as usize % n;
        report.bytes += msg.payload.len() as u64;
        clients[k]
            .publish_bytes(msg.topic, cfg.qos, false, msg.payload)
            .await
            .map_err(|e| PublishError::Client(e.to_string()))?;
        report.messages += 1;
        report.fixes += u64::from(msg.valid_fixes);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.acked.load(Ordering::Relaxed) < report.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report.elapsed = start.elapsed();
    report.acked = counters.acked.load(Ordering::Relaxed);
    report.connection_errors = counters.errors.load(Ordering::Relaxed);
    for c in &clients {
        let _ = c.disconnect().await;
    }
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(2), l).await;
    }
    Ok(report)
}

/// Messages a sink keeps: (topic, payload).
type Kept = Arc<std::sync::Mutex<Vec<(String, bytes::Bytes)>>>;

/// A null subscriber: subscribes with `qos` to every device topic and counts.
pub struct Sink {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    received: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    messages: Option<Kept>,
}

impl Sink {
    /// Connects, subscribes and waits for the SUBACK. With `keep`, every
    /// message is also kept for inspection.
    pub async fn start(
        host: &str,
        port: u16,
        qos: QoS,
        client_id: &str,
        keep: bool,
    ) -> Result<Sink, PublishError> {
        let mut o = options(MqttOptions::new(client_id, host, port), 1000);
        o.set_request_channel_capacity(64);
        let (client, mut el) = AsyncClient::new(o, 64);
        let received = Arc::new(AtomicU64::new(0));
        let bytes_n = Arc::new(AtomicU64::new(0));
        let messages = keep.then(|| Arc::new(std::sync::Mutex::new(Vec::new())));
        let filters = protocol::SUBSCRIPTIONS
            .iter()
            .map(|t| SubscribeFilter::new((*t).to_owned(), qos));
        client
            .subscribe_many(filters)
            .await
            .map_err(|e| PublishError::Client(e.to_string()))?;
        let (tx, mut rx) = watch::channel(false);
        let (r, b, m) = (received.clone(), bytes_n.clone(), messages.clone());
        let addr = format!("{host}:{port}");
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        b.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        if let Some(m) = &m
                            && let Ok(mut v) = m.lock()
                        {
                            v.push((p.topic, p.payload));
                        }
                    }
                    Ok(Event::Outgoing(Out::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        if !matches!(
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| *s)).await,
            Ok(Ok(_))
        ) {
            task.abort();
            return Err(PublishError::Unreachable {
                addr,
                detail: "no SUBACK".into(),
            });
        }
        Ok(Sink {
            client,
            task,
            received,
            bytes: bytes_n,
            messages,
        })
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until `expected` messages arrived, or nothing arrived for `idle`.
    pub async fn wait_for(&self, expected: Option<u64>, idle: Duration) -> u64 {
        let mut last = (self.received(), Instant::now());
        loop {
            let n = self.received();
            if expected.is_some_and(|e| n >= e) {
                return n;
            }
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= idle {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects and returns the kept messages (empty unless `keep`).
    pub async fn stop(self) -> Vec<(String, bytes::Bytes)> {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        self.messages
            .and_then(|m| m.lock().ok().map(|mut v| std::mem::take(&mut *v)))
            .unwrap_or_default()
    }
}
