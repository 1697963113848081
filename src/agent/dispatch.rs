//! Dispatch: starts workers on waiting jobs, `parallel` at a time, and is what a worker does
//! with one job: upload it, then decide whether it goes to done/ or failed/, waits for its file
//! to settle again, or pauses the whole queue (credentials, quota, network: not the file's
//! fault).
//!
//! A VideoManager the platform does not know (404 on create: a wrong `video_manager_id`) holds
//! only the uploads into it. Failing its files to failed/ would blame them for the config and
//! leave a `retry` for each once it is fixed; pausing everything stopped the folders that are
//! fine. So its jobs wait in their folder (nothing moves), the log, `status` and `/healthz` say
//! why, one job probes now and then (less and less often) and at each reload, and the other
//! folders keep uploading. A hold found while the queue was paused ends that pause: the
//! platform answered. [`DispatchState`] (in `dispatch_state.rs`) is the bookkeeping these decisions read
//! and change; `job_observer.rs` records an upload as it goes. Moving a file
//! to done/ or failed/ is a task of its own ([`start_finish`]): the worker's upload slot is free
//! meanwhile, and no loop waits for a copy that can take minutes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::claimed_job;
use super::dispatch_state::{DispatchState, Start};
use super::job_observer::JobObserver;
use super::{FINISH_RETRY_EVERY, Shared, sleep_until_opt};
use crate::chain;
use crate::config::{human_rate, human_size};
use crate::escape::escaped;
use crate::finish;
use crate::ready::{self, Inspection};
use crate::store::{Job, JobError, JobStore, Outcome, StoreError};
use crate::vmpro::api::{Platform, UploadUrl};
use crate::vmpro::chunks::{ResumePoint, UploadRequest, upload_file};
use crate::vmpro::error::{Blame, Disposition, VmproError};

/// How long the dispatcher waits before asking a failing state store again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// What the dispatcher does next.
#[derive(Debug)]
enum Next {
    Start(Box<Job>),
    /// Until the deadline, or until woken when there is none.
    Wait(Option<Instant>),
    /// The queue could not be read.
    Unreadable(StoreError),
}

/// The dispatcher's decision: the oldest waiting job no worker is on, if a worker may start,
/// leaving out the jobs of held VideoManagers (but for one probe each when it is time).
/// `video_manager_of` tells which VideoManager a job uploads into (see [`video_manager_for`]);
/// `None` for a folder no longer configured, whose jobs wait untouched: it may come back, and
/// guessing a VideoManager for them could upload a customer's files into another's.
fn next_job(
    state: &DispatchState,
    store: &JobStore,
    parallel: usize,
    now: Instant,
    video_manager_of: &dyn Fn(&Path, Option<u64>) -> Option<u64>,
) -> Next {
    let busy = match state.may_start(now, parallel) {
        Ok(busy) => busy,
        Err(until) => return Next::Wait(until),
    };
    let holds = state.holds(now);
    let next = store.next_waiting_where(&busy, |folder, bound| {
        video_manager_of(folder, bound).is_some_and(|id| holds.admits(id))
    });
    match next {
        Ok(Some(job)) => Next::Start(Box::new(job)),
        // A held VideoManager's next probe wakes the dispatcher by itself.
        Ok(None) => Next::Wait(holds.next_probe),
        Err(err) => Next::Unreadable(err),
    }
}

/// The VideoManager a job uploads into: once the platform may hold the job's video (one was
/// created, or a create was sent whose answer is not settled) the one it was recorded in, also
/// after a config change (`bound`); before, the config decides, so that a wrong id fixed in the
/// config does not stick to the job. `None` when the job's folder is no longer configured: such
/// a job does not start at all (its file would also have no done/ to go to).
fn video_manager_for(
    settings: &crate::config::Settings,
    folder: &Path,
    bound: Option<u64>,
) -> Option<u64> {
    let configured = settings.video_manager_of(folder)?;
    Some(bound.unwrap_or(configured))
}

/// `bound` of [`video_manager_for`] for a job.
fn bound_video_manager(job: &Job) -> Option<u64> {
    let may_have_video = job.video_id.is_some() || job.create_sent_at.is_some();
    job.video_manager_id.filter(|_| may_have_video)
}

/// Starts workers on waiting jobs, `parallel` at a time (read at each start, so a reload can
/// change it), honouring a queue pause and a store that cannot be written, until `shutdown`.
pub(super) async fn dispatch(shared: &Arc<Shared>, shutdown: &CancellationToken) {
    // Quiet hours were logged: said once each time they begin.
    let mut quiet_said = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Registered before looking, so a wake between the look and the wait is not lost.
        let notified = shared.wake.notified();
        let parallel = shared.settings().upload.parallel;
        let now = Instant::now();
        // Quiet hours start no upload: a create now would leave an empty video for hours,
        // hold a `parallel` slot, and age its upload URL. Uploads under way wait before their
        // next request (see `vmpro::chunks`).
        let bandwidth = shared.platform().bandwidth.clone();
        let quiet_until = bandwidth
            .limits()
            .then(|| bandwidth.quiet_until())
            .flatten();
        if quiet_until.is_none() {
            quiet_said = false;
        } else if !std::mem::replace(&mut quiet_said, true) {
            let plan = shared.settings().upload.bandwidth.clone();
            let words = jiff::Zoned::now();
            tracing::info!(
                "{}: queued files wait; no upload starts until then",
                crate::bandwidth::describe_now(&plan, &words)
            );
        }
        let next = if let Some(until) = quiet_until {
            Next::Wait(Some(until))
        } else if shared.store_health.is_writable() {
            // A folder another agent keeps: its queued files are that agent's to upload.
            let video_manager_of = |folder: &Path, bound| {
                if shared.holds.refusal(folder).is_some() {
                    return None;
                }
                video_manager_for(&shared.settings(), folder, bound)
            };
            next_job(
                &shared.dispatch,
                &shared.store,
                parallel,
                now,
                &video_manager_of,
            )
        } else {
            // Woken when `housekeeping` finds the store writable again.
            Next::Wait(None)
        };
        let wait_until = match next {
            Next::Start(job) => {
                start_worker(shared, shutdown, *job);
                continue;
            }
            Next::Wait(until) => until,
            // An outage is woken from when the store works again; anything else, asked again.
            Next::Unreadable(err) => {
                (!shared.store_failed("cannot read the queue", &err)).then_some(now + STORE_RETRY)
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = notified => {}
            _ = sleep_until_opt(wait_until) => {}
        }
    }
}

