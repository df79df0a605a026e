//! `GET /api/v1/openapi.json` against the router the daemon serves: the document must list
//! exactly the `/api/v1` paths and methods the router answers, so a route added without its
//! `#[utoipa::path]` (or documented but not routed) fails here.
//!
//! The router's side is read from the built router itself: its paths from axum's `Debug`
//! output (the route table), its methods by asking each path with every method and keeping
//! those not answered 405. Nothing here is a hand-copied list of routes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{MappingConfig, Secret, StoreConfig, WebConfig};
use crate::ingest::Decoder;
use crate::live::{LiveSnapshot, SourceRegistry};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::web::ingest::{IngestHandle, IngestSender};
use crate::web::{WebState, router};

/// Methods a route could be given (HEAD follows GET and is not listed separately).
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];

fn state(
    dir: &tempfile::TempDir,
    with_ingest: bool,
) -> (WebState, mpsc::Receiver<crate::model::Batch>) {
    let store = Store::open(&StoreConfig {
        path: dir.path().join("s.redb"),
        ..StoreConfig::default()
    })
    .unwrap();
    let sources = SourceRegistry::default();
    let (tx, rx) = mpsc::channel(16);
    let (_live_tx, live) = watch::channel(Arc::new(LiveSnapshot::default()));
    let ingest = with_ingest.then(|| IngestHandle {
        source: "plant-http".into(),
        decoder: Decoder::new(&MappingConfig::default()).unwrap(),
        line_protocol: None,
        token: Secret::default(),
        max_body_bytes: 1024,
        tx: IngestSender::new(tx),
        health: sources.register("plant-http", "http"),
        pipeline_wait: Duration::from_millis(100),
        tags: Default::default(),
    });
    let state = WebState {
        config_status: Default::default(),
        gateway_id: "gw-test".into(),
        version: "9.9.9",
        started_at: 0,
        live,
        sources,
        sinks: Default::default(),
        store,
        metrics: Arc::new(Metrics::new()),
        window_secs: 60,
        config: WebConfig::default(),
        ingest,
    };
    (state, rx)
}

/// `(METHOD, path)` of every operation in the document under `/api/v1`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

/// Serves the router built from `state` and returns the document and the `(METHOD, path)`
/// pairs the router answers under `/api/v1`.
async fn document_and_served(state: WebState) -> (Value, BTreeSet<(String, String)>) {
    let app = router(state);
    // axum's route table, as its `Debug` prints it: every registered path is a quoted string.
    let table = format!("{app:?}");
    let paths: BTreeSet<String> = table
        .split('"')
        .filter(|s| s.starts_with("/api/v1"))
        .map(str::to_string)
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = super::client();

    let response = client
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the document is valid JSON");

    let mut served = BTreeSet::new();
    for path in &paths {
        // A path parameter `{id}` is asked with a sample value.
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let status = client
                .request(method.parse().unwrap(), format!("{base}{concrete}"))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status();
            // The path is in the route table, so the router never answers it 404 itself (a
            // handler may: the sample sensor is unknown); an unrouted method is 405.
            if status != 405 {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    server.abort();
    (doc, served)
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_api_routes_the_router_serves() {
    for with_ingest in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (state, _rx) = state(&dir, with_ingest);
        let (doc, served) = document_and_served(state).await;
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "openapi: {}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "edgewatch");
        let documented = documented(&doc);
        assert_eq!(documented, served, "with ingest: {with_ingest}");
        let ingest = ("POST".to_string(), "/api/v1/ingest".to_string());
        assert_eq!(served.contains(&ingest), with_ingest);
        assert!(served.contains(&("GET".to_string(), "/api/v1/openapi.json".to_string())));
    }
}

#[tokio::test]
async fn every_documented_operation_has_responses_and_errors_use_the_error_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _rx) = state(&dir, true);
    let (doc, _) = document_and_served(state).await;
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success response"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // Parameters the handlers read are documented.
    let rollups = &doc["paths"]["/api/v1/sensors/{id}/rollups"]["get"]["parameters"];
    let names: BTreeSet<&str> = rollups
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["id", "field", "from", "to"]));
    let events = &doc["paths"]["/api/v1/events"]["get"]["parameters"];
    let names: BTreeSet<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["active", "sensor", "rule", "from", "to", "limit"])
    );
    // Times are RFC 3339 strings.
    let raised_at = &doc["components"]["schemas"]["EventView"]["properties"]["raised_at"];
    assert_eq!(raised_at["format"], "date-time");
}
