//! Retention: removal by age, then by the byte budget.
//!
//! Invariants:
//! - Age: raw readings older than `raw_retention_secs`, rollups older than
//!   `rollup_retention_secs` (by window start), events cleared more than
//!   `event_retention_secs` ago, and outbox entries whose time (rollup start, event change) is
//!   older than the rollup retention. An active event is never removed by age.
//! - Budget: while the live bytes (redb's stored + metadata bytes over every table) exceed
//!   `max_bytes`, the oldest raw readings go first, across all series; only when no raw reading
//!   is left do the oldest outbox entries go. Rollups, events and series are never removed
//!   for the budget: they are small, and they are what the status page and HQ are for.
//! - Outbox budget: while the outbox exceeds `outbox_max_bytes`, its oldest entries go
//!   (logged at ERROR; each sink counts the gap it finds behind its cursor as dropped).
//! - Everything removed is counted in the [`RetentionReport`]; budget removals are logged at
//!   WARN (raw) and ERROR (outbox: data HQ will never receive).
//! - An event's operator acknowledgement is removed with the event.
//! - All of it is one write transaction: a crash leaves the store as before or as after.

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::tables::{
    self, EVENTS, OUTBOX, OUTBOX_BY_TIME, RAW, RAW_RECENT, ROLLUPS, RawValue, SERIES_BY_ID,
    SeriesTime, TimeSeries,
};
use super::{Inner, RetentionReport, StoreError, file_bytes, table_bytes};
use crate::model::{NS_PER_SEC, TimeNs};

/// How much more than the measured excess a budget round removes, so that a store hovering at
/// its budget is trimmed once per retention run rather than by many tiny rounds.
const BUDGET_MARGIN: f64 = 1.1;
/// The least share of the stored raw time span one budget round removes, which bounds the
/// number of rounds (each one walks the raw B-tree to measure it) to about a hundred.
const MIN_ROUND_SHARE: f64 = 0.01;

pub(super) fn apply(inner: &Inner, now: TimeNs) -> Result<RetentionReport, StoreError> {
    let config = &inner.config;
    let mut report = RetentionReport::default();
    let txn = inner.db.begin_write()?;
    {
        let ids = series_ids(&txn)?;
        let mut raw = RawTables {
            by_series: txn.open_table(RAW)?,
            recent: txn.open_table(RAW_RECENT)?,
        };
        let raw_cutoff = now.saturating_sub(secs_to_ns(config.raw_retention_secs));
        report.raw_removed += raw.remove_before(&ids, raw_cutoff)?;

        let rollup_cutoff = now.saturating_sub(secs_to_ns(config.rollup_retention_secs));
        {
            let mut rollups = txn.open_table(ROLLUPS)?;
            for &id in &ids {
                report.rollups_removed += remove_before(&mut rollups, id, rollup_cutoff)?;
            }
        }

        report.events_removed = remove_cleared_events(
            &txn,
            now.saturating_sub(secs_to_ns(config.event_retention_secs)),
        )?;

        let mut outbox = txn.open_table(OUTBOX)?;
        let mut by_time = txn.open_table(OUTBOX_BY_TIME)?;
        let old: Vec<u64> = {
            let mut seqs = Vec::new();
            let mut extracted = by_time.extract_from_if(..(rollup_cutoff, 0u64), |_, _| true)?;
            for item in &mut extracted {
                seqs.push(item?.0.value().1);
            }
            extracted.close()?;
            seqs
        };
        for seq in old {
            if outbox.remove(seq)?.is_some() {
                report.outbox_removed += 1;
            }
        }

        if config.outbox_max_bytes > 0 {
            let removed = trim_outbox(&mut outbox, &mut by_time, config.outbox_max_bytes)?;
            if removed > 0 {
                report.outbox_removed += removed;
                tracing::error!(
                    removed,
                    outbox_max_bytes = config.outbox_max_bytes,
                    "outbox over its byte budget: removed the oldest entries, which will never \
                     be forwarded"
                );
            }
        }

        // The live bytes never exceed the file, so a file within the budget needs no walk.
        if config.max_bytes > 0 && file_bytes(&config.path)? > config.max_bytes {
            let fixed = stored_bytes_except(&txn)?;
            let outbox_bytes = table_bytes(&outbox)? + table_bytes(&by_time)?;
            let raw_allowance = config.max_bytes.saturating_sub(fixed + outbox_bytes);
            let raw_removed = trim_raw(&mut raw, &ids, raw_allowance)?;
            let outbox_allowance = config.max_bytes.saturating_sub(fixed + raw.bytes()?);
            let outbox_removed = trim_outbox(&mut outbox, &mut by_time, outbox_allowance)?;
            report.raw_removed += raw_removed;
            report.outbox_removed += outbox_removed;
            if raw_removed > 0 {
                tracing::warn!(
                    removed = raw_removed,
                    max_bytes = config.max_bytes,
                    "store over its byte budget: removed the oldest raw readings"
                );
            }
            if outbox_removed > 0 {
                tracing::error!(
                    removed = outbox_removed,
                    max_bytes = config.max_bytes,
                    "store over its byte budget with no raw readings left: removed the oldest \
                     outbox entries, which will never be forwarded"
                );
            }
        }
    }
    txn.commit()?;
    Ok(report)
}

