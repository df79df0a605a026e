//! The pages as a person sees them: headless Chromium (`tests/support/browser.rs`) against
//! the daemon running in this process on a free loopback port, with a simulated source.
//! Screenshots land in `target/test-output/browser/`.
//!
//! The sim runs in real time for a few seconds and then stops: the sensors keep their last
//! values, and the `silent` rule raises an anomaly for each of them a moment later that
//! stays active (no reading comes any more), so every test has an active anomaly to look at
//! whatever the timing. The seeded fault schedule adds its own on the way.

mod support;

use std::time::{Duration, Instant};

use edgewatch::config::{self, Config};
use serde_json::Value;
use support::browser::Browser;
use support::daemon::get_json;
use support::in_process::InProcess;

const TOKEN: &str = "op-browser-5e1f";
const SENSORS: usize = 4;

fn config(store: &std::path::Path) -> Config {
    let text = format!(
        r#"
[gateway]
id = "gw-browser"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
operator_token = "{TOKEN}"
[pipeline]
window_secs = 10
snapshot_interval_ms = 100
[[sources]]
type = "sim"
name = "sim"
sensors = {SENSORS}
interval_ms = 200
seed = 7
fault_interval_secs = 2
ticks = 20
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
[[rules]]
name = "silent"
match = "*/temperature"
kind = "silent"
raise_secs = 2
"#,
        store.display()
    );
    config::load_str(&text).expect("test config")
}

/// The daemon in this process (its own runtime, so that the test thread can block on the
/// browser), its store in a temp dir.
struct Daemon {
    inner: InProcess,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let inner = InProcess::start(config(&dir.path().join("edgewatch.redb")));
        Daemon { inner, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    /// Waits (at most 30 s) until every sensor is live and the sim has stopped, i.e. every
    /// sensor has its `silent` anomaly, which stays active from then on; returns the active
    /// events, those of `silent` first.
    fn wait_for_active_anomalies(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sensors = get_json(&self.url("/api/v1/sensors"));
            let active = get_json(&self.url("/api/v1/events?active=true"));
            if let (Some(Value::Array(sensors)), Some(Value::Array(mut active))) = (sensors, active)
            {
                active.sort_by_key(|e| e["rule"] != "silent");
                let silent = active.iter().filter(|e| e["rule"] == "silent").count();
                if sensors.len() == SENSORS && silent == SENSORS {
                    return active;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no silent anomaly for every sensor within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the daemon in order (bounded).
    fn stop(&mut self) {
        self.inner.stop();
    }
}

#[test]
fn the_overview_shows_the_sim_sensors_with_values_and_an_active_anomaly() {
    let mut daemon = Daemon::start();
    let active = daemon.wait_for_active_anomalies();
    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/"));

    let text = browser.text();
    assert!(text.contains("edgewatch · gw-browser"), "{text}");
    for i in 1..=SENSORS {
        assert!(text.contains(&format!("sim-{i:03}")), "sim-{i:03} listed");
    }
    // Every row of the sensor table has a number in its value column.
    let values = browser.eval(
        "[...document.querySelectorAll('#sensor-table tr')].slice(1)\
         .map(r => r.cells[2].innerText)",
    );
    let values: Vec<&str> = values
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        values.len(),
        SENSORS * 3,
        "three fields per sensor: {values:?}"
    );
    assert!(
        values
            .iter()
            .all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)),
        "{values:?}"
    );
    // The anomaly table lists the active events, each with the way to acknowledge it.
    let heading = browser.eval("document.querySelector('#anomalies h2').innerText");
    assert!(
        heading.as_str().unwrap().starts_with("Active anomalies ("),
        "{heading}"
    );
    let rows = browser.eval("document.querySelectorAll('#anomalies tr.anomaly.active').length");
    assert!(rows.as_u64().unwrap() >= 1, "an anomaly row is shown");
    let first = active[0]["id"].as_u64().unwrap();
    assert!(
        browser.wait_for(
            &format!("document.querySelector('a.ack-link[href^=\"/events/{first}/ack\"]')"),
            Duration::from_secs(1)
        ),
        "event {first} offers the acknowledgement form"
    );
    let shot = browser.screenshot("overview");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "{}",
        shot.display()
    );
    daemon.stop();
}

