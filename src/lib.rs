//! edgewatch: an edge gateway daemon. See ARCHITECTURE.md for the map.
#![deny(unsafe_code)]

pub mod ack;
pub mod alert;
pub mod app;
pub mod backtest;
pub mod config;
pub mod export;
pub mod forward;
pub mod ingest;
pub mod live;
pub mod liveness;
pub mod metrics;
pub mod modbus;
pub mod model;
pub mod mqtt_client;
pub mod os;
pub mod pipeline;
pub mod probe;
pub mod simulate;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod web;
