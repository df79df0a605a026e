//! The `edgewatch` binary: parse the command line, load and validate the config (exit 64 when
//! it is bad), set up logging and signals, then hand over to `app::run` (or, for `export`, to
//! `export::export`, for `simulate`, to `simulate::main`, for `probe`, to `probe`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use edgewatch::export::{self, ExportError, Format, What};
use edgewatch::forward::points::PointTags;
use edgewatch::model::{TimeNs, parse_time};
use edgewatch::{app, config, probe, simulate, telemetry};

/// With the feature `mimalloc`, mimalloc instead of glibc's malloc: fewer cycles per message at
/// full MQTT speed, about 9 MiB more RSS at gateway rates (figures in the README). Without it,
/// glibc's malloc with one arena and prompt trimming (`os::return_freed_memory_promptly`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration (EX_CONFIG would be 78; 64 is EX_USAGE, what installers'
/// scripts check for).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "edgewatch",
    version,
    about = "Edge gateway daemon: acquire, aggregate, detect, store, forward"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file: exit 0 when it is good, 64 with one line per problem when not.
    Validate {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write stored data to stdout, to carry it out by hand when the uplink is down. The
    /// daemon must not be running on the same store (or export a copy of the file).
    Export {
        /// Path of the TOML config file (for store.path and the gateway's tags).
        #[arg(long, short)]
        config: PathBuf,
        /// Only records at or after this time (RFC 3339): a rollup's window start, an event's
        /// raising.
        #[arg(long, value_parser = rfc3339)]
        from: Option<TimeNs>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        to: Option<TimeNs>,
        /// `lp`: InfluxDB line protocol, as the forwarder writes it. `csv`: a table.
        #[arg(long, value_enum, default_value_t = Format::Lp)]
        format: Format,
        /// `backlog` is every outbox entry still in the store.
        #[arg(long, value_enum, default_value_t = What::Rollups)]
        what: What,
    },
    /// Commissioning checks: read a Modbus device directly (`probe modbus ...`), or poll every
    /// unit of one configured Modbus source once (`probe --config PATH --source NAME`). Exit 0
    /// when every read succeeded, 1 when one failed, 64 for a bad config or usage.
    #[command(args_conflicts_with_subcommands = true)]
    Probe {
        /// Path of the TOML config file (with --source).
        #[arg(long, short, requires = "source")]
        config: Option<PathBuf>,
        /// Name of the Modbus source to poll once (with --config).
        #[arg(long, requires = "config")]
        source: Option<String>,
        #[command(subcommand)]
        target: Option<ProbeTarget>,
    },
    /// Replay recorded files (SKAB, NAB or CSV) through the configured rules and score the
    /// alarms against their labels: precision, recall, F1, false- and missed-alarm rates,
    /// events and detection delays. Exit 0, 1 for an unreadable file, 64 for bad rules.
    Backtest(edgewatch::backtest::BacktestArgs),
    /// Generate load for commissioning and benchmarks: publish reference sensor readings to an
    /// MQTT broker at a given rate.
    Simulate {
        #[command(subcommand)]
        target: simulate::Target,
    },
}

#[derive(Subcommand)]
enum ProbeTarget {
    /// Read registers or bits of one Modbus TCP or RTU device and print each value with its
    /// raw registers, or the exact error.
    Modbus(probe::ModbusArgs),
}

fn rfc3339(s: &str) -> Result<TimeNs, String> {
    parse_time(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2026-11-26T10:00:00Z"))
}

fn main() -> ExitCode {
    // TLS (HTTPS sinks) uses rustls with ring: no OpenSSL, cross-builds with a plain C
    // compiler. Installing fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate {
            target: simulate::Target::Mqtt(args),
        } => simulate::main(&args),
        Command::Probe {
            config,
            source,
            target,
        } => run_probe(config, source, target),
        Command::Validate { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} source(s), {} rule(s))",
                    config.display(),
                    c.sources.len(),
                    c.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for problem in &errors.0 {
                    eprintln!("{problem}");
                }
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Backtest(args) => {
            let config = match config::load_profile(&args.config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!(
                        "edgewatch: {} is not a valid config:",
                        args.config.display()
                    );
                    for problem in &errors.0 {
                        eprintln!("{problem}");
                    }
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            telemetry::init(&config::LogConfig {
                level: "warn".into(),
                ..config.log.clone()
            });
            edgewatch::backtest::main(&config, &args)
        }
        Command::Run { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(&config.log);
            run(config, path)
        }
        Command::Export {
            config,
            from,
            to,
            format,
            what,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let options = export::Options {
                what,
                format,
                from: from.unwrap_or(TimeNs::MIN),
                to: to.unwrap_or(TimeNs::MAX),
            };
            // A usage error, hence EX_USAGE like a bad config.
            if options.from >= options.to {
                eprintln!("edgewatch export: --from must be before --to");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            // Stdout carries the data: only warnings and errors (skipped records) go to
            // stderr unless RUST_LOG asks for more.
            telemetry::init(&config::LogConfig {
                level: "warn".into(),
                ..config.log.clone()
            });
            run_export(&config, &options)
        }
    }
}

