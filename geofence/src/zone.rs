//! Zones: shape, kind, scope, buffer and the three-valued zone test.
//!
//! # Boundary semantics
//! Let `s` be the signed distance in metres from the fix to the zone's boundary
//! (negative inside), `a` the fix's accuracy radius and `b` the zone's buffer.
//! The *buffered zone* is every point within `b` metres of the zone, for both
//! kinds: an exclusion zone's alarm area grows, an inclusion zone's tolerance grows.
//!
//! | result      | condition      | meaning                                                   |
//! |-------------|----------------|-----------------------------------------------------------|
//! | `Inside`    | `s + a <= b`   | the whole accuracy disc lies in the buffered zone         |
//! | `Outside`   | `s - a > b`    | the whole accuracy disc lies outside the buffered zone    |
//! | `Uncertain` | otherwise      | the accuracy disc crosses the buffered boundary           |
//!
//! Zones are closed sets: with `a = b = 0` a fix exactly on the boundary is
//! `Inside`. So touching an exclusion zone's edge is entering it, and standing on
//! an inclusion zone's edge is still inside it. With `a = 0` no result is ever
//! `Uncertain`. For polygons the depth of an inside point is measured to the
//! polygon's own boundary, so in a multipolygon whose parts touch, a point near the
//! shared edge can be reported `Uncertain` where a union would say `Inside`: the
//! test errs towards `Uncertain`, never towards a wrong definite answer.

use crate::coord::{Envelope, Position, Probe, lat_degrees_covering, lon_degrees_covering};
use crate::error::ZoneError;
use crate::id::{CategoryId, ZoneId};
use crate::polygon::PreparedPolygon;
use crate::schedule::{Schedule, ScheduleCursor};
use geo::Validation;
use jiff::Timestamp;

/// Largest buffer a zone may have, in metres.
pub const MAX_BUFFER_M: f64 = 50_000.0;
/// Largest circle radius, in metres.
pub const MAX_RADIUS_M: f64 = 1_000_000.0;

/// Whether the subject must stay inside or outside the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZoneKind {
    /// The subject must be inside (home during curfew, the city under restriction of liberty).
    Inclusion,
    /// The subject must stay out (a victim's home, a school).
    Exclusion,
}

/// Who a zone applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZoneScope {
    /// Applies to the subjects whose rules name it by id (one subject's home, or a
    /// city boundary named by many subjects' rules). Checked directly per fix.
    Assigned,
    /// A global exclusion zone of a restriction category ("schools"). It applies to
    /// every subject with a [`RuleKind::Category`](crate::RuleKind::Category) rule
    /// for that category, and is found through the spatial index.
    Category(CategoryId),
}

/// A zone's geometry, in WGS84 degrees.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A polygon, with holes.
    Polygon(geo::Polygon<f64>),
    /// Several polygons; a fix is inside if it is inside any of them.
    MultiPolygon(geo::MultiPolygon<f64>),
    /// A circle around a centre.
    Circle {
        /// The centre.
        centre: Position,
        /// The radius in metres, measured along the sphere.
        radius_m: f64,
    },
}

/// One version of a zone in the caller's record of orders: a late fix is
/// judged against the version in force at its own time
/// ([`Engine::upsert_zone_versions`](crate::Engine::upsert_zone_versions)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneVersion {
    /// The caller's id of the version (emtrack: the zone's version number
    /// in `order_versions`); transitions judged under it name it.
    pub id: u64,
    /// When it came into force.
    pub since: Timestamp,
}

/// Everything that defines a zone.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSpec {
    /// Stable id.
    pub id: ZoneId,
    /// Human-readable name, for officers.
    pub name: String,
    /// Inclusion or exclusion.
    pub kind: ZoneKind,
    /// Assigned by id, or global by category.
    pub scope: ZoneScope,
    /// The geometry.
    pub shape: Shape,
    /// Metres added around the shape (see the module docs).
    pub buffer_m: f64,
    /// When the zone imposes anything at all (e.g. a school zone on weekdays only).
    pub schedule: Schedule,
}

/// Result of testing one fix against one zone (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Presence {
    /// The accuracy disc lies wholly in the buffered zone.
    Inside,
    /// The accuracy disc lies wholly outside the buffered zone.
    Outside,
    /// The accuracy disc crosses the buffered boundary.
    Uncertain,
}

