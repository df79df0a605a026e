//! End to end against the pymodbus simulator, link faults: an answer that comes after the
//! timeout never ends up as the answer to a later request (over RTU, where frames carry no
//! transaction id, and over TCP); a poll slower than its interval is counted as an overrun
//! and its missed ticks are skipped, not caught up in a burst; broken frames are errors, never
//! values; an RTU device that goes away and comes back is read again; a shutdown does not wait
//! for a pending timeout.

mod support;

use std::time::{Duration, SystemTime};

use support::modbus::{self, Fault, ModbusSim, Order, SimOptions};
use support::modbus_daemon::{MbDaemon, bounded, metric_sum, rtu_source, tcp_source, wait_for};

/// Bound of each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the first poll results may take.
const FIRST: Duration = Duration::from_secs(30);
/// How long a change of health may take to show.
const CHANGE: Duration = Duration::from_secs(15);

/// Two single-register reads of unit 1: `early` (holding 0, the unit id 1) and `late` (the
/// u16 of the ABCD block, 0x1234), the second delayed past the timeout three times for a while
/// (a device, or a gateway, that still answers requests the client gave up on). Every stored
/// reading must be its own register's value, also for a while after the device is fast
/// again: a late answer to `late` taken as the answer to the next `early` would store 0x1234
/// under `early`, and from then on every answer is one request off (both reads are function
/// 3 of one register and look alike), so the values stay swapped until an error resyncs the
/// link. Over TCP the transaction id tells the answers apart; over RTU only the timing does.
async fn late_answers_never_answer_another_request(sim: &ModbusSim, source: String) {
    let daemon = MbDaemon::start(&source).await;
    let u16_address = modbus::Kind::U16.address(Order::Abcd);
    daemon.wait_fields("late", &["early", "late"], FIRST).await;
    for _ in 0..3 {
        sim.set_faults(&[Fault::delay(Duration::from_millis(260))
            .unit(1)
            .addresses(u32::from(u16_address)..u32::from(u16_address) + 1)]);
        daemon
            .wait_detail("late", "u1.last_error", FIRST, |e| e.contains("timeout"))
            .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let cleared = SystemTime::now();
        sim.clear_faults();
        // Polls go on after the fault: wait for a few stored after it.
        wait_for("readings after the fault", FIRST, async || {
            let raw = daemon.raw("late", "early");
            let after = raw
                .iter()
                .filter(|r| {
                    r.0 > cleared
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as i64
                })
                .count();
            if after >= 3 {
                Ok(())
            } else {
                Err(format!("{after} readings after"))
            }
        })
        .await;
    }
    // Some polls after the last fault: a desynchronised link would stay so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = daemon.raw("late", "early");
    let late = daemon.raw("late", "late");
    let wrong_early: Vec<f64> = early.iter().map(|r| r.1).filter(|v| *v != 1.0).collect();
    let wrong_late: Vec<f64> = late
        .iter()
        .map(|r| r.1)
        .filter(|v| *v != f64::from(modbus::U16_VALUE))
        .collect();
    let t0 = early.first().map_or(0, |r| r.0);
    let polls: Vec<(i64, f64, f64)> = early
        .iter()
        .zip(&late)
        .map(|(e, l)| ((e.0 - t0) / 1_000_000, e.1, l.1))
        .collect();
    assert!(
        wrong_early.is_empty() && wrong_late.is_empty(),
        "values from other requests' answers: early {wrong_early:?} of {}, late {wrong_late:?} of {}; \
         stored (ms, early, late): {polls:?}",
        early.len(),
        late.len()
    );
    let d = daemon.details("late").await;
    assert_eq!(d["u1.state"], "up", "{d:#?}");
    daemon.stop().await;
}

fn late_registers() -> String {
    format!(
        "unit = 1\ninterval_ms = 150\ntimeout_ms = 150\nretries = 1\nmax_gap = 8\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 200\nregisters = [\n\
         {{ name = \"early\", table = \"holding\", address = {}, type = \"u16\" }},\n\
         {{ name = \"late\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
        modbus::HR_UNIT_ID,
        modbus::Kind::U16.address(Order::Abcd)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_late_answers_never_answer_another_request() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::rtu(SimOptions::default().units(&[1]));
        let source = rtu_source("late", &sim, &late_registers());
        late_answers_never_answer_another_request(&sim, source).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_late_answers_never_answer_another_request() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default().units(&[1]));
        let source = tcp_source("late", &sim, &late_registers());
        late_answers_never_answer_another_request(&sim, source).await;
    })
    .await;
}

