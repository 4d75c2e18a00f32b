//! Fixtures for the service tests: a world imported into the test database,
//! a scenario, an in-process service, and the checks against ground truth.

#![allow(dead_code, unreachable_pub)]

pub mod certs;

use device_sim::publish::{Pace, PublishConfig, PublishReport, publish};
use device_sim::stream::{Outgoing, Scenario, ScenarioConfig};
use device_sim::testbed::SeenTransition;
use device_sim::truth::Record;
use device_sim::world::{World, WorldConfig};
use emtrack::config::Config;
use jiff::Timestamp;
use rumqttc::QoS;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A seeded world with victims, imported into `pool`.
pub async fn world(pool: &PgPool, seed: u64, subjects: usize) -> Arc<World> {
    let world = Arc::new(World::generate(WorldConfig {
        seed,
        subjects,
        victim_share: 0.4,
        ..WorldConfig::default()
    }));
    let dir = std::env::temp_dir().join(format!("emtrack-world-{seed}-{}", std::process::id()));
    world.write_dir(&dir).expect("world export");
    reference::world::import(pool, &dir).await.expect("imports");
    let _ = std::fs::remove_dir_all(&dir);
    world
}

/// A scenario three weeks before the session date (all fixes in the past,
/// whatever the day: the start is fixed for determinism).
pub fn scenario(world: &Arc<World>, hours: i64, batch: usize) -> Scenario {
    Scenario::new(
        world.clone(),
        ScenarioConfig::busy(
            "2026-11-01T00:00:00+05:00[Asia/Almaty]"
                .parse::<jiff::Zoned>()
                .expect("start")
                .timestamp(),
            hours,
            batch,
        ),
    )
}

/// The service's configuration for a test broker, with one worker.
///
/// A scenario published at full speed plays a simulated day in seconds, so
/// one 250-message batch spans minutes of simulated time. With several
/// workers, a victim's phone and the bracelet it is protected from sit on
/// different shards and their fixes can be judged minutes (simulated) apart,
/// which moves proximity episodes; at real pace the skew is milliseconds.
/// One worker keeps the stream's order, so the ground truth holds exactly.
pub fn config(broker_port: u16, client_id: &str) -> Config {
    Config {
        mqtt_port: broker_port,
        mqtt_client_id: client_id.into(),
        http_listen: "127.0.0.1:0".into(),
        api_listen: "127.0.0.1:0".into(),
        workers: 1,
        ..Config::default()
    }
}

/// Polls `f` every 20 ms until it is true; false if `limit` passes first.
pub async fn poll_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Polls `f` every 20 ms until it is true; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(poll_until(limit, f).await, "timed out waiting until {what}");
}

/// Waits until the service has acked `n` messages; on timeout, panics with
/// its ingest counters.
pub async fn wait_acked(m: &ingest::Metrics, n: u64, limit: Duration) {
    let ok = poll_until(limit, || {
        let m = m.clone();
        async move { m.messages_acked.get() >= n }
    })
    .await;
    if !ok {
        panic!(
            "{n} messages not acked in {limit:?}: received {}, acked {}, queue depth {}, commit retries {}, fixes stored {}",
            m.messages_received.get(),
            m.messages_acked.get(),
            m.messages_unacked.get(),
            m.commit_retries.get(),
            m.fixes_accepted.get(),
        );
    }
}

/// Publishes every message of `stream` at full speed with QoS 1, over one
/// connection: the broker then delivers them in stream order.
pub async fn publish_all(
    port: u16,
    stream: &mut dyn Iterator<Item = Outgoing>,
    devices: usize,
    prefix: &str,
) -> PublishReport {
    let cfg = full_speed(port, prefix);
    publish(stream, devices, &cfg, 0).await.expect("publishes")
}

/// Every message at full speed, QoS 1, over one plain connection.
pub fn full_speed(port: u16, prefix: &str) -> PublishConfig {
    PublishConfig {
        host: "127.0.0.1".into(),
        port,
        qos: QoS::AtLeastOnce,
        connections: 1,
        conn_per_device: false,
        tls: None,
        identities: None,
        client_id_prefix: prefix.into(),
        pace: Pace::Max,
        duration: Duration::from_secs(300),
        max_fixes: None,
        progress_every: Duration::from_secs(3600),
        inflight: 100,
        wall_clock: false,
    }
}

