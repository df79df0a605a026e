//! End to end against the pymodbus simulator: every data type in every word order, bits of a
//! register, coils and discrete inputs, scale and offset decode to the simulator's known values
//! exactly (an f32 compared as f32), over Modbus TCP and over Modbus RTU (a socat pty pair), as
//! the daemon shows them in `/api/v1/sensors`. The register map is a `[profiles.NAME]` reused
//! by two units of one source: each unit is its own sensor (`sensor_id` with `{unit}`, or the
//! default `{name}-{unit}`) and reads its own unit id.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use edgewatch::model::Quality;

use support::modbus::{self, ModbusSim, SimOptions};
use support::modbus_daemon::{
    Expected, MbDaemon, bounded, metric_sum, rtu_source, tcp_source, typed_expected,
    typed_registers, wait_for,
};

/// Bound of each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the first values of every point may take (sim and daemon start on a busy machine).
const FIRST_VALUES: Duration = Duration::from_secs(30);

/// The profile with every typed point, as a `[profiles.typed]` table.
fn typed_profile() -> String {
    format!(
        "[profiles.typed]\nregisters = [\n{}\n]\n",
        typed_registers()
    )
}

/// Waits until `sensor` shows every field of [`typed_expected`] and checks each value exactly;
/// returns the fields seen.
async fn assert_typed_values(daemon: &MbDaemon, sensor: &str, unit: u8) {
    let expected = typed_expected(unit);
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    let fields = daemon.wait_fields(sensor, &names, FIRST_VALUES).await;
    let mut wrong = BTreeMap::new();
    for (name, want) in &expected {
        let got = fields[name].0;
        if !want.matches(got) {
            wrong.insert(name.clone(), (got, *want));
        }
    }
    assert!(
        wrong.is_empty(),
        "{sensor} (unit {unit}): fields with a wrong value (got, expected): {wrong:#?}"
    );
    // Every point of the profile and nothing else.
    let extra: Vec<&String> = fields
        .keys()
        .filter(|f| !expected.contains_key(*f))
        .collect();
    assert!(extra.is_empty(), "{sensor}: unexpected fields {extra:?}");
}

/// Every reading stored for `sensor` so far (at least `polls` polls) has its exact value and
/// quality GOOD, and each poll stored every field under one timestamp (the poll's).
async fn assert_stored_readings(daemon: &MbDaemon, sensor: &str, unit: u8, polls: usize) {
    let expected = typed_expected(unit);
    let by_time = wait_for(
        &format!("{polls} stored polls of {sensor}"),
        FIRST_VALUES,
        async || {
            // Up to the newest poll stored for one field: every field has it (commits go on).
            let Some(newest) = daemon.raw(sensor, "unit_id").last().map(|r| r.0) else {
                return Err("nothing stored yet".into());
            };
            let mut by_time: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            for (name, want) in &expected {
                for (time, value, quality) in daemon.raw_before(sensor, name, newest + 1) {
                    if !want.matches(value) || quality != Quality::GOOD {
                        panic!(
                            "{sensor}/{name} stored {value} ({quality:?}) at {time}, not {want:?}"
                        );
                    }
                    by_time.entry(time).or_default().push(name.clone());
                }
            }
            if by_time.len() >= polls {
                Ok(by_time)
            } else {
                Err(format!("{} polls stored", by_time.len()))
            }
        },
    )
    .await;
    for (time, fields) in &by_time {
        assert_eq!(
            fields.len(),
            expected.len(),
            "{sensor}: the poll at {time} stored only {fields:?}"
        );
    }
}

