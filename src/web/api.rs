//! The JSON API under `/api/v1`. Field names are an interface (DESIGN.md, "HTTP surface"):
//! scripts rely on them, so they are spelled out in the view structs below rather than derived
//! from internal types that may change. Times are RFC 3339 strings; absent times are `null`.
//!
//! Query parameters are checked strictly: an unknown, repeated or malformed parameter is a 400
//! that names it, so a typo (`form=`) is reported instead of silently ignored. An empty value
//! (`field=`) counts as absent, as the documented URL template leaves them empty.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ack::AckView;
use super::{ReadError, STATS_MAX_AGE, Shared};
use crate::forward::status::SinkStatus;
use crate::live::{FieldState, PipelineCounters, SensorState, SourceHealth};
use crate::model::{AnomalyEvent, NS_PER_SEC, Rollup, TimeNs, format_time, now_ns, parse_time};
use crate::store::{Acknowledgement, EventFilter, StoreStats};

/// Default span of `/rollups` when `from` is not given.
const DEFAULT_ROLLUP_SPAN_NS: i64 = 24 * 3_600 * NS_PER_SEC;
/// `limit` of `/events` when not given.
const DEFAULT_EVENT_LIMIT: usize = 1_000;
/// Largest `limit` of `/events`: an answer stays bounded however long the history.
const MAX_EVENT_LIMIT: usize = 10_000;

/// An API error: the status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// A machine-readable reason (`error.reason`), for refused ingest payloads.
    reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(format!("query: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(format!("path: {}", e.body_text()))
    }
}

/// The one error body of every `/api/` route: `{"error": {"status", "message"}}`, plus
/// `reason` for a refused ingest payload. Serialized from this type, so the OpenAPI schema
/// and the answers cannot differ.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status code, repeated.
    #[schema(example = 400)]
    pub status: u16,
    /// Names what was wrong (for a query parameter: the parameter first).
    #[schema(example = "from: not an RFC 3339 time")]
    pub message: String,
    /// Only for a refused ingest payload: the decoder's reason (`invalid_json`,
    /// `missing_id`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                message: self.message,
                reason: self.reason.map(str::to_string),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The query string as name → value, refusing names the endpoint does not know and names
/// given twice. Empty values are dropped.
pub(super) fn params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = query?;
    let mut seen = Vec::with_capacity(pairs.len());
    let mut out = BTreeMap::new();
    for (name, value) in pairs {
        if !known.contains(&name.as_str()) {
            let expected = if known.is_empty() {
                "this endpoint takes none".to_string()
            } else {
                format!("expected one of: {}", known.join(", "))
            };
            return Err(ApiError::bad_request(format!(
                "{name}: unknown query parameter ({expected})"
            )));
        }
        if seen.contains(&name) {
            return Err(ApiError::bad_request(format!(
                "{name}: given more than once"
            )));
        }
        seen.push(name.clone());
        if !value.is_empty() {
            out.insert(name, value);
        }
    }
    Ok(out)
}

/// An RFC 3339 time parameter. A `+` in an offset (`+01:00`) that a client forgot to
/// percent-encode arrives as a space; since RFC 3339 has no space, it is read back as `+`.
fn time_param(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|s| {
            parse_time(&s.replace(' ', "+"))
                .ok_or_else(|| ApiError::bad_request(format!("{name}: not an RFC 3339 time")))
        })
        .transpose()
}

/// `Some` time as RFC 3339, for optional fields that serialize as `null`.
fn opt_time(t: Option<i64>) -> Option<String> {
    t.map(format_time)
}

/// A sink's status with times as RFC 3339 and ages in seconds.
#[derive(Serialize, ToSchema)]
struct SinkView<'a> {
    #[serde(flatten)]
    #[schema(value_type = SinkStatus)]
    status: &'a SinkStatus,
    #[schema(format = DateTime)]
    last_success: Option<String>,
    #[schema(format = DateTime)]
    last_error_at: Option<String>,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    oldest_unsent: Option<String>,
    oldest_unsent_age_secs: Option<f64>,
}

impl<'a> SinkView<'a> {
    fn new(s: &'a SinkStatus, now: TimeNs) -> Self {
        SinkView {
            status: s,
            last_success: opt_time(s.last_success),
            last_error_at: opt_time(s.last_error_at),
            next_attempt_at: opt_time(s.next_attempt_at),
            oldest_unsent: opt_time(s.oldest_unsent),
            oldest_unsent_age_secs: s
                .oldest_unsent
                .map(|t| (now - t) as f64 / NS_PER_SEC as f64),
        }
    }
}

