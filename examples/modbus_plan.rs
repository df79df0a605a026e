//! Requests per poll cycle for a realistic Modbus register map: one request per point (what a
//! naive poller sends) against the planner's merged reads, for several `max_gap` values, and
//! what one refused address costs (the first cycle splits, later cycles do not).
//!
//! `cargo run --example modbus_plan`
//!
//! The map (examples/support/modbus_map.rs, shared with `examples/modbus_bench.rs`, which
//! polls it from the test simulator) is a power-meter-like device: about 200 registers of
//! small points (u16, i16, u32, f32, u64 energy counters, status bits) in seven blocks, holes of
//! 0 to 4 unused registers inside a block and larger ones between blocks, plus two input
//! registers, a few coils and discrete inputs. No I/O: the device is the simulator's layout
//! (`modbus_map::sim_answer`) driven by `Planner::run_cycle`.

#[path = "support/modbus_map.rs"]
mod modbus_map;

use std::collections::BTreeSet;

use edgewatch::modbus::{Limits, Planner, Read, ReadData, Table};
use modbus_map::{register_map, sim_answer};

/// The simulator (unit 1), refusing also the addresses in `refused` with exception 2.
fn device(refused: &BTreeSet<(Table, u16)>) -> impl FnMut(&Read) -> Result<ReadData, u8> + '_ {
    move |read| {
        let mut range = u32::from(read.address)..read.end();
        if range.any(|a| refused.contains(&(read.table, a as u16))) {
            return Err(2);
        }
        sim_answer(1, read)
    }
}

fn main() {
    let points = register_map();
    let registers: u32 = points
        .iter()
        .filter(|p| !p.table.is_bits())
        .map(|p| u32::from(p.data_type.width()))
        .sum();
    let bits = points.iter().filter(|p| p.table.is_bits()).count();
    println!(
        "register map: {} points ({} registers in {} register points, {bits} coils/discrete inputs)",
        points.len(),
        registers,
        points.len() - bits
    );
    println!();
    println!(
        "max_gap  requests/cycle  registers read  (naive: {} requests, one per point)",
        points.len()
    );
    for max_gap in [0u16, 2, 4, 8, 16, 32] {
        let limits = Limits {
            max_gap,
            ..Limits::default()
        };
        let planner = Planner::new(points.clone(), limits);
        let read: u32 = planner
            .reads()
            .iter()
            .filter(|r| !r.table.is_bits())
            .map(|r| u32::from(r.count))
            .sum();
        println!(
            "{max_gap:>7}  {:>14}  {read:>14}{}",
            planner.reads().len(),
            if max_gap == 8 { "  (default)" } else { "" }
        );
    }

    let mut planner = Planner::new(points.clone(), Limits::default());
    // The map lies where the simulator answers: a clean cycle decodes every point.
    let clean = planner.clone().run_cycle(|read| sim_answer(1, read));
    assert!(
        clean.failed.is_empty() && clean.newly_bad.is_empty(),
        "the map touches an address the simulator refuses: {clean:?}"
    );
    assert_eq!(clean.values.len(), points.len());
    println!();
    println!("planned reads (max_gap 8):");
    for r in planner.reads() {
        println!("  {r:<22} {} points", r.points.len());
    }

    // The device lacks one register inside a merged read (a map written for another model).
    let missing = (Table::Holding, 1212);
    let refused = BTreeSet::from([missing]);
    let first = planner.run_cycle(device(&refused));
    let second = planner.run_cycle(device(&refused));
    println!();
    println!(
        "one refused address ({}:{}): first cycle {} requests ({} points bad: {}), then {} per cycle (naive: {})",
        missing.0,
        missing.1,
        first.requests,
        first.newly_bad.len(),
        planner
            .bad_points()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        second.requests,
        points.len() - first.newly_bad.len()
    );
}
