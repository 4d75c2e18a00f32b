//! The officer API, end to end: the real service (real PostgreSQL, a
//! private Mosquitto) with alerts raised by real fixes, driven over HTTP:
//! - every role reaches exactly its scope, for every resource type, in
//!   lists and in single reads; out of scope is 404;
//! - credentials: login, throttling, API tokens revoked mid-session,
//!   expiry, logout, disabled accounts, and the CLI (the real binary);
//! - every read of location data and every change is audited, and the
//!   audit log refuses UPDATE, DELETE and TRUNCATE;
//! - the alert stream is scoped to the caller and resumes after a
//!   disconnect without loss or duplicate;
//! - hostile requests get JSON errors and limits (body size, stream cap,
//!   header-read timeout), the listeners are separate, and the OpenAPI
//!   document describes the routes that are served.

mod common;

use api::identity::Role;
use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PASSWORD: &str = "a long enough password";

/// Officers 1 and 2, supervisor 3 (of officer 1); subjects 10 (officer
/// 1), 20 (officer 2) and 30 (none: the duty desk's), each with a JSON
/// bracelet `EM-<id>` and an exclusion zone around the same point.
async fn caseloads(pool: &PgPool) {
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (3, 'Sue Supervisor', 'supervisor')",
        "INSERT INTO officers (id, name, role, supervisor_id) VALUES (1, 'Officer One', 'officer', 3)",
        "INSERT INTO officers (id, name, role) VALUES (2, 'Officer Two', 'officer')",
        "INSERT INTO zones (id, name, kind, geometry, radius_m) \
         VALUES (900, 'victim home', 'exclusion', '{\"type\": \"Point\", \"coordinates\": [76.95, 43.25]}', 200)",
    ];
    for q in setup {
        sqlx::query(q).execute(pool).await.expect(q);
    }
    for (subject, officer) in [(10, Some(1)), (20, Some(2)), (30, None::<i64>)] {
        let device = format!("EM-{subject}");
        let queries = [
            "INSERT INTO subjects (id, reference, officer_id) VALUES ($1, 'S-' || $1, $2)",
            "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ($3, 'bracelet', 'json', 30)",
            "INSERT INTO assignments (device_id, subject_id) VALUES ($3, $1)",
            "INSERT INTO rules (id, subject_id, kind, zone_id) VALUES ($1, $1, 'zone', 900)",
        ];
        for q in queries {
            // Each statement takes the parameters it names.
            let n = [("$1", 1), ("$2", 2), ("$3", 3)]
                .iter()
                .filter(|(p, _)| q.contains(p))
                .map(|x| x.1)
                .max()
                .unwrap_or(0);
            let mut query = sqlx::query(q);
            if n >= 1 {
                query = query.bind(subject as i64);
            }
            if n >= 2 {
                query = query.bind(officer);
            }
            if n >= 3 {
                query = query.bind(&device);
            }
            query.execute(pool).await.expect(q);
        }
    }
}

/// The running service with an open exclusion alert per subject, and a
/// logged-in user per role.
struct Fixture {
    _broker: Broker,
    running: Running,
    api: u16,
    /// Alert id by subject.
    alert: BTreeMap<i64, i64>,
    /// Session token by username.
    token: BTreeMap<&'static str, String>,
    /// User id by username.
    user: BTreeMap<&'static str, i64>,
}

impl Fixture {
    fn t(&self, user: &str) -> Option<&str> {
        self.token.get(user).map(String::as_str)
    }

    async fn get(&self, user: &str, path: &str) -> Reply {
        call(self.api, "GET", path, self.t(user), None).await
    }

    async fn post(&self, user: &str, path: &str, body: &str) -> Reply {
        call(self.api, "POST", path, self.t(user), Some(body)).await
    }

    async fn put(&self, user: &str, path: &str, body: &str) -> Reply {
        call(self.api, "PUT", path, self.t(user), Some(body)).await
    }

    async fn delete(&self, user: &str, path: &str) -> Reply {
        call(self.api, "DELETE", path, self.t(user), None).await
    }

    async fn call_patch(&self, user: &str, path: &str, body: &str) -> Reply {
        call(self.api, "PATCH", path, self.t(user), Some(body)).await
    }

    /// Runs `change` (which must succeed), then waits until the engine and
    /// the device registry have taken it.
    async fn applied<F: std::future::Future<Output = Reply>>(
        &self,
        what: &str,
        change: F,
    ) -> Reply {
        let reference = self.running.svc.reference.clone();
        let before = reference.reloads.get();
        let r = change.await;
        assert!(
            (200..300).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.body
        );
        wait_until(Duration::from_secs(10), what, || {
            let r = reference.clone();
            async move { r.reloads.get() > before }
        })
        .await;
        r
    }

    /// Four fixes from `device` at (43.30, 77.00), 15 s apart over the last
    /// minute (an exclusion needs two at least 30 s apart), then waits for
    /// the subject's one `exclusion_zone_entered` alert about `zone`.
    async fn inside_zone(&self, pool: &PgPool, device: &str, zone: i64, what: &str) {
        let t = store::now_ms() - 60_000;
        let inside: Vec<(i64, (f64, f64))> =
            (0..4).map(|i| (t + i * 15_000, (43.30, 77.00))).collect();
        let msg = vec![(
            format!("em/v1/dev/{device}/fix"),
            json_fixes(device, &inside),
        )];
        publish_raw(self._broker.port, &format!("inside-{device}-{zone}"), &msg).await;
        wait_until(Duration::from_secs(20), what, || {
            let pool = pool.clone();
            let device = device.to_owned();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM alerts WHERE device_id = $1 \
                     AND kind = 'exclusion_zone_entered' AND scope = $2",
                )
                .bind(device)
                .bind(zone)
                .fetch_one(&pool)
                .await
                .expect("alerts");
                n == 1
            }
        })
        .await;
    }

    /// Publishes one fix from `device` now and waits until it is handled;
    /// returns the reason it was refused, if it was.
    async fn one_fix(&self, pool: &PgPool, device: &str, at: i64) -> Option<String> {
        let acked = self.running.metrics.messages_acked.get();
        let msg = vec![(
            format!("em/v1/dev/{device}/fix"),
            json_fixes(device, &[(at, (43.40, 77.10))]),
        )];
        publish_raw(self._broker.port, &format!("fix-{device}-{at}"), &msg).await;
        wait_acked(&self.running.metrics, acked + 1, Duration::from_secs(20)).await;
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM fixes WHERE device_id = $1 AND fix_time = $2")
                .bind(device)
                .bind(store::Millis(at))
                .fetch_one(pool)
                .await
                .expect("fixes");
        if stored == 1 {
            return None;
        }
        sqlx::query_scalar(
            "SELECT reason FROM rejected_messages WHERE topic = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(format!("em/v1/dev/{device}/fix"))
        .fetch_optional(pool)
        .await
        .expect("rejected")
    }
}

const USERS: [(&str, Role, Option<i64>); 6] = [
    ("off1", Role::Officer, Some(1)),
    ("off2", Role::Officer, Some(2)),
    ("sup", Role::Supervisor, Some(3)),
    ("desk", Role::Duty, None),
    ("admin", Role::Admin, None),
    ("aud", Role::Auditor, None),
];

async fn fixture(
    pool: &PgPool,
    client: &str,
    tune: impl FnOnce(&mut emtrack::config::Config),
) -> Fixture {
    let broker = Broker::start().expect("mosquitto starts");
    caseloads(pool).await;
    let mut cfg = config(broker.port, client);
    tune(&mut cfg);
    let running = Running::start_with(pool.clone(), cfg).await;
    // Five fixes inside the zone, 10 s apart, ending 250 s ago: an alert
    // each (and room for newer fixes after them).
    let t = store::now_ms() - 290_000;
    let inside: Vec<(i64, (f64, f64))> = (0..5).map(|i| (t + i * 10_000, (43.25, 76.95))).collect();
    let messages: Vec<(String, Vec<u8>)> = [10, 20, 30]
        .iter()
        .map(|s| {
            let d = format!("EM-{s}");
            (format!("em/v1/dev/{d}/fix"), json_fixes(&d, &inside))
        })
        .collect();
    publish_raw(broker.port, &format!("{client}-pub"), &messages).await;
    wait_until(Duration::from_secs(30), "an alert per subject", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT subject_id) FROM alerts WHERE kind = 'exclusion_zone_entered'",
            )
            .fetch_one(&pool)
            .await
            .expect("alerts");
            n == 3
        }
    })
    .await;
    let alert: BTreeMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT subject_id, id FROM alerts WHERE kind = 'exclusion_zone_entered'",
    )
    .fetch_all(pool)
    .await
    .expect("alerts")
    .into_iter()
    .collect();
    let api = running.svc.api.port();
    let (mut token, mut user) = (BTreeMap::new(), BTreeMap::new());
    for (name, role, officer) in USERS {
        user.insert(name, add_user(pool, name, role, officer, PASSWORD).await);
        token.insert(name, login(api, name, PASSWORD).await);
    }
    Fixture {
        _broker: broker,
        running,
        api,
        alert,
        token,
        user,
    }
}

