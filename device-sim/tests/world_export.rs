//! The exported world is valid GeoJSON and JSON, consistent with itself, and
//! loads into the geofence engine.

use device_sim::world::{CITY_ZONE_ID, World, WorldConfig};
use serde_json::Value;

#[test]
fn export_is_consistent_and_loads() {
    let world = World::generate(WorldConfig {
        seed: 2,
        subjects: 400,
        ..WorldConfig::default()
    });
    let dir = std::env::temp_dir().join(format!("device-sim-world-{}", std::process::id()));
    world.write_dir(&dir).expect("writes");
    let zones: Value =
        serde_json::from_slice(&std::fs::read(dir.join("zones.geojson")).expect("zones"))
            .expect("JSON");
    let w: Value = serde_json::from_slice(&std::fs::read(dir.join("world.json")).expect("world"))
        .expect("JSON");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(zones["type"], "FeatureCollection");
    let features = zones["features"].as_array().expect("features");
    assert_eq!(features.len(), world.zones().count());
    let mut ids = std::collections::BTreeSet::new();
    for f in features {
        assert_eq!(f["type"], "Feature");
        let id = f["properties"]["id"].as_u64().expect("id");
        assert!(ids.insert(id), "zone {id} twice");
        match f["geometry"]["type"].as_str() {
            Some("Polygon") => {
                // RFC 7946: closed rings of [lon, lat], at least four positions.
                let ring = f["geometry"]["coordinates"][0].as_array().expect("ring");
                assert!(ring.len() >= 4);
                assert_eq!(ring.first(), ring.last(), "ring of zone {id} is not closed");
                for p in ring {
                    let (lon, lat) = (p[0].as_f64().expect("lon"), p[1].as_f64().expect("lat"));
                    assert!(
                        (76.0..78.0).contains(&lon) && (42.5..44.0).contains(&lat),
                        "{lon},{lat}"
                    );
                }
            }
            Some("Point") => assert!(f["properties"]["radius_m"].as_f64().expect("radius") > 0.0),
            other => panic!("unexpected geometry {other:?}"),
        }
    }
    assert!(ids.contains(&CITY_ZONE_ID));

    // Every rule names a zone, category or device that exists.
    let devices: std::collections::BTreeSet<&str> = w["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    let subjects = w["subjects"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 400);
    let mut kinds = std::collections::BTreeSet::new();
    for s in subjects {
        for r in s["rules"].as_array().expect("rules") {
            kinds.insert(r["kind"].as_str().expect("kind").to_owned());
            if let Some(z) = r["zone"].as_u64() {
                assert!(ids.contains(&z), "rule names missing zone {z}");
            }
            if let Some(d) = r["device"].as_str() {
                assert!(devices.contains(d), "rule names missing device {d}");
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["category", "curfew", "proximity", "zone"]
    );
    assert_eq!(w["assignments"].as_array().expect("assignments").len(), 400);
    for d in &devices {
        protocol::DeviceId::parse_any(d).expect("device ids follow the protocol's rule");
    }

    let engine = world.engine().expect("loads into the engine");
    assert_eq!(engine.subject_count(), 400);
}
