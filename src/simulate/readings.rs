//! The reference readings: per-sensor base levels from the seed, a slow sinusoid, gaussian
//! noise and the occasional vibration spike, as JSON payloads.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::TimestampPrecision;
use crate::source::sim::VIBRATION_FAULT_FACTOR;

/// `s-0001` for sensor index 0.
pub(super) fn sensor_id(index: usize) -> String {
    format!("s-{:04}", index + 1)
}

/// The reference payload (with microseconds in the timestamp when asked). Numbers are
/// rounded as a real sensor reports them.
pub(super) fn payload(
    sensor: usize,
    at: time::OffsetDateTime,
    precision: TimestampPrecision,
    [t, p, v]: [f64; 3],
) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let (fraction, width) = match precision {
        TimestampPrecision::Ms => (at.millisecond() as u32, 3),
        TimestampPrecision::Us => (at.microsecond(), 6),
    };
    format!(
        "{{\"sensor_id\":\"{}\",\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction:0width$}Z\",\
         \"temperature\":{t:.2},\"pressure\":{p:.3},\"vibration\":{v:.3}}}",
        sensor_id(sensor),
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
}

/// Per-sensor base levels and drift phases, and the noise, all from one seed.
pub(super) struct Sensors {
    pub(super) rng: ChaCha8Rng,
    /// Per sensor: base level and drift phase of temperature, pressure, vibration.
    pub(super) params: Vec<[(f64, f64); 3]>,
}

/// Per field: base range, drift amplitude, noise σ (the built-in simulated source's profile).
const PROFILES: [((f64, f64), f64, f64); 3] = [
    ((40.0, 75.0), 2.0, 0.2),
    ((2.0, 6.0), 0.1, 0.02),
    ((0.3, 1.0), 0.05, 0.03),
];
/// Period of the slow drift.
const DRIFT_PERIOD_SECS: f64 = 1800.0;

impl Sensors {
    pub(super) fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = (0..n)
            .map(|_| {
                PROFILES.map(|((lo, hi), _, _)| {
                    let base = lo + (hi - lo) * unit(&mut rng);
                    let phase = std::f64::consts::TAU * unit(&mut rng);
                    (base, phase)
                })
            })
            .collect();
        Sensors { rng, params }
    }

    /// A sensor index, uniformly.
    pub(super) fn pick(&mut self) -> usize {
        ((u128::from(self.rng.next_u64()) * self.params.len() as u128) >> 64) as usize
    }

    /// Temperature, pressure and vibration of `sensor` at `secs` after the start; vibration
    /// ×[`VIBRATION_FAULT_FACTOR`] when `spike`.
    pub(super) fn reading(&mut self, sensor: usize, secs: f64, spike: bool) -> [f64; 3] {
        let drift = std::f64::consts::TAU * secs / DRIFT_PERIOD_SECS;
        let mut values = [0.0; 3];
        for (i, value) in values.iter_mut().enumerate() {
            let (_, amplitude, sigma) = PROFILES[i];
            let (base, phase) = self.params[sensor][i];
            // Noise cut at ±4σ, so vibration (base ≥ 0.3) never goes below 0.
            let noise = gaussian(&mut self.rng).clamp(-4.0, 4.0);
            *value = base + amplitude * (drift + phase).sin() + sigma * noise;
        }
        if spike {
            values[2] *= VIBRATION_FAULT_FACTOR;
        }
        values
    }
}

/// Uniform in `[0, 1)`.
pub(super) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box–Muller, one value per call).
pub(super) fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let radius = (-2.0 * (1.0 - unit(rng)).ln()).sqrt();
    radius * (std::f64::consts::TAU * unit(rng)).cos()
}