/// Both units report up, with no bad ranges (the map has no undefined address).
async fn assert_units_up(daemon: &MbDaemon, source: &str, units: &[u8]) {
    for unit in units {
        let details = daemon
            .wait_detail(source, &format!("u{unit}.state"), FIRST_VALUES, |s| {
                s == "up"
            })
            .await;
        assert_eq!(
            details
                .get(&format!("u{unit}.bad_ranges"))
                .map(String::as_str),
            Some("none"),
            "{source} unit {unit}: {details:#?}"
        );
        // The typed map is planned into 8 reads: holding 0..2, the four typed blocks, input
        // 0..2, coils 0..2 and discrete inputs 0..2.
        assert_eq!(
            details[&format!("u{unit}.requests_per_cycle")],
            "8",
            "{details:#?}"
        );
        let latency = details[&format!("u{unit}.latency_ms")].parse::<f64>();
        assert!(
            latency.is_ok_and(|ms| ms > 0.0 && ms < 1000.0),
            "{details:#?}"
        );
        assert_eq!(
            details[&format!("u{unit}.last_error")],
            "none",
            "{details:#?}"
        );
        assert_eq!(details[&format!("u{unit}.consecutive_failures")], "0");
        assert_ne!(details[&format!("u{unit}.last_success")], "never");
    }
    let metrics = daemon.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "edgewatch_modbus_request_seconds_count",
            &[("source", source)]
        ) >= Some(16.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "edgewatch_modbus_request_failures_total",
            &[("source", source)]
        ),
        None,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_every_type_and_order_decodes_exactly_on_two_units_of_one_profile() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let sources = format!(
            "{}\n{}",
            tcp_source(
                "dec-tcp",
                &sim,
                "units = [1, 2]\nsensor_id = \"meter-{unit}\"\ninterval_ms = 200\ntimeout_ms = 1000\nprofile = \"typed\"",
            ),
            typed_profile()
        );
        let daemon = MbDaemon::start(&sources).await;
        assert_typed_values(&daemon, "meter-1", 1).await;
        assert_typed_values(&daemon, "meter-2", 2).await;
        assert_stored_readings(&daemon, "meter-1", 1, 3).await;
        assert_stored_readings(&daemon, "meter-2", 2, 3).await;
        assert_units_up(&daemon, "dec-tcp", &[1, 2]).await;
        daemon.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_every_type_and_order_decodes_exactly_on_two_units_of_one_profile() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::rtu(SimOptions::default().baud(19200));
        let sources = format!(
            "{}\n{}",
            rtu_source(
                "dec-rtu",
                &sim,
                "units = [1, 2]\ninterval_ms = 300\ntimeout_ms = 1000\nprofile = \"typed\"",
            ),
            typed_profile()
        );
        let daemon = MbDaemon::start(&sources).await;
        // The default sensor ids with several units: "{name}-{unit}".
        assert_typed_values(&daemon, "dec-rtu-1", 1).await;
        assert_typed_values(&daemon, "dec-rtu-2", 2).await;
        assert_stored_readings(&daemon, "dec-rtu-1", 1, 3).await;
        assert_stored_readings(&daemon, "dec-rtu-2", 2, 3).await;
        assert_units_up(&daemon, "dec-rtu", &[1, 2]).await;
        daemon.stop().await;
    })
    .await;
}

