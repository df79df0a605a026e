//! Refused messages: how they are shown and how often they are logged (sans-IO). A device
//! sending garbage every 100 ms must not flood the log, and must not stop its subscription.

use std::time::{Duration, Instant};

/// At most one WARN per source per this interval; the others go to DEBUG and are counted.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest example kept for the status page (characters).
const EXAMPLE_CHARS: usize = 240;

/// Rate limit of the WARN about refused messages.
#[derive(Debug, Default)]
pub struct BadLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl BadLog {
    /// `Some(n)` when this refusal is logged at WARN, `n` being how many were not since the
    /// previous WARN; `None` when it is only counted.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// `topic: detail`, cut to a length that fits a table cell (on a character boundary).
pub fn example(topic: &str, detail: &str) -> String {
    let full = format!("{topic}: {detail}");
    match full.char_indices().nth(EXAMPLE_CHARS) {
        Some((end, _)) => format!("{}…", &full[..end]),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warn_per_interval_with_the_count_suppressed_since() {
        let mut log = BadLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.admit(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.admit(t0 + LOG_EVERY), Some(5));
        assert_eq!(log.admit(t0 + LOG_EVERY + Duration::from_secs(1)), None);
        assert_eq!(log.admit(t0 + 3 * LOG_EVERY), Some(1));
    }

    #[test]
    fn examples_are_cut_on_a_character_boundary() {
        assert_eq!(example("a/b", "invalid JSON"), "a/b: invalid JSON");
        let long = "é".repeat(1000);
        let cut = example("t", &long);
        assert_eq!(cut.chars().count(), EXAMPLE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
