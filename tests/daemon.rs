//! The daemon end to end on the simulated source: the API agrees exactly with what the sim
//! produced, and a restart on the same store keeps every rollup and event.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgewatch::app;
use edgewatch::config::{self, Config, SourceKind};
use edgewatch::model::{NS_PER_SEC, format_time, now_ns, parse_time};
use edgewatch::source::sim::{FaultKind, SimGenerator};
use edgewatch::store::OutboxEntry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const WINDOW: i64 = 60 * NS_PER_SEC;
const TICKS: u64 = 600;

fn config(store: &std::path::Path, start: i64, ticks: u64) -> Config {
    let text = format!(
        r#"
[gateway]
id = "gw-it"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 60
allowed_lateness_secs = 10
snapshot_interval_ms = 50
[[sources]]
type = "sim"
name = "sim"
sensors = 6
interval_ms = 1000
seed = 7
fault_interval_secs = 20
start_time = "{}"
ticks = {ticks}
realtime = false
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
[[rules]]
name = "stuck"
match = "*/*"
kind = "stuck"
raise_secs = 20
"#,
        store.display(),
        format_time(start)
    );
    config::load_str(&text).expect("test config")
}

/// (sensor, field, window start) → (count, sum in arrival order).
type Expected = BTreeMap<(String, String, i64), (u64, f64)>;