fn ids(v: &serde_json::Value, list: &str, key: &str) -> BTreeSet<i64> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {v}"))
        .iter()
        .map(|x| x[key].as_i64().expect("an id"))
        .collect()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_role_reaches_only_its_scope_for_every_resource(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-scope", |_| {}).await;
    let all: BTreeSet<i64> = [10, 20, 30].into();
    let range = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let visible: [(&str, BTreeSet<i64>); 4] = [
        ("off1", [10].into()),
        ("off2", [20].into()),
        // Officer 1's caseload (supervisor 3 holds none of their own).
        ("sup", [10].into()),
        ("desk", all.clone()),
    ];
    for (user, sees) in &visible {
        let alerts = f.get(user, "/v1/alerts").await;
        assert_eq!(alerts.status, 200, "{user}: {}", alerts.body);
        assert_eq!(
            &ids(&alerts.json(), "alerts", "subject_id"),
            sees,
            "{user}'s alert list"
        );
        let subjects = f.get(user, "/v1/subjects").await;
        assert_eq!(
            &ids(&subjects.json(), "subjects", "id"),
            sees,
            "{user}'s caseload"
        );
        for s in &all {
            let want = if sees.contains(s) { 200 } else { 404 };
            let a = f.alert[s];
            for path in [
                format!("/v1/subjects/{s}"),
                format!("/v1/subjects/{s}/track?{range}"),
                format!("/v1/subjects/{s}/evidence.geojson?{range}&reason=audit"),
                format!("/v1/subjects/{s}/orders"),
                format!("/v1/subjects/{s}/orders/history"),
                format!("/v1/subjects/{s}/evidence.csv?{range}&reason=audit&part=fixes"),
                format!("/v1/alerts/{a}"),
            ] {
                let r = f.get(user, &path).await;
                assert_eq!(r.status, want, "{user} GET {path}: {}", r.body);
                if want == 404 {
                    assert_eq!(r.json()["error"], "not_found");
                    assert!(
                        !r.body.contains(&format!("S-{s}")),
                        "no data of {s}: {}",
                        r.body
                    );
                }
            }
            // Filters cannot widen the scope.
            let filtered = f.get(user, &format!("/v1/alerts?subject_id={s}")).await;
            let got = ids(&filtered.json(), "alerts", "subject_id");
            assert_eq!(got.is_empty(), !sees.contains(s), "{user} filtering on {s}");
            if !sees.contains(s) {
                let r = f
                    .post(user, &format!("/v1/alerts/{a}/acknowledge"), "{}")
                    .await;
                assert_eq!(r.status, 404, "{user} acknowledging {a} of subject {s}");
            }
        }
        for path in ["/v1/audit", "/v1/users"] {
            assert_eq!(f.get(user, path).await.status, 403, "{user} GET {path}");
        }
    }
    // Nobody acted on an alert out of scope.
    let acted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alert_events WHERE change = 'acknowledged'")
            .fetch_one(&pool)
            .await
            .expect("events");
    assert_eq!(acted, 0);

    // A notification says where and what.
    let payload: String = sqlx::query_scalar(
        "SELECT payload FROM alert_deliveries WHERE alert_id = $1 AND version = 1 AND channel = 'mqtt'",
    )
    .bind(f.alert[&10])
    .fetch_one(&pool)
    .await
    .expect("the raise's notification");
    let n: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
    assert_eq!(n["subject_reference"], "S-10");
    assert_eq!(n["zone_name"], "victim home");
    assert_eq!(
        (n["position"]["lat"].as_f64(), n["position"]["lon"].as_f64()),
        (Some(43.25), Some(76.95))
    );
    assert_eq!(n["position"]["accuracy_m"], 8.0);
    assert_eq!(n["link"], format!("/v1/alerts/{}", f.alert[&10]));

    // A track and a position reach the caller in scope.
    let track = f
        .get("off1", &format!("/v1/subjects/10/track?{range}"))
        .await
        .json();
    assert_eq!(track["type"], "FeatureCollection");
    let points = track["features"].as_array().expect("features").len();
    assert_eq!(points, 1 + 5, "a LineString and the 5 fixes");
    // Paged two at a time: every fix once, in order.
    let (mut times, mut from, mut device) = (
        Vec::new(),
        "2000-01-01T00:00:00Z".to_owned(),
        None::<String>,
    );
    loop {
        let mut path = format!("/v1/subjects/10/track?from={from}&to=2100-01-01T00:00:00Z&limit=2");
        if let Some(d) = &device {
            path.push_str(&format!("&from_device={d}"));
        }
        let page = f.get("off1", &path).await.json();
        for p in page["features"].as_array().expect("features") {
            if p["properties"]["kind"] == "fix" {
                times.push(p["properties"]["time"].as_str().expect("time").to_owned());
            }
        }
        let Some(next) = page["next_from"].as_str() else {
            break;
        };
        from = next.to_owned();
        device = page["next_device"].as_str().map(str::to_owned);
    }
    let mut sorted = times.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        (times.len(), &sorted),
        (5, &times),
        "each fix once, in order"
    );
    let one = f.get("off1", "/v1/subjects/10").await.json();
    assert_eq!(one["latest_position"]["lat"], 43.25);
    assert_eq!(one["subject"]["status"], "red", "an open exclusion alert");

    // Admin and auditor hold no caseload.
    for user in ["admin", "aud"] {
        for path in [
            "/v1/alerts",
            "/v1/subjects",
            "/v1/subjects/10",
            "/v1/alerts/stream",
        ] {
            assert_eq!(f.get(user, path).await.status, 403, "{user} GET {path}");
        }
    }
    let users = f.get("admin", "/v1/users").await;
    assert_eq!(users.status, 200);
    assert_eq!(users.json().as_array().map(Vec::len), Some(USERS.len()));
    assert_eq!(f.get("aud", "/v1/audit").await.status, 200);

    // Actions in scope: the actor is the caller.
    let a10 = f.alert[&10];
    let r = f
        .post(
            "off1",
            &format!("/v1/alerts/{a10}/acknowledge"),
            r#"{"note": "calling him"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("acknowledged"))
    );
    let body = r#"{"note": "left at once; spoke to him", "disposition": "violation_confirmed"}"#;
    assert_eq!(
        f.post("sup", &format!("/v1/alerts/{a10}/resolve"), body)
            .await
            .status,
        200
    );
    let a30 = f.alert[&30];
    assert_eq!(
        f.post("desk", &format!("/v1/alerts/{a30}/acknowledge"), "{}")
            .await
            .status,
        200
    );
    let actors: Vec<(i64, String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT alert_id, change, user_id, disposition FROM alert_events \
         WHERE change IN ('acknowledged', 'resolved') ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(
        actors,
        vec![
            (a10, "acknowledged".into(), Some(f.user["off1"]), None),
            (
                a10,
                "resolved".into(),
                Some(f.user["sup"]),
                Some("violation_confirmed".into())
            ),
            (a30, "acknowledged".into(), Some(f.user["desk"]), None),
        ]
    );
    let detail = f.get("off1", &format!("/v1/alerts/{a10}")).await.json();
    let history: Vec<&str> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["username"].as_str())
        .collect();
    assert_eq!(history, vec!["off1", "sup"]);
    assert!(
        !detail["deliveries"]
            .as_array()
            .expect("deliveries")
            .is_empty()
    );

    // Another user's credential is out of scope too.
    let theirs: i64 = sqlx::query_scalar("SELECT id FROM credentials WHERE user_id = $1 LIMIT 1")
        .bind(f.user["off2"])
        .fetch_one(&pool)
        .await
        .expect("a credential");
    let r = call(
        f.api,
        "DELETE",
        &format!("/v1/tokens/{theirs}"),
        f.t("off1"),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(f.get("off2", "/v1/me").await.status, 200, "still valid");
    f.running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn credentials_are_throttled_revoked_expired_and_disabled(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-cred", |_| {}).await;
    // No credential, a made-up one.
    let r = call(f.api, "GET", "/v1/me", None, None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert!(r.headers.contains("www-authenticate: bearer"));
    let fake = "emt_0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(
        call(f.api, "GET", "/v1/me", Some(fake), None).await.status,
        401
    );

    // Five wrong passwords, then the name is throttled, right password or not.
    let wrong = r#"{"username": "off1", "password": "not the password"}"#;
    for _ in 0..5 {
        assert_eq!(
            call(f.api, "POST", "/v1/login", None, Some(wrong))
                .await
                .status,
            401
        );
    }
    let right = serde_json::json!({"username": "off1", "password": PASSWORD}).to_string();
    let r = call(f.api, "POST", "/v1/login", None, Some(&right)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.contains("retry-after: "));
    // An unknown name is refused like a wrong password.
    let ghost = r#"{"username": "ghost", "password": "whatever it is"}"#;
    assert_eq!(
        call(f.api, "POST", "/v1/login", None, Some(ghost))
            .await
            .status,
        401
    );

    // Who am I.
    let me = f.get("off1", "/v1/me").await.json();
    assert_eq!(
        (me["role"].as_str(), me["officer_id"].as_i64()),
        (Some("officer"), Some(1))
    );

    // An API token, revoked while in use.
    let r = f
        .post("off1", "/v1/tokens", r#"{"name": "case sync", "days": 30}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (api_token, id) = (
        r.json()["token"].as_str().expect("token").to_owned(),
        r.json()["credential_id"].as_i64().expect("id"),
    );
    assert_eq!(
        call(f.api, "GET", "/v1/alerts", Some(&api_token), None)
            .await
            .status,
        200
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM credentials WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("stored");
    assert_ne!(stored, api_token.as_bytes(), "stored as a digest");
    let r = call(
        f.api,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        f.t("off1"),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        call(f.api, "GET", "/v1/alerts", Some(&api_token), None)
            .await
            .status,
        401
    );
    assert_eq!(
        f.get("off1", "/v1/me").await.status,
        200,
        "the session still works"
    );
    let r = f
        .post("off1", "/v1/tokens", r#"{"name": "forever", "days": 5000}"#)
        .await;
    assert_eq!(r.status, 422);

    // Expiry.
    sqlx::query(
        "UPDATE credentials SET expires_at = now() - interval '1 second' WHERE user_id = $1",
    )
    .bind(f.user["sup"])
    .execute(&pool)
    .await
    .expect("expire");
    assert_eq!(f.get("sup", "/v1/me").await.status, 401);

    // Logout.
    assert_eq!(f.post("desk", "/v1/logout", "").await.status, 204);
    assert_eq!(f.get("desk", "/v1/me").await.status, 401);

    // An admin disables a user: their session stops at once.
    let r = f
        .post(
            "admin",
            &format!("/v1/users/{}/disable", f.user["off2"]),
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(f.get("off2", "/v1/me").await.status, 401);
    let r = f
        .post(
            "admin",
            "/v1/users",
            r#"{"username": "new", "role": "officer", "password": "long enough password"}"#,
        )
        .await;
    assert_eq!(r.status, 422, "an officer needs an officer id: {}", r.body);
    let r = f
        .post(
            "admin",
            "/v1/users",
            r#"{"username": "new", "role": "officer", "officer_id": 2, "password": "short"}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        f.post("off1", "/v1/users", r#"{"username": "x", "role": "admin"}"#)
            .await
            .status,
        403
    );

    // The CLI, as the first admin would use it.
    let db = database_url(&pool, 5432);
    let cli = move |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
            .args(["--database-url", &db])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("emtrack runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("password written");
        let out = child.wait_with_output().expect("emtrack ends");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (add, token) = tokio::task::spawn_blocking(move || {
        let add = cli(
            &["user", "add", "clerk", "--role", "duty"],
            "clerk's long password\n",
        );
        let token = cli(
            &[
                "user",
                "token",
                "clerk",
                "--name",
                "nightly export",
                "--days",
                "7",
            ],
            "",
        );
        cli(&["user", "passwd", "clerk"], "a new long password\n");
        (add, token)
    })
    .await
    .expect("cli");
    assert!(add.contains("user clerk added"), "{add}");
    assert!(!add.contains("clerk's long password"));
    let me = call(f.api, "GET", "/v1/me", Some(&token), None)
        .await
        .json();
    assert_eq!(me["username"], "clerk");
    login(f.api, "clerk", "a new long password").await;
    let db = database_url(&pool, 5432);
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
            .args(["--database-url", &db, "user", "disable", "clerk"])
            .output()
            .expect("emtrack runs");
        assert!(out.status.success());
    })
    .await
    .expect("cli");
    assert_eq!(
        call(f.api, "GET", "/v1/me", Some(&token), None)
            .await
            .status,
        401
    );
    let cli_rows: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'cli %' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert_eq!(
        cli_rows,
        [
            "cli user add",
            "cli user token",
            "cli user passwd",
            "cli user disable"
        ]
    );
    f.running.shut_down().await;
}

/// (action, subject, status, from, credential) of an audit row.
type AuditLine = (
    String,
    Option<i64>,
    Option<i16>,
    Option<String>,
    Option<i64>,
);

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn reads_and_changes_are_audited_and_the_log_cannot_be_rewritten(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-audit", |_| {}).await;
    let a10 = f.alert[&10];
    let range = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    assert_eq!(f.get("off1", "/v1/subjects/10").await.status, 200);
    assert_eq!(
        f.get("off1", &format!("/v1/subjects/10/track?{range}"))
            .await
            .status,
        200
    );
    assert_eq!(
        f.get("off1", &format!("/v1/alerts/{a10}")).await.status,
        200
    );
    assert_eq!(
        f.post("off1", &format!("/v1/alerts/{a10}/acknowledge"), "{}")
            .await
            .status,
        200
    );
    assert_eq!(f.get("off1", "/v1/subjects/20").await.status, 404);
    let rows: Vec<AuditLine> = sqlx::query_as(
        "SELECT action, subject_id, status, from_addr, credential_id FROM audit_log \
         WHERE user_id = $1 ORDER BY id",
    )
    .bind(f.user["off1"])
    .fetch_all(&pool)
    .await
    .expect("audit");
    let lines: Vec<(&str, Option<i64>, Option<i16>)> =
        rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect();
    assert_eq!(
        lines,
        vec![
            ("GET /v1/subjects/{id}", Some(10), Some(200)),
            ("GET /v1/subjects/{id}/track", Some(10), Some(200)),
            ("GET /v1/alerts/{id}", Some(10), Some(200)),
            ("POST /v1/alerts/{id}/acknowledge", Some(10), Some(200)),
            // Out of scope: recorded, and nothing tied to the subject.
            ("GET /v1/subjects/{id}", None, Some(404)),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.3.as_deref() == Some("127.0.0.1") && r.4.is_some())
    );
    let logins: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'login'")
        .fetch_one(&pool)
        .await
        .expect("logins");
    assert_eq!(logins, USERS.len() as i64);
    let bad = r#"{"username": "off1", "password": "guess guess guess"}"#;
    call(f.api, "POST", "/v1/login", None, Some(bad)).await;
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'login_refused' AND username = 'off1'",
    )
    .fetch_one(&pool)
    .await
    .expect("refused");
    assert_eq!(refused, 1);

    // The auditor reads it; nobody rewrites it.
    let page = f
        .get(
            "aud",
            &format!("/v1/audit?user_id={}&limit=3", f.user["off1"]),
        )
        .await
        .json();
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(3));
    assert!(page["next"].as_i64().is_some());
    for q in [
        "UPDATE audit_log SET action = 'nothing'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let e = sqlx::query(q).execute(&pool).await.expect_err(q);
        assert!(e.to_string().contains("append-only"), "{q}: {e}");
    }
    f.running.shut_down().await;
}

/// (alert id, change) of what a stream carried, and whether its ids rose.
fn carried(s: &Streamed) -> (Vec<(i64, String)>, bool) {
    let got = s.lock().expect("stream");
    let rising = got.windows(2).all(|w| w[0].0 < w[1].0);
    let changes = got
        .iter()
        .map(|(_, v)| {
            (
                v["alert_id"].as_i64().expect("id"),
                v["change"].as_str().expect("change").to_owned(),
            )
        })
        .collect();
    (changes, rising)
}

async fn wait_for(s: &Streamed, n: usize, what: &str) {
    wait_until(Duration::from_secs(10), what, || {
        let s = s.clone();
        async move { s.lock().expect("stream").len() >= n }
    })
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_stream_is_scoped_and_resumes_without_loss_or_duplicate(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-sse", |_| {}).await;
    let (a10, a20, a30) = (f.alert[&10], f.alert[&20], f.alert[&30]);
    let ack = |note: &str| serde_json::json!({"note": note}).to_string();
    let (sup, _sup_task) = open_stream(f.api, f.t("sup").expect("token"), None).await;
    let (first, task) = open_stream(f.api, f.t("off1").expect("token"), None).await;

    // Out of officer 1's scope, then in it.
    assert_eq!(
        f.post("desk", &format!("/v1/alerts/{a20}/acknowledge"), "{}")
            .await
            .status,
        200
    );
    assert_eq!(
        f.post(
            "off1",
            &format!("/v1/alerts/{a10}/acknowledge"),
            &ack("one")
        )
        .await
        .status,
        200
    );
    wait_for(&first, 1, "officer 1's first change").await;
    task.abort();
    let _ = task.await;
    let last = first.lock().expect("stream")[0].0;
    assert_eq!(carried(&first).0, vec![(a10, "acknowledged".to_owned())]);

    // While officer 1 is away.
    assert_eq!(
        f.post("sup", &format!("/v1/alerts/{a10}/acknowledge"), &ack("two"))
            .await
            .status,
        200
    );
    assert_eq!(
        f.post("desk", &format!("/v1/alerts/{a30}/acknowledge"), "{}")
            .await
            .status,
        200
    );

    // Back, from the last event seen: the missed change, then live ones.
    let (second, _task) = open_stream(f.api, f.t("off1").expect("token"), Some(last)).await;
    wait_for(&second, 1, "the missed change").await;
    let body = r#"{"note": "three", "disposition": "false_alarm"}"#;
    assert_eq!(
        f.post("off1", &format!("/v1/alerts/{a10}/resolve"), body)
            .await
            .status,
        200
    );
    wait_for(&second, 2, "the live change").await;
    let (changes, rising) = carried(&second);
    assert!(rising);
    assert_eq!(
        changes,
        vec![
            (a10, "acknowledged".to_owned()),
            (a10, "resolved".to_owned())
        ]
    );
    let notes: Vec<&str> = vec!["two", "three"];
    let got = second.lock().expect("stream").clone();
    assert_eq!(
        got.iter()
            .map(|(_, v)| v["note"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        notes
    );
    assert!(got[0].0 > last, "nothing seen before is sent again");

    // The supervisor's stream carried officer 1's subject, and only that.
    wait_for(&sup, 3, "the supervisor's changes").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (changes, rising) = carried(&sup);
    assert!(rising);
    assert!(changes.iter().all(|(a, _)| *a == a10), "{changes:?}");
    assert_eq!(changes.len(), 3);

    // A credential revoked while its stream is open ends the stream at the
    // next change, before anything more is sent.
    let (third, task) = open_stream(f.api, f.t("off2").expect("token"), None).await;
    assert_eq!(f.post("off2", "/v1/logout", "").await.status, 204);
    let a20 = f.alert[&20];
    let body = r#"{"note": "after the logout", "disposition": "false_alarm"}"#;
    assert_eq!(
        f.post("desk", &format!("/v1/alerts/{a20}/resolve"), body)
            .await
            .status,
        200
    );
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the stream ends")
        .expect("reader");
    assert!(
        third.lock().expect("stream").is_empty(),
        "nothing after the revocation"
    );
    f.running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn hostile_requests_get_json_errors_and_limits(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-limits", |c| c.max_streams = 2).await;
    // Errors in one format.
    let big = format!(
        r#"{{"username": "off1", "password": "{}"}}"#,
        "x".repeat(70_000)
    );
    let r = call(f.api, "POST", "/v1/login", None, Some(&big)).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    for (path, status) in [
        ("/v1/nowhere", 404),
        ("/v1/alerts?limit=0", 400),
        ("/v1/alerts?from=yesterday", 400),
        ("/v1/alerts?severity=apocalyptic", 400),
        ("/v1/alerts?officer=1", 400),
        ("/v1/alerts?cursor=abc", 400),
        ("/v1/alerts?cursor=999999999999999999_1", 400),
        ("/v1/subjects/abc", 400),
        ("/v1/subjects/10/track?from=2026-01-01T00:00:00Z", 400),
    ] {
        let r = f.get("off1", path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(
            r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
    let r = f
        .post(
            "off1",
            &format!("/v1/alerts/{}/resolve", f.alert[&10]),
            "not json",
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid"))
    );

    // NUL characters (which PostgreSQL cannot store) are refused, and audited.
    let nul = r#"{"username": "off\u0000", "password": "anything at all"}"#;
    assert_eq!(
        call(f.api, "POST", "/v1/login", None, Some(nul))
            .await
            .status,
        401
    );
    let r = f.get("aud", "/v1/audit?action=x%00y").await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Streams are capped.
    let token = f.t("desk").expect("token");
    let _one = open_stream(f.api, token, None).await;
    let _two = open_stream(f.api, token, None).await;
    let r = f.get("desk", "/v1/alerts/stream").await;
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("busy")));
    let r = call(f.api, "GET", "/v1/alerts/stream", None, None).await;
    assert_eq!(r.status, 401);

    // Half a request is dropped after the header-read timeout.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", f.api))
            .await
            .expect("connect");
        s.write_all(b"GET /v1/me HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("half");
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the connection is closed within 20 s");
    }

    // Separate listeners: no metrics on the API, no API on the metrics port.
    assert_eq!(call(f.api, "GET", "/metrics", None, None).await.status, 404);
    let ops = f.running.svc.http.port();
    assert_eq!(
        call(ops, "GET", "/v1/alerts", f.t("desk"), None)
            .await
            .status,
        404
    );
    assert_eq!(call(ops, "GET", "/metrics", None, None).await.status, 200);

    // The OpenAPI document is served, without a credential, and describes
    // the routes the API serves.
    let doc = call(f.api, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 14, "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "1");
        for method in ops.as_object().expect("operations").keys() {
            let r = call(f.api, &method.to_uppercase(), &concrete, None, None).await;
            let want: &[u16] = if path == "/v1/login" { &[400] } else { &[401] };
            assert!(
                want.contains(&r.status),
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    assert_eq!(api::openapi().paths.paths.len(), paths.len());
    f.running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_evidence_export_carries_its_digest_into_the_audit_log(pool: PgPool) {
    use sha2::{Digest, Sha256};
    let f = fixture(&pool, "emtrack-api-export", |_| {}).await;
    let range = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    // A reason is required.
    let r = f
        .get(
            "off1",
            &format!("/v1/subjects/10/evidence.csv?{range}&part=fixes"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = f
        .get(
            "off1",
            &format!("/v1/subjects/10/evidence.csv?{range}&part=fixes&reason=hearing%2012%2F3"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let digest = format!("{:x}", Sha256::digest(r.body.as_bytes()));
    assert!(
        r.headers.contains(&format!("x-emtrack-sha256: {digest}")),
        "{}",
        r.headers
    );
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 1 + 5, "a header and the 5 fixes: {}", r.body);
    assert!(
        lines[0].starts_with("device_id,fix_time,received_at,lat,lon,"),
        "{}",
        lines[0]
    );
    // Each fix names the digest of the message that carried it.
    let sha: String =
        sqlx::query_scalar("SELECT encode(sha256, 'hex') FROM messages WHERE device_id = 'EM-10'")
            .fetch_one(&pool)
            .await
            .expect("the message");
    assert!(lines[1..].iter().all(|l| l.ends_with(&sha)), "{}", r.body);
    let (reason, recorded): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT reason, detail ->> 'sha256' FROM audit_log WHERE action = 'GET /v1/subjects/{id}/evidence.csv' \
           AND status = 200",
    )
    .fetch_one(&pool)
    .await
    .expect("audited");
    assert_eq!(reason.as_deref(), Some("hearing 12/3"));
    assert_eq!(recorded, Some(digest));

    // The whole record as GeoJSON.
    let r = f
        .get(
            "off1",
            &format!("/v1/subjects/10/evidence.geojson?{range}&reason=appeal"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = r.json();
    let kinds: Vec<&str> = doc["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|x| x["properties"]["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["zone", "fix", "fix", "fix", "fix", "fix"]);
    assert_eq!(doc["subject"]["reference"], "S-10");
    assert_eq!(doc["transitions"][0]["kind"], "exclusion_entered");
    assert_eq!(doc["alert_changes"][0]["change"], "raised");
    assert_eq!(doc["orders"][0]["object"], "zone");
    assert_eq!(doc["orders"][0]["row"]["name"], "victim home");
    f.running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_orders_in_force_at_any_time_are_answered(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-orders", |_| {}).await;
    let before: String = sqlx::query_scalar("SELECT now()::text")
        .fetch_one(&pool)
        .await
        .expect("now");
    let before = before.replace(' ', "T").replace("+00", "Z");
    let now = f.get("off1", "/v1/subjects/10/orders").await.json();
    let orders = now["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (
            orders[0]["rule_id"].as_i64(),
            orders[0]["zone_version"].as_i64()
        ),
        (Some(10), Some(1))
    );
    assert_eq!(orders[0]["zone"]["radius_m"], 200.0);

    // The zone is widened, with who and why; then the rule is lifted.
    let mut tx = pool.begin().await.expect("tx");
    for q in [
        "SET LOCAL emtrack.actor = 'user:7 sue'",
        "SET LOCAL emtrack.reason = 'court order 2026/114'",
        "UPDATE zones SET radius_m = 300 WHERE id = 900",
    ] {
        sqlx::query(q).execute(&mut *tx).await.expect(q);
    }
    tx.commit().await.expect("commit");
    let widened = f.get("off1", "/v1/subjects/10/orders").await.json();
    let o = &widened["orders"][0];
    assert_eq!(
        (o["zone_version"].as_i64(), o["zone"]["radius_m"].as_f64()),
        (Some(2), Some(300.0))
    );
    sqlx::query("DELETE FROM rules WHERE id = 10")
        .execute(&pool)
        .await
        .expect("lifted");
    let lifted = f.get("off1", "/v1/subjects/10/orders").await.json();
    assert_eq!(lifted["orders"].as_array().map(Vec::len), Some(0));

    // Back then: the rule, and the zone as it was.
    let then = f
        .get("off1", &format!("/v1/subjects/10/orders?at={before}"))
        .await;
    assert_eq!(then.status, 200, "{}", then.body);
    let o = &then.json()["orders"][0];
    assert_eq!(
        (o["rule_id"].as_i64(), o["zone_version"].as_i64()),
        (Some(10), Some(1))
    );
    assert_eq!(o["zone"]["radius_m"], 200.0);

    // Every change, with its author and reason.
    let history = f.get("off1", "/v1/subjects/10/orders/history").await.json();
    let lines: Vec<(String, i64, Option<String>, bool)> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                format!("{} {}", h["object"].as_str().unwrap_or(""), h["object_id"]),
                h["version"].as_i64().unwrap_or(0),
                h["reason"].as_str().map(str::to_owned),
                h["row"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("zone 900".into(), 1, None, false),
            ("rule 10".into(), 1, None, false),
            (
                "zone 900".into(),
                2,
                Some("court order 2026/114".into()),
                false
            ),
            ("rule 10".into(), 2, None, true),
        ]
    );
    assert_eq!(history[2]["changed_by"], "user:7 sue");
    f.running.shut_down().await;
}

/// A square around (lat, lon), `d` degrees a side, counterclockwise.
fn square(lat: f64, lon: f64, d: f64) -> serde_json::Value {
    let h = d / 2.0;
    serde_json::json!({"type": "Polygon", "coordinates": [[
        [lon - h, lat - h], [lon + h, lat - h], [lon + h, lat + h], [lon - h, lat + h], [lon - h, lat - h]
    ]]})
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn orders_written_through_the_api_are_checked_versioned_and_enforced_at_once(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-write", |_| {}).await;
    let order = |geometry: serde_json::Value| {
        serde_json::json!({"kind": "zone", "reason": "court order 7/2026",
            "zone": {"name": "school", "kind": "exclusion", "geometry": geometry}})
        .to_string()
    };
    // Refused, saying where.
    let clockwise = serde_json::json!({"type": "Polygon", "coordinates": [[
        [77.0, 43.3], [77.0, 43.31], [77.01, 43.31], [77.01, 43.3], [77.0, 43.3]]]});
    let crossing = serde_json::json!({"type": "Polygon", "coordinates": [[
        [76.9, 43.2], [77.2, 43.2], [77.2, 43.5], [77.0, 43.1], [76.9, 43.5], [76.9, 43.2]]]});
    let far = serde_json::json!({"type": "Polygon", "coordinates": [[
        [77.0, 43.3], [277.0, 43.3], [77.0, 43.4], [77.0, 43.3]]]});
    let across = serde_json::json!({"type": "Polygon", "coordinates": [[
        [179.9, 10.0], [-179.9, 10.0], [-179.9, 10.1], [179.9, 10.1], [179.9, 10.0]]]});
    for (geometry, says) in [
        (clockwise, "ring 0 (the exterior) is wound clockwise"),
        (
            crossing,
            "edge 0 (vertices 0–1) crosses edge 2 (vertices 2–3)",
        ),
        (far, "277"),
        (across, "antimeridian"),
        (
            serde_json::json!({"type": "Point", "coordinates": [77.0, 43.3]}),
            "radius_m",
        ),
    ] {
        let r = f
            .post("off2", "/v1/subjects/20/orders", &order(geometry))
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(
            r.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{says}: {}",
            r.body
        );
    }
    let curfew = |schedule: serde_json::Value| {
        serde_json::json!({"kind": "curfew", "reason": "licence condition 4",
            "zone": {"name": "home", "kind": "inclusion", "geometry": {"type": "Point", "coordinates": [76.95, 43.25]},
                     "radius_m": 150},
            "schedule": schedule})
        .to_string()
    };
    let typo = serde_json::json!({"tz": "Asia/Almaty", "windows": [], "exception": []});
    let r = f
        .post("off2", "/v1/subjects/20/orders", &curfew(typo))
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("unknown field `exception`"), "{}", r.body);
    let no_reason = r#"{"kind": "zone", "reason": " ", "zone": {"name": "x", "kind": "exclusion", "geometry": {"type": "Point", "coordinates": [77, 43]}, "radius_m": 50}}"#;
    assert_eq!(
        f.post("off2", "/v1/subjects/20/orders", no_reason)
            .await
            .status,
        400
    );

    // Out of scope, or a role that does not write orders.
    let school = order(square(43.30, 77.00, 0.004));
    assert_eq!(
        f.post("off1", "/v1/subjects/20/orders", &school)
            .await
            .status,
        404
    );
    assert_eq!(
        f.post("desk", "/v1/subjects/20/orders", &school)
            .await
            .status,
        403
    );

    // Written: versioned with its author and reason, applied at once.
    let before = f.running.svc.reference.reloads.get();
    let r = f.post("off2", "/v1/subjects/20/orders", &school).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (rule, zone) = (
        r.json()["rule_id"].as_i64().expect("rule"),
        r.json()["zone_id"].as_i64().expect("zone"),
    );
    assert!(rule >= 1_000_000_000 && zone >= 1_000_000_000);
    let reference = f.running.svc.reference.clone();
    wait_until(Duration::from_secs(10), "the order is applied", || {
        let r = reference.clone();
        async move { r.reloads.get() > before }
    })
    .await;
    // Four fixes 15 s apart (an exclusion needs two at least 30 s apart).
    f.inside_zone(&pool, "EM-20", zone, "the new zone's alert")
        .await;
    let history = f.get("off2", "/v1/subjects/20/orders/history").await.json();
    let mine: Vec<&serde_json::Value> = history
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["object_id"].as_i64() == Some(rule) || h["object_id"].as_i64() == Some(zone))
        .collect();
    assert_eq!(mine.len(), 2);
    let author = format!("user:{} off2", f.user["off2"]);
    assert!(
        mine.iter()
            .all(|h| h["changed_by"] == author.as_str() && h["reason"] == "court order 7/2026")
    );

    // Moved, then lifted: each a version; another officer cannot touch it.
    let moved = serde_json::json!({"reason": "school moved",
        "zone": {"name": "school", "kind": "exclusion", "geometry": square(43.31, 77.00, 0.004)}});
    let r = call(
        f.api,
        "PUT",
        &format!("/v1/orders/{rule}"),
        f.t("off2"),
        Some(&moved.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        f.api,
        "PUT",
        &format!("/v1/orders/{rule}"),
        f.t("off1"),
        Some(&moved.to_string()),
    )
    .await;
    assert_eq!(r.status, 404);
    // The victim's home zone is shared with other subjects: not changed through one order.
    let r = call(
        f.api,
        "PUT",
        "/v1/orders/20",
        f.t("off2"),
        Some(&moved.to_string()),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = call(
        f.api,
        "DELETE",
        &format!("/v1/orders/{rule}?reason=order%20discharged"),
        f.t("off2"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let versions: Vec<(String, i32, bool, Option<String>)> = sqlx::query_as(
        "SELECT object, version, row IS NULL, reason FROM order_versions WHERE object_id IN ($1, $2) ORDER BY id",
    )
    .bind(rule)
    .bind(zone)
    .fetch_all(&pool)
    .await
    .expect("versions");
    let reason = |r: &str| Some(r.to_owned());
    assert_eq!(
        versions,
        vec![
            ("zone".into(), 1, false, reason("court order 7/2026")),
            ("rule".into(), 1, false, reason("court order 7/2026")),
            ("zone".into(), 2, false, reason("school moved")),
            ("rule".into(), 2, true, reason("order discharged")),
            ("zone".into(), 3, true, reason("order discharged")),
        ]
    );
    f.running.shut_down().await;
}

/// Great-circle metres on the engine's sphere.
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let (dp, dl) = ((b.0 - a.0).to_radians(), (b.1 - a.1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * geofence::EARTH_RADIUS_M * h.sqrt().asin()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn who_was_near_matches_a_brute_force_scan(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-near", |_| {}).await;
    // 40 more bracelets (subjects 100.. of officers 1 and 2), two days of a
    // seeded random walk around the city, a fix every 5 minutes.
    sqlx::query("SELECT emtrack_ensure_partitions(current_date - 3, current_date + 1)")
        .execute(&pool)
        .await
        .expect("partitions");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let start = store::now_ms() - 2 * 86_400_000;
    let mut all: Vec<(i64, String, i64, f64, f64)> = Vec::new();
    for k in 0..40_i64 {
        let (subject, device) = (100 + k, format!("EM-N{k}"));
        for q in [
            "INSERT INTO subjects (id, reference, officer_id) VALUES ($1, 'S-' || $1, 1 + $1 % 2)",
            "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ($2, 'bracelet', 'json', 300)",
            "INSERT INTO assignments (device_id, subject_id) VALUES ($2, $1)",
        ] {
            let mut query = sqlx::query(q).bind(subject);
            if q.contains("$2") {
                query = query.bind(&device);
            }
            query.execute(&pool).await.expect(q);
        }
        let (mut lat, mut lon) = (43.20 + next() * 0.1, 76.85 + next() * 0.15);
        let mut rows = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..576 {
            lat += (next() - 0.5) * 0.002;
            lon += (next() - 0.5) * 0.003;
            let t = start + i * 300_000;
            rows.0.push(store::Millis(t));
            rows.1.push(lat);
            rows.2.push(lon);
            all.push((subject, device.clone(), t, lat, lon));
        }
        sqlx::query(
            "INSERT INTO fixes (device_id, fix_time, lat, lon, accuracy_m) \
             SELECT $1, t, la, lo, 10 FROM unnest($2::timestamptz[], $3::float8[], $4::float8[]) AS u(t, la, lo)",
        )
        .bind(&device)
        .bind(&rows.0)
        .bind(&rows.1)
        .bind(&rows.2)
        .execute(&pool)
        .await
        .expect("fixes");
    }
    let iso = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .expect("time")
            .to_string()
    };
    let mut checked = 0;
    for (n, (lat, lon, r, from_h, to_h)) in [
        (43.25, 76.92, 300.0, 0, 48),
        (43.23, 76.95, 1000.0, 6, 30),
        (43.27, 76.90, 2500.0, 12, 13),
        (43.21, 76.99, 150.0, 0, 48),
        (43.26, 76.93, 5000.0, 40, 48),
    ]
    .into_iter()
    .enumerate()
    {
        let (t1, t2) = (start + from_h * 3_600_000, start + to_h * 3_600_000);
        // Brute force: every fix of the 40 bracelets, the closest per subject.
        let mut want: BTreeMap<i64, (f64, i64)> = BTreeMap::new();
        for (subject, _, t, la, lo) in &all {
            let d = metres((lat, lon), (*la, *lo));
            if *t >= t1 && *t < t2 && d <= r {
                let e = want.entry(*subject).or_insert((d, *t));
                if d < e.0 || (d == e.0 && *t < e.1) {
                    *e = (d, *t);
                }
            }
        }
        let path = format!(
            "/v1/near?lat={lat}&lon={lon}&radius_m={r}&from={}&to={}&all=true&reason=case%20{n}",
            iso(t1),
            iso(t2)
        );
        let got = f.get("desk", &path).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let got: BTreeMap<i64, (f64, i64)> = got.json()["subjects"]
            .as_array()
            .expect("subjects")
            .iter()
            .filter(|s| s["subject_id"].as_i64() >= Some(100))
            .map(|s| {
                let t: jiff::Timestamp = s["time"].as_str().expect("time").parse().expect("time");
                (
                    s["subject_id"].as_i64().expect("id"),
                    (
                        s["distance_m"].as_f64().expect("distance"),
                        t.as_millisecond(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "query {n}"
        );
        for (s, (d, t)) in &want {
            assert!(
                (got[s].0 - d).abs() < 1e-6,
                "query {n}, subject {s}: {} vs {d}",
                got[s].0
            );
            assert_eq!(got[s].1, *t, "query {n}, subject {s}");
        }
        checked += want.len();
    }
    assert!(
        checked > 20,
        "the queries found too little to compare: {checked}"
    );

    // Within scope by default; every subject only with a reason, and only
    // for the roles allowed to ask.
    let path = |extra: &str| {
        format!(
            "/v1/near?lat=43.25&lon=76.92&radius_m=5000&from={}&to={}{extra}",
            iso(start),
            iso(start + 48 * 3_600_000)
        )
    };
    let mine = f.get("off1", &path("")).await.json();
    assert!(
        mine["subjects"]
            .as_array()
            .expect("subjects")
            .iter()
            .all(|s| {
                let id = s["subject_id"].as_i64().unwrap_or(0);
                id == 10 || (id >= 100 && id % 2 == 0)
            }),
        "officer 1 sees only officer 1's subjects: {mine}"
    );
    assert_eq!(f.get("off1", &path("&all=true&reason=x")).await.status, 403);
    assert_eq!(f.get("desk", &path("&all=true")).await.status, 400);
    assert_eq!(
        f.get("admin", &path("&all=true&reason=warrant%2042"))
            .await
            .status,
        200
    );
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT reason FROM audit_log WHERE action = 'GET /v1/near' AND username = 'admin'",
    )
    .fetch_one(&pool)
    .await
    .expect("audited");
    assert_eq!(reason.as_deref(), Some("warrant 42"));
    f.running.shut_down().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn gnss_shielding_raises_one_critical_alert_until_an_officer_resolves_it(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-shield", |_| {}).await;
    let event = |ms: i64| {
        let t = jiff::Timestamp::from_millisecond(ms).expect("time");
        (
            "em/v1/dev/EM-10/event".to_owned(),
            format!(r#"{{"v": 1, "device": "EM-10", "events": [{{"t": "{t}", "event": "shielding_detected"}}]}}"#)
                .into_bytes(),
        )
    };
    let now = store::now_ms();
    publish_raw(
        f._broker.port,
        "shield-pub",
        &[event(now - 20_000), event(now - 10_000)],
    )
    .await;
    let shielded = || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, String, String, i32)>(
                "SELECT id, severity, state, repeats FROM alerts WHERE kind = 'shielding_detected' AND subject_id = 10",
            )
            .fetch_all(&pool)
            .await
            .expect("alerts")
        }
    };
    wait_until(Duration::from_secs(20), "the shielding alert", || async {
        shielded().await.first().is_some_and(|a| a.3 == 1)
    })
    .await;
    let rows = shielded().await;
    assert_eq!(rows.len(), 1, "one alert however many events: {rows:?}");
    let (id, severity, state, _) = &rows[0];
    assert_eq!((severity.as_str(), state.as_str()), ("critical", "open"));
    // It does not end by itself: an officer resolves it, with a note.
    let path = format!("/v1/alerts/{id}/resolve");
    let bare = r#"{"note": "", "disposition": "device_fault"}"#;
    assert_eq!(f.post("off1", &path, bare).await.status, 422);
    let noted = r#"{"note": "foil in the sock; warned", "disposition": "violation_confirmed"}"#;
    assert_eq!(f.post("off1", &path, noted).await.status, 200);
    f.running.shut_down().await;
}

/// Enrolment through the API, end to end: a subject enrolled by an
/// officer, a bracelet registered by the administrator and fitted by the
/// officer (its fixes are taken from then on), swapped (the old one's are
/// refused as unassigned), the subject transferred by the supervisor, and a
/// bracelet retired (its fixes refused). Each role reaches only what the
/// scope table says, and every change is audited with its reason.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn subjects_are_enrolled_fitted_swapped_transferred_and_devices_retired(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-enrol", |_| {}).await;
    let enrol = r#"{"reference": "CASE-2026-77", "reason": "court order 2026/77"}"#;
    for (user, status) in [("desk", 403), ("admin", 403), ("aud", 403)] {
        assert_eq!(
            f.post(user, "/v1/subjects", enrol).await.status,
            status,
            "{user}"
        );
    }
    // Not into a caseload the caller does not hold.
    let other = r#"{"reference": "CASE-2026-78", "officer_id": 2, "reason": "court order"}"#;
    assert_eq!(f.post("off1", "/v1/subjects", other).await.status, 422);
    let r = f
        .applied("enrolled", f.post("off1", "/v1/subjects", enrol))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let subject = r.json()["id"].as_i64().expect("id");
    assert!(subject >= 1_000_000_000, "an id above imported ones");
    assert_eq!(r.json()["officer_id"], 1);
    assert_eq!(
        f.post("off1", "/v1/subjects", enrol).await.status,
        409,
        "same reference"
    );
    assert_eq!(
        f.get("off1", &format!("/v1/subjects/{subject}"))
            .await
            .status,
        200
    );
    assert_eq!(
        f.get("off2", &format!("/v1/subjects/{subject}"))
            .await
            .status,
        404
    );

    // The inventory is the administrator's.
    let device = |id: &str| {
        format!(
            r#"{{"id": "{id}", "kind": "bracelet", "format": "json", "report_interval_s": 60}}"#
        )
    };
    assert_eq!(
        f.post("off1", "/v1/devices", &device("EM-NEW-1"))
            .await
            .status,
        403
    );
    assert_eq!(f.get("off1", "/v1/devices").await.status, 403);
    for bad in [
        r#"{"id": "bad id!", "kind": "bracelet", "format": "json", "report_interval_s": 60}"#,
        r#"{"id": "EM-X", "kind": "watch", "format": "json", "report_interval_s": 60}"#,
        r#"{"id": "EM-X", "kind": "bracelet", "format": "json", "report_interval_s": 0}"#,
    ] {
        assert_eq!(
            f.post("admin", "/v1/devices", bad).await.status,
            422,
            "{bad}"
        );
    }
    for id in ["EM-NEW-1", "EM-NEW-2"] {
        let r = f
            .applied("registered", f.post("admin", "/v1/devices", &device(id)))
            .await;
        assert_eq!(r.json()["assigned"], false);
    }
    assert_eq!(
        f.post("admin", "/v1/devices", &device("EM-NEW-1"))
            .await
            .status,
        409
    );

    // Fitted by the officer: its fixes are taken from then on.
    let path = format!("/v1/subjects/{subject}/device");
    let fit = |d: &str| {
        format!(r#"{{"device_id": "{d}", "report_interval_s": 30, "reason": "induction"}}"#)
    };
    assert_eq!(
        f.put("off2", &path, &fit("EM-NEW-1")).await.status,
        404,
        "out of scope"
    );
    assert_eq!(f.put("desk", &path, &fit("EM-NEW-1")).await.status, 403);
    assert_eq!(
        f.put("off1", &path, &fit("EM-NOPE")).await.status,
        422,
        "not in the inventory"
    );
    assert_eq!(
        f.put("off1", &path, &fit("EM-20")).await.status,
        409,
        "worn by subject 20"
    );
    let r = f
        .applied("fitted", f.put("off1", &path, &fit("EM-NEW-1")))
        .await;
    assert_eq!(
        (
            r.json()["device_id"].as_str(),
            r.json()["replaced"].is_null(),
            r.json()["report_interval_s"].as_i64()
        ),
        (Some("EM-NEW-1"), true, Some(30))
    );
    let t = store::now_ms();
    assert_eq!(
        f.one_fix(&pool, "EM-NEW-1", t - 5_000).await,
        None,
        "taken once fitted"
    );
    assert_eq!(
        f.one_fix(&pool, "EM-NEW-2", t - 4_000).await.as_deref(),
        Some("device_unassigned")
    );

    // Swapped: the old one's fixes are refused, the new one's taken.
    let r = f
        .applied("swapped", f.put("off1", &path, &fit("EM-NEW-2")))
        .await;
    assert_eq!(r.json()["replaced"], "EM-NEW-1");
    assert_eq!(
        f.one_fix(&pool, "EM-NEW-1", t - 3_000).await.as_deref(),
        Some("device_unassigned")
    );
    assert_eq!(f.one_fix(&pool, "EM-NEW-2", t - 2_000).await, None);
    let assignments: Vec<(String, bool)> = sqlx::query_as(
        "SELECT device_id, valid_to IS NULL FROM assignments WHERE subject_id = $1 ORDER BY valid_from",
    )
    .bind(subject)
    .fetch_all(&pool)
    .await
    .expect("assignments");
    assert_eq!(
        assignments,
        vec![
            ("EM-NEW-1".to_owned(), false),
            ("EM-NEW-2".to_owned(), true)
        ]
    );

    // A proximity order: the protected person's phone is watched from then
    // on (its fixes are taken), and the order is in force.
    let phone =
        r#"{"id": "VP-1", "kind": "victim_phone", "format": "json", "report_interval_s": 60}"#;
    f.applied("registered", f.post("admin", "/v1/devices", phone))
        .await;
    assert_eq!(
        f.one_fix(&pool, "VP-1", t - 2_500).await.as_deref(),
        Some("device_unassigned"),
        "a phone protecting nobody"
    );
    let orders = format!("/v1/subjects/{subject}/orders");
    let order = |d: &str, m: f64| {
        format!(
            r#"{{"kind": "proximity", "other_device": "{d}", "min_distance_m": {m}, "reason": "protective order"}}"#
        )
    };
    assert_eq!(
        f.post("off1", &orders, &order("EM-NEW-1", 500.0))
            .await
            .status,
        422,
        "not a phone"
    );
    assert_eq!(
        f.post("off1", &orders, &order("VP-1", 0.0)).await.status,
        422
    );
    let r = f
        .applied("protected", f.post("off1", &orders, &order("VP-1", 500.0)))
        .await;
    let rule = r.json()["rule_id"].as_i64().expect("rule");
    assert_eq!(
        f.one_fix(&pool, "VP-1", t - 1_500).await,
        None,
        "watched now"
    );
    let now = f.get("off1", &orders).await.json();
    assert_eq!(now["orders"][0]["rule_id"].as_i64(), Some(rule));
    assert_eq!(now["orders"][0]["rule"]["other_device"], "VP-1");

    // Transferred by the supervisor, within the team only.
    let to = |o: i64| format!(r#"{{"officer_id": {o}, "reason": "caseload rebalancing"}}"#);
    let transfer = format!("/v1/subjects/{subject}/transfer");
    assert_eq!(f.post("off1", &transfer, &to(3)).await.status, 403);
    assert_eq!(
        f.post("sup", &transfer, &to(2)).await.status,
        422,
        "officer 2 is not in the team"
    );
    let r = f
        .applied("transferred", f.post("sup", &transfer, &to(3)))
        .await;
    assert_eq!(r.json()["officer_id"].as_i64(), Some(3), "{}", r.body);
    assert_eq!(
        f.get("off1", &format!("/v1/subjects/{subject}"))
            .await
            .status,
        404,
        "no longer officer 1's"
    );
    assert_eq!(
        f.get("sup", &format!("/v1/subjects/{subject}"))
            .await
            .status,
        200
    );

    // The proximity order lifted: the phone is no longer watched for them.
    assert_eq!(
        f.delete(
            "sup",
            &format!("/v1/orders/{rule}?reason=order%20discharged")
        )
        .await
        .status,
        204
    );
    let victims: i64 = sqlx::query_scalar("SELECT count(*) FROM victims WHERE device_id = 'VP-1'")
        .fetch_one(&pool)
        .await
        .expect("victims");
    assert_eq!(victims, 0);

    // Removed, then retired by the administrator: refused from then on.
    assert_eq!(
        f.delete("off1", &format!("{path}?reason=end")).await.status,
        404
    );
    f.applied(
        "removed",
        f.delete("sup", &format!("{path}?reason=order%20ended")),
    )
    .await;
    assert_eq!(
        f.delete("sup", &format!("{path}?reason=again"))
            .await
            .status,
        409
    );
    assert_eq!(
        f.post("sup", "/v1/devices/EM-NEW-2/retire?reason=x", "")
            .await
            .status,
        403
    );
    assert_eq!(
        f.post("admin", "/v1/devices/EM-NOPE/retire?reason=x", "")
            .await
            .status,
        404
    );
    f.applied(
        "retired",
        f.post(
            "admin",
            "/v1/devices/EM-NEW-2/retire?reason=strap%20cut",
            "",
        ),
    )
    .await;
    assert_eq!(
        f.one_fix(&pool, "EM-NEW-2", t - 1_000).await.as_deref(),
        Some("device_retired")
    );
    assert_eq!(
        f.put("sup", &path, &fit("EM-NEW-2")).await.status,
        409,
        "retired"
    );
    let inventory = f.get("admin", "/v1/devices").await.json();
    let retired: Vec<&str> = inventory
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| !d["retired_at"].is_null())
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(retired, vec!["EM-NEW-2"]);

    // Every change is in the audit log with its reason.
    let audited: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT action, reason FROM audit_log WHERE status < 300 AND action LIKE '% /v1/%' \
         AND action NOT LIKE 'GET %' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    let audited: Vec<(&str, Option<&str>)> = audited
        .iter()
        .map(|(r, w)| (r.as_str(), w.as_deref()))
        .collect();
    assert_eq!(
        audited,
        vec![
            ("POST /v1/subjects", Some("court order 2026/77")),
            ("POST /v1/devices", None),
            ("POST /v1/devices", None),
            ("PUT /v1/subjects/{id}/device", Some("induction")),
            ("PUT /v1/subjects/{id}/device", Some("induction")),
            ("POST /v1/devices", None),
            ("POST /v1/subjects/{id}/orders", Some("protective order")),
            (
                "POST /v1/subjects/{id}/transfer",
                Some("caseload rebalancing")
            ),
            ("DELETE /v1/orders/{id}", Some("order discharged")),
            ("DELETE /v1/subjects/{id}/device", Some("order ended")),
            ("POST /v1/devices/{id}/retire", Some("strap cut")),
        ]
    );
}

/// Agency configuration is the administrator's: global category zones
/// (checked, versioned with author and reason, applied to the running
/// engine, and enforced on a subject's category order) and webhooks (whose
/// secret is never shown or audited).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn agency_zones_and_webhooks_are_the_administrators(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-agency", |_| {}).await;
    let school = |lon: f64| {
        format!(
            r#"{{"name": "School No. 12", "category": 7, "geometry": {{"type": "Point", "coordinates": [{lon}, 43.30]}}, "radius_m": 200, "reason": "schools register 2026"}}"#
        )
    };
    for user in ["off1", "sup", "desk", "aud"] {
        assert_eq!(
            f.post(user, "/v1/zones", &school(77.0)).await.status,
            403,
            "{user}"
        );
    }
    let bad = r#"{"name": "x", "category": 7, "geometry": {"type": "Point", "coordinates": [277.0, 43.3]}, "radius_m": 200, "reason": "r"}"#;
    assert_eq!(f.post("admin", "/v1/zones", bad).await.status, 422);
    let r = f
        .applied("drawn", f.post("admin", "/v1/zones", &school(77.0)))
        .await;
    let zone = r.json()["id"].as_i64().expect("id");
    let listed = f.get("off1", "/v1/zones?category=7").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()[0]["id"].as_i64(), Some(zone));
    assert_eq!(f.get("aud", "/v1/zones").await.status, 403);

    // A category order keeps subject 20 out of it: fixes inside raise the
    // alert, scoped to the zone.
    let order = r#"{"kind": "category", "category": 7, "reason": "licence condition 4"}"#;
    f.applied("ordered", f.post("off2", "/v1/subjects/20/orders", order))
        .await;
    f.inside_zone(&pool, "EM-20", zone, "the category zone's alert")
        .await;

    // Moved and removed, each a version with its author and reason; an
    // assigned zone is not the agency's to change here.
    let moved = f
        .applied(
            "moved",
            f.put("admin", &format!("/v1/zones/{zone}"), &school(77.01)),
        )
        .await;
    assert_eq!(moved.json()["geometry"]["coordinates"][0], 77.01);
    assert_eq!(
        f.put("admin", "/v1/zones/900", &school(77.0)).await.status,
        404
    );
    assert_eq!(
        f.delete("admin", "/v1/zones/900?reason=x").await.status,
        404
    );
    f.applied(
        "removed",
        f.delete("admin", &format!("/v1/zones/{zone}?reason=school%20closed")),
    )
    .await;
    assert_eq!(
        f.get("off1", "/v1/zones")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let versions: Vec<(i32, bool, String, Option<String>)> = sqlx::query_as(
        "SELECT version, row IS NOT NULL, changed_by, reason FROM order_versions \
         WHERE object = 'zone' AND object_id = $1 ORDER BY version",
    )
    .bind(zone)
    .fetch_all(&pool)
    .await
    .expect("versions");
    let admin = format!("user:{} admin", f.user["admin"]);
    assert_eq!(
        versions,
        vec![
            (
                1,
                true,
                admin.clone(),
                Some("schools register 2026".to_owned())
            ),
            (
                2,
                true,
                admin.clone(),
                Some("schools register 2026".to_owned())
            ),
            (3, false, admin, Some("school closed".to_owned())),
        ]
    );

    // Webhooks: the secret goes in and never comes out.
    let secret = "0123456789abcdef0123456789abcdef-receiver";
    let hook = |url: &str, secret: &str| format!(r#"{{"url": "{url}", "secret": "{secret}"}}"#);
    assert_eq!(f.get("off1", "/v1/webhooks").await.status, 403);
    assert_eq!(
        f.post(
            "sup",
            "/v1/webhooks",
            &hook("https://example.org/h", secret)
        )
        .await
        .status,
        403
    );
    assert_eq!(
        f.post(
            "admin",
            "/v1/webhooks",
            &hook("https://example.org/h", "short")
        )
        .await
        .status,
        422
    );
    assert_eq!(
        f.post(
            "admin",
            "/v1/webhooks",
            &hook("ftp://example.org/h", secret)
        )
        .await
        .status,
        422
    );
    let with_user = f
        .post(
            "admin",
            "/v1/webhooks",
            &hook("https://u:pw@example.org/h", secret),
        )
        .await;
    assert_eq!(
        with_user.status, 422,
        "no credential in a URL that is listed and audited"
    );
    assert!(!with_user.body.contains("pw@"), "{}", with_user.body);
    let r = f
        .post(
            "admin",
            "/v1/webhooks",
            &hook("https://example.org/h", secret),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().expect("id");
    let r = f
        .call_patch(
            "admin",
            &format!("/v1/webhooks/{id}"),
            r#"{"active": false}"#,
        )
        .await;
    assert_eq!((r.status, r.json()["active"].as_bool()), (200, Some(false)));
    assert_eq!(
        f.call_patch("admin", "/v1/webhooks/1", r#"{"active": true}"#)
            .await
            .status,
        404
    );
    let listed = f.get("admin", "/v1/webhooks").await;
    assert!(listed.body.contains("example.org") && !listed.body.contains(secret));
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE detail::text LIKE '%' || $1 || '%'",
    )
    .bind(secret)
    .fetch_one(&pool)
    .await
    .expect("audit");
    assert_eq!(leaked, 0, "the secret is not in the audit log");
}

/// An order's tuning replaces its kind's evidence thresholds: with one fix
/// enough, a single fix inside raises the alert the default (two fixes 30 s
/// apart) would not. A tuning the engine would not take is refused, saying
/// why.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_orders_tuning_changes_how_much_evidence_opens_an_episode(pool: PgPool) {
    let f = fixture(&pool, "emtrack-api-tuning", |_| {}).await;
    let order = |lat: f64, tuning: &str| {
        format!(
            r#"{{"kind": "zone", "reason": "court order", "zone": {{"name": "victim work", "kind": "exclusion",
                 "geometry": {{"type": "Point", "coordinates": [77.05, {lat}]}}, "radius_m": 150}}{tuning}}}"#
        )
    };
    for (bad, why) in [
        (
            r#", "tuning": {"enter_fixes": 0, "enter_span_s": 0, "exit_fixes": 3, "grace_s": 0, "strict": false}"#,
            "1–20",
        ),
        (
            r#", "tuning": {"enter_fixes": 1, "enter_span_s": 0, "exit_fixes": 3, "grace_s": 0}"#,
            "missing field `strict`",
        ),
        (
            r#", "tuning": {"enter_fixes": 1, "enter_span_s": 0, "exit_fixes": 3, "grace_s": 0, "strict": true, "x": 1}"#,
            "unknown field `x`",
        ),
    ] {
        let r = f
            .post("off2", "/v1/subjects/20/orders", &order(43.35, bad))
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.body.contains(why), "{why}: {}", r.body);
    }
    // Subject 20 gets a tuned order (one fix is enough), subject 10 the same
    // zone elsewhere with the defaults; one fix inside each.
    let one = r#", "tuning": {"enter_fixes": 1, "enter_span_s": 0, "exit_fixes": 2, "grace_s": 0, "strict": true}"#;
    let tuned = f
        .applied(
            "tuned",
            f.post("off2", "/v1/subjects/20/orders", &order(43.35, one)),
        )
        .await;
    let plain = f
        .applied(
            "plain",
            f.post("off1", "/v1/subjects/10/orders", &order(43.36, "")),
        )
        .await;
    let t = store::now_ms() - 30_000;
    let msgs = vec![
        (
            "em/v1/dev/EM-20/fix".to_owned(),
            json_fixes("EM-20", &[(t, (43.35, 77.05))]),
        ),
        (
            "em/v1/dev/EM-10/fix".to_owned(),
            json_fixes("EM-10", &[(t, (43.36, 77.05))]),
        ),
    ];
    let acked = f.running.metrics.messages_acked.get();
    publish_raw(f._broker.port, "tuning-pub", &msgs).await;
    wait_acked(&f.running.metrics, acked + 2, Duration::from_secs(20)).await;
    let zone = |r: &Reply| r.json()["zone_id"].as_i64().expect("zone");
    let (tz, pz) = (zone(&tuned), zone(&plain));
    wait_until(Duration::from_secs(20), "the tuned order's alert", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE scope = $1")
                .bind(tz)
                .fetch_one(&pool)
                .await
                .expect("alerts");
            n == 1
        }
    })
    .await;
    let plain_transitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rule_transitions WHERE zone_id = $1")
            .bind(pz)
            .fetch_one(&pool)
            .await
            .expect("transitions");
    assert_eq!(
        plain_transitions, 0,
        "one fix opens nothing under the defaults"
    );
    // The tuning is part of the order's version.
    let now = f.get("off2", "/v1/subjects/20/orders").await.json();
    let mine = now["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .find(|o| o["rule_id"] == tuned.json()["rule_id"])
        .cloned()
        .expect("the tuned order");
    assert_eq!(mine["rule"]["tuning"]["enter_fixes"], 1);
}
