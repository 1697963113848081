//! The first stage: notices files arriving in watched folders.
//!
//! [`FolderWatcher`] keeps one native `notify` watcher (inotify, FSEvents) per folder and turns
//! its events into [`WatchEvent`]s for the agent; [`scan`] walks a folder for the files already
//! there at start-up, after a [`WatchEvent::RescanNeeded`], and at every poll. Neither decides
//! whether a file is complete: that is `ready`'s job.
//!
//! Native events never report a write made by another machine on a network share, nor one
//! made behind a FUSE mount. [`FolderWatcher::watch`] tells the folder's file system
//! ([`file_system`]) and answers with its [`WatchMode`]: on a network or FUSE file system, or
//! when `poll_interval` is set, the folder is polled as well as watched. The polling is the
//! agent's own walk on a timer (`agent::intake`), not notify's `PollWatcher`: a walk lists the
//! folders and hands every file to the stability tracker, which looks again only at the files
//! still settling, so an idle folder costs a directory listing per poll and no memory per file.
//! The `PollWatcher` instead keeps every path's metadata in memory and `stat`s every file each
//! time, through the share's attribute cache, which can keep a growing file looking unchanged;
//! and it would be a second thread and a second view of the folder beside the tracker's.
//!
//! When the system's limit of inotify watches (or instances) is met, the folder is polled
//! instead, not refused: [`WatchMode`] says so and names the sysctl to raise. A limit met later,
//! for a new subfolder, comes as [`WatchEvent::WatchLimit`]; events the kernel dropped (its
//! queue overflowed) as [`WatchEvent::Overflow`]: both ask for a walk at once.

mod file_system;
mod mode;

pub use file_system::{FileSystem, file_system_of};
pub use mode::{AUTO_POLL_EVERY, WatchLimit, WatchMode};

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::FolderSettings;
use crate::ready::SkipReason;

/// One folder to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub root: PathBuf,
    pub recursive: bool,
    /// As configured: `Some` polls at this interval as well as watching for events, anywhere;
    /// `None` lets the file system decide (see [`WatchMode::planned`]).
    pub poll_interval: Option<Duration>,
    /// Folders never reported nor descended into (the folder's done/ and failed/ dirs, so the
    /// agent does not upload what it just moved away, and `.hotfolder/`, where agents keep
    /// their presences and claims).
    pub ignore: Vec<PathBuf>,
}

impl WatchSpec {
    /// What `run` watches for a configured folder.
    pub fn for_folder(folder: &FolderSettings) -> WatchSpec {
        WatchSpec {
            root: folder.path.clone(),
            recursive: folder.recursive,
            poll_interval: folder.poll_interval,
            ignore: vec![
                folder.done_dir.clone(),
                folder.failed_dir.clone(),
                crate::shared_folder::share_dir(&folder.path),
            ],
        }
    }

    fn is_ignored(&self, path: &Path) -> bool {
        self.ignore.iter().any(|dir| path.starts_with(dir))
    }
}

/// What the agent hears from the watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created, modified, renamed into place or closed after writing: worth a look.
    Touched(PathBuf),
    /// Deleted or renamed away. May name a folder, in which case everything under it is gone.
    Removed(PathBuf),
    /// Events were or may have been lost (a watcher error, a folder that appeared with files
    /// already inside): walk `root` with [`scan`]. Several may arrive in a burst; one scan
    /// answers them all.
    RescanNeeded { root: PathBuf, why: String },
    /// The kernel's event queue overflowed (`fs.inotify.max_queued_events`): changes under
    /// `root` were lost. Walk it at once, and say so.
    Overflow { root: PathBuf },
    /// A subfolder of `root` could not be watched: `limit` is reached. That part sends no
    /// events; the folder is to be polled.
    WatchLimit { root: PathBuf, limit: WatchLimit },
    /// The watched folder itself was deleted, renamed or unmounted: its watch is gone. The
    /// agent watches it again once it is back.
    FolderGone { root: PathBuf },
}

