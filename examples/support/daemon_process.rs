//! For the benchmarks that run the daemon as its own process, as an installer would
//! (`examples/mqtt_bench.rs`, `examples/web_load.rs`): the release
//! binary, and the CPU time a process spent.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `target/release/edgewatch` (a no-op when it is up to date) and returns its path:
/// the sibling of `target/release/examples/`, where the example runs from.
pub fn build_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The daemon gets the allocator the example was built with (`--no-default-features`
    // for glibc's malloc, the default or `--features mimalloc` for mimalloc).
    let features: &[&str] = if cfg!(feature = "mimalloc") {
        &["--features", "mimalloc"]
    } else {
        &["--no-default-features"]
    };
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "edgewatch"])
        .args(features)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release failed");
    let exe = std::env::current_exe().expect("own path");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .expect("the example runs from target/release/examples");
    let binary = release.join("edgewatch");
    assert!(binary.is_file(), "no {}", binary.display());
    binary
}

/// `/proc/PID/stat` counts CPU time in USER_HZ, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds of process `pid` (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}
