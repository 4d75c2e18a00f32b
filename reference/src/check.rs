//! Orders checked before they are written: the officer API calls these
//! (through the glue) so that a zone or schedule the engine would refuse on
//! load is refused on write instead, with the engine's own words and where
//! the fault is.

use crate::rows;
use serde_json::Value;

/// A zone as written: its kind, GeoJSON geometry (RFC 7946: Polygon,
/// MultiPolygon, or Point with `radius_m`), buffer and schedule.
#[derive(Debug, Clone)]
pub struct ZoneDraft {
    /// A name for people.
    pub name: String,
    /// `inclusion` or `exclusion`.
    pub kind: String,
    /// The GeoJSON geometry.
    pub geometry: Value,
    /// A Point zone's radius, in metres.
    pub radius_m: Option<f64>,
    /// The margin around the shape, in metres.
    pub buffer_m: f64,
    /// When the zone imposes anything (absent: always).
    pub schedule: Option<Value>,
}

/// Whether the engine takes the zone: geometry parsed by `geojson`, rings
/// wound as RFC 7946 says (exterior counterclockwise, holes clockwise),
/// coordinates in range, no antimeridian crossing, valid (no
/// self-intersection), buffer and radius in range, schedule well formed.
pub fn zone(draft: &ZoneDraft) -> Result<(), String> {
    let spec = rows::zone_spec(rows::ZoneRow::draft(draft))?;
    geofence::Engine::new().upsert_zone(spec).map_err(|e| {
        // Say where a ring crosses itself, when it does.
        match first_crossing(&draft.geometry) {
            Some(at) => format!("{e}; {at}"),
            None => e.to_string(),
        }
    })?;
    winding(&draft.geometry)
}

/// One ring of a Polygon or MultiPolygon: (polygon, ring, positions).
type Ring = (usize, usize, Vec<(f64, f64)>);

