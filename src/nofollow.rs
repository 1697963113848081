//! Looking at, opening and moving files under the watched folders without ever following a
//! symbolic link, in any component of the path.
//!
//! Checking the last component (`lstat`) is not enough: with `in/sub/clip.mov` queued, someone
//! who may write in `in/` can `mv in/sub x; ln -s /private in/sub`, and every later `open`,
//! `stat` or `rename` by path would reach `/private/clip.mov`. Checking every component first
//! and then using the path leaves the same gap between the check and the use.
//!
//! So the path is walked instead: `/` is opened, then each folder below it with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, and the last name is looked at, opened,
//! linked or removed relative to the folder it is in (`statat`, `openat`, `linkat`,
//! `unlinkat`). Whatever is swapped in meanwhile, a link is refused where it is met, not
//! followed. The walk starts at `/`, not at the watched folder, so that the watched folder's own
//! path is held to the same rule (the config resolves it, links included, once at start and on
//! reload: see `config::paths`). On Linux the folders on the way are opened with `O_PATH`,
//! which needs no read permission, as a lookup by path needs none.
//!
//! A file is opened with `O_NONBLOCK` as well, so that a named pipe (or a device) swapped in
//! after the checks cannot block the opening thread, and what was opened is checked with
//! `fstat` to be a regular file before anything reads it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::escape::escaped;
use crate::ready::SkipReason;

/// Why a path could not be looked at or opened without following a link. Only `Io` may pass
/// by itself (worth trying again later); the others stay until someone changes the path.
#[derive(Debug, thiserror::Error)]
pub enum NoFollowError {
    /// Nothing has this name, or a folder on the way is gone or is not a folder any more.
    /// Permanent for this path (it is gone), not worth retrying.
    #[error("{} does not exist", escaped(.path))]
    Missing { path: PathBuf },
    /// `link` (the path itself or a folder on the way) is a symbolic link. Permanent until
    /// someone replaces the link: links are never followed.
    #[error("{} is reached through the symbolic link {} (links are never followed)", escaped(.path), escaped(.link))]
    Link { path: PathBuf, link: PathBuf },
    /// It exists but is not a regular file (a file was wanted). Permanent.
    #[error("{} is {reason}, not a regular file", escaped(.path))]
    NotRegular { path: PathBuf, reason: SkipReason },
    /// A path with `..` in it: it could leave the folder it names. Permanent.
    #[error("{} has a `..` component", escaped(.path))]
    ParentComponent { path: PathBuf },
    /// Anything else the system said (permission denied, I/O error, a share that went away):
    /// may pass, so worth trying again later.
    #[error("cannot look at {}", escaped(.path))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NoFollowError {
    /// As an `io::Error` for callers that report those next to the path they name ("cannot
    /// read X: …"): the reason only, without the path again, with a fitting kind (and the
    /// system's own words where there are some).
    pub fn into_io(self) -> io::Error {
        match self {
            NoFollowError::Missing { .. } => io::Error::from(Errno::NOENT),
            NoFollowError::Io { source, .. } => source,
            NoFollowError::NotRegular {
                reason: SkipReason::Directory,
                ..
            } => io::Error::from(Errno::ISDIR),
            NoFollowError::NotRegular { reason, .. } => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is {reason}, not a regular file"),
            ),
            NoFollowError::Link { path, link } if path == link => io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link (links are never followed)",
            ),
            NoFollowError::Link { link, .. } => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the folder {} on the way to it is a symbolic link (links are never followed)",
                    escaped(&link)
                ),
            ),
            NoFollowError::ParentComponent { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, "the path has a `..` component")
            }
        }
    }
}

/// What [`lstat`] found at a path (never what a link points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// `None` for a regular file, else what it is.
    pub skip: Option<SkipReason>,
    pub size: u64,
    /// Nanoseconds since the Unix epoch, as `ready::FileSnapshot` counts them.
    pub mtime_ns: i128,
    /// The inode's change time, in the same unit: a write puts it forward, and unlike the
    /// mtime nobody can set it back (`touch -r` restores an mtime, and sets the ctime to now).
    pub ctime_ns: i128,
    /// Device and inode: which file this is.
    pub identity: (u64, u64),
}

