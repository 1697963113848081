//! The intake: folders → complete files → jobs in the queue. It owns the notify watchers and
//! one stability tracker per folder, checks that each watched folder is still the one watched
//! (deleted, replaced, a share unmounted), applies reloaded settings, and queues complete files
//! in batches. Its loop also pings the service manager's watchdog, so a hung intake gets the
//! agent restarted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    FINISH_RETRY_EVERY, FOLDER_CHECK_EVERY, RESCAN_EVERY, Shared, dispatch, service,
    sleep_until_opt,
};
use crate::chain;
use crate::config::{FolderSettings, Settings};
use crate::escape::escaped;
use crate::ready::{self, Inspection, NameFilter, NameVerdict, StabilityTracker, StableFile};
use crate::store::{Enqueued, JobState, JobStore, NewJob, SettlingChange, SettlingFile};
use crate::watch::{FolderId, FolderWatcher, WatchError, WatchEvent, WatchSpec};

/// How long a folder check may take before the folder counts as not answering (a hung network
/// mount); the check goes on in the background and is not started twice.
const FOLDER_CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// How far behind the agent `status`'s list of settling files may be: changes are collected
/// this long and written in one transaction (every watcher event is one turn of the intake's
/// loop, and a commit per event would cost 10,000 commits for a folder of 10,000 new files).
const SETTLING_FLUSH_EVERY: Duration = Duration::from_secs(1);

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
pub(super) struct Intake {
    folders: Vec<FolderIntake>,
    /// Complete files not yet in the store: queued together in one transaction (10,000 files
    /// found at start must not cost 10,000 synchronous commits).
    ready: Vec<ReadyFile>,
    /// The copy of the settling files that `status` reads: when it is written next.
    settling_flush_at: Option<Instant>,
    /// Write the whole set next time, not the changes: a reload swapped trackers, or a write
    /// failed and its changes are lost.
    settling_resync: bool,
    /// The last write of the settling files failed (logged once until one succeeds).
    settling_failing: bool,
}

/// A complete file on its way into the store.
struct ReadyFile {
    folder: FolderSettings,
    stable: StableFile,
    verdict: String,
}

