//! Dispatch: starts workers on waiting jobs, `parallel` at a time, and is what a worker does
//! with one job: upload it, then decide whether it goes to done/ or failed/, waits for its file
//! to settle again, or pauses the whole queue (credentials, quota, network: not the file's
//! fault). [`DispatchState`] is the bookkeeping these decisions read and change.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{FINISH_RETRY_EVERY, Shared, sleep_until_opt};
use crate::chain;
use crate::finish;
use crate::ready::{self, Inspection};
use crate::store::{Job, JobError, JobStore, Outcome, StoreError};
use crate::vmpro::api::{UploadObserver, UploadUrl};
use crate::vmpro::chunks::{ResumePoint, UploadRequest, upload_file};
use crate::vmpro::error::{Blame, VmproError};

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
}

/// A whole-queue pause: the account or the network is the problem, not the files.
struct QueuePause {
    reason: String,
    /// Failed probes in a row; the wait before the next one grows with it.
    failures: u32,
    retry_at: Instant,
    /// One job is trying whether the cause went away; no other starts meanwhile.
    probing: bool,
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
    pub(super) fn begin(&self, id: i64) {
        let mut board = self.board();
        if let Some(pause) = board.pause.as_mut() {
            pause.probing = true;
        }
        board.in_flight.insert(id);
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
            board.pause = Some(QueuePause {
                reason: reason.clone(),
                failures,
                retry_at: now + delay,
                probing: false,
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
}

/// What the dispatcher does next.
#[derive(Debug)]
enum Next {
    Start(Box<Job>),
    /// Until the deadline, or until woken when there is none.
    Wait(Option<Instant>),
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
        Err(err) => {
            tracing::error!("state store: {}", chain(&err));
            Next::Wait(Some(now + STORE_RETRY))
        }
    }
}

/// Starts workers on waiting jobs, `parallel` at a time (read at each start, so a reload can
/// change it), honouring a queue pause, until `shutdown`.
pub(super) async fn dispatch(
    shared: &Arc<Shared>,
    workers: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Registered before looking, so a wake between the look and the wait is not lost.
        let notified = shared.wake.notified();
        let parallel = shared.settings().upload.parallel;
        let wait_until = match next_job(&shared.dispatch, &shared.store, parallel, Instant::now()) {
            Next::Start(job) => {
                start_worker(shared, workers, shutdown, *job);
                continue;
            }
            Next::Wait(until) => until,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = notified => {}
            _ = sleep_until_opt(wait_until) => {}
        }
    }
}

fn start_worker(
    shared: &Arc<Shared>,
    workers: &TaskTracker,
    shutdown: &CancellationToken,
    job: Job,
) {
    shared.dispatch.begin(job.id);
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    workers.spawn(async move {
        let id = job.id;
        work(&shared, job, &shutdown).await;
        shared.dispatch.end(id);
        shared.wake.notify_one();
    });
}

/// Records one job's upload in the store as it happens.
struct JobObserver {
    store: Arc<JobStore>,
    id: i64,
    name: String,
    /// The last quarter of the chunks logged at info level, so a long upload says how far it
    /// is four times, not once per chunk.
    last_logged_quarter: AtomicU64,
    /// The job's video id is in the store (resumed with one, or recorded since): only then may
    /// its marker keyword come off.
    video_recorded: AtomicBool,
}

impl JobObserver {
    fn log_store_error(&self, result: Result<(), StoreError>) {
        if let Err(err) = result {
            tracing::error!(job = self.id, "state store: {}", chain(&err));
        }
    }
}

impl UploadObserver for JobObserver {
    fn event(&self, event: &str, detail: &str) {
        tracing::info!(file = %self.name, "{event}: {detail}");
        self.log_store_error(self.store.record_event(self.id, event, detail));
    }
    fn create_sending(
        &self,
        marker: Option<&str>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.store
            .record_create_sent(self.id, marker)
            .map_err(Into::into)
    }
    fn create_settled(&self) {
        self.log_store_error(self.store.record_create_settled(self.id));
    }
    fn video_created(&self, video_id: &str) {
        let recorded = self.store.record_video(self.id, video_id);
        self.video_recorded
            .store(recorded.is_ok(), Ordering::Relaxed);
        self.log_store_error(recorded);
    }
    fn video_on_record(&self) -> bool {
        self.video_recorded.load(Ordering::Relaxed)
    }
    fn marker_removed(&self) {
        self.log_store_error(self.store.clear_marker(self.id));
    }
    fn url_issued(&self, url: &UploadUrl) {
        let issued = OffsetDateTime::from(url.issued_at());
        self.log_store_error(self.store.record_url(self.id, url.expose(), issued));
    }
    fn chunk_accepted(&self, index: u32, total: u32, chunk_size: u64, bytes_done: u64) {
        self.log_store_error(self.store.record_progress(
            self.id,
            index + 1,
            total,
            chunk_size,
            bytes_done,
        ));
        let quarter = u64::from(index) * 4 / u64::from(total.max(1));
        if index < total
            && self
                .last_logged_quarter
                .fetch_max(quarter, Ordering::Relaxed)
                < quarter
        {
            tracing::info!(file = %self.name, "chunk {index}/{total} sent ({}%)", quarter * 25);
        }
        tracing::debug!(file = %self.name, "chunk {index}/{total} accepted");
    }
    fn restarted(&self) {
        self.log_store_error(self.store.restart_content(self.id));
    }
}

/// Logs a failed store call that the job's path can do without (an event for the sidecar);
/// the store calls that decide where a job goes are handled where they are made.
fn log_store_error(id: i64, what: &str, result: Result<(), StoreError>) {
    if let Err(err) = result {
        tracing::error!(
            job = id,
            "state store: cannot record {what}: {}",
            chain(&err)
        );
    }
}

/// Uploads one job and decides what becomes of its file.
async fn work(shared: &Arc<Shared>, job: Job, shutdown: &CancellationToken) {
    let id = job.id;
    let name = job.rel_path.display().to_string();
    if let Err(err) = shared.store.start_attempt(id) {
        tracing::error!(job = id, "state store: {}", chain(&err));
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
        _ => {
            forget_vanished(shared, id, &name);
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
    if job.total_chunks.is_some_and(|total| job.next_chunk > total) {
        tracing::info!(file = %name, video_id = job.video_id.as_deref().unwrap_or("-"), "every chunk was accepted before the restart; hashing it to finish");
    } else if job.next_chunk > 1 {
        tracing::info!(file = %name, video_id = job.video_id.as_deref().unwrap_or("-"), "resuming at chunk {}", job.next_chunk);
    } else {
        tracing::info!(file = %name, size = job.size, "uploading");
    }
    let observer = JobObserver {
        store: shared.store.clone(),
        id,
        name: name.clone(),
        last_logged_quarter: AtomicU64::new(0),
        video_recorded: AtomicBool::new(job.video_id.is_some()),
    };
    let platform = shared.platform();
    let result = upload_file(&platform, request, &observer, shutdown).await;
    match result {
        Ok(report) => {
            end_pause(shared);
            log_store_error(
                id,
                "the upload's figures",
                shared.store.record_event(
                    id,
                    "uploaded",
                    &format!(
                        "{} bytes in {} chunks, {:.1} MB/s, sha256 {}",
                        report.size,
                        report.chunks,
                        report.bytes_per_second() / 1e6,
                        report.sha256
                    ),
                ),
            );
            if let Err(err) = shared
                .store
                .decide(id, Outcome::Uploaded, Some(&report.sha256), None)
            {
                tracing::error!(job = id, "state store: {}", chain(&err));
                return;
            }
            tracing::info!(file = %name, video_id = %report.video_id, "uploaded ({:.1} MB/s)", report.bytes_per_second() / 1e6);
            finish_job(shared, id).await;
        }
        Err(err) => match err.blame() {
            Blame::Cancelled => {
                tracing::info!(file = %name, "upload interrupted by shutdown; it resumes on restart");
            }
            Blame::AccountOrNetwork => {
                log_store_error(
                    id,
                    "the pause",
                    shared.store.record_event(id, "paused", &chain(&err)),
                );
                if let Err(store_err) = shared.store.set_waiting(id) {
                    // Left "uploading", it is put back in the queue at the next start.
                    tracing::error!(job = id, "state store: {}", chain(&store_err));
                }
                start_or_extend_pause(shared, &err);
            }
            Blame::StillChanging => {
                end_pause(shared);
                if job.path.exists() {
                    wait_until_stable_again(
                        shared,
                        &job,
                        &name,
                        &chain(&err),
                        "the file changed while uploading; waiting until it is stable",
                    );
                } else {
                    forget_vanished(shared, id, &name);
                }
            }
            Blame::File => {
                end_pause(shared);
                if !job.path.exists() {
                    forget_vanished(shared, id, &name);
                    return;
                }
                let message = chain(&err);
                tracing::warn!(file = %name, "failed: {message} ({})", err.meaning());
                log_store_error(
                    id,
                    "the failure",
                    shared.store.record_event(id, "failed", &message),
                );
                let error = JobError {
                    status: err.status(),
                    message,
                    meaning: err.meaning(),
                };
                if let Err(err) = shared.store.decide(id, Outcome::Failed, None, Some(&error)) {
                    tracing::error!(job = id, "state store: {}", chain(&err));
                    return;
                }
                finish_job(shared, id).await;
            }
        },
    }
}

/// The file changed: its job waits (paused) until the intake finds it stable again, and is
/// then sent again from chunk 1 to the same video.
fn wait_until_stable_again(shared: &Shared, job: &Job, name: &str, why: &str, pause_reason: &str) {
    tracing::info!(file = %name, "{why}; waiting until it is stable, then sending it again");
    log_store_error(
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
        id,
        "that the file is gone",
        shared
            .store
            .forget(id, "the file disappeared before it was uploaded"),
    );
}

fn start_or_extend_pause(shared: &Arc<Shared>, err: &VmproError) {
    let reason = match err {
        VmproError::Quota { .. } => {
            format!("storage quota reached (1101): {}", err.server_message())
        }
        VmproError::Credentials { .. } => format!(
            "login refused: wrong username or password ({})",
            err.server_message()
        ),
        VmproError::NotRecorded { .. } => format!("the state store failed: {}", chain(err)),
        _ => format!("platform unreachable or failing: {}", chain(err)),
    };
    let note = shared.dispatch.pause(
        reason,
        Instant::now(),
        |failures| shared.pause_policy.delay(failures, None),
        |reason, delay| {
            tracing::warn!(
                "uploads paused: {reason}. Files stay where they are; trying again in {:.0}s and then less and less often",
                delay.as_secs_f64()
            );
            if let Err(err) = shared.store.set_queue_pause(Some(reason)) {
                tracing::error!("state store: cannot record the pause for status: {}", chain(&err));
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
            tracing::error!(
                "state store: cannot record the end of the pause for status: {}",
                chain(&err)
            );
        }
    });
    if ended.is_some() {
        shared.wake.notify_waiters();
    }
}

/// Moves a decided job's file to done/ or failed/ and writes its sidecar. A failure (disk
/// full, permissions) leaves the file where it is and the job finishing, tried again later.
pub(super) async fn finish_job(shared: &Arc<Shared>, id: i64) {
    let job = match shared.store.job(id) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(job = id, "state store: {}", chain(&err));
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
    let store = shared.store.clone();
    let outcome =
        tokio::task::spawn_blocking(move || finish::finish_job_file(&store, &job, &base)).await;
    let failure = match outcome {
        Ok(Ok(finish::Finished::Moved(dest))) => {
            tracing::info!(
                "{} → {}",
                if uploaded { "done" } else { "failed" },
                dest.display()
            );
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

/// Jobs stuck finishing (a move failed) are tried again: every [`FINISH_RETRY_EVERY`] while
/// one is known to be stuck, and at each rescan.
pub(super) async fn retry_stuck_finishes(shared: &Arc<Shared>) {
    let ids = match shared.store.finishing_ids() {
        Ok(ids) => ids,
        Err(err) => {
            tracing::error!("state store: {}", chain(&err));
            return;
        }
    };
    shared.dispatch.keep_stuck_among(&ids);
    let busy = shared.dispatch.busy();
    for id in ids {
        if !busy.contains(&id) {
            finish_job(shared, id).await;
        }
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
        state.begin(7);
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
        // Another reason is news, and counts on from the failures so far.
        let note = state.pause("login refused".into(), Instant::now(), delay, |r, d| {
            recorded.push((r.to_owned(), d))
        });
        assert!(note.reason_changed);
        assert_eq!(note.delay, Duration::from_secs(30));
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
