//! The agent's done/ retention task: at start and then every min(1 h, keep_done_for / 4) it
//! looks at the uploaded files in done/ whose folder sets `keep_done_for`, asks the platform
//! about those that are due, and deletes the ones it still has a video for. A reload wakes it,
//! so a new `keep_done_for` applies at once. The decisions are `crate::retention`'s; this file
//! does the looking, asking, deleting and logging, each thing that repeats logged once.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::chain;
use crate::escape::escaped;
use crate::nofollow::{self, NoFollowError};
use crate::retention::{Verdict, age_in_words, check_every, is_placed_file, judge};
use crate::store::Job;
use crate::vmpro::api::VideoPresence;
use crate::vmpro::error::VmproError;

/// With no folder setting `keep_done_for`, how often to look whether a reload set one (a
/// reload also wakes the task at once).
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// How long one question to the platform may take before the file waits for the next round.
const PLATFORM_PATIENCE: Duration = Duration::from_secs(60);

/// Runs until `stop`.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut sweeper = Sweeper::default();
    loop {
        let every = check_every(
            shared
                .settings()
                .folders
                .iter()
                .filter_map(|f| f.keep_done_for),
        );
        if every.is_some() {
            sweeper.sweep(&shared, &stop).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every.unwrap_or(IDLE_CHECK)) => {}
            // A reload (also one during the sweep: the wake is kept until it is awaited).
            _ = shared.retention_wake.notified() => {}
        }
    }
}

/// What the task remembers between rounds, so that what repeats each round is logged once.
#[derive(Default)]
struct Sweeper {
    /// Jobs whose file was not in done/ at the last look, already said.
    absent: HashSet<i64>,
    /// Things already warned about: a link on the way to done/ (by the link), a file that
    /// cannot be looked at (by its job).
    warned: HashSet<String>,
    /// VideoManagers whose 404 could not be told to be the video's, already said.
    unsure: HashSet<u64>,
    /// The platform could not be asked, already said: once per outage, not every round.
    unreachable: bool,
}

/// What one file's turn means for the rest of the round.
enum Then {
    Next,
    /// The platform cannot be asked now: the rest wait for the next round too.
    StopRound,
    /// This VideoManager's answers cannot be trusted now: its other files wait.
    SkipVideoManager(u64),
}

