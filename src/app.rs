//! Wiring: opens the store, builds the pipeline, starts the store writer, the pipeline task,
//! the sources and the web server, and stops them in order.
//!
//! Shutdown order (each step starts when the previous one has finished):
//! 1. `shutdown` is cancelled: sources stop and drop their senders;
//! 2. the pipeline sees its input close, flushes the open windows and sends the last output;
//! 3. the store writer commits everything pending and returns;
//! 4. the web server stops.
//!
//! `start` is what `main` and the integration tests call (tests on port 0 and a temp store).
//! [`Running::reload`] applies a new config to the running daemon (`reload.rs`); the sources
//! run one task each so that it can (`sources.rs`).

mod reload;
mod sources;

pub use reload::ReloadReport;
pub use sources::SourceChanges;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, HttpIngestConfig, MappingConfig, PayloadFormat, SourceKind};
use crate::forward::{self, status::SinkRegistry};
use crate::ingest::Decoder;
use crate::live::LiveSnapshot;
use crate::live::SourceHandle;
use crate::metrics::Metrics;
use crate::model::{Batch, now_ns};
use crate::pipeline::task::{Control, PipelineTask};
use crate::pipeline::{Pipeline, RuleSet, Settings};
use crate::store::{EventFilter, Store, WriteBatch, run_writer};
use crate::web::ingest::{IngestHandle, IngestSender, PIPELINE_WAIT};
use crate::web::{self, WebState};
use sources::Sources;

/// Capacity of the channel from the pipeline to the store writer, in pipeline outputs. When
/// full, the pipeline waits, and so, through its own channel, do the sources.
const STORE_CHANNEL_CAPACITY: usize = 4;

/// Worker threads of the web's own runtime. The web never runs on the workers of sources,
/// pipeline and store writer: a crowd of clients then competes with acquisition as one more
/// thread for the OS scheduler, instead of keeping acquisition's workers busy rendering pages
/// (measured with `examples/web_load.rs`: on one shared runtime, 50 clients without pause
/// delayed the sims' ticks by 1.8 s over 30 s).
const WEB_WORKER_THREADS: usize = 1;
/// Threads for the web's store reads at most; further reads wait for one. With the web's
/// threads at a lower priority ([`crate::os::WEB_NICENESS`]), a crowd of clients slows the
/// pages, not acquisition.
const WEB_BLOCKING_THREADS: usize = 2;

/// A running daemon.
pub struct Running {
    /// The address the web server listens on (the real port when configured with port 0).
    pub web_addr: SocketAddr,
    /// The store, for readers such as tests and tools.
    pub store: Store,
    /// The live view the pipeline publishes.
    pub live: watch::Receiver<Arc<LiveSnapshot>>,
    pub metrics: Arc<Metrics>,
    /// The config in effect: the loaded one, with what a reload changed and could apply.
    config: Config,
    sources: Sources,
    forwarding: Forwarding,
    /// Rule changes for the pipeline.
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
    pipeline: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// The web's thread, which runs its own runtime ([`WEB_WORKER_THREADS`]); it reports how
    /// the server ended.
    web: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
    web_stop: CancellationToken,
}