/// Why a folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}: it is not a folder", crate::escape::escaped(path))]
    NotADirectory { path: PathBuf },
    #[error("cannot watch {}", crate::escape::escaped(path))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch {}", crate::escape::escaped(path))]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

// The limits come back as bare errno values; both numbers are the same on Linux, macOS and the
// BSDs, and std has no stable ErrorKind for EMFILE.
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

/// Which system limit on watches an error means, or `None` when it is something else.
fn limit_of(err: &notify::Error) -> Option<WatchLimit> {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => Some(WatchLimit::Watches),
        notify::ErrorKind::Io(io) => match io.raw_os_error() {
            Some(ENOSPC) => Some(WatchLimit::Watches),
            Some(EMFILE) => Some(WatchLimit::Instances),
            // The folder itself was read just before (see `watch`): a subfolder.
            _ if io.kind() == io::ErrorKind::PermissionDenied => Some(WatchLimit::Unreadable),
            _ => None,
        },
        _ => None,
    }
}

fn watch_error(path: &Path, err: notify::Error) -> WatchError {
    match err.kind {
        notify::ErrorKind::Io(source) => WatchError::Io {
            path: path.to_path_buf(),
            source,
        },
        notify::ErrorKind::PathNotFound => WatchError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "it does not exist"),
        },
        kind => WatchError::Notify {
            path: path.to_path_buf(),
            source: notify::Error::new(kind),
        },
    }
}

/// The native watcher behind one spec, held for its `Drop`: dropping it stops its thread.
/// `None` for a folder that is only polled (a system limit was met).
struct ActiveWatcher(Option<RecommendedWatcher>);

impl fmt::Debug for ActiveWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "native"
        } else {
            "polled only"
        })
    }
}

/// Watches folders and sends [`WatchEvent`]s to the agent.
#[derive(Debug)]
pub struct FolderWatcher {
    events: UnboundedSender<WatchEvent>,
    /// Keyed by root so a config reload can drop exactly the folders that went away.
    watchers: BTreeMap<PathBuf, ActiveWatcher>,
}

impl FolderWatcher {
    pub fn new(events: UnboundedSender<WatchEvent>) -> Self {
        FolderWatcher {
            events,
            watchers: BTreeMap::new(),
        }
    }

    /// Starts watching `spec.root` (replacing an earlier watch of the same root) and says how:
    /// the caller polls the folder when the mode says so. Files already there are not
    /// reported: [`scan`] the folder after this returns, so nothing falls in the gap between
    /// the scan and the watch. Blocking (it looks at the folder and, recursively, adds a watch
    /// per subfolder).
    pub fn watch(&mut self, spec: WatchSpec) -> Result<WatchMode, WatchError> {
        let root = spec.root.clone();
        // Never through a link: the folder must be what its path names, link-free (see
        // [`probe_folder`]).
        match crate::nofollow::lstat(&root) {
            Ok(entry) if entry.skip == Some(SkipReason::Directory) => {}
            Ok(entry) if entry.skip == Some(SkipReason::Symlink) => {
                return Err(WatchError::Io {
                    path: root,
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "it is a symbolic link (links are never followed)",
                    ),
                });
            }
            Ok(_) => return Err(WatchError::NotADirectory { path: root }),
            Err(err) => {
                return Err(WatchError::Io {
                    path: root,
                    source: err.into_io(),
                });
            }
        }
        // Dropped first: its watches count against the same limit as the new ones.
        self.unwatch(&root);
        // Not told (no /proc, an unusual system): watched as a local folder, as before.
        let file_system = match file_system_of(&root) {
            Ok(fs) => Some(fs),
            Err(err) => {
                tracing::debug!(folder = %crate::escape::escaped(&root), "cannot tell the file system: {err}");
                None
            }
        };
        let planned = WatchMode::planned(file_system, spec.poll_interval);
        // The folder itself must be readable; a subfolder that is not (a volume's lost+found)
        // makes notify's recursive watch fail as a whole: the tree is polled instead.
        if let Err(source) = std::fs::read_dir(&root) {
            return Err(WatchError::Io { path: root, source });
        }
        let (mode, watcher) = match self.native(spec) {
            Ok(watcher) => (planned, Some(watcher)),
            Err(err) => match limit_of(&err) {
                Some(limit) => (planned.limited(limit, false), None),
                None => return Err(watch_error(&root, err)),
            },
        };
        self.watchers.insert(root, ActiveWatcher(watcher));
        Ok(mode)
    }

    /// The native watcher for `spec`. A limit met while adding it leaves nothing behind:
    /// notify's watcher is dropped with the watches it added.
    fn native(&self, spec: WatchSpec) -> notify::Result<RecommendedWatcher> {
        let root = spec.root.clone();
        let mode = if spec.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        // Symlinks are never followed: what they point to is someone else's.
        let config = notify::Config::default().with_follow_symlinks(false);
        let sender = self.events.clone();
        let translator = EventTranslator { spec };
        let handler = move |res| translator.send(res, &sender);
        let mut watcher = RecommendedWatcher::new(handler, config)?;
        watcher.watch(&root, mode)?;
        Ok(watcher)
    }

    /// Stops watching `root` (for a config reload). Events already on their way may still
    /// arrive.
    pub fn unwatch(&mut self, root: &Path) {
        self.watchers.remove(root);
    }

    pub fn roots(&self) -> Vec<PathBuf> {
        self.watchers.keys().cloned().collect()
    }
}

