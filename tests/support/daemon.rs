//! The daemon as a real process, and a slow HTTP relay to put between it and InfluxDB, for the
//! fault tests (`tests/forward_faults.rs`).
//!
//! - [`Daemon`] runs `edgewatch run --config FILE` (the binary Cargo built for this test), its
//!   stderr appended to a log file, and stops it with SIGKILL or SIGTERM. Dropping it kills a
//!   daemon that still runs, also when a test panics.
//! - [`SlowRelay`] forwards every HTTP request to an upstream (the test's influxd) after a
//!   delay and holds the answer for the same delay again, and counts the requests it holds,
//!   so a test can tell whether a write was in flight at a given moment, and on which side of
//!   InfluxDB.
//!
//! Invariants:
//! - **A `Daemon`'s process is signalled only while `Child::try_wait` says it still runs**, so
//!   its pid cannot have been reused by then (the same rule as the influxd harness).
//! - **Only loopback addresses** are listened on and connected to.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Log lines quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;
/// Upper bound of one request to the daemon's web server.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET url` as JSON, or `None` when no answer (or no JSON) came: the daemon may still be
/// starting.
pub fn get_json(url: &str) -> Option<Value> {
    get_text(url).and_then(|text| serde_json::from_str(&text).ok())
}

/// `GET url` as text, or `None` when no 200 answer came.
pub fn get_text(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    response.body_mut().read_to_string().ok()
}

/// The value of the sample `name` (with its labels exactly as exposed, e.g.
/// `edgewatch_sink_dropped_points_total{sink="hq"}`) in a Prometheus text exposition.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// One run of the `edgewatch` binary.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `edgewatch run --config config`, appending its stderr (the log) to `log`.
    pub fn spawn(config: &Path, log: &Path) -> Daemon {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the daemon's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the edgewatch binary");
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The exit status if the process has ended (and is reaped), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("poll the edgewatch process")
    }

    /// SIGKILL (what `Child::kill` sends), then reaps the process, so that its store file
    /// lock is released when this returns.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon was already stopped");
        if let Some(status) = child.try_wait().expect("poll the edgewatch process") {
            self.fail(format!("edgewatch had exited on its own ({status})"));
        }
        child.kill().expect("SIGKILL edgewatch");
        child.wait().expect("reap edgewatch")
    }

    /// SIGTERM, then waits up to `within` for the exit and returns its status; panics (after
    /// a SIGKILL) when the daemon takes longer.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon was already stopped");
        if let Some(status) = child.try_wait().expect("poll the edgewatch process") {
            self.fail(format!("edgewatch had exited on its own ({status})"));
        }
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("poll the edgewatch process") {
                return status;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(format!(
                    "edgewatch did not exit within {within:?} of SIGTERM"
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends `SIG<name>` (e.g. `HUP`) to the running daemon; fails the test when it has
    /// already exited.
    pub fn signal(&mut self, name: &str) {
        let child = self.child.as_mut().expect("the daemon was already stopped");
        if let Some(status) = child.try_wait().expect("poll the edgewatch process") {
            self.fail(format!("edgewatch had exited on its own ({status})"));
        }
        super::process::signal(child.id(), name);
    }

    /// The last lines of the log file (all runs that share it).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Panics with `what` and the tail of the log.
    pub fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "{what}\n--- last lines of {} ---\n{}\n---",
            self.log.display(),
            self.log_tail()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Requests a [`SlowRelay`] holds right now, by where they wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Received from the client, not yet passed to the upstream: the upstream has not seen it.
    pub before_upstream: u64,
    /// Answered by the upstream (it stored the points), the answer not yet passed back.
    pub after_upstream: u64,
}

impl InFlight {
    pub fn any(&self) -> bool {
        self.before_upstream + self.after_upstream > 0
    }
}

/// What the relay shares between its handlers and the test.
struct RelayState {
    upstream: String,
    client: reqwest::Client,
    /// The delay on each side of the upstream, in milliseconds.
    delay_ms: AtomicU64,
    before: AtomicU64,
    after: AtomicU64,
    requests: AtomicU64,
}

/// Counts a request in one of the gauges while it is alive (also when the handler is
/// dropped because the client went away).
struct Holding<'a>(&'a AtomicU64);

impl<'a> Holding<'a> {
    fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Holding(gauge)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP relay on 127.0.0.1 in front of `upstream` that holds each request for `delay`
/// before passing it on and holds the answer for `delay` again: a slow link to InfluxDB, so
/// that writes spend most of their time in flight. Runs on its own runtime thread; dropping
/// it stops it.
pub struct SlowRelay {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    state: Arc<RelayState>,
}

impl SlowRelay {
    pub fn start(upstream: &str, delay: Duration) -> SlowRelay {
        // reqwest is built with rustls but no crypto provider; plain HTTP needs none, but the
        // client builder wants one installed. Fails only when one already is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start the relay's runtime");
        let state = Arc::new(RelayState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("build the relay's HTTP client"),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            before: AtomicU64::new(0),
            after: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay address");
        let app = axum::Router::new()
            .fallback(relay)
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        SlowRelay {
            runtime: Some(runtime),
            addr,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`, for the sink's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> InFlight {
        InFlight {
            before_upstream: self.state.before.load(Ordering::SeqCst),
            after_upstream: self.state.after.load(Ordering::SeqCst),
        }
    }

    /// Requests received since the start.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Passes one request on, slowly. Answers 502 when the upstream does not answer, as a proxy
/// would.
async fn relay(
    axum::extract::State(state): axum::extract::State<Arc<RelayState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    state.requests.fetch_add(1, Ordering::SeqCst);
    let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
    let holding = Holding::enter(&state.before);
    tokio::time::sleep(delay).await;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("HTTP method");
    let mut request = state
        .client
        .request(method, format!("{}{path}", state.upstream));
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request.body(body).send().await;
    drop(holding);
    let _holding = Holding::enter(&state.after);
    let (status, content_type, text) = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain")
                .to_string();
            let text = response.bytes().await.unwrap_or_default();
            (status, content_type, text)
        }
        Err(error) => (
            502,
            "text/plain".to_string(),
            axum::body::Bytes::from(format!("relay: upstream failed: {error}")),
        ),
    };
    tokio::time::sleep(delay).await;
    let status = axum::http::StatusCode::from_u16(status).expect("upstream status");
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        text,
    )
        .into_response()
}
