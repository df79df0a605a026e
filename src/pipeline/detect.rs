//! Anomaly detectors: limits, rate of change, rolling z-score, stuck and silent sensors.
//!
//! Each detector turns a reading into a *level* (beyond the raise level, within the clear
//! level, or in the hysteresis band between them) and a shared episode machine turns levels
//! into events: the raise condition must hold for `min_duration`, the clear condition for
//! `holdoff`, and the band keeps the current state. So one fault gives exactly one event,
//! raised once (its peak tracked while active) and cleared once, however the value wobbles.
//!
//! Sans-IO: event time and the gateway clock are given; nothing here reads a clock.

use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::rolling::Rolling;
use crate::config::{RuleConfig, RuleKind};
use crate::model::{AnomalyEvent, NS_PER_SEC, SeriesKey, Severity, TimeNs};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub min_duration: i64,
    pub holdoff: i64,
}

/// The configured rules with their globs compiled into one matcher.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    globs: GlobSet,
}

fn secs(s: f64) -> i64 {
    (s * NS_PER_SEC as f64).round() as i64
}

impl RuleSet {
    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(configs.len());
        for c in configs {
            builder.add(Glob::new(&c.pattern)?);
            rules.push(Arc::new(Rule {
                name: c.name.clone(),
                kind: c.kind.clone(),
                severity: c.severity,
                min_duration: secs(c.min_duration_secs),
                holdoff: secs(c.holdoff_secs),
            }));
        }
        Ok(RuleSet {
            rules,
            globs: builder.build()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn has_rule(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.name == name)
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

#[derive(Clone, Debug)]
enum Memory {
    Limit,
    Rate {
        last: Option<(TimeNs, f64)>,
    },
    Zscore {
        baseline: Rolling,
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
}

impl Detector {
    pub fn new(rule: Arc<Rule>) -> Self {
        let memory = match &rule.kind {
            RuleKind::Limit { .. } => Memory::Limit,
            RuleKind::Rate { .. } => Memory::Rate { last: None },
            RuleKind::Zscore { window_secs, .. } => Memory::Zscore {
                baseline: Rolling::new(secs(*window_secs)),
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
            _ => unreachable!("detector memory always matches its rule kind"),
        };
        self.step(key, eval, at, value, next_id)
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
                if t - since < self.rule.holdoff {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NS_PER_SEC;

    fn rule(kind: RuleKind, min_duration_secs: f64, holdoff_secs: f64) -> Arc<Rule> {
        Arc::new(Rule {
            name: "r".into(),
            kind,
            severity: Severity::Warning,
            min_duration: secs(min_duration_secs),
            holdoff: secs(holdoff_secs),
        })
    }

    fn key() -> SeriesKey {
        SeriesKey::new("s-1", "temperature")
    }

    /// Feeds `values` one per second and returns the events produced.
    fn run(d: &mut Detector, values: &[f64]) -> Vec<AnomalyEvent> {
        let mut id = 1;
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| d.observe(&key(), i as i64 * S, *v, i as i64 * S, &mut id))
            .collect()
    }

    fn limit_max(max: f64, max_clear: f64) -> RuleKind {
        RuleKind::Limit {
            min: None,
            min_clear: None,
            max: Some(max),
            max_clear: Some(max_clear),
        }
    }

    #[test]
    fn value_oscillating_around_a_limit_raises_one_event_not_a_storm() {
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
        let mut values = vec![90.0; 5];
        for i in 0..50 {
            values.push(if i % 2 == 0 { 100.5 } else { 99.5 });
        }
        values.extend([90.0; 5]);
        let events = run(&mut d, &values);
        assert_eq!(events.len(), 2, "one raise and one clear: {events:?}");
        assert!(events[0].is_active());
        assert_eq!(events[1].cleared_at, Some(55 * S));
        assert_eq!(events[0].id, events[1].id);
    }

    #[test]
    fn raised_event_keeps_its_peak_until_cleared() {
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
        let events = run(&mut d, &[90.0, 101.0, 107.0, 103.0, 90.0]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].value, 101.0);
        assert_eq!((events[1].peak_value, events[1].peak_at), (107.0, 2 * S));
    }

    #[test]
    fn min_duration_suppresses_short_excursions() {
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 3.0, 0.0));
        assert!(run(&mut d, &[90.0, 101.0, 102.0, 90.0, 101.0, 90.0]).is_empty());
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 3.0, 0.0));
        let events = run(&mut d, &[90.0, 101.0, 102.0, 103.0, 104.0, 90.0]);
        assert_eq!(
            events[0].raised_at,
            4 * S,
            "raised once the condition held 3 s"
        );
    }

    #[test]
    fn holdoff_requires_the_clear_condition_to_last() {
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 3.0));
        let events = run(&mut d, &[101.0, 90.0, 90.0, 101.0, 90.0, 90.0, 90.0, 90.0]);
        assert_eq!(
            events.len(),
            2,
            "the dip at 1-2 s is shorter than the hold-off: {events:?}"
        );
        assert_eq!(events[1].cleared_at, Some(7 * S));
    }

    #[test]
    fn low_limit_raises_below_min_and_clears_above_min_clear() {
        let kind = RuleKind::Limit {
            min: Some(10.0),
            min_clear: Some(12.0),
            max: None,
            max_clear: None,
        };
        let mut d = Detector::new(rule(kind, 0.0, 0.0));
        let events = run(&mut d, &[15.0, 9.0, 11.0, 9.5, 12.0]);
        assert_eq!(events.len(), 2);
        assert!(events[0].message.contains("below"));
        assert_eq!(events[1].cleared_at, Some(4 * S));
    }

    #[test]
    fn rate_of_change_raises_on_a_jump() {
        let mut d = Detector::new(rule(
            RuleKind::Rate {
                raise: 1.0,
                clear: 0.5,
            },
            0.0,
            0.0,
        ));
        let events = run(&mut d, &[3.0, 3.1, 3.0, 6.0, 6.1, 6.0, 6.05]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raised_at, 3 * S);
        assert!((events[0].score - 3.0).abs() < 1e-9);
    }

    #[test]
    fn zscore_raises_on_an_outlier_and_clears_when_values_return() {
        let kind = RuleKind::Zscore {
            window_secs: 60.0,
            raise: 5.0,
            clear: 2.0,
            min_samples: 20,
        };
        let mut d = Detector::new(rule(kind, 0.0, 0.0));
        let mut values: Vec<f64> = (0..40)
            .map(|i| 1.0 + if i % 2 == 0 { 0.01 } else { -0.01 })
            .collect();
        values.extend([3.0, 3.0, 3.0, 3.0]);
        values.extend((0..5).map(|i| 1.0 + if i % 2 == 0 { 0.01 } else { -0.01 }));
        let events = run(&mut d, &values);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].raised_at, 40 * S);
        assert_eq!(
            events[1].cleared_at,
            Some(44 * S),
            "clears when values return"
        );
    }

    #[test]
    fn zscore_episode_after_a_stuck_baseline_does_not_stay_active() {
        let kind = RuleKind::Zscore {
            window_secs: 60.0,
            raise: 6.0,
            clear: 3.0,
            min_samples: 30,
        };
        let mut d = Detector::new(rule(kind, 0.0, 0.0));
        let mut values = vec![0.5; 50];
        values.push(0.5001);
        values.extend((0..30).map(|i| 0.5 + if i % 2 == 0 { 0.03 } else { -0.03 }));
        let events = run(&mut d, &values);
        assert_eq!(
            events.len(),
            2,
            "raised when the baseline was degenerate, then cleared: {events:?}"
        );
        assert!(d.active().is_none());
    }

    #[test]
    fn zscore_waits_for_min_samples() {
        let kind = RuleKind::Zscore {
            window_secs: 60.0,
            raise: 3.0,
            clear: 2.0,
            min_samples: 30,
        };
        let mut d = Detector::new(rule(kind, 0.0, 0.0));
        let mut values: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
        values.push(100.0);
        assert!(run(&mut d, &values).is_empty());
    }

    #[test]
    fn stuck_value_raises_after_the_duration_and_clears_on_change() {
        let mut d = Detector::new(rule(
            RuleKind::Stuck {
                raise_secs: 5.0,
                tolerance: 0.0,
            },
            0.0,
            0.0,
        ));
        let mut values = vec![1.0, 2.0];
        values.extend([7.0; 8]);
        values.push(7.5);
        let events = run(&mut d, &values);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raised_at, 7 * S, "stuck since 2 s, raised at 7 s");
        assert_eq!(events[1].cleared_at, Some(10 * S));
    }

    #[test]
    fn silent_sensor_raises_on_tick_and_clears_on_the_next_reading() {
        let mut d = Detector::new(rule(RuleKind::Silent { raise_secs: 10.0 }, 0.0, 0.0));
        let mut id = 7;
        assert!(d.observe(&key(), 0, 1.0, 0, &mut id).is_none());
        assert!(d.tick(&key(), 5 * S, &mut id).is_none());
        let raised = d.tick(&key(), 11 * S, &mut id).expect("raised");
        assert_eq!((raised.id, raised.raised_at), (7, 11 * S));
        assert!(d.tick(&key(), 20 * S, &mut id).is_none(), "raised once");
        let cleared = d
            .observe(&key(), 21 * S, 1.0, 21 * S, &mut id)
            .expect("cleared");
        assert_eq!((cleared.id, cleared.cleared_at), (7, Some(21 * S)));
        assert_eq!(id, 8);
    }

    #[test]
    fn restored_episode_is_cleared_not_raised_again() {
        let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
        let mut first = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
        let raised = run(&mut first, &[101.0]).remove(0);
        d.restore(raised.clone());
        let events = run(&mut d, &[102.0, 90.0]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, raised.id);
        assert!(events[0].cleared_at.is_some());
    }

    #[test]
    fn rules_match_sensor_field_globs() {
        let configs = vec![RuleConfig {
            name: "vib".into(),
            pattern: "press-*/vibration".into(),
            severity: Severity::Critical,
            min_duration_secs: 0.0,
            holdoff_secs: 0.0,
            kind: RuleKind::Stuck {
                raise_secs: 1.0,
                tolerance: 0.0,
            },
        }];
        let set = RuleSet::compile(&configs).unwrap();
        assert_eq!(
            set.detectors_for(&SeriesKey::new("press-1", "vibration"))
                .len(),
            1
        );
        assert!(
            set.detectors_for(&SeriesKey::new("press-1", "temperature"))
                .is_empty()
        );
        assert!(
            set.detectors_for(&SeriesKey::new("pump-1", "vibration"))
                .is_empty()
        );
    }
}
