//! Process and port helpers shared by the server harnesses (influxd, mosquitto, the daemon).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read it, close. Another
/// process may take it before the server binds it: a harness checks with [`listens_on`] that
/// its own process got it, and retries otherwise.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// True if process `pid` holds a socket listening on 127.0.0.1:`port`: the socket's inode in
/// `/proc/net/tcp` is one of the process's file descriptors.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // /proc/net/tcp prints the address as a u32 in host byte order, then the port.
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes([127, 0, 0, 1]));
    const LISTEN: &str = "0A";
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 9 && fields[1] == local && fields[3] == LISTEN)
                .then(|| format!("socket:[{}]", fields[9]))
        })
        .collect();
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            sockets
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
        })
    })
}

/// Sends `SIG<name>` to `pid` with the shell's `kill` builtin (std can only SIGKILL, and
/// `/bin/sh` is on every machine, unlike procps' `kill`).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("/bin/sh")
        .args(["-c", "kill -s \"$0\" \"$1\"", name, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Opens a server's log file for appending (created when missing).
pub fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Appends a harness line to a server's log (between the server's own lines) and returns the
/// log's length after it.
pub fn note_in_log(path: &Path, line: &str) -> u64 {
    let mut log = open_log(path);
    let _ = writeln!(log, "=== harness: {line}");
    log.metadata().map_or(0, |m| m.len())
}

/// A server's log from byte `offset` on (empty when it cannot be read).
pub fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}
