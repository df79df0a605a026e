//! The HQ Grafana dashboard (`grafana/edgewatch.json`) names only what the forwarder writes.
//!
//! Every InfluxQL query of the dashboard (panel targets, annotations, template variables) is
//! parsed for the measurement it reads, the tag keys it filters, groups or lists, and the
//! field names it selects. Those are checked against the measurements, tags and fields of
//! real points: a rollup and an anomaly event (raised and cleared) built as outbox entries,
//! turned into points by `forward::points::outbox_point` (what the forwarder sends) and
//! encoded with `forward::line_protocol::encode`, then read back from the produced lines.
//! No list of names is copied here by hand.
//!
//! The parser is strict on purpose: every identifier must be double-quoted, and a bare word
//! that is not an InfluxQL keyword or a known function is an error, so a name cannot slip past
//! the check by being written unquoted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use edgewatch::forward::line_protocol::{Precision, encode};
use edgewatch::forward::points::{PointTags, outbox_point};
use edgewatch::model::{AnomalyEvent, NS_PER_SEC, Quality, Severity, Stats, parse_time};
use edgewatch::store::OutboxEntry;
use serde_json::Value;

/// What the forwarder writes, per measurement.
#[derive(Debug, Default)]
struct Schema {
    tags: BTreeSet<String>,
    fields: BTreeSet<String>,
}

/// Measurement → tag keys and field keys of the points the forwarder really sends.
fn forwarded_schema() -> BTreeMap<String, Schema> {
    let tags = PointTags {
        gateway: "gw-01".into(),
        static_tags: BTreeMap::new(),
    };
    let t0 = parse_time("2026-11-26T10:00:00Z").unwrap();
    let mut stats = Stats::of(t0 + NS_PER_SEC, 70.5, Quality::default());
    stats.push(t0 + 30 * NS_PER_SEC, 72.5, Quality::default());
    let rollup = OutboxEntry::Rollup {
        sensor: "p-101".into(),
        field: "temperature".into(),
        source: "plant-broker".into(),
        start: t0,
        length_ns: 60 * NS_PER_SEC,
        stats,
        tags: Default::default(),
    };
    let event = |cleared: bool| {
        OutboxEntry::Event(AnomalyEvent {
            id: 7,
            sensor: "p-101".into(),
            field: "temperature".into(),
            rule: "overtemperature".into(),
            kind: "limit".into(),
            severity: Severity::Critical,
            raised_at: t0 + 5 * NS_PER_SEC,
            cleared_at: cleared.then_some(t0 + 90 * NS_PER_SEC),
            value: 101.0,
            score: 101.0,
            peak_score: 104.0,
            peak_value: 104.0,
            peak_at: t0 + 20 * NS_PER_SEC,
            message: "temperature 101 above 100".into(),
        })
    };
    let mut text = String::new();
    for entry in [rollup, event(false), event(true)] {
        let point = outbox_point(&entry, &tags).expect("a point for every entry");
        encode(&point, Precision::Ns, &mut text).expect("encodable");
    }
    let mut schema: BTreeMap<String, Schema> = BTreeMap::new();
    for line in text.lines() {
        let (measurement, line_tags, fields) = parse_line(line);
        let entry = schema.entry(measurement).or_default();
        entry.tags.extend(line_tags);
        entry.fields.extend(fields);
    }
    schema
}

/// Measurement, tag keys and field keys of one encoded line. The sample values above hold no
/// character that line protocol escapes in names, which this asserts; string field values
/// (quoted, with spaces) are skipped whole.
fn parse_line(line: &str) -> (String, Vec<String>, Vec<String>) {
    let (key, rest) = line.split_once(' ').expect("a line has a field set");
    assert!(!key.contains('\\'), "unexpected escape in {line:?}");
    let mut parts = key.split(',');
    let measurement = parts.next().unwrap().to_string();
    let tags = parts
        .map(|kv| kv.split_once('=').expect("tag=value").0.to_string())
        .collect();
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in rest.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            current.push(c);
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                current.push(c);
            }
            ',' | ' ' => {
                fields.push(current.split_once('=').expect("field=value").0.to_string());
                current.clear();
                if c == ' ' {
                    break; // the timestamp follows
                }
            }
            _ => current.push(c),
        }
    }
    (measurement, tags, fields)
}

