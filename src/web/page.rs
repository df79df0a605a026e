//! The server-rendered pages for technicians: the status page (`/`), a sensor's page
//! (`/sensors/{id}`) and the error page. Plain HTML with a little inline CSS and a self-refresh,
//! so a tablet on the shop floor needs neither JavaScript nor an uplink.
//!
//! The status page puts what needs a person first: active anomalies, then sources, store and
//! pipeline, and the (long) sensor table last. Every outside string goes through `Esc`.

use std::fmt::Write;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::ack;
use super::html::{self, Esc, sensor_href};
use super::{ReadError, STATS_MAX_AGE, Shared};
use crate::forward::status::SinkStatus;
use crate::live::{LiveSnapshot, SensorState, SourceHealth};
use crate::model::{AnomalyEvent, NS_PER_SEC, Rollup, TimeNs, format_time, now_ns};
use crate::store::{EventFilter, StoreStats};

/// How often the pages reload themselves.
const REFRESH_SECS: u32 = 5;
/// Span of the rollup table on a sensor's page.
const SENSOR_ROLLUP_SPAN_NS: i64 = 3_600 * NS_PER_SEC;
/// Events listed on a sensor's page.
const SENSOR_EVENT_LIMIT: usize = 50;

/// An HTML error page with the given status.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the status page</a></p>",
        Esc(&title),
        Esc(message)
    );
    (status, Html(html::page(&title, None, &body))).into_response()
}

fn read_error_page(e: &ReadError) -> Response {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("The store could not be read: {e}"),
    )
}

/// `GET /`: the status page.
pub async fn status(State(state): State<Shared>) -> Response {
    let stats = state
        .read_store("stats", |s| s.recent_stats(STATS_MAX_AGE))
        .await;
    let snapshot = state.snapshot();
    let sources = state.sources.snapshot();
    let now = now_ns();

    let mut b = String::with_capacity(16 * 1024 + snapshot.sensors.len() * 512);
    let _ = write!(
        b,
        "<h1>edgewatch · {}</h1><div class=\"meta\"><span>version {}</span>\
         <span>up {}</span><span>clock {}</span></div>",
        Esc(&state.gateway_id),
        Esc(state.version),
        html::duration(now - state.started_at),
        Esc(&html::clock(now)),
    );

    let _ = write!(
        b,
        "<h2 id=\"anomalies\">Active anomalies ({})</h2>",
        snapshot.active_events.len()
    );
    let acks = ack::Column::read(&state, &snapshot.active_events, "/").await;
    anomaly_table(&mut b, &snapshot.active_events, now, true, &acks);

    b.push_str("<h2 id=\"sources\">Sources</h2>");
    source_table(&mut b, &sources, now);

    let sinks = state.sinks.snapshot();
    if !sinks.is_empty() {
        b.push_str("<h2 id=\"sinks\">Forwarding to HQ</h2>");
        sink_table(&mut b, &sinks, now);
    }

    b.push_str("<div class=\"cards\"><section><h2 id=\"store\">Store</h2>");
    match &stats {
        Ok(stats) => store_list(&mut b, stats),
        Err(e) => {
            let _ = write!(
                b,
                "<p class=\"err\">Store unreadable: {}</p>",
                Esc(&e.to_string())
            );
        }
    }
    b.push_str("</section><section><h2 id=\"pipeline\">Pipeline</h2>");
    pipeline_list(&mut b, &snapshot, state.window_secs);
    b.push_str("</section></div>");

    let _ = write!(
        b,
        "<h2 id=\"sensors\">Sensors ({})</h2>",
        snapshot.sensors.len()
    );
    sensor_table(&mut b, &snapshot, now);

    let title = format!("edgewatch {}", state.gateway_id);
    Html(html::page(&title, Some(REFRESH_SECS), &b)).into_response()
}

