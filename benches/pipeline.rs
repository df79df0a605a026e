//! Pipeline throughput on one core: samples/s through windows + detectors, the same with a
//! multivariate rule on every sensor as well, and through windows + detectors + durable store
//! commits with raw retention on.
//!
//! Input: the simulated source (1,000 sensors × 3 fields, 100 ticks = 300,000 readings per
//! iteration, faults on) with the demo's five rules. Run with
//! `cargo bench --bench pipeline`; the README records the figures.

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgewatch::config::{self, Config, SourceKind};
use edgewatch::model::{Batch, NS_PER_SEC, TimeNs};
use edgewatch::pipeline::{Pipeline, RuleSet, Settings};
use edgewatch::source::sim::SimGenerator;
use edgewatch::store::Store;

const SENSORS: u32 = 1_000;
const TICKS: u64 = 100;
/// Readings per store commit: `store.commit_max_records` of the reference config.
const COMMIT_RECORDS: usize = 20_000;
/// 2026-01-01T00:00:00Z.
const START: TimeNs = 1_767_225_600 * NS_PER_SEC;

fn config(store: &std::path::Path) -> Config {
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    let text = demo
        .replace("./data/demo.redb", store.to_str().unwrap())
        .replace("sensors = 50", &format!("sensors = {SENSORS}"))
        .replace(
            "raw_retention_secs = 3_600",
            "raw_retention_secs = 315_360_000",
        )
        .replace("max_bytes = 268_435_456", "max_bytes = 68_719_476_736");
    config::load_str(&text).unwrap()
}

/// The batches of `TICKS` ticks, event time shifted by `offset`.
fn batches(config: &Config, offset: TimeNs) -> Vec<Batch> {
    let SourceKind::Sim(sim) = &config.sources[0].kind else {
        unreachable!("the bench config has a sim source")
    };
    let mut generator = SimGenerator::new(sim, START + offset);
    (0..TICKS)
        .map(|_| Batch::new("bench".into(), generator.tick().readings))
        .collect()
}

fn pipeline(config: &Config) -> Pipeline {
    let settings = Settings::from_config(config);
    Pipeline::new(
        settings,
        RuleSet::compile(&config.rules).unwrap(),
        1,
        Vec::new(),
        START,
    )
}

fn ingest_all(p: &mut Pipeline, batches: Vec<Batch>) -> usize {
    let mut n = 0;
    for b in batches {
        let now = b.readings.first().map_or(START, |r| r.time);
        n += b.readings.len();
        p.ingest(b, now);
    }
    n
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("bench.redb"));
    let input = batches(&cfg, 0);
    let samples: usize = input.iter().map(|b| b.readings.len()).sum();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(samples as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    // The demo's rules plus one multivariate model per sensor over its three fields, warm
    // after 20 of the 100 ticks.
    let multivariate = {
        let mut c = cfg.clone();
        let extra = config::load_str(&format!(
            "{}\n[[rules]]\nname = \"machine\"\nmatch = \"*\"\nkind = \"multivariate\"\n\
             fields = [\"temperature\", \"pressure\", \"vibration\"]\n\
             rate_fields = [\"temperature\"]\nwarmup_rows = 20\nskip_rows = 5\n",
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
                .unwrap()
        ))
        .unwrap();
        c.rules = extra.rules;
        c
    };
    group.bench_function("window+detect+multivariate", |b| {
        b.iter_batched(
            || (pipeline(&multivariate), input.clone()),
            |(mut p, batches)| {
                ingest_all(&mut p, batches);
                p.flush();
                p.take_output()
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("window+detect", |b| {
        b.iter_batched(
            || (pipeline(&cfg), input.clone()),
            |(mut p, batches)| {
                ingest_all(&mut p, batches);
                p.flush();
                p.take_output()
            },
            BatchSize::LargeInput,
        )
    });

    let store = Store::open(&cfg.store).unwrap();
    let mut round: i64 = 0;
    group.bench_function("window+detect+store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Each iteration writes new event times, as a running daemon does.
                round += 1;
                let input = batches(&cfg, round * TICKS as i64 * NS_PER_SEC);
                let mut p = pipeline(&cfg);
                let started = Instant::now();
                let mut pending = 0;
                for batch in input {
                    let now = batch.readings.first().map_or(START, |r| r.time);
                    pending += batch.readings.len();
                    p.ingest(batch, now);
                    if pending >= COMMIT_RECORDS {
                        store.write(&p.take_output()).unwrap();
                        pending = 0;
                    }
                }
                p.flush();
                store.write(&p.take_output()).unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
