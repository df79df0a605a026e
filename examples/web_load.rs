//! The web load benchmark: does a crowd of clients reading the pages and the API slow
//! acquisition?
//!
//! `cargo run --release --example web_load -- [secs] [clients]` (defaults 30 and 50).
//! It builds and runs the release binary (`target/release/edgewatch`) as a child, as an
//! installer would, so the daemon has its own process and CPU figures.
//!
//! 1. The daemon: a fresh store in a temp dir, raw readings kept (the default), 60 s windows,
//!    the web on a free 127.0.0.1 port, two sim sources of 250 sensors each every 150 ms in
//!    real time (3 fields each: 10,000 readings/s in total) with their seeded faults, and
//!    limit, stuck and silent rules, so that events exist. The sims stop by themselves after
//!    enough ticks for both phases plus 10 s, so that the totals can be compared exactly at
//!    the end. Measured once both sources are up and readings flow, after 3 s of warm-up.
//! 2. Baseline: `secs` seconds without clients. Ingestion rate = readings through the
//!    pipeline (`edgewatch_pipeline_readings_total`) per second over the phase; the sim's
//!    output (`edgewatch_source_readings_total`, both sources) and the stored raw readings
//!    (`edgewatch_store_written_records_total{table="raw"}`) beside it; daemon CPU from
//!    `/proc/PID/stat` (utime + stime, all threads) over the same span. Lag: the sims stamp
//!    each reading with its scheduled time and wait when they are late (never skip), so
//!    "wall clock − newest event time in the pipeline" (the watermark in `/api/v1/status` plus
//!    the 10 s allowed lateness, sampled every 500 ms) is how far acquisition fell behind.
//! 3. Load: `clients` threads, each with its own keep-alive connection (a ureq agent), ask in
//!    turn `/`, `/sensors/{id}` (a different sensor each time), `/api/v1/status`,
//!    `/api/v1/sensors` and `/api/v1/events`, back to back, without pause, for `secs`
//!    seconds (and at most [`MAX_REQUESTS_PER_CLIENT`] requests each). Every answer is read
//!    whole; a non-200 answer or a transport error counts as an error. Latency is measured
//!    by the client, from sending the request to having read the whole body. The same
//!    counters as in 2 are taken over the phase.
//! 4. Settle: after the clients stopped, wait until both sims have stopped and (at most 20 s
//!    more) the pipeline has every reading the sims produced and the store every reading the
//!    pipeline passed; then "lost" = produced − through the pipeline, and through − stored
//!    (raw), exactly.
//!
//! The clients run on the same 2 cores as the daemon: their own CPU is part of the load.
//! Only loopback addresses are used; every loop is bounded in time and count. Linux only
//! (`/proc`).

