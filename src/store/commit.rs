//! The write transaction: one [`WriteBatch`] becomes one durable commit.
//!
//! Invariants:
//! - Everything in a batch commits together or not at all: series, raw readings, rollups,
//!   events, their outbox entries and the next outbox sequence.
//! - A stored rollup is only ever merged into ([`Stats::merge`], stored first, then each
//!   incoming rollup in batch order), never overwritten, and each (series, start) touched by a
//!   batch gets exactly one outbox entry carrying the full merged rollup.
//! - The series cache is updated only after `commit` returned; until then a new series lives
//!   in the transaction alone.
//! - Commits use redb's default durability, `Immediate` (fsync before `commit` returns).
//! - Raw readings go to `raw_recent`; the commit that brings it to `FOLD_RECORDS`, or the
//!   first commit with raw readings `FOLD_MAX_AGE` after the last fold, also moves all of it
//!   into `raw`, so a reading is always in exactly one of the two tables, or in both with the
//!   `raw_recent` copy being the newer write.

use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::sync::{Arc, PoisonError};

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::tables::{
    self, EVENTS, META, META_NEXT_EVENT_ID, META_NEXT_OUTBOX_SEQ, OUTBOX, OUTBOX_BY_TIME, RAW,
    RAW_RECENT, ROLLUPS, RawValue, SERIES, SERIES_BY_ID, SeriesTime, TimeSeries,
};
use super::{CommitReport, Inner, OutboxEntry, SeriesCache, SeriesInfo, StoreError, WriteBatch};
use crate::model::{FastMap, SeriesKey, Stats, TimeNs};

pub(super) fn write(inner: &Inner, batch: &WriteBatch) -> Result<CommitReport, StoreError> {
    let mut report = CommitReport::default();
    if batch.is_empty() {
        return Ok(report);
    }
    let fold_by_age = inner
        .fold_clock
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .due();
    let mut folded = false;
    let txn = inner.db.begin_write()?;
    let added = {
        let cache = inner.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut series = Resolver::new(&txn, &cache)?;
        for (key, source) in &batch.new_series {
            series.register(key, source)?;
        }
        if inner.config.raw_retention_secs > 0 && !batch.raw.is_empty() {
            let fold = Fold {
                records: inner.fold_records,
                by_age: fold_by_age,
            };
            (report.raw_written, folded) = write_raw(&txn, &mut series, batch, fold)?;
        }
        let mut outbox = Vec::with_capacity(batch.rollups.len() + batch.events.len());
        super::sensor_tags::write(&txn, &batch.sensor_tags)?;
        write_rollups(&txn, &mut series, batch, &mut report, &mut outbox)?;
        write_events(&txn, batch, &mut report, &mut outbox)?;
        super::open_windows::write(&txn, &mut series, batch)?;
        report.outbox_appended = append_outbox(&txn, &outbox)?;
        series.added
    };
    txn.commit()?;
    if folded {
        inner
            .fold_clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last = std::time::Instant::now();
    }
    if !added.is_empty() {
        let mut cache = inner.series.write().unwrap_or_else(PoisonError::into_inner);
        cache.by_key.extend(added);
    }
    Ok(report)
}

/// When `write_raw` folds `raw_recent` into `raw`.
struct Fold {
    /// Once it holds this many readings.
    records: u64,
    /// Now, whatever it holds: the time bound has passed.
    by_age: bool,
}

/// Inserts the raw readings into `raw_recent`, sorted by its (time, series) key so that they
/// append to the end of its B-tree, then folds `raw_recent` into `raw` once it holds
/// `fold.records` readings or `fold.by_age`. A stable sort keeps batch order among equal keys,
/// so a repeated (series, time) keeps the reading that came last. Returns the readings written
/// and whether it folded.
fn write_raw(
    txn: &WriteTransaction,
    series: &mut Resolver<'_, '_>,
    batch: &WriteBatch,
    fold: Fold,
) -> Result<(u64, bool), StoreError> {
    let mut rows = Vec::with_capacity(batch.raw.len());
    for reading in &batch.raw {
        let id = series.resolve(&reading.series)?.id;
        rows.push((
            TimeSeries::new(reading.time, id),
            RawValue {
                value: reading.value,
                quality: reading.quality,
            },
        ));
    }
    rows.sort_by_key(|(key, _)| *key);
    let rows = last_of_each_key(rows);
    let mut recent = txn.open_table(RAW_RECENT)?;
    let mut late = Vec::new();
    append_run(&mut recent, Bound::Unbounded, &rows, &mut late)?;
    for (key, value) in &late {
        recent.insert(key, value)?;
    }
    let pending = recent.len()?;
    drop(recent);
    let folding = pending >= fold.records || fold.by_age;
    if folding {
        fold_recent(txn, fold_chunk(fold.records))?;
    }
    Ok((rows.len() as u64, folding))
}

