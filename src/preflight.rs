//! What `hotfolder upload` checks about each path it is given before anything is sent: the
//! path exists, is a regular file (a folder, named pipe or device is no video), its suffix is
//! one the platform accepts, it is not empty, and it can be read. A path that fails one of
//! these could never be uploaded, and finding out from the platform would leave an empty video
//! behind (the create call comes before the first read), so each is refused here, in words.
//!
//! A symlink named on the command line is followed: the user pointed at it on purpose, and
//! `upload` leaves files where they are. (The agent never follows one in a watched folder.)

use std::io;
use std::path::{Path, PathBuf};

use crate::ready::SkipReason;
use crate::vmpro::api::PLATFORM_SUFFIXES;

/// Why a path cannot be uploaded. None is retryable: each stays until the user changes the
/// file or the command line.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{} is a symbolic link to {}, which does not exist", path.display(), target.display())]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("{} is {kind}, not a video file", path.display())]
    NotAFile { path: PathBuf, kind: SkipReason },
    #[error(
        "{} has no suffix; the platform tells the media type by it and accepts {}",
        path.display(),
        accepted_suffixes()
    )]
    NoSuffix { path: PathBuf },
    #[error(
        "{}: the platform does not accept .{suffix} files; it accepts {}",
        path.display(),
        accepted_suffixes()
    )]
    Suffix { path: PathBuf, suffix: String },
    #[error("{} is empty (0 bytes): nothing to upload", path.display())]
    Empty { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LocalFileError {
    /// What to do about it, in words for the person who typed the command.
    pub fn meaning(&self) -> &'static str {
        match self {
            LocalFileError::Missing { .. } | LocalFileError::DanglingLink { .. } => {
                "check the path for typos"
            }
            LocalFileError::NotAFile { .. } => "give the video files themselves",
            LocalFileError::NoSuffix { .. } | LocalFileError::Suffix { .. } => {
                "export or rename it to a video format the platform accepts"
            }
            LocalFileError::Empty { .. } => "the export may have failed; export it again",
            LocalFileError::Unreadable { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                "you may not read it: check its permissions and those of its folders"
            }
            LocalFileError::Unreadable { .. } => "the file system would not give its content",
        }
    }
}

/// The suffixes the platform accepts, for messages: "mp4, mov, flv, …".
fn accepted_suffixes() -> String {
    PLATFORM_SUFFIXES.join(", ")
}

/// Checks `path` as described in the module documentation; returns its size.
pub fn check_upload_path(path: &Path) -> Result<u64, LocalFileError> {
    let owned = || path.to_path_buf();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        // NotADirectory: a part of the path before the last is a file.
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(match std::fs::read_link(path) {
                Ok(target) => LocalFileError::DanglingLink {
                    path: owned(),
                    target,
                },
                Err(_) => LocalFileError::Missing { path: owned() },
            });
        }
        Err(source) => {
            return Err(LocalFileError::Unreadable {
                path: owned(),
                source,
            });
        }
    };
    if let Some(kind) = SkipReason::of(meta.file_type()) {
        return Err(LocalFileError::NotAFile {
            path: owned(),
            kind,
        });
    }
    match path.extension() {
        None => return Err(LocalFileError::NoSuffix { path: owned() }),
        Some(suffix) => {
            let suffix = suffix.to_string_lossy().to_lowercase();
            if !PLATFORM_SUFFIXES.contains(&suffix.as_str()) {
                return Err(LocalFileError::Suffix {
                    path: owned(),
                    suffix,
                });
            }
        }
    }
    if meta.len() == 0 {
        return Err(LocalFileError::Empty { path: owned() });
    }
    // Opening is the only sure test: permission bits do not tell about ACLs, root, or a
    // network share's own rules. The type was checked above, so this open cannot block.
    std::fs::File::open(path).map_err(|source| LocalFileError::Unreadable {
        path: owned(),
        source,
    })?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("clip.MOV"), b"data").unwrap();
        assert_eq!(check_upload_path(&at("clip.MOV")).unwrap(), 4);

        let missing = check_upload_path(&at("gone.mov")).unwrap_err();
        assert!(
            matches!(missing, LocalFileError::Missing { .. }),
            "{missing}"
        );
        assert!(
            missing.to_string().ends_with("gone.mov does not exist"),
            "{missing}"
        );

        std::fs::create_dir(at("folder.mov")).unwrap();
        let folder = check_upload_path(&at("folder.mov")).unwrap_err();
        assert!(
            folder
                .to_string()
                .ends_with("folder.mov is a folder, not a video file"),
            "{folder}"
        );

        std::fs::write(at("notes.txt"), b"text").unwrap();
        let text = check_upload_path(&at("notes.txt")).unwrap_err();
        assert!(
            text.to_string().contains("does not accept .txt files"),
            "{text}"
        );
        assert!(text.to_string().contains("mp4, mov"), "{text}");

        std::fs::write(at("README"), b"text").unwrap();
        let bare = check_upload_path(&at("README")).unwrap_err();
        assert!(matches!(bare, LocalFileError::NoSuffix { .. }), "{bare}");

        std::fs::write(at("empty.mp4"), b"").unwrap();
        let empty = check_upload_path(&at("empty.mp4")).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");

        std::os::unix::fs::symlink(at("nowhere.mov"), at("link.mov")).unwrap();
        let dangling = check_upload_path(&at("link.mov")).unwrap_err();
        assert!(
            dangling.to_string().contains("symbolic link to"),
            "{dangling}"
        );

        let under_a_file = check_upload_path(&at("clip.MOV/inner.mov")).unwrap_err();
        assert!(
            matches!(under_a_file, LocalFileError::Missing { .. }),
            "{under_a_file}"
        );
    }

    #[test]
    fn a_named_pipe_is_refused_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.mov");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo unavailable, nothing to check");
            return;
        }
        // Opening a FIFO for reading with no writer would block this test forever.
        let err = check_upload_path(&fifo).unwrap_err();
        assert!(err.to_string().contains("a named pipe (FIFO)"), "{err}");
    }
}
