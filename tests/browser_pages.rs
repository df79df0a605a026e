//! Each page in headless Chromium (`tests/support/browser.rs`) while the data behind it
//! changes, against the daemon running in this process on a free loopback port:
//!
//! - an anomaly raised and cleared through the `http` source (`POST /api/v1/ingest`) shows up
//!   as active and then goes away on an overview and a sensor page that stay open (the live
//!   update swaps `<main>`, no reload), and the events page lists the episode as cleared; the
//!   sensor page's raw chart has points and the episode as a shaded span;
//! - the events page's GET filter form, filled and submitted in the browser, lists exactly
//!   the matching events;
//! - the devices page shows a Modbus unit that answers (the pymodbus simulator,
//!   `tests/support/modbus.rs`) as up with its latency and one behind a closed port as down
//!   with its error.
//!
//! Every wait is bounded; each test has its own daemon (temp dir, port 0) and browser.
//! Screenshots land in `target/test-output/browser/NAME.png`.

mod support;

use std::time::{Duration, Instant};

use edgewatch::config;
use edgewatch::live::LiveSnapshot;
use edgewatch::model::{TimeNs, format_time, now_ns};
use serde_json::{Value, json};
use support::browser::Browser;
use support::daemon::get_json;
use support::in_process::InProcess;
use support::modbus::{HR_UNIT_ID, ModbusSim, SimOptions};
use support::modbus_daemon::tcp_source;

/// Bound of a wait for a change to reach an open page: the page updates every 5 s
/// (`html::REFRESH_SECS`); the rest is slack for the pipeline, the store's commits and a busy
/// 2-core machine running the other tests' browsers.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// Bound of a wait for the daemon's own view (API, live snapshot).
const API_WAIT: Duration = Duration::from_secs(20);

/// The limit rule of the anomaly tests: raise above 100, clear at or below 95, at once.
const OVERTEMPERATURE: &str = r#"
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
min_duration_secs = 0
holdoff_secs = 0
"#;

/// An `http` source without a token: `POST /api/v1/ingest` takes the reference payload.
const HTTP_SOURCE: &str = r#"
[[sources]]
type = "http"
name = "plant-http"
"#;

