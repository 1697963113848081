//! The agent (`hotfolder run`): wires the stages together.
//!
//! ```text
//! intake (watch + ready) ──► store (SQLite queue) ──► dispatcher ──► workers (upload) ──► finish
//! ```
//!
//! The intake task owns the notify watchers and one stability tracker per folder; when a file
//! has been still for `stable_for` it becomes a job in the store. The dispatcher starts up to
//! `parallel` workers on waiting jobs. A worker uploads one file, recording every step in the
//! store so that a kill at any moment resumes on the same video, then moves the file to done/
//! or failed/ with its sidecar. Credentials, quota and network failures pause the whole queue
//! instead of failing files. Shutdown is a `CancellationToken` passed in.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{FolderSettings, Settings};
use crate::finish::{self, Sidecar};
use crate::ready::{self, Inspection, NameFilter, NameVerdict, StabilityTracker, StableFile};
use crate::retry::RetryPolicy;
use crate::store::{
    Enqueued, Job, JobError, JobState, JobStore, NewJob, Outcome, StateLock, StoreError,
};
use crate::vmpro::api::{Platform, UploadObserver, UploadUrl};
use crate::vmpro::chunks::{ResumePoint, UploadRequest, upload_file};
use crate::vmpro::error::{Blame, VmproError};
use crate::watch::{FolderWatcher, WatchError, WatchEvent, WatchSpec};

/// How often every folder is walked again to catch events the watcher missed.
pub const RESCAN_EVERY: Duration = Duration::from_secs(300);

/// How often each watched folder is checked to still be the one watched: a folder deleted and
/// made again, or a share unmounted and mounted again, loses its watch without a word.
pub const FOLDER_CHECK_EVERY: Duration = Duration::from_secs(3);

/// How long a folder check may take before the folder counts as not answering (a hung network
/// mount); the check goes on in the background and is not started twice.
const FOLDER_CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// How often a file whose move to done/ or failed/ failed (disk full, permissions) is tried
/// again: the editor is waiting to see it leave the folder.
pub const FINISH_RETRY_EVERY: Duration = Duration::from_secs(10);

/// How long a shutdown waits for uploads to stop before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("cannot prepare uploads: {0}")]
    Platform(#[from] VmproError),
    #[error("no [[folder]] in the config: nothing to watch")]
    NoFolders,
    /// The part that notices new files died: carrying on would upload what is queued and then
    /// sit deaf for months, so the agent exits for its service manager to restart it.
    #[error(
        "the folder watcher stopped ({0}); exiting so that the service manager restarts hotfolder"
    )]
    IntakeStopped(String),
}

/// A whole-queue pause: the account or the network is the problem, not the files.
struct QueuePause {
    reason: String,
    failures: u32,
    retry_at: Instant,
    /// One job is trying whether the cause went away; no other starts meanwhile.
    probing: bool,
}

/// What the tasks share.
struct Shared {
    /// Replaced as a whole by a reload (SIGHUP); readers clone what they need.
    settings: RwLock<Settings>,
    store: Arc<JobStore>,
    /// Replaced by a reload; uploads in flight keep the one they started with.
    platform: RwLock<Arc<Platform>>,
    /// Wakes the dispatcher: a job was queued, a worker finished, a pause ended.
    wake: Notify,
    /// Jobs a worker is on, so the dispatcher does not start them twice.
    in_flight: Mutex<HashSet<i64>>,
    pause: Mutex<Option<QueuePause>>,
    /// Paths handed back to the intake to wait until they are stable again.
    retrack: mpsc::UnboundedSender<PathBuf>,
    /// Delays between probes while paused.
    pause_policy: RetryPolicy,
    /// Jobs whose file could not be moved to done/ or failed/, with the reason last logged:
    /// tried again every [`FINISH_RETRY_EVERY`], logged again only when the reason changes.
    stuck_finishes: Mutex<HashMap<i64, String>>,
}

