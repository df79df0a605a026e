//! `edgewatch simulate mqtt`: a load generator that publishes reference sensor payloads to an
//! MQTT broker, for installers commissioning a broker (does it take our rate, at QoS 1, with
//! these credentials and this CA?) and for the MQTT tests and benchmarks.
//!
//! Every message is one reading of one sensor, on `<prefix>/<sensor_id>`:
//!
//! ```json
//! {"sensor_id":"s-0042","timestamp":"2026-11-26T10:00:00.120Z","temperature":71.23,"pressure":3.912,"vibration":0.421}
//! ```
//!
//! - Sensors `s-0001` … `s-NNNN` take turns (round robin); the timestamp is the wall-clock time
//!   of publishing, UTC, with milliseconds (`--timestamp-precision us`: microseconds, for
//!   latency measurements such as `examples/mqtt_bench.rs`).
//! - Values: each sensor has base levels drawn from the seed (temperature 40–75 °C, pressure
//!   2–6 bar, vibration 0.3–1.0 mm/s, as the built-in simulated source), a slow sinusoid and
//!   gaussian noise. With `--anomaly-every`, one sensor (drawn from the seed) reports its
//!   vibration ×6 ([`crate::source::sim::VIBRATION_FAULT_FACTOR`]) once per period: enough for a z-score rule on
//!   vibration to fire.
//! - Pacing is driven by the clock, not by sleeps per message: message `i` is due at
//!   `start + i / rate`; every wake-up (about once a millisecond, the timer's resolution)
//!   publishes all messages due by then, so 10,000 msg/s comes out as bursts of about ten.
//!   A publisher that falls behind (a slow broker) catches up as fast as the broker allows.
//! - The run is bounded: it stops after `--count` messages or `--duration-secs`, whichever
//!   comes first; at QoS 1 it then waits (at most `--ack-timeout-secs`) for every PUBACK.
//!
//! rumqttc's event loop runs in its own task; the publisher only queues requests (awaiting a
//! publish from the polling task can deadlock, rumqttc #263). The event loop reports what was
//! written to the socket and acknowledged; a connection error ends the run instead of a
//! reconnect (a load test must not hide an outage).

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod client;
mod publish;
mod readings;

use client::{connect, mqtt_options};
#[cfg(test)]
use publish::due_by;
use publish::{Progress, Publisher, poll};
#[cfg(test)]
use readings::{Sensors, payload};

/// Exit status of a run that stopped at `--duration-secs` before `--count` messages.
pub const EXIT_TIME_LIMIT: u8 = 3;
/// Exit status of a bad option (EX_USAGE, as for a bad config).
pub const EXIT_USAGE: u8 = 64;

/// Messages the client may queue before `publish` waits: enough to keep the event loop busy
/// between two wake-ups of the publisher at 10,000 msg/s.
const REQUEST_CAPACITY: usize = 1000;
/// Unacknowledged QoS 1 messages on the wire at once. A window of ~1000 keeps a local broker
/// busy; a small one caps the rate at window / round-trip time.
const INFLIGHT: u16 = 1000;
/// Keep-alive: a half-open link is noticed within about 1.5 × this.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Upper bound of sending DISCONNECT at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to generate load for.
#[derive(Debug, clap::Subcommand)]
pub enum Target {
    /// Publish reference sensor readings to an MQTT broker at a given rate, then print one
    /// summary line.
    #[command(long_about = MQTT_ABOUT)]
    Mqtt(Box<MqttArgs>),
}

const MQTT_ABOUT: &str = "\
Publish reference sensor readings to an MQTT broker at a given rate, then print one summary
line. Use it to commission a broker: does it accept our connection (credentials, CA), and
does it take the plant's rate at QoS 1?

