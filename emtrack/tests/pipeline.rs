//! The whole path on a real Mosquitto (started by the test from
//! `deploy/mosquitto/`) and real PostgreSQL (`#[sqlx::test]`, a fresh
//! database per test): device-sim → broker → emtrack → tables, checked
//! against the scenario's ground truth.

mod common;

use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn whole_path_matches_the_ground_truth_and_redelivery_adds_nothing(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 11, 60).await;
    let running = Running::start(pool.clone(), broker.port, "emtrack-test-whole").await;
    let m = running.metrics.clone();

    let mut sc = scenario(&world, 30, 1);
    let devices = sc.device_count();
    let report = publish_all(broker.port, &mut sc, devices, "pub-whole").await;
    let truth = sc.finish();
    assert_eq!(
        report.acked, report.messages,
        "the broker took every message"
    );
    let sent = report.messages;
    wait_acked(&m, sent, Duration::from_secs(120)).await;
    assert_eq!(m.messages_received.get(), sent);
    let matched = check_against_truth(&pool, &truth).await;
    assert!(matched >= 20, "only {matched} episodes");
    let stored_fixes = m.fixes_accepted.get();
    let before = transitions(&pool).await;
    eprintln!(
        "{sent} messages, {stored_fixes} fixes, {matched} episodes, {} transitions",
        before.len()
    );

    // Redelivery: the same messages again (the first 3,000) store nothing new.
    let mut again = scenario(&world, 30, 1).take(3_000);
    let report = publish_all(broker.port, &mut again, devices, "pub-again").await;
    let total = sent + report.messages;
    wait_acked(&m, total, Duration::from_secs(60)).await;
    assert_eq!(m.fixes_accepted.get(), stored_fixes, "no fix stored twice");
    assert_eq!(fixes_per_device(&pool).await, truth_fixes(&truth));
    assert_eq!(transitions(&pool).await, before, "no transition added");
    assert!(m.fixes_duplicate.get() > 0);

    running.shut_down().await;
    assert_eq!(m.messages_unacked.get(), 0);
}

/// A JSON fix message of `device` at `t` (ms) and `lat`.
fn json_fix(device: &str, t: i64, lat: f64) -> Vec<u8> {
    json_fix_at(device, t, lat, 76.945)
}

/// A JSON fix message of `device` at `t` (ms), `lat`, `lon`.
fn json_fix_at(device: &str, t: i64, lat: f64, lon: f64) -> Vec<u8> {
    let t = jiff::Timestamp::from_millisecond(t).expect("time");
    format!(
        r#"{{"v": 1, "device": "{device}", "fixes": [{{"t": "{t}", "lat": {lat}, "lon": {lon}, "acc": 8}}]}}"#
    )
    .into_bytes()
}

