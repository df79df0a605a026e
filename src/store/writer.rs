//! The store writer: the one task that writes to the store. It coalesces the pipeline's
//! batches into few large commits, runs retention on a timer, and keeps the store metrics.
//!
//! Invariants:
//! - A commit happens at the latest `commit_interval_ms` after the first record it holds was
//!   received, earlier once `commit_max_records` are pending, and once more when the channel
//!   closes. So a power cut loses at most about `commit_interval_ms` of accepted data.
//! - A batch that a source waits for (it carries commit marks) is committed at the latest
//!   `ack_commit_interval_ms` after it was received, so upstream acknowledgements flow.
//! - A failed commit never drops its batch: it is logged at ERROR, counted in `store_errors`,
//!   and retried with exponential backoff (capped at 5 s) until it succeeds. Meanwhile the
//!   channel is not read, so the pipeline waits (backpressure) instead of losing data.
//! - Commits and retention run on `spawn_blocking`; no redb transaction is held across an
//!   `.await`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

use super::{CommitReport, RetentionReport, Store, StoreError, StoreStats, WriteBatch};
use crate::config::StoreConfig;
use crate::metrics::{Metrics, TableLabel};
use crate::model::{TimeNs, now_ns};

/// Runs until `rx` closes, then commits what is pending and returns.
pub async fn run_writer(
    store: Store,
    rx: mpsc::Receiver<WriteBatch>,
    config: StoreConfig,
    metrics: Arc<Metrics>,
) {
    run(store, rx, config, metrics, Backoff::default()).await;
}

/// What the writer needs from the store. A trait only so that tests can put a store that
/// fails on purpose behind the writer; the daemon always uses [`Store`].
pub(super) trait Target: Clone + Send + Sync + 'static {
    fn write(&self, batch: &WriteBatch) -> Result<CommitReport, StoreError>;
    fn apply_retention(&self, now: TimeNs) -> Result<RetentionReport, StoreError>;
    fn stats(&self) -> Result<StoreStats, StoreError>;
    fn outbox_len(&self) -> Result<u64, StoreError>;
    fn file_bytes(&self) -> Result<u64, StoreError>;
}

impl Target for Store {
    fn write(&self, batch: &WriteBatch) -> Result<CommitReport, StoreError> {
        Store::write(self, batch)
    }
    fn apply_retention(&self, now: TimeNs) -> Result<RetentionReport, StoreError> {
        Store::apply_retention(self, now)
    }
    fn stats(&self) -> Result<StoreStats, StoreError> {
        Store::stats(self)
    }
    fn outbox_len(&self) -> Result<u64, StoreError> {
        Store::outbox_len(self)
    }
    fn file_bytes(&self) -> Result<u64, StoreError> {
        Store::file_bytes(self)
    }
}

/// Delays between retries of a failed commit. No jitter: there is one writer and a local
/// file, so there is no crowd of clients whose retries would need spreading out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

