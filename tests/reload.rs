//! Config reload by SIGHUP, on the real binary: a source added by the new config starts, a
//! removed one stops, a rule removed clears its active episodes and a new rule raises; the
//! untouched source's rollups have no gap and every rollup holds exactly the raw readings of
//! its window (nothing lost, nothing counted twice); a broken config is refused with the
//! reason in the log and the config in effect keeps running. In process: a sink added by a
//! reload delivers the whole backlog to a real InfluxDB, and a sink whose secret cannot be
//! read is refused before the running one stops.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use edgewatch::config::{self, StoreConfig};
use edgewatch::model::{NS_PER_SEC, TimeNs, format_time, now_ns};
use edgewatch::store::{EventFilter, Store};
use serde_json::Value;
use support::daemon::{Daemon, get_json, get_text, metric};
use support::in_process::InProcess;
use support::influxd::Influxd;
use support::process::free_port;

/// Readings per sensor field per second (`interval_ms = 100`).
const PER_SEC: u64 = 10;

/// A sim source whose sensors are `<name>001`, `<name>002`, without injected faults.
fn sim(name: &str) -> String {
    format!(
        r#"
[[sources]]
type = "sim"
name = "{name}"
sensor_prefix = "{name}"
sensors = 2
interval_ms = 100
fault_interval_secs = 0
"#
    )
}

/// A rule that is raised by every temperature of the sensors `<prefix>*`.
fn always_hot(rule: &str, prefix: &str) -> String {
    format!(
        r#"
[[rules]]
name = "{rule}"
match = "{prefix}*/temperature"
kind = "limit"
max = -1000.0
"#
    )
}

fn head(store: &Path, port: u16) -> String {
    format!(
        r#"
[gateway]
id = "gw-reload"
[store]
path = "{}"
commit_interval_ms = 50
[web]
listen = "127.0.0.1:{port}"
[pipeline]
window_secs = 1
allowed_lateness_secs = 1
snapshot_interval_ms = 200
"#,
        store.display()
    )
}

fn eventually(daemon: &mut Daemon, secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(status) = daemon.exited() {
            daemon.fail(format!(
                "edgewatch exited ({status}) while waiting for {what}"
            ));
        }
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.fail(format!("timed out after {secs} s waiting for {what}"));
}

