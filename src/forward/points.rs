//! Points from the store: a rollup or an anomaly event becomes one line protocol [`Point`].
//! Pure. The forwarder and `edgewatch export` both build their points here, so data carried
//! out on a USB stick and imported later lands on exactly the points the forwarder writes.
//!
//! Invariant: **a point's identity (measurement, tag set, timestamp) depends only on what it
//! describes**, never on when or how often it is sent. InfluxDB identifies a point by exactly
//! that identity, and a second write of it replaces the field values of the first (last write
//! wins; checked on InfluxDB 1.6.7). So:
//!
//! - A rollup is written at its window start with a fixed tag set. Resending it after a lost
//!   acknowledgement gives a byte-identical line that overwrites itself, and a rollup corrected
//!   by a late reading overwrites the earlier version: at-least-once delivery, exactly-once
//!   effect.
//! - An anomaly event is written at `raised_at`, and raising and clearing give the same tags,
//!   so the clear overwrites the raise's point with the episode's final state.
//!
//! Nothing that can change between two sends of the same record (send time, outbox
//! sequence, retry count) may ever become a tag or the timestamp.

use std::collections::BTreeMap;

use crate::forward::line_protocol::{FieldValue, Point};
use crate::model::{AnomalyEvent, NS_PER_SEC, Stats, TimeNs};
use crate::store::OutboxEntry;

/// Measurement of rollups.
pub const ROLLUP_MEASUREMENT: &str = "rollup";
/// Measurement of anomaly events.
pub const EVENT_MEASUREMENT: &str = "anomaly";

/// Tags added to every point besides those that describe the record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PointTags {
    /// `gateway.id`, the `gateway` tag of every point.
    pub gateway: String,
    /// `gateway.tags` and the sink's own tags, merged by the caller. A static tag with the
    /// name of one that edgewatch sets itself (`gateway`, `source`, `sensor`, `field`, and for
    /// events `rule`, `kind`, `severity`) is ignored, even where edgewatch's own value is empty
    /// and so left out: otherwise a typo in the config could move a series to another identity.
    pub static_tags: BTreeMap<String, String>,
}

/// The point of one rollup: measurement `rollup`, tags `gateway`, `source` (left out when
/// empty), `sensor`, `field` and the static tags; integer fields `count`, `window_secs` and
/// `quality` (the flag bits of [`crate::model::Quality`]), float fields `mean`, `min`, `max`,
/// `stddev`, `first` and `last`; time = the window start.
pub fn rollup_point(
    sensor: &str,
    field: &str,
    source: &str,
    start: TimeNs,
    length_ns: i64,
    stats: &Stats,
    tags: &PointTags,
) -> Point {
    Point {
        measurement: ROLLUP_MEASUREMENT.to_string(),
        tags: with_static_tags(
            &[
                ("gateway", &tags.gateway),
                ("source", source),
                ("sensor", sensor),
                ("field", field),
            ],
            tags,
        ),
        fields: vec![
            ("count".into(), integer(stats.count)),
            ("mean".into(), FieldValue::Float(stats.mean())),
            ("min".into(), FieldValue::Float(stats.min)),
            ("max".into(), FieldValue::Float(stats.max)),
            ("stddev".into(), FieldValue::Float(stats.stddev())),
            ("first".into(), FieldValue::Float(stats.first)),
            ("last".into(), FieldValue::Float(stats.last)),
            (
                "window_secs".into(),
                FieldValue::Integer(length_ns / NS_PER_SEC),
            ),
            (
                "quality".into(),
                FieldValue::Integer(i64::from(stats.quality.0)),
            ),
        ],
        time: start,
    }
}

/// The point of one anomaly event (its latest state): measurement `anomaly`, tags `gateway`,
/// `source` (left out when empty), `sensor`, `field`, `rule`, `kind`, `severity` and the
/// static tags; fields `id`, `active`, `value`, `score`, `peak_value`, `peak_score`, `peak_at`
/// and `cleared_at` (ns since the epoch; left out while active) and `message`; time =
/// `raised_at`, so that the clear overwrites the raise.
pub fn event_point(event: &AnomalyEvent, source: &str, tags: &PointTags) -> Point {
    let mut fields = vec![
        ("id".into(), integer(event.id)),
        ("active".into(), FieldValue::Bool(event.is_active())),
        ("value".into(), FieldValue::Float(event.value)),
        ("score".into(), FieldValue::Float(event.score)),
        ("peak_value".into(), FieldValue::Float(event.peak_value)),
        ("peak_score".into(), FieldValue::Float(event.peak_score)),
        ("peak_at".into(), FieldValue::Integer(event.peak_at)),
    ];
    if let Some(cleared_at) = event.cleared_at {
        fields.push(("cleared_at".into(), FieldValue::Integer(cleared_at)));
    }
    fields.push(("message".into(), FieldValue::Str(event.message.clone())));
    Point {
        measurement: EVENT_MEASUREMENT.to_string(),
        tags: with_static_tags(
            &[
                ("gateway", &tags.gateway),
                ("source", source),
                ("sensor", &event.sensor),
                ("field", &event.field),
                ("rule", &event.rule),
                ("kind", &event.kind),
                ("severity", event.severity.as_str()),
            ],
            tags,
        ),
        fields,
        time: event.raised_at,
    }
}

