//! The task of one Modbus source: owns the link, paces the poll groups, polls the units in
//! turn, sends one batch per successful unit poll, and reports health and metrics.
//!
//! Health details (in this order): `endpoint`, `units`, `poll_groups`, then for each unit N:
//! `uN.state` (starting / up / down), `uN.last_success`, `uN.consecutive_failures`,
//! `uN.last_error`, `uN.latency_ms` (round trip of the last answered request),
//! `uN.requests_per_cycle` (requests of its last poll), `uN.overruns`, `uN.bad_ranges`.
//! The source's state is `up` when every unit is up, `down` when none is, `degraded` otherwise.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Histogram;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ModbusPolling, SourceKind};
use crate::ingest::tags::TagAnnouncer;
use crate::live::{SourceHandle, SourceHealth};
use crate::metrics::{
    Counter, Gauge, Metrics, SourceLabel, SourceUnitLabel, SourceUnitReasonLabel,
};
use crate::modbus::Planner;
use crate::model::{Batch, Quality, Reading, SeriesKey, Tags, TimeNs, format_time};
use crate::source::backoff::jitter;

use super::link::{Endpoint, Link};
use super::poll::{Policy, UnitPoll, poll_unit};
use super::schedule::Schedule;
use super::unit::{Change, Status, UnitState};
use super::{PollPlan, bad_ranges, rtu_endpoint, tcp_endpoint};

/// A configured Modbus source, ready to run.
pub struct ModbusSource {
    name: Arc<str>,
    endpoint: Endpoint,
    polling: ModbusPolling,
    tags: Tags,
}

impl ModbusSource {
    /// The source of a `modbus_tcp` or `modbus_rtu` config; `None` for other kinds.
    pub fn new(name: &str, kind: &SourceKind, tags: &Tags) -> Option<Self> {
        let (endpoint, polling) = match kind {
            SourceKind::ModbusTcp(c) => (tcp_endpoint(c), c.polling.clone()),
            SourceKind::ModbusRtu(c) => (rtu_endpoint(c), c.polling.clone()),
            _ => return None,
        };
        Some(ModbusSource {
            name: name.into(),
            endpoint,
            polling,
            tags: tags.clone(),
        })
    }