#[derive(Clone, Debug)]
pub(crate) enum Geometry {
    Circle { centre: Position, radius_m: f64 },
    Polygon(PreparedPolygon),
    MultiPolygon(Vec<PreparedPolygon>),
}

/// A zone prepared for the hot path.
///
/// `repr(C)` fixes the field order: what a zone test reads (envelope, buffer,
/// kind, scope, then the geometry) comes first, on adjacent cache lines; the
/// schedule, its cursor and the definition follow. Measured on `global_zones_10k`.
#[derive(Clone, Debug)]
#[repr(C)]
pub(crate) struct Zone {
    /// Bounding box of the buffered zone.
    pub(crate) envelope: Envelope,
    buffer_m: f64,
    pub(crate) kind: ZoneKind,
    pub(crate) scope: ZoneScope,
    geometry: Geometry,
    pub(crate) id: ZoneId,
    pub(crate) schedule: Schedule,
    /// Shared by every subject's fixes: fixes arrive roughly in time order, so one
    /// cached schedule segment serves nearly all of them.
    pub(crate) cursor: ScheduleCursor,
    /// Cold: only read by tools, kept off the hot cache lines.
    spec: Box<ZoneSpec>,
    /// The caller's id of this version (`None`: unversioned).
    pub(crate) version: Option<u64>,
    /// When this version came into force (ms; `i64::MIN`: since ever).
    pub(crate) since: i64,
    /// The versions in force before `since`, oldest first, each until the
    /// next one's `since` (assigned zones only; empty for most zones).
    pub(crate) earlier: Vec<Zone>,
}

impl Zone {
    /// Validates and prepares a zone. Cost is linear in the vertex count (small
    /// polygons also get geo's validity check), paid once at load or on change.
    pub(crate) fn prepare(spec: ZoneSpec) -> Result<Zone, ZoneError> {
        if !spec.buffer_m.is_finite() || !(0.0..=MAX_BUFFER_M).contains(&spec.buffer_m) {
            return Err(ZoneError::BadBuffer(spec.buffer_m));
        }
        if matches!(spec.scope, ZoneScope::Category(_)) && spec.kind != ZoneKind::Exclusion {
            return Err(ZoneError::CategoryZoneMustBeExclusion(spec.id));
        }
        let (geometry, raw_env) = match &spec.shape {
            Shape::Circle { centre, radius_m } => {
                let r = *radius_m;
                if !r.is_finite() || r <= 0.0 || r > MAX_RADIUS_M {
                    return Err(ZoneError::BadRadius(r));
                }
                let dlat = lat_degrees_covering(r);
                let dlon = lon_degrees_covering(r, centre.lat().abs());
                let env = Envelope {
                    min: [centre.lon() - dlon, centre.lat() - dlat],
                    max: [centre.lon() + dlon, centre.lat() + dlat],
                };
                let reach = env.buffered(spec.buffer_m);
                if reach.min[1] <= -90.0
                    || reach.max[1] >= 90.0
                    || reach.min[0] < -180.0
                    || reach.max[0] > 180.0
                {
                    return Err(ZoneError::CircleTooCloseToPoleOrAntimeridian);
                }
                (
                    Geometry::Circle {
                        centre: *centre,
                        radius_m: r,
                    },
                    env,
                )
            }
            Shape::Polygon(p) => {
                let part = prepare_polygon(p, 0)?;
                let env = part.envelope();
                (Geometry::Polygon(part), env)
            }
            Shape::MultiPolygon(mp) => {
                let mut parts = Vec::with_capacity(mp.0.len());
                let mut ring = 0;
                for p in &mp.0 {
                    parts.push(prepare_polygon(p, ring)?);
                    ring += 1 + p.interiors().len();
                }
                let env = Envelope::of_points(
                    parts
                        .iter()
                        .flat_map(|p| [p.envelope().min, p.envelope().max]),
                )
                .ok_or(ZoneError::Degenerate)?;
                (Geometry::MultiPolygon(parts), env)
            }
        };
        Ok(Zone {
            id: spec.id,
            kind: spec.kind,
            scope: spec.scope,
            schedule: spec.schedule.clone(),
            cursor: ScheduleCursor::default(),
            buffer_m: spec.buffer_m,
            geometry,
            envelope: raw_env.buffered(spec.buffer_m),
            spec: Box::new(spec),
            version: None,
            since: i64::MIN,
            earlier: Vec::new(),
        })
    }

