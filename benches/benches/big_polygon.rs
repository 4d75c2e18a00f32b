//! Scenario 3: a 20,000-vertex city boundary; points inside, outside and within
//! 50 m of the boundary, exact (accuracy 0) and with a 15 m accuracy radius.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn big_polygon(c: &mut Criterion) {
    let big = benches::BigPolygon::generate(20_000, 30_000);
    assert_eq!(
        big.count_engine(0.0).0,
        big.count_geo(),
        "engine and geo::Contains disagree"
    );
    let mut g = c.benchmark_group("big_polygon");
    g.throughput(Throughput::Elements(big.points.len() as u64));
    g.bench_function("contains", |b| b.iter(|| big.count_engine(0.0)));
    g.bench_function("accuracy_15m", |b| b.iter(|| big.count_engine(15.0)));
    g.finish();
}

criterion_group!(benches, big_polygon);
criterion_main!(benches);