/// Moves every reading of `raw_recent` into `raw` (a newer reading replaces a stored one with
/// the same key) and empties `raw_recent` by deleting the table, which frees its pages
/// wholesale instead of rewriting them entry by entry.
///
/// Memory stays bounded by `chunk` rows (except for one series holding more by itself): the
/// series are cut into ranges of ids that hold at most `chunk` readings together, counted in a
/// first pass, and each range is read, sorted and appended in its own pass. Scanning the table
/// again per range costs less than the alternative, folding more often: what a fold costs is
/// mostly one B-tree splice per series, so the more readings each series brings per fold, the
/// cheaper each reading.
pub(super) fn fold_recent(txn: &WriteTransaction, chunk: usize) -> Result<u64, StoreError> {
    let chunk = chunk.max(1);
    let recent = txn.open_table(RAW_RECENT)?;
    let mut counts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for item in recent.iter()? {
        let (key, _) = item?;
        *counts.entry(key.value().series).or_default() += 1;
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut held = 0;
    for (&id, &n) in &counts {
        match ranges.last_mut() {
            Some(range) if held + n <= chunk => {
                range.1 = id;
                held += n;
            }
            _ => {
                ranges.push((id, id));
                held = n;
            }
        }
    }
    let mut raw = txn.open_table(RAW)?;
    let mut rows = Vec::with_capacity(chunk.min(counts.values().sum()));
    let mut late = Vec::new();
    let mut moved = 0;
    for (first, last) in ranges {
        for item in recent.iter()? {
            let (key, value) = item?;
            let key = key.value();
            if (first..=last).contains(&key.series) {
                rows.push((SeriesTime::new(key.series, key.time), value.value()));
                // One series over the limit: its rows come in time order, so they can go
                // in pieces.
                if rows.len() >= chunk && first == last {
                    moved += append_series_runs(&mut raw, &mut rows, &mut late)?;
                }
            }
        }
        moved += append_series_runs(&mut raw, &mut rows, &mut late)?;
    }
    for (key, value) in &late {
        raw.insert(key, value)?;
    }
    drop((recent, raw));
    txn.delete_table(RAW_RECENT)?;
    txn.open_table(RAW_RECENT)?;
    Ok(moved)
}

/// Sorts `rows` by (series, time), appends each series' run at the end of that series in
/// `raw`, and empties `rows`. Returns how many rows there were.
fn append_series_runs(
    raw: &mut Table<'_, SeriesTime, RawValue>,
    rows: &mut Vec<(SeriesTime, RawValue)>,
    late: &mut Vec<(SeriesTime, RawValue)>,
) -> Result<u64, StoreError> {
    rows.sort_unstable_by_key(|(key, _)| *key);
    for run in rows.chunk_by(|a, b| a.0.series == b.0.series) {
        let end_of_series = SeriesTime::new(run[0].0.series, TimeNs::MAX);
        append_run(raw, Bound::Included(end_of_series), run, late)?;
    }
    let n = rows.len() as u64;
    rows.clear();
    Ok(n)
}

/// Rows a fold holds in memory at once: a quarter of what triggers it.
fn fold_chunk(fold_records: u64) -> usize {
    usize::try_from(fold_records / 4)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Keeps, of each run of equal keys in sorted rows, the last row.
fn last_of_each_key<K: PartialEq, V>(rows: Vec<(K, V)>) -> Vec<(K, V)> {
    let mut out: Vec<(K, V)> = Vec::with_capacity(rows.len());
    for row in rows {
        match out.last_mut() {
            Some(last) if last.0 == row.0 => *last = row,
            _ => out.push(row),
        }
    }
    out
}

/// Appends `rows` (ascending, unique keys) through a redb cursor at the gap after the greatest
/// key `<= gap`. A cursor splices a run of ordered inserts into the leaf pages in one go, which
/// is several times cheaper than one `insert` (a descent and a leaf rewrite) per row. Rows that
/// do not sort after the entries already there (late readings, rewrites of a stored time) are
/// left in `late` for the caller to `insert` after the cursor is closed.
fn append_run<K>(
    table: &mut Table<'_, K, RawValue>,
    gap: Bound<K>,
    rows: &[(K, RawValue)],
    late: &mut Vec<(K, RawValue)>,
) -> Result<(), StoreError>
where
    K: redb::Key + Copy + 'static + for<'a> redb::Value<SelfType<'a> = K>,
{
    let mut cursor = table.upper_bound_mut(gap)?;
    for (key, value) in rows {
        match cursor.insert_before(key, value) {
            Ok(()) => {}
            Err(redb::CursorError::UnorderedKey) => late.push((*key, *value)),
            Err(other) => return Err(other.into()),
        }
    }
    cursor.close()?;
    Ok(())
}

/// A rollup being merged within this batch, before it is written.
struct PendingRollup {
    series: SeriesKey,
    source: Arc<str>,
    length_ns: i64,
    stats: Stats,
}

fn write_rollups(
    txn: &WriteTransaction,
    series: &mut Resolver<'_, '_>,
    batch: &WriteBatch,
    report: &mut CommitReport,
    outbox: &mut Vec<OutboxEntry>,
) -> Result<(), StoreError> {
    if batch.rollups.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(ROLLUPS)?;
    let mut tags = super::sensor_tags::Lookup::new(txn)?;
    let mut order = Vec::new();
    let mut pending: FastMap<SeriesTime, PendingRollup> = FastMap::default();
    for rollup in &batch.rollups {
        let info = series.resolve(&rollup.series)?;
        let key = SeriesTime::new(info.id, rollup.start);
        match pending.entry(key) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                p.stats.merge(&rollup.stats);
                p.length_ns = rollup.length_ns;
                report.rollups_merged += 1;
            }
            Entry::Vacant(e) => {
                let stats = match table.get(key)? {
                    Some(stored) => {
                        let (mut stats, _) = tables::decode_rollup(stored.value())?;
                        stats.merge(&rollup.stats);
                        report.rollups_merged += 1;
                        stats
                    }
                    None => {
                        report.rollups_inserted += 1;
                        rollup.stats
                    }
                };
                e.insert(PendingRollup {
                    series: rollup.series.clone(),
                    source: info.source,
                    length_ns: rollup.length_ns,
                    stats,
                });
                order.push(key);
            }
        }
    }
    for key in order {
        let Some(p) = pending.remove(&key) else {
            continue;
        };
        table.insert(key, &tables::encode_rollup(&p.stats, p.length_ns)[..])?;
        outbox.push(OutboxEntry::Rollup {
            sensor: p.series.sensor.to_string(),
            field: p.series.field.to_string(),
            source: p.source.to_string(),
            start: key.time,
            length_ns: p.length_ns,
            stats: p.stats,
            tags: tags.of(&p.series.sensor)?,
        });
    }
    Ok(())
}

