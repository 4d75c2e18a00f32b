//! Orders end to end: a schedule's dated exception (an approved absence)
//! stored in the database reaches the running engine, and changes an
//! alert's outcome for fixes that arrive over MQTT.

mod common;

use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::time::Duration;

/// A time as the schedule's local `YYYY-MM-DDTHH:MM` (UTC here).
fn local(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).expect("time");
    t.strftime("%Y-%m-%dT%H:%M").to_string()
}

/// A time of day as `HH:MM` (UTC).
fn hhmm(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).expect("time");
    t.strftime("%H:%M").to_string()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_approved_absence_suppresses_the_curfew_alert_and_only_it(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let now = store::now_ms();
    // A curfew in force every day from two hours ago to two hours ahead
    // (its 5 minutes' grace long over); subject 2 has an approved absence
    // from an hour ago to an hour ahead, subject 1 (the control) none.
    let weekly = serde_json::json!([{
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": hhmm(now - 2 * 3_600_000),
        "end": hhmm(now + 2 * 3_600_000),
    }]);
    let control = serde_json::json!({"tz": "UTC", "windows": weekly});
    let absent = serde_json::json!({"tz": "UTC", "windows": weekly, "exceptions": [{
        "kind": "suspended", "start": local(now - 3_600_000), "end": local(now + 3_600_000),
    }]});
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO zones (id, name, kind, geometry, radius_m) \
         VALUES (800, 'home', 'inclusion', '{\"type\": \"Point\", \"coordinates\": [76.95, 43.25]}', 150)",
    ];
    for q in setup {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    for (subject, schedule) in [(1_i64, &control), (2, &absent)] {
        let device = format!("EM-CURFEW-{subject}");
        sqlx::query("INSERT INTO subjects (id, reference, officer_id) VALUES ($1, 'S-' || $1, 1)")
            .bind(subject)
            .execute(&pool)
            .await
            .expect("subject");
        sqlx::query(
            "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ($1, 'bracelet', 'json', 30)",
        )
        .bind(&device)
        .execute(&pool)
        .await
        .expect("device");
        sqlx::query("INSERT INTO assignments (device_id, subject_id) VALUES ($1, $2)")
            .bind(&device)
            .bind(subject)
            .execute(&pool)
            .await
            .expect("assignment");
        sqlx::query(
            "INSERT INTO rules (id, subject_id, kind, zone_id, schedule) VALUES ($1, $1, 'curfew', 800, $2)",
        )
        .bind(subject)
        .bind(schedule)
        .execute(&pool)
        .await
        .expect("curfew");
    }
    let running = Running::start(pool.clone(), broker.port, "emtrack-orders-absence").await;

    // Both subjects 5 km from home: five fixes over the last three minutes.
    let away: Vec<(i64, (f64, f64))> = (0..5)
        .map(|i| (now - 170_000 + i * 40_000, (43.295, 76.95)))
        .collect();
    let messages: Vec<(String, Vec<u8>)> = [1, 2]
        .iter()
        .map(|s| {
            let d = format!("EM-CURFEW-{s}");
            (format!("em/v1/dev/{d}/fix"), json_fixes(&d, &away))
        })
        .collect();
    publish_raw(broker.port, "orders-pub", &messages).await;
    wait_acked(&running.metrics, 2, Duration::from_secs(30)).await;
    wait_until(
        Duration::from_secs(30),
        "the control's curfew alert",
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM alerts WHERE kind = 'curfew_violation' AND subject_id = 1",
            )
            .fetch_one(&pool)
            .await
            .expect("alerts");
                n == 1
            }
        },
    )
    .await;
    // The alert service has handled everything the batch carried (the
    // control's alert came from it); the absent subject has no alert, no
    // violation, and its fixes are stored like the control's.
    let absent_alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE subject_id = 2")
        .fetch_one(&pool)
        .await
        .expect("alerts");
    assert_eq!(absent_alerts, 0, "no alert during the approved absence");
    let transitions: Vec<(i64, String)> =
        sqlx::query_as("SELECT subject_id, kind FROM rule_transitions ORDER BY subject_id, at")
            .fetch_all(&pool)
            .await
            .expect("transitions");
    assert_eq!(
        transitions,
        vec![(1, "curfew_violation_started".to_owned())],
        "only the control violated its curfew"
    );
    let fixes: Vec<(String, i64)> =
        sqlx::query_as("SELECT device_id, count(*) FROM fixes GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("fixes");
    assert_eq!(
        fixes,
        vec![("EM-CURFEW-1".to_owned(), 5), ("EM-CURFEW-2".to_owned(), 5)]
    );
    running.shut_down().await;
}

