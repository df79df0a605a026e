//! The task of a `modbus_tcp` source (`edgewatch::source::modbus::ModbusSource`) against the
//! real simulator: a live unit polled on its interval and a silent one once per backoff
//! delay (counted in the simulator's request log), a slow device whose missed ticks are
//! skipped and counted, and the task stopping when the pipeline is gone. Every test is
//! bounded by [`TEST_TIMEOUT`](support::modbus_link::TEST_TIMEOUT).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgewatch::live::SourceRegistry;
use edgewatch::metrics::{Metrics, SourceUnitLabel, SourceUnitReasonLabel};
use edgewatch::model::{Batch, Quality};
use edgewatch::source::modbus::ModbusSource;
use support::modbus::{self, Fault, ModbusSim, SimOptions};
use support::modbus_link::bounded;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Timing of a test source.
struct Timing {
    units: &'static str,
    interval_ms: u64,
    timeout_ms: u64,
    backoff_ms: u64,
}

/// A source `press` polling the simulator: `a` (holding 0, the unit id) and `b` (holding 1,
/// scaled) every interval, `c` (input 1, the marker) every 3 intervals.
fn source(sim: &ModbusSim, t: &Timing) -> ModbusSource {
    let text = format!(
        r#"
[gateway]
id = "test"

[[sources]]
type = "modbus_tcp"
name = "press"
host = "127.0.0.1"
port = {port}
units = {units}
interval_ms = {interval}
timeout_ms = {timeout}
retries = 1
backoff_initial_ms = {backoff}
backoff_max_ms = {backoff}
registers = [
  {{ name = "a", table = "holding", address = 0, type = "u16" }},
  {{ name = "b", table = "holding", address = 1, type = "u16", scale = 0.5 }},
  {{ name = "c", table = "input", address = 1, type = "u16", interval_ms = {c_interval} }},
]
"#,
        port = sim.port(),
        units = t.units,
        interval = t.interval_ms,
        timeout = t.timeout_ms,
        backoff = t.backoff_ms,
        c_interval = t.interval_ms * 3,
    );
    let config = edgewatch::config::load_str(&text).expect("test config loads");
    let s = &config.sources[0];
    ModbusSource::new(&s.name, &s.kind, &s.tags).expect("a modbus source")
}

fn details(registry: &SourceRegistry) -> BTreeMap<String, String> {
    registry.snapshot()[0].details.iter().cloned().collect()
}

fn label(unit: &str) -> SourceUnitLabel {
    SourceUnitLabel {
        source: "press".into(),
        unit: unit.into(),
    }
}

