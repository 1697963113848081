//! When a queue pause is told to `[[notify]]`: only once it has lasted
//! [`PAUSE_NOTICE_AFTER`](crate::notify::PAUSE_NOTICE_AFTER) (a network blip of a few seconds is not an alert), once per pause.
//! The wait counts from the pause's start as the store keeps it, which a restart soon after
//! carries over (see [`JobStore::forget_queue_pause`]): an agent that crash-loops announces its
//! pause like one that runs.
//! The event itself is written by the store, in one transaction with the check that the same
//! pause is still on ([`JobStore::announce_pause`]); the end of an announced pause is a
//! `resumed`, written with the end of the pause.

use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::notify::pause_notice_after;
use crate::store::JobStore;

/// How long to wait before trying again when the store could not record the announcement.
const STORE_RETRY: Duration = Duration::from_secs(10);

/// Starts the wait for the pause that began at `since` (read back from the store, so it is the
/// store's own record of the pause). Returns at once.
pub(super) fn announce_if_long(store: &Arc<JobStore>, stop: &CancellationToken) {
    let since = match store.queue_pause() {
        Ok(Some((_, since))) => since,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(
                "cannot read the pause to announce it later: {}",
                chain(&err)
            );
            return;
        }
    };
    // The deadline is taken now, not when the task first runs, and counts from the pause's
    // start as stored: a pause an earlier run began (it crashed, it was restarted) has already
    // used up part of the wait, or all of it.
    tokio::spawn(announce_after(
        Arc::downgrade(store),
        since,
        tokio::time::Instant::now() + notice_wait(since, OffsetDateTime::now_utc()),
        stop.clone(),
    ));
}

/// How long from `now` until a pause that began at `since` is announced.
fn notice_wait(since: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let lasted = Duration::try_from(now - since).unwrap_or_default();
    pause_notice_after().saturating_sub(lasted)
}