/// How a query uses a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// Inside a function call of the SELECT list (`mean("mean")`): must be a field.
    Field,
    /// In GROUP BY or `SHOW TAG VALUES ... WITH KEY`: must be a tag.
    Tag,
    /// Bare in the SELECT list or compared in WHERE: a field or a tag.
    FieldOrTag,
}

/// The names one query uses.
#[derive(Debug, PartialEq)]
struct QueryNames {
    measurement: String,
    names: Vec<(Use, String)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// `"name"`
    Ident(String),
    /// An unquoted word (keyword, function, `time`), kept as written.
    Word(String),
    /// `$name` or `${name}` (Grafana variable).
    Var(String),
    /// `'text'`
    Str,
    /// `/regex/`
    Regex,
    Number,
    /// Punctuation and operators: `( ) , = =~ !~ != < > <= >= * / + -`.
    Op(String),
}

fn tokenize(q: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = q.chars().collect();
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated {c} in {q:?}")),
                    Some('\\') => {
                        text.push(*chars.get(i + 1).unwrap_or(&'\\'));
                        i += 2;
                    }
                    Some(&d) if d == c => {
                        i += 1;
                        break;
                    }
                    Some(&d) => {
                        text.push(d);
                        i += 1;
                    }
                }
            }
            out.push(if c == '"' {
                Token::Ident(text)
            } else {
                Token::Str
            });
        } else if c == '/' && matches!(out.last(), Some(Token::Op(op)) if op == "=~" || op == "!~")
        {
            i += 1;
            while i < chars.len() && chars[i] != '/' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            if i >= chars.len() {
                return Err(format!("unterminated regex in {q:?}"));
            }
            i += 1;
            out.push(Token::Regex);
        } else if c == '$' {
            let mut name = String::new();
            i += 1;
            let braced = chars.get(i) == Some(&'{');
            if braced {
                i += 1;
            }
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                name.push(chars[i]);
                i += 1;
            }
            if braced {
                if chars.get(i) != Some(&'}') {
                    return Err(format!("unterminated ${{ in {q:?}"));
                }
                i += 1;
            }
            out.push(Token::Var(name));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if c.is_alphabetic() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                i += 1;
            }
            out.push(Token::Word(word));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            if ["=~", "!~", "!=", "<=", ">=", "<>"].contains(&two.as_str()) {
                out.push(Token::Op(two));
                i += 2;
            } else if "(),=<>*/+-;".contains(c) {
                out.push(Token::Op(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected {c:?} in {q:?}"));
            }
        }
    }
    Ok(out)
}

/// InfluxQL functions the dashboard may call.
const FUNCTIONS: &[&str] = &["mean", "min", "max", "sum", "count", "last", "first"];
/// Keywords allowed as bare words (compared case-insensitively).
const KEYWORDS: &[&str] = &[
    "select", "from", "where", "and", "or", "group", "by", "order", "desc", "asc", "limit", "as",
    "time", "fill", "none", "null", "previous", "linear", "true", "false", "show", "tag", "values",
    "with", "key", "now",
];

