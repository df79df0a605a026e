//! Per-sink link state and backlog, shared between each forwarder (writer) and the web
//! (reader), like the sources' health. Never holds a secret.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::model::TimeNs;

/// What the status page, `/api/v1/status` and `/metrics` show about one sink. The times are
/// not serialized: the API shows them as RFC 3339 strings (`web::api::SinkView`).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SinkStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The base URL without credentials.
    pub url: String,
    /// `starting`, `up`, `down` (no answer: network error or timeout), `backing_off` (InfluxDB
    /// answered 408/429/5xx and is given time) or `misconfigured` (401/403/404).
    pub state: String,
    #[serde(skip_serializing)]
    pub last_success: Option<TimeNs>,
    pub last_error: Option<String>,
    #[serde(skip_serializing)]
    pub last_error_at: Option<TimeNs>,
    /// Gateway clock of the next attempt while backing off.
    #[serde(skip_serializing)]
    pub next_attempt_at: Option<TimeNs>,
    /// Outbox entries this sink has not acknowledged yet.
    pub backlog_points: u64,
    pub backlog_bytes: u64,
    /// Time of the oldest unsent entry (rollup window start or event change).
    #[serde(skip_serializing)]
    pub oldest_unsent: Option<TimeNs>,
    /// Points acknowledged per second, smoothed over the last minute or so.
    pub drain_rate_points_per_sec: f64,
    /// Seconds until the backlog is drained at the current rate.
    pub eta_secs: Option<f64>,
    /// Points acknowledged since start.
    pub sent_points: u64,
    /// Points refused for good (in the dead-letter table), since the store was created.
    pub dead_letters: u64,
    /// Outbox entries removed by retention before this sink had them, since the store was
    /// created: data HQ will not get.
    pub dropped_points: u64,
    /// Last acknowledged outbox sequence.
    pub cursor: u64,
}

/// One slot per configured sink. A config reload retires every slot ([`SinkRegistry::clear`])
/// and registers the new sinks in fresh ones; a retired slot is never reused, so a late
/// update through an old handle changes nothing that is shown.
#[derive(Clone, Debug, Default)]
pub struct SinkRegistry {
    slots: Arc<Mutex<Vec<Option<SinkStatus>>>>,
}

impl SinkRegistry {
    pub fn register(&self, status: SinkStatus) -> SinkHandle {
        let mut slots = self.slots.lock().expect("sink registry poisoned");
        slots.push(Some(status));
        SinkHandle {
            slots: self.slots.clone(),
            index: slots.len() - 1,
        }
    }

    /// The sinks in service, in the order they were registered.
    pub fn snapshot(&self) -> Vec<SinkStatus> {
        let slots = self.slots.lock().expect("sink registry poisoned");
        slots.iter().flatten().cloned().collect()
    }

    /// Retires every slot (the sinks were stopped for a reload).
    pub fn clear(&self) {
        let mut slots = self.slots.lock().expect("sink registry poisoned");
        slots.iter_mut().for_each(|slot| *slot = None);
    }
}

/// A forwarder's handle on its own status.
#[derive(Clone, Debug)]
pub struct SinkHandle {
    slots: Arc<Mutex<Vec<Option<SinkStatus>>>>,
    index: usize,
}

impl SinkHandle {
    /// Changes the status (nothing once the slot was retired).
    pub fn update(&self, f: impl FnOnce(&mut SinkStatus)) {
        let mut slots = self.slots.lock().expect("sink registry poisoned");
        if let Some(status) = &mut slots[self.index] {
            f(status);
        }
    }

    /// The status (a default one once the slot was retired).
    pub fn get(&self) -> SinkStatus {
        self.slots.lock().expect("sink registry poisoned")[self.index]
            .clone()
            .unwrap_or_default()
    }
}
