//! `GET /`: the overview. It puts what needs a person first: how fresh the data is, active
//! anomalies and how long they have been active, then the sources' health, forwarding to HQ
//! (link state and backlog), store and pipeline, and the (long) sensor table last.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::anomalies::{Columns, active_first, anomaly_table};
use super::devices::{is_modbus, unit_summary};
use super::{Rendered, live_state, respond, sensor_stale_after};
use crate::forward::status::SinkStatus;
use crate::live::{FieldState, LiveSnapshot, SourceHealth};
use crate::model::{TimeNs, format_time, now_ns};
use crate::store::StoreStats;
use crate::web::html::{self, Esc, Nav, sensor_href};
use crate::web::{STATS_MAX_AGE, Shared, ack};

/// `GET /`: the overview.
pub async fn status(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let stats = state
        .read_store("stats", |s| s.recent_stats(STATS_MAX_AGE))
        .await;
    let snapshot = state.snapshot();
    let sources = state.sources.snapshot();
    let now = now_ns();
    let live = live_state(&snapshot, now);
    let stale_after = sensor_stale_after(state.window_secs);

    let mut b = String::with_capacity(16 * 1024 + snapshot.sensors.len() * 512);
    let stale_sensors = snapshot
        .sensors
        .values()
        .filter(|s| s.fields.values().any(|f| now - f.time > stale_after))
        .count();
    let _ = write!(
        b,
        "<h1>edgewatch · {}</h1><div class=\"meta\"><span>version {}</span>\
         <span>up {}</span><span>clock {}</span><span id=\"freshness\">live data {} old</span>\
         <span id=\"config-loaded\">config loaded {} ago</span>",
        Esc(&state.gateway_id),
        Esc(state.version),
        html::duration(now - state.started_at),
        Esc(&html::clock(now)),
        html::duration(live.snapshot_age_ns.max(0)),
        html::duration((now - state.config_status.get().loaded_at).max(0)),
    );
    if stale_sensors > 0 {
        let _ = write!(
            b,
            "<span class=\"stale\">{stale_sensors} sensor{} without a reading for {}</span>",
            if stale_sensors == 1 { "" } else { "s" },
            html::duration(stale_after),
        );
    }
    b.push_str("</div>");
    config_notes(&mut b, &state.config_status.get());

    let mut active = snapshot.active_events.clone();
    active_first(&mut active);
    let _ = write!(
        b,
        "<section id=\"anomalies\"><h2>Active anomalies ({})</h2>",
        active.len()
    );
    let acks = ack::Column::read(&state, &active, "/").await;
    anomaly_table(
        &mut b,
        &active,
        now,
        Columns { sensor: true },
        &acks,
        "<p class=\"ok\">No active anomalies.</p>",
    );
    b.push_str("</section>");

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
    sensor_table(&mut b, &snapshot, now, stale_after);

    let title = format!("edgewatch {}", state.gateway_id);
    respond(
        &headers,
        Rendered {
            status: StatusCode::OK,
            title: &title,
            nav: Nav::Overview,
            gateway_id: &state.gateway_id,
            live: &live,
            controls: "",
            content: &b,
        },
    )
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
        if is_modbus(s) {
            // Per-unit details belong to the devices page; here a line per source.
            let _ = write!(
                b,
                "<br><a class=\"muted\" href=\"/devices\">{}</a>",
                Esc(&unit_summary(s))
            );
        } else {
            for (key, value) in &s.details {
                let _ = write!(
                    b,
                    "<br><span class=\"muted\">{} {}</span>",
                    Esc(key),
                    Esc(value)
                );
            }
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
/// The source comes last so that on a phone the values are on screen without scrolling. A
/// field whose latest reading is older than `stale_after` is a `tr.stale`.
fn sensor_table(b: &mut String, snapshot: &LiveSnapshot, now: TimeNs, stale_after: i64) {
    if snapshot.sensors.is_empty() {
        b.push_str("<p class=\"muted\">No readings yet.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table id=\"sensor-table\"><tr><th>Sensor</th><th>Field</th>\
         <th class=\"num\">Value</th><th>Age</th><th class=\"num\">Rolling avg</th>\
         <th>Quality</th><th>Source</th></tr>",
    );
    for (id, sensor) in &snapshot.sensors {
        for (i, (name, f)) in sensor.fields.iter().enumerate() {
            b.push_str(row_open(now, f, stale_after));
            if i == 0 {
                let _ = write!(
                    b,
                    "<td><a href=\"{}\">{}</a></td>",
                    sensor_href(id),
                    Esc(id)
                );
            } else {
                b.push_str("<td></td>");
            }
            field_cells(b, name, f, now);
            let source = if i == 0 { sensor.source.as_str() } else { "" };
            let _ = write!(b, "<td class=\"muted\">{}</td></tr>", Esc(source));
        }
    }
    b.push_str("</table></div>");
}

/// `<tr class="stale">` for a field whose latest reading is older than `stale_after`.
pub(super) fn row_open(now: TimeNs, f: &FieldState, stale_after: i64) -> &'static str {
    if now - f.time > stale_after {
        "<tr class=\"stale\" title=\"no recent reading\">"
    } else {
        "<tr>"
    }
}

/// The cells of one field: name, value, age, rolling average, quality flags.
pub(super) fn field_cells(b: &mut String, name: &str, f: &FieldState, now: TimeNs) {
    let _ = write!(
        b,
        "<td class=\"field\">{}</td><td class=\"value\">{}</td><td class=\"age\" title=\"{}\">{}</td>\
         <td class=\"num\">{}</td><td class=\"muted\">{}</td>",
        Esc(name),
        html::value(f.value),
        Esc(&format_time(f.time)),
        html::age(now, f.time),
        f.rolling_avg.map_or_else(|| "–".to_string(), html::value),
        f.quality.names().join(" "),
    );
}

/// A refused reload and settings waiting for a restart, right under the header: whoever
/// changed the config sees that the page does not show what the file says.
fn config_notes(b: &mut String, config: &crate::live::ConfigState) {
    if let Some((at, reason)) = &config.refused {
        let _ = write!(
            b,
            "<p class=\"err\" id=\"config-refused\">Config reload refused at {}: {}. \
             The config loaded before keeps running.</p>",
            Esc(&html::clock(*at)),
            Esc(reason)
        );
    }
    if !config.waiting_for_restart.is_empty() {
        let _ = write!(
            b,
            "<p class=\"err\" id=\"config-waiting\">Changed in the config file, applied at \
             the next restart: {}.</p>",
            Esc(&config.waiting_for_restart.join(", "))
        );
    }
}
