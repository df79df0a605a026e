//! Anomaly detectors: limits, rate of change, rolling z-score, stuck and silent sensors.
//!
//! Each detector turns a reading into a *level* (beyond the raise level, within the clear
//! level, or in the hysteresis band between them) and a shared episode machine turns levels
//! into events: the raise condition must hold for `min_duration`, the clear condition for
//! `holdoff`, and the band keeps the current state. So one fault gives exactly one event,
//! raised once (its peak tracked while active) and cleared once, however the value wobbles.
//!
//! Sans-IO: event time and the gateway clock are given; nothing here reads a clock.

mod asset;
pub mod mewma;

use std::sync::Arc;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

pub use asset::AssetDetector;

use super::rolling::{Ewma, Rolling};
use crate::config::{RuleConfig, RuleKind, ZscoreBaseline};
use crate::model::{AnomalyEvent, NS_PER_SEC, SeriesKey, Severity, TimeNs};

/// A compiled rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub min_duration: i64,
    pub holdoff: i64,
    /// Flap suppression (0: off): see `RuleConfig::flap_window_secs`.
    pub flap_window: i64,
    pub flap_max: usize,
}

/// The configured rules: the per-series ones with their `sensor/field` globs compiled into
/// one matcher, the per-machine (multivariate) ones with a glob on the sensor id each.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    globs: GlobSet,
    assets: Vec<(Arc<Rule>, GlobMatcher)>,
}

fn secs(s: f64) -> i64 {
    (s * NS_PER_SEC as f64).round() as i64
}

impl RuleSet {
    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(configs.len());
        let mut assets = Vec::new();
        for c in configs {
            let rule = Arc::new(Rule {
                name: c.name.clone(),
                kind: c.kind.clone(),
                severity: c.severity,
                min_duration: secs(c.min_duration_secs),
                holdoff: secs(c.holdoff_secs),
                flap_window: secs(c.flap_window_secs),
                flap_max: c.flap_max_events.max(2) as usize,
            });
            if matches!(c.kind, RuleKind::Multivariate(_)) {
                assets.push((rule, Glob::new(&c.pattern)?.compile_matcher()));
            } else {
                builder.add(Glob::new(&c.pattern)?);
                rules.push(rule);
            }
        }
        Ok(RuleSet {
            rules,
            globs: builder.build()?,
            assets,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.assets.is_empty()
    }

    pub fn has_rule(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.name == name) || self.assets.iter().any(|(r, _)| r.name == name)
    }

    /// Whether any multivariate rule is configured (otherwise skip the per-machine work).
    pub fn has_assets(&self) -> bool {
        !self.assets.is_empty()
    }

    /// Fresh per-machine detectors for every multivariate rule whose glob matches `sensor`.
    pub fn assets_for(&self, sensor: &Arc<str>) -> Vec<AssetDetector> {
        self.assets
            .iter()
            .filter(|(_, glob)| glob.is_match(&**sensor))
            .map(|(rule, _)| AssetDetector::new(rule.clone(), sensor.clone()))
            .collect()
    }

    /// Fresh detectors for every rule whose glob matches `sensor/field`.
    pub fn detectors_for(&self, key: &SeriesKey) -> Vec<Detector> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        self.globs
            .matches(key.to_string())
            .into_iter()
            .map(|i| Detector::new(self.rules[i].clone()))
            .collect()
    }
}

/// How a reading relates to a rule's levels.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Level {
    Raise,
    Band,
    Clear,
}

/// One evaluation: the level, the score shown to people, and how far beyond the raise level
/// it is (to keep the peak of an episode).
#[derive(Clone, Copy, Debug)]
struct Eval {
    level: Level,
    score: f64,
    magnitude: f64,
}

/// A z-score rule's baseline.
#[derive(Clone, Debug)]
enum Baseline {
    Window(Rolling),
    Ewma(Ewma),
}

impl Baseline {
    fn mean(&self) -> Option<f64> {
        match self {
            Baseline::Window(r) => r.mean(),
            Baseline::Ewma(e) => e.mean(),
        }
    }

