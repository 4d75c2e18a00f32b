//! Architecture invariant: `alerts` is a pure core like `geofence`: no I/O,
//! no async, no database, no broker; time is an argument. Its only
//! dependencies are the two crates whose types are its input (transitions
//! from `geofence`, device events from `protocol`). Checked against the
//! manifest, so a new dependency fails CI.

#[test]
fn the_alert_core_depends_on_geofence_and_protocol_only() {
    let manifest: toml::Table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .expect("alerts/Cargo.toml is readable")
            .parse()
            .expect("alerts/Cargo.toml is TOML");
    let deps: Vec<&str> = manifest["dependencies"]
        .as_table()
        .expect("a [dependencies] table")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        deps,
        ["geofence", "protocol"],
        "the alert core's dependencies changed; its runtime belongs in alert-service (see ARCHITECTURE.md)"
    );
}
