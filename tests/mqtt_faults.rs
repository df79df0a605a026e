//! No reading is lost or counted twice when the broker restarts or the daemon is killed in
//! the middle of a QoS 1 stream, against a real Mosquitto (tests/support/mosquitto.rs) with
//! persistence:
//!
//! - the broker is stopped and restarted while the daemon holds delivered messages it has not
//!   acknowledged yet (in-process daemon, `app::start`);
//! - the broker crashes after the daemon committed and acknowledged messages but before the
//!   broker saved the acknowledgements: it redelivers messages the daemon has stored;
//! - the daemon binary is killed with SIGKILL several times while the stream goes on, and
//!   restarted on the same store.
//!
//! "Published" means acknowledged by the broker: every message is published at QoS 1 and its
//! PUBACK counted. Each message has its own event time, so its readings are identified by
//! (sensor, field, time): afterwards the store must hold exactly the published readings raw,
//! and exactly their rollups (count and mean per window), so a redelivery counted twice in a
//! rollup fails the test as surely as a lost message.

mod mqtt_common;
mod support;

use std::thread::sleep;
use std::time::{Duration, Instant};

use edgewatch::app;
use edgewatch::config::{self, Config};
use edgewatch::model::NS_PER_SEC;
use edgewatch::store::Store;
use mqtt_common::{
    Expected, assert_same, now_secs_ns, reference_payload, stored_raw, stored_rollups,
    wait_subscribed,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::daemon::{Daemon, get_json, get_text, metric};
use support::mosquitto::{Mode, Mosquitto};
use support::mqtt::connect;
use support::process::free_port;
use tokio_util::sync::CancellationToken;

/// Rollup windows of the daemons in these tests.
const WINDOW: i64 = NS_PER_SEC;
/// The daemon's gauge of messages waiting for their commit to be acknowledged.
const UNACKED: &str = "edgewatch_mqtt_unacked_messages{source=\"m\"}";
/// Sensors of the stream; message `i` is from sensor `i % SENSORS`.
const SENSORS: usize = 10;

/// Message `i` of a stream: a reference payload of sensor `s-0i` at `t0 + i` milliseconds
/// (so every reading has its own (series, time)), with values whose sums are exact in any
/// order.
fn stream_message(t0: i64, i: usize) -> (String, Vec<u8>, String, i64, [f64; 3]) {
    let sensor = format!("s-{:02}", i % SENSORS);
    let t = t0 + i as i64 * 1_000_000;
    let k = (i % 64) as f64;
    let values = [60.0 + k * 0.25, 3.0 + k / 16.0, 0.5 + k / 128.0];
    let topic = format!("stream/{sensor}");
    let payload = reference_payload(&sensor, t, values).into_bytes();
    (topic, payload, sensor, t, values)
}

/// Checks the store against what was published: exactly the readings raw, exactly their
/// rollups, and as many readings in rollups as raw.
fn assert_store_holds_exactly(store: &Store, expected: &Expected) {
    let raw = stored_raw(store);
    assert_same(
        "raw readings (series → (time, value))",
        &raw,
        &expected.raw(),
    );
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.raw_readings,
        expected.len() as u64,
        "raw readings in the store stats"
    );
    let rollups = stored_rollups(store);
    let in_rollups: u64 = rollups.values().map(|(count, _)| count).sum();
    assert_eq!(
        in_rollups,
        expected.len() as u64,
        "readings counted in rollups (a redelivery counted twice, or a reading lost from the \
         windows)"
    );
    assert_same("rollups (count, mean)", &rollups, &expected.rollups(WINDOW));
}

fn load(text: &str) -> Config {
    config::load_str(text).unwrap_or_else(|e| panic!("test config: {e:?}\n{text}"))
}

/// An in-process daemon with one mqtt source `m` (client id `client_id`, persistent session,
/// QoS 1) on `stream/#` of `broker`, one-second windows, and a store that commits (and so
/// acknowledges) only every `commit_ms`.
async fn start_in_process(
    broker: &Mosquitto,
    dir: &std::path::Path,
    client_id: &str,
    commit_ms: u64,
) -> (app::Running, CancellationToken) {
    let text = format!(
        r#"
[gateway]
id = "gw-broker-faults"
[store]
path = "{}"
commit_interval_ms = {commit_ms}
ack_commit_interval_ms = {commit_ms}
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
[log]
level = "warn"
[[sources]]
type = "mqtt"
name = "m"
host = "127.0.0.1"
port = {}
client_id = "{client_id}"
clean_session = false
qos = 1
topics = ["stream/#"]
reconnect_initial_ms = 200
reconnect_max_secs = 1
"#,
        dir.join("edgewatch.redb").display(),
        broker.port()
    );
    let shutdown = CancellationToken::new();
    let running = app::start(load(&text), shutdown.clone()).await.unwrap();
    tokio::task::block_in_place(|| wait_subscribed(broker, client_id, &["stream/#"]));
    (running, shutdown)
}

