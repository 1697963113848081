//! The completeness stage: decides whether a file in a watched folder is a finished export.
//!
//! The checks, cheapest first: the file name passes the folder's include/exclude globs
//! ([`NameFilter`]), the path is a regular file ([`inspect`], which never follows a symlink in
//! any component of the path: see `nofollow`), and its size and mtime stay unchanged for
//! `stable_for` ([`StabilityTracker`]). Then [`release`] opens it ([`open_readable`]: the agent
//! can actually read it) and asks the other signals on that one handle: nobody on this machine
//! is writing it ([`writers`]) and its container is whole ([`container`]).
//! On network and FUSE file systems, whose attributes may be cached, the size and mtime come
//! from [`inspect_fresh`] instead (an open handle and attributes asked of the file system), and
//! the release checks go through that same handle.
//!
//! The tracker keeps its deadlines in order so the agent can sleep on one timer until
//! [`StabilityTracker::next_deadline`]: ten thousand quiet files cost nothing while idle.
//!
//! The name patterns are in [`names`]; this file holds what a path is, and the tracker that
//! watches each candidate settle.

mod container;
mod names;
pub mod release;
mod writers;

pub use container::{ContainerCheck, ContainerKind, ContainerVerdict, check as check_container};
pub use names::{NameFilter, NameVerdict, compile_pattern, compile_patterns};
pub use release::{HeldBy, Release, ReleaseRules};
pub use writers::{WriterCheck, check as check_writers};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::chain;
use crate::escape::escaped;
use crate::nofollow::NoFollowError;

/// What the tracker compares between looks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileSnapshot {
    pub size: u64,
    /// Nanoseconds since the Unix epoch (negative before it), so that sub-second writes count.
    pub mtime_ns: i128,
}

/// A time as nanoseconds since the Unix epoch (negative before it), as snapshots count it.
pub fn system_time_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// What a path turned out to be at one look.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Inspection {
    Regular(FileSnapshot),
    /// Deleted or renamed away since the event that named it.
    Vanished,
    Skipped(SkipReason),
}

/// Why a path in a watched folder is not a candidate, in words for the log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SkipReason {
    Symlink,
    /// A folder on the way to it is a symbolic link (`in/sub -> /private`, `in/sub/clip.mov`).
    LinkOnTheWay,
    Directory,
    Fifo,
    Device,
    Socket,
    Other,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Symlink => "a symbolic link (links are never followed)",
            SkipReason::LinkOnTheWay => {
                "reached through a symbolic link to a folder (links are never followed)"
            }
            SkipReason::Directory => "a folder",
            SkipReason::Fifo => "a named pipe (FIFO)",
            SkipReason::Device => "a device file",
            SkipReason::Socket => "a socket",
            SkipReason::Other => "not a regular file",
        })
    }
}

impl SkipReason {
    /// What a non-regular file type is; `None` for a regular file.
    pub fn of(file_type: std::fs::FileType) -> Option<SkipReason> {
        if file_type.is_file() {
            return None;
        }
        if file_type.is_symlink() {
            return Some(SkipReason::Symlink);
        }
        if file_type.is_dir() {
            return Some(SkipReason::Directory);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                return Some(SkipReason::Fifo);
            }
            if file_type.is_block_device() || file_type.is_char_device() {
                return Some(SkipReason::Device);
            }
            if file_type.is_socket() {
                return Some(SkipReason::Socket);
            }
        }
        Some(SkipReason::Other)
    }
}

/// Looks at `path` without following a symlink, neither the file itself (a link could point
/// anywhere, and the file it names would be moved out from under whoever else uses it) nor any
/// folder on the way to it (see `nofollow`).
/// A path that no longer exists is `Ok(Vanished)`, not an error.
pub fn inspect(path: &Path) -> io::Result<Inspection> {
    match crate::nofollow::lstat(path) {
        Ok(entry) => Ok(match entry.skip {
            Some(reason) => Inspection::Skipped(reason),
            None => Inspection::Regular(FileSnapshot {
                size: entry.size,
                mtime_ns: entry.mtime_ns,
            }),
        }),
        // Including a folder on the way that was replaced by a file: the path is gone too.
        Err(NoFollowError::Missing { .. }) => Ok(Inspection::Vanished),
        Err(NoFollowError::Link { .. }) => Ok(Inspection::Skipped(SkipReason::LinkOnTheWay)),
        Err(err) => Err(err.into_io()),
    }
}