#[path = "support/daemon_process.rs"]
mod daemon_process;
use daemon_process::cpu_secs;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Sim sources, sensors in each, and their interval: 2 × 250 × 3 fields / 0.15 s = 10,000
/// readings/s.
const SOURCES: usize = 2;
const SENSORS_PER_SOURCE: usize = 250;
const INTERVAL_MS: u64 = 150;
const FIELDS: usize = 3;
/// The routes every client asks in turn; `{id}` is replaced by a sensor id.
const ROUTES: [&str; 5] = [
    "/",
    "/sensors/{id}",
    "/api/v1/status",
    "/api/v1/sensors",
    "/api/v1/events",
];
/// Upper bound of the requests of one client in one run, whatever the duration.
const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;
/// Warm-up between "readings flow" and the baseline.
const WARM_UP: Duration = Duration::from_secs(3);
/// How often `/metrics` and the CPU counters are sampled during a phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Readiness of the daemon, and the settling after the load.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The sims run this much longer than warm-up and both phases need.
const SIM_HEADROOM: Duration = Duration::from_secs(10);
/// The pipeline's allowed lateness (the default): watermark = newest event time − this.
const ALLOWED_LATENESS_NS: i64 = 10_000_000_000;
/// Upper bound of a daemon's exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound of one HTTP request (the daemon's own request timeout is 10 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("run it as: cargo run --release --example web_load -- [secs] [clients]");
        std::process::exit(2);
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers: [secs] [clients]"))
        .collect();
    let secs = args.first().copied().unwrap_or(30).clamp(1, 3_600);
    let clients = args.get(1).copied().unwrap_or(50).clamp(1, 1_000) as usize;
    let phase = Duration::from_secs(secs);
    let nominal = (SOURCES * SENSORS_PER_SOURCE * FIELDS) as f64 * 1000.0 / INTERVAL_MS as f64;

    let binary = daemon_process::build_binary();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, load average at start {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "workload: {SOURCES} sim sources × {SENSORS_PER_SOURCE} sensors × {FIELDS} fields every \
         {INTERVAL_MS} ms = {nominal:.0} readings/s; {secs} s baseline, then {clients} clients \
         for {secs} s; binary {}",
        binary.display()
    );

    let ticks = (WARM_UP + 2 * phase + SIM_HEADROOM).as_millis() as u64 / INTERVAL_MS;
    let mut daemon = Daemon::start(&binary, ticks);
    println!("daemon: pid {}, web on {}", daemon.pid, daemon.base);
    sleep(WARM_UP);

    let baseline = daemon.phase(phase, || {});
    baseline.print("baseline (no clients)", nominal);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + phase;
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let base = daemon.base.clone();
            let stop = stop.clone();
            thread::spawn(move || run_client(client, &base, deadline, &stop))
        })
        .collect();
    let loaded = daemon.phase(phase, || stop.store(true, Ordering::SeqCst));
    let mut routes = vec![RouteStats::default(); ROUTES.len()];
    for handle in handles {
        let client = handle.join().expect("a client thread");
        for (total, part) in routes.iter_mut().zip(client) {
            total.merge(part);
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    loaded.print(&format!("{clients} clients"), nominal);

    println!();
    println!(
        "| {:<16} | {:>9} | {:>8} | {:>6} | {:>8} | {:>8} | {:>8} | {:>9} |",
        "route", "requests", "req/s", "errors", "p50 ms", "p99 ms", "max ms", "KiB/answer"
    );
    println!("|{}|", ["---"; 8].join("|"));
    let mut all = RouteStats::default();
    for (route, stats) in ROUTES.iter().zip(&routes) {
        stats.print(route, load_secs);
        all.merge(stats.clone());
    }
    all.print("all", load_secs);

    let settled = daemon.settle(phase + SIM_HEADROOM);
    let exit = daemon.terminate();
    println!();
    println!(
        "totals after settling: produced by the sims {}, through the pipeline {}, stored raw {}; \
         lost: {} before the pipeline, {} before the store{}",
        settled.produced,
        settled.pipeline,
        settled.stored,
        settled.produced.saturating_sub(settled.pipeline),
        settled.pipeline.saturating_sub(settled.stored),
        if settled.complete {
            ""
        } else {
            " (NOT settled in time: the figures are not final)"
        }
    );
    println!(
        "web connections accepted {}, waits for a connection slot {}; daemon exit: {exit}",
        settled.connections, settled.connection_waits
    );
    println!();
    println!(
        "summary: ingestion {:.0} readings/s without clients, {:.0} with {clients} clients ({:+.1} %); \
         sims behind schedule at the end of the load {:.0} readings; {} requests ({:.0}/s), \
         {} errors, p50 {:.1} ms, p99 {:.1} ms; daemon CPU {:.0} % / {:.0} % of a core; \
         acquisition lag at most {:.1} s / {:.1} s; lost {}",
        baseline.rate(),
        loaded.rate(),
        (loaded.rate() / baseline.rate().max(1.0) - 1.0) * 100.0,
        loaded.behind(nominal),
        all.latencies_us.len(),
        all.latencies_us.len() as f64 / load_secs,
        all.errors,
        all.quantile_ms(0.5),
        all.quantile_ms(0.99),
        baseline.cpu_share() * 100.0,
        loaded.cpu_share() * 100.0,
        baseline.max_lag_secs,
        loaded.max_lag_secs,
        settled.produced.saturating_sub(settled.stored),
    );
}

/// One client: the routes in turn, back to back, until `deadline` or `stop`.
fn run_client(client: usize, base: &str, deadline: Instant, stop: &AtomicBool) -> Vec<RouteStats> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let mut stats = vec![RouteStats::default(); ROUTES.len()];
    let sensors = SOURCES * SENSORS_PER_SOURCE;
    for n in 0..MAX_REQUESTS_PER_CLIENT {
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let route = (client + n as usize) % ROUTES.len();
        let k = (client * 7919 + n as usize) % sensors;
        let sensor = format!(
            "s{}-{:03}",
            k / SENSORS_PER_SOURCE,
            k % SENSORS_PER_SOURCE + 1
        );
        let url = format!("{base}{}", ROUTES[route].replace("{id}", &sensor));
        let started = Instant::now();
        let answer = agent
            .get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_vec());
        let elapsed = started.elapsed();
        let s = &mut stats[route];
        match answer {
            Ok(body) => {
                s.latencies_us
                    .push(elapsed.as_micros().min(u64::MAX as u128) as u64);
                s.bytes += body.len() as u64;
            }
            Err(_) => s.errors += 1,
        }
    }
    stats
}

