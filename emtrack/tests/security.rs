//! Security at the boundaries, on a real Mosquitto started from the shipped
//! secure config (`deploy/mosquitto/emtrack.conf`: TLS, dynamic security,
//! no anonymous access) and on the service's own listeners:
//! - every identity is held to its own topics and client id, and enrol,
//!   rotate and retire take effect without a broker restart;
//! - TLS refuses a peer whose certificate does not chain to the trusted CA.

mod common;

use common::certs::Certs;
use common::*;
use device_sim::testbed::{Broker, BrokerTls};
use emtrack::broker::DeviceOp;
use emtrack::config::Config;
use link::{MqttLink, Secret};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Packet, QoS, SubscribeReasonCode};
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "admin-password-for-this-test";

/// The service's configuration for the secure broker: its identity, TLS
/// against the test CA, the dynsec admin.
fn secure_config(broker: &Broker, certs: &Certs) -> Config {
    let service_pw = certs.dir.join("service.password");
    let admin_pw = certs.dir.join("admin.password");
    std::fs::write(&service_pw, "service-password-for-this-test\n").expect("write");
    std::fs::write(&admin_pw, format!("{ADMIN_PASSWORD}\n")).expect("write");
    Config {
        mqtt_tls: true,
        mqtt_ca_file: Some(certs.ca.display().to_string()),
        mqtt_username: Some("emtrack".into()),
        mqtt_password_file: Some(service_pw.display().to_string()),
        broker_admin_username: Some("admin".into()),
        broker_admin_password_file: Some(admin_pw.display().to_string()),
        ..config(broker.port, "emtrack-secure")
    }
}

/// A broker from the shipped secure config, with certificates generated
/// for it, and the service's configuration for it with its identity set up
/// (`emtrack broker setup`'s code).
async fn secure_broker(tag: &str) -> (Certs, Broker, Config) {
    let certs = Certs::generate(tag);
    let tls = BrokerTls {
        cert_file: certs.cert.clone(),
        key_file: certs.key.clone(),
    };
    let broker = Broker::start_secure(&tls, ADMIN_PASSWORD).expect("secure broker");
    let cfg = secure_config(&broker, &certs);
    emtrack::broker::setup(&cfg)
        .await
        .expect("service identity");
    (certs, broker, cfg)
}

fn tls_link(port: u16, ca: &Path) -> MqttLink {
    MqttLink {
        tls: Some(link::tls::client_config(Some(ca)).expect("TLS config")),
        ..MqttLink::plain("127.0.0.1", port)
    }
}

/// Connects and returns the event loop after CONNACK, or the refusal.
async fn connect(
    link: &MqttLink,
    client_id: &str,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let mut o = link.options(client_id);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = AsyncClient::new(o, 16);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, el)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("no CONNACK nor refusal within 10 s"),
        }
    }
}

/// Publishes at QoS 1 and waits for the PUBACK (which MQTT 3.1.1 sends
/// even for a publish the ACL refused: the refusal shows in what is
/// stored).
async fn publish(link: &MqttLink, client_id: &str, topic: &str, payload: Vec<u8>) {
    let (client, mut el) = connect(link, client_id).await.expect("connects");
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queued");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return,
            Ok(Ok(_)) => {}
            other => panic!("publish failed: {other:?}"),
        }
    }
}

/// Whether the broker grants a subscription to `filter`.
async fn may_subscribe(link: &MqttLink, client_id: &str, filter: &str) -> bool {
    let (client, mut el) = connect(link, client_id).await.expect("connects");
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queued");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => {
                return matches!(a.return_codes[0], SubscribeReasonCode::Success(_));
            }
            Ok(Ok(_)) => {}
            other => panic!("subscribe failed: {other:?}"),
        }
    }
}

fn refused_as_unauthorised(r: Result<(AsyncClient, EventLoop), ConnectionError>) -> bool {
    matches!(r, Err(ConnectionError::ConnectionRefused(_)))
}

fn credentials(path: &Path) -> HashMap<String, Secret> {
    std::fs::read_to_string(path)
        .expect("credentials file")
        .lines()
        .map(|l| {
            let (id, pw) = l.split_once(' ').expect("`<id> <password>`");
            (id.to_owned(), Secret::new(pw))
        })
        .collect()
}

