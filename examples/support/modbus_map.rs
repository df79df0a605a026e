//! The register map of the Modbus examples and benchmarks (`examples/modbus_plan.rs`,
//! `examples/modbus_bench.rs`, `benches/modbus.rs`), and what the test simulator
//! (`tests/support/modbus_sim.py`) answers for it.
//!
//! A power-meter-like device, built deterministically: about 200 registers of small points
//! (u16, i16, u32, i32, f32, u64 energy counters, status bits) in seven blocks, with holes of 0
//! to 4 unused registers inside a block and larger ones between blocks, plus the two input
//! registers, twelve coils and twelve discrete inputs. Every address lies where the simulator
//! answers: the register blocks in its bulk block (holding 1000..1999, value = address), the
//! input registers at 0 (unit id) and 1 (marker), the bits in 0..15 (fixed patterns), so that
//! the map polls the simulator without a single exception.
//!
//! Include it with `#[path = "support/modbus_map.rs"] mod modbus_map;` (from `benches/`:
//! `"../examples/support/modbus_map.rs"`).

#![allow(dead_code)]

use edgewatch::modbus::{DataType, PointSpec, Read, ReadData, Table};

/// A tiny deterministic generator (xorshift), so every run builds the same map.
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

/// What a block of the map holds, which decides its point types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Measured values: u16, i16, u32, i32, f32.
    Measurements,
    /// Energy counters: also u64.
    Energy,
    /// Status words, set points, identification: also bits of a register.
    Status,
}

/// Blocks of (first holding address, registers to fill, kind), all inside the simulator's
/// bulk block 1000..1999 and at least 38 registers apart (more than any `max_gap` the
/// examples try), so each is a read of its own.
const BLOCKS: &[(u16, u16, Block)] = &[
    (1000, 62, Block::Measurements), // instantaneous values: voltages, currents, power
    (1100, 46, Block::Measurements), // power quality
    (1200, 56, Block::Energy),       // energy counters
    (1300, 36, Block::Measurements), // diagnostics
    (1500, 36, Block::Status),       // status and alarm words
    (1600, 46, Block::Status),       // set points
    (1900, 34, Block::Status),       // identification, firmware
];

/// The simulator's bulk block: holding registers holding their own address.
pub const BULK: std::ops::Range<u16> = 1000..2000;
/// The simulator's input registers: 0 = the unit id, 1 = the marker.
pub const IR_MARKER_VALUE: u16 = 0x4952;
/// The simulator's coils 0..15 and discrete inputs 0..15: the bits of these patterns.
pub const COIL_PATTERN: u16 = 0x8025;
pub const DISCRETE_PATTERN: u16 = 0x4952;

/// The map: register points in table and address order, then the input registers, coils and
/// discrete inputs.
pub fn register_map() -> Vec<PointSpec> {
    let mut rng = Rng(0x5eed_cafe);
    let mut points = Vec::new();
    for &(first, span, block) in BLOCKS {
        let end = first + span;
        let mut at = first;
        while at < end {
            let t = match rng.below(10) {
                0..=3 => DataType::F32,
                4..=5 => DataType::U16,
                6 => DataType::I16,
                7 => DataType::U32,
                8 if block == Block::Status => DataType::Bit(rng.below(16) as u8),
                8 => DataType::U16,
                _ if block == Block::Energy => DataType::U64,
                _ => DataType::I32,
            };
            if at + t.width() > end {
                break;
            }
            points.push(PointSpec::new(
                format!("holding_{at}"),
                Table::Holding,
                at,
                t,
            ));
            // Holes of 0..=4 unused registers between points of a block.
            at += t.width() + [0, 0, 0, 1, 2, 4][rng.below(6) as usize];
        }
    }
    points.push(PointSpec::new("unit_id", Table::Input, 0, DataType::U16));
    points.push(PointSpec::new("marker", Table::Input, 1, DataType::U16));
    for table in [Table::Coil, Table::DiscreteInput] {
        // Two groups of six with a hole of four between them.
        for i in 0..12u16 {
            let address = i + u16::from(i >= 6) * 4;
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

/// What the simulator answers to `read` on `unit` (its layout, see the module doc): the data,
/// or exception 2 when the read touches an address the simulator does not define.
pub fn sim_answer(unit: u8, read: &Read) -> Result<ReadData, u8> {
    let range = u32::from(read.address)..read.end();
    let pattern = match read.table {
        Table::Coil => COIL_PATTERN,
        Table::DiscreteInput => DISCRETE_PATTERN,
        Table::Input if range.end <= 2 => {
            let regs = [u16::from(unit), IR_MARKER_VALUE];
            return Ok(ReadData::Registers(
                range.map(|a| regs[a as usize]).collect(),
            ));
        }
        Table::Holding
            if range.start >= u32::from(BULK.start) && range.end <= u32::from(BULK.end) =>
        {
            return Ok(ReadData::Registers(range.map(|a| a as u16).collect()));
        }
        Table::Input | Table::Holding => return Err(2),
    };
    if range.end > 16 {
        // Bit 16 toggles with the simulator's tick (not modelled here: the map does not read
        // it), and nothing is defined past it.
        return Err(2);
    }
    Ok(ReadData::Bits(
        range.map(|a| pattern >> a & 1 == 1).collect(),
    ))
}
