//! Evidence that holds up, tried from the outside: raw payloads published on
//! a real broker (started from `deploy/mosquitto/`) as a device would, into
//! the service on real PostgreSQL.
//!
//! - a clock glitch ahead, or a clock jumping back, does not blind judging;
//! - a forged, pre-dated batch does not erase the genuine fixes after it;
//! - a database refusing connections holds acks (nothing quarantined);
//! - quarantined messages are replayed once their cause is fixed;
//! - a stolen broker session is detected and reported;
//! - a retained message is handled once, whatever the resubscriptions;
//! - a message in another format than the device's is refused;
//! - every accepted message is kept as its SHA-256, topic and arrival, and
//!   its fixes name it (OwnTracks' `tid` and `t` with it).

mod common;

use common::*;
use device_sim::testbed::Broker;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::time::Duration;

/// Inside the test's exclusion zone (a 200 m circle).
const INSIDE: (f64, f64) = (43.25, 76.95);
/// About 2 km north of it.
const OUTSIDE: (f64, f64) = (43.27, 76.95);

/// One officer, an exclusion zone, and a subject per bracelet with a rule to
/// keep out of it. `devices` are (id, format, subject id).
async fn small_world(pool: &PgPool, devices: &[(&str, &str, i64)]) {
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO zones (id, name, kind, geometry, radius_m) \
         VALUES (900, 'victim home', 'exclusion', '{\"type\": \"Point\", \"coordinates\": [76.95, 43.25]}', 200)",
    ];
    for q in setup {
        sqlx::query(q).execute(pool).await.expect(q);
    }
    for (device, format, subject) in devices {
        sqlx::query("INSERT INTO subjects (id, reference, officer_id) VALUES ($1, $2, 1)")
            .bind(subject)
            .bind(format!("S-{subject}"))
            .execute(pool)
            .await
            .expect("subject");
        sqlx::query(
            "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ($1, 'bracelet', $2, 30)",
        )
        .bind(device)
        .bind(format)
        .execute(pool)
        .await
        .expect("device");
        sqlx::query("INSERT INTO assignments (device_id, subject_id) VALUES ($1, $2)")
            .bind(device)
            .bind(subject)
            .execute(pool)
            .await
            .expect("assignment");
        sqlx::query(
            "INSERT INTO rules (id, subject_id, kind, zone_id) VALUES ($1, $1, 'zone', 900)",
        )
        .bind(subject)
        .execute(pool)
        .await
        .expect("rule");
    }
}

fn fix_topic(device: &str) -> String {
    format!("em/v1/dev/{device}/fix")
}

/// (kind, state, historical, episode_at ms) of a subject's alerts.
async fn alerts_of(pool: &PgPool, subject: i64) -> Vec<(String, String, bool, i64)> {
    let rows: Vec<(String, String, bool, store::Millis)> = sqlx::query_as(
        "SELECT kind, state, historical, episode_at FROM alerts WHERE subject_id = $1 ORDER BY kind, episode_at",
    )
    .bind(subject)
    .fetch_all(pool)
    .await
    .expect("alerts");
    rows.into_iter()
        .map(|(k, s, h, e)| (k, s, h, e.0))
        .collect()
}

