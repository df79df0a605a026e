//! The pure generator: readings for tick after tick, with the scheduled faults applied. No
//! I/O, no clock, no runtime; the task in `task.rs` paces it.
//!
//! Invariant: the noise stream is drawn for every series at every tick, whatever the faults.
//! So a run with faults equals the run with `fault_interval_secs = 0` except on the faulted
//! series during their faults, and tests can compare the two value for value.

use crate::config::SimConfig;
use crate::model::{Quality, Reading, SeriesKey, TimeNs};

use super::faults::{Fault, FaultKind, FaultSchedule, interval_ns, tick_time};
use super::random::{Random, Stream};
use super::signal::{DRIFT_PERIOD_SECS, Field, NOISE_CUTOFF_SIGMAS, WALK_RATE};

/// How many started faults [`SimGenerator::faults`] keeps at least: enough for a status page
/// and for tests over hours, bounded so that a daemon running for months does not grow.
pub const FAULT_HISTORY: usize = 1024;

/// The readings of one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// 0 for the first tick.
    pub index: u64,
    /// `start + index × interval_ms`; every reading of the tick carries this time.
    pub time: TimeNs,
    /// Sensor by sensor, fields in the order of [`Field::ALL`]; a sensor in dropout is absent.
    pub readings: Vec<Reading>,
}

/// One field of one sensor and its state.
#[derive(Clone, Debug)]
struct Series {
    key: SeriesKey,
    base: f64,
    drift_amplitude: f64,
    /// Angular frequency of the drift sinusoid, radians per second.
    drift_omega: f64,
    drift_phase: f64,
    walk: f64,
    walk_bound: f64,
    /// Standard deviation of one step of the walk (depends on the interval).
    walk_sigma: f64,
    noise_sigma: f64,
    floor: f64,
}

impl Series {
    fn new(key: SeriesKey, field: Field, interval_secs: f64, params: &mut Random) -> Self {
        let profile = field.profile();
        let period = params.between(DRIFT_PERIOD_SECS.0, DRIFT_PERIOD_SECS.1);
        Series {
            key,
            base: params.between(profile.base.0, profile.base.1),
            drift_amplitude: profile.drift_amplitude,
            drift_omega: std::f64::consts::TAU / period,
            drift_phase: params.between(0.0, std::f64::consts::TAU),
            walk: 0.0,
            walk_bound: profile.walk_bound,
            walk_sigma: profile.walk_bound * WALK_RATE * interval_secs.sqrt(),
            noise_sigma: profile.noise_sigma,
            floor: profile.floor,
        }
    }

    /// The normal value at `elapsed_secs` after the start; advances the walk by one step.
    fn next_value(&mut self, elapsed_secs: f64, noise: &mut Random) -> f64 {
        self.walk = reflect(
            self.walk + self.walk_sigma * noise.gaussian(),
            self.walk_bound,
        );
        let drift =
            self.drift_amplitude * (self.drift_omega * elapsed_secs + self.drift_phase).sin();
        let jitter = self.noise_sigma * noise.truncated_gaussian(NOISE_CUTOFF_SIGMAS);
        (self.base + drift + self.walk + jitter).max(self.floor)
    }
}

/// Folds `x` back into `[-bound, bound]` as a walk reflecting off both walls.
fn reflect(x: f64, bound: f64) -> f64 {
    let folded = if x > bound {
        2.0 * bound - x
    } else if x < -bound {
        -2.0 * bound - x
    } else {
        x
    };
    // A single step longer than the whole range (a very long interval) still stays inside.
    folded.clamp(-bound, bound)
}

#[derive(Clone, Debug)]
struct Sensor {
    series: [Series; 3],
}

/// A fault in effect on a sensor.
#[derive(Clone, Debug)]
struct ActiveFault {
    fault: Fault,
    first_index: u64,
    length: u64,
    /// For a stuck fault: the value at its first tick, repeated until it ends.
    stuck_value: Option<f64>,
}

impl ActiveFault {
    /// Applies the fault to the sensor's normal values of tick `index`; `false` when the
    /// sensor sends nothing.
    fn apply(&mut self, index: u64, values: &mut [f64; 3]) -> bool {
        let Some(field) = self.fault.field else {
            // Only a dropout has no field.
            return false;
        };
        let value = &mut values[field.index()];
        *value = match self.fault.kind {
            FaultKind::Dropout => return false,
            FaultKind::Stuck => *self.stuck_value.get_or_insert(*value),
            FaultKind::Spike | FaultKind::Step => field.with_fault(*value, 1.0),
            FaultKind::Drift => {
                let strength = (index - self.first_index + 1) as f64 / self.length as f64;
                field.with_fault(*value, strength)
            }
        };
        true
    }
}

