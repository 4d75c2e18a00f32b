//! Golden byte vectors for the binary frame, computed independently of this
//! crate (Python's `struct` and `zlib.crc32`; see `protocol/README.md`), and a
//! table of malformed payloads with the reason each must be refused for.

use protocol::jiff::Timestamp;
use protocol::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn dev() -> DeviceId {
    DeviceId::parse("EM-1").expect("device id")
}

/// Two fixes a minute apart: one with every field, one with every "unknown".
const TWO_FIXES: &str = "010104454d2d31000001a206fd670000020000000019c598602ddce0100008007d69aa57010000ea6019c59d322ddcdf94000cffffffffff061a5d365f";
const STRAP_OPENED: &str = "010204454d2d31000001a206fd670000010000000001370100a8b3d7d3";
const HEARTBEAT: &str = "010304454d2d31000001a206fd670000010000000028000011a623b0e6";

fn two_fixes() -> Uplink {
    Uplink {
        device: dev(),
        body: Body::Fixes(vec![
            Fix {
                time: t("2026-11-23T06:00:00Z"),
                lat_e7: 432_380_000,
                lon_e7: 769_450_000,
                accuracy_m: 8,
                speed_cm_s: Some(125),
                heading_cdeg: Some(27_050),
                battery_pct: Some(87),
                flags: Flags {
                    motion: true,
                    ..Flags::default()
                },
            },
            Fix {
                time: t("2026-11-23T06:01:00Z"),
                lat_e7: 432_381_234,
                lon_e7: 769_449_876,
                accuracy_m: 12,
                speed_cm_s: None,
                heading_cdeg: None,
                battery_pct: None,
                flags: Flags {
                    motion: false,
                    charging: true,
                    network_location: true,
                },
            },
        ]),
    }
}

fn encode(msg: &Uplink) -> Vec<u8> {
    let mut buf = protocol::bytes::BytesMut::new();
    binary::encode(msg, &mut buf).expect("encodes");
    buf.to_vec()
}

#[test]
fn golden_frames_encode_and_decode() {
    let strap = Uplink {
        device: dev(),
        body: Body::Events(vec![Event {
            time: t("2026-11-23T06:00:00Z"),
            kind: EventKind::StrapOpened,
            battery_pct: Some(55),
            flags: Flags {
                motion: true,
                ..Flags::default()
            },
        }]),
    };
    let hb = Uplink {
        device: dev(),
        body: Body::Heartbeats(vec![Heartbeat {
            time: t("2026-11-23T06:00:00Z"),
            battery_pct: Some(40),
            flags: Flags::default(),
            pending: 17,
        }]),
    };
    for (msg, golden, topic) in [
        (two_fixes(), TWO_FIXES, "em/v1/dev/EM-1/fix"),
        (strap, STRAP_OPENED, "em/v1/dev/EM-1/event"),
        (hb, HEARTBEAT, "em/v1/dev/EM-1/hb"),
    ] {
        let bytes = hex(golden);
        assert_eq!(encode(&msg), bytes, "encoding of {msg:?}");
        assert_eq!(binary::decode(&bytes), Ok(msg.clone()));
        let decoded = protocol::decode(topic, &bytes).expect("decodes with its topic");
        assert_eq!(decoded.uplink, msg);
        assert_eq!(decoded.format, Format::Binary);
    }
    // 13 header bytes + the 4-byte id, 20 bytes a fix, 4 bytes of CRC.
    assert_eq!(hex(TWO_FIXES).len(), 13 + 4 + 2 * 20 + 4);
}

/// The CRC is IEEE CRC-32 (zlib's), big-endian, over everything before it.
#[test]
fn crc_is_zlib_crc32_of_the_preceding_bytes() {
    let bytes = hex(TWO_FIXES);
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    // zlib.crc32(b"123456789") == 0xCBF43926, the standard check value.
    assert_eq!(crc32fast_check(b"123456789"), 0xCBF4_3926);
    assert_eq!(
        u32::from_be_bytes(crc.try_into().expect("4 bytes")),
        crc32fast_check(body)
    );
}

