//! Tests of the Modbus sources and `[profiles.NAME]`: defaults, profile resolution, and every
//! problem at its key path.

use super::*;
use crate::modbus::{DataType, Table, WordOrder};

const HEAD: &str = r#"
[gateway]
id = "gw"
"#;

fn load(body: &str) -> Result<Config, Vec<String>> {
    load_str(&format!("{HEAD}{body}")).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn problems(body: &str) -> Vec<String> {
    match load(body) {
        Ok(_) => panic!("expected the config to be rejected:\n{body}"),
        Err(p) => p,
    }
}

fn assert_problem(body: &str, expected: &str) {
    let p = problems(body);
    assert!(
        p.iter().any(|x| x.starts_with(expected)),
        "expected a problem starting with `{expected}`, got {p:#?}"
    );
}

const TCP: &str = r#"
[[sources]]
type = "modbus_tcp"
name = "press-1"
host = "127.0.0.1"
"#;

fn tcp(extra: &str) -> String {
    format!("{TCP}{extra}")
}

const REGS: &str = r#"registers = [{ name = "t", table = "holding", address = 0, type = "f32" }]"#;

#[test]
fn a_minimal_tcp_source_gets_the_documented_defaults() {
    let c = load(&tcp(REGS)).unwrap();
    let SourceKind::ModbusTcp(m) = &c.sources[0].kind else {
        panic!("expected modbus_tcp")
    };
    assert_eq!(m.port, 502);
    let p = &m.polling;
    assert_eq!(p.units, [1]);
    assert_eq!(
        (p.interval_ms, p.timeout_ms, p.retries, p.max_gap),
        (1000, 1000, 1, 8)
    );
    assert_eq!((p.max_read_registers, p.max_read_bits), (125, 2000));
    assert_eq!((p.backoff_initial_ms, p.backoff_max_ms), (1000, 30_000));
    assert_eq!(p.sensor_id("press-1", 1), "press-1");
    let r = &p.registers[0];
    assert_eq!(
        (r.table, r.address, r.data_type, r.order),
        (Table::Holding, 0, DataType::F32, WordOrder::Abcd)
    );
    assert_eq!((r.scale, r.offset), (1.0, 0.0));
    assert_eq!(c.sources[0].kind.type_name(), "modbus_tcp");
}

#[test]
fn the_spec_example_loads_with_every_key() {
    let c = load(
        r#"
[[sources]]
type = "modbus_tcp"
name = "press-1"
host = "127.0.0.1"
port = 1502
units = [1, 2, 3]
sensor_id = "press-{unit}"
interval_ms = 500
timeout_ms = 200
retries = 2
max_gap = 4
max_read_registers = 100
max_read_bits = 800
backoff_initial_ms = 100
backoff_max_ms = 5000
registers = [
  { name = "temperature", table = "holding", address = 0, type = "f32", order = "CDAB", scale = 0.1, offset = -40.0, unit = "degC" },
  { name = "alarm", table = "holding_register", address = 2, type = "bit", bit = 3 },
  { name = "running", table = "coil", address = 16, type = "bool" },
  { name = "energy", table = "input_register", address = 10, type = "u64", order = "DCBA", interval_ms = 10000 },
]

[[sources]]
type = "modbus_rtu"
name = "bus-1"
device = "/dev/ttyUSB0"
baud = 19200
parity = "even"
data_bits = 7
stop_bits = 2
units = [1, 2]
profile = "power-meter"

[profiles.power-meter]
registers = [{ name = "power", table = "input", address = 0, type = "i32" }]
"#,
    )
    .unwrap();
    let SourceKind::ModbusTcp(m) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!(m.polling.units, [1, 2, 3]);
    assert_eq!(m.polling.sensor_id("press-1", 2), "press-2");
    assert_eq!(m.polling.limits().max_gap, 4);
    let regs = &m.polling.registers;
    assert_eq!(regs[0].order, WordOrder::Cdab);
    assert_eq!(regs[0].unit.as_deref(), Some("degC"));
    assert_eq!(regs[1].data_type, DataType::Bit(3));
    assert_eq!(regs[1].table, Table::Holding);
    assert_eq!(regs[3].table, Table::Input);
    assert_eq!(regs[3].interval_ms, Some(10_000));
    let SourceKind::ModbusRtu(r) = &c.sources[1].kind else {
        panic!()
    };
    assert_eq!(
        (r.baud, r.parity, r.data_bits, r.stop_bits),
        (19200, Parity::Even, 7, 2)
    );
    assert_eq!(r.inter_frame_silence_us, 2006);
    assert_eq!(r.polling.sensor_id("bus-1", 2), "bus-1-2");
    assert_eq!(r.polling.profile.as_deref(), Some("power-meter"));
    assert_eq!(r.polling.registers[0].name, "power");
    assert_eq!(c.profiles["power-meter"].registers.len(), 1);
}

#[test]
fn the_inter_frame_silence_is_three_and_a_half_characters_but_at_least_1750_us() {
    assert_eq!(default_inter_frame_silence_us(9600), 4011);
    assert_eq!(default_inter_frame_silence_us(19200), 2006);
    assert_eq!(default_inter_frame_silence_us(115_200), 1750);
}

#[test]
fn profile_and_registers_exclude_each_other() {
    assert_problem(
        &format!("{TCP}profile = \"x\"\n{REGS}\n[profiles.x]\n{REGS}\n"),
        "sources[0].profile: give either",
    );
    assert_problem(TCP, "sources[0].registers: missing");
}

#[test]
fn an_unknown_profile_is_named_with_the_defined_ones() {
    assert_problem(
        &format!("{TCP}profile = \"nope\"\n[profiles.meter]\n{REGS}\n"),
        "sources[0].profile: unknown profile `nope` (defined: meter)",
    );
}

#[test]
fn unit_ids_are_checked_at_their_key() {
    assert_problem(
        &tcp(&format!("unit = 1\nunits = [2]\n{REGS}")),
        "sources[0].units: give either",
    );
    assert_problem(
        &tcp(&format!("units = []\n{REGS}")),
        "sources[0].units: must list",
    );
    assert_problem(
        &tcp(&format!("units = [1, 2, 1]\n{REGS}")),
        "sources[0].units[2]: duplicate unit id 1",
    );
    assert_problem(
        &tcp(&format!("unit = 256\n{REGS}")),
        "sources[0].unit: unit id 256",
    );
    // TCP allows 0 and 248..=255 (gateways), RTU does not.
    assert!(load(&tcp(&format!("units = [0, 255]\n{REGS}"))).is_ok());
    let rtu = format!(
        "[[sources]]\ntype = \"modbus_rtu\"\nname = \"b\"\ndevice = \"/dev/x\"\nunits = [0, 248]\n{REGS}\n"
    );
    let p = problems(&rtu);
    assert!(
        p.iter()
            .any(|x| x.starts_with("sources[0].units[0]: unit id 0 is out of range (1..=247)")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.starts_with("sources[0].units[1]: unit id 248")),
        "{p:?}"
    );
}

#[test]
fn register_problems_are_reported_at_the_register() {
    // The last register fits exactly.
    assert!(
        load(&tcp(
            r#"registers = [{ name = "a", table = "holding", address = 65532, type = "u64" }]"#
        ))
        .is_ok()
    );
    let cases = [
        (
            r#"registers = [{ name = "a", table = "holding", address = 0, type = "u16" }, { name = "a", table = "input", address = 1, type = "u16" }]"#,
            "sources[0].registers[1].name: duplicate register name `a` (also sources[0].registers[0])",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 65535, type = "f32" }]"#,
            "sources[0].registers[0].address: a f32 at 65535 needs 2 registers and runs past address 65535",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 70000, type = "u16" }]"#,
            "sources[0].registers[0].address",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "bit", bit = 16 }]"#,
            "sources[0].registers[0].bit: must be 0..=15",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "bit" }]"#,
            "sources[0].registers[0].bit: missing",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "u16", bit = 2 }]"#,
            "sources[0].registers[0].bit: only allowed with type = \"bit\"",
        ),
        (
            r#"registers = [{ name = "a", table = "input", address = 1, type = "bool" }]"#,
            "sources[0].registers[0].type: bool is for coil and discrete_input",
        ),
        (
            r#"registers = [{ name = "a", table = "coil", address = 1, type = "u16" }]"#,
            "sources[0].registers[0].type: coil holds bits",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "f16" }]"#,
            "sources[0].registers[0].type",
        ),
        (
            r#"registers = [{ name = "a", table = "memory", address = 1, type = "u16" }]"#,
            "sources[0].registers[0].table",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "u32", order = "ACBD" }]"#,
            "sources[0].registers[0].order",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "u16", colour = "red" }]"#,
            "sources[0].registers[0]",
        ),
        (
            r#"registers = [{ name = "a", table = "holding", address = 1, type = "u16", interval_ms = 0 }]"#,
            "sources[0].registers[0].interval_ms: must be greater than 0",
        ),
        (
            r#"registers = []"#,
            "sources[0].registers: must hold at least one register",
        ),
    ];
    for (regs, expected) in cases {
        assert_problem(&tcp(regs), expected);
    }
}