fn is_word(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

/// Parses the measurement, tag keys and field names one InfluxQL query uses.
fn query_names(q: &str) -> Result<QueryNames, String> {
    let tokens = tokenize(q)?;
    for t in &tokens {
        if let Token::Word(w) = t {
            let lower = w.to_ascii_lowercase();
            if !FUNCTIONS.contains(&lower.as_str()) && !KEYWORDS.contains(&lower.as_str()) {
                return Err(format!(
                    "bare word {w:?} in {q:?}: identifiers must be double-quoted"
                ));
            }
        }
    }
    let mut names = Vec::new();
    let measurement;
    if is_word(tokens.first(), "show") {
        // SHOW TAG VALUES FROM "m" WITH KEY = "k" [WHERE ...]
        let expect = ["show", "tag", "values", "from"];
        for (i, w) in expect.iter().enumerate() {
            if !is_word(tokens.get(i), w) {
                return Err(format!("expected SHOW TAG VALUES FROM in {q:?}"));
            }
        }
        measurement = match tokens.get(4) {
            Some(Token::Ident(m)) => m.clone(),
            _ => return Err(format!("no quoted measurement after FROM in {q:?}")),
        };
        if !(is_word(tokens.get(5), "with")
            && is_word(tokens.get(6), "key")
            && tokens.get(7) == Some(&Token::Op("=".into())))
        {
            return Err(format!("expected WITH KEY = in {q:?}"));
        }
        match tokens.get(8) {
            Some(Token::Ident(k)) => names.push((Use::Tag, k.clone())),
            _ => return Err(format!("no quoted tag key after WITH KEY = in {q:?}")),
        }
        where_names(&tokens[9..], q, &mut names)?;
    } else if is_word(tokens.first(), "select") {
        let from = tokens
            .iter()
            .position(|t| is_word(Some(t), "from"))
            .ok_or_else(|| format!("no FROM in {q:?}"))?;
        measurement = match tokens.get(from + 1) {
            Some(Token::Ident(m)) => m.clone(),
            _ => return Err(format!("no quoted measurement after FROM in {q:?}")),
        };
        // SELECT list: names in a call are fields; bare ones fields or tags; after AS, aliases.
        let mut depth = 0usize;
        let mut selected_field = false;
        for (i, t) in tokens[1..from].iter().enumerate() {
            match t {
                Token::Op(op) if op == "(" => depth += 1,
                Token::Op(op) if op == ")" => depth = depth.saturating_sub(1),
                Token::Ident(name) if !is_word(tokens.get(i), "as") => {
                    if depth > 0 {
                        names.push((Use::Field, name.clone()));
                        selected_field = true;
                    } else {
                        names.push((Use::FieldOrTag, name.clone()));
                    }
                }
                _ => {}
            }
        }
        if !selected_field && !names.iter().any(|(u, _)| *u == Use::FieldOrTag) {
            return Err(format!("SELECT names no field in {q:?}"));
        }
        let rest = &tokens[from + 2..];
        let group = rest
            .iter()
            .position(|t| is_word(Some(t), "group"))
            .unwrap_or(rest.len());
        let order = rest
            .iter()
            .position(|t| is_word(Some(t), "order") || is_word(Some(t), "limit"))
            .unwrap_or(rest.len());
        let where_end = group.min(order);
        where_names(&rest[..where_end], q, &mut names)?;
        if group < rest.len() {
            // GROUP BY time(...), "tag", ... fill(...)
            let mut depth = 0usize;
            for t in &rest[group..order.max(group)] {
                match t {
                    Token::Op(op) if op == "(" => depth += 1,
                    Token::Op(op) if op == ")" => depth = depth.saturating_sub(1),
                    Token::Ident(name) if depth == 0 => names.push((Use::Tag, name.clone())),
                    _ => {}
                }
            }
        }
    } else {
        return Err(format!("neither SELECT nor SHOW TAG VALUES: {q:?}"));
    }
    Ok(QueryNames { measurement, names })
}

/// Names in a WHERE clause (`tokens` starts at WHERE, or is empty): each quoted name must be
/// compared with an operator.
fn where_names(tokens: &[Token], q: &str, names: &mut Vec<(Use, String)>) -> Result<(), String> {
    if tokens.is_empty() {
        return Ok(());
    }
    if !is_word(tokens.first(), "where") {
        return Err(format!("expected WHERE in {q:?}"));
    }
    for (i, t) in tokens.iter().enumerate() {
        if let Token::Ident(name) = t {
            match tokens.get(i + 1) {
                Some(Token::Op(op)) if op != "(" && op != ")" && op != "," => {
                    names.push((Use::FieldOrTag, name.clone()))
                }
                _ => return Err(format!("{name:?} not compared in WHERE of {q:?}")),
            }
        }
    }
    Ok(())
}

/// Every name of `names` that the forwarder does not write, as sentences.
fn check(query: &str, names: &QueryNames, schema: &BTreeMap<String, Schema>) -> Vec<String> {
    let Some(m) = schema.get(&names.measurement) else {
        return vec![format!(
            "measurement {:?} is not written by the forwarder (it writes {:?}): {query}",
            names.measurement,
            schema.keys().collect::<Vec<_>>()
        )];
    };
    names
        .names
        .iter()
        .filter(|(how, name)| match how {
            Use::Field => !m.fields.contains(name),
            Use::Tag => !m.tags.contains(name),
            Use::FieldOrTag => !m.fields.contains(name) && !m.tags.contains(name),
        })
        .map(|(how, name)| {
            format!(
                "{how:?} {name:?} is not written to {:?} (tags {:?}, fields {:?}): {query}",
                names.measurement, m.tags, m.fields
            )
        })
        .collect()
}

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/edgewatch.json");
    let text = std::fs::read_to_string(&path).expect("read grafana/edgewatch.json");
    serde_json::from_str(&text).expect("grafana/edgewatch.json is valid JSON")
}

