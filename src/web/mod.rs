//! The web: the technicians' pages (`page/`: overview, sensors with SVG charts, devices,
//! events; live updates through our own `/assets/app.js`), the JSON API under `/api/v1`,
//! `/healthz` and Prometheus `/metrics` (paths and JSON field names are an interface, see
//! DESIGN.md).
//!
//! Invariants:
//! - **The web never writes data.** It reads the live snapshot (a `watch` channel the pipeline
//!   publishes), the source registry, and the store through its read methods only. Every route
//!   is GET (HEAD follows); other methods get 405. Two exceptions, both POST:
//!   `POST /api/v1/ingest` (`ingest.rs`), present only when an `http` source is configured: it
//!   is that source, and like every source it only hands batches to the pipeline's channel;
//!   and the operator's acknowledgement of an event (`ack.rs`, only with `operator_token`),
//!   which writes an annotation in its own table (never readings, rollups, events or the
//!   outbox) in one small transaction.
//! - **Store calls never block the runtime**: each runs on `spawn_blocking`.
//! - **Bounded**: at most `max_concurrent_requests` requests are served at once (more wait
//!   for a slot), and a request that is not answered within `request_timeout_secs`, waiting
//!   included, is answered 408. At most `max_connections` connections are open, each must
//!   deliver a request's headers within `header_read_timeout_secs` (`serve.rs`), and a body
//!   over `max_body_bytes` is 413 (ingest: its source's own limit).
//! - **Errors have one shape**: under `/api/` every error is
//!   `{"error": {"status": 400, "message": "..."}}` (`api::ErrorBody`); elsewhere a small
//!   HTML page.
//! - **The API is documented by the code that serves it**: every `/api/v1` route is added
//!   through [`api_routes`] (utoipa-axum's `OpenApiRouter`, one `#[utoipa::path]` per
//!   handler), and `GET /api/v1/openapi.json` serves the OpenAPI 3.1 document collected from
//!   exactly the routes this router serves (`ingest` only when it exists). A test compares the
//!   document with the paths and methods the built router answers.

mod ack;
mod api;
mod chart;
mod html;
pub mod ingest;
mod page;
mod serve;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::WebConfig;
use crate::forward::status::SinkRegistry;
use crate::live::{LiveSnapshot, SourceRegistry};
use crate::metrics::Metrics;
use crate::model::TimeNs;
use crate::store::{Store, StoreError};

/// Store sizes shown by the pages, the API and `/metrics` are at most this old: measuring
/// them walks every table, which readers must not repeat per request.
pub(crate) const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// The `http` source's route.
const INGEST_PATH: &str = "/api/v1/ingest";

/// Everything the web reads. Built once by the application and shared by all requests.
pub struct WebState {
    /// `gateway.id`, shown on every page so a technician knows which box they are looking at.
    pub gateway_id: String,
    /// The daemon's version (`env!("CARGO_PKG_VERSION")`), for support calls.
    pub version: &'static str,
    /// Wall clock at start-up, for the uptime.
    pub started_at: TimeNs,
    /// The pipeline's latest published view; read with a short borrow, never held.
    pub live: watch::Receiver<Arc<LiveSnapshot>>,
    /// Health of each configured source.
    pub sources: SourceRegistry,
    /// Link state and backlog of each configured sink.
    pub sinks: SinkRegistry,
    /// Read-only use: rollups, events, series and sizes.
    pub store: Store,
    /// Encoded by `/metrics`; the store gauges are refreshed there, on demand.
    pub metrics: Arc<Metrics>,
    /// Rollup window length, shown next to the pipeline counters and the rollup tables.
    pub window_secs: u64,
    /// Timeout and concurrency limit.
    pub config: WebConfig,
    /// The `http` source, when one is configured: `POST /api/v1/ingest` exists only then.
    pub ingest: Option<ingest::IngestHandle>,
    /// When the config in effect was loaded, and whether the last reload was refused.
    pub config_status: crate::live::ConfigStatus,
}

impl WebState {
    /// The latest live snapshot. Clones the `Arc` so the channel's lock is held only for the
    /// copy, never while a page renders.
    fn snapshot(&self) -> Arc<LiveSnapshot> {
        self.live.borrow().clone()
    }

    /// Runs a blocking store read off the async runtime. A failure is counted in
    /// `store_errors` and logged here, once, so every caller only has to present it.
    async fn read_store<T, F>(&self, what: &'static str, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let result = match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => ReadError::Store(e),
            Err(e) => ReadError::Task(e),
        };
        self.metrics.store_errors.inc();
        tracing::warn!(read = what, error = %result, "web store read failed");
        Err(result)
    }
}

/// Why a store read for a request failed.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task panicked or the runtime is shutting down.
    #[error("store read task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Shared handle the handlers receive.
type Shared = Arc<WebState>;

/// The document's fixed parts; the paths come from [`api_routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "edgewatch",
        description = "The edge gateway's JSON API. Times are RFC 3339 strings; absent times are `null`. Query parameters are checked strictly: an unknown, repeated or malformed one is a 400 that names it. Every error body has the shape of `ErrorBody`."
    ),
    components(schemas(api::ErrorBody)),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

