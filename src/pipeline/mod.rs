//! The pipeline core: readings in; raw readings, rollups, anomaly events and the live view
//! out. Pure and clock-free: the caller passes the gateway time with every call, and takes the
//! accumulated output as a [`WriteBatch`] for the store.
//!
//! Per series it keeps the open windows, a rolling average and the detectors of every matching
//! rule. Readings with a NaN/infinite value or an untrustworthy timestamp are flagged, stored
//! raw and counted, but kept out of windows, detectors and the watermark. A reading whose
//! window was already emitted becomes a one-reading rollup with the `late` flag, which the
//! store merges into the stored rollup (same key, so a forwarded point overwrites itself);
//! older than the rollup retention it is counted as `late_dropped` and kept raw only.

mod detect;
mod rolling;
pub mod task;
mod window;

use std::sync::Arc;

pub use detect::{AssetDetector, Detector, RuleSet};
pub use rolling::Rolling;
pub use window::{Placement, Windows};

use crate::live::{FieldState, LiveSnapshot, PipelineCounters, SensorState};
use crate::model::{
    AnomalyEvent, Batch, FastMap, NS_PER_SEC, Quality, Reading, Rollup, SeriesKey, Stats, TimeNs,
};
use crate::store::WriteBatch;

/// 2000-01-01T00:00:00Z: readings stamped earlier come from a gateway without a real clock.
const EARLIEST_TRUSTED: TimeNs = 946_684_800 * NS_PER_SEC;

/// The pipeline's settings, in nanoseconds.
#[derive(Clone, Debug)]
pub struct Settings {
    pub window_ns: i64,
    pub lateness_ns: i64,
    pub rolling_ns: i64,
    pub max_future_ns: i64,
    pub rollup_retention_ns: i64,
    /// Whether raw readings are handed to the store.
    pub keep_raw: bool,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let s = |secs: u64| (secs as i64).saturating_mul(NS_PER_SEC);
        Settings {
            window_ns: s(c.pipeline.window_secs),
            lateness_ns: s(c.pipeline.allowed_lateness_secs),
            rolling_ns: s(c.pipeline.rolling_secs()),
            max_future_ns: s(c.pipeline.max_future_secs),
            rollup_retention_ns: s(c.store.rollup_retention_secs),
            keep_raw: c.store.raw_retention_secs > 0,
        }
    }
}

struct Series {
    key: SeriesKey,
    source: Arc<str>,
    latest: Option<(TimeNs, f64, Quality)>,
    rolling: Rolling,
    detectors: Vec<Detector>,
}

pub struct Pipeline {
    settings: Settings,
    rules: RuleSet,
    index: FastMap<SeriesKey, usize>,
    series: Vec<Series>,
    windows: Windows,
    /// Events of the previous run that were still active, waiting for their series to appear.
    restored: Vec<AnomalyEvent>,
    next_event_id: u64,
    counters: PipelineCounters,
    out: WriteBatch,
    closed: Vec<(usize, TimeNs, Stats)>,
    /// The newest tags announced per sensor.
    tags: FastMap<Arc<str>, Arc<crate::model::Tags>>,
    /// Multivariate rules per machine (sensor id), made on the sensor's first reading.
    assets: FastMap<Arc<str>, Vec<AssetDetector>>,
}

