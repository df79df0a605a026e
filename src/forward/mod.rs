//! Forwarding to InfluxDB at HQ: one forwarder task per `[[sinks]]` entry, each with its own
//! cursor in the store, plus a trimmer that removes outbox entries every sink has. Alert sinks
//! (`webhook`) are started here too, with their runner from `crate::alert`, and count for the
//! trimmer like the others.
//!
//! - `line_protocol`: the encoder (pure).
//! - `points`: rollups and events as points with a deterministic tag set (pure).
//! - `influx`: the write request (v1 or v2) and the classification of InfluxDB's answer.
//! - `sink`: the forwarder loop: read from the cursor, send, acknowledge, back off.
//! - `status`: link state and backlog per sink, for the web.

pub mod influx;
pub mod line_protocol;
pub mod points;
pub mod sink;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Deliver;
use crate::alert::mqtt::MqttAlerts;
use crate::alert::runner::{AlertRunner, RetryPolicy};
use crate::alert::webhook::Webhook;
use crate::config::{Config, InfluxConfig, MqttAlertConfig, SinkKind, WebhookConfig};
use crate::metrics::Metrics;
use crate::store::Store;
use influx::Endpoint;
use points::PointTags;
use status::{SinkRegistry, SinkStatus};

/// How often outbox entries acknowledged by every sink are removed.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Starts a forwarder per sink and the trimmer on `tracker`; they stop on `shutdown`.
pub fn start(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    registry: &SinkRegistry,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let starter = Starter {
        config,
        store,
        metrics,
        registry,
        shutdown,
        tracker,
    };
    let mut names = Vec::new();
    for sink in &config.sinks {
        match &sink.kind {
            SinkKind::Influxdb(influx) => starter.influxdb(&sink.name, influx),
            SinkKind::Webhook(webhook) => starter.webhook(&sink.name, webhook),
            SinkKind::Mqtt(mqtt) => starter.mqtt(&sink.name, mqtt),
        }
        .with_context(|| format!("sink {}", sink.name))?;
        names.push(sink.name.clone());
    }
    if !names.is_empty() {
        tracker.spawn(trim(store.clone(), names, shutdown.clone()));
    }
    Ok(())
}

/// Checks what [`start`] could still refuse in a validated config (secrets read from files
/// or the environment, endpoints, TLS files) without starting anything: a config reload
/// checks the new sinks before it stops the old ones.
pub fn check(config: &Config) -> anyhow::Result<()> {
    for sink in &config.sinks {
        let checked: anyhow::Result<()> = match &sink.kind {
            SinkKind::Influxdb(influx) => influx
                .secret()
                .and_then(|secret| Endpoint::new(influx, &secret).map(drop))
                .map_err(anyhow::Error::msg),
            SinkKind::Webhook(webhook) => webhook
                .token()
                .and_then(|token| Webhook::new(webhook, &token).map(drop))
                .map_err(anyhow::Error::msg),
            SinkKind::Mqtt(mqtt) => {
                let conn = &mqtt.connection;
                let client_id = conn.client_id_or(&config.gateway.id, &sink.name);
                crate::mqtt_client::options(conn, &client_id, true, false).map(drop)
            }
        };
        checked.with_context(|| format!("sink {}", sink.name))?;
    }
    Ok(())
}

/// What every sink's task is started with.
struct Starter<'a> {
    config: &'a Config,
    store: &'a Store,
    metrics: &'a Arc<Metrics>,
    registry: &'a SinkRegistry,
    shutdown: &'a CancellationToken,
    tracker: &'a TaskTracker,
}