/// The point of one outbox entry, or `None` for a rollup of no readings (nothing to report:
/// its mean would read as 0). The pipeline never emits one; the guard keeps a damaged record
/// from reaching InfluxDB as a real zero.
///
/// Event entries do not record their source, so event points carry no `source` tag; export
/// does the same, so that both write the same identity.
pub fn outbox_point(entry: &OutboxEntry, tags: &PointTags) -> Option<Point> {
    match entry {
        OutboxEntry::Rollup {
            sensor,
            field,
            source,
            start,
            length_ns,
            stats,
            tags: series_tags,
        } => (stats.count > 0).then(|| {
            let mut point = rollup_point(sensor, field, source, *start, *length_ns, stats, tags);
            add_series_tags(&mut point, series_tags);
            point
        }),
        OutboxEntry::Event(event) => Some(event_point(event, "", tags)),
    }
}

/// Edgewatch's own tags followed by the static tags whose names it does not use.
/// Adds a sensor's own tags (from its source's config or its MQTT topic) to a rollup point.
/// They win over static tags of the same name; the names edgewatch sets itself (`gateway`,
/// `source`, `sensor`, `field`) are never replaced.
pub fn add_series_tags(point: &mut Point, series: &crate::model::Tags) {
    for (k, v) in series {
        if ["gateway", "source", "sensor", "field"].contains(&k.as_str()) {
            continue;
        }
        match point.tags.iter_mut().find(|(name, _)| name == k) {
            Some(existing) => existing.1 = v.clone(),
            None => point.tags.push((k.clone(), v.clone())),
        }
    }
}