/// How `run` would watch the folder now, for `check` and `scan`: the folder is watched as
/// `run` watches it (so a system limit is met the same way) and let go at once. Blocking. For
/// that moment its watches count against the same per-user limit as a running agent's.
pub fn mode_now(spec: &WatchSpec) -> Result<WatchMode, WatchError> {
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    FolderWatcher::new(events).watch(spec.clone())
}

/// How `run` would watch `folder` now (its `Display` is what `status` shows: "events +
/// polling every 10 s (fuse.sshfs)"), or why it cannot be watched, in words: for `check` and
/// `scan`. Off the async threads and within [`MODE_PATIENCE`], as a share may hang.
pub async fn mode_for(folder: &FolderSettings) -> Result<WatchMode, String> {
    let spec = WatchSpec::for_folder(folder);
    let looking = tokio::task::spawn_blocking(move || mode_now(&spec));
    match tokio::time::timeout(MODE_PATIENCE, looking).await {
        Ok(Ok(Ok(mode))) => Ok(mode),
        Ok(Ok(Err(err))) => Err(crate::chain(&err)),
        Ok(Err(err)) => Err(format!("cannot tell how it would be watched: {err}")),
        Err(_) => Err(format!(
            "cannot tell how it would be watched: it did not answer within {} s (a network \
             share that hangs?)",
            MODE_PATIENCE.as_secs()
        )),
    }
}

/// How long [`mode_for`] waits for a folder.
pub const MODE_PATIENCE: Duration = Duration::from_secs(10);

/// Turns notify's events for one spec into ours; runs on notify's thread.
struct EventTranslator {
    spec: WatchSpec,
}

impl EventTranslator {
    fn send(&self, res: notify::Result<Event>, sender: &UnboundedSender<WatchEvent>) {
        for event in self.translate(res) {
            // A closed channel means the agent is shutting down; nothing left to tell.
            let _ = sender.send(event);
        }
    }

    fn rescan(&self, why: impl Into<String>) -> WatchEvent {
        WatchEvent::RescanNeeded {
            root: self.spec.root.clone(),
            why: why.into(),
        }
    }

