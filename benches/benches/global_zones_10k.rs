//! Scenario 1: 10,000 global 33-vertex zones, uniform points; the engine against
//! a naive R-tree + `geo::Contains` baseline built here, on the same points.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn global_zones_10k(c: &mut Criterion) {
    let data = benches::GlobalZones::generate(10_000, 2_000_000);
    let engine = data.engine();
    let tree = data.baseline();
    let engine_hits = benches::count_engine(&engine, &data.points);
    let baseline_hits = benches::count_baseline(&tree, &data.points);
    assert_eq!(engine_hits, baseline_hits, "engine and baseline disagree");

    let chunk = &data.points[..100_000];
    let mut g = c.benchmark_group("global_zones_10k");
    g.throughput(Throughput::Elements(chunk.len() as u64));
    g.sample_size(20);
    g.bench_function("engine", |b| {
        b.iter(|| benches::count_engine(&engine, black_box(chunk)))
    });
    g.bench_function("baseline_rtree_contains", |b| {
        b.iter(|| benches::count_baseline(&tree, black_box(chunk)))
    });
    g.finish();
}

criterion_group!(benches, global_zones_10k);
criterion_main!(benches);
