//! `format = "value"`: the payload is one bare number, and the topic says whose and what it is.
//!
//! The number is ASCII text with optional surrounding whitespace: a decimal number (`71.2`,
//! `-3`, `1e-3`, `+5`) or `true`/`false` (1 and 0). `NaN` and infinities are refused: no
//! device means them as a measurement. The time is always the time of arrival (flagged).
//! The sensor id is `{sensor_id}` of the template, else the topic without its last segment;
//! the field is `{field}`, else the `field` key, else the last topic segment.

use std::sync::Arc;

use super::topic::TopicMatch;
use super::{BadPayload, BadReason, Decoder, bad, quote, sensor_id};
use crate::model::{Quality, Reading, SeriesKey, TimeNs};

pub(super) fn decode(
    decoder: &Decoder,
    topic: &str,
    matched: Option<TopicMatch<'_>>,
    payload: &[u8],
    arrival: TimeNs,
    out: &mut Vec<Reading>,
) -> Result<(), BadPayload> {
    let value = parse(payload)?;
    let (parent, last) = match topic.rsplit_once('/') {
        Some((parent, last)) => (parent, last),
        None => ("", topic),
    };
    let sensor = match matched.and_then(|m| m.sensor_id) {
        Some(id) => sensor_id(id)?,
        None if parent.is_empty() => {
            return Err(bad(
                BadReason::MissingId,
                format!(
                    "topic {} has no sensor id (no `{{sensor_id}}` and no parent segment)",
                    quote(topic)
                ),
            ));
        }
        None => sensor_id(parent)?,
    };
    let field: Arc<str> = match (matched.and_then(|m| m.field), &decoder.field) {
        (Some(field), _) => Arc::from(field),
        (None, Some(field)) => field.clone(),
        (None, None) => Arc::from(last),
    };
    if field.is_empty() {
        return Err(bad(
            BadReason::NoFields,
            format!("topic {} gives an empty field name", quote(topic)),
        ));
    }
    out.push(Reading {
        series: SeriesKey { sensor, field },
        time: arrival,
        value,
        quality: Quality::TIME_FROM_ARRIVAL,
    });
    Ok(())
}

/// The number in a payload.
pub(super) fn parse(payload: &[u8]) -> Result<f64, BadPayload> {
    let text = payload.trim_ascii();
    let invalid = |why: &str| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(60)]);
        bad(
            BadReason::InvalidNumber,
            format!("{why}: {}", quote(&shown)),
        )
    };
    match text {
        b"true" => return Ok(1.0),
        b"false" => return Ok(0.0),
        b"" => return Err(invalid("an empty payload")),
        _ => {}
    }
    let numeric = text
        .iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    if !numeric || !text.iter().any(u8::is_ascii_digit) {
        return Err(invalid("not a number"));
    }
    // Only ASCII bytes are left, so this is valid UTF-8.
    let text = std::str::from_utf8(text).map_err(|_| invalid("not a number"))?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(invalid("out of range")),
        Err(_) => Err(invalid("not a number")),
    }
}
