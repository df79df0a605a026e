//! `[[sources]] type = "modbus_tcp"` / `"modbus_rtu"` and the top-level `[profiles.NAME]`
//! register maps: the typed config and its parsing. A source's register list is resolved at
//! load time (inline `registers`, or those of its `profile`), so the scheduler only ever sees
//! [`ModbusPolling::registers`]. Semantic checks are in `validate_modbus.rs`; a source's
//! run right after it is parsed (where its index in the file is known), the profiles' in
//! `validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use config::{Map, Value};
use serde::Deserialize;

use super::load::{Problem, rest, section};
use crate::modbus::{DataType, Limits, PointSpec, Table, WordOrder};

/// `type = "modbus_tcp"`: one Modbus TCP server (a device or a gateway), one connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusTcpConfig {
    /// Host name or address of the server.
    pub host: String,
    /// TCP port (default 502).
    pub port: u16,
    pub polling: ModbusPolling,
}

/// `type = "modbus_rtu"`: a serial line with one or more units, polled in turn.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusRtuConfig {
    /// Serial device (`/dev/ttyUSB0`).
    pub device: PathBuf,
    /// Baud rate (default 9600).
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8 (default 8).
    pub data_bits: u8,
    /// 1 or 2 (default 1).
    pub stop_bits: u8,
    /// Silence kept between two frames on the line. Default (resolved at load): 3.5
    /// character times at `baud` (11 bits a character), at least 1750 µs.
    pub inter_frame_silence_us: u64,
    pub polling: ModbusPolling,
}

/// Serial parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// What to poll and how often: shared by both Modbus source kinds.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusPolling {
    /// Unit ids (slave ids) polled, each one sensor; from `unit` or `units` (default `[1]`).
    pub units: Vec<u8>,
    /// Sensor id template; `{unit}` is replaced by the unit id. `None`: see
    /// [`ModbusPolling::sensor_id`].
    pub sensor_id: Option<String>,
    /// Poll interval of the points without their own `interval_ms`.
    pub interval_ms: u64,
    /// A request without an answer after this long has failed.
    pub timeout_ms: u64,
    /// While the unit is up: extra attempts of a request that failed fast (a timed-out one is
    /// retried on the next cycle; the unit is down after `1 + retries` timeouts in a row).
    pub retries: u32,
    /// Planner: merge reads across holes of at most this many registers (bits).
    pub max_gap: u16,
    /// At most this many registers per read (1..=125).
    pub max_read_registers: u16,
    /// At most this many bits per read (1..=2000).
    pub max_read_bits: u16,
    /// A unit that is down is retried after this long, doubling with jitter ...
    pub backoff_initial_ms: u64,
    /// ... up to this.
    pub backoff_max_ms: u64,
    /// The `[profiles.NAME]` the registers came from, if any.
    pub profile: Option<String>,
    /// The points of every unit, resolved from `registers` or the profile.
    pub registers: Vec<PointSpec>,
}

impl ModbusPolling {
    /// The sensor id of `unit`: the configured template with `{unit}` replaced; by default
    /// the source name with one unit, `{name}-{unit}` with several.
    pub fn sensor_id(&self, source_name: &str, unit: u8) -> String {
        match &self.sensor_id {
            Some(t) => t.replace("{unit}", &unit.to_string()),
            None if self.units.len() == 1 => source_name.to_string(),
            None => format!("{source_name}-{unit}"),
        }
    }

    /// The planner limits of this source.
    pub fn limits(&self) -> Limits {
        Limits {
            max_registers: self.max_read_registers,
            max_bits: self.max_read_bits,
            max_gap: self.max_gap,
        }
    }
}

/// `[profiles.NAME]`: a register map shared by many devices.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileConfig {
    pub registers: Vec<PointSpec>,
}

