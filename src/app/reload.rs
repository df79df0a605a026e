//! Config reload (SIGHUP, `systemctl reload edgewatch`): applies a new, validated config to
//! the running daemon without a restart and without losing buffered data.
//!
//! - **Sources**: a removed source stops, a new one starts, a changed one restarts; the
//!   others run on untouched. A stopping source hands its last readings to the pipeline
//!   before it ends, like at shutdown.
//! - **Rules**: the pipeline swaps its rule set between two batches
//!   ([`crate::pipeline::Pipeline::replace_rules`]): unchanged rules keep their state, and
//!   episodes of removed rules are cleared with the reason.
//! - **Sinks**: when any sink (or its secret) changed, every sink's task stops and the new
//!   set starts; each forwarder resumes from its cursor in the store, so nothing waiting in
//!   the outbox is lost or sent twice.
//! - Open windows, the store and its outbox are never touched: rollups stay intact.
//!
//! Everything that can fail (new clients, secrets, rule globs) is built before anything
//! stops: a refused reload changes nothing. `gateway`, `store`, `web`, `pipeline`, `log` and
//! `shutdown`, and `http` sources, are read only at start: a change to them is reported and
//! waits for a restart.

use std::fmt;

use anyhow::Context;

use super::{Forwarding, Running, sources::SourceChanges};
use crate::config::Config;
use crate::forward;
use crate::model::{NS_PER_SEC, now_ns};
use crate::pipeline::RuleSet;
use crate::pipeline::task::Control;

/// What a reload applied, and what waits for a restart.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub sources: SourceChanges,
    /// The rules changed and the pipeline took the new set.
    pub rules_replaced: bool,
    /// Active episodes cleared because their rule was removed or no longer applies.
    pub episodes_cleared: usize,
    /// The sinks changed and were restarted.
    pub sinks_restarted: bool,
    /// Why the new sinks could not start (then none runs until the next reload).
    pub sinks_failed: Option<String>,
    /// Config sections that changed but are read only at start.
    pub waiting_for_restart: Vec<&'static str>,
}

impl ReloadReport {
    /// Whether the new config differed in nothing that could be applied.
    pub fn is_empty(&self) -> bool {
        let s = &self.sources;
        s.added.is_empty()
            && s.removed.is_empty()
            && s.changed.is_empty()
            && !self.rules_replaced
            && !self.sinks_restarted
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let s = &self.sources;
        for (what, names) in [
            ("sources added", &s.added),
            ("sources removed", &s.removed),
            ("sources restarted", &s.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        }
        if self.rules_replaced {
            parts.push(format!(
                "rules replaced ({} active episode(s) cleared)",
                self.episodes_cleared
            ));
        }
        if self.sinks_restarted {
            parts.push("sinks restarted".into());
        }
        if parts.is_empty() {
            parts.push("nothing to apply".into());
        }
        f.write_str(&parts.join("; "))
    }
}

impl Running {
    /// The config in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies `new` (already validated, as by `config::load`). An error means the reload was
    /// refused and nothing changed. Counts the outcome in `edgewatch_config_reloads_total`.
    pub async fn reload(&mut self, new: Config) -> anyhow::Result<ReloadReport> {
        let result = self.apply(new).await;
        self.count_reload(result.is_ok());
        result
    }

    /// Counts a reload refused before it got here (the file did not load or validate).
    pub fn count_refused_reload(&self) {
        self.count_reload(false);
    }

    fn count_reload(&self, applied: bool) {
        let m = &self.metrics;
        let result = if applied { "applied" } else { "refused" };
        m.config_reloads
            .get_or_create(&crate::metrics::ResultLabel {
                result: result.into(),
            })
            .inc();
        m.config_last_reload_successful.set(i64::from(applied));
        if applied {
            m.config_last_reload_success_timestamp_seconds
                .set(now_ns() / NS_PER_SEC);
        }
    }

    async fn apply(&mut self, mut new: Config) -> anyhow::Result<ReloadReport> {
        let mut report = ReloadReport::default();
        // Read only at start: keep the ones in effect, say which changed.
        let old = &self.config;
        for (section, changed) in [
            ("gateway", old.gateway != new.gateway),
            ("store", old.store != new.store),
            ("web", old.web != new.web),
            ("pipeline", old.pipeline != new.pipeline),
            ("log", old.log != new.log),
            ("shutdown", old.shutdown != new.shutdown),
        ] {
            if changed {
                report.waiting_for_restart.push(section);
            }
        }
        new.gateway = old.gateway.clone();
        new.store = old.store.clone();
        new.web = old.web.clone();
        new.pipeline = old.pipeline.clone();
        new.log = old.log.clone();
        new.shutdown = old.shutdown.clone();

        // Build everything that can fail before anything stops.
        let (changes, prepared) = self
            .sources
            .plan(&new.sources, &new.gateway.id)
            .context("sources")?;
        let rules = if new.rules != old.rules {
            Some(RuleSet::compile(&new.rules).context("rules")?)
        } else {
            None
        };
        let sinks_changed = new.sinks != old.sinks;
        if sinks_changed {
            forward::check(&new).context("sinks")?;
        }

        if let Some(rules) = rules {
            let (done_tx, done) = tokio::sync::oneshot::channel();
            self.control
                .send(Control::Rules(rules, done_tx))
                .await
                .context("the pipeline has stopped")?;
            report.episodes_cleared = done.await.context("the pipeline has stopped")?;
            report.rules_replaced = true;
        }
        self.sources.apply(&new.sources, &changes, prepared).await;
        report.sources = changes;
        if sinks_changed {
            report.sinks_restarted = true;
            if let Err(e) = self.restart_sinks(&new).await {
                // Checked by `forward::check` above: something changed in between (a secret
                // file removed). No sink runs now; the next reload tries again.
                tracing::error!(
                    error = format!("{e:#}"),
                    "sinks could not start; none runs until the next reload or restart"
                );
                report.sinks_failed = Some(format!("{e:#}"));
                new.sinks.clear();
            }
        }
        // `http` sources whose change waits for a restart stay as they run.
        new.sources = self
            .sources
            .running
            .iter()
            .map(|r| r.config.clone())
            .collect();
        self.config = new;
        Ok(report)
    }

    /// Stops every sink's task, waits for them, and starts the new set (on an error, none).
    async fn restart_sinks(&mut self, new: &Config) -> anyhow::Result<()> {
        let old = &self.forwarding;
        old.stop.cancel();
        old.tracker.wait().await;
        old.registry.clear();
        let registry = old.registry.clone();
        let started = Forwarding::start(
            new,
            &self.store,
            &self.metrics,
            registry.clone(),
            &self.shutdown,
        );
        let (forwarding, result) = match started {
            Ok(f) => (f, Ok(())),
            Err(e) => {
                registry.clear();
                let none = Config {
                    sinks: Vec::new(),
                    ..new.clone()
                };
                let idle =
                    Forwarding::start(&none, &self.store, &self.metrics, registry, &self.shutdown)?;
                (idle, Err(e))
            }
        };
        self.forwarding = forwarding;
        result
    }
}