/// A stored rule transition.
#[derive(sqlx::FromRow)]
pub struct TransitionRow {
    pub subject_id: i64,
    pub rule_id: i64,
    pub zone_id: i64,
    pub kind: String,
    pub at: store::Millis,
    pub historical: bool,
}

impl TransitionRow {
    /// Whether it opens an episode.
    pub fn starts(&self) -> bool {
        geofence::TransitionKind::from_name(&self.kind)
            .unwrap_or_else(|| panic!("unknown transition kind {:?}", self.kind))
            .is_start()
    }
}

/// Rule transitions in the database, in the order they happened per key.
pub async fn transition_rows(pool: &PgPool) -> Vec<TransitionRow> {
    sqlx::query_as(
        "SELECT subject_id, rule_id, zone_id, kind, at, historical \
         FROM rule_transitions ORDER BY subject_id, rule_id, zone_id, historical, at",
    )
    .fetch_all(pool)
    .await
    .expect("transitions")
}

/// Rule transitions in the database, as the ground-truth check takes them.
pub async fn transitions(pool: &PgPool) -> Vec<SeenTransition> {
    transition_rows(pool)
        .await
        .into_iter()
        .map(|r| SeenTransition {
            subject: r.subject_id as u64,
            rule: r.rule_id as u64,
            zone: (r.zone_id != 0).then_some(r.zone_id as u64),
            start: r.starts(),
            at: Timestamp::from_millisecond(r.at.0).expect("timestamp"),
            historical: r.historical,
        })
        .collect()
}

/// Stored fixes per device.
pub async fn fixes_per_device(pool: &PgPool) -> BTreeMap<String, u64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT device_id, count(*) FROM fixes GROUP BY device_id")
            .fetch_all(pool)
            .await
            .expect("fix counts");
    rows.into_iter().map(|(d, n)| (d, n as u64)).collect()
}

/// Valid fixes per device, by the ground truth (devices with none omitted).
pub fn truth_fixes(truth: &[Record]) -> BTreeMap<String, u64> {
    truth
        .iter()
        .filter_map(|r| match r {
            Record::Device {
                device,
                valid_fixes,
                ..
            } if *valid_fixes > 0 => Some((device.clone(), *valid_fixes)),
            _ => None,
        })
        .collect()
}

