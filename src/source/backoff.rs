//! Retry delays (sans-IO): jittered exponential backoff, reset on success. Shared by the
//! sources: rumqttc reconnects at once when polled after an error, so without this a dead
//! broker would spin a core and flood the log; a Modbus unit that is down is tried once per
//! delay, so that a dead device costs its bus at most one timeout per delay.

use std::time::Duration;

/// Delays from `initial`, doubling per failure up to `max`, each scaled by a jitter factor in
/// [0.5, 1] so that gateways restarted together do not reconnect in step.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay after one more failure; `jitter` is clamped to [0.5, 1].
    pub fn next(&mut self, jitter: f64) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        exp.min(self.max).mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// The longest delay (for failures that only a person can fix), jittered alike.
    pub fn longest(&mut self, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.max.mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// After a successful connection the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A jitter factor in [0.5, 1].
pub fn jitter() -> f64 {
    use rand::Rng;
    rand::rng().random_range(0.5..=1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_restart_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<u128> = (0..6).map(|_| b.next(1.0).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next(1.0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_shortens_by_at_most_half() {
        let mut b = Backoff::new(Duration::from_millis(400), Duration::from_secs(30));
        assert_eq!(b.next(0.5), Duration::from_millis(200));
        assert_eq!(b.next(0.0), Duration::from_millis(400), "clamped to 0.5");
        assert_eq!(b.longest(2.0), Duration::from_secs(30), "clamped to 1");
        for _ in 0..100 {
            assert!((0.5..=1.0).contains(&jitter()));
        }
    }

    #[test]
    fn many_failures_neither_overflow_nor_pass_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next(1.0) <= Duration::from_secs(60));
        }
    }
}
