//! The MQTT ingest benchmark: `edgewatch simulate mqtt` at full speed into a local Mosquitto
//! with the daemon subscribed, next to the broker's own ceiling measured in the same run, and
//! the latency from publish to the daemon at 10,000 msg/s.
//!
//! `cargo run --release --example mqtt_bench -- [count] [sensors]` (defaults 300000 1000).
//! It builds and runs the release binary (`target/release/edgewatch`) for both the daemon and
//! the publisher, as an installer would, so the daemon has its own process and CPU figures.
//!
//! 1. One Mosquitto 2.0 on a free 127.0.0.1 port, tuned for the bench: `max_inflight_messages
//!    0` and `max_queued_messages 0` (no limits: with the defaults the broker drops QoS 0
//!    messages queued beyond 1000 for a subscriber that falls behind, and lets only 20 QoS 1
//!    messages wait for an acknowledgement that edgewatch sends after its store commit),
//!    `set_tcp_nodelay true` (Nagle + delayed ACK make QoS 1 crawl), persistence off (the
//!    integration tests' harness autosaves every second, which would write the queues to disk
//!    during the run). `message_size_limit` (payloads are 120 bytes) and `sys_interval` ($SYS
//!    is not matched by the subscriptions) do not matter here and keep their defaults.
//! 2. Ceiling: `mosquitto_sub` (Mosquitto's C client, no processing) subscribed to the
//!    simulator's topics at QoS 0, its output counted line by line, while
//!    `edgewatch simulate mqtt --rate 0 --count N --qos 0` publishes. Rate = messages from the
//!    first to the last line the subscriber printed.
//! 3. edgewatch QoS 0 and 4. QoS 1: the release daemon as a child (`edgewatch run`: a fresh
//!    store in a temp dir, raw readings kept (the default), 60 s windows, web on a free port,
//!    one mqtt source `qos = 0` or `1`, clean session so that a finished phase leaves no
//!    session collecting the next phase's messages); started once its subscription shows in
//!    the broker's log; the same simulator at full speed (QoS 1 on both sides for 4). The
//!    counters in `/metrics` are sampled every 25 ms: `edgewatch_source_messages_total`
//!    (messages received) and `edgewatch_pipeline_readings_total` (readings through the
//!    pipeline). End to end = from the first sample with a reading in the pipeline to the
//!    first sample with every received message's readings through it. CPU from
//!    `/proc/PID/stat` (utime + stime, all threads, 10 ms ticks) over the same span, per
//!    message received: the figure to compare with Node-RED's and Python's.
//!    The ceiling runs again after the two, and edgewatch is compared with the mean of both.
//! 5. Latency: `--rate 10000 --count 100000` (10 s) at QoS 0 and QoS 1 into a fresh daemon,
//!    payloads stamped with microseconds (`--timestamp-precision us`; the reference payload's
//!    milliseconds are truncated and would add up to 1 ms). p50/p99 of
//!    `edgewatch_ingest_latency_seconds` (arrival in the mqtt source − payload timestamp: the
//!    publisher's queue, two loopback TCP hops and the broker), bucket-interpolated as
//!    Prometheus' `histogram_quantile` does. The arrival is taken when the source decodes the
//!    message; the batch goes to the pipeline's channel once rumqttc holds no more packets
//!    read from the socket (at most about 10), which this histogram does not include.
//!
//! Broker, publisher, daemon and the counting subscriber share the machine's cores; other
//! work on a shared machine moves the figures (compare the two ceilings). Every wait is
//! bounded: the publisher by `--duration-secs`, every phase by a timeout. Linux only (`/proc`).