impl Shared {
    fn settings(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    fn platform(&self) -> Arc<Platform> {
        self.platform
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn folder(&self, root: &Path) -> Option<FolderSettings> {
        self.settings()
            .folders
            .iter()
            .find(|f| f.path == root)
            .cloned()
    }
}

/// Runs the agent until `shutdown` is cancelled. `ready` is called once every folder is watched
/// (after the service manager was told READY). Each `Settings` arriving on `reloads` replaces
/// the running ones (SIGHUP): folders added or removed, limits changed, uploads in flight kept.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
    reloads: mpsc::UnboundedReceiver<Settings>,
) -> Result<(), AgentError> {
    if settings.folders.is_empty() {
        return Err(AgentError::NoFolders);
    }
    let _lock = StateLock::acquire(&settings.state_dir)?;
    let store = Arc::new(JobStore::open(&settings.state_dir)?);
    let platform = Platform::new(&settings.account, &settings.upload)?;
    let (retrack_tx, retrack_rx) = mpsc::unbounded_channel();
    let mut pause_policy = RetryPolicy::new(
        u32::MAX,
        (settings.upload.backoff_max * 5).max(Duration::from_secs(1)),
    );
    pause_policy.jitter = 0.1;
    let shared = Arc::new(Shared {
        settings: RwLock::new(settings),
        store,
        platform: RwLock::new(platform),
        wake: Notify::new(),
        in_flight: Mutex::new(HashSet::new()),
        pause: Mutex::new(None),
        retrack: retrack_tx,
        pause_policy,
        stuck_finishes: Mutex::new(HashMap::new()),
    });

    let workers = TaskTracker::new();
    recover(&shared).await;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher = FolderWatcher::new(events_tx);
    let folders = shared.settings().folders.clone();
    let mut intake = Intake::new(&folders);
    if let Err(err) = shared.store.clear_missing_folders() {
        tracing::warn!("cannot reset the folders' state for status: {err}");
    }
    for folder in &mut intake.folders {
        folder.watch(&mut watcher)?;
        tracing::info!(folder = %folder.spec.root.display(), "watching");
    }
    service_notify(&[sd_notify::NotifyState::Ready]);
    ready();
    let intake_task = tokio::spawn({
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        async move {
            intake.initial_scan(&shared).await;
            #[cfg(debug_assertions)]
            intake.fault_for_tests();
            let channels = IntakeChannels {
                events: events_rx,
                retrack: retrack_rx,
                reloads,
            };
            intake.run(&shared, watcher, channels, &shutdown).await;
        }
    });
    // Stops the uploads too when the intake dies, not only on a signal.
    let stop = shutdown.child_token();
    let supervisor = tokio::spawn({
        let shutdown = shutdown.clone();
        let stop = stop.clone();
        async move {
            let ended = intake_task.await;
            if shutdown.is_cancelled() {
                return None;
            }
            let why = match ended {
                Ok(()) => "it returned".to_owned(),
                Err(err) => match err.try_into_panic() {
                    Ok(panic) => format!("it panicked: {}", panic_message(panic.as_ref())),
                    Err(err) => err.to_string(),
                },
            };
            tracing::error!(
                "the folder watcher stopped ({why}); stopping uploads and exiting so that the service manager restarts hotfolder"
            );
            stop.cancel();
            Some(why)
        }
    });
    dispatch(&shared, &workers, &stop).await;
    service_notify(&[sd_notify::NotifyState::Stopping]);

    workers.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, workers.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "uploads did not stop within {SHUTDOWN_GRACE:?}; exiting anyway (they resume on restart)"
        );
    }
    if let Ok(Some(why)) = supervisor.await {
        return Err(AgentError::IntakeStopped(why));
    }
    tracing::info!("stopped; state saved in {}", shared.store.path().display());
    Ok(())
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// On start: finish moves that a crash interrupted, and put every other unfinished job back in
/// the queue (or forget it when its file is gone).
async fn recover(shared: &Arc<Shared>) {
    let dirs: Vec<PathBuf> = shared
        .settings()
        .folders
        .iter()
        .flat_map(|f| [f.done_dir.clone(), f.failed_dir.clone()])
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            remove_stale_temps(&dir);
        }
    })
    .await;
    let jobs = match shared.store.unfinished() {
        Ok(jobs) => jobs,
        Err(err) => {
            tracing::error!("cannot read the queue: {err}");
            return;
        }
    };
    if !jobs.is_empty() {
        tracing::info!(jobs = jobs.len(), "resuming unfinished jobs");
    }
    for job in jobs {
        let result = match job.state {
            JobState::Finishing => {
                finish_job(shared, job.id).await;
                Ok(())
            }
            _ if !job.path.exists() => {
                tracing::info!(file = %job.path.display(), "forgetting a queued file that is no longer there");
                shared
                    .store
                    .forget(job.id, "the file disappeared while hotfolder was stopped")
            }
            JobState::Paused => {
                let _ = shared.retrack.send(job.path.clone());
                Ok(())
            }
            JobState::Uploading => shared.store.set_waiting(job.id),
            _ => Ok(()),
        };
        if let Err(err) = result {
            tracing::error!(job = job.id, "cannot recover job: {err}");
        }
    }
}

/// One watched folder as the intake sees it.
struct FolderIntake {
    spec: WatchSpec,
    settings: FolderSettings,
    filter: NameFilter,
    tracker: StabilityTracker,
    /// Paths already reported as skipped, so a symlink is logged once, not at every rescan.
    skipped: HashSet<PathBuf>,
    /// What is watched: `Watched(identity)` while the watch is in place, `Missing` while the
    /// folder cannot be seen (it is watched again once it is back).
    presence: Presence,
    /// A folder check still running after [`FOLDER_CHECK_PATIENCE`].
    slow_check: Option<tokio::task::JoinHandle<Result<FolderId, String>>>,
    /// Failed attempts to watch the folder again while it is there, and when to try next:
    /// watching a large tree walks all of it, which is not something to repeat every 3 s
    /// while the system's watch limit is reached.
    watch_failures: u32,
    next_watch_attempt: Option<Instant>,
}

/// Device and inode of a watched folder (`None` where the system has no such thing).
type FolderId = Option<(u64, u64)>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    Watched(FolderId),
    Missing(String),
}

impl FolderIntake {
    /// Starts watching the folder, remembering which folder (device and inode) it is.
    fn watch(&mut self, watcher: &mut FolderWatcher) -> Result<(), WatchError> {
        let identity = crate::watch::folder_identity(&self.spec.root);
        watcher.watch(self.spec.clone())?;
        self.presence = Presence::Watched(identity);
        Ok(())
    }
}

/// Turns watcher events and scans into jobs once files are complete.
struct Intake {
    folders: Vec<FolderIntake>,
    /// Complete files not yet in the store: queued together in one transaction (10,000 files
    /// found at start must not cost 10,000 synchronous commits).
    ready: Vec<ReadyFile>,
}

/// A complete file on its way into the store.
struct ReadyFile {
    folder: FolderSettings,
    stable: StableFile,
    verdict: String,
}