Each message is one reading, published on <topic-prefix>/<sensor_id>, sensors taking turns:
  {\"sensor_id\":\"s-0042\",\"timestamp\":\"2026-11-26T10:00:00.120Z\",
   \"temperature\":71.23,\"pressure\":3.912,\"vibration\":0.421}
The timestamp is the time of publishing (UTC), with milliseconds (microseconds with
--timestamp-precision us, for latency measurements). Values are plausible noise; with
--anomaly-every one sensor reports a vibration spike (x6) once per period, so that rules fire.

The run stops after --count messages or --duration-secs, whichever comes first. At QoS 1
it then waits for every acknowledgement (PUBACK). The last line on stdout is the summary:
  published=10000 qos=1 elapsed_s=1.001 rate_msg_s=9990.0 acked=10000 anomalies=0 errors=0
published: messages written to the broker; acked: acknowledged by it (QoS 1; n/a at QoS 0);
elapsed_s: from the first message to the last one written (QoS 0) or acknowledged (QoS 1).

Exit status: 0 when every message was published (and acknowledged at QoS 1); 1 when the
broker cannot be reached, refuses the connection, or the connection is lost or
acknowledgements are missing; 3 when --duration-secs ended the run before --count; 64 for a
bad option.

Example: 10,000 msg/s for 10 s to a broker with a password and TLS:
  MQTT_PASSWORD=... edgewatch simulate mqtt --host 10.0.0.5 --port 8883 \\
      --tls-ca /etc/edgewatch/ca.crt --username edge --password-env MQTT_PASSWORD \\
      --sensors 200 --rate 10000 --count 100000";

/// The options of `edgewatch simulate mqtt`.
#[derive(Clone, Debug, clap::Args)]
pub struct MqttArgs {
    /// Broker host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (usually 1883, or 8883 with TLS).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Number of sensors, s-0001 … s-N; they publish in turn.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sensors: u32,
    /// Messages per second over all sensors; 0 publishes as fast as the broker takes them.
    #[arg(long, value_parser = non_negative)]
    pub rate: f64,
    /// Messages to publish in total; the run stops after them.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Upper bound of the publishing time in seconds: the run stops then even if --count
    /// messages were not all sent (exit status 3).
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = positive)]
    pub duration_secs: f64,
    /// MQTT quality of service: 0 (at most once) or 1 (at least once, acknowledged).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Topic prefix; each sensor publishes on <prefix>/<sensor_id>.
    #[arg(long, default_value = "plant/line1/sensors", value_parser = topic_prefix)]
    pub topic_prefix: String,
    /// Inject a vibration spike (x6) on one sensor every SECS seconds. Off by default.
    #[arg(long, value_name = "SECS", value_parser = positive)]
    pub anomaly_every: Option<f64>,
    /// User name to log in with.
    #[arg(long, value_name = "U")]
    pub username: Option<String>,
    /// Name of the environment variable that holds the password (a password on the command
    /// line would show in `ps`).
    #[arg(long, value_name = "VAR", requires = "username")]
    pub password_env: Option<String>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one; needs --tls-ca and --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// MQTT client id [default: edgewatch-simulate-<pid>]. Two clients with the same id
    /// disconnect each other.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Seed of the values and of the anomalies' sensors: the same seed gives the same values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fractional digits of the payload's timestamp: ms (the reference format) or us, for
    /// latency measurements finer than a millisecond (edgewatch's ingest latency histogram).
    #[arg(long, value_enum, default_value_t = TimestampPrecision::Ms)]
    pub timestamp_precision: TimestampPrecision,
    /// How long to wait for the broker to accept the connection, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// How long to wait for the last acknowledgements (QoS 1) after publishing, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive)]
    pub ack_timeout_secs: f64,
}

/// Fractional digits of the timestamp in the payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampPrecision {
    /// Milliseconds, `10:00:00.120Z`: the reference payload.
    #[default]
    Ms,
    /// Microseconds, `10:00:00.120345Z`.
    Us,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        // Below a microsecond a duration is 0.
        Ok(x) if (1e-6..1e9).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn topic_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("the topic prefix must not be empty".into());
    }
    if trimmed.contains(['+', '#', '\0']) {
        return Err(format!(
            "{s:?}: a topic to publish on cannot contain the wildcards + or #"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A bad option found after parsing (an unreadable file, an unset variable).
    #[error("{0}")]
    Usage(String),
    /// No MQTT session came up.
    #[error("{0}")]
    Connect(String),
    /// The runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl SimulateError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SimulateError::Usage(_) => ExitCode::from(EXIT_USAGE),
            SimulateError::Connect(_) | SimulateError::Runtime(_) => ExitCode::FAILURE,
        }
    }
}

/// Why publishing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All `--count` messages were queued.
    Count,
    /// `--duration-secs` passed first.
    Duration,
    /// The connection failed.
    Error,
}

/// The outcome of a run that connected.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Messages written to the broker.
    pub published: u64,
    pub qos: u8,
    /// From the first message to the last one written (QoS 0) or acknowledged (QoS 1).
    pub elapsed: Duration,
    /// PUBACKs received; `None` at QoS 0.
    pub acked: Option<u64>,
    /// Vibration spikes injected.
    pub anomalies: u64,
    /// What went wrong, in order; each is also printed to stderr.
    pub errors: Vec<String>,
    pub stop: Stop,
}