/// Waits until `subject` has an alert of `kind`; returns it.
async fn wait_alert(pool: &PgPool, subject: i64, kind: &str) -> (String, String, bool, i64) {
    let find = || async {
        alerts_of(pool, subject)
            .await
            .into_iter()
            .find(|a| a.0 == kind)
    };
    let ok = poll_until(Duration::from_secs(15), || async { find().await.is_some() }).await;
    assert!(
        ok,
        "no {kind} alert for subject {subject}: {:?}",
        alerts_of(pool, subject).await
    );
    find().await.expect("found")
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// `GET path` of the service, off the test's runtime thread (the service
/// answers on that thread).
async fn get(running: &Running, path: &'static str) -> (u16, String) {
    let port = running.svc.http.port();
    tokio::task::spawn_blocking(move || http_get(port, path))
        .await
        .expect("joins")
        .expect("the service answers")
}

/// A metric (with its labels, as `/metrics` prints them) of the service; 0
/// if it has no sample yet.
async fn metric_of(running: &Running, name: &str) -> f64 {
    metric(&get(running, "/metrics").await.1, name).unwrap_or(0.0)
}

/// The issue's trial: a bracelet sends one fix dated 290 s ahead, then its
/// genuine fixes from inside an exclusion zone. It raises the live alert at
/// the same episode time as a control bracelet on the same path without the
/// glitch; the glitch is stored, flagged, counted, and raises a clock alert.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_clock_glitch_ahead_does_not_blind_judging(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-JUMP", "json", 1), ("EM-CTRL", "json", 2)]).await;
    let mut cfg = config(broker.port, "emtrack-evidence-clock");
    // The genuine fixes below are dated up to 60 s after "now" and published
    // at once: inside this tolerance, so the test needs no real-time wait.
    cfg.clock_tolerance_s = 120;
    let running = Running::start_with(pool.clone(), cfg).await;

    let t = now_ms();
    let genuine: Vec<(i64, (f64, f64))> = [20, 30, 40, 50, 60]
        .iter()
        .map(|s| (t + s * 1000, INSIDE))
        .collect();
    let mut messages = vec![
        (
            fix_topic("EM-JUMP"),
            json_fixes("EM-JUMP", &[(t - 60_000, OUTSIDE)]),
        ),
        (
            fix_topic("EM-CTRL"),
            json_fixes("EM-CTRL", &[(t - 60_000, OUTSIDE)]),
        ),
        // The glitch: still at home, dated 290 s ahead.
        (
            fix_topic("EM-JUMP"),
            json_fixes("EM-JUMP", &[(t + 290_000, OUTSIDE)]),
        ),
    ];
    for f in &genuine {
        for d in ["EM-JUMP", "EM-CTRL"] {
            messages.push((fix_topic(d), json_fixes(d, &[*f])));
        }
    }
    publish_raw(broker.port, "bracelets-clock", &messages).await;
    wait_acked(
        &running.metrics,
        messages.len() as u64,
        Duration::from_secs(10),
    )
    .await;

    let jump = wait_alert(&pool, 1, "exclusion_zone_entered").await;
    let control = wait_alert(&pool, 2, "exclusion_zone_entered").await;
    assert!(!jump.2, "live, not historical");
    assert_eq!(
        jump.3, control.3,
        "same episode time as the control: the first genuine fix inside"
    );
    assert_eq!(jump.3, genuine[0].0);
    wait_alert(&pool, 1, "device_clock_fault").await;
    assert!(
        alerts_of(&pool, 2)
            .await
            .iter()
            .all(|a| a.0 != "device_clock_fault"),
        "the control's clock is fine"
    );

    // The glitch is evidence: stored with its own time, and the time it was
    // judged at (its arrival); every genuine fix is stored as it came.
    let (judged, glitch): (Option<store::Millis>, store::Millis) = sqlx::query_as(
        "SELECT judged_at, fix_time FROM fixes WHERE device_id = 'EM-JUMP' AND judged_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("one clock-suspect fix");
    assert_eq!(glitch.0, t + 290_000);
    let judged = judged.expect("judged_at").0;
    assert!(
        (t - 5_000..t + 60_000).contains(&judged),
        "judged at its arrival, not its date"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fixes WHERE device_id = 'EM-JUMP' AND judged_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stored, 1 + genuine.len() as i64);
    let finding: (String, store::Millis) =
        sqlx::query_as("SELECT kind, at FROM device_findings WHERE device_id = 'EM-JUMP'")
            .fetch_one(&pool)
            .await
            .expect("one finding");
    assert_eq!(
        finding,
        ("clock_ahead".to_owned(), store::Millis(t + 290_000))
    );
    assert_eq!(
        metric_of(
            &running,
            "emtrack_fixes_clock_suspect_total{direction=\"ahead\"}"
        )
        .await,
        1.0
    );
    running.shut_down().await;
}

/// A clock that jumps 200 s back while the bracelet sends a fix every 5 s in
/// real time, as it walks into the zone: the first fix after the jump is
/// late (one fix cannot tell a jump from a backlog), the next confirms it,
/// and from then on the fixes are judged in arrival order, so the live alert
/// is raised; the jump is flagged `behind`; once the clock is right again,
/// fixes are trusted again.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_clock_jumping_back_does_not_blind_judging(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-BACK", "json", 1)]).await;
    let mut cfg = config(broker.port, "emtrack-evidence-back");
    cfg.clock_tolerance_s = 2;
    let running = Running::start_with(pool.clone(), cfg).await;

    // Ten fixes, every 30 s, outside, ending 30 s ago.
    let t = now_ms() - 30_000;
    let live: Vec<(String, Vec<u8>)> = (0..10)
        .rev()
        .map(|k| {
            let at = t - k * 30_000;
            (
                fix_topic("EM-BACK"),
                json_fixes("EM-BACK", &[(at, OUTSIDE)]),
            )
        })
        .collect();
    publish_raw(broker.port, "bracelet-back", &live).await;
    // Then, in real time, the clock 200 s behind.
    let start = now_ms();
    let mut jumped = Vec::new();
    for k in 0..9 {
        let real = start + k * 5_000;
        let wait = real - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let at = now_ms() - 200_000;
        jumped.push(at);
        publish_raw(
            broker.port,
            "bracelet-back",
            &[(fix_topic("EM-BACK"), json_fixes("EM-BACK", &[(at, INSIDE)]))],
        )
        .await;
    }
    // The clock is right again, at the next fix.
    let wait = start + 9 * 5_000 - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let right = now_ms();
    publish_raw(
        broker.port,
        "bracelet-back",
        &[(
            fix_topic("EM-BACK"),
            json_fixes("EM-BACK", &[(right, INSIDE)]),
        )],
    )
    .await;
    wait_acked(&running.metrics, 20, Duration::from_secs(10)).await;

    let alert = wait_alert(&pool, 1, "exclusion_zone_entered").await;
    assert!(!alert.2, "a live alert, not a historical one");
    wait_alert(&pool, 1, "device_clock_fault").await;
    let behind: Vec<(store::Millis, store::Millis)> = sqlx::query_as(
        "SELECT fix_time, judged_at FROM fixes WHERE device_id = 'EM-BACK' AND judged_at IS NOT NULL ORDER BY fix_time",
    )
    .fetch_all(&pool)
    .await
    .expect("behind");
    assert_eq!(
        behind.iter().map(|b| b.0.0).collect::<Vec<_>>(),
        jumped[1..],
        "every fix after the first of the jump is flagged, its own time kept"
    );
    for w in behind.windows(2) {
        let step = w[1].1.0 - w[0].1.0;
        assert!(
            (3_000..=7_000).contains(&step),
            "judged about 5 s apart, as sent: {step} ms"
        );
    }
    assert!(
        behind[0].1.0 > t,
        "judged after the newest fix before the jump"
    );
    assert!(
        behind.iter().all(|b| b.1.0 <= right),
        "never after its arrival (before the next fix was sent)"
    );
    let last: Option<store::Millis> = sqlx::query_scalar(
        "SELECT judged_at FROM fixes WHERE device_id = 'EM-BACK' AND fix_time = $1",
    )
    .bind(store::Millis(right))
    .fetch_one(&pool)
    .await
    .expect("the last fix");
    assert_eq!(last, None, "trusted again once the clock is right");
    assert_eq!(
        running
            .metrics
            .fixes_clock_suspect
            .with_label_values(&["behind"])
            .get(),
        jumped.len() as u64 - 1
    );
    running.shut_down().await;
}

