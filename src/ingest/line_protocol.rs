//! InfluxDB line protocol payloads: `measurement[,tag=value...] field=value[,...] [timestamp]`,
//! one point per line. Reads everything `crate::forward::line_protocol` writes, and what
//! Telegraf and the InfluxDB client libraries write.
//!
//! - Lines end in `\n` (a `\r` before it is dropped); blank lines and `#` comments are skipped;
//!   leading whitespace is skipped and runs of spaces between the sections are allowed.
//! - Escapes: `\,` and `\ ` in the measurement, `\,` `\ ` `\=` in tag keys, tag values and field
//!   keys, `\\` (a backslash, as InfluxDB 3.x reads it) in all of them; any other backslash
//!   stands for itself. In string fields `\"` and `\\`.
//! - Field values: floats (`1.5`, `-2e3`), integers (`2i`), unsigned integers (`2u`), booleans
//!   (`t`, `T`, `true`, `True`, `TRUE` and the `f` forms) as 1 and 0. String fields are
//!   skipped: a reading is a number.
//! - The sensor id is the tag named `id_tag`, else the measurement; the other tags are not
//!   kept. The timestamp is optional (missing: the time of arrival, flagged) and its unit is
//!   `time_format` (`auto` is nanoseconds, InfluxDB's default).
//!
//! A line that cannot be read refuses the whole message, naming the line.

use std::borrow::Cow;
use std::sync::Arc;

use super::{BadPayload, BadReason, Decoder, bad, quote, sensor_id};
use crate::model::{Quality, Reading, SeriesKey, TimeNs};

/// One point as read, names unescaped (borrowed unless they held escapes).
#[derive(Debug, PartialEq)]
pub(super) struct Line<'a> {
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Numeric fields only (string fields are skipped).
    pub fields: Vec<(Cow<'a, str>, f64)>,
    /// The timestamp as written (unit not applied).
    pub timestamp: Option<i64>,
}

/// Decodes every line of `text`.
pub(super) fn decode(
    decoder: &Decoder,
    text: &str,
    topic_sensor: Option<&str>,
    arrival: TimeNs,
    out: &mut Vec<Reading>,
) -> Result<(), BadPayload> {
    let first = out.len();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let number = i + 1;
        let parsed = parse_line(trimmed).map_err(|why| {
            bad(
                BadReason::InvalidLineProtocol,
                format!("line {number}: {why}: {}", quote(trimmed)),
            )
        })?;
        let in_line = |e: BadPayload| bad(e.reason, format!("line {number}: {}", e.detail));
        let sensor = match topic_sensor {
            Some(id) => sensor_id(id),
            None => {
                let tag = parsed
                    .tags
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == *decoder.id_tag);
                sensor_id(tag.map_or(&parsed.measurement, |(_, v)| v))
            }
        }
        .map_err(in_line)?;
        let (time, quality) = match parsed.timestamp {
            None => (arrival, Quality::TIME_FROM_ARRIVAL),
            Some(ts) => match super::time::line_protocol(ts, decoder.time_format) {
                Ok(t) => (t, Quality::GOOD),
                Err(why) => return Err(in_line(bad(BadReason::BadTime, why))),
            },
        };
        let start = out.len();
        for (field, value) in parsed.fields {
            out.push(Reading {
                series: SeriesKey {
                    sensor: sensor.clone(),
                    field: Arc::from(field),
                },
                time,
                value,
                quality,
            });
        }
        super::keep_last_of_each_field(out, start);
    }
    if out.len() == first {
        return Err(bad(BadReason::NoFields, "no numeric field in any line"));
    }
    Ok(())
}

/// Characters a backslash escapes in a measurement, and in keys and tag values.
const MEASUREMENT_ESCAPES: &[u8] = b", \\";
const KEY_ESCAPES: &[u8] = b", =\\";

