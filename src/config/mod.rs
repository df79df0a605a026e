//! Configuration: the typed shape of `edgewatch.toml`, its defaults, and loading with every
//! problem reported by key path (`sources[2].interval_ms: must be greater than 0`).
//!
//! `config/edgewatch.toml` documents every key; keep it and the doc comments here in step.
//! Names marked *(interface)* in the design are fixed: installers and scripts rely on them.

mod load;
mod load_io;
mod modbus;
mod multivariate;
mod sink;
mod source;
mod validate;
mod validate_io;
mod validate_modbus;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_modbus;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use load::{ConfigErrors, Problem, load, load_profile, load_str};
pub use modbus::{
    ModbusPolling, ModbusRtuConfig, ModbusTcpConfig, Parity, ProfileConfig,
    default_inter_frame_silence_us,
};
pub use multivariate::MultivariateRule;
pub use sink::{
    Forwarded, InfluxApi, InfluxConfig, MqttAlertConfig, MqttAlertFields, Secret, SinkConfig,
    SinkKind, WebhookConfig, resolve_secret,
};
pub use source::{
    HttpIngestConfig, MappingConfig, MqttConnection, MqttSourceConfig, PayloadFormat, Subscription,
    TimeFormat, TlsConfig,
};

use crate::model::Severity;

/// The whole configuration, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub store: StoreConfig,
    pub web: WebConfig,
    pub pipeline: PipelineConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub sources: Vec<SourceConfig>,
    pub rules: Vec<RuleConfig>,
    pub sinks: Vec<SinkConfig>,
    /// `[profiles.NAME]`: register maps shared by Modbus sources (already resolved into each
    /// source's `registers`; kept for validation and the probe).
    pub profiles: BTreeMap<String, ProfileConfig>,
}

/// `[gateway]`: who this gateway is.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Gateway id, added as the `gateway` tag to everything forwarded. Required.
    pub id: String,
    /// Static tags added to everything this gateway forwards (for example `site = "plant-3"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Default of `store.cache_bytes`: 2 MiB. redb's own default, 1 GiB, kept every page the
/// daemon wrote in memory until the cache was full, so the RSS grew with the stored data (48
/// MiB after 2 minutes with 1,000 sim sensors, still rising). 2 MiB keeps a 1,000-sensor
/// gateway about 4 MiB lower than 4 MiB does, at some CPU per message only at full MQTT speed
/// (README, Performance).
pub const DEFAULT_STORE_CACHE_BYTES: u64 = 2 << 20;

/// `[store]`: the embedded redb file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Path of the redb file; its directory is created if missing.
    pub path: PathBuf,
    /// Byte budget of the stored data. When exceeded, the oldest raw readings are removed
    /// first, then the oldest outbox entries; both are counted and shown.
    pub max_bytes: u64,
    /// Byte budget of the outbox (what waits to be forwarded). When a long outage fills it, the
    /// oldest entries are removed, counted per sink as dropped and logged at ERROR. 0: only
    /// `max_bytes` applies.
    pub outbox_max_bytes: u64,
    /// How long raw readings are kept. 0 turns raw storage off (rollups and events only).
    pub raw_retention_secs: u64,
    /// How long rollups are kept; a late reading older than this cannot correct its rollup and
    /// is counted as `late_dropped` (it is still stored raw).
    pub rollup_retention_secs: u64,
    /// How long anomaly events are kept after they were cleared.
    pub event_retention_secs: u64,
    /// Pending writes are committed at least this often. A power cut can lose at most this
    /// much accepted data (every commit is durable: fsync).
    pub commit_interval_ms: u64,
    /// Commit earlier once this many records (readings, rollups, events) are pending.
    pub commit_max_records: usize,
    /// When a source waits for the commit to acknowledge upstream (MQTT QoS 1), commit at
    /// most this long after the first such batch arrived. A broker lets only a limited number
    /// of messages wait for their acknowledgement, so this bounds QoS 1 throughput.
    pub ack_commit_interval_ms: u64,
    /// How often retention (age and byte budget) runs.
    pub retention_interval_secs: u64,
    /// Memory for redb's page cache: pages read or written recently (a commit's pages not
    /// written out yet take at most half of it). What does not fit is read from the file, which
    /// the OS caches outside the daemon's RSS. At least 1 MiB.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("/var/lib/edgewatch/edgewatch.redb"),
            max_bytes: 1 << 30,
            outbox_max_bytes: 256 << 20,
            raw_retention_secs: 86_400,
            rollup_retention_secs: 30 * 86_400,
            event_retention_secs: 90 * 86_400,
            commit_interval_ms: 200,
            commit_max_records: 20_000,
            ack_commit_interval_ms: 25,
            retention_interval_secs: 60,
            cache_bytes: DEFAULT_STORE_CACHE_BYTES,
        }
    }
}