/// The stream's messages `range` and what they must give.
fn stream(
    t0: i64,
    range: std::ops::Range<usize>,
    expected: &mut Expected,
) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            let (topic, payload, sensor, t, values) = stream_message(t0, i);
            expected.add_reference(&sensor, t, values);
            (topic, payload)
        })
        .collect()
}

/// Publishes `messages` from a new client `client_id`; returns the PUBACKs.
async fn publish(broker: &Mosquitto, client_id: &str, messages: Vec<(String, Vec<u8>)>) -> u64 {
    let (mut publisher, _) = connect(broker.mqtt_options(client_id))
        .await
        .unwrap_or_else(|e| panic!("{client_id}: {e}\n{}", broker.log_tail()));
    let acked = publisher.publish_all(messages, 50).await;
    publisher.disconnect().await;
    acked
}

/// A sample of the daemon's own metrics (the exact name with labels).
fn sample(running: &app::Running, name: &str) -> f64 {
    metric(&running.metrics.encode(), name).unwrap_or_else(|| panic!("no metric {name}"))
}

/// Waits (at most `secs`) until `get` returns `want`.
async fn until_equal<T: PartialEq + std::fmt::Debug>(
    secs: u64,
    what: &str,
    want: T,
    mut get: impl FnMut() -> T,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = get();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}: {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops the daemon cleanly (the open windows become rollups) and checks the store.
async fn stop_and_check(running: app::Running, shutdown: CancellationToken, expected: &Expected) {
    let store = running.store.clone();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .expect("the daemon stops")
        .unwrap();
    tokio::task::block_in_place(|| assert_store_holds_exactly(&store, expected));
}

/// The broker stops (SIGTERM: it saves the sessions) and starts again while the daemon holds
/// a thousand delivered, unacknowledged messages (its store commits only every 3 s), and the
/// second half of the stream is published to the restarted broker as the daemon reconnects. The daemon's persistent session brings every message back; the copies the
/// broker redelivers of messages the daemon still holds are not counted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_delivery_loses_and_duplicates_nothing() {
    const FIRST: usize = 1_000;
    const TOTAL: usize = 2_000;
    let mut broker = Mosquitto::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) =
        start_in_process(&broker, dir.path(), "it-restart-daemon", 3_000).await;
    let t0 = now_secs_ns() - 120 * NS_PER_SEC;
    let mut expected = Expected::default();

    let mut acked = publish(
        &broker,
        "it-restart-pub-1",
        stream(t0, 0..FIRST, &mut expected),
    )
    .await;
    // The daemon holds every message, delivered, committed (and so acknowledged) none yet.
    until_equal(
        10,
        "every message delivered to the daemon",
        FIRST as f64,
        || sample(&running, UNACKED),
    )
    .await;
    let stored_at_stop = running.store.stats().unwrap().raw_readings;
    tokio::task::block_in_place(|| broker.stop());
    assert_eq!(
        stored_at_stop, 0,
        "the restart should interrupt the delivery before the first commit (3 s after the \
         first message)"
    );
    tokio::task::block_in_place(|| broker.restart());
    acked += publish(
        &broker,
        "it-restart-pub-2",
        stream(t0, FIRST..TOTAL, &mut expected),
    )
    .await;
    assert_eq!(acked, TOTAL as u64, "PUBACKs");

    let want = expected.len() as u64;
    until_equal(30, "every reading stored", want, || {
        running.store.stats().unwrap().raw_readings
    })
    .await;
    assert_eq!(
        sample(&running, "edgewatch_mqtt_reconnects_total{source=\"m\"}"),
        1.0,
        "the daemon reconnected once"
    );
    stop_and_check(running, shutdown, &expected).await;
}

