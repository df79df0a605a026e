//! Reading a config file (plus `EDGEWATCH__SECTION__KEY` environment overrides) into a
//! [`Config`], collecting every problem with its key path instead of stopping at the first.
//!
//! Each section and each `[[sources]]`/`[[rules]]` entry is deserialized on its own, so one bad
//! section does not hide the problems of another; tagged entries are dispatched by hand on
//! their `type`/`kind` so that error paths reach into them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use config::{Environment, File, FileFormat, Map, Value, ValueKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::validate::validate;
use super::*;

/// One problem in a config: where (`sources[2].interval_ms`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a config, one per line when displayed.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

const SECTIONS: &[&str] = &[
    "gateway", "store", "web", "pipeline", "log", "shutdown", "sources", "rules", "sinks",
    "profiles",
];

/// Loads a config file with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, None)
}

/// Loads a config file; `env` replaces the process environment for overrides (tests).
pub fn load_with_env(
    path: &Path,
    env: Option<BTreeMap<String, String>>,
) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    build(&text, env, Purpose::Daemon)
}

/// Parses config text without environment overrides.
pub fn load_str(text: &str) -> Result<Config, ConfigErrors> {
    build(text, Some(BTreeMap::new()), Purpose::Daemon)
}

/// Loads a config for `edgewatch backtest`, which uses only its `[[rules]]` and `[pipeline]`
/// settings: a detection profile without `[[sources]]` is accepted; everything else is
/// checked as for the daemon.
pub fn load_profile(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    build(&text, None, Purpose::Backtest)
}

/// What a config is loaded for.
#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    Daemon,
    Backtest,
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem::new(
            "config",
            format!("cannot read {}: {e}", path.display()),
        )])
    })
}

fn build(
    text: &str,
    env: Option<BTreeMap<String, String>>,
    purpose: Purpose,
) -> Result<Config, ConfigErrors> {
    let environment = Environment::with_prefix("EDGEWATCH")
        .prefix_separator("__")
        .separator("__")
        .source(env.map(|m| m.into_iter().collect()));
    let root = config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .add_source(environment)
        .build()
        .and_then(|c| c.try_deserialize::<Map<String, Value>>())
        .map_err(|e| ConfigErrors(vec![Problem::new("config", e.to_string())]))?;

    let mut problems = Vec::new();
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(Problem::new(
                key.clone(),
                format!("unknown key (expected one of: {})", SECTIONS.join(", ")),
            ));
        }
    }
    let mut root = root;
    let mut take = |k: &str| root.remove(k);
    let gateway = match take("gateway") {
        Some(v) => section::<GatewayConfig>("gateway", v, &mut problems),
        None => {
            problems.push(Problem::new(
                "gateway.id",
                "missing (every gateway needs an id)",
            ));
            None
        }
    };
    let store = optional_section::<StoreConfig>("store", take("store"), &mut problems);
    let web = optional_section::<WebConfig>("web", take("web"), &mut problems);
    let pipeline = optional_section::<PipelineConfig>("pipeline", take("pipeline"), &mut problems);
    let log = optional_section::<LogConfig>("log", take("log"), &mut problems);
    let shutdown = optional_section::<ShutdownConfig>("shutdown", take("shutdown"), &mut problems);
    // Profiles first: Modbus sources resolve their `profile` while they are parsed.
    let profiles = super::modbus::profiles(take("profiles"), &mut problems);
    // A missing `[[sources]]` is reported by `validate` (the same problem as an empty list).
    let sources = match take("sources") {
        None => Vec::new(),
        some => entries("sources", some, &mut problems, |path, table, problems| {
            source(path, table, &profiles, problems)
        }),
    };
    let (source_at, sources) = sources.into_iter().unzip();
    let (rule_at, rules) = entries("rules", take("rules"), &mut problems, rule)
        .into_iter()
        .unzip();
    let (sink_at, sinks) = entries("sinks", take("sinks"), &mut problems, sink)
        .into_iter()
        .unzip();
    let positions = Positions {
        sources: source_at,
        rules: rule_at,
        sinks: sink_at,
    };

    let (Some(gateway), Some(store), Some(web), Some(pipeline), Some(log), Some(shutdown)) =
        (gateway, store, web, pipeline, log, shutdown)
    else {
        return Err(ConfigErrors(problems));
    };
    let config = Config {
        gateway,
        store,
        web,
        pipeline,
        log,
        shutdown,
        sources,
        rules,
        sinks,
        profiles,
    };
    problems.extend(validate(&config, &positions));
    if purpose == Purpose::Backtest {
        problems.retain(|p| !(p.path == "sources" && config.sources.is_empty()));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Deserializes `value` as `T`, recording any error under `prefix` plus the path inside.
pub(super) fn section<T: DeserializeOwned>(
    prefix: &str,
    value: Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner.is_empty() || inner == "." {
                prefix.to_string()
            } else {
                format!("{prefix}.{inner}")
            };
            problems.push(Problem::new(
                path,
                clean_reason(&e.into_inner().to_string()),
            ));
            None
        }
    }
}