#[path = "support/daemon_process.rs"]
mod daemon_process;
use daemon_process::cpu_secs;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The simulator's topics (its default prefix) and the filter of every subscriber.
const FILTER: &str = "plant/line1/sensors/#";
/// `gateway.id` of the daemon.
const GATEWAY: &str = "gw-bench";
/// Name of the daemon's mqtt source (the `source` label).
const SOURCE: &str = "bench";
/// The daemon's client id: `edgewatch-<gateway>-<source>`.
const DAEMON_CLIENT_ID: &str = "edgewatch-gw-bench-bench";
/// How often the daemon's `/metrics` (and the CPU counters) are sampled.
const POLL: Duration = Duration::from_millis(25);
/// After the publisher exited, a phase ends once the counters stood still this long.
const SETTLE: Duration = Duration::from_secs(1);
/// The rate and the length of the latency phases.
const LATENCY_RATE: f64 = 10_000.0;
const LATENCY_COUNT: u64 = 100_000;
/// Readiness of the broker, the daemon and a subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of a daemon's exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound of one HTTP request to the daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("run it as: cargo run --release --example mqtt_bench -- [count] [sensors]");
        std::process::exit(2);
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers: [count] [sensors]"))
        .collect();
    let count = args.first().copied().unwrap_or(300_000).max(1);
    let sensors = args.get(1).copied().unwrap_or(1000).clamp(1, 1_000_000);
    let binary = daemon_process::build_binary();
    let machine = Machine::describe();
    println!(
        "machine: {} CPUs (nproc), {}, load average at start {}",
        machine.cpus, machine.model, machine.load
    );
    println!(
        "workload: {count} messages from {sensors} sensors (3 readings each), reference \
         payloads on plant/line1/sensors/s-NNNN; binary {}",
        binary.display()
    );

    let broker = Broker::start();
    println!(
        "broker: mosquitto on 127.0.0.1:{} (pid {}), persistence off, max_inflight_messages 0, \
         max_queued_messages 0, set_tcp_nodelay true",
        broker.port, broker.pid
    );
    let bench = Bench {
        binary,
        broker,
        sensors,
    };

    let mut rows = Vec::new();
    let before = bench.ceiling("ceiling-1", count);
    before.print("ceiling (before)");
    let q0 = bench.daemon_phase("edgewatch-q0", 0, 0.0, count);
    q0.print("edgewatch QoS 0");
    let q1 = bench.daemon_phase("edgewatch-q1", 1, 0.0, count);
    q1.print("edgewatch QoS 1");
    let after = bench.ceiling("ceiling-2", count);
    after.print("ceiling (after)");
    let l0 = bench.daemon_phase("latency-q0", 0, LATENCY_RATE, LATENCY_COUNT);
    l0.print("10k msg/s QoS 0");
    let l1 = bench.daemon_phase("latency-q1", 1, LATENCY_RATE, LATENCY_COUNT);
    l1.print("10k msg/s QoS 1");

    let ceiling = (before.rate + after.rate) / 2.0;
    println!();
    println!(
        "| {:<30} | {:>9} | {:>10} | {:>6} | {:>9} | {:>8} | {:>8} | {:>9} | {:>9} |",
        "phase",
        "msg/s",
        "of ceiling",
        "lost",
        "daemon µs",
        "p50 ms",
        "p99 ms",
        "broker µs",
        "publish µs"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(32),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(11),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(11),
        "-".repeat(11)
    );
    rows.push(before.row("ceiling before: mosquitto_sub", ceiling));
    rows.push(q0.row("edgewatch QoS 0, full speed", ceiling));
    rows.push(q1.row("edgewatch QoS 1, full speed", ceiling));
    rows.push(after.row("ceiling after: mosquitto_sub", ceiling));
    rows.push(l0.row("edgewatch QoS 0, 10k msg/s", ceiling));
    rows.push(l1.row("edgewatch QoS 1, 10k msg/s", ceiling));
    for row in rows {
        println!("{row}");
    }
    println!(
        "(ceiling = mean of both mosquitto_sub runs, {ceiling:.0} msg/s; daemon/broker/publish \
         µs = CPU time per message received / published; p50/p99 bucket-interpolated from \
         edgewatch_ingest_latency_seconds, publish → arrival in the mqtt source)"
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "target ≥ 150,000 msg/s at QoS 0 with 0 lost: {} ({:.0} msg/s, {} lost; the broker's \
         own ceiling here is {ceiling:.0})",
        met(q0.rate >= 150_000.0 && q0.lost() == 0),
        q0.rate,
        q0.lost()
    );
    for (name, phase) in [("QoS 0", &l0), ("QoS 1", &l1)] {
        let p99 = phase.quantile(0.99).unwrap_or(f64::NAN);
        println!(
            "target p99 ≤ 20 ms at 10,000 msg/s, {name}: {} (p99 {:.2} ms, {} lost)",
            met(p99 <= 0.020 && phase.lost() == 0),
            p99 * 1e3,
            phase.lost()
        );
    }
    println!(
        "command: cargo run --release --example mqtt_bench -- {count} {sensors}   (nproc {}, \
         order: ceiling, QoS 0, QoS 1, ceiling, 10k QoS 0, 10k QoS 1)",
        machine.cpus
    );
}

