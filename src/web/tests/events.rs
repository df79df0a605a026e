//! The anomaly history: the events page's filter form and `/api/v1/events`'s new filters
//! (rule, time range) give exactly the expected events, newest first.

use serde_json::Value;

use super::{HOSTILE_ID, Harness, MINUTE, event, snapshot, t0};
use crate::model::format_time;
use crate::store::WriteBatch;

/// Five episodes: (id, sensor, field, raised at t0 + minutes, still active).
///
/// | id | sensor | rule             | episode            |
/// |----|--------|------------------|--------------------|
/// | 1  | p-101  | vibration-high   | 10:00 – 10:01      |
/// | 2  | p-101  | temperature-high | 10:10 – active     |
/// | 3  | p-102  | pressure-high    | 10:20 – 10:21      |
/// | 4  | p-101  | vibration-high   | 10:30 – 10:31      |
/// | 5  | p-102  | vibration-high   | 10:40 – active     |
async fn harness_with_history() -> Harness {
    let h = Harness::start(snapshot()).await;
    let t = t0();
    h.write(WriteBatch {
        events: vec![
            event(1, "p-101", "vibration", t, true),
            event(2, "p-101", "temperature", t + 10 * MINUTE, false),
            event(3, "p-102", "pressure", t + 20 * MINUTE, true),
            event(4, "p-101", "vibration", t + 30 * MINUTE, true),
            event(5, "p-102", "vibration", t + 40 * MINUTE, false),
        ],
        ..WriteBatch::default()
    });
    h
}

/// The event ids of the page's anomaly rows, in page order.
fn row_ids(page: &str) -> Vec<u64> {
    page.split("<tr class=\"anomaly ")
        .skip(1)
        .map(|row| {
            let at = row.find("data-event-id=\"").unwrap() + "data-event-id=\"".len();
            row[at..row[at..].find('"').unwrap() + at].parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn events_page_filters_by_sensor_rule_state_and_time_range() {
    let h = harness_with_history().await;
    let cases: [(&str, &[u64]); 10] = [
        ("", &[5, 4, 3, 2, 1]),
        ("?sensor=p-101", &[4, 2, 1]),
        ("?rule=vibration-high", &[5, 4, 1]),
        ("?state=active", &[5, 2]),
        ("?state=cleared", &[4, 3, 1]),
        (
            "?state=any&sensor=&rule=&from=&to=&limit=",
            &[5, 4, 3, 2, 1],
        ),
        // Episodes overlapping 10:15–10:35: 2 (still active), 3 and 4.
        ("?from=2025-01-15T10:15&to=2025-01-15T10:35", &[4, 3, 2]),
        (
            "?from=2025-01-15T10:15:00Z&to=2025-01-15T11:35:00%2B01:00",
            &[4, 3, 2],
        ),
        (
            "?sensor=p-101&rule=vibration-high&state=cleared&from=2025-01-15T10:05",
            &[4],
        ),
        ("?sensor=nobody", &[]),
    ];
    for (query, want) in cases {
        let (status, page) = h.text(&format!("/events{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(row_ids(&page), want, "{query}");
        let count = format!(
            "{} event{} match",
            want.len(),
            if want.len() == 1 { "" } else { "s" }
        );
        assert!(page.contains(&count), "{query}: {count}");
    }

    let (_, page) = h.text("/events?limit=2").await;
    assert_eq!(row_ids(&page), [5, 4]);
    assert!(page.contains("2 events shown (the limit; more match"));

    let (_, page) = h.text("/events?state=active").await;
    assert!(page.contains("<tr class=\"anomaly active critical\" data-event-id=\"5\">"));
    assert!(page.contains("<option value=\"active\" selected>active</option>"));
    let (_, page) = h.text("/events?state=cleared").await;
    assert!(page.contains("<tr class=\"anomaly cleared critical\" data-event-id=\"4\">"));
    assert!(page.contains("cleared "), "how long ago it cleared");
}

#[tokio::test]
async fn events_page_keeps_the_form_and_names_a_bad_field_with_400() {
    let h = harness_with_history().await;
    let (status, page) = h.text("/events?from=yesterday&sensor=p-101").await;
    assert_eq!(status, 400);
    assert!(page.contains("<p class=\"err\" id=\"filter-error\">Cannot filter: from: not a time"));
    assert!(page.contains("name=\"from\" value=\"yesterday\""));
    assert!(page.contains("name=\"sensor\" list=\"sensor-ids\" value=\"p-101\""));
    assert!(row_ids(&page).is_empty());

    let (status, _) = h
        .text("/events?from=2025-01-15T11:00&to=2025-01-15T10:00")
        .await;
    assert_eq!(status, 400);

    // A valid time is shown back in the input's format, in UTC.
    let (_, page) = h.text("/events?from=2025-01-15T11:15:00%2B01:00").await;
    assert!(page.contains("name=\"from\" value=\"2025-01-15T10:15:00\""));

    // Outside text in the form and the sensor list is escaped.
    let hostile = crate::web::html::Attr(HOSTILE_ID).to_string();
    let (status, page) = h.text(&format!("/events?sensor={hostile}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("value=\"&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;/x\""));
}

#[tokio::test]
async fn events_api_filters_by_rule_and_by_episodes_overlapping_from_to() {
    let h = harness_with_history().await;
    let ids = |body: &Value| -> Vec<u64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    let (status, body) = h.json("/api/v1/events?rule=vibration-high").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), [5, 4, 1]);

    let from = format_time(t0() + 15 * MINUTE);
    let to = format_time(t0() + 35 * MINUTE);
    let (status, body) = h.json(&format!("/api/v1/events?from={from}&to={to}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), [4, 3, 2]);
    let (_, body) = h
        .json(&format!(
            "/api/v1/events?from={from}&active=false&sensor=p-101"
        ))
        .await;
    assert_eq!(ids(&body), [4]);

    let (status, body) = h.json(&format!("/api/v1/events?from={to}&to={from}")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "from: must be before to");
    let (status, body) = h.json("/api/v1/events?to=soon").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "to: not an RFC 3339 time");
}