/// What the clients saw on one route.
#[derive(Clone, Default)]
struct RouteStats {
    /// Latency of each answered request, in µs.
    latencies_us: Vec<u64>,
    errors: u64,
    bytes: u64,
}

impl RouteStats {
    fn merge(&mut self, other: RouteStats) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.bytes += other.bytes;
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i] as f64 / 1000.0
    }

    fn print(&self, route: &str, secs: f64) {
        let n = self.latencies_us.len();
        println!(
            "| {:<16} | {:>9} | {:>8.1} | {:>6} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9.1} |",
            route,
            n,
            n as f64 / secs,
            self.errors,
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0),
            self.bytes as f64 / 1024.0 / n.max(1) as f64,
        );
    }
}

/// The counters of one `/metrics` scrape that the benchmark follows.
#[derive(Clone, Copy, Debug, Default)]
struct Scrape {
    /// Readings the sims handed to the pipeline's channel (both sources).
    produced: u64,
    /// Readings through the pipeline.
    pipeline: u64,
    /// Raw readings written to the store.
    stored: u64,
    /// Batches waiting in the pipeline's channel.
    queue: u64,
    connections: u64,
    connection_waits: u64,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = value as u64;
            if name.starts_with("edgewatch_source_readings_total{") {
                s.produced += value;
            } else if name == "edgewatch_pipeline_readings_total" {
                s.pipeline = value;
            } else if name == "edgewatch_store_written_records_total{table=\"raw\"}" {
                s.stored = value;
            } else if name == "edgewatch_pipeline_queue_batches" {
                s.queue = value;
            } else if name == "edgewatch_web_connections_total" {
                s.connections = value;
            } else if name == "edgewatch_web_connection_limit_waits_total" {
                s.connection_waits = value;
            }
        }
        s
    }
}

/// The daemon's counters over one phase.
struct Phase {
    secs: f64,
    start: Scrape,
    end: Scrape,
    cpu_secs: f64,
    /// The deepest the pipeline's channel got, in batches.
    max_queue: u64,
    /// The longest time the pipeline counter stood still between two samples.
    longest_stall: Duration,
    /// The most the newest event time in the pipeline trailed the wall clock.
    max_lag_secs: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        (self.end.pipeline - self.start.pipeline) as f64 / self.secs
    }

    /// How far the sims' output fell short of their schedule over the phase.
    fn behind(&self, nominal: f64) -> f64 {
        (nominal * self.secs - (self.end.produced - self.start.produced) as f64).max(0.0)
    }

    fn cpu_share(&self) -> f64 {
        self.cpu_secs / self.secs
    }

    fn print(&self, name: &str, nominal: f64) {
        let produced = self.end.produced - self.start.produced;
        println!(
            "{name}: {:.1} s; ingestion {:.0} readings/s through the pipeline (sims {:.0}/s, \
             nominal {nominal:.0}/s, behind schedule {:.0}); stored raw {:.0}/s; daemon CPU \
             {:.0} % of a core; pipeline queue at most {} batches; longest stall of the \
             pipeline counter {} ms; acquisition lag at most {:.1} s",
            self.secs,
            self.rate(),
            produced as f64 / self.secs,
            self.behind(nominal),
            (self.end.stored - self.start.stored) as f64 / self.secs,
            self.cpu_share() * 100.0,
            self.max_queue,
            self.longest_stall.as_millis(),
            self.max_lag_secs,
        );
    }
}

/// Totals after the load, once the pipeline and the store caught up.
struct Settled {
    produced: u64,
    pipeline: u64,
    stored: u64,
    connections: u64,
    connection_waits: u64,
    complete: bool,
}