/// Waits until `deadline`, then has the store announce the pause that began at `since` if it
/// is still on. Several waits for one pause (its reason changed) announce it once. The store
/// is held weakly: the agent closes it before it lets go of the state dir's lock (see
/// `notify::Outbox`), and a wait must not keep it open.
async fn announce_after(
    store: Weak<JobStore>,
    since: OffsetDateTime,
    deadline: tokio::time::Instant,
    stop: CancellationToken,
) {
    let mut deadline = deadline;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let Some(announced) = store.upgrade().map(|store| store.announce_pause(since)) else {
            return;
        };
        match announced {
            Ok(true) => {
                tracing::info!(
                    "uploads have been paused for {} min: telling [[notify]]",
                    pause_notice_after().as_secs().div_ceil(60)
                );
                return;
            }
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(
                    "cannot record that uploads are paused, for [[notify]] (trying again): {}",
                    chain(&err)
                );
                deadline = tokio::time::Instant::now() + STORE_RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::EventKind;
    use crate::notify::PAUSE_NOTICE_AFTER;
    use crate::store::NotifyRoute;

    fn store_with_route(dir: &std::path::Path) -> Arc<JobStore> {
        let store = Arc::new(JobStore::open(dir).unwrap());
        store
            .set_notify_routes(&[NotifyRoute::for_tests(
                "hook",
                &[EventKind::Paused, EventKind::Resumed],
            )])
            .unwrap();
        store
    }

    fn sent(store: &JobStore) -> Vec<String> {
        store
            .pending_notices("hook", 10)
            .unwrap()
            .into_iter()
            .map(|p| p.notice.event)
            .collect()
    }

    /// Lets the spawned waits run up to the (paused) clock.
    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_announced_after_two_minutes_once_and_its_end_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_route(dir.path());
        let stop = CancellationToken::new();
        store.set_queue_pause(Some("network down")).unwrap();
        announce_if_long(&store, &stop);
        advance(Duration::from_secs(119)).await;
        assert!(sent(&store).is_empty(), "not before 2 minutes");
        // The reason changes: the same pause, waited for again, still announced once.
        store.set_queue_pause(Some("login refused")).unwrap();
        announce_if_long(&store, &stop);
        advance(Duration::from_secs(2)).await;
        assert_eq!(sent(&store), ["paused"]);
        let paused = &store.pending_notices("hook", 10).unwrap()[0].notice;
        assert_eq!(paused.reason.as_deref(), Some("login refused"));
        advance(Duration::from_secs(120)).await;
        assert_eq!(sent(&store), ["paused"]);

        store.set_queue_pause(None).unwrap();
        assert_eq!(sent(&store), ["paused", "resumed"]);
        // A second end (or a blip after it) says nothing more.
        store.set_queue_pause(None).unwrap();
        assert_eq!(sent(&store), ["paused", "resumed"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_blip_sends_neither_paused_nor_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_route(dir.path());
        let stop = CancellationToken::new();
        store.set_queue_pause(Some("network down")).unwrap();
        announce_if_long(&store, &stop);
        advance(Duration::from_secs(30)).await;
        store.set_queue_pause(None).unwrap();
        // Another pause starts before the first wait ends: its own two minutes count.
        advance(Duration::from_secs(60)).await;
        store.set_queue_pause(Some("network down again")).unwrap();
        announce_if_long(&store, &stop);
        advance(Duration::from_secs(60)).await;
        assert!(sent(&store).is_empty(), "{:?}", sent(&store));
        advance(Duration::from_secs(61)).await;
        assert_eq!(sent(&store), ["paused"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_pause_cut_by_a_restart_still_ends_with_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_route(dir.path());
        store.set_queue_pause(Some("quota")).unwrap();
        let (_, since) = store.queue_pause().unwrap().unwrap();
        assert!(store.announce_pause(since).unwrap());
        drop(store);
        let store = store_with_route(dir.path());
        // What `run` does when it starts: the old pause is over, its resumed still owed.
        assert!(store.forget_queue_pause().unwrap());
        assert_eq!(store.queue_pause().unwrap(), None);
        // Paused again in this run: not announced a second time.
        store.set_queue_pause(Some("quota")).unwrap();
        let (_, since) = store.queue_pause().unwrap().unwrap();
        assert!(!store.announce_pause(since).unwrap());
        store.set_queue_pause(None).unwrap();
        assert_eq!(sent(&store), ["paused", "resumed"]);
        assert!(!store.forget_queue_pause().unwrap());
    }

    #[test]
    fn the_wait_counts_from_the_pause_s_start() {
        let since = time::macros::datetime!(2026-12-01 14:00:00 UTC);
        assert_eq!(notice_wait(since, since), PAUSE_NOTICE_AFTER);
        assert_eq!(
            notice_wait(since, since + Duration::from_secs(100)),
            Duration::from_secs(20)
        );
        assert_eq!(
            notice_wait(since, since + Duration::from_secs(600)),
            Duration::ZERO
        );
        // A clock set back: the whole wait, never a panic.
        assert_eq!(
            notice_wait(since, since - Duration::from_secs(60)),
            PAUSE_NOTICE_AFTER
        );
    }

    /// Hostile test of issue 12, D3: an agent that is restarted every minute while paused
    /// announces the pause 2 minutes after it began, not never.
    #[tokio::test(start_paused = true)]
    async fn a_pause_across_restarts_is_announced_two_minutes_after_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_route(dir.path());
        store.set_queue_pause(Some("network down")).unwrap();
        let (_, began) = store.queue_pause().unwrap().unwrap();
        // The run lasted 110 s, then the agent died.
        store
            .backdate_queue_pause(Duration::from_secs(110))
            .unwrap();
        drop(store);

        let store = store_with_route(dir.path());
        let stop = CancellationToken::new();
        assert!(
            store.forget_queue_pause().unwrap(),
            "the earlier pause is open"
        );
        assert_eq!(
            store.queue_pause().unwrap(),
            None,
            "not paused until met again"
        );
        // The next run meets the same cause at once: the same pause, from its first start.
        store.set_queue_pause(Some("network down")).unwrap();
        let (_, since) = store.queue_pause().unwrap().unwrap();
        assert_eq!(since, began - Duration::from_secs(110));
        announce_if_long(&store, &stop);
        advance(Duration::from_secs(5)).await;
        assert!(sent(&store).is_empty(), "{:?}", sent(&store));
        advance(Duration::from_secs(6)).await;
        assert_eq!(sent(&store), ["paused"]);

        // A pause that ends clears it: the next one counts from its own start.
        store.set_queue_pause(None).unwrap();
        drop(store);
        let store = store_with_route(dir.path());
        assert!(!store.forget_queue_pause().unwrap());
        store.set_queue_pause(Some("quota")).unwrap();
        let (_, fresh) = store.queue_pause().unwrap().unwrap();
        assert!(fresh >= began, "{fresh} {began}");
    }
}
