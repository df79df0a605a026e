//! The technicians' pages over HTTP: navigation, the devices page from a health registry,
//! the sensor page's charts, partial renders for live updates, and stale marking.

use std::sync::Arc;

use super::{HOSTILE_ID, Harness, MINUTE, event, rollup, snapshot, sources};
use crate::live::{LiveSnapshot, SourceRegistry};
use crate::model::{NS_PER_SEC, Quality, Reading, SeriesKey, format_time, now_ns};
use crate::store::WriteBatch;

/// The text of the first element that starts with `open`, up to the next `close`.
fn element<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page
        .find(open)
        .unwrap_or_else(|| panic!("{open} missing from {page}"));
    let rest = &page[start..];
    let end = rest[open.len()..]
        .find(close)
        .map_or(rest.len(), |i| open.len() + i + close.len());
    &rest[..end]
}

#[tokio::test]
async fn every_page_has_the_nav_and_marks_its_own_entry() {
    let h = Harness::start(snapshot()).await;
    for (path, current) in [
        ("/", "<a href=\"/\" aria-current=\"page\">Overview</a>"),
        (
            "/devices",
            "<a href=\"/devices\" aria-current=\"page\">Devices</a>",
        ),
        (
            "/events",
            "<a href=\"/events\" aria-current=\"page\">Events</a>",
        ),
    ] {
        let (status, page) = h.text(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(page.contains(current), "{path}: {current} missing");
        assert_eq!(page.matches("aria-current=\"page\"").count(), 1, "{path}");
        for href in ["href=\"/\"", "href=\"/devices\"", "href=\"/events\""] {
            assert!(page.contains(href), "{path}: {href} missing");
        }
    }
    let (status, page) = h.text("/sensors/p-101").await;
    assert_eq!(status, 200);
    assert!(page.contains("<nav><a href=\"/\">Overview</a>"));
    assert!(!page.contains("aria-current=\"page\""));
}

fn modbus_registry() -> SourceRegistry {
    let registry = sources();
    registry.register("boiler", "modbus_rtu").update(|s| {
        s.state = "degraded".into();
        s.readings = 4_200;
        s.set_detail("endpoint", "/dev/ttyUSB0 19200 8N1");
        s.set_detail("units", "1, 7");
        s.set_detail("poll_groups", "1000 ms: 5 points in 2 reads");
        s.set_detail("u1.state", "up");
        s.set_detail("u1.last_success", format_time(now_ns() - 3 * NS_PER_SEC));
        s.set_detail("u1.consecutive_failures", "0");
        s.set_detail("u1.last_error", "none");
        s.set_detail("u1.latency_ms", "12.5");
        s.set_detail("u1.requests_per_cycle", "2");
        s.set_detail("u1.overruns", "4");
        s.set_detail("u1.bad_ranges", "holding:5..6 (<pump>)");
        s.set_detail("u7.state", "down");
        s.set_detail("u7.last_success", "never");
        s.set_detail("u7.consecutive_failures", "9");
        s.set_detail("u7.last_error", "timeout after 500 ms <bus>");
        s.set_detail("u7.latency_ms", "-");
    });
    registry
}

#[tokio::test]
async fn devices_page_lists_each_modbus_unit_from_the_health_registry_as_a_table_row() {
    let h = Harness::start_with(snapshot(), modbus_registry()).await;
    let (status, page) = h.text("/devices").await;
    assert_eq!(status, 200);
    assert!(page.contains("<h2>Modbus (2)</h2>"), "press-1 and boiler");

    let boiler = element(
        &page,
        "<section class=\"device\" data-source=\"boiler\">",
        "</section>",
    );
    assert!(boiler.contains("<span class=\"bad source-state\">degraded</span>"));
    assert!(boiler.contains("<dt>endpoint</dt><dd>/dev/ttyUSB0 19200 8N1</dd>"));
    assert!(boiler.contains("<dt>poll groups</dt><dd>1000 ms: 5 points in 2 reads</dd>"));
    let u1 = element(boiler, "<tr class=\"unit ok\" data-unit=\"1\">", "</tr>");
    for cell in [
        "<td class=\"state ok\">up</td>",
        "<td class=\"num latency\">12.5</td>",
        "<td class=\"num requests\">2</td>",
        "<td class=\"num overruns\">4</td>",
        "<td class=\"num failures\">0</td>",
        "<td class=\"bad-ranges\">holding:5..6 (&lt;pump&gt;)</td>",
        "<td class=\"err last-error muted\">none</td>",
    ] {
        assert!(u1.contains(cell), "{cell} missing from {u1}");
    }
    assert!(u1.contains("s ago</td>"), "last success as an age: {u1}");
    let u7 = element(boiler, "<tr class=\"unit bad\" data-unit=\"7\">", "</tr>");
    assert!(u7.contains("<td class=\"state bad\">down</td>"));
    assert!(u7.contains("<td class=\"num failures\">9</td>"));
    assert!(u7.contains("timeout after 500 ms &lt;bus&gt;"));
    assert!(u7.contains(">never</td>"));
    assert_eq!(boiler.matches("<tr class=\"unit ").count(), 2);
    assert!(
        !page.contains("u1.state") && !page.contains("u7."),
        "no raw keys"
    );

    let press = element(
        &page,
        "<section class=\"device\" data-source=\"press-1\">",
        "</section>",
    );
    assert!(press.contains("No unit reported yet"));
    assert!(press.contains("connection refused &lt;10.0.0.5:502&gt;"));

    let others = element(&page, "<h2 id=\"other-sources\">", "</table>");
    assert!(others.contains("<tr class=\"source\" data-source=\"plant-broker\">"));
    assert!(others.contains("<td class=\"state ok\">up</td>"));
    assert!(others.contains("broker 127.0.0.1:1883 (tls)"));

    // The overview summarises the units and links here instead of listing `uN.*`.
    let (_, overview) = h.text("/").await;
    assert!(overview.contains("<a class=\"muted\" href=\"/devices\">2 units: 1 up, 1 down</a>"));
    assert!(!overview.contains("u1.latency_ms"));
}

#[tokio::test]
async fn sensor_page_charts_raw_readings_a_rollup_band_and_anomaly_episodes() {
    let h = Harness::start(snapshot()).await;
    let now = now_ns();
    let key = SeriesKey::new("p-101", "temperature");
    let mut raw: Vec<Reading> = (1..=100)
        .map(|i| Reading {
            series: key.clone(),
            time: now - i * 30 * NS_PER_SEC,
            value: 60.0 + (i % 10) as f64,
            quality: Quality::GOOD,
        })
        .collect();
    raw.push(Reading {
        series: key.clone(),
        time: now - 15 * NS_PER_SEC,
        value: f64::NAN,
        quality: Quality::NOT_FINITE,
    });
    // Older than the raw chart's hour: left out of it.
    raw.push(Reading {
        series: key.clone(),
        time: now - 2 * 3_600 * NS_PER_SEC,
        value: 1.0,
        quality: Quality::GOOD,
    });
    let hour = 60 * MINUTE;
    let rollups = (1..=10)
        .map(|i| rollup("p-101", "temperature", now - i * hour, &[60.0, 70.0]))
        .collect();
    let mut episode = event(21, "p-101", "temperature", now - 30 * MINUTE, true);
    episode.cleared_at = Some(now - 20 * MINUTE);
    h.write(WriteBatch {
        new_series: vec![(key.clone(), "plant-broker".into())],
        raw,
        rollups,
        events: vec![episode],
        ..WriteBatch::default()
    });

    let (status, page) = h.text("/sensors/p-101").await;
    assert_eq!(status, 200);
    let charts = element(
        &page,
        "<div class=\"field-charts\" data-field=\"temperature\">",
        "</div></div></div>",
    );
    assert!(
        charts.contains("(100 readings, 1 not drawn (not finite))"),
        "{charts}"
    );
    let raw_chart = element(charts, "<svg class=\"chart\" data-kind=\"raw\"", "</svg>");
    assert!(raw_chart.contains("data-points=\"100\""), "{raw_chart}");
    assert!(raw_chart.contains("<path class=\"raw\" d=\"M"));
    assert!(raw_chart.contains("<rect class=\"episode critical cleared\" data-event-id=\"21\""));
    let band_chart = element(
        charts,
        "<svg class=\"chart\" data-kind=\"rollup\"",
        "</svg>",
    );
    assert!(band_chart.contains("data-points=\"10\""), "{band_chart}");
    assert!(band_chart.contains("<path class=\"band\" d=\"M"));
    assert!(band_chart.contains("<path class=\"mean\" d=\"M"));
    assert!(band_chart.contains("data-event-id=\"21\""));
    // Labels of the value axis span the readings (60 to 69).
    assert!(
        raw_chart.contains(">60<") && raw_chart.contains(">70<"),
        "{raw_chart}"
    );

    // A field with no stored readings still gets its (empty) charts.
    let pressure = element(
        &page,
        "<div class=\"field-charts\" data-field=\"pressure\">",
        "</div></div></div>",
    );
    assert!(pressure.contains("data-points=\"0\""));
    assert!(pressure.contains("No data in this range"));

    // The stored episode is also a cleared row of the history.
    let history = element(&page, "<section id=\"history\">", "</section>");
    assert!(history.contains("<tr class=\"anomaly cleared critical\" data-event-id=\"21\">"));
    assert!(history.contains("href=\"/events?sensor=p-101\""));
}

#[tokio::test]
async fn active_anomalies_are_rows_in_the_anomalies_section_with_how_long_they_are_active() {
    let h = Harness::start(snapshot()).await;
    let (_, page) = h.text("/").await;
    let section = element(&page, "<section id=\"anomalies\">", "</section>");
    assert!(section.contains("<h2>Active anomalies (1)</h2>"));
    let row = element(
        section,
        "<tr class=\"anomaly active critical\" data-event-id=\"7\">",
        "</tr>",
    );
    assert!(
        row.contains("<td class=\"since\">active for 1 min 30 s</td>")
            || row.contains("active for 1 min 31 s"),
        "{row}"
    );
    assert!(row.contains("<td class=\"rule\">vibration-high</td>"));
    assert!(row.contains("<a href=\"/sensors/p-101\">p-101</a>"));
}

#[tokio::test]
async fn partial_requests_get_only_main_with_its_render_time_and_nothing_is_cached() {
    let h = Harness::start(snapshot()).await;
    for path in ["/", "/devices", "/events", "/sensors/p-101"] {
        let response = h
            .client
            .get(format!("{}{path}", h.base))
            .header("X-Partial", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["vary"], "X-Partial");
        let body = response.text().await.unwrap();
        assert!(
            body.starts_with("<main id=\"main\" data-generated-at=\""),
            "{path}: {body}"
        );
        assert!(body.ends_with("</main>"), "{path}");
        assert!(body.contains("data-stale=\"false\""), "{path}");
        assert!(!body.contains("<html") && !body.contains("<nav>") && !body.contains("<form"));
    }

    let (_, full) = h.text("/events").await;
    assert!(full.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
    assert!(full.contains("<div id=\"stale\" role=\"alert\" hidden>"));
    assert!(full.contains("<form class=\"filters\""));
    let form_at = full.find("<form class=\"filters\"").unwrap();
    assert!(
        form_at < full.find("<main").unwrap(),
        "the form is not swapped"
    );
    let script = element(&full, "<script src=\"", "\"");
    let src = script
        .trim_start_matches("<script src=\"")
        .trim_end_matches('"');
    assert!(src.starts_with("/assets/app.js?v="), "{src}");

    let response = h.get(src).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    let js = response.text().await.unwrap();
    assert!(js.contains("\"X-Partial\": \"1\"") && js.contains("Data is stale"));
}

#[tokio::test]
async fn a_snapshot_the_pipeline_stopped_publishing_marks_the_page_stale_until_a_fresh_one() {
    let mut old = snapshot();
    old.taken_at = now_ns() - 65 * NS_PER_SEC;
    let h = Harness::start(old).await;
    for path in ["/", "/devices", "/events", "/sensors/p-101"] {
        let (_, page) = h.text(path).await;
        assert!(
            page.contains(
                "<div id=\"stale\" role=\"alert\">Data is stale — the pipeline last published 1 min"
            ),
            "{path}: {page}"
        );
        assert!(page.contains("<body class=\"live stale\""), "{path}");
        assert!(
            page.contains(
                "data-stale=\"true\" data-stale-reason=\"the pipeline last published 1 min"
            )
        );
    }

    h.live.send_replace(Arc::new(snapshot()));
    let (_, page) = h.text("/").await;
    assert!(page.contains("<div id=\"stale\" role=\"alert\" hidden>"));
    assert!(page.contains("<body class=\"live\""));
    assert!(page.contains("data-stale=\"false\""));

    h.live.send_replace(Arc::new(LiveSnapshot::default()));
    let (_, page) = h.text("/").await;
    assert!(page.contains("Data is stale — the pipeline has not published any data yet"));
}

#[tokio::test]
async fn a_field_without_a_recent_reading_is_marked_stale_and_counted() {
    // In `snapshot()`, p-101's temperature was read at t0 (long ago), its pressure just now.
    let h = Harness::start(snapshot()).await;
    let (_, page) = h.text("/").await;
    let table = element(&page, "<table id=\"sensor-table\">", "</table>");
    let temperature = element(table, "<tr class=\"stale\"", "</tr>");
    assert!(
        temperature.contains("<td class=\"field\">temperature</td>"),
        "{temperature}"
    );
    assert_eq!(table.matches("<tr class=\"stale\"").count(), 1);
    assert!(page.contains("<span class=\"stale\">1 sensor without a reading for 2 min 0 s</span>"));

    let (_, sensor) = h.text("/sensors/p-101").await;
    let latest = element(&sensor, "<table id=\"latest\">", "</table>");
    assert_eq!(latest.matches("<tr class=\"stale\"").count(), 1);
    assert!(latest.contains("<td class=\"value\">3.91</td>"));
    let (_, hostile) = h.text(&crate::web::html::sensor_href(HOSTILE_ID)).await;
    assert!(!hostile.contains("<tr class=\"stale\""));
}
