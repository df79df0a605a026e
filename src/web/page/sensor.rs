//! `GET /sensors/{id}`: one sensor. Latest values with their age and rolling average, active
//! anomalies, per field a chart of the last hour of raw readings and one of the last 24 hours
//! of rollups (min–max band and mean), both with anomaly episodes shaded, then the rollups of
//! the last hour as a table and the sensor's latest events.
//!
//! All store reads of a render happen in one blocking task; raw readings are summarised into
//! min/max buckets as they are read ([`MinMaxBuckets`]), so an hour of a fast sensor never sits
//! in memory whole.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::anomalies::{Columns, active_first, anomaly_table};
use super::overview::{field_cells, row_open};
use super::{Rendered, error_page, live_state, read_error_page, respond, sensor_stale_after};
use crate::live::SensorState;
use crate::model::{AnomalyEvent, NS_PER_SEC, Rollup, SeriesKey, TimeNs, now_ns};
use crate::store::EventFilter;
use crate::web::chart::{self, Chart, Episode, MAX_POINTS, MinMaxBuckets};
use crate::web::html::{self, Attr, Esc, Nav, sensor_href};
use crate::web::{Shared, ack};

/// Span of the raw chart and of the rollup table.
const RAW_SPAN_NS: i64 = 3_600 * NS_PER_SEC;
/// Span of the rollup chart.
const ROLLUP_SPAN_NS: i64 = 24 * 3_600 * NS_PER_SEC;
/// Events listed on a sensor's page.
const EVENT_LIMIT: usize = 50;
/// Episodes shaded on the charts: the newest this many of the last 24 hours.
const EPISODE_LIMIT: usize = 500;

/// What one render reads from the store.
struct Stored {
    known: bool,
    /// Per field: the raw readings of the last hour as min/max buckets.
    raw: BTreeMap<String, MinMaxBuckets>,
    /// Rollups of the last 24 hours, every field, ordered by field then start.
    rollups: Vec<Rollup>,
    /// The latest events, newest first.
    events: Vec<AnomalyEvent>,
    /// Episodes overlapping the last 24 hours.
    episodes: Vec<AnomalyEvent>,
}

