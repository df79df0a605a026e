//! The tasks of one MQTT source: `MqttSource::run` starts the polling task (`poll.rs`, the
//! only code that polls rumqttc's `EventLoop`) and three helpers that never touch it: the
//! acknowledging task, the reporter (messages per second, unacknowledged count) and the
//! shutdown watcher. See the module documentation of [`super`] for the acknowledgement path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, NetworkOptions, QoS, SubscribeFilter};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, trace, warn};

use super::acks::AckBook;
use super::bad::BadLog;
use super::batch::BatchBuilder;
use super::poll::{Meters, Poller, Stop, lock};
use super::route::Router;
use crate::ack::CommitTracker;
use crate::config::MqttSourceConfig;
use crate::ingest::tags::TagAnnouncer;
use crate::live::SourceHandle;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::model::Batch;
use crate::mqtt_client as connect;
use crate::source::backoff::Backoff;

/// Capacity of rumqttc's request channel (acknowledgements, subscriptions, the disconnect).
/// The acknowledging task waits when it is full; the polling task drains it.
const REQUEST_CAPACITY: usize = 1024;
/// After shutdown, how long the polling task may take to send DISCONNECT before it stops
/// polling anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// How soon the acknowledging task tries again when the request channel is full.
const ACK_RETRY: Duration = Duration::from_millis(10);

/// A prepared `type = "mqtt"` source: everything that can fail has been checked.
pub struct MqttSource {
    name: Arc<str>,
    options: MqttOptions,
    network: NetworkOptions,
    router: Router,
    filters: Vec<SubscribeFilter>,
    broker: String,
    backoff: Backoff,
    persistent: bool,
    tags: crate::model::Tags,
}

impl MqttSource {
    /// Builds the client options (TLS files are read here) and compiles the mappings. The
    /// client id defaults to `edgewatch-<gateway>-<name>`.
    /// `tags` are the source's static tags (`sources[].tags`).
    pub fn new(
        name: &str,
        config: &MqttSourceConfig,
        gateway: &str,
        tags: &crate::model::Tags,
    ) -> anyhow::Result<Self> {
        let conn = &config.connection;
        let client_id = conn.client_id_or(gateway, name);
        let mut options = connect::options(conn, &client_id, config.clean_session, true)?;
        let largest = config
            .subscriptions
            .iter()
            .map(|s| s.mapping.max_payload_bytes)
            .max()
            .unwrap_or(0);
        options.set_max_packet_size(
            connect::incoming_packet_limit(largest),
            connect::DEFAULT_MAX_PACKET_BYTES,
        );
        let filters = config
            .subscriptions
            .iter()
            .map(|s| {
                let qos = if s.qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                SubscribeFilter::new(s.filter.clone(), qos)
            })
            .collect();
        Ok(MqttSource {
            name: name.into(),
            options,
            network: connect::network_options(conn),
            router: Router::new(&config.subscriptions)?,
            filters,
            broker: connect::describe(conn),
            backoff: Backoff::new(
                Duration::from_millis(conn.reconnect_initial_ms),
                Duration::from_secs(conn.reconnect_max_secs),
            ),
            persistent: !config.clean_session,
            tags: tags.clone(),
        })
    }

