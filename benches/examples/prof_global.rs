//! Profiling harness for scenario 1 (engine side only).
fn main() {
    let data = benches::GlobalZones::generate(10_000, 2_000_000);
    let engine = data.engine();
    let t = std::time::Instant::now();
    let hits = benches::count_engine(&engine, &data.points);
    println!("{hits} {:?}", t.elapsed());
}
