//! Behaviour of the engine at its boundaries: zone tests, every rule kind,
//! hysteresis, schedules (midnight, DST), late fixes, proximity and changes.
//!
//! Tests are data-driven through small helpers (`presence`, `run`) so that the
//! cases read as tables.

use geofence::geo::{LineString, Polygon, polygon};
use geofence::jiff::civil::{Time, date};
use geofence::jiff::tz::TimeZone;
use geofence::jiff::{SignedDuration, Timestamp};
use geofence::*;

const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

fn pos(lon: f64, lat: f64) -> Position {
    Position::new(lon, lat).expect("valid test coordinate")
}

fn zone(id: u64, kind: ZoneKind, shape: Shape, buffer_m: f64) -> ZoneSpec {
    ZoneSpec {
        id: ZoneId(id),
        name: format!("zone {id}"),
        kind,
        scope: ZoneScope::Assigned,
        shape,
        buffer_m,
        schedule: Schedule::Always,
    }
}

fn circle(lon: f64, lat: f64, radius_m: f64) -> Shape {
    Shape::Circle {
        centre: pos(lon, lat),
        radius_m,
    }
}

/// A 0.01° square with its south-west corner at (77, 43).
fn square() -> Shape {
    Shape::Polygon(polygon![
        (x: 77.0, y: 43.0), (x: 77.01, y: 43.0), (x: 77.01, y: 43.01), (x: 77.0, y: 43.01)
    ])
}

fn presence(shape: Shape, buffer_m: f64, at: Position, accuracy_m: f64) -> Presence {
    let mut e = Engine::new();
    e.upsert_zone(zone(1, ZoneKind::Exclusion, shape, buffer_m))
        .expect("valid zone");
    e.zone_presence(ZoneId(1), at, accuracy_m)
        .expect("valid query")
}

/// Longitude `m` metres east of 77.01° at latitude 43.005 (east edge of `square`).
fn east_of_square(m: f64) -> Position {
    pos(
        77.01 + m / (M_PER_DEG * 43.005f64.to_radians().cos()),
        43.005,
    )
}

#[test]
fn zone_boundary_table() {
    use Presence::*;
    // (what, shape, buffer, point, accuracy, expected)
    let centre = pos(77.0, 43.0);
    let north = |m: f64| pos(77.0, 43.0 + m / M_PER_DEG);
    let cases: Vec<(&str, Shape, f64, Position, f64, Presence)> = vec![
        (
            "circle centre",
            circle(77.0, 43.0, 100.0),
            0.0,
            centre,
            0.0,
            Inside,
        ),
        (
            "circle just inside",
            circle(77.0, 43.0, 100.0),
            0.0,
            north(99.9),
            0.0,
            Inside,
        ),
        (
            "circle just outside",
            circle(77.0, 43.0, 100.0),
            0.0,
            north(100.1),
            0.0,
            Outside,
        ),
        (
            "accuracy crosses edge",
            circle(77.0, 43.0, 100.0),
            0.0,
            north(95.0),
            10.0,
            Uncertain,
        ),
        (
            "accuracy disc inside",
            circle(77.0, 43.0, 100.0),
            0.0,
            north(85.0),
            10.0,
            Inside,
        ),
        (
            "accuracy disc outside",
            circle(77.0, 43.0, 100.0),
            0.0,
            north(115.0),
            10.0,
            Outside,
        ),
        (
            "buffer widens",
            circle(77.0, 43.0, 100.0),
            30.0,
            north(125.0),
            0.0,
            Inside,
        ),
        (
            "beyond buffer",
            circle(77.0, 43.0, 100.0),
            30.0,
            north(131.0),
            0.0,
            Outside,
        ),
        (
            "buffer and accuracy",
            circle(77.0, 43.0, 100.0),
            30.0,
            north(125.0),
            10.0,
            Uncertain,
        ),
        (
            "square inside",
            square(),
            0.0,
            pos(77.005, 43.005),
            0.0,
            Inside,
        ),
        (
            "square edge is inside",
            square(),
            0.0,
            pos(77.01, 43.005),
            0.0,
            Inside,
        ),
        (
            "square vertex is inside",
            square(),
            0.0,
            pos(77.0, 43.0),
            0.0,
            Inside,
        ),
        (
            "square 1 m out",
            square(),
            0.0,
            east_of_square(1.0),
            0.0,
            Outside,
        ),
        (
            "square 1 m out, 2 m accuracy",
            square(),
            0.0,
            east_of_square(1.0),
            2.0,
            Uncertain,
        ),
        (
            "square 20 m out, 25 m buffer",
            square(),
            25.0,
            east_of_square(20.0),
            0.0,
            Inside,
        ),
        (
            "square 20 m out, 25 m buffer, 10 m acc",
            square(),
            25.0,
            east_of_square(20.0),
            10.0,
            Uncertain,
        ),
        (
            "square 40 m out, 25 m buffer, 10 m acc",
            square(),
            25.0,
            east_of_square(40.0),
            10.0,
            Outside,
        ),
        (
            "square 3 m in, 5 m accuracy",
            square(),
            0.0,
            east_of_square(-3.0),
            5.0,
            Uncertain,
        ),
        (
            "square 3 m in, 5 m acc, 2 m buffer",
            square(),
            2.0,
            east_of_square(-3.0),
            5.0,
            Inside,
        ),
        (
            "square 30 m in, 25 m accuracy",
            square(),
            0.0,
            east_of_square(-30.0),
            25.0,
            Inside,
        ),
    ];
    for (what, shape, buffer, at, acc, expect) in cases {
        assert_eq!(presence(shape, buffer, at, acc), expect, "{what}");
    }
}