fn start_worker(shared: &Arc<Shared>, shutdown: &CancellationToken, job: Job) {
    // Chosen by the dispatcher under the settings of a moment ago: a reload since may have
    // removed the job's folder, and then it stays waiting (see `next_job`).
    let Some(video_manager) =
        video_manager_for(&shared.settings(), &job.folder, bound_video_manager(&job))
    else {
        return;
    };
    let start = shared.dispatch.begin(job.id);
    if shared.dispatch.probe_hold(job.id, video_manager) {
        tracing::debug!(
            file = %escaped(&job.rel_path),
            "trying whether the platform knows VideoManager {video_manager} now"
        );
    }
    let tasks = shared.tasks.clone();
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let id = job.id;
        work(&shared, job, start, video_manager, &shutdown).await;
        shared.dispatch.end(id);
        shared.wake.notify_one();
    });
}

/// Logs a failed store call that the job's path can do without (an event for the sidecar);
/// the store calls that decide where a job goes are handled where they are made.
fn log_store_error(shared: &Shared, id: i64, what: &str, result: Result<(), StoreError>) {
    if let Err(err) = result {
        shared.store_failed(&format!("cannot record {what} of job {id}"), &err);
    }
}

/// Makes a store write that must not be lost (how an upload ended), waiting out a store that
/// cannot be written: the worker keeps its result and tries again once `housekeeping` finds the
/// store writable. `Err` for a refusal, or when `shutdown` comes first (the job then stays
/// "uploading" and resumes on its video at the next start).
async fn write_when_possible(
    shared: &Shared,
    shutdown: &CancellationToken,
    what: &str,
    write: impl Fn() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    loop {
        let err = match write() {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if !shared.store_failed(what, &err) {
            return Err(err);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(err),
            _ = shared.store_health.until_writable() => {}
        }
    }
}

/// Uploads one job and decides what becomes of its file.
async fn work(
    shared: &Arc<Shared>,
    job: Job,
    start: Start,
    video_manager: u64,
    shutdown: &CancellationToken,
) {
    let id = job.id;
    let name = escaped(&job.rel_path).to_string();
    if let Err(err) = shared.store.start_attempt(id) {
        // Still waiting in the store; during an outage the dispatcher starts nothing.
        shared.store_failed(&format!("cannot start job {id}"), &err);
        return;
    }
    // A shared folder's file is claimed first: of several agents, the one whose claim wins
    // uploads it (see `shared_folder`).
    let mut job = job;
    let claim = if shared.folder(&job.folder).is_some_and(|f| f.shared)
        || claimed_job::is_claim_path(&job)
    {
        match claimed_job::take(shared, &mut job, &name, video_manager).await {
            claimed_job::Claimed::Held(claim) => Some(claim),
            claimed_job::Claimed::Ended | claimed_job::Claimed::NotNow => return,
        }
    } else {
        claimed_job::keep_in_place(shared, &job, video_manager).await
    };
    // A claimed file that changes goes back to its folder; an in-place one is there already.
    let moved_claim = claim
        .as_ref()
        .filter(|claim| !claimed_job::in_place(&job, claim));
    // The file must still be the one the job recorded: replaced or rewritten while hotfolder
    // was stopped (or since it was queued), resuming would mix old and new chunks.
    match ready::inspect(&job.path) {
        Ok(Inspection::Regular(now))
            if now.size == job.size && now.mtime_ns == i128::from(job.mtime_ns) => {}
        Ok(Inspection::Regular(_)) if moved_claim.is_some() => {
            if let Some(claim) = moved_claim {
                claimed_job::give_back(shared, &job, claim, &name);
            }
            return;
        }
        Ok(Inspection::Regular(_)) => {
            let why = "the file changed since it was queued";
            wait_until_stable_again(
                shared,
                &job,
                &name,
                why,
                "the file changed; waiting until it is stable",
            );
            return;
        }
        Ok(Inspection::Vanished) => {
            forget_vanished(shared, id, &name);
            return;
        }
        // A link, a named pipe, a folder where the file was, or a folder on the way replaced
        // by a link: not the file that was queued, and nothing to read through.
        Ok(Inspection::Skipped(reason)) => {
            forget_replaced(shared, id, &name, &format!("it is now {reason}"));
            return;
        }
        Err(err) if crate::vmpro::error::may_recover(&err) => {
            wait_until_stable_again(
                shared,
                &job,
                &name,
                &format!("it cannot be looked at now: {err}"),
                "the file cannot be looked at now (a share that dropped?); waiting until it can",
            );
            return;
        }
        Err(err) => {
            forget_replaced(shared, id, &name, &format!("it cannot be looked at: {err}"));
            return;
        }
    }
    // The inode's change time: kept as the content starts uploading and compared at every
    // later start, as a write moves it even when the mtime is put back (`touch -r`, `rsync
    // --inplace`); resuming then would mix old and new chunks.
    if let Ok(entry) = crate::nofollow::lstat(&job.path) {
        match job.content_ctime_ns {
            Some(before) if i128::from(before) != entry.ctime_ns => {
                wait_until_stable_again(
                    shared,
                    &job,
                    &name,
                    "the file was rewritten since its upload started (its change time moved, though size and modification time are as before)",
                    "the file changed; waiting until it is stable",
                );
                return;
            }
            Some(_) => {}
            None => {
                if let Ok(ctime_ns) = i64::try_from(entry.ctime_ns) {
                    log_store_error(
                        shared,
                        id,
                        "the file's change time",
                        shared.store.record_content_ctime(id, ctime_ns),
                    );
                }
            }
        }
    }
    // Which file system the folder is on now: a share that drops mid-upload leaves its mount
    // point (another file system) where the file "vanished" (see `share_gone`).
    let folder_device = folder_device(&job.folder);
    let folder = shared.folder(&job.folder);
    let (metadata, companion) =
        match super::companion::metadata_for_job(shared, &job, folder.as_ref()) {
            Ok(found) => found,
            Err(error) => {
                fail_before_upload(shared, &job, &name, error, shutdown).await;
                return;
            }
        };
    let url = match (&job.upload_url, job.url_issued_at) {
        (Some(raw), Some(issued)) => Some(UploadUrl::new(raw.clone(), SystemTime::from(issued))),
        _ => None,
    };
    let request = UploadRequest {
        path: job.path.clone(),
        // The name in the folder: a claimed file's own name in the claim folder is a key.
        file_name: job
            .rel_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        metadata,
        resume: ResumePoint {
            video_id: job.video_id.clone(),
            url,
            next_chunk: job.next_chunk,
            chunk_size: job.chunk_size,
            marker: job.marker.clone(),
            create_outcome_unknown: job.create_sent_at.is_some(),
        },
    };
    if let Start::Probe { first } = start {
        // One line per pause, not an "uploading" line per probe: nothing uploads while paused.
        if first {
            tracing::info!(file = %name, "uploads are paused; trying whether the platform is back with this file");
        } else {
            tracing::debug!(file = %name, "trying again whether the platform is back");
        }
    } else if job.total_chunks.is_some_and(|total| job.next_chunk > total) {
        tracing::info!(file = %name, video_id = job.video_id.as_deref().unwrap_or("-"), "every chunk was accepted before the restart; hashing it to finish");
    } else if job.next_chunk > 1 {
        tracing::info!(file = %name, video_id = job.video_id.as_deref().unwrap_or("-"), "resuming at chunk {}", job.next_chunk);
    } else {
        tracing::info!(file = %name, size = job.size, "uploading ({})", human_size(job.size));
    }
    let observer = JobObserver {
        shared: shared.clone(),
        id,
        name: name.clone(),
        last_logged_quarter: AtomicU64::new(0),
        probing: AtomicBool::new(matches!(start, Start::Probe { .. })),
        video_recorded: AtomicBool::new(job.video_id.is_some()),
        video_id: std::sync::Mutex::new(job.video_id.clone()),
        claim: claim.clone(),
        exclusive_folder: (claim.is_none()).then(|| job.folder.clone()),
        taken_over: Arc::new(AtomicBool::new(false)),
    };
    if job.video_manager_id != Some(video_manager)
        && let Err(err) = shared.store.record_video_manager(id, video_manager)
    {
        shared.store_failed("cannot record the job's VideoManager", &err);
    }
    let platform = shared.platform().for_video_manager(video_manager);
    let result = upload_file(&platform, request, &observer, shutdown).await;
    remember_link(shared, &platform);
    if result.is_err() && observer.taken_over.load(Ordering::Relaxed) {
        if let Some(claim) = &claim {
            shared.holds.end(claim, false);
        }
        if claim.is_some() {
            claimed_job::taken_over(shared, id, &name);
        } else {
            // An exclusive folder another agent took over: its jobs wait here untouched
            // until this agent has the folder again.
            tracing::warn!(file = %name, "another agent took this folder over; the upload stops and waits here");
            if let Err(err) = shared.store.set_waiting(id) {
                shared.store_failed(&format!("cannot requeue job {id}"), &err);
            }
        }
        return;
    }
    match result {
        Ok(report) => {
            end_pause(shared);
            release_hold(shared, video_manager);
            if let Some(companion) = &companion {
                let applied = super::companion::apply_after_upload(
                    shared,
                    &job,
                    &platform,
                    &report.video_id,
                    companion,
                    shutdown,
                    &observer,
                )
                .await;
                if applied.is_err() {
                    tracing::info!(file = %name, "stopped before the companion's metadata was applied; it is applied when the upload resumes");
                    return;
                }
            }
            shared.counters.upload_took(report.elapsed);
            // The rate as `status` shows it (the whole upload's chunks, resumes included), so
            // that the log, the sidecar and `status` give one figure.
            let rate = shared
                .store
                .job(id)
                .ok()
                .and_then(|job| crate::status_report::bytes_per_second(&job))
                .or_else(|| report.bytes_per_second())
                .map(|rate| format!(" at {}", human_rate(rate)))
                .unwrap_or_default();
            log_store_error(
                shared,
                id,
                "the upload's figures",
                shared.store.record_event(
                    id,
                    "uploaded",
                    &format!(
                        "{} ({} bytes) in {} chunks{rate}, sha256 {}",
                        human_size(report.size),
                        report.size,
                        report.chunks,
                        report.sha256
                    ),
                ),
            );
            let decided = write_when_possible(
                shared,
                shutdown,
                &format!("cannot record that job {id} uploaded"),
                || {
                    // The video id again: its first record may have failed in the same outage.
                    shared
                        .store
                        .record_video(id, &report.video_id)
                        .and_then(|()| {
                            shared
                                .store
                                .decide(id, Outcome::Uploaded, Some(&report.sha256), None)
                        })
                },
            )
            .await;
            if decided.is_err() {
                return;
            }
            tracing::info!(
                file = %name,
                video_id = %report.video_id,
                "uploaded ({}{rate})",
                human_size(report.size),
            );
            start_finish(shared, id);
        }
        Err(err) => match err.blame() {
            Blame::Cancelled => {
                tracing::info!(file = %name, "upload interrupted by shutdown; it resumes on restart");
            }
            Blame::AccountOrNetwork if err.is_unknown_video_manager() => {
                // The platform answered: whatever paused the queue is over.
                end_pause(shared);
                log_store_error(
                    shared,
                    id,
                    "the hold",
                    shared.store.record_event(id, "held", &chain(&err)),
                );
                if let Err(store_err) = shared.store.set_waiting(id) {
                    shared.store_failed(&format!("cannot requeue job {id}"), &store_err);
                }
                hold_video_manager(shared, video_manager, &err);
            }
            Blame::AccountOrNetwork => {
                log_store_error(
                    shared,
                    id,
                    "the pause",
                    shared.store.record_event(id, "paused", &chain(&err)),
                );
                if let Err(store_err) = shared.store.set_waiting(id) {
                    // Left "uploading", it is put back in the queue when the store works again
                    // (or at the next start).
                    shared.store_failed(&format!("cannot requeue job {id}"), &store_err);
                }
                start_or_extend_pause(shared, &err);
            }
            // A claimed file that cannot be read now (its share dropped) has not changed: it
            // stays claimed and waits (the share keeper puts it back in the queue once it can
            // be looked at), instead of going back to the folder as a new video.
            Blame::StillChanging
                if moved_claim.is_some() && share_trouble(&err, &job, folder_device) =>
            {
                end_pause(shared);
                wait_until_stable_again(shared, &job, &name, &chain(&err), UNREADABLE_PAUSE);
            }
            Blame::StillChanging if moved_claim.is_some() => {
                end_pause(shared);
                if let Some(claim) = moved_claim {
                    claimed_job::give_back(shared, &job, claim, &name);
                }
            }
            Blame::StillChanging => {
                end_pause(shared);
                let waits_for = if matches!(err, VmproError::Read { .. }) {
                    UNREADABLE_PAUSE
                } else {
                    "the file changed while uploading; waiting until it is stable"
                };
                match still_there(&job.path) {
                    Ok(()) => wait_until_stable_again(shared, &job, &name, &chain(&err), waits_for),
                    Err(None) if share_gone(&job.folder, folder_device) => {
                        wait_for_share(shared, &job, &name, &err);
                    }
                    Err(None) => forget_vanished(shared, id, &name),
                    Err(Some(why)) => forget_replaced(shared, id, &name, &why),
                }
            }
            Blame::File => {
                end_pause(shared);
                match still_there(&job.path) {
                    Ok(()) => {}
                    Err(None) if share_gone(&job.folder, folder_device) => {
                        wait_for_share(shared, &job, &name, &err);
                        return;
                    }
                    Err(None) => {
                        forget_vanished(shared, id, &name);
                        return;
                    }
                    Err(Some(why)) => {
                        forget_replaced(shared, id, &name, &why);
                        return;
                    }
                }
                let message = chain(&err);
                // An error, not a warning: the file is in failed/ and only a person can say
                // what becomes of it (README: errors are what needs someone).
                tracing::error!(
                    file = %name,
                    job = id,
                    video_id = observer.video_id().as_deref(),
                    "failed: {message} ({})",
                    err.meaning()
                );
                log_store_error(
                    shared,
                    id,
                    "the failure",
                    shared.store.record_event(id, "failed", &message),
                );
                // The sidecar says the size refused, not null, when no chunk was accepted.
                if let VmproError::ChunkTooLarge { chunk_size, .. } = &err {
                    log_store_error(
                        shared,
                        id,
                        "the chunk size tried",
                        shared.store.record_chunk_size_tried(id, *chunk_size),
                    );
                }
                let error = JobError {
                    status: err.status(),
                    message,
                    meaning: err.meaning(),
                };
                let decided = write_when_possible(
                    shared,
                    shutdown,
                    &format!("cannot record that job {id} failed"),
                    || shared.store.decide(id, Outcome::Failed, None, Some(&error)),
                )
                .await;
                if decided.is_ok() {
                    start_finish(shared, id);
                }
            }
        },
    }
}

/// A job that fails before anything is sent (its companion is not valid): recorded as
/// failed and moved to failed/ with the reason.
async fn fail_before_upload(
    shared: &Arc<Shared>,
    job: &Job,
    name: &str,
    error: JobError,
    shutdown: &CancellationToken,
) {
    let id = job.id;
    tracing::error!(file = %name, job = id, "failed: {} ({})", error.message, error.meaning);
    log_store_error(
        shared,
        id,
        "the failure",
        shared.store.record_event(id, "failed", &error.message),
    );
    let decided = write_when_possible(
        shared,
        shutdown,
        &format!("cannot record that job {id} failed"),
        || shared.store.decide(id, Outcome::Failed, None, Some(&error)),
    )
    .await;
    if decided.is_ok() {
        start_finish(shared, id);
    }
}

/// Keeps what the uploads measured of the link (`chunk_size = "auto"` chooses from it) for the
/// next run: after each file, and so also a size the server refused.
fn remember_link(shared: &Shared, platform: &Platform) {
    let link = platform.transport.link.snapshot();
    if let Err(err) = shared
        .store
        .record_link(platform.account.api_url.as_str(), &link)
    {
        shared.store_failed("cannot record the measured link", &err);
    }
}

/// The file changed: its job waits (paused) until the intake finds it stable again, and is
/// then sent again from chunk 1 to the same video.
fn wait_until_stable_again(shared: &Shared, job: &Job, name: &str, why: &str, pause_reason: &str) {
    tracing::info!(file = %name, "{why}; waiting until it is stable, then sending it again");
    log_store_error(
        shared,
        job.id,
        "that the file changed",
        shared.store.pause_changed(job.id, why, pause_reason),
    );
    if pause_reason == UNREADABLE_PAUSE {
        // A file that fails to read again and again (a disk that keeps failing, a share that
        // keeps dropping) is looked at again after a wait that doubles with each try, up to
        // [`UNREADABLE_RETRY_MAX`]: every try reads (and hashes) the file from its start.
        let wait = Duration::from_secs(1u64 << job.attempts.min(10)).min(UNREADABLE_RETRY_MAX);
        tracing::info!(file = %name, "looked at again in {} s", wait.as_secs());
        let (retrack, path, stop) = (
            shared.retrack.clone(),
            job.path.clone(),
            shared.stop.clone(),
        );
        shared.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    let _ = retrack.send(path);
                }
            }
        });
        return;
    }
    // The intake's receiver lives as long as the agent: a send cannot fail while we run.
    let _ = shared.retrack.send(job.path.clone());
}