    /// Runs until `shutdown` is cancelled or the pipeline is gone; health goes through
    /// `connecting`, `up`, `down` or `misconfigured`, and `stopped` at the end.
    pub async fn run(
        self,
        tx: mpsc::Sender<Batch>,
        health: SourceHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let client_id = self.options.client_id();
        let (client, mut eventloop) = AsyncClient::new(self.options, REQUEST_CAPACITY);
        eventloop.set_network_options(self.network);
        let book = Arc::new(Mutex::new(AckBook::default()));
        let tracker = CommitTracker::default();
        let wake = Arc::new(Notify::new());
        let force = CancellationToken::new();
        let meters = Meters::new(&metrics, &self.name);

        let subscriptions = self
            .filters
            .iter()
            .map(|f| format!("{} qos{}", f.path, f.qos as u8))
            .collect::<Vec<_>>()
            .join(", ");
        let session = if self.persistent {
            "persistent"
        } else {
            "clean"
        };
        health.update(|h| {
            h.state = "connecting".into();
            h.set_detail("broker", self.broker.clone());
            h.set_detail("client_id", client_id.clone());
            h.set_detail("subscriptions", subscriptions.clone());
            h.set_detail("session", session);
            h.set_detail("unacked", "0");
        });
        info!(
            source = %self.name,
            broker = %self.broker,
            client_id,
            subscriptions,
            session,
            "mqtt source started"
        );

        let helpers = [
            tokio::spawn(acknowledge(
                client.clone(),
                book.clone(),
                tracker.subscribe(),
                wake.clone(),
            )),
            tokio::spawn(report(
                health.clone(),
                meters.messages.clone(),
                meters.unacked.clone(),
                book.clone(),
            )),
            tokio::spawn(disconnect_on(
                shutdown.clone(),
                client.clone(),
                force.clone(),
            )),
        ];

        let mut poller = Poller {
            name: self.name,
            broker: self.broker,
            announcer: TagAnnouncer::new(&self.tags, self.router.captures_tags()),
            router: self.router,
            filters: self.filters,
            client,
            tx,
            book: book.clone(),
            tracker,
            batch: BatchBuilder::default(),
            health: health.clone(),
            meters,
            bad_log: BadLog::default(),
            backoff: self.backoff,
            persistent: self.persistent,
            connected: false,
            connections: 0,
            last_logged: None,
            wake,
            shutdown: shutdown.clone(),
            force,
        };
        let Err(stop) = poller.run(&mut eventloop).await;
        if stop == Stop::Shutdown {
            // Readings of messages read before the disconnect; the pipeline still runs.
            let _ = poller.flush().await;
        }
        for helper in helpers {
            helper.abort();
        }
        drop(eventloop);

        let unacked = lock(&book).waiting();
        poller.meters.connected.set(0);
        poller.meters.unacked.set(unacked as i64);
        let messages = poller.meters.messages.get();
        health.update(|h| {
            h.state = "stopped".into();
            h.messages = messages;
            h.messages_per_sec = 0.0;
            h.set_detail("unacked", unacked.to_string());
        });
        match stop {
            Stop::ReceiverGone if !shutdown.is_cancelled() => {
                warn!(source = %poller.name, "mqtt source stopped: the pipeline is gone")
            }
            _ => info!(
                source = %poller.name,
                unacked,
                "mqtt source stopped; the broker redelivers unacknowledged messages next time"
            ),
        }
    }
}

/// Acknowledges the messages of committed batches, in order, while connected. It sends
/// through rumqttc's request channel, which only the polling task drains, so it never waits on
/// a full channel for long: it tries, and retries shortly.
async fn acknowledge(
    client: AsyncClient,
    book: Arc<Mutex<AckBook>>,
    mut committed: watch::Receiver<u64>,
    wake: Arc<Notify>,
) {
    loop {
        let through = *committed.borrow_and_update();
        let run = lock(&book).acknowledge(through, |p| client.try_ack(p).is_ok());
        if run.sent > 0 {
            trace!(acked = run.sent, through, "acknowledged committed messages");
        }
        if run.blocked {
            tokio::time::sleep(ACK_RETRY).await;
            continue;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            () = wake.notified() => {}
        }
    }
}

/// Every second: messages per second and the unacknowledged count, into health and gauge.
async fn report(
    health: SourceHandle,
    messages: Counter,
    unacked: Gauge,
    book: Arc<Mutex<AckBook>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (tokio::time::Instant::now(), messages.get());
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let count = messages.get();
        let secs = now.duration_since(last.0).as_secs_f64();
        let rate = if secs > 0.0 {
            count.saturating_sub(last.1) as f64 / secs
        } else {
            0.0
        };
        last = (now, count);
        let waiting = lock(&book).waiting();
        unacked.set(waiting as i64);
        health.update(|h| {
            h.messages = count;
            h.messages_per_sec = rate;
            h.set_detail("unacked", waiting.to_string());
        });
    }
}

