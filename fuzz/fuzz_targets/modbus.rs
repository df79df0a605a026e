//! Feeds arbitrary register maps, device answers and refused addresses through the Modbus
//! planner and decoder. The input is read as: 3 bytes of limits (max registers, max bits, max
//! gap), a point count, 5 bytes per point (table and type, order and bit, address), a count of
//! refused addresses with 3 bytes each (table, address), then a stream the simulated device
//! draws its answers from (good data, short data, the wrong kind, another exception).
//!
//! Besides not panicking, the planner must keep its contract: every point that is not bad is in
//! exactly one read, inside it, within the limits (a single point wider than the limit excepted);
//! values come only from points of the read answered; and a point is only ever marked bad when
//! it covers an address the device refuses (exception 2 is answered for nothing else).

#![no_main]

use std::collections::BTreeSet;

use edgewatch::modbus::{
    DataType, Limits, Planner, PointSpec, Read, ReadData, Table, WordOrder, decode_point,
    decode_raw,
};
use libfuzzer_sys::fuzz_target;

const TABLES: [Table; 4] = [
    Table::Coil,
    Table::DiscreteInput,
    Table::Input,
    Table::Holding,
];

/// A byte cursor that yields zeros once the input is exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
}

fn point(i: usize, b: &mut Bytes) -> PointSpec {
    let kind = b.u8();
    let order_bit = b.u8();
    let table = TABLES[usize::from(kind & 3)];
    let mut data_type = DataType::ALL[usize::from(kind >> 2) % DataType::ALL.len()];
    if data_type == DataType::Bit(0) {
        data_type = DataType::Bit(order_bit >> 2); // 0..=63: out-of-range bits too
    }
    let mut p = PointSpec::new(format!("p{i}"), table, b.u16(), data_type);
    p.order = WordOrder::ALL[usize::from(order_bit & 3)];
    if b.u8() & 1 == 1 {
        p.scale = 0.5;
        p.offset = -3.0;
    }
    p
}

fn check_plan(planner: &Planner) {
    let points = planner.points();
    let bad: BTreeSet<&str> = planner
        .bad_points()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut seen = vec![0u32; points.len()];
    for r in planner.reads() {
        let limit = planner.limits().max_for(r.table);
        assert!(r.count >= 1, "{r}");
        assert!(
            r.count <= limit || r.points.len() == 1,
            "{r} exceeds {limit}"
        );
        for &i in &r.points {
            seen[i] += 1;
            let p = &points[i];
            assert_eq!(p.table, r.table);
            assert!(
                p.address >= r.address && p.end() <= r.end(),
                "{} not in {r}",
                p.name
            );
        }
    }
    for (i, p) in points.iter().enumerate() {
        let expected = u32::from(!bad.contains(p.name.as_str()));
        assert_eq!(seen[i], expected, "{} in {} reads", p.name, seen[i]);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let limits = Limits {
        max_registers: u16::from(b.u8() % 125) + 1,
        max_bits: b.u16() % 2000 + 1,
        max_gap: u16::from(b.u8() % 32),
    };
    let n = usize::from(b.u8() % 48);
    let points: Vec<PointSpec> = (0..n).map(|i| point(i, &mut b)).collect();
    let refused: BTreeSet<(Table, u16)> = (0..b.u8() % 8)
        .map(|_| (TABLES[usize::from(b.u8() & 3)], b.u16()))
        .collect();
    let stream = b.0;

    let mut planner = Planner::new(points.clone(), limits).with_reprobe_every(2);
    check_plan(&planner);
    let mut at = 0usize;
    let mut next = || {
        let v = stream.get(at % stream.len().max(1)).copied().unwrap_or(0);
        at += 1;
        v
    };
    for _ in 0..4 {
        let report = planner.run_cycle(|read: &Read| {
            let touches_refused = (u32::from(read.address)..read.end())
                .any(|a| a <= 65535 && refused.contains(&(read.table, a as u16)));
            if touches_refused {
                return Err(2);
            }
            let mode = next();
            let len = match mode % 16 {
                0 => usize::from(read.count).saturating_sub(1), // short answer
                _ => usize::from(read.count),
            };
            match mode % 16 {
                1 => Err(4),
                2 if read.table.is_bits() => Ok(ReadData::Registers(vec![0; len])),
                2 => Ok(ReadData::Bits(vec![true; len])),
                _ if read.table.is_bits() => {
                    Ok(ReadData::Bits((0..len).map(|_| next() & 1 == 1).collect()))
                }
                _ => Ok(ReadData::Registers(
                    (0..len)
                        .map(|_| u16::from_be_bytes([next(), next()]))
                        .collect(),
                )),
            }
        });
        for &i in &report.newly_bad {
            let p = &points[i];
            assert!(
                (u32::from(p.address)..p.end())
                    .any(|a| a <= 65535 && refused.contains(&(p.table, a as u16))),
                "{} marked bad without a refused address",
                p.name
            );
        }
        assert!(report.values.iter().all(|(i, _)| *i < points.len()));
        check_plan(&planner);
    }

    // The decoder alone, on the raw stream, for every point.
    let regs: Vec<u16> = stream
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    let bits: Vec<bool> = stream.iter().map(|b| b & 1 == 1).collect();
    for p in &points {
        let start = p.address.saturating_sub(u16::from(next() % 4));
        let _ = decode_point(p, &ReadData::Registers(regs.clone()), start);
        let _ = decode_point(p, &ReadData::Bits(bits.clone()), start);
        let _ = decode_raw(p.data_type, p.order, &regs);
    }
});
