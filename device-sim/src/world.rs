//! The simulated world: Almaty's boundary, shared restricted places, subjects
//! with homes, workplaces, curfews and rules, their victims, and officers.
//!
//! Everything is drawn from seeded streams keyed by id (see `space`), so subject
//! 17 is the same whether the world has 100 subjects or 100,000. Places are
//! chosen so that a subject's ordinary day never breaks a rule: homes and
//! commutes keep clear of the subject's exclusion zones, and victims live far
//! from the subject's routine. Violations happen only when a behaviour
//! (`plan`) puts them there.

use crate::space::{Stream, Xy, rng};
use geofence::geo::{Contains, LineString, Point, Polygon};
use geofence::jiff::civil::Time;
use geofence::{
    CategoryId, DeviceId as EngineDeviceId, Engine, Hysteresis, RuleId, RuleKind, RuleSpec,
    Schedule, Shape, SubjectId, Weekdays, WeeklyWindow, ZoneId, ZoneKind, ZoneScope, ZoneSpec,
};
use rand::RngExt;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::Path;

/// The time zone of every schedule in the simulated world.
pub const TIME_ZONE: &str = "Asia/Almaty";
/// Zone id of the city boundary (an inclusion zone every subject must obey).
pub const CITY_ZONE_ID: u64 = 1;
/// Category of school zones.
pub const SCHOOLS: u32 = 1;
/// Category of playground zones.
pub const PLAYGROUNDS: u32 = 2;
/// Radius of a home (curfew) zone, metres.
pub const HOME_RADIUS_M: f64 = 100.0;
/// Radius of the exclusion zone around a victim's home, metres.
pub const VICTIM_HOME_RADIUS_M: f64 = 300.0;
/// Protected distance around a victim's phone, metres.
pub const PROXIMITY_M: f64 = 1_000.0;
/// How old either party's position may be for proximity, seconds.
pub const PROXIMITY_MAX_AGE_S: i64 = 600;
/// Subjects per officer (Kazakhstan: 300–400 a caseload).
pub const CASELOAD: usize = 300;
/// Officers per supervisor.
pub const TEAM: usize = 5;

/// What to generate.
#[derive(Clone, Debug, Serialize)]
pub struct WorldConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of subjects (bracelets).
    pub subjects: usize,
    /// Share of subjects with a protected victim (exclusion zone + proximity).
    pub victim_share: f64,
    /// Share of subjects barred from the schools category (a fifth of those also
    /// from playgrounds).
    pub category_share: f64,
    /// Share of subjects with one more personal exclusion zone (a polygon).
    pub extra_zone_share: f64,
    /// Share of bracelets that send emtrack JSON instead of binary frames.
    pub json_share: f64,
    /// Share of bracelets whose clock is off by 5 to 120 seconds.
    pub skew_share: f64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 1,
            subjects: 1_000,
            victim_share: 0.15,
            category_share: 0.2,
            extra_zone_share: 0.3,
            json_share: 0.1,
            skew_share: 0.05,
        }
    }
}

/// Inclusion or exclusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Must be inside.
    Inclusion,
    /// Must stay out.
    Exclusion,
}

/// A zone's geometry in local metres.
#[derive(Clone, Debug)]
pub enum ShapeDef {
    /// A simple polygon (outer ring, not closed).
    Polygon(Vec<Xy>),
    /// A circle.
    Circle {
        /// Centre.
        centre: Xy,
        /// Radius, metres.
        radius_m: f64,
    },
}

/// One zone of the world.
#[derive(Clone, Debug)]
pub struct ZoneDef {
    /// Stable id.
    pub id: u64,
    /// Name shown to officers.
    pub name: String,
    /// Inclusion or exclusion.
    pub kind: Kind,
    /// `Some` for global zones of a category.
    pub category: Option<u32>,
    /// Geometry.
    pub shape: ShapeDef,
    /// Cached WGS84 polygon for containment tests.
    polygon: Option<Polygon<f64>>,
}

