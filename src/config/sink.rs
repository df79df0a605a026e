//! `[[sinks]]`: where rollups and events are forwarded: `influxdb` (rollups and events),
//! `mqtt` and `webhook` (anomaly alerts).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[[sinks]]` entry. `type` and `name` are interface keys.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    /// Unique name; the sink's cursor in the store is kept under it, so renaming a sink makes
    /// it start again from the oldest entry still in the outbox.
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    Influxdb(InfluxConfig),
    /// Anomaly events published to an MQTT broker.
    Mqtt(MqttAlertConfig),
    /// Anomaly events POSTed as JSON.
    Webhook(WebhookConfig),
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Influxdb(_) => "influxdb",
            SinkKind::Mqtt(_) => "mqtt",
            SinkKind::Webhook(_) => "webhook",
        }
    }
}

/// `type = "mqtt"`: every anomaly event (raised and cleared) is published from the outbox,
/// QoS 1; the sink's cursor advances only after the broker's PUBACK.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttAlertConfig {
    pub connection: super::MqttConnection,
    pub alert: MqttAlertFields,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttAlertFields {
    /// Topic of each alert. Placeholders: `{gateway}`, `{sensor}`, `{field}`, `{rule}`,
    /// `{severity}`, `{state}` (`raised` or `cleared`).
    #[serde(default = "MqttAlertFields::default_topic")]
    pub topic: String,
    /// Also publish the current state of each (sensor, field, rule) retained on
    /// `<state_topic>`, so a dashboard that connects later sees what is active now.
    #[serde(default)]
    pub retain_state: bool,
    /// Topic of the retained state (same placeholders). Default: `topic` + `/state`.
    #[serde(default)]
    pub state_topic: Option<String>,
    /// QoS of the publications: 1 (default) or 0 (then the cursor advances once written).
    #[serde(default = "MqttAlertFields::default_qos")]
    pub qos: u8,
}

impl MqttAlertFields {
    fn default_topic() -> String {
        "edgewatch/{gateway}/alerts/{sensor}/{field}/{rule}".into()
    }
    fn default_qos() -> u8 {
        1
    }
}

/// `type = "webhook"`: every anomaly event is POSTed as a JSON object; the cursor advances
/// only after a 2xx answer. 4xx other than 408/429 are logged and the event is dead-lettered.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "WebhookConfig::default_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default = "WebhookConfig::default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "WebhookConfig::default_retry_max_secs")]
    pub retry_max_secs: u64,
}

impl WebhookConfig {
    fn default_timeout_secs() -> u64 {
        10
    }
    fn default_retry_initial_ms() -> u64 {
        500
    }
    fn default_retry_max_secs() -> u64 {
        60
    }
    pub fn token(&self) -> Result<Secret, String> {
        resolve_secret(&self.token, &self.token_file, &self.token_env, "token")
    }
}

/// A secret given inline, in a file (trailing newline removed) or in an environment variable;
/// empty when none is set.
pub fn resolve_secret(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<Secret, String> {
    if let Some(s) = inline {
        return Ok(Secret(s.clone()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
        return Ok(Secret(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Secret)
            .map_err(|_| format!("the environment variable {var} (the {what}) is not set"));
    }
    Ok(Secret::default())
}

/// Which InfluxDB write API to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=&rp=&precision=`, optional Basic auth.
    #[default]
    V1,
    /// InfluxDB 2.x and 3.x: `POST /api/v2/write?org=&bucket=&precision=`, `Authorization: Token`.
    V2,
}

/// What a sink forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forwarded {
    Rollups,
    Events,
}

/// A secret given inline, read from a file (systemd credentials, Docker/K8s secrets) or from
/// an environment variable. Never shown on a page, in the API or in the log.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

/// `type = "influxdb"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086` or `https://hq.example.com:8086`.
    pub url: String,
    /// `v1` (database/retention_policy/username/password) or `v2` (org/bucket/token; also
    /// serves InfluxDB 3).
    #[serde(default)]
    pub api: InfluxApi,
    /// v1: the database.
    #[serde(default)]
    pub database: Option<String>,
    /// v1: the retention policy (default: the database's default).
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user name for Basic auth.
    #[serde(default)]
    pub username: Option<String>,
    /// v1: password, inline. Prefer `password_file` or `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    /// v1: read the password from this file (trailing newline removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// v1: read the password from this environment variable.
    #[serde(default)]
    pub password_env: Option<String>,
    /// v2: organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: API token, inline. Prefer `token_file` or `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// Timestamp precision of the written points: ns, us, ms or s.
    #[serde(default = "InfluxConfig::default_precision")]
    pub precision: String,
    /// At most this many points per request.
    #[serde(default = "InfluxConfig::default_batch_max_points")]
    pub batch_max_points: usize,
    /// At most this many bytes of line protocol per request (before gzip).
    #[serde(default = "InfluxConfig::default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Compress request bodies with gzip.
    #[serde(default = "InfluxConfig::default_gzip")]
    pub gzip: bool,
    /// A request without an answer after this long counts as failed and is retried.
    #[serde(default = "InfluxConfig::default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// What to forward: `rollups`, `events` or both (default).
    #[serde(default = "InfluxConfig::default_forward")]
    pub forward: Vec<Forwarded>,
    /// Drain a backlog at no more than this many points per second (0: as fast as InfluxDB
    /// accepts), so that a gateway catching up after an outage does not saturate the uplink.
    #[serde(default)]
    pub max_points_per_sec: u64,
    /// First retry delay after a failure; doubles (with jitter) up to `retry_max_secs`.
    #[serde(default = "InfluxConfig::default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "InfluxConfig::default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Retry delay while InfluxDB answers 401/403/404 (credentials, database or bucket wrong).
    #[serde(default = "InfluxConfig::default_misconfigured_retry_secs")]
    pub misconfigured_retry_secs: u64,
    /// Static tags added to every point of this sink (the `gateway` tag is always added).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl InfluxConfig {
    fn default_precision() -> String {
        "ns".into()
    }
    fn default_batch_max_points() -> usize {
        5_000
    }
    fn default_batch_max_bytes() -> usize {
        1 << 20
    }
    fn default_gzip() -> bool {
        true
    }
    fn default_request_timeout_secs() -> u64 {
        10
    }
    fn default_forward() -> Vec<Forwarded> {
        vec![Forwarded::Rollups, Forwarded::Events]
    }
    fn default_retry_initial_ms() -> u64 {
        500
    }
    fn default_retry_max_secs() -> u64 {
        60
    }
    fn default_misconfigured_retry_secs() -> u64 {
        60
    }

    /// The v1 password or the v2 token, from the config, a file or the environment.
    pub fn secret(&self) -> Result<Secret, String> {
        let (inline, file, env, what) = match self.api {
            InfluxApi::V1 => (
                &self.password,
                &self.password_file,
                &self.password_env,
                "password",
            ),
            InfluxApi::V2 => (&self.token, &self.token_file, &self.token_env, "token"),
        };
        resolve_secret(inline, file, env, what)
    }
}
