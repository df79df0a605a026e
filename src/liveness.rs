//! Proof of life for systemd's watchdog: the pipeline and the store writer each beat from
//! their own loop, and the daemon tells systemd `WATCHDOG=1` only while both beat, so a
//! wedged pipeline or a commit that never returns gets the daemon restarted
//! (`WatchdogSec=` in systemd/edgewatch.service). Also `READY=1` once the store is open and
//! the web listens, and `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` (not under
//! systemd) every notification is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The beats of the loops the watchdog vouches for, in milliseconds since `base`.
#[derive(Debug)]
pub struct Liveness {
    base: Instant,
    pipeline: AtomicU64,
    writer: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            base: Instant::now(),
            pipeline: AtomicU64::new(0),
            writer: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The pipeline's loop went round (its tick).
    pub fn beat_pipeline(&self) {
        self.pipeline.store(self.now(), Ordering::Relaxed);
    }

    /// The store writer's loop went round (idle tick or finished commit).
    pub fn beat_writer(&self) {
        self.writer.store(self.now(), Ordering::Relaxed);
    }

    /// `Err(part)` when `part` has not beaten within `max_age`.
    pub fn check(&self, max_age: Duration) -> Result<(), &'static str> {
        let now = self.now();
        let max = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        for (part, beat) in [("pipeline", &self.pipeline), ("store writer", &self.writer)] {
            if now.saturating_sub(beat.load(Ordering::Relaxed)) > max {
                return Err(part);
            }
        }
        Ok(())
    }
}

/// How often the writer beats when it has nothing to commit.
pub const WRITER_BEAT: Duration = Duration::from_secs(1);

/// Tells systemd the daemon is ready (store open, web listening).
pub fn notify_ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "could not notify systemd (READY=1)");
    }
}

/// Tells systemd the daemon is reloading its config (`READY=1` follows when done).
pub fn notify_reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// When systemd's watchdog is on (`WATCHDOG_USEC` for this process): pings it every half
/// period while the pipeline and the writer both beat; stops pinging (and says why) when one
/// of them has not beaten for half a period (at least 3 s), so systemd restarts the daemon.
/// Ends at `shutdown`.
pub async fn watchdog(liveness: std::sync::Arc<Liveness>, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = period / 2;
    let max_age = every.max(Duration::from_secs(3));
    tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match liveness.check(max_age) {
            Ok(()) => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Err(part) => {
                tracing::error!(
                    part,
                    "no sign of life from the {part} for {} s: not pinging systemd's watchdog",
                    max_age.as_secs()
                );
                let _ = sd_notify::notify(&[NotifyState::Status(&format!(
                    "the {part} is not responding"
                ))]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_loops_must_beat() {
        let l = Liveness::default();
        l.beat_pipeline();
        l.beat_writer();
        assert_eq!(l.check(Duration::from_secs(1)), Ok(()));
        l.writer.store(0, Ordering::Relaxed);
        l.pipeline.store(l.now() + 10_000, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.check(Duration::from_millis(10)), Err("store writer"));
    }
}
