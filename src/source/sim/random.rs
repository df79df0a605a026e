//! The simulator's random numbers: uniform and gaussian draws built directly on
//! `ChaCha8Rng::next_u64`. ChaCha's output is fixed by its specification, and these
//! conversions are ours, so a seed gives the same readings whatever `rand` version is in the
//! lock file; `rand`'s own distributions only promise that within a release series.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent random sequences derived from one seed, so that drawing more of one (for
/// example noise for more sensors) never shifts another (the fault schedule).
#[derive(Clone, Copy, Debug)]
pub(super) enum Stream {
    /// Per-series parameters: base level, drift period and phase.
    Parameters = 0,
    /// Noise and random walks, drawn for every series at every tick.
    Noise = 1,
    /// Fault start times, sensors, fields, kinds and durations.
    Faults = 2,
}

#[derive(Clone, Debug)]
pub(super) struct Random {
    rng: ChaCha8Rng,
    /// The second value of the last Box–Muller pair, used by the next gaussian draw.
    spare: Option<f64>,
}

impl Random {
    pub(super) fn new(seed: u64, stream: Stream) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream as u64);
        Random { rng, spare: None }
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub(super) fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(super) fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n` (multiply-shift; the bias of at most `n / 2^64` does not matter
    /// here). `n` must be positive.
    pub(super) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.rng.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub(super) fn gaussian(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - unit() lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.unit();
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// Standard normal, redrawn until it lies within `±cutoff`. Rejection rather than
    /// clamping, so that no value is ever produced twice by hitting the bound.
    pub(super) fn truncated_gaussian(&mut self, cutoff: f64) -> f64 {
        loop {
            let z = self.gaussian();
            if z.abs() <= cutoff {
                return z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_one_seed_are_independent_sequences() {
        let mut noise = Random::new(7, Stream::Noise);
        let mut faults = Random::new(7, Stream::Faults);
        let a: Vec<u64> = (0..4).map(|_| noise.rng.next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|_| faults.rng.next_u64()).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn gaussian_draws_have_unit_variance_and_respect_the_cutoff() {
        let mut r = Random::new(1, Stream::Noise);
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|_| r.truncated_gaussian(4.0)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(draws.iter().all(|z| z.abs() <= 4.0));
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        let mut r = Random::new(3, Stream::Faults);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[r.below(5)] = true;
        }
        assert_eq!(seen, [true; 5]);
    }
}
