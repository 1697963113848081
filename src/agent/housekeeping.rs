//! The state dir's upkeep, in a task of its own beside the intake and the dispatcher:
//!
//! - every [`STATE_CHECK_EVERY`] it checks that the database and the lock file are still the
//!   files the agent opened. Deleted or replaced, the agent stops (exit 1) so that its service
//!   manager restarts it on a store it can trust, instead of carrying on unseen while a second
//!   agent could start beside it;
//! - at start and every [`PRUNE_EVERY`] it deletes finished jobs older than `keep_jobs_for`;
//! - while the store cannot be written it probes it at the growing interval
//!   [`StoreHealth`](super::store_health::StoreHealth) keeps, and once a write works it puts
//!   back in the queue the jobs the outage left "uploading" and lets uploads start again.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FOLDER_CHECK_EVERY, Shared, sleep_until_opt};
use crate::chain;
use crate::store::{JobState, StoreError};

/// How often the database and the lock file are checked to still be in place: as often as the
/// watched folders, so an agent whose store was deleted stops within seconds.
pub(super) const STATE_CHECK_EVERY: Duration = FOLDER_CHECK_EVERY;

/// How often finished jobs older than `keep_jobs_for` are pruned (and once at start).
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `stop`; returns the reason the agent must stop when the store or its lock file
/// was deleted or replaced.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), StoreError> {
    let mut check = tokio::time::interval(STATE_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last reason the files could not be checked, so it is logged once.
    let mut check_trouble: Option<String> = None;
    loop {
        // Read at each turn: an outage that starts meanwhile is probed from the next turn on,
        // at most one `check` tick later.
        let probe_at = shared.store_health.next_probe();
        let notice_at = shared
            .store_health
            .notice_due(crate::notify::pause_notice_after());
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = check.tick() => check_in_place(&shared, &mut check_trouble)?,
            _ = prune.tick() => prune_old_jobs(&shared).await,
            _ = sleep_until_opt(probe_at) => probe(&shared),
            _ = sleep_until_opt(notice_at) => announce_outage(&shared),
        }
    }
}

/// The store has not been writable for as long as a pause takes to be announced: `paused`
/// goes to `[[notify]]` from memory, since the store cannot take the event (see
/// `notify::delivery::UnstoredNotice`); it is recorded, with its `resumed`, once the store can.
fn announce_outage(shared: &Shared) {
    let Some(outage) = shared.store_health.announce() else {
        return;
    };
    tracing::info!(
        "uploads have been paused for {} min (the state store cannot be written): telling [[notify]] from memory",
        crate::notify::pause_notice_after().as_secs().div_ceil(60)
    );
    let mut notice =
        crate::notify::Notice::new(crate::notify::EventKind::Paused, OffsetDateTime::now_utc());
    notice.reason = Some(outage.reason);
    shared.outbox.send_unstored(notice);
}

/// The database and the lock file are still the ones opened; a check that cannot be made
/// (permissions changed under us) is logged once and does not stop the agent.
fn check_in_place(shared: &Shared, trouble: &mut Option<String>) -> Result<(), StoreError> {
    let result = shared
        .store
        .still_in_place()
        .and_then(|()| shared.lock.still_in_place());
    match result {
        Ok(()) => *trouble = None,
        Err(err @ StoreError::Vanished { .. }) => return Err(err),
        Err(err) => {
            let text = chain(&err);
            if trouble.as_ref() != Some(&text) {
                tracing::warn!("cannot check that the state store is still in place: {text}");
                *trouble = Some(text);
            }
        }
    }
    Ok(())
}

async fn prune_old_jobs(shared: &Arc<Shared>) {
    if !shared.store_health.is_writable() {
        return;
    }
    let keep = shared.settings().keep_jobs_for;
    let Some(before) = time::Duration::try_from(keep)
        .ok()
        .and_then(|keep| OffsetDateTime::now_utc().checked_sub(keep))
    else {
        return;
    };
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || store.prune_finished(before)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(pruned)) => tracing::info!(
            "removed {pruned} job(s) that finished more than {} ago from the state store",
            humantime::format_duration(keep)
        ),
        Ok(Err(err)) => {
            shared.store_failed("cannot prune old finished jobs", &err);
        }
        Err(err) => tracing::warn!("pruning old finished jobs failed: {err}"),
    }
}

/// One write to learn whether the store works again; if it does, the outage ends.
fn probe(shared: &Arc<Shared>) {
    let result = shared
        .store
        .probe_write()
        .and_then(|()| requeue_orphans(shared));
    match result {
        Ok(()) => shared.store_writable_again(),
        Err(err) if err.retryable() => {
            if shared.store_health.probe_failed(&err, Instant::now()) {
                tracing::warn!("the state store still cannot be written: {}", chain(&err));
                shared.publish_store_outage();
            } else {
                tracing::debug!("the state store still cannot be written: {}", chain(&err));
            }
        }
        Err(err) => {
            // The write worked; what failed was refused for a reason of its own.
            tracing::error!("after the state store came back: {}", chain(&err));
            shared.store_writable_again();
        }
    }
}

/// Jobs recorded as uploading that no worker is on: their worker ended while the store could
/// not record how (it stopped at a failure it could not write down). Back in the queue, they
/// resume on their video from the last chunk recorded.
fn requeue_orphans(shared: &Shared) -> Result<(), StoreError> {
    let busy = shared.dispatch.busy();
    for job in shared.store.unfinished()? {
        if job.state != JobState::Uploading || busy.contains(&job.id) {
            continue;
        }
        match shared.store.set_waiting(job.id) {
            Ok(()) => tracing::info!(
                job = job.id,
                file = %job.rel_path.display(),
                "back in the queue: its upload stopped while the state store could not be written"
            ),
            // A worker ended it meanwhile: its state says so.
            Err(StoreError::WrongState { .. } | StoreError::UnknownJob(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
