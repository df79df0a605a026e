//! The task around the generator: paces the ticks, sends one [`Batch`] per tick into the
//! pipeline's channel, stops after `ticks`, on shutdown or when the pipeline is gone, and
//! reports health and the `source_readings` metric.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::SimConfig;
use crate::live::SourceHandle;
use crate::metrics::{Metrics, SourceLabel};
use crate::model::{Batch, TimeNs, format_time, now_ns, parse_time};

use super::faults::interval_ns;
use super::generator::SimGenerator;

/// Event time of tick 0: the configured `start_time`, or `now` rounded down to a multiple of
/// the interval, so that ticks fall on round times and windows line up with them. Validation
/// rejects an unparseable `start_time`; should one get here anyway, `now` is used.
pub fn start_time(config: &SimConfig, now: TimeNs) -> TimeNs {
    config
        .start_time
        .as_deref()
        .and_then(parse_time)
        .unwrap_or_else(|| now - now.rem_euclid(interval_ns(config)))
}

/// Why the task ended.
#[derive(Debug)]
enum Stop {
    /// All configured `ticks` were delivered.
    Done,
    Shutdown,
    /// The pipeline dropped its receiver.
    ReceiverGone,
}

/// Runs the simulated source until it has sent `ticks` batches, `shutdown` is cancelled or
/// the receiver is dropped; health goes to `up` at once and `stopped` at the end.
///
/// `realtime = false`: ticks go out as fast as `tx` accepts them, waiting whenever it is full;
/// nothing is skipped.
///
/// `realtime = true`: a tick is sent when the wall clock reaches its event time. Ticks already
/// due (a `start_time` in the past) are sent at once, as fast as `tx` accepts them, until the
/// source has caught up with the clock; from then on a tokio interval paces the rest and the
/// wall clock is not read again, so a clock step (NTP) does not disturb the pace. The interval
/// uses `MissedTickBehavior::Delay`: after the pipeline held a tick back, the following ticks
/// keep one interval between them rather than bursting into a pipeline that has just shown it
/// is behind. Readings keep their event time either way; they only arrive later.
///
/// Cancellation is noticed while waiting for a tick and while waiting on a full channel.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: SimConfig,
    name: Arc<str>,
    tags: crate::model::Tags,
    start: TimeNs,
    tx: mpsc::Sender<Batch>,
    health: SourceHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut generator = SimGenerator::new(&config, start);
    let mut announcer = crate::ingest::tags::TagAnnouncer::new(&tags, false);
    // Resolved once: looking the label up per batch would allocate its String every tick.
    let delivered = metrics
        .source_readings
        .get_or_create(&SourceLabel {
            source: name.to_string(),
        })
        .clone();
    let period = Duration::from_nanos(generator.interval_ns().unsigned_abs());
    let mut clock: Option<Interval> = None;

    health.update(|h| h.state = "up".into());
    info!(
        source = %name,
        sensors = config.sensors,
        interval_ms = config.interval_ms,
        realtime = config.realtime,
        start = %format_time(start),
        "sim source started"
    );

    let stop = loop {
        if config
            .ticks
            .is_some_and(|limit| generator.next_index() >= limit)
        {
            break Stop::Done;
        }
        if config.realtime {
            if clock.is_none() {
                clock = clock_from(generator.next_time(), period);
            }
            if let Some(clock) = &mut clock {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break Stop::Shutdown,
                    () = tx.closed() => break Stop::ReceiverGone,
                    _ = clock.tick() => {}
                }
            }
        }

        let tick = generator.tick();
        let count = tick.readings.len() as u64;
        let mut batch = Batch::new(name.clone(), tick.readings);
        // The source's static tags, announced once per sensor (with its first reading).
        announcer.announce(&batch.readings, Vec::new, &mut batch.tags);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Stop::Shutdown,
            sent = tx.send(batch) => if sent.is_err() {
                break Stop::ReceiverGone;
            },
        }
        delivered.inc_by(count);
        health.update(|h| {
            h.readings += count;
            h.last_success = Some(now_ns());
        });
    };

    health.update(|h| h.state = "stopped".into());
    let ticks = generator.next_index();
    match stop {
        Stop::ReceiverGone if !shutdown.is_cancelled() => {
            warn!(source = %name, ticks, "sim source stopped: the pipeline is gone")
        }
        stop => info!(source = %name, ticks, reason = ?stop, "sim source stopped"),
    }
}

