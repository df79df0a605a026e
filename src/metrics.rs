//! Prometheus metrics through the `prometheus` crate, exposed in the classic text format
//! (`text/plain; version=0.0.4`) that every scraper and `promtool check metrics` accept.
//! Tasks hold an `Arc<Metrics>` and update it; `/metrics` encodes the registry.

use std::marker::PhantomData;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// A counter.
pub type Counter = IntCounter;
/// A gauge.
pub type Gauge = IntGauge;

/// The label set of a [`Family`]: its names, and the values of one member.
pub trait Labels {
    const NAMES: &'static [&'static str];
    fn values(&self) -> Vec<&str>;
}

macro_rules! labels {
    ($name:ident { $field:ident }) => {
        #[derive(Clone, Debug, Hash, PartialEq, Eq)]
        pub struct $name {
            pub $field: String,
        }

        impl Labels for $name {
            const NAMES: &'static [&'static str] = &[stringify!($field)];
            fn values(&self) -> Vec<&str> {
                vec![self.$field.as_str()]
            }
        }
    };
}

labels!(SourceLabel { source });
labels!(ReasonLabel { reason });
labels!(TableLabel { table });
labels!(SinkLabel { sink });
labels!(ResultLabel { result });

/// A source and a reason (`edgewatch_source_bad_payloads_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SourceReasonLabel {
    pub source: String,
    pub reason: String,
}

impl Labels for SourceReasonLabel {
    const NAMES: &'static [&'static str] = &["source", "reason"];
    fn values(&self) -> Vec<&str> {
        vec![self.source.as_str(), self.reason.as_str()]
    }
}

/// A source and a Modbus unit (`edgewatch_modbus_requests_total`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SourceUnitLabel {
    pub source: String,
    pub unit: String,
}

impl Labels for SourceUnitLabel {
    const NAMES: &'static [&'static str] = &["source", "unit"];
    fn values(&self) -> Vec<&str> {
        vec![self.source.as_str(), self.unit.as_str()]
    }
}

/// A source, a Modbus unit and a reason (`edgewatch_modbus_request_failures_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SourceUnitReasonLabel {
    pub source: String,
    pub unit: String,
    pub reason: String,
}

impl Labels for SourceUnitReasonLabel {
    const NAMES: &'static [&'static str] = &["source", "unit", "reason"];
    fn values(&self) -> Vec<&str> {
        vec![
            self.source.as_str(),
            self.unit.as_str(),
            self.reason.as_str(),
        ]
    }
}

/// Counters that differ by a typed label set.
#[derive(Clone)]
pub struct Family<L> {
    vec: IntCounterVec,
    labels: PhantomData<L>,
}

impl<L: Labels> Family<L> {
    fn new(name: &str, help: &str) -> Self {
        Family {
            vec: IntCounterVec::new(Opts::new(name, help), L::NAMES)
                .expect("valid metric definition"),
            labels: PhantomData,
        }
    }

    /// The counter of one label set (created at zero on first use). Keep it when it is used
    /// often: the lookup hashes the label values.
    pub fn get_or_create(&self, labels: &L) -> Counter {
        self.vec.with_label_values(&labels.values())
    }
}

/// Gauges that differ by a typed label set.
#[derive(Clone)]
pub struct GaugeFamily<L> {
    vec: IntGaugeVec,
    labels: PhantomData<L>,
}

impl<L: Labels> GaugeFamily<L> {
    fn new(name: &str, help: &str) -> Self {
        GaugeFamily {
            vec: IntGaugeVec::new(Opts::new(name, help), L::NAMES)
                .expect("valid metric definition"),
            labels: PhantomData,
        }
    }

    pub fn get_or_create(&self, labels: &L) -> Gauge {
        self.vec.with_label_values(&labels.values())
    }
}

/// Histograms that differ by a typed label set.
#[derive(Clone)]
pub struct HistogramFamily<L> {
    vec: HistogramVec,
    labels: PhantomData<L>,
}

