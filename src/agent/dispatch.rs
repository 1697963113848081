//! Dispatch: starts workers on waiting jobs, `parallel` at a time, and is what a worker does
//! with one job: upload it, then decide whether it goes to done/ or failed/, waits for its file
//! to settle again, or pauses the whole queue (credentials, quota, network: not the file's
//! fault). [`DispatchState`] is the bookkeeping these decisions read and change. Moving a file
//! to done/ or failed/ is a task of its own ([`start_finish`]): the worker's upload slot is free
//! meanwhile, and no loop waits for a copy that can take minutes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FINISH_RETRY_EVERY, Shared, sleep_until_opt};
use crate::chain;
use crate::config::{human_rate, human_size};
use crate::escape::escaped;
use crate::finish;
use crate::ready::{self, Inspection};
use crate::store::{Job, JobError, JobStore, Outcome, StoreError};
use crate::vmpro::api::{UploadObserver, UploadUrl};
use crate::vmpro::chunks::{ResumePoint, UploadRequest, upload_file};
use crate::vmpro::error::{Blame, Disposition, VmproError};

/// How long the dispatcher waits before asking a failing state store again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Which jobs a worker is on, whether the whole queue is paused, and which finished files could
/// not be moved: one lock, because the dispatcher's decisions read several of them at once.
#[derive(Default)]
pub(super) struct DispatchState {
    board: Mutex<Board>,
    /// Held from a pause's start or end until it is recorded (store and log), so records
    /// follow the order of the changes; the board itself is locked only for the change, so
    /// workers starting and ending never wait on a store write.
    pause_order: Mutex<()>,
}

#[derive(Default)]
struct Board {
    /// Jobs a worker is on, so the dispatcher does not start them twice.
    in_flight: HashSet<i64>,
    pause: Option<QueuePause>,
    /// Jobs whose file could not be moved to done/ or failed/, with the reason last logged:
    /// tried again every [`FINISH_RETRY_EVERY`], logged again only when the reason changes.
    stuck_finishes: HashMap<i64, String>,
    /// Jobs whose file is being moved right now, so a move is never started twice at once.
    finishing_now: HashSet<i64>,
}

/// A whole-queue pause: the account or the network is the problem, not the files.
struct QueuePause {
    reason: String,
    /// Failed probes in a row; the wait before the next one grows with it.
    failures: u32,
    retry_at: Instant,
    /// One job is trying whether the cause went away; no other starts meanwhile.
    probing: bool,
    /// The first probe of this pause was logged; the others are logged at debug level, so a
    /// pause of hours is a few lines in the log, not a line per probe.
    announced: bool,
}

/// What a worker starting on a job is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Upload,
    /// The queue is paused: this job tries whether the cause went away.
    Probe {
        first: bool,
    },
}

/// What a pause changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PauseNote {
    /// A new pause, or one for another reason than before: worth a log line.
    pub reason_changed: bool,
    /// Until the next probe.
    pub delay: Duration,
}

impl DispatchState {
    fn board(&self) -> MutexGuard<'_, Board> {
        // Poisoned only if a thread panicked while holding it; every change to the board is
        // a single insert, remove or assignment, so what it holds is still consistent.
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pause_order(&self) -> MutexGuard<'_, ()> {
        self.pause_order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a job start now, with `parallel` allowed at once? `Ok` with the jobs already
    /// running, or `Err` with when to look again (`None`: when woken).
    pub(super) fn may_start(
        &self,
        now: Instant,
        parallel: usize,
    ) -> Result<HashSet<i64>, Option<Instant>> {
        let board = self.board();
        if let Some(pause) = &board.pause {
            // While paused only one job probes, once the retry time has come.
            if pause.probing {
                return Err(None);
            }
            if now < pause.retry_at {
                return Err(Some(pause.retry_at));
            }
        }
        if board.in_flight.len() >= parallel.max(1) {
            return Err(None);
        }
        Ok(board.in_flight.clone())
    }

