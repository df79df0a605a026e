//! Helpers shared by the integration tests: real servers that a test starts itself on free
//! loopback ports, each in its own temp dir, and stops again when it is dropped.
//!
//! Each test file includes this with `mod support;` and uses only part of it, hence the
//! `dead_code` allowance below.

#![allow(dead_code)]

pub mod alerts;
pub mod browser;
pub mod daemon;
pub mod in_process;
pub mod influxd;
pub mod modbus;
pub mod modbus_daemon;
pub mod modbus_link;
pub mod mosquitto;
pub mod mqtt;
pub mod process;
pub mod webhook;
