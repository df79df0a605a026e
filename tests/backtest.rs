//! `edgewatch backtest` on small labelled files made here, whose alarms and scores are
//! worked out by hand: a limit rule on one field, SKAB's layout, a directory of two files
//! (counts add up), the alarm and event CSVs, NAB-style label windows, and bad input.

use std::path::Path;
use std::process::Command;

use edgewatch::backtest::{self, BacktestArgs, Format};
use edgewatch::config;

/// Values and labels of the hand-worked file. With `max = 100`, `max_clear = 95` and no
/// minimum duration or hold-off, the alarm is on exactly where the value is 120: rows 3, 4
/// and 7. Warm-up 2 leaves rows 2..=11 scored:
///   row    2 3 4 5 6 7 8 9 10 11
///   label  0 1 1 1 0 0 1 1 0  0
///   alarm  0 1 1 0 0 1 0 0 0  0
/// TP 2 (3, 4), FP 1 (7), FN 3 (5, 8, 9), TN 4 (2, 6, 10, 11): F1 = 4/8, FAR = 1/5,
/// MAR = 3/5; two events (rows 3 and 7); episode 3..=5 seen at once, 8..=9 missed.
const VALUES: [f64; 12] = [
    50., 50., 50., 120., 120., 50., 50., 120., 50., 50., 50., 50.,
];
const LABELS: [u8; 12] = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0];

const RULES: &str = r#"
[gateway]
id = "gw-backtest"
[store]
path = "/nonexistent/unused.redb"
[[rules]]
name = "hot"
match = "*/temp"
kind = "limit"
max = 100.0
max_clear = 95.0
"#;

fn write_skab(path: &Path) {
    let mut text = String::from("datetime;temp;other;anomaly;changepoint\n");
    for (i, (v, l)) in VALUES.iter().zip(LABELS).enumerate() {
        text.push_str(&format!("2026-01-01 00:00:{i:02};{v};1.5;{l}.0;0.0\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A rules-only config (no sources), as `edgewatch backtest` loads it.
fn profile(dir: &Path, text: &str) -> config::Config {
    let path = dir.join("profile.toml");
    std::fs::write(&path, text).unwrap();
    config::load_profile(&path).unwrap()
}

fn args(config: &Path, input: &Path) -> BacktestArgs {
    BacktestArgs {
        config: config.to_path_buf(),
        input: input.to_path_buf(),
        format: Format::Skab,
        labels: None,
        warmup_rows: Some(2),
        sensor: None,
        output: None,
    }
}

#[test]
fn a_hand_worked_file_scores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("0.csv");
    write_skab(&file);
    let config = profile(dir.path(), RULES);
    let mut out = Vec::new();
    let report = backtest::run(&config, &args(Path::new("unused"), &file), &mut out).unwrap();
    let c = report.total;
    assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 1, 3, 4));
    assert_eq!(c.f1(), Some(0.5));
    assert_eq!(c.far(), Some(0.2));
    assert_eq!(c.mar(), Some(0.6));
    let score = &report.files[0].score;
    assert_eq!(score.events, 2);
    assert_eq!(score.episodes.len(), 2);
    assert_eq!(score.episodes[0].delay_rows(), Some(0));
    assert_eq!(score.episodes[1].detected, None);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("F1 0.500"), "{text}");
    assert!(text.contains("FAR 20.0 %"), "{text}");
    assert!(text.contains("MAR 60.0 %"), "{text}");
    assert!(text.contains("0 rows / 0 s, missed"), "{text}");
}

#[test]
fn a_directory_adds_up_its_files_and_the_cli_writes_alarms_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("runs");
    std::fs::create_dir(&data).unwrap();
    write_skab(&data.join("2.csv"));
    write_skab(&data.join("10.csv"));
    std::fs::write(data.join("notes.txt"), "not a recording").unwrap();
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, RULES).unwrap();
    let alarms = dir.path().join("alarms.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args([
            "backtest",
            "--format",
            "skab",
            "--warmup-rows",
            "2",
            "--config",
        ])
        .arg(&config)
        .arg("--input")
        .arg(&data)
        .arg("--output")
        .arg(&alarms)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("total: 2 files, 20 rows scored"),
        "{stdout}"
    );
    assert!(stdout.contains("TP 4 FP 2 FN 6 TN 8"), "{stdout}");
    assert!(stdout.contains("F1 0.500"), "{stdout}");
    // Natural order: 2.csv before 10.csv.
    let first = stdout.find("2.csv").unwrap();
    assert!(first < stdout.find("10.csv").unwrap(), "{stdout}");

    let rows = std::fs::read_to_string(&alarms).unwrap();
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "file,row,time,alarm,label");
    assert_eq!(lines.len(), 1 + 24);
    assert_eq!(lines[4], "2.csv,3,2026-01-01T00:00:03Z,1,1");
    assert_eq!(lines[6], "2.csv,5,2026-01-01T00:00:05Z,0,1");
    let events = std::fs::read_to_string(dir.path().join("alarms.events.csv")).unwrap();
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(events.len(), 1 + 4, "{events:?}");
    assert!(
        events[1].starts_with("2.csv,1,2,temp,hot,limit,"),
        "{events:?}"
    );
    assert!(
        events[1].contains("2026-01-01T00:00:03Z,2026-01-01T00:00:05Z"),
        "{events:?}"
    );
}