/// The longest wait before a file that could not be read is looked at again.
const UNREADABLE_RETRY_MAX: Duration = Duration::from_secs(600);

/// The file is gone before it was uploaded: its job is forgotten, nothing goes to failed/.
fn forget_vanished(shared: &Shared, id: i64, name: &str) {
    tracing::info!(file = %name, "the file disappeared; forgetting it");
    log_store_error(
        shared,
        id,
        "that the file is gone",
        shared
            .store
            .forget(id, "the file disappeared before it was uploaded"),
    );
}

/// Why a job waits whose file could not be read for a reason that may pass (see
/// `vmpro::error::may_recover`); a claimed one is put back in the queue by the share keeper.
pub(super) const UNREADABLE_PAUSE: &str =
    "the file could not be read; waiting until it can be read and is stable";

/// The job's folder is not on its share now (see [`share_gone`]): the job waits for it.
fn wait_for_share(shared: &Shared, job: &Job, name: &str, err: &VmproError) {
    wait_until_stable_again(
        shared,
        job,
        name,
        &chain(err),
        "the folder's share is not there now; waiting until it is back",
    );
}

/// Whether `err` (a file that changed or could not be read) comes from the share rather than
/// the file: a read error that may pass, the folder's share gone, or the file not to be looked
/// at now for such a reason.
fn share_trouble(err: &VmproError, job: &Job, folder_device: Option<u64>) -> bool {
    matches!(err, VmproError::Read { .. })
        || share_gone(&job.folder, folder_device)
        || matches!(ready::inspect(&job.path), Err(e) if crate::vmpro::error::may_recover(&e))
}