/// One configured source's health.
#[derive(Serialize, ToSchema)]
struct SourceView<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    state: &'a str,
    #[schema(format = DateTime)]
    last_success: Option<String>,
    readings: u64,
    errors: u64,
    last_error: Option<&'a str>,
    /// Messages received (message-based sources; 0 for the others).
    messages: u64,
    messages_per_sec: f64,
    /// Refused messages by reason, each with the latest example.
    bad_payloads: BTreeMap<&'a str, BadPayloadView<'a>>,
    /// Kind-specific facts as an object, in display order (MQTT: broker, client_id,
    /// subscriptions, session, unacked).
    #[schema(value_type = BTreeMap<String, String>)]
    details: DetailsView<'a>,
}

/// Refused messages of one reason.
#[derive(Serialize, ToSchema)]
struct BadPayloadView<'a> {
    count: u64,
    last_example: &'a str,
    #[schema(format = DateTime)]
    last_time: String,
}

/// `[(key, value)]` serialized as a JSON object, keeping the order.
struct DetailsView<'a>(&'a [(String, String)]);

impl Serialize for DetailsView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'a> From<&'a SourceHealth> for SourceView<'a> {
    fn from(s: &'a SourceHealth) -> Self {
        SourceView {
            name: &s.name,
            kind: &s.kind,
            state: &s.state,
            last_success: opt_time(s.last_success),
            readings: s.readings,
            errors: s.errors,
            last_error: s.last_error.as_deref(),
            messages: s.messages,
            messages_per_sec: s.messages_per_sec,
            bad_payloads: s
                .bad_payloads
                .iter()
                .map(|(reason, stat)| {
                    (
                        reason.as_str(),
                        BadPayloadView {
                            count: stat.count,
                            last_example: &stat.last_example,
                            last_time: format_time(stat.last_time),
                        },
                    )
                })
                .collect(),
            details: DetailsView(&s.details),
        }
    }
}

/// The pipeline's counters since start and its watermark (event time).
#[derive(Serialize, ToSchema)]
struct PipelineView<'a> {
    #[schema(value_type = PipelineCounters)]
    counters: &'a PipelineCounters,
    #[schema(format = DateTime)]
    watermark: Option<String>,
}

/// The gateway at a glance.
#[derive(Serialize, ToSchema)]
struct StatusView<'a> {
    gateway_id: &'a str,
    version: &'a str,
    uptime_secs: i64,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    time: String,
    sources: Vec<SourceView<'a>>,
    /// Forwarding sinks with link state and backlog.
    sinks: Vec<SinkView<'a>>,
    /// `null` when the store could not be read; `store_error` then says why.
    store: Option<StoreStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    pipeline: PipelineView<'a>,
    active_anomalies: usize,
    config: ConfigView,
}

/// The config in effect: when it was loaded, and whether the last reload took.
#[derive(Serialize, ToSchema)]
struct ConfigView {
    /// The start, or the last applied reload (SIGHUP, `systemctl reload edgewatch`).
    #[schema(format = DateTime)]
    loaded_at: String,
    /// Reloads applied since start.
    reloads: u64,
    /// When the latest reload was refused (the config in effect kept running); `null` when
    /// the latest reload was applied, or none was asked for.
    #[schema(format = DateTime)]
    refused_at: Option<String>,
    /// Why it was refused.
    refused_reason: Option<String>,
    /// What changed in the file but is read only at start: sections such as `web` or
    /// `store`, and `source NAME` for `http` sources.
    waiting_for_restart: Vec<String>,
}

impl From<crate::live::ConfigState> for ConfigView {
    fn from(c: crate::live::ConfigState) -> ConfigView {
        let (refused_at, refused_reason) = match c.refused {
            Some((at, reason)) => (Some(format_time(at)), Some(reason)),
            None => (None, None),
        };
        ConfigView {
            loaded_at: format_time(c.loaded_at),
            reloads: c.reloads,
            refused_at,
            refused_reason,
            waiting_for_restart: c.waiting_for_restart,
        }
    }
}