/// One file waiting for its quiet period to pass.
#[derive(Debug, Clone)]
struct Quiet {
    snapshot: FileSnapshot,
    /// When tracking began, for the sidecar's "detected" event.
    first_seen: Instant,
    /// When `snapshot` was first seen; the quiet period runs from here.
    since: Instant,
    /// When it is looked at next: `since + stable_for`, or later for a file held back by
    /// another signal ([`StabilityTracker::hold`]).
    due: Instant,
    /// What a held-back file waits for ("open for writing by ffmpeg (pid 42)"), for `status`.
    waiting_for: Option<String>,
}

/// Waits for each candidate's size and mtime to stay unchanged for `stable_for`.
///
/// The agent drives it with one timer: sleep until [`next_deadline`](Self::next_deadline),
/// take the [`due`](Self::due) paths, [`inspect`] each and hand the snapshot to
/// [`confirm`](Self::confirm). A changed snapshot restarts that file's clock; an unchanged one
/// past its quiet period comes back as a [`StableFile`].
#[derive(Debug)]
pub struct StabilityTracker {
    stable_for: Duration,
    files: HashMap<PathBuf, Quiet>,
    /// Every tracked path keyed by the instant it is looked at next (`Quiet::due`), so the
    /// earliest deadline and the due paths are found without looking at the others.
    deadlines: BTreeSet<(Instant, PathBuf)>,
    /// Paths that started, restarted or ended a quiet period since the last
    /// [`take_changes`](Self::take_changes): `status` is shown a copy, updated in batches.
    changed: HashSet<PathBuf>,
}

/// Where one path's quiet period stands, as [`StabilityTracker::take_changes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settling {
    pub path: PathBuf,
    /// `None`: no longer tracked (complete, vanished, or forgotten).
    pub quiet: Option<QuietSince>,
}

/// A tracked file's current size and mtime, since when they have held, and what else it waits
/// for when another signal held it back after it was stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietSince {
    pub snapshot: FileSnapshot,
    pub since: Instant,
    pub waiting_for: Option<String>,
}

/// A file whose size and mtime held still for the folder's `stable_for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableFile {
    pub path: PathBuf,
    pub snapshot: FileSnapshot,
    pub first_seen: Instant,
    /// Since when the snapshot has held (for [`StabilityTracker::hold`]).
    pub since: Instant,
    /// The rule that found it complete, for the sidecar: "size 1048576 B and mtime unchanged
    /// for 10s".
    pub rule: String,
}

impl StabilityTracker {
    pub fn new(stable_for: Duration) -> Self {
        StabilityTracker {
            stable_for,
            files: HashMap::new(),
            deadlines: BTreeSet::new(),
            changed: HashSet::new(),
        }
    }

    /// A fresh look at a candidate: starts its quiet period when it is new, restarts it when
    /// the snapshot changed, and otherwise leaves it running (events that change nothing, such
    /// as the agent's own reads, must not delay an upload).
    pub fn observe(&mut self, path: PathBuf, snap: FileSnapshot, now: Instant) {
        match self.files.get_mut(&path) {
            Some(quiet) if quiet.snapshot == snap => {}
            Some(quiet) => {
                self.deadlines.remove(&(quiet.due, path.clone()));
                quiet.snapshot = snap;
                quiet.since = now;
                quiet.due = now + self.stable_for;
                quiet.waiting_for = None;
                self.deadlines.insert((quiet.due, path.clone()));
                self.changed.insert(path);
            }
            None => {
                self.files.insert(
                    path.clone(),
                    Quiet {
                        snapshot: snap,
                        first_seen: now,
                        since: now,
                        due: now + self.stable_for,
                        waiting_for: None,
                    },
                );
                self.deadlines.insert((now + self.stable_for, path.clone()));
                self.changed.insert(path);
            }
        }
    }

