//! A webhook receiver for the alert tests: axum on 127.0.0.1:0 in the test's runtime, one
//! POST route that records the headers and JSON body of every request it accepts (204), and
//! can be told to answer every request with a status (503 with `Retry-After: 1`), to refuse
//! the next one with 400, or to accept only so many and answer 503 after that.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use edgewatch::model::now_ns;
use serde_json::Value;

/// What one accepted request carried.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// Gateway clock when it arrived.
    pub at: i64,
}

#[derive(Default)]
pub struct ReceiverState {
    accepted: Mutex<Vec<Received>>,
    attempts: AtomicU64,
    /// Answer every request with this status instead of accepting it (0: accept).
    failing: AtomicU16,
    /// Answer the next request 400, once.
    pub refuse_next: AtomicBool,
    /// Accept at most this many, then answer 503.
    pub accept_limit: AtomicU64,
}

/// The test's webhook receiver.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hooks/alerts`, for the sink's `url`.
    pub url: String,
    pub state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState {
            accept_limit: AtomicU64::new(u64::MAX),
            ..ReceiverState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/alerts", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hooks/alerts", axum::routing::post(receive))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.state.accepted.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.accepted().into_iter().map(|r| r.body).collect()
    }

    pub fn attempts(&self) -> u64 {
        self.state.attempts.load(Ordering::SeqCst)
    }

    pub fn fail_with(&self, status: u16) {
        self.state.failing.store(status, Ordering::SeqCst);
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = state.failing.load(Ordering::SeqCst);
    if failing != 0 {
        let status = StatusCode::from_u16(failing).unwrap();
        return (status, [("retry-after", "1")], "not now").into_response();
    }
    if state.refuse_next.swap(false, Ordering::SeqCst) {
        return (StatusCode::BAD_REQUEST, "unknown sensor").into_response();
    }
    let mut accepted = state.accepted.lock().unwrap();
    if accepted.len() as u64 >= state.accept_limit.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "full").into_response();
    }
    accepted.push(Received {
        headers,
        body: serde_json::from_slice(&body).expect("the alert is JSON"),
        at: now_ns(),
    });
    StatusCode::NO_CONTENT.into_response()
}