/// `GET /api/v1/status`. A store failure does not fail the status: the rest is still worth
/// reading when the disk is in trouble.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    summary = "The gateway, its sources, sinks, store and pipeline",
    description = "A store that cannot be read does not fail the status: `store` is then `null` and `store_error` says why.",
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 408, description = "The request took too long", body = ErrorBody),
    )
)]
pub async fn status(State(state): State<Shared>) -> Response {
    let stats = state
        .read_store("stats", |s| s.recent_stats(STATS_MAX_AGE))
        .await;
    let snapshot = state.snapshot();
    let sources = state.sources.snapshot();
    let sinks = state.sinks.snapshot();
    let now = now_ns();
    let (store, store_error) = match stats {
        Ok(stats) => (Some(stats), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Json(StatusView {
        gateway_id: &state.gateway_id,
        version: state.version,
        uptime_secs: (now - state.started_at).max(0) / NS_PER_SEC,
        started_at: format_time(state.started_at),
        time: format_time(now),
        sources: sources.iter().map(SourceView::from).collect(),
        sinks: sinks.iter().map(|s| SinkView::new(s, now)).collect(),
        store,
        store_error,
        pipeline: PipelineView {
            counters: &snapshot.counters,
            watermark: opt_time(snapshot.watermark),
        },
        active_anomalies: snapshot.active_events.len(),
        config: state.config_status.get().into(),
    })
    .into_response()
}

/// The latest value of one field.
#[derive(Serialize, ToSchema)]
struct FieldView {
    value: f64,
    #[schema(format = DateTime)]
    time: String,
    rolling_avg: Option<f64>,
    quality: Vec<&'static str>,
}

impl From<&FieldState> for FieldView {
    fn from(f: &FieldState) -> Self {
        FieldView {
            value: f.value,
            time: format_time(f.time),
            rolling_avg: f.rolling_avg,
            quality: f.quality.names(),
        }
    }
}

/// The live view of one sensor.
#[derive(Serialize, ToSchema)]
struct SensorView<'a> {
    id: &'a str,
    source: &'a str,
    /// Left out when the sensor has none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    tags: &'a BTreeMap<String, String>,
    fields: BTreeMap<&'a str, FieldView>,
}

impl<'a> SensorView<'a> {
    fn new(id: &'a str, sensor: &'a SensorState) -> Self {
        SensorView {
            id,
            source: &sensor.source,
            tags: &sensor.tags,
            fields: sensor
                .fields
                .iter()
                .map(|(name, f)| (name.as_str(), FieldView::from(f)))
                .collect(),
        }
    }
}

/// `GET /api/v1/sensors`: the live view of every sensor, ordered by id.
#[utoipa::path(
    get,
    path = "/api/v1/sensors",
    tag = "sensors",
    summary = "The live view of every sensor, ordered by id",
    description = "Takes no query parameter.",
    responses(
        (status = 200, description = "Every sensor", body = Vec<SensorView>),
        (status = 400, description = "A query parameter was given", body = ErrorBody),
        (status = 408, description = "The request took too long", body = ErrorBody),
    )
)]
pub async fn sensors(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    params(query, &[])?;
    let snapshot = state.snapshot();
    let view: Vec<SensorView<'_>> = snapshot
        .sensors
        .iter()
        .map(|(id, s)| SensorView::new(id, s))
        .collect();
    Ok(Json(view).into_response())
}

/// One stored rollup: a window's aggregates of one field.
#[derive(Serialize, ToSchema)]
struct RollupView<'a> {
    field: &'a str,
    #[schema(format = DateTime)]
    start: String,
    #[schema(format = DateTime)]
    end: String,
    count: u64,
    mean: f64,
    min: f64,
    max: f64,
    stddev: f64,
    first: f64,
    last: f64,
    quality: Vec<&'static str>,
}

impl<'a> From<&'a Rollup> for RollupView<'a> {
    fn from(r: &'a Rollup) -> Self {
        RollupView {
            field: &r.series.field,
            start: format_time(r.start),
            end: format_time(r.start.saturating_add(r.length_ns)),
            count: r.stats.count,
            mean: r.stats.mean(),
            min: r.stats.min,
            max: r.stats.max,
            stddev: r.stats.stddev(),
            first: r.stats.first,
            last: r.stats.last,
            quality: r.stats.quality.names(),
        }
    }
}

