//! Semantic checks of the Modbus sources (called by the parser, once a source parsed) and the
//! `[profiles.NAME]` register maps (called by `validate`). Unit ids,
//! the choice between `profile` and `registers`, and unknown profiles are checked while
//! parsing (`modbus.rs`), where the key that held them is known.

use std::collections::BTreeMap;

use super::load::Problem;
use super::modbus::{ModbusPolling, ModbusRtuConfig, ModbusTcpConfig};
use crate::modbus::plan::{MAX_READ_BITS, MAX_READ_REGISTERS};
use crate::modbus::{DataType, PointSpec};

fn problem(p: &mut Vec<Problem>, path: &str, key: &str, reason: impl Into<String>) {
    p.push(Problem::new(format!("{path}.{key}"), reason));
}

pub(super) fn tcp_source(path: &str, c: &ModbusTcpConfig, p: &mut Vec<Problem>) {
    if c.host.trim().is_empty() {
        problem(p, path, "host", "must not be empty");
    }
    if c.port == 0 {
        problem(p, path, "port", "must be greater than 0");
    }
    polling(path, &c.polling, p);
}

pub(super) fn rtu_source(path: &str, c: &ModbusRtuConfig, p: &mut Vec<Problem>) {
    if c.device.as_os_str().is_empty() {
        problem(p, path, "device", "must not be empty");
    }
    if c.baud == 0 {
        problem(p, path, "baud", "must be greater than 0");
    }
    if !matches!(c.data_bits, 7 | 8) {
        problem(p, path, "data_bits", "must be 7 or 8");
    }
    if !matches!(c.stop_bits, 1 | 2) {
        problem(p, path, "stop_bits", "must be 1 or 2");
    }
    polling(path, &c.polling, p);
}

fn polling(path: &str, c: &ModbusPolling, p: &mut Vec<Problem>) {
    for (key, v) in [
        ("interval_ms", c.interval_ms),
        ("timeout_ms", c.timeout_ms),
        ("backoff_initial_ms", c.backoff_initial_ms),
    ] {
        if v == 0 {
            problem(p, path, key, "must be greater than 0");
        }
    }
    if c.backoff_max_ms < c.backoff_initial_ms {
        problem(
            p,
            path,
            "backoff_max_ms",
            format!(
                "must be at least backoff_initial_ms ({})",
                c.backoff_initial_ms
            ),
        );
    }
    if !(1..=MAX_READ_REGISTERS).contains(&c.max_read_registers) {
        problem(
            p,
            path,
            "max_read_registers",
            format!("must be 1..={MAX_READ_REGISTERS}"),
        );
    } else if let Some(widest) = c.registers.iter().max_by_key(|r| r.data_type.width())
        && widest.data_type.width() > c.max_read_registers
    {
        problem(
            p,
            path,
            "max_read_registers",
            format!(
                "must be at least {} (register `{}` is a {})",
                widest.data_type.width(),
                widest.name,
                widest.data_type.name()
            ),
        );
    }
    if !(1..=MAX_READ_BITS).contains(&c.max_read_bits) {
        problem(
            p,
            path,
            "max_read_bits",
            format!("must be 1..={MAX_READ_BITS}"),
        );
    }
    if let Some(t) = &c.sensor_id {
        if t.trim().is_empty() {
            problem(p, path, "sensor_id", "must not be empty");
        } else if c.units.len() > 1 && !t.contains("{unit}") {
            problem(
                p,
                path,
                "sensor_id",
                "must contain `{unit}` when several units are polled (one sensor per unit)",
            );
        }
    }
    // A profile's registers are checked once, at `profiles.NAME.registers`.
    if c.profile.is_none() {
        points(&format!("{path}.registers"), &c.registers, p);
    }
}

/// Checks a register map whose entries are at `path[i]`.
pub(super) fn points(path: &str, points: &[PointSpec], p: &mut Vec<Problem>) {
    if points.is_empty() {
        p.push(Problem::new(path, "must hold at least one register"));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in points.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if r.name.trim().is_empty() {
            problem(p, &at, "name", "must not be empty");
        } else if let Some(first) = names.insert(r.name.as_str(), i) {
            names.insert(r.name.as_str(), first);
            problem(
                p,
                &at,
                "name",
                format!(
                    "duplicate register name `{}` (also {path}[{first}])",
                    r.name
                ),
            );
        }
        match r.data_type {
            DataType::Bool if !r.table.is_bits() => problem(
                p,
                &at,
                "type",
                format!(
                    "bool is for coil and discrete_input, not {} (use type = \"bit\" with bit = N for a bit of a register)",
                    r.table
                ),
            ),
            DataType::Bool => {}
            t if r.table.is_bits() => problem(
                p,
                &at,
                "type",
                format!(
                    "{} holds bits: use type = \"bool\" (not {})",
                    r.table,
                    t.name()
                ),
            ),
            DataType::Bit(n) if n > 15 => problem(p, &at, "bit", "must be 0..=15"),
            _ => {}
        }
        if r.end() > 65_536 {
            problem(
                p,
                &at,
                "address",
                format!(
                    "a {} at {} needs {} registers and runs past address 65535",
                    r.data_type.name(),
                    r.address,
                    r.data_type.width()
                ),
            );
        }
        if !r.scale.is_finite() || r.scale == 0.0 {
            problem(p, &at, "scale", "must be a finite number other than 0");
        }
        if !r.offset.is_finite() {
            problem(p, &at, "offset", "must be a finite number");
        }
        if r.interval_ms == Some(0) {
            problem(p, &at, "interval_ms", "must be greater than 0");
        }
    }
}
