//! Properties: no input panics or leaves `out` half-written; values survive a trip through
//! JSON and through the project's own line protocol encoder.

use proptest::prelude::*;

use super::*;
use crate::forward::line_protocol::{FieldValue, Point, Precision, encode};

/// One decoder per format, with and without a topic template and configured fields.
fn decoders() -> Vec<Decoder> {
    vec![
        json(),
        decoder(|m| {
            m.topic_template = "plant/{line}/{sensor_id}/#".into();
            m.fields = [("a".into(), "/a".into()), ("b".into(), "/x/0/b".into())].into();
            m.time_format = TimeFormat::Ms;
        }),
        decoder(|m| m.format = PayloadFormat::Value),
        decoder(|m| {
            m.format = PayloadFormat::Value;
            m.topic_template = "+/{sensor_id}/{field}".into();
        }),
        decoder(|m| m.format = PayloadFormat::LineProtocol),
        decoder(|m| {
            m.format = PayloadFormat::LineProtocol;
            m.topic_template = "{sensor_id}/+".into();
            m.time_format = TimeFormat::S;
        }),
        decoder(|m| m.max_payload_bytes = 16),
    ]
}

/// Checks the contract of one decode of any input.
fn check_contract(decoder: &Decoder, topic: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    let before = vec![reading("keep", "me", 1.0, 5, Quality::GOOD)];
    let mut out = before.clone();
    match decoder.decode(topic, payload, ARRIVAL, &mut out) {
        Ok(n) => {
            prop_assert!(n >= 1);
            prop_assert_eq!(out.len(), before.len() + n);
            prop_assert_eq!(&out[..1], &before[..]);
        }
        Err(e) => {
            prop_assert_eq!(&out, &before);
            prop_assert!(e.detail.chars().count() <= MAX_DETAIL_CHARS, "{:?}", e);
            prop_assert!(!e.detail.contains(char::is_control), "{:?}", e);
        }
    }
    decoder.topic_tags(topic);
    Ok(())
}

/// Arbitrary JSON documents, to reach past the syntax check.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("2026-11-26T10:00:00Z".to_string()),
            Just("1795687200".to_string()),
            "\\PC{0,8}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("sensor_id".to_string()),
                    Just("timestamp".to_string()),
                    Just("a".to_string()),
                    "[a-z]{1,3}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/+#{}]{0,24}",
        "plant/[a-z]{1,3}/[a-z0-9-]{0,5}(/[a-z]{1,4}){0,2}",
        any::<String>(),
    ]
}

/// A name that line protocol carries unchanged (the encoder rewrites control characters and
/// some backslashes), with every character it has to escape.
fn lp_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,=\"#é_.-]{1,8}"
}

fn lp_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::UInteger),
        any::<bool>().prop_map(FieldValue::Bool),
        any::<String>().prop_map(FieldValue::Str),
    ]
}

fn lp_point() -> impl Strategy<Value = Point> {
    (
        lp_name(),
        prop::collection::vec(
            (
                prop_oneof![Just("sensor_id".to_string()), lp_name()],
                prop_oneof![Just(String::new()), lp_name()],
            ),
            0..3,
        ),
        prop::collection::vec((lp_name(), lp_value()), 1..5),
        -4_000_000_000_000_000_000i64..4_000_000_000_000_000_000,
    )
        .prop_map(|(measurement, tags, fields, time)| Point {
            measurement,
            tags,
            fields,
            time,
        })
}

/// What a point should decode to: its numeric fields, its time at the written precision.
fn expected(point: &Point, precision: Precision) -> Vec<Reading> {
    let sensor = point
        .tags
        .iter()
        .find(|(k, v)| k == "sensor_id" && !v.is_empty())
        .map_or(&point.measurement, |(_, v)| v);
    let time = precision.timestamp(point.time) * precision.ns_per_unit();
    point
        .fields
        .iter()
        .filter_map(|(name, value)| {
            let v = match value {
                FieldValue::Float(v) => *v,
                FieldValue::Integer(v) => *v as f64,
                FieldValue::UInteger(v) => *v as f64,
                FieldValue::Bool(v) => f64::from(u8::from(*v)),
                FieldValue::Str(_) => return None,
            };
            Some(reading(sensor, name, v, time, Quality::GOOD))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_refusals_leave_out_unchanged(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        topic in topic(),
    ) {
        for d in decoders() {
            check_contract(&d, &topic, &payload)?;
        }
    }

    #[test]
    fn arbitrary_json_documents_never_panic(doc in json_value(), topic in topic()) {
        let text = doc.to_string();
        for d in decoders() {
            check_contract(&d, &topic, text.as_bytes())?;
        }
    }

    #[test]
    fn arbitrary_text_lines_never_panic(
        text in "([a-z=, \"\\\\#.0-9tfiu-]{0,30}\r?\n){0,4}",
        topic in topic(),
    ) {
        for d in decoders() {
            check_contract(&d, &topic, text.as_bytes())?;
        }
    }

    #[test]
    fn numeric_members_of_a_json_object_round_trip(
        members in prop::collection::btree_map(
            any::<String>().prop_filter("a field name", |k| {
                !k.is_empty() && k != "sensor_id" && k != "timestamp"
            }),
            prop_oneof![
                any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
            ],
            1..12,
        ),
    ) {
        let mut object = serde_json::Map::new();
        object.insert("sensor_id".into(), "s".into());
        let mut want: Vec<(String, f64)> = Vec::new();
        for (name, value) in members {
            let v = match &value {
                serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
                number => number.as_f64().expect("a number"),
            };
            want.push((name.clone(), v));
            object.insert(name, value);
        }
        let text = serde_json::Value::Object(object).to_string();
        let out = decode(&json(), "t", &text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let mut got: Vec<(String, f64)> =
            out.iter().map(|r| (r.series.field.to_string(), r.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(got, want);
        prop_assert!(out.iter().all(|r| &*r.series.sensor == "s"));
    }

    #[test]
    fn lines_from_the_encoder_decode_to_their_values(
        points in prop::collection::vec(lp_point(), 1..4),
        precision in prop_oneof![
            Just(Precision::Ns), Just(Precision::Us), Just(Precision::Ms), Just(Precision::S)
        ],
    ) {
        let mut text = String::new();
        for point in &points {
            prop_assume!(encode(point, precision, &mut text).is_ok());
        }
        let d = decoder(|m| {
            m.format = PayloadFormat::LineProtocol;
            m.max_payload_bytes = usize::MAX;
            m.time_format = match precision {
                Precision::Ns => TimeFormat::Auto,
                Precision::Us => TimeFormat::Us,
                Precision::Ms => TimeFormat::Ms,
                Precision::S => TimeFormat::S,
            };
        });
        let want: Vec<Reading> = points.iter().flat_map(|p| expected(p, precision)).collect();
        let mut out = Vec::new();
        match d.decode("t", text.as_bytes(), ARRIVAL, &mut out) {
            Ok(_) => prop_assert_eq!(out, want, "{}", text),
            Err(e) => {
                prop_assert!(want.is_empty(), "{:?} for {}", e, text);
                prop_assert_eq!(e.reason, BadReason::NoFields);
            }
        }
    }
}
