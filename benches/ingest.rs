//! Payload decoding on one core: the reference JSON payload (three fields and an RFC 3339
//! timestamp), the same as an epoch number, a line protocol line and a bare value.
//!
//! Run with `cargo bench --bench ingest`. The daemon's target is 150,000 messages/s on two
//! cores, so decoding one message should cost about 1–2 µs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgewatch::config::{MappingConfig, PayloadFormat};
use edgewatch::ingest::Decoder;
use edgewatch::model::{NS_PER_SEC, Reading};

const REFERENCE: &[u8] = br#"{"sensor_id":"p-101","timestamp":"2026-11-26T10:00:00.120Z","temperature":71.2,"pressure":3.91,"vibration":0.42}"#;
const EPOCH: &[u8] = br#"{"sensor_id":"p-101","timestamp":1795687200120,"temperature":71.2,"pressure":3.91,"vibration":0.42}"#;
const LINE: &[u8] =
    b"machine,sensor_id=p-101 temperature=71.2,pressure=3.91,vibration=0.42 1795687200120000000";
const ARRIVAL: i64 = 1_795_687_200 * NS_PER_SEC;

fn bench(c: &mut Criterion, name: &str, config: MappingConfig, topic: &str, payload: &[u8]) {
    let decoder = Decoder::new(&config).expect("valid mapping");
    let mut out: Vec<Reading> = Vec::with_capacity(16);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            decoder
                .decode(topic, std::hint::black_box(payload), ARRIVAL, &mut out)
                .expect("decodes")
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let json = MappingConfig::default();
    bench(
        c,
        "json_reference",
        json.clone(),
        "plant/l1/p-101",
        REFERENCE,
    );
    bench(c, "json_epoch_ms", json, "plant/l1/p-101", EPOCH);
    let template = MappingConfig {
        topic_template: "plant/{line}/{sensor_id}".into(),
        ..MappingConfig::default()
    };
    bench(
        c,
        "json_reference_template",
        template,
        "plant/l1/p-101",
        REFERENCE,
    );
    let lp = MappingConfig {
        format: PayloadFormat::LineProtocol,
        ..MappingConfig::default()
    };
    bench(c, "line_protocol", lp, "plant/l1/p-101", LINE);
    let value = MappingConfig {
        format: PayloadFormat::Value,
        ..MappingConfig::default()
    };
    bench(c, "value", value, "plant/l1/p-101/temperature", b"71.2");
}

criterion_group!(benches, decode);
criterion_main!(benches);