#[test]
fn holes_and_multipolygons() {
    let outer = LineString::from(vec![
        (77.0, 43.0),
        (77.02, 43.0),
        (77.02, 43.02),
        (77.0, 43.02),
    ]);
    let hole = LineString::from(vec![
        (77.005, 43.005),
        (77.015, 43.005),
        (77.015, 43.015),
        (77.005, 43.015),
    ]);
    let donut = Polygon::new(outer, vec![hole]);
    assert_eq!(
        presence(Shape::Polygon(donut.clone()), 0.0, pos(77.01, 43.01), 0.0),
        Presence::Outside
    );
    assert_eq!(
        presence(Shape::Polygon(donut.clone()), 0.0, pos(77.002, 43.01), 0.0),
        Presence::Inside
    );
    assert_eq!(
        presence(Shape::Polygon(donut.clone()), 0.0, pos(77.005, 43.01), 0.0),
        Presence::Inside
    );
    let far = polygon![(x: 78.0, y: 43.0), (x: 78.01, y: 43.0), (x: 78.01, y: 43.01)];
    let multi = Shape::MultiPolygon(vec![donut, far].into());
    assert_eq!(
        presence(multi.clone(), 0.0, pos(78.008, 43.002), 0.0),
        Presence::Inside
    );
    assert_eq!(
        presence(multi, 0.0, pos(77.5, 43.0), 0.0),
        Presence::Outside
    );
}

#[test]
fn bad_geometry_is_refused_with_a_typed_error() {
    assert!(matches!(
        Position::new(f64::NAN, 43.0),
        Err(CoordError::NotFinite { .. })
    ));
    assert_eq!(
        Position::new(181.0, 0.0),
        Err(CoordError::LongitudeOutOfRange(181.0))
    );
    assert_eq!(
        Position::new(0.0, -90.5),
        Err(CoordError::LatitudeOutOfRange(-90.5))
    );
    let mut e = Engine::new();
    let across = Shape::Polygon(
        polygon![(x: 179.5, y: 0.0), (x: -179.5, y: 0.0), (x: -179.5, y: 1.0), (x: 179.5, y: 1.0)],
    );
    assert_eq!(
        e.upsert_zone(zone(1, ZoneKind::Exclusion, across, 0.0)),
        Err(EngineError::Zone(ZoneError::CrossesAntimeridian))
    );
    let nan = Shape::Polygon(polygon![(x: f64::NAN, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0)]);
    assert!(matches!(
        e.upsert_zone(zone(2, ZoneKind::Exclusion, nan, 0.0)),
        Err(EngineError::Zone(ZoneError::Coord(_)))
    ));
    // The edge (4,4)→(2,-1) cuts the edge (0,0)→(4,0): self-intersecting, non-zero area.
    let bowtie = Shape::Polygon(
        polygon![(x: 0.0, y: 0.0), (x: 4.0, y: 0.0), (x: 4.0, y: 4.0), (x: 2.0, y: -1.0), (x: 0.0, y: 4.0)],
    );
    assert!(matches!(
        e.upsert_zone(zone(3, ZoneKind::Exclusion, bowtie, 0.0)),
        Err(EngineError::Zone(ZoneError::InvalidGeometry(_)))
    ));
    // A large (grid) polygon with two vertices swapped: its edges cross.
    let mut ring: Vec<(f64, f64)> = (0..200)
        .map(|k| {
            let a = std::f64::consts::TAU * f64::from(k) / 200.0;
            (77.0 + 0.1 * a.cos(), 43.0 + 0.1 * a.sin())
        })
        .collect();
    ring.swap(10, 60);
    let crossed = Shape::Polygon(Polygon::new(LineString::from(ring.clone()), vec![]));
    assert!(matches!(
        e.upsert_zone(zone(6, ZoneKind::Exclusion, crossed, 0.0)),
        Err(EngineError::Zone(ZoneError::InvalidGeometry(_)))
    ));
    ring.swap(10, 60);
    let fine = Shape::Polygon(Polygon::new(LineString::from(ring), vec![]));
    assert_eq!(
        e.upsert_zone(zone(6, ZoneKind::Exclusion, fine, 0.0)),
        Ok(())
    );
    assert_eq!(
        e.upsert_zone(zone(
            4,
            ZoneKind::Exclusion,
            circle(77.0, 43.0, 100.0),
            -1.0
        )),
        Err(EngineError::Zone(ZoneError::BadBuffer(-1.0)))
    );
    assert_eq!(
        e.upsert_zone(zone(
            5,
            ZoneKind::Exclusion,
            circle(179.9999, 0.0, 100.0),
            0.0
        )),
        Err(EngineError::Zone(
            ZoneError::CircleTooCloseToPoleOrAntimeridian
        ))
    );
    assert!(e.zone_presence(ZoneId(1), pos(0.0, 0.0), 0.0).is_err());
}

#[test]
fn edge_distance_agrees_with_haversine() {
    // 400 m east of the square's east edge: the local-plane edge distance must
    // match the great-circle distance to the nearest edge point within 0.1 %.
    let p = east_of_square(400.0);
    let truth = p.distance_m(pos(77.01, 43.005));
    let mut e = Engine::new();
    e.upsert_zone(zone(1, ZoneKind::Exclusion, square(), 0.0))
        .expect("valid");
    // The boundary is within (truth + 0.1 %) and not within (truth - 0.1 %).
    assert_eq!(
        e.zone_presence(ZoneId(1), p, truth * 1.001).expect("ok"),
        Presence::Uncertain
    );
    assert_eq!(
        e.zone_presence(ZoneId(1), p, truth * 0.999).expect("ok"),
        Presence::Outside
    );
}

