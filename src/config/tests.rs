//! Config loading: shipped files, overrides, and the problems reported for bad files.

use std::collections::BTreeMap;
use std::path::Path;

use super::load::load_with_env;
use super::*;

const MINIMAL: &str = r#"
[gateway]
id = "gw"
[[sources]]
type = "sim"
name = "s"
"#;

fn problems(text: &str) -> Vec<String> {
    match load_str(text) {
        Ok(_) => panic!("expected the config to be rejected"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_shipped_config_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load_with_env(&path, Some(BTreeMap::new()))
                .unwrap_or_else(|e| panic!("{} is invalid:\n{e}", path.display()));
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "config/ should hold the reference and the demo config"
    );
}

#[test]
fn defaults_fill_everything_but_the_gateway_id_and_a_source() {
    let c = load_str(MINIMAL).unwrap();
    assert_eq!(c.web.listen, "127.0.0.1:8080");
    assert_eq!(c.store.commit_interval_ms, 200);
    assert_eq!(c.pipeline.window_secs, 60);
    let SourceKind::Sim(sim) = &c.sources[0].kind else {
        panic!("expected a sim source")
    };
    assert_eq!((sim.sensors, sim.interval_ms, sim.seed), (50, 1000, 42));
}

#[test]
fn environment_overrides_nested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let env = BTreeMap::from([
        (
            "EDGEWATCH__WEB__LISTEN".to_string(),
            "127.0.0.1:9000".to_string(),
        ),
        ("EDGEWATCH__STORE__PATH".to_string(), "./x.redb".to_string()),
        (
            "EDGEWATCH__PIPELINE__WINDOW_SECS".to_string(),
            "30".to_string(),
        ),
        ("EDGEWATCH__GATEWAY__ID".to_string(), "007".to_string()),
    ]);
    let c = load_with_env(&path, Some(env)).unwrap();
    assert_eq!(c.web.listen, "127.0.0.1:9000");
    assert_eq!(c.store.path, Path::new("./x.redb"));
    assert_eq!(c.pipeline.window_secs, 30);
    assert_eq!(c.gateway.id, "007", "ids stay strings");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let p = problems(&format!(
        "{MINIMAL}\n[web]\nlisten = \"127.0.0.1:1\"\nport = 3\n[telemetry]\n"
    ));
    assert!(
        p.iter().any(|l| l.starts_with("web.port: unknown field")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.starts_with("telemetry: unknown key")),
        "{p:?}"
    );
}

#[test]
fn unknown_key_inside_a_source_names_the_entry() {
    let p = problems(&format!("{MINIMAL}sensor = 5\n"));
    assert!(
        p.iter()
            .any(|l| l.starts_with("sources[0].sensor: unknown field")),
        "{p:?}"
    );
}

#[test]
fn wrong_types_are_rejected_with_their_path() {
    let p = problems(&format!(
        "{MINIMAL}sensors = \"many\"\n[pipeline]\nwindow_secs = [60]\n"
    ));
    assert!(
        p.iter().any(|l| l.starts_with("sources[0].sensors: ")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.starts_with("pipeline.window_secs: ")),
        "{p:?}"
    );
    assert_eq!(
        p.len(),
        2,
        "a source that fails to parse is not also reported missing: {p:?}"
    );
}

#[test]
fn a_store_cache_under_one_mib_is_rejected() {
    assert_eq!(
        load_str(MINIMAL).unwrap().store.cache_bytes,
        DEFAULT_STORE_CACHE_BYTES
    );
    let small = problems(&format!("{MINIMAL}[store]\ncache_bytes = 65536\n"));
    assert_eq!(
        small,
        vec!["store.cache_bytes: must be at least 1048576 (1 MiB)"]
    );
    let ok = load_str(&format!("{MINIMAL}[store]\ncache_bytes = 1048576\n")).unwrap();
    assert_eq!(ok.store.cache_bytes, 1 << 20);
}

#[test]
fn rolling_spans_longer_than_seven_days_are_rejected() {
    let week = 7 * 86_400;
    let ok = format!(
        "{MINIMAL}[pipeline]\nrolling_secs = {week}\n[[rules]]\nmatch = \"*\"\nkind = \"zscore\"\nwindow_secs = {week}\n"
    );
    assert_eq!(load_str(&ok).unwrap().pipeline.rolling_secs(), week);
    let p = problems(&ok.replace(&week.to_string(), &(week + 1).to_string()));
    assert_eq!(
        p,
        vec![
            "pipeline.rolling_secs: must be at most 604800 (7 days); it defaults to window_secs",
            "rules[0].window_secs: must be at most 604800 (7 days)",
        ]
    );
}

