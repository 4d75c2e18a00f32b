//! Round trips for every format, and the "no input panics" property.

use proptest::prelude::*;
use protocol::bytes::BytesMut;
use protocol::jiff::Timestamp;
use protocol::*;

/// Times from 1970 to 2100, to the millisecond.
fn time() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000).prop_map(|ms| Timestamp::from_millisecond(ms).expect("in range"))
}

fn flags() -> impl Strategy<Value = Flags> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(motion, charging, network_location)| Flags {
            motion,
            charging,
            network_location,
        },
    )
}

fn fix_at(time: impl Strategy<Value = Timestamp>) -> impl Strategy<Value = Fix> {
    (
        time,
        -MAX_LAT_E7..=MAX_LAT_E7,
        -MAX_LON_E7..=MAX_LON_E7,
        any::<u16>(),
        proptest::option::of(0u16..u16::MAX),
        proptest::option::of(0u16..36_000),
        proptest::option::of(0u8..=100),
        flags(),
    )
        .prop_map(
            |(time, lat_e7, lon_e7, accuracy_m, speed_cm_s, heading_cdeg, battery_pct, flags)| {
                Fix {
                    time,
                    lat_e7,
                    lon_e7,
                    accuracy_m,
                    speed_cm_s,
                    heading_cdeg,
                    battery_pct,
                    flags,
                }
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    (
        time(),
        proptest::sample::select(EventKind::ALL.to_vec()),
        proptest::option::of(0u8..=100),
        flags(),
    )
        .prop_map(|(time, kind, battery_pct, flags)| Event {
            time,
            kind,
            battery_pct,
            flags,
        })
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        time(),
        proptest::option::of(0u8..=100),
        flags(),
        any::<u16>(),
    )
        .prop_map(|(time, battery_pct, flags, pending)| Heartbeat {
            time,
            battery_pct,
            flags,
            pending,
        })
}

fn device() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| DeviceId::parse(&s).expect("valid by construction"))
}

/// A message whose records lie within one binary frame's 49-day span.
fn uplink() -> impl Strategy<Value = Uplink> {
    let day_ms = 86_400_000i64;
    let base = 1_700_000_000_000i64;
    let near = move || {
        (0..40 * day_ms).prop_map(move |d| Timestamp::from_millisecond(base + d).expect("in range"))
    };
    (
        device(),
        prop_oneof![
            proptest::collection::vec(fix_at(near()), 1..40).prop_map(Body::Fixes),
            proptest::collection::vec(
                (near(), event()).prop_map(|(t, e)| Event { time: t, ..e }),
                1..20
            )
            .prop_map(Body::Events),
            proptest::collection::vec(
                (near(), heartbeat()).prop_map(|(t, h)| Heartbeat { time: t, ..h }),
                1..5
            )
            .prop_map(Body::Heartbeats),
        ],
    )
        .prop_map(|(device, body)| Uplink { device, body })
}

fn topic(msg: &Uplink) -> String {
    Topic::for_device(&msg.device, msg.body.kind())
}

