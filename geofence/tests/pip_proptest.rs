//! The fast point-in-polygon agrees with `geo::Contains` on random polygons
//! (small ones on the raster path, large ones on the grid path), boundary aside:
//! `geo::Contains` excludes the boundary and the engine includes it (zones are
//! closed), so points within a hair of an edge are skipped.

use geofence::geo::{Contains, Distance, Euclidean, LineString, Point, Polygon};
use geofence::*;
use proptest::prelude::*;

/// A star-shaped (hence simple) polygon around (cx, cy) with random radii,
/// optionally with a star-shaped hole well inside it.
fn star(cx: f64, cy: f64, radii: &[f64], hole: bool) -> Polygon<f64> {
    let n = radii.len();
    let ring = |scale: f64| -> LineString<f64> {
        (0..n)
            .map(|k| {
                let a = std::f64::consts::TAU * k as f64 / n as f64;
                (
                    cx + scale * radii[k] * a.cos(),
                    cy + scale * radii[k] * a.sin(),
                )
            })
            .collect::<Vec<_>>()
            .into()
    };
    let interiors = if hole { vec![ring(0.3)] } else { vec![] };
    Polygon::new(ring(1.0), interiors)
}

/// An engine holding `polygon` as zone 1.
fn engine_with(polygon: &Polygon<f64>) -> Result<Engine, TestCaseError> {
    let mut e = Engine::new();
    e.upsert_zone(ZoneSpec {
        id: ZoneId(1),
        name: "p".into(),
        kind: ZoneKind::Exclusion,
        scope: ZoneScope::Assigned,
        shape: Shape::Polygon(polygon.clone()),
        buffer_m: 0.0,
        schedule: Schedule::Always,
    })
    .map_err(|err| TestCaseError::fail(err.to_string()))?;
    Ok(e)
}

fn check(polygon: Polygon<f64>, points: &[(f64, f64)]) -> Result<(), TestCaseError> {
    let e = engine_with(&polygon)?;
    for &(x, y) in points {
        let pt = Point::new(x, y);
        let boundary = polygon
            .exterior()
            .lines()
            .chain(polygon.interiors().iter().flat_map(|r| r.lines()))
            .map(|l| Euclidean.distance(&l, &pt))
            .fold(f64::INFINITY, f64::min);
        if boundary < 1e-9 {
            continue;
        }
        let expected = polygon.contains(&pt);
        let got = e
            .zone_presence(ZoneId(1), Position::new(x, y).expect("in range"), 0.0)
            .expect("valid")
            == Presence::Inside;
        prop_assert_eq!(
            got,
            expected,
            "point ({}, {}) boundary distance {}",
            x,
            y,
            boundary
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn small_polygons_agree_with_geo(
        radii in prop::collection::vec(0.2f64..1.0, 3..60),
        hole in any::<bool>(),
        points in prop::collection::vec((-1.1f64..1.1, -1.1f64..1.1), 200),
    ) {
        let pts: Vec<_> = points.iter().map(|(x, y)| (77.0 + x * 0.01, 43.0 + y * 0.01)).collect();
        let scaled = star(77.0, 43.0, &radii.iter().map(|r| r * 0.01).collect::<Vec<_>>(), hole && radii.len() >= 8);
        check(scaled, &pts)?;
    }

    #[test]
    fn large_polygons_agree_with_geo(
        radii in prop::collection::vec(0.5f64..1.0, 65..400),
        hole in any::<bool>(),
        points in prop::collection::vec((-1.1f64..1.1, -1.1f64..1.1), 300),
    ) {
        let scaled: Vec<f64> = radii.iter().map(|r| r * 0.2).collect();
        let p = star(-73.9, 40.7, &scaled, hole);
        let pts: Vec<_> = points.iter().map(|(x, y)| (-73.9 + x * 0.2, 40.7 + y * 0.2)).collect();
        check(p, &pts)?;
    }

    #[test]
    fn points_on_vertices_are_inside(
        radii in prop::collection::vec(0.2f64..1.0, 3..200),
    ) {
        let scaled: Vec<f64> = radii.iter().map(|r| r * 0.05).collect();
        let p = star(10.0, 50.0, &scaled, false);
        let e = engine_with(&p)?;
        for c in p.exterior().coords() {
            let got = e.zone_presence(ZoneId(1), Position::new(c.x, c.y).expect("in range"), 0.0).expect("valid");
            prop_assert_eq!(got, Presence::Inside);
        }
    }
}
