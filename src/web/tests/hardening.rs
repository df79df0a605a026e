//! Tests of the hardening layers (timeout, concurrency limit, error shaping) on stand-in
//! routes, so that slow and concurrent handlers can be observed without a store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::config::WebConfig;
use crate::web::harden;

/// Serves `routes` wrapped by [`harden`] with the given limits; returns the base URL.
async fn serve_hardened(routes: Router, config: WebConfig) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, harden(routes, &config)).await });
    base
}

#[tokio::test]
async fn a_request_over_the_timeout_is_answered_408_with_a_json_error_under_api() {
    let slow = get(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    });
    let routes = Router::new()
        .route("/api/slow", slow.clone())
        .route("/slow", slow);
    let base = serve_hardened(
        routes,
        WebConfig {
            request_timeout_secs: 1,
            ..WebConfig::default()
        },
    )
    .await;
    let client = super::client();
    let started = Instant::now();
    let response = client.get(format!("{base}/api/slow")).send().await.unwrap();
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 408);
    let response = client.get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(response.status(), 408);
    assert!(response.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_wait_for_a_slot_across_all_paths() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        move || async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            "done"
        }
    };
    let routes = Router::new()
        .route("/a", get(handler.clone()))
        .route("/b", get(handler));
    let base = serve_hardened(
        routes,
        WebConfig {
            max_concurrent_requests: 2,
            ..WebConfig::default()
        },
    )
    .await;
    let client = super::client();
    let requests = (0..6).map(|i| {
        let url = format!("{base}/{}", if i % 2 == 0 { "a" } else { "b" });
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    });
    let statuses = futures_join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(most.load(Ordering::SeqCst), 2, "at most two served at once");
}

/// Runs the futures concurrently on the test's runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
