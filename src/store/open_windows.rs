//! Checkpoints of the pipeline's open windows. A window's statistics are written in the same
//! commit as the raw readings that changed them, and deleted in the commit that holds the
//! rollup the window became, so after a crash (SIGKILL, power cut) the windows are restored
//! exactly as the last commit left them: every committed reading is in a stored rollup or in
//! a restored window, never in neither and never in both.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::commit::Resolver;
use super::tables::{self, OPEN_WINDOWS, SERIES_BY_ID, SeriesTime};
use super::{Store, StoreError, WriteBatch};
use crate::model::{FastMap, Rollup, SeriesKey};

/// Upserts the batch's checkpoints, then deletes those of the windows that closed. A closed
/// window never reopens, so applying all upserts before all deletes is right even when the
/// batch coalesces several pipeline outputs.
pub(super) fn write(
    txn: &WriteTransaction,
    series: &mut Resolver<'_, '_>,
    batch: &WriteBatch,
) -> Result<(), StoreError> {
    if batch.open_windows.is_empty() && batch.closed_windows.is_empty() {
        return Ok(());
    }
    // A batch that coalesces several pipeline outputs holds a checkpoint per output for a
    // window that kept changing: only the last one of each window is written.
    let mut latest: FastMap<SeriesTime, &Rollup> = FastMap::default();
    for w in &batch.open_windows {
        let id = series.resolve(&w.series)?.id;
        latest.insert(SeriesTime::new(id, w.start), w);
    }
    let mut latest: Vec<_> = latest.into_iter().collect();
    latest.sort_unstable_by_key(|(key, _)| *key);
    let mut table = txn.open_table(OPEN_WINDOWS)?;
    for (key, w) in latest {
        table.insert(key, &tables::encode_rollup(&w.stats, w.length_ns)[..])?;
    }
    for (key, start) in &batch.closed_windows {
        let id = series.resolve(key)?.id;
        table.remove(SeriesTime::new(id, *start))?;
    }
    Ok(())
}

impl Store {
    /// The checkpointed open windows with the source of their series, oldest first per series.
    pub fn open_windows(&self) -> Result<Vec<(Rollup, Arc<str>)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(OPEN_WINDOWS)?;
        let names = txn.open_table(SERIES_BY_ID)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, record) = item?;
            let key = key.value();
            let Some(name) = names.get(key.series)? else {
                continue;
            };
            let (sensor, field, source) = name.value();
            let (stats, length_ns) = tables::decode_rollup(record.value())?;
            out.push((
                Rollup {
                    series: SeriesKey::new(sensor, field),
                    start: key.time,
                    length_ns,
                    stats,
                },
                Arc::from(source),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Quality, Rollup, SeriesKey, Stats};
    use crate::store::tests::test_config;
    use crate::store::{Store, WriteBatch};

    fn window(sensor: &str, start: i64, values: &[f64]) -> Rollup {
        let mut stats = Stats::of(start, values[0], Quality::GOOD);
        for (i, v) in values.iter().enumerate().skip(1) {
            stats.push(start + i as i64, *v, Quality::GOOD);
        }
        Rollup {
            series: SeriesKey::new(sensor, "t"),
            start,
            length_ns: 60,
            stats,
        }
    }

    #[test]
    fn checkpoints_are_upserted_restored_and_deleted_when_their_window_closes() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        {
            let store = Store::open(&config).unwrap();
            store
                .write(&WriteBatch {
                    open_windows: vec![window("a", 0, &[1.0]), window("b", 0, &[5.0])],
                    ..WriteBatch::default()
                })
                .unwrap();
            store
                .write(&WriteBatch {
                    open_windows: vec![window("a", 0, &[1.0, 2.0]), window("a", 60, &[3.0])],
                    rollups: vec![window("b", 0, &[5.0])],
                    closed_windows: vec![(SeriesKey::new("b", "t"), 0)],
                    ..WriteBatch::default()
                })
                .unwrap();
        }
        let store = Store::open(&config).unwrap();
        let open = store.open_windows().unwrap();
        let got: Vec<_> = open
            .iter()
            .map(|(w, _)| (w.series.sensor.to_string(), w.start, w.stats.count))
            .collect();
        assert_eq!(got, vec![("a".into(), 0, 2), ("a".into(), 60, 1)]);
        assert_eq!(open[0].0.stats, window("a", 0, &[1.0, 2.0]).stats);
    }
}
