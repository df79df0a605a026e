//! The checks common to every format (size, UTF-8, details, reasons) and the config checks
//! of `Decoder::new`.

use super::*;

#[test]
fn every_bad_reason_is_reachable() {
    let json = json();
    let value = decoder(|m| m.format = PayloadFormat::Value);
    let lp = decoder(|m| m.format = PayloadFormat::LineProtocol);
    let small = decoder(|m| m.max_payload_bytes = 4);
    let template = decoder(|m| m.topic_template = "a/{sensor_id}".into());
    let cases: [(&Decoder, &str, &[u8]); 10] = [
        (&small, "t", b"12345"),
        (&json, "t", b"\xff"),
        (&json, "t", b"{"),
        (&json, "t", b"[1]"),
        (&json, "t", br#"{"v":1}"#),
        (&json, "t", br#"{"sensor_id":"s","timestamp":"x","v":1}"#),
        (&json, "t", br#"{"sensor_id":"s"}"#),
        (&template, "b/c", br#"{"v":1}"#),
        (&lp, "t", b"m v=x"),
        (&value, "a/b", b"x"),
    ];
    let mut reached: Vec<BadReason> = cases
        .iter()
        .map(|(d, topic, payload)| refused(d, topic, payload).reason)
        .collect();
    reached.sort_unstable();
    assert_eq!(reached, BadReason::ALL);
}

#[test]
fn a_payload_over_the_limit_is_too_large_before_anything_else() {
    let d = decoder(|m| m.max_payload_bytes = REFERENCE.len());
    assert!(decode(&d, "t", REFERENCE).is_ok());
    let mut bigger = REFERENCE.as_bytes().to_vec();
    bigger.push(0xff);
    assert_eq!(refused(&d, "t", &bigger).reason, BadReason::TooLarge);
}

#[test]
fn text_formats_refuse_invalid_utf8() {
    let err = refused(&json(), "t", b"{\"sensor_id\":\"\xff\",\"v\":1}");
    assert_eq!(err.reason, BadReason::NotUtf8);
    assert!(err.detail.contains("byte 14"), "{}", err.detail);
    let lp = decoder(|m| m.format = PayloadFormat::LineProtocol);
    assert_eq!(refused(&lp, "t", b"m v=1 \xc3").reason, BadReason::NotUtf8);
}

#[test]
fn details_are_short_and_free_of_control_characters() {
    let long_id = format!("\u{1b}[31m{}", "é\n".repeat(300));
    let d = decoder(|m| m.topic_template = "a/{sensor_id}".into());
    let err = refused(&d, &long_id, b"{}");
    assert_eq!(err.reason, BadReason::TopicMismatch);
    assert!(err.detail.contains('…'), "{}", err.detail);
    let payload = format!("[{{\"sensor_id\":\"s\",\"timestamp\":\"{long_id}\",\"v\":1}}]")
        .replace('\n', "\\n")
        .replace('\u{1b}', "\\u001b");
    assert_eq!(
        refused(&json(), "t", payload.as_bytes()).reason,
        BadReason::BadTime
    );
}

#[test]
fn every_bad_reason_has_a_distinct_name() {
    let mut names: Vec<&str> = BadReason::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), BadReason::ALL.len());
}

#[test]
fn mappings_that_cannot_work_are_refused_naming_the_key() {
    let key = |edit: fn(&mut MappingConfig)| {
        let mut config = MappingConfig::default();
        edit(&mut config);
        Decoder::new(&config).expect_err("refused").key
    };
    assert_eq!(key(|m| m.topic_template = "a/{b".into()), "topic_template");
    assert_eq!(key(|m| m.topic_template = "a/{}".into()), "topic_template");
    assert_eq!(
        key(|m| m.topic_template = "{a}/{a}".into()),
        "topic_template"
    );
    assert_eq!(key(|m| m.topic_template = "#/a".into()), "topic_template");
    assert_eq!(key(|m| m.sensor_id = "sensor_id".into()), "sensor_id");
    assert_eq!(key(|m| m.sensor_id = String::new()), "sensor_id");
    assert_eq!(key(|m| m.time = "ts".into()), "time");
    assert_eq!(key(|m| m.time = "/a~2".into()), "time");
    assert_eq!(
        key(|m| m.fields = [("x".into(), "x".into())].into()),
        "fields"
    );
    assert_eq!(
        key(|m| m.fields = [("".into(), "/x".into())].into()),
        "fields"
    );
    assert_eq!(key(|m| m.field = Some(String::new())), "field");
    assert_eq!(
        key(|m| {
            m.format = PayloadFormat::LineProtocol;
            m.time_format = TimeFormat::Rfc3339;
        }),
        "time_format"
    );
    assert_eq!(
        key(|m| {
            m.format = PayloadFormat::LineProtocol;
            m.id_tag = String::new();
        }),
        "id_tag"
    );
}

#[test]
fn mappings_that_can_work_are_accepted() {
    for edit in [
        (|m: &mut MappingConfig| {
            m.sensor_id = String::new();
            m.topic_template = "d/{sensor_id}".into();
        }) as fn(&mut MappingConfig),
        |m| m.format = PayloadFormat::Value,
        |m| {
            m.format = PayloadFormat::Value;
            m.topic_template = "plant/{line}/#".into();
        },
        |m| m.time = String::new(),
        |m| m.topic_template = "+/+/#".into(),
    ] {
        let mut config = MappingConfig::default();
        edit(&mut config);
        assert!(Decoder::new(&config).is_ok(), "{config:?}");
    }
}
