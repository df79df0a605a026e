//! End-to-end tests of the web: each starts [`serve`] on 127.0.0.1:0 with a real store in a
//! temporary directory and a hand-made live snapshot, and talks to it over HTTP.

mod ack;
mod events;
mod hardening;
mod ingest;
mod openapi;
mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{WebState, serve};
use crate::config::{StoreConfig, WebConfig};
use crate::live::{
    BadPayloadStat, FieldState, LiveSnapshot, PipelineCounters, SensorState, SourceRegistry,
};
use crate::metrics::Metrics;
use crate::model::{
    AnomalyEvent, NS_PER_SEC, Quality, Rollup, SeriesKey, Severity, Stats, TimeNs, format_time,
    now_ns, parse_time,
};
use crate::store::{Store, WriteBatch};

const MINUTE: i64 = 60 * NS_PER_SEC;
const HOSTILE_ID: &str = "<script>alert(\"pwned\")</script>/x";

fn t0() -> TimeNs {
    parse_time("2025-01-15T10:00:00Z").unwrap()
}

/// An HTTP client; reqwest's TLS backend needs the process-wide rustls provider (ring) that
/// `main` and `app::start` install, even for plain HTTP.
pub(super) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A running server and the handles a test uses to feed it.
struct Harness {
    base: String,
    client: reqwest::Client,
    store: Store,
    /// Publishes a new live snapshot, as the pipeline does.
    live: watch::Sender<Arc<LiveSnapshot>>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(snapshot: LiveSnapshot) -> Harness {
        Self::start_with(snapshot, sources()).await
    }

    async fn start_with(snapshot: LiveSnapshot, sources: SourceRegistry) -> Harness {
        Self::start_configured(snapshot, sources, WebConfig::default()).await
    }

