//! Payload mapping: how the bytes of one message (an MQTT payload, an HTTP ingest body)
//! become readings. Sans-IO and clock-free: the caller gives the topic, the bytes and the time
//! of arrival. Shared by the `mqtt` and `http` sources.
//!
//! A message is decoded whole or refused whole: a refused message produces no reading and a
//! [`BadPayload`] naming the reason, which the source counts and shows.
//!
//! The data flow, one file per step: the size check and dispatch (here), the topic template
//! (`topic.rs`), UTF-8, then the format: `json.rs` (a borrowed document tree and JSON
//! pointers), `value.rs` (a bare number) or `line_protocol.rs`; timestamps in `time.rs`.
//!
//! Besides what [`MappingConfig`] documents: an empty `time` pointer means the payload carries
//! no time (the time of arrival is used, flagged); a member or field that is `null` counts as
//! missing; a sensor id must be at most [`MAX_SENSOR_ID_BYTES`] long; with duplicate member
//! names (or field keys in a line) the last one counts, as in serde_json and InfluxDB.
//!
//! Invariants: **on error `out` is exactly as it was**; **`detail` is at most
//! [`MAX_DETAIL_CHARS`] characters with no control character** (it is logged and shown).

mod json;
mod line_protocol;
pub mod tags;
#[cfg(test)]
mod tests;
mod time;
mod topic;
mod value;

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{MappingConfig, PayloadFormat, TimeFormat};
use crate::model::{Reading, TimeNs};

use json::Pointer;
use topic::Template;

/// Longest sensor id accepted, in bytes: it becomes a key of the store and a tag downstream.
pub const MAX_SENSOR_ID_BYTES: usize = 256;

/// Longest [`BadPayload::detail`], in characters.
pub const MAX_DETAIL_CHARS: usize = 200;

/// Why a message was refused. The names are the `reason` label of
/// `edgewatch_source_bad_payloads_total` and appear on the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadReason {
    /// Larger than `max_payload_bytes`.
    TooLarge,
    /// Not valid UTF-8 (JSON and line protocol are text).
    NotUtf8,
    /// Not parseable as JSON.
    InvalidJson,
    /// A member has the wrong type (a string where a number is expected, an id that is not a
    /// string or number, a top level that is neither an object nor an array of objects).
    WrongType,
    /// No sensor id (missing member, empty, or no `{sensor_id}` in the topic).
    MissingId,
    /// A timestamp that cannot be read (bad RFC 3339, out of range).
    BadTime,
    /// Decoded, but no numeric field in it.
    NoFields,
    /// The topic does not match `topic_template`.
    TopicMismatch,
    /// A line of line protocol that cannot be parsed.
    InvalidLineProtocol,
    /// `format = "value"`: the payload is not a number.
    InvalidNumber,
}

impl BadReason {
    pub const ALL: [BadReason; 10] = [
        BadReason::TooLarge,
        BadReason::NotUtf8,
        BadReason::InvalidJson,
        BadReason::WrongType,
        BadReason::MissingId,
        BadReason::BadTime,
        BadReason::NoFields,
        BadReason::TopicMismatch,
        BadReason::InvalidLineProtocol,
        BadReason::InvalidNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BadReason::TooLarge => "too_large",
            BadReason::NotUtf8 => "not_utf8",
            BadReason::InvalidJson => "invalid_json",
            BadReason::WrongType => "wrong_type",
            BadReason::MissingId => "missing_id",
            BadReason::BadTime => "bad_time",
            BadReason::NoFields => "no_fields",
            BadReason::TopicMismatch => "topic_mismatch",
            BadReason::InvalidLineProtocol => "invalid_line_protocol",
            BadReason::InvalidNumber => "invalid_number",
        }
    }
}

/// A refused message: the reason, and a short human explanation (at most a few hundred
/// characters, safe to show and log; it may quote a piece of the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPayload {
    pub reason: BadReason,
    pub detail: String,
}

