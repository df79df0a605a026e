//! What the forwarders need from the store: cursors advanced together with dead letters and
//! drop counts in one transaction, the backlog behind a cursor, and trimming of outbox entries
//! every sink has acknowledged.
//!
//! Invariants:
//! - A cursor only moves forward, and only in the same transaction that records the dead
//!   letters and dropped entries of the range it moves over: after a crash the counters and
//!   the cursor agree.
//! - Outbox sequences are contiguous when written; a gap after a sink's cursor can only come
//!   from retention (age or byte budget) and is what that sink lost. The forwarder counts it.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{self, CURSORS, META, META_NEXT_OUTBOX_SEQ, OUTBOX, OUTBOX_BY_TIME};
use super::{Store, StoreError};
use crate::model::TimeNs;

/// How many backlog entries [`Store::backlog`] counts one by one before it estimates.
const BACKLOG_WALK: u64 = 10_000;
/// How many outbox entries [`Store::event_backlog`] looks at before it estimates: more than
/// [`BACKLOG_WALK`], since telling an event from a rollup needs no decoding.
const EVENT_BACKLOG_WALK: u64 = 100_000;

/// (sink, id) → serde_json of [`DeadLetter`].
const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// (sink, counter name) → value: `dropped`, `dead_letters`, `dead_letter_next_id`.
const SINK_COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("sink_counters");

/// A point the sink refused for good (InfluxDB answered 4xx for it), kept with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Outbox sequence of the batch's last entry (the lines of one batch share it).
    pub seq: u64,
    /// The line protocol that was refused (or the batch's first line when InfluxDB did not
    /// say which).
    pub line: String,
    /// InfluxDB's own words.
    pub reason: String,
    /// Gateway clock when it was refused.
    pub time: TimeNs,
}

/// Durable per-sink counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounters {
    /// Last acknowledged outbox sequence (0: nothing yet).
    pub cursor: u64,
    /// Outbox entries removed by retention before this sink had them: lost for it.
    pub dropped: u64,
    pub dead_letters: u64,
}

/// What waits behind a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub points: u64,
    /// Bytes of the stored entries (JSON), an estimate of the work left.
    pub bytes: u64,
    /// Time of the oldest waiting entry (rollup window start or event change).
    pub oldest: Option<TimeNs>,
}