impl ZoneDef {
    fn new(id: u64, name: String, kind: Kind, category: Option<u32>, shape: ShapeDef) -> ZoneDef {
        let polygon = match &shape {
            ShapeDef::Polygon(ring) => Some(Polygon::new(
                LineString::from(ring.iter().map(|p| p.lonlat()).collect::<Vec<_>>()),
                vec![],
            )),
            ShapeDef::Circle { .. } => None,
        };
        ZoneDef {
            id,
            name,
            kind,
            category,
            shape,
            polygon,
        }
    }

    /// Whether the exact point lies in the zone (haversine for circles).
    pub fn contains(&self, p: Xy) -> bool {
        match (&self.shape, &self.polygon) {
            (ShapeDef::Circle { centre, radius_m }, _) => {
                p.position().distance_m(centre.position()) <= *radius_m
            }
            (ShapeDef::Polygon(_), Some(poly)) => poly.contains(&Point::from(p.lonlat())),
            (ShapeDef::Polygon(_), None) => false,
        }
    }

    /// A centre and a radius that covers the zone, in local metres.
    pub fn bounds(&self) -> (Xy, f64) {
        match &self.shape {
            ShapeDef::Circle { centre, radius_m } => (*centre, *radius_m),
            ShapeDef::Polygon(ring) => {
                let n = ring.len().max(1) as f64;
                let c = Xy::new(
                    ring.iter().map(|p| p.x).sum::<f64>() / n,
                    ring.iter().map(|p| p.y).sum::<f64>() / n,
                );
                (c, ring.iter().map(|p| c.dist(*p)).fold(0.0, f64::max))
            }
        }
    }

    /// How far a segment keeps from the zone (0 when it may touch it).
    pub fn clearance(&self, a: Xy, b: Xy) -> f64 {
        let (c, r) = self.bounds();
        (c.seg_dist(a, b) - r).max(0.0)
    }

    fn geojson(&self) -> Value {
        let (geometry, radius) = match &self.shape {
            ShapeDef::Polygon(ring) => {
                let mut coords: Vec<[f64; 2]> = ring
                    .iter()
                    .map(|p| {
                        let (lon, lat) = p.lonlat();
                        [round7(lon), round7(lat)]
                    })
                    .collect();
                if let Some(&first) = coords.first() {
                    coords.push(first);
                }
                (json!({"type": "Polygon", "coordinates": [coords]}), None)
            }
            ShapeDef::Circle { centre, radius_m } => {
                let (lon, lat) = centre.lonlat();
                (
                    json!({"type": "Point", "coordinates": [round7(lon), round7(lat)]}),
                    Some(*radius_m),
                )
            }
        };
        let mut props = json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "category": self.category,
            "buffer_m": 0.0,
        });
        if let Some(r) = radius {
            props["radius_m"] = json!(r);
        }
        json!({"type": "Feature", "id": self.id, "geometry": geometry, "properties": props})
    }

    /// The zone as the engine takes it (coordinates rounded as exported).
    pub fn spec(&self) -> ZoneSpec {
        let shape = match &self.shape {
            ShapeDef::Polygon(ring) => {
                let pts: Vec<(f64, f64)> = ring
                    .iter()
                    .map(|p| {
                        let (lon, lat) = p.lonlat();
                        (round7(lon), round7(lat))
                    })
                    .collect();
                Shape::Polygon(Polygon::new(LineString::from(pts), vec![]))
            }
            ShapeDef::Circle { centre, radius_m } => {
                let (lon, lat) = centre.lonlat();
                Shape::Circle {
                    centre: geofence::Position::new(round7(lon), round7(lat))
                        .expect("simulated places are valid positions"),
                    radius_m: *radius_m,
                }
            }
        };
        ZoneSpec {
            id: ZoneId(self.id),
            name: self.name.clone(),
            kind: match self.kind {
                Kind::Inclusion => ZoneKind::Inclusion,
                Kind::Exclusion => ZoneKind::Exclusion,
            },
            scope: match self.category {
                Some(c) => ZoneScope::Category(CategoryId(c)),
                None => ZoneScope::Assigned,
            },
            shape,
            buffer_m: 0.0,
            schedule: Schedule::Always,
        }
    }
}

/// Coordinates are exported to 1e-7 degrees, the protocol's resolution.
pub fn round7(v: f64) -> f64 {
    (v * 1e7).round() / 1e7
}

