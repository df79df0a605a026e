//! Every payload mapping of the MQTT source end to end, against a real Mosquitto
//! (tests/support/mosquitto.rs) with the daemon in-process (`app::start`): the readings of
//! each format become exactly the expected rollups in the JSON API.

mod mqtt_common;
mod support;

use std::time::Duration;

use edgewatch::model::{NS_PER_SEC, Quality};
use mqtt_common::{
    Expected, Rollups, api_rollups, assert_same, daemon_config, eventually, get_json, now_secs_ns,
    publisher, reference_payload, rfc3339_ms, rfc3339_ms_plus_one_hour, source_status, start, stop,
    stored_series, subscribed,
};
use support::mosquitto::{Mode, Mosquitto};

/// One-second windows closed as soon as the watermark passes them.
const WINDOW: i64 = NS_PER_SEC;

const MAPPING_SOURCE: &str = r#"
client_id = "it-mapping-daemon"
[[sources.subscriptions]]
filter = "json/ref"
[[sources.subscriptions]]
filter = "tpl/+/sensors/+"
topic_template = "tpl/{line}/sensors/{sensor_id}"
[[sources.subscriptions]]
filter = "epoch/s"
[[sources.subscriptions]]
filter = "epoch/ms"
[[sources.subscriptions]]
filter = "epoch/ns"
[[sources.subscriptions]]
filter = "arr/batch"
[[sources.subscriptions]]
filter = "val/+/+"
format = "value"
topic_template = "val/{sensor_id}/{field}"
[[sources.subscriptions]]
filter = "lp/#"
format = "line_protocol"
"#;

const MAPPING_FILTERS: [&str; 8] = [
    "json/ref",
    "tpl/+/sensors/+",
    "epoch/s",
    "epoch/ms",
    "epoch/ns",
    "arr/batch",
    "val/+/+",
    "lp/#",
];

