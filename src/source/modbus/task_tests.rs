//! Tests of the source task against the in-process fake server.

use std::collections::BTreeMap;

use super::super::fake::{FakeServer, Reply, Request, identity};
use super::*;
use crate::live::SourceRegistry;

fn source(port: u16) -> ModbusSource {
    let text = format!(
        r#"
[gateway]
id = "test"

[[sources]]
type = "modbus_tcp"
name = "press"
host = "127.0.0.1"
port = {port}
units = [1, 2]
interval_ms = 100
timeout_ms = 40
retries = 1
backoff_initial_ms = 300
backoff_max_ms = 300
registers = [
  {{ name = "a", table = "holding", address = 0, type = "u16" }},
  {{ name = "b", table = "holding", address = 1, type = "u16", scale = 0.5 }},
  {{ name = "c", table = "input", address = 7, type = "u16", interval_ms = 300 }},
]
"#
    );
    let config = crate::config::load_str(&text).expect("test config loads");
    let s = &config.sources[0];
    ModbusSource::new(&s.name, &s.kind, &s.tags).expect("a modbus source")
}

fn details(registry: &SourceRegistry) -> BTreeMap<String, String> {
    registry.snapshot()[0].details.iter().cloned().collect()
}

#[tokio::test]
async fn polls_the_live_unit_on_its_interval_and_a_dead_one_once_per_backoff() {
    // Unit 1 answers; unit 2 never does.
    let server = FakeServer::start(|r: Request| {
        if r.unit == 1 {
            Reply::Registers(identity(r))
        } else {
            Reply::Silent
        }
    })
    .await;
    let registry = SourceRegistry::default();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(source(server.port).run(
        tx,
        registry.register("press", "modbus_tcp"),
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = details(&registry);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the task stops on shutdown")
        .expect("no panic");

    let mut batches = Vec::new();
    while let Ok(b) = rx.try_recv() {
        batches.push(b);
    }
    assert!(batches.len() >= 6, "{} batches", batches.len());
    let mut last = 0;
    let mut with_c = 0;
    for b in &batches {
        assert_eq!(&*b.source, "press");
        let time = b.readings[0].time;
        assert!(time > last, "one batch per poll, in time order");
        last = time;
        for r in &b.readings {
            assert_eq!(&*r.series.sensor, "press-1");
            assert_eq!(r.time, time, "every reading carries the poll's time");
            assert_eq!(r.quality, Quality::GOOD);
        }
        let fields: BTreeMap<&str, f64> = b
            .readings
            .iter()
            .map(|r| (&*r.series.field, r.value))
            .collect();
        assert_eq!(fields.get("a"), Some(&0.0));
        assert_eq!(fields.get("b"), Some(&0.5), "raw 1 × scale 0.5");
        with_c += usize::from(fields.contains_key("c"));
    }
    // `c` has its own interval, 3 times longer.
    assert!(
        with_c >= 2 && with_c * 2 < batches.len(),
        "{with_c} of {}",
        batches.len()
    );

    // Unit 2: two attempts while starting, then one per backoff delay (150..300 ms).
    let to_unit_2 = server.requests().iter().filter(|r| r.unit == 2).count();
    assert!(
        (3..=12).contains(&to_unit_2),
        "{to_unit_2} requests to unit 2"
    );

    assert_eq!(d["u1.state"], "up");
    assert_eq!(d["u2.state"], "down");
    assert_eq!(d["u2.last_error"], "timeout after 40 ms");
    assert_eq!(d["u2.last_success"], "never");
    assert!(d["u2.consecutive_failures"].parse::<u32>().unwrap() >= 2);
    assert_eq!(d["u1.consecutive_failures"], "0");
    assert_eq!(d["u1.bad_ranges"], "none");
    assert_eq!(d["endpoint"], format!("127.0.0.1:{}", server.port));
    assert_eq!(
        d["poll_groups"],
        "100 ms: 2 points in 1 read; 300 ms: 1 point in 1 read"
    );
    let health = registry.snapshot().remove(0);
    assert_eq!(health.state, "stopped");
    assert!(health.readings >= 12);

    let label = |unit: &str| SourceUnitLabel {
        source: "press".into(),
        unit: unit.into(),
    };
    assert_eq!(
        metrics.modbus_unit_up.get_or_create(&label("1")).get(),
        0,
        "reset at stop"
    );
    assert!(metrics.modbus_requests.get_or_create(&label("1")).get() >= 6);
    let timeouts = metrics
        .modbus_request_failures
        .get_or_create(&SourceUnitReasonLabel {
            source: "press".into(),
            unit: "2".into(),
            reason: "timeout".into(),
        })
        .get();
    assert_eq!(timeouts as usize, to_unit_2);
    let text = metrics.encode();
    assert!(
        text.contains("edgewatch_modbus_request_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_device_overruns_and_the_missed_ticks_are_skipped_and_counted() {
    // Every answer takes 250 ms: a 100 ms interval cannot be kept.
    let server = FakeServer::start(|r: Request| {
        Reply::Late(
            Duration::from_millis(250),
            Box::new(Reply::Registers(identity(r))),
        )
    })
    .await;
    let mut s = source(server.port);
    s.polling.units = vec![1];
    s.polling.timeout_ms = 1000;
    let registry = SourceRegistry::default();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(s.run(
        tx,
        registry.register("press", "modbus_tcp"),
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let d = details(&registry);
    shutdown.cancel();
    task.await.unwrap();
    let mut polls = 0;
    while rx.try_recv().is_ok() {
        polls += 1;
    }
    // Ticks are skipped, not piled up: requests never queue behind each other.
    let overruns: u64 = d["u1.overruns"].parse().unwrap();
    assert!(overruns >= 4, "{overruns} overruns in {polls} polls");
    assert!((2..=6).contains(&polls), "{polls} polls");
    let label = SourceUnitLabel {
        source: "press".into(),
        unit: "1".into(),
    };
    assert_eq!(
        metrics.modbus_overruns.get_or_create(&label).get(),
        overruns
    );
    assert_eq!(d["u1.state"], "up");
}

#[tokio::test]
async fn the_task_stops_when_the_pipeline_is_gone() {
    let server = FakeServer::start(|r: Request| Reply::Registers(identity(r))).await;
    let registry = SourceRegistry::default();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let task = tokio::spawn(source(server.port).run(
        tx,
        registry.register("press", "modbus_tcp"),
        Arc::new(Metrics::new()),
        CancellationToken::new(),
    ));
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(registry.snapshot()[0].state, "stopped");
}