/// The device of the file system `folder` is on, if it can be looked at.
fn folder_device(folder: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(folder).ok().map(|meta| meta.dev())
}

/// Whether `folder` is no longer on the file system it was on when the upload started
/// (`before`): its share was unmounted (the empty mount point is on the disk below) or cannot
/// be looked at. A file missing there has not vanished: its share has.
fn share_gone(folder: &Path, before: Option<u64>) -> bool {
    before.is_some() && folder_device(folder) != before
}

/// Whether the job's file is still a regular file reached without a link: `Err(None)` when it
/// is gone, `Err(Some(why))` when something else is there now. A share that does not answer
/// now cannot tell: the file counts as still there (the intake waits until it can be looked
/// at again).
fn still_there(path: &std::path::Path) -> Result<(), Option<String>> {
    match ready::inspect(path) {
        Ok(Inspection::Regular(_)) => Ok(()),
        Ok(Inspection::Vanished) => Err(None),
        Ok(Inspection::Skipped(reason)) => Err(Some(format!("it is now {reason}"))),
        Err(err) if crate::vmpro::error::may_recover(&err) => Ok(()),
        Err(err) => Err(Some(format!("it cannot be looked at: {err}"))),
    }
}

/// Something other than the queued file is at its path now (a link, a pipe, a folder): the job
/// is forgotten with the reason, nothing is read through it, and nothing goes to failed/.
fn forget_replaced(shared: &Shared, id: i64, name: &str, why: &str) {
    tracing::warn!(file = %name, "the queued file was replaced: {why}; forgetting it");
    log_store_error(
        shared,
        id,
        "that the file was replaced",
        shared.store.forget(
            id,
            &format!("the file was replaced before it was uploaded: {why}"),
        ),
    );
}

