//! Architecture invariant: `geofence` does no I/O and has no async, sqlx or serde
//! dependency. Checked against the manifest so a new dependency fails CI.

#[test]
fn manifest_has_no_io_async_or_serialization_dependency() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("geofence/Cargo.toml is readable");
    let deps: Vec<&str> = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .flat_map(|section| section.lines().skip(1))
        .filter_map(|line| line.split(['=', '.']).next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect();
    assert_eq!(
        deps,
        ["geo", "rstar", "jiff", "rustc-hash"],
        "geofence's dependencies changed; see ARCHITECTURE.md"
    );
    for forbidden in [
        "tokio", "sqlx", "serde", "rumqttc", "axum", "reqwest", "mio",
    ] {
        assert!(
            !deps.contains(&forbidden),
            "{forbidden} must not be a geofence dependency"
        );
    }
}
