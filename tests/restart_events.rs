//! An anomaly active when the daemon stops is the same active event after it starts again:
//! listed as active by the API and shown on the overview at once (before its sensor reports
//! again), not raised a second time by the next reading over the limit, and cleared once, with
//! its id, when the value comes back.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use edgewatch::config;
use edgewatch::model::{TimeNs, format_time, now_ns};
use serde_json::{Value, json};
use support::daemon::{get_json, get_text};
use support::in_process::InProcess;

/// The daemon in this process with an `http` source and a limit rule.
struct Daemon(InProcess);

impl Daemon {
    fn start(store: &Path) -> Daemon {
        let text = format!(
            r#"
[gateway]
id = "gw-restart"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
snapshot_interval_ms = 100
[[sources]]
type = "http"
name = "plant-http"
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
"#,
            store.display()
        );
        Daemon(InProcess::start(config::load_str(&text).unwrap()))
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    fn post(&self, time: TimeNs, temperature: f64) {
        let body = json!({
            "sensor_id": "p-1",
            "timestamp": format_time(time),
            "temperature": temperature,
        })
        .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let response = agent
            .post(self.url("/api/v1/ingest"))
            .header("content-type", "application/json")
            .send(&body)
            .unwrap_or_else(|e| panic!("POST {body}: {e}"));
        assert_eq!(response.status().as_u16(), 202);
    }

    /// Waits (at most 20 s) until `check` accepts the stored events.
    fn events_until(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Value::Array(events)) = get_json(&self.url("/api/v1/events")) {
                if check(&events) {
                    return events;
                }
                assert!(Instant::now() < deadline, "{what}: {events:?}");
            }
            assert!(Instant::now() < deadline, "{what}: no answer");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}

#[test]
fn an_active_anomaly_is_the_same_event_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("edgewatch.redb");
    let t0 = now_ns() - 60_000_000_000;
    let second = 1_000_000_000;

    let mut first = Daemon::start(&store);
    first.post(t0, 80.0);
    first.post(t0 + second, 120.0);
    let events = first.events_until("one active event", |e| {
        e.len() == 1 && e[0]["cleared_at"].is_null()
    });
    let id = events[0]["id"].as_u64().unwrap();
    first.stop();

    let mut second_run = Daemon::start(&store);
    // At once, before p-1 reports again: active in the API and on the overview.
    let active = get_json(&second_run.url("/api/v1/events?active=true")).unwrap();
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["id"].as_u64(), Some(id));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = get_text(&second_run.url("/")).unwrap_or_default();
        if page.contains(&format!("data-event-id=\"{id}\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overview does not show the active event {id}:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Still over the limit: the same episode, no new event.
    second_run.post(t0 + 2 * second, 121.0);
    std::thread::sleep(Duration::from_millis(500));
    let events = second_run.events_until("still one event", |e| e.len() == 1);
    assert_eq!(events[0]["id"].as_u64(), Some(id));
    assert!(events[0]["cleared_at"].is_null());

    // Back under the clear level: that event clears, with its id.
    second_run.post(t0 + 3 * second, 90.0);
    let events = second_run.events_until("the event cleared", |e| {
        e.len() == 1 && !e[0]["cleared_at"].is_null()
    });
    assert_eq!(events[0]["id"].as_u64(), Some(id));
    second_run.stop();
}
