//! The last stage: moves a file whose outcome is recorded into done/ or failed/ (keeping its
//! path relative to the watched folder, never overwriting anything) and writes its sidecar
//! `<file name>.upload.json` beside it.
//!
//! The user's file is sacred: every failure here leaves the source where it was, and a move
//! across file systems removes the source only after the copy is complete and on disk. Such a
//! copy can take minutes; it stops between pieces when the agent stops (the move is done again
//! at the next start), and callers run it off any loop that must keep answering.
//!
//! This file holds the moves; `sidecar` writes `<file name>.upload.json` (and adds to it what
//! became of the video's transcoding), and `recover`
//! completes a job's move (also one a kill interrupted) and clears our temp files at start.

mod recover;
mod sidecar;

pub use recover::{Finished, finish_job_file_with, remove_stale_temps};
pub use sidecar::{
    Sidecar, SidecarUpdateError, TranscodingRecord, add_transcoding, sidecar_path, write_sidecar,
};

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::escape::escaped;
use crate::nofollow::{self, InFolder, NoFollowError};

/// The sidecar's suffix, appended to the moved file's whole name.
pub const SIDECAR_SUFFIX: &str = ".upload.json";

/// The suffix of every temporary file hotfolder writes in done/ and failed/ (a copy across
/// file systems, a sidecar being written); such files also start with `.`, so watchers ignore
/// them, and only names with both are ever removed as stale.
pub const TEMP_SUFFIX: &str = ".hotfolder-tmp";

/// How many `name (n)` suffixes to try before giving up; only reachable if something creates
/// names as fast as we pick them.
const MAX_SUFFIX: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error(
        "could not find a free name for {} under {}",
        escaped(rel_path),
        escaped(base)
    )]
    Destination {
        base: PathBuf,
        rel_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "could not move {} to {} (the file was left where it was)",
        escaped(src),
        escaped(dest)
    )]
    Move {
        src: PathBuf,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write the sidecar {}", escaped(path))]
    Sidecar {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `base/rel_path` if free, else `stem (1).ext`, `stem (2).ext`…; a name also counts as taken
/// when its sidecar `<name>.upload.json` exists (it belongs to an earlier file of that name).
/// Creates the parent dirs.
pub fn free_destination(base: &Path, rel_path: &Path) -> io::Result<PathBuf> {
    if !is_plain(rel_path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a relative path to a file inside the folder",
                escaped(rel_path)
            ),
        ));
    }
    let wanted = base.join(rel_path);
    let (Some(parent), Some(name)) = (wanted.parent(), wanted.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", escaped(rel_path)),
        ));
    };
    // Never through a link: one put in done/ must not send the user's file elsewhere.
    nofollow::create_dirs(parent).map_err(NoFollowError::into_io)?;
    for n in 0..=MAX_SUFFIX {
        let candidate = numbered(&wanted, n);
        if !is_taken(&candidate)? && !is_taken(&sidecar_path(&candidate))? {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "every name up to \"{}\" ({MAX_SUFFIX}) is taken",
            escaped(name)
        ),
    ))
}

/// Only plain names: an absolute path or `..` would put the file outside the base folder.
fn is_plain(rel_path: &Path) -> bool {
    !rel_path.as_os_str().is_empty()
        && rel_path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// `wanted` itself for `n == 0`, else `stem (n).ext` beside it; a stem that would make the name
/// too long for the file system is shortened the way [`fit_name`] does (its start, `~` and a
/// hash), so a 252-byte name that is taken still gets a `(1)` that fits.
pub(crate) fn numbered(wanted: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return wanted.to_path_buf();
    }
    let name = Path::new(wanted.file_name().unwrap_or_default());
    let stem = name.file_stem().unwrap_or(name.as_os_str());
    let mut suffix = OsString::from(format!(" ({n})"));
    if let Some(extension) = name.extension() {
        suffix.push(".");
        suffix.push(extension);
    }
    wanted.with_file_name(fit_name("", stem, &suffix))
}

