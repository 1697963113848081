//! What the service manager and `status` are told: sd-notify READY / STATUS= / WATCHDOG=1 /
//! STOPPING for systemd `Type=notify`, and the one-line summary of the queue.

use std::time::Duration;

use super::Shared;
use crate::chain;
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
    let mut line = summary_line(&shared.store);
    if let Some(outage) = shared.store_health.current() {
        line.push_str("; PAUSED: ");
        line.push_str(&outage.reason);
    }
    if let Some(reason) = shared.dispatch.pause_reason() {
        line.push_str("; PAUSED: ");
        line.push_str(&reason);
    }
    match shared.store.missing_folders() {
        Ok(missing) => {
            for folder in missing {
                line.push_str(&format!("; FOLDER MISSING: {}", folder.path.display()));
            }
        }
        Err(err) => line.push_str(&format!("; folders' state unreadable: {}", chain(&err))),
    }
    line
}

/// A one-line summary of the queue, or why it cannot be read.
fn summary_line(store: &JobStore) -> String {
    match store.summary() {
        Ok(summary) => queue_counts(&summary),
        Err(err) => format!("queue unreadable: {}", chain(&err)),
    }
}

/// The counts, with files being moved to done/ or failed/ ("finishing") shown only when there
/// are any: they are a moment's state, except when a move keeps failing.
pub fn queue_counts(s: &QueueSummary) -> String {
    let mut line = format!(
        "{} waiting, {} uploading, {} paused",
        s.waiting, s.uploading, s.paused
    );
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
        assert_eq!(
            queue_counts(&summary),
            "3 waiting, 1 uploading, 2 paused, 7 done, 1 failed"
        );
        summary.finishing = 4;
        assert_eq!(
            queue_counts(&summary),
            "3 waiting, 1 uploading, 2 paused, 4 finishing, 7 done, 1 failed"
        );
    }
}
