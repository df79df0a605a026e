//! Tests of the pipeline core as a whole: windows, flags, late corrections, detectors, output.

use super::*;
use crate::config::{RuleConfig, RuleKind};
use crate::model::Severity;

const S: i64 = NS_PER_SEC;
/// 2026-01-01T00:00:00Z, a trusted time.
const T0: i64 = 1_767_225_600 * S;

fn settings() -> Settings {
    Settings {
        window_ns: 60 * S,
        lateness_ns: 10 * S,
        rolling_ns: 60 * S,
        max_future_ns: 300 * S,
        rollup_retention_ns: 3600 * S,
        keep_raw: true,
    }
}

fn limit_rule() -> RuleConfig {
    RuleConfig {
        name: "hot".into(),
        pattern: "*/temperature".into(),
        severity: Severity::Critical,
        min_duration_secs: 0.0,
        holdoff_secs: 0.0,
        flap_window_secs: 0.0,
        flap_max_events: 3,
        kind: RuleKind::Limit {
            min: None,
            min_clear: None,
            max: Some(100.0),
            max_clear: Some(95.0),
        },
    }
}

fn pipeline(rules: &[RuleConfig]) -> Pipeline {
    Pipeline::new(
        settings(),
        RuleSet::compile(rules).unwrap(),
        1,
        Vec::new(),
        T0,
    )
}

fn batch(readings: &[(&str, i64, f64)]) -> Batch {
    Batch::new(
        "test".into(),
        readings
            .iter()
            .map(|&(sensor, t, value)| Reading {
                series: SeriesKey::new(sensor, "temperature"),
                time: t,
                value,
                quality: Quality::GOOD,
            })
            .collect(),
    )
}

#[test]
fn rollups_hold_exact_counts_and_means_of_their_windows() {
    let mut p = pipeline(&[]);
    let mut expected_sum = 0.0;
    for i in 0..130 {
        let v = 20.0 + (i % 7) as f64 * 0.1;
        if i < 60 {
            expected_sum += v;
        }
        p.ingest(batch(&[("a", T0 + i * S, v)]), T0 + i * S);
    }
    let out = p.take_output();
    assert_eq!(
        out.rollups.len(),
        1,
        "only the first window is closed at watermark 119 s"
    );
    let r = &out.rollups[0];
    assert_eq!((r.start, r.stats.count), (T0, 60));
    assert_eq!(r.stats.mean(), expected_sum / 60.0);
    assert_eq!(out.raw.len(), 130);
    assert_eq!(out.new_series.len(), 1);
    p.flush();
    let out = p.take_output();
    assert_eq!(
        out.rollups
            .iter()
            .map(|r| r.stats.count)
            .collect::<Vec<_>>(),
        vec![60, 10]
    );
}

#[test]
fn non_finite_values_are_flagged_counted_and_kept_out_of_aggregates() {
    let mut p = pipeline(&[]);
    p.ingest(
        batch(&[
            ("a", T0, 1.0),
            ("a", T0 + S, f64::NAN),
            ("a", T0 + 2 * S, f64::INFINITY),
        ]),
        T0,
    );
    p.flush();
    let out = p.take_output();
    assert_eq!(p.counters().not_finite, 2);
    assert_eq!(out.rollups[0].stats.count, 1);
    assert_eq!(out.raw.len(), 3, "flagged readings are still stored raw");
    assert!(out.raw[1].quality.contains(Quality::NOT_FINITE));
}

#[test]
fn readings_from_before_2000_or_the_far_future_are_flagged_not_trusted() {
    let mut p = pipeline(&[]);
    p.ingest(
        batch(&[("a", 5 * S, 1.0), ("a", T0 + 3600 * S, 1.0), ("a", T0, 2.0)]),
        T0,
    );
    assert_eq!(p.counters().time_suspect, 2);
    assert_eq!(
        p.watermark(),
        Some(T0 - 10 * S),
        "suspect times do not move the watermark"
    );
    p.flush();
    let out = p.take_output();
    assert_eq!(out.rollups.len(), 1);
    assert_eq!(
        out.raw
            .iter()
            .filter(|r| r.quality.contains(Quality::TIME_SUSPECT))
            .count(),
        2
    );
}

