//! `device-sim`: command-line front end. Parses flags, then calls the library.

use clap::{Args, Parser, Subcommand, ValueEnum};
use device_sim::plan::Rates;
use device_sim::publish::{Pace, PublishConfig, Sink, publish};
use device_sim::stream::{Scenario, ScenarioConfig};
use device_sim::truth::write_jsonl;
use device_sim::world::{World, WorldConfig};
use jiff::Timestamp;
use rumqttc::QoS;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Simulated ankle bracelets with ground truth, and emtrack's load generator.
///
/// The same --seed (and flags) always gives byte-identical world files,
/// messages and ground truth.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export the world: zones.geojson (RFC 7946; circles are Points with a
    /// radius_m property) and world.json (officers, subjects with rules,
    /// devices, assignments, victims).
    World {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        world: WorldArgs,
    },
    /// Generate the scenario without a broker: world files, messages.jsonl
    /// (send time, topic, payload in hex) and truth.jsonl.
    Gen {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Skip messages.jsonl (it is large: ~200 bytes a message).
        #[arg(long)]
        no_messages: bool,
        #[command(flatten)]
        world: WorldArgs,
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
    /// Publish the scenario to an MQTT broker and write the ground truth of
    /// everything sent. Prints a progress line every few seconds and the
    /// achieved rates and ack counts at the end.
    Run {
        #[command(flatten)]
        world: WorldArgs,
        #[command(flatten)]
        scenario: ScenarioArgs,
        #[command(flatten)]
        mqtt: MqttArgs,
        /// Where to write the ground truth (JSON lines).
        #[arg(long, default_value = "truth.jsonl")]
        truth: PathBuf,
    },
    /// Alert latency probe: strap-opened events for the last --count
    /// bracelets of the world, stamped with the wall clock, at --rate per
    /// second for --secs; times their alerts on the officer and duty topics
    /// and prints p50/p99/max.
    Probe {
        #[command(flatten)]
        world: WorldArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Events per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long to publish.
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
        /// Probe bracelets (the world's last subjects).
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// MQTT client id.
        #[arg(long, default_value = "device-sim-probe")]
        client_id: String,
    },
    /// A null subscriber: subscribe to every device topic and count messages
    /// until --expect arrived or nothing came for --idle-secs.
    Sink {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Stop once this many messages arrived.
        #[arg(long)]
        expect: Option<u64>,
        /// Stop after this long without a message (after the first).
        #[arg(long, default_value_t = 5.0)]
        idle_secs: f64,
        /// Give up after this long in all.
        #[arg(long, default_value_t = 600.0)]
        max_secs: f64,
        /// MQTT client id.
        #[arg(long, default_value = "device-sim-sink")]
        client_id: String,
    },
}

#[derive(Args, Debug)]
struct WorldArgs {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of subjects (one bracelet each).
    #[arg(long, default_value_t = 1_000)]
    subjects: usize,
    /// Share of subjects with a protected victim (an exclusion zone around the
    /// victim's home, and a proximity rule around the victim's OwnTracks phone).
    #[arg(long, default_value_t = 0.15)]
    victim_share: f64,
    /// Share of subjects barred from schools (a fifth of them also from playgrounds).
    #[arg(long, default_value_t = 0.2)]
    category_share: f64,
    /// Share of subjects with an extra personal exclusion zone.
    #[arg(long, default_value_t = 0.3)]
    extra_zone_share: f64,
    /// Share of bracelets sending emtrack JSON instead of binary frames.
    #[arg(long, default_value_t = 0.1)]
    json_share: f64,
    /// Share of bracelets whose clock is 5–120 s off.
    #[arg(long, default_value_t = 0.05)]
    skew_share: f64,
}

impl WorldArgs {
    fn build(&self) -> Result<World, String> {
        for (name, v) in [
            ("--victim-share", self.victim_share),
            ("--category-share", self.category_share),
            ("--extra-zone-share", self.extra_zone_share),
            ("--json-share", self.json_share),
            ("--skew-share", self.skew_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must lie in [0, 1], not {v}"));
            }
        }
        Ok(World::generate(WorldConfig {
            seed: self.seed,
            subjects: self.subjects,
            victim_share: self.victim_share,
            category_share: self.category_share,
            extra_zone_share: self.extra_zone_share,
            json_share: self.json_share,
            skew_share: self.skew_share,
        }))
    }
}

