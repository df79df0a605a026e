//! The store: the only module that touches redb. One file holds the series dictionary, raw
//! readings, rollups, anomaly events, the outbox with per-sink cursors, and meta (schema
//! version). Every write is one durable transaction built from a [`WriteBatch`]; reads open
//! their own read transactions and never block the writer. Nothing here is async: callers run
//! it on `spawn_blocking` (see `writer`).
//!
//! Code map: `mod.rs` (this file) is the API, opening, stats and the sink cursors; `reads.rs`
//! the queries (events, rollups, series, outbox; raw readings in `raw.rs`); `tables.rs` the
//! layout and record codecs; `commit.rs` the write transaction; `retention.rs` age and
//! byte-budget removal; `writer.rs` the async task that batches, commits and retries;
//! `event_acks.rs` operators' acknowledgements of events, the one thing the web writes (an
//! annotation in its own table, never data).
//!
//! Raw readings first land in `raw_recent`, ordered by time, and are folded into `raw`,
//! ordered by series, every `FOLD_RECORDS` (1,000,000) readings or `FOLD_MAX_AGE` (30 s),
//! whichever comes first: appending by time touches few pages per commit whatever the number
//! of series (see `tables::RAW_RECENT` for the numbers). Reads and retention treat the two
//! tables as one.
//!
//! Invariants:
//! - **A rollup and the outbox entry that forwards it are written in the same transaction.**
//! - **Outbox sequences only grow**, across restarts and after retention empties the outbox
//!   (the next sequence lives in `meta`).
//! - **Every commit is durable** (`Durability::Immediate`, an fsync): a power cut loses at most
//!   what the writer had not committed yet, i.e. `commit_interval_ms` of data.
//! - The in-memory series dictionary only ever holds committed series: it is updated after the
//!   commit succeeds, and a miss falls back to the table inside the transaction.
//! - No transaction lives across an `.await`; all of this is blocking code.

mod commit;
mod dedup;
mod event_acks;
mod open_windows;
mod raw;
mod reads;
mod retention;
mod sensor_tags;
mod sinks;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

pub use event_acks::Acknowledgement;
pub use sinks::{Backlog, DeadLetter, SinkCounters};
pub use writer::run_writer;

use tables::{
    CURSORS, EVENTS, META, META_NEXT_EVENT_ID, META_NEXT_OUTBOX_SEQ, META_SCHEMA_VERSION, OUTBOX,
    OUTBOX_BY_TIME, RAW, RAW_RECENT, ROLLUPS, SCHEMA_VERSION, SERIES, SERIES_BY_ID,
};

/// `raw_recent` is folded into `raw` once it holds this many readings. Larger folds cost less
/// per reading (each series' end of `raw` is spliced once per fold: at 250,000 folding was a
/// fifth of the daemon's CPU at full MQTT speed with 3,000 series, at 1,000,000 under a tenth)
/// but make the folding commit longer and the reads that scan `raw_recent` slower. A fold
/// holds at most a quarter of this in memory (about 8 MB), whatever the number.
const FOLD_RECORDS: u64 = 1_000_000;

/// `raw_recent` is also folded once this long has passed since the last fold, however few
/// readings it holds. At gateway rates (3,000 readings/s with 1,000 sim sensors) a fold then
/// holds about 90,000 readings (3 MB) in memory instead of a quarter of a million (8 MB: the
/// fold at 1,000,000 readings raised the RSS peak to 44 MiB; with folds every 30 s the peak
/// over 120 s, several folds included, was 36 MiB), and reads scan less of `raw_recent`; one
/// B-tree splice per series every 30 s costs next to nothing. Under heavy load
/// `FOLD_RECORDS` comes first.
const FOLD_MAX_AGE: Duration = Duration::from_secs(30);

use crate::config::StoreConfig;
use crate::model::{AnomalyEvent, FastMap, Reading, Rollup, SeriesKey, Stats, TimeNs};

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
    /// Sensors whose tags are new or changed: stored, and carried by their rollups' outbox
    /// entries from this commit on.
    pub sensor_tags: Vec<(String, crate::model::Tags)>,
    /// Checkpoints of windows still open in the pipeline (upserted), restored after a crash.
    pub open_windows: Vec<Rollup>,
    /// Windows that became rollups in this batch: their checkpoints are deleted.
    pub closed_windows: Vec<(SeriesKey, TimeNs)>,
    /// Released once this batch is durably committed (not written to the store).
    pub acks: Vec<crate::ack::CommitMark>,
}