impl Starter<'_> {
    /// Registers a sink's status (`starting`) under its name, kind and shown address.
    fn register(&self, name: &str, kind: &str, url: String) -> status::SinkHandle {
        self.metrics.sink_state.set(name, "starting");
        self.registry.register(SinkStatus {
            name: name.to_string(),
            kind: kind.into(),
            url,
            state: "starting".into(),
            ..SinkStatus::default()
        })
    }

    fn influxdb(&self, name: &str, influx: &InfluxConfig) -> anyhow::Result<()> {
        let secret = influx.secret().map_err(anyhow::Error::msg)?;
        let endpoint = Endpoint::new(influx, &secret).map_err(anyhow::Error::msg)?;
        let mut static_tags = self.config.gateway.tags.clone();
        static_tags.extend(influx.tags.clone());
        let mut shown_url = endpoint.write_url.clone();
        let _ = shown_url.set_username("");
        let _ = shown_url.set_password(None);
        shown_url.set_query(None);
        let status = self.register(name, "influxdb", shown_url.to_string());
        let forwarder = sink::Forwarder {
            name: name.to_string(),
            config: influx.clone(),
            endpoint,
            tags: PointTags {
                gateway: self.config.gateway.id.clone(),
                static_tags,
            },
            store: self.store.clone(),
            status,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        self.tracker.spawn(forwarder.run());
        tracing::info!(sink = %name, url = %influx.url, "forwarder started");
        Ok(())
    }

    /// Starts the alert runner of a `webhook` sink.
    fn webhook(&self, name: &str, webhook: &WebhookConfig) -> anyhow::Result<()> {
        let token = webhook.token().map_err(anyhow::Error::msg)?;
        let transport = Webhook::new(webhook, &token).map_err(anyhow::Error::msg)?;
        let shown_url = transport.shown_url();
        let retry_max = Duration::from_secs(webhook.retry_max_secs);
        let retry = RetryPolicy {
            initial: Duration::from_millis(webhook.retry_initial_ms),
            max: retry_max,
            misconfigured: retry_max,
        };
        self.alerts(name, "webhook", shown_url.clone(), transport, retry);
        tracing::info!(sink = %name, url = %shown_url, "webhook alert sink started");
        Ok(())
    }

    /// Starts an MQTT alert sink: a publisher with its own connection, behind the alert runner.
    fn mqtt(&self, name: &str, mqtt: &MqttAlertConfig) -> anyhow::Result<()> {
        let conn = &mqtt.connection;
        let client_id = conn.client_id_or(&self.config.gateway.id, name);
        let transport = MqttAlerts::start(conn, &mqtt.alert, &client_id, self.shutdown.clone())?;
        let shown = crate::mqtt_client::describe(conn);
        let retry_max = Duration::from_secs(conn.reconnect_max_secs.max(1));
        let retry = RetryPolicy {
            initial: Duration::from_millis(conn.reconnect_initial_ms.max(1)),
            max: retry_max,
            misconfigured: retry_max,
        };
        self.alerts(name, "mqtt", shown.clone(), transport, retry);
        tracing::info!(sink = %name, broker = %shown, topic = %mqtt.alert.topic, "mqtt alert sink started");
        Ok(())
    }

    /// Spawns the alert runner that delivers the outbox's events through `transport`.
    fn alerts<D: Deliver + Send + 'static>(
        &self,
        name: &str,
        kind: &str,
        url: String,
        transport: D,
        retry: RetryPolicy,
    ) {
        let status = self.register(name, kind, url);
        self.tracker.spawn(
            AlertRunner {
                name: name.to_string(),
                gateway: self.config.gateway.id.clone(),
                transport,
                retry,
                store: self.store.clone(),
                status,
                metrics: self.metrics.clone(),
                shutdown: self.shutdown.clone(),
            }
            .run(),
        );
    }
}

/// Removes the outbox entries that every configured sink has acknowledged.
async fn trim(store: Store, sinks: Vec<String>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let store = store.clone();
        let sinks = sinks.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut min = u64::MAX;
            for sink in &sinks {
                min = min.min(store.sink_counters(sink)?.cursor);
            }
            if min == 0 {
                Ok(0)
            } else {
                store.trim_acknowledged(min)
            }
        })
        .await;
        match result {
            Ok(Ok(n)) if n > 0 => {
                tracing::debug!(removed = n, "trimmed acknowledged outbox entries")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot trim the outbox"),
            Err(e) => tracing::error!(error = %e, "outbox trimmer panicked"),
        }
    }
}
