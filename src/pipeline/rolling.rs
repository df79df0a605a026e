//! Time-based rolling statistics over the last `span` of event time: the per-series rolling
//! average shown to technicians, and the baseline of the z-score detector.
//!
//! A gateway keeps one of these per series (thousands), so a sample takes 8 bytes, not 16: its
//! time in milliseconds after a base time (`i32`), and its value as the difference from a
//! reference value (the oldest in the buffer when the sums were last rebuilt) in `f32`. The
//! sums add exactly those stored differences, so the statistics are those of the stored
//! samples: a value is kept to 7 significant digits of its distance from the reference, far
//! finer than a sensor reads. Keeping differences also stops the variance from running sums
//! from losing precision on large, slowly varying values. The sums are rebuilt from the buffer
//! every `REBUILD_EVERY` evictions so that rounding errors do not accumulate.
//! Sans-IO: times are given.

use std::collections::VecDeque;

use crate::model::TimeNs;

const REBUILD_EVERY: u32 = 4096;
const NS_PER_MS: i64 = 1_000_000;

#[derive(Clone, Debug)]
pub struct Rolling {
    /// The span in milliseconds.
    span: i64,
    /// Milliseconds since the epoch that stored times count from.
    base: i64,
    /// (milliseconds after `base`, value − `reference`), in arrival order.
    buf: VecDeque<(i32, f32)>,
    /// The newest time seen, in milliseconds after `base`.
    newest: i64,
    reference: f64,
    sum: f64,
    sum_sq: f64,
    evictions: u32,
}

impl Rolling {
    pub fn new(span_ns: i64) -> Self {
        Rolling {
            span: (span_ns / NS_PER_MS).max(1),
            base: 0,
            buf: VecDeque::new(),
            newest: 0,
            reference: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            evictions: 0,
        }
    }

    /// Adds a value and drops those older than `span` before the newest time seen.
    pub fn push(&mut self, t: TimeNs, value: f64) {
        let ms = t.div_euclid(NS_PER_MS);
        if self.buf.is_empty() {
            self.base = ms;
            self.newest = 0;
            self.reference = value;
            self.sum = 0.0;
            self.sum_sq = 0.0;
        }
        let mut offset = ms - self.base;
        if i32::try_from(offset).is_err() {
            self.rebase(ms);
            offset = ms - self.base;
        }
        let Ok(offset) = i32::try_from(offset) else {
            // Further from the buffer than an i32 of milliseconds (24 days) even after a
            // rebase: the buffer cannot hold both, so it starts again from this value.
            self.buf.clear();
            return self.push(t, value);
        };
        let d = (value - self.reference) as f32;
        self.sum += f64::from(d);
        self.sum_sq += f64::from(d) * f64::from(d);
        self.newest = self.newest.max(i64::from(offset));
        self.buf.push_back((offset, d));
        let cutoff = self.newest - self.span;
        while let Some(&(front, d)) = self.buf.front() {
            if i64::from(front) > cutoff {
                break;
            }
            self.buf.pop_front();
            self.sum -= f64::from(d);
            self.sum_sq -= f64::from(d) * f64::from(d);
            self.evictions += 1;
        }
        if self.evictions >= REBUILD_EVERY {
            self.rebuild();
        }
    }

    /// Moves the base time so that the buffer and `ms` (milliseconds since the epoch) both
    /// fit the stored offsets, if they can.
    fn rebase(&mut self, ms: i64) {
        let oldest = self
            .buf
            .iter()
            .map(|&(o, _)| i64::from(o))
            .min()
            .unwrap_or(0)
            + self.base;
        let new_base = oldest.min(ms);
        let shift = new_base - self.base;
        let fits = |o: i64| i32::try_from(o).is_ok();
        if !fits(ms - new_base) || !self.buf.iter().all(|&(o, _)| fits(i64::from(o) - shift)) {
            return;
        }
        for (o, _) in &mut self.buf {
            *o = (i64::from(*o) - shift) as i32;
        }
        self.newest -= shift;
        self.base = new_base;
    }

    /// Sums from the stored samples again, with the oldest as the new reference.
    fn rebuild(&mut self) {
        self.evictions = 0;
        let old_reference = self.reference;
        self.reference = self
            .buf
            .front()
            .map_or(0.0, |&(_, d)| old_reference + f64::from(d));
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for (_, d) in &mut self.buf {
            let nd = (old_reference + f64::from(*d) - self.reference) as f32;
            *d = nd;
            sum += f64::from(nd);
            sum_sq += f64::from(nd) * f64::from(nd);
        }
        self.sum = sum;
        self.sum_sq = sum_sq;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn mean(&self) -> Option<f64> {
        if self.buf.is_empty() {
            None
        } else {
            Some(self.reference + self.sum / self.buf.len() as f64)
        }
    }

    /// Sample standard deviation; `None` with fewer than two values.
    pub fn stddev(&self) -> Option<f64> {
        let n = self.buf.len() as f64;
        if n < 2.0 {
            return None;
        }
        let var = (self.sum_sq - self.sum * self.sum / n) / (n - 1.0);
        Some(var.max(0.0).sqrt())
    }
}

/// Exponentially weighted mean and variance in event time: a reading `dt` after the previous
/// one weighs `1 − exp(−dt / tau)`, so irregular sampling is handled and memory is fixed.
#[derive(Clone, Debug)]
pub struct Ewma {
    tau: f64,
    last: Option<TimeNs>,
    mean: f64,
    var: f64,
    count: usize,
}

impl Ewma {
    pub fn new(tau_ns: i64) -> Self {
        Ewma {
            tau: tau_ns.max(1) as f64,
            last: None,
            mean: 0.0,
            var: 0.0,
            count: 0,
        }
    }