/// The default inter-frame silence at `baud`: 3.5 characters of 11 bits, at least 1750 µs.
pub fn default_inter_frame_silence_us(baud: u32) -> u64 {
    if baud == 0 {
        return 1750;
    }
    (38_500_000u64.div_ceil(u64::from(baud))).max(1750)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollingFields {
    #[serde(default)]
    unit: Option<u32>,
    #[serde(default)]
    units: Option<Vec<u32>>,
    #[serde(default)]
    sensor_id: Option<String>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_max_gap")]
    max_gap: u16,
    #[serde(default = "default_max_read_registers")]
    max_read_registers: u16,
    #[serde(default = "default_max_read_bits")]
    max_read_bits: u16,
    #[serde(default = "default_backoff_initial_ms")]
    backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    backoff_max_ms: u64,
    #[serde(default)]
    profile: Option<String>,
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    8
}
fn default_max_read_registers() -> u16 {
    crate::modbus::plan::MAX_READ_REGISTERS
}
fn default_max_read_bits() -> u16 {
    crate::modbus::plan::MAX_READ_BITS
}
fn default_backoff_initial_ms() -> u64 {
    1000
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpFields {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
}

fn default_port() -> u16 {
    502
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RtuFields {
    device: PathBuf,
    #[serde(default = "default_baud")]
    baud: u32,
    #[serde(default)]
    parity: Parity,
    #[serde(default = "default_data_bits")]
    data_bits: u8,
    #[serde(default = "default_stop_bits")]
    stop_bits: u8,
    #[serde(default)]
    inter_frame_silence_us: Option<u64>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// The config names of the data types.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TypeName {
    Bool,
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

/// One entry of `registers = [...]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFields {
    name: String,
    table: Table,
    address: u16,
    #[serde(rename = "type")]
    data_type: TypeName,
    #[serde(default)]
    order: WordOrder,
    #[serde(default)]
    bit: Option<u8>,
    #[serde(default = "default_scale")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    interval_ms: Option<u64>,
}

fn default_scale() -> f64 {
    1.0
}

const TCP_KEYS: &[&str] = &["host", "port"];
const RTU_KEYS: &[&str] = &[
    "device",
    "baud",
    "parity",
    "data_bits",
    "stop_bits",
    "inter_frame_silence_us",
];

fn split(table: &mut Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| table.remove(*k).map(|v| ((*k).to_string(), v)))
        .collect()
}

/// Whether the required `key` is in `table`; a problem at its path when it is not.
fn present(
    path: &str,
    table: &Map<String, Value>,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> bool {
    let found = table.contains_key(key);
    if !found {
        problems.push(Problem::new(
            format!("{path}.{key}"),
            format!("missing ({what})"),
        ));
    }
    found
}

/// `[[sources]] type = "modbus_tcp"`.
pub(super) fn tcp_source(
    path: &str,
    mut table: Map<String, Value>,
    profiles: &BTreeMap<String, ProfileConfig>,
    problems: &mut Vec<Problem>,
) -> Option<ModbusTcpConfig> {
    let transport = split(&mut table, TCP_KEYS);
    let fields = present(
        path,
        &transport,
        "host",
        "the server's host name or address",
        problems,
    )
    .then(|| section::<TcpFields>(path, rest(transport), problems))
    .flatten();
    let polling = polling(path, table, profiles, 0..=255, problems);
    let fields = fields?;
    let config = ModbusTcpConfig {
        host: fields.host,
        port: fields.port,
        polling: polling?,
    };
    super::validate_modbus::tcp_source(path, &config, problems);
    Some(config)
}

/// `[[sources]] type = "modbus_rtu"`.
pub(super) fn rtu_source(
    path: &str,
    mut table: Map<String, Value>,
    profiles: &BTreeMap<String, ProfileConfig>,
    problems: &mut Vec<Problem>,
) -> Option<ModbusRtuConfig> {
    let transport = split(&mut table, RTU_KEYS);
    let fields = present(
        path,
        &transport,
        "device",
        "the serial device, e.g. /dev/ttyUSB0",
        problems,
    )
    .then(|| section::<RtuFields>(path, rest(transport), problems))
    .flatten();
    let polling = polling(path, table, profiles, 1..=247, problems);
    let f = fields?;
    let config = ModbusRtuConfig {
        inter_frame_silence_us: f
            .inter_frame_silence_us
            .unwrap_or_else(|| default_inter_frame_silence_us(f.baud)),
        device: f.device,
        baud: f.baud,
        parity: f.parity,
        data_bits: f.data_bits,
        stop_bits: f.stop_bits,
        polling: polling?,
    };
    super::validate_modbus::rtu_source(path, &config, problems);
    Some(config)
}

fn polling(
    path: &str,
    mut table: Map<String, Value>,
    profiles: &BTreeMap<String, ProfileConfig>,
    unit_range: std::ops::RangeInclusive<u32>,
    problems: &mut Vec<Problem>,
) -> Option<ModbusPolling> {
    let inline = table
        .remove("registers")
        .map(|v| registers(&format!("{path}.registers"), v, problems));
    let f = section::<PollingFields>(path, rest(table), problems)?;
    let units = units(path, &f, unit_range, problems);
    let registers = match (&f.profile, inline) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                format!("{path}.profile"),
                "give either `profile` or `registers`, not both",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::new(
                format!("{path}.registers"),
                "missing (registers = [...] or profile = \"NAME\" of a [profiles.NAME])",
            ));
            None
        }
        (None, Some(inline)) => Some(inline),
        (Some(name), None) => match profiles.get(name) {
            Some(p) => Some(p.registers.clone()),
            None => {
                let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                problems.push(Problem::new(
                    format!("{path}.profile"),
                    if known.is_empty() {
                        format!("unknown profile `{name}` (no [profiles.NAME] is defined)")
                    } else {
                        format!("unknown profile `{name}` (defined: {})", known.join(", "))
                    },
                ));
                None
            }
        },
    };
    Some(ModbusPolling {
        units: units?,
        sensor_id: f.sensor_id,
        interval_ms: f.interval_ms,
        timeout_ms: f.timeout_ms,
        retries: f.retries,
        max_gap: f.max_gap,
        max_read_registers: f.max_read_registers,
        max_read_bits: f.max_read_bits,
        backoff_initial_ms: f.backoff_initial_ms,
        backoff_max_ms: f.backoff_max_ms,
        profile: f.profile,
        registers: registers?,
    })
}

