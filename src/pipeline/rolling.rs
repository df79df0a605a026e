//! Time-based rolling statistics over the last `span` of event time: the per-series rolling
//! average shown to technicians, and the baseline of the z-score detector.
//!
//! Values are stored relative to a reference (the first value), so that the variance from
//! running sums does not lose precision on large, slowly varying values. The sums are rebuilt
//! from the buffer every `REBUILD_EVERY` evictions to stop rounding errors from accumulating.
//! Sans-IO: times are given.

use std::collections::VecDeque;

use crate::model::TimeNs;

const REBUILD_EVERY: u32 = 4096;

#[derive(Clone, Debug)]
pub struct Rolling {
    span: i64,
    buf: VecDeque<(TimeNs, f64)>,
    reference: f64,
    sum: f64,
    sum_sq: f64,
    evictions: u32,
}

impl Rolling {
    pub fn new(span_ns: i64) -> Self {
        Rolling {
            span: span_ns.max(1),
            buf: VecDeque::new(),
            reference: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            evictions: 0,
        }
    }

    /// Adds a value and drops those older than `span` before the newest time seen.
    pub fn push(&mut self, t: TimeNs, value: f64) {
        if self.buf.is_empty() {
            self.reference = value;
            self.sum = 0.0;
            self.sum_sq = 0.0;
        }
        let d = value - self.reference;
        self.sum += d;
        self.sum_sq += d * d;
        let newest = self.buf.back().map_or(t, |&(b, _)| b.max(t));
        self.buf.push_back((t, value));
        let cutoff = newest.saturating_sub(self.span);
        while let Some(&(front, v)) = self.buf.front() {
            if front > cutoff {
                break;
            }
            self.buf.pop_front();
            let d = v - self.reference;
            self.sum -= d;
            self.sum_sq -= d * d;
            self.evictions += 1;
        }
        if self.evictions >= REBUILD_EVERY {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        self.evictions = 0;
        self.reference = self.buf.front().map_or(0.0, |&(_, v)| v);
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for &(_, v) in &self.buf {
            let d = v - self.reference;
            sum += d;
            sum_sq += d * d;
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
            prop_assert!((r.mean().unwrap() - mean).abs() < 1e-6);
            if window.len() >= 2 {
                let var = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (window.len() - 1) as f64;
                prop_assert!((r.stddev().unwrap() - var.sqrt()).abs() < 1e-6 * (1.0 + var.sqrt()));
            }
        }
    }
}