impl<L: Labels> HistogramFamily<L> {
    fn new(name: &str, help: &str, buckets: Vec<f64>) -> Self {
        HistogramFamily {
            vec: HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), L::NAMES)
                .expect("valid metric definition"),
            labels: PhantomData,
        }
    }

    /// The histogram of one label set; keep it when it is used often.
    pub fn get_or_create(&self, labels: &L) -> Histogram {
        self.vec.with_label_values(&labels.values())
    }
}

/// Buckets of `edgewatch_ingest_latency_seconds`: fine enough for p50 and p99 from a tenth of
/// a millisecond (a broker on the same host: a bucket-interpolated quantile is only as good
/// as the bucket it falls in) to 10 s (a device buffering through an outage).
pub const INGEST_LATENCY_BUCKETS: [f64; 22] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015,
    0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Buckets of `edgewatch_modbus_request_seconds`: from half a millisecond (a TCP device on
/// the LAN) to 10 s (the longest sensible timeout).
pub const MODBUS_REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Beats of the pipeline and the store writer for systemd's watchdog (not exported).
    pub liveness: std::sync::Arc<crate::liveness::Liveness>,
    /// Readings delivered by each source to the pipeline.
    pub source_readings: Family<SourceLabel>,
    /// Acquisition errors per source.
    pub source_errors: Family<SourceLabel>,
    /// Messages each message-based source (MQTT) received, decodable or not.
    pub source_messages: Family<SourceLabel>,
    /// Messages refused by the payload mapping, by source and reason.
    pub source_bad_payloads: Family<SourceReasonLabel>,
    /// Arrival at the source minus the event time in the payload, once per message whose
    /// readings carry a time of their own.
    pub ingest_latency_seconds: HistogramFamily<SourceLabel>,
    /// 1 while the MQTT source is connected to its broker.
    pub mqtt_connected: GaugeFamily<SourceLabel>,
    /// Connections to the broker established again after the first one.
    pub mqtt_reconnects: Family<SourceLabel>,
    /// QoS 1 messages received and not yet acknowledged (waiting for their store commit).
    pub mqtt_unacked_messages: GaugeFamily<SourceLabel>,
    /// Modbus requests sent, per source and unit (every attempt, retries included).
    pub modbus_requests: Family<SourceUnitLabel>,
    /// Failed Modbus requests, by reason (`timeout`, `exception_N`, `refused`, `reset`,
    /// `decode`, `io`).
    pub modbus_request_failures: Family<SourceUnitReasonLabel>,
    /// Round trip of Modbus requests (a timeout counts as the timeout), per source.
    pub modbus_request_seconds: HistogramFamily<SourceLabel>,
    /// 1 while a Modbus unit is up.
    pub modbus_unit_up: GaugeFamily<SourceUnitLabel>,
    /// Poll ticks skipped because the previous poll of the unit's group ran past them.
    pub modbus_overruns: Family<SourceUnitLabel>,
    /// Readings the pipeline accepted.
    pub pipeline_readings: Counter,
    /// Readings flagged and kept out of aggregates, by reason (not_finite, time_suspect).
    pub pipeline_flagged: Family<ReasonLabel>,
    /// Late readings that corrected an already emitted rollup.
    pub late_corrected: Counter,
    /// Late readings older than the rollup retention (kept raw only).
    pub late_dropped: Counter,
    /// Redelivered readings (MQTT after a reconnect or restart) found already stored.
    pub duplicates_dropped: Counter,
    pub rollups_emitted: Counter,
    pub events_raised: Counter,
    pub events_cleared: Counter,
    /// Batches waiting in the channel from the sources to the pipeline.
    pub pipeline_queue_batches: Gauge,
    pub store_commits: Counter,
    pub store_commit_seconds: Histogram,
    /// Records written per table.
    pub store_written: Family<TableLabel>,
    /// Records removed by retention per table (age or byte budget).
    pub store_removed: Family<TableLabel>,
    pub store_file_bytes: Gauge,
    pub store_stored_bytes: Gauge,
    pub outbox_entries: Gauge,
    pub store_errors: Counter,
    /// Connections the web accepted.
    pub web_connections: Counter,
    /// Connections the web holds open now (at most `web.max_connections`).
    pub web_connections_open: Gauge,
    /// Times the web's accept loop found every connection slot taken and waited for one
    /// (further clients waited in the kernel's accept queue meanwhile).
    pub web_connection_limit_waits: Counter,
    /// Points each sink delivered (acknowledged by InfluxDB).
    pub sink_points_sent: Family<SinkLabel>,
    /// Points each sink's InfluxDB refused for good (kept as dead letters).
    pub sink_dead_letters: Family<SinkLabel>,
    /// Outbox entries removed by retention before the sink had them.
    pub sink_dropped_points: Family<SinkLabel>,
    /// Outbox entries each sink has not acknowledged yet.
    pub sink_backlog_points: GaugeFamily<SinkLabel>,
    /// Stored bytes of those entries.
    pub sink_backlog_bytes: GaugeFamily<SinkLabel>,
    /// Age of the oldest entry a sink has not acknowledged (0 when none waits).
    pub sink_oldest_unsent_seconds: GaugeFamily<SinkLabel>,
    /// 1 for the sink's current link state, 0 for the others.
    pub sink_state: SinkStateGauge,
    /// Config reloads (SIGHUP), by result: `applied` or `refused`.
    pub config_reloads: Family<ResultLabel>,
    /// 1 when the last reload was applied (or none was asked for), 0 when it was refused.
    pub config_last_reload_successful: Gauge,
    /// Unix time of the config in effect: the start, or the last applied reload.
    pub config_last_reload_success_timestamp_seconds: Gauge,
}

