//! `format = "value"` and `format = "line_protocol"`.

use super::*;

fn value(edit: impl FnOnce(&mut MappingConfig)) -> Decoder {
    decoder(|m| {
        m.format = PayloadFormat::Value;
        edit(m);
    })
}

fn lp(edit: impl FnOnce(&mut MappingConfig)) -> Decoder {
    decoder(|m| {
        m.format = PayloadFormat::LineProtocol;
        edit(m);
    })
}

#[test]
fn a_bare_number_is_one_reading_named_by_the_topic() {
    let d = value(|_| {});
    for (payload, want) in [
        ("71.2", 71.2),
        (" -3\r\n", -3.0),
        ("1e-3", 0.001),
        ("+5", 5.0),
        ("true", 1.0),
        ("false", 0.0),
    ] {
        let out = decode(&d, "plant/l1/p-101/temperature", payload).unwrap();
        assert_eq!(
            out,
            [reading(
                "plant/l1/p-101",
                "temperature",
                want,
                ARRIVAL,
                Quality::TIME_FROM_ARRIVAL
            )],
            "{payload:?}"
        );
    }
}

#[test]
fn a_payload_that_is_not_a_number_is_invalid_number() {
    let d = value(|_| {});
    for payload in [
        &b""[..],
        b"  ",
        b"abc",
        b"NaN",
        b"inf",
        b"1e999",
        b"1.2.3",
        b"{\"v\":1}",
        b"\xff",
        b"7 8",
    ] {
        let err = refused(&d, "a/b", payload);
        assert_eq!(err.reason, BadReason::InvalidNumber, "{payload:?}");
    }
}

#[test]
fn the_template_names_the_sensor_and_field_of_a_value() {
    let d = value(|m| m.topic_template = "plant/{line}/{sensor_id}/{field}".into());
    let out = decode(&d, "plant/l1/p-101/temperature", "20").unwrap();
    assert_eq!(out[0].series, SeriesKey::new("p-101", "temperature"));
    assert_eq!(
        d.topic_tags("plant/l1/p-101/temperature"),
        vec![(Arc::from("line"), Arc::from("l1"))]
    );
    assert_eq!(reason(&d, "plant/l1/p-101", "20"), BadReason::TopicMismatch);
}

#[test]
fn without_placeholders_the_field_key_or_the_last_segment_names_the_field() {
    let d = value(|m| {
        m.topic_template = "plant/{line}/#".into();
        m.field = Some("level".into());
    });
    let out = decode(&d, "plant/l1/tank-3/raw", "2.5").unwrap();
    assert_eq!(out[0].series, SeriesKey::new("plant/l1/tank-3", "level"));
    let d = value(|m| m.topic_template = "{sensor_id}/+".into());
    let out = decode(&d, "pump-1/speed", "2.5").unwrap();
    assert_eq!(out[0].series, SeriesKey::new("pump-1", "speed"));
}

#[test]
fn a_value_topic_without_a_sensor_or_field_is_refused() {
    let d = value(|_| {});
    assert_eq!(reason(&d, "temperature", "1"), BadReason::MissingId);
    assert_eq!(reason(&d, "/temperature", "1"), BadReason::MissingId);
    assert_eq!(reason(&d, "p-101/", "1"), BadReason::NoFields);
}

#[test]
fn a_line_gives_one_reading_per_numeric_field() {
    let d = lp(|_| {});
    let payload = "machine,sensor_id=p-101,line=l1 temp=71.2,count=3i,total=4u,on=t,off=FALSE,note=\"hi, there\" 1795687200000000000";
    let out = decode(&d, "t", payload).unwrap();
    let at = |field, value| reading("p-101", field, value, T * S, Quality::GOOD);
    assert_eq!(
        out,
        [
            at("temp", 71.2),
            at("count", 3.0),
            at("total", 4.0),
            at("on", 1.0),
            at("off", 0.0)
        ]
    );
}