/// The issue's trial: one message of 289 fixes "at home", dated over the
/// next 300 s, then the genuine fixes from inside the zone, in real time.
/// Every genuine fix is kept, the track shows the genuine ones (the forged
/// versions were clock-suspect), the forged versions are kept beside them,
/// the exclusion alert is raised live and so is the integrity alert.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_pre_dated_batch_cannot_erase_the_genuine_fixes(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-FORGED", "json", 1)]).await;
    let mut cfg = config(broker.port, "emtrack-evidence-forged");
    cfg.clock_tolerance_s = 1;
    let running = Running::start_with(pool.clone(), cfg).await;

    let t0 = now_ms();
    // Dated over the next 300 s (inside `future_skew_s`): every whole second
    // from t0 + 10 s to t0 + 298 s, ahead of their arrival (tolerance 1 s).
    let forged: Vec<(i64, (f64, f64))> = (10..=298).map(|s| (t0 + s * 1000, OUTSIDE)).collect();
    publish_raw(
        broker.port,
        "forger",
        &[(fix_topic("EM-FORGED"), json_fixes("EM-FORGED", &forged))],
    )
    .await;
    // The bracelet, in real time: a fix inside every 10 s, sent when taken.
    let mut genuine = Vec::new();
    for s in [10, 20, 30, 40] {
        let at = t0 + s * 1000;
        let wait = at - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        genuine.push(at);
        publish_raw(
            broker.port,
            "bracelet-genuine",
            &[(
                fix_topic("EM-FORGED"),
                json_fixes("EM-FORGED", &[(at, INSIDE)]),
            )],
        )
        .await;
    }
    wait_acked(
        &running.metrics,
        1 + genuine.len() as u64,
        Duration::from_secs(10),
    )
    .await;
    let alert = wait_alert(&pool, 1, "exclusion_zone_entered").await;
    assert!(!alert.2, "live");
    assert_eq!(alert.3, genuine[0], "from the first genuine fix");
    let integrity = wait_alert(&pool, 1, "device_integrity").await;
    assert_eq!(integrity.1, "open");

    // The track shows the genuine fixes; both versions of each are kept.
    let track: Vec<(store::Millis, f64)> = sqlx::query_as(
        "SELECT fix_time, lat FROM fixes WHERE device_id = 'EM-FORGED' AND fix_time = ANY($1) ORDER BY fix_time",
    )
    .bind(genuine.iter().map(|t| store::Millis(*t)).collect::<Vec<_>>())
    .fetch_all(&pool)
    .await
    .expect("track");
    assert_eq!(
        track,
        genuine
            .iter()
            .map(|t| (store::Millis(*t), INSIDE.0))
            .collect::<Vec<_>>()
    );
    let versions: Vec<(store::Millis, f64)> = sqlx::query_as(
        "SELECT fix_time, lat FROM fix_conflicts WHERE device_id = 'EM-FORGED' ORDER BY fix_time, lat",
    )
    .fetch_all(&pool)
    .await
    .expect("conflicts");
    let mut want: Vec<(store::Millis, f64)> = genuine
        .iter()
        .flat_map(|t| {
            [
                (store::Millis(*t), INSIDE.0),
                (store::Millis(*t), OUTSIDE.0),
            ]
        })
        .collect();
    want.sort_by(|a, b| a.0.0.cmp(&b.0.0).then(a.1.total_cmp(&b.1)));
    assert_eq!(versions, want, "both versions of each conflicting instant");
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes WHERE device_id = 'EM-FORGED'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(all, forged.len() as i64, "one row per instant in the track");
    assert_eq!(
        metric_of(&running, "emtrack_fix_conflicts_total").await,
        genuine.len() as f64
    );
    running.shut_down().await;
}

