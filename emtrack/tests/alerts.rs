//! Alerts end to end, with real Postgres and a private Mosquitto:
//! - a device-sim scenario gives exactly the alerts its (verified) rule
//!   transitions and tamper events imply, each once, resolved when the
//!   episode ended;
//! - a subscriber on the officers' and duty topics receives every
//!   notification, escalations reach the supervisor and the duty desk;
//! - a webhook receiver on loopback verifies every signature and sees the
//!   retries after induced failures;
//! - officers' actions over HTTP (a tamper alert needs a note), and the SSE
//!   stream carrying every change once;
//! - kill -9 mid-scenario loses no alert and duplicates none;
//! - in real time: a bracelet moving without a fix raises `location_failure`
//!   (resolved by the next fix), and one that goes silent raises
//!   `no_communication` (resolved when it speaks again);
//! - in real time: most of the fleet going silent at once is one
//!   `fleet_silent` incident for the duty desk, not an alert per bracelet,
//!   and only the bracelets still silent after it get their own.

mod common;

use api::identity::Role;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use device_sim::testbed::Broker;
use hmac::{Hmac, Mac};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sha2::Sha256;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "test-webhook-secret";
/// Each notification is refused this many times before it is taken.
const FAILURES: u32 = 2;

/// Notifications received on the officer and duty topics: (topic, JSON).
type Inbox = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

async fn subscribe(port: u16, id: &str) -> Inbox {
    let inbox: Inbox = Arc::default();
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe("em/v1/officers/+/alerts", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .subscribe("em/v1/duty/alerts", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut subscribed = 0;
    while subscribed < 2 {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
            subscribed += 1;
        }
    }
    let sink = inbox.clone();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).expect("notification is JSON");
                    sink.lock().expect("inbox").push((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    inbox
}

#[derive(Default)]
struct Hooked {
    /// Requests per idempotency key.
    attempts: HashMap<String, u32>,
    /// Bodies taken (2xx), by idempotency key.
    taken: BTreeMap<String, serde_json::Value>,
    bad_signatures: u32,
}

async fn hook(State(st): State<Arc<Mutex<Hooked>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let sig = h("x-emtrack-signature");
    let key = h("idempotency-key");
    let mut st = st.lock().expect("hook state");
    // t=<unix>,v1=<hex>: recompute, and refuse stale timestamps (replay).
    let (t, v1) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or(("", ""));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (jiff::Timestamp::now().as_second() - t).abs() < 300);
    if want != v1 || !fresh || key.is_empty() {
        st.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let n = st.attempts.entry(key.clone()).or_default();
    *n += 1;
    if *n <= FAILURES {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).expect("webhook body is JSON");
    assert_eq!(
        h("x-emtrack-alert-id"),
        v["alert_id"].to_string(),
        "alert id header"
    );
    st.taken.insert(key, v);
    StatusCode::OK
}

async fn webhook_receiver() -> (u16, Arc<Mutex<Hooked>>) {
    let st: Arc<Mutex<Hooked>> = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(st.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, st)
}

/// A violation alert's key as the store has it.
type Key = (i64, String, i64, i64, bool);

fn alert_type_of(kind: &str) -> &'static str {
    match kind {
        "exclusion_entered" | "exclusion_left" => "exclusion_zone_entered",
        "inclusion_left" | "inclusion_returned" => "inclusion_zone_left",
        "curfew_violation_started" | "curfew_violation_ended" => "curfew_violation",
        _ => "victim_proximity",
    }
}

/// Checks the alerts against the stored transitions and tamper events (both
/// checked against the ground truth by `check_against_truth`): one alert per
/// episode start, resolved exactly when its episode ended; one open tamper
/// alert per strap or case opening. Returns the number of alerts checked.
async fn check_alerts(pool: &PgPool) -> usize {
    // Episodes by key: ended or not.
    let mut expected: BTreeMap<Key, bool> = BTreeMap::new();
    let mut open: HashMap<(i64, i64, i64, bool), Key> = HashMap::new();
    for r in transition_rows(pool).await {
        let scope = if r.zone_id != 0 { r.zone_id } else { r.rule_id };
        let slot = (r.subject_id, r.rule_id, r.zone_id, r.historical);
        if r.starts() {
            let k = (
                r.subject_id,
                alert_type_of(&r.kind).to_owned(),
                scope,
                r.at.0,
                r.historical,
            );
            expected.entry(k.clone()).or_insert(false);
            open.insert(slot, k);
        } else if let Some(k) = open.remove(&slot) {
            expected.insert(k, true);
        }
    }
    let alerts: Vec<(i64, String, i64, store::Millis, bool, String, i32)> = sqlx::query_as(
        "SELECT subject_id, kind, scope, episode_at, historical, state, version \
         FROM alerts WHERE kind IN ('exclusion_zone_entered', 'inclusion_zone_left', 'curfew_violation', 'victim_proximity')",
    )
    .fetch_all(pool)
    .await
    .expect("alerts");
    let mut got: BTreeMap<Key, bool> = BTreeMap::new();
    for (s, kind, scope, ep, hist, state, _) in &alerts {
        let k = (*s, kind.clone(), *scope, ep.0, *hist);
        assert!(
            got.insert(k.clone(), state == "resolved").is_none(),
            "one alert per episode: {k:?}"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "one alert per episode start, no other"
    );
    for (k, ended) in &expected {
        assert_eq!(
            got[k], *ended,
            "resolved exactly when the episode ended: {k:?}"
        );
    }
    // Tamper: one per opening event of a subject's bracelet, never resolved by itself.
    let openings: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (e.device_id, e.event_time, e.kind)) FROM device_events e \
         JOIN assignments a ON a.device_id = e.device_id WHERE e.kind IN ('strap_opened', 'case_opened')",
    )
    .fetch_one(pool)
    .await
    .expect("openings");
    let tamper: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM alerts WHERE kind IN ('strap_tamper', 'case_tamper')")
            .fetch_all(pool)
            .await
            .expect("tamper");
    assert_eq!(
        tamper.len() as i64,
        openings,
        "one tamper alert per opening"
    );
    assert!(tamper.iter().all(|t| t.0 != "resolved"));
    // Every change logged, versions 1..=n without gaps.
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts a WHERE a.version <> (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.id) \
            OR a.version <> (SELECT max(version) FROM alert_events e WHERE e.alert_id = a.id)",
    )
    .fetch_one(pool)
    .await
    .expect("versions");
    assert_eq!(gaps, 0, "every alert's changes are all in alert_events");
    eprintln!(
        "{} violation alerts ({} resolved), {} tamper alerts",
        got.len(),
        got.values().filter(|r| **r).count(),
        tamper.len()
    );
    got.len() + tamper.len()
}

