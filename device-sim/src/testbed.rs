//! Test and benchmark fixtures shared by `device-sim` and `ingest`: a
//! Mosquitto started from `deploy/mosquitto/emtrack.conf` on a free loopback
//! port, and the check of observed rule transitions against the ground truth.

use crate::truth::Record;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Mosquitto with the deployed (tuned) configuration. Killed and
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
    /// Starts `mosquitto -c` with the deployed config rewritten to listen on a
    /// free loopback port and persist under a temporary directory; returns
    /// once the port accepts connections (at most 10 s).
    pub fn start() -> Result<Broker, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir =
            std::env::temp_dir().join(format!("emtrack-broker-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let conf = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/mosquitto/emtrack.conf"
        ))
        .map_err(|e| format!("deploy/mosquitto/emtrack.conf: {e}"))?
        .replace(
            "listener 1883 127.0.0.1",
            &format!("listener {port} 127.0.0.1"),
        )
        .replace(
            "persistence_location /var/lib/mosquitto/",
            &format!("persistence_location {}/", dir.display()),
        );
        if !conf.contains(&format!("listener {port} ")) {
            return Err("the deployed config has no `listener 1883 127.0.0.1` line".into());
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).map_err(|e| format!("config: {e}"))?;
        let child = Command::new("mosquitto")
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