    fn stddev(&self) -> Option<f64> {
        match self {
            Baseline::Window(r) => r.stddev(),
            Baseline::Ewma(e) => e.stddev(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Baseline::Window(r) => r.len(),
            Baseline::Ewma(e) => e.count(),
        }
    }

    fn push(&mut self, t: TimeNs, value: f64) {
        match self {
            Baseline::Window(r) => r.push(t, value),
            Baseline::Ewma(e) => e.push(t, value),
        }
    }
}

#[derive(Clone, Debug)]
enum Memory {
    /// Limits and the multivariate rule's episode (its model lives in [`AssetDetector`]).
    Stateless,
    Rate {
        last: Option<(TimeNs, f64)>,
    },
    Zscore {
        baseline: Baseline,
    },
    Stuck {
        run: Option<(TimeNs, f64)>,
    },
    Silent {
        last_arrival: Option<TimeNs>,
        last_value: f64,
    },
}

#[derive(Clone, Debug)]
enum Episode {
    Idle,
    Pending {
        since: TimeNs,
    },
    Active {
        event: Box<AnomalyEvent>,
        clear_since: Option<TimeNs>,
    },
}

/// One rule applied to one series.
#[derive(Clone, Debug)]
pub struct Detector {
    rule: Arc<Rule>,
    memory: Memory,
    episode: Episode,
    /// Raise times of the latest episodes (at most `flap_max`), for flap suppression.
    raises: std::collections::VecDeque<TimeNs>,
}

impl Detector {
    pub fn new(rule: Arc<Rule>) -> Self {
        let memory = match &rule.kind {
            RuleKind::Limit { .. } | RuleKind::Multivariate(_) => Memory::Stateless,
            RuleKind::Rate { .. } => Memory::Rate { last: None },
            RuleKind::Zscore {
                window_secs,
                baseline,
                ..
            } => Memory::Zscore {
                baseline: match baseline {
                    ZscoreBaseline::Window => Baseline::Window(Rolling::new(secs(*window_secs))),
                    ZscoreBaseline::Ewma => Baseline::Ewma(Ewma::new(secs(*window_secs))),
                },
            },
            RuleKind::Stuck { .. } => Memory::Stuck { run: None },
            RuleKind::Silent { .. } => Memory::Silent {
                last_arrival: None,
                last_value: f64::NAN,
            },
        };
        Detector {
            rule,
            memory,
            episode: Episode::Idle,
            raises: std::collections::VecDeque::new(),
        }
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    pub fn is_silent_rule(&self) -> bool {
        matches!(self.rule.kind, RuleKind::Silent { .. })
    }

    /// The active episode, if any (with its peak so far).
    pub fn active(&self) -> Option<&AnomalyEvent> {
        match &self.episode {
            Episode::Active { event, .. } => Some(event),
            _ => None,
        }
    }

    /// Resumes an episode that was active when the daemon stopped, so that it is cleared
    /// once instead of being raised a second time.
    pub fn restore(&mut self, event: AnomalyEvent) {
        self.episode = Episode::Active {
            event: Box::new(event),
            clear_since: None,
        };
    }

    /// Feeds a finite, trusted reading (event time `t`) that arrived at gateway time `now`.
    /// Returns the event to store when an episode is raised or cleared.
    pub fn observe(
        &mut self,
        key: &SeriesKey,
        t: TimeNs,
        value: f64,
        now: TimeNs,
        next_id: &mut u64,
    ) -> Option<AnomalyEvent> {
        let (eval, at) = match (&self.rule.kind, &mut self.memory) {
            (
                RuleKind::Limit {
                    min,
                    min_clear,
                    max,
                    max_clear,
                },
                _,
            ) => (limit(value, *min, *min_clear, *max, *max_clear), t),
            (RuleKind::Rate { raise, clear }, Memory::Rate { last }) => {
                let prev = last.replace((t, value));
                match prev {
                    Some((pt, pv)) if t > pt => {
                        let rate = (value - pv).abs() / ((t - pt) as f64 / NS_PER_SEC as f64);
                        (above(rate, *raise, *clear), t)
                    }
                    // First reading or out of order: nothing to compare with.
                    _ => return None,
                }
            }
            (
                RuleKind::Zscore {
                    raise,
                    clear,
                    min_samples,
                    ..
                },
                Memory::Zscore { baseline },
            ) => {
                let eval = match (baseline.mean(), baseline.stddev()) {
                    (Some(mean), Some(sd))
                        if baseline.len() >= *min_samples as usize && sd > 1e-12 =>
                    {
                        Some(above((value - mean).abs() / sd, *raise, *clear))
                    }
                    _ => None,
                };
                // The baseline keeps learning during an episode. Freezing it would keep an
                // episode raised by a degenerate baseline (a stuck sensor has a near-zero
                // spread) active forever; a lasting shift clears once it is the new normal.
                baseline.push(t, value);
                match eval {
                    Some(e) => (e, t),
                    None => return None,
                }
            }
            (
                RuleKind::Stuck {
                    raise_secs,
                    tolerance,
                },
                Memory::Stuck { run },
            ) => {
                let eval = match run {
                    Some((start, v0)) if (value - *v0).abs() <= *tolerance => {
                        let stuck_for = (t - *start) as f64 / NS_PER_SEC as f64;
                        let level = if stuck_for >= *raise_secs {
                            Level::Raise
                        } else {
                            Level::Band
                        };
                        Eval {
                            level,
                            score: stuck_for,
                            magnitude: stuck_for,
                        }
                    }
                    _ => {
                        *run = Some((t, value));
                        Eval {
                            level: Level::Clear,
                            score: 0.0,
                            magnitude: 0.0,
                        }
                    }
                };
                (eval, t)
            }
            (
                RuleKind::Silent { .. },
                Memory::Silent {
                    last_arrival,
                    last_value,
                },
            ) => {
                *last_arrival = Some(now);
                *last_value = value;
                (
                    Eval {
                        level: Level::Clear,
                        score: 0.0,
                        magnitude: 0.0,
                    },
                    now,
                )
            }
            // Fed whole rows through `AssetDetector`, never one reading at a time.
            (RuleKind::Multivariate(_), _) => return None,
            _ => unreachable!("detector memory always matches its rule kind"),
        };
        self.step(key, eval, at, value, next_id)
    }

    /// Feeds a score computed outside (the multivariate model's T²) at event time `t`.
    fn observe_score(
        &mut self,
        key: &SeriesKey,
        t: TimeNs,
        score: f64,
        (raise, clear): (f64, f64),
        next_id: &mut u64,
    ) -> Option<AnomalyEvent> {
        self.step(key, above(score, raise, clear), t, score, next_id)
    }

    /// Advances gateway time for the `silent` rule; other rules ignore it.
    pub fn tick(
        &mut self,
        key: &SeriesKey,
        now: TimeNs,
        next_id: &mut u64,
    ) -> Option<AnomalyEvent> {
        let (
            RuleKind::Silent { raise_secs },
            Memory::Silent {
                last_arrival,
                last_value,
            },
        ) = (&self.rule.kind, &self.memory)
        else {
            return None;
        };
        let last = (*last_arrival)?;
        let gap = (now - last) as f64 / NS_PER_SEC as f64;
        if gap < *raise_secs {
            return None;
        }
        let value = *last_value;
        let eval = Eval {
            level: Level::Raise,
            score: gap,
            magnitude: gap,
        };
        self.step(key, eval, now, value, next_id)
    }

    /// The episode machine shared by all kinds.
    fn step(
        &mut self,
        key: &SeriesKey,
        eval: Eval,
        t: TimeNs,
        value: f64,
        next_id: &mut u64,
    ) -> Option<AnomalyEvent> {
        match (&mut self.episode, eval.level) {
            (Episode::Idle, Level::Raise) if self.rule.min_duration <= 0 => {
                Some(self.raise(key, eval, t, value, next_id))
            }
            (Episode::Idle, Level::Raise) => {
                self.episode = Episode::Pending { since: t };
                None
            }
            (Episode::Idle, _) => None,
            (Episode::Pending { since }, Level::Raise) => {
                if t - *since >= self.rule.min_duration {
                    Some(self.raise(key, eval, t, value, next_id))
                } else {
                    None
                }
            }
            (Episode::Pending { .. }, _) => {
                self.episode = Episode::Idle;
                None
            }
            (Episode::Active { event, clear_since }, Level::Raise | Level::Band) => {
                *clear_since = None;
                if eval.level == Level::Raise
                    && eval.magnitude > peak_magnitude(&self.rule.kind, event)
                {
                    event.peak_score = eval.score;
                    event.peak_value = value;
                    event.peak_at = t;
                }
                None
            }
            (Episode::Active { event, clear_since }, Level::Clear) => {
                let since = *clear_since.get_or_insert(t);
                // Flapping: this episode is the flap_max-th raised within the window.
                let flapping = self.rule.flap_window > 0
                    && self.raises.len() >= self.rule.flap_max
                    && self
                        .raises
                        .front()
                        .is_some_and(|&first| event.raised_at - first <= self.rule.flap_window);
                let holdoff = if flapping {
                    self.rule.holdoff.max(self.rule.flap_window)
                } else {
                    self.rule.holdoff
                };
                if t - since < holdoff {
                    return None;
                }
                let mut cleared = (**event).clone();
                cleared.cleared_at = Some(t);
                self.episode = Episode::Idle;
                Some(cleared)
            }
        }
    }

    fn raise(
        &mut self,
        key: &SeriesKey,
        eval: Eval,
        t: TimeNs,
        value: f64,
        next_id: &mut u64,
    ) -> AnomalyEvent {
        let id = *next_id;
        *next_id += 1;
        self.raises.push_back(t);
        while self.raises.len() > self.rule.flap_max {
            self.raises.pop_front();
        }
        let event = AnomalyEvent {
            id,
            sensor: key.sensor.to_string(),
            field: key.field.to_string(),
            rule: self.rule.name.clone(),
            kind: self.rule.kind.name().to_string(),
            severity: self.rule.severity,
            raised_at: t,
            cleared_at: None,
            value,
            score: eval.score,
            peak_score: eval.score,
            peak_value: value,
            peak_at: t,
            message: message(&self.rule.kind, key, value, eval.score),
        };
        self.episode = Episode::Active {
            event: Box::new(event.clone()),
            clear_since: None,
        };
        event
    }
}

fn limit(
    v: f64,
    min: Option<f64>,
    min_clear: Option<f64>,
    max: Option<f64>,
    max_clear: Option<f64>,
) -> Eval {
    let over = max.map_or(f64::NEG_INFINITY, |m| v - m);
    let under = min.map_or(f64::NEG_INFINITY, |m| m - v);
    let magnitude = over.max(under);
    let high_clear = max_clear.or(max).is_none_or(|c| v <= c);
    let low_clear = min_clear.or(min).is_none_or(|c| v >= c);
    let level = if magnitude > 0.0 {
        Level::Raise
    } else if high_clear && low_clear {
        Level::Clear
    } else {
        Level::Band
    };
    Eval {
        level,
        score: v,
        magnitude,
    }
}

fn above(score: f64, raise: f64, clear: f64) -> Eval {
    let level = if score > raise {
        Level::Raise
    } else if score <= clear {
        Level::Clear
    } else {
        Level::Band
    };
    Eval {
        level,
        score,
        magnitude: score,
    }
}

fn peak_magnitude(kind: &RuleKind, event: &AnomalyEvent) -> f64 {
    match kind {
        RuleKind::Limit { min, max, .. } => {
            let v = event.peak_value;
            max.map_or(f64::NEG_INFINITY, |m| v - m)
                .max(min.map_or(f64::NEG_INFINITY, |m| m - v))
        }
        _ => event.peak_score,
    }
}

fn message(kind: &RuleKind, key: &SeriesKey, value: f64, score: f64) -> String {
    let field = &key.field;
    match kind {
        RuleKind::Limit { max, min, .. } => match (max, min) {
            (Some(m), _) if value > *m => format!("{field} {value:.3} above the limit {m}"),
            (_, Some(m)) => format!("{field} {value:.3} below the limit {m}"),
            _ => format!("{field} {value:.3} outside the limits"),
        },
        RuleKind::Rate { raise, .. } => {
            format!("{field} changing at {score:.3}/s, faster than {raise}/s")
        }
        RuleKind::Zscore {
            raise, window_secs, ..
        } => format!(
            "{field} {value:.3} is {score:.1} standard deviations from its {window_secs} s mean (limit {raise})"
        ),
        RuleKind::Stuck { raise_secs, .. } => {
            format!("{field} stuck at {value:.3} for {raise_secs} s or more")
        }
        RuleKind::Silent { raise_secs } => {
            format!("no reading of {field} for {score:.0} s (limit {raise_secs} s)")
        }
        RuleKind::Multivariate(rule) => format!(
            "{} departed from its learned behaviour: T² {score:.1} above {} ({field} the largest part)",
            key.sensor, rule.raise
        ),
    }
}

#[cfg(test)]
mod tests;
