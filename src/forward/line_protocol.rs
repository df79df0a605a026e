//! InfluxDB line protocol encoder: one [`Point`] becomes one line. Pure: no I/O, no clock.
//!
//! InfluxDB 1.x and 2.x (Go, `models/points.go`) and 3.x (Rust) read line protocol slightly
//! differently; this encoder writes only the subset on which they agree, checked by hand
//! against InfluxDB 1.6.7 (the version the integration tests use):
//!
//! - Measurement: `,` and space are escaped. Tag keys, tag values and field keys: `,`, `=` and
//!   space. String field values: `"` and `\`.
//! - A backslash in a name or tag value is written as it is when an ordinary character follows
//!   it. At the end, or before `\`, `,`, `=` or a space, it is replaced by `/`: 1.x has no
//!   escape for a backslash there (it stores `a\\b` with both backslashes, and a trailing one
//!   escapes the separator after it and breaks the line), while 3.x reads `\\` as one
//!   backslash, so no spelling would mean the same to both.
//! - Control characters (newline, carriage return, tab, NUL...) in names and tag values become
//!   a space: 1.6 breaks on raw newlines and on CRLF, and 3.x ends a token at a tab. In string
//!   field values a newline is written `\n` and a carriage return `\r` (a backslash and a
//!   letter); InfluxDB keeps those two characters as they are, so a multi-line message arrives
//!   readable, on one line.
//! - Tags are sorted by key (InfluxDB's own order, so equal tag sets give equal bytes) and a
//!   tag with an empty value is left out, as InfluxDB cannot store one.
//! - Floats use Rust's shortest round-trip formatting (`{}`: never an exponent, never `inf` or
//!   `NaN`). NaN and infinities cannot be written at all: such a field is left out, and a point
//!   left with no field is an error ([`EncodeError::NoFields`]).
//! - Refused with an error rather than sent to be dropped: `time` as a tag or field key (1.x
//!   drops such a point: "partial write: invalid tag key"), a measurement that starts with `#`
//!   (1.x answers 204 and ignores the line as a comment), duplicate keys (1.x rejects duplicate
//!   tags; for duplicate fields the last one wins silently).
//!
//! Invariants: **a line holds no raw newline or carriage return except the `\n` that ends it**;
//! **the same point always encodes to the same bytes**; **`encode` appends a whole line or
//! nothing**.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::TimeNs;

/// The value of one field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// Written with Rust's shortest round-trip formatting (`71.2`, `0.0000001`), so that the
    /// value read back is bit for bit the one written. NaN and infinities are left out.
    Float(f64),
    /// Written with the `i` suffix (`42i`).
    Integer(i64),
    /// Written with the `u` suffix (`42u`). InfluxDB 1.x (1.6 at least) rejects that suffix
    /// ("invalid number"), so edgewatch's own points use [`FieldValue::Integer`] only; this is
    /// for callers that write to 2.x or 3.x only.
    UInteger(u64),
    /// Written `true` or `false`.
    Bool(bool),
    /// Written in double quotes, with `"` and `\` escaped and newlines as `\n`.
    Str(String),
}

/// One point: a measurement, its tags, its fields and its time.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub measurement: String,
    /// Tags in any order: they are written sorted by key. A tag with an empty value is left
    /// out.
    pub tags: Vec<(String, String)>,
    /// Fields, written in this order. At least one must be representable.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the epoch; divided (rounding down) to the precision when written.
    pub time: TimeNs,
}

/// Unit of the timestamps in a write, the `precision=` query parameter of both write APIs.
/// A server that is told the wrong one misplaces every point by factors of 1000, so the
/// encoder and the request must take it from the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    /// The value of the `precision=` query parameter (InfluxDB 1.x silently treats an unknown
    /// one as `ns`, so this must be exact).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// Nanoseconds in one unit.
    pub fn ns_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// A time in this unit, rounded down (towards the past, also before 1970), so that a
    /// point never moves into the next second (or millisecond) and out of its window.
    pub fn timestamp(self, time: TimeNs) -> i64 {
        time.div_euclid(self.ns_per_unit())
    }
}

/// Why a point cannot be written. Nothing is appended to the output when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a point has an empty measurement name")]
    EmptyMeasurement,
    #[error(
        "measurement {measurement:?} starts with '#': InfluxDB would read the line as a comment and drop it"
    )]
    CommentMeasurement { measurement: String },
    #[error("a point of measurement {measurement:?} has an empty {what}")]
    EmptyKey {
        measurement: String,
        what: &'static str,
    },
    #[error("a point of measurement {measurement:?} has the {what} {key:?} twice")]
    DuplicateKey {
        measurement: String,
        what: &'static str,
        key: String,
    },
    #[error(
        "a point of measurement {measurement:?} uses \"time\" as a {what}: InfluxDB reserves it and drops the point"
    )]
    ReservedKey {
        measurement: String,
        what: &'static str,
    },
    #[error(
        "a point of measurement {measurement:?} has no field that line protocol can carry (NaN and infinite floats are left out)"
    )]
    NoFields { measurement: String },
}

