//! Measures how fast the forwarder drains a backlog into a real InfluxDB 1.6.7, next to
//! influxd's own ceiling measured in the same run.
//!
//! `cargo run --release --example drain_bench -- [points] [batch] [batch_max_bytes]`
//! (defaults 1000000 5000, and the sink's own default byte cap per request).
//!
//! 1. Starts a private influxd (the integration tests' harness) and creates the databases.
//! 2. Builds a store in a temp dir whose outbox holds `points` rollups: 1,000 series times
//!    `points / 1000` one-minute windows, window after window as a gateway writes them,
//!    through `Store::write` (not timed).
//! 3. Ceiling: the same rollups as line protocol, encoded exactly as the forwarder does
//!    (`rollup_point` + `encode`, the same tags; checked against the forwarder's own
//!    `outbox_point` on the first and last batch), gzipped at the forwarder's level and posted
//!    one request at a time in batches of `batch` points to a database of their own. Encoding
//!    and gzip happen before the clock starts: this is what influxd alone can take.
//! 4. edgewatch: the daemon in-process (`app::start`) on that store, with a sim source that
//!    sends nothing (`ticks = 0`) and one sink to database `bench` with
//!    `batch_max_points = batch`, `batch_max_bytes` if given (the default cap, 1 MiB, holds
//!    fewer than 5,000 of these 271-byte lines) and every other sink setting at its default.
//!    Timed from `app::start` until the sink's cursor in the store is on the last outbox
//!    sequence (read every 20 ms); then `GET /api/v1/status` must show that cursor and
//!    `backlog_points == 0`, and `SELECT COUNT(mean)` in InfluxDB must find every point.
//! 5. The ceiling runs again after edgewatch, into a third database: other work shares the
//!    two cores, and the spread of the two ceilings shows how much the machine moved.
//!
//! Every phase writes `points` new points to an empty database, so the three do the same work
//! in influxd. CPU times come from `/proc` (Linux only, like the harness).

#[path = "../tests/support/influxd.rs"]
#[allow(dead_code)]
mod influxd;
#[path = "../tests/support/process.rs"]
#[allow(dead_code)]
mod process;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use edgewatch::app;
use edgewatch::config::{self, LogConfig};
use edgewatch::forward::line_protocol::{Precision, encode};
use edgewatch::forward::points::{PointTags, outbox_point, rollup_point};
use edgewatch::model::{NS_PER_SEC, Quality, Rollup, SeriesKey, Stats, now_ns};
use edgewatch::store::{Store, WriteBatch};
use edgewatch::telemetry;
use flate2::Compression;
use flate2::write::GzEncoder;
use influxd::Influxd;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// `gateway.id`: the `gateway` tag of every point.
const GATEWAY: &str = "gw-bench";
/// The source the series are registered with: the `source` tag of every point.
const SOURCE: &str = "bench";
/// Name of the daemon's sink (its cursor in the store).
const SINK: &str = "hq";
/// Series in the backlog; the windows follow from `points`.
const SERIES: usize = 1_000;
const WINDOW_NS: i64 = 60 * NS_PER_SEC;
/// Rollups per `Store::write` while building the backlog (the writer's `commit_max_records`).
const BUILD_CHUNK: usize = 20_000;
/// The drain is abandoned (and the run fails) after this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(100);
/// How often the status API is asked for the cursor while draining.
const POLL: Duration = Duration::from_millis(20);
/// `/proc/PID/stat` counts CPU time in USER_HZ, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("arguments are numbers: [points] [batch] [batch_max_bytes]")
        })
        .collect();
    let points = args.first().copied().unwrap_or(1_000_000).max(1);
    let batch = args.get(1).copied().unwrap_or(5_000).max(1);
    // The sink's byte cap per request; the product default unless given.
    let batch_max_bytes = args.get(2).copied();
    // Warnings and errors of the daemon (a refused batch, a dropped entry) show on stderr.
    telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });

    let influx = Influxd::start();
    for db in ["bench", "ceiling", "ceiling_after"] {
        influx.create_database(db);
    }
    let influxd_pid = find_influxd(influx.dir());

    let dir = tempfile::tempdir().expect("temp dir");
    let store_path = dir.path().join("bench.redb");
    let tags = PointTags {
        gateway: GATEWAY.into(),
        static_tags: Default::default(),
    };
    let rollups = backlog(points);
    let t0 = Instant::now();
    let backlog_bytes = build_store(&store_path, &rollups, &tags, batch);
    println!(
        "store: {points} rollups ({} series x {} windows) in the outbox, {:.0} MB of outbox \
         entries, built in {:.1} s (not timed)",
        SERIES.min(points),
        points.div_ceil(SERIES),
        backlog_bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    let (bodies, lp_bytes) = bodies(&rollups, &tags, batch);
    drop(rollups);
    let gz_bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "line protocol: {:.0} bytes/point, {:.0} bytes/point gzipped (level 1, as the forwarder); \
         {} requests of {batch} points",
        lp_bytes as f64 / points as f64,
        gz_bytes as f64 / points as f64,
        bodies.len()
    );

    let before = ceiling(&influx, influxd_pid, "ceiling", &bodies, points);
    before.print("ceiling (before)");
    let edge = drain(
        &influx,
        influxd_pid,
        &store_path,
        points,
        batch,
        batch_max_bytes,
    );
    edge.print("edgewatch");
    let after = ceiling(&influx, influxd_pid, "ceiling_after", &bodies, points);
    after.print("ceiling (after)");

    let mean = (before.rate() + after.rate()) / 2.0;
    println!(
        "ratio: edgewatch / ceiling = {:.2} (mean of both ceilings {:.0} points/s; {:.2} of \
         the one before, {:.2} of the one after); order: ceiling, edgewatch, ceiling",
        edge.rate() / mean,
        mean,
        edge.rate() / before.rate(),
        edge.rate() / after.rate()
    );
    if let Some(pid) = influxd_pid {
        println!(
            "influxd memory: RSS {} MB now, peak {} MB",
            proc_status_kb(pid, "VmRSS:").unwrap_or(0) / 1024,
            proc_status_kb(pid, "VmHWM:").unwrap_or(0) / 1024
        );
    }
    let bytes = batch_max_bytes.map(|b| format!(" {b}")).unwrap_or_default();
    println!("command: cargo run --release --example drain_bench -- {points} {batch}{bytes}");
}

