//! The daemon in this process (`app::start`) on a runtime of its own, for tests whose own
//! thread blocks (a browser session, blocking HTTP calls). Stopping is ordered and bounded;
//! dropping it cancels the daemon's shutdown token, also when a test panics.

use std::sync::Arc;
use std::time::Duration;

use edgewatch::app;
use edgewatch::config::Config;
use edgewatch::live::LiveSnapshot;
use tokio_util::sync::CancellationToken;

/// Upper bound of an ordered stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct InProcess {
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    running: Option<app::Running>,
    base: String,
}

impl InProcess {
    /// Starts the daemon with `config` (its web on a loopback port of the config's choice).
    pub fn start(config: Config) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let running = runtime
            .block_on(app::start(config, shutdown.clone()))
            .expect("the daemon starts");
        let base = format!("http://{}", running.web_addr);
        InProcess {
            runtime,
            shutdown,
            running: Some(running),
            base,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The pipeline's latest live snapshot.
    #[allow(dead_code)]
    pub fn snapshot(&self) -> Arc<LiveSnapshot> {
        self.running
            .as_ref()
            .expect("the daemon runs")
            .live
            .borrow()
            .clone()
    }

    /// Applies a new config to the running daemon (what SIGHUP does after loading the file).
    pub fn reload(&mut self, config: Config) -> anyhow::Result<app::ReloadReport> {
        let running = self.running.as_mut().expect("the daemon runs");
        self.runtime.block_on(running.reload(config))
    }

    /// The running daemon.
    pub fn running(&self) -> &app::Running {
        self.running.as_ref().expect("the daemon runs")
    }

    /// Stops the daemon in order: sources, pipeline flush, store commit, web (bounded).
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(STOP_TIMEOUT, running.wait()).await })
                .expect("the daemon stops within 15 s")
                .expect("the daemon stops cleanly");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
