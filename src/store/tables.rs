//! Table definitions and record codecs: the on-disk layout of the store file.
//!
//! Invariants:
//! - Every key is laid out so that the common scans are range scans: raw readings and rollups
//!   are keyed by (series id, time), so one series' history is one contiguous range and its
//!   oldest entry is the first of that range.
//! - Record encodings are fixed here and versioned by [`SCHEMA_VERSION`] in `meta`; a change
//!   to any of them needs a new version and a migration.
//! - Decoding never panics on stored bytes of the wrong shape: it returns
//!   [`StoreError::Corrupt`] naming the table (fixed-width key and value types rely on redb,
//!   which only ever hands them slices of their declared width).

use std::cmp::Ordering;

use redb::{Key, TableDefinition, TypeName, Value};

use super::{OutboxEntry, StoreError};
use crate::model::{AnomalyEvent, Quality, Stats, TimeNs};

/// Schema version this build writes and understands. A file with a higher one is refused.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// (sensor, field) → series id.
pub(super) const SERIES: TableDefinition<(&str, &str), u32> = TableDefinition::new("series");
/// series id → (sensor, field, source).
pub(super) const SERIES_BY_ID: TableDefinition<u32, (&str, &str, &str)> =
    TableDefinition::new("series_by_id");
/// (series id, event time) → (value, quality): raw readings by series, for reading one
/// series' history as one range. Filled from `raw_recent` in large folds, not per commit.
pub(super) const RAW: TableDefinition<SeriesTime, RawValue> = TableDefinition::new("raw");
/// (event time, series id) → (value, quality): the newest raw readings, in time order.
///
/// Why two tables: in `raw` every commit would touch the last leaf page of every series it
/// holds a reading for, and redb copies each touched page (copy-on-write). With thousands of
/// series that is thousands of 4 KiB pages per commit for a few bytes each. Here new readings
/// land at the end of one B-tree, and the fold into `raw` touches each series' page once per
/// fold instead of once per commit. Measured with `examples/store_write.rs` (3,000 series,
/// commits of 20,000): writing into `raw` directly, 600 bytes written to disk per 21-byte
/// reading and 250,000 readings/s; with this table and cursor appends, 95 bytes and about
/// 0.9 to 1.1 million readings/s.
pub(super) const RAW_RECENT: TableDefinition<TimeSeries, RawValue> =
    TableDefinition::new("raw_recent");
/// (series id, window start) → [`encode_rollup`] record.
pub(super) const ROLLUPS: TableDefinition<SeriesTime, &[u8]> = TableDefinition::new("rollups");
/// (series id, window start) → [`encode_rollup`] record of a window still open in the
/// pipeline: its checkpoint, rewritten in the commit that holds its newest raw readings and
/// deleted in the commit that holds the rollup it became. Restored after a crash.
pub(super) const OPEN_WINDOWS: TableDefinition<SeriesTime, &[u8]> =
    TableDefinition::new("open_windows");
/// sensor id → serde_json of its [`crate::model::Tags`] (the newest announced).
pub(super) const SENSOR_TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("sensor_tags");
/// event id → serde_json of [`AnomalyEvent`] (latest state of the episode).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// outbox sequence → serde_json of [`OutboxEntry`].
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (entry time, outbox sequence) → (): the outbox ordered by the time of what it carries, so
/// that age retention is a range delete instead of a scan that decodes every entry.
pub(super) const OUTBOX_BY_TIME: TableDefinition<(i64, u64), ()> =
    TableDefinition::new("outbox_by_time");
/// sink name → last acknowledged outbox sequence (written by the forwarder).
pub(super) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// Named counters: [`META_SCHEMA_VERSION`], [`META_NEXT_OUTBOX_SEQ`], [`META_NEXT_EVENT_ID`].
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
/// The next outbox sequence; kept here so that sequences never restart, even when retention
/// or the byte budget empties the outbox. Starts at 1, so `outbox_after(0)` lists everything.
pub(super) const META_NEXT_OUTBOX_SEQ: &str = "next_outbox_seq";
/// One more than the highest event id ever written; kept so that ids stay unique after
/// retention removed the newest events.
pub(super) const META_NEXT_EVENT_ID: &str = "next_event_id";

/// Key of the `raw` and `rollups` tables: a series id and a time.
///
/// Encoded as 12 big-endian bytes with the sign bit of the time flipped, so that plain byte
/// order is (series, time) order. Comparing with `memcmp` instead of decoding a tuple, and
/// encoding into a stack array instead of a `Vec`, keeps the raw insert (the hot path) cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SeriesTime {
    pub series: u32,
    pub time: TimeNs,
}

impl SeriesTime {
    pub fn new(series: u32, time: TimeNs) -> Self {
        SeriesTime { series, time }
    }