/// Each mapping on its own subscription of one source: the readings the payloads carry
/// become exactly the expected rollups (count and mean per window) in the API, at exactly the
/// event times they name (checked raw in the store, to the nanosecond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapping_ends_in_exact_rollups_in_the_api() {
    let broker = Mosquitto::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let source = format!("port = {}\n{MAPPING_SOURCE}", broker.port());
    let (running, shutdown) = start(daemon_config(dir.path(), "gw-map", &source)).await;
    let base = format!("http://{}", running.web_addr);
    subscribed(&broker, "it-mapping-daemon", &MAPPING_FILTERS).await;

    let t0 = now_secs_ns() - 120 * NS_PER_SEC;
    let at = |secs: f64| t0 + (secs * NS_PER_SEC as f64).round() as i64;
    let mut expected = Expected::default();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut send = |topic: &str, payload: String| messages.push((topic.into(), payload.into()));

    // The reference payload, RFC 3339 (also with an offset), sensor id in the payload.
    for (t, values, offset) in [
        (at(0.120), [71.2, 3.91, 0.42], false),
        (at(0.620), [71.25, 3.875, 0.4375], true),
        (at(1.5), [72.0, 4.0, 0.5], false),
    ] {
        let mut payload = reference_payload("p-101", t, values);
        if offset {
            payload = payload.replace(&rfc3339_ms(t), &rfc3339_ms_plus_one_hour(t));
            assert!(payload.contains("+01:00"), "{payload}");
        }
        send("json/ref", payload);
        expected.add_reference("p-101", t, values);
    }

    // Sensor id from the topic, the payload has none; `{line}` is a tag.
    for (sensor, t, temperature, pressure) in [
        ("t-201", at(3.25), 65.5, Some(2.5)),
        ("t-202", at(3.5), 66.0, None),
        ("t-201", at(4.25), 64.5, Some(2.75)),
    ] {
        let pressure_member =
            pressure.map_or(String::new(), |p: f64| format!(r#","pressure":{p:?}"#));
        send(
            &format!("tpl/l2/sensors/{sensor}"),
            format!(
                r#"{{"timestamp":"{}","temperature":{temperature:?}{pressure_member}}}"#,
                rfc3339_ms(t)
            ),
        );
        expected.add(sensor, "temperature", t, temperature);
        if let Some(p) = pressure {
            expected.add(sensor, "pressure", t, p);
        }
    }

    // Epoch timestamps whose unit is detected from their magnitude (time_format = "auto").
    let (s, ms) = (t0 / NS_PER_SEC, t0 / 1_000_000);
    let epoch_cases: [(&str, &str, i64, String, f64); 9] = [
        ("epoch/s", "e-s", at(6.25), format!("{}.25", s + 6), 1.5),
        ("epoch/s", "e-s", at(6.0), format!("{}", s + 6), 2.5),
        ("epoch/s", "e-s", at(7.5), format!("{}.5", s + 7), 3.0),
        ("epoch/ms", "e-ms", at(6.25), format!("{}", ms + 6_250), 4.5),
        ("epoch/ms", "e-ms", at(6.75), format!("{}", ms + 6_750), 5.5),
        (
            "epoch/ms",
            "e-ms",
            t0 + 7_005_000_000,
            format!("{}", ms + 7_005),
            6.0,
        ),
        (
            "epoch/ns",
            "e-ns",
            t0 + 6_123_456_789,
            format!("{}", t0 + 6_123_456_789),
            7.5,
        ),
        (
            "epoch/ns",
            "e-ns",
            t0 + 6_987_654_321,
            format!("{}", t0 + 6_987_654_321),
            8.5,
        ),
        (
            "epoch/ns",
            "e-ns",
            t0 + 7_000_000_001,
            format!("{}", t0 + 7_000_000_001),
            9.0,
        ),
    ];
    for (topic, sensor, t, written, value) in &epoch_cases {
        send(
            topic,
            format!(r#"{{"sensor_id":"{sensor}","timestamp":{written},"level":{value:?}}}"#),
        );
        expected.add(sensor, "level", *t, *value);
    }

    // A JSON array of objects in one message, two sensors.
    send(
        "arr/batch",
        format!(
            r#"[{{"sensor_id":"a-1","timestamp":"{}","temperature":10.25}},
                {{"sensor_id":"a-2","timestamp":"{}","temperature":11.5,"pressure":1.25}},
                {{"sensor_id":"a-1","timestamp":"{}","temperature":12.75}}]"#,
            rfc3339_ms(at(9.1)),
            rfc3339_ms(at(9.2)),
            rfc3339_ms(at(10.3))
        ),
    );
    expected.add("a-1", "temperature", at(9.1), 10.25);
    expected.add("a-2", "temperature", at(9.2), 11.5);
    expected.add("a-2", "pressure", at(9.2), 1.25);
    expected.add("a-1", "temperature", at(10.3), 12.75);

    // Line protocol: several lines (a comment, an integer field), nanosecond timestamps.
    send(
        "lp/plant",
        format!(
            "machine,sensor_id=l-1,line=2 temperature=60.5,pressure=2.5 {}\n\
             # a comment line\n\
             machine,sensor_id=l-2 temperature=61i {}\n\
             machine,sensor_id=l-1 temperature=59.5 {}\n",
            at(12.1),
            at(12.2),
            at(13.4)
        ),
    );
    expected.add("l-1", "temperature", at(12.1), 60.5);
    expected.add("l-1", "pressure", at(12.1), 2.5);
    expected.add("l-2", "temperature", at(12.2), 61.0);
    expected.add("l-1", "temperature", at(13.4), 59.5);

    // `format = "value"`: a bare number; sensor and field from the topic, time of arrival.
    let values = [
        ("v-1", "temperature", "21.5"),
        ("v-1", "temperature", " 22.25\n"),
        ("v-1", "pressure", "1.125"),
        ("v-2", "level", "7"),
    ];
    for (sensor, field, payload) in values {
        send(&format!("val/{sensor}/{field}"), payload.to_string());
    }

    // Last, a reading ahead of every other one: its time moves the watermark past all their
    // windows (those of the value readings too, stamped with the time of arrival), so they
    // close and become rollups.
    let closer = now_secs_ns() + 5 * NS_PER_SEC;
    send(
        "json/ref",
        reference_payload("zz-closer", closer, [1.0, 1.0, 1.0]),
    );

    let published = messages.len() as u64;
    let mut client = publisher(&broker, "it-mapping-pub").await;
    assert_eq!(client.publish_all(messages, 1).await, published, "PUBACKs");

    // Every timestamped reading becomes exactly its rollups in the API.
    let want = expected.rollups(WINDOW);
    let sensors: Vec<&str> = expected
        .readings
        .keys()
        .map(|(s, _)| s.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let got: Rollups = eventually(Duration::from_secs(20), "the expected rollups", || async {
        let got = api_rollups(&base, &sensors).await;
        if got == want {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert_same("rollups in the API", &got, &want);

    // The raw readings carry exactly the event times of the payloads (epoch units detected),
    // and none is flagged time_suspect or time_from_arrival.
    for ((sensor, field), list) in expected.raw() {
        let stored: Vec<(i64, f64)> = stored_series(&running.store, &sensor, &field)
            .into_iter()
            .map(|(t, v, q)| {
                // Groups are published one after the other, not in time order: a reading
                // behind the newest time seen is late (and corrects its rollup), nothing else.
                assert!(
                    q == Quality::GOOD || q == Quality::LATE,
                    "{sensor}/{field} at {t}: {:?}",
                    q.names()
                );
                (t, v)
            })
            .collect();
        assert_eq!(stored, list, "raw readings of {sensor}/{field}");
    }

    // The value readings: each one once, stamped with the time of arrival (flagged), and all
    // in rollups (their windows depend on when they arrived: compare the totals).
    let value_sensors = ["v-1", "v-2"];
    let value_rollups = api_rollups(&base, &value_sensors).await;
    for (sensor, field, want_values) in [
        ("v-1", "temperature", vec![21.5, 22.25]),
        ("v-1", "pressure", vec![1.125]),
        ("v-2", "level", vec![7.0]),
    ] {
        let stored = stored_series(&running.store, sensor, field);
        let values: Vec<f64> = stored.iter().map(|&(_, v, _)| v).collect();
        assert_eq!(values, want_values, "{sensor}/{field} raw values");
        assert!(
            stored
                .iter()
                .all(|(_, _, q)| q.contains(Quality::TIME_FROM_ARRIVAL)),
            "{sensor}/{field}: time of arrival flagged: {stored:?}"
        );
        let (count, sum) = value_rollups
            .iter()
            .filter(|((s, f, _), _)| s == sensor && f == field)
            .fold((0, 0.0), |(n, sum), (_, &(c, mean))| {
                (n + c, sum + mean * c as f64)
            });
        assert_eq!(
            (count, sum),
            (want_values.len() as u64, want_values.iter().sum::<f64>()),
            "{sensor}/{field} rollups: {value_rollups:?}"
        );
    }

    // The live view and the source's health agree.
    let live = get_json(&format!("{base}/api/v1/sensors")).await;
    let p101 = live
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "p-101")
        .unwrap_or_else(|| panic!("p-101 in {live:#}"));
    assert_eq!(p101["source"], "m");
    assert_eq!(p101["fields"]["temperature"]["value"], 72.0);
    assert_eq!(p101["fields"]["vibration"]["value"], 0.5);
    let health = eventually(Duration::from_secs(5), "messages counted", || async {
        let health = source_status(&base, "m").await;
        if health["messages"] == published {
            Ok(health)
        } else {
            Err(health.to_string())
        }
    })
    .await;
    assert_eq!(health["state"], "up", "{health:#}");
    assert_eq!(health["bad_payloads"], serde_json::json!({}), "{health:#}");
    // The readings of the timestamped payloads, 4 value readings and the closer's 3.
    assert_eq!(
        health["readings"],
        expected.len() as u64 + 4 + 3,
        "{health:#}"
    );

    client.disconnect().await;
    stop(running, shutdown).await;
}