    /// Stops tracking a path (it vanished, was skipped, or its folder is no longer watched).
    pub fn forget(&mut self, path: &Path) {
        if let Some(quiet) = self.files.remove(path) {
            self.deadlines.remove(&(quiet.due, path.to_path_buf()));
            self.changed.insert(path.to_path_buf());
        }
    }

    /// Stops tracking every path under `dir` (a folder was deleted or moved away).
    pub fn forget_under(&mut self, dir: &Path) {
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in gone {
            self.forget(&path);
        }
    }

    pub fn is_tracked(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    /// Paths whose quiet period has ended by `now`, earliest first: the caller re-inspects them
    /// and calls [`confirm`](Self::confirm) (or [`forget`](Self::forget) when they vanished).
    pub fn due(&self, now: Instant) -> Vec<PathBuf> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, path)| path.clone())
            .collect()
    }

    /// Returns the file, and stops tracking it, when `snap` equals the tracked snapshot and
    /// that snapshot has held for `stable_for`. Otherwise returns `None` and records `snap` as
    /// [`observe`](Self::observe) does, so a changed file starts a new quiet period and is not
    /// due again until it ends. An untracked path returns `None` and stays untracked.
    pub fn confirm(&mut self, path: &Path, snap: FileSnapshot, now: Instant) -> Option<StableFile> {
        let quiet = self.files.get(path)?;
        if quiet.snapshot != snap {
            self.observe(path.to_path_buf(), snap, now);
            return None;
        }
        if now < quiet.due || now.saturating_duration_since(quiet.since) < self.stable_for {
            return None;
        }
        let (first_seen, since) = (quiet.first_seen, quiet.since);
        self.forget(path);
        Some(StableFile {
            path: path.to_path_buf(),
            snapshot: snap,
            first_seen,
            since,
            rule: format!(
                "size {} B and mtime unchanged for {}",
                snap.size,
                humantime::format_duration(self.stable_for)
            ),
        })
    }

    /// Tracks a stable file again that another signal held back (still open for writing, a
    /// container not yet whole): it keeps its quiet period, is looked at again after
    /// `look_again_in` (or sooner when it changes: a change clears `waiting_for` and restarts
    /// the quiet period), and `status` shows `waiting_for`.
    pub fn hold(
        &mut self,
        stable: StableFile,
        now: Instant,
        look_again_in: Duration,
        waiting_for: String,
    ) {
        self.forget(&stable.path);
        let due = now + look_again_in;
        self.deadlines.insert((due, stable.path.clone()));
        self.changed.insert(stable.path.clone());
        self.files.insert(
            stable.path,
            Quiet {
                snapshot: stable.snapshot,
                first_seen: stable.first_seen,
                since: stable.since,
                due,
                waiting_for: Some(waiting_for),
            },
        );
    }

    /// When the earliest quiet period ends; `None` when nothing is tracked. The agent sleeps
    /// exactly until then instead of polling.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    pub fn stable_for(&self) -> Duration {
        self.stable_for
    }

    /// Whether a path started, restarted or ended its quiet period since the last
    /// [`take_changes`](Self::take_changes).
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Where each path that changed since the last call stands now (a path that started and
    /// ended its quiet period in between is reported as ended).
    pub fn take_changes(&mut self) -> Vec<Settling> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|path| {
                let quiet = self.quiet_since(&path);
                Settling { path, quiet }
            })
            .collect()
    }

    /// Every tracked path and where its quiet period stands; forgets the pending changes,
    /// which this covers.
    pub fn take_all(&mut self) -> Vec<Settling> {
        self.changed.clear();
        self.files
            .keys()
            .map(|path| Settling {
                path: path.clone(),
                quiet: self.quiet_since(path),
            })
            .collect()
    }

    /// Where `path`'s quiet period stands, when it is tracked.
    pub fn quiet_since(&self, path: &Path) -> Option<QuietSince> {
        self.files.get(path).map(|quiet| QuietSince {
            snapshot: quiet.snapshot,
            since: quiet.since,
            waiting_for: quiet.waiting_for.clone(),
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Looks at `path` as [`inspect`] does, but with attributes the file system cannot have served
/// from a cache, for folders on network and FUSE file systems. Returns the file opened for
/// reading too, so that what is read next (the first byte, the container's boxes) comes
/// through the same handle.
///
/// A share may keep a file's size and mtime for a while (NFS `actimeo`, sshfs's attribute cache
/// of 20 s by default, FUSE's `attr_timeout`): `lstat` on a file still growing on the server can
/// show the same size and mtime for longer than `stable_for`, and the file would be taken as
/// complete. Opening it revalidates on NFS (close-to-open) and makes sshfs ask the server
/// again; on Linux, `statx` with `AT_STATX_FORCE_SYNC` on the open file then makes the kernel
/// ask the file system too instead of answering from its own cache (FUSE, NFS, CIFS honour
/// it). Measured on sshfs 3.7 with its default cache: `lstat` showed a change 21 s late,
/// `open` + `fstat` up to 1 s late, `open` + this `statx` at once.
///
/// The file is first looked at with `lstat` (cached or not, a type does not change) so that
/// nothing but a regular file is opened: opening a device node on a share opens the device
/// here. One that cannot be opened (permissions, a Windows writer's sharing lock) is looked at
/// with `lstat` alone: it does not pass [`open_readable`] anyway.
pub fn inspect_fresh(path: &Path) -> io::Result<(Inspection, Option<File>)> {
    let first = inspect(path)?;
    if !matches!(first, Inspection::Regular(_)) {
        return Ok((first, None));
    }
    match crate::nofollow::open_file(path) {
        Ok(file) => {
            let snapshot = fresh_snapshot(&file)?;
            Ok((Inspection::Regular(snapshot), Some(file)))
        }
        Err(NoFollowError::Missing { .. }) => Ok((Inspection::Vanished, None)),
        Err(NoFollowError::Link { path, link }) => {
            let reason = if path == link {
                SkipReason::Symlink
            } else {
                SkipReason::LinkOnTheWay
            };
            Ok((Inspection::Skipped(reason), None))
        }
        Err(NoFollowError::NotRegular { reason, .. }) => Ok((Inspection::Skipped(reason), None)),
        Err(NoFollowError::Io { .. }) => Ok((first, None)),
        Err(err) => Err(err.into_io()),
    }
}

/// Size and mtime of an open file, asked of the file system (see [`inspect_fresh`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn fresh_snapshot(file: &File) -> io::Result<FileSnapshot> {
    use rustix::fs::{AtFlags, StatxFlags};
    let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC;
    let wanted = StatxFlags::TYPE | StatxFlags::SIZE | StatxFlags::MTIME;
    match rustix::fs::statx(file, "", flags, wanted) {
        Ok(st) => Ok(FileSnapshot {
            size: st.stx_size,
            mtime_ns: i128::from(st.stx_mtime.tv_sec) * 1_000_000_000
                + i128::from(st.stx_mtime.tv_nsec),
        }),
        // No statx (kernels before 4.11, some sandboxes): the open already revalidated on NFS.
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {
            fstat_snapshot(file)
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn fresh_snapshot(file: &File) -> io::Result<FileSnapshot> {
    fstat_snapshot(file)
}

fn fstat_snapshot(file: &File) -> io::Result<FileSnapshot> {
    let st = rustix::fs::fstat(file)?;
    Ok(FileSnapshot {
        size: u64::try_from(st.st_size).unwrap_or(0),
        #[allow(clippy::unnecessary_cast)]
        mtime_ns: i128::from(st.st_mtime as i64) * 1_000_000_000
            + i128::from(st.st_mtime_nsec as i64),
    })
}

/// Opens the file for reading, and reads one byte when it is not empty, so a file the agent
/// cannot read fails here, in words, rather than halfway through an upload. Refuses anything
/// that is not a regular file, and a link anywhere in the path, without blocking: what is
/// opened is checked after opening it non-blocking (see `nofollow::open_file`), so a named
/// pipe swapped in after [`inspect`] is refused, not waited on. Blocking otherwise (it reads):
/// the agent calls it off its async threads.
///
/// Returns the open handle and what `fstat` said about it, so that the checks after it look
/// at the file that was opened (see `release`).
pub fn open_readable(path: &Path) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    let shown = escaped(path);
    let file = match crate::nofollow::open_file(path) {
        Ok(file) => file,
        Err(NoFollowError::Missing { .. }) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot open {shown}: it no longer exists"),
            ));
        }
        Err(NoFollowError::Io { source, .. })
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            return Err(io::Error::new(
                source.kind(),
                format!(
                    "cannot open {shown}: permission denied: the user hotfolder runs as may not read it"
                ),
            ));
        }
        Err(err) => {
            let kind = match &err {
                NoFollowError::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::InvalidInput,
            };
            return Err(io::Error::new(
                kind,
                format!("cannot read: {}", chain(&err)),
            ));
        }
    };
    reads(file, path)
}