/// Each poll takes 250 ms (a slow device) at an interval of 100 ms: overruns are counted in
/// the health details and `/metrics`, the unit stays up and keeps delivering, and missed ticks
/// are skipped: no requests in a burst, also once the device is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overruns_are_counted_and_missed_ticks_skipped() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(
            SimOptions::default()
                .request_log()
                .tick(Duration::from_millis(100)),
        );
        let source = tcp_source(
            "slow",
            &sim,
            &format!(
                "unit = 1\ninterval_ms = 100\ntimeout_ms = 1000\nregisters = [\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_TICK
            ),
        );
        let daemon = MbDaemon::start(&source).await;
        daemon.wait_fields("slow", &["tick"], FIRST).await;
        let slow_from = SystemTime::now();
        sim.set_faults(&[Fault::delay(Duration::from_millis(250)).unit(1)]);
        let d = daemon
            .wait_detail("slow", "u1.overruns", FIRST, |n| {
                n.parse::<u64>().is_ok_and(|n| n >= 3)
            })
            .await;
        assert_eq!(d["u1.state"], "up", "{d:#?}");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let before = daemon.raw("slow", "tick").len();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let during = daemon.raw("slow", "tick").len() - before;
        assert!(
            (2..=6).contains(&during),
            "about one reading per 250 ms poll while slow, got {during} in 1 s"
        );
        let metrics = daemon.metrics().await;
        assert!(
            metric_sum(
                &metrics,
                "edgewatch_modbus_overruns_total",
                &[("source", "slow"), ("unit", "1")]
            ) >= Some(3.0),
            "{metrics}"
        );
        let fast_from = SystemTime::now();
        sim.clear_faults();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let requests = sim.requests();
        let slow: Vec<SystemTime> = requests
            .iter()
            .filter(|r| r.time > slow_from && r.time < fast_from)
            .map(|r| r.time)
            .collect();
        let fast: Vec<SystemTime> = requests
            .iter()
            .filter(|r| r.time > fast_from)
            .map(|r| r.time)
            .collect();
        let gaps = |times: &[SystemTime]| -> Vec<u64> {
            times
                .windows(2)
                .map(|w| w[1].duration_since(w[0]).unwrap_or_default().as_millis() as u64)
                .collect()
        };
        // While slow: one request per poll, each after the previous answer, on the grid.
        let slow_gaps = gaps(&slow);
        assert!(
            slow_gaps.iter().all(|&g| g >= 240),
            "requests while slow: {slow_gaps:?} ms"
        );
        // Fast again: back to the interval at once, never a burst of catch-up requests.
        let fast_gaps = gaps(&fast);
        assert!(
            fast_gaps.len() >= 8 && fast_gaps.iter().all(|&g| g >= 50),
            "requests once fast again: {fast_gaps:?} ms"
        );
        assert!(
            fast.len() <= 17,
            "{} requests in 1.5 s at 100 ms: {fast_gaps:?}",
            fast.len()
        );
        daemon.stop().await;
    })
    .await;
}