/// `GET /sensors/{id}`: one sensor's latest values, its rollups of the last hour and its
/// events. 404 when neither the live view nor the store knows the sensor.
pub async fn sensor(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_page(StatusCode::BAD_REQUEST, "The sensor id is not valid UTF-8.");
    };
    let snapshot = state.snapshot();
    let live = snapshot.sensors.get(&id);
    let now = now_ns();
    let from = now - SENSOR_ROLLUP_SPAN_NS;
    let sensor = id.clone();
    let is_live = live.is_some();
    let read = state
        .read_store("sensor page", move |store| {
            let rollups = store.rollups(&sensor, None, from, TimeNs::MAX)?;
            let events = store.events(&EventFilter {
                active: None,
                sensor: Some(sensor.clone()),
                limit: SENSOR_EVENT_LIMIT,
            })?;
            let known = is_live
                || !rollups.is_empty()
                || !events.is_empty()
                || store.series()?.iter().any(|(k, _)| *k.sensor == *sensor);
            Ok((known, rollups, events))
        })
        .await;
    let (known, mut rollups, events) = match read {
        Ok(found) => found,
        Err(e) => return read_error_page(&e),
    };
    if !known {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No sensor with the id \u{201c}{id}\u{201d} is known to this gateway."),
        );
    }

    let mut b = String::with_capacity(16 * 1024);
    let _ = write!(
        b,
        "<p class=\"meta\"><a href=\"/\">← {}</a></p><h1>Sensor {}</h1>",
        Esc(&state.gateway_id),
        Esc(&id)
    );
    match live {
        Some(s) => {
            let _ = write!(
                b,
                "<div class=\"meta\"><span>source {}</span>",
                Esc(&s.source)
            );
            for (k, v) in &s.tags {
                let _ = write!(b, "<span>{}={}</span>", Esc(k), Esc(v));
            }
            b.push_str("</div>");
            b.push_str("<h2>Latest values</h2>");
            field_table(&mut b, s, now);
        }
        None => b.push_str("<p class=\"muted\">No reading since the gateway started.</p>"),
    }

    // From the live view, not the store: it is current and not cut by the event limit.
    let active: Vec<AnomalyEvent> = snapshot
        .active_events
        .iter()
        .filter(|e| e.sensor == id)
        .cloned()
        .collect();
    let _ = write!(b, "<h2>Active anomalies ({})</h2>", active.len());
    let acks = ack::Column::read(&state, &active, &sensor_href(&id)).await;
    anomaly_table(&mut b, &active, now, false, &acks);

    let _ = write!(
        b,
        "<h2>Rollups of the last hour <span class=\"muted\">({} s windows)</span></h2>",
        state.window_secs
    );
    rollups.sort_by(|a, b| (&a.series.field, a.start).cmp(&(&b.series.field, b.start)));
    rollup_tables(&mut b, &rollups);

    let _ = write!(b, "<h2>Events (latest {SENSOR_EVENT_LIMIT})</h2>");
    event_table(&mut b, &events, now);

    let title = format!("{id} · edgewatch {}", state.gateway_id);
    Html(html::page(&title, Some(REFRESH_SECS), &b)).into_response()
}

fn severity_cell(b: &mut String, e: &AnomalyEvent) {
    let _ = write!(
        b,
        "<td><span class=\"sev\">{}</span></td>",
        e.severity.as_str()
    );
}

/// Active anomalies, critical first, then the longest active. `with_sensor` adds the sensor
/// column (the status page); a sensor's own page leaves it out. The last column is the
/// operator's acknowledgement (`ack.rs`).
fn anomaly_table(
    b: &mut String,
    events: &[AnomalyEvent],
    now: TimeNs,
    with_sensor: bool,
    acks: &ack::Column,
) {
    if events.is_empty() {
        b.push_str("<p class=\"ok\">No active anomalies.</p>");
        return;
    }
    let mut sorted: Vec<&AnomalyEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (std::cmp::Reverse(e.severity as u8), e.raised_at));
    b.push_str("<div class=\"scroll\"><table><tr><th>Severity</th>");
    if with_sensor {
        b.push_str("<th>Sensor</th>");
    }
    b.push_str(
        "<th>Field</th><th class=\"num\">Value</th><th>Active for</th>\
         <th class=\"num\">Peak</th><th>Rule</th><th>Message</th>",
    );
    acks.header(b);
    b.push_str("</tr>");
    for e in sorted {
        let _ = write!(b, "<tr class=\"{}\">", e.severity.as_str());
        severity_cell(b, e);
        if with_sensor {
            let _ = write!(
                b,
                "<td><a href=\"{}\">{}</a></td>",
                sensor_href(&e.sensor),
                Esc(&e.sensor)
            );
        }
        let _ = write!(
            b,
            "<td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td class=\"err\">{}</td>",
            Esc(&e.field),
            html::value(e.value),
            html::duration(now - e.raised_at),
            html::value(e.peak_value),
            Esc(&e.rule),
            Esc(&e.message),
        );
        acks.cell(b, e);
        b.push_str("</tr>");
    }
    b.push_str("</table></div>");
}