/// Upserts events by id and queues every change; also raises the next free event id.
fn write_events(
    txn: &WriteTransaction,
    batch: &WriteBatch,
    report: &mut CommitReport,
    outbox: &mut Vec<OutboxEntry>,
) -> Result<(), StoreError> {
    if batch.events.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(EVENTS)?;
    let mut next_id = 0;
    for event in &batch.events {
        let record = tables::encode_json("events", event)?;
        table.insert(event.id, record.as_slice())?;
        next_id = next_id.max(event.id.saturating_add(1));
        outbox.push(OutboxEntry::Event(event.clone()));
        report.events_written += 1;
    }
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(META_NEXT_EVENT_ID)?.map_or(1, |v| v.value());
    if next_id > stored {
        meta.insert(META_NEXT_EVENT_ID, next_id)?;
    }
    Ok(())
}

/// Appends entries under consecutive sequences from `meta` and advances it.
fn append_outbox(txn: &WriteTransaction, entries: &[OutboxEntry]) -> Result<u64, StoreError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut meta = txn.open_table(META)?;
    let mut seq = meta.get(META_NEXT_OUTBOX_SEQ)?.map_or(1, |v| v.value());
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut by_time = txn.open_table(OUTBOX_BY_TIME)?;
    for entry in entries {
        let record = tables::encode_json("outbox", entry)?;
        outbox.insert(seq, record.as_slice())?;
        by_time.insert((tables::outbox_time(entry), seq), ())?;
        seq += 1;
    }
    meta.insert(META_NEXT_OUTBOX_SEQ, seq)?;
    Ok(entries.len() as u64)
}