    /// Polls until `shutdown` is cancelled or the pipeline is gone.
    pub async fn run(
        self,
        tx: mpsc::Sender<Batch>,
        health: SourceHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let ModbusSource {
            name,
            endpoint,
            polling,
            tags,
        } = self;
        let plan = PollPlan::new(&polling);
        let timeout = Duration::from_millis(polling.timeout_ms.max(1));
        let mut link = Link::new(endpoint.clone(), timeout);
        let mut units: Vec<Unit> = polling
            .units
            .iter()
            .map(|&id| Unit::new(&name, id, &polling, &plan, &metrics))
            .collect();
        let delivered = metrics.source_readings.get_or_create(&SourceLabel {
            source: name.to_string(),
        });
        let errors = metrics.source_errors.get_or_create(&SourceLabel {
            source: name.to_string(),
        });
        let seconds = metrics.modbus_request_seconds.get_or_create(&SourceLabel {
            source: name.to_string(),
        });
        let mut announcer = TagAnnouncer::new(&tags, false);

        health.update(|h| {
            h.state = "connecting".into();
            h.set_detail("endpoint", endpoint.to_string());
            h.set_detail("units", unit_list(&polling.units));
            h.set_detail("poll_groups", groups_detail(&plan));
            for unit in &units {
                unit.report(h);
            }
        });
        info!(
            source = %name,
            endpoint = %endpoint,
            units = %unit_list(&polling.units),
            groups = %groups_detail(&plan),
            "modbus source started"
        );

        let mut schedule = Schedule::new(&plan.intervals, Instant::now());
        'run: loop {
            let Some(next) = schedule.next_tick() else {
                // No points at all (validation refuses that); nothing to poll.
                shutdown.cancelled().await;
                break;
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                () = sleep_until(next) => {}
            }
            let due = schedule.due(Instant::now());
            for unit in &mut units {
                if !unit.state.due(Instant::now()) {
                    continue;
                }
                let policy = Policy {
                    attempts: unit.state.attempts(),
                    stop_on_failure: true,
                };
                let poll = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'run,
                    poll = poll_unit(&mut link, unit.id, &mut unit.planners, &due, policy) => poll,
                };
                let failed = poll.failure.is_some();
                unit.record(&name, &poll, &metrics, &seconds, &errors);
                health.update(|h| {
                    unit.report(h);
                    h.errors += poll.attempts.iter().filter(|a| a.error.is_some()).count() as u64;
                    if let Some(e) = &poll.failure {
                        h.last_error = Some(format!("unit {}: {e}", unit.id));
                    }
                });
                if failed {
                    continue;
                }
                let readings = unit.readings(&poll);
                if readings.is_empty() {
                    continue;
                }
                let count = readings.len() as u64;
                let mut batch = Batch::new(name.clone(), readings);
                announcer.announce(&batch.readings, Vec::new, &mut batch.tags);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'run,
                    sent = tx.send(batch) => if sent.is_err() {
                        break 'run;
                    },
                }
                delivered.inc_by(count);
                health.update(|h| {
                    h.readings += count;
                    h.last_success = Some(poll.time);
                });
            }
            // Ticks that passed during this cycle are skipped, and counted for every unit.
            let end = Instant::now();
            let skipped: u64 = due.iter().map(|&g| schedule.advance(g, end)).sum();
            if skipped > 0 {
                let first = units.first().is_some_and(|u| u.overruns == 0);
                for unit in &mut units {
                    unit.overruns += skipped;
                    unit.overruns_total.inc_by(skipped);
                }
                if first {
                    warn!(source = %name, skipped, "modbus poll overran its interval: ticks skipped (counted in edgewatch_modbus_overruns_total)");
                } else {
                    debug!(source = %name, skipped, "modbus poll overran its interval");
                }
            }
            health.update(|h| {
                for unit in &units {
                    unit.report(h);
                }
                h.state = source_state(&units).into();
            });
        }

        health.update(|h| h.state = "stopped".into());
        for unit in &units {
            unit.up.set(0);
        }
        info!(source = %name, "modbus source stopped");
    }
}

/// One polled unit of a source.
struct Unit {
    id: u8,
    label: SourceUnitLabel,
    keys: Vec<Vec<SeriesKey>>,
    planners: Vec<Planner>,
    state: UnitState,
    requests: Counter,
    up: Gauge,
    overruns_total: Counter,
    overruns: u64,
    last_success: Option<TimeNs>,
    last_error: Option<String>,
    latency: Option<Duration>,
    requests_last: usize,
}

impl Unit {
    fn new(
        source: &str,
        id: u8,
        polling: &ModbusPolling,
        plan: &PollPlan,
        metrics: &Metrics,
    ) -> Self {
        let label = SourceUnitLabel {
            source: source.to_string(),
            unit: id.to_string(),
        };
        let up = metrics.modbus_unit_up.get_or_create(&label);
        up.set(0);
        Unit {
            id,
            keys: plan.series_keys(&polling.sensor_id(source, id)),
            planners: plan.planners.clone(),
            state: UnitState::new(
                polling.retries,
                Duration::from_millis(polling.backoff_initial_ms),
                Duration::from_millis(polling.backoff_max_ms),
            ),
            requests: metrics.modbus_requests.get_or_create(&label),
            overruns_total: metrics.modbus_overruns.get_or_create(&label),
            up,
            label,
            overruns: 0,
            last_success: None,
            last_error: None,
            latency: None,
            requests_last: 0,
        }
    }

