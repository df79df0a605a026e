//! systemd's notification protocol through a real `NOTIFY_SOCKET` (a Unix datagram socket
//! this test binds): the daemon says READY=1 once the store is open and the web listens,
//! WATCHDOG=1 every half `WATCHDOG_USEC` while the pipeline and the store writer beat,
//! RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads datagrams until `want` is in one (at most `within`); returns every message read.
fn read_until(socket: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no {want} within {within:?}; got {seen:?}");
}

#[test]
fn ready_watchdog_reloading_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.path().join("edgewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw-notify\"\n[store]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [[sources]]\ntype = \"sim\"\nname = \"sim\"\nsensors = 2\ninterval_ms = 200\n",
            dir.path().join("edgewatch.redb").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        // 2 s: a ping every second.
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let first = read_until(&socket, "READY=1", Duration::from_secs(20));
    assert!(
        first
            .last()
            .unwrap()
            .contains("STATUS=running; web on http://127.0.0.1:"),
        "{first:?}"
    );
    // Two pings in a row, about a second apart.
    let started = Instant::now();
    read_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    read_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));

    let pid = child.id().to_string();
    // A reload (the same file): announced, then ready again.
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    read_until(&socket, "RELOADING=1", Duration::from_secs(10));
    read_until(&socket, "READY=1", Duration::from_secs(10));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    read_until(&socket, "STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
