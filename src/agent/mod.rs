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
//! instead of failing files. [`service`] talks to the service manager. Shutdown is a
//! `CancellationToken` passed in.

mod dispatch;
mod intake;
mod markers;
mod service;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chain;
use crate::config::{FolderSettings, Settings};
use crate::finish;
use crate::retry::RetryPolicy;
use crate::store::{JobState, JobStore, StateLock, StoreError};
use crate::vmpro::api::Platform;
use crate::vmpro::error::VmproError;
use crate::watch::{FolderWatcher, WatchError};

use dispatch::DispatchState;
use intake::{Intake, IntakeChannels};

pub use service::queue_counts;

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
    /// The part that notices new files died: carrying on would upload what is queued and then
    /// sit deaf for months, so the agent exits for its service manager to restart it.
    #[error(
        "the folder watcher stopped ({0}); exiting so that the service manager restarts hotfolder"
    )]
    IntakeStopped(String),
}

/// What the intake, the dispatcher and the workers share.
struct Shared {
    /// Replaced as a whole by a reload (SIGHUP); readers clone what they need.
    settings: RwLock<Settings>,
    store: Arc<JobStore>,
    /// Replaced by a reload; uploads in flight keep the one they started with.
    platform: RwLock<Arc<Platform>>,
    /// Wakes the dispatcher: a job was queued, a worker finished, a pause ended.
    wake: Notify,
    /// Which jobs run, whether the queue is paused, which finished files could not be moved.
    dispatch: DispatchState,
    /// Paths handed back to the intake to wait until they are stable again.
    retrack: mpsc::UnboundedSender<PathBuf>,
    /// Delays between probes while paused.
    pause_policy: RetryPolicy,
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
        if let Some(platform) = platform {
            *self.platform.write().unwrap_or_else(|e| e.into_inner()) = platform;
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
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
        dispatch: DispatchState::default(),
        retrack: retrack_tx,
        pause_policy,
    });

    let workers = TaskTracker::new();
    recover(&shared).await;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher = FolderWatcher::new(events_tx);
    let folders = shared.settings().folders.clone();
    let mut intake = Intake::new(&folders);
    if let Err(err) = shared.store.clear_missing_folders() {
        tracing::warn!(
            "cannot reset the folders' state for status: {}",
            chain(&err)
        );
    }
    intake.watch_all(&mut watcher)?;
    service::notify(&[sd_notify::NotifyState::Ready]);
    ready();
    let intake_task = tokio::spawn({
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
    workers.spawn(markers::sweep_markers(shared.clone(), stop.clone()));
    dispatch::dispatch(&shared, &workers, &stop).await;
    service::notify(&[sd_notify::NotifyState::Stopping]);

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
    let cleared = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            finish::remove_stale_temps(&dir);
        }
    })
    .await;
    if let Err(err) = cleared {
        tracing::warn!("clearing temporary files left in done/ and failed/ failed: {err}");
    }
    let jobs = match shared.store.unfinished() {
        Ok(jobs) => jobs,
        Err(err) => {
            tracing::error!("cannot read the queue: {}", chain(&err));
            return;
        }
    };
    if !jobs.is_empty() {
        tracing::info!(jobs = jobs.len(), "resuming unfinished jobs");
    }
    for job in jobs {
        let result = match job.state {
            JobState::Finishing => {
                dispatch::finish_job(shared, job.id).await;
                Ok(())
            }
            _ if !job.path.exists() => {
                tracing::info!(file = %job.path.display(), "forgetting a queued file that is no longer there");
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
            tracing::error!(job = job.id, "cannot recover job: {}", chain(&err));
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
