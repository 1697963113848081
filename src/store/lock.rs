//! The single-instance lock on the state dir: a lock file that holds the OS lock
//! (`File::try_lock`) and the holder's pid, so a second `hotfolder run` on the same state dir is
//! refused with a message that names the process already using it.
//!
//! The lock file also carries what the running agent must tell `status` when the store itself
//! cannot be written (a full disk): a second line, written in place over bytes the file already
//! has, which needs no new space where a write to the database does.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{StoreError, check_identity};

/// The single-instance lock file inside the state dir.
pub const LOCK_FILE_NAME: &str = "hotfolder.lock";

/// The single-instance lock on a state dir: two agents sharing one store would upload the
/// same files twice. Held until dropped.
#[derive(Debug)]
pub struct StateLock {
    /// The OS lock lives as long as this handle is open.
    file: File,
    path: PathBuf,
    /// Device and inode of the file locked: a lock file deleted or replaced no longer keeps a
    /// second agent out.
    identity: (u64, u64),
}

/// What the running agent tells `status` through the lock file: why the queue is paused while
/// the state store cannot be written (so the reason cannot go into the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNote {
    pub paused: String,
    #[serde(with = "super::rfc3339")]
    pub since: OffsetDateTime,
}

/// The lock file's first file system block: a note written within it never needs new space.
const NOTE_ROOM: usize = 4096;

impl StateLock {
    /// Takes the lock on `state_dir/hotfolder.lock` (creating the dir) and writes our pid into
    /// it; refused with [`StoreError::AlreadyRunning`] while another process (or another
    /// handle in this one) holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StoreError> {
        fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(LOCK_FILE_NAME);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // No truncate: the holder's pid must still be readable when we are refused.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.lines().next()?.trim().parse().ok());
                return Err(StoreError::AlreadyRunning {
                    state_dir: state_dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // Over what is there, then cut to length: truncating first would give the file's block
        // back, and a full disk would then refuse the pid (and the start).
        let pid = format!("{}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0).map_err(io)?;
        file.set_len(pid.len() as u64).map_err(io)?;
        let identity = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = file.metadata().map_err(io)?;
            (meta.dev(), meta.ino())
        };
        Ok(StateLock {
            file,
            path,
            identity,
        })
    }

    /// Checks that the lock file at its path is still the one locked.
    pub fn still_in_place(&self) -> Result<(), StoreError> {
        check_identity(&self.path, Some(self.identity))
    }

    /// Sets (or with `None` clears) the note `status` shows. Written over the start of the
    /// file, which already has its block, so that it works on a full disk where possible.
    pub fn set_note(&self, note: Option<&AgentNote>) -> std::io::Result<()> {
        let mut text = format!("{}\n", std::process::id());
        if let Some(note) = note {
            let mut note = note.clone();
            // Leaves room for the pid, the JSON around it and escapes within the block.
            truncate_at_char(&mut note.paused, NOTE_ROOM / 2);
            text.push_str(&serde_json::to_string(&note).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        if text.len() > NOTE_ROOM {
            return Err(std::io::Error::other(
                "the note does not fit in the lock file",
            ));
        }
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.file.set_len(text.len() as u64)
    }
}

/// The note the agent holding the lock on `state_dir` left for `status`, if any. A note left
/// by an agent that was killed stays until the next agent starts.
pub fn read_agent_note(state_dir: &Path) -> Option<AgentNote> {
    let text = fs::read_to_string(state_dir.join(LOCK_FILE_NAME)).ok()?;
    let line = text.lines().nth(1)?;
    serde_json::from_str(line).ok()
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // A stale pid in the file would point `AlreadyRunning` messages at an unrelated process.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        match &err {
            StoreError::AlreadyRunning { state_dir, pid } => {
                assert_eq!(state_dir, dir.path());
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("[state] dir"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        // A note for status does not hide the pid.
        first
            .set_note(Some(&AgentNote {
                paused: "disk full".into(),
                since: OffsetDateTime::UNIX_EPOCH,
            }))
            .unwrap();
        match StateLock::acquire(dir.path()).unwrap_err() {
            StoreError::AlreadyRunning { pid, .. } => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(first);
        assert_eq!(read_agent_note(dir.path()), None);
        let _again = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LOCK_FILE_NAME))
                .unwrap()
                .trim(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn a_note_is_read_back_replaced_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(read_agent_note(dir.path()), None);
        let long = AgentNote {
            paused: "database or disk is full ".repeat(400),
            since: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        };
        lock.set_note(Some(&long)).unwrap();
        let read = read_agent_note(dir.path()).unwrap();
        assert!(read.paused.starts_with("database or disk is full"));
        assert!(read.paused.len() < long.paused.len());
        assert_eq!(read.since, long.since);
        assert!(fs::metadata(dir.path().join(LOCK_FILE_NAME)).unwrap().len() <= NOTE_ROOM as u64);
        let short = AgentNote {
            paused: "I/O error".into(),
            ..long
        };
        lock.set_note(Some(&short)).unwrap();
        assert_eq!(read_agent_note(dir.path()), Some(short));
        lock.set_note(None).unwrap();
        assert_eq!(read_agent_note(dir.path()), None);
        lock.still_in_place().unwrap();
    }

    #[test]
    fn a_lock_file_deleted_or_replaced_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(dir.path()).unwrap();
        let path = dir.path().join(LOCK_FILE_NAME);
        fs::remove_file(&path).unwrap();
        let err = lock.still_in_place().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Vanished {
                    what: "deleted",
                    ..
                }
            ),
            "{err:?}"
        );
        fs::write(&path, "1\n").unwrap();
        let err = lock.still_in_place().unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        assert!(!err.retryable());
    }
}