/// Why the queue pauses for `err`, for the log, `status` and STATUS=.
fn pause_reason(err: &VmproError) -> String {
    match err {
        VmproError::Quota { .. } => {
            format!("storage quota reached (1101): {}", err.server_message())
        }
        VmproError::Credentials { .. } => format!(
            "login refused: wrong username or password ({})",
            err.server_message()
        ),
        VmproError::LoginHeld { .. } => err.to_string(),
        VmproError::Status {
            disposition: Disposition::AccountWide | Disposition::RefreshToken,
            ..
        } => format!(
            "the platform refuses every upload alike: {} ({})",
            chain(err),
            err.meaning()
        ),
        VmproError::Protocol { .. } => format!(
            "the platform's answers cannot be used, for any file: {}",
            chain(err)
        ),
        VmproError::GaveUp { last, .. }
            if last.status().is_some_and(|s| (200..300).contains(&s)) =>
        {
            format!(
                "the platform answers with a web page (down for maintenance?): {}",
                chain(err)
            )
        }
        VmproError::NotRecorded { .. } => format!("the state store failed: {}", chain(err)),
        _ => format!("platform unreachable or failing: {}", chain(err)),
    }
}

/// Holds the uploads into `video_manager`, which the platform does not know (see the module's
/// note), or extends the hold after a probe; logged and recorded for `status` when new.
fn hold_video_manager(shared: &Arc<Shared>, video_manager: u64, err: &VmproError) {
    let folders: Vec<String> = {
        let settings = shared.settings();
        settings
            .folders
            .iter()
            .filter(|f| settings.video_manager_of(&f.path) == Some(video_manager))
            .map(|f| escaped(&f.path).to_string())
            .collect()
    };
    let folders = if folders.is_empty() {
        "files queued for it".to_owned()
    } else {
        format!("the files of {}", folders.join(", "))
    };
    let reason = format!(
        "the platform does not know VideoManager {video_manager} ({}): check video_manager_id; {folders} wait",
        err.server_message()
    );
    let (news, delay) =
        shared
            .dispatch
            .hold(video_manager, reason.clone(), Instant::now(), |failures| {
                shared.pause_policy.delay(failures, None)
            });
    if news {
        tracing::warn!(
            "uploads into VideoManager {video_manager} held: {reason}, the other folders keep uploading; trying again in {:.0}s and then less and less often, and at each reload (SIGHUP)",
            delay.as_secs_f64()
        );
        if let Err(store_err) = shared
            .store
            .set_video_manager_held(video_manager, Some(&reason))
        {
            shared.store_failed("cannot record the hold for status", &store_err);
        }
    } else {
        tracing::debug!(
            "VideoManager {video_manager} still unknown; next try in {:.1}s",
            delay.as_secs_f64()
        );
    }
    shared.wake.notify_one();
}

/// An upload into `video_manager` worked: a hold on it ends.
fn release_hold(shared: &Arc<Shared>, video_manager: u64) {
    if shared.dispatch.release(video_manager).is_none() {
        return;
    }
    tracing::info!(
        "the platform knows VideoManager {video_manager} now; its folders' uploads resume"
    );
    if let Err(err) = shared.store.set_video_manager_held(video_manager, None) {
        shared.store_failed("cannot record the end of the hold for status", &err);
    }
    shared.wake.notify_waiters();
}

fn start_or_extend_pause(shared: &Arc<Shared>, err: &VmproError) {
    let reason = pause_reason(err);
    // Held logins are tried again when the hold ends (or at once when the password changes):
    // probing before then would only repeat the same answer.
    let held_for = match err {
        VmproError::LoginHeld { retry_in, .. } => Some((*retry_in).max(Duration::from_secs(1))),
        _ => None,
    };
    let note = shared.dispatch.pause(
        reason,
        Instant::now(),
        |failures| held_for.unwrap_or_else(|| shared.pause_policy.delay(failures, None)),
        |reason, delay| {
            if held_for.is_some() {
                tracing::warn!("uploads paused: {reason}. Files stay where they are");
            } else {
                tracing::warn!(
                    "uploads paused: {reason}. Files stay where they are; trying again in {:.0}s and then less and less often",
                    delay.as_secs_f64()
                );
            }
            match shared.store.set_queue_pause(Some(reason)) {
                Ok(()) => super::pause_notice::announce_if_long(&shared.store, &shared.stop),
                Err(err) => {
                    shared.store_failed("cannot record the pause for status", &err);
                }
            }
        },
    );
    tracing::debug!("next try in {:.1}s", note.delay.as_secs_f64());
    shared.wake.notify_one();
}

