//! The polling task of one MQTT source: the only code that polls rumqttc's `EventLoop`. It
//! connects and subscribes, turns publishes into batches for the pipeline (commit marks for
//! QoS 1, redelivered copies flagged), refuses bad payloads with their reason, and backs off
//! after errors. See the module documentation of [`super`] for the acknowledgement path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS,
    SubAck, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::acks::AckBook;
use super::bad::{self, BadLog};
use super::batch::BatchBuilder;
use super::route::Router;
use crate::ack::CommitTracker;
use crate::ingest::tags::TagAnnouncer;
use crate::ingest::{BadPayload, BadReason};
use crate::live::SourceHandle;
use crate::metrics::{Counter, Gauge, Metrics, SourceLabel, SourceReasonLabel};
use crate::model::{Batch, NS_PER_SEC, Quality, TimeNs, now_ns};
use crate::mqtt_client as connect;
use crate::source::backoff::{Backoff, jitter};

/// Why the polling task ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stop {
    Shutdown,
    /// The pipeline dropped its receiver.
    ReceiverGone,
}

/// The metrics of one source, looked up once.
pub(super) struct Meters {
    pub(super) messages: Counter,
    pub(super) readings: Counter,
    pub(super) errors: Counter,
    pub(super) latency: prometheus::Histogram,
    pub(super) connected: Gauge,
    pub(super) reconnects: Counter,
    pub(super) unacked: Gauge,
    pub(super) bad: BTreeMap<BadReason, Counter>,
}

impl Meters {
    pub(super) fn new(metrics: &Metrics, name: &str) -> Self {
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

pub(super) fn lock(book: &Mutex<AckBook>) -> MutexGuard<'_, AckBook> {
    book.lock().expect("ack book poisoned")
}

/// The polling task's state. It owns the `EventLoop` and is the only code that polls it.
pub(super) struct Poller {
    pub(super) name: Arc<str>,
    pub(super) broker: String,
    pub(super) router: Router,
    pub(super) announcer: TagAnnouncer,
    pub(super) filters: Vec<SubscribeFilter>,
    pub(super) client: AsyncClient,
    pub(super) tx: mpsc::Sender<Batch>,
    pub(super) book: Arc<Mutex<AckBook>>,
    pub(super) tracker: CommitTracker,
    pub(super) batch: BatchBuilder,
    pub(super) health: SourceHandle,
    pub(super) meters: Meters,
    pub(super) bad_log: BadLog,
    pub(super) backoff: Backoff,
    pub(super) persistent: bool,
    /// Between a ConnAck and the next error.
    pub(super) connected: bool,
    /// ConnAcks received.
    pub(super) connections: u64,
    /// The (state, error) last logged at WARN or ERROR; a repeat goes to DEBUG.
    pub(super) last_logged: Option<(&'static str, String)>,
    /// Tells the acknowledging task that it may send again.
    pub(super) wake: Arc<Notify>,
    pub(super) shutdown: CancellationToken,
    /// Cancelled `DISCONNECT_GRACE` after `shutdown`.
    pub(super) force: CancellationToken,
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
    pub(super) async fn run(&mut self, eventloop: &mut EventLoop) -> Result<Infallible, Stop> {
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

    pub(super) fn connack(&mut self, ack: &ConnAck) {
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
    pub(super) fn subscribe(&self) {
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

    pub(super) fn suback(&mut self, ack: &SubAck) {
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
    pub(super) async fn publish(&mut self, publish: Publish) -> Result<(), Stop> {
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

    pub(super) fn refused(&mut self, topic: &str, bad: BadPayload, arrival: TimeNs) {
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
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
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
    pub(super) async fn failed(
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
pub(super) fn error_text(error: &ConnectionError, person: bool) -> String {
    if !person {
        return error.to_string();
    }
    let hint = match error {
        ConnectionError::ConnectionRefused(_) => "check username, password and client_id",
        _ => "check tls.ca_file, tls.server_name and the client certificate",
    };
    format!("{error} ({hint})")
}
