//! The acknowledgement book: which QoS 1 messages each sent batch answers for, in the order
//! the batches were sent. Sans-IO: the polling task adds to it, the acknowledging task takes
//! from it through a `send` callback, both under one `std` mutex that is never held across an
//! `.await` (every operation here is quick and non-blocking).
//!
//! Invariants:
//! - A message is acknowledged only when the batch it was in is committed (`seq ≤ committed`),
//!   and messages are acknowledged in the order they were received.
//! - Nothing is acknowledged while disconnected: an acknowledgement queued then would be
//!   dropped by rumqttc on the next failure, or reach a new session whose packet ids mean
//!   other messages.
//! - A new session (`session_present == false`) makes every entry meaningless: the broker
//!   forgot those messages and reuses their packet ids, so they are dropped, not sent.

use std::collections::VecDeque;

use rumqttc::Publish;

/// One sent batch and the messages it answers for.
#[derive(Debug)]
struct Waiting {
    seq: u64,
    messages: VecDeque<Publish>,
}

/// What one call of [`AckBook::acknowledge`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct AckRun {
    /// Messages handed to `send`.
    pub sent: usize,
    /// `send` refused one (the request channel is full): try again shortly.
    pub blocked: bool,
}

/// QoS 1 messages waiting for the store commit of their batch.
#[derive(Debug, Default)]
pub struct AckBook {
    waiting: VecDeque<Waiting>,
    /// Messages in `waiting`.
    messages: usize,
    connected: bool,
}

impl AckBook {
    /// Records the messages of the batch marked `seq` (marks increase batch by batch).
    pub fn push(&mut self, seq: u64, messages: Vec<Publish>) {
        if messages.is_empty() {
            return;
        }
        debug_assert!(self.waiting.back().is_none_or(|w| w.seq < seq));
        self.messages += messages.len();
        self.waiting.push_back(Waiting {
            seq,
            messages: messages.into(),
        });
    }

    /// Messages not acknowledged yet.
    pub fn waiting(&self) -> usize {
        self.messages
    }

    /// Whether `publish` is a copy of a message still waiting here: the same packet id, topic
    /// and payload. The broker keeps a packet id for one message until it is acknowledged, so a
    /// redelivered copy (after a reconnect) of a message in the book is that message; the
    /// acknowledgement of the first copy covers it.
    pub fn holds(&self, publish: &Publish) -> bool {
        self.waiting.iter().flat_map(|w| &w.messages).any(|m| {
            m.pkid == publish.pkid && m.topic == publish.topic && m.payload == publish.payload
        })
    }

    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    /// The broker started a new session: drops every entry; returns how many messages.
    pub fn new_session(&mut self) -> usize {
        let dropped = self.messages;
        self.waiting.clear();
        self.messages = 0;
        dropped
    }

    /// Hands every message of the batches committed through `committed` to `send`, oldest
    /// first, while connected. `send` returns false when it cannot take one now; that message
    /// and the rest stay for the next call.
    pub fn acknowledge(
        &mut self,
        committed: u64,
        mut send: impl FnMut(&Publish) -> bool,
    ) -> AckRun {
        let mut run = AckRun {
            sent: 0,
            blocked: false,
        };
        if !self.connected {
            return run;
        }
        while let Some(front) = self.waiting.front_mut() {
            if front.seq > committed {
                break;
            }
            while let Some(message) = front.messages.front() {
                if !send(message) {
                    run.blocked = true;
                    return run;
                }
                front.messages.pop_front();
                self.messages -= 1;
                run.sent += 1;
            }
            self.waiting.pop_front();
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;

    fn message(pkid: u16, payload: &str) -> Publish {
        let mut p = Publish::new("plant/a", QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        p
    }

    fn acked_ids(book: &mut AckBook, committed: u64) -> Vec<u16> {
        let mut ids = Vec::new();
        book.acknowledge(committed, |p| {
            ids.push(p.pkid);
            true
        });
        ids
    }

    #[test]
    fn only_committed_batches_are_acknowledged_in_order() {
        let mut book = AckBook::default();
        book.set_connected(true);
        book.push(1, vec![message(1, "a"), message(2, "b")]);
        book.push(2, vec![message(3, "c")]);
        book.push(4, vec![message(4, "d")]);
        assert_eq!(book.waiting(), 4);
        assert_eq!(acked_ids(&mut book, 0), Vec::<u16>::new());
        assert_eq!(acked_ids(&mut book, 1), [1, 2]);
        // Batch 3 carried no QoS 1 message; committing through it releases batch 2 only.
        assert_eq!(acked_ids(&mut book, 3), [3]);
        assert_eq!(acked_ids(&mut book, 4), [4]);
        assert_eq!(book.waiting(), 0);
    }

    #[test]
    fn nothing_is_acknowledged_while_disconnected() {
        let mut book = AckBook::default();
        book.push(1, vec![message(1, "a")]);
        assert_eq!(acked_ids(&mut book, 1), Vec::<u16>::new());
        assert_eq!(book.waiting(), 1);
        book.set_connected(true);
        assert_eq!(acked_ids(&mut book, 1), [1]);
    }

    #[test]
    fn a_full_channel_keeps_the_rest_for_later_in_order() {
        let mut book = AckBook::default();
        book.set_connected(true);
        book.push(1, vec![message(1, "a"), message(2, "b"), message(3, "c")]);
        let mut room = 2;
        let run = book.acknowledge(1, |_| {
            if room == 0 {
                return false;
            }
            room -= 1;
            true
        });
        assert_eq!(
            run,
            AckRun {
                sent: 2,
                blocked: true
            }
        );
        assert_eq!(book.waiting(), 1);
        assert_eq!(acked_ids(&mut book, 1), [3]);
    }

    #[test]
    fn a_redelivered_copy_is_recognised_only_while_its_original_waits() {
        let mut book = AckBook::default();
        book.set_connected(true);
        book.push(1, vec![message(7, "x")]);
        let mut copy = message(7, "x");
        copy.dup = true;
        assert!(book.holds(&copy));
        assert!(!book.holds(&message(7, "other payload")));
        assert!(!book.holds(&message(8, "x")));
        acked_ids(&mut book, 1);
        assert!(
            !book.holds(&copy),
            "acknowledged: a copy now is a new delivery"
        );
    }

    #[test]
    fn a_new_session_drops_what_the_old_one_owed() {
        let mut book = AckBook::default();
        book.push(1, vec![message(1, "a"), message(2, "b")]);
        book.push(2, vec![message(3, "c")]);
        assert_eq!(book.new_session(), 3);
        book.set_connected(true);
        assert_eq!(acked_ids(&mut book, 2), Vec::<u16>::new());
        book.push(3, vec![message(1, "new")]);
        assert_eq!(acked_ids(&mut book, 3), [1]);
    }
}
