//! Recorded files for the backtest: SKAB (`;`, a label column `anomaly`), NAB (`timestamp,
//! value` with anomaly windows in a `labels.json`) and a generic CSV (a time column first, then
//! numeric columns; a column named `anomaly` or `label` holds 0/1 labels).
//!
//! Times: RFC 3339, `YYYY-MM-DD hh:mm:ss[.fraction]` without a zone (taken as UTC, as SKAB
//! and NAB write them), or epoch seconds, milliseconds, microseconds or nanoseconds told
//! apart by magnitude. A cell that is not a number is an error naming its row and column; an
//! empty cell is a missing reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::{NS_PER_SEC, TimeNs, parse_time};

/// How a file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// SKAB: `;`-separated, `datetime` first, `anomaly` labels, `changepoint` ignored.
    Skab,
    /// NAB: `timestamp,value`; labels from `--labels` (NAB's `labels.json`).
    Nab,
    /// A time column, then numeric columns; `,` or `;` (whichever the header uses).
    Csv,
}

/// One recorded file.
#[derive(Debug)]
pub struct Recording {
    /// Names of the numeric columns, the fields of the replayed sensor.
    pub fields: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time: TimeNs,
    /// One per field; NaN for an empty cell (no reading).
    pub values: Vec<f64>,
    /// `None`: the file has no labels for this row.
    pub label: Option<bool>,
}

/// Anomaly windows per file name (NAB's `labels.json`: keys are paths such as
/// `realKnownCause/machine_temperature_system_failure.csv`, values `[start, end]` pairs).
#[derive(Debug, Default)]
pub struct Windows(BTreeMap<String, Vec<(TimeNs, TimeNs)>>);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
}