#[test]
fn late_reading_emits_a_correction_for_its_window() {
    let mut p = pipeline(&[]);
    p.ingest(
        batch(&[("a", T0 + 5 * S, 1.0), ("a", T0 + 75 * S, 2.0)]),
        T0,
    );
    assert_eq!(p.take_output().rollups.len(), 1);
    p.ingest(batch(&[("a", T0 + 30 * S, 4.0)]), T0);
    let out = p.take_output();
    assert_eq!(out.rollups.len(), 1);
    assert_eq!((out.rollups[0].start, out.rollups[0].stats.count), (T0, 1));
    assert!(out.rollups[0].stats.quality.contains(Quality::LATE));
    assert_eq!(p.counters().late_corrected, 1);
}

#[test]
fn late_reading_older_than_rollup_retention_is_counted_and_kept_raw() {
    let mut p = pipeline(&[]);
    p.ingest(batch(&[("a", T0 + 7200 * S, 1.0)]), T0 + 7200 * S);
    p.take_output();
    p.ingest(batch(&[("a", T0, 4.0)]), T0 + 7200 * S);
    let out = p.take_output();
    assert!(out.rollups.is_empty());
    assert_eq!(out.raw.len(), 1);
    assert_eq!(p.counters().late_dropped, 1);
}

#[test]
fn limit_rule_raises_and_clears_through_the_pipeline_with_unique_ids() {
    let mut p = Pipeline::new(
        settings(),
        RuleSet::compile(&[limit_rule()]).unwrap(),
        41,
        Vec::new(),
        T0,
    );
    p.ingest(
        batch(&[("a", T0, 90.0), ("a", T0 + S, 105.0), ("b", T0 + S, 101.0)]),
        T0,
    );
    let snap = p.snapshot(T0 + S);
    assert_eq!(snap.active_events.len(), 2);
    p.ingest(batch(&[("a", T0 + 2 * S, 90.0)]), T0);
    let out = p.take_output();
    let ids: Vec<_> = out
        .events
        .iter()
        .map(|e| (e.id, e.sensor.as_str(), e.is_active()))
        .collect();
    assert_eq!(
        ids,
        vec![(41, "a", true), (42, "b", true), (41, "a", false)]
    );
    assert_eq!(p.snapshot(T0).active_events.len(), 1);
}

#[test]
fn active_event_from_before_a_restart_is_cleared_once() {
    let mut first = pipeline(&[limit_rule()]);
    first.ingest(batch(&[("a", T0, 105.0)]), T0);
    let active = first.take_output().events;
    let mut p = Pipeline::new(
        settings(),
        RuleSet::compile(&[limit_rule()]).unwrap(),
        2,
        active,
        T0,
    );
    // Shown as active before its sensor reports again, then attached to the series.
    assert_eq!(p.snapshot(T0).active_events.len(), 1);
    p.ingest(batch(&[("a", T0 + S, 104.0)]), T0);
    assert_eq!(p.snapshot(T0).active_events.len(), 1);
    p.ingest(batch(&[("a", T0 + 2 * S, 90.0)]), T0);
    let out = p.take_output();
    assert_eq!(out.events.len(), 1);
    assert_eq!(
        (out.events[0].id, out.events[0].cleared_at),
        (1, Some(T0 + 2 * S))
    );
}

#[test]
fn active_event_of_a_removed_rule_is_cleared_at_start() {
    let mut first = pipeline(&[limit_rule()]);
    first.ingest(batch(&[("a", T0, 105.0)]), T0);
    let active = first.take_output().events;
    let mut p = Pipeline::new(
        settings(),
        RuleSet::compile(&[]).unwrap(),
        2,
        active.clone(),
        T0,
    );
    let out = p.take_output();
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].cleared_at, Some(T0));
    assert_eq!(active[0].id, out.events[0].id);
}