async fn two_bracelets(pool: &PgPool) {
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO subjects (id, reference, officer_id) VALUES (1, 'S-1', 1), (2, 'S-2', 1)",
        "INSERT INTO devices (id, kind, format, report_interval_s) \
         VALUES ('dev-a', 'bracelet', 'json', 30), ('dev-b', 'bracelet', 'json', 30)",
        "INSERT INTO assignments (device_id, subject_id) VALUES ('dev-a', 1), ('dev-b', 2)",
    ];
    for q in setup {
        sqlx::query(q).execute(pool).await.expect(q);
    }
}

async fn fixes_of(pool: &PgPool, device: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fixes WHERE device_id = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Every broker rule of issue 14's acceptance list, on one broker.
// Over 80 lines: one broker and one service, then each rule in turn; split,
// each part would start its own broker (seconds each) for no clarity gained.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_secure_broker_holds_every_identity_to_its_own_topics(pool: PgPool) {
    let (certs, broker, cfg) = secure_broker("broker").await;
    let link = tls_link(broker.port, &certs.ca);

    // Nobody anonymous, over TLS or not.
    assert!(
        refused_as_unauthorised(connect(&link, "anon").await),
        "anonymous refused"
    );
    let plain = MqttLink::plain("127.0.0.1", broker.port);
    assert!(
        connect(&plain, "plain").await.is_err(),
        "plain TCP on the TLS listener fails"
    );

    // A broker whose certificate does not chain to the trusted CA is refused.
    let untrusted =
        tls_link(broker.port, &certs.other_ca).as_identity("admin", Secret::new(ADMIN_PASSWORD));
    let e = connect(&untrusted, "untrusted")
        .await
        .err()
        .expect("untrusted broker refused");
    assert!(matches!(e, ConnectionError::Tls(_)), "a TLS error: {e:?}");

    // emtrack issues two bracelets their credentials (its own identity was
    // set up by `secure_broker`).
    let issued = certs.dir.join("devices.credentials");
    emtrack::broker::devices(
        &cfg,
        DeviceOp::Enrol,
        &["dev-a".into(), "dev-b".into()],
        Some(&issued),
    )
    .await
    .expect("enrol");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&issued)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "issued credentials are readable by their owner only"
        );
    }
    let creds = credentials(&issued);
    let a = link.as_identity("dev-a", creds["dev-a"].clone());
    let b = link.as_identity("dev-b", creds["dev-b"].clone());
    two_bracelets(&pool).await;
    let svc = Running::start_with(pool.clone(), cfg.clone()).await;

    // A device can't connect with another's password or client id, nor as
    // emtrack's client id.
    let a_with_b_password = link.as_identity("dev-a", creds["dev-b"].clone());
    assert!(refused_as_unauthorised(
        connect(&a_with_b_password, "dev-a").await
    ));
    assert!(
        refused_as_unauthorised(connect(&a, "dev-b").await),
        "dev-a as dev-b's client id"
    );
    assert!(
        refused_as_unauthorised(connect(&a, &cfg.mqtt_client_id).await),
        "emtrack's client id"
    );
    assert!(refused_as_unauthorised(
        connect(&a, &format!("{}-alerts", cfg.mqtt_client_id)).await
    ));

    // dev-a publishes on dev-b's topic (forged), then on its own: only its
    // own fix is stored.
    let t0 = jiff::Timestamp::now().as_millisecond() - 60_000;
    publish(
        &a,
        "dev-a",
        "em/v1/dev/dev-b/fix",
        json_fixes("dev-b", &[(t0, (43.2, 76.9))]),
    )
    .await;
    publish(
        &a,
        "dev-a",
        "em/v1/dev/dev-a/fix",
        json_fixes("dev-a", &[(t0, (43.2, 76.9))]),
    )
    .await;
    wait_acked(&svc.metrics, 1, Duration::from_secs(10)).await;
    assert_eq!(fixes_of(&pool, "dev-a").await, 1, "its own fix is stored");
    assert_eq!(
        fixes_of(&pool, "dev-b").await,
        0,
        "the forged one never reached emtrack"
    );
    assert_eq!(svc.metrics.messages_acked.get(), 1, "nothing else arrived");

    // A device may subscribe to nothing: not officers', not other devices'.
    for filter in [
        "em/v1/officers/1/alerts",
        "em/v1/officers/#",
        "em/v1/dev/dev-b/fix",
        "#",
        "owntracks/#",
    ] {
        assert!(
            !may_subscribe(&a, "dev-a", filter).await,
            "dev-a may not subscribe to {filter}"
        );
    }
    // An officer reads its own alert topic only.
    let officer_file = certs.dir.join("officer.credentials");
    emtrack::broker::officer(&cfg, 1, &officer_file)
        .await
        .expect("officer identity");
    let officer = link.as_identity("officer-1", credentials(&officer_file)["officer-1"].clone());
    assert!(may_subscribe(&officer, "officer-1", "em/v1/officers/1/alerts").await);
    assert!(!may_subscribe(&officer, "officer-1", "em/v1/officers/2/alerts").await);
    assert!(!may_subscribe(&officer, "officer-1", "em/v1/dev/+/fix").await);

    // Rotation: the new password works, the old one doesn't, and a session
    // opened with the old one is ended.
    let (_old_session, mut old_loop) = connect(&a, "dev-a").await.expect("old password works");
    let rotated = certs.dir.join("rotated.credentials");
    emtrack::broker::devices(&cfg, DeviceOp::Rotate, &["dev-a".into()], Some(&rotated))
        .await
        .expect("rotate");
    assert!(
        ended_within(&mut old_loop, Duration::from_secs(10)).await,
        "old session ended"
    );
    assert!(
        refused_as_unauthorised(connect(&a, "dev-a").await),
        "old password refused"
    );
    let a2 = link.as_identity("dev-a", credentials(&rotated)["dev-a"].clone());
    publish(
        &a2,
        "dev-a",
        "em/v1/dev/dev-a/fix",
        json_fixes("dev-a", &[(t0 + 30_000, (43.2, 76.9))]),
    )
    .await;
    wait_acked(&svc.metrics, 2, Duration::from_secs(10)).await;
    assert_eq!(
        fixes_of(&pool, "dev-a").await,
        2,
        "stored under the new password"
    );

    // Retirement: at once, without a broker restart.
    let (_b_session, mut b_loop) = connect(&b, "dev-b").await.expect("dev-b connects");
    emtrack::broker::devices(&cfg, DeviceOp::Retire, &["dev-b".into()], None)
        .await
        .expect("retire");
    assert!(
        ended_within(&mut b_loop, Duration::from_secs(10)).await,
        "retired session ended"
    );
    assert!(
        refused_as_unauthorised(connect(&b, "dev-b").await),
        "retired credential refused"
    );
    // Enrolling an enrolled device is refused, not silently replaced.
    let again = emtrack::broker::devices(
        &cfg,
        DeviceOp::Enrol,
        &["dev-a".into()],
        Some(&certs.dir.join("again")),
    )
    .await
    .expect_err("dev-a is enrolled");
    assert!(again.contains("rotate"), "{again}");
    // No device may have emtrack's client id (or any beginning with
    // `emtrack`) or an officer's: none can take their sessions.
    for reserved in [
        cfg.mqtt_client_id.clone(),
        "EMTRACK-ingest".into(),
        "officer-1".into(),
    ] {
        let e = emtrack::broker::devices(
            &cfg,
            DeviceOp::Enrol,
            std::slice::from_ref(&reserved),
            Some(&certs.dir.join(format!("reserved-{reserved}"))),
        )
        .await
        .expect_err("a reserved id");
        assert!(e.contains("reserved"), "{e}");
    }
    svc.shut_down().await;
}