/// Every query of the dashboard, with where it is (for messages).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    target["rawQuery"],
                    Value::Bool(true),
                    "panel {title:?}: every target is a raw InfluxQL query"
                );
                let q = target["query"].as_str().expect("a target has a query");
                out.push((format!("panel {title:?}"), q.to_string()));
            }
            panels(&panel["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for a in dash["annotations"]["list"].as_array().unwrap() {
        if a["builtIn"] == 1 {
            continue;
        }
        let name = a["name"].as_str().unwrap_or("?");
        let q = a["target"]["query"]
            .as_str()
            .expect("an annotation has a target query");
        out.push((format!("annotation {name:?}"), q.to_string()));
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let name = v["name"].as_str().unwrap_or("?");
            let q = v["query"].as_str().expect("a query variable has a query");
            out.push((format!("variable {name:?}"), q.to_string()));
        }
    }
    out
}

#[test]
fn the_forwarder_writes_the_names_this_test_derives() {
    // A sanity check of the derivation itself, not a second source of truth: the two
    // measurements exist and hold the names the dashboard's main panels rest on.
    let schema = forwarded_schema();
    assert_eq!(
        schema.keys().collect::<Vec<_>>(),
        ["anomaly", "rollup"],
        "{schema:?}"
    );
    assert!(schema["rollup"].fields.contains("mean"), "{schema:?}");
    assert!(schema["rollup"].tags.contains("gateway"), "{schema:?}");
    assert!(
        schema["anomaly"].fields.contains("cleared_at"),
        "{schema:?}"
    );
    assert!(
        !schema["anomaly"].tags.contains("source"),
        "outbox events carry no source tag: {schema:?}"
    );
}

#[test]
fn every_dashboard_query_names_only_what_the_forwarder_writes() {
    let schema = forwarded_schema();
    let dash = dashboard();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 8, "found only {queries:?}");
    let mut problems = Vec::new();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, q) in &queries {
        match query_names(q) {
            Ok(names) => {
                for p in check(q, &names, &schema) {
                    problems.push(format!("{place}: {p}"));
                }
                used.entry(names.measurement.clone())
                    .or_default()
                    .extend(names.names.iter().map(|(_, n)| n.clone()));
            }
            Err(e) => problems.push(format!("{place}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboard shows both measurements, filtered by gateway and sensor.
    for m in ["rollup", "anomaly"] {
        let names = used.get(m).unwrap_or_else(|| panic!("no query reads {m}"));
        assert!(
            names.contains("gateway") && names.contains("sensor"),
            "{m}: {names:?}"
        );
    }
}

#[test]
fn the_dashboard_is_an_importable_influxql_dashboard_with_the_variables() {
    let dash = dashboard();
    let input = &dash["__inputs"][0];
    assert_eq!(input["name"], "DS_INFLUXDB");
    assert_eq!(input["pluginId"], "influxdb");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["gateway", "sensor", "field"]);
    // Every data source reference is the imported one.
    fn datasources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    out.push(ds);
                }
                map.values().for_each(|x| datasources(x, out));
            }
            Value::Array(list) => list.iter().for_each(|x| datasources(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    datasources(&dash["panels"], &mut all);
    datasources(&dash["templating"], &mut all);
    for ds in all {
        assert_eq!(ds["uid"], "${DS_INFLUXDB}", "{ds}");
        assert_eq!(ds["type"], "influxdb", "{ds}");
    }
    let annotations = dash["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations.iter().any(|a| a["target"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("\"anomaly\""))),
        "anomaly events are annotations"
    );
}

