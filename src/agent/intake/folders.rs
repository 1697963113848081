//! Which folders the intake watches and how: each folder's presence (deleted, replaced, a
//! share unmounted, back again), its watch mode (events, polling, a system watch limit met),
//! the polls of folders that need them, and the watcher's events, batched so that one walk
//! answers a burst.

use super::*;

impl FolderIntake {
    /// Starts watching the folder, remembering which folder (device and inode) it is and how
    /// it is watched; a folder that polls is walked first one interval from now (the caller
    /// scans it now).
    pub(super) fn watch(&mut self, watcher: &mut FolderWatcher) -> Result<&WatchMode, WatchError> {
        let identity = crate::watch::folder_identity(&self.spec.root);
        let mode = watcher.watch(self.spec.clone())?;
        let now = Instant::now();
        self.presence = Presence::Watched(identity);
        self.next_poll = mode.poll_every.map(|every| now + every);
        self.polling = false;
        let polled_for_limit = mode.limit.filter(|_| !mode.events);
        self.limit_retry_at = polled_for_limit.map(|_| now + LIMIT_RETRY_EVERY);
        self.limit_seen = polled_for_limit.map(WatchLimit::current);
        if mode.needs_fresh_attributes() {
            self.share = mode.file_system.as_ref().map(|fs| fs.name.clone());
        }
        Ok(self.mode.insert(mode))
    }

    /// The share this folder was on, when it is now on a local file system: an unmounted share
    /// leaves its empty mount point, which must count as missing, not as a new folder.
    pub(super) fn unmounted_share(&self) -> Option<(String, String)> {
        let share = self.share.as_ref()?;
        let mode = self.mode.as_ref()?;
        if mode.needs_fresh_attributes() {
            return None;
        }
        let now_on = mode
            .file_system
            .as_ref()
            .map_or_else(|| "a local disk".to_owned(), |fs| fs.name.clone());
        Some((share.clone(), now_on))
    }

    /// Looks at files afresh (open and `statx`) rather than with `lstat`: see
    /// [`WatchMode::needs_fresh_attributes`].
    pub(super) fn fresh(&self) -> bool {
        self.mode
            .as_ref()
            .is_some_and(WatchMode::needs_fresh_attributes)
    }

    /// The folder's mode as the store keeps it for `status`.
    pub(super) fn mode_record(&self) -> Option<FolderMode> {
        let mode = self.mode.as_ref()?;
        Some(FolderMode {
            path: self.spec.root.clone(),
            mode: mode.to_string(),
            events: mode.events,
            polling_every: mode.poll_every,
            file_system: mode.file_system.as_ref().map(|fs| fs.name.clone()),
            network: mode.needs_fresh_attributes(),
            limit_sysctl: mode
                .limit
                .map(|limit| limit.sysctl().to_owned())
                .filter(|sysctl| !sysctl.is_empty()),
        })
    }
}

/// A poll's walk of one folder, done off the intake's loop.
pub(super) struct Polled {
    root: PathBuf,
    result: ScanResult,
}

