//! The domain values every wire format maps onto: fixes, device events and
//! heartbeats, in the units of the binary frame.
//!
//! Values are kept in the binary frame's integer units (1e-7 degrees, whole
//! metres, cm/s, centidegrees, milliseconds), so that a binary round trip is
//! exact and every format quantises the same way. Accessors give SI floats.

use crate::topic::DeviceId;
use jiff::Timestamp;

/// Most records one message may carry. A day of one-a-minute fixes (1,440) is
/// uploaded in two messages; a frame at this size is about 20 KiB.
pub const MAX_BATCH: usize = 1024;

/// Largest payload any decoder accepts, checked before parsing anything.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Largest valid `|lat_e7|` (90°).
pub const MAX_LAT_E7: i32 = 900_000_000;
/// Largest valid `|lon_e7|` (180°).
pub const MAX_LON_E7: i32 = 1_800_000_000;

/// Device state bits sent with every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// The accelerometer saw motion since the previous record.
    pub motion: bool,
    /// The device is on its charger.
    pub charging: bool,
    /// The position comes from the cellular or Wi-Fi network, not GNSS.
    pub network_location: bool,
}

impl Flags {
    const MOTION: u8 = 0x01;
    const CHARGING: u8 = 0x02;
    const NETWORK_LOCATION: u8 = 0x04;

    /// The flags byte of the binary frame (reserved bits zero).
    pub fn to_byte(self) -> u8 {
        (if self.motion { Self::MOTION } else { 0 })
            | (if self.charging { Self::CHARGING } else { 0 })
            | (if self.network_location {
                Self::NETWORK_LOCATION
            } else {
                0
            })
    }

    /// Reads the flags byte; reserved bits are ignored (forward compatibility).
    pub fn from_byte(b: u8) -> Flags {
        Flags {
            motion: b & Self::MOTION != 0,
            charging: b & Self::CHARGING != 0,
            network_location: b & Self::NETWORK_LOCATION != 0,
        }
    }
}

/// One position report, as the device measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fix {
    /// When the device took the fix, by its own clock, to the millisecond.
    pub time: Timestamp,
    /// Latitude in 1e-7 degrees (about 1 cm), within ±900,000,000.
    pub lat_e7: i32,
    /// Longitude in 1e-7 degrees, within ±1,800,000,000.
    pub lon_e7: i32,
    /// Horizontal accuracy radius in metres.
    pub accuracy_m: u16,
    /// Ground speed in cm/s, at most 65,534; `None` when unknown.
    pub speed_cm_s: Option<u16>,
    /// Heading in centidegrees clockwise from north, 0..36,000; `None` when unknown.
    pub heading_cdeg: Option<u16>,
    /// Battery charge in percent, 0..=100; `None` when unknown.
    pub battery_pct: Option<u8>,
    /// Motion, charging and location-source bits.
    pub flags: Flags,
}

impl Fix {
    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        f64::from(self.lat_e7) / 1e7
    }

    /// Longitude in degrees.
    pub fn lon(&self) -> f64 {
        f64::from(self.lon_e7) / 1e7
    }

    /// Speed in m/s, if known.
    pub fn speed_m_s(&self) -> Option<f64> {
        self.speed_cm_s.map(|v| f64::from(v) / 100.0)
    }

    /// Heading in degrees, if known.
    pub fn heading_deg(&self) -> Option<f64> {
        self.heading_cdeg.map(|v| f64::from(v) / 100.0)
    }
}