/// Parses one line (no newline, no leading whitespace); the error says what is wrong.
pub(super) fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let b = line.as_bytes();
    let m_end = scan(b, 0, b", ");
    if m_end == 0 {
        return Err("no measurement".into());
    }
    let measurement = unescape(&line[..m_end], MEASUREMENT_ESCAPES);

    let mut tags = Vec::new();
    let mut i = m_end;
    while b.get(i) == Some(&b',') {
        let k_end = scan(b, i + 1, b"=, ");
        if b.get(k_end) != Some(&b'=') || k_end == i + 1 {
            return Err("a tag is not key=value".into());
        }
        let v_end = scan(b, k_end + 1, b", ");
        if v_end == k_end + 1 {
            return Err("a tag has an empty value".into());
        }
        tags.push((
            unescape(&line[i + 1..k_end], KEY_ESCAPES),
            unescape(&line[k_end + 1..v_end], KEY_ESCAPES),
        ));
        i = v_end;
    }
    i = skip_spaces(b, i);
    if i == b.len() {
        return Err("no fields".into());
    }

    let mut fields = Vec::new();
    loop {
        let k_end = scan(b, i, b"=, ");
        if b.get(k_end) != Some(&b'=') || k_end == i {
            return Err("a field is not key=value".into());
        }
        let key = unescape(&line[i..k_end], KEY_ESCAPES);
        let v_start = k_end + 1;
        let v_end = if b.get(v_start) == Some(&b'"') {
            string_end(b, v_start + 1).ok_or("unterminated string field")?
        } else {
            let end = b[v_start..]
                .iter()
                .position(|&c| c == b',' || c == b' ')
                .map_or(b.len(), |p| v_start + p);
            let value = field_value(&line[v_start..end])
                .ok_or_else(|| format!("field {} has no valid value", quote(&key)))?;
            fields.push((key, value));
            end
        };
        match b.get(v_end) {
            Some(b',') => i = v_end + 1,
            _ => {
                i = v_end;
                break;
            }
        }
    }

    let after_fields = i;
    i = skip_spaces(b, i);
    let timestamp = if i < b.len() {
        if i == after_fields {
            return Err("unexpected text after a field".into());
        }
        let end = b[i..]
            .iter()
            .position(|&c| c == b' ')
            .map_or(b.len(), |p| i + p);
        if skip_spaces(b, end) != b.len() {
            return Err("unexpected text after the timestamp".into());
        }
        let ts = line[i..end].parse::<i64>();
        Some(ts.map_err(|_| "the timestamp is not an integer")?)
    } else {
        None
    };
    Ok(Line {
        measurement,
        tags,
        fields,
        timestamp,
    })
}

/// Index of the first byte of `stops` at or after `from` that no backslash escapes (or the
/// length). A backslash pairs with the byte after it, as InfluxDB's scanner does; the stops
/// are ASCII, so the index is always a character boundary.
fn scan(b: &[u8], from: usize, stops: &[u8]) -> usize {
    let mut i = from;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
        } else if stops.contains(&b[i]) {
            return i;
        } else {
            i += 1;
        }
    }
    b.len()
}

fn skip_spaces(b: &[u8], from: usize) -> usize {
    b[from.min(b.len())..]
        .iter()
        .position(|&c| c != b' ')
        .map_or(b.len(), |p| from + p)
}

/// The index just after the closing quote of a string field whose text starts at `from`.
fn string_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A name with its escapes resolved; borrowed when it has none.
fn unescape<'a>(text: &'a str, escapes: &[u8]) -> Cow<'a, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && next.is_ascii()
            && escapes.contains(&(next as u8))
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The number a field value stands for; `None` when it is not one.
fn field_value(text: &str) -> Option<f64> {
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if let Some(int) = text.strip_suffix('i') {
        return int.parse::<i64>().ok().map(|v| v as f64);
    }
    if let Some(uint) = text.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(|v| v as f64);
    }
    let numeric = text
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    // Digits, sign, point and exponent only: Rust would also read `inf` and `NaN`.
    if numeric && text.bytes().any(|c| c.is_ascii_digit()) {
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    } else {
        None
    }
}