// ----- rules and hysteresis --------------------------------------------------

/// 2026-03-02 (a Monday) at `h:m` in Asia/Almaty.
fn almaty(day: i8, h: i8, m: i8) -> Timestamp {
    date(2026, 3, day)
        .at(h, m, 0, 0)
        .to_zoned(TimeZone::get("Asia/Almaty").expect("bundled"))
        .expect("valid")
        .timestamp()
}

fn fix(t: Timestamp, at: Position, accuracy_m: f64) -> Fix {
    Fix {
        time: t,
        position: at,
        accuracy_m,
        suspect: false,
    }
}

const HOME: (f64, f64) = (76.9, 43.2);

fn home() -> Position {
    pos(HOME.0, HOME.1)
}

/// ~1.1 km north of home.
fn away() -> Position {
    pos(HOME.0, HOME.1 + 0.01)
}

/// Victim's home: 1 km east of home.
fn victim_home() -> Position {
    pos(HOME.0 + 0.0123, HOME.1)
}

fn curfew_schedule() -> Schedule {
    Schedule::weekly(
        "Asia/Almaty",
        [WeeklyWindow {
            days: Weekdays::EVERY_DAY,
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(6, 0, 0, 0),
        }],
    )
    .expect("valid")
}

/// An engine with zones: 1 home (inclusion, 100 m), 2 victim's home
/// (exclusion, 200 m), 3 city (inclusion, 20 km); one subject with the given rules.
fn setup(rules: Vec<RuleSpec>) -> (Engine, SubjectHandle) {
    let mut e = Engine::new();
    e.upsert_zone(zone(
        1,
        ZoneKind::Inclusion,
        circle(HOME.0, HOME.1, 100.0),
        0.0,
    ))
    .expect("ok");
    let v = victim_home();
    e.upsert_zone(zone(
        2,
        ZoneKind::Exclusion,
        circle(v.lon(), v.lat(), 200.0),
        0.0,
    ))
    .expect("ok");
    e.upsert_zone(zone(
        3,
        ZoneKind::Inclusion,
        circle(HOME.0, HOME.1, 20_000.0),
        0.0,
    ))
    .expect("ok");
    let mut out = Vec::new();
    let h = e
        .upsert_subject(SubjectId(7), rules, &mut out)
        .expect("valid subject");
    assert!(out.is_empty());
    (e, h)
}

/// Feeds fixes; returns `(kind, at, confirmed_at, historical)` of every transition.
fn run(
    e: &mut Engine,
    h: SubjectHandle,
    fixes: &[Fix],
) -> Vec<(TransitionKind, Timestamp, Timestamp, bool)> {
    let mut out = Vec::new();
    for f in fixes {
        e.evaluate(h, f, &mut out).expect("valid fix");
    }
    out.iter()
        .map(|t| (t.kind, t.at, t.confirmed_at, t.historical))
        .collect()
}

/// Fixes every `step` minutes from `start`, at positions from `path(i)`.
fn fixes(start: Timestamp, step_min: i64, n: usize, path: impl Fn(usize) -> Position) -> Vec<Fix> {
    (0..n)
        .map(|i| {
            fix(
                start + SignedDuration::from_mins(step_min * i as i64),
                path(i),
                5.0,
            )
        })
        .collect()
}

fn mins(t: Timestamp, m: i64) -> Timestamp {
    t + SignedDuration::from_mins(m)
}

#[test]
fn exclusion_zone_needs_two_fixes_and_one_stray_fix_never_alerts() {
    use TransitionKind::*;
    let t0 = almaty(2, 12, 0);
    /// (what, path by minute, expected (kind, at minute, confirmed minute))
    type Case = (&'static str, Vec<Position>, Vec<(TransitionKind, i64, i64)>);
    let cases: Vec<Case> = vec![
        (
            "stray fix",
            vec![away(), victim_home(), away(), away()],
            vec![],
        ),
        (
            "entered and left",
            vec![
                away(),
                victim_home(),
                victim_home(),
                victim_home(),
                away(),
                away(),
                away(),
            ],
            vec![(ExclusionEntered, 1, 2), (ExclusionLeft, 4, 6)],
        ),
        (
            "brief exit does not end it",
            vec![
                victim_home(),
                victim_home(),
                away(),
                away(),
                victim_home(),
                away(),
                away(),
                away(),
            ],
            vec![(ExclusionEntered, 0, 1), (ExclusionLeft, 5, 7)],
        ),
    ];
    for (what, path, expect) in cases {
        let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))]);
        let got = run(&mut e, h, &fixes(t0, 1, path.len(), |i| path[i]));
        let expect: Vec<_> = expect
            .into_iter()
            .map(|(k, a, c)| (k, mins(t0, a), mins(t0, c), false))
            .collect();
        assert_eq!(got, expect, "{what}");
    }
}

#[test]
fn enter_span_needs_time_as_well_as_fixes() {
    // Fixes every 10 s: two fixes span 10 s < 30 s, so the fourth (30 s) confirms.
    let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))]);
    let t0 = almaty(2, 12, 0);
    let fs: Vec<Fix> = (0..4)
        .map(|i| fix(t0 + SignedDuration::from_secs(10 * i), victim_home(), 5.0))
        .collect();
    let got = run(&mut e, h, &fs);
    assert_eq!(
        got,
        vec![(
            TransitionKind::ExclusionEntered,
            t0,
            t0 + SignedDuration::from_secs(30),
            false
        )]
    );
}