/// The broker crashes after the daemon committed messages and acknowledged them, before the
/// broker took note of the acknowledgements (it is frozen with SIGSTOP, then killed; what it
/// restarts from is its last autosave, made while it had delivered every message). It then
/// redelivers every message, although all are stored: the daemon must recognise each stored
/// reading (`edgewatch_pipeline_duplicates_dropped_total`) and count none twice in a rollup.
/// A third of the stream published after the crash arrives too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_crash_after_the_commit_redelivers_and_nothing_is_counted_twice() {
    const BEFORE: usize = 2_000;
    const TOTAL: usize = 3_000;
    let mut broker = Mosquitto::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start_in_process(&broker, dir.path(), "it-crash-daemon", 5_000).await;
    let t0 = now_secs_ns() - 120 * NS_PER_SEC;
    let mut expected = Expected::default();
    let first_sent = Instant::now();
    let acked = publish(
        &broker,
        "it-crash-pub-1",
        stream(t0, 0..BEFORE, &mut expected),
    )
    .await;
    assert_eq!(acked, BEFORE as u64, "PUBACKs");

    // Every message delivered and waiting for the commit (5 s after the first one)...
    until_equal(
        10,
        "every message delivered to the daemon",
        BEFORE as f64,
        || sample(&running, UNACKED),
    )
    .await;
    // ...and saved by the broker in that state (autosave about every 2 s)...
    let database = broker.dir().join("mosquitto.db");
    let delivered = std::time::SystemTime::now();
    until_equal(10, "an autosave of the broker", true, || {
        std::fs::metadata(&database)
            .and_then(|m| m.modified())
            .is_ok_and(|saved| saved > delivered)
    })
    .await;
    // ...then the broker is frozen: it will not read the acknowledgements.
    let pid = broker.pid().expect("the broker runs");
    let frozen = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(frozen.success());
    assert_eq!(
        running.store.stats().unwrap().raw_readings,
        0,
        "the broker should be frozen before the daemon's first commit ({:?} after the first \
         message)",
        first_sent.elapsed()
    );

    // The commit, and the acknowledgements sent to the frozen broker.
    let want_before = 3 * BEFORE as u64;
    until_equal(15, "the commit", want_before, || {
        running.store.stats().unwrap().raw_readings
    })
    .await;
    until_equal(5, "every message acknowledged", 0.0, || {
        sample(&running, UNACKED)
    })
    .await;

    // The crash: SIGKILL (the harness resumes nothing), and a restart from the autosave.
    tokio::task::block_in_place(|| {
        broker.kill();
        broker.restart();
    });
    let duplicates = "edgewatch_pipeline_duplicates_dropped_total";
    until_equal(
        20,
        "every redelivered reading recognised as stored",
        want_before as f64,
        || sample(&running, duplicates),
    )
    .await;

    let acked = publish(
        &broker,
        "it-crash-pub-2",
        stream(t0, BEFORE..TOTAL, &mut expected),
    )
    .await;
    assert_eq!(acked, (TOTAL - BEFORE) as u64, "PUBACKs");
    let want = expected.len() as u64;
    until_equal(30, "every reading stored", want, || {
        running.store.stats().unwrap().raw_readings
    })
    .await;
    assert_eq!(
        sample(&running, duplicates),
        want_before as f64,
        "each redelivered reading dropped once, and no other"
    );
    stop_and_check(running, shutdown, &expected).await;
}