impl WriteBatch {
    pub fn len(&self) -> usize {
        self.new_series.len()
            + self.raw.len()
            + self.rollups.len()
            + self.events.len()
            + self.open_windows.len()
            + self.sensor_tags.len()
            + self.closed_windows.len()
    }

    /// Records to write (readings, rollups, events, new series); marks do not count.
    pub fn records(&self) -> usize {
        self.len()
    }

    /// Nothing to write and nobody waiting for the commit.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.acks.is_empty()
    }

    /// Appends another batch (the writer coalesces many pipeline outputs into one commit).
    pub fn append(&mut self, mut other: WriteBatch) {
        self.new_series.append(&mut other.new_series);
        self.raw.append(&mut other.raw);
        self.rollups.append(&mut other.rollups);
        self.events.append(&mut other.events);
        self.open_windows.append(&mut other.open_windows);
        self.sensor_tags.append(&mut other.sensor_tags);
        self.closed_windows.append(&mut other.closed_windows);
        self.acks.append(&mut other.acks);
    }

    /// Tells every source waiting for this batch that it is committed.
    pub fn release_acks(&mut self) {
        for mark in self.acks.drain(..) {
            mark.release();
        }
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
///
/// Stored as JSON, tagged by `type`: the tag cannot be `kind`, because an event already has
/// a field of that name and the two would collide (the entry would not decode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxEntry {
    Rollup {
        sensor: String,
        field: String,
        source: String,
        start: TimeNs,
        length_ns: i64,
        stats: Stats,
        /// The sensor's tags when the rollup was written (left out when there are none).
        #[serde(default, skip_serializing_if = "crate::model::Tags::is_empty")]
        tags: crate::model::Tags,
    },
    Event(AnomalyEvent),
}

/// Which events to list. Every condition that is set must hold.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// `Some(true)`: only active; `Some(false)`: only cleared.
    pub active: Option<bool>,
    pub sensor: Option<String>,
    /// Only this rule (`AnomalyEvent::rule`, exact).
    pub rule: Option<String>,
    /// Only episodes still active at or after this time: cleared at or after it, or not
    /// cleared. With `to`, the episodes that overlap `[from, to)`, which is what a
    /// technician asking "what happened between 10:00 and 11:00" means.
    pub from: Option<TimeNs>,
    /// Only episodes raised before this time.
    pub to: Option<TimeNs>,
    /// At most this many, newest first; 0 means no limit.
    pub limit: usize,
}

impl EventFilter {
    /// Whether `event` passes every condition of the filter (the limit aside).
    pub fn matches(&self, event: &AnomalyEvent) -> bool {
        self.active.is_none_or(|active| event.is_active() == active)
            && self.sensor.as_deref().is_none_or(|s| event.sensor == s)
            && self.rule.as_deref().is_none_or(|r| event.rule == r)
            && self.to.is_none_or(|to| event.raised_at < to)
            && self
                .from
                .is_none_or(|from| event.cleared_at.is_none_or(|cleared| cleared >= from))
    }
}