/// The track keeps the first version when neither clock was suspect: a
/// second, different record for a stored instant is kept aside, counted,
/// and raises the integrity alert; the same record again is dropped silently.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_conflicting_record_is_kept_aside_and_an_identical_one_dropped(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-TWIN", "json", 1)]).await;
    let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-twin").await;
    let t = now_ms() - 120_000;
    let first = json_fixes("EM-TWIN", &[(t, OUTSIDE), (t + 30_000, OUTSIDE)]);
    // The same instants again: one identical, one elsewhere (a clone).
    let second = json_fixes("EM-TWIN", &[(t, OUTSIDE), (t + 30_000, INSIDE)]);
    publish_raw(
        broker.port,
        "twins",
        &[
            (fix_topic("EM-TWIN"), first),
            (fix_topic("EM-TWIN"), second.clone()),
        ],
    )
    .await;
    wait_acked(&running.metrics, 2, Duration::from_secs(10)).await;
    wait_alert(&pool, 1, "device_integrity").await;
    let track: Vec<f64> =
        sqlx::query_scalar("SELECT lat FROM fixes WHERE device_id = 'EM-TWIN' ORDER BY fix_time")
            .fetch_all(&pool)
            .await
            .expect("track");
    assert_eq!(track, vec![OUTSIDE.0, OUTSIDE.0], "the first version stays");
    let kept: Vec<(f64, i64)> =
        sqlx::query_as("SELECT c.lat, c.message_id FROM fix_conflicts c ORDER BY c.lat")
            .fetch_all(&pool)
            .await
            .expect("conflicts");
    assert_eq!(
        kept.len(),
        2,
        "both versions of the one conflicting instant"
    );
    let second_id: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE sha256 = $1")
        .bind(Sha256::digest(&second).to_vec())
        .fetch_one(&pool)
        .await
        .expect("the clone's message is on record");
    assert_eq!(kept[0], (INSIDE.0, second_id));
    assert_eq!(
        metric_of(&running, "emtrack_fix_conflicts_total").await,
        1.0
    );
    assert_eq!(
        metric_of(&running, "emtrack_fixes_duplicate_total").await,
        1.0
    );
    running.shut_down().await;
}

