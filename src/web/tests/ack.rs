//! Operator acknowledgements over HTTP: the token decides (403 read-only without one, 401
//! without or with a wrong one), an accepted acknowledgement shows on the pages and in the
//! API, and the token itself never appears in any answer.

use reqwest::redirect::Policy;
use serde_json::{Value, json};

use super::{Harness, MINUTE, event, snapshot, sources, t0};
use crate::config::{Secret, WebConfig};
use crate::store::WriteBatch;

const TOKEN: &str = "op-Secret-7f3a9c";

fn with_token() -> WebConfig {
    WebConfig {
        operator_token: Some(Secret(TOKEN.into())),
        ..WebConfig::default()
    }
}

impl Harness {
    async fn ack(&self, id: &str, auth: Option<&str>, body: Value) -> (u16, Value, Option<String>) {
        let mut request = self
            .client
            .post(format!("{}/api/v1/events/{id}/ack", self.base))
            .json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, response.json().await.unwrap(), challenge)
    }

    /// Posts the HTML form without following the redirect.
    async fn post_form(&self, id: u64, fields: &[(&str, &str)]) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let body: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        client
            .post(format!("{}/events/{id}/ack", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn acknowledging_needs_the_token_and_then_shows_on_the_pages_and_in_the_api() {
    let h = Harness::start_configured(snapshot(), sources(), with_token()).await;
    // Event 7 is active in the live view; it is stored too, as the writer would have done.
    h.write(WriteBatch {
        events: vec![event(7, "p-101", "vibration", t0(), false)],
        ..WriteBatch::default()
    });
    let note = json!({"note": "checked <the> pump"});

    let (status, body, challenge) = h.ack("7", None, note.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(body["error"]["status"], 401);
    let (status, _, challenge) = h.ack("7", Some("Bearer wrong"), note.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (_, events) = h.json("/api/v1/events").await;
    assert_eq!(events[0]["acknowledged"], Value::Null, "nothing stored yet");

    let (page_status, page) = h.text("/").await;
    assert_eq!(page_status, 200);
    assert!(
        page.contains("href=\"/events/7/ack?back=%2F\""),
        "the form is offered"
    );

    let bearer = format!("Bearer {TOKEN}");
    let (status, body, _) = h.ack("7", Some(&bearer), note).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], 7);
    assert_eq!(body["acknowledged"]["note"], "checked <the> pump");
    let at = body["acknowledged"]["at"].as_str().unwrap().to_string();

    let (_, events) = h.json("/api/v1/events").await;
    assert_eq!(events[0]["id"], 7);
    assert_eq!(events[0]["acknowledged"]["note"], "checked <the> pump");
    assert_eq!(events[0]["acknowledged"]["at"], at.as_str());
    for path in ["/", "/sensors/p-101"] {
        let (_, page) = h.text(path).await;
        assert!(
            page.contains("acknowledged ") && page.contains(": checked &lt;the&gt; pump"),
            "{path} shows the acknowledgement"
        );
    }
}

#[tokio::test]
async fn without_a_configured_token_the_web_is_read_only() {
    let h = Harness::start(snapshot()).await;
    let (status, body, _) = h
        .ack("7", Some("Bearer anything"), json!({"note": "x"}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"]["message"],
        "read-only: no operator token configured"
    );
    let (_, page) = h.text("/").await;
    assert!(page.contains("vibration-high"), "the anomaly is shown");
    assert!(!page.contains("/ack"), "no acknowledgement is offered");
    let (status, page) = h.text("/events/7/ack").await;
    assert_eq!(status, 403);
    assert!(page.contains("read-only"));
    let response = h.post_form(7, &[("note", "x"), ("token", "")]).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn the_form_redirects_back_with_303_and_refuses_a_wrong_token_with_401() {
    let h = Harness::start_configured(snapshot(), sources(), with_token()).await;
    let (status, form) = h.text("/events/7/ack?back=/sensors/p-101").await;
    assert_eq!(status, 200);
    assert!(form.contains("id=\"ack-form\"") && form.contains("type=\"password\""));
    assert!(form.contains("value=\"/sensors/p-101\""));
    assert!(
        !form.contains("http-equiv=\"refresh\""),
        "the form page does not reload"
    );

    let response = h
        .post_form(7, &[("note", "seal"), ("token", "nope"), ("back", "/")])
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(!response.text().await.unwrap().contains("nope"));

    let response = h
        .post_form(
            7,
            &[
                ("note", "seal replaced"),
                ("token", TOKEN),
                ("back", "/sensors/p-101"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/sensors/p-101");
    // Event 7 is only in the live view (not committed yet): accepted all the same.
    let (_, page) = h.text("/sensors/p-101").await;
    assert!(page.contains(": seal replaced"));

    let response = h
        .post_form(
            7,
            &[("note", "x"), ("token", TOKEN), ("back", "//evil.example")],
        )
        .await;
    assert_eq!(response.headers()["location"], "/");
}

#[tokio::test]
async fn unknown_events_are_404_cleared_ones_may_be_acknowledged_and_notes_are_bounded() {
    let h = Harness::start_configured(snapshot(), sources(), with_token()).await;
    h.write(WriteBatch {
        events: vec![event(3, "p-102", "pressure", t0() - MINUTE, true)],
        ..WriteBatch::default()
    });
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = h.ack("99", Some(&bearer), json!({"note": "x"})).await;
    assert_eq!(status, 404);
    let (status, body, _) = h
        .ack("3", Some(&bearer), json!({"note": "after the fact"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = h
        .ack("3", Some(&bearer), json!({"note": "x".repeat(501)}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("note:")
    );
    let (status, _, _) = h.ack("3", Some(&bearer), json!({"note": "  "})).await;
    assert_eq!(status, 400);
    let (status, _, _) = h.ack("3", Some(&bearer), json!({"text": "x"})).await;
    assert_eq!(status, 400);
    let response = h
        .client
        .get(format!("{}/api/v1/events/3/ack", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "only POST is served here");
}

#[tokio::test]
async fn the_token_never_appears_in_a_page_or_an_api_answer() {
    let h = Harness::start_configured(snapshot(), sources(), with_token()).await;
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = h.ack("7", Some(&bearer), json!({"note": "ok"})).await;
    assert_eq!(status, 200);
    let _ = h.post_form(7, &[("note", "x"), ("token", "wrong")]).await;
    for path in [
        "/",
        "/sensors/p-101",
        "/events/7/ack",
        "/api/v1/status",
        "/api/v1/events",
        "/api/v1/sensors",
        "/api/v1/openapi.json",
        "/metrics",
        "/nowhere",
    ] {
        let (_, text) = h.text(path).await;
        assert!(!text.contains(TOKEN), "{path} shows the token");
    }
}
