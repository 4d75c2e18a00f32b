//! Test and benchmark fixtures shared by `device-sim`, `alerts` and the
//! service's tests: a Mosquitto on a free loopback port, started from
//! `deploy/mosquitto/insecure-loopback-demo.conf` ([`Broker::start`]) or from
//! the deployed, secure `emtrack.conf` ([`Broker::start_secure`]), the screening of fixes as ingest does it before
//! judging, and the check of observed rule transitions against the ground
//! truth.

use crate::stream::{Scenario, ScenarioConfig};
use crate::truth::Record;
use crate::world::{World, WorldConfig};
use geofence::Position;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A private Mosquitto with one of the shipped configurations. Killed and
/// its directory removed on drop.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

impl Broker {
    /// Starts `mosquitto -c` with the insecure loopback demo config (for
    /// tests of other concerns) rewritten to listen on a free loopback port
    /// and persist under a temporary directory; returns once the port
    /// accepts connections (at most 10 s).
    pub fn start() -> Result<Broker, String> {
        Broker::launch(
            "insecure-loopback-demo.conf",
            "listener 1883 127.0.0.1",
            |c, _| Ok(c),
        )
    }

    /// Starts the deployed, secure config (`emtrack.conf`): TLS with
    /// `tls`'s certificate and key, dynamic security initialised with the
    /// admin identity `admin` / `admin_password`, no anonymous access.
    pub fn start_secure(tls: &BrokerTls, admin_password: &str) -> Result<Broker, String> {
        Broker::launch("emtrack.conf", "listener 8883", |conf, dir| {
            let dynsec = dir.join("dynsec.json");
            let init = Command::new("mosquitto_ctrl")
                .args(["dynsec", "init"])
                .arg(&dynsec)
                .args(["admin", admin_password])
                .stdout(Stdio::null())
                .status()
                .map_err(|e| {
                    format!("cannot run mosquitto_ctrl (apt install mosquitto-clients): {e}")
                })?;
            if !init.success() {
                return Err(format!("mosquitto_ctrl dynsec init failed: {init}"));
            }
            // mosquitto drops to its own user: it must read and rewrite it.
            world_writable(&dynsec, 0o666)?;
            let conf = rewrite(
                conf,
                "certfile /etc/mosquitto/certs/emtrack-broker.crt",
                &format!("certfile {}", tls.cert_file.display()),
            )?;
            let conf = rewrite(
                conf,
                "keyfile /etc/mosquitto/certs/emtrack-broker.key",
                &format!("keyfile {}", tls.key_file.display()),
            )?;
            rewrite(
                conf,
                "plugin_opt_config_file /var/lib/mosquitto/emtrack-dynsec.json",
                &format!("plugin_opt_config_file {}", dynsec.display()),
            )
        })
    }

