//! The webhook alert sink end to end: the daemon (`app::start`) on a simulated source with
//! limit and stuck rules, and a real HTTP receiver (`support::webhook`, axum on 127.0.0.1:0)
//! that records what it accepts and can be told to answer 503 or 400.
//!
//! The expected alerts are the anomaly events in the store's outbox, in outbox order. A second
//! sink (InfluxDB on a closed loopback port) never acknowledges anything, so the trimmer
//! leaves the outbox whole for the test to read.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgewatch::model::NS_PER_SEC;
use edgewatch::{app, config};
use serde_json::Value;
use support::alerts::*;
use support::daemon::metric;
use support::webhook::Receiver;
use tokio_util::sync::CancellationToken;

fn webhook(url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\ntype = \"webhook\"\nname = \"alerts\"\nretry_initial_ms = 50\nretry_max_secs = 1\nurl = \"{url}\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raised_and_cleared_event_arrives_once_in_order_with_its_fields_and_token() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook(
        &receiver.url,
        "token = \"s3cret\"\nheaders = { \"X-Site\" = \"plant-7\" }",
    );
    let shutdown = CancellationToken::new();
    let running = app::start(
        config(&dir.path().join("s.redb"), start_time(), 900, &hook),
        shutdown.clone(),
    )
    .await
    .unwrap();
    sim_done(&running).await;
    let expected = expected_alerts(&running);
    let by_state = summary(&expected);
    assert!(
        by_state.get("raised").copied().unwrap_or(0) >= 3
            && by_state.get("cleared").copied().unwrap_or(0) >= 3,
        "the sim should raise and clear several events: {by_state:?}"
    );
    eprintln!("expected alerts: {by_state:?}");
    eventually(20, "every alert delivered", async || {
        receiver.accepted().len() >= expected.len()
    })
    .await;
    // Nothing more comes (no duplicate).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.bodies(),
        expected,
        "exactly the outbox's events, in order"
    );

    for r in receiver.accepted() {
        assert_eq!(r.headers["authorization"], "Bearer s3cret");
        assert_eq!(r.headers["x-site"], "plant-7");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    // Each episode: raised, then cleared.
    let mut seen = BTreeMap::new();
    for b in receiver.bodies() {
        let id = b["event_id"].as_u64().unwrap();
        let state = b["state"].as_str().unwrap().to_string();
        let before = seen.insert(id, state.clone());
        match state.as_str() {
            "raised" => assert_eq!(before, None, "event {id} raised twice"),
            _ => assert_eq!(
                before.as_deref(),
                Some("raised"),
                "event {id} cleared first"
            ),
        }
    }

    let n = expected.len() as u64;
    eventually(10, "the link state on the status", async || {
        let s = sink_status(&running).await;
        s["state"] == "up" && s["sent_points"] == n && s["backlog_points"] == 0
    })
    .await;
    let s = sink_status(&running).await;
    assert_eq!(s["type"], "webhook");
    assert!(!s["url"].as_str().unwrap().contains("s3cret"));
    assert!(s["last_success"].is_string());
    let m = metrics(&running).await;
    assert_eq!(
        metric(&m, "edgewatch_sink_points_sent_total{sink=\"alerts\"}"),
        Some(n as f64)
    );
    assert_eq!(
        metric(&m, "edgewatch_sink_state{sink=\"alerts\",state=\"up\"}"),
        Some(1.0)
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_refused_with_503_arrive_once_the_receiver_recovers() {
    let receiver = Receiver::start().await;
    receiver.fail_with(503);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(
        config(
            &dir.path().join("s.redb"),
            start_time(),
            600,
            &webhook(&receiver.url, ""),
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    sim_done(&running).await;
    let expected = expected_alerts(&running);
    assert!(!expected.is_empty());
    eventually(20, "backing off with a backlog", async || {
        let s = sink_status(&running).await;
        s["state"] == "backing_off" && s["backlog_points"].as_u64() == Some(expected.len() as u64)
    })
    .await;
    let s = sink_status(&running).await;
    assert!(
        s["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{s}"
    );
    assert!(receiver.attempts() >= 2, "retried");
    assert!(receiver.accepted().is_empty());

    receiver.fail_with(0);
    eventually(20, "every alert delivered after recovery", async || {
        receiver.accepted().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.bodies(), expected);
    for r in receiver.accepted() {
        assert!(
            !r.headers.contains_key("authorization"),
            "no token configured"
        );
    }
    eventually(10, "up again", async || {
        sink_status(&running).await["state"] == "up"
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_what_was_pending_and_nothing_already_delivered() {
    let receiver = Receiver::start().await;
    receiver.state.accept_limit.store(3, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let start = start_time();
    let hook = webhook(&receiver.url, "");

    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 600, &hook), shutdown.clone())
        .await
        .unwrap();
    sim_done(&running).await;
    let expected = expected_alerts(&running);
    assert!(expected.len() > 3, "{} alerts", expected.len());
    eventually(20, "three delivered, the fourth refused", async || {
        receiver.accepted().len() == 3 && receiver.attempts() > 3
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();

    receiver
        .state
        .accept_limit
        .store(u64::MAX, Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 0, &hook), shutdown.clone())
        .await
        .unwrap();
    eventually(20, "the pending alerts delivered", async || {
        receiver.accepted().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.bodies(),
        expected,
        "the first three once, then the rest, in order"
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_refused_with_400_is_a_dead_letter_and_later_ones_still_arrive() {
    let receiver = Receiver::start().await;
    receiver.state.refuse_next.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(
        config(
            &dir.path().join("s.redb"),
            start_time(),
            600,
            &webhook(&receiver.url, ""),
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    sim_done(&running).await;
    let expected = expected_alerts(&running);
    assert!(expected.len() > 1);
    eventually(20, "every other alert delivered", async || {
        receiver.accepted().len() >= expected.len() - 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.bodies(), expected[1..].to_vec());

    let letters = running.store.dead_letters("alerts", 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "HTTP 400: unknown sensor");
    let line: Value = serde_json::from_str(&letters[0].line).unwrap();
    assert_eq!(line, expected[0]);
    eventually(10, "the dead letter on the status", async || {
        sink_status(&running).await["dead_letters"] == 1
    })
    .await;
    let m = metrics(&running).await;
    assert_eq!(
        metric(&m, "edgewatch_sink_dead_letters_total{sink=\"alerts\"}"),
        Some(1.0)
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_alert_goes_out_within_a_second_or_so_of_its_reading() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Realtime, and a limit every reading breaks: each sensor raises at its first reading.
    let text = format!(
        r#"
[gateway]
id = "gw-alerts"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "sim"
sensors = 3
interval_ms = 500
fault_interval_secs = 0
[[rules]]
name = "always"
match = "*/temperature"
kind = "limit"
max = -1000000.0
[[sinks]]
type = "webhook"
name = "alerts"
url = "{}"
"#,
        dir.path().join("s.redb").display(),
        receiver.url
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text).unwrap(), shutdown.clone())
        .await
        .unwrap();
    eventually(10, "three alerts", async || receiver.accepted().len() >= 3).await;
    let worst = receiver
        .accepted()
        .iter()
        .map(|r| {
            let raised = edgewatch::model::parse_time(r.body["raised_at"].as_str().unwrap());
            (r.at - raised.unwrap()) as f64 / NS_PER_SEC as f64
        })
        .fold(0.0f64, f64::max);
    eprintln!("slowest alert: {worst:.3} s after its reading");
    // Commit interval (200 ms) + idle poll (200 ms) + a loaded test machine.
    assert!(worst < 2.0, "an alert took {worst:.2} s");
    shutdown.cancel();
    running.wait().await.unwrap();
}
