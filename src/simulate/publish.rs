//! Pacing and progress: the publisher queues the messages due by the clock, the event loop's
//! task reports what was written and acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::readings::{Sensors, payload, sensor_id};
use super::{MqttArgs, Stop, TimestampPrecision};

/// What the event loop has seen, shared with the publisher.
#[derive(Default)]
pub(super) struct Progress {
    /// PUBLISH packets written to the socket (rumqttc flushes before reporting them).
    pub(super) published: AtomicU64,
    /// PUBACKs received.
    pub(super) acked: AtomicU64,
    /// 1 once DISCONNECT is written.
    pub(super) disconnected: AtomicU64,
    /// Nanoseconds from the start to the last publish written or PUBACK received.
    pub(super) last_event_ns: AtomicU64,
    /// The error that ended the connection.
    pub(super) error: Mutex<Option<String>>,
    pub(super) changed: Notify,
}

impl Progress {
    /// Records that something was written or acknowledged now.
    pub(super) fn mark(&self, start: Instant) {
        let ns = start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.last_event_ns.fetch_max(ns, Ordering::AcqRel);
    }

    /// Returns once `done` holds. The event loop notifies after every change; `notify_one`
    /// keeps a permit, so a change between the check and the wait is not missed.
    pub(super) async fn wait_until(&self, done: impl Fn(&Progress) -> bool) {
        while !done(self) {
            self.changed.notified().await;
        }
    }
}

/// The event loop's task: counts what was written and acknowledged, and stops at the first
/// error (cancelling `lost`) or once DISCONNECT is written. Never reconnects.
pub(super) async fn poll(
    mut eventloop: EventLoop,
    start: Instant,
    progress: Arc<Progress>,
    lost: CancellationToken,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                match event {
                    Event::Outgoing(Outgoing::Publish(_)) => {
                        progress.published.fetch_add(1, Ordering::AcqRel);
                        progress.mark(start);
                    }
                    Event::Incoming(Packet::PubAck(_)) => {
                        progress.acked.fetch_add(1, Ordering::AcqRel);
                        progress.mark(start);
                    }
                    Event::Outgoing(Outgoing::Disconnect) => {
                        progress.disconnected.store(1, Ordering::Release);
                        progress.changed.notify_one();
                        return;
                    }
                    _ => continue,
                }
                progress.changed.notify_one();
            }
            Err(e) => {
                *progress.error.lock().expect("error lock") = Some(e.to_string());
                lost.cancel();
                progress.changed.notify_one();
                return;
            }
        }
    }
}

/// Makes the messages and queues them at the requested pace.
pub(super) struct Publisher {
    pub(super) qos: QoS,
    pub(super) rate: f64,
    pub(super) count: u64,
    pub(super) topics: Vec<String>,
    pub(super) sensors: Sensors,
    pub(super) anomaly_every: Option<Duration>,
    pub(super) precision: TimestampPrecision,
    /// Messages handed to the client.
    pub(super) queued: u64,
    pub(super) anomalies: u64,
}

impl Publisher {
    pub(super) fn new(args: &MqttArgs, qos: QoS) -> Self {
        let n = args.sensors as usize;
        Publisher {
            qos,
            rate: args.rate,
            count: args.count,
            topics: (0..n)
                .map(|i| format!("{}/{}", args.topic_prefix, sensor_id(i)))
                .collect(),
            sensors: Sensors::new(n, args.seed),
            anomaly_every: args.anomaly_every.map(Duration::from_secs_f64),
            precision: args.timestamp_precision,
            queued: 0,
            anomalies: 0,
        }
    }

    /// Queues messages until `count`, `deadline` or a lost connection.
    pub(super) async fn publish_all(
        &mut self,
        client: &AsyncClient,
        start: Instant,
        deadline: Instant,
        lost: &CancellationToken,
    ) -> Stop {
        let mut next_anomaly = self.anomaly_every.map(|every| start + every);
        // Sensor that reports the pending spike with its next message.
        let mut spike_on: Option<usize> = None;
        while self.queued < self.count {
            let now = Instant::now();
            if now >= deadline {
                return Stop::Duration;
            }
            let due = due_by(self.rate, now - start, self.count);
            while self.queued < due {
                let now = Instant::now();
                if now >= deadline {
                    return Stop::Duration;
                }
                if let (Some(at), Some(every)) = (next_anomaly, self.anomaly_every)
                    && now >= at
                    && spike_on.is_none()
                {
                    spike_on = Some(self.sensors.pick());
                    next_anomaly = Some(at + every);
                }
                let sensor = (self.queued % self.topics.len() as u64) as usize;
                let spike = spike_on == Some(sensor);
                if spike {
                    spike_on = None;
                    self.anomalies += 1;
                }
                let values = self
                    .sensors
                    .reading(sensor, (now - start).as_secs_f64(), spike);
                let payload = payload(
                    sensor,
                    time::OffsetDateTime::now_utc(),
                    self.precision,
                    values,
                );
                let publish = client.publish(self.topics[sensor].clone(), self.qos, false, payload);
                // Publish first: it is ready at once unless the request queue is full (the
                // broker is behind), and then the deadline and a lost connection end the wait.
                tokio::select! {
                    biased;
                    result = publish => {
                        if result.is_err() {
                            // Only when the event loop is gone, which `lost` reports.
                            return Stop::Error;
                        }
                    }
                    () = lost.cancelled() => return Stop::Error,
                    () = tokio::time::sleep_until(deadline) => return Stop::Duration,
                }
                self.queued += 1;
            }
            if self.queued < self.count {
                // The next message's due time; the timer rounds it up to the next
                // millisecond, which is what makes the bursts.
                let next = start + Duration::from_secs_f64(self.queued as f64 / self.rate);
                tokio::select! {
                    () = lost.cancelled() => return Stop::Error,
                    () = tokio::time::sleep_until(next.min(deadline)) => {}
                }
            }
        }
        Stop::Count
    }
}

/// How many messages are due `elapsed` after the start at `rate` msg/s (message `i` is due at
/// `i / rate`), at most `count`; all of them at rate 0.
pub(super) fn due_by(rate: f64, elapsed: Duration, count: u64) -> u64 {
    if rate <= 0.0 {
        return count;
    }
    let due = (elapsed.as_secs_f64() * rate).floor() + 1.0;
    if due >= count as f64 {
        count
    } else {
        due as u64
    }
}
