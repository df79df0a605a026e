//! The live view: what the pipeline knows right now (latest values, rolling averages, active
//! anomalies, counters) and what each source reports about its health. The pipeline task
//! publishes a fresh [`LiveSnapshot`] on a `watch` channel every `snapshot_interval_ms`; the
//! web only reads it, so any number of readers never slows acquisition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::model::{AnomalyEvent, Quality, TimeNs};

/// Latest state of one series.
#[derive(Clone, Debug, Serialize)]
pub struct FieldState {
    pub value: f64,
    pub time: TimeNs,
    pub quality: Quality,
    /// Mean of the finite readings in the last `rolling_secs` of event time; `None` before the
    /// first finite reading.
    pub rolling_avg: Option<f64>,
}

/// Latest state of one sensor: its fields by name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SensorState {
    pub source: String,
    /// The sensor's tags (source config, MQTT topic), empty when it has none.
    pub tags: crate::model::Tags,
    pub fields: BTreeMap<String, FieldState>,
}

/// Counters of the pipeline since start (monotonic).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PipelineCounters {
    /// Readings accepted into the pipeline.
    pub readings: u64,
    /// NaN or infinite values: stored raw, excluded from aggregates.
    pub not_finite: u64,
    /// Readings with an untrustworthy timestamp (before 2000 or too far ahead): stored raw only.
    pub time_suspect: u64,
    /// Readings that arrived after their window was emitted and corrected the stored rollup.
    pub late_corrected: u64,
    /// Readings older than the rollup retention: they cannot correct a rollup; stored raw.
    pub late_dropped: u64,
    /// Rollups emitted (including corrections).
    pub rollups: u64,
    pub events_raised: u64,
    pub events_cleared: u64,
}

/// Everything the web shows about the pipeline, replaced as a whole on each publish.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveSnapshot {
    /// Gateway clock when this snapshot was made.
    pub taken_at: TimeNs,
    /// The pipeline's watermark (event time); `None` before the first reading.
    pub watermark: Option<TimeNs>,
    pub sensors: BTreeMap<String, SensorState>,
    /// Active anomalies, most recent first.
    pub active_events: Vec<AnomalyEvent>,
    pub counters: PipelineCounters,
}

/// Health a source reports; shared between the source task (writer) and the web (reader).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceHealth {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `starting`, `connecting`, `up`, `down`, `degraded` (a Modbus source with some units
    /// up and some down), `misconfigured` (a person must act: refused credentials, a rejected
    /// certificate) or `stopped`.
    pub state: String,
    /// Gateway clock of the last successful acquisition.
    pub last_success: Option<TimeNs>,
    pub readings: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Messages received (message-based sources such as MQTT; 0 for the others).
    pub messages: u64,
    /// Messages per second over the last second, refreshed by the source every second.
    pub messages_per_sec: f64,
    /// Messages the payload mapping refused, by reason (`BadReason::as_str`).
    pub bad_payloads: BTreeMap<String, BadPayloadStat>,
    /// What a technician needs to know about this kind of source, in display order: for
    /// MQTT the broker, the subscriptions, the session and the unacknowledged messages; for
    /// Modbus the endpoint, the poll groups and `uN.*` per unit (state, last success and
    /// error, latency, requests per cycle, overruns, bad ranges).
    pub details: Vec<(String, String)>,
}

impl SourceHealth {
    /// Sets the detail `key`, keeping its place when it exists, appending it otherwise.
    pub fn set_detail(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.details.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.details.push((key.to_string(), value)),
        }
    }
}

/// Refused messages of one reason: how many, and the latest one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BadPayloadStat {
    pub count: u64,
    /// The decoder's explanation of the latest one, with its topic; outside text, so it is
    /// escaped wherever it is shown.
    pub last_example: String,
    pub last_time: TimeNs,
}

/// The set of source health records, one slot per configured source. A config reload retires
/// the slot of a removed source and gives the slot of a changed one to its new task (its
/// position on the page stays). Each slot counts its owners: a late update through an old
/// handle changes nothing that is shown.
#[derive(Clone, Debug, Default)]
pub struct SourceRegistry {
    slots: Arc<Mutex<Vec<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    /// Which handle owns the slot; `health` is `None` once retired.
    owner: u64,
    health: Option<SourceHealth>,
}

impl SourceRegistry {
    /// Registers a source and returns the handle it updates its health through.
    pub fn register(&self, name: &str, kind: &str) -> SourceHandle {
        let mut slots = self.slots.lock().expect("source registry poisoned");
        slots.push(Slot {
            owner: 0,
            health: Some(starting(name, kind)),
        });
        SourceHandle {
            slots: self.slots.clone(),
            index: slots.len() - 1,
            owner: 0,
        }
    }

    /// The sources in service, in the order they were registered.
    pub fn snapshot(&self) -> Vec<SourceHealth> {
        let slots = self.slots.lock().expect("source registry poisoned");
        slots.iter().filter_map(|s| s.health.clone()).collect()
    }
}

fn starting(name: &str, kind: &str) -> SourceHealth {
    SourceHealth {
        name: name.to_string(),
        kind: kind.to_string(),
        state: "starting".into(),
        ..SourceHealth::default()
    }
}

/// A source's handle on its own health record.
#[derive(Clone, Debug)]
pub struct SourceHandle {
    slots: Arc<Mutex<Vec<Slot>>>,
    index: usize,
    owner: u64,
}

impl SourceHandle {
    /// Changes the health record (nothing once the slot was retired or handed over).
    pub fn update(&self, f: impl FnOnce(&mut SourceHealth)) {
        let mut slots = self.slots.lock().expect("source registry poisoned");
        let slot = &mut slots[self.index];
        if let (true, Some(health)) = (slot.owner == self.owner, &mut slot.health) {
            f(health);
        }
    }

    /// Retires the slot: the source was removed.
    pub fn retire(&self) {
        let mut slots = self.slots.lock().expect("source registry poisoned");
        let slot = &mut slots[self.index];
        if slot.owner == self.owner {
            slot.health = None;
        }
    }

    /// Hands the slot, reset to `starting`, to a new handle: the source's new configuration
    /// runs in the old one's place; updates through this handle no longer show.
    pub fn hand_over(&self, name: &str, kind: &str) -> SourceHandle {
        let mut slots = self.slots.lock().expect("source registry poisoned");
        let slot = &mut slots[self.index];
        slot.owner += 1;
        slot.health = Some(starting(name, kind));
        SourceHandle {
            slots: self.slots.clone(),
            index: self.index,
            owner: slot.owner,
        }
    }
}