proptest! {
    #[test]
    fn binary_round_trip(msg in uplink()) {
        let mut buf = BytesMut::new();
        binary::encode(&msg, &mut buf).expect("encodes");
        prop_assert_eq!(buf.len(), binary::frame_len(&msg.device, msg.body.kind(), msg.body.len()));
        prop_assert_eq!(binary::decode(&buf), Ok(msg.clone()));
        let via_topic = protocol::decode(&topic(&msg), &buf).expect("decodes");
        prop_assert_eq!(via_topic.uplink, msg);
        prop_assert_eq!(via_topic.format, Format::Binary);
    }

    #[test]
    fn json_round_trip(msg in uplink()) {
        let bytes = json::encode(&msg);
        prop_assert_eq!(json::decode(&bytes), Ok(msg.clone()));
        let via_topic = protocol::decode(&topic(&msg), &bytes).expect("decodes");
        prop_assert_eq!(via_topic.uplink, msg);
        prop_assert_eq!(via_topic.format, Format::Json);
    }

    /// OwnTracks carries whole seconds and whole km/h: values it can represent
    /// survive the round trip exactly.
    #[test]
    fn owntracks_round_trip(
        fix in fix_at((0i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).expect("in range"))),
        kmh in proptest::option::of(0u16..2_000),
        tid in proptest::option::of("[a-z0-9]{2}"),
        trigger in proptest::option::of(proptest::sample::select(vec!["p", "c", "u", "t", "b"])),
    ) {
        let fix = Fix {
            speed_cm_s: kmh.map(|k| (f64::from(k) * 100_000.0 / 3_600.0).round() as u16),
            flags: Flags { motion: false, network_location: false, ..fix.flags },
            ..fix
        };
        let loc = owntracks::Location { fix, tid, trigger: trigger.map(str::to_owned) };
        let bytes = owntracks::encode(&loc);
        prop_assert_eq!(owntracks::decode(&bytes), Ok(loc.clone()));
        let user = "victim-7";
        let via_topic = protocol::decode(&format!("owntracks/{user}/phone"), &bytes).expect("decodes");
        prop_assert_eq!(via_topic.uplink.device.as_str(), "ot:victim-7:phone");
        prop_assert_eq!(via_topic.uplink.body, Body::Fixes(vec![fix]));
    }

    /// Any bytes, on any topic kind: an error or a message, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for topic in ["em/v1/dev/EM-1/fix", "em/v1/dev/EM-1/event", "em/v1/dev/EM-1/hb", "owntracks/a/b"] {
            if let Err(e) = protocol::decode(topic, &bytes) {
                prop_assert!(!e.reason().is_empty());
            }
        }
        let _ = binary::decode(&bytes);
        let _ = json::decode(&bytes);
        let _ = owntracks::decode(&bytes);
    }

    /// Bytes that look like a frame header (version 1, a plausible kind and id
    /// length) reach the deeper checks; still never a panic.
    #[test]
    fn frame_shaped_bytes_never_panic(
        kind in 0u8..5,
        id_len in 0u8..70,
        rest in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let bytes = [vec![1, kind, id_len], rest].concat();
        if let Err(e) = binary::decode(&bytes) {
            prop_assert!(DecodeError::REASONS.contains(&e.reason()));
        }
    }

    /// Frames with arbitrary records and a correct CRC reach every field check
    /// (coordinates, heading, battery, event codes, times): never a panic, and
    /// whatever is accepted re-encodes to the same bytes.
    #[test]
    fn crc_valid_frames_never_panic(
        kind in 1u8..=3,
        id in "[A-Za-z0-9._+#/-]{0,66}",
        base in prop_oneof![Just(i64::MAX - 1000), Just(i64::MIN), 0i64..4_102_444_800_000],
        n in 1usize..40,
        records in proptest::collection::vec(any::<u8>(), 800),
    ) {
        let rec = if kind == 1 { 20 } else { 8 };
        let mut frame = vec![1, kind, id.len() as u8];
        frame.extend_from_slice(id.as_bytes());
        frame.extend_from_slice(&base.to_be_bytes());
        frame.extend_from_slice(&(n as u16).to_be_bytes());
        frame.extend_from_slice(&records[..n * rec]);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        match binary::decode(&frame) {
            Ok(msg) => {
                let mut again = BytesMut::new();
                binary::encode(&msg, &mut again).expect("a decoded frame re-encodes");
                prop_assert_eq!(binary::decode(&again), Ok(msg));
            }
            Err(e) => prop_assert!(DecodeError::REASONS.contains(&e.reason()), "{}", e),
        }
    }

    /// Changing any one byte of a valid frame is always detected: CRC-32 catches
    /// every burst of up to 32 bits, and header bytes fail their own checks.
    #[test]
    fn any_single_byte_change_is_refused(msg in uplink(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut buf = BytesMut::new();
        binary::encode(&msg, &mut buf).expect("encodes");
        let i = at.index(buf.len());
        buf[i] ^= xor;
        prop_assert!(binary::decode(&buf).is_err(), "byte {} changed by {:#x} went unnoticed", i, xor);
    }

    /// Topics: valid ids round-trip; ids with MQTT wildcards or separators never parse.
    #[test]
    fn topics(dev in device(), junk in "[+#/]", at in any::<prop::sample::Index>()) {
        for kind in [RecordKind::Fix, RecordKind::Event, RecordKind::Heartbeat] {
            let t = Topic::for_device(&dev, kind);
            prop_assert_eq!(Topic::parse(&t), Ok(Topic::Device { device: dev.clone(), kind }));
        }
        let mut s = dev.as_str().to_owned();
        s.insert_str(at.index(s.len() + 1), &junk);
        prop_assert!(DeviceId::parse(&s).is_err());
    }
}