/// `GET /sensors/{id}`. 404 when neither the live view nor the store knows the sensor.
pub async fn sensor(
    State(state): State<Shared>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_page(StatusCode::BAD_REQUEST, "The sensor id is not valid UTF-8.");
    };
    let snapshot = state.snapshot();
    let live_sensor = snapshot.sensors.get(&id).cloned();
    let now = now_ns();
    let live = live_state(&snapshot, now);
    let sensor = id.clone();
    let live_fields: Vec<String> = live_sensor
        .as_ref()
        .map(|s| s.fields.keys().cloned().collect())
        .unwrap_or_default();
    let read = state
        .read_store("sensor page", move |store| {
            let mut fields = store.fields(&sensor)?;
            fields.extend(live_fields);
            fields.sort();
            fields.dedup();
            // One pass over the readings not folded yet, for every field at once.
            let keys: Vec<SeriesKey> = fields
                .iter()
                .map(|f| SeriesKey::new(sensor.as_str(), f.as_str()))
                .collect();
            let mut buckets =
                vec![MinMaxBuckets::new(now - RAW_SPAN_NS, now, MAX_POINTS / 2); keys.len()];
            store.raw_each_of(&keys, now - RAW_SPAN_NS, now, |i, t, v, _| {
                buckets[i].push(t, v);
                true
            })?;
            let raw: BTreeMap<String, MinMaxBuckets> = fields.into_iter().zip(buckets).collect();
            let rollups = store.rollups(&sensor, None, now - ROLLUP_SPAN_NS, TimeNs::MAX)?;
            let events = store.events(&EventFilter {
                sensor: Some(sensor.clone()),
                limit: EVENT_LIMIT,
                ..EventFilter::default()
            })?;
            let episodes = store.events(&EventFilter {
                sensor: Some(sensor.clone()),
                from: Some(now - ROLLUP_SPAN_NS),
                limit: EPISODE_LIMIT,
                ..EventFilter::default()
            })?;
            let known = !raw.is_empty() || !events.is_empty();
            Ok(Stored {
                known,
                raw,
                rollups,
                events,
                episodes,
            })
        })
        .await;
    let mut stored = match read {
        Ok(stored) => stored,
        Err(e) => return read_error_page(&e),
    };
    if !stored.known && live_sensor.is_none() {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No sensor with the id \u{201c}{id}\u{201d} is known to this gateway."),
        );
    }

    let mut b = String::with_capacity(32 * 1024);
    let _ = write!(b, "<h1>Sensor {}</h1>", Esc(&id));
    latest_values(
        &mut b,
        live_sensor.as_ref(),
        now,
        sensor_stale_after(state.window_secs),
    );

    // From the live view, not the store: it is current and not cut by the event limit.
    let mut active: Vec<AnomalyEvent> = snapshot
        .active_events
        .iter()
        .filter(|e| e.sensor == id)
        .cloned()
        .collect();
    active_first(&mut active);
    let _ = write!(
        b,
        "<section id=\"anomalies\"><h2>Active anomalies ({})</h2>",
        active.len()
    );
    let acks = ack::Column::read(&state, &active, &sensor_href(&id)).await;
    anomaly_table(
        &mut b,
        &active,
        now,
        Columns { sensor: false },
        &acks,
        "<p class=\"ok\">No active anomalies.</p>",
    );
    b.push_str("</section>");

    // The live view's active episodes replace their stored state (they may have moved on).
    stored
        .episodes
        .retain(|e| !active.iter().any(|a| a.id == e.id));
    stored.episodes.extend(active.iter().cloned());
    stored
        .rollups
        .sort_by(|a, b| (&a.series.field, a.start).cmp(&(&b.series.field, b.start)));
    charts(&mut b, &id, &stored, now);

    let _ = write!(
        b,
        "<h2>Rollups of the last hour <span class=\"muted\">({} s windows)</span></h2>",
        state.window_secs
    );
    let hour: Vec<&Rollup> = stored
        .rollups
        .iter()
        .filter(|r| r.start >= now - RAW_SPAN_NS)
        .collect();
    rollup_tables(&mut b, &hour);

    let _ = write!(
        b,
        "<section id=\"history\"><h2>Events (latest {EVENT_LIMIT}) \
         <a class=\"muted\" href=\"/events?sensor={}\">all, with filters</a></h2>",
        Attr(&id)
    );
    let acks = ack::Column::read(&state, &stored.events, &sensor_href(&id)).await;
    anomaly_table(
        &mut b,
        &stored.events,
        now,
        Columns { sensor: false },
        &acks,
        "<p class=\"muted\">No events stored.</p>",
    );
    b.push_str("</section>");

    let title = format!("{id} · edgewatch {}", state.gateway_id);
    respond(
        &headers,
        Rendered {
            status: StatusCode::OK,
            title: &title,
            nav: Nav::Other,
            gateway_id: &state.gateway_id,
            live: &live,
            controls: "",
            content: &b,
        },
    )
}

fn latest_values(b: &mut String, sensor: Option<&SensorState>, now: TimeNs, stale_after: i64) {
    let Some(s) = sensor else {
        b.push_str("<p class=\"muted\">No reading since the gateway started.</p>");
        return;
    };
    let _ = write!(
        b,
        "<div class=\"meta\"><span>source {}</span>",
        Esc(&s.source)
    );
    for (k, v) in &s.tags {
        let _ = write!(b, "<span>{}={}</span>", Esc(k), Esc(v));
    }
    b.push_str("</div><h2>Latest values</h2>");
    b.push_str(
        "<div class=\"scroll\"><table id=\"latest\"><tr><th>Field</th><th class=\"num\">Value</th>\
         <th>Age</th><th class=\"num\">Rolling avg</th><th>Quality</th></tr>",
    );
    for (name, f) in &s.fields {
        b.push_str(row_open(now, f, stale_after));
        field_cells(b, name, f, now);
        b.push_str("</tr>");
    }
    b.push_str("</table></div>");
}

