//! The release binary for the benchmarks that run the daemon as its own process
//! (`examples/mqtt_bench.rs`, `examples/web_load.rs`), as an installer would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `target/release/edgewatch` (a no-op when it is up to date) and returns its path:
/// the sibling of `target/release/examples/`, where the example runs from.
pub fn build_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "edgewatch"])
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