    /// A worker starts on job `id`; while paused, it is the probe.
    pub(super) fn begin(&self, id: i64) -> Start {
        let mut board = self.board();
        let start = match board.pause.as_mut() {
            Some(pause) => {
                pause.probing = true;
                Start::Probe {
                    first: !std::mem::replace(&mut pause.announced, true),
                }
            }
            None => Start::Upload,
        };
        board.in_flight.insert(id);
        start
    }

    /// The worker on job `id` is done, whatever the outcome.
    pub(super) fn end(&self, id: i64) {
        let mut board = self.board();
        board.in_flight.remove(&id);
        if let Some(pause) = board.pause.as_mut() {
            pause.probing = false;
        }
    }

    pub(super) fn busy(&self) -> HashSet<i64> {
        self.board().in_flight.clone()
    }

    /// Pauses the queue for `reason`, or extends the pause: the `failures`-th probe in a row
    /// failed, and `delay(failures)` is how long until the next. `record(reason, delay)` runs
    /// when the reason changed, before any later pause or resume is recorded.
    pub(super) fn pause(
        &self,
        reason: String,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
        record: impl FnOnce(&str, Duration),
    ) -> PauseNote {
        let _order = self.pause_order();
        let (reason_changed, delay) = {
            let mut board = self.board();
            let failures = board.pause.as_ref().map_or(1, |p| p.failures + 1);
            let delay = delay(failures);
            let reason_changed = board.pause.as_ref().is_none_or(|p| p.reason != reason);
            let announced = board.pause.as_ref().is_some_and(|p| p.announced);
            board.pause = Some(QueuePause {
                reason: reason.clone(),
                failures,
                retry_at: now + delay,
                probing: false,
                announced: announced && !reason_changed,
            });
            (reason_changed, delay)
        };
        if reason_changed {
            record(&reason, delay);
        }
        PauseNote {
            reason_changed,
            delay,
        }
    }

    /// Ends a pause; the reason it had, if there was one. `record` runs before any later
    /// pause or resume is recorded.
    pub(super) fn resume(&self, record: impl FnOnce(&str)) -> Option<String> {
        let _order = self.pause_order();
        let old = self.board().pause.take()?;
        record(&old.reason);
        Some(old.reason)
    }

    /// Something that may have ended the pause's cause changed (a new password): the next
    /// probe may start now. False when not paused, or a probe is already on its way.
    pub(super) fn probe_now(&self, now: Instant) -> bool {
        match self.board().pause.as_mut() {
            Some(pause) if !pause.probing => {
                pause.retry_at = pause.retry_at.min(now);
                true
            }
            _ => false,
        }
    }

    pub(super) fn pause_reason(&self) -> Option<String> {
        self.board().pause.as_ref().map(|p| p.reason.clone())
    }

    /// Job `id`'s file could not be moved; true when `message` is new for it (worth logging).
    pub(super) fn finish_stuck(&self, id: i64, message: String) -> bool {
        let mut board = self.board();
        let new = board.stuck_finishes.get(&id) != Some(&message);
        board.stuck_finishes.insert(id, message);
        new
    }

    pub(super) fn finish_unstuck(&self, id: i64) {
        self.board().stuck_finishes.remove(&id);
    }

    /// Forgets stuck jobs not in `finishing` (they left that state some other way).
    pub(super) fn keep_stuck_among(&self, finishing: &[i64]) {
        self.board()
            .stuck_finishes
            .retain(|id, _| finishing.contains(id));
    }

    pub(super) fn any_stuck(&self) -> bool {
        !self.board().stuck_finishes.is_empty()
    }

    /// A move of job `id`'s file is about to start: false if one is already running.
    pub(super) fn begin_finish(&self, id: i64) -> bool {
        self.board().finishing_now.insert(id)
    }

    pub(super) fn end_finish(&self, id: i64) {
        self.board().finishing_now.remove(&id);
    }
}