/// Loads the config, or prints every problem and returns exit code 64.
fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("edgewatch: {} is not a valid config:", path.display());
        for problem in &errors.0 {
            eprintln!("{problem}");
        }
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

fn run_probe(
    config: Option<PathBuf>,
    source: Option<String>,
    target: Option<ProbeTarget>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgewatch probe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let verdict = match (target, config, source) {
        (Some(ProbeTarget::Modbus(args)), _, _) => {
            runtime.block_on(probe::probe_modbus(&args, &mut out))
        }
        (None, Some(path), Some(source)) => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime.block_on(probe::probe_source(&config, &source, &mut out))
        }
        _ => Err("give `probe modbus ...` or `probe --config PATH --source NAME`".into()),
    };
    match verdict {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(usage) => {
            eprintln!("edgewatch probe: {usage}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn run_export(config: &config::Config, options: &export::Options) -> ExitCode {
    let store = match export::open_store(&config.store) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("edgewatch export: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tags = PointTags {
        gateway: config.gateway.id.clone(),
        static_tags: config.gateway.tags.clone(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match export::export(&store, &tags, options, &mut out) {
        Ok(summary) => {
            eprintln!(
                "edgewatch export: {} record(s) from {}",
                summary.written,
                config.store.path.display()
            );
            match summary.first_refusal {
                None => ExitCode::SUCCESS,
                // An incomplete export must not pass for a complete one.
                Some(reason) => {
                    eprintln!(
                        "edgewatch export: {} record(s) left out, line protocol cannot carry them; first: {reason}",
                        summary.refused
                    );
                    ExitCode::FAILURE
                }
            }
        }
        // The reader went away (`edgewatch export | head`): not a failure of the export.
        Err(ExportError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgewatch export: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: config::Config, path: PathBuf) -> ExitCode {
    edgewatch::os::disable_transparent_huge_pages();
    edgewatch::os::return_freed_memory_promptly();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Duration::from_secs(config.shutdown.deadline_secs);
    runtime.block_on(async move {
        // Installed before anything starts: a SIGHUP from then on reloads instead of ending
        // the daemon (the default action).
        let Some(mut signals) = Signals::install() else {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let shutdown = CancellationToken::new();
        let mut running = match app::start(config, shutdown.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "edgewatch could not start");
                return ExitCode::FAILURE;
            }
        };
        edgewatch::liveness::notify_ready(&format!(
            "running; web on http://{}",
            running.web_addr
        ));
        tokio::spawn(edgewatch::liveness::watchdog(
            running.metrics.liveness.clone(),
            shutdown.clone(),
        ));
        let signal = loop {
            match signals.next().await {
                Signal::Reload => reload(&mut running, &path).await,
                Signal::Stop(name) => break name,
            }
        };
        edgewatch::liveness::notify_stopping();
        tracing::info!(signal, "shutting down: stopping sources, flushing windows, committing");
        shutdown.cancel();
        let mut done = std::pin::pin!(running.wait());
        loop {
            tokio::select! {
                result = &mut done => return exit_code(result),
                _ = tokio::time::sleep(deadline) => {
                    tracing::error!(deadline_secs = deadline.as_secs(), "shutdown deadline passed; exiting without a complete flush");
                    return ExitCode::FAILURE;
                }
                signal = signals.next() => match signal {
                    Signal::Stop(signal) => {
                        tracing::warn!(signal, "second signal: exiting at once");
                        return ExitCode::from(130);
                    }
                    Signal::Reload => tracing::warn!("SIGHUP during shutdown: ignored"),
                }
            }
        }
    })
}

/// SIGHUP: reads the config file again and applies it; a config that does not load is
/// refused with every problem in the log, and the one in effect keeps running.
async fn reload(running: &mut app::Running, path: &std::path::Path) {
    edgewatch::liveness::notify_reloading();
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    match config::load(path) {
        Err(errors) => {
            for problem in &errors.0 {
                tracing::error!(config = %path.display(), %problem, "config problem");
            }
            tracing::error!(
                config = %path.display(),
                problems = errors.0.len(),
                "config reload refused: the config in effect keeps running"
            );
            let reasons: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            running.refuse_reload(&reasons.join("; "));
        }
        Ok(new) => match running.reload(new).await {
            Ok(report) => {
                tracing::info!(changes = %report, "config reloaded");
                if !report.waiting_for_restart.is_empty() {
                    tracing::warn!(
                        sections = report.waiting_for_restart.join(", "),
                        "these config sections changed but are read only at start: restart to apply them"
                    );
                }
                if !report.sources.waiting_for_restart.is_empty() {
                    tracing::warn!(
                        sources = report.sources.waiting_for_restart.join(", "),
                        "http sources change only at a restart"
                    );
                }
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "config reload refused: the config in effect keeps running"
            ),
        },
    }
    edgewatch::liveness::notify_ready("running");
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            tracing::info!("edgewatch stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "edgewatch stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// What a signal asks for.
enum Signal {
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT, by name.
    Stop(&'static str),
}

/// The daemon's signal handlers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
