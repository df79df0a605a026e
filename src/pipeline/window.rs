//! Event-time tumbling windows, aligned to the epoch, closed by a watermark.
//!
//! The watermark is the newest trusted event time seen minus the allowed lateness; a window
//! `[start, start + length)` is emitted once the watermark reaches its end. A reading whose
//! window was already emitted is *late*: it is not added here but handed back so the caller
//! can emit a one-reading correction that the store merges into the stored rollup (same key).
//! Every window boundary is shared by all series, so the open windows are indexed by start
//! and closing them costs nothing per series that has nothing to close.
//!
//! Open windows are checkpointed: every window changed since the last checkpoint is handed
//! out by [`Windows::take_changed`] so that the store can keep it beside the raw readings it
//! holds, in the same commit. After a crash the windows are [`Windows::restore`]d and nothing
//! accepted is missing from the rollups they later become.
//!
//! Sans-IO: no clock, no I/O; series are plain indices handed out by the caller.

use std::collections::BTreeMap;

use crate::model::{Quality, Stats, TimeNs};

/// Where a reading went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Added to its (still open) window.
    Open,
    /// Its window was already emitted; the caller corrects the rollup starting at `start`.
    Late { start: TimeNs },
}

/// The open windows of every series.
#[derive(Debug)]
pub struct Windows {
    length: i64,
    lateness: i64,
    max_event: Option<TimeNs>,
    /// Open windows per series index, oldest first (rarely more than two).
    per_series: Vec<Vec<OpenWindow>>,
    /// Window start → series indices with an open window there, in opening order.
    by_start: BTreeMap<TimeNs, Vec<usize>>,
    /// Open windows changed since the last [`Windows::take_changed`].
    changed: Vec<(usize, TimeNs)>,
}

#[derive(Debug)]
struct OpenWindow {
    start: TimeNs,
    stats: Stats,
    /// Listed in `changed` already.
    changed: bool,
}

impl Windows {
    pub fn new(length_ns: i64, lateness_ns: i64) -> Self {
        assert!(length_ns > 0, "window length must be positive");
        Windows {
            length: length_ns,
            lateness: lateness_ns.max(0),
            max_event: None,
            per_series: Vec::new(),
            by_start: BTreeMap::new(),
            changed: Vec::new(),
        }
    }

    pub fn length(&self) -> i64 {
        self.length
    }

    /// The start of the window holding `t`.
    pub fn start_of(&self, t: TimeNs) -> TimeNs {
        t.div_euclid(self.length) * self.length
    }

    /// Newest trusted event time minus the allowed lateness; `None` before the first reading.
    pub fn watermark(&self) -> Option<TimeNs> {
        self.max_event.map(|t| t.saturating_sub(self.lateness))
    }

    /// Makes room for series index `index`.
    pub fn ensure_series(&mut self, index: usize) {
        if self.per_series.len() <= index {
            self.per_series.resize_with(index + 1, Vec::new);
        }
    }

    /// Adds a finite, trusted reading of series `index` and advances the watermark.
    pub fn insert(&mut self, index: usize, t: TimeNs, value: f64, quality: Quality) -> Placement {
        let start = self.start_of(t);
        if let Some(w) = self.watermark()
            && start.saturating_add(self.length) <= w
        {
            return Placement::Late { start };
        }
        self.max_event = Some(self.max_event.map_or(t, |m| m.max(t)));
        let open = &mut self.per_series[index];
        match open.iter_mut().find(|w| w.start == start) {
            Some(w) => {
                w.stats.push(t, value, quality);
                if !w.changed {
                    w.changed = true;
                    self.changed.push((index, start));
                }
            }
            None => {
                let pos = open.partition_point(|w| w.start < start);
                open.insert(
                    pos,
                    OpenWindow {
                        start,
                        stats: Stats::of(t, value, quality),
                        changed: true,
                    },
                );
                self.changed.push((index, start));
                self.by_start.entry(start).or_default().push(index);
            }
        }
        Placement::Open
    }

    /// Puts back an open window from a checkpoint (start-up after a crash). The newest
    /// reading it holds advances the watermark as it did when it arrived. Merges with a
    /// window already open at the same start.
    pub fn restore(&mut self, index: usize, start: TimeNs, stats: Stats) {
        self.ensure_series(index);
        let newest = stats.last_time.max(stats.first_time);
        self.max_event = Some(self.max_event.map_or(newest, |m| m.max(newest)));
        let open = &mut self.per_series[index];
        match open.iter_mut().find(|w| w.start == start) {
            Some(w) => w.stats.merge(&stats),
            None => {
                let pos = open.partition_point(|w| w.start < start);
                open.insert(
                    pos,
                    OpenWindow {
                        start,
                        stats,
                        changed: false,
                    },
                );
                self.by_start.entry(start).or_default().push(index);
            }
        }
    }

