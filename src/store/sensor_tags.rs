//! Sensor tags: the source's static tags and those captured from an MQTT topic, stored per
//! sensor when announced and copied into each rollup's outbox entry, so that a forwarded
//! rollup carries the tags its sensor had when the rollup was written.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::tables::{SENSOR_TAGS, decode_json, encode_json};
use super::{Store, StoreError};
use crate::model::Tags;

/// Stores the announced tags (the newest per sensor wins).
pub(super) fn write(
    txn: &WriteTransaction,
    announced: &[(String, Tags)],
) -> Result<(), StoreError> {
    if announced.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(SENSOR_TAGS)?;
    for (sensor, tags) in announced {
        if tags.is_empty() {
            table.remove(sensor.as_str())?;
        } else {
            table.insert(sensor.as_str(), &encode_json("sensor_tags", tags)?[..])?;
        }
    }
    Ok(())
}

/// Tags by sensor within one write transaction, each sensor read once.
pub(super) struct Lookup<'txn> {
    table: Table<'txn, &'static str, &'static [u8]>,
    cache: HashMap<String, Tags>,
}

impl<'txn> Lookup<'txn> {
    pub fn new(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Lookup {
            table: txn.open_table(SENSOR_TAGS)?,
            cache: HashMap::new(),
        })
    }

    pub fn of(&mut self, sensor: &str) -> Result<Tags, StoreError> {
        if let Some(tags) = self.cache.get(sensor) {
            return Ok(tags.clone());
        }
        let tags = match self.table.get(sensor)? {
            Some(v) => decode_json("sensor_tags", v.value())?,
            None => Tags::new(),
        };
        self.cache.insert(sensor.to_string(), tags.clone());
        Ok(tags)
    }
}

impl Store {
    /// The stored tags of every sensor that has some.
    pub fn sensor_tags(&self) -> Result<HashMap<String, Tags>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SENSOR_TAGS)?;
        let mut out = HashMap::new();
        for item in table.iter()? {
            let (sensor, tags) = item?;
            out.insert(
                sensor.value().to_string(),
                decode_json("sensor_tags", tags.value())?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Tags;
    use crate::store::tests::{all_outbox, rollup, test_config};
    use crate::store::{OutboxEntry, Store, WriteBatch};

    fn tags(line: &str) -> Tags {
        [("line".to_string(), line.to_string())].into()
    }

    fn outbox_tags(store: &Store) -> Vec<Tags> {
        all_outbox(store)
            .into_iter()
            .filter_map(|(_, e)| match e {
                OutboxEntry::Rollup { tags, .. } => Some(tags),
                OutboxEntry::Event(_) => None,
            })
            .collect()
    }

    #[test]
    fn rollups_carry_the_tags_their_sensor_had_when_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&test_config(dir.path())).unwrap();
        store
            .write(&WriteBatch {
                sensor_tags: vec![("p-1".into(), tags("l1"))],
                rollups: vec![rollup("p-1", "t", 0, &[1.0]), rollup("p-2", "t", 0, &[1.0])],
                ..WriteBatch::default()
            })
            .unwrap();
        store
            .write(&WriteBatch {
                sensor_tags: vec![("p-1".into(), tags("l2"))],
                rollups: vec![rollup("p-1", "t", 60, &[1.0])],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            outbox_tags(&store),
            vec![tags("l1"), Tags::new(), tags("l2")]
        );
        assert_eq!(store.sensor_tags().unwrap()["p-1"], tags("l2"));
        assert!(!store.sensor_tags().unwrap().contains_key("p-2"));
    }
}
