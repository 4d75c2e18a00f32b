//! Hot standby with two `emtrack run` processes on one database and one
//! broker: the second waits as the standby; `kill -9` of the active one
//! under simulator load; the standby takes over within 15 s with the same
//! persistent broker session; stored data equals the ground truth (nothing
//! lost, nothing duplicated, no alert twice); the old node, restarted,
//! stays the standby. A paused node is fenced when it resumes, and a node
//! that lost the lease makes no more delivery attempts.

mod common;

use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Waits until `node` stored everything and has nothing in flight, then
/// checks the store against the ground truth (fixes, events, refusals,
/// episodes) and that no alert was raised twice; (episodes matched, alerts).
async fn settled_as_truth(
    pool: &PgPool,
    node: &Emtrack,
    truth: &[device_sim::truth::Record],
) -> (usize, i64) {
    let total: u64 = truth_fixes(truth).values().sum();
    wait_until(Duration::from_secs(90), "everything is stored", || {
        let pool = pool.clone();
        async move { fix_count(&pool).await >= total as i64 }
    })
    .await;
    wait_until(Duration::from_secs(30), "nothing in flight", || {
        let d = node.metric("emtrack_messages_unacked");
        async move { d == 0.0 }
    })
    .await;
    let matched = check_against_truth(pool, truth).await;
    let (alerts, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (subject_id, kind, scope, episode_at)) FROM alerts",
    )
    .fetch_one(pool)
    .await
    .expect("alerts");
    assert!(alerts > 0, "the scenario raises alerts");
    assert_eq!(alerts, distinct, "no alert raised twice");
    (matched, alerts)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn kill_9_of_the_active_node_fails_over_to_the_standby(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 17, 60).await;
    let url = database_url(&pool, 5432);
    let log = std::env::temp_dir().join(format!("emtrack-failover-{}.log", broker.port));
    let _ = std::fs::remove_file(&log);
    let a = Emtrack::start(&url, broker.port, "emtrack-failover", &log).await;
    assert_eq!(a.role(), Some((200, "role active".into())));
    assert_eq!(a.metric("emtrack_lease_active"), 1.0);
    let b = Emtrack::spawn(&url, broker.port, "emtrack-failover", &log);
    wait_until(Duration::from_secs(30), "b waits as the standby", || {
        let role = b.role();
        async move { role == Some((503, "role standby".into())) }
    })
    .await;
    assert_eq!(b.metric("emtrack_lease_active"), 0.0);

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let port = broker.port;
    let publish = async move {
        let r = publish_all(port, &mut sc, devices, "pub-failover").await;
        (r, sc.finish())
    };
    // Kill the active node at about a third of the run, while publishing goes on.
    let failover = async {
        wait_until(Duration::from_secs(60), "a third is stored", || {
            let pool = pool.clone();
            async move { fix_count(&pool).await > 30_000 }
        })
        .await;
        let mut a = a;
        a.child.kill().expect("SIGKILL");
        let killed = Instant::now();
        a.child.wait().expect("reaped");
        let stored = fix_count(&pool).await;
        wait_until(Duration::from_secs(30), "b is active and ready", || {
            let role = b.role();
            async move { role == Some((200, "role active".into())) }
        })
        .await;
        (killed.elapsed(), stored)
    };
    let ((report, truth), (takeover, at_kill)) = tokio::join!(publish, failover);
    assert_eq!(report.acked, report.messages);
    let total: u64 = truth_fixes(&truth).values().sum();
    eprintln!(
        "killed the active node with {at_kill} of {total} fixes stored; the standby was active and ready {:.2} s later",
        takeover.as_secs_f64()
    );
    assert!(
        takeover < Duration::from_secs(15),
        "the standby takes over within 15 s, not {takeover:?}"
    );
    assert!(at_kill < total as i64, "killed mid-stream");
    let (matched, alerts) = settled_as_truth(&pool, &b, &truth).await;
    assert!(matched >= 15, "only {matched} episodes");
    assert_eq!(
        b.metric("emtrack_mqtt_sessions_lost_total"),
        0.0,
        "b took over the same persistent broker session"
    );
    let lease: (String, i64) =
        sqlx::query_as("SELECT holder, epoch FROM service_lease WHERE name = 'run'")
            .fetch_one(&pool)
            .await
            .expect("lease");
    assert_eq!(lease.1, 2, "one takeover: {lease:?}");
    eprintln!("{alerts} alerts, none twice; {matched} episodes matched");

    // The old node comes back: it stays the standby.
    let a2 = Emtrack::spawn(&url, broker.port, "emtrack-failover", &log);
    wait_until(
        Duration::from_secs(30),
        "the old node is the standby",
        || {
            let role = a2.role();
            async move { role == Some((503, "role standby".into())) }
        },
    )
    .await;
    // Several of its lease polls (1 s each) later, nothing has changed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a2.role(), Some((503, "role standby".into())));
    assert_eq!(b.role(), Some((200, "role active".into())));
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM service_lease")
        .fetch_one(&pool)
        .await
        .expect("lease");
    assert_eq!(epoch, 2, "no further takeover");
    let _ = std::fs::remove_file(&log);
}