fn with_static_tags(own: &[(&str, &str)], tags: &PointTags) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = own
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.extend(
        tags.static_tags
            .iter()
            .filter(|(k, _)| !own.iter().any(|(name, _)| name == k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// Counts and ids as line protocol integers (`i`, which every InfluxDB version reads; `u` is
/// unknown to 1.x). Neither comes near `i64::MAX`; saturating keeps the point valid anyway.
fn integer(n: u64) -> FieldValue {
    FieldValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::line_protocol::{Precision, encode};
    use crate::model::{Quality, Severity, parse_time};

    fn tags() -> PointTags {
        PointTags {
            gateway: "gw-01".into(),
            static_tags: BTreeMap::from([
                ("site".to_string(), "plant 3".to_string()),
                ("gateway".to_string(), "not-this-one".to_string()),
                ("source".to_string(), "nor-this".to_string()),
            ]),
        }
    }

    fn stats() -> Stats {
        Stats {
            count: 60,
            sum: 4272.0,
            m2: 14.75,
            min: 70.1,
            max: 72.5,
            first_time: parse_time("2026-11-26T10:00:00.5Z").unwrap(),
            first: 70.5,
            last_time: parse_time("2026-11-26T10:00:59.5Z").unwrap(),
            last: 71.9,
            quality: Quality::LATE,
        }
    }

    fn event(cleared: bool) -> AnomalyEvent {
        AnomalyEvent {
            id: 7,
            sensor: "p-101".into(),
            field: "vibration".into(),
            rule: "vibration z".into(),
            kind: "zscore".into(),
            severity: Severity::Critical,
            raised_at: parse_time("2026-11-26T10:03:12.5Z").unwrap(),
            cleared_at: cleared.then(|| parse_time("2026-11-26T10:09:30Z").unwrap()),
            value: 0.93,
            score: 5.1,
            peak_score: 6.4,
            peak_value: 1.2,
            peak_at: parse_time("2026-11-26T10:04:40.25Z").unwrap(),
            message: "z-score 5.1 above 4 \"raise\"".into(),
        }
    }

    fn line(point: &Point) -> String {
        let mut out = String::new();
        encode(point, Precision::Ns, &mut out).unwrap();
        out
    }

    #[test]
    fn a_rollup_becomes_the_documented_line() {
        let start = parse_time("2026-11-26T10:00:00Z").unwrap();
        let point = rollup_point(
            "p-101",
            "temperature",
            "plant-broker",
            start,
            60 * NS_PER_SEC,
            &stats(),
            &tags(),
        );
        assert_eq!(
            line(&point),
            "rollup,field=temperature,gateway=gw-01,sensor=p-101,site=plant\\ 3,source=plant-broker \
             count=60i,mean=71.2,min=70.1,max=72.5,stddev=0.5,first=70.5,last=71.9,window_secs=60i,\
             quality=8i 1795687200000000000\n"
        );
    }

    #[test]
    fn a_cleared_event_becomes_the_documented_line() {
        assert_eq!(
            line(&event_point(&event(true), "", &tags())),
            "anomaly,field=vibration,gateway=gw-01,kind=zscore,rule=vibration\\ z,sensor=p-101,\
             severity=critical,site=plant\\ 3 id=7i,active=false,value=0.93,score=5.1,peak_value=1.2,\
             peak_score=6.4,peak_at=1795687480250000000i,cleared_at=1795687770000000000i,\
             message=\"z-score 5.1 above 4 \\\"raise\\\"\" 1795687392500000000\n"
        );
    }

    #[test]
    fn an_active_event_has_no_cleared_at_and_its_clear_overwrites_the_same_point() {
        let raised = line(&event_point(&event(false), "", &tags()));
        assert!(raised.contains(",active=true,"), "{raised}");
        assert!(!raised.contains("cleared_at"), "{raised}");
        let cleared = line(&event_point(&event(true), "", &tags()));
        let identity = |l: &str| {
            let (key, rest) = l.split_once(' ').unwrap();
            (
                key.to_string(),
                rest.rsplit(' ').next().unwrap().to_string(),
            )
        };
        assert_eq!(
            identity(&raised),
            identity(&cleared),
            "same measurement, tags and time"
        );
    }

    #[test]
    fn an_event_with_a_known_source_carries_it_as_a_tag() {
        let with = line(&event_point(&event(true), "press-1", &tags()));
        assert!(with.contains(",source=press-1 "), "{with}");
        let without = line(&event_point(&event(true), "", &tags()));
        assert!(!without.contains("source="), "{without}");
    }

    #[test]
    fn an_outbox_rollup_gives_the_same_bytes_every_time_it_is_sent() {
        let entry = OutboxEntry::Rollup {
            sensor: "p-101".into(),
            field: "temperature".into(),
            source: "plant-broker".into(),
            start: parse_time("2026-11-26T10:00:00Z").unwrap(),
            length_ns: 60 * NS_PER_SEC,
            stats: stats(),
            tags: Default::default(),
        };
        let first = line(&outbox_point(&entry, &tags()).unwrap());
        let again = line(&outbox_point(&entry.clone(), &tags()).unwrap());
        assert_eq!(first, again);
        let direct = rollup_point(
            "p-101",
            "temperature",
            "plant-broker",
            parse_time("2026-11-26T10:00:00Z").unwrap(),
            60 * NS_PER_SEC,
            &stats(),
            &tags(),
        );
        assert_eq!(first, line(&direct));
    }

    #[test]
    fn an_outbox_event_has_no_source_tag() {
        let point = outbox_point(&OutboxEntry::Event(event(false)), &tags()).unwrap();
        assert_eq!(point, event_point(&event(false), "", &tags()));
        assert!(!line(&point).contains("source="));
    }

    #[test]
    fn an_outbox_rollup_of_no_readings_is_not_forwarded() {
        let entry = OutboxEntry::Rollup {
            sensor: "p-101".into(),
            field: "temperature".into(),
            source: String::new(),
            start: 0,
            length_ns: 60 * NS_PER_SEC,
            stats: Stats {
                count: 0,
                ..stats()
            },
            tags: Default::default(),
        };
        assert_eq!(outbox_point(&entry, &tags()), None);
    }

    #[test]
    fn a_rollup_carries_its_sensor_tags_which_win_over_static_ones_but_not_over_its_identity() {
        let entry = OutboxEntry::Rollup {
            sensor: "p-101".into(),
            field: "temperature".into(),
            source: "plant-broker".into(),
            start: 0,
            length_ns: 60 * NS_PER_SEC,
            stats: stats(),
            tags: [
                ("line", "line-2"),
                ("site", "from-topic"),
                ("sensor", "other"),
                ("gateway", "other"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let mut static_tags = tags();
        static_tags
            .static_tags
            .insert("site".into(), "from-config".into());
        let text = line(&outbox_point(&entry, &static_tags).unwrap());
        assert!(text.contains(",line=line-2"), "{text}");
        assert!(text.contains(",site=from-topic"), "{text}");
        assert!(!text.contains("from-config"), "{text}");
        assert!(text.contains(",sensor=p-101"), "{text}");
        assert!(!text.contains("=other"), "{text}");
    }
}