impl Intake {
    fn new(folders: &[FolderSettings]) -> Intake {
        Intake {
            ready: Vec::new(),
            folders: folders
                .iter()
                .map(|folder| FolderIntake {
                    spec: WatchSpec {
                        root: folder.path.clone(),
                        recursive: folder.recursive,
                        poll_interval: folder.poll_interval,
                        ignore: vec![folder.done_dir.clone(), folder.failed_dir.clone()],
                    },
                    settings: folder.clone(),
                    filter: NameFilter::new(&folder.include, &folder.exclude),
                    tracker: StabilityTracker::new(folder.stable_for),
                    skipped: HashSet::new(),
                    presence: Presence::Missing("not watched yet".into()),
                    slow_check: None,
                    watch_failures: 0,
                    next_watch_attempt: None,
                })
                .collect(),
        }
    }

    /// Checks that every folder is still the one watched: one that is gone is reported once
    /// (log and `status`) and its watch dropped; one that is back, or was replaced by another
    /// folder of the same name (deleted and made again, a share mounted again), is watched and
    /// scanned afresh.
    async fn check_folders(&mut self, shared: &Arc<Shared>, watcher: &mut FolderWatcher) {
        for index in 0..self.folders.len() {
            let Some(now) = self.probe_folder(index).await else {
                continue;
            };
            let folder = &self.folders[index];
            let root = folder.spec.root.clone();
            match (now, &folder.presence) {
                (Ok(identity), Presence::Watched(watched)) if identity == *watched => {}
                (Ok(_), _)
                    if folder
                        .next_watch_attempt
                        .is_some_and(|at| Instant::now() < at) => {}
                (Ok(_), previous) => {
                    let was_missing = matches!(previous, Presence::Missing(_));
                    let result = self.folders[index].watch(watcher);
                    let folder = &mut self.folders[index];
                    match &result {
                        Ok(()) => {
                            folder.watch_failures = 0;
                            folder.next_watch_attempt = None;
                        }
                        Err(_) => {
                            folder.watch_failures = folder.watch_failures.saturating_add(1);
                            let wait = FOLDER_CHECK_EVERY
                                .saturating_mul(1 << folder.watch_failures.min(7))
                                .min(Duration::from_secs(300));
                            folder.next_watch_attempt = Some(Instant::now() + wait);
                        }
                    }
                    match result {
                        Ok(()) => {
                            if was_missing {
                                tracing::info!(folder = %root.display(), "the folder is back; watching it again");
                            } else {
                                tracing::warn!(folder = %root.display(), "the folder was replaced (made again, or a share mounted over it); watching the new one");
                            }
                            self.note_presence(shared, index, None);
                            self.scan_folder(shared, index).await;
                        }
                        Err(err) => self.folder_missing(shared, watcher, index, err.to_string()),
                    }
                }
                (Err(why), _) => {
                    // Once it is back, the first attempt to watch it is immediate.
                    self.folders[index].watch_failures = 0;
                    self.folders[index].next_watch_attempt = None;
                    self.folder_missing(shared, watcher, index, why);
                }
            }
        }
    }