impl Pipeline {
    /// `next_event_id` and `active` come from the store, so that ids stay unique and episodes
    /// active before a restart are cleared once rather than raised again. An active episode
    /// whose rule is no longer configured can never clear by itself: it is cleared at `now`.
    pub fn new(
        settings: Settings,
        rules: RuleSet,
        next_event_id: u64,
        active: Vec<AnomalyEvent>,
        now: TimeNs,
    ) -> Self {
        let (active, orphans): (Vec<_>, Vec<_>) =
            active.into_iter().partition(|e| rules.has_rule(&e.rule));
        let mut out = WriteBatch::default();
        for e in orphans {
            out.events
                .push(retire(e, now, "at start-up", "is no longer configured"));
        }
        Pipeline {
            windows: Windows::new(settings.window_ns, settings.lateness_ns),
            settings,
            rules,
            index: FastMap::default(),
            series: Vec::new(),
            restored: active,
            next_event_id,
            counters: PipelineCounters::default(),
            out,
            closed: Vec::new(),
            tags: FastMap::default(),
            assets: FastMap::default(),
        }
    }

    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }

    /// Records and commit marks accumulated since the last [`Pipeline::take_output`].
    pub fn pending_records(&self) -> usize {
        self.out.len() + self.out.acks.len()
    }

    pub fn watermark(&self) -> Option<TimeNs> {
        self.windows.watermark()
    }

    fn series_index(&mut self, key: &SeriesKey, source: &Arc<str>) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.series.len();
        let mut detectors = self.rules.detectors_for(key);
        self.restored.retain(|e| {
            let matching = e.sensor == *key.sensor && e.field == *key.field;
            match detectors
                .iter_mut()
                .find(|d| matching && d.rule().name == e.rule)
            {
                Some(d) => {
                    d.restore(e.clone());
                    false
                }
                None => true,
            }
        });
        self.series.push(Series {
            key: key.clone(),
            source: source.clone(),
            latest: None,
            rolling: Rolling::new(self.settings.rolling_ns),
            detectors,
        });
        self.index.insert(key.clone(), i);
        self.windows.ensure_series(i);
        self.out.new_series.push((key.clone(), source.clone()));
        i
    }

    /// Processes one batch that arrived at gateway time `now`.
    pub fn ingest(&mut self, batch: Batch, now: TimeNs) {
        let Batch {
            source,
            readings,
            commit,
            redelivered: _,
            tags,
        } = batch;
        for (sensor, tags) in tags {
            if self.tags.get(&sensor) != Some(&tags) {
                self.out
                    .sensor_tags
                    .push((sensor.to_string(), (*tags).clone()));
                self.tags.insert(sensor, tags);
            }
        }
        let latest_trusted = now.saturating_add(self.settings.max_future_ns);
        for mut r in readings {
            self.counters.readings += 1;
            let i = self.series_index(&r.series, &source);
            if !(EARLIEST_TRUSTED..=latest_trusted).contains(&r.time) {
                r.quality.insert(Quality::TIME_SUSPECT);
                self.counters.time_suspect += 1;
            } else if !r.value.is_finite() {
                r.quality.insert(Quality::NOT_FINITE);
                self.counters.not_finite += 1;
                self.series[i].latest = Some((r.time, r.value, r.quality));
            } else {
                self.accept(i, &mut r, now);
            }
            if self.settings.keep_raw {
                self.out.raw.push(r);
            }
        }
        // After the raw readings: the writer releases the mark with the commit holding them.
        self.out.acks.extend(commit);
        self.close_windows();
    }

    fn accept(&mut self, i: usize, r: &mut Reading, now: TimeNs) {
        match self.windows.insert(i, r.time, r.value, r.quality) {
            Placement::Open => {}
            Placement::Late { start } => {
                r.quality.insert(Quality::LATE);
                let horizon =
                    self.windows.watermark().unwrap_or(r.time) - self.settings.rollup_retention_ns;
                if start < horizon {
                    self.counters.late_dropped += 1;
                } else {
                    self.counters.late_corrected += 1;
                    self.counters.rollups += 1;
                    self.out.rollups.push(Rollup {
                        series: r.series.clone(),
                        start,
                        length_ns: self.windows.length(),
                        stats: Stats::of(r.time, r.value, r.quality),
                    });
                }
            }
        }
        let s = &mut self.series[i];
        if s.latest.is_none_or(|(t, _, _)| r.time >= t) {
            s.latest = Some((r.time, r.value, r.quality));
        }
        s.rolling.push(r.time, r.value);
        for d in &mut s.detectors {
            if let Some(event) = d.observe(&s.key, r.time, r.value, now, &mut self.next_event_id) {
                record(&mut self.counters, &event);
                self.out.events.push(event);
            }
        }
        if self.rules.has_assets() {
            self.observe_asset(i, r);
        }
    }

    /// Feeds a reading to the multivariate rules of its machine.
    fn observe_asset(&mut self, i: usize, r: &Reading) {
        let sensor = &self.series[i].key.sensor;
        if !self.assets.contains_key(sensor) {
            let mut detectors = self.rules.assets_for(sensor);
            for d in &mut detectors {
                if let Some(at) = self
                    .restored
                    .iter()
                    .position(|e| e.sensor == **sensor && e.rule == d.rule().name)
                {
                    d.restore(self.restored.remove(at));
                }
            }
            self.assets.insert(sensor.clone(), detectors);
        }
        let Some(detectors) = self.assets.get_mut(sensor) else {
            return;
        };
        for d in detectors {
            if let Some(event) =
                d.observe(&r.series.field, r.time, r.value, &mut self.next_event_id)
            {
                record(&mut self.counters, &event);
                self.out.events.push(event);
            }
        }
    }

    fn close_windows(&mut self) {
        self.windows.drain_closed(&mut self.closed);
        self.emit_closed();
    }

    fn emit_closed(&mut self) {
        for (i, start, stats) in self.closed.drain(..) {
            self.counters.rollups += 1;
            self.out
                .closed_windows
                .push((self.series[i].key.clone(), start));
            self.out.rollups.push(Rollup {
                series: self.series[i].key.clone(),
                start,
                length_ns: self.windows.length(),
                stats,
            });
        }
    }

    /// Advances gateway time: the `silent` rule compares it with each series' last arrival.
    pub fn tick(&mut self, now: TimeNs) {
        for s in &mut self.series {
            for d in s.detectors.iter_mut().filter(|d| d.is_silent_rule()) {
                if let Some(event) = d.tick(&s.key, now, &mut self.next_event_id) {
                    record(&mut self.counters, &event);
                    self.out.events.push(event);
                }
            }
        }
    }

    /// Emits every open window (shutdown): partial rollups that the store merges with any
    /// later readings for the same windows.
    pub fn flush(&mut self) {
        self.windows.drain_all(&mut self.closed);
        self.emit_closed();
    }

    /// Takes the output accumulated since the last call, with the checkpoints of the windows
    /// that changed and are still open.
    pub fn take_output(&mut self) -> WriteBatch {
        self.windows.take_changed(&mut self.closed);
        for (i, start, stats) in self.closed.drain(..) {
            self.out.open_windows.push(Rollup {
                series: self.series[i].key.clone(),
                start,
                length_ns: self.windows.length(),
                stats,
            });
        }
        std::mem::take(&mut self.out)
    }

    /// Puts back the open windows checkpointed by the previous run (start-up after a crash).
    /// A checkpoint made with another window length cannot be continued: it is emitted as the
    /// partial rollup a clean shutdown would have written.
    pub fn restore_windows(&mut self, windows: Vec<(Rollup, Arc<str>)>) {
        for (w, source) in windows {
            let i = self.series_index(&w.series, &source);
            if w.length_ns == self.windows.length() {
                self.windows.restore(i, w.start, w.stats);
            } else {
                self.counters.rollups += 1;
                self.out.closed_windows.push((w.series.clone(), w.start));
                self.out.rollups.push(w);
            }
        }
    }

    /// Applies a new rule set (a config reload) at gateway time `now`, per series and per
    /// machine:
    /// - a rule configured exactly as before keeps its detector: baseline, episode, hold-off;
    /// - a rule whose settings changed starts afresh but takes over the active episode, so it
    ///   is cleared once rather than raised a second time;
    /// - the active episode of a rule that is gone, or no longer matches the series, is
    ///   cleared at `now`, with the reason in its message.
    ///
    /// Returns how many episodes were cleared that way.
    pub fn replace_rules(&mut self, rules: RuleSet, now: TimeNs) -> usize {
        let before = self.out.events.len();
        for s in &mut self.series {
            let fresh = rules.detectors_for(&s.key);
            let old = std::mem::replace(&mut s.detectors, fresh);
            let gone = carry_over(
                &mut s.detectors,
                old,
                |d| d.rule(),
                |d| d.active(),
                |d, e| d.restore(e),
            );
            for e in gone {
                self.out.events.push(retired_by(e, &rules, now));
            }
        }
        for (sensor, detectors) in &mut self.assets {
            let old = std::mem::replace(detectors, rules.assets_for(sensor));
            let gone = carry_over(
                detectors,
                old,
                |d| d.rule(),
                |d| d.active(),
                |d, e| d.restore(e),
            );
            for e in gone {
                self.out.events.push(retired_by(e, &rules, now));
            }
        }
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restored)
            .into_iter()
            .partition(|e| rules.has_rule(&e.rule));
        self.restored = kept;
        for e in gone {
            self.out.events.push(retired_by(e, &rules, now));
        }
        self.rules = rules;
        let cleared = self.out.events.len() - before;
        self.counters.events_cleared += cleared as u64;
        cleared
    }

    /// The live view at gateway time `now`.
    pub fn snapshot(&self, now: TimeNs) -> LiveSnapshot {
        let mut snap = LiveSnapshot {
            taken_at: now,
            watermark: self.windows.watermark(),
            counters: self.counters.clone(),
            ..LiveSnapshot::default()
        };
        for s in &self.series {
            let sensor = snap
                .sensors
                .entry(s.key.sensor.to_string())
                .or_insert_with(|| SensorState {
                    source: s.source.to_string(),
                    tags: self
                        .tags
                        .get(&s.key.sensor)
                        .map(|t| (**t).clone())
                        .unwrap_or_default(),
                    ..SensorState::default()
                });
            if let Some((time, value, quality)) = s.latest {
                sensor.fields.insert(
                    s.key.field.to_string(),
                    FieldState {
                        value,
                        time,
                        quality,
                        rolling_avg: s.rolling.mean(),
                    },
                );
            }
            snap.active_events
                .extend(s.detectors.iter().filter_map(|d| d.active().cloned()));
        }
        for detectors in self.assets.values() {
            snap.active_events
                .extend(detectors.iter().filter_map(|d| d.active().cloned()));
        }
        // Active before a restart, their sensor not heard from since: still active.
        snap.active_events.extend(self.restored.iter().cloned());
        snap.active_events
            .sort_by(|a, b| b.raised_at.cmp(&a.raised_at).then(b.id.cmp(&a.id)));
        snap
    }
}

