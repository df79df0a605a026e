//! Issue 5's Modbus benchmark, side by side in one run: requests per cycle of the ~200-register
//! map with gaps (examples/support/modbus_map.rs), naive (one request per point) against the
//! planner's reads; then points/s actually read from the test simulator
//! (tests/support/modbus_sim.py, pymodbus 3.16.1) with the planned reads, polling back to
//! back, next to the simulator's own ceiling measured the same way in the same run, over TCP
//! and over RTU (a socat pty pair).
//!
//! `cargo run --release --example modbus_bench -- [SECONDS]` (default 10 seconds per
//! measurement; 7 measurements). Needs the venv that ./scripts/test makes (or
//! EDGEWATCH_MODBUS_PYTHON) and socat.
//!
//! The poll loop is the daemon's own: each cycle is one `poll_unit` of the scheduler
//! (src/source/modbus/poll.rs) over a `Link` (src/source/modbus/link.rs: tokio-modbus under a
//! timeout, TCP_NODELAY, the RTU inter-frame silence), with the map's `Planner`; every value
//! comes out of `Planner::decode`. A point counts when its decoded value equals the one the
//! simulator's layout gives (computed once with `Planner::run_cycle` on
//! `modbus_map::sim_answer`); a failed read, an exception or a wrong value counts as an
//! error. The ceiling is what examples/modbus_sim_ceiling.rs measures: 125-register reads of
//! the bulk block (holding 1000..1125) back to back with a plain tokio-modbus client (no
//! edgewatch code, so that the ceiling is the simulator's, not the link's), each answer
//! checked: what the simulator serves when every request carries the most registers Modbus
//! allows.
//!
//! Measurements (each SECONDS long, client and simulator on the same machine):
//! - TCP, 1 connection (unit 1): the map, then the ceiling;
//! - TCP, 3 connections (units 1, 2, 3, like three sources polled at once), both again;
//! - RTU over the pty, inter-frame silence 0 (a pty has no line timing: this measures the
//!   software), both;
//! - RTU with the daemon's default inter-frame silence at 19200 baud (2.0 ms after every
//!   exchange, what a real bus needs; its real line time is not simulated): the map only
//!   (the plain client keeps no silence: its ceiling is the one above).
//!
//! Cycle times: p50 / p99 of one `poll_unit` of the whole map (ceiling: of one read).

#[path = "../tests/support/modbus.rs"]
mod modbus;
#[path = "support/modbus_map.rs"]
mod modbus_map;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewatch::config::default_inter_frame_silence_us;
use edgewatch::modbus::{Limits, Planner};
use edgewatch::source::modbus::link::{DataBits, Endpoint, Link, Parity, SerialSettings, StopBits};
use edgewatch::source::modbus::poll::{Outcome, Policy, poll_unit};
use modbus::{ModbusSim, SimOptions};
use tokio::sync::Barrier;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader, rtu, tcp};

const USAGE: &str = "cargo run --release --example modbus_bench -- [SECONDS]";
/// Registers per ceiling read: the Modbus maximum.
const CEILING_COUNT: u16 = 125;
/// Timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How many failures each worker prints.
const SHOWN_ERRORS: u64 = 3;

/// What one worker (one connection) measured.
#[derive(Default)]
struct Stats {
    /// Cycles (map) or reads (ceiling) completed, with their durations.
    times: Vec<Duration>,
    requests: u64,
    /// Decoded values equal to the simulator's (map), registers checked (ceiling).
    points: u64,
    /// Failed reads, exceptions, wrong values.
    errors: u64,
    elapsed: Duration,
}

impl Stats {
    fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        if self.errors <= SHOWN_ERRORS {
            eprintln!("  error: {what}");
        }
    }
}

