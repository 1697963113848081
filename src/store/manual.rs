//! What `hotfolder upload` remembers, so that running it again on the same unchanged file
//! resumes the interrupted upload on its video, or answers "already uploaded", instead of
//! making a second video.
//!
//! Its own SQLite file beside the agent's queue, `uploads.sqlite3` in the state dir, and not a
//! table in `jobs.sqlite3`:
//!
//! - `upload` runs while `run` holds the state dir's lock and writes the queue; a separate file
//!   shares no lock, no write transaction and no schema version with it (a newer `upload`
//!   must not migrate the queue under a running older agent);
//! - the agent never opens this file, so its recovery can never pick up, resume or move a
//!   manual upload: those files belong to whoever ran `upload`, and stay where they are;
//! - several `upload`s at once share it through WAL and a busy timeout, like `status` and
//!   `run` share the queue.
//!
//! A file is known by its canonical path and the platform it went to (API URL and
//! VideoManager: the same file sent to another VideoManager is another upload), and is the
//! same file while its size, mtime and a sample of its content (the first and last 64 KiB)
//! are. Like the agent's queue: a changed file goes to the same video again from chunk 1 while
//! its upload is unfinished, and becomes a new upload (a new video) once it was finished.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use time::OffsetDateTime;

use super::link::{read_link, write_link};
use super::schema::{OwnedPath, SqlPath, Stamp, migrate_with};
use super::{StoreError, commit_unsynced, now, open_database};
use crate::vmpro::link::MeasuredLink;

/// The database file inside the state dir.
pub const MANUAL_DB_FILE_NAME: &str = "uploads.sqlite3";

/// Append only, like the queue's migrations.
const MIGRATIONS: &[&str] = &[
    // v1
    "
    CREATE TABLE uploads (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        api_url          TEXT    NOT NULL,
        video_manager_id INTEGER NOT NULL,
        path             TEXT    NOT NULL,
        size             INTEGER NOT NULL,
        mtime_ns         INTEGER NOT NULL,
        sample_sha256    TEXT    NOT NULL,
        state            TEXT    NOT NULL CHECK (state IN ('uploading', 'done', 'abandoned')),
        video_id         TEXT,
        upload_url       TEXT,
        url_issued_at    TEXT,
        next_chunk       INTEGER NOT NULL DEFAULT 1 CHECK (next_chunk >= 1),
        total_chunks     INTEGER,
        chunk_size       INTEGER,
        bytes_sent       INTEGER NOT NULL DEFAULT 0,
        sha256           TEXT,
        started_at       TEXT    NOT NULL,
        finished_at      TEXT,
        updated_at       TEXT    NOT NULL
    );
    -- One unfinished upload per file and platform: the one a repeat resumes.
    CREATE UNIQUE INDEX uploads_one_unfinished ON uploads (api_url, video_manager_id, path)
        WHERE state = 'uploading';
    CREATE INDEX uploads_by_file ON uploads (api_url, video_manager_id, path, id);
    ",
    // v2: the link to the platform as uploads measured it (see `link.rs`).
    super::link::LINK_TABLE,
    // v3: the chunk size the server refused and when (see `link.rs`).
    super::link::LINK_REFUSAL_COLUMNS,
];

/// Where uploads go: the same file uploaded to another platform or VideoManager is another
/// upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub api_url: String,
    pub video_manager_id: u64,
}

/// What makes a file the same file as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// sha256 of the first and last 64 KiB: a file rewritten with its size and mtime kept
    /// (`cp -p`, `rsync -t`) is still told apart, without reading all of a 100 GB file.
    pub sample_sha256: String,
}

/// Where a remembered upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualState {
    /// Started and not finished: interrupted, failed, or still running in another process.
    Uploading,
    Done,
    /// Replaced by a new upload of the same file (`upload --again`).
    Abandoned,
}

impl ManualState {
    fn parse(text: &str) -> Option<ManualState> {
        Some(match text {
            "uploading" => ManualState::Uploading,
            "done" => ManualState::Done,
            "abandoned" => ManualState::Abandoned,
            _ => return None,
        })
    }
}