fn optional_section<T: DeserializeOwned + Default>(
    prefix: &str,
    value: Option<Value>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match value {
        None => Some(T::default()),
        Some(v) => section(prefix, v, problems),
    }
}

/// The config crate appends ` for key `...`` and origins to some messages; the path is
/// already in front, so keep only the reason.
fn clean_reason(msg: &str) -> String {
    let msg = msg.split(" for key `").next().unwrap_or(msg);
    msg.split(" in ").next().unwrap_or(msg).trim().to_string()
}

/// Where each parsed entry of an array of tables stood in the file: an entry that failed to
/// parse is left out of the config, so the index in the config is not the index in the file.
pub(super) struct Positions {
    pub sources: Vec<usize>,
    pub rules: Vec<usize>,
    pub sinks: Vec<usize>,
}

/// Deserializes an array of tables (`[[sources]]`), each through `parse`; each entry comes
/// with its index in the file.
fn entries<T>(
    name: &str,
    value: Option<Value>,
    problems: &mut Vec<Problem>,
    // Parses one entry of an array of tables, given its path (`sources[2]`).
    mut parse: impl FnMut(&str, Map<String, Value>, &mut Vec<Problem>) -> Option<T>,
) -> Vec<(usize, T)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let array = match value.into_array() {
        Ok(a) => a,
        Err(_) => {
            problems.push(Problem::new(name, "must be an array of tables ([[...]])"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in array.into_iter().enumerate() {
        let path = format!("{name}[{i}]");
        match item.into_table() {
            Ok(table) => {
                if let Some(v) = parse(&path, table, problems) {
                    out.push((i, v));
                }
            }
            Err(_) => problems.push(Problem::new(path, "must be a table")),
        }
    }
    out
}

/// Removes `key` from `table` and deserializes it, recording a problem when it is malformed.
pub(super) fn field<T: DeserializeOwned>(
    path: &str,
    table: &mut Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<T>, ()> {
    match table.remove(key) {
        None => Ok(None),
        Some(v) => section::<T>(&format!("{path}.{key}"), v, problems)
            .map(Some)
            .ok_or(()),
    }
}

pub(super) fn required<T: DeserializeOwned>(
    path: &str,
    table: &mut Map<String, Value>,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match field::<T>(path, table, key, problems) {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                format!("missing ({what})"),
            ));
            None
        }
        Err(()) => None,
    }
}

pub(super) fn rest(table: Map<String, Value>) -> Value {
    Value::new(None, ValueKind::Table(table))
}

const SOURCE_TYPES: &str = "sim, mqtt, http, modbus_tcp, modbus_rtu";

fn source(
    path: &str,
    mut table: Map<String, Value>,
    profiles: &BTreeMap<String, ProfileConfig>,
    problems: &mut Vec<Problem>,
) -> Option<SourceConfig> {
    let kind: Option<String> = required(
        path,
        &mut table,
        "type",
        &format!("one of: {SOURCE_TYPES}"),
        problems,
    );
    let name: Option<String> = required(path, &mut table, "name", "a unique source name", problems);
    let tags = field::<BTreeMap<String, String>>(path, &mut table, "tags", problems);
    let kind = match kind.as_deref() {
        Some("sim") => section::<SimConfig>(path, rest(table), problems).map(SourceKind::Sim),
        Some("mqtt") => super::load_io::mqtt_source(path, table, problems).map(SourceKind::Mqtt),
        Some("http") => super::load_io::http_source(path, table, problems).map(SourceKind::Http),
        Some("modbus_tcp") => {
            super::modbus::tcp_source(path, table, profiles, problems).map(SourceKind::ModbusTcp)
        }
        Some("modbus_rtu") => {
            super::modbus::rtu_source(path, table, profiles, problems).map(SourceKind::ModbusRtu)
        }
        Some(other) => {
            problems.push(Problem::new(
                format!("{path}.type"),
                format!("unknown source type `{other}` (expected one of: {SOURCE_TYPES})"),
            ));
            None
        }
        None => None,
    };
    Some(SourceConfig {
        name: name?,
        tags: tags.ok()?.unwrap_or_default(),
        kind: kind?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    min: Option<f64>,
    min_clear: Option<f64>,
    max: Option<f64>,
    max_clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFields {
    raise: f64,
    clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZscoreFields {
    #[serde(default = "ZscoreFields::default_window_secs")]
    window_secs: f64,
    #[serde(default = "ZscoreFields::default_raise")]
    raise: f64,
    #[serde(default = "ZscoreFields::default_clear")]
    clear: f64,
    #[serde(default = "ZscoreFields::default_min_samples")]
    min_samples: u32,
    #[serde(default)]
    baseline: super::ZscoreBaseline,
}

impl ZscoreFields {
    fn default_window_secs() -> f64 {
        300.0
    }
    fn default_raise() -> f64 {
        4.0
    }
    fn default_clear() -> f64 {
        2.5
    }
    fn default_min_samples() -> u32 {
        30
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StuckFields {
    raise_secs: f64,
    #[serde(default)]
    tolerance: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilentFields {
    raise_secs: f64,
}

/// Flap suppression is off unless a rule sets `flap_window_secs`; `flap_max_events` then
/// defaults to 3 (the third episode within the window lasts until the clear condition held
/// for the whole window).
const DEFAULT_FLAP_WINDOW_SECS: f64 = 0.0;
const DEFAULT_FLAP_MAX_EVENTS: u32 = 3;

const RULE_KINDS: &str = "limit, rate, zscore, stuck, silent, multivariate";

fn rule(
    path: &str,
    mut table: Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<RuleConfig> {
    let kind: Option<String> = required(path, &mut table, "kind", RULE_KINDS, problems);
    let pattern: Option<String> = required(
        path,
        &mut table,
        "match",
        "a sensor/field glob such as \"*/vibration\" (a sensor glob for multivariate)",
        problems,
    );
    let name = field::<String>(path, &mut table, "name", problems);
    let severity = field::<Severity>(path, &mut table, "severity", problems);
    let min_duration = field::<f64>(path, &mut table, "min_duration_secs", problems);
    let holdoff = field::<f64>(path, &mut table, "holdoff_secs", problems);
    let flap_window = field::<f64>(path, &mut table, "flap_window_secs", problems);
    let flap_max = field::<u32>(path, &mut table, "flap_max_events", problems);
    let body = rest(table);
    let kind = match kind.as_deref() {
        Some("limit") => section::<LimitFields>(path, body, problems).map(|f| RuleKind::Limit {
            min: f.min,
            min_clear: f.min_clear,
            max: f.max,
            max_clear: f.max_clear,
        }),
        Some("rate") => section::<RateFields>(path, body, problems).map(|f| RuleKind::Rate {
            raise: f.raise,
            clear: f.clear.unwrap_or(f.raise),
        }),
        Some("zscore") => section::<ZscoreFields>(path, body, problems).map(|f| RuleKind::Zscore {
            window_secs: f.window_secs,
            raise: f.raise,
            clear: f.clear,
            min_samples: f.min_samples,
            baseline: f.baseline,
        }),
        Some("stuck") => section::<StuckFields>(path, body, problems).map(|f| RuleKind::Stuck {
            raise_secs: f.raise_secs,
            tolerance: f.tolerance,
        }),
        Some("silent") => section::<SilentFields>(path, body, problems).map(|f| RuleKind::Silent {
            raise_secs: f.raise_secs,
        }),
        Some("multivariate") => section::<super::MultivariateRule>(path, body, problems)
            .map(|f| RuleKind::Multivariate(Box::new(f))),
        Some(other) => {
            problems.push(Problem::new(
                format!("{path}.kind"),
                format!("unknown rule kind `{other}` (expected one of: {RULE_KINDS})"),
            ));
            None
        }
        None => None,
    };
    let kind = kind?;
    let pattern = pattern?;
    Some(RuleConfig {
        name: name
            .ok()?
            .unwrap_or_else(|| format!("{}:{pattern}", kind.name())),
        pattern,
        severity: severity.ok()?.unwrap_or_default(),
        min_duration_secs: min_duration.ok()?.unwrap_or(0.0),
        holdoff_secs: holdoff.ok()?.unwrap_or(0.0),
        flap_window_secs: flap_window.ok()?.unwrap_or(DEFAULT_FLAP_WINDOW_SECS),
        flap_max_events: flap_max.ok()?.unwrap_or(DEFAULT_FLAP_MAX_EVENTS),
        kind,
    })
}

fn sink(
    path: &str,
    mut table: Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<SinkConfig> {
    let kind: Option<String> = required(
        path,
        &mut table,
        "type",
        "one of: influxdb, mqtt, webhook",
        problems,
    );
    let name: Option<String> = required(path, &mut table, "name", "a unique sink name", problems);
    let kind = match kind.as_deref() {
        Some("influxdb") => {
            section::<InfluxConfig>(path, rest(table), problems).map(SinkKind::Influxdb)
        }
        Some("mqtt") => super::load_io::mqtt_sink(path, table, problems).map(SinkKind::Mqtt),
        Some("webhook") => {
            section::<WebhookConfig>(path, rest(table), problems).map(SinkKind::Webhook)
        }
        Some(other) => {
            problems.push(Problem::new(
                format!("{path}.type"),
                format!("unknown sink type `{other}` (expected one of: influxdb, mqtt, webhook)"),
            ));
            None
        }
        None => None,
    };
    Some(SinkConfig {
        name: name?,
        kind: kind?,
    })
}
