//! The compact binary frame (version 1), specified byte by byte in
//! `protocol/README.md`.
//!
//! Decoding checks structure first (header, record count, exact length), then
//! the CRC, then every field. It reads from a borrowed slice, never panics, and
//! allocates only the record vector, whose length is bounded by both
//! [`MAX_BATCH`] and the payload length.

use crate::error::{DecodeError, EncodeError};
use crate::model::{
    Body, Event, EventKind, Fix, Flags, Heartbeat, MAX_BATCH, MAX_LAT_E7, MAX_LON_E7,
    MAX_PAYLOAD_BYTES, RecordKind, Uplink,
};
use crate::topic::{DeviceId, MAX_DEVICE_ID_LEN};
use bytes::{Buf, BufMut, BytesMut};
use jiff::Timestamp;

/// The binary frame version this module reads and writes.
pub const FRAME_VERSION: u8 = 1;
/// Version bytes 0x01..=0x1F are reserved for binary frames; none can start JSON.
pub const MAX_BINARY_VERSION_BYTE: u8 = 0x1F;

/// Bytes before the device id: version, kind, id length.
const PREFIX: usize = 3;
/// Bytes after the device id: base time (8) and record count (2).
const AFTER_ID: usize = 10;
/// The CRC32 trailer.
const CRC_LEN: usize = 4;

/// Bytes per fix record.
pub const FIX_RECORD_LEN: usize = 20;
/// Bytes per event record.
pub const EVENT_RECORD_LEN: usize = 8;
/// Bytes per heartbeat record.
pub const HEARTBEAT_RECORD_LEN: usize = 8;

const UNKNOWN_U16: u16 = 0xFFFF;
const UNKNOWN_U8: u8 = 0xFF;

fn kind_code(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Fix => 1,
        RecordKind::Event => 2,
        RecordKind::Heartbeat => 3,
    }
}

fn kind_from_code(code: u8) -> Option<(RecordKind, usize)> {
    match code {
        1 => Some((RecordKind::Fix, FIX_RECORD_LEN)),
        2 => Some((RecordKind::Event, EVENT_RECORD_LEN)),
        3 => Some((RecordKind::Heartbeat, HEARTBEAT_RECORD_LEN)),
        _ => None,
    }
}

/// Size of a frame for `device` holding `count` records of `kind`.
pub fn frame_len(device: &DeviceId, kind: RecordKind, count: usize) -> usize {
    let rec = match kind {
        RecordKind::Fix => FIX_RECORD_LEN,
        RecordKind::Event => EVENT_RECORD_LEN,
        RecordKind::Heartbeat => HEARTBEAT_RECORD_LEN,
    };
    PREFIX + device.as_str().len() + AFTER_ID + count * rec + CRC_LEN
}

/// Appends the frame for `msg` to `out`.
pub fn encode(msg: &Uplink, out: &mut BytesMut) -> Result<(), EncodeError> {
    encode_inner(msg, out, MAX_BATCH)
}

/// Like [`encode`] but without the batch-size limit (up to 65,535 records).
/// Only fault-injection tools want this: every decoder refuses such a frame
/// with `batch_too_large`.
pub fn encode_oversized(msg: &Uplink, out: &mut BytesMut) -> Result<(), EncodeError> {
    encode_inner(msg, out, usize::from(u16::MAX))
}