    /// [`Harness::start_with`] with the given `[web]` settings.
    async fn start_configured(
        snapshot: LiveSnapshot,
        sources: SourceRegistry,
        config: WebConfig,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            path: dir.path().join("edgewatch.redb"),
            ..StoreConfig::default()
        })
        .unwrap();
        let (live_tx, live) = watch::channel(Arc::new(snapshot));
        let state = WebState {
            config_status: Default::default(),
            gateway_id: "gw-test".into(),
            version: "9.9.9",
            started_at: now_ns() - 3_700 * NS_PER_SEC,
            live,
            sources,
            sinks: Default::default(),
            store: store.clone(),
            metrics: Arc::new(Metrics::new()),
            window_secs: 60,
            config,
            ingest: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, shutdown.clone()));
        Harness {
            base,
            client: client(),
            store,
            live: live_tx,
            shutdown,
            server,
            _dir: dir,
        }
    }

    fn write(&self, batch: WriteBatch) {
        self.store.write(&batch).unwrap();
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// The harness's sources: an MQTT source that is up and a Modbus source that is down.
fn sources() -> SourceRegistry {
    let sources = SourceRegistry::default();
    sources.register("plant-broker", "mqtt").update(|s| {
        s.state = "up".into();
        s.readings = 1234;
        s.last_success = Some(now_ns());
        s.messages = 617;
        s.messages_per_sec = 12.5;
        s.bad_payloads.insert(
            "invalid_json".into(),
            BadPayloadStat {
                count: 3,
                last_example: "plant/p1: invalid JSON near <img src=x onerror=alert(1)>".into(),
                last_time: now_ns(),
            },
        );
        s.set_detail("broker", "127.0.0.1:1883 (tls)");
        s.set_detail("subscriptions", "plant/+/sensors/# qos1");
        s.set_detail("unacked", "5");
    });
    sources.register("press-1", "modbus_tcp").update(|s| {
        s.state = "down".into();
        s.errors = 7;
        s.last_error = Some("connection refused <10.0.0.5:502>".into());
    });
    sources
}

fn field(value: f64, time: TimeNs, rolling_avg: Option<f64>) -> FieldState {
    FieldState {
        value,
        time,
        quality: Quality::GOOD,
        rolling_avg,
    }
}

fn event(id: u64, sensor: &str, field: &str, raised_at: TimeNs, cleared: bool) -> AnomalyEvent {
    AnomalyEvent {
        id,
        sensor: sensor.into(),
        field: field.into(),
        rule: format!("{field}-high"),
        kind: "limit".into(),
        severity: Severity::Critical,
        raised_at,
        cleared_at: cleared.then_some(raised_at + MINUTE),
        value: 9.5,
        score: 9.5,
        peak_score: 12.25,
        peak_value: 12.25,
        peak_at: raised_at + NS_PER_SEC,
        message: format!("{field} above 8.0"),
    }
}

fn rollup(sensor: &str, field: &str, start: TimeNs, values: &[f64]) -> Rollup {
    let mut stats = Stats::of(start, values[0], Quality::GOOD);
    for (i, v) in values.iter().enumerate().skip(1) {
        stats.push(start + i as i64 * NS_PER_SEC, *v, Quality::GOOD);
    }
    Rollup {
        series: SeriesKey::new(sensor, field),
        start,
        length_ns: MINUTE,
        stats,
    }
}

/// Two sensors with live values, one of them hostile, and one active anomaly.
fn snapshot() -> LiveSnapshot {
    let now = now_ns();
    let mut sensors = BTreeMap::new();
    sensors.insert(
        "p-101".to_string(),
        SensorState {
            source: "plant-broker".into(),
            tags: BTreeMap::from([("line".to_string(), "line-1".to_string())]),
            fields: BTreeMap::from([
                ("temperature".to_string(), field(71.2, t0(), Some(70.9))),
                ("pressure".to_string(), field(3.91, now, None)),
            ]),
        },
    );
    sensors.insert(
        HOSTILE_ID.to_string(),
        SensorState {
            source: "<b>evil</b>".into(),
            tags: BTreeMap::from([("<s>k</s>".to_string(), "<u>v</u>".to_string())]),
            fields: BTreeMap::from([("<i>f</i>".to_string(), field(1.5, now, Some(1.5)))]),
        },
    );
    LiveSnapshot {
        taken_at: now,
        watermark: Some(t0()),
        sensors,
        active_events: vec![event(7, "p-101", "vibration", now - 90 * NS_PER_SEC, false)],
        counters: PipelineCounters {
            readings: 424_242,
            late_corrected: 3,
            ..PipelineCounters::default()
        },
    }
}

#[tokio::test]
async fn status_page_lists_sensors_with_values_and_shows_active_anomaly_before_sensor_table() {
    let h = Harness::start(snapshot()).await;
    let response = h.get("/").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();

    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(page.contains("gw-test") && page.contains("9.9.9"));
    let anomaly = page.find("vibration-high").expect("active anomaly shown");
    let sensors = page
        .find("<h2 id=\"sensors\">")
        .expect("sensor table shown");
    assert!(anomaly < sensors, "anomalies come before the sensor table");
    let sensor_table = &page[sensors..];
    for expected in ["p-101", "temperature", "71.2", "70.9", "pressure", "3.91"] {
        assert!(sensor_table.contains(expected), "{expected} missing");
    }
    for expected in [
        "plant-broker",
        "press-1",
        "connection refused",
        "424\u{202f}242",
    ] {
        assert!(page.contains(expected), "{expected} missing");
    }
}

#[tokio::test]
async fn status_page_escapes_a_hostile_sensor_id_and_links_to_its_page() {
    let h = Harness::start(snapshot()).await;
    let (status, page) = h.text("/").await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("<script>"),
        "raw script tag reached the page"
    );
    assert!(!page.contains("<b>evil") && !page.contains("<i>f"));
    assert!(!page.contains("<10.0.0.5"), "source errors are escaped too");
    assert!(
        !page.contains("<img"),
        "bad payload examples are escaped too"
    );
    assert!(page.contains("invalid_json ×3"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("broker 127.0.0.1:1883 (tls)"));
    assert!(page.contains("12.5"), "messages per second");
    assert!(page.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;/x"));
    let href = "/sensors/%3Cscript%3Ealert%28%22pwned%22%29%3C%2Fscript%3E%2Fx";
    assert!(page.contains(href), "link is one encoded path segment");

    let (status, sensor_page) = h.text(href).await;
    assert_eq!(status, 200);
    assert!(!sensor_page.contains("<script>"));
    assert!(sensor_page.contains("Sensor &lt;script&gt;"));
    assert!(!sensor_page.contains("<s>k") && !sensor_page.contains("<u>v"));
    assert!(
        sensor_page.contains("&lt;s&gt;k&lt;/s&gt;=&lt;u&gt;v&lt;/u&gt;"),
        "tags shown, escaped"
    );
}

#[tokio::test]
async fn sensors_api_returns_one_object_per_sensor_with_its_fields() {
    let h = Harness::start(snapshot()).await;
    let (status, body) = h.json("/api/v1/sensors").await;
    assert_eq!(status, 200);
    let sensors = body.as_array().unwrap();
    assert_eq!(sensors.len(), 2);
    let p101 = sensors.iter().find(|s| s["id"] == "p-101").unwrap();
    assert_eq!(p101["source"], "plant-broker");
    assert_eq!(p101["tags"], serde_json::json!({"line": "line-1"}));
    let temperature = &p101["fields"]["temperature"];
    assert_eq!(temperature["value"], 71.2);
    assert_eq!(temperature["time"], format_time(t0()));
    assert_eq!(temperature["rolling_avg"], 70.9);
    assert_eq!(temperature["quality"], serde_json::json!([]));
    assert_eq!(p101["fields"]["pressure"]["rolling_avg"], Value::Null);
}

#[tokio::test]
async fn status_api_reports_gateway_sources_store_and_pipeline() {
    let h = Harness::start(snapshot()).await;
    let (status, body) = h.json("/api/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["gateway_id"], "gw-test");
    assert_eq!(body["version"], "9.9.9");
    assert!(body["uptime_secs"].as_i64().unwrap() >= 3_700);
    assert!(parse_time(body["started_at"].as_str().unwrap()).is_some());
    assert!(parse_time(body["time"].as_str().unwrap()).is_some());
    let sources = body["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["name"], "plant-broker");
    assert_eq!(sources[0]["type"], "mqtt");
    assert!(parse_time(sources[0]["last_success"].as_str().unwrap()).is_some());
    assert_eq!(sources[1]["last_success"], Value::Null);
    assert_eq!(sources[0]["messages"], 617);
    assert_eq!(sources[0]["messages_per_sec"], 12.5);
    let bad = &sources[0]["bad_payloads"]["invalid_json"];
    assert_eq!(bad["count"], 3);
    assert!(bad["last_example"].as_str().unwrap().contains("<img"));
    assert!(parse_time(bad["last_time"].as_str().unwrap()).is_some());
    assert_eq!(sources[0]["details"]["broker"], "127.0.0.1:1883 (tls)");
    assert_eq!(sources[0]["details"]["unacked"], "5");
    assert_eq!(sources[1]["messages"], 0);
    assert_eq!(sources[1]["bad_payloads"], serde_json::json!({}));
    assert_eq!(sources[1]["details"], serde_json::json!({}));
    assert_eq!(body["sinks"], serde_json::json!([]));
    assert!(body["store"]["file_bytes"].as_u64().unwrap() > 0);
    assert!(body["store"]["max_bytes"].as_u64().unwrap() > 0);
    assert_eq!(body["pipeline"]["counters"]["readings"], 424_242);
    assert_eq!(body["pipeline"]["watermark"], format_time(t0()));
    assert_eq!(body["active_anomalies"], 1);
}

#[tokio::test]
async fn rollups_api_returns_stored_rollups_within_from_and_to() {
    let h = Harness::start(snapshot()).await;
    let t = t0();
    h.write(WriteBatch {
        new_series: vec![
            (
                SeriesKey::new("p-101", "temperature"),
                "plant-broker".into(),
            ),
            (SeriesKey::new("p-101", "pressure"), "plant-broker".into()),
        ],
        rollups: vec![
            rollup("p-101", "temperature", t, &[70.0, 72.0]),
            rollup("p-101", "temperature", t + MINUTE, &[71.0, 73.0, 75.0]),
            rollup("p-101", "temperature", t + 2 * MINUTE, &[74.0]),
            rollup("p-101", "pressure", t + MINUTE, &[3.9]),
        ],
        ..WriteBatch::default()
    });

    let from = format_time(t + MINUTE);
    let to = format_time(t + 2 * MINUTE);
    let (status, body) = h
        .json(&format!(
            "/api/v1/sensors/p-101/rollups?field=temperature&from={from}&to={to}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let rollups = body.as_array().unwrap();
    assert_eq!(rollups.len(), 1, "{body}");
    let r = &rollups[0];
    assert_eq!(r["field"], "temperature");
    assert_eq!(r["start"], from);
    assert_eq!(r["end"], to);
    assert_eq!(r["count"], 3);
    assert_eq!(
        (r["mean"].clone(), r["min"].clone(), r["max"].clone()),
        (73.0.into(), 71.0.into(), 75.0.into())
    );
    assert_eq!(r["stddev"], 2.0);
    assert_eq!(
        (r["first"].clone(), r["last"].clone()),
        (71.0.into(), 75.0.into())
    );

    let all = format!(
        "from={}&to={}",
        format_time(t),
        format_time(t + 10 * MINUTE)
    );
    let (_, body) = h
        .json(&format!("/api/v1/sensors/p-101/rollups?{all}"))
        .await;
    let fields: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["pressure", "temperature", "temperature", "temperature"]
    );
}

#[tokio::test]
async fn rollups_api_defaults_to_the_last_24_hours() {
    let h = Harness::start(snapshot()).await;
    let recent = (now_ns() - 3_600 * NS_PER_SEC) / MINUTE * MINUTE;
    let old = recent - 25 * 3_600 * NS_PER_SEC;
    h.write(WriteBatch {
        new_series: vec![(SeriesKey::new("p-101", "pressure"), "plant-broker".into())],
        rollups: vec![
            rollup("p-101", "pressure", old, &[1.0]),
            rollup("p-101", "pressure", recent, &[2.0]),
        ],
        ..WriteBatch::default()
    });
    let (status, body) = h
        .json("/api/v1/sensors/p-101/rollups?field=&from=&to=")
        .await;
    assert_eq!(status, 200);
    let starts: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, [format_time(recent)]);
}

#[tokio::test]
async fn rollups_api_rejects_a_bad_from_with_400_naming_the_parameter() {
    let h = Harness::start(snapshot()).await;
    let (status, body) = h.json("/api/v1/sensors/p-101/rollups?from=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], 400);
    assert_eq!(body["error"]["message"], "from: not an RFC 3339 time");

    let (status, body) = h
        .json("/api/v1/sensors/p-101/rollups?form=2025-01-15T10:00:00Z")
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("form: unknown")
    );

    // An unencoded `+` in an offset arrives as a space and is still understood.
    let (status, body) = h
        .json(
            "/api/v1/sensors/p-101/rollups?from=2025-01-15T11:00:00+01:00&to=2025-01-15T10:01:00Z",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let to = format_time(t0());
    let (status, body) = h
        .json(&format!("/api/v1/sensors/p-101/rollups?from={to}&to={to}"))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("from:")
    );
}

#[tokio::test]
async fn rollups_of_an_unknown_sensor_are_404_but_a_stored_sensor_is_known() {
    let h = Harness::start(snapshot()).await;
    let (status, body) = h.json("/api/v1/sensors/nope/rollups").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], 404);

    h.write(WriteBatch {
        new_series: vec![(SeriesKey::new("p-900", "flow"), "plant-broker".into())],
        ..WriteBatch::default()
    });
    let (status, body) = h.json("/api/v1/sensors/p-900/rollups").await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!([]));
}

#[tokio::test]
async fn events_api_filters_by_active_and_sensor_newest_first() {
    let h = Harness::start(snapshot()).await;
    let t = t0();
    h.write(WriteBatch {
        events: vec![
            event(1, "p-101", "vibration", t, false),
            event(2, "p-101", "temperature", t + MINUTE, true),
            event(3, "p-102", "pressure", t + 2 * MINUTE, false),
        ],
        ..WriteBatch::default()
    });
    let ids = |body: &Value| -> Vec<u64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };

    let (status, body) = h.json("/api/v1/events?active=true").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), [3, 1]);
    assert_eq!(body[0]["cleared_at"], Value::Null);
    assert_eq!(body[0]["raised_at"], format_time(t + 2 * MINUTE));
    assert_eq!(body[0]["severity"], "critical");
    assert_eq!(body[0]["peak_value"], 12.25);

    let (_, body) = h.json("/api/v1/events?active=false").await;
    assert_eq!(ids(&body), [2]);
    assert_eq!(body[0]["cleared_at"], format_time(t + 2 * MINUTE));

    let (_, body) = h.json("/api/v1/events").await;
    assert_eq!(ids(&body), [3, 2, 1]);
    let (_, body) = h.json("/api/v1/events?sensor=p-101&limit=1").await;
    assert_eq!(ids(&body), [2]);

    let (status, body) = h.json("/api/v1/events?active=maybe").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("active:")
    );
    let (status, body) = h.json("/api/v1/events?sensor=&sensor=p-101").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sensor: given more")
    );
    let (status, body) = h.json("/api/v1/events?limit=0").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("limit:")
    );
}