/// The second half of [`open_readable`], for a file already open (by [`inspect_fresh`]): reads
/// one byte when it is not empty, and gives the handle back with its `fstat`.
pub fn reads(mut file: File, path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let shown = escaped(path);
    let explain = |e: io::Error, doing: &str| {
        io::Error::new(e.kind(), format!("cannot {doing} {shown}: {e}"))
    };
    let meta = file.metadata().map_err(|e| explain(e, "look at"))?;
    if meta.len() == 0 {
        return Ok((file, meta));
    }
    let mut byte = [0u8; 1];
    match file.read(&mut byte) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("cannot read {shown}: it was cut short while being checked"),
        )),
        Ok(_) => Ok((file, meta)),
        Err(e) => Err(explain(e, "read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn snap(size: u64, mtime_ns: i128) -> FileSnapshot {
        FileSnapshot { size, mtime_ns }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_file_keeps_its_quiet_period_waits_longer_and_says_why_until_it_changes() {
        let stable_for = Duration::from_secs(10);
        let mut tracker = StabilityTracker::new(stable_for);
        let path = PathBuf::from("/in/render.mp4");
        let start = Instant::now();
        tracker.observe(path.clone(), snap(100, 1), start);
        let at = start + stable_for;
        let stable = tracker.confirm(&path, snap(100, 1), at).unwrap();
        assert!(!tracker.is_tracked(&path));
        tracker.take_changes();

        tracker.hold(stable, at, Duration::from_secs(30), "still open".into());
        assert!(tracker.is_tracked(&path));
        assert_eq!(tracker.next_deadline(), Some(at + Duration::from_secs(30)));
        let changes = tracker.take_changes();
        let quiet = changes[0].quiet.clone().unwrap();
        assert_eq!(
            (quiet.since, quiet.waiting_for.as_deref()),
            (start, Some("still open"))
        );
        // Not due before its new deadline, although stable_for has long passed.
        assert!(
            tracker
                .confirm(&path, snap(100, 1), at + Duration::from_secs(29))
                .is_none()
        );
        assert!(
            tracker
                .confirm(&path, snap(100, 1), at + Duration::from_secs(30))
                .is_some()
        );

        // A held file that changes settles again from scratch, with nothing to wait for.
        tracker.observe(path.clone(), snap(100, 1), at);
        let stable = tracker
            .confirm(&path, snap(100, 1), at + stable_for)
            .unwrap();
        tracker.hold(stable, at + stable_for, Duration::from_secs(30), "x".into());
        tracker.observe(path.clone(), snap(200, 2), at + stable_for);
        let quiet = tracker.take_all()[0].quiet.clone().unwrap();
        assert_eq!(quiet.waiting_for, None);
        assert_eq!(tracker.next_deadline(), Some(at + stable_for + stable_for));
    }

    #[tokio::test(start_paused = true)]
    async fn a_still_file_is_confirmed_after_stable_for_with_the_rule() {
        let stable_for = Duration::from_secs(10);
        let mut tracker = StabilityTracker::new(stable_for);
        let path = PathBuf::from("/in/clip.mov");
        let start = Instant::now();
        tracker.observe(path.clone(), snap(1_048_576, 7), start);
        assert_eq!(tracker.next_deadline(), Some(start + stable_for));
        assert!(tracker.due(Instant::now()).is_empty());

        tokio::time::sleep(Duration::from_secs(3)).await;
        // Too early: still tracked, nothing comes back.
        assert_eq!(
            tracker.confirm(&path, snap(1_048_576, 7), Instant::now()),
            None
        );
        assert!(tracker.is_tracked(&path));

        tokio::time::sleep_until(tracker.next_deadline().unwrap()).await;
        assert_eq!(tracker.due(Instant::now()), vec![path.clone()]);
        let stable = tracker
            .confirm(&path, snap(1_048_576, 7), Instant::now())
            .expect("stable after 10s");
        assert_eq!(stable.path, path);
        assert_eq!(stable.first_seen, start);
        assert_eq!(stable.rule, "size 1048576 B and mtime unchanged for 10s");
        assert!(!tracker.is_tracked(&path));
        assert!(tracker.is_empty());
        assert_eq!(tracker.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracker_reports_what_changed_for_status_once() {
        let mut tracker = StabilityTracker::new(Duration::from_secs(10));
        let (a, b) = (PathBuf::from("/in/a.mov"), PathBuf::from("/in/b.mov"));
        let start = Instant::now();
        assert!(!tracker.has_changes());
        tracker.observe(a.clone(), snap(1, 1), start);
        tracker.observe(b.clone(), snap(5, 1), start);
        let mut changes = tracker.take_changes();
        changes.sort_by(|x, y| x.path.cmp(&y.path));
        let quiet = |size, since| {
            Some(QuietSince {
                snapshot: snap(size, 1),
                since,
                waiting_for: None,
            })
        };
        assert_eq!(
            changes,
            [
                Settling {
                    path: a.clone(),
                    quiet: quiet(1, start)
                },
                Settling {
                    path: b.clone(),
                    quiet: quiet(5, start)
                }
            ]
        );
        // Taken: nothing again until something changes. An unchanged look is no change.
        assert!(tracker.take_changes().is_empty());
        tracker.observe(a.clone(), snap(1, 1), start + Duration::from_secs(1));
        assert!(!tracker.has_changes());

        // a grows (its clock restarts), b completes.
        let later = start + Duration::from_secs(10);
        tracker.observe(a.clone(), snap(2, 1), later);
        assert!(tracker.confirm(&b, snap(5, 1), later).is_some());
        let mut changes = tracker.take_changes();
        changes.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(
            changes,
            [
                Settling {
                    path: a.clone(),
                    quiet: quiet(2, later)
                },
                Settling {
                    path: b.clone(),
                    quiet: None
                }
            ]
        );
        // Seen and gone between two takes: reported as gone.
        let c = PathBuf::from("/in/sub/c.mov");
        tracker.observe(c.clone(), snap(1, 1), later);
        tracker.forget_under(Path::new("/in/sub"));
        assert_eq!(
            tracker.take_changes(),
            [Settling {
                path: c,
                quiet: None
            }]
        );
        // The whole set, for a resync.
        tracker.observe(b.clone(), snap(9, 1), later);
        let mut all = tracker.take_all();
        all.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].quiet, quiet(9, later));
        assert!(!tracker.has_changes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_growing_file_is_never_confirmed() {
        let mut tracker = StabilityTracker::new(Duration::from_secs(10));
        let path = PathBuf::from("/in/growing.mov");
        let start = Instant::now();
        tracker.observe(path.clone(), snap(0, 0), start);
        // The exporter writes every 4 s for two minutes; the agent checks at each deadline.
        for step in 1..=30u64 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let now = Instant::now();
            let grown = snap(step * 1000, i128::from(step));
            if tracker.due(now).contains(&path) {
                assert_eq!(tracker.confirm(&path, grown, now), None);
            } else {
                tracker.observe(path.clone(), grown, now);
            }
            assert!(tracker.is_tracked(&path));
            assert!(tracker.next_deadline().unwrap() > now);
        }
        // Once it stops, it is confirmed one quiet period after the last change.
        let last_change = Instant::now();
        tokio::time::sleep_until(tracker.next_deadline().unwrap()).await;
        assert_eq!(
            Instant::now().duration_since(last_change),
            Duration::from_secs(10)
        );
        let stable = tracker.confirm(&path, snap(30_000, 30), Instant::now());
        assert_eq!(stable.map(|s| s.first_seen), Some(start));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_snapshot_at_the_deadline_restarts_the_clock() {
        let mut tracker = StabilityTracker::new(Duration::from_secs(10));
        let path = PathBuf::from("/in/a.mov");
        tracker.observe(path.clone(), snap(5, 1), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        // Same size, newer mtime: rewritten in place.
        assert_eq!(tracker.confirm(&path, snap(5, 2), now), None);
        assert!(tracker.due(now).is_empty(), "not due again right away");
        assert_eq!(tracker.next_deadline(), Some(now + Duration::from_secs(10)));
        // Repeated looks with the unchanged snapshot do not push the deadline out.
        tokio::time::advance(Duration::from_secs(5)).await;
        tracker.observe(path.clone(), snap(5, 2), Instant::now());
        assert_eq!(tracker.next_deadline(), Some(now + Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(tracker.confirm(&path, snap(5, 2), Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn many_files_come_due_in_deadline_order() {
        let mut tracker = StabilityTracker::new(Duration::from_secs(10));
        let start = Instant::now();
        for i in 0..10_000u64 {
            let at = start + Duration::from_millis(i % 1000);
            tracker.observe(PathBuf::from(format!("/in/{i}.mov")), snap(i, 0), at);
        }
        assert_eq!(tracker.len(), 10_000);
        assert_eq!(
            tracker.next_deadline(),
            Some(start + Duration::from_secs(10))
        );
        let due = tracker.due(start + Duration::from_secs(10));
        assert_eq!(due.len(), 10, "only the files seen at the start");
        assert!(due.contains(&PathBuf::from("/in/0.mov")));
        assert!(due.contains(&PathBuf::from("/in/9000.mov")));

        tracker.forget(Path::new("/in/0.mov"));
        tracker.forget_under(Path::new("/in"));
        assert!(tracker.is_empty());
        assert_eq!(tracker.next_deadline(), None);
        assert!(tracker.due(start + Duration::from_secs(3600)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn confirm_of_an_untracked_path_is_none() {
        let mut tracker = StabilityTracker::new(Duration::from_secs(1));
        assert_eq!(
            tracker.confirm(Path::new("/nowhere"), snap(1, 1), Instant::now()),
            None
        );
        assert!(!tracker.is_tracked(Path::new("/nowhere")));
    }

    #[test]
    fn inspect_tells_files_folders_links_and_missing_apart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        std::fs::write(&file, b"12345").unwrap();
        match inspect(&file).unwrap() {
            Inspection::Regular(s) => assert_eq!(s.size, 5),
            other => panic!("expected a regular file, got {other:?}"),
        }
        assert_eq!(
            inspect(dir.path()).unwrap(),
            Inspection::Skipped(SkipReason::Directory)
        );
        assert_eq!(
            inspect(&dir.path().join("gone.mov")).unwrap(),
            Inspection::Vanished
        );
        assert_eq!(
            inspect(&file.join("below-a-file")).unwrap(),
            Inspection::Vanished
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("link.mov");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert_eq!(
                inspect(&link).unwrap(),
                Inspection::Skipped(SkipReason::Symlink)
            );
            assert_eq!(
                SkipReason::Symlink.to_string(),
                "a symbolic link (links are never followed)"
            );
        }
    }

    #[test]
    fn a_link_on_the_way_is_neither_inspected_nor_opened_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("private/clip.mov"), b"secret").unwrap();
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("private"), root.join("in/sub")).unwrap();
        let through = root.join("in/sub/clip.mov");
        assert_eq!(
            inspect(&through).unwrap(),
            Inspection::Skipped(SkipReason::LinkOnTheWay)
        );
        let err = open_readable(&through).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_rewrite_changes_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        std::fs::write(&file, b"12345").unwrap();
        let Inspection::Regular(before) = inspect(&file).unwrap() else {
            panic!("regular file expected")
        };
        let f = File::options().write(true).open(&file).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        let Inspection::Regular(after) = inspect(&file).unwrap() else {
            panic!("regular file expected")
        };
        assert_eq!(before.size, after.size);
        assert_ne!(before, after);
    }

    #[test]
    fn opens_for_reading_explains_failures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        let export = crate::sample_video::SampleVideo::for_path(&file, 1000, 1).unwrap();
        std::fs::write(&file, export.to_vec()).unwrap();
        open_readable(&file).unwrap();
        let empty = dir.path().join("empty.mov");
        std::fs::write(&empty, b"").unwrap();
        open_readable(&empty).unwrap();

        let missing = open_readable(&dir.path().join("gone.mov")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("gone.mov"), "{missing}");
        assert!(
            missing.to_string().contains("no longer exists"),
            "{missing}"
        );

        let folder = open_readable(dir.path()).unwrap_err();
        assert!(folder.to_string().contains("a folder"), "{folder}");
    }

    #[test]
    fn inspect_fresh_opens_regular_files_only_and_reads_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let file = root.join("clip.mov");
        std::fs::write(&file, b"12345").unwrap();
        let (inspection, opened) = inspect_fresh(&file).unwrap();
        assert_eq!(
            inspection,
            inspect(&file).unwrap(),
            "the same snapshot as lstat's"
        );
        let opened = opened.expect("a regular file is opened");
        reads(opened, &file).unwrap();

        use std::io::Write as _;
        let mut writer = File::options().append(true).open(&file).unwrap();
        writer.write_all(b"678").unwrap();
        let Inspection::Regular(grown) = inspect_fresh(&file).unwrap().0 else {
            panic!("regular file expected")
        };
        assert_eq!(grown.size, 8);

        let (folder, none) = inspect_fresh(&root).unwrap();
        assert_eq!(folder, Inspection::Skipped(SkipReason::Directory));
        assert!(none.is_none());
        assert_eq!(
            inspect_fresh(&root.join("gone.mov")).unwrap().0,
            Inspection::Vanished
        );
        let link = root.join("link.mov");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let (linked, none) = inspect_fresh(&link).unwrap();
        assert_eq!(linked, Inspection::Skipped(SkipReason::Symlink));
        assert!(none.is_none(), "a link is never opened");
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/in.mov"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("via")).unwrap();
        assert_eq!(
            inspect_fresh(&root.join("via/in.mov")).unwrap().0,
            Inspection::Skipped(SkipReason::LinkOnTheWay)
        );

        let fifo = root.join("pipe.mov");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if matches!(made, Ok(s) if s.success()) {
            let (pipe, none) = inspect_fresh(&fifo).unwrap();
            assert_eq!(pipe, Inspection::Skipped(SkipReason::Fifo));
            assert!(none.is_none(), "a pipe is never opened");
        } else {
            eprintln!("mkfifo unavailable: the named pipe case is not checked");
        }
    }

    #[cfg(unix)]
    #[test]
    fn inspect_fresh_falls_back_to_lstat_for_a_file_it_cannot_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locked.mov");
        std::fs::write(&file, b"data").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&file).is_ok() {
            eprintln!("running as root: permission bits are not enforced, nothing to check");
            return;
        }
        let (inspection, opened) = inspect_fresh(&file).unwrap();
        assert_eq!(inspection, inspect(&file).unwrap());
        assert!(opened.is_none());
    }

    #[cfg(unix)]
    #[test]
    fn opens_for_reading_names_a_permission_problem() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locked.mov");
        std::fs::write(&file, b"data").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&file).is_ok() {
            eprintln!("running as root: permission bits are not enforced, nothing to check");
            return;
        }
        let err = open_readable(&file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("permission denied"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn opens_for_reading_refuses_a_named_pipe_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.mov");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("mkfifo unavailable, nothing to check");
            return;
        }
        assert_eq!(
            inspect(&fifo).unwrap(),
            Inspection::Skipped(SkipReason::Fifo)
        );
        let err = open_readable(&fifo).unwrap_err();
        assert!(err.to_string().contains("named pipe"), "{err}");
    }
}
