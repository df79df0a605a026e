//! `POST /api/v1/ingest` end to end: the daemon (`app::start`) with an `http` source, spoken
//! to over HTTP on 127.0.0.1. The success cases need the payload decoder (`crate::ingest`).

use std::time::{Duration, Instant};

use edgewatch::app::{self, Running};
use edgewatch::config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "in-g3st";
const MAX_BODY: usize = 4096;

async fn start(dir: &std::path::Path, token: bool) -> (Running, CancellationToken) {
    let token = if token {
        format!("token = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    let text = format!(
        r#"
[gateway]
id = "gw-ingest"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
snapshot_interval_ms = 50
[[sources]]
type = "http"
name = "plant-http"
max_body_bytes = {MAX_BODY}
{token}
"#,
        dir.join("s.redb").display()
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    let running = app::start(
        config::load_str(&text).expect("test config"),
        shutdown.clone(),
    )
    .await
    .unwrap();
    (running, shutdown)
}

async fn stop(running: Running, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the daemon stops: the ingest sender does not hold the pipeline open")
        .unwrap();
}

fn url(running: &Running) -> String {
    format!("http://{}/api/v1/ingest", running.web_addr)
}

/// POSTs `body` with the token and `content_type` (none when empty); the status and JSON.
async fn post(running: &Running, content_type: &str, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url(running))
        .bearer_auth(TOKEN)
        .body(body.to_string());
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn source_health(running: &Running) -> Value {
    let status: Value = reqwest::get(format!("http://{}/api/v1/status", running.web_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["sources"][0].clone()
}

/// Waits until `/api/v1/sensors` shows `sensor` with `field` = `value`.
async fn sensor_shows(running: &Running, sensor: &str, field: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sensors: Value = reqwest::get(format!("http://{}/api/v1/sensors", running.web_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = sensors.as_array().unwrap().iter().any(|s| {
            s["id"] == sensor
                && s["source"] == "plant-http"
                && s["fields"][field]["value"].as_f64() == Some(value)
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sensor}/{field} = {value} not in /api/v1/sensors: {sensors}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_json_body_is_accepted_and_its_readings_reach_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), true).await;
    let body = r#"{"sensor_id": "press-7", "timestamp": "2026-03-01T10:00:00Z", "pressure": 4.25, "temperature": 61.5}"#;
    let (status, answer) = post(&running, "application/json", body).await;
    assert_eq!(
        (status, &answer),
        (202, &serde_json::json!({"accepted": 2}))
    );
    sensor_shows(&running, "press-7", "pressure", 4.25).await;
    sensor_shows(&running, "press-7", "temperature", 61.5).await;
    // No content type: the mapping (JSON) too.
    let body = r#"{"sensor_id": "press-8", "pressure": 1.5}"#;
    assert_eq!(post(&running, "", body).await.0, 202);
    sensor_shows(&running, "press-8", "pressure", 1.5).await;
    let health = source_health(&running).await;
    assert_eq!(
        (health["type"].as_str(), health["state"].as_str()),
        (Some("http"), Some("up"))
    );
    assert_eq!(health["readings"], 3);
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_protocol_body_is_accepted_as_text_plain() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), true).await;
    let body = "plant,sensor_id=pump-3 flow=12.5,speed=1450\nplant,sensor_id=pump-4 flow=7.25\n";
    let (status, answer) = post(&running, "text/plain; charset=utf-8", body).await;
    assert_eq!(
        (status, &answer),
        (202, &serde_json::json!({"accepted": 3}))
    );
    sensor_shows(&running, "pump-3", "flow", 12.5).await;
    sensor_shows(&running, "pump-4", "flow", 7.25).await;
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400_naming_the_reason_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), true).await;
    let (status, answer) = post(&running, "application/json", "{\"sensor_id\": ").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["status"], 400);
    assert_eq!(answer["error"]["reason"], "invalid_json");
    assert!(answer["error"]["message"].is_string());
    let health = source_health(&running).await;
    assert_eq!(health["errors"], 1);
    assert!(
        health["last_error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_json: "),
        "{health}"
    );
    assert_eq!(health["readings"], 0);
    assert_eq!(
        health["bad_payloads"]["invalid_json"]["count"], 1,
        "{health}"
    );
    assert!(
        health["bad_payloads"]["invalid_json"]["last_example"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let metrics = reqwest::get(format!("http://{}/metrics", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edgewatch_source_bad_payloads_total{")
                && l.contains("reason=\"invalid_json\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_decoding_401_413_415_404_and_405() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), true).await;
    let client = reqwest::Client::new();
    let body = r#"{"sensor_id": "press-7", "pressure": 4.25}"#;

    // No token, a wrong one.
    let response = client.post(url(&running)).body(body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["status"], 401);
    let response = client
        .post(url(&running))
        .bearer_auth("in-g3sx")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Too large, by Content-Length.
    let big = format!(
        "{{\"sensor_id\": \"p\", \"pad\": \"{}\"}}",
        "x".repeat(MAX_BODY)
    );
    let (status, answer) = post(&running, "application/json", &big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["reason"], "too_large");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_BODY.to_string()),
        "the answer says the limit: {answer}"
    );
    // Too large, chunked (no Content-Length): refused while it streams.
    assert_eq!(chunked_post(&running, MAX_BODY * 4).await, 413);

    // Another content type.
    let (status, answer) = post(&running, "application/xml", "<a/>").await;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/xml")
    );

    // An unknown query parameter.
    let response = client
        .post(format!("{}?topik=x", url(&running)))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // GET on the route: 405 naming POST.
    let response = client.get(url(&running)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST"),
        "{answer}"
    );

    let health = source_health(&running).await;
    assert_eq!(health["errors"], 5, "{health}");
    assert_eq!(health["readings"], 0);
    stop(running, shutdown).await;
}

/// A chunked POST of `size` bytes with the token, written by hand; the answer's status.
async fn chunked_post(running: &Running, size: usize) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(running.web_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        running.web_addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    for _ in 0..size / 0x400 {
        // The server may answer and close before everything is written.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_none_is_needed_and_without_an_http_source_the_route_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), false).await;
    let response = reqwest::Client::new()
        .post(url(&running))
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "past the token check");
    stop(running, shutdown).await;

    let text = format!(
        "[gateway]\nid='g'\n[store]\npath='{}'\n[web]\nlisten='127.0.0.1:0'\n[[sources]]\ntype='sim'\nname='s'\nticks=0\n",
        dir.path().join("other.redb").display()
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(url(&running))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["status"], 404);
    stop(running, shutdown).await;
}

/// Tags from the source's config and from the topic (`topic_template`) reach the API and every
/// rollup's outbox entry, which is what the forwarder writes to InfluxDB as tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_source_tags_reach_the_api_and_the_forwarded_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[gateway]
id = "gw-tags"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
snapshot_interval_ms = 50
[[sources]]
type = "http"
name = "plant-http"
topic_template = "plant/{{line}}/sensors/{{sensor_id}}"
tags = {{ site = "plant-3" }}
"#,
        dir.path().join("s.redb").display()
    );
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let now = edgewatch::model::format_time(edgewatch::model::now_ns());
    let response = reqwest::Client::new()
        .post(format!("{}?topic=plant/line-7/sensors/p-9", url(&running)))
        .header("content-type", "application/json")
        .body(format!(r#"{{"timestamp":"{now}","temperature":20.5}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sensor = loop {
        let sensors: Value = reqwest::get(format!("http://{}/api/v1/sensors", running.web_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(s) = sensors
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "p-9")
        {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "p-9 never appeared: {sensors}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sensor["tags"],
        serde_json::json!({"line": "line-7", "site": "plant-3"})
    );
    let store = running.store.clone();
    stop(running, shutdown).await;
    // The clean shutdown flushed the open window: its rollup carries the tags.
    let entries = store.outbox_after(0, usize::MAX).unwrap();
    let tags: Vec<_> = entries
        .iter()
        .filter_map(|(_, e)| match e {
            edgewatch::store::OutboxEntry::Rollup { sensor, tags, .. } if sensor == "p-9" => {
                Some(tags.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(tags.len(), 1, "{entries:?}");
    assert_eq!(tags[0]["line"], "line-7");
    assert_eq!(tags[0]["site"], "plant-3");
}

/// The running daemon serves its OpenAPI document, and every operation it lists is answered
/// (not 404, not 405), the ingest route included because an `http` source is configured.
/// That the document lists exactly the router's routes is checked against the router itself
/// in `src/web/tests/openapi.rs`.
#[tokio::test]
async fn the_daemon_serves_an_openapi_document_whose_operations_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start(dir.path(), true).await;
    let base = format!("http://{}", running.web_addr);
    let response = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/ingest"));
    let client = reqwest::Client::new();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "unknown-sensor");
        for method in item.as_object().unwrap().keys() {
            let status = client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{base}{concrete}"),
                )
                .send()
                .await
                .unwrap()
                .status();
            assert_ne!(status, 405, "{method} {path}");
            if !path.contains('{') {
                assert_ne!(status, 404, "{method} {path}");
            }
            operations += 1;
        }
    }
    // status, sensors, rollups, events, the events' acknowledgement, openapi.json, ingest.
    assert_eq!(operations, 7);
    stop(running, shutdown).await;
}
