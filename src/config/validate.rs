//! Checks that need more than types: ranges, uniqueness, globs, addresses.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::load::Positions;
use super::{Config, InfluxApi, Problem, RuleKind, SinkKind, SourceKind};

/// The longest rolling span (`pipeline.rolling_secs`, a z-score rule's `window_secs`): every
/// reading in it is kept per series, and its times are milliseconds in an `i32`.
pub const MAX_ROLLING_SECS: u64 = 7 * 86_400;

/// `at` maps each entry of `c.sources`, `c.rules` and `c.sinks` to its index in the file.
pub(super) fn validate(c: &Config, at: &Positions) -> Vec<Problem> {
    let mut p = Vec::new();
    fn positive_into(p: &mut Vec<Problem>, path: &str, value: f64) {
        if value.is_nan() || value <= 0.0 {
            p.push(Problem::new(path, "must be greater than 0"));
        }
    }

    if c.gateway.id.trim().is_empty() {
        p.push(Problem::new("gateway.id", "must not be empty"));
    }
    positive_into(
        &mut p,
        "store.commit_interval_ms",
        c.store.commit_interval_ms as f64,
    );
    positive_into(
        &mut p,
        "store.ack_commit_interval_ms",
        c.store.ack_commit_interval_ms as f64,
    );
    positive_into(
        &mut p,
        "store.commit_max_records",
        c.store.commit_max_records as f64,
    );
    positive_into(
        &mut p,
        "store.retention_interval_secs",
        c.store.retention_interval_secs as f64,
    );
    positive_into(
        &mut p,
        "store.rollup_retention_secs",
        c.store.rollup_retention_secs as f64,
    );
    positive_into(
        &mut p,
        "pipeline.window_secs",
        c.pipeline.window_secs as f64,
    );
    positive_into(
        &mut p,
        "pipeline.channel_capacity",
        c.pipeline.channel_capacity as f64,
    );
    positive_into(
        &mut p,
        "pipeline.snapshot_interval_ms",
        c.pipeline.snapshot_interval_ms as f64,
    );
    positive_into(
        &mut p,
        "pipeline.rolling_secs",
        c.pipeline.rolling_secs() as f64,
    );
    if c.pipeline.rolling_secs() > MAX_ROLLING_SECS {
        p.push(Problem::new(
            "pipeline.rolling_secs",
            format!("must be at most {MAX_ROLLING_SECS} (7 days); it defaults to window_secs"),
        ));
    }
    positive_into(
        &mut p,
        "web.request_timeout_secs",
        c.web.request_timeout_secs as f64,
    );
    positive_into(
        &mut p,
        "web.max_concurrent_requests",
        c.web.max_concurrent_requests as f64,
    );
    positive_into(&mut p, "web.max_connections", c.web.max_connections as f64);
    positive_into(
        &mut p,
        "web.header_read_timeout_secs",
        c.web.header_read_timeout_secs as f64,
    );
    positive_into(&mut p, "web.max_body_bytes", c.web.max_body_bytes as f64);
    super::validate_io::operator_token(&c.web, &mut p);
    positive_into(
        &mut p,
        "shutdown.deadline_secs",
        c.shutdown.deadline_secs as f64,
    );
    if c.store.max_bytes < 1 << 20 {
        p.push(Problem::new(
            "store.max_bytes",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    if c.store.cache_bytes < 1 << 20 {
        p.push(Problem::new(
            "store.cache_bytes",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    if c.web.listen.parse::<SocketAddr>().is_err() {
        p.push(Problem::new(
            "web.listen",
            format!(
                "`{}` is not an address such as 127.0.0.1:8080",
                c.web.listen
            ),
        ));
    }
    if c.store.path.as_os_str().is_empty() {
        p.push(Problem::new("store.path", "must not be empty"));
    }

    if c.sources.is_empty() {
        p.push(Problem::new(
            "sources",
            "at least one [[sources]] entry is required",
        ));
    }
    let mut names = BTreeSet::new();
    for (i, s) in c.sources.iter().enumerate() {
        let path = format!("sources[{}]", at.sources[i]);
        if s.name.trim().is_empty() {
            p.push(Problem::new(format!("{path}.name"), "must not be empty"));
        } else if !names.insert(s.name.as_str()) {
            p.push(Problem::new(
                format!("{path}.name"),
                format!("duplicate source name `{}`", s.name),
            ));
        }
        match &s.kind {
            SourceKind::Sim(sim) => {
                if sim.interval_ms == 0 {
                    p.push(Problem::new(
                        format!("{path}.interval_ms"),
                        "must be greater than 0",
                    ));
                }
                if sim.sensors == 0 {
                    p.push(Problem::new(
                        format!("{path}.sensors"),
                        "must be greater than 0",
                    ));
                }
                if !sim.fault_interval_secs.is_finite() || sim.fault_interval_secs < 0.0 {
                    p.push(Problem::new(
                        format!("{path}.fault_interval_secs"),
                        "must be 0 (off) or a positive number of seconds",
                    ));
                }
                if let Some(t) = &sim.start_time
                    && crate::model::parse_time(t).is_none()
                {
                    p.push(Problem::new(
                        format!("{path}.start_time"),
                        format!("`{t}` is not an RFC 3339 time such as 2026-01-01T00:00:00Z"),
                    ));
                }
            }
            SourceKind::Mqtt(m) => super::validate_io::mqtt_source(&path, m, &mut p),
            SourceKind::Http(h) => super::validate_io::http_source(&path, h, &mut p),
            // Checked while parsing (`modbus.rs`): there the index in the file is known, while
            // here `i` counts only the entries that parsed.
            SourceKind::ModbusTcp(_) | SourceKind::ModbusRtu(_) => {}
        }
    }
    for (name, profile) in &c.profiles {
        super::validate_modbus::points(
            &format!("profiles.{name}.registers"),
            &profile.registers,
            &mut p,
        );
    }
    let http_sources = c
        .sources
        .iter()
        .filter(|s| matches!(s.kind, SourceKind::Http(_)))
        .count();
    if http_sources > 1 {
        p.push(Problem::new(
            "sources",
            "at most one source of type \"http\" (it serves POST /api/v1/ingest)",
        ));
    }

    let mut rule_names = BTreeSet::new();
    for (i, r) in c.rules.iter().enumerate() {
        let path = format!("rules[{}]", at.rules[i]);
        if let Err(e) = globset::Glob::new(&r.pattern) {
            p.push(Problem::new(
                format!("{path}.match"),
                format!("bad glob `{}`: {}", r.pattern, e.kind()),
            ));
        }
        if !rule_names.insert(r.name.as_str()) {
            p.push(Problem::new(
                format!("{path}.name"),
                format!("duplicate rule name `{}`", r.name),
            ));
        }
        if r.min_duration_secs.is_nan() || r.min_duration_secs < 0.0 {
            p.push(Problem::new(
                format!("{path}.min_duration_secs"),
                "must be 0 or more",
            ));
        }
        if r.flap_window_secs.is_nan() || r.flap_window_secs < 0.0 {
            p.push(Problem::new(
                format!("{path}.flap_window_secs"),
                "must be 0 (off) or more",
            ));
        }
        if r.flap_max_events < 2 {
            p.push(Problem::new(
                format!("{path}.flap_max_events"),
                "must be at least 2",
            ));
        }
        if r.holdoff_secs.is_nan() || r.holdoff_secs < 0.0 {
            p.push(Problem::new(
                format!("{path}.holdoff_secs"),
                "must be 0 or more",
            ));
        }
        let mut problem =
            |key: &str, reason: &str| p.push(Problem::new(format!("{path}.{key}"), reason));
        match &r.kind {
            RuleKind::Limit {
                min,
                min_clear,
                max,
                max_clear,
            } => {
                if min.is_none() && max.is_none() {
                    problem("max", "a limit rule needs `max`, `min` or both");
                }
                if let (Some(max), Some(clear)) = (max, max_clear)
                    && clear > max
                {
                    problem(
                        "max_clear",
                        "must not be above `max` (hysteresis clears below the raise level)",
                    );
                }
                if let (Some(min), Some(clear)) = (min, min_clear)
                    && clear < min
                {
                    problem(
                        "min_clear",
                        "must not be below `min` (hysteresis clears above the raise level)",
                    );
                }
                if let (Some(min), Some(max)) = (min, max)
                    && min >= max
                {
                    problem("min", "must be below `max`");
                }
            }
            RuleKind::Rate { raise, clear } => {
                if raise.is_nan() || *raise <= 0.0 {
                    problem("raise", "must be greater than 0");
                }
                if clear > raise || *clear < 0.0 {
                    problem("clear", "must be between 0 and `raise`");
                }
            }
            RuleKind::Zscore {
                window_secs,
                raise,
                clear,
                min_samples,
                ..
            } => {
                if window_secs.is_nan() || *window_secs <= 0.0 {
                    problem("window_secs", "must be greater than 0");
                } else if *window_secs > MAX_ROLLING_SECS as f64 {
                    problem(
                        "window_secs",
                        &format!("must be at most {MAX_ROLLING_SECS} (7 days)"),
                    );
                }
                if raise.is_nan() || *raise <= 0.0 {
                    problem("raise", "must be greater than 0");
                }
                if clear > raise || *clear < 0.0 {
                    problem("clear", "must be between 0 and `raise`");
                }
                if *min_samples < 2 {
                    problem("min_samples", "must be at least 2");
                }
            }
            RuleKind::Stuck {
                raise_secs,
                tolerance,
            } => {
                if raise_secs.is_nan() || *raise_secs <= 0.0 {
                    problem("raise_secs", "must be greater than 0");
                }
                if tolerance.is_nan() || *tolerance < 0.0 {
                    problem("tolerance", "must be 0 or more");
                }
            }
            RuleKind::Silent { raise_secs } => {
                if raise_secs.is_nan() || *raise_secs <= 0.0 {
                    problem("raise_secs", "must be greater than 0");
                }
            }
            RuleKind::Multivariate(rule) => {
                super::multivariate::validate(&path, rule, &mut p);
            }
        }
    }
    let mut sink_names = BTreeSet::new();
    for (i, sink) in c.sinks.iter().enumerate() {
        let path = format!("sinks[{}]", at.sinks[i]);
        if sink.name.trim().is_empty() {
            p.push(Problem::new(format!("{path}.name"), "must not be empty"));
        } else if !sink_names.insert(sink.name.as_str()) {
            p.push(Problem::new(
                format!("{path}.name"),
                format!("duplicate sink name `{}`", sink.name),
            ));
        }
        let x = match &sink.kind {
            SinkKind::Influxdb(x) => x,
            SinkKind::Mqtt(m) => {
                super::validate_io::mqtt_sink(&path, m, &mut p);
                continue;
            }
            SinkKind::Webhook(w) => {
                super::validate_io::webhook_sink(&path, w, &mut p);
                continue;
            }
        };
        let mut problem = |key: &str, reason: String| {
            p.push(Problem::new(format!("{path}.{key}"), reason));
        };
        match reqwest::Url::parse(&x.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => problem(
                "url",
                format!(
                    "`{}` is not an http(s) URL such as http://127.0.0.1:8086",
                    x.url
                ),
            ),
        }
        if !matches!(x.precision.as_str(), "ns" | "us" | "ms" | "s") {
            problem(
                "precision",
                format!("`{}` is not one of: ns, us, ms, s", x.precision),
            );
        }
        for (key, value) in [
            ("batch_max_points", x.batch_max_points as u64),
            ("batch_max_bytes", x.batch_max_bytes as u64),
            ("request_timeout_secs", x.request_timeout_secs),
            ("retry_initial_ms", x.retry_initial_ms),
            ("retry_max_secs", x.retry_max_secs),
            ("misconfigured_retry_secs", x.misconfigured_retry_secs),
        ] {
            if value == 0 {
                problem(key, "must be greater than 0".into());
            }
        }
        if x.forward.is_empty() {
            problem(
                "forward",
                "must name at least one of: rollups, events".into(),
            );
        }
        let secrets = match x.api {
            InfluxApi::V1 => {
                if x.database.as_deref().is_none_or(str::is_empty) {
                    problem("database", "missing (api v1 writes to a database)".into());
                }
                for key in ["org", "bucket", "token", "token_file", "token_env"] {
                    let set = match key {
                        "org" => x.org.is_some(),
                        "bucket" => x.bucket.is_some(),
                        "token" => x.token.is_some(),
                        "token_file" => x.token_file.is_some(),
                        _ => x.token_env.is_some(),
                    };
                    if set {
                        problem(key, "only for api = \"v2\"".into());
                    }
                }
                [
                    x.password.is_some(),
                    x.password_file.is_some(),
                    x.password_env.is_some(),
                ]
            }
            InfluxApi::V2 => {
                for (key, value) in [("org", &x.org), ("bucket", &x.bucket)] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        problem(key, "missing (api v2 writes to an org and bucket)".into());
                    }
                }
                if x.database.is_some() || x.username.is_some() {
                    problem(
                        "database",
                        "only for api = \"v1\" (v2 uses org and bucket)".into(),
                    );
                }
                [
                    x.token.is_some(),
                    x.token_file.is_some(),
                    x.token_env.is_some(),
                ]
            }
        };
        let secret_key = if x.api == InfluxApi::V1 {
            "password"
        } else {
            "token"
        };
        if secrets.iter().filter(|s| **s).count() > 1 {
            problem(
                secret_key,
                format!("give only one of {secret_key}, {secret_key}_file, {secret_key}_env"),
            );
        } else if let Err(reason) = x.secret() {
            problem(secret_key, reason);
        }
    }
    p
}