#[test]
fn lines_may_end_in_crlf_and_blank_lines_and_comments_are_skipped() {
    let d = lp(|_| {});
    let payload = "# a comment\r\n\r\n  m v=1 10\r\n\t\nn,sensor_id=x w=2\n";
    let out = decode(&d, "t", payload).unwrap();
    assert_eq!(
        out,
        [
            reading("m", "v", 1.0, 10, Quality::GOOD),
            reading("x", "w", 2.0, ARRIVAL, Quality::TIME_FROM_ARRIVAL),
        ]
    );
}

#[test]
fn the_id_tag_the_time_unit_and_the_topic_are_configurable() {
    let d = lp(|m| {
        m.id_tag = "device".into();
        m.time_format = TimeFormat::S;
    });
    let out = decode(&d, "t", &format!("m,device=d1,sensor_id=x v=1 {T}")).unwrap();
    assert_eq!(out, [reading("d1", "v", 1.0, T * S, Quality::GOOD)]);
    let d = lp(|m| m.topic_template = "gw/{sensor_id}".into());
    let out = decode(&d, "gw/from-topic", "m,sensor_id=x v=1").unwrap();
    assert_eq!(&*out[0].series.sensor, "from-topic");
}

#[test]
fn escapes_are_read_as_influxdb_writes_them() {
    // The encoder's own test line (`forward::line_protocol`), with a numeric field added.
    let d = lp(|m| m.id_tag = "my tag,=".into());
    let payload = r#"cpu\ load\,x=y,my\ tag\,\==a\ b\,c\=d"e f\ i\,e\="=1.5,s="say \"hi\" \\o/" 1"#;
    let out = decode(&d, "t", payload).unwrap();
    assert_eq!(
        out,
        [reading("a b,c=d\"e", "f i,e=\"", 1.5, 1, Quality::GOOD)]
    );
    let d = lp(|_| {});
    let out = decode(&d, "t", r"C:\temp\\x,a=b v=1").unwrap();
    assert_eq!(&*out[0].series.sensor, r"C:\temp\x");
}

#[test]
fn a_bad_line_refuses_the_message_naming_the_line() {
    let d = lp(|_| {});
    for bad_line in [
        "m",
        "m,t=1",
        "m v",
        "m v=",
        "m v=abc",
        "m v=1.5i",
        "m v=NaN",
        "m v=\"open",
        "m v=1 12 13",
        "m v=1 now",
        "m v=1 1.5",
        ",t=1 v=1",
        "m,=1 v=1",
        "m,t= v=1",
        "m,t v=1",
        "m =1",
        "m v=\"s\"x",
        "m v=-9223372036854775809i",
        "m v=-1u",
    ] {
        let payload = format!("ok v=1\n\n{bad_line}\n");
        let err = refused(&d, "t", payload.as_bytes());
        assert_eq!(err.reason, BadReason::InvalidLineProtocol, "{bad_line}");
        assert!(err.detail.starts_with("line 3: "), "{}", err.detail);
    }
}

#[test]
fn a_timestamp_out_of_range_is_bad_time() {
    let d = lp(|m| m.time_format = TimeFormat::Ms);
    let err = refused(&d, "t", b"m v=1 9223372036854775807");
    assert_eq!(err.reason, BadReason::BadTime);
    assert!(err.detail.starts_with("line 1: "), "{}", err.detail);
}

#[test]
fn line_protocol_without_a_numeric_field_is_no_fields() {
    let d = lp(|_| {});
    assert_eq!(reason(&d, "t", "# only a comment\n\n"), BadReason::NoFields);
    assert_eq!(reason(&d, "t", "m s=\"text\""), BadReason::NoFields);
}

#[test]
fn a_repeated_field_key_in_a_line_counts_once_with_its_last_value() {
    let out = decode(&lp(|_| {}), "t", "m v=1,w=2,v=3 5").unwrap();
    assert_eq!(values(&out), [("w", 2.0), ("v", 3.0)]);
}

#[test]
fn line_protocol_sensor_ids_are_checked_like_any_other() {
    let long = format!("m,sensor_id={} v=1", "x".repeat(257));
    assert_eq!(reason(&lp(|_| {}), "t", &long), BadReason::WrongType);
}