/// A paused active node (SIGSTOP: a frozen host, its connections still
/// open) loses the lease when it expires; the standby takes over; when the
/// old node resumes, its writes are fenced and it stops by itself, and
/// nothing is lost or stored twice.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_paused_active_node_is_fenced_when_it_resumes(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 18, 40).await;
    let url = database_url(&pool, 5432);
    let log = std::env::temp_dir().join(format!("emtrack-pause-{}.log", broker.port));
    let _ = std::fs::remove_file(&log);
    let mut a = Emtrack::start(&url, broker.port, "emtrack-pause", &log).await;
    let b = Emtrack::spawn(&url, broker.port, "emtrack-pause", &log);
    wait_until(Duration::from_secs(30), "b waits as the standby", || {
        let role = b.role();
        async move { role == Some((503, "role standby".into())) }
    })
    .await;

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let port = broker.port;
    let publish = async move {
        let r = publish_all(port, &mut sc, devices, "pub-pause").await;
        (r, sc.finish())
    };
    let pid = a.child.id().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .expect("kill")
                .success()
        )
    };
    let pause = async {
        wait_until(Duration::from_secs(60), "some fixes are stored", || {
            let pool = pool.clone();
            async move { fix_count(&pool).await > 20_000 }
        })
        .await;
        signal("-STOP");
        let paused = Instant::now();
        wait_until(Duration::from_secs(30), "b is active and ready", || {
            let role = b.role();
            async move { role == Some((200, "role active".into())) }
        })
        .await;
        let takeover = paused.elapsed();
        signal("-CONT");
        takeover
    };
    let ((report, truth), takeover) = tokio::join!(publish, pause);
    eprintln!(
        "paused the active node; the standby was active and ready {:.2} s later (lease period 8 s)",
        takeover.as_secs_f64()
    );
    assert!(
        takeover < Duration::from_secs(15),
        "within 15 s, not {takeover:?}"
    );
    assert_eq!(report.acked, report.messages);
    // The old node finds it lost the lease and stops, with an error.
    let started = Instant::now();
    let status = loop {
        if let Some(s) = a.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the resumed node stops"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "it exits with an error: {status:?}");
    let (matched, _) = settled_as_truth(&pool, &b, &truth).await;
    assert!(matched >= 10, "only {matched} episodes");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // Its lease renewal or its alert service finds out first.
    assert!(
        text.contains("lost the service lease")
            || text.contains("the alert service's changes were fenced"),
        "the old node says why it stopped"
    );
    // The resumed node's reconnection took the shared broker session from
    // b for a moment; b reconnects and is ready again.
    wait_until(Duration::from_secs(30), "b is ready", || {
        let role = b.role();
        async move { role == Some((200, "role active".into())) }
    })
    .await;
    let _ = std::fs::remove_file(&log);
}

/// A webhook receiver that accepts each request's connection, notes when,
/// and closes it unanswered (a failed attempt); those times.
async fn closing_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            noted.lock().expect("times").push(Instant::now());
            drop(conn);
        }
    });
    (port, seen)
}