/// The column names a SELECT query answers with (besides `time`): an item's `AS` alias, else
/// its name when it is a bare name, else the function's name (InfluxQL's default).
fn select_columns(q: &str) -> Vec<String> {
    let tokens = tokenize(q).unwrap();
    let from = tokens
        .iter()
        .position(|t| is_word(Some(t), "from"))
        .unwrap();
    let mut items: Vec<Vec<Token>> = vec![Vec::new()];
    let mut depth = 0usize;
    for t in &tokens[1..from] {
        match t {
            Token::Op(op) if op == "(" => depth += 1,
            Token::Op(op) if op == ")" => depth -= 1,
            Token::Op(op) if op == "," && depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ => {}
        }
        items.last_mut().unwrap().push(t.clone());
    }
    items
        .iter()
        .map(|item| {
            let alias = item
                .iter()
                .position(|t| is_word(Some(t), "as"))
                .and_then(|i| item.get(i + 1));
            match (alias, item.as_slice()) {
                (Some(Token::Ident(a)), _) => a.clone(),
                (_, [Token::Ident(name)]) => name.clone(),
                (_, [Token::Word(function), ..]) => function.clone(),
                _ => panic!("cannot name a column of {item:?} in {q}"),
            }
        })
        .collect()
}

/// The tags a SELECT query groups by.
fn group_tags(q: &str) -> Vec<String> {
    let tokens = tokenize(q).unwrap();
    let Some(group) = tokens.iter().position(|t| is_word(Some(t), "group")) else {
        return Vec::new();
    };
    let mut depth = 0usize;
    let mut out = Vec::new();
    for t in &tokens[group..] {
        match t {
            Token::Op(op) if op == "(" => depth += 1,
            Token::Op(op) if op == ")" => depth -= 1,
            Token::Ident(name) if depth == 0 => out.push(name.clone()),
            _ => {}
        }
    }
    out
}

#[test]
fn columns_that_the_dashboard_refers_to_are_columns_its_queries_answer() {
    let dash = dashboard();
    // Annotations: the title, text, tags and end-time columns.
    for a in dash["annotations"]["list"].as_array().unwrap() {
        let Some(q) = a["target"]["query"].as_str() else {
            continue;
        };
        let columns = select_columns(q);
        let target = &a["target"];
        let mut named: Vec<&str> = ["titleColumn", "textColumn", "timeEndColumn"]
            .iter()
            .filter_map(|k| target[*k].as_str())
            .filter(|c| !c.is_empty())
            .collect();
        named.extend(
            target["tagsColumn"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter(|c| !c.is_empty()),
        );
        assert!(named.len() >= 3, "{target}");
        for c in named {
            assert!(
                columns.iter().any(|x| x == c),
                "annotation column {c:?} not in {columns:?}: {q}"
            );
        }
    }
    // Panels: `$tag_X` aliases name a grouped tag; overrides by name and `fillBelowTo` name a
    // column of the panel's queries.
    fn walk(list: &Value) {
        for panel in list.as_array().into_iter().flatten() {
            let mut columns = Vec::new();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let q = target["query"].as_str().unwrap();
                columns.extend(select_columns(q));
                let alias = target["alias"].as_str().unwrap_or("");
                for part in alias.split('$').skip(1) {
                    if let Some(rest) = part.strip_prefix("tag_") {
                        let tag: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        assert!(group_tags(q).contains(&tag), "alias {alias:?}: {q}");
                    }
                }
            }
            for o in panel["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if o["matcher"]["id"] == "byName" {
                    let name = o["matcher"]["options"].as_str().unwrap();
                    assert!(
                        columns.iter().any(|c| c == name),
                        "override {name:?} not in {columns:?}"
                    );
                }
                for p in o["properties"].as_array().into_iter().flatten() {
                    if p["id"] == "custom.fillBelowTo" {
                        let name = p["value"].as_str().unwrap();
                        assert!(
                            columns.iter().any(|c| c == name),
                            "fillBelowTo {name:?} not in {columns:?}"
                        );
                    }
                }
            }
            walk(&panel["panels"]);
        }
    }
    walk(&dash["panels"]);
    assert_eq!(
        select_columns(
            r#"SELECT mean("mean") AS "m", last("x"), "y", "z" / 2 AS "h" FROM "rollup""#
        ),
        ["m", "last", "y", "h"]
    );
}

