//! What the MQTT acceptance tests (`tests/mqtt_*.rs`) share: payloads written independently of
//! the daemon's own formatting, the readings a test published and the rollups they must give,
//! readers of the store, the JSON API and `/metrics`, and an in-process daemon with one mqtt
//! source. Each test file includes it with `mod mqtt_common;` next to `mod support;`.
//!
//! Values in the tests are multiples of a power of two (71.25, 3.875, ...) wherever a window
//! holds more than two of them, so that a sum is exact in any order: a rollup merged from
//! pieces (late readings, windows restored after a crash) must then equal the expected mean
//! exactly, not approximately.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgewatch::app::{self, Running};
use edgewatch::config;
use edgewatch::model::{NS_PER_SEC, Quality, SeriesKey};
use edgewatch::store::Store;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::{format_description, offset};
use tokio_util::sync::CancellationToken;

use crate::support::mosquitto::Mosquitto;
use crate::support::mqtt::{Client, connect};

/// (sensor, field, window start) → (count, mean).
pub type Rollups = BTreeMap<(String, String, i64), (u64, f64)>;

/// (sensor, field) → every (time, value), ordered by time.
pub type Raw = BTreeMap<(String, String), Vec<(i64, f64)>>;

/// (sensor, field) → every (time, value, quality), ordered by time.
pub type RawWithQuality = BTreeMap<(String, String), Vec<(i64, f64, Quality)>>;

/// Whole seconds of the gateway clock, as nanoseconds: a base for event times.
pub fn now_secs_ns() -> i64 {
    edgewatch::model::now_ns() / NS_PER_SEC * NS_PER_SEC
}

/// RFC 3339 with milliseconds and `Z`, as the reference payloads carry it.
pub fn rfc3339_ms(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(t.into())
        .unwrap()
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap()
}

/// RFC 3339 with milliseconds in the `+01:00` offset (the same instant as [`rfc3339_ms`]).
pub fn rfc3339_ms_plus_one_hour(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(t.into())
        .unwrap()
        .to_offset(offset!(+1))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
        ))
        .unwrap()
}

/// The reference payload: `{"sensor_id":..,"timestamp":..,"temperature":..,"pressure":..,
/// "vibration":..}` with the time in RFC 3339 (milliseconds, `Z`).
pub fn reference_payload(
    sensor: &str,
    t: i64,
    [temperature, pressure, vibration]: [f64; 3],
) -> String {
    format!(
        r#"{{"sensor_id":"{sensor}","timestamp":"{}","temperature":{temperature:?},"pressure":{pressure:?},"vibration":{vibration:?}}}"#,
        rfc3339_ms(t)
    )
}

/// The readings a test published (and the broker acknowledged), to compare with the store.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// (sensor, field) → (time, value) in publishing order.
    pub readings: BTreeMap<(String, String), Vec<(i64, f64)>>,
}

impl Expected {
    pub fn add(&mut self, sensor: &str, field: &str, time: i64, value: f64) {
        self.readings
            .entry((sensor.to_string(), field.to_string()))
            .or_default()
            .push((time, value));
    }

    /// The three fields of a reference payload.
    pub fn add_reference(&mut self, sensor: &str, time: i64, values: [f64; 3]) {
        for (field, value) in ["temperature", "pressure", "vibration"]
            .into_iter()
            .zip(values)
        {
            self.add(sensor, field, time, value);
        }
    }

    pub fn len(&self) -> usize {
        self.readings.values().map(Vec::len).sum()
    }

    /// The readings ordered by time, as the store returns them.
    pub fn raw(&self) -> Raw {
        self.readings
            .iter()
            .map(|(key, list)| {
                let mut list = list.clone();
                list.sort_by_key(|&(t, _)| t);
                (key.clone(), list)
            })
            .collect()
    }

    /// The rollups of `window_ns` windows (aligned to the epoch): count and sum / count.
    pub fn rollups(&self, window_ns: i64) -> Rollups {
        let mut sums: BTreeMap<(String, String, i64), (u64, f64)> = BTreeMap::new();
        for ((sensor, field), list) in &self.readings {
            for &(t, v) in list {
                let entry = sums
                    .entry((
                        sensor.clone(),
                        field.clone(),
                        t.div_euclid(window_ns) * window_ns,
                    ))
                    .or_default();
                entry.0 += 1;
                entry.1 += v;
            }
        }
        sums.into_iter()
            .map(|(k, (n, sum))| (k, (n, sum / n as f64)))
            .collect()
    }
}

/// Every raw reading in the store with its quality, by series.
pub fn stored_raw_with_quality(store: &Store) -> RawWithQuality {
    let mut out = BTreeMap::new();
    for (series, _) in store.series().unwrap() {
        let list = store.raw(&series, i64::MIN, i64::MAX, usize::MAX).unwrap();
        out.insert((series.sensor.to_string(), series.field.to_string()), list);
    }
    out
}

/// Every raw reading in the store, by series.
pub fn stored_raw(store: &Store) -> Raw {
    stored_raw_with_quality(store)
        .into_iter()
        .map(|(k, list)| (k, list.into_iter().map(|(t, v, _)| (t, v)).collect()))
        .collect()
}