/// Every refusal the service itself makes, and decoder refusals of each
/// family, is stored with its raw bytes and counted by reason. (Every
/// decoder reason, payload by payload, is in `protocol/tests/golden.rs`.)
/// Duplicates are dropped and counted; an implausible jump is stored,
/// flagged suspect, and counted.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_rejection_reason_is_stored_and_counted(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    world(&pool, 12, 5).await;
    sqlx::query("UPDATE devices SET retired_at = now() - interval '1 day' WHERE id = 'EM-000002'")
        .execute(&pool)
        .await
        .expect("retire");
    // EM-000001 sends emtrack JSON, EM-000003 binary frames (a device is
    // held to its registered format).
    sqlx::query(
        "UPDATE devices SET format = CASE id WHEN 'EM-000001' THEN 'json' ELSE 'binary' END \
         WHERE id IN ('EM-000001', 'EM-000003')",
    )
    .execute(&pool)
    .await
    .expect("formats");
    sqlx::query("INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('EM-777777', 'bracelet', 'json', 60)")
        .execute(&pool)
        .await
        .expect("unassigned device");
    let running = Running::start(pool.clone(), broker.port, "emtrack-test-reasons").await;
    let m = running.metrics.clone();

    let now = jiff::Timestamp::now().as_millisecond();
    let t0 = now - 600_000;
    let fix_topic = |d: &str| format!("em/v1/dev/{d}/fix");
    let good = json_fix("EM-000001", t0, 43.238);
    let mut frame = bytes::BytesMut::new();
    protocol::binary::encode(
        &protocol::Uplink {
            device: protocol::DeviceId::parse("EM-000001").expect("id"),
            body: protocol::Body::Heartbeats(vec![protocol::Heartbeat {
                time: jiff::Timestamp::from_millisecond(t0).expect("t"),
                battery_pct: Some(50),
                flags: protocol::Flags::default(),
                pending: 0,
            }]),
        },
        &mut frame,
    )
    .expect("encodes");
    // A device whose first message is a heartbeat (no fix yet).
    let mut first_hb = bytes::BytesMut::new();
    protocol::binary::encode(
        &protocol::Uplink {
            device: protocol::DeviceId::parse("EM-000003").expect("id"),
            body: protocol::Body::Heartbeats(vec![protocol::Heartbeat {
                time: jiff::Timestamp::from_millisecond(t0).expect("t"),
                battery_pct: Some(50),
                flags: protocol::Flags::default(),
                pending: 7,
            }]),
        },
        &mut first_hb,
    )
    .expect("encodes");
    let mut bad_crc = frame.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let messages: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        // Stored, then a duplicate, then a jump of ~11 km in a minute (suspect).
        (fix_topic("EM-000001"), good.clone(), None),
        (fix_topic("EM-000001"), good, None),
        (
            fix_topic("EM-000001"),
            json_fix("EM-000001", t0 + 60_000, 43.338),
            None,
        ),
        ("em/v1/dev/EM-000003/hb".into(), first_hb.to_vec(), None),
        (
            "em/v1/dev/EM-000001/hb".into(),
            frame[..frame.len() / 2].to_vec(),
            Some("truncated"),
        ),
        ("em/v1/dev/EM-000001/hb".into(), bad_crc, Some("bad_crc")),
        (
            fix_topic("EM-000001"),
            b"{\"v\": 1, \"device\": ".to_vec(),
            Some("invalid_json"),
        ),
        (
            fix_topic("EM-000001"),
            json_fix("EM-000001", t0, 95.0),
            Some("coordinate_out_of_range"),
        ),
        (
            fix_topic("EM-000001"),
            vec![b'x'; 260 * 1024],
            Some("payload_too_large"),
        ),
        (
            "em/v1/dev/bad id/fix".into(),
            json_fix("EM-000001", t0, 43.2),
            Some("invalid_device_id"),
        ),
        (
            fix_topic("EM-000001"),
            json_fix("EM-000003", t0, 43.2),
            Some("device_mismatch"),
        ),
        (
            "em/v1/dev/EM-000001/event".into(),
            json_fix("EM-000001", t0, 43.2),
            Some("topic_kind_mismatch"),
        ),
        (
            fix_topic("EM-999999"),
            json_fix("EM-999999", t0, 43.2),
            Some("unknown_device"),
        ),
        (
            fix_topic("EM-000003"),
            json_fix("EM-000003", t0, 43.2),
            Some("format_mismatch"),
        ),
        (
            fix_topic("EM-000002"),
            json_fix("EM-000002", t0, 43.2),
            Some("device_retired"),
        ),
        (
            fix_topic("EM-777777"),
            json_fix("EM-777777", t0, 43.2),
            Some("device_unassigned"),
        ),
        (
            fix_topic("EM-000001"),
            json_fix("EM-000001", now + 3_600_000, 43.2),
            Some("future_timestamp"),
        ),
        (
            fix_topic("EM-000001"),
            json_fix("EM-000001", now - 2_300 * 86_400_000, 43.2),
            Some("timestamp_too_old"),
        ),
        // A 10 kB topic: refused, and stored cut to 512 bytes (an index row
        // of the full topic would fail, and must not stall the pipeline).
        (
            format!("owntracks/{}/x", "u".repeat(10_000)),
            b"{}".to_vec(),
            Some("invalid_device_id"),
        ),
    ];
    let raw: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(t, p, _)| (t.clone(), p.clone()))
        .collect();
    publish_raw(broker.port, "test-reasons-pub", &raw).await;
    wait_acked(&m, messages.len() as u64, Duration::from_secs(20)).await;

    let mut expected: Vec<(String, String, Vec<u8>)> = messages
        .iter()
        .filter_map(|(t, p, r)| r.map(|r| (t.chars().take(512).collect(), r.to_owned(), p.clone())))
        .collect();
    let mut stored: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT topic, reason, payload FROM rejected_messages")
            .fetch_all(&pool)
            .await
            .expect("rejected");
    expected.sort();
    stored.sort();
    assert_eq!(stored.len(), expected.len());
    assert!(
        stored == expected,
        "each refusal stored with its reason and raw bytes"
    );
    for (_, reason, _) in &expected {
        let n = expected.iter().filter(|e| &e.1 == reason).count() as u64;
        assert_eq!(
            m.rejected.with_label_values(&[reason.as_str()]).get(),
            n,
            "{reason} counted"
        );
    }
    let fixes: Vec<(bool,)> =
        sqlx::query_as("SELECT suspect FROM fixes WHERE device_id = 'EM-000001' ORDER BY fix_time")
            .fetch_all(&pool)
            .await
            .expect("fixes");
    assert_eq!(
        fixes,
        vec![(false,), (true,)],
        "one fix, then the jump flagged suspect"
    );
    assert_eq!(m.fixes_duplicate.get(), 1);
    assert_eq!(m.fixes_suspect.get(), 1);
    assert_eq!(m.fixes_accepted.get(), 2);
    let pending: Option<i32> =
        sqlx::query_scalar("SELECT pending FROM device_state WHERE device_id = 'EM-000003'")
            .fetch_one(&pool)
            .await
            .expect("state of a heartbeat-only device");
    assert_eq!(pending, Some(7));
    assert_eq!(m.heartbeats.get(), 1);

    // A batch the database refuses outright (here: a constraint the test adds)
    // is not retried forever: its messages are kept raw as storage_failed,
    // acked, and the messages after it go through.
    sqlx::query("ALTER TABLE device_events ADD CONSTRAINT test_refuses_straps CHECK (kind <> 'strap_opened')")
        .execute(&pool)
        .await
        .expect("constraint");
    let event = format!(
        r#"{{"v": 1, "device": "EM-000001", "events": [{{"t": "{}", "event": "strap_opened"}}]}}"#,
        jiff::Timestamp::from_millisecond(t0 + 90_000).expect("t")
    )
    .into_bytes();
    publish_raw(
        broker.port,
        "test-reasons-pub-2",
        &[("em/v1/dev/EM-000001/event".into(), event.clone())],
    )
    .await;
    wait_acked(&m, messages.len() as u64 + 1, Duration::from_secs(20)).await;
    publish_raw(
        broker.port,
        "test-reasons-pub-3",
        &[(
            fix_topic("EM-000001"),
            json_fix("EM-000001", t0 + 120_000, 43.338),
        )],
    )
    .await;
    wait_acked(&m, messages.len() as u64 + 2, Duration::from_secs(20)).await;
    let kept: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM rejected_messages WHERE reason = 'storage_failed'")
            .fetch_one(&pool)
            .await
            .expect("quarantined");
    assert_eq!(kept, event);
    assert_eq!(m.rejected.with_label_values(&["storage_failed"]).get(), 1);
    assert_eq!(m.fixes_accepted.get(), 3, "the pipeline goes on");

    // Retention (here: by hand) drops a day's partition the service has
    // cached as existing: the next fix of that day recreates it.
    let day = jiff::Timestamp::from_millisecond(t0)
        .expect("t")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    sqlx::query(&format!("DROP TABLE fixes_p{}", day.strftime("%Y%m%d")))
        .execute(&pool)
        .await
        .expect("drop the partition");
    publish_raw(
        broker.port,
        "test-reasons-pub-4",
        &[(
            fix_topic("EM-000001"),
            json_fix("EM-000001", t0 + 180_000, 43.338),
        )],
    )
    .await;
    wait_acked(&m, messages.len() as u64 + 3, Duration::from_secs(20)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes WHERE device_id = 'EM-000001'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 1, "stored in a recreated partition");
    assert_eq!(m.fixes_accepted.get(), 4);
    running.shut_down().await;
}

