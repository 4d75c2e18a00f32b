//! The operators' pack against a real Prometheus (Debian's `prometheus`,
//! which `.ci/run` installs): `promtool` checks the shipped scrape config
//! and runs the alerting rules' unit tests; then a Prometheus scrapes a
//! running emtrack under `device-sim` load (a past day at full speed, then
//! live fixes at real pace), evaluates the shipped rules, and every query of
//! the Grafana dashboard and every rule expression is run against it. A
//! query that errors fails the test, and so does one that returns nothing
//! (every panel has data in this run), a metric name that emtrack does not
//! export, an unhealthy rule, a provoked rule that does not hold, or a rule
//! that signals a fault holding on this healthy node. Rules whose condition
//! is a speed threshold (commit latency, pool use) are run and their values
//! reported, not asserted: how fast this machine is at the
//! moment of the query is not what this test checks (`promtool` tests their
//! logic, firing and quiet).

mod common;

use api::identity::Role;
use common::*;
use device_sim::publish::{Pace, publish};
use device_sim::stream::{Scenario, ScenarioConfig};
use device_sim::testbed::{Broker, free_port};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const DESK_PASSWORD: &str = "desk-password-for-the-test";

/// The rules whose condition this run provokes, and why; every other rule
/// but [`SPEED`]'s must stay quiet on this otherwise healthy node.
const PROVOKED: &[(&str, &str)] = &[
    (
        "EmtrackDeliveryFailures",
        "the webhook's receiver refuses connections",
    ),
    (
        "EmtrackDeadLetters",
        "so its deliveries run out of attempts",
    ),
    (
        "EmtrackIngestLagHigh",
        "the past day arrives as live messages, weeks after its fixes' time",
    ),
];

/// The rules whose condition is a speed threshold, which a loaded or slow
/// machine can cross at the instant of the query: the commit latency's
/// window holds the full-speed past day, and the provoked dead letters keep
/// the pool's connections busy at times.
const SPEED: &[&str] = &["EmtrackCommitSlow", "EmtrackDbPoolSaturated"];

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// `promtool`, or a failure that says how to get it.
fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is missing: apt-get install prometheus (.ci/run installs it)"
    );
    Command::new(name)
}

#[test]
fn promtool_passes_the_scrape_config_and_the_rule_tests() {
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "emtrack-rules.yml"],
        vec!["test", "rules", "emtrack-rules.test.yml"],
    ] {
        let out = tool("promtool")
            .args(&args)
            .current_dir(deploy("prometheus"))
            .output()
            .expect("promtool runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        eprintln!("promtool {}: {}", args.join(" "), text.trim());
    }
}

/// A Prometheus on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates the shipped rules.
    async fn start(target: u16) -> Prometheus {
        let port = free_port().expect("free port");
        let dir = std::env::temp_dir().join(format!("emtrack-prometheus-{port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let rules = deploy("prometheus/emtrack-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: emtrack\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let log = std::fs::File::create(dir.join("log")).expect("log");
        let child = tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port, dir };
        wait_until(
            Duration::from_secs(30),
            "prometheus is ready",
            || async move {
                get(port, "/-/ready".into())
                    .await
                    .is_some_and(|(s, _)| s == 200)
            },
        )
        .await;
        p
    }

    /// Runs an instant query: its result vector, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = get(self.port, path)
            .await
            .ok_or("prometheus does not answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("{status}: {}", v["error"]));
        }
        Ok(match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            // A scalar (e.g. `time()`) is data.
            other => vec![other.clone()],
        })
    }

    /// The loaded rules: (name, expression, health, last error).
    async fn rules(&self) -> Vec<(String, String, String, String)> {
        let (_, body) = get(self.port, "/api/v1/rules".into()).await.expect("rules");
        let v: Value = serde_json::from_str(&body).expect("json");
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                (s("name"), s("query"), s("health"), s("lastError"))
            })
            .collect()
    }
}

async fn get(port: u16, path: String) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || http_get(port, &path))
        .await
        .expect("joined")
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `expr` of the dashboard's panels (rows' panels too), with its
/// panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(deploy("grafana/emtrack-dashboard.json")).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut panels: Vec<Value> = d["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                out.push((p["title"].as_str().unwrap_or("").to_owned(), e.to_owned()));
            }
        }
    }
    out
}

/// The metric names an expression reads (emtrack's and the process's).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("emtrack_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Publishes `sc` at full speed.
async fn past_day(port: u16, sc: &mut Scenario) -> u64 {
    let devices = sc.device_count();
    publish_all(port, sc, devices, "pub-prom-past")
        .await
        .messages
}