impl Summary {
    /// Messages per second over [`Summary::elapsed`].
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.published as f64 / secs
        } else {
            0.0
        }
    }

    /// The exit status: see the `--help` text.
    pub fn exit_code(&self) -> ExitCode {
        if !self.errors.is_empty() {
            ExitCode::FAILURE
        } else if self.stop == Stop::Duration {
            ExitCode::from(EXIT_TIME_LIMIT)
        } else {
            ExitCode::SUCCESS
        }
    }
}

impl fmt::Display for Summary {
    /// `published=C qos=Q elapsed_s=... rate_msg_s=... acked=... anomalies=K errors=E`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published={} qos={} elapsed_s={:.3} rate_msg_s={:.1} acked=",
            self.published,
            self.qos,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        match self.acked {
            Some(acked) => write!(f, "{acked}")?,
            None => f.write_str("n/a")?,
        }
        write!(
            f,
            " anomalies={} errors={}",
            self.anomalies,
            self.errors.len()
        )
    }
}

/// Runs `edgewatch simulate mqtt` on its own runtime: prints the summary line to stdout and
/// problems to stderr, and returns the exit status.
pub fn main(args: &MqttArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SimulateError::Runtime)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(summary) => {
            println!("{summary}");
            summary.exit_code()
        }
        Err(e) => {
            eprintln!("edgewatch simulate mqtt: {e}");
            e.exit_code()
        }
    }
}

