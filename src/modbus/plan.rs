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
#[path = "plan_tests.rs"]
mod tests;
