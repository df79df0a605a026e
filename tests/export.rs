//! `edgewatch export` as a technician runs it: on a store the daemon wrote (sim source, an
//! hour ago), after the daemon stopped; and refused while a daemon holds the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use edgewatch::app;
use edgewatch::config::{self, SourceKind};
use edgewatch::model::{NS_PER_SEC, format_time, now_ns, parse_time};
use edgewatch::source::sim::SimGenerator;
use edgewatch::store::{EventFilter, Store};
use tokio_util::sync::CancellationToken;

const WINDOW: i64 = 60 * NS_PER_SEC;
const TICKS: u64 = 300;

fn config_text(store: &Path, start: i64, ticks: Option<u64>, realtime: bool) -> String {
    let ticks = ticks.map(|t| format!("ticks = {t}")).unwrap_or_default();
    format!(
        r#"
[gateway]
id = "gw-export"
[gateway.tags]
site = "plant 3"
[store]
path = "{}"
[web]
listen = "127.0.0.1:0"
[pipeline]
window_secs = 60
allowed_lateness_secs = 10
[[sources]]
type = "sim"
name = "sim"
sensors = 4
interval_ms = 1000
seed = 7
fault_interval_secs = 10
start_time = "{}"
{ticks}
realtime = {realtime}
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
[[rules]]
name = "stuck"
match = "*/*"
kind = "stuck"
raise_secs = 20
"#,
        store.display(),
        format_time(start)
    )
}

/// A store written by the daemon, and what it holds.
struct Fixture {
    _dir: tempfile::TempDir,
    config: PathBuf,
    start: i64,
    /// (sensor, field, window start) of every stored rollup.
    rollups: BTreeSet<(String, String, i64)>,
    /// Ids of every stored event.
    events: BTreeSet<u64>,
    outbox: usize,
    /// redb lets one process at a time open the file: exports take turns.
    turn: Mutex<()>,
}

impl Fixture {
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// Runs the daemon on a sim that replays 300 s from an hour ago, until every reading is in
/// and the shutdown has flushed the open windows; then reads what the store holds.
fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store/edgewatch.redb");
    let start = (now_ns() / WINDOW - 60) * WINDOW;
    let text = config_text(&store_path, start, Some(TICKS), false);
    let config_path = dir.path().join("edgewatch.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = config::load_str(&text).unwrap();

    let SourceKind::Sim(sim) = &config.sources[0].kind else {
        unreachable!("a sim source")
    };
    let mut generator = SimGenerator::new(sim, start);
    let total: u64 = (0..TICKS)
        .map(|_| generator.tick().readings.len() as u64)
        .sum();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let running = app::start(config.clone(), shutdown.clone()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while running.live.borrow().counters.readings < total {
            assert!(
                Instant::now() < deadline,
                "the pipeline did not see every reading"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        running.wait().await.unwrap();
    });
    drop(runtime);

    // Read the expectations, then close the store: the export process needs the file.
    let store = Store::open(&config.store).unwrap();
    let mut rollups = BTreeSet::new();
    for (series, _) in store.series().unwrap() {
        for r in store
            .rollups(&series.sensor, Some(&series.field), i64::MIN, i64::MAX)
            .unwrap()
        {
            rollups.insert((series.sensor.to_string(), series.field.to_string(), r.start));
        }
    }
    let events = store
        .events(&EventFilter::default())
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect::<BTreeSet<_>>();
    let outbox = store.outbox_after(0, usize::MAX).unwrap().len();
    drop(store);

    assert!(
        rollups.len() >= 4 * 3 * 5,
        "5 minutes give 5 windows per series"
    );
    assert!(!events.is_empty(), "the sim's faults should raise events");
    assert!(outbox >= rollups.len() + events.len());
    Fixture {
        _dir: dir,
        config: config_path,
        start,
        rollups,
        events,
        outbox,
        turn: Mutex::new(()),
    }
}

fn edgewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run edgewatch")
}

/// Runs `edgewatch export` on the fixture, checks it succeeded, returns stdout.
fn export(f: &Fixture, extra: &[&str]) -> String {
    let _turn = f.turn();
    let mut args = vec!["export", "--config", f.config()];
    args.extend_from_slice(extra);
    let out = edgewatch(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A line of line protocol split into its parts, honouring backslash escapes and quoted
/// string values: (measurement, tags, fields with their raw values, timestamp).
type Line = (
    String,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    i64,
);

fn parse_lp(line: &str) -> Line {
    let sections = split(line, ' ');
    assert_eq!(
        sections.len(),
        3,
        "measurement+tags, fields, time: {line:?}"
    );
    let key = split(&sections[0], ',');
    let pair = |s: &String| {
        let kv = split(s, '=');
        assert_eq!(kv.len(), 2, "key=value: {s:?} in {line:?}");
        (unescape(&kv[0]), kv[1].clone())
    };
    let tags = key[1..]
        .iter()
        .map(pair)
        .map(|(k, v)| (k, unescape(&v)))
        .collect();
    let fields = split(&sections[1], ',').iter().map(pair).collect();
    let time = sections[2]
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (unescape(&key[0]), tags, fields, time)
}

/// Splits at `separator` where no backslash escapes it and no string is open.
fn split(s: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut escaped, mut quoted) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(String::new());
            continue;
        }
        parts.last_mut().unwrap().push(c);
    }
    assert!(!escaped && !quoted, "unterminated escape or string: {s:?}");
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Splits one CSV line into cells (quoted cells may hold commas and doubled quotes).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[test]
fn line_protocol_export_has_one_parseable_line_per_stored_rollup() {
    let f = fixture();
    let text = export(f, &[]);
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let (measurement, tags, fields, time) = parse_lp(line);
        assert_eq!(measurement, "rollup");
        assert_eq!(tags["gateway"], "gw-export");
        assert_eq!(tags["site"], "plant 3");
        assert_eq!(tags["source"], "sim");
        assert!(fields["count"].ends_with('i'), "{line}");
        assert_eq!(fields["window_secs"], "60i");
        for float in ["mean", "min", "max", "stddev", "first", "last"] {
            fields[float]
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{float} in {line}: {e}"));
        }
        let new = seen.insert((tags["sensor"].clone(), tags["field"].clone(), time));
        assert!(new, "one line per rollup: {line}");
    }
    assert_eq!(seen, f.rollups);
}

