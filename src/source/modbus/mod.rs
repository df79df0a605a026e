//! Modbus sources (`type = "modbus_tcp"`, `type = "modbus_rtu"`): the scheduler.

pub mod link;
pub mod poll;
pub mod schedule;
pub mod unit;