#[derive(Args, Debug)]
struct ScenarioArgs {
    /// Simulated start: an RFC 3339 instant, or `now`. `run` defaults to
    /// `now` (live, current data, at real pace unless a pace is given);
    /// `gen` to 2026-11-23T00:00:00+05:00, fixed so that its output is
    /// reproducible.
    #[arg(long)]
    start: Option<String>,
    /// Simulated hours.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Fixes per message for live uploads (1–1024); store-and-forward backlogs
    /// are always batched.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Per subject-day: leave home during curfew for 20–60 minutes.
    #[arg(long, default_value_t = Rates::default().curfew_break)]
    curfew_break_rate: f64,
    /// Per subject-day: step outside home for under a minute during curfew (must not count).
    #[arg(long, default_value_t = Rates::default().short_step)]
    short_step_rate: f64,
    /// Per subject-day: enter a personal exclusion zone or a barred school/playground.
    #[arg(long, default_value_t = Rates::default().exclusion)]
    exclusion_rate: f64,
    /// Per subject-day: drive out of the city for 30–60 minutes.
    #[arg(long, default_value_t = Rates::default().leave_city)]
    leave_city_rate: f64,
    /// Per subject-day, subjects with a victim: approach the victim's phone.
    #[arg(long, default_value_t = Rates::default().proximity)]
    proximity_rate: f64,
    /// Per subject-day: strap or case tamper.
    #[arg(long, default_value_t = Rates::default().tamper)]
    tamper_rate: f64,
    /// Per subject-day: skip charging (battery low, critical, dead, recharged at dawn).
    #[arg(long, default_value_t = Rates::default().battery_drain)]
    battery_drain_rate: f64,
    /// Per subject-day: power off for 40–120 minutes.
    #[arg(long, default_value_t = Rates::default().silence)]
    silence_rate: f64,
    /// Per subject-day: indoor GPS loss for 20–40 minutes while moving.
    #[arg(long, default_value_t = Rates::default().gps_loss)]
    gps_loss_rate: f64,
    /// Per subject-day: coverage gap, then one late store-and-forward upload.
    #[arg(long, default_value_t = Rates::default().store_forward)]
    store_forward_rate: f64,
    /// Per subject-day: send 1–3 malformed or hostile messages (bad CRC, wrong
    /// device, NaN, out-of-range latitude, truncated, unknown version, huge
    /// batch, teleport jump).
    #[arg(long, default_value_t = Rates::default().malformed)]
    malformed_rate: f64,
}

/// `gen`'s simulated start when none is given: fixed, for reproducible output.
const GEN_START: &str = "2026-11-23T00:00:00+05:00";

impl ScenarioArgs {
    /// True if the scenario starts at the wall clock's now.
    fn starts_now(&self, default: &str) -> bool {
        self.start.as_deref().unwrap_or(default) == "now"
    }

    fn build(&self, default_start: &str) -> Result<ScenarioConfig, String> {
        let start = self.start.as_deref().unwrap_or(default_start);
        let start = if start == "now" {
            let now = Timestamp::now().as_millisecond();
            Timestamp::from_millisecond(now - now.rem_euclid(1000)).map_err(|e| e.to_string())?
        } else {
            start.parse::<Timestamp>().map_err(|e| {
                format!("--start {start:?} is not an RFC 3339 instant or `now`: {e}")
            })?
        };
        if !(self.hours > 0.0 && self.hours <= 24.0 * 366.0) {
            return Err(format!("--hours must lie in (0, 8784], not {}", self.hours));
        }
        if !(1..=protocol::MAX_BATCH).contains(&self.batch) {
            return Err(format!(
                "--batch must lie in 1..={}, not {}",
                protocol::MAX_BATCH,
                self.batch
            ));
        }
        let rates = Rates {
            curfew_break: self.curfew_break_rate,
            short_step: self.short_step_rate,
            exclusion: self.exclusion_rate,
            leave_city: self.leave_city_rate,
            proximity: self.proximity_rate,
            tamper: self.tamper_rate,
            battery_drain: self.battery_drain_rate,
            silence: self.silence_rate,
            gps_loss: self.gps_loss_rate,
            store_forward: self.store_forward_rate,
            malformed: self.malformed_rate,
        };
        let movement = rates.curfew_break
            + rates.short_step
            + rates.exclusion
            + rates.leave_city
            + rates.proximity;
        if movement > 1.0 {
            return Err(format!(
                "movement behaviour rates add up to {movement}; at most one a day, so they must add up to 1 or less"
            ));
        }
        for v in [
            rates.curfew_break,
            rates.short_step,
            rates.exclusion,
            rates.leave_city,
            rates.proximity,
            rates.tamper,
            rates.battery_drain,
            rates.silence,
            rates.gps_loss,
            rates.store_forward,
            rates.malformed,
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("rates are probabilities in [0, 1]; got {v}"));
            }
        }
        Ok(ScenarioConfig {
            start,
            span_ms: (self.hours * 3_600_000.0) as i64,
            rates,
            batch: self.batch,
        })
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QosArg {
    /// At most once.
    #[value(name = "0")]
    Zero,
    /// At least once.
    #[value(name = "1")]
    One,
}