impl Intake {
    pub(super) fn new(folders: &[FolderSettings]) -> Intake {
        Intake {
            ready: Vec::new(),
            settling_flush_at: None,
            settling_resync: false,
            settling_failing: false,
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
                                tracing::info!(folder = %escaped(&root), "the folder is back; watching it again");
                            } else {
                                tracing::warn!(folder = %escaped(&root), "the folder was replaced (made again, or a share mounted over it); watching the new one");
                            }
                            self.note_presence(shared, index, None);
                            self.scan_folder(shared, index).await;
                        }
                        Err(err) => self.folder_missing(shared, watcher, index, chain(&err)),
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
            tracing::error!(folder = %escaped(&folder.spec.root), "cannot see the watched folder: {why}; new files there are not noticed until it is back (checked every {} s)", FOLDER_CHECK_EVERY.as_secs());
        } else {
            // The reason changed (deleted, then a link put in its place): the log says what
            // `status` says, once per change.
            tracing::warn!(folder = %escaped(&folder.spec.root), "the watched folder is still not usable, now because {why}");
        }
        self.note_presence(shared, index, Some(&why));
    }

    /// Keeps `status` told which folders are missing.
    fn note_presence(&self, shared: &Arc<Shared>, index: usize, missing: Option<&str>) {
        let root = &self.folders[index].spec.root;
        if let Err(err) = shared.store.set_folder_missing(root, missing) {
            shared.store_failed("cannot record the folder's state for status", &err);
        }
    }

    pub(super) async fn initial_scan(&mut self, shared: &Arc<Shared>) {
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
            tracing::warn!(path = %escaped(&path), "cannot read: {err}");
        }
        for (path, reason) in result.skipped {
            self.note_skipped(index, path, &reason.to_string());
        }
        for path in result.files {
            self.consider(shared, path, true).await;
        }
        self.flush_ready(shared);
    }

    fn note_skipped(&mut self, index: usize, path: PathBuf, reason: &str) {
        if self.folders[index].skipped.insert(path.clone()) {
            tracing::info!(path = %escaped(&path), "skipped: it is {reason}");
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
    async fn consider(&mut self, shared: &Arc<Shared>, path: PathBuf, from_scan: bool) {
        let Some(index) = self.folder_of(&path) else {
            return;
        };
        if self.folders[index].tracker.is_tracked(&path) {
            // Written to while settling: the new size and mtime restart its quiet period now,
            // not at the next look, and `status` shows the file as it is (one lstat per event;
            // vanished or replaced files are sorted out at that look).
            if let Ok(Inspection::Regular(snapshot)) = ready::inspect(&path) {
                self.folders[index]
                    .tracker
                    .observe(path, snapshot, Instant::now());
            }
            return;
        }
        let folder = &self.folders[index];
        let Some(name) = path.file_name() else {
            return;
        };
        match folder.filter.verdict(name) {
            NameVerdict::Accepted { .. } => {}
            verdict => {
                tracing::debug!(path = %escaped(&path), "ignored: {verdict}");
                return;
            }
        }
        match shared.store.active_job_for_path(&path) {
            Ok(Some(job)) if job.state != JobState::Paused => return,
            Ok(_) => {}
            Err(err) => {
                shared.store_failed("cannot look up the file in the queue", &err);
                return;
            }
        }
        let stable_for = folder.settings.stable_for;
        let quick = from_scan && folder.settings.poll_interval.is_none();
        let look = look_at(path.clone(), move |snapshot| {
            quick && mtime_age(snapshot.mtime_ns).is_some_and(|age| age >= stable_for)
        })
        .await;
        let folder = &mut self.folders[index];
        match look.inspection {
            Ok(Inspection::Regular(snapshot)) => {
                if matches!(look.readable, Some(Ok(()))) {
                    let verdict = path
                        .file_name()
                        .map(|n| folder.filter.verdict(n).to_string())
                        .unwrap_or_default();
                    let age = mtime_age(snapshot.mtime_ns);
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
            Err(err) => tracing::warn!(path = %escaped(&path), "cannot inspect: {err}"),
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
    async fn check_due(&mut self, shared: &Arc<Shared>) {
        let now = Instant::now();
        for index in 0..self.folders.len() {
            let due = self.folders[index].tracker.due(now);
            for path in due {
                let look = look_at(path.clone(), |_| true).await;
                let folder = &mut self.folders[index];
                match look.inspection {
                    Ok(Inspection::Regular(snapshot)) => {
                        if let Some(stable) = folder.tracker.confirm(&path, snapshot, now) {
                            // Still locked by the writer, or not readable by us: look again
                            // after another quiet period (logged once).
                            if let Some(Err(err)) = look.readable {
                                if folder.skipped.insert(path.clone()) {
                                    tracing::warn!(path = %escaped(&path), "complete but cannot be opened ({err}); waiting until it can be read");
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
                        tracing::warn!(path = %escaped(&path), "cannot inspect: {err}");
                    }
                }
            }
        }
        self.flush_ready(shared);
    }

    /// Puts every complete file into the store in one transaction. While the store cannot be
    /// written they are kept here (a file reported twice meanwhile, once) and queued once it
    /// can: the folder check calls this every few seconds.
    fn flush_ready(&mut self, shared: &Arc<Shared>) {
        if self.ready.is_empty() || !shared.store_health.is_writable() {
            return;
        }
        let files = latest_per_path(std::mem::take(&mut self.ready));
        self.ready = enqueue(shared, files);
    }

    /// Schedules a write of the settling files when the trackers changed and none is due.
    fn schedule_settling_flush(&mut self) {
        if self.settling_flush_at.is_none()
            && (self.settling_resync || self.folders.iter().any(|f| f.tracker.has_changes()))
        {
            self.settling_flush_at = Some(Instant::now() + SETTLING_FLUSH_EVERY);
        }
    }

    /// What changed among the settling files since the last call, for the store: every file
    /// and `true` when the whole set is to be written.
    fn settling_changes(&mut self) -> (Vec<SettlingChange>, bool) {
        let full = std::mem::take(&mut self.settling_resync);
        // The tracker counts in monotonic time; `status` shows wall-clock times.
        let (now, wall_now) = (Instant::now(), OffsetDateTime::now_utc());
        let mut changes = Vec::new();
        for folder in &mut self.folders {
            let stable_for = folder.tracker.stable_for();
            let entries = if full {
                folder.tracker.take_all()
            } else {
                folder.tracker.take_changes()
            };
            changes.extend(entries.into_iter().map(|entry| match entry.quiet {
                Some(quiet) => SettlingChange::Settling(SettlingFile {
                    path: entry.path,
                    folder: folder.spec.root.clone(),
                    size: quiet.snapshot.size,
                    since: wall_now - now.saturating_duration_since(quiet.since),
                    stable_for,
                }),
                None => SettlingChange::Done(entry.path),
            }));
        }
        (changes, full)
    }

    /// Writes the settling files' changes for `status`, in one transaction.
    fn flush_settling(&mut self, store: &JobStore) {
        self.settling_flush_at = None;
        let (changes, full) = self.settling_changes();
        let result = if full {
            let files: Vec<SettlingFile> = changes
                .into_iter()
                .filter_map(|change| match change {
                    SettlingChange::Settling(file) => Some(file),
                    SettlingChange::Done(_) => None,
                })
                .collect();
            store.replace_settling(&files)
        } else {
            store.record_settling(&changes)
        };
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.settling_failing) {
                    tracing::info!("the files waiting to be complete are shown in status again");
                }
            }
            Err(err) => {
                if !self.settling_failing {
                    tracing::warn!(
                        "cannot record the files waiting to be complete, for status: {}; trying again every {} s",
                        chain(&err),
                        SETTLING_FLUSH_EVERY.as_secs()
                    );
                }
                self.settling_failing = true;
                self.settling_resync = true;
            }
        }
    }

    pub(super) async fn run(
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
        let mut heartbeat = tokio::time::interval(service::heartbeat_period());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut folder_check =
            tokio::time::interval_at(Instant::now() + FOLDER_CHECK_EVERY, FOLDER_CHECK_EVERY);
        folder_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finish_retry =
            tokio::time::interval_at(Instant::now() + FINISH_RETRY_EVERY, FINISH_RETRY_EVERY);
        finish_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.schedule_settling_flush();
            let deadline = self.next_deadline();
            let settling_flush_at = self.settling_flush_at;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep_until_opt(settling_flush_at) => self.flush_settling(&shared.store),
                _ = heartbeat.tick() => {
                    let status = service::status_line(shared);
                    service::notify(&[
                        sd_notify::NotifyState::Watchdog,
                        sd_notify::NotifyState::Status(&status),
                    ]);
                }
                Some(settings) = reloads.recv() => self.reload(shared, &mut watcher, settings).await,
                event = events.recv() => match event {
                    Some(WatchEvent::Touched(path)) => self.consider(shared, path, false).await,
                    Some(WatchEvent::Removed(path)) => self.forget(&path),
                    Some(WatchEvent::RescanNeeded { root, why }) => {
                        tracing::info!(folder = %escaped(&root), "rescanning: {why}");
                        while let Ok(more) = events.try_recv() {
                            if let WatchEvent::Touched(path) = more {
                                self.consider(shared, path, false).await;
                            }
                        }
                        for index in 0..self.folders.len() {
                            if self.folders[index].spec.root.starts_with(&root) || root.starts_with(&self.folders[index].spec.root) {
                                self.scan_folder(shared, index).await;
                            }
                        }
                    }
                    Some(WatchEvent::FolderGone { root }) => {
                        tracing::debug!(folder = %escaped(&root), "the watched folder was removed or renamed");
                        self.check_folders(shared, &mut watcher).await;
                    }
                    None => return,
                },
                _ = folder_check.tick() => {
                    self.check_folders(shared, &mut watcher).await;
                    self.flush_ready(shared);
                }
                _ = finish_retry.tick() => {
                    if shared.dispatch.any_stuck() {
                        dispatch::retry_stuck_finishes(shared);
                    }
                }
                Some(path) = retrack.recv() => {
                    self.forget(&path);
                    self.consider(shared, path, false).await;
                }
                _ = sleep_until_opt(deadline) => self.check_due(shared).await,
                _ = rescan.tick() => {
                    for index in 0..self.folders.len() {
                        self.scan_folder(shared, index).await;
                    }
                    dispatch::retry_stuck_finishes(shared);
                }
            }
        }
    }
}

/// The receiving ends the intake task listens to.
pub(super) struct IntakeChannels {
    pub(super) events: mpsc::UnboundedReceiver<WatchEvent>,
    pub(super) retrack: mpsc::UnboundedReceiver<PathBuf>,
    pub(super) reloads: mpsc::UnboundedReceiver<Settings>,
}

impl Intake {
    /// Starts watching every folder (at start: a folder that cannot be watched is fatal).
    pub(super) fn watch_all(&mut self, watcher: &mut FolderWatcher) -> Result<(), WatchError> {
        for folder in &mut self.folders {
            folder.watch(watcher)?;
            tracing::info!(folder = %escaped(&folder.spec.root), "watching");
        }
        Ok(())
    }

    /// Applies reloaded settings: watches added folders, drops removed ones, updates the rules
    /// of the others (rescanning them), and swaps the platform client when account or upload
    /// settings changed. Uploads in flight finish with the client they started with.
    async fn reload(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
        mut new: Settings,
    ) {
        if new.state_dir != shared.settings().state_dir {
            tracing::warn!("reload: [state] dir changed; that takes effect only after a restart");
        }
        for moved in pin_resolved_roots(&shared.settings().folders, &mut new.folders) {
            tracing::warn!(
                folder = %escaped(&moved.configured),
                "reload: the folder's path now leads to {} (a link changed since start); still watching {} only: restart hotfolder to follow the new place",
                escaped(&moved.now),
                escaped(&moved.kept)
            );
        }
        let plan = plan_reload(&mut self.folders, &new.folders);
        let mut kept = Vec::new();
        for (mut folder, watch) in plan.folders {
            let root = folder.spec.root.clone();
            match watch {
                Rewatch::No => {}
                Rewatch::Changed => {
                    if let Err(err) = folder.watch(watcher) {
                        tracing::error!(folder = %escaped(&root), "reload: cannot watch: {}", chain(&err));
                    }
                }
                Rewatch::New => match folder.watch(watcher) {
                    Ok(()) => {
                        tracing::info!(folder = %escaped(&root), "reload: watching a new folder")
                    }
                    Err(err) => {
                        tracing::error!(folder = %escaped(&root), "reload: cannot watch the new folder: {}", chain(&err));
                        continue;
                    }
                },
            }
            kept.push(folder);
        }
        for root in &plan.removed {
            watcher.unwatch(root);
            if let Err(err) = shared.store.set_folder_missing(root, None) {
                shared.store_failed("cannot record the folder's state for status", &err);
            }
            tracing::info!(folder = %escaped(&root), "reload: no longer watching");
        }
        self.folders = kept;
        // Trackers were dropped or swapped: `status` gets the whole set again.
        self.settling_resync = true;
        // Always a new client: the password may have changed, and its Debug form is masked.
        // It carries on the count of refused logins (see `Platform::successor`).
        let platform = match shared.platform().successor(&new.account, &new.upload) {
            Ok(platform) => Some(platform),
            Err(err) => {
                tracing::error!(
                    "reload: keeping the previous account settings: {}",
                    chain(&err)
                );
                None
            }
        };
        shared.replace(new, platform);
        tracing::info!("config reloaded: {} folder(s) watched", self.folders.len());
        for index in 0..self.folders.len() {
            self.scan_folder(shared, index).await;
        }
        shared.wake.notify_one();
    }
}

/// A folder whose configured path resolves elsewhere than it did at start.
struct MovedRoot {
    configured: PathBuf,
    now: PathBuf,
    kept: PathBuf,
}

/// A reload keeps each folder where its configured path led when hotfolder started: a link
/// swapped in for a watched folder (or for a folder above it) since then is not followed, as
/// the folder check never follows it either. Its done/ and failed/ stay where they were too,
/// when they lie inside it. Following a new target takes a restart, a deliberate act.
fn pin_resolved_roots(old: &[FolderSettings], new: &mut [FolderSettings]) -> Vec<MovedRoot> {
    let mut moved = Vec::new();
    for folder in new.iter_mut() {
        let Some(before) = old
            .iter()
            .find(|f| f.configured_path == folder.configured_path)
        else {
            continue;
        };
        if before.path == folder.path {
            continue;
        }
        moved.push(MovedRoot {
            configured: folder.configured_path.clone(),
            now: folder.path.clone(),
            kept: before.path.clone(),
        });
        for dir in [&mut folder.done_dir, &mut folder.failed_dir] {
            if let Ok(inside) = dir.strip_prefix(&folder.path) {
                *dir = before.path.join(inside);
            }
        }
        folder.path = before.path.clone();
    }
    moved
}

/// Whether a folder kept or added by a reload needs a (new) watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewatch {
    /// Watched as before (or missing: the folder check watches it once it is back).
    No,
    /// Watched, but what to watch changed (recursion, polling, done/ or failed/).
    Changed,
    /// Not watched before.
    New,
}

/// What a reload does to the folders, decided before anything is watched.
struct ReloadPlan {
    /// The folders of the new settings, in their order.
    folders: Vec<(FolderIntake, Rewatch)>,
    /// Roots watched before and not any more.
    removed: Vec<PathBuf>,
}

/// Compares the running folders with the reloaded settings. A folder that stays keeps what it
/// knows of its presence and its watch retries, and, while `stable_for` is unchanged, the files
/// already settling (a reload must not restart their clock) and the paths already reported.
fn plan_reload(current: &mut [FolderIntake], new: &[FolderSettings]) -> ReloadPlan {
    let fresh = Intake::new(new);
    let mut folders = Vec::new();
    for mut folder in fresh.folders {
        let watch = match current.iter_mut().find(|f| f.spec.root == folder.spec.root) {
            Some(previous) => {
                if previous.settings.stable_for == folder.settings.stable_for {
                    std::mem::swap(&mut folder.tracker, &mut previous.tracker);
                    folder.skipped = std::mem::take(&mut previous.skipped);
                }
                folder.presence = previous.presence.clone();
                folder.slow_check = previous.slow_check.take();
                folder.watch_failures = previous.watch_failures;
                folder.next_watch_attempt = previous.next_watch_attempt;
                if previous.spec != folder.spec && matches!(folder.presence, Presence::Watched(_)) {
                    Rewatch::Changed
                } else {
                    Rewatch::No
                }
            }
            None => Rewatch::New,
        };
        folders.push((folder, watch));
    }
    let removed = current
        .iter()
        .map(|f| f.spec.root.clone())
        .filter(|root| !folders.iter().any(|(f, _)| &f.spec.root == root))
        .collect();
    ReloadPlan { folders, removed }
}

/// Debug builds only: `HOTFOLDER_TEST_INTAKE_PANIC=1` makes the intake panic once it has
/// scanned, so that tests can check that the agent does not carry on deaf.
#[cfg(debug_assertions)]
pub(super) fn fault_for_tests() {
    if std::env::var_os("HOTFOLDER_TEST_INTAKE_PANIC").is_some() {
        panic!("HOTFOLDER_TEST_INTAKE_PANIC is set");
    }
}

/// The files in their order, each path once, with what was found last about it.
fn latest_per_path(files: Vec<ReadyFile>) -> Vec<ReadyFile> {
    let mut seen = HashSet::new();
    let mut latest: Vec<ReadyFile> = files
        .into_iter()
        .rev()
        .filter(|file| seen.insert(file.stable.path.clone()))
        .collect();
    latest.reverse();
    latest
}

/// Complete files become jobs (or a paused job of a changed file becomes waiting again).
/// Returns the files that could not be queued because the store cannot be written, to be
/// queued once it can.
fn enqueue(shared: &Arc<Shared>, files: Vec<ReadyFile>) -> Vec<ReadyFile> {
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
                rule: format!(
                    "{}; name {}{}",
                    file.stable.rule,
                    file.verdict,
                    not_utf8_note(path)
                ),
            }
        })
        .collect();
    let results = match shared.store.enqueue_many(&jobs) {
        Ok(results) => results,
        Err(err) => {
            let what = format!("cannot queue {} complete file(s)", jobs.len());
            return if shared.store_failed(&what, &err) {
                files
            } else {
                Vec::new()
            };
        }
    };
    let mut again = Vec::new();
    for ((job, result), file) in jobs.iter().zip(results).zip(files) {
        match result {
            Enqueued::New(_) => {
                tracing::info!(file = %escaped(&job.path), size = job.size, "complete: {}", job.rule);
                if let Some(name) = job.path.file_name()
                    && name.to_str().is_none()
                {
                    tracing::warn!(
                        file = %escaped(&job.path),
                        "the file name is not valid UTF-8: it is uploaded under the name \"{}\"; the sidecar's file_raw keeps the exact bytes",
                        escaped(&*name.to_string_lossy())
                    );
                }
            }
            Enqueued::AlreadyActive(id) => {
                // A file that changed while uploading is waiting (paused) to settle again.
                if let Ok(active) = shared.store.job(id)
                    && active.state == JobState::Paused
                {
                    match shared.store.requeue_changed(id, job.size, job.mtime_ns) {
                        Ok(()) => {
                            if let Err(err) = shared.store.record_event(
                                id,
                                "complete",
                                &format!("stable again: {}", job.rule),
                            ) {
                                shared.store_failed(
                                    &format!("cannot record an event of job {id}"),
                                    &err,
                                );
                            }
                            tracing::info!(file = %escaped(&job.path), "stable again; uploading it again to the same video");
                        }
                        Err(err) => {
                            if shared.store_failed(&format!("cannot requeue job {id}"), &err) {
                                again.push(file);
                            }
                        }
                    }
                }
            }
        }
    }
    shared.wake.notify_one();
    again
}