fn bad(path: &Path, message: impl Into<String>) -> InputError {
    InputError::Bad {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Windows {
    pub fn load(path: &Path) -> Result<Windows, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(&text).map_err(|e| {
                bad(
                    path,
                    format!("not a labels file ({{\"file\": [[start, end], ...]}}): {e}"),
                )
            })?;
        let mut out = BTreeMap::new();
        for (name, windows) in raw {
            let mut parsed = Vec::with_capacity(windows.len());
            for (start, end) in windows {
                let t = |s: &str| {
                    parse_any_time(s)
                        .ok_or_else(|| bad(path, format!("{name}: {s:?} is not a time")))
                };
                parsed.push((t(&start)?, t(&end)?));
            }
            out.insert(name, parsed);
        }
        Ok(Windows(out))
    }

    /// The windows of the file `path`: the entry whose key is its name or ends in `/name`.
    fn of(&self, path: &Path) -> Option<&[(TimeNs, TimeNs)]> {
        let name = path.file_name()?.to_str()?;
        self.0
            .iter()
            .find(|(key, _)| *key == name || key.ends_with(&format!("/{name}")))
            .map(|(_, w)| w.as_slice())
    }
}

/// Reads one file. With `windows`, a row is anomalous when its time lies in one of the file's
/// windows (ends included); without, labels come from a label column, if any.
pub fn read(
    path: &Path,
    format: Format,
    windows: Option<&Windows>,
) -> Result<Recording, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let header = text
        .lines()
        .next()
        .ok_or_else(|| bad(path, "the file is empty"))?;
    let delimiter = match format {
        Format::Skab => b';',
        Format::Nab => b',',
        Format::Csv if header.contains(';') => b';',
        Format::Csv => b',',
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| bad(path, format!("header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if names.len() < 2 {
        return Err(bad(
            path,
            "the header needs a time column and at least one value column",
        ));
    }
    let is_label = |n: &str| n.eq_ignore_ascii_case("anomaly") || n.eq_ignore_ascii_case("label");
    let label_column = names.iter().position(|n| is_label(n));
    let value_columns: Vec<usize> = (1..names.len())
        .filter(|&i| Some(i) != label_column && !names[i].eq_ignore_ascii_case("changepoint"))
        .collect();
    if value_columns.is_empty() {
        return Err(bad(path, "no value column"));
    }
    let file_windows = windows.and_then(|w| w.of(path));
    if windows.is_some() && file_windows.is_none() {
        return Err(bad(path, "the labels file has no entry for this file"));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| bad(path, format!("line {line}: {e}")))?;
        let time_text = record.get(0).unwrap_or("");
        let time = parse_any_time(time_text).ok_or_else(|| {
            bad(
                path,
                format!(
                    "line {line}: {time_text:?} in column {:?} is not a time",
                    names[0]
                ),
            )
        })?;
        let mut values = Vec::with_capacity(value_columns.len());
        for &c in &value_columns {
            let cell = record.get(c).unwrap_or("");
            let value = if cell.is_empty() {
                f64::NAN
            } else {
                cell.parse::<f64>().map_err(|_| {
                    bad(
                        path,
                        format!(
                            "line {line}: {cell:?} in column {:?} is not a number",
                            names[c]
                        ),
                    )
                })?
            };
            values.push(value);
        }
        let label = match (file_windows, label_column) {
            (Some(w), _) => Some(w.iter().any(|&(start, end)| (start..=end).contains(&time))),
            (None, Some(c)) => {
                let cell = record.get(c).unwrap_or("");
                match cell.parse::<f64>() {
                    Ok(0.0) => Some(false),
                    Ok(1.0) => Some(true),
                    _ if cell.is_empty() => None,
                    _ => {
                        return Err(bad(
                            path,
                            format!("line {line}: label {cell:?} is neither 0 nor 1"),
                        ));
                    }
                }
            }
            (None, None) => None,
        };
        rows.push(Row {
            time,
            values,
            label,
        });
    }
    Ok(Recording {
        fields: value_columns.iter().map(|&c| names[c].clone()).collect(),
        rows,
    })
}

/// The files of `input`: the file itself, or every `.csv` file of a directory in natural order
/// (`2.csv` before `10.csv`).
pub fn files(input: &Path) -> Result<Vec<PathBuf>, InputError> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let entries = std::fs::read_dir(input).map_err(|source| InputError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort_by_key(|p| {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
    });
    if files.is_empty() {
        return Err(bad(input, "no .csv file in the directory"));
    }
    Ok(files)
}

/// RFC 3339; `YYYY-MM-DD hh:mm:ss[.fraction]` (or with `T`) without a zone, as UTC; epoch
/// seconds, ms, µs or ns by magnitude.
pub fn parse_any_time(text: &str) -> Option<TimeNs> {
    let text = text.trim();
    if let Some(t) = parse_time(text) {
        return Some(t);
    }
    if text.len() >= 19 && text.as_bytes()[4] == b'-' {
        let (date, rest) = text.split_at(10);
        let rest = rest.trim_start_matches([' ', 'T']);
        return parse_time(&format!("{date}T{rest}Z"));
    }
    if let Ok(n) = text.parse::<i64>() {
        let per_unit = match n.unsigned_abs() {
            a if a < 100_000_000_000 => NS_PER_SEC,
            a if a < 100_000_000_000_000 => 1_000_000,
            a if a < 100_000_000_000_000_000 => 1_000,
            _ => 1,
        };
        return n.checked_mul(per_unit);
    }
    let number: f64 = text.parse().ok()?;
    if !number.is_finite() {
        return None;
    }
    // Magnitudes of the present in each unit: 1.7e9 s, 1.7e12 ms, 1.7e15 µs, 1.7e18 ns.
    let scale = match number.abs() {
        a if a < 1e11 => NS_PER_SEC as f64,
        a if a < 1e14 => 1e6,
        a if a < 1e17 => 1e3,
        _ => 1.0,
    };
    Some((number * scale).round() as TimeNs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let t = parse_time("2020-03-09T10:14:33Z").unwrap();
        assert_eq!(parse_any_time("2020-03-09 10:14:33"), Some(t));
        assert_eq!(parse_any_time("2020-03-09T10:14:33"), Some(t));
        assert_eq!(parse_any_time("2020-03-09T10:14:33Z"), Some(t));
        assert_eq!(
            parse_any_time("2020-03-09 10:14:33.500000"),
            Some(t + NS_PER_SEC / 2)
        );
        let secs = t / NS_PER_SEC;
        assert_eq!(parse_any_time(&secs.to_string()), Some(t));
        assert_eq!(parse_any_time(&(secs * 1_000).to_string()), Some(t));
        assert_eq!(parse_any_time(&(secs * 1_000_000).to_string()), Some(t));
        assert_eq!(parse_any_time(&t.to_string()), Some(t));
        assert_eq!(parse_any_time("yesterday"), None);
    }
}
