//! The same seed gives byte-identical world files, messages and ground truth;
//! another seed gives another world.

use device_sim::plan::Rates;
use device_sim::stream::{Scenario, ScenarioConfig};
use device_sim::truth::write_jsonl;
use device_sim::world::{World, WorldConfig};
use std::sync::Arc;

fn run(seed: u64) -> (String, String, Vec<u8>, Vec<u8>) {
    let world = Arc::new(World::generate(WorldConfig {
        seed,
        subjects: 120,
        victim_share: 0.3,
        ..WorldConfig::default()
    }));
    let dir = std::env::temp_dir().join(format!("device-sim-det-{seed}-{}", std::process::id()));
    world.write_dir(&dir).expect("writes the world");
    let zones = std::fs::read_to_string(dir.join("zones.geojson")).expect("zones");
    let world_json = std::fs::read_to_string(dir.join("world.json")).expect("world");
    let _ = std::fs::remove_dir_all(&dir);
    let mut sc = Scenario::new(
        world,
        ScenarioConfig {
            start: "2026-03-01T12:00:00Z".parse().expect("start"),
            span_ms: 30 * 3_600_000,
            rates: Rates {
                curfew_break: 0.2,
                exclusion: 0.2,
                store_forward: 0.3,
                malformed: 0.3,
                ..Rates::default()
            },
            batch: 3,
        },
    );
    let mut messages = Vec::new();
    for m in sc.by_ref() {
        messages.extend_from_slice(&m.at.to_be_bytes());
        messages.extend_from_slice(m.topic.as_bytes());
        messages.extend_from_slice(&m.payload);
    }
    let mut truth = Vec::new();
    write_jsonl(sc.finish(), &mut truth).expect("writes");
    (zones, world_json, messages, truth)
}

#[test]
fn same_seed_same_bytes() {
    let a = run(11);
    let b = run(11);
    assert_eq!(a.0, b.0, "zones.geojson");
    assert_eq!(a.1, b.1, "world.json");
    assert!(a.2 == b.2, "message stream differs");
    assert_eq!(a.3, b.3, "truth.jsonl");
    assert!(
        a.2.len() > 1_000_000 && a.3.len() > 10_000,
        "the run produced little"
    );

    let c = run(12);
    assert_ne!(a.0, c.0);
    assert_ne!(a.3, c.3);
}

/// A subject's place in the world depends on the seed and its id, not on how
/// many subjects there are.
#[test]
fn subjects_do_not_depend_on_fleet_size() {
    let small = World::generate(WorldConfig {
        seed: 5,
        subjects: 10,
        ..WorldConfig::default()
    });
    let large = World::generate(WorldConfig {
        seed: 5,
        subjects: 300,
        ..WorldConfig::default()
    });
    for (a, b) in small.subjects.iter().zip(&large.subjects) {
        assert_eq!((a.home, a.work, &a.rules), (b.home, b.work, &b.rules));
    }
}