#[test]
fn uncertain_fixes_are_neutral_unless_counted() {
    // On the victim zone's edge with 50 m accuracy: uncertain.
    let v = victim_home();
    let edge = pos(v.lon(), v.lat() + 200.0 / M_PER_DEG);
    let t0 = almaty(2, 12, 0);
    let path = [v, edge, edge, v, away(), edge, away(), away()];
    let fs: Vec<Fix> = path
        .iter()
        .enumerate()
        .map(|(i, p)| fix(mins(t0, i as i64), *p, if *p == edge { 50.0 } else { 5.0 }))
        .collect();
    // Neutral: the uncertain fixes neither break the streak (entered at minute 0,
    // confirmed at 3) nor count towards leaving (left at 4, confirmed at 7).
    let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))]);
    assert_eq!(
        run(&mut e, h, &fs),
        vec![
            (TransitionKind::ExclusionEntered, t0, mins(t0, 3), false),
            (
                TransitionKind::ExclusionLeft,
                mins(t0, 4),
                mins(t0, 7),
                false
            )
        ]
    );
    // Strict mode: uncertain counts as violating, so minute 1 confirms.
    let strict = Hysteresis {
        count_uncertain: true,
        ..Hysteresis::EXCLUSION
    };
    let (mut e, h) = setup(vec![
        RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2))).with_hysteresis(strict),
    ]);
    let got = run(&mut e, h, &fs);
    assert_eq!(
        got[0],
        (TransitionKind::ExclusionEntered, t0, mins(t0, 1), false)
    );
}

#[test]
fn inclusion_zone_left_and_returned() {
    let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(3)))]);
    let t0 = almaty(2, 12, 0);
    let out_of_city = pos(HOME.0, HOME.1 + 0.3);
    let path = [
        home(),
        out_of_city,
        out_of_city,
        out_of_city,
        home(),
        home(),
        home(),
    ];
    assert_eq!(
        run(&mut e, h, &fixes(t0, 1, path.len(), |i| path[i])),
        vec![
            (
                TransitionKind::InclusionLeft,
                mins(t0, 1),
                mins(t0, 3),
                false
            ),
            (
                TransitionKind::InclusionReturned,
                mins(t0, 4),
                mins(t0, 6),
                false
            )
        ]
    );
}

#[test]
fn curfew_crossing_midnight_with_grace() {
    use TransitionKind::*;
    let rule = || {
        vec![RuleSpec::new(RuleId(1), RuleKind::Curfew(ZoneId(1))).with_schedule(curfew_schedule())]
    };
    // Away all evening and night, 21:50 to 06:10, a fix every 5 minutes.
    let (mut e, h) = setup(rule());
    let t0 = almaty(2, 21, 50);
    let got = run(&mut e, h, &fixes(t0, 5, 100, |_| away()));
    // Grace 22:00–22:05: the streak starts with the 22:05 fix; confirmed by 3 fixes over 10 min.
    // The curfew ends at 06:00 on the 3rd: the 06:00 fix ends the episode.
    assert_eq!(
        got,
        vec![
            (
                CurfewViolationStarted,
                almaty(2, 22, 5),
                almaty(2, 22, 15),
                false
            ),
            (
                CurfewViolationEnded,
                almaty(3, 6, 0),
                almaty(3, 6, 0),
                false
            )
        ]
    );
    // Home by 22:04 (inside grace): nothing. Out 00:30–01:30 on the 3rd: an episode.
    let (mut e, h) = setup(rule());
    let night_out = |i: usize| {
        let t = mins(t0, 5 * i as i64);
        if t < almaty(2, 22, 4) || (t >= almaty(3, 0, 30) && t < almaty(3, 1, 30)) {
            away()
        } else {
            home()
        }
    };
    let got = run(&mut e, h, &fixes(t0, 5, 60, night_out));
    assert_eq!(
        got,
        vec![
            (
                CurfewViolationStarted,
                almaty(3, 0, 30),
                almaty(3, 0, 40),
                false
            ),
            (
                CurfewViolationEnded,
                almaty(3, 1, 30),
                almaty(3, 1, 40),
                false
            )
        ]
    );
    // Out all day, outside the curfew window: the curfew imposes nothing.
    let (mut e, h) = setup(rule());
    assert!(run(&mut e, h, &fixes(almaty(3, 7, 0), 5, 100, |_| away())).is_empty());
}

#[test]
fn midnight_crossing_windows_belong_to_their_start_day() {
    // Friday 22:00 – Saturday 06:00 only.
    let s = Schedule::weekly(
        "Asia/Almaty",
        [WeeklyWindow {
            days: Weekdays::of([geofence::jiff::civil::Weekday::Friday]),
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(6, 0, 0, 0),
        }],
    )
    .expect("valid");
    // 2026-03-06 is a Friday.
    for (day, h, m, expect) in [
        (6, 21, 59, false),
        (6, 22, 0, true),
        (7, 0, 0, true),
        (7, 5, 59, true),
        (7, 6, 0, false),
        (7, 22, 30, false),
        (5, 23, 0, false),
    ] {
        assert_eq!(s.is_active(almaty(day, h, m)), expect, "3/{day} {h}:{m}");
    }
}