/// What a device reports besides positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The strap circuit opened (cut or removed): tamper.
    StrapOpened,
    /// The strap circuit closed again.
    StrapClosed,
    /// The case was opened: tamper.
    CaseOpened,
    /// The case closed again.
    CaseClosed,
    /// Battery fell below the low threshold.
    BatteryLow,
    /// Battery fell below the critical threshold (about 30 minutes left).
    BatteryCritical,
    /// The charger was connected.
    ChargerConnected,
    /// The charger was disconnected.
    ChargerDisconnected,
    /// GNSS lost its fix (indoors, shielded).
    GpsLost,
    /// GNSS has a fix again.
    GpsAcquired,
    /// Motion started after a rest.
    MotionStarted,
    /// No motion for the device's rest period.
    MotionStopped,
    /// The device detected GNSS jamming or shielding.
    ShieldingDetected,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 13] = [
        EventKind::StrapOpened,
        EventKind::StrapClosed,
        EventKind::CaseOpened,
        EventKind::CaseClosed,
        EventKind::BatteryLow,
        EventKind::BatteryCritical,
        EventKind::ChargerConnected,
        EventKind::ChargerDisconnected,
        EventKind::GpsLost,
        EventKind::GpsAcquired,
        EventKind::MotionStarted,
        EventKind::MotionStopped,
        EventKind::ShieldingDetected,
    ];

    /// The code in the binary frame (1..=13).
    pub fn code(self) -> u8 {
        match self {
            EventKind::StrapOpened => 1,
            EventKind::StrapClosed => 2,
            EventKind::CaseOpened => 3,
            EventKind::CaseClosed => 4,
            EventKind::BatteryLow => 5,
            EventKind::BatteryCritical => 6,
            EventKind::ChargerConnected => 7,
            EventKind::ChargerDisconnected => 8,
            EventKind::GpsLost => 9,
            EventKind::GpsAcquired => 10,
            EventKind::MotionStarted => 11,
            EventKind::MotionStopped => 12,
            EventKind::ShieldingDetected => 13,
        }
    }

    /// The kind with this binary code.
    pub fn from_code(code: u8) -> Option<EventKind> {
        let i = usize::from(code).checked_sub(1)?;
        EventKind::ALL.get(i).copied()
    }

    /// The stable snake_case name used in JSON, storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StrapOpened => "strap_opened",
            EventKind::StrapClosed => "strap_closed",
            EventKind::CaseOpened => "case_opened",
            EventKind::CaseClosed => "case_closed",
            EventKind::BatteryLow => "battery_low",
            EventKind::BatteryCritical => "battery_critical",
            EventKind::ChargerConnected => "charger_connected",
            EventKind::ChargerDisconnected => "charger_disconnected",
            EventKind::GpsLost => "gps_lost",
            EventKind::GpsAcquired => "gps_acquired",
            EventKind::MotionStarted => "motion_started",
            EventKind::MotionStopped => "motion_stopped",
            EventKind::ShieldingDetected => "shielding_detected",
        }
    }

    /// The kind with this name.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether this is a tamper event (alerts close only with an officer's note).
    pub fn is_tamper(self) -> bool {
        matches!(self, EventKind::StrapOpened | EventKind::CaseOpened)
    }
}

/// A device event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// When the device saw it, by its own clock, to the millisecond.
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// Battery charge in percent, if known.
    pub battery_pct: Option<u8>,
    /// Device state bits at the time.
    pub flags: Flags,
}

/// A sign of life without a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// When it was sent, by the device's clock, to the millisecond.
    pub time: Timestamp,
    /// Battery charge in percent, if known.
    pub battery_pct: Option<u8>,
    /// Device state bits (motion without fixes means GPS trouble).
    pub flags: Flags,
    /// Records waiting in the device's store-and-forward buffer.
    pub pending: u16,
}

/// The three kinds of message a device sends; each has its own topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Positions (`.../fix`).
    Fix,
    /// Device events (`.../event`).
    Event,
    /// Heartbeats (`.../hb`).
    Heartbeat,
}

impl RecordKind {
    /// The last topic segment.
    pub fn topic_suffix(self) -> &'static str {
        match self {
            RecordKind::Fix => "fix",
            RecordKind::Event => "event",
            RecordKind::Heartbeat => "hb",
        }
    }
}

/// The records of one message, all of one kind, 1..=[`MAX_BATCH`] of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Position fixes, oldest first as a rule (not required).
    Fixes(Vec<Fix>),
    /// Device events.
    Events(Vec<Event>),
    /// Heartbeats.
    Heartbeats(Vec<Heartbeat>),
}

impl Body {
    /// Which kind of records this holds.
    pub fn kind(&self) -> RecordKind {
        match self {
            Body::Fixes(_) => RecordKind::Fix,
            Body::Events(_) => RecordKind::Event,
            Body::Heartbeats(_) => RecordKind::Heartbeat,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Body::Fixes(v) => v.len(),
            Body::Events(v) => v.len(),
            Body::Heartbeats(v) => v.len(),
        }
    }

    /// Whether there are no records (never true of a decoded message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoded device message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// The device, as named in the payload (and checked against the topic).
    pub device: DeviceId,
    /// Its records.
    pub body: Body,
}