/// Characters escaped in a measurement name.
const MEASUREMENT_ESCAPES: &[char] = &[',', ' '];
/// Characters escaped in tag keys, tag values and field keys.
const KEY_ESCAPES: &[char] = &[',', '=', ' '];

/// Appends `point` as one line (ending in `\n`) to `out`, with its time in `precision`.
pub fn encode(point: &Point, precision: Precision, out: &mut String) -> Result<(), EncodeError> {
    let measurement = clean(&point.measurement);
    if measurement.is_empty() {
        return Err(EncodeError::EmptyMeasurement);
    }
    if measurement.starts_with('#') {
        return Err(EncodeError::CommentMeasurement {
            measurement: measurement.into_owned(),
        });
    }

    let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = point
        .tags
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (clean(key), clean(value)))
        .collect();
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    check_keys(
        &measurement,
        "tag key",
        tags.iter().map(|(k, _)| k.as_ref()),
    )?;

    let fields: Vec<(Cow<'_, str>, &FieldValue)> = point
        .fields
        .iter()
        .filter(|(_, value)| representable(value))
        .map(|(key, value)| (clean(key), value))
        .collect();
    if fields.is_empty() {
        return Err(EncodeError::NoFields {
            measurement: measurement.into_owned(),
        });
    }
    let mut field_keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    field_keys.sort_unstable();
    check_keys(&measurement, "field key", field_keys.into_iter())?;

    // Every check has passed: nothing below can fail, so `out` only ever gets whole lines.
    push_escaped(out, &measurement, MEASUREMENT_ESCAPES);
    for (key, value) in &tags {
        out.push(',');
        push_escaped(out, key, KEY_ESCAPES);
        out.push('=');
        push_escaped(out, value, KEY_ESCAPES);
    }
    for (i, (key, value)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        push_escaped(out, key, KEY_ESCAPES);
        out.push('=');
        push_value(out, value);
    }
    push_display(out, format_args!(" {}\n", precision.timestamp(point.time)));
    Ok(())
}

/// Whether line protocol can carry the value (it has no spelling for NaN or infinities).
fn representable(value: &FieldValue) -> bool {
    match value {
        FieldValue::Float(v) => v.is_finite(),
        _ => true,
    }
}

/// Checks sorted keys for empty, reserved and repeated ones.
fn check_keys<'a>(
    measurement: &str,
    what: &'static str,
    sorted_keys: impl Iterator<Item = &'a str>,
) -> Result<(), EncodeError> {
    let mut previous: Option<&str> = None;
    for key in sorted_keys {
        if key.is_empty() {
            return Err(EncodeError::EmptyKey {
                measurement: measurement.to_string(),
                what,
            });
        }
        if key == "time" {
            return Err(EncodeError::ReservedKey {
                measurement: measurement.to_string(),
                what,
            });
        }
        if previous == Some(key) {
            return Err(EncodeError::DuplicateKey {
                measurement: measurement.to_string(),
                what,
                key: key.to_string(),
            });
        }
        previous = Some(key);
    }
    Ok(())
}

/// A name or tag value as it can be written: control characters become a space, and a
/// backslash that no InfluxDB version would read back as written becomes `/` (see the module
/// doc). Borrows when nothing changes, which is nearly always.
fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let chars: Vec<char> = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let ambiguous = next.is_none_or(|n| matches!(n, '\\' | ',' | '=' | ' '));
        out.push(if c == '\\' && ambiguous { '/' } else { c });
    }
    Cow::Owned(out)
}

/// Appends `s` with a backslash before each character of `escapes`.
fn push_escaped(out: &mut String, s: &str, escapes: &[char]) {
    for c in s.chars() {
        if escapes.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn push_value(out: &mut String, value: &FieldValue) {
    match value {
        FieldValue::Float(v) => push_display(out, format_args!("{v}")),
        FieldValue::Integer(v) => push_display(out, format_args!("{v}i")),
        FieldValue::UInteger(v) => push_display(out, format_args!("{v}u")),
        FieldValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        FieldValue::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }
}

/// Formats into the line without an intermediate `String`.
fn push_display(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a `String` cannot fail.
    let _ = out.write_fmt(args);
}

#[cfg(test)]
mod tests;
