//! Commit acknowledgements: how a source learns that the readings it handed to the pipeline
//! are durably in the store, so that it can acknowledge them upstream (an MQTT PUBACK) only
//! then. A message is then either in the store or still at the broker.
//!
//! A source numbers its batches 1, 2, 3, ... and attaches a [`CommitMark`] to each. The
//! pipeline moves the mark into its output, and the store writer releases it after the
//! durable commit that holds the batch's readings. Batches of one source are committed in
//! the order they were sent, so "committed through N" is a single number per source, and
//! releasing is one atomic compare, never a wait: the writer is never slowed by a source.

use tokio::sync::watch;

/// The source's side: hands out marks and tells which sequence is committed.
#[derive(Debug)]
pub struct CommitTracker {
    committed: watch::Sender<u64>,
    next: u64,
}

impl Default for CommitTracker {
    fn default() -> Self {
        CommitTracker {
            committed: watch::Sender::new(0),
            next: 1,
        }
    }
}

impl CommitTracker {
    /// A mark for the next batch; its sequence is one more than the previous mark's.
    pub fn mark(&mut self) -> CommitMark {
        let seq = self.next;
        self.next += 1;
        CommitMark {
            committed: self.committed.clone(),
            seq,
        }
    }

    /// The sequence of the last mark handed out (0 before the first).
    pub fn last_marked(&self) -> u64 {
        self.next - 1
    }

    /// Every batch up to and including this sequence is committed.
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// A receiver that wakes when the committed sequence advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }
}

/// Travels with a batch from the source through the pipeline to the store writer.
#[derive(Clone, Debug)]
pub struct CommitMark {
    committed: watch::Sender<u64>,
    seq: u64,
}

impl CommitMark {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Called by the store writer once the commit holding this batch is durable.
    pub fn release(self) {
        let seq = self.seq;
        self.committed.send_if_modified(|c| {
            if seq > *c {
                *c = seq;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_advance_the_committed_sequence_and_never_go_back() {
        let mut tracker = CommitTracker::default();
        let (a, b, c) = (tracker.mark(), tracker.mark(), tracker.mark());
        assert_eq!((a.seq(), b.seq(), c.seq()), (1, 2, 3));
        assert_eq!(tracker.committed(), 0);
        b.release();
        assert_eq!(tracker.committed(), 2);
        a.release();
        assert_eq!(
            tracker.committed(),
            2,
            "an older release does not move it back"
        );
        c.release();
        assert_eq!(tracker.committed(), 3);
        assert_eq!(tracker.last_marked(), 3);
    }

    #[tokio::test]
    async fn a_subscriber_wakes_on_release() {
        let mut tracker = CommitTracker::default();
        let mut rx = tracker.subscribe();
        let mark = tracker.mark();
        let waiter = tokio::spawn(async move {
            rx.wait_for(|c| *c >= 1).await.unwrap();
        });
        mark.release();
        waiter.await.unwrap();
    }
}
