//! The delivery loop of one alert sink, whatever its transport: reads the outbox from the
//! sink's cursor, skips rollups, delivers each anomaly event in order through a [`Deliver`],
//! and moves the cursor (one durable store transaction) only after the event was delivered or
//! refused for good (then as a dead letter, in the same transaction). Rollups and entries
//! removed by retention before this sink had them (counted as dropped) are acknowledged
//! together with the next event, or at the end of a page.
//!
//! Failures: no answer → `down`, "not now" → `backing_off`, both retried with jittered
//! exponential backoff (`Retry-After` honoured, up to [`MAX_RETRY_AFTER`]); a refusal of the
//! gateway itself (token, URL) → `misconfigured`, retried every `retry.misconfigured`, logged
//! at ERROR once. The event being retried blocks the ones after it: order is kept.
//!
//! An idle runner looks at the outbox every [`IDLE_POLL`], so an event goes out within about
//! that plus the store's commit interval of being committed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AlertState, Deliver, DeliveryError, alert_json};
use crate::forward::sink::{Backoff, blocking};
use crate::forward::status::SinkHandle;
use crate::metrics::{Counter, Metrics, SinkLabel};
use crate::model::{AnomalyEvent, now_ns};
use crate::store::{DeadLetter, OutboxEntry, Store};

/// How long an idle runner waits before looking at the outbox again.
pub const IDLE_POLL: Duration = Duration::from_millis(200);
/// Outbox entries read at once (mostly rollups, which are skipped).
const PAGE: usize = 512;
/// How often the backlog figures on the status page are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// A `Retry-After` longer than this is cut to it, so that a wrong header cannot hold the
/// alerts back for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Pause after a store error before reading again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Retry delays of an alert sink.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First delay after a failure; doubles (with jitter) up to `max`.
    pub initial: Duration,
    pub max: Duration,
    /// Delay while the target refuses the gateway (`misconfigured`).
    pub misconfigured: Duration,
}

/// One alert sink's runner. Spawn [`AlertRunner::run`]; it returns after `shutdown`.
pub struct AlertRunner<D> {
    /// The sink's name: its cursor, counters and dead letters are kept under it.
    pub name: String,
    /// `gateway.id`, in every alert.
    pub gateway: String,
    pub transport: D,
    pub retry: RetryPolicy,
    pub store: Store,
    pub status: SinkHandle,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// What became of one event.
enum Outcome {
    Delivered,
    /// Refused for good: the reason, for the dead letter.
    Refused(String),
    /// Shutdown came first; the event stays behind the cursor.
    Stopped,
}

/// What the delivery loop and the status refresh share.
struct Ctx {
    name: String,
    store: Store,
    status: SinkHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl<D: Deliver> AlertRunner<D> {
    pub async fn run(self) {
        let AlertRunner {
            name,
            gateway,
            mut transport,
            retry,
            store,
            status,
            metrics,
            shutdown,
        } = self;
        let ctx = Ctx {
            name,
            store,
            status,
            metrics,
            shutdown,
        };
        tokio::join!(
            ctx.deliver_loop(&mut transport, &gateway, retry),
            ctx.refresh_loop()
        );
        ctx.status.update(|s| s.next_attempt_at = None);
        tracing::info!(sink = %ctx.name, "alert sink stopped");
    }
}

impl Ctx {
    async fn deliver_loop<D: Deliver>(&self, transport: &mut D, gateway: &str, retry: RetryPolicy) {
        let label = SinkLabel {
            sink: self.name.clone(),
        };
        let sent = self.metrics.sink_points_sent.get_or_create(&label);
        let dead = self.metrics.sink_dead_letters.get_or_create(&label);
        let dropped_metric = self.metrics.sink_dropped_points.get_or_create(&label);
        let mut backoff = Backoff {
            initial: retry.initial,
            max: retry.max,
            failures: 0,
        };
        // The cursor as this loop knows it; `None`: read it from the store.
        let mut cursor: Option<u64> = None;
        'pages: while !self.shutdown.is_cancelled() {
            let from = match cursor {
                Some(c) => c,
                None => {
                    let name = self.name.clone();
                    match blocking(&self.store, move |s| s.sink_counters(&name)).await {
                        Ok(c) => *cursor.insert(c.cursor),
                        Err(e) => {
                            tracing::error!(sink = %self.name, error = %e, "cannot read the cursor");
                            self.pause(STORE_RETRY).await;
                            continue;
                        }
                    }
                }
            };
            let page = blocking(&self.store, move |s| s.outbox_page(from, PAGE)).await;
            let (entries, head) = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read the outbox");
                    self.pause(STORE_RETRY).await;
                    continue;
                }
            };
            if entries.is_empty() {
                if head > from {
                    // Everything after the cursor was removed by retention: lost for this sink.
                    let dropped = head - from;
                    if self.acknowledge(head, dropped, Vec::new()).await {
                        self.report_dropped(dropped, &dropped_metric);
                        cursor = Some(head);
                    } else {
                        cursor = None;
                        self.pause(STORE_RETRY).await;
                    }
                    continue;
                }
                if self.status.get().state == "starting" {
                    self.set_state("up");
                }
                self.pause(IDLE_POLL).await;
                continue;
            }

