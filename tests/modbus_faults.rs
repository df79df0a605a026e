//! End to end against the pymodbus simulator, with faults: exception responses (2, 4, 11)
//! reported by name in the health details and counted in `/metrics`; a merged read split around an illegal
//! address while the good points keep updating; a silent unit on a shared RTU bus that delays
//! the healthy unit by at most one timeout per cycle (measured from the simulator's request
//! log), reported down and up again; a TCP device that restarts and is read again without a
//! restart of the daemon.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::modbus::{self, Fault, ModbusSim, Request, SimOptions};
use support::modbus_daemon::{MbDaemon, bounded, metric_sum, rtu_source, tcp_source, wait_for};

/// Bound of each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the first poll results may take (sim and daemon start on a busy machine).
const FIRST: Duration = Duration::from_secs(30);
/// How long a change of health may take to show.
const CHANGE: Duration = Duration::from_secs(15);

/// Holding reads of `unit` in the request log, in order.
fn holding_reads(sim: &ModbusSim, unit: u8) -> Vec<Request> {
    sim.requests()
        .into_iter()
        .filter(|r| r.unit == unit && r.function == 3)
        .collect()
}

fn covers(r: &Request, address: u16) -> bool {
    r.address <= address && u32::from(address) < u32::from(r.address) + u32::from(r.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_are_reported_by_name_in_health_and_metrics() {
    bounded(TEST_TIMEOUT, async {
        // A gateway: units it does not reach answer exception 11.
        let sim = ModbusSim::tcp(SimOptions::default().unknown_unit_exception());
        // Unit 3 is a device that fails: exception 4 to everything.
        sim.set_faults(&[Fault::exception(4).unit(3)]);
        // Holding 13 is undefined (exception 2); max_gap 2 keeps it out of the unit id's read.
        let sources = tcp_source(
            "exc",
            &sim,
            &format!(
                "units = [1, 3, 7]\ninterval_ms = 200\ntimeout_ms = 1000\nmax_gap = 2\n\
                 backoff_initial_ms = 200\nbackoff_max_ms = 400\nregisters = [\n\
                 {{ name = \"unit_id\", table = \"holding\", address = {}, type = \"u16\" }},\n\
                 {{ name = \"missing\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_UNIT_ID,
                modbus::UNDEFINED_HOLDING
            ),
        );
        let daemon = MbDaemon::start(&sources).await;

        // Unit 1 answers, except for the undefined address: up, the point bad, the exception
        // named.
        let d = daemon
            .wait_detail("exc", "u1.last_error", FIRST, |e| {
                e.contains("illegal data address")
            })
            .await;
        assert_eq!(d["u1.state"], "up", "{d:#?}");
        assert!(d["u1.last_error"].contains("exception 2"), "{d:#?}");
        assert!(
            d["u1.bad_ranges"].contains("holding:13..14") && d["u1.bad_ranges"].contains("missing"),
            "{d:#?}"
        );
        // Unit 3 answers exception 4 to everything: down, the exception named.
        let d = daemon
            .wait_detail("exc", "u3.last_error", FIRST, |e| {
                e.contains("server device failure")
            })
            .await;
        assert!(d["u3.last_error"].contains("exception 4"), "{d:#?}");
        assert_eq!(d["u3.state"], "down", "{d:#?}");
        assert_ne!(d["u3.consecutive_failures"], "0", "{d:#?}");
        // Unit 7 is behind the gateway and does not answer: exception 11.
        let d = daemon
            .wait_detail("exc", "u7.last_error", FIRST, |e| {
                e.contains("gateway target device failed to respond")
            })
            .await;
        assert!(d["u7.last_error"].contains("exception 11"), "{d:#?}");
        assert_eq!(d["u7.state"], "down", "{d:#?}");
        let source = daemon.source("exc").await;
        assert_eq!(source["state"], "degraded", "{source:#}");

        // The good point of unit 1 is read; unit 3 produced no value at all.
        let fields = daemon.wait_fields("exc-1", &["unit_id"], FIRST).await;
        assert_eq!(fields["unit_id"].0, 1.0);
        assert!(!fields.contains_key("missing"), "{fields:?}");
        let live = daemon.live().await;
        assert!(
            !live.contains_key("exc-3"),
            "a failed poll gives no values: {live:#?}"
        );

        // Both in /metrics, by reason.
        let metrics = daemon.metrics().await;
        let failures = |unit: &str, reason: &str| {
            metric_sum(
                &metrics,
                "edgewatch_modbus_request_failures_total",
                &[("source", "exc"), ("unit", unit), ("reason", reason)],
            )
        };
        assert!(failures("1", "exception_2") >= Some(1.0), "{metrics}");
        assert!(failures("3", "exception_4") >= Some(1.0), "{metrics}");
        assert!(failures("7", "exception_11") >= Some(1.0), "{metrics}");
        assert_eq!(failures("1", "exception_4"), None, "{metrics}");
        let up = |unit: &str| {
            metric_sum(
                &metrics,
                "edgewatch_modbus_unit_up",
                &[("source", "exc"), ("unit", unit)],
            )
        };
        assert_eq!((up("1"), up("3")), (Some(1.0), Some(0.0)), "{metrics}");
        assert!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_requests_total",
                &[("source", "exc"), ("unit", "1")]
            ) >= Some(2.0),
            "{metrics}"
        );
        daemon.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_read_is_split_around_an_illegal_address_and_the_rest_keeps_updating() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(
            SimOptions::default()
                .request_log()
                .tick(Duration::from_millis(100)),
        );
        // 10-11 counter, 12 tick, 14-15 tick as f32; 13 undefined; max_gap 8 merges 10..16.
        let sources = tcp_source(
            "split",
            &sim,
            &format!(
                "unit = 1\ninterval_ms = 150\ntimeout_ms = 1000\nmax_gap = 8\nregisters = [\n\
                 {{ name = \"counter\", table = \"holding\", address = {}, type = \"u32\" }},\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n\
                 {{ name = \"tick_f32\", table = \"holding\", address = {}, type = \"f32\" }},\n]",
                modbus::HR_COUNTER,
                modbus::HR_TICK,
                modbus::HR_TICK_F32
            ),
        );
        let daemon = MbDaemon::start(&sources).await;
        let first = daemon
            .wait_fields("split", &["counter", "tick", "tick_f32"], FIRST)
            .await;
        // The values keep updating: a later poll has a later tick in every field.
        let later = wait_for("the good points to update", CHANGE, async || {
            let live = daemon.live().await;
            let f = live.get("split").cloned().unwrap_or_default();
            let newer = ["counter", "tick", "tick_f32"]
                .iter()
                .all(|n| f.get(*n).is_some_and(|(v, _)| *v > first[*n].0 + 5.0));
            if newer { Ok(f) } else { Err(format!("{f:?}")) }
        })
        .await;
        // A few more cycles in the log.
        wait_for("more polls of every good register", CHANGE, async || {
            let reads = holding_reads(&sim, 1);
            let n = reads
                .iter()
                .filter(|r| covers(r, modbus::HR_TICK_F32))
                .count();
            if n >= 8 {
                Ok(())
            } else {
                Err(format!("{reads:?}"))
            }
        })
        .await;
        assert_eq!(
            later["counter"].0,
            f64::from(modbus::counter(later["tick"].0 as u64)),
            "{later:?}"
        );

        let d = daemon.details("split").await;
        assert_eq!(d["u1.state"], "up", "{d:#?}");
        assert_eq!(d["u1.bad_ranges"], "none", "no point is bad: {d:#?}");
        assert!(
            d["u1.last_error"].contains("illegal data address"),
            "{d:#?}"
        );

        // The log: the merged read first, refused; then only reads that avoid 13 and cover
        // every good register, cycle after cycle.
        let reads = holding_reads(&sim, 1);
        assert!(
            reads
                .first()
                .is_some_and(|r| r.address == modbus::HR_COUNTER && r.count == 6),
            "the first read is the merged 10..16: {reads:?}"
        );
        let last_bad = reads
            .iter()
            .rposition(|r| covers(r, modbus::UNDEFINED_HOLDING))
            .expect("a read over 13");
        assert!(
            last_bad <= 2,
            "the split is remembered: reads over 13 stop after the first split(s): {reads:?}"
        );
        let after = &reads[last_bad + 1..];
        assert!(
            after.len() >= 6,
            "polling goes on after the split: {reads:?}"
        );
        for address in [10, 11, 12, 14, 15] {
            let n = after.iter().filter(|r| covers(r, address)).count();
            assert!(
                n >= 3,
                "register {address} read {n} times after the split: {after:?}"
            );
        }
        // Each cycle after the split is the same two (or three) requests.
        let requests = d["u1.requests_per_cycle"].parse::<u32>().unwrap_or(0);
        assert!((2..=3).contains(&requests), "{d:#?}");
        daemon.stop().await;
    })
    .await;
}

