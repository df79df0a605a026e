//! `edgewatch probe` as a technician runs it: output lines, exact errors and exit codes,
//! against a tiny Modbus TCP responder in this process (the simulator-based end-to-end tests
//! are elsewhere).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

fn edgewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run edgewatch")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Serves Modbus TCP on a free port: read holding/input registers answer `address + i`,
/// except addresses from 100 on, which answer exception 2; unit 9 never answers.
fn responder() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(mut s: TcpStream) {
    let mut h = [0u8; 7];
    while s.read_exact(&mut h).is_ok() {
        let len = usize::from(u16::from_be_bytes([h[4], h[5]])) - 1;
        let mut pdu = vec![0u8; len];
        if s.read_exact(&mut pdu).is_err() {
            return;
        }
        if h[6] == 9 {
            continue;
        }
        let address = u16::from_be_bytes([pdu[1], pdu[2]]);
        let count = u16::from_be_bytes([pdu[3], pdu[4]]);
        let body = if address + count > 100 {
            vec![pdu[0] | 0x80, 2]
        } else {
            let mut b = vec![pdu[0], (count * 2) as u8];
            for i in 0..count {
                b.extend_from_slice(&(address + i).to_be_bytes());
            }
            b
        };
        let mut frame = vec![h[0], h[1], 0, 0];
        frame.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
        frame.push(h[6]);
        frame.extend(body);
        if s.write_all(&frame).is_err() {
            return;
        }
    }
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn probe_modbus_prints_address_raw_registers_and_value() {
    let port = responder().to_string();
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
        "holding:0..3",
        "--read",
        "input:7",
    ]);
    assert_eq!(
        stdout(&out),
        "holding:0  0x0000  0\nholding:1  0x0001  1\nholding:2  0x0002  2\ninput:7  0x0007  7\n"
    );
    assert!(out.status.success());

    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--read",
        "holding:10..14",
        "--type",
        "u32",
        "--order",
        "CDAB",
    ]);
    // CDAB: the second register is the high word.
    let expected = format!(
        "holding:10  0x000A 0x000B  {}\nholding:12  0x000C 0x000D  {}\n",
        (11u32 << 16) | 10,
        (13u32 << 16) | 12
    );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn probe_modbus_prints_the_exact_error_and_exits_1() {
    let port = responder().to_string();
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--read",
        "holding:98..102",
    ]);
    assert_eq!(
        stdout(&out),
        "holding:98..102  error: exception 2 (illegal data address)\n"
    );
    assert_eq!(out.status.code(), Some(1));

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

    let closed = closed_port().to_string();
    let out = edgewatch(&[
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        &closed,
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
    let port = responder();
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
  {{ name = "a", table = "holding", address = 3, type = "u16", scale = 0.5 }},
  {{ name = "b", table = "holding", address = 4, type = "u16" }},
  {{ name = "c", table = "holding", address = 100, type = "u16" }},
]
"#,
            store = dir.path().join("s.redb").display()
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let out = edgewatch(&["probe", "--config", path, "--source", "press"]);
    let text = stdout(&out);
    assert!(text.contains("press-1  a  1.5\n"), "{text}");
    assert!(text.contains("press-1  b  4\n"), "{text}");
    assert!(
        text.contains(
            "press-1  c  error: exception 2 (illegal data address) at holding:100..101\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("press-9  holding:3..5 (a, b)  error: timeout after 200 ms\n"),
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