#[tokio::test]
async fn metrics_expose_edgewatch_metrics_with_fresh_store_gauges_and_end_with_a_newline() {
    let h = Harness::start(snapshot()).await;
    let response = h.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("edgewatch_pipeline_readings_total"));
    assert!(body.ends_with('\n'));
    let file_bytes: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("edgewatch_store_file_bytes "))
        .expect("store file gauge")
        .parse()
        .unwrap();
    assert!(file_bytes > 0, "gauge refreshed from store.stats()");
}

#[tokio::test]
async fn sensor_page_shows_latest_values_recent_rollups_and_events() {
    let h = Harness::start(snapshot()).await;
    let recent = (now_ns() - 10 * MINUTE) / MINUTE * MINUTE;
    h.write(WriteBatch {
        new_series: vec![(
            SeriesKey::new("p-101", "temperature"),
            "plant-broker".into(),
        )],
        rollups: vec![rollup("p-101", "temperature", recent, &[68.5, 69.5])],
        events: vec![event(11, "p-101", "temperature", recent, true)],
        ..WriteBatch::default()
    });
    let (status, page) = h.text("/sensors/p-101").await;
    assert_eq!(status, 200);
    for expected in [
        "71.2",
        "70.9",
        "plant-broker",
        &format_time(recent),
        "69",
        "temperature above 8.0",
    ] {
        assert!(page.contains(expected), "{expected} missing");
    }
}