fn secs_to_ns(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NS_PER_SEC)
}

fn series_ids(txn: &WriteTransaction) -> Result<Vec<u32>, StoreError> {
    let table = txn.open_table(SERIES_BY_ID)?;
    let mut ids = Vec::new();
    for item in table.iter()? {
        ids.push(item?.0.value());
    }
    Ok(ids)
}

/// Removes the entries of one series with a time before `cutoff`; returns how many.
fn remove_before<V: redb::Value + 'static>(
    table: &mut Table<'_, SeriesTime, V>,
    id: u32,
    cutoff: TimeNs,
) -> Result<u64, StoreError> {
    let start = SeriesTime::new(id, TimeNs::MIN);
    if cutoff == TimeNs::MIN {
        return Ok(0);
    }
    let mut removed = 0;
    let mut extracted = table.extract_from_if(start..SeriesTime::new(id, cutoff), |_, _| true)?;
    for item in &mut extracted {
        item?;
        removed += 1;
    }
    extracted.close()?;
    Ok(removed)
}

/// Removes events cleared before `cutoff`. An event that does not decode is kept (and was
/// already reported by the reader that met it): retention never guesses.
fn remove_cleared_events(txn: &WriteTransaction, cutoff: TimeNs) -> Result<u64, StoreError> {
    let mut table = txn.open_table(EVENTS)?;
    let mut removed = Vec::new();
    let mut extracted = table.extract_if(|_, record| {
        tables::decode_event(record)
            .ok()
            .and_then(|event| event.cleared_at)
            .is_some_and(|cleared| cleared < cutoff)
    })?;
    for item in &mut extracted {
        removed.push(item?.0.value());
    }
    extracted.close()?;
    // An acknowledgement goes with its event, in the same transaction.
    super::event_acks::remove(txn, &removed)?;
    Ok(removed.len() as u64)
}

/// Live bytes of the tables the budget never trims; measured once per retention run.
fn stored_bytes_except(txn: &WriteTransaction) -> Result<u64, StoreError> {
    Ok([
        table_bytes(&txn.open_table(tables::SERIES)?)?,
        table_bytes(&txn.open_table(SERIES_BY_ID)?)?,
        table_bytes(&txn.open_table(ROLLUPS)?)?,
        table_bytes(&txn.open_table(EVENTS)?)?,
        table_bytes(&txn.open_table(tables::CURSORS)?)?,
        table_bytes(&txn.open_table(tables::META)?)?,
        table_bytes(&txn.open_table(super::event_acks::EVENT_ACKS)?)?,
    ]
    .iter()
    .sum())
}

/// Removes the oldest raw readings across all series until both raw tables fit in
/// `allowance` bytes, in rounds: each round estimates from the excess which share of the
/// stored time span to cut (assuming readings spread evenly over time), cuts it from every
/// series, and measures again.
fn trim_raw(raw: &mut RawTables<'_>, ids: &[u32], allowance: u64) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let raw_bytes = raw.bytes()?;
        if raw_bytes <= allowance || raw.is_empty()? {
            return Ok(removed);
        }
        let Some((oldest, newest)) = raw.time_span(ids)? else {
            return Ok(removed);
        };
        let excess = (raw_bytes - allowance) as f64;
        let share = (excess * BUDGET_MARGIN / raw_bytes as f64).clamp(MIN_ROUND_SHARE, 1.0);
        let span = newest.saturating_sub(oldest) as f64;
        let cutoff = oldest
            .saturating_add((span * share) as i64)
            .saturating_add(1);
        removed += raw.remove_before(ids, cutoff)?;
    }
}