/// All workers of one measurement together.
struct Measured {
    connections: usize,
    cycles: u64,
    requests: u64,
    points: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Measured {
    fn new(stats: Vec<Stats>) -> Measured {
        let mut times: Vec<Duration> = stats.iter().flat_map(|s| s.times.clone()).collect();
        times.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if times.is_empty() {
                return f64::NAN;
            }
            let i = ((times.len() - 1) as f64 * p).round() as usize;
            times[i].as_secs_f64() * 1000.0
        };
        Measured {
            connections: stats.len(),
            cycles: times.len() as u64,
            requests: stats.iter().map(|s| s.requests).sum(),
            points: stats.iter().map(|s| s.points).sum(),
            errors: stats.iter().map(|s| s.errors).sum(),
            seconds: stats
                .iter()
                .map(|s| s.elapsed.as_secs_f64())
                .fold(0.0, f64::max),
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
        }
    }

    fn points_per_s(&self) -> f64 {
        self.points as f64 / self.seconds
    }

    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// One measured setup: where to connect and how many connections.
struct Setup {
    name: String,
    endpoint: Endpoint,
    /// One connection (link) per unit, polled at once.
    units: Vec<u8>,
    /// Measure the simulator's ceiling too.
    ceiling: bool,
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("run it as: {USAGE}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = match args.as_slice() {
        [] => 10,
        [s] => s.parse().unwrap_or_else(|_| {
            eprintln!("SECONDS {s:?} is not a number; usage: {USAGE}");
            std::process::exit(2)
        }),
        _ => {
            eprintln!("usage: {USAGE}");
            std::process::exit(2)
        }
    };
    let duration = Duration::from_secs(seconds.max(1));

    let points = modbus_map::register_map();
    let planner = Planner::new(points.clone(), Limits::default());
    let naive = planner.naive_requests();
    let planned = planner.reads().len();
    let registers: u32 = points
        .iter()
        .filter(|p| !p.table.is_bits())
        .map(|p| u32::from(p.data_type.width()))
        .sum();
    println!(
        "register map (examples/support/modbus_map.rs): {} points, {registers} registers with \
         gaps, plus {} coils/discrete inputs",
        points.len(),
        points.iter().filter(|p| p.table.is_bits()).count()
    );
    println!(
        "requests per cycle: naive {naive} (one per point), planned {planned} (max_gap {}): \
         {:.1}x fewer",
        planner.limits().max_gap,
        naive as f64 / planned as f64
    );
    println!(
        "  planned reads: {}",
        planner
            .reads()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "each measurement {seconds} s, back to back; the map: one poll_unit (src/source/modbus/\
         poll.rs over a Link) per cycle; the ceiling: {CEILING_COUNT}-register reads of holding \
         {}..{} with a plain tokio-modbus client",
        modbus_map::BULK.start,
        modbus_map::BULK.start + CEILING_COUNT
    );
    println!(
        "figures are noisy (2 shared cores, client and simulator on the same machine): run it \
         twice"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // (setup, the map, the ceiling; `None`: the one of the row above).
    let mut rows: Vec<(String, Measured, Option<Measured>)> = Vec::new();
    {
        let sim = ModbusSim::tcp(SimOptions::default());
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: sim.port(),
        };
        for units in [vec![1u8], vec![1, 2, 3]] {
            let setup = Setup {
                name: format!(
                    "tcp 127.0.0.1, {} connection{}",
                    units.len(),
                    if units.len() == 1 { "" } else { "s" }
                ),
                endpoint: endpoint.clone(),
                units,
                ceiling: true,
            };
            let (map, ceiling) = measure(&runtime, &setup, &planner, duration);
            rows.push((setup.name, map, ceiling));
        }
        drop(sim);
    }
    {
        let options = SimOptions::default();
        let baud = options.baud;
        let sim = ModbusSim::rtu(options);
        let device = sim.client_tty().to_string_lossy().into_owned();
        let line_silence = Duration::from_micros(default_inter_frame_silence_us(baud));
        for silence in [Duration::ZERO, line_silence] {
            let setup = Setup {
                name: format!(
                    "rtu over a socat pty, silence {:.1} ms",
                    silence.as_secs_f64() * 1000.0
                ),
                endpoint: Endpoint::Serial(SerialSettings {
                    device: device.clone(),
                    baud,
                    parity: Parity::None,
                    data_bits: DataBits::Eight,
                    stop_bits: StopBits::One,
                    inter_frame_silence: silence,
                }),
                units: vec![1],
                // The plain client keeps no silence: its ceiling is the row above.
                ceiling: silence.is_zero(),
            };
            let (map, ceiling) = measure(&runtime, &setup, &planner, duration);
            rows.push((setup.name, map, ceiling));
        }
        drop(sim);
    }

