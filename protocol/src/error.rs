//! Typed decode errors. Each has a stable `reason()` string: ingest uses it as the
//! `reason` label of its rejection counter and stores it with the rejected bytes,
//! so the strings must never change meaning.

use std::fmt;

/// Why a device id was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceIdError {
    /// Empty id or segment.
    Empty,
    /// Longer than allowed.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside `A-Z a-z 0-9 . _ -` (this includes MQTT's `+ # /`).
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceIdError::Empty => write!(f, "device id is empty"),
            DeviceIdError::TooLong { len, max } => {
                write!(
                    f,
                    "device id is {len} bytes long; at most {max} are allowed"
                )
            }
            DeviceIdError::BadChar { ch, at } => write!(
                f,
                "device id has {ch:?} at byte {at}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
            ),
        }
    }
}

impl std::error::Error for DeviceIdError {}

/// Why a topic was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// Not `em/v1/dev/{id}/{fix|event|hb}` or `owntracks/{user}/{device}`.
    Malformed {
        /// The topic (first 80 characters).
        topic: String,
    },
    /// The device id segment is invalid.
    DeviceId(DeviceIdError),
}

impl TopicError {
    /// Stable label: `invalid_topic` or `invalid_device_id`.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicError::Malformed { .. } => "invalid_topic",
            TopicError::DeviceId(_) => "invalid_device_id",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Malformed { topic } => write!(
                f,
                "topic {topic:?} is not em/v1/dev/{{device}}/{{fix|event|hb}} or owntracks/{{user}}/{{device}}"
            ),
            TopicError::DeviceId(e) => write!(f, "topic names an invalid device: {e}"),
        }
    }
}

impl std::error::Error for TopicError {}

/// Why a payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than its header says.
    TrailingBytes {
        /// Bytes beyond the frame.
        extra: usize,
    },
    /// Larger than [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES).
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
    /// The CRC32 does not match the frame.
    BadCrc {
        /// CRC computed over the frame.
        computed: u32,
        /// CRC the frame carries.
        carried: u32,
    },
    /// A frame or JSON version this decoder does not know.
    UnknownVersion(u64),
    /// A binary record kind this decoder does not know.
    UnknownRecordKind(u8),
    /// No records.
    EmptyBatch,
    /// More than [`MAX_BATCH`](crate::MAX_BATCH) records.
    BatchTooLarge {
        /// Records declared or sent.
        count: usize,
    },
    /// The device id in the payload is invalid.
    DeviceId(DeviceIdError),
    /// Latitude or longitude outside the WGS84 range (or not a finite number).
    CoordinateOutOfRange {
        /// Index of the record.
        record: usize,
    },
    /// A time outside the years -9999..=9999, or not an RFC 3339 instant.
    TimestampNotRepresentable {
        /// Index of the record.
        record: usize,
    },
    /// An event code or name this decoder does not know.
    UnknownEvent {
        /// Index of the record.
        record: usize,
    },
    /// A field outside its range (battery over 100 %, heading of 360° or more, ...).
    InvalidField {
        /// Index of the record.
        record: usize,
        /// The field's name.
        field: &'static str,
    },
    /// Not valid JSON for the format, or a JSON shape error.
    InvalidJson(String),
    /// An OwnTracks message other than `_type: location` (`lwt`, `transition`, ...).
    UnsupportedType(String),
}

impl DecodeError {
    /// Every reason string, for pre-registering metric labels.
    pub const REASONS: [&'static str; 15] = [
        "truncated",
        "trailing_bytes",
        "payload_too_large",
        "bad_crc",
        "unknown_version",
        "unknown_record_kind",
        "empty_batch",
        "batch_too_large",
        "invalid_device_id",
        "coordinate_out_of_range",
        "timestamp_not_representable",
        "unknown_event",
        "invalid_field",
        "invalid_json",
        "unsupported_type",
    ];