/// Simulated sensors, tick by tick. Tick `k`'s readings depend only on the config, `start`
/// and `k` (the values not even on `start`: it only sets the timestamps).
#[derive(Clone, Debug)]
pub struct SimGenerator {
    start: TimeNs,
    interval_ns: i64,
    interval_secs: f64,
    next_index: u64,
    sensors: Vec<Sensor>,
    noise: Random,
    schedule: FaultSchedule,
    /// The next fault of the schedule, not started yet.
    upcoming: Option<Fault>,
    /// Per sensor, the fault in effect (the schedule never overlaps two on one sensor).
    active: Vec<Option<ActiveFault>>,
    /// Started faults, oldest first, trimmed to the latest `FAULT_HISTORY`.
    history: Vec<Fault>,
}

impl SimGenerator {
    pub fn new(config: &SimConfig, start: TimeNs) -> Self {
        let interval_ns = interval_ns(config);
        let interval_secs = interval_ns as f64 / 1e9;
        let mut schedule = FaultSchedule::new(config, start);
        let mut params = Random::new(config.seed, Stream::Parameters);
        let sensors: Vec<Sensor> = schedule
            .sensors()
            .iter()
            .map(|id| Sensor {
                series: Field::ALL.map(|field| {
                    let key = SeriesKey::new(id.clone(), field.as_str());
                    Series::new(key, field, interval_secs, &mut params)
                }),
            })
            .collect();
        SimGenerator {
            start,
            interval_ns,
            interval_secs,
            next_index: 0,
            active: vec![None; sensors.len()],
            sensors,
            noise: Random::new(config.seed, Stream::Noise),
            upcoming: schedule.next(),
            schedule,
            history: Vec::new(),
        }
    }

    /// Produces the next tick.
    pub fn tick(&mut self) -> Tick {
        let index = self.next_index;
        self.next_index += 1;
        let time = self.time_of(index);
        self.start_due_faults(time);

        let elapsed_secs = index as f64 * self.interval_secs;
        let mut readings = Vec::with_capacity(self.sensors.len() * Field::ALL.len());
        for (sensor, active) in self.sensors.iter_mut().zip(&mut self.active) {
            let mut values = sensor
                .series
                .each_mut()
                .map(|series| series.next_value(elapsed_secs, &mut self.noise));
            if active.as_ref().is_some_and(|a| a.fault.end <= time) {
                *active = None;
            }
            if let Some(fault) = active
                && !fault.apply(index, &mut values)
            {
                continue;
            }
            readings.extend(
                sensor
                    .series
                    .iter()
                    .zip(values)
                    .map(|(series, value)| Reading {
                        series: series.key.clone(),
                        time,
                        value,
                        quality: Quality::GOOD,
                    }),
            );
        }
        Tick {
            index,
            time,
            readings,
        }
    }

    fn start_due_faults(&mut self, time: TimeNs) {
        while let Some(fault) = self.upcoming.take_if(|f| f.start <= time) {
            self.upcoming = self.schedule.next();
            // Faults lie on the tick grid, so both divisions are exact.
            let first_index = ((fault.start - self.start) / self.interval_ns) as u64;
            let length = ((fault.end - fault.start) / self.interval_ns).max(1) as u64;
            self.active[fault.sensor_index] = Some(ActiveFault {
                fault: fault.clone(),
                first_index,
                length,
                stuck_value: None,
            });
            self.history.push(fault);
            if self.history.len() >= 2 * FAULT_HISTORY {
                self.history.drain(..FAULT_HISTORY);
            }
        }
    }

    /// The faults started so far (those whose start is at or before the last tick), oldest
    /// first; at least the latest [`FAULT_HISTORY`] of them. The faults still to come are
    /// in [`FaultSchedule::new`] with the same config and start.
    pub fn faults(&self) -> &[Fault] {
        &self.history
    }

    /// Index of the tick the next call to [`tick`](Self::tick) produces.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Event time of the tick the next call to [`tick`](Self::tick) produces.
    pub fn next_time(&self) -> TimeNs {
        self.time_of(self.next_index)
    }