// Over 80 lines: the mirror of `decode`, field by field in frame order.
fn encode_inner(msg: &Uplink, out: &mut BytesMut, max_batch: usize) -> Result<(), EncodeError> {
    let count = msg.body.len();
    if count == 0 || count > max_batch {
        return Err(EncodeError::BatchSize(count));
    }
    let base = match &msg.body {
        Body::Fixes(v) => v.iter().map(|r| r.time).min(),
        Body::Events(v) => v.iter().map(|r| r.time).min(),
        Body::Heartbeats(v) => v.iter().map(|r| r.time).min(),
    }
    .ok_or(EncodeError::BatchSize(0))?
    .as_millisecond();
    let dt = |t: Timestamp| -> Result<u32, EncodeError> {
        u32::try_from(t.as_millisecond() - base).map_err(|_| EncodeError::SpanTooLong)
    };
    let id = msg.device.as_str().as_bytes();
    let start = out.len();
    out.reserve(frame_len(&msg.device, msg.body.kind(), count));
    out.put_u8(FRAME_VERSION);
    out.put_u8(kind_code(msg.body.kind()));
    // DeviceId guarantees 1..=64 bytes.
    out.put_u8(id.len() as u8);
    out.put_slice(id);
    out.put_i64(base);
    out.put_u16(count as u16);
    let battery = |b: Option<u8>| match b {
        None => Ok(UNKNOWN_U8),
        Some(b) if b <= 100 => Ok(b),
        Some(_) => Err(EncodeError::OutOfRange("battery_pct")),
    };
    let result = (|| {
        match &msg.body {
            Body::Fixes(fixes) => {
                for f in fixes {
                    if f.lat_e7.unsigned_abs() > MAX_LAT_E7.unsigned_abs() {
                        return Err(EncodeError::OutOfRange("lat_e7"));
                    }
                    if f.lon_e7.unsigned_abs() > MAX_LON_E7.unsigned_abs() {
                        return Err(EncodeError::OutOfRange("lon_e7"));
                    }
                    let speed = match f.speed_cm_s {
                        None => UNKNOWN_U16,
                        Some(s) if s < UNKNOWN_U16 => s,
                        Some(_) => return Err(EncodeError::OutOfRange("speed_cm_s")),
                    };
                    let heading = match f.heading_cdeg {
                        None => UNKNOWN_U16,
                        Some(h) if h < 36_000 => h,
                        Some(_) => return Err(EncodeError::OutOfRange("heading_cdeg")),
                    };
                    out.put_u32(dt(f.time)?);
                    out.put_i32(f.lat_e7);
                    out.put_i32(f.lon_e7);
                    out.put_u16(f.accuracy_m);
                    out.put_u16(speed);
                    out.put_u16(heading);
                    out.put_u8(battery(f.battery_pct)?);
                    out.put_u8(f.flags.to_byte());
                }
            }
            Body::Events(events) => {
                for e in events {
                    out.put_u32(dt(e.time)?);
                    out.put_u8(e.kind.code());
                    out.put_u8(battery(e.battery_pct)?);
                    out.put_u8(e.flags.to_byte());
                    out.put_u8(0);
                }
            }
            Body::Heartbeats(hbs) => {
                for h in hbs {
                    out.put_u32(dt(h.time)?);
                    out.put_u8(battery(h.battery_pct)?);
                    out.put_u8(h.flags.to_byte());
                    out.put_u16(h.pending);
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        out.truncate(start);
        return Err(e);
    }
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32(crc);
    Ok(())
}

/// Decodes one binary frame.
// Over 80 lines: it follows the frame layout of protocol/README.md field by
// field, top to bottom, so that it can be checked against the spec line by line.
pub fn decode(payload: &[u8]) -> Result<Uplink, DecodeError> {
    let got = payload.len();
    if got > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::PayloadTooLarge { len: got });
    }
    let truncated = |needed: usize| DecodeError::Truncated { needed, got };
    let &version = payload.first().ok_or(truncated(PREFIX))?;
    if version != FRAME_VERSION {
        return Err(DecodeError::UnknownVersion(u64::from(version)));
    }
    if got < PREFIX {
        return Err(truncated(PREFIX));
    }
    let (kind, record_len) =
        kind_from_code(payload[1]).ok_or(DecodeError::UnknownRecordKind(payload[1]))?;
    let id_len = usize::from(payload[2]);
    let header_len = PREFIX + id_len + AFTER_ID;
    if got < header_len + CRC_LEN {
        return Err(truncated(header_len + CRC_LEN));
    }
    let mut header = &payload[PREFIX + id_len..header_len];
    let base = header.get_i64();
    let count = usize::from(header.get_u16());
    if count == 0 {
        return Err(DecodeError::EmptyBatch);
    }
    if count > MAX_BATCH {
        return Err(DecodeError::BatchTooLarge { count });
    }
    let total = header_len + count * record_len + CRC_LEN;
    if got < total {
        return Err(truncated(total));
    }
    if got > total {
        return Err(DecodeError::TrailingBytes { extra: got - total });
    }
    let (body_bytes, mut crc_bytes) = payload.split_at(total - CRC_LEN);
    let carried = crc_bytes.get_u32();
    let computed = crc32fast::hash(body_bytes);
    if carried != computed {
        return Err(DecodeError::BadCrc { computed, carried });
    }

    // Structure and integrity hold; now the fields.
    if id_len > MAX_DEVICE_ID_LEN {
        return Err(DecodeError::DeviceId(
            crate::error::DeviceIdError::TooLong {
                len: id_len,
                max: MAX_DEVICE_ID_LEN,
            },
        ));
    }
    let id = std::str::from_utf8(&payload[PREFIX..PREFIX + id_len]).map_err(|e| {
        DecodeError::DeviceId(crate::error::DeviceIdError::BadChar {
            ch: char::REPLACEMENT_CHARACTER,
            at: e.valid_up_to(),
        })
    })?;
    let device = DeviceId::parse(id).map_err(DecodeError::DeviceId)?;
    let mut records = &body_bytes[header_len..];
    let time = |record: usize, dt: u32| {
        base.checked_add(i64::from(dt))
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .ok_or(DecodeError::TimestampNotRepresentable { record })
    };
    let battery = |record: usize, b: u8| match b {
        UNKNOWN_U8 => Ok(None),
        0..=100 => Ok(Some(b)),
        _ => Err(DecodeError::InvalidField {
            record,
            field: "battery_pct",
        }),
    };
    let body = match kind {
        RecordKind::Fix => {
            let mut fixes = Vec::with_capacity(count);
            for i in 0..count {
                let dt = records.get_u32();
                let lat_e7 = records.get_i32();
                let lon_e7 = records.get_i32();
                let accuracy_m = records.get_u16();
                let speed = records.get_u16();
                let heading = records.get_u16();
                let batt = records.get_u8();
                let flags = records.get_u8();
                if lat_e7.unsigned_abs() > MAX_LAT_E7.unsigned_abs()
                    || lon_e7.unsigned_abs() > MAX_LON_E7.unsigned_abs()
                {
                    return Err(DecodeError::CoordinateOutOfRange { record: i });
                }
                let heading_cdeg = match heading {
                    UNKNOWN_U16 => None,
                    0..36_000 => Some(heading),
                    _ => {
                        return Err(DecodeError::InvalidField {
                            record: i,
                            field: "heading_cdeg",
                        });
                    }
                };
                fixes.push(Fix {
                    time: time(i, dt)?,
                    lat_e7,
                    lon_e7,
                    accuracy_m,
                    speed_cm_s: (speed != UNKNOWN_U16).then_some(speed),
                    heading_cdeg,
                    battery_pct: battery(i, batt)?,
                    flags: Flags::from_byte(flags),
                });
            }
            Body::Fixes(fixes)
        }
        RecordKind::Event => {
            let mut events = Vec::with_capacity(count);
            for i in 0..count {
                let dt = records.get_u32();
                let code = records.get_u8();
                let batt = records.get_u8();
                let flags = records.get_u8();
                let _reserved = records.get_u8();
                events.push(Event {
                    time: time(i, dt)?,
                    kind: EventKind::from_code(code)
                        .ok_or(DecodeError::UnknownEvent { record: i })?,
                    battery_pct: battery(i, batt)?,
                    flags: Flags::from_byte(flags),
                });
            }
            Body::Events(events)
        }
        RecordKind::Heartbeat => {
            let mut hbs = Vec::with_capacity(count);
            for i in 0..count {
                let dt = records.get_u32();
                let batt = records.get_u8();
                let flags = records.get_u8();
                let pending = records.get_u16();
                hbs.push(Heartbeat {
                    time: time(i, dt)?,
                    battery_pct: battery(i, batt)?,
                    flags: Flags::from_byte(flags),
                    pending,
                });
            }
            Body::Heartbeats(hbs)
        }
    };
    Ok(Uplink { device, body })
}
