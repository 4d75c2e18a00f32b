//! Prometheus metrics of the service (`GET /metrics`).
//!
//! Names follow Prometheus conventions (`emtrack_…_total`, `_seconds`). No
//! label ever carries a device or subject id: labels are bounded sets
//! (rejection reasons, transition kinds, alert types, severities, channels).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the service exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// MQTT messages received.
    pub messages_received: IntCounter,
    /// Messages acknowledged to the broker (after commit).
    pub messages_acked: IntCounter,
    /// Fixes stored (new rows).
    pub fixes_accepted: IntCounter,
    /// Stored fixes flagged suspect (implausible jump).
    pub fixes_suspect: IntCounter,
    /// Fixes dropped because (device, fix time) was already stored.
    pub fixes_duplicate: IntCounter,
    /// Device events stored (new rows).
    pub events_stored: IntCounter,
    /// Heartbeats received.
    pub heartbeats: IntCounter,
    /// Messages refused, by reason.
    pub rejected: IntCounterVec,
    /// Messages per committed batch.
    pub batch_size: Histogram,
    /// Transaction time of a batch, seconds.
    pub commit_seconds: Histogram,
    /// Commits that failed and were retried.
    pub commit_retries: IntCounter,
    /// Engine time per batch, seconds.
    pub evaluation_seconds: Histogram,
    /// Commit time minus fix time, for fixes judged live, seconds.
    pub ingest_lag_seconds: Histogram,
    /// Rule transitions, by kind.
    pub transitions: IntCounterVec,
    /// Messages received and not yet acknowledged.
    pub queue_depth: IntGauge,
    /// MQTT (re)connections after the first.
    pub mqtt_reconnects: IntCounter,
    /// 1 while connected to the broker.
    pub mqtt_connected: IntGauge,
    /// Distinct devices heard from in the last 5 minutes.
    pub devices_seen_5m: IntGauge,
    /// Reference rows the engine could not take.
    pub reference_errors: IntCounter,
    /// Reference changes applied from NOTIFY.
    pub reference_reloads: IntCounter,
    /// Fixes replayed into the engine at startup.
    pub rebuild_fixes: IntCounter,
    /// `emtrack_alerts_raised_total{type, severity}`.
    pub alerts_raised: IntCounterVec,
    /// `emtrack_alerts_open{severity}` (open or acknowledged).
    pub alerts_open: IntGaugeVec,
    /// `emtrack_alert_ack_seconds`.
    pub alert_ack_seconds: Histogram,
    /// `emtrack_alert_escalations_total{level}`.
    pub alert_escalations: IntCounterVec,
    /// `emtrack_alert_delivery_attempts_total{channel}`.
    pub delivery_attempts: IntCounterVec,
    /// `emtrack_alert_delivery_failures_total{channel}`.
    pub delivery_failures: IntCounterVec,
    /// `emtrack_alert_dead_letters_total{channel}`.
    pub delivery_dead: IntCounterVec,
    /// `emtrack_alert_delivery_overflow_total{channel}`.
    pub delivery_overflow: IntCounterVec,
    /// `emtrack_alert_latency_seconds{channel}`.
    pub alert_latency: HistogramVec,
    /// `emtrack_alert_store_retries_total`.
    pub alert_store_retries: IntCounter,
    /// `emtrack_alert_key_conflicts_total`.
    pub alert_key_conflicts: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    /// A fresh set in its own registry (tests run several services in one process).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let secs = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let lag = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            3600.0,
        ];
        let sizes = vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
        Metrics {
            messages_received: counter(
                &r,
                "emtrack_messages_received_total",
                "MQTT messages received.",
            ),
            messages_acked: counter(
                &r,
                "emtrack_messages_acked_total",
                "MQTT messages acknowledged after their rows were committed.",
            ),
            fixes_accepted: counter(&r, "emtrack_fixes_accepted_total", "Fixes stored."),
            fixes_suspect: counter(
                &r,
                "emtrack_fixes_suspect_total",
                "Fixes stored but flagged suspect (implausible jump) and not judged.",
            ),
            fixes_duplicate: counter(
                &r,
                "emtrack_fixes_duplicate_total",
                "Fixes dropped because the same device and fix time was already stored.",
            ),
            events_stored: counter(&r, "emtrack_events_stored_total", "Device events stored."),
            heartbeats: counter(&r, "emtrack_heartbeats_total", "Heartbeats received."),
            rejected: counter_vec(
                &r,
                "emtrack_rejected_messages_total",
                "Messages refused, by reason (each is also written to rejected_messages).",
                "reason",
            ),
            batch_size: histogram(
                &r,
                "emtrack_batch_messages",
                "Messages per committed batch.",
                sizes,
            ),
            commit_seconds: histogram(
                &r,
                "emtrack_commit_duration_seconds",
                "Time to write and commit one batch.",
                secs.clone(),
            ),
            commit_retries: counter(
                &r,
                "emtrack_commit_retries_total",
                "Batch commits that failed and were retried (acks held meanwhile).",
            ),
            evaluation_seconds: histogram(
                &r,
                "emtrack_evaluation_duration_seconds",
                "Geofence engine time per batch.",
                secs,
            ),
            ingest_lag_seconds: histogram(
                &r,
                "emtrack_ingest_lag_seconds",
                "Commit time minus fix time, for fixes judged live (not store-and-forward backlog).",
                lag,
            ),
            transitions: counter_vec(
                &r,
                "emtrack_transitions_total",
                "Rule transitions stored, by kind.",
                "kind",
            ),
            queue_depth: gauge(
                &r,
                "emtrack_queue_depth",
                "Messages received and not yet acknowledged.",
            ),
            mqtt_reconnects: counter(
                &r,
                "emtrack_mqtt_reconnects_total",
                "Connections to the broker after the first.",
            ),
            mqtt_connected: gauge(
                &r,
                "emtrack_mqtt_connected",
                "1 while connected to the broker.",
            ),
            devices_seen_5m: gauge(
                &r,
                "emtrack_devices_seen_5m",
                "Distinct devices heard from in the last 5 minutes.",
            ),
            reference_errors: counter(
                &r,
                "emtrack_reference_errors_total",
                "Zone, rule or subject rows the engine could not take (skipped).",
            ),
            reference_reloads: counter(
                &r,
                "emtrack_reference_reloads_total",
                "Reference changes applied while running.",
            ),
            rebuild_fixes: counter(
                &r,
                "emtrack_rebuild_fixes_total",
                "Stored fixes replayed into the engine at startup.",
            ),
            alerts_raised: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "emtrack_alerts_raised_total",
                        "Alerts raised, by type and severity.",
                    ),
                    &["type", "severity"],
                )
                .expect("static metric definition");
                r.register(Box::new(c.clone()))
                    .expect("metric registered once");
                c
            },
            alerts_open: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "emtrack_alerts_open",
                        "Alerts not yet resolved (open or acknowledged), by severity.",
                    ),
                    &["severity"],
                )
                .expect("static metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            alert_ack_seconds: histogram(
                &r,
                "emtrack_alert_ack_seconds",
                "Time from raising an alert to an officer acknowledging it.",
                vec![
                    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0,
                ],
            ),
            alert_escalations: counter_vec(
                &r,
                "emtrack_alert_escalations_total",
                "Unacknowledged alerts escalated, by level reached (1 supervisor, 2 duty desk).",
                "level",
            ),
            delivery_attempts: counter_vec(
                &r,
                "emtrack_alert_delivery_attempts_total",
                "Alert notifications sent, by channel (mqtt, webhook).",
                "channel",
            ),
            delivery_failures: counter_vec(
                &r,
                "emtrack_alert_delivery_failures_total",
                "Alert notification attempts that failed, by channel.",
                "channel",
            ),
            delivery_dead: counter_vec(
                &r,
                "emtrack_alert_dead_letters_total",
                "Alert notifications given up after their attempts ran out (state dead), by channel.",
                "channel",
            ),
            delivery_overflow: counter_vec(
                &r,
                "emtrack_alert_delivery_overflow_total",
                "Notifications that found the in-memory queue full and were left to the database sweeper, by channel.",
                "channel",
            ),
            alert_latency: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "emtrack_alert_latency_seconds",
                        "Delivery time minus fix or event time, live alerts only, by channel.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        240.0,
                    ]),
                    &["channel"],
                )
                .expect("static metric definition");
                r.register(Box::new(h.clone()))
                    .expect("metric registered once");
                h
            },
            alert_store_retries: counter(
                &r,
                "emtrack_alert_store_retries_total",
                "Alert writes retried after a transient database error.",
            ),
            alert_key_conflicts: counter(
                &r,
                "emtrack_alert_key_conflicts_total",
                "Alerts the store already had under another id (dropped from memory; the stored one stands).",
            ),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
