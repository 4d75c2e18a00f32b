//! The reference loader's metrics.

use crate::sync::RowError;
use prometheus::{IntCounter, Registry, register_int_counter_with_registry};

/// Counters of reference loading.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `emtrack_reference_errors_total`: rows the engine could not take.
    pub errors: IntCounter,
    /// `emtrack_reference_reloads_total`: changes applied while running.
    pub reloads: IntCounter,
}

impl Metrics {
    /// Registers the reference metrics in `registry`.
    pub fn new(registry: &Registry) -> Metrics {
        Metrics {
            errors: register_int_counter_with_registry!(
                "emtrack_reference_errors_total",
                "Zone, rule, subject or device rows the engine could not take (skipped).",
                registry
            )
            .expect("static metric, registered once"),
            reloads: register_int_counter_with_registry!(
                "emtrack_reference_reloads_total",
                "Reference changes applied while running.",
                registry
            )
            .expect("static metric, registered once"),
        }
    }

    /// Logs and counts the rows a load skipped.
    pub fn record(&self, errors: &[RowError]) {
        for e in errors {
            tracing::error!(%e, "reference row skipped");
        }
        self.errors.inc_by(errors.len() as u64);
    }
}