#[test]
fn the_check_refuses_names_the_forwarder_does_not_write() {
    let schema = forwarded_schema();
    let refused = |q: &str| -> bool {
        match query_names(q) {
            Ok(names) => !check(q, &names, &schema).is_empty(),
            Err(_) => true,
        }
    };
    let good = r#"SELECT mean("mean") AS "mean" FROM "rollup" WHERE "gateway" =~ /^$gateway$/ AND $timeFilter GROUP BY time($__interval), "sensor" fill(none)"#;
    assert!(!refused(good), "{:?}", query_names(good));
    assert_eq!(
        query_names(good).unwrap(),
        QueryNames {
            measurement: "rollup".into(),
            names: vec![
                (Use::Field, "mean".into()),
                (Use::FieldOrTag, "gateway".into()),
                (Use::Tag, "sensor".into()),
            ],
        }
    );
    for bad in [
        // a field the forwarder does not write
        r#"SELECT mean("average") FROM "rollup" WHERE $timeFilter"#,
        // a field of the other measurement
        r#"SELECT last("peak_score") FROM "rollup" WHERE $timeFilter"#,
        // a misspelt tag in WHERE, GROUP BY and SHOW TAG VALUES
        r#"SELECT mean("mean") FROM "rollup" WHERE "gatway" = 'gw' AND $timeFilter"#,
        r#"SELECT mean("mean") FROM "rollup" WHERE $timeFilter GROUP BY time(1m), "sensor_id""#,
        r#"SHOW TAG VALUES FROM "rollup" WITH KEY = "device""#,
        // events carry no source tag
        r#"SELECT "message" FROM "anomaly" WHERE $timeFilter GROUP BY "source""#,
        // a tag used as a field inside a function
        r#"SELECT count("sensor") FROM "rollup" WHERE $timeFilter"#,
        // an unknown measurement
        r#"SELECT mean("mean") FROM "rollups" WHERE $timeFilter"#,
        // an unquoted identifier cannot hide from the check
        r#"SELECT mean(average) FROM "rollup" WHERE $timeFilter"#,
        r#"SELECT mean("mean") FROM rollup WHERE $timeFilter"#,
    ] {
        assert!(refused(bad), "accepted: {bad}");
    }
}

mod support;