/// `[web]`: the status page, JSON API and metrics.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Listen address (interface). Port 0 picks a free port (tests).
    pub listen: String,
    /// A request that takes longer than this is answered 408.
    pub request_timeout_secs: u64,
    /// At most this many requests are served at once; more wait (the web only reads, so
    /// readers never slow acquisition).
    pub max_concurrent_requests: usize,
    /// At most this many connections are open at once. Further clients wait in the kernel's
    /// accept queue until one closes (counted in `edgewatch_web_connections_waited_total`):
    /// a crowd of clients costs a bounded number of tasks and buffers.
    pub max_connections: usize,
    /// A client must send a request's complete headers within this many seconds of opening
    /// the connection or of the previous answer; otherwise the connection is closed. This is
    /// also the longest a kept-alive connection may sit idle.
    pub header_read_timeout_secs: u64,
    /// Largest request body of every route but `POST /api/v1/ingest` (which has the `http`
    /// source's own `max_body_bytes`); a larger one is answered 413.
    pub max_body_bytes: usize,
    /// The operator token: acknowledging an anomaly needs it (`Authorization: Bearer` on the
    /// API, a password field on the pages). Without a token the web is read-only. Inline;
    /// prefer `operator_token_file` or `operator_token_env`. Never shown anywhere.
    pub operator_token: Option<Secret>,
    /// Read the operator token from this file (trailing newline removed).
    pub operator_token_file: Option<PathBuf>,
    /// Read the operator token from this environment variable.
    pub operator_token_env: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8080".into(),
            request_timeout_secs: 10,
            max_concurrent_requests: 64,
            max_connections: 256,
            header_read_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            operator_token: None,
            operator_token_file: None,
            operator_token_env: None,
        }
    }
}

impl WebConfig {
    /// The parsed listen address; validation guarantees it parses.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().expect("validated listen address")
    }

    /// The operator token from the config, a file or the environment; `None` when none is
    /// configured (the web is then read-only). Validation guarantees that a configured one
    /// resolves to a non-empty token of visible ASCII.
    pub fn operator_token(&self) -> Result<Option<Secret>, String> {
        let inline = self.operator_token.as_ref().map(|s| s.0.clone());
        let token = resolve_secret(
            &inline,
            &self.operator_token_file,
            &self.operator_token_env,
            "operator token",
        )?;
        Ok((!token.0.is_empty()).then_some(token))
    }

    /// How many of `operator_token`, `operator_token_file`, `operator_token_env` are given.
    pub(crate) fn operator_token_sources(&self) -> usize {
        [
            self.operator_token.is_some(),
            self.operator_token_file.is_some(),
            self.operator_token_env.is_some(),
        ]
        .iter()
        .filter(|given| **given)
        .count()
    }
}

/// `[pipeline]`: windows and the ingest channel.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Length of the tumbling rollup windows, aligned to the epoch.
    pub window_secs: u64,
    /// The watermark trails the newest event time by this much; a window is emitted when the
    /// watermark passes its end.
    pub allowed_lateness_secs: u64,
    /// Span of the rolling average shown per series; defaults to `window_secs`.
    pub rolling_secs: Option<u64>,
    /// A reading stamped more than this far ahead of the gateway clock is flagged
    /// `time_suspect` and kept out of windows and detectors.
    pub max_future_secs: u64,
    /// Capacity of the channel from the sources to the pipeline, in batches. When full,
    /// sources wait (backpressure): nothing is dropped.
    pub channel_capacity: usize,
    /// How often the live view (status page, `/api/v1/sensors`) is refreshed.
    pub snapshot_interval_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window_secs: 60,
            allowed_lateness_secs: 10,
            rolling_secs: None,
            max_future_secs: 300,
            channel_capacity: 1024,
            snapshot_interval_ms: 500,
        }
    }
}

impl PipelineConfig {
    pub fn rolling_secs(&self) -> u64 {
        self.rolling_secs.unwrap_or(self.window_secs)
    }
}

/// `[log]`: logging. `RUST_LOG` overrides `level`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `compact` (human) or `json` (one object per line, for journald or a collector).
    pub format: LogFormat,
    /// Default filter, in `RUST_LOG` syntax.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Compact,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Compact,
    Json,
}

/// `[shutdown]`: how long a SIGTERM may take.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM/SIGINT, sources stop, windows flush and the store commits; if that takes
    /// longer than this the process exits anyway (code 1). A second signal exits at once.
    pub deadline_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { deadline_secs: 10 }
    }
}

/// `[[sources]]`: where readings come from. `type` selects the kind (interface).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// Unique name (interface), the `source` tag of its readings.
    pub name: String,
    /// Static tags for everything derived from this source's readings.
    pub tags: BTreeMap<String, String>,
    pub kind: SourceKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    Sim(SimConfig),
    Mqtt(MqttSourceConfig),
    Http(HttpIngestConfig),
    ModbusTcp(ModbusTcpConfig),
    ModbusRtu(ModbusRtuConfig),
}

