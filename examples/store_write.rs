//! Measures how fast the store writes raw readings: batches of `batch` readings spread over
//! `series` series (each batch holds a few consecutive readings of every series, as the
//! writer's coalesced commits do), each batch one durable commit.
//!
//! `cargo run --release --example store_write -- [batch] [series] [batches]`
//! (defaults 20000 3000 100). Prints readings per second of `Store::write` alone (building the
//! batches is not timed; the fsync of every commit is), and on Linux the bytes the process
//! wrote to storage per reading (write amplification; a raw reading is 21 bytes of key and
//! value).

use std::time::{Duration, Instant};

use edgewatch::config::StoreConfig;
use edgewatch::model::{NS_PER_SEC, Quality, Reading, SeriesKey};
use edgewatch::store::{Store, WriteBatch};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers"))
        .collect();
    let batch_size = args.first().copied().unwrap_or(20_000);
    let n_series = args.get(1).copied().unwrap_or(3_000);
    let batches = args.get(2).copied().unwrap_or(100);

    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig {
        path: dir.path().join("bench.redb"),
        ..StoreConfig::default()
    };
    let store = Store::open(&config).expect("open store");
    let fields = ["temperature", "pressure", "vibration"];
    let series: Vec<SeriesKey> = (0..n_series)
        .map(|i| SeriesKey::new(format!("sensor-{:05}", i / 3), fields[i % 3]))
        .collect();
    let register = WriteBatch {
        new_series: series.iter().map(|s| (s.clone(), "bench".into())).collect(),
        ..WriteBatch::default()
    };
    store.write(&register).expect("register series");

    let written_before = storage_bytes_written();
    let start = 1_795_000_000 * NS_PER_SEC;
    let mut tick = 0i64;
    let mut next = 0usize;
    let mut busy = Duration::ZERO;
    let mut written = 0u64;
    let mut slowest = Duration::ZERO;
    for _ in 0..batches {
        // Round robin over the series; every series gets one reading per one-second tick.
        let mut raw = Vec::with_capacity(batch_size);
        while raw.len() < batch_size {
            let i = next % series.len();
            raw.push(Reading {
                series: series[i].clone(),
                time: start + tick * NS_PER_SEC + i as i64,
                value: (tick as f64 * 0.1 + i as f64).sin() * 10.0 + 50.0,
                quality: Quality::GOOD,
            });
            next += 1;
            if next.is_multiple_of(series.len()) {
                tick += 1;
            }
        }
        let batch = WriteBatch {
            raw,
            ..WriteBatch::default()
        };
        let t0 = Instant::now();
        let report = store.write(&batch).expect("write");
        let took = t0.elapsed();
        busy += took;
        slowest = slowest.max(took);
        if std::env::var_os("STORE_WRITE_TRACE").is_some() {
            eprintln!("commit {:.1} ms", took.as_secs_f64() * 1e3);
        }
        written += report.raw_written;
    }
    let t0 = Instant::now();
    let stats = store.stats().expect("stats");
    let stats_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    store
        .apply_retention(start + tick * NS_PER_SEC)
        .expect("retention");
    let retention_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "stats() took {stats_ms:.1} ms, a retention run that removes nothing {retention_ms:.1} ms"
    );
    if let (Some(before), Some(after)) = (written_before, storage_bytes_written()) {
        println!(
            "{:.0} bytes written to storage per reading",
            (after - before) as f64 / written as f64
        );
    }
    println!(
        "{written} readings in {batches} commits of {batch_size} over {n_series} series: \
         {:.0} readings/s ({:.1} ms per commit on average, slowest {:.1} ms); \
         file {} MB, stored {} MB",
        written as f64 / busy.as_secs_f64(),
        busy.as_secs_f64() * 1e3 / batches as f64,
        slowest.as_secs_f64() * 1e3,
        stats.file_bytes / 1_000_000,
        stats.stored_bytes / 1_000_000,
    );
}

/// Bytes this process caused to be written to storage so far (Linux `/proc/self/io`).
fn storage_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|n| n.trim().parse().ok())
}