impl Intake {
    /// Checks that every folder is still the one watched: one that is gone is reported once
    /// (log and `status`) and its watch dropped; one that is back, or was replaced by another
    /// folder of the same name (deleted and made again, a share mounted again), is watched and
    /// scanned afresh. A folder polled because of a system watch limit is watched with events
    /// again once the limit was raised (or every [`LIMIT_RETRY_EVERY`]).
    pub(super) async fn check_folders(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
    ) {
        for index in 0..self.folders.len() {
            let Some(now) = self.probe_folder(index).await else {
                continue;
            };
            let folder = &self.folders[index];
            let root = folder.spec.root.clone();
            // Another agent keeps it: as good as missing here (see `share_keeper`).
            let now = match shared.holds.refusal(&root) {
                Some(why) if now.is_ok() => Err(why),
                _ => now,
            };
            match (now, &folder.presence) {
                (Ok(identity), Presence::Watched(watched)) if identity == *watched => {
                    let limit = folder.mode.as_ref().and_then(|mode| mode.limit);
                    let raised = limit.is_some_and(|limit| {
                        folder
                            .limit_seen
                            .is_some_and(|seen| seen != limit.current())
                    });
                    let due = folder.limit_retry_at.is_some_and(|at| at <= Instant::now());
                    if raised || due {
                        self.retry_events(shared, watcher, index).await;
                    }
                }
                (Ok(_), _)
                    if folder
                        .next_watch_attempt
                        .is_some_and(|at| Instant::now() < at) => {}
                (Ok(_), previous) => {
                    let was_missing = matches!(previous, Presence::Missing(_));
                    let result = self.folders[index].watch(watcher).map(|_| ());
                    if result.is_ok()
                        && let Some((share, now_on)) = self.folders[index].unmounted_share()
                    {
                        let why = format!(
                            "the share it was on ({share}) is not mounted: the folder is now an empty mount point on {now_on}"
                        );
                        self.folder_missing(shared, watcher, index, why);
                        continue;
                    }
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
                            let mode = self.shown_mode(index);
                            if was_missing {
                                tracing::info!(folder = %escaped(&root), %mode, "the folder is back; watching it again");
                            } else {
                                tracing::warn!(folder = %escaped(&root), %mode, "the folder was replaced (made again, or a share mounted over it); watching the new one");
                            }
                            self.warn_about_limit(index);
                            self.note_presence(shared, index, None);
                            self.note_mode(shared, index);
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

    /// Watches folder `index` with events again after a system watch limit made it poll: said
    /// once when it works; otherwise it goes on polling, tried again when the limit changes
    /// again or [`LIMIT_RETRY_EVERY`] has passed.
    pub(super) async fn retry_events(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
        index: usize,
    ) {
        let result = self.folders[index].watch(watcher).map(|mode| mode.limit);
        match result {
            Ok(None) => {
                let root = &self.folders[index].spec.root;
                let mode = self.shown_mode(index);
                tracing::info!(folder = %escaped(root), %mode, "the system's watch limit no longer stops events");
                self.note_mode(shared, index);
                // Changes between the last poll and the new watch send no event.
                self.scan_folder(shared, index).await;
            }
            Ok(Some(_)) => self.note_mode(shared, index),
            Err(err) => self.folder_missing(shared, watcher, index, chain(&err)),
        }
    }

    /// How folder `index` is watched, in words.
    pub(super) fn shown_mode(&self, index: usize) -> String {
        self.folders[index]
            .mode
            .as_ref()
            .map_or_else(|| "not watched".to_owned(), WatchMode::to_string)
    }

    /// Says once, as a warning, that folder `index` is polled because of a system limit.
    pub(super) fn warn_about_limit(&self, index: usize) {
        let folder = &self.folders[index];
        if let Some(mode) = &folder.mode
            && let Some(limit) = mode.limit
        {
            tracing::warn!(
                folder = %escaped(&folder.spec.root),
                "{} cannot be watched with events: {}; polling instead ({mode}); not an error, but changes there are noticed at the next poll",
                if mode.events { "some of its subfolders" } else { "the folder" },
                limit.advice()
            );
        }
    }

    /// Keeps `status` told how folder `index` is watched.
    pub(super) fn note_mode(&self, shared: &Arc<Shared>, index: usize) {
        let folder = &self.folders[index];
        let record = folder.mode_record();
        if let Err(err) = shared
            .store
            .set_folder_mode(&folder.spec.root, record.as_ref())
        {
            shared.store_failed("cannot record how the folder is watched, for status", &err);
        }
    }

    /// Looks at folder `index` off the async threads: `None` while an earlier look is still
    /// hanging (a dead network mount must not stall the agent).
    pub(super) async fn probe_folder(&mut self, index: usize) -> Option<Result<FolderId, String>> {
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
    pub(super) fn folder_missing(
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
        let first =
            !matches!(&folder.presence, Presence::Missing(before) if before != NOT_WATCHED_YET);
        folder.presence = Presence::Missing(why.clone());
        folder.mode = None;
        folder.next_poll = None;
        folder.limit_retry_at = None;
        folder.limit_seen = None;
        watcher.unwatch(&folder.spec.root);
        if first && shared.holds.refusal(&folder.spec.root).as_deref() == Some(why.as_str()) {
            tracing::error!(folder = %escaped(&folder.spec.root), "not watching the folder: {why}; checked again every few seconds");
        } else if first {
            tracing::error!(folder = %escaped(&folder.spec.root), "cannot see the watched folder: {why}; new files there are not noticed until it is back (checked every {} s)", FOLDER_CHECK_EVERY.as_secs());
        } else {
            // The reason changed (deleted, then a link put in its place): the log says what
            // `status` says, once per change.
            tracing::warn!(folder = %escaped(&folder.spec.root), "the watched folder is still not usable, now because {why}");
        }
        self.note_presence(shared, index, Some(&why));
        self.note_mode(shared, index);
    }

    /// Keeps `status` told which folders are missing.
    pub(super) fn note_presence(&self, shared: &Arc<Shared>, index: usize, missing: Option<&str>) {
        let root = &self.folders[index].spec.root;
        if let Err(err) = shared.store.set_folder_missing(root, missing) {
            shared.store_failed("cannot record the folder's state for status", &err);
        }
    }

    /// Starts the walks of the folders whose poll is due, off the loop; each sends its result
    /// on `done` (see [`Intake::take_poll`]).
    pub(super) fn start_polls(&mut self, done: &mpsc::UnboundedSender<Polled>) {
        let now = Instant::now();
        for folder in &mut self.folders {
            if folder.polling || folder.next_poll.is_none_or(|at| at > now) {
                continue;
            }
            folder.polling = true;
            folder.next_poll = None;
            let spec = folder.spec.clone();
            let done = done.clone();
            tokio::task::spawn_blocking(move || {
                let result = crate::watch::scan(&spec);
                // The intake has stopped: nothing to hand the walk to.
                let _ = done.send(Polled {
                    root: spec.root,
                    result,
                });
            });
        }
    }

    /// A poll's walk ended: its files are considered as a scan's, and the next poll is timed.
    pub(super) async fn take_poll(&mut self, shared: &Arc<Shared>, polled: Polled) {
        // Gone from the config (a reload) since the walk started: nothing to do with it.
        let Some(index) = self
            .folders
            .iter()
            .position(|folder| folder.spec.root == polled.root)
        else {
            return;
        };
        let folder = &mut self.folders[index];
        folder.polling = false;
        folder.next_poll = folder
            .mode
            .as_ref()
            .and_then(|mode| mode.poll_every)
            .map(|every| Instant::now() + every);
        if matches!(folder.presence, Presence::Watched(_)) {
            self.take_scan(shared, index, polled.result).await;
        }
    }

    /// Takes a watcher event, and when it asks for a walk, every event already queued behind
    /// it too, so that one walk per folder answers a burst: changes are considered, removals
    /// forgotten, then each folder that lost events (a kernel queue overflow, said once as a
    /// warning), met a watch limit or asked for a rescan is walked once.
    pub(super) async fn on_events(
        &mut self,
        shared: &Arc<Shared>,
        watcher: &mut FolderWatcher,
        first: WatchEvent,
        events: &mut mpsc::UnboundedReceiver<WatchEvent>,
    ) {
        let mut walks: Vec<(PathBuf, String)> = Vec::new();
        let mut overflowed: Vec<PathBuf> = Vec::new();
        let mut gone = false;
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                WatchEvent::Touched(path) => self.consider(shared, path, false).await,
                WatchEvent::Removed(path) => self.forget(&path),
                WatchEvent::RescanNeeded { root, why } => walks.push((root, why)),
                WatchEvent::Overflow { root } => overflowed.push(root),
                WatchEvent::WatchLimit { root, limit } => {
                    self.watch_limit_met(shared, &root, limit);
                    walks.push((
                        root,
                        format!("a new subfolder could not be watched: {}", limit.advice()),
                    ));
                }
                WatchEvent::FolderGone { root } => {
                    tracing::debug!(folder = %escaped(&root), "the watched folder was removed or renamed");
                    gone = true;
                }
            }
            // Once a walk is due, it answers whatever else is queued.
            next = if walks.is_empty() && overflowed.is_empty() {
                None
            } else {
                events.try_recv().ok()
            };
        }
        overflowed.sort();
        overflowed.dedup();
        for root in &overflowed {
            tracing::warn!(
                folder = %escaped(root),
                "the system dropped change events for this folder (its event queue overflowed; fs.inotify.max_queued_events); walking it now so that nothing is missed"
            );
        }
        walks.sort();
        walks.dedup();
        for (root, why) in &walks {
            tracing::info!(folder = %escaped(root), "rescanning: {why}");
        }
        let roots: Vec<&PathBuf> = overflowed
            .iter()
            .chain(walks.iter().map(|(root, _)| root))
            .collect();
        for index in 0..self.folders.len() {
            let folder_root = &self.folders[index].spec.root;
            if roots
                .iter()
                .any(|root| folder_root.starts_with(root) || root.starts_with(folder_root))
            {
                self.scan_folder(shared, index).await;
            }
        }
        if gone {
            self.check_folders(shared, watcher).await;
        }
    }

    /// A subfolder of the folder at `root` could not be watched: the folder is polled as well
    /// from now on (until it is watched again), said once and shown in `status`.
    pub(super) fn watch_limit_met(&mut self, shared: &Arc<Shared>, root: &Path, limit: WatchLimit) {
        let Some(index) = self.folders.iter().position(|f| f.spec.root == root) else {
            return;
        };
        let folder = &mut self.folders[index];
        let Some(mode) = folder.mode.take() else {
            return;
        };
        if mode.limit.is_some() {
            folder.mode = Some(mode);
            return;
        }
        let mode = folder.mode.insert(mode.limited(limit, true));
        if !folder.polling && folder.next_poll.is_none() {
            folder.next_poll = mode.poll_every.map(|every| Instant::now() + every);
        }
        self.warn_about_limit(index);
        self.note_mode(shared, index);
    }
}
