//! JSON payloads: a borrowed document tree, JSON pointers over it, and the mapping of one
//! object (or each object of an array) to readings.
//!
//! The tree borrows its strings from the payload (only strings with escapes are copied), so
//! decoding the usual flat object costs one allocation for its members. serde_json checks the
//! syntax and limits nesting to 128 levels.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::time::{self, Epoch};
use super::{BadPayload, BadReason, Decoder, bad, quote, sensor_id};
use crate::model::{Quality, Reading, SeriesKey, TimeNs};

/// A JSON value whose strings borrow from the payload where they can.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or an exponent, or an integer beyond 64 bits.
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in document order; with duplicate names the last one counts.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// The value as a reading's value: numbers, and booleans as 1 and 0.
    fn number(&self) -> Option<f64> {
        match *self {
            Json::Int(i) => Some(i as f64),
            Json::UInt(u) => Some(u as f64),
            Json::Float(f) => Some(f),
            Json::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    /// The name of the type, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::UInt(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Parses a whole document; the error is serde_json's message (with line and column).
pub(super) fn parse(text: &str) -> Result<Json<'_>, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(if v >= 0 {
            Json::UInt(v as u64)
        } else {
            Json::Int(v)
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(8);
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// A member name, borrowed when it has no escapes (`Cow<str>` itself always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A JSON pointer (RFC 6901), its tokens unescaped once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pointer {
    text: Box<str>,
    tokens: Box<[Box<str>]>,
}

impl Pointer {
    /// Compiles a pointer: empty (the whole value) or `/`-separated tokens in which `~1` is
    /// `/` and `~0` is `~`.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: "".into(),
                tokens: Box::new([]),
            });
        }
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON pointer: it must start with `/`"
            ));
        };
        let mut tokens = Vec::new();
        for raw in body.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => token.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => {
                            return Err(format!(
                                "`{text}`: `~` must be followed by 0 or 1 in a JSON pointer"
                            ));
                        }
                    },
                }
            }
            tokens.push(token.into_boxed_str());
        }
        Ok(Pointer {
            text: text.into(),
            tokens: tokens.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The member name when the pointer names a member of the top-level object itself.
    pub fn top_level_name(&self) -> Option<&str> {
        match &*self.tokens {
            [name] => Some(name),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value the pointer points at, if there is one.
    pub fn get<'v, 'a>(&self, root: &'v Json<'a>) -> Option<&'v Json<'a>> {
        let mut at = root;
        for token in &*self.tokens {
            at = match at {
                Json::Object(members) => &members.iter().rev().find(|(k, _)| *k == **token)?.1,
                Json::Array(items) => {
                    let leading_zero = token.len() > 1 && token.starts_with('0');
                    if leading_zero || !token.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(at)
    }
}

/// Decodes a whole document: an object, or an array of objects (each decoded alike; one bad
/// element refuses the message).
pub(super) fn decode(
    decoder: &Decoder,
    text: &str,
    topic_sensor: Option<&str>,
    arrival: TimeNs,
    out: &mut Vec<Reading>,
) -> Result<(), BadPayload> {
    let doc = parse(text).map_err(|e| bad(BadReason::InvalidJson, e))?;
    match &doc {
        Json::Object(_) => decode_object(decoder, &doc, topic_sensor, arrival, out),
        Json::Array(items) => {
            if items.is_empty() {
                return Err(bad(BadReason::NoFields, "an empty array"));
            }
            for (i, item) in items.iter().enumerate() {
                let result = match item {
                    Json::Object(_) => decode_object(decoder, item, topic_sensor, arrival, out),
                    other => Err(bad(
                        BadReason::WrongType,
                        format!("{}, expected an object", other.kind()),
                    )),
                };
                result.map_err(|e| bad(e.reason, format!("element {i}: {}", e.detail)))?;
            }
            Ok(())
        }
        other => Err(bad(
            BadReason::WrongType,
            format!(
                "the top level is {}, expected an object or an array of objects",
                other.kind()
            ),
        )),
    }
}

/// Decodes one object: its sensor id, its time, then its fields.
fn decode_object(
    decoder: &Decoder,
    object: &Json<'_>,
    topic_sensor: Option<&str>,
    arrival: TimeNs,
    out: &mut Vec<Reading>,
) -> Result<(), BadPayload> {
    let sensor = match topic_sensor {
        Some(id) => sensor_id(id)?,
        None => payload_sensor(&decoder.sensor_id, object)?,
    };
    let (time, quality) = match decoder.time.as_ref().and_then(|p| p.get(object)) {
        None | Some(Json::Null) => (arrival, Quality::TIME_FROM_ARRIVAL),
        Some(value) => (object_time(decoder, value)?, Quality::GOOD),
    };
    let start = out.len();
    let mut push = |field: Arc<str>, value: f64| {
        out.push(Reading {
            series: SeriesKey {
                sensor: sensor.clone(),
                field,
            },
            time,
            value,
            quality,
        })
    };

    if decoder.fields.is_empty() {
        let members = match object {
            Json::Object(members) => &members[..],
            _ => &[],
        };
        let id_name = decoder.sensor_id.top_level_name();
        let time_name = decoder.time.as_ref().and_then(Pointer::top_level_name);
        for (name, value) in members {
            let name: &str = name;
            if name.is_empty() || Some(name) == id_name || Some(name) == time_name {
                continue;
            }
            if let Some(v) = value.number() {
                push(Arc::from(name), v);
            }
        }
        super::keep_last_of_each_field(out, start);
    } else {
        for (name, pointer) in &decoder.fields {
            match pointer.get(object) {
                None | Some(Json::Null) => {}
                Some(value) => match value.number() {
                    Some(v) => push(name.clone(), v),
                    None => {
                        return Err(bad(
                            BadReason::WrongType,
                            format!(
                                "field {} at {} is {}, expected a number",
                                quote(name),
                                quote(pointer.as_str()),
                                value.kind()
                            ),
                        ));
                    }
                },
            }
        }
    }
    if out.len() == start {
        return Err(bad(BadReason::NoFields, "no numeric field"));
    }
    Ok(())
}

/// The sensor id at `pointer`: a non-empty string, or an integer (as its decimal text).
fn payload_sensor(pointer: &Pointer, object: &Json<'_>) -> Result<Arc<str>, BadPayload> {
    let missing = || {
        bad(
            BadReason::MissingId,
            format!("no sensor id at {}", quote(pointer.as_str())),
        )
    };
    if pointer.is_empty() {
        return Err(missing());
    }
    match pointer.get(object) {
        None | Some(Json::Null) => Err(missing()),
        Some(Json::Str(s)) => sensor_id(s),
        Some(Json::UInt(u)) => sensor_id(&u.to_string()),
        Some(Json::Int(i)) => sensor_id(&i.to_string()),
        Some(other) => Err(bad(
            BadReason::WrongType,
            format!(
                "the sensor id at {} is {}, expected a string or an integer",
                quote(pointer.as_str()),
                other.kind()
            ),
        )),
    }
}

/// The time of an object from the value its time pointer found.
fn object_time(decoder: &Decoder, value: &Json<'_>) -> Result<TimeNs, BadPayload> {
    let result = match value {
        Json::Str(s) => {
            time::from_text(s, decoder.time_format).map_err(|e| format!("{} is {e}", quote(s)))
        }
        Json::UInt(u) => time::from_epoch(Epoch::Int((*u).into()), decoder.time_format),
        Json::Int(i) => time::from_epoch(Epoch::Int((*i).into()), decoder.time_format),
        Json::Float(f) => time::from_epoch(Epoch::Float(*f), decoder.time_format),
        other => Err(format!("{}, expected a time", other.kind())),
    };
    result.map_err(|why| {
        let at = decoder.time.as_ref().map_or("", Pointer::as_str);
        bad(BadReason::BadTime, format!("time at {}: {why}", quote(at)))
    })
}