/// One remembered upload.
#[derive(Clone, PartialEq, Eq)]
pub struct ManualUpload {
    pub id: i64,
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub state: ManualState,
    pub video_id: Option<String>,
    /// Contains the `__token__` credential: cleared once the upload is done, redacted in Debug.
    pub upload_url: Option<String>,
    pub url_issued_at: Option<OffsetDateTime>,
    /// The next chunk to send, 1-based.
    pub next_chunk: u32,
    pub total_chunks: Option<u32>,
    pub chunk_size: Option<u64>,
    pub sha256: Option<String>,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ManualUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualUpload")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .field("state", &self.state)
            .field("video_id", &self.video_id)
            .field(
                "upload_url",
                &self.upload_url.as_ref().map(|_| "<redacted>"),
            )
            .field("url_issued_at", &self.url_issued_at)
            .field("next_chunk", &self.next_chunk)
            .field("total_chunks", &self.total_chunks)
            .field("chunk_size", &self.chunk_size)
            .field("sha256", &self.sha256)
            .field("started_at", &self.started_at)
            .field("finished_at", &self.finished_at)
            .finish()
    }
}

/// `hotfolder upload`'s memory. One connection behind a mutex; every method is one short
/// transaction.
pub struct ManualUploads {
    /// The database file, for error messages.
    path: PathBuf,
    conn: Mutex<Connection>,
    /// SQLite settled on WAL here: chunk progress may then be committed without waiting for
    /// the disk (see `commit_unsynced`); in the rollback journal that could corrupt the file.
    wal: bool,
}

