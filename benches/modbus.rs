//! What planning and decoding cost per poll cycle, on one core, for the ~200-register map with
//! gaps of examples/support/modbus_map.rs (152 points in 10 planned reads):
//!
//! - `modbus/plan`: `Planner::new` of the whole map (once per unit and poll group at start-up);
//! - `modbus/cycle+decode`: one cycle without I/O: `Planner::cycle` (the reads), then
//!   `Planner::decode` of every answer (the simulator's data, prepared beforehand) and
//!   `Planner::succeeded`, as the scheduler's `poll_unit` does;
//! - `modbus/decode`: the decoding alone.
//!
//! Throughput is in points (152 per iteration), so criterion's time per element is the cost
//! per point. Run with `cargo bench --bench modbus`.

#[path = "../examples/support/modbus_map.rs"]
mod modbus_map;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgewatch::modbus::{Limits, Planner, ReadData};

fn bench(c: &mut Criterion) {
    let points = modbus_map::register_map();
    let n = points.len() as u64;
    let mut planner = Planner::new(points.clone(), Limits::default());
    let answers: Vec<ReadData> = planner
        .reads()
        .iter()
        .map(|r| modbus_map::sim_answer(1, r).expect("the map fits the simulator"))
        .collect();

    let mut group = c.benchmark_group("modbus");
    group.throughput(Throughput::Elements(n));
    group.bench_function("plan", |b| {
        b.iter(|| Planner::new(black_box(points.clone()), Limits::default()))
    });
    group.bench_function("cycle+decode", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for (read, data) in planner.cycle().iter().zip(&answers) {
                let values = planner.decode(read, black_box(data)).expect("decodes");
                sum += values.iter().map(|(_, v)| v).sum::<f64>();
                planner.succeeded(read);
            }
            sum
        })
    });
    let reads = planner.reads().to_vec();
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoded = 0;
            for (read, data) in reads.iter().zip(&answers) {
                decoded += planner
                    .decode(read, black_box(data))
                    .expect("decodes")
                    .len();
            }
            assert_eq!(decoded as u64, n);
            decoded
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
