//! The intake: folders → complete files → jobs in the queue. It owns the notify watchers and
//! one stability tracker per folder, checks that each watched folder is still the one watched
//! (deleted, replaced, a share unmounted), applies reloaded settings, and queues complete files
//! in batches. Its loop also pings the service manager's watchdog, so a hung intake gets the
//! agent restarted.
//!
//! Folders whose [`WatchMode`] polls (network and FUSE file systems, `poll_interval` set, a
//! system watch limit met) are walked on a timer: the walk runs off the loop (a slow share must
//! not stall it) and its files go through the same [`Intake::consider`] as events, so the
//! tracker decides. On such file systems every look at a file is fresh
//! ([`ready::inspect_fresh`]): a share's attribute cache must not make a growing file look
//! still.

mod folders;
mod queue;
mod reload;
pub(super) use reload::warn_unconfigured_jobs;
mod settling;

use queue::{enqueue, latest_per_path, name_in_folder, new_job};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::release::{Refusal, held_text, look_again_in, look_at, queue_refused};
use super::{
    FINISH_RETRY_EVERY, FOLDER_CHECK_EVERY, RESCAN_EVERY, Shared, dispatch, service,
    sleep_until_opt,
};
use crate::chain;
use crate::config::{FolderSettings, Settings};
use crate::escape::escaped;
use crate::ready::{
    self, Inspection, NameFilter, NameVerdict, Release, ReleaseRules, StabilityTracker, StableFile,
};
use crate::store::{
    Enqueued, FolderMode, JobError, JobState, JobStore, NewJob, SettlingChange, SettlingFile,
};
use crate::watch::{
    FolderId, FolderWatcher, ScanResult, WatchError, WatchEvent, WatchLimit, WatchMode, WatchSpec,
};