/// Publishes live fixes (fix time = now) at real pace for `for_`.
async fn live(port: u16, world: &std::sync::Arc<device_sim::world::World>, for_: Duration) -> u64 {
    let now = jiff::Timestamp::now();
    let mut sc = Scenario::new(world.clone(), ScenarioConfig::busy(now, 1, 1));
    let devices = sc.device_count();
    let mut cfg = full_speed(port, "pub-prom-live");
    cfg.pace = Pace::Speedup(1.0);
    cfg.wall_clock = true;
    cfg.duration = for_;
    publish(&mut sc, devices, &cfg, 0)
        .await
        .expect("publishes")
        .messages
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_dashboard_query_and_rule_runs_on_a_real_prometheus(pool: PgPool) {
    // The dead letters this test provokes on purpose stay out of its output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,alert_service::delivery::webhook=error")
        .with_test_writer()
        .try_init();
    let broker = Broker::start().expect("mosquitto starts");
    let world = world(&pool, 21, 60).await;
    // A receiver that refuses connections: webhook failures to count.
    sqlx::query("INSERT INTO webhooks (id, url, secret) VALUES (1, 'http://127.0.0.1:9/hook', 'whsec-test-secret-0123456789')")
        .execute(&pool)
        .await
        .expect("webhook");
    let mut cfg = config(broker.port, "emtrack-prometheus");
    cfg.alerts.escalate_critical_s = 2;
    cfg.alerts.webhook_backoff_ms = 50;
    cfg.alerts.webhook_backoff_max_s = 1;
    let running = Running::start_with(pool.clone(), cfg).await;
    let prometheus = Prometheus::start(running.svc.http.port()).await;

    let mut sc = scenario(&world, 30, 1);
    let sent = past_day(broker.port, &mut sc).await;
    wait_acked(&running.metrics, sent, Duration::from_secs(120)).await;
    // An officer acknowledges an alert: time to acknowledge.
    let api = running.svc.api.port();
    add_user(&pool, "desk", Role::Duty, None, DESK_PASSWORD).await;
    let desk = login(api, "desk", DESK_PASSWORD).await;
    let open: i64 =
        sqlx::query_scalar("SELECT id FROM alerts WHERE state = 'open' ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .expect("an open alert");
    let r = call(
        api,
        "POST",
        &format!("/v1/alerts/{open}/acknowledge"),
        Some(&desk),
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "acknowledged: {}", r.body);
    let live_sent = live(broker.port, &world, Duration::from_secs(20)).await;
    wait_acked(&running.metrics, sent + live_sent, Duration::from_secs(60)).await;
    // Scraped after the last fix, and every rule evaluated at least once.
    wait_until(
        Duration::from_secs(30),
        "rules evaluated on fresh data",
        || {
            let p = &prometheus;
            async move {
                let fresh = p
                    .query("time() - timestamp(emtrack_messages_acked_total) < 2")
                    .await
                    .is_ok_and(|r| !r.is_empty());
                fresh && p.rules().await.iter().all(|r| r.2 != "unknown")
            }
        },
    )
    .await;

    let exported: BTreeSet<String> = prometheus
        .query("count by (__name__) ({job=\"emtrack\"})")
        .await
        .expect("series names")
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
        .collect();
    let mut problems = Vec::new();
    let (mut with_data, queries) = (0, dashboard_queries());
    for (title, expr) in &queries {
        for m in metric_names(expr) {
            if !exported.contains(&m) {
                problems.push(format!("dashboard \"{title}\": {m} is not exported"));
            }
        }
        match prometheus.query(expr).await {
            Ok(r) if !r.is_empty() => with_data += 1,
            Ok(_) => problems.push(format!("dashboard \"{title}\": no data for {expr}")),
            Err(e) => problems.push(format!("dashboard \"{title}\": {expr} fails: {e}")),
        }
    }
    let rules = prometheus.rules().await;
    // (name, what its expression returned) of each rule whose condition holds.
    let mut holding: Vec<(String, String)> = Vec::new();
    for (name, expr, health, error) in &rules {
        if health != "ok" {
            problems.push(format!("rule {name}: {health} {error}"));
        }
        for m in metric_names(expr) {
            if !exported.contains(&m) {
                problems.push(format!("rule {name}: {m} is not exported"));
            }
        }
        match prometheus.query(expr).await {
            Ok(r) if !r.is_empty() => holding.push((name.clone(), Value::Array(r).to_string())),
            Ok(_) => {}
            Err(e) => problems.push(format!("rule {name}: {expr} fails: {e}")),
        }
    }
    let holds = |rule: &str| holding.iter().any(|(n, _)| n == rule);
    for (rule, why) in PROVOKED {
        if !holds(rule) {
            problems.push(format!("rule {rule} does not hold, though {why}"));
        }
    }
    for (rule, value) in &holding {
        let expected = PROVOKED.iter().any(|(r, _)| r == rule) || SPEED.contains(&rule.as_str());
        if !expected {
            problems.push(format!("rule {rule} holds on a healthy node: {value}"));
        }
    }
    eprintln!(
        "dashboard: {} queries, {with_data} returned data; rules: {} evaluated, all healthy: {}; holding (would fire): {:?}",
        queries.len(),
        rules.len(),
        problems.iter().all(|p| !p.starts_with("rule")),
        holding.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    );
    for (rule, value) in holding.iter().filter(|(r, _)| SPEED.contains(&r.as_str())) {
        eprintln!("speed threshold {rule} holds at this instant: {value}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        rules.len() >= 15,
        "the shipped rules are loaded: {}",
        rules.len()
    );
    running.shut_down().await;
}
