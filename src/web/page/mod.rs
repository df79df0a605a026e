//! The server-rendered pages for technicians, one module per page: the overview (`/`,
//! `overview.rs`), a sensor with its charts (`/sensors/{id}`, `sensor.rs`), the Modbus
//! devices and their units (`/devices`, `devices.rs`), the anomaly history with filters
//! (`/events`, `events.rs`); the anomaly table they share (`anomalies.rs`); the error page
//! and the live-update plumbing (here).
//!
//! Invariants:
//! - Plain HTML with inline CSS: every page is readable with JavaScript off, and then reloads
//!   itself. With JavaScript, our own script (`/assets/app.js`) asks for the same URL with
//!   `X-Partial: 1` and gets only the `<main>` element ([`respond`]), which it swaps in.
//! - Every render says when it was made and whether the server already knows its data is
//!   stale (the pipeline stopped publishing); the page shows the `#stale` banner then, and the
//!   script shows it too when updates stop arriving.
//! - Every outside string goes through `Esc` (or `Attr` in links).

mod anomalies;
mod devices;
mod events;
mod overview;
mod sensor;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub use devices::devices;
pub use events::events;
pub use overview::status;
pub use sensor::sensor;

use super::ReadError;
use super::html::{self, Esc, Live, Nav};
use crate::live::LiveSnapshot;
use crate::model::{NS_PER_SEC, TimeNs};

/// The pipeline publishes its snapshot every `pipeline.snapshot_interval_ms` (500 ms by
/// default); one older than this means the pipeline stopped or is stuck, and every live
/// value on the page is marked stale.
const SNAPSHOT_STALE_AFTER_NS: i64 = 10 * NS_PER_SEC;
/// A sensor whose latest reading is older than this many rollup windows (and at least
/// [`MIN_SENSOR_STALE_NS`]) is marked stale: its rollups have a hole by then.
const SENSOR_STALE_WINDOWS: i64 = 2;
const MIN_SENSOR_STALE_NS: i64 = 30 * NS_PER_SEC;

/// The request header that asks for the `<main>` element only.
const PARTIAL_HEADER: &str = "x-partial";

/// How fresh the page's data is, from the live snapshot's age.
fn live_state(snapshot: &LiveSnapshot, now: TimeNs) -> Live {
    let age = now - snapshot.taken_at;
    let stale = (age > SNAPSHOT_STALE_AFTER_NS).then(|| {
        if snapshot.taken_at == 0 {
            "the pipeline has not published any data yet".to_string()
        } else {
            format!(
                "the pipeline last published {} ago",
                html::duration(age.max(0))
            )
        }
    });
    Live {
        generated_at: now,
        snapshot_age_ns: age,
        stale,
    }
}

/// Age beyond which a sensor's latest reading is shown stale.
fn sensor_stale_after(window_secs: u64) -> i64 {
    let windows = i64::try_from(window_secs)
        .unwrap_or(i64::MAX / NS_PER_SEC)
        .saturating_mul(NS_PER_SEC)
        .saturating_mul(SENSOR_STALE_WINDOWS);
    windows.max(MIN_SENSOR_STALE_NS)
}

/// Whether the request asks for the `<main>` element only.
fn wants_partial(headers: &HeaderMap) -> bool {
    headers
        .get(PARTIAL_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// A live page's answer: the whole page, or only its `<main>` for the script. Never cached
/// (a cached page would look current), and `Vary` keeps the two shapes apart.
struct Rendered<'a> {
    status: StatusCode,
    title: &'a str,
    nav: Nav,
    gateway_id: &'a str,
    live: &'a Live,
    /// Forms above `<main>`, left alone by live updates.
    controls: &'a str,
    content: &'a str,
}

fn respond(headers: &HeaderMap, page: Rendered<'_>) -> Response {
    let body = if wants_partial(headers) {
        html::main_element(page.live, page.content)
    } else {
        html::page(
            page.title,
            page.nav,
            page.gateway_id,
            Some(page.live),
            page.controls,
            page.content,
        )
    };
    let mut response = (page.status, Html(body)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("X-Partial"));
    response
}

/// `GET /assets/app.js`: the live-update script. Its URL carries a hash of its content, so it
/// may be cached for a year.
pub async fn app_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        html::APP_JS,
    )
        .into_response()
}

/// An HTML error page with the given status.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the overview</a></p>",
        Esc(&title),
        Esc(message)
    );
    (
        status,
        Html(html::page(&title, Nav::Other, "", None, "", &body)),
    )
        .into_response()
}

fn read_error_page(e: &ReadError) -> Response {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("The store could not be read: {e}"),
    )
}