    fn translate(&self, res: notify::Result<Event>) -> Vec<WatchEvent> {
        let event = match res {
            Ok(event) => event,
            Err(err) => {
                return vec![match limit_of(&err) {
                    Some(limit) => WatchEvent::WatchLimit {
                        root: self.spec.root.clone(),
                        limit,
                    },
                    None => self.rescan(format!("the watcher reported an error: {err}")),
                }];
            }
        };
        if event.need_rescan() {
            return vec![WatchEvent::Overflow {
                root: self.spec.root.clone(),
            }];
        }
        let mut out = Vec::new();
        for path in &event.paths {
            if let Some(ev) = self.translate_one(&event.kind, path) {
                out.push(ev);
            }
        }
        out
    }
    fn translate_one(&self, kind: &EventKind, path: &Path) -> Option<WatchEvent> {
        let root = &self.spec.root;
        if path == root {
            return match kind {
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                    Some(WatchEvent::FolderGone { root: root.clone() })
                }
                _ => None,
            };
        }
        if !path.starts_with(root) || self.spec.is_ignored(path) {
            return None;
        }
        if !self.spec.recursive && path.parent() != Some(root.as_path()) {
            return None;
        }
        match kind {
            // Our own reads (and everyone else's) say nothing about completeness, and
            // reporting them would make the agent's checks retrigger themselves.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                Some(WatchEvent::Touched(path.to_path_buf()))
            }
            EventKind::Access(_) | EventKind::Other => None,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                Some(WatchEvent::Removed(path.to_path_buf()))
            }
            // inotify also sends the From and To halves, which cover both sides.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
            EventKind::Create(CreateKind::Folder) => self.folder_appeared(path),
            EventKind::Create(CreateKind::File) => Some(WatchEvent::Touched(path.to_path_buf())),
            EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Any => match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => self.folder_appeared(path),
                Ok(_) => Some(WatchEvent::Touched(path.to_path_buf())),
                Err(_)
                    if matches!(
                        kind,
                        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
                    ) =>
                {
                    Some(WatchEvent::Removed(path.to_path_buf()))
                }
                // Created and already gone again: nothing to look at.
                Err(_) => None,
            },
            // Attribute changes also come for folders (a subfolder's own watch); they are rare
            // enough to look at.
            EventKind::Modify(ModifyKind::Metadata(_)) => match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => None,
                _ => Some(WatchEvent::Touched(path.to_path_buf())),
            },
            // Data changes are the busy case (every write of an export): no extra stat.
            EventKind::Modify(_) => Some(WatchEvent::Touched(path.to_path_buf())),
        }
    }

    fn folder_appeared(&self, path: &Path) -> Option<WatchEvent> {
        if !self.spec.recursive {
            return None;
        }
        Some(self.rescan(format!(
            "folder {} appeared; files already inside it send no events",
            crate::escape::escaped(path)
        )))
    }
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Regular files, sorted.
    pub files: Vec<PathBuf>,
    /// Entries that are not regular files (links, pipes, devices, sockets); folders are not
    /// listed here, they are either descended into or, when not recursive, left alone.
    pub skipped: Vec<(PathBuf, SkipReason)>,
    /// Folders or entries that could not be read.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Walks a spec's folder for candidate files. Blocking: the agent runs it in `spawn_blocking`.
