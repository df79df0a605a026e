//! The one anomaly table of every page: active anomalies on the overview and a sensor's page,
//! the history on the events page and a sensor's page. One function, so that a column added
//! here (an acknowledgement, say) appears everywhere.
//!
//! Hooks for tests and browsers: `table.anomalies`, rows `tr.anomaly.active` or
//! `tr.anomaly.cleared` with the severity as a class and `data-event-id`. The last column is
//! the operator's acknowledgement (`web/ack.rs`): "acknowledged <time>: <note>", or for an
//! active event a link to the form (`a.ack-link`) when an operator token is configured.

use std::fmt::Write;

use crate::model::{AnomalyEvent, TimeNs};
use crate::web::ack;
use crate::web::html::{self, Esc, sensor_href};

/// Which columns an anomaly table shows.
#[derive(Clone, Copy, Debug)]
pub struct Columns {
    /// The sensor, linked to its page (left out on the sensor's own page).
    pub sensor: bool,
}

/// Active anomalies in the order a technician handles them: critical first, then the
/// longest active.
pub fn active_first(events: &mut [AnomalyEvent]) {
    events.sort_by_key(|e| {
        (
            e.cleared_at.is_some(),
            std::cmp::Reverse(e.severity as u8),
            e.raised_at,
        )
    });
}

/// Renders `events` in the given order, or `empty` (a short HTML fragment) when there are none.
pub fn anomaly_table(
    b: &mut String,
    events: &[AnomalyEvent],
    now: TimeNs,
    columns: Columns,
    acks: &ack::Column,
    empty: &str,
) {
    if events.is_empty() {
        b.push_str(empty);
        return;
    }
    b.push_str("<div class=\"scroll\"><table class=\"anomalies\"><tr><th>Severity</th>");
    if columns.sensor {
        b.push_str("<th>Sensor</th>");
    }
    b.push_str(
        "<th>Field</th><th>Rule</th><th class=\"num\">Value</th><th class=\"num\">Peak</th>\
         <th>Raised</th><th>State</th><th>Message</th>",
    );
    acks.header(b);
    b.push_str("</tr>");
    for e in events {
        let state = if e.is_active() { "active" } else { "cleared" };
        let _ = write!(
            b,
            "<tr class=\"anomaly {state} {}\" data-event-id=\"{}\"><td><span class=\"sev\">{}</span></td>",
            e.severity.as_str(),
            e.id,
            e.severity.as_str(),
        );
        if columns.sensor {
            let _ = write!(
                b,
                "<td class=\"sensor\"><a href=\"{}\">{}</a></td>",
                sensor_href(&e.sensor),
                Esc(&e.sensor)
            );
        }
        let since = match e.cleared_at {
            None => format!("active for {}", html::duration(now - e.raised_at)),
            Some(cleared) => format!(
                "cleared {} (after {})",
                html::age(now, cleared),
                html::duration(cleared - e.raised_at)
            ),
        };
        let _ = write!(
            b,
            "<td class=\"field\">{}</td><td class=\"rule\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td title=\"{}\">{}</td><td class=\"since\">{}</td>\
             <td class=\"err\">{}</td>",
            Esc(&e.field),
            Esc(&e.rule),
            html::value(e.value),
            html::value(e.peak_value),
            Esc(&html::clock(e.raised_at)),
            html::age(now, e.raised_at),
            since,
            Esc(&e.message),
        );
        acks.cell(b, e);
        b.push_str("</tr>");
    }
    b.push_str("</table></div>");
}
