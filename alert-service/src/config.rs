//! The alert service's settings: the `[alerts]` table of the configuration.

use alerts::{AlertType, Policy, Severity};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Alerts: detection limits, escalation and delivery (`[alerts]` in the file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// `no_communication` when a bracelet sends nothing for its
    /// `report_interval_s` plus this, in seconds. The default covers a
    /// bracelet at rest indoors (a heartbeat every 5 minutes) and one lost
    /// message.
    pub silence_buffer_s: u32,
    /// A bracelet's silence waits this long before it is its own
    /// `no_communication` alert, in seconds; silences within this window
    /// count towards a fleet outage.
    pub outage_hold_s: u32,
    /// A fleet outage (one `fleet_silent` incident for the duty desk, no
    /// alert per bracelet) needs at least this many silences within
    /// `outage_hold_s` …
    pub outage_min_devices: usize,
    /// … and at least this share (0–1) of the bracelets watched.
    pub outage_share: f64,
    /// `location_failure` when a bracelet reports motion with no fix for this
    /// long, in seconds (Attenti's "Motion No GPS": 10 minutes).
    pub location_failure_after_s: u32,
    /// Unacknowledged critical alerts escalate after this, in seconds (0: never).
    pub escalate_critical_s: u32,
    /// Unacknowledged serious alerts escalate after this, in seconds (0: never).
    pub escalate_serious_s: u32,
    /// Unacknowledged info alerts escalate after this, in seconds (0: never).
    pub escalate_info_s: u32,
    /// Severity overrides: alert type → `critical`, `serious` or `info`.
    pub severity: std::collections::BTreeMap<String, String>,
    /// On restart, transitions and events stored this long before the last
    /// processed point are read again (idempotent), in seconds.
    pub replay_s: u32,
    /// Deliveries queued in memory per channel; beyond it they wait in the
    /// database and are sent by the sweeper (counted, never dropped).
    pub delivery_queue: usize,
    /// A delivery a sender holds is not re-sent by the sweeper for this long,
    /// in seconds.
    pub delivery_lease_s: u32,
    /// Webhook requests in flight at once.
    pub webhook_concurrency: usize,
    /// First retry delay of a failed webhook, in ms; it doubles per attempt.
    pub webhook_backoff_ms: u64,
    /// Longest retry delay, in seconds.
    pub webhook_backoff_max_s: u64,
    /// Webhook request timeout, in seconds.
    pub webhook_timeout_s: u64,
    /// PEM CA bundle that `https://` webhook receivers' certificates must
    /// chain to; none trusts the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_ca_file: Option<String>,
    /// A file whose first line (32 characters or more, e.g. `openssl rand
    /// -hex 32`) keys the sealing of webhook secrets in the database. None
    /// stores them in plain text (a warning at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_key_file: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            silence_buffer_s: 540,
            outage_hold_s: 60,
            outage_min_devices: 20,
            outage_share: 0.2,
            location_failure_after_s: 600,
            escalate_critical_s: 300,
            escalate_serious_s: 900,
            escalate_info_s: 0,
            severity: Default::default(),
            replay_s: 600,
            delivery_queue: 10_000,
            delivery_lease_s: 30,
            webhook_concurrency: 16,
            webhook_backoff_ms: 1_000,
            webhook_backoff_max_s: 600,
            webhook_timeout_s: 10,
            webhook_ca_file: None,
            webhook_key_file: None,
        }
    }
}

/// An `[alerts]` setting that does not make a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl AlertConfig {
    /// When silences are a fleet outage.
    pub fn outage(&self) -> alerts::OutageConfig {
        alerts::OutageConfig {
            hold_s: u64::from(self.outage_hold_s),
            min_devices: self.outage_min_devices,
            share: self.outage_share,
        }
    }

    /// The alert policy this configures.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        let never = |s: u32| (s > 0).then_some(s);
        let mut p = Policy::default();
        p.escalate_after_s = [
            never(self.escalate_critical_s),
            never(self.escalate_serious_s),
            never(self.escalate_info_s),
        ];
        for (t, sev) in &self.severity {
            let kind = AlertType::from_name(t)
                .ok_or_else(|| PolicyError(format!("[alerts.severity]: no alert type {t:?}")))?;
            let s = Severity::from_name(sev).ok_or_else(|| {
                PolicyError(format!(
                    "[alerts.severity] {t}: {sev:?} is not critical, serious or info"
                ))
            })?;
            p = p.with_severity(kind, s);
        }
        Ok(p)
    }

    /// Checks everything `start` relies on.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.policy()?;
        if !(0.0..=1.0).contains(&self.outage_share) || self.outage_min_devices < 1 {
            return Err(PolicyError(
                "alerts.outage_share must be within 0–1 and alerts.outage_min_devices at least 1"
                    .into(),
            ));
        }
        if self.delivery_queue < 1 || self.webhook_concurrency < 1 {
            return Err(PolicyError(
                "alerts.delivery_queue and alerts.webhook_concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
