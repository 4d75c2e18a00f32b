//! Faults on the whole path: `kill -9` of the service mid-stream, and the
//! database unreachable mid-stream (cut by an in-test TCP proxy, not by
//! stopping the shared server). Nothing may be lost or duplicated: stored
//! fixes, events, refusals and rule transitions must equal the ground truth
//! exactly, as without the fault.

mod common;

use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 13, 60).await;
    let url = database_url(&pool, 5432);
    let log = std::env::temp_dir().join(format!("emtrack-kill-{}.log", broker.port));
    let first = Emtrack::start(&url, broker.port, "emtrack-kill", &log).await;

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let port = broker.port;
    let publish = async move {
        let r = publish_all(port, &mut sc, devices, "pub-kill").await;
        (r, sc.finish())
    };
    // Kill at about a third of the run (~96k fixes), while publishing goes on.
    let kill = async {
        wait_until(Duration::from_secs(60), "a third is stored", || {
            let pool = pool.clone();
            async move { fix_count(&pool).await > 30_000 }
        })
        .await;
        let mut first = first;
        first.child.kill().expect("SIGKILL");
        first.child.wait().expect("reaped");
        fix_count(&pool).await
    };
    let ((report, truth), at_kill) = tokio::join!(publish, kill);
    assert_eq!(report.acked, report.messages);
    let total: u64 = truth_fixes(&truth).values().sum();
    eprintln!("killed with {at_kill} of {total} fixes stored");
    assert!(fix_count(&pool).await < total as i64, "killed mid-stream");

    let second = Emtrack::start(&url, broker.port, "emtrack-kill", &log).await;
    wait_until(Duration::from_secs(90), "everything is stored", || {
        let pool = pool.clone();
        async move { fix_count(&pool).await >= total as i64 }
    })
    .await;
    // Let the last batches' transitions and refusals settle: wait until the
    // restarted service has nothing in flight.
    wait_until(Duration::from_secs(30), "the queue is empty", || {
        let d = second.metric("emtrack_messages_unacked");
        async move { d == 0.0 }
    })
    .await;
    eprintln!(
        "after restart: replayed {} fixes, {} duplicates dropped",
        second.metric("emtrack_rebuild_fixes_total"),
        second.metric("emtrack_fixes_duplicate_total")
    );
    let matched = check_against_truth(&pool, &truth).await;
    assert!(matched >= 15, "only {matched} episodes");

    // Graceful shutdown: SIGTERM, exit 0 within 10 s.
    let mut second = second;
    let pid = second.child.id().to_string();
    let started = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = loop {
        if let Some(s) = second.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exits within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "clean exit: {status:?}");
    let _ = std::fs::remove_file(&log);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn database_outage_mid_stream_holds_acks_and_loses_nothing(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 14, 40).await;
    let proxy = Proxy::start(5432).await;
    let via_proxy = store::connect(&database_url(&pool, proxy.port))
        .await
        .expect("connects through the proxy");
    let running = Running::start(via_proxy, broker.port, "emtrack-test-outage").await;
    let m = running.metrics.clone();

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let port = broker.port;
    let publish = async move {
        let r = publish_all(port, &mut sc, devices, "pub-outage").await;
        (r, sc.finish())
    };
    let outage = async {
        wait_until(Duration::from_secs(60), "some fixes are stored", || {
            let pool = pool.clone();
            async move { fix_count(&pool).await > 20_000 }
        })
        .await;
        proxy.cut();
        // Batches already past their commit may still be acked; after that,
        // nothing is acked while the database is unreachable.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acked = m.messages_acked.get();
        let stored = fix_count(&pool).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            m.messages_acked.get(),
            acked,
            "no ack while the database is down"
        );
        assert_eq!(fix_count(&pool).await, stored, "nothing written meanwhile");
        assert!(
            m.commit_retries.get() > 0,
            "commits failed and are being retried"
        );
        assert!(m.messages_unacked.get() > 0, "messages are held");
        proxy.restore();
        (acked, m.commit_retries.get())
    };
    let ((report, truth), (acked_at_cut, retries)) = tokio::join!(publish, outage);
    assert_eq!(report.acked, report.messages);
    wait_acked(&m, report.messages, Duration::from_secs(90)).await;
    eprintln!(
        "cut at {acked_at_cut} acked; {retries} retries; all {} messages acked after recovery",
        report.messages
    );
    let matched = check_against_truth(&pool, &truth).await;
    assert!(matched >= 10, "only {matched} episodes");
    running.shut_down().await;
}
