//! The fault schedule: when, where and which fault is injected. A pure function of the config
//! and the start time, drawn from its own random stream, so it is the same whether or not the
//! readings are generated (the status page or a test can recompute it from the config alone).
//!
//! Starts form a Poisson process with mean gap `fault_interval_secs` across the whole source,
//! rounded up to the next tick. Each start picks a sensor, a field and a kind uniformly. A
//! sensor carries one fault at a time and rests [`FAULT_COOLDOWN_SECS`] after it, so every
//! fault raises its own alert and the alert clears before the next fault on that sensor; a
//! start that finds every sensor busy restarts the process when the first sensor is free.

use std::sync::Arc;

use crate::config::SimConfig;
use crate::model::{SeriesKey, TimeNs};

use super::random::{Random, Stream};
use super::signal::Field;

/// Rest after a fault before the same sensor can get another: longer than any rule's holdoff
/// in the demo config, so episodes do not run into each other.
pub const FAULT_COOLDOWN_SECS: f64 = 60.0;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// One reading of the field is far off.
    Spike,
    /// The field is offset for 15–45 s.
    Step,
    /// The field ramps to the offset over 30–90 s, then snaps back to normal.
    Drift,
    /// The field repeats exactly the same value for 30–60 s.
    Stuck,
    /// The sensor sends nothing at all for 20–40 s.
    Dropout,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Spike,
        FaultKind::Step,
        FaultKind::Drift,
        FaultKind::Stuck,
        FaultKind::Dropout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Step => "step",
            FaultKind::Drift => "drift",
            FaultKind::Stuck => "stuck",
            FaultKind::Dropout => "dropout",
        }
    }

    /// Range of the duration in seconds; `None` for a spike, which is one tick long.
    pub fn duration_secs(self) -> Option<(f64, f64)> {
        match self {
            FaultKind::Spike => None,
            FaultKind::Step => Some((15.0, 45.0)),
            FaultKind::Drift => Some((30.0, 90.0)),
            FaultKind::Stuck => Some((30.0, 60.0)),
            FaultKind::Dropout => Some((20.0, 40.0)),
        }
    }
}

/// One injected fault. Start and end lie on the tick grid; the fault covers the ticks with
/// `start <= time < end`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub sensor: Arc<str>,
    /// The affected field; `None` for a dropout, which silences the whole sensor.
    pub field: Option<Field>,
    pub start: TimeNs,
    /// Exclusive.
    pub end: TimeNs,
    /// Position of `sensor` in the source, so the generator finds its state without a lookup.
    pub(super) sensor_index: usize,
}

impl Fault {
    /// Whether the fault is in effect at `time`.
    pub fn covers(&self, time: TimeNs) -> bool {
        self.start <= time && time < self.end
    }

    /// Whether the fault changes (or, for a dropout, suppresses) readings of `series`.
    pub fn affects(&self, series: &SeriesKey) -> bool {
        *self.sensor == *series.sensor && self.field.is_none_or(|f| f.as_str() == &*series.field)
    }
}

/// The sensor ids of a source, `{sensor_prefix}{:03}` from 1, allocated once and shared by
/// every series key and fault.
pub(super) fn sensor_ids(config: &SimConfig) -> Arc<[Arc<str>]> {
    (1..=config.sensors)
        .map(|i| Arc::from(format!("{}{i:03}", config.sensor_prefix)))
        .collect()
}

/// The endless sequence of faults of a source, in order of start. Empty when
/// `fault_interval_secs` is 0 or there are no sensors.
#[derive(Clone, Debug)]
pub struct FaultSchedule {
    rng: Random,
    start: TimeNs,
    interval_ns: i64,
    interval_secs: f64,
    /// Mean gap between starts, in ticks; `None` when faults are off.
    mean_gap_ticks: Option<f64>,
    /// Position of the Poisson process, in (fractional) ticks since `start`.
    clock_ticks: f64,
    sensors: Arc<[Arc<str>]>,
    /// Per sensor, the first tick at which it may start a new fault.
    free_from: Vec<u64>,
    cooldown_ticks: u64,
}

impl FaultSchedule {
    pub fn new(config: &SimConfig, start: TimeNs) -> Self {
        Self::with_sensors(config, start, sensor_ids(config))
    }

    pub(super) fn with_sensors(
        config: &SimConfig,
        start: TimeNs,
        sensors: Arc<[Arc<str>]>,
    ) -> Self {
        let interval_ns = interval_ns(config);
        let interval_secs = interval_ns as f64 / 1e9;
        let mean_gap_ticks = (config.fault_interval_secs > 0.0
            && config.fault_interval_secs.is_finite()
            && !sensors.is_empty())
        .then(|| config.fault_interval_secs / interval_secs);
        FaultSchedule {
            rng: Random::new(config.seed, Stream::Faults),
            start,
            interval_ns,
            interval_secs,
            mean_gap_ticks,
            clock_ticks: 0.0,
            free_from: vec![0; sensors.len()],
            sensors,
            cooldown_ticks: (FAULT_COOLDOWN_SECS / interval_secs).ceil() as u64,
        }
    }

    /// The sensor ids, shared with the faults this schedule produces.
    pub(super) fn sensors(&self) -> &Arc<[Arc<str>]> {
        &self.sensors
    }

    fn time_of(&self, tick: u64) -> TimeNs {
        tick_time(self.start, self.interval_ns, tick)
    }