/// The release daemon as a child process.
struct Daemon {
    child: Child,
    pid: u32,
    base: String,
    agent: ureq::Agent,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(binary: &Path, ticks: u64) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-web-load-")
            .tempdir()
            .expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut config = format!(
            r#"[gateway]
id = "gw-web-load"
[store]
path = "{}"
[web]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
[pipeline]
window_secs = 60
"#,
            dir.path().join("bench.redb").display()
        );
        for source in 0..SOURCES {
            config.push_str(&format!(
                r#"[[sources]]
type = "sim"
name = "sim-{source}"
sensor_prefix = "s{source}-"
sensors = {SENSORS_PER_SOURCE}
interval_ms = {INTERVAL_MS}
seed = {}
fault_interval_secs = 5
ticks = {ticks}
"#,
                40 + source
            ));
        }
        config.push_str(
            r#"[[rules]]
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
[[rules]]
name = "silent"
match = "*/temperature"
kind = "silent"
raise_secs = 10
"#,
        );
        let config_path = dir.path().join("edgewatch.toml");
        fs::write(&config_path, config).expect("write the daemon config");
        let log = dir.path().join("edgewatch.log");
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("daemon log"))
            .spawn()
            .expect("start edgewatch run");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        let mut daemon = Daemon {
            pid: child.id(),
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = daemon.status()
                && status["sources"]
                    .as_array()
                    .is_some_and(|s| s.len() == SOURCES && s.iter().all(|s| s["state"] == "up"))
                && status["pipeline"]["counters"]["readings"].as_u64() > Some(0)
            {
                return daemon;
            }
            if let Ok(Some(exit)) = daemon.child.try_wait() {
                panic!("edgewatch exited ({exit}):\n{}", tail(&daemon.log));
            }
            assert!(
                Instant::now() < deadline,
                "the daemon is not up within {READY_TIMEOUT:?}:\n{}",
                tail(&daemon.log)
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .ok()?;
        response.body_mut().read_to_string().ok()
    }

    fn scrape(&self) -> Scrape {
        Scrape::parse(&self.get("/metrics").unwrap_or_default())
    }

    fn status(&self) -> Option<Value> {
        self.get("/api/v1/status").and_then(|t| t.parse().ok())
    }

    /// Wall clock − newest event time through the pipeline, in seconds.
    fn lag_secs(&self) -> Option<f64> {
        let status = self.status()?;
        let watermark = status["pipeline"]["watermark"].as_str()?;
        let newest = edgewatch::model::parse_time(watermark)? + ALLOWED_LATENESS_NS;
        let now = edgewatch::model::now_ns();
        Some((now - newest) as f64 / 1e9)
    }

    /// Samples the counters for `length`, then calls `end` (which stops the load, if any).
    fn phase(&self, length: Duration, end: impl FnOnce()) -> Phase {
        let started = Instant::now();
        let start = self.scrape();
        let cpu0 = cpu_secs(self.pid).unwrap_or(0.0);
        let mut max_queue = start.queue;
        let mut last = (started, start.pipeline);
        let mut longest_stall = Duration::ZERO;
        let mut max_lag_secs: f64 = 0.0;
        while started.elapsed() < length {
            sleep(SAMPLE_EVERY.min(length.saturating_sub(started.elapsed())));
            if let Some(lag) = self.lag_secs() {
                max_lag_secs = max_lag_secs.max(lag);
            }
            let s = self.scrape();
            max_queue = max_queue.max(s.queue);
            let now = Instant::now();
            if s.pipeline != last.1 {
                last = (now, s.pipeline);
            } else {
                longest_stall = longest_stall.max(now - last.0);
            }
        }
        let end_scrape = self.scrape();
        let cpu = cpu_secs(self.pid).unwrap_or(0.0) - cpu0;
        let secs = started.elapsed().as_secs_f64();
        end();
        Phase {
            secs,
            start,
            end: end_scrape,
            cpu_secs: cpu,
            max_queue,
            longest_stall,
            max_lag_secs,
        }
    }

    /// Waits (at most `sims_left` plus their lag) until both sims have stopped, then (at
    /// most [`SETTLE_TIMEOUT`] more) until the pipeline has every reading the sims produced
    /// and the store every reading the pipeline passed.
    fn settle(&self, sims_left: Duration) -> Settled {
        let deadline = Instant::now() + sims_left + Duration::from_secs(30);
        while Instant::now() < deadline {
            let stopped = self.status().is_some_and(|s| {
                s["sources"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(|s| s["state"] == "stopped"))
            });
            if stopped {
                break;
            }
            sleep(Duration::from_millis(200));
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let s = self.scrape();
            let complete = s.produced == s.pipeline && s.pipeline == s.stored;
            if complete || Instant::now() >= deadline {
                return Settled {
                    produced: s.produced,
                    pipeline: s.pipeline,
                    stored: s.stored,
                    connections: s.connections,
                    connection_waits: s.connection_waits,
                    complete,
                };
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then the exit (SIGKILL after [`STOP_TIMEOUT`]); the exit as text.
    fn terminate(&mut self) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("{status} (had exited on its own)");
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("killed: no exit within {STOP_TIMEOUT:?} of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log, for panic messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