#[test]
fn profile_register_problems_are_reported_in_the_profile() {
    let body = format!(
        "{TCP}profile = \"m\"\n[profiles.m]\nregisters = [{{ name = \"a\", table = \"input\", address = 0, type = \"bool\" }}]\n"
    );
    let p = problems(&body);
    assert!(
        p.iter()
            .any(|x| x.starts_with("profiles.m.registers[0].type: bool is for")),
        "{p:?}"
    );
    // The broken profile exists: the source does not report it as unknown too.
    assert!(!p.iter().any(|x| x.contains("unknown profile")), "{p:?}");
    assert_problem(
        &format!("{TCP}profile = \"m\"\n[profiles.m]\n{REGS}\nextra = 1\n"),
        "profiles.m.extra: unknown key",
    );
}

#[test]
fn read_limits_and_timing_are_range_checked() {
    for (extra, expected) in [
        (
            "max_read_registers = 0",
            "sources[0].max_read_registers: must be 1..=125",
        ),
        (
            "max_read_registers = 126",
            "sources[0].max_read_registers: must be 1..=125",
        ),
        (
            "max_read_bits = 2001",
            "sources[0].max_read_bits: must be 1..=2000",
        ),
        (
            "max_read_bits = 0",
            "sources[0].max_read_bits: must be 1..=2000",
        ),
        (
            "max_read_registers = 1",
            "sources[0].max_read_registers: must be at least 2 (register `t` is a f32)",
        ),
        (
            "interval_ms = 0",
            "sources[0].interval_ms: must be greater than 0",
        ),
        (
            "timeout_ms = 0",
            "sources[0].timeout_ms: must be greater than 0",
        ),
        (
            "backoff_max_ms = 10",
            "sources[0].backoff_max_ms: must be at least backoff_initial_ms",
        ),
        (
            "units = [1, 2]\nsensor_id = \"x\"",
            "sources[0].sensor_id: must contain `{unit}`",
        ),
        ("port = 0", "sources[0].port: must be greater than 0"),
        ("hostname = \"x\"", "sources[0]"),
    ] {
        assert_problem(&tcp(&format!("{extra}\n{REGS}")), expected);
    }
}

