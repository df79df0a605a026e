//! `GET /devices`: the Modbus sources (`modbus_tcp`, `modbus_rtu`) with a table of their
//! units (state, last success, failures in a row, latency, requests per cycle, overruns, bad
//! ranges, last error), read from the `uN.*` health details the Modbus task publishes; then
//! the other sources' connection state in brief.
//!
//! Hooks: `section.device[data-source]`, `table.units`, `tr.unit[data-unit]` with cells
//! `td.state`, `td.latency`, `td.overruns`, ...

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{Rendered, live_state, respond};
use crate::live::SourceHealth;
use crate::model::{TimeNs, now_ns, parse_time};
use crate::web::Shared;
use crate::web::html::{self, Esc, Nav};

/// The unit columns, in order: detail key after `uN.`, heading, cell class.
const UNIT_COLUMNS: [(&str, &str, &str); 8] = [
    ("state", "State", "state"),
    ("last_success", "Last success", "last-success"),
    ("consecutive_failures", "Failures in a row", "num failures"),
    ("latency_ms", "Latency ms", "num latency"),
    ("requests_per_cycle", "Requests/cycle", "num requests"),
    ("overruns", "Overruns", "num overruns"),
    ("bad_ranges", "Bad ranges", "bad-ranges"),
    ("last_error", "Last error", "err last-error"),
];

/// Whether a source is a Modbus source, whose units this page lists.
pub fn is_modbus(s: &SourceHealth) -> bool {
    matches!(s.kind.as_str(), "modbus_tcp" | "modbus_rtu")
}

/// A Modbus unit's health details, as the task published them.
struct Unit<'a> {
    id: &'a str,
    details: Vec<(&'a str, &'a str)>,
}

impl<'a> Unit<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.details
            .iter()
            .find_map(|(k, v)| (*k == key).then_some(*v))
    }
}

/// Splits a Modbus source's details into the source's own (`endpoint`, `poll_groups`, ...)
/// and its units' (`uN.key`), keeping the published order.
fn split_details(details: &[(String, String)]) -> (Vec<(&str, &str)>, Vec<Unit<'_>>) {
    let mut general = Vec::new();
    let mut units: Vec<Unit<'_>> = Vec::new();
    for (key, value) in details {
        let unit = key.strip_prefix('u').and_then(|rest| rest.split_once('.'));
        match unit {
            Some((id, name)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                match units.iter_mut().find(|u| u.id == id) {
                    Some(u) => u.details.push((name, value)),
                    None => units.push(Unit {
                        id,
                        details: vec![(name, value)],
                    }),
                }
            }
            _ => general.push((key.as_str(), value.as_str())),
        }
    }
    (general, units)
}

/// "3 units: 2 up, 1 down", for the overview.
pub fn unit_summary(s: &SourceHealth) -> String {
    let (_, units) = split_details(&s.details);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for u in &units {
        let state = u.get("state").unwrap_or("unknown");
        match counts.iter_mut().find(|(k, _)| *k == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    counts.sort_by_key(|(state, _)| *state != "up");
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "{} unit{}: {}",
        units.len(),
        if units.len() == 1 { "" } else { "s" },
        if parts.is_empty() {
            "none reported yet".to_string()
        } else {
            parts.join(", ")
        }
    )
}

/// `GET /devices`.
pub async fn devices(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot();
    let sources = state.sources.snapshot();
    let now = now_ns();
    let live = live_state(&snapshot, now);

    let mut b = String::with_capacity(16 * 1024);
    let modbus: Vec<&SourceHealth> = sources.iter().filter(|s| is_modbus(s)).collect();
    let _ = write!(b, "<h1>Devices</h1><h2>Modbus ({})</h2>", modbus.len());
    if modbus.is_empty() {
        b.push_str("<p class=\"muted\">No Modbus source configured.</p>");
    }
    for s in &modbus {
        device_section(&mut b, s, now);
    }

    let others: Vec<&SourceHealth> = sources.iter().filter(|s| !is_modbus(s)).collect();
    if !others.is_empty() {
        b.push_str("<h2 id=\"other-sources\">Other sources</h2>");
        other_sources(&mut b, &others, now);
    }

    let title = format!("Devices · edgewatch {}", state.gateway_id);
    respond(
        &headers,
        Rendered {
            status: StatusCode::OK,
            title: &title,
            nav: Nav::Devices,
            gateway_id: &state.gateway_id,
            live: &live,
            controls: "",
            content: &b,
        },
    )
}

fn state_class(state: &str) -> &'static str {
    match state {
        "up" => "ok",
        "down" | "misconfigured" | "degraded" => "bad",
        _ => "muted",
    }
}

fn last_success(now: TimeNs, t: Option<TimeNs>) -> String {
    t.map_or_else(|| "never".to_string(), |t| html::age(now, t))
}