/// The time-varying registers follow the simulator: in every poll (one timestamp for all its
/// readings) the counter (u32, across the carry into its high word) matches the tick read with
/// it, the tick as f32 is the tick (or the next one: another request), and the toggling coil
/// is seen both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_time_varying_values_are_consistent_within_each_poll() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default().tick(Duration::from_millis(100)));
        let registers = format!(
            "registers = [\n\
             {{ name = \"counter\", table = \"holding\", address = {}, type = \"u32\" }},\n\
             {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n\
             {{ name = \"tick_f32\", table = \"holding\", address = {}, type = \"f32\" }},\n\
             {{ name = \"toggle\", table = \"coil\", address = {}, type = \"bool\" }},\n]",
            modbus::HR_COUNTER,
            modbus::HR_TICK,
            modbus::HR_TICK_F32,
            modbus::TOGGLE_BIT
        );
        // Holding 13 is undefined: the merged read 10..16 is split once, then the halves are
        // polled (tests/modbus_faults.rs checks the split itself).
        let sources = tcp_source(
            "vary",
            &sim,
            &format!("unit = 3\ninterval_ms = 100\ntimeout_ms = 1000\n{registers}"),
        );
        let daemon = MbDaemon::start(&sources).await;
        let fields = ["counter", "tick", "tick_f32", "toggle"];
        daemon.wait_fields("vary", &fields, FIRST_VALUES).await;
        // Collect distinct polls (by time) until the counter has carried into its high word
        // (tick >= 6) and the toggle was seen both ways.
        let mut polls: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        wait_for(
            "ticks past 6 and both toggle values",
            FIRST_VALUES,
            async || {
                {
                    let live = daemon.live().await;
                    let sensor = live.get("vary").cloned().unwrap_or_default();
                    // A field's time is the poll's time: one poll gives one time to all four.
                    let times: Vec<&String> = sensor.values().map(|(_, t)| t).collect();
                    if times.len() == fields.len() && times.iter().all(|t| *t == times[0]) {
                        polls.insert(
                            times[0].clone(),
                            sensor.iter().map(|(k, (v, _))| (k.clone(), *v)).collect(),
                        );
                    }
                    let max_tick = polls.values().map(|p| p["tick"]).fold(0.0, f64::max);
                    let toggles: Vec<f64> = polls.values().map(|p| p["toggle"]).collect();
                    if max_tick >= 7.0 && toggles.contains(&0.0) && toggles.contains(&1.0) {
                        Ok(())
                    } else {
                        Err(format!("{} polls, tick {max_tick}", polls.len()))
                    }
                }
            },
        )
        .await;
        assert!(polls.len() >= 3, "{polls:#?}");
        for (time, poll) in &polls {
            let tick = poll["tick"];
            assert_eq!(
                poll["counter"],
                f64::from(modbus::counter(tick as u64)),
                "counter at {time}: {poll:?}"
            );
            // The f32 is read in another request than the tick (split at 13): a tick may pass
            // in between.
            let f = poll["tick_f32"];
            assert!(
                f.fract() == 0.0 && (tick..=tick + 1.0).contains(&f),
                "tick_f32 at {time}: {poll:?}"
            );
        }
        daemon.stop().await;
    })
    .await;
}

/// A register with its own `interval_ms` is its own poll group: read at its own interval, the
/// others at the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_with_its_own_interval_is_polled_at_that_interval() {
    bounded(TEST_TIMEOUT, async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        let sources = tcp_source(
            "groups",
            &sim,
            &format!(
                "unit = 1\ninterval_ms = 100\ntimeout_ms = 1000\nregisters = [\n\
                 {{ name = \"fast\", table = \"holding\", address = {}, type = \"u16\" }},\n\
                 {{ name = \"slow\", table = \"input\", address = {}, type = \"u16\", interval_ms = 600 }},\n]",
                modbus::HR_TICK,
                modbus::IR_MARKER
            ),
        );
        let daemon = MbDaemon::start(&sources).await;
        let slow = wait_for("5 stored readings of the slow register", FIRST_VALUES, async || {
            let slow = daemon.raw("groups", "slow");
            if slow.len() >= 5 { Ok(slow) } else { Err(format!("{slow:?}")) }
        })
        .await;
        let fast = daemon.raw("groups", "fast");
        assert!(
            slow.iter().all(|r| r.1 == f64::from(modbus::IR_MARKER_VALUE)),
            "{slow:?}"
        );
        let gaps: Vec<i64> = slow.windows(2).map(|w| (w[1].0 - w[0].0) / 1_000_000).collect();
        assert!(
            gaps.iter().all(|&g| (500..=900).contains(&g)),
            "the slow register's readings are 600 ms apart: {gaps:?} ms"
        );
        assert!(
            fast.len() >= 3 * slow.len(),
            "{} fast readings for {} slow ones",
            fast.len(),
            slow.len()
        );
        let requests = sim.requests();
        let inputs = requests.iter().filter(|r| r.function == 4).count();
        let holdings = requests.iter().filter(|r| r.function == 3).count();
        assert!(
            holdings >= 3 * inputs && inputs >= 5,
            "{holdings} holding reads for {inputs} input reads"
        );
        daemon.stop().await;
    })
    .await;
}

/// `Expected` wants an f32 as its shortest decimal form (a guard for the helpers themselves).
#[test]
fn helpers_compare_f32_as_its_shortest_decimal() {
    let f = modbus::F32_VALUE;
    assert!(Expected::F32(f).matches(-273.15));
    assert!(!Expected::F32(f).matches(f64::from(f)), "the widened f32");
    assert!(!Expected::F32(f).matches(-273.16));
    assert!(Expected::Exact(1.0).matches(1.0));
    assert_eq!(typed_expected(2)["unit_id"], Expected::Exact(2.0));
}
