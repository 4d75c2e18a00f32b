//! Prepared polygons: point-in-polygon and "is the boundary within r metres?"
//! answered from a uniform grid built once, at load.
//!
//! # How it works
//! The polygon's bounding box is cut into about two cells per edge. Each cell
//! records the edges that touch it and whether its centre (the cell's *reference
//! point*) is inside. A query point `p` in a cell is inside iff the reference
//! point is inside XOR the segment `p → centre` crosses an odd number of the
//! cell's edges. Cells that no edge touches are wholly inside or wholly outside,
//! so most points cost one lookup. Each cell also stores its *clearance*: the
//! Chebyshev distance, in cells, to the nearest cell an edge touches. That gives a
//! free lower bound on the distance to the boundary, which decides most accuracy
//! and buffer tests without looking at a single edge.
//!
//! # Semantics
//! The polygon is a closed set: a point exactly on an edge or vertex is inside.
//! Rings are combined with the even-odd rule, which for a valid polygon (holes
//! inside the exterior, no crossings) is the polygon's interior. "Exactly" is up to
//! f64 rounding of the orientation test, i.e. nanometres.
//!
//! Crossings use a half-open rule (a vertex on the line through `p` and the centre
//! counts as lying on its negative side), the segment analogue of the classic
//! `(a.y > y) != (b.y > y)` crossing test, so a ray through a vertex is counted once.

use crate::coord::{Envelope, M_PER_DEG};
use crate::error::ZoneError;

/// Target number of grid cells per edge. Two keeps most boundary cells at one or
/// two edges while the grid stays about 8 bytes per cell.
const CELLS_PER_EDGE: usize = 2;
/// Largest grid, in cells, whatever the vertex count.
const MAX_CELLS: usize = 1 << 22;
/// Largest grid side, in cells.
const MAX_SIDE: usize = 4096;
/// Grids tried with slightly shifted origins before giving up on placing
/// reference points away from every edge.
const PLACEMENT_ATTEMPTS: u32 = 8;

#[derive(Clone, Copy, Debug)]
struct Cell {
    /// Index of the cell's first edge in `edges`; the cell's edges run to the next cell's `start`.
    start: u32,
    /// Bit 0: the reference point (centre) is inside. Bits 1..: clearance in cells.
    meta: u32,
}

/// An edge, copied into each cell that it touches so a query reads one array.
#[derive(Clone, Copy, Debug)]
struct Segment {
    a: [f64; 2],
    b: [f64; 2],
}

/// Polygons with at most this many edges skip the grid: a 16×16 raster decides
/// most points and the rest run the plain crossing test over one contiguous ring.
/// Small zones (homes, schools) are the vast majority and this keeps each to about
/// 700 bytes, so 10k of them stay cache-resident.
const SMALL_MAX_EDGES: usize = 64;
/// Raster side of a small polygon.
const RASTER: usize = 16;

/// A polygon with holes, prepared for fast queries. Coordinates are `[lon, lat]` degrees.
#[derive(Clone, Debug)]
pub(crate) enum PreparedPolygon {
    /// At most [`SMALL_MAX_EDGES`] edges.
    Small(SmallPolygon),
    /// Larger polygons (city boundaries).
    Grid(Box<GridPolygon>),
}

/// A small polygon: bounding box, a 2-bit-per-cell raster (outside, inside,
/// boundary), and the rings as one vertex array with a NaN vertex between rings.
#[derive(Clone, Debug)]
pub(crate) struct SmallPolygon {
    env: Envelope,
    inv_cell: [f64; 2],
    raster: [u64; RASTER * RASTER / 32],
    ring: Box<[[f64; 2]]>,
    vertex_count: u32,
}

const OUTSIDE: u64 = 0;
const INSIDE: u64 = 1;
const BOUNDARY: u64 = 2;