/// What the dispatcher does next.
#[derive(Debug)]
enum Next {
    Start(Box<Job>),
    /// Until the deadline, or until woken when there is none.
    Wait(Option<Instant>),
    /// The queue could not be read.
    Unreadable(StoreError),
}

/// The dispatcher's decision: the oldest waiting job no worker is on, if a worker may start.
fn next_job(state: &DispatchState, store: &JobStore, parallel: usize, now: Instant) -> Next {
    let busy = match state.may_start(now, parallel) {
        Ok(busy) => busy,
        Err(until) => return Next::Wait(until),
    };
    match store.next_waiting(&busy) {
        Ok(Some(job)) => Next::Start(Box::new(job)),
        Ok(None) => Next::Wait(None),
        Err(err) => Next::Unreadable(err),
    }
}

/// Starts workers on waiting jobs, `parallel` at a time (read at each start, so a reload can
/// change it), honouring a queue pause and a store that cannot be written, until `shutdown`.
pub(super) async fn dispatch(shared: &Arc<Shared>, shutdown: &CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Registered before looking, so a wake between the look and the wait is not lost.
        let notified = shared.wake.notified();
        let parallel = shared.settings().upload.parallel;
        let now = Instant::now();
        let next = if shared.store_health.is_writable() {
            next_job(&shared.dispatch, &shared.store, parallel, now)
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
    let start = shared.dispatch.begin(job.id);
    let tasks = shared.tasks.clone();
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let id = job.id;
        work(&shared, job, start, &shutdown).await;
        shared.dispatch.end(id);
        shared.wake.notify_one();
    });
}

/// Records one job's upload in the store as it happens.
struct JobObserver {
    shared: Arc<Shared>,
    id: i64,
    name: String,
    /// The last quarter of the chunks logged at info level, so a long upload says how far it
    /// is four times, not once per chunk.
    last_logged_quarter: AtomicU64,
    /// This job tries whether a paused queue can resume: its events (retries, mostly) are
    /// logged at debug level, and its first accepted chunk ends the pause. Not earlier: a
    /// quota refuses chunks of videos it let the platform create.
    probing: AtomicBool,
    /// The job's video id is in the store (resumed with one, or recorded since): only then may
    /// its marker keyword come off.
    video_recorded: AtomicBool,
}

impl JobObserver {
    /// A record the upload can go on without (it resumes from an earlier chunk after a crash):
    /// logged, and during an outage said once for all.
    fn log_store_error(&self, what: &str, result: Result<(), StoreError>) {
        if let Err(err) = result {
            self.shared
                .store_failed(&format!("cannot record {what} of job {}", self.id), &err);
        }
    }
}