    /// Length of a fault in ticks: its drawn duration rounded to whole ticks, at least one.
    fn length_ticks(&self, kind: FaultKind, u: f64) -> u64 {
        match kind.duration_secs() {
            None => 1,
            Some((lo, hi)) => ((lo + (hi - lo) * u) / self.interval_secs).round().max(1.0) as u64,
        }
    }
}

impl Iterator for FaultSchedule {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        let mean_gap_ticks = self.mean_gap_ticks?;
        let n = self.sensors.len();
        loop {
            // Draw everything for this start up front, so the stream advances the same way
            // whether or not the start is used.
            self.clock_ticks += -mean_gap_ticks * (1.0 - self.rng.unit()).ln();
            let pick = self.rng.below(n);
            let kind = FaultKind::ALL[self.rng.below(FaultKind::ALL.len())];
            let field = Field::ALL[self.rng.below(Field::ALL.len())];
            let length_u = self.rng.unit();

            let tick = self.clock_ticks.ceil() as u64;
            let free = (0..n)
                .map(|i| (pick + i) % n)
                .find(|&s| self.free_from[s] <= tick);
            let Some(sensor_index) = free else {
                // Every sensor is busy: the process is memoryless, so restarting it when the
                // first sensor frees up is the same as skipping every start until then.
                let first_free = self.free_from.iter().copied().min().unwrap_or(tick);
                self.clock_ticks = first_free as f64;
                continue;
            };
            let length = self.length_ticks(kind, length_u);
            let end = tick.saturating_add(length);
            self.free_from[sensor_index] = end.saturating_add(self.cooldown_ticks);
            return Some(Fault {
                kind,
                sensor: self.sensors[sensor_index].clone(),
                field: (kind != FaultKind::Dropout).then_some(field),
                start: self.time_of(tick),
                end: self.time_of(end),
                sensor_index,
            });
        }
    }
}

/// The tick interval in nanoseconds. Validation rejects 0; should one get here anyway it is
/// read as 1 ms rather than dividing by zero.
pub(super) fn interval_ns(config: &SimConfig) -> i64 {
    i64::try_from(config.interval_ms.max(1))
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

/// Event time of tick `index`: `start + index × interval`, saturating centuries ahead.
pub(super) fn tick_time(start: TimeNs, interval_ns: i64, index: u64) -> TimeNs {
    let index = i64::try_from(index).unwrap_or(i64::MAX);
    start.saturating_add(index.saturating_mul(interval_ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NS_PER_SEC;
    use crate::source::sim::test_config;

    const START: TimeNs = 1_800_000_000 * NS_PER_SEC;

    #[test]
    fn no_faults_when_the_fault_interval_is_zero() {
        let config = SimConfig {
            fault_interval_secs: 0.0,
            ..test_config()
        };
        assert_eq!(FaultSchedule::new(&config, START).next(), None);
    }

    #[test]
    fn faults_start_on_ticks_in_order_and_last_as_documented() {
        let config = test_config();
        let interval = interval_ns(&config);
        let mut previous = START;
        for fault in FaultSchedule::new(&config, START).take(2000) {
            assert!(
                fault.start >= previous,
                "{fault:?} starts before {previous}"
            );
            previous = fault.start;
            assert_eq!(
                (fault.start - START) % interval,
                0,
                "{fault:?} is off the grid"
            );
            let secs = (fault.end - fault.start) as f64 / 1e9;
            match fault.kind.duration_secs() {
                None => assert_eq!(fault.end - fault.start, interval),
                Some((lo, hi)) => assert!(lo - 1.0 <= secs && secs <= hi + 1.0, "{fault:?}"),
            }
            assert_eq!(fault.field.is_none(), fault.kind == FaultKind::Dropout);
        }
    }

    #[test]
    fn a_sensor_never_has_two_faults_within_the_cooldown() {
        let config = SimConfig {
            sensors: 3,
            fault_interval_secs: 1.0,
            ..test_config()
        };
        let cooldown = (FAULT_COOLDOWN_SECS * 1e9) as i64;
        let mut last_end: Vec<Option<TimeNs>> = vec![None; 3];
        for fault in FaultSchedule::new(&config, START).take(500) {
            if let Some(end) = last_end[fault.sensor_index] {
                assert!(fault.start >= end + cooldown, "{fault:?} follows too soon");
            }
            last_end[fault.sensor_index] = Some(fault.end);
        }
    }

    #[test]
    fn mean_gap_between_starts_follows_the_fault_interval() {
        // Many sensors, so that the cooldown almost never postpones a start.
        let config = SimConfig {
            sensors: 1000,
            ..test_config()
        };
        let faults: Vec<Fault> = FaultSchedule::new(&config, START).take(5000).collect();
        let span = (faults[faults.len() - 1].start - START) as f64 / 1e9;
        let mean = span / faults.len() as f64;
        assert!((mean - 20.0).abs() < 1.0, "mean gap {mean} s");
    }

    #[test]
    fn a_fault_affects_only_its_sensor_and_field() {
        let fault = Fault {
            kind: FaultKind::Step,
            sensor: "sim-002".into(),
            field: Some(Field::Pressure),
            start: 0,
            end: 10,
            sensor_index: 1,
        };
        assert!(fault.affects(&SeriesKey::new("sim-002", "pressure")));
        assert!(!fault.affects(&SeriesKey::new("sim-002", "temperature")));
        assert!(!fault.affects(&SeriesKey::new("sim-003", "pressure")));
        let dropout = Fault {
            kind: FaultKind::Dropout,
            field: None,
            ..fault
        };
        assert!(dropout.affects(&SeriesKey::new("sim-002", "vibration")));
        assert!(dropout.covers(0) && dropout.covers(9) && !dropout.covers(10));
    }
}
