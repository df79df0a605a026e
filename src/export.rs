//! `edgewatch export`: stored rollups, anomaly events or the forwarding backlog written to a
//! stream as line protocol or CSV, so that a technician can carry data out on a USB stick when
//! the uplink has been dead for weeks.
//!
//! Line protocol comes from [`crate::forward::points`], byte for byte what the forwarder
//! writes (nanosecond precision), so importing an export into InfluxDB and later forwarding
//! the same records overwrites points instead of duplicating them.
//!
//! Memory stays bounded whatever the size of the store: rollups are read one series at a time,
//! the backlog one page of the outbox at a time, and output goes straight to the writer.
//! Events are read in one piece; they are few (one per anomaly episode) and kept for a bounded
//! time (`store.event_retention_secs`).
//!
//! The store is opened like the daemon opens it, and redb lets one process at a time hold a
//! file: export refuses a store that a running edgewatch holds (stop it, or copy the file and
//! export the copy), and never creates a store that does not exist.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::config::StoreConfig;
use crate::forward::line_protocol::{EncodeError, Point, Precision, encode};
use crate::forward::points::{PointTags, add_series_tags, event_point, outbox_point, rollup_point};
use crate::model::{AnomalyEvent, Stats, TimeNs, format_time};
use crate::store::{EventFilter, OutboxEntry, Store, StoreError};

/// Outbox entries read per page of the backlog.
const BACKLOG_PAGE: usize = 1024;

/// What to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Every stored rollup.
    #[default]
    Rollups,
    /// Every stored anomaly event, in its latest state.
    Events,
    /// Every outbox entry still in the store: what the forwarders have yet to send (and what
    /// they sent but retention has not removed yet), oldest first.
    Backlog,
}

/// How to write it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// InfluxDB line protocol, nanosecond precision, as the forwarder writes it.
    #[default]
    Lp,
    /// CSV with a header row, times in RFC 3339.
    Csv,
}

/// One export.
#[derive(Clone, Debug)]
pub struct Options {
    pub what: What,
    pub format: Format,
    /// Records with `from <= time < to` are exported; the time of a rollup is its window
    /// start, that of an event its `raised_at`.
    pub from: TimeNs,
    pub to: TimeNs,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            what: What::Rollups,
            format: Format::Lp,
            from: TimeNs::MIN,
            to: TimeNs::MAX,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records written (lines of line protocol, or CSV rows without the header).
    pub written: u64,
    /// Records that line protocol could not carry (see [`EncodeError`]), with the first
    /// reason. The forwarder would refuse them the same way.
    pub refused: u64,
    pub first_refusal: Option<EncodeError>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "there is no store at {path}: check store.path (and EDGEWATCH__STORE__PATH); export never creates one"
    )]
    Missing { path: PathBuf },
    #[error(
        "the store {path} is in use by a running edgewatch; stop it first or copy the file and export the copy"
    )]
    InUse { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] io::Error),
}

/// Opens an existing store for export.
pub fn open_store(config: &StoreConfig) -> Result<Store, ExportError> {
    if !config.path.is_file() {
        return Err(ExportError::Missing {
            path: config.path.clone(),
        });
    }
    Store::open(config).map_err(|error| match error {
        StoreError::Open { path, source }
            if matches!(*source, redb::DatabaseError::DatabaseAlreadyOpen) =>
        {
            ExportError::InUse { path }
        }
        other => ExportError::Store(other),
    })
}

/// Writes the selected records to `out` and flushes it.
pub fn export(
    store: &Store,
    tags: &PointTags,
    options: &Options,
    out: &mut dyn Write,
) -> Result<Summary, ExportError> {
    export_paged(store, tags, options, out, BACKLOG_PAGE)
}

