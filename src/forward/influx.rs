//! The InfluxDB write request and the classification of its answer. Classification is pure
//! and decides what the forwarder does with a batch:
//! - 2xx: acknowledged;
//! - 400 (and other 4xx not listed below): refused for good: the lines InfluxDB names (or the
//!   whole batch) become dead letters with InfluxDB's reason, and the cursor moves on; the good
//!   lines of a partial write are already stored;
//! - 413: the batch is too large: halve it;
//! - 401, 403, 404: misconfigured (credentials, database or bucket): keep everything, retry
//!   slowly, tell people loudly;
//! - 408, 429, 5xx, network errors and timeouts: keep the batch and retry with backoff,
//!   honouring `Retry-After`.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::{InfluxApi, InfluxConfig, Secret};

/// What to do with a batch after InfluxDB answered (or did not).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Accepted,
    /// Refused for good: `(line, reason)` per refused line. `attributed`: InfluxDB named the
    /// lines; otherwise every line of the batch is listed and the forwarder bisects the batch
    /// to find the refused ones.
    Rejected {
        reason: String,
        lines: Vec<(String, String)>,
        attributed: bool,
    },
    TooLarge,
    Misconfigured {
        reason: String,
    },
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

/// A ready-to-send InfluxDB endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub write_url: reqwest::Url,
    auth: Option<(String, String)>,
    token: Option<String>,
    gzip: bool,
}

/// The `precision` query value: InfluxDB 1.x spells microseconds `u` and silently treats an
/// unknown value as nanoseconds, so `us` must not reach it.
fn precision_param(api: InfluxApi, precision: &str) -> &str {
    match (api, precision) {
        (InfluxApi::V1, "us") => "u",
        (_, p) => p,
    }
}

impl Endpoint {
    pub fn new(config: &InfluxConfig, secret: &Secret) -> Result<Endpoint, String> {
        let base = reqwest::Url::parse(&config.url).map_err(|e| format!("url: {e}"))?;
        let mut url = base.clone();
        let base_path = base.path().trim_end_matches('/');
        let precision = precision_param(config.api, &config.precision);
        let (auth, token) = match config.api {
            InfluxApi::V1 => {
                url.set_path(&format!("{base_path}/write"));
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("db", config.database.as_deref().unwrap_or_default());
                    if let Some(rp) = config.retention_policy.as_deref().filter(|r| !r.is_empty()) {
                        q.append_pair("rp", rp);
                    }
                    q.append_pair("precision", precision);
                }
                let auth = config
                    .username
                    .as_ref()
                    .filter(|u| !u.is_empty())
                    .map(|u| (u.clone(), secret.0.clone()));
                (auth, None)
            }
            InfluxApi::V2 => {
                url.set_path(&format!("{base_path}/api/v2/write"));
                url.query_pairs_mut()
                    .append_pair("org", config.org.as_deref().unwrap_or_default())
                    .append_pair("bucket", config.bucket.as_deref().unwrap_or_default())
                    .append_pair("precision", precision);
                (None, Some(secret.0.clone()))
            }
        };
        Ok(Endpoint {
            write_url: url,
            auth,
            token,
            gzip: config.gzip,
        })
    }

    /// Sends one batch of line protocol and classifies the answer.
    pub async fn send(&self, client: &reqwest::Client, body: &str) -> Outcome {
        let compressed = self.gzip.then(|| gzip(body));
        self.send_encoded(client, body, compressed).await
    }

    /// Sends a batch whose gzip body (when gzip is on) was made beforehand, off the async
    /// threads; `body` is the plain text, for the classification of a refusal.
    pub async fn send_encoded(
        &self,
        client: &reqwest::Client,
        body: &str,
        compressed: Option<Vec<u8>>,
    ) -> Outcome {
        let mut request = client
            .post(self.write_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some((user, pass)) = &self.auth {
            request = request.basic_auth(user, Some(pass));
        }
        if let Some(token) = &self.token {
            request = request.header(reqwest::header::AUTHORIZATION, format!("Token {token}"));
        }
        request = match (self.gzip, compressed) {
            (true, Some(compressed)) => request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(compressed),
            (true, None) => request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(gzip(body)),
            (false, _) => request.body(body.to_owned()),
        };
        match request.send().await {
            Err(e) => Outcome::Retry {
                reason: describe(&e),
                after: None,
            },
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                classify(status, retry_after, &text, body)
            }
        }
    }
}

/// The gzip body InfluxDB receives (fast level: the uplink saves most of it anyway, and the
/// gateway's CPU is what is scarce).
pub fn gzip(body: &str) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(body.as_bytes());
    gz.finish().unwrap_or_default()
}

/// A network error in a sentence, with its cause chain.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = what.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// InfluxDB's message: the `error` (1.x) or `message` (2.x) member of a JSON body, else the
/// body itself.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| body.trim().to_string())
}

