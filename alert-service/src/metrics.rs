//! The alert service's Prometheus metrics. Labels are bounded sets (alert
//! types, severities, levels, channels), never a subject or device id.

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    histogram_opts, register_histogram_vec_with_registry, register_histogram_with_registry,
    register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry,
};

/// Every metric the alert service exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `emtrack_alerts_raised_total{type, severity}`.
    pub alerts_raised: IntCounterVec,
    /// `emtrack_alerts_open{type,severity}` (open or acknowledged).
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
    /// `emtrack_alert_delivery_record_errors_total{channel}`.
    pub delivery_record_errors: IntCounterVec,
    /// `emtrack_alert_latency_seconds{channel}`.
    pub alert_latency: HistogramVec,
    /// `emtrack_alert_store_retries_total`.
    pub alert_store_retries: IntCounter,
    /// `emtrack_alert_key_conflicts_total`.
    pub alert_key_conflicts: IntCounter,
    /// `emtrack_fleet_outages_total`.
    pub fleet_outages: IntCounter,
    /// `emtrack_silences_absorbed_total`.
    pub silences_absorbed: IntCounter,
    /// `emtrack_outage_silent_bracelets`.
    pub outage_silent: IntGauge,
    /// `emtrack_alert_deliveries_pending{channel}`.
    pub deliveries_pending: IntGaugeVec,
    /// `emtrack_alert_delivery_oldest_pending_seconds{channel}`.
    pub delivery_oldest_pending: prometheus::GaugeVec,
}

const REGISTERED: &str = "static metric, registered once";

impl Metrics {
    /// Registers the alert service's metrics in `r`.
    // Over 80 lines by design: a table of definitions, one entry per metric;
    // its length is the number of metrics, not logic.
    pub fn new(r: &Registry) -> Metrics {
        let by_channel = |name: &str, help: &str| {
            register_int_counter_vec_with_registry!(name, help, &["channel"], r).expect(REGISTERED)
        };
        Metrics {
            alerts_raised: register_int_counter_vec_with_registry!(
                "emtrack_alerts_raised_total",
                "Alerts raised, by type and severity.",
                &["type", "severity"],
                r
            )
            .expect(REGISTERED),
            alerts_open: register_int_gauge_vec_with_registry!(
                "emtrack_alerts_open",
                "Alerts not yet resolved (open or acknowledged), by type and severity.",
                &["type", "severity"],
                r
            )
            .expect(REGISTERED),
            alert_ack_seconds: register_histogram_with_registry!(
                histogram_opts!(
                    "emtrack_alert_ack_seconds",
                    "Time from raising an alert to an officer acknowledging it.",
                    vec![10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0]
                ),
                r
            )
            .expect(REGISTERED),
            alert_escalations: register_int_counter_vec_with_registry!(
                "emtrack_alert_escalations_total",
                "Unacknowledged alerts escalated, by level reached (1 supervisor, 2 duty desk).",
                &["level"],
                r
            )
            .expect(REGISTERED),
            delivery_attempts: by_channel(
                "emtrack_alert_delivery_attempts_total",
                "Alert notifications sent, by channel (mqtt, webhook).",
            ),
            delivery_failures: by_channel(
                "emtrack_alert_delivery_failures_total",
                "Alert notification attempts that failed, by channel.",
            ),
            delivery_dead: by_channel(
                "emtrack_alert_dead_letters_total",
                "Alert notifications given up after their attempts ran out (state dead), by channel.",
            ),
            delivery_overflow: by_channel(
                "emtrack_alert_delivery_overflow_total",
                "Notifications that found the in-memory queue full and were left to the database sweeper, by channel.",
            ),
            delivery_record_errors: by_channel(
                "emtrack_alert_delivery_record_errors_total",
                "Delivery outcomes the database did not take (the row stays pending; the sweeper may send it again), by channel.",
            ),
            alert_latency: register_histogram_vec_with_registry!(
                histogram_opts!(
                    "emtrack_alert_latency_seconds",
                    "Delivery time minus fix or event time, live alerts only, by channel.",
                    vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        240.0,
                    ]
                ),
                &["channel"],
                r
            )
            .expect(REGISTERED),
            alert_store_retries: register_int_counter_with_registry!(
                "emtrack_alert_store_retries_total",
                "Alert writes retried after a transient database error.",
                r
            )
            .expect(REGISTERED),
            alert_key_conflicts: register_int_counter_with_registry!(
                "emtrack_alert_key_conflicts_total",
                "Alerts the store already had under another id (dropped from memory; the stored one stands).",
                r
            )
            .expect(REGISTERED),
            fleet_outages: register_int_counter_with_registry!(
                "emtrack_fleet_outages_total",
                "Fleet outages: many bracelets silent at once, one fleet_silent incident each.",
                r
            )
            .expect(REGISTERED),
            outage_silent: register_int_gauge_with_registry!(
                "emtrack_outage_silent_bracelets",
                "Bracelets silent in the fleet outage going on (0 when there is none).",
                r
            )
            .expect(REGISTERED),
            deliveries_pending: register_int_gauge_vec_with_registry!(
                "emtrack_alert_deliveries_pending",
                "Notifications not yet delivered (queued, in flight, waiting to retry or paused), by channel.",
                &["channel"],
                r
            )
            .expect(REGISTERED),
            delivery_oldest_pending: prometheus::register_gauge_vec_with_registry!(
                "emtrack_alert_delivery_oldest_pending_seconds",
                "Age of the oldest notification not yet delivered, by channel (0 when none).",
                &["channel"],
                r
            )
            .expect(REGISTERED),
            silences_absorbed: register_int_counter_with_registry!(
                "emtrack_silences_absorbed_total",
                "Bracelet silences that came back within a fleet outage (no alert of their own).",
                r
            )
            .expect(REGISTERED),
        }
    }
}