#[test]
fn label_windows_mark_rows_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine.csv");
    let mut text = String::from("timestamp,value\n");
    for (i, v) in VALUES.iter().enumerate() {
        text.push_str(&format!("2026-01-01 00:{i:02}:00,{v}\n"));
    }
    std::fs::write(&file, text).unwrap();
    // The windows hold rows 3..=5 and 8..=9: the same labels as LABELS.
    let labels = dir.path().join("labels.json");
    std::fs::write(
        &labels,
        r#"{"realKnownCause/machine.csv": [["2026-01-01 00:03:00.000000", "2026-01-01 00:05:00.000000"], ["2026-01-01 00:08:00", "2026-01-01 00:09:00"]]}"#,
    )
    .unwrap();
    let config = profile(dir.path(), &RULES.replace("*/temp", "*/value"));
    let mut run_args = args(Path::new("unused"), &file);
    run_args.format = Format::Nab;
    run_args.labels = Some(labels);
    let report = backtest::run(&config, &run_args, &mut Vec::new()).unwrap();
    let c = report.total;
    assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 1, 3, 4));
}

#[test]
fn bad_input_is_refused_naming_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(
        &file,
        "datetime;temp;anomaly\n2026-01-01 00:00:00;50;0\n2026-01-01 00:00:01;hot;0\n",
    )
    .unwrap();
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, RULES).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["backtest", "--format", "skab", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: \"hot\" in column \"temp\" is not a number"),
        "{stderr}"
    );
}

/// The shipped pump profile loads as a backtest profile, and its rule is the multivariate one.
#[test]
fn the_shipped_pump_profile_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pump.toml");
    let config = config::load_profile(&path).unwrap();
    assert_eq!(config.rules.len(), 1);
    assert_eq!(config.rules[0].kind.name(), "multivariate");
}

/// A machine whose two signals move together: after the warm-up, one of them departs from
/// the other while both stay within their own ranges. The multivariate rule raises once
/// during the departure and clears once after it; per-field limits would see nothing.
#[test]
fn a_multivariate_rule_raises_once_on_a_broken_correlation_and_clears_after() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pump.csv");
    let mut text = String::from("datetime;flow;pressure;anomaly\n");
    // Deterministic wobble shared by both signals, plus a little noise of their own.
    let wobble = |i: usize| ((i * 37 % 101) as f64 / 101.0 - 0.5) * 4.0;
    let noise = |i: usize, k: usize| ((i * 7 + k * 13) % 17) as f64 / 17.0 - 0.5;
    for i in 0..900 {
        let flow = 100.0 + wobble(i) + 0.05 * noise(i, 0);
        let mut pressure = 3.0 + 0.03 * wobble(i) + 0.0015 * noise(i, 1);
        let broken = (600..700).contains(&i);
        if broken {
            // Pressure falls by 5 % while flow keeps its level.
            pressure -= 0.15;
        }
        let t = 1_767_225_600 + i as i64; // 2026-01-01T00:00:00Z + i s
        text.push_str(&format!("{t};{flow};{pressure};{}\n", u8::from(broken)));
    }
    std::fs::write(&file, text).unwrap();
    let config = profile(
        dir.path(),
        r#"
[gateway]
id = "gw-backtest"
[[rules]]
name = "behaviour"
match = "*"
kind = "multivariate"
fields = ["flow", "pressure"]
warmup_rows = 300
skip_rows = 50
holdoff_secs = 14
"#,
    );
    let mut run_args = args(Path::new("unused"), &file);
    run_args.format = Format::Csv;
    run_args.warmup_rows = Some(300);
    let report = backtest::run(&config, &run_args, &mut Vec::new()).unwrap();
    let score = &report.files[0].score;
    assert_eq!(score.events, 1, "{score:?}");
    let c = report.total;
    assert!(c.tp >= 80, "{c:?}");
    // The alarm outlasts the departure by the smoothing (span 20 rows) and the hold-off
    // (14 s), and then clears: the rows after it (700..900) are mostly quiet.
    assert!(c.fp <= 40, "{c:?}");
    assert!(score.alarmed_rows < 150, "{score:?}");
    assert!(
        score.episodes[0].delay_rows().is_some_and(|d| d <= 10),
        "{score:?}"
    );
}
