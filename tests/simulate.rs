//! `edgewatch simulate mqtt` against a real Mosquitto (the harness in `tests/support/`): a
//! subscriber receives exactly the requested number of well-formed reference payloads at QoS 1,
//! the rate is roughly honoured, injected spikes show in the values, credentials and TLS work,
//! and an unreachable or refusing broker gives a non-zero exit with a clear message.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::mosquitto::{self, Mode, Mosquitto};
use support::mqtt::{Client, connect};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const PREFIX: &str = "plant/line1/sensors";

/// Runs the binary with `args` (blocking: call through `spawn_blocking` from async tests).
fn simulate(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgewatch"));
    command.args(["simulate", "mqtt"]).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run edgewatch simulate mqtt")
}

async fn simulate_async(args: Vec<String>, env: Vec<(&'static str, &'static str)>) -> Output {
    tokio::task::spawn_blocking(move || simulate(&args, &env))
        .await
        .expect("simulate task")
}

fn args(broker: &Mosquitto, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--host".to_owned(),
        broker.host().to_owned(),
        "--port".to_owned(),
        broker.port().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `key=value` fields of the summary line (the last line on stdout).
fn summary(output: &Output) -> BTreeMap<String, String> {
    let text = stdout(output);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no summary on stdout; stderr: {}, status {}",
            stderr(output),
            output.status
        )
    });
    line.split_whitespace()
        .map(|field| {
            let (key, value) = field
                .split_once('=')
                .unwrap_or_else(|| panic!("summary field without `=`: {line}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Asserts a successful run and returns its summary.
fn succeeded(output: &Output, broker: &Mosquitto) -> BTreeMap<String, String> {
    assert!(
        output.status.success(),
        "status {}\nstdout: {}\nstderr: {}\nbroker log:\n{}",
        output.status,
        stdout(output),
        stderr(output),
        broker.log_tail()
    );
    summary(output)
}

/// A subscriber to every sensor topic, subscribed (SUBACK received) before it returns.
async fn subscriber(broker: &Mosquitto) -> Client {
    let (mut client, _) = connect(broker.mqtt_options("simulate-test-sub"))
        .await
        .unwrap_or_else(|e| panic!("subscriber: {e}\n{}", broker.log_tail()));
    client.subscribe(&format!("{PREFIX}/#")).await;
    client
}

/// A received reference payload.
#[derive(Debug)]
struct Reading {
    sensor_id: String,
    timestamp: OffsetDateTime,
    vibration: f64,
}

/// Collects `count` messages, then checks for a short while that no more arrive; checks that
/// every one is a well-formed reference payload on its sensor's topic.
async fn receive(client: &mut Client, count: usize) -> Vec<Reading> {
    let mut readings = Vec::with_capacity(count);
    while readings.len() < count {
        let Some(message) = client.next_message_within(Duration::from_secs(15)).await else {
            panic!("only {} of {count} messages arrived", readings.len());
        };
        assert_eq!(message.qos, rumqttc::QoS::AtLeastOnce);
        readings.push(parse(&message.topic, &message.payload));
    }
    if let Some(extra) = client.next_message_within(Duration::from_millis(300)).await {
        panic!(
            "more than {count} messages: {}",
            String::from_utf8_lossy(&extra.payload)
        );
    }
    readings
}

fn parse(topic: &str, payload: &[u8]) -> Reading {
    let text = String::from_utf8_lossy(payload);
    let value: Value =
        serde_json::from_slice(payload).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "pressure",
            "sensor_id",
            "temperature",
            "timestamp",
            "vibration"
        ],
        "{text}"
    );
    let sensor_id = object["sensor_id"].as_str().expect("sensor_id is a string");
    assert!(
        sensor_id.len() == 6
            && sensor_id.starts_with("s-")
            && sensor_id[2..].bytes().all(|b| b.is_ascii_digit()),
        "sensor_id {sensor_id:?}"
    );
    assert_eq!(topic, format!("{PREFIX}/{sensor_id}"));
    let stamp = object["timestamp"].as_str().expect("timestamp is a string");
    let timestamp = OffsetDateTime::parse(stamp, &Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {stamp:?} is not RFC 3339: {e}"));
    // Milliseconds, UTC: `2026-11-26T10:00:00.120Z`.
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "timestamp {stamp:?}"
    );
    let number = |key: &str| {
        object[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number: {text}"))
    };
    let (temperature, pressure, vibration) = (
        number("temperature"),
        number("pressure"),
        number("vibration"),
    );
    assert!((30.0..90.0).contains(&temperature), "{text}");
    assert!((1.0..7.0).contains(&pressure), "{text}");
    assert!((0.0..10.0).contains(&vibration), "{text}");
    Reading {
        sensor_id: sensor_id.to_owned(),
        timestamp,
        vibration,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_subscriber_receives_exactly_count_well_formed_reference_payloads() {
    let broker = Mosquitto::start(Mode::Plain);
    let mut client = subscriber(&broker).await;
    let before = OffsetDateTime::now_utc();
    let run = tokio::spawn(simulate_async(
        args(
            &broker,
            &[
                "--sensors",
                "20",
                "--rate",
                "0",
                "--count",
                "3000",
                "--qos",
                "1",
            ],
        ),
        vec![],
    ));
    let readings = receive(&mut client, 3000).await;
    let output = run.await.expect("simulate task");
    let after = OffsetDateTime::now_utc();

    let fields = succeeded(&output, &broker);
    assert_eq!(fields["published"], "3000", "{fields:?}");
    assert_eq!(fields["acked"], "3000", "{fields:?}");
    assert_eq!(fields["qos"], "1");
    assert_eq!(fields["errors"], "0");
    // Round robin: every sensor the same number of times, in turn.
    let mut per_sensor = BTreeMap::new();
    for reading in &readings {
        *per_sensor.entry(reading.sensor_id.as_str()).or_insert(0) += 1;
        // The time of publishing (the payload has milliseconds only).
        assert!(
            reading.timestamp >= before - Duration::from_millis(1) && reading.timestamp <= after,
            "{reading:?} outside the run ({before} .. {after})"
        );
    }
    assert_eq!(per_sensor.len(), 20, "{per_sensor:?}");
    assert!(per_sensor.values().all(|&n| n == 150), "{per_sensor:?}");
    assert_eq!(readings[0].sensor_id, "s-0001");
    assert_eq!(readings[19].sensor_id, "s-0020");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_roughly_honoured() {
    let broker = Mosquitto::start(Mode::Plain);
    let started = std::time::Instant::now();
    let output = simulate_async(
        args(
            &broker,
            &["--rate", "2000", "--count", "2000", "--qos", "1"],
        ),
        vec![],
    )
    .await;
    let wall = started.elapsed();
    let fields = succeeded(&output, &broker);
    let elapsed: f64 = fields["elapsed_s"].parse().expect("elapsed_s is a number");
    // 2000 messages at 2000 msg/s: the last is due after 0.9995 s. Loose bounds: the machine is
    // shared; only a gross pacing error (no pacing, or sleeping per message) fails.
    assert!(
        (0.7..2.5).contains(&elapsed),
        "elapsed_s {elapsed} (wall {wall:?}); {fields:?}"
    );
    assert!(wall >= Duration::from_millis(700), "wall {wall:?}");
    assert_eq!(fields["published"], "2000");
    assert_eq!(fields["acked"], "2000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_spikes_multiply_one_sensors_vibration() {
    let broker = Mosquitto::start(Mode::Plain);
    let mut client = subscriber(&broker).await;
    let run = tokio::spawn(simulate_async(
        args(
            &broker,
            &[
                "--sensors",
                "4",
                "--rate",
                "400",
                "--count",
                "400",
                "--anomaly-every",
                "0.25",
                "--seed",
                "5",
            ],
        ),
        vec![],
    ));
    let readings = receive(&mut client, 400).await;
    let output = run.await.expect("simulate task");
    let fields = succeeded(&output, &broker);
    let anomalies: usize = fields["anomalies"].parse().expect("anomalies is a number");
    // Due at 0.25, 0.5 and 0.75 s of a run of about 1 s.
    assert!((3..=4).contains(&anomalies), "{fields:?}");

    // A spike is vibration ×6. Over one second a sensor's median m is its level (≥ 0.25 mm/s;
    // the drift takes 30 minutes) and normal readings lie within m ± 0.12 (noise cut at 4σ):
    // at most 1.5 m, while a spike is at least 6 (m − 0.12) ≥ 3.1 m. 2.2 m splits them.
    let mut spikes = 0;
    for sensor in ["s-0001", "s-0002", "s-0003", "s-0004"] {
        let mut values: Vec<f64> = readings
            .iter()
            .filter(|r| r.sensor_id == sensor)
            .map(|r| r.vibration)
            .collect();
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        spikes += values.iter().filter(|&&v| v > 2.2 * median).count();
    }
    assert_eq!(spikes, anomalies, "{fields:?}");
    client.disconnect().await;
}

#[test]
fn unreachable_port_gives_a_nonzero_exit_and_says_connection_refused() {
    // Free a moment ago; nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port();
    let output = simulate(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--rate",
            "10",
            "--count",
            "10",
        ]
        .map(str::to_owned),
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "", "no summary without a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_environment_and_a_wrong_password_is_refused() {
    let broker = Mosquitto::start(Mode::Auth);
    let login = ["--username", mosquitto::USER, "--password-env", "SIM_PASS"];
    let common = ["--rate", "0", "--count", "50"];
    let good = simulate_async(
        args(&broker, &[&login[..], &common].concat()),
        vec![("SIM_PASS", mosquitto::PASSWORD)],
    )
    .await;
    assert_eq!(succeeded(&good, &broker)["acked"], "50");

    let wrong = simulate_async(
        args(&broker, &[&login[..], &common].concat()),
        vec![("SIM_PASS", "wrong")],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("refused the connection: not authorised"),
        "{}",
        stderr(&wrong)
    );

    let unset = simulate_async(args(&broker, &[&login[..], &common].concat()), vec![]).await;
    assert_eq!(unset.status.code(), Some(64), "{}", stderr(&unset));
    assert!(stderr(&unset).contains("SIM_PASS"), "{}", stderr(&unset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_brokers_ca_and_a_client_certificate() {
    let broker = Mosquitto::start(Mode::Mtls);
    let ca = broker.ca_file().display().to_string();
    let cert = broker.client_cert().display().to_string();
    let key = broker.client_key().display().to_string();
    let common = ["--rate", "0", "--count", "50"];

    let with_cert = simulate_async(
        args(
            &broker,
            &[
                &common[..],
                &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
            ]
            .concat(),
        ),
        vec![],
    )
    .await;
    assert_eq!(succeeded(&with_cert, &broker)["acked"], "50");

    // The broker requires a client certificate.
    let without_cert = simulate_async(
        args(&broker, &[&common[..], &["--tls-ca", &ca]].concat()),
        vec![],
    )
    .await;
    assert_eq!(
        without_cert.status.code(),
        Some(1),
        "{}",
        stderr(&without_cert)
    );
    assert!(
        stderr(&without_cert).contains("requires a client certificate"),
        "{}",
        stderr(&without_cert)
    );

    // Plain MQTT to a TLS port: refused, with a hint.
    let plain = simulate_async(args(&broker, &common), vec![]).await;
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("does it expect TLS? then add --tls-ca"),
        "{}",
        stderr(&plain)
    );
}