/// `points` rollups, window after window, each window holding every series once.
fn backlog(points: usize) -> Vec<Rollup> {
    let fields = ["temperature", "pressure", "vibration"];
    let series: Vec<SeriesKey> = (0..SERIES.min(points))
        .map(|i| SeriesKey::new(format!("sensor-{:04}", i / 3), fields[i % 3]))
        .collect();
    let windows = points.div_ceil(series.len()) as i64;
    // The last window ends a minute ago: all of it is within the rollup retention.
    let now = now_ns();
    let first = now - now.rem_euclid(WINDOW_NS) - (windows + 1) * WINDOW_NS;
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: values that vary like measurements, so gzip sees realistic text.
        random ^= random >> 12;
        random ^= random << 25;
        random ^= random >> 27;
        (random.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(points);
    'windows: for w in 0..windows {
        let start = first + w * WINDOW_NS;
        for (i, key) in series.iter().enumerate() {
            if out.len() == points {
                break 'windows;
            }
            let level = 20.0 + (i % 97) as f64 + 5.0 * (w as f64 / 60.0).sin();
            let (a, b, c, d) = (next(), next(), next(), next());
            let mean = level + a;
            let count = 60u64;
            out.push(Rollup {
                series: key.clone(),
                start,
                length_ns: WINDOW_NS,
                stats: Stats {
                    count,
                    sum: mean * count as f64,
                    m2: b * 12.0,
                    min: mean - c,
                    max: mean + d,
                    first_time: start,
                    first: mean - c / 2.0,
                    last_time: start + 59 * NS_PER_SEC,
                    last: mean + d / 2.0,
                    quality: Quality::GOOD,
                },
            });
        }
    }
    out
}

/// Writes the rollups (and so their outbox entries) into a new store; checks that the
/// forwarder's own points for the first and last batch encode to the ceiling's bytes.
/// Returns the outbox's stored bytes.
fn build_store(path: &Path, rollups: &[Rollup], tags: &PointTags, batch: usize) -> u64 {
    let store = Store::open(&store_config(path)).expect("open the bench store");
    let mut new_series: Vec<(SeriesKey, std::sync::Arc<str>)> = rollups
        .iter()
        .take(SERIES)
        .map(|r| (r.series.clone(), SOURCE.into()))
        .collect();
    for chunk in rollups.chunks(BUILD_CHUNK) {
        let report = store
            .write(&WriteBatch {
                new_series: std::mem::take(&mut new_series),
                rollups: chunk.to_vec(),
                ..WriteBatch::default()
            })
            .expect("write rollups");
        assert_eq!(report.outbox_appended, chunk.len() as u64);
    }
    let n = rollups.len();
    assert_eq!(store.outbox_len().unwrap(), n as u64);
    // A fresh store numbers the outbox from 1, without gaps.
    let tail = n - batch.min(n);
    for (after, expected) in [(0, &rollups[..batch.min(n)]), (tail, &rollups[tail..])] {
        let entries = store.outbox_after(after as u64, batch).unwrap();
        let mut forwarder = String::new();
        for (_, entry) in &entries {
            encode(
                &outbox_point(entry, tags).unwrap(),
                Precision::Ns,
                &mut forwarder,
            )
            .unwrap();
        }
        assert_eq!(
            forwarder,
            line_protocol(expected, tags),
            "same line protocol"
        );
    }
    assert_eq!(entries_last_seq(&store, n), n as u64);
    store.backlog(0).unwrap().bytes
}

