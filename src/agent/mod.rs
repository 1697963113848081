//! The agent (`hotfolder run`): wires the stages together.
//!
//! ```text
//! intake (watch + ready) ──► store (SQLite queue) ──► dispatch ──► workers (upload) ──► finish
//! ```
//!
//! [`intake`] owns the notify watchers and one stability tracker per folder; when a file has
//! been still for `stable_for` it becomes a job in the store. [`dispatch`] starts up to
//! `parallel` workers on waiting jobs; a worker uploads one file, recording every step in the
//! store so that a kill at any moment resumes on the same video, then moves the file to done/
//! or failed/ with its sidecar. Credentials, quota and network failures pause the whole queue
//! instead of failing files; [`password_watch`] ends a pause for a refused password as soon as
//! the password file holds a new one. [`service`] talks to the service manager. Moves to done/
//! and failed/ run as tasks of their own (a copy to another file system can take minutes), never
//! in the intake's loop nor before READY. [`housekeeping`] looks after the state dir: the store
//! still in place, old jobs pruned, and a store that cannot be written ([`store_health`])
//! probed until it can. [`crate::notify::Outbox`] delivers `[[notify]]` events from the store,
//! a task per destination; [`pause_notice`] announces a pause once it has lasted 2 minutes.
//! [`transcoding`] follows the platform's transcoding of the videos of folders that ask for it.
//! Shutdown is a `CancellationToken` passed in.

mod claimed_job;
mod companion;
mod dispatch;
mod dispatch_state;
mod housekeeping;
mod intake;
mod job_observer;
mod markers;
mod password_watch;
mod pause_notice;
mod release;
mod retention;
mod service;
mod share_keeper;
mod store_health;
mod transcoding;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chain;
use crate::config::{FolderSettings, Settings};
use crate::escape::escaped;
use crate::finish;
use crate::http::{StatusSource, UploadCounters};
use crate::notify::Outbox;
use crate::retry::RetryPolicy;
use crate::store::{AgentNote, JobState, JobStore, StateLock, StoreError};
use crate::vmpro::api::Platform;
use crate::vmpro::error::VmproError;
use crate::watch::{FolderWatcher, WatchError};

use dispatch_state::DispatchState;
use intake::{Intake, IntakeChannels};
use store_health::{Reported, StoreHealth};

pub use service::{ShownCounts, queue_counts};

/// How often every folder is walked again to catch events the watcher missed.
pub const RESCAN_EVERY: Duration = Duration::from_secs(300);

/// How often each watched folder is checked to still be the one watched: a folder deleted and
/// made again, or a share unmounted and mounted again, loses its watch without a word.
pub const FOLDER_CHECK_EVERY: Duration = Duration::from_secs(3);

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
    #[error("cannot prepare uploads")]
    Platform(#[from] VmproError),
    #[error("no [[folder]] in the config: nothing to watch")]
    NoFolders,
    /// Who this agent is on shared folders is kept in the state dir.
    #[error("cannot read or make this agent's id in the state dir")]
    AgentId(#[source] std::io::Error),
    /// The part that notices new files died: carrying on would upload what is queued and then
    /// sit deaf for months, so the agent exits for its service manager to restart it.
    #[error(
        "the folder watcher stopped ({0}); exiting so that the service manager restarts hotfolder"
    )]
    IntakeStopped(String),
    /// The store's database or lock file was deleted or replaced under the running agent:
    /// carrying on would record jobs nobody can see, beside a second agent that could start.
    #[error(
        "the state store is no longer the one this agent opened; exiting so that the service manager restarts hotfolder"
    )]
    StoreVanished(#[source] StoreError),
    /// The task that checks the store and probes it after a failure died: without it a full
    /// disk would pause uploads for good, so the agent exits to be restarted.
    #[error(
        "the state store's upkeep stopped ({0}); exiting so that the service manager restarts hotfolder"
    )]
    UpkeepStopped(String),
}