/// `unit` or `units`: exactly one of them (default unit 1), each id in `range`, no duplicates.
fn units(
    path: &str,
    f: &PollingFields,
    range: std::ops::RangeInclusive<u32>,
    problems: &mut Vec<Problem>,
) -> Option<Vec<u8>> {
    let before = problems.len();
    let ids: Vec<(String, u32)> = match (f.unit, &f.units) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                format!("{path}.units"),
                "give either `unit` or `units`, not both",
            ));
            return None;
        }
        (Some(u), None) => vec![(format!("{path}.unit"), u)],
        (None, Some(list)) => {
            if list.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.units"),
                    "must list at least one unit id",
                ));
                return None;
            }
            list.iter()
                .enumerate()
                .map(|(i, u)| (format!("{path}.units[{i}]"), *u))
                .collect()
        }
        (None, None) => vec![(format!("{path}.unit"), 1)],
    };
    let mut seen = BTreeSet::new();
    let mut units = Vec::new();
    for (key, id) in ids {
        if !range.contains(&id) {
            problems.push(Problem::new(
                key,
                format!(
                    "unit id {id} is out of range ({}..={})",
                    range.start(),
                    range.end()
                ),
            ));
        } else if !seen.insert(id) {
            problems.push(Problem::new(key, format!("duplicate unit id {id}")));
        } else {
            units.push(id as u8);
        }
    }
    (problems.len() == before).then_some(units)
}

/// A `registers = [...]` array, each entry at `path[i]`. Entries with problems are left out
/// (the problems reject the config; the rest is kept so that a source using a broken profile
/// does not also report it as unknown).
fn registers(path: &str, value: Value, problems: &mut Vec<Problem>) -> Vec<PointSpec> {
    let Ok(array) = value.into_array() else {
        problems.push(Problem::new(
            path,
            "must be an array of tables ({ name = ..., table = ..., address = ..., type = ... })",
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, v) in array.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(r) = section::<RegisterFields>(&p, v, problems)
            && let Some(point) = point(&p, r, problems)
        {
            out.push(point);
        }
    }
    out
}

fn point(path: &str, r: RegisterFields, problems: &mut Vec<Problem>) -> Option<PointSpec> {
    let data_type = match (r.data_type, r.bit) {
        (TypeName::Bit, Some(n)) => DataType::Bit(n),
        (TypeName::Bit, None) => {
            problems.push(Problem::new(
                format!("{path}.bit"),
                "missing (type = \"bit\" needs bit = 0..15)",
            ));
            return None;
        }
        (_, Some(_)) => {
            problems.push(Problem::new(
                format!("{path}.bit"),
                "only allowed with type = \"bit\"",
            ));
            return None;
        }
        (TypeName::Bool, None) => DataType::Bool,
        (TypeName::U16, None) => DataType::U16,
        (TypeName::I16, None) => DataType::I16,
        (TypeName::U32, None) => DataType::U32,
        (TypeName::I32, None) => DataType::I32,
        (TypeName::U64, None) => DataType::U64,
        (TypeName::I64, None) => DataType::I64,
        (TypeName::F32, None) => DataType::F32,
        (TypeName::F64, None) => DataType::F64,
    };
    Some(PointSpec {
        name: r.name,
        table: r.table,
        address: r.address,
        data_type,
        order: r.order,
        scale: r.scale,
        offset: r.offset,
        unit: r.unit,
        interval_ms: r.interval_ms,
    })
}

/// The top-level `[profiles.NAME]` tables.
pub(super) fn profiles(
    value: Option<Value>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, ProfileConfig> {
    let mut out = BTreeMap::new();
    let Some(value) = value else {
        return out;
    };
    let Ok(table) = value.into_table() else {
        problems.push(Problem::new(
            "profiles",
            "must be a table of register maps ([profiles.NAME] registers = [...])",
        ));
        return out;
    };
    for (name, v) in table {
        let path = format!("profiles.{name}");
        let Ok(mut t) = v.into_table() else {
            problems.push(Problem::new(path, "must be a table (registers = [...])"));
            continue;
        };
        let regs = t.remove("registers");
        for key in t.keys() {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                "unknown key (expected: registers)",
            ));
        }
        match regs {
            None => problems.push(Problem::new(
                format!("{path}.registers"),
                "missing (the profile's register map)",
            )),
            Some(v) => {
                let registers = registers(&format!("{path}.registers"), v, problems);
                out.insert(name, ProfileConfig { registers });
            }
        }
    }
    out
}