async fn get(client: &reqwest::Client, url: String) -> Value {
    let resp = client.get(&url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Every rollup the API returns for the sim's sensors, keyed like [`Expected`].
async fn api_rollups(
    client: &reqwest::Client,
    base: &str,
    sensors: &[String],
    start: i64,
) -> Expected {
    let mut got = Expected::new();
    let (from, to) = (
        format_time(start - 3600 * NS_PER_SEC),
        format_time(now_ns() + 3600 * NS_PER_SEC),
    );
    for sensor in sensors {
        let url = format!("{base}/api/v1/sensors/{sensor}/rollups?from={from}&to={to}");
        let resp = client.get(&url).send().await.unwrap();
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue; // not seen by the pipeline yet
        }
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let rollups: Value = resp.json().await.unwrap();
        for r in rollups.as_array().unwrap() {
            let start = parse_time(r["start"].as_str().unwrap()).unwrap();
            let count = r["count"].as_u64().unwrap();
            let mean = r["mean"].as_f64().unwrap();
            got.insert(
                (
                    sensor.clone(),
                    r["field"].as_str().unwrap().to_string(),
                    start,
                ),
                (count, mean),
            );
        }
    }
    got
}

fn means(expected: &Expected) -> Expected {
    expected
        .iter()
        .map(|(k, &(n, sum))| (k.clone(), (n, sum / n as f64)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_matches_the_sim_exactly_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("edgewatch.redb");
    let start = (now_ns() / WINDOW - 60) * WINDOW;
    let cfg = config(&store_path, start, TICKS);

    // What the sim produces, recomputed independently of the pipeline.
    let SourceKind::Sim(sim) = &cfg.sources[0].kind else {
        unreachable!("the test config has a sim source")
    };
    let mut generator = SimGenerator::new(sim, start);
    let mut expected = Expected::new();
    let mut latest = BTreeMap::new();
    let mut total = 0u64;
    let mut last_time = start;
    for _ in 0..TICKS {
        let tick = generator.tick();
        last_time = tick.time;
        for r in tick.readings {
            total += 1;
            let key = (r.series.sensor.to_string(), r.series.field.to_string());
            let e = expected
                .entry((
                    key.0.clone(),
                    key.1.clone(),
                    r.time.div_euclid(WINDOW) * WINDOW,
                ))
                .or_default();
            e.0 += 1;
            e.1 += r.value;
            latest.insert(key, r.value);
        }
    }
    let faults = generator.faults().to_vec();
    let sensors: Vec<String> = (1..=6).map(|i| format!("sim-{i:03}")).collect();
    let watermark = last_time - 10 * NS_PER_SEC;
    let closed: Expected = expected
        .iter()
        .filter(|((_, _, s), _)| s + WINDOW <= watermark)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(
        closed.len() >= 6 * 3 * 9,
        "10 minutes of data close at least 9 windows per series"
    );

    let shutdown = CancellationToken::new();
    let running = app::start(cfg.clone(), shutdown.clone()).await.unwrap();
    let base = format!("http://{}", running.web_addr);
    let client = reqwest::Client::new();

    // Wait until the pipeline has seen every reading and the closed windows are committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = api_rollups(&client, &base, &sensors, start).await;
        if running.live.borrow().counters.readings == total && got.len() >= closed.len() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {} rollups",
            got.len(),
            closed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got, means(&closed), "rollup counts and means, exactly");

    // The live view: every sensor with every field at its latest value, and a rolling average.
    let live = get(&client, format!("{base}/api/v1/sensors")).await;
    let live = live.as_array().unwrap();
    assert_eq!(live.len(), sensors.len());
    for s in live {
        let id = s["id"].as_str().unwrap();
        for field in ["temperature", "pressure", "vibration"] {
            let f = &s["fields"][field];
            assert_eq!(
                f["value"].as_f64(),
                Some(latest[&(id.to_string(), field.to_string())]),
                "{id}/{field}"
            );
            assert!(
                f["rolling_avg"].as_f64().is_some(),
                "{id}/{field} rolling average"
            );
        }
    }

    // /metrics is valid Prometheus text according to the real promtool, and counts what the
    // pipeline saw.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&metrics);
    assert!(
        metrics.contains(&format!("edgewatch_pipeline_readings_total {total}")),
        "readings counter in:\n{metrics}"
    );

    // Every temperature spike or step crossed the 100 °C limit, and every stuck fault lasted
    // past 20 s: each must have raised its event on that sensor during the fault.
    let events = get(&client, format!("{base}/api/v1/events")).await;
    let events = events.as_array().unwrap().clone();
    let mut checked = 0;
    for f in faults.iter().filter(|f| f.end <= last_time) {
        let (rule, field) = match (f.kind, f.field.map(|x| x.as_str())) {
            (FaultKind::Spike | FaultKind::Step, Some("temperature")) => {
                ("overtemperature", "temperature")
            }
            (FaultKind::Stuck, Some(field)) => ("stuck", field),
            _ => continue,
        };
        let found = events.iter().any(|e| {
            let raised = parse_time(e["raised_at"].as_str().unwrap()).unwrap();
            e["rule"] == rule
                && e["sensor"] == *f.sensor
                && e["field"] == field
                && f.start <= raised
                && raised < f.end
        });
        assert!(found, "no {rule} event for {:?} in {events:#?}", f);
        checked += 1;
    }
    assert!(
        checked > 0,
        "the fault schedule should include detectable faults: {faults:?}"
    );

    shutdown.cancel();
    running.wait().await.unwrap();

    // Restart on the same store with a sim that sends nothing.
    let shutdown = CancellationToken::new();
    let running = app::start(config(&store_path, start, 0), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.web_addr);
    let after = api_rollups(&client, &base, &sensors, start).await;
    assert_eq!(
        after,
        means(&expected),
        "every window, including those flushed at shutdown"
    );
    let events_after = get(&client, format!("{base}/api/v1/events")).await;
    assert_eq!(
        events_after.as_array().unwrap(),
        &events,
        "events survive the restart unchanged"
    );

    let outbox = running.store.outbox_after(0, usize::MAX).unwrap();
    let forwarded = outbox
        .iter()
        .filter(|(_, e)| matches!(e, OutboxEntry::Rollup { .. }))
        .count();
    assert_eq!(forwarded, expected.len(), "one outbox entry per rollup");
    assert!(
        outbox.windows(2).all(|w| w[0].0 < w[1].0),
        "outbox in sequence order"
    );

    shutdown.cancel();
    running.wait().await.unwrap();
}

/// Runs `promtool check metrics` on an exposition; fails with promtool's complaint.
fn promtool_check(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; ./scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
