//! The command line as an installer uses it: `validate` and `run` with good and bad configs.

use std::path::Path;
use std::process::{Command, Output};

fn edgewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run edgewatch")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const GOOD: &str = r#"
[gateway]
id = "gw-test"
[store]
path = "STORE"
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "sim"
"#;

#[test]
fn validate_accepts_the_shipped_configs() {
    for file in ["config/demo.toml", "config/edgewatch.toml"] {
        let out = edgewatch(&["validate", "--config", file]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn validate_rejects_bad_configs_with_the_key_path_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            format!("{GOOD}colour = \"red\"\n"),
            "sources[0].colour: unknown field",
        ),
        (
            "wrong type",
            format!("{GOOD}sensors = \"two\"\n"),
            "sources[0].sensors: invalid type",
        ),
        (
            "zero interval",
            format!("{GOOD}interval_ms = 0\n"),
            "sources[0].interval_ms: must be greater than 0",
        ),
        (
            "negative interval",
            format!("{GOOD}interval_ms = -1000\n"),
            "sources[0].interval_ms: ",
        ),
        (
            "bad glob",
            format!(
                "{GOOD}[[rules]]\nmatch = \"sim-{{001/temperature\"\nkind = \"stuck\"\nraise_secs = 5\n"
            ),
            "rules[0].match: bad glob",
        ),
        (
            "bad address",
            GOOD.replace("127.0.0.1:0", "localhost"),
            "web.listen: ",
        ),
        (
            "unknown section",
            format!("[cloud]\n{GOOD}"),
            "cloud: unknown key",
        ),
    ];
    for (what, text, expected) in cases {
        let path = write(dir.path(), "bad.toml", &text);
        let out = edgewatch(&["validate", "--config", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{what}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with(expected)),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
    }
    let out = edgewatch(&["validate", "--config", "/nonexistent/edgewatch.toml"]);
    assert_eq!(out.status.code(), Some(64), "missing file");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("config: cannot read /nonexistent/edgewatch.toml")
    );
}

#[test]
fn validate_prints_every_problem_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        &format!("{GOOD}interval_ms = 0\nsensors = 0\n[pipeline]\nwindow_secs = 0\n"),
    );
    let out = edgewatch(&["validate", "--config", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    for expected in [
        "pipeline.window_secs: must be greater than 0",
        "sources[0].interval_ms: must be greater than 0",
        "sources[0].sensors: must be greater than 0",
    ] {
        assert!(
            stderr.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

const MODBUS: &str = r#"
[[sources]]
type = "modbus_tcp"
name = "press"
host = "127.0.0.1"
units = [1, 2]
profile = "meter"
[[sources]]
type = "modbus_rtu"
name = "bus"
device = "/dev/ttyUSB0"
baud = 19200
registers = [
  { name = "t", table = "holding", address = 0, type = "f32", order = "CDAB" },
  { name = "run", table = "coil", address = 16, type = "bool" },
]
[profiles.meter]
registers = [{ name = "p", table = "input", address = 0, type = "i32", scale = 0.1 }]
"#;

#[test]
fn validate_checks_modbus_sources_and_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", &format!("{GOOD}{MODBUS}"));
    let out = edgewatch(&["validate", "--config", &good]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = MODBUS
        .replace("profile = \"meter\"", "profile = \"metre\"")
        .replace("type = \"bool\"", "type = \"u16\"");
    let bad = write(dir.path(), "bad.toml", &format!("{GOOD}{bad}"));
    let out = edgewatch(&["validate", "--config", &bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for expected in [
        "sources[1].profile: unknown profile `metre` (defined: meter)",
        "sources[2].registers[1].type: coil holds bits: use type = \"bool\" (not u16)",
    ] {
        assert!(
            stderr.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn run_with_a_bad_config_exits_64_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store/edgewatch.redb");
    let text = GOOD.replace("STORE", store.to_str().unwrap()) + "interval_ms = 0\n";
    let path = write(dir.path(), "bad.toml", &text);
    let out = edgewatch(&["run", "--config", &path]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("sources[0].interval_ms: must be greater than 0")
    );
    assert!(
        !store.exists() && !store.parent().unwrap().exists(),
        "nothing may be created"
    );
}

#[test]
fn version_is_printed() {
    let out = edgewatch(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("edgewatch {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn environment_overrides_reach_validation() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.toml", GOOD);
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["validate", "--config", &path])
        .env("EDGEWATCH__WEB__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web.listen: `not-an-address`"));
}
