//! Feeds arbitrary messages through `Decoder::decode`: the first byte picks one of several
//! mappings (JSON, value and line protocol, with and without a topic template), the second how
//! many of the following bytes are the topic; the rest is the payload. Besides not panicking,
//! every decode must keep the contract: on success it returns how many readings it appended,
//! on refusal `out` is unchanged and the detail is short and free of control characters.

#![no_main]

use std::sync::OnceLock;

use edgewatch::config::{MappingConfig, PayloadFormat, TimeFormat};
use edgewatch::ingest::{Decoder, MAX_DETAIL_CHARS};
use edgewatch::model::{Quality, Reading, SeriesKey};
use libfuzzer_sys::fuzz_target;

fn decoders() -> &'static [Decoder] {
    static DECODERS: OnceLock<Vec<Decoder>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let json = MappingConfig::default();
        let json_template = MappingConfig {
            topic_template: "plant/{line}/{sensor_id}/#".into(),
            fields: [
                ("t".to_string(), "/data/t".to_string()),
                ("first".to_string(), "/list/0".to_string()),
            ]
            .into(),
            time: "/meta/ts".into(),
            time_format: TimeFormat::Ms,
            ..MappingConfig::default()
        };
        let value = MappingConfig {
            format: PayloadFormat::Value,
            ..MappingConfig::default()
        };
        let value_template = MappingConfig {
            format: PayloadFormat::Value,
            topic_template: "+/{sensor_id}/{field}".into(),
            ..MappingConfig::default()
        };
        let lp = MappingConfig {
            format: PayloadFormat::LineProtocol,
            ..MappingConfig::default()
        };
        let lp_template = MappingConfig {
            format: PayloadFormat::LineProtocol,
            topic_template: "{site}/+/#".into(),
            time_format: TimeFormat::S,
            id_tag: "device".into(),
            ..MappingConfig::default()
        };
        [json, json_template, value, value_template, lp, lp_template]
            .iter()
            .map(|m| Decoder::new(m).expect("valid fuzz mapping"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [selector, topic_len, rest @ ..] = data else {
        return;
    };
    let decoders = decoders();
    let decoder = &decoders[usize::from(*selector) % decoders.len()];
    let (topic, payload) = rest.split_at(usize::from(*topic_len).min(rest.len()));
    let topic = String::from_utf8_lossy(topic);

    let before = vec![Reading {
        series: SeriesKey::new("sentinel", "value"),
        time: 0,
        value: 0.0,
        quality: Quality::GOOD,
    }];
    let mut out = before.clone();
    match decoder.decode(&topic, payload, 1_795_687_200_000_000_000, &mut out) {
        Ok(n) => {
            assert!(n >= 1);
            assert_eq!(out.len(), before.len() + n);
            assert_eq!(out[0], before[0]);
        }
        Err(e) => {
            assert_eq!(out, before, "out changed on refusal");
            assert!(e.detail.chars().count() <= MAX_DETAIL_CHARS, "{e:?}");
            assert!(!e.detail.contains(char::is_control), "{e:?}");
        }
    }
    let _ = decoder.topic_tags(&topic);
});
