//! Scenario 2: full `evaluate` for 100,000 subjects (curfew at home, personal
//! exclusion zones, 10,000 global school zones for 30 % of them).
//!
//! `evaluate` changes state, so each sample runs a freshly generated world
//! (generation untimed) through ten minutes of fixes, a million fixes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};

fn subject_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("subject_rules");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("evaluate_100k_subjects", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut world = benches::SubjectWorld::generate(100_000, 10);
                assert_eq!(world.fixes.len(), 1_000_000);
                let t = Instant::now();
                let transitions = world.run();
                total += t.elapsed();
                assert!(transitions > 0, "the workload must exercise the rules");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, subject_rules);
criterion_main!(benches);