pub(super) fn end_pause(shared: &Arc<Shared>) {
    let ended = shared.dispatch.resume(|reason| {
        tracing::info!("uploads resumed (paused because: {reason})");
        if let Err(err) = shared.store.set_queue_pause(None) {
            shared.store_failed("cannot record the end of the pause for status", &err);
        }
    });
    if ended.is_some() {
        shared.wake.notify_waiters();
    } else if shared.resumed_owed.swap(false, Ordering::Relaxed) {
        // Paused before the last stop, and this upload worked: that pause is over (its
        // `resumed` goes out if it was announced).
        tracing::info!("uploads work again after the pause hotfolder was in before the restart");
        if let Err(err) = shared.store.set_queue_pause(None) {
            shared.resumed_owed.store(true, Ordering::Relaxed);
            shared.store_failed("cannot record the end of the pause", &err);
        }
    }
}

/// Moves a decided job's file to done/ or failed/ and writes its sidecar, in a task of its
/// own: a copy to another file system can take minutes, and neither the intake's loop (which
/// answers the watchdog) nor a start (READY) may wait for it. Does nothing while a move of the
/// job is already running. The move waits until the temp files of an earlier kill are cleared,
/// and stops (leaving the file where it was) when the agent stops.
pub(super) fn start_finish(shared: &Arc<Shared>, id: i64) {
    if !shared.dispatch.begin_finish(id) {
        return;
    }
    let tasks = shared.tasks.clone();
    let shared = shared.clone();
    tasks.spawn(async move {
        let mut cleared = shared.temps_cleared.subscribe();
        let stopped = tokio::select! {
            // The sender lives in `shared`: waiting cannot fail while we hold it.
            _ = cleared.wait_for(|cleared| *cleared) => false,
            _ = shared.stop.cancelled() => true,
        };
        if !stopped {
            finish_job(&shared, id).await;
        }
        shared.dispatch.end_finish(id);
    });
}

/// The move itself (see [`start_finish`]). A failure (disk full, permissions) leaves the file
/// where it is and the job finishing, tried again later.
async fn finish_job(shared: &Arc<Shared>, id: i64) {
    if !shared.store_health.is_writable() {
        // The move could not be recorded; it is started again when the store works.
        return;
    }
    let job = match shared.store.job(id) {
        Ok(job) => job,
        Err(err) => {
            shared.store_failed(&format!("cannot read job {id} to move its file"), &err);
            return;
        }
    };
    let folder = shared.folder(&job.folder);
    let uploaded = job.outcome == Some(Outcome::Uploaded);
    let base = match (&folder, uploaded) {
        (Some(f), true) => f.done_dir.clone(),
        (Some(f), false) => f.failed_dir.clone(),
        (None, true) => job.folder.join("done"),
        (None, false) => job.folder.join("failed"),
    };
    let path = job.path.clone();
    // A claimed file is moved by the agent whose claim it still is, and by no other.
    let claim = crate::shared_folder::claim::Claim::of_file(&job.folder, &job.path)
        .or_else(|| shared.holds.claim_for_file(&job.path));
    let moved_from_folder = claim
        .as_ref()
        .is_none_or(|claim| claimed_job::in_place(&job, claim));
    if let Some(claim) = &claim {
        let check = claim.clone();
        let me = shared.holds.agent().id.clone();
        let held = tokio::task::spawn_blocking(move || check.held_by(&me))
            .await
            .unwrap_or(Ok(false));
        match held {
            Ok(true) => {}
            Ok(false) => {
                shared.holds.end(claim, false);
                claimed_job::taken_over(shared, id, &escaped(&job.rel_path).to_string());
                return;
            }
            Err(err) => {
                // A share that dropped: the move is tried again, like one that failed.
                let message = format!(
                    "cannot read the file's claim record {} ({err}): not moved yet",
                    escaped(&claim.record)
                );
                if shared.dispatch.finish_stuck(id, message.clone()) {
                    tracing::warn!(file = %escaped(&job.rel_path), job = id, "{message}; tried again every {} s", FINISH_RETRY_EVERY.as_secs());
                }
                return;
            }
        }
    }
    // For the log lines below: the same FILE (and JOB, VIDEO_ID, FOLDER) as the job's other
    // lines, so that `journalctl FILE=clip.mov` tells the whole story, its end included.
    let name = escaped(&job.rel_path).to_string();
    let video_id = job.video_id.clone();
    let watched = escaped(&job.folder).to_string();
    let store = shared.store.clone();
    let stop = shared.stop.clone();
    let companion = crate::metadata::finish::CompanionFinish::of(folder.as_ref());
    let outcome = tokio::task::spawn_blocking(move || {
        finish::finish_job_file_with(&store, &job, &base, &companion, &stop)
    })
    .await;
    if let Ok(Ok(_)) = &outcome {
        // Its fate is sealed: moved, or uploaded and then deleted before the move.
        shared.counters.file_finished(uploaded);
        if let Some(claim) = &claim {
            shared.holds.end(claim, true);
        }
        // A claimed upload's marker stays on until now; so does one whose claim this run
        // does not hold (its finish resumed after a restart).
        super::markers::clear_soon(shared, id);
    }
    let failure = match outcome {
        Ok(Ok(finish::Finished::Moved(dest))) => {
            tracing::info!(
                file = %name,
                job = id,
                video_id = video_id.as_deref(),
                folder = %watched,
                "{} → {}",
                if uploaded { "done" } else { "failed" },
                escaped(&dest)
            );
            // A file now at the old path is a new export (dropped while this one was being
            // moved, or before a restart): it gets a job of its own.
            if moved_from_folder && path.exists() {
                let _ = shared.retrack.send(path);
            }
            None
        }
        Ok(Ok(finish::Finished::RemovedBeforeMove(why))) => {
            tracing::warn!(file = %name, job = id, "{why}");
            None
        }
        Ok(Err(message)) => Some(message),
        Err(err) => Some(format!("finishing failed: {err}")),
    };
    match failure {
        None => shared.dispatch.finish_unstuck(id),
        Some(message) if shared.stop.is_cancelled() => {
            tracing::info!(
                file = %name,
                job = id,
                "moving the file stopped for the shutdown ({message}); it is moved at the next start"
            );
        }
        Some(message) => {
            if shared.dispatch.finish_stuck(id, message.clone()) {
                tracing::error!(
                    file = %name,
                    job = id,
                    "{message}; the file stays where it is and is tried again every {} s",
                    FINISH_RETRY_EVERY.as_secs()
                );
            } else {
                tracing::debug!(file = %name, job = id, "{message}; still trying");
            }
        }
    }
}