#[test]
fn zero_and_negative_intervals_are_rejected() {
    let zero = problems(&format!("{MINIMAL}interval_ms = 0\n"));
    assert_eq!(zero, vec!["sources[0].interval_ms: must be greater than 0"]);
    let negative = problems(&format!("{MINIMAL}interval_ms = -5\n"));
    assert!(
        negative[0].starts_with("sources[0].interval_ms: "),
        "{negative:?}"
    );
}

#[test]
fn bad_glob_is_rejected_with_the_rule_path() {
    let p = problems(&format!(
        "{MINIMAL}[[rules]]\nmatch = \"*/[temp\"\nkind = \"stuck\"\nraise_secs = 5\n"
    ));
    assert!(
        p.iter().any(|l| l.starts_with("rules[0].match: bad glob")),
        "{p:?}"
    );
}

#[test]
fn missing_file_is_reported() {
    let err = load(Path::new("/nonexistent/edgewatch.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config: cannot read /nonexistent/edgewatch.toml"),
        "{err}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = r#"
[gateway]
id = ""
[web]
listen = "nowhere"
[[sources]]
type = "sim"
name = "a"
interval_ms = 0
[[sources]]
type = "modem"
name = "b"
[[rules]]
match = "*/x"
kind = "limit"
"#;
    let p = problems(text);
    for expected in [
        "gateway.id: must not be empty",
        "web.listen: `nowhere` is not an address such as 127.0.0.1:8080",
        "sources[0].interval_ms: must be greater than 0",
        "sources[1].type: unknown source type `modem` (expected one of: sim, mqtt, http, modbus_tcp, modbus_rtu)",
        "rules[0].max: a limit rule needs `max`, `min` or both",
    ] {
        assert!(
            p.iter().any(|l| l == expected),
            "missing {expected:?} in {p:?}"
        );
    }
}

#[test]
fn missing_gateway_id_and_source_are_reported() {
    let p = problems("[web]\nlisten = \"127.0.0.1:1\"\n");
    assert!(
        p.iter().any(|l| l.starts_with("gateway.id: missing")),
        "{p:?}"
    );
}

#[test]
fn toml_syntax_errors_are_reported() {
    let p = problems("[gateway\nid = 1");
    assert!(p[0].starts_with("config: "), "{p:?}");
}

#[test]
fn an_entry_that_fails_to_parse_does_not_shift_the_paths_of_later_ones() {
    let text = r#"
[gateway]
id = "gw"
[[sources]]
type = "modem"
name = "a"
[[sources]]
type = "sim"
name = "b"
interval_ms = 0
[[rules]]
match = "*/x"
kind = "nope"
[[rules]]
match = "*/x"
kind = "limit"
"#;
    let p = problems(text);
    for expected in [
        "sources[1].interval_ms: must be greater than 0",
        "rules[1].max: a limit rule needs `max`, `min` or both",
    ] {
        assert!(
            p.iter().any(|l| l == expected),
            "missing {expected:?} in {p:?}"
        );
    }
}

#[test]
fn the_operator_token_is_read_from_one_place_and_must_be_a_usable_bearer_token() {
    let web = |keys: &str| format!("{MINIMAL}\n[web]\n{keys}\n");
    let c = load_str(&web("operator_token = \"op-123\"")).unwrap();
    assert_eq!(
        c.web.operator_token().unwrap(),
        Some(Secret("op-123".into()))
    );
    assert_eq!(
        load_str(MINIMAL).unwrap().web.operator_token().unwrap(),
        None
    );
    assert!(
        !format!("{:?}", c.web).contains("op-123"),
        "the token is not in the config's Debug output"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let c = load_str(&web(&format!(
        "operator_token_file = \"{}\"",
        file.display()
    )))
    .unwrap();
    assert_eq!(
        c.web.operator_token().unwrap(),
        Some(Secret("from-file".into()))
    );

    let twice = problems(&web(&format!(
        "operator_token = \"a\"\noperator_token_file = \"{}\"",
        file.display()
    )));
    assert!(
        twice
            .iter()
            .any(|p| p.starts_with("web.operator_token: give only one")),
        "{twice:?}"
    );
    std::fs::write(&file, "\n").unwrap();
    let empty = problems(&web(&format!(
        "operator_token_file = \"{}\"",
        file.display()
    )));
    assert!(
        empty
            .iter()
            .any(|p| p.starts_with("web.operator_token: is empty")),
        "{empty:?}"
    );
    let spaced = problems(&web("operator_token = \"two words\""));
    assert!(
        spaced.iter().any(|p| p.contains("visible ASCII")),
        "{spaced:?}"
    );
    assert!(
        !spaced.iter().any(|p| p.contains("two words")),
        "the token is not echoed"
    );
    let unset = problems(&web(
        "operator_token_env = \"EDGEWATCH_TEST_UNSET_OPERATOR_TOKEN\"",
    ));
    assert!(unset.iter().any(|p| p.contains("is not set")), "{unset:?}");
}