/// The sequence of the outbox's last entry.
fn entries_last_seq(store: &Store, n: usize) -> u64 {
    let last = store.outbox_after(n as u64 - 1, 2).unwrap();
    assert_eq!(last.len(), 1, "the outbox ends at sequence {n}");
    last[0].0
}

/// Store settings of both the builder and the daemon. The outbox budget is off: the default
/// (256 MB) cannot hold a million rollups (about 330 bytes of JSON each) and retention would
/// drop the oldest before the drain starts.
fn store_config(path: &Path) -> config::StoreConfig {
    config::StoreConfig {
        path: path.to_path_buf(),
        max_bytes: 8 << 30,
        outbox_max_bytes: 0,
        ..config::StoreConfig::default()
    }
}

/// The line protocol of `rollups`, as the forwarder encodes it.
fn line_protocol(rollups: &[Rollup], tags: &PointTags) -> String {
    let mut out = String::new();
    for r in rollups {
        let point = rollup_point(
            &r.series.sensor,
            &r.series.field,
            SOURCE,
            r.start,
            r.length_ns,
            &r.stats,
            tags,
        );
        encode(&point, Precision::Ns, &mut out).expect("encodable rollup");
    }
    out
}

/// Gzipped request bodies of `batch` points each, and the line protocol's total bytes.
fn bodies(rollups: &[Rollup], tags: &PointTags, batch: usize) -> (Vec<Vec<u8>>, usize) {
    let mut lp_bytes = 0;
    let bodies = rollups
        .chunks(batch)
        .map(|chunk| {
            let text = line_protocol(chunk, tags);
            lp_bytes += text.len();
            // The forwarder's default: gzip on, `Compression::fast()`.
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(text.as_bytes()).expect("gzip into memory");
            gz.finish().expect("gzip into memory")
        })
        .collect();
    (bodies, lp_bytes)
}

