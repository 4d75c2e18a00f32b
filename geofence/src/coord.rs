//! WGS84 positions and the metric helpers every zone test uses.
//!
//! Distances are metres on a sphere of radius [`EARTH_RADIUS_M`] (the IUGG mean
//! radius, as `geo::Haversine` uses). Point-to-circle distances are haversine
//! exactly. Point-to-edge distances are computed in a local tangent plane centred
//! on the fix (equirectangular about the fix's latitude): within the few kilometres
//! where an accuracy radius or buffer matters this agrees with the great-circle
//! distance to better than 0.1 % (tested in `tests/semantics.rs`).

use crate::error::CoordError;
use geo::{Distance, Haversine, Point};

/// Mean Earth radius in metres (IUGG), the sphere all distances are measured on.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Metres per degree of latitude (and of longitude at the equator).
pub(crate) const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// A validated WGS84 position: longitude and latitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    lon: f64,
    lat: f64,
}

impl Position {
    /// Validates and builds a position. Rejects NaN, infinities and out-of-range values.
    pub fn new(lon: f64, lat: f64) -> Result<Self, CoordError> {
        if !lon.is_finite() || !lat.is_finite() {
            return Err(CoordError::NotFinite { lon, lat });
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(CoordError::LongitudeOutOfRange(lon));
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(CoordError::LatitudeOutOfRange(lat));
        }
        Ok(Position { lon, lat })
    }

    /// Longitude in degrees.
    pub fn lon(self) -> f64 {
        self.lon
    }

    /// Latitude in degrees.
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Great-circle (haversine) distance in metres.
    pub fn distance_m(self, other: Position) -> f64 {
        Haversine.distance(
            Point::new(self.lon, self.lat),
            Point::new(other.lon, other.lat),
        )
    }
}

/// Degrees of longitude that certainly cover `metres` east or west of any point
/// at latitudes up to `abs_lat`. Conservative: it widens rather than narrows.
pub(crate) fn lon_degrees_covering(metres: f64, abs_lat: f64) -> f64 {
    if metres <= 0.0 {
        return 0.0;
    }
    let lat = (abs_lat + metres / M_PER_DEG).min(89.999);
    // 1 % and 1 m of slack absorb the spherical vs. planar difference.
    (metres * 1.01 + 1.0) / (M_PER_DEG * lat.to_radians().cos())
}

/// Degrees of latitude that cover `metres` north or south.
pub(crate) fn lat_degrees_covering(metres: f64) -> f64 {
    if metres <= 0.0 {
        return 0.0;
    }
    (metres * 1.01 + 1.0) / M_PER_DEG
}

/// An axis-aligned box in degrees, `[lon, lat]` corners.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) min: [f64; 2],
    pub(crate) max: [f64; 2],
}

impl Envelope {
    pub(crate) fn of_points(points: impl IntoIterator<Item = [f64; 2]>) -> Option<Self> {
        let mut it = points.into_iter();
        let first = it.next()?;
        let mut env = Envelope {
            min: first,
            max: first,
        };
        for p in it {
            env.min[0] = env.min[0].min(p[0]);
            env.min[1] = env.min[1].min(p[1]);
            env.max[0] = env.max[0].max(p[0]);
            env.max[1] = env.max[1].max(p[1]);
        }
        Some(env)
    }

    /// The box that covers every point within `metres` of `(lon, lat)`.
    pub(crate) fn around(lon: f64, lat: f64, metres: f64) -> Self {
        let dlon = lon_degrees_covering(metres, lat.abs());
        let dlat = lat_degrees_covering(metres);
        Envelope {
            min: [lon - dlon, lat - dlat],
            max: [lon + dlon, lat + dlat],
        }
    }

    /// Grows the box by `metres` on every side.
    pub(crate) fn buffered(self, metres: f64) -> Self {
        let abs_lat = self.min[1].abs().max(self.max[1].abs());
        let dlon = lon_degrees_covering(metres, abs_lat);
        let dlat = lat_degrees_covering(metres);
        Envelope {
            min: [self.min[0] - dlon, self.min[1] - dlat],
            max: [self.max[0] + dlon, self.max[1] + dlat],
        }
    }

    pub(crate) fn intersects(&self, other: &Envelope) -> bool {
        self.min[0] <= other.max[0]
            && other.min[0] <= self.max[0]
            && self.min[1] <= other.max[1]
            && other.min[1] <= self.max[1]
    }
}

/// One fix prepared for zone tests: its position, accuracy and the accuracy
/// expressed in degrees (computed once per fix, shared by every zone test).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    pub(crate) pos: Position,
    pub(crate) accuracy_m: f64,
    /// The accuracy disc's bounding box.
    pub(crate) env: Envelope,
}

impl Probe {
    pub(crate) fn new(pos: Position, accuracy_m: f64) -> Self {
        Probe {
            pos,
            accuracy_m,
            env: Envelope::around(pos.lon, pos.lat, accuracy_m),
        }
    }
}
