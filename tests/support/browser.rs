//! Headless Chromium (Debian's `chromium`) for the page tests: a persistent browser session
//! driven over the DevTools protocol, and one-shot DOM dumps.
//!
//! - [`Browser::launch`] starts `chromium --headless --remote-debugging-pipe` and opens one
//!   tab. The protocol runs over two pipes that Chromium expects as fds 3 (commands in) and
//!   4 (answers and events out), each message a JSON object ended by a NUL byte; the child is
//!   started through `/bin/sh` to put our pipes on those fds (std cannot, without `unsafe`).
//!   No websocket, no extra crate. The session stays open while the daemon under test stops
//!   and starts, so a test can load a page, stop the daemon, wait, and read the DOM again.
//! - [`dump_dom`] runs `chromium --dump-dom` once with `--virtual-time-budget`: scripts and
//!   timers run for that much virtual time before the dump.
//! - Screenshots go to [`output_dir`] (`target/test-output/browser/NAME.png`), created here.
//!
//! Pitfalls this handles (found on Debian 12 with chromium 156):
//! - Debian's build resolves Google hosts despite `--disable-background-networking`;
//!   `--host-resolver-rules` makes every name but 127.0.0.1 unresolvable, so the browser
//!   sends no DNS query. Use `http://127.0.0.1:PORT/` URLs.
//! - Chromium exits 0 and prints an empty DOM when a page fails to load: check the content.
//! - `--virtual-time-budget=0` hangs forever: a zero budget leaves the flag out.
//! - `--no-sandbox` is needed as root; D-Bus errors without a system bus are noise
//!   (`--log-level=3`), as is the wrapper's "[: unexpected operator" from its /dev/shm check.
//!
//! Invariants: every wait is bounded ([`CALL_TIMEOUT`] per protocol call, the caller's limit
//! for [`Browser::wait_for`]); each browser has its own profile in a temp dir; dropping a
//! [`Browser`] closes it (then kills it if it lingers) and reaps the process.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The browser binary (Debian's wrapper script).
const CHROMIUM: &str = "chromium";
/// Upper bound of one protocol call, and of a navigation's load.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of a one-shot dump.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The window (and screenshot) size.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// The flags of every run: headless, no sandbox (root), nothing that talks to the network.
fn common_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--mute-audio",
        "--hide-scrollbars",
        "--log-level=3",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={WIDTH},{HEIGHT}"),
    ])
    .collect()
}

/// Panics with a hint when chromium is not installed (`scripts/test` installs it).
fn require_chromium() {
    let found = Command::new("/bin/sh")
        .args(["-c", "command -v \"$0\"", CHROMIUM])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{CHROMIUM}` is not installed: run scripts/test, or apt-get install chromium"
    );
}

/// Where the page tests put their screenshots: `target/test-output/browser/`.
pub fn output_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`; its parent is the target dir.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let dir = target.join("test-output").join("browser");
    std::fs::create_dir_all(&dir).expect("create target/test-output/browser");
    dir
}

/// The DOM of `url` after its scripts ran for `budget_ms` of virtual time (0: right after
/// the load event), from a one-shot `chromium --dump-dom`. Empty when the page did not load.
pub fn dump_dom(url: &str, budget_ms: u64) -> String {
    require_chromium();
    let dir = tempfile::tempdir().expect("temp dir for chromium");
    let mut command = Command::new(CHROMIUM);
    command.args(common_flags(&dir.path().join("profile")));
    if budget_ms > 0 {
        command.arg(format!("--virtual-time-budget={budget_ms}"));
    }
    let child = command
        .arg("--dump-dom")
        .arg(url)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium --dump-dom");
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(ONE_SHOT_TIMEOUT) {
        Ok(output) => {
            String::from_utf8_lossy(&output.expect("chromium output").stdout).into_owned()
        }
        Err(_) => {
            super::process::signal(pid, "KILL");
            panic!("chromium --dump-dom {url} took more than {ONE_SHOT_TIMEOUT:?}");
        }
    }
}