    pub fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.series.to_be_bytes());
        out[4..].copy_from_slice(&((self.time as u64) ^ (1 << 63)).to_be_bytes());
        out
    }

    fn decode(data: &[u8]) -> Self {
        let mut series = [0u8; 4];
        let mut time = [0u8; 8];
        series.copy_from_slice(&data[..4]);
        time.copy_from_slice(&data[4..12]);
        SeriesTime {
            series: u32::from_be_bytes(series),
            time: (u64::from_be_bytes(time) ^ (1 << 63)) as i64,
        }
    }
}

impl Value for SeriesTime {
    type SelfType<'a> = SeriesTime;
    type AsBytes<'a> = [u8; 12];

    fn fixed_width() -> Option<usize> {
        Some(12)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> SeriesTime
    where
        Self: 'a,
    {
        SeriesTime::decode(data)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a SeriesTime) -> [u8; 12]
    where
        Self: 'b,
    {
        value.encode()
    }

    fn type_name() -> TypeName {
        TypeName::new("edgewatch::SeriesTime")
    }
}

impl Key for SeriesTime {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        data1.cmp(data2)
    }
}

/// Key of the `raw_recent` table: a time and a series id, 12 bytes ordered by (time, series)
/// the same way as [`SeriesTime`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TimeSeries {
    pub time: TimeNs,
    pub series: u32,
}

impl TimeSeries {
    pub fn new(time: TimeNs, series: u32) -> Self {
        TimeSeries { time, series }
    }

    pub fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&((self.time as u64) ^ (1 << 63)).to_be_bytes());
        out[8..].copy_from_slice(&self.series.to_be_bytes());
        out
    }

    fn decode(data: &[u8]) -> Self {
        let mut time = [0u8; 8];
        let mut series = [0u8; 4];
        time.copy_from_slice(&data[..8]);
        series.copy_from_slice(&data[8..12]);
        TimeSeries {
            time: (u64::from_be_bytes(time) ^ (1 << 63)) as i64,
            series: u32::from_be_bytes(series),
        }
    }
}

impl Value for TimeSeries {
    type SelfType<'a> = TimeSeries;
    type AsBytes<'a> = [u8; 12];

    fn fixed_width() -> Option<usize> {
        Some(12)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> TimeSeries
    where
        Self: 'a,
    {
        TimeSeries::decode(data)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a TimeSeries) -> [u8; 12]
    where
        Self: 'b,
    {
        value.encode()
    }

    fn type_name() -> TypeName {
        TypeName::new("edgewatch::TimeSeries")
    }
}

impl Key for TimeSeries {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        data1.cmp(data2)
    }
}

/// Value of the `raw` and `raw_recent` tables: the reading's value and quality flags, 9 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RawValue {
    pub value: f64,
    pub quality: Quality,
}

impl Value for RawValue {
    type SelfType<'a> = RawValue;
    type AsBytes<'a> = [u8; 9];

    fn fixed_width() -> Option<usize> {
        Some(9)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> RawValue
    where
        Self: 'a,
    {
        let mut value = [0u8; 8];
        value.copy_from_slice(&data[..8]);
        RawValue {
            value: f64::from_le_bytes(value),
            quality: Quality(data[8]),
        }
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a RawValue) -> [u8; 9]
    where
        Self: 'b,
    {
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&value.value.to_le_bytes());
        out[8] = value.quality.0;
        out
    }

    fn type_name() -> TypeName {
        TypeName::new("edgewatch::RawValue")
    }
}

/// Length of a rollup record: ten 8-byte fields and the quality byte.
const ROLLUP_LEN: usize = 81;

/// Encodes a rollup's statistics and window length as a fixed little-endian record:
/// count, sum, m2, min, max, first_time, first, last_time, last, length_ns, quality.
/// Binary rather than JSON so that merging a late reading reads back bit-exact floats.
pub(super) fn encode_rollup(stats: &Stats, length_ns: i64) -> [u8; ROLLUP_LEN] {
    let words: [[u8; 8]; 10] = [
        stats.count.to_le_bytes(),
        stats.sum.to_le_bytes(),
        stats.m2.to_le_bytes(),
        stats.min.to_le_bytes(),
        stats.max.to_le_bytes(),
        stats.first_time.to_le_bytes(),
        stats.first.to_le_bytes(),
        stats.last_time.to_le_bytes(),
        stats.last.to_le_bytes(),
        length_ns.to_le_bytes(),
    ];
    let mut out = [0u8; ROLLUP_LEN];
    for (chunk, word) in out.chunks_exact_mut(8).zip(words.iter()) {
        chunk.copy_from_slice(word);
    }
    out[80] = stats.quality.0;
    out
}

