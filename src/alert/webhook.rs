//! `type = "webhook"`: each alert is POSTed as the JSON [`alert_body`](super::alert_body),
//! with `Authorization: Bearer <token>` when a token is set and the configured extra headers.
//!
//! The answer decides what the runner does ([`classify`], pure):
//! - 2xx: delivered;
//! - 408, 429, 5xx (`Retry-After` in seconds honoured), no answer, timeout: retry with backoff;
//! - 401, 403, 404: misconfigured (token or URL): retry slowly, loudly;
//! - any other status (400, 422, ...): refused for good: the alert becomes a dead letter and
//!   the next one goes out. Redirects are not followed (they count as refused), since a
//!   redirected POST silently becomes a GET on many servers.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{Deliver, DeliveryError, alert_json};
use crate::config::{Secret, WebhookConfig};
use crate::forward::influx::describe;
use crate::model::AnomalyEvent;

/// The receiver's own words quoted in a reason are cut to this many characters.
const REASON_MAX_CHARS: usize = 300;

/// A ready-to-use webhook target.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `Bearer <token>`, sensitive (never logged); `None` without a token.
    authorization: Option<HeaderValue>,
    headers: HeaderMap,
}

impl Webhook {
    /// Builds the client and checks the URL and the extra headers. Errors name the key.
    pub fn new(config: &WebhookConfig, token: &Secret) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("url: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: `{name}` is not a valid header name"))?;
            if header == AUTHORIZATION && !token.0.is_empty() {
                return Err("headers: Authorization is set by `token`; give only one".into());
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
            headers.insert(header, value);
        }
        let authorization = if token.0.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|_| "token: not usable in a header".to_string())?;
            v.set_sensitive(true);
            Some(v)
        };
        let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Webhook {
            client,
            url,
            authorization,
            headers,
        })
    }

    /// The URL without credentials or query (it may carry a key), for the status page.
    pub fn shown_url(&self) -> String {
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.to_string()
    }
}

impl Deliver for Webhook {
    async fn deliver(&mut self, event: &AnomalyEvent, gateway: &str) -> Result<(), DeliveryError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        match request.body(alert_json(event, gateway)).send().await {
            Err(e) => Err(DeliveryError::Down(describe(&e))),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = if (200..300).contains(&status) {
                    String::new()
                } else {
                    response.text().await.unwrap_or_default()
                };
                classify(status, retry_after, &text)
            }
        }
    }
}

/// What an answer means for the alert.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<(), DeliveryError> {
    let reason = || {
        let text: String = body.trim().chars().take(REASON_MAX_CHARS).collect();
        if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        }
    };
    match status {
        200..=299 => Ok(()),
        401 | 403 | 404 => Err(DeliveryError::Misconfigured(reason())),
        408 | 429 | 500..=599 => Err(DeliveryError::Retry {
            reason: reason(),
            after: retry_after,
        }),
        _ => Err(DeliveryError::Refused(reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status() {
        assert_eq!(classify(200, None, ""), Ok(()));
        assert_eq!(classify(204, None, ""), Ok(()));
        for status in [401, 403, 404] {
            assert!(
                matches!(classify(status, None, "no"), Err(DeliveryError::Misconfigured(r)) if r == format!("HTTP {status}: no")),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status, None, ""), Err(DeliveryError::Retry { .. })),
                "{status}"
            );
        }
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), ""),
            Err(DeliveryError::Retry {
                reason: "HTTP 429".into(),
                after: Some(Duration::from_secs(7))
            })
        );
        for status in [301, 400, 409, 413, 422] {
            assert!(
                matches!(classify(status, None, ""), Err(DeliveryError::Refused(_))),
                "{status}"
            );
        }
        let long = "x".repeat(10_000);
        let Err(DeliveryError::Refused(reason)) = classify(400, None, &long) else {
            panic!("refused");
        };
        assert!(reason.len() < 400);
    }

    fn config(extra: &str) -> WebhookConfig {
        let text = format!(
            "[gateway]\nid='g'\n[[sources]]\ntype='sim'\nname='s'\n[[sinks]]\ntype='webhook'\nname='a'\nurl='http://u:p@127.0.0.1:1/hook?key=k'\n{extra}\n"
        );
        let config = crate::config::load_str(&text).unwrap();
        let crate::config::SinkKind::Webhook(w) = &config.sinks[0].kind else {
            unreachable!()
        };
        w.clone()
    }

    #[test]
    fn the_shown_url_has_no_credentials_or_query_and_bad_headers_are_named() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hook = Webhook::new(&config(""), &Secret::default()).unwrap();
        assert_eq!(hook.shown_url(), "http://127.0.0.1:1/hook");
        let bad = config("headers = { 'bad name' = 'x' }");
        let err = Webhook::new(&bad, &Secret::default()).err().unwrap();
        assert!(err.contains("bad name"), "{err}");
        let twice = config("headers = { Authorization = 'x' }");
        assert!(Webhook::new(&twice, &Secret("t".into())).is_err());
    }
}