/// Removes the oldest outbox entries (by sequence) until the outbox and its time index fit
/// in `allowance` bytes, in rounds sized from the measured bytes per entry.
fn trim_outbox(
    outbox: &mut Table<'_, u64, &'static [u8]>,
    by_time: &mut Table<'_, (i64, u64), ()>,
    allowance: u64,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let bytes = table_bytes(outbox)? + table_bytes(by_time)?;
        let len = outbox.len()?;
        if bytes <= allowance || len == 0 {
            return Ok(removed);
        }
        let share = ((bytes - allowance) as f64 * BUDGET_MARGIN / bytes as f64).min(1.0);
        let count = ((len as f64 * share).ceil() as u64).max(1);
        for _ in 0..count {
            let Some((seq, time)) = outbox.pop_first()?.map(|(seq, record)| {
                let time = tables::decode_outbox(record.value())
                    .ok()
                    .map(|entry| tables::outbox_time(&entry));
                (seq.value(), time)
            }) else {
                break;
            };
            removed += 1;
            match time {
                Some(time) => {
                    by_time.remove((time, seq))?;
                }
                // An entry that does not decode has no known time: find its index entry.
                None => by_time.retain(|key, _| key.1 != seq)?,
            }
        }
    }
}

/// The two raw tables, which retention treats as one: `raw` (by series) and `raw_recent`
/// (by time, not folded yet).
struct RawTables<'txn> {
    by_series: Table<'txn, SeriesTime, RawValue>,
    recent: Table<'txn, TimeSeries, RawValue>,
}

