//! The tasks of one MQTT source: the polling task that owns rumqttc's `EventLoop`, and three
//! helpers that never touch it: the acknowledging task, the reporter (messages per second,
//! unacknowledged count) and the shutdown watcher. See the module documentation of
//! [`super`] for the acknowledgement path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, Publish, QoS, SubAck, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};

use super::acks::AckBook;
use super::bad::{self, BadLog};
use super::batch::BatchBuilder;
use super::route::Router;
use crate::ack::CommitTracker;
use crate::config::MqttSourceConfig;
use crate::ingest::tags::TagAnnouncer;
use crate::ingest::{BadPayload, BadReason};
use crate::live::SourceHandle;
use crate::metrics::{Counter, Gauge, Metrics, SourceLabel, SourceReasonLabel};
use crate::model::{Batch, NS_PER_SEC, Quality, TimeNs, now_ns};
use crate::mqtt_client as connect;
use crate::source::backoff::{Backoff, jitter};

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

/// Why the polling task ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Shutdown,
    /// The pipeline dropped its receiver.
    ReceiverGone,
}

/// The metrics of one source, looked up once.
struct Meters {
    messages: Counter,
    readings: Counter,
    errors: Counter,
    latency: prometheus::Histogram,
    connected: Gauge,
    reconnects: Counter,
    unacked: Gauge,
    bad: BTreeMap<BadReason, Counter>,
}

impl Meters {
    fn new(metrics: &Metrics, name: &str) -> Self {
        let source = SourceLabel {
            source: name.to_string(),
        };
        // Every reason exists from the start at 0, so that rate() sees the first refusal.
        let bad = BadReason::ALL
            .iter()
            .map(|&reason| {
                let label = SourceReasonLabel {
                    source: name.to_string(),
                    reason: reason.as_str().to_string(),
                };
                (reason, metrics.source_bad_payloads.get_or_create(&label))
            })
            .collect();
        Meters {
            messages: metrics.source_messages.get_or_create(&source),
            readings: metrics.source_readings.get_or_create(&source),
            errors: metrics.source_errors.get_or_create(&source),
            latency: metrics.ingest_latency_seconds.get_or_create(&source),
            connected: metrics.mqtt_connected.get_or_create(&source),
            reconnects: metrics.mqtt_reconnects.get_or_create(&source),
            unacked: metrics.mqtt_unacked_messages.get_or_create(&source),
            bad,
        }
    }
}

fn lock(book: &Mutex<AckBook>) -> MutexGuard<'_, AckBook> {
    book.lock().expect("ack book poisoned")
}

