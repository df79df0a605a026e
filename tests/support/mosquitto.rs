//! A real MQTT broker (Mosquitto 2.0, Debian's 2.0.11) for the integration tests.
//!
//! [`Mosquitto::start`] runs one private broker in one of four [`Mode`]s: its own temp dir
//! holds the generated config, the password file or the throw-away certificates, the
//! persistence file and the broker's log; it listens on a free `127.0.0.1` port. Nothing is
//! shared, so any number of brokers run side by side, as the test harness runs tests in
//! parallel. [`Mosquitto::restart`] brings the same broker back on the same port with the same
//! persistence, for reconnect and outage tests.
//!
//! Invariants:
//! - **A started broker has logged `running` and its own process holds the listening socket**
//!   (checked through `/proc`), and the port accepts a connection; a test never talks to a
//!   stranger that had the port.
//! - **The process is ours until it is reaped**: it is signalled only while `Child::try_wait`
//!   still says it runs, so its pid cannot have been reused by then.
//! - **Persistent sessions and their queued QoS 1 messages survive [`Mosquitto::stop`] +
//!   [`Mosquitto::restart`]**: SIGTERM makes Mosquitto write its database, and the restart
//!   reads it from the same dir. After [`Mosquitto::kill`] (SIGKILL) only what the last
//!   autosave (every second) wrote survives, as after a power cut.
//! - **Dropping a `Mosquitto` stops the broker and deletes its dir**, also when a test panics.
//!   A test process killed with SIGKILL leaves the broker running; nothing here can prevent
//!   that without `unsafe` (`PR_SET_PDEATHSIG`).
//!
//! Every failure panics with the tail of the broker's log. The calls are blocking: from a
//! `#[tokio::test]` whose code under test runs on the same runtime, use a multi-threaded
//! runtime or `spawn_blocking`.
//!
//! Needs `mosquitto`, `mosquitto_passwd` (auth mode) and `openssl` (tls, mtls) on the `PATH`
//! (`scripts/test` installs them). Linux only (`/proc/net/tcp`, `/proc/PID/fd`), like the
//! gateways the daemon runs on.

use std::fmt::Display;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::{free_port, listens_on, log_since, note_in_log, open_log, signal};

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a start may take to log `running` and listen. Mosquitto needs a few milliseconds on
/// an idle machine; the margin covers a loaded CI machine running tests in parallel.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Starts tried with fresh ports when another process took one between our probe and
/// Mosquitto's bind.
const START_ATTEMPTS: u32 = 3;
/// Upper bound of the TCP connect of the readiness probe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Log lines quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;
/// The binary to run: `$MOSQUITTO` if set, else `mosquitto` from the `PATH` (Debian installs
/// it in `/usr/sbin`, which a non-root `PATH` may lack; that is tried as well).
const BINARY_ENV: &str = "MOSQUITTO";
/// Set to `all` to make the broker log every packet (`log_type all`), for debugging a test. The
/// default leaves out the debug lines: at 10,000 msg/s they would cost more than the broker.
const LOG_TYPE_ENV: &str = "EDGEWATCH_TEST_MOSQUITTO_LOG";

/// The user that auth mode creates.
pub const USER: &str = "edgewatch";
/// The password of [`USER`] in auth mode.
pub const PASSWORD: &str = "test-pass";
/// The common name of the client certificate in mtls mode; the broker uses it as the username
/// (`use_identity_as_username`).
pub const CLIENT_CN: &str = "edgewatch-test-client";

/// What a client must bring to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain MQTT, anonymous clients allowed.
    Plain,
    /// Plain MQTT; anonymous clients refused, [`USER`] / [`PASSWORD`] accepted.
    Auth,
    /// MQTT over TLS with a server certificate signed by a throw-away CA
    /// ([`Mosquitto::ca_file`]); anonymous clients allowed.
    Tls,
    /// As [`Mode::Tls`], and the client must present a certificate signed by the same CA
    /// ([`Mosquitto::client_cert`], [`Mosquitto::client_key`]).
    Mtls,
}