/// A node that lost the service lease makes no more attempts: its webhook
/// retries and its delivery sweeper's claims are fenced from the takeover
/// on, not only once its own renewal finds out. The takeover comes right
/// after a renewal, so the node goes on unaware for a quarter of its 40 s
/// lease, while a retry falls due every 3–6 s and the sweeper runs every
/// second: without the fence it would retry the first delivery and claim
/// and try the second, as the new active node does.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_node_that_lost_the_lease_makes_no_more_attempts(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let (hook_port, attempts) = closing_receiver().await;
    sqlx::query(
        "INSERT INTO webhooks (id, url, secret) VALUES (1, $1, 'whsec-test-secret-0123456789')",
    )
    .bind(format!("http://127.0.0.1:{hook_port}/hook"))
    .execute(&pool)
    .await
    .expect("webhook");
    sqlx::query(
        "INSERT INTO alerts (id, subject_id, kind, scope, episode_at, severity, state, event_at, \
                             raised_at, historical, version, resolved_at) \
         VALUES (1, 1, 'strap_tamper', 0, now(), 'critical', 'resolved', now(), now(), true, 2, now())",
    )
    .execute(&pool)
    .await
    .expect("an alert");
    let deliver = |version: i32| {
        sqlx::query_scalar::<_, String>(
            "INSERT INTO alert_deliveries (alert_id, version, channel, target, payload, next_attempt_at) \
             VALUES (1, $1, 'webhook', '1', '{}', now()) RETURNING next_attempt_at::text",
        )
        .bind(version)
        .fetch_one(&pool)
    };
    let mut cfg = config(broker.port, "emtrack-fenced-delivery");
    cfg.lease_period_s = 40;
    cfg.alerts.webhook_backoff_ms = 1_500;
    cfg.alerts.webhook_backoff_max_s = 3;
    let running = Running::start_with(pool.clone(), cfg).await;
    deliver(1).await.expect("a due delivery");
    let tried = || attempts.lock().expect("times").len();
    wait_until(Duration::from_secs(10), "the first attempt", || {
        let n = tried();
        async move { n >= 1 }
    })
    .await;
    // Another node takes over right after a renewal, as a standby does once
    // the lease expired.
    let expires = "SELECT expires_at::text FROM service_lease";
    let before: String = sqlx::query_scalar(expires)
        .fetch_one(&pool)
        .await
        .expect("lease");
    wait_until(Duration::from_secs(15), "a renewal", || {
        let (pool, before) = (pool.clone(), before.clone());
        async move {
            sqlx::query_scalar::<_, String>(expires)
                .fetch_one(&pool)
                .await
                .is_ok_and(|e| e != before)
        }
    })
    .await;
    sqlx::query("UPDATE service_lease SET holder = 'emtrack another node', epoch = epoch + 1")
        .execute(&pool)
        .await
        .expect("taken over");
    let took_over = Instant::now();
    let due = deliver(2).await.expect("a due delivery");

    let failures = tokio::time::timeout(Duration::from_secs(30), running.svc.stopped())
        .await
        .expect("the node stops by itself");
    assert!(
        failures
            .iter()
            .any(|f| f.contains("lost the service lease")),
        "it stops because it lost the lease: {failures:?}"
    );
    let stopped = took_over.elapsed();
    // An attempt already past the fence when the takeover came connects
    // within milliseconds; none starts later.
    let late: Vec<Duration> = attempts
        .lock()
        .expect("times")
        .iter()
        .filter(|t| **t > took_over)
        .map(|t| t.duration_since(took_over))
        .filter(|d| *d > Duration::from_millis(500))
        .collect();
    assert!(
        stopped > Duration::from_secs(3),
        "the node went on unaware long enough for a retry: {stopped:?}"
    );
    assert!(late.is_empty(), "attempts after the takeover: {late:?}");
    let second: (String, i32, String, Option<String>) = sqlx::query_as(
        "SELECT state, attempts, next_attempt_at::text, last_error FROM alert_deliveries WHERE version = 2",
    )
    .fetch_one(&pool)
    .await
    .expect("the second delivery");
    assert_eq!(
        second,
        ("pending".into(), 0, due, None),
        "neither claimed nor tried by the fenced node"
    );
}
