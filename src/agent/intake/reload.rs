//! A reload (SIGHUP): which folders to watch, drop or keep, what a kept folder keeps (its
//! settling files, while `stable_for` is unchanged), and a folder kept where its link led at
//! start rather than followed to a new target.

use super::*;

impl Intake {
    /// Starts watching every folder, and returns those that are missing. A folder that is not
    /// there (or not a folder) is reported missing (log, `status`, `folder_missing`) and
    /// watched once it appears, as one that goes away while the agent runs; the config
    /// refuses a start where none is there. A folder that is there but cannot be watched is
    /// fatal; a system watch limit is not, the folder is polled instead.
    pub(in crate::agent) fn watch_all(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
    ) -> Result<Vec<PathBuf>, WatchError> {
        if let Err(err) = shared.store.clear_folder_modes() {
            shared.store_failed("cannot reset how the folders are watched, for status", &err);
        }
        let mut missing = Vec::new();
        for index in 0..self.folders.len() {
            let root = self.folders[index].spec.root.clone();
            if let Some(why) = shared.holds.refusal(&root) {
                self.folder_missing(shared, watcher, index, why);
                missing.push(root);
                continue;
            }
            let watched = self.folders[index].watch(watcher).map(ToString::to_string);
            match watched {
                Ok(mode) => {
                    tracing::info!(folder = %escaped(&root), %mode, "watching");
                    self.warn_about_limit(index);
                    self.note_mode(shared, index);
                }
                Err(err) => match crate::watch::probe_folder(&root) {
                    Err(why) => {
                        self.folder_missing(shared, watcher, index, why);
                        missing.push(root);
                    }
                    Ok(_) => return Err(err),
                },
            }
        }
        Ok(missing)
    }

    /// Applies reloaded settings: watches added folders, drops removed ones, updates the rules
    /// of the others (rescanning them), and swaps the platform client when account or upload
    /// settings changed. Uploads in flight finish with the client they started with.
    pub(super) async fn reload(
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
        let mut newly_missing = Vec::new();
        for (mut folder, watch) in plan.folders {
            let root = folder.spec.root.clone();
            match watch {
                Rewatch::No => {}
                Rewatch::Changed => match folder.watch(watcher) {
                    Ok(mode) => {
                        tracing::info!(folder = %escaped(&root), %mode, "reload: watching")
                    }
                    Err(err) => {
                        tracing::error!(folder = %escaped(&root), "reload: cannot watch: {}", chain(&err));
                    }
                },
                Rewatch::New => match folder.watch(watcher) {
                    Ok(mode) => {
                        tracing::info!(folder = %escaped(&root), %mode, "reload: watching a new folder")
                    }
                    Err(err) => match crate::watch::probe_folder(&root) {
                        // Not there yet: kept, reported missing below, watched once it is.
                        Err(why) => newly_missing.push((root.clone(), why)),
                        Ok(_) => {
                            tracing::error!(folder = %escaped(&root), "reload: cannot watch the new folder: {}", chain(&err));
                            continue;
                        }
                    },
                },
            }
            kept.push((folder, watch));
        }
        for root in &plan.removed {
            watcher.unwatch(root);
            // Not "back": nobody watches it any more.
            if let Err(err) = shared.store.forget_folder(root) {
                shared.store_failed("cannot record the folder's state for status", &err);
            }
            tracing::info!(folder = %escaped(&root), "reload: no longer watching");
            warn_unconfigured_jobs(shared, root);
        }
        let rewatched: Vec<bool> = kept
            .iter()
            .map(|(_, watch)| *watch != Rewatch::No)
            .collect();
        self.folders = kept.into_iter().map(|(folder, _)| folder).collect();
        for (index, rewatched) in rewatched.into_iter().enumerate() {
            let root = self.folders[index].spec.root.clone();
            if let Some((_, why)) = newly_missing.iter().find(|(r, _)| *r == root) {
                self.folder_missing(shared, watcher, index, why.clone());
            } else if rewatched {
                self.warn_about_limit(index);
                self.note_mode(shared, index);
            }
        }
        // Trackers were dropped or swapped: `status` gets the whole set again.
        self.settling_resync = true;
        // Always a new client: the password may have changed, and its Debug form is masked.
        // It carries on the count of refused logins (see `Platform::successor`).
        let previous = shared.platform();
        let platform = match previous.successor(&new.account, &new.upload) {
            Ok(platform) => {
                // Another platform is another link: its meter starts from what the store
                // knows of it (a cap its server set, even one learnt before a reload away
                // from it and back), as at start.
                if platform.account.api_url != previous.account.api_url {
                    match shared.store.link(platform.account.api_url.as_str()) {
                        Ok(link) => platform.transport.link.seed(link),
                        Err(err) => tracing::warn!(
                            "reload: cannot read the measured link of the new api_url: {}",
                            chain(&err)
                        ),
                    }
                }
                Some(platform)
            }
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
            // A missing folder is walked once it appears (`check_folders`).
            if matches!(self.folders[index].presence, Presence::Watched(_)) {
                self.scan_folder(shared, index).await;
            }
        }
        shared.wake.notify_one();
    }
}

/// A folder whose configured path resolves elsewhere than it did at start.
pub(super) struct MovedRoot {
    pub(super) configured: PathBuf,
    pub(super) now: PathBuf,
    pub(super) kept: PathBuf,
}

/// A reload keeps each folder where its configured path led when hotfolder started: a link
/// swapped in for a watched folder (or for a folder above it) since then is not followed, as
/// the folder check never follows it either. Its done/ and failed/ stay where they were too,
/// when they lie inside it. Following a new target takes a restart, a deliberate act.
pub(super) fn pin_resolved_roots(
    old: &[FolderSettings],
    new: &mut [FolderSettings],
) -> Vec<MovedRoot> {
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
pub(super) enum Rewatch {
    /// Watched as before (or missing: the folder check watches it once it is back).
    No,
    /// Watched, but what to watch changed (recursion, polling, done/ or failed/).
    Changed,
    /// Not watched before.
    New,
}

/// What a reload does to the folders, decided before anything is watched.
pub(super) struct ReloadPlan {
    /// The folders of the new settings, in their order.
    pub(super) folders: Vec<(FolderIntake, Rewatch)>,
    /// Roots watched before and not any more.
    pub(super) removed: Vec<PathBuf>,
}

/// Compares the running folders with the reloaded settings. A folder that stays keeps what it
/// knows of its presence and its watch retries, and, while `stable_for` is unchanged, the files
/// already settling (a reload must not restart their clock) and the paths already reported.
pub(super) fn plan_reload(current: &mut [FolderIntake], new: &[FolderSettings]) -> ReloadPlan {
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
                folder.mode = previous.mode.take();
                folder.next_poll = previous.next_poll;
                folder.polling = previous.polling;
                folder.limit_retry_at = previous.limit_retry_at;
                folder.limit_seen = previous.limit_seen;
                folder.unreadable = std::mem::take(&mut previous.unreadable);
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

/// Says that the queued files of a folder no longer configured wait where they are: they
/// upload only if the folder is configured again (its VideoManager and done/ are not known
/// otherwise, and the account's VideoManager is not a safe guess).
pub(in crate::agent) fn warn_unconfigured_jobs(shared: &Shared, folder: &Path) {
    match shared.store.unfinished_in(folder) {
        Ok(0) => {}
        Ok(count) => tracing::warn!(
            folder = %escaped(folder),
            "{count} queued file(s) of a folder no longer configured stay where they are and are not uploaded; they upload if the folder is configured again"
        ),
        Err(err) => {
            shared.store_failed("cannot count the folder's queued files", &err);
        }
    }
}