/// An interval whose first tick fires when the wall clock reaches `due`, then every `period`;
/// `None` while `due` is already past, so the caller sends that tick at once (catch-up).
fn clock_from(due: TimeNs, period: Duration) -> Option<Interval> {
    let now = now_ns();
    if due <= now {
        return None;
    }
    let first = Instant::now() + Duration::from_nanos((due - now).unsigned_abs());
    let mut clock = tokio::time::interval_at(first, period);
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(clock)
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::live::{SourceHealth, SourceRegistry};
    use crate::model::NS_PER_SEC;
    use crate::source::sim::test_config;

    const START: TimeNs = 1_800_000_000 * NS_PER_SEC;

    /// What a sim task under test reports to, and its shutdown token.
    struct Harness {
        registry: SourceRegistry,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    }

    impl Harness {
        fn spawn(
            config: SimConfig,
            start: TimeNs,
            tx: mpsc::Sender<Batch>,
        ) -> (Self, JoinHandle<()>) {
            let harness = Harness {
                registry: SourceRegistry::default(),
                metrics: Arc::new(Metrics::new()),
                shutdown: CancellationToken::new(),
            };
            let task = tokio::spawn(run(
                config,
                "sim".into(),
                Default::default(),
                start,
                tx,
                harness.registry.register("sim", "sim"),
                harness.metrics.clone(),
                harness.shutdown.clone(),
            ));
            (harness, task)
        }

        fn health(&self) -> SourceHealth {
            self.registry.snapshot().remove(0)
        }

        fn delivered(&self) -> u64 {
            self.metrics
                .source_readings
                .get_or_create(&SourceLabel {
                    source: "sim".into(),
                })
                .get()
        }
    }

    /// Waits for the task to end; a task that does not stop within 5 s fails the test.
    async fn join(task: JoinHandle<()>) {
        timeout(Duration::from_secs(5), task)
            .await
            .expect("the task did not stop")
            .expect("the task panicked");
    }

    /// Receives batches until the channel closes, with the time each one arrived.
    async fn receive_all(rx: &mut mpsc::Receiver<Batch>) -> Vec<(Duration, Batch)> {
        let began = Instant::now();
        let mut received = Vec::new();
        while let Some(batch) = rx.recv().await {
            received.push((began.elapsed(), batch));
        }
        received
    }

    #[test]
    fn start_time_is_the_configured_time_or_now_rounded_down_to_the_interval() {
        let config = SimConfig {
            interval_ms: 250,
            ..test_config()
        };
        let now = START + 1_234_567_890;
        assert_eq!(start_time(&config, now), START + 1_000_000_000);
        assert_eq!(start_time(&config, START), START);
        let configured = SimConfig {
            start_time: Some("2026-11-26T10:00:00.1Z".into()),
            ..config
        };
        assert_eq!(
            start_time(&configured, now),
            parse_time("2026-11-26T10:00:00.1Z").unwrap()
        );
    }

    #[tokio::test]
    async fn delivers_exactly_the_configured_ticks_as_fast_as_received_then_stops() {
        let config = SimConfig {
            sensors: 4,
            ticks: Some(25),
            realtime: false,
            ..test_config()
        };
        let (tx, mut rx) = mpsc::channel(2);
        let (harness, task) = Harness::spawn(config.clone(), START, tx);
        let received = receive_all(&mut rx).await;
        join(task).await;

        assert_eq!(received.len(), 25);
        let mut expected = SimGenerator::new(&config, START);
        let mut total = 0;
        for (_, batch) in &received {
            assert_eq!(&*batch.source, "sim");
            assert_eq!(batch.readings, expected.tick().readings);
            total += batch.readings.len() as u64;
        }
        let health = harness.health();
        assert_eq!(health.state, "stopped");
        assert_eq!(health.readings, total);
        assert!(health.last_success.is_some());
        assert_eq!(harness.delivered(), total);
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_sends_each_tick_when_the_clock_reaches_it_then_stops() {
        let config = SimConfig {
            sensors: 2,
            ticks: Some(5),
            realtime: true,
            ..test_config()
        };
        let (tx, mut rx) = mpsc::channel(8);
        let start = start_time(&config, now_ns());
        let (harness, task) = Harness::spawn(config, start, tx);
        let received = receive_all(&mut rx).await;
        join(task).await;

        let arrivals: Vec<Duration> = received.iter().map(|(at, _)| *at).collect();
        assert_eq!(arrivals.len(), 5);
        // Tick 0 is due at once (start is now rounded down), tick 1 within a second.
        assert_eq!(arrivals[0], Duration::ZERO);
        assert!(arrivals[1] > Duration::ZERO && arrivals[1] <= Duration::from_secs(1));
        for pair in arrivals[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(1), "{arrivals:?}");
        }
        assert_eq!(harness.health().state, "stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_in_the_past_catches_up_at_once_then_follows_the_clock() {
        let config = SimConfig {
            sensors: 2,
            ticks: Some(40),
            realtime: true,
            ..test_config()
        };
        let (tx, mut rx) = mpsc::channel(4);
        let start = start_time(&config, now_ns()) - 30 * NS_PER_SEC;
        let (harness, task) = Harness::spawn(config, start, tx);
        let received = receive_all(&mut rx).await;
        join(task).await;

        let arrivals: Vec<Duration> = received.iter().map(|(at, _)| *at).collect();
        assert_eq!(arrivals.len(), 40);
        // Ticks 0..=30 were due when the task started: no waiting on the clock for them.
        assert!(arrivals[..31].iter().all(|at| at.is_zero()), "{arrivals:?}");
        // Ticks 31..40 are due over the next 9 seconds.
        assert!(arrivals[39] > Duration::from_secs(8), "{arrivals:?}");
        assert!(arrivals[39] <= Duration::from_secs(9), "{arrivals:?}");
        assert_eq!(harness.health().state, "stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_task_while_it_waits_on_a_full_channel() {
        let config = SimConfig {
            sensors: 3,
            ticks: None,
            realtime: false,
            ..test_config()
        };
        let (tx, rx) = mpsc::channel(1);
        let (harness, task) = Harness::spawn(config, START, tx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One batch fills the channel; the task holds the next one, waiting for room.
        assert_eq!(rx.len(), 1);
        assert!(!task.is_finished());
        assert_eq!(harness.health().state, "up");

        harness.shutdown.cancel();
        join(task).await;
        let health = harness.health();
        assert_eq!(health.state, "stopped");
        assert_eq!(
            health.readings, 9,
            "only the batch in the channel was delivered"
        );
        drop(rx);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_a_realtime_task_waiting_for_its_next_tick() {
        let config = SimConfig {
            sensors: 3,
            ticks: None,
            realtime: true,
            ..test_config()
        };
        let (tx, mut rx) = mpsc::channel(8);
        let start = start_time(&config, now_ns()) + 3600 * NS_PER_SEC;
        let (harness, task) = Harness::spawn(config, start, tx);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(rx.try_recv().is_err(), "a tick an hour ahead was sent");
        harness.shutdown.cancel();
        join(task).await;
        assert_eq!(harness.health().state, "stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_stops_when_the_receiver_is_gone() {
        for realtime in [false, true] {
            let config = SimConfig {
                sensors: 3,
                ticks: None,
                realtime,
                ..test_config()
            };
            let (tx, rx) = mpsc::channel(1);
            let start = start_time(&config, now_ns()) + 3600 * NS_PER_SEC;
            let (harness, task) = Harness::spawn(config, start, tx);
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(rx);
            join(task).await;
            assert_eq!(harness.health().state, "stopped", "realtime = {realtime}");
        }
    }
}