/// Jobs stuck finishing (a move failed) are tried again, each in a task of its own: every
/// [`FINISH_RETRY_EVERY`] while one is known to be stuck, at each rescan, and when the store
/// works again after an outage. Returns at once.
pub(super) fn retry_stuck_finishes(shared: &Arc<Shared>) {
    let ids = match shared.store.finishing_ids() {
        Ok(ids) => ids,
        Err(err) => {
            shared.store_failed("cannot read the files waiting to be moved", &err);
            return;
        }
    };
    shared.dispatch.keep_stuck_among(&ids);
    for id in ids {
        start_finish(shared, id);
    }
}

#[cfg(test)]
mod tests {
    use super::super::dispatch_state::PauseNote;
    use super::*;
    use crate::store::NewJob;
    use std::collections::HashSet;
    use std::path::PathBuf;

    fn queue_of(store: &JobStore, names: &[&str]) -> Vec<i64> {
        names
            .iter()
            .map(|name| {
                store
                    .enqueue(NewJob {
                        folder: PathBuf::from("/in"),
                        path: PathBuf::from("/in").join(name),
                        rel_path: PathBuf::from(name),
                        size: 1,
                        mtime_ns: 0,
                        rule: "test".into(),
                    })
                    .unwrap()
                    .id()
            })
            .collect()
    }

    /// Every job uploads into VideoManager 1.
    const ONE_VM: fn(&Path, Option<u64>) -> Option<u64> = |_, _| Some(1);