impl ManualUploads {
    /// Opens (creating it and the state dir if needed) `uploads.sqlite3` in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<ManualUploads, StoreError> {
        let (path, mut conn, mode) = open_database(state_dir, MANUAL_DB_FILE_NAME)?;
        // WAL lets several `upload`s write at once without waiting on each other's readers.
        // Unlike the agent's queue (which `status` reads while `run` writes), a file system that
        // refuses it is no reason to refuse an upload: the rollback journal and the busy timeout
        // serialize the writers instead.
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::debug!(file = %path.display(), "SQLite refused WAL here; journal mode {mode}");
        }
        migrate_with(&mut conn, &path, MIGRATIONS)?;
        Ok(ManualUploads {
            path,
            conn: Mutex::new(conn),
            wal: mode.eq_ignore_ascii_case("wal"),
        })
    }

    /// The database file.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The latest upload of `path` to `target` that was not abandoned, if any.
    pub fn latest(
        &self,
        target: &UploadTarget,
        path: &Path,
    ) -> Result<Option<ManualUpload>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM uploads
                     WHERE api_url = ?1 AND video_manager_id = ?2 AND path = ?3
                         AND state != 'abandoned'
                     ORDER BY id DESC LIMIT 1"
                ))?
                .query_row(
                    params![target.api_url, target.video_manager_id, SqlPath(path)],
                    upload_from_row,
                )
                .optional()?)
        })
    }

    #[cfg(test)]
    pub fn upload(&self, id: i64) -> Result<ManualUpload, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"))?
                .query_row(params![id], upload_from_row)
                .optional()?
                .ok_or(StoreError::UnknownJob(id))
        })
    }

    /// A new upload of the file (a new video): an unfinished one of the same file and target
    /// is abandoned in the same transaction.
    pub fn begin(
        &self,
        target: &UploadTarget,
        path: &Path,
        fingerprint: &Fingerprint,
    ) -> Result<i64, StoreError> {
        self.write(|conn| {
            let at = Stamp(now());
            conn.execute(
                "UPDATE uploads SET state = 'abandoned', upload_url = NULL, updated_at = ?4
                 WHERE api_url = ?1 AND video_manager_id = ?2 AND path = ?3
                     AND state = 'uploading'",
                params![target.api_url, target.video_manager_id, SqlPath(path), at],
            )?;
            conn.execute(
                "INSERT INTO uploads (api_url, video_manager_id, path, size, mtime_ns,
                     sample_sha256, state, started_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'uploading', ?7, ?7)",
                params![
                    target.api_url,
                    target.video_manager_id,
                    SqlPath(path),
                    fingerprint.size,
                    fingerprint.mtime_ns,
                    fingerprint.sample_sha256,
                    at
                ],
            )?;
            Ok(conn.last_insert_rowid())
        })
    }

    /// The file changed under an unfinished upload: its new fingerprint, and the content
    /// starts again at chunk 1 on the same video.
    pub fn restart_changed(&self, id: i64, fingerprint: &Fingerprint) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE uploads SET size = ?2, mtime_ns = ?3, sample_sha256 = ?4, next_chunk = 1,
                 total_chunks = NULL, chunk_size = NULL, bytes_sent = 0, updated_at = ?5
             WHERE id = ?1 AND state = 'uploading'",
            params![
                id,
                fingerprint.size,
                fingerprint.mtime_ns,
                fingerprint.sample_sha256,
                Stamp(now())
            ],
        )
    }

    pub fn record_video(&self, id: i64, video_id: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE uploads SET video_id = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'uploading'",
            params![id, video_id, Stamp(now())],
        )
    }

    pub fn record_url(
        &self,
        id: i64,
        url: &str,
        issued_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE uploads SET upload_url = ?2, url_issued_at = ?3, updated_at = ?4
             WHERE id = ?1 AND state = 'uploading'",
            params![id, url, Stamp(issued_at), Stamp(now())],
        )
    }

    /// The server acknowledged chunks up to `next_chunk - 1`. With WAL, not waiting for the
    /// disk (see `commit_unsynced`): the next chunk goes meanwhile.
    pub fn record_progress(
        &self,
        id: i64,
        next_chunk: u32,
        total_chunks: u32,
        chunk_size: u64,
        bytes_sent: u64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE uploads SET next_chunk = ?2, total_chunks = ?3, chunk_size = ?4,
                 bytes_sent = ?5, updated_at = ?6
             WHERE id = ?1 AND state = 'uploading' AND ?2 <= ?3 + 1";
        let params = params![
            id,
            next_chunk,
            total_chunks,
            chunk_size,
            bytes_sent,
            Stamp(now())
        ];
        if !self.wal {
            return self.update(id, sql, params);
        }
        let mut conn = self.lock();
        commit_unsynced(&mut conn, |tx| match tx.execute(sql, params)? {
            0 => Err(StoreError::NotUploading(id)),
            _ => Ok(()),
        })
        .map_err(|e| e.at(&self.path))
    }

    /// The server will not continue: everything again, to the same video.
    pub fn restart_content(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE uploads SET next_chunk = 1, bytes_sent = 0, updated_at = ?2
             WHERE id = ?1 AND state = 'uploading'",
            params![id, Stamp(now())],
        )
    }

    /// Every chunk was accepted: done, and the upload URL's token is forgotten.
    pub fn finish(&self, id: i64, sha256: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE uploads SET state = 'done', sha256 = ?2, upload_url = NULL,
                 finished_at = ?3, updated_at = ?3
             WHERE id = ?1 AND state = 'uploading'",
            params![id, sha256, Stamp(now())],
        )
    }

    /// What earlier uploads measured of the link to `api_url`.
    pub fn link(&self, api_url: &str) -> Result<MeasuredLink, StoreError> {
        self.with(|conn| read_link(conn, api_url))
    }

    /// Keeps what was measured of the link to `api_url` for later uploads.
    pub fn record_link(&self, api_url: &str, link: &MeasuredLink) -> Result<(), StoreError> {
        self.write(|conn| write_link(conn, api_url, link))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock left no half-done transaction behind.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&conn).map_err(|e| e.at(&self.path))
    }

    /// One IMMEDIATE transaction (the write lock up front, so it never fails halfway).
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut conn).map_err(|e: StoreError| e.at(&self.path))
    }

    /// Runs `sql` on the unfinished upload `id`; refused when it is not one.
    fn update(&self, id: i64, sql: &str, params: &[&dyn ToSql]) -> Result<(), StoreError> {
        self.write(|conn| match conn.execute(sql, params)? {
            0 => Err(StoreError::NotUploading(id)),
            _ => Ok(()),
        })
    }
}