fn source_table(b: &mut String, sources: &[SourceHealth], now: TimeNs) {
    if sources.is_empty() {
        b.push_str("<p class=\"muted\">No sources configured.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Source</th><th>Type</th><th>State</th>\
         <th class=\"num\">Msgs/s</th><th class=\"num\">Readings</th>\
         <th class=\"num\">Errors</th><th>Bad payloads</th><th>Last success</th>\
         <th>Last error</th></tr>",
    );
    for s in sources {
        let state_class = if s.state == "up" { "ok" } else { "bad" };
        let state = if s.state == "misconfigured" {
            "MISCONFIGURED (check credentials and certificates)"
        } else {
            s.state.as_str()
        };
        let last_success = s
            .last_success
            .map_or_else(|| "never".to_string(), |t| html::age(now, t));
        let rate = if s.messages == 0 {
            "–".to_string()
        } else {
            format!("{:.1}", s.messages_per_sec)
        };
        let _ = write!(b, "<tr><td>{}", Esc(&s.name));
        for (key, value) in &s.details {
            let _ = write!(
                b,
                "<br><span class=\"muted\">{} {}</span>",
                Esc(key),
                Esc(value)
            );
        }
        let _ = write!(
            b,
            "</td><td>{}</td><td class=\"{state_class}\">{}</td><td class=\"num\">{rate}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"err\">",
            Esc(&s.kind),
            Esc(state),
            html::count(s.readings),
            html::count(s.errors),
        );
        for (i, (reason, stat)) in s.bad_payloads.iter().enumerate() {
            if i > 0 {
                b.push_str("<br>");
            }
            let _ = write!(
                b,
                "{} ×{} <span class=\"muted\">({}): {}</span>",
                Esc(reason),
                html::count(stat.count),
                html::age(now, stat.last_time),
                Esc(&stat.last_example),
            );
        }
        let _ = write!(
            b,
            "</td><td>{}</td><td class=\"err\">{}</td></tr>",
            last_success,
            Esc(s.last_error.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table></div>");
}

fn sink_table(b: &mut String, sinks: &[SinkStatus], now: TimeNs) {
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Sink</th><th>State</th><th>Last success</th>\
         <th class=\"num\">Backlog</th><th>Oldest unsent</th><th class=\"num\">Rate</th>\
         <th>ETA</th><th class=\"num\">Dead letters</th><th class=\"num\">Dropped</th>\
         <th>Last error</th></tr>",
    );
    for s in sinks {
        let state_class = if s.state == "up" { "ok" } else { "bad" };
        let state = if s.state == "misconfigured" && s.kind == "influxdb" {
            "MISCONFIGURED (check credentials, database or bucket)".to_string()
        } else if s.state == "misconfigured" {
            "MISCONFIGURED (check the URL and token)".to_string()
        } else {
            s.state.replace('_', " ")
        };
        let never = || "never".to_string();
        let _ = write!(
            b,
            "<tr><td>{}<br><span class=\"muted\">{}</span></td><td class=\"{state_class}\">{}</td>\
             <td>{}</td><td class=\"num\">{} ({})</td><td>{}</td><td class=\"num\">{:.0}/s</td>\
             <td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"err\">{}</td></tr>",
            Esc(&s.name),
            Esc(&s.url),
            Esc(&state),
            s.last_success.map_or_else(never, |t| html::age(now, t)),
            html::count(s.backlog_points),
            html::bytes(s.backlog_bytes),
            s.oldest_unsent
                .map_or_else(|| "-".to_string(), |t| html::age(now, t)),
            s.drain_rate_points_per_sec,
            s.eta_secs
                .map_or_else(|| "-".to_string(), |e| html::duration((e * 1e9) as i64)),
            html::count(s.dead_letters),
            if s.dropped_points > 0 { " bad" } else { "" },
            html::count(s.dropped_points),
            Esc(s.last_error.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table></div>");
}

fn store_list(b: &mut String, s: &StoreStats) {
    let used = if s.max_bytes > 0 {
        format!(
            " ({:.0} %)",
            s.stored_bytes as f64 * 100.0 / s.max_bytes as f64
        )
    } else {
        String::new()
    };
    let _ = write!(
        b,
        "<dl><dt>File</dt><dd>{}</dd><dt>Stored</dt><dd>{} of {}{used}</dd>\
         <dt>Outbox</dt><dd>{} entries</dd><dt>Series</dt><dd>{}</dd>\
         <dt>Raw readings</dt><dd>{}</dd><dt>Rollups</dt><dd>{}</dd><dt>Events</dt><dd>{}</dd></dl>",
        html::bytes(s.file_bytes),
        html::bytes(s.stored_bytes),
        html::bytes(s.max_bytes),
        html::count(s.outbox_entries),
        html::count(s.series),
        html::count(s.raw_readings),
        html::count(s.rollups),
        html::count(s.events),
    );
}

fn pipeline_list(b: &mut String, snapshot: &LiveSnapshot, window_secs: u64) {
    let c = &snapshot.counters;
    let watermark = snapshot
        .watermark
        .map_or_else(|| "none yet".to_string(), format_time);
    let _ = write!(
        b,
        "<dl><dt>Readings</dt><dd>{}</dd><dt>Flagged</dt><dd>{} not finite, {} bad time</dd>\
         <dt>Late</dt><dd>{} corrected, {} dropped</dd><dt>Rollups</dt><dd>{}</dd>\
         <dt>Events</dt><dd>{} raised, {} cleared</dd><dt>Watermark</dt><dd>{}</dd>\
         <dt>Window</dt><dd>{window_secs} s</dd></dl>",
        html::count(c.readings),
        html::count(c.not_finite),
        html::count(c.time_suspect),
        html::count(c.late_corrected),
        html::count(c.late_dropped),
        html::count(c.rollups),
        html::count(c.events_raised),
        html::count(c.events_cleared),
        Esc(&watermark),
    );
}

/// One row per (sensor, field); the sensor and its source are named on its first row only.
/// The source comes last so that on a phone the values are on screen without scrolling.
fn sensor_table(b: &mut String, snapshot: &LiveSnapshot, now: TimeNs) {
    if snapshot.sensors.is_empty() {
        b.push_str("<p class=\"muted\">No readings yet.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Sensor</th><th>Field</th>\
         <th class=\"num\">Value</th><th>Age</th><th class=\"num\">Rolling avg</th>\
         <th>Quality</th><th>Source</th></tr>",
    );
    for (id, sensor) in &snapshot.sensors {
        for (i, (name, f)) in sensor.fields.iter().enumerate() {
            if i == 0 {
                let _ = write!(
                    b,
                    "<tr><td><a href=\"{}\">{}</a></td>",
                    sensor_href(id),
                    Esc(id)
                );
            } else {
                b.push_str("<tr><td></td>");
            }
            field_cells(b, name, f, now);
            let source = if i == 0 { sensor.source.as_str() } else { "" };
            let _ = write!(b, "<td class=\"muted\">{}</td></tr>", Esc(source));
        }
    }
    b.push_str("</table></div>");
}

fn field_cells(b: &mut String, name: &str, f: &crate::live::FieldState, now: TimeNs) {
    let _ = write!(
        b,
        "<td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
         <td class=\"muted\">{}</td>",
        Esc(name),
        html::value(f.value),
        html::age(now, f.time),
        f.rolling_avg.map_or_else(|| "–".to_string(), html::value),
        f.quality.names().join(" "),
    );
}

fn field_table(b: &mut String, sensor: &SensorState, now: TimeNs) {
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Field</th><th class=\"num\">Value</th>\
         <th>Age</th><th class=\"num\">Rolling avg</th><th>Quality</th></tr>",
    );
    for (name, f) in &sensor.fields {
        b.push_str("<tr>");
        field_cells(b, name, f, now);
        b.push_str("</tr>");
    }
    b.push_str("</table></div>");
}

/// One table per field, newest window first; `rollups` are sorted by field then start.
fn rollup_tables(b: &mut String, rollups: &[Rollup]) {
    if rollups.is_empty() {
        b.push_str("<p class=\"muted\">No rollups stored for the last hour.</p>");
        return;
    }
    for group in rollups.chunk_by(|a, b| a.series.field == b.series.field) {
        let _ = write!(
            b,
            "<h3>{}</h3><div class=\"scroll\"><table><tr><th>Window start</th>\
             <th class=\"num\">Count</th><th class=\"num\">Mean</th><th class=\"num\">Min</th>\
             <th class=\"num\">Max</th><th class=\"num\">Std dev</th><th>Quality</th></tr>",
            Esc(&group[0].series.field)
        );
        for r in group.iter().rev() {
            let s = &r.stats;
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"muted\">{}</td></tr>",
                Esc(&html::clock(r.start)),
                html::count(s.count),
                html::value(s.mean()),
                html::value(s.min),
                html::value(s.max),
                html::value(s.stddev()),
                s.quality.names().join(" "),
            );
        }
        b.push_str("</table></div>");
    }
}

fn event_table(b: &mut String, events: &[AnomalyEvent], now: TimeNs) {
    if events.is_empty() {
        b.push_str("<p class=\"muted\">No events stored.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Severity</th><th>Field</th><th>Rule</th>\
         <th>Raised</th><th>Cleared</th><th class=\"num\">Peak</th><th>Message</th></tr>",
    );
    for e in events {
        let cleared = e
            .cleared_at
            .map_or_else(|| "active".to_string(), |t| html::age(now, t));
        let _ = write!(
            b,
            "<tr class=\"{}\">",
            if e.is_active() {
                e.severity.as_str()
            } else {
                ""
            }
        );
        severity_cell(b, e);
        let _ = write!(
            b,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"err\">{}</td></tr>",
            Esc(&e.field),
            Esc(&e.rule),
            html::age(now, e.raised_at),
            cleared,
            html::value(e.peak_value),
            Esc(&e.message),
        );
    }
    b.push_str("</table></div>");
}
