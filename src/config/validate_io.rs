//! Semantic checks of the `mqtt` and `http` sources and the `mqtt` and `webhook` sinks.

use super::WebConfig;
use super::load::Problem;
use super::sink::{MqttAlertConfig, WebhookConfig};
use super::source::{HttpIngestConfig, MappingConfig, MqttConnection, MqttSourceConfig};

fn problem(p: &mut Vec<Problem>, path: &str, key: &str, reason: impl Into<String>) {
    p.push(Problem::new(format!("{path}.{key}"), reason));
}

fn connection(path: &str, c: &MqttConnection, p: &mut Vec<Problem>) {
    if c.host.trim().is_empty() {
        problem(p, path, "host", "must not be empty");
    }
    if c.port == 0 {
        problem(p, path, "port", "must be greater than 0");
    }
    if c.keepalive_secs != 0 && c.keepalive_secs < 5 {
        problem(p, path, "keepalive_secs", "must be 0 (off) or at least 5");
    }
    for (key, v) in [
        ("connect_timeout_secs", c.connect_timeout_secs),
        ("reconnect_initial_ms", c.reconnect_initial_ms),
        ("reconnect_max_secs", c.reconnect_max_secs),
    ] {
        if v == 0 {
            problem(p, path, key, "must be greater than 0");
        }
    }
    let secrets = [
        c.password.is_some(),
        c.password_file.is_some(),
        c.password_env.is_some(),
    ];
    if secrets.iter().filter(|s| **s).count() > 1 {
        problem(
            p,
            path,
            "password",
            "give only one of password, password_file, password_env",
        );
    }
    if secrets.iter().any(|s| *s) && c.username.is_none() {
        problem(
            p,
            path,
            "username",
            "missing (a password needs a user name)",
        );
    }
    if let Some(tls) = &c.tls {
        if !tls.ca_file.is_file() {
            problem(
                p,
                path,
                "tls.ca_file",
                format!("cannot read {}", tls.ca_file.display()),
            );
        }
        match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(_), None) => problem(
                p,
                path,
                "tls.client_key_file",
                "missing (a client certificate needs its key)",
            ),
            (None, Some(_)) => problem(
                p,
                path,
                "tls.client_cert_file",
                "missing (a client key needs its certificate)",
            ),
            _ => {}
        }
        for (key, file) in [
            ("tls.client_cert_file", &tls.client_cert_file),
            ("tls.client_key_file", &tls.client_key_file),
        ] {
            if let Some(f) = file
                && !f.is_file()
            {
                problem(p, path, key, format!("cannot read {}", f.display()));
            }
        }
    }
}

/// Checks an MQTT topic filter: `+` and `#` only as whole segments, `#` only last.
pub fn topic_filter_problem(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("must not be empty".into());
    }
    let segments: Vec<&str> = filter.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains('#') && (*seg != "#" || i + 1 != segments.len()) {
            return Some(format!(
                "`{filter}`: `#` must be a whole segment at the end"
            ));
        }
        if seg.contains('+') && *seg != "+" {
            return Some(format!("`{filter}`: `+` must be a whole segment"));
        }
    }
    None
}

fn mapping(path: &str, m: &MappingConfig, p: &mut Vec<Problem>) {
    if let Err(reason) = crate::ingest::Decoder::new(m) {
        p.push(Problem::new(
            format!("{path}.{}", reason.key),
            reason.reason,
        ));
    }
    if m.max_payload_bytes == 0 {
        problem(p, path, "max_payload_bytes", "must be greater than 0");
    }
}

pub(super) fn mqtt_source(path: &str, m: &MqttSourceConfig, p: &mut Vec<Problem>) {
    connection(path, &m.connection, p);
    for (i, sub) in m.subscriptions.iter().enumerate() {
        let sub_path = format!("{path}.subscriptions[{i}]");
        if let Some(reason) = topic_filter_problem(&sub.filter) {
            problem(p, &sub_path, "filter", reason);
        }
        if sub.qos > 1 {
            problem(p, &sub_path, "qos", "must be 0 or 1");
        }
        mapping(&sub_path, &sub.mapping, p);
    }
}

pub(super) fn http_source(path: &str, h: &HttpIngestConfig, p: &mut Vec<Problem>) {
    if h.max_body_bytes == 0 {
        problem(p, path, "max_body_bytes", "must be greater than 0");
    }
    mapping(path, &h.mapping, p);
}

pub(super) fn mqtt_sink(path: &str, m: &MqttAlertConfig, p: &mut Vec<Problem>) {
    connection(path, &m.connection, p);
    if m.alert.qos > 1 {
        problem(p, path, "qos", "must be 0 or 1");
    }
    for (key, topic) in [
        ("topic", Some(&m.alert.topic)),
        ("state_topic", m.alert.state_topic.as_ref()),
    ] {
        if let Some(t) = topic
            && (t.is_empty() || t.contains(['+', '#']))
        {
            problem(
                p,
                path,
                key,
                format!("`{t}` must be a non-empty topic without wildcards"),
            );
        }
    }
}

pub(super) fn webhook_sink(path: &str, w: &WebhookConfig, p: &mut Vec<Problem>) {
    match reqwest::Url::parse(&w.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => problem(p, path, "url", format!("`{}` is not an http(s) URL", w.url)),
    }
    for (key, v) in [
        ("request_timeout_secs", w.request_timeout_secs),
        ("retry_initial_ms", w.retry_initial_ms),
        ("retry_max_secs", w.retry_max_secs),
    ] {
        if v == 0 {
            problem(p, path, key, "must be greater than 0");
        }
    }
    let secrets = [
        w.token.is_some(),
        w.token_file.is_some(),
        w.token_env.is_some(),
    ];
    if secrets.iter().filter(|s| **s).count() > 1 {
        problem(
            p,
            path,
            "token",
            "give only one of token, token_file, token_env",
        );
    } else if let Err(reason) = w.token() {
        problem(p, path, "token", reason);
    }
}

/// `[web] operator_token`: at most one of the three ways, and one that resolves to a token a
/// client can send as `Authorization: Bearer <token>` (visible ASCII, no spaces). An empty
/// token is refused rather than read as "no token": the web would silently be read-only.
pub(super) fn operator_token(w: &WebConfig, p: &mut Vec<Problem>) {
    const KEY: &str = "web.operator_token";
    match w.operator_token_sources() {
        0 => return,
        1 => {}
        _ => {
            p.push(Problem::new(
                KEY,
                "give only one of operator_token, operator_token_file, operator_token_env",
            ));
            return;
        }
    }
    match w.operator_token() {
        Err(reason) => p.push(Problem::new(KEY, reason)),
        Ok(None) => p.push(Problem::new(
            KEY,
            "is empty (leave out all three keys for a read-only web)",
        )),
        Ok(Some(token)) if !token.0.bytes().all(|b| b.is_ascii_graphic()) => p.push(Problem::new(
            KEY,
            "must be visible ASCII without spaces (it is sent as a bearer token)",
        )),
        Ok(Some(_)) => {}
    }
}