/// The machine, for the report.
struct Machine {
    cpus: usize,
    model: String,
    load: String,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let load = fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Machine {
            cpus: thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            load,
        }
    }
}

/// What stays the same across the phases.
struct Bench {
    binary: PathBuf,
    broker: Broker,
    sensors: u64,
}

/// What one phase measured.
struct Phase {
    /// Messages the publisher was asked for.
    count: u64,
    /// Messages the publisher wrote (its summary line).
    published: u64,
    /// Messages the subscriber (mosquitto_sub or the daemon) received.
    received: u64,
    /// Readings that went through the daemon's pipeline (0 for the ceiling).
    readings: u64,
    /// Messages per second, end to end.
    rate: f64,
    /// The span `rate` is measured over.
    span: Duration,
    /// The publisher's own rate (its summary line).
    publisher_rate: f64,
    /// CPU seconds over the phase.
    consumer_cpu: f64,
    broker_cpu: f64,
    publisher_cpu: f64,
    /// edgewatch only: per-source message rate (first to last message received).
    source_rate: Option<f64>,
    /// edgewatch only: delta of the latency histogram: (le, cumulative count).
    latency: Vec<(f64, u64)>,
    latency_count: u64,
    latency_sum: f64,
    /// edgewatch only: peak RSS in MB, unacknowledged messages at the end, exit status,
    /// warnings logged.
    daemon: Option<DaemonEnd>,
}

struct DaemonEnd {
    peak_rss_mb: u64,
    unacked: f64,
    exit: String,
    warnings: Vec<String>,
}

impl Phase {
    fn lost(&self) -> u64 {
        self.count.saturating_sub(self.received)
    }

    /// `histogram_quantile`: linear interpolation inside the bucket holding the rank; the
    /// first bucket starts at 0; a rank in the +Inf bucket gives the highest finite bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.latency.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut previous = (0.0, 0u64);
        for &(le, cumulative) in &self.latency {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return Some(previous.0);
                }
                let inside = (cumulative - previous.1) as f64;
                let fraction = if inside > 0.0 {
                    (rank - previous.1 as f64) / inside
                } else {
                    1.0
                };
                return Some(previous.0 + (le - previous.0) * fraction);
            }
            previous = (le, cumulative);
        }
        None
    }

    fn print(&self, name: &str) {
        let secs = self.span.as_secs_f64();
        println!(
            "{name:<17} {} of {} received ({} lost) in {secs:.2} s = {:.0} msg/s end to end; \
             publisher wrote {} at {:.0} msg/s; CPU: {} {:.2} s ({:.1} µs/msg, {:.0} % of a \
             core), broker {:.2} s ({:.1} µs/msg), publisher {:.2} s ({:.1} µs/msg)",
            self.received,
            self.count,
            self.lost(),
            self.rate,
            self.published,
            self.publisher_rate,
            if self.daemon.is_some() {
                "daemon"
            } else {
                "mosquitto_sub"
            },
            self.consumer_cpu,
            per_message_us(self.consumer_cpu, self.received),
            100.0 * self.consumer_cpu / secs,
            self.broker_cpu,
            per_message_us(self.broker_cpu, self.received),
            self.publisher_cpu,
            per_message_us(self.publisher_cpu, self.published),
        );
        if let Some(end) = &self.daemon {
            println!(
                "{:<17} readings through the pipeline {} ({:.2} per message); source alone \
                 {:.0} msg/s; unacked at the end {}; peak RSS {} MB; exit {}",
                "",
                self.readings,
                self.readings as f64 / self.received.max(1) as f64,
                self.source_rate.unwrap_or(0.0),
                end.unacked,
                end.peak_rss_mb,
                end.exit
            );
            if self.latency_count > 0 {
                let below = |le: f64| {
                    self.latency
                        .iter()
                        .find(|(b, _)| (*b - le).abs() < 1e-12)
                        .map_or(f64::NAN, |(_, c)| *c as f64 / self.latency_count as f64)
                };
                println!(
                    "{:<17} latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms \
                     (bucket-interpolated), mean {:.3} ms; {:.1} % ≤ 1 ms, {:.2} % ≤ 20 ms",
                    "",
                    self.quantile(0.5).unwrap_or(f64::NAN) * 1e3,
                    self.quantile(0.9).unwrap_or(f64::NAN) * 1e3,
                    self.quantile(0.99).unwrap_or(f64::NAN) * 1e3,
                    self.quantile(0.999).unwrap_or(f64::NAN) * 1e3,
                    self.latency_sum / self.latency_count as f64 * 1e3,
                    100.0 * below(0.001),
                    100.0 * below(0.02),
                );
            }
            for line in end.warnings.iter().take(5) {
                println!("{:<17} daemon log: {line}", "");
            }
            if end.warnings.len() > 5 {
                println!("{:<17} daemon log: ... {} more", "", end.warnings.len() - 5);
            }
        }
    }

    fn row(&self, name: &str, ceiling: f64) -> String {
        let ms = |q: f64| {
            if self.latency_count > 0 {
                format!("{:.3}", self.quantile(q).unwrap_or(f64::NAN) * 1e3)
            } else {
                "—".into()
            }
        };
        let daemon = if self.daemon.is_some() {
            format!("{:.1}", per_message_us(self.consumer_cpu, self.received))
        } else {
            "—".into()
        };
        format!(
            "| {name:<30} | {:>9.0} | {:>10.2} | {:>6} | {daemon:>9} | {:>8} | {:>8} | {:>9.1} | \
             {:>10.1} |",
            self.rate,
            self.rate / ceiling,
            self.lost(),
            ms(0.5),
            ms(0.99),
            per_message_us(self.broker_cpu, self.received),
            per_message_us(self.publisher_cpu, self.published),
        )
    }
}

