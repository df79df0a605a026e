//! Detector tests: one fault, one event; levels, durations and hold-off per rule kind.

use super::*;

const S: i64 = NS_PER_SEC;

fn rule(kind: RuleKind, min_duration_secs: f64, holdoff_secs: f64) -> Arc<Rule> {
    Arc::new(Rule {
        name: "r".into(),
        kind,
        severity: Severity::Warning,
        min_duration: secs(min_duration_secs),
        holdoff: secs(holdoff_secs),
        flap_window: 0,
        flap_max: 3,
    })
}

fn key() -> SeriesKey {
    SeriesKey::new("s-1", "temperature")
}

/// Feeds `values` one per second and returns the events produced.
fn run(d: &mut Detector, values: &[f64]) -> Vec<AnomalyEvent> {
    let mut id = 1;
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| d.observe(&key(), i as i64 * S, *v, i as i64 * S, &mut id))
        .collect()
}

fn limit_max(max: f64, max_clear: f64) -> RuleKind {
    RuleKind::Limit {
        min: None,
        min_clear: None,
        max: Some(max),
        max_clear: Some(max_clear),
    }
}

#[test]
fn value_oscillating_around_a_limit_raises_one_event_not_a_storm() {
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
    let mut values = vec![90.0; 5];
    for i in 0..50 {
        values.push(if i % 2 == 0 { 100.5 } else { 99.5 });
    }
    values.extend([90.0; 5]);
    let events = run(&mut d, &values);
    assert_eq!(events.len(), 2, "one raise and one clear: {events:?}");
    assert!(events[0].is_active());
    assert_eq!(events[1].cleared_at, Some(55 * S));
    assert_eq!(events[0].id, events[1].id);
}

#[test]
fn raised_event_keeps_its_peak_until_cleared() {
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
    let events = run(&mut d, &[90.0, 101.0, 107.0, 103.0, 90.0]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].value, 101.0);
    assert_eq!((events[1].peak_value, events[1].peak_at), (107.0, 2 * S));
}

#[test]
fn min_duration_suppresses_short_excursions() {
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 3.0, 0.0));
    assert!(run(&mut d, &[90.0, 101.0, 102.0, 90.0, 101.0, 90.0]).is_empty());
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 3.0, 0.0));
    let events = run(&mut d, &[90.0, 101.0, 102.0, 103.0, 104.0, 90.0]);
    assert_eq!(
        events[0].raised_at,
        4 * S,
        "raised once the condition held 3 s"
    );
}

#[test]
fn holdoff_requires_the_clear_condition_to_last() {
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 3.0));
    let events = run(&mut d, &[101.0, 90.0, 90.0, 101.0, 90.0, 90.0, 90.0, 90.0]);
    assert_eq!(
        events.len(),
        2,
        "the dip at 1-2 s is shorter than the hold-off: {events:?}"
    );
    assert_eq!(events[1].cleared_at, Some(7 * S));
}

#[test]
fn low_limit_raises_below_min_and_clears_above_min_clear() {
    let kind = RuleKind::Limit {
        min: Some(10.0),
        min_clear: Some(12.0),
        max: None,
        max_clear: None,
    };
    let mut d = Detector::new(rule(kind, 0.0, 0.0));
    let events = run(&mut d, &[15.0, 9.0, 11.0, 9.5, 12.0]);
    assert_eq!(events.len(), 2);
    assert!(events[0].message.contains("below"));
    assert_eq!(events[1].cleared_at, Some(4 * S));
}

#[test]
fn rate_of_change_raises_on_a_jump() {
    let mut d = Detector::new(rule(
        RuleKind::Rate {
            raise: 1.0,
            clear: 0.5,
        },
        0.0,
        0.0,
    ));
    let events = run(&mut d, &[3.0, 3.1, 3.0, 6.0, 6.1, 6.0, 6.05]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].raised_at, 3 * S);
    assert!((events[0].score - 3.0).abs() < 1e-9);
}

#[test]
fn zscore_raises_on_an_outlier_and_clears_when_values_return() {
    for baseline in [
        crate::config::ZscoreBaseline::Window,
        crate::config::ZscoreBaseline::Ewma,
    ] {
        zscore_outlier(baseline);
    }
}

fn zscore_outlier(baseline: crate::config::ZscoreBaseline) {
    let kind = RuleKind::Zscore {
        baseline,
        window_secs: 60.0,
        raise: 5.0,
        clear: 2.0,
        min_samples: 20,
    };
    let mut d = Detector::new(rule(kind, 0.0, 0.0));
    let mut values: Vec<f64> = (0..40)
        .map(|i| 1.0 + if i % 2 == 0 { 0.01 } else { -0.01 })
        .collect();
    values.extend([3.0, 3.0, 3.0, 3.0]);
    values.extend((0..5).map(|i| 1.0 + if i % 2 == 0 { 0.01 } else { -0.01 }));
    let events = run(&mut d, &values);
    assert_eq!(events.len(), 2, "{baseline:?}: {events:?}");
    assert_eq!(events[0].raised_at, 40 * S);
    assert_eq!(
        events[1].cleared_at,
        Some(44 * S),
        "{baseline:?}: clears when values return"
    );
}