async fn undelivered(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alert_deliveries WHERE state <> 'delivered'")
        .fetch_one(pool)
        .await
        .expect("deliveries")
}

/// Every MQTT delivery was received on its topic, with its alert id and
/// version; returns how many copies arrived beyond one (QoS 1 may repeat).
async fn check_inbox(pool: &PgPool, inbox: &Inbox) -> usize {
    let rows: Vec<(i64, i32, String)> = sqlx::query_as(
        "SELECT alert_id, version, target FROM alert_deliveries WHERE channel = 'mqtt'",
    )
    .fetch_all(pool)
    .await
    .expect("deliveries");
    let want: BTreeSet<(i64, i64, String)> = rows
        .into_iter()
        .map(|(a, v, t)| (a, i64::from(v), t))
        .collect();
    let got: Vec<(i64, i64, String)> = inbox
        .lock()
        .expect("inbox")
        .iter()
        .map(|(t, v)| {
            (
                v["alert_id"].as_i64().expect("alert_id"),
                v["version"].as_i64().expect("version"),
                t.clone(),
            )
        })
        .collect();
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(distinct, want, "every notification reached its topic");
    got.len() - distinct.len()
}

const DESK_PASSWORD: &str = "duty desk password";

fn alert_config(port: u16, client: &str) -> emtrack::config::Config {
    let mut c = config(port, client);
    c.alerts.webhook_backoff_ms = 50;
    c.alerts.webhook_backoff_max_s = 1;
    // Escalation within the test: critical after 2 s (then the desk 2 s later).
    c.alerts.escalate_critical_s = 2;
    c.alerts.escalate_serious_s = 0;
    c
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_scenario_gives_exactly_its_alerts_and_they_reach_officers_and_webhooks(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 11, 60).await;
    let (hook_port, hooked) = webhook_receiver().await;
    sqlx::query("INSERT INTO webhooks (id, url, secret) VALUES (1, $1, $2)")
        .bind(format!("http://127.0.0.1:{hook_port}/hook"))
        .bind(SECRET)
        .execute(&pool)
        .await
        .expect("webhook");
    let inbox = subscribe(broker.port, "officer-console").await;
    let running =
        Running::start_with(pool.clone(), alert_config(broker.port, "emtrack-alerts-1")).await;
    let m = running.metrics.clone();
    let api = running.svc.api.port();
    add_user(&pool, "desk", Role::Duty, None, DESK_PASSWORD).await;
    let desk = login(api, "desk", DESK_PASSWORD).await;
    let (streamed, _stream) = open_stream(api, &desk, None).await;

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let report = publish_all(broker.port, &mut sc, devices, "pub-alerts").await;
    let truth = sc.finish();
    wait_acked(&m, report.messages, Duration::from_secs(120)).await;
    check_against_truth(&pool, &truth).await;

    // Critical alerts nobody acknowledges reach the duty desk (level 2).
    wait_until(Duration::from_secs(30), "escalations done", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM alerts WHERE severity = 'critical' AND state = 'open' AND level < 2",
            )
            .fetch_one(&pool)
            .await
            .expect("levels");
            n == 0
        }
    })
    .await;
    wait_until(Duration::from_secs(60), "every delivery delivered", || {
        let pool = pool.clone();
        async move { undelivered(&pool).await == 0 }
    })
    .await;
    let n = check_alerts(&pool).await;
    assert!(n >= 20, "only {n} alerts");
    // Each strap closing again is recorded on its open tamper alert (a
    // change the officer hears of), which stays open for a note.
    let closed: Vec<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT a.kind, e.note, a.condition_ended_at IS NOT NULL FROM alert_events e \
         JOIN alerts a ON a.id = e.alert_id WHERE e.change = 'condition_ended'",
    )
    .fetch_all(&pool)
    .await
    .expect("closings");
    assert!(!closed.is_empty(), "the scenario closes straps");
    for (kind, note, marked) in &closed {
        assert_eq!(kind, "strap_tamper");
        assert!(
            note.as_deref()
                .is_some_and(|n| n.starts_with("strap closed at ")),
            "{note:?}"
        );
        assert!(marked);
    }

    // MQTT: every notification on its topic; escalations went up the chain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = check_inbox(&pool, &inbox).await;
    let escalations: Vec<(i32, String)> = sqlx::query_as(
        "SELECT e.level::int4, d.target FROM alert_events e JOIN alert_deliveries d \
           ON d.alert_id = e.alert_id AND d.version = e.version AND d.channel = 'mqtt' \
         WHERE e.change = 'escalated'",
    )
    .fetch_all(&pool)
    .await
    .expect("escalations");
    assert!(!escalations.is_empty(), "critical alerts escalated");
    let supervisors: BTreeSet<String> =
        sqlx::query_as::<_, (i64,)>("SELECT id FROM officers WHERE role = 'supervisor'")
            .fetch_all(&pool)
            .await
            .expect("supervisors")
            .into_iter()
            .map(|(id,)| format!("em/v1/officers/{id}/alerts"))
            .collect();
    for (level, topic) in &escalations {
        match level {
            1 => assert!(
                supervisors.contains(topic),
                "level 1 goes to a supervisor: {topic}"
            ),
            _ => assert_eq!(topic, "em/v1/duty/alerts"),
        }
    }

    // SSE: every notified change once, in the order stored.
    let mut changes: Vec<(i64, i64)> = sqlx::query_as::<_, (i64, i32)>(
        "SELECT DISTINCT alert_id, version FROM alert_deliveries WHERE channel = 'mqtt'",
    )
    .fetch_all(&pool)
    .await
    .expect("changes")
    .into_iter()
    .map(|(a, v)| (a, i64::from(v)))
    .collect();
    changes.sort();
    let mut got: Vec<(i64, i64)> = streamed
        .lock()
        .expect("sse")
        .iter()
        .map(|(_, v)| {
            (
                v["alert_id"].as_i64().expect("id"),
                v["version"].as_i64().expect("v"),
            )
        })
        .collect();
    let n_streamed = got.len();
    got.sort();
    assert_eq!(got, changes, "the SSE stream carried every change once");

    // The queue leaves charger records out unless asked for.
    let chargers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE kind IN ('charger_connected', 'charger_disconnected')",
    )
    .fetch_one(&pool)
    .await
    .expect("chargers");
    let kinds = |body: serde_json::Value| -> BTreeSet<String> {
        body["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| a["type"].as_str().expect("type").to_owned())
            .collect()
    };
    let queue = kinds(
        call(api, "GET", "/v1/alerts?limit=500", Some(&desk), None)
            .await
            .json(),
    );
    assert!(
        !queue.iter().any(|k| k.starts_with("charger_")),
        "{queue:?}"
    );
    let all = kinds(
        call(
            api,
            "GET",
            "/v1/alerts?limit=500&records=true",
            Some(&desk),
            None,
        )
        .await
        .json(),
    );
    assert_eq!(
        all.iter().any(|k| k.starts_with("charger_")),
        chargers > 0,
        "{all:?}"
    );

    // Webhooks: every change delivered after exactly FAILURES refusals, all signed.
    let rows: Vec<(i64, i32, i32)> = sqlx::query_as(
        "SELECT alert_id, version, attempts FROM alert_deliveries WHERE channel = 'webhook'",
    )
    .fetch_all(&pool)
    .await
    .expect("webhook deliveries");
    {
        let st = hooked.lock().expect("hook state");
        assert_eq!(st.bad_signatures, 0, "every signature verifies");
        assert_eq!(
            st.taken.len(),
            rows.len(),
            "every change reached the webhook"
        );
        for (alert, version, attempts) in &rows {
            let key = format!("{alert}-{version}");
            assert_eq!(*attempts as u32, FAILURES + 1, "retried after each failure");
            assert_eq!(st.attempts[&key], FAILURES + 1);
            assert_eq!(st.taken[&key]["alert_id"].as_i64(), Some(*alert));
        }
    }

    // An officer's actions: a tamper alert is resolved only with a note and
    // a disposition, and the actor is the caller (its subject's officer).
    let (tamper, officer_id): (i64, i64) = sqlx::query_as(
        "SELECT a.id, s.officer_id FROM alerts a JOIN subjects s ON s.id = a.subject_id \
         WHERE a.kind = 'strap_tamper' AND s.officer_id IS NOT NULL ORDER BY a.id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a strap tamper alert of a subject with an officer");
    add_user(
        &pool,
        "officer1",
        Role::Officer,
        Some(officer_id),
        DESK_PASSWORD,
    )
    .await;
    let officer = login(api, "officer1", DESK_PASSWORD).await;
    let (p_ack, p_res) = (
        format!("/v1/alerts/{tamper}/acknowledge"),
        format!("/v1/alerts/{tamper}/resolve"),
    );
    let note = |n: &str| serde_json::json!({"note": n, "disposition": "device_fault"}).to_string();
    let mut codes = Vec::new();
    for (path, token, body) in [
        (&p_ack, None, "{}".to_owned()),
        (&p_ack, Some(&officer), r#"{"officer_id": 2}"#.to_owned()),
        (&p_ack, Some(&officer), "{}".to_owned()),
        (&p_res, Some(&officer), r#"{"note": "ok"}"#.to_owned()),
        (&p_res, Some(&officer), note("")),
        (&p_res, Some(&officer), note("a\u{0}b")),
        (&p_res, Some(&officer), note("strap refitted at the office")),
        (&p_res, Some(&officer), note("again")),
        (
            &"/v1/alerts/999999999/acknowledge".to_owned(),
            Some(&officer),
            "{}".to_owned(),
        ),
    ] {
        codes.push(
            call(api, "POST", path, token.map(String::as_str), Some(&body))
                .await
                .status,
        );
    }
    // No credential; a claimed officer id; done; no disposition; empty
    // note; NUL in the note; done; already resolved; no such alert.
    assert_eq!(codes, vec![401, 400, 200, 400, 422, 422, 200, 409, 404]);
    let (state, note): (String, Option<String>) = sqlx::query_as(
        "SELECT a.state, e.note FROM alerts a JOIN alert_events e ON e.alert_id = a.id AND e.version = a.version \
         WHERE a.id = $1",
    )
    .bind(tamper)
    .fetch_one(&pool)
    .await
    .expect("resolved");
    assert_eq!(state, "resolved");
    assert_eq!(note.as_deref(), Some("strap refitted at the office"));
    let (by, disposition): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT e.user_id, e.disposition FROM alert_events e JOIN users u ON u.id = e.user_id \
         WHERE e.alert_id = $1 AND e.change = 'resolved' AND u.username = 'officer1'",
    )
    .bind(tamper)
    .fetch_one(&pool)
    .await
    .expect("resolved by officer1");
    assert!(by.is_some());
    assert_eq!(disposition.as_deref(), Some("device_fault"));
    let body = running.svc.render_metrics();
    for name in [
        "emtrack_alerts_raised_total",
        "emtrack_alert_latency_seconds_count",
        "emtrack_alert_escalations_total",
        "emtrack_alert_ack_seconds_count",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} is exported"
        );
    }
    eprintln!(
        "{n} alerts, {} notifications on MQTT ({extra} repeated copies), {} webhook deliveries, {n_streamed} SSE events",
        inbox.lock().expect("inbox").len(),
        rows.len()
    );
    running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn kill_9_mid_scenario_loses_no_alert_and_duplicates_none(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 12, 60).await;
    let inbox = subscribe(broker.port, "officer-console-k9").await;
    let db = database_url(&pool, 5432);
    let log = std::env::temp_dir().join(format!("emtrack-alerts-k9-{}.log", std::process::id()));
    let mut emtrack = Emtrack::start(&db, broker.port, "emtrack-alerts-k9", &log).await;

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let all: Vec<_> = sc.by_ref().collect();
    let truth = sc.finish();
    let half = all.len() / 2;
    let mut first = all[..half].iter().cloned();
    publish_all(broker.port, &mut first, devices, "pub-k9-a").await;
    // Some alerts exist, then kill -9 while it is still working through the backlog.
    wait_until(Duration::from_secs(60), "alerts being raised", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
                .fetch_one(&pool)
                .await
                .expect("alerts");
            n >= 5
        }
    })
    .await;
    emtrack.child.kill().expect("kill -9");
    let _ = emtrack.child.wait();
    let mut rest = all[half..].iter().cloned();
    publish_all(broker.port, &mut rest, devices, "pub-k9-b").await;
    let emtrack = Emtrack::start(&db, broker.port, "emtrack-alerts-k9", &log).await;
    wait_until(Duration::from_secs(120), "all messages stored", || {
        let pool = pool.clone();
        let want: u64 = truth_fixes(&truth).values().sum();
        async move { fix_count(&pool).await as u64 >= want }
    })
    .await;
    wait_until(Duration::from_secs(60), "every delivery delivered", || {
        let pool = pool.clone();
        async move { undelivered(&pool).await == 0 }
    })
    .await;
    // Settle: the last transitions reach the alert service and the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_against_truth(&pool, &truth).await;
    let n = check_alerts(&pool).await;
    assert!(n >= 20, "only {n} alerts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = check_inbox(&pool, &inbox).await;
    eprintln!(
        "after kill -9: {n} alerts, {extra} repeated MQTT copies, {} raised after restart",
        emtrack.metric("emtrack_alerts_raised_total")
    );
    drop(emtrack);
}

