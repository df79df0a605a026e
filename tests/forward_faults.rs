//! Forwarding under faults, against a real InfluxDB 1.x (`influxd`, started by the test on a
//! free loopback port):
//!
//! - the daemon binary is killed with SIGKILL at random moments while it forwards, again and
//!   again; afterwards InfluxDB holds exactly the rollups the store holds;
//! - a long outage with a tiny outbox budget: the oldest entries are dropped, and the dropped
//!   counter (store, status API, page, metrics and log) is exactly what InfluxDB misses.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use edgewatch::app::{self, Running};
use edgewatch::config::{self, Config};
use edgewatch::metrics::TableLabel;
use edgewatch::model::{NS_PER_SEC, format_time, now_ns};
use edgewatch::store::{EventFilter, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::daemon::{Daemon, SlowRelay, get_json, metric};
use support::influxd::Influxd;
use support::process::free_port;
use tokio_util::sync::CancellationToken;

/// Rollups as (sensor, field, window start) → (count, mean).
type Rollups = BTreeMap<(String, String, i64), (u64, f64)>;

/// Every rollup in the store.
fn stored_rollups(store: &Store) -> Rollups {
    let mut out = BTreeMap::new();
    for (series, _) in store.series().unwrap() {
        for r in store
            .rollups(&series.sensor, Some(&series.field), i64::MIN, i64::MAX)
            .unwrap()
        {
            out.insert(
                (series.sensor.to_string(), series.field.to_string(), r.start),
                (r.stats.count, r.stats.mean()),
            );
        }
    }
    out
}

/// Every `rollup` point in InfluxDB, keyed like [`stored_rollups`].
fn influx_rollups(influx: &Influxd, db: &str) -> Rollups {
    let result = influx.query(
        db,
        "SELECT \"count\", \"mean\", \"sensor\", \"field\" FROM \"rollup\"",
    );
    let mut out = BTreeMap::new();
    let Some(series) = result["results"][0]["series"].as_array() else {
        return out;
    };
    for s in series {
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let col = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        for v in s["values"].as_array().unwrap() {
            let key = (
                v[col("sensor")].as_str().unwrap().to_string(),
                v[col("field")].as_str().unwrap().to_string(),
                v[col("time")].as_i64().unwrap(),
            );
            let value = (
                v[col("count")].as_u64().unwrap(),
                v[col("mean")].as_f64().unwrap(),
            );
            assert!(
                out.insert(key.clone(), value).is_none(),
                "InfluxDB holds {key:?} twice"
            );
        }
    }
    out
}

/// Panics unless the two sets are equal, naming a few differences of each kind.
fn assert_same_rollups(influx: &Rollups, stored: &Rollups) {
    let missing: Vec<_> = stored
        .iter()
        .filter(|(k, _)| !influx.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = influx
        .iter()
        .filter(|(k, _)| !stored.contains_key(*k))
        .take(5)
        .collect();
    let differing: Vec<_> = stored
        .iter()
        .filter_map(|(k, v)| influx.get(k).filter(|i| *i != v).map(|i| (k, v, i)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "InfluxDB ({} rollups) differs from the store ({} rollups)\n\
         stored, not in InfluxDB: {missing:?}\nin InfluxDB, not stored: {extra:?}\n\
         different values (stored, InfluxDB): {differing:?}",
        influx.len(),
        stored.len()
    );
}

/// Polls `check` every 100 ms until it returns true, for at most `secs`.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(100));
    }
}

/// The seed of the kill schedule: `$EDGEWATCH_TEST_SEED`, or one drawn from the clock.
fn seed() -> u64 {
    match std::env::var("EDGEWATCH_TEST_SEED") {
        Ok(text) => text.parse().expect("EDGEWATCH_TEST_SEED is a u64"),
        Err(_) => now_ns().unsigned_abs(),
    }
}

/// SIGKILL rounds.
const ROUNDS: usize = 20;
/// Each round the daemon is killed this many milliseconds after it was started.
const KILL_AFTER_MS: RangeInclusive<u64> = 300..=1500;
/// The relay in front of influxd holds each request this long before and again after
/// InfluxDB: about 130 ms per 5-point batch, so the forwarder drains about as fast as the sim
/// produces, and a write is in flight most of the time.
const RELAY_DELAY: Duration = Duration::from_millis(100);

/// The crash loop's daemon: a realtime sim (new event times each run, from the gateway
/// clock), one-second windows closed without lateness, commits every 50 ms, and a sink that
/// sends at most 5 points per request and retries quickly.
fn crash_config(store: &Path, listen: &str, ticks: &str, influx_url: &str) -> String {
    format!(
        r#"
[gateway]
id = "gw-crash"
[store]
path = "{}"
commit_interval_ms = 50
[web]
listen = "{listen}"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
[log]
level = "info"
[[sources]]
type = "sim"
name = "sim"
sensors = 8
interval_ms = 100
seed = 7
fault_interval_secs = 0
realtime = true
{ticks}
[[sinks]]
type = "influxdb"
name = "hq"
url = "{influx_url}"
database = "plant"
batch_max_points = 5
retry_initial_ms = 100
retry_max_secs = 1
"#,
        store.display()
    )
}

/// Writes a config file after checking that it loads, so a broken test config fails here
/// with the loader's message rather than as a daemon that exits at once.
fn write_config(path: &Path, text: &str) -> Config {
    let config = config::load_str(text).expect("test config");
    std::fs::write(path, text).expect("write the config file");
    config
}

#[test]
fn sigkill_while_forwarding_twenty_times_leaves_influxdb_with_exactly_the_stored_rollups() {
    let seed = seed();
    eprintln!("kill schedule seed {seed} (EDGEWATCH_TEST_SEED={seed} repeats the schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let influx = Influxd::start();
    influx.create_database("plant");
    let relay = SlowRelay::start(&influx.url(), RELAY_DELAY);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("edgewatch.redb");
    let log = dir.path().join("edgewatch.log");
    let loop_config = dir.path().join("loop.toml");
    write_config(
        &loop_config,
        &crash_config(&store_path, "127.0.0.1:0", "", &relay.url()),
    );

    let started = Instant::now();
    let mut in_flight_kills = 0;
    let mut kills_after_influxdb_stored = 0;
    for round in 1..=ROUNDS {
        let requests = relay.requests();
        let mut daemon = Daemon::spawn(&loop_config, &log);
        let after = rng.random_range(KILL_AFTER_MS.clone());
        sleep(Duration::from_millis(after));
        // Read just before the kill: a request the relay holds is one the daemon awaits.
        let in_flight = relay.in_flight();
        daemon.kill();
        if in_flight.any() {
            in_flight_kills += 1;
        }
        if in_flight.after_upstream > 0 {
            kills_after_influxdb_stored += 1;
        }
        eprintln!(
            "round {round:2}: SIGKILL after {after:4} ms, {:2} writes, in flight: {in_flight:?}",
            relay.requests() - requests
        );
    }
    let loop_took = started.elapsed();

    // The final drain, straight to influxd, with the sim sending nothing. Two runs: the first
    // drains what the killed runs left and, at its SIGTERM, flushes the windows that the
    // killed runs had checkpointed open (restored at its start) as rollups; the second drains
    // those, and has nothing open to flush at its own exit.
    let final_config = dir.path().join("final.toml");
    let drain_started = Instant::now();
    let mut config = None;
    for run in 1..=2 {
        let port = free_port();
        let written = write_config(
            &final_config,
            &crash_config(
                &store_path,
                &format!("127.0.0.1:{port}"),
                "ticks = 0",
                &influx.url(),
            ),
        );
        let mut daemon = Daemon::spawn(&final_config, &log);
        let status_url = format!("http://127.0.0.1:{port}/api/v1/status");
        let mut last = Value::Null;
        eventually(30, "the final run drains the backlog", || {
            if let Some(status) = daemon.exited() {
                daemon.fail(format!("final run {run} exited on its own ({status})"));
            }
            last = get_json(&status_url).unwrap_or(Value::Null);
            let hq = &last["sinks"][0];
            // "up" comes after the first refresh of the backlog figures, so 0 is a measured 0.
            hq["state"] == "up" && hq["backlog_points"] == 0
        });
        let exit = daemon.terminate(Duration::from_secs(15));
        assert_eq!(
            exit.code(),
            Some(0),
            "exit status of final run {run} after SIGTERM"
        );
        assert_eq!(last["sinks"][0]["dropped_points"], 0, "{last}");
        assert_eq!(last["sinks"][0]["dead_letters"], 0, "{last}");
        config = Some(written);
    }
    let drain_took = drain_started.elapsed();
    let config = config.expect("two final runs");

    let store = Store::open(&config.store).unwrap();
    let counters = store.sink_counters("hq").unwrap();
    assert_eq!(
        store.backlog(counters.cursor).unwrap().points,
        0,
        "the cursor is at the end of the outbox"
    );
    let stored = stored_rollups(&store);
    let delivered = influx_rollups(&influx, "plant");
    eprintln!(
        "{ROUNDS} SIGKILLs in {loop_took:?}: {in_flight_kills} with a write in flight, \
         {kills_after_influxdb_stored} of them after InfluxDB had stored it; {} writes through \
         the relay; final drain {drain_took:?}; {} rollups stored, {} in InfluxDB",
        relay.requests(),
        stored.len(),
        delivered.len()
    );
    assert!(
        in_flight_kills > ROUNDS / 2,
        "a write was in flight at only {in_flight_kills} of {ROUNDS} kills: the test does not \
         test what it says"
    );
    assert!(
        stored.len() >= 200,
        "only {} rollups: too few to mean anything",
        stored.len()
    );
    assert_same_rollups(&delivered, &stored);
}

/// What the in-process daemon of the budget test logs, as text without colours.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs (once per test process) a global subscriber that writes into a buffer: the
/// daemon's tasks run on the runtime's worker threads, so a thread-local one would miss them.
fn captured_log() -> LogBuffer {
    static LOG: OnceLock<LogBuffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
    .clone()
}

/// The sum of `name=N` over the log lines that contain `message`.
fn logged_sum(log: &str, message: &str, name: &str) -> u64 {
    let key = format!(" {name}=");
    log.lines()
        .filter(|line| line.contains(message))
        .map(|line| {
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                + key.len();
            let digits: String = line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().unwrap()
        })
        .sum()
}

/// A count as the status page shows it (narrow no-break space between groups of three).
fn page_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

const WINDOW: i64 = 60 * NS_PER_SEC;

/// The budget test's daemon: a 20 kB outbox checked every second, a sim replaying 20 minutes
/// of 4 sensors from two hours ago at once (240 rollups, in time order: no reading is late,
/// so each rollup is written once and has exactly one outbox entry), no rules (no events).
fn budget_config(store: &Path, start: i64, ticks: u64, influx_url: &str) -> Config {
    let text = format!(
        r#"
[gateway]
id = "gw-budget"
[store]
path = "{}"
outbox_max_bytes = 20000
retention_interval_secs = 1
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "sim"
sensors = 4
interval_ms = 1000
seed = 5
fault_interval_secs = 0
start_time = "{}"
ticks = {ticks}
realtime = false
[[sinks]]
type = "influxdb"
name = "hq"
url = "{influx_url}"
database = "plant"
retry_initial_ms = 100
retry_max_secs = 1
"#,
        store.display(),
        format_time(start)
    );
    config::load_str(&text).expect("test config")
}

async fn status(running: &Running) -> Value {
    reqwest::get(format!("http://{}/api/v1/status", running.web_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn text(running: &Running, path: &str) -> String {
    reqwest::get(format!("http://{}{path}", running.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true, for at most `secs`.
async fn eventually_async(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_with_a_tiny_outbox_drops_the_oldest_and_counts_exactly_what_influxdb_misses()
{
    let log = captured_log();
    let mut influx = Influxd::start();
    influx.create_database("plant");
    tokio::task::block_in_place(|| influx.stop());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("edgewatch.redb");
    let start = (now_ns() / WINDOW - 120) * WINDOW;

    // The outage: everything is produced at once, the budget removes the oldest entries, and
    // the forwarder keeps retrying against a dead link with the gap behind its cursor.
    let shutdown = CancellationToken::new();
    let running = app::start(
        budget_config(&store, start, 1200, &influx.url()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let removed_metric = "edgewatch_store_removed_records_total{table=\"outbox\"}";
    eventually_async(30, "sim done and outbox entries removed", async || {
        let metrics = text(&running, "/metrics").await;
        status(&running).await["sources"][0]["state"] == "stopped"
            && metric(&metrics, removed_metric).unwrap_or(0.0) > 0.0
    })
    .await;
    // A long outage is many failed attempts with the gap already there.
    let mut attempts = Vec::new();
    eventually_async(15, "three more failed attempts", async || {
        let hq = &status(&running).await["sinks"][0];
        let at = hq["last_error_at"].clone();
        if hq["state"] == "down" && attempts.last() != Some(&at) {
            attempts.push(at);
        }
        attempts.len() > 3
    })
    .await;
    assert_eq!(
        status(&running).await["sinks"][0]["cursor"],
        0,
        "nothing sent"
    );
    let metrics = running.metrics.clone();
    shutdown.cancel();
    running.wait().await.unwrap();
    let outbox_written = metrics
        .store_written
        .get_or_create(&TableLabel {
            table: "outbox".into(),
        })
        .get();
    assert_eq!(metrics.late_corrected.get(), 0, "no rollup was corrected");

    // The link is back: the next run (sending nothing new) drains what is left.
    tokio::task::block_in_place(|| influx.restart());
    let shutdown = CancellationToken::new();
    let running = app::start(
        budget_config(&store, start, 0, &influx.url()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut st = Value::Null;
    eventually_async(30, "backlog drained", async || {
        st = status(&running).await;
        st["sinks"][0]["state"] == "up" && st["sinks"][0]["backlog_points"] == 0
    })
    .await;

    let stored = stored_rollups(&running.store);
    assert!(
        running
            .store
            .events(&EventFilter::default())
            .unwrap()
            .is_empty(),
        "no rules, no events: the outbox held rollups only"
    );
    assert_eq!(
        stored.len() as u64,
        outbox_written,
        "one outbox entry per stored rollup"
    );
    let delivered = influx_rollups(&influx, "plant");
    for (key, value) in &delivered {
        assert_eq!(stored.get(key), Some(value), "{key:?} as stored");
    }
    let missing: Vec<_> = stored
        .keys()
        .filter(|k| !delivered.contains_key(*k))
        .collect();
    let missing_count = missing.len() as u64;
    eprintln!(
        "{} rollups stored, {} in InfluxDB, {missing_count} missing",
        stored.len(),
        delivered.len()
    );
    assert!(
        missing_count > 0 && !delivered.is_empty(),
        "the budget should drop some entries and keep others"
    );
    let newest_missing = missing.iter().map(|k| k.2).max().unwrap();
    let oldest_delivered = delivered.keys().map(|k| k.2).min().unwrap();
    assert!(
        newest_missing <= oldest_delivered,
        "the oldest entries are the ones dropped"
    );

    let counters = running.store.sink_counters("hq").unwrap();
    assert_eq!(
        counters.dropped, missing_count,
        "the store's dropped counter"
    );
    assert_eq!(counters.dead_letters, 0);
    assert_eq!(
        st["sinks"][0]["dropped_points"], missing_count,
        "the status API"
    );
    let page = text(&running, "/").await;
    let cell = format!("<td class=\"num bad\">{}</td>", page_count(missing_count));
    assert!(page.contains(&cell), "the status page shows {cell}");
    // The first run acknowledged nothing, so this run counted every drop.
    let exposition = text(&running, "/metrics").await;
    assert_eq!(
        metric(
            &exposition,
            "edgewatch_sink_dropped_points_total{sink=\"hq\"}"
        ),
        Some(missing_count as f64),
        "the metric"
    );
    shutdown.cancel();
    running.wait().await.unwrap();

    let log = log.text();
    assert!(
        log.contains("ERROR") && log.contains("outbox over its byte budget"),
        "retention logs the removal at ERROR"
    );
    assert_eq!(
        logged_sum(
            &log,
            "removed by retention before this sink had them",
            "dropped"
        ),
        missing_count,
        "the log reports each dropped entry once"
    );
}