    pub fn start(&self) -> TimeNs {
        self.start
    }

    pub fn interval_ns(&self) -> i64 {
        self.interval_ns
    }

    fn time_of(&self, index: u64) -> TimeNs {
        tick_time(self.start, self.interval_ns, index)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::NS_PER_SEC;
    use crate::source::sim::test_config;

    const START: TimeNs = 1_800_000_000 * NS_PER_SEC;

    #[test]
    fn the_same_seed_gives_identical_readings_and_another_seed_different_ones() {
        let config = test_config();
        let mut a = SimGenerator::new(&config, START);
        let mut b = SimGenerator::new(&config, START);
        for _ in 0..600 {
            assert_eq!(a.tick(), b.tick());
        }
        assert!(!a.faults().is_empty());
        assert_eq!(a.faults(), b.faults());

        let other = SimConfig {
            seed: config.seed + 1,
            ..config.clone()
        };
        let first = SimGenerator::new(&config, START).tick();
        let first_other = SimGenerator::new(&other, START).tick();
        assert_eq!(first.readings.len(), first_other.readings.len());
        for (x, y) in first.readings.iter().zip(&first_other.readings) {
            assert_eq!(x.series, y.series);
            assert_ne!(
                x.value, y.value,
                "{} is the same under both seeds",
                x.series
            );
        }
    }

    #[test]
    fn ticks_are_one_interval_apart_and_carry_every_field_of_every_sensor() {
        let config = SimConfig {
            sensors: 12,
            interval_ms: 250,
            fault_interval_secs: 0.0,
            ..test_config()
        };
        let mut generator = SimGenerator::new(&config, START);
        for index in 0..10 {
            assert_eq!(generator.next_time(), START + index as i64 * 250_000_000);
            let tick = generator.tick();
            assert_eq!(tick.index, index);
            assert_eq!(tick.time, START + index as i64 * 250_000_000);
            let keys: Vec<String> = tick.readings.iter().map(|r| r.series.to_string()).collect();
            assert_eq!(keys.len(), 36);
            assert_eq!(
                &keys[..4],
                [
                    "sim-001/temperature",
                    "sim-001/pressure",
                    "sim-001/vibration",
                    "sim-002/temperature"
                ]
            );
            assert_eq!(keys[35], "sim-012/vibration");
            assert!(
                tick.readings
                    .iter()
                    .all(|r| r.time == tick.time && r.quality == Quality::GOOD)
            );
        }
    }

    #[test]
    fn readings_share_the_series_keys_built_at_start() {
        let mut generator = SimGenerator::new(&test_config(), START);
        let (a, b) = (generator.tick(), generator.tick());
        for (x, y) in a.readings.iter().zip(&b.readings).take(30) {
            assert!(Arc::ptr_eq(&x.series.sensor, &y.series.sensor));
            assert!(Arc::ptr_eq(&x.series.field, &y.series.field));
        }
    }

    #[test]
    fn faults_lists_only_faults_already_started() {
        let config = test_config();
        let mut generator = SimGenerator::new(&config, START);
        let mut upcoming = FaultSchedule::new(&config, START);
        let mut expected = Vec::new();
        for _ in 0..300 {
            let time = generator.tick().time;
            assert!(generator.faults().iter().all(|f| f.start <= time));
            while expected.len() < generator.faults().len() {
                expected.push(upcoming.next().expect("the schedule is endless"));
            }
            assert_eq!(generator.faults(), &expected[..]);
            let next = upcoming.clone().next().expect("the schedule is endless");
            assert!(next.start > time, "{next:?} has started but is not listed");
        }
    }

    #[test]
    fn fault_history_is_bounded() {
        // Minute ticks and a fault every second: each sensor takes a fault every other tick.
        let config = SimConfig {
            sensors: 20,
            interval_ms: 60_000,
            fault_interval_secs: 1.0,
            ..test_config()
        };
        let mut generator = SimGenerator::new(&config, START);
        for _ in 0..600 {
            generator.tick();
            assert!(generator.faults().len() < 2 * FAULT_HISTORY);
        }
        assert!(generator.faults().len() >= FAULT_HISTORY);
        let newest = generator.faults().last().expect("faults started");
        assert!(
            newest.start >= START + 590 * 60 * NS_PER_SEC,
            "history lost its newest faults"
        );
    }
}