#[test]
fn serial_settings_are_checked() {
    let rtu = |extra: &str| {
        format!(
            "[[sources]]\ntype = \"modbus_rtu\"\nname = \"b\"\ndevice = \"/dev/x\"\n{extra}\n{REGS}\n"
        )
    };
    assert_problem(
        &rtu("data_bits = 6"),
        "sources[0].data_bits: must be 7 or 8",
    );
    assert_problem(
        &rtu("stop_bits = 3"),
        "sources[0].stop_bits: must be 1 or 2",
    );
    assert_problem(&rtu("parity = \"mark\""), "sources[0].parity");
    assert_problem(&rtu("baud = 0"), "sources[0].baud: must be greater than 0");
    assert_problem(
        "[[sources]]\ntype = \"modbus_rtu\"\nname = \"b\"\nregisters = []\n",
        "sources[0].device: missing (the serial device",
    );
    assert_problem(
        "[[sources]]\ntype = \"modbus_tcp\"\nname = \"b\"\nregisters = []\n",
        "sources[0].host: missing",
    );
    let c = load(&rtu("inter_frame_silence_us = 5000")).unwrap();
    let SourceKind::ModbusRtu(r) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!((r.baud, r.inter_frame_silence_us), (9600, 5000));
}

/// The commented Modbus example of `config/edgewatch.toml` (from its first `# [[sources]]` with
/// a modbus type to the next blank line), uncommented.
fn reference_example() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edgewatch.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w[0] == "# [[sources]]" && w[1].starts_with("# type = \"modbus_"))
        .expect("config/edgewatch.toml documents the modbus sources");
    lines[start..]
        .iter()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_commented_modbus_example_of_the_reference_config_is_valid() {
    let example = reference_example();
    let c = load(&example).unwrap_or_else(|p| panic!("{p:#?}\n{example}"));
    let kinds: Vec<&str> = c.sources.iter().map(|s| s.kind.type_name()).collect();
    assert_eq!(kinds, ["modbus_tcp", "modbus_rtu"]);
    assert_eq!(c.profiles["power-meter"].registers.len(), 4);
}
