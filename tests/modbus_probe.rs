//! `edgewatch probe` (the built binary) against the pymodbus simulator, as an installer runs
//! it: every type in every word order over TCP prints the simulator's known value with its raw
//! registers; exceptions, a silent unit and a closed port print their exact error and exit
//! non-zero; RTU over a socat pty pair reads the input marker; `probe --config --source` polls
//! every unit of a configured source once and prints sensor, field and value.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::modbus::{self, Fault, Kind, ModbusSim, Order, SimOptions};
use support::modbus_daemon::{MbDaemon, rtu_source, tcp_source, typed_expected, typed_registers};
use support::process::free_port;

/// Bound of one probe run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe run gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `edgewatch ARGS`, killed after [`PROBE_TIMEOUT`].
fn edgewatch(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgewatch");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll edgewatch") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgewatch {args:?} did not finish within {PROBE_TIMEOUT:?}");
        }
        sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// The line of `stdout` for `table:address`: (raw registers, value text).
fn value_line(run: &Run, table: &str, address: u16) -> (Vec<String>, String) {
    let prefix = format!("{table}:{address} ");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {table}:{address}: {run:?}"));
    let mut words: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
    let value = words.pop().unwrap_or_default();
    (words, value)
}

fn hex(words: &[u16]) -> Vec<String> {
    words.iter().map(|w| format!("0x{w:04X}")).collect()
}

#[test]
fn probe_modbus_tcp_prints_every_type_in_every_order() {
    let sim = ModbusSim::tcp(SimOptions::default());
    let port = sim.port().to_string();
    for order in Order::ALL {
        for kind in Kind::ALL {
            let address = kind.address(order);
            let read = format!("holding:{address}..{}", address + kind.width());
            let run = edgewatch(&[
                "probe",
                "modbus",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--unit",
                "1",
                "--read",
                &read,
                "--type",
                kind.name(),
                "--order",
                order.name(),
            ]);
            assert_eq!(run.code, Some(0), "{order:?} {kind:?}: {run:?}");
            let (raw, value) = value_line(&run, "holding", address);
            assert_eq!(
                raw,
                hex(&kind.words(order)),
                "{order:?} {kind:?} raw: {run:?}"
            );
            let got: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{order:?} {kind:?}: value {value:?}: {run:?}"));
            match kind {
                Kind::F32 => assert_eq!(got as f32, modbus::F32_VALUE, "{run:?}"),
                _ => assert_eq!(got, kind.value(), "{order:?} {kind:?}: {run:?}"),
            }
            // The value as printed is the value exactly (shortest round-trip form; for an
            // f32 that of the f32: -273.15).
            let printed = match kind {
                Kind::F32 => modbus::F32_VALUE.to_string(),
                _ => kind.value().to_string(),
            };
            assert!(
                run.stdout.contains(&format!(" {printed}\n")),
                "{order:?} {kind:?}: {run:?}"
            );
        }
    }
    // Several values of one range, and the other tables.
    let run = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "2",
        "--read",
        "holding:0..2",
        "--read",
        "input:0..2",
        "--read",
        "coil:0..3",
        "--read",
        "discrete_input:0..2",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(value_line(&run, "holding", 0).1, "2", "{run:?}");
    assert_eq!(
        value_line(&run, "holding", 1),
        (hex(&[modbus::HR_BITS_VALUE]), "32805".to_string()),
        "{run:?}"
    );
    assert_eq!(value_line(&run, "input", 0).1, "2", "{run:?}");
    assert_eq!(value_line(&run, "input", 1).1, "18770", "{run:?}");
    for address in 0..3 {
        let coil = u8::from(modbus::bit_value(false, address, 0)).to_string();
        assert_eq!(value_line(&run, "coil", address).1, coil, "{run:?}");
    }
    for address in 0..2 {
        let di = u8::from(modbus::bit_value(true, address, 0)).to_string();
        assert_eq!(value_line(&run, "discrete_input", address).1, di, "{run:?}");
    }
}

#[test]
fn probe_modbus_prints_the_exact_error_and_exits_non_zero() {
    let sim = ModbusSim::tcp(SimOptions::default());
    sim.set_faults(&[Fault::exception(4).unit(3)]);
    let port = sim.port().to_string();
    let probe = |unit: &str, read: &str, port: &str| {
        edgewatch(&[
            "probe",
            "modbus",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--unit",
            unit,
            "--read",
            read,
            "--timeout-ms",
            "300",
        ])
    };
    // An undefined address.
    let run = probe(
        "1",
        &format!("holding:{}", modbus::UNDEFINED_HOLDING),
        &port,
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("holding:13..14  error: exception 2 (illegal data address)"),
        "{run:?}"
    );
    // A merged range over it fails the same way (the probe reads what it is told).
    let run = probe("1", "holding:10..16", &port);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("illegal data address"), "{run:?}");
    // A device failure.
    let run = probe("3", "holding:0", &port);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("exception 4 (server device failure)"),
        "{run:?}"
    );
    // A unit that does not answer.
    let run = probe("9", "holding:0", &port);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("timeout after 300 ms"), "{run:?}");
    // Nothing listening.
    let run = probe("1", "holding:0", &free_port().to_string());
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("connection refused"), "{run:?}");
    // One good and one bad read: the good value is printed, the exit is still non-zero.
    let run = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--read",
        "holding:12",
        "--read",
        "holding:13",
    ]);
    assert_ne!(run.code, Some(0), "{run:?}");
    let (_, tick) = value_line(&run, "holding", 12);
    assert!(tick.parse::<u16>().is_ok(), "{run:?}");
    assert!(run.stdout.contains("illegal data address"), "{run:?}");
}