impl Mode {
    fn is_tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::Mtls)
    }
}

/// One running (or stopped, between [`Mosquitto::stop`] and [`Mosquitto::restart`]) broker.
pub struct Mosquitto {
    /// The broker process; `None` while stopped.
    child: Option<Child>,
    /// Port on 127.0.0.1; kept across `restart` so clients reconnect to the same address.
    port: u16,
    mode: Mode,
    /// Config, password file, certificates, persistence and `mosquitto.log`; deleted on drop.
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker in `mode` on a free port and waits until it is ready.
    pub fn start(mode: Mode) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-mosquitto-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        // Held in a handle before anything can fail, so that `Drop` cleans up.
        let mut broker = Mosquitto {
            child: None,
            port: 0,
            mode,
            dir,
        };
        match mode {
            Mode::Plain => {}
            Mode::Auth => broker.make_password_file(),
            Mode::Tls | Mode::Mtls => broker.make_certificates(),
        }
        broker.launch(None);
        broker
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`: clients should not use `localhost`, which may resolve to `::1` first.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The mode the broker was started in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The broker's temp dir (config, certificates, `mosquitto.db`, `mosquitto.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PEM file of the CA that signed the server (and client) certificates; tls and mtls
    /// modes only.
    pub fn ca_file(&self) -> PathBuf {
        assert!(
            self.mode.is_tls(),
            "ca_file: the broker runs in {:?} mode",
            self.mode
        );
        self.dir.path().join("ca.crt")
    }

    /// The PEM file of a client certificate the broker accepts (CN [`CLIENT_CN`]); mtls mode
    /// only.
    pub fn client_cert(&self) -> PathBuf {
        assert_eq!(self.mode, Mode::Mtls, "client_cert: mtls mode only");
        self.dir.path().join("client.crt")
    }

    /// The PKCS#8 PEM key of [`Mosquitto::client_cert`]; mtls mode only.
    pub fn client_key(&self) -> PathBuf {
        assert_eq!(self.mode, Mode::Mtls, "client_key: mtls mode only");
        self.dir.path().join("client.key")
    }

