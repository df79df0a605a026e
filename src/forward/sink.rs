//! One forwarder per configured sink: reads the outbox from the sink's cursor, encodes a batch
//! of line protocol, sends it, and moves the cursor (in a store transaction) only after
//! InfluxDB accepted it or refused it for good. Delivery is at least once; points are
//! deterministic (window start as timestamp, fixed tags), so a resent point overwrites itself.
//!
//! Failures never slow acquisition: the forwarder only reads the store. A dead uplink makes
//! it back off (jittered exponential, `Retry-After` honoured); a misconfigured one
//! (401/403/404) retries slowly and says so on the status page and in the log at ERROR.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::influx::{Endpoint, Outcome};
use super::line_protocol::{Precision, encode};
use super::points::{PointTags, outbox_point};
use super::status::SinkHandle;
use crate::config::{Forwarded, InfluxConfig};
use crate::metrics::{Metrics, SinkLabel};
use crate::model::now_ns;
use crate::store::{DeadLetter, OutboxEntry, Store, StoreError};

/// How often the backlog figures on the status page are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// How long an idle forwarder waits before looking at the outbox again.
const IDLE_POLL: Duration = Duration::from_millis(250);

pub struct Forwarder {
    pub name: String,
    pub config: InfluxConfig,
    pub endpoint: Endpoint,
    pub tags: PointTags,
    pub store: Store,
    pub status: SinkHandle,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// The next batch, being read and prepared while the current request is in flight.
type Prefetch = tokio::task::JoinHandle<Result<(usize, Batch), StoreError>>;

/// The backlog gauges of one sink.
struct BacklogGauges {
    points: crate::metrics::Gauge,
    bytes: crate::metrics::Gauge,
    oldest_secs: crate::metrics::Gauge,
}

/// One request's worth of outbox entries.
#[derive(Default)]
struct Batch {
    body: String,
    points: u64,
    /// Sequence of the last entry the batch covers (the cursor after it is acknowledged).
    last_seq: u64,
    /// Entries covered, including those not forwarded (filtered out or unencodable).
    consumed: usize,
    /// Entries missing from the sequence: removed by retention before this sink had them.
    dropped: u64,
    dead_letters: Vec<DeadLetter>,
    /// The gzip body, made beside the request before when gzip is on.
    compressed: Option<Vec<u8>>,
    /// The newest outbox sequence in the snapshot the batch was read from.
    head: u64,
}

/// Jittered exponential backoff, reset on success (shared with the alert sinks).
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) failures: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        let capped = exp.min(self.max);
        capped.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn precision(p: &str) -> Precision {
    match p {
        "s" => Precision::S,
        "ms" => Precision::Ms,
        "us" => Precision::Us,
        _ => Precision::Ns,
    }
}

