//! Refused MQTT payloads, against a real Mosquitto (tests/support/mosquitto.rs) with the
//! daemon in-process (`app::start`): each is counted by reason in the status API and
//! `/metrics`, with its latest example, and the subscription goes on.

mod mqtt_common;
mod support;

use std::time::Duration;

use edgewatch::model::NS_PER_SEC;
use mqtt_common::{
    daemon_config, eventually, get_text, metric, now_secs_ns, publisher, reference_payload,
    rfc3339_ms, source_status, start, stop, stored_series, subscribed,
};
use support::mosquitto::{Mode, Mosquitto};

const BAD_SOURCE: &str = r#"
client_id = "it-bad-daemon"
max_payload_bytes = 200
[[sources.subscriptions]]
filter = "bad/json"
[[sources.subscriptions]]
filter = "bad/tpl/#"
topic_template = "bad/tpl/{sensor_id}"
"#;

/// Every kind of bad payload is refused, counted under its reason in the status API (with
/// the latest example) and in `edgewatch_source_bad_payloads_total`, acknowledged, and does
/// not stop the subscription: good messages published after them are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_by_reason_and_good_ones_after_them_arrive() {
    let broker = Mosquitto::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let source = format!("port = {}\n{BAD_SOURCE}", broker.port());
    let (running, shutdown) = start(daemon_config(dir.path(), "gw-bad", &source)).await;
    let base = format!("http://{}", running.web_addr);
    subscribed(&broker, "it-bad-daemon", &["bad/json", "bad/tpl/#"]).await;

    let t0 = now_secs_ns() - 60 * NS_PER_SEC;
    let ts = rfc3339_ms(t0);
    let good = |i: i64| {
        (
            "bad/json".to_string(),
            reference_payload("b-good", t0 + i * NS_PER_SEC, [70.0 + i as f64, 3.5, 0.25])
                .into_bytes(),
        )
    };
    let too_large = format!(
        r#"{{"sensor_id":"b-1","timestamp":"{ts}","temperature":1.0,"pad":"{}"}}"#,
        "x".repeat(200)
    );
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "invalid_json",
            "bad/json",
            br#"{"sensor_id":"b-1","temperature":"#.to_vec(),
        ),
        (
            "wrong_type",
            "bad/json",
            format!(r#"{{"sensor_id":["b-1"],"timestamp":"{ts}","temperature":1.0}}"#).into(),
        ),
        (
            "missing_id",
            "bad/json",
            format!(r#"{{"timestamp":"{ts}","temperature":1.0}}"#).into(),
        ),
        (
            "not_utf8",
            "bad/json",
            b"{\"sensor_id\":\"b-\xff\xfe\",\"temperature\":1.0}".to_vec(),
        ),
        ("too_large", "bad/json", too_large.into()),
        (
            "bad_time",
            "bad/json",
            br#"{"sensor_id":"b-1","timestamp":"yesterday at noon","temperature":1.0}"#.to_vec(),
        ),
        (
            "topic_mismatch",
            "bad/tpl/b-1/extra",
            format!(r#"{{"timestamp":"{ts}","temperature":1.0}}"#).into(),
        ),
        // A second invalid JSON: the example shown is the latest one.
        ("invalid_json", "bad/json", b"[1, 2".to_vec()),
    ];

    // A good message first, the bad ones, then good ones again.
    let mut messages = vec![good(0)];
    messages.extend(
        bad.iter()
            .map(|(_, topic, payload)| (topic.to_string(), payload.clone())),
    );
    messages.extend((1..=3).map(good));
    let published = messages.len() as u64;
    let mut client = publisher(&broker, "it-bad-pub").await;
    assert_eq!(client.publish_all(messages, 10).await, published, "PUBACKs");

    // The good messages after the bad ones are stored.
    eventually(Duration::from_secs(10), "the good readings", || async {
        let stored = stored_series(&running.store, "b-good", "temperature");
        if stored.len() == 4 {
            Ok(())
        } else {
            Err(format!("{stored:?}"))
        }
    })
    .await;
    let temperatures: Vec<f64> = stored_series(&running.store, "b-good", "temperature")
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(temperatures, [70.0, 71.0, 72.0, 73.0]);
    assert!(
        running
            .store
            .series()
            .unwrap()
            .iter()
            .all(|(s, _)| &*s.sensor == "b-good"),
        "no reading of a refused message is stored: {:?}",
        running.store.series().unwrap()
    );

    // Every refusal counted under its reason, with the latest example, and acknowledged.
    let health = eventually(
        Duration::from_secs(5),
        "all messages counted and acked",
        || async {
            let health = source_status(&base, "m").await;
            if health["messages"] == published && health["details"]["unacked"] == "0" {
                Ok(health)
            } else {
                Err(health.to_string())
            }
        },
    )
    .await;
    assert_eq!(health["state"], "up", "{health:#}");
    let reasons = health["bad_payloads"].as_object().unwrap();
    let mut want_counts = std::collections::BTreeMap::new();
    for (reason, _, _) in &bad {
        *want_counts.entry(reason.to_string()).or_insert(0u64) += 1;
    }
    let got_counts: std::collections::BTreeMap<String, u64> = reasons
        .iter()
        .map(|(reason, stat)| (reason.clone(), stat["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got_counts, want_counts, "{health:#}");
    for (reason, topic, _) in &bad {
        let example = reasons[*reason]["last_example"].as_str().unwrap();
        assert!(
            example.starts_with(&format!("{topic}: ")),
            "{reason}: example {example:?} names the topic {topic}"
        );
        assert!(reasons[*reason]["last_time"].is_string(), "{reason}");
    }
    let latest = reasons["invalid_json"]["last_example"].as_str().unwrap();
    assert!(
        latest.contains("list"),
        "the latest invalid JSON ([1, 2): {latest:?}"
    );
    assert!(
        reasons["too_large"]["last_example"]
            .as_str()
            .unwrap()
            .contains("max_payload_bytes = 200"),
        "{health:#}"
    );

    // The same counts in /metrics, and 0 for the reasons that did not occur.
    let exposition = get_text(&format!("{base}/metrics")).await;
    for reason in [
        "too_large",
        "not_utf8",
        "invalid_json",
        "wrong_type",
        "missing_id",
        "bad_time",
        "no_fields",
        "topic_mismatch",
        "invalid_line_protocol",
        "invalid_number",
    ] {
        let want = want_counts.get(reason).copied().unwrap_or(0) as f64;
        assert_eq!(
            metric(
                &exposition,
                "edgewatch_source_bad_payloads_total",
                &[("source", "m"), ("reason", reason)]
            ),
            Some(want),
            "edgewatch_source_bad_payloads_total for {reason}"
        );
    }

    client.disconnect().await;
    stop(running, shutdown).await;
}