    /// Looks at folder `index` off the async threads: `None` while an earlier look is still
    /// hanging (a dead network mount must not stall the agent).
    async fn probe_folder(&mut self, index: usize) -> Option<Result<FolderId, String>> {
        let folder = &mut self.folders[index];
        let mut probe = match folder.slow_check.take() {
            Some(running) if !running.is_finished() => {
                folder.slow_check = Some(running);
                return None;
            }
            Some(finished) => finished,
            None => {
                let root = folder.spec.root.clone();
                tokio::task::spawn_blocking(move || crate::watch::probe_folder(&root))
            }
        };
        match tokio::time::timeout(FOLDER_CHECK_PATIENCE, &mut probe).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(err)) => Some(Err(format!("the check failed: {err}"))),
            Err(_) => {
                folder.slow_check = Some(probe);
                Some(Err(format!(
                    "it did not answer within {} s (a network share that hangs?)",
                    FOLDER_CHECK_PATIENCE.as_secs()
                )))
            }
        }
    }

    /// Folder `index` cannot be seen: said once, and in `status`; files already queued from it
    /// stay queued (they fail only if they are really gone when their turn comes).
    fn folder_missing(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
        index: usize,
        why: String,
    ) {
        let folder = &mut self.folders[index];
        if folder.presence == Presence::Missing(why.clone()) {
            return;
        }
        let first = !matches!(folder.presence, Presence::Missing(_));
        folder.presence = Presence::Missing(why.clone());
        watcher.unwatch(&folder.spec.root);
        if first {
            tracing::error!(folder = %folder.spec.root.display(), "cannot see the watched folder: {why}; new files there are not noticed until it is back (checked every {} s)", FOLDER_CHECK_EVERY.as_secs());
        }
        self.note_presence(shared, index, Some(&why));
    }

    /// Keeps `status` told which folders are missing.
    fn note_presence(&self, shared: &Arc<Shared>, index: usize, missing: Option<&str>) {
        let root = &self.folders[index].spec.root;
        if let Err(err) = shared.store.set_folder_missing(root, missing) {
            tracing::warn!("cannot record the folder's state for status: {err}");
        }
    }

    /// Debug builds only: `HOTFOLDER_TEST_INTAKE_PANIC=1` makes the intake panic once it has
    /// scanned, so that tests can check that the agent does not carry on deaf.
    #[cfg(debug_assertions)]
    fn fault_for_tests(&self) {
        if std::env::var_os("HOTFOLDER_TEST_INTAKE_PANIC").is_some() {
            panic!("HOTFOLDER_TEST_INTAKE_PANIC is set");
        }
    }

    async fn initial_scan(&mut self, shared: &Arc<Shared>) {
        for index in 0..self.folders.len() {
            self.scan_folder(shared, index).await;
        }
    }

    async fn scan_folder(&mut self, shared: &Arc<Shared>, index: usize) {
        let spec = self.folders[index].spec.clone();
        let result = match tokio::task::spawn_blocking(move || crate::watch::scan(&spec)).await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!("folder scan failed: {err}");
                return;
            }
        };
        for (path, err) in &result.errors {
            tracing::warn!(path = %path.display(), "cannot read: {err}");
        }
        for (path, reason) in result.skipped {
            self.note_skipped(index, path, &reason.to_string());
        }
        for path in result.files {
            self.consider(shared, path, true);
        }
        self.flush_ready(shared);
    }

    fn note_skipped(&mut self, index: usize, path: PathBuf, reason: &str) {
        if self.folders[index].skipped.insert(path.clone()) {
            tracing::info!(path = %path.display(), "skipped: it is {reason}");
        }
    }

    /// The folder a path belongs to: the deepest root that contains it, unless it lies in
    /// that folder's done/ or failed/.
    fn folder_of(&self, path: &Path) -> Option<usize> {
        let (index, folder) = self
            .folders
            .iter()
            .enumerate()
            .filter(|(_, f)| path.starts_with(&f.spec.root))
            .max_by_key(|(_, f)| f.spec.root.components().count())?;
        if folder.spec.ignore.iter().any(|dir| path.starts_with(dir)) {
            return None;
        }
        if !folder.spec.recursive && path.parent() != Some(folder.spec.root.as_path()) {
            return None;
        }
        Some(index)
    }

    /// A path was created, changed or found by a scan: start (or keep) watching it settle.
    /// A file a scan finds whose modification time is already older than `stable_for` has
    /// provably not been written for that long and is complete at once (not on polled network
    /// shares, whose clocks may differ from ours).
    fn consider(&mut self, shared: &Arc<Shared>, path: PathBuf, from_scan: bool) {
        let Some(index) = self.folder_of(&path) else {
            return;
        };
        let folder = &mut self.folders[index];
        if folder.tracker.is_tracked(&path) {
            return;
        }
        let Some(name) = path.file_name() else {
            return;
        };
        match folder.filter.verdict(name) {
            NameVerdict::Accepted { .. } => {}
            verdict => {
                tracing::debug!(path = %path.display(), "ignored: {verdict}");
                return;
            }
        }
        match shared.store.active_job_for_path(&path) {
            Ok(Some(job)) if job.state != JobState::Paused => return,
            Ok(_) => {}
            Err(err) => {
                tracing::error!("state store: {err}");
                return;
            }
        }
        match ready::inspect(&path) {
            Ok(Inspection::Regular(snapshot)) => {
                let stable_for = folder.settings.stable_for;
                let age = mtime_age(snapshot.mtime_ns);
                if from_scan
                    && folder.settings.poll_interval.is_none()
                    && age.is_some_and(|age| age >= stable_for)
                    && ready::opens_for_reading(&path).is_ok()
                {
                    let verdict = folder.filter.verdict(name).to_string();
                    let rule = format!(
                        "found by a scan, not modified for {}s (stable_for is {}s)",
                        age.map(|a| a.as_secs()).unwrap_or_default(),
                        stable_for.as_secs_f64()
                    );
                    self.ready.push(ReadyFile {
                        folder: folder.settings.clone(),
                        stable: StableFile {
                            path,
                            snapshot,
                            first_seen: Instant::now(),
                            rule,
                        },
                        verdict,
                    });
                } else {
                    folder.tracker.observe(path, snapshot, Instant::now());
                }
            }
            Ok(Inspection::Vanished) => {}
            Ok(Inspection::Skipped(ready::SkipReason::Directory)) => {}
            Ok(Inspection::Skipped(reason)) => {
                self.note_skipped(index, path, &reason.to_string());
            }
            Err(err) => tracing::warn!(path = %path.display(), "cannot inspect: {err}"),
        }
    }

    fn forget(&mut self, path: &Path) {
        for folder in &mut self.folders {
            folder.tracker.forget(path);
            folder.tracker.forget_under(path);
            folder.skipped.remove(path);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.folders
            .iter()
            .filter_map(|f| f.tracker.next_deadline())
            .min()
    }

    /// Looks again at files whose quiet period is over; the complete ones become jobs.
    fn check_due(&mut self, shared: &Arc<Shared>) {
        let now = Instant::now();
        for index in 0..self.folders.len() {
            let due = self.folders[index].tracker.due(now);
            for path in due {
                let folder = &mut self.folders[index];
                match ready::inspect(&path) {
                    Ok(Inspection::Regular(snapshot)) => {
                        if let Some(stable) = folder.tracker.confirm(&path, snapshot, now) {
                            // Still locked by the writer, or not readable by us: look again
                            // after another quiet period (logged once).
                            if let Err(err) = ready::opens_for_reading(&path) {
                                if folder.skipped.insert(path.clone()) {
                                    tracing::warn!(path = %path.display(), "complete but cannot be opened ({err}); waiting until it can be read");
                                }
                                folder.tracker.observe(path, snapshot, now);
                                continue;
                            }
                            folder.skipped.remove(&path);
                            let verdict = path
                                .file_name()
                                .map(|n| folder.filter.verdict(n).to_string())
                                .unwrap_or_default();
                            self.ready.push(ReadyFile {
                                folder: folder.settings.clone(),
                                stable,
                                verdict,
                            });
                        }
                    }
                    Ok(Inspection::Vanished) => folder.tracker.forget(&path),
                    Ok(Inspection::Skipped(reason)) => {
                        folder.tracker.forget(&path);
                        self.note_skipped(index, path, &reason.to_string());
                    }
                    Err(err) => {
                        folder.tracker.forget(&path);
                        tracing::warn!(path = %path.display(), "cannot inspect: {err}");
                    }
                }
            }
        }
        self.flush_ready(shared);
    }

    /// Puts every complete file into the store in one transaction.
    fn flush_ready(&mut self, shared: &Arc<Shared>) {
        if !self.ready.is_empty() {
            enqueue(shared, std::mem::take(&mut self.ready));
        }
    }

    async fn run(
        &mut self,
        shared: &Arc<Shared>,
        mut watcher: FolderWatcher,
        channels: IntakeChannels,
        shutdown: &CancellationToken,
    ) {
        let IntakeChannels {
            mut events,
            mut retrack,
            mut reloads,
        } = channels;
        let mut rescan = tokio::time::interval_at(Instant::now() + RESCAN_EVERY, RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The watchdog is pinged from this loop: if it hangs, systemd restarts the agent.
        let mut heartbeat = tokio::time::interval(heartbeat_period());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut folder_check =
            tokio::time::interval_at(Instant::now() + FOLDER_CHECK_EVERY, FOLDER_CHECK_EVERY);
        folder_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finish_retry =
            tokio::time::interval_at(Instant::now() + FINISH_RETRY_EVERY, FINISH_RETRY_EVERY);
        finish_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = heartbeat.tick() => {
                    let status = status_line(shared);
                    service_notify(&[
                        sd_notify::NotifyState::Watchdog,
                        sd_notify::NotifyState::Status(&status),
                    ]);
                }
                Some(settings) = reloads.recv() => self.reload(shared, &mut watcher, settings).await,
                event = events.recv() => match event {
                    Some(WatchEvent::Touched(path)) => self.consider(shared, path, false),
                    Some(WatchEvent::Removed(path)) => self.forget(&path),
                    Some(WatchEvent::RescanNeeded { root, why }) => {
                        tracing::info!(folder = %root.display(), "rescanning: {why}");
                        while let Ok(more) = events.try_recv() {
                            if let WatchEvent::Touched(path) = more {
                                self.consider(shared, path, false);
                            }
                        }
                        for index in 0..self.folders.len() {
                            if self.folders[index].spec.root.starts_with(&root) || root.starts_with(&self.folders[index].spec.root) {
                                self.scan_folder(shared, index).await;
                            }
                        }
                    }
                    Some(WatchEvent::FolderGone { root }) => {
                        tracing::debug!(folder = %root.display(), "the watched folder was removed or renamed");
                        self.check_folders(shared, &mut watcher).await;
                    }
                    None => return,
                },
                _ = folder_check.tick() => self.check_folders(shared, &mut watcher).await,
                _ = finish_retry.tick() => {
                    let any_stuck = !shared
                        .stuck_finishes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_empty();
                    if any_stuck {
                        retry_stuck_finishes(shared).await;
                    }
                }
                Some(path) = retrack.recv() => {
                    self.forget(&path);
                    self.consider(shared, path, false);
                }
                _ = sleep_until_opt(deadline) => self.check_due(shared),
                _ = rescan.tick() => {
                    for index in 0..self.folders.len() {
                        self.scan_folder(shared, index).await;
                    }
                    retry_stuck_finishes(shared).await;
                }
            }
        }
    }
}