impl SmallPolygon {
    fn new(segments: &[Segment], env: Envelope, vertex_count: usize) -> SmallPolygon {
        // Rebuild the separated ring from the segments (consecutive segments share
        // an endpoint within a ring; a break starts a new ring).
        let mut ring = Vec::with_capacity(segments.len() + 4);
        for (k, s) in segments.iter().enumerate() {
            if k > 0 && segments[k - 1].b != s.a {
                ring.push([f64::NAN, f64::NAN]);
            }
            if k == 0 || segments[k - 1].b != s.a {
                ring.push(s.a);
            }
            ring.push(s.b);
        }
        let size = [
            (env.max[0] - env.min[0]) / RASTER as f64,
            (env.max[1] - env.min[1]) / RASTER as f64,
        ];
        let mut p = SmallPolygon {
            env,
            inv_cell: [1.0 / size[0], 1.0 / size[1]],
            raster: [0; RASTER * RASTER / 32],
            ring: ring.into_boxed_slice(),
            vertex_count: vertex_count as u32,
        };
        let eps = [size[0] * 1e-6, size[1] * 1e-6];
        for j in 0..RASTER {
            for i in 0..RASTER {
                let min = [
                    env.min[0] + i as f64 * size[0],
                    env.min[1] + j as f64 * size[1],
                ];
                let max = [min[0] + size[0], min[1] + size[1]];
                let (gmin, gmax) = (
                    [min[0] - eps[0], min[1] - eps[1]],
                    [max[0] + eps[0], max[1] + eps[1]],
                );
                let state = if segments.iter().any(|s| segment_touches_rect(s, gmin, gmax)) {
                    BOUNDARY
                } else if p.exact(0.5 * (min[0] + max[0]), 0.5 * (min[1] + max[1])) {
                    INSIDE
                } else {
                    OUTSIDE
                };
                let k = j * RASTER + i;
                p.raster[k / 32] |= state << (2 * (k % 32));
            }
        }
        p
    }

    #[inline]
    fn contains(&self, x: f64, y: f64) -> bool {
        let env = &self.env;
        if !(x >= env.min[0] && x <= env.max[0] && y >= env.min[1] && y <= env.max[1]) {
            return false;
        }
        let i = (((x - env.min[0]) * self.inv_cell[0]) as usize).min(RASTER - 1);
        let j = (((y - env.min[1]) * self.inv_cell[1]) as usize).min(RASTER - 1);
        let k = j * RASTER + i;
        match (self.raster[k / 32] >> (2 * (k % 32))) & 3 {
            OUTSIDE => false,
            INSIDE => true,
            _ => self.exact(x, y),
        }
    }

    /// Even-odd crossing test with a ray towards +x; points on an edge are inside.
    fn exact(&self, x: f64, y: f64) -> bool {
        let p = [x, y];
        let mut inside = false;
        for w in self.ring.windows(2) {
            let (a, b) = (w[0], w[1]);
            if !(y >= a[1].min(b[1]) && y <= a[1].max(b[1])) || a[0].is_nan() || b[0].is_nan() {
                continue;
            }
            let o = orient(a, b, p);
            if o == 0.0 && x >= a[0].min(b[0]) && x <= a[0].max(b[0]) {
                return true;
            }
            if (a[1] > y) != (b[1] > y) && (o > 0.0) == (b[1] > a[1]) {
                inside = !inside;
            }
        }
        inside
    }

    fn boundary_within(&self, x: f64, y: f64, r_m: f64) -> Option<f64> {
        let query = Envelope::around(x, y, r_m);
        if !query.intersects(&self.env) {
            return None;
        }
        let kx = M_PER_DEG * y.to_radians().cos();
        let mut best = f64::INFINITY;
        for w in self.ring.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a[0].is_nan() || b[0].is_nan() {
                continue;
            }
            best = best.min(distance_m([x, y], kx, a, b));
        }
        (best <= r_m).then_some(best)
    }
}

/// A large polygon with holes, grid-indexed. Coordinates are `[lon, lat]` degrees.
#[derive(Clone, Debug)]
pub(crate) struct GridPolygon {
    env: Envelope,
    origin: [f64; 2],
    cell_size: [f64; 2],
    inv_cell: [f64; 2],
    nx: usize,
    ny: usize,
    /// `nx * ny + 1` entries; the last one closes the final cell's edge range.
    cells: Vec<Cell>,
    edges: Vec<Segment>,
    /// A lower bound, in metres, of the smaller side of any cell.
    min_cell_m: f64,
    vertex_count: usize,
}

impl GridPolygon {
    fn new(segments: &[Segment], env: Envelope, vertex_count: usize) -> Result<Self, ZoneError> {
        for attempt in 0..PLACEMENT_ATTEMPTS {
            if let Some(p) = Self::build(segments, env, attempt, vertex_count) {
                return Ok(p);
            }
        }
        Err(ZoneError::InvalidGeometry(
            "edges pass through every candidate grid reference point; the rings are degenerate"
                .into(),
        ))
    }
}

