//! The request planner: which reads poll a set of points, and how the plan adapts when a device
//! refuses an address.
//!
//! Points of the same table are sorted by address and merged greedily into one read while the
//! hole before the next point is at most `max_gap` registers (bits) and the read stays within
//! `max_registers` (`max_bits`). Reading a few unused registers is much cheaper than another
//! round trip, but many devices answer exception 2 (illegal data address) for a read that
//! touches an address they do not implement. Then [`Planner::split`] replaces the read by two
//! halves (by points), recursively, so a refused address is isolated in at most
//! log2(points) steps; a point that still fails alone is bad: it leaves the plan and is only
//! re-probed every [`Planner::reprobe_every`] cycles, coming back when the device answers.
//! Split reads are never merged again (the hole between them is what the device refused).

use std::collections::BTreeMap;
use std::fmt;

use super::decode::{DecodeError, decode_point};
use super::{PointSpec, ReadData, Table};

/// The most registers one read may ask for (function 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// The most bits one read may ask for (function 1 and 2).
pub const MAX_READ_BITS: u16 = 2000;

/// Size limits of reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many registers per read (1..=125).
    pub max_registers: u16,
    /// At most this many bits per read (1..=2000).
    pub max_bits: u16,
    /// Merge two points into one read when at most this many unused registers (bits) lie
    /// between them.
    pub max_gap: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: MAX_READ_REGISTERS,
            max_bits: MAX_READ_BITS,
            max_gap: 8,
        }
    }
}

impl Limits {
    /// The size limit of a read of `table`.
    pub fn max_for(&self, table: Table) -> u16 {
        if table.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        }
    }
}

/// One request: `count` registers (bits) of `table` from `address`, carrying the indexes (into
/// [`Planner::points`]) of the points it holds, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Read {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

impl Read {
    /// One past the last register (bit) read.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

impl fmt::Display for Read {
    /// `holding:100..110` (end exclusive), the form the probe's `--read` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}..{}", self.table, self.address, self.end())
    }
}

/// What [`Planner::split`] did with a read that answered exception 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitOutcome {
    /// The read was replaced in the plan by these reads; reading them now (this cycle) is
    /// allowed, each may be split again.
    Split(Vec<Read>),
    /// The read held one point: that point (index) is now bad and out of the plan.
    Bad(usize),
    /// The read is not part of the plan (an outdated read): nothing changed.
    NotPlanned,
}

/// Plans and adapts the reads of one poll group of one unit. See the module doc.
#[derive(Clone, Debug)]
pub struct Planner {
    points: Vec<PointSpec>,
    limits: Limits,
    reads: Vec<Read>,
    /// Bad point → the cycle at which it was marked (or last re-probed).
    bad: BTreeMap<usize, u64>,
    cycle: u64,
    reprobe_every: u64,
}

impl Planner {
    /// The default number of cycles between two re-probes of a bad point.
    pub const DEFAULT_REPROBE_EVERY: u64 = 100;

    pub fn new(points: Vec<PointSpec>, limits: Limits) -> Self {
        let all: Vec<usize> = (0..points.len()).collect();
        let reads = plan(&points, &all, &limits);
        Planner {
            points,
            limits,
            reads,
            bad: BTreeMap::new(),
            cycle: 0,
            reprobe_every: Self::DEFAULT_REPROBE_EVERY,
        }
    }

    /// Re-probe bad points every `cycles` cycles (at least 1).
    pub fn with_reprobe_every(mut self, cycles: u64) -> Self {
        self.reprobe_every = cycles.max(1);
        self
    }

    pub fn reprobe_every(&self) -> u64 {
        self.reprobe_every
    }