/// The rings of a Polygon or MultiPolygon.
fn rings(geometry: &Value) -> Vec<Ring> {
    let polygons: Vec<&Value> = match geometry["type"].as_str() {
        Some("Polygon") => vec![&geometry["coordinates"]],
        Some("MultiPolygon") => geometry["coordinates"]
            .as_array()
            .map(|ps| ps.iter().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (p, rs) in polygons.iter().enumerate() {
        for (r, ring) in rs.as_array().into_iter().flatten().enumerate() {
            let xy = ring
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|q| Some((q.get(0)?.as_f64()?, q.get(1)?.as_f64()?)))
                .collect();
            out.push((p, r, xy));
        }
    }
    out
}

/// Where two edges of one ring that do not share a vertex cross, if any
/// do: "polygon 0, ring 0: edge 1 (vertices 1–2) crosses edge 3 (vertices
/// 3–4) at (77.05, 43.2)". Rings over 2,000 vertices are not searched (the
/// search is quadratic); the engine's own message stands for them.
fn first_crossing(geometry: &Value) -> Option<String> {
    for (p, r, xy) in rings(geometry) {
        let n = xy.len();
        if !(4..=2_000).contains(&n) {
            continue;
        }
        for i in 0..n - 1 {
            for j in i + 2..n - 1 {
                // The first and last edges share the closing vertex.
                if i == 0 && j == n - 2 {
                    continue;
                }
                if let Some((x, y)) = cross(xy[i], xy[i + 1], xy[j], xy[j + 1]) {
                    return Some(format!(
                        "polygon {p}, ring {r}: edge {i} (vertices {i}–{}) crosses edge {j} \
                         (vertices {j}–{}) at ({x:.7}, {y:.7})",
                        i + 1,
                        j + 1
                    ));
                }
            }
        }
    }
    None
}

/// Where segments a–b and c–d cross (a proper crossing or a touch).
fn cross(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> Option<(f64, f64)> {
    let (rx, ry) = (b.0 - a.0, b.1 - a.1);
    let (sx, sy) = (d.0 - c.0, d.1 - c.1);
    let den = rx * sy - ry * sx;
    if den == 0.0 {
        return None;
    }
    let t = ((c.0 - a.0) * sy - (c.1 - a.1) * sx) / den;
    let u = ((c.0 - a.0) * ry - (c.1 - a.1) * rx) / den;
    ((0.0..=1.0).contains(&t) && (0.0..=1.0).contains(&u)).then_some((a.0 + t * rx, a.1 + t * ry))
}

/// Whether the engine takes the schedule (known keys only, IANA time zone,
/// windows, dated exceptions).
pub fn schedule(v: &Value) -> Result<(), String> {
    rows::parse_schedule(v).map(|_| ())
}

/// Whether the engine takes a rule's tuning (every key, in range).
pub fn tuning(v: &Value) -> Result<(), String> {
    rows::parse_tuning(v).map(|_| ())
}

/// Twice the signed area of a ring of (lon, lat) positions (shoelace):
/// positive when counterclockwise.
fn signed_area(xy: &[(f64, f64)]) -> f64 {
    xy.windows(2)
        .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
        .sum()
}

/// RFC 7946 §3.1.6: exterior rings counterclockwise, holes clockwise. A
/// ring the other way round is refused, naming it: which side of the line
/// is the zone must never be a guess.
fn winding(geometry: &Value) -> Result<(), String> {
    for (p, r, xy) in rings(geometry) {
        let area = signed_area(&xy);
        let (exterior, ccw) = (r == 0, area > 0.0);
        if area != 0.0 && exterior != ccw {
            return Err(format!(
                "polygon {p}, ring {r} ({}) is wound {}: RFC 7946 wants exterior rings \
                 counterclockwise and holes clockwise (the right-hand rule)",
                if exterior { "the exterior" } else { "a hole" },
                if ccw { "counterclockwise" } else { "clockwise" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(geometry: Value) -> ZoneDraft {
        ZoneDraft {
            name: "z".into(),
            kind: "exclusion".into(),
            geometry,
            radius_m: None,
            buffer_m: 0.0,
            schedule: None,
        }
    }

    #[test]
    fn zones_are_refused_saying_where() {
        let ok = serde_json::json!({"type": "Polygon", "coordinates": [[[76.9, 43.2], [77.0, 43.2], [77.0, 43.3], [76.9, 43.3], [76.9, 43.2]]]});
        assert_eq!(zone(&draft(ok)), Ok(()));
        let clockwise = serde_json::json!({"type": "Polygon", "coordinates": [[[76.9, 43.2], [76.9, 43.3], [77.0, 43.3], [77.0, 43.2], [76.9, 43.2]]]});
        let e = zone(&draft(clockwise)).expect_err("clockwise");
        assert!(e.contains("ring 0") && e.contains("clockwise"), "{e}");
        // The edge back from (77.2, 43.5) dips below the first edge and crosses it.
        let bowtie = serde_json::json!({"type": "Polygon", "coordinates": [[[76.9, 43.2], [77.2, 43.2], [77.2, 43.5], [77.0, 43.1], [76.9, 43.5], [76.9, 43.2]]]});
        let e = zone(&draft(bowtie)).expect_err("self-intersecting");
        assert!(
            e.contains(
                "edge 0 (vertices 0–1) crosses edge 2 (vertices 2–3) at (77.0500000, 43.2000000)"
            ),
            "{e}"
        );
        let far = serde_json::json!({"type": "Polygon", "coordinates": [[[76.9, 43.2], [277.0, 43.2], [77.0, 43.3], [76.9, 43.2]]]});
        let e = zone(&draft(far)).expect_err("out of range");
        assert!(e.contains("277"), "{e}");
        let across = serde_json::json!({"type": "Polygon", "coordinates": [[[179.9, 10.0], [-179.9, 10.0], [-179.9, 10.1], [179.9, 10.1], [179.9, 10.0]]]});
        let e = zone(&draft(across)).expect_err("antimeridian");
        assert!(e.contains("antimeridian"), "{e}");
        let e = zone(&draft(
            serde_json::json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
        ))
        .expect_err("a line");
        assert!(e.contains("LineString"), "{e}");
        let e = zone(&draft(
            serde_json::json!({"type": "Point", "coordinates": [76.9, 43.2]}),
        ))
        .expect_err("no radius");
        assert!(e.contains("radius_m"), "{e}");
    }
}