/// What the intake, the dispatcher and the workers share.
struct Shared {
    /// Replaced as a whole by a reload (SIGHUP); readers clone what they need.
    settings: RwLock<Settings>,
    store: Arc<JobStore>,
    /// Held as long as the agent runs; also how `status` learns why uploads are paused while
    /// the store cannot be written.
    lock: StateLock,
    /// Whether the store can be written; uploads wait while it cannot.
    store_health: StoreHealth,
    /// Workers and moves to done/ or failed/: waited for (a while) at shutdown.
    tasks: TaskTracker,
    /// Cancelled at shutdown, or when the agent must stop: uploads and copies in progress stop
    /// and resume at the next start.
    stop: CancellationToken,
    /// Set once the temp files a kill left in done/ and failed/ are cleared: no move starts
    /// before, so the clearing never removes a copy in progress.
    temps_cleared: watch::Sender<bool>,
    /// Replaced by a reload; uploads in flight keep the one they started with.
    platform: RwLock<Arc<Platform>>,
    /// Wakes the dispatcher: a job was queued, a worker finished, a pause ended.
    wake: Notify,
    /// Wakes done/ retention at a reload, so a new `keep_done_for` applies at once rather than
    /// after the sleep the old one set (up to an hour).
    retention_wake: Notify,
    /// Which jobs run, whether the queue is paused, which finished files could not be moved.
    dispatch: DispatchState,
    /// Paths handed back to the intake to wait until they are stable again.
    retrack: mpsc::UnboundedSender<PathBuf>,
    /// Delays between probes while paused.
    pause_policy: RetryPolicy,
    /// What `/metrics` counts in memory (files, bytes, retries, durations), for the HTTP
    /// listener.
    counters: Arc<UploadCounters>,
    /// Delivers `[[notify]]` events; given the new settings by a reload.
    outbox: Outbox,
    /// The pause an earlier run was in is still open (its start kept for a pause met again
    /// soon, or its `resumed` owed): the first upload that works closes it, sending `resumed`
    /// if it was announced, even if this run never pauses.
    resumed_owed: AtomicBool,
    /// This agent's presence on its folders, and its claims on shared ones.
    holds: share_keeper::ShareHolds,
}

