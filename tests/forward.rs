//! Forwarding to a real InfluxDB 1.x (`influxd`, started by the tests on a free loopback
//! port): normal delivery, an outage, a refused point, a misconfigured sink. The v2 API is
//! checked against a local HTTP stub, because no InfluxDB 2/3 server is available here.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgewatch::app::{self, Running};
use edgewatch::config::{self, Config};
use edgewatch::model::{NS_PER_SEC, format_time, now_ns};
use serde_json::Value;
use support::influxd::Influxd;
use tokio_util::sync::CancellationToken;

const WINDOW: i64 = 60 * NS_PER_SEC;

fn config(store: &std::path::Path, start: i64, ticks: u64, sink: &str) -> Config {
    let text = format!(
        r#"
[gateway]
id = "gw-fwd"
tags = {{ site = "test-plant" }}
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
fault_interval_secs = 30
start_time = "{}"
ticks = {ticks}
realtime = false
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
{sink}
"#,
        store.display(),
        format_time(start)
    );
    config::load_str(&text).expect("test config")
}

fn sink(url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\ntype = \"influxdb\"\nname = \"hq\"\nurl = \"{url}\"\nretry_initial_ms = 100\nretry_max_secs = 1\nmisconfigured_retry_secs = 1\n{extra}\n"
    )
}