/// The daemon binary is killed with SIGKILL three times while a QoS 1 stream is published
/// at a steady pace, each time restarted on the same store; the stream goes on meanwhile
/// (the broker keeps it for the daemon's persistent session). After the stream and a clean
/// shutdown, the store holds exactly the published readings raw and in rollups: windows open
/// at a kill were restored from their checkpoints, and redelivered messages were not counted
/// twice.
#[test]
fn sigkill_of_the_daemon_mid_stream_three_times_loses_and_duplicates_nothing() {
    const TOTAL: usize = 4_000;
    const RATE: f64 = 400.0; // messages per second: the stream lasts about 10 s
    const KILLS: usize = 3;
    let seed = std::env::var("EDGEWATCH_TEST_SEED")
        .map(|s| s.parse().expect("EDGEWATCH_TEST_SEED is a u64"))
        .unwrap_or_else(|_| edgewatch::model::now_ns().unsigned_abs());
    eprintln!("kill schedule seed {seed} (EDGEWATCH_TEST_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let broker = Mosquitto::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("edgewatch.redb");
    let log = dir.path().join("edgewatch.log");
    let port = free_port();
    let text = format!(
        r#"
[gateway]
id = "gw-kill"
[store]
path = "{}"
commit_interval_ms = 100
[web]
listen = "127.0.0.1:{port}"
[pipeline]
window_secs = 1
allowed_lateness_secs = 0
[log]
level = "info"
[[sources]]
type = "mqtt"
name = "m"
host = "127.0.0.1"
port = {}
client_id = "it-kill-daemon"
clean_session = false
qos = 1
topics = ["stream/#"]
reconnect_initial_ms = 100
reconnect_max_secs = 1
"#,
        store_path.display(),
        broker.port()
    );
    let config = load(&text);
    let config_path = dir.path().join("edgewatch.toml");
    std::fs::write(&config_path, &text).unwrap();
    let base = format!("http://127.0.0.1:{port}");

    // Runs the daemon and waits until its source is connected.
    let spawn = || {
        let daemon = Daemon::spawn(&config_path, &log);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = get_json(&format!("{base}/api/v1/status"))
                .and_then(|s| s["sources"][0]["state"].as_str().map(str::to_owned));
            if state.as_deref() == Some("up") {
                return daemon;
            }
            if Instant::now() > deadline {
                daemon.fail(format!("the mqtt source is not up (state {state:?})"));
            }
            sleep(Duration::from_millis(50));
        }
    };
    let mut daemon = spawn();
    wait_subscribed(&broker, "it-kill-daemon", &["stream/#"]);

    // The stream, published from its own runtime at a steady pace while this thread kills.
    let t0 = now_secs_ns() - 120 * NS_PER_SEC;
    let mut expected = Expected::default();
    let messages = stream(t0, 0..TOTAL, &mut expected);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let options = broker.mqtt_options("it-kill-pub");
    let stream = runtime.spawn(async move {
        let (mut publisher, _) = connect(options).await.expect("publisher connects");
        let started = Instant::now();
        let mut acked = 0;
        let mut rest = messages.into_iter().peekable();
        let mut sent = 0usize;
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(20).collect();
            sent += chunk.len();
            acked += publisher.publish_all(chunk, 20).await;
            let due = Duration::from_secs_f64(sent as f64 / RATE);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        publisher.disconnect().await;
        acked
    });

    let stream_secs = TOTAL as f64 / RATE;
    let mut kills = Vec::new();
    for round in 0..KILLS {
        // Spread over the stream: each kill somewhere in its own share of the stream's time.
        let share = stream_secs / KILLS as f64;
        let wait = rng.random_range(0.3 * share..0.8 * share);
        sleep(Duration::from_secs_f64(wait));
        let exposition = get_text(&format!("{base}/metrics")).unwrap_or_default();
        let messages = metric(&exposition, "edgewatch_source_messages_total{source=\"m\"}");
        let duplicates = metric(&exposition, "edgewatch_pipeline_duplicates_dropped_total");
        daemon.kill();
        kills.push(format!(
            "kill {round} after {wait:.2} s: this run received {messages:?} messages, dropped \
             {duplicates:?} duplicates"
        ));
        // Down for a moment: messages queue at the broker meanwhile.
        sleep(Duration::from_millis(rng.random_range(100..400)));
        daemon = spawn();
    }

    let acked = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), stream).await })
        .expect("the stream ends within 60 s")
        .expect("the publisher task");
    assert_eq!(acked, TOTAL as u64, "PUBACKs");

    // Every reading arrives (the status counts raw readings; at most 2 s stale).
    let want = expected.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = get_json(&format!("{base}/api/v1/status"))
            .and_then(|s| s["store"]["raw_readings"].as_u64());
        if stored == Some(want) {
            break;
        }
        if Instant::now() > deadline {
            daemon.fail(format!("{stored:?} of {want} readings stored"));
        }
        sleep(Duration::from_millis(200));
    }
    let exposition = get_text(&format!("{base}/metrics")).unwrap_or_default();
    kills.push(format!(
        "last run: duplicates dropped {:?}",
        metric(&exposition, "edgewatch_pipeline_duplicates_dropped_total")
    ));
    eprintln!("{}", kills.join("\n"));

    let status = daemon.terminate(Duration::from_secs(15));
    assert!(status.success(), "clean shutdown: {status}");
    let store = Store::open(&config.store).unwrap();
    assert_store_holds_exactly(&store, &expected);
    assert!(
        store.open_windows().unwrap().is_empty(),
        "a clean shutdown leaves no window checkpoint"
    );
}
