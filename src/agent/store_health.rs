//! Whether the state store can be written. A store call that fails for a reason outside the
//! request (a full disk, an I/O error, a read-only or locked database: [`StoreError::retryable`])
//! starts an outage: no upload starts, the failure is logged once, and the store is probed at a
//! growing interval until a write works again. Everything here is bookkeeping with the time
//! passed in; the probing itself is `housekeeping`'s.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::chain;
use crate::retry::RetryPolicy;
use crate::store::StoreError;

/// The longest wait between two probes of a store that cannot be written: a probe is one tiny
/// local write, and the queue waits on it.
pub(super) const PROBE_CAP: Duration = Duration::from_secs(30);

/// An outage that ended this recently and starts again continues its probe schedule instead of
/// starting over, so a store that flaps (a write fits, the next does not) is not logged at the
/// rate of the shortest wait.
const FLAP_WINDOW: Duration = Duration::from_secs(60);

pub(super) struct StoreHealth {
    outage: Mutex<Outage>,
    /// `true` while the store can be written; workers holding a result they could not record
    /// wait on it.
    writable: watch::Sender<bool>,
    probe_delays: RetryPolicy,
}

#[derive(Default)]
struct Outage {
    current: Option<Unwritable>,
    /// When the last outage ended, and how many probes it had failed.
    last_ended: Option<(Instant, u32)>,
}

struct Unwritable {
    /// For the log, `status` and STATUS=.
    reason: String,
    /// Told to `[[notify]]` as a pause (from memory: the store cannot take the event).
    announced: bool,
    since: Instant,
    since_wall: OffsetDateTime,
    failed_probes: u32,
    next_probe: Instant,
}

/// What a failed store call meant.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reported {
    /// The request was refused (a wrong state, an unknown job): the caller's to handle.
    Refused,
    /// The store cannot be written; this failure started the outage (log it).
    Started,
    /// The store was already known to be unwritable (said before; stay quiet).
    Ongoing,
}

/// An outage as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OutageView {
    pub reason: String,
    pub since: OffsetDateTime,
}

impl StoreHealth {
    pub(super) fn new(probe_delays: RetryPolicy) -> StoreHealth {
        StoreHealth {
            outage: Mutex::new(Outage::default()),
            writable: watch::Sender::new(true),
            probe_delays,
        }
    }

    fn outage(&self) -> MutexGuard<'_, Outage> {
        // Every change below is a plain assignment: a panic elsewhere cannot leave it half done.
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A store call failed with `err` at `now` (`wall` is the same moment on the wall clock).
    pub(super) fn report(&self, err: &StoreError, now: Instant, wall: OffsetDateTime) -> Reported {
        if !err.retryable() {
            return Reported::Refused;
        }
        let mut outage = self.outage();
        if outage.current.is_some() {
            return Reported::Ongoing;
        }
        let failed_probes = match outage.last_ended {
            Some((ended, failed)) if now.saturating_duration_since(ended) < FLAP_WINDOW => failed,
            _ => 0,
        };
        outage.current = Some(Unwritable {
            reason: reason_for(err),
            announced: false,
            since: now,
            since_wall: wall,
            failed_probes,
            next_probe: now + self.probe_delays.delay(failed_probes + 1, None),
        });
        drop(outage);
        self.writable.send_replace(false);
        Reported::Started
    }

    /// When to probe the store next, during an outage.
    pub(super) fn next_probe(&self) -> Option<Instant> {
        self.outage().current.as_ref().map(|u| u.next_probe)
    }

    /// A probe failed with `err`: the next one waits longer. True when the reason changed
    /// (worth a log line).
    pub(super) fn probe_failed(&self, err: &StoreError, now: Instant) -> bool {
        let mut outage = self.outage();
        let Some(current) = outage.current.as_mut() else {
            return false;
        };
        current.failed_probes = current.failed_probes.saturating_add(1);
        current.next_probe = now + self.probe_delays.delay(current.failed_probes + 1, None);
        let reason = reason_for(err);
        let changed = reason != current.reason;
        current.reason = reason;
        changed
    }

    /// A probe worked: the outage is over. Its reason and how long it lasted, if there was one.
    pub(super) fn recovered(&self, now: Instant) -> Option<(String, Duration)> {
        let mut outage = self.outage();
        let ended = outage.current.take()?;
        outage.last_ended = Some((now, ended.failed_probes));
        drop(outage);
        self.writable.send_replace(true);
        Some((ended.reason, now.saturating_duration_since(ended.since)))
    }