/// What a rule requires (exported to `world.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleDef {
    /// Obey a zone by its kind.
    Zone {
        /// Rule id.
        id: u64,
        /// The zone.
        zone: u64,
    },
    /// Be home during the curfew window, every day, in [`TIME_ZONE`].
    Curfew {
        /// Rule id.
        id: u64,
        /// The home zone.
        zone: u64,
        /// Local start, `HH:MM`.
        start: String,
        /// Local end, `HH:MM` (next day when not after `start`).
        end: String,
    },
    /// Stay out of a category's zones.
    Category {
        /// Rule id.
        id: u64,
        /// The category.
        category: u32,
    },
    /// Keep away from a device.
    Proximity {
        /// Rule id.
        id: u64,
        /// The other party's device id.
        device: String,
        /// Protected distance, metres.
        min_distance_m: f64,
        /// Staleness limit, seconds.
        max_age_s: i64,
    },
}

impl RuleDef {
    /// The rule's id.
    pub fn id(&self) -> u64 {
        match self {
            RuleDef::Zone { id, .. }
            | RuleDef::Curfew { id, .. }
            | RuleDef::Category { id, .. }
            | RuleDef::Proximity { id, .. } => *id,
        }
    }
}

/// How a bracelet encodes its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceFormat {
    /// Binary frames.
    Binary,
    /// emtrack JSON.
    Json,
    /// OwnTracks JSON (victims' phones).
    Owntracks,
}

/// A person under supervision.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Id, from 1.
    pub id: u64,
    /// Case reference shown to officers.
    pub reference: String,
    /// Supervising officer.
    pub officer: u64,
    /// Bracelet id.
    pub device: String,
    /// The bracelet's payload format.
    pub format: DeviceFormat,
    /// The bracelet clock's error, ms (device time = true time + skew).
    pub skew_ms: i64,
    /// Home (centre of the home zone).
    pub home: Xy,
    /// Workplace.
    pub work: Xy,
    /// Home zone id (curfew).
    pub home_zone: u64,
    /// Curfew start hour, local.
    pub curfew_start_h: i8,
    /// Curfew end hour, local (next day).
    pub curfew_end_h: i8,
    /// Index into [`World::victims`].
    pub victim: Option<usize>,
    /// The extra personal exclusion zone, if any.
    pub extra_zone: Option<u64>,
    /// Categories the subject must keep out of.
    pub categories: Vec<u32>,
    /// The rules, in id order.
    pub rules: Vec<RuleDef>,
}

/// A protected person carrying a phone with OwnTracks.
#[derive(Clone, Debug)]
pub struct Victim {
    /// Id, from 1.
    pub id: u64,
    /// Phone device id (`ot:victim-{id}:phone`).
    pub device: String,
    /// OwnTracks user segment.
    pub user: String,
    /// Home.
    pub home: Xy,
    /// Where the victim goes every afternoon.
    pub errand: Xy,
    /// The exclusion zone around the home.
    pub home_zone: u64,
    /// The subject they are protected from.
    pub subject: u64,
}

/// A probation officer, supervisor or the duty desk.
#[derive(Clone, Debug, Serialize)]
pub struct Officer {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `officer`, `supervisor` or `duty_desk`.
    pub role: &'static str,
    /// Who this officer escalates to.
    pub supervisor: Option<u64>,
}

/// The whole world.
#[derive(Clone, Debug)]
pub struct World {
    /// How it was generated.
    pub config: WorldConfig,
    /// The city boundary ring (inclusion zone [`CITY_ZONE_ID`]).
    pub city: ZoneDef,
    /// Schools and playgrounds.
    pub places: Vec<ZoneDef>,
    /// Homes, victims' homes and extra exclusion zones, by subject.
    pub personal: Vec<ZoneDef>,
    /// Subjects, by id (index = id − 1).
    pub subjects: Vec<Subject>,
    /// Victims, by id (index = id − 1).
    pub victims: Vec<Victim>,
    /// Officers, supervisors, duty desk.
    pub officers: Vec<Officer>,
}