/// The name an earlier move of `src` already gave it, if that move was killed between putting
/// the file at its destination and removing the source: the file then is in both places, and
/// moving it "again" would make a second copy under `stem (1).ext`. Among the taken names
/// [`free_destination`] walks, still without a sidecar (the sidecar is only written after the
/// source is gone, so a file that has one is someone else's), it is the source's own inode (a
/// link), or a complete copy: same size and modification time (a copy keeps it) and the same
/// bytes, compared in full (rare, and only after a kill). A comparison cut short by `stop`
/// counts as no match. The source is looked at and read without following a link.
fn interrupted_move(
    src: &InFolder,
    base: &Path,
    rel_path: &Path,
    stop: &CancellationToken,
) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if !is_plain(rel_path) {
        return None;
    }
    let source = nofollow::lstat_in(src).ok()?;
    let wanted = base.join(rel_path);
    for n in 0..=MAX_SUFFIX {
        let candidate = numbered(&wanted, n);
        let sidecar = sidecar_path(&candidate);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) => {
                if sidecar.exists() {
                    continue;
                }
                let linked = (meta.dev(), meta.ino()) == source.identity;
                let mtime_ns =
                    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                let copied = !linked
                    && meta.is_file()
                    && source.skip.is_none()
                    && meta.len() == source.size
                    && mtime_ns == source.mtime_ns
                    && same_bytes(src, &candidate, stop).unwrap_or(false);
                if linked || copied {
                    return Some(candidate);
                }
            }
            // The first free name ends the walk: the earlier move cannot have gone further.
            Err(_) if !sidecar.exists() => return None,
            Err(_) => {}
        }
    }
    None
}

