//! edgewatch: an edge gateway daemon. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod config;
pub mod live;
pub mod metrics;
pub mod model;
pub mod store;
pub mod web;
