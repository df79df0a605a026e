//! Behaviour of the store against temp-dir files: merging, the outbox against a model,
//! reopening, reads and filters, schema refusal; and the helpers the other tests share.
//! Retention tests live in `retention.rs`, writer tests in `writer.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use redb::ReadableDatabase;

use super::tables::{META, META_SCHEMA_VERSION};
use super::*;
use crate::model::{NS_PER_SEC, Quality, Reading, Severity};

/// A moment in late 2026, far from any edge of the time range.
pub(super) const T0: TimeNs = 1_795_000_000 * NS_PER_SEC;
pub(super) const HOUR: i64 = 3_600 * NS_PER_SEC;
pub(super) const DAY: i64 = 24 * HOUR;

pub(super) fn test_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("nested").join("edgewatch.redb"),
        ..StoreConfig::default()
    }
}

/// Statistics of readings one second apart from `start`. Tests use values that are exact in
/// binary (multiples of 1/4) so that floats survive the outbox's JSON bit for bit.
fn stats_of(start: TimeNs, values: &[f64]) -> Stats {
    let mut stats = Stats::of(start, values[0], Quality::GOOD);
    for (i, &v) in values.iter().enumerate().skip(1) {
        stats.push(start + i as i64 * NS_PER_SEC, v, Quality::GOOD);
    }
    stats
}

pub(super) fn rollup(sensor: &str, field: &str, start: TimeNs, values: &[f64]) -> Rollup {
    Rollup {
        series: SeriesKey::new(sensor, field),
        start,
        length_ns: 60 * NS_PER_SEC,
        stats: stats_of(start, values),
    }
}

pub(super) fn reading(sensor: &str, field: &str, time: TimeNs, value: f64) -> Reading {
    Reading {
        series: SeriesKey::new(sensor, field),
        time,
        value,
        quality: Quality::GOOD,
    }
}

pub(super) fn event(
    id: u64,
    sensor: &str,
    raised_at: TimeNs,
    cleared_at: Option<TimeNs>,
) -> AnomalyEvent {
    AnomalyEvent {
        id,
        sensor: sensor.into(),
        field: "vibration".into(),
        rule: "zscore:*/vibration".into(),
        kind: "zscore".into(),
        severity: Severity::Warning,
        raised_at,
        cleared_at,
        value: 4.5,
        score: 5.25,
        peak_score: 6.5,
        peak_value: 5.0,
        peak_at: raised_at,
        message: "vibration z-score 5.25 above 4".into(),
    }
}

fn outbox_rollup(r: &Rollup, source: &str) -> OutboxEntry {
    OutboxEntry::Rollup {
        sensor: r.series.sensor.to_string(),
        field: r.series.field.to_string(),
        source: source.into(),
        start: r.start,
        length_ns: r.length_ns,
        stats: r.stats,
        tags: Default::default(),
    }
}

pub(super) fn all_outbox(store: &Store) -> Vec<(u64, OutboxEntry)> {
    store.outbox_after(0, usize::MAX).unwrap()
}

/// Live bytes of one table, measured the way the byte budget measures them.
pub(super) fn bytes_of<K: redb::Key + 'static, V: redb::Value + 'static>(
    store: &Store,
    table: redb::TableDefinition<'_, K, V>,
) -> u64 {
    let txn = store.inner.db.begin_read().unwrap();
    table_bytes(&txn.open_table(table).unwrap()).unwrap()
}

