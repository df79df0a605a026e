//! The MQTT alert sink end to end against a real Mosquitto (`support::mosquitto`): the daemon
//! (`app::start`) on a simulated source that raises and clears anomalies, and a subscriber with
//! a persistent session on the alert topics.
//!
//! The expected alerts are the anomaly events in the store's outbox, in outbox order; a second
//! sink that never acknowledges (InfluxDB on a closed port) keeps the outbox whole.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use edgewatch::app;
use rumqttc::Publish;
use serde_json::Value;
use support::alerts::*;
use support::mosquitto::{Mode, Mosquitto};
use support::mqtt::{self as client, Client};
use tokio_util::sync::CancellationToken;

fn mqtt_sink(broker: &Mosquitto, extra: &str) -> String {
    format!(
        "[[sinks]]\ntype = \"mqtt\"\nname = \"alerts\"\nhost = \"127.0.0.1\"\nport = {}\n\
         reconnect_initial_ms = 50\nreconnect_max_secs = 1\n{extra}",
        broker.port()
    )
}

/// A subscriber whose session (and its queued QoS 1 messages) the broker keeps while it is
/// away or restarting.
async fn subscriber(broker: &Mosquitto, id: &str) -> Client {
    let mut options = broker.mqtt_options(id);
    options.set_clean_session(false);
    let (mut c, _) = client::connect(options).await.expect("subscriber connects");
    c.subscribe("edgewatch/#").await;
    c
}

/// Messages until `n` have arrived (or none came for 5 s).
async fn collect(c: &mut Client, n: usize) -> Vec<Publish> {
    let mut out = Vec::new();
    while out.len() < n {
        match c.next_message_within(Duration::from_secs(5)).await {
            Some(p) => out.push(p),
            None => break,
        }
    }
    out
}

fn json(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).expect("an alert is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_and_cleared_alerts_arrive_in_order_on_their_topics_with_retained_state() {
    let broker = tokio::task::spawn_blocking(|| Mosquitto::start(Mode::Plain))
        .await
        .unwrap();
    let mut sub = subscriber(&broker, "alert-watcher-1").await;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let sink = mqtt_sink(&broker, "retain_state = true");
    let running = app::start(
        config(&dir.path().join("s.redb"), start_time(), 900, &sink),
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
    // Each alert is published twice: on its topic, then retained on its state topic.
    let got = collect(&mut sub, 2 * expected.len()).await;
    assert!(
        sub.next_message_within(Duration::from_millis(500))
            .await
            .is_none(),
        "no more than one publication per alert and state"
    );
    let alerts: Vec<&Publish> = got
        .iter()
        .filter(|p| !p.topic.ends_with("/state"))
        .collect();
    let states: Vec<&Publish> = got.iter().filter(|p| p.topic.ends_with("/state")).collect();
    let bodies: Vec<Value> = alerts.iter().map(|p| json(p)).collect();
    assert_eq!(bodies, expected, "exactly the outbox's events, in order");
    for (p, body) in alerts.iter().zip(&bodies) {
        let topic = format!(
            "edgewatch/gw-alerts/alerts/{}/{}/{}",
            body["sensor"].as_str().unwrap(),
            body["field"].as_str().unwrap(),
            body["rule"].as_str().unwrap()
        );
        assert_eq!(p.topic, topic);
        assert!(!p.retain);
        assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
    }
    assert_eq!(states.len(), alerts.len());
    for (s, a) in states.iter().zip(&alerts) {
        assert_eq!(s.topic, format!("{}/state", a.topic));
        assert_eq!(s.payload, a.payload);
    }
    sub.disconnect().await;

    // A subscriber that arrives later sees the current state of every (sensor, field, rule).
    let mut late = client::connect(broker.mqtt_options("alert-watcher-late"))
        .await
        .unwrap()
        .0;
    late.subscribe("edgewatch/+/alerts/+/+/+/state").await;
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for a in &bodies {
        let key = format!("{}/{}/{}", a["sensor"], a["field"], a["rule"]);
        last.insert(key, a.clone());
    }
    let retained = collect(&mut late, last.len()).await;
    assert_eq!(
        retained.len(),
        last.len(),
        "one retained state per series and rule"
    );
    for p in &retained {
        assert!(p.retain, "{} is retained", p.topic);
        let body = json(p);
        let key = format!("{}/{}/{}", body["sensor"], body["field"], body["rule"]);
        assert_eq!(Some(&body), last.get(&key), "the newest state of {key}");
    }
    late.disconnect().await;

    eventually(10, "the link state on the status", async || {
        let s = sink_status(&running).await;
        s["state"] == "up" && s["sent_points"] == expected.len() as u64
    })
    .await;
    assert_eq!(sink_status(&running).await["type"], "mqtt");
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_while_the_broker_is_down_arrive_once_it_is_back() {
    let mut broker = tokio::task::spawn_blocking(|| Mosquitto::start(Mode::Plain))
        .await
        .unwrap();
    // Subscribe once so that the broker keeps the session (persistence) across its restart.
    subscriber(&broker, "alert-watcher-2")
        .await
        .disconnect()
        .await;
    let mut broker = tokio::task::spawn_blocking(move || {
        broker.stop();
        broker
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(
        config(
            &dir.path().join("s.redb"),
            start_time(),
            900,
            &mqtt_sink(&broker, ""),
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    sim_done(&running).await;
    let expected = expected_alerts(&running);
    assert!(expected.len() >= 6, "events while the broker is down");
    eventually(10, "the sink reports the broker down", async || {
        let s = sink_status(&running).await;
        s["state"] != "up" && s["backlog_points"] == expected.len() as u64
    })
    .await;

    broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    let mut sub = subscriber(&broker, "alert-watcher-2").await;
    let got = collect(&mut sub, expected.len()).await;
    let bodies: Vec<Value> = got.iter().map(json).collect();
    assert_eq!(
        bodies, expected,
        "every alert, once, in order, after the outage"
    );
    eventually(10, "the backlog drained", async || {
        let s = sink_status(&running).await;
        s["state"] == "up" && s["backlog_points"] == 0
    })
    .await;
    sub.disconnect().await;
    shutdown.cancel();
    running.wait().await.unwrap();
    drop(broker);
}