/// Whether two regular files hold the same bytes (`a` already known to be as long as `b`).
/// Neither is followed if it is a symlink, nor waited on if it is a FIFO.
fn same_bytes(a: &InFolder, b: &Path, stop: &CancellationToken) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let open = |path: &Path| {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)?;
        if file.metadata()?.is_file() {
            Ok(file)
        } else {
            Err(io::Error::other("not a regular file"))
        }
    };
    let mut a = nofollow::open_in(a).map_err(NoFollowError::into_io)?;
    let mut b = open(b)?;
    let mut left = vec![0u8; 1024 * 1024];
    let mut right = vec![0u8; 1024 * 1024];
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        let n = read_full(&mut a, &mut left)?;
        let m = read_full(&mut b, &mut right)?;
        if n != m || left[..n] != right[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buffer` is full or the file ends; how many bytes were read.
fn read_full(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether anything (a dangling symlink included) has this name.
fn is_taken(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves `src` to a free name under `base/rel_path` (see [`free_destination`]) and returns
/// where it went. Never overwrites: within a file system the primitive is a hard link (which
/// fails if the name exists) and then removing the source; where hard links are not allowed,
/// a rename to a name just checked to be free. Across file systems see [`copy_then_remove`].
/// On any failure the source is untouched and nothing is left at the destination. A move that
/// was killed between the link and the removal of the source is completed, not repeated.
///
/// The source is reached without following a link in any component of its path, and linked,
/// renamed, copied and removed relative to the folder it is in (see `nofollow`): a folder on
/// the way swapped for a link meanwhile makes the move fail, it never moves what the link
/// points to. The destination folder is reached the same way.
/// A copy stops when `stop` is cancelled (an `Interrupted` error; the source stays).
pub fn move_without_overwrite(
    src: &Path,
    base: &Path,
    rel_path: &Path,
    stop: &CancellationToken,
) -> Result<PathBuf, FinishError> {
    let refused = |dest: PathBuf, err: NoFollowError| FinishError::Move {
        src: src.to_path_buf(),
        dest,
        source: err.into_io(),
    };
    let source = nofollow::parent(src).map_err(|e| refused(base.join(rel_path), e))?;
    // Only the regular file that was uploaded leaves the folder; a link or a pipe put in its
    // place is not moved.
    match nofollow::lstat_in(&source) {
        Ok(entry) if entry.skip.is_none() => {}
        Ok(entry) => {
            let reason = entry.skip.unwrap_or(crate::ready::SkipReason::Other);
            let err = NoFollowError::NotRegular {
                path: src.to_path_buf(),
                reason,
            };
            return Err(refused(base.join(rel_path), err));
        }
        Err(err) => return Err(refused(base.join(rel_path), err)),
    }
    if let Some(dest) = interrupted_move(&source, base, rel_path, stop) {
        return match nofollow::remove(&source) {
            Ok(()) => {
                sync_dirs(src, &dest);
                Ok(dest)
            }
            Err(source) => {
                // Both names hold the same bytes (one inode, or a complete copy): dropping the
                // new one loses nothing and leaves the file in exactly one place, where it was.
                let _ = fs::remove_file(&dest);
                Err(FinishError::Move {
                    src: src.to_path_buf(),
                    dest,
                    source,
                })
            }
        };
    }
    // Each round loses at most one name to a concurrent creator; bounded so a pathological
    // directory cannot loop us forever.
    for _ in 0..64 {
        let dest = free_destination(base, rel_path).map_err(|source| FinishError::Destination {
            base: base.to_path_buf(),
            rel_path: rel_path.to_path_buf(),
            source,
        })?;
        let move_error = |source| FinishError::Move {
            src: src.to_path_buf(),
            dest: dest.clone(),
            source,
        };
        let target = destination_in_folder(&dest).map_err(move_error)?;
        match nofollow::link(&source, &target) {
            Ok(()) => {
                if let Err(source) = nofollow::remove(&source) {
                    // Undo, so the file is in exactly one place: where it was.
                    let _ = nofollow::remove(&target);
                    return Err(move_error(source));
                }
                sync_dirs(src, &dest);
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                match copy_without_overwrite(&source, &dest, stop) {
                    Ok(()) => return Ok(dest),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(source) => return Err(move_error(source)),
                }
            }
            // No hard links here (FAT, SMB, `fs.protected_hardlinks` on a file we do not own):
            // rename, after checking once more that the name is free.
            Err(_) => {
                if is_taken(&dest).map_err(move_error)? {
                    continue;
                }
                match nofollow::rename(&source, &target) {
                    Ok(()) => {
                        sync_dirs(src, &dest);
                        return Ok(dest);
                    }
                    Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                        match copy_without_overwrite(&source, &dest, stop) {
                            Ok(()) => return Ok(dest),
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                            Err(source) => return Err(move_error(source)),
                        }
                    }
                    Err(source) => return Err(move_error(source)),
                }
            }
        }
    }
    Err(FinishError::Move {
        src: src.to_path_buf(),
        dest: base.join(rel_path),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every free name was taken before the file could be moved there",
        ),
    })
}

/// The folder `dest` goes into, reached without a link, and its name there.
fn destination_in_folder(dest: &Path) -> io::Result<InFolder> {
    let (dir, name) = split(dest)?;
    Ok(InFolder {
        dir: nofollow::create_dirs(dir).map_err(NoFollowError::into_io)?,
        name: name.to_os_string(),
        path: dest.to_path_buf(),
    })
}

/// The move across file systems: copies `src` to a hidden temporary name beside `dest`,
/// fsyncs it, puts it at `dest` without overwriting (an existing `dest` is an `AlreadyExists`
/// error), fsyncs the directory, and only then removes `src`. On any failure the copy is
/// removed and `src` is untouched.
#[cfg(test)] // the agent's moves call copy_without_overwrite
pub fn copy_then_remove(src: &Path, dest: &Path) -> Result<(), FinishError> {
    let error = |source| FinishError::Move {
        src: src.to_path_buf(),
        dest: dest.to_path_buf(),
        source,
    };
    let source = nofollow::parent(src).map_err(|e| error(e.into_io()))?;
    copy_without_overwrite(&source, dest, &CancellationToken::new()).map_err(error)
}

fn copy_without_overwrite(src: &InFolder, dest: &Path, stop: &CancellationToken) -> io::Result<()> {
    let (dir, name) = split(dest)?;
    let temp = dir.join(temp_name(name));
    let result = copy_to_temp(src, &temp, stop).and_then(|()| place_without_overwrite(&temp, dest));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // The copy must be durable before the only other copy goes.
    let after_placing = sync_dir(dir).and_then(|()| nofollow::remove(src));
    if let Err(e) = after_placing {
        let _ = fs::remove_file(dest);
        return Err(e);
    }
    if let Some(src_dir) = src.path.parent() {
        let _ = sync_dir(src_dir);
    }
    Ok(())
}

/// How much is copied between two looks at the stop signal: a second or less at NAS speeds.
const COPY_PIECE: u64 = 16 * 1024 * 1024;

fn copy_to_temp(src: &InFolder, temp: &Path, stop: &CancellationToken) -> io::Result<()> {
    // Non-blocking and checked to be a regular file once opened: a pipe swapped in is refused.
    let from = nofollow::open_in(src).map_err(NoFollowError::into_io)?;
    let metadata = from.metadata()?;
    let mut to = OpenOptions::new().write(true).create_new(true).open(temp)?;
    tracing::info!(
        file = %escaped(&src.path),
        to = %temp.parent().unwrap_or(temp).display(),
        size = metadata.len(),
        "copying to another file system; the file stays where it is until the copy is complete"
    );
    #[cfg(debug_assertions)]
    slow_copy_for_tests(stop)?;
    loop {
        if stop.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the copy stopped because hotfolder is stopping",
            ));
        }
        // `Take<&File>` keeps std's in-kernel copy (copy_file_range, sendfile) where it works.
        if io::copy(&mut (&from).take(COPY_PIECE), &mut to)? == 0 {
            break;
        }
    }
    // Keep what an editor sees in a file browser: permissions and modification time.
    to.set_permissions(metadata.permissions())?;
    if let Ok(modified) = metadata.modified() {
        to.set_modified(modified)?;
    }
    to.sync_all()
}

/// Debug builds only: `HOTFOLDER_TEST_SLOW_COPY=<ms>` makes every copy across file systems
/// take that much longer (a NAS in a test), still stopping at once when `stop` is cancelled.
#[cfg(debug_assertions)]
fn slow_copy_for_tests(stop: &CancellationToken) -> io::Result<()> {
    let Some(ms) = std::env::var("HOTFOLDER_TEST_SLOW_COPY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        if stop.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the copy stopped because hotfolder is stopping",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Gives `from` the name `to`, failing with `AlreadyExists` rather than replacing anything.
fn place_without_overwrite(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            if is_taken(to)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", escaped(to)),
                ));
            }
            fs::rename(from, to)
        }
    }
}

/// Longest file name (in bytes) that common file systems accept.
pub(crate) const NAME_MAX: usize = 255;

/// `prefix + core + suffix`, with `core` shortened to its start plus `~` and 12 hex digits of
/// its sha256 when the whole would exceed [`NAME_MAX`].
pub(crate) fn fit_name(
    prefix: &str,
    core: &std::ffi::OsStr,
    suffix: impl AsRef<std::ffi::OsStr>,
) -> OsString {
    let suffix = suffix.as_ref();
    let bytes = core.as_encoded_bytes();
    let mut out = OsString::from(prefix);
    if prefix.len() + bytes.len() + suffix.len() <= NAME_MAX {
        out.push(core);
    } else {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        let mut keep = NAME_MAX.saturating_sub(prefix.len() + suffix.len() + 13);
        // Cut at a character boundary when the name is UTF-8.
        while keep > 0 && std::str::from_utf8(&bytes[..keep]).is_err() && core.to_str().is_some() {
            keep -= 1;
        }
        out.push(String::from_utf8_lossy(&bytes[..keep.min(bytes.len())]).as_ref());
        out.push(format!("~{}", &digest[..12]));
    }
    out.push(suffix);
    out
}

/// `dir` and the file name of `path`, or an error when it names no file.
pub(crate) fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", escaped(path)),
        )),
    }
}

/// A hidden, unique name beside the target: hidden so watchers (ours included, by the default
/// `.*` exclude) ignore it, unique so two writers never share one.
///
/// It ends with the agent's tag (see `shared_folder::AgentId::tag`) where an agent runs, so
/// that in a shared folder one agent's start clears its own leftovers only, never another's
/// copy in progress.
fn temp_name(name: &std::ffi::OsStr) -> OsString {
    let suffix = format!(
        ".{}{}{TEMP_SUFFIX}",
        uuid::Uuid::new_v4().simple(),
        agent_suffix()
    );
    fit_name(".", name, &suffix)
}

/// `.<tag>` of the agent this process runs as (nothing outside `run`): the end of its temp
/// names, before [`TEMP_SUFFIX`].
pub(crate) fn agent_suffix() -> String {
    crate::shared_folder::this_agent()
        .map(|agent| format!(".{}", agent.tag()))
        .unwrap_or_default()
}

/// Makes a rename or removal in `dir` durable. Opened as a folder only, and non-blocking: a
/// named pipe someone put in the folder's place must not hang the thread that finishes jobs.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

/// Best effort after a move that already happened: the move stands even if this fails, and
/// reporting an error would make the caller think the file was not moved.
fn sync_dirs(src: &Path, dest: &Path) {
    for dir in [dest.parent(), src.parent()].into_iter().flatten() {
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(dir = %escaped(dir), error = %e, "could not fsync directory after a move");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chain;
    use proptest::prelude::*;
    use std::fs::File;

    pub(in crate::finish) fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    pub(in crate::finish) fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn taken_names_get_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let first = free_destination(base, Path::new("clip.mov")).unwrap();
        assert_eq!(first, base.join("clip.mov"));
        write(&first, b"1");
        let second = free_destination(base, Path::new("clip.mov")).unwrap();
        assert_eq!(second, base.join("clip (1).mov"));
        write(&second, b"2");
        assert_eq!(
            free_destination(base, Path::new("clip.mov")).unwrap(),
            base.join("clip (2).mov")
        );
    }

    #[test]
    fn names_without_or_with_many_dots() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        write(&base.join("README"), b"x");
        assert_eq!(
            free_destination(base, Path::new("README")).unwrap(),
            base.join("README (1)")
        );
        write(&base.join("a.b.mov"), b"x");
        assert_eq!(
            free_destination(base, Path::new("a.b.mov")).unwrap(),
            base.join("a.b (1).mov")
        );
    }

    #[test]
    fn a_leftover_sidecar_takes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        write(&base.join("clip.mov.upload.json"), b"{}");
        assert_eq!(
            free_destination(base, Path::new("clip.mov")).unwrap(),
            base.join("clip (1).mov")
        );
    }

    #[test]
    fn nested_paths_create_their_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("done");
        let dest = free_destination(&base, Path::new("2025/show/ep1.mxf")).unwrap();
        assert_eq!(dest, base.join("2025/show/ep1.mxf"));
        assert!(base.join("2025/show").is_dir());
        for bad in ["", "/etc/passwd", "../escape.mov", "a/../../b.mov"] {
            assert!(free_destination(&base, Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn move_within_a_file_system_leaves_no_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("inbox/show/clip.mov");
        write(&src, b"video bytes");
        let base = dir.path().join("done");
        write(&base.join("show/clip.mov"), b"an earlier clip");

        let dest = move_without_overwrite(
            &src,
            &base,
            Path::new("show/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, base.join("show/clip (1).mov"));
        assert!(!src.exists());
        assert_eq!(fs::read(&dest).unwrap(), b"video bytes");
        assert_eq!(
            fs::read(base.join("show/clip.mov")).unwrap(),
            b"an earlier clip"
        );
    }

    /// A kill between `link(src, dest)` and `unlink(src)` leaves the file under both names;
    /// the retry after the restart must finish that move, not make `clip (2).mov`.
    #[cfg(unix)]
    #[test]
    fn a_move_killed_between_link_and_unlink_is_completed_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("inbox/show/clip.mov");
        write(&src, b"video bytes");
        let base = dir.path().join("done");
        write(&base.join("show/clip.mov"), b"an earlier clip");
        write(&base.join("show/clip.mov.upload.json"), b"{}");
        fs::hard_link(&src, base.join("show/clip (1).mov")).unwrap();

        let dest = move_without_overwrite(
            &src,
            &base,
            Path::new("show/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, base.join("show/clip (1).mov"));
        assert!(!src.exists());
        assert_eq!(fs::read(&dest).unwrap(), b"video bytes");
        assert_eq!(
            names_in(&base.join("show")),
            ["clip (1).mov", "clip.mov", "clip.mov.upload.json"]
        );
    }

    /// A folder on the way to the source swapped for a link: the move refuses, and what the
    /// link points to stays where it is.
    #[test]
    fn a_source_reached_through_a_link_is_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        write(&root.join("private/clip.mov"), b"someone else's");
        fs::create_dir_all(root.join("inbox")).unwrap();
        std::os::unix::fs::symlink(root.join("private"), root.join("inbox/sub")).unwrap();
        let base = root.join("done");

        let err = move_without_overwrite(
            &root.join("inbox/sub/clip.mov"),
            &base,
            Path::new("sub/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("inbox/sub/clip.mov"), "{err}");
        assert!(chain(&err).contains("symbolic link"), "{}", chain(&err));
        assert_eq!(
            fs::read(root.join("private/clip.mov")).unwrap(),
            b"someone else's"
        );
        assert!(!base.join("sub/clip.mov").exists());
    }

    /// A link put in done/ does not send the user's file (or folders) somewhere else.
    #[test]
    fn a_link_in_done_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let src = root.join("inbox/show/clip.mov");
        write(&src, b"video bytes");
        fs::create_dir_all(root.join("elsewhere")).unwrap();
        fs::create_dir_all(root.join("done")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("done/show")).unwrap();

        let err = move_without_overwrite(
            &src,
            &root.join("done"),
            Path::new("show/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(chain(&err).contains("symbolic link"), "{}", chain(&err));
        assert_eq!(fs::read(&src).unwrap(), b"video bytes");
        assert!(names_in(&root.join("elsewhere")).is_empty());
    }

    /// A move across file systems killed after the copy was in place, before the source was
    /// removed: the next try finishes it instead of making `clip (1).mov`. A file of the same
    /// size and time but other bytes is someone else's, and the move goes on beside it.
    #[test]
    fn a_copy_killed_before_the_source_was_removed_is_completed_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("inbox/clip.mov");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        write(&src, &bytes);
        let mtime = fs::metadata(&src).unwrap().modified().unwrap();
        let base = dir.path().join("done");
        let copy = base.join("clip.mov");
        write(&copy, &bytes);
        File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_modified(mtime)
            .unwrap();

        let dest = move_without_overwrite(
            &src,
            &base,
            Path::new("clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, copy);
        assert!(!src.exists());
        assert_eq!(names_in(&base), ["clip.mov"]);

        // Same size and time, one byte different: not the same file.
        let mut other = bytes.clone();
        other[2_500_000] ^= 1;
        write(&src, &other);
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let dest = move_without_overwrite(
            &src,
            &base,
            Path::new("clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, base.join("clip (1).mov"));
        assert_eq!(fs::read(&dest).unwrap(), other);
        assert_eq!(fs::read(&copy).unwrap(), bytes);
    }

    /// The same inode with a sidecar was delivered before (a user hard-linked it back into
    /// the folder): it is not an interrupted move, and it stays as it is.
    #[cfg(unix)]
    #[test]
    fn a_delivered_hard_link_is_not_mistaken_for_an_interrupted_move() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("done");
        let delivered = base.join("clip.mov");
        write(&delivered, b"video bytes");
        write(&sidecar_path(&delivered), b"{}");
        let src = dir.path().join("inbox/clip.mov");
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        fs::hard_link(&delivered, &src).unwrap();

        let dest = move_without_overwrite(
            &src,
            &base,
            Path::new("clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, base.join("clip (1).mov"));
        assert!(!src.exists());
        assert_eq!(
            names_in(&base),
            ["clip (1).mov", "clip.mov", "clip.mov.upload.json"]
        );
    }

    #[test]
    fn syncing_a_folder_replaced_by_a_named_pipe_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        let fifo = dir.path().join("show");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            eprintln!("mkfifo unavailable, nothing to check");
            return;
        }
        assert!(sync_dir(&fifo).is_err());
    }

    #[test]
    fn copy_then_remove_moves_the_bytes_and_keeps_the_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("clip.mov");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        write(&src, &bytes);
        let mtime =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let dest = dir.path().join("done/clip.mov");
        fs::create_dir_all(dest.parent().unwrap()).unwrap();

        copy_then_remove(&src, &dest).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert_eq!(fs::metadata(&dest).unwrap().modified().unwrap(), mtime);
        assert_eq!(names_in(&dir.path().join("done")), ["clip.mov"]);
    }

    #[test]
    fn copy_then_remove_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("clip.mov");
        write(&src, b"new");
        let dest = dir.path().join("done/clip.mov");
        write(&dest, b"old");

        let err = copy_then_remove(&src, &dest).unwrap_err();
        assert!(
            matches!(&err, FinishError::Move { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read(&src).unwrap(), b"new");
        assert_eq!(names_in(&dir.path().join("done")), ["clip.mov"]);
    }

    #[test]
    fn failed_copy_leaves_source_and_no_partial_file() {
        // A directory as the source: opening works, reading fails midway, as a disk error would.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("inbox/weird.mov");
        fs::create_dir_all(&src).unwrap();
        let done = dir.path().join("done");
        fs::create_dir_all(&done).unwrap();

        let err = copy_then_remove(&src, &done.join("weird.mov")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&src.display().to_string()), "{message}");
        assert!(
            message.contains(&done.join("weird.mov").display().to_string()),
            "{message}"
        );
        assert!(src.is_dir());
        assert!(
            names_in(&done).is_empty(),
            "left behind: {:?}",
            names_in(&done)
        );
    }

    #[cfg(unix)]
    #[test]
    fn failed_move_into_read_only_dir_leaves_the_source() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("clip.mov");
        write(&src, b"precious");
        let done = dir.path().join("done");
        fs::create_dir_all(&done).unwrap();
        fs::set_permissions(&done, fs::Permissions::from_mode(0o555)).unwrap();
        // Root (or CAP_DAC_OVERRIDE) ignores permission bits, so the move would just succeed.
        if fs::write(done.join("probe"), b"").is_ok() {
            fs::set_permissions(&done, fs::Permissions::from_mode(0o755)).unwrap();
            crate::test_skipped(format_args!(
                "running as root, which ignores the read-only permission this test relies on"
            ));
            return;
        }

        let result = move_without_overwrite(
            &src,
            &done,
            Path::new("clip.mov"),
            &CancellationToken::new(),
        );
        fs::set_permissions(&done, fs::Permissions::from_mode(0o755)).unwrap();
        let err = result.unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&src.display().to_string()), "{message}");
        assert!(message.contains(&done.display().to_string()), "{message}");
        assert_eq!(fs::read(&src).unwrap(), b"precious");
        assert!(names_in(&done).is_empty());
    }

    /// Makes a directory immutable (`chattr +i`) for the life of the guard: even root cannot
    /// remove files from it, which is how these tests make "removing the source" fail.
    struct ImmutableDir(PathBuf);

    impl ImmutableDir {
        fn set(dir: &Path) -> Option<ImmutableDir> {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| ImmutableDir(dir.to_path_buf()))
        }
    }

    impl Drop for ImmutableDir {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }

    #[test]
    fn source_that_cannot_be_removed_stays_and_leaves_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let src = inbox.join("clip.mov");
        write(&src, b"precious");
        let done = dir.path().join("done");
        fs::create_dir_all(&done).unwrap();
        let Some(_immutable) = ImmutableDir::set(&inbox) else {
            crate::test_skipped(format_args!(
                "`chattr +i` is unavailable here (needs root and a file system with the immutable flag)"
            ));
            return;
        };

        // Within the file system: the hard link succeeds, removing the source does not.
        let err = move_without_overwrite(
            &src,
            &done,
            Path::new("clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&src.display().to_string()),
            "{err}"
        );
        assert_eq!(fs::read(&src).unwrap(), b"precious");
        assert!(
            names_in(&done).is_empty(),
            "left behind: {:?}",
            names_in(&done)
        );

        // The copy branch: the complete copy is removed again.
        let err = copy_then_remove(&src, &done.join("clip.mov")).unwrap_err();
        assert!(matches!(err, FinishError::Move { .. }));
        assert_eq!(fs::read(&src).unwrap(), b"precious");
        assert!(
            names_in(&done).is_empty(),
            "left behind: {:?}",
            names_in(&done)
        );
    }

    /// The real EXDEV branch, when /dev/shm is a different file system than the temp dir.
    #[cfg(unix)]
    #[test]
    fn move_across_file_systems() {
        use std::os::unix::fs::MetadataExt;
        let shm = Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        let other = match tempfile::tempdir_in(shm) {
            Ok(other)
                if fs::metadata(other.path()).unwrap().dev()
                    != fs::metadata(dir.path()).unwrap().dev() =>
            {
                other
            }
            _ => {
                crate::test_skipped(format_args!(
                    "/dev/shm is missing or on the same file system as the temp dir"
                ));
                return;
            }
        };
        let src = dir.path().join("clip.mov");
        write(&src, b"across");
        let dest = move_without_overwrite(
            &src,
            other.path(),
            Path::new("sub/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, other.path().join("sub/clip.mov"));
        assert!(!src.exists());
        assert_eq!(fs::read(&dest).unwrap(), b"across");
        assert_eq!(names_in(&other.path().join("sub")), ["clip.mov"]);

        // And again with the name taken.
        write(&src, b"second");
        let dest = move_without_overwrite(
            &src,
            other.path(),
            Path::new("sub/clip.mov"),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(dest, other.path().join("sub/clip (1).mov"));
        assert_eq!(fs::read(&dest).unwrap(), b"second");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn free_destination_never_returns_a_taken_name(
            taken in proptest::collection::vec((0..6u32, any::<bool>(), any::<bool>()), 0..12),
            name in prop_oneof![Just("clip.mov"), Just("clip"), Just("a.b.mov"), Just(".hidden")],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("done");
            let plain = base.join(name);
            let (stem, ext) = match (plain.file_stem(), plain.extension()) {
                (Some(s), Some(e)) => (s.to_string_lossy().into_owned(), format!(".{}", e.to_string_lossy())),
                (Some(s), None) => (s.to_string_lossy().into_owned(), String::new()),
                _ => unreachable!(),
            };
            for (n, as_sidecar, as_dir) in taken {
                let file = if n == 0 { name.to_string() } else { format!("{stem} ({n}){ext}") };
                let path = if as_sidecar { base.join(format!("{file}.upload.json")) } else { base.join(file) };
                if path.exists() {
                    continue;
                }
                if as_dir {
                    fs::create_dir_all(&path).unwrap();
                } else {
                    write(&path, b"x");
                }
            }
            let dest = free_destination(&base, Path::new(name)).unwrap();
            prop_assert!(!dest.exists());
            prop_assert!(!sidecar_path(&dest).exists());
            prop_assert_eq!(dest.parent(), Some(base.as_path()));
            let dest_name = dest.file_name().unwrap().to_string_lossy().into_owned();
            prop_assert!(dest_name.starts_with(&stem) && dest_name.ends_with(&ext), "{}", dest_name);
        }
    }
}