impl Entry {
    fn of(stat: &rustix::fs::Stat) -> Entry {
        Entry {
            skip: skip_reason(FileType::from_raw_mode(stat.st_mode)),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_ns: i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec),
            ctime_ns: i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec),
            identity: identity_of(stat),
        }
    }
}

/// Device and inode. `dev_t` is a `u64` on Linux and an `i32` on macOS: only ever compared for
/// equality, so the plain conversion is what is wanted.
#[allow(clippy::unnecessary_cast)]
fn identity_of(stat: &rustix::fs::Stat) -> (u64, u64) {
    (stat.st_dev as u64, stat.st_ino as u64)
}

fn skip_reason(kind: FileType) -> Option<SkipReason> {
    match kind {
        FileType::RegularFile => None,
        FileType::Directory => Some(SkipReason::Directory),
        FileType::Symlink => Some(SkipReason::Symlink),
        FileType::Fifo => Some(SkipReason::Fifo),
        FileType::CharacterDevice | FileType::BlockDevice => Some(SkipReason::Device),
        FileType::Socket => Some(SkipReason::Socket),
        _ => Some(SkipReason::Other),
    }
}

/// Flags for the folders on the way: never a link, and (on Linux) no read permission needed.
fn walk_flags() -> OFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let access = OFlags::PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let access = OFlags::RDONLY;
    access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A folder reached without a link, and one name in it: where the last component of a path
/// is looked at, opened, linked or removed.
#[derive(Debug)]
pub struct InFolder {
    pub dir: OwnedFd,
    pub name: OsString,
    /// The whole path, for messages.
    pub path: PathBuf,
}

/// Walks to the folder holding `path`'s last component, refusing a link anywhere on the way.
/// A relative path starts at the working directory (the working directory's own path is not
/// checked: it is where the user ran the command from).
pub fn parent(path: &Path) -> Result<InFolder, NoFollowError> {
    refuse_parent_components(path)?;
    let mut components = path.components().peekable();
    let start = if path.is_absolute() {
        components.next();
        "/"
    } else {
        "."
    };
    let mut dir = rustix::fs::openat(CWD, start, walk_flags(), Mode::empty())
        .map_err(|errno| system(path, errno))?;
    let mut walked = PathBuf::from(start);
    while let Some(component) = components.next() {
        let name = match component {
            Component::Normal(name) => name,
            _ => continue,
        };
        walked.push(name);
        if components.peek().is_none() {
            return Ok(InFolder {
                dir,
                name: name.to_os_string(),
                path: path.to_path_buf(),
            });
        }
        dir = match rustix::fs::openat(&dir, name, walk_flags(), Mode::empty()) {
            Ok(next) => next,
            Err(errno) => return Err(refused_step(&dir, name, &walked, path, errno)),
        };
    }
    Err(NoFollowError::Missing {
        path: path.to_path_buf(),
    })
}

/// Why opening the folder `name` (at `walked`) on the way to `path` failed, in our terms.
fn refused_step(
    dir: &OwnedFd,
    name: &OsStr,
    walked: &Path,
    path: &Path,
    errno: Errno,
) -> NoFollowError {
    match errno {
        Errno::NOENT => NoFollowError::Missing {
            path: path.to_path_buf(),
        },
        // A link (refused by O_NOFOLLOW: ELOOP, or ENOTDIR with O_PATH) or something that is
        // not a folder: look at what it is, without following it.
        Errno::LOOP | Errno::NOTDIR => {
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => {
                    NoFollowError::Link {
                        path: path.to_path_buf(),
                        link: walked.to_path_buf(),
                    }
                }
                // A folder on the way replaced by a file: the path is gone.
                _ => NoFollowError::Missing {
                    path: path.to_path_buf(),
                },
            }
        }
        other => system(path, other),
    }
}

