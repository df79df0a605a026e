//! systemd/edgewatch.service as systemd itself reads it: `systemd-analyze verify` is clean in
//! a scratch root (the unit, this test's binary as /usr/bin/edgewatch, the host's kill as
//! /bin/kill, and the host's systemd units that the unit's dependencies name), and `systemd-analyze security --offline=true`
//! rates its exposure at 2.0 or lower.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/edgewatch.service")
}

/// Copies the directory `from` into `to`, recursively (regular files, directories and
/// symlinks as they are).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, target).unwrap();
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_unit_verifies_clean() {
    let root = tempfile::tempdir().unwrap();
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("the host's systemd units (package systemd; scripts/test installs it)");
    copy_tree(units, &root.path().join("usr/lib/systemd/system"));
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_edgewatch"), bin.join("edgewatch")).unwrap();
    // ExecReload's /bin/kill (procps; the package depends on it).
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kill (package procps)");
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy(kill, root.path().join("bin/kill")).unwrap();
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(unit(), etc.join("edgewatch.service")).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("edgewatch.service")
        .output()
        .expect("systemd-analyze (package systemd)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(report.trim(), "", "systemd-analyze verify is not clean");
}

#[test]
fn the_unit_exposure_is_at_most_2() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit())
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for edgewatch.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}
