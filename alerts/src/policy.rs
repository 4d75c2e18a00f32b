//! Alert types, their default severities, and an agency's policy.

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertType {
    /// The subject entered an exclusion zone (a victim's home, a school).
    ExclusionZoneEntered,
    /// The subject came within the protected distance of a victim.
    VictimProximity,
    /// The strap was opened or cut.
    StrapTamper,
    /// The device case was opened.
    CaseTamper,
    /// The subject left an inclusion zone (including the city under
    /// restriction of liberty).
    InclusionZoneLeft,
    /// The subject was away from home during curfew.
    CurfewViolation,
    /// Nothing arrived for the device's interval plus a buffer.
    NoCommunication,
    /// Battery critical.
    BatteryCritical,
    /// No GPS fix for a while although the device reports motion or heartbeats.
    LocationFailure,
    /// Battery low.
    BatteryLow,
    /// Charger connected.
    ChargerConnected,
    /// Charger disconnected.
    ChargerDisconnected,
    /// The device's clock disagrees with the server's: its fixes are judged
    /// in arrival order until it is fixed.
    DeviceClockFault,
    /// Two different records for the same device and time: a cloned device,
    /// a forged message, or a broken one.
    DeviceIntegrity,
    /// The bracelet detected GNSS jamming or shielding (foil, a jammer): the
    /// subject's position cannot be known while it lasts.
    ShieldingDetected,
    /// A large share of the fleet went silent at once (a broker, network or
    /// emtrack outage): one incident for the duty desk (subject 0) instead
    /// of an alert per bracelet.
    FleetSilent,
    /// The phone of a person protected from the subject went silent: the
    /// proximity order cannot be judged until it is heard again.
    ProtectionDegraded,
}

impl AlertType {
    /// Every type, in a fixed order.
    pub const ALL: [AlertType; 17] = [
        AlertType::ExclusionZoneEntered,
        AlertType::VictimProximity,
        AlertType::StrapTamper,
        AlertType::CaseTamper,
        AlertType::InclusionZoneLeft,
        AlertType::CurfewViolation,
        AlertType::NoCommunication,
        AlertType::BatteryCritical,
        AlertType::LocationFailure,
        AlertType::BatteryLow,
        AlertType::ChargerConnected,
        AlertType::ChargerDisconnected,
        AlertType::DeviceClockFault,
        AlertType::DeviceIntegrity,
        AlertType::ShieldingDetected,
        AlertType::FleetSilent,
        AlertType::ProtectionDegraded,
    ];

    /// The type whose [`AlertType::as_str`] label is `name`.
    pub fn from_name(name: &str) -> Option<AlertType> {
        AlertType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Stable snake_case label, for storage, payloads and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::ExclusionZoneEntered => "exclusion_zone_entered",
            AlertType::VictimProximity => "victim_proximity",
            AlertType::StrapTamper => "strap_tamper",
            AlertType::CaseTamper => "case_tamper",
            AlertType::InclusionZoneLeft => "inclusion_zone_left",
            AlertType::CurfewViolation => "curfew_violation",
            AlertType::NoCommunication => "no_communication",
            AlertType::BatteryCritical => "battery_critical",
            AlertType::LocationFailure => "location_failure",
            AlertType::BatteryLow => "battery_low",
            AlertType::ChargerConnected => "charger_connected",
            AlertType::ChargerDisconnected => "charger_disconnected",
            AlertType::DeviceClockFault => "device_clock_fault",
            AlertType::DeviceIntegrity => "device_integrity",
            AlertType::ShieldingDetected => "shielding_detected",
            AlertType::FleetSilent => "fleet_silent",
            AlertType::ProtectionDegraded => "protection_degraded",
        }
    }

    /// The severity an agency gets unless it says otherwise.
    pub fn default_severity(self) -> Severity {
        match self {
            AlertType::ExclusionZoneEntered
            | AlertType::VictimProximity
            | AlertType::StrapTamper
            | AlertType::CaseTamper
            | AlertType::ShieldingDetected
            | AlertType::FleetSilent => Severity::Critical,
            AlertType::InclusionZoneLeft
            | AlertType::CurfewViolation
            | AlertType::NoCommunication
            | AlertType::ProtectionDegraded
            | AlertType::BatteryCritical
            | AlertType::LocationFailure
            | AlertType::DeviceClockFault
            | AlertType::DeviceIntegrity => Severity::Serious,
            AlertType::BatteryLow
            | AlertType::ChargerConnected
            | AlertType::ChargerDisconnected => Severity::Info,
        }
    }

    /// Tamper, integrity and shielding alerts can be resolved only with a
    /// note: nothing ends them by itself, and an officer must record what was
    /// found.
    pub fn needs_note_to_resolve(self) -> bool {
        matches!(
            self,
            AlertType::StrapTamper
                | AlertType::CaseTamper
                | AlertType::DeviceIntegrity
                | AlertType::ShieldingDetected
        )
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Act now (victims, tamper).
    Critical,
    /// Act soon.
    Serious,
    /// For the record.
    Info,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Serious, Severity::Info];

    /// The severity whose [`Severity::as_str`] label is `name`.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Serious => "serious",
            Severity::Info => "info",
        }
    }
}

/// An agency's alert policy. Times are in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    severities: [Severity; 17],
    /// Unacknowledged this long, an alert escalates one level (officer →
    /// supervisor → duty desk), per severity; `None` never escalates.
    pub escalate_after_s: [Option<u32>; 3],
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            severities: AlertType::ALL.map(AlertType::default_severity),
            escalate_after_s: [Some(5 * 60), Some(15 * 60), None],
        }
    }
}

impl Policy {
    /// The severity of `t` under this policy.
    pub fn severity(&self, t: AlertType) -> Severity {
        self.severities[t as usize]
    }

    /// Overrides the severity of `t`.
    pub fn with_severity(mut self, t: AlertType, s: Severity) -> Policy {
        self.severities[t as usize] = s;
        self
    }

    /// Seconds an alert of `s` may stay unacknowledged before it escalates.
    pub fn escalation_delay(&self, s: Severity) -> Option<u32> {
        self.escalate_after_s[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_issue_and_can_be_overridden() {
        let p = Policy::default();
        assert_eq!(p.severity(AlertType::StrapTamper), Severity::Critical);
        assert_eq!(p.severity(AlertType::CurfewViolation), Severity::Serious);
        assert_eq!(p.severity(AlertType::BatteryLow), Severity::Info);
        assert_eq!(p.escalation_delay(Severity::Critical), Some(300));
        assert_eq!(p.escalation_delay(Severity::Serious), Some(900));
        assert_eq!(p.escalation_delay(Severity::Info), None);
        let p = p.with_severity(AlertType::CurfewViolation, Severity::Critical);
        assert_eq!(p.severity(AlertType::CurfewViolation), Severity::Critical);
        let labels: std::collections::BTreeSet<_> =
            AlertType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(labels.len(), AlertType::ALL.len());
    }
}
