//! The MQTT alert transport: each alert is published (QoS 1 by default) on a topic made from
//! the event, and delivery counts only once the broker's PUBACK is back. Optionally the current
//! state of each (sensor, field, rule) is also published retained, so that a dashboard that
//! subscribes later sees what is active now.
//!
//! One publication is in flight at a time (alerts are rare), so any PUBACK that arrives while
//! waiting is the one for it. The session is clean: after a reconnect nothing is resent behind
//! the runner's back; the runner retries an alert that was not acknowledged, so delivery is at
//! least once (a retry after a lost PUBACK sends a duplicate, never nothing).
//!
//! A dedicated task polls the rumqttc event loop (publishing from the polling task could
//! deadlock), backs off with jitter while the broker is away, and reports the link.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{AlertState, Deliver, DeliveryError, alert_json};
use crate::config::{MqttAlertFields, MqttConnection};
use crate::model::AnomalyEvent;
use crate::mqtt_client;

/// Longest wait for a PUBACK before the publication counts as failed (and is retried).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of rumqttc's request channel: one publication at a time, plus its state topic.
const REQUESTS: usize = 16;

/// What the polling task knows about the broker.
#[derive(Clone, Debug, PartialEq)]
enum Link {
    Connecting,
    Up,
    Down(String),
    /// Refused credentials or certificate: a person must act.
    Misconfigured(String),
}

/// The [`Deliver`] side; the polling task runs beside it until `shutdown`.
pub struct MqttAlerts {
    client: AsyncClient,
    fields: MqttAlertFields,
    qos: QoS,
    link: watch::Receiver<Link>,
    acks: mpsc::UnboundedReceiver<u16>,
    connect_timeout: Duration,
}

