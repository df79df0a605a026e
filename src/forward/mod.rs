//! Forwarding to InfluxDB: turning stored rollups and anomaly events into line protocol
//! points. `line_protocol` is the encoder, `points` maps the store's records to points; both
//! are pure (no I/O, no clock) and property-tested.

pub mod line_protocol;
pub mod points;