impl Shared {
    // A poisoned lock here only means a thread panicked while holding it; settings and the
    // platform handle are replaced whole, so what is inside is still consistent.
    fn settings(&self) -> RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    fn platform(&self) -> Arc<Platform> {
        self.platform
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reload: new settings, and a new platform client when one could be made.
    fn replace(&self, settings: Settings, platform: Option<Arc<Platform>>) {
        let listening = self.settings().http.clone();
        if settings.http != listening {
            tracing::warn!(
                "[http] changed; the listener keeps {} until hotfolder restarts",
                listening.map_or_else(
                    || "being off".to_owned(),
                    |http| format!("listening on {}", http.listen)
                )
            );
        }
        if let Some(platform) = platform {
            *self.platform.write().unwrap_or_else(|e| e.into_inner()) = platform;
        }
        self.outbox.reconfigure(&settings);
        transcoding::set_followed_folders(&self.store, &settings);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        // The new settings may have fixed the cause of a pause (the password, the VideoManager
        // id): the next probe need not wait out the pause's interval, up to an hour.
        self.dispatch.probe_now(Instant::now());
        // A held VideoManager no folder names any more (its id was fixed) is let go; those
        // still named probe at once (above).
        let in_use = self.settings().video_managers();
        for id in self.dispatch.release_unused(&in_use) {
            tracing::info!(
                "reload: no folder uploads into VideoManager {id} any more; its hold ends"
            );
            if let Err(err) = self.store.set_video_manager_held(id, None) {
                self.store_failed("cannot record the end of the hold for status", &err);
            }
        }
        self.retention_wake.notify_one();
    }

    fn folder(&self, root: &Path) -> Option<FolderSettings> {
        self.settings()
            .folders
            .iter()
            .find(|f| f.path == root)
            .cloned()
    }

    /// Logs a failed store call (`what` could not be done) and returns whether the store
    /// cannot be written. Then uploads pause until `housekeeping` finds it writable again, and
    /// only the first failure of the outage is logged: a full disk must not fill the log too.
    fn store_failed(&self, what: &str, err: &StoreError) -> bool {
        match self
            .store_health
            .report(err, Instant::now(), OffsetDateTime::now_utc())
        {
            Reported::Refused => {
                tracing::error!("{what}: {}", chain(err));
                false
            }
            Reported::Started => {
                let reason = self
                    .store_health
                    .current()
                    .map(|outage| outage.reason)
                    .unwrap_or_default();
                tracing::error!("uploads paused: {reason} (first failure: {what})");
                self.publish_store_outage();
                true
            }
            Reported::Ongoing => {
                tracing::debug!("{what}: {}", chain(err));
                true
            }
        }
    }

    /// Tells `status` (through the lock file: the store cannot take it) and the service manager
    /// (STATUS=) whether, and why, the store cannot be written.
    fn publish_store_outage(&self) {
        let note = self.store_health.current().map(|outage| AgentNote {
            paused: outage.reason,
            since: outage.since,
        });
        if let Err(err) = self.lock.set_note(note.as_ref()) {
            tracing::warn!(
                "cannot tell `hotfolder status` why uploads are paused (the lock file cannot be written either): {err}"
            );
        }
        let status = service::status_line(self);
        service::notify(&[sd_notify::NotifyState::Status(&status)]);
    }

    /// A write to the store worked after an outage: said once, and what waited on it resumes.
    fn store_writable_again(self: &Arc<Self>) {
        let Some((reason, lasted)) = self.store_health.recovered(Instant::now()) else {
            return;
        };
        tracing::info!(
            "the state store can be written again after {}; uploads resume (it could not: {reason})",
            humantime::format_duration(Duration::from_secs(lasted.as_secs().max(1)))
        );
        self.publish_store_outage();
        // The pause announced from memory: recorded now, with its end, for the destinations
        // that could not take it then.
        if let Some((paused, taken_by)) = self.outbox.unstored() {
            match self.store.unstored_pause_over(&paused, &taken_by) {
                Ok(()) => self.outbox.unstored_over(),
                Err(err) => {
                    self.store_failed("cannot record the end of the pause for [[notify]]", &err);
                }
            }
        }
        self.wake.notify_one();
        dispatch::retry_stuck_finishes(self);
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
    let lock = StateLock::acquire(&settings.state_dir)?;
    let store = Arc::new(JobStore::open(&settings.state_dir)?);
    let agent = crate::shared_folder::AgentId::of_state_dir(&settings.state_dir)
        .map_err(AgentError::AgentId)?;
    let agent = crate::shared_folder::set_this_agent(agent);
    let platform = Platform::new(&settings.account, &settings.upload)?;
    // `chunk_size = "auto"` starts from what earlier runs measured of the link.
    match store.link(settings.account.api_url.as_str()) {
        Ok(link) => platform.transport.link.seed(link),
        Err(err) => tracing::warn!(
            "cannot read the measured link; chunk sizes start from the first round trips: {}",
            chain(&err)
        ),
    }
    let (retrack_tx, retrack_rx) = mpsc::unbounded_channel();
    let mut pause_policy = RetryPolicy::new(
        u32::MAX,
        (settings.upload.backoff_max * 5).max(Duration::from_secs(1)),
    );
    pause_policy.jitter = 0.1;
    let mut probe_delays = RetryPolicy::new(u32::MAX, store_health::PROBE_CAP);
    probe_delays.jitter = 0.1;
    // Stops the uploads and moves too when the intake dies or the store vanishes, not only on
    // a signal.
    let stop = shutdown.child_token();
    let outbox = Outbox::start(&settings, store.clone(), stop.clone());
    // Before any job can end (the recovery below finishes interrupted moves).
    transcoding::set_followed_folders(&store, &settings);
    // A pause recorded by an earlier run is over: this run pauses (and says so) only when it
    // meets the cause itself; its start is kept for that (a crash loop is one long pause). If
    // it was announced, its `resumed` is owed.
    let resumed_owed = match store.forget_queue_pause() {
        Ok(owed) => owed,
        Err(err) => {
            tracing::error!("cannot reset the queue's pause for status: {}", chain(&err));
            false
        }
    };
    // Which VideoManagers the platform does not know, this run learns itself.
    if let Err(err) = store.clear_held_video_managers() {
        tracing::error!(
            "cannot reset the held VideoManagers for status: {}",
            chain(&err)
        );
    }
    let shared = Arc::new(Shared {
        settings: RwLock::new(settings),
        store,
        lock,
        store_health: StoreHealth::new(probe_delays),
        tasks: TaskTracker::new(),
        stop: stop.clone(),
        temps_cleared: watch::Sender::new(false),
        platform: RwLock::new(platform),
        wake: Notify::new(),
        retention_wake: Notify::new(),
        dispatch: DispatchState::default(),
        retrack: retrack_tx,
        pause_policy,
        counters: Arc::new(UploadCounters::default()),
        outbox,
        resumed_owed: AtomicBool::new(resumed_owed),
        holds: share_keeper::ShareHolds::new(agent),
    });
    start_listener(&shared, &stop);

    #[cfg(debug_assertions)]
    stuck_thread_for_tests();
    let mut upkeep = tokio::spawn(housekeeping::run(shared.clone(), stop.clone()));
    // Which folders another agent keeps is known before anything is recovered or watched.
    share_keeper::round(&shared);
    shared
        .tasks
        .spawn(share_keeper::run(shared.clone(), stop.clone()));
    recover(&shared);

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher = FolderWatcher::new(events_tx);
    let folders = shared.settings().folders.clone();
    let mut intake = Intake::new(&folders);
    // Files an earlier run was watching settle (it was killed): this run's trackers start
    // empty, and find them again with the first scan.
    clear_settling(&shared.store);
    let missing = intake.watch_all(&shared, &mut watcher)?;
    // A folder watched now that was missing when the agent stopped is back.
    let watched: Vec<PathBuf> = folders
        .iter()
        .map(|f| f.path.clone())
        .filter(|path| !missing.contains(path))
        .collect();
    if let Err(err) = shared.store.clear_missing_folders(&watched, &missing) {
        shared.store_failed("cannot reset the folders' state for status", &err);
    }
    // Logged the moment before READY=1, with the time on the clock systemd stamps a unit's
    // states with (CLOCK_MONOTONIC, as `systemctl show -p ActiveEnterTimestampMonotonic`), so
    // that the two can be compared: packaging/tests/nspawn.sh checks that the unit turned
    // active only after this.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let monotonic_us = now.tv_sec.saturating_mul(1_000_000) + now.tv_nsec / 1_000;
    tracing::info!(
        folders = watched.len(),
        monotonic_us,
        "ready: every folder is watched"
    );
    service::notify(&[sd_notify::NotifyState::Ready]);
    ready();
    let mut intake_task = tokio::spawn({
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        async move {
            intake.initial_scan(&shared).await;
            #[cfg(debug_assertions)]
            intake::fault_for_tests();
            let channels = IntakeChannels {
                events: events_rx,
                retrack: retrack_rx,
                reloads,
            };
            intake.run(&shared, watcher, channels, &shutdown).await;
        }
    });
    let supervisor = tokio::spawn({
        let shutdown = shutdown.clone();
        let stop = stop.clone();
        async move {
            let fatal = tokio::select! {
                ended = &mut intake_task => {
                    if shutdown.is_cancelled() {
                        return None;
                    }
                    let why = task_end(ended);
                    tracing::error!(
                        "the folder watcher stopped ({why}); stopping uploads and exiting so that the service manager restarts hotfolder"
                    );
                    AgentError::IntakeStopped(why)
                }
                kept = &mut upkeep => match kept {
                    Ok(Ok(())) => return None,
                    Ok(Err(err)) => {
                        tracing::error!(
                            "{}; stopping uploads and exiting so that the service manager restarts hotfolder with a store it can trust",
                            chain(&err)
                        );
                        AgentError::StoreVanished(err)
                    }
                    Err(err) => {
                        let why = task_end(Err(err));
                        tracing::error!(
                            "the state store's upkeep stopped ({why}); stopping uploads and exiting so that the service manager restarts hotfolder"
                        );
                        AgentError::UpkeepStopped(why)
                    }
                },
            };
            stop.cancel();
            Some(fatal)
        }
    });
    tokio::spawn(password_watch::watch_password_file(
        shared.clone(),
        stop.clone(),
    ));
    shared
        .tasks
        .spawn(markers::sweep_markers(shared.clone(), stop.clone()));
    shared
        .tasks
        .spawn(retention::run(shared.clone(), stop.clone()));
    shared.tasks.spawn(companion::sweep_orphan_job_xmls(
        shared.clone(),
        stop.clone(),
    ));
    transcoding::start(&shared, &stop);
    dispatch::dispatch(&shared, &stop).await;
    service::notify(&[sd_notify::NotifyState::Stopping]);

    shared.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "uploads and moves did not stop within {SHUTDOWN_GRACE:?}; exiting anyway (they resume on restart)"
        );
    }
    let ended = supervisor.await;
    // Nothing watches them settle any more: `status` must not show them as if something did,
    // nor the folders as watched.
    clear_settling(&shared.store);
    if let Err(err) = shared.store.clear_folder_modes() {
        tracing::warn!(
            "cannot reset how the folders are watched, for status: {}",
            chain(&err)
        );
    }
    if let Ok(Some(fatal)) = ended {
        return Err(fatal);
    }
    tracing::info!("stopped; state saved in {}", escaped(shared.store.path()));
    Ok(())
}