/// `GET /api/v1/sensors/{id}/rollups?field=&from=&to=`: stored rollups with
/// `from <= start < to`, ordered by field then start. Defaults: the last 24 hours.
#[utoipa::path(
    get,
    path = "/api/v1/sensors/{id}/rollups",
    tag = "sensors",
    summary = "Stored rollups of one sensor, ordered by field then window start",
    params(
        ("id" = String, Path, description = "The sensor id"),
        ("field" = Option<String>, Query, description = "Only this field"),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; windows starting at or after it (default: 24 hours before `to`)"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339; windows starting before it (default: now)"),
    ),
    responses(
        (status = 200, description = "The rollups with `from <= start < to`", body = Vec<RollupView>),
        (status = 400, description = "An unknown, repeated or malformed query parameter, or `from` not before `to`", body = ErrorBody),
        (status = 404, description = "The sensor is unknown", body = ErrorBody),
        (status = 408, description = "The request took too long", body = ErrorBody),
        (status = 500, description = "The store could not be read", body = ErrorBody),
    )
)]
pub async fn rollups(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let params = params(query, &["field", "from", "to"])?;
    let to = time_param(&params, "to")?.unwrap_or_else(now_ns);
    let from = time_param(&params, "from")?.unwrap_or(to.saturating_sub(DEFAULT_ROLLUP_SPAN_NS));
    if from >= to {
        return Err(ApiError::bad_request("from: must be before to"));
    }
    let field = params.get("field").cloned();
    let live = state.snapshot().sensors.contains_key(&id);
    let sensor = id.clone();
    let found = state
        .read_store("rollups", move |store| {
            let rollups = store.rollups(&sensor, field.as_deref(), from, to)?;
            // Only an empty answer needs the (larger) series list to tell "unknown" apart.
            let known = live
                || !rollups.is_empty()
                || store.series()?.iter().any(|(k, _)| *k.sensor == *sensor);
            Ok(known.then_some(rollups))
        })
        .await?;
    let Some(mut rollups) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("sensor {id:?} is unknown"),
        ));
    };
    // The documented order, whatever order the store keeps its series ids in.
    rollups.sort_by(|a, b| (&a.series.field, a.start).cmp(&(&b.series.field, b.start)));
    let view: Vec<RollupView<'_>> = rollups.iter().map(RollupView::from).collect();
    Ok(Json(view).into_response())
}

/// One anomaly event (an episode from raise to clear).
#[derive(Serialize, ToSchema)]
pub(super) struct EventView<'a> {
    id: u64,
    sensor: &'a str,
    field: &'a str,
    rule: &'a str,
    kind: &'a str,
    severity: &'static str,
    active: bool,
    #[schema(format = DateTime)]
    raised_at: String,
    #[schema(format = DateTime)]
    cleared_at: Option<String>,
    value: f64,
    score: f64,
    peak_value: f64,
    peak_score: f64,
    #[schema(format = DateTime)]
    peak_at: String,
    message: &'a str,
    /// The operator's acknowledgement, `null` when there is none.
    acknowledged: Option<AckView>,
}

impl<'a> EventView<'a> {
    fn new(e: &'a AnomalyEvent, ack: Option<&Acknowledgement>) -> Self {
        EventView {
            id: e.id,
            sensor: &e.sensor,
            field: &e.field,
            rule: &e.rule,
            kind: &e.kind,
            severity: e.severity.as_str(),
            active: e.is_active(),
            raised_at: format_time(e.raised_at),
            cleared_at: opt_time(e.cleared_at),
            value: e.value,
            score: e.score,
            peak_value: e.peak_value,
            peak_score: e.peak_score,
            peak_at: format_time(e.peak_at),
            message: &e.message,
            acknowledged: ack.map(AckView::from),
        }
    }
}

/// `GET /api/v1/events?active=true|false&sensor=&rule=&from=&to=&limit=`: stored anomaly
/// events, newest first, at most `limit` (default 1000, at most 10000). `from` and `to`
/// select the episodes that overlap `[from, to)`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    summary = "Stored anomaly events, newest first",
    params(
        ("active" = Option<bool>, Query, description = "`true`: only active events; `false`: only cleared ones"),
        ("sensor" = Option<String>, Query, description = "Only this sensor's events"),
        ("rule" = Option<String>, Query, description = "Only this rule's events (its name, exactly)"),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; only episodes not cleared before it (still active then or later)"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339; only episodes raised before it"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "At most this many (default 1000)"),
    ),
    responses(
        (status = 200, description = "The events", body = Vec<EventView>),
        (status = 400, description = "An unknown, repeated or malformed query parameter, or `from` not before `to`", body = ErrorBody),
        (status = 408, description = "The request took too long", body = ErrorBody),
        (status = 500, description = "The store could not be read", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query, &["active", "sensor", "rule", "from", "to", "limit"])?;
    let active = match params.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_request("active: expected true or false")),
    };
    let limit = match params.get("limit") {
        None => DEFAULT_EVENT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_EVENT_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: expected a whole number from 1 to {MAX_EVENT_LIMIT}"
                )));
            }
        },
    };
    let from = time_param(&params, "from")?;
    let to = time_param(&params, "to")?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::bad_request("from: must be before to"));
    }
    let filter = EventFilter {
        active,
        sensor: params.get("sensor").cloned(),
        rule: params.get("rule").cloned(),
        from,
        to,
        limit,
    };
    let (events, acks) = state
        .read_store("events", move |store| {
            let events = store.events(&filter)?;
            let acks = store.event_acks(events.iter().map(|e| e.id))?;
            Ok((events, acks))
        })
        .await?;
    let view: Vec<EventView<'_>> = events
        .iter()
        .map(|e| EventView::new(e, acks.get(&e.id)))
        .collect();
    Ok(Json(view).into_response())
}
