//! The state of one Modbus unit (sans-IO, given the time): up or down, consecutive failures,
//! and when a unit that is down is tried again.
//!
//! - While a unit is up (or not yet known), a failed request is tried `retries` more times
//!   before the poll counts as failed; one failed poll takes the unit down.
//! - While it is down, it is polled at most once per jittered backoff delay (doubling from
//!   `backoff_initial` up to `backoff_max`), with a single attempt and no retries, and the poll
//!   stops at the first failure: a dead unit costs its bus at most one timeout per cycle.
//! - One successful poll brings it up again and resets the backoff.

use std::time::Duration;

use tokio::time::Instant;

use crate::source::backoff::Backoff;

/// Up or down, as shown in `u{N}.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not polled yet.
    Starting,
    Up,
    Down,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Up => "up",
            Status::Down => "down",
        }
    }
}

/// A change of [`Status`] worth a log line and a gauge update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    WentUp,
    WentDown,
}

/// One unit's state machine.
#[derive(Clone, Debug)]
pub struct UnitState {
    status: Status,
    consecutive_failures: u32,
    retries: u32,
    backoff: Backoff,
    /// While down: the earliest time of the next attempt.
    retry_at: Option<Instant>,
}

impl UnitState {
    pub fn new(retries: u32, backoff_initial: Duration, backoff_max: Duration) -> Self {
        UnitState {
            status: Status::Starting,
            consecutive_failures: 0,
            retries,
            backoff: Backoff::new(backoff_initial, backoff_max),
            retry_at: None,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn is_down(&self) -> bool {
        self.status == Status::Down
    }

    /// Failed polls since the last successful one.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// While down: when the next attempt is due.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the unit is polled in a cycle that starts at `now`: always while up, once its
    /// backoff delay has passed while down.
    pub fn due(&self, now: Instant) -> bool {
        match self.status {
            Status::Down => self.retry_at.is_none_or(|at| now >= at),
            Status::Starting | Status::Up => true,
        }
    }

    /// Attempts for each request: `1 + retries` while up or starting, 1 while down.
    pub fn attempts(&self) -> u32 {
        match self.status {
            Status::Down => 1,
            Status::Starting | Status::Up => 1 + self.retries,
        }
    }

    /// A poll succeeded.
    pub fn succeeded(&mut self) -> Option<Change> {
        let change = (self.status != Status::Up).then_some(Change::WentUp);
        self.status = Status::Up;
        self.consecutive_failures = 0;
        self.retry_at = None;
        self.backoff.reset();
        change
    }

    /// A poll failed at `now` (after its attempts); `jitter` in [0.5, 1] scales the delay
    /// before the next attempt.
    pub fn failed(&mut self, now: Instant, jitter: f64) -> Option<Change> {
        let change = (self.status != Status::Down).then_some(Change::WentDown);
        self.status = Status::Down;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.retry_at = Some(now + self.backoff.next(jitter));
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitState {
        UnitState::new(2, Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn a_new_unit_is_polled_with_retries_and_comes_up_on_success() {
        let mut u = unit();
        let now = Instant::now();
        assert_eq!(u.status(), Status::Starting);
        assert!(u.due(now));
        assert_eq!(u.attempts(), 3);
        assert_eq!(u.succeeded(), Some(Change::WentUp));
        assert_eq!(u.succeeded(), None, "already up");
        assert_eq!(u.status(), Status::Up);
        assert_eq!(u.consecutive_failures(), 0);
    }

    #[test]
    fn a_failed_poll_takes_the_unit_down_with_one_attempt_per_backoff_delay() {
        let mut u = unit();
        let t0 = Instant::now();
        u.succeeded();
        assert_eq!(u.failed(t0, 1.0), Some(Change::WentDown));
        assert_eq!(u.status(), Status::Down);
        assert_eq!(u.attempts(), 1, "no retries while down");
        assert_eq!(u.retry_at(), Some(t0 + Duration::from_secs(1)));
        assert!(!u.due(t0));
        assert!(!u.due(t0 + Duration::from_millis(999)));
        assert!(u.due(t0 + Duration::from_secs(1)));

        // Each further failure doubles the delay, up to the maximum.
        let mut now = t0 + Duration::from_secs(1);
        let mut delays = Vec::new();
        for _ in 0..5 {
            assert_eq!(u.failed(now, 1.0), None, "already down");
            let at = u.retry_at().unwrap();
            delays.push((at - now).as_secs());
            now = at;
        }
        assert_eq!(delays, [2, 4, 8, 8, 8]);
        assert_eq!(u.consecutive_failures(), 6);
    }

    #[test]
    fn jitter_shortens_the_delay_by_at_most_half() {
        let mut u = unit();
        let t0 = Instant::now();
        u.failed(t0, 0.5);
        assert_eq!(u.retry_at(), Some(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn success_while_down_brings_the_unit_up_and_resets_the_backoff() {
        let mut u = unit();
        let t0 = Instant::now();
        u.failed(t0, 1.0);
        u.failed(t0, 1.0);
        u.failed(t0, 1.0);
        assert_eq!(u.succeeded(), Some(Change::WentUp));
        assert_eq!(u.consecutive_failures(), 0);
        assert_eq!(u.retry_at(), None);
        assert!(u.due(t0));
        assert_eq!(u.attempts(), 3);
        u.failed(t0, 1.0);
        assert_eq!(
            u.retry_at(),
            Some(t0 + Duration::from_secs(1)),
            "backoff restarts from the initial delay"
        );
    }

    #[test]
    fn a_unit_that_never_answered_goes_straight_from_starting_to_down() {
        let mut u = UnitState::new(0, Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(u.attempts(), 1, "retries = 0");
        assert_eq!(u.failed(Instant::now(), 1.0), Some(Change::WentDown));
        assert_eq!(u.status().as_str(), "down");
    }
}