/// The raw readings of one series.
pub fn stored_series(store: &Store, sensor: &str, field: &str) -> Vec<(i64, f64, Quality)> {
    store
        .raw(
            &SeriesKey::new(sensor, field),
            i64::MIN,
            i64::MAX,
            usize::MAX,
        )
        .unwrap()
}

/// Every rollup in the store.
pub fn stored_rollups(store: &Store) -> Rollups {
    let mut out = Rollups::new();
    for (series, _) in store.series().unwrap() {
        for r in store
            .rollups(&series.sensor, Some(&series.field), i64::MIN, i64::MAX)
            .unwrap()
        {
            out.insert(
                (series.sensor.to_string(), series.field.to_string(), r.start),
                (r.stats.count, r.stats.mean()),
            );
        }
    }
    out
}

/// Panics naming a few differences when `got` and `want` differ.
pub fn assert_same<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) {
    if got == want {
        return;
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .take(5)
        .collect();
    let differing: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .take(5)
        .collect();
    panic!(
        "{what}: got {} entries, expected {}\nmissing: {missing:?}\nunexpected: {extra:?}\n\
         different (expected, got): {differing:?}",
        got.len(),
        want.len()
    );
}

/// `GET url` as JSON from a daemon's API.
pub async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `GET url` as text.
pub async fn get_text(url: &str) -> String {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.text().await.unwrap()
}

/// The rollups of `sensors` through `GET /api/v1/sensors/{id}/rollups` (all fields, the last
/// hour and the next), keyed like [`Rollups`]. A sensor the daemon does not know yet (404) has
/// none.
pub async fn api_rollups(base: &str, sensors: &[&str]) -> Rollups {
    let now = edgewatch::model::now_ns();
    let (from, to) = (
        rfc3339_ms(now - 3600 * NS_PER_SEC),
        rfc3339_ms(now + 3600 * NS_PER_SEC),
    );
    let mut out = Rollups::new();
    for sensor in sensors {
        let url = format!("{base}/api/v1/sensors/{sensor}/rollups?from={from}&to={to}");
        let response = reqwest::get(&url).await.unwrap();
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let list: Value = response.json().await.unwrap();
        for r in list.as_array().unwrap() {
            let start = edgewatch::model::parse_time(r["start"].as_str().unwrap()).unwrap();
            out.insert(
                (
                    sensor.to_string(),
                    r["field"].as_str().unwrap().to_string(),
                    start,
                ),
                (r["count"].as_u64().unwrap(), r["mean"].as_f64().unwrap()),
            );
        }
    }
    out
}

/// The `/api/v1/status` entry of the source `name`.
pub async fn source_status(base: &str, name: &str) -> Value {
    let status = get_json(&format!("{base}/api/v1/status")).await;
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {status:#}"))
        .clone()
}

/// The value of the sample of metric `name` whose labels include every one of `labels`, in
/// a Prometheus text exposition (label order does not matter).
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        all.then(|| value.trim().parse().ok()).flatten()
    })
}

/// Polls `check` every 100 ms until it returns `Ok`, for at most `limit`; then panics with
/// `what` and the last `Err` (a description of what was seen).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A daemon config: the store in `dir`, the web on a free port, one-second windows without
/// lateness, commits every 50 ms, and one mqtt source `m` on 127.0.0.1 whose other keys
/// (port, client id, credentials, subscriptions) are `source`.
pub fn daemon_config(dir: &std::path::Path, gateway: &str, source: &str) -> config::Config {
    let text = format!(
        r#"
[gateway]
id = "{gateway}"
[store]
path = "{}"
commit_interval_ms = 50
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
snapshot_interval_ms = 50
[log]
level = "warn"
[[sources]]
type = "mqtt"
name = "m"
host = "127.0.0.1"
reconnect_initial_ms = 100
reconnect_max_secs = 1
{source}
"#,
        dir.join("edgewatch.redb").display()
    );
    config::load_str(&text).unwrap_or_else(|e| panic!("test config: {e:?}\n{text}"))
}

/// Starts the daemon in-process.
pub async fn start(config: config::Config) -> (Running, CancellationToken) {
    let shutdown = CancellationToken::new();
    let running = app::start(config, shutdown.clone()).await.unwrap();
    (running, shutdown)
}

/// Stops it cleanly (open windows flushed, last commit) within 10 s.
pub async fn stop(running: Running, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the daemon stops within 10 s")
        .unwrap();
}

/// Waits until the broker has the subscriptions of `client_id`: a harness broker logs each
/// one as `client_id qos filter` (log_type subscribe). Blocking.
pub fn wait_subscribed(broker: &Mosquitto, client_id: &str, filters: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for filter in filters {
        let needle = format!(" {client_id} 1 {filter}");
        while !broker.log().contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "no subscription `{needle}` in the broker log:\n{}",
                broker.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// [`wait_subscribed`] from async code on a multi-threaded runtime.
pub async fn subscribed(broker: &Mosquitto, client_id: &str, filters: &[&str]) {
    tokio::task::block_in_place(|| wait_subscribed(broker, client_id, filters));
}

/// A connected test client `client_id` of `broker`.
pub async fn publisher(broker: &Mosquitto, client_id: &str) -> Client {
    connect(broker.mqtt_options(client_id))
        .await
        .unwrap_or_else(|e| panic!("publisher: {e}\n{}", broker.log_tail()))
        .0
}
