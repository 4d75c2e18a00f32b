//! The first stage of a batch: decode every payload and check its device
//! (known, not retired, sending in its registered format, assigned) and its
//! clock (not beyond retention, not in the future). What fails is a
//! [`Refusal`], stored raw with its reason; what passes carries its
//! [`Custody`] record (the SHA-256 of its bytes, its topic, its arrival).

use crate::config::IngestConfig;
use bytes::Bytes;
use protocol::Body;
use reference::{DeviceKind, DeviceRef, Registry};
use rumqttc::Publish;
use sha2::{Digest, Sha256};

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
    /// The broker marked it a redelivery (DUP), or sent it as a retained
    /// message: a copy already stored is not stored again.
    pub(crate) repeat: bool,
}

impl Refusal {
    /// `p` refused for `reason`.
    pub(crate) fn of(p: &Publish, reason: &'static str, detail: String) -> Refusal {
        Refusal {
            topic: p.topic.clone(),
            reason,
            detail,
            payload: p.payload.clone(),
            repeat: p.dup || p.retain,
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
    /// Where its bytes came from (`messages`).
    pub(crate) custody: Custody,
}

/// The chain-of-custody record of an accepted message (`messages`).
pub(crate) struct Custody {
    /// SHA-256 of the payload, as received.
    pub(crate) sha256: [u8; 32],
    /// The broker topic.
    pub(crate) topic: String,
    /// When the batch holding it was checked (server clock, ms): its arrival.
    pub(crate) arrival_ms: i64,
    pub(crate) format: protocol::Format,
    /// Payload size.
    pub(crate) bytes: i32,
    /// OwnTracks' `tid` and `t`.
    pub(crate) tracker: Option<protocol::Tracker>,
    /// The broker marked it DUP or retained: it may have been handled before.
    pub(crate) repeat: bool,
}

impl Custody {
    /// The topic as `messages` keeps it (cut like a refused message's).
    pub(crate) fn stored_topic(&self) -> &str {
        crate::writer::truncate(&self.topic, crate::writer::MAX_TOPIC_STORED)
    }

    fn of(p: &Publish, msg: &mut protocol::Message, arrival_ms: i64) -> Custody {
        Custody {
            sha256: Sha256::digest(&p.payload).into(),
            topic: p.topic.clone(),
            arrival_ms,
            format: msg.format,
            bytes: i32::try_from(p.payload.len()).unwrap_or(i32::MAX),
            tracker: msg.tracker.take(),
            repeat: p.dup || p.retain,
        }
    }
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
        match check_one(cfg, registry, p, msg, now_ms) {
            Ok(c) => checked.push(c),
            Err((reason, detail)) => refused.push(Refusal::of(p, reason, detail)),
        }
    }
    checked
}

fn check_one(
    cfg: &IngestConfig,
    registry: &Registry,
    p: &Publish,
    mut msg: protocol::Message,
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
    if msg.format != dev.format {
        return Err((
            "format_mismatch",
            format!(
                "{device} is registered to send {}, this message is {}",
                dev.format.as_str(),
                msg.format.as_str()
            ),
        ));
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
    let custody = Custody::of(p, &mut msg, now);
    Ok(Checked {
        dev: dev.clone(),
        body: msg.uplink.body,
        newest_ms: newest,
        custody,
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
