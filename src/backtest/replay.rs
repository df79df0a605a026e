//! Replays a recording through the live pipeline's own code: each row becomes one batch of
//! readings (one per field, the row's time as event time) for one sensor, the gateway clock
//! is the row's time (so `silent` and hold-offs run in event time), and the alarm state after
//! each row is whether any anomaly of the sensor is active.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::input::Recording;
use crate::config::Config;
use crate::model::{AnomalyEvent, Batch, Quality, Reading, SeriesKey};
use crate::pipeline::{Pipeline, RuleSet, Settings};

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    /// Per row: an anomaly of the sensor was active after the row.
    pub alarms: Vec<bool>,
    /// Every event in its last state (cleared or still active at the end), by id.
    pub events: Vec<AnomalyEvent>,
}

/// Replays `recording` as sensor `sensor` with the rules and pipeline settings of `config`.
/// A fresh pipeline per call: each file is its own stream.
pub fn replay(config: &Config, rules: RuleSet, recording: &Recording, sensor: &str) -> Replay {
    let mut settings = Settings::from_config(config);
    settings.keep_raw = false;
    let start = recording.rows.first().map_or(0, |r| r.time);
    let mut pipeline = Pipeline::new(settings, rules, 1, Vec::new(), start);
    let source: Arc<str> = Arc::from("backtest");
    let sensor: Arc<str> = Arc::from(sensor);
    let keys: Vec<SeriesKey> = recording
        .fields
        .iter()
        .map(|f| SeriesKey::new(sensor.clone(), f.as_str()))
        .collect();
    let mut events: BTreeMap<u64, AnomalyEvent> = BTreeMap::new();
    let mut active = std::collections::BTreeSet::new();
    let mut alarms = Vec::with_capacity(recording.rows.len());
    for row in &recording.rows {
        let readings: Vec<Reading> = keys
            .iter()
            .zip(&row.values)
            .filter(|(_, v)| !v.is_nan())
            .map(|(key, &value)| Reading {
                series: key.clone(),
                time: row.time,
                value,
                quality: Quality::GOOD,
            })
            .collect();
        pipeline.ingest(Batch::new(source.clone(), readings), row.time);
        pipeline.tick(row.time);
        for event in pipeline.take_output().events {
            if event.is_active() {
                active.insert(event.id);
            } else {
                active.remove(&event.id);
            }
            events.insert(event.id, event);
        }
        alarms.push(!active.is_empty());
    }
    Replay {
        alarms,
        events: events.into_values().collect(),
    }
}