#[test]
fn dst_curfew_lengths_in_new_york() {
    let ny = TimeZone::get("America/New_York").expect("bundled");
    let s = Schedule::weekly(
        "America/New_York",
        [WeeklyWindow {
            days: Weekdays::EVERY_DAY,
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(6, 0, 0, 0),
        }],
    )
    .expect("valid");
    let at = |y: i16, mo: i8, d: i8, h: i8| {
        date(y, mo, d)
            .at(h, 0, 0, 0)
            .to_zoned(ny.clone())
            .expect("valid")
            .timestamp()
    };
    // Spring forward: 2026-03-08 02:00 EST -> 03:00 EDT. The night of the 7th lasts 7 h.
    let (start, end) = s.period_containing(at(2026, 3, 8, 1)).expect("in force");
    assert_eq!((start, end), (at(2026, 3, 7, 22), at(2026, 3, 8, 6)));
    assert_eq!(end.duration_since(start), SignedDuration::from_hours(7));
    // Fall back: 2026-11-01 02:00 EDT -> 01:00 EST. The night of 31 October lasts 9 h.
    let (start, end) = s.period_containing(at(2026, 11, 1, 4)).expect("in force");
    assert_eq!(end.duration_since(start), SignedDuration::from_hours(9));
    // An ordinary night lasts 8 h.
    let (start, end) = s.period_containing(at(2026, 11, 10, 23)).expect("in force");
    assert_eq!(end.duration_since(start), SignedDuration::from_hours(8));
}

#[test]
fn dated_exceptions_extend_and_suspend() {
    let base = curfew_schedule();
    let s = base
        .clone()
        .with_exception(
            ExceptionKind::Suspended,
            date(2026, 3, 2).at(23, 0, 0, 0),
            date(2026, 3, 3).at(2, 0, 0, 0),
        )
        .expect("valid")
        .with_exception(
            ExceptionKind::Extra,
            date(2026, 3, 4).at(18, 0, 0, 0),
            date(2026, 3, 4).at(22, 0, 0, 0),
        )
        .expect("valid");
    assert!(s.is_active(almaty(2, 22, 30)));
    assert!(!s.is_active(almaty(3, 0, 0)));
    assert!(s.is_active(almaty(3, 2, 0)));
    assert!(!s.is_active(almaty(4, 17, 59)));
    assert!(s.is_active(almaty(4, 18, 0)));
    // Extra 18:00–22:00 runs into the 22:00 window: one period, so one grace.
    let (start, _) = s.period_containing(almaty(4, 23, 0)).expect("in force");
    assert_eq!(start, almaty(4, 18, 0));
    // Removing the suspension restores the base schedule.
    let restored = s.without_exception(
        ExceptionKind::Suspended,
        date(2026, 3, 2).at(23, 0, 0, 0),
        date(2026, 3, 3).at(2, 0, 0, 0),
    );
    assert!(restored.is_active(almaty(3, 0, 0)));
    assert!(
        base.clone()
            .with_exception(
                ExceptionKind::Extra,
                date(2026, 3, 4).at(2, 0, 0, 0),
                date(2026, 3, 4).at(1, 0, 0, 0)
            )
            .is_err()
    );
    assert!(matches!(
        Schedule::weekly("Mars/Olympus", []),
        Err(ScheduleError::UnknownTimeZone(_))
    ));
}

#[test]
fn category_zones_apply_to_tagged_subjects_only() {
    let schools = CategoryId(9);
    let school_centre = pos(HOME.0 + 0.05, HOME.1);
    let mut e = Engine::new();
    for (id, lon) in [(10, school_centre.lon()), (11, school_centre.lon() + 0.02)] {
        e.upsert_zone(ZoneSpec {
            scope: ZoneScope::Category(schools),
            ..zone(
                id,
                ZoneKind::Exclusion,
                circle(lon, school_centre.lat(), 150.0),
                0.0,
            )
        })
        .expect("valid");
    }
    let mut out = Vec::new();
    let tagged = e
        .upsert_subject(
            SubjectId(1),
            vec![RuleSpec::new(RuleId(1), RuleKind::Category(schools))],
            &mut out,
        )
        .expect("ok");
    let untagged = e
        .upsert_subject(SubjectId(2), vec![], &mut out)
        .expect("ok");
    let t0 = almaty(2, 12, 0);
    let path = [school_centre, school_centre, away(), away(), away()];
    let fs = fixes(t0, 1, path.len(), |i| path[i]);
    let got = run(&mut e, tagged, &fs);
    assert_eq!(
        got,
        vec![
            (TransitionKind::ExclusionEntered, t0, mins(t0, 1), false),
            (
                TransitionKind::ExclusionLeft,
                mins(t0, 2),
                mins(t0, 4),
                false
            )
        ]
    );
    assert!(run(&mut e, untagged, &fs).is_empty());
    // The zone id is reported.
    let mut out = Vec::new();
    let mut e2 = e;
    let h = e2
        .upsert_subject(
            SubjectId(3),
            vec![RuleSpec::new(RuleId(1), RuleKind::Category(schools))],
            &mut out,
        )
        .expect("ok");
    for f in &fs[..2] {
        e2.evaluate(h, f, &mut out).expect("ok");
    }
    assert_eq!(out[0].zone, Some(ZoneId(10)));
    // Category zones must be exclusion zones.
    assert!(matches!(
        e2.upsert_zone(ZoneSpec {
            scope: ZoneScope::Category(schools),
            ..zone(12, ZoneKind::Inclusion, circle(77.0, 43.0, 10.0), 0.0)
        }),
        Err(EngineError::Zone(ZoneError::CategoryZoneMustBeExclusion(_)))
    ));
}

