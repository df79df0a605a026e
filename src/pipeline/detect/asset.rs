//! A multivariate rule applied to one machine (one sensor id): assembles rows from the
//! readings of the rule's fields (a row is every field at one event time), feeds them to the
//! model ([`Mewma`]) and its T² to the shared episode machine, so the alert discipline
//! (minimum duration, hold-off, hysteresis) is the same as every other rule's.
//!
//! A row is decided as soon as it is complete. A row that a newer time overtakes before it
//! was complete is dropped (a missing reading changes nothing in the model); a reading older
//! than the current row is ignored.

use std::sync::Arc;

use super::mewma::{Mewma, MewmaParams};
use super::{Detector, Rule};
use crate::config::RuleKind;
use crate::model::{AnomalyEvent, SeriesKey, TimeNs};

#[derive(Debug)]
pub struct AssetDetector {
    sensor: Arc<str>,
    fields: Vec<Arc<str>>,
    levels: (f64, f64),
    model: Mewma,
    episode: Detector,
    /// The row being assembled: its time and one slot per field (NaN: not yet read).
    row: Option<(TimeNs, Vec<f64>)>,
}

impl AssetDetector {
    pub fn new(rule: Arc<Rule>, sensor: Arc<str>) -> AssetDetector {
        let RuleKind::Multivariate(r) = &rule.kind else {
            panic!("an asset detector needs a multivariate rule");
        };
        let params = MewmaParams {
            rate: r.fields.iter().map(|f| r.rate_fields.contains(f)).collect(),
            warmup: r.warmup_rows as usize,
            span: r.span_rows,
            shrink: r.shrink,
            skip: r.skip_rows as usize,
            max_inflation: r.max_inflation,
            floor: r.floor,
            freeze_at: r.raise,
            track_span: r.track_span_rows,
        };
        AssetDetector {
            sensor,
            fields: r.fields.iter().map(|f| Arc::from(f.as_str())).collect(),
            levels: (r.raise, r.clear),
            model: Mewma::new(params),
            episode: Detector::new(rule.clone()),
            row: None,
        }
    }

    pub fn rule(&self) -> &Rule {
        self.episode.rule()
    }

    pub fn active(&self) -> Option<&AnomalyEvent> {
        self.episode.active()
    }

    /// Resumes an episode active when the daemon stopped (cleared once, not raised again).
    pub fn restore(&mut self, event: AnomalyEvent) {
        self.episode.restore(event);
    }

    /// Feeds one finite, trusted reading of the machine; returns an event when the completed
    /// row raises or clears an episode.
    pub fn observe(
        &mut self,
        field: &str,
        t: TimeNs,
        value: f64,
        next_id: &mut u64,
    ) -> Option<AnomalyEvent> {
        let k = self.fields.iter().position(|f| &**f == field)?;
        match &mut self.row {
            Some((time, _)) if t < *time => return None,
            Some((time, values)) if t == *time => values[k] = value,
            // A newer time: the row buffer is reused (an incomplete row is dropped).
            Some((time, values)) => {
                *time = t;
                values.fill(f64::NAN);
                values[k] = value;
            }
            None => {
                let mut values = vec![f64::NAN; self.fields.len()];
                values[k] = value;
                self.row = Some((t, values));
            }
        }
        let (time, values) = self.row.as_mut()?;
        if values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let time = *time;
        let pushed = self.model.push(values);
        // Emptied in place for a repeat of the same time (a redelivery).
        values.fill(f64::NAN);
        let (t2, top) = pushed?;
        let key = SeriesKey::new(self.sensor.clone(), self.fields[top].clone());
        self.episode
            .observe_score(&key, time, t2, self.levels, next_id)
    }
}
