//! Typed errors. Every message says what was wrong and what to do about it.

use crate::id::{RuleId, SubjectId, ZoneId};
use std::fmt;

/// A coordinate that is not a WGS84 longitude/latitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoordError {
    /// NaN or infinite.
    NotFinite {
        /// The longitude as given.
        lon: f64,
        /// The latitude as given.
        lat: f64,
    },
    /// Longitude outside [-180, 180].
    LongitudeOutOfRange(f64),
    /// Latitude outside [-90, 90].
    LatitudeOutOfRange(f64),
}

impl fmt::Display for CoordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordError::NotFinite { lon, lat } => {
                write!(
                    f,
                    "coordinate ({lon}, {lat}) is not finite; send WGS84 degrees"
                )
            }
            CoordError::LongitudeOutOfRange(v) => {
                write!(
                    f,
                    "longitude {v} is outside [-180, 180]; check the lon/lat order"
                )
            }
            CoordError::LatitudeOutOfRange(v) => {
                write!(
                    f,
                    "latitude {v} is outside [-90, 90]; check the lon/lat order"
                )
            }
        }
    }
}

impl std::error::Error for CoordError {}

/// Why a zone definition was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum ZoneError {
    /// A vertex or centre is not a valid coordinate.
    Coord(CoordError),
    /// A ring has fewer than three distinct vertices.
    TooFewVertices {
        /// 0 is the exterior ring, 1.. the holes, counted across a multipolygon.
        ring: usize,
    },
    /// The geometry has no area (all vertices on a line, or an empty multipolygon).
    Degenerate,
    /// An edge spans more than 180° of longitude, i.e. the ring crosses the antimeridian.
    CrossesAntimeridian,
    /// The geometry is not a valid (OGC simple features) polygon.
    InvalidGeometry(String),
    /// The buffer is negative, not finite or larger than [`MAX_BUFFER_M`](crate::MAX_BUFFER_M).
    BadBuffer(f64),
    /// The circle radius is not positive and finite, or larger than [`MAX_RADIUS_M`](crate::MAX_RADIUS_M).
    BadRadius(f64),
    /// A circle (with its buffer) reaches a pole or crosses the antimeridian.
    CircleTooCloseToPoleOrAntimeridian,
    /// Global category zones must be exclusion zones.
    CategoryZoneMustBeExclusion(ZoneId),
    /// No zone has this id.
    Unknown(ZoneId),
    /// An earlier version given with a zone is of another zone, or did not
    /// come into force before the current one.
    VersionMismatch {
        /// The zone.
        zone: ZoneId,
        /// What is wrong.
        why: &'static str,
    },
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneError::Coord(e) => write!(f, "bad vertex: {e}"),
            ZoneError::TooFewVertices { ring } => {
                write!(f, "ring {ring} has fewer than 3 distinct vertices")
            }
            ZoneError::Degenerate => write!(f, "the geometry has no area"),
            ZoneError::CrossesAntimeridian => write!(
                f,
                "an edge spans more than 180° of longitude (the zone crosses the antimeridian); \
                 split it into two polygons of a multipolygon at ±180°"
            ),
            ZoneError::InvalidGeometry(why) => {
                write!(
                    f,
                    "invalid polygon: {why}; fix the rings (no self-intersections, holes inside)"
                )
            }
            ZoneError::BadBuffer(b) => write!(
                f,
                "buffer {b} m must be finite and within 0..={} m",
                crate::MAX_BUFFER_M
            ),
            ZoneError::BadRadius(r) => write!(
                f,
                "radius {r} m must be finite and within (0, {}] m",
                crate::MAX_RADIUS_M
            ),
            ZoneError::CircleTooCloseToPoleOrAntimeridian => write!(
                f,
                "the circle reaches a pole or crosses the antimeridian; use a polygon instead"
            ),
            ZoneError::VersionMismatch { zone, why } => {
                write!(f, "zone {} versions: {why}", zone.0)
            }
            ZoneError::CategoryZoneMustBeExclusion(id) => write!(
                f,
                "{id} is a category (global) zone but not an exclusion zone; assign inclusion \
                 zones to subjects by id instead"
            ),
            ZoneError::Unknown(id) => write!(f, "{id} does not exist"),
        }
    }
}

