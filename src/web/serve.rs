//! The web's accept loop and connections: hyper's HTTP/1.1 server driven by hand, because
//! `axum::serve` exposes neither a connection limit nor hyper's header-read timeout.
//!
//! Invariants:
//! - **At most `max_connections` connections are open.** A slot (a semaphore permit) is taken
//!   *before* `accept`, so beyond the limit new clients wait in the kernel's accept queue and
//!   cost the daemon nothing until a connection closes; each wait is counted in
//!   `edgewatch_web_connection_limit_waits_total`.
//! - **A connection that does not deliver a request's headers within
//!   `header_read_timeout_secs` is closed**, counted from the connection's start or the end
//!   of the previous answer: a slow or stalled client (slowloris) and an idle kept-alive
//!   connection hold their slot at most that long. A request's body and its handling are
//!   bounded by the request timeout of the router (`harden`).
//! - **Shutdown**: accepting stops at once; each connection finishes the request in flight
//!   and closes (hyper's graceful shutdown); the serve future returns when every connection
//!   task has ended, or after `request_timeout_secs` + 1 s with the rest abandoned.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WebConfig;
use crate::metrics::Metrics;

/// After an `accept` error (out of file descriptors, mostly), wait this long before the next
/// one instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` under the connection limits of `config` until `shutdown` is
/// cancelled.
pub(super) async fn serve_router(
    listener: TcpListener,
    app: Router,
    config: &WebConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let header_timeout = Duration::from_secs(config.header_read_timeout_secs.max(1));
    let connections = TaskTracker::new();
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.web_connection_limit_waits.inc();
                tokio::select! {
                    permit = slots.clone().acquire_owned() => {
                        permit.expect("the connection semaphore is never closed")
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "web accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        metrics.web_connections.inc();
        metrics.web_connections_open.inc();
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "web connection ended with an error");
            }
            metrics.web_connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    let grace = Duration::from_secs(config.request_timeout_secs.max(1) + 1);
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "web connections still open after the shutdown grace period"
        );
    }
    Ok(())
}