/// Unit 1 and unit 2 on one RTU line; unit 2 goes silent. Unit 1's polls, as the simulator
/// saw them, keep their interval: at most one timeout of unit 2 per cycle, also in the cycles
/// before unit 2 is down (a timed-out request is retried on the next cycle, not at once).
/// Unit 2 is reported down, then up again when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_unit_on_a_shared_rtu_bus_delays_the_other_by_at_most_one_timeout() {
    const INTERVAL_MS: u64 = 300;
    const TIMEOUT_MS: u64 = 200;
    const RETRIES: u64 = 1;
    const TOLERANCE_MS: u64 = 60;
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::rtu(SimOptions::default().units(&[1, 2]).request_log());
        let sources = rtu_source(
            "bus",
            &sim,
            &format!(
                "units = [1, 2]\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\n\
                 retries = {RETRIES}\nbackoff_initial_ms = 400\nbackoff_max_ms = 1200\n\
                 registers = [\n\
                 {{ name = \"counter\", table = \"holding\", address = {}, type = \"u32\" }},\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_COUNTER,
                modbus::HR_TICK
            ),
        );
        let daemon = MbDaemon::start(&sources).await;
        for unit in [1, 2] {
            daemon
                .wait_detail("bus", &format!("u{unit}.state"), FIRST, |s| s == "up")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let fault_at = SystemTime::now();
        sim.set_faults(&[Fault::silent().unit(2)]);
        let d = daemon
            .wait_detail("bus", "u2.state", CHANGE, |s| s == "down")
            .await;
        let down_seen = SystemTime::now();
        assert!(d["u2.last_error"].contains("timeout"), "{d:#?}");
        assert_eq!(d["u1.state"], "up", "{d:#?}");
        let frozen = daemon.wait_fields("bus-2", &["tick"], FIRST).await["tick"].clone();
        // Several backoff periods of unit 2 while unit 1 keeps polling; unit 1 stays up.
        let until = Instant::now() + Duration::from_millis(4000);
        while Instant::now() < until {
            let d = daemon.details("bus").await;
            assert_eq!(d["u1.state"], "up", "{d:#?}");
            assert_eq!(d["u2.state"], "down", "{d:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = daemon.metrics().await;
        assert_eq!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_unit_up",
                &[("source", "bus"), ("unit", "2")]
            ),
            Some(0.0),
            "{metrics}"
        );
        assert!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_request_failures_total",
                &[("source", "bus"), ("unit", "2"), ("reason", "timeout")]
            ) >= Some(2.0),
            "{metrics}"
        );
        // A failed poll produces no values: unit 2's last reading is still the one from before.
        let live = daemon.live().await;
        assert_eq!(live["bus-2"]["tick"], frozen, "unit 2 gave values while silent");
        let clear_at = SystemTime::now();
        sim.clear_faults();

        let d = daemon
            .wait_detail("bus", "u2.state", CHANGE, |s| s == "up")
            .await;
        assert_eq!(d["u2.consecutive_failures"], "0", "{d:#?}");
        wait_for("unit 2's values again", CHANGE, async || {
            let live = daemon.live().await;
            match live.get("bus-2").and_then(|f| f.get("tick")) {
                Some(t) if t.1 != frozen.1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        // Unit 1's poll times from the simulator's log.
        let polls: Vec<SystemTime> = holding_reads(&sim, 1)
            .into_iter()
            .filter(|r| r.time >= fault_at && r.time <= clear_at)
            .map(|r| r.time)
            .collect();
        let unit2_attempts = holding_reads(&sim, 2)
            .iter()
            .filter(|r| r.time > down_seen && r.time <= clear_at)
            .count();
        let gaps: Vec<(SystemTime, u64)> = polls
            .windows(2)
            .map(|w| {
                let gap = w[1].duration_since(w[0]).unwrap_or_default();
                (w[0], gap.as_millis() as u64)
            })
            .collect();
        let all: Vec<u64> = gaps.iter().map(|g| g.1).collect();
        assert!(
            polls.len() >= 10,
            "unit 1 polled {} times in the fault window: {all:?}",
            polls.len()
        );
        assert!(
            unit2_attempts >= 2,
            "unit 2 is retried while down ({unit2_attempts} attempts)"
        );
        // At most one of unit 2's timeouts per cycle, from the first one on.
        let bound = INTERVAL_MS + TIMEOUT_MS + TOLERANCE_MS;
        assert!(
            all.iter().all(|&g| g <= bound),
            "a gap of unit 1 over {bound} ms while unit 2 was silent: {all:?}"
        );
        eprintln!(
            "unit 1 gaps while unit 2 was silent (ms): {all:?}; unit 2 attempts while down: {unit2_attempts}"
        );
        daemon.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_device_that_restarts_is_read_again_without_restarting_the_daemon() {
    bounded(TEST_TIMEOUT, async {
        let mut sim = ModbusSim::tcp(SimOptions::default().tick(Duration::from_millis(100)));
        let port = sim.port();
        let sources = tcp_source(
            "plc",
            &sim,
            &format!(
                "unit = 2\ninterval_ms = 200\ntimeout_ms = 500\nretries = 1\n\
                 backoff_initial_ms = 200\nbackoff_max_ms = 1000\nregisters = [\n\
                 {{ name = \"unit_id\", table = \"holding\", address = {}, type = \"u16\" }},\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_UNIT_ID,
                modbus::HR_TICK
            ),
        );
        let daemon = MbDaemon::start(&sources).await;
        daemon
            .wait_detail("plc", "u2.state", FIRST, |s| s == "up")
            .await;
        let before = daemon.wait_fields("plc", &["unit_id", "tick"], FIRST).await;
        assert_eq!(before["unit_id"].0, 2.0);

        // The device goes away: down, with the error.
        sim.stop();
        let d = daemon
            .wait_detail("plc", "u2.state", CHANGE, |s| s == "down")
            .await;
        let error = &d["u2.last_error"];
        assert!(
            [
                "connection refused",
                "connection reset",
                "connection closed",
                "timeout"
            ]
            .iter()
            .any(|e| error.contains(e)),
            "{d:#?}"
        );
        let source = daemon.source("plc").await;
        assert_eq!(source["state"], "down", "{source:#}");
        assert!(source["last_error"].as_str().is_some(), "{source:#}");
        let frozen = daemon.live().await["plc"]["tick"].clone();
        // Down for a while: refused connections, no values.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let d = daemon.details("plc").await;
        assert_eq!(d["u2.state"], "down", "{d:#?}");
        assert!(d["u2.last_error"].contains("connection refused"), "{d:#?}");
        assert_eq!(daemon.live().await["plc"]["tick"], frozen);

        // Back on the same port: up again and reading, same daemon.
        sim.restart();
        assert_eq!(sim.port(), port);
        let d = daemon
            .wait_detail("plc", "u2.state", CHANGE, |s| s == "up")
            .await;
        assert_eq!(d["u2.consecutive_failures"], "0", "{d:#?}");
        let after = wait_for("new readings after the restart", CHANGE, async || {
            let live = daemon.live().await;
            match live.get("plc") {
                Some(f) if f["tick"].1 != frozen.1 => Ok(f.clone()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_eq!(after["unit_id"].0, 2.0);
        let source = daemon.source("plc").await;
        assert_eq!(source["state"], "up", "{source:#}");
        let metrics = daemon.metrics().await;
        assert!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_request_failures_total",
                &[("source", "plc"), ("unit", "2"), ("reason", "refused")]
            ) >= Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_unit_up",
                &[("source", "plc"), ("unit", "2")]
            ),
            Some(1.0),
            "{metrics}"
        );
        daemon.stop().await;
    })
    .await;
}