impl std::error::Error for ZoneError {}

impl From<CoordError> for ZoneError {
    fn from(e: CoordError) -> Self {
        ZoneError::Coord(e)
    }
}

/// Why a schedule was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleError {
    /// The IANA time-zone name is not in the bundled database.
    UnknownTimeZone(String),
    /// A weekly window names no weekday.
    NoWeekdays,
    /// A dated exception ends before it starts, or cannot be placed in the time zone.
    BadException(String),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::UnknownTimeZone(name) => write!(
                f,
                "unknown time zone {name:?}; use an IANA name such as \"Asia/Almaty\""
            ),
            ScheduleError::NoWeekdays => {
                write!(f, "a weekly window must name at least one weekday")
            }
            ScheduleError::BadException(why) => write!(f, "bad dated exception: {why}"),
        }
    }
}

impl std::error::Error for ScheduleError {}

/// Why the engine refused a call.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineError {
    /// A zone could not be prepared.
    Zone(ZoneError),
    /// The subject handle or id is not registered (or was removed).
    UnknownSubject,
    /// A rule names a zone that does not exist.
    RuleZoneUnknown {
        /// The subject whose rule it is.
        subject: SubjectId,
        /// The rule.
        rule: RuleId,
        /// The zone it names.
        zone: ZoneId,
    },
    /// A curfew's zone must be an inclusion zone (the subject's home).
    CurfewZoneNotInclusion {
        /// The rule.
        rule: RuleId,
        /// The zone it names.
        zone: ZoneId,
    },
    /// Two rules of one subject share an id.
    DuplicateRule(RuleId),
    /// A proximity rule's distance or age limit is not positive and finite.
    BadProximity(RuleId),
    /// A hysteresis setting is out of range (e.g. zero fixes).
    BadHysteresis(RuleId),
    /// A zone is still named by a rule and cannot be removed.
    ZoneInUse {
        /// The zone.
        zone: ZoneId,
        /// A subject whose rule names it.
        subject: SubjectId,
    },
    /// The fix's accuracy radius is negative, not finite or beyond
    /// [`MAX_ACCURACY_M`](crate::MAX_ACCURACY_M).
    BadAccuracy(f64),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Zone(e) => e.fmt(f),
            EngineError::UnknownSubject => {
                write!(
                    f,
                    "unknown subject; register it with Engine::upsert_subject first"
                )
            }
            EngineError::RuleZoneUnknown {
                subject,
                rule,
                zone,
            } => write!(
                f,
                "{rule} of {subject} names {zone}, which does not exist; add the zone first"
            ),
            EngineError::CurfewZoneNotInclusion { rule, zone } => write!(
                f,
                "curfew {rule} names {zone}, which is not an inclusion zone; a curfew needs the \
                 subject's home as an inclusion zone"
            ),
            EngineError::DuplicateRule(id) => write!(f, "{id} appears twice for one subject"),
            EngineError::BadProximity(id) => write!(
                f,
                "{id}: proximity distance and maximum position age must be positive and finite"
            ),
            EngineError::BadHysteresis(id) => write!(
                f,
                "{id}: hysteresis needs enter_fixes >= 1, exit_fixes >= 1 and non-negative durations"
            ),
            EngineError::ZoneInUse { zone, subject } => write!(
                f,
                "{zone} is still named by a rule of {subject}; change that subject's rules first"
            ),
            EngineError::BadAccuracy(a) => write!(
                f,
                "accuracy {a} m must be finite and within 0..={} m",
                crate::MAX_ACCURACY_M
            ),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<ZoneError> for EngineError {
    fn from(e: ZoneError) -> Self {
        EngineError::Zone(e)
    }
}