#[test]
fn proximity_is_judged_on_either_partys_fix() {
    let victim = DeviceId(500);
    let rule = RuleSpec::new(
        RuleId(1),
        RuleKind::Proximity {
            device: victim,
            min_distance_m: 500.0,
            max_age: SignedDuration::from_mins(5),
        },
    );
    let (mut e, h) = setup(vec![rule]);
    assert!(e.is_watched(victim));
    let t0 = almaty(2, 12, 0);
    let mut out = Vec::new();
    // No victim position yet: neutral.
    e.evaluate(h, &fix(t0, home(), 5.0), &mut out).expect("ok");
    // The victim reports 300 m away: violating on the victim's fix.
    let near = pos(HOME.0, HOME.1 + 300.0 / M_PER_DEG);
    e.observe_device(victim, &fix(mins(t0, 1), near, 10.0), &mut out)
        .expect("ok");
    // The subject reports again: second violating evaluation, 60 s span -> entered.
    e.evaluate(h, &fix(mins(t0, 2), home(), 5.0), &mut out)
        .expect("ok");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, TransitionKind::ProximityEntered);
    assert_eq!(out[0].device, Some(victim));
    assert_eq!(out[0].at, mins(t0, 1));
    // The victim's position goes stale (> 5 min): neutral, no exit.
    for m in [8, 9, 10, 11] {
        e.evaluate(h, &fix(mins(t0, m), away(), 5.0), &mut out)
            .expect("ok");
    }
    assert_eq!(out.len(), 1);
    // Fresh victim fixes far away: three compliant evaluations end it.
    let far = pos(HOME.0, HOME.1 - 0.05);
    for m in [12, 13, 14] {
        e.observe_device(victim, &fix(mins(t0, m), far, 10.0), &mut out)
            .expect("ok");
    }
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].kind, TransitionKind::ProximityLeft);
    assert_eq!(out[1].at, mins(t0, 12));
    // An older victim fix is skipped.
    assert_eq!(
        e.observe_device(victim, &fix(mins(t0, 3), near, 1.0), &mut out),
        Ok(Outcome::Skipped)
    );
}

// ----- late and out-of-order fixes ------------------------------------------

/// Night with a store-and-forward gap: the subject is out 23:00–01:00; the
/// device is offline 22:30–03:00 and uploads its backlog after its first live fix.
fn night_path(t: Timestamp) -> Position {
    if t >= almaty(2, 23, 0) && t < almaty(3, 1, 0) {
        away()
    } else {
        home()
    }
}

#[test]
fn late_backlog_opens_and_closes_a_historical_episode_without_touching_live_state() {
    let rule = || {
        vec![RuleSpec::new(RuleId(1), RuleKind::Curfew(ZoneId(1))).with_schedule(curfew_schedule())]
    };
    let start = almaty(2, 21, 0);
    let all = fixes(start, 2, 200, |i| night_path(mins(start, 2 * i as i64)));
    let online = |f: &Fix| f.time < almaty(2, 22, 30) || f.time >= almaty(3, 3, 0);
    let live: Vec<Fix> = all.iter().copied().filter(online).collect();
    let backlog: Vec<Fix> = all.iter().copied().filter(|f| !online(f)).collect();

    // Reference: only the live fixes.
    let (mut e, h) = setup(rule());
    let reference = run(&mut e, h, &live);
    assert!(reference.is_empty(), "home whenever online");

    // Arrival order: live until 22:28, then the 03:00 fix, then the backlog, then the rest.
    let first_after = live
        .iter()
        .position(|f| f.time >= almaty(3, 3, 0))
        .expect("exists");
    let mut arrival = live[..=first_after].to_vec();
    arrival.extend(&backlog);
    arrival.extend(&live[first_after + 1..]);
    let (mut e, h) = setup(rule());
    let mut out = Vec::new();
    let mut outcomes = Vec::new();
    for f in &arrival {
        outcomes.push(e.evaluate(h, f, &mut out).expect("ok"));
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Late).count(),
        backlog.len()
    );
    let live_out: Vec<_> = out.iter().filter(|t| !t.historical).collect();
    assert!(
        live_out.is_empty(),
        "late fixes changed the live state: {live_out:?}"
    );
    let hist: Vec<_> = out.iter().map(|t| (t.kind, t.at, t.historical)).collect();
    assert_eq!(
        hist,
        vec![
            (
                TransitionKind::CurfewViolationStarted,
                almaty(2, 23, 0),
                true
            ),
            (TransitionKind::CurfewViolationEnded, almaty(3, 1, 0), true)
        ]
    );
}