/// Decides what an answer means for the batch `body`.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str, batch: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        401 | 403 | 404 => Outcome::Misconfigured {
            reason: format!("HTTP {status}: {}", message(body)),
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("HTTP {status}: {}", message(body)),
            after: retry_after,
        },
        413 => Outcome::TooLarge,
        _ => {
            let reason = format!("HTTP {status}: {}", message(body));
            let named = refused_lines(&message(body));
            let attributed = !named.is_empty();
            let lines = if attributed {
                named
            } else {
                batch
                    .lines()
                    .map(|l| (l.to_string(), reason.clone()))
                    .collect()
            };
            Outcome::Rejected {
                reason,
                lines,
                attributed,
            }
        }
    }
}

/// The `unable to parse '<line>': <reason>` parts of an InfluxDB error message.
fn refused_lines(message: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find("unable to parse '") {
        rest = &rest[start + "unable to parse '".len()..];
        let Some(end) = rest.find("': ") else { break };
        let line = rest[..end].to_string();
        rest = &rest[end + 3..];
        let reason_end = rest
            .find("unable to parse '")
            .or_else(|| rest.find(" dropped="))
            .unwrap_or(rest.len());
        let reason = rest[..reason_end]
            .trim()
            .trim_end_matches(['\n', ','])
            .to_string();
        out.push((line, reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_write_names_each_refused_line_with_its_reason() {
        let body = r#"{"error":"partial write: unable to parse 'bad line': missing fields\nunable to parse 'x y': invalid field format dropped=0"}"#;
        let Outcome::Rejected {
            lines, attributed, ..
        } = classify(400, None, body, "a b=1 1\nbad line\nx y\n")
        else {
            panic!("expected a rejection");
        };
        assert_eq!(
            lines,
            vec![
                ("bad line".to_string(), "missing fields".to_string()),
                ("x y".to_string(), "invalid field format".to_string())
            ]
        );
        assert!(attributed);
    }

    #[test]
    fn unattributed_refusal_keeps_every_line_of_the_batch() {
        let body = r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float dropped=1"}"#;
        let Outcome::Rejected {
            lines,
            reason,
            attributed,
        } = classify(400, None, body, "m v=1i 1\nm v=2 2\n")
        else {
            panic!("expected a rejection");
        };
        assert_eq!(lines.len(), 2);
        assert!(
            !attributed,
            "the forwarder must bisect to find the refused point"
        );
        assert!(reason.contains("field type conflict"));
    }

    #[test]
    fn answers_are_classified_by_status() {
        assert_eq!(classify(204, None, "", ""), Outcome::Accepted);
        assert!(
            matches!(classify(404, None, r#"{"error":"database not found: \"x\""}"#, ""), Outcome::Misconfigured { reason } if reason.contains("database not found"))
        );
        assert!(matches!(
            classify(401, None, "", ""),
            Outcome::Misconfigured { .. }
        ));
        assert!(matches!(
            classify(403, None, "", ""),
            Outcome::Misconfigured { .. }
        ));
        assert_eq!(classify(413, None, "", ""), Outcome::TooLarge);
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status, None, "", ""), Outcome::Retry { .. }),
                "{status}"
            );
        }
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), "", ""),
            Outcome::Retry {
                reason: "HTTP 429: ".into(),
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn v1_endpoint_spells_microseconds_u_and_v2_uses_org_and_bucket() {
        let v1 = crate::config::load_str(
            "[gateway]\nid='g'\n[[sources]]\ntype='sim'\nname='s'\n[[sinks]]\ntype='influxdb'\nname='hq'\nurl='http://127.0.0.1:1/base/'\ndatabase='plant'\nretention_policy='week'\nprecision='us'\n",
        )
        .unwrap();
        let crate::config::SinkKind::Influxdb(c) = &v1.sinks[0].kind else {
            unreachable!()
        };
        let e = Endpoint::new(c, &Secret::default()).unwrap();
        assert_eq!(
            e.write_url.as_str(),
            "http://127.0.0.1:1/base/write?db=plant&rp=week&precision=u"
        );
        let v2 = crate::config::load_str(
            "[gateway]\nid='g'\n[[sources]]\ntype='sim'\nname='s'\n[[sinks]]\ntype='influxdb'\nname='hq'\nurl='http://127.0.0.1:1'\napi='v2'\norg='acme'\nbucket='plant'\ntoken='t'\n",
        )
        .unwrap();
        let crate::config::SinkKind::Influxdb(c) = &v2.sinks[0].kind else {
            unreachable!()
        };
        let e = Endpoint::new(c, &c.secret().unwrap()).unwrap();
        assert_eq!(
            e.write_url.as_str(),
            "http://127.0.0.1:1/api/v2/write?org=acme&bucket=plant&precision=ns"
        );
        assert_eq!(e.token.as_deref(), Some("t"));
    }
}