/// How long a folder check may take before the folder counts as not answering (a hung network
/// mount); the check goes on in the background and is not started twice.
const FOLDER_CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// How far behind the agent `status`'s list of settling files may be: changes are collected
/// this long and written in one transaction (every watcher event is one turn of the intake's
/// loop, and a commit per event would cost 10,000 commits for a folder of 10,000 new files).
const SETTLING_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long a walk of a folder may take before the intake goes on without it (a share that
/// hangs); the walk is not started again while it still runs. Well inside the watchdog's 60 s.
const WALK_PATIENCE: Duration = Duration::from_secs(20);

/// How often a file hotfolder already uploaded, found again in a watched folder, is looked at
/// again (moved out, it is forgotten at once; this catches a new file of the same name that
/// kept the old one's size and mtime, as `cp -p` does).
const REAPPEARED_LOOK_AGAIN: Duration = Duration::from_secs(600);

/// How often a folder polled because a system watch limit was met is watched with events again
/// when the limit itself did not change (other programs may have freed watches since). A
/// raised limit, as `status` advises, is tried at the next folder check. Not more often: each
/// try adds a watch per subfolder until the limit stops it, which other programs of the same
/// user feel.
const LIMIT_RETRY_EVERY: Duration = Duration::from_secs(3600);

/// One watched folder as the intake sees it.
struct FolderIntake {
    spec: WatchSpec,
    settings: FolderSettings,
    filter: NameFilter,
    tracker: StabilityTracker,
    /// Paths already reported as skipped, so a symlink is logged once, not at every rescan.
    skipped: HashSet<PathBuf>,
    /// Stable files another signal holds back, and the reason last logged for each: logged
    /// when it changes, not at every look.
    held: HashMap<PathBuf, String>,
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
    /// How the folder is watched, while it is.
    mode: Option<WatchMode>,
    /// When the folder is walked next, for a folder whose mode polls. `None` while a walk runs
    /// (the next is timed from its end, so walks never overlap) or when it is not polled.
    next_poll: Option<Instant>,
    /// A poll's walk is running in the background.
    polling: bool,
    /// When to try events again on a folder polled because of a system watch limit.
    limit_retry_at: Option<Instant>,
    /// The limit's values when it was met (see [`WatchLimit::current`]): events are tried
    /// again as soon as they change.
    limit_seen: Option<[Option<u64>; 2]>,
    /// Paths a walk could not read, logged once until a walk reads them again (a polled folder
    /// is walked every few seconds).
    unreadable: HashSet<PathBuf>,
    /// A look at a file here did not answer: its other due files wait until then rather than
    /// stall the loop 10 s each (the folder check decides whether the folder is gone).
    not_answering_until: Option<Instant>,
    /// The network or FUSE file system the folder was last watched on (`fuse.sshfs`): found on
    /// a local one later, the share was unmounted (see `FolderIntake::unmounted_share`).
    share: Option<String>,
    /// A walk of the folder still running after [`WALK_PATIENCE`]: no second one is started.
    slow_walk: Option<tokio::task::JoinHandle<ScanResult>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    Watched(FolderId),
    Missing(String),
}

/// The presence of a folder before its first watch: not yet known to be missing.
const NOT_WATCHED_YET: &str = "not watched yet";

/// Turns watcher events and scans into jobs once files are complete.
pub(super) struct Intake {
    folders: Vec<FolderIntake>,
    /// Complete files not yet in the store: queued together in one transaction (10,000 files
    /// found at start must not cost 10,000 synchronous commits).
    ready: Vec<ReadyFile>,
    /// Files that go to failed/ without an upload, not yet in the store.
    refused: Vec<Refusal>,
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
            refused: Vec::new(),
            settling_flush_at: None,
            settling_resync: false,
            settling_failing: false,
            folders: folders
                .iter()
                .map(|folder| FolderIntake {
                    spec: WatchSpec::for_folder(folder),
                    settings: folder.clone(),
                    filter: NameFilter::new(&folder.include, &folder.exclude),
                    tracker: StabilityTracker::new(folder.stable_for),
                    skipped: HashSet::new(),
                    held: HashMap::new(),
                    presence: Presence::Missing(NOT_WATCHED_YET.into()),
                    slow_check: None,
                    watch_failures: 0,
                    next_watch_attempt: None,
                    mode: None,
                    next_poll: None,
                    polling: false,
                    limit_retry_at: None,
                    limit_seen: None,
                    unreadable: HashSet::new(),
                    not_answering_until: None,
                    slow_walk: None,
                    share: None,
                })
                .collect(),
        }
    }

    pub(super) async fn initial_scan(&mut self, shared: &Arc<Shared>) {
        for index in 0..self.folders.len() {
            // A folder missing at start is walked when it appears (`check_folders`).
            if matches!(self.folders[index].presence, Presence::Watched(_)) {
                self.scan_folder(shared, index).await;
            }
        }
    }

    async fn scan_folder(&mut self, shared: &Arc<Shared>, index: usize) {
        let folder = &mut self.folders[index];
        // A walk that hung on a share is not joined by another one.
        let walk = match folder.slow_walk.take() {
            Some(walk) if !walk.is_finished() => {
                folder.slow_walk = Some(walk);
                tracing::debug!(folder = %escaped(&folder.spec.root), "an earlier walk of the folder is still running");
                return;
            }
            Some(walk) => walk,
            None => {
                let spec = folder.spec.clone();
                tokio::task::spawn_blocking(move || crate::watch::scan(&spec))
            }
        };
        let mut walk = walk;
        let result = match tokio::time::timeout(WALK_PATIENCE, &mut walk).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => {
                tracing::error!("folder scan failed: {err}");
                return;
            }
            Err(_) => {
                let folder = &mut self.folders[index];
                tracing::warn!(
                    folder = %escaped(&folder.spec.root),
                    "walking the folder takes longer than {} s (a network share that hangs or is very slow?); the other folders go on, and this one is walked again later",
                    WALK_PATIENCE.as_secs()
                );
                folder.slow_walk = Some(walk);
                return;
            }
        };
        self.take_scan(shared, index, result).await;
    }

    /// What a walk of folder `index` found: files to consider, entries to skip (said once) and
    /// paths it could not read (said once, until they read again).
    async fn take_scan(&mut self, shared: &Arc<Shared>, index: usize, result: ScanResult) {
        let folder = &mut self.folders[index];
        let unreadable: HashSet<PathBuf> = result.errors.iter().map(|(p, _)| p.clone()).collect();
        for (path, err) in &result.errors {
            if !folder.unreadable.contains(path) {
                tracing::warn!(path = %escaped(&path), "cannot read: {err}");
            }
        }
        folder.unreadable = unreadable;
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
    /// provably not been written for that long and is complete at once (not on network or
    /// FUSE file systems, whose clocks may differ from ours, nor where `poll_interval` is set,
    /// as it used to be for those).
    async fn consider(&mut self, shared: &Arc<Shared>, path: PathBuf, from_scan: bool) {
        let Some(index) = self.folder_of(&path) else {
            return;
        };
        let fresh = self.folders[index].fresh();
        if self.folders[index].tracker.is_tracked(&path) {
            // Written to while settling: the new size and mtime restart its quiet period now,
            // not at the next look, and `status` shows the file as it is (one lstat per event;
            // vanished or replaced files are sorted out at that look). On a share the look is
            // a fresh one, off the loop: a cached size would restart the clock with an old
            // snapshot.
            let inspection = if fresh {
                look_at(
                    path.clone(),
                    true,
                    ReleaseRules::of(&self.folders[index].settings),
                    SystemTime::now(),
                    |_| false,
                )
                .await
                .inspection
            } else {
                ready::inspect(&path)
            };
            if let Ok(Inspection::Regular(snapshot)) = inspection {
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
        let quick = from_scan && folder.settings.poll_interval.is_none() && !fresh;
        let look = look_at(
            path.clone(),
            fresh,
            ReleaseRules::of(&folder.settings),
            SystemTime::now(),
            move |snapshot| {
                quick && mtime_age(snapshot.mtime_ns).is_some_and(|age| age >= stable_for)
            },
        )
        .await;
        match look.inspection {
            Ok(Inspection::Regular(snapshot)) => match look.release {
                Some(Ok(release)) => {
                    let age = mtime_age(snapshot.mtime_ns);
                    let rule = format!(
                        "found by a scan, not modified for {}s (stable_for is {}s)",
                        age.map(|a| a.as_secs()).unwrap_or_default(),
                        stable_for.as_secs_f64()
                    );
                    let now = Instant::now();
                    let stable = StableFile {
                        path,
                        snapshot,
                        first_seen: now,
                        since: now,
                        rule,
                    };
                    self.released(shared, index, stable, release);
                }
                _ => {
                    self.folders[index]
                        .tracker
                        .observe(path, snapshot, Instant::now());
                }
            },
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
            folder.held.retain(|held, _| !held.starts_with(path));
        }
    }

    /// When the loop looks at files next: the earliest due file, except in a folder that is
    /// not answering, whose files wait until it is asked again.
    fn next_deadline(&self) -> Option<Instant> {
        self.folders
            .iter()
            .filter_map(|f| {
                let due = f.tracker.next_deadline()?;
                Some(match f.not_answering_until {
                    Some(until) => due.max(until),
                    None => due,
                })
            })
            .min()
    }

    /// Looks again at files whose quiet period is over; the complete ones become jobs.
    async fn check_due(&mut self, shared: &Arc<Shared>) {
        let now = Instant::now();
        for index in 0..self.folders.len() {
            let due = self.folders[index].tracker.due(now);
            let rules = ReleaseRules::of(&self.folders[index].settings);
            let fresh = self.folders[index].fresh();
            if self.folders[index]
                .not_answering_until
                .is_some_and(|until| now < until)
            {
                continue;
            }
            for path in due {
                // Since when the tracker has seen the file as it is, on the wall clock.
                let seen_since = self.folders[index]
                    .tracker
                    .quiet_since(&path)
                    .map(|quiet| SystemTime::now() - now.saturating_duration_since(quiet.since))
                    .unwrap_or_else(SystemTime::now);
                let look = look_at(path.clone(), fresh, rules, seen_since, |_| true).await;
                let folder = &mut self.folders[index];
                if look.timed_out {
                    // The rest of this folder's due files wait: one hung share must not hold
                    // the loop (and the watchdog) for 10 s per file.
                    tracing::warn!(path = %escaped(&path), "cannot inspect: it did not answer (a network share that hangs?); the folder's files are looked at again in {} s", FOLDER_CHECK_EVERY.as_secs());
                    folder.not_answering_until = Some(Instant::now() + FOLDER_CHECK_EVERY);
                    break;
                }
                match look.inspection {
                    Ok(Inspection::Regular(snapshot)) => {
                        if let Some(stable) = folder.tracker.confirm(&path, snapshot, now) {
                            match look.release {
                                Some(Ok(release)) => {
                                    folder.skipped.remove(&path);
                                    self.released(shared, index, stable, release);
                                }
                                // Still locked by the writer, or not readable by us: look
                                // again after another quiet period (logged once).
                                Some(Err(err)) => {
                                    if folder.skipped.insert(path.clone()) {
                                        tracing::warn!(path = %escaped(&path), "complete but cannot be opened ({err}); waiting until it can be read");
                                    }
                                    folder.tracker.observe(path, snapshot, now);
                                }
                                None => folder.tracker.observe(path, snapshot, now),
                            }
                        }
                    }
                    Ok(Inspection::Vanished) => {
                        folder.tracker.forget(&path);
                        folder.held.remove(&path);
                    }
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

    /// Acts on the other signals' verdict on a stable file: queue it, track it again (it
    /// changed, or another signal holds it back), or send it to failed/.
    fn released(&mut self, shared: &Shared, index: usize, stable: StableFile, release: Release) {
        let folder = &mut self.folders[index];
        let path = stable.path.clone();
        // The very file hotfolder placed in done/, seen again (done/ renamed, `done_dir`
        // changed): held, so that one delivery does not become two videos.
        let before = match release {
            Release::Ready { .. } => crate::reappeared::uploaded_before(&shared.store, &path),
            _ => Ok(None),
        };
        match before {
            Ok(None) => {}
            Ok(Some(before)) => {
                let text = before.explanation();
                if folder.held.get(&path) != Some(&text) {
                    tracing::warn!(file = %escaped(&name_in_folder(&folder.settings.path, &path)), "{text}");
                    folder.held.insert(path, text.clone());
                }
                folder
                    .tracker
                    .hold(stable, Instant::now(), REAPPEARED_LOOK_AGAIN, text);
                return;
            }
            // Never uploaded in doubt: looked at again after another quiet period.
            Err(err) => {
                shared.store_failed("cannot look up whether the file was uploaded", &err);
                folder
                    .tracker
                    .observe(path, stable.snapshot, Instant::now());
                return;
            }
        }
        match release {
            Release::Ready { signals } => {
                folder.held.remove(&path);
                let verdict = path
                    .file_name()
                    .map(|n| folder.filter.verdict(n).to_string())
                    .unwrap_or_default();
                let mut stable = stable;
                for signal in signals {
                    stable.rule.push_str("; ");
                    stable.rule.push_str(&signal);
                }
                self.ready.push(ReadyFile {
                    folder: folder.settings.clone(),
                    stable,
                    verdict,
                });
            }
            Release::Changed(snapshot) => {
                folder.tracker.observe(path, snapshot, Instant::now());
            }
            Release::Held {
                by,
                why,
                gives_up_at,
            } => {
                let text = held_text(by, &why);
                if folder.held.get(&path) != Some(&text) {
                    tracing::info!(
                        file = %escaped(&name_in_folder(&folder.settings.path, &path)),
                        "stable but not queued: {}",
                        escaped(&text)
                    );
                    folder.held.insert(path, text.clone());
                }
                let wait =
                    look_again_in(folder.settings.stable_for, gives_up_at, SystemTime::now());
                folder.tracker.hold(stable, Instant::now(), wait, text);
            }
            Release::Refused {
                message,
                meaning,
                never_finished,
            } => {
                folder.held.remove(&path);
                let mut stable = stable;
                stable.rule.push_str("; refused: ");
                stable.rule.push_str(&message);
                let file = ReadyFile {
                    folder: folder.settings.clone(),
                    stable,
                    verdict: String::new(),
                };
                self.refused.push(Refusal {
                    job: new_job(&file),
                    error: JobError {
                        status: None,
                        message,
                        meaning,
                    },
                    never_finished,
                });
            }
        }
    }

    /// Puts every complete file into the store in one transaction. While the store cannot be
    /// written they are kept here (a file reported twice meanwhile, once) and queued once it
    /// can: the folder check calls this every few seconds.
    fn flush_ready(&mut self, shared: &Arc<Shared>) {
        if !shared.store_health.is_writable() {
            return;
        }
        if !self.refused.is_empty() {
            self.refused = queue_refused(shared, std::mem::take(&mut self.refused));
        }
        if self.ready.is_empty() {
            return;
        }
        let files = latest_per_path(std::mem::take(&mut self.ready));
        self.ready = enqueue(shared, files);
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
        let (polled_tx, mut polled) = mpsc::unbounded_channel();
        loop {
            self.schedule_settling_flush();
            let deadline = self.next_deadline();
            let settling_flush_at = self.settling_flush_at;
            let next_poll = self.folders.iter().filter_map(|f| f.next_poll).min();
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
                    Some(event) => self.on_events(shared, &mut watcher, event, &mut events).await,
                    None => return,
                },
                _ = sleep_until_opt(next_poll) => self.start_polls(&polled_tx),
                Some(result) = polled.recv() => self.take_poll(shared, result).await,
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
                        // A polled folder is walked far more often than this anyway.
                        if !self.folders[index].mode.as_ref().is_some_and(WatchMode::polls) {
                            self.scan_folder(shared, index).await;
                        }
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

/// Debug builds only: `HOTFOLDER_TEST_INTAKE_PANIC=1` makes the intake panic once it has
/// scanned, so that tests can check that the agent does not carry on deaf.
#[cfg(debug_assertions)]
pub(super) fn fault_for_tests() {
    if std::env::var_os("HOTFOLDER_TEST_INTAKE_PANIC").is_some() {
        panic!("HOTFOLDER_TEST_INTAKE_PANIC is set");
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
    use super::reload::{Rewatch, pin_resolved_roots, plan_reload};
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