impl PreparedPolygon {
    /// Prepares rings (exterior first, then holes), each given closed or open.
    pub(crate) fn new(
        rings: &[Vec<[f64; 2]>],
        first_ring_number: usize,
    ) -> Result<Self, ZoneError> {
        let mut segments = Vec::new();
        let mut vertex_count = 0;
        for (k, ring) in rings.iter().enumerate() {
            let ring_no = first_ring_number + k;
            let mut distinct: Vec<[f64; 2]> = ring.clone();
            distinct.dedup();
            if distinct.len() > 1 && distinct.first() == distinct.last() {
                distinct.pop();
            }
            if distinct.len() < 3 {
                return Err(ZoneError::TooFewVertices { ring: ring_no });
            }
            if ring_area(&distinct) == 0.0 {
                return Err(ZoneError::Degenerate);
            }
            vertex_count += distinct.len();
            for (i, &a) in distinct.iter().enumerate() {
                let b = distinct[(i + 1) % distinct.len()];
                if (a[0] - b[0]).abs() > 180.0 {
                    return Err(ZoneError::CrossesAntimeridian);
                }
                segments.push(Segment { a, b });
            }
        }
        let env = Envelope::of_points(segments.iter().map(|s| s.a)).ok_or(ZoneError::Degenerate)?;
        let width = env.max[0] - env.min[0];
        let height = env.max[1] - env.min[1];
        if width <= 0.0 || height <= 0.0 {
            return Err(ZoneError::Degenerate);
        }
        if segments.len() <= SMALL_MAX_EDGES {
            Ok(PreparedPolygon::Small(SmallPolygon::new(
                &segments,
                env,
                vertex_count,
            )))
        } else {
            let grid = GridPolygon::new(&segments, env, vertex_count)?;
            if let Some(at) = grid.find_crossing() {
                return Err(ZoneError::InvalidGeometry(format!(
                    "edges cross or overlap near ({:.7}, {:.7})",
                    at[0], at[1]
                )));
            }
            Ok(PreparedPolygon::Grid(Box::new(grid)))
        }
    }

    /// The bounding box of the rings.
    pub(crate) fn envelope(&self) -> Envelope {
        match self {
            PreparedPolygon::Small(p) => p.env,
            PreparedPolygon::Grid(p) => p.env,
        }
    }

    /// Number of distinct vertices over all rings.
    pub(crate) fn vertex_count(&self) -> usize {
        match self {
            PreparedPolygon::Small(p) => p.vertex_count as usize,
            PreparedPolygon::Grid(p) => p.vertex_count,
        }
    }

    /// Closed point-in-polygon: true inside and on the boundary.
    #[inline]
    pub(crate) fn contains(&self, x: f64, y: f64) -> bool {
        match self {
            PreparedPolygon::Small(p) => p.contains(x, y),
            PreparedPolygon::Grid(p) => p.contains(x, y),
        }
    }

    /// The distance in metres from `(x, y)` to the nearest point of the boundary
    /// (any ring), if that distance is at most `r_m`; `None` means "farther than `r_m`".
    pub(crate) fn boundary_within(&self, x: f64, y: f64, r_m: f64) -> Option<f64> {
        match self {
            PreparedPolygon::Small(p) => p.boundary_within(x, y, r_m),
            PreparedPolygon::Grid(p) => p.boundary_within(x, y, r_m),
        }
    }
}