/// `edgewatch_sink_state{sink, state}`: one series per state, 1 for the current one.
pub struct SinkStateGauge {
    vec: IntGaugeVec,
}

impl SinkStateGauge {
    pub const STATES: [&'static str; 5] =
        ["starting", "up", "down", "backing_off", "misconfigured"];

    pub fn set(&self, sink: &str, state: &str) {
        for s in Self::STATES {
            self.vec
                .with_label_values(&[sink, s])
                .set(i64::from(s == state));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str) -> Counter {
    IntCounter::new(name, help).expect("valid metric definition")
}

fn gauge(name: &str, help: &str) -> Gauge {
    IntGauge::new(name, help).expect("valid metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let buckets = prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets");
        let m = Metrics {
            registry: Registry::new_custom(Some("edgewatch".into()), None).expect("valid prefix"),
            liveness: Default::default(),
            source_readings: Family::new(
                "source_readings_total",
                "Readings delivered by each source",
            ),
            source_errors: Family::new("source_errors_total", "Acquisition errors per source"),
            source_messages: Family::new(
                "source_messages_total",
                "Messages received by each message-based source",
            ),
            source_bad_payloads: Family::new(
                "source_bad_payloads_total",
                "Messages refused by the payload mapping, by source and reason",
            ),
            ingest_latency_seconds: HistogramFamily::new(
                "ingest_latency_seconds",
                "Arrival at the source minus the event time carried by the payload",
                INGEST_LATENCY_BUCKETS.to_vec(),
            ),
            mqtt_connected: GaugeFamily::new(
                "mqtt_connected",
                "1 while the MQTT source is connected to its broker",
            ),
            mqtt_reconnects: Family::new(
                "mqtt_reconnects_total",
                "Connections to the broker established again after the first one",
            ),
            mqtt_unacked_messages: GaugeFamily::new(
                "mqtt_unacked_messages",
                "QoS 1 messages received and waiting for their store commit to be acknowledged",
            ),
            modbus_requests: Family::new(
                "modbus_requests_total",
                "Modbus requests sent, per source and unit, retries included",
            ),
            modbus_request_failures: Family::new(
                "modbus_request_failures_total",
                "Failed Modbus requests, per source, unit and reason",
            ),
            modbus_request_seconds: HistogramFamily::new(
                "modbus_request_seconds",
                "Round trip of Modbus requests (a timeout counts as the timeout)",
                MODBUS_REQUEST_BUCKETS.to_vec(),
            ),
            modbus_unit_up: GaugeFamily::new("modbus_unit_up", "1 while a Modbus unit is up"),
            modbus_overruns: Family::new(
                "modbus_overruns_total",
                "Poll ticks skipped because the previous poll ran past them",
            ),
            pipeline_readings: counter(
                "pipeline_readings_total",
                "Readings accepted by the pipeline",
            ),
            pipeline_flagged: Family::new(
                "pipeline_flagged_readings_total",
                "Readings kept out of aggregates, by reason",
            ),
            late_corrected: counter(
                "pipeline_late_corrected_total",
                "Late readings that corrected an emitted rollup",
            ),
            late_dropped: counter(
                "pipeline_late_dropped_total",
                "Late readings older than the rollup retention, kept raw only",
            ),
            duplicates_dropped: counter(
                "pipeline_duplicates_dropped_total",
                "Redelivered readings that were already stored, dropped before aggregation",
            ),
            rollups_emitted: counter(
                "rollups_emitted_total",
                "Rollups emitted, including corrections",
            ),
            events_raised: counter("anomalies_raised_total", "Anomaly events raised"),
            events_cleared: counter("anomalies_cleared_total", "Anomaly events cleared"),
            pipeline_queue_batches: gauge(
                "pipeline_queue_batches",
                "Batches waiting between the sources and the pipeline",
            ),
            store_commits: counter("store_commits_total", "Store transactions committed"),
            store_commit_seconds: Histogram::with_opts(
                HistogramOpts::new("store_commit_seconds", "Duration of store commits")
                    .buckets(buckets),
            )
            .expect("valid metric definition"),
            store_written: Family::new("store_written_records_total", "Records written, by table"),
            store_removed: Family::new(
                "store_removed_records_total",
                "Records removed by retention (age or byte budget), by table",
            ),
            store_file_bytes: gauge("store_file_bytes", "Size of the redb file"),
            store_stored_bytes: gauge("store_stored_bytes", "Bytes of live data in the store"),
            outbox_entries: gauge("outbox_entries", "Entries in the outbox"),
            store_errors: counter("store_errors_total", "Failed store operations"),
            web_connections: counter(
                "web_connections_total",
                "Connections accepted by the web server",
            ),
            web_connections_open: gauge(
                "web_connections_open",
                "Connections the web server holds open",
            ),
            web_connection_limit_waits: counter(
                "web_connection_limit_waits_total",
                "Times every web connection slot was taken and the accept loop waited for one",
            ),
            sink_points_sent: Family::new(
                "sink_points_sent_total",
                "Points delivered to each sink",
            ),
            sink_dead_letters: Family::new(
                "sink_dead_letters_total",
                "Points refused for good by each sink, kept as dead letters",
            ),
            sink_dropped_points: Family::new(
                "sink_dropped_points_total",
                "Outbox entries removed by retention before the sink had them",
            ),
            sink_backlog_points: GaugeFamily::new(
                "sink_backlog_points",
                "Outbox entries each sink has not acknowledged",
            ),
            sink_backlog_bytes: GaugeFamily::new(
                "sink_backlog_bytes",
                "Stored bytes of the outbox entries each sink has not acknowledged",
            ),
            sink_oldest_unsent_seconds: GaugeFamily::new(
                "sink_oldest_unsent_seconds",
                "Age of the oldest outbox entry each sink has not acknowledged",
            ),
            sink_state: SinkStateGauge {
                vec: IntGaugeVec::new(
                    Opts::new(
                        "sink_state",
                        "Link state of each sink: 1 for the current state",
                    ),
                    &["sink", "state"],
                )
                .expect("valid metric definition"),
            },
            config_reloads: Family::new(
                "config_reloads_total",
                "Config reloads (SIGHUP), by result: applied or refused",
            ),
            config_last_reload_successful: gauge(
                "config_last_reload_successful",
                "1 when the last config reload was applied or none was asked for, 0 when it was refused",
            ),
            config_last_reload_success_timestamp_seconds: gauge(
                "config_last_reload_success_timestamp_seconds",
                "Unix time the config in effect was loaded: the start or the last applied reload",
            ),
        };
        let r = &m.registry;
        let register =
            |c: Box<dyn prometheus::core::Collector>| r.register(c).expect("unique metric names");
        register(Box::new(m.source_readings.vec.clone()));
        register(Box::new(m.source_errors.vec.clone()));
        register(Box::new(m.source_messages.vec.clone()));
        register(Box::new(m.source_bad_payloads.vec.clone()));
        register(Box::new(m.ingest_latency_seconds.vec.clone()));
        register(Box::new(m.mqtt_connected.vec.clone()));
        register(Box::new(m.mqtt_reconnects.vec.clone()));
        register(Box::new(m.mqtt_unacked_messages.vec.clone()));
        register(Box::new(m.modbus_requests.vec.clone()));
        register(Box::new(m.modbus_request_failures.vec.clone()));
        register(Box::new(m.modbus_request_seconds.vec.clone()));
        register(Box::new(m.modbus_unit_up.vec.clone()));
        register(Box::new(m.modbus_overruns.vec.clone()));
        register(Box::new(m.pipeline_readings.clone()));
        register(Box::new(m.pipeline_flagged.vec.clone()));
        register(Box::new(m.late_corrected.clone()));
        register(Box::new(m.late_dropped.clone()));
        register(Box::new(m.duplicates_dropped.clone()));
        register(Box::new(m.rollups_emitted.clone()));
        register(Box::new(m.events_raised.clone()));
        register(Box::new(m.events_cleared.clone()));
        register(Box::new(m.pipeline_queue_batches.clone()));
        register(Box::new(m.store_commits.clone()));
        register(Box::new(m.store_commit_seconds.clone()));
        register(Box::new(m.store_written.vec.clone()));
        register(Box::new(m.store_removed.vec.clone()));
        register(Box::new(m.store_file_bytes.clone()));
        register(Box::new(m.store_stored_bytes.clone()));
        register(Box::new(m.outbox_entries.clone()));
        register(Box::new(m.store_errors.clone()));
        register(Box::new(m.web_connections.clone()));
        register(Box::new(m.web_connections_open.clone()));
        register(Box::new(m.web_connection_limit_waits.clone()));
        register(Box::new(m.sink_points_sent.vec.clone()));
        register(Box::new(m.sink_dead_letters.vec.clone()));
        register(Box::new(m.sink_dropped_points.vec.clone()));
        register(Box::new(m.sink_backlog_points.vec.clone()));
        register(Box::new(m.sink_backlog_bytes.vec.clone()));
        register(Box::new(m.sink_oldest_unsent_seconds.vec.clone()));
        register(Box::new(m.sink_state.vec.clone()));
        register(Box::new(m.config_reloads.vec.clone()));
        register(Box::new(m.config_last_reload_successful.clone()));
        register(Box::new(
            m.config_last_reload_success_timestamp_seconds.clone(),
        ));
        m.config_last_reload_successful.set(1);
        m
    }

    /// The content type of [`Metrics::encode`].
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding of gathered metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_counters_with_total_and_labels_by_name() {
        let m = Metrics::new();
        m.pipeline_readings.inc_by(3);
        m.store_written
            .get_or_create(&TableLabel {
                table: "raw".into(),
            })
            .inc_by(2);
        let text = m.encode();
        assert!(
            text.contains("# TYPE edgewatch_pipeline_readings_total counter"),
            "{text}"
        );
        assert!(
            text.contains("edgewatch_pipeline_readings_total 3"),
            "{text}"
        );
        assert!(
            text.contains("edgewatch_store_written_records_total{table=\"raw\"} 2"),
            "{text}"
        );
    }
}
