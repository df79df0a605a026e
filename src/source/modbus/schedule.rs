//! When each poll group is due (sans-IO, given the time). A group is polled every `period`
//! on a grid fixed at the start, like a tokio `Interval` with `MissedTickBehavior::Skip`:
//! when a cycle runs past one or more ticks of a group (an overrun: the bus is too slow for
//! the interval, or a unit timed out), the missed ticks are skipped and counted, never piled
//! up, and the group's next tick stays on its grid.
//!
//! One clock for all groups (rather than one `Interval` each) lets a cycle poll every group
//! due at the same moment together, so that a unit's fields of several groups go out in one
//! batch with one timestamp.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
struct Clock {
    period: Duration,
    next: Instant,
}

/// The tick grid of every poll group of a source.
#[derive(Clone, Debug)]
pub struct Schedule {
    clocks: Vec<Clock>,
}

impl Schedule {
    /// Every group's first tick is at `start`; `periods[i]` is group `i`'s interval (a zero
    /// period is taken as 1 ms).
    pub fn new(periods: &[Duration], start: Instant) -> Self {
        Schedule {
            clocks: periods
                .iter()
                .map(|&period| Clock {
                    period: period.max(Duration::from_millis(1)),
                    next: start,
                })
                .collect(),
        }
    }

    /// The earliest next tick of any group; `None` without groups.
    pub fn next_tick(&self) -> Option<Instant> {
        self.clocks.iter().map(|c| c.next).min()
    }

    /// The groups whose tick has come at `now`, in group order.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.clocks.len())
            .filter(|&i| self.clocks[i].next <= now)
            .collect()
    }

    /// After the cycle that polled `group` ended at `now`: moves its tick one period on and
    /// skips the ticks that passed during the cycle. Returns how many were skipped (the
    /// overruns of this cycle, 0 when it ended in time).
    pub fn advance(&mut self, group: usize, now: Instant) -> u64 {
        let clock = &mut self.clocks[group];
        clock.next += clock.period;
        if clock.next > now {
            return 0;
        }
        let behind = now - clock.next;
        let skipped = (behind.as_nanos() / clock.period.as_nanos()) as u64 + 1;
        clock.next += clock
            .period
            .saturating_mul(u32::try_from(skipped).unwrap_or(u32::MAX));
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn every_group_is_due_at_the_start_then_on_its_own_period() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[1000 * MS, 2500 * MS], t0);
        assert_eq!(s.next_tick(), Some(t0));
        assert_eq!(s.due(t0), [0, 1]);
        assert_eq!(s.advance(0, t0 + 10 * MS), 0);
        assert_eq!(s.advance(1, t0 + 10 * MS), 0);
        assert_eq!(s.next_tick(), Some(t0 + 1000 * MS));
        assert!(s.due(t0 + 999 * MS).is_empty());
        assert_eq!(s.due(t0 + 1000 * MS), [0]);
        s.advance(0, t0 + 1005 * MS);
        s.advance(0, s.next_tick().unwrap());
        // t0 + 2000: group 0 again; group 1 at t0 + 2500.
        assert_eq!(s.next_tick(), Some(t0 + 2500 * MS));
        assert_eq!(s.due(t0 + 2500 * MS), [1]);
        assert_eq!(s.due(t0 + 3000 * MS), [0, 1]);
    }

    #[test]
    fn an_overrun_skips_the_missed_ticks_and_stays_on_the_grid() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[1000 * MS], t0);
        // The cycle of tick 0 ended 3.2 periods later: ticks 1, 2 and 3 are skipped.
        assert_eq!(s.advance(0, t0 + 3200 * MS), 3);
        assert_eq!(s.next_tick(), Some(t0 + 4000 * MS));
        // Ending exactly on a tick counts that tick as missed.
        assert_eq!(s.advance(0, t0 + 5000 * MS), 1);
        assert_eq!(s.next_tick(), Some(t0 + 6000 * MS));
        // In time again.
        assert_eq!(s.advance(0, t0 + 6100 * MS), 0);
        assert_eq!(s.next_tick(), Some(t0 + 7000 * MS));
    }

    #[test]
    fn a_late_start_of_a_cycle_is_not_an_overrun_when_it_ends_before_the_next_tick() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[1000 * MS, 100 * MS], t0);
        // Group 1's tick at t0 + 100 waited for a long poll of group 0 until t0 + 150.
        s.advance(0, t0 + 150 * MS);
        assert_eq!(s.advance(1, t0 + 150 * MS), 1, "tick t0 + 100 was missed");
        assert_eq!(s.next_tick(), Some(t0 + 200 * MS));
    }

    #[test]
    fn no_groups_no_ticks() {
        let s = Schedule::new(&[], Instant::now());
        assert_eq!(s.next_tick(), None);
    }
}