impl UploadObserver for JobObserver {
    fn event(&self, event: &str, detail: &str) {
        if self.probing.load(Ordering::Relaxed) {
            tracing::debug!(file = %self.name, "{event}: {detail}");
        } else {
            tracing::info!(file = %self.name, "{event}: {detail}");
        }
        self.log_store_error(
            "an event",
            self.shared.store.record_event(self.id, event, detail),
        );
    }
    fn create_sending(
        &self,
        marker: Option<&str>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.shared
            .store
            .record_create_sent(self.id, marker)
            .map_err(Into::into)
    }
    fn create_settled(&self) {
        self.log_store_error(
            "that the create was answered",
            self.shared.store.record_create_settled(self.id),
        );
    }
    fn video_created(&self, video_id: &str) {
        let recorded = self.shared.store.record_video(self.id, video_id);
        self.video_recorded
            .store(recorded.is_ok(), Ordering::Relaxed);
        self.log_store_error("the video id", recorded);
    }
    fn video_on_record(&self) -> bool {
        self.video_recorded.load(Ordering::Relaxed)
    }
    fn marker_removed(&self) {
        self.log_store_error(
            "that the marker keyword is off",
            self.shared.store.clear_marker(self.id),
        );
    }
    fn url_issued(&self, url: &UploadUrl) {
        let issued = OffsetDateTime::from(url.issued_at());
        self.log_store_error(
            "the upload URL",
            self.shared.store.record_url(self.id, url.expose(), issued),
        );
    }
    fn chunk_accepted(&self, index: u32, total: u32, chunk_size: u64, bytes_done: u64) {
        if self.probing.swap(false, Ordering::Relaxed) {
            end_pause(&self.shared);
        }
        self.log_store_error(
            "the progress",
            self.shared
                .store
                .record_progress(self.id, index + 1, total, chunk_size, bytes_done),
        );
        let quarter = u64::from(index) * 4 / u64::from(total.max(1));
        if index < total
            && self
                .last_logged_quarter
                .fetch_max(quarter, Ordering::Relaxed)
                < quarter
        {
            // The share of the chunks, not the quarter that triggered the line: "1/3 (33%)".
            let percent = u64::from(index) * 100 / u64::from(total.max(1));
            tracing::info!(
                file = %self.name,
                "chunk {index}/{total} sent ({percent}%, {} so far)",
                human_size(bytes_done)
            );
        }
        tracing::debug!(file = %self.name, "chunk {index}/{total} accepted");
    }
    fn restarted(&self) {
        self.log_store_error("the restart", self.shared.store.restart_content(self.id));
    }
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
async fn work(shared: &Arc<Shared>, job: Job, start: Start, shutdown: &CancellationToken) {
    let id = job.id;
    let name = escaped(&job.rel_path).to_string();
    if let Err(err) = shared.store.start_attempt(id) {
        // Still waiting in the store; during an outage the dispatcher starts nothing.
        shared.store_failed(&format!("cannot start job {id}"), &err);
        return;
    }
    // The file must still be the one the job recorded: replaced or rewritten while hotfolder
    // was stopped (or since it was queued), resuming would mix old and new chunks.
    match ready::inspect(&job.path) {
        Ok(Inspection::Regular(now))
            if now.size == job.size && now.mtime_ns == i128::from(job.mtime_ns) => {}
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
        Err(err) => {
            forget_replaced(shared, id, &name, &format!("it cannot be looked at: {err}"));
            return;
        }
    }
    let metadata = shared
        .folder(&job.folder)
        .map(|f| f.metadata)
        .unwrap_or_default();
    let url = match (&job.upload_url, job.url_issued_at) {
        (Some(raw), Some(issued)) => Some(UploadUrl::new(raw.clone(), SystemTime::from(issued))),
        _ => None,
    };
    let request = UploadRequest {
        path: job.path.clone(),
        file_name: job
            .path
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
    };
    let platform = shared.platform();
    let result = upload_file(&platform, request, &observer, shutdown).await;
    match result {
        Ok(report) => {
            end_pause(shared);
            log_store_error(
                shared,
                id,
                "the upload's figures",
                shared.store.record_event(
                    id,
                    "uploaded",
                    &format!(
                        "{} ({} bytes) in {} chunks at {}, sha256 {}",
                        human_size(report.size),
                        report.size,
                        report.chunks,
                        human_rate(report.bytes_per_second()),
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
                "uploaded ({} at {})",
                human_size(report.size),
                human_rate(report.bytes_per_second())
            );
            start_finish(shared, id);
        }
        Err(err) => match err.blame() {
            Blame::Cancelled => {
                tracing::info!(file = %name, "upload interrupted by shutdown; it resumes on restart");
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
            Blame::StillChanging => {
                end_pause(shared);
                match still_there(&job.path) {
                    Ok(()) => wait_until_stable_again(
                        shared,
                        &job,
                        &name,
                        &chain(&err),
                        "the file changed while uploading; waiting until it is stable",
                    ),
                    Err(None) => forget_vanished(shared, id, &name),
                    Err(Some(why)) => forget_replaced(shared, id, &name, &why),
                }
            }
            Blame::File => {
                end_pause(shared);
                match still_there(&job.path) {
                    Ok(()) => {}
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
                tracing::warn!(file = %name, "failed: {message} ({})", err.meaning());
                log_store_error(
                    shared,
                    id,
                    "the failure",
                    shared.store.record_event(id, "failed", &message),
                );
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
    // The intake's receiver lives as long as the agent: a send cannot fail while we run.
    let _ = shared.retrack.send(job.path.clone());
}

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

/// Whether the job's file is still a regular file reached without a link: `Err(None)` when it
/// is gone, `Err(Some(why))` when something else is there now.
fn still_there(path: &std::path::Path) -> Result<(), Option<String>> {
    match ready::inspect(path) {
        Ok(Inspection::Regular(_)) => Ok(()),
        Ok(Inspection::Vanished) => Err(None),
        Ok(Inspection::Skipped(reason)) => Err(Some(format!("it is now {reason}"))),
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
            if let Err(err) = shared.store.set_queue_pause(Some(reason)) {
                shared.store_failed("cannot record the pause for status", &err);
            }
        },
    );
    tracing::debug!("next try in {:.1}s", note.delay.as_secs_f64());
    shared.wake.notify_one();
}

fn end_pause(shared: &Arc<Shared>) {
    let ended = shared.dispatch.resume(|reason| {
        tracing::info!("uploads resumed (paused because: {reason})");
        if let Err(err) = shared.store.set_queue_pause(None) {
            shared.store_failed("cannot record the end of the pause for status", &err);
        }
    });
    if ended.is_some() {
        shared.wake.notify_waiters();
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
    let store = shared.store.clone();
    let stop = shared.stop.clone();
    let outcome =
        tokio::task::spawn_blocking(move || finish::finish_job_file(&store, &job, &base, &stop))
            .await;
    let failure = match outcome {
        Ok(Ok(finish::Finished::Moved(dest))) => {
            tracing::info!(
                "{} → {}",
                if uploaded { "done" } else { "failed" },
                escaped(&dest)
            );
            // A file now at the old path is a new export (dropped while this one was being
            // moved, or before a restart): it gets a job of its own.
            if path.exists() {
                let _ = shared.retrack.send(path);
            }
            None
        }
        Ok(Ok(finish::Finished::RemovedBeforeMove(why))) => {
            tracing::warn!(job = id, "{why}");
            None
        }
        Ok(Err(message)) => Some(message),
        Err(err) => Some(format!("finishing failed: {err}")),
    };
    match failure {
        None => shared.dispatch.finish_unstuck(id),
        Some(message) if shared.stop.is_cancelled() => {
            tracing::info!(
                job = id,
                "moving the file stopped for the shutdown ({message}); it is moved at the next start"
            );
        }
        Some(message) => {
            if shared.dispatch.finish_stuck(id, message.clone()) {
                tracing::error!(
                    job = id,
                    "{message}; the file stays where it is and is tried again every {} s",
                    FINISH_RETRY_EVERY.as_secs()
                );
            } else {
                tracing::debug!(job = id, "{message}; still trying");
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
    use super::*;
    use crate::store::NewJob;
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
        let first = started(next_job(&state, &store, 2, now));
        begin(first);
        let second = started(next_job(&state, &store, 2, now));
        begin(second);
        assert_eq!([first, second], [ids[0], ids[1]]);
        assert!(matches!(next_job(&state, &store, 2, now), Next::Wait(None)));

        state.end(first);
        assert_eq!(started(next_job(&state, &store, 2, now)), ids[2]);
        // parallel = 0 in settings still lets one file through.
        let state = DispatchState::default();
        assert_eq!(started(next_job(&state, &store, 0, now)), ids[2]);
        state.begin(ids[2]);
        assert!(matches!(next_job(&state, &store, 0, now), Next::Wait(None)));
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
            next_job(&state, &store, 1, Instant::now()),
            Next::Wait(Some(_))
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(started(next_job(&state, &store, 1, Instant::now())), ids[0]);
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