impl GridPolygon {
    /// Builds the grid; `None` when a reference point falls on an edge (then the
    /// caller retries with a shifted grid).
    // Over 80 lines: one construction pass over the edges; the grid's
    // buffers are locals of that pass.
    fn build(
        segments: &[Segment],
        env: Envelope,
        attempt: u32,
        vertex_count: usize,
    ) -> Option<Self> {
        let width = env.max[0] - env.min[0];
        let height = env.max[1] - env.min[1];
        // Shift and grow the grid a little on each retry; an irrational step keeps
        // centres off any regular lattice the input may sit on.
        let pad = f64::from(attempt) * 1e-6 * std::f64::consts::FRAC_1_SQRT_2;
        let origin = [env.min[0] - pad * width, env.min[1] - pad * height];
        let extent = [width * (1.0 + 2.0 * pad), height * (1.0 + 2.0 * pad)];

        let abs_lat = env.min[1].abs().max(env.max[1].abs()).min(89.999);
        let mid_lat = 0.5 * (env.min[1] + env.max[1]);
        let w_m = extent[0] * M_PER_DEG * mid_lat.to_radians().cos();
        let h_m = extent[1] * M_PER_DEG;
        let target = (segments.len() * CELLS_PER_EDGE).clamp(16, MAX_CELLS);
        let aspect = (w_m / h_m).clamp(1e-3, 1e3);
        let nx = ((target as f64 * aspect).sqrt().ceil() as usize).clamp(1, MAX_SIDE);
        let ny = target.div_ceil(nx).clamp(1, MAX_SIDE);
        let cell_size = [extent[0] / nx as f64, extent[1] / ny as f64];
        let inv_cell = [1.0 / cell_size[0], 1.0 / cell_size[1]];
        let min_cell_m =
            (cell_size[0] * M_PER_DEG * abs_lat.to_radians().cos()).min(cell_size[1] * M_PER_DEG);

        let mut grid = GridPolygon {
            env,
            origin,
            cell_size,
            inv_cell,
            nx,
            ny,
            cells: Vec::new(),
            edges: Vec::new(),
            min_cell_m,
            vertex_count,
        };

        // Register each edge in every cell whose (slightly grown) rectangle it touches.
        let eps = [cell_size[0] * 1e-6, cell_size[1] * 1e-6];
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(segments.len() * 3);
        for (k, s) in segments.iter().enumerate() {
            let lo = [s.a[0].min(s.b[0]), s.a[1].min(s.b[1])];
            let hi = [s.a[0].max(s.b[0]), s.a[1].max(s.b[1])];
            let (i0, j0) = grid.cell_xy(lo[0] - eps[0], lo[1] - eps[1]);
            let (i1, j1) = grid.cell_xy(hi[0] + eps[0], hi[1] + eps[1]);
            for j in j0..=j1 {
                for i in i0..=i1 {
                    let (cmin, cmax) = grid.cell_rect(i, j);
                    let cmin = [cmin[0] - eps[0], cmin[1] - eps[1]];
                    let cmax = [cmax[0] + eps[0], cmax[1] + eps[1]];
                    if segment_touches_rect(s, cmin, cmax) {
                        pairs.push(((j * nx + i) as u32, k as u32));
                    }
                }
            }
        }
        pairs.sort_unstable();

        // Reference points: is each cell centre inside? One horizontal scan per row.
        let inside = grid.centre_parity(segments);

        // Clearance: multi-source BFS (8-neighbour) from every cell that has an edge.
        let cell_count = nx * ny;
        let mut clearance = vec![u32::MAX; cell_count];
        let mut queue = std::collections::VecDeque::new();
        for &(c, _) in &pairs {
            if clearance[c as usize] != 0 {
                clearance[c as usize] = 0;
                queue.push_back(c as usize);
            }
        }
        while let Some(c) = queue.pop_front() {
            let (i, j) = ((c % nx) as isize, (c / nx) as isize);
            let next = clearance[c] + 1;
            for dj in -1..=1 {
                for di in -1..=1 {
                    let (ni, nj) = (i + di, j + dj);
                    if ni < 0 || nj < 0 || ni >= nx as isize || nj >= ny as isize {
                        continue;
                    }
                    let n = nj as usize * nx + ni as usize;
                    if clearance[n] > next {
                        clearance[n] = next;
                        queue.push_back(n);
                    }
                }
            }
        }

        grid.cells = Vec::with_capacity(cell_count + 1);
        grid.edges = Vec::with_capacity(pairs.len());
        let mut p = 0;
        for c in 0..cell_count {
            grid.cells.push(Cell {
                start: grid.edges.len() as u32,
                meta: u32::from(inside[c]) | (clearance[c].min(u32::MAX >> 1) << 1),
            });
            while p < pairs.len() && pairs[p].0 as usize == c {
                let s = segments[pairs[p].1 as usize];
                // A reference point on (or within rounding of) an edge would make
                // the parity ambiguous: retry with a shifted grid.
                let centre = grid.cell_centre(c);
                if near_segment(&s, centre, grid.cell_size) {
                    return None;
                }
                grid.edges.push(s);
                p += 1;
            }
        }
        grid.cells.push(Cell {
            start: grid.edges.len() as u32,
            meta: 0,
        });
        Some(grid)
    }

