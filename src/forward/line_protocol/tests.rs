//! Tests of the line protocol encoder: exact lines for known points, and properties checked
//! with a reader (`reader.rs`) that follows InfluxDB's parsing rules: 1.x/2.x (`models/points.go`,
//! whose behaviour was checked on InfluxDB 1.6.7) and 3.x where it differs (`\\` is one
//! backslash there, and `\=` is not an escape in a measurement).

mod reader;

use proptest::prelude::*;

use super::*;
use reader::{Parsed, Reader, parse};

fn line(point: &Point, precision: Precision) -> String {
    let mut out = String::new();
    encode(point, precision, &mut out).expect("encodable point");
    out
}

fn point(measurement: &str, tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>) -> Point {
    Point {
        measurement: measurement.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        time: 1_764_151_200_123_456_789,
    }
}

#[test]
fn a_point_with_every_value_type_encodes_to_the_documented_line() {
    let p = point(
        "rollup",
        &[("sensor", "p-101"), ("gateway", "gw-01")],
        vec![
            ("mean", FieldValue::Float(71.2)),
            ("count", FieldValue::Integer(-60)),
            ("bytes", FieldValue::UInteger(18_446_744_073_709_551_615)),
            ("active", FieldValue::Bool(true)),
            ("message", FieldValue::Str("too hot".into())),
        ],
    );
    assert_eq!(
        line(&p, Precision::Ns),
        "rollup,gateway=gw-01,sensor=p-101 mean=71.2,count=-60i,bytes=18446744073709551615u,\
         active=true,message=\"too hot\" 1764151200123456789\n"
    );
}

