//! Device ids and the MQTT topic scheme (see `protocol/README.md`).
//!
//! - `em/v1/dev/{device_id}/fix`, `.../event`, `.../hb`: emtrack devices;
//! - `owntracks/{user}/{device}`: OwnTracks phone apps (location messages).
//!
//! Device ids are checked before they go anywhere near a topic, so a device can
//! never publish or subscribe with `+`, `#` or `/` smuggled into its id.

use crate::error::{DeviceIdError, TopicError};
use crate::model::RecordKind;
use std::fmt;

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Longest OwnTracks user or device topic segment, so that the mapped id fits.
pub const MAX_OWNTRACKS_SEGMENT_LEN: usize = 29;

/// Topic prefix of emtrack devices, with the protocol version.
pub const DEVICE_TOPIC_PREFIX: &str = "em/v1/dev/";
/// Topic prefix of OwnTracks apps.
pub const OWNTRACKS_TOPIC_PREFIX: &str = "owntracks/";
/// Prefix of the device ids given to OwnTracks apps (`ot:{user}:{device}`).
/// Native ids cannot contain `:`, so no bracelet can pose as a phone.
pub const OWNTRACKS_ID_PREFIX: &str = "ot:";

/// The subscriptions that receive every device message.
pub const SUBSCRIPTIONS: [&str; 4] = [
    "em/v1/dev/+/fix",
    "em/v1/dev/+/event",
    "em/v1/dev/+/hb",
    "owntracks/+/+",
];

/// A validated device id: 1..=64 bytes of `A-Z a-z 0-9 . _ -` (native ids), or
/// `ot:{user}:{device}` for OwnTracks apps.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

fn check_segment(s: &str, max: usize) -> Result<(), DeviceIdError> {
    if s.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if s.len() > max {
        return Err(DeviceIdError::TooLong { len: s.len(), max });
    }
    if let Some((at, ch)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(DeviceIdError::BadChar { ch, at });
    }
    Ok(())
}

impl DeviceId {
    /// Validates a native device id (as it appears in `em/v1/dev/{id}/...`).
    pub fn parse(s: &str) -> Result<DeviceId, DeviceIdError> {
        check_segment(s, MAX_DEVICE_ID_LEN)?;
        Ok(DeviceId(s.to_owned()))
    }

    /// The id of an OwnTracks app publishing to `owntracks/{user}/{device}`.
    pub fn owntracks(user: &str, device: &str) -> Result<DeviceId, DeviceIdError> {
        check_segment(user, MAX_OWNTRACKS_SEGMENT_LEN)?;
        check_segment(device, MAX_OWNTRACKS_SEGMENT_LEN)?;
        Ok(DeviceId(format!("{OWNTRACKS_ID_PREFIX}{user}:{device}")))
    }

    /// Accepts either form, as stored (e.g. read back from a world file).
    pub fn parse_any(s: &str) -> Result<DeviceId, DeviceIdError> {
        if let Some(rest) = s.strip_prefix(OWNTRACKS_ID_PREFIX) {
            let (user, device) = rest.split_once(':').ok_or(DeviceIdError::BadChar {
                ch: ':',
                at: OWNTRACKS_ID_PREFIX.len() - 1,
            })?;
            DeviceId::owntracks(user, device)
        } else {
            DeviceId::parse(s)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(user, device)` if this is an OwnTracks id.
    pub fn owntracks_parts(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix(OWNTRACKS_ID_PREFIX)?.split_once(':')
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:?})", self.0)
    }
}

/// A parsed topic: who sent the message and what it claims to carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// `em/v1/dev/{device}/{fix|event|hb}`.
    Device {
        /// The device named by the topic.
        device: DeviceId,
        /// The record kind the topic carries.
        kind: RecordKind,
    },
    /// `owntracks/{user}/{device}`: an OwnTracks app's messages.
    OwnTracks {
        /// `ot:{user}:{device}`.
        device: DeviceId,
    },
}

impl Topic {
    /// Parses a topic name (not a filter).
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let malformed = || TopicError::Malformed {
            topic: topic.chars().take(80).collect(),
        };
        if let Some(rest) = topic.strip_prefix(DEVICE_TOPIC_PREFIX) {
            let (id, suffix) = rest.rsplit_once('/').ok_or_else(malformed)?;
            let kind = match suffix {
                "fix" => RecordKind::Fix,
                "event" => RecordKind::Event,
                "hb" => RecordKind::Heartbeat,
                _ => return Err(malformed()),
            };
            let device = DeviceId::parse(id).map_err(TopicError::DeviceId)?;
            Ok(Topic::Device { device, kind })
        } else if let Some(rest) = topic.strip_prefix(OWNTRACKS_TOPIC_PREFIX) {
            let (user, device) = rest.split_once('/').ok_or_else(malformed)?;
            if device.contains('/') {
                // Sub-topics such as `/event`, `/info` and `/cmd` carry no fix.
                return Err(malformed());
            }
            let device = DeviceId::owntracks(user, device).map_err(TopicError::DeviceId)?;
            Ok(Topic::OwnTracks { device })
        } else {
            Err(malformed())
        }
    }

    /// The device the topic names.
    pub fn device(&self) -> &DeviceId {
        match self {
            Topic::Device { device, .. } | Topic::OwnTracks { device } => device,
        }
    }

    /// The topic a device publishes records of `kind` to. OwnTracks ids map back
    /// to their `owntracks/{user}/{device}` topic whatever the kind.
    pub fn for_device(device: &DeviceId, kind: RecordKind) -> String {
        match device.owntracks_parts() {
            Some((user, dev)) => format!("{OWNTRACKS_TOPIC_PREFIX}{user}/{dev}"),
            None => format!(
                "{DEVICE_TOPIC_PREFIX}{}/{}",
                device.as_str(),
                kind.topic_suffix()
            ),
        }
    }
}
