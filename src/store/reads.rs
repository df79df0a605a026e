//! The store's queries for the web, the API and the forwarder: events, rollups, the series
//! dictionary and the outbox. Each opens its own read transaction, so none blocks the writer.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::tables::{self, EVENTS, OUTBOX, ROLLUPS, SERIES, SERIES_BY_ID, SeriesTime};
use super::{EventFilter, OutboxEntry, Store, StoreError};
use crate::model::{AnomalyEvent, Rollup, SeriesKey, TimeNs};

impl Store {
    /// Anomaly events, newest first. A record that does not decode is logged and skipped, so
    /// that one bad record cannot hide all the others.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<AnomalyEvent>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in table.iter()?.rev() {
            let (id, record) = item?;
            let event = match tables::decode_event(record.value()) {
                Ok(event) => event,
                Err(error) => {
                    tracing::error!(id = id.value(), %error, "skipping an undecodable event");
                    continue;
                }
            };
            if !filter.matches(&event) {
                continue;
            }
            out.push(event);
            if filter.limit != 0 && out.len() >= filter.limit {
                break;
            }
        }
        Ok(out)
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
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let txn = self.inner.db.begin_read()?;
        let series = txn.open_table(SERIES)?;
        let mut ids: Vec<(SeriesKey, u32)> = Vec::new();
        let sensor_name: Arc<str> = sensor.into();
        match field {
            Some(field) => {
                if let Some(id) = series.get((sensor, field))? {
                    ids.push((SeriesKey::new(sensor_name, field), id.value()));
                }
            }
            None => {
                // (sensor, "") is the smallest key of this sensor; its fields follow in order.
                for item in series.range((sensor, "")..)? {
                    let (key, id) = item?;
                    let (s, f) = key.value();
                    if s != sensor {
                        break;
                    }
                    ids.push((SeriesKey::new(sensor_name.clone(), f), id.value()));
                }
            }
        }
        let table = txn.open_table(ROLLUPS)?;
        for (key, id) in ids {
            for item in table.range(SeriesTime::new(id, from)..SeriesTime::new(id, to))? {
                let (k, record) = item?;
                let (stats, length_ns) = tables::decode_rollup(record.value())?;
                out.push(Rollup {
                    series: key.clone(),
                    start: k.value().time,
                    length_ns,
                    stats,
                });
            }
        }
        Ok(out)
    }

    /// The fields stored for one sensor, in name order (cheap: one range of `series`).
    pub fn fields(&self, sensor: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let series = txn.open_table(SERIES)?;
        let mut out = Vec::new();
        // (sensor, "") is the smallest key of this sensor; its fields follow in order.
        for item in series.range((sensor, "")..)? {
            let (key, _) = item?;
            let (s, f) = key.value();
            if s != sensor {
                break;
            }
            out.push(f.to_string());
        }
        Ok(out)
    }

    /// Every known series with its source.
    pub fn series(&self) -> Result<Vec<(SeriesKey, String)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SERIES_BY_ID)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, names) = item?;
            let (sensor, field, source) = names.value();
            out.push((SeriesKey::new(sensor, field), source.to_string()));
        }
        Ok(out)
    }

    /// Outbox entries with a sequence number above `after`, oldest first, at most `limit`.
    ///
    /// An entry that does not decode is logged at ERROR and skipped rather than returned as an
    /// error: an error would stop the forwarder at that entry forever.
    pub fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        Ok(self.outbox_page(after, limit)?.0)
    }

    /// Number of entries in the outbox (cheap: redb keeps table lengths).
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        Ok(txn.open_table(OUTBOX)?.len()?)
    }
}
