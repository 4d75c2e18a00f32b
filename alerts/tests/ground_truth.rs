//! A device-sim scenario, judged by the engine and routed into alerts, gives
//! exactly the alerts its ground truth implies, each once:
//! - one alert per violation episode, of the right type, subject, zone (or
//!   rule) and start, resolved exactly when the episode ended;
//! - one tamper alert per strap or case opening, left open (a note is needed);
//! - one `no_communication` alert per silence of a bracelet, resolved when it
//!   spoke again.
//!
//! Messages are played in stream order, as ingest plays them; the silence
//! wheel runs on the messages' send times.

use alerts::{
    AlertBook, AlertState, AlertType, DeviceEvent, Input, Policy, Router, SilenceEvent,
    SilenceWheel,
};
use device_sim::testbed::{BUSY_START, Screen, busy_scenario};
use device_sim::truth::{EpisodeKind, Record};
use geofence::{Source, SubjectId};
use protocol::Body;

/// Bracelets send a fix a minute, and a heartbeat every 5 minutes while they
/// have no GPS (indoors); silent past 10 minutes is `no_communication`.
const ALLOWANCE_S: u32 = 600;

#[test]
fn a_scenario_gives_exactly_the_alerts_its_ground_truth_implies() {
    let (world, mut stream) = busy_scenario(31, 150, 48, 1);
    let start = BUSY_START;
    let mut engine = world.engine().expect("engine");
    let mut router = Router::new(AlertBook::new(Policy::default(), 0));
    let mut wheel = SilenceWheel::new(4_096, (start.as_millisecond() / 1000) as u64);
    let devices = stream.device_count() as u32;
    let ids: Vec<String> = (0..devices)
        .map(|i| stream.device_id(i).as_str().to_owned())
        .collect();
    let subject_of: Vec<Option<u64>> = ids
        .iter()
        .map(|d| {
            let e = world.engine_device(d)?;
            engine.subject_handle(SubjectId(e.0)).map(|_| e.0)
        })
        .collect();
    for (i, s) in subject_of.iter().enumerate() {
        if s.is_some() {
            wheel.watch(
                i as u32,
                ALLOWANCE_S,
                (start.as_millisecond() / 1000) as u64,
            );
        }
    }
    let mut out = Vec::new();
    let mut silences = Vec::new();
    let mut screen = Screen::new(300.0);
    let mut last_at = start.as_millisecond();
    for msg in stream.by_ref() {
        let now = msg.at;
        last_at = now;
        silences.clear();
        wheel.poll((now / 1000) as u64, &mut silences);
        for e in &silences {
            if let SilenceEvent::NoCommunication {
                device,
                last_seen_s,
                ..
            } = *e
                && let Some(subject) = subject_of[device as usize]
            {
                router.handle(
                    Input::Silent {
                        subject,
                        last_seen_ms: last_seen_s as i64 * 1000,
                    },
                    now,
                );
            }
        }
        let Ok(decoded) = protocol::decode(&msg.topic, &msg.payload) else {
            continue;
        };
        let subject = subject_of[msg.device as usize];
        if let Some(s) = subject
            && let Some(SilenceEvent::BackOnline { .. }) =
                wheel.seen(msg.device, (now / 1000) as u64)
        {
            router.handle(Input::BackOnline { subject: s }, now);
        }
        match decoded.uplink.body {
            Body::Fixes(fixes) => {
                let dev = world
                    .engine_device(decoded.uplink.device.as_str())
                    .expect("known device");
                let source = match engine.subject_handle(SubjectId(dev.0)) {
                    Some(h) => Source::Subject(h),
                    None => Source::Watched(dev),
                };
                out.clear();
                let judged = screen.fixes(decoded.uplink.device.as_str(), &fixes);
                // The same per-message judging as ingest's.
                engine.judge_message(source, &judged, &mut out, |_, o| {
                    o.expect("judges");
                });
                for t in &out {
                    router.handle(Input::violation(t), now);
                }
            }
            Body::Events(events) => {
                let Some(s) = subject else { continue };
                for e in events {
                    let Some(event) = DeviceEvent::of(e.kind) else {
                        continue;
                    };
                    router.handle(
                        Input::Event {
                            subject: s,
                            event,
                            at_ms: e.time.as_millisecond(),
                            historical: false,
                        },
                        now,
                    );
                }
            }
            Body::Heartbeats(_) => {}
        }
    }
    let truth = stream.finish();
    let book = router.book();

    // Violations: one alert per episode.
    let mut alerts: Vec<_> = book
        .alerts()
        .filter(|a| {
            matches!(
                a.key.kind,
                AlertType::ExclusionZoneEntered
                    | AlertType::InclusionZoneLeft
                    | AlertType::CurfewViolation
                    | AlertType::VictimProximity
            )
        })
        .cloned()
        .collect();
    let mut matched = 0;
    let mut optional = 0;
    for r in &truth {
        let Record::Episode {
            subject,
            rule,
            zone,
            kind,
            start,
            end,
            window_s,
            historical,
            cut_short,
            ..
        } = r
        else {
            continue;
        };
        let want = match kind {
            EpisodeKind::Exclusion | EpisodeKind::Category => AlertType::ExclusionZoneEntered,
            EpisodeKind::Inclusion => AlertType::InclusionZoneLeft,
            EpisodeKind::Curfew => AlertType::CurfewViolation,
            EpisodeKind::Proximity => AlertType::VictimProximity,
        };
        let scope = zone.unwrap_or(*rule);
        let pos = alerts.iter().position(|a| {
            let d = (a.key.episode_ms - start.as_millisecond()) / 1000;
            a.key.subject == *subject
                && a.key.kind == want
                && a.key.scope == scope
                && window_s[0] <= d
                && d <= window_s[1]
        });
        match pos {
            Some(i) => {
                let a = alerts.swap_remove(i);
                assert_eq!(a.historical, *historical, "{a:?}");
                assert_eq!(
                    a.state == AlertState::Resolved,
                    end.is_some(),
                    "resolved exactly when the episode ended: {a:?} vs {r:?}"
                );
                assert_eq!(a.repeats, 0, "raised once: {a:?}");
                matched += 1;
            }
            None if *cut_short => optional += 1,
            None => panic!("no alert for {r:?}"),
        }
    }
    assert!(
        alerts.len() <= optional,
        "alerts without an episode: {alerts:?}"
    );

    // Tamper: one open alert per opening.
    let openings = |name: &str| {
        truth
            .iter()
            .filter(|r| matches!(r, Record::Event { event, .. } if *event == name))
            .count()
    };
    let strap = book.ids_of(AlertType::StrapTamper);
    let case = book.ids_of(AlertType::CaseTamper);
    assert_eq!(strap.len(), openings("strap_opened"));
    assert_eq!(case.len(), openings("case_opened"));
    for id in strap.iter().chain(&case) {
        assert_eq!(book.get(*id).map(|a| a.state), Some(AlertState::Open));
    }

    // Silences of bracelets: one no_communication alert each, resolved when
    // the device spoke again.
    let end_ms = last_at;
    let expected: Vec<(String, bool)> = truth
        .iter()
        .filter_map(|r| match r {
            Record::Silence {
                device, from, to, ..
            } if device.starts_with("EM-") => {
                let until = to.map_or(end_ms, |t| t.as_millisecond());
                (until - from.as_millisecond() > i64::from(ALLOWANCE_S) * 1000 + 60_000)
                    .then(|| (device.clone(), to.is_some()))
            }
            _ => None,
        })
        .collect();
    let silent = book.ids_of(AlertType::NoCommunication);
    assert_eq!(silent.len(), expected.len(), "one alert per silence");
    let resolved = silent
        .iter()
        .filter(|id| book.get(**id).map(|a| a.state) == Some(AlertState::Resolved))
        .count();
    assert_eq!(resolved, expected.iter().filter(|e| e.1).count());

    eprintln!(
        "{matched} violation alerts ({optional} cut-short episodes optional), {} strap + {} case tamper, {} no_communication ({resolved} back online), {} alerts in all",
        strap.len(),
        case.len(),
        silent.len(),
        book.alerts().count()
    );
    assert!(matched >= 50, "only {matched}");
    assert!(!silent.is_empty() && !strap.is_empty());
}
