//! `[[sources]]` kinds that take readings from outside: MQTT subscriptions and HTTP ingest,
//! and the payload mapping they share; plus the MQTT connection settings that the MQTT alert
//! sink uses too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::sink::Secret;

/// How the bytes of one message (an MQTT payload or an HTTP body) become readings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// `json` (default), `value` (a bare number) or `line_protocol`.
    pub format: PayloadFormat,
    /// Pattern over the topic, segment by segment: `{sensor_id}` and `{field}` name the sensor
    /// and (for `value`) the field; any other `{name}` captures a tag; `+` matches any one
    /// segment; a final `#` matches the rest. Empty: no topic mapping.
    pub topic_template: String,
    /// JSON pointer (RFC 6901) of the sensor id. Default `/sensor_id`; ignored when the topic
    /// template names `{sensor_id}`.
    pub sensor_id: String,
    /// JSON pointer of the event time. Default `/timestamp`. Missing in a payload: the time of
    /// arrival is used and the reading is flagged `time_from_arrival`.
    pub time: String,
    /// How timestamps are written: `auto` (RFC 3339 strings, or epoch numbers whose unit is
    /// detected by magnitude), `rfc3339`, `s`, `ms`, `us` or `ns`. For line protocol it is the
    /// precision of the timestamps (`auto` means `ns` there).
    pub time_format: TimeFormat,
    /// JSON: field name → JSON pointer. Empty (default): every other numeric member of the
    /// object is a field under its own name.
    pub fields: BTreeMap<String, String>,
    /// `value`: the field name when the topic template has no `{field}`. Default: the last
    /// topic segment.
    pub field: Option<String>,
    /// Line protocol: the tag holding the sensor id (default `sensor_id`); without it the
    /// measurement name is the sensor id.
    pub id_tag: String,
    /// A larger payload is refused (counted as `too_large`).
    pub max_payload_bytes: usize,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            format: PayloadFormat::Json,
            topic_template: String::new(),
            sensor_id: "/sensor_id".into(),
            time: "/timestamp".into(),
            time_format: TimeFormat::Auto,
            fields: BTreeMap::new(),
            field: None,
            id_tag: "sensor_id".into(),
            max_payload_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Json,
    Value,
    LineProtocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeFormat {
    #[default]
    Auto,
    Rfc3339,
    S,
    Ms,
    Us,
    Ns,
}

/// TLS for an MQTT connection (rustls). With no `ca_file`, the platform's usual web roots are
/// not used: an edge broker almost always has its own CA, so `ca_file` is required.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain) for brokers that require one (mutual TLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name checked against the broker's certificate; default: `host`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// How to reach an MQTT broker: shared by the `mqtt` source and the `mqtt` alert sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConnection {
    /// Broker host name or address (use `127.0.0.1` rather than `localhost`).
    pub host: String,
    #[serde(default = "MqttConnection::default_port")]
    pub port: u16,
    /// Client id; a persistent session is kept under it, so it must be stable and unique per
    /// broker. Default: `edgewatch-<gateway id>-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "MqttConnection::default_keepalive_secs")]
    pub keepalive_secs: u64,
    /// A connection attempt that takes longer than this fails (and is retried).
    #[serde(default = "MqttConnection::default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default)]
    pub username: Option<String>,
    /// Inline password. Prefer `password_file` or `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS (off when absent).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// First delay before reconnecting after the broker went away; doubles with jitter up to
    /// `reconnect_max_secs`.
    #[serde(default = "MqttConnection::default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "MqttConnection::default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

impl MqttConnection {
    /// The keys of this struct, for splitting them out of a `[[sources]]`/`[[sinks]]` table.
    pub const KEYS: &'static [&'static str] = &[
        "host",
        "port",
        "client_id",
        "keepalive_secs",
        "connect_timeout_secs",
        "username",
        "password",
        "password_file",
        "password_env",
        "tls",
        "reconnect_initial_ms",
        "reconnect_max_secs",
    ];

    fn default_port() -> u16 {
        1883
    }
    fn default_keepalive_secs() -> u64 {
        30
    }
    fn default_connect_timeout_secs() -> u64 {
        10
    }
    fn default_reconnect_initial_ms() -> u64 {
        500
    }
    fn default_reconnect_max_secs() -> u64 {
        30
    }

    /// The password from the config, a file or the environment (empty when none is set).
    pub fn password(&self) -> Result<Secret, String> {
        super::sink::resolve_secret(
            &self.password,
            &self.password_file,
            &self.password_env,
            "password",
        )
    }

    /// The configured client id, or `edgewatch-<gateway>-<name>`.
    pub fn client_id_or(&self, gateway: &str, name: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("edgewatch-{gateway}-{name}"))
    }
}

/// `type = "mqtt"`: subscribe to a broker.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttSourceConfig {
    pub connection: MqttConnection,
    pub subscriptions: Vec<Subscription>,
    /// `false` (default): a persistent session, so that QoS 1 messages published while the
    /// gateway is away wait at the broker. `true`: start afresh on every connection.
    pub clean_session: bool,
}

/// One topic filter with its QoS and payload mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub filter: String,
    /// 0 or 1. With 1, a message is acknowledged only after its readings are committed.
    pub qos: u8,
    pub mapping: MappingConfig,
}

/// The keys of a `type = "mqtt"` entry besides the connection and the mapping.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttSourceFields {
    /// Topic filters sharing `qos` and the mapping keys of the entry.
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub clean_session: bool,
    /// Filters with their own QoS and mapping (any mapping key given here overrides the
    /// entry's).
    #[serde(default)]
    pub subscriptions: Vec<BTreeMap<String, config::Value>>,
}

pub(super) fn default_qos() -> u8 {
    1
}

/// `type = "http"`: `POST /api/v1/ingest` on the web listener.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpIngestConfig {
    pub mapping: MappingConfig,
    /// Requests must carry `Authorization: Bearer <token>` when a token is set.
    pub token: Secret,
    /// A larger body is refused with 413.
    pub max_body_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpIngestFields {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

/// The keys of [`MappingConfig`], for splitting them out of an entry.
pub(super) const MAPPING_KEYS: &[&str] = &[
    "format",
    "topic_template",
    "sensor_id",
    "time",
    "time_format",
    "fields",
    "field",
    "id_tag",
    "max_payload_bytes",
];