/// The `bearer` security scheme of `POST /api/v1/ingest`.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// Every `/api/v1` route, each with its documentation: the routes and the OpenAPI document
/// are collected from the same `#[utoipa::path]` attributes, so neither can lack the other.
fn api_routes(with_ingest: bool) -> OpenApiRouter<Shared> {
    let mut routes = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::status))
        .routes(routes!(api::sensors))
        .routes(routes!(api::rollups))
        .routes(routes!(api::events))
        .routes(routes!(ack::api_ack))
        .routes(routes!(openapi_json));
    if with_ingest {
        routes = routes.routes(routes!(ingest::ingest));
    }
    routes
}

/// The OpenAPI document as served, rendered once when the router is built.
#[derive(Clone)]
struct OpenApiJson(axum::body::Bytes);

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    summary = "This document: OpenAPI 3.1 of every /api/v1 route this daemon serves",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        (status = 408, description = "The request took too long", body = api::ErrorBody),
    )
)]
async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}

/// The complete application: routes, error shaping and the hardening layers.
pub fn router(state: WebState) -> Router {
    let config = state.config.clone();
    let (api, doc) = api_routes(state.ingest.is_some()).split_for_parts();
    let doc = doc
        .to_json()
        .expect("the OpenAPI document serializes to JSON");
    let routes = api
        .layer(Extension(OpenApiJson(doc.into())))
        .route("/", get(page::status))
        .route("/sensors/{id}", get(page::sensor))
        .route("/devices", get(page::devices))
        .route("/events", get(page::events))
        .route("/assets/app.js", get(page::app_js))
        .route("/events/{id}/ack", get(ack::form_page).post(ack::form_post))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(state));
    harden(routes, &config)
}

/// Wraps every route (and the fallback) in the limits of `[web]` and the error shaping.
/// Inner to outer: a request first waits for one of the shared slots, under the timeout, and
/// every bare error status (405, 408, 404, 413) gets its body last. The slots are global, not
/// per route, so a burst on one path cannot starve the others beyond the configured total.
/// The body limit is outside the timeout so that an oversized declared body is refused
/// without taking a slot.
fn harden(routes: Router, config: &WebConfig) -> Router {
    let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
    routes
        .layer(GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests.max(1),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(
            config.max_body_bytes.max(1),
            limit_body,
        ))
        .layer(middleware::from_fn(shape_errors))
}

/// Refuses a request body over `limit` bytes with 413: at once when `Content-Length` says
/// so, else when a handler reads past the limit (the body is wrapped in a counting limit).
/// `POST /api/v1/ingest` is left to its own, usually larger, `max_body_bytes`, which it
/// enforces the same way.
async fn limit_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    if request.uri().path() == INGEST_PATH {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, body)).await
}

/// Serves the web on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish (each is bounded by the request timeout) and returns. Connections are limited and
/// timed as `serve.rs` describes.
pub async fn serve(
    listener: TcpListener,
    state: WebState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "web listening");
    }
    let config = state.config.clone();
    let metrics = state.metrics.clone();
    serve::serve_router(listener, router(state), &config, metrics, shutdown).await
}

/// `GET /healthz`: the process is up and answering.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: refreshes the store gauges, which nothing else updates between scrapes,
/// then encodes every metric. A failed store read leaves the gauges at their last values
/// (and is counted in `store_errors`) rather than failing the scrape.
async fn metrics(State(state): State<Shared>) -> Response {
    if let Ok(stats) = state
        .read_store("stats", |s| s.recent_stats(STATS_MAX_AGE))
        .await
    {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        state.metrics.store_file_bytes.set(gauge(stats.file_bytes));
        state
            .metrics
            .store_stored_bytes
            .set(gauge(stats.stored_bytes));
        state
            .metrics
            .outbox_entries
            .set(gauge(stats.outbox_entries));
    }
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Unknown paths: a bare 404 that [`shape_errors`] dresses for the API or for people.
async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Gives every error answer that has no body of its own (the router's 404 and 405, the
/// timeout's 408, the body limit's 413) or only axum's plain-text rejection the same shape as
/// the handlers' errors: JSON under `/api/`, HTML elsewhere.
async fn shape_errors(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    // The router adds `Allow` outside this layer, so the POST-only routes are known by path.
    let post_only = request.uri().path() == INGEST_PATH || ack::is_api_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = match status {
        StatusCode::NOT_FOUND => "no such path".to_string(),
        StatusCode::METHOD_NOT_ALLOWED if post_only => "only POST is served here".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "only GET is served".to_string(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_string(),
        other => {
            // An extractor's rejection says what was wrong in a line of plain text.
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            if text.is_empty() {
                other.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            }
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let shaped = if is_api {
        api::ApiError::new(status, message).into_response()
    } else {
        page::error_page(status, &message).into_response()
    };
    let (shaped_parts, body) = shaped.into_parts();
    // Keep the original headers (for example `Allow` on a 405) and add the body's type.
    parts.headers.extend(
        shaped_parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| (header::CONTENT_TYPE, v.clone())),
    );
    Response::from_parts(parts, body)
}
