//! Operator acknowledgement of anomaly events: `POST /api/v1/events/{id}/ack` (JSON, bearer
//! token) and, for people, `GET /events/{id}/ack` (a form) with `POST /events/{id}/ack`
//! (`application/x-www-form-urlencoded`, the token in a password field, 303 back to the page
//! the operator came from).
//!
//! The form has a page of its own, linked from each active anomaly's row, rather than sitting
//! in the row: the status pages reload themselves every few seconds, which would wipe a
//! half-typed note. The form page does not reload.
//!
//! Answers, in the order they are checked:
//! - 403 `read-only: no operator token configured` when `[web] operator_token` is not set
//!   (and no row offers the form);
//! - 401 with `WWW-Authenticate: Bearer` for a missing or wrong token (compared in constant
//!   time);
//! - 400 for a note that is empty or longer than [`MAX_NOTE_CHARS`] characters, or holds
//!   control characters other than line breaks and tabs; 413 for a body over
//!   `web.max_body_bytes`;
//! - 404 for an event that is neither stored nor active in the live view;
//! - success: the acknowledgement is durably stored. A cleared event may be acknowledged too
//!   (an operator may record what was found after it cleared), and acknowledging again
//!   replaces the note and the time.
//!
//! Invariants:
//! - **The token is never written into an answer**, not even back into the form after a
//!   refusal; nor is it logged.
//! - **This is the web's only write, and it writes an annotation, never data** (readings,
//!   rollups, events and the outbox stay the store writer's): one small durable transaction
//!   in `spawn_blocking` (`store/event_acks.rs`), reachable only with the operator token.

use std::collections::HashMap;
use std::fmt::Write;

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{ApiError, ErrorBody};
use super::html::{self, Attr, Esc, sensor_href};
use super::ingest::{bearer, same_secret};
use super::page::error_page;
use super::{ReadError, Shared, WebState};
use crate::model::{AnomalyEvent, format_time, now_ns};
use crate::store::Acknowledgement;

/// Longest note, in characters: a line or two for the next shift, not a report.
pub const MAX_NOTE_CHARS: usize = 500;

/// What a refused token or a read-only web is answered.
const READ_ONLY: &str = "read-only: no operator token configured";

/// True for the API route's paths (`/api/v1/events/{id}/ack`), which answer only POST.
pub(super) fn is_api_path(path: &str) -> bool {
    path.strip_prefix("/api/v1/events/")
        .and_then(|rest| rest.strip_suffix("/ack"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The configured operator token; `None`: the web is read-only.
fn token(state: &WebState) -> Option<&[u8]> {
    state
        .config
        .operator_token
        .as_ref()
        .map(|t| t.0.as_bytes())
        .filter(|t| !t.is_empty())
}

/// Whether acknowledging is possible at all (a token is configured).
pub(crate) fn enabled(state: &WebState) -> bool {
    token(state).is_some()
}

/// Why an acknowledgement was refused.
enum Refusal {
    ReadOnly,
    /// No token was given (`false`) or a wrong one (`true`).
    Unauthorized(bool),
    BadRequest(String),
    UnknownEvent(u64),
    Store(ReadError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::ReadOnly => StatusCode::FORBIDDEN,
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::UnknownEvent(_) => StatusCode::NOT_FOUND,
            Refusal::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::ReadOnly => READ_ONLY.into(),
            Refusal::Unauthorized(false) => "the operator token is required".into(),
            Refusal::Unauthorized(true) => "wrong operator token".into(),
            Refusal::BadRequest(m) => m.clone(),
            Refusal::UnknownEvent(id) => format!("no event {id} is known"),
            Refusal::Store(e) => format!("the acknowledgement could not be stored: {e}"),
        }
    }

    /// The `WWW-Authenticate` challenge that goes with a 401.
    fn challenge(&self) -> Option<(header::HeaderName, &'static str)> {
        matches!(self, Refusal::Unauthorized(_)).then_some((header::WWW_AUTHENTICATE, "Bearer"))
    }

    fn api(self) -> Response {
        let challenge = self.challenge();
        let error = ApiError::new(self.status(), self.message());
        match challenge {
            Some(h) => ([h], error).into_response(),
            None => error.into_response(),
        }
    }

    fn page(self) -> Response {
        let challenge = self.challenge();
        let mut response = error_page(self.status(), &self.message());
        if let Some((name, value)) = challenge {
            response
                .headers_mut()
                .insert(name, header::HeaderValue::from_static(value));
        }
        response
    }
}

/// Checks the given token against the configured one: read-only first, then 401.
fn authorize(state: &WebState, given: Option<&[u8]>) -> Result<(), Refusal> {
    let Some(expected) = token(state) else {
        return Err(Refusal::ReadOnly);
    };
    match given.filter(|g| !g.is_empty()) {
        None => Err(Refusal::Unauthorized(false)),
        Some(g) if same_secret(g, expected) => Ok(()),
        Some(_) => Err(Refusal::Unauthorized(true)),
    }
}

/// The note as stored: trimmed, with CR LF as LF; refused when empty, too long or holding
/// control characters other than line breaks and tabs.
fn check_note(note: &str) -> Result<String, Refusal> {
    let note = note.trim().replace("\r\n", "\n");
    if note.is_empty() {
        return Err(Refusal::BadRequest("note: must not be empty".into()));
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(Refusal::BadRequest(format!(
            "note: at most {MAX_NOTE_CHARS} characters"
        )));
    }
    if note
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Refusal::BadRequest(
            "note: control characters other than line breaks and tabs are not accepted".into(),
        ));
    }
    Ok(note)
}