/// At shutdown: queues DISCONNECT (a clean disconnect keeps the persistent session and
/// publishes no will), then gives the polling task `DISCONNECT_GRACE` to send it.
async fn disconnect_on(shutdown: CancellationToken, client: AsyncClient, force: CancellationToken) {
    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + DISCONNECT_GRACE;
    let _ = tokio::time::timeout_at(deadline, client.disconnect()).await;
    tokio::time::sleep_until(deadline).await;
    force.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SourceKind, TlsConfig};
    use crate::live::{SourceHealth, SourceRegistry};
    use crate::metrics::SourceLabel;

    /// An mqtt source config for `port` with fast reconnects.
    fn config(port: u16) -> MqttSourceConfig {
        let text = format!(
            "[gateway]\nid = \"gw\"\n\n[[sources]]\nname = \"m\"\ntype = \"mqtt\"\n\
             host = \"127.0.0.1\"\nport = {port}\ntopics = [\"plant/#\"]\n\
             reconnect_initial_ms = 100\nreconnect_max_secs = 1\n"
        );
        let config = crate::config::load_str(&text).expect("mqtt config loads");
        match config.sources.into_iter().next().map(|s| s.kind) {
            Some(SourceKind::Mqtt(m)) => m,
            other => panic!("expected an mqtt source, got {other:?}"),
        }
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    async fn health_until(
        registry: &SourceRegistry,
        done: impl Fn(&SourceHealth) -> bool,
    ) -> SourceHealth {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let health = registry.snapshot().remove(0);
            if done(&health) {
                return health;
            }
            assert!(tokio::time::Instant::now() < deadline, "{health:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn an_unreadable_ca_file_fails_the_start_naming_it() {
        let mut config = config(1883);
        config.connection.tls = Some(TlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
            ..TlsConfig::default()
        });
        let error = MqttSource::new("m", &config, "gw", &Default::default())
            .err()
            .expect("refused");
        let text = format!("{error:#}");
        assert!(text.contains("tls.ca_file /nonexistent/ca.pem"), "{text}");
    }

    #[tokio::test]
    async fn a_dead_broker_is_retried_with_backoff_and_shutdown_stops_at_once() {
        let source =
            MqttSource::new("m", &config(closed_port()), "gw", &Default::default()).unwrap();
        let registry = SourceRegistry::default();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (tx, _rx) = mpsc::channel(4);
        let task = tokio::spawn(source.run(
            tx,
            registry.register("m", "mqtt"),
            metrics.clone(),
            shutdown.clone(),
        ));

        let down = health_until(&registry, |h| h.state == "down").await;
        assert!(down.last_error.is_some(), "{down:?}");
        assert_eq!(
            down.details.iter().find(|(k, _)| k == "client_id"),
            Some(&("client_id".to_string(), "edgewatch-gw-m".to_string()))
        );
        // Delays of 50-100 ms, then 100-200 ms, then 250-500 ms...: a handful of attempts in a
        // second, not thousands.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let errors = registry.snapshot()[0].errors;
        assert!(
            (2..=10).contains(&errors),
            "{errors} attempts in about a second"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops at once while disconnected")
            .unwrap();
        let stopped = registry.snapshot().remove(0);
        assert_eq!(stopped.state, "stopped");
        let label = SourceLabel { source: "m".into() };
        assert_eq!(metrics.mqtt_connected.get_or_create(&label).get(), 0);
        assert_eq!(metrics.mqtt_reconnects.get_or_create(&label).get(), 0);
        assert_eq!(
            metrics.source_errors.get_or_create(&label).get(),
            stopped.errors
        );
    }
}
