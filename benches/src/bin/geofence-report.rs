//! `cargo run --release -p benches --bin geofence-report`: runs the three geofence
//! scenarios once each (about 20 s in all) and prints one summary line per
//! scenario, then informational lines prefixed with `#`. Exits non-zero if the
//! engine disagrees with its baseline.

use benches::{BigPolygon, GlobalZones, SubjectWorld};
use std::process::ExitCode;
use std::time::Instant;

// Over 80 lines: a script, one scenario after another, printing as it goes.
fn main() -> ExitCode {
    let mut ok = true;

    // 1. global_zones_10k: engine vs. naive R-tree + geo::Contains, same points.
    let t = Instant::now();
    let data = GlobalZones::generate(10_000, 2_000_000);
    let engine = data.engine();
    let tree = data.baseline();
    let setup = t.elapsed();
    // The workload is the issue's, never a lighter one.
    assert_eq!(
        engine.zone_counts(),
        (10_000, 10_000),
        "global_zones_10k: 10,000 global zones"
    );
    assert_eq!(data.points.len(), 2_000_000);
    let n = data.points.len() as f64;
    let t = Instant::now();
    let engine_hits = benches::count_engine(&engine, &data.points);
    let engine_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let baseline_hits = benches::count_baseline(&tree, &data.points);
    let baseline_s = t.elapsed().as_secs_f64();
    let (e_rate, b_rate) = (n / engine_s / 1e6, n / baseline_s / 1e6);
    println!(
        "global_zones_10k: engine={e_rate:.2} Mpts/s baseline={b_rate:.2} Mpts/s ratio={:.2}x hits={engine_hits}",
        e_rate / b_rate
    );
    println!(
        "# global_zones_10k setup (generate + prepare + bulk load) {:.2} s",
        setup.as_secs_f64()
    );
    if engine_hits != baseline_hits {
        eprintln!("global_zones_10k: engine hits {engine_hits} != baseline hits {baseline_hits}");
        ok = false;
    }
    drop((data, engine, tree));

    // 2. subject_rules: full evaluate, 100k subjects.
    let t = Instant::now();
    let mut world = SubjectWorld::generate(100_000, 30);
    let setup = t.elapsed();
    assert_eq!(
        world.engine.subject_count(),
        100_000,
        "subject_rules: 100,000 subjects"
    );
    assert_eq!(
        world.engine.zone_counts().1,
        10_000,
        "subject_rules: 10,000 global zones"
    );
    let fixes = world.fixes.len() as f64;
    let t = Instant::now();
    let transitions = world.run();
    let secs = t.elapsed().as_secs_f64();
    println!("subject_rules: {:.2} Mfixes/s", fixes / secs / 1e6);
    println!(
        "# subject_rules {} fixes, {transitions} transitions, setup {:.2} s",
        fixes as u64,
        setup.as_secs_f64()
    );
    if transitions == 0 {
        eprintln!("subject_rules: no transitions at all; the workload is not exercising the rules");
        ok = false;
    }
    // The same workload through the batch API, on a fresh world.
    let mut world = SubjectWorld::generate(100_000, 30);
    let t = Instant::now();
    let batched = world.run_batched();
    let batch_secs = t.elapsed().as_secs_f64();
    println!(
        "# subject_rules via evaluate_batch: {:.2} Mfixes/s, {batched} transitions",
        fixes / batch_secs / 1e6
    );
    if batched != transitions {
        eprintln!(
            "subject_rules: evaluate_batch gave {batched} transitions, evaluate {transitions}"
        );
        ok = false;
    }
    drop(world);

    // 3. big_polygon: 20,000 vertices.
    let t = Instant::now();
    let big = BigPolygon::generate(20_000, 150_000);
    let setup = t.elapsed();
    assert_eq!(
        big.engine.zone_vertex_count(benches::CITY),
        Some(20_000),
        "big_polygon: 20,000 vertices"
    );
    // Ten passes over the points, so the timed run is long enough to be stable.
    const PASSES: usize = 10;
    let queries = (PASSES * big.points.len()) as f64;
    let t = Instant::now();
    let inside = (0..PASSES)
        .map(|_| big.count_engine(0.0).0)
        .max()
        .unwrap_or(0);
    let secs = t.elapsed().as_secs_f64();
    println!("big_polygon: {:.0} ns/pt", secs * 1e9 / queries);
    let t = Instant::now();
    let (mut inside_acc, mut uncertain_acc) = (0, 0);
    for _ in 0..PASSES {
        (inside_acc, uncertain_acc) = big.count_engine(15.0);
    }
    let secs_acc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let geo_inside = big.count_geo();
    let geo_secs = t.elapsed().as_secs_f64();
    println!(
        "# big_polygon inside={inside} (geo::Contains {geo_inside}, {:.0} ns/pt); with 15 m accuracy {:.0} ns/pt, inside={inside_acc} uncertain={uncertain_acc}; setup {:.1} ms",
        geo_secs * 1e9 / big.points.len() as f64,
        secs_acc * 1e9 / queries,
        setup.as_secs_f64() * 1e3
    );
    if inside != geo_inside {
        eprintln!("big_polygon: engine inside {inside} != geo::Contains {geo_inside}");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