/// The sinks' tasks (forwarders, alert runners, the outbox trimmer), stopped and started as
/// one group: a reload that changes any sink restarts them all, each from its cursor in the
/// store.
struct Forwarding {
    registry: SinkRegistry,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Forwarding {
    fn start(
        config: &Config,
        store: &Store,
        metrics: &Arc<Metrics>,
        registry: SinkRegistry,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Forwarding> {
        let stop = shutdown.child_token();
        let tracker = TaskTracker::new();
        let started = forward::start(config, store, metrics, &registry, &stop, &tracker);
        tracker.close();
        if started.is_err() {
            stop.cancel();
        }
        started?;
        Ok(Forwarding {
            registry,
            stop,
            tracker,
        })
    }
}

/// Starts everything; returns once the web server listens. Cancel `shutdown` to stop, then
/// await [`Running::wait`].
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    // HTTPS sinks use rustls with ring (no OpenSSL). Fails only when already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Bind first: a port in use must fail the start before anything runs.
    let listen = config.web.listen_addr();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (web.listen)"))?;
    let web_addr = listener.local_addr()?;
    let store_config = config.store.clone();
    let (store, next_event_id, active, open_windows) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&store_config)?;
        let next = store.next_event_id()?;
        let active = store.events(&EventFilter {
            active: Some(true),
            ..EventFilter::default()
        })?;
        let open_windows = store.open_windows()?;
        anyhow::Ok((store, next, active, open_windows))
    })
    .await
    .context("store task panicked")?
    .with_context(|| format!("cannot open the store {}", config.store.path.display()))?;
    tracing::info!(
        path = %config.store.path.display(),
        next_event_id,
        active_events = active.len(),
        restored_windows = open_windows.len(),
        "store open"
    );

    let metrics = Arc::new(Metrics::new());
    let rules = RuleSet::compile(&config.rules).context("rules")?;
    let mut pipeline = Pipeline::new(
        Settings::from_config(&config),
        rules,
        next_event_id,
        active,
        now_ns(),
    );
    // Windows that were open when the previous run stopped without flushing (a crash).
    pipeline.restore_windows(open_windows);

    let (store_tx, store_rx) = mpsc::channel::<WriteBatch>(STORE_CHANNEL_CAPACITY);
    let writer = tokio::spawn(run_writer(
        store.clone(),
        store_rx,
        config.store.clone(),
        metrics.clone(),
    ));

    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(config.pipeline.channel_capacity);
    let (live_tx, live_rx) = watch::channel(Arc::new(LiveSnapshot::default()));
    let (control, control_rx) = mpsc::channel(1);
    let pipeline = tokio::spawn(
        PipelineTask {
            pipeline,
            input: batch_rx,
            control: control_rx,
            output: store_tx,
            live: live_tx,
            metrics: metrics.clone(),
            snapshot_interval: Duration::from_millis(config.pipeline.snapshot_interval_ms),
            dedup: Some(store.clone()),
        }
        .run(),
    );

    let forwarding = Forwarding::start(
        &config,
        &store,
        &metrics,
        SinkRegistry::default(),
        &shutdown,
    )?;

    let mut sources = Sources::new(batch_tx, metrics.clone(), shutdown.clone());
    let mut ingest: Option<IngestHandle> = None;
    for source in &config.sources {
        match &source.kind {
            SourceKind::Http(http) => {
                let health = sources.register_http(source);
                let mut handle = ingest_handle(&source.name, http, sources.batch_tx(), health)?;
                handle.tags = source.tags.clone();
                ingest = Some(handle);
            }
            _ => {
                let prepared = sources::prepare(source, &config.gateway.id)?;
                sources.start(source, prepared);
            }
        }
    }
    // The web's way in (`http` source) must close at shutdown for the pipeline's input to
    // end; the other sources drop their senders when they stop.
    if let Some((tx, health)) = ingest.as_ref().map(|i| (i.tx.clone(), i.health.clone())) {
        let shutdown = shutdown.clone();
        sources.tracker.spawn(async move {
            shutdown.cancelled().await;
            tx.close();
            health.update(|h| h.state = "stopped".into());
        });
    }

    let web_stop = CancellationToken::new();
    // The operator token is resolved once, here: the web sees only its value (or none: then
    // it is read-only), never where it came from.
    let mut web_config = config.web.clone();
    web_config.operator_token = config
        .web
        .operator_token()
        .map_err(|reason| anyhow::anyhow!("web.operator_token: {reason}"))?;
    web_config.operator_token_file = None;
    web_config.operator_token_env = None;
    let state = WebState {
        gateway_id: config.gateway.id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        started_at: now_ns(),
        live: live_rx.clone(),
        sources: sources.registry.clone(),
        sinks: forwarding.registry.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        window_secs: config.pipeline.window_secs,
        config: web_config,
        ingest,
    };
    let web = spawn_web(listener, state, web_stop.clone())?;
    tracing::info!(gateway = %config.gateway.id, "status page on http://{web_addr}/");

    metrics
        .config_last_reload_success_timestamp_seconds
        .set(now_ns() / crate::model::NS_PER_SEC);
    Ok(Running {
        web_addr,
        store,
        live: live_rx,
        metrics,
        config,
        sources,
        forwarding,
        control,
        shutdown,
        pipeline,
        writer,
        web,
        web_stop,
    })
}

/// Runs the web on a thread with a runtime of its own ([`WEB_WORKER_THREADS`] workers; its
/// store reads use that runtime's blocking pool). The listener moves over as a std socket,
/// since a tokio socket belongs to the runtime that registered it.
fn spawn_web(
    listener: tokio::net::TcpListener,
    state: WebState,
    stop: CancellationToken,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let listener = listener.into_std().context("web listener")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WEB_WORKER_THREADS)
        .max_blocking_threads(WEB_BLOCKING_THREADS)
        .thread_name("edgewatch-web")
        // Workers and blocking threads alike: page renders and their store reads yield
        // the CPU to acquisition whenever both want it.
        .on_thread_start(|| crate::os::lower_thread_priority(crate::os::WEB_NICENESS))
        .enable_all()
        .build()
        .context("cannot start the web's runtime")?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("edgewatch-web-main".into())
        .spawn(move || {
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                web::serve(listener, state, stop).await
            });
            // Connection tasks abandoned after the grace period end with the runtime, here.
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = done_tx.send(result);
        })
        .context("cannot start the web's thread")?;
    Ok(done_rx)
}

/// The `http` source: `POST /api/v1/ingest` on the web listener, feeding `batch_tx`.
fn ingest_handle(
    name: &str,
    http: &HttpIngestConfig,
    batch_tx: &mpsc::Sender<Batch>,
    health: SourceHandle,
) -> anyhow::Result<IngestHandle> {
    let decoder = Decoder::new(&http.mapping)
        .map_err(|e| anyhow::anyhow!("source {name}: {}: {}", e.key, e.reason))?;
    // `Content-Type: text/plain` bodies are line protocol, whatever the mapping's format.
    let line_protocol = Decoder::new(&MappingConfig {
        format: PayloadFormat::LineProtocol,
        ..http.mapping.clone()
    })
    .inspect_err(|e| {
        tracing::warn!(source = %name, key = e.key, reason = %e.reason, "text/plain (line protocol) bodies will be refused: the mapping does not suit them");
    })
    .ok();
    health.update(|h| h.state = "up".into());
    Ok(IngestHandle {
        source: name.into(),
        decoder,
        line_protocol,
        token: http.token.clone(),
        max_body_bytes: http.max_body_bytes,
        tx: IngestSender::new(batch_tx.clone()),
        health,
        pipeline_wait: PIPELINE_WAIT,
        tags: Default::default(),
    })
}

impl Running {
    /// Waits for the ordered shutdown to complete (after `shutdown` was cancelled).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        self.sources.close();
        self.sources.tracker.wait().await;
        self.pipeline.await.context("pipeline task panicked")?;
        self.writer.await.context("store writer panicked")?;
        self.forwarding.tracker.wait().await;
        self.web_stop.cancel();
        self.web
            .await
            .context("web thread panicked")?
            .context("web server")?;
        if !self.store.close(Duration::from_secs(2)).await {
            tracing::warn!("store still held by a task after shutdown");
        }
        Ok(())
    }
}

/// Runs until `shutdown` is cancelled and everything has stopped.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
