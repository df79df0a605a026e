//! The data model shared by every stage: readings, series keys, window statistics, rollups and
//! anomaly events. Plain data, no I/O. Times are nanoseconds since the Unix epoch (UTC).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, UTC. Event time unless a name says otherwise.
pub type TimeNs = i64;

/// The hash map of the per-reading paths (series by key, sensors by id): foldhash is several
/// times faster than the standard SipHash on short ids and still seeded per process, so ids
/// from the network cannot be chosen to collide.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Nanoseconds in one second.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Quality flags carried by a reading and by a rollup (the union of its readings' flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(pub u8);

impl Quality {
    /// Nothing to report.
    pub const GOOD: Quality = Quality(0);
    /// The value is NaN or infinite; it is stored raw but excluded from aggregates and detectors.
    pub const NOT_FINITE: Quality = Quality(1);
    /// The timestamp is before 2000 or too far in the future to be trusted (a gateway without
    /// a real-time clock); stored raw, excluded from windows, detectors and the watermark.
    pub const TIME_SUSPECT: Quality = Quality(2);
    /// The payload had no timestamp; the time of arrival was used.
    pub const TIME_FROM_ARRIVAL: Quality = Quality(4);
    /// The reading arrived after its window had been emitted; the rollup was corrected.
    pub const LATE: Quality = Quality(8);

    pub fn contains(self, other: Quality) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Quality) {
        self.0 |= other.0;
    }

    pub fn union(self, other: Quality) -> Quality {
        Quality(self.0 | other.0)
    }

    /// Names of the set flags, for the API and the status page.
    pub fn names(self) -> Vec<&'static str> {
        let all = [
            (Self::NOT_FINITE, "not_finite"),
            (Self::TIME_SUSPECT, "time_suspect"),
            (Self::TIME_FROM_ARRIVAL, "time_from_arrival"),
            (Self::LATE, "late"),
        ];
        all.iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect()
    }
}

/// A time series: one field of one sensor. Cheap to clone (two reference-counted strings).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub sensor: Arc<str>,
    pub field: Arc<str>,
}

impl SeriesKey {
    pub fn new(sensor: impl Into<Arc<str>>, field: impl Into<Arc<str>>) -> Self {
        SeriesKey {
            sensor: sensor.into(),
            field: field.into(),
        }
    }
}

impl fmt::Display for SeriesKey {
    /// `sensor/field`, the form that rule globs match against.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sensor, self.field)
    }
}

/// One measured value of one series at one event time.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub series: SeriesKey,
    pub time: TimeNs,
    pub value: f64,
    pub quality: Quality,
}

/// Tags of a sensor (the source's static `tags` and those captured from an MQTT topic),
/// forwarded with its rollups.
pub type Tags = std::collections::BTreeMap<String, String>;

/// Readings from one source, handed to the pipeline together to keep per-message overhead low.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Name of the source (`sources[].name`), a tag on everything derived from these readings.
    pub source: Arc<str>,
    pub readings: Vec<Reading>,
    /// Released by the store writer once these readings are durably committed (sources that
    /// acknowledge upstream, such as MQTT with QoS 1, wait for it).
    pub commit: Option<crate::ack::CommitMark>,
    /// The readings may have been delivered before (an MQTT redelivery after a reconnect or a
    /// restart): the pipeline drops those whose (series, time) is already stored raw.
    pub redelivered: bool,
    /// Tags of sensors in this batch, announced when a sensor is first seen by the source or
    /// its tags change (not with every reading).
    pub tags: Vec<(Arc<str>, Arc<Tags>)>,
}

impl Batch {
    pub fn new(source: Arc<str>, readings: Vec<Reading>) -> Self {
        Batch {
            source,
            readings,
            commit: None,
            redelivered: false,
            tags: Vec::new(),
        }
    }
}

/// Aggregate statistics of the readings in one window. Mergeable: the statistics of two
/// disjoint sets of readings combine into the statistics of their union, which is how late
/// readings and readings after a restart correct an already stored rollup.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    /// Sum of the values, so that `mean = sum / count` is exactly what a reader recomputes.
    pub sum: f64,
    /// Sum of squared deviations from the mean (Welford / Chan), for the standard deviation.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub first_time: TimeNs,
    pub first: f64,
    pub last_time: TimeNs,
    pub last: f64,
    pub quality: Quality,
}

impl Stats {
    /// Statistics of a single reading.
    pub fn of(time: TimeNs, value: f64, quality: Quality) -> Self {
        Stats {
            count: 1,
            sum: value,
            m2: 0.0,
            min: value,
            max: value,
            first_time: time,
            first: value,
            last_time: time,
            last: value,
            quality,
        }
    }