/// Sizes and depths for the status page and `/metrics`.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
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
    #[error("cannot encode a record for table {table}: {reason}")]
    Encode { table: &'static str, reason: String },
    #[error("store cursor failed: {0}")]
    Cursor(#[from] Box<redb::CursorError>),
    #[error("cannot read the size of the store file {path}: {source}")]
    FileSize {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// redb returns its errors unboxed; they are boxed here so that `?` works on every redb call
/// while `StoreError` stays small.
macro_rules! boxed_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::from(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CursorError
);

/// Handle on the open store; cheap to clone, shared by the writer and the readers.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every clone of a [`Store`] shares.
struct Inner {
    /// The open file. redb runs one write transaction at a time and lets read transactions
    /// see the last commit beside it, which is what lets the web read while the writer writes.
    db: Database,
    /// Retention and budget settings, read by `write` (raw off) and `apply_retention`.
    config: StoreConfig,
    /// [`FOLD_RECORDS`], smaller in tests so that they exercise folding.
    fold_records: u64,
    /// When `raw_recent` was last folded (or the store opened), and [`FOLD_MAX_AGE`].
    fold_clock: Mutex<FoldClock>,
    /// The committed series dictionary, so that the hot path resolves a reading's series id
    /// with a hash lookup instead of a B-tree lookup.
    series: RwLock<SeriesCache>,
    /// The last [`Store::stats`] result and when it was taken, for [`Store::recent_stats`].
    stats_cache: std::sync::Mutex<Option<(std::time::Instant, StoreStats)>>,
}

/// The time bound of folding: `raw_recent` is folded at the first commit with raw readings
/// once `max_age` has passed since `last`.
#[derive(Debug)]
struct FoldClock {
    last: Instant,
    max_age: Duration,
}

impl FoldClock {
    fn due(&self) -> bool {
        self.last.elapsed() >= self.max_age
    }
}

/// Committed series by key. Only `commit` adds to it, after its transaction committed.
#[derive(Debug, Default)]
struct SeriesCache {
    by_key: FastMap<SeriesKey, SeriesInfo>,
}

#[derive(Clone, Debug)]
struct SeriesInfo {
    id: u32,
    /// The source that first reported the series ("" when a series arrived without one).
    source: Arc<str>,
}

impl Store {
    /// Opens (or creates) the store file, creating its directory, the tables and the meta
    /// record; loads the series dictionary.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Store::open_tuned(config, FOLD_RECORDS)
    }

    fn open_tuned(config: &StoreConfig, fold_records: u64) -> Result<Store, StoreError> {
        let path = &config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let cache_bytes = usize::try_from(config.cache_bytes).unwrap_or(usize::MAX);
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
            match found {
                Some(found) if found > u64::from(SCHEMA_VERSION) => {
                    // Dropping the transaction aborts it: nothing is written to a newer file.
                    return Err(StoreError::SchemaTooNew {
                        path: path.clone(),
                        found: u32::try_from(found).unwrap_or(u32::MAX),
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_SCHEMA_VERSION, u64::from(SCHEMA_VERSION))?;
                }
            }
            for (key, first) in [(META_NEXT_OUTBOX_SEQ, 1), (META_NEXT_EVENT_ID, 1)] {
                if meta.get(key)?.is_none() {
                    meta.insert(key, first)?;
                }
            }
            txn.open_table(SERIES)?;
            txn.open_table(SERIES_BY_ID)?;
            txn.open_table(RAW)?;
            txn.open_table(RAW_RECENT)?;
            txn.open_table(ROLLUPS)?;
            txn.open_table(EVENTS)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(OUTBOX_BY_TIME)?;
            txn.open_table(CURSORS)?;
            txn.open_table(tables::OPEN_WINDOWS)?;
            txn.open_table(tables::SENSOR_TAGS)?;
            sinks::create_tables(&txn)?;
            event_acks::create_tables(&txn)?;
        }
        txn.commit()?;

        let mut cache = SeriesCache::default();
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(SERIES_BY_ID)?;
            for item in table.iter()? {
                let (id, names) = item?;
                let (sensor, field, source) = names.value();
                cache.by_key.insert(
                    SeriesKey::new(sensor, field),
                    SeriesInfo {
                        id: id.value(),
                        source: source.into(),
                    },
                );
            }
        }
        tracing::info!(
            path = %path.display(),
            series = cache.by_key.len(),
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                config: config.clone(),
                fold_records: fold_records.max(1),
                fold_clock: Mutex::new(FoldClock {
                    last: Instant::now(),
                    max_age: FOLD_MAX_AGE,
                }),
                series: RwLock::new(cache),
                stats_cache: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Closes the file once every other handle is gone, waiting at most `limit` for tasks
    /// that are just ending to drop theirs (a web connection's task drops its state a moment
    /// after the server reported it closed). Returns false, leaving the file to the last
    /// handle, when some are still held after `limit`. After true, the file can be opened
    /// again at once, e.g. by a restart in the same process.
    pub async fn close(self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Sets how long `raw_recent` may go without a fold (tests: `ZERO` folds at every commit
    /// with raw readings, `MAX` only by count).
    #[cfg(test)]
    fn set_fold_max_age(&self, max_age: Duration) {
        self.inner
            .fold_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .max_age = max_age;
    }

    /// Writes a batch in one durable transaction.
    pub fn write(&self, batch: &WriteBatch) -> Result<CommitReport, StoreError> {
        commit::write(&self.inner, batch)
    }

    /// Removes raw readings, rollups and cleared events older than their retention (relative
    /// to `now`), then enforces the byte budget (oldest raw first, then oldest outbox entries).
    pub fn apply_retention(&self, now: TimeNs) -> Result<RetentionReport, StoreError> {
        retention::apply(&self.inner, now)
    }

    /// The next unused anomaly event id: one more than the highest id ever written (1 on a
    /// new store), so ids stay unique even after retention removed the newest events.
    pub fn next_event_id(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let from_meta = meta.get(META_NEXT_EVENT_ID)?.map_or(1, |v| v.value());
        let events = txn.open_table(EVENTS)?;
        let from_table = events.last()?.map_or(1, |(id, _)| id.value() + 1);
        Ok(from_meta.max(from_table))
    }

    /// The last outbox sequence that `sink` acknowledged, if it ever did.
    pub fn cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        Ok(txn.open_table(CURSORS)?.get(sink)?.map(|v| v.value()))
    }

    /// Records that `sink` acknowledged every outbox entry up to `seq` (durably).
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_write()?;
        txn.open_table(CURSORS)?.insert(sink, seq)?;
        txn.commit()?;
        Ok(())
    }

    /// Size of the store file on disk (cheap: one `stat`).
    pub fn file_bytes(&self) -> Result<u64, StoreError> {
        file_bytes(&self.inner.config.path)
    }

    /// Sizes and table depths. `stored_bytes` walks every table's B-tree, so call this at the
    /// pace of a status page or a retention run, not per commit.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let series = txn.open_table(SERIES_BY_ID)?;
        let raw = txn.open_table(RAW)?;
        let recent = txn.open_table(RAW_RECENT)?;
        let rollups = txn.open_table(ROLLUPS)?;
        let events = txn.open_table(EVENTS)?;
        let outbox = txn.open_table(OUTBOX)?;
        let stored_bytes = [
            table_bytes(&txn.open_table(SERIES)?)?,
            table_bytes(&series)?,
            table_bytes(&raw)?,
            table_bytes(&recent)?,
            table_bytes(&rollups)?,
            table_bytes(&events)?,
            table_bytes(&outbox)?,
            table_bytes(&txn.open_table(OUTBOX_BY_TIME)?)?,
            table_bytes(&txn.open_table(CURSORS)?)?,
            table_bytes(&txn.open_table(META)?)?,
            table_bytes(&txn.open_table(event_acks::EVENT_ACKS)?)?,
        ]
        .iter()
        .sum();
        Ok(StoreStats {
            file_bytes: file_bytes(&self.inner.config.path)?,
            stored_bytes,
            max_bytes: self.inner.config.max_bytes,
            series: series.len()?,
            // A reading written again after its first copy was folded is in both tables
            // until the next fold; the count includes it twice meanwhile.
            raw_readings: raw.len()? + recent.len()?,
            rollups: rollups.len()?,
            events: events.len()?,
            outbox_entries: outbox.len()?,
        })
    }

    /// [`Store::stats`], reused while it is younger than `max_age`: measuring walks every
    /// table, and a status page on several tablets must not cost the gateway a core.
    pub fn recent_stats(&self, max_age: std::time::Duration) -> Result<StoreStats, StoreError> {
        if let Ok(cache) = self.inner.stats_cache.lock()
            && let Some((at, stats)) = cache.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(stats.clone());
        }
        let stats = self.stats()?;
        if let Ok(mut cache) = self.inner.stats_cache.lock() {
            *cache = Some((std::time::Instant::now(), stats.clone()));
        }
        Ok(stats)
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }
}

/// Live bytes of one table: its keys and values plus the B-tree's own overhead (redb's
/// stored + metadata bytes), the measure that `max_bytes` is compared with.
fn table_bytes(table: &impl ReadableTableMetadata) -> Result<u64, StoreError> {
    let stats = table.stats()?;
    Ok(stats.stored_bytes() + stats.metadata_bytes())
}

fn file_bytes(path: &std::path::Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| StoreError::FileSize {
            path: path.to_path_buf(),
            source,
        })
}