#[test]
fn an_open_overview_shows_the_stale_banner_once_the_daemon_stops() {
    let mut daemon = Daemon::start();
    daemon.wait_for_active_anomalies();
    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/"));
    assert_eq!(
        browser.eval("document.getElementById('stale').hidden"),
        Value::Bool(true),
        "fresh data: no banner"
    );
    // The page stays open while the daemon goes away; its live updates then fail.
    daemon.stop();
    assert!(
        browser.wait_for(
            "!document.getElementById('stale').hidden",
            Duration::from_secs(25)
        ),
        "the stale banner shows within 25 s"
    );
    let banner = browser.eval("document.getElementById('stale').innerText");
    assert!(
        banner.as_str().unwrap().starts_with("Data is stale"),
        "{banner}"
    );
    assert!(
        browser.text().contains("sim-001"),
        "the last data stays on the page"
    );
    browser.screenshot("stale");
}

#[test]
fn a_sensor_page_draws_its_charts() {
    let daemon = Daemon::start();
    daemon.wait_for_active_anomalies();
    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/sensors/sim-001"));
    assert!(
        browser.wait_for(
            "document.querySelector('svg.chart')",
            Duration::from_secs(5)
        ),
        "an SVG chart is drawn"
    );
    let points = browser.eval(
        "Math.max(...[...document.querySelectorAll('svg.chart')]\
         .map(c => Number(c.getAttribute('data-points')) || 0))",
    );
    assert!(
        points.as_f64().unwrap() > 0.0,
        "a chart has points: {points}"
    );
    browser.screenshot("sensor");
}

#[test]
fn an_operator_acknowledges_an_anomaly_through_the_form_and_the_overview_shows_it() {
    let daemon = Daemon::start();
    let active = daemon.wait_for_active_anomalies();
    let id = active[0]["id"].as_u64().unwrap();
    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/"));
    let href = browser.eval(&format!(
        "document.querySelector('a.ack-link[href^=\"/events/{id}/ack\"]').getAttribute('href')"
    ));
    browser.goto(&daemon.url(href.as_str().unwrap()));
    assert!(
        browser
            .text()
            .contains(&format!("Acknowledge anomaly {id}"))
    );

    // A wrong token: 401, nothing stored.
    browser.fill("#ack-note", "checked the wiring");
    browser.fill("#ack-token", "not-the-token");
    browser.submit("#ack-form");
    assert!(browser.text().contains("wrong operator token"));
    let events = get_json(&daemon.url("/api/v1/events?active=true")).unwrap();
    let event = |events: &Value| {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"].as_u64() == Some(id))
            .cloned()
            .expect("the event is still active")
    };
    assert_eq!(event(&events)["acknowledged"], Value::Null);

    // The right one: back on the overview, which shows the acknowledgement.
    browser.goto(&daemon.url(href.as_str().unwrap()));
    browser.fill("#ack-note", "checked the wiring");
    browser.fill("#ack-token", TOKEN);
    browser.screenshot("ack-form");
    browser.submit("#ack-form");
    assert_eq!(browser.eval("location.pathname"), "/");
    let text = browser.text();
    assert!(text.contains(": checked the wiring"), "{text}");
    assert!(
        !browser.dom().contains(TOKEN),
        "the token is not on the page"
    );
    browser.screenshot("acknowledged");

    let events = get_json(&daemon.url("/api/v1/events?active=true")).unwrap();
    assert_eq!(event(&events)["acknowledged"]["note"], "checked the wiring");
}

#[test]
fn a_one_shot_dump_renders_the_status_page() {
    let daemon = Daemon::start();
    daemon.wait_for_active_anomalies();
    let dom = support::browser::dump_dom(&daemon.url("/"), 1000);
    assert!(
        dom.contains("gw-browser") && dom.contains("sim-001"),
        "{dom}"
    );
}