fn per_message_us(cpu_secs: f64, messages: u64) -> f64 {
    cpu_secs * 1e6 / messages.max(1) as f64
}

impl Bench {
    /// Phase timeout: generous for the machine's worst moments, bounded all the same.
    fn timeout(count: u64, rate: f64) -> Duration {
        let publishing = if rate > 0.0 {
            count as f64 / rate
        } else {
            count as f64 / 5_000.0
        };
        Duration::from_secs_f64(30.0 + 2.0 * publishing)
    }

    /// Runs the simulator to completion on its own thread: (summary line, CPU seconds, exit).
    fn publish(
        &self,
        client_id: &str,
        qos: u8,
        rate: f64,
        count: u64,
    ) -> JoinHandle<(String, f64, ExitStatus)> {
        let timeout = Self::timeout(count, rate);
        let mut child = Command::new(&self.binary)
            .args(["simulate", "mqtt", "--host", "127.0.0.1", "--port"])
            .arg(self.broker.port.to_string())
            .arg("--sensors")
            .arg(self.sensors.to_string())
            .arg("--rate")
            .arg(rate.to_string())
            .arg("--count")
            .arg(count.to_string())
            .arg("--qos")
            .arg(qos.to_string())
            .args(["--timestamp-precision", "us", "--client-id", client_id])
            .arg("--duration-secs")
            .arg(format!("{:.0}", timeout.as_secs_f64()))
            .args(["--ack-timeout-secs", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start edgewatch simulate mqtt");
        thread::spawn(move || {
            let mut out = String::new();
            let _ = child
                .stdout
                .take()
                .expect("piped stdout")
                .read_to_string(&mut out);
            // Its CPU times are readable until it is reaped: wait for the zombie first.
            let pid = child.id();
            let deadline = Instant::now() + STOP_TIMEOUT;
            let mut cpu = cpu_secs(pid).unwrap_or(0.0);
            while proc_state(pid) != Some('Z') && Instant::now() < deadline {
                sleep(Duration::from_millis(2));
                cpu = cpu_secs(pid).unwrap_or(cpu);
            }
            cpu = cpu_secs(pid).unwrap_or(cpu);
            let status = child.wait().expect("reap the simulator");
            (out.lines().last().unwrap_or("").to_string(), cpu, status)
        })
    }

    /// The broker's ceiling: mosquitto_sub counts the simulator's messages.
    fn ceiling(&self, name: &str, count: u64) -> Phase {
        let client_id = format!("bench-sub-{name}");
        let offset = self.broker.log_len();
        let mut sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.broker.port.to_string())
            .args(["-t", FILTER, "-q", "0", "-i", &client_id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto_sub (Debian package mosquitto-clients)");
        let sub_pid = sub.id();
        let lines = Arc::new(AtomicU64::new(0));
        let mut stdout = sub.stdout.take().expect("piped stdout");
        let counted = lines.clone();
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let (mut first, mut last) = (None, None);
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        let new = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                        if new > 0 {
                            first.get_or_insert(now);
                            last = Some(now);
                            counted.fetch_add(new, Ordering::Release);
                        }
                    }
                }
            }
            (first, last)
        });
        self.broker
            .wait_subscribed(offset, &format!(": {client_id} 0 {FILTER}"));

        let cpu0 = (
            cpu_secs(sub_pid).unwrap_or(0.0),
            cpu_secs(self.broker.pid).unwrap_or(0.0),
        );
        let publisher = self.publish(&format!("bench-pub-{name}"), 0, 0.0, count);
        let deadline = Instant::now() + Self::timeout(count, 0.0);
        let mut last_change = (Instant::now(), 0);
        let mut sub_cpu = cpu0.0;
        loop {
            sleep(POLL);
            let now = Instant::now();
            let n = lines.load(Ordering::Acquire);
            if n != last_change.1 {
                last_change = (now, n);
                sub_cpu = cpu_secs(sub_pid).unwrap_or(sub_cpu);
            }
            let settled = n >= count || now - last_change.0 >= SETTLE;
            if (publisher.is_finished() && settled) || now > deadline {
                break;
            }
        }
        let sub_cpu = cpu_secs(sub_pid).unwrap_or(sub_cpu) - cpu0.0;
        let broker_cpu = cpu_secs(self.broker.pid).unwrap_or(0.0) - cpu0.1;
        let _ = sub.kill();
        let _ = sub.wait();
        let (first, last) = reader.join().expect("reader thread");
        let (summary, publisher_cpu, status) = publisher.join().expect("publisher thread");
        check_publisher(&summary, status);
        let received = lines.load(Ordering::Acquire);
        let span = match (first, last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        };
        Phase {
            count,
            published: summary_field(&summary, "published").unwrap_or(0.0) as u64,
            received,
            readings: 0,
            rate: received.saturating_sub(1) as f64 / span.as_secs_f64().max(1e-9),
            span,
            publisher_rate: summary_field(&summary, "rate_msg_s").unwrap_or(0.0),
            consumer_cpu: sub_cpu,
            broker_cpu,
            publisher_cpu,
            source_rate: None,
            latency: Vec::new(),
            latency_count: 0,
            latency_sum: 0.0,
            daemon: None,
        }
    }

    /// One daemon, one publisher run into it.
    fn daemon_phase(&self, name: &str, qos: u8, rate: f64, count: u64) -> Phase {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-mqtt-bench-")
            .tempdir()
            .expect("temp dir");
        let web_port = free_port();
        let config = dir.path().join("edgewatch.toml");
        fs::write(
            &config,
            format!(
                r#"[gateway]
id = "{GATEWAY}"
[store]
path = "{store}"
[web]
listen = "127.0.0.1:{web_port}"
[log]
level = "warn"
[pipeline]
window_secs = 60
[[sources]]
type = "mqtt"
name = "{SOURCE}"
host = "127.0.0.1"
port = {broker}
clean_session = true
topics = ["{FILTER}"]
qos = {qos}
"#,
                store = dir.path().join("bench.redb").display(),
                broker = self.broker.port,
            ),
        )
        .expect("write the daemon config");
        let log_path = dir.path().join("edgewatch.log");
        let offset = self.broker.log_len();
        let mut daemon = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("daemon log"))
            .spawn()
            .expect("start edgewatch run");
        let pid = daemon.id();
        let base = format!("http://127.0.0.1:{web_port}");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        let get = |path: &str| -> Option<String> {
            let mut response = http.get(&format!("{base}{path}")).call().ok()?;
            response.body_mut().read_to_string().ok()
        };
        // Up, and subscribed: `up` comes with the ConnAck, before the broker has the
        // subscription; messages published in between would not reach the daemon.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status: Option<Value> = get("/api/v1/status").and_then(|t| t.parse().ok());
            if status.is_some_and(|s| s["sources"][0]["state"] == "up") {
                break;
            }
            if let Ok(Some(exit)) = daemon.try_wait() {
                panic!("edgewatch exited ({exit}):\n{}", tail(&log_path));
            }
            assert!(
                Instant::now() < deadline,
                "the daemon's source is not up within {READY_TIMEOUT:?}:\n{}",
                tail(&log_path)
            );
            sleep(Duration::from_millis(20));
        }
        self.broker
            .wait_subscribed(offset, &format!(": {DAEMON_CLIENT_ID} {qos} {FILTER}"));

        let baseline = Scrape::parse(&get("/metrics").expect("first scrape"));
        let cpu0 = (
            cpu_secs(pid).unwrap_or(0.0),
            cpu_secs(self.broker.pid).unwrap_or(0.0),
        );
        let publisher = self.publish(&format!("bench-pub-{name}"), qos, rate, count);
        let deadline = Instant::now() + Self::timeout(count, rate);
        let mut samples: Vec<Sample> = Vec::new();
        loop {
            sleep(POLL);
            let Some(text) = get("/metrics") else {
                assert!(Instant::now() < deadline, "no /metrics from the daemon");
                continue;
            };
            let scrape = Scrape::parse(&text);
            let sample = Sample {
                at: Instant::now(),
                messages: (scrape.messages - baseline.messages) as u64,
                readings: (scrape.readings - baseline.readings) as u64,
                daemon_cpu: cpu_secs(pid).unwrap_or(0.0) - cpu0.0,
                broker_cpu: cpu_secs(self.broker.pid).unwrap_or(0.0) - cpu0.1,
            };
            let settled = samples.last().is_some_and(|last| {
                last.messages == sample.messages && last.readings == sample.readings
            }) && samples
                .iter()
                .rev()
                .take_while(|s| s.messages == sample.messages && s.readings == sample.readings)
                .last()
                .is_some_and(|s| sample.at - s.at >= SETTLE);
            samples.push(sample);
            if (publisher.is_finished() && settled) || Instant::now() > deadline {
                break;
            }
        }
        let end_scrape = Scrape::parse(&get("/metrics").unwrap_or_default());
        let peak_rss_mb = proc_status_kb(pid, "VmHWM:").unwrap_or(0) / 1024;
        let (summary, publisher_cpu, status) = publisher.join().expect("publisher thread");
        check_publisher(&summary, status);
        let exit = terminate(&mut daemon);
        let warnings: Vec<String> = fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect();

        let last = samples.last().expect("at least one sample");
        let (messages, readings) = (last.messages, last.readings);
        // The first sample with readings in the pipeline, and the first with all of them.
        let start = samples.iter().find(|s| s.readings > 0);
        let end = samples
            .iter()
            .find(|s| s.messages == messages && s.readings == readings)
            .expect("the last sample qualifies");
        let per_message = readings as f64 / messages.max(1) as f64;
        let (rate_e2e, span) = match start {
            Some(s) if end.at > s.at => (
                (readings - s.readings) as f64 / per_message / (end.at - s.at).as_secs_f64(),
                end.at - s.at,
            ),
            _ => (0.0, Duration::ZERO),
        };
        let source_rate = samples.iter().find(|s| s.messages > 0).and_then(|s| {
            let done = samples.iter().find(|x| x.messages == messages)?;
            (done.at > s.at)
                .then(|| (messages - s.messages) as f64 / (done.at - s.at).as_secs_f64())
        });
        let latency = end_scrape
            .buckets
            .iter()
            .map(|&(le, c)| {
                let before = baseline
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0, |x| x.1);
                (le, c - before)
            })
            .collect();
        Phase {
            count,
            published: summary_field(&summary, "published").unwrap_or(0.0) as u64,
            received: messages,
            readings,
            rate: rate_e2e,
            span,
            publisher_rate: summary_field(&summary, "rate_msg_s").unwrap_or(0.0),
            consumer_cpu: end.daemon_cpu,
            broker_cpu: end.broker_cpu,
            publisher_cpu,
            source_rate,
            latency,
            latency_count: (end_scrape.latency_count - baseline.latency_count) as u64,
            latency_sum: end_scrape.latency_sum - baseline.latency_sum,
            daemon: Some(DaemonEnd {
                peak_rss_mb,
                unacked: end_scrape.unacked,
                exit,
                warnings,
            }),
        }
    }
}

