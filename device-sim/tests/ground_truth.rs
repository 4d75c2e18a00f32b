//! The ground truth matches the trajectory, as the geofence engine judges it.
//!
//! The test plays the message stream the way ingest will: decode each payload
//! with `protocol`, refuse what the ground truth says is malformed, flag
//! implausible jumps as suspect, drop duplicate (device, fix time) pairs, feed
//! fixes to the engine in arrival order (victims' phones through
//! `observe_device`), and close a late run after each backlog message
//! (`Engine::judge_message`, as ingest does). Then:
//! - every listed episode appears, within its window, with its `historical` flag;
//! - no episode appears that is not listed;
//! - every malformed message is refused with the listed reason;
//! - valid fix counts per device are exact.

use device_sim::testbed::{Screen, SeenTransition, busy_scenario, check_episodes};
use device_sim::truth::{EpisodeKind, Record};
use geofence::{Engine, Source, SubjectId, Transition};
use jiff::Timestamp;
use protocol::Body;
use std::collections::{HashMap, HashSet};

/// What a verification saw.
struct Stats {
    matched: usize,
    refused: usize,
    late_batches: u64,
}

/// Plays the first `limit` messages (all by default) and checks them against
/// the ground truth; returns the truth for further checks.
fn verify(
    seed: u64,
    subjects: usize,
    hours: i64,
    batch: usize,
    limit: usize,
) -> (Vec<Record>, Stats) {
    let (world, mut stream) = busy_scenario(seed, subjects, hours, batch);
    let mut engine: Engine = world.engine().expect("world loads into the engine");
    let mut out: Vec<Transition> = Vec::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut valid: HashMap<String, u64> = HashMap::new();
    let mut screen = Screen::new(300.0);
    let mut suspects = 0u64;
    let mut late_batches = 0u64;
    let mut sent_events: Vec<(String, &'static str, Timestamp)> = Vec::new();
    let mut heartbeats: HashMap<String, u64> = HashMap::new();
    let ids: Vec<String> = (0..stream.device_count() as u32)
        .map(|i| stream.device_id(i).as_str().to_owned())
        .collect();
    let mut taken = 0;
    while taken < limit {
        let Some(msg) = stream.next() else { break };
        taken += 1;
        let decoded = match protocol::decode(&msg.topic, &msg.payload) {
            Ok(m) => m,
            Err(e) => {
                refused.push((ids[msg.device as usize].clone(), e.reason().to_owned()));
                continue;
            }
        };
        let dev = decoded.uplink.device.as_str().to_owned();
        let fixes = match decoded.uplink.body {
            Body::Fixes(fixes) => fixes,
            Body::Events(events) => {
                sent_events.extend(
                    events
                        .iter()
                        .map(|e| (dev.clone(), e.kind.as_str(), e.time)),
                );
                continue;
            }
            Body::Heartbeats(hbs) => {
                *heartbeats.entry(dev.clone()).or_default() += hbs.len() as u64;
                continue;
            }
        };
        let engine_dev = world.engine_device(&dev).expect("known device");
        let source = match engine.subject_handle(SubjectId(engine_dev.0)) {
            Some(h) => Source::Subject(h),
            None => Source::Watched(engine_dev),
        };
        let judged = screen.fixes(&dev, &fixes);
        *valid.entry(dev.clone()).or_default() += judged.len() as u64;
        suspects += judged.iter().filter(|f| f.suspect).count() as u64;
        // The same per-message judging as ingest's (`Engine::judge_message`).
        if engine.judge_message(source, &judged, &mut out, |_, o| {
            o.expect("judges");
        }) {
            late_batches += 1;
        }
    }
    let truth = stream.finish();

    let seen: Vec<SeenTransition> = out
        .iter()
        .map(|t| SeenTransition {
            subject: t.subject.0,
            rule: t.rule.0,
            zone: t.zone.map(|z| z.0),
            start: t.kind.is_start(),
            at: t.at,
            historical: t.historical,
        })
        .collect();
    let matched = match check_episodes(&truth, &seen) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };

    let mut malformed_expected: Vec<(String, String)> = Vec::new();
    let mut suspects_expected = 0;
    let mut listed_events: Vec<(String, &'static str, Timestamp)> = Vec::new();
    for r in &truth {
        match r {
            Record::Malformed { device, reason, .. } => {
                if *reason == "suspect_jump" {
                    suspects_expected += 1;
                } else {
                    malformed_expected.push((device.clone(), (*reason).to_owned()));
                }
            }
            Record::Device {
                device,
                valid_fixes,
                events,
                heartbeats: hb,
            } => {
                assert_eq!(
                    valid.get(device).copied().unwrap_or(0),
                    *valid_fixes,
                    "valid fixes of {device}"
                );
                assert_eq!(
                    heartbeats.get(device).copied().unwrap_or(0),
                    *hb,
                    "heartbeats of {device}"
                );
                let sent = sent_events.iter().filter(|e| e.0 == *device).count() as u64;
                assert_eq!(sent, *events, "events of {device}");
            }
            Record::Event {
                device, event, t, ..
            } => listed_events.push((device.clone(), *event, *t)),
            _ => {}
        }
    }
    refused.sort();
    malformed_expected.sort();
    assert_eq!(refused, malformed_expected);
    assert_eq!(
        suspects, suspects_expected,
        "every teleport, and only they, is suspect"
    );
    sent_events.sort();
    listed_events.sort();
    assert!(
        sent_events == listed_events,
        "listed events differ from those sent"
    );

    eprintln!(
        "matched {matched} episodes ({historical} historical), {} refused, {suspects} suspect, {late_batches} late batches",
        refused.len(),
        historical = truth
            .iter()
            .filter(|r| matches!(
                r,
                Record::Episode {
                    historical: true,
                    ..
                }
            ))
            .count(),
    );
    let stats = Stats {
        matched,
        refused: refused.len(),
        late_batches,
    };
    (truth, stats)
}

#[test]
fn ground_truth_matches_the_engine() {
    let (truth, stats) = verify(7, 250, 48, 1, usize::MAX);
    let kinds_seen: HashSet<EpisodeKind> = truth
        .iter()
        .filter_map(|r| match r {
            Record::Episode { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    // The scenario must actually exercise what it claims to.
    for k in [
        EpisodeKind::Inclusion,
        EpisodeKind::Exclusion,
        EpisodeKind::Curfew,
        EpisodeKind::Category,
        EpisodeKind::Proximity,
    ] {
        assert!(kinds_seen.contains(&k), "no {k:?} episode in the scenario");
    }
    let historical = truth
        .iter()
        .filter(|r| {
            matches!(
                r,
                Record::Episode {
                    historical: true,
                    ..
                }
            )
        })
        .count();
    assert!(historical > 0, "no historical episode");
    assert!(stats.late_batches > 0);
    assert!(stats.matched >= 100, "only {} episodes", stats.matched);
    assert!(
        stats.refused >= 50,
        "only {} malformed messages",
        stats.refused
    );
    for cause in ["powered_off", "battery_dead", "coverage_gap"] {
        assert!(
            truth
                .iter()
                .any(|r| matches!(r, Record::Silence { cause: c, .. } if *c == cause)),
            "no {cause} silence"
        );
    }
    for event in [
        "strap_opened",
        "battery_low",
        "battery_critical",
        "charger_connected",
        "gps_lost",
    ] {
        assert!(
            truth
                .iter()
                .any(|r| matches!(r, Record::Event { event: e, .. } if *e == event)),
            "no {event} event"
        );
    }
}

/// A run cut short (as by `--fixes` or `--duration`) still writes a truthful
/// file, also when fixes travel in batches: an episode the cut interrupts is
/// marked `cut_short` and has no end, and everything listed was sent.
#[test]
fn ground_truth_of_a_cut_run() {
    const BATCH: usize = 3;
    let (world, stream) = busy_scenario(8, 120, 30, BATCH);
    let times: Vec<i64> = stream.map(|m| m.at).collect();
    let (full, _) = verify(8, 120, 30, BATCH, usize::MAX);
    // A live episode of a device with an exact clock (device time = true
    // time), in the middle of the run; cut one minute after it starts.
    let exact = |subject: u64| world.subjects[subject as usize - 1].skew_ms == 0;
    let mut live: Vec<(i64, u64, u64, Option<u64>)> = full
        .iter()
        .filter_map(|r| match r {
            Record::Episode {
                subject,
                rule,
                zone,
                start,
                historical: false,
                end: Some(_),
                ..
            } if exact(*subject) => Some((start.as_millisecond(), *subject, *rule, *zone)),
            _ => None,
        })
        .collect();
    live.sort();
    let target = live[live.len() / 2];
    let limit = times.partition_point(|&t| t < target.0 + 60_000);
    let (truth, stats) = verify(8, 120, 30, BATCH, limit);
    let found = truth.iter().find_map(|r| match r {
        Record::Episode {
            subject,
            rule,
            zone,
            start,
            cut_short,
            end,
            ..
        } if (start.as_millisecond(), *subject, *rule, *zone) == target => Some((*cut_short, *end)),
        _ => None,
    });
    assert_eq!(
        found,
        Some((true, None)),
        "the interrupted episode {target:?}"
    );
    assert!(
        stats.matched > 5,
        "only {} episodes before the cut",
        stats.matched
    );
}