/// For the job's rule (and so the sidecar's events): a name that is not valid UTF-8 is sent
/// with U+FFFD in place of each invalid sequence, because the platform takes text only. Such
/// files are uploaded rather than left behind: an export from an old share or tool with a
/// Latin-1 name is still the studio's delivery, and a warning nobody reads would leave it
/// sitting in the folder for good.
fn not_utf8_note(path: &Path) -> String {
    match path.file_name() {
        Some(name) if name.to_str().is_none() => format!(
            "; the name is not valid UTF-8 ({}) and is sent as \"{}\"",
            escaped(name),
            escaped(&*name.to_string_lossy())
        ),
        _ => String::new(),
    }
}

/// How long one look at a candidate may take before it counts as failed for now (a network
/// share that hangs); the look goes on in the background and the intake carries on.
const FILE_LOOK_PATIENCE: Duration = Duration::from_secs(10);

/// What one look at a candidate found.
struct Look {
    inspection: std::io::Result<Inspection>,
    /// Whether it opens and reads, when it is a regular file and the caller asked.
    readable: Option<std::io::Result<()>>,
}

/// Inspects `path` and, when it is a regular file for which `check_readable` says so, checks
/// that it opens and reads: off the async threads, because both wait on the file system, and
/// with a limit, so a hanging share does not stall the intake loop (and with it the watchdog).
async fn look_at(
    path: PathBuf,
    check_readable: impl FnOnce(&ready::FileSnapshot) -> bool + Send + 'static,
) -> Look {
    let looking = tokio::task::spawn_blocking(move || {
        let inspection = ready::inspect(&path);
        let readable = match &inspection {
            Ok(Inspection::Regular(snapshot)) if check_readable(snapshot) => {
                Some(ready::opens_for_reading(&path))
            }
            _ => None,
        };
        Look {
            inspection,
            readable,
        }
    });
    let failed = |why: String| Look {
        inspection: Err(std::io::Error::other(why)),
        readable: None,
    };
    match tokio::time::timeout(FILE_LOOK_PATIENCE, looking).await {
        Ok(Ok(look)) => look,
        Ok(Err(err)) => failed(format!("the check failed: {err}")),
        Err(_) => failed(format!(
            "it did not answer within {} s (a network share that hangs?)",
            FILE_LOOK_PATIENCE.as_secs()
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ready::FileSnapshot;

    fn folder(path: &str, stable_secs: u64) -> FolderSettings {
        let mut folder = FolderSettings::with_defaults(PathBuf::from(path));
        folder.stable_for = Duration::from_secs(stable_secs);
        folder
    }

    fn settling(intake: &Intake, root: &str, file: &str) -> bool {
        intake
            .folders
            .iter()
            .find(|f| f.spec.root == Path::new(root))
            .is_some_and(|f| f.tracker.is_tracked(&Path::new(root).join(file)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_what_it_can_and_says_what_to_watch_and_drop() {
        let mut intake = Intake::new(&[folder("/a", 10), folder("/b", 10), folder("/c", 10)]);
        for (root, presence) in [
            ("/a", Presence::Watched(Some((1, 1)))),
            ("/b", Presence::Watched(Some((1, 2)))),
            ("/c", Presence::Missing("unmounted".into())),
        ] {
            let f = intake
                .folders
                .iter_mut()
                .find(|f| f.spec.root == Path::new(root))
                .unwrap();
            f.presence = presence;
            let snapshot = FileSnapshot {
                size: 1,
                mtime_ns: 0,
            };
            f.tracker
                .observe(Path::new(root).join("clip.mov"), snapshot, Instant::now());
        }

        // /a unchanged, /b with another stable_for and no longer recursive, /c gone, /d new.
        let mut b = folder("/b", 30);
        b.recursive = false;
        let new = [folder("/a", 10), b, folder("/d", 10)];
        let plan = plan_reload(&mut intake.folders, &new);
        assert_eq!(plan.removed, [PathBuf::from("/c")]);

        let watches: Vec<(PathBuf, Rewatch)> = plan
            .folders
            .iter()
            .map(|(f, w)| (f.spec.root.clone(), *w))
            .collect();
        assert_eq!(
            watches,
            [
                (PathBuf::from("/a"), Rewatch::No),
                (PathBuf::from("/b"), Rewatch::Changed),
                (PathBuf::from("/d"), Rewatch::New),
            ]
        );
        let reloaded = Intake {
            folders: plan.folders.into_iter().map(|(f, _)| f).collect(),
            ..Intake::new(&[])
        };
        // Same stable_for: the file settling in /a keeps its clock; /b's restarts.
        assert!(settling(&reloaded, "/a", "clip.mov"));
        assert!(!settling(&reloaded, "/b", "clip.mov"));
        assert_eq!(
            reloaded.folders[0].presence,
            Presence::Watched(Some((1, 1)))
        );
        assert_eq!(
            reloaded.folders[2].presence,
            Presence::Missing("not watched yet".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn settling_files_reach_status_in_batches_and_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let mut intake = Intake::new(&[folder("/in", 10)]);
        let snapshot = FileSnapshot {
            size: 7,
            mtime_ns: 0,
        };
        let observe = |intake: &mut Intake, name: &str| {
            intake.folders[0].tracker.observe(
                Path::new("/in").join(name),
                snapshot,
                Instant::now(),
            );
        };
        intake.schedule_settling_flush();
        assert_eq!(intake.settling_flush_at, None, "nothing to write");

        for i in 0..10_000 {
            observe(&mut intake, &format!("clip{i}.mov"));
            // Every watcher event is a turn of the loop; each only schedules the one write.
            intake.schedule_settling_flush();
        }
        let flush_at = Instant::now() + SETTLING_FLUSH_EVERY;
        assert_eq!(intake.settling_flush_at, Some(flush_at));
        tokio::time::advance(Duration::from_millis(300)).await;
        observe(&mut intake, "late.mov");
        intake.schedule_settling_flush();
        assert_eq!(intake.settling_flush_at, Some(flush_at));
        assert!(store.settling().unwrap().is_empty());

        let wall_before = OffsetDateTime::now_utc();
        let started = std::time::Instant::now();
        intake.flush_settling(&store);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        let stored = store.settling().unwrap();
        assert_eq!(stored.len(), 10_001);
        let late = stored
            .iter()
            .find(|f| f.path == Path::new("/in/late.mov"))
            .unwrap();
        assert_eq!(
            (late.size, late.stable_for, late.folder.as_path()),
            (7, Duration::from_secs(10), Path::new("/in"))
        );
        // Seen 300 ms (of paused time) after the others, in wall-clock time.
        let first = stored.iter().find(|f| f.path == Path::new("/in/clip0.mov"));
        let gap = late.since - first.unwrap().since;
        assert_eq!(gap, time::Duration::milliseconds(300));
        assert!(late.since <= wall_before + time::Duration::seconds(1));
        assert_eq!(intake.settling_flush_at, None);

        // A write that fails (a read-only store stands in for a full disk) loses its changes:
        // the next write is the whole set.
        let failing = JobStore::open_read_only(dir.path()).unwrap();
        intake.folders[0].tracker.forget(Path::new("/in/clip0.mov"));
        intake.schedule_settling_flush();
        intake.flush_settling(&failing);
        assert!(intake.settling_failing && intake.settling_resync);
        intake.schedule_settling_flush();
        assert!(intake.settling_flush_at.is_some(), "tried again");
        intake.flush_settling(&store);
        assert!(!intake.settling_failing && !intake.settling_resync);
        let stored = store.settling().unwrap();
        assert_eq!(stored.len(), 10_000);
        assert!(!stored.iter().any(|f| f.path == Path::new("/in/clip0.mov")));
    }

    #[test]
    fn a_reload_keeps_a_folder_where_it_led_at_start_when_a_link_now_leads_elsewhere() {
        let mut at_start = folder("/srv/exports", 10);
        at_start.configured_path = PathBuf::from("/srv/exports");
        let mut reloaded = folder("/private", 10);
        reloaded.configured_path = PathBuf::from("/srv/exports");
        reloaded.failed_dir = PathBuf::from("/elsewhere/failed");
        let mut unchanged = folder("/b", 10);
        unchanged.configured_path = PathBuf::from("/b");
        let mut new = [reloaded, unchanged.clone()];
        let moved = pin_resolved_roots(&[at_start, unchanged], &mut new);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].now, Path::new("/private"));
        assert_eq!(new[0].path, Path::new("/srv/exports"));
        assert_eq!(new[0].done_dir, Path::new("/srv/exports/done"));
        // A done/ or failed/ configured outside the folder is not the link's doing.
        assert_eq!(new[0].failed_dir, Path::new("/elsewhere/failed"));
        assert_eq!(new[1].path, Path::new("/b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_folder_is_not_rewatched_by_a_reload_and_keeps_its_retry_count() {
        let mut intake = Intake::new(&[folder("/c", 10)]);
        intake.folders[0].presence = Presence::Missing("unmounted".into());
        intake.folders[0].watch_failures = 3;
        let mut changed = folder("/c", 10);
        changed.recursive = false;
        let plan = plan_reload(&mut intake.folders, &[changed]);
        let (kept, watch) = &plan.folders[0];
        // The folder check watches it again once it is back, with the new spec.
        assert_eq!(*watch, Rewatch::No);
        assert_eq!(kept.presence, Presence::Missing("unmounted".into()));
        assert_eq!(kept.watch_failures, 3);
        assert!(!kept.spec.recursive);
    }
}
