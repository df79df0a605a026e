//! Prometheus metrics through `prometheus-client`. Tasks hold an `Arc<Metrics>` and update
//! it; `/metrics` encodes the registry. Counter names get `_total` from the encoder.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    pub registry: Registry,
    /// Readings delivered by each source to the pipeline.
    pub source_readings: Family<SourceLabel, Counter>,
    /// Acquisition errors per source.
    pub source_errors: Family<SourceLabel, Counter>,
    /// Readings the pipeline accepted.
    pub pipeline_readings: Counter,
    /// Readings flagged and kept out of aggregates, by reason (not_finite, time_suspect).
    pub pipeline_flagged: Family<ReasonLabel, Counter>,
    /// Late readings that corrected an already emitted rollup.
    pub late_corrected: Counter,
    /// Late readings older than the rollup retention (kept raw only).
    pub late_dropped: Counter,
    pub rollups_emitted: Counter,
    pub events_raised: Counter,
    pub events_cleared: Counter,
    /// Batches waiting in the channel from the sources to the pipeline.
    pub pipeline_queue_batches: Gauge,
    pub store_commits: Counter,
    pub store_commit_seconds: Histogram,
    /// Records written per table.
    pub store_written: Family<TableLabel, Counter>,
    /// Records removed by retention per table (age or byte budget).
    pub store_removed: Family<TableLabel, Counter>,
    pub store_file_bytes: Gauge,
    pub store_stored_bytes: Gauge,
    pub outbox_entries: Gauge,
    pub store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgewatch");
        let m = Metrics {
            registry: Registry::default(),
            source_readings: Family::default(),
            source_errors: Family::default(),
            pipeline_readings: Counter::default(),
            pipeline_flagged: Family::default(),
            late_corrected: Counter::default(),
            late_dropped: Counter::default(),
            rollups_emitted: Counter::default(),
            events_raised: Counter::default(),
            events_cleared: Counter::default(),
            pipeline_queue_batches: Gauge::default(),
            store_commits: Counter::default(),
            store_commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            store_written: Family::default(),
            store_removed: Family::default(),
            store_file_bytes: Gauge::default(),
            store_stored_bytes: Gauge::default(),
            outbox_entries: Gauge::default(),
            store_errors: Counter::default(),
        };
        registry.register(
            "source_readings",
            "Readings delivered by each source",
            m.source_readings.clone(),
        );
        registry.register(
            "source_errors",
            "Acquisition errors per source",
            m.source_errors.clone(),
        );
        registry.register(
            "pipeline_readings",
            "Readings accepted by the pipeline",
            m.pipeline_readings.clone(),
        );
        registry.register(
            "pipeline_flagged_readings",
            "Readings kept out of aggregates, by reason",
            m.pipeline_flagged.clone(),
        );
        registry.register(
            "pipeline_late_corrected",
            "Late readings that corrected an emitted rollup",
            m.late_corrected.clone(),
        );
        registry.register(
            "pipeline_late_dropped",
            "Late readings older than the rollup retention, kept raw only",
            m.late_dropped.clone(),
        );
        registry.register(
            "rollups_emitted",
            "Rollups emitted, including corrections",
            m.rollups_emitted.clone(),
        );
        registry.register(
            "anomalies_raised",
            "Anomaly events raised",
            m.events_raised.clone(),
        );
        registry.register(
            "anomalies_cleared",
            "Anomaly events cleared",
            m.events_cleared.clone(),
        );
        registry.register(
            "pipeline_queue_batches",
            "Batches waiting between the sources and the pipeline",
            m.pipeline_queue_batches.clone(),
        );
        registry.register(
            "store_commits",
            "Store transactions committed",
            m.store_commits.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of store commits",
            m.store_commit_seconds.clone(),
        );
        registry.register(
            "store_written_records",
            "Records written, by table",
            m.store_written.clone(),
        );
        registry.register(
            "store_removed_records",
            "Records removed by retention (age or byte budget), by table",
            m.store_removed.clone(),
        );
        registry.register(
            "store_file_bytes",
            "Size of the redb file",
            m.store_file_bytes.clone(),
        );
        registry.register(
            "store_stored_bytes",
            "Bytes of live data in the store",
            m.store_stored_bytes.clone(),
        );
        registry.register(
            "outbox_entries",
            "Entries in the outbox",
            m.outbox_entries.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store operations",
            m.store_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