impl From<QosArg> for QoS {
    fn from(q: QosArg) -> QoS {
        match q {
            QosArg::Zero => QoS::AtMostOnce,
            QosArg::One => QoS::AtLeastOnce,
        }
    }
}

#[derive(Args, Debug)]
struct BrokerArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// QoS of publishes (run) or of the subscription (sink).
    #[arg(long, value_enum, default_value_t = QosArg::One)]
    qos: QosArg,
}

#[derive(Args, Debug)]
struct MqttArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// MQTT connections shared by all devices (device i uses connection i mod N).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// One MQTT connection per device (realism at small N).
    #[arg(long)]
    conn_per_device: bool,
    /// Client ids are `{prefix}-{n}`.
    #[arg(long, default_value = "device-sim")]
    client_id_prefix: String,
    /// MQTT over TLS, verifying the broker against this PEM CA bundle.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Each device's broker credential, as `emtrack device enrol --out`
    /// writes them (`<device id> <password>` lines): every device then
    /// connects on its own, as itself.
    #[arg(long)]
    credentials: Option<std::path::PathBuf>,
    /// Unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Pace: this many fixes per second overall.
    #[arg(long, group = "pace")]
    rate: Option<f64>,
    /// Pace: simulated time runs this many times faster than wall time
    /// (1 = real time; 1440 = a day in a minute). The default pace is 60.
    #[arg(long, group = "pace")]
    speedup: Option<f64>,
    /// Pace: as fast as the broker accepts.
    #[arg(long, group = "pace")]
    max: bool,
    /// Stop after this many wall-clock seconds.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Stop after this many valid fixes.
    #[arg(long)]
    fixes: Option<u64>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    progress_secs: f64,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn write_truth(path: &std::path::Path, scenario: Scenario) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    write_jsonl(scenario.finish(), &mut f)?;
    f.flush()
}

fn run() -> Result<(), String> {
    match Cli::parse().command {
        Command::World { out, world } => world_cmd(out, world),
        Command::Gen {
            out,
            no_messages,
            world,
            scenario,
        } => gen_cmd(out, no_messages, world, scenario),
        Command::Run {
            world,
            scenario,
            mqtt,
            truth,
        } => run_cmd(world, scenario, mqtt, truth),
        Command::Probe {
            world,
            broker,
            rate,
            secs,
            count,
            client_id,
        } => probe_cmd(world, broker, rate, secs, count, client_id),
        Command::Sink {
            broker,
            expect,
            idle_secs,
            max_secs,
            client_id,
        } => sink_cmd(broker, expect, idle_secs, max_secs, client_id),
    }
}

/// The TLS trust and device credentials for a secured broker, if given.
#[allow(clippy::type_complexity)]
fn secured(
    mqtt: &MqttArgs,
) -> Result<
    (
        Option<Arc<rustls::ClientConfig>>,
        Option<HashMap<String, link::Secret>>,
    ),
    String,
> {
    let tls = match &mqtt.ca_file {
        Some(ca) => Some(link::tls::client_config(Some(ca)).map_err(|e| e.to_string())?),
        None => None,
    };
    let credentials = match &mqtt.credentials {
        Some(path) => Some(read_credentials(path)?),
        None => None,
    };
    Ok((tls, credentials))
}