#[test]
fn a_late_fix_is_judged_against_the_zone_version_in_force_at_its_time() {
    // The victim's exclusion zone (2) is moved 2 km east at 13:00 (version
    // 11 replaces version 10). The subject walked through the old zone at
    // 12:10–12:20 while offline; the backlog arrives at 13:30.
    let v = victim_home();
    let old = zone(2, ZoneKind::Exclusion, circle(v.lon(), v.lat(), 200.0), 0.0);
    let moved = zone(
        2,
        ZoneKind::Exclusion,
        circle(v.lon() + 0.025, v.lat(), 200.0),
        0.0,
    );
    let at = |id, since| ZoneVersion { id, since };
    let rule = || vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))];
    let start = almaty(2, 12, 0);
    let path = |t: Timestamp| {
        if t >= almaty(2, 12, 10) && t < almaty(2, 12, 20) {
            v
        } else {
            away()
        }
    };
    let all = fixes(start, 1, 120, |i| path(mins(start, i as i64)));
    let (before, after): (Vec<Fix>, Vec<Fix>) =
        all.iter().partition(|f| f.time < almaty(2, 13, 30));
    let live_first = [before[0]];
    let backlog = &before[1..];

    let play = |versioned: bool, moved: &ZoneSpec| {
        let (mut e, h) = setup(rule());
        e.upsert_zone_versions(old.clone(), at(10, almaty(2, 9, 0)), vec![])
            .expect("ok");
        let mut out = Vec::new();
        e.evaluate(h, &live_first[0], &mut out).expect("ok");
        // 13:00: the zone moves.
        if versioned {
            e.upsert_zone_versions(
                moved.clone(),
                at(11, almaty(2, 13, 0)),
                vec![(at(10, almaty(2, 9, 0)), old.clone())],
            )
            .expect("ok");
        } else {
            e.upsert_zone(moved.clone()).expect("ok");
        }
        // 13:30: the first live fix, then the backlog, then live again.
        e.evaluate(h, &after[0], &mut out).expect("ok");
        for f in backlog {
            assert_eq!(e.evaluate(h, f, &mut out), Ok(Outcome::Late));
        }
        e.close_late_run(h, &mut out).expect("ok");
        for f in &after[1..] {
            e.evaluate(h, f, &mut out).expect("ok");
        }
        out.iter()
            .map(|t| (t.kind, t.at, t.historical, t.zone_version))
            .collect::<Vec<_>>()
    };
    use TransitionKind::*;
    assert_eq!(
        play(true, &moved),
        vec![
            (ExclusionEntered, almaty(2, 12, 10), true, Some(10)),
            (ExclusionLeft, almaty(2, 12, 20), true, Some(10)),
        ],
        "judged against the zone as it stood at 12:10"
    );
    assert_eq!(
        play(false, &moved),
        vec![],
        "without its versions, the moved zone alone sees nothing"
    );
    // The zone became an inclusion zone (somewhere the subject is): the
    // backlog's episode is still the exclusion zone's, as version 10 was.
    let now_inclusion = zone(
        2,
        ZoneKind::Inclusion,
        circle(v.lon(), v.lat() + 0.01, 3_000.0),
        0.0,
    );
    assert_eq!(
        play(true, &now_inclusion),
        vec![
            (ExclusionEntered, almaty(2, 12, 10), true, Some(10)),
            (ExclusionLeft, almaty(2, 12, 20), true, Some(10)),
        ],
        "named by the kind of the version that judged it"
    );

    // A fix older than every version known is judged against the oldest;
    // versions must be of the same zone and start before the current one.
    let mut e = Engine::new();
    let other = zone(3, ZoneKind::Exclusion, circle(v.lon(), v.lat(), 200.0), 0.0);
    let err = e
        .upsert_zone_versions(
            moved.clone(),
            at(11, almaty(2, 13, 0)),
            vec![(at(9, almaty(2, 9, 0)), other)],
        )
        .expect_err("another zone's version");
    assert!(err.to_string().contains("another zone"), "{err}");
    let err = e
        .upsert_zone_versions(
            moved.clone(),
            at(11, almaty(2, 13, 0)),
            vec![(at(12, almaty(2, 14, 0)), old.clone())],
        )
        .expect_err("a later version");
    assert!(err.to_string().contains("starts after"), "{err}");
}

#[test]
fn late_fixes_inside_a_live_episode_are_not_reported_twice() {
    // Out 23:00–01:00, online throughout: the live track reports it. Then a
    // duplicate upload of 23:30–00:30 arrives late: nothing more.
    let rule = || {
        vec![RuleSpec::new(RuleId(1), RuleKind::Curfew(ZoneId(1))).with_schedule(curfew_schedule())]
    };
    let start = almaty(2, 21, 0);
    let all = fixes(start, 2, 200, |i| night_path(mins(start, 2 * i as i64)));
    let (mut e, h) = setup(rule());
    let live = run(&mut e, h, &all);
    assert_eq!(live.len(), 2);
    let again: Vec<Fix> = all
        .iter()
        .copied()
        .filter(|f| f.time >= almaty(2, 23, 31) && f.time < almaty(3, 0, 30))
        .collect();
    let mut out = Vec::new();
    for f in &again {
        assert_eq!(e.evaluate(h, f, &mut out), Ok(Outcome::Late));
    }
    e.close_late_run(h, &mut out).expect("ok");
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn late_run_closed_while_violating_ends_with_evidence_ended() {
    let rule = vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))];
    let (mut e, h) = setup(rule);
    let t0 = almaty(2, 12, 0);
    let mut out = Vec::new();
    e.evaluate(h, &fix(mins(t0, 60), away(), 5.0), &mut out)
        .expect("ok");
    for m in [10, 11, 12] {
        assert_eq!(
            e.evaluate(h, &fix(mins(t0, m), victim_home(), 5.0), &mut out),
            Ok(Outcome::Late)
        );
    }
    // A duplicate of the run's newest fix changes nothing.
    assert_eq!(
        e.evaluate(h, &fix(mins(t0, 12), victim_home(), 5.0), &mut out),
        Ok(Outcome::Duplicate)
    );
    // An older late fix starts a new run, closing the first.
    assert_eq!(
        e.evaluate(h, &fix(mins(t0, 5), away(), 5.0), &mut out),
        Ok(Outcome::Late)
    );
    let got: Vec<_> = out
        .iter()
        .map(|t| (t.kind, t.at, t.historical, t.end_cause))
        .collect();
    assert_eq!(
        got,
        vec![
            (TransitionKind::ExclusionEntered, mins(t0, 10), true, None),
            (
                TransitionKind::ExclusionLeft,
                mins(t0, 12),
                true,
                Some(EndCause::EvidenceEnded)
            )
        ]
    );
    // Live state untouched: the next live fix inside starts a fresh live streak.
    out.clear();
    e.evaluate(h, &fix(mins(t0, 61), victim_home(), 5.0), &mut out)
        .expect("ok");
    assert!(out.is_empty());
    e.evaluate(h, &fix(mins(t0, 62), victim_home(), 5.0), &mut out)
        .expect("ok");
    assert_eq!(out[0].kind, TransitionKind::ExclusionEntered);
    assert!(!out[0].historical);
    assert_eq!(
        e.evaluate(h, &fix(mins(t0, 62), away(), 5.0), &mut out),
        Ok(Outcome::Duplicate)
    );
}

