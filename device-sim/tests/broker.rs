//! A small scenario goes through a real Mosquitto on loopback and a plain
//! subscriber receives every message, byte for byte.
//!
//! The test starts its own broker from `deploy/mosquitto/insecure-loopback-demo.conf` on a
//! free port (the system broker's defaults may drop QoS 1 messages for a slow
//! subscriber), and stops it when done.

use device_sim::plan::Rates;
use device_sim::publish::{Pace, PublishConfig, Sink, publish};
use device_sim::stream::{Scenario, ScenarioConfig};
use device_sim::testbed::Broker;
use device_sim::world::{World, WorldConfig};
use rumqttc::QoS;
use std::sync::Arc;
use std::time::Duration;

fn scenario() -> Scenario {
    let world = Arc::new(World::generate(WorldConfig {
        seed: 21,
        subjects: 30,
        victim_share: 0.3,
        ..WorldConfig::default()
    }));
    Scenario::new(
        world,
        ScenarioConfig {
            start: "2026-11-23T10:00:00Z".parse().expect("start"),
            span_ms: 4 * 3_600_000,
            rates: Rates {
                malformed: 0.9,
                store_forward: 0.5,
                tamper: 0.3,
                ..Rates::default()
            },
            batch: 1,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_through_mosquitto() {
    let broker = Broker::start().expect("mosquitto starts");
    let mut expected: Vec<(String, Vec<u8>)> =
        scenario().map(|m| (m.topic, m.payload.to_vec())).collect();
    assert!(
        expected.len() > 5_000,
        "scenario too small: {}",
        expected.len()
    );
    assert!(
        expected.iter().any(|(_, p)| p.len() > 20_000),
        "the hostile huge batch is part of the run"
    );

    let sink = Sink::start(
        "127.0.0.1",
        broker.port,
        QoS::AtLeastOnce,
        "test-sink",
        true,
    )
    .await
    .expect("subscriber connects");
    let mut sc = scenario();
    let devices = sc.device_count();
    let cfg = PublishConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        qos: QoS::AtLeastOnce,
        connections: 3,
        conn_per_device: false,
        tls: None,
        identities: None,
        client_id_prefix: "test-pub".into(),
        pace: Pace::Max,
        duration: Duration::from_secs(120),
        max_fixes: None,
        progress_every: Duration::from_secs(3600),
        inflight: 100,
        wall_clock: false,
    };
    let report = publish(&mut sc, devices, &cfg, 0).await.expect("publishes");
    assert_eq!(report.stopped_by, "stream_end");
    assert_eq!(report.messages as usize, expected.len());
    assert_eq!(
        report.acked, report.messages,
        "every QoS 1 publish acknowledged"
    );

    let n = sink
        .wait_for(Some(report.messages), Duration::from_secs(20))
        .await;
    let mut got: Vec<(String, Vec<u8>)> = sink
        .stop()
        .await
        .into_iter()
        .map(|(t, p)| (t, p.to_vec()))
        .collect();
    assert_eq!(n, report.messages);
    got.sort();
    expected.sort();
    assert!(
        got == expected,
        "received messages differ from those published"
    );
}