/// One sample of the daemon's counters, relative to the phase's start.
struct Sample {
    at: Instant,
    messages: u64,
    readings: u64,
    daemon_cpu: f64,
    broker_cpu: f64,
}

/// The figures of one `/metrics` exposition that the bench reads.
#[derive(Default)]
struct Scrape {
    messages: f64,
    readings: f64,
    unacked: f64,
    /// (le, cumulative count) of the source's latency histogram, +Inf last.
    buckets: Vec<(f64, u64)>,
    latency_count: f64,
    latency_sum: f64,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let label = format!("source=\"{SOURCE}\"");
        let value = |line: &str| -> f64 {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let ours = line.contains(&label);
            match name {
                "edgewatch_source_messages_total" if ours => scrape.messages = value(line),
                "edgewatch_pipeline_readings_total" => scrape.readings = value(line),
                "edgewatch_mqtt_unacked_messages" if ours => scrape.unacked = value(line),
                "edgewatch_ingest_latency_seconds_count" if ours => {
                    scrape.latency_count = value(line)
                }
                "edgewatch_ingest_latency_seconds_sum" if ours => scrape.latency_sum = value(line),
                "edgewatch_ingest_latency_seconds_bucket" if ours => {
                    let le = line
                        .split("le=\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .map(|le| {
                            if le == "+Inf" {
                                f64::INFINITY
                            } else {
                                le.parse().unwrap_or(f64::NAN)
                            }
                        })
                        .unwrap_or(f64::NAN);
                    scrape.buckets.push((le, value(line) as u64));
                }
                _ => {}
            }
        }
        scrape.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        scrape
    }
}