///
/// Never follows symlinks (so a link loop cannot trap it): each folder is opened by walking its
/// path without following a link in any component (`nofollow::open_dir`) and listed from that
/// handle, so a folder swapped for a link between the listing of its parent and its own is
/// refused, not read through. Never enters `ignore` folders, and stays at the top level when
/// the spec is not recursive. Unreadable folders end up in `errors` and the walk goes on.
pub fn scan(spec: &WatchSpec) -> ScanResult {
    use crate::nofollow::{self, ListedKind, NoFollowError};
    let mut result = ScanResult::default();
    let mut pending = vec![spec.root.clone()];
    // Bind mounts can make a folder its own descendant without any symlink.
    let mut visited = HashSet::new();
    while let Some(dir) = pending.pop() {
        let opened = nofollow::open_dir(&dir).and_then(|fd| {
            let identity = nofollow::identity(&fd, &dir)?;
            Ok((fd, identity))
        });
        let (fd, identity) = match opened {
            Ok(opened) => opened,
            // Gone since its parent was listed: nothing to report.
            Err(NoFollowError::Missing { .. }) if dir != spec.root => continue,
            Err(NoFollowError::Link { .. }) if dir != spec.root => {
                result.skipped.push((dir, SkipReason::Symlink));
                continue;
            }
            Err(err) => {
                result.errors.push((dir, err.into_io()));
                continue;
            }
        };
        if !visited.insert(identity) {
            continue;
        }
        let entries = match nofollow::list_dir(&fd, &dir) {
            Ok(entries) => entries,
            Err(err) => {
                result.errors.push((dir, err.into_io()));
                continue;
            }
        };
        for (name, kind) in entries {
            let path = dir.join(name);
            if spec.is_ignored(&path) {
                continue;
            }
            match kind {
                ListedKind::Unreadable(e) => result.errors.push((path, e)),
                ListedKind::Is(None) => result.files.push(path),
                ListedKind::Is(Some(SkipReason::Directory)) => {
                    if spec.recursive {
                        pending.push(path);
                    }
                }
                ListedKind::Is(Some(reason)) => result.skipped.push((path, reason)),
            }
        }
    }
    result.files.sort();
    result.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    result
}

/// Whether a watched folder is there: `Ok` with its identity, or why it cannot be used, in
/// words for the log and `status`.
///
/// The folder's path was resolved once, links included, when the config was loaded (a root
/// configured as `/srv/exports -> /mnt/nas/exports` is watched as `/mnt/nas/exports`); from then
/// on the path is looked at without following a link in any component. A link swapped in for
/// the folder (or for a folder above it) makes it count as missing, with the same words at
/// every look, so it is reported once and never read through. A real folder made again at the
/// same path (deleted and made again, a share mounted again) is a folder with another identity:
/// the agent watches the new one.
pub fn probe_folder(root: &Path) -> Result<FolderId, String> {
    use crate::nofollow::NoFollowError;
    match crate::nofollow::lstat(root) {
        Ok(entry) if entry.skip == Some(SkipReason::Directory) => Ok(Some(entry.identity)),
        Ok(entry) if entry.skip == Some(SkipReason::Symlink) => Err(link_words(root)),
        Ok(_) => Err("it is no longer a folder".into()),
        Err(NoFollowError::Link { link, .. }) => Err(link_words(&link)),
        Err(NoFollowError::Missing { .. }) => {
            Err("it does not exist (deleted, renamed, or its share is not mounted)".into())
        }
        Err(err) => Err(format!("it cannot be read: {}", crate::chain(&err))),
    }
}

/// Device and inode of a watched folder (`None` where the system has no such thing).
pub type FolderId = Option<(u64, u64)>;

fn link_words(link: &Path) -> String {
    format!(
        "{} was replaced by a symbolic link; links are never followed, so the folder counts \
         as missing until a real folder is there again (or the config is reloaded with the \
         new path)",
        crate::escape::escaped(link)
    )
}