/// The test database refuses connections for 15 s (SQLSTATE 55000) while a
/// scenario streams: acks are held, nothing is quarantined, and everything
/// matches the ground truth afterwards.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_database_refusing_connections_quarantines_nothing(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 15, 30).await;
    let db = pool
        .connect_options()
        .get_database()
        .expect("sqlx::test names its database")
        .to_owned();
    let admin = store::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("admin connection");
    let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-refusing").await;
    let m = running.metrics.clone();

    let mut sc = scenario(&world, 24, 1);
    let devices = sc.device_count();
    let port = broker.port;
    let publish = async move {
        let r = publish_all(port, &mut sc, devices, "pub-refusing").await;
        (r, sc.finish())
    };
    let refusal = async {
        wait_until(Duration::from_secs(60), "some fixes are stored", || {
            let pool = pool.clone();
            async move { fix_count(&pool).await > 5_000 }
        })
        .await;
        let allow = |on: bool| format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {on}");
        sqlx::query(&allow(false))
            .execute(&admin)
            .await
            .expect("refuse connections");
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&db)
        .execute(&admin)
        .await
        .expect("terminate");
        tokio::time::sleep(Duration::from_secs(15)).await;
        let retries = m.commit_retries.get();
        sqlx::query(&allow(true))
            .execute(&admin)
            .await
            .expect("allow connections");
        retries
    };
    let ((report, truth), retries) = tokio::join!(publish, refusal);
    assert_eq!(report.acked, report.messages);
    wait_acked(&m, report.messages, Duration::from_secs(120)).await;
    assert!(retries > 0, "commits were refused and retried");
    let quarantined: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rejected_messages WHERE reason = 'storage_failed'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(quarantined, 0, "no valid message quarantined");
    let matched = check_against_truth(&pool, &truth).await;
    assert!(matched >= 5, "only {matched} episodes");
    eprintln!(
        "{} messages, {retries} retries during the refusal, {matched} episodes matched",
        report.messages
    );
    running.shut_down().await;
}