/// Polls an event loop until its connection ends.
async fn ended_within(el: &mut EventLoop, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

/// Both HTTP listeners serve HTTPS with `tls_cert_file`/`tls_key_file`: a
/// client trusting the CA is served, one trusting another CA refuses the
/// handshake, and plain HTTP gets nothing.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_http_listeners_serve_https_to_clients_that_trust_them(pool: PgPool) {
    let certs = Certs::generate("https");
    let broker = Broker::start().expect("broker");
    let cfg = Config {
        tls_cert_file: Some(certs.cert.display().to_string()),
        tls_key_file: Some(certs.key.display().to_string()),
        ..config(broker.port, "emtrack-https")
    };
    let svc = Running::start_with(pool, cfg).await;
    // The officer API answers an anonymous request 401: served, over TLS.
    for (addr, path, status) in [
        (svc.svc.http, "/healthz", "200"),
        (svc.svc.api, "/v1/me", "401"),
    ] {
        let page = https_get(addr, &certs.ca, path)
            .await
            .expect("trusted client served");
        assert!(page.starts_with(&format!("HTTP/1.1 {status}")), "{page}");
        let e = https_get(addr, &certs.other_ca, path)
            .await
            .expect_err("untrusted refused");
        assert!(e.contains("certificate"), "{e}");
        assert!(
            http_get(addr.port(), path).is_none(),
            "no plain HTTP on an HTTPS listener"
        );
    }
    svc.shut_down().await;
}