    println!();
    println!(
        "summary: {naive} -> {planned} requests per cycle ({:.1}x fewer; target >= 10x); \
         map = the planned reads through edgewatch's poll_unit, ceiling = the simulator's \
         own (125-register reads, plain client)",
        naive as f64 / planned as f64
    );
    println!(
        "{:<38} {:>12} {:>10} {:>16} {:>11} {:>16} {:>6}",
        "",
        "map points/s",
        "map req/s",
        "ceiling regs/s",
        "ceil. req/s",
        "cycle p50/p99 ms",
        "errors"
    );
    let mut last_ceiling: Option<&Measured> = None;
    for (name, map, ceiling) in &rows {
        let own = ceiling.is_some();
        if let Some(c) = ceiling {
            last_ceiling = Some(c);
        }
        let c = last_ceiling.expect("the first row of each transport has a ceiling");
        println!(
            "{name:<38} {:>12.0} {:>10.0} {:>16} {:>11} {:>16} {:>6}",
            map.points_per_s(),
            map.requests_per_s(),
            if own {
                format!("{:.0}", c.points_per_s())
            } else {
                "(above)".into()
            },
            if own {
                format!("{:.0}", c.requests_per_s())
            } else {
                "(above)".into()
            },
            format!("{:.2} / {:.2}", map.p50_ms, map.p99_ms),
            map.errors + ceiling.as_ref().map_or(0, |c| c.errors)
        );
    }
    println!("target >= 100,000 points/s with the planned reads where the simulator can serve it");
}

/// The map, then (if `setup.ceiling`) the ceiling, on `setup`, each for `duration`.
fn measure(
    runtime: &tokio::runtime::Runtime,
    setup: &Setup,
    planner: &Planner,
    duration: Duration,
) -> (Measured, Option<Measured>) {
    println!();
    println!("{}:", setup.name);
    let map = Measured::new(runtime.block_on(run_workers(setup, |unit, link, barrier| {
        map_worker(unit, planner.clone(), link, barrier, duration)
    })));
    let per_cycle = planner.points().len();
    println!(
        "  map:     {} cycles of {per_cycle} points, {} requests ({:.0}/s), {} points decoded \
         = {:.0} points/s; cycle ms p50 {:.2}, p99 {:.2}; {} errors",
        map.cycles,
        map.requests,
        map.requests_per_s(),
        map.points,
        map.points_per_s(),
        map.p50_ms,
        map.p99_ms,
        map.errors
    );
    if !setup.ceiling {
        return (map, None);
    }
    let ceiling = Measured::new(runtime.block_on(run_workers(setup, |unit, link, barrier| {
        ceiling_worker(unit, link, barrier, duration)
    })));
    println!(
        "  ceiling: {} reads of {CEILING_COUNT} registers ({:.0}/s) = {:.0} registers/s; \
         read ms p50 {:.2}, p99 {:.2}; {} errors",
        ceiling.requests,
        ceiling.requests_per_s(),
        ceiling.points_per_s(),
        ceiling.p50_ms,
        ceiling.p99_ms,
        ceiling.errors
    );
    println!(
        "  map / ceiling: {:.0}% of the registers/s, {:.0}% of the requests/s ({} connection(s))",
        100.0 * map.points_per_s() / ceiling.points_per_s(),
        100.0 * map.requests_per_s() / ceiling.requests_per_s(),
        map.connections
    );
    (map, Some(ceiling))
}

/// One task per unit of `setup`, each with its own link; they start together after their
/// warm-up and run for `duration`.
async fn run_workers<W, F>(setup: &Setup, worker: W) -> Vec<Stats>
where
    W: Fn(u8, Link, Arc<Barrier>) -> F,
    F: Future<Output = Stats> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(setup.units.len()));
    let tasks: Vec<_> = setup
        .units
        .iter()
        .map(|&unit| {
            let link = Link::new(setup.endpoint.clone(), TIMEOUT);
            tokio::spawn(worker(unit, link, barrier.clone()))
        })
        .collect();
    let mut stats = Vec::new();
    for task in tasks {
        stats.push(task.await.expect("worker task"));
    }
    stats
}