/// The receiving ends the intake task listens to.
struct IntakeChannels {
    events: mpsc::UnboundedReceiver<WatchEvent>,
    retrack: mpsc::UnboundedReceiver<PathBuf>,
    reloads: mpsc::UnboundedReceiver<Settings>,
}

impl Intake {
    /// Applies reloaded settings: watches added folders, drops removed ones, updates the rules
    /// of the others (rescanning them), and swaps the platform client when account or upload
    /// settings changed. Uploads in flight finish with the client they started with.
    async fn reload(&mut self, shared: &Arc<Shared>, watcher: &mut FolderWatcher, new: Settings) {
        let old = shared.settings().clone();
        if new.state_dir != old.state_dir {
            tracing::warn!("reload: [state] dir changed; that takes effect only after a restart");
        }
        let fresh = Intake::new(&new.folders);
        let old_roots: HashSet<PathBuf> =
            self.folders.iter().map(|f| f.spec.root.clone()).collect();
        let mut kept = Vec::new();
        for mut folder in fresh.folders {
            let root = folder.spec.root.clone();
            if let Some(previous) = self.folders.iter_mut().find(|f| f.spec.root == root) {
                if previous.settings.stable_for == folder.settings.stable_for {
                    // Keep files already settling, so a reload does not restart their clock.
                    std::mem::swap(&mut folder.tracker, &mut previous.tracker);
                    folder.skipped = std::mem::take(&mut previous.skipped);
                }
                folder.presence = previous.presence.clone();
                folder.slow_check = previous.slow_check.take();
                folder.watch_failures = previous.watch_failures;
                folder.next_watch_attempt = previous.next_watch_attempt;
                if previous.spec != folder.spec
                    && matches!(folder.presence, Presence::Watched(_))
                    && let Err(err) = folder.watch(watcher)
                {
                    tracing::error!(folder = %root.display(), "reload: cannot watch: {err}");
                }
            } else {
                match folder.watch(watcher) {
                    Ok(()) => {
                        tracing::info!(folder = %root.display(), "reload: watching a new folder")
                    }
                    Err(err) => {
                        tracing::error!(folder = %root.display(), "reload: cannot watch the new folder: {err}");
                        continue;
                    }
                }
            }
            kept.push(folder);
        }
        for root in &old_roots {
            if !kept.iter().any(|f| &f.spec.root == root) {
                watcher.unwatch(root);
                if let Err(err) = shared.store.set_folder_missing(root, None) {
                    tracing::warn!("cannot record the folder's state for status: {err}");
                }
                tracing::info!(folder = %root.display(), "reload: no longer watching");
            }
        }
        self.folders = kept;
        // Always a new client: the password may have changed, and its Debug form is masked.
        match Platform::new(&new.account, &new.upload) {
            Ok(platform) => *shared.platform.write().unwrap_or_else(|e| e.into_inner()) = platform,
            Err(err) => tracing::error!("reload: keeping the previous account settings: {err}"),
        }
        *shared.settings.write().unwrap_or_else(|e| e.into_inner()) = new;
        tracing::info!("config reloaded: {} folder(s) watched", self.folders.len());
        for index in 0..self.folders.len() {
            self.scan_folder(shared, index).await;
        }
        shared.wake.notify_one();
    }
}