impl RawTables<'_> {
    /// Removes every reading older than `cutoff`; returns how many.
    fn remove_before(&mut self, ids: &[u32], cutoff: TimeNs) -> Result<u64, StoreError> {
        let mut removed = 0;
        for &id in ids {
            removed += remove_before(&mut self.by_series, id, cutoff)?;
        }
        if cutoff > TimeNs::MIN {
            let mut extracted = self
                .recent
                .extract_from_if(..TimeSeries::new(cutoff, 0), |_, _| true)?;
            for item in &mut extracted {
                item?;
                removed += 1;
            }
            extracted.close()?;
        }
        Ok(removed)
    }

    fn bytes(&self) -> Result<u64, StoreError> {
        Ok(table_bytes(&self.by_series)? + table_bytes(&self.recent)?)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.by_series.is_empty()? && self.recent.is_empty()?)
    }

    /// The oldest and newest time over all raw readings.
    fn time_span(&self, ids: &[u32]) -> Result<Option<(TimeNs, TimeNs)>, StoreError> {
        let mut span: Option<(TimeNs, TimeNs)> = None;
        let mut widen = |first: TimeNs, last: TimeNs| {
            span = Some(match span {
                Some((lo, hi)) => (lo.min(first), hi.max(last)),
                None => (first, last),
            });
        };
        for &id in ids {
            let mut range = self
                .by_series
                .range(SeriesTime::new(id, TimeNs::MIN)..=SeriesTime::new(id, TimeNs::MAX))?;
            let Some(first) = range.next() else {
                continue;
            };
            let first = first?.0.value().time;
            let last = match range.next_back() {
                Some(last) => last?.0.value().time,
                None => first,
            };
            widen(first, last);
        }
        if let (Some(first), Some(last)) = (self.recent.first()?, self.recent.last()?) {
            widen(first.0.value().time, last.0.value().time);
        }
        Ok(span)
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::super::tests::{
        DAY, HOUR, T0, all_outbox, bytes_of, event, reading, rollup, test_config,
    };
    use super::super::{RetentionReport, Store, StoreConfig, WriteBatch};
    use super::*;
    use crate::model::{Quality, SeriesKey};
    use crate::store::EventFilter;

    #[test]
    fn outbox_sequences_do_not_restart_after_retention_empties_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        {
            let store = Store::open(&config).unwrap();
            store
                .write(&WriteBatch {
                    rollups: vec![rollup("a", "t", T0, &[1.0])],
                    ..WriteBatch::default()
                })
                .unwrap();
            let report = store.apply_retention(T0 + 400 * DAY).unwrap();
            assert_eq!((report.rollups_removed, report.outbox_removed), (1, 1));
            assert!(all_outbox(&store).is_empty());
        }
        let store = Store::open(&config).unwrap();
        store
            .write(&WriteBatch {
                rollups: vec![rollup("a", "t", T0 + 400 * DAY, &[1.0])],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(all_outbox(&store)[0].0, 2);
    }

    #[test]
    fn next_event_id_stays_above_events_removed_by_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&test_config(dir.path())).unwrap();
        assert_eq!(store.next_event_id().unwrap(), 1);
        store
            .write(&WriteBatch {
                events: vec![event(41, "a", T0, Some(T0 + HOUR))],
                ..WriteBatch::default()
            })
            .unwrap();
        let report = store.apply_retention(T0 + 400 * DAY).unwrap();
        assert_eq!(report.events_removed, 1);
        assert_eq!(store.next_event_id().unwrap(), 42);
    }

    #[test]
    fn an_acknowledgement_is_removed_with_its_event_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&test_config(dir.path())).unwrap();
        store
            .write(&WriteBatch {
                events: vec![event(1, "a", T0, Some(T0 + HOUR)), event(2, "a", T0, None)],
                ..WriteBatch::default()
            })
            .unwrap();
        let ack = crate::store::Acknowledgement {
            at: T0,
            note: "seen".into(),
        };
        store.acknowledge_event(1, &ack).unwrap();
        store.acknowledge_event(2, &ack).unwrap();
        let report = store.apply_retention(T0 + 400 * DAY).unwrap();
        assert_eq!(report.events_removed, 1);
        let left = store.event_acks([1, 2]).unwrap();
        assert_eq!(left.keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn retention_by_age_removes_old_records_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            raw_retention_secs: 3_600,
            rollup_retention_secs: 86_400,
            event_retention_secs: 2 * 86_400,
            ..test_config(dir.path())
        };
        let store = Store::open(&config).unwrap();
        let now = T0 + 30 * DAY;
        let key = SeriesKey::new("a", "t");
        store
            .write(&WriteBatch {
                raw: vec![
                    reading("a", "t", now - 2 * HOUR, 1.0),
                    reading("a", "t", now - HOUR - 1, 2.0),
                    reading("a", "t", now - HOUR / 2, 3.0),
                    reading("b", "t", now - 3 * HOUR, 4.0),
                ],
                rollups: vec![
                    rollup("a", "t", now - 2 * DAY, &[1.0]),
                    rollup("a", "t", now - HOUR, &[2.0]),
                ],
                events: vec![
                    event(1, "a", now - 4 * DAY, Some(now - 3 * DAY)),
                    event(2, "a", now - 2 * DAY, Some(now - DAY + HOUR)),
                    event(3, "a", now - 10 * DAY, None),
                ],
                ..WriteBatch::default()
            })
            .unwrap();
        let report = store.apply_retention(now).unwrap();
        assert_eq!(
            report,
            RetentionReport {
                raw_removed: 3,
                rollups_removed: 1,
                events_removed: 1,
                // The rollup of two days ago, event 1 (cleared 3 days ago), event 3 (raised 10
                // days ago); event 2's entry is dated by its clearing, within the day.
                outbox_removed: 3,
            }
        );
        assert_eq!(
            store.raw(&key, 0, i64::MAX, 10).unwrap(),
            vec![(now - HOUR / 2, 3.0, Quality::GOOD)]
        );
        let rollups = store.rollups("a", None, 0, i64::MAX).unwrap();
        assert_eq!(
            rollups.iter().map(|r| r.start).collect::<Vec<_>>(),
            vec![now - HOUR]
        );
        let ids: Vec<u64> = store
            .events(&EventFilter::default())
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![3, 2]);
        let left: Vec<u64> = all_outbox(&store).iter().map(|(seq, _)| *seq).collect();
        assert_eq!(left, vec![2, 4]);
        let txn = store.inner.db.begin_read().unwrap();
        assert_eq!(txn.open_table(OUTBOX_BY_TIME).unwrap().len().unwrap(), 2);
        drop(txn);
        assert_eq!(
            store.apply_retention(now).unwrap(),
            RetentionReport::default()
        );
    }

    #[test]
    fn byte_budget_removes_the_oldest_raw_first_then_the_oldest_outbox_entries() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = test_config(dir.path());
        let series: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
        {
            // Folding every 5,000 readings leaves readings in both raw tables.
            let store = Store::open_tuned(&roomy, 5_000).unwrap();
            for minute in 0..30i64 {
                let mut batch = WriteBatch::default();
                for (i, s) in series.iter().enumerate() {
                    for second in 0..60 {
                        let t = T0 + minute * 60 * NS_PER_SEC + second * NS_PER_SEC + i as i64;
                        batch.raw.push(reading(s, "t", t, second as f64));
                    }
                    batch
                        .rollups
                        .push(rollup(s, "t", T0 + minute * 60 * NS_PER_SEC, &[1.0]));
                }
                store.write(&batch).unwrap();
            }
        }
        // The "now" of these runs is the data's own time, so nothing is old by age.
        let now = T0 + HOUR;

        // A budget that fits everything except about a third of the raw readings.
        let (stored, raw_bytes, raw_total) = {
            let store = Store::open(&roomy).unwrap();
            let stats = store.stats().unwrap();
            (
                stats.stored_bytes,
                bytes_of(&store, RAW) + bytes_of(&store, RAW_RECENT),
                stats.raw_readings,
            )
        };
        let tight = StoreConfig {
            max_bytes: stored - raw_bytes / 3,
            ..roomy.clone()
        };
        let store = Store::open(&tight).unwrap();
        let report = store.apply_retention(now).unwrap();
        assert!(report.raw_removed > 0, "{report:?}");
        assert!(report.raw_removed < raw_total, "{report:?}");
        assert_eq!((report.rollups_removed, report.outbox_removed), (0, 0));
        let stats = store.stats().unwrap();
        assert!(stats.stored_bytes <= tight.max_bytes, "{stats:?}");
        assert_eq!(stats.raw_readings, raw_total - report.raw_removed);
        // Oldest first across series: every series lost its beginning and kept its end.
        let firsts: Vec<TimeNs> = series
            .iter()
            .map(|s| {
                store
                    .raw(&SeriesKey::new(s.as_str(), "t"), 0, i64::MAX, 1)
                    .unwrap()[0]
                    .0
            })
            .collect();
        let latest_first = *firsts.iter().max().unwrap();
        let earliest_first = *firsts.iter().min().unwrap();
        assert!(earliest_first > T0 + 60 * NS_PER_SEC);
        assert!(latest_first - earliest_first < 2 * 60 * NS_PER_SEC);
        let outbox_bytes = bytes_of(&store, OUTBOX) + bytes_of(&store, OUTBOX_BY_TIME);
        let outbox_len = all_outbox(&store).len() as u64;
        let raw_bytes = bytes_of(&store, RAW) + bytes_of(&store, RAW_RECENT);
        drop(store);

        // A budget that no raw reading fits in, and only about half of the outbox.
        let fixed = stats.stored_bytes - raw_bytes - outbox_bytes;
        let tighter = StoreConfig {
            max_bytes: fixed + outbox_bytes / 2,
            ..roomy
        };
        let store = Store::open(&tighter).unwrap();
        let report = store.apply_retention(now).unwrap();
        assert_eq!(report.raw_removed, stats.raw_readings, "{report:?}");
        assert!(
            report.outbox_removed > 0 && report.outbox_removed < outbox_len,
            "{report:?}"
        );
        assert_eq!(report.rollups_removed, 0);
        let after = store.stats().unwrap();
        assert!(after.stored_bytes <= tighter.max_bytes, "{after:?}");
        assert_eq!(after.raw_readings, 0);
        assert_eq!(after.rollups, stats.rollups);
        // The oldest entries went: what is left is the newest, contiguous up to the last one.
        let left: Vec<u64> = all_outbox(&store).iter().map(|(seq, _)| *seq).collect();
        assert_eq!(left.len() as u64, outbox_len - report.outbox_removed);
        assert_eq!(left.first().copied(), Some(report.outbox_removed + 1));
        assert_eq!(left.last().copied(), Some(outbox_len));
        // The time index lost exactly the same entries.
        let txn = store.inner.db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(OUTBOX_BY_TIME).unwrap().len().unwrap(),
            left.len() as u64
        );
    }
}