/// Starts the HTTP listener when `[http] listen` is set, from the first moment: while the
/// folders are not watched yet, `/healthz` says so. It stops with the agent.
fn start_listener(shared: &Arc<Shared>, stop: &CancellationToken) {
    let Some(http) = shared.settings().http.clone() else {
        return;
    };
    // Weak: the listener must not keep the agent's state alive after the agent returned.
    let agent = Arc::downgrade(shared);
    let bandwidth_of = agent.clone();
    let cap_of = agent.clone();
    let agents_of = agent.clone();
    let source = StatusSource {
        chunk_cap: Box::new(move || {
            let shared = cap_of.upgrade()?;
            if shared.settings().upload.chunk_size != crate::config::ChunkSize::Auto {
                return None;
            }
            shared
                .platform()
                .transport
                .link
                .snapshot()
                .cap_at(std::time::SystemTime::now())
        }),
        bandwidth: Box::new(move || {
            bandwidth_of.upgrade().map(|shared| {
                crate::bandwidth::BandwidthNow::of(
                    &shared.settings().upload.bandwidth,
                    &jiff::Zoned::now(),
                )
            })
        }),
        agents: Box::new(move || {
            agents_of.upgrade().map_or_else(Default::default, |shared| {
                let folders = shared.settings().folders.clone();
                let me = shared.holds.agent().id.clone();
                crate::shared_folder::survey_all(&folders, Some(&me))
            })
        }),
        state_dir: shared.settings().state_dir.clone(),
        counters: shared.counters.clone(),
        folders: Box::new(move || {
            agent.upgrade().map_or_else(Vec::new, |shared| {
                shared
                    .settings()
                    .folders
                    .iter()
                    .map(|folder| folder.path.clone())
                    .collect()
            })
        }),
    };
    tokio::spawn(crate::http::serve(http, source, stop.clone()));
}