            // `walked`: the last entry looked at; `acked`: the last acknowledged.
            let (mut walked, mut acked, mut dropped) = (from, from, 0u64);
            for (seq, entry) in entries {
                dropped += seq.saturating_sub(walked + 1);
                walked = seq;
                let OutboxEntry::Event(event) = entry else {
                    continue;
                };
                let letters = match self
                    .deliver_one(transport, &event, gateway, &mut backoff, retry)
                    .await
                {
                    Outcome::Stopped => break 'pages,
                    Outcome::Delivered => Vec::new(),
                    Outcome::Refused(reason) => vec![DeadLetter {
                        seq,
                        line: String::from_utf8_lossy(&alert_json(&event, gateway)).into_owned(),
                        reason,
                        time: now_ns(),
                    }],
                };
                let refused = !letters.is_empty();
                if !self.acknowledge(seq, dropped, letters).await {
                    // Delivered but not recorded: it goes out again (at least once).
                    cursor = None;
                    self.pause(STORE_RETRY).await;
                    continue 'pages;
                }
                self.report_dropped(dropped, &dropped_metric);
                dropped = 0;
                acked = seq;
                if refused {
                    // The target answered: the link is up, this one alert was not wanted.
                    dead.inc();
                    self.status.update(|s| {
                        s.state = "up".into();
                        s.next_attempt_at = None;
                        s.cursor = seq;
                        s.dead_letters += 1;
                    });
                    self.metrics.sink_state.set(&self.name, "up");
                } else {
                    sent.inc();
                    let was = self.status.get().state;
                    if was != "up" && was != "starting" {
                        tracing::info!(sink = %self.name, "alerts are delivered again");
                    }
                    self.status.update(|s| {
                        s.state = "up".into();
                        s.last_success = Some(now_ns());
                        s.next_attempt_at = None;
                        s.sent_points += 1;
                        s.cursor = seq;
                        s.backlog_points = s.backlog_points.saturating_sub(1);
                    });
                    self.metrics.sink_state.set(&self.name, "up");
                }
            }
            // The rollups (and gaps) after the last event of the page.
            if walked > acked {
                if !self.acknowledge(walked, dropped, Vec::new()).await {
                    cursor = None;
                    self.pause(STORE_RETRY).await;
                    continue;
                }
                self.report_dropped(dropped, &dropped_metric);
                self.status.update(|s| s.cursor = walked);
            }
            cursor = Some(walked);
        }
    }

    /// Delivers one event, retrying until it is delivered, refused for good, or shutdown.
    async fn deliver_one<D: Deliver>(
        &self,
        transport: &mut D,
        event: &AnomalyEvent,
        gateway: &str,
        backoff: &mut Backoff,
        retry: RetryPolicy,
    ) -> Outcome {
        loop {
            let result = tokio::select! {
                result = transport.deliver(event, gateway) => result,
                // Abandoned: the event stays behind the cursor and goes out after the restart.
                _ = self.shutdown.cancelled() => return Outcome::Stopped,
            };
            let (state, reason, wait) = match result {
                Ok(()) => {
                    backoff.reset();
                    return Outcome::Delivered;
                }
                Err(DeliveryError::Refused(reason)) => {
                    backoff.reset();
                    tracing::warn!(sink = %self.name, event_id = event.id, state = AlertState::of(event).as_str(), %reason, "the alert was refused; it is kept as a dead letter");
                    let now = now_ns();
                    self.status.update(|s| {
                        s.last_error = Some(reason.clone());
                        s.last_error_at = Some(now);
                    });
                    return Outcome::Refused(reason);
                }
                Err(DeliveryError::Misconfigured(reason)) => {
                    ("misconfigured", reason, retry.misconfigured)
                }
                Err(DeliveryError::Retry { reason, after }) => {
                    let after = after.unwrap_or_default().min(MAX_RETRY_AFTER);
                    ("backing_off", reason, backoff.next().max(after))
                }
                Err(DeliveryError::Down(reason)) => ("down", reason, backoff.next()),
            };
            if self.status.get().state != state {
                if state == "misconfigured" {
                    tracing::error!(sink = %self.name, %reason, "the alert target refuses this gateway (token or URL): nothing is lost, fix the sink config");
                } else {
                    tracing::warn!(sink = %self.name, %reason, "cannot deliver alerts; backing off and retrying");
                }
            }
            self.failed(state, reason, wait);
            self.pause(wait).await;
            if self.shutdown.is_cancelled() {
                return Outcome::Stopped;
            }
        }
    }

    /// Moves the cursor to `up_to` with the dropped count and dead letters of the range, in
    /// one durable transaction. False (logged) when the store failed.
    async fn acknowledge(&self, up_to: u64, dropped: u64, letters: Vec<DeadLetter>) -> bool {
        let name = self.name.clone();
        match blocking(&self.store, move |s| {
            s.acknowledge(&name, up_to, dropped, &letters)
        })
        .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot advance the cursor; the alert will be delivered again");
                false
            }
        }
    }

    fn set_state(&self, state: &str) {
        self.status.update(|s| s.state = state.into());
        self.metrics.sink_state.set(&self.name, state);
    }

    fn failed(&self, state: &str, reason: String, wait: Duration) {
        self.metrics.sink_state.set(&self.name, state);
        let now = now_ns();
        self.status.update(|s| {
            s.state = state.into();
            s.last_error = Some(reason);
            s.last_error_at = Some(now);
            s.next_attempt_at = Some(now + i64::try_from(wait.as_nanos()).unwrap_or(i64::MAX));
        });
    }

    /// Counts and logs entries that retention removed before this sink had them, once the
    /// cursor moved past them.
    fn report_dropped(&self, dropped: u64, metric: &Counter) {
        if dropped > 0 {
            metric.inc_by(dropped);
            tracing::error!(sink = %self.name, dropped, "outbox entries were removed by retention before this alert sink had them: alerts among them are lost");
        }
    }

    /// Sleeps, or returns early on shutdown.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Refreshes the backlog figures (events only) every [`STATUS_REFRESH`] until shutdown.
    async fn refresh_loop(&self) {
        let label = SinkLabel {
            sink: self.name.clone(),
        };
        let points = self.metrics.sink_backlog_points.get_or_create(&label);
        let bytes = self.metrics.sink_backlog_bytes.get_or_create(&label);
        let oldest_secs = self
            .metrics
            .sink_oldest_unsent_seconds
            .get_or_create(&label);
        let mut tick = tokio::time::interval(STATUS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let name = self.name.clone();
            let read = blocking(&self.store, move |s| {
                let counters = s.sink_counters(&name)?;
                let backlog = s.event_backlog(counters.cursor)?;
                Ok((counters, backlog))
            })
            .await;
            match read {
                Ok((counters, backlog)) => {
                    let now = now_ns();
                    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    points.set(gauge(backlog.points));
                    bytes.set(gauge(backlog.bytes));
                    oldest_secs.set(
                        backlog
                            .oldest
                            .map_or(0, |t| (now - t).max(0) / 1_000_000_000),
                    );
                    self.status.update(|s| {
                        s.cursor = s.cursor.max(counters.cursor);
                        s.dead_letters = counters.dead_letters;
                        s.dropped_points = counters.dropped;
                        s.backlog_points = backlog.points;
                        s.backlog_bytes = backlog.bytes;
                        s.oldest_unsent = backlog.oldest;
                    });
                }
                Err(e) => tracing::warn!(sink = %self.name, error = %e, "cannot read the backlog"),
            }
        }
    }
}