fn device_section(b: &mut String, s: &SourceHealth, now: TimeNs) {
    let (general, units) = split_details(&s.details);
    let _ = write!(
        b,
        "<section class=\"device\" data-source=\"{}\"><h3>{} <span class=\"muted\">{}</span> \
         <span class=\"{} source-state\">{}</span></h3><dl>",
        Esc(&s.name),
        Esc(&s.name),
        Esc(&s.kind),
        state_class(&s.state),
        Esc(&s.state),
    );
    for (key, value) in general {
        let _ = write!(
            b,
            "<dt>{}</dt><dd>{}</dd>",
            Esc(&key.replace('_', " ")),
            Esc(value)
        );
    }
    let _ = write!(
        b,
        "<dt>readings</dt><dd>{}</dd><dt>errors</dt><dd>{}</dd><dt>last success</dt><dd>{}</dd>",
        html::count(s.readings),
        html::count(s.errors),
        last_success(now, s.last_success),
    );
    if let Some(error) = &s.last_error {
        let _ = write!(
            b,
            "<dt>last error</dt><dd class=\"err\">{}</dd>",
            Esc(error)
        );
    }
    b.push_str("</dl>");
    if units.is_empty() {
        b.push_str("<p class=\"muted\">No unit reported yet.</p></section>");
        return;
    }
    b.push_str("<div class=\"scroll\"><table class=\"units\"><tr><th>Unit</th>");
    for (_, heading, class) in UNIT_COLUMNS {
        let num = if class.starts_with("num") {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(b, "<th{num}>{heading}</th>");
    }
    b.push_str("<th>More</th></tr>");
    for unit in &units {
        let state = unit.get("state").unwrap_or("unknown");
        let _ = write!(
            b,
            "<tr class=\"unit {}\" data-unit=\"{}\"><td class=\"unit-id\">{}</td>",
            state_class(state),
            Esc(unit.id),
            Esc(unit.id),
        );
        for (key, _, class) in UNIT_COLUMNS {
            let value = unit.get(key).unwrap_or("–");
            match key {
                "state" => {
                    let _ = write!(
                        b,
                        "<td class=\"state {}\">{}</td>",
                        state_class(value),
                        Esc(value)
                    );
                }
                "last_success" => {
                    let shown =
                        parse_time(value).map_or_else(|| value.to_string(), |t| html::age(now, t));
                    let _ = write!(
                        b,
                        "<td class=\"{class}\" title=\"{}\">{}</td>",
                        Esc(value),
                        Esc(&shown)
                    );
                }
                "last_error" if value == "none" => {
                    let _ = write!(b, "<td class=\"{class} muted\">none</td>");
                }
                _ => {
                    let _ = write!(b, "<td class=\"{class}\">{}</td>", Esc(value));
                }
            }
        }
        b.push_str("<td class=\"muted more\">");
        let extra = unit
            .details
            .iter()
            .filter(|(k, _)| !UNIT_COLUMNS.iter().any(|(c, _, _)| c == k));
        for (i, (k, v)) in extra.enumerate() {
            if i > 0 {
                b.push_str("<br>");
            }
            let _ = write!(b, "{} {}", Esc(k), Esc(v));
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</table></div></section>");
}

/// MQTT, HTTP and simulated sources: state and the details they publish, in brief.
fn other_sources(b: &mut String, sources: &[&SourceHealth], now: TimeNs) {
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Source</th><th>Type</th><th>State</th>\
         <th>Last success</th><th class=\"num\">Readings</th><th class=\"num\">Errors</th>\
         <th>Details</th><th>Last error</th></tr>",
    );
    for s in sources {
        let _ = write!(
            b,
            "<tr class=\"source\" data-source=\"{}\"><td>{}</td><td>{}</td>\
             <td class=\"state {}\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"muted\">",
            Esc(&s.name),
            Esc(&s.name),
            Esc(&s.kind),
            state_class(&s.state),
            Esc(&s.state),
            last_success(now, s.last_success),
            html::count(s.readings),
            html::count(s.errors),
        );
        for (i, (k, v)) in s.details.iter().enumerate() {
            if i > 0 {
                b.push_str("<br>");
            }
            let _ = write!(b, "{} {}", Esc(k), Esc(v));
        }
        let _ = write!(
            b,
            "</td><td class=\"err\">{}</td></tr>",
            Esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table></div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_details_are_grouped_by_unit_and_the_rest_kept_in_order() {
        let details: Vec<(String, String)> = [
            ("endpoint", "10.0.0.5:502"),
            ("u1.state", "up"),
            ("u12.state", "down"),
            ("u1.latency_ms", "3.5"),
            ("units", "1, 12"),
            ("uplink.x", "not a unit"),
            ("u.state", "not a unit either"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (general, units) = split_details(&details);
        assert_eq!(
            general,
            [
                ("endpoint", "10.0.0.5:502"),
                ("units", "1, 12"),
                ("uplink.x", "not a unit"),
                ("u.state", "not a unit either")
            ]
        );
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].id, "1");
        assert_eq!(units[0].get("latency_ms"), Some("3.5"));
        assert_eq!(units[1].get("state"), Some("down"));
        let s = SourceHealth {
            details,
            ..SourceHealth::default()
        };
        assert_eq!(unit_summary(&s), "2 units: 1 up, 1 down");
    }
}
