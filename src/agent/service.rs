//! What the service manager and `status` are told: sd-notify READY / STATUS= / WATCHDOG=1 /
//! STOPPING for systemd `Type=notify`, and the one-line summary of the queue.

use std::time::Duration;

use super::Shared;
use crate::chain;
use crate::escape::escaped;
use crate::store::{JobStore, QueueSummary};

/// Tells the service manager (systemd `Type=notify`) about a state; without `NOTIFY_SOCKET`
/// this does nothing.
pub(super) fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!("cannot notify the service manager: {err}");
    }
}

/// Half the watchdog interval systemd set (`WatchdogSec=`), else every 10 s for STATUS.
pub(super) fn heartbeat_period() -> Duration {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(10)
    }
}

/// One line for STATUS=: the queue, and why it is paused (the store, the platform).
pub(super) fn status_line(shared: &Shared) -> String {
    let pause = shared.dispatch.pause_reason();
    let store_outage = shared.store_health.current();
    let mut line = summary_line(&shared.store, pause.is_some() || store_outage.is_some());
    if let Some(outage) = store_outage {
        line.push_str("; PAUSED: ");
        line.push_str(&outage.reason);
    }
    if let Some(reason) = pause {
        line.push_str("; PAUSED: ");
        line.push_str(&escaped(&reason).to_string());
    }
    match shared.store.missing_folders() {
        Ok(missing) => {
            for folder in missing {
                // Escaped: a newline would end STATUS= and start a key of its own.
                line.push_str(&format!("; FOLDER MISSING: {}", escaped(&folder.path)));
            }
        }
        Err(err) => line.push_str(&format!("; folders' state unreadable: {}", chain(&err))),
    }
    line
}

/// A one-line summary of the queue, or why it cannot be read.
fn summary_line(store: &JobStore, queue_paused: bool) -> String {
    match store.summary() {
        Ok(summary) => queue_counts(&ShownCounts::new(&summary, queue_paused)),
        Err(err) => format!("queue unreadable: {}", chain(&err)),
    }
}

/// The jobs per state as `status` and the service manager show them. While the whole queue is
/// paused nothing uploads: the jobs waiting for a worker are held by the pause, and the one
/// uploading is trying whether the platform is back, so both count as paused (a line saying
/// PAUSED beside "1 uploading, 0 paused" contradicts itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShownCounts {
    pub waiting: u64,
    pub uploading: u64,
    /// Jobs of files that changed and wait to be stable again, and, while the queue is paused,
    /// every job that would otherwise wait or upload.
    pub paused: u64,
    /// Of `paused`: the jobs uploading during a queue pause, to see whether the platform is
    /// back (or that started before the pause and have not noticed yet).
    pub trying: u64,
    pub finishing: u64,
    pub done: u64,
    pub failed: u64,
}

impl ShownCounts {
    pub fn new(summary: &QueueSummary, queue_paused: bool) -> ShownCounts {
        let shown = ShownCounts {
            waiting: summary.waiting,
            uploading: summary.uploading,
            paused: summary.paused,
            trying: 0,
            finishing: summary.finishing,
            done: summary.done,
            failed: summary.failed,
        };
        if !queue_paused {
            return shown;
        }
        ShownCounts {
            waiting: 0,
            uploading: 0,
            paused: summary.paused + summary.waiting + summary.uploading,
            trying: summary.uploading,
            ..shown
        }
    }
}

/// The counts, with files being moved to done/ or failed/ ("finishing") shown only when there
/// are any: they are a moment's state, except when a move keeps failing.
pub fn queue_counts(s: &ShownCounts) -> String {
    let mut line = format!(
        "{} waiting, {} uploading, {} paused",
        s.waiting, s.uploading, s.paused
    );
    if s.trying > 0 {
        line.push_str(&format!(
            " ({} trying whether the platform is back)",
            s.trying
        ));
    }
    if s.finishing > 0 {
        line.push_str(&format!(", {} finishing", s.finishing));
    }
    line.push_str(&format!(", {} done, {} failed", s.done, s.failed));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishing_files_are_counted_on_their_own_and_only_when_there_are_any() {
        let mut summary = QueueSummary {
            waiting: 3,
            uploading: 1,
            paused: 2,
            finishing: 0,
            done: 7,
            failed: 1,
            ..QueueSummary::default()
        };
        let line = |summary: &QueueSummary| queue_counts(&ShownCounts::new(summary, false));
        assert_eq!(
            line(&summary),
            "3 waiting, 1 uploading, 2 paused, 7 done, 1 failed"
        );
        summary.finishing = 4;
        assert_eq!(
            line(&summary),
            "3 waiting, 1 uploading, 2 paused, 4 finishing, 7 done, 1 failed"
        );
    }

    #[test]
    fn in_a_paused_queue_nothing_counts_as_waiting_or_uploading() {
        let summary = QueueSummary {
            waiting: 3,
            uploading: 1,
            paused: 2,
            done: 7,
            ..QueueSummary::default()
        };
        let shown = ShownCounts::new(&summary, true);
        assert_eq!((shown.waiting, shown.uploading, shown.paused), (0, 0, 6));
        assert_eq!(
            queue_counts(&shown),
            "0 waiting, 0 uploading, 6 paused (1 trying whether the platform is back), 7 done, 0 failed"
        );
        let idle = QueueSummary {
            waiting: 2,
            ..QueueSummary::default()
        };
        assert_eq!(
            queue_counts(&ShownCounts::new(&idle, true)),
            "0 waiting, 0 uploading, 2 paused, 0 done, 0 failed"
        );
    }
}
