//! Ingest's Prometheus metrics.
//!
//! Names follow Prometheus conventions (`emtrack_…_total`, `_seconds`). No
//! label ever carries a device or subject id: labels are bounded sets
//! (rejection reasons, transition kinds).

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, Registry, histogram_opts,
    register_histogram_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_with_registry,
};

/// Every metric ingest exports.
#[derive(Clone, Debug)]
pub struct Metrics {
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
    /// Fixes whose clock disagreed with their arrival, by direction.
    pub fixes_clock_suspect: IntCounterVec,
    /// Fix versions conflicting with a stored one (new rows of fix_conflicts).
    pub fix_conflicts: IntCounter,
    /// Findings about devices' records, by kind.
    pub findings: IntCounterVec,
    /// Messages sent again (DUP or retained) and already handled: skipped.
    pub messages_repeated: IntCounter,
    /// Reconnections on which the broker had lost emtrack's session.
    pub mqtt_sessions_lost: IntCounter,
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
    pub messages_unacked: IntGauge,
    /// MQTT (re)connections after the first.
    pub mqtt_reconnects: IntCounter,
    /// 1 while connected to the broker.
    pub mqtt_connected: IntGauge,
    /// Distinct devices heard from in the last 5 minutes.
    pub devices_online: IntGauge,
    /// Fixes replayed into the engine at startup.
    pub rebuild_fixes: IntCounter,
}

const REGISTERED: &str = "static metric, registered once";

impl Metrics {
    /// Registers ingest's metrics in `r`.
    // Over 80 lines by design: a table of definitions, one entry per metric;
    // its length is the number of metrics, not logic.
    pub fn new(r: &Registry) -> Metrics {
        let secs = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let lag = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            3600.0,
        ];
        let sizes = vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
        let counter = |name: &str, help: &str| {
            register_int_counter_with_registry!(name, help, r).expect(REGISTERED)
        };
        let gauge = |name: &str, help: &str| {
            register_int_gauge_with_registry!(name, help, r).expect(REGISTERED)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register_histogram_with_registry!(histogram_opts!(name, help, buckets), r)
                .expect(REGISTERED)
        };
        let by = |name: &str, help: &str, label: &str| {
            register_int_counter_vec_with_registry!(name, help, &[label], r).expect(REGISTERED)
        };
        Metrics {
            messages_received: counter(
                "emtrack_messages_received_total",
                "MQTT messages received.",
            ),
            messages_acked: counter(
                "emtrack_messages_acked_total",
                "MQTT messages acknowledged after their rows were committed.",
            ),
            fixes_accepted: counter("emtrack_fixes_accepted_total", "Fixes stored."),
            fixes_suspect: counter(
                "emtrack_fixes_suspect_total",
                "Fixes stored but flagged suspect (implausible jump) and not judged.",
            ),
            fixes_duplicate: counter(
                "emtrack_fixes_duplicate_total",
                "Fixes dropped because the same device and fix time was already stored.",
            ),
            fixes_clock_suspect: by(
                "emtrack_fixes_clock_suspect_total",
                "Fixes whose own time disagreed with their arrival order (ahead of arrival, or back inside the live stream): stored, judged in arrival order.",
                "direction",
            ),
            fix_conflicts: counter(
                "emtrack_fix_conflicts_total",
                "Fix versions disagreeing with the one stored for the same device and time (both kept in fix_conflicts).",
            ),
            findings: by(
                "emtrack_device_findings_total",
                "Findings about devices' records (clock faults, conflicting records), by kind.",
                "kind",
            ),
            messages_repeated: counter(
                "emtrack_messages_repeated_total",
                "Messages the broker sent again (DUP or retained) that were already handled: not stored or counted again.",
            ),
            mqtt_sessions_lost: counter(
                "emtrack_mqtt_sessions_lost_total",
                "Reconnections on which the broker no longer had emtrack's persistent session (messages it held may be lost).",
            ),
            events_stored: counter("emtrack_events_stored_total", "Device events stored."),
            heartbeats: counter("emtrack_heartbeats_total", "Heartbeats received."),
            rejected: by(
                "emtrack_rejected_messages_total",
                "Messages refused, by reason (each is also written to rejected_messages).",
                "reason",
            ),
            batch_size: histogram(
                "emtrack_batch_messages",
                "Messages per committed batch.",
                sizes,
            ),
            commit_seconds: histogram(
                "emtrack_commit_duration_seconds",
                "Time to write and commit one batch.",
                secs.clone(),
            ),
            commit_retries: counter(
                "emtrack_commit_retries_total",
                "Batch commits that failed and were retried (acks held meanwhile).",
            ),
            evaluation_seconds: histogram(
                "emtrack_evaluation_duration_seconds",
                "Geofence engine time per batch.",
                secs,
            ),
            ingest_lag_seconds: histogram(
                "emtrack_ingest_lag_seconds",
                "Commit time minus fix time, for fixes judged live (not store-and-forward backlog).",
                lag,
            ),
            transitions: by(
                "emtrack_transitions_total",
                "Rule transitions stored, by kind.",
                "kind",
            ),
            messages_unacked: gauge(
                "emtrack_messages_unacked",
                "Messages received and not yet acknowledged.",
            ),
            mqtt_reconnects: counter(
                "emtrack_mqtt_reconnects_total",
                "Connections to the broker after the first.",
            ),
            mqtt_connected: gauge("emtrack_mqtt_connected", "1 while connected to the broker."),
            devices_online: gauge(
                "emtrack_devices_online",
                "Devices online: distinct devices heard from in the last 5 minutes.",
            ),
            rebuild_fixes: counter(
                "emtrack_rebuild_fixes_total",
                "Stored fixes replayed into the engine at startup.",
            ),
        }
    }
}
