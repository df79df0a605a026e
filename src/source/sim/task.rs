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
pub async fn run(
    config: SimConfig,
    name: Arc<str>,
    start: TimeNs,
    tx: mpsc::Sender<Batch>,
    health: SourceHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut generator = SimGenerator::new(&config, start);
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
        let batch = Batch {
            source: name.clone(),
            readings: tick.readings,
        };
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