/// Everything stored matches the ground truth: fixes per device, suspect
/// fixes, events, refused messages with their reasons, and the episodes.
/// Returns the number of episodes matched.
pub async fn check_against_truth(pool: &PgPool, truth: &[Record]) -> usize {
    assert_eq!(
        fixes_per_device(pool).await,
        truth_fixes(truth),
        "stored fixes per device equal the ground truth's valid fixes"
    );
    let suspects: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes WHERE suspect")
        .fetch_one(pool)
        .await
        .expect("suspects");
    let mut expected_rejected = Vec::new();
    let mut expected_suspects = 0;
    let mut expected_events = 0u64;
    for r in truth {
        match r {
            Record::Malformed { reason, .. } if *reason == "suspect_jump" => expected_suspects += 1,
            Record::Malformed { topic, reason, .. } => {
                expected_rejected.push((topic.clone(), (*reason).to_owned()))
            }
            Record::Device { events, .. } => expected_events += events,
            _ => {}
        }
    }
    assert_eq!(
        suspects, expected_suspects,
        "every teleport, and only they, is suspect"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM device_events")
        .fetch_one(pool)
        .await
        .expect("events");
    assert_eq!(events as u64, expected_events, "device events stored");
    let mut rejected: Vec<(String, String)> =
        sqlx::query_as("SELECT topic, reason FROM rejected_messages")
            .fetch_all(pool)
            .await
            .expect("rejected");
    rejected.sort();
    expected_rejected.sort();
    assert_eq!(
        rejected, expected_rejected,
        "refused messages and their reasons"
    );
    match device_sim::testbed::check_episodes(truth, &transitions(pool).await) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

/// `postgres://` URL of the test database behind `pool`, optionally via
/// another port (a proxy).
pub fn database_url(pool: &PgPool, port: u16) -> String {
    let db = pool
        .connect_options()
        .get_database()
        .expect("sqlx::test names its database")
        .to_owned();
    format!("postgres://postgres@127.0.0.1:{port}/{db}")
}

/// `GET path` on a loopback HTTP port: (status, body), or `None` if nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of an unlabelled metric in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// An `emtrack run` child process, killed on drop.
pub struct Emtrack {
    pub child: std::process::Child,
    pub http: u16,
    pub api: u16,
}

impl Drop for Emtrack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emtrack {
    /// Starts `emtrack run` (one worker) and waits until `/readyz` says ready.
    pub async fn start(
        db_url: &str,
        broker_port: u16,
        client_id: &str,
        log: &std::path::Path,
    ) -> Emtrack {
        let e = Emtrack::spawn(db_url, broker_port, client_id, log);
        let http = e.http;
        wait_until(Duration::from_secs(30), "emtrack is ready", || async move {
            http_get(http, "/readyz").is_some_and(|(s, _)| s == 200)
        })
        .await;
        e
    }

    /// Starts `emtrack run` (one worker) without waiting for anything.
    pub fn spawn(
        db_url: &str,
        broker_port: u16,
        client_id: &str,
        log: &std::path::Path,
    ) -> Emtrack {
        let http = device_sim::testbed::free_port().expect("free port");
        let api = device_sim::testbed::free_port().expect("free port");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
            .args([
                "run",
                // Flags only, whatever is installed in /etc/emtrack.
                "--config",
                "/dev/null",
                "--database-url",
                db_url,
                "--mqtt-client-id",
                client_id,
            ])
            .args(["--mqtt-port", &broker_port.to_string()])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .env("EMTRACK_WORKERS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("emtrack runs");
        Emtrack { child, http, api }
    }

    /// `/readyz`'s status and first line (`role active` or `role standby`).
    pub fn role(&self) -> Option<(u16, String)> {
        let (status, body) = http_get(self.http, "/readyz")?;
        Some((status, body.lines().next().unwrap_or("").to_owned()))
    }

    /// A metric's current value.
    pub fn metric(&self, name: &str) -> f64 {
        http_get(self.http, "/metrics")
            .and_then(|(_, b)| metric(&b, name))
            .unwrap_or(f64::NAN)
    }
}

/// Total stored fixes.
pub async fn fix_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fixes")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// A TCP proxy on loopback that can cut every connection and refuse new
/// ones, to make the database unreachable without stopping the shared server.
pub struct Proxy {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

impl Proxy {
    /// Forwards a free loopback port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                k.lock().expect("lock").push(task.abort_handle());
            }
        });
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    fn cut_all(&self) {
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut_all();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `emtrack` running in this process (one worker), subscribed to the broker.
pub struct Running {
    pub svc: emtrack::service::Service,
    pub metrics: ingest::Metrics,
    stop: tokio_util::sync::CancellationToken,
}

impl Running {
    /// Starts the service on `pool` and waits until it is subscribed.
    pub async fn start(pool: PgPool, broker_port: u16, client_id: &str) -> Running {
        Running::start_with(pool, config(broker_port, client_id)).await
    }

    /// Starts the service on `pool` with `cfg` and waits until it is subscribed.
    pub async fn start_with(pool: PgPool, cfg: Config) -> Running {
        // The service's warnings show with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_test_writer()
            .try_init();
        let stop = tokio_util::sync::CancellationToken::new();
        // A predecessor in the same test released it, or is gone.
        let lease = store::Lease::wait(
            &pool,
            &store::lease::holder_name(),
            Duration::from_secs(cfg.lease_period_s),
            Duration::from_millis(100),
            &stop,
        )
        .await
        .expect("the service lease");
        let svc = emtrack::service::start(&cfg, pool, lease, stop.clone())
            .await
            .expect("service starts");
        let subscribed = svc.subscribed.clone();
        wait_until(Duration::from_secs(10), "subscribed", || {
            let s = subscribed.clone();
            async move { s.load(std::sync::atomic::Ordering::Relaxed) }
        })
        .await;
        let metrics = svc.ingest.clone();
        Running { svc, metrics, stop }
    }

    /// SIGTERM's path: stop consuming, commit and ack what is held, store the
    /// alert service's last changes, disconnect; panics unless that takes
    /// under 10 s and every task ends without a failure.
    pub async fn shut_down(self) {
        self.stop.cancel();
        let failures = tokio::time::timeout(Duration::from_secs(10), self.svc.stopped())
            .await
            .expect("drains within 10 s");
        assert!(failures.is_empty(), "tasks failed: {failures:?}");
    }
}

/// Publishes `messages` with QoS 1 and waits for the broker's acks.
pub async fn publish_raw(port: u16, id: &str, messages: &[(String, Vec<u8>)]) {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, messages.len() + 8);
    for (topic, payload) in messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
    }
    let mut acked = 0;
    while acked < messages.len() {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publisher failed: {other:?}"),
        }
    }
}

