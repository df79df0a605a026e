//! The `edgewatch` binary: parse the command line, load and validate the config (exit 64 when
//! it is bad), set up logging and signals, then hand over to `app::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use edgewatch::{app, config, telemetry};

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
}

fn main() -> ExitCode {
    // TLS (HTTPS sinks) uses rustls with ring: no OpenSSL, cross-builds with a plain C
    // compiler. Installing fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
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
        Command::Run { config } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("edgewatch: {} is not a valid config:", config.display());
                    for problem in &errors.0 {
                        eprintln!("{problem}");
                    }
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            telemetry::init(&config.log);
            run(config)
        }
    }
}

fn run(config: config::Config) -> ExitCode {
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
        let shutdown = CancellationToken::new();
        let running = match app::start(config, shutdown.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "edgewatch could not start");
                return ExitCode::FAILURE;
            }
        };
        let mut done = std::pin::pin!(running.wait());
        tokio::select! {
            result = &mut done => return exit_code(result),
            signal = first_signal() => tracing::info!(signal, "shutting down: stopping sources, flushing windows, committing"),
        }
        shutdown.cancel();
        tokio::select! {
            result = &mut done => exit_code(result),
            _ = tokio::time::sleep(deadline) => {
                tracing::error!(deadline_secs = deadline.as_secs(), "shutdown deadline passed; exiting without a complete flush");
                ExitCode::FAILURE
            }
            signal = first_signal() => {
                tracing::warn!(signal, "second signal: exiting at once");
                ExitCode::from(130)
            }
        }
    })
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

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn first_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop edgewatch with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
