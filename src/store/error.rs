//! Everything that can go wrong in the store, each with a message that tells the user what to
//! do. Errors raised deep inside a transaction do not know the database path; the `JobStore`
//! methods fill it in on the way out (`StoreError::at`).

use std::path::{Path, PathBuf};

use super::JobState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another `hotfolder run`{} is using the state dir {}; stop it, or give this one another `[state] dir`",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        state_dir.display()
    )]
    AlreadyRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    #[error(
        "state store {} has schema version {found}, but this hotfolder understands versions up to {supported}: it was written by a newer hotfolder; upgrade hotfolder or use another `[state] dir`",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "state store {} has schema version {found} and needs upgrading to {supported}; start `hotfolder run` once to upgrade it",
        path.display()
    )]
    NeedsUpgrade {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "state store {}: SQLite refused WAL journal mode (it stayed {mode:?}); is the state dir on a network share? Use a local `[state] dir`",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error("no state store at {} yet: `hotfolder run` creates it", path.display())]
    NoStore { path: PathBuf },
    #[error("state store: no job with id {0}")]
    UnknownJob(i64),
    #[error("`hotfolder upload`'s memory: upload {0} is finished or was replaced by a newer one")]
    NotUploading(i64),
    #[error("state store: job {id} is {state}, so it cannot be {action}")]
    WrongState {
        id: i64,
        state: JobState,
        action: &'static str,
    },
    /// The file this store (or its lock) opened is no longer at its path: deleted, or another
    /// file put in its place. Writing on would record jobs nobody can see, and a second agent
    /// could start beside this one.
    #[error("{} was {what} while hotfolder was running", path.display())]
    Vanished { path: PathBuf, what: &'static str },
}

impl StoreError {
    /// Whether the store itself could not be used just now (disk full, an I/O error, read-only,
    /// locked by another process for too long, damaged, moved away): the request was fine and
    /// the same call may work once the cause is fixed, so callers pause and try again later
    /// instead of failing a file or repeating the call at once. `false` for requests the store
    /// refused (an unknown job, a wrong state, a schema from a newer hotfolder).
    pub fn retryable(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            StoreError::Io { .. } => true,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(failure, _),
                ..
            } => matches!(
                failure.code,
                ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::PermissionDenied
                    | ErrorCode::FileLockingProtocolFailed
                    | ErrorCode::OutOfMemory
                    | ErrorCode::DatabaseCorrupt
                    | ErrorCode::NotADatabase
            ),
            _ => false,
        }
    }

    /// Fills in the database path of errors raised by code that does not know it.
    pub(super) fn at(self, path: &Path) -> StoreError {
        match self {
            StoreError::Sqlite { path: p, source } if p.as_os_str().is_empty() => {
                StoreError::Sqlite {
                    path: path.to_path_buf(),
                    source,
                }
            }
            other => other,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    /// The path is filled in by [`StoreError::at`] at the method boundary.
    fn from(source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: PathBuf::new(),
            source,
        }
    }
}