    pub fn push(&mut self, t: TimeNs, value: f64) {
        self.count += 1;
        let Some(last) = self.last else {
            self.last = Some(t);
            self.mean = value;
            return;
        };
        // An out-of-order reading weighs like one at the same time as the newest.
        let dt = (t - last).max(0) as f64;
        self.last = Some(last.max(t));
        let alpha = if dt > 0.0 {
            1.0 - (-dt / self.tau).exp()
        } else {
            // Several readings at one time: each weighs as one of a fine sampling.
            1.0 / (self.count as f64).min(self.tau)
        };
        let diff = value - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// `None` with fewer than two readings.
    pub fn stddev(&self) -> Option<f64> {
        (self.count >= 2).then(|| self.var.max(0.0).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn rolling_mean_covers_only_the_last_span() {
        let mut r = Rolling::new(60 * S);
        for i in 0..120 {
            r.push(i * S, i as f64);
        }
        // Times 60..=119 lie in (59 s, 119 s]: 60 values, one per second of the span.
        assert_eq!(r.len(), 60);
        assert_eq!(r.mean(), Some((60..120).sum::<i64>() as f64 / 60.0));
    }

    #[test]
    fn times_are_kept_to_the_millisecond_and_out_of_order_readings_count() {
        let mut r = Rolling::new(10 * S);
        r.push(1_700_000_000 * S, 1.0);
        r.push(1_700_000_000 * S + 5 * S, 3.0);
        // Older than the newest but inside the span: kept.
        r.push(1_700_000_000 * S + 2 * S, 5.0);
        assert_eq!((r.len(), r.mean()), (3, Some(3.0)));
        // 10 s after the first to the nanosecond: the first reading leaves the span.
        r.push(1_700_000_000 * S + 10 * S + 999_999, 7.0);
        assert_eq!((r.len(), r.mean()), (3, Some(5.0)));
    }

    #[test]
    fn large_values_keep_their_small_variations() {
        // A counter near 1e9 that moves by 0.25: the differences are exact in f32.
        let mut r = Rolling::new(60 * S);
        for i in 0..100 {
            r.push(i * S, 1e9 + if i % 2 == 0 { 0.25 } else { -0.25 });
        }
        assert!((r.mean().unwrap() - 1e9).abs() < 1e-9, "{r:?}");
        // The last 60 readings, half at each side: sample stddev 0.25·√(60/59).
        let expected = 0.25 * (60.0f64 / 59.0).sqrt();
        assert_eq!(r.len(), 60);
        assert!((r.stddev().unwrap() - expected).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_jump_beyond_the_offset_range_starts_again_and_a_long_run_rebases() {
        const DAY: i64 = 86_400 * S;
        let mut r = Rolling::new(60 * S);
        r.push(0, 1.0);
        r.push(30 * DAY, 2.0);
        assert_eq!((r.len(), r.mean()), (1, Some(2.0)));
        // A day-long window over 60 days of hourly readings crosses the i32 range of
        // milliseconds (24.8 days) more than once; the window stays right.
        let mut r = Rolling::new(DAY);
        for h in 0..60 * 24 {
            r.push(h * 3_600 * S, h as f64);
        }
        // Hours 1416..=1439 lie in (1415 h, 1439 h].
        assert_eq!(r.len(), 24);
        assert!((r.mean().unwrap() - (1416..1440).sum::<i64>() as f64 / 24.0).abs() < 1e-6);
    }

    #[test]
    fn a_sample_takes_eight_bytes() {
        assert_eq!(std::mem::size_of::<(i32, f32)>(), 8);
    }

    #[test]
    fn ewma_follows_a_level_and_measures_its_spread_in_fixed_memory() {
        let mut e = Ewma::new(60 * S);
        assert_eq!((e.mean(), e.stddev()), (None, None));
        // ±1 around 10, one reading a second for ten time constants.
        for i in 0..600 {
            e.push(i * S, if i % 2 == 0 { 11.0 } else { 9.0 });
        }
        assert!((e.mean().unwrap() - 10.0).abs() < 0.05, "{e:?}");
        assert!((e.stddev().unwrap() - 1.0).abs() < 0.05, "{e:?}");
        // A step to 20: after one time constant the mean is about 63 % of the way there.
        for i in 600..660 {
            e.push(i * S, 20.0);
        }
        let m = e.mean().unwrap();
        assert!(
            (m - (10.0 + 10.0 * (1.0 - (-1.0f64).exp()))).abs() < 0.3,
            "{m}"
        );
    }

    proptest! {
        #[test]
        fn rolling_stats_match_a_direct_computation(
            values in prop::collection::vec(-1e3f64..1e3, 2..400),
            base in -1e6f64..1e6,
        ) {
            let mut r = Rolling::new(50 * S);
            for (i, v) in values.iter().enumerate() {
                r.push(i as i64 * S, base + v);
            }
            let n = values.len();
            let window: Vec<f64> = values[n.saturating_sub(50)..].iter().map(|v| base + v).collect();
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            prop_assert_eq!(r.len(), window.len());
            // Each value is kept as an f32 difference from the first (at most 2,000 here):
            // off by at most 2,000 × 2⁻²⁴ ≈ 1.2e-4, however large `base` is.
            prop_assert!((r.mean().unwrap() - mean).abs() < 2e-4);
            if window.len() >= 2 {
                let var = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (window.len() - 1) as f64;
                prop_assert!((r.stddev().unwrap() - var.sqrt()).abs() < 2e-4 * (1.0 + var.sqrt()));
            }
        }
    }
}