    /// When the current outage, not announced yet, is due to be told to `[[notify]]` as a
    /// pause: once it has lasted `after`, like any pause.
    pub(super) fn notice_due(&self, after: Duration) -> Option<Instant> {
        self.outage()
            .current
            .as_ref()
            .filter(|u| !u.announced)
            .map(|u| u.since + after)
    }

    /// The current outage is being announced; `None` when it ended meanwhile.
    pub(super) fn announce(&self) -> Option<OutageView> {
        let mut outage = self.outage();
        let current = outage.current.as_mut()?;
        current.announced = true;
        Some(OutageView {
            reason: current.reason.clone(),
            since: current.since_wall,
        })
    }

    pub(super) fn current(&self) -> Option<OutageView> {
        self.outage().current.as_ref().map(|u| OutageView {
            reason: u.reason.clone(),
            since: u.since_wall,
        })
    }

    pub(super) fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    /// Returns once the store can be written (at once if it can).
    pub(super) async fn until_writable(&self) {
        let mut writable = self.writable.subscribe();
        // The sender lives as long as `self`: waiting cannot fail while we are borrowed.
        let _ = writable.wait_for(|w| *w).await;
    }
}

/// The pause reason for an unwritable store, in words for the log and `status`.
fn reason_for(err: &StoreError) -> String {
    format!(
        "the state store cannot be written ({}); nothing is lost, uploads resume by themselves once it can",
        chain(err)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn disk_full() -> StoreError {
        StoreError::Sqlite {
            path: PathBuf::from("/state/jobs.sqlite3"),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full".into()),
            ),
        }
    }

    fn io_error() -> StoreError {
        StoreError::Io {
            path: PathBuf::from("/state/jobs.sqlite3"),
            source: std::io::Error::other("input/output error"),
        }
    }

    fn health() -> StoreHealth {
        let mut policy = RetryPolicy::new(u32::MAX, PROBE_CAP);
        policy.jitter = 0.0;
        StoreHealth::new(policy)
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_reported_once_probed_less_and_less_often_and_ends_by_itself() {
        let health = health();
        let wall = OffsetDateTime::UNIX_EPOCH;
        let refused = StoreError::UnknownJob(7);
        assert_eq!(
            health.report(&refused, Instant::now(), wall),
            Reported::Refused
        );
        assert!(health.is_writable());

        // The first failure starts it; the thousand that follow are the same outage.
        assert_eq!(
            health.report(&disk_full(), Instant::now(), wall),
            Reported::Started
        );
        for _ in 0..1000 {
            assert_eq!(
                health.report(&io_error(), Instant::now(), wall),
                Reported::Ongoing
            );
        }
        assert!(!health.is_writable());
        let view = health.current().unwrap();
        assert!(
            view.reason.contains("database or disk is full"),
            "{}",
            view.reason
        );
        assert_eq!(view.since, wall);

        // Probes back off: 1, 1, 2, 3, 5, … s, capped.
        let mut waits = Vec::new();
        for _ in 0..12 {
            let next = health.next_probe().unwrap();
            waits.push(next - Instant::now());
            tokio::time::advance(next - Instant::now()).await;
            assert!(!health.probe_failed(&disk_full(), Instant::now()));
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30]);
        // Another reason is news.
        assert!(health.probe_failed(&io_error(), Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_releases_waiters_and_a_flapping_store_keeps_its_longer_waits() {
        let health = std::sync::Arc::new(health());
        let wall = OffsetDateTime::UNIX_EPOCH;
        health.report(&disk_full(), Instant::now(), wall);
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.until_writable().await }
        });
        for _ in 0..6 {
            tokio::time::advance(health.next_probe().unwrap() - Instant::now()).await;
            health.probe_failed(&disk_full(), Instant::now());
        }
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let (reason, lasted) = health.recovered(Instant::now()).unwrap();
        assert!(reason.contains("full"));
        assert_eq!(lasted, Duration::from_secs(1 + 1 + 2 + 3 + 5 + 8));
        waiter.await.unwrap();
        assert!(health.is_writable());
        assert_eq!(health.recovered(Instant::now()), None);

        // Failing again at once: the next probe waits as long as the last one did, not 1 s.
        assert_eq!(
            health.report(&disk_full(), Instant::now(), wall),
            Reported::Started
        );
        assert_eq!(
            health.next_probe().unwrap() - Instant::now(),
            Duration::from_secs(13)
        );
        health.recovered(Instant::now());
        // A minute later it is a new outage, probed soon.
        tokio::time::advance(FLAP_WINDOW).await;
        health.report(&disk_full(), Instant::now(), wall);
        assert_eq!(
            health.next_probe().unwrap() - Instant::now(),
            Duration::from_secs(1)
        );
    }
}