/// Decodes a record written by [`encode_rollup`] into (stats, length_ns).
pub(super) fn decode_rollup(data: &[u8]) -> Result<(Stats, i64), StoreError> {
    if data.len() != ROLLUP_LEN {
        return Err(StoreError::Corrupt {
            table: "rollups",
            reason: format!("record is {} bytes, expected {ROLLUP_LEN}", data.len()),
        });
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&data[i * 8..i * 8 + 8]);
        w
    };
    let f = |i: usize| f64::from_le_bytes(word(i));
    let int = |i: usize| i64::from_le_bytes(word(i));
    let stats = Stats {
        count: u64::from_le_bytes(word(0)),
        sum: f(1),
        m2: f(2),
        min: f(3),
        max: f(4),
        first_time: int(5),
        first: f(6),
        last_time: int(7),
        last: f(8),
        quality: Quality(data[80]),
    };
    Ok((stats, int(9)))
}

pub(super) fn encode_json<T: serde::Serialize>(
    table: &'static str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        table,
        reason: e.to_string(),
    })
}

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    data: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(data).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

pub(super) fn decode_event(data: &[u8]) -> Result<AnomalyEvent, StoreError> {
    serde_json::from_slice(data).map_err(|e| StoreError::Corrupt {
        table: "events",
        reason: e.to_string(),
    })
}

pub(super) fn decode_outbox(data: &[u8]) -> Result<OutboxEntry, StoreError> {
    serde_json::from_slice(data).map_err(|e| StoreError::Corrupt {
        table: "outbox",
        reason: e.to_string(),
    })
}

/// The time an outbox entry is about, used for its age: a rollup's window start, an event's
/// latest change (cleared, else raised).
pub(super) fn outbox_time(entry: &OutboxEntry) -> TimeNs {
    match entry {
        OutboxEntry::Rollup { start, .. } => *start,
        OutboxEntry::Event(event) => event.cleared_at.unwrap_or(event.raised_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn key_bytes_sort_like_the_pairs(
            a in (any::<u32>(), any::<i64>()),
            b in (any::<u32>(), any::<i64>()),
        ) {
            let (ka, kb) = (SeriesTime::new(a.0, a.1), SeriesTime::new(b.0, b.1));
            prop_assert_eq!(ka.encode().cmp(&kb.encode()), a.cmp(&b));
            prop_assert_eq!(SeriesTime::decode(&ka.encode()), ka);
            let (ta, tb) = (TimeSeries::new(a.1, a.0), TimeSeries::new(b.1, b.0));
            prop_assert_eq!(ta.encode().cmp(&tb.encode()), (a.1, a.0).cmp(&(b.1, b.0)));
            prop_assert_eq!(TimeSeries::decode(&ta.encode()), ta);
        }

        #[test]
        fn rollup_record_round_trips_bit_exact(
            count in any::<u64>(), floats in prop::array::uniform6(any::<f64>()),
            times in (any::<i64>(), any::<i64>(), any::<i64>()), quality in any::<u8>(),
        ) {
            let stats = Stats {
                count, sum: floats[0], m2: floats[1], min: floats[2], max: floats[3],
                first_time: times.0, first: floats[4], last_time: times.1, last: floats[5],
                quality: Quality(quality),
            };
            let (back, length) = decode_rollup(&encode_rollup(&stats, times.2)).unwrap();
            prop_assert_eq!(length, times.2);
            prop_assert_eq!(encode_rollup(&back, length), encode_rollup(&stats, times.2));
        }
    }

    #[test]
    fn every_outbox_entry_round_trips_through_its_json_record() {
        let stats = Stats::of(5, 1.25, Quality::LATE);
        let entries = [
            OutboxEntry::Rollup {
                sensor: "p-101".into(),
                field: "temperature".into(),
                source: "mqtt".into(),
                start: 0,
                length_ns: 60,
                stats,
                tags: [("line".to_string(), "l1".to_string())].into(),
            },
            OutboxEntry::Event(AnomalyEvent {
                id: 3,
                sensor: "p-101".into(),
                field: "vibration".into(),
                rule: "limit:*/vibration".into(),
                kind: "limit".into(),
                severity: crate::model::Severity::Critical,
                raised_at: 1,
                cleared_at: Some(2),
                value: 9.5,
                score: 9.5,
                peak_score: 9.75,
                peak_value: 9.75,
                peak_at: 1,
                message: "vibration 9.5 above 9".into(),
            }),
        ];
        for entry in entries {
            let record = encode_json("outbox", &entry).unwrap();
            assert_eq!(decode_outbox(&record).unwrap(), entry);
        }
    }

    #[test]
    fn rollup_record_of_the_wrong_length_is_corrupt() {
        assert!(matches!(
            decode_rollup(&[0u8; 80]),
            Err(StoreError::Corrupt {
                table: "rollups",
                ..
            })
        ));
    }
}
