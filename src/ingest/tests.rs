//! Tests of the decoder through its public API: the JSON mapping here; the checks common to
//! every format and the config checks in `tests/checks.rs`; `value` and line protocol in
//! `tests/formats.rs`; properties in `tests/props.rs`.

mod checks;
mod formats;
mod props;

use super::*;
use crate::model::{Quality, SeriesKey};

/// 2026-11-26T10:00:00Z in seconds.
const T: i64 = 1_795_687_200;
const S: i64 = 1_000_000_000;
/// The time of arrival given to every decode.
const ARRIVAL: TimeNs = 1_800_000_000 * S;

const REFERENCE: &str = r#"{"sensor_id":"p-101","timestamp":"2026-11-26T10:00:00.120Z","temperature":71.2,"pressure":3.91,"vibration":0.42}"#;

fn decoder(edit: impl FnOnce(&mut MappingConfig)) -> Decoder {
    let mut config = MappingConfig::default();
    edit(&mut config);
    Decoder::new(&config).expect("valid mapping")
}

fn json() -> Decoder {
    decoder(|_| {})
}

fn decode(decoder: &Decoder, topic: &str, payload: &str) -> Result<Vec<Reading>, BadPayload> {
    let mut out = Vec::new();
    let n = decoder.decode(topic, payload.as_bytes(), ARRIVAL, &mut out)?;
    assert_eq!(n, out.len());
    Ok(out)
}

/// The reason a payload is refused for, checking that `out` is left as it was.
fn refused(decoder: &Decoder, topic: &str, payload: &[u8]) -> BadPayload {
    let before = vec![reading("keep", "me", 1.0, 5, Quality::GOOD)];
    let mut out = before.clone();
    let err = decoder
        .decode(topic, payload, ARRIVAL, &mut out)
        .expect_err("refused");
    assert_eq!(out, before, "out changed on error");
    assert!(err.detail.chars().count() <= MAX_DETAIL_CHARS, "{err:?}");
    assert!(!err.detail.contains(char::is_control), "{err:?}");
    err
}

fn reason(decoder: &Decoder, topic: &str, payload: &str) -> BadReason {
    refused(decoder, topic, payload.as_bytes()).reason
}

fn reading(sensor: &str, field: &str, value: f64, time: TimeNs, quality: Quality) -> Reading {
    Reading {
        series: SeriesKey::new(sensor, field),
        time,
        value,
        quality,
    }
}

/// (field, value) pairs of readings, for short assertions.
fn values(readings: &[Reading]) -> Vec<(&str, f64)> {
    readings
        .iter()
        .map(|r| (&*r.series.field, r.value))
        .collect()
}

#[test]
fn the_reference_payload_gives_three_readings_at_its_timestamp() {
    let time = T * S + 120_000_000;
    assert_eq!(
        decode(&json(), "any/topic", REFERENCE).unwrap(),
        vec![
            reading("p-101", "temperature", 71.2, time, Quality::GOOD),
            reading("p-101", "pressure", 3.91, time, Quality::GOOD),
            reading("p-101", "vibration", 0.42, time, Quality::GOOD),
        ]
    );
}

#[test]
fn readings_are_appended_after_what_out_already_holds() {
    let mut out = vec![reading("a", "b", 1.0, 0, Quality::GOOD)];
    let n = json().decode("t", REFERENCE.as_bytes(), ARRIVAL, &mut out);
    assert_eq!(n, Ok(3));
    assert_eq!(out.len(), 4);
    assert_eq!(&*out[0].series.sensor, "a");
}

#[test]
fn booleans_are_one_and_zero_and_other_types_are_ignored() {
    let payload = r#"{"sensor_id":"s","on":true,"off":false,"name":"pump","n":null,"o":{"x":1},"a":[1],"v":-3}"#;
    let out = decode(&json(), "t", payload).unwrap();
    assert_eq!(values(&out), [("on", 1.0), ("off", 0.0), ("v", -3.0)]);
}

