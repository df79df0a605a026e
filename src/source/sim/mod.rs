//! The simulated source (`type = "sim"`): sensors reporting temperature, pressure and
//! vibration with noise, slow drift and faults on a schedule derived from the seed. It serves
//! the demo (start the daemon and see sensors and anomalies at once), the integration tests
//! (which recompute the expected rollups from the same generator) and the benchmarks.
//!
//! - [`SimGenerator`] is the pure core: no I/O, no clock, no runtime. Tick `k` happens at
//!   `start + k × interval_ms`, and its readings depend only on the config, `start` and `k`.
//!   All randomness comes from `ChaCha8Rng` seeded with `seed`, on separate streams for
//!   the per-series parameters, the noise and the fault schedule.
//! - [`FaultSchedule`] is the fault schedule on its own, for tests and the status page.
//! - [`run`] is the task around the generator: pacing, backpressure, shutdown, health and
//!   metrics. [`start_time`] picks the event time of tick 0.
//!
//! # Signals
//!
//! Sensor ids are `{sensor_prefix}001`, `…002`, …; every sensor reports the three fields at
//! every tick. Each series has a base level drawn once, a sinusoidal drift with a period of
//! 1–4 h and a random phase, a random walk reflecting at a small bound, and gaussian noise cut
//! at ±4σ. Every term is bounded, so the normal ranges are hard limits:
//!
//! | field         | unit     | base      | sinusoid | walk   | noise σ | normal range |
//! |---------------|----------|-----------|----------|--------|---------|--------------|
//! | `temperature` | °C       | 40–75     | ±2       | ±1     | 0.2     | 36.2–78.8    |
//! | `pressure`    | bar      | 2–6       | ±0.1     | ±0.05  | 0.02    | 1.77–6.23    |
//! | `vibration`   | mm/s RMS | 0.3–1.0   | ±0.05    | ±0.03  | 0.03    | 0.10–1.20, never below 0 |
//!
//! Values are not rounded, so outside a `stuck` fault two consecutive readings of a series
//! are never exactly equal.
//!
//! # Faults
//!
//! Fault starts form a Poisson process with mean gap `fault_interval_secs` across the whole
//! source (0 turns faults off), rounded up to the next tick. Each picks a sensor, a field and a
//! kind uniformly; a sensor has at most one fault at a time and rests 60 s after it (see
//! [`FaultSchedule`]). Durations are rounded to whole ticks.
//!
//! | kind      | effect                                                    | duration |
//! |-----------|-----------------------------------------------------------|----------|
//! | `spike`   | one reading offset                                        | 1 tick   |
//! | `step`    | the offset held                                           | 15–45 s  |
//! | `drift`   | a linear ramp reaching the offset at its last tick, then back to normal at once | 30–90 s |
//! | `stuck`   | the field repeats its value of the first faulted tick exactly | 30–60 s |
//! | `dropout` | the sensor sends nothing, no field at all                 | 20–40 s  |
//!
//! The offset, added to the normal value: temperature **+65 °C**, pressure **+2.5 bar**,
//! vibration **×6**. Temperature departs from the +25 °C first sketched so that every faulted
//! temperature (at least 36.2 + 65 = 101.2 °C) crosses a 100 °C limit, for every sensor.
//!
//! Against the demo rules, at the default interval of 1 s:
//! - limit `temperature` max 100 °C: raised by every temperature spike and step, and by a
//!   temperature drift before it ends; normal temperatures stay below 78.8 °C, under 85 °C;
//! - rate `pressure` 1 bar/s: a pressure spike or step jumps by 2.5 bar within one tick (the
//!   noise moves at most 0.16 bar a tick); a drift ramps at most 0.083 bar/s and only trips
//!   the rule when it snaps back;
//! - z-score `vibration` (60 s window, raise 6): ×6 moves a vibration of at least 0.1 mm/s by
//!   at least 0.5 mm/s, over 16σ of the 0.03 mm/s noise;
//! - stuck for 20 s with tolerance 0: only a `stuck` fault (30–60 s) repeats a value;
//! - silent after 10 s: every `dropout` (20–40 s).

mod faults;
mod generator;
mod random;
mod signal;
mod task;
#[cfg(test)]
mod tests;

pub use faults::{FAULT_COOLDOWN_SECS, Fault, FaultKind, FaultSchedule};
pub use generator::{FAULT_HISTORY, SimGenerator, Tick};
pub use signal::{
    Field, PRESSURE_FAULT_OFFSET_BAR, TEMPERATURE_FAULT_OFFSET_C, VIBRATION_FAULT_FACTOR,
};
pub use task::{run, start_time};

/// The documented defaults of a `type = "sim"` source, loaded through the real config loader
/// so that tests "at the default settings" follow the defaults when they change.
#[cfg(test)]
pub(crate) fn test_config() -> crate::config::SimConfig {
    let text = "[gateway]\nid = \"test\"\n\n[[sources]]\nname = \"sim\"\ntype = \"sim\"\n";
    let config = crate::config::load_str(text).expect("minimal sim config loads");
    match config.sources.into_iter().next().map(|s| s.kind) {
        Some(crate::config::SourceKind::Sim(sim)) => sim,
        other => panic!("expected one sim source, got {other:?}"),
    }
}