/// Runs the source for `run`, then cancels it: the health details just before the stop and
/// the batches it sent.
async fn run_for(
    source: ModbusSource,
    run: Duration,
    registry: &SourceRegistry,
    metrics: &Arc<Metrics>,
) -> (BTreeMap<String, String>, Vec<Batch>) {
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(source.run(
        tx,
        registry.register("press", "modbus_tcp"),
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::time::sleep(run).await;
    let d = details(registry);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task stops on shutdown")
        .expect("no panic");
    let mut batches = Vec::new();
    while let Ok(b) = rx.try_recv() {
        batches.push(b);
    }
    (d, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_the_live_unit_on_its_interval_and_a_silent_one_once_per_backoff() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        // Unit 1 answers; unit 2 never does.
        sim.set_faults(&[Fault::silent().unit(2)]);
        let timing = Timing {
            units: "[1, 2]",
            interval_ms: 200,
            timeout_ms: 150,
            backoff_ms: 1000,
        };
        let registry = SourceRegistry::default();
        let metrics = Arc::new(Metrics::new());
        let run = Duration::from_millis(3000);
        let (d, batches) = run_for(source(&sim, &timing), run, &registry, &metrics).await;

        assert!(batches.len() >= 8, "{} batches", batches.len());
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
            assert_eq!(fields.get("a"), Some(&1.0), "unit 1's id");
            assert_eq!(
                fields.get("b"),
                Some(&(f64::from(modbus::HR_BITS_VALUE) * 0.5))
            );
            if let Some(c) = fields.get("c") {
                assert_eq!(*c, f64::from(modbus::IR_MARKER_VALUE));
                with_c += 1;
            }
        }
        // `c` has its own interval, 3 times longer.
        assert!(
            with_c >= 2 && with_c * 2 < batches.len(),
            "{with_c} of {}",
            batches.len()
        );

        // Unit 1: every interval (a and b, one read), c every third. Unit 2: one attempt
        // per poll (a timeout is not retried in the same poll), down after 2, then one per
        // backoff delay (500..1000 ms).
        let requests = sim.requests();
        let to_unit = |u: u8| requests.iter().filter(|r| r.unit == u).count();
        let (to_1, to_2) = (to_unit(1), to_unit(2));
        assert!(to_1 >= 12, "{to_1} requests to unit 1");
        assert!((3..=9).contains(&to_2), "{to_2} requests to unit 2");
        assert!(to_2 * 2 < to_1, "{to_2} to unit 2, {to_1} to unit 1");

        assert_eq!(d["u1.state"], "up");
        assert_eq!(d["u2.state"], "down");
        assert_eq!(d["u2.last_error"], "timeout after 150 ms");
        assert_eq!(d["u2.last_success"], "never");
        assert!(d["u2.consecutive_failures"].parse::<u32>().unwrap() >= 2);
        assert_eq!(d["u1.consecutive_failures"], "0");
        assert_eq!(d["u1.bad_ranges"], "none");
        assert_eq!(d["endpoint"], format!("127.0.0.1:{}", sim.port()));
        assert_eq!(
            d["poll_groups"],
            "200 ms: 2 points in 1 read; 600 ms: 1 point in 1 read"
        );
        let health = registry.snapshot().remove(0);
        assert_eq!(health.state, "stopped");
        assert_eq!(
            health.readings as usize,
            batches.iter().map(|b| b.readings.len()).sum::<usize>()
        );

        assert_eq!(
            metrics.modbus_unit_up.get_or_create(&label("1")).get(),
            0,
            "reset at stop"
        );
        let sent_1 = metrics.modbus_requests.get_or_create(&label("1")).get() as usize;
        // The stop may cut off the request in flight: the simulator saw it, the task did
        // not count it.
        assert!(to_1 - sent_1 <= 1, "{sent_1} counted, {to_1} received");
        let timeouts = metrics
            .modbus_request_failures
            .get_or_create(&SourceUnitReasonLabel {
                source: "press".into(),
                unit: "2".into(),
                reason: "timeout".into(),
            })
            .get() as usize;
        assert!(
            to_2 - timeouts <= 1,
            "{timeouts} timeouts counted, {to_2} requests received"
        );
        let text = metrics.encode();
        assert!(
            text.contains("edgewatch_modbus_request_seconds_bucket"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_overruns_and_the_missed_ticks_are_skipped_and_counted() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        // Every answer takes 250 ms (within the 1 s timeout): a 100 ms interval cannot be
        // kept.
        sim.set_faults(&[Fault::delay(Duration::from_millis(250))]);
        let timing = Timing {
            units: "[1]",
            interval_ms: 100,
            timeout_ms: 1000,
            backoff_ms: 400,
        };
        let registry = SourceRegistry::default();
        let metrics = Arc::new(Metrics::new());
        let run = Duration::from_millis(1300);
        let (d, batches) = run_for(source(&sim, &timing), run, &registry, &metrics).await;
        let polls = batches.len();
        // Ticks are skipped, not piled up: requests never queue behind each other.
        let overruns: u64 = d["u1.overruns"].parse().unwrap();
        assert!(overruns >= 4, "{overruns} overruns in {polls} polls");
        assert!((2..=6).contains(&polls), "{polls} polls");
        assert_eq!(
            metrics.modbus_overruns.get_or_create(&label("1")).get(),
            overruns
        );
        assert_eq!(d["u1.state"], "up");
        assert_eq!(d["u1.last_error"], "none");
        // One request at a time: each came after the answer to the one before.
        let requests = sim.requests();
        assert!(requests.len() <= 8, "{requests:?}");
        for pair in requests.windows(2) {
            let gap = pair[1]
                .time
                .duration_since(pair[0].time)
                .unwrap_or_default();
            assert!(gap >= Duration::from_millis(250), "{requests:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_stops_when_the_pipeline_is_gone() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let timing = Timing {
            units: "[1, 2]",
            interval_ms: 100,
            timeout_ms: 500,
            backoff_ms: 400,
        };
        let registry = SourceRegistry::default();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let task = tokio::spawn(source(&sim, &timing).run(
            tx,
            registry.register("press", "modbus_tcp"),
            Arc::new(Metrics::new()),
            CancellationToken::new(),
        ));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .unwrap();
        assert_eq!(registry.snapshot()[0].state, "stopped");
    })
    .await;
}
