//! Configuration layering and its error messages.

use emtrack::config::{Config, ConfigError, Overrides};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// A file in the temp directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file(contents: &str) -> TempFile {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "emtrack-config-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, contents).expect("temp file");
    TempFile(p)
}

#[test]
fn defaults_work_with_the_local_services() {
    let c = Config::load(None, &env(&[]), &Overrides::default()).expect("defaults are valid");
    assert_eq!(c.database_url, "postgres://postgres@127.0.0.1/emtrack");
    assert_eq!((c.mqtt_host.as_str(), c.mqtt_port), ("127.0.0.1", 1883));
    assert_eq!(c.retention_days, 2192, "six years");
}

#[test]
fn file_then_environment_then_flags() {
    let f = file("mqtt_host = \"broker.example\"\nmqtt_port = 1884\nretention_days = 30\n");
    let e = env(&[
        ("EMTRACK_MQTT_PORT", "1885"),
        ("EMTRACK_DATABASE_URL", "postgres://u@db/x"),
    ]);
    let c = Config::load(Some(&f.0), &e, &Overrides::default()).expect("valid");
    assert_eq!(c.mqtt_host, "broker.example", "from the file");
    assert_eq!(c.mqtt_port, 1885, "the environment beats the file");
    assert_eq!(c.retention_days, 30);
    assert_eq!(c.database_url, "postgres://u@db/x");
    let flags = Overrides {
        mqtt_port: Some(1886),
        ..Overrides::default()
    };
    let c = Config::load(Some(&f.0), &e, &flags).expect("valid");
    assert_eq!(c.mqtt_port, 1886, "flags beat the environment");
    // The printed TOML reads back to the same configuration.
    let again = file(&c.to_toml());
    assert_eq!(
        Config::load(Some(&again.0), &env(&[]), &Overrides::default()).expect("valid"),
        c
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let typo = file("mqtt_hots = \"x\"\n");
    let e = Config::load(Some(&typo.0), &env(&[]), &Overrides::default()).expect_err("unknown key");
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert!(e.to_string().contains("mqtt_hots"), "{e}");

    let e = Config::load(
        None,
        &env(&[("EMTRACK_MQTT_PORT", "abc")]),
        &Overrides::default(),
    )
    .expect_err("bad port");
    assert!(e.to_string().contains("EMTRACK_MQTT_PORT"), "{e}");

    let e = Config::load(
        None,
        &env(&[("EMTRACK_DATABASE_URL", "mysql://x")]),
        &Overrides::default(),
    )
    .expect_err("not postgres");
    assert!(e.to_string().contains("postgres://"), "{e}");

    // The listeners: addresses, and the officer API apart from the metrics.
    for (vars, says) in [
        (&[("EMTRACK_HTTP_LISTEN", "garbage")][..], "http_listen"),
        (&[("EMTRACK_API_LISTEN", "localhost")][..], "api_listen"),
        (
            &[
                ("EMTRACK_HTTP_LISTEN", "127.0.0.1:9000"),
                ("EMTRACK_API_LISTEN", "127.0.0.1:9000"),
            ][..],
            "its own listener",
        ),
    ] {
        let e = Config::load(None, &env(vars), &Overrides::default()).expect_err(says);
        assert!(e.to_string().contains(says), "{e}");
    }

    let missing = std::env::temp_dir().join("emtrack-no-such-config.toml");
    let e =
        Config::load(Some(&missing), &env(&[]), &Overrides::default()).expect_err("missing file");
    assert!(e.to_string().contains("emtrack-no-such-config.toml"), "{e}");
}

/// `check-config` shows no secret: the database password is `***` wherever
/// it is written (user info, a `password=` parameter), also in an error;
/// and the URL can come from a file (`database_url_file`,
/// `EMTRACK_DATABASE_URL_FILE`), kept out of the environment and `ps`.
#[test]
fn the_shown_configuration_holds_no_secret() {
    let secret = "s3cr3t-Pa55";
    let e = env(&[(
        "EMTRACK_DATABASE_URL",
        "postgres://emtrack:s3cr3t-Pa55@db.example:5432/emtrack?sslmode=require&password=s3cr3t-Pa55",
    )]);
    let c = Config::load(None, &e, &Overrides::default()).expect("valid");
    assert!(c.database_url.contains(secret), "the service still has it");
    let shown = c.shown();
    assert!(!shown.contains(secret), "{shown}");
    assert!(
        shown.contains(
            "postgres://emtrack:***@db.example:5432/emtrack?sslmode=require&password=***"
        ),
        "{shown}"
    );
    let bad = Config::load(
        None,
        &env(&[("EMTRACK_DATABASE_URL", "mysql://root:s3cr3t-Pa55@db/x")]),
        &Overrides::default(),
    )
    .expect_err("not postgres");
    assert!(!bad.to_string().contains(secret), "{bad}");

    let url = file("postgres://emtrack:s3cr3t-Pa55@db.example/emtrack\n");
    let from_file = Config::load(
        None,
        &env(&[("EMTRACK_DATABASE_URL_FILE", url.0.to_str().expect("path"))]),
        &Overrides::default(),
    )
    .expect("valid");
    assert_eq!(
        from_file.database_url,
        "postgres://emtrack:s3cr3t-Pa55@db.example/emtrack"
    );
    assert!(!from_file.shown().contains(secret));
    // The real binary's check-config prints the same, and of the broker
    // identities' passwords only where they are kept.
    let password = file("s3cr3t-Pa55\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emtrack"))
        .arg("check-config")
        .env("EMTRACK_DATABASE_URL_FILE", &url.0)
        .env("EMTRACK_MQTT_USERNAME", "emtrack")
        .env("EMTRACK_MQTT_PASSWORD_FILE", &password.0)
        .env("EMTRACK_BROKER_ADMIN_USERNAME", "admin")
        .env("EMTRACK_BROKER_ADMIN_PASSWORD_FILE", &password.0)
        .output()
        .expect("emtrack runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("postgres://emtrack:***@db.example/emtrack"),
        "{stdout}"
    );
    let kept = format!("mqtt_password_file = \"{}\"", password.0.display());
    assert!(stdout.contains(&kept), "{stdout}");
    assert!(!stdout.contains(secret) && !String::from_utf8_lossy(&out.stderr).contains(secret));
}