impl SourceKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Sim(_) => "sim",
            SourceKind::Mqtt(_) => "mqtt",
            SourceKind::Http(_) => "http",
            SourceKind::ModbusTcp(_) => "modbus_tcp",
            SourceKind::ModbusRtu(_) => "modbus_rtu",
        }
    }

    /// The polling settings of a Modbus source.
    pub fn modbus_polling(&self) -> Option<&ModbusPolling> {
        match self {
            SourceKind::ModbusTcp(c) => Some(&c.polling),
            SourceKind::ModbusRtu(c) => Some(&c.polling),
            _ => None,
        }
    }
}

/// `type = "sim"`: simulated sensors with temperature, pressure and vibration, noise, slow
/// drift, and faults on a deterministic schedule derived from `seed`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Number of simulated sensors (`<sensor_prefix>001` ...).
    #[serde(default = "SimConfig::default_sensors")]
    pub sensors: u32,
    /// Time between two readings of a sensor.
    #[serde(default = "SimConfig::default_interval_ms")]
    pub interval_ms: u64,
    /// Seed of the noise and of the fault schedule: the same seed gives the same readings.
    #[serde(default = "SimConfig::default_seed")]
    pub seed: u64,
    /// Prefix of the sensor ids.
    #[serde(default = "SimConfig::default_sensor_prefix")]
    pub sensor_prefix: String,
    /// Mean time between two injected faults across all sensors of this source; 0 turns
    /// fault injection off.
    #[serde(default = "SimConfig::default_fault_interval_secs")]
    pub fault_interval_secs: f64,
    /// Event time of the first tick (RFC 3339). Default: the gateway clock at start.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Stop after this many ticks. Default: run until shutdown.
    #[serde(default)]
    pub ticks: Option<u64>,
    /// `true`: one tick per `interval_ms` of wall time. `false`: ticks as fast as the
    /// pipeline accepts them (replay, tests, benchmarks).
    #[serde(default = "SimConfig::default_realtime")]
    pub realtime: bool,
}

impl SimConfig {
    fn default_sensors() -> u32 {
        50
    }
    fn default_interval_ms() -> u64 {
        1000
    }
    fn default_seed() -> u64 {
        42
    }
    fn default_sensor_prefix() -> String {
        "sim-".into()
    }
    fn default_fault_interval_secs() -> f64 {
        20.0
    }
    fn default_realtime() -> bool {
        true
    }
}

/// `[[rules]]`: an anomaly rule for every series whose `sensor/field` matches `match`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleConfig {
    /// Name shown on events; defaults to `kind:match`.
    pub name: String,
    /// Glob over `sensor/field`, for example `*/vibration` or `press-*/temperature`.
    pub pattern: String,
    pub severity: Severity,
    /// The condition must hold this long before the event is raised.
    pub min_duration_secs: f64,
    /// The clear condition must hold this long before the event is cleared, so a value
    /// wobbling around the clear level does not end and restart the episode.
    pub holdoff_secs: f64,
    /// Flap suppression: once an episode is the `flap_max_events`-th raised within
    /// `flap_window_secs`, it clears only after the clear condition held for the whole window
    /// (instead of `holdoff_secs`), so a signal that keeps crossing both levels gives a few
    /// events and then one long episode, not a storm. 0 (the default) turns it off.
    pub flap_window_secs: f64,
    pub flap_max_events: u32,
    pub kind: RuleKind,
}

/// How a z-score rule keeps its baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZscoreBaseline {
    /// Mean and standard deviation of the readings of the last `window_secs`.
    #[default]
    Window,
    /// Exponentially weighted mean and variance with time constant `window_secs`: fixed
    /// memory whatever the reading rate, recent readings weigh most.
    Ewma,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// Raise above `max` (below `min`); clear at or below `max_clear` (at or above `min_clear`).
    Limit {
        min: Option<f64>,
        min_clear: Option<f64>,
        max: Option<f64>,
        max_clear: Option<f64>,
    },
    /// Raise when |Δvalue/Δt| per second exceeds `raise`; clear below `clear`.
    Rate { raise: f64, clear: f64 },
    /// Raise when |value − mean| / stddev over the preceding `window_secs` exceeds `raise`;
    /// clear below `clear`. Needs `min_samples` in the window first.
    Zscore {
        window_secs: f64,
        raise: f64,
        clear: f64,
        min_samples: u32,
        baseline: ZscoreBaseline,
    },
    /// Raise when the value has not changed by more than `tolerance` for `raise_secs`; clear
    /// when it changes.
    Stuck { raise_secs: f64, tolerance: f64 },
    /// Raise when no reading arrived for `raise_secs` (gateway clock); clear on the next one.
    Silent { raise_secs: f64 },
    /// Raise when several fields of one machine depart from the correlation learned in a
    /// warm-up (a T² above `raise`); clear below `clear`. `match` names sensors.
    Multivariate(Box<MultivariateRule>),
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Limit { .. } => "limit",
            RuleKind::Rate { .. } => "rate",
            RuleKind::Zscore { .. } => "zscore",
            RuleKind::Stuck { .. } => "stuck",
            RuleKind::Silent { .. } => "silent",
            RuleKind::Multivariate(_) => "multivariate",
        }
    }
}
