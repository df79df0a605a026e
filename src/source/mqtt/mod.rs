//! The MQTT source (`type = "mqtt"`): subscribes to a broker with rumqttc, decodes each
//! message with the subscription's mapping, and hands the readings to the pipeline in
//! batches. QoS 1 messages are acknowledged only after the store commit that holds their
//! readings, so a message is always either durably stored or still at the broker.
//!
//! # Tasks
//! - The **polling task** ([`MqttSource::run`]) owns rumqttc's `EventLoop` and is the only
//!   code that polls it; it never awaits anything that needs the event loop to make progress
//!   (no `subscribe().await`, no `ack().await`). It batches, subscribes on every ConnAck, backs
//!   off after errors and reports health.
//! - The **acknowledging task** waits for the store's commit sequence ([`CommitTracker`]) and
//!   sends the PUBACKs.
//! - A **reporter** refreshes messages per second and the unacknowledged count every second;
//!   a **shutdown watcher** queues the DISCONNECT.
//!
//! # The acknowledgement path
//! 1. A QoS 1 message (`manual_acks`: rumqttc does not acknowledge it) is decoded into the
//!    current batch and kept beside it, readings or not: a refused message and one with no
//!    readings are acknowledged too, after the same commit, to keep the order.
//! 2. When the batch is sent, it gets the next commit mark and its messages go into the
//!    [`AckBook`](acks::AckBook) under the mark's sequence, in order.
//! 3. The pipeline carries the mark into its output; the store writer releases it after the
//!    durable commit; the tracker's watch channel then says "committed through N".
//! 4. The acknowledging task takes every message of batches up to N from the book, oldest
//!    first, and queues its PUBACK with `try_ack` (retrying shortly when rumqttc's request
//!    channel is full), only while connected.
//!
//! Redeliveries: a message with `dup` set that is a copy of one still in the book (same packet
//! id, topic and payload: the broker resent it after a reconnect) is dropped, since the first
//! copy's acknowledgement covers it. Any other `dup` or retained message goes into a batch
//! marked `redelivered`, and the pipeline drops its readings already stored raw. When the
//! broker has no session for us (`session_present == false`), the book is emptied: the broker
//! forgot those messages and reuses their packet ids. At shutdown the book is simply dropped:
//! the broker redelivers those messages next time, and the store recognises the ones it has.
//!
//! # Broker settings that matter
//! The broker sends a client at most `max_inflight_messages` unacknowledged QoS 1 messages
//! (Mosquitto: 20 by default), and acknowledging after the commit holds each message for a
//! commit round trip: a source then gets at most that many messages per store commit (with
//! Mosquitto's default and one commit per 200 ms, about 100 messages/s). Installers raise
//! `max_inflight_messages` (for example to 1000) on brokers that feed a gateway.
//! `max_queued_messages` (Mosquitto: 1000) bounds what the broker keeps for the gateway while
//! it is away; beyond it QoS 1 messages are dropped at the broker.
//!
//! A packet larger than the client's incoming limit (twice the largest `max_payload_bytes`,
//! at least 1 MiB) fails the connection, and the broker redelivers a QoS 1 one on every
//! reconnect: cap payloads at the broker too (Mosquitto: `message_size_limit`).
//!
//! [`CommitTracker`]: crate::ack::CommitTracker

mod acks;
mod bad;
mod batch;
mod poll;
mod route;
mod task;

pub use route::topic_matches;
pub use task::MqttSource;