/// `<id> <password>` lines (see `emtrack device enrol --out`).
fn read_credentials(path: &std::path::Path) -> Result<HashMap<String, link::Secret>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (id, password) = line.split_once(' ').ok_or_else(|| {
            format!(
                "{}:{}: expected `<device id> <password>`",
                path.display(),
                n + 1
            )
        })?;
        out.insert(id.to_owned(), link::Secret::new(password.trim_end()));
    }
    Ok(out)
}

/// Each device's identity, by device index; every device needs one.
fn identities_of(
    sc: &Scenario,
    creds: &HashMap<String, link::Secret>,
) -> Result<Vec<(String, link::Secret)>, String> {
    (0..sc.device_count() as u32)
        .map(|i| {
            let id = sc.device_id(i).as_str().to_owned();
            let password = creds
                .get(&id)
                .ok_or_else(|| format!("no credential for device {id} in --credentials"))?;
            Ok((id, password.clone()))
        })
        .collect()
}

/// `device-sim world`: the world, exported.
fn world_cmd(out: PathBuf, world: WorldArgs) -> Result<(), String> {
    let w = world.build()?;
    w.write_dir(&out)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!(
        "wrote {} zones, {} subjects, {} victims, {} officers to {}",
        w.zones().count(),
        w.subjects.len(),
        w.victims.len(),
        w.officers.len(),
        out.display()
    );
    Ok(())
}

/// `device-sim gen`: the world, the messages and the ground truth, to files.
fn gen_cmd(
    out: PathBuf,
    no_messages: bool,
    world: WorldArgs,
    scenario: ScenarioArgs,
) -> Result<(), String> {
    let w = Arc::new(world.build()?);
    let cfg = scenario.build(GEN_START)?;
    let io = |e: std::io::Error| format!("cannot write to {}: {e}", out.display());
    w.write_dir(&out).map_err(io)?;
    let mut sc = Scenario::new(w, cfg);
    let mut msgs = (!no_messages)
        .then(|| std::fs::File::create(out.join("messages.jsonl")).map(std::io::BufWriter::new))
        .transpose()
        .map_err(io)?;
    let mut n = 0u64;
    for m in sc.by_ref() {
        n += 1;
        if let Some(f) = &mut msgs {
            let hex: String = m.payload.iter().map(|b| format!("{b:02x}")).collect();
            let at = Timestamp::from_millisecond(m.at).unwrap_or(Timestamp::UNIX_EPOCH);
            writeln!(
                f,
                r#"{{"at":"{at:.3}","topic":"{}","payload_hex":"{hex}"}}"#,
                m.topic
            )
            .map_err(io)?;
        }
    }
    if let Some(mut f) = msgs {
        f.flush().map_err(io)?;
    }
    write_truth(&out.join("truth.jsonl"), sc).map_err(io)?;
    println!(
        "wrote {n} messages and the ground truth to {}",
        out.display()
    );
    Ok(())
}