    /// Which version judges a fix at `t`: `None` for this one, else the index
    /// in `earlier` of the last version that came into force at or before
    /// `t` (the oldest known for a fix older than every version: the record
    /// says nothing earlier).
    #[inline]
    pub(crate) fn version_index(&self, t: i64) -> Option<usize> {
        if t >= self.since || self.earlier.is_empty() {
            return None;
        }
        Some(
            self.earlier
                .partition_point(|z| z.since <= t)
                .saturating_sub(1),
        )
    }

    /// The version in force at `t` (see [`Zone::version_index`]).
    #[inline]
    pub(crate) fn at(&mut self, t: i64) -> &mut Zone {
        match self.version_index(t) {
            Some(i) if i < self.earlier.len() => &mut self.earlier[i],
            _ => self,
        }
    }

    /// The definition this zone was prepared from.
    pub(crate) fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    /// Number of distinct vertices (0 for circles).
    pub(crate) fn vertex_count(&self) -> usize {
        match &self.geometry {
            Geometry::Circle { .. } => 0,
            Geometry::Polygon(p) => p.vertex_count(),
            Geometry::MultiPolygon(parts) => parts.iter().map(PreparedPolygon::vertex_count).sum(),
        }
    }

    /// Tests a fix against the buffered zone.
    #[inline]
    pub(crate) fn presence(&self, probe: &Probe) -> Presence {
        if !self.envelope.intersects(&probe.env) {
            return Presence::Outside;
        }
        let (a, b) = (probe.accuracy_m, self.buffer_m);
        match &self.geometry {
            Geometry::Circle { centre, radius_m } => {
                classify_signed(probe.pos.distance_m(*centre) - radius_m, a, b)
            }
            Geometry::Polygon(part) => {
                polygon_presence(part, probe.pos.lon(), probe.pos.lat(), a, b)
            }
            Geometry::MultiPolygon(parts) => {
                let (x, y) = (probe.pos.lon(), probe.pos.lat());
                let mut uncertain = false;
                for part in parts {
                    match polygon_presence(part, x, y, a, b) {
                        Presence::Inside => return Presence::Inside,
                        Presence::Uncertain => uncertain = true,
                        Presence::Outside => {}
                    }
                }
                if uncertain {
                    Presence::Uncertain
                } else {
                    Presence::Outside
                }
            }
        }
    }
}

/// The table in the module docs, for a known signed distance.
#[inline]
pub(crate) fn classify_signed(s: f64, a: f64, b: f64) -> Presence {
    if s + a <= b {
        Presence::Inside
    } else if s - a > b {
        Presence::Outside
    } else {
        Presence::Uncertain
    }
}

/// The same table for a polygon, asking for the boundary distance only when the
/// accuracy or buffer makes it matter, and only up to the radius that decides.
#[inline]
fn polygon_presence(part: &PreparedPolygon, x: f64, y: f64, a: f64, b: f64) -> Presence {
    if part.contains(x, y) {
        // s = -depth. Inside iff depth >= a - b.
        if a <= b {
            return Presence::Inside;
        }
        match part.boundary_within(x, y, a - b) {
            Some(depth) if depth < a - b => Presence::Uncertain,
            _ => Presence::Inside,
        }
    } else {
        let reach = a + b;
        if reach == 0.0 {
            return Presence::Outside;
        }
        match part.boundary_within(x, y, reach) {
            None => Presence::Outside,
            Some(s) if s + a <= b => Presence::Inside,
            Some(_) => Presence::Uncertain,
        }
    }
}

fn prepare_polygon(p: &geo::Polygon<f64>, first_ring: usize) -> Result<PreparedPolygon, ZoneError> {
    let mut rings = Vec::with_capacity(1 + p.interiors().len());
    for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
        let mut pts = Vec::with_capacity(ring.0.len());
        for c in &ring.0 {
            Position::new(c.x, c.y)?;
            pts.push([c.x, c.y]);
        }
        rings.push(pts);
    }
    let prepared = PreparedPolygon::new(&rings, first_ring)?;
    // Small polygons get geo's full OGC validity check (cheap at this size).
    // Grid polygons were checked for crossing edges in linear time while
    // being prepared; geo's check is quadratic.
    if matches!(prepared, PreparedPolygon::Small(_))
        && let Some(why) = p.validation_errors().first()
    {
        return Err(ZoneError::InvalidGeometry(why.to_string()));
    }
    Ok(prepared)
}