/// A batch the database refuses for a data reason is quarantined; once the
/// cause is gone, `emtrack rejected replay` brings every message through the
/// normal path, and a second replay adds nothing.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn quarantined_messages_are_replayed_once_the_cause_is_fixed(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-REPLAY", "json", 1)]).await;
    for q in [
        "CREATE FUNCTION refuse_fix() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.device_id = 'EM-REPLAY' THEN RAISE EXCEPTION 'refused for the test'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON fixes FOR EACH ROW EXECUTE FUNCTION refuse_fix()",
    ] {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    let client = "emtrack-evidence-replay";
    let running = Running::start(pool.clone(), broker.port, client).await;
    let t = now_ms() - 600_000;
    let messages: Vec<(String, Vec<u8>)> = (0..3)
        .map(|k| {
            let at = t + k * 30_000;
            (
                fix_topic("EM-REPLAY"),
                json_fixes("EM-REPLAY", &[(at, OUTSIDE)]),
            )
        })
        .collect();
    publish_raw(broker.port, "bracelet-replay", &messages).await;
    let quarantined = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM rejected_messages WHERE reason = 'storage_failed'",
            )
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    wait_until(
        Duration::from_secs(15),
        "3 messages quarantined",
        || async { quarantined().await == 3 },
    )
    .await;
    assert_eq!(fix_count(&pool).await, 0);

    sqlx::query("DROP TRIGGER refuse ON fixes")
        .execute(&pool)
        .await
        .expect("the cause is fixed");
    let replay = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
            .args(["rejected", "replay", "--reason", "storage_failed"])
            .args(["--database-url", &database_url(&pool, 5432)])
            .args(["--mqtt-port", &broker.port.to_string()])
            .args(["--mqtt-client-id", client])
            .env("EMTRACK_LOG", "warn")
            .output()
            .expect("emtrack runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(replay().contains("replayed 3 "));
    wait_until(
        Duration::from_secs(15),
        "the replayed fixes are stored",
        || {
            let pool = pool.clone();
            async move { fix_count(&pool).await == 3 }
        },
    )
    .await;
    let marked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rejected_messages WHERE replayed_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("marked");
    assert_eq!(marked, 3);
    assert!(replay().contains("replayed 0 "), "nothing left to replay");
    // Replaying again anyway is absorbed by storage.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
        .args(["rejected", "replay", "--again"])
        .args(["--database-url", &database_url(&pool, 5432)])
        .args(["--mqtt-port", &broker.port.to_string()])
        .args(["--mqtt-client-id", client])
        .output()
        .expect("emtrack runs");
    assert!(again.status.success());
    wait_acked(&running.metrics, 9, Duration::from_secs(15)).await;
    assert_eq!(fix_count(&pool).await, 3, "a second replay adds nothing");
    assert_eq!(quarantined().await, 3, "and is not quarantined again");
    running.shut_down().await;
}

/// Another client connects with emtrack's client id and a clean session: the
/// broker drops emtrack's session. emtrack reconnects, sees the session gone,
/// counts it and says so on `/readyz`.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stolen_session_is_detected_and_reported(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-SESSION", "json", 1)]).await;
    let client = "emtrack-evidence-session";
    let running = Running::start(pool.clone(), broker.port, client).await;
    let (status, body) = get(&running, "/readyz").await;
    assert_eq!(status, 200);
    assert!(!body.contains("warning"), "{body}");

    let mut opts = rumqttc::MqttOptions::new(client, "127.0.0.1", broker.port);
    opts.set_clean_session(true);
    let (thief, mut el) = rumqttc::AsyncClient::new(opts, 8);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("the thief did not connect: {other:?}"),
        }
    }
    // The thief leaves; emtrack comes back to an empty session.
    let _ = thief.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
    drop(el);
    wait_until(Duration::from_secs(30), "the loss is counted", || async {
        running.metrics.mqtt_sessions_lost.get() >= 1
    })
    .await;
    let (status, body) = get(&running, "/readyz").await;
    assert!(
        body.contains("broker_session warning: the broker lost emtrack's session 1 time(s)"),
        "{body}"
    );
    assert_eq!(status, 200, "still serving: the condition is a warning");
    running.shut_down().await;
}