#[test]
fn csv_export_has_a_header_and_one_row_per_stored_rollup() {
    let f = fixture();
    let text = export(f, &["--format", "csv"]);
    let mut lines = text.lines();
    let header = csv_cells(lines.next().unwrap());
    assert_eq!(
        header[..6],
        ["sensor", "field", "source", "start", "end", "count"]
    );
    let mut seen = BTreeSet::new();
    for line in lines {
        let cells = csv_cells(line);
        assert_eq!(cells.len(), header.len(), "{line}");
        let start = parse_time(&cells[3]).unwrap();
        assert_eq!(parse_time(&cells[4]), Some(start + WINDOW), "{line}");
        assert!(cells[5].parse::<u64>().unwrap() > 0, "{line}");
        seen.insert((cells[0].clone(), cells[1].clone(), start));
    }
    assert_eq!(seen, f.rollups);
}

#[test]
fn from_and_to_select_rollups_by_window_start() {
    let f = fixture();
    let (from, to) = (f.start + 2 * WINDOW, f.start + 4 * WINDOW);
    let expected: BTreeSet<_> = f
        .rollups
        .iter()
        .filter(|(_, _, start)| from <= *start && *start < to)
        .cloned()
        .collect();
    assert!(!expected.is_empty() && expected.len() < f.rollups.len());
    let args = ["--from", &format_time(from), "--to", &format_time(to)];

    let lp: BTreeSet<_> = export(f, &args)
        .lines()
        .map(parse_lp)
        .map(|(_, tags, _, time)| (tags["sensor"].clone(), tags["field"].clone(), time))
        .collect();
    assert_eq!(lp, expected);

    let csv = export(f, &[&args[..], &["--format", "csv"]].concat());
    assert_eq!(csv.lines().count(), expected.len() + 1, "header and rows");
}

#[test]
fn events_export_writes_every_stored_event_once() {
    let f = fixture();
    let mut ids = BTreeSet::new();
    for line in export(f, &["--what", "events"]).lines() {
        let (measurement, tags, fields, _) = parse_lp(line);
        assert_eq!(measurement, "anomaly");
        for tag in ["gateway", "sensor", "field", "rule", "kind", "severity"] {
            assert!(tags.contains_key(tag), "{tag} in {line}");
        }
        assert!(
            !tags.contains_key("source"),
            "as the forwarder writes it: {line}"
        );
        assert!(fields["message"].starts_with('"'), "{line}");
        let id = fields["id"].trim_end_matches('i').parse::<u64>().unwrap();
        assert!(ids.insert(id), "event {id} twice");
    }
    assert_eq!(ids, f.events);

    let csv = export(f, &["--what", "events", "--format", "csv"]);
    let mut lines = csv.lines();
    let header = csv_cells(lines.next().unwrap());
    let rows: Vec<_> = lines.map(csv_cells).collect();
    assert_eq!(rows.len(), f.events.len());
    assert!(rows.iter().all(|r| r.len() == header.len()));
}

#[test]
fn backlog_export_writes_every_outbox_entry() {
    let f = fixture();
    let lp = export(f, &["--what", "backlog"]);
    assert_eq!(lp.lines().count(), f.outbox);
    let measurements: BTreeSet<_> = lp.lines().map(|l| parse_lp(l).0).collect();
    assert_eq!(
        measurements,
        BTreeSet::from(["anomaly".into(), "rollup".into()])
    );

    let csv = export(f, &["--what", "backlog", "--format", "csv"]);
    let mut lines = csv.lines();
    let header = csv_cells(lines.next().unwrap());
    assert_eq!(header[..4], ["seq", "type", "sensor", "field"]);
    let seqs: Vec<u64> = lines
        .map(|l| {
            let cells = csv_cells(l);
            assert_eq!(cells.len(), header.len(), "{l}");
            cells[0].parse().unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), f.outbox);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
}

#[test]
fn a_bad_config_exits_64_and_a_missing_store_exits_1_without_being_created() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[gateway]\nid = \"x\"\ncolour = \"red\"\n").unwrap();
    let out = edgewatch(&["export", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.colour"));

    let store = dir.path().join("nowhere/edgewatch.redb");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(&store, now_ns(), Some(0), false)).unwrap();
    let out = edgewatch(&["export", "--config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no store at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!store.parent().unwrap().exists(), "nothing may be created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_a_store_that_a_running_daemon_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("edgewatch.redb");
    let text = config_text(&store, now_ns(), None, true);
    let config_path = dir.path().join("edgewatch.toml");
    std::fs::write(&config_path, &text).unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(config::load_str(&text).unwrap(), shutdown.clone())
        .await
        .unwrap();

    let path = config_path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || edgewatch(&["export", "--config", &path]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by a running edgewatch; stop it first or copy the file"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    shutdown.cancel();
    running.wait().await.unwrap();
    let path = config_path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || edgewatch(&["export", "--config", &path]))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "free again once the daemon stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