impl Sweeper {
    /// One look at every undecided uploaded file in done/.
    async fn sweep(&mut self, shared: &Arc<Shared>, stop: &CancellationToken) {
        if !shared.store_health.is_writable() {
            return;
        }
        let store = shared.store.clone();
        let jobs = match tokio::task::spawn_blocking(move || store.done_undecided()).await {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(err)) => {
                shared.store_failed("cannot list the files in done/ for keep_done_for", &err);
                return;
            }
            Err(err) => {
                tracing::warn!("looking at done/ for keep_done_for failed: {err}");
                return;
            }
        };
        let mut skipped_video_managers = HashSet::new();
        for job in jobs {
            if stop.is_cancelled() {
                return;
            }
            match self
                .one_file(shared, &job, &skipped_video_managers, stop)
                .await
            {
                Then::Next => {}
                Then::StopRound => return,
                Then::SkipVideoManager(id) => {
                    skipped_video_managers.insert(id);
                }
            }
        }
    }

    /// Says that the platform cannot be asked: a warning at the first round of an outage, the
    /// next rounds at debug level (a round every few seconds made 80 lines in 40 s).
    fn platform_unreachable(&mut self, said: &str) {
        if std::mem::replace(&mut self.unreachable, true) {
            tracing::debug!("{said}");
        } else {
            tracing::warn!("{said}");
        }
    }

    /// Decides about one file and acts.
    async fn one_file(
        &mut self,
        shared: &Arc<Shared>,
        job: &Job,
        skipped_video_managers: &HashSet<u64>,
        stop: &CancellationToken,
    ) -> Then {
        let Some(folder) = shared.folder(&job.folder) else {
            return Then::Next;
        };
        let Some(keep_for) = folder.keep_done_for else {
            return Then::Next;
        };
        let Some(dest) = job.destination.clone() else {
            return Then::Next;
        };
        let found = nofollow::lstat(&dest);
        let now = OffsetDateTime::now_utc();
        let shown = shown_path(&dest, &folder.path);
        let verdict = judge(
            job,
            &folder.done_dir,
            &folder.failed_dir,
            keep_for,
            &found,
            now,
        );
        if verdict != Verdict::Absent && self.absent.remove(&job.id) {
            tracing::info!("keep_done_for: {shown} is back in done/");
        }
        let video_id = match verdict {
            Verdict::NotYet { .. } => return Then::Next,
            Verdict::Absent => {
                if self.absent.insert(job.id) {
                    tracing::info!(
                        "keep_done_for: {shown} is not in done/ now (moved away, or done/ is not there); it is looked for each round, and deleted only if it comes back unchanged"
                    );
                }
                return Then::Next;
            }
            Verdict::Later(why) => {
                // Said once: each round would say it again, for every file behind one link.
                let (key, said) = match &found {
                    Err(NoFollowError::Link { link, .. }) => (
                        format!("link {}", link.display()),
                        format!(
                            "keep_done_for: nothing is deleted from {} while it is reached through the symbolic link {} (links are never followed); files in it are kept",
                            escaped(&folder.done_dir),
                            escaped(link)
                        ),
                    ),
                    _ => (
                        format!("job {}", job.id),
                        format!(
                            "keep_done_for: cannot look at {shown} (tried again each round): {why}"
                        ),
                    ),
                };
                if self.warned.insert(key) {
                    tracing::warn!("{said}");
                } else {
                    tracing::debug!("keep_done_for: {shown} not now: {why}");
                }
                return Then::Next;
            }
            Verdict::Keep(why) => {
                tracing::info!("keep_done_for: keeping {shown}: {why}");
                record(shared, job, &format!("kept: {why}"));
                return Then::Next;
            }
            Verdict::AskPlatform { video_id } => video_id,
        };
        let Some(video_manager) = job
            .video_manager_id
            .or_else(|| shared.settings().video_manager_of(&job.folder))
        else {
            // Never guessed: the account's VideoManager may hold another video of that id.
            return Then::Next;
        };
        if skipped_video_managers.contains(&video_manager) {
            return Then::Next;
        }
        let platform = shared.platform().for_video_manager(video_manager);
        let asked =
            tokio::time::timeout(PLATFORM_PATIENCE, platform.video_presence(&video_id, stop)).await;
        if matches!(asked, Ok(Ok(_))) && std::mem::take(&mut self.unreachable) {
            tracing::info!(
                "keep_done_for: the platform answers again; files in done/ are looked at as usual"
            );
        }
        match asked {
            Ok(Err(VmproError::Cancelled)) => return Then::StopRound,
            Ok(Ok(VideoPresence::Present)) => {
                self.unsure.remove(&video_manager);
            }
            Ok(Ok(VideoPresence::Gone)) => {
                self.unsure.remove(&video_manager);
                let why = format!(
                    "the platform no longer has its video {video_id} (VideoManager {video_manager} answers 404 for it), so this file may be the only copy"
                );
                tracing::warn!("keep_done_for: keeping {shown}: {why}");
                record(shared, job, &format!("kept: {why}"));
                return Then::Next;
            }
            Ok(Ok(VideoPresence::Unsure(why))) => {
                // When unsure, the file stays; asked again next round.
                if self.unsure.insert(video_manager) {
                    tracing::warn!(
                        "keep_done_for: keeping the files uploaded into VideoManager {video_manager} for now ({shown} first): {why}; asked again each round"
                    );
                }
                return Then::SkipVideoManager(video_manager);
            }
            Ok(Err(err)) => {
                let said = format!(
                    "keep_done_for: cannot ask the platform whether video {video_id} of {shown} still exists; nothing is deleted until it answers (asked again each round): {}",
                    chain(&err)
                );
                self.platform_unreachable(&said);
                return Then::StopRound;
            }
            Err(_) => {
                let said = format!(
                    "keep_done_for: the platform did not say within {} s whether video {video_id} of {shown} still exists; nothing is deleted until it answers (asked again each round)",
                    PLATFORM_PATIENCE.as_secs()
                );
                self.platform_unreachable(&said);
                return Then::StopRound;
            }
        }
        let age = job
            .moved_at
            .map(|moved| (now - moved).try_into().unwrap_or_default())
            .unwrap_or_default();
        match delete_if_same(&dest, job) {
            Ok(true) => {
                tracing::info!(
                    video_id = %video_id,
                    "deleted {shown}, uploaded {} ago as video {video_id}; its sidecar stays",
                    age_in_words(age)
                );
                record(
                    shared,
                    job,
                    &format!(
                        "deleted from done/ by keep_done_for, {} after the upload",
                        age_in_words(age)
                    ),
                );
            }
            // Judged again next round: kept for good if it changed, looked for if it went.
            Ok(false) => {
                tracing::info!(
                    "keep_done_for: not deleting {shown}: it changed or went while it was checked"
                );
            }
            Err(err) => {
                tracing::warn!("keep_done_for: cannot delete {shown}: {err}");
            }
        }
        Then::Next
    }
}

/// Deletes the file at `dest` if it is still the one the job placed there, looked at and
/// removed relative to the folder it is in, reached without a link. `Ok(false)`: another file.
fn delete_if_same(dest: &Path, job: &Job) -> Result<bool, String> {
    let Some(placed) = job.placed else {
        return Ok(false);
    };
    let at = nofollow::parent(dest).map_err(|e| chain(&e))?;
    let entry = match nofollow::lstat_in(&at) {
        Ok(entry) => entry,
        Err(NoFollowError::Missing { .. }) => return Ok(false),
        Err(err) => return Err(chain(&err)),
    };
    if !is_placed_file(&placed, &entry) {
        return Ok(false);
    }
    nofollow::remove(&at).map_err(|e| e.to_string())?;
    Ok(true)
}

/// The path as the log shows it: relative to the watched folder where done/ is inside it
/// (`done/clip.mov`), else whole.
fn shown_path(dest: &Path, folder: &Path) -> String {
    escaped(dest.strip_prefix(folder).unwrap_or(dest)).to_string()
}

/// Records what retention did; a failure is logged (the file is looked at again next time).
fn record(shared: &Shared, job: &Job, what: &str) {
    if let Err(err) = shared.store.record_retention(job.id, what) {
        shared.store_failed("cannot record what keep_done_for did", &err);
    }
}