/// A retained message (as OwnTracks apps publish) comes again on every new
/// subscription: refused or accepted, it is stored once and counted once.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_retained_message_is_handled_once(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-RETAIN", "json", 1)]).await;
    let t = now_ms() - 60_000;
    // One accepted, one refused (an unknown device), both retained.
    let retained = [
        (
            fix_topic("EM-RETAIN"),
            json_fixes("EM-RETAIN", &[(t, OUTSIDE)]),
        ),
        (
            fix_topic("EM-UNKNOWN"),
            json_fixes("EM-UNKNOWN", &[(t, OUTSIDE)]),
        ),
    ];
    {
        let opts = rumqttc::MqttOptions::new("retainer", "127.0.0.1", broker.port);
        let (c, mut el) = rumqttc::AsyncClient::new(opts, 8);
        for (topic, payload) in &retained {
            c.publish(
                topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                true,
                payload.clone(),
            )
            .await
            .expect("queued");
        }
        let mut acked = 0;
        while acked < retained.len() {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                tokio::time::timeout(Duration::from_secs(5), el.poll())
                    .await
                    .expect("broker answers")
            {
                acked += 1;
            }
        }
    }
    // Four sessions in turn, each subscribing afresh.
    for round in 0..4 {
        let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-retained").await;
        wait_until(
            Duration::from_secs(10),
            "the retained messages came",
            || async { running.metrics.messages_received.get() >= 2 },
        )
        .await;
        wait_acked(&running.metrics, 2, Duration::from_secs(10)).await;
        if round > 0 {
            assert_eq!(
                running.metrics.messages_repeated.get(),
                1,
                "the accepted one, known"
            );
            assert_eq!(
                running
                    .metrics
                    .rejected
                    .with_label_values(&["unknown_device"])
                    .get(),
                0,
                "the refused one is not a new refusal"
            );
        }
        running.shut_down().await;
    }
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM rejected_messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rejected, 1, "stored once");
    assert_eq!(fix_count(&pool).await, 1);
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(messages, 1);
}

/// A binary bracelet's id sending JSON is refused with its own reason.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_message_in_another_format_than_the_devices_is_refused(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-BINARY", "binary", 1)]).await;
    let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-format").await;
    let t = now_ms() - 60_000;
    publish_raw(
        broker.port,
        "not-the-bracelet",
        &[(
            fix_topic("EM-BINARY"),
            json_fixes("EM-BINARY", &[(t, OUTSIDE)]),
        )],
    )
    .await;
    wait_acked(&running.metrics, 1, Duration::from_secs(10)).await;
    let (reason, detail): (String, String) =
        sqlx::query_as("SELECT reason, detail FROM rejected_messages")
            .fetch_one(&pool)
            .await
            .expect("refused");
    assert_eq!(reason, "format_mismatch");
    assert!(detail.contains("registered to send binary"), "{detail}");
    assert_eq!(fix_count(&pool).await, 0);
    running.shut_down().await;
}