pub(super) async fn run<T: Target>(
    target: T,
    mut rx: mpsc::Receiver<WriteBatch>,
    config: StoreConfig,
    metrics: Arc<Metrics>,
    backoff: Backoff,
) {
    let interval = Duration::from_millis(config.commit_interval_ms.max(1));
    let ack_interval = Duration::from_millis(config.ack_commit_interval_ms.max(1)).min(interval);
    let max_records = config.commit_max_records.max(1);
    let retention_every = Duration::from_secs(config.retention_interval_secs.max(1));
    // Retention runs once at start, so that a store that was off for a while is trimmed
    // before it grows further.
    let mut next_retention = Instant::now();
    let mut pending = WriteBatch::default();
    let mut deadline: Option<Instant> = None;
    let mut load = LoadMeter::new();
    // Proof of life for systemd's watchdog while there is nothing to commit.
    let mut beat = tokio::time::interval(crate::liveness::WRITER_BEAT);
    loop {
        tokio::select! {
            received = rx.recv() => {
                let Some(batch) = received else { break };
                if batch.is_empty() {
                    continue;
                }
                let now = Instant::now();
                let mut due = *deadline.get_or_insert(now + interval);
                if !batch.acks.is_empty() && now + ack_interval < due {
                    due = now + ack_interval;
                    deadline = Some(due);
                }
                pending.append(batch);
                // Checked here too: under a steady stream `recv` is always ready and could
                // otherwise keep winning over the deadline.
                if pending.len() >= max_records || Instant::now() >= due {
                    commit(&target, std::mem::take(&mut pending), &metrics, backoff, &mut load).await;
                    deadline = None;
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                commit(&target, std::mem::take(&mut pending), &metrics, backoff, &mut load).await;
                deadline = None;
            }
            _ = beat.tick() => metrics.liveness.beat_writer(),
            () = sleep_until(next_retention) => {
                retention(&target, &metrics).await;
                next_retention = Instant::now() + retention_every;
            }
        }
    }
    if !pending.is_empty() {
        commit(&target, pending, &metrics, backoff, &mut load).await;
    }
    tracing::info!("store writer stopped: input closed, everything committed");
}

/// Committing at least this many records per second counts as heavy load for the allocator
/// ([`crate::os::allocator_load`]). 1,000 sim sensors (3,000 readings/s) commit about 6,000
/// records/s (each reading and the window checkpoint it changed); the MQTT bench at full speed
/// several hundred thousand.
const HEAVY_RECORDS_PER_SEC: f64 = 50_000.0;

/// Records committed since `since`; once a second it tells the allocator whether the load is
/// heavy.
struct LoadMeter {
    since: Instant,
    records: usize,
}

impl LoadMeter {
    fn new() -> Self {
        LoadMeter {
            since: Instant::now(),
            records: 0,
        }
    }

    fn committed(&mut self, records: usize) {
        self.records += records;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = self.records as f64 / elapsed.as_secs_f64();
            crate::os::allocator_load(rate >= HEAVY_RECORDS_PER_SEC);
            *self = LoadMeter::new();
        }
    }
}

/// What one successful commit reports back from the blocking thread.
struct Committed {
    report: CommitReport,
    seconds: f64,
    outbox_len: Option<u64>,
    file_bytes: Option<u64>,
}

/// Commits `batch`, retrying until it succeeds.
async fn commit<T: Target>(
    target: &T,
    mut batch: WriteBatch,
    metrics: &Metrics,
    backoff: Backoff,
    load: &mut LoadMeter,
) {
    if batch.records() == 0 {
        // Only marks (every reading of those batches was a duplicate or bad): everything
        // before them is committed already.
        batch.release_acks();
        return;
    }
    let records = batch.records();
    let mut delay = backoff.initial;
    loop {
        let t = target.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = t.write(&batch).map(|report| Committed {
                report,
                seconds: started.elapsed().as_secs_f64(),
                outbox_len: t.outbox_len().ok(),
                file_bytes: t.file_bytes().ok(),
            });
            (batch, result)
        })
        .await;
        match joined {
            Ok((mut done, Ok(committed))) => {
                load.committed(records);
                metrics.liveness.beat_writer();
                done.release_acks();
                record_commit(metrics, &committed);
                return;
            }
            Ok((back, Err(error))) => {
                // A failing store is not a wedged writer: a restart would only drop the
                // batch it keeps retrying.
                metrics.liveness.beat_writer();
                batch = back;
                metrics.store_errors.inc();
                tracing::error!(
                    %error,
                    records = batch.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "store commit failed; keeping the batch and retrying"
                );
                sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
            Err(error) => {
                // Only a panic inside the store gets here (the runtime is not shutting down
                // while this task awaits); the batch went down with that thread.
                metrics.store_errors.inc();
                tracing::error!(%error, "store commit panicked; its batch is lost");
                return;
            }
        }
    }
}

fn record_commit(metrics: &Metrics, committed: &Committed) {
    let report = &committed.report;
    metrics.store_commits.inc();
    metrics.store_commit_seconds.observe(committed.seconds);
    for (table, n) in [
        ("raw", report.raw_written),
        ("rollups", report.rollups_inserted + report.rollups_merged),
        ("events", report.events_written),
        ("outbox", report.outbox_appended),
    ] {
        if n > 0 {
            metrics
                .store_written
                .get_or_create(&TableLabel {
                    table: table.into(),
                })
                .inc_by(n);
        }
    }
    if let Some(n) = committed.outbox_len {
        metrics.outbox_entries.set(gauge(n));
    }
    if let Some(n) = committed.file_bytes {
        metrics.store_file_bytes.set(gauge(n));
    }
    tracing::debug!(?report, seconds = committed.seconds, "store commit");
}

