//! How bracelets and phones talk to emtrack: MQTT topics and payload formats,
//! shared by `ingest` (which decodes) and `device-sim` (which encodes).
//!
//! `protocol/README.md` specifies the topics, the binary frame byte by byte,
//! the JSON format and the OwnTracks mapping.
//!
//! # Layout
//! - `topic`: device ids and the topic scheme (`em/v1/dev/{id}/{fix|event|hb}`,
//!   `owntracks/{user}/{device}`).
//! - `model`: fixes, events, heartbeats: what every format decodes to.
//! - `binary`: the compact frame for metered cellular links (CRC32, 20 bytes a fix).
//! - `json`: emtrack JSON for integrations.
//! - `owntracks`: OwnTracks `_type: location` messages.
//! - `error`: typed errors, each with a stable `reason()` label.
//!
//! # Decoding guarantees
//! No decoder panics, on any input. Each refuses payloads over
//! [`MAX_PAYLOAD_BYTES`] before parsing and allocates at most in proportion to
//! the payload, never to a length the payload merely claims. Every failure is a
//! [`DecodeError`] (or [`MessageError`]) whose `reason()` is a stable label.
//!
//! # Entry point
//! [`decode`] takes a topic and a payload: it parses the topic, recognises the
//! format (binary frames start with a version byte `0x01..=0x1F`, which no JSON
//! text can start with), decodes it, and checks that the payload names the same
//! device and record kind as the topic.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod binary;
mod error;
pub mod json;
mod model;
pub mod owntracks;
mod topic;

pub use error::{DecodeError, DeviceIdError, EncodeError, MessageError, TopicError};
pub use model::{
    Body, Event, EventKind, Fix, Flags, Heartbeat, MAX_BATCH, MAX_LAT_E7, MAX_LON_E7,
    MAX_PAYLOAD_BYTES, RecordKind, Uplink,
};
pub use topic::{
    DEVICE_TOPIC_PREFIX, DeviceId, MAX_DEVICE_ID_LEN, MAX_OWNTRACKS_SEGMENT_LEN,
    OWNTRACKS_ID_PREFIX, OWNTRACKS_TOPIC_PREFIX, SUBSCRIPTIONS, Topic,
};

/// Re-exported: frames are written into `bytes::BytesMut`.
pub use bytes;
/// Re-exported: times are `jiff::Timestamp`s.
pub use jiff;

/// The protocol version in topics (`em/v1/...`), binary frames and JSON.
pub const PROTOCOL_VERSION: u8 = 1;

/// The payload formats a device topic may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The binary frame.
    Binary,
    /// emtrack JSON.
    Json,
    /// OwnTracks JSON (on `owntracks/...` topics).
    OwnTracks,
}

impl Format {
    /// A stable label, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Json => "json",
            Format::OwnTracks => "owntracks",
        }
    }

    /// The format whose [`Format::as_str`] label is `name` (as `devices.format`
    /// stores it).
    pub fn from_name(name: &str) -> Option<Format> {
        [Format::Binary, Format::Json, Format::OwnTracks]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

/// A decoded message: the device, what it sent, and in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The device and its records.
    pub uplink: Uplink,
    /// The payload format.
    pub format: Format,
    /// An OwnTracks app's tracker id (`tid`) and trigger (`t`); `None` for
    /// other formats.
    pub tracker: Option<Tracker>,
}

/// The labels an OwnTracks app puts on a location, kept with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    /// Tracker id (`tid`).
    pub tid: Option<String>,
    /// What triggered the report (`t`).
    pub trigger: Option<String>,
}

/// Which format a device-topic payload is in: binary frames start with a byte in
/// `0x01..=0x1F` (the version), JSON with `{` or whitespace.
pub fn sniff(payload: &[u8]) -> Format {
    match payload.first() {
        Some(&b) if (0x01..=binary::MAX_BINARY_VERSION_BYTE).contains(&b) && !is_json_ws(b) => {
            Format::Binary
        }
        Some(_) => Format::Json,
        // An empty payload goes to the binary decoder, which calls it truncated.
        None => Format::Binary,
    }
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Decodes a message received on `topic`.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Message, MessageError> {
    match Topic::parse(topic).map_err(MessageError::Topic)? {
        Topic::OwnTracks { device } => {
            let loc = owntracks::decode(payload).map_err(MessageError::Payload)?;
            Ok(Message {
                uplink: Uplink {
                    device,
                    body: Body::Fixes(vec![loc.fix]),
                },
                format: Format::OwnTracks,
                tracker: Some(Tracker {
                    tid: loc.tid,
                    trigger: loc.trigger,
                }),
            })
        }
        Topic::Device { device, kind } => {
            let format = sniff(payload);
            let uplink = match format {
                Format::Binary => binary::decode(payload),
                _ => json::decode(payload),
            }
            .map_err(MessageError::Payload)?;
            if uplink.device != device {
                return Err(MessageError::DeviceMismatch {
                    topic: device.as_str().to_owned(),
                    payload: uplink.device.as_str().to_owned(),
                });
            }
            if uplink.body.kind() != kind {
                return Err(MessageError::KindMismatch);
            }
            Ok(Message {
                uplink,
                format,
                tracker: None,
            })
        }
    }
}