/// `..` could lead out of the folder a path names; the agent's paths never have it.
fn refuse_parent_components(path: &Path) -> Result<(), NoFollowError> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(NoFollowError::ParentComponent {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn system(path: &Path, errno: Errno) -> NoFollowError {
    NoFollowError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(errno),
    }
}

/// What is at `path` itself (a link is reported as a link, never followed; a link on the way
/// is an error).
pub fn lstat(path: &Path) -> Result<Entry, NoFollowError> {
    if path == Path::new("/") {
        let stat = rustix::fs::stat("/").map_err(|errno| system(path, errno))?;
        return Ok(Entry::of(&stat));
    }
    let at = parent(path)?;
    match rustix::fs::statat(&at.dir, &at.name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Entry::of(&stat)),
        Err(Errno::NOENT | Errno::NOTDIR) => Err(NoFollowError::Missing {
            path: path.to_path_buf(),
        }),
        Err(errno) => Err(system(path, errno)),
    }
}

/// Opens the regular file at `path` for reading. Refuses a link anywhere in the path, and
/// anything but a regular file, without blocking: a named pipe is opened non-blocking, seen
/// for what it is by `fstat`, and closed again. The file returned reads normally (blocking).
pub fn open_file(path: &Path) -> Result<File, NoFollowError> {
    let at = parent(path)?;
    open_in(&at)
}

/// [`open_file`] for a name in a folder already reached.
pub fn open_in(at: &InFolder) -> Result<File, NoFollowError> {
    let path = &at.path;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&at.dir, &at.name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => {
            return Err(NoFollowError::Missing {
                path: path.to_path_buf(),
            });
        }
        // O_NOFOLLOW refuses a link as the last component with ELOOP (EMLINK on FreeBSD).
        Err(Errno::LOOP | Errno::MLINK) => {
            return Err(NoFollowError::Link {
                path: path.to_path_buf(),
                link: path.to_path_buf(),
            });
        }
        // Opening a socket.
        Err(Errno::NXIO | Errno::OPNOTSUPP) => {
            return Err(NoFollowError::NotRegular {
                path: path.to_path_buf(),
                reason: SkipReason::Socket,
            });
        }
        Err(errno) => return Err(system(path, errno)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| system(path, errno))?;
    if let Some(reason) = skip_reason(FileType::from_raw_mode(stat.st_mode)) {
        return Err(NoFollowError::NotRegular {
            path: path.to_path_buf(),
            reason,
        });
    }
    // A regular file ignores O_NONBLOCK on most file systems, but not all network ones: the
    // reads that follow should wait for their data, not fail with EAGAIN.
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|errno| system(path, errno))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|errno| system(path, errno))?;
    Ok(File::from(fd))
}

/// Opens the folder at `path` for listing its entries, refusing a link anywhere in the path.
pub fn open_dir(path: &Path) -> Result<OwnedFd, NoFollowError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if path == Path::new("/") {
        return rustix::fs::openat(CWD, "/", flags, Mode::empty())
            .map_err(|errno| system(path, errno));
    }
    let at = parent(path)?;
    match rustix::fs::openat(&at.dir, &at.name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(NoFollowError::Missing {
            path: path.to_path_buf(),
        }),
        Err(errno @ (Errno::LOOP | Errno::NOTDIR | Errno::MLINK)) => {
            match rustix::fs::statat(&at.dir, &at.name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => match skip_reason(FileType::from_raw_mode(stat.st_mode)) {
                    Some(SkipReason::Symlink) => Err(NoFollowError::Link {
                        path: path.to_path_buf(),
                        link: path.to_path_buf(),
                    }),
                    Some(SkipReason::Directory) => Err(system(path, errno)),
                    Some(reason) => Err(NoFollowError::NotRegular {
                        path: path.to_path_buf(),
                        reason,
                    }),
                    None => Err(NoFollowError::NotRegular {
                        path: path.to_path_buf(),
                        reason: SkipReason::Other,
                    }),
                },
                Err(_) => Err(NoFollowError::Missing {
                    path: path.to_path_buf(),
                }),
            }
        }
        Err(errno) => Err(system(path, errno)),
    }
}

/// Device and inode of an open file or folder.
pub fn identity(fd: impl AsFd, path: &Path) -> Result<(u64, u64), NoFollowError> {
    let stat = rustix::fs::fstat(fd).map_err(|errno| system(path, errno))?;
    Ok(identity_of(&stat))
}