impl Forwarder {
    pub async fn run(self) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(self.config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(
                self.config.request_timeout_secs.min(10),
            ))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot build the HTTP client; this sink is stopped");
                self.status.update(|s| {
                    s.state = "misconfigured".into();
                    s.last_error = Some(format!("cannot build the HTTP client: {e}"));
                });
                return;
            }
        };
        let label = SinkLabel {
            sink: self.name.clone(),
        };
        let sent = self.metrics.sink_points_sent.get_or_create(&label);
        let dead = self.metrics.sink_dead_letters.get_or_create(&label);
        let dropped_metric = self.metrics.sink_dropped_points.get_or_create(&label);
        let gauges = BacklogGauges {
            points: self.metrics.sink_backlog_points.get_or_create(&label),
            bytes: self.metrics.sink_backlog_bytes.get_or_create(&label),
            oldest_secs: self
                .metrics
                .sink_oldest_unsent_seconds
                .get_or_create(&label),
        };
        let precision = precision(&self.config.precision);
        let mut backoff = Backoff {
            initial: Duration::from_millis(self.config.retry_initial_ms),
            max: Duration::from_secs(self.config.retry_max_secs),
            failures: 0,
        };
        let mut batch_limit = self.config.batch_max_points;
        let mut next_allowed = Instant::now();
        let mut rate = 0.0f64;
        let mut last_ack = Instant::now();
        // Highest sequence sent by the live lane (in memory: after a restart the backlog lane
        // simply sends those entries again, which overwrites the same points).
        let mut live_sent = 0u64;
        let shared = Arc::new((self.config.clone(), self.tags.clone()));
        let mut prefetched: Option<(u64, usize, Prefetch)> = None;
        // The cursor as this loop knows it (ahead of the store while a commit is in flight);
        // `None`: read it from the store.
        let mut cursor_mem: Option<u64> = None;
        let mut pending_ack: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;

        let forwarding = async {
            loop {
                if self.shutdown.is_cancelled() {
                    break;
                }
                let cursor = match cursor_mem {
                    Some(c) => c,
                    None => {
                        let name = self.name.clone();
                        match blocking(&self.store, move |s| s.sink_counters(&name)).await {
                            Ok(c) => *cursor_mem.insert(c.cursor),
                            Err(e) => {
                                tracing::error!(sink = %self.name, error = %e, "cannot read the cursor");
                                self.pause(Duration::from_secs(1)).await;
                                continue;
                            }
                        }
                    }
                };
                // The batch after the one just acknowledged was prepared while that one was in
                // flight; otherwise read and prepare it now.
                let ready = match prefetched.take() {
                    Some((from, limit, handle)) if from == cursor && limit == batch_limit => {
                        handle.await.ok().and_then(Result::ok)
                    }
                    _ => None,
                };
                let read = match ready {
                    Some(r) => Ok(r),
                    None => {
                        let shared = shared.clone();
                        blocking(&self.store, move |s| {
                            read_and_prepare(s, &shared, cursor, batch_limit, precision)
                        })
                        .await
                    }
                };
                let (read_count, batch) = match read {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(sink = %self.name, error = %e, "cannot read the outbox");
                        self.pause(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let head = if read_count == 0 {
                    blocking(&self.store, |s| s.outbox_head())
                        .await
                        .unwrap_or(0)
                } else {
                    0
                };
                let entries_empty = read_count == 0;
                if entries_empty && head > cursor {
                    // Everything after the cursor was removed by retention: lost for this sink.
                    let dropped = head - cursor;
                    let name = self.name.clone();
                    if blocking(&self.store, move |s| {
                        s.acknowledge(&name, head, dropped, &[])
                    })
                    .await
                    .is_ok()
                    {
                        self.report_dropped(dropped, &dropped_metric);
                    }
                    cursor_mem = None;
                    continue;
                }
                if entries_empty {
                    if self.status.get().state == "starting" {
                        self.status.update(|s| s.state = "up".into());
                        self.metrics.sink_state.set(&self.name, "up");
                    }
                    self.pause(IDLE_POLL).await;
                    continue;
                }

                // A backlog (more than one full batch waits): start the live lane at the current
                // head, so that what arrives from now on reaches HQ while the backlog drains.
                if read_count >= batch_limit && live_sent <= cursor {
                    let store = self.store.clone();
                    if let Ok(Ok(head)) =
                        tokio::task::spawn_blocking(move || store.outbox_head()).await
                    {
                        live_sent = head;
                    }
                }
                let Batch {
                    body,
                    points,
                    last_seq,
                    consumed,
                    dropped,
                    mut dead_letters,
                    compressed,
                    ..
                } = batch;

                let outcome = if points == 0 {
                    Outcome::Accepted
                } else {
                    if let Some(cap) = std::num::NonZeroU64::new(self.config.max_points_per_sec) {
                        // While the cap holds the backlog back, the live lane keeps the present
                        // flowing, once a second.
                        loop {
                            let wait = next_allowed.saturating_duration_since(Instant::now());
                            if wait.is_zero() || self.shutdown.is_cancelled() {
                                break;
                            }
                            if live_sent > cursor {
                                live_sent = self.send_live(&client, live_sent, precision).await;
                            }
                            self.pause(wait.min(Duration::from_secs(1))).await;
                        }
                        if self.shutdown.is_cancelled() {
                            break;
                        }
                        next_allowed = Instant::now().max(next_allowed)
                            + Duration::from_secs_f64(points as f64 / cap.get() as f64);
                    }
                    // Prepare the next batch while this one is in flight, so that InfluxDB
                    // does not wait for edgewatch between requests.
                    if read_count >= batch_limit {
                        let store = self.store.clone();
                        let shared = shared.clone();
                        let limit = batch_limit;
                        prefetched = Some((
                            last_seq,
                            limit,
                            tokio::task::spawn_blocking(move || {
                                read_and_prepare(&store, &shared, last_seq, limit, precision)
                            }),
                        ));
                    }
                    tokio::select! {
                        outcome = self.endpoint.send_encoded(&client, &body, compressed) => outcome,
                        // Abandoned: the batch stays behind the cursor and is sent again (the
                        // same points) after the restart.
                        _ = self.shutdown.cancelled() => break,
                    }
                };

                // InfluxDB refused part of the batch without naming the lines (a field type
                // conflict): bisect. The good points of each try are stored again, which changes
                // nothing (same points); a single refused point becomes a dead letter.
                if let Outcome::Rejected {
                    attributed: false, ..
                } = &outcome
                    && points > 1
                    && consumed > 1
                {
                    batch_limit = (consumed / 2).max(1);
                    tracing::debug!(sink = %self.name, batch_limit, "isolating refused points");
                    continue;
                }
                match outcome {
                    Outcome::Accepted | Outcome::Rejected { .. } => {
                        if let Outcome::Rejected { reason, lines, .. } = &outcome {
                            tracing::warn!(sink = %self.name, refused = lines.len(), %reason, "InfluxDB refused points; they are kept as dead letters");
                            let time = now_ns();
                            dead_letters.extend(lines.iter().map(|(line, why)| DeadLetter {
                                seq: last_seq,
                                line: line.clone(),
                                reason: why.clone(),
                                time,
                            }));
                        }
                        // The cursor is committed (fsync) beside the next request rather than
                        // before it; one commit is in flight at a time. A crash before it lands
                        // only means this batch is sent again, which overwrites the same points.
                        if !self.settle(&mut pending_ack).await {
                            cursor_mem = None;
                            self.pause(Duration::from_secs(1)).await;
                            continue;
                        }
                        let name = self.name.clone();
                        let letters = dead_letters.clone();
                        let store = self.store.clone();
                        pending_ack = Some(tokio::task::spawn_blocking(move || {
                            store.acknowledge(&name, last_seq, dropped, &letters)
                        }));
                        cursor_mem = Some(last_seq);
                        let elapsed = last_ack.elapsed().as_secs_f64().max(1e-3);
                        last_ack = Instant::now();
                        let instant_rate = points as f64 / elapsed;
                        rate = if rate == 0.0 {
                            instant_rate
                        } else {
                            rate * 0.8 + instant_rate * 0.2
                        };
                        sent.inc_by(points);
                        dead.inc_by(dead_letters.len() as u64);
                        self.report_dropped(dropped, &dropped_metric);
                        let was = self.status.get().state;
                        if was != "up" && was != "starting" {
                            tracing::info!(sink = %self.name, "InfluxDB accepts points again");
                        }
                        self.status.update(|s| {
                            s.state = "up".into();
                            s.last_success = Some(now_ns());
                            s.next_attempt_at = None;
                            s.sent_points += points;
                            s.cursor = last_seq;
                            s.drain_rate_points_per_sec = rate;
                        });
                        self.metrics.sink_state.set(&self.name, "up");
                        backoff.reset();
                        if batch_limit < self.config.batch_max_points {
                            batch_limit = (batch_limit * 2).min(self.config.batch_max_points);
                        }
                        if live_sent > last_seq {
                            live_sent = self.send_live(&client, live_sent, precision).await;
                        }
                    }
                    Outcome::TooLarge => {
                        if batch_limit == 1 {
                            // A single point too large for InfluxDB can never be sent.
                            let name = self.name.clone();
                            let letter = DeadLetter {
                                seq: last_seq,
                                line: body.lines().next().unwrap_or_default().to_string(),
                                reason: "HTTP 413: request entity too large".into(),
                                time: now_ns(),
                            };
                            if blocking(&self.store, move |s| {
                                s.acknowledge(&name, last_seq, dropped, &[letter])
                            })
                            .await
                            .is_ok()
                            {
                                dead.inc();
                                self.report_dropped(dropped, &dropped_metric);
                            }
                        }
                        cursor_mem = None;
                        batch_limit = (batch_limit / 2).max(1);
                        tracing::warn!(sink = %self.name, batch_limit, "InfluxDB answered 413: smaller batches");
                    }
                    Outcome::Misconfigured { reason } => {
                        let was = self.status.get().state;
                        if was != "misconfigured" {
                            tracing::error!(sink = %self.name, %reason, "InfluxDB refuses this gateway's writes (credentials, database or bucket): nothing is lost, fix the sink config");
                        }
                        let wait = Duration::from_secs(self.config.misconfigured_retry_secs);
                        self.failed("misconfigured", reason, wait);
                        self.pause(wait).await;
                    }
                    Outcome::Retry { reason, after } => {
                        let answered = reason.starts_with("HTTP ");
                        let state = if answered { "backing_off" } else { "down" };
                        let was = self.status.get().state;
                        if was != state {
                            tracing::warn!(sink = %self.name, %reason, "cannot forward; backing off and retrying");
                        }
                        let wait = backoff.next().max(after.unwrap_or_default());
                        self.failed(state, reason, wait);
                        self.pause(wait).await;
                    }
                }
            }
            self.settle(&mut pending_ack).await;
        };
        let refresh = self.refresh_loop(gauges);
        tokio::join!(forwarding, refresh);
        self.status.update(|s| s.next_attempt_at = None);
        tracing::info!(sink = %self.name, "forwarder stopped");
    }

    /// Waits for the cursor commit in flight, if any. False when it failed: the loop then
    /// reads the cursor from the store again and resends from there.
    async fn settle(
        &self,
        pending: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    ) -> bool {
        let Some(handle) = pending.take() else {
            return true;
        };
        match handle.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(sink = %self.name, error = %e, "cannot advance the cursor; the batch will be sent again");
                false
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cursor commit panicked; the batch will be sent again");
                false
            }
        }
    }

    fn prepare(&self, cursor: u64, entries: &[(u64, OutboxEntry)], precision: Precision) -> Batch {
        prepare_batch(&self.config, &self.tags, cursor, entries, precision)
    }

    /// Sends the newest entries after `live_sent` (not rate-capped, nothing acknowledged:
    /// the backlog lane still owns the cursor and will send them again, which overwrites the
    /// same points). Returns the new live position; unchanged when the send failed.
    async fn send_live(
        &self,
        client: &reqwest::Client,
        live_sent: u64,
        precision: Precision,
    ) -> u64 {
        let limit = self.config.batch_max_points;
        let store = self.store.clone();
        let Ok(Ok(entries)) =
            tokio::task::spawn_blocking(move || store.outbox_after(live_sent, limit)).await
        else {
            return live_sent;
        };
        if entries.is_empty() {
            return live_sent;
        }
        let batch = self.prepare(live_sent, &entries, precision);
        if batch.points == 0 {
            return batch.last_seq;
        }
        let outcome = tokio::select! {
            outcome = self.endpoint.send(client, &batch.body) => outcome,
            _ = self.shutdown.cancelled() => return live_sent,
        };
        match outcome {
            Outcome::Accepted => batch.last_seq,
            _ => live_sent,
        }
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

    /// Counts and logs outbox entries that retention removed before this sink had them, once:
    /// only after the cursor moved past them (in the same transaction as the stored counter).
    /// Logging them when they are found instead would repeat the same loss at every retry of
    /// a batch that cannot be sent, for as long as an outage lasts.
    fn report_dropped(&self, dropped: u64, metric: &crate::metrics::Counter) {
        if dropped > 0 {
            metric.inc_by(dropped);
            tracing::error!(sink = %self.name, dropped, "outbox entries were removed by retention before this sink had them: HQ will not get them");
        }
    }

    /// Sleeps, or returns early on shutdown.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Refreshes the backlog figures from the store every [`STATUS_REFRESH`], beside the
    /// forwarding loop (which may be waiting on a rate cap or a backoff) until shutdown.
    async fn refresh_loop(&self, gauges: BacklogGauges) {
        let mut tick = tokio::time::interval(STATUS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.refresh(&gauges).await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Refreshes the backlog figures from the store.
    async fn refresh(&self, gauges: &BacklogGauges) {
        let name = self.name.clone();
        let read = blocking(&self.store, move |s| {
            let counters = s.sink_counters(&name)?;
            let backlog = s.backlog(counters.cursor)?;
            Ok((counters, backlog))
        })
        .await;
        match read {
            Ok((counters, backlog)) => {
                let now = now_ns();
                gauges
                    .points
                    .set(i64::try_from(backlog.points).unwrap_or(i64::MAX));
                gauges
                    .bytes
                    .set(i64::try_from(backlog.bytes).unwrap_or(i64::MAX));
                gauges.oldest_secs.set(
                    backlog
                        .oldest
                        .map_or(0, |t| (now - t).max(0) / 1_000_000_000),
                );
                self.status.update(|s| {
                    let rate = s.drain_rate_points_per_sec;
                    s.cursor = counters.cursor;
                    s.dead_letters = counters.dead_letters;
                    s.dropped_points = counters.dropped;
                    s.backlog_points = backlog.points;
                    s.backlog_bytes = backlog.bytes;
                    s.oldest_unsent = backlog.oldest;
                    s.eta_secs =
                        (rate > 0.0 && backlog.points > 0).then(|| backlog.points as f64 / rate);
                });
            }
            Err(e) => tracing::warn!(sink = %self.name, error = %e, "cannot read the backlog"),
        }
    }
}

/// Encodes `entries` (read after `cursor`) into one request body, within the batch byte
/// limit. Gaps in the sequence behind the cursor are entries that retention removed.
fn prepare_batch(
    config: &InfluxConfig,
    tags: &PointTags,
    cursor: u64,
    entries: &[(u64, OutboxEntry)],
    precision: Precision,
) -> Batch {
    let mut batch = Batch {
        last_seq: cursor,
        ..Batch::default()
    };
    let mut prev = cursor;
    for (seq, entry) in entries {
        if !batch.body.is_empty() && batch.body.len() >= config.batch_max_bytes {
            break;
        }
        batch.consumed += 1;
        batch.dropped += seq - prev - 1;
        prev = *seq;
        batch.last_seq = *seq;
        let wanted = match entry {
            OutboxEntry::Rollup { .. } => config.forward.contains(&Forwarded::Rollups),
            OutboxEntry::Event(_) => config.forward.contains(&Forwarded::Events),
        };
        if !wanted {
            continue;
        }
        let Some(point) = outbox_point(entry, tags) else {
            continue;
        };
        let before = batch.body.len();
        if let Err(e) = encode(&point, precision, &mut batch.body) {
            batch.body.truncate(before);
            batch.dead_letters.push(DeadLetter {
                seq: *seq,
                line: format!("{point:?}"),
                reason: format!("cannot encode: {e}"),
                time: now_ns(),
            });
            continue;
        }
        batch.points += 1;
    }
    batch
}

/// Reads the entries after `from` and prepares their batch, off the async threads. Returns
/// how many entries were read (0: nothing waits) and the batch.
fn read_and_prepare(
    store: &Store,
    shared: &(InfluxConfig, PointTags),
    from: u64,
    limit: usize,
    precision: Precision,
) -> Result<(usize, Batch), StoreError> {
    let (entries, head) = store.outbox_page(from, limit)?;
    let mut batch = prepare_batch(&shared.0, &shared.1, from, &entries, precision);
    if shared.0.gzip && batch.points > 0 {
        batch.compressed = Some(super::influx::gzip(&batch.body));
    }
    batch.head = head;
    Ok((entries.len(), batch))
}
