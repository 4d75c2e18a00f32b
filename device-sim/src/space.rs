//! Local planar coordinates around Almaty, and the seeded random streams.
//!
//! Plans are laid out in metres east and north of the city centre (an
//! equirectangular projection, good to a few metres over the city). Decisions
//! that ground truth depends on are then made in WGS84 with haversine, exactly
//! as the geofence engine measures.

use geofence::{EARTH_RADIUS_M, Position};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Centre of Almaty (Republic Square), the projection origin.
pub const CENTRE_LON: f64 = 76.9458;
/// Centre latitude.
pub const CENTRE_LAT: f64 = 43.2380;

const M_PER_DEG_LAT: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// A point in metres east (`x`) and north (`y`) of the centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Xy {
    /// Metres east.
    pub x: f64,
    /// Metres north.
    pub y: f64,
}

impl Xy {
    /// A point.
    pub const fn new(x: f64, y: f64) -> Xy {
        Xy { x, y }
    }

    /// `(lon, lat)` in degrees.
    pub fn lonlat(self) -> (f64, f64) {
        let m_per_deg_lon = M_PER_DEG_LAT * CENTRE_LAT.to_radians().cos();
        (
            CENTRE_LON + self.x / m_per_deg_lon,
            CENTRE_LAT + self.y / M_PER_DEG_LAT,
        )
    }

    /// The point as a geofence position (always valid: the city is far from the poles).
    pub fn position(self) -> Position {
        let (lon, lat) = self.lonlat();
        Position::new(lon, lat).expect("simulated places lie within tens of km of Almaty")
    }

    /// Planar distance in metres.
    pub fn dist(self, o: Xy) -> f64 {
        (self.x - o.x).hypot(self.y - o.y)
    }

    /// `self + (o - self) * f`.
    pub fn lerp(self, o: Xy, f: f64) -> Xy {
        Xy::new(self.x + (o.x - self.x) * f, self.y + (o.y - self.y) * f)
    }

    /// The point `d` metres away at `bearing` radians (counter-clockwise from east).
    pub fn offset(self, d: f64, bearing: f64) -> Xy {
        Xy::new(self.x + d * bearing.cos(), self.y + d * bearing.sin())
    }

    /// Distance to the segment `a`–`b`.
    pub fn seg_dist(self, a: Xy, b: Xy) -> f64 {
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let len2 = dx * dx + dy * dy;
        if len2 == 0.0 {
            return self.dist(a);
        }
        let f = (((self.x - a.x) * dx + (self.y - a.y) * dy) / len2).clamp(0.0, 1.0);
        self.dist(a.lerp(b, f))
    }
}

/// SplitMix64: spreads `(seed, stream, index)` into independent RNG seeds, so a
/// subject's plan depends only on the seed and its own id, never on how many
/// other subjects there are or in which order they were generated.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Named random streams.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// The shared zones (schools, playgrounds).
    Places = 1,
    /// One subject's world entry.
    Subject = 2,
    /// One subject's plan for one day.
    SubjectDay = 3,
    /// One victim's plan for one day.
    VictimDay = 4,
    /// One device's measurement noise and timing.
    Device = 5,
}

/// The RNG for `(seed, stream, a, b)`.
pub fn rng(seed: u64, stream: Stream, a: u64, b: u64) -> StdRng {
    let s = mix(mix(mix(seed ^ ((stream as u64) << 56)) ^ a) ^ b.rotate_left(17));
    StdRng::seed_from_u64(s)
}