    /// rumqttc options for `client_id` with everything this broker's mode asks for: the
    /// credentials in auth mode, TLS trusting [`Mosquitto::ca_file`] in tls mode, and the client
    /// certificate too in mtls mode. Keep-alive 5 s; clean session (change it for persistent
    /// sessions).
    pub fn mqtt_options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host(), self.port);
        options.set_keep_alive(Duration::from_secs(5));
        match self.mode {
            Mode::Plain => {}
            Mode::Auth => {
                options.set_credentials(USER, PASSWORD);
            }
            Mode::Tls | Mode::Mtls => {
                let config = self.tls_client_config(self.mode == Mode::Mtls);
                options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
            }
        }
        options
    }

    /// A rustls client config (ring) trusting [`Mosquitto::ca_file`], presenting
    /// [`Mosquitto::client_cert`] when `client_cert` is set (mtls mode). Installs ring as the
    /// process's default provider if none is.
    pub fn tls_client_config(&self, client_cert: bool) -> rustls::ClientConfig {
        // Fails only when a provider is already installed (another test did it): fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_file()).expect("read ca.crt") {
            roots.add(cert.expect("parse ca.crt")).expect("add the CA");
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        if client_cert {
            let chain = CertificateDer::pem_file_iter(self.client_cert())
                .expect("read client.crt")
                .collect::<Result<Vec<_>, _>>()
                .expect("parse client.crt");
            let key = PrivateKeyDer::from_pem_file(self.client_key()).expect("read client.key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key match")
        } else {
            builder.with_no_client_auth()
        }
    }

    /// True while the broker process runs (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.child = None;
                self.note(&format!("mosquitto had exited: {status}"));
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Stops the broker gracefully: SIGTERM (and SIGCONT, in case a test froze it with
    /// SIGSTOP), which makes Mosquitto write its persistence file; waits up to 10 s for it to
    /// exit, then SIGKILL. Keeps the dir and the port number, so [`Mosquitto::restart`] brings
    /// the same broker back. A no-op when already stopped.
    pub fn stop(&mut self) {
        if !self.is_running() {
            self.child = None;
            return;
        }
        let mut child = self.child.take().expect("a running broker has a child");
        let started = Instant::now();
        signal(child.id(), "TERM");
        signal(child.id(), "CONT");
        while started.elapsed() < STOP_GRACE {
            if let Ok(Some(status)) = child.try_wait() {
                self.note(&format!(
                    "mosquitto stopped after SIGTERM in {} ms: {status}",
                    started.elapsed().as_millis()
                ));
                return;
            }
            sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let status = child
            .wait()
            .map_or_else(|error| error.to_string(), |status| status.to_string());
        self.note(&format!(
            "mosquitto ignored SIGTERM for {STOP_GRACE:?}; killed: {status}"
        ));
    }

    /// Kills the broker with SIGKILL, as a crash or a power cut would: what was not autosaved
    /// yet (at most about a second) is lost. Keeps the dir and the port for a restart. A no-op
    /// when already stopped.
    pub fn kill(&mut self) {
        if !self.is_running() {
            self.child = None;
            return;
        }
        let mut child = self.child.take().expect("a running broker has a child");
        let _ = child.kill();
        let status = child
            .wait()
            .map_or_else(|error| error.to_string(), |status| status.to_string());
        self.note(&format!("mosquitto killed with SIGKILL: {status}"));
    }

    /// Starts the broker again on the same port, with the same config and persistence (after
    /// [`Mosquitto::stop`] or [`Mosquitto::kill`], or stopping it first), and waits until it is
    /// ready. Panics if the port was taken in the meantime.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(Some(self.port));
    }

    /// The whole log: the broker's stdout and stderr over all its runs, and the harness's
    /// `=== harness:` lines between them.
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Writes `passwd` with [`USER`] / [`PASSWORD`], hashed by `mosquitto_passwd`.
    fn make_password_file(&self) {
        let path = self.dir.path().join("passwd");
        let binary = sibling_binary("mosquitto_passwd");
        self.run_tool(
            Command::new(&binary)
                .arg("-b")
                .arg("-c")
                .arg(&path)
                .args([USER, PASSWORD]),
            "mosquitto_passwd",
        );
    }

    /// Makes a throw-away EC P-256 CA (`ca.crt`), a server certificate for `127.0.0.1` and
    /// `localhost` (`server.crt`, `server.key`) and, in mtls mode, a client certificate
    /// (`client.crt`, `client.key`), all X.509 v3. The extensions matter: webpki (rustls)
    /// rejects v1 certificates (what `openssl x509 -req` makes without `-extfile`), a CA
    /// certificate used as an end-entity one, and a server certificate without a matching
    /// subjectAltName.
    fn make_certificates(&self) {
        let dir = self.dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        self.openssl(
            &[
                &["req", "-x509", "-new", "-nodes"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "30"],
                &["-subj", "/CN=edgewatch-test-ca"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        let mut leaves = vec![(
            "server",
            "/CN=127.0.0.1",
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )];
        let client_subject = format!("/CN={CLIENT_CN}");
        if self.mode == Mode::Mtls {
            leaves.push((
                "client",
                &client_subject,
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\n",
            ));
        }
        for (name, subject, extensions) in leaves {
            let (key, csr, ext, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.ext"),
                format!("{name}.crt"),
            );
            fs::write(dir.join(&ext), extensions).expect("write an openssl extension file");
            self.openssl(
                &[
                    &["req", "-new", "-nodes"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", subject],
                ]
                .concat(),
            );
            self.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                // Distinct serials: a client must not see two certificates with the same
                // issuer and serial.
                if name == "server" { "2" } else { "3" },
                "-out",
                &crt,
                "-days",
                "30",
                "-extfile",
                &ext,
            ]);
            let _ = fs::remove_file(dir.join(&csr));
            let _ = fs::remove_file(dir.join(&ext));
        }
    }

    /// Runs `openssl ARGS` in the temp dir; panics with its output if it fails.
    fn openssl(&self, args: &[&str]) {
        self.run_tool(
            Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path()),
            &format!("openssl {}", args.join(" ")),
        );
    }

    /// Runs a helper tool to completion; panics with its output if it fails.
    fn run_tool(&self, command: &mut Command, what: &str) {
        let output = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {what}: {error} (is it installed?)"));
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Writes the config, spawns Mosquitto and waits until it is ready, on `fixed_port` or on
    /// a fresh free port. Retries with new ports when Mosquitto could not bind.
    fn launch(&mut self, fixed_port: Option<u16>) {
        let binary = std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| sibling_binary("mosquitto"));
        for attempt in 1..=START_ATTEMPTS {
            let port = fixed_port.unwrap_or_else(free_port);
            self.port = port;
            let config = self.write_config(port);
            let offset = self.note(&format!("starting mosquitto on 127.0.0.1:{port}"));
            let log = self.open_log();
            let stderr = log.try_clone().expect("clone the log file handle");
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|error| {
                    self.fail(format!(
                        "cannot run {}: {error} (is mosquitto installed?)",
                        binary.display()
                    ))
                });
            self.child = Some(child);
            match self.wait_ready(offset) {
                Ok(()) => return,
                Err(why) => {
                    let tail = self.log_since(offset);
                    let bind_race = tail.contains("Address already in use");
                    // A broker still running but not ready must not linger.
                    self.kill();
                    if bind_race && fixed_port.is_none() && attempt < START_ATTEMPTS {
                        self.note("port taken by another process; retrying with another port");
                        continue;
                    }
                    self.fail(format!(
                        "mosquitto did not become ready on 127.0.0.1:{port} (attempt {attempt}): {why}"
                    ));
                }
            }
        }
        unreachable!("the last attempt returns or panics");
    }

    /// Polls until the log (from `offset`, this run's part) says `running`, our process listens
    /// on the port and the port accepts a connection; or the process exits, or
    /// [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self, offset: u64) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("wait_ready needs a child");
            if let Some(status) = child.try_wait().expect("poll the mosquitto process") {
                self.child = None;
                return Err(NotReady::Exited(status));
            }
            let pid = child.id();
            // `running` alone does not show the socket is ours: another process may hold the
            // port, and a connect alone could be answered by that other process.
            if self.log_since(offset).contains(" running")
                && listens_on(pid, self.port)
                && accepts(self.port)
            {
                self.note(&format!(
                    "mosquitto ready on 127.0.0.1:{} (pid {pid})",
                    self.port
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            sleep(POLL_INTERVAL);
        }
    }

    /// Writes `mosquitto.conf` for `port` into the temp dir and returns its path.
    fn write_config(&self, port: u16) -> PathBuf {
        let dir = self.dir.path();
        let path_text = |name: &str| {
            let path = dir.join(name);
            let text = path.to_str().expect("temp dir path is UTF-8").to_owned();
            // Mosquitto's config has no quoting: a value runs to the end of the line.
            assert!(
                !text.contains(['\n', '\r']) && !text.ends_with(' '),
                "temp dir path {text:?} cannot be written into mosquitto.conf"
            );
            text
        };
        let log_types = if std::env::var(LOG_TYPE_ENV).as_deref() == Ok("all") {
            "log_type all\n".to_owned()
        } else {
            ["error", "warning", "notice", "information", "subscribe"]
                .map(|t| format!("log_type {t}\n"))
                .concat()
        };
        let mut text = format!(
            "# Generated by edgewatch's test harness (tests/support/mosquitto.rs), {mode:?} mode.\n\
             listener {port} 127.0.0.1\n\
             # stdout is block-buffered when redirected to a file: readiness would never see\n\
             # the `running` line. stderr goes to mosquitto.log in this dir.\n\
             log_dest stderr\n\
             {log_types}\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
             # Persistent sessions and their queued QoS 1 messages survive stop + restart\n\
             # (written on SIGTERM) and, up to the last second, a kill (autosave every 1 s).\n\
             persistence true\n\
             persistence_location {persistence}/\n\
             autosave_interval 1\n\
             # Without it QoS 1 with a small in-flight window crawls (Nagle + delayed ACK).\n\
             set_tcp_nodelay true\n\
             # No limits (0 = unlimited) on QoS 1 messages in flight to a subscriber or queued\n\
             # for it. edgewatch acknowledges a QoS 1 message only after its store commit, so\n\
             # it holds many unacknowledged messages at once; with the defaults (20 in flight,\n\
             # 1000 queued) the broker would throttle it to its commit rhythm and silently drop\n\
             # what exceeds the queue while it is offline or behind, which the tests must not\n\
             # mistake for edgewatch losing data.\n\
             max_inflight_messages 0\n\
             max_queued_messages 0\n",
            mode = self.mode,
            persistence = path_text("").trim_end_matches('/'),
        );
        if running_as_root() {
            // As root, Mosquitto 2.0 switches to user `mosquitto`, which cannot read the
            // password file or the keys in this 0700 dir (exit 13, or "Unable to load CA
            // certificates ... Permission denied"): stay the current user. The "should not be
            // run as root" warning in the log is harmless.
            text.push_str(&format!("user {}\n", current_user_name()));
        }
        match self.mode {
            Mode::Plain => text.push_str("allow_anonymous true\n"),
            Mode::Auth => {
                text.push_str("allow_anonymous false\n");
                text.push_str(&format!("password_file {}\n", path_text("passwd")));
            }
            Mode::Tls | Mode::Mtls => {
                text.push_str("allow_anonymous true\n");
                text.push_str(&format!("cafile {}\n", path_text("ca.crt")));
                text.push_str(&format!("certfile {}\n", path_text("server.crt")));
                text.push_str(&format!("keyfile {}\n", path_text("server.key")));
                if self.mode == Mode::Mtls {
                    text.push_str("require_certificate true\n");
                    text.push_str("use_identity_as_username true\n");
                }
            }
        }
        let path = dir.join("mosquitto.conf");
        fs::write(&path, text).expect("write mosquitto.conf");
        path
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn open_log(&self) -> File {
        open_log(&self.log_path())
    }

    /// Appends a harness line to the log and returns the log's length after it.
    fn note(&self, line: &str) -> u64 {
        note_in_log(&self.log_path(), line)
    }

    /// The log from byte `offset` on.
    fn log_since(&self, offset: u64) -> String {
        log_since(&self.log_path(), offset)
    }

    /// Panics with `what` and the tail of the broker's log.
    fn fail(&self, what: impl Display) -> ! {
        panic!(
            "{what}\n--- last lines of {} ---\n{}\n---",
            self.log_path().display(),
            self.log_tail()
        )
    }
}

impl Drop for Mosquitto {
    /// Stops the broker; the `TempDir` field then deletes its dir.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a started broker did not become ready.
enum NotReady {
    /// The process exited (for example: the port was taken, a bad config, unreadable files).
    Exited(ExitStatus),
    /// Still running, but not ready in time.
    TimedOut,
}

impl Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "it exited ({status})"),
            NotReady::TimedOut => write!(f, "not ready within {READY_TIMEOUT:?}"),
        }
    }
}

/// `name` from the `PATH`, or from `/usr/sbin` (where Debian puts `mosquitto`) when the `PATH`
/// lacks it, as a non-root user's often does.
fn sibling_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    let sbin = Path::new("/usr/sbin").join(name);
    if !on_path && sbin.is_file() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

/// True if a TCP connection to 127.0.0.1:`port` is accepted.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), CONNECT_TIMEOUT).is_ok()
}

/// True when this process runs with uid 0 (from `/proc/self/status`, without `unsafe`).
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The name of the effective user (`id -un`).
fn current_user_name() -> String {
    let output = Command::new("id")
        .arg("-un")
        .stdin(Stdio::null())
        .output()
        .expect("run `id -un`");
    assert!(output.status.success(), "`id -un` failed: {output:?}");
    String::from_utf8(output.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_owned()
}
