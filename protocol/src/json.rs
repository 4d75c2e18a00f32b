//! emtrack's JSON payload (version 1), for integrations. Its schema is
//! `protocol/schema/uplink-v1.schema.json`; `protocol/schema/example-*.json`
//! are documented examples, decoded by the tests.
//!
//! Units are SI floats on the wire and are quantised on decoding exactly as the
//! binary frame stores them (1e-7°, whole metres, cm/s, centidegrees, ms), so a
//! fix means the same whichever format carried it. Unknown fields are ignored.

use crate::error::DecodeError;
use crate::model::{
    Body, Event, EventKind, Fix, Flags, Heartbeat, MAX_BATCH, MAX_PAYLOAD_BYTES, Uplink,
};
use crate::topic::DeviceId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The JSON payload version this module reads and writes (`"v"`).
pub const JSON_VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
struct WireUplink {
    v: u64,
    device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixes: Option<Vec<WireFix>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events: Option<Vec<WireEvent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeats: Option<Vec<WireHeartbeat>>,
}

#[derive(Serialize, Deserialize)]
struct WireFix {
    t: String,
    lat: f64,
    lon: f64,
    acc: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heading: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batt: Option<u8>,
    #[serde(flatten)]
    flags: WireFlags,
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    t: String,
    event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batt: Option<u8>,
    #[serde(flatten)]
    flags: WireFlags,
}

#[derive(Serialize, Deserialize)]
struct WireHeartbeat {
    t: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batt: Option<u8>,
    #[serde(default)]
    pending: u16,
    #[serde(flatten)]
    flags: WireFlags,
}

/// Device state bits; absent means false.
#[derive(Serialize, Deserialize)]
struct WireFlags {
    #[serde(default, skip_serializing_if = "is_false")]
    motion: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    charging: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    network: bool,
}

impl From<Flags> for WireFlags {
    fn from(f: Flags) -> Self {
        WireFlags {
            motion: f.motion,
            charging: f.charging,
            network: f.network_location,
        }
    }
}

