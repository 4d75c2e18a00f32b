//! Profiling harness for scenario 2.
fn main() {
    let mut world = benches::SubjectWorld::generate(100_000, 30);
    let t = std::time::Instant::now();
    let n = world.run();
    println!("{n} {:?}", t.elapsed());
}
