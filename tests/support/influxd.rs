//! A real InfluxDB 1.x server (`influxd`, Debian's 1.6.7) for the integration tests.
//!
//! [`Influxd::start`] runs one private instance: its own temp dir holds the generated config,
//! the meta, data and WAL dirs and the server's log; the HTTP API listens on a free
//! `127.0.0.1` port and the RPC (backup) listener on a second one. Nothing is shared, so any
//! number of instances run side by side, as the test harness runs tests in parallel.
//!
//! Invariants:
//! - **A started instance answers `GET /ping` with 204 and its own process holds the listening
//!   socket** (checked through `/proc`), so a test never talks to a stranger that had the port.
//! - **The process is ours until it is reaped**: it is signalled only while `Child::try_wait`
//!   still says it runs, so its pid cannot have been reused by then.
//! - **Dropping an `Influxd` stops the server and deletes its dir**, also when a test panics.
//!   A test process killed with SIGKILL leaves the server running; nothing here can prevent
//!   that without `unsafe` (`PR_SET_PDEATHSIG`).
//!
//! Every failure panics with the tail of the server's log, which holds stdout, stderr and the
//! HTTP access log. The calls are blocking: from a `#[tokio::test]` whose code under test runs
//! on the same runtime, use a multi-threaded runtime or `spawn_blocking`.
//!
//! Linux only (`/proc/net/tcp`, `/proc/PID/fd`), like the gateways the daemon runs on.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::{free_port, listens_on, log_since, note_in_log, open_log, signal};

use serde_json::Value;
use ureq::typestate::{WithBody, WithoutBody};
use ureq::{Agent, RequestBuilder};

/// How long `/ping` may take to answer 204 after a start. influxd 1.6.7 needs about 0.1 s on
/// an idle machine; the margin covers a loaded CI machine running tests in parallel.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Starts tried with fresh ports when another process took one between our probe and
/// influxd's bind.
const START_ATTEMPTS: u32 = 3;
/// Upper bound of one request, large enough for a 25 MB write (influxd's `max-body-size`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of one readiness probe.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Log lines quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;
/// The binary to run: `$INFLUXD` if set, else `influxd` from the `PATH`.
const BINARY_ENV: &str = "INFLUXD";

/// One running (or stopped, between [`Influxd::stop`] and [`Influxd::restart`]) InfluxDB server.
pub struct Influxd {
    /// The server process; `None` while stopped.
    child: Option<Child>,
    /// HTTP port on 127.0.0.1; kept across `restart` so clients reconnect to the same URL.
    port: u16,
    /// Admin credentials sent as Basic auth on every request made through this handle; `None`
    /// for a server without auth.
    auth: Option<(String, String)>,
    /// HTTP client that returns 4xx/5xx answers instead of errors. Replaced on `restart`, so
    /// no request goes out on a pooled connection to the stopped process.
    agent: Agent,
    /// Config, meta/data/WAL dirs and `influxd.log`; deleted on drop.
    dir: tempfile::TempDir,
}

impl Influxd {
    /// Starts a server without authentication and waits until it is ready.
    pub fn start() -> Influxd {
        let mut server = Influxd::unstarted();
        server.launch(None, false);
        server
    }

    /// Starts a server with `auth-enabled = true`, creates the admin `user` with `pass`, and
    /// sends those credentials with every request made through this handle afterwards.
    pub fn start_with_auth(user: &str, pass: &str) -> Influxd {
        let mut server = Influxd::unstarted();
        server.launch(None, true);
        // With auth on and no user yet, InfluxDB 1.x accepts exactly one unauthenticated
        // statement: creating the first admin.
        let statement = format!(
            "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
            quote_ident(user),
            quote_string(pass)
        );
        server.run_statement(&statement);
        server.auth = Some((user.to_owned(), pass.to_owned()));
        server
    }

    /// The HTTP API's base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP API's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temp dir (config, data, `influxd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `CREATE DATABASE` (a no-op if it exists); panics unless the server accepts it.
    pub fn create_database(&self, db: &str) {
        self.run_statement(&format!("CREATE DATABASE {}", quote_ident(db)));
    }