impl MqttAlerts {
    /// Builds the client and spawns its polling task.
    pub fn start(
        conn: &MqttConnection,
        fields: &MqttAlertFields,
        client_id: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<MqttAlerts> {
        let options = mqtt_client::options(conn, client_id, true, false)?;
        let (client, mut eventloop) = AsyncClient::new(options, REQUESTS);
        eventloop.set_network_options(mqtt_client::network_options(conn));
        let (link_tx, link) = watch::channel(Link::Connecting);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let backoff = (
            Duration::from_millis(conn.reconnect_initial_ms.max(1)),
            Duration::from_secs(conn.reconnect_max_secs.max(1)),
        );
        tokio::spawn(poll(
            eventloop,
            client.clone(),
            link_tx,
            ack_tx,
            backoff,
            shutdown,
        ));
        Ok(MqttAlerts {
            client,
            qos: if fields.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            fields: fields.clone(),
            link,
            acks,
            connect_timeout: Duration::from_secs(conn.connect_timeout_secs.max(1)),
        })
    }

    /// Waits (bounded) for the outcome of the current connection attempt: a broker that is
    /// known to be down is reported at once, so that the sink's state says so.
    async fn connected(&mut self) -> Result<(), DeliveryError> {
        let settled = tokio::time::timeout(
            self.connect_timeout,
            self.link.wait_for(|l| *l != Link::Connecting),
        )
        .await
        .map(|r| r.map(|link| *link == Link::Up));
        if matches!(settled, Ok(Ok(true))) {
            return Ok(());
        }
        let link = self.link.borrow().clone();
        Err(match link {
            Link::Misconfigured(reason) => DeliveryError::Misconfigured(reason),
            Link::Down(reason) => DeliveryError::Down(reason),
            _ => DeliveryError::Down("not connected to the broker yet".into()),
        })
    }

    /// Publishes one message and, for QoS 1, waits for its PUBACK.
    async fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        while self.acks.try_recv().is_ok() {} // late PUBACKs of abandoned attempts
        self.client
            .publish(topic, self.qos, retain, payload)
            .await
            .map_err(|e| DeliveryError::Down(format!("cannot queue the publication: {e}")))?;
        if self.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let mut link = self.link.clone();
        tokio::select! {
            ack = self.acks.recv() => match ack {
                Some(_) => Ok(()),
                None => Err(DeliveryError::Down("the MQTT client stopped".into())),
            },
            _ = link.wait_for(|l| *l != Link::Up) => Err(DeliveryError::Down(
                "the connection dropped before the broker acknowledged the alert".into(),
            )),
            () = tokio::time::sleep(ACK_TIMEOUT) => Err(DeliveryError::Down(format!(
                "no PUBACK within {} s",
                ACK_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Deliver for MqttAlerts {
    async fn deliver(&mut self, event: &AnomalyEvent, gateway: &str) -> Result<(), DeliveryError> {
        self.connected().await?;
        let payload = alert_json(event, gateway);
        let topic = render(&self.fields.topic, event, gateway);
        self.publish(topic, false, payload.clone()).await?;
        if self.fields.retain_state {
            let template = self
                .fields
                .state_topic
                .clone()
                .unwrap_or_else(|| format!("{}/state", self.fields.topic));
            self.publish(render(&template, event, gateway), true, payload)
                .await?;
        }
        Ok(())
    }
}

/// Fills the placeholders of a topic template. Wildcard characters in names would make the
/// topic invalid for publishing, so they become `_`.
pub fn render(template: &str, event: &AnomalyEvent, gateway: &str) -> String {
    let clean = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| {
                if matches!(c, '+' | '#' | '\0') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if s.is_empty() { "_".into() } else { s }
    };
    template
        .replace("{gateway}", &clean(gateway))
        .replace("{sensor}", &clean(&event.sensor))
        .replace("{field}", &clean(&event.field))
        .replace("{rule}", &clean(&event.rule))
        .replace("{severity}", event.severity.as_str())
        .replace("{state}", AlertState::of(event).as_str())
}

async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    link: watch::Sender<Link>,
    acks: mpsc::UnboundedSender<u16>,
    (initial, max): (Duration, Duration),
    shutdown: CancellationToken,
) {
    let mut delay = initial;
    // The last failure logged, so that a broker that stays down is logged once.
    let mut reported: Option<Link> = None;
    loop {
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = initial;
                reported = None;
                link.send_replace(Link::Up);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let _ = acks.send(ack.pkid);
            }
            Ok(_) => {}
            Err(error) => {
                let reason = error.to_string();
                let state = if mqtt_client::needs_a_person(&error) {
                    Link::Misconfigured(reason)
                } else {
                    Link::Down(reason)
                };
                if reported.as_ref() != Some(&state) {
                    tracing::warn!(error = %error, "mqtt alert sink: broker connection failed");
                    reported = Some(state.clone());
                }
                let wait = if matches!(state, Link::Misconfigured(_)) {
                    max
                } else {
                    let jittered = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    delay = (delay * 2).min(max);
                    jittered
                };
                link.send_replace(state);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                link.send_replace(Link::Connecting);
            }
        }
    }
    let _ = client.try_disconnect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    #[test]
    fn topics_are_filled_in_and_wildcards_removed() {
        let mut e = AnomalyEvent {
            id: 7,
            sensor: "p+1".into(),
            field: "vibration".into(),
            rule: "vib#high".into(),
            kind: "limit".into(),
            severity: Severity::Critical,
            raised_at: 10,
            cleared_at: None,
            value: 1.0,
            score: 1.0,
            peak_score: 1.0,
            peak_value: 1.0,
            peak_at: 10,
            message: String::new(),
        };
        assert_eq!(
            render(
                "edgewatch/{gateway}/alerts/{sensor}/{field}/{rule}/{severity}/{state}",
                &e,
                "gw1"
            ),
            "edgewatch/gw1/alerts/p_1/vibration/vib_high/critical/raised"
        );
        e.cleared_at = Some(20);
        assert_eq!(render("{state}", &e, "gw1"), "cleared");
    }
}
