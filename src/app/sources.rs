//! The daemon's sources: one task each, with its own stop token (a child of the daemon's
//! shutdown), so that a config reload can stop, start or restart one source without touching
//! the others. The `http` source is the exception: it lives in the web's router, so a change
//! to it waits for a restart.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{SourceConfig, SourceKind};
use crate::live::{SourceHandle, SourceRegistry};
use crate::metrics::Metrics;
use crate::model::{Batch, now_ns};
use crate::source::modbus::ModbusSource;
use crate::source::{mqtt, sim};

/// How long a reload waits for a stopped source to hand over its last readings and end.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A source ready to run: everything that can fail was done when it was prepared.
pub(super) enum Prepared {
    Sim,
    Mqtt(Box<mqtt::MqttSource>),
    Modbus(Box<ModbusSource>),
}

/// Builds a source's client (`http` sources are built by the web's ingest handle instead).
pub(super) fn prepare(source: &SourceConfig, gateway_id: &str) -> anyhow::Result<Prepared> {
    Ok(match &source.kind {
        SourceKind::Sim(_) | SourceKind::Http(_) => Prepared::Sim,
        SourceKind::Mqtt(mqtt_config) => Prepared::Mqtt(Box::new(
            mqtt::MqttSource::new(&source.name, mqtt_config, gateway_id, &source.tags)
                .with_context(|| format!("source {}", source.name))?,
        )),
        // One task per TCP connection or serial port (src/source/modbus/).
        SourceKind::ModbusTcp(_) | SourceKind::ModbusRtu(_) => Prepared::Modbus(Box::new(
            ModbusSource::new(&source.name, &source.kind, &source.tags)
                .expect("a modbus source kind"),
        )),
    })
}

/// A source in service.
pub(super) struct Running {
    pub config: SourceConfig,
    stop: CancellationToken,
    /// None for the `http` source, which the web runs.
    task: Option<JoinHandle<()>>,
    health: SourceHandle,
}

/// The sources in service, in config order, and what new ones are started with.
pub(super) struct Sources {
    pub running: Vec<Running>,
    pub registry: SourceRegistry,
    /// Every source's way into the pipeline; dropped at shutdown ([`Sources::close`]).
    batch_tx: Option<mpsc::Sender<Batch>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Every source task, for the shutdown to wait on.
    pub tracker: TaskTracker,
}

/// What a reload changes in the sources, by name.
#[derive(Debug, Default)]
pub struct SourceChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// `http` sources added, removed or changed: applied at the next restart.
    pub waiting_for_restart: Vec<String>,
}