/// Source name -> (state, readings) from `/api/v1/status`.
fn sources(status: &Value) -> Vec<(String, String, u64)> {
    status["sources"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("").to_string(),
                        s["state"].as_str().unwrap_or("").to_string(),
                        s["readings"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn readings_of(status: &Value, name: &str) -> Option<u64> {
    sources(status)
        .into_iter()
        .find(|(n, state, _)| n == name && state == "up")
        .map(|(_, _, readings)| readings)
}

fn active_rules(base: &str) -> Vec<(String, String)> {
    get_json(&format!("{base}/api/v1/events?active=true"))
        .and_then(|v| {
            v.as_array().map(|events| {
                events
                    .iter()
                    .map(|e| {
                        (
                            e["rule"].as_str().unwrap_or("").to_string(),
                            e["sensor"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn sighup_applies_sources_and_rules_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("edgewatch.redb");
    let config_path = dir.path().join("edgewatch.toml");
    let log = dir.path().join("edgewatch.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let head = head(&store_path, port);

    // Run 1: sources a and b, a rule raised by a's temperatures.
    std::fs::write(
        &config_path,
        format!("{head}{}{}{}", sim("a"), sim("b"), always_hot("hot-a", "a")),
    )
    .unwrap();
    let mut daemon = Daemon::spawn(&config_path, &log);
    let status_url = format!("{base}/api/v1/status");
    eventually(
        &mut daemon,
        30,
        "sources a and b up with readings, hot-a active",
        || {
            let Some(status) = get_json(&status_url) else {
                return false;
            };
            readings_of(&status, "a").is_some_and(|n| n > 0)
                && readings_of(&status, "b").is_some_and(|n| n > 0)
                && active_rules(&base)
                    .iter()
                    .filter(|(r, _)| r == "hot-a")
                    .count()
                    == 2
        },
    );
    // Some whole windows before the reload.
    std::thread::sleep(Duration::from_secs(3));

    // Reload: b removed, c added, hot-a replaced by hot-c.
    std::fs::write(
        &config_path,
        format!("{head}{}{}{}", sim("a"), sim("c"), always_hot("hot-c", "c")),
    )
    .unwrap();
    let a_before = readings_of(&get_json(&status_url).unwrap(), "a").unwrap();
    let reloaded_at = now_ns();
    daemon.signal("HUP");
    eventually(&mut daemon, 30, "c up with readings, b gone", || {
        let Some(status) = get_json(&status_url) else {
            return false;
        };
        let names: Vec<String> = sources(&status).into_iter().map(|(n, _, _)| n).collect();
        names == ["a", "c"] && readings_of(&status, "c").is_some_and(|n| n > 0)
    });
    eventually(&mut daemon, 30, "hot-a cleared, hot-c raised", || {
        let active = active_rules(&base);
        active.len() == 2
            && active
                .iter()
                .all(|(r, s)| r == "hot-c" && s.starts_with('c'))
    });
    let status = get_json(&status_url).unwrap();
    assert!(
        readings_of(&status, "a").unwrap() > a_before,
        "source a runs on across the reload: {status}"
    );
    let metrics = get_text(&format!("{base}/metrics")).unwrap();
    assert_eq!(
        metric(
            &metrics,
            r#"edgewatch_config_reloads_total{result="applied"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "edgewatch_config_last_reload_successful"),
        Some(1.0)
    );
    std::thread::sleep(Duration::from_secs(3));

    // A broken config: refused, with the reason, and a and c keep running.
    std::fs::write(
        &config_path,
        format!(
            "{head}{}{}",
            sim("a"),
            sim("d").replace("interval_ms = 100", "interval_ms = \"fast\"")
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    eventually(&mut daemon, 30, "the refusal in the log", || {
        daemon_log(&log).contains("config reload refused")
    });
    let text = daemon_log(&log);
    assert!(
        text.contains("interval_ms"),
        "the log names the bad key:\n{text}"
    );
    let before = get_json(&status_url).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = get_json(&status_url).unwrap();
    for name in ["a", "c"] {
        assert!(
            readings_of(&after, name).unwrap() > readings_of(&before, name).unwrap(),
            "{name} keeps running after the refused reload: {after}"
        );
    }
    let names: Vec<String> = sources(&after).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["a", "c"], "{after}");
    let metrics = get_text(&format!("{base}/metrics")).unwrap();
    assert_eq!(
        metric(
            &metrics,
            r#"edgewatch_config_reloads_total{result="refused"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "edgewatch_config_last_reload_successful"),
        Some(0.0)
    );

    let exit = daemon.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM");
    check_store(&store_path, reloaded_at);
}

fn daemon_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every series' rollups hold exactly its raw readings window by window; a's windows run
/// without a gap through the reload; b stopped at the reload and c started there; hot-a's
/// episodes were cleared by the reload.
fn check_store(path: &Path, reloaded_at: TimeNs) {
    let store = Store::open(&StoreConfig {
        path: path.to_path_buf(),
        ..StoreConfig::default()
    })
    .unwrap();
    let series = store.series().unwrap();
    let window = NS_PER_SEC;
    let mut seen = std::collections::BTreeMap::<String, (TimeNs, TimeNs)>::new();
    for (key, source) in &series {
        let rollups = store
            .rollups(&key.sensor, Some(&key.field), TimeNs::MIN, TimeNs::MAX)
            .unwrap();
        assert!(rollups.len() >= 3, "{key}: only {} rollups", rollups.len());
        let mut raw_total = 0u64;
        for r in &rollups {
            let raw = store
                .raw(key, r.start, r.start + window, usize::MAX)
                .unwrap()
                .len() as u64;
            assert_eq!(r.stats.count, raw, "{key}: rollup at {} vs raw", r.start);
            raw_total += raw;
        }
        let all_raw = store
            .raw(key, TimeNs::MIN, TimeNs::MAX, usize::MAX)
            .unwrap()
            .len() as u64;
        assert_eq!(raw_total, all_raw, "{key}: raw readings outside any rollup");
        // No gap: consecutive windows, and every window but the first and last is whole.
        for pair in rollups.windows(2) {
            assert_eq!(
                pair[1].start - pair[0].start,
                window,
                "{key}: gap in rollups"
            );
        }
        for r in &rollups[1..rollups.len() - 1] {
            assert_eq!(
                r.stats.count, PER_SEC,
                "{key}: window at {} not whole",
                r.start
            );
        }
        let first = rollups.first().unwrap().start;
        let last = rollups.last().unwrap().start;
        let entry = seen.entry(source.clone()).or_insert((first, last));
        entry.0 = entry.0.min(first);
        entry.1 = entry.1.max(last);
    }
    let slack = 2 * NS_PER_SEC;
    let (a_first, a_last) = seen["a"];
    assert!(a_first < reloaded_at - slack && a_last > reloaded_at + slack);
    let (_, b_last) = seen["b"];
    assert!(b_last < reloaded_at + slack, "b ran on after the reload");
    let (c_first, _) = seen["c"];
    assert!(c_first > reloaded_at - slack, "c ran before the reload");
    assert!(!seen.contains_key("d"), "the refused config's source ran");

    let hot_a = store
        .events(&EventFilter {
            rule: Some("hot-a".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert!(!hot_a.is_empty());
    for e in &hot_a {
        assert!(e.cleared_at.is_some(), "hot-a still active: {e:?}");
        assert!(
            e.message.contains("cleared on reload"),
            "the reason is kept: {}",
            e.message
        );
    }
}

/// A replay sim (an hour of readings as fast as the pipeline takes them) and `sink`.
fn replay_config(store: &Path, sink: &str) -> edgewatch::config::Config {
    let window = 60 * NS_PER_SEC;
    let start = (now_ns() / window - 120) * window;
    config::load_str(&format!(
        r#"
[gateway]
id = "gw-reload"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "replay"
sensors = 2
interval_ms = 1000
fault_interval_secs = 0
start_time = "{}"
ticks = 3600
realtime = false
{sink}
"#,
        store.display(),
        format_time(start)
    ))
    .expect("test config")
}

fn wait_for(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sink_added_by_reload_gets_the_backlog_and_one_without_its_secret_is_refused() {
    let influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("edgewatch.redb");
    let hq = format!(
        "[[sinks]]\ntype = \"influxdb\"\nname = \"hq\"\nurl = \"{}\"\ndatabase = \"plant\"\nretry_initial_ms = 100\nretry_max_secs = 1\n",
        influx.url()
    );
    let mut daemon = InProcess::start(replay_config(&store, ""));
    let status_url = daemon.url("/api/v1/status");
    wait_for(60, "the replay done", || {
        get_json(&status_url).is_some_and(|s| s["sources"][0]["state"] == "stopped")
    });
    let rollups = |d: &InProcess| {
        let store = &d.running().store;
        store
            .series()
            .unwrap()
            .iter()
            .map(|(k, _)| {
                store
                    .rollups(&k.sensor, Some(&k.field), TimeNs::MIN, TimeNs::MAX)
                    .unwrap()
                    .len() as u64
            })
            .sum::<u64>()
    };
    // 60 windows of 2 sensors × 3 fields; the last one stays open.
    wait_for(30, "the closed windows stored", || {
        rollups(&daemon) >= 6 * 59
    });
    let stored = rollups(&daemon);
    assert_eq!(
        get_json(&status_url).unwrap()["sinks"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // Add the sink: it starts at the beginning of the outbox, so HQ gets every rollup.
    let report = daemon.reload(replay_config(&store, &hq)).unwrap();
    assert!(report.sinks_restarted, "{report}");
    wait_for(60, "every stored rollup in InfluxDB", || {
        influx.count("plant", "SELECT COUNT(\"mean\") FROM \"rollup\"") == stored
    });
    let status = get_json(&status_url).unwrap();
    assert_eq!(status["sinks"][0]["name"], "hq", "{status}");
    assert_eq!(status["sinks"][0]["state"], "up", "{status}");

    // The same sink with a password file that is gone by the time the reload applies the
    // config (validation saw it): refused before the running sink stops; nothing changes.
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let broken = format!(
        "{hq}username = \"edge\"\npassword_file = \"{}\"\n",
        secret.display()
    );
    let broken = replay_config(&store, &broken);
    std::fs::remove_file(&secret).unwrap();
    let refused = daemon.reload(broken);
    let reason = format!("{:#}", refused.expect_err("a sink without its secret"));
    assert!(
        reason.contains("sink hq") && reason.contains("password"),
        "{reason}"
    );
    assert_eq!(
        daemon.running().config().sinks,
        replay_config(&store, &hq).sinks,
        "the sink in effect is the one before the refused reload"
    );
    let status = get_json(&status_url).unwrap();
    assert_eq!(status["sinks"][0]["state"], "up", "still running: {status}");
    let metrics = get_text(&daemon.url("/metrics")).unwrap();
    assert_eq!(
        metric(
            &metrics,
            r#"edgewatch_config_reloads_total{result="refused"}"#
        ),
        Some(1.0)
    );
    daemon.stop();
}