/// GET over TLS trusting `ca`: the whole answer, or why the handshake failed.
pub async fn https_get(
    addr: std::net::SocketAddr,
    ca: &Path,
    path: &str,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = link::tls::client_config(Some(ca)).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A webhook receiver serving HTTPS with `cert`/`key`: counts its POSTs.
async fn https_receiver(cert: &Path, key: &Path) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    let posts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = link::tls::acceptor(cert, key).expect("acceptor");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api::serve(listener, Some(tls), app, stop));
    (port, posts)
}

/// `https://` webhooks: one whose certificate chains to
/// `alerts.webhook_ca_file` gets the alert; one whose certificate doesn't is
/// never sent it, and its delivery records why.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn webhooks_go_over_https_to_trusted_receivers_only(pool: PgPool) {
    let certs = Certs::generate("webhook");
    let broker = Broker::start().expect("broker");
    let (trusted_port, trusted) = https_receiver(&certs.cert, &certs.key).await;
    let (stranger_port, stranger) = https_receiver(&certs.stranger_cert, &certs.stranger_key).await;
    two_bracelets(&pool).await;
    for (id, port) in [(1, trusted_port), (2, stranger_port)] {
        sqlx::query("INSERT INTO webhooks (id, url, secret) VALUES ($1, $2, 'hook-secret')")
            .bind(id)
            .bind(format!("https://localhost:{port}/hook"))
            .execute(&pool)
            .await
            .expect("webhook");
    }
    let mut cfg = config(broker.port, "emtrack-webhook-tls");
    cfg.alerts.webhook_ca_file = Some(certs.ca.display().to_string());
    cfg.alerts.webhook_backoff_ms = 50;
    cfg.alerts.webhook_backoff_max_s = 1;
    let svc = Running::start_with(pool.clone(), cfg).await;
    strap_opened(broker.port, "dev-a").await;
    wait_until(Duration::from_secs(20), "the trusted receiver's delivery", || {
        let p = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM alert_deliveries WHERE channel = 'webhook' AND target = '1' AND state = 'delivered'",
            )
            .fetch_one(&p)
            .await
            .is_ok_and(|n| n > 0)
        }
    })
    .await;
    assert!(
        trusted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the trusted receiver got it"
    );
    wait_until(
        Duration::from_secs(20),
        "the untrusted receiver's failure",
        || {
            let p = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM alert_deliveries WHERE channel = 'webhook' AND target = '2' \
                 AND attempts > 0 AND last_error ILIKE '%certificate%'",
            )
            .fetch_one(&p)
            .await
            .is_ok_and(|n| n > 0)
            }
        },
    )
    .await;
    assert_eq!(
        stranger.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the untrusted receiver got nothing"
    );
    svc.shut_down().await;
}

/// A private PostgreSQL server that speaks TLS only: `initdb` into a
/// temporary directory (as the `postgres` user when the test runs as root,
/// since the server refuses to run as root), `ssl = on` with the generated
/// certificate, and `pg_hba.conf` admitting TCP clients over TLS only
/// (`hostssl … trust`, `hostnossl … reject`). Stopped and removed on drop.
struct TlsPostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl TlsPostgres {
    fn as_server_user(&self, program: &str) -> std::process::Command {
        as_postgres(&self.bin.join(program))
    }