impl Sources {
    pub(super) fn new(
        batch_tx: mpsc::Sender<Batch>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Sources {
        Sources {
            running: Vec::new(),
            registry: SourceRegistry::default(),
            batch_tx: Some(batch_tx),
            metrics,
            shutdown,
            tracker: TaskTracker::new(),
        }
    }

    /// The sender new sources feed the pipeline through.
    pub(super) fn batch_tx(&self) -> &mpsc::Sender<Batch> {
        self.batch_tx
            .as_ref()
            .expect("sources are started only before shutdown")
    }

    /// Registers the `http` source the web runs (its health shows with the others).
    pub(super) fn register_http(&mut self, config: &SourceConfig) -> SourceHandle {
        let health = self
            .registry
            .register(&config.name, config.kind.type_name());
        self.running.push(Running {
            config: config.clone(),
            stop: CancellationToken::new(),
            task: None,
            health: health.clone(),
        });
        health
    }

    /// Starts a prepared source in a new slot of the registry.
    pub(super) fn start(&mut self, config: &SourceConfig, prepared: Prepared) {
        let health = self
            .registry
            .register(&config.name, config.kind.type_name());
        let running = self.spawn(config, prepared, health);
        self.running.push(running);
    }

    fn spawn(&self, config: &SourceConfig, prepared: Prepared, health: SourceHandle) -> Running {
        let stop = self.shutdown.child_token();
        let batch_tx = self.batch_tx().clone();
        let metrics = self.metrics.clone();
        let name: Arc<str> = config.name.as_str().into();
        let task = match (prepared, &config.kind) {
            (Prepared::Sim, SourceKind::Sim(sim_config)) => {
                let start = sim::start_time(sim_config, now_ns());
                self.tracker.spawn(sim::run(
                    sim_config.clone(),
                    name,
                    config.tags.clone(),
                    start,
                    batch_tx,
                    health.clone(),
                    metrics,
                    stop.clone(),
                ))
            }
            (Prepared::Mqtt(source), _) => {
                self.tracker
                    .spawn(source.run(batch_tx, health.clone(), metrics, stop.clone()))
            }
            (Prepared::Modbus(source), _) => {
                self.tracker
                    .spawn(source.run(batch_tx, health.clone(), metrics, stop.clone()))
            }
            (Prepared::Sim, _) => unreachable!("only sim and http sources prepare to Sim"),
        };
        tracing::info!(source = %config.name, kind = config.kind.type_name(), "source started");
        Running {
            config: config.clone(),
            stop,
            task: Some(task),
            health,
        }
    }

    /// What `new` changes, and the new or changed sources built (nothing runs yet): an error
    /// refuses the whole reload before anything stops.
    pub(super) fn plan(
        &self,
        new: &[SourceConfig],
        gateway_id: &str,
    ) -> anyhow::Result<(SourceChanges, Vec<(SourceConfig, Prepared)>)> {
        let mut changes = SourceChanges::default();
        let mut prepared = Vec::new();
        let is_http = |c: &SourceConfig| matches!(c.kind, SourceKind::Http(_));
        for config in new {
            let old = self.running.iter().find(|r| r.config.name == config.name);
            match old {
                Some(old) if old.config == *config => continue,
                Some(old) if is_http(&old.config) || is_http(config) => {
                    changes.waiting_for_restart.push(config.name.clone());
                    continue;
                }
                None if is_http(config) => {
                    changes.waiting_for_restart.push(config.name.clone());
                    continue;
                }
                Some(_) => changes.changed.push(config.name.clone()),
                None => changes.added.push(config.name.clone()),
            }
            prepared.push((config.clone(), prepare(config, gateway_id)?));
        }
        for old in &self.running {
            if !new.iter().any(|c| c.name == old.config.name) {
                if is_http(&old.config) {
                    changes.waiting_for_restart.push(old.config.name.clone());
                } else {
                    changes.removed.push(old.config.name.clone());
                }
            }
        }
        Ok((changes, prepared))
    }

    /// Applies a plan: stops the removed and changed sources (each hands its last readings
    /// to the pipeline before it ends), then starts the new and changed ones; a changed
    /// source keeps its place on the status page. The sources end up in `new`'s order.
    pub(super) async fn apply(
        &mut self,
        new: &[SourceConfig],
        changes: &SourceChanges,
        prepared: Vec<(SourceConfig, Prepared)>,
    ) {
        let stopping: Vec<usize> = (0..self.running.len())
            .filter(|&i| {
                let name = &self.running[i].config.name;
                changes.removed.contains(name) || changes.changed.contains(name)
            })
            .collect();
        for &i in &stopping {
            self.running[i].stop.cancel();
        }
        for &i in &stopping {
            let r = &mut self.running[i];
            if let Some(task) = r.task.take()
                && tokio::time::timeout(STOP_WAIT, task).await.is_err()
            {
                tracing::error!(source = %r.config.name, wait_secs = STOP_WAIT.as_secs(), "source did not stop in time; starting its replacement anyway");
            }
            tracing::info!(source = %r.config.name, "source stopped");
        }
        let mut old: Vec<Running> = std::mem::take(&mut self.running);
        let mut prepared = prepared;
        for config in new {
            let at = old.iter().position(|r| r.config.name == config.name);
            let fresh = prepared.iter().position(|(c, _)| c.name == config.name);
            let running = match (at, fresh) {
                // Unchanged, or an `http` source whose change waits for a restart.
                (Some(at), None) => old.swap_remove(at),
                (Some(at), Some(fresh)) => {
                    let r = old.swap_remove(at);
                    let health = r.health.hand_over(&config.name, config.kind.type_name());
                    let (config, p) = prepared.swap_remove(fresh);
                    self.spawn(&config, p, health)
                }
                (None, Some(fresh)) => {
                    let (config, p) = prepared.swap_remove(fresh);
                    let health = self
                        .registry
                        .register(&config.name, config.kind.type_name());
                    self.spawn(&config, p, health)
                }
                // An `http` source added by the reload: waits for a restart.
                (None, None) => continue,
            };
            self.running.push(running);
        }
        for r in old {
            if matches!(r.config.kind, SourceKind::Http(_)) {
                // An `http` source the new config dropped: it runs until the restart.
                self.running.push(r);
            } else {
                r.health.retire();
            }
        }
    }

    /// Shutdown: drops this side's sender, so that the pipeline's input closes once every
    /// source has ended.
    pub(super) fn close(&mut self) {
        self.batch_tx = None;
        self.tracker.close();
    }
}
