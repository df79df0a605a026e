//! Assembling the batches of an MQTT source (sans-IO). Readings of consecutive messages go
//! into one [`Batch`](crate::model::Batch) until it is full or nothing more is buffered, so
//! that the pipeline sees few large batches under load and every message at once when idle.
//! A batch holds either only first deliveries or only possible redeliveries, because the
//! pipeline checks a redelivered batch against the store reading by reading.

use std::sync::Arc;

use rumqttc::Publish;

use crate::model::{Reading, Tags};

/// A batch is sent once it holds this many readings...
pub const MAX_READINGS: usize = 1000;
/// ...or this many messages (refused messages add messages but no readings).
pub const MAX_MESSAGES: usize = 1000;

/// The batch being filled.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    /// Readings decoded so far; decoders append to it directly.
    pub readings: Vec<Reading>,
    /// QoS 1 messages to acknowledge once the batch is committed, in order of arrival,
    /// including refused ones and ones without readings.
    acks: Vec<Publish>,
    /// Tags of sensors seen for the first time, announced with this batch.
    pub tags: Vec<(Arc<str>, Arc<Tags>)>,
    messages: usize,
    redelivered: bool,
}

/// A finished batch.
#[derive(Debug)]
pub struct Built {
    pub readings: Vec<Reading>,
    pub acks: Vec<Publish>,
    pub tags: Vec<(Arc<str>, Arc<Tags>)>,
    pub redelivered: bool,
}

impl BatchBuilder {
    /// Whether a message with this redelivery flag may join the current batch; when not, the
    /// batch must be sent first.
    pub fn fits(&self, redelivered: bool) -> bool {
        self.messages == 0 || self.redelivered == redelivered
    }

    /// Starts a message (after its readings were appended to `readings`, call [`Self::add`]).
    pub fn begin(&mut self, redelivered: bool) {
        debug_assert!(self.fits(redelivered));
        if self.messages == 0 {
            self.redelivered = redelivered;
        }
    }

    /// Counts a message; `ack` is the message when it must be acknowledged (QoS 1).
    pub fn add(&mut self, ack: Option<Publish>) {
        self.messages += 1;
        self.acks.extend(ack);
    }

    pub fn is_full(&self) -> bool {
        self.readings.len() >= MAX_READINGS || self.messages >= MAX_MESSAGES
    }

    /// The batch so far, leaving an empty builder; `None` when no message was added.
    pub fn take(&mut self) -> Option<Built> {
        if self.messages == 0 {
            return None;
        }
        let built = Built {
            readings: std::mem::take(&mut self.readings),
            acks: std::mem::take(&mut self.acks),
            tags: std::mem::take(&mut self.tags),
            redelivered: self.redelivered,
        };
        self.messages = 0;
        self.redelivered = false;
        Some(built)
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;
    use crate::model::{Quality, SeriesKey};

    fn reading(t: i64) -> Reading {
        Reading {
            series: SeriesKey::new("s1", "temperature"),
            time: t,
            value: 1.0,
            quality: Quality::GOOD,
        }
    }

    #[test]
    fn first_deliveries_and_redeliveries_never_share_a_batch() {
        let mut b = BatchBuilder::default();
        assert!(b.fits(true) && b.fits(false));
        b.begin(false);
        b.readings.push(reading(1));
        b.add(None);
        assert!(b.fits(false));
        assert!(!b.fits(true));
        let built = b.take().unwrap();
        assert!(!built.redelivered);
        b.begin(true);
        b.add(Some(Publish::new("t", QoS::AtLeastOnce, "x")));
        assert!(!b.fits(false));
        let built = b.take().unwrap();
        assert!(built.redelivered);
        assert_eq!(built.acks.len(), 1);
        assert!(b.take().is_none());
    }

    #[test]
    fn refused_messages_are_kept_for_acknowledgement_without_readings() {
        let mut b = BatchBuilder::default();
        for _ in 0..3 {
            b.begin(false);
            b.add(Some(Publish::new("t", QoS::AtLeastOnce, "garbage")));
        }
        b.begin(false);
        b.add(None);
        let built = b.take().unwrap();
        assert!(built.readings.is_empty());
        assert_eq!(built.acks.len(), 3, "the QoS 0 message needs none");
    }

    #[test]
    fn full_at_the_reading_or_the_message_limit() {
        let mut b = BatchBuilder::default();
        b.begin(false);
        b.readings.extend((0..MAX_READINGS as i64).map(reading));
        b.add(None);
        assert!(b.is_full());
        b.take();
        for _ in 0..MAX_MESSAGES {
            assert!(!b.is_full());
            b.begin(false);
            b.add(None);
        }
        assert!(b.is_full());
    }
}
