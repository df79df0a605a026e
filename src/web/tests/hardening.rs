//! Tests of the hardening layers (timeout, concurrency limit, body limit, error shaping) and
//! of the connection limits (header-read timeout, connection limit) on stand-in routes, so
//! that slow and concurrent handlers and clients can be observed without a store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::WebConfig;
use crate::metrics::Metrics;
use crate::web::harden;
use crate::web::serve::serve_router;

/// Serves `routes` wrapped by [`harden`] with the given limits, through the daemon's own
/// accept loop; returns the base URL.
async fn serve_hardened(routes: Router, config: WebConfig) -> String {
    serve_counted(routes, config, Arc::new(Metrics::new())).await
}

/// [`serve_hardened`] with the metrics the accept loop counts into.
async fn serve_counted(routes: Router, config: WebConfig, metrics: Arc<Metrics>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = harden(routes, &config);
        serve_router(listener, app, &config, metrics, CancellationToken::new()).await
    });
    base
}

/// Reads from `stream` until the peer closes it (`Ok` with what was read) or `limit` passes
/// (`Err` with what was read so far).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return Err(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
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

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped_after_the_header_timeout() {
    let base = serve_hardened(
        hello(),
        WebConfig {
            header_read_timeout_secs: 1,
            ..WebConfig::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    // The request line and one header, but never the blank line that ends the headers.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let read = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "still open after 10 s: {read:?}");
    assert!(
        !read.unwrap().contains("hello"),
        "no answer to half a request"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let base = serve_hardened(
        hello(),
        WebConfig {
            header_read_timeout_secs: 1,
            ..WebConfig::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let read = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(read.as_ref().is_ok_and(|r| r.contains("hello")), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connections_beyond_the_limit_are_served_only_once_one_closes() {
    let metrics = Arc::new(Metrics::new());
    let base = serve_counted(
        hello(),
        WebConfig {
            max_connections: 2,
            header_read_timeout_secs: 30,
            ..WebConfig::default()
        },
        metrics.clone(),
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    // Two idle connections take both slots.
    let first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    // The third connects (the kernel's accept queue takes it) but is not served...
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waiting = read_until_closed(&mut third, Duration::from_millis(700)).await;
    assert_eq!(
        waiting,
        Err(String::new()),
        "not served while both slots are taken"
    );
    assert_eq!(metrics.web_connections_open.get(), 2);
    assert!(metrics.web_connection_limit_waits.get() >= 1);
    // ...until one of the first two closes.
    drop(first);
    let served = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(
        served.as_ref().is_ok_and(|r| r.contains("hello")),
        "{served:?}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_in_the_one_error_shape_declared_or_streamed() {
    let echo = axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() });
    let routes = Router::new()
        .route("/api/echo", echo.clone())
        .route("/echo", echo);
    let base = serve_hardened(
        routes,
        WebConfig {
            max_body_bytes: 1024,
            ..WebConfig::default()
        },
    )
    .await;
    let client = super::client();
    let small = client
        .post(format!("{base}/api/echo"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "1024");

    // Declared too large: refused before the body is read.
    let response = client
        .post(format!("{base}/api/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 413);
    assert_eq!(body["error"]["message"], "the request body is too large");

    // Chunked, no length given: refused once the handler reads past the limit.
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut request = b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    for _ in 0..8 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'x'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"status\":413") && answer.contains("application/json"),
        "{answer}"
    );

    let response = client
        .post(format!("{base}/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.text().await.unwrap().contains("<html"));
}