/// `device-sim run`: the scenario published to a broker, then its ground truth.
fn run_cmd(
    world: WorldArgs,
    scenario: ScenarioArgs,
    mqtt: MqttArgs,
    truth: PathBuf,
) -> Result<(), String> {
    let w = Arc::new(world.build()?);
    let scenario_now = scenario.starts_now("now");
    let cfg = scenario.build("now")?;
    let pace = match (mqtt.rate, mqtt.speedup, mqtt.max) {
        (Some(r), _, _) if r > 0.0 => Pace::Rate(r),
        (_, Some(x), _) if x > 0.0 => Pace::Speedup(x),
        (None, None, true) => Pace::Max,
        // Like real bracelets: the simulated clock is the wall clock.
        (None, None, false) => Pace::Speedup(1.0),
        _ => return Err("--rate and --speedup must be positive".into()),
    };
    if scenario_now && !matches!(pace, Pace::Speedup(x) if x <= 1.0) {
        return Err(
            "starting now, any pace faster than real time dates fixes ahead of the clock, \
             and a backend refuses them (emtrack: future_timestamp): drop the pace flag for \
             real time, or give a --start in the past (e.g. 24 hours ago with --speedup 1440)"
                .into(),
        );
    }
    for (name, v) in [
        ("--duration", mqtt.duration),
        ("--progress-secs", mqtt.progress_secs),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 1e9) {
            return Err(format!(
                "{name} must be a positive number of seconds, not {v}"
            ));
        }
    }
    let (tls, credentials) = secured(&mqtt)?;
    let mut pcfg = PublishConfig {
        host: mqtt.broker.host,
        port: mqtt.broker.port,
        qos: mqtt.broker.qos.into(),
        connections: mqtt.connections,
        conn_per_device: mqtt.conn_per_device,
        tls,
        identities: None,
        client_id_prefix: mqtt.client_id_prefix,
        pace,
        duration: Duration::from_secs_f64(mqtt.duration),
        max_fixes: mqtt.fixes,
        progress_every: Duration::from_secs_f64(mqtt.progress_secs.max(0.1)),
        inflight: mqtt.inflight,
        wall_clock: scenario_now,
    };
    let start_ms = cfg.start.as_millisecond();
    let mut sc = Scenario::new(w, cfg);
    let devices = sc.device_count();
    if let Some(creds) = credentials {
        pcfg.identities = Some(Arc::new(identities_of(&sc, &creds)?));
    }
    let connections = if pcfg.conn_per_device || pcfg.identities.is_some() {
        devices
    } else {
        pcfg.connections.clamp(1, devices.max(1))
    };
    println!(
        "device-sim: {devices} devices, pace {pace:?}, QoS {:?}, {connections} connection(s)",
        pcfg.qos
    );
    let rt = runtime()?;
    let report = rt
        .block_on(publish(&mut sc, devices, &pcfg, start_ms))
        .map_err(|e| e.to_string())?;
    println!("{report}");
    write_truth(&truth, sc).map_err(|e| format!("cannot write {}: {e}", truth.display()))?;
    println!("ground truth: {}", truth.display());
    if pcfg.qos == QoS::AtLeastOnce && report.acked < report.messages {
        return Err(format!(
            "{} of {} QoS 1 publishes were never acknowledged",
            report.messages - report.acked,
            report.messages
        ));
    }
    Ok(())
}

/// `device-sim probe`: alert latency, strap-opened events to their alerts.
fn probe_cmd(
    world: WorldArgs,
    broker: BrokerArgs,
    rate: f64,
    secs: f64,
    count: usize,
    client_id: String,
) -> Result<(), String> {
    let w = world.build()?;
    let devices: Vec<(String, u64)> = w
        .subjects
        .iter()
        .rev()
        .filter(|s| !s.device.starts_with("ot:"))
        .take(count)
        .map(|s| (s.device.clone(), s.id))
        .collect();
    let rt = runtime()?;
    let r = rt.block_on(device_sim::probe::run(
        &broker.host,
        broker.port,
        &client_id,
        &devices,
        rate,
        secs,
        Duration::from_secs(10),
    ))?;
    let q = |x| r.quantile(x).map_or("-".into(), |v| v.to_string());
    println!(
        "probe: sent {} strap-opened events, received {} alerts; latency ms p50 {} p99 {} max {}",
        r.sent,
        r.received,
        q(0.5),
        q(0.99),
        q(1.0)
    );
    Ok(())
}

/// `device-sim sink`: a null subscriber that counts.
fn sink_cmd(
    broker: BrokerArgs,
    expect: Option<u64>,
    idle_secs: f64,
    max_secs: f64,
    client_id: String,
) -> Result<(), String> {
    let BrokerArgs { host, port, qos } = broker;
    let rt = runtime()?;
    rt.block_on(async {
        let sink = Sink::start(&host, port, qos.into(), &client_id, false)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "sink: subscribed to {:?} at {host}:{port}",
            protocol::SUBSCRIPTIONS
        );
        let start = std::time::Instant::now();
        // Wait for the first message, then until idle or expected.
        let first = tokio::time::timeout(Duration::from_secs_f64(max_secs), async {
            while sink.received() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let t0 = std::time::Instant::now();
        let n = if first.is_ok() {
            tokio::time::timeout(
                Duration::from_secs_f64(max_secs).saturating_sub(start.elapsed()),
                sink.wait_for(expect, Duration::from_secs_f64(idle_secs)),
            )
            .await
            .unwrap_or_else(|_| sink.received())
        } else {
            0
        };
        let active = t0.elapsed().as_secs_f64()
            - if expect.is_some_and(|e| n >= e) {
                0.0
            } else {
                idle_secs
            };
        println!(
            "sink: received {n} messages, {} payload bytes, {:.0} msg/s while active",
            sink.bytes(),
            n as f64 / active.max(1e-3)
        );
        sink.stop().await;
        Ok::<(), String>(())
    })?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
