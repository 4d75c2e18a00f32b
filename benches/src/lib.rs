//! Seeded workloads for the geofence benches, shared by the criterion benches and
//! the `geofence-report` binary so both measure exactly the same thing.
//!
//! Every generator takes no entropy from the environment: the same build gives the
//! same zones, points and fixes, and each scenario checks its own answer
//! (`assert_eq!` against a baseline or a known count), so a fast wrong answer fails.

use geo::{Contains, LineString, Point, Polygon};
use geofence::jiff::Timestamp;
use geofence::jiff::civil::{Time, date};
use geofence::jiff::tz::TimeZone;
use geofence::{
    CategoryId, Engine, Fix, Position, Presence, RuleId, RuleKind, RuleSpec, Schedule, Shape,
    SubjectHandle, SubjectId, Transition, Weekdays, WeeklyWindow, ZoneId, ZoneKind, ZoneScope,
    ZoneSpec,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rstar::{AABB, RTree};

/// The fixed seed of every workload.
pub const SEED: u64 = 0x00E3_7A4C;

/// Category of the global zones ("schools").
pub const SCHOOLS: CategoryId = CategoryId(1);

/// A regular polygon of `n` distinct vertices around `(cx, cy)`, radius in degrees.
pub fn circle_polygon(cx: f64, cy: f64, r: f64, n: usize) -> Polygon<f64> {
    let ring: Vec<(f64, f64)> = (0..n)
        .map(|k| {
            let a = std::f64::consts::TAU * k as f64 / n as f64;
            (cx + r * a.cos(), cy + r * a.sin())
        })
        .collect();
    Polygon::new(LineString::from(ring), vec![])
}

/// Scenario 1's data: 10,000 circular 33-vertex polygons of radius 0.002–0.006°
/// uniformly over lon 76.5–77.5, lat 43.0–44.0, and uniform points over the same square.
pub struct GlobalZones {
    /// The zones, as given to both the engine and the baseline.
    pub polygons: Vec<Polygon<f64>>,
    /// Query points `[lon, lat]`.
    pub points: Vec<[f64; 2]>,
}

impl GlobalZones {
    /// Generates the scenario with `points` query points.
    pub fn generate(zones: usize, points: usize) -> GlobalZones {
        let mut rng = StdRng::seed_from_u64(SEED);
        let polygons = (0..zones)
            .map(|_| {
                let cx = rng.random_range(76.5..77.5);
                let cy = rng.random_range(43.0..44.0);
                let r = rng.random_range(0.002..0.006);
                circle_polygon(cx, cy, r, 33)
            })
            .collect();
        let points = (0..points)
            .map(|_| [rng.random_range(76.5..77.5), rng.random_range(43.0..44.0)])
            .collect();
        GlobalZones { polygons, points }
    }

    /// An engine holding the polygons as global exclusion zones of [`SCHOOLS`].
    pub fn engine(&self) -> Engine {
        let mut engine = Engine::new();
        for (k, p) in self.polygons.iter().enumerate() {
            engine
                .upsert_zone(global_zone(ZoneId(k as u64), p.clone()))
                .expect("generated zones are valid");
        }
        engine
    }

    /// The naive baseline: an R-tree over the original polygons.
    pub fn baseline(&self) -> RTree<Polygon<f64>> {
        RTree::bulk_load(self.polygons.clone())
    }
}

fn global_zone(id: ZoneId, polygon: Polygon<f64>) -> ZoneSpec {
    ZoneSpec {
        id,
        name: format!("school {}", id.0),
        kind: ZoneKind::Exclusion,
        scope: ZoneScope::Category(SCHOOLS),
        shape: Shape::Polygon(polygon),
        buffer_m: 0.0,
        schedule: Schedule::Always,
    }
}

/// Engine side of scenario 1: how many (point, zone) pairs are `Inside`.
pub fn count_engine(engine: &Engine, points: &[[f64; 2]]) -> usize {
    let mut out = Vec::with_capacity(16);
    let mut hits = 0;
    for p in points {
        let pos = Position::new(p[0], p[1]).expect("generated points are valid");
        out.clear();
        engine
            .global_presence(pos, 0.0, &mut out)
            .expect("accuracy 0 is valid");
        hits += out.iter().filter(|(_, pr)| *pr == Presence::Inside).count();
    }
    hits
}

/// Baseline side of scenario 1: `locate_in_envelope_intersecting` + `geo::Contains`.
pub fn count_baseline(tree: &RTree<Polygon<f64>>, points: &[[f64; 2]]) -> usize {
    let mut hits = 0;
    for p in points {
        let pt = Point::new(p[0], p[1]);
        hits += tree
            .locate_in_envelope_intersecting(&AABB::from_point(pt))
            .filter(|poly| poly.contains(&pt))
            .count();
    }
    hits
}

/// Scenario 2: subjects living their evenings around Almaty.
pub struct SubjectWorld {
    /// Engine with all zones and subjects loaded.
    pub engine: Engine,
    /// Fixes in arrival order (time order, subjects interleaved).
    pub fixes: Vec<(SubjectHandle, Fix)>,
}

/// Subject `s`'s movement plan: home, another place, and when it goes there and back.
struct Plan {
    home: [f64; 2],
    other: [f64; 2],
    leave_ms: i64,
    back_ms: i64,
    speed_mps: f64,
    phase_ms: i64,
}

impl Plan {
    /// Where the subject is at `t` (ms since the epoch).
    fn position(&self, t: i64) -> [f64; 2] {
        let dist_m = haversine_approx(self.home, self.other);
        let travel_ms = (dist_m / self.speed_mps * 1000.0) as i64;
        let frac = |since: i64| ((t - since) as f64 / travel_ms.max(1) as f64).clamp(0.0, 1.0);
        let lerp =
            |a: [f64; 2], b: [f64; 2], f: f64| [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f];
        if t < self.leave_ms {
            self.home
        } else if t < self.back_ms {
            lerp(self.home, self.other, frac(self.leave_ms))
        } else {
            lerp(self.other, self.home, frac(self.back_ms))
        }
    }
}

fn haversine_approx(a: [f64; 2], b: [f64; 2]) -> f64 {
    Position::new(a[0], a[1])
        .and_then(|pa| Position::new(b[0], b[1]).map(|pb| pa.distance_m(pb)))
        .unwrap_or(0.0)
}

/// The curfew every subject carries: 22:00–06:00 every night in Asia/Almaty.
pub fn almaty_curfew() -> Schedule {
    Schedule::weekly(
        "Asia/Almaty",
        [WeeklyWindow {
            days: Weekdays::EVERY_DAY,
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(6, 0, 0, 0),
        }],
    )
    .expect("valid schedule")
}

impl SubjectWorld {
    /// `subjects` subjects, each with a home (inclusion circle, curfew 22:00–06:00
    /// Asia/Almaty), one or two personal exclusion zones (a circle around a victim's
    /// home, and for half of them a 12-vertex polygon), and for 30 % a rule
    /// against the 10,000 global school zones of scenario 1. Each subject sends a
    /// fix every minute for `minutes` minutes from 21:45 local time; the run
    /// crosses the curfew start. Between 21:30 and 22:30 each subject leaves home
    /// for a place 1–6 km away at 15–50 km/h and comes back some time later.
    // Over 80 lines: it draws from a seeded random stream in one fixed order, and
    // the same seed must give the same bytes (ARCHITECTURE.md). One straight
    // function keeps that order visible; split, a reordered draw would hide in a call.
    pub fn generate(subjects: usize, minutes: usize) -> SubjectWorld {
        let mut rng = StdRng::seed_from_u64(SEED ^ 0x5EED);
        let globals = GlobalZones::generate(10_000, 0);
        let mut engine = globals.engine();
        let start = date(2026, 3, 2)
            .at(21, 45, 0, 0)
            .to_zoned(TimeZone::get("Asia/Almaty").expect("bundled tzdb"))
            .expect("valid local time")
            .timestamp()
            .as_millisecond();
        let curfew = almaty_curfew();
        let mut plans = Vec::with_capacity(subjects);
        let mut handles = Vec::with_capacity(subjects);
        let mut sink: Vec<Transition> = Vec::new();
        for s in 0..subjects as u64 {
            let home = [
                rng.random_range(76.55..77.45),
                rng.random_range(43.05..43.95),
            ];
            let bearing: f64 = rng.random_range(0.0..std::f64::consts::TAU);
            let km: f64 = rng.random_range(1.0..6.0);
            let other = [
                home[0] + km / 81.0 * bearing.cos(),
                home[1] + km / 111.0 * bearing.sin(),
            ];
            let home_zone = ZoneId(1_000_000 + 3 * s);
            engine
                .upsert_zone(ZoneSpec {
                    id: home_zone,
                    name: format!("home of {s}"),
                    kind: ZoneKind::Inclusion,
                    scope: ZoneScope::Assigned,
                    shape: Shape::Circle {
                        centre: Position::new(home[0], home[1]).expect("valid"),
                        radius_m: rng.random_range(60.0..150.0),
                    },
                    buffer_m: 25.0,
                    schedule: Schedule::Always,
                })
                .expect("valid home");
            let mut rules = vec![
                RuleSpec::new(RuleId(4 * s), RuleKind::Curfew(home_zone))
                    .with_schedule(curfew.clone()),
            ];
            let exclusions = if rng.random_bool(0.5) { 2 } else { 1 };
            for e in 0..exclusions {
                let zid = ZoneId(1_000_001 + 3 * s + e);
                let bearing: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                let km: f64 = rng.random_range(0.5..8.0);
                let c = [
                    home[0] + km / 81.0 * bearing.cos(),
                    home[1] + km / 111.0 * bearing.sin(),
                ];
                let shape = if e == 0 {
                    Shape::Circle {
                        centre: Position::new(c[0], c[1]).expect("valid"),
                        radius_m: rng.random_range(200.0..500.0),
                    }
                } else {
                    Shape::Polygon(circle_polygon(
                        c[0],
                        c[1],
                        rng.random_range(0.002..0.005),
                        12,
                    ))
                };
                engine
                    .upsert_zone(ZoneSpec {
                        id: zid,
                        name: format!("exclusion {e} of {s}"),
                        kind: ZoneKind::Exclusion,
                        scope: ZoneScope::Assigned,
                        shape,
                        buffer_m: 50.0,
                        schedule: Schedule::Always,
                    })
                    .expect("valid exclusion");
                rules.push(RuleSpec::new(RuleId(4 * s + 1 + e), RuleKind::Zone(zid)));
            }
            if rng.random_bool(0.3) {
                rules.push(RuleSpec::new(
                    RuleId(4 * s + 3),
                    RuleKind::Category(SCHOOLS),
                ));
            }
            let handle = engine
                .upsert_subject(SubjectId(s), rules, &mut sink)
                .expect("valid subject");
            handles.push(handle);
            let leave_ms = start - 15 * 60_000 + rng.random_range(0..60 * 60_000);
            plans.push(Plan {
                home,
                other,
                leave_ms,
                back_ms: leave_ms + rng.random_range(20 * 60_000..90 * 60_000),
                speed_mps: rng.random_range(15.0..50.0) / 3.6,
                phase_ms: rng.random_range(0..60_000),
            });
        }
        // Each device reports once a minute at its own phase: order subjects by
        // phase once, and every minute arrives in that (memory-random) order.
        let mut order: Vec<usize> = (0..subjects).collect();
        order.sort_by_key(|&s| plans[s].phase_ms);
        let mut fixes = Vec::with_capacity(subjects * minutes);
        for m in 0..minutes as i64 {
            for &s in &order {
                let plan = &plans[s];
                let t = start + m * 60_000 + plan.phase_ms;
                let p = plan.position(t);
                let noise_m: f64 = rng.random_range(0.0..12.0);
                let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                let fix = Fix {
                    time: Timestamp::from_millisecond(t).expect("in range"),
                    position: Position::new(
                        p[0] + noise_m / 81_000.0 * angle.cos(),
                        p[1] + noise_m / 111_000.0 * angle.sin(),
                    )
                    .expect("valid"),
                    accuracy_m: rng.random_range(4.0..30.0),
                    suspect: false,
                };
                fixes.push((handles[s], fix));
            }
        }
        SubjectWorld { engine, fixes }
    }

    /// Runs every fix through `evaluate_batch`, 256 fixes a batch; returns the
    /// number of transitions.
    pub fn run_batched(&mut self) -> usize {
        let mut out = Vec::with_capacity(256);
        let mut outcomes = Vec::with_capacity(256);
        let mut transitions = 0;
        for batch in self.fixes.chunks(256) {
            out.clear();
            outcomes.clear();
            self.engine.evaluate_batch(batch, &mut out, &mut outcomes);
            assert!(
                outcomes.iter().all(Result::is_ok),
                "generated fixes are valid"
            );
            transitions += out.len();
        }
        transitions
    }

    /// Runs every fix through `evaluate`, one by one; returns the number of transitions.
    pub fn run(&mut self) -> usize {
        let mut out = Vec::with_capacity(64);
        let mut transitions = 0;
        for (handle, fix) in &self.fixes {
            out.clear();
            self.engine
                .evaluate(*handle, fix, &mut out)
                .expect("generated fixes are valid");
            transitions += out.len();
        }
        transitions
    }
}

/// Scenario 3: a 20,000-vertex city boundary and query points.
pub struct BigPolygon {
    /// The boundary.
    pub polygon: Polygon<f64>,
    /// Engine holding it as zone 1.
    pub engine: Engine,
    /// Queries: a third well inside, a third outside (in and beyond the bounding
    /// box), a third within 50 m of the boundary.
    pub points: Vec<Position>,
}

/// Id of the boundary zone in [`BigPolygon::engine`].
pub const CITY: ZoneId = ZoneId(1);

impl BigPolygon {
    /// A star-shaped, wiggly boundary of `vertices` vertices around Almaty
    /// (radius ~0.15° with several scales of radial noise), and `points` queries.
    pub fn generate(vertices: usize, points: usize) -> BigPolygon {
        let mut rng = StdRng::seed_from_u64(SEED ^ 0xB16);
        let (cx, cy) = (76.92, 43.25);
        let waves: Vec<(f64, f64, f64)> = (0..12)
            .map(|k| {
                let freq = 3.0 * 2f64.powi(k / 2) + f64::from(k);
                (
                    freq,
                    0.02 / (1.0 + f64::from(k)),
                    rng.random_range(0.0..std::f64::consts::TAU),
                )
            })
            .collect();
        let radius = |a: f64| {
            0.15 + waves
                .iter()
                .map(|(f, amp, ph)| amp * (f * a + ph).sin())
                .sum::<f64>()
        };
        let ring: Vec<(f64, f64)> = (0..vertices)
            .map(|k| {
                let a = std::f64::consts::TAU * k as f64 / vertices as f64;
                let r = radius(a) + rng.random_range(-0.0004..0.0004);
                (cx + r * a.cos() / 0.73, cy + r * a.sin())
            })
            .collect();
        let polygon = Polygon::new(LineString::from(ring.clone()), vec![]);
        let mut engine = Engine::new();
        engine
            .upsert_zone(ZoneSpec {
                id: CITY,
                name: "city boundary".into(),
                kind: ZoneKind::Inclusion,
                scope: ZoneScope::Assigned,
                shape: Shape::Polygon(polygon.clone()),
                buffer_m: 0.0,
                schedule: Schedule::Always,
            })
            .expect("valid boundary");
        let pts = (0..points)
            .map(|i| {
                let a: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                let (x, y) = match i % 3 {
                    0 => {
                        let r = rng.random_range(0.0..0.08);
                        (cx + r * a.cos() / 0.73, cy + r * a.sin())
                    }
                    1 => {
                        let r = rng.random_range(0.25..0.6);
                        (cx + r * a.cos() / 0.73, cy + r * a.sin())
                    }
                    _ => {
                        let v = ring[rng.random_range(0..ring.len())];
                        let d = rng.random_range(-50.0..50.0);
                        (v.0 + d / 81_000.0 * a.cos(), v.1 + d / 111_000.0 * a.sin())
                    }
                };
                Position::new(x, y).expect("valid")
            })
            .collect();
        BigPolygon {
            polygon,
            engine,
            points: pts,
        }
    }

    /// How many points the engine finds inside (accuracy `acc`), and how many uncertain.
    pub fn count_engine(&self, acc: f64) -> (usize, usize) {
        let mut inside = 0;
        let mut uncertain = 0;
        for &p in &self.points {
            match self.engine.zone_presence(CITY, p, acc).expect("valid") {
                Presence::Inside => inside += 1,
                Presence::Uncertain => uncertain += 1,
                Presence::Outside => {}
            }
        }
        (inside, uncertain)
    }

    /// How many points `geo::Contains` finds inside.
    pub fn count_geo(&self) -> usize {
        self.points
            .iter()
            .filter(|p| self.polygon.contains(&Point::new(p.lon(), p.lat())))
            .count()
    }
}
