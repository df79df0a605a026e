//! SIGTERM during load: the daemon exits 0 within its deadline, and every accepted reading is
//! in the store afterwards, raw and inside a rollup (the open windows were flushed).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewatch::config::StoreConfig;
use edgewatch::model::{NS_PER_SEC, format_time, now_ns};
use edgewatch::store::Store;

#[test]
fn sigterm_under_load_flushes_open_windows_and_exits_zero_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("edgewatch.redb");
    // Event time starts a day ago so that a sim running faster than real time stays in the past.
    let start = (now_ns() / (60 * NS_PER_SEC) - 24 * 60) * 60 * NS_PER_SEC;
    let config = format!(
        r#"
[gateway]
id = "gw-sigterm"
[store]
path = "{}"
raw_retention_secs = 604800
[web]
listen = "127.0.0.1:0"
[pipeline]
channel_capacity = 64
[shutdown]
deadline_secs = 10
[[sources]]
type = "sim"
name = "load"
sensors = 200
interval_ms = 1000
start_time = "{}"
realtime = false
"#,
        store_path.display(),
        format_time(start)
    );
    let config_path = dir.path().join("edgewatch.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["run", "--config", config_path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon died under load"
    );

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(15) {
            child.kill().unwrap();
            panic!("no exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}, beyond the 10 s deadline"
    );

    let store = Store::open(&StoreConfig {
        path: store_path,
        raw_retention_secs: 604_800,
        ..StoreConfig::default()
    })
    .unwrap();
    let checking = Instant::now();
    let stats = store.stats().unwrap();
    assert!(
        stats.raw_readings > 10_000,
        "load too small to mean anything: {stats:?}"
    );
    let mut in_rollups = 0;
    for (i, (series, _source)) in store.series().unwrap().into_iter().enumerate() {
        let rollups = store
            .rollups(&series.sensor, Some(&series.field), i64::MIN, i64::MAX)
            .unwrap();
        let counted: u64 = rollups.iter().map(|r| r.stats.count).sum();
        // A per-series raw read scans the recent raw table; a sample of series is enough.
        if i % 100 == 0 {
            let raw = store.raw(&series, i64::MIN, i64::MAX, usize::MAX).unwrap();
            assert_eq!(
                counted,
                raw.len() as u64,
                "{series}: rollup counts vs raw readings"
            );
        }
        in_rollups += counted;
    }
    assert_eq!(
        in_rollups, stats.raw_readings,
        "every raw reading is inside a stored rollup"
    );
    eprintln!("verified in {:?}", checking.elapsed());
    eprintln!(
        "SIGTERM after 3 s of load: exit 0 in {took:?}, {in_rollups} readings stored and rolled up"
    );
}