/// A late fix is judged against the zone version in force at its own time,
/// and its transition names that version. The victim's exclusion zone was
/// drawn an hour ago around A and moved to B (version 2) just before the
/// service starts; the bracelet then comes online at A and uploads a
/// backlog from 30 minutes ago, also at A. Judged against today's zone (B)
/// the backlog shows nothing; judged against version 1 it shows the
/// violation, as a historical episode.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_late_fix_is_judged_against_the_zone_version_in_force_at_its_time(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let a = (43.25, 76.95);
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO subjects (id, reference, officer_id) VALUES (1, 'S-1', 1)",
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('EM-LATE-1', 'bracelet', 'json', 30)",
        "INSERT INTO assignments (device_id, subject_id, valid_from) VALUES ('EM-LATE-1', 1, now() - interval '2 hours')",
        "INSERT INTO zones (id, name, kind, geometry, radius_m) \
         VALUES (900, 'victim home', 'exclusion', '{\"type\": \"Point\", \"coordinates\": [76.95, 43.25]}', 200)",
        "INSERT INTO rules (id, subject_id, kind, zone_id) VALUES (1, 1, 'zone', 900)",
        // The victim moved: the zone goes 3 km east (version 2, from now).
        "UPDATE zones SET geometry = '{\"type\": \"Point\", \"coordinates\": [76.987, 43.25]}' WHERE id = 900",
        // Version 1 was drawn an hour ago (test data: the trigger dated it now).
        "UPDATE order_versions SET valid_from = valid_from - interval '1 hour' \
         WHERE object = 'zone' AND object_id = 900 AND version = 1",
    ];
    for q in setup {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    let moved: store::Millis = sqlx::query_scalar(
        "SELECT valid_from FROM order_versions WHERE object = 'zone' AND object_id = 900 AND version = 2",
    )
    .fetch_one(&pool)
    .await
    .expect("version 2");
    let running = Running::start(pool.clone(), broker.port, "emtrack-orders-late").await;

    // Online at A after the move (compliant under version 2), then the
    // backlog: five fixes at A, a minute apart, from 30 minutes before it.
    let online = store::now_ms().max(moved.0 + 1);
    let backlog: Vec<(i64, (f64, f64))> = (0..5)
        .map(|i| (moved.0 - 1_800_000 + i * 60_000, a))
        .collect();
    let d = "EM-LATE-1";
    let topic = format!("em/v1/dev/{d}/fix");
    publish_raw(
        broker.port,
        "orders-late-pub",
        &[
            (topic.clone(), json_fixes(d, &[(online, a)])),
            (topic, json_fixes(d, &backlog)),
        ],
    )
    .await;
    wait_acked(&running.metrics, 2, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(30), "the historical episode", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rule_transitions")
                .fetch_one(&pool)
                .await
                .expect("transitions");
            n >= 2
        }
    })
    .await;
    /// kind, at, historical, zone version, end cause
    type Row = (String, store::Millis, bool, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT kind, at, historical, zone_version, end_cause FROM rule_transitions ORDER BY at, kind",
    )
    .fetch_all(&pool)
    .await
    .expect("transitions");
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(k, at, h, v, c)| (k, at.0, h, v, c))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "exclusion_entered".to_owned(),
                backlog[0].0,
                true,
                Some(1),
                None
            ),
            (
                "exclusion_left".to_owned(),
                backlog[4].0,
                true,
                None,
                Some("evidence_ended".to_owned())
            ),
        ],
        "judged against version 1 (A), the version in force at the fixes' time"
    );
    running.shut_down().await;
}
