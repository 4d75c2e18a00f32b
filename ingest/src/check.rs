//! The first stage of a batch: decode every payload and check its device
//! (known, not retired, assigned) and its clock (not beyond retention, not
//! in the future). What fails is a [`Refusal`], stored raw with its reason.

use crate::config::IngestConfig;
use bytes::Bytes;
use protocol::Body;
use reference::{DeviceKind, DeviceRef, Registry};
use rumqttc::Publish;

/// A refused message, as `rejected_messages` keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    /// The MQTT topic.
    pub(crate) topic: String,
    /// A stable label (`emtrack_rejected_messages_total{reason}`).
    pub(crate) reason: &'static str,
    /// What was wrong, for a person.
    pub(crate) detail: String,
    /// The payload, raw.
    pub(crate) payload: Bytes,
    /// The broker marked it a redelivery (DUP).
    pub(crate) dup: bool,
}

impl Refusal {
    /// `p` refused for `reason`.
    pub(crate) fn of(p: &Publish, reason: &'static str, detail: String) -> Refusal {
        Refusal {
            topic: p.topic.clone(),
            reason,
            detail,
            payload: p.payload.clone(),
            dup: p.dup,
        }
    }
}

/// A decoded message of a known, assigned device, within the clock limits.
pub(crate) struct Checked {
    /// Its device.
    pub(crate) dev: DeviceRef,
    /// Its records.
    pub(crate) body: Body,
    /// Its newest record time (ms).
    pub(crate) newest_ms: i64,
}

const DAY_MS: i64 = 86_400_000;

/// Decodes `batch` (no lock held).
pub(crate) fn decode(
    batch: &[Publish],
    refused: &mut Vec<Refusal>,
) -> Vec<Option<protocol::Message>> {
    batch
        .iter()
        .map(|p| match protocol::decode(&p.topic, &p.payload) {
            Ok(msg) => Some(msg),
            Err(e) => {
                refused.push(Refusal::of(p, e.reason(), e.to_string()));
                None
            }
        })
        .collect()
}

/// Checks each decoded message's device against `registry` and its record
/// times against `now_ms`.
pub(crate) fn check(
    cfg: &IngestConfig,
    registry: &Registry,
    batch: &[Publish],
    decoded: Vec<Option<protocol::Message>>,
    now_ms: i64,
    refused: &mut Vec<Refusal>,
) -> Vec<Checked> {
    let mut checked = Vec::with_capacity(batch.len());
    for (p, msg) in batch.iter().zip(decoded) {
        let Some(msg) = msg else { continue };
        match check_one(cfg, registry, msg, now_ms) {
            Ok(c) => checked.push(c),
            Err((reason, detail)) => refused.push(Refusal::of(p, reason, detail)),
        }
    }
    checked
}

fn check_one(
    cfg: &IngestConfig,
    registry: &Registry,
    msg: protocol::Message,
    now: i64,
) -> Result<Checked, (&'static str, String)> {
    let device = msg.uplink.device.as_str();
    let Some(dev) = registry.get(device) else {
        return Err((
            "unknown_device",
            format!("{device} is not in the devices table"),
        ));
    };
    if dev.retired {
        return Err(("device_retired", format!("{device} is retired")));
    }
    let assigned = match dev.kind {
        DeviceKind::Bracelet => dev.subject.is_some(),
        DeviceKind::VictimPhone => dev.protects,
    };
    if !assigned {
        return Err((
            "device_unassigned",
            format!("{device} has no current assignment"),
        ));
    }
    let (oldest, newest) = span_ms(&msg.uplink.body).unwrap_or((now, now));
    let max_age_ms = i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX);
    if oldest < now.saturating_sub(max_age_ms) {
        return Err((
            "timestamp_too_old",
            format!(
                "a record is dated {} days ago, beyond the retention period",
                (now - oldest) / DAY_MS
            ),
        ));
    }
    let skew_ms = cfg.future_skew.as_millis() as i64;
    if newest > now + skew_ms {
        return Err((
            "future_timestamp",
            format!(
                "a record is dated {} s ahead of the server clock (limit {} s)",
                (newest - now) / 1000,
                skew_ms / 1000
            ),
        ));
    }
    Ok(Checked {
        dev: dev.clone(),
        body: msg.uplink.body,
        newest_ms: newest,
    })
}

/// The oldest and newest record times of a message (ms); `None` if empty.
fn span_ms(body: &Body) -> Option<(i64, i64)> {
    fn span(times: impl Iterator<Item = i64>) -> Option<(i64, i64)> {
        times.fold(None, |acc, t| {
            Some(acc.map_or((t, t), |(lo, hi): (i64, i64)| (lo.min(t), hi.max(t))))
        })
    }
    match body {
        Body::Fixes(v) => span(v.iter().map(|f| f.time.as_millisecond())),
        Body::Events(v) => span(v.iter().map(|e| e.time.as_millisecond())),
        Body::Heartbeats(v) => span(v.iter().map(|h| h.time.as_millisecond())),
    }
}
