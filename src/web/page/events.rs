//! `GET /events?sensor=&rule=&state=&from=&to=&limit=`: the anomaly history, newest first,
//! filtered by a plain GET form so that it works without JavaScript and a filtered view can
//! be bookmarked or sent as a link.
//!
//! `from` and `to` are RFC 3339 or what a `datetime-local` input sends (`2025-01-15T10:00`,
//! taken as UTC, which the form says). The time range selects the episodes that overlap it
//! (see `EventFilter`). A malformed value is a 400 page that names it, with the form kept.

use std::collections::BTreeSet;
use std::fmt::Write;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::anomalies::{Columns, anomaly_table};
use super::{Rendered, live_state, read_error_page, respond};
use crate::model::{NS_PER_SEC, TimeNs, format_time, now_ns, parse_time};
use crate::store::EventFilter;
use crate::web::html::{Esc, Nav};
use crate::web::{Shared, ack};

/// Rows shown when the form does not say.
const DEFAULT_LIMIT: usize = 200;
/// Most rows one page shows.
const MAX_LIMIT: usize = 1_000;

/// The form's values as given, to show them back.
#[derive(Debug, Default)]
struct Form {
    sensor: String,
    rule: String,
    state: String,
    from: String,
    to: String,
    limit: String,
}

impl Form {
    /// The last value of each known parameter; unknown ones are ignored (this is a page for
    /// people, not the API).
    fn from_query(pairs: Vec<(String, String)>) -> Form {
        let mut form = Form::default();
        for (name, value) in pairs {
            let value = value.trim().to_string();
            match name.as_str() {
                "sensor" => form.sensor = value,
                "rule" => form.rule = value,
                "state" => form.state = value,
                "from" => form.from = value,
                "to" => form.to = value,
                "limit" => form.limit = value,
                _ => {}
            }
        }
        form
    }

    /// The store filter, or the first problem, naming its field.
    fn filter(&self) -> Result<EventFilter, String> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let active = match self.state.as_str() {
            "" | "any" => None,
            "active" => Some(true),
            "cleared" => Some(false),
            _ => return Err("state: expected active, cleared or any".into()),
        };
        let from = time_field("from", &self.from)?;
        let to = time_field("to", &self.to)?;
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err("from: must be before to".into());
        }
        let limit = match self.limit.as_str() {
            "" => DEFAULT_LIMIT,
            s => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "limit: expected a whole number from 1 to {MAX_LIMIT}"
                    ));
                }
            },
        };
        Ok(EventFilter {
            active,
            sensor: non_empty(&self.sensor),
            rule: non_empty(&self.rule),
            from,
            to,
            limit,
        })
    }
}

/// A time field: RFC 3339, or a `datetime-local` value (no zone: UTC).
fn time_field(name: &str, value: &str) -> Result<Option<TimeNs>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    // An unencoded `+` of an offset arrives as a space; RFC 3339 has no space.
    let value = value.replace(' ', "+");
    let parsed = parse_time(&value)
        .or_else(|| parse_time(&format!("{value}Z")))
        .or_else(|| parse_time(&format!("{value}:00Z")));
    parsed
        .map(Some)
        .ok_or_else(|| format!("{name}: not a time (expected 2025-01-15T10:00 or RFC 3339)"))
}

/// A time as a `datetime-local` value in UTC, to the second.
fn local_input(t: TimeNs) -> String {
    let s = format_time(t.div_euclid(NS_PER_SEC) * NS_PER_SEC);
    s.trim_end_matches('Z').to_string()
}

/// `GET /events`.
pub async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let snapshot = state.snapshot();
    let now = now_ns();
    let live = live_state(&snapshot, now);
    let form = match query {
        Ok(Query(pairs)) => Form::from_query(pairs),
        Err(_) => Form::default(),
    };
    let filter = form.filter();

    let mut sensors: BTreeSet<String> = snapshot.sensors.keys().cloned().collect();
    let mut b = String::with_capacity(16 * 1024);
    let mut status = StatusCode::OK;
    match filter {
        Err(problem) => {
            status = StatusCode::BAD_REQUEST;
            let _ = write!(
                b,
                "<p class=\"err\" id=\"filter-error\">Cannot filter: {}</p>",
                Esc(&problem)
            );
        }
        Ok(filter) => {
            let limit = filter.limit;
            let read = state
                .read_store("events page", move |store| {
                    let events = store.events(&EventFilter {
                        limit: limit + 1,
                        ..filter
                    })?;
                    let series = store.series()?;
                    Ok((events, series))
                })
                .await;
            let (mut events, series) = match read {
                Ok(found) => found,
                Err(e) => return read_error_page(&e),
            };
            sensors.extend(series.into_iter().map(|(k, _)| k.sensor.to_string()));
            let more = events.len() > limit;
            events.truncate(limit);
            let _ = write!(
                b,
                "<p class=\"meta\" id=\"event-count\"><span>{} event{} {}, newest first</span></p>",
                events.len(),
                if events.len() == 1 { "" } else { "s" },
                if more {
                    "shown (the limit; more match, narrow the filter)"
                } else {
                    "match"
                },
            );
            b.push_str("<section id=\"events\">");
            let acks = ack::Column::read(&state, &events, "/events").await;
            anomaly_table(
                &mut b,
                &events,
                now,
                Columns { sensor: true },
                &acks,
                "<p class=\"muted\">No events match.</p>",
            );
            b.push_str("</section>");
        }
    }

    // The heading goes above the form, which stays outside `<main>`.
    let controls = format!("<h1>Events</h1>{}", form_html(&form, &sensors));
    let title = format!("Events · edgewatch {}", state.gateway_id);
    respond(
        &headers,
        Rendered {
            status,
            title: &title,
            nav: Nav::Events,
            gateway_id: &state.gateway_id,
            live: &live,
            controls: &controls,
            content: &b,
        },
    )
}

