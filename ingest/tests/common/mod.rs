//! Fixtures for the service tests: a world imported into the test database,
//! a scenario, an in-process service, and the checks against ground truth.

#![allow(dead_code, unreachable_pub)]

use device_sim::plan::Rates;
use device_sim::publish::{Pace, PublishConfig, PublishReport, publish};
use device_sim::stream::{Outgoing, Scenario, ScenarioConfig};
use device_sim::testbed::SeenTransition;
use device_sim::truth::Record;
use device_sim::world::{World, WorldConfig};
use ingest::config::Config;
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
    ingest::world::import(pool, &dir).await.expect("imports");
    let _ = std::fs::remove_dir_all(&dir);
    world
}

/// A scenario three weeks before the session date (all fixes in the past,
/// whatever the day: the start is fixed for determinism).
pub fn scenario(world: &Arc<World>, hours: i64, batch: usize) -> Scenario {
    Scenario::new(
        world.clone(),
        ScenarioConfig {
            start: "2026-11-01T00:00:00+05:00[Asia/Almaty]"
                .parse::<jiff::Zoned>()
                .expect("start")
                .timestamp(),
            span_ms: hours * 3_600_000,
            rates: Rates::busy(),
            batch,
        },
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
/// its metrics.
pub async fn wait_acked(m: &ingest::metrics::Metrics, n: u64, limit: Duration) {
    let ok = poll_until(limit, || {
        let m = m.clone();
        async move { m.messages_acked.get() >= n }
    })
    .await;
    if !ok {
        let text = m.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("emtrack_") && !l.contains("_bucket"))
            .collect();
        panic!("{n} messages not acked in {limit:?}:\n{}", lines.join("\n"));
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
    let cfg = PublishConfig {
        host: "127.0.0.1".into(),
        port,
        qos: QoS::AtLeastOnce,
        connections: 1,
        conn_per_device: false,
        client_id_prefix: prefix.into(),
        pace: Pace::Max,
        duration: Duration::from_secs(300),
        max_fixes: None,
        progress_every: Duration::from_secs(3600),
        inflight: 100,
    };
    publish(stream, devices, &cfg, 0).await.expect("publishes")
}

/// Rule transitions in the database, in the order they happened per key.
pub async fn transitions(pool: &PgPool) -> Vec<SeenTransition> {
    let rows: Vec<(i64, i64, i64, String, i64, bool)> = sqlx::query_as(
        "SELECT subject_id, rule_id, zone_id, kind, (extract(epoch FROM at) * 1000)::int8, historical \
         FROM rule_transitions ORDER BY subject_id, rule_id, zone_id, historical, at",
    )
    .fetch_all(pool)
    .await
    .expect("transitions");
    rows.into_iter()
        .map(|(s, r, z, kind, at, historical)| SeenTransition {
            subject: s as u64,
            rule: r as u64,
            zone: (z != 0).then_some(z as u64),
            start: matches!(
                kind.as_str(),
                "exclusion_entered"
                    | "inclusion_left"
                    | "curfew_violation_started"
                    | "proximity_entered"
            ),
            at: Timestamp::from_millisecond(at).expect("timestamp"),
            historical,
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