#[test]
fn probe_modbus_rtu_reads_over_the_pty() {
    let sim = ModbusSim::rtu(SimOptions::default().baud(19200));
    let tty = sim.client_tty();
    let tty = tty.to_str().expect("UTF-8 path");
    let run = edgewatch(&[
        "probe", "modbus", "--serial", tty, "--baud", "19200", "--unit", "1", "--read", "input:1",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("0x4952"), "{run:?}");
    assert!(run.stdout.contains("18770"), "{run:?}");
    assert_eq!(
        value_line(&run, "input", 1),
        (hex(&[modbus::IR_MARKER_VALUE]), "18770".to_string())
    );
    // A multi-register type in a swapped order on unit 2, with explicit line settings.
    let address = Kind::F64.address(Order::Badc);
    let run = edgewatch(&[
        "probe",
        "modbus",
        "--serial",
        tty,
        "--baud",
        "19200",
        "--parity",
        "none",
        "--data-bits",
        "8",
        "--stop-bits",
        "1",
        "--unit",
        "2",
        "--read",
        &format!("holding:{address}..{}", address + 4),
        "--type",
        "f64",
        "--order",
        "BADC",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        value_line(&run, "holding", address),
        (
            hex(&Kind::F64.words(Order::Badc)),
            format!("{}", modbus::F64_VALUE)
        ),
        "{run:?}"
    );
    // An undefined address over RTU.
    let run = edgewatch(&[
        "probe", "modbus", "--serial", tty, "--baud", "19200", "--unit", "1", "--read", "input:2",
    ]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("illegal data address"), "{run:?}");
}

#[test]
fn probe_config_polls_every_unit_of_a_source_once() {
    let tcp = ModbusSim::tcp(SimOptions::default());
    let rtu = ModbusSim::rtu(SimOptions::default().baud(19200));
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = format!(
        "{}\n{}\n{}\n[profiles.typed]\nregisters = [\n{}\n]\n",
        tcp_source(
            "meters",
            &tcp,
            "units = [1, 2]\nsensor_id = \"meter-{unit}\"\ntimeout_ms = 1000\nprofile = \"typed\"",
        ),
        tcp_source(
            "gaps",
            &tcp,
            &format!(
                "unit = 3\ntimeout_ms = 1000\nmax_gap = 8\nregisters = [\n\
                 {{ name = \"tick\", table = \"holding\", address = {}, type = \"u16\" }},\n\
                 {{ name = \"missing\", table = \"holding\", address = {}, type = \"u16\" }},\n]",
                modbus::HR_TICK,
                modbus::UNDEFINED_HOLDING
            ),
        ),
        rtu_source(
            "bus",
            &rtu,
            "units = [1, 2]\ntimeout_ms = 1000\nprofile = \"typed\"",
        ),
        typed_registers()
    );
    let config = dir.path().join("edgewatch.toml");
    std::fs::write(
        &config,
        MbDaemon::config_text(&dir.path().join("store.redb"), &sources),
    )
    .expect("write the config");
    let config = config.to_str().expect("UTF-8 path");

    for (source, sensors) in [
        ("meters", [("meter-1", 1), ("meter-2", 2)]),
        ("bus", [("bus-1", 1), ("bus-2", 2)]),
    ] {
        let run = edgewatch(&["probe", "--config", config, "--source", source]);
        assert_eq!(run.code, Some(0), "{source}: {run:?}");
        for (sensor, unit) in sensors {
            for (field, want) in typed_expected(unit) {
                let prefix = format!("{sensor}  {field}  ");
                let line = run
                    .stdout
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .unwrap_or_else(|| panic!("no line {prefix:?}: {run:?}"));
                let value: f64 = line[prefix.len()..]
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{line:?}: {run:?}"));
                assert!(
                    want.matches(value),
                    "{sensor} {field}: {value} is not {want:?}"
                );
            }
        }
    }

    // A point on an undefined address: split off, reported with its exception, exit 1; the
    // good point is still printed.
    let run = edgewatch(&["probe", "--config", config, "--source", "gaps"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let tick = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("gaps  tick  "))
        .unwrap_or_else(|| panic!("no tick line: {run:?}"));
    assert!(tick.trim().parse::<u16>().is_ok(), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("gaps  missing  ") && l.contains("illegal data address")),
        "{run:?}"
    );
    assert!(
        !dir.path().join("store.redb").exists(),
        "the probe never opens the store"
    );
}

/// A malformed command line (empty range, unknown table, no device, a type that does not fit
/// the table) is refused before anything is sent: exit 2 (clap) or 64, nothing on stdout.
#[test]
fn probe_usage_errors_exit_2_or_64() {
    for args in [
        &["probe", "modbus", "--host", "h", "--read", "holding:5..5"][..],
        &["probe", "modbus", "--host", "h", "--read", "register:1"],
        &["probe", "modbus", "--read", "holding:1"],
        &[
            "probe", "modbus", "--host", "h", "--read", "coil:1", "--type", "f32",
        ],
    ] {
        let run = edgewatch(args);
        assert!(matches!(run.code, Some(2) | Some(64)), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
}