    /// Runs a read query (`SELECT`, `SHOW`) with `GET /query?db=&q=&epoch=ns` and returns the
    /// JSON answer. Timestamps are integer nanoseconds. Panics on any HTTP status but 200 and
    /// on an `error` in any statement's result, with the server's log.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let response = self
            .get("/query")
            .query("db", db)
            .query("q", q)
            .query("epoch", "ns")
            .call();
        let (status, text) = self.read_response(response, &format!("query `{q}` on `{db}`"));
        self.expect_results(status, &text, &format!("query `{q}` on `{db}`"))
    }

    /// The single number a `SELECT COUNT(field) ...` answers, or 0 when there is no series
    /// (InfluxDB answers no series at all when nothing matches). Panics when the answer has
    /// several series, rows or count columns, as a `GROUP BY` or `COUNT(*)` over several
    /// fields gives: sum those with [`Influxd::query`] instead.
    pub fn count(&self, db: &str, q: &str) -> u64 {
        let answer = self.query(db, q);
        let results = answer["results"].as_array().map_or(&[][..], Vec::as_slice);
        if results.len() != 1 {
            self.fail(format!(
                "count `{q}`: expected one statement result, got {answer}"
            ));
        }
        let Some(series) = results[0].get("series") else {
            return 0;
        };
        let value = match series.as_array().map(Vec::as_slice) {
            Some([one]) => match one["values"].as_array().map(Vec::as_slice) {
                Some([row]) => match row.as_array().map(Vec::as_slice) {
                    Some([_time, count]) => count.as_u64(),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        value.unwrap_or_else(|| {
            self.fail(format!(
                "count `{q}`: expected one series with one row [time, count], got {answer}"
            ))
        })
    }

    /// Raw `POST /write?db=&precision=ns` of a line-protocol `body` (with auth if set); returns
    /// the HTTP status and the answer's body, whatever they are. For tests and benchmarks
    /// that need the server's exact answer; panics only if no answer arrives.
    pub fn write_lines(&self, db: &str, body: &str) -> (u16, String) {
        let response = self.write_request(db).send(body);
        self.read_response(response, &format!("write to `{db}`"))
    }

    /// A `POST /write?db=&precision=ns` request with auth if set, for bodies or headers that
    /// [`Influxd::write_lines`] does not cover (for example `Content-Encoding: gzip`).
    pub fn write_request(&self, db: &str) -> RequestBuilder<WithBody> {
        self.post("/write").query("db", db).query("precision", "ns")
    }

    /// A GET request to `path` on this server, with auth if set.
    pub fn get(&self, path: &str) -> RequestBuilder<WithoutBody> {
        self.authorize(self.agent.get(format!("{}{path}", self.url())))
    }

    /// A POST request to `path` on this server, with auth if set.
    pub fn post(&self, path: &str) -> RequestBuilder<WithBody> {
        self.authorize(self.agent.post(format!("{}{path}", self.url())))
    }

    /// The HTTP client this handle uses, without credentials: 4xx and 5xx answers come back as
    /// responses, not errors. For requests that must not carry the admin's credentials.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The last lines of the server's log (stdout, stderr, access log, harness notes).
    pub fn log_tail(&self) -> String {
        let path = self.log_path();
        let Ok(mut file) = File::open(&path) else {
            return format!("(no log at {})", path.display());
        };
        // Only the end matters, and a benchmark's access log can be long.
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Stops the server: SIGTERM (and SIGCONT, in case a test froze it with SIGSTOP), waits up
    /// to 10 s for it to exit, then SIGKILL. Keeps the data dir and the port number, so
    /// [`Influxd::restart`] can bring the same server back. A no-op when already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.note(&format!("influxd had already exited: {status}"));
            return;
        }
        let started = Instant::now();
        signal(child.id(), "TERM");
        signal(child.id(), "CONT");
        while started.elapsed() < STOP_GRACE {
            if let Ok(Some(status)) = child.try_wait() {
                self.note(&format!(
                    "influxd stopped after SIGTERM in {} ms: {status}",
                    started.elapsed().as_millis()
                ));
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child
            .wait()
            .map_or_else(|error| error.to_string(), |status| status.to_string());
        self.note(&format!(
            "influxd ignored SIGTERM for {STOP_GRACE:?}; killed: {status}"
        ));
    }

    /// Starts the server again on the same HTTP port and data dir (after [`Influxd::stop`],
    /// or stopping it first), and waits until it is ready. For outage tests: clients keep
    /// their URL and find the data written before the outage. Panics if the port was taken
    /// in the meantime.
    pub fn restart(&mut self) {
        self.stop();
        self.agent = new_agent();
        let auth_enabled = self.auth.is_some();
        self.launch(Some(self.port), auth_enabled);
    }

    /// A handle with its temp dir but no process yet. Holding it in a local before launching
    /// makes `Drop` clean up if the launch panics.
    fn unstarted() -> Influxd {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-influxd-")
            .tempdir()
            .expect("create a temp dir for influxd");
        Influxd {
            child: None,
            port: 0,
            auth: None,
            agent: new_agent(),
            dir,
        }
    }

    /// Writes the config, spawns influxd and waits until it is ready, on `fixed_port` or on
    /// a fresh free port. Retries with new ports when influxd could not bind.
    fn launch(&mut self, fixed_port: Option<u16>, auth_enabled: bool) {
        let binary = std::env::var_os(BINARY_ENV).unwrap_or_else(|| "influxd".into());
        for attempt in 1..=START_ATTEMPTS {
            let port = fixed_port.unwrap_or_else(free_port);
            let rpc_port = loop {
                let candidate = free_port();
                if candidate != port {
                    break candidate;
                }
            };
            let config = self.write_config(port, rpc_port, auth_enabled);
            let log_offset = self.note(&format!(
                "starting influxd (attempt {attempt}/{START_ATTEMPTS}): http 127.0.0.1:{port}, \
                 rpc 127.0.0.1:{rpc_port}, auth {auth_enabled}"
            ));
            let log = self.open_log();
            let started = Instant::now();
            let spawned = Command::new(&binary)
                .arg("run")
                .arg("-config")
                .arg(&config)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the influxd log handle"))
                .stderr(log)
                .spawn();
            let child = spawned.unwrap_or_else(|error| {
                panic!(
                    "cannot run `{}`: {error}. Install it with `apt-get install influxdb` \
                     (scripts/test does), or point ${BINARY_ENV} at the binary",
                    binary.to_string_lossy()
                )
            });
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => {
                    let ms = started.elapsed().as_millis();
                    self.note(&format!("influxd ready after {ms} ms"));
                    eprintln!("influxd ready on 127.0.0.1:{port} after {ms} ms");
                    return;
                }
                Err(NotReady::Exited(status)) => {
                    let log = self.log_since(log_offset);
                    let http_taken =
                        log.contains(&format!("127.0.0.1:{port}: bind: address already in use"));
                    let port_taken = log.contains("address already in use");
                    // A taken fixed port (on restart) stays taken: only new ports can help.
                    let retry = port_taken && !(http_taken && fixed_port.is_some());
                    if retry && attempt < START_ATTEMPTS {
                        continue;
                    }
                    self.fail(format!(
                        "influxd exited ({status}) before it was ready on 127.0.0.1:{port}{}",
                        if http_taken {
                            ": another process holds that port"
                        } else if port_taken {
                            ": another process took a port it needs"
                        } else {
                            ""
                        }
                    ));
                }
                Err(NotReady::TimedOut) => {
                    self.stop();
                    self.fail(format!(
                        "influxd did not answer GET /ping with 204 on 127.0.0.1:{port} \
                         within {READY_TIMEOUT:?}, or another process held that port"
                    ));
                }
            }
        }
        unreachable!("the last attempt returns or panics");
    }

    /// Polls until our process listens on the port and `/ping` answers 204, the process
    /// exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("wait_ready needs a child");
            if let Some(status) = child.try_wait().expect("poll the influxd process") {
                self.child = None;
                return Err(NotReady::Exited(status));
            }
            // `/ping` alone could be answered by another server that already had the port.
            if listens_on(child.id(), self.port) && self.ping() == Some(204) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            sleep(POLL_INTERVAL);
        }
    }

    /// The status of `GET /ping`, or `None` if no answer came.
    fn ping(&self) -> Option<u16> {
        self.agent
            .get(format!("{}/ping", self.url()))
            .config()
            .timeout_global(Some(PING_TIMEOUT))
            .build()
            .call()
            .ok()
            .map(|response| response.status().as_u16())
    }

    /// Runs a statement that changes the server (`CREATE ...`) with `POST /query`, as
    /// InfluxDB wants for those; panics unless it succeeds.
    pub fn run_statement(&self, statement: &str) {
        let response = self.post("/query").query("q", statement).send_empty();
        let (status, text) = self.read_response(response, &format!("`{statement}`"));
        self.expect_results(status, &text, &format!("`{statement}`"));
    }

    /// Parses a `/query` answer; panics on a status but 200 or an error in any result.
    fn expect_results(&self, status: u16, text: &str, what: &str) -> Value {
        if status != 200 {
            self.fail(format!("{what}: HTTP {status}: {text}"));
        }
        let answer: Value = serde_json::from_str(text)
            .unwrap_or_else(|error| self.fail(format!("{what}: invalid JSON ({error}): {text}")));
        let failed = answer["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|result| result.get("error").is_some());
        if failed || answer.get("error").is_some() {
            self.fail(format!("{what}: {answer}"));
        }
        answer
    }

    /// Status and body text of an answer; panics with the log if no answer came.
    fn read_response(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> (u16, String) {
        let mut response =
            response.unwrap_or_else(|error| self.fail(format!("{what}: no answer: {error}")));
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_else(|error| self.fail(format!("{what}: unreadable body: {error}")));
        (status, text)
    }

    fn authorize<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.auth {
            Some((user, pass)) => request.header("Authorization", basic_auth(user, pass)),
            None => request,
        }
    }

    /// Writes `influxdb.conf` for these ports into the temp dir and returns its path.
    fn write_config(&self, port: u16, rpc_port: u16, auth_enabled: bool) -> PathBuf {
        let dir = self.dir.path();
        let sub = |name: &str| toml_literal(&dir.join(name));
        let text = format!(
            "# Generated by edgewatch's test harness (tests/support/influxd.rs).\n\
             # Upstream 1.x reads reporting-disabled, Debian's build reporting-enabled; each\n\
             # ignores the other's key.\n\
             reporting-disabled = true\n\
             reporting-enabled = false\n\
             bind-address = \"127.0.0.1:{rpc_port}\"\n\
             \n\
             [meta]\n\
             \x20 dir = {meta}\n\
             \n\
             [data]\n\
             \x20 dir = {data}\n\
             \x20 wal-dir = {wal}\n\
             \x20 query-log-enabled = false\n\
             \n\
             [monitor]\n\
             \x20 store-enabled = false\n\
             \n\
             [http]\n\
             \x20 bind-address = \"127.0.0.1:{port}\"\n\
             \x20 auth-enabled = {auth_enabled}\n\
             \x20 log-enabled = true\n\
             \n\
             [logging]\n\
             \x20 suppress-logo = true\n",
            meta = sub("meta"),
            data = sub("data"),
            wal = sub("wal"),
        );
        let path = dir.join("influxdb.conf");
        fs::write(&path, text).expect("write influxdb.conf");
        path
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
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

    /// Panics with `what` and the tail of the server's log.
    fn fail(&self, what: impl Display) -> ! {
        panic!(
            "{what}\n--- last lines of {} ---\n{}\n---",
            self.log_path().display(),
            self.log_tail()
        )
    }
}

impl Drop for Influxd {
    /// Stops the server; the `TempDir` field then deletes its dir.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a started influxd did not become ready.
enum NotReady {
    /// The process exited (for example: a port was taken, a bad config).
    Exited(ExitStatus),
    /// Still running, but not ready in time.
    TimedOut,
}

/// An agent that hands back 4xx/5xx answers as responses and bounds every request.
fn new_agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// A TOML literal string holding `path` (no escapes are processed inside `'...'`).
fn toml_literal(path: &Path) -> String {
    let text = path.to_str().expect("temp dir path is UTF-8");
    assert!(
        !text.contains('\'') && !text.contains('\n'),
        "temp dir path {text:?} cannot be written as a TOML literal string"
    );
    format!("'{text}'")
}

/// An InfluxQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL string literal in single quotes.
fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The value of an `Authorization` header for HTTP Basic auth.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648), small enough not to need a crate.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