/// Grafana's "All" of a multi-value variable in a regex: the values, regex-escaped, as
/// `(a|b|c)`.
fn regex_all(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .flat_map(|c| {
                    let special = "\\.+*?()|[]{}^$/".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("({})", escaped.join("|"))
}

/// `q` with Grafana's variables replaced as Grafana would for the given values.
fn substitute(q: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = q
        .replace("$timeFilter", "time > now() - 7d")
        .replace("$__interval", "1m");
    for (name, value) in vars {
        out = out.replace(&format!("${name}"), value);
    }
    let left = out.match_indices('$').any(|(i, _)| {
        out[i + 1..].starts_with(|c: char| c.is_alphabetic() || c == '{' || c == '_')
    });
    assert!(!left, "unsubstituted variable in {out}");
    out
}

/// The first column of every row of every series of a `SHOW TAG VALUES` answer (its values).
fn tag_values(answer: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for row in s["values"].as_array().into_iter().flatten() {
            out.push(row[1].as_str().unwrap().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_points_a_daemon_forwarded() {
    use edgewatch::app;
    use edgewatch::config;
    use edgewatch::model::{format_time, now_ns};
    use std::time::{Duration, Instant};
    use support::influxd::Influxd;
    use tokio_util::sync::CancellationToken;

    let influx = Influxd::start();
    influx.create_database("plant");
    let dir = tempfile::tempdir().unwrap();
    let window = 60 * NS_PER_SEC;
    let start = (now_ns() / window - 60) * window;
    // The sim's fault schedule raises and clears `overtemperature` episodes; once the sim has
    // sent its last reading, `silent` raises an episode per sensor that stays active.
    let text = format!(
        r#"
[gateway]
id = "gw-grafana"
[store]
path = "{store}"
[web]
listen = "127.0.0.1:0"
[[sources]]
type = "sim"
name = "sim"
sensors = 3
interval_ms = 1000
seed = 11
fault_interval_secs = 30
start_time = "{start}"
ticks = 600
realtime = false
[[rules]]
name = "overtemperature"
match = "*/temperature"
kind = "limit"
max = 100.0
max_clear = 95.0
[[rules]]
name = "silent"
match = "*/temperature"
kind = "silent"
raise_secs = 2
[[sinks]]
type = "influxdb"
name = "hq"
url = "{url}"
database = "plant"
retry_initial_ms = 100
retry_max_secs = 1
"#,
        store = dir.path().join("s.redb").display(),
        start = format_time(start),
        url = influx.url(),
    );
    let shutdown = CancellationToken::new();
    let running = app::start(
        config::load_str(&text).expect("test config"),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |q: &str| influx.count("plant", q);
    loop {
        let rollups = count(r#"SELECT COUNT("mean") FROM "rollup""#);
        let cleared = count(r#"SELECT COUNT("id") FROM "anomaly" WHERE "active" = false"#);
        let active = count(r#"SELECT COUNT("id") FROM "anomaly" WHERE "active" = true"#);
        if rollups >= 3 * 3 * 8 && cleared > 0 && active > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarded: {rollups} rollups, {cleared} cleared and {active} active events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    running.wait().await.unwrap();

    let dash = dashboard();
    // Template variables first, in order, each with the values of the ones before it: their
    // answers must not be empty, and "All" of them is what the panels are run with.
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    for v in dash["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let q = substitute(v["query"].as_str().unwrap(), &vars);
        let values = tag_values(&influx.query("plant", &q));
        assert!(!values.is_empty(), "variable {name}: no values from {q}");
        vars.insert(name, regex_all(&values));
    }
    assert_eq!(vars["gateway"], "(gw-grafana)");
    for (place, q) in dashboard_queries(&dash) {
        let q = substitute(&q, &vars);
        let answer = influx.query("plant", &q);
        let rows: usize = answer["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum();
        assert!(rows > 0, "{place}: no rows from {q}: {answer}");
        eprintln!("{place}: {rows} rows");
    }
    // The region annotations end at `cleared_at` in milliseconds, as Grafana wants `timeEnd`:
    // after the raise (the point's time, here in ns), before now.
    let annotation = dash["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["target"]["timeEndColumn"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .expect("a region annotation");
    let end_column = annotation["target"]["timeEndColumn"].as_str().unwrap();
    let q = substitute(annotation["target"]["query"].as_str().unwrap(), &vars);
    let answer = influx.query("plant", &q);
    let now_ms = now_ns() / 1_000_000;
    let mut regions = 0;
    for series in answer["results"][0]["series"].as_array().unwrap() {
        let columns = series["columns"].as_array().unwrap();
        let end = columns.iter().position(|c| c == end_column).unwrap();
        for row in series["values"].as_array().unwrap() {
            if let Some(end_ms) = row[end].as_f64() {
                let raised_ms = row[0].as_i64().unwrap() / 1_000_000;
                assert!(
                    (raised_ms as f64) < end_ms && end_ms <= now_ms as f64,
                    "raised {raised_ms} ms, cleared {end_ms} ms, now {now_ms} ms: {row}"
                );
                regions += 1;
            }
        }
    }
    assert!(regions > 0, "no cleared episode in {answer}");
}