/// Stores the acknowledgement of event `id` if the event is known: active in the live view
/// (it may not be committed yet) or stored.
async fn record(state: &Shared, id: u64, note: String) -> Result<Acknowledgement, Refusal> {
    let live = state.snapshot().active_events.iter().any(|e| e.id == id);
    let ack = Acknowledgement { at: now_ns(), note };
    let stored = state
        .read_store("acknowledge", move |store| {
            if !live && store.event(id)?.is_none() {
                return Ok(None);
            }
            store.acknowledge_event(id, &ack)?;
            Ok(Some(ack))
        })
        .await
        .map_err(Refusal::Store)?;
    let ack = stored.ok_or(Refusal::UnknownEvent(id))?;
    tracing::info!(event = id, "anomaly acknowledged by an operator");
    Ok(ack)
}

/// An acknowledgement as the API shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct AckView {
    /// When it was given (gateway clock).
    #[schema(format = DateTime)]
    at: String,
    note: String,
}

impl From<&Acknowledgement> for AckView {
    fn from(a: &Acknowledgement) -> Self {
        AckView {
            at: format_time(a.at),
            note: a.note.clone(),
        }
    }
}

/// The body of `POST /api/v1/events/{id}/ack`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckRequest {
    /// What the operator found or did; 1 to 500 characters.
    #[schema(example = "checked the pump, seal replaced")]
    note: String,
}

/// The answer to an accepted acknowledgement.
#[derive(Serialize, ToSchema)]
pub(super) struct AckAnswer {
    id: u64,
    acknowledged: AckView,
}

/// `POST /api/v1/events/{id}/ack`.
#[utoipa::path(
    post,
    path = "/api/v1/events/{id}/ack",
    tag = "events",
    summary = "Acknowledge an anomaly event with a note (operator token)",
    description = "Needs `[web] operator_token`: without one the web is read-only and this answers 403. The acknowledgement is stored durably and shown with the event (`acknowledged`). A cleared event may be acknowledged too; acknowledging again replaces the note and the time.",
    params(("id" = u64, Path, description = "The event id")),
    request_body(content = AckRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = AckAnswer),
        (status = 400, description = "The note is empty, longer than 500 characters or holds control characters; or the body or id is malformed", body = ErrorBody),
        (status = 401, description = "No or a wrong operator token (with `WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Read-only: no operator token is configured", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 408, description = "The request took too long", body = ErrorBody),
        (status = 413, description = "The body is larger than `web.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The store could not be written", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn api_ack(
    State(state): State<Shared>,
    id: Result<Path<u64>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<AckRequest>, JsonRejection>,
) -> Response {
    if let Err(refusal) = authorize(&state, bearer(&headers)) {
        return refusal.api();
    }
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(e) => {
            // A body of the wrong shape is a 400 like every malformed input of the API
            // (axum says 422); a wrong content type (415) or size (413) keeps its status.
            let status = match e.status() {
                StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                other => other,
            };
            return ApiError::new(status, format!("body: {}", e.body_text())).into_response();
        }
    };
    let note = match check_note(&request.note) {
        Ok(note) => note,
        Err(refusal) => return refusal.api(),
    };
    match record(&state, id, note).await {
        Ok(ack) => Json(AckAnswer {
            id,
            acknowledged: AckView::from(&ack),
        })
        .into_response(),
        Err(refusal) => refusal.api(),
    }
}

