//! Sources: tasks that acquire readings and hand them to the pipeline as [`Batch`]es over its
//! bounded channel, waiting when it is full (backpressure, nothing skipped). Each source reports
//! its health through a [`SourceHandle`] and counts what it delivered in `source_readings`.
//! Sources never import the store, the forwarders or the web.
//!
//! [`Batch`]: crate::model::Batch
//! [`SourceHandle`]: crate::live::SourceHandle

pub mod backoff;
pub mod modbus;
pub mod mqtt;
pub mod sim;