/// The filter form, filled with what was asked. It sits outside `<main>`, so live updates
/// never replace what someone is typing.
fn form_html(form: &Form, sensors: &BTreeSet<String>) -> String {
    let mut b = String::with_capacity(2048 + sensors.len() * 48);
    // A valid time is shown back in the input's own format; anything else as typed.
    let time_value = |v: &str| {
        time_field("", v)
            .ok()
            .flatten()
            .map_or_else(|| v.to_string(), local_input)
    };
    let _ = write!(
        b,
        "<form class=\"filters\" id=\"filters\" method=\"get\" action=\"/events\">\
         <label>Sensor<input name=\"sensor\" list=\"sensor-ids\" value=\"{}\"></label>\
         <label>Rule<input name=\"rule\" value=\"{}\"></label><label>State<select name=\"state\">",
        Esc(&form.sensor),
        Esc(&form.rule),
    );
    for (value, name) in [("", "any"), ("active", "active"), ("cleared", "cleared")] {
        let selected = if form.state == value || (value.is_empty() && form.state == "any") {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option value=\"{value}\"{selected}>{name}</option>");
    }
    let _ = write!(
        b,
        "</select></label>\
         <label>From (UTC)<input type=\"datetime-local\" step=\"1\" name=\"from\" value=\"{}\"></label>\
         <label>To (UTC)<input type=\"datetime-local\" step=\"1\" name=\"to\" value=\"{}\"></label>\
         <label>Limit<input type=\"number\" name=\"limit\" min=\"1\" max=\"{MAX_LIMIT}\" \
         placeholder=\"{DEFAULT_LIMIT}\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button><a href=\"/events\">Clear</a></form>\
         <datalist id=\"sensor-ids\">",
        Esc(&time_value(&form.from)),
        Esc(&time_value(&form.to)),
        Esc(&form.limit),
    );
    for s in sensors {
        let _ = write!(b, "<option value=\"{}\">", Esc(s));
    }
    b.push_str("</datalist>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form::from_query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_form_becomes_a_store_filter_and_names_a_bad_field() {
        let f = form(&[
            ("sensor", " p-101 "),
            ("rule", "limit:hot"),
            ("state", "cleared"),
            ("from", "2025-01-15T10:00"),
            ("to", "2025-01-15T11:00:30+01:00"),
            ("limit", "5"),
            ("unknown", "ignored"),
        ])
        .filter()
        .unwrap();
        assert_eq!(f.sensor.as_deref(), Some("p-101"));
        assert_eq!(f.rule.as_deref(), Some("limit:hot"));
        assert_eq!(f.active, Some(false));
        assert_eq!(f.from, parse_time("2025-01-15T10:00:00Z"));
        assert_eq!(f.to, parse_time("2025-01-15T10:00:30Z"));
        assert_eq!(f.limit, 5);

        let empty = form(&[("sensor", ""), ("state", "any")]).filter().unwrap();
        assert_eq!((empty.sensor, empty.active, empty.limit), (None, None, 200));

        for (pairs, problem) in [
            (&[("state", "maybe")][..], "state:"),
            (&[("from", "yesterday")][..], "from:"),
            (
                &[("from", "2025-01-15T11:00"), ("to", "2025-01-15T10:00")][..],
                "from:",
            ),
            (&[("limit", "0")][..], "limit:"),
        ] {
            let error = form(pairs).filter().unwrap_err();
            assert!(error.starts_with(problem), "{error}");
        }
        assert_eq!(
            local_input(parse_time("2025-01-15T10:00:00.5Z").unwrap()),
            "2025-01-15T10:00:00"
        );
    }
}