#[test]
fn special_characters_are_escaped_where_influxdb_needs_it() {
    let p = point(
        "cpu load,x=y",
        &[("my tag,=", "a b,c=d\"e")],
        vec![("f i,e=\"", FieldValue::Str(r#"say "hi" \o/"#.into()))],
    );
    assert_eq!(
        line(&p, Precision::S),
        "cpu\\ load\\,x=y,my\\ tag\\,\\==a\\ b\\,c\\=d\"e f\\ i\\,e\\=\"=\"say \\\"hi\\\" \\\\o/\" 1764151200\n"
    );
}

#[test]
fn backslashes_influxdb_1_cannot_read_back_become_slashes() {
    let p = point(
        "m",
        &[
            ("path", r"C:\temp\"),
            ("share", r"\\srv\x"),
            ("before", r"a\ b\,c\=d"),
        ],
        vec![("v", FieldValue::Integer(1))],
    );
    assert_eq!(
        line(&p, Precision::S),
        "m,before=a/\\ b/\\,c/\\=d,path=C:\\temp/,share=/\\srv\\x v=1i 1764151200\n"
    );
}

#[test]
fn control_characters_become_spaces_in_tags_and_escapes_in_strings() {
    let p = point(
        "m\n",
        &[("t\r\n", "a\nb\tc")],
        vec![("msg", FieldValue::Str("line 1\r\nline 2\ttab".into()))],
    );
    let text = line(&p, Precision::S);
    assert_eq!(
        text,
        "m\\ ,t\\ \\ =a\\ b\\ c msg=\"line 1\\r\\nline 2\ttab\" 1764151200\n"
    );
    assert_eq!(text.matches('\n').count(), 1);
    assert!(!text.contains('\r'));
}

#[test]
fn tags_are_sorted_by_key_and_empty_values_are_left_out() {
    let p = point(
        "m",
        &[("z", "1"), ("source", ""), ("a", "2"), ("M", "3")],
        vec![("v", FieldValue::Bool(false))],
    );
    assert_eq!(line(&p, Precision::S), "m,M=3,a=2,z=1 v=false 1764151200\n");
}

#[test]
fn non_finite_floats_are_left_out_and_a_point_left_without_fields_is_refused() {
    let mut p = point(
        "m",
        &[],
        vec![
            ("nan", FieldValue::Float(f64::NAN)),
            ("ok", FieldValue::Float(-0.5)),
            ("inf", FieldValue::Float(f64::INFINITY)),
        ],
    );
    assert_eq!(line(&p, Precision::S), "m ok=-0.5 1764151200\n");

    p.fields.remove(1);
    let mut out = String::from("before\n");
    assert_eq!(
        encode(&p, Precision::Ns, &mut out),
        Err(EncodeError::NoFields {
            measurement: "m".into()
        })
    );
    assert_eq!(out, "before\n", "nothing is appended on error");
}

#[test]
fn floats_are_written_without_exponent_and_read_back_exactly() {
    for v in [1e-7, 1e21, 5e-324, f64::MAX, -0.0, 0.1 + 0.2] {
        let text = line(
            &point("m", &[], vec![("v", FieldValue::Float(v))]),
            Precision::S,
        );
        let written = text
            .strip_prefix("m v=")
            .and_then(|t| t.strip_suffix(" 1764151200\n"))
            .unwrap();
        assert!(!written.contains(['e', 'E']), "{written}");
        assert_eq!(written.parse::<f64>().unwrap().to_bits(), v.to_bits());
    }
}

#[test]
fn timestamps_are_rounded_down_to_the_precision() {
    let mut p = point("m", &[], vec![("v", FieldValue::Integer(1))]);
    p.time = 1_999_999_999;
    let stamp = |p: &Point, precision| {
        let text = line(p, precision);
        text.trim_end().rsplit(' ').next().unwrap().to_string()
    };
    assert_eq!(stamp(&p, Precision::Ns), "1999999999");
    assert_eq!(stamp(&p, Precision::Us), "1999999");
    assert_eq!(stamp(&p, Precision::Ms), "1999");
    assert_eq!(stamp(&p, Precision::S), "1");
    p.time = -1;
    assert_eq!(
        stamp(&p, Precision::S),
        "-1",
        "before 1970 rounds to the past"
    );
}

#[test]
fn points_influxdb_would_drop_are_refused_with_the_reason() {
    let ok = || point("m", &[("t", "1")], vec![("v", FieldValue::Integer(1))]);
    let cases: Vec<(Point, EncodeError)> = vec![
        (
            Point {
                measurement: String::new(),
                ..ok()
            },
            EncodeError::EmptyMeasurement,
        ),
        (
            Point {
                measurement: "#m".into(),
                ..ok()
            },
            EncodeError::CommentMeasurement {
                measurement: "#m".into(),
            },
        ),
        (
            Point {
                tags: vec![("time".into(), "x".into())],
                ..ok()
            },
            EncodeError::ReservedKey {
                measurement: "m".into(),
                what: "tag key",
            },
        ),
        (
            Point {
                fields: vec![("time".into(), FieldValue::Integer(1))],
                ..ok()
            },
            EncodeError::ReservedKey {
                measurement: "m".into(),
                what: "field key",
            },
        ),
        (
            Point {
                tags: vec![("t".into(), "1".into()), ("t".into(), "2".into())],
                ..ok()
            },
            EncodeError::DuplicateKey {
                measurement: "m".into(),
                what: "tag key",
                key: "t".into(),
            },
        ),
        (
            Point {
                fields: vec![
                    ("v".into(), FieldValue::Integer(1)),
                    ("v".into(), FieldValue::Bool(true)),
                ],
                ..ok()
            },
            EncodeError::DuplicateKey {
                measurement: "m".into(),
                what: "field key",
                key: "v".into(),
            },
        ),
        (
            Point {
                tags: vec![(String::new(), "1".into())],
                ..ok()
            },
            EncodeError::EmptyKey {
                measurement: "m".into(),
                what: "tag key",
            },
        ),
    ];
    for (p, expected) in cases {
        let mut out = String::new();
        assert_eq!(encode(&p, Precision::Ns, &mut out), Err(expected), "{p:?}");
        assert!(out.is_empty());
    }
}

#[test]
fn precision_reads_and_writes_the_influxdb_spelling() {
    for (precision, text) in [
        (Precision::Ns, "ns"),
        (Precision::Us, "us"),
        (Precision::Ms, "ms"),
        (Precision::S, "s"),
    ] {
        assert_eq!(precision.as_str(), text);
        let json = format!("\"{text}\"");
        assert_eq!(serde_json::to_string(&precision).unwrap(), json);
        assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), precision);
    }
    assert!(serde_json::from_str::<Precision>("\"NS\"").is_err());
}

/// What a point should read back as, or `None` when it must be refused. `name` maps each
/// name and tag value as the encoder's documented rules say.
fn expected(p: &Point, precision: Precision, name: impl Fn(&str) -> String) -> Option<Parsed> {
    let measurement = name(&p.measurement);
    if measurement.is_empty() || measurement.starts_with('#') {
        return None;
    }
    let mut tags: Vec<(String, String)> = p
        .tags
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (name(k), name(v)))
        .collect();
    tags.sort();
    let fields: Vec<(String, FieldValue)> = p
        .fields
        .iter()
        .filter(|(_, v)| !matches!(v, FieldValue::Float(f) if !f.is_finite()))
        .map(|(k, v)| (name(k), v.clone()))
        .collect();
    let acceptable = |keys: Vec<&String>| {
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        unique.len() == keys.len() && keys.iter().all(|k| !k.is_empty() && *k != "time")
    };
    if fields.is_empty()
        || !acceptable(tags.iter().map(|(k, _)| k).collect())
        || !acceptable(fields.iter().map(|(k, _)| k).collect())
    {
        return None;
    }
    Some(Parsed {
        measurement,
        tags,
        fields,
        timestamp: p.time.div_euclid(precision.ns_per_unit()),
    })
}

/// The documented mapping of names and tag values: control characters become spaces, and a
/// backslash at the end or before `\`, `,`, `=` or a space becomes `/`.
fn documented_name(s: &str) -> String {
    let chars: Vec<char> = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let ordinary_next = chars.get(i + 1).is_some_and(|n| !"\\,= ".contains(*n));
        out.push(if c == '\\' && !ordinary_next { '/' } else { c });
    }
    out
}

