//! The spatial index of global (category) zones.
//!
//! **Architecture Invariant:** every global zone is in the rstar R-tree, keyed by
//! its buffered envelope. The R-tree is the index of record and answers
//! wide queries (fixes whose accuracy disc spans many cells).
//!
//! Point-sized queries, i.e. almost every fix, go through a *cell table* derived from
//! the same envelopes: a hash map from a fixed 1/256° grid cell to the zones
//! whose envelope touches it. One hash lookup replaces a tree descent. On the dev
//! machine an rstar point query over 10k envelopes measured 430–470 ns, four times
//! the whole per-fix budget of the `global_zones_10k` target. Up to three entries
//! live inline in the hash bucket (f32 envelopes rounded outwards), so a typical
//! lookup touches no other memory. Zones too large for
//! the table (more than [`MAX_CELLS_PER_ZONE`] cells, e.g. a border region) sit
//! in a short list that every query scans by envelope.

use crate::coord::Envelope;
use rstar::{AABB, RTree, RTreeObject};
use rustc_hash::FxHashMap;

/// Cells per degree of the cell table (a cell is ~430 m × ~310 m at 43° N).
const CELLS_PER_DEG: f64 = 256.0;
/// Zones whose envelope covers more cells than this are scanned by envelope instead.
pub(crate) const MAX_CELLS_PER_ZONE: i64 = 64;
/// Queries covering more cells than this go to the R-tree.
const MAX_CELLS_PER_QUERY: i64 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    env: Envelope,
    slot: u32,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(self.env.min, self.env.max)
    }
}

/// A cell-table entry: the envelope rounded outwards to f32 (a conservative
/// prefilter, 20 bytes instead of 40) and the zone's slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CellEntry {
    min: [f32; 2],
    max: [f32; 2],
    slot: u32,
}

impl CellEntry {
    fn new(env: &Envelope, slot: u32) -> CellEntry {
        let down = |v: f64| {
            let f = v as f32;
            if f64::from(f) > v { f.next_down() } else { f }
        };
        let up = |v: f64| {
            let f = v as f32;
            if f64::from(f) < v { f.next_up() } else { f }
        };
        CellEntry {
            min: [down(env.min[0]), down(env.min[1])],
            max: [up(env.max[0]), up(env.max[1])],
            slot,
        }
    }

    fn env(&self) -> Envelope {
        Envelope {
            min: [f64::from(self.min[0]), f64::from(self.min[1])],
            max: [f64::from(self.max[0]), f64::from(self.max[1])],
        }
    }
}

/// Entries stored in the cell's hash bucket itself, before spilling to the heap.
const INLINE: usize = 3;

/// The zones of one cell. Most cells hold one to three, which live inline, so a
/// lookup reads the hash bucket and nothing else.
#[derive(Clone, Debug, Default)]
struct CellList {
    inline: [CellEntry; INLINE],
    len: u32,
    spill: Vec<CellEntry>,
}

