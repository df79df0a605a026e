//! The Modbus simulator's own ceiling: how many reads per second tests/support/modbus_sim.py
//! (pymodbus 3.16.1) answers, so that a Modbus benchmark of edgewatch knows when it measures
//! the simulator instead of the daemon.
//!
//! `cargo run --release --example modbus_sim_ceiling -- [tcp|rtu] [SECONDS] [MAX_REQUESTS] [CONNECTIONS]`
//! (defaults: tcp 10 0 1; MAX_REQUESTS 0 = no limit). It starts one simulator (the harness of
//! tests/support/modbus.rs: TCP on a free 127.0.0.1 port, or RTU on a socat pty pair), opens
//! CONNECTIONS tokio-modbus clients (RTU: one, a serial line has a single master), each on
//! unit 1 + i % 3, and each issues 125-register reads of the bulk block (holding 1000..1125)
//! back to back, checking every answer, until SECONDS passed or MAX_REQUESTS were answered.
//! It prints requests/s, points/s (registers/s) and the latency percentiles. Needs the venv
//! that ./scripts/test makes (or EDGEWATCH_MODBUS_PYTHON).

#[path = "../tests/support/modbus.rs"]
mod modbus;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modbus::{ModbusSim, SimOptions};
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader, rtu, tcp};

const USAGE: &str = "cargo run --release --example modbus_sim_ceiling -- \
                     [tcp|rtu] [SECONDS] [MAX_REQUESTS] [CONNECTIONS]";
/// Registers per read: the Modbus maximum.
const COUNT: u16 = 125;
/// Bound of one read.
const TIMEOUT: Duration = Duration::from_secs(5);

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("run it as: {USAGE}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rtu_mode = match args.first().map(String::as_str) {
        None | Some("tcp") => false,
        Some("rtu") => true,
        Some(other) => {
            eprintln!("unknown mode {other:?}; usage: {USAGE}");
            std::process::exit(2);
        }
    };
    let number = |i: usize, default: u64| -> u64 {
        args.get(i).map_or(default, |a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("argument {a:?} is not a number; usage: {USAGE}");
                std::process::exit(2)
            })
        })
    };
    let seconds = number(1, 10).max(1);
    let max_requests = number(2, 0);
    let mut connections = number(3, 1).max(1);
    if rtu_mode && connections > 1 {
        eprintln!("rtu: one connection (a serial line has one master), not {connections}");
        connections = 1;
    }

    let sim = if rtu_mode {
        ModbusSim::rtu(SimOptions::default())
    } else {
        ModbusSim::tcp(SimOptions::default())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let answered = Arc::new(AtomicU64::new(0));
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..connections {
            let unit = 1 + (i % 3) as u8;
            let ctx = if rtu_mode {
                let path = sim.client_tty();
                let builder =
                    tokio_serial::new(path.to_str().expect("UTF-8 path"), sim.options().baud);
                let port = tokio_serial::SerialStream::open(&builder)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                rtu::attach_slave(port, Slave(unit))
            } else {
                tcp::connect_slave(sim.addr(), Slave(unit))
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"))
            };
            tasks.push(tokio::spawn(reader(
                ctx,
                deadline,
                max_requests,
                answered.clone(),
            )));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("reader task"));
        }
        outcomes
    });
    let elapsed = started.elapsed().as_secs_f64();

    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .flat_map(|o| o.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let requests = latencies.len() as f64;
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "modbus simulator ceiling ({}, {connections} connection(s), {COUNT}-register reads of \
         holding {}..{}):",
        if rtu_mode {
            "rtu over a socat pty"
        } else {
            "tcp 127.0.0.1"
        },
        modbus::BULK_START,
        modbus::BULK_START + COUNT
    );
    println!(
        "  {} requests in {elapsed:.2} s, {errors} errors/timeouts",
        latencies.len()
    );
    println!("  {:.0} requests/s", requests / elapsed);
    println!(
        "  {:.0} points/s (registers/s)",
        requests * f64::from(COUNT) / elapsed
    );
    println!(
        "  latency ms: p50 {:.2}, p99 {:.2}, max {:.2}",
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    drop(sim);
}

/// Reads the bulk block back to back until `deadline` or until `max` (0: no limit) reads were
/// answered over all connections.
async fn reader(
    mut ctx: Context,
    deadline: Instant,
    max: u64,
    answered: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
    };
    while Instant::now() < deadline && (max == 0 || answered.load(Ordering::Relaxed) < max) {
        let t = Instant::now();
        match tokio::time::timeout(
            TIMEOUT,
            ctx.read_holding_registers(modbus::BULK_START, COUNT),
        )
        .await
        {
            Ok(Ok(Ok(words)))
                if words.len() == usize::from(COUNT)
                    && words[0] == modbus::BULK_START
                    && words[usize::from(COUNT) - 1] == modbus::BULK_START + COUNT - 1 =>
            {
                outcome.latencies.push(t.elapsed());
                answered.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                outcome.errors += 1;
                if outcome.errors <= 3 {
                    eprintln!("read failed: {other:?}");
                }
                if other.is_err() {
                    // A timeout desynchronises the context: give up on this connection.
                    break;
                }
            }
        }
    }
    outcome
}
