//! The store: the only module that touches redb. One file holds the series dictionary, raw
//! readings, rollups, anomaly events, the outbox with per-sink cursors, and meta (schema
//! version). Every write is one durable transaction built from a [`WriteBatch`]; reads open
//! their own read transactions and never block the writer. Nothing here is async: callers run
//! it on `spawn_blocking` (see `writer`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::StoreConfig;
use crate::model::{AnomalyEvent, Quality, Reading, Rollup, SeriesKey, Stats, TimeNs};

/// Everything one commit writes. A rollup and the outbox entry that forwards it are written
/// in the same transaction.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Series seen for the first time by the pipeline, with the source that produced them.
    pub new_series: Vec<(SeriesKey, Arc<str>)>,
    /// Raw readings (ignored when raw retention is 0).
    pub raw: Vec<Reading>,
    /// Rollups (complete windows, partial flushes or single late readings). Each is merged
    /// into the stored rollup with the same (series, start), and the merged result is queued
    /// in the outbox.
    pub rollups: Vec<Rollup>,
    /// Anomaly events, upserted by id and queued in the outbox.
    pub events: Vec<AnomalyEvent>,
}

impl WriteBatch {
    pub fn len(&self) -> usize {
        self.new_series.len() + self.raw.len() + self.rollups.len() + self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends another batch (the writer coalesces many pipeline outputs into one commit).
    pub fn append(&mut self, mut other: WriteBatch) {
        self.new_series.append(&mut other.new_series);
        self.raw.append(&mut other.raw);
        self.rollups.append(&mut other.rollups);
        self.events.append(&mut other.events);
    }
}

/// What a commit wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub raw_written: u64,
    /// Rollups written for a (series, start) that had none.
    pub rollups_inserted: u64,
    /// Rollups merged into an existing stored rollup (late readings, restarts).
    pub rollups_merged: u64,
    pub events_written: u64,
    pub outbox_appended: u64,
}

/// What retention removed, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub raw_removed: u64,
    pub rollups_removed: u64,
    pub events_removed: u64,
    pub outbox_removed: u64,
}

/// What the outbox holds for forwarding, in sequence order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxEntry {
    Rollup {
        sensor: String,
        field: String,
        source: String,
        start: TimeNs,
        length_ns: i64,
        stats: Stats,
    },
    Event(AnomalyEvent),
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// `Some(true)`: only active; `Some(false)`: only cleared.
    pub active: Option<bool>,
    pub sensor: Option<String>,
    /// At most this many, newest first; 0 means no limit.
    pub limit: usize,
}

/// Sizes and depths for the status page and `/metrics`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreStats {
    /// Size of the redb file on disk.
    pub file_bytes: u64,
    /// Bytes of live data (redb's stored + metadata bytes), compared with `max_bytes`.
    pub stored_bytes: u64,
    pub max_bytes: u64,
    pub series: u64,
    pub raw_readings: u64,
    pub rollups: u64,
    pub events: u64,
    pub outbox_entries: u64,
}

/// Errors of the store, each with what a person needs to act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "store file {path} has schema version {found}, this edgewatch supports up to {supported}"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store transaction failed: {0}")]
    Transaction(#[from] Box<redb::TransactionError>),
    #[error("store table error: {0}")]
    Table(#[from] Box<redb::TableError>),
    #[error("store read/write failed: {0}")]
    Storage(#[from] Box<redb::StorageError>),
    #[error("store commit failed: {0}")]
    Commit(#[from] Box<redb::CommitError>),
    #[error("corrupt record in table {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

/// Handle on the open store; cheap to clone, shared by the writer and the readers.
#[derive(Clone)]
pub struct Store {
    _config: Arc<StoreConfig>,
}

impl Store {
    /// Opens (or creates) the store file, creating its directory, the tables and the meta
    /// record; loads the series dictionary.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let _ = config;
        unimplemented!()
    }

    /// Writes a batch in one durable transaction.
    pub fn write(&self, batch: &WriteBatch) -> Result<CommitReport, StoreError> {
        let _ = batch;
        unimplemented!()
    }

    /// Removes raw readings, rollups and cleared events older than their retention (relative
    /// to `now`), then enforces the byte budget (oldest raw first, then oldest outbox entries).
    pub fn apply_retention(&self, now: TimeNs) -> Result<RetentionReport, StoreError> {
        let _ = now;
        unimplemented!()
    }

    /// The next unused anomaly event id.
    pub fn next_event_id(&self) -> Result<u64, StoreError> {
        unimplemented!()
    }

    /// Anomaly events, newest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<AnomalyEvent>, StoreError> {
        let _ = filter;
        unimplemented!()
    }

    /// Stored rollups of one sensor (one field or all), with `from <= start < to`, ordered by
    /// field then start.
    pub fn rollups(
        &self,
        sensor: &str,
        field: Option<&str>,
        from: TimeNs,
        to: TimeNs,
    ) -> Result<Vec<Rollup>, StoreError> {
        let _ = (sensor, field, from, to);
        unimplemented!()
    }

    /// Raw readings of one series with `from <= time < to`, oldest first, at most `limit`.
    pub fn raw(
        &self,
        series: &SeriesKey,
        from: TimeNs,
        to: TimeNs,
        limit: usize,
    ) -> Result<Vec<(TimeNs, f64, Quality)>, StoreError> {
        let _ = (series, from, to, limit);
        unimplemented!()
    }

    /// Every known series with its source.
    pub fn series(&self) -> Result<Vec<(SeriesKey, String)>, StoreError> {
        unimplemented!()
    }

    /// Outbox entries with a sequence number above `after`, oldest first, at most `limit`.
    pub fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let _ = (after, limit);
        unimplemented!()
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        unimplemented!()
    }
}