#[tokio::test]
async fn unknown_sensor_and_unknown_paths_are_404() {
    let h = Harness::start(snapshot()).await;
    let (status, page) = h.text("/sensors/nope").await;
    assert_eq!(status, 404);
    assert!(page.contains("nope") && page.contains("<html"));

    let (status, page) = h.text("/no/such/page").await;
    assert_eq!(status, 404);
    assert!(page.contains("404"));

    let (status, body) = h.json("/api/v1/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], 404);

    // No http source: no ingest route.
    let response = h
        .client
        .post(format!("{}/api/v1/ingest", h.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 404);
}

#[tokio::test]
async fn only_get_is_served() {
    let h = Harness::start(snapshot()).await;
    let response = h
        .client
        .post(format!("{}/api/v1/events", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 405);
    let response = h
        .client
        .delete(format!("{}/", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn healthz_answers_ok_and_cancel_stops_the_server() {
    let h = Harness::start(LiveSnapshot::default()).await;
    assert_eq!(h.text("/healthz").await, (200, "ok".to_string()));
    let (status, page) = h.text("/").await;
    assert_eq!(status, 200, "an empty gateway still renders");
    assert!(page.contains("No active anomalies"));

    h.shutdown.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), h.server)
        .await
        .expect("server stopped within 5 s");
    result.unwrap().unwrap();
}
