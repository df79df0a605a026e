//! `edgewatch backtest`: replays recorded files through the live pipeline's detectors and
//! scores the alarms against labels, so rules can be tried on recorded data before they are
//! deployed. Each file is its own stream (a fresh pipeline), scored after `--warmup-rows`;
//! counts add up over the files of a directory, as SKAB's leaderboard does.
//!
//! Output: a table on stdout (per file and in total: rows scored, TP/FP/FN/TN, precision,
//! recall, F1, FAR, MAR, events, events per hour, detection delay per labelled episode);
//! with `--output`, the alarm state of every row as CSV, and the events next to it.

mod input;
mod replay;
pub mod score;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use input::{Format, parse_any_time};

use crate::config::Config;
use crate::model::format_time;
use crate::pipeline::RuleSet;
use score::{Confusion, FileScore};

/// `edgewatch backtest`.
#[derive(Clone, Debug, clap::Args)]
pub struct BacktestArgs {
    /// The config whose `[[rules]]` and `[pipeline]` settings are tried (its sources are
    /// ignored).
    #[arg(long, short)]
    pub config: PathBuf,
    /// A recorded file, or a directory whose `.csv` files are each replayed as their own
    /// stream.
    #[arg(long, short)]
    pub input: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Anomaly windows per file (NAB's `labels.json`: `{"name.csv": [[start, end], ...]}`);
    /// without it, labels come from a column named `anomaly` or `label`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Rows at the start of each file that are not scored (the detectors learn there).
    /// Default: 400 for SKAB, as its leaderboard does; 0 otherwise.
    #[arg(long)]
    pub warmup_rows: Option<usize>,
    /// The sensor id the rows are replayed as (rules match `sensor/field`). Default: the
    /// file's name without extension.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Writes every row's alarm state here as CSV (`file,row,time,alarm,label`), and the
    /// events to the same path with `.events.csv` in place of `.csv`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Runs the command: 0 when every file was replayed, 1 on an unreadable file or output, 64
/// for rules that do not compile.
pub fn main(config: &Config, args: &BacktestArgs) -> ExitCode {
    match run(config, args, &mut std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("edgewatch backtest: {e}");
            ExitCode::from(64)
        }
        Err(Failure::Other(e)) => {
            eprintln!("edgewatch backtest: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Other(String),
}

/// One file's outcome.
#[derive(Debug)]
pub struct FileResult {
    pub path: PathBuf,
    pub score: FileScore,
}

/// The whole run, for callers that check figures (tests).
#[derive(Debug)]
pub struct Report {
    pub files: Vec<FileResult>,
    pub total: Confusion,
    pub labelled: bool,
}

/// Replays and scores every file, printing the report to `out`.
pub fn run(config: &Config, args: &BacktestArgs, out: &mut impl Write) -> Result<Report, Failure> {
    let other = |e: &dyn std::fmt::Display| Failure::Other(e.to_string());
    let windows = match &args.labels {
        Some(path) => Some(input::Windows::load(path).map_err(|e| other(&e))?),
        None => None,
    };
    if args.format == Format::Nab && windows.is_none() {
        return Err(Failure::Usage(
            "--format nab needs --labels (NAB's labels.json) to score".into(),
        ));
    }
    let warmup = args
        .warmup_rows
        .unwrap_or(if args.format == Format::Skab { 400 } else { 0 });
    let files = input::files(&args.input).map_err(|e| other(&e))?;
    let mut writers = match &args.output {
        Some(path) => Some(Writers::create(path).map_err(|e| other(&e))?),
        None => None,
    };
    let mut report = Report {
        files: Vec::new(),
        total: Confusion::default(),
        labelled: false,
    };
    for path in files {
        let recording = input::read(&path, args.format, windows.as_ref()).map_err(|e| other(&e))?;
        let rules = RuleSet::compile(&config.rules).map_err(|e| Failure::Usage(e.to_string()))?;
        let sensor = args.sensor.clone().unwrap_or_else(|| stem(&path));
        let replayed = replay::replay(config, rules, &recording, &sensor);
        let labels: Vec<Option<bool>> = recording.rows.iter().map(|r| r.label).collect();
        let times: Vec<i64> = recording.rows.iter().map(|r| r.time).collect();
        let raised: Vec<i64> = replayed.events.iter().map(|e| e.raised_at).collect();
        let score = score::score(&replayed.alarms, &labels, &times, warmup, &raised);
        if let Some(w) = writers.as_mut() {
            w.write(&path, &recording, &replayed)
                .map_err(|e| other(&e))?;
        }
        report.labelled |= labels.iter().any(Option::is_some);
        report.total.merge(&score.confusion);
        report.files.push(FileResult { path, score });
    }
    if let Some(w) = writers {
        w.finish().map_err(|e| other(&e))?;
    }
    print(&report, warmup, out).map_err(|e| other(&e))?;
    Ok(report)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording")
        .to_string()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.1} %", v * 100.0))
}

fn frac(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.3}"))
}

fn print(report: &Report, warmup: usize, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9}  detection delay per episode",
        "file",
        "scored",
        "TP",
        "FP",
        "FN",
        "TN",
        "prec",
        "recall",
        "FAR",
        "MAR",
        "events",
        "events/h"
    )?;
    let mut events = 0;
    let mut secs = 0.0;
    let (mut alarmed, mut after_warmup) = (0, 0);
    for f in &report.files {
        let c = &f.score.confusion;
        let delays: Vec<String> = f
            .score
            .episodes
            .iter()
            .map(|e| match (e.delay_rows(), e.delay_secs()) {
                (Some(rows), Some(s)) => format!("{rows} rows / {s:.0} s"),
                _ => "missed".into(),
            })
            .collect();
        writeln!(
            out,
            "{:<24} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9}  {}  F1 {}",
            f.path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            f.score.scored_rows,
            c.tp,
            c.fp,
            c.fn_,
            c.tn,
            frac(c.precision()),
            frac(c.recall()),
            pct(c.far()),
            pct(c.mar()),
            f.score.events,
            f.score
                .events_per_hour()
                .map_or("—".into(), |v| format!("{v:.2}")),
            if delays.is_empty() {
                "—".to_string()
            } else {
                delays.join(", ")
            },
            frac(c.f1()),
        )?;
        events += f.score.events;
        secs += f.score.scored_secs;
        alarmed += f.score.alarmed_rows;
        after_warmup += f.score.rows_after_warmup;
    }
    let c = &report.total;
    writeln!(
        out,
        "total: {} files, {} rows scored (warm-up {warmup} rows per file), TP {} FP {} FN {} TN {}",
        report.files.len(),
        c.rows(),
        c.tp,
        c.fp,
        c.fn_,
        c.tn
    )?;
    if report.labelled {
        writeln!(
            out,
            "F1 {}  precision {}  recall {}  FAR {}  MAR {}  events {events} ({} per hour of scored time)",
            frac(c.f1()),
            frac(c.precision()),
            frac(c.recall()),
            pct(c.far()),
            pct(c.mar()),
            if secs > 0.0 {
                format!("{:.2}", events as f64 * 3_600.0 / secs)
            } else {
                "—".into()
            },
        )?;
    } else {
        writeln!(
            out,
            "no labels: events {events} ({} per hour after warm-up), alarm on for {} of the rows after warm-up",
            if secs > 0.0 {
                format!("{:.2}", events as f64 * 3_600.0 / secs)
            } else {
                "—".into()
            },
            pct((after_warmup > 0).then(|| alarmed as f64 / after_warmup as f64)),
        )?;
    }
    Ok(())
}

