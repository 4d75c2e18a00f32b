//! OwnTracks `_type: location` messages, so the OwnTracks phone apps can act as
//! trackers (a protected victim's phone, under a mobile exclusion zone).
//!
//! Fields used (<https://owntracks.org/booklet/tech/json/>):
//! `lat`, `lon` (degrees), `tst` (Unix seconds), `acc` (m), `batt` (%),
//! `bs` (battery status: 2 charging, 3 full), `vel` (km/h), `cog` (degrees),
//! `tid` (tracker id) and `t` (trigger). Other fields are ignored. A message of
//! another `_type` (`lwt`, `transition`, `waypoint`, ...) is refused with
//! `unsupported_type`, which ingest counts and acks.

use crate::error::DecodeError;
use crate::json::{battery, degrees_e7, heading_cdeg, scaled_u16};
use crate::model::{Fix, Flags, MAX_PAYLOAD_BYTES};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Accuracy assumed when an app sends none: wide enough that the engine calls
/// a fix near a boundary uncertain rather than trusting it.
pub const DEFAULT_ACCURACY_M: u16 = 100;

/// OwnTracks battery status "charging".
const BS_CHARGING: u8 = 2;

#[derive(Serialize, Deserialize)]
struct WireLocation {
    #[serde(rename = "_type")]
    kind: String,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    tst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batt: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bs: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cog: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// A decoded OwnTracks location: the domain fix plus the app's own labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The position, in the same units as every other format. `tst` has whole
    /// seconds; `vel` whole km/h on the wire, converted to cm/s.
    pub fix: Fix,
    /// Tracker id (two characters shown on the app's map).
    pub tid: Option<String>,
    /// What triggered the report (`p` ping, `c` region, `u` manual, `t` timer...).
    pub trigger: Option<String>,
}

/// Longest `tid` or `t` accepted, in bytes.
const MAX_LABEL_LEN: usize = 16;

/// Decodes an OwnTracks payload.
pub fn decode(payload: &[u8]) -> Result<Location, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::PayloadTooLarge { len: payload.len() });
    }
    let w: WireLocation =
        serde_json::from_slice(payload).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    if w.kind != "location" {
        return Err(DecodeError::UnsupportedType(
            w.kind.chars().take(32).collect(),
        ));
    }
    let (Some(lat), Some(lon), Some(tst)) = (w.lat, w.lon, w.tst) else {
        return Err(DecodeError::InvalidJson(
            "a location needs \"lat\", \"lon\" and \"tst\"".into(),
        ));
    };
    let (lat_e7, lon_e7) = degrees_e7(lat, lon, 0)?;
    let time = tst
        .checked_mul(1000)
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or(DecodeError::TimestampNotRepresentable { record: 0 })?;
    let label = |s: Option<String>, field| match s {
        Some(s) if s.len() > MAX_LABEL_LEN => Err(DecodeError::InvalidField { record: 0, field }),
        s => Ok(s),
    };
    let fix = Fix {
        time,
        lat_e7,
        lon_e7,
        accuracy_m: match w.acc {
            Some(acc) => scaled_u16(acc, 1.0, 65_536, 0, "acc")?,
            None => DEFAULT_ACCURACY_M,
        },
        // km/h to cm/s.
        speed_cm_s: w
            .vel
            .map(|v| scaled_u16(v, 100_000.0 / 3_600.0, 65_535, 0, "vel"))
            .transpose()?,
        heading_cdeg: w.cog.map(|c| heading_cdeg(c, 0)).transpose()?,
        battery_pct: battery(w.batt, 0)?,
        flags: Flags {
            motion: false,
            charging: w.bs == Some(BS_CHARGING),
            network_location: false,
        },
    };
    Ok(Location {
        fix,
        tid: label(w.tid, "tid")?,
        trigger: label(w.t, "t")?,
    })
}

/// Serialises a location the way the OwnTracks apps do. Sub-second time is
/// dropped (`tst` is whole seconds) and speed is rounded to whole km/h.
pub fn encode(loc: &Location) -> Vec<u8> {
    let f = &loc.fix;
    let w = WireLocation {
        kind: "location".to_owned(),
        lat: Some(f.lat()),
        lon: Some(f.lon()),
        tst: Some(f.time.as_second()),
        acc: Some(f64::from(f.accuracy_m)),
        batt: f.battery_pct,
        bs: f.flags.charging.then_some(BS_CHARGING),
        vel: f
            .speed_cm_s
            .map(|v| (f64::from(v) * 3_600.0 / 100_000.0).round()),
        cog: f.heading_deg(),
        tid: loc.tid.clone(),
        t: loc.trigger.clone(),
    };
    serde_json::to_vec(&w).unwrap_or_default()
}