async fn alert_state(pool: &PgPool, kind: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM alerts WHERE kind = $1 ORDER BY id DESC LIMIT 1")
        .bind(kind)
        .fetch_optional(pool)
        .await
        .expect("alert state")
}

async fn wait_state(pool: &PgPool, kind: &str, state: &str, limit: Duration) {
    wait_until(limit, &format!("{kind} {state}"), || {
        let pool = pool.clone();
        let (kind, state) = (kind.to_owned(), state.to_owned());
        async move { alert_state(&pool, &kind).await.as_deref() == Some(state.as_str()) }
    })
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn location_failure_and_silence_in_real_time(pool: PgPool) {
    use protocol::{Body, DeviceId, Fix, Flags, Heartbeat, Uplink};
    let broker = Broker::start().expect("mosquitto starts");
    world(&pool, 13, 5).await;
    let (device, subject): (String, i64) = sqlx::query_as(
        "SELECT a.device_id, a.subject_id FROM assignments a JOIN devices d ON d.id = a.device_id \
         WHERE d.kind = 'bracelet' ORDER BY a.subject_id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a bracelet");
    // This bracelet reports every second (silent after 1 + 1 s); the others
    // hourly, so that they stay out of the way.
    // It sends emtrack JSON below (a device sending another format than its
    // registered one is refused).
    sqlx::query(
        "UPDATE devices SET report_interval_s = CASE WHEN id = $1 THEN 1 ELSE 3600 END, \
                format = CASE WHEN id = $1 THEN 'json' ELSE format END",
    )
    .bind(&device)
    .execute(&pool)
    .await
    .expect("intervals");
    let mut cfg = config(broker.port, "emtrack-alerts-rt");
    cfg.alerts.silence_buffer_s = 1;
    cfg.alerts.outage_hold_s = 1;
    cfg.alerts.location_failure_after_s = 60;
    let inbox = subscribe(broker.port, "officer-console-rt").await;
    let running = Running::start_with(pool.clone(), cfg).await;

    let id = DeviceId::parse(&device).expect("device id");
    let now = jiff::Timestamp::now();
    let at = |s: i64| {
        now.checked_add(jiff::SignedDuration::from_secs(s))
            .expect("time")
    };
    let fix = |t| Uplink {
        device: id.clone(),
        body: Body::Fixes(vec![Fix {
            time: t,
            lat_e7: 432_380_000,
            lon_e7: 769_450_000,
            accuracy_m: 8,
            speed_cm_s: None,
            heading_cdeg: None,
            battery_pct: Some(90),
            flags: Flags::default(),
        }]),
    };
    let heartbeat = |t, motion| Uplink {
        device: id.clone(),
        body: Body::Heartbeats(vec![Heartbeat {
            time: t,
            battery_pct: Some(90),
            flags: Flags {
                motion,
                ..Flags::default()
            },
            pending: 0,
        }]),
    };
    // A fix two minutes ago, at rest since (normal), then motion without a fix.
    publish_uplinks(
        broker.port,
        "bracelet-rt-1",
        &[
            fix(at(-120)),
            heartbeat(at(-90), false),
            heartbeat(at(0), true),
        ],
    )
    .await;
    wait_state(&pool, "location_failure", "open", Duration::from_secs(10)).await;
    let (episode, event): (store::Millis, store::Millis) = sqlx::query_as(
        "SELECT episode_at, event_at \
         FROM alerts WHERE kind = 'location_failure'",
    )
    .fetch_one(&pool)
    .await
    .expect("location failure");
    assert_eq!(episode.0, at(-120).as_second() * 1000, "since the last fix");
    assert_eq!(
        event.0,
        now.as_second() * 1000,
        "shown by the motion heartbeat"
    );
    publish_uplinks(broker.port, "bracelet-rt-2", &[fix(at(1))]).await;
    wait_state(
        &pool,
        "location_failure",
        "resolved",
        Duration::from_secs(10),
    )
    .await;

    // Nothing more: silent after 2 s; then a heartbeat brings it back.
    wait_state(&pool, "no_communication", "open", Duration::from_secs(15)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE kind = 'no_communication'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 1, "only the silent bracelet, once");
    let silent_subject: i64 =
        sqlx::query_scalar("SELECT subject_id FROM alerts WHERE kind = 'no_communication'")
            .fetch_one(&pool)
            .await
            .expect("subject");
    assert_eq!(silent_subject, subject);
    publish_uplinks(broker.port, "bracelet-rt-3", &[heartbeat(at(5), false)]).await;
    wait_state(
        &pool,
        "no_communication",
        "resolved",
        Duration::from_secs(10),
    )
    .await;

    wait_until(Duration::from_secs(10), "every delivery delivered", || {
        let pool = pool.clone();
        async move { undelivered(&pool).await == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_inbox(&pool, &inbox).await;
    let changes: Vec<(String, String)> = inbox
        .lock()
        .expect("inbox")
        .iter()
        .map(|(_, v)| {
            (
                v["type"].as_str().unwrap_or("").to_owned(),
                v["change"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("location_failure", "raised"),
        ("location_failure", "resolved"),
        ("no_communication", "raised"),
        ("no_communication", "resolved"),
    ] {
        assert!(
            changes.iter().any(|c| (c.0.as_str(), c.1.as_str()) == want),
            "the officer was told {want:?}"
        );
    }
    running.shut_down().await;
}

/// The issue's trial: stopping the simulator raised an alert per bracelet
/// within a second. Here 25 bracelets (reporting every second, silent after
/// 2 s) all stop at once: one `fleet_silent` incident for the duty desk.
/// Twenty come back (and keep reporting): the incident resolves, and only
/// the five still silent get `no_communication` alerts of their own, after
/// the hold.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_mass_silence_is_one_incident_and_only_the_still_silent_get_alerts(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    world(&pool, 16, 25).await;
    sqlx::query(
        "UPDATE devices SET report_interval_s = 1, format = 'json' WHERE kind = 'bracelet'",
    )
    .execute(&pool)
    .await
    .expect("intervals");
    let bracelets: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.device_id, a.subject_id FROM assignments a JOIN devices d ON d.id = a.device_id \
         WHERE d.kind = 'bracelet' ORDER BY a.subject_id",
    )
    .fetch_all(&pool)
    .await
    .expect("bracelets");
    assert_eq!(bracelets.len(), 25);
    let mut cfg = config(broker.port, "emtrack-alerts-outage");
    cfg.alerts.silence_buffer_s = 1;
    cfg.alerts.outage_hold_s = 5;
    cfg.alerts.outage_min_devices = 10;
    cfg.alerts.outage_share = 0.5;
    let running = Running::start_with(pool.clone(), cfg).await;
    let fix = |d: &str| {
        let t = store::now_ms();
        (
            format!("em/v1/dev/{d}/fix"),
            json_fixes(d, &[(t, (43.238, 76.945))]),
        )
    };
    let all: Vec<_> = bracelets.iter().map(|(d, _)| fix(d)).collect();
    publish_raw(broker.port, "outage-pub-1", &all).await;
    wait_state(&pool, "fleet_silent", "open", Duration::from_secs(20)).await;
    let registry = running.svc.registry.clone();
    let value = move |name: &str| {
        let body = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("metrics");
        metric(&body, name)
    };
    wait_until(Duration::from_secs(10), "every bracelet silent", || {
        let v = value("emtrack_outage_silent_bracelets");
        async move { v == Some(25.0) }
    })
    .await;

    // Twenty come back and keep reporting (every 500 ms, until the end).
    let (back, silent) = bracelets.split_at(20);
    let keep = tokio_util::sync::CancellationToken::new();
    let online = {
        let (keep, port) = (keep.clone(), broker.port);
        let devices: Vec<String> = back.iter().map(|(d, _)| d.clone()).collect();
        tokio::spawn(async move {
            let mut n = 0;
            while !keep.is_cancelled() {
                let msgs: Vec<_> = devices.iter().map(|d| fix(d)).collect();
                publish_raw(port, &format!("outage-pub-back-{n}"), &msgs).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    wait_state(&pool, "fleet_silent", "resolved", Duration::from_secs(20)).await;
    wait_until(
        Duration::from_secs(20),
        "the still silent's own alerts",
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM alerts WHERE kind = 'no_communication'",
                )
                .fetch_one(&pool)
                .await
                .expect("count");
                n >= 5
            }
        },
    )
    .await;
    keep.cancel();
    online.await.expect("publisher");
    let alerted: BTreeSet<i64> =
        sqlx::query_scalar("SELECT subject_id FROM alerts WHERE kind = 'no_communication'")
            .fetch_all(&pool)
            .await
            .expect("subjects")
            .into_iter()
            .collect();
    let still: BTreeSet<i64> = silent.iter().map(|(_, s)| *s).collect();
    assert_eq!(alerted, still, "only the bracelets silent after the outage");
    let incidents: Vec<(i64, String)> = sqlx::query_as(
        "SELECT subject_id, d.target FROM alerts a JOIN alert_deliveries d ON d.alert_id = a.id \
         WHERE a.kind = 'fleet_silent' AND d.channel = 'mqtt' AND d.version = 1",
    )
    .fetch_all(&pool)
    .await
    .expect("incident");
    assert_eq!(
        incidents,
        vec![(0, "em/v1/duty/alerts".to_owned())],
        "one incident, raised to the duty desk"
    );
    assert_eq!(value("emtrack_fleet_outages_total"), Some(1.0));
    assert_eq!(value("emtrack_silences_absorbed_total"), Some(20.0));
    assert_eq!(value("emtrack_outage_silent_bracelets"), Some(0.0));
    running.shut_down().await;
}

/// A protected person's phone that goes silent degrades the proximity
/// order (it cannot be judged without the phone's position): the subject's
/// officer gets `protection_degraded`, resolved when the phone is heard
/// again.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_silent_victim_phone_degrades_protection_until_it_is_heard(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO subjects (id, reference, officer_id) VALUES (1, 'S-1', 1)",
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('EM-P-1', 'bracelet', 'json', 3600)",
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('VP-1', 'victim_phone', 'json', 1)",
        "INSERT INTO assignments (device_id, subject_id) VALUES ('EM-P-1', 1)",
        "INSERT INTO victims (id, device_id, protected_from) VALUES (1, 'VP-1', 1)",
        "INSERT INTO rules (id, subject_id, kind, other_device, min_distance_m, max_age_s) \
         VALUES (1, 1, 'proximity', 'VP-1', 500, 300)",
    ];
    for q in setup {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    let mut cfg = config(broker.port, "emtrack-alerts-phone");
    cfg.alerts.silence_buffer_s = 1;
    cfg.alerts.outage_hold_s = 1;
    let inbox = subscribe(broker.port, "officer-console-phone").await;
    let running = Running::start_with(pool.clone(), cfg).await;
    let phone = |n: i64| {
        let t = store::now_ms();
        vec![(
            "em/v1/dev/VP-1/fix".to_owned(),
            json_fixes("VP-1", &[(t - n, (43.25, 76.95))]),
        )]
    };
    publish_raw(broker.port, "phone-pub-1", &phone(0)).await;
    wait_state(
        &pool,
        "protection_degraded",
        "open",
        Duration::from_secs(15),
    )
    .await;
    let (subject, device): (i64, Option<String>) = sqlx::query_as(
        "SELECT subject_id, device_id FROM alerts WHERE kind = 'protection_degraded'",
    )
    .fetch_one(&pool)
    .await
    .expect("alert");
    assert_eq!((subject, device.as_deref()), (1, Some("VP-1")));
    publish_raw(broker.port, "phone-pub-2", &phone(0)).await;
    wait_state(
        &pool,
        "protection_degraded",
        "resolved",
        Duration::from_secs(10),
    )
    .await;
    let bracelet_alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts WHERE kind = 'no_communication'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        bracelet_alerts, 0,
        "the phone's silence is not the bracelet's"
    );
    wait_until(Duration::from_secs(10), "every delivery delivered", || {
        let pool = pool.clone();
        async move { undelivered(&pool).await == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told: BTreeSet<(String, String)> = inbox
        .lock()
        .expect("inbox")
        .iter()
        .map(|(topic, v)| (topic.clone(), v["change"].as_str().unwrap_or("").to_owned()))
        .collect();
    for change in ["raised", "resolved"] {
        assert!(
            told.contains(&("em/v1/officers/1/alerts".to_owned(), change.to_owned())),
            "the officer was told: {told:?}"
        );
    }
    running.shut_down().await;
}