/// Zone and rule changes made in the database while the service runs take
/// effect without a restart (NOTIFY → LISTEN → engine).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_live_zone_change_takes_effect_without_restart(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 15, 5).await;
    let subject = &world.subjects[0];
    let (lon, lat) = subject.home.lonlat();
    // A spot about 1 km north of home, inside the city, at noon (no curfew).
    let (lat, lon) = (lat + 0.009, lon);
    sqlx::query("UPDATE devices SET format = 'json' WHERE id = $1")
        .bind(&subject.device)
        .execute(&pool)
        .await
        .expect("it sends emtrack JSON below");
    let running = Running::start(pool.clone(), broker.port, "emtrack-test-live").await;
    let m = running.metrics.clone();
    let reference = running.svc.reference.clone();
    let reloads = |_: &ingest::Metrics| reference.reloads.get();
    let noon: i64 = "2026-11-10T12:00:00+05:00[Asia/Almaty]"
        .parse::<jiff::Zoned>()
        .expect("noon")
        .timestamp()
        .as_millisecond();
    let topic = format!("em/v1/dev/{}/fix", subject.device);
    let fixes = |from_min: i64, lat: f64| -> Vec<(String, Vec<u8>)> {
        (0..6)
            .map(|k| {
                let t = noon + (from_min + k) * 60_000;
                (topic.clone(), json_fix_at(&subject.device, t, lat, lon))
            })
            .collect()
    };
    let rule_transitions = |pool: PgPool| async move {
        sqlx::query_as::<_, (String,)>(
            "SELECT kind FROM rule_transitions WHERE rule_id = 999002 ORDER BY at",
        )
        .fetch_all(&pool)
        .await
        .expect("transitions")
    };
    let mut sent = 0u64;

    // Before the zone exists: nothing to break.
    let batch = fixes(0, lat);
    publish_raw(broker.port, "test-live-1", &batch).await;
    sent += batch.len() as u64;
    wait_acked(&m, sent, Duration::from_secs(20)).await;
    assert!(rule_transitions(pool.clone()).await.is_empty());

    // A new exclusion zone around the spot, and a rule: applied live.
    let before = reloads(&m);
    sqlx::query(
        "INSERT INTO zones (id, name, kind, geometry, radius_m) VALUES \
         (999001, 'new victim address', 'exclusion', jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array($1::float8, $2::float8)), 200)",
    )
    .bind(lon)
    .bind(lat)
    .execute(&pool)
    .await
    .expect("zone");
    sqlx::query(
        "INSERT INTO rules (id, subject_id, kind, zone_id) VALUES (999002, $1, 'zone', 999001)",
    )
    .bind(subject.id as i64)
    .execute(&pool)
    .await
    .expect("rule");
    wait_until(Duration::from_secs(10), "the change is applied", || {
        let m = m.clone();
        async move { reloads(&m) > before }
    })
    .await;
    let batch = fixes(10, lat);
    publish_raw(broker.port, "test-live-2", &batch).await;
    sent += batch.len() as u64;
    wait_acked(&m, sent, Duration::from_secs(20)).await;
    assert_eq!(
        rule_transitions(pool.clone()).await,
        vec![("exclusion_entered".to_owned(),)],
        "the new zone is judged"
    );

    // Move the zone 5 km away at 12:15 of the simulated day: the subject
    // is outside it from then on. Fixes are judged against the zone version
    // in force at their own time, and this test's day is in the past, so
    // the versions are dated into it (v1 from 12:05, v2 from 12:15), in the
    // transaction of the move, before the engine reads them.
    let before = reloads(&m);
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query(
        "UPDATE zones SET geometry = jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array($1::float8, $2::float8)) WHERE id = 999001",
    )
    .bind(lon)
    .bind(lat + 0.045)
    .execute(&mut *tx)
    .await
    .expect("move");
    sqlx::query(
        "UPDATE order_versions SET valid_from = CASE version WHEN 1 THEN $1 ELSE $2 END, \
                valid_to = CASE version WHEN 1 THEN $2 END \
         WHERE object = 'zone' AND object_id = 999001",
    )
    .bind(store::Millis(noon + 5 * 60_000))
    .bind(store::Millis(noon + 15 * 60_000))
    .execute(&mut *tx)
    .await
    .expect("dated into the simulated day");
    tx.commit().await.expect("commit");
    wait_until(Duration::from_secs(10), "the move is applied", || {
        let m = m.clone();
        async move { reloads(&m) > before }
    })
    .await;
    let batch = fixes(20, lat);
    publish_raw(broker.port, "test-live-3", &batch).await;
    sent += batch.len() as u64;
    wait_acked(&m, sent, Duration::from_secs(20)).await;
    assert_eq!(
        rule_transitions(pool.clone()).await,
        vec![
            ("exclusion_entered".to_owned(),),
            ("exclusion_left".to_owned(),)
        ],
        "the moved zone is judged"
    );

    // An assignment that starts in two seconds: refused before, judged after,
    // with no NOTIFY at that moment (the service wakes at the boundary).
    sqlx::query("INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('EM-555555', 'bracelet', 'json', 60)")
        .execute(&pool)
        .await
        .expect("device");
    let before = reloads(&m);
    sqlx::query("INSERT INTO assignments (device_id, subject_id, valid_from) VALUES ('EM-555555', $1, now() + interval '2 seconds')")
        .bind(subject.id as i64)
        .execute(&pool)
        .await
        .expect("assignment");
    wait_until(Duration::from_secs(10), "the new rows are read", || {
        let m = m.clone();
        async move { reloads(&m) > before }
    })
    .await;
    let before = reloads(&m);
    let t = jiff::Timestamp::now().as_millisecond() - 60_000;
    let topic = "em/v1/dev/EM-555555/fix".to_owned();
    publish_raw(
        broker.port,
        "test-live-4",
        &[(topic.clone(), json_fix_at("EM-555555", t, lat, lon))],
    )
    .await;
    sent += 1;
    wait_acked(&m, sent, Duration::from_secs(20)).await;
    assert_eq!(
        m.rejected.with_label_values(&["device_unassigned"]).get(),
        1
    );
    wait_until(
        Duration::from_secs(10),
        "the assignment takes effect",
        || {
            let m = m.clone();
            async move { reloads(&m) > before }
        },
    )
    .await;
    publish_raw(
        broker.port,
        "test-live-5",
        &[(topic, json_fix_at("EM-555555", t + 1_000, lat, lon))],
    )
    .await;
    sent += 1;
    wait_acked(&m, sent, Duration::from_secs(20)).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM fixes WHERE device_id = 'EM-555555'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, 1, "stored once the assignment started");
    running.shut_down().await;
}