impl CellList {
    fn push(&mut self, e: CellEntry) {
        let len = self.len as usize;
        if len < INLINE {
            self.inline[len] = e;
        } else {
            self.spill.push(e);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &CellEntry> {
        self.inline[..(self.len as usize).min(INLINE)]
            .iter()
            .chain(&self.spill)
    }

    fn remove_slot(&mut self, slot: u32) {
        let kept: Vec<CellEntry> = self.iter().filter(|e| e.slot != slot).copied().collect();
        *self = CellList::default();
        for e in kept {
            self.push(e);
        }
    }
}

#[derive(Default)]
pub(crate) struct GlobalIndex {
    tree: RTree<Entry>,
    cells: FxHashMap<u64, CellList>,
    spanning: Vec<Entry>,
}

#[inline(always)]
fn cell_of(deg: f64) -> i64 {
    (deg * CELLS_PER_DEG).floor() as i64
}

#[inline(always)]
fn key(i: i64, j: i64) -> u64 {
    ((i as u32 as u64) << 32) | (j as u32 as u64)
}

fn cell_range(env: &Envelope) -> (i64, i64, i64, i64) {
    (
        cell_of(env.min[0]),
        cell_of(env.max[0]),
        cell_of(env.min[1]),
        cell_of(env.max[1]),
    )
}

impl GlobalIndex {
    pub(crate) fn len(&self) -> usize {
        self.tree.size()
    }

    pub(crate) fn insert(&mut self, slot: u32, env: Envelope) {
        let entry = Entry { env, slot };
        self.tree.insert(entry);
        // Cells are computed from the rounded envelope that lookups see.
        let cell_entry = CellEntry::new(&env, slot);
        let (i0, i1, j0, j1) = cell_range(&cell_entry.env());
        if (i1 - i0 + 1) * (j1 - j0 + 1) > MAX_CELLS_PER_ZONE {
            self.spanning.push(entry);
            return;
        }
        for j in j0..=j1 {
            for i in i0..=i1 {
                self.cells.entry(key(i, j)).or_default().push(cell_entry);
            }
        }
    }

    pub(crate) fn remove(&mut self, slot: u32, env: Envelope) {
        let entry = Entry { env, slot };
        self.tree.remove(&entry);
        let (i0, i1, j0, j1) = cell_range(&CellEntry::new(&env, slot).env());
        if (i1 - i0 + 1) * (j1 - j0 + 1) > MAX_CELLS_PER_ZONE {
            self.spanning.retain(|e| e.slot != slot);
            return;
        }
        for j in j0..=j1 {
            for i in i0..=i1 {
                if let Some(list) = self.cells.get_mut(&key(i, j)) {
                    list.remove_slot(slot);
                    if list.len == 0 {
                        self.cells.remove(&key(i, j));
                    }
                }
            }
        }
    }

    /// Calls `f` once for every zone whose envelope intersects `query`.
    #[inline]
    pub(crate) fn for_each_candidate(&self, query: &Envelope, mut f: impl FnMut(u32)) {
        let (i0, i1, j0, j1) = cell_range(query);
        if (i1 - i0 + 1) * (j1 - j0 + 1) > MAX_CELLS_PER_QUERY {
            let aabb = AABB::from_corners(query.min, query.max);
            for e in self.tree.locate_in_envelope_intersecting(&aabb) {
                f(e.slot);
            }
            return;
        }
        for j in j0..=j1 {
            for i in i0..=i1 {
                let Some(list) = self.cells.get(&key(i, j)) else {
                    continue;
                };
                for e in list.iter() {
                    let env = e.env();
                    // A zone sits in every cell its envelope touches: report it only
                    // from the first cell where it meets the query.
                    if env.intersects(query)
                        && cell_of(env.min[0]).max(i0) == i
                        && cell_of(env.min[1]).max(j0) == j
                    {
                        f(e.slot);
                    }
                }
            }
        }
        for e in &self.spanning {
            if e.env.intersects(query) {
                f(e.slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(x0: f64, y0: f64, x1: f64, y1: f64) -> Envelope {
        Envelope {
            min: [x0, y0],
            max: [x1, y1],
        }
    }

    fn found(ix: &GlobalIndex, q: Envelope) -> Vec<u32> {
        let mut v = Vec::new();
        ix.for_each_candidate(&q, |s| v.push(s));
        v.sort_unstable();
        v
    }

    #[test]
    fn each_zone_reported_once_whatever_the_path() {
        let mut ix = GlobalIndex::default();
        ix.insert(1, env(10.0, 10.0, 10.01, 10.01)); // ~3x3 cells
        ix.insert(2, env(10.005, 10.005, 10.006, 10.006)); // one cell
        ix.insert(3, env(9.0, 9.0, 11.0, 11.0)); // spanning
        // A point query, a small box over several cells, and a wide (R-tree) query.
        assert_eq!(
            found(&ix, env(10.0055, 10.0055, 10.0055, 10.0055)),
            vec![1, 2, 3]
        );
        assert_eq!(
            found(&ix, env(10.003, 10.003, 10.007, 10.007)),
            vec![1, 2, 3]
        );
        assert_eq!(found(&ix, env(9.5, 9.5, 10.5, 10.5)), vec![1, 2, 3]);
        assert_eq!(found(&ix, env(10.02, 10.02, 10.02, 10.02)), vec![3]);
        ix.remove(1, env(10.0, 10.0, 10.01, 10.01));
        ix.remove(3, env(9.0, 9.0, 11.0, 11.0));
        assert_eq!(found(&ix, env(10.0055, 10.0055, 10.0055, 10.0055)), vec![2]);
        assert_eq!(found(&ix, env(9.5, 9.5, 10.5, 10.5)), vec![2]);
        assert_eq!(ix.len(), 1);
    }
}
