//! Shared by the alert sink tests: a daemon config whose simulated source raises and clears
//! anomalies quickly, the alert body every transport sends (written out independently of the
//! daemon's code), and small waits on the daemon's API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgewatch::app::Running;
use edgewatch::config::{self, Config};
use edgewatch::model::{AnomalyEvent, NS_PER_SEC, format_time, now_ns};
use edgewatch::store::OutboxEntry;
use serde_json::{Value, json};

use super::daemon::metric;

pub const WINDOW: i64 = 60 * NS_PER_SEC;

/// The daemon config; `sink` is the `[[sinks]]` table of the sink named `alerts`.
pub fn config(store: &std::path::Path, start: i64, ticks: u64, sink: &str) -> Config {
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
sensors = 4
interval_ms = 1000
seed = 11
fault_interval_secs = 20
start_time = "{}"
ticks = {ticks}
realtime = false
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
severity = "critical"
[[rules]]
name = "stuck"
match = "*/*"
kind = "stuck"
raise_secs = 20
[[sinks]]
type = "influxdb"
name = "outbox-holder"
url = "http://127.0.0.1:1"
database = "none"
retry_initial_ms = 1000
retry_max_secs = 60
{sink}
"#,
        store.display(),
        format_time(start)
    );
    config::load_str(&text).expect("test config")
}

pub fn start_time() -> i64 {
    (now_ns() / WINDOW - 30) * WINDOW
}

/// The body every transport sends, written out here independently of the daemon's code.
pub fn expected_body(e: &AnomalyEvent) -> Value {
    json!({
        "gateway": "gw-alerts",
        "event_id": e.id,
        "state": if e.cleared_at.is_none() { "raised" } else { "cleared" },
        "sensor": e.sensor,
        "field": e.field,
        "rule": e.rule,
        "kind": e.kind,
        "severity": e.severity.as_str(),
        "raised_at": format_time(e.raised_at),
        "cleared_at": e.cleared_at.map(format_time),
        "value": e.value,
        "score": e.score,
        "peak_value": e.peak_value,
        "peak_score": e.peak_score,
        "peak_at": format_time(e.peak_at),
        "message": e.message,
    })
}

/// Every event entry of the outbox, in order, as the alert it should become.
pub fn expected_alerts(running: &Running) -> Vec<Value> {
    running
        .store
        .outbox_after(0, usize::MAX)
        .unwrap()
        .iter()
        .filter_map(|(_, entry)| match entry {
            OutboxEntry::Event(e) => Some(expected_body(e)),
            OutboxEntry::Rollup { .. } => None,
        })
        .collect()
}

pub async fn status(running: &Running) -> Value {
    reqwest::get(format!("http://{}/api/v1/status", running.web_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `alerts` sink in `/api/v1/status`.
pub async fn sink_status(running: &Running) -> Value {
    let status = status(running).await;
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "alerts")
        .cloned()
        .expect("the alerts sink on the status")
}

pub async fn metrics(running: &Running) -> String {
    reqwest::get(format!("http://{}/metrics", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true, for at most `secs`.
pub async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sim has finished and the store holds everything it produced.
pub async fn sim_done(running: &Running) {
    eventually(60, "sim done", async || {
        status(running).await["sources"][0]["state"] == "stopped"
    })
    .await;
    // Stopped means sent, not stored: wait until the store has committed every reading the
    // sim delivered (the events they raised are in the same commits).
    eventually(60, "every sim reading committed", async || {
        let m = metrics(running).await;
        let sent = metric(&m, "edgewatch_source_readings_total{source=\"sim\"}");
        let stored = metric(&m, "edgewatch_store_written_records_total{table=\"raw\"}");
        sent.is_some() && sent == stored
    })
    .await;
}

/// (state, count) of every alert by state, for messages.
pub fn summary(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in alerts {
        *out.entry(a["state"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}
