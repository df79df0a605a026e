//! Requests per poll cycle for a realistic Modbus register map: one request per point (what a
//! naive poller sends) against the planner's merged reads, for several `max_gap` values, and
//! what one refused address costs (the first cycle splits, later cycles do not).
//!
//! `cargo run --example modbus_plan`
//!
//! The map (built deterministically below) is a power-meter-like device: about 200 registers
//! of small points (u16, i16, u32, f32, u64 energy counters, status bits) in blocks spread over
//! the input and holding tables, holes of 0 to 4 unused registers inside a block and larger
//! ones between blocks, plus a few coils and discrete inputs. No I/O: the device is simulated
//! with `Planner::run_cycle`.

use std::collections::BTreeSet;

use edgewatch::modbus::{DataType, Limits, Planner, PointSpec, Read, ReadData, Table};

/// A tiny deterministic generator (xorshift), so every run prints the same figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Blocks of (table, first address, registers to fill).
const BLOCKS: &[(Table, u16, u16)] = &[
    (Table::Input, 0, 62),      // instantaneous values: voltages, currents, power
    (Table::Input, 100, 46),    // power quality
    (Table::Input, 400, 56),    // energy counters
    (Table::Input, 3000, 36),   // diagnostics
    (Table::Holding, 0, 36),    // status and alarm words
    (Table::Holding, 200, 46),  // set points
    (Table::Holding, 4096, 34), // identification, firmware
];

fn register_map() -> Vec<PointSpec> {
    let mut rng = Rng(0x5eed_cafe);
    let mut points = Vec::new();
    for &(table, first, span) in BLOCKS {
        let end = first + span;
        let mut at = first;
        while at < end {
            let t = match rng.below(10) {
                0..=3 => DataType::F32,
                4..=5 => DataType::U16,
                6 => DataType::I16,
                7 => DataType::U32,
                8 if table == Table::Holding => DataType::Bit(rng.below(16) as u8),
                8 => DataType::U16,
                _ if table == Table::Input && first == 400 => DataType::U64,
                _ => DataType::I32,
            };
            if at + t.width() > end {
                break;
            }
            let name = format!("{}_{at}", table.name());
            points.push(PointSpec::new(name, table, at, t));
            // Holes of 0..=4 unused registers between points of a block.
            at += t.width() + [0, 0, 0, 1, 2, 4][rng.below(6) as usize];
        }
    }
    for (table, base) in [(Table::Coil, 0), (Table::DiscreteInput, 16)] {
        for i in 0..12u16 {
            let address = base + i * 2 + u16::from(i >= 6) * 20;
            points.push(PointSpec::new(
                format!("{}_{address}", table.name()),
                table,
                address,
                DataType::Bool,
            ));
        }
    }
    points
}

/// A device with every address of the map, refusing those in `refused` with exception 2.
fn device(refused: &BTreeSet<(Table, u16)>) -> impl FnMut(&Read) -> Result<ReadData, u8> + '_ {
    move |read| {
        let range = u32::from(read.address)..read.end();
        if range
            .clone()
            .any(|a| refused.contains(&(read.table, a as u16)))
        {
            return Err(2);
        }
        Ok(if read.table.is_bits() {
            ReadData::Bits(range.map(|a| a % 3 == 0).collect())
        } else {
            ReadData::Registers(range.map(|a| a as u16).collect())
        })
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
    println!();
    println!("planned reads (max_gap 8):");
    for r in planner.reads() {
        println!("  {r:<22} {} points", r.points.len());
    }

    // The device lacks one register inside a merged read (a map written for another model).
    let missing = (Table::Input, 412);
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