/// Broken frames (TCP: a bad MBAP protocol id; RTU: a bad CRC) are never decoded into values:
/// the unit goes down with an error, and comes back with correct values once the frames are
/// good again.
async fn corrupt_frames_are_errors_not_values(mut sim: ModbusSim, source: String) {
    let daemon = MbDaemon::start(&source).await;
    daemon
        .wait_fields("broken", &["unit_id", "marker"], FIRST)
        .await;
    sim.set_faults(&[Fault::corrupt().unit(1)]);
    let d = daemon
        .wait_detail("broken", "u1.state", CHANGE, |s| s == "down")
        .await;
    assert_ne!(d["u1.last_error"], "none", "{d:#?}");
    let metrics = daemon.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "edgewatch_modbus_request_failures_total",
            &[("source", "broken"), ("unit", "1")]
        ) >= Some(1.0),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sim.clear_faults();
    let d = daemon
        .wait_detail("broken", "u1.state", CHANGE, |s| s == "up")
        .await;
    assert_eq!(d["u1.consecutive_failures"], "0", "{d:#?}");
    let count = daemon.raw("broken", "unit_id").len();
    wait_for("readings after the corrupt frames", CHANGE, async || {
        let n = daemon.raw("broken", "unit_id").len();
        if n >= count + 3 {
            Ok(())
        } else {
            Err(format!("{n} readings"))
        }
    })
    .await;
    for (field, want) in [
        ("unit_id", 1.0),
        ("marker", f64::from(modbus::IR_MARKER_VALUE)),
    ] {
        let raw = daemon.raw("broken", field);
        assert!(
            raw.iter().all(|r| r.1 == want),
            "{field}: {:?}",
            raw.iter().map(|r| r.1).collect::<Vec<_>>()
        );
    }
    daemon.stop().await;
    sim.stop();
}

fn broken_registers() -> String {
    format!(
        "unit = 1\ninterval_ms = 150\ntimeout_ms = 300\nretries = 1\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 400\nregisters = [\n\
         {{ name = \"unit_id\", table = \"holding\", address = {}, type = \"u16\" }},\n\
         {{ name = \"marker\", table = \"input\", address = {}, type = \"u16\" }},\n]",
        modbus::HR_UNIT_ID,
        modbus::IR_MARKER
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_corrupt_frames_are_errors_not_values() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let source = tcp_source("broken", &sim, &broken_registers());
        corrupt_frames_are_errors_not_values(sim, source).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_corrupt_frames_are_errors_not_values() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::rtu(SimOptions::default());
        let source = rtu_source("broken", &sim, &broken_registers());
        corrupt_frames_are_errors_not_values(sim, source).await;
    })
    .await;
}

/// The device on the serial line goes away (nothing answers, the line stays) and comes back:
/// the unit is down with a timeout meanwhile, then read again by the same daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_device_that_restarts_is_read_again() {
    bounded(TEST_TIMEOUT, async {
        let mut sim = ModbusSim::rtu(SimOptions::default().tick(Duration::from_millis(100)));
        let source = rtu_source(
            "line",
            &sim,
            &format!(
                "units = [1, 2]\ninterval_ms = 200\ntimeout_ms = 200\n\
                 backoff_initial_ms = 200\nbackoff_max_ms = 800\nregisters = [\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_TICK
            ),
        );
        let daemon = MbDaemon::start(&source).await;
        daemon.wait_fields("line-2", &["tick"], FIRST).await;
        sim.stop();
        for unit in [1, 2] {
            let d = daemon
                .wait_detail("line", &format!("u{unit}.state"), CHANGE, |s| s == "down")
                .await;
            assert!(
                d[&format!("u{unit}.last_error")].contains("timeout"),
                "{d:#?}"
            );
        }
        assert_eq!(daemon.source("line").await["state"], "down");
        let frozen = daemon.live().await["line-1"]["tick"].clone();
        sim.restart();
        for unit in [1, 2] {
            daemon
                .wait_detail("line", &format!("u{unit}.state"), CHANGE, |s| s == "up")
                .await;
        }
        wait_for(
            "new readings after the restart",
            CHANGE,
            async || match daemon.live().await.get("line-1").map(|f| f["tick"].clone()) {
                Some(t) if t.1 != frozen.1 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        daemon.stop().await;
    })
    .await;
}

/// A shutdown does not wait for a request in flight to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_pending_timeout() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[Fault::silent()]);
        let source = tcp_source(
            "mute",
            &sim,
            &format!(
                "unit = 1\ninterval_ms = 100\ntimeout_ms = 20000\nregisters = [\n\
                 {{ name = \"unit_id\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_UNIT_ID
            ),
        );
        let daemon = MbDaemon::start(&source).await;
        // The first request is in flight (and will not be answered).
        wait_for("the first request", FIRST, async || {
            let d = daemon.details("mute").await;
            if d.contains_key("u1.state") {
                Ok(())
            } else {
                Err(format!("{d:#?}"))
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        daemon.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the daemon took {:?} to stop",
            started.elapsed()
        );
    })
    .await;
}