#[test]
fn live_view_shows_latest_value_and_rolling_average() {
    let mut p = pipeline(&[]);
    p.ingest(batch(&[("a", T0, 1.0), ("a", T0 + S, 3.0)]), T0);
    let snap = p.snapshot(T0);
    let f = &snap.sensors["a"].fields["temperature"];
    assert_eq!((f.value, f.time, f.rolling_avg), (3.0, T0 + S, Some(2.0)));
    assert_eq!(snap.sensors["a"].source, "test");
}

#[test]
fn raw_readings_are_not_output_when_raw_storage_is_off() {
    let mut p = Pipeline::new(
        Settings {
            keep_raw: false,
            ..settings()
        },
        RuleSet::compile(&[]).unwrap(),
        1,
        Vec::new(),
        T0,
    );
    p.ingest(batch(&[("a", T0, 1.0)]), T0);
    assert!(p.take_output().raw.is_empty());
}

/// What the store keeps of the pipeline's output: merged rollups and the open-window
/// checkpoints, applied per output the way a commit applies them.
#[derive(Default)]
struct Kept {
    rollups: std::collections::BTreeMap<(String, i64), Stats>,
    open: std::collections::BTreeMap<(String, i64), Rollup>,
}

impl Kept {
    fn apply(&mut self, out: WriteBatch) {
        for r in out.rollups {
            let key = (r.series.sensor.to_string(), r.start);
            self.rollups
                .entry(key)
                .and_modify(|s| s.merge(&r.stats))
                .or_insert(r.stats);
        }
        for w in out.open_windows {
            self.open.insert((w.series.sensor.to_string(), w.start), w);
        }
        for (key, start) in out.closed_windows {
            self.open.remove(&(key.sensor.to_string(), start));
        }
    }

    fn counts(&self) -> Vec<((String, i64), u64)> {
        self.rollups
            .iter()
            .map(|(k, s)| (k.clone(), s.count))
            .collect()
    }
}

#[test]
fn after_a_crash_the_restored_windows_give_the_rollups_of_an_uninterrupted_run() {
    let readings: Vec<(&str, i64, f64)> = (0..400)
        .map(|i| {
            let sensor = if i % 3 == 0 { "a" } else { "b" };
            (sensor, T0 + i * S / 2, (i % 17) as f64)
        })
        .collect();
    let mut whole = pipeline(&[]);
    let mut expected = Kept::default();
    for chunk in readings.chunks(7) {
        whole.ingest(batch(chunk), T0);
        expected.apply(whole.take_output());
    }
    whole.flush();
    expected.apply(whole.take_output());

    for crash_after in [1, 13, 30, 57] {
        let mut first = pipeline(&[]);
        let mut kept = Kept::default();
        let chunks: Vec<_> = readings.chunks(7).collect();
        for chunk in &chunks[..crash_after] {
            first.ingest(batch(chunk), T0);
            kept.apply(first.take_output());
        }
        // SIGKILL: `first` is gone without a flush; only what was committed remains.
        drop(first);
        let mut second = pipeline(&[]);
        let restored = kept
            .open
            .values()
            .map(|w| (w.clone(), Arc::from("test")))
            .collect();
        second.restore_windows(restored);
        for chunk in &chunks[crash_after..] {
            second.ingest(batch(chunk), T0);
            kept.apply(second.take_output());
        }
        second.flush();
        kept.apply(second.take_output());
        assert_eq!(
            kept.counts(),
            expected.counts(),
            "crash after {crash_after}"
        );
        assert!(kept.open.is_empty(), "a flush leaves no checkpoint behind");
    }
}