#[test]
fn rollups_with_the_same_series_and_start_are_merged_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let first = rollup("p-101", "temperature", T0, &[70.0, 71.5, 72.25]);
    let late = rollup("p-101", "temperature", T0, &[69.5]);
    let source: Arc<str> = "plant-broker".into();
    let one = store
        .write(&WriteBatch {
            new_series: vec![(first.series.clone(), source)],
            rollups: vec![first.clone()],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((one.rollups_inserted, one.rollups_merged), (1, 0));
    let two = store
        .write(&WriteBatch {
            rollups: vec![late.clone()],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((two.rollups_inserted, two.rollups_merged), (0, 1));
    assert_eq!(two.outbox_appended, 1);

    let mut expected = first.stats;
    expected.merge(&late.stats);
    let stored = store
        .rollups("p-101", Some("temperature"), T0, T0 + 1)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].stats, expected);
    assert_eq!(stored[0].stats.count, 4);

    let outbox = all_outbox(&store);
    let merged = Rollup {
        stats: expected,
        ..first.clone()
    };
    assert_eq!(
        outbox,
        vec![
            (1, outbox_rollup(&first, "plant-broker")),
            (2, outbox_rollup(&merged, "plant-broker")),
        ]
    );
}

#[test]
fn rollups_for_the_same_window_within_one_batch_give_one_outbox_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let a = rollup("p-1", "pressure", T0, &[3.5]);
    let b = rollup("p-1", "pressure", T0, &[4.0, 4.25]);
    let report = store
        .write(&WriteBatch {
            rollups: vec![a.clone(), b.clone()],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((report.rollups_inserted, report.rollups_merged), (1, 1));
    let mut merged = a.stats;
    merged.merge(&b.stats);
    let outbox = all_outbox(&store);
    assert_eq!(outbox.len(), 1);
    assert!(
        matches!(&outbox[0].1, OutboxEntry::Rollup { stats, source, .. }
        if *stats == merged && source.is_empty())
    );
}

/// One step of the outbox model: rollups as (sensor, window, values), then events as
/// (id, cleared).
type ModelBatch = (Vec<(u8, u8, Vec<i8>)>, Vec<(u8, bool)>);

fn model_batches() -> impl Strategy<Value = Vec<ModelBatch>> {
    let rollups = prop::collection::vec(
        (0u8..3, 0u8..3, prop::collection::vec(any::<i8>(), 1..4)),
        0..5,
    );
    let events = prop::collection::vec((0u8..4, any::<bool>()), 0..3);
    prop::collection::vec((rollups, events), 1..6)
}

/// Compares outbox entries exactly, except that a rollup's floats may differ by one unit in
/// the last place: serde_json without its `float_roundtrip` feature does not always parse a
/// float back to the same bits (for example 1758.1749999999997 reads as ...95).
fn same_entries(
    got: &[(u64, OutboxEntry)],
    want: &[(u64, OutboxEntry)],
) -> Result<(), TestCaseError> {
    /// The entry with its computed floats (sum, m2) taken out, and those floats.
    fn split(entry: &OutboxEntry) -> (OutboxEntry, [f64; 2]) {
        let mut entry = entry.clone();
        let mut floats = [0.0; 2];
        if let OutboxEntry::Rollup { stats, .. } = &mut entry {
            floats = [stats.sum, stats.m2];
            (stats.sum, stats.m2) = (0.0, 0.0);
        }
        (entry, floats)
    }
    prop_assert_eq!(got.len(), want.len(), "{:?} != {:?}", got, want);
    for ((seq_a, a), (seq_b, b)) in got.iter().zip(want) {
        prop_assert_eq!(seq_a, seq_b);
        let ((a, floats_a), (b, floats_b)) = (split(a), split(b));
        prop_assert_eq!(a, b);
        for (x, y) in floats_a.into_iter().zip(floats_b) {
            prop_assert!(
                x == y || x.to_bits().abs_diff(y.to_bits()) <= 1,
                "{x} vs {y}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The outbox equals a model that merges rollups in a `BTreeMap` and appends to a `Vec`,
    /// and paging through it with any page size gives the same list.
    #[test]
    fn outbox_matches_a_model_of_merged_rollups_and_events(
        batches in model_batches(),
        page in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&test_config(dir.path())).unwrap();
        let mut stored: BTreeMap<(u8, u8), Stats> = BTreeMap::new();
        let mut model: Vec<OutboxEntry> = Vec::new();
        for (rollup_specs, event_specs) in &batches {
            let mut batch = WriteBatch::default();
            // The model of one commit: each window touched gets one entry, in order of first
            // appearance, carrying stored ⊕ incoming in batch order.
            let mut touched: Vec<(u8, u8)> = Vec::new();
            let mut next: BTreeMap<(u8, u8), Stats> = BTreeMap::new();
            for (sensor, window, values) in rollup_specs {
                let values: Vec<f64> = values.iter().map(|&v| f64::from(v) / 4.0).collect();
                let start = T0 + i64::from(*window) * 60 * NS_PER_SEC;
                let r = rollup(&format!("s{sensor}"), "temperature", start, &values);
                let key = (*sensor, *window);
                let acc = next.entry(key).or_insert_with(|| {
                    touched.push(key);
                    stored.get(&key).copied().unwrap_or(Stats { count: 0, ..r.stats })
                });
                acc.merge(&r.stats);
                batch.rollups.push(r);
            }
            for key in touched {
                let stats = next[&key];
                stored.insert(key, stats);
                let start = T0 + i64::from(key.1) * 60 * NS_PER_SEC;
                model.push(OutboxEntry::Rollup {
                    sensor: format!("s{}", key.0),
                    field: "temperature".into(),
                    source: String::new(),
                    start,
                    length_ns: 60 * NS_PER_SEC,
                    stats,
                    tags: Default::default(),
                });
            }
            for (id, cleared) in event_specs {
                let e = event(u64::from(*id), "s0", T0, cleared.then_some(T0 + HOUR));
                model.push(OutboxEntry::Event(e.clone()));
                batch.events.push(e);
            }
            store.write(&batch).unwrap();
        }
        let all = all_outbox(&store);
        let expected: Vec<(u64, OutboxEntry)> =
            model.iter().cloned().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
        same_entries(&all, &expected)?;
        // The stored rollups themselves are bit-exact.
        for ((sensor, window), stats) in &stored {
            let start = T0 + i64::from(*window) * 60 * NS_PER_SEC;
            let got = store.rollups(&format!("s{sensor}"), None, start, start + 1).unwrap();
            prop_assert_eq!(got[0].stats, *stats);
        }

        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let chunk = store.outbox_after(after, page).unwrap();
            prop_assert!(chunk.len() <= page);
            let Some(last) = chunk.last() else { break };
            after = last.0;
            paged.extend(chunk);
        }
        prop_assert_eq!(&paged, &all);
        for skip in 0..=all.len() {
            let tail = store.outbox_after(skip as u64, usize::MAX).unwrap();
            prop_assert_eq!(&tail[..], &all[skip..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Raw readings read back like a `BTreeMap` model (a repeated time keeps the last value),
    /// whether they are still in `raw_recent` or already folded into `raw`, and retention by
    /// age removes exactly the model's readings older than the cutoff.
    #[test]
    fn raw_reads_match_a_model_across_folds(
        batches in prop::collection::vec(
            prop::collection::vec((0u8..3, 0i64..40, any::<i8>()), 0..30),
            1..6,
        ),
        fold in 1u64..40,
        (from, to, limit) in (0i64..40, 0i64..41, 1usize..50),
        cutoff in 0i64..41,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            raw_retention_secs: 10,
            ..test_config(dir.path())
        };
        let store = Store::open_tuned(&config, fold).unwrap();
        let mut model: BTreeMap<(u8, i64), f64> = BTreeMap::new();
        for batch in &batches {
            let mut write = WriteBatch::default();
            for &(series, t, v) in batch {
                write.raw.push(reading(&format!("s{series}"), "t", T0 + t, f64::from(v)));
                model.insert((series, t), f64::from(v));
            }
            store.write(&write).unwrap();
        }
        let read = |store: &Store, series: u8, from: i64, to: i64, limit: usize| {
            store
                .raw(&SeriesKey::new(format!("s{series}"), "t"), T0 + from, T0 + to, limit)
                .unwrap()
                .into_iter()
                .map(|(t, v, _)| (t - T0, v))
                .collect::<Vec<_>>()
        };
        let want = |model: &BTreeMap<(u8, i64), f64>, series: u8, from: i64, to: i64, limit| {
            if from >= to {
                return Vec::new();
            }
            model
                .range((series, from)..(series, to))
                .map(|(&(_, t), &v)| (t, v))
                .take(limit)
                .collect::<Vec<_>>()
        };
        for series in 0..3 {
            prop_assert_eq!(read(&store, series, from, to, limit), want(&model, series, from, to, limit));
            prop_assert_eq!(read(&store, series, 0, 40, 100), want(&model, series, 0, 40, 100));
        }
        // Retention with raw_retention_secs = 10 at now = cutoff + 10 s removes t < cutoff.
        let report = store.apply_retention(T0 + cutoff + 10 * NS_PER_SEC).unwrap();
        let before = model.len();
        model.retain(|&(_, t), _| t >= cutoff);
        prop_assert!(report.raw_removed >= (before - model.len()) as u64);
        for series in 0..3 {
            prop_assert_eq!(read(&store, series, 0, 40, 100), want(&model, series, 0, 40, 100));
        }
    }
}

#[test]
fn reopening_keeps_everything_and_the_outbox_sequence_continues() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let key = SeriesKey::new("press-1", "temperature");
    let r = rollup("press-1", "temperature", T0, &[21.5, 22.0]);
    {
        let store = Store::open(&config).unwrap();
        store
            .write(&WriteBatch {
                new_series: vec![(key.clone(), "press-1".into())],
                raw: vec![
                    reading("press-1", "temperature", T0, 21.5),
                    reading("press-1", "temperature", T0 + NS_PER_SEC, 22.0),
                ],
                rollups: vec![r.clone()],
                events: vec![event(7, "press-1", T0, None)],
                ..WriteBatch::default()
            })
            .unwrap();
    }
    let store = Store::open(&config).unwrap();
    assert_eq!(
        store.series().unwrap(),
        vec![(key.clone(), "press-1".into())]
    );
    assert_eq!(
        store.raw(&key, T0, T0 + HOUR, 10).unwrap(),
        vec![
            (T0, 21.5, Quality::GOOD),
            (T0 + NS_PER_SEC, 22.0, Quality::GOOD)
        ]
    );
    assert_eq!(
        store.rollups("press-1", None, T0, T0 + HOUR).unwrap(),
        vec![r.clone()]
    );
    assert_eq!(
        store.events(&EventFilter::default()).unwrap(),
        vec![event(7, "press-1", T0, None)]
    );
    assert_eq!(store.next_event_id().unwrap(), 8);
    assert_eq!(all_outbox(&store).len(), 2);

    // A known series is still resolved after reopening: no second id, no new registration.
    store
        .write(&WriteBatch {
            events: vec![event(7, "press-1", T0, Some(T0 + HOUR))],
            raw: vec![reading("press-1", "temperature", T0 + 2 * NS_PER_SEC, 22.5)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.series().unwrap().len(), 1);
    let outbox = all_outbox(&store);
    assert_eq!(
        outbox.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(store.raw(&key, T0, T0 + HOUR, 10).unwrap().len(), 3);
}

#[test]
fn event_filter_selects_active_cleared_and_sensor_newest_first_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    store
        .write(&WriteBatch {
            events: vec![
                event(1, "a", T0, Some(T0 + HOUR)),
                event(2, "b", T0 + 1, None),
                event(3, "a", T0 + 2, None),
                event(4, "b", T0 + 3, Some(T0 + HOUR)),
                event(5, "a", T0 + 4, None),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let ids = |filter: EventFilter| -> Vec<u64> {
        store
            .events(&filter)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(ids(EventFilter::default()), vec![5, 4, 3, 2, 1]);
    let active = |active| EventFilter {
        active: Some(active),
        ..EventFilter::default()
    };
    assert_eq!(ids(active(true)), vec![5, 3, 2]);
    assert_eq!(ids(active(false)), vec![4, 1]);
    let sensor = EventFilter {
        sensor: Some("a".into()),
        ..EventFilter::default()
    };
    assert_eq!(ids(sensor.clone()), vec![5, 3, 1]);
    assert_eq!(
        ids(EventFilter {
            active: Some(true),
            limit: 1,
            ..sensor
        }),
        vec![5]
    );
    assert_eq!(
        ids(EventFilter {
            limit: 2,
            ..EventFilter::default()
        }),
        vec![5, 4]
    );
}

#[test]
fn event_filter_selects_by_rule_and_by_episodes_overlapping_a_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let with_rule = |mut e: AnomalyEvent, rule: &str| {
        e.rule = rule.into();
        e
    };
    store
        .write(&WriteBatch {
            events: vec![
                // Over before the range.
                event(1, "a", T0, Some(T0 + HOUR)),
                // Cleared exactly at the range's start: still touches it.
                with_rule(event(2, "a", T0 + HOUR, Some(T0 + 2 * HOUR)), "limit:hot"),
                // Inside the range.
                with_rule(
                    event(3, "b", T0 + 2 * HOUR + 1, Some(T0 + 3 * HOUR)),
                    "limit:hot",
                ),
                // Raised before the range and still active.
                event(4, "a", T0 + HOUR / 2, None),
                // Raised exactly at the range's end: outside (`to` is exclusive).
                event(5, "b", T0 + 4 * HOUR, None),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let ids = |filter: EventFilter| -> Vec<u64> {
        store
            .events(&filter)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    let range = EventFilter {
        from: Some(T0 + 2 * HOUR),
        to: Some(T0 + 4 * HOUR),
        ..EventFilter::default()
    };
    assert_eq!(ids(range.clone()), vec![4, 3, 2]);
    let rule = EventFilter {
        rule: Some("limit:hot".into()),
        ..EventFilter::default()
    };
    assert_eq!(ids(rule.clone()), vec![3, 2]);
    assert_eq!(
        ids(EventFilter {
            sensor: Some("a".into()),
            ..rule
        }),
        vec![2]
    );
    assert_eq!(
        ids(EventFilter {
            active: Some(true),
            ..range.clone()
        }),
        vec![4]
    );
    assert_eq!(
        ids(EventFilter {
            from: None,
            ..range
        }),
        vec![4, 3, 2, 1]
    );
}

#[test]
fn raw_each_merges_both_raw_tables_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // Folds after every 3 readings, so the history is split over `raw` and `raw_recent`.
    let store = Store::open_tuned(&test_config(dir.path()), 3).unwrap();
    for chunk in [[0, 2, 4], [1, 3, 5]] {
        let mut batch = WriteBatch::default();
        for i in chunk {
            batch.raw.push(reading("a", "t", T0 + i, i as f64));
            batch.raw.push(reading("b", "t", T0 + i, -1.0));
        }
        store.write(&batch).unwrap();
    }
    // A newer write of time 2 lands in `raw_recent` and wins over the folded one.
    let mut batch = WriteBatch::default();
    batch.raw.push(reading("a", "t", T0 + 2, 20.0));
    store.write(&batch).unwrap();

    let key = SeriesKey::new("a", "t");
    let mut seen = Vec::new();
    store
        .raw_each(&key, T0 + 1, T0 + 6, |t, v, _| {
            seen.push((t - T0, v));
            true
        })
        .unwrap();
    assert_eq!(
        seen,
        vec![(1, 1.0), (2, 20.0), (3, 3.0), (4, 4.0), (5, 5.0)]
    );

    let mut seen = Vec::new();
    store
        .raw_each(&key, T0, T0 + 6, |t, _, _| {
            seen.push(t - T0);
            seen.len() < 2
        })
        .unwrap();
    assert_eq!(seen, vec![0, 1]);
    let keys = [
        SeriesKey::new("b", "t"),
        SeriesKey::new("nope", "t"),
        SeriesKey::new("a", "t"),
    ];
    let mut seen = Vec::new();
    store
        .raw_each_of(&keys, T0 + 4, T0 + 6, |i, t, v, _| {
            seen.push((i, t - T0, v));
            true
        })
        .unwrap();
    assert_eq!(
        seen,
        vec![(0, 4, -1.0), (0, 5, -1.0), (2, 4, 4.0), (2, 5, 5.0)]
    );
    assert_eq!(store.fields("a").unwrap(), vec!["t".to_string()]);
    assert!(store.fields("nope").unwrap().is_empty());
}

#[test]
fn raw_readings_are_not_stored_when_raw_retention_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        raw_retention_secs: 0,
        ..test_config(dir.path())
    };
    let store = Store::open(&config).unwrap();
    let report = store
        .write(&WriteBatch {
            raw: vec![reading("a", "t", T0, 1.0)],
            rollups: vec![rollup("a", "t", T0, &[1.0])],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(report.raw_written, 0);
    assert_eq!(report.rollups_inserted, 1);
    let stats = store.stats().unwrap();
    assert_eq!((stats.raw_readings, stats.rollups), (0, 1));
    assert!(
        store
            .raw(&SeriesKey::new("a", "t"), 0, i64::MAX, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unknown_series_are_registered_without_a_source_until_one_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let key = SeriesKey::new("m-1", "t");
    store
        .write(&WriteBatch {
            raw: vec![reading("m-1", "t", T0, 1.0)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.series().unwrap(), vec![(key.clone(), String::new())]);
    store
        .write(&WriteBatch {
            new_series: vec![(key.clone(), "mqtt".into())],
            rollups: vec![rollup("m-1", "t", T0, &[1.0])],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.series().unwrap(), vec![(key, "mqtt".into())]);
    assert!(
        matches!(&all_outbox(&store)[0].1, OutboxEntry::Rollup { source, .. } if source == "mqtt")
    );
}

#[test]
fn reads_return_ranges_in_order_and_respect_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let mut batch = WriteBatch::default();
    for (sensor, field) in [("a", "t"), ("a", "p"), ("ab", "t"), ("b", "t")] {
        for i in (0..5).rev() {
            batch.raw.push(reading(sensor, field, T0 + i, i as f64));
            batch
                .rollups
                .push(rollup(sensor, field, T0 + i * 60 * NS_PER_SEC, &[1.0]));
        }
    }
    store.write(&batch).unwrap();
    let key = SeriesKey::new("a", "t");
    let times: Vec<TimeNs> = store
        .raw(&key, T0 + 1, T0 + 4, 10)
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(times, vec![T0 + 1, T0 + 2, T0 + 3]);
    assert_eq!(store.raw(&key, T0, T0 + 5, 2).unwrap().len(), 2);
    let rollups = store
        .rollups("a", None, T0, T0 + 2 * 60 * NS_PER_SEC)
        .unwrap();
    let got: Vec<(String, TimeNs)> = rollups
        .iter()
        .map(|r| (r.series.to_string(), r.start - T0))
        .collect();
    let minute = 60 * NS_PER_SEC;
    assert_eq!(
        got,
        vec![
            ("a/p".into(), 0),
            ("a/p".into(), minute),
            ("a/t".into(), 0),
            ("a/t".into(), minute)
        ]
    );
    assert_eq!(
        store
            .rollups("a", Some("p"), T0, T0 + 10 * minute)
            .unwrap()
            .len(),
        5
    );
    assert!(
        store
            .rollups("nobody", None, T0, T0 + minute)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.series().unwrap().len(), 4);
}

#[test]
fn a_file_with_a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    drop(Store::open(&config).unwrap());
    {
        let db = redb::Database::create(&config.path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA_VERSION, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&config) {
        Err(StoreError::SchemaTooNew {
            found: 2,
            supported: 1,
            ..
        }) => {}
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("expected SchemaTooNew, the store opened"),
    }
}

#[test]
fn raw_recent_is_folded_by_age_as_well_as_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_config(dir.path())).unwrap();
    let recent_len = |store: &Store| -> u64 {
        let txn = store.inner.db.begin_read().unwrap();
        txn.open_table(RAW_RECENT).unwrap().len().unwrap()
    };
    let write = |times: std::ops::Range<i64>| {
        let mut batch = WriteBatch::default();
        for i in times {
            batch.raw.push(reading("a", "t", T0 + i, i as f64));
        }
        store.write(&batch).unwrap();
    };
    // Far below the count bound and within the age bound: the readings wait in `raw_recent`.
    write(0..3);
    assert_eq!(recent_len(&store), 3);
    // The age bound has passed: the next commit with raw readings folds everything.
    store.set_fold_max_age(Duration::ZERO);
    write(3..5);
    assert_eq!(recent_len(&store), 0);
    // The clock restarted with that fold.
    store.set_fold_max_age(Duration::from_secs(3_600));
    write(5..6);
    assert_eq!(recent_len(&store), 1);
    let key = SeriesKey::new("a", "t");
    let all: Vec<(i64, f64)> = store
        .raw(&key, T0, T0 + 10, 100)
        .unwrap()
        .into_iter()
        .map(|(t, v, _)| (t - T0, v))
        .collect();
    assert_eq!(all, (0..6).map(|i| (i, i as f64)).collect::<Vec<_>>());
}