fn clear_settling(store: &JobStore) {
    if let Err(err) = store.clear_settling() {
        tracing::warn!(
            "cannot reset the list of files waiting to be complete, for status: {}",
            chain(&err)
        );
    }
}

/// Debug builds only: `HOTFOLDER_TEST_STUCK_THREAD=1` leaves one blocking thread stuck for
/// good, as a read from a share that stopped answering would be, so that tests can check that
/// a stop does not wait for it for ever and that a second signal always ends the process.
#[cfg(debug_assertions)]
fn stuck_thread_for_tests() {
    if std::env::var_os("HOTFOLDER_TEST_STUCK_THREAD").is_some() {
        tokio::task::spawn_blocking(|| {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
    }
}

/// Why a task ended, for the log: it returned, it panicked (with its message), or it was
/// cancelled.
fn task_end(ended: Result<(), tokio::task::JoinError>) -> String {
    match ended {
        Ok(()) => "it returned".to_owned(),
        Err(err) => match err.try_into_panic() {
            Ok(panic) => format!("it panicked: {}", panic_message(panic.as_ref())),
            Err(err) => err.to_string(),
        },
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// On start: put every unfinished job back where it belongs, and start the moves a crash
/// interrupted, as tasks of their own so that READY does not wait for a copy. The temp files a
/// kill left in done/ and failed/ are cleared in the background first; moves wait for that.
fn recover(shared: &Arc<Shared>) {
    // In a shared folder, other agents' copies may be under way: only this agent's go. A
    // folder another agent keeps is that agent's to clear.
    let tag = shared.holds.agent().tag().to_owned();
    let dirs: Vec<(PathBuf, bool)> = shared
        .settings()
        .folders
        .iter()
        .filter(|f| shared.holds.refusal(&f.path).is_none())
        .flat_map(|f| {
            [
                (f.done_dir.clone(), f.shared),
                (f.failed_dir.clone(), f.shared),
            ]
        })
        .collect();
    shared.tasks.spawn({
        let shared = shared.clone();
        async move {
            let stop = shared.stop.clone();
            let cleared = tokio::task::spawn_blocking(move || {
                for (dir, shared_folder) in dirs {
                    let only_of = shared_folder.then_some(tag.as_str());
                    finish::remove_stale_temps(&dir, only_of, &stop);
                }
            })
            .await;
            if let Err(err) = cleared {
                tracing::warn!("clearing temporary files left in done/ and failed/ failed: {err}");
            }
            shared.temps_cleared.send_replace(true);
        }
    });
    let jobs = match shared.store.unfinished() {
        Ok(jobs) => jobs,
        Err(err) => {
            shared.store_failed("cannot read the queue to resume it", &err);
            return;
        }
    };
    if !jobs.is_empty() {
        tracing::info!(jobs = jobs.len(), "resuming unfinished jobs");
    }
    let mut unconfigured: Vec<&Path> = Vec::new();
    for job in &jobs {
        if shared.settings().video_manager_of(&job.folder).is_none()
            && !unconfigured.contains(&job.folder.as_path())
        {
            unconfigured.push(&job.folder);
        }
    }
    for folder in unconfigured {
        intake::warn_unconfigured_jobs(shared, folder);
    }
    for job in jobs {
        let result = match job.state {
            JobState::Finishing => {
                dispatch::start_finish(shared, job.id);
                Ok(())
            }
            // Reached without a link, as every later look and open is (see `nofollow`).
            _ if !crate::nofollow::is_regular_file(&job.path) => {
                tracing::info!(file = %escaped(&job.rel_path), "forgetting a queued file that is no longer there");
                shared
                    .store
                    .forget(job.id, "the file disappeared while hotfolder was stopped")
            }
            JobState::Paused => {
                // The intake's receiver lives as long as the agent: a send cannot fail here.
                let _ = shared.retrack.send(job.path.clone());
                Ok(())
            }
            JobState::Uploading => shared.store.set_waiting(job.id),
            _ => Ok(()),
        };
        if let Err(err) = result {
            shared.store_failed(&format!("cannot resume job {}", job.id), &err);
        }
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` branch that never fires).
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