/// The fields of the form.
#[derive(Deserialize)]
pub(super) struct AckForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    token: String,
    /// Where to go back to: a local path, else the status page.
    #[serde(default)]
    back: String,
}

/// `back` when it is a path on this server, else `/`: the redirect never leaves the gateway.
fn local_path(back: &str) -> &str {
    let local = back.starts_with('/')
        && !back.starts_with("//")
        && back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if local { back } else { "/" }
}

/// `GET /events/{id}/ack?back=`: the form, with the event it is about.
pub(super) async fn form_page(
    State(state): State<Shared>,
    id: Result<Path<u64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if !enabled(&state) {
        return Refusal::ReadOnly.page();
    }
    let Ok(Path(id)) = id else {
        return error_page(StatusCode::BAD_REQUEST, "An event id is a whole number.");
    };
    // A malformed query only loses the way back.
    let back = query
        .ok()
        .and_then(|Query(q)| q.into_iter().find(|(k, _)| k == "back"))
        .map_or("/".to_string(), |(_, v)| local_path(&v).to_string());
    let live = state
        .snapshot()
        .active_events
        .iter()
        .find(|e| e.id == id)
        .cloned();
    let read = state
        .read_store("ack form", move |store| {
            let event = match live {
                Some(e) => Some(e),
                None => store.event(id)?,
            };
            Ok((event, store.event_acks([id])?.remove(&id)))
        })
        .await;
    let (event, ack) = match read {
        Ok((Some(event), ack)) => (event, ack),
        Ok((None, _)) => return Refusal::UnknownEvent(id).page(),
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The store could not be read: {e}"),
            );
        }
    };
    let now = now_ns();
    let mut b = String::with_capacity(4096);
    let _ = write!(
        b,
        "<p class=\"meta\"><a href=\"{}\">← back</a></p><h1>Acknowledge anomaly {id}</h1>\
         <dl><dt>Sensor</dt><dd><a href=\"{}\">{}</a></dd><dt>Field</dt><dd>{}</dd>\
         <dt>Rule</dt><dd>{}</dd><dt>Severity</dt><dd>{}</dd><dt>Raised</dt><dd>{} ({})</dd>\
         <dt>State</dt><dd>{}</dd><dt>Message</dt><dd class=\"err\">{}</dd></dl>",
        Esc(&back),
        sensor_href(&event.sensor),
        Esc(&event.sensor),
        Esc(&event.field),
        Esc(&event.rule),
        event.severity.as_str(),
        Esc(&html::clock(event.raised_at)),
        html::age(now, event.raised_at),
        match event.cleared_at {
            None => "active".to_string(),
            Some(t) => format!("cleared {}", html::age(now, t)),
        },
        Esc(&event.message),
    );
    if let Some(ack) = &ack {
        b.push_str("<p class=\"ok\" id=\"ack-current\">");
        acknowledged_text(&mut b, ack);
        b.push_str("</p><p class=\"muted\">Acknowledging again replaces this note.</p>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/events/{id}/ack\" id=\"ack-form\" class=\"ack\">\
         <input type=\"hidden\" name=\"back\" value=\"{}\">\
         <p><label for=\"ack-note\">Note</label><br><textarea id=\"ack-note\" name=\"note\" \
         rows=\"3\" cols=\"60\" maxlength=\"{MAX_NOTE_CHARS}\" required></textarea></p>\
         <p><label for=\"ack-token\">Operator token</label><br><input id=\"ack-token\" \
         type=\"password\" name=\"token\" autocomplete=\"current-password\" required></p>\
         <p><button type=\"submit\">Acknowledge</button></p></form>",
        Esc(&back),
    );
    let title = format!("Acknowledge anomaly {id} · edgewatch {}", state.gateway_id);
    Html(html::page(
        &title,
        html::Nav::Other,
        &state.gateway_id,
        None,
        "",
        &b,
    ))
    .into_response()
}