    /// Appends to `out` the windows still open that changed since the last call, with their
    /// current statistics, and forgets the changes.
    pub fn take_changed(&mut self, out: &mut Vec<(usize, TimeNs, Stats)>) {
        for (index, start) in self.changed.drain(..) {
            let open = &mut self.per_series[index];
            if let Some(w) = open.iter_mut().find(|w| w.start == start) {
                w.changed = false;
                out.push((index, start, w.stats));
            }
        }
    }

    /// Moves every window whose end the watermark has reached into `out` as
    /// `(series index, start, stats)`, in window order.
    pub fn drain_closed(&mut self, out: &mut Vec<(usize, TimeNs, Stats)>) {
        let Some(w) = self.watermark() else { return };
        while let Some((&start, _)) = self.by_start.first_key_value() {
            if start.saturating_add(self.length) > w {
                break;
            }
            self.emit(start, out);
        }
    }

    /// Moves every open window into `out` (shutdown flush). The watermark is kept, so a later
    /// reading for a flushed window is late and corrects the stored rollup.
    pub fn drain_all(&mut self, out: &mut Vec<(usize, TimeNs, Stats)>) {
        while let Some((&start, _)) = self.by_start.first_key_value() {
            self.emit(start, out);
        }
        if let Some(last_end) = out.iter().map(|(_, s, _)| s + self.length).max() {
            // Everything before the end of the newest flushed window is now emitted.
            let floor = last_end.saturating_add(self.lateness);
            self.max_event = Some(self.max_event.map_or(floor, |m| m.max(floor)));
        }
    }

    fn emit(&mut self, start: TimeNs, out: &mut Vec<(usize, TimeNs, Stats)>) {
        let indices = self.by_start.remove(&start).unwrap_or_default();
        for index in indices {
            let open = &mut self.per_series[index];
            if let Some(pos) = open.iter().position(|w| w.start == start) {
                let w = open.remove(pos);
                out.push((index, start, w.stats));
            }
        }
    }