#[test]
fn suspect_fixes_are_not_judged() {
    let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))]);
    let t0 = almaty(2, 12, 0);
    let mut out = Vec::new();
    for m in 0..5 {
        let f = Fix {
            suspect: true,
            ..fix(mins(t0, m), victim_home(), 5.0)
        };
        assert_eq!(e.evaluate(h, &f, &mut out), Ok(Outcome::Skipped));
    }
    assert!(out.is_empty());
    let bad = fix(t0, home(), f64::NAN);
    assert!(matches!(
        e.evaluate(h, &bad, &mut out),
        Err(EngineError::BadAccuracy(_))
    ));
}

// ----- changes while running ------------------------------------------------

#[test]
fn zone_and_rule_changes_apply_to_the_next_fix() {
    let (mut e, h) = setup(vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2)))]);
    let t0 = almaty(2, 12, 0);
    let mut out = Vec::new();
    // Move the victim zone onto the subject's home.
    e.upsert_zone(zone(
        2,
        ZoneKind::Exclusion,
        circle(HOME.0, HOME.1, 200.0),
        0.0,
    ))
    .expect("ok");
    for m in 0..2 {
        e.evaluate(h, &fix(mins(t0, m), home(), 5.0), &mut out)
            .expect("ok");
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, TransitionKind::ExclusionEntered);
    // Remove it: the next fix ends the episode.
    e.remove_zone(ZoneId(2)).expect("ok");
    e.evaluate(h, &fix(mins(t0, 2), home(), 5.0), &mut out)
        .expect("ok");
    assert_eq!(out[1].kind, TransitionKind::ExclusionLeft);
    assert_eq!(out[1].end_cause, Some(EndCause::ZoneRemoved));
    // Replace the subject's rules: a removed rule with an open episode closes.
    e.upsert_zone(zone(
        2,
        ZoneKind::Exclusion,
        circle(HOME.0, HOME.1, 200.0),
        0.0,
    ))
    .expect("ok");
    for m in 3..5 {
        e.evaluate(h, &fix(mins(t0, m), home(), 5.0), &mut out)
            .expect("ok");
    }
    assert_eq!(out[2].kind, TransitionKind::ExclusionEntered);
    let h2 = e
        .upsert_subject(SubjectId(7), vec![], &mut out)
        .expect("ok");
    assert_eq!(h2, h);
    assert_eq!(out[3].end_cause, Some(EndCause::RuleRemoved));
    // Unknown zones, curfews on exclusion zones and duplicate rule ids are refused.
    assert!(matches!(
        e.upsert_subject(
            SubjectId(8),
            vec![RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(99)))],
            &mut out
        ),
        Err(EngineError::RuleZoneUnknown { .. })
    ));
    assert!(matches!(
        e.upsert_subject(
            SubjectId(8),
            vec![RuleSpec::new(RuleId(1), RuleKind::Curfew(ZoneId(2)))],
            &mut out
        ),
        Err(EngineError::CurfewZoneNotInclusion { .. })
    ));
    assert!(matches!(
        e.upsert_subject(
            SubjectId(8),
            vec![
                RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(2))),
                RuleSpec::new(RuleId(1), RuleKind::Zone(ZoneId(3)))
            ],
            &mut out
        ),
        Err(EngineError::DuplicateRule(RuleId(1)))
    ));
    // A removed subject's handle is dead.
    e.remove_subject(SubjectId(7), &mut out).expect("ok");
    assert_eq!(
        e.evaluate(h, &fix(mins(t0, 9), home(), 5.0), &mut out),
        Err(EngineError::UnknownSubject)
    );
}

#[test]
fn evaluate_batch_is_evaluate_in_order() {
    let rules = || {
        vec![
            RuleSpec::new(RuleId(1), RuleKind::Curfew(ZoneId(1))).with_schedule(curfew_schedule()),
            RuleSpec::new(RuleId(2), RuleKind::Zone(ZoneId(2))),
        ]
    };
    let start = almaty(2, 21, 0);
    let mut all = fixes(start, 2, 150, |i| {
        if i % 40 < 12 {
            victim_home()
        } else {
            night_path(mins(start, 2 * i as i64))
        }
    });
    // Some late fixes and an invalid one in the middle.
    all.insert(100, all[20]);
    all.insert(60, fix(mins(start, 1), home(), f64::INFINITY));
    let (mut one, h) = setup(rules());
    let mut expect = Vec::new();
    let expect_outcomes: Vec<_> = all
        .iter()
        .map(|f| one.evaluate(h, f, &mut expect))
        .collect();
    let (mut batch, h) = setup(rules());
    let (mut got, mut got_outcomes) = (Vec::new(), Vec::new());
    let pairs: Vec<(SubjectHandle, Fix)> = all.iter().map(|f| (h, *f)).collect();
    batch.evaluate_batch(&pairs, &mut got, &mut got_outcomes);
    assert_eq!(got_outcomes, expect_outcomes);
    assert_eq!(got, expect);
    assert!(
        expect.len() >= 4,
        "the sequence must produce transitions: {expect:?}"
    );
}
