//! `POST /api/v1/ingest`: the `http` source. A body is decoded whole with the source's
//! payload mapping (JSON or, for `Content-Type: text/plain`, line protocol) and handed to the
//! pipeline as one batch, like a message of any other source; the route exists only when an
//! `http` source is configured.
//!
//! Answers (errors in the API's shape, `{"error": {"status", "message"}}`, plus `reason` for
//! a refused payload):
//! - 202 `{"accepted": n}`: the readings are in the pipeline's channel (not yet committed);
//! - 400: the payload was refused; `error.reason` is the decoder's reason (`invalid_json`,
//!   `missing_id`, ...); also an unknown query parameter;
//! - 401: no or a wrong bearer token (when a token is configured); compared in constant time;
//! - 413: the body is larger than `max_body_bytes` (or the mapping's `max_payload_bytes`);
//! - 415: a content type other than `application/json` (or none) and `text/plain`;
//! - 503 with `Retry-After`: the pipeline did not take the batch in time, or the daemon is
//!   shutting down.
//!
//! Invariants:
//! - **Nothing is answered 202 before it is in the pipeline's channel**; a refused body
//!   produces no reading at all (the decoder decodes whole or refuses whole).
//! - **The sender is closed at shutdown** ([`IngestSender::close`]), so the pipeline's input
//!   ends like that of any source; a request in flight then still finishes (bounded by the
//!   pipeline wait).
//! - Every refusal is counted in the source's `errors` with its reason as `last_error`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::Shared;
use super::api::{ApiError, ErrorBody, params};
use crate::config::Secret;
use crate::ingest::{BadReason, Decoder};
use crate::live::SourceHandle;
use crate::metrics::{Metrics, SourceLabel};
use crate::model::{Batch, now_ns};

/// How long a request waits for room in the pipeline's channel by default.
pub const PIPELINE_WAIT: Duration = Duration::from_secs(5);

/// The way into the pipeline; closed at shutdown.
#[derive(Clone, Debug, Default)]
pub struct IngestSender(Arc<Mutex<Option<mpsc::Sender<Batch>>>>);

impl IngestSender {
    pub fn new(tx: mpsc::Sender<Batch>) -> Self {
        IngestSender(Arc::new(Mutex::new(Some(tx))))
    }