/// `POST /events/{id}/ack`: the form's submission; 303 back on success.
pub(super) async fn form_post(
    State(state): State<Shared>,
    id: Result<Path<u64>, PathRejection>,
    form: Result<Form<AckForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        // Checked before the token only because the token is inside the form.
        Err(e) if enabled(&state) => {
            return error_page(e.status(), &format!("The form could not be read: {e}"));
        }
        Err(_) => return Refusal::ReadOnly.page(),
    };
    if let Err(refusal) = authorize(&state, Some(form.token.as_bytes())) {
        return refusal.page();
    }
    let Ok(Path(id)) = id else {
        return error_page(StatusCode::BAD_REQUEST, "An event id is a whole number.");
    };
    let note = match check_note(&form.note) {
        Ok(note) => note,
        Err(refusal) => return refusal.page(),
    };
    match record(&state, id, note).await {
        Ok(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, local_path(&form.back).to_string())],
        )
            .into_response(),
        Err(refusal) => refusal.page(),
    }
}

/// "acknowledged 2026-12-01T10:00:00Z: note", escaped.
fn acknowledged_text(b: &mut String, ack: &Acknowledgement) {
    let _ = write!(
        b,
        "acknowledged {}: {}",
        Esc(&html::clock(ack.at)),
        Esc(&ack.note)
    );
}

/// The acknowledgement column of the anomaly tables.
pub(crate) struct Column {
    /// Acknowledgements of the events shown.
    pub acks: HashMap<u64, Acknowledgement>,
    /// Offer the form (a token is configured).
    pub offer: bool,
    /// The page the form returns to.
    pub back: String,
}

impl Column {
    /// Reads the acknowledgements of `events` for a page at `back`. A failed read shows no
    /// acknowledgement rather than failing the page (it is counted and logged).
    pub async fn read(state: &Shared, events: &[AnomalyEvent], back: &str) -> Column {
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        let acks = if ids.is_empty() {
            HashMap::new()
        } else {
            state
                .read_store("acks", move |s| s.event_acks(ids))
                .await
                .unwrap_or_default()
        };
        Column {
            acks,
            offer: enabled(state),
            back: back.to_string(),
        }
    }

    pub fn header(&self, b: &mut String) {
        b.push_str("<th>Acknowledged</th>");
    }

    /// The cell of `e`: its acknowledgement, else for an active event a link to the form
    /// (when a token is configured), else a dash.
    pub fn cell(&self, b: &mut String, e: &AnomalyEvent) {
        match self.acks.get(&e.id) {
            Some(ack) => {
                // Notes wrap, unlike the other cells of the table.
                b.push_str("<td class=\"ack\" style=\"white-space:normal;min-width:14rem\">");
                acknowledged_text(b, ack);
                b.push_str("</td>");
            }
            None if self.offer && e.is_active() => {
                let _ = write!(
                    b,
                    "<td><a class=\"ack-link\" href=\"/events/{}/ack?back={}\">Acknowledge…</a></td>",
                    e.id,
                    Attr(&self.back)
                );
            }
            None => b.push_str("<td class=\"muted\">–</td>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_trimmed_and_bounded() {
        assert_eq!(check_note("  ok\r\nfine \t").ok().unwrap(), "ok\nfine");
        assert!(check_note("   ").is_err());
        assert!(check_note(&"x".repeat(MAX_NOTE_CHARS)).is_ok());
        assert!(check_note(&"é".repeat(MAX_NOTE_CHARS + 1)).is_err());
        assert!(check_note("bell\u{7}").is_err());
    }

    #[test]
    fn the_redirect_stays_on_this_server() {
        assert_eq!(local_path("/sensors/p-101"), "/sensors/p-101");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil"), "/");
        assert_eq!(local_path("/a\r\nSet-Cookie: x"), "/");
        assert_eq!(local_path(""), "/");
    }

    #[test]
    fn only_the_ack_paths_are_api_ack_paths() {
        assert!(is_api_path("/api/v1/events/7/ack"));
        assert!(!is_api_path("/api/v1/events//ack"));
        assert!(!is_api_path("/api/v1/events/7/x/ack"));
        assert!(!is_api_path("/api/v1/events"));
    }
}