/// `Debug` prints floats exactly and tells -0.0 from 0.0, which `==` does not.
fn exactly(p: &Option<Parsed>) -> String {
    format!("{p:?}")
}

// ---- Strategies ----

/// Short strings rich in what line protocol must escape, plus control characters and any
/// other character.
fn text() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(
        prop_oneof![
            6 => prop::char::range('a', 'e'),
            3 => prop::sample::select(vec![',', '=', '"', '\\', ' ', '#', 'é', '€', '😀']),
            1 => prop::sample::select(vec!['\n', '\r', '\t', '\0']),
            1 => any::<char>(),
        ],
        0..8,
    )
    .prop_map(String::from_iter)
}

/// Strings that every InfluxDB version stores exactly as written: no control characters,
/// backslashes only before ordinary characters, not starting with `#`.
fn plain_text() -> impl Strategy<Value = String> + Clone {
    text().prop_filter("plain", |s| {
        let chars: Vec<char> = s.chars().collect();
        !s.starts_with('#')
            && !chars.iter().any(|c| c.is_control())
            && chars
                .iter()
                .enumerate()
                .all(|(i, &c)| c != '\\' || chars.get(i + 1).is_some_and(|n| !"\\,= ".contains(*n)))
    })
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            5e-324,
            f64::MAX,
            f64::MIN,
        ]),
    ]
}

fn value(strings: impl Strategy<Value = String>) -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        float().prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::UInteger),
        any::<bool>().prop_map(FieldValue::Bool),
        strings.prop_map(FieldValue::Str),
    ]
}

fn points(names: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Point> {
    (
        names.clone(),
        prop::collection::vec((names.clone(), names.clone()), 0..4),
        prop::collection::vec((names, value(text())), 1..5),
        any::<i64>(),
    )
        .prop_map(|(measurement, tags, fields, time)| Point {
            measurement,
            tags,
            fields,
            time,
        })
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(vec![
        Precision::Ns,
        Precision::Us,
        Precision::Ms,
        Precision::S,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_point_reads_back_as_documented_or_is_refused_whole(
        p in points(text()),
        precision in precision(),
    ) {
        let mut out = String::from("previous line\n");
        let result = encode(&p, precision, &mut out);
        let want = expected(&p, precision, documented_name);
        match &want {
            None => {
                prop_assert!(result.is_err(), "accepted: {out:?}");
                prop_assert_eq!(out, "previous line\n");
            }
            Some(_) => {
                prop_assert!(result.is_ok(), "{result:?}");
                let text = &out["previous line\n".len()..];
                prop_assert_eq!(text.matches('\n').count(), 1, "{:?}", text);
                prop_assert!(!text.contains('\r'));
                for reader in [Reader::V1, Reader::V3] {
                    let got = parse(text, reader).map_err(|e| format!("{e} in {text:?}"));
                    prop_assert_eq!(exactly(&got.ok()), exactly(&want), "{:?} read {}", reader, text);
                }
            }
        }
    }

    #[test]
    fn plain_names_and_any_values_round_trip_exactly(
        p in points(plain_text()),
        precision in precision(),
    ) {
        let want = expected(&p, precision, str::to_string);
        let mut out = String::new();
        let result = encode(&p, precision, &mut out);
        prop_assert_eq!(result.is_ok(), want.is_some(), "{:?}", result);
        if want.is_some() {
            for reader in [Reader::V1, Reader::V3] {
                let got = parse(&out, reader).map_err(|e| format!("{e} in {out:?}"));
                prop_assert_eq!(exactly(&got.ok()), exactly(&want), "{:?} read {}", reader, out);
            }
        }
    }

    #[test]
    fn equal_points_encode_to_equal_bytes_whatever_the_tag_order(
        p in points(text()),
        seed in any::<u64>(),
    ) {
        let mut shuffled = p.clone();
        let n = shuffled.tags.len();
        if n > 1 {
            shuffled.tags.rotate_left((seed % n as u64) as usize);
        }
        let (mut a, mut b) = (String::new(), String::new());
        let ra = encode(&p, Precision::Ns, &mut a);
        let rb = encode(&shuffled, Precision::Ns, &mut b);
        prop_assert_eq!(ra.is_ok(), rb.is_ok());
        prop_assert_eq!(a, b);
    }
}