/// Creates `path` and the folders above it that are missing (as `mkdir -p`), refusing a link
/// anywhere on the way, and returns the folder reached. For done/ and failed/: a link put
/// there must not send the user's files somewhere else.
pub fn create_dirs(path: &Path) -> Result<OwnedFd, NoFollowError> {
    if !path.is_absolute() {
        return Err(NoFollowError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"),
        });
    }
    refuse_parent_components(path)?;
    let mut dir = rustix::fs::openat(CWD, "/", walk_flags(), Mode::empty())
        .map_err(|errno| system(path, errno))?;
    let mut walked = PathBuf::from("/");
    for component in path.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        walked.push(name);
        let next = match rustix::fs::openat(&dir, name, walk_flags(), Mode::empty()) {
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(errno) => return Err(system(&walked, errno)),
                }
                rustix::fs::openat(&dir, name, walk_flags(), Mode::empty())
            }
            other => other,
        };
        dir = match next {
            Ok(next) => next,
            Err(errno) => return Err(refused_step(&dir, name, &walked, path, errno)),
        };
    }
    Ok(dir)
}

/// The names in the folder `dir` (opened by [`open_dir`]) with what each is, from the
/// directory entry where the file system says, else from `statat` (never following a link).
/// `.` and `..` are left out.
pub fn list_dir(dir: &OwnedFd, path: &Path) -> Result<Vec<(OsString, ListedKind)>, NoFollowError> {
    let mut reader = rustix::fs::Dir::read_from(dir).map_err(|errno| system(path, errno))?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry.map_err(|errno| system(path, errno))?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let name = OsStr::from_bytes(bytes).to_os_string();
        let kind = match entry.file_type() {
            FileType::Unknown => match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => ListedKind::Is(skip_reason(FileType::from_raw_mode(stat.st_mode))),
                Err(errno) => ListedKind::Unreadable(io::Error::from(errno)),
            },
            known => ListedKind::Is(skip_reason(known)),
        };
        out.push((name, kind));
    }
    Ok(out)
}

/// What a listed name is: `Is(None)` a regular file, `Is(Some(reason))` anything else.
#[derive(Debug)]
pub enum ListedKind {
    Is(Option<SkipReason>),
    Unreadable(io::Error),
}

/// Gives the file `from` the name `to` as well (a hard link), failing with `AlreadyExists`
/// rather than replacing anything. A link at `from` is linked as a link, never followed.
pub fn link(from: &InFolder, to: &InFolder) -> io::Result<()> {
    rustix::fs::linkat(&from.dir, &from.name, &to.dir, &to.name, AtFlags::empty())
        .map_err(io::Error::from)
}

/// Renames `from` to `to` (this replaces what is at `to`: check first).
pub fn rename(from: &InFolder, to: &InFolder) -> io::Result<()> {
    rustix::fs::renameat(&from.dir, &from.name, &to.dir, &to.name).map_err(io::Error::from)
}

/// Removes the name `at` (not a folder).
pub fn remove(at: &InFolder) -> io::Result<()> {
    rustix::fs::unlinkat(&at.dir, &at.name, AtFlags::empty()).map_err(io::Error::from)
}

/// What is at the name `at`, not following it.
pub fn lstat_in(at: &InFolder) -> Result<Entry, NoFollowError> {
    match rustix::fs::statat(&at.dir, &at.name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Entry::of(&stat)),
        Err(Errno::NOENT | Errno::NOTDIR) => Err(NoFollowError::Missing {
            path: at.path.clone(),
        }),
        Err(errno) => Err(system(&at.path, errno)),
    }
}

