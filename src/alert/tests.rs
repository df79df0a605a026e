//! The runner against a real store and a scripted transport: order, skipped rollups, cursor,
//! retries, dead letters, restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::runner::{AlertRunner, RetryPolicy};
use super::{AlertState, Deliver, DeliveryError, alert_json};
use crate::config::StoreConfig;
use crate::forward::status::{SinkHandle, SinkRegistry, SinkStatus};
use crate::metrics::Metrics;
use crate::model::{AnomalyEvent, Quality, Rollup, SeriesKey, Severity, Stats, parse_time};
use crate::store::{Store, WriteBatch};

/// Answers from a script (then `Ok`), recording what it delivered.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Result<(), DeliveryError>>>>,
    delivered: Arc<Mutex<Vec<(u64, AlertState)>>>,
    attempts: Arc<Mutex<u32>>,
}

impl Scripted {
    fn answering(answers: Vec<Result<(), DeliveryError>>) -> Scripted {
        Scripted {
            answers: Arc::new(Mutex::new(answers.into())),
            ..Scripted::default()
        }
    }

    fn delivered(&self) -> Vec<(u64, AlertState)> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Deliver for Scripted {
    async fn deliver(&mut self, event: &AnomalyEvent, gateway: &str) -> Result<(), DeliveryError> {
        assert_eq!(gateway, "gw1");
        *self.attempts.lock().unwrap() += 1;
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
        if answer.is_ok() {
            self.delivered
                .lock()
                .unwrap()
                .push((event.id, AlertState::of(event)));
        }
        answer
    }
}

fn store(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig {
        path: dir.join("s.redb"),
        ..StoreConfig::default()
    })
    .unwrap()
}

fn rollup(i: i64) -> Rollup {
    Rollup {
        series: SeriesKey::new("p-101", "vibration"),
        start: 1_767_225_600_000_000_000 + i * 60_000_000_000,
        length_ns: 60_000_000_000,
        stats: Stats::of(0, 1.0, Quality::GOOD),
    }
}

fn event(id: u64, cleared: bool) -> AnomalyEvent {
    let t = parse_time("2026-03-01T10:00:00Z").unwrap();
    AnomalyEvent {
        id,
        sensor: "p-101".into(),
        field: "vibration".into(),
        rule: "vibration-high".into(),
        kind: "zscore".into(),
        severity: Severity::Warning,
        raised_at: t,
        cleared_at: cleared.then_some(t + 90_000_000_000),
        value: 7.5,
        score: 4.25,
        peak_score: 5.5,
        peak_value: 9.0,
        peak_at: t + 1_500_000_000,
        message: "vibration 7.5 is 4.25 sd above the mean".into(),
    }
}

#[test]
fn the_body_names_every_field_with_rfc3339_times_and_the_state() {
    let mut raised = event(7, false);
    raised.peak_score = f64::NAN;
    let raised: serde_json::Value = serde_json::from_slice(&alert_json(&raised, "gw1")).unwrap();
    assert_eq!(
        raised,
        serde_json::json!({
            "gateway": "gw1",
            "event_id": 7,
            "state": "raised",
            "sensor": "p-101",
            "field": "vibration",
            "rule": "vibration-high",
            "kind": "zscore",
            "severity": "warning",
            "raised_at": "2026-03-01T10:00:00Z",
            "cleared_at": null,
            "value": 7.5,
            "score": 4.25,
            "peak_value": 9.0,
            "peak_score": null,
            "peak_at": "2026-03-01T10:00:01.5Z",
            "message": "vibration 7.5 is 4.25 sd above the mean",
        })
    );
    let cleared: serde_json::Value =
        serde_json::from_slice(&alert_json(&event(7, true), "gw1")).unwrap();
    assert_eq!(cleared["state"], "cleared");
    assert_eq!(cleared["cleared_at"], "2026-03-01T10:01:30Z");
}

