//! Payload mapping: how the bytes of one message (an MQTT payload, an HTTP ingest body)
//! become readings. Sans-IO and clock-free: the caller gives the topic, the bytes and the time
//! of arrival. Shared by the `mqtt` and `http` sources.
//!
//! A message is decoded whole or refused whole: a refused message produces no reading and a
//! [`BadPayload`] naming the reason, which the source counts and shows.

use std::sync::Arc;

use crate::config::MappingConfig;
use crate::model::{Reading, TimeNs};

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

/// A compiled [`MappingConfig`].
#[derive(Clone, Debug)]
pub struct Decoder {
    config: MappingConfig,
}

impl Decoder {
    pub fn new(config: &MappingConfig) -> Result<Decoder, MappingError> {
        Ok(Decoder {
            config: config.clone(),
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
        let _ = (topic, payload, arrival, out, &self.config);
        Err(BadPayload {
            reason: BadReason::WrongType,
            detail: "payload decoding is not built yet".into(),
        })
    }

    /// Tags captured from the topic by `topic_template` (every placeholder except
    /// `{sensor_id}` and `{field}`), for the sensor the topic names.
    pub fn topic_tags(&self, topic: &str) -> Vec<(Arc<str>, Arc<str>)> {
        let _ = topic;
        Vec::new()
    }
}