/// Publishes a strap-opened event of `device`, 5 s old (a tamper alert).
pub async fn strap_opened(port: u16, device: &str) {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    let event = format!(
        r#"{{"v": 1, "device": "{device}", "events": [{{"t": "{t}", "event": "strap_opened"}}]}}"#
    );
    let topic = format!("em/v1/dev/{device}/event");
    publish_raw(port, "tamperer", &[(topic, event.into_bytes())]).await;
}

/// Publishes `uplinks` as emtrack JSON on their devices' topics (QoS 1).
pub async fn publish_uplinks(port: u16, id: &str, uplinks: &[protocol::Uplink]) {
    let messages: Vec<(String, Vec<u8>)> = uplinks
        .iter()
        .map(|u| {
            (
                protocol::Topic::for_device(&u.device, u.body.kind()),
                protocol::json::encode(u),
            )
        })
        .collect();
    publish_raw(port, id, &messages).await;
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The header block, lower-cased.
    pub headers: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics, naming the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.body, self.status))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), with
/// a bearer token and a JSON body if given; the answer read to its end
/// (chunked bodies decoded).
pub async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("answered within 60 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Logs in through the officer API; returns the session token.
pub async fn login(port: u16, username: &str, password: &str) -> String {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let r = call(port, "POST", "/v1/login", None, Some(&body)).await;
    assert_eq!(r.status, 200, "login of {username}: {}", r.body);
    r.json()["token"].as_str().expect("a token").to_owned()
}

/// Creates an officer API user with `password` (library call, as the CLI
/// does); returns its id.
pub async fn add_user(
    pool: &PgPool,
    username: &str,
    role: api::identity::Role,
    officer: Option<i64>,
    password: &str,
) -> i64 {
    api::accounts::add_user(
        pool,
        &api::accounts::NewUser {
            username: username.into(),
            role,
            officer_id: officer,
            display_name: None,
            password: Some(password.into()),
        },
    )
    .await
    .expect("user added")
}

/// An open alert stream: (event id, change JSON) of each `alert` event.
pub type Streamed = Arc<std::sync::Mutex<Vec<(i64, serde_json::Value)>>>;

/// Opens `GET /v1/alerts/stream` with `token` (and `Last-Event-ID` if
/// given); returns once the headers are in (the subscription exists), with
/// the events collected as they come and a handle that closes the stream.
pub async fn open_stream(
    port: u16,
    token: &str,
    last_event_id: Option<i64>,
) -> (Streamed, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!(
        "GET /v1/alerts/stream HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nauthorization: Bearer {token}\r\n"
    );
    if let Some(id) = last_event_id {
        req.push_str(&format!("last-event-id: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("request");
    let mut lines = BufReader::new(s).lines();
    let status = lines
        .next_line()
        .await
        .expect("read")
        .expect("a status line");
    assert!(status.contains(" 200 "), "the stream opens: {status}");
    while let Some(l) = lines.next_line().await.expect("read") {
        if l.is_empty() {
            break;
        }
    }
    let got: Streamed = Arc::default();
    let sink = got.clone();
    let task = tokio::spawn(async move {
        let mut id = None;
        while let Ok(Some(l)) = lines.next_line().await {
            // Chunked encoding: size lines and blank lines interleave; a
            // size of 0 ends the body (the stream was closed).
            if l == "0" {
                break;
            }
            if let Some(v) = l.strip_prefix("id: ") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(json) = l.strip_prefix("data: ")
                && let (Some(i), Ok(v)) = (id.take(), serde_json::from_str(json))
            {
                sink.lock().expect("stream").push((i, v));
            }
        }
    });
    (got, task)
}

/// An emtrack JSON fix message of `device`: one fix per (time ms, position).
pub fn json_fixes(device: &str, fixes: &[(i64, (f64, f64))]) -> Vec<u8> {
    let fixes: Vec<String> = fixes
        .iter()
        .map(|(t, (lat, lon))| {
            let t = jiff::Timestamp::from_millisecond(*t).expect("time");
            format!(r#"{{"t": "{t}", "lat": {lat}, "lon": {lon}, "acc": 8}}"#)
        })
        .collect();
    format!(
        r#"{{"v": 1, "device": "{device}", "fixes": [{}]}}"#,
        fixes.join(", ")
    )
    .into_bytes()
}
