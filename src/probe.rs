//! `edgewatch probe`: commissioning checks against real devices, through the same link code
//! ([`crate::source::modbus::link`]) and core decoding as the daemon.
//!
//! - `edgewatch probe modbus --host H [--port P] --unit U --read holding:0..10 [--type f32]
//!   [--order ABCD] [--timeout-ms 1000]` (or `--serial /dev/ttyUSB0 --baud 19200 [--parity none]
//!   [--data-bits 8] [--stop-bits 1]` instead of `--host`): reads a range and prints one line
//!   per decoded value (address, raw registers in hex, value), or the exact error (exception
//!   name, timeout, connection refused). `--read` may be given several times.
//! - `edgewatch probe --config PATH --source NAME`: polls every unit of one configured Modbus
//!   source once with the scheduler's own poll function and prints sensor, field and value, or
//!   the error of each read.
//!
//! Exit status: 0 when every read succeeded, 1 when one failed, 2 for a command line clap
//! refuses, 64 for a usage error found here (a bad config, an unknown source, a type that does
//! not fit the table).

use std::io::Write;
use std::time::Duration;

use crate::config::{Config, ModbusPolling, Parity, SourceKind, default_inter_frame_silence_us};
use crate::modbus::{DataType, PointSpec, ReadData, Table, WordOrder, decode_point};
use crate::source::modbus::link::{Endpoint, Link, SerialSettings};
use crate::source::modbus::poll::{Outcome, Policy, poll_unit};
use crate::source::modbus::{
    PollPlan, rtu_endpoint, serial_data_bits, serial_parity, serial_stop_bits, tcp_endpoint,
};

/// `edgewatch probe modbus`.
#[derive(Clone, Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("transport").required(true).args(["host", "serial"]))]
pub struct ModbusArgs {
    /// Modbus TCP server (device or gateway).
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long, default_value_t = 502)]
    pub port: u16,
    /// Serial device of a Modbus RTU bus, instead of --host.
    #[arg(long)]
    pub serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    pub parity: ParityArg,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    pub data_bits: u8,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// Silence between frames on the serial line; default 3.5 characters at the baud rate.
    #[arg(long)]
    pub inter_frame_silence_us: Option<u64>,
    /// Unit id (slave id).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// `TABLE:START..END` (END exclusive) or `TABLE:ADDRESS`; tables: holding, input, coil,
    /// discrete_input. May be repeated.
    #[arg(long = "read", required = true, value_parser = parse_range)]
    pub reads: Vec<Range>,
    /// How to decode the values: u16 (default for registers), i16, u32, i32, u64, i64, f32,
    /// f64, or bool (bit tables).
    #[arg(long = "type", value_parser = parse_type)]
    pub data_type: Option<DataType>,
    /// Word and byte order of multi-register types: ABCD, CDAB, BADC, DCBA.
    #[arg(long, default_value = "ABCD", value_parser = parse_order)]
    pub order: WordOrder,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ParityArg {
    None,
    Even,
    Odd,
}

/// A `--read` range: `count` registers or bits of `table` from `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub table: Table,
    pub address: u16,
    pub count: u16,
}

pub fn parse_table(s: &str) -> Result<Table, String> {
    match s {
        "holding" | "holding_register" | "hr" => Ok(Table::Holding),
        "input" | "input_register" | "ir" => Ok(Table::Input),
        "coil" | "coils" => Ok(Table::Coil),
        "discrete_input" | "discrete_inputs" | "di" => Ok(Table::DiscreteInput),
        _ => Err(format!(
            "unknown table {s:?} (holding, input, coil, discrete_input)"
        )),
    }
}

/// `holding:0..10` or `holding:5`.
pub fn parse_range(s: &str) -> Result<Range, String> {
    let (table, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected TABLE:START..END or TABLE:ADDRESS"))?;
    let table = parse_table(table)?;
    let number = |n: &str| {
        n.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= 65536)
            .ok_or_else(|| format!("{s:?}: {n:?} is not an address (0..65535)"))
    };
    let (start, end) = match rest.split_once("..") {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let a = number(rest)?;
            (a, a + 1)
        }
    };
    if start >= end || start > 65535 {
        return Err(format!("{s:?}: the range is empty (END is exclusive)"));
    }
    Ok(Range {
        table,
        address: start as u16,
        count: u16::try_from(end - start).map_err(|_| format!("{s:?}: too long"))?,
    })
}

pub fn parse_type(s: &str) -> Result<DataType, String> {
    DataType::ALL
        .into_iter()
        .find(|t| t.name() == s && !matches!(t, DataType::Bit(_)))
        .ok_or_else(|| format!("unknown type {s:?} (bool, u16, i16, u32, i32, u64, i64, f32, f64)"))
}

