//! The thin async shell around [`Pipeline`]: receives batches from the sources, stamps them
//! with the gateway clock, hands the output to the store writer, ticks the `silent` rule,
//! publishes the live view, and mirrors the counters into the metrics.
//!
//! Shutdown is by channel closure: when every source has dropped its sender, the loop ends,
//! the open windows are flushed, the last output is sent, and dropping the store sender lets
//! the writer commit and finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Pipeline, RuleSet};
use crate::live::{LiveSnapshot, PipelineCounters};
use crate::metrics::{Metrics, ReasonLabel};
use crate::model::{Batch, now_ns};
use crate::store::{Store, WriteBatch};

/// At most this many queued batches are processed before the output is considered for the
/// store, so that a full input queue cannot delay the output without bound.
const MAX_BATCHES_PER_ROUND: usize = 64;
/// Output waits at most this long for more readings before it goes to the store writer. The
/// writer commits every `store.commit_interval_ms` (200 ms by default) anyway; sending each
/// source batch (about ten MQTT messages under load) on its own made the pipeline build a
/// window checkpoint per reading and the writer coalesce thousands of tiny outputs.
const OUTPUT_DELAY: Duration = Duration::from_millis(10);
/// Output this large goes to the writer at once (bounded memory, prompt commits under load).
const OUTPUT_MAX_RECORDS: usize = 16_384;

/// A change the pipeline applies between two batches (a config reload).
pub enum Control {
    /// Replace the rules ([`Pipeline::replace_rules`]); the answer is how many active
    /// episodes were cleared because their rule no longer applies.
    Rules(RuleSet, oneshot::Sender<usize>),
}

pub struct PipelineTask {
    pub pipeline: Pipeline,
    pub input: mpsc::Receiver<Batch>,
    pub control: mpsc::Receiver<Control>,
    pub output: mpsc::Sender<WriteBatch>,
    pub live: watch::Sender<Arc<LiveSnapshot>>,
    pub metrics: Arc<Metrics>,
    pub snapshot_interval: Duration,
    /// Where redelivered batches are checked for readings already stored (None: no check).
    pub dedup: Option<Store>,
}

impl PipelineTask {
    pub async fn run(self) {
        let PipelineTask {
            mut pipeline,
            mut input,
            mut control,
            output,
            live,
            metrics,
            snapshot_interval,
            dedup,
        } = self;
        let dedup = |mut batch: Batch| -> Batch {
            if let (true, Some(store)) = (batch.redelivered, &dedup) {
                match store.retain_unstored(&mut batch.readings) {
                    Ok(n) => metrics.duplicates_dropped.inc_by(n as u64),
                    Err(error) => tracing::warn!(
                        %error,
                        "could not check redelivered readings against the store; keeping them"
                    ),
                }
            }
            batch
        };
        let mut published = PipelineCounters::default();
        let mut tick = tokio::time::interval(snapshot_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the output held back since the last send is due (None: nothing held back).
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                batch = input.recv() => {
                    let Some(batch) = batch else { break };
                    let now = now_ns();
                    pipeline.ingest(dedup(batch), now);
                    for _ in 1..MAX_BATCHES_PER_ROUND {
                        match input.try_recv() {
                            Ok(batch) => pipeline.ingest(dedup(batch), now),
                            Err(_) => break,
                        }
                    }
                    metrics.pipeline_queue_batches.set(input.len() as i64);
                    if pipeline.pending_records() >= OUTPUT_MAX_RECORDS {
                        due = None;
                        if !send(&output, &mut pipeline).await {
                            break;
                        }
                    } else if due.is_none() {
                        due = Some(tokio::time::Instant::now() + OUTPUT_DELAY);
                    }
                }
                () = sleep_until(due), if due.is_some() => {
                    due = None;
                    if !send(&output, &mut pipeline).await {
                        break;
                    }
                }
                Some(Control::Rules(rules, done)) = control.recv() => {
                    let cleared = pipeline.replace_rules(rules, now_ns());
                    let _ = done.send(cleared);
                    live.send_replace(Arc::new(pipeline.snapshot(now_ns())));
                    if due.is_none() {
                        due = Some(tokio::time::Instant::now() + OUTPUT_DELAY);
                    }
                }
                _ = tick.tick() => {
                    metrics.liveness.beat_pipeline();
                    let now = now_ns();
                    pipeline.tick(now);
                    due = None;
                    if !send(&output, &mut pipeline).await {
                        break;
                    }
                    live.send_replace(Arc::new(pipeline.snapshot(now)));
                    mirror(&metrics, &mut published, pipeline.counters());
                }
            }
        }
        pipeline.flush();
        send(&output, &mut pipeline).await;
        let now = now_ns();
        live.send_replace(Arc::new(pipeline.snapshot(now)));
        mirror(&metrics, &mut published, pipeline.counters());
        tracing::info!(
            readings = pipeline.counters().readings,
            rollups = pipeline.counters().rollups,
            "pipeline flushed its open windows"
        );
    }
}

/// Sleeps until `due`; never called without one (the `select!` arm is disabled then).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Sends the pending output to the store writer; waits when the writer is behind
/// (backpressure up to the sources). False when the writer is gone.
async fn send(output: &mpsc::Sender<WriteBatch>, pipeline: &mut Pipeline) -> bool {
    let batch = pipeline.take_output();
    if batch.is_empty() {
        return true;
    }
    if output.send(batch).await.is_err() {
        tracing::error!("store writer stopped; the pipeline stops too");
        return false;
    }
    true
}

/// Adds the counter increments since the last call to the Prometheus counters.
fn mirror(m: &Metrics, last: &mut PipelineCounters, now: &PipelineCounters) {
    m.pipeline_readings.inc_by(now.readings - last.readings);
    m.pipeline_flagged
        .get_or_create(&ReasonLabel {
            reason: "not_finite".into(),
        })
        .inc_by(now.not_finite - last.not_finite);
    m.pipeline_flagged
        .get_or_create(&ReasonLabel {
            reason: "time_suspect".into(),
        })
        .inc_by(now.time_suspect - last.time_suspect);
    m.late_corrected
        .inc_by(now.late_corrected - last.late_corrected);
    m.late_dropped.inc_by(now.late_dropped - last.late_dropped);
    m.rollups_emitted.inc_by(now.rollups - last.rollups);
    m.events_raised
        .inc_by(now.events_raised - last.events_raised);
    m.events_cleared
        .inc_by(now.events_cleared - last.events_cleared);
    *last = now.clone();
}