/// Which folder a path is (device and inode), looked at as [`probe_folder`] does: tells a
/// folder deleted and made again, or a share mounted over it, from the one that was watched.
pub fn folder_identity(dir: &Path) -> FolderId {
    probe_folder(dir).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, MetadataKind, RemoveKind};

    fn translator(recursive: bool) -> EventTranslator {
        EventTranslator {
            spec: WatchSpec {
                root: PathBuf::from("/in"),
                recursive,
                poll_interval: None,
                ignore: vec![PathBuf::from("/in/done"), PathBuf::from("/in/failed")],
            },
        }
    }

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        Ok(event)
    }

    fn touched(p: &str) -> WatchEvent {
        WatchEvent::Touched(PathBuf::from(p))
    }

    fn removed(p: &str) -> WatchEvent {
        WatchEvent::Removed(PathBuf::from(p))
    }

    #[test]
    fn writes_and_closes_are_touches_reads_are_not() {
        let t = translator(true);
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(
            t.translate(ev(data, &["/in/a.mov"])),
            vec![touched("/in/a.mov")]
        );
        let meta = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        assert_eq!(
            t.translate(ev(meta, &["/in/a.mov"])),
            vec![touched("/in/a.mov")]
        );
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            t.translate(ev(close_write, &["/in/sub/a.mov"])),
            vec![touched("/in/sub/a.mov")]
        );
        let create = EventKind::Create(CreateKind::File);
        assert_eq!(
            t.translate(ev(create, &["/in/a.mov"])),
            vec![touched("/in/a.mov")]
        );
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Other,
        ] {
            assert_eq!(t.translate(ev(quiet, &["/in/a.mov"])), vec![]);
        }
    }

    #[test]
    fn attribute_changes_of_folders_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("sub")).unwrap();
        let t = EventTranslator {
            spec: WatchSpec {
                root: root.clone(),
                recursive: true,
                poll_interval: Some(Duration::from_secs(1)),
                ignore: vec![],
            },
        };
        let meta = EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime));
        let sub = root.join("sub");
        let file = root.join("sub/a.mov");
        let mut event = Event::new(meta).add_path(sub).add_path(file.clone());
        event = event.add_path(root);
        assert_eq!(t.translate(Ok(event)), vec![WatchEvent::Touched(file)]);
    }

    #[test]
    fn renames_report_each_side_once() {
        let t = translator(true);
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(
            t.translate(ev(from, &["/in/a.mov"])),
            vec![removed("/in/a.mov")]
        );
        assert_eq!(t.translate(ev(both, &["/in/a.mov", "/in/b.mov"])), vec![]);
        let remove = EventKind::Remove(RemoveKind::File);
        assert_eq!(
            t.translate(ev(remove, &["/in/a.mov"])),
            vec![removed("/in/a.mov")]
        );
    }

    #[test]
    fn ignored_folders_and_outside_paths_are_dropped() {
        let t = translator(true);
        let create = EventKind::Create(CreateKind::File);
        assert_eq!(t.translate(ev(create, &["/in/done/a.mov"])), vec![]);
        assert_eq!(t.translate(ev(create, &["/in/failed/x/a.mov"])), vec![]);
        assert_eq!(t.translate(ev(create, &["/in/done"])), vec![]);
        assert_eq!(t.translate(ev(create, &["/elsewhere/a.mov"])), vec![]);
        // A name that merely starts like an ignored folder is not inside it.
        assert_eq!(
            t.translate(ev(create, &["/in/done-old.mov"])),
            vec![touched("/in/done-old.mov")]
        );
    }

    #[test]
    fn non_recursive_drops_subfolders() {
        let t = translator(false);
        let create = EventKind::Create(CreateKind::File);
        assert_eq!(t.translate(ev(create, &["/in/sub/a.mov"])), vec![]);
        assert_eq!(
            t.translate(ev(create, &["/in/a.mov"])),
            vec![touched("/in/a.mov")]
        );
        let folder = EventKind::Create(CreateKind::Folder);
        assert_eq!(t.translate(ev(folder, &["/in/sub"])), vec![]);
    }

    #[test]
    fn a_new_folder_asks_for_a_rescan_on_recursive_watches_only() {
        let folder = EventKind::Create(CreateKind::Folder);
        let out = translator(true).translate(ev(folder, &["/in/shoot"]));
        assert!(
            matches!(&out[..], [WatchEvent::RescanNeeded { root, why }]
                if root == Path::new("/in") && why.contains("/in/shoot")),
            "{out:?}"
        );
        assert_eq!(
            translator(false).translate(ev(folder, &["/in/shoot"])),
            vec![]
        );
    }

    #[test]
    fn an_overflow_a_limit_and_losing_the_root_are_told_apart() {
        let t = translator(true);
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(
            t.translate(Ok(overflow)),
            vec![WatchEvent::Overflow {
                root: PathBuf::from("/in")
            }]
        );
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert_eq!(
            t.translate(Err(limit)),
            vec![WatchEvent::WatchLimit {
                root: PathBuf::from("/in"),
                limit: WatchLimit::Watches
            }]
        );
        let other = t.translate(Err(notify::Error::generic("boom")));
        assert!(
            matches!(&other[..], [WatchEvent::RescanNeeded { why, .. }] if why.contains("boom")),
            "{other:?}"
        );
        let gone = EventKind::Remove(RemoveKind::Folder);
        let out = t.translate(ev(gone, &["/in"]));
        assert!(
            matches!(&out[..], [WatchEvent::FolderGone { root }] if root == Path::new("/in")),
            "{out:?}"
        );
    }

    #[test]
    fn watcher_limits_are_told_from_other_errors() {
        let max = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert_eq!(limit_of(&max), Some(WatchLimit::Watches));
        let enospc = notify::Error::io(io::Error::from_raw_os_error(ENOSPC));
        assert_eq!(limit_of(&enospc), Some(WatchLimit::Watches));
        let emfile = notify::Error::io(io::Error::from_raw_os_error(EMFILE));
        assert_eq!(limit_of(&emfile), Some(WatchLimit::Instances));
        let other = notify::Error::generic("boom");
        assert_eq!(limit_of(&other), None);
        let path = Path::new("/in");
        assert!(matches!(
            watch_error(path, other),
            WatchError::Notify { .. }
        ));
        let missing = watch_error(path, notify::Error::new(notify::ErrorKind::PathNotFound));
        assert!(matches!(missing, WatchError::Io { .. }), "{missing:?}");
    }

    #[test]
    fn a_local_folder_is_watched_with_events_and_an_explicit_interval_polls_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let spec = WatchSpec {
            root: root.clone(),
            recursive: true,
            poll_interval: None,
            ignore: vec![],
        };
        let mode = mode_now(&spec).unwrap();
        assert!(mode.events);
        let remote = mode.file_system.as_ref().is_some_and(|fs| fs.remote);
        assert_eq!(mode.polls(), remote, "{mode}");
        let polled = mode_now(&WatchSpec {
            poll_interval: Some(Duration::from_secs(2)),
            ..spec
        })
        .unwrap();
        assert!(polled.events && polled.configured, "{polled}");
        assert_eq!(polled.poll_every, Some(Duration::from_secs(2)));
        assert!(polled.to_string().contains("polling every 2 s"), "{polled}");
    }

    /// The probe and the identity look at a folder the same way (the mismatch between a
    /// probe that followed links and an identity that did not made a rescan every 3 s), and a
    /// link swapped in for the folder, or above it, gets the same words at every look.
    #[test]
    fn a_folder_swapped_for_a_link_is_refused_with_the_same_words_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("top/in");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(base.join("private/in")).unwrap();
        let watched = probe_folder(&root).unwrap();
        assert!(watched.is_some());
        assert_eq!(folder_identity(&root), watched);

        std::fs::rename(&root, base.join("in.old")).unwrap();
        std::os::unix::fs::symlink(base.join("private/in"), &root).unwrap();
        let first = probe_folder(&root).unwrap_err();
        assert!(first.contains("symbolic link"), "{first}");
        assert_eq!(probe_folder(&root).unwrap_err(), first);
        assert_eq!(folder_identity(&root), None);

        // A link above the folder is refused too.
        std::fs::remove_file(&root).unwrap();
        std::fs::rename(base.join("top"), base.join("top.old")).unwrap();
        std::os::unix::fs::symlink(base.join("private"), base.join("top")).unwrap();
        let above = probe_folder(&root).unwrap_err();
        assert!(
            above.contains("symbolic link") && above.contains("top"),
            "{above}"
        );
        let spec = WatchSpec {
            root: root.clone(),
            recursive: true,
            poll_interval: None,
            ignore: vec![],
        };
        let scanned = scan(&spec);
        assert!(
            scanned.files.is_empty() && !scanned.errors.is_empty(),
            "{scanned:?}"
        );
    }

    #[test]
    fn folder_watcher_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<FolderWatcher>();
    }
}