    /// For each cell, whether its centre is inside (even-odd over all rings).
    fn centre_parity(&self, segments: &[Segment]) -> Vec<bool> {
        let (nx, ny) = (self.nx, self.ny);
        let mut crossings: Vec<(u32, f64)> = Vec::new();
        for s in segments {
            let (a, b) = (s.a, s.b);
            if a[1] == b[1] {
                continue;
            }
            let (ylo, yhi) = (a[1].min(b[1]), a[1].max(b[1]));
            let j0 = (((ylo - self.origin[1]) * self.inv_cell[1] - 0.5)
                .floor()
                .max(0.0)) as usize;
            let j1 = ((((yhi - self.origin[1]) * self.inv_cell[1] - 0.5).ceil()).max(0.0) as usize)
                .min(ny - 1);
            for j in j0..=j1 {
                let yc = self.origin[1] + (j as f64 + 0.5) * self.cell_size[1];
                if (a[1] > yc) != (b[1] > yc) {
                    let x = a[0] + (yc - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                    crossings.push((j as u32, x));
                }
            }
        }
        crossings.sort_unstable_by(|l, r| l.0.cmp(&r.0).then(l.1.total_cmp(&r.1)));
        let mut inside = vec![false; nx * ny];
        let mut k = 0;
        for j in 0..ny {
            let row_start = k;
            while k < crossings.len() && crossings[k].0 as usize == j {
                k += 1;
            }
            let row = &crossings[row_start..k];
            let mut left = 0;
            for i in 0..nx {
                let xc = self.origin[0] + (i as f64 + 0.5) * self.cell_size[0];
                while left < row.len() && row[left].1 < xc {
                    left += 1;
                }
                inside[j * nx + i] = left % 2 == 1;
            }
        }
        inside
    }

    fn cell_xy(&self, x: f64, y: f64) -> (usize, usize) {
        let fx = ((x - self.origin[0]) * self.inv_cell[0]).max(0.0);
        let fy = ((y - self.origin[1]) * self.inv_cell[1]).max(0.0);
        (
            (fx as usize).min(self.nx - 1),
            (fy as usize).min(self.ny - 1),
        )
    }

    fn cell_rect(&self, i: usize, j: usize) -> ([f64; 2], [f64; 2]) {
        let min = [
            self.origin[0] + i as f64 * self.cell_size[0],
            self.origin[1] + j as f64 * self.cell_size[1],
        ];
        (
            min,
            [min[0] + self.cell_size[0], min[1] + self.cell_size[1]],
        )
    }

    fn cell_centre(&self, c: usize) -> [f64; 2] {
        let (i, j) = (c % self.nx, c / self.nx);
        [
            self.origin[0] + (i as f64 + 0.5) * self.cell_size[0],
            self.origin[1] + (j as f64 + 0.5) * self.cell_size[1],
        ]
    }

    fn cell_edges(&self, c: usize) -> &[Segment] {
        &self.edges[self.cells[c].start as usize..self.cells[c + 1].start as usize]
    }

    /// A point where two edges cross, or where an edge's end lies inside another
    /// edge (touching or collinear overlap), if any. Two edges can only meet in a
    /// cell they share, so this is linear in the number of edges for any
    /// reasonably spread polygon. geo's validity check is quadratic: 3–4 s for a
    /// 20,000-vertex boundary on the dev machine.
    fn find_crossing(&self) -> Option<[f64; 2]> {
        for c in 0..self.nx * self.ny {
            let edges = self.cell_edges(c);
            for (k, s) in edges.iter().enumerate() {
                for t in &edges[k + 1..] {
                    if let Some(at) = conflict(s, t) {
                        return Some(at);
                    }
                }
            }
        }
        None
    }

    #[inline]
    fn contains(&self, x: f64, y: f64) -> bool {
        let env = &self.env;
        if !(x >= env.min[0] && x <= env.max[0] && y >= env.min[1] && y <= env.max[1]) {
            return false;
        }
        let (i, j) = self.cell_xy(x, y);
        let c = j * self.nx + i;
        let mut inside = self.cells[c].meta & 1 == 1;
        let edges = self.cell_edges(c);
        if edges.is_empty() {
            return inside;
        }
        let p = [x, y];
        let centre = self.cell_centre(c);
        for s in edges {
            let o_p = orient(s.a, s.b, p);
            if o_p == 0.0 && within_box(s, p) {
                return true;
            }
            let side_a = orient(p, centre, s.a) > 0.0;
            let side_b = orient(p, centre, s.b) > 0.0;
            if side_a != side_b && (o_p > 0.0) != (orient(s.a, s.b, centre) > 0.0) {
                inside = !inside;
            }
        }
        inside
    }

    fn boundary_within(&self, x: f64, y: f64, r_m: f64) -> Option<f64> {
        let query = Envelope::around(x, y, r_m);
        if !query.intersects(&self.env) {
            return None;
        }
        let env = &self.env;
        if x >= env.min[0] && x <= env.max[0] && y >= env.min[1] && y <= env.max[1] {
            let (i, j) = self.cell_xy(x, y);
            let rings = self.cells[j * self.nx + i].meta >> 1;
            if rings >= 1 && f64::from(rings - 1) * self.min_cell_m > r_m {
                return None;
            }
        }
        let kx = M_PER_DEG * y.to_radians().cos();
        let (i0, j0) = self.cell_xy(query.min[0], query.min[1]);
        let (i1, j1) = self.cell_xy(query.max[0], query.max[1]);
        let mut best = f64::INFINITY;
        for j in j0..=j1 {
            for i in i0..=i1 {
                for s in self.cell_edges(j * self.nx + i) {
                    best = best.min(distance_m([x, y], kx, s.a, s.b));
                }
            }
        }
        (best <= r_m).then_some(best)
    }
}

/// Absolute area of a ring (shoelace, in square degrees), relative to the
/// first vertex to keep the products small.
fn ring_area(ring: &[[f64; 2]]) -> f64 {
    let o = ring[0];
    let mut twice = 0.0;
    for w in ring.windows(2) {
        twice += orient(o, w[0], w[1]);
    }
    0.5 * twice.abs()
}

/// Twice the signed area of (a, b, c): positive when c is left of a→b.
#[inline(always)]
fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

#[inline(always)]
fn within_box(s: &Segment, p: [f64; 2]) -> bool {
    p[0] >= s.a[0].min(s.b[0])
        && p[0] <= s.a[0].max(s.b[0])
        && p[1] >= s.a[1].min(s.b[1])
        && p[1] <= s.a[1].max(s.b[1])
}

/// Where two edges of a valid polygon must not meet: a proper crossing, or an
/// endpoint of one lying on the other anywhere but at a shared endpoint.
fn conflict(s: &Segment, t: &Segment) -> Option<[f64; 2]> {
    let (o1, o2) = (orient(s.a, s.b, t.a), orient(s.a, s.b, t.b));
    let (o3, o4) = (orient(t.a, t.b, s.a), orient(t.a, t.b, s.b));
    if o1 * o2 < 0.0 && o3 * o4 < 0.0 {
        return Some(t.a);
    }
    let on = |seg: &Segment, o: f64, p: [f64; 2]| {
        o == 0.0 && within_box(seg, p) && p != seg.a && p != seg.b
    };
    [(s, o1, t.a), (s, o2, t.b), (t, o3, s.a), (t, o4, s.b)]
        .into_iter()
        .find(|&(seg, o, p)| on(seg, o, p))
        .map(|(_, _, p)| p)
}

/// Whether the segment touches the closed rectangle (separating-axis test; the
/// caller already knows the bounding boxes overlap).
fn segment_touches_rect(s: &Segment, min: [f64; 2], max: [f64; 2]) -> bool {
    let lo = [s.a[0].min(s.b[0]), s.a[1].min(s.b[1])];
    let hi = [s.a[0].max(s.b[0]), s.a[1].max(s.b[1])];
    if hi[0] < min[0] || lo[0] > max[0] || hi[1] < min[1] || lo[1] > max[1] {
        return false;
    }
    let corners = [min, [max[0], min[1]], max, [min[0], max[1]]];
    let mut pos = false;
    let mut neg = false;
    for c in corners {
        let o = orient(s.a, s.b, c);
        pos |= o >= 0.0;
        neg |= o <= 0.0;
    }
    pos && neg
}

/// Whether `p` lies on the segment or so close to it (relative to the cell size)
/// that rounding could put it on either side.
fn near_segment(s: &Segment, p: [f64; 2], cell: [f64; 2]) -> bool {
    let tol = 1e-9 * cell[0].min(cell[1]);
    let grown = Segment {
        a: [s.a[0].min(s.b[0]) - tol, s.a[1].min(s.b[1]) - tol],
        b: [s.a[0].max(s.b[0]) + tol, s.a[1].max(s.b[1]) + tol],
    };
    if !within_box(&grown, p) {
        return false;
    }
    let len = ((s.b[0] - s.a[0]).powi(2) + (s.b[1] - s.a[1]).powi(2)).sqrt();
    orient(s.a, s.b, p).abs() <= tol * len.max(f64::MIN_POSITIVE)
}

/// Metres from `p` to segment a–b in the tangent plane at `p`; `kx` is metres
/// per degree of longitude at `p`'s latitude.
#[inline]
fn distance_m(p: [f64; 2], kx: f64, a: [f64; 2], b: [f64; 2]) -> f64 {
    origin_to_segment(
        [(a[0] - p[0]) * kx, (a[1] - p[1]) * M_PER_DEG],
        [(b[0] - p[0]) * kx, (b[1] - p[1]) * M_PER_DEG],
    )
}

/// Euclidean distance from the origin to segment a–b (local metres).
#[inline]
fn origin_to_segment(a: [f64; 2], b: [f64; 2]) -> f64 {
    let d = [b[0] - a[0], b[1] - a[1]];
    let len2 = d[0] * d[0] + d[1] * d[1];
    let t = if len2 > 0.0 {
        (-(a[0] * d[0] + a[1] * d[1]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let q = [a[0] + t * d[0], a[1] + t * d[1]];
    (q[0] * q[0] + q[1] * q[1]).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> PreparedPolygon {
        let ring = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]];
        PreparedPolygon::new(&[ring], 0).expect("valid square")
    }

    #[test]
    fn boundary_points_are_inside() {
        let sq = square();
        for (x, y, expect) in [
            (0.5, 0.5, true),
            (0.0, 0.5, true),
            (1.0, 1.0, true),
            (0.5, 0.0, true),
            (1.0 + 1e-9, 0.5, false),
            (-1e-9, 0.5, false),
            (0.5, 1.0 + 1e-9, false),
        ] {
            assert_eq!(sq.contains(x, y), expect, "({x}, {y})");
        }
    }

    #[test]
    fn hole_is_outside_and_its_edge_inside() {
        let outer = vec![[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]];
        let hole = vec![[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]];
        let p = PreparedPolygon::new(&[outer, hole], 0).expect("valid");
        assert!(p.contains(0.5, 0.5));
        assert!(!p.contains(2.0, 2.0));
        assert!(p.contains(1.0, 2.0), "hole boundary belongs to the polygon");
        assert!(p.contains(3.5, 2.0));
    }

    #[test]
    fn distance_to_boundary_in_metres() {
        let sq = square();
        // From the centre the nearest edge is 0.5° of latitude or
        // 0.5° · cos(0.5°) of longitude away.
        let expect = 0.5 * M_PER_DEG * 0.5f64.to_radians().cos();
        let d = sq
            .boundary_within(0.5, 0.5, 100_000.0)
            .expect("within 100 km");
        assert!((d - expect).abs() < 1.0, "{d} vs {expect}");
        assert_eq!(sq.boundary_within(0.5, 0.5, 50_000.0), None);
        // Outside, 0.001° east of the east edge on the equator-ish row.
        let d = sq
            .boundary_within(1.001, 0.5, 1_000.0)
            .expect("within 1 km");
        assert!((d - 0.001 * M_PER_DEG * 0.5f64.to_radians().cos()).abs() < 0.5);
    }

    #[test]
    fn rejects_degenerate_and_antimeridian_rings() {
        let line = vec![[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]];
        assert_eq!(
            PreparedPolygon::new(&[line], 0).err(),
            Some(ZoneError::Degenerate)
        );
        let two = vec![[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]];
        assert_eq!(
            PreparedPolygon::new(&[two], 0).err(),
            Some(ZoneError::TooFewVertices { ring: 0 })
        );
        let across = vec![[179.0, 0.0], [-179.0, 0.0], [-179.0, 1.0], [179.0, 1.0]];
        assert_eq!(
            PreparedPolygon::new(&[across], 0).err(),
            Some(ZoneError::CrossesAntimeridian)
        );
    }
}
