//! Operator acknowledgements of anomaly events: who looked at an event, when, and what they
//! noted. (Not to be confused with `crate::ack`, the commit marks of upstream sources.)
//!
//! This is the one thing the web writes, and it is an annotation, never data: readings,
//! rollups, events and the outbox are written only by the store writer. An acknowledgement
//! lives in its own table, keyed by event id, so that it can neither change an event nor
//! race the pipeline's upserts of the same event (the pipeline rewrites an event's record
//! on every state change; a field inside that record would be overwritten).
//!
//! Invariants:
//! - **One small durable transaction per acknowledgement** (`Durability::Immediate`, like
//!   every commit). redb runs one write transaction at a time, so the store writer may wait
//!   for it: one fsync, at the pace of a person pressing a button.
//! - **Retention removes an event's acknowledgement in the transaction that removes the
//!   event** (`retention.rs`), so no acknowledgement outlives its event.
//! - Acknowledging again replaces the note and the time.

use std::collections::HashMap;

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::model::{AnomalyEvent, TimeNs};

/// event id → serde_json of [`Acknowledgement`].
pub(super) const EVENT_ACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_acks");

/// An operator's acknowledgement of one event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Gateway clock when it was given.
    pub at: TimeNs,
    /// What the operator wrote (checked for length by the web before it gets here).
    pub note: String,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENT_ACKS)?;
    Ok(())
}

fn decode(id: u64, bytes: &[u8]) -> Option<Acknowledgement> {
    match serde_json::from_slice(bytes) {
        Ok(ack) => Some(ack),
        Err(error) => {
            tracing::error!(id, %error, "skipping an undecodable acknowledgement");
            None
        }
    }
}

/// Removes the acknowledgements of `ids` (events that retention removes in `txn`).
pub(super) fn remove(txn: &WriteTransaction, ids: &[u64]) -> Result<(), StoreError> {
    let mut table = txn.open_table(EVENT_ACKS)?;
    for &id in ids {
        table.remove(id)?;
    }
    Ok(())
}

impl Store {
    /// Records (or replaces) the acknowledgement of event `id`, durably.
    pub fn acknowledge_event(&self, id: u64, ack: &Acknowledgement) -> Result<(), StoreError> {
        let record = serde_json::to_vec(ack).map_err(|e| StoreError::Encode {
            table: "event_acks",
            reason: e.to_string(),
        })?;
        let txn = self.inner.db.begin_write()?;
        txn.open_table(EVENT_ACKS)?.insert(id, record.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The acknowledgements of those of `ids` that have one. A record that does not decode
    /// is logged and left out.
    pub fn event_acks(
        &self,
        ids: impl IntoIterator<Item = u64>,
    ) -> Result<HashMap<u64, Acknowledgement>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EVENT_ACKS)?;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(record) = table.get(id)?
                && let Some(ack) = decode(id, record.value())
            {
                out.insert(id, ack);
            }
        }
        Ok(out)
    }

    /// The stored event `id`, if any.
    pub fn event(&self, id: u64) -> Result<Option<AnomalyEvent>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(super::tables::EVENTS)?;
        let Some(record) = table.get(id)? else {
            return Ok(None);
        };
        super::tables::decode_event(record.value()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&StoreConfig {
            path: dir.path().join("s.redb"),
            ..StoreConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn an_acknowledgement_survives_reopening_and_a_second_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = Acknowledgement {
            at: 10,
            note: "checked the pump".into(),
        };
        {
            let s = store(&dir);
            s.acknowledge_event(7, &first).unwrap();
            assert_eq!(s.event_acks([7, 8]).unwrap(), HashMap::from([(7, first)]));
        }
        let s = store(&dir);
        assert_eq!(s.event_acks([7]).unwrap()[&7].note, "checked the pump");
        let second = Acknowledgement {
            at: 20,
            note: "replaced the seal".into(),
        };
        s.acknowledge_event(7, &second).unwrap();
        assert_eq!(s.event_acks([7]).unwrap()[&7], second);
    }
}