pub fn parse_order(s: &str) -> Result<WordOrder, String> {
    WordOrder::ALL
        .into_iter()
        .find(|o| o.name() == s.to_ascii_uppercase())
        .ok_or_else(|| format!("unknown order {s:?} (ABCD, CDAB, BADC, DCBA)"))
}

/// A usage error (exit 64) or the probe's verdict: `Ok(true)` when every read succeeded.
pub type Verdict = Result<bool, String>;

/// `edgewatch probe modbus`.
pub async fn probe_modbus(args: &ModbusArgs, out: &mut impl Write) -> Verdict {
    let endpoint = match (&args.host, &args.serial) {
        (Some(host), None) => Endpoint::Tcp {
            host: host.clone(),
            port: args.port,
        },
        (None, Some(device)) => {
            let parity = match args.parity {
                ParityArg::None => Parity::None,
                ParityArg::Even => Parity::Even,
                ParityArg::Odd => Parity::Odd,
            };
            Endpoint::Serial(SerialSettings {
                device: device.clone(),
                baud: args.baud,
                parity: serial_parity(parity),
                data_bits: serial_data_bits(args.data_bits),
                stop_bits: serial_stop_bits(args.stop_bits),
                inter_frame_silence: Duration::from_micros(
                    args.inter_frame_silence_us
                        .unwrap_or_else(|| default_inter_frame_silence_us(args.baud)),
                ),
            })
        }
        _ => return Err("give exactly one of --host and --serial".into()),
    };
    let mut link = Link::new(endpoint, Duration::from_millis(args.timeout_ms.max(1)));
    let mut ok = true;
    for range in &args.reads {
        let data_type = match (args.data_type, range.table.is_bits()) {
            (None, true) => DataType::Bool,
            (None, false) => DataType::U16,
            (Some(DataType::Bool), false) => {
                return Err("--type bool is for coil and discrete_input reads".into());
            }
            (Some(t), true) if t != DataType::Bool => {
                return Err(format!(
                    "--type {} is for register reads, not {}",
                    t.name(),
                    range.table
                ));
            }
            (Some(t), _) => t,
        };
        ok &= read_range(&mut link, args.unit, *range, data_type, args.order, out).await;
    }
    Ok(ok)
}

/// Reads one range in chunks the protocol allows (whole values per chunk) and prints each
/// value or the error of each chunk. Returns whether every chunk was read.
async fn read_range(
    link: &mut Link,
    unit: u8,
    range: Range,
    data_type: DataType,
    order: WordOrder,
    out: &mut impl Write,
) -> bool {
    let width = u32::from(data_type.width());
    let max = if range.table.is_bits() { 2000 } else { 125 };
    let per_chunk = (max / width) * width;
    let end = u32::from(range.address) + u32::from(range.count);
    let whole = u32::from(range.count) / width * width;
    if whole < u32::from(range.count) {
        let _ = writeln!(
            out,
            "note: {} registers at the end of {}:{}..{end} do not make a whole {}; not decoded",
            u32::from(range.count) - whole,
            range.table,
            range.address,
            data_type.name()
        );
    }
    if whole == 0 {
        return false;
    }
    let mut ok = true;
    let mut at = u32::from(range.address);
    let last = u32::from(range.address) + whole;
    while at < last {
        let count = per_chunk.min(last - at) as u16;
        let address = at as u16;
        match link.read(unit, range.table, address, count).await {
            Ok(data) => print_values(&data, range.table, address, data_type, order, out),
            Err(e) => {
                ok = false;
                let _ = writeln!(
                    out,
                    "{}:{address}..{}  error: {e}",
                    range.table,
                    at + u32::from(count)
                );
            }
        }
        at += u32::from(count);
    }
    ok
}

fn print_values(
    data: &ReadData,
    table: Table,
    start: u16,
    data_type: DataType,
    order: WordOrder,
    out: &mut impl Write,
) {
    let width = usize::from(data_type.width());
    for i in (0..data.len()).step_by(width) {
        let address = start + i as u16;
        let mut point = PointSpec::new(format!("{table}:{address}"), table, address, data_type);
        point.order = order;
        let raw = match data {
            ReadData::Registers(r) => r
                .get(i..i + width)
                .unwrap_or_default()
                .iter()
                .map(|w| format!("0x{w:04X}"))
                .collect::<Vec<_>>()
                .join(" "),
            ReadData::Bits(b) => u8::from(b.get(i).copied().unwrap_or_default()).to_string(),
        };
        let _ = match decode_point(&point, data, start) {
            Ok(value) => writeln!(out, "{table}:{address}  {raw}  {value}"),
            Err(e) => writeln!(out, "{table}:{address}  {raw}  error: {e}"),
        };
    }
}