/// A headless Chromium with one tab, driven over the DevTools protocol.
pub struct Browser {
    child: Option<Child>,
    /// fd 3 of the browser: commands.
    commands: ChildStdin,
    /// Messages from fd 4, one JSON object each, read by a thread.
    messages: Receiver<Value>,
    /// Events received while waiting for an answer, oldest first.
    events: VecDeque<Value>,
    next_id: u64,
    /// The tab's session (flat mode: commands carry it as `sessionId`).
    session: String,
    /// Profile and log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser and opens a blank tab of [`WIDTH`]×[`HEIGHT`].
    pub fn launch() -> Browser {
        require_chromium();
        let dir = tempfile::tempdir().expect("temp dir for chromium");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("chromium log");
        // fd 3 ← our stdin pipe, fd 4 → our stdout pipe; 0 and 1 then point nowhere.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg(CHROMIUM)
            .args(common_flags(&dir.path().join("profile")))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start chromium --remote-debugging-pipe");
        let commands = child.stdin.take().expect("chromium's command pipe");
        let output = child.stdout.take().expect("chromium's answer pipe");
        let (tx, messages) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(message) = serde_json::from_slice::<Value>(&buf)
                            && tx.send(message).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child: Some(child),
            commands,
            messages,
            events: VecDeque::new(),
            next_id: 1,
            session: String::new(),
            dir,
        };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends a command to the browser itself (no session).
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// Sends a command to the tab and returns its `result`; panics on a protocol error or
    /// after [`CALL_TIMEOUT`].
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("a JSON command");
        bytes.push(0);
        if let Err(e) = self
            .commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
        {
            self.fail(format!("cannot send {method}: {e}"));
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self.next_message(deadline, method);
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    self.fail(format!("{method} failed: {error}"));
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => self.fail(format!(
                "no answer to {waiting_for} within {CALL_TIMEOUT:?}"
            )),
            Err(RecvTimeoutError::Disconnected) => self.fail(format!(
                "chromium closed its pipe while waiting for {waiting_for}"
            )),
        }
    }

    /// Waits for the tab's event `method` (events already received count), up to `limit`.
    fn wait_event(&mut self, method: &str, limit: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| {
            e["method"] == method && e["sessionId"].as_str() == Some(self.session.as_str())
        }) {
            return self.events.remove(i).expect("the event just found");
        }
        let deadline = Instant::now() + limit;
        loop {
            let message = self.next_message(deadline, method);
            if message["method"] == method
                && message["sessionId"].as_str() == Some(self.session.as_str())
            {
                return message;
            }
        }
    }

    /// Loads `url` and waits for its load event. Panics when the page failed to load (the
    /// browser shows its own error page then).
    pub fn goto(&mut self, url: &str) {
        self.events.clear();
        let result = self.call("Page.navigate", json!({"url": url}));
        if let Some(error) = result["errorText"].as_str() {
            self.fail(format!("{url} did not load: {error}"));
        }
        self.wait_event("Page.loadEventFired", CALL_TIMEOUT);
    }

    /// Evaluates `expression` in the tab (promises awaited) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            self.fail(format!("`{expression}` threw: {exception}"));
        }
        result["result"]["value"].clone()
    }

    /// The tab's DOM as HTML, as it is now (after scripts changed it).
    pub fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The visible text of the page (`innerText` of the body).
    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `condition` (a JavaScript expression) every 100 ms until it is true or `limit`
    /// passes; returns whether it became true.
    pub fn wait_for(&mut self, condition: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(&format!("!!({condition})")) == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Sets the value of the form field matched by `selector`.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; \
             e.value = {}; return true; }})()",
            json!(selector),
            json!(value)
        ));
        if found != Value::Bool(true) {
            self.fail(format!("no element {selector} to fill"));
        }
    }

    /// Submits the form matched by `selector` as a click on its submit button would, and
    /// waits for the page it leads to.
    pub fn submit(&mut self, selector: &str) {
        self.events.clear();
        let found = self.eval(&format!(
            "(() => {{ const f = document.querySelector({}); if (!f) return false; \
             f.requestSubmit(); return true; }})()",
            json!(selector)
        ));
        if found != Value::Bool(true) {
            self.fail(format!("no form {selector} to submit"));
        }
        self.wait_event("Page.loadEventFired", CALL_TIMEOUT);
    }

    /// A PNG of the whole page in [`output_dir`] as `NAME.png`; returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64_decode(data).expect("screenshot data is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = output_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// The browser's own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("unexpected operator"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn fail(&self, what: String) -> ! {
        panic!("{what}\n--- chromium log ---\n{}\n---", self.log())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut close = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"}))
            .expect("a JSON command");
        close.push(0);
        let _ = self.commands.write_all(&close);
        let _ = self.commands.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Standard base64 (with padding) to bytes: what `Page.captureScreenshot` returns.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= digit(c)? << (18 - 6 * i);
        }
        let len = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..=len]);
    }
    Some(out)
}
