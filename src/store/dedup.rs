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

#[cfg(test)]
mod tests {
    use crate::model::NS_PER_SEC;
    use crate::store::tests::{reading, test_config};
    use crate::store::{Store, WriteBatch};

    #[test]
    fn readings_already_stored_raw_are_removed_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&test_config(dir.path())).unwrap();
        let t0 = crate::model::now_ns();
        let stored: Vec<_> = (0..3)
            .map(|i| reading("p-1", "temperature", t0 + i * NS_PER_SEC, i as f64))
            .collect();
        store
            .write(&WriteBatch {
                new_series: vec![(stored[0].series.clone(), "mqtt".into())],
                raw: stored.clone(),
                ..WriteBatch::default()
            })
            .unwrap();
        let mut incoming = vec![
            stored[1].clone(),
            reading("p-1", "temperature", t0 + 10 * NS_PER_SEC, 9.0),
            reading("p-2", "temperature", t0, 1.0),
            stored[2].clone(),
        ];
        assert_eq!(store.retain_unstored(&mut incoming).unwrap(), 2);
        assert_eq!(incoming.len(), 2);
        assert_eq!(incoming[0].time, t0 + 10 * NS_PER_SEC);
        assert_eq!(&*incoming[1].series.sensor, "p-2");
    }
}