/// Polls the whole map back to back with the scheduler's `poll_unit`, checking every value
/// against the simulator's layout.
async fn map_worker(
    unit: u8,
    planner: Planner,
    mut link: Link,
    barrier: Arc<Barrier>,
    duration: Duration,
) -> Stats {
    let reference = planner
        .clone()
        .run_cycle(|read| modbus_map::sim_answer(unit, read));
    assert!(
        reference.failed.is_empty() && reference.newly_bad.is_empty(),
        "the map does not fit the simulator's layout: {reference:?}"
    );
    // The value of each point as the simulator's layout gives it (bits of the f64).
    let mut expected = vec![0u64; planner.points().len()];
    for (i, v) in reference.values {
        expected[i] = v.to_bits();
    }
    let mut planners = vec![planner];
    // The probe's policy: one attempt, every read tried (nothing skipped silently).
    let policy = Policy {
        attempts: 1,
        stop_on_failure: false,
    };
    let mut stats = Stats::default();
    // Warm-up: connect (or open the port) and one cycle, not counted.
    poll_unit(&mut link, unit, &mut planners, &[0], policy).await;
    barrier.wait().await;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        let poll = poll_unit(&mut link, unit, &mut planners, &[0], policy).await;
        stats.times.push(t.elapsed());
        stats.requests += poll.requests() as u64;
        for report in &poll.reads {
            match &report.outcome {
                Outcome::Values(values) => {
                    for &(i, value) in values {
                        if expected.get(i) == Some(&value.to_bits()) {
                            stats.points += 1;
                        } else {
                            stats.error(format_args!(
                                "unit {unit}: {} = {value}, expected {}",
                                planners[0].points()[i].name,
                                expected.get(i).map_or(f64::NAN, |&b| f64::from_bits(b))
                            ));
                        }
                    }
                }
                other => stats.error(format_args!("unit {unit}: {} {other:?}", report.read)),
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats
}

/// A plain tokio-modbus client on `endpoint` (no edgewatch code), as
/// examples/modbus_sim_ceiling.rs uses.
async fn plain_client(endpoint: &Endpoint, unit: u8) -> Context {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let addr = format!("{host}:{port}").parse().expect("a socket address");
            tcp::connect_slave(addr, Slave(unit))
                .await
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
        }
        Endpoint::Serial(s) => {
            let builder = tokio_serial::new(s.device.as_str(), s.baud);
            let port = tokio_serial::SerialStream::open(&builder)
                .unwrap_or_else(|e| panic!("open {}: {e}", s.device));
            rtu::attach_slave(port, Slave(unit))
        }
    }
}

/// One 125-register read of the bulk block, its answer checked.
async fn ceiling_read(ctx: &mut Context) -> Result<(), String> {
    let start = modbus_map::BULK.start;
    match tokio::time::timeout(TIMEOUT, ctx.read_holding_registers(start, CEILING_COUNT)).await {
        Ok(Ok(Ok(words)))
            if words.len() == usize::from(CEILING_COUNT)
                && words.iter().zip(start..).all(|(&w, a)| w == a) =>
        {
            Ok(())
        }
        other => Err(format!("{other:?}")),
    }
}

/// 125-register reads of the bulk block back to back.
async fn ceiling_worker(unit: u8, link: Link, barrier: Arc<Barrier>, duration: Duration) -> Stats {
    let mut ctx = plain_client(link.endpoint(), unit).await;
    drop(link);
    let mut stats = Stats::default();
    let _ = ceiling_read(&mut ctx).await;
    barrier.wait().await;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        let answer = ceiling_read(&mut ctx).await;
        stats.requests += 1;
        match answer {
            Ok(()) => {
                stats.times.push(t.elapsed());
                stats.points += u64::from(CEILING_COUNT);
            }
            Err(e) => stats.error(format_args!("unit {unit}: ceiling read: {e}")),
        }
    }
    stats.elapsed = start.elapsed();
    stats
}