/// Per field: the raw readings of the last hour and the rollups of the last 24 hours, each
/// with the field's episodes shaded.
fn charts(b: &mut String, id: &str, stored: &Stored, now: TimeNs) {
    b.push_str("<section id=\"charts\"><h2>Charts <span class=\"muted\">(UTC)</span></h2>");
    if stored.raw.is_empty() {
        b.push_str("<p class=\"muted\">No stored data to chart.</p>");
    }
    for (field, buckets) in &stored.raw {
        let episodes: Vec<Episode> = stored
            .episodes
            .iter()
            .filter(|e| e.field == *field)
            .map(|e| Episode {
                id: e.id,
                from: e.raised_at,
                to: e.cleared_at,
                severity: e.severity.as_str(),
                label: format!(
                    "{} {}: {} (raised {}{})",
                    e.severity.as_str(),
                    e.rule,
                    e.message,
                    html::clock(e.raised_at),
                    e.cleared_at.map_or_else(
                        || ", active".to_string(),
                        |c| format!(", cleared {}", html::clock(c))
                    ),
                ),
            })
            .collect();
        let points = buckets.points();
        let rollups: Vec<Rollup> = stored
            .rollups
            .iter()
            .filter(|r| *r.series.field == **field)
            .cloned()
            .collect();
        let band = chart::band(&rollups, now - ROLLUP_SPAN_NS, now, MAX_POINTS);
        let _ = write!(
            b,
            "<div class=\"field-charts\" data-field=\"{}\"><h3>{}</h3><div class=\"charts\">\
             <div class=\"chart-wrap\"><h4>Raw readings, last hour \
             <span class=\"muted\">({} readings{})</span></h4>",
            Esc(field),
            Esc(field),
            html::count(buckets.readings),
            if buckets.skipped > 0 {
                format!(", {} not drawn (not finite)", html::count(buckets.skipped))
            } else {
                String::new()
            },
        );
        b.push_str(&chart::svg(&Chart {
            label: &format!("{id} {field}: raw readings of the last hour"),
            kind: "raw",
            from: now - RAW_SPAN_NS,
            to: now,
            line: &points,
            band: &[],
            episodes: &episodes,
        }));
        let _ = write!(
            b,
            "</div><div class=\"chart-wrap\"><h4>Rollups, last 24 hours \
             <span class=\"muted\">(min–max band and mean of {} windows)</span></h4>",
            html::count(rollups.len() as u64),
        );
        b.push_str(&chart::svg(&Chart {
            label: &format!("{id} {field}: rollups of the last 24 hours"),
            kind: "rollup",
            from: now - ROLLUP_SPAN_NS,
            to: now,
            line: &[],
            band: &band,
            episodes: &episodes,
        }));
        b.push_str("</div></div></div>");
    }
    b.push_str("</section>");
}

/// One table per field, newest window first; `rollups` are sorted by field then start.
fn rollup_tables(b: &mut String, rollups: &[&Rollup]) {
    if rollups.is_empty() {
        b.push_str("<p class=\"muted\">No rollups stored for the last hour.</p>");
        return;
    }
    for group in rollups.chunk_by(|a, b| a.series.field == b.series.field) {
        let _ = write!(
            b,
            "<details><summary>{} ({} windows)</summary><div class=\"scroll\"><table>\
             <tr><th>Window start</th><th class=\"num\">Count</th><th class=\"num\">Mean</th>\
             <th class=\"num\">Min</th><th class=\"num\">Max</th><th class=\"num\">Std dev</th>\
             <th>Quality</th></tr>",
            Esc(&group[0].series.field),
            group.len(),
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
        b.push_str("</table></div></details>");
    }
}
