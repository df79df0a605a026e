//! A small MQTT test client on rumqttc, for tests against the Mosquitto harness
//! ([`super::mosquitto`]): connect, subscribe, publish at QoS 1 and wait for what arrives,
//! every wait bounded.
//!
//! The event loop runs in its own task and forwards every event to the test; the test only
//! queues requests (awaiting a publish from the polling task can deadlock in rumqttc). The
//! loop stops at the first connection error instead of reconnecting, so a test sees the error.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound of every wait; generous for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A connected client.
pub struct Client {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Event>,
    poller: JoinHandle<Result<(), ConnectionError>>,
}

/// Connects and returns the client and the broker's CONNACK, or the connection error.
pub async fn connect(options: MqttOptions) -> Result<(Client, ConnAck), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connack = loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("no CONNACK and no error in time")?;
        if let Event::Incoming(Packet::ConnAck(connack)) = event {
            break connack;
        }
    };
    let (tx, events) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await?;
            let done = matches!(event, Event::Outgoing(Outgoing::Disconnect));
            let _ = tx.send(event);
            if done {
                return Ok(());
            }
        }
    });
    Ok((
        Client {
            client,
            events,
            poller,
        },
        connack,
    ))
}

impl Client {
    /// Waits up to `limit` for the first event `pick` maps to `Some`; `None` when the time is
    /// up. Panics when the connection ends.
    pub async fn wait_for_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> Option<T> {
        let found = timeout(limit, async {
            while let Some(event) = self.events.recv().await {
                if let Some(found) = pick(event) {
                    return Some(found);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => Some(found),
            Ok(None) => panic!("connection ended while waiting for {what}"),
            Err(_) => None,
        }
    }

    /// As [`Client::wait_for_within`] with [`WAIT`]; panics when the time is up.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl FnMut(Event) -> Option<T>) -> T {
        self.wait_for_within(WAIT, what, pick)
            .await
            .unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
    }

    /// Subscribes at QoS 1 and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        self.wait_for("SUBACK", |event| {
            matches!(event, Event::Incoming(Packet::SubAck(_))).then_some(())
        })
        .await;
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        self.wait_for("PUBACK", |event| {
            matches!(event, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await;
    }

    /// Publishes every `(topic, payload)` at QoS 1 with at most `window` (1 to 100, rumqttc's
    /// default in-flight limit) waiting for their PUBACK, and waits for the last PUBACK.
    /// Returns the number of PUBACKs received, which is the number of messages the broker
    /// accepted (panics if one does not come within [`WAIT`] of the previous one, or the
    /// connection ends). Call it on a client that publishes nothing else meanwhile.
    pub async fn publish_all(
        &mut self,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
        window: usize,
    ) -> u64 {
        assert!((1..=100).contains(&window), "window {window}: 1 to 100");
        let is_puback = |event: Event| matches!(event, Event::Incoming(Packet::PubAck(_)));
        let (mut sent, mut acked) = (0u64, 0u64);
        for (topic, payload) in messages {
            while sent - acked >= window as u64 {
                self.wait_for("PUBACK", |e| is_puback(e).then_some(()))
                    .await;
                acked += 1;
            }
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue PUBLISH");
            sent += 1;
        }
        while acked < sent {
            self.wait_for("PUBACK", |e| is_puback(e).then_some(()))
                .await;
            acked += 1;
        }
        acked
    }

    /// The next message; panics after [`WAIT`].
    pub async fn next_message(&mut self) -> Publish {
        self.wait_for("message", incoming_publish).await
    }

    /// The next message within `limit`, or `None`.
    pub async fn next_message_within(&mut self, limit: Duration) -> Option<Publish> {
        self.wait_for_within(limit, "message", incoming_publish)
            .await
    }

    /// Sends DISCONNECT and waits until it is written, so the broker sees a clean end.
    pub async fn disconnect(self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        timeout(WAIT, self.poller)
            .await
            .expect("DISCONNECT written in time")
            .expect("poller task")
            .expect("connection open until DISCONNECT");
    }
}

fn incoming_publish(event: Event) -> Option<Publish> {
    match event {
        Event::Incoming(Packet::Publish(publish)) => Some(publish),
        _ => None,
    }
}