/// A mapping that cannot work, found when the config is validated: the key and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    pub key: &'static str,
    pub reason: String,
}

/// A compiled [`MappingConfig`]: pointers and the template parsed once, shared names
/// allocated once.
#[derive(Clone, Debug)]
pub struct Decoder {
    format: PayloadFormat,
    template_text: Box<str>,
    template: Option<Template>,
    sensor_id: Pointer,
    /// `None`: the payload carries no time.
    time: Option<Pointer>,
    time_format: TimeFormat,
    /// Configured fields (name → pointer); empty: every numeric member.
    fields: Vec<(Arc<str>, Pointer)>,
    field: Option<Arc<str>>,
    id_tag: Box<str>,
    max_payload_bytes: usize,
}

impl Decoder {
    /// Compiles a mapping; refuses one that cannot work, naming the key.
    pub fn new(config: &MappingConfig) -> Result<Decoder, MappingError> {
        let error = |key: &'static str| move |reason: String| MappingError { key, reason };
        let template = match config.topic_template.as_str() {
            "" => None,
            text => Some(Template::parse(text).map_err(error("topic_template"))?),
        };
        let sensor_id = Pointer::parse(&config.sensor_id).map_err(error("sensor_id"))?;
        let topic_names_sensor = template.as_ref().is_some_and(Template::has_sensor_id);
        if config.format == PayloadFormat::Json && sensor_id.is_empty() && !topic_names_sensor {
            return Err(error("sensor_id")(
                "is empty, and `topic_template` has no `{sensor_id}`: no message could name its sensor"
                    .into(),
            ));
        }
        let time = match config.time.as_str() {
            "" => None,
            text => Some(Pointer::parse(text).map_err(error("time"))?),
        };
        let mut fields = Vec::with_capacity(config.fields.len());
        for (name, pointer) in &config.fields {
            if name.is_empty() {
                return Err(error("fields")("a field has an empty name".into()));
            }
            let pointer =
                Pointer::parse(pointer).map_err(|e| error("fields")(format!("`{name}`: {e}")))?;
            fields.push((Arc::from(name.as_str()), pointer));
        }
        if config.field.as_deref() == Some("") {
            return Err(error("field")("must not be empty".into()));
        }
        if config.format == PayloadFormat::LineProtocol {
            if config.time_format == TimeFormat::Rfc3339 {
                return Err(error("time_format")(
                    "line protocol timestamps are integers: use auto (ns), s, ms, us or ns".into(),
                ));
            }
            if config.id_tag.is_empty() {
                return Err(error("id_tag")(
                    "must not be empty (leave it out for `sensor_id`)".into(),
                ));
            }
        }
        Ok(Decoder {
            format: config.format,
            template_text: config.topic_template.as_str().into(),
            template,
            sensor_id,
            time,
            time_format: config.time_format,
            fields,
            field: config.field.as_deref().map(Arc::from),
            id_tag: config.id_tag.as_str().into(),
            max_payload_bytes: config.max_payload_bytes,
        })
    }

