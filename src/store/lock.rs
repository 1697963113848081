//! The single-instance lock on the state dir: a lock file that holds the OS lock
//! (`File::try_lock`) and the holder's pid, so a second `hotfolder run` on the same state dir is
//! refused with a message that names the process already using it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::StoreError;

/// The single-instance lock file inside the state dir.
pub const LOCK_FILE_NAME: &str = "hotfolder.lock";

/// The single-instance lock on a state dir: two agents sharing one store would upload the
/// same files twice. Held until dropped.
#[derive(Debug)]
pub struct StateLock {
    /// The OS lock lives as long as this handle is open.
    file: File,
}

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
                    .and_then(|_| text.trim().parse().ok());
                return Err(StoreError::AlreadyRunning {
                    state_dir: state_dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { file })
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
        drop(first);
        let _again = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LOCK_FILE_NAME))
                .unwrap()
                .trim(),
            std::process::id().to_string()
        );
    }
}