    /// Stable snake_case label, one of [`DecodeError::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::PayloadTooLarge { .. } => "payload_too_large",
            DecodeError::BadCrc { .. } => "bad_crc",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::UnknownRecordKind(_) => "unknown_record_kind",
            DecodeError::EmptyBatch => "empty_batch",
            DecodeError::BatchTooLarge { .. } => "batch_too_large",
            DecodeError::DeviceId(_) => "invalid_device_id",
            DecodeError::CoordinateOutOfRange { .. } => "coordinate_out_of_range",
            DecodeError::TimestampNotRepresentable { .. } => "timestamp_not_representable",
            DecodeError::UnknownEvent { .. } => "unknown_event",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::UnsupportedType(_) => "unsupported_type",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated: the frame needs {needed} bytes but has {got}")
            }
            DecodeError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes follow the end of the frame")
            }
            DecodeError::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes exceeds {} bytes; split the upload",
                crate::MAX_PAYLOAD_BYTES
            ),
            DecodeError::BadCrc { computed, carried } => write!(
                f,
                "CRC32 mismatch: frame carries {carried:#010x}, content gives {computed:#010x}"
            ),
            DecodeError::UnknownVersion(v) => write!(
                f,
                "unknown protocol version {v}; this decoder speaks version {}",
                crate::PROTOCOL_VERSION
            ),
            DecodeError::UnknownRecordKind(k) => {
                write!(
                    f,
                    "unknown record kind {k:#04x}; expected 1 (fix), 2 (event) or 3 (heartbeat)"
                )
            }
            DecodeError::EmptyBatch => write!(f, "the message holds no records"),
            DecodeError::BatchTooLarge { count } => write!(
                f,
                "batch of {count} records exceeds {}; split the upload",
                crate::MAX_BATCH
            ),
            DecodeError::DeviceId(e) => write!(f, "payload names an invalid device: {e}"),
            DecodeError::CoordinateOutOfRange { record } => write!(
                f,
                "record {record}: latitude must lie in [-90, 90] and longitude in [-180, 180]"
            ),
            DecodeError::TimestampNotRepresentable { record } => write!(
                f,
                "record {record}: time is not an instant in the years -9999..=9999 (RFC 3339 in JSON)"
            ),
            DecodeError::UnknownEvent { record } => write!(f, "record {record}: unknown event"),
            DecodeError::InvalidField { record, field } => {
                write!(f, "record {record}: field `{field}` is out of range")
            }
            DecodeError::InvalidJson(msg) => write!(f, "invalid JSON payload: {msg}"),
            DecodeError::UnsupportedType(t) => {
                write!(
                    f,
                    "OwnTracks message type {t:?} carries no location; only \"location\" is used"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message (topic plus payload) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The topic is invalid.
    Topic(TopicError),
    /// The payload is invalid.
    Payload(DecodeError),
    /// The payload names another device than the topic (spoofing, or a
    /// misconfigured device).
    DeviceMismatch {
        /// The device in the topic.
        topic: String,
        /// The device in the payload.
        payload: String,
    },
    /// The payload carries another record kind than the topic.
    KindMismatch,
}

impl MessageError {
    /// Stable label: the topic's or payload's reason, `device_mismatch` or
    /// `topic_kind_mismatch`.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::Topic(e) => e.reason(),
            MessageError::Payload(e) => e.reason(),
            MessageError::DeviceMismatch { .. } => "device_mismatch",
            MessageError::KindMismatch => "topic_kind_mismatch",
        }
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Topic(e) => e.fmt(f),
            MessageError::Payload(e) => e.fmt(f),
            MessageError::DeviceMismatch { topic, payload } => write!(
                f,
                "payload names device {payload:?} but was published on {topic:?}'s topic"
            ),
            MessageError::KindMismatch => {
                write!(
                    f,
                    "payload record kind does not match the topic's last segment"
                )
            }
        }
    }
}

impl std::error::Error for MessageError {}

/// Why a value could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// No records, or more than [`MAX_BATCH`](crate::MAX_BATCH).
    BatchSize(usize),
    /// The records span more than a binary frame's 49.7 days of offsets.
    SpanTooLong,
    /// A field outside the range its decoder accepts.
    OutOfRange(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BatchSize(n) => {
                write!(
                    f,
                    "a message holds 1..={} records, not {n}",
                    crate::MAX_BATCH
                )
            }
            EncodeError::SpanTooLong => {
                write!(
                    f,
                    "records span more than 2^32 ms; split them into several frames"
                )
            }
            EncodeError::OutOfRange(field) => write!(f, "field `{field}` is out of range"),
        }
    }
}

impl std::error::Error for EncodeError {}
