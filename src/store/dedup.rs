//! Recognising redelivered readings. An MQTT broker redelivers a QoS 1 message that was never
//! acknowledged; when the daemon stopped between the commit that stored the message's
//! readings and the acknowledgement, the redelivered copy is already in the store. A raw
//! reading is identified by (series, event time), so such a copy is found with two point
//! lookups and dropped before it is counted a second time in a rollup.

use redb::ReadableDatabase;

use super::tables::{RAW, RAW_RECENT, SERIES, SeriesTime, TimeSeries};
use super::{Store, StoreError};
use crate::model::Reading;

impl Store {
    /// Removes from `readings` those whose (series, time) is already stored raw; returns how
    /// many were removed. Keeps everything when raw storage is off (nothing to compare with).
    pub fn retain_unstored(&self, readings: &mut Vec<Reading>) -> Result<usize, StoreError> {
        let before = readings.len();
        let txn = self.inner.db.begin_read()?;
        let ids = txn.open_table(SERIES)?;
        let raw = txn.open_table(RAW)?;
        let recent = txn.open_table(RAW_RECENT)?;
        let mut error = None;
        readings.retain(|r| {
            let stored = (|| -> Result<bool, StoreError> {
                let Some(id) = ids.get((&*r.series.sensor, &*r.series.field))? else {
                    return Ok(false);
                };
                let id = id.value();
                Ok(recent.get(TimeSeries::new(r.time, id))?.is_some()
                    || raw.get(SeriesTime::new(id, r.time))?.is_some())
            })();
            match stored {
                Ok(stored) => !stored,
                Err(e) => {
                    error.get_or_insert(e);
                    true
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(before - readings.len()),
        }
    }
}
