//! Alerts out: anomaly events delivered one by one, in outbox order, to alert sinks (`webhook`
//! now, `mqtt` next), each from its own cursor in the store.
//!
//! - [`runner`]: the delivery loop shared by every alert sink: reads the outbox from the
//!   sink's cursor, skips rollups, delivers each event, moves the cursor after delivery, backs
//!   off, dead-letters refused events, and keeps the sink's link state in the `SinkRegistry`.
//! - [`webhook`]: the [`Deliver`] of `type = "webhook"`: a JSON POST.
//! - [`alert_body`] / [`alert_json`]: the one JSON alert body every transport sends.
//!
//! Invariants:
//! - **At least once, in order, from the store.** The cursor moves past an event only after
//!   its delivery succeeded (or it was refused for good and dead-lettered, in the same
//!   transaction). A restart resumes from the cursor; an event delivered just before a crash
//!   (or a shutdown during its request) may be delivered again. Receivers deduplicate on
//!   `(gateway, event_id, state)`.
//! - **Every state change is its own outbox entry.** The store queues one entry per change it
//!   is given (a raise, later its clear), even when both land in the same commit, so a
//!   receiver sees `raised` before `cleared` of the same `event_id`. The one exception is an
//!   alert sink whose cursor starts after the raise (configured later, renamed, or the raise
//!   was removed by retention before this sink had it, which is counted as dropped): it then
//!   delivers only the `cleared` state; no synthetic `raised` is made up.
//! - Alert sinks never slow acquisition: like the InfluxDB forwarders, they only read the store.
//!
//! Adding a transport: implement [`Deliver`] (classify every failure into a
//! [`DeliveryError`]), build it in `forward::start` and hand it to [`runner::AlertRunner`].

pub mod mqtt;
pub mod runner;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::model::{AnomalyEvent, format_time};

/// Why an event was not delivered, and so what the runner does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No answer (connection refused, timeout, broker unreachable): keep the event, back off
    /// (state `down`).
    #[error("{0}")]
    Down(String),
    /// The target answered "not now" (HTTP 408, 429, 5xx): keep the event, back off at least
    /// `after` when the target said how long (state `backing_off`).
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The target refuses this event for good (HTTP 4xx other than those below): it becomes a
    /// dead letter and the runner goes on with the next event.
    #[error("{0}")]
    Refused(String),
    /// The target refuses this gateway (HTTP 401, 403, 404: token, URL): keep the event, retry
    /// slowly, say so loudly (state `misconfigured`).
    #[error("{0}")]
    Misconfigured(String),
}

/// One transport of alerts. The runner calls it with one event at a time, in outbox order,
/// and waits for the result before the next; `Ok` means the target has it (a 2xx, a PUBACK).
/// Implementations classify every failure and never retry on their own: the runner owns
/// retries, backoff and the cursor. A shutdown may drop the future at any `.await`.
pub trait Deliver: Send {
    fn deliver(
        &mut self,
        event: &AnomalyEvent,
        gateway: &str,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// `raised` while the episode is active, `cleared` once it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Raised,
    Cleared,
}

impl AlertState {
    pub fn of(event: &AnomalyEvent) -> AlertState {
        if event.is_active() {
            AlertState::Raised
        } else {
            AlertState::Cleared
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        }
    }
}

/// The JSON alert body, the same for every transport. Field names are an interface (receivers
/// parse them); they follow `/api/v1/events` (times RFC 3339, absent times `null`), except
/// that the id is `event_id` and `state` replaces `active`. A non-finite number is `null`.
#[derive(Clone, Debug, Serialize)]
pub struct AlertBody<'a> {
    /// `gateway.id`.
    pub gateway: &'a str,
    pub event_id: u64,
    pub state: AlertState,
    pub sensor: &'a str,
    pub field: &'a str,
    pub rule: &'a str,
    pub kind: &'a str,
    pub severity: &'static str,
    pub raised_at: String,
    pub cleared_at: Option<String>,
    pub value: f64,
    pub score: f64,
    pub peak_value: f64,
    pub peak_score: f64,
    pub peak_at: String,
    pub message: &'a str,
}

/// The alert body of `event` (in the state it has in this outbox entry) from `gateway`.
pub fn alert_body<'a>(event: &'a AnomalyEvent, gateway: &'a str) -> AlertBody<'a> {
    AlertBody {
        gateway,
        event_id: event.id,
        state: AlertState::of(event),
        sensor: &event.sensor,
        field: &event.field,
        rule: &event.rule,
        kind: &event.kind,
        severity: event.severity.as_str(),
        raised_at: format_time(event.raised_at),
        cleared_at: event.cleared_at.map(format_time),
        value: event.value,
        score: event.score,
        peak_value: event.peak_value,
        peak_score: event.peak_score,
        peak_at: format_time(event.peak_at),
        message: &event.message,
    }
}

/// [`alert_body`] as JSON bytes, ready to send.
pub fn alert_json(event: &AnomalyEvent, gateway: &str) -> Vec<u8> {
    // Serialising plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&alert_body(event, gateway)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
