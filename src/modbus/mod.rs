//! The Modbus core, sans-IO and clock-free: what a configured point is ([`PointSpec`]), how the
//! registers or bits of an answer become a value ([`decode`]), and which requests poll a set of
//! points ([`plan::Planner`]).
//!
//! The scheduler (`source/modbus/`) owns the connections and the clock; it asks a [`Planner`]
//! for the reads of a cycle, sends them, hands each answer back to [`Planner::decode`], and on
//! exception 2 (illegal data address) asks [`Planner::split`] to isolate the address that the
//! device refuses. Points that still fail alone are remembered as bad ([`Planner::bad_points`])
//! and only re-probed every few cycles, so one wrong address in a register map costs one
//! request now and then instead of failing the whole read every cycle.
//!
//! Invariants:
//! - A [`Read`] never spans more than [`Limits::max_registers`] registers (register tables) or
//!   [`Limits::max_bits`] bits (coils, discrete inputs), and every point it carries lies wholly
//!   inside it. (A single point wider than the limit gets a read of its own width; config
//!   validation refuses such a limit, and points running past address 65535.)
//! - The planner is driven by the caller, one cycle at a time: [`Planner::cycle`] gives the
//!   reads (the plan plus due re-probes of bad points); each answer goes to
//!   [`Planner::decode`] and [`Planner::succeeded`], each exception 2 to [`Planner::split`],
//!   whose halves may be read at once. [`Planner::run_cycle`] is that loop, synchronous, for
//!   tests, fuzzing and `examples/modbus_plan.rs`.
//!
//! Usage, as the scheduler does it per unit and poll group ([`poll_groups`]):
//!
//! ```
//! use edgewatch::modbus::{DataType, Limits, Planner, PointSpec, ReadData, Table};
//!
//! let points = vec![
//!     PointSpec::new("temperature", Table::Holding, 0, DataType::F32),
//!     PointSpec::new("status", Table::Holding, 4, DataType::U16),
//! ];
//! let mut planner = Planner::new(points, Limits::default());
//! assert_eq!(planner.reads().len(), 1); // holding:0..5, one request instead of two
//! let report = planner.run_cycle(|read| Ok(ReadData::Registers(vec![0x41a4, 0, 0, 0, 7])));
//! assert_eq!(report.values, [(0, 20.5), (1, 7.0)]);
//! ```
//! - Decoding is total: any data gives a value or a [`DecodeError`], never a panic.

pub mod decode;
pub mod plan;

use std::fmt;

use serde::Deserialize;

pub use decode::{DecodeError, decode_point, decode_raw, encode_raw};
pub use plan::{CycleReport, Limits, Planner, Read, SplitOutcome};

/// The four Modbus data tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    DiscreteInput,
    /// Read-only 16-bit registers (function 4).
    #[serde(alias = "input_register")]
    Input,
    /// Read/write 16-bit registers (function 3).
    #[serde(alias = "holding_register")]
    Holding,
}

impl Table {
    /// Whether this table holds bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The name used in the config (`holding`, `coil`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    /// The Modbus read function code of this table.
    pub fn function_code(self) -> u8 {
        match self {
            Table::Coil => 1,
            Table::DiscreteInput => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a point's registers or bit are read as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// One coil or discrete input: 0 or 1.
    Bool,
    /// Bit `n` (0 = least significant) of one 16-bit register: 0 or 1.
    Bit(u8),
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Width in registers (or bits, for [`DataType::Bool`]).
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit(_) | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// The name used in the config (`f32`, `bit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Bit(_) => "bit",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }

    /// Every type, with bit 0 for [`DataType::Bit`] (tests, fuzzing).
    pub const ALL: [DataType; 10] = [
        DataType::Bool,
        DataType::Bit(0),
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];
}

/// Byte and word order of multi-register values, named after the bytes `A B C D` of a 32-bit
/// big-endian value as they appear on the wire. For 64-bit values the letters generalise: `ABCD`
/// registers in order, big-endian; `CDAB` register order reversed; `BADC` bytes swapped within
/// each register; `DCBA` fully reversed (little endian). Single-register types ignore the order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum WordOrder {
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    #[serde(rename = "CDAB")]
    Cdab,
    #[serde(rename = "BADC")]
    Badc,
    #[serde(rename = "DCBA")]
    Dcba,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }
}

/// One configured point of a device: a field of the unit's sensor.
#[derive(Clone, Debug, PartialEq)]
pub struct PointSpec {
    /// The field name of its readings; unique within a register map.
    pub name: String,
    pub table: Table,
    /// Zero-based protocol address of the first register (or bit).
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// value = raw * scale + offset.
    pub scale: f64,
    pub offset: f64,
    /// Engineering unit (`degC`), informative.
    pub unit: Option<String>,
    /// Own poll interval; `None`: the source's `interval_ms`. Points with different intervals
    /// are planned separately (see [`poll_groups`]).
    pub interval_ms: Option<u64>,
}

impl PointSpec {
    /// A point with scale 1, offset 0, order ABCD and no own interval.
    pub fn new(name: impl Into<String>, table: Table, address: u16, data_type: DataType) -> Self {
        PointSpec {
            name: name.into(),
            table,
            address,
            data_type,
            order: WordOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            interval_ms: None,
        }
    }

    /// One past the last register (or bit) of the point, as u32 so that it cannot overflow.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.data_type.width())
    }
}

/// The points split by poll interval (`default_interval_ms` for points without their own),
/// in ascending interval order: the scheduler plans and polls each group on its own tick.
pub fn poll_groups(points: &[PointSpec], default_interval_ms: u64) -> Vec<(u64, Vec<PointSpec>)> {
    let mut groups: std::collections::BTreeMap<u64, Vec<PointSpec>> = Default::default();
    for p in points {
        groups
            .entry(p.interval_ms.unwrap_or(default_interval_ms))
            .or_default()
            .push(p.clone());
    }
    groups.into_iter().collect()
}

/// The data of one successful read: bits for coils and discrete inputs, registers otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadData {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
}

impl ReadData {
    pub fn len(&self) -> usize {
        match self {
            ReadData::Bits(b) => b.len(),
            ReadData::Registers(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Exception 2: the device does not have (some of) the addresses read.
pub const ILLEGAL_DATA_ADDRESS: u8 = 2;

/// The name of a Modbus exception code as the specification gives it (lower case), for logs,
/// health details and the probe: `exception 2 (illegal data address)`.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_names_follow_the_specification() {
        assert_eq!(exception_name(2), "illegal data address");
        assert_eq!(
            exception_name(11),
            "gateway target device failed to respond"
        );
        assert_eq!(exception_name(7), "unknown exception");
    }

    #[test]
    fn widths_are_in_registers() {
        assert_eq!(DataType::Bit(3).width(), 1);
        assert_eq!(DataType::F32.width(), 2);
        assert_eq!(DataType::I64.width(), 4);
    }

    #[test]
    fn poll_groups_split_points_by_interval() {
        let mut slow = PointSpec::new("e", Table::Input, 10, DataType::U32);
        slow.interval_ms = Some(10_000);
        let fast = PointSpec::new("t", Table::Holding, 0, DataType::F32);
        let groups = poll_groups(&[slow, fast], 1000);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].0, groups[0].1[0].name.as_str()), (1000, "t"));
        assert_eq!((groups[1].0, groups[1].1[0].name.as_str()), (10_000, "e"));
    }
}