#[test]
fn a_missing_timestamp_means_the_time_of_arrival_flagged() {
    let out = decode(&json(), "t", r#"{"sensor_id":"s","v":1}"#).unwrap();
    assert_eq!(out[0].time, ARRIVAL);
    assert_eq!(out[0].quality, Quality::TIME_FROM_ARRIVAL);
    let out = decode(&json(), "t", r#"{"sensor_id":"s","timestamp":null,"v":1}"#).unwrap();
    assert_eq!(out[0].quality, Quality::TIME_FROM_ARRIVAL);
    let no_time = decoder(|m| m.time = String::new());
    let out = decode(&no_time, "t", r#"{"sensor_id":"s","timestamp":5,"v":1}"#).unwrap();
    assert_eq!((out.len(), out[0].time), (2, ARRIVAL));
}

#[test]
fn epoch_timestamps_of_any_unit_are_detected_in_auto() {
    for ts in [
        format!("{T}"),
        format!("{T}.0"),
        format!("{}", T * 1000),
        format!("{}", T * 1_000_000),
        format!("{}", T * S),
        format!("\"{T}\""),
        "\"2026-11-26T10:00:00Z\"".to_string(),
    ] {
        let payload = format!(r#"{{"sensor_id":"s","timestamp":{ts},"v":1}}"#);
        let out = decode(&json(), "t", &payload).unwrap();
        assert_eq!(
            (out[0].time, out[0].quality),
            (T * S, Quality::GOOD),
            "{ts}"
        );
    }
}

#[test]
fn an_explicit_time_format_is_obeyed() {
    let ms = decoder(|m| m.time_format = TimeFormat::Ms);
    let out = decode(&ms, "t", r#"{"sensor_id":"s","timestamp":1500,"v":1}"#).unwrap();
    assert_eq!(out[0].time, 1_500_000_000);
    let rfc = decoder(|m| m.time_format = TimeFormat::Rfc3339);
    let number = format!(r#"{{"sensor_id":"s","timestamp":{T},"v":1}}"#);
    assert_eq!(reason(&rfc, "t", &number), BadReason::BadTime);
    let s = decoder(|m| m.time_format = TimeFormat::S);
    let text = r#"{"sensor_id":"s","timestamp":"2026-11-26T10:00:00Z","v":1}"#;
    assert_eq!(reason(&s, "t", text), BadReason::BadTime);
}

#[test]
fn unreadable_or_out_of_range_times_are_bad_time() {
    for ts in [
        "\"2026-13-01T00:00:00Z\"",
        "\"soon\"",
        "true",
        "{}",
        "1e300",
        "-9300000000000000000",
    ] {
        let payload = format!(r#"{{"sensor_id":"s","timestamp":{ts},"v":1}}"#);
        let err = refused(&json(), "t", payload.as_bytes());
        assert_eq!(err.reason, BadReason::BadTime, "{ts}: {err:?}");
        assert!(err.detail.contains("/timestamp"), "{}", err.detail);
    }
    let ns = decoder(|m| m.time_format = TimeFormat::S);
    let payload = r#"{"sensor_id":"s","timestamp":9223372036854775807,"v":1}"#;
    assert_eq!(reason(&ns, "t", payload), BadReason::BadTime);
}

#[test]
fn the_sensor_id_may_be_a_string_or_an_integer() {
    let out = decode(&json(), "t", r#"{"sensor_id":101,"v":1.5}"#).unwrap();
    assert_eq!(
        out,
        [reading(
            "101",
            "v",
            1.5,
            ARRIVAL,
            Quality::TIME_FROM_ARRIVAL
        )]
    );
    let out = decode(&json(), "t", r#"{"sensor_id":-7,"v":1.5}"#).unwrap();
    assert_eq!(&*out[0].series.sensor, "-7");
    let nested = decoder(|m| m.sensor_id = "/meta/id".into());
    let out = decode(&nested, "t", r#"{"meta":{"id":"x"},"v":2}"#).unwrap();
    assert_eq!(&*out[0].series.sensor, "x");
}

#[test]
fn a_missing_or_empty_sensor_id_is_missing_id() {
    for payload in [
        r#"{"v":1}"#,
        r#"{"sensor_id":"","v":1}"#,
        r#"{"sensor_id":null,"v":1}"#,
    ] {
        assert_eq!(
            reason(&json(), "t", payload),
            BadReason::MissingId,
            "{payload}"
        );
    }
}

#[test]
fn a_sensor_id_of_another_type_or_too_long_is_wrong_type() {
    for id in ["1.5", "true", "[\"a\"]", "{}"] {
        let payload = format!(r#"{{"sensor_id":{id},"v":1}}"#);
        assert_eq!(reason(&json(), "t", &payload), BadReason::WrongType, "{id}");
    }
    let long = format!(r#"{{"sensor_id":"{}","v":1}}"#, "x".repeat(257));
    assert_eq!(reason(&json(), "t", &long), BadReason::WrongType);
    let longest = format!(r#"{{"sensor_id":"{}","v":1}}"#, "x".repeat(256));
    assert!(decode(&json(), "t", &longest).is_ok());
}

#[test]
fn the_topic_sensor_id_wins_over_the_payload() {
    let d = decoder(|m| m.topic_template = "plant/{line}/sensors/{sensor_id}".into());
    let out = decode(&d, "plant/l1/sensors/p-7", r#"{"sensor_id":"other","v":1}"#).unwrap();
    assert_eq!(values(&out), [("v", 1.0)]);
    assert_eq!(&*out[0].series.sensor, "p-7");
    assert!(decode(&d, "plant/l1/sensors/p-7", r#"{"v":1}"#).is_ok());
    assert_eq!(
        d.topic_tags("plant/l1/sensors/p-7"),
        vec![(Arc::from("line"), Arc::from("l1"))]
    );
    assert!(d.topic_tags("elsewhere").is_empty());
    assert!(json().topic_tags("plant/l1/sensors/p-7").is_empty());
}

#[test]
fn a_topic_that_does_not_match_the_template_is_refused() {
    let d = decoder(|m| m.topic_template = "plant/+/{sensor_id}".into());
    let err = refused(&d, "plant/l1", REFERENCE.as_bytes());
    assert_eq!(err.reason, BadReason::TopicMismatch);
    assert!(err.detail.contains("plant/l1"), "{}", err.detail);
    let d = decoder(|m| m.topic_template = "plant/#".into());
    assert!(decode(&d, "plant", REFERENCE).is_ok());
}

#[test]
fn configured_fields_are_exactly_those_named() {
    let d = decoder(|m| {
        m.fields = [
            ("temp", "/data/t"),
            ("first", "/list/0"),
            ("flag", "/on"),
            ("gone", "/absent"),
            ("nothing", "/nil"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    });
    let payload =
        r#"{"sensor_id":"s","data":{"t":20.5},"list":[7,8],"on":true,"nil":null,"other":3}"#;
    let out = decode(&d, "t", payload).unwrap();
    assert_eq!(
        values(&out),
        [("first", 7.0), ("flag", 1.0), ("temp", 20.5)]
    );
    let err = refused(&d, "t", br#"{"sensor_id":"s","data":{"t":"hot"}}"#);
    assert_eq!(err.reason, BadReason::WrongType);
    assert!(err.detail.contains("temp"), "{}", err.detail);
    assert_eq!(reason(&d, "t", r#"{"sensor_id":"s"}"#), BadReason::NoFields);
}

#[test]
fn pointer_escapes_name_members_with_slashes_and_tildes() {
    let d = decoder(|m| m.fields = [("x".into(), "/a~1b/c~0d".into())].into());
    let out = decode(&d, "t", r#"{"sensor_id":"s","a/b":{"c~d":4}}"#).unwrap();
    assert_eq!(values(&out), [("x", 4.0)]);
}

#[test]
fn an_object_without_a_numeric_field_is_no_fields() {
    assert_eq!(
        reason(&json(), "t", r#"{"sensor_id":"s"}"#),
        BadReason::NoFields
    );
    let strings = r#"{"sensor_id":"s","timestamp":5,"a":"1","":2}"#;
    assert_eq!(reason(&json(), "t", strings), BadReason::NoFields);
    assert_eq!(reason(&json(), "t", "[]"), BadReason::NoFields);
}

#[test]
fn a_repeated_member_counts_once_with_its_last_value() {
    let out = decode(&json(), "t", r#"{"sensor_id":"s","v":1,"w":2,"v":3}"#).unwrap();
    assert_eq!(values(&out), [("w", 2.0), ("v", 3.0)]);
    let many: String = (0..40).map(|i| format!(",\"f{}\":{i}", i % 35)).collect();
    let out = decode(&json(), "t", &format!(r#"{{"sensor_id":"s"{many}}}"#)).unwrap();
    assert_eq!(out.len(), 35);
    assert_eq!(values(&out)[34], ("f4", 39.0));
}

#[test]
fn escaped_member_names_and_ids_are_read() {
    let out = decode(&json(), "t", r#"{"sensor_id":"p\u002d1","t\u00e9mp":1}"#).unwrap();
    assert_eq!(
        out,
        [reading(
            "p-1",
            "témp",
            1.0,
            ARRIVAL,
            Quality::TIME_FROM_ARRIVAL
        )]
    );
}

#[test]
fn an_array_of_objects_is_decoded_whole_or_refused_naming_the_element() {
    let payload = r#"[{"sensor_id":"a","v":1},{"sensor_id":"b","timestamp":1795687200,"v":2}]"#;
    let out = decode(&json(), "t", payload).unwrap();
    assert_eq!(
        out,
        [
            reading("a", "v", 1.0, ARRIVAL, Quality::TIME_FROM_ARRIVAL),
            reading("b", "v", 2.0, T * S, Quality::GOOD),
        ]
    );
    let err = refused(&json(), "t", br#"[{"sensor_id":"a","v":1},{"v":2}]"#);
    assert_eq!(err.reason, BadReason::MissingId);
    assert!(err.detail.starts_with("element 1: "), "{}", err.detail);
    let err = refused(&json(), "t", br#"[{"sensor_id":"a","v":1},3]"#);
    assert_eq!(err.reason, BadReason::WrongType);
    assert!(err.detail.starts_with("element 1: "), "{}", err.detail);
}

#[test]
fn a_top_level_that_is_not_an_object_is_wrong_type() {
    for payload in ["3", "\"x\"", "null", "true", "[[1]]"] {
        assert_eq!(
            reason(&json(), "t", payload),
            BadReason::WrongType,
            "{payload}"
        );
    }
}

#[test]
fn invalid_json_is_refused_with_its_position() {
    for payload in [
        "",
        "{",
        r#"{"a":1,}"#,
        "{} {}",
        "{\"a\":NaN}",
        "{\"a\":1e999}",
    ] {
        let err = refused(&json(), "t", payload.as_bytes());
        assert_eq!(err.reason, BadReason::InvalidJson, "{payload}");
        assert!(err.detail.contains("line 1 column"), "{}", err.detail);
    }
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert_eq!(reason(&json(), "t", &deep), BadReason::InvalidJson);
}