/// A running runner and what the test looks at.
struct Run {
    status: SinkHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Store, transport: Scripted) -> Run {
    let status = SinkRegistry::default().register(SinkStatus {
        name: "alerts".into(),
        state: "starting".into(),
        ..SinkStatus::default()
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        AlertRunner {
            name: "alerts".into(),
            gateway: "gw1".into(),
            transport,
            retry: RetryPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                misconfigured: Duration::from_millis(50),
            },
            store: store.clone(),
            status: status.clone(),
            metrics: Arc::new(Metrics::new()),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    Run {
        status,
        shutdown,
        task,
    }
}

impl Run {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the runner stops on shutdown")
            .unwrap();
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_in_outbox_order_rollups_are_skipped_and_the_cursor_follows() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // One commit: rollups first, then a raise, another raise and the first one's clear.
    s.write(&WriteBatch {
        rollups: (0..3).map(rollup).collect(),
        events: vec![event(1, false), event(2, false), event(1, true)],
        ..WriteBatch::default()
    })
    .unwrap();
    let transport = Scripted::default();
    let run = start(&s, transport.clone());
    let expected = vec![
        (1, AlertState::Raised),
        (2, AlertState::Raised),
        (1, AlertState::Cleared),
    ];
    until("three alerts", || transport.delivered().len() == 3).await;
    assert_eq!(transport.delivered(), expected);
    until("the cursor at the head", || {
        s.sink_counters("alerts").unwrap().cursor == 6
    })
    .await;
    // Rollups only after the last event: acknowledged without a delivery.
    s.write(&WriteBatch {
        rollups: vec![rollup(5)],
        ..WriteBatch::default()
    })
    .unwrap();
    until("the rollup acknowledged", || {
        s.sink_counters("alerts").unwrap().cursor == 7
    })
    .await;
    let status = run.status.get();
    assert_eq!((status.state.as_str(), status.sent_points), ("up", 3));
    run.stop().await;
    assert_eq!(transport.delivered(), expected, "nothing sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_in_order_and_a_refused_alert_becomes_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(&WriteBatch {
        events: vec![event(1, false), event(2, false), event(1, true)],
        ..WriteBatch::default()
    })
    .unwrap();
    let transport = Scripted::answering(vec![
        Err(DeliveryError::Down("cannot connect".into())),
        Err(DeliveryError::Retry {
            reason: "HTTP 503".into(),
            after: None,
        }),
        Err(DeliveryError::Misconfigured("HTTP 401".into())),
        Ok(()),
        Err(DeliveryError::Refused("HTTP 400: bad".into())),
    ]);
    let run = start(&s, transport.clone());
    until("the clear delivered", || transport.delivered().len() == 2).await;
    assert_eq!(
        transport.delivered(),
        vec![(1, AlertState::Raised), (1, AlertState::Cleared)]
    );
    assert_eq!(*transport.attempts.lock().unwrap(), 6);
    until("the cursor at the head", || {
        s.sink_counters("alerts").unwrap().cursor == 3
    })
    .await;
    let counters = s.sink_counters("alerts").unwrap();
    assert_eq!(counters.dead_letters, 1);
    let letters = s.dead_letters("alerts", 10).unwrap();
    assert_eq!(letters[0].seq, 2);
    assert_eq!(letters[0].reason, "HTTP 400: bad");
    let body: serde_json::Value = serde_json::from_str(&letters[0].line).unwrap();
    assert_eq!(
        (body["event_id"].as_u64(), body["state"].as_str()),
        (Some(2), Some("raised"))
    );
    let status = run.status.get();
    assert_eq!(status.state, "up");
    assert_eq!(status.dead_letters, 1);
    assert_eq!(status.last_error.as_deref(), Some("HTTP 400: bad"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_last_delivered_alert() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(&WriteBatch {
        events: vec![event(1, false)],
        ..WriteBatch::default()
    })
    .unwrap();
    let first = Scripted::default();
    let run = start(&s, first.clone());
    until("the first alert", || first.delivered().len() == 1).await;
    until("its cursor", || {
        s.sink_counters("alerts").unwrap().cursor == 1
    })
    .await;
    run.stop().await;

    // Written while the daemon was down.
    s.write(&WriteBatch {
        events: vec![event(1, true)],
        ..WriteBatch::default()
    })
    .unwrap();
    let second = Scripted::default();
    let run = start(&s, second.clone());
    until("the pending alert", || second.delivered().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(second.delivered(), vec![(1, AlertState::Cleared)]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_long_backoff_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(&WriteBatch {
        events: vec![event(1, false)],
        ..WriteBatch::default()
    })
    .unwrap();
    let transport = Scripted::answering(vec![Err(DeliveryError::Retry {
        reason: "HTTP 429".into(),
        after: Some(Duration::from_secs(3600)),
    })]);
    let run = start(&s, transport.clone());
    until("backing off", || run.status.get().state == "backing_off").await;
    let next = run.status.get().next_attempt_at.unwrap();
    let wait = next - crate::model::now_ns();
    assert!(
        wait > 500 * 1_000_000_000 && wait <= 600 * 1_000_000_000,
        "Retry-After honoured up to 10 minutes: {wait} ns"
    );
    let started = Instant::now();
    run.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(s.sink_counters("alerts").unwrap().cursor, 0);
}