impl From<WireFlags> for Flags {
    fn from(f: WireFlags) -> Self {
        Flags {
            motion: f.motion,
            charging: f.charging,
            network_location: f.network,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Formats a time as RFC 3339 in UTC with milliseconds.
pub(crate) fn format_time(t: Timestamp) -> String {
    format!("{t:.3}")
}

/// Parses an RFC 3339 instant, truncated to the millisecond.
pub(crate) fn parse_time(s: &str, record: usize) -> Result<Timestamp, DecodeError> {
    s.parse::<Timestamp>()
        .ok()
        .and_then(|t| Timestamp::from_millisecond(t.as_millisecond()).ok())
        .ok_or(DecodeError::TimestampNotRepresentable { record })
}

/// Degrees to 1e-7 degrees, refusing non-finite or out-of-range values.
pub(crate) fn degrees_e7(lat: f64, lon: f64, record: usize) -> Result<(i32, i32), DecodeError> {
    let bad = DecodeError::CoordinateOutOfRange { record };
    if !(lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0) {
        return Err(bad);
    }
    // In range, so the products fit in i32.
    Ok(((lat * 1e7).round() as i32, (lon * 1e7).round() as i32))
}

/// A non-negative finite value scaled and rounded into a `u16` below `limit`.
pub(crate) fn scaled_u16(
    v: f64,
    scale: f64,
    limit: u32,
    record: usize,
    field: &'static str,
) -> Result<u16, DecodeError> {
    let bad = DecodeError::InvalidField { record, field };
    if !v.is_finite() || v < 0.0 {
        return Err(bad);
    }
    let scaled = (v * scale).round();
    if scaled >= f64::from(limit) {
        return Err(bad);
    }
    Ok(scaled as u16)
}

pub(crate) fn battery(b: Option<u8>, record: usize) -> Result<Option<u8>, DecodeError> {
    match b {
        Some(b) if b > 100 => Err(DecodeError::InvalidField {
            record,
            field: "batt",
        }),
        b => Ok(b),
    }
}

/// Heading in degrees [0, 360] to centidegrees; 360 wraps to 0.
pub(crate) fn heading_cdeg(deg: f64, record: usize) -> Result<u16, DecodeError> {
    if !(0.0..=360.0).contains(&deg) {
        return Err(DecodeError::InvalidField {
            record,
            field: "heading",
        });
    }
    Ok(((deg * 100.0).round() as u32 % 36_000) as u16)
}

/// Serialises `msg` as emtrack JSON.
pub fn encode(msg: &Uplink) -> Vec<u8> {
    let mut wire = WireUplink {
        v: JSON_VERSION,
        device: msg.device.as_str().to_owned(),
        fixes: None,
        events: None,
        heartbeats: None,
    };
    match &msg.body {
        Body::Fixes(v) => {
            wire.fixes = Some(
                v.iter()
                    .map(|f| WireFix {
                        t: format_time(f.time),
                        lat: f.lat(),
                        lon: f.lon(),
                        acc: f64::from(f.accuracy_m),
                        speed: f.speed_m_s(),
                        heading: f.heading_deg(),
                        batt: f.battery_pct,
                        flags: f.flags.into(),
                    })
                    .collect(),
            )
        }
        Body::Events(v) => {
            wire.events = Some(
                v.iter()
                    .map(|e| WireEvent {
                        t: format_time(e.time),
                        event: e.kind.as_str().to_owned(),
                        batt: e.battery_pct,
                        flags: e.flags.into(),
                    })
                    .collect(),
            )
        }
        Body::Heartbeats(v) => {
            wire.heartbeats = Some(
                v.iter()
                    .map(|h| WireHeartbeat {
                        t: format_time(h.time),
                        batt: h.battery_pct,
                        pending: h.pending,
                        flags: h.flags.into(),
                    })
                    .collect(),
            )
        }
    }
    // Serialising plain structs of strings and finite numbers cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

fn check_count(n: usize) -> Result<(), DecodeError> {
    match n {
        0 => Err(DecodeError::EmptyBatch),
        n if n > MAX_BATCH => Err(DecodeError::BatchTooLarge { count: n }),
        _ => Ok(()),
    }
}

/// Decodes an emtrack JSON payload.
pub fn decode(payload: &[u8]) -> Result<Uplink, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::PayloadTooLarge { len: payload.len() });
    }
    let wire: WireUplink =
        serde_json::from_slice(payload).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    if wire.v != JSON_VERSION {
        return Err(DecodeError::UnknownVersion(wire.v));
    }
    let device = DeviceId::parse(&wire.device).map_err(DecodeError::DeviceId)?;
    let body = match (wire.fixes, wire.events, wire.heartbeats) {
        (Some(fixes), None, None) => {
            check_count(fixes.len())?;
            let mut out = Vec::with_capacity(fixes.len());
            for (i, f) in fixes.into_iter().enumerate() {
                let (lat_e7, lon_e7) = degrees_e7(f.lat, f.lon, i)?;
                out.push(Fix {
                    time: parse_time(&f.t, i)?,
                    lat_e7,
                    lon_e7,
                    accuracy_m: scaled_u16(f.acc, 1.0, 65_536, i, "acc")?,
                    speed_cm_s: f
                        .speed
                        .map(|s| scaled_u16(s, 100.0, 65_535, i, "speed"))
                        .transpose()?,
                    heading_cdeg: f.heading.map(|h| heading_cdeg(h, i)).transpose()?,
                    battery_pct: battery(f.batt, i)?,
                    flags: f.flags.into(),
                });
            }
            Body::Fixes(out)
        }
        (None, Some(events), None) => {
            check_count(events.len())?;
            let mut out = Vec::with_capacity(events.len());
            for (i, e) in events.into_iter().enumerate() {
                out.push(Event {
                    time: parse_time(&e.t, i)?,
                    kind: EventKind::from_name(&e.event)
                        .ok_or(DecodeError::UnknownEvent { record: i })?,
                    battery_pct: battery(e.batt, i)?,
                    flags: e.flags.into(),
                });
            }
            Body::Events(out)
        }
        (None, None, Some(hbs)) => {
            check_count(hbs.len())?;
            let mut out = Vec::with_capacity(hbs.len());
            for (i, h) in hbs.into_iter().enumerate() {
                out.push(Heartbeat {
                    time: parse_time(&h.t, i)?,
                    battery_pct: battery(h.batt, i)?,
                    flags: h.flags.into(),
                    pending: h.pending,
                });
            }
            Body::Heartbeats(out)
        }
        _ => {
            return Err(DecodeError::InvalidJson(
                "exactly one of \"fixes\", \"events\" or \"heartbeats\" must be present".into(),
            ));
        }
    };
    Ok(Uplink { device, body })
}
