//! The whole path on a real Mosquitto (started by the test from
//! `deploy/mosquitto/`) and real PostgreSQL (`#[sqlx::test]`, a fresh
//! database per test): device-sim → broker → emtrack → tables, checked
//! against the scenario's ground truth.

mod common;

use common::*;
use device_sim::testbed::Broker;
use ingest::service;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[sqlx::test(migrator = "ingest::MIGRATOR")]
async fn whole_path_matches_the_ground_truth_and_redelivery_adds_nothing(pool: PgPool) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 11, 40).await;
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let svc = service::start(
        &config(broker.port, "emtrack-test-whole"),
        pool.clone(),
        stop.clone(),
        done.clone(),
    )
    .await
    .expect("service starts");
    let m = svc.shared.metrics.clone();
    let shared = svc.shared.clone();
    wait_until(Duration::from_secs(10), "subscribed", || {
        let s = shared.clone();
        async move { s.mqtt_ready.load(std::sync::atomic::Ordering::Relaxed) }
    })
    .await;

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let report = publish_all(broker.port, &mut sc, devices, "pub-whole").await;
    let truth = sc.finish();
    assert_eq!(
        report.acked, report.messages,
        "the broker took every message"
    );
    let sent = report.messages;
    wait_acked(&m, sent, Duration::from_secs(120)).await;
    assert_eq!(m.messages_received.get(), sent);
    let matched = check_against_truth(&pool, &truth).await;
    assert!(matched >= 20, "only {matched} episodes");
    let stored_fixes = m.fixes_accepted.get();
    let before = transitions(&pool).await;
    eprintln!(
        "{sent} messages, {stored_fixes} fixes, {matched} episodes, {} transitions",
        before.len()
    );

    // Redelivery: the same messages again (the first 3,000) store nothing new.
    let mut again = scenario(&world, 30, 1).take(3_000);
    let report = publish_all(broker.port, &mut again, devices, "pub-again").await;
    let total = sent + report.messages;
    wait_acked(&m, total, Duration::from_secs(60)).await;
    assert_eq!(m.fixes_accepted.get(), stored_fixes, "no fix stored twice");
    assert_eq!(fixes_per_device(&pool).await, truth_fixes(&truth));
    assert_eq!(transitions(&pool).await, before, "no transition added");
    assert!(m.fixes_duplicate.get() > 0);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), done.cancelled())
        .await
        .expect("drains within 10 s");
    assert_eq!(m.queue_depth.get(), 0);
}
