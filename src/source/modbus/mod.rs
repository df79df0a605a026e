//! Modbus sources (`type = "modbus_tcp"`, `type = "modbus_rtu"`): the scheduler that polls
//! configured devices and hands their values to the pipeline.
//!
//! - One task per source: a `modbus_tcp` source is one TCP connection (to a device, or to a
//!   gateway that serves several unit ids), a `modbus_rtu` source is one serial port, owned by
//!   exactly that task, which polls its units in turn. Requests never overlap on a link.
//! - [`link`]: the tokio-modbus context under timeouts, reopened after any failure that may
//!   have desynchronised it, and the RTU inter-frame silence.
//! - [`schedule`]: poll groups by interval (a register's own `interval_ms` makes its own group),
//!   ticks on a fixed grid, missed ticks skipped and counted as overruns.
//! - [`unit`]: up/down per unit, retries while up, one attempt per jittered backoff delay
//!   while down.
//! - [`poll`]: one poll of one unit (reads of its due groups, retries, splitting on exception 2
//!   through the core [`Planner`](crate::modbus::Planner), decoding); shared with
//!   `edgewatch probe --config`.
//! - [`task`]: the task: pacing, batches, health details and metrics.
//!
//! Each unit is one sensor (`sensor_id`, `{unit}` replaced); each point one field. A
//! successful poll of a unit is one [`Batch`](crate::model::Batch) whose readings all carry
//! the gateway time at the start of that poll and quality GOOD; a failed poll sends nothing
//! and only changes the unit's health.

#[cfg(test)]
mod fake;
pub mod link;
pub mod poll;
pub mod schedule;
mod task;
pub mod unit;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ModbusPolling, ModbusRtuConfig, ModbusTcpConfig, Parity};
use crate::modbus::{Planner, poll_groups};
use crate::model::SeriesKey;

use link::{DataBits, Endpoint, SerialSettings, StopBits};
pub use task::ModbusSource;

/// The endpoint of a `modbus_tcp` source.
pub fn tcp_endpoint(config: &ModbusTcpConfig) -> Endpoint {
    Endpoint::Tcp {
        host: config.host.clone(),
        port: config.port,
    }
}

/// The serial port of a `modbus_rtu` source.
pub fn rtu_endpoint(config: &ModbusRtuConfig) -> Endpoint {
    Endpoint::Serial(SerialSettings {
        device: config.device.to_string_lossy().into_owned(),
        baud: config.baud,
        parity: serial_parity(config.parity),
        data_bits: serial_data_bits(config.data_bits),
        stop_bits: serial_stop_bits(config.stop_bits),
        inter_frame_silence: Duration::from_micros(config.inter_frame_silence_us),
    })
}

pub fn serial_parity(parity: Parity) -> link::Parity {
    match parity {
        Parity::None => link::Parity::None,
        Parity::Even => link::Parity::Even,
        Parity::Odd => link::Parity::Odd,
    }
}

/// 5..=8 data bits (validation allows 7 and 8); anything else is taken as 8.
pub fn serial_data_bits(bits: u8) -> DataBits {
    match bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    }
}

/// 1 or 2 stop bits; anything else is taken as 1.
pub fn serial_stop_bits(bits: u8) -> StopBits {
    match bits {
        2 => StopBits::Two,
        _ => StopBits::One,
    }
}

/// What is polled on each unit: the poll groups (interval and points), the same for every unit.
#[derive(Clone, Debug)]
pub struct PollPlan {
    /// Interval of each group, ascending.
    pub intervals: Vec<Duration>,
    /// One planner per group (cloned for each unit: bad points are per device).
    pub planners: Vec<Planner>,
}

impl PollPlan {
    pub fn new(polling: &ModbusPolling) -> Self {
        let groups = poll_groups(&polling.registers, polling.interval_ms);
        PollPlan {
            intervals: groups
                .iter()
                .map(|(ms, _)| Duration::from_millis(*ms))
                .collect(),
            planners: groups
                .into_iter()
                .map(|(_, points)| Planner::new(points, polling.limits()))
                .collect(),
        }
    }

    /// The series key of every point of every group for `sensor`, indexed [group][point].
    pub fn series_keys(&self, sensor: &str) -> Vec<Vec<SeriesKey>> {
        let sensor: Arc<str> = sensor.into();
        self.planners
            .iter()
            .map(|p| {
                p.points()
                    .iter()
                    .map(|point| SeriesKey::new(sensor.clone(), point.name.as_str()))
                    .collect()
            })
            .collect()
    }
}

/// The bad ranges of a unit's planners, for `u{N}.bad_ranges`: `holding:5..7 (name)`, or
/// `none`.
pub fn bad_ranges(planners: &[Planner]) -> String {
    let bad: Vec<String> = planners
        .iter()
        .flat_map(|p| p.bad_points())
        .map(|p| format!("{}:{}..{} ({})", p.table, p.address, p.end(), p.name))
        .collect();
    if bad.is_empty() {
        "none".into()
    } else {
        bad.join(", ")
    }
}
