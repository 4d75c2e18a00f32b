//! Alert latency probe (`device-sim probe`): publishes strap-opened events
//! for a few of the world's bracelets, stamped with the wall clock, and
//! times their `strap_tamper` notifications on the officer and duty topics.
//! Latency is receipt time minus event time (= publish time), in one
//! process and one clock, so it covers device → broker → emtrack (commit,
//! alert store) → broker → officer.

use protocol::{Body, DeviceId, Event, EventKind, Flags, RecordKind, Topic, Uplink};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a probe run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeReport {
    /// Events published.
    pub sent: usize,
    /// Their alerts received (first copy of each).
    pub received: usize,
    /// Latencies in ms, sorted.
    pub latencies_ms: Vec<i64>,
}

impl ProbeReport {
    /// The `q` quantile (0..=1) in ms.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let i = ((self.latencies_ms.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_ms.get(i).copied()
    }
}

/// Events sent, by (subject, event time ms), not yet answered; and the
/// latencies (ms) of those answered.
type Seen = (HashSet<(u64, i64)>, Vec<i64>);

/// Runs the probe: `rate` events per second for `secs`, round robin over
/// `devices` (bracelet id, subject id), then waits up to `drain` for the
/// last alerts.
// Over 80 lines: one loop sends on a schedule and matches answers as they
// come; the two share its locals.
pub async fn run(
    host: &str,
    port: u16,
    client_id: &str,
    devices: &[(String, u64)],
    rate: f64,
    secs: f64,
    drain: Duration,
) -> Result<ProbeReport, String> {
    if devices.is_empty() || rate <= 0.0 {
        return Err("the probe needs devices and a positive rate".into());
    }
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_clean_session(true);
    o.set_keep_alive(Duration::from_secs(15));
    let (client, mut el) = AsyncClient::new(o, 1024);
    client
        .subscribe("em/v1/officers/+/alerts", QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    client
        .subscribe("em/v1/duty/alerts", QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let mut acks = 0;
    while acks < 2 {
        match el.poll().await {
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => acks += 1,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot subscribe: {e}")),
        }
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let poller = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let now = jiff::Timestamp::now().as_millisecond();
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    if v["change"] != "raised" || v["type"] != "strap_tamper" {
                        continue;
                    }
                    let Some(subject) = v["subject_id"].as_u64() else {
                        continue;
                    };
                    let Some(t) = v["event_time"]
                        .as_str()
                        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    else {
                        continue;
                    };
                    // Only the probe's own events (the load may open straps
                    // of the same bracelets), each once (QoS 1 may repeat).
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    if s.0.remove(&(subject, t.as_millisecond())) {
                        s.1.push(now - t.as_millisecond());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut sent = 0usize;
    let mut next = tokio::time::Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let (device, subject) = &devices[sent % devices.len()];
        let id = DeviceId::parse(device).map_err(|e| format!("{device}: {e}"))?;
        let time = jiff::Timestamp::now();
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .insert((*subject, time.as_millisecond()));
        let msg = Uplink {
            device: id.clone(),
            body: Body::Events(vec![Event {
                time,
                kind: EventKind::StrapOpened,
                battery_pct: Some(80),
                flags: Flags::default(),
            }]),
        };
        client
            .publish(
                Topic::for_device(&id, RecordKind::Event),
                QoS::AtLeastOnce,
                false,
                protocol::json::encode(&msg),
            )
            .await
            .map_err(|e| e.to_string())?;
        sent += 1;
        next += every;
        tokio::time::sleep_until(next).await;
    }
    let until = Instant::now() + drain;
    while Instant::now() < until {
        if seen.lock().unwrap_or_else(|e| e.into_inner()).0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poller.abort();
    let mut latencies = std::mem::take(&mut seen.lock().unwrap_or_else(|e| e.into_inner()).1);
    latencies.sort_unstable();
    Ok(ProbeReport {
        sent,
        received: latencies.len(),
        latencies_ms: latencies,
    })
}