    fn start(certs: &Certs) -> TlsPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql (apt install postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let port = device_sim::testbed::free_port().expect("port");
        let dir =
            std::env::temp_dir().join(format!("emtrack-pg-tls-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pg = TlsPostgres { dir, bin, port };
        let data = pg.dir.join("data");
        // The server's own files: owned by the user it runs as, key 0600.
        for (from, to) in [(&certs.cert, "server.crt"), (&certs.key, "server.key")] {
            std::fs::copy(from, pg.dir.join(to)).expect("copy");
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                pg.dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod");
        }
        chown_to_postgres(&pg.dir);
        let ok = pg
            .as_server_user("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(ok.success(), "initdb failed");
        let conf = format!(
            "listen_addresses = '127.0.0.1,127.0.0.2'\nport = {port}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n\
             fsync = off\n",
            d = pg.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.0/8 trust\nhostnossl all all 127.0.0.0/8 reject\n",
        )
        .expect("pg_hba.conf");
        chown_to_postgres(&pg.dir);
        let ok = pg
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(
            ok.success(),
            "the TLS PostgreSQL did not start: see {}/server.log",
            pg.dir.display()
        );
        pg
    }

    fn url(&self, mode: &str, ca: &Path) -> String {
        format!(
            "postgres://postgres@localhost:{}/emtrack_tls?sslmode={mode}&sslrootcert={}",
            self.port,
            ca.display()
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program` run as the `postgres` user when we are root, else as us.
fn as_postgres(program: &Path) -> std::process::Command {
    if is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

fn chown_to_postgres(dir: &Path) {
    if is_root() {
        let ok = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown postgres {}", dir.display());
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

/// emtrack's own connection code (`store::connect`, which also creates the
/// database) over TLS with `sslmode=verify-full`: it works when the server's
/// certificate chains to `sslrootcert` and names the host, and fails when
/// it doesn't; the server refuses plain TCP.
#[tokio::test]
async fn postgres_connections_verify_the_server_with_verify_full() {
    let certs = Certs::generate("postgres");
    let pg = TlsPostgres::start(&certs);
    let pool = store::connect(&pg.url("verify-full", &certs.ca))
        .await
        .expect("verify-full with the right CA connects (and creates the database)");
    store::migrate(&pool).await.expect("migrates over TLS");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the session is encrypted");
    pool.close().await;

    let e = store::connect(&pg.url("verify-full", &certs.other_ca))
        .await
        .expect_err("a server certificate from another CA is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // verify-full checks the name too: the server also listens on
    // 127.0.0.2, which its certificate does not name.
    let wrong_name = pg
        .url("verify-full", &certs.ca)
        .replace("@localhost:", "@127.0.0.2:");
    let e = store::connect(&wrong_name)
        .await
        .expect_err("a host the certificate does not name is refused");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // The same address without verification (require) connects: the
    // refusal above was the name, not the address.
    let unverified = wrong_name.replace("sslmode=verify-full", "sslmode=require");
    store::connect(&unverified)
        .await
        .expect("the server is there")
        .close()
        .await;
    let plain = pg.url("disable", &certs.ca);
    assert!(
        store::connect(&plain).await.is_err(),
        "plain TCP is refused by the server"
    );
}

/// device-sim with each device's own credential, over TLS, into the secure
/// broker: every message is stored, exactly the scenario's ground truth.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn device_sim_drives_the_secure_broker_with_each_devices_credential(pool: PgPool) {
    use device_sim::publish::PublishConfig;
    let (certs, broker, cfg) = secure_broker("sim").await;
    let world = world(&pool, 14, 8).await;
    let mut sc = scenario(&world, 3, 1);
    let ids: Vec<String> = (0..sc.device_count() as u32)
        .map(|i| sc.device_id(i).as_str().to_owned())
        .collect();
    let file = certs.dir.join("fleet.credentials");
    emtrack::broker::devices(&cfg, DeviceOp::Enrol, &ids, Some(&file))
        .await
        .expect("enrol the fleet");
    let creds = credentials(&file);
    let identities: Vec<(String, Secret)> = ids
        .iter()
        .map(|id| (id.clone(), creds[id].clone()))
        .collect();
    let svc = Running::start_with(pool.clone(), cfg).await;
    let pcfg = PublishConfig {
        tls: Some(link::tls::client_config(Some(&certs.ca)).expect("TLS")),
        identities: Some(Arc::new(identities)),
        ..full_speed(broker.port, "unused")
    };
    let devices = sc.device_count();
    let report = device_sim::publish::publish(&mut sc, devices, &pcfg, 0)
        .await
        .expect("publishes");
    let truth = sc.finish();
    assert_eq!(
        report.acked, report.messages,
        "the broker took every message"
    );
    wait_acked(&svc.metrics, report.messages, Duration::from_secs(60)).await;
    assert_eq!(
        fixes_per_device(&pool).await,
        truth_fixes(&truth),
        "every fix stored"
    );
    assert!(report.fixes > 100, "a real stream: {} fixes", report.fixes);
    svc.shut_down().await;
}

/// The API's device endpoints call the same code as `emtrack device`:
/// registering a device issues its credential (shown once, never in the
/// audit log), rotating replaces it, retiring revokes it, all at once on
/// the running broker.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_api_issues_rotates_and_revokes_device_credentials(pool: PgPool) {
    let (certs, broker, cfg) = secure_broker("api").await;
    let link = tls_link(broker.port, &certs.ca);
    add_user(
        &pool,
        "root-admin",
        api::identity::Role::Admin,
        None,
        "admin password 1",
    )
    .await;
    let svc = Running::start_with(pool.clone(), cfg).await;
    let api = svc.svc.api.port();
    let token = login(api, "root-admin", "admin password 1").await;
    // A refusal by the broker (a reserved id) stores nothing.
    let reserved = r#"{"id": "emtrack-sneaky", "kind": "bracelet", "format": "json", "report_interval_s": 60}"#;
    let r = call(api, "POST", "/v1/devices", Some(&token), Some(reserved)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE id = 'emtrack-sneaky'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, 0, "the device was not registered either");
    // Only an admin may issue credentials.
    sqlx::query("INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')")
        .execute(&pool)
        .await
        .expect("officer");
    add_user(
        &pool,
        "an-officer",
        api::identity::Role::Officer,
        Some(1),
        "officer password 1",
    )
    .await;
    let officer = login(api, "an-officer", "officer password 1").await;
    let body =
        r#"{"id": "EM-NEW-1", "kind": "bracelet", "format": "json", "report_interval_s": 60}"#;
    let r = call(api, "POST", "/v1/devices", Some(&officer), Some(body)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(api, "POST", "/v1/devices", Some(&token), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.headers.contains("cache-control: no-store"),
        "{}",
        r.headers
    );
    let c = r.json()["credential"].clone();
    assert_eq!(
        (c["username"].as_str(), c["client_id"].as_str()),
        (Some("EM-NEW-1"), Some("EM-NEW-1"))
    );
    let first = Secret::new(c["password"].as_str().expect("a password"));
    let device = link.as_identity("EM-NEW-1", first.clone());
    assert!(
        connect(&device, "EM-NEW-1").await.is_ok(),
        "the issued credential works"
    );

    let r = call(
        api,
        "POST",
        "/v1/devices/EM-NEW-1/credential",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second = Secret::new(r.json()["password"].as_str().expect("a password"));
    let r = call(
        api,
        "POST",
        "/v1/devices/EM-NEW-1/credential",
        Some(&officer),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "an officer may not rotate: {}", r.body);
    assert_ne!(first, second);
    assert!(
        refused_as_unauthorised(connect(&device, "EM-NEW-1").await),
        "the old one stops"
    );
    let rotated = link.as_identity("EM-NEW-1", second.clone());
    assert!(
        connect(&rotated, "EM-NEW-1").await.is_ok(),
        "the new one works"
    );

    let r = call(
        api,
        "POST",
        "/v1/devices/EM-NEW-1/retire?reason=lost",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        refused_as_unauthorised(connect(&rotated, "EM-NEW-1").await),
        "revoked on retirement"
    );
    let r = call(
        api,
        "POST",
        "/v1/devices/EM-NEW-1/credential",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        r.status, 409,
        "a retired device gets no credential: {}",
        r.body
    );
    let r = call(
        api,
        "POST",
        "/v1/devices/NOPE/credential",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let audit: Vec<String> = sqlx::query_scalar("SELECT coalesce(detail::text, '') FROM audit_log")
        .fetch_all(&pool)
        .await
        .expect("audit");
    assert!(
        audit.iter().any(|d| d.contains("issued")),
        "issuing is audited: {audit:?}"
    );
    for pw in [&first, &second] {
        assert!(
            !audit.iter().any(|d| d.contains(pw.expose())),
            "no password in the audit log"
        );
    }
    svc.shut_down().await;
}

/// Signed requests a plain-HTTP receiver took: (path, headers, body).
type Signed = Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap, Vec<u8>)>>>;

async fn signing_receiver() -> (u16, Signed) {
    let seen: Signed = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/{hook}",
        axum::routing::post(
            move |axum::extract::Path(hook): axum::extract::Path<String>,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                kept.lock()
                    .expect("lock")
                    .push((hook, headers, body.to_vec()));
                async { axum::http::StatusCode::OK }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(api::serve(
        listener,
        None,
        app,
        tokio_util::sync::CancellationToken::new(),
    ));
    (port, seen)
}

/// With `alerts.webhook_key_file`, no webhook secret is in the database in
/// clear: one written in plain text before the start is sealed at start,
/// one added through the API is sealed before it is stored, and both still
/// sign their deliveries (Standard Webhooks, checked with a stock library).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn webhook_secrets_are_sealed_at_rest_and_still_sign(pool: PgPool) {
    let certs = Certs::generate("seal");
    let key_file = certs.dir.join("webhook.key");
    std::fs::write(
        &key_file,
        "4f1c0e9b7a3d52e8c6b1a09f7e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1\n",
    )
    .expect("key");
    let broker = Broker::start().expect("broker");
    let (port, seen) = signing_receiver().await;
    let old_secret = "an old secret written in plain text, 32+ bytes";
    // A Standard Webhooks secret (24 random bytes, base64).
    let new_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    two_bracelets(&pool).await;
    sqlx::query("INSERT INTO webhooks (id, url, secret) VALUES (1, $1, $2)")
        .bind(format!("http://127.0.0.1:{port}/old"))
        .bind(old_secret)
        .execute(&pool)
        .await
        .expect("webhook");
    add_user(
        &pool,
        "root-admin",
        api::identity::Role::Admin,
        None,
        "admin password 1",
    )
    .await;
    let mut cfg = config(broker.port, "emtrack-seal");
    cfg.alerts.webhook_key_file = Some(key_file.display().to_string());
    let svc = Running::start_with(pool.clone(), cfg).await;
    let api = svc.svc.api.port();
    let token = login(api, "root-admin", "admin password 1").await;
    let body =
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/new"), "secret": new_secret})
            .to_string();
    let r = call(api, "POST", "/v1/webhooks", Some(&token), Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let rows: Vec<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT secret, secret_sealed FROM webhooks ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(rows.len(), 2);
    for ((plain, sealed), secret) in rows.iter().zip([old_secret, new_secret]) {
        assert!(plain.is_none(), "no secret in clear");
        let sealed = sealed.as_ref().expect("sealed");
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    let dump: Vec<String> = sqlx::query_scalar("SELECT to_jsonb(w)::text FROM webhooks w")
        .fetch_all(&pool)
        .await
        .expect("dump");
    assert!(
        !dump
            .iter()
            .any(|d| d.contains(old_secret) || d.contains(new_secret)),
        "a database read reveals neither"
    );

    strap_opened(broker.port, "dev-a").await;
    wait_until(Duration::from_secs(20), "both webhooks called", || {
        let seen = seen.clone();
        async move {
            let s = seen.lock().expect("lock");
            s.iter().any(|(h, ..)| h == "old") && s.iter().any(|(h, ..)| h == "new")
        }
    })
    .await;
    // Each verified as an integrator would, with a stock Standard Webhooks
    // library: the `whsec_` secret as it is, the other one base64-encoded.
    for (hook, headers, body) in seen.lock().expect("lock").iter() {
        let secret = if hook == "old" {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(old_secret)
        } else {
            new_secret.to_owned()
        };
        standardwebhooks::Webhook::new(&secret)
            .expect("secret")
            .verify(body, headers)
            .unwrap_or_else(|e| panic!("{hook}: {e:?}"));
    }
    svc.shut_down().await;
}