/// Whether a stored outbox record is an anomaly event. [`OutboxEntry`] is tagged internally
/// by `type`, and serde writes the tag first, so the record starts with it.
///
/// [`OutboxEntry`]: crate::store::OutboxEntry
fn is_event_record(record: &[u8]) -> bool {
    record.starts_with(br#"{"type":"event""#)
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(SINK_COUNTERS)?;
    Ok(())
}

impl Store {
    /// Moves `sink`'s cursor to `up_to` (never backwards) and records `dropped` lost entries
    /// and the dead letters of the acknowledged range, in one durable transaction.
    pub fn acknowledge(
        &self,
        sink: &str,
        up_to: u64,
        dropped: u64,
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_write()?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            let current = cursors.get(sink)?.map_or(0, |v| v.value());
            cursors.insert(sink, current.max(up_to))?;
            let mut counters = txn.open_table(SINK_COUNTERS)?;
            let mut bump = |name: &str, by: u64| -> Result<u64, StoreError> {
                let old = counters.get((sink, name))?.map_or(0, |v| v.value());
                counters.insert((sink, name), old + by)?;
                Ok(old)
            };
            if dropped > 0 {
                bump("dropped", dropped)?;
            }
            if !dead.is_empty() {
                bump("dead_letters", dead.len() as u64)?;
                let first_id = bump("dead_letter_next_id", dead.len() as u64)?;
                let mut letters = txn.open_table(DEAD_LETTERS)?;
                for (i, letter) in dead.iter().enumerate() {
                    let bytes = tables::encode_json("dead_letters", letter)?;
                    letters.insert((sink, first_id + i as u64), bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Like [`Store::outbox_after`], plus the sequence of the newest entry ever written, both
    /// from one snapshot: an empty page with a head beyond `after` then really means that
    /// retention removed those entries (separate reads could see a commit in between).
    pub fn outbox_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, crate::store::OutboxEntry)>, u64), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let head = txn
            .open_table(META)?
            .get(META_NEXT_OUTBOX_SEQ)?
            .map_or(1, |v| v.value())
            .saturating_sub(1);
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        if limit > 0 {
            for item in table.range((after.saturating_add(1))..)? {
                let (seq, record) = item?;
                match tables::decode_outbox(record.value()) {
                    Ok(entry) => out.push((seq.value(), entry)),
                    Err(error) => {
                        tracing::error!(seq = seq.value(), %error, "skipping an undecodable outbox entry");
                    }
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok((out, head))
    }

    /// The sequence of the newest outbox entry ever written (0 before the first).
    pub fn outbox_head(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let next = txn
            .open_table(META)?
            .get(META_NEXT_OUTBOX_SEQ)?
            .map_or(1, |v| v.value());
        Ok(next.saturating_sub(1))
    }

    pub fn sink_counters(&self, sink: &str) -> Result<SinkCounters, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let counters = txn.open_table(SINK_COUNTERS)?;
        let get = |name: &str| -> Result<u64, StoreError> {
            Ok(counters.get((sink, name))?.map_or(0, |v| v.value()))
        };
        Ok(SinkCounters {
            cursor: txn.open_table(CURSORS)?.get(sink)?.map_or(0, |v| v.value()),
            dropped: get("dropped")?,
            dead_letters: get("dead_letters")?,
        })
    }

    /// The dead letters of `sink`, newest first, at most `limit`.
    pub fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for item in table.range((sink, 0u64)..=(sink, u64::MAX))?.rev() {
            let (_, value) = item?;
            match serde_json::from_slice(value.value()) {
                Ok(letter) => out.push(letter),
                Err(e) => tracing::error!(sink, error = %e, "skipping an undecodable dead letter"),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The entries after `after`: how many, their stored bytes, and the time of the oldest.
    /// Up to [`BACKLOG_WALK`] entries are counted one by one; beyond that the count is the
    /// sequence distance to the head and the bytes are extrapolated from the walked entries,
    /// so that a status refresh does not read a backlog of gigabytes every few seconds.
    pub fn backlog(&self, after: u64) -> Result<Backlog, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut backlog = Backlog::default();
        let mut walked_all = true;
        for item in table.range((after.saturating_add(1))..)? {
            if backlog.points >= BACKLOG_WALK {
                walked_all = false;
                break;
            }
            let (_, value) = item?;
            if backlog.oldest.is_none() {
                backlog.oldest = tables::decode_outbox(value.value())
                    .ok()
                    .map(|e| tables::outbox_time(&e));
            }
            backlog.points += 1;
            backlog.bytes += value.value().len() as u64;
        }
        if !walked_all {
            let head = txn
                .open_table(META)?
                .get(META_NEXT_OUTBOX_SEQ)?
                .map_or(1, |v| v.value())
                .saturating_sub(1);
            let points = head.saturating_sub(after).max(backlog.points);
            backlog.bytes = backlog.bytes / backlog.points.max(1) * points;
            backlog.points = points;
        }
        Ok(backlog)
    }

    /// The anomaly events after `after`: what an alert sink still has to deliver (rollups
    /// are not counted: alert sinks skip them). Up to [`EVENT_BACKLOG_WALK`] entries are
    /// looked at; events are told from rollups by their record's tag, without decoding (only
    /// the oldest event is decoded, for its time). Beyond the walk, the count is extrapolated
    /// from the share of events among the walked entries.
    pub fn event_backlog(&self, after: u64) -> Result<Backlog, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut backlog = Backlog::default();
        let mut walked = 0u64;
        let mut last = after;
        let mut walked_all = true;
        for item in table.range((after.saturating_add(1))..)? {
            if walked >= EVENT_BACKLOG_WALK {
                walked_all = false;
                break;
            }
            let (seq, value) = item?;
            walked += 1;
            last = seq.value();
            if !is_event_record(value.value()) {
                continue;
            }
            if backlog.oldest.is_none() {
                backlog.oldest = tables::decode_outbox(value.value())
                    .ok()
                    .map(|e| tables::outbox_time(&e));
            }
            backlog.points += 1;
            backlog.bytes += value.value().len() as u64;
        }
        if !walked_all && backlog.points > 0 {
            let head = txn
                .open_table(META)?
                .get(META_NEXT_OUTBOX_SEQ)?
                .map_or(1, |v| v.value())
                .saturating_sub(1);
            let share = backlog.points as f64 / walked as f64;
            let beyond = (head.saturating_sub(last) as f64 * share) as u64;
            backlog.bytes += backlog.bytes / backlog.points * beyond;
            backlog.points += beyond;
        }
        Ok(backlog)
    }

    /// Removes the outbox entries up to `up_to` (inclusive): every sink has them. Returns how
    /// many were removed. Entries are not decoded: the time index is filtered by sequence,
    /// which keeps this short, since acknowledgements wait for it.
    pub fn trim_acknowledged(&self, up_to: u64) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_write()?;
        let mut removed = 0;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut extracted = outbox.extract_from_if(..=up_to, |_, _| true)?;
            for item in &mut extracted {
                item?;
                removed += 1;
            }
            extracted.close()?;
            if removed > 0 {
                txn.open_table(OUTBOX_BY_TIME)?
                    .retain(|key, _| key.1 > up_to)?;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::model::{Quality, Rollup, SeriesKey, Stats};
    use crate::store::WriteBatch;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&StoreConfig {
            path: dir.join("s.redb"),
            ..StoreConfig::default()
        })
        .unwrap()
    }

    fn rollups(n: i64) -> WriteBatch {
        WriteBatch {
            rollups: (0..n)
                .map(|i| Rollup {
                    series: SeriesKey::new("s", "f"),
                    start: 1_767_225_600_000_000_000 + i * 60_000_000_000,
                    length_ns: 60_000_000_000,
                    stats: Stats::of(0, 1.0, Quality::GOOD),
                })
                .collect(),
            ..WriteBatch::default()
        }
    }

    #[test]
    fn trimming_removes_acknowledged_entries_and_their_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.write(&rollups(5)).unwrap();
        assert_eq!(s.outbox_head().unwrap(), 5);
        assert_eq!(s.trim_acknowledged(3).unwrap(), 3);
        let left: Vec<u64> = s
            .outbox_after(0, 100)
            .unwrap()
            .iter()
            .map(|(q, _)| *q)
            .collect();
        assert_eq!(left, vec![4, 5]);
        let txn = s.inner.db.begin_read().unwrap();
        let index = txn.open_table(OUTBOX_BY_TIME).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&index).unwrap(), 2);
    }

    #[test]
    fn acknowledging_moves_the_cursor_forward_only_and_keeps_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let letter = DeadLetter {
            seq: 4,
            line: "x".into(),
            reason: "bad".into(),
            time: 1,
        };
        s.acknowledge("hq", 4, 2, std::slice::from_ref(&letter))
            .unwrap();
        s.acknowledge("hq", 3, 0, &[]).unwrap();
        let c = s.sink_counters("hq").unwrap();
        assert_eq!((c.cursor, c.dropped, c.dead_letters), (4, 2, 1));
        assert_eq!(s.dead_letters("hq", 10).unwrap(), vec![letter]);
    }

    #[test]
    fn the_event_backlog_counts_events_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let event = crate::model::AnomalyEvent {
            id: 1,
            sensor: "s".into(),
            field: "f".into(),
            rule: "r".into(),
            kind: "limit".into(),
            severity: crate::model::Severity::Warning,
            raised_at: 1_767_225_600_000_000_000,
            cleared_at: None,
            value: 1.0,
            score: 1.0,
            peak_score: 1.0,
            peak_value: 1.0,
            peak_at: 1_767_225_600_000_000_000,
            message: "m".into(),
        };
        let record =
            tables::encode_json("outbox", &crate::store::OutboxEntry::Event(event.clone()))
                .unwrap();
        assert!(is_event_record(&record));
        let mut batch = rollups(3);
        batch.events.push(event);
        s.write(&batch).unwrap();
        let backlog = s.event_backlog(0).unwrap();
        assert_eq!(backlog.points, 1);
        assert_eq!(backlog.oldest, Some(1_767_225_600_000_000_000));
        assert_eq!(s.event_backlog(4).unwrap(), Backlog::default());
    }

    #[test]
    fn a_page_and_its_head_come_from_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.write(&rollups(3)).unwrap();
        let (page, head) = s.outbox_page(1, 10).unwrap();
        assert_eq!((page.len(), head), (2, 3));
        assert_eq!(s.backlog(1).unwrap().points, 2);
    }
}