/// `edgewatch probe --config PATH --source NAME`: one poll of every unit of the source, with
/// the scheduler's poll function (retries as configured, exception 2 split as in the daemon).
pub async fn probe_source(config: &Config, name: &str, out: &mut impl Write) -> Verdict {
    let Some(source) = config.sources.iter().find(|s| s.name == name) else {
        let modbus: Vec<&str> = config
            .sources
            .iter()
            .filter(|s| s.kind.modbus_polling().is_some())
            .map(|s| s.name.as_str())
            .collect();
        return Err(format!(
            "no source named {name:?} (Modbus sources: {})",
            if modbus.is_empty() {
                "none".to_string()
            } else {
                modbus.join(", ")
            }
        ));
    };
    let (endpoint, polling): (Endpoint, &ModbusPolling) = match &source.kind {
        SourceKind::ModbusTcp(c) => (tcp_endpoint(c), &c.polling),
        SourceKind::ModbusRtu(c) => (rtu_endpoint(c), &c.polling),
        other => {
            return Err(format!(
                "source {name:?} is of type {}, not modbus_tcp or modbus_rtu",
                other.type_name()
            ));
        }
    };
    let plan = PollPlan::new(polling);
    let mut link = Link::new(
        endpoint.clone(),
        Duration::from_millis(polling.timeout_ms.max(1)),
    );
    let _ = writeln!(out, "# {name}: {endpoint}");
    let policy = Policy {
        attempts: 1 + polling.retries,
        stop_on_failure: false,
    };
    let all: Vec<usize> = (0..plan.planners.len()).collect();
    let mut ok = true;
    for &unit in &polling.units {
        let sensor = polling.sensor_id(name, unit);
        let mut planners = plan.planners.clone();
        let poll = poll_unit(&mut link, unit, &mut planners, &all, policy).await;
        for report in &poll.reads {
            let points = planners[report.group].points();
            let field = |i: usize| points.get(i).map_or("?", |p| p.name.as_str());
            let _ = match &report.outcome {
                Outcome::Values(values) => values
                    .iter()
                    .try_for_each(|&(i, value)| writeln!(out, "{sensor}  {}  {value}", field(i))),
                Outcome::Split(halves) => writeln!(
                    out,
                    "{sensor}  {}  exception 2 (illegal data address): split into {}",
                    report.read,
                    halves
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Outcome::Bad(i) => {
                    ok = false;
                    writeln!(
                        out,
                        "{sensor}  {}  error: exception 2 (illegal data address) at {}",
                        field(*i),
                        report.read
                    )
                }
                Outcome::Failed(e) => {
                    ok = false;
                    let fields: Vec<&str> = report.read.points.iter().map(|&i| field(i)).collect();
                    writeln!(
                        out,
                        "{sensor}  {} ({})  error: {e}",
                        report.read,
                        fields.join(", ")
                    )
                }
                Outcome::Skipped => Ok(()),
            };
        }
        let _ = writeln!(
            out,
            "# {sensor}: unit {unit}, {} request(s), {}",
            poll.requests(),
            match &poll.failure {
                None => "ok".to_string(),
                Some(e) => format!("failed: {e}"),
            }
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_end_exclusive_or_single_addresses() {
        assert_eq!(
            parse_range("holding:0..10"),
            Ok(Range {
                table: Table::Holding,
                address: 0,
                count: 10
            })
        );
        assert_eq!(
            parse_range("input_register:7"),
            Ok(Range {
                table: Table::Input,
                address: 7,
                count: 1
            })
        );
        assert_eq!(
            parse_range("coil:65535"),
            Ok(Range {
                table: Table::Coil,
                address: 65535,
                count: 1
            })
        );
        assert_eq!(parse_range("discrete_input:1..65536").unwrap().count, 65535);
        assert!(
            parse_range("discrete_input:0..65536").is_err(),
            "longer than a u16 count"
        );
        for bad in [
            "holding",
            "holding:5..5",
            "holding:9..3",
            "foo:1",
            "holding:x",
            "coil:70000",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_and_orders_parse_by_their_config_names() {
        assert_eq!(parse_type("f32"), Ok(DataType::F32));
        assert!(parse_type("bit").is_err());
        assert_eq!(parse_order("cdab"), Ok(WordOrder::Cdab));
        assert!(parse_order("ACBD").is_err());
    }

    #[test]
    fn values_print_with_their_raw_registers() {
        let mut out = Vec::new();
        // 25.0 as f32 ABCD is 0x41C8 0x0000.
        let data = ReadData::Registers(vec![0x41C8, 0, 0xFFFF, 0xFFFE]);
        print_values(
            &data,
            Table::Holding,
            14,
            DataType::F32,
            WordOrder::Abcd,
            &mut out,
        );
        let mut i16s = Vec::new();
        print_values(
            &data,
            Table::Holding,
            14,
            DataType::I16,
            WordOrder::Abcd,
            &mut i16s,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "holding:14  0x41C8 0x0000  25\nholding:16  0xFFFF 0xFFFE  NaN\n"
        );
        assert!(
            String::from_utf8(i16s)
                .unwrap()
                .ends_with("holding:17  0xFFFE  -2\n")
        );
    }
}