async fn status(running: &Running) -> Value {
    reqwest::get(format!("http://{}/api/v1/status", running.web_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true, for at most `secs`.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rollups as (sensor, field, window start) → (count, mean, min, max).
type Rollups = BTreeMap<(String, String, i64), (u64, f64, f64, f64)>;

/// Every stored rollup.
fn stored_rollups(running: &Running) -> Rollups {
    let mut out = BTreeMap::new();
    for (series, _) in running.store.series().unwrap() {
        for r in running
            .store
            .rollups(&series.sensor, Some(&series.field), i64::MIN, i64::MAX)
            .unwrap()
        {
            out.insert(
                (series.sensor.to_string(), series.field.to_string(), r.start),
                (r.stats.count, r.stats.mean(), r.stats.min, r.stats.max),
            );
        }
    }
    out
}

/// Every `rollup` point in InfluxDB, keyed like [`stored_rollups`].
fn influx_rollups(influx: &Influxd, db: &str) -> Rollups {
    let result = influx.query(
        db,
        "SELECT \"count\", \"mean\", \"min\", \"max\", \"sensor\", \"field\" FROM \"rollup\"",
    );
    let mut out = BTreeMap::new();
    let Some(series) = result["results"][0]["series"].as_array() else {
        return out;
    };
    for s in series {
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let col = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        for v in s["values"].as_array().unwrap() {
            // Points of other writers (a test's own conflicting point) are not rollups of ours,
            // and InfluxDB 1.x stores each field as its own series: a query racing a write
            // can see some fields of a point before the others. Such rows are skipped.
            let complete = ["mean", "min", "max"]
                .iter()
                .all(|f| v[col(f)].as_f64().is_some());
            if v[col("count")].as_u64().is_none() || v[col("field")].is_null() || !complete {
                continue;
            }
            out.insert(
                (
                    v[col("sensor")].as_str().unwrap().to_string(),
                    v[col("field")].as_str().unwrap().to_string(),
                    v[col("time")].as_i64().unwrap(),
                ),
                (
                    v[col("count")].as_u64().unwrap(),
                    v[col("mean")].as_f64().unwrap(),
                    v[col("min")].as_f64().unwrap(),
                    v[col("max")].as_f64().unwrap(),
                ),
            );
        }
    }
    out
}

fn start_time() -> i64 {
    (now_ns() / WINDOW - 60) * WINDOW
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rollup_and_event_reaches_influxdb_with_its_tags_fields_and_time() {
    let influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let start = start_time();
    let sink = sink(
        &influx.url(),
        "database = \"plant\"\ntags = { region = \"north\" }",
    );

    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 600, &sink), shutdown.clone())
        .await
        .unwrap();
    // Let the sim finish, then stop: the open windows are flushed into the store.
    eventually(30, "sim done", async || {
        status(&running).await["sources"][0]["state"] == "stopped"
    })
    .await;
    eventually(30, "closed windows forwarded", async || {
        !influx_rollups(&influx, "plant").is_empty()
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();

    // Restart with nothing new: the forwarder drains what is left.
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 0, &sink), shutdown.clone())
        .await
        .unwrap();
    let expected = stored_rollups(&running);
    assert!(expected.len() >= 4 * 3 * 10, "{} rollups", expected.len());
    eventually(30, "every rollup in InfluxDB", async || {
        influx_rollups(&influx, "plant") == expected
    })
    .await;
    assert_eq!(
        influx_rollups(&influx, "plant"),
        expected,
        "values and timestamps, exactly"
    );

    // Tags: gateway, source, static gateway and sink tags.
    let tags = influx.query("plant", "SHOW TAG KEYS FROM \"rollup\"");
    let keys: Vec<&str> = tags["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[0].as_str().unwrap())
        .collect();
    for key in ["field", "gateway", "region", "sensor", "site", "source"] {
        assert!(keys.contains(&key), "tag {key} missing from {keys:?}");
    }
    let gw = influx.count(
        "plant",
        "SELECT COUNT(\"mean\") FROM \"rollup\" WHERE \"gateway\" = 'gw-fwd'",
    );
    assert_eq!(gw, expected.len() as u64);

    // Events: one point per episode, at its raise time, with its final state.
    let events = running.store.events(&Default::default()).unwrap();
    assert!(!events.is_empty(), "the fault schedule should raise events");
    eventually(30, "every event in InfluxDB", async || {
        influx.count("plant", "SELECT COUNT(\"id\") FROM \"anomaly\"") == events.len() as u64
    })
    .await;
    for e in &events {
        let r = influx.query(
            "plant",
            &format!(
                "SELECT \"id\", \"active\" FROM \"anomaly\" WHERE \"id\" = {}",
                e.id
            ),
        );
        let row = &r["results"][0]["series"][0]["values"][0];
        assert_eq!(row[0].as_i64(), Some(e.raised_at), "event {} time", e.id);
        assert_eq!(
            row[2].as_bool(),
            Some(e.is_active()),
            "event {} state",
            e.id
        );
    }

    let st = status(&running).await;
    let hq = &st["sinks"][0];
    assert_eq!(hq["name"], "hq");
    assert_eq!(hq["state"], "up");
    assert!(!hq["url"].as_str().unwrap().contains('?'));
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_points_become_dead_letters_and_the_rest_is_delivered() {
    let influx = Influxd::start();
    influx.create_database("plant");
    // InfluxDB 1.x fixes a field's type per shard. With one-hour shards and a `count` field
    // already stored as a string in the shard holding the sim's first window, InfluxDB refuses
    // exactly that window's 12 rollup points (4 sensors × 3 fields) as a partial write that
    // does not name the lines: a real refusal no other fault gives.
    influx.run_statement(
        "CREATE RETENTION POLICY \"hourly\" ON \"plant\" DURATION 30d REPLICATION 1 SHARD DURATION 1h DEFAULT",
    );
    let hour = 3600 * NS_PER_SEC;
    let boundary = (now_ns() / hour - 1) * hour;
    let (code, _) = influx.write_lines(
        "plant",
        &format!(
            "rollup,sensor=zz count=\"text\" {}\n",
            boundary - 30 * NS_PER_SEC
        ),
    );
    assert_eq!(code, 204);

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let start = boundary - WINDOW;
    let sink = sink(
        &influx.url(),
        "database = \"plant\"\nforward = [\"rollups\"]\nbatch_max_points = 40",
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 300, &sink), shutdown.clone())
        .await
        .unwrap();
    eventually(30, "sim done", async || {
        status(&running).await["sources"][0]["state"] == "stopped"
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();

    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 0, &sink), shutdown.clone())
        .await
        .unwrap();
    let mut expected = stored_rollups(&running);
    eventually(30, "backlog drained", async || {
        let st = status(&running).await;
        st["sinks"][0]["backlog_points"] == 0 && st["sinks"][0]["cursor"].as_u64() > Some(0)
    })
    .await;
    let letters = running.store.dead_letters("hq", 100).unwrap();
    assert_eq!(letters.len(), 12, "{letters:#?}");
    for l in &letters {
        assert!(l.reason.contains("field type conflict"), "{}", l.reason);
        assert!(l.line.starts_with("rollup,"), "{}", l.line);
    }
    assert_eq!(running.store.sink_counters("hq").unwrap().dead_letters, 12);
    expected.retain(|(_, _, t), _| *t != start);
    assert_eq!(
        influx_rollups(&influx, "plant"),
        expected,
        "every other rollup, exactly"
    );
    let st = status(&running).await;
    assert_eq!(st["sinks"][0]["dead_letters"], 12);
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_shows_misconfigured_and_loses_nothing_until_fixed() {
    let influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let start = start_time();
    let wrong = sink(&influx.url(), "database = \"plnat\"");
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 300, &wrong), shutdown.clone())
        .await
        .unwrap();
    eventually(30, "misconfigured shown", async || {
        status(&running).await["sinks"][0]["state"] == "misconfigured"
    })
    .await;
    let st = status(&running).await;
    assert!(
        st["sinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("database not found"),
        "{st}"
    );
    let page = reqwest::get(format!("http://{}/", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("MISCONFIGURED"),
        "the status page says so loudly"
    );
    shutdown.cancel();
    running.wait().await.unwrap();

    let right = sink(&influx.url(), "database = \"plant\"");
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 0, &right), shutdown.clone())
        .await
        .unwrap();
    let expected = stored_rollups(&running);
    eventually(30, "everything drained after the fix", async || {
        influx_rollups(&influx, "plant") == expected
    })
    .await;
    assert_eq!(influx_rollups(&influx, "plant"), expected);
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_the_link_down_and_the_backlog_drains_exactly_once_afterwards() {
    let mut influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let url = influx.url();
    let text = |ticks: &str| {
        format!(
            r#"
[gateway]
id = "gw-outage"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
[[sources]]
type = "sim"
name = "sim"
sensors = 2
interval_ms = 100
fault_interval_secs = 0
{ticks}
{}
database = "plant"
"#,
            store.display(),
            sink(&url, "")
        )
    };
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text("")).unwrap(), shutdown.clone())
        .await
        .unwrap();
    eventually(30, "first rollups in InfluxDB", async || {
        !influx_rollups(&influx, "plant").is_empty()
    })
    .await;

    tokio::task::block_in_place(|| influx.stop());
    eventually(30, "link shown down", async || {
        status(&running).await["sinks"][0]["state"] == "down"
    })
    .await;
    let first = status(&running).await["sinks"][0]["backlog_points"]
        .as_u64()
        .unwrap();
    eventually(30, "backlog growing", async || {
        status(&running).await["sinks"][0]["backlog_points"]
            .as_u64()
            .unwrap()
            > first + 6
    })
    .await;
    let st = status(&running).await;
    assert!(
        st["sinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{st}"
    );

    tokio::task::block_in_place(|| influx.restart());
    eventually(30, "backlog drained", async || {
        let st = status(&running).await;
        st["sinks"][0]["state"] == "up" && st["sinks"][0]["backlog_points"] == 0
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();

    // What the shutdown flushed is forwarded by the next run.
    let shutdown = CancellationToken::new();
    let running = app::start(
        config::load_str(&text("ticks = 0")).unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let expected = stored_rollups(&running);
    eventually(30, "everything in InfluxDB", async || {
        influx_rollups(&influx, "plant") == expected
    })
    .await;
    assert_eq!(
        influx_rollups(&influx, "plant"),
        expected,
        "every rollup, once, with its values"
    );
    assert_eq!(running.store.sink_counters("hq").unwrap().dropped, 0);
    shutdown.cancel();
    running.wait().await.unwrap();
}

/// No InfluxDB 2.x or 3.x server can be installed here, so the v2 request is checked against
/// a local HTTP stub that records what it receives and answers 204 like InfluxDB does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_api_sends_org_bucket_token_and_a_gzip_body() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, String, axum::http::HeaderMap, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().unwrap().push((
                    uri.path().to_string(),
                    uri.query().unwrap_or_default().to_string(),
                    headers,
                    body.to_vec(),
                ));
                axum::http::StatusCode::NO_CONTENT
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let sink = sink(
        &url,
        "api = \"v2\"\norg = \"acme\"\nbucket = \"plant\"\ntoken = \"s3cret-token\"\nprecision = \"s\"",
    );
    let shutdown = CancellationToken::new();
    let running = app::start(
        config(&dir.path().join("s.redb"), start_time(), 200, &sink),
        shutdown.clone(),
    )
    .await
    .unwrap();
    eventually(30, "a request", async || !seen.lock().unwrap().is_empty()).await;
    let (path, query, headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/api/v2/write");
    assert_eq!(query, "org=acme&bucket=plant&precision=s");
    assert_eq!(headers["authorization"], "Token s3cret-token");
    assert_eq!(headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("rollup,") || first.starts_with("anomaly,"),
        "{first}"
    );
    let time: i64 = first.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(time < 10_000_000_000, "precision s: {time}");

    let status_text = reqwest::get(format!("http://{}/api/v1/status", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page = reqwest::get(format!("http://{}/", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !status_text.contains("s3cret") && !page.contains("s3cret"),
        "secrets are never shown"
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rollups_reach_influxdb_while_a_rate_capped_backlog_drains() {
    let influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let test_start = now_ns();
    // "old" replays an hour-old recording as fast as it can (a backlog of thousands of
    // entries); "now" reports live. The sink may send only 200 points/s.
    let text = format!(
        r#"
[gateway]
id = "gw-live"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
[[sources]]
type = "sim"
name = "old"
sensor_prefix = "old-"
sensors = 4
fault_interval_secs = 0
start_time = "{}"
ticks = 600
realtime = false
[[sources]]
type = "sim"
name = "now"
sensor_prefix = "now-"
sensors = 1
interval_ms = 200
fault_interval_secs = 0
{}
database = "plant"
max_points_per_sec = 200
batch_max_points = 100
"#,
        dir.path().join("s.redb").display(),
        format_time(test_start - 3600 * NS_PER_SEC),
        sink(&influx.url(), "")
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text).unwrap(), shutdown.clone())
        .await
        .unwrap();
    // Once the replay has queued its backlog, a rollup of the present must arrive long before
    // the backlog (thousands of points at 200/s) can have drained.
    eventually(30, "replay done", async || {
        status(&running).await["sources"][0]["state"] == "stopped"
    })
    .await;
    let replayed = now_ns();
    eventually(20, "a live rollup in InfluxDB", async || {
        influx.count(
            "plant",
            &format!(
                "SELECT COUNT(\"mean\") FROM \"rollup\" WHERE \"sensor\" = 'now-001' AND time >= {replayed}"
            ),
        ) > 0
    })
    .await;
    // At that moment most of the backlog is still waiting (it needs about 35 s at 200/s).
    let old_sent = influx.count(
        "plant",
        "SELECT COUNT(\"mean\") FROM \"rollup\" WHERE \"source\" = 'old'",
    );
    let stored = running.store.stats().unwrap().rollups;
    assert!(stored > 7000, "the replay produced its backlog: {stored}");
    assert!(old_sent > 0, "the backlog drains too");
    assert!(
        old_sent < stored / 2,
        "the present arrived first: {old_sent} of {stored} old rollups sent"
    );
    // The status page shows the backlog (refreshed every 2 s).
    eventually(10, "backlog shown", async || {
        status(&running).await["sinks"][0]["backlog_points"]
            .as_u64()
            .unwrap()
            > 1000
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_misconfigured_and_a_password_file_fixes_it() {
    let influx = Influxd::start_with_auth("admin", "right-pass");
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let start = start_time();
    let wrong = sink(
        &influx.url(),
        "database = \"plant\"\nusername = \"admin\"\npassword = \"wrong-pass\"",
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 300, &wrong), shutdown.clone())
        .await
        .unwrap();
    eventually(30, "misconfigured shown", async || {
        status(&running).await["sinks"][0]["state"] == "misconfigured"
    })
    .await;
    let st = status(&running).await;
    assert!(
        st["sinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{st}"
    );
    assert!(
        !st.to_string().contains("wrong-pass"),
        "the password is never shown"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgewatch_sink_state{sink=\"hq\",state=\"misconfigured\"} 1"),
        "{metrics}"
    );
    shutdown.cancel();
    running.wait().await.unwrap();

    let secret = dir.path().join("influx-password");
    std::fs::write(&secret, "right-pass\n").unwrap();
    let right = sink(
        &influx.url(),
        &format!(
            "database = \"plant\"\nusername = \"admin\"\npassword_file = \"{}\"",
            secret.display()
        ),
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store, start, 0, &right), shutdown.clone())
        .await
        .unwrap();
    let expected = stored_rollups(&running);
    eventually(30, "everything drained after the fix", async || {
        influx_rollups(&influx, "plant") == expected
    })
    .await;
    assert_eq!(influx_rollups(&influx, "plant"), expected);
    let metrics = reqwest::get(format!("http://{}/metrics", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgewatch_sink_state{sink=\"hq\",state=\"up\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgewatch_sink_backlog_points{sink=\"hq\"}"),
        "{metrics}"
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}