/// Tells the service manager (systemd `Type=notify`) about a state; without `NOTIFY_SOCKET`
/// this does nothing.
fn service_notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!("cannot notify the service manager: {err}");
    }
}

/// Half the watchdog interval systemd set (`WatchdogSec=`), else every 10 s for STATUS.
fn heartbeat_period() -> Duration {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(10)
    }
}

/// One line for STATUS=: the queue, and why it is paused.
fn status_line(shared: &Shared) -> String {
    let mut line = summary_line(&shared.store);
    if let Some(pause) = shared
        .pause
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        line.push_str("; PAUSED: ");
        line.push_str(&pause.reason);
    }
    for folder in shared.store.missing_folders().unwrap_or_default() {
        line.push_str(&format!("; FOLDER MISSING: {}", folder.path.display()));
    }
    line
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A complete file becomes a job (or a paused job of a changed file becomes waiting again).
fn enqueue(shared: &Arc<Shared>, files: Vec<ReadyFile>) {
    let jobs: Vec<NewJob> = files
        .iter()
        .map(|file| {
            let path = &file.stable.path;
            NewJob {
                folder: file.folder.path.clone(),
                path: path.clone(),
                rel_path: path
                    .strip_prefix(&file.folder.path)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| path.file_name().map(PathBuf::from).unwrap_or_default()),
                size: file.stable.snapshot.size,
                mtime_ns: i64::try_from(file.stable.snapshot.mtime_ns).unwrap_or(i64::MAX),
                rule: format!("{}; name {}", file.stable.rule, file.verdict),
            }
        })
        .collect();
    let results = match shared.store.enqueue_many(&jobs) {
        Ok(results) => results,
        Err(err) => {
            tracing::error!("cannot queue {} file(s): {err}", jobs.len());
            return;
        }
    };
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Enqueued::New(_) => {
                tracing::info!(file = %job.path.display(), size = job.size, "complete: {}", job.rule);
            }
            Enqueued::AlreadyActive(id) => {
                // A file that changed while uploading is waiting (paused) to settle again.
                if let Ok(active) = shared.store.job(id)
                    && active.state == JobState::Paused
                {
                    match shared.store.requeue_changed(id, job.size, job.mtime_ns) {
                        Ok(()) => {
                            let _ = shared.store.record_event(
                                id,
                                "complete",
                                &format!("stable again: {}", job.rule),
                            );
                            tracing::info!(file = %job.path.display(), "stable again; uploading it again to the same video");
                        }
                        Err(err) => tracing::error!(job = id, "state store: {err}"),
                    }
                }
            }
        }
    }
    shared.wake.notify_one();
}

/// How long ago a file was last modified (None when its time lies in the future).
fn mtime_age(mtime_ns: i128) -> Option<Duration> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let age = i128::try_from(now).ok()?.checked_sub(mtime_ns)?;
    u64::try_from(age).ok().map(Duration::from_nanos)
}

/// Starts workers on waiting jobs, `parallel` at a time (read at each start, so a reload can
/// change it), honouring a queue pause.
async fn dispatch(shared: &Arc<Shared>, workers: &TaskTracker, shutdown: &CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Registered before looking, so a wake between the look and the wait is not lost.
        let notified = shared.wake.notified();
        let paused = {
            let pause = shared.pause.lock().unwrap_or_else(|e| e.into_inner());
            pause.as_ref().map(|p| (p.retry_at, p.probing))
        };
        let mut wait_until = None;
        let mut may_start = true;
        if let Some((retry_at, probing)) = paused {
            // While paused only one job probes, once the retry time has come.
            if probing {
                may_start = false;
            } else if Instant::now() < retry_at {
                may_start = false;
                wait_until = Some(retry_at);
            }
        }
        let parallel = shared.settings().upload.parallel.max(1);
        let busy = shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if may_start && busy.len() < parallel {
            match shared.store.next_waiting(&busy) {
                Ok(Some(job)) => {
                    start_worker(shared, workers, shutdown, job);
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!("state store: {err}");
                    wait_until = Some(Instant::now() + Duration::from_secs(5));
                }
            }
        }
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
    if let Some(pause) = shared
        .pause
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        pause.probing = true;
    }
    shared
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.id);
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    workers.spawn(async move {
        let id = job.id;
        work(&shared, job, &shutdown).await;
        shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(pause) = shared
            .pause
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            pause.probing = false;
        }
        shared.wake.notify_one();
    });
}