    /// Adds one reading (Welford's update).
    pub fn push(&mut self, time: TimeNs, value: f64, quality: Quality) {
        let old_mean = self.mean();
        self.count += 1;
        self.sum += value;
        let new_mean = self.mean();
        self.m2 += (value - old_mean) * (value - new_mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if time < self.first_time {
            self.first_time = time;
            self.first = value;
        }
        if time >= self.last_time {
            self.last_time = time;
            self.last = value;
        }
        self.quality.insert(quality);
    }

    /// Combines the statistics of a disjoint set of readings (Chan's parallel update).
    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (n_a, n_b) = (self.count as f64, other.count as f64);
        let delta = other.mean() - self.mean();
        let n = n_a + n_b;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first_time < self.first_time {
            self.first_time = other.first_time;
            self.first = other.first;
        }
        if other.last_time >= self.last_time {
            self.last_time = other.last_time;
            self.last = other.last;
        }
        self.quality.insert(other.quality);
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Sample standard deviation (n − 1); 0 for a single reading.
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2.max(0.0) / (self.count - 1) as f64).sqrt()
        }
    }
}

/// The aggregate of one series over one tumbling window `[start, start + length)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollup {
    pub series: SeriesKey,
    pub start: TimeNs,
    pub length_ns: i64,
    pub stats: Stats,
}

/// Severity of an anomaly rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One anomaly episode: raised once, cleared once. The store keeps the latest state of each
/// episode under its id; every change is also queued for forwarding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// Unique across restarts (the store hands out the next free id at start-up).
    pub id: u64,
    pub sensor: String,
    pub field: String,
    /// The rule's name (`rules[].name`, or `kind:match` when unnamed).
    pub rule: String,
    /// The rule's kind: limit, rate, zscore, stuck or silent.
    pub kind: String,
    pub severity: Severity,
    /// Time of the reading (or, for `silent`, the gateway clock) that raised the event.
    pub raised_at: TimeNs,
    pub cleared_at: Option<TimeNs>,
    /// The value that raised the event.
    pub value: f64,
    /// The score compared with the rule's levels (the value, a rate, a z-score or seconds).
    pub score: f64,
    /// The most extreme score seen while the episode was active, and the value and time then.
    pub peak_score: f64,
    pub peak_value: f64,
    pub peak_at: TimeNs,
    /// A sentence for people: what was seen and which level it crossed.
    pub message: String,
}

impl AnomalyEvent {
    pub fn is_active(&self) -> bool {
        self.cleared_at.is_none()
    }

    pub fn series(&self) -> SeriesKey {
        SeriesKey::new(self.sensor.as_str(), self.field.as_str())
    }
}

/// Formats a time as RFC 3339 with nanosecond precision when needed (`2026-11-26T10:00:00.12Z`).
pub fn format_time(t: TimeNs) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(t as i128)
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Parses an RFC 3339 time into nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<TimeNs> {
    use time::format_description::well_known::Rfc3339;
    let dt = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos()).ok()
}

/// The current wall-clock time. Only the I/O shell calls this; the cores are given the time.
pub fn now_ns() -> TimeNs {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats_of(values: &[(i64, f64)]) -> Stats {
        let mut it = values.iter();
        let &(t0, v0) = it.next().unwrap();
        let mut s = Stats::of(t0, v0, Quality::GOOD);
        for &(t, v) in it {
            s.push(t, v, Quality::GOOD);
        }
        s
    }

    #[test]
    fn stats_of_known_values() {
        let s = stats_of(&[
            (1, 2.0),
            (2, 4.0),
            (3, 4.0),
            (4, 4.0),
            (5, 5.0),
            (6, 5.0),
            (7, 7.0),
            (8, 9.0),
        ]);
        assert_eq!(s.count, 8);
        assert_eq!(s.mean(), 5.0);
        assert!((s.stddev() - 2.138_089_935_299_395).abs() < 1e-12);
        assert_eq!((s.min, s.max, s.first, s.last), (2.0, 9.0, 2.0, 9.0));
    }

    #[test]
    fn time_round_trips_through_rfc3339() {
        let t = parse_time("2026-11-26T10:00:00.120Z").unwrap();
        assert_eq!(format_time(t), "2026-11-26T10:00:00.12Z");
        assert_eq!(parse_time(&format_time(t)), Some(t));
    }

    proptest! {
        #[test]
        fn merged_stats_equal_stats_of_the_union(
            values in prop::collection::vec((0i64..1_000, -1e6f64..1e6), 2..60),
            split in 1usize..59,
        ) {
            let split = split.min(values.len() - 1);
            let whole = stats_of(&values);
            let mut left = stats_of(&values[..split]);
            left.merge(&stats_of(&values[split..]));
            prop_assert_eq!(left.count, whole.count);
            prop_assert_eq!(left.min, whole.min);
            prop_assert_eq!(left.max, whole.max);
            prop_assert!((left.mean() - whole.mean()).abs() <= 1e-9 * (1.0 + whole.mean().abs()));
            prop_assert!((left.stddev() - whole.stddev()).abs() <= 1e-6 * (1.0 + whole.stddev()));
            prop_assert_eq!(left.first_time, whole.first_time);
            prop_assert_eq!(left.last_time, whole.last_time);
        }
    }
}