    /// Number of open windows (all series).
    pub fn open_count(&self) -> usize {
        self.by_start.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;

    fn windows() -> Windows {
        let mut w = Windows::new(60 * S, 10 * S);
        w.ensure_series(1);
        w
    }

    fn closed(w: &mut Windows) -> Vec<(usize, TimeNs, u64)> {
        let mut out = Vec::new();
        w.drain_closed(&mut out);
        out.into_iter().map(|(i, s, st)| (i, s, st.count)).collect()
    }

    #[test]
    fn window_is_emitted_only_when_watermark_passes_its_end() {
        let mut w = windows();
        w.insert(0, 5 * S, 1.0, Quality::GOOD);
        w.insert(0, 65 * S, 2.0, Quality::GOOD);
        assert!(
            closed(&mut w).is_empty(),
            "watermark 55 s has not reached 60 s"
        );
        w.insert(0, 70 * S, 3.0, Quality::GOOD);
        assert_eq!(closed(&mut w), vec![(0, 0, 1)]);
    }

    #[test]
    fn reading_on_a_window_boundary_belongs_to_the_next_window() {
        let mut w = windows();
        w.insert(0, 60 * S - 1, 1.0, Quality::GOOD);
        w.insert(0, 60 * S, 2.0, Quality::GOOD);
        w.insert(0, 200 * S, 3.0, Quality::GOOD);
        assert_eq!(closed(&mut w), vec![(0, 0, 1), (0, 60 * S, 1)]);
    }

    #[test]
    fn out_of_order_reading_within_lateness_joins_its_window() {
        let mut w = windows();
        w.insert(0, 30 * S, 1.0, Quality::GOOD);
        w.insert(0, 65 * S, 2.0, Quality::GOOD);
        assert_eq!(w.insert(0, 59 * S, 3.0, Quality::GOOD), Placement::Open);
        w.insert(0, 75 * S, 4.0, Quality::GOOD);
        assert_eq!(closed(&mut w), vec![(0, 0, 2)]);
    }

    #[test]
    fn reading_beyond_lateness_is_reported_late_with_its_window() {
        let mut w = windows();
        w.insert(0, 30 * S, 1.0, Quality::GOOD);
        w.insert(0, 75 * S, 2.0, Quality::GOOD);
        assert_eq!(closed(&mut w).len(), 1);
        assert_eq!(
            w.insert(0, 59 * S, 3.0, Quality::GOOD),
            Placement::Late { start: 0 }
        );
        assert!(closed(&mut w).is_empty(), "a late reading reopens nothing");
    }

    #[test]
    fn watermark_is_global_across_series() {
        let mut w = windows();
        w.insert(0, 10 * S, 1.0, Quality::GOOD);
        w.insert(1, 80 * S, 1.0, Quality::GOOD);
        assert_eq!(closed(&mut w), vec![(0, 0, 1)]);
    }

    #[test]
    fn flush_emits_open_windows_and_later_readings_for_them_are_late() {
        let mut w = windows();
        w.insert(0, 10 * S, 1.0, Quality::GOOD);
        w.insert(1, 70 * S, 1.0, Quality::GOOD);
        let mut out = Vec::new();
        w.drain_all(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(w.open_count(), 0);
        assert_eq!(
            w.insert(1, 100 * S, 1.0, Quality::GOOD),
            Placement::Late { start: 60 * S }
        );
    }

    #[test]
    fn changed_windows_are_handed_out_once_and_closed_ones_never() {
        let mut w = windows();
        w.insert(0, 5 * S, 1.0, Quality::GOOD);
        w.insert(0, 6 * S, 2.0, Quality::GOOD);
        w.insert(1, 7 * S, 3.0, Quality::GOOD);
        let mut out = Vec::new();
        w.take_changed(&mut out);
        let got: Vec<_> = out.iter().map(|(i, s, st)| (*i, *s, st.count)).collect();
        assert_eq!(got, vec![(0, 0, 2), (1, 0, 1)]);
        out.clear();
        w.take_changed(&mut out);
        assert!(out.is_empty(), "nothing changed since");
        w.insert(0, 8 * S, 4.0, Quality::GOOD);
        w.insert(1, 100 * S, 5.0, Quality::GOOD);
        assert_eq!(closed(&mut w).len(), 2, "both windows at 0 s closed");
        w.take_changed(&mut out);
        let got: Vec<_> = out.iter().map(|(i, s, st)| (*i, *s, st.count)).collect();
        assert_eq!(got, vec![(1, 60 * S, 1)], "only the window still open");
    }

    #[test]
    fn restored_windows_close_and_carry_on_as_before_the_crash() {
        let mut before = windows();
        let mut after = windows();
        for t in [5, 20, 62] {
            before.insert(0, t * S, t as f64, Quality::GOOD);
        }
        let mut checkpoint = Vec::new();
        before.take_changed(&mut checkpoint);
        for (i, start, stats) in checkpoint {
            after.restore(i, start, stats);
        }
        assert_eq!(after.watermark(), before.watermark());
        for w in [&mut before, &mut after] {
            w.insert(0, 65 * S, 65.0, Quality::GOOD);
            w.insert(0, 200 * S, 1.0, Quality::GOOD);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        before.drain_all(&mut a);
        after.drain_all(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn negative_times_fall_into_aligned_windows() {
        let w = windows();
        assert_eq!(w.start_of(-1), -60 * S);
        assert_eq!(w.start_of(0), 0);
    }

    proptest! {
        /// Whatever the arrival order, every reading is either in exactly one emitted window
        /// or reported late, and emitted windows hold only readings of their own span.
        #[test]
        fn every_reading_is_emitted_once_or_reported_late(
            times in prop::collection::vec(0i64..600, 1..300),
        ) {
            let mut w = windows();
            let mut late = 0u64;
            let mut out = Vec::new();
            for (i, t) in times.iter().enumerate() {
                match w.insert(i % 2, t * S, *t as f64, Quality::GOOD) {
                    Placement::Open => {}
                    Placement::Late { start } => {
                        prop_assert_eq!(start, w.start_of(t * S));
                        late += 1;
                    }
                }
                w.drain_closed(&mut out);
            }
            w.drain_all(&mut out);
            let emitted: u64 = out.iter().map(|(_, _, s)| s.count).sum();
            prop_assert_eq!(emitted + late, times.len() as u64);
            for (_, start, stats) in &out {
                prop_assert!(stats.min * S as f64 >= *start as f64);
                prop_assert!(stats.max * (S as f64) < (*start + 60 * S) as f64);
            }
        }
    }
}
