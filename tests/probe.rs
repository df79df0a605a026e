//! `edgewatch probe` as a technician runs it: output lines, exact errors and exit codes,
//! against the real Modbus simulator (tests/support/modbus_sim.py) over TCP and over RTU on
//! its socat pty. Every run of the binary is bounded by [`RUN_TIMEOUT`].

mod support;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::modbus::{self, Kind, ModbusSim, Order, SimOptions};

/// Bound of one run of `edgewatch probe`.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `edgewatch ARGS`, killed if it has not exited within [`RUN_TIMEOUT`].
fn edgewatch(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgewatch");
    // Small outputs: the pipes never fill, so waiting before reading cannot block.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for edgewatch") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgewatch {args:?} did not exit within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `0x1234 0xABCD`.
fn hex(words: &[u16]) -> String {
    words
        .iter()
        .map(|w| format!("0x{w:04X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn probe_modbus_prints_address_raw_registers_and_value() {
    let sim = ModbusSim::tcp(SimOptions::default());
    let port = sim.port().to_string();
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "1",
        "--read",
        "holding:0..2",
        "--read",
        "input:1",
    ]);
    assert_eq!(
        stdout(&out),
        "holding:0  0x0001  1\nholding:1  0x8025  32805\ninput:1  0x4952  18770\n"
    );
    assert!(out.status.success());

    // The CDAB block's u32 and i32, both read as u32: the second register is the high word.
    let cdab = Order::Cdab;
    let (at_u32, at_i32) = (Kind::U32.address(cdab), Kind::I32.address(cdab));
    let read = format!("holding:{at_u32}..{}", at_i32 + 2);
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "2",
        "--read",
        &read,
        "--type",
        "u32",
        "--order",
        "CDAB",
    ]);
    let expected = format!(
        "holding:{at_u32}  {}  {}\nholding:{at_i32}  {}  {}\n",
        hex(&Kind::U32.words(cdab)),
        modbus::U32_VALUE,
        hex(&Kind::I32.words(cdab)),
        modbus::I32_VALUE as u32,
    );
    assert_eq!(stdout(&out), expected);
    assert!(out.status.success());
}

#[test]
fn probe_modbus_over_rtu_prints_values_and_a_timeout() {
    let sim = ModbusSim::rtu(SimOptions::default().baud(19200));
    let tty = sim.client_tty();
    let tty = tty.to_str().expect("a UTF-8 temp path");
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--serial",
        tty,
        "--baud",
        "19200",
        "--unit",
        "3",
        "--read",
        "holding:0..2",
    ]);
    assert_eq!(
        stdout(&out),
        "holding:0  0x0003  3\nholding:1  0x8025  32805\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());

    // Unit 9 is not on the bus.
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--serial",
        tty,
        "--baud",
        "19200",
        "--unit",
        "9",
        "--read",
        "holding:0",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(stdout(&out), "holding:0..1  error: timeout after 200 ms\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn probe_modbus_prints_the_exact_error_and_exits_1() {
    let mut sim = ModbusSim::tcp(SimOptions::default());
    let port = sim.port().to_string();
    // Holding 2 is not defined in the simulator.
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--read",
        "holding:0..3",
    ]);
    assert_eq!(
        stdout(&out),
        "holding:0..3  error: exception 2 (illegal data address)\n"
    );
    assert_eq!(out.status.code(), Some(1));

    // Unit 9 is not served: no answer.
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "9",
        "--read",
        "holding:0",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(stdout(&out), "holding:0..1  error: timeout after 200 ms\n");
    assert_eq!(out.status.code(), Some(1));

    sim.stop();
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--read",
        "coil:16",
    ]);
    assert_eq!(stdout(&out), "coil:16..17  error: connection refused\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn probe_usage_errors_exit_64() {
    for args in [
        &["probe", "modbus", "--host", "h", "--read", "holding:5..5"][..],
        &["probe", "modbus", "--host", "h", "--read", "register:1"],
        &["probe", "modbus", "--read", "holding:1"],
        &[
            "probe", "modbus", "--host", "h", "--read", "coil:1", "--type", "f32",
        ],
    ] {
        let out = edgewatch(args);
        assert!(
            matches!(out.status.code(), Some(2) | Some(64)),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn probe_config_polls_every_unit_of_the_source_once() {
    let sim = ModbusSim::tcp(SimOptions::default());
    let port = sim.port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mb.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "gw"
[store]
path = "{store}"
[[sources]]
type = "modbus_tcp"
name = "press"
port = {port}
host = "127.0.0.1"
units = [1, 9]
timeout_ms = 200
retries = 0
registers = [
  {{ name = "a", table = "holding", address = 0, type = "u16", scale = 0.5 }},
  {{ name = "b", table = "holding", address = 1, type = "u16" }},
  {{ name = "c", table = "holding", address = 50, type = "u16" }},
]
"#,
            store = dir.path().join("s.redb").display()
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let out = edgewatch(&["probe", "--config", path, "--source", "press"]);
    let text = stdout(&out);
    // Holding 0 is the unit id, holding 1 0x8025; holding 50 is not defined.
    assert!(text.contains("press-1  a  0.5\n"), "{text}");
    assert!(text.contains("press-1  b  32805\n"), "{text}");
    assert!(
        text.contains("press-1  c  error: exception 2 (illegal data address) at holding:50..51\n"),
        "{text}"
    );
    assert!(
        text.contains("press-9  holding:0..2 (a, b)  error: timeout after 200 ms\n"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !dir.path().join("s.redb").exists(),
        "the probe never opens the store"
    );

    let out = edgewatch(&["probe", "--config", path, "--source", "nope"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Modbus sources: press"),
        "{out:?}"
    );
}