    /// Drops the sender: requests from now on are answered 503.
    pub fn close(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn get(&self) -> Option<mpsc::Sender<Batch>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything the ingest route needs, built by the application from the `http` source.
#[derive(Debug)]
pub struct IngestHandle {
    /// The source's name, on every batch.
    pub source: Arc<str>,
    /// The source's mapping: bodies without a content type or with `application/json`.
    pub decoder: Decoder,
    /// The mapping with `format = "line_protocol"`: `text/plain` bodies. `None` when that
    /// mapping does not compile (then `text/plain` is answered 415).
    pub line_protocol: Option<Decoder>,
    /// Empty: no token required.
    pub token: Secret,
    pub max_body_bytes: usize,
    pub tx: IngestSender,
    pub health: SourceHandle,
    /// How long a request waits for room in the pipeline's channel ([`PIPELINE_WAIT`]).
    pub pipeline_wait: Duration,
    /// The source's static tags (`sources[].tags`).
    pub tags: crate::model::Tags,
}

/// Compares a given secret with the expected one in time that depends only on the
/// expected one's length.
pub(super) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= usize::from(b ^ given.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The bearer token of a request, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// A refusal: counted in the source's health and metrics, then answered.
fn refuse(
    ingest: &IngestHandle,
    metrics: &Metrics,
    status: StatusCode,
    reason: Option<BadReason>,
    message: String,
) -> Response {
    metrics
        .source_errors
        .get_or_create(&SourceLabel {
            source: ingest.source.to_string(),
        })
        .inc();
    let last = match reason {
        Some(r) => format!("{}: {message}", r.as_str()),
        None => message.clone(),
    };
    if let Some(r) = reason {
        metrics
            .source_bad_payloads
            .get_or_create(&crate::metrics::SourceReasonLabel {
                source: ingest.source.to_string(),
                reason: r.as_str().to_string(),
            })
            .inc();
    }
    ingest.health.update(|h| {
        h.errors += 1;
        h.last_error = Some(last);
        if let Some(r) = reason {
            let stat = h.bad_payloads.entry(r.as_str().to_string()).or_default();
            stat.count += 1;
            stat.last_example = message.chars().take(240).collect();
            stat.last_time = crate::model::now_ns();
        }
    });
    let mut error = ApiError::new(status, message);
    if let Some(r) = reason {
        error = error.with_reason(r.as_str());
    }
    match status {
        StatusCode::UNAUTHORIZED => ([(header::WWW_AUTHENTICATE, "Bearer")], error).into_response(),
        StatusCode::SERVICE_UNAVAILABLE => ([(header::RETRY_AFTER, "5")], error).into_response(),
        _ => error.into_response(),
    }
}

/// Reads the body, refusing it as soon as it passes `limit` bytes. `Err(None)`: too large.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, Option<String>> {
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| Some(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// `POST /api/v1/ingest?topic=`.
#[utoipa::path(
    post,
    path = "/api/v1/ingest",
    tag = "ingest",
    summary = "The `http` source: hand readings to the pipeline",
    description = "Served only when an `http` source is configured. The body is decoded whole with the source's payload mapping (JSON, or line protocol for `text/plain`) or refused whole.",
    params(
        ("topic" = Option<String>, Query, description = "Matched against the mapping's topic template, as an MQTT topic would be"),
    ),
    request_body(
        description = "Readings in the source's payload mapping",
        content(
            (Object = "application/json"),
            (String = "text/plain"),
        ),
    ),
    responses(
        (status = 202, description = "The readings are in the pipeline's channel (not yet committed)", body = Accepted),
        (status = 400, description = "The payload was refused (`error.reason` says why) or an unknown query parameter", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token (when a token is configured)", body = ErrorBody),
        (status = 408, description = "The request took too long", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "A content type other than `application/json` and `text/plain`", body = ErrorBody),
        (status = 503, description = "The pipeline did not take the batch in time, or the daemon is shutting down (with `Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(super) async fn ingest(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(ingest) = &state.ingest else {
        return ApiError::new(StatusCode::NOT_FOUND, "no http source is configured")
            .into_response();
    };
    let metrics = &state.metrics;
    let refuse = |status, reason, message: String| refuse(ingest, metrics, status, reason, message);

    if !ingest.token.0.is_empty()
        && !bearer(&headers).is_some_and(|t| same_secret(t, ingest.token.0.as_bytes()))
    {
        let message = if headers.contains_key(header::AUTHORIZATION) {
            "wrong token"
        } else {
            "a bearer token is required (Authorization: Bearer <token>)"
        };
        return refuse(StatusCode::UNAUTHORIZED, None, message.into());
    }
    let params = match params(query, &["topic"]) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let topic = params.get("topic").map_or("", String::as_str);

    let content_type = headers.get(header::CONTENT_TYPE).map(|v| {
        let v = v.to_str().unwrap_or("?");
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let decoder = match content_type.as_deref() {
        None | Some("application/json") => &ingest.decoder,
        Some("text/plain") => match &ingest.line_protocol {
            Some(d) => d,
            None => {
                return refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    None,
                    "text/plain (line protocol) cannot be read with this source's mapping".into(),
                );
            }
        },
        Some(other) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                format!(
                    "content type `{other}` is not accepted: send application/json (the source's mapping) or text/plain (line protocol)"
                ),
            );
        }
    };

    // Taken before the body is read: a daemon that is stopping does not decode any more.
    let Some(tx) = ingest.tx.get() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "shutting down".into(),
        );
    };
    let limit = ingest.max_body_bytes;
    let too_large =
        || format!("the body is larger than the limit of {limit} bytes (max_body_bytes)");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(BadReason::TooLarge),
            too_large(),
        );
    }
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(None) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(BadReason::TooLarge),
                too_large(),
            );
        }
        Err(Some(message)) => return refuse(StatusCode::BAD_REQUEST, None, message),
    };

    let mut readings = Vec::new();
    if let Err(bad) = decoder.decode(topic, &bytes, now_ns(), &mut readings) {
        let status = if bad.reason == BadReason::TooLarge {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        return refuse(status, Some(bad.reason), bad.detail);
    }
    let n = readings.len();
    if n > 0 {
        let mut batch = Batch::new(ingest.source.clone(), readings);
        // Each request announces its sensors' tags; the pipeline stores only changes.
        crate::ingest::tags::TagAnnouncer::new(&ingest.tags, decoder.captures_tags()).announce(
            &batch.readings,
            || decoder.topic_tags(topic),
            &mut batch.tags,
        );
        match tokio::time::timeout(ingest.pipeline_wait, tx.send(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "shutting down".into(),
                );
            }
            Err(_) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "pipeline busy".into(),
                );
            }
        }
        metrics
            .source_readings
            .get_or_create(&SourceLabel {
                source: ingest.source.to_string(),
            })
            .inc_by(n as u64);
    }
    let now = now_ns();
    ingest.health.update(|h| {
        h.readings += n as u64;
        h.last_success = Some(now);
    });
    (StatusCode::ACCEPTED, Json(Accepted { accepted: n })).into_response()
}

/// The answer to an accepted body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Accepted {
    /// Readings handed to the pipeline (not yet committed).
    accepted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cretx", b"s3cret"));
        assert!(!same_secret(b"S3cret", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