    /// Takes in the result of a poll: state, metrics, log lines on a change of state.
    fn record(
        &mut self,
        source: &str,
        poll: &UnitPoll,
        metrics: &Metrics,
        seconds: &Histogram,
        errors: &Counter,
    ) {
        self.requests.inc_by(poll.requests() as u64);
        self.requests_last = poll.requests();
        for attempt in &poll.attempts {
            if let Some(rt) = attempt.round_trip {
                seconds.observe(rt.as_secs_f64());
            }
            if let Some(e) = &attempt.error {
                debug!(source, unit = self.id, error = %e, "modbus request failed");
                errors.inc();
                metrics
                    .modbus_request_failures
                    .get_or_create(&SourceUnitReasonLabel {
                        source: self.label.source.clone(),
                        unit: self.label.unit.clone(),
                        reason: e.reason().into_owned(),
                    })
                    .inc();
                self.last_error = Some(e.to_string());
            }
        }
        if let Some(latency) = poll.latency() {
            self.latency = Some(latency);
        }
        let change = match &poll.failure {
            None => {
                self.last_success = Some(poll.time);
                self.state.succeeded()
            }
            Some(e) => {
                self.last_error = Some(e.to_string());
                self.state.failed(Instant::now(), jitter())
            }
        };
        match change {
            Some(Change::WentUp) => {
                self.up.set(1);
                info!(source, unit = self.id, "modbus unit up");
            }
            Some(Change::WentDown) => {
                self.up.set(0);
                let error = poll.failure.as_ref().map(ToString::to_string);
                warn!(source, unit = self.id, error, "modbus unit down");
            }
            None => {}
        }
    }

    /// The readings of a successful poll: every decoded value at the poll's time.
    fn readings(&self, poll: &UnitPoll) -> Vec<Reading> {
        poll.values()
            .filter_map(|(group, point, value)| {
                let series = self.keys.get(group)?.get(point)?.clone();
                Some(Reading {
                    series,
                    time: poll.time,
                    value,
                    quality: Quality::GOOD,
                })
            })
            .collect()
    }

    /// Writes this unit's health details.
    fn report(&self, h: &mut SourceHealth) {
        let p = format!("u{}", self.id);
        h.set_detail(&format!("{p}.state"), self.state.status().as_str());
        h.set_detail(
            &format!("{p}.last_success"),
            self.last_success
                .map_or_else(|| "never".to_string(), format_time),
        );
        h.set_detail(
            &format!("{p}.consecutive_failures"),
            self.state.consecutive_failures().to_string(),
        );
        h.set_detail(
            &format!("{p}.last_error"),
            self.last_error.clone().unwrap_or_else(|| "none".into()),
        );
        h.set_detail(
            &format!("{p}.latency_ms"),
            self.latency
                .map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
        );
        h.set_detail(
            &format!("{p}.requests_per_cycle"),
            self.requests_last.to_string(),
        );
        h.set_detail(&format!("{p}.overruns"), self.overruns.to_string());
        h.set_detail(&format!("{p}.bad_ranges"), bad_ranges(&self.planners));
    }
}

/// `up` when every unit is up, `down` when none is (and one was polled), `degraded` between,
/// `connecting` before any unit answered or failed.
fn source_state(units: &[Unit]) -> &'static str {
    let up = units
        .iter()
        .filter(|u| u.state.status() == Status::Up)
        .count();
    let down = units.iter().filter(|u| u.state.is_down()).count();
    if up == units.len() {
        "up"
    } else if up == 0 && down > 0 {
        "down"
    } else if up == 0 {
        "connecting"
    } else {
        "degraded"
    }
}

fn unit_list(units: &[u8]) -> String {
    units
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1000 ms: 5 points in 2 reads; 10000 ms: 1 point in 1 read`.
fn groups_detail(plan: &PollPlan) -> String {
    plan.intervals
        .iter()
        .zip(&plan.planners)
        .map(|(interval, planner)| {
            let points = planner.points().len();
            let reads = planner.reads().len();
            format!(
                "{} ms: {points} point{} in {reads} read{}",
                interval.as_millis(),
                if points == 1 { "" } else { "s" },
                if reads == 1 { "" } else { "s" },
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