/// Whether a regular file is at `path`, reached without a link.
pub fn is_regular_file(path: &Path) -> bool {
    matches!(lstat(path), Ok(Entry { skip: None, .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        // The walk refuses links anywhere, and the temp dir's own path may hold one (macOS).
        let real = std::fs::canonicalize(dir.path()).unwrap();
        (dir, real)
    }

    fn mkfifo(path: &Path) -> bool {
        std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn a_regular_file_opens_and_reads() {
        let (_guard, root) = temp();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/clip.mov"), b"bytes").unwrap();
        let mut text = String::new();
        open_file(&root.join("sub/clip.mov"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "bytes");
        let entry = lstat(&root.join("sub/clip.mov")).unwrap();
        assert_eq!((entry.skip, entry.size), (None, 5));
        assert_eq!(
            lstat(&root.join("sub")).unwrap().skip,
            Some(SkipReason::Directory)
        );
    }

    #[test]
    fn a_link_in_any_component_is_refused_not_followed() {
        let (_guard, root) = temp();
        let private = root.join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("clip.mov"), b"secret").unwrap();
        std::fs::create_dir_all(root.join("in")).unwrap();
        symlink(&private, root.join("in/sub")).unwrap();
        symlink(private.join("clip.mov"), root.join("in/direct.mov")).unwrap();

        let through = root.join("in/sub/clip.mov");
        for result in [
            open_file(&through).map(|_| ()),
            lstat(&through).map(|_| ()),
            parent(&through).map(|_| ()),
        ] {
            match result {
                Err(NoFollowError::Link { link, .. }) => assert_eq!(link, root.join("in/sub")),
                other => panic!("expected a link error, got {other:?}"),
            }
        }
        assert!(matches!(
            open_file(&root.join("in/direct.mov")),
            Err(NoFollowError::Link { .. })
        ));
        // lstat of the link itself says what it is.
        assert_eq!(
            lstat(&root.join("in/direct.mov")).unwrap().skip,
            Some(SkipReason::Symlink)
        );
        assert!(!is_regular_file(&through));
        assert!(matches!(
            open_dir(&root.join("in/sub")),
            Err(NoFollowError::Link { .. })
        ));
        assert!(matches!(
            create_dirs(&root.join("in/sub/deeper")),
            Err(NoFollowError::Link { .. })
        ));
        assert!(
            !private.join("deeper").exists(),
            "nothing made through the link"
        );
    }

    #[test]
    fn a_named_pipe_is_refused_at_once_without_blocking() {
        let (_guard, root) = temp();
        let fifo = root.join("clip.mov");
        if !mkfifo(&fifo) {
            eprintln!("mkfifo unavailable, nothing to check");
            return;
        }
        let start = Instant::now();
        let err = open_file(&fifo).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                err,
                NoFollowError::NotRegular {
                    reason: SkipReason::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("named pipe"), "{err}");
    }

    #[test]
    fn missing_paths_and_parent_components() {
        let (_guard, root) = temp();
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(matches!(
            lstat(&root.join("gone.mov")),
            Err(NoFollowError::Missing { .. })
        ));
        assert!(matches!(
            open_file(&root.join("gone/clip.mov")),
            Err(NoFollowError::Missing { .. })
        ));
        // A folder on the way replaced by a file: the path is gone.
        assert!(matches!(
            lstat(&root.join("file/clip.mov")),
            Err(NoFollowError::Missing { .. })
        ));
        assert!(matches!(
            open_file(&root.join("a/../file")),
            Err(NoFollowError::ParentComponent { .. })
        ));
    }

    #[test]
    fn create_dirs_makes_what_is_missing() {
        let (_guard, root) = temp();
        let deep = root.join("done/2026/show");
        let fd = create_dirs(&deep).unwrap();
        assert!(deep.is_dir());
        assert_eq!(
            identity(&fd, &deep).unwrap(),
            lstat(&deep).unwrap().identity
        );
        create_dirs(&deep).unwrap();
    }

    #[test]
    fn list_dir_names_every_entry_without_following() {
        let (_guard, root) = temp();
        std::fs::write(root.join("a.mov"), b"x").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink("a.mov", root.join("link.mov")).unwrap();
        let dir = open_dir(&root).unwrap();
        let mut listed: Vec<(String, Option<SkipReason>)> = list_dir(&dir, &root)
            .unwrap()
            .into_iter()
            .map(|(name, kind)| match kind {
                ListedKind::Is(skip) => (name.to_string_lossy().into_owned(), skip),
                ListedKind::Unreadable(e) => panic!("{e}"),
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed,
            [
                ("a.mov".to_string(), None),
                ("link.mov".to_string(), Some(SkipReason::Symlink)),
                ("sub".to_string(), Some(SkipReason::Directory)),
            ]
        );
    }
}
