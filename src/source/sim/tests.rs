//! Behaviour of the generator over hours of simulated time: what each fault does to the
//! readings, and what normal operation never does. Each run is compared value for value with
//! its fault-free twin (same seed, `fault_interval_secs = 0`), which the generator's noise
//! invariant makes identical outside the faults.

use std::collections::BTreeSet;

use super::faults::tick_time;
use super::*;
use crate::config::SimConfig;
use crate::model::{NS_PER_SEC, SeriesKey, TimeNs};

const START: TimeNs = 1_800_000_000 * NS_PER_SEC;
const TWO_HOURS: u64 = 2 * 3600;

/// Fewer sensors than the default to keep debug-build tests quick; the fault interval stays
/// the default, so the faults per hour are the same.
fn config() -> SimConfig {
    SimConfig {
        sensors: 10,
        ..test_config()
    }
}

fn without_faults(config: &SimConfig) -> SimConfig {
    SimConfig {
        fault_interval_secs: 0.0,
        ..config.clone()
    }
}

/// One series at one tick: its fault-free value and what the faulted generator sent.
struct Pair<'a> {
    series: &'a SeriesKey,
    normal: f64,
    /// `None` when the faulted generator sent no reading of the series.
    value: Option<f64>,
}

/// Runs the generator for `ticks` beside its fault-free twin and hands each tick to `check`:
/// the tick's time, one [`Pair`] per series (always in the same order), and the faults in
/// effect, taken from the schedule on its own. Checks that `faults()` agrees with that
/// schedule, and returns the faulted generator.
fn run_with_twin(
    config: &SimConfig,
    ticks: u64,
    mut check: impl FnMut(TimeNs, &[Pair<'_>], &[&Fault]),
) -> SimGenerator {
    let mut faulted = SimGenerator::new(config, START);
    let mut normal = SimGenerator::new(&without_faults(config), START);
    let end = tick_time(START, faulted.interval_ns(), ticks);
    let schedule: Vec<Fault> = FaultSchedule::new(config, START)
        .take_while(|f| f.start < end)
        .collect();
    for _ in 0..ticks {
        let tick = faulted.tick();
        let twin = normal.tick();
        assert_eq!(tick.time, twin.time);
        // The faulted readings are the twin's series in the same order, minus dropouts.
        let mut sent = tick.readings.iter().peekable();
        let pairs: Vec<Pair<'_>> = twin
            .readings
            .iter()
            .map(|r| Pair {
                series: &r.series,
                normal: r.value,
                value: sent.next_if(|s| s.series == r.series).map(|s| s.value),
            })
            .collect();
        assert!(sent.next().is_none(), "a reading of an unknown series");
        let active: Vec<&Fault> = schedule.iter().filter(|f| f.covers(tick.time)).collect();
        check(tick.time, &pairs, &active);
    }
    assert_eq!(
        faulted.faults(),
        &schedule[..],
        "faults() differs from the schedule"
    );
    faulted
}

#[test]
fn every_fault_kind_occurs_within_two_simulated_hours_at_the_default_interval() {
    let mut generator = SimGenerator::new(&test_config(), START);
    for _ in 0..TWO_HOURS {
        generator.tick();
    }
    let kinds: BTreeSet<FaultKind> = generator.faults().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, FaultKind::ALL.into_iter().collect());
}

#[test]
fn a_sensor_sends_nothing_exactly_while_a_dropout_covers_it() {
    let mut silent = 0;
    run_with_twin(&config(), TWO_HOURS, |time, pairs, active| {
        for p in pairs {
            let dropout = active
                .iter()
                .any(|f| f.kind == FaultKind::Dropout && f.affects(p.series));
            assert_eq!(p.value.is_none(), dropout, "{} at {time}", p.series);
            silent += usize::from(dropout);
        }
    });
    assert!(silent > 100, "only {silent} silent series-ticks");
}

#[test]
fn stuck_repeats_the_exact_value_and_normal_operation_never_does() {
    let mut last: Vec<Option<(TimeNs, f64)>> = Vec::new();
    let mut repeats = 0;
    run_with_twin(&config(), TWO_HOURS, |time, pairs, active| {
        last.resize(pairs.len(), None);
        for (p, last) in pairs.iter().zip(&mut last) {
            let Some(value) = p.value else { continue };
            let previous = last.replace((time, value));
            let Some((previous_time, previous_value)) = previous else {
                continue;
            };
            if previous_time != time - NS_PER_SEC {
                continue;
            }
            let held = active.iter().any(|f| {
                f.kind == FaultKind::Stuck && f.affects(p.series) && f.covers(previous_time)
            });
            assert_eq!(
                value == previous_value,
                held,
                "{} at {time}: {previous_value} then {value}",
                p.series
            );
            repeats += usize::from(held);
        }
    });
    assert!(repeats > 100, "only {repeats} repeated readings");
}

#[test]
fn spikes_steps_and_drifts_move_readings_by_the_documented_magnitudes() {
    let mut seen: BTreeSet<(FaultKind, Field)> = BTreeSet::new();
    run_with_twin(&config(), TWO_HOURS, |time, pairs, active| {
        for p in pairs {
            let Some(value) = p.value else { continue };
            let Some(fault) = active.iter().find(|f| f.affects(p.series)) else {
                assert_eq!(value, p.normal, "{} at {time} without a fault", p.series);
                continue;
            };
            let Some(field) = fault.field else { continue };
            let full = match field {
                Field::Temperature => p.normal + TEMPERATURE_FAULT_OFFSET_C,
                Field::Pressure => p.normal + PRESSURE_FAULT_OFFSET_BAR,
                Field::Vibration => p.normal * VIBRATION_FAULT_FACTOR,
            };
            match fault.kind {
                FaultKind::Spike | FaultKind::Step => {
                    assert_eq!(value, full, "{} at {time}", p.series);
                    if field == Field::Temperature {
                        assert!(value > 100.0, "faulted temperature {value} at {time}");
                    }
                }
                FaultKind::Drift => {
                    let last_tick = time + NS_PER_SEC == fault.end;
                    assert!(p.normal < value && value <= full, "{} at {time}", p.series);
                    assert_eq!(value == full, last_tick, "{} at {time}", p.series);
                }
                FaultKind::Stuck | FaultKind::Dropout => continue,
            }
            seen.insert((fault.kind, field));
        }
    });
    for kind in [FaultKind::Spike, FaultKind::Step, FaultKind::Drift] {
        for field in Field::ALL {
            assert!(
                seen.contains(&(kind, field)),
                "no {} on {}",
                kind.as_str(),
                field.as_str()
            );
        }
    }
}

#[test]
fn normal_values_stay_in_their_documented_ranges() {
    for seed in [1, 42, 4242] {
        let config = SimConfig {
            seed,
            ..without_faults(&test_config())
        };
        let mut generator = SimGenerator::new(&config, START);
        let mut lowest = [f64::INFINITY; 3];
        let mut highest = [f64::NEG_INFINITY; 3];
        for _ in 0..3600 {
            for (i, r) in generator.tick().readings.iter().enumerate() {
                let f = i % 3;
                lowest[f] = lowest[f].min(r.value);
                highest[f] = highest[f].max(r.value);
            }
        }
        let [temperature, pressure, vibration] = [0, 1, 2].map(|f| (lowest[f], highest[f]));
        assert!(
            temperature.1 < 85.0,
            "seed {seed}: temperature {temperature:?}"
        );
        assert!(
            temperature.0 + TEMPERATURE_FAULT_OFFSET_C > 100.0,
            "seed {seed}: temperature {temperature:?}"
        );
        assert!(
            pressure.0 >= 1.77 && pressure.1 <= 6.23,
            "seed {seed}: pressure {pressure:?}"
        );
        assert!(
            vibration.0 >= 0.1 && vibration.1 <= 1.2,
            "seed {seed}: vibration {vibration:?}"
        );
    }
}