#[test]
fn every_key_comes_from_the_environment_too() {
    let c = Config::load(
        None,
        &env(&[
            ("EMTRACK_LEASE_PERIOD_S", "12"),
            ("EMTRACK_MAX_SPEED_KMH", "250.5"),
            ("EMTRACK_MQTT_CLIENT_ID", "emtrack-site-2"),
            // A string key whose value reads as a number stays a string.
            ("EMTRACK_LOG_FORMAT", "json"),
            ("EMTRACK_HTTP_LISTEN", "127.0.0.1:9999"),
            ("EMTRACK_MQTT_HOST", "10001"),
            ("EMTRACK_ALERTS__ESCALATE_CRITICAL_S", "300"),
            ("EMTRACK_RETENTION__REJECTED_MESSAGES_DAYS", "30"),
            // Not keys: the file and the log filter.
            ("EMTRACK_CONFIG", "/etc/emtrack/emtrack.toml"),
            ("EMTRACK_LOG", "warn,ingest=debug"),
            ("PATH", "/usr/bin"),
        ]),
        &Overrides::default(),
    )
    .expect("valid");
    assert_eq!(c.lease_period_s, 12);
    assert_eq!(c.max_speed_kmh, 250.5);
    assert_eq!(c.mqtt_client_id, "emtrack-site-2");
    assert_eq!(c.mqtt_host, "10001");
    assert_eq!(c.http_listen, "127.0.0.1:9999");
    assert_eq!(c.alerts.escalate_critical_s, 300, "a key of [alerts]");
    assert_eq!(
        c.retention.rejected_messages_days, 30,
        "a key of [retention]"
    );

    for (var, value, says) in [
        (
            "EMTRACK_ALERTS__ESCALATE_CRITICL_S",
            "1",
            "no such configuration key",
        ),
        ("EMTRACK_WORKRES", "2", "no such configuration key"),
        (
            "EMTRACK_ALERTS__REPLAY_S",
            "soon",
            "EMTRACK_ALERTS__REPLAY_S",
        ),
    ] {
        let e =
            Config::load(None, &env(&[(var, value)]), &Overrides::default()).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains(var) && text.contains(says), "{text}");
    }
}