/// Connects, publishes, waits for the acknowledgements and disconnects. Problems after the
/// connection are in the summary's `errors` (and on stderr); an `Err` means no session.
pub async fn run(args: &MqttArgs) -> Result<Summary, SimulateError> {
    let options = mqtt_options(args)?;
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(args.connect_timeout_secs.max(1));
    eventloop.set_network_options(network);
    connect(&mut eventloop, args).await?;

    let mut publisher = Publisher::new(args, qos);
    let progress = Arc::new(Progress::default());
    let lost = CancellationToken::new();
    let start = Instant::now();
    let poller = tokio::spawn(poll(eventloop, start, progress.clone(), lost.clone()));
    let deadline = start + Duration::from_secs_f64(args.duration_secs);
    let stop = publisher.publish_all(&client, start, deadline, &lost).await;

    // Every queued message written (QoS 0) or acknowledged (QoS 1).
    let queued = publisher.queued;
    let done = |p: &Progress| match qos {
        QoS::AtMostOnce => p.published.load(Ordering::Acquire) >= queued,
        _ => p.acked.load(Ordering::Acquire) >= queued,
    };
    let mut errors = Vec::new();
    let complete = tokio::select! {
        () = progress.wait_until(done) => true,
        () = lost.cancelled() => false,
        () = tokio::time::sleep(Duration::from_secs_f64(args.ack_timeout_secs)) => {
            let missing = queued - match qos {
                QoS::AtMostOnce => progress.published.load(Ordering::Acquire),
                _ => progress.acked.load(Ordering::Acquire),
            };
            errors.push(format!(
                "{missing} of {queued} message(s) not {} within --ack-timeout-secs {}",
                if qos == QoS::AtMostOnce { "written" } else { "acknowledged" },
                args.ack_timeout_secs
            ));
            false
        }
    };
    let end = if complete {
        start + Duration::from_nanos(progress.last_event_ns.load(Ordering::Acquire))
    } else {
        Instant::now()
    };

    // A clean end, so that the broker does not log an unexpected disconnection.
    if !lost.is_cancelled()
        && tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect())
            .await
            .is_ok_and(|r| r.is_ok())
    {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            tokio::select! {
                () = progress.wait_until(|p| p.disconnected.load(Ordering::Acquire) > 0) => {}
                () = lost.cancelled() => {}
            }
        })
        .await;
    }
    poller.abort();
    if let Some(error) = progress.error.lock().expect("error lock").take() {
        errors.insert(
            0,
            format!(
                "connection to {}:{} lost after {} message(s): {error}",
                args.host,
                args.port,
                progress.published.load(Ordering::Acquire)
            ),
        );
    }
    for e in &errors {
        eprintln!("edgewatch simulate mqtt: {e}");
    }
    let summary = Summary {
        published: progress.published.load(Ordering::Acquire),
        qos: args.qos,
        elapsed: end.saturating_duration_since(start),
        acked: (qos != QoS::AtMostOnce).then(|| progress.acked.load(Ordering::Acquire)),
        anomalies: publisher.anomalies,
        errors,
        stop: if lost.is_cancelled() {
            Stop::Error
        } else {
            stop
        },
    };
    if summary.stop == Stop::Duration {
        eprintln!(
            "edgewatch simulate mqtt: --duration-secs {} passed after {} of {} message(s)",
            args.duration_secs, publisher.queued, args.count
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sim::VIBRATION_FAULT_FACTOR;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        target: Target,
    }

    fn parse(args: &[&str]) -> Result<MqttArgs, clap::Error> {
        let mut argv = vec!["simulate", "mqtt"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.target {
            Target::Mqtt(args) => *args,
        })
    }

    #[test]
    fn payload_is_the_reference_format() {
        let at = time::macros::datetime!(2026-11-26 10:00:00.120345 UTC);
        let text = payload(41, at, TimestampPrecision::Ms, [71.234, 3.9124, 0.42051]);
        assert_eq!(
            text,
            r#"{"sensor_id":"s-0042","timestamp":"2026-11-26T10:00:00.120Z","temperature":71.23,"pressure":3.912,"vibration":0.421}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["sensor_id"], "s-0042");
        let micros = payload(41, at, TimestampPrecision::Us, [71.234, 3.9124, 0.42051]);
        assert_eq!(
            micros,
            r#"{"sensor_id":"s-0042","timestamp":"2026-11-26T10:00:00.120345Z","temperature":71.23,"pressure":3.912,"vibration":0.421}"#
        );
    }

    #[test]
    fn due_count_follows_the_clock_and_stops_at_count() {
        assert_eq!(due_by(1000.0, Duration::ZERO, 10_000), 1);
        assert_eq!(due_by(1000.0, Duration::from_micros(999), 10_000), 1);
        assert_eq!(due_by(1000.0, Duration::from_millis(1), 10_000), 2);
        assert_eq!(due_by(10_000.0, Duration::from_millis(5), 10_000), 51);
        assert_eq!(due_by(10_000.0, Duration::from_secs(5), 10_000), 10_000);
        assert_eq!(due_by(0.0, Duration::ZERO, 7), 7);
    }

    #[test]
    fn readings_stay_in_plausible_ranges_and_a_spike_multiplies_vibration() {
        let mut sensors = Sensors::new(50, 7);
        for k in 0..10_000 {
            let [t, p, v] = sensors.reading(k % 50, k as f64 * 0.1, false);
            assert!((36.0..79.0).contains(&t), "temperature {t}");
            assert!((1.7..6.3).contains(&p), "pressure {p}");
            assert!((0.1..1.2).contains(&v), "vibration {v}");
        }
        let mut a = Sensors::new(3, 9);
        let mut b = Sensors::new(3, 9);
        let normal = a.reading(1, 5.0, false);
        let spiked = b.reading(1, 5.0, true);
        assert_eq!(normal[..2], spiked[..2]);
        assert_eq!(spiked[2], normal[2] * VIBRATION_FAULT_FACTOR);
    }

    #[test]
    fn same_seed_same_values() {
        let mut a = Sensors::new(4, 3);
        let mut b = Sensors::new(4, 3);
        for k in 0..100 {
            assert_eq!(a.reading(k % 4, 1.0, false), b.reading(k % 4, 1.0, false));
        }
    }

    #[test]
    fn options_parse_with_defaults_and_reject_bad_values() {
        let args = parse(&["--rate", "2000", "--count", "10"]).unwrap();
        assert_eq!(
            (args.host.as_str(), args.port, args.sensors, args.qos),
            ("127.0.0.1", 1883, 10, 1)
        );
        assert_eq!(args.topic_prefix, "plant/line1/sensors");
        let args = parse(&["--rate", "0", "--count", "1", "--topic-prefix", "a/b/"]).unwrap();
        assert_eq!(args.topic_prefix, "a/b");
        for bad in [
            &["--count", "10"][..],
            &["--rate", "10"],
            &["--rate", "-1", "--count", "1"],
            &["--rate", "1", "--count", "0"],
            &["--rate", "1", "--count", "1", "--qos", "2"],
            &["--rate", "1", "--count", "1", "--topic-prefix", "a/+"],
            &["--rate", "1", "--count", "1", "--password-env", "X"],
            &["--rate", "1", "--count", "1", "--tls-cert", "c.pem"],
            &["--rate", "1", "--count", "1", "--sensors", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn summary_line_has_every_field() {
        let summary = Summary {
            published: 2000,
            qos: 1,
            elapsed: Duration::from_millis(1000),
            acked: Some(2000),
            anomalies: 0,
            errors: vec![],
            stop: Stop::Count,
        };
        assert_eq!(
            summary.to_string(),
            "published=2000 qos=1 elapsed_s=1.000 rate_msg_s=2000.0 acked=2000 anomalies=0 errors=0"
        );
        let qos0 = Summary {
            qos: 0,
            acked: None,
            ..summary
        };
        assert!(qos0.to_string().contains(" acked=n/a "));
    }
}