fn crc32fast_check(data: &[u8]) -> u32 {
    // A bitwise CRC-32 (reflected, polynomial 0xEDB88320), written here as an
    // oracle independent of the crate's crc32fast.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast_check(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// A fix frame for "EM-1" with the given header count and records, CRC fixed up.
fn fix_frame(count: u16, records: &[[u8; 20]]) -> Vec<u8> {
    let mut b = vec![1, 1, 4];
    b.extend_from_slice(b"EM-1");
    b.extend_from_slice(&1_795_413_600_000i64.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    for r in records {
        b.extend_from_slice(r);
    }
    with_crc(b)
}

fn record(lat: i32, lon: i32, heading: u16, battery: u8) -> [u8; 20] {
    let mut r = [0u8; 20];
    r[4..8].copy_from_slice(&lat.to_be_bytes());
    r[8..12].copy_from_slice(&lon.to_be_bytes());
    r[12..14].copy_from_slice(&8u16.to_be_bytes());
    r[14..16].copy_from_slice(&0xFFFFu16.to_be_bytes());
    r[16..18].copy_from_slice(&heading.to_be_bytes());
    r[18] = battery;
    r
}

#[test]
fn malformed_payloads_are_refused_with_their_reason() {
    let good = hex(TWO_FIXES);
    let ok = record(432_380_000, 769_450_000, 0xFFFF, 50);
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    let mut v2 = good.clone();
    v2[0] = 2;
    let mut far_base = vec![1, 1, 4];
    far_base.extend_from_slice(b"EM-1");
    far_base.extend_from_slice(&i64::MAX.to_be_bytes());
    far_base.extend_from_slice(&1u16.to_be_bytes());
    far_base.extend_from_slice(&ok);
    let far_base = with_crc(far_base);
    let mut bad_id = fix_frame(1, &[ok]);
    bad_id[4] = b'+';
    let bad_id = with_crc(bad_id[..bad_id.len() - 4].to_vec());
    let mut unknown_event = vec![1, 2, 4];
    unknown_event.extend_from_slice(b"EM-1");
    unknown_event.extend_from_slice(&0i64.to_be_bytes());
    unknown_event.extend_from_slice(&1u16.to_be_bytes());
    unknown_event.extend_from_slice(&[0, 0, 0, 0, 99, 50, 0, 0]);
    let unknown_event = with_crc(unknown_event);
    let mut unknown_kind = fix_frame(1, &[ok]);
    unknown_kind[1] = 7;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated"),
        ("header cut", good[..10].to_vec(), "truncated"),
        (
            "last record cut",
            good[..good.len() - 6].to_vec(),
            "truncated",
        ),
        (
            "extra byte",
            [good.clone(), vec![0]].concat(),
            "trailing_bytes",
        ),
        ("flipped bit", flipped, "bad_crc"),
        ("version 2", v2, "unknown_version"),
        ("record kind 7", unknown_kind, "unknown_record_kind"),
        ("zero records", fix_frame(0, &[]), "empty_batch"),
        ("1025 records", fix_frame(1025, &[ok]), "batch_too_large"),
        ("'+' in the id", bad_id, "invalid_device_id"),
        (
            "lat 90.0000001",
            fix_frame(1, &[record(900_000_001, 0, 0xFFFF, 50)]),
            "coordinate_out_of_range",
        ),
        (
            "lon -180.0000001",
            fix_frame(1, &[record(0, -1_800_000_001, 0xFFFF, 50)]),
            "coordinate_out_of_range",
        ),
        ("time beyond 9999", far_base, "timestamp_not_representable"),
        (
            "heading 360.00",
            fix_frame(1, &[record(0, 0, 36_000, 50)]),
            "invalid_field",
        ),
        (
            "battery 101",
            fix_frame(1, &[record(0, 0, 0xFFFF, 101)]),
            "invalid_field",
        ),
        ("event code 99", unknown_event, "unknown_event"),
        (
            "oversized",
            vec![1; MAX_PAYLOAD_BYTES + 1],
            "payload_too_large",
        ),
    ];
    for (name, bytes, reason) in cases {
        let err = binary::decode(&bytes).expect_err(name);
        assert_eq!(err.reason(), reason, "{name}: {err}");
        assert!(DecodeError::REASONS.contains(&err.reason()), "{name}");
    }
    // The boundary values themselves are valid.
    let edge = fix_frame(1, &[record(900_000_000, -1_800_000_000, 35_999, 100)]);
    assert!(binary::decode(&edge).is_ok());
}

#[test]
fn json_and_owntracks_rejections_have_reasons() {
    let cases: &[(&str, &str, &str)] = &[
        ("em/v1/dev/EM-1/fix", "{", "invalid_json"),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-1","fixes":[{"t":"2026-11-23T06:00:00Z","lat":NaN,"lon":1,"acc":5}]}"#,
            "invalid_json",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":2,"device":"EM-1","fixes":[]}"#,
            "unknown_version",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-1","fixes":[]}"#,
            "empty_batch",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-1","fixes":[{"t":"2026-11-23T06:00:00Z","lat":91,"lon":1,"acc":5}]}"#,
            "coordinate_out_of_range",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-1","fixes":[{"t":"yesterday","lat":1,"lon":1,"acc":5}]}"#,
            "timestamp_not_representable",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-1","fixes":[{"t":"2026-11-23T06:00:00Z","lat":1,"lon":1,"acc":-5}]}"#,
            "invalid_field",
        ),
        (
            "em/v1/dev/EM-1/event",
            r#"{"v":1,"device":"EM-1","events":[{"t":"2026-11-23T06:00:00Z","event":"exploded"}]}"#,
            "unknown_event",
        ),
        (
            "em/v1/dev/EM-1/fix",
            r#"{"v":1,"device":"EM-2","fixes":[{"t":"2026-11-23T06:00:00Z","lat":1,"lon":1,"acc":5}]}"#,
            "device_mismatch",
        ),
        (
            "em/v1/dev/EM-1/hb",
            r#"{"v":1,"device":"EM-1","fixes":[{"t":"2026-11-23T06:00:00Z","lat":1,"lon":1,"acc":5}]}"#,
            "topic_kind_mismatch",
        ),
        ("em/v1/dev/EM+1/fix", "{}", "invalid_device_id"),
        ("em/v1/dev/#/fix", "{}", "invalid_device_id"),
        ("em/v1/dev/EM-1/position", "{}", "invalid_topic"),
        ("em/v1/dev/a/b/fix", "{}", "invalid_device_id"),
        ("em/v2/dev/EM-1/fix", "{}", "invalid_topic"),
        (
            "owntracks/alice/phone",
            r#"{"_type":"lwt","tst":1}"#,
            "unsupported_type",
        ),
        (
            "owntracks/alice/phone",
            r#"{"_type":"location","lat":1,"lon":2}"#,
            "invalid_json",
        ),
        (
            "owntracks/alice/phone",
            r#"{"_type":"location","lat":1,"lon":2,"tst":9223372036854775807}"#,
            "timestamp_not_representable",
        ),
        (
            "owntracks/alice/phone",
            r#"{"_type":"location","lat":1,"lon":200,"tst":1}"#,
            "coordinate_out_of_range",
        ),
        (
            "owntracks/alice/phone/event",
            r#"{"_type":"location","lat":1,"lon":2,"tst":1}"#,
            "invalid_topic",
        ),
        (
            "owntracks/al:ice/phone",
            r#"{"_type":"location","lat":1,"lon":2,"tst":1}"#,
            "invalid_device_id",
        ),
    ];
    let long_id = format!("em/v1/dev/{}/fix", "x".repeat(MAX_DEVICE_ID_LEN + 1));
    let too_long = protocol::decode(&long_id, b"{}").expect_err("65-byte id");
    assert_eq!(too_long.reason(), "invalid_device_id");
    for (topic, payload, reason) in cases {
        let err = protocol::decode(topic, payload.as_bytes()).expect_err(payload);
        assert_eq!(err.reason(), *reason, "{topic} {payload}: {err}");
    }
}

#[test]
fn documented_json_examples_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    let mut seen = 0;
    for (file, topic, kind) in [
        (
            "example-fixes.json",
            "em/v1/dev/EM-000123/fix",
            RecordKind::Fix,
        ),
        (
            "example-events.json",
            "em/v1/dev/EM-000123/event",
            RecordKind::Event,
        ),
        (
            "example-heartbeats.json",
            "em/v1/dev/EM-000123/hb",
            RecordKind::Heartbeat,
        ),
        (
            "example-owntracks.json",
            "owntracks/victim-7/phone",
            RecordKind::Fix,
        ),
    ] {
        let bytes = std::fs::read(format!("{dir}/{file}")).expect("example exists");
        let msg = protocol::decode(topic, &bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(msg.uplink.body.kind(), kind, "{file}");
        seen += msg.uplink.body.len();
    }
    assert_eq!(seen, 2 + 2 + 1 + 1);
}