    pub fn points(&self) -> &[PointSpec] {
        &self.points
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The current plan: the reads of every cycle, in table and address order (bad points'
    /// re-probes not included).
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    /// Requests per cycle when every point is read on its own (what a naive poller sends).
    pub fn naive_requests(&self) -> usize {
        self.points.len()
    }

    /// Starts the next poll cycle and returns its reads: the plan plus, every
    /// `reprobe_every` cycles after a point went bad, a single read of that point.
    pub fn cycle(&mut self) -> Vec<Read> {
        self.cycle += 1;
        let mut reads = self.reads.clone();
        for (&i, &since) in &self.bad {
            if self.cycle.saturating_sub(since) >= self.reprobe_every {
                reads.push(single(&self.points, i));
            }
        }
        reads
    }

    /// The values of the points of `read` from its answer, as (point, value). The answer
    /// must be the right kind and at least `count` long; otherwise nothing is decoded.
    pub fn decode(
        &self,
        read: &Read,
        data: &ReadData,
    ) -> Result<Vec<(&PointSpec, f64)>, DecodeError> {
        let (kind, unit) = if read.table.is_bits() {
            ("bits", "bits")
        } else {
            ("registers", "registers")
        };
        match (read.table.is_bits(), data) {
            (true, ReadData::Registers(_)) => {
                return Err(DecodeError::WrongKind {
                    expected: kind,
                    got: "registers",
                });
            }
            (false, ReadData::Bits(_)) => {
                return Err(DecodeError::WrongKind {
                    expected: kind,
                    got: "bits",
                });
            }
            _ => {}
        }
        if data.len() < usize::from(read.count) {
            return Err(DecodeError::TooShort {
                needed: usize::from(read.count),
                got: data.len(),
                unit,
            });
        }
        read.points
            .iter()
            .filter_map(|&i| self.points.get(i))
            .map(|p| decode_point(p, data, read.address).map(|v| (p, v)))
            .collect()
    }

    /// Notes that `read` was answered. A re-probed bad point that answers is good again: it
    /// returns to the plan as a read of its own.
    pub fn succeeded(&mut self, read: &Read) {
        if let [i] = read.points[..]
            && self.bad.remove(&i).is_some()
        {
            let r = single(&self.points, i);
            let at = self
                .reads
                .partition_point(|x| (x.table, x.address) <= (r.table, r.address));
            self.reads.insert(at, r);
        }
    }

    /// `read` answered exception 2 (illegal data address): replace it in the plan by two
    /// halves (by points), or, when it holds one point, mark that point bad.
    pub fn split(&mut self, read: &Read) -> SplitOutcome {
        if let [i] = read.points[..]
            && let Some(since) = self.bad.get_mut(&i)
        {
            // A re-probe that failed again: wait another `reprobe_every` cycles.
            *since = self.cycle;
            return SplitOutcome::Bad(i);
        }
        let Some(at) = self.reads.iter().position(|r| r == read) else {
            return SplitOutcome::NotPlanned;
        };
        if read.points.len() <= 1 {
            self.reads.remove(at);
            if let Some(&i) = read.points.first() {
                self.bad.insert(i, self.cycle);
                return SplitOutcome::Bad(i);
            }
            return SplitOutcome::Split(Vec::new());
        }
        let mid = read.points.len() / 2;
        let halves = vec![
            tight(&self.points, read.table, &read.points[..mid]),
            tight(&self.points, read.table, &read.points[mid..]),
        ];
        self.reads.splice(at..=at, halves.iter().cloned());
        SplitOutcome::Split(halves)
    }

    /// The points found bad (refused alone with exception 2), in configuration order.
    pub fn bad_points(&self) -> Vec<&PointSpec> {
        self.bad
            .keys()
            .filter_map(|&i| self.points.get(i))
            .collect()
    }

    /// The address ranges of the bad points as single reads, for health details
    /// (`.bad_ranges`: each displays as `holding:5..7`).
    pub fn bad_reads(&self) -> Vec<Read> {
        self.bad.keys().map(|&i| single(&self.points, i)).collect()
    }
}

/// What [`Planner::run_cycle`] did in one cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CycleReport {
    /// Requests sent, including those of split reads.
    pub requests: usize,
    /// Decoded values as (point index, value), in the order they were read.
    pub values: Vec<(usize, f64)>,
    /// Reads that failed with another exception than 2, or whose answer did not decode
    /// (exception 0 then); not retried in this cycle.
    pub failed: Vec<(Read, u8)>,
    /// Points found bad in this cycle (or re-probed without success).
    pub newly_bad: Vec<usize>,
}

impl Planner {
    /// One poll cycle driven synchronously: `answer` plays the device (the data of a read, or
    /// an exception code). Reads that answer exception 2 are split and their halves read at
    /// once. This is the reference of what the scheduler does per cycle, for tests, fuzzing
    /// and the planner example; the scheduler does the same with I/O, timeouts and retries.
    pub fn run_cycle(
        &mut self,
        mut answer: impl FnMut(&Read) -> Result<ReadData, u8>,
    ) -> CycleReport {
        let mut report = CycleReport::default();
        let mut queue: std::collections::VecDeque<Read> = self.cycle().into();
        while let Some(read) = queue.pop_front() {
            report.requests += 1;
            match answer(&read) {
                Ok(data) => match self.decode(&read, &data) {
                    Ok(values) => {
                        let values: Vec<(usize, f64)> = read
                            .points
                            .iter()
                            .copied()
                            .zip(values.into_iter().map(|(_, v)| v))
                            .collect();
                        report.values.extend(values);
                        self.succeeded(&read);
                    }
                    Err(_) => report.failed.push((read, 0)),
                },
                Err(super::ILLEGAL_DATA_ADDRESS) => match self.split(&read) {
                    SplitOutcome::Split(halves) => {
                        for h in halves.into_iter().rev() {
                            queue.push_front(h);
                        }
                    }
                    SplitOutcome::Bad(i) => report.newly_bad.push(i),
                    SplitOutcome::NotPlanned => {}
                },
                Err(code) => report.failed.push((read, code)),
            }
        }
        report
    }
}

/// A read of exactly one point.
fn single(points: &[PointSpec], i: usize) -> Read {
    tight(points, points[i].table, &[i])
}

/// The smallest read of `table` covering `idx` (sorted by address).
fn tight(points: &[PointSpec], table: Table, idx: &[usize]) -> Read {
    let start = idx.iter().map(|&i| points[i].address).min().unwrap_or(0);
    let end = idx
        .iter()
        .map(|&i| points[i].end())
        .max()
        .unwrap_or(u32::from(start));
    Read {
        table,
        address: start,
        count: u16::try_from(end - u32::from(start)).unwrap_or(u16::MAX),
        points: idx.to_vec(),
    }
}

/// Greedy merge of the points `idx` by table and address.
fn plan(points: &[PointSpec], idx: &[usize], limits: &Limits) -> Vec<Read> {
    let mut sorted = idx.to_vec();
    sorted.sort_by_key(|&i| (points[i].table, points[i].address, points[i].end(), i));
    let mut reads: Vec<Read> = Vec::new();
    let mut current: Option<(Table, u16, u32, Vec<usize>)> = None;
    for i in sorted {
        let p = &points[i];
        let max = u32::from(limits.max_for(p.table));
        if let Some((table, start, end, members)) = &mut current
            && *table == p.table
            && u32::from(p.address) <= *end + u32::from(limits.max_gap)
            && p.end().max(*end) - u32::from(*start) <= max
        {
            *end = p.end().max(*end);
            members.push(i);
            continue;
        }
        if let Some((table, _, _, members)) = current.take() {
            reads.push(tight(points, table, &members));
        }
        current = Some((p.table, p.address, p.end(), vec![i]));
    }
    if let Some((table, _, _, members)) = current {
        reads.push(tight(points, table, &members));
    }
    reads
}

#[cfg(test)]
mod tests {
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
}
