//! `POST /api/v1/ingest` against the web alone: the pipeline's channel is the test's, so a
//! full channel and a closed one can be arranged. Accepting a body needs the payload decoder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{MappingConfig, Secret, StoreConfig, WebConfig};
use crate::ingest::Decoder;
use crate::live::{LiveSnapshot, SourceRegistry};
use crate::metrics::Metrics;
use crate::model::Batch;
use crate::store::Store;
use crate::web::ingest::{IngestHandle, IngestSender};
use crate::web::{WebState, serve};

/// A server whose ingest feeds a channel of `capacity` that the test drains (or not).
struct Ingest {
    url: String,
    rx: mpsc::Receiver<Batch>,
    tx: IngestSender,
    sources: SourceRegistry,
    _shutdown: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

async fn start(capacity: usize) -> Ingest {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        path: dir.path().join("s.redb"),
        ..StoreConfig::default()
    })
    .unwrap();
    let sources = SourceRegistry::default();
    let (tx, rx) = mpsc::channel(capacity);
    let tx = IngestSender::new(tx);
    let mapping = MappingConfig::default();
    let (_live_tx, live) = watch::channel(Arc::new(LiveSnapshot::default()));
    let state = WebState {
        config_status: Default::default(),
        gateway_id: "gw-test".into(),
        version: "9.9.9",
        started_at: 0,
        live,
        sources: sources.clone(),
        sinks: Default::default(),
        store,
        metrics: Arc::new(Metrics::new()),
        window_secs: 60,
        config: WebConfig::default(),
        ingest: Some(IngestHandle {
            source: "plant-http".into(),
            decoder: Decoder::new(&mapping).unwrap(),
            line_protocol: None,
            token: Secret::default(),
            max_body_bytes: 1024,
            tx: tx.clone(),
            health: sources.register("plant-http", "http"),
            pipeline_wait: Duration::from_millis(200),
            tags: Default::default(),
        }),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/ingest", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    Ingest {
        url,
        rx,
        tx,
        sources,
        _shutdown: shutdown.drop_guard(),
        _dir: dir,
    }
}

const BODY: &str = r#"{"sensor_id": "press-7", "pressure": 4.25}"#;

async fn post(url: &str, content_type: &str) -> reqwest::Response {
    super::client()
        .post(url)
        .header("content-type", content_type)
        .body(BODY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_pipeline_is_503_pipeline_busy_with_retry_after_and_nothing_is_lost() {
    let mut ingest = start(1).await;
    let response = post(&ingest.url, "application/json").await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    // The channel holds one batch; nobody takes it.
    let started = Instant::now();
    let response = post(&ingest.url, "application/json").await;
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "pipeline busy");
    let batch = ingest.rx.recv().await.unwrap();
    assert_eq!(&*batch.source, "plant-http");
    assert_eq!(batch.readings.len(), 1);
    assert!(
        ingest.rx.try_recv().is_err(),
        "the refused body sent nothing"
    );
}

#[tokio::test]
async fn after_shutdown_closed_the_sender_a_body_is_503_and_the_channel_ends() {
    let mut ingest = start(4).await;
    ingest.tx.close();
    let response = post(&ingest.url, "application/json").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "shutting down");
    assert!(
        ingest.rx.recv().await.is_none(),
        "the pipeline's input ends once the web's sender is closed"
    );
    let health = ingest.sources.snapshot();
    assert_eq!(health[0].errors, 1);
}

#[tokio::test]
async fn text_plain_is_415_when_the_mapping_cannot_read_line_protocol() {
    let ingest = start(4).await;
    let response = post(&ingest.url, "text/plain").await;
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line protocol")
    );
}
