//! Tests of the planner: plan shape, limits, gaps, splitting, re-probing, and properties of
//! the plan and of split isolation against a simulated device.

use std::collections::BTreeSet;

use super::*;
use crate::modbus::DataType;
use proptest::prelude::*;

fn pt(name: &str, table: Table, address: u16, t: DataType) -> PointSpec {
    PointSpec::new(name, table, address, t)
}

fn u16s(table: Table, addresses: impl IntoIterator<Item = u16>) -> Vec<PointSpec> {
    let t = if table.is_bits() {
        DataType::Bool
    } else {
        DataType::U16
    };
    addresses
        .into_iter()
        .map(|a| pt(&format!("p{a}"), table, a, t))
        .collect()
}

fn shown(p: &Planner) -> Vec<String> {
    p.reads().iter().map(ToString::to_string).collect()
}

/// A device where register `a` holds `a` and bit `a` is `a` odd, refusing with exception 2
/// every read that touches an address in `refused`.
fn device(refused: &BTreeSet<(Table, u16)>) -> impl FnMut(&Read) -> Result<ReadData, u8> + '_ {
    move |read: &Read| {
        let range = u32::from(read.address)..read.end();
        if range
            .clone()
            .any(|a| a <= 65535 && refused.contains(&(read.table, a as u16)))
        {
            return Err(2);
        }
        Ok(if read.table.is_bits() {
            ReadData::Bits(range.map(|a| a % 2 == 1).collect())
        } else {
            ReadData::Registers(range.map(|a| a as u16).collect())
        })
    }
}

#[test]
fn points_close_together_share_a_read_and_tables_never_mix() {
    let points = vec![
        pt("a", Table::Holding, 0, DataType::F32),
        pt("b", Table::Holding, 4, DataType::U16),
        pt("c", Table::Input, 4, DataType::U16),
        pt("d", Table::Holding, 100, DataType::U16),
    ];
    let p = Planner::new(points, Limits::default());
    assert_eq!(
        shown(&p),
        ["input:4..5", "holding:0..5", "holding:100..101"]
    );
    assert_eq!(p.naive_requests(), 4);
}

#[test]
fn reads_stop_at_125_registers_and_2000_bits() {
    let mut points = u16s(Table::Holding, 0..200);
    points.extend(u16s(Table::Coil, 0..2500));
    let p = Planner::new(points, Limits::default());
    assert_eq!(
        shown(&p),
        [
            "coil:0..2000",
            "coil:2000..2500",
            "holding:0..125",
            "holding:125..200"
        ]
    );
    let small = Limits {
        max_registers: 10,
        max_bits: 16,
        max_gap: 8,
    };
    let p = Planner::new(u16s(Table::Input, 0..25), small);
    assert_eq!(shown(&p), ["input:0..10", "input:10..20", "input:20..25"]);
}

#[test]
fn holes_up_to_max_gap_are_read_through() {
    // A hole of 8 unused registers (1..=8) is merged, a hole of 9 is not.
    let p = Planner::new(u16s(Table::Holding, [0, 9, 19]), Limits::default());
    assert_eq!(shown(&p), ["holding:0..10", "holding:19..20"]);
    let no_gap = Limits {
        max_gap: 0,
        ..Limits::default()
    };
    let p = Planner::new(u16s(Table::Holding, [0, 1, 3]), no_gap);
    assert_eq!(shown(&p), ["holding:0..2", "holding:3..4"]);
}

#[test]
fn overlapping_points_share_registers() {
    let points = vec![
        pt("word", Table::Holding, 1, DataType::U16),
        pt("alarm", Table::Holding, 1, DataType::Bit(3)),
        pt("both", Table::Holding, 0, DataType::U32),
    ];
    let mut p = Planner::new(points, Limits::default());
    assert_eq!(shown(&p), ["holding:0..2"]);
    let regs = ReadData::Registers(vec![0x0001, 0x0008]);
    let read = p.reads()[0].clone();
    let values: Vec<(String, f64)> = p
        .decode(&read, &regs)
        .unwrap()
        .into_iter()
        .map(|(pt, v)| (pt.name.clone(), v))
        .collect();
    assert_eq!(
        values,
        [
            ("both".to_string(), 65544.0),
            ("word".to_string(), 8.0),
            ("alarm".to_string(), 1.0)
        ]
    );
    assert!(p.run_cycle(|_| Ok(regs.clone())).failed.is_empty());
}

