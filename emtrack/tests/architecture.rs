//! The architecture ARCHITECTURE.md promises, checked against the build:
//! the edges between the workspace's crates (read from `cargo metadata`),
//! which of them can reach the engine's lock, and what the HTTP surface can
//! see. A change that breaks one of these fails here, with the rule it broke.

use std::collections::{BTreeMap, BTreeSet};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each workspace crate's normal (not dev, not build) dependencies on other
/// workspace crates.
fn workspace_graph() -> Graph {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| members.contains(*n))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

/// Everything `krate` depends on, directly or not.
fn reach(graph: &Graph, krate: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate.to_owned()];
    while let Some(k) = todo.pop() {
        for d in graph.get(&k).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let expected: Graph = [
        ("geofence", &[][..]),
        ("protocol", &[]),
        ("alerts", &["geofence", "protocol"]),
        ("bus", &["geofence", "protocol"]),
        ("store", &[]),
        ("link", &[]),
        ("identities", &["link", "protocol"]),
        ("reference", &["bus", "geofence", "protocol", "store"]),
        (
            "ingest",
            &["bus", "geofence", "link", "protocol", "reference", "store"],
        ),
        (
            "alert-service",
            &["alerts", "bus", "geofence", "link", "protocol", "store"],
        ),
        (
            "api",
            &[
                "alert-service",
                "alerts",
                "identities",
                "link",
                "protocol",
                "store",
            ],
        ),
        (
            "emtrack",
            &[
                "alert-service",
                "api",
                "bus",
                "identities",
                "ingest",
                "link",
                "protocol",
                "reference",
                "store",
            ],
        ),
        ("device-sim", &["geofence", "link", "protocol"]),
        ("benches", &["geofence"]),
    ]
    .into_iter()
    .map(|(k, ds)| (k.to_owned(), ds.iter().map(|d| (*d).to_owned()).collect()))
    .collect();
    let graph = workspace_graph();
    for (krate, deps) in &expected {
        assert_eq!(
            graph.get(krate),
            Some(deps),
            "{krate}'s workspace dependencies changed: update the crate map in ARCHITECTURE.md \
             and this test together, or move the code to the crate that owns it"
        );
    }
    assert_eq!(
        graph.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "a crate was added or removed: give it its place in ARCHITECTURE.md and here"
    );
}

#[test]
fn the_alert_service_never_reaches_ingest_or_the_engine() {
    let graph = workspace_graph();
    let reached = reach(&graph, "alert-service");
    for forbidden in ["ingest", "reference", "api", "emtrack"] {
        assert!(
            !reached.contains(forbidden),
            "alert-service reaches {forbidden}: what it needs must travel on the bus"
        );
    }
    let reached = reach(&graph, "ingest");
    for forbidden in ["alert-service", "alerts", "api", "emtrack"] {
        assert!(
            !reached.contains(forbidden),
            "ingest reaches {forbidden}: ingest knows nothing of alerts but the bus"
        );
    }
}

#[test]
fn http_sees_only_handles() {
    let graph = workspace_graph();
    let reached = reach(&graph, "api");
    for forbidden in ["ingest", "reference", "emtrack"] {
        assert!(
            !reached.contains(forbidden),
            "api reaches {forbidden}: the HTTP surface sees handles (AlertHandle, probes, the pool), \
             not the pipeline or the engine"
        );
    }
}

/// The engine lives behind `reference::SharedCore`. Only `reference`
/// (applying changes) and `ingest` (checking, judging, rebuilding) may lock
/// it; the glue passes it from one to the other and never locks it.
#[test]
fn only_reference_and_ingest_lock_the_engine() {
    let graph = workspace_graph();
    let users: BTreeSet<&str> = graph
        .iter()
        .filter(|(_, deps)| deps.contains("reference"))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["emtrack", "ingest"]),
        "a new crate can reach the engine's lock"
    );
    let glue = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    for entry in std::fs::read_dir(glue).expect("emtrack/src") {
        let path = entry.expect("entry").path();
        // Whitespace removed, so that a call split over lines is found too.
        let text: String = std::fs::read_to_string(&path)
            .expect("source")
            .split_whitespace()
            .collect();
        for call in [
            "core.lock(",
            "Core::lock(",
            ").lock().engine",
            ").lock().registry",
        ] {
            assert!(
                !text.contains(call),
                "{} locks the engine ({call}): the glue passes the core on, never locks it",
                path.display()
            );
        }
    }
}