/// The two output files.
struct Writers {
    alarms: csv::Writer<std::fs::File>,
    events: csv::Writer<std::fs::File>,
}

impl Writers {
    fn create(path: &Path) -> Result<Writers, csv::Error> {
        let events_path = match path.to_str().and_then(|p| p.strip_suffix(".csv")) {
            Some(base) => PathBuf::from(format!("{base}.events.csv")),
            None => PathBuf::from(format!("{}.events.csv", path.display())),
        };
        let mut alarms = csv::Writer::from_path(path)?;
        alarms.write_record(["file", "row", "time", "alarm", "label"])?;
        let mut events = csv::Writer::from_path(events_path)?;
        events.write_record([
            "file",
            "id",
            "sensor",
            "field",
            "rule",
            "kind",
            "severity",
            "raised_at",
            "cleared_at",
            "value",
            "peak_score",
            "message",
        ])?;
        Ok(Writers { alarms, events })
    }

    fn write(
        &mut self,
        path: &Path,
        recording: &input::Recording,
        replayed: &replay::Replay,
    ) -> Result<(), csv::Error> {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for (i, (row, alarm)) in recording.rows.iter().zip(&replayed.alarms).enumerate() {
            let label = row.label.map_or(String::new(), |l| u8::from(l).to_string());
            self.alarms.write_record([
                file,
                &i.to_string(),
                &format_time(row.time),
                &u8::from(*alarm).to_string(),
                &label,
            ])?;
        }
        for e in &replayed.events {
            self.events.write_record([
                file,
                &e.id.to_string(),
                &e.sensor,
                &e.field,
                &e.rule,
                &e.kind,
                e.severity.as_str(),
                &format_time(e.raised_at),
                &e.cleared_at.map(format_time).unwrap_or_default(),
                &e.value.to_string(),
                &e.peak_score.to_string(),
                &e.message,
            ])?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), csv::Error> {
        self.alarms.flush()?;
        self.events.flush()?;
        Ok(())
    }
}