#[test]
fn sensor_tags_are_handed_to_the_store_only_when_new_or_changed() {
    let mut p = pipeline(&[]);
    let tags = |line: &str| -> Arc<crate::model::Tags> {
        Arc::new([("line".to_string(), line.to_string())].into())
    };
    let mut b = batch(&[("a", T0, 1.0)]);
    b.tags = vec![("a".into(), tags("l1"))];
    p.ingest(b.clone(), T0);
    assert_eq!(p.take_output().sensor_tags.len(), 1);
    p.ingest(b, T0);
    assert!(p.take_output().sensor_tags.is_empty(), "unchanged");
    let mut moved = batch(&[("a", T0 + S, 1.0)]);
    moved.tags = vec![("a".into(), tags("l2"))];
    p.ingest(moved, T0);
    let out = p.take_output();
    assert_eq!(
        out.sensor_tags,
        vec![("a".to_string(), (*tags("l2")).clone())]
    );
    assert_eq!(p.snapshot(T0).sensors["a"].tags, *tags("l2"));
}

fn limit(name: &str, pattern: &str, max: f64, max_clear: f64) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        pattern: pattern.into(),
        kind: RuleKind::Limit {
            min: None,
            min_clear: None,
            max: Some(max),
            max_clear: Some(max_clear),
        },
        ..limit_rule()
    }
}

#[test]
fn replacing_rules_keeps_unchanged_ones_hands_over_changed_episodes_and_clears_the_rest() {
    let mut p = pipeline(&[
        limit("hot", "*/temperature", 100.0, 95.0),
        limit("warm", "*/temperature", 50.0, 45.0),
        limit("gone", "*/temperature", 10.0, 5.0),
        limit("narrowed", "*/temperature", 10.0, 5.0),
    ]);
    p.ingest(batch(&[("a", T0, 120.0)]), T0);
    let raised = p.take_output().events;
    assert_eq!(raised.len(), 4);
    let id_of = |rule: &str| raised.iter().find(|e| e.rule == rule).unwrap().id;

    let cleared = p.replace_rules(
        RuleSet::compile(&[
            limit("hot", "*/temperature", 100.0, 95.0),
            limit("warm", "*/temperature", 60.0, 55.0),
            limit("narrowed", "b*/temperature", 10.0, 5.0),
        ])
        .unwrap(),
        T0 + S,
    );
    assert_eq!(cleared, 2);
    let out = p.take_output().events;
    let mut reasons: Vec<(String, u64, String)> = out
        .iter()
        .map(|e| {
            assert_eq!(e.cleared_at, Some(T0 + S), "{e:?}");
            (e.rule.clone(), e.id, e.message.clone())
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0].0, "gone");
    assert_eq!(reasons[0].1, id_of("gone"));
    assert!(
        reasons[0]
            .2
            .contains("cleared on reload: rule `gone` is no longer configured"),
        "{}",
        reasons[0].2
    );
    assert_eq!(reasons[1].0, "narrowed");
    assert!(
        reasons[1].2.contains("no longer applies to this sensor"),
        "{}",
        reasons[1].2
    );
    let mut active: Vec<String> = p
        .snapshot(T0 + S)
        .active_events
        .into_iter()
        .map(|e| e.rule)
        .collect();
    active.sort();
    assert_eq!(active, ["hot", "warm"]);

    // Still hot: neither hot (kept) nor warm (handed over) is raised a second time.
    p.ingest(batch(&[("a", T0 + 2 * S, 120.0)]), T0 + 2 * S);
    assert!(p.take_output().events.is_empty());
    // Cool: both clear once, under the ids they were raised with; warm by its new levels.
    p.ingest(batch(&[("a", T0 + 3 * S, 58.0)]), T0 + 3 * S);
    let out = p.take_output().events;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].rule.as_str(), out[0].id), ("hot", id_of("hot")));
    p.ingest(batch(&[("a", T0 + 4 * S, 50.0)]), T0 + 4 * S);
    let out = p.take_output().events;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].rule.as_str(), out[0].id), ("warm", id_of("warm")));
    assert!(out[0].cleared_at.is_some());
}