    fn launch(
        file: &str,
        listener: &str,
        finish: impl FnOnce(String, &std::path::Path) -> Result<String, String>,
    ) -> Result<Broker, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir =
            std::env::temp_dir().join(format!("emtrack-broker-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        // Started as root, mosquitto drops to its own user: the folder must
        // be writable by it, or the broker persists nothing.
        world_writable(&dir, 0o777)?;
        let path = format!("{}/../deploy/mosquitto/{file}", env!("CARGO_MANIFEST_DIR"));
        let conf = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let conf = rewrite(conf, listener, &format!("listener {port} 127.0.0.1"))?;
        let conf = rewrite(
            conf,
            "persistence_location /var/lib/mosquitto/",
            &format!("persistence_location {}/", dir.display()),
        )?;
        let conf = finish(conf, &dir)?;
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).map_err(|e| format!("config: {e}"))?;
        // Debian installs it in /usr/sbin, outside a normal user's PATH.
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run mosquitto (apt install mosquitto): {e}"))?;
        let broker = Broker { child, port, dir };
        // Readiness, not a fixed sleep: poll the port for at most 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

/// The broker's TLS certificate and key (PEM files readable by the
/// `mosquitto` user).
#[derive(Clone, Debug)]
pub struct BrokerTls {
    /// Certificate chain.
    pub cert_file: std::path::PathBuf,
    /// Private key.
    pub key_file: std::path::PathBuf,
}

/// `conf` with its line `from` replaced by `to`; an error if it has none.
fn rewrite(conf: String, from: &str, to: &str) -> Result<String, String> {
    if !conf.lines().any(|l| l == from) {
        return Err(format!("the shipped broker config has no `{from}` line"));
    }
    Ok(conf
        .lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Started as root, mosquitto drops to its own user: what it reads or
/// writes must allow it.
fn world_writable(path: &std::path::Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// One rule transition as a backend reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTransition {
    /// Subject id.
    pub subject: u64,
    /// Rule id.
    pub rule: u64,
    /// Zone id (`None` for proximity).
    pub zone: Option<u64>,
    /// Opens an episode (else closes one).
    pub start: bool,
    /// Fix time it happened.
    pub at: Timestamp,
    /// Found among late fixes.
    pub historical: bool,
}

#[derive(Debug, Clone)]
struct Seen {
    start: Timestamp,
    end: Option<Timestamp>,
    historical: bool,
}

/// Checks reported transitions against the ground truth's episodes:
/// every listed episode appears within its window with its `historical` flag
/// (unless `cut_short`), its end too, and nothing unlisted appears. For each
/// (subject, rule, zone) the transitions must come in the order they
/// happened. Returns the number of episodes matched.
pub fn check_episodes(truth: &[Record], seen: &[SeenTransition]) -> Result<usize, String> {
    let mut eps: BTreeMap<(u64, u64, Option<u64>), Vec<Seen>> = BTreeMap::new();
    for t in seen {
        let list = eps.entry((t.subject, t.rule, t.zone)).or_default();
        if t.start {
            list.push(Seen {
                start: t.at,
                end: None,
                historical: t.historical,
            });
        } else {
            let open = list
                .iter_mut()
                .rev()
                .find(|s| s.end.is_none() && s.historical == t.historical)
                .ok_or_else(|| format!("an end without a start: {t:?}"))?;
            open.end = Some(t.at);
        }
    }
    let mut matched = 0;
    for r in truth {
        let Record::Episode {
            subject,
            rule,
            zone,
            start,
            end,
            window_s,
            historical,
            cut_short,
            behaviour,
            ..
        } = r
        else {
            continue;
        };
        let key = (*subject, *rule, *zone);
        let within = |gt: Timestamp, at: Timestamp| {
            let d = (at.as_millisecond() - gt.as_millisecond()) / 1000;
            window_s[0] <= d && d <= window_s[1]
        };
        let list = eps.entry(key).or_default();
        let Some(i) = list.iter().position(|s| within(*start, s.start)) else {
            if *cut_short {
                continue;
            }
            return Err(format!(
                "{behaviour} episode {key:?} starting {start} (historical: {historical}) not reported; saw {list:?}"
            ));
        };
        let s = list.remove(i);
        if s.historical != *historical {
            return Err(format!(
                "{behaviour} {key:?} at {start}: historical {} reported as {}",
                historical, s.historical
            ));
        }
        match (end, s.end) {
            (Some(gt), Some(at)) if !within(*gt, at) => {
                return Err(format!("{behaviour} {key:?}: end {gt} reported at {at}"));
            }
            (Some(gt), None) => {
                return Err(format!(
                    "{behaviour} {key:?}: the end at {gt} was not reported"
                ));
            }
            _ => {}
        }
        matched += 1;
    }
    let unlisted: Vec<_> = eps.iter().filter(|(_, v)| !v.is_empty()).collect();
    if !unlisted.is_empty() {
        return Err(format!("episodes not in the ground truth: {unlisted:?}"));
    }
    Ok(matched)
}

/// Screens a message's fixes the way ingest does before judging them: a
/// (device, fix time) already seen is dropped, and a fix implying a move
/// faster than the limit from the device's last good fix, or with an
/// accuracy radius the engine refuses, is flagged suspect (stored as
/// evidence, never judged).
#[derive(Debug)]
pub struct Screen {
    max_speed_m_s: f64,
    seen: HashSet<(String, i64)>,
    last_good: HashMap<String, (Position, i64)>,
}

impl Screen {
    /// A screen with ingest's speed limit in km/h (`max_speed_kmh`, 300 by default).
    pub fn new(max_speed_kmh: f64) -> Screen {
        Screen {
            max_speed_m_s: max_speed_kmh / 3.6,
            seen: HashSet::new(),
            last_good: HashMap::new(),
        }
    }

    /// The fixes of one message of `device` to judge, in order.
    pub fn fixes(&mut self, device: &str, fixes: &[protocol::Fix]) -> Vec<geofence::Fix> {
        let mut out = Vec::with_capacity(fixes.len());
        for f in fixes {
            let t = f.time.as_millisecond();
            if !self.seen.insert((device.to_owned(), t)) {
                continue;
            }
            // The protocol bounds coordinates: a decoded fix always has a position.
            let Ok(position) = Position::new(f.lon(), f.lat()) else {
                continue;
            };
            let jump = self.last_good.get(device).is_some_and(|(p, gt)| {
                let dt = (t - gt).abs().max(1) as f64 / 1000.0;
                p.distance_m(position) / dt > self.max_speed_m_s
            });
            let suspect = jump || f64::from(f.accuracy_m) > geofence::MAX_ACCURACY_M;
            if !suspect {
                self.last_good.insert(device.to_owned(), (position, t));
            }
            out.push(geofence::Fix {
                time: f.time,
                position,
                accuracy_m: f64::from(f.accuracy_m),
                suspect,
            });
        }
        out
    }
}

/// Where the ground-truth tests' scenarios start: 2026-11-23, midnight in
/// Almaty (2026-11-22T19:00:00Z), checked when compiled.
pub const BUSY_START: Timestamp = Timestamp::constant(1_795_374_000, 0);

/// The ground-truth tests' fleet: `subjects` subjects from `seed`, 40 % of
/// them with a protected victim, playing `hours` of busy days from
/// [`BUSY_START`], `batch` fixes per live message.
pub fn busy_scenario(
    seed: u64,
    subjects: usize,
    hours: i64,
    batch: usize,
) -> (Arc<World>, Scenario) {
    let world = Arc::new(World::generate(WorldConfig {
        seed,
        subjects,
        victim_share: 0.4,
        ..WorldConfig::default()
    }));
    let scenario = Scenario::new(
        world.clone(),
        ScenarioConfig::busy(BUSY_START, hours, batch),
    );
    (world, scenario)
}