/// Runs retention and refreshes the size gauges. A failure is logged and counted; the next
/// run tries again.
async fn retention<T: Target>(target: &T, metrics: &Metrics) {
    let t = target.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let report = t.apply_retention(now_ns());
        (report, t.stats())
    })
    .await;
    let (report, stats) = match joined {
        Ok(results) => results,
        Err(error) => {
            metrics.store_errors.inc();
            tracing::error!(%error, "store retention panicked");
            return;
        }
    };
    match report {
        Ok(report) => {
            for (table, n) in [
                ("raw", report.raw_removed),
                ("rollups", report.rollups_removed),
                ("events", report.events_removed),
                ("outbox", report.outbox_removed),
            ] {
                if n > 0 {
                    metrics
                        .store_removed
                        .get_or_create(&TableLabel {
                            table: table.into(),
                        })
                        .inc_by(n);
                }
            }
            tracing::debug!(?report, "store retention");
        }
        Err(error) => {
            metrics.store_errors.inc();
            tracing::error!(%error, "store retention failed; will retry at the next interval");
        }
    }
    match stats {
        Ok(stats) => {
            metrics.store_file_bytes.set(gauge(stats.file_bytes));
            metrics.store_stored_bytes.set(gauge(stats.stored_bytes));
            metrics.outbox_entries.set(gauge(stats.outbox_entries));
        }
        Err(error) => {
            metrics.store_errors.inc();
            tracing::error!(%error, "reading store stats failed");
        }
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::model::SeriesKey;
    use crate::store::tests::{reading, test_config};

    /// `n` readings of one series stamped now (the writer runs retention against the real
    /// clock when it starts, so test data must be recent).
    fn batch_of(n: usize, first: usize) -> WriteBatch {
        let now = now_ns();
        WriteBatch {
            raw: (first..first + n)
                .map(|i| reading("w-1", "t", now + i as i64, i as f64))
                .collect(),
            ..WriteBatch::default()
        }
    }

    fn stored(store: &Store) -> usize {
        store
            .raw(&SeriesKey::new("w-1", "t"), 0, i64::MAX, usize::MAX)
            .unwrap()
            .len()
    }

    /// Polls until `n` readings are stored; false if that takes longer than `within`.
    async fn stored_within(store: &Store, n: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if stored(store) >= n {
                return true;
            }
            sleep(Duration::from_millis(5)).await;
        }
        false
    }

    fn setup(interval_ms: u64, max_records: usize) -> (tempfile::TempDir, Store, StoreConfig) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            commit_interval_ms: interval_ms,
            commit_max_records: max_records,
            retention_interval_secs: 3_600,
            ..test_config(dir.path())
        };
        let store = Store::open(&config).unwrap();
        (dir, store, config)
    }

    #[tokio::test]
    async fn writer_commits_after_the_commit_interval_while_the_channel_stays_open() {
        let (_dir, store, config) = setup(50, 1_000_000);
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_writer(store.clone(), rx, config, metrics.clone()));
        tx.send(batch_of(10, 0)).await.unwrap();
        tx.send(batch_of(5, 10)).await.unwrap();
        assert!(stored_within(&store, 15, Duration::from_secs(5)).await);
        // The data is visible as soon as redb committed; the writer counts the commit just
        // after, so wait (bounded) for the counter rather than racing it.
        for _ in 0..100 {
            if metrics.store_commits.get() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.store_commits.get(), 1);
        drop(tx);
        task.await.unwrap();
        assert_eq!(metrics.store_commits.get(), 1);
        let raw = metrics.store_written.get_or_create(&TableLabel {
            table: "raw".into(),
        });
        assert_eq!(raw.get(), 15);
    }

    #[tokio::test]
    async fn writer_commits_early_once_max_records_are_pending() {
        let (_dir, store, config) = setup(3_600_000, 100);
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_writer(store.clone(), rx, config, metrics.clone()));
        tx.send(batch_of(60, 0)).await.unwrap();
        tx.send(batch_of(40, 60)).await.unwrap();
        assert!(stored_within(&store, 100, Duration::from_secs(5)).await);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn writer_commits_what_is_pending_when_the_channel_closes() {
        let (_dir, store, config) = setup(3_600_000, 1_000_000);
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_writer(store.clone(), rx, config, metrics.clone()));
        tx.send(batch_of(10, 0)).await.unwrap();
        tx.send(batch_of(10, 10)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(stored(&store), 20);
        assert_eq!(metrics.store_commits.get(), 1);
        assert_eq!(metrics.store_errors.get(), 0);
    }

    /// A store whose first `failures` commits fail, as a full disk or an I/O error would.
    #[derive(Clone)]
    struct Flaky {
        store: Store,
        failures: Arc<AtomicU32>,
    }

    impl Target for Flaky {
        fn write(&self, batch: &WriteBatch) -> Result<CommitReport, StoreError> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(StoreError::Corrupt {
                    table: "raw",
                    reason: "injected failure".into(),
                });
            }
            self.store.write(batch)
        }
        fn apply_retention(&self, now: TimeNs) -> Result<RetentionReport, StoreError> {
            self.store.apply_retention(now)
        }
        fn stats(&self) -> Result<StoreStats, StoreError> {
            self.store.stats()
        }
        fn outbox_len(&self) -> Result<u64, StoreError> {
            self.store.outbox_len()
        }
        fn file_bytes(&self) -> Result<u64, StoreError> {
            self.store.file_bytes()
        }
    }

    #[tokio::test]
    async fn writer_retries_a_failed_commit_without_losing_the_batch() {
        let (_dir, store, config) = setup(10, 1_000_000);
        let metrics = Arc::new(Metrics::new());
        let flaky = Flaky {
            store: store.clone(),
            failures: Arc::new(AtomicU32::new(3)),
        };
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        };
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(flaky.clone(), rx, config, metrics.clone(), backoff));
        tx.send(batch_of(25, 0)).await.unwrap();
        assert!(stored_within(&store, 25, Duration::from_secs(5)).await);
        drop(tx);
        task.await.unwrap();
        assert_eq!(stored(&store), 25);
        assert_eq!(flaky.failures.load(Ordering::SeqCst), 0);
        assert_eq!(metrics.store_errors.get(), 3);
        assert_eq!(metrics.store_commits.get(), 1);
    }

    #[tokio::test]
    async fn marks_are_released_only_after_the_commit_that_holds_their_readings() {
        let (_dir, store, config) = setup(10, 1_000_000);
        let metrics = Arc::new(Metrics::new());
        let flaky = Flaky {
            store: store.clone(),
            failures: Arc::new(AtomicU32::new(2)),
        };
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
        };
        let mut tracker = crate::ack::CommitTracker::default();
        let mut committed = tracker.subscribe();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(flaky.clone(), rx, config, metrics.clone(), backoff));
        let mut batch = batch_of(30, 0);
        batch.acks.push(tracker.mark());
        tx.send(batch).await.unwrap();
        // Every time the committed sequence moves, the readings must already be stored.
        tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|c| *c >= 1))
            .await
            .expect("the mark is released")
            .unwrap();
        assert_eq!(
            stored(&store),
            30,
            "released before its readings were durable"
        );
        assert_eq!(
            metrics.store_errors.get(),
            2,
            "both failed commits held the mark"
        );
        // A batch of marks only (its readings were all duplicates) is released too.
        let only_marks = WriteBatch {
            acks: vec![tracker.mark()],
            ..WriteBatch::default()
        };
        tx.send(only_marks).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|c| *c >= 2))
            .await
            .expect("a batch of marks only is released")
            .unwrap();
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_with_marks_is_committed_within_the_ack_interval() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            commit_interval_ms: 3_600_000,
            ack_commit_interval_ms: 20,
            commit_max_records: 1_000_000,
            retention_interval_secs: 3_600,
            ..test_config(dir.path())
        };
        let store = Store::open(&config).unwrap();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_writer(store.clone(), rx, config, metrics.clone()));
        tx.send(batch_of(10, 0)).await.unwrap();
        let mut tracker = crate::ack::CommitTracker::default();
        let mut committed = tracker.subscribe();
        let mut batch = batch_of(5, 10);
        batch.acks.push(tracker.mark());
        tx.send(batch).await.unwrap();
        // Without the mark, these would wait an hour for the commit interval.
        tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|c| *c >= 1))
            .await
            .expect("committed within the ack interval")
            .unwrap();
        assert_eq!(stored(&store), 15);
        drop(tx);
        task.await.unwrap();
    }
}