#[test]
fn decode_refuses_short_and_mismatched_answers() {
    let p = Planner::new(u16s(Table::Holding, [0, 4]), Limits::default());
    let read = &p.reads()[0];
    assert!(matches!(
        p.decode(read, &ReadData::Registers(vec![0; 4])),
        Err(DecodeError::TooShort {
            needed: 5,
            got: 4,
            ..
        })
    ));
    assert!(matches!(
        p.decode(read, &ReadData::Bits(vec![true; 5])),
        Err(DecodeError::WrongKind { .. })
    ));
}

#[test]
fn a_refused_point_is_isolated_and_left_out() {
    let points = u16s(Table::Holding, [0, 2, 4, 6, 8, 10, 12, 14]);
    let mut p = Planner::new(points, Limits::default());
    assert_eq!(p.reads().len(), 1);
    let refused = BTreeSet::from([(Table::Holding, 6)]);
    let first = p.run_cycle(device(&refused));
    assert_eq!(first.newly_bad, [3]);
    assert_eq!(first.values.len(), 7);
    // 1 + 2 halves + 2 quarters of the bad half + 2 eighths: log2(8) levels.
    assert_eq!(first.requests, 7);
    assert_eq!(
        p.bad_points().iter().map(|b| b.address).collect::<Vec<_>>(),
        [6]
    );
    let second = p.run_cycle(device(&refused));
    assert_eq!((second.requests, second.values.len()), (p.reads().len(), 7));
    assert!(second.newly_bad.is_empty());
    assert_eq!(p.reads().len(), 3, "{:?}", shown(&p));
}

#[test]
fn a_refused_hole_splits_the_read_but_marks_no_point() {
    let mut p = Planner::new(u16s(Table::Input, [0, 5]), Limits::default());
    let refused = BTreeSet::from([(Table::Input, 3)]);
    let r = p.run_cycle(device(&refused));
    assert_eq!((r.requests, r.values.len()), (3, 2));
    assert!(p.bad_points().is_empty());
    assert_eq!(shown(&p), ["input:0..1", "input:5..6"]);
}

#[test]
fn bad_points_are_reprobed_every_n_cycles_and_come_back() {
    let points = u16s(Table::Holding, [0, 1, 2]);
    let mut p = Planner::new(points, Limits::default()).with_reprobe_every(3);
    let mut refused = BTreeSet::from([(Table::Holding, 1)]);
    assert_eq!(p.run_cycle(device(&refused)).newly_bad, [1]);
    let planned = p.reads().len();
    // Cycles 2 and 3 leave the point alone; cycle 4 re-probes it (still refused).
    for _ in 0..2 {
        assert_eq!(p.run_cycle(device(&refused)).requests, planned);
    }
    let r = p.run_cycle(device(&refused));
    assert_eq!(
        (r.requests, r.newly_bad.as_slice()),
        (planned + 1, &[1][..])
    );
    for _ in 0..2 {
        assert_eq!(p.run_cycle(device(&refused)).requests, planned);
    }
    // The device now has the register: the re-probe reads it and it is planned again.
    refused.clear();
    let r = p.run_cycle(device(&refused));
    assert_eq!((r.requests, r.values.len()), (planned + 1, 3));
    assert!(p.bad_points().is_empty());
    assert_eq!(p.run_cycle(device(&refused)).values.len(), 3);
}

#[test]
fn other_exceptions_fail_the_read_without_splitting() {
    let mut p = Planner::new(u16s(Table::Holding, [0, 1]), Limits::default());
    let r = p.run_cycle(|_| Err(6));
    assert_eq!((r.requests, r.failed.len()), (1, 1));
    assert_eq!(p.reads().len(), 1);
    assert_eq!(
        p.split(&Read {
            table: Table::Coil,
            address: 9,
            count: 1,
            points: vec![0]
        }),
        SplitOutcome::NotPlanned
    );
}

fn point() -> impl Strategy<Value = PointSpec> {
    (
        prop::sample::select(vec![
            Table::Coil,
            Table::DiscreteInput,
            Table::Input,
            Table::Holding,
        ]),
        0u16..400,
        prop::sample::select(DataType::ALL.to_vec()),
    )
        .prop_map(|(table, address, t)| {
            let t = if table.is_bits() {
                DataType::Bool
            } else if t == DataType::Bool {
                DataType::U16
            } else {
                t
            };
            pt("p", table, address, t)
        })
}