/// Resolves series keys to ids inside one write transaction, registering unknown series.
pub(super) struct Resolver<'txn, 'c> {
    cache: &'c SeriesCache,
    series: Table<'txn, (&'static str, &'static str), u32>,
    by_id: Table<'txn, u32, (&'static str, &'static str, &'static str)>,
    /// Series this transaction registered or changed (and series committed by another
    /// transaction after the cache was last updated); merged into the cache after commit.
    added: FastMap<SeriesKey, SeriesInfo>,
    /// The id the next new series gets; read from the table on first need.
    next_id: Option<u32>,
    /// The source of a series resolved without one, made once rather than per reading.
    no_source: Arc<str>,
}

impl<'txn, 'c> Resolver<'txn, 'c> {
    fn new(txn: &'txn WriteTransaction, cache: &'c SeriesCache) -> Result<Self, StoreError> {
        Ok(Resolver {
            cache,
            series: txn.open_table(SERIES)?,
            by_id: txn.open_table(SERIES_BY_ID)?,
            added: FastMap::default(),
            next_id: None,
            no_source: Arc::from(""),
        })
    }

    /// Registers a series announced by the pipeline with its source. A series first seen
    /// without a source (source "") takes the source once one is announced.
    fn register(&mut self, key: &SeriesKey, source: &Arc<str>) -> Result<(), StoreError> {
        let info = self.resolve_with(key, source)?;
        if info.source.is_empty() && !source.is_empty() {
            self.by_id
                .insert(info.id, (&*key.sensor, &*key.field, &**source))?;
            self.added.insert(
                key.clone(),
                SeriesInfo {
                    id: info.id,
                    source: source.clone(),
                },
            );
        }
        Ok(())
    }

    /// The id and source of a series, registering it with source "" if it is unknown.
    pub(super) fn resolve(&mut self, key: &SeriesKey) -> Result<SeriesInfo, StoreError> {
        if let Some(info) = self.added.get(key).or_else(|| self.cache.by_key.get(key)) {
            return Ok(info.clone());
        }
        let no_source = self.no_source.clone();
        self.resolve_with(key, &no_source)
    }

    /// Looks in this transaction's own changes first: they are newer than the cache.
    fn resolve_with(
        &mut self,
        key: &SeriesKey,
        source: &Arc<str>,
    ) -> Result<SeriesInfo, StoreError> {
        if let Some(info) = self.added.get(key).or_else(|| self.cache.by_key.get(key)) {
            return Ok(info.clone());
        }
        // Not cached: another transaction may have committed it since the cache was read.
        let stored = self
            .series
            .get((&*key.sensor, &*key.field))?
            .map(|id| id.value());
        let info = match stored {
            Some(id) => {
                let source = match self.by_id.get(id)? {
                    Some(names) => Arc::from(names.value().2),
                    None => Arc::from(""),
                };
                SeriesInfo { id, source }
            }
            None => {
                let id = match self.next_id {
                    Some(id) => id,
                    None => self.by_id.last()?.map_or(0, |(id, _)| id.value() + 1),
                };
                self.next_id = Some(id + 1);
                self.series.insert((&*key.sensor, &*key.field), id)?;
                self.by_id
                    .insert(id, (&*key.sensor, &*key.field, &**source))?;
                SeriesInfo {
                    id,
                    source: source.clone(),
                }
            }
        };
        self.added.insert(key.clone(), info.clone());
        Ok(info)
    }
}