    fn started(next: Next) -> i64 {
        match next {
            Next::Start(job) => job.id,
            Next::Wait(until) => panic!("expected a start, got a wait until {until:?}"),
            Next::Unreadable(err) => panic!("expected a start, got {err:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_start_oldest_first_up_to_parallel_and_the_next_when_one_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids = queue_of(&store, &["a.mov", "b.mov", "c.mov"]);
        let state = DispatchState::default();
        let now = Instant::now();

        // What start_worker and the worker's first step do.
        let begin = |id: i64| {
            state.begin(id);
            store.start_attempt(id).unwrap();
        };
        let first = started(next_job(&state, &store, 2, now, &ONE_VM));
        begin(first);
        let second = started(next_job(&state, &store, 2, now, &ONE_VM));
        begin(second);
        assert_eq!([first, second], [ids[0], ids[1]]);
        assert!(matches!(
            next_job(&state, &store, 2, now, &ONE_VM),
            Next::Wait(None)
        ));

        state.end(first);
        assert_eq!(started(next_job(&state, &store, 2, now, &ONE_VM)), ids[2]);
        // parallel = 0 in settings still lets one file through.
        let state = DispatchState::default();
        assert_eq!(started(next_job(&state, &store, 0, now, &ONE_VM)), ids[2]);
        state.begin(ids[2]);
        assert!(matches!(
            next_job(&state, &store, 0, now, &ONE_VM),
            Next::Wait(None)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_waits_then_lets_one_probe_through_and_grows_until_it_ends() {
        let state = DispatchState::default();
        let delay = |failures: u32| Duration::from_secs(10 * u64::from(failures));
        let mut recorded = Vec::new();

        let note = state.pause("quota".into(), Instant::now(), delay, |r, d| {
            recorded.push((r.to_owned(), d))
        });
        assert_eq!(
            note,
            PauseNote {
                reason_changed: true,
                delay: Duration::from_secs(10)
            }
        );
        let retry_at = Instant::now() + Duration::from_secs(10);
        assert_eq!(state.may_start(Instant::now(), 4), Err(Some(retry_at)));
        assert_eq!(state.pause_reason().as_deref(), Some("quota"));

        // Once the time has come, one job probes and no other starts meanwhile.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(state.may_start(Instant::now(), 4), Ok(HashSet::new()));
        assert_eq!(state.begin(7), Start::Probe { first: true });
        assert_eq!(state.may_start(Instant::now(), 4), Err(None));

        // The probe fails for the same reason: the pause is extended, longer, not re-logged.
        state.end(7);
        let note = state.pause("quota".into(), Instant::now(), delay, |r, d| {
            recorded.push((r.to_owned(), d))
        });
        assert_eq!(
            note,
            PauseNote {
                reason_changed: false,
                delay: Duration::from_secs(20)
            }
        );
        assert_eq!(
            state.may_start(Instant::now(), 4),
            Err(Some(Instant::now() + Duration::from_secs(20)))
        );
        // The next probe of the same pause is not announced again.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(state.begin(8), Start::Probe { first: false });
        state.end(8);
        // Another reason is news, and counts on from the failures so far.
        let note = state.pause("login refused".into(), Instant::now(), delay, |r, d| {
            recorded.push((r.to_owned(), d))
        });
        assert!(note.reason_changed);
        assert_eq!(note.delay, Duration::from_secs(30));
        // A new reason is news: its first probe is announced.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(state.begin(9), Start::Probe { first: true });
        state.end(9);
        assert_eq!(
            recorded,
            [
                ("quota".to_owned(), Duration::from_secs(10)),
                ("login refused".to_owned(), Duration::from_secs(30))
            ]
        );

        // The end of the pause is recorded once, with its reason; then jobs start at once.
        let mut ended = Vec::new();
        assert_eq!(
            state.resume(|r| ended.push(r.to_owned())).as_deref(),
            Some("login refused")
        );
        assert_eq!(state.resume(|r| ended.push(r.to_owned())), None);
        assert_eq!(ended, ["login refused"]);
        assert_eq!(state.may_start(Instant::now(), 4), Ok(HashSet::new()));
        assert_eq!(state.begin(10), Start::Upload);
        state.end(10);
        // A new pause starts counting from one again.
        let note = state.pause("quota".into(), Instant::now(), delay, |_, _| {});
        assert_eq!(note.delay, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_dispatcher_waits_out_a_pause_without_touching_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids = queue_of(&store, &["a.mov"]);
        let state = DispatchState::default();
        state.pause(
            "down".into(),
            Instant::now(),
            |_| Duration::from_secs(5),
            |_, _| {},
        );
        assert!(matches!(
            next_job(&state, &store, 1, Instant::now(), &ONE_VM),
            Next::Wait(Some(_))
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            started(next_job(&state, &store, 1, Instant::now(), &ONE_VM)),
            ids[0]
        );
    }

    /// Hostile test of issue 13: a folder whose VideoManager the platform does not know
    /// paused every folder's uploads. Now only its jobs wait, one probes when it is time.
    #[tokio::test(start_paused = true)]
    async fn a_held_video_manager_holds_only_its_jobs_and_lets_one_probe_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let held = |name: &str| {
            store
                .enqueue(NewJob {
                    folder: PathBuf::from("/unknown"),
                    path: PathBuf::from("/unknown").join(name),
                    rel_path: PathBuf::from(name),
                    size: 1,
                    mtime_ns: 0,
                    rule: "test".into(),
                })
                .unwrap()
                .id()
        };
        let (first_held, second_held) = (held("a.mov"), held("b.mov"));
        let good = queue_of(&store, &["c.mov", "d.mov"]);
        // /unknown uploads into VideoManager 999, /in into 1.
        let vm_of = |folder: &Path, _: Option<u64>| {
            if folder == Path::new("/unknown") {
                Some(999)
            } else {
                Some(1)
            }
        };
        let state = DispatchState::default();
        let (news, delay) = state.hold(999, "unknown".into(), Instant::now(), |_| {
            Duration::from_secs(10)
        });
        assert!(news);
        assert_eq!(delay, Duration::from_secs(10));
        // The other folder's jobs start; the held ones are passed over.
        let now = Instant::now();
        let first = started(next_job(&state, &store, 4, now, &vm_of));
        assert_eq!(first, good[0]);
        state.begin(first);
        store.start_attempt(first).unwrap();
        assert_eq!(started(next_job(&state, &store, 4, now, &vm_of)), good[1]);
        state.begin(good[1]);
        store.start_attempt(good[1]).unwrap();
        // Nothing else now; woken for the probe.
        assert!(matches!(
            next_job(&state, &store, 4, now, &vm_of),
            Next::Wait(Some(at)) if at == now + Duration::from_secs(10)
        ));
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = started(next_job(&state, &store, 4, Instant::now(), &vm_of));
        assert_eq!(probe, first_held);
        state.begin(probe);
        assert!(state.probe_hold(probe, 999));
        store.start_attempt(probe).unwrap();
        // One probe at a time.
        assert!(matches!(
            next_job(&state, &store, 4, Instant::now(), &vm_of),
            Next::Wait(None)
        ));
        // It failed again: held longer, not news.
        store.set_waiting(probe).unwrap();
        state.end(probe);
        let (news, delay) = state.hold(999, "unknown".into(), Instant::now(), |n| {
            Duration::from_secs(10 * u64::from(n))
        });
        assert!(!news);
        assert_eq!(delay, Duration::from_secs(20));
        // A reload lets it probe at once.
        state.probe_now(Instant::now());
        assert_eq!(
            started(next_job(&state, &store, 4, Instant::now(), &vm_of)),
            first_held
        );
        // Known again: every job of it may start.
        assert_eq!(state.release(999).as_deref(), Some("unknown"));
        assert_eq!(state.release(999), None);
        assert_eq!(state.holds(Instant::now()), Default::default());
        state.begin(first_held);
        store.start_attempt(first_held).unwrap();
        assert_eq!(
            started(next_job(&state, &store, 4, Instant::now(), &vm_of)),
            second_held
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_password_lets_the_next_probe_start_at_once() {
        let state = DispatchState::default();
        assert!(
            !state.probe_now(Instant::now()),
            "not paused: nothing to do"
        );
        let hour = Duration::from_secs(3600);
        state.pause(
            "login refused 3 times".into(),
            Instant::now(),
            |_| hour,
            |_, _| {},
        );
        assert_eq!(
            state.may_start(Instant::now(), 2),
            Err(Some(Instant::now() + hour))
        );
        assert!(state.probe_now(Instant::now()));
        assert_eq!(state.may_start(Instant::now(), 2), Ok(HashSet::new()));
        // While a probe is on its way, nothing else starts, however often the file changes.
        state.begin(1);
        assert!(!state.probe_now(Instant::now()));
        assert_eq!(state.may_start(Instant::now(), 2), Err(None));
    }

    #[test]
    fn pause_reasons_say_whose_problem_it_is() {
        let forbidden = VmproError::Status {
            step: crate::vmpro::error::Step::CreateVideo,
            status: 403,
            message: "user may not create videos".into(),
            disposition: Disposition::AccountWide,
        };
        let reason = pause_reason(&forbidden);
        assert!(
            reason.starts_with("the platform refuses every upload alike: create video")
                && reason.contains("may not create videos")
                && reason.contains("its rights"),
            "{reason}"
        );
        let held = VmproError::LoginHeld {
            username: "u".into(),
            refusals: 3,
            how: "write the new one into /etc/hotfolder/password".into(),
            at: "14:05 UTC".into(),
            retry_in: Duration::from_secs(3600),
        };
        assert_eq!(
            pause_reason(&held),
            "login refused 3 times for user \"u\"; next try when the password changes (write the new one into /etc/hotfolder/password) or at 14:05 UTC"
        );
    }

    #[test]
    fn a_move_is_never_started_twice_for_one_job_at_the_same_time() {
        let state = DispatchState::default();
        assert!(state.begin_finish(1));
        // The retry tick, a rescan and the worker itself may all ask for it.
        assert!(!state.begin_finish(1));
        assert!(state.begin_finish(2));
        state.end_finish(1);
        assert!(state.begin_finish(1));
    }

    #[test]
    fn a_stuck_finish_is_logged_again_only_when_its_reason_changes() {
        let state = DispatchState::default();
        assert!(!state.any_stuck());
        assert!(state.finish_stuck(1, "disk full".into()));
        assert!(!state.finish_stuck(1, "disk full".into()));
        assert!(state.finish_stuck(1, "permission denied".into()));
        assert!(state.finish_stuck(2, "disk full".into()));
        // Job 1 left finishing some other way; job 2 is still stuck.
        state.keep_stuck_among(&[2]);
        assert!(state.finish_stuck(1, "permission denied".into()));
        state.finish_unstuck(1);
        state.finish_unstuck(2);
        assert!(!state.any_stuck());
    }
}