/// What one phase measured.
struct Phase {
    points: usize,
    took: Duration,
    requests: usize,
    /// CPU seconds of influxd during the phase.
    influxd_cpu: f64,
    /// CPU seconds of this process (the client, or the daemon and its poller).
    own_cpu: f64,
    /// edgewatch only: how long `app::start` took (opening the store).
    started: Option<Duration>,
    /// edgewatch only: from `app::start` to the first acknowledged batch.
    first_ack: Option<Duration>,
    /// edgewatch only: how long one `GET /api/v1/status` took at the start of the drain.
    status_call: Option<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.points as f64 / self.took.as_secs_f64()
    }

    fn print(&self, name: &str) {
        let secs = self.took.as_secs_f64();
        let first = self
            .started
            .zip(self.first_ack)
            .map(|(s, f)| {
                format!(
                    ", started in {:.2} s, first batch acknowledged after {:.2} s",
                    s.as_secs_f64(),
                    f.as_secs_f64()
                )
            })
            .unwrap_or_default();
        let status = self
            .status_call
            .map(|d| format!("; GET /api/v1/status took {:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_default();
        println!(
            "{name:<17} {} points in {secs:.2} s = {:.0} points/s; {} requests{first}; CPU: \
             influxd {:.1} s ({:.0} % of a core), this process {:.1} s ({:.0} %){status}",
            self.points,
            self.rate(),
            self.requests,
            self.influxd_cpu,
            100.0 * self.influxd_cpu / secs,
            self.own_cpu,
            100.0 * self.own_cpu / secs,
        );
    }
}

/// Posts the ready bodies to `db`, one request at a time, and checks the count.
fn ceiling(
    influx: &Influxd,
    influxd_pid: Option<u32>,
    db: &str,
    bodies: &[Vec<u8>],
    points: usize,
) -> Phase {
    let cpu = Cpu::now(influxd_pid);
    let t0 = Instant::now();
    for body in bodies {
        let mut response = influx
            .write_request(db)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Encoding", "gzip")
            .send(&body[..])
            .expect("write request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 204, "influxd refused a ceiling batch: {text}");
    }
    let took = t0.elapsed();
    let (influxd_cpu, own_cpu) = cpu.since(influxd_pid);
    check_count(influx, db, points);
    Phase {
        points,
        took,
        requests: bodies.len(),
        influxd_cpu,
        own_cpu,
        started: None,
        first_ack: None,
        status_call: None,
    }
}

/// Runs the daemon on the store until its sink has acknowledged the whole outbox.
fn drain(
    influx: &Influxd,
    influxd_pid: Option<u32>,
    store: &Path,
    points: usize,
    batch: usize,
    batch_max_bytes: Option<usize>,
) -> Phase {
    let text = format!(
        r#"
[gateway]
id = "{GATEWAY}"
[store]
path = "{}"
max_bytes = {}
outbox_max_bytes = 0
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "{SOURCE}"
sensors = 1
ticks = 0
realtime = false
[[sinks]]
type = "influxdb"
name = "{SINK}"
url = "{}"
database = "bench"
batch_max_points = {batch}
{bytes}
"#,
        store.display(),
        store_config(store).max_bytes,
        influx.url(),
        bytes = batch_max_bytes
            .map(|b| format!("batch_max_bytes = {b}"))
            .unwrap_or_default(),
    );
    let config = config::load_str(&text).expect("bench config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cpu = Cpu::now(influxd_pid);
    let requests_before = write_requests(influx, "bench");
    let (took, first_ack, status_call, started) = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let t0 = Instant::now();
        let running = app::start(config, shutdown.clone())
            .await
            .expect("start the daemon");
        let started = t0.elapsed();
        let url = format!("http://{}/api/v1/status", running.web_addr);
        let client = reqwest::Client::new();
        let sink = async || -> (Value, Duration) {
            let asked = Instant::now();
            let status: Value = client
                .get(&url)
                .send()
                .await
                .expect("status request")
                .json()
                .await
                .expect("status JSON");
            (status["sinks"][0].clone(), asked.elapsed())
        };
        // The status API reads the store's sizes, which walks every table: polling it at the
        // pace needed to time the drain would take a core from the daemon. The cursor is read
        // from the store instead (one small read transaction), and the API checked at the end.
        let (_, status_call) = sink().await;
        let mut first_ack = None;
        let took = loop {
            let store = running.store.clone();
            let cursor = tokio::task::spawn_blocking(move || store.sink_counters(SINK))
                .await
                .expect("cursor read")
                .expect("sink counters")
                .cursor;
            if cursor > 0 && first_ack.is_none() {
                first_ack = Some(t0.elapsed());
            }
            if cursor == points as u64 {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < DRAIN_TIMEOUT,
                "not drained after {DRAIN_TIMEOUT:?}: {}",
                sink().await.0
            );
            tokio::time::sleep(POLL).await;
        };
        // The backlog figures are refreshed every 2 s; not timed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = sink().await;
            if status["backlog_points"] == 0
                && status["cursor"] == points as u64
                && status["state"] == "up"
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "drained, but the status does not say so: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let counters = running.store.sink_counters(SINK).expect("sink counters");
        assert_eq!((counters.dropped, counters.dead_letters), (0, 0));
        shutdown.cancel();
        running.wait().await.expect("daemon shutdown");
        (took, first_ack, status_call, started)
    });
    // The CPU figures include the shutdown, which is short next to the drain.
    let (influxd_cpu, own_cpu) = cpu.since(influxd_pid);
    check_count(influx, "bench", points);
    Phase {
        points,
        took,
        requests: write_requests(influx, "bench") - requests_before,
        influxd_cpu,
        own_cpu,
        started: Some(started),
        first_ack,
        status_call: Some(status_call),
    }
}

/// Panics unless `db` holds exactly `points` rollup points.
fn check_count(influx: &Influxd, db: &str, points: usize) {
    let count = influx.count(db, "SELECT COUNT(\"mean\") FROM \"rollup\"");
    assert_eq!(count, points as u64, "points in InfluxDB database {db}");
}

/// Writes to `db` that influxd's access log shows so far.
fn write_requests(influx: &Influxd, db: &str) -> usize {
    let log = std::fs::read_to_string(influx.dir().join("influxd.log")).unwrap_or_default();
    log.matches(&format!("POST /write?db={db}&")).count()
}

/// CPU times at the start of a phase.
struct Cpu {
    influxd: f64,
    own: f64,
}

impl Cpu {
    fn now(influxd_pid: Option<u32>) -> Cpu {
        Cpu {
            influxd: influxd_pid.and_then(cpu_secs).unwrap_or(0.0),
            own: cpu_secs(std::process::id()).unwrap_or(0.0),
        }
    }

    /// (influxd, this process) CPU seconds since `self`.
    fn since(&self, influxd_pid: Option<u32>) -> (f64, f64) {
        let later = Cpu::now(influxd_pid);
        (later.influxd - self.influxd, later.own - self.own)
    }
}

/// User plus system CPU seconds of process `pid`.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// A `kB` line of `/proc/PID/status`.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The influxd started for `dir`: the process whose command line names its config there.
fn find_influxd(dir: &Path) -> Option<u32> {
    let config = dir.join("influxdb.conf");
    let config = config.to_str()?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&config.as_bytes()).then_some(pid)
        })
}