const COLUMNS: &str = "id, path, size, mtime_ns, sample_sha256, state, video_id, upload_url, \
    url_issued_at, next_chunk, total_chunks, chunk_size, sha256, started_at, finished_at";

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<ManualUpload> {
    let state: String = row.get("state")?;
    let state = ManualState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown upload state {state:?}").into(),
        )
    })?;
    Ok(ManualUpload {
        id: row.get("id")?,
        path: row.get::<_, OwnedPath>("path")?.0,
        fingerprint: Fingerprint {
            size: row.get("size")?,
            mtime_ns: row.get("mtime_ns")?,
            sample_sha256: row.get("sample_sha256")?,
        },
        state,
        video_id: row.get("video_id")?,
        upload_url: row.get("upload_url")?,
        url_issued_at: row.get::<_, Option<Stamp>>("url_issued_at")?.map(|s| s.0),
        next_chunk: row.get("next_chunk")?,
        total_chunks: row.get("total_chunks")?,
        chunk_size: row.get("chunk_size")?,
        sha256: row.get("sha256")?,
        started_at: row.get::<_, Stamp>("started_at")?.0,
        finished_at: row.get::<_, Option<Stamp>>("finished_at")?.map(|s| s.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(vm: u64) -> UploadTarget {
        UploadTarget {
            api_url: "http://127.0.0.1:1/v1/vms/".into(),
            video_manager_id: vm,
        }
    }

    fn print(size: u64) -> Fingerprint {
        Fingerprint {
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            sample_sha256: format!("{size:064x}"),
        }
    }

    #[test]
    fn an_upload_is_remembered_until_done_and_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        let id = {
            let memory = ManualUploads::open(dir.path()).unwrap();
            assert_eq!(memory.latest(&target(1), &file).unwrap(), None);
            let id = memory.begin(&target(1), &file, &print(10)).unwrap();
            memory.record_video(id, "v1").unwrap();
            memory
                .record_url(id, "https://up.example/?__token__=1~secret", now())
                .unwrap();
            memory.record_progress(id, 3, 5, 2, 4).unwrap();
            id
        };
        // Reopened, as a second `hotfolder upload` would.
        let memory = ManualUploads::open(dir.path()).unwrap();
        let found = memory.latest(&target(1), &file).unwrap().unwrap();
        assert_eq!(found.id, id);
        assert_eq!(found.state, ManualState::Uploading);
        assert_eq!(found.video_id.as_deref(), Some("v1"));
        assert_eq!(
            (found.next_chunk, found.total_chunks, found.chunk_size),
            (3, Some(5), Some(2))
        );
        assert!(!format!("{found:?}").contains("secret"));
        // Another VideoManager has not seen the file.
        assert_eq!(memory.latest(&target(2), &file).unwrap(), None);

        memory.finish(id, "abc").unwrap();
        let done = memory.latest(&target(1), &file).unwrap().unwrap();
        assert_eq!(done.state, ManualState::Done);
        assert_eq!(done.upload_url, None, "the token is not kept");
        assert_eq!(done.sha256.as_deref(), Some("abc"));
        assert!(done.finished_at.is_some());
        // A done upload takes no more progress.
        assert!(matches!(
            memory.record_progress(id, 1, 5, 2, 0),
            Err(StoreError::NotUploading(_))
        ));
    }

    #[test]
    fn a_new_upload_abandons_the_unfinished_one_and_a_changed_file_restarts_on_its_video() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        let memory = ManualUploads::open(dir.path()).unwrap();
        let first = memory.begin(&target(1), &file, &print(10)).unwrap();
        memory.record_video(first, "v1").unwrap();
        memory.record_progress(first, 4, 5, 2, 6).unwrap();
        memory.restart_changed(first, &print(12)).unwrap();
        let changed = memory.upload(first).unwrap();
        assert_eq!(changed.fingerprint, print(12));
        assert_eq!(
            (changed.next_chunk, changed.total_chunks, changed.chunk_size),
            (1, None, None)
        );
        assert_eq!(changed.video_id.as_deref(), Some("v1"));

        let second = memory.begin(&target(1), &file, &print(12)).unwrap();
        assert_eq!(memory.upload(first).unwrap().state, ManualState::Abandoned);
        assert_eq!(
            memory.latest(&target(1), &file).unwrap().unwrap().id,
            second
        );
        assert!(memory.record_video(first, "v9").is_err());
    }

    #[test]
    fn the_memory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let memory = ManualUploads::open(dir.path()).unwrap();
        let mode = std::fs::metadata(memory.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
