//! Parsing of the `[[sources]]` and `[[sinks]]` kinds that talk to the outside (`mqtt`,
//! `http`, `webhook`): their tables mix shared key groups (the MQTT connection, the payload
//! mapping) with their own keys, so each group is split out and deserialized on its own, and
//! every problem keeps its full key path.

use config::{Map, Value};

use super::load::{Problem, rest, section};
use super::sink::{MqttAlertConfig, MqttAlertFields, resolve_secret};
use super::source::{
    HttpIngestConfig, HttpIngestFields, MAPPING_KEYS, MappingConfig, MqttConnection,
    MqttSourceConfig, MqttSourceFields, Subscription,
};

/// Removes `keys` from `table` into a table of their own.
fn split(table: &mut Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for key in keys {
        if let Some(v) = table.remove(*key) {
            out.insert((*key).to_string(), v);
        }
    }
    out
}

fn connection(
    path: &str,
    table: &mut Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<MqttConnection> {
    let conn = split(table, MqttConnection::KEYS);
    let conn = section::<MqttConnection>(path, rest(conn), problems)?;
    if let Err(reason) = conn.password() {
        problems.push(Problem::new(format!("{path}.password"), reason));
    }
    Some(conn)
}

/// `[[sources]] type = "mqtt"`.
pub(super) fn mqtt_source(
    path: &str,
    mut table: Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<MqttSourceConfig> {
    let connection = connection(path, &mut table, problems);
    let mapping_table = split(&mut table, MAPPING_KEYS);
    let mapping = section::<MappingConfig>(path, rest(mapping_table.clone()), problems);
    let fields = section::<MqttSourceFields>(path, rest(table), problems)?;
    let mapping = mapping?;
    let mut subscriptions: Vec<Subscription> = fields
        .topics
        .iter()
        .map(|filter| Subscription {
            filter: filter.clone(),
            qos: fields.qos,
            mapping: mapping.clone(),
        })
        .collect();
    for (i, sub) in fields.subscriptions.into_iter().enumerate() {
        let sub_path = format!("{path}.subscriptions[{i}]");
        let mut sub: Map<String, Value> = sub.into_iter().collect();
        let filter = match sub.remove("filter").map(|v| v.into_string()) {
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                problems.push(Problem::new(
                    format!("{sub_path}.filter"),
                    "must be a string",
                ));
                None
            }
            None => {
                problems.push(Problem::new(
                    format!("{sub_path}.filter"),
                    "missing (a topic filter such as plant/+/sensors/#)",
                ));
                None
            }
        };
        let qos = match sub.remove("qos") {
            None => Some(fields.qos),
            Some(v) => section::<u8>(&format!("{sub_path}.qos"), v, problems),
        };
        let mut merged = mapping_table.clone();
        for (key, value) in split(&mut sub, MAPPING_KEYS) {
            merged.insert(key, value);
        }
        for key in sub.keys() {
            problems.push(Problem::new(
                format!("{sub_path}.{key}"),
                format!(
                    "unknown key (expected filter, qos or a mapping key: {})",
                    MAPPING_KEYS.join(", ")
                ),
            ));
        }
        let sub_mapping = section::<MappingConfig>(&sub_path, rest(merged), problems);
        if let (Some(filter), Some(qos), Some(mapping)) = (filter, qos, sub_mapping) {
            subscriptions.push(Subscription {
                filter,
                qos,
                mapping,
            });
        }
    }
    if subscriptions.is_empty() {
        problems.push(Problem::new(
            format!("{path}.topics"),
            "at least one topic filter is required (topics = [...] or [[sources.subscriptions]])",
        ));
    }
    Some(MqttSourceConfig {
        connection: connection?,
        subscriptions,
        clean_session: fields.clean_session,
    })
}

/// `[[sources]] type = "http"`.
pub(super) fn http_source(
    path: &str,
    mut table: Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<HttpIngestConfig> {
    let mapping = section::<MappingConfig>(path, rest(split(&mut table, MAPPING_KEYS)), problems);
    let fields = section::<HttpIngestFields>(path, rest(table), problems)?;
    let token = match resolve_secret(
        &fields.token,
        &fields.token_file,
        &fields.token_env,
        "token",
    ) {
        Ok(t) => t,
        Err(reason) => {
            problems.push(Problem::new(format!("{path}.token"), reason));
            return None;
        }
    };
    Some(HttpIngestConfig {
        mapping: mapping?,
        token,
        max_body_bytes: fields.max_body_bytes,
    })
}

/// `[[sinks]] type = "mqtt"`.
pub(super) fn mqtt_sink(
    path: &str,
    mut table: Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<MqttAlertConfig> {
    let connection = connection(path, &mut table, problems);
    let alert = section::<MqttAlertFields>(path, rest(table), problems)?;
    Some(MqttAlertConfig {
        connection: connection?,
        alert,
    })
}
