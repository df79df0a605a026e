//! The Debian package (`cargo deb`, `[package.metadata.deb]` in Cargo.toml). The package is
//! built once per run by `scripts/package` from the release binary (cargo deb runs `cargo
//! build --release`, a no-op when target/release is up to date), then:
//!
//! - `the_package_unpacks_and_its_config_validates`: its control data (fields, conffiles,
//!   maintainer scripts) and its files are checked, it is unpacked into a scratch root, the
//!   unit's paths are checked against the unpacked files and the config, and the unpacked
//!   binary validates the unpacked config.
//! - `the_package_installs_upgrades_and_purges` (only with `CI=true`: the CI machine is
//!   disposable; root or `sudo -n` needed): `dpkg -i`, the user, its groups, the state
//!   directory, the config's owner and mode, `edgewatch validate` as root and as the service's
//!   user, the unit enabled (and active when systemd runs); an upgrade to a new revision keeps
//!   a changed config and the state; `dpkg --purge` deletes config, state and binary and keeps
//!   the user.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CONFIG: &str = "/etc/edgewatch/edgewatch.toml";
const STATE_DIR: &str = "/var/lib/edgewatch";
const UNIT: &str = "usr/lib/systemd/system/edgewatch.service";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory under target/tmp for the packages of this run.
fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` (stdin closed, output to files), killing it after `limit`, and returns its
/// output. The output goes through files, not pipes, so that a chatty build cannot block.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}:\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    }
}

/// [`run`] that panics unless the command exits 0, and returns its stdout.
fn ok(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `program` in the project's directory, without the variables cargo sets for a test
/// process (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...): build scripts that watch them
/// (ring's does) would otherwise see them change and the release build would start over.
fn build_cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(manifest_dir());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "CARGO"
            || key == "CARGO_CRATE_NAME"
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

const SHORT: Duration = Duration::from_secs(60);

/// The host architecture's package, built once per test run by `scripts/package` (which
/// runs `cargo deb`: the release build may take minutes on a busy machine).
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = work_dir().join("debs");
        let _ = fs::remove_dir_all(&out);
        let printed = ok(
            build_cmd(manifest_dir().join("scripts/package")).arg(&out),
            Duration::from_secs(45 * 60),
        );
        let arch = ok(Command::new("dpkg").arg("--print-architecture"), SHORT);
        let suffix = format!("_{}.deb", arch.trim());
        let deb = printed
            .lines()
            .map(PathBuf::from)
            .find(|p| p.to_string_lossy().ends_with(&suffix))
            .unwrap_or_else(|| panic!("scripts/package printed no *{suffix}:\n{printed}"));
        assert!(deb.is_file(), "{} is not there", deb.display());
        deb
    })
}

/// `dpkg-deb --field DEB FIELD`.
fn field(deb: &Path, name: &str) -> String {
    ok(
        Command::new("dpkg-deb").arg("--field").arg(deb).arg(name),
        SHORT,
    )
    .trim()
    .to_string()
}

/// The unit's `Exec*=` settings: the key (`ExecStart`, ...) and the command line, without
/// its `-@:+!` prefixes.
fn exec_lines(unit: &str) -> Vec<(String, Vec<String>)> {
    unit.lines()
        .filter(|line| line.starts_with("Exec"))
        .filter_map(|line| line.split_once('='))
        .map(|(key, command)| {
            let words = command
                .trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .map(str::to_string)
                .collect();
            (key.to_string(), words)
        })
        .collect()
}

/// The value of `--config` in a command line.
fn config_arg(line: &[String]) -> Option<&str> {
    let at = line.iter().position(|w| w == "--config")?;
    line.get(at + 1).map(String::as_str)
}

/// A command without the `EDGEWATCH__*` overrides of this process's environment.
fn edgewatch_cmd(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EDGEWATCH__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn the_package_unpacks_and_its_config_validates() {
    let deb = package();

    // Control fields.
    assert_eq!(field(deb, "Package"), "edgewatch");
    let arch = ok(Command::new("dpkg").arg("--print-architecture"), SHORT);
    assert_eq!(field(deb, "Architecture"), arch.trim());
    let depends = field(deb, "Depends");
    assert!(
        depends.contains("libc6 (>= ") && depends.contains("adduser") && depends.contains("procps"),
        "Depends: {depends}"
    );
    assert!(field(deb, "Version").starts_with(env!("CARGO_PKG_VERSION")));

    // Control data: the conffile and the maintainer scripts.
    let scratch = tempfile::tempdir().unwrap();
    let control = scratch.path().join("DEBIAN");
    ok(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(deb)
            .arg(&control),
        SHORT,
    );
    let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONFIG], "conffiles");
    let script = |name: &str| {
        let path = control.join(name);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
        ok(Command::new("sh").arg("-n").arg(&path), SHORT);
        fs::read_to_string(path).unwrap()
    };
    let postinst = script("postinst");
    for expected in [
        "adduser --system --group",
        "adduser edgewatch dialout",
        "install -d -o edgewatch -g edgewatch -m 0750 /var/lib/edgewatch",
        "dpkg-statoverride --update --add root edgewatch 0640",
        // cargo-deb's systemd snippets: enable on install, restart after an upgrade.
        "deb-systemd-helper enable edgewatch.service",
        "_dh_action=restart",
        "deb-systemd-invoke $_dh_action edgewatch.service",
    ] {
        assert!(
            postinst.contains(expected),
            "postinst lacks {expected:?}:\n{postinst}"
        );
    }
    assert!(!postinst.contains("#DEBHELPER#"), "postinst: {postinst}");
    // Stopped on removal only, not before an upgrade (restarted after it instead).
    let prerm = script("prerm");
    assert!(
        prerm.contains("[ \"$1\" = remove ]")
            && prerm.contains("deb-systemd-invoke stop edgewatch.service"),
        "prerm:\n{prerm}"
    );
    let postrm = script("postrm");
    for expected in [
        "rm -rf /var/lib/edgewatch",
        "deb-systemd-helper purge edgewatch.service",
    ] {
        assert!(
            postrm.contains(expected),
            "postrm lacks {expected:?}:\n{postrm}"
        );
    }
    let purge = postrm.find("\"$1\" = \"purge\"").expect("a purge branch");
    assert!(postrm.find("rm -rf /var/lib/edgewatch").unwrap() > purge);

    // The files, exactly.
    let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(deb), SHORT);
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            CONFIG,
            "/usr/bin/edgewatch",
            "/usr/lib/systemd/system/edgewatch.service",
            "/usr/share/doc/edgewatch/README.md",
            "/usr/share/doc/edgewatch/copyright",
            "/usr/share/doc/edgewatch/edgewatch.reference.toml",
            "/usr/share/doc/edgewatch/install.md",
        ],
        "{listing}"
    );

    // Unpacked into a scratch root.
    let root = scratch.path().join("root");
    ok(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(deb)
            .arg(&root),
        SHORT,
    );
    let unit = fs::read_to_string(root.join(UNIT)).unwrap();
    assert_eq!(
        unit,
        fs::read_to_string(manifest_dir().join("systemd/edgewatch.service")).unwrap()
    );
    let binary = root.join("usr/bin/edgewatch");
    assert_eq!(
        fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // ExecStartPre (validate) and ExecStart (run) use the packaged binary and config; any
    // other Exec*= names a program that exists (in the package or on every system).
    let execs = exec_lines(&unit);
    for key in ["ExecStartPre", "ExecStart"] {
        let (_, line) = execs
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}= in the unit"));
        assert_eq!(line[0], "/usr/bin/edgewatch", "{key}: {line:?}");
        assert_eq!(config_arg(line), Some(CONFIG), "{key}: {line:?}");
    }
    for (key, line) in &execs {
        let program = Path::new(&line[0]);
        if program.is_absolute() {
            let packaged = root.join(program.strip_prefix("/").unwrap());
            assert!(
                packaged.is_file() || program.is_file(),
                "{key}: {} is neither in the package nor on this system",
                program.display()
            );
        }
    }
    // The store: the unit's override, the packaged config and the unit's StateDirectory agree.
    let config = root.join(CONFIG.trim_start_matches('/'));
    let packaged = edgewatch::config::load_str(&fs::read_to_string(&config).unwrap())
        .expect("the packaged config loads");
    let store = packaged.store.path.display().to_string();
    assert!(
        unit.contains(&format!("Environment=EDGEWATCH__STORE__PATH={store}\n")),
        "{store}"
    );
    assert!(store.starts_with(&format!("{STATE_DIR}/")), "{store}");
    assert!(unit.contains("StateDirectory=edgewatch\n"));

    // The unpacked binary validates the unpacked config as it is (whether or not this
    // machine has /var/lib/edgewatch), and without writing anything: pointed at a store in a
    // directory that does not exist, it does not make the directory.
    let out = ok(
        edgewatch_cmd(&binary)
            .arg("validate")
            .arg("--config")
            .arg(&config),
        SHORT,
    );
    assert!(
        out.trim_end().ends_with(": ok (1 source(s), 0 rule(s))"),
        "{out}"
    );
    let missing = scratch.path().join("missing");
    ok(
        edgewatch_cmd(&binary)
            .env("EDGEWATCH__STORE__PATH", missing.join("edgewatch.redb"))
            .arg("validate")
            .arg("--config")
            .arg(&config),
        SHORT,
    );
    assert!(!missing.exists(), "validate made the store's directory");
    let version = ok(Command::new(&binary).arg("--version"), SHORT);
    assert_eq!(
        version.trim(),
        format!("edgewatch {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A command run as root: directly when this process is root, else through `sudo -n`.
fn root_cmd(program: &str) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", program]);
        cmd
    }
}

fn installed() -> bool {
    run(
        Command::new("dpkg-query").args(["-W", "-f=${Status}", "edgewatch"]),
        SHORT,
    )
    .stdout
    .starts_with(b"install ok")
}

/// Purges the package and removes this test's drop-in, also when an assertion failed.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run(
            root_cmd("dpkg")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["--purge", "edgewatch"]),
            Duration::from_secs(120),
        );
        let _ = run(
            root_cmd("rm").args(["-rf", DROP_IN_DIR]),
            Duration::from_secs(10),
        );
        if systemd_runs() {
            let _ = run(root_cmd("systemctl").arg("daemon-reload"), SHORT);
        }
    }
}

const DROP_IN_DIR: &str = "/etc/systemd/system/edgewatch.service.d";

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `getent passwd|group NAME` split at `:`.
fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = run(Command::new("getent").args([db, name]), SHORT);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_string)
            .collect()
    })
}

/// Waits up to 60 s for `systemctl is-active edgewatch` to say `active`.
fn wait_active() {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(
            Command::new("systemctl").args(["is-active", "edgewatch"]),
            SHORT,
        );
        if out.stdout.starts_with(b"active") {
            return;
        }
        if Instant::now() >= deadline {
            let journal = run(
                root_cmd("journalctl").args(["-u", "edgewatch", "-n", "50", "--no-pager"]),
                SHORT,
            );
            panic!(
                "edgewatch.service is not active: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn dpkg_install(deb: &Path) {
    ok(
        root_cmd("dpkg")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["--force-confold", "-i"])
            .arg(deb),
        Duration::from_secs(300),
    );
}

#[test]
fn the_package_installs_upgrades_and_purges() {
    if std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipped: installs a package system-wide, only with CI=true");
        return;
    }
    let deb = package();
    assert!(
        !installed(),
        "edgewatch is installed on this machine already; this test installs and purges it"
    );
    let _cleanup = Cleanup;
    if systemd_runs() {
        // The service started by the postinst listens on a free port, not 8080.
        ok(root_cmd("mkdir").args(["-p", DROP_IN_DIR]), SHORT);
        ok(
            root_cmd("sh").args([
                "-c",
                "printf '[Service]\\nEnvironment=EDGEWATCH__WEB__LISTEN=127.0.0.1:0\\n' > \"$0\"",
                &format!("{DROP_IN_DIR}/test.conf"),
            ]),
            SHORT,
        );
    }

    dpkg_install(deb);
    assert!(installed());

    // The service's user: a system user with its own group, in dialout.
    let user = getent("passwd", "edgewatch").expect("the user edgewatch");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {user:?}");
    assert_eq!(user[5], STATE_DIR, "{user:?}");
    assert!(
        user[6].ends_with("nologin") || user[6].ends_with("false"),
        "{user:?}"
    );
    let group = getent("group", "edgewatch").expect("the group edgewatch");
    let gid: u32 = group[2].parse().unwrap();
    assert_eq!(user[3], group[2], "primary group");
    if let Some(dialout) = getent("group", "dialout") {
        assert!(
            dialout[3].split(',').any(|m| m == "edgewatch"),
            "edgewatch is not in dialout: {dialout:?}"
        );
    }

    // Files, owners and modes.
    let state = fs::metadata(STATE_DIR).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o750));
    let config = fs::metadata(CONFIG).unwrap();
    assert_eq!(
        (config.uid(), config.gid(), config.mode() & 0o7777),
        (0, gid, 0o640)
    );
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/edgewatch.service").exists(),
        "the unit is not enabled"
    );

    // The installed binary validates the installed config, as root and as the service's user
    // (who reads it through its group).
    let out = ok(
        root_cmd("/usr/bin/edgewatch").args(["validate", "--config", CONFIG]),
        SHORT,
    );
    assert!(out.contains(": ok ("), "{out}");
    ok(
        root_cmd("runuser").args([
            "-u",
            "edgewatch",
            "--",
            "/usr/bin/edgewatch",
            "validate",
            "--config",
            CONFIG,
        ]),
        SHORT,
    );
    if systemd_runs() {
        wait_active();
        assert!(Path::new(STATE_DIR).join("edgewatch.redb").is_file());
    } else {
        eprintln!("systemd is not running here: the service's start is not checked");
    }

    // An upgrade (the same binary as revision 99) keeps a changed config and the state.
    let upgrade = work_dir().join("edgewatch-upgrade.deb");
    ok(
        build_cmd("cargo")
            .args([
                "deb",
                "--locked",
                "--no-build",
                "--deb-revision",
                "99",
                "--output",
            ])
            .arg(&upgrade),
        Duration::from_secs(600),
    );
    let marker = format!("{STATE_DIR}/left-by-the-test");
    ok(
        root_cmd("sh").args([
            "-c",
            "printf '\\n# changed by tests/package.rs\\n' >> \"$0\" && touch \"$1\"",
            CONFIG,
            &marker,
        ]),
        SHORT,
    );
    dpkg_install(&upgrade);
    let version = run(
        Command::new("dpkg-query").args(["-W", "-f=${Version}", "edgewatch"]),
        SHORT,
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("{}-99", env!("CARGO_PKG_VERSION"))
    );
    let text = ok(root_cmd("cat").arg(CONFIG), SHORT);
    assert!(
        text.contains("# changed by tests/package.rs"),
        "the upgrade replaced the changed config"
    );
    assert!(Path::new(&marker).exists(), "the upgrade lost {marker}");
    let config = fs::metadata(CONFIG).unwrap();
    assert_eq!((config.gid(), config.mode() & 0o7777), (gid, 0o640));
    if systemd_runs() {
        wait_active();
    }

    // Purge: binary, unit, config and state go; the user stays.
    ok(
        root_cmd("dpkg")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["--purge", "edgewatch"]),
        Duration::from_secs(120),
    );
    assert!(!installed());
    for gone in [
        "/usr/bin/edgewatch",
        "/usr/lib/systemd/system/edgewatch.service",
        CONFIG,
        STATE_DIR,
        "/etc/systemd/system/multi-user.target.wants/edgewatch.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    let overrides = run(
        root_cmd("dpkg-statoverride").args(["--list", CONFIG]),
        SHORT,
    );
    assert!(
        !overrides.status.success(),
        "the statoverride of {CONFIG} is left"
    );
    assert!(
        getent("passwd", "edgewatch").is_some(),
        "the purge removed the user"
    );
}

/// The packaged config's commented examples (sources, rules, the HQ sink, the operator token)
/// are valid once uncommented: every `# key = ...`, `# [[table]]` and register line is taken
/// in, prose stays a comment, and the credential paths point at files that exist.
#[test]
fn the_packaged_configs_commented_examples_validate() {
    let text = fs::read_to_string(manifest_dir().join("packaging/edgewatch.toml")).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    for name in [
        "edgewatch.influx-token",
        "edgewatch.mqtt-password",
        "edgewatch.operator-token",
    ] {
        fs::write(secrets.path().join(name), "secret\n").unwrap();
    }
    let is_toml = |line: &str| {
        let line = line.trim_start();
        line.starts_with('[')
            || line.starts_with("{ ")
            || line.starts_with(']')
            || line
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    let mut uncommented = 0;
    let examples: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_toml(rest) => {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect::<String>()
        .replace(
            "/run/credentials/edgewatch.service/",
            &format!("{}/", secrets.path().display()),
        );
    assert!(
        uncommented > 30,
        "{uncommented} lines uncommented:\n{examples}"
    );
    let config = edgewatch::config::load_str(&examples).unwrap_or_else(|e| {
        panic!(
            "{}\n{examples}",
            e.0.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(
        config.sources.len(),
        3,
        "the example source and two Modbus ones"
    );
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.sinks.len(), 1);
    assert!(config.web.operator_token().unwrap().is_some());
}