    /// Decodes one message received on `topic` at gateway time `arrival`, appending its
    /// readings to `out`; returns how many. On error nothing is appended.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        arrival: TimeNs,
        out: &mut Vec<Reading>,
    ) -> Result<usize, BadPayload> {
        let start = out.len();
        match self.decode_into(topic, payload, arrival, out) {
            Ok(()) => Ok(out.len() - start),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Tags captured from the topic by `topic_template` (every placeholder except
    /// `{sensor_id}` and `{field}`), for the sensor the topic names.
    /// Whether `topic_template` captures any tag.
    pub fn captures_tags(&self) -> bool {
        self.template.as_ref().is_some_and(|t| t.has_tags())
    }

    pub fn topic_tags(&self, topic: &str) -> Vec<(Arc<str>, Arc<str>)> {
        match &self.template {
            Some(template) => template.tags(topic),
            None => Vec::new(),
        }
    }

    /// The checks in order: size, UTF-8 (text formats), topic, then the format.
    fn decode_into(
        &self,
        topic: &str,
        payload: &[u8],
        arrival: TimeNs,
        out: &mut Vec<Reading>,
    ) -> Result<(), BadPayload> {
        if payload.len() > self.max_payload_bytes {
            return Err(bad(
                BadReason::TooLarge,
                format!(
                    "{} bytes, more than max_payload_bytes = {}",
                    payload.len(),
                    self.max_payload_bytes
                ),
            ));
        }
        let text = match self.format {
            PayloadFormat::Value => "",
            PayloadFormat::Json | PayloadFormat::LineProtocol => std::str::from_utf8(payload)
                .map_err(|e| {
                    bad(
                        BadReason::NotUtf8,
                        format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                    )
                })?,
        };
        let matched = match &self.template {
            None => None,
            Some(template) => Some(template.matches(topic).ok_or_else(|| {
                bad(
                    BadReason::TopicMismatch,
                    format!(
                        "topic {} does not match {}",
                        quote(topic),
                        quote(&self.template_text)
                    ),
                )
            })?),
        };
        let topic_sensor = matched.and_then(|m| m.sensor_id);
        match self.format {
            PayloadFormat::Json => json::decode(self, text, topic_sensor, arrival, out),
            PayloadFormat::LineProtocol => {
                line_protocol::decode(self, text, topic_sensor, arrival, out)
            }
            PayloadFormat::Value => value::decode(self, topic, matched, payload, arrival, out),
        }
    }
}

/// A refusal, its detail made safe to show: control characters become spaces and the text
/// is cut to [`MAX_DETAIL_CHARS`].
fn bad(reason: BadReason, detail: impl Into<String>) -> BadPayload {
    let detail = detail.into();
    let clean = |c: char| if c.is_control() { ' ' } else { c };
    let detail = if detail.chars().count() > MAX_DETAIL_CHARS {
        let mut cut: String = detail
            .chars()
            .take(MAX_DETAIL_CHARS - 1)
            .map(clean)
            .collect();
        cut.push('…');
        cut
    } else if detail.contains(char::is_control) {
        detail.chars().map(clean).collect()
    } else {
        detail
    };
    BadPayload { reason, detail }
}

/// Outside text (a piece of payload, a topic) quoted for a detail: in double quotes with
/// escapes, at most 60 of its characters.
fn quote(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A sensor id as the series key holds it: not empty, at most [`MAX_SENSOR_ID_BYTES`].
fn sensor_id(id: &str) -> Result<Arc<str>, BadPayload> {
    if id.is_empty() {
        return Err(bad(BadReason::MissingId, "the sensor id is empty"));
    }
    if id.len() > MAX_SENSOR_ID_BYTES {
        return Err(bad(
            BadReason::WrongType,
            format!(
                "the sensor id is {} bytes long, at most {MAX_SENSOR_ID_BYTES} are allowed",
                id.len()
            ),
        ));
    }
    Ok(Arc::from(id))
}

/// Of the readings from `start` on (one object or one line: same sensor, same time), keeps
/// only the last of each field, so a repeated name gives one reading, the last value.
fn keep_last_of_each_field(out: &mut Vec<Reading>, start: usize) {
    let readings = &out[start..];
    let n = readings.len();
    let repeated = if n <= 32 {
        (0..n).any(|i| (i + 1..n).any(|j| readings[i].series.field == readings[j].series.field))
    } else {
        let mut seen = HashSet::with_capacity(n);
        !readings.iter().all(|r| seen.insert(&*r.series.field))
    };
    if !repeated {
        return;
    }
    let mut seen: HashSet<Arc<str>> = HashSet::with_capacity(n);
    let keep: Vec<bool> = readings
        .iter()
        .rev()
        .map(|r| seen.insert(r.series.field.clone()))
        .collect();
    let mut index = 0;
    out.retain(|_| {
        let kept = index < start || keep[n - 1 - (index - start)];
        index += 1;
        kept
    });
}