#[test]
fn zscore_episode_after_a_stuck_baseline_does_not_stay_active() {
    let kind = RuleKind::Zscore {
        baseline: crate::config::ZscoreBaseline::Window,
        window_secs: 60.0,
        raise: 6.0,
        clear: 3.0,
        min_samples: 30,
    };
    let mut d = Detector::new(rule(kind, 0.0, 0.0));
    let mut values = vec![0.5; 50];
    values.push(0.5001);
    values.extend((0..30).map(|i| 0.5 + if i % 2 == 0 { 0.03 } else { -0.03 }));
    let events = run(&mut d, &values);
    assert_eq!(
        events.len(),
        2,
        "raised when the baseline was degenerate, then cleared: {events:?}"
    );
    assert!(d.active().is_none());
}

#[test]
fn zscore_waits_for_min_samples() {
    let kind = RuleKind::Zscore {
        baseline: crate::config::ZscoreBaseline::Window,
        window_secs: 60.0,
        raise: 3.0,
        clear: 2.0,
        min_samples: 30,
    };
    let mut d = Detector::new(rule(kind, 0.0, 0.0));
    let mut values: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
    values.push(100.0);
    assert!(run(&mut d, &values).is_empty());
}

#[test]
fn stuck_value_raises_after_the_duration_and_clears_on_change() {
    let mut d = Detector::new(rule(
        RuleKind::Stuck {
            raise_secs: 5.0,
            tolerance: 0.0,
        },
        0.0,
        0.0,
    ));
    let mut values = vec![1.0, 2.0];
    values.extend([7.0; 8]);
    values.push(7.5);
    let events = run(&mut d, &values);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].raised_at, 7 * S, "stuck since 2 s, raised at 7 s");
    assert_eq!(events[1].cleared_at, Some(10 * S));
}

#[test]
fn silent_sensor_raises_on_tick_and_clears_on_the_next_reading() {
    let mut d = Detector::new(rule(RuleKind::Silent { raise_secs: 10.0 }, 0.0, 0.0));
    let mut id = 7;
    assert!(d.observe(&key(), 0, 1.0, 0, &mut id).is_none());
    assert!(d.tick(&key(), 5 * S, &mut id).is_none());
    let raised = d.tick(&key(), 11 * S, &mut id).expect("raised");
    assert_eq!((raised.id, raised.raised_at), (7, 11 * S));
    assert!(d.tick(&key(), 20 * S, &mut id).is_none(), "raised once");
    let cleared = d
        .observe(&key(), 21 * S, 1.0, 21 * S, &mut id)
        .expect("cleared");
    assert_eq!((cleared.id, cleared.cleared_at), (7, Some(21 * S)));
    assert_eq!(id, 8);
}

#[test]
fn restored_episode_is_cleared_not_raised_again() {
    let mut d = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
    let mut first = Detector::new(rule(limit_max(100.0, 95.0), 0.0, 0.0));
    let raised = run(&mut first, &[101.0]).remove(0);
    d.restore(raised.clone());
    let events = run(&mut d, &[102.0, 90.0]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, raised.id);
    assert!(events[0].cleared_at.is_some());
}

#[test]
fn rules_match_sensor_field_globs() {
    let configs = vec![RuleConfig {
        name: "vib".into(),
        pattern: "press-*/vibration".into(),
        severity: Severity::Critical,
        min_duration_secs: 0.0,
        holdoff_secs: 0.0,
        flap_window_secs: 0.0,
        flap_max_events: 3,
        kind: RuleKind::Stuck {
            raise_secs: 1.0,
            tolerance: 0.0,
        },
    }];
    let set = RuleSet::compile(&configs).unwrap();
    assert_eq!(
        set.detectors_for(&SeriesKey::new("press-1", "vibration"))
            .len(),
        1
    );
    assert!(
        set.detectors_for(&SeriesKey::new("press-1", "temperature"))
            .is_empty()
    );
    assert!(
        set.detectors_for(&SeriesKey::new("pump-1", "vibration"))
            .is_empty()
    );
}

/// A signal that keeps crossing both levels (noise larger than the hysteresis band, no
/// hold-off): without flap suppression every crossing is an episode; with it, the third
/// episode within the window lasts until the signal stayed calm for the whole window.
#[test]
fn flap_suppression_turns_a_storm_into_one_long_episode() {
    let flapping = |window_secs: f64| {
        let mut d = Detector::new(Arc::new(Rule {
            flap_window: secs(window_secs),
            flap_max: 3,
            ..Arc::unwrap_or_clone(rule(limit_max(100.0, 95.0), 0.0, 0.0))
        }));
        let mut values: Vec<f64> = (0..60)
            .map(|i| if i % 2 == 0 { 120.0 } else { 80.0 })
            .collect();
        // Then calm below the clear level for 40 s.
        values.extend(std::iter::repeat_n(80.0, 40));
        run(&mut d, &values)
    };
    let storm = flapping(0.0);
    assert_eq!(storm.iter().filter(|e| e.is_active()).count(), 30);

    let events = flapping(30.0);
    let raised: Vec<_> = events.iter().filter(|e| e.is_active()).collect();
    let cleared: Vec<_> = events.iter().filter(|e| !e.is_active()).collect();
    assert_eq!(raised.len(), 3, "{events:?}");
    assert_eq!(cleared.len(), 3, "{events:?}");
    // Episodes at 0 and 2 s clear at once; the third, raised at 4 s, clears at the first row
    // where the clear condition has held for the whole window: the last crossing is at 59 s,
    // so at 59 + 30 = 89 s.
    let last = cleared.last().unwrap();
    assert_eq!(last.raised_at, 4 * S);
    assert_eq!(last.cleared_at, Some(89 * S));
}