/// Moves the detectors of `old` that `fresh` still has into `fresh`: an unchanged rule's whole
/// detector, a changed rule's active episode. Returns the active episodes of the rules that
/// `fresh` lacks.
fn carry_over<D>(
    fresh: &mut [D],
    mut old: Vec<D>,
    rule: impl Fn(&D) -> &detect::Rule,
    active: impl Fn(&D) -> Option<&AnomalyEvent>,
    restore: impl Fn(&mut D, AnomalyEvent),
) -> Vec<AnomalyEvent> {
    for d in fresh.iter_mut() {
        let Some(at) = old.iter().position(|o| rule(o).name == rule(d).name) else {
            continue;
        };
        let o = old.swap_remove(at);
        if rule(&o) == rule(d) {
            *d = o;
        } else if let Some(e) = active(&o) {
            restore(d, e.clone());
        }
    }
    old.iter().filter_map(|o| active(o).cloned()).collect()
}

/// An active episode whose rule no longer applies, cleared at a reload.
fn retired_by(e: AnomalyEvent, rules: &RuleSet, now: TimeNs) -> AnomalyEvent {
    let why = if rules.has_rule(&e.rule) {
        "no longer applies to this sensor"
    } else {
        "is no longer configured"
    };
    retire(e, now, "on reload", why)
}

/// Clears an active episode whose rule `why` (`when`: at start-up, on reload).
fn retire(mut e: AnomalyEvent, now: TimeNs, when: &str, why: &str) -> AnomalyEvent {
    e.cleared_at = Some(now);
    e.message = format!("{} (cleared {when}: rule `{}` {why})", e.message, e.rule);
    e
}

fn record(counters: &mut PipelineCounters, event: &AnomalyEvent) {
    if event.is_active() {
        counters.events_raised += 1;
    } else {
        counters.events_cleared += 1;
    }
}

#[cfg(test)]
mod tests;
