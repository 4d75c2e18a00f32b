//! A small scenario goes through a real Mosquitto on loopback and a plain
//! subscriber receives every message, byte for byte.
//!
//! The test starts its own broker from `deploy/mosquitto/emtrack.conf` on a
//! free port (the system broker's defaults may drop QoS 1 messages for a slow
//! subscriber), and stops it when done.

use device_sim::plan::Rates;
use device_sim::publish::{Pace, PublishConfig, Sink, publish};
use device_sim::stream::{Scenario, ScenarioConfig};
use device_sim::world::{World, WorldConfig};
use rumqttc::QoS;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts mosquitto with the deployed config on a free loopback port.
fn broker() -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("emtrack-broker-{port}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/mosquitto/emtrack.conf"
    ))
    .expect("deploy/mosquitto/emtrack.conf")
    .replace(
        "listener 1883 127.0.0.1",
        &format!("listener {port} 127.0.0.1"),
    )
    .replace(
        "persistence_location /var/lib/mosquitto/",
        &format!("persistence_location {}/", dir.display()),
    );
    assert!(
        conf.contains(&format!("listener {port} ")),
        "config has the listener line"
    );
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).expect("config");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (apt install mosquitto)");
    // Readiness, not a fixed sleep: poll the port for at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, port, dir }
}

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
    let broker = broker();
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
        client_id_prefix: "test-pub".into(),
        pace: Pace::Max,
        duration: Duration::from_secs(120),
        max_fixes: None,
        progress_every: Duration::from_secs(3600),
        inflight: 100,
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