/// The daemon in this process (its own runtime, so that the test thread can block on the
/// browser), its store in a temp dir.
struct Daemon {
    inner: InProcess,
    /// The last reading time posted, so that event time always advances.
    last_time: TimeNs,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon with a fixed head (gateway, store in a temp dir, web on port 0, fast
    /// snapshots) and `body` (sources and rules).
    fn start(body: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\nid = \"gw-pages\"\n[store]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nwindow_secs = 10\nsnapshot_interval_ms = 100\n{body}",
            dir.path().join("edgewatch.redb").display()
        );
        let config = config::load_str(&text)
            .unwrap_or_else(|e| panic!("the test config is refused: {e}\n{text}"));
        Daemon {
            inner: InProcess::start(config),
            last_time: 0,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    /// The pipeline's latest live snapshot.
    fn snapshot(&self) -> std::sync::Arc<LiveSnapshot> {
        self.inner.snapshot()
    }

    /// POSTs the reference payload (`sensor_id`, RFC 3339 `timestamp`, `temperature`) to the
    /// ingest route, stamped now but at least 100 ms after the previous one; expects 202.
    fn post_temperature(&mut self, sensor: &str, temperature: f64) -> TimeNs {
        let time = now_ns().max(self.last_time + 100_000_000);
        self.last_time = time;
        let body = json!({
            "sensor_id": sensor,
            "timestamp": format_time(time),
            "temperature": temperature,
        })
        .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(self.url("/api/v1/ingest"))
            .header("content-type", "application/json")
            .send(&body)
            .unwrap_or_else(|e| panic!("POST /api/v1/ingest {body}: {e}"));
        let status = response.status().as_u16();
        let answer = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 202, "POST {body}: {answer}");
        time
    }

    /// Waits until the live view shows `sensor`'s temperature at `value`; returns that
    /// snapshot (its active events were computed after that reading).
    fn wait_temperature(&self, sensor: &str, value: f64) -> std::sync::Arc<LiveSnapshot> {
        wait_until(
            &format!("{sensor}/temperature = {value} live"),
            API_WAIT,
            || {
                let snapshot = self.snapshot();
                let shown = snapshot
                    .sensors
                    .get(sensor)
                    .and_then(|s| s.fields.get("temperature"))
                    .map(|f| f.value);
                if shown == Some(value) {
                    Ok(snapshot)
                } else {
                    Err(format!("{shown:?}"))
                }
            },
        )
    }

    /// Stored events from the API (`query` after `?`).
    fn events(&self, query: &str) -> Vec<Value> {
        match get_json(&self.url(&format!("/api/v1/events?{query}"))) {
            Some(Value::Array(events)) => events,
            other => panic!("/api/v1/events?{query}: {other:?}"),
        }
    }

    /// The health details of the source `name` from `/api/v1/status`.
    fn source_details(&self, name: &str) -> Value {
        let status = get_json(&self.url("/api/v1/status")).unwrap_or(Value::Null);
        status["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .map(|s| s["details"].clone())
            .unwrap_or(Value::Null)
    }

    /// Stops the daemon in order (bounded).
    fn stop(&mut self) {
        self.inner.stop();
    }
}

/// Polls `probe` every 100 ms until it gives a value, at most `within`; panics naming `what`
/// and the last thing seen otherwise.
fn wait_until<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits (at most `within`) until the JavaScript `condition` holds in `browser`; panics with
/// `what`, the page's URL and text otherwise (after a screenshot `NAME-failed`).
fn expect_page(browser: &mut Browser, name: &str, condition: &str, within: Duration, what: &str) {
    if browser.wait_for(condition, within) {
        return;
    }
    let shot = browser.screenshot(&format!("{name}-failed"));
    let url = browser.eval("location.href");
    let text: String = browser.text().chars().take(4000).collect();
    panic!(
        "{what}: not within {within:?} on {url} (screenshot {})\n--- page text ---\n{text}",
        shot.display()
    );
}

/// Marks the open page: a flag on `window` that a reload would lose, and one on `<main>`
/// that the live update loses when it swaps `<main>` in.
fn mark_page(browser: &mut Browser) {
    browser.eval("window.__noReload = true; document.getElementById('main').dataset.first = '1'");
}

/// The page was not reloaded since [`mark_page`], and its `<main>` was swapped in by a live
/// update since.
fn assert_live_updated_without_reload(browser: &mut Browser, page: &str) {
    assert_eq!(
        browser.eval("window.__noReload === true"),
        Value::Bool(true),
        "{page}: the page was reloaded"
    );
    assert_eq!(
        browser.eval("document.getElementById('main').dataset.first === undefined"),
        Value::Bool(true),
        "{page}: <main> was not swapped in by a live update"
    );
}

/// `(sensor, rule, state)` of the rows of the anomaly table under `scope`, in page order;
/// the sensor is empty in tables without a sensor column.
fn anomaly_rows(browser: &mut Browser, scope: &str) -> Vec<(String, String, String)> {
    let rows = browser.eval(&format!(
        "[...document.querySelectorAll({})].map(r => [\
           (r.querySelector('td.sensor') || {{innerText: ''}}).innerText.trim(), \
           r.querySelector('td.rule').innerText.trim(), \
           r.classList.contains('active') ? 'active' \
             : r.classList.contains('cleared') ? 'cleared' : r.className])",
        json!(format!("{scope} tr.anomaly"))
    ));
    serde_json::from_value(rows).expect("rows as [sensor, rule, state]")
}

/// JavaScript: whether the overview lists an active `overtemperature` anomaly of `sensor`.
fn active_row_of(sensor: &str) -> String {
    format!(
        "[...document.querySelectorAll('#anomalies tr.anomaly.active')].some(r => \
         r.querySelector('td.sensor').innerText.trim() === {} && \
         r.querySelector('td.rule').innerText.trim() === 'overtemperature')",
        json!(sensor)
    )
}

/// Issue 6: "an anomaly shown active and then cleared", live, on pages that stay open; and
/// the sensor page's raw chart with points and the episode shaded on it.
#[test]
fn an_anomaly_shows_active_then_cleared_on_open_pages_and_on_the_sensor_chart() {
    let mut daemon = Daemon::start(&format!("{HTTP_SOURCE}{OVERTEMPERATURE}"));
    // A first reading within the limit, so that the sensor and its page exist.
    daemon.post_temperature("p-101", 80.0);
    let snapshot = daemon.wait_temperature("p-101", 80.0);
    assert!(snapshot.active_events.is_empty(), "nothing active yet");

    let mut overview = Browser::launch();
    overview.goto(&daemon.url("/"));
    assert!(overview.text().contains("p-101"), "the sensor is listed");
    assert_eq!(
        overview.eval(&active_row_of("p-101")),
        Value::Bool(false),
        "no active anomaly before the reading over the limit"
    );
    mark_page(&mut overview);
    let mut sensor = Browser::launch();
    sensor.goto(&daemon.url("/sensors/p-101"));
    assert_eq!(
        sensor.eval("document.querySelectorAll('#anomalies tr.anomaly').length"),
        json!(0)
    );
    mark_page(&mut sensor);

    // Over the limit: the open overview shows it active through its live update.
    daemon.post_temperature("p-101", 120.0);
    expect_page(
        &mut overview,
        "live-active-overview",
        &active_row_of("p-101"),
        PAGE_WAIT,
        "the overview shows p-101's anomaly active",
    );
    assert_live_updated_without_reload(&mut overview, "overview");
    let id = overview.eval(
        "[...document.querySelectorAll('#anomalies tr.anomaly.active')]\
         .find(r => r.querySelector('td.sensor').innerText.trim() === 'p-101')\
         .getAttribute('data-event-id')",
    );
    let id: u64 = id
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an event id");
    let live = daemon.snapshot();
    let event = live
        .active_events
        .iter()
        .find(|e| e.id == id)
        .expect("the row's event is active in the daemon");
    assert_eq!((event.sensor.as_str(), event.value), ("p-101", 120.0));
    assert!(
        overview.text().contains("120"),
        "the value over the limit is shown"
    );
    overview.screenshot("live-anomaly-active-overview");

    // The open sensor page: the anomaly in its table and shaded on the raw chart, which has
    // the readings as points.
    let raw_chart =
        "#charts .field-charts[data-field=\"temperature\"] svg.chart[data-kind=\"raw\"]";
    // The raw chart's heading counts the readings it summarises: "(N readings)".
    let raw_heading =
        "document.querySelector('#charts .field-charts[data-field=\"temperature\"] h4').innerText";
    expect_page(
        &mut sensor,
        "live-active-sensor",
        &format!(
            "document.querySelector('#anomalies tr.anomaly.active[data-event-id=\"{id}\"]') && \
             document.querySelector('{raw_chart} rect.episode.active[data-event-id=\"{id}\"]') && \
             {raw_heading}.includes('(2 readings')"
        ),
        PAGE_WAIT,
        "the sensor page shows the anomaly active in its table and on its raw chart, which \
         has both readings (80, then 120)",
    );
    assert_live_updated_without_reload(&mut sensor, "sensor page");
    let points = sensor.eval(&format!(
        "Number(document.querySelector('{raw_chart}').getAttribute('data-points'))"
    ));
    assert_eq!(points, json!(2), "the raw chart draws both readings");
    assert_eq!(
        sensor.eval(&format!("!!document.querySelector('{raw_chart} path.raw')")),
        Value::Bool(true),
        "the raw chart has its line"
    );
    sensor.screenshot("live-anomaly-active-sensor");

    // Into the hysteresis band (95 < 97 <= 100): still active.
    daemon.post_temperature("p-101", 97.0);
    let snapshot = daemon.wait_temperature("p-101", 97.0);
    assert!(
        snapshot.active_events.iter().any(|e| e.id == id),
        "97 is within the hysteresis band: the anomaly stays active"
    );

    // Below max_clear: the open overview drops the row, again without a reload.
    mark_page(&mut overview);
    mark_page(&mut sensor);
    daemon.post_temperature("p-101", 90.0);
    expect_page(
        &mut overview,
        "live-cleared-overview",
        &format!(
            "!document.querySelector('#anomalies tr.anomaly[data-event-id=\"{id}\"]') && \
             !({})",
            active_row_of("p-101")
        ),
        PAGE_WAIT,
        "the overview no longer shows p-101's anomaly active",
    );
    assert_live_updated_without_reload(&mut overview, "overview");
    assert!(
        overview.text().contains("No active anomalies."),
        "{}",
        overview.text()
    );
    overview.screenshot("live-anomaly-cleared-overview");

    // The sensor page: the episode cleared on the chart and in its event history.
    expect_page(
        &mut sensor,
        "live-cleared-sensor",
        &format!(
            "!document.querySelector('#anomalies tr.anomaly.active') && \
             document.querySelector('#history tr.anomaly.cleared[data-event-id=\"{id}\"]') && \
             document.querySelector('{raw_chart} rect.episode.cleared[data-event-id=\"{id}\"]') && \
             {raw_heading}.includes('(4 readings')"
        ),
        PAGE_WAIT,
        "the sensor page shows the episode cleared in its history and on its raw chart, \
         which has all four readings",
    );
    assert_live_updated_without_reload(&mut sensor, "sensor page");
    // Four readings within seconds share one or two of the chart's 12 s buckets, which
    // keep each bucket's lowest and highest: 2 to 4 points drawn.
    let points = sensor.eval(&format!(
        "Number(document.querySelector('{raw_chart}').getAttribute('data-points'))"
    ));
    assert!(
        points.as_u64().is_some_and(|p| (2..=4).contains(&p)),
        "the raw chart draws the readings: {points}"
    );
    sensor.screenshot("live-anomaly-cleared-sensor");
    drop(sensor);

    // The events page lists the episode as cleared, and nothing active.
    overview.goto(&daemon.url("/events?sensor=p-101"));
    expect_page(
        &mut overview,
        "live-cleared-events",
        &format!("document.querySelector('#events tr.anomaly.cleared[data-event-id=\"{id}\"]')"),
        Duration::from_secs(1),
        "the events page lists the episode as cleared",
    );
    assert_eq!(
        anomaly_rows(&mut overview, "#events"),
        [(
            "p-101".to_string(),
            "overtemperature".to_string(),
            "cleared".to_string()
        )],
        "one episode, cleared"
    );
    overview.screenshot("live-anomaly-cleared-events");
    drop(overview);
    daemon.stop();
}

/// The events page's filter form, filled and submitted as a person would: the rows shown
/// match sensor, rule and state, and the form keeps what was asked.
#[test]
fn the_events_page_filters_by_sensor_rule_and_state_through_its_form() {
    let hot = r#"
[[rules]]
name = "hot"
match = "*/temperature"
kind = "limit"
severity = "critical"
max = 110.0
max_clear = 105.0
"#;
    let mut daemon = Daemon::start(&format!("{HTTP_SOURCE}{OVERTEMPERATURE}{hot}"));
    // p-101: both rules raised, cleared and raised again, so that each of its rules has a
    // cleared and an active episode; p-102: only overtemperature (105 is not over hot's
    // 110), active. Each filter below then leaves out rows that match its other fields.
    daemon.post_temperature("p-101", 120.0);
    daemon.post_temperature("p-101", 90.0);
    daemon.post_temperature("p-101", 120.0);
    daemon.post_temperature("p-102", 105.0);
    wait_until("five stored events, two of them cleared", API_WAIT, || {
        let events = daemon.events("limit=100");
        let cleared = events.iter().filter(|e| e["active"] == false).count();
        if events.len() == 5 && cleared == 2 {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    });

    let row = |sensor: &str, rule: &str, state: &str| {
        (sensor.to_string(), rule.to_string(), state.to_string())
    };
    let sorted = |mut rows: Vec<(String, String, String)>| {
        rows.sort();
        rows
    };
    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/events"));
    assert_eq!(
        sorted(anomaly_rows(&mut browser, "#events")),
        [
            row("p-101", "hot", "active"),
            row("p-101", "hot", "cleared"),
            row("p-101", "overtemperature", "active"),
            row("p-101", "overtemperature", "cleared"),
            row("p-102", "overtemperature", "active"),
        ],
        "unfiltered: every event"
    );

    // Sensor, rule and state at once: the one cleared overtemperature episode of p-101 (not
    // its active one, nor p-102's, nor the hot ones).
    browser.fill("#filters [name=sensor]", "p-101");
    browser.fill("#filters [name=rule]", "overtemperature");
    browser.fill("#filters [name=state]", "cleared");
    browser.submit("#filters");
    let search = browser.eval("location.pathname + location.search");
    let search = search.as_str().unwrap_or_default();
    assert!(
        search.starts_with("/events?")
            && ["sensor=p-101", "rule=overtemperature", "state=cleared"]
                .iter()
                .all(|p| search.contains(p)),
        "a GET of the form's fields: {search}"
    );
    assert_eq!(
        anomaly_rows(&mut browser, "#events"),
        [row("p-101", "overtemperature", "cleared")]
    );
    assert_eq!(
        browser.eval("document.getElementById('event-count').innerText.trim()"),
        json!("1 event match, newest first")
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#filters [name=sensor], #filters [name=rule], \
             #filters [name=state]')].map(e => e.value)"
        ),
        json!(["p-101", "overtemperature", "cleared"]),
        "the form shows the filter back"
    );
    browser.screenshot("events-filtered-sensor-rule-cleared");

    // Only the state: every active event, of any sensor and rule.
    browser.fill("#filters [name=sensor]", "");
    browser.fill("#filters [name=rule]", "");
    browser.fill("#filters [name=state]", "active");
    browser.submit("#filters");
    assert_eq!(
        sorted(anomaly_rows(&mut browser, "#events")),
        [
            row("p-101", "hot", "active"),
            row("p-101", "overtemperature", "active"),
            row("p-102", "overtemperature", "active"),
        ]
    );
    browser.screenshot("events-filtered-active");

    // Only the rule, either state.
    browser.fill("#filters [name=rule]", "hot");
    browser.fill("#filters [name=state]", "");
    browser.submit("#filters");
    assert_eq!(
        sorted(anomaly_rows(&mut browser, "#events")),
        [
            row("p-101", "hot", "active"),
            row("p-101", "hot", "cleared")
        ]
    );
    browser.screenshot("events-filtered-rule");

    // Only the sensor.
    browser.fill("#filters [name=rule]", "");
    browser.fill("#filters [name=sensor]", "p-102");
    browser.submit("#filters");
    assert_eq!(
        anomaly_rows(&mut browser, "#events"),
        [row("p-102", "overtemperature", "active")]
    );

    // A filter nothing matches says so.
    browser.fill("#filters [name=sensor]", "p-999");
    browser.submit("#filters");
    assert!(anomaly_rows(&mut browser, "#events").is_empty());
    assert!(browser.text().contains("No events match."));
    drop(browser);
    daemon.stop();
}

/// A loopback port with nothing listening: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// The devices page with a Modbus unit that answers (the simulator) and one behind a closed
/// port: up with its latency, down with its error.
#[test]
fn the_devices_page_shows_a_modbus_unit_up_with_its_latency_and_one_down_with_its_error() {
    let sim = ModbusSim::tcp(SimOptions::default());
    let registers = format!(
        "registers = [\n{{ name = \"unit_id\", table = \"holding\", address = {HR_UNIT_ID}, type = \"u16\" }},\n]"
    );
    let polling = "unit = 1\ninterval_ms = 200\ntimeout_ms = 1000\nbackoff_initial_ms = 500\n\
                   backoff_max_ms = 1000";
    let up = tcp_source("plc-up", &sim, &format!("{polling}\n{registers}"));
    let down = format!(
        "[[sources]]\ntype = \"modbus_tcp\"\nname = \"plc-down\"\nhost = \"127.0.0.1\"\nport = {}\n\
         {polling}\n{registers}\n",
        closed_port()
    );
    let mut daemon = Daemon::start(&format!("{up}{down}"));
    wait_until(
        "plc-up unit 1 up and plc-down unit 1 down",
        API_WAIT,
        || {
            let up = daemon.source_details("plc-up");
            let down = daemon.source_details("plc-down");
            if up["u1.state"] == "up" && up["u1.latency_ms"] != "-" && down["u1.state"] == "down" {
                Ok(())
            } else {
                Err(format!(
                    "plc-up {up}, plc-down {down}; sim log: {}",
                    sim.log_tail()
                ))
            }
        },
    );

    let mut browser = Browser::launch();
    browser.goto(&daemon.url("/devices"));
    let unit = |source: &str, cell: &str| {
        format!(
            "document.querySelector('section.device[data-source=\"{source}\"] \
             tr.unit[data-unit=\"1\"] td.{cell}').innerText.trim()"
        )
    };
    assert_eq!(browser.eval(&unit("plc-up", "state")), json!("up"));
    let latency = browser.eval(&unit("plc-up", "latency"));
    assert!(
        latency
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|ms| ms.is_finite() && ms >= 0.0),
        "the up unit shows its latency in ms: {latency}"
    );
    assert_eq!(
        browser.eval(
            "document.querySelector('section.device[data-source=\"plc-up\"] .source-state')\
             .innerText.trim()"
        ),
        json!("up")
    );

    assert_eq!(browser.eval(&unit("plc-down", "state")), json!("down"));
    let error = browser.eval(&unit("plc-down", "last-error"));
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("connection refused")),
        "the down unit shows its error: {error}"
    );
    let failures = browser.eval(&unit("plc-down", "failures"));
    assert!(
        failures
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "the down unit counts its failures: {failures}"
    );
    assert_eq!(
        browser.eval(
            "document.querySelector('section.device[data-source=\"plc-down\"] .source-state')\
             .innerText.trim()"
        ),
        json!("down")
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('tr.unit.ok').length"),
        json!(1),
        "one unit marked ok"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('tr.unit.bad').length"),
        json!(1),
        "one unit marked bad"
    );
    browser.screenshot("devices");
    drop(browser);
    daemon.stop();
    drop(sim);
}