/// Panics unless the simulator published everything (and got every PUBACK at QoS 1).
fn check_publisher(summary: &str, status: ExitStatus) {
    assert!(
        status.success() && summary.contains(" errors=0"),
        "the simulator failed ({status}): {summary}"
    );
}

/// A `key=value` number of the simulator's summary line.
fn summary_field(summary: &str, key: &str) -> Option<f64> {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// SIGTERM, then the exit (SIGKILL after `STOP_TIMEOUT`); the status as text.
fn terminate(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("{status} (had exited on its own)");
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    format!("killed: no exit within {STOP_TIMEOUT:?} of SIGTERM")
}

/// Sends SIGNAL to `pid` (a child of ours that has not been reaped) through `kill`.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .status();
}

/// The last lines of a log, for panic messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One private Mosquitto, tuned for the bench (see the top of this file).
struct Broker {
    child: Child,
    pid: u32,
    port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-bench-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        fs::write(
            &config,
            format!(
                "# edgewatch's examples/mqtt_bench.rs\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 set_tcp_nodelay true\n\
                 max_inflight_messages 0\n\
                 max_queued_messages 0\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 log_type notice\n\
                 log_type information\n\
                 log_type subscribe\n"
            ),
        )
        .expect("write mosquitto.conf");
        let log = File::create(dir.path().join("mosquitto.log")).expect("mosquitto.log");
        let binary = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (Debian package mosquitto)");
        let mut broker = Broker {
            pid: child.id(),
            child,
            port,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(broker.log_since(0).contains(" running") && accepts(port)) {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited ({status}):\n{}", broker.log_since(0));
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not ready:\n{}",
                broker.log_since(0)
            );
            sleep(Duration::from_millis(20));
        }
        broker
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = OpenOptions::new().read(true).open(self.log_path())
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// Waits until the broker logged the subscription line `needle` (`: CLIENT QOS FILTER`)
    /// after `offset`.
    fn wait_subscribed(&self, offset: u64, needle: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.log_since(offset).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no subscription {needle:?} in the broker's log:\n{}",
                self.log_since(offset)
            );
            sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// The state letter of process `pid` (`Z` for a zombie).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// A `kB` line of `/proc/PID/status`.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