/// Each accepted message is on record with its SHA-256, topic and arrival;
/// its fixes and events name it; an OwnTracks location keeps `tid` and `t`.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_stored_record_names_the_message_that_carried_it(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    small_world(&pool, &[("EM-CUSTODY", "json", 1)]).await;
    for q in [
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('ot:alice:phone', 'victim_phone', 'owntracks', 60)",
        "INSERT INTO victims (id, device_id, protected_from) VALUES (1, 'ot:alice:phone', 1)",
    ] {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-custody").await;
    let t = now_ms() - 60_000;
    let fix = json_fixes("EM-CUSTODY", &[(t, OUTSIDE), (t + 30_000, OUTSIDE)]);
    let event = format!(
        r#"{{"v": 1, "device": "EM-CUSTODY", "events": [{{"t": "{}", "event": "strap_opened"}}]}}"#,
        jiff::Timestamp::from_millisecond(t + 40_000).expect("time")
    )
    .into_bytes();
    let phone = format!(
        r#"{{"_type": "location", "lat": 43.3, "lon": 76.9, "tst": {}, "acc": 12, "tid": "AL", "t": "u"}}"#,
        t / 1000
    )
    .into_bytes();
    let before = now_ms();
    publish_raw(
        broker.port,
        "custody",
        &[
            (fix_topic("EM-CUSTODY"), fix.clone()),
            ("em/v1/dev/EM-CUSTODY/event".into(), event.clone()),
            ("owntracks/alice/phone".into(), phone.clone()),
        ],
    )
    .await;
    wait_acked(&running.metrics, 3, Duration::from_secs(10)).await;
    let after = now_ms();
    type Row = (
        i64,
        String,
        String,
        store::Millis,
        i32,
        Option<String>,
        Option<String>,
    );
    let row = |payload: &[u8]| {
        let pool = pool.clone();
        let digest = Sha256::digest(payload).to_vec();
        async move {
            sqlx::query_as::<_, Row>(
                "SELECT id, topic, format, received_at, bytes, tid, trigger FROM messages WHERE sha256 = $1",
            )
            .bind(digest)
            .fetch_one(&pool)
            .await
            .expect("the message is on record")
        }
    };
    let m = row(&fix).await;
    assert_eq!(
        (m.1.as_str(), m.2.as_str()),
        ("em/v1/dev/EM-CUSTODY/fix", "json")
    );
    assert!(
        (before..=after).contains(&m.3.0),
        "received while published"
    );
    assert_eq!(m.4, fix.len() as i32);
    let fix_ids: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT message_id FROM fixes WHERE device_id = 'EM-CUSTODY'")
            .fetch_all(&pool)
            .await
            .expect("fixes");
    assert_eq!(fix_ids, vec![Some(m.0), Some(m.0)]);
    let e = row(&event).await;
    let event_id: Option<i64> = sqlx::query_scalar("SELECT message_id FROM device_events")
        .fetch_one(&pool)
        .await
        .expect("event");
    assert_eq!(event_id, Some(e.0));
    let p = row(&phone).await;
    assert_eq!(
        (p.2.as_str(), p.5.as_deref(), p.6.as_deref()),
        ("owntracks", Some("AL"), Some("u"))
    );
    let phone_fix: Option<i64> =
        sqlx::query_scalar("SELECT message_id FROM fixes WHERE device_id = 'ot:alice:phone'")
            .fetch_one(&pool)
            .await
            .expect("phone fix");
    assert_eq!(phone_fix, Some(p.0));
    running.shut_down().await;
}

/// A database with no subjects and no devices (never imported, or the
/// wrong one) is said loudly: `/readyz` warns until reference data arrives,
/// and the node stays ready (an agency may start empty and enrol through
/// the API).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_empty_database_is_reported_until_reference_data_arrives(pool: PgPool) {
    let broker = Broker::start().expect("mosquitto starts");
    let running = Running::start(pool.clone(), broker.port, "emtrack-evidence-empty").await;
    let (status, body) = get(&running, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("role active\n"), "{body}");
    assert!(
        body.contains("reference warning: the database holds no subjects and no devices"),
        "{body}"
    );
    small_world(&pool, &[("EM-FIRST", "json", 1)]).await;
    wait_until(Duration::from_secs(10), "the warning clears", || async {
        !get(&running, "/readyz")
            .await
            .1
            .contains("reference warning")
    })
    .await;
    running.shut_down().await;
}