/// The fixed outline of the simulated city: about 640 km², irregular, around
/// Almaty's centre. Fixed, not seeded, so every world shares its geography.
fn city_ring() -> Vec<Xy> {
    (0..36)
        .map(|i| {
            let th = f64::from(i) / 36.0 * std::f64::consts::TAU;
            let r = 14_000.0
                * (1.0
                    + 0.12 * (3.0 * th).sin()
                    + 0.07 * (5.0 * th).cos()
                    + 0.04 * (7.0 * th).sin());
            Xy::new(0.0, 0.0).offset(r, th)
        })
        .collect()
}

/// Distance from `p` to the city boundary.
fn to_boundary(ring: &[Xy], p: Xy) -> f64 {
    (0..ring.len())
        .map(|i| p.seg_dist(ring[i], ring[(i + 1) % ring.len()]))
        .fold(f64::INFINITY, f64::min)
}

fn rect(c: Xy, w: f64, h: f64, rot: f64) -> Vec<Xy> {
    [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
        .iter()
        .map(|&(sx, sy)| {
            let (x, y) = (sx * w / 2.0, sy * h / 2.0);
            Xy::new(
                c.x + x * rot.cos() - y * rot.sin(),
                c.y + x * rot.sin() + y * rot.cos(),
            )
        })
        .collect()
}

/// A uniform point of the city at least `margin` inside its boundary.
fn city_point(rng: &mut StdRng, city: &ZoneDef, ring: &[Xy], margin: f64) -> Xy {
    loop {
        let p = Xy::new(
            rng.random_range(-16_000.0..16_000.0),
            rng.random_range(-16_000.0..16_000.0),
        );
        if city.contains(p) && to_boundary(ring, p) >= margin {
            return p;
        }
    }
}

impl World {
    /// Generates the world.
    // Over 80 lines: it draws from a seeded random stream in one fixed order, and
    // the same seed must give the same bytes (ARCHITECTURE.md). One straight
    // function keeps that order visible; split, a reordered draw would hide in a call.
    pub fn generate(config: WorldConfig) -> World {
        let ring = city_ring();
        let city = ZoneDef::new(
            CITY_ZONE_ID,
            "Almaty city boundary".into(),
            Kind::Inclusion,
            None,
            ShapeDef::Polygon(ring.clone()),
        );
        let mut r = rng(config.seed, Stream::Places, 0, 0);
        let mut places = Vec::new();
        for i in 0..150u64 {
            let c = city_point(&mut r, &city, &ring, 1_000.0);
            let (w, h, rot) = (
                r.random_range(90.0..160.0),
                r.random_range(70.0..120.0),
                r.random_range(0.0..std::f64::consts::PI),
            );
            places.push(ZoneDef::new(
                1_000 + i,
                format!("School No. {}", i + 1),
                Kind::Exclusion,
                Some(SCHOOLS),
                ShapeDef::Polygon(rect(c, w, h, rot)),
            ));
        }
        for i in 0..80u64 {
            let c = city_point(&mut r, &city, &ring, 1_000.0);
            places.push(ZoneDef::new(
                2_000 + i,
                format!("Playground {}", i + 1),
                Kind::Exclusion,
                Some(PLAYGROUNDS),
                ShapeDef::Circle {
                    centre: c,
                    radius_m: r.random_range(40.0..80.0),
                },
            ));
        }

        let n_officers = config.subjects.div_ceil(CASELOAD).max(1);
        let n_supervisors = n_officers.div_ceil(TEAM);
        let duty = 1u64;
        let mut officers = vec![Officer {
            id: duty,
            name: "Duty desk".into(),
            role: "duty_desk",
            supervisor: None,
        }];
        for s in 0..n_supervisors as u64 {
            officers.push(Officer {
                id: 100 + s,
                name: format!("Supervisor {}", s + 1),
                role: "supervisor",
                supervisor: Some(duty),
            });
        }
        for o in 0..n_officers as u64 {
            officers.push(Officer {
                id: 1_000 + o,
                name: format!("Officer {}", o + 1),
                role: "officer",
                supervisor: Some(100 + o / TEAM as u64),
            });
        }

        let mut world = World {
            config,
            city,
            places,
            personal: Vec::new(),
            subjects: Vec::new(),
            victims: Vec::new(),
            officers,
        };
        for id in 1..=world.config.subjects as u64 {
            world.add_subject(id, &ring);
        }
        world
    }

    // Over 80 lines: it draws from a seeded random stream in one fixed order, and
    // the same seed must give the same bytes (ARCHITECTURE.md). One straight
    // function keeps that order visible; split, a reordered draw would hide in a call.
    fn add_subject(&mut self, id: u64, ring: &[Xy]) {
        let cfg = &self.config;
        let mut r = rng(cfg.seed, Stream::Subject, id, 0);
        let mut categories = Vec::new();
        if r.random_bool(cfg.category_share) {
            categories.push(SCHOOLS);
            if r.random_bool(0.2) {
                categories.push(PLAYGROUNDS);
            }
        }
        let restricted: Vec<&ZoneDef> = self
            .places
            .iter()
            .filter(|z| z.category.is_some_and(|c| categories.contains(&c)))
            .collect();
        let clear_of =
            |a: Xy, b: Xy, margin: f64| restricted.iter().all(|z| z.clearance(a, b) >= margin);
        let home = loop {
            let h = city_point(&mut r, &self.city, ring, 3_000.0);
            if clear_of(h, h, 400.0) {
                break h;
            }
        };
        let mut work = home;
        for attempt in 0..60 {
            let d = if attempt < 40 {
                r.random_range(1_500.0..8_000.0)
            } else {
                r.random_range(500.0..1_500.0)
            };
            let w = home.offset(d, r.random_range(0.0..std::f64::consts::TAU));
            if self.city.contains(w)
                && to_boundary(ring, w) >= 3_000.0
                && clear_of(home, w, 300.0)
                && clear_of(w, w, 400.0)
            {
                work = w;
                break;
            }
        }
        let routine_dist = |p: Xy| p.seg_dist(home, work);

        let mut personal = Vec::new();
        let home_zone = 100_000 + id * 10;
        personal.push(ZoneDef::new(
            home_zone,
            format!("Home of S-{id:06}"),
            Kind::Inclusion,
            None,
            ShapeDef::Circle {
                centre: home,
                radius_m: HOME_RADIUS_M,
            },
        ));
        let mut victim = None;
        if r.random_bool(cfg.victim_share) {
            for _ in 0..40 {
                let vh = city_point(&mut r, &self.city, ring, 2_500.0);
                if routine_dist(vh) < 4_500.0 {
                    continue;
                }
                let errand = vh.offset(
                    r.random_range(1_200.0..1_500.0),
                    r.random_range(0.0..std::f64::consts::TAU),
                );
                if !self.city.contains(errand) || to_boundary(ring, errand) < 1_000.0 {
                    continue;
                }
                let vid = self.victims.len() as u64 + 1;
                let zone = home_zone + 1;
                personal.push(ZoneDef::new(
                    zone,
                    format!("Protected address V-{vid:06}"),
                    Kind::Exclusion,
                    None,
                    ShapeDef::Circle {
                        centre: vh,
                        radius_m: VICTIM_HOME_RADIUS_M,
                    },
                ));
                let user = format!("victim-{vid}");
                self.victims.push(Victim {
                    id: vid,
                    device: format!("ot:{user}:phone"),
                    user,
                    home: vh,
                    errand,
                    home_zone: zone,
                    subject: id,
                });
                victim = Some(self.victims.len() - 1);
                break;
            }
        }
        let mut extra_zone = None;
        if r.random_bool(cfg.extra_zone_share) {
            for _ in 0..40 {
                let c = home.offset(
                    r.random_range(2_000.0..6_000.0),
                    r.random_range(0.0..std::f64::consts::TAU),
                );
                if !self.city.contains(c)
                    || to_boundary(ring, c) < 1_000.0
                    || routine_dist(c) < 1_000.0
                {
                    continue;
                }
                let zone = home_zone + 2;
                personal.push(ZoneDef::new(
                    zone,
                    format!("Exclusion zone of S-{id:06}"),
                    Kind::Exclusion,
                    None,
                    ShapeDef::Polygon(rect(
                        c,
                        r.random_range(150.0..250.0),
                        r.random_range(100.0..200.0),
                        r.random_range(0.0..std::f64::consts::PI),
                    )),
                ));
                extra_zone = Some(zone);
                break;
            }
        }
        let curfew_start_h = [21, 22, 22, 23][r.random_range(0..4)];
        let mut rules = vec![
            RuleDef::Zone {
                id: id * 10,
                zone: CITY_ZONE_ID,
            },
            RuleDef::Curfew {
                id: id * 10 + 1,
                zone: home_zone,
                start: format!("{curfew_start_h:02}:00"),
                end: "06:00".into(),
            },
        ];
        if let Some(v) = victim.map(|i| &self.victims[i]) {
            rules.push(RuleDef::Zone {
                id: id * 10 + 2,
                zone: v.home_zone,
            });
            rules.push(RuleDef::Proximity {
                id: id * 10 + 3,
                device: v.device.clone(),
                min_distance_m: PROXIMITY_M,
                max_age_s: PROXIMITY_MAX_AGE_S,
            });
        }
        if let Some(z) = extra_zone {
            rules.push(RuleDef::Zone {
                id: id * 10 + 4,
                zone: z,
            });
        }
        for (k, &c) in categories.iter().enumerate() {
            rules.push(RuleDef::Category {
                id: id * 10 + 5 + k as u64,
                category: c,
            });
        }
        let format = if r.random_bool(cfg.json_share) {
            DeviceFormat::Json
        } else {
            DeviceFormat::Binary
        };
        let skew_ms = if r.random_bool(cfg.skew_share) {
            let s = r.random_range(5_000..120_000);
            if r.random_bool(0.5) { s } else { -s }
        } else {
            0
        };
        let officer = 1_000 + (id - 1) / CASELOAD as u64;
        self.personal.extend(personal);
        self.subjects.push(Subject {
            id,
            reference: format!("S-{id:06}"),
            officer,
            device: format!("EM-{id:06}"),
            format,
            skew_ms,
            home,
            work,
            home_zone,
            curfew_start_h,
            curfew_end_h: 6,
            victim,
            extra_zone,
            categories,
            rules,
        });
    }

    /// A zone by id.
    pub fn zone(&self, id: u64) -> Option<&ZoneDef> {
        if id == CITY_ZONE_ID {
            return Some(&self.city);
        }
        self.places
            .iter()
            .chain(self.personal.iter())
            .find(|z| z.id == id)
    }

    /// Every zone: the city, then shared places, then personal zones.
    pub fn zones(&self) -> impl Iterator<Item = &ZoneDef> {
        std::iter::once(&self.city)
            .chain(self.places.iter())
            .chain(self.personal.iter())
    }

    /// The shared zones of a category.
    pub fn category_zones(&self, category: u32) -> impl Iterator<Item = &ZoneDef> {
        self.places
            .iter()
            .filter(move |z| z.category == Some(category))
    }

    /// The exclusion zones a subject must keep out of (personal and by category).
    pub fn exclusions_of<'a>(&'a self, s: &'a Subject) -> impl Iterator<Item = &'a ZoneDef> {
        s.rules.iter().flat_map(move |r| -> Vec<&'a ZoneDef> {
            match r {
                RuleDef::Zone { zone, .. } => self
                    .zone(*zone)
                    .filter(|z| z.kind == Kind::Exclusion)
                    .into_iter()
                    .collect(),
                RuleDef::Category { category, .. } => self.category_zones(*category).collect(),
                _ => Vec::new(),
            }
        })
    }

    /// The engine's id for a device: bracelets by subject id, phones above 2^32.
    pub fn engine_device(&self, device: &str) -> Option<EngineDeviceId> {
        if let Some(n) = device.strip_prefix("EM-") {
            return n.parse().ok().map(EngineDeviceId);
        }
        self.victims
            .iter()
            .find(|v| v.device == device)
            .map(|v| EngineDeviceId((1 << 32) | v.id))
    }

    /// The subject's rules as the engine takes them.
    pub fn rule_specs(&self, s: &Subject) -> Vec<RuleSpec> {
        s.rules
            .iter()
            .map(|r| match r {
                RuleDef::Zone { id, zone } => {
                    RuleSpec::new(RuleId(*id), RuleKind::Zone(ZoneId(*zone)))
                }
                RuleDef::Curfew { id, zone, .. } => {
                    let window = WeeklyWindow {
                        days: Weekdays::EVERY_DAY,
                        start: Time::constant(s.curfew_start_h, 0, 0, 0),
                        end: Time::constant(s.curfew_end_h, 0, 0, 0),
                    };
                    RuleSpec::new(RuleId(*id), RuleKind::Curfew(ZoneId(*zone))).with_schedule(
                        Schedule::weekly(TIME_ZONE, [window])
                            .expect("Asia/Almaty is in the bundled tzdb"),
                    )
                }
                RuleDef::Category { id, category } => {
                    RuleSpec::new(RuleId(*id), RuleKind::Category(CategoryId(*category)))
                }
                RuleDef::Proximity {
                    id,
                    device,
                    min_distance_m,
                    max_age_s,
                } => RuleSpec::new(
                    RuleId(*id),
                    RuleKind::Proximity {
                        device: self
                            .engine_device(device)
                            .expect("a proximity rule names a victim phone of this world"),
                        min_distance_m: *min_distance_m,
                        max_age: geofence::jiff::SignedDuration::from_secs(*max_age_s),
                    },
                )
                .with_hysteresis(Hysteresis::PROXIMITY),
            })
            .collect()
    }

    /// An engine loaded with every zone and subject, as ingest will load it.
    pub fn engine(&self) -> Result<Engine, geofence::EngineError> {
        let mut engine = Engine::new();
        for z in self.zones() {
            engine.upsert_zone(z.spec())?;
        }
        let mut out = Vec::new();
        for s in &self.subjects {
            engine.upsert_subject(SubjectId(s.id), self.rule_specs(s), &mut out)?;
        }
        Ok(engine)
    }

    /// Writes `zones.geojson` (RFC 7946) and `world.json` into `dir`.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let zones = json!({
            "type": "FeatureCollection",
            "features": self.zones().map(ZoneDef::geojson).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join("zones.geojson"), to_pretty(&zones))?;
        std::fs::write(dir.join("world.json"), to_pretty(&self.world_json()))?;
        Ok(())
    }

    /// Subjects, devices, assignments, victims and officers, as exported.
    pub fn world_json(&self) -> Value {
        let ll = |p: Xy| {
            let (lon, lat) = p.lonlat();
            json!([round7(lon), round7(lat)])
        };
        let subjects: Vec<Value> = self
            .subjects
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "reference": s.reference,
                    "officer": s.officer,
                    "home": ll(s.home),
                    "work": ll(s.work),
                    "rules": s.rules,
                })
            })
            .collect();
        let mut devices: Vec<Value> = self
            .subjects
            .iter()
            .map(|s| {
                json!({
                    "id": s.device,
                    "kind": "bracelet",
                    "format": s.format,
                    "report_interval_s": crate::plan::FIX_INTERVAL_S,
                })
            })
            .collect();
        devices.extend(self.victims.iter().map(|v| {
            json!({
                "id": v.device,
                "kind": "victim_phone",
                "format": DeviceFormat::Owntracks,
                "report_interval_s": crate::plan::FIX_INTERVAL_S,
            })
        }));
        let assignments: Vec<Value> = self
            .subjects
            .iter()
            .map(|s| json!({"device": s.device, "subject": s.id}))
            .collect();
        let victims: Vec<Value> = self
            .victims
            .iter()
            .map(|v| json!({"id": v.id, "device": v.device, "protected_from": v.subject, "home_zone": v.home_zone}))
            .collect();
        json!({
            "format": "emtrack-world/1",
            "config": self.config,
            "time_zone": TIME_ZONE,
            "categories": [
                {"id": SCHOOLS, "name": "schools"},
                {"id": PLAYGROUNDS, "name": "playgrounds"},
            ],
            "officers": self.officers,
            "subjects": subjects,
            "devices": devices,
            "assignments": assignments,
            "victims": victims,
        })
    }
}

/// Pretty JSON with a trailing newline (deterministic: serde_json keeps insertion
/// order only with `preserve_order`, which is off, so keys are sorted).
pub fn to_pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}