/// The polling task's state. It owns the `EventLoop` and is the only code that polls it.
struct Poller {
    name: Arc<str>,
    broker: String,
    router: Router,
    announcer: TagAnnouncer,
    filters: Vec<SubscribeFilter>,
    client: AsyncClient,
    tx: mpsc::Sender<Batch>,
    book: Arc<Mutex<AckBook>>,
    tracker: CommitTracker,
    batch: BatchBuilder,
    health: SourceHandle,
    meters: Meters,
    bad_log: BadLog,
    backoff: Backoff,
    persistent: bool,
    /// Between a ConnAck and the next error.
    connected: bool,
    /// ConnAcks received.
    connections: u64,
    /// The (state, error) last logged at WARN or ERROR; a repeat goes to DEBUG.
    last_logged: Option<(&'static str, String)>,
    /// Tells the acknowledging task that it may send again.
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    /// Cancelled `DISCONNECT_GRACE` after `shutdown`.
    force: CancellationToken,
}

impl Poller {
    /// Polls until told to stop.
    ///
    /// `poll()` is never cancelled while connected: its cancel-safety is not documented, and
    /// it holds half-processed packets then. Shutdown reaches it as the DISCONNECT request
    /// that [`disconnect_on`] queues (`Outgoing::Disconnect` ends the loop), and only if that
    /// takes longer than `DISCONNECT_GRACE` is the poll cancelled, after which the event loop
    /// is dropped, never polled again. While not connected, `poll()` is only connecting: it
    /// keeps nothing but the socket it is opening, so shutdown cancels it at once.
    async fn run(&mut self, eventloop: &mut EventLoop) -> Result<Infallible, Stop> {
        loop {
            let stop = if self.connected {
                &self.force
            } else {
                &self.shutdown
            };
            let polled = tokio::select! {
                biased;
                () = stop.cancelled() => return Err(Stop::Shutdown),
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::Publish(publish))) => self.publish(publish).await?,
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.connack(&ack),
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.suback(&ack),
                // Only `disconnect_on` asks for a disconnect, at shutdown.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Err(Stop::Shutdown),
                Ok(_) => {}
                Err(error) => {
                    self.failed(error, eventloop).await?;
                    continue;
                }
            }
            // Batch while rumqttc holds more packets already read from the socket; send as
            // soon as it holds none, so an idle source adds no latency. (rumqttc reads at most
            // 10 packets at a time, which bounds a batch under load to about 10 messages
            // unless they carry many readings each.)
            if self.batch.is_full() || eventloop.state.events.is_empty() {
                self.flush().await?;
            }
        }
    }

    fn connack(&mut self, ack: &ConnAck) {
        self.connected = true;
        self.connections += 1;
        if self.connections > 1 {
            self.meters.reconnects.inc();
        }
        self.backoff.reset();
        self.last_logged = None;
        let dropped = {
            let mut book = lock(&self.book);
            let dropped = if ack.session_present {
                0
            } else {
                book.new_session()
            };
            book.set_connected(true);
            dropped
        };
        self.wake.notify_one();
        if dropped > 0 {
            debug!(
                source = %self.name,
                dropped,
                "new session: acknowledgements owed to the old one are dropped (the broker \
                 forgot those messages and reuses their packet ids)"
            );
        }
        self.subscribe();
        self.meters.connected.set(1);
        let session = match (self.persistent, ack.session_present) {
            (false, _) => "clean",
            (true, true) => "persistent, present",
            (true, false) => "persistent, new",
        };
        self.health.update(|h| {
            h.state = "up".into();
            h.set_detail("session", session);
        });
        if self.persistent && !ack.session_present && self.connections > 1 {
            warn!(
                source = %self.name,
                broker = %self.broker,
                "the broker kept no session for the gateway: QoS 1 messages published while \
                 it was away are lost (broker restarted without persistence?)"
            );
        }
        info!(
            source = %self.name,
            broker = %self.broker,
            session_present = ack.session_present,
            "connected to the MQTT broker"
        );
    }

    /// Subscribes to every filter, on every connection: rumqttc does not restore
    /// subscriptions, and a new session has none. Never `subscribe().await` here: this task
    /// drains the channel that call waits on.
    fn subscribe(&self) {
        if self
            .client
            .try_subscribe_many(self.filters.clone())
            .is_err()
        {
            // The request channel is full of acknowledgements: a helper waits for room.
            let client = self.client.clone();
            let filters = self.filters.clone();
            tokio::spawn(async move {
                let _ = client.subscribe_many(filters).await;
            });
        }
    }

    fn suback(&mut self, ack: &SubAck) {
        for (filter, code) in self.filters.iter().zip(&ack.return_codes) {
            match code {
                SubscribeReasonCode::Failure => {
                    let text = format!("the broker refused the subscription {}", filter.path);
                    error!(
                        source = %self.name,
                        filter = %filter.path,
                        "the broker refused the subscription (not allowed by its ACL?); no \
                         message of it will arrive"
                    );
                    self.meters.errors.inc();
                    self.health.update(|h| {
                        h.errors += 1;
                        h.last_error = Some(text);
                    });
                }
                SubscribeReasonCode::Success(granted) if (*granted as u8) < (filter.qos as u8) => {
                    warn!(
                        source = %self.name,
                        filter = %filter.path,
                        granted = *granted as u8,
                        "the broker granted a lower QoS: messages of this filter can be lost"
                    );
                }
                SubscribeReasonCode::Success(_) => {}
            }
        }
    }

    /// One received message: skipped when it is a copy of a message still waiting for its
    /// commit, otherwise decoded into the current batch and kept for acknowledgement (QoS 1),
    /// readings or not.
    async fn publish(&mut self, publish: Publish) -> Result<(), Stop> {
        let arrival = now_ns();
        self.meters.messages.inc();
        if publish.dup && lock(&self.book).holds(&publish) {
            debug!(
                source = %self.name,
                pkid = publish.pkid,
                topic = %publish.topic,
                "redelivered message still waiting for its commit: not forwarded again"
            );
            return Ok(());
        }
        // A retained message may have been received on an earlier subscription: the pipeline
        // checks it against the store like a redelivery.
        let maybe_seen = publish.dup || publish.retain;
        if !self.batch.fits(maybe_seen) {
            self.flush().await?;
        }
        self.batch.begin(maybe_seen);
        let start = self.batch.readings.len();
        let decoded = match self.router.route(&publish.topic) {
            Some(route) => route
                .decoder
                .decode(
                    &publish.topic,
                    &publish.payload,
                    arrival,
                    &mut self.batch.readings,
                )
                .inspect(|_| {
                    self.announcer.announce(
                        &self.batch.readings[start..],
                        || route.decoder.topic_tags(&publish.topic),
                        &mut self.batch.tags,
                    )
                }),
            None => Err(BadPayload {
                reason: BadReason::TopicMismatch,
                detail: "no subscription of this source matches the topic (one left in the \
                         persistent session by an earlier configuration? connect once with \
                         clean_session = true to drop it)"
                    .into(),
            }),
        };
        match decoded {
            Ok(_) => {
                if let Some(first) = self.batch.readings.get(start)
                    && !first.quality.contains(Quality::TIME_FROM_ARRIVAL)
                {
                    let ns = arrival.saturating_sub(first.time).max(0);
                    self.meters.latency.observe(ns as f64 / NS_PER_SEC as f64);
                }
            }
            Err(bad) => self.refused(&publish.topic, bad, arrival),
        }
        let ack = (publish.qos != QoS::AtMostOnce).then_some(publish);
        self.batch.add(ack);
        Ok(())
    }

    fn refused(&mut self, topic: &str, bad: BadPayload, arrival: TimeNs) {
        let reason = bad.reason.as_str();
        if let Some(counter) = self.meters.bad.get(&bad.reason) {
            counter.inc();
        }
        let example = bad::example(topic, &bad.detail);
        self.health.update(|h| {
            let stat = h.bad_payloads.entry(reason.to_string()).or_default();
            stat.count += 1;
            stat.last_example = example;
            stat.last_time = arrival;
        });
        match self.bad_log.admit(Instant::now()) {
            Some(suppressed) => warn!(
                source = %self.name,
                topic,
                reason,
                detail = %bad.detail,
                suppressed,
                "refused a message (counted and acknowledged; the subscription goes on)"
            ),
            None => {
                debug!(source = %self.name, topic, reason, detail = %bad.detail, "refused a message")
            }
        }
    }

    /// Sends the current batch to the pipeline, with a commit mark when it holds QoS 1
    /// messages (recorded in the book before the batch can possibly be committed).
    async fn flush(&mut self) -> Result<(), Stop> {
        let Some(built) = self.batch.take() else {
            return Ok(());
        };
        let readings = built.readings.len() as u64;
        let mut batch = Batch::new(self.name.clone(), built.readings);
        batch.redelivered = built.redelivered;
        batch.tags = built.tags;
        if !built.acks.is_empty() {
            let mark = self.tracker.mark();
            lock(&self.book).push(mark.seq(), built.acks);
            batch.commit = Some(mark);
        } else if readings == 0 {
            return Ok(());
        }
        tokio::select! {
            biased;
            sent = self.tx.send(batch) => sent.map_err(|_| Stop::ReceiverGone)?,
            () = self.shutdown.cancelled() => return Err(Stop::Shutdown),
        }
        if readings > 0 {
            self.meters.readings.inc_by(readings);
            self.health.update(|h| {
                h.readings += readings;
                h.last_success = Some(now_ns());
            });
        }
        Ok(())
    }

    /// A failed connection or connection attempt: forwards what was read before it, reports,
    /// and waits the backoff delay (the longest one when only a person can fix it).
    async fn failed(
        &mut self,
        error: ConnectionError,
        eventloop: &mut EventLoop,
    ) -> Result<(), Stop> {
        let was_connected = std::mem::replace(&mut self.connected, false);
        lock(&self.book).set_connected(false);
        self.meters.connected.set(0);
        // Packets read before the failure are still buffered; they belong to the connection
        // that just ended, so they go out now rather than after the next ConnAck.
        let buffered: Vec<Publish> = eventloop
            .state
            .events
            .drain(..)
            .filter_map(|event| match event {
                Event::Incoming(Packet::Publish(p)) => Some(p),
                _ => None,
            })
            .collect();
        for publish in buffered {
            self.publish(publish).await?;
        }
        self.flush().await?;

        let person = connect::needs_a_person(&error);
        let delay = if person {
            self.backoff.longest(jitter())
        } else {
            self.backoff.next(jitter())
        };
        let state = if person { "misconfigured" } else { "down" };
        let text = error_text(&error, person);
        self.meters.errors.inc();
        self.health.update(|h| {
            h.state = state.into();
            h.errors += 1;
            h.last_error = Some(text.clone());
        });
        let retry_in_ms = delay.as_millis() as u64;
        let key = (state, text);
        if self.last_logged.as_ref() == Some(&key) {
            debug!(source = %self.name, broker = %self.broker, error = %key.1, retry_in_ms, "mqtt connection failed again");
        } else {
            if person {
                error!(source = %self.name, broker = %self.broker, error = %key.1, retry_in_ms, "cannot connect to the MQTT broker until a person fixes the configuration (credentials or certificates)");
            } else if was_connected {
                warn!(source = %self.name, broker = %self.broker, error = %key.1, retry_in_ms, "lost the MQTT broker; reconnecting");
            } else {
                warn!(source = %self.name, broker = %self.broker, error = %key.1, retry_in_ms, "cannot reach the MQTT broker; retrying");
            }
            self.last_logged = Some(key);
        }
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// The error as shown on the status page, with what to check when a person must act.
fn error_text(error: &ConnectionError, person: bool) -> String {
    if !person {
        return error.to_string();
    }
    let hint = match error {
        ConnectionError::ConnectionRefused(_) => "check username, password and client_id",
        _ => "check tls.ca_file, tls.server_name and the client certificate",
    };
    format!("{error} ({hint})")
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