/// [`export`] with the backlog read `page` entries at a time (small in tests, so that they
/// cross page boundaries).
fn export_paged(
    store: &Store,
    tags: &PointTags,
    options: &Options,
    out: &mut dyn Write,
    page: usize,
) -> Result<Summary, ExportError> {
    let mut sink = Sink {
        out,
        format: options.format,
        tags,
        buf: String::new(),
        summary: Summary::default(),
    };
    let in_range = |t: TimeNs| options.from <= t && t < options.to;
    match options.what {
        What::Rollups => {
            sink.header(&[&["sensor", "field"], ROLLUP_COLUMNS])?;
            let sensor_tags = store.sensor_tags()?;
            for (series, source) in store.series()? {
                let rollups = store.rollups(
                    &series.sensor,
                    Some(&series.field),
                    options.from,
                    options.to,
                )?;
                for r in rollups {
                    let rollup = RollupRef {
                        sensor: &series.sensor,
                        field: &series.field,
                        source: &source,
                        start: r.start,
                        length_ns: r.length_ns,
                        stats: &r.stats,
                        tags: sensor_tags.get(&*series.sensor),
                    };
                    sink.rollup(None, &rollup)?;
                }
            }
        }
        What::Events => {
            sink.header(&[&["sensor", "field"], EVENT_COLUMNS])?;
            // The store lists newest first; an export reads better in the order of raising.
            let mut events = store.events(&EventFilter::default())?;
            events.reverse();
            for event in events.iter().filter(|e| in_range(e.raised_at)) {
                sink.event(None, event)?;
            }
        }
        What::Backlog => {
            sink.header(&[
                &["seq", "type", "sensor", "field"],
                ROLLUP_COLUMNS,
                EVENT_COLUMNS,
            ])?;
            let mut after = 0;
            loop {
                let entries = store.outbox_after(after, page)?;
                let Some(&(last, _)) = entries.last() else {
                    break;
                };
                after = last;
                for (seq, entry) in &entries {
                    match entry {
                        OutboxEntry::Rollup {
                            sensor,
                            field,
                            source,
                            start,
                            length_ns,
                            stats,
                            tags,
                        } if in_range(*start) => {
                            let rollup = RollupRef {
                                sensor,
                                field,
                                source,
                                start: *start,
                                length_ns: *length_ns,
                                stats,
                                tags: Some(tags),
                            };
                            sink.backlog_rollup(*seq, entry, &rollup)?;
                        }
                        OutboxEntry::Event(event) if in_range(event.raised_at) => {
                            sink.event(Some(*seq), event)?;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    sink.out.flush()?;
    Ok(sink.summary)
}

/// CSV columns of a rollup after `sensor` and `field`.
const ROLLUP_COLUMNS: &[&str] = &[
    "source", "start", "end", "count", "mean", "min", "max", "stddev", "first", "last", "quality",
];

/// CSV columns of an event after `sensor` and `field`.
const EVENT_COLUMNS: &[&str] = &[
    "id",
    "rule",
    "kind",
    "severity",
    "active",
    "raised_at",
    "cleared_at",
    "value",
    "score",
    "peak_value",
    "peak_score",
    "peak_at",
    "message",
];

/// A rollup as both the rollups table and the outbox hold it.
struct RollupRef<'a> {
    sensor: &'a str,
    field: &'a str,
    source: &'a str,
    start: TimeNs,
    length_ns: i64,
    stats: &'a Stats,
    tags: Option<&'a crate::model::Tags>,
}

/// The output: formats records and counts them.
struct Sink<'a> {
    out: &'a mut dyn Write,
    format: Format,
    tags: &'a PointTags,
    /// One line at a time, reused.
    buf: String,
    summary: Summary,
}

impl Sink<'_> {
    /// The CSV header (line protocol has none).
    fn header(&mut self, groups: &[&[&str]]) -> io::Result<()> {
        if self.format == Format::Csv {
            self.buf.clear();
            let mut row = Row::new(&mut self.buf);
            for column in groups.iter().flat_map(|g| g.iter()) {
                row.cell(column);
            }
            self.buf.push('\n');
            self.out.write_all(self.buf.as_bytes())?;
        }
        Ok(())
    }

    /// A rollup from the rollups table.
    fn rollup(&mut self, seq: Option<u64>, r: &RollupRef<'_>) -> io::Result<()> {
        match self.format {
            Format::Lp => {
                let mut point = rollup_point(
                    r.sensor,
                    r.field,
                    r.source,
                    r.start,
                    r.length_ns,
                    r.stats,
                    self.tags,
                );
                if let Some(tags) = r.tags {
                    add_series_tags(&mut point, tags);
                }
                self.point(&point)
            }
            Format::Csv => {
                self.buf.clear();
                let mut row = Row::new(&mut self.buf);
                if let Some(seq) = seq {
                    row.cell(&seq.to_string());
                    row.cell("rollup");
                }
                row.cell(r.sensor);
                row.cell(r.field);
                rollup_cells(&mut row, r);
                if seq.is_some() {
                    row.empty(EVENT_COLUMNS.len());
                }
                self.row()
            }
        }
    }

    /// A rollup from the outbox: in line protocol exactly the forwarder's point.
    fn backlog_rollup(
        &mut self,
        seq: u64,
        entry: &OutboxEntry,
        r: &RollupRef<'_>,
    ) -> io::Result<()> {
        match self.format {
            Format::Lp => match outbox_point(entry, self.tags) {
                Some(point) => self.point(&point),
                None => Ok(()),
            },
            Format::Csv => self.rollup(Some(seq), r),
        }
    }

    /// An event; `seq` is its outbox sequence in a backlog export.
    fn event(&mut self, seq: Option<u64>, event: &AnomalyEvent) -> io::Result<()> {
        match self.format {
            // No source tag, as in the outbox (see `forward::points::outbox_point`), so that
            // an imported export and the forwarder write the same points.
            Format::Lp => self.point(&event_point(event, "", self.tags)),
            Format::Csv => {
                self.buf.clear();
                let mut row = Row::new(&mut self.buf);
                if let Some(seq) = seq {
                    row.cell(&seq.to_string());
                    row.cell("event");
                }
                row.cell(&event.sensor);
                row.cell(&event.field);
                if seq.is_some() {
                    row.empty(ROLLUP_COLUMNS.len());
                }
                event_cells(&mut row, event);
                self.row()
            }
        }
    }

    fn point(&mut self, point: &Point) -> io::Result<()> {
        self.buf.clear();
        match encode(point, Precision::Ns, &mut self.buf) {
            Ok(()) => {
                self.out.write_all(self.buf.as_bytes())?;
                self.summary.written += 1;
            }
            Err(error) => {
                self.summary.refused += 1;
                self.summary.first_refusal.get_or_insert(error);
            }
        }
        Ok(())
    }

    /// Ends and writes the CSV row in `buf`.
    fn row(&mut self) -> io::Result<()> {
        self.buf.push('\n');
        self.out.write_all(self.buf.as_bytes())?;
        self.summary.written += 1;
        Ok(())
    }
}

fn rollup_cells(row: &mut Row<'_>, r: &RollupRef<'_>) {
    row.cell(r.source);
    row.cell(&format_time(r.start));
    row.cell(&format_time(r.start.saturating_add(r.length_ns)));
    row.cell(&r.stats.count.to_string());
    for v in [
        r.stats.mean(),
        r.stats.min,
        r.stats.max,
        r.stats.stddev(),
        r.stats.first,
        r.stats.last,
    ] {
        row.float(v);
    }
    row.cell(&r.stats.quality.names().join("|"));
}

fn event_cells(row: &mut Row<'_>, e: &AnomalyEvent) {
    row.cell(&e.id.to_string());
    row.cell(&e.rule);
    row.cell(&e.kind);
    row.cell(e.severity.as_str());
    row.cell(if e.is_active() { "true" } else { "false" });
    row.cell(&format_time(e.raised_at));
    row.cell(&e.cleared_at.map(format_time).unwrap_or_default());
    for v in [e.value, e.score, e.peak_value, e.peak_score] {
        row.float(v);
    }
    row.cell(&format_time(e.peak_at));
    row.cell(&e.message);
}

/// Builds one CSV row (RFC 4180, `\n` line ends).
struct Row<'a> {
    line: &'a mut String,
    cells: usize,
}

impl<'a> Row<'a> {
    fn new(line: &'a mut String) -> Self {
        Row { line, cells: 0 }
    }

    /// Appends a cell, quoted when it holds a comma, a quote, a line break or surrounding
    /// spaces (which some readers trim).
    fn cell(&mut self, value: &str) {
        if self.cells > 0 {
            self.line.push(',');
        }
        self.cells += 1;
        self.line.push_str(&csv_quote(value));
    }

    /// A float with Rust's shortest round-trip formatting; empty for NaN and infinities.
    fn float(&mut self, v: f64) {
        if v.is_finite() {
            self.cell(&v.to_string());
        } else {
            self.cell("");
        }
    }

    fn empty(&mut self, n: usize) {
        for _ in 0..n {
            self.cell("");
        }
    }
}

/// A CSV cell: as it is when that is unambiguous, else in double quotes with quotes doubled.
fn csv_quote(value: &str) -> Cow<'_, str> {
    let needs_quotes =
        value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') || value.ends_with(' ');
    if needs_quotes {
        Cow::Owned(format!("\"{}\"", value.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NS_PER_SEC, Quality, Rollup, SeriesKey};
    use crate::store::WriteBatch;

    #[test]
    fn backlog_reads_the_whole_outbox_across_pages_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            path: dir.path().join("edgewatch.redb"),
            ..StoreConfig::default()
        };
        let store = Store::open(&config).unwrap();
        let minute = 60 * NS_PER_SEC;
        let rollups = (0..10)
            .map(|i| Rollup {
                series: SeriesKey::new("p-101", "temperature"),
                start: i * minute,
                length_ns: minute,
                stats: Stats::of(i * minute, i as f64, Quality::GOOD),
            })
            .collect();
        store
            .write(&WriteBatch {
                rollups,
                ..WriteBatch::default()
            })
            .unwrap();
        let options = Options {
            what: What::Backlog,
            from: 2 * minute,
            ..Options::default()
        };
        let mut out = Vec::new();
        let summary = export_paged(&store, &PointTags::default(), &options, &mut out, 3).unwrap();
        let text = String::from_utf8(out).unwrap();
        let times: Vec<i64> = text
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(times, (2..10).map(|i| i * minute).collect::<Vec<_>>());
        assert_eq!(summary.written, 8);
    }

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        assert_eq!(csv_quote("p-101"), "p-101");
        assert_eq!(csv_quote("a,b"), "\"a,b\"");
        assert_eq!(csv_quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_quote(" padded"), "\" padded\"");
        assert_eq!(csv_quote(""), "");
    }

    #[test]
    fn a_csv_row_has_one_cell_per_column_and_empty_cells_for_non_finite_floats() {
        let mut line = String::new();
        let mut row = Row::new(&mut line);
        row.cell("x,y");
        row.float(f64::NAN);
        row.float(1.5);
        row.empty(2);
        assert_eq!(line, "\"x,y\",,1.5,,");
    }
}