/// Records one job's upload in the store as it happens.
struct JobObserver {
    store: Arc<JobStore>,
    id: i64,
    name: String,
    last_logged_quarter: Mutex<u64>,
}

impl JobObserver {
    fn log_store_error(&self, result: Result<(), StoreError>) {
        if let Err(err) = result {
            tracing::error!(job = self.id, "state store: {err}");
        }
    }
}

impl UploadObserver for JobObserver {
    fn event(&self, event: &str, detail: &str) {
        tracing::info!(file = %self.name, "{event}: {detail}");
        self.log_store_error(self.store.record_event(self.id, event, detail));
    }
    fn video_created(&self, video_id: &str) {
        self.log_store_error(self.store.record_video(self.id, video_id));
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
        let mut last = self
            .last_logged_quarter
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if quarter > *last && index < total {
            *last = quarter;
            tracing::info!(file = %self.name, "chunk {index}/{total} sent ({}%)", quarter * 25);
        }
        tracing::debug!(file = %self.name, "chunk {index}/{total} accepted");
    }
    fn restarted(&self) {
        self.log_store_error(self.store.restart_content(self.id));
    }
}

/// Uploads one job and decides what becomes of its file.
async fn work(shared: &Arc<Shared>, job: Job, shutdown: &CancellationToken) {
    let id = job.id;
    let name = job.rel_path.display().to_string();
    if let Err(err) = shared.store.start_attempt(id) {
        tracing::error!(job = id, "state store: {err}");
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
        last_logged_quarter: Mutex::new(0),
    };
    let platform = shared.platform();
    let result = upload_file(&platform, request, &observer, shutdown).await;
    match result {
        Ok(report) => {
            end_pause(shared);
            let _ = shared.store.record_event(
                id,
                "uploaded",
                &format!(
                    "{} bytes in {} chunks, {:.1} MB/s, sha256 {}",
                    report.size,
                    report.chunks,
                    report.bytes_per_second() / 1e6,
                    report.sha256
                ),
            );
            if let Err(err) = shared
                .store
                .decide(id, Outcome::Uploaded, Some(&report.sha256), None)
            {
                tracing::error!(job = id, "state store: {err}");
                return;
            }
            tracing::info!(file = %name, video_id = %report.video_id, "uploaded ({:.1} MB/s)", report.bytes_per_second() / 1e6);
            finish_job(shared, id).await;
        }
        Err(err) => match err.blame() {
            Blame::Cancelled => {
                tracing::info!(file = %name, "upload interrupted by shutdown; it resumes on restart");
            }
            Blame::Account => {
                let _ = shared.store.record_event(id, "paused", &err.to_string());
                let _ = shared.store.set_waiting(id);
                start_or_extend_pause(shared, &err);
            }
            Blame::Source => {
                end_pause(shared);
                if job.path.exists() {
                    wait_until_stable_again(
                        shared,
                        &job,
                        &name,
                        &err.to_string(),
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
                tracing::warn!(file = %name, "failed: {err} ({})", err.meaning());
                let error = JobError {
                    status: err.status(),
                    message: err.to_string(),
                    meaning: err.meaning(),
                };
                let _ = shared.store.record_event(id, "failed", &err.to_string());
                if let Err(err) = shared.store.decide(id, Outcome::Failed, None, Some(&error)) {
                    tracing::error!(job = id, "state store: {err}");
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
    let _ = shared.store.record_event(job.id, "changed", why);
    let _ = shared.store.set_paused(job.id, pause_reason);
    let _ = shared.store.restart_content(job.id);
    let _ = shared.retrack.send(job.path.clone());
}

/// The file is gone before it was uploaded: its job is forgotten, nothing goes to failed/.
fn forget_vanished(shared: &Shared, id: i64, name: &str) {
    tracing::info!(file = %name, "the file disappeared; forgetting it");
    let _ = shared
        .store
        .forget(id, "the file disappeared before it was uploaded");
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
        _ => format!("platform unreachable or failing: {err}"),
    };
    let mut pause = shared.pause.lock().unwrap_or_else(|e| e.into_inner());
    let failures = pause.as_ref().map(|p| p.failures + 1).unwrap_or(1);
    let delay = shared.pause_policy.delay(failures, None);
    let changed = pause.as_ref().map(|p| p.reason != reason).unwrap_or(true);
    if changed {
        tracing::warn!(
            "uploads paused: {reason}. Files stay where they are; trying again in {:.0}s and then less and less often",
            delay.as_secs_f64()
        );
        let _ = shared.store.set_queue_pause(Some(&reason));
    }
    *pause = Some(QueuePause {
        reason,
        failures,
        retry_at: Instant::now() + delay,
        probing: false,
    });
    shared.wake.notify_one();
}

fn end_pause(shared: &Arc<Shared>) {
    let mut pause = shared.pause.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = pause.take() {
        tracing::info!("uploads resumed (paused because: {})", old.reason);
        let _ = shared.store.set_queue_pause(None);
        shared.wake.notify_waiters();
    }
}

/// Moves a decided job's file to done/ or failed/ and writes its sidecar. A failure (disk
/// full, permissions) leaves the file where it is and the job finishing, tried again later.
async fn finish_job(shared: &Arc<Shared>, id: i64) {
    let job = match shared.store.job(id) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(job = id, "state store: {err}");
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
    let outcome = tokio::task::spawn_blocking(move || finish_blocking(&store, &job, &base)).await;
    let failure = match outcome {
        Ok(Ok(Finished::Moved(dest))) => {
            tracing::info!(
                "{} → {}",
                if uploaded { "done" } else { "failed" },
                dest.display()
            );
            None
        }
        Ok(Ok(Finished::RemovedBeforeMove(why))) => {
            tracing::warn!(job = id, "{why}");
            None
        }
        Ok(Err(message)) => Some(message),
        Err(err) => Some(format!("finishing failed: {err}")),
    };
    let mut stuck = shared
        .stuck_finishes
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match failure {
        None => {
            stuck.remove(&id);
        }
        Some(message) => {
            if stuck.get(&id) != Some(&message) {
                tracing::error!(
                    job = id,
                    "{message}; the file stays where it is and is tried again every {} s",
                    FINISH_RETRY_EVERY.as_secs()
                );
            } else {
                tracing::debug!(job = id, "{message}; still trying");
            }
            stuck.insert(id, message);
        }
    }
}

/// How a job's file left the watched folder.
enum Finished {
    Moved(PathBuf),
    /// Someone removed it after its upload ended and before the move: nothing to move.
    RemovedBeforeMove(String),
}

fn finish_blocking(store: &JobStore, job: &Job, base: &Path) -> Result<Finished, String> {
    let dest = if job.path.exists() {
        finish::move_without_overwrite(&job.path, base, &job.rel_path).map_err(|e| e.to_string())?
    } else if let Some(moved) = find_moved(base, &job.rel_path, job.size) {
        // A crash between the move and the record: the moved file is the one without a sidecar.
        moved
    } else if job.folder.is_dir() {
        // The folder is there but the file is not (with a missing folder, wait for it instead).
        let ended = match (&job.outcome, &job.video_id) {
            (Some(Outcome::Uploaded), Some(video)) => format!("uploaded as video {video}"),
            _ => "failed".to_owned(),
        };
        let why = format!(
            "{} was removed from the folder after it {ended}, before it could be moved to {}; \
             nothing to move",
            job.path.display(),
            base.display()
        );
        store.forget(job.id, &why).map_err(|e| e.to_string())?;
        return Ok(Finished::RemovedBeforeMove(why));
    } else {
        return Err(format!(
            "{} cannot be seen (its folder is missing) and was not found in {}",
            job.path.display(),
            base.display()
        ));
    };
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = store.record_event(job.id, "moved", &format!("to {}", dest.display()));
    let fresh = store.job(job.id).map_err(|e| e.to_string())?;
    let sidecar = Sidecar::from_job(&fresh, &file_name);
    finish::write_sidecar(&dest, &sidecar).map_err(|e| e.to_string())?;
    store.mark_moved(job.id, &dest).map_err(|e| e.to_string())?;
    Ok(Finished::Moved(dest))
}

/// After a crash mid-finish: the file in `base` named like `rel_path` (or with a ` (n)` suffix)
/// of the right size that has no sidecar yet.
fn find_moved(base: &Path, rel_path: &Path, size: u64) -> Option<PathBuf> {
    let first = base.join(rel_path);
    let dir = first.parent()?.to_path_buf();
    let stem = first.file_stem()?.to_string_lossy().into_owned();
    let ext = first
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    std::iter::once(first.clone())
        .chain((1..1000).map(|n| dir.join(format!("{stem} ({n}){ext}"))))
        .take_while(|p| p.exists() || p == &first)
        .find(|p| {
            p.metadata().map(|m| m.len() == size).unwrap_or(false)
                && !finish::sidecar_path(p).exists()
        })
}

/// Removes our own temporary files (`.…hotfolder-tmp`: a copy across file systems or a
/// sidecar being written) that a kill left in done/ or failed/. Only ours: nothing else is
/// touched.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            remove_stale_temps(&path);
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(".hotfolder-tmp") {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted move")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), "cannot remove a stale temporary file: {err}")
                }
            }
        }
    }
}

/// Jobs stuck finishing (a move failed) are tried again: every [`FINISH_RETRY_EVERY`] while
/// one is known to be stuck, and at each rescan.
async fn retry_stuck_finishes(shared: &Arc<Shared>) {
    let ids = match shared.store.finishing_ids() {
        Ok(ids) => ids,
        Err(err) => {
            tracing::error!("state store: {err}");
            return;
        }
    };
    // Jobs that left Finishing some other way are no longer stuck.
    shared
        .stuck_finishes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|id, _| ids.contains(id));
    let busy: HashSet<i64> = shared
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for id in ids {
        if !busy.contains(&id) {
            finish_job(shared, id).await;
        }
    }
}

/// For `status`: a one-line summary of the queue.
pub fn summary_line(store: &JobStore) -> String {
    match store.summary() {
        Ok(s) => format!(
            "{} waiting, {} uploading, {} paused, {} done, {} failed",
            s.waiting, s.uploading, s.paused, s.done, s.failed
        ),
        Err(err) => format!("queue unreadable: {err}"),
    }
}