/// Answers drawn from `modes`: good data, a short answer, the wrong kind, exception 4.
fn flaky<'a>(
    refused: &'a BTreeSet<(Table, u16)>,
    modes: &'a [u8],
) -> impl FnMut(&Read) -> Result<ReadData, u8> + 'a {
    let mut good = device(refused);
    let mut at = 0;
    move |read: &Read| {
        let mode = modes.get(at % modes.len().max(1)).copied().unwrap_or(0);
        at += 1;
        match (good(read), mode % 4) {
            (Err(e), _) => Err(e),
            (Ok(data), 0) => Ok(data),
            (Ok(ReadData::Registers(mut r)), 1) => {
                r.pop();
                Ok(ReadData::Registers(r))
            }
            (Ok(ReadData::Bits(mut b)), 1) => {
                b.pop();
                Ok(ReadData::Bits(b))
            }
            (Ok(ReadData::Registers(r)), 2) => Ok(ReadData::Bits(vec![true; r.len()])),
            (Ok(ReadData::Bits(b)), 2) => Ok(ReadData::Registers(vec![1; b.len()])),
            (Ok(_), _) => Err(4),
        }
    }
}

proptest! {
    #[test]
    fn bad_answers_fail_reads_but_never_mark_points_bad(
        points in prop::collection::vec(point(), 1..40),
        refused in prop::collection::btree_set(
            (prop::sample::select(vec![Table::Coil, Table::Holding]), 0u16..400),
            0..6,
        ),
        modes in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let mut p = Planner::new(points.clone(), Limits::default()).with_reprobe_every(2);
        for _ in 0..5 {
            let r = p.run_cycle(flaky(&refused, &modes));
            for i in r.newly_bad {
                let pt = &points[i];
                prop_assert!((u32::from(pt.address)..pt.end())
                    .any(|a| refused.contains(&(pt.table, a as u16))));
            }
            for (read, code) in &r.failed {
                prop_assert!(*code == 0 || *code == 4, "{} {}", read, code);
            }
            let planned: usize = p.reads().iter().map(|r| r.points.len()).sum();
            prop_assert_eq!(planned + p.bad_points().len(), points.len());
            prop_assert_eq!(p.bad_reads().len(), p.bad_points().len());
        }
    }

    #[test]
    fn every_point_is_in_exactly_one_read_within_the_limits(
        points in prop::collection::vec(point(), 0..120),
        max_registers in 4u16..=125,
        max_bits in 1u16..=2000,
        max_gap in 0u16..20,
    ) {
        let limits = Limits { max_registers, max_bits, max_gap };
        let p = Planner::new(points.clone(), limits);
        let mut seen = vec![0; points.len()];
        for r in p.reads() {
            prop_assert!(r.count >= 1 && r.count <= limits.max_for(r.table));
            prop_assert!(r.end() <= 65_536);
            for &i in &r.points {
                seen[i] += 1;
                let pt = &points[i];
                prop_assert_eq!(pt.table, r.table);
                prop_assert!(pt.address >= r.address && pt.end() <= r.end());
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1));
        prop_assert!(p.reads().len() <= p.naive_requests());
    }

    #[test]
    fn splitting_finds_exactly_the_points_on_refused_addresses(
        points in prop::collection::vec(point(), 1..60),
        refused in prop::collection::btree_set(
            (prop::sample::select(vec![Table::Coil, Table::Input, Table::Holding]), 0u16..400),
            0..10,
        ),
    ) {
        let mut p = Planner::new(points.clone(), Limits::default());
        let first = p.run_cycle(device(&refused));
        // Bounded: every read splits at most log2(points) levels deep.
        prop_assert!(first.requests <= 1 + 4 * points.len() * 7);
        let expect_bad: BTreeSet<usize> = points
            .iter()
            .enumerate()
            .filter(|(_, pt)| {
                (u32::from(pt.address)..pt.end())
                    .any(|a| refused.contains(&(pt.table, a as u16)))
            })
            .map(|(i, _)| i)
            .collect();
        let got: BTreeSet<usize> = first.newly_bad.iter().copied().collect();
        prop_assert_eq!(&got, &expect_bad);
        prop_assert_eq!(first.values.len(), points.len() - expect_bad.len());
        // The next cycle needs no split: one request per planned read.
        let second = p.run_cycle(device(&refused));
        prop_assert_eq!(second.requests, p.reads().len());
        prop_assert_eq!(second.values.len(), points.len() - expect_bad.len());
        for (i, v) in second.values {
            let pt = &points[i];
            if pt.data_type == DataType::U16 {
                prop_assert_eq!(v, f64::from(pt.address));
            }
        }
    }
}
