//! Reads of raw readings: one series, or several at once, from `raw` and `raw_recent` as one.

use redb::ReadableDatabase;

use super::tables::{RAW, RAW_RECENT, SERIES, SeriesTime, TimeSeries};
use super::{Store, StoreError};
use crate::model::{Quality, SeriesKey, TimeNs};

impl Store {
    /// Raw readings of one series with `from <= time < to`, oldest first, at most `limit`.
    /// See [`Store::raw_each`] for how the two raw tables are read.
    pub fn raw(
        &self,
        series: &SeriesKey,
        from: TimeNs,
        to: TimeNs,
        limit: usize,
    ) -> Result<Vec<(TimeNs, f64, Quality)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.raw_each(series, from, to, |time, value, quality| {
            out.push((time, value, quality));
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Hands every raw reading of one series with `from <= time < to` to `visit`, oldest
    /// first, until `visit` returns false. For readers that summarise a range (a chart's
    /// min/max buckets) without holding all of it in memory. See [`Store::raw_each_of`].
    pub fn raw_each(
        &self,
        series: &SeriesKey,
        from: TimeNs,
        to: TimeNs,
        mut visit: impl FnMut(TimeNs, f64, Quality) -> bool,
    ) -> Result<(), StoreError> {
        self.raw_each_of(std::slice::from_ref(series), from, to, |_, t, v, q| {
            visit(t, v, q)
        })
    }

    /// [`Store::raw_each`] for several series at once (a sensor's fields): `visit` gets the
    /// index of the series in `series`, then the reading; each series' readings come oldest
    /// first, one series after the other, until `visit` returns false.
    ///
    /// Reads `raw` for each series and scans `raw_recent` (the readings not folded yet, all
    /// series in time order) once over the time range; where both hold a time, the recent
    /// reading is the newer write and wins. Only the wanted series' readings from
    /// `raw_recent` are held in memory, at most `FOLD_RECORDS`.
    pub fn raw_each_of(
        &self,
        series: &[SeriesKey],
        from: TimeNs,
        to: TimeNs,
        mut visit: impl FnMut(usize, TimeNs, f64, Quality) -> bool,
    ) -> Result<(), StoreError> {
        if from >= to || series.is_empty() {
            return Ok(());
        }
        let txn = self.inner.db.begin_read()?;
        let ids = txn.open_table(SERIES)?;
        let mut wanted: Vec<Option<u32>> = Vec::with_capacity(series.len());
        for key in series {
            wanted.push(ids.get((&*key.sensor, &*key.field))?.map(|id| id.value()));
        }
        let mut recent: Vec<Vec<(TimeNs, f64, Quality)>> = vec![Vec::new(); series.len()];
        let table = txn.open_table(RAW_RECENT)?;
        for item in table.range(TimeSeries::new(from, 0)..TimeSeries::new(to, 0))? {
            let (key, value) = item?;
            let key = key.value();
            if let Some(i) = wanted.iter().position(|id| *id == Some(key.series)) {
                let value = value.value();
                recent[i].push((key.time, value.value, value.quality));
            }
        }
        let table = txn.open_table(RAW)?;
        for (i, (id, recent)) in wanted.into_iter().zip(recent).enumerate() {
            let Some(id) = id else { continue };
            let mut recent = recent.into_iter().peekable();
            for item in table.range(SeriesTime::new(id, from)..SeriesTime::new(id, to))? {
                let (key, value) = item?;
                let time = key.value().time;
                while let Some(r) = recent.next_if(|r| r.0 < time) {
                    if !visit(i, r.0, r.1, r.2) {
                        return Ok(());
                    }
                }
                if recent.peek().is_some_and(|r| r.0 == time) {
                    continue;
                }
                let value = value.value();
                if !visit(i, time, value.value, value.quality) {
                    return Ok(());
                }
            }
            for r in recent {
                if !visit(i, r.0, r.1, r.2) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
