//! The durable job queue: one SQLite file in the state dir that remembers every file the agent
//! has seen, how far its upload got (video id, upload URL, next chunk) and how it ended, so a
//! restart resumes instead of uploading twice. Also the single-instance lock on the state dir.
//!
//! A job moves through these states:
//!
//! ```text
//!   Waiting ◄──► Uploading ◄──► Paused        (pause, resume, requeue_changed: any of the
//!      └────────────┴──────────────┘           three can reach any other)
//!                   │ decide
//!                   ▼
//!              Finishing ──mark_moved──► Done (outcome uploaded) / Failed (outcome failed)
//!
//!   forget: any unfinished state ──► Gone (the file vanished; not a failure)
//! ```
//!
//! `Finishing` is what makes the move crash-safe: the outcome is recorded *before* the file is
//! moved, so after a crash the agent knows whether a file it finds in the watched folder was
//! already uploaded, and only a job recorded as Finishing with outcome `uploaded` ever goes to
//! done/. Every method is one short transaction; the agent calls them from async code.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior, params,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The database file inside the state dir.
pub const DB_FILE_NAME: &str = "jobs.sqlite3";
/// The single-instance lock file inside the state dir.
pub const LOCK_FILE_NAME: &str = "hotfolder.lock";

/// How long a write waits for another connection (a `status` reader checkpointing, a second
/// process migrating) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations; entry `i` upgrades the schema from version `i` to `i + 1`. Append only:
/// a released migration never changes, because databases in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // v1
    "
    CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        folder        TEXT    NOT NULL,
        path          TEXT    NOT NULL,
        rel_path      TEXT    NOT NULL,
        size          INTEGER NOT NULL,
        mtime_ns      INTEGER NOT NULL,
        rule          TEXT    NOT NULL,
        state         TEXT    NOT NULL CHECK (state IN
                          ('waiting', 'uploading', 'paused', 'finishing', 'done', 'failed', 'gone')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        video_id      TEXT,
        upload_url    TEXT,
        url_issued_at TEXT,
        next_chunk    INTEGER NOT NULL DEFAULT 1 CHECK (next_chunk >= 1),
        total_chunks  INTEGER,
        chunk_size    INTEGER,
        bytes_sent    INTEGER NOT NULL DEFAULT 0,
        sha256        TEXT,
        outcome       TEXT CHECK (outcome IN ('uploaded', 'failed')),
        error         TEXT,
        pause_reason  TEXT,
        detected_at   TEXT    NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        destination   TEXT,
        updated_at    TEXT    NOT NULL,
        CHECK (total_chunks IS NULL OR next_chunk <= total_chunks + 1),
        CHECK (state NOT IN ('finishing', 'done', 'failed') OR outcome IS NOT NULL)
    );
    -- One unfinished job per file: the watcher may report a file many times.
    CREATE UNIQUE INDEX jobs_one_active_per_path ON jobs (path)
        WHERE state IN ('waiting', 'uploading', 'paused', 'finishing');
    CREATE INDEX jobs_by_state ON jobs (state, updated_at);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at      TEXT    NOT NULL,
        event   TEXT    NOT NULL,
        detail  TEXT    NOT NULL
    );
    CREATE INDEX events_by_job ON events (job_id, id);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ",
];

const META_PAUSE_REASON: &str = "queue_pause_reason";
const META_PAUSE_SINCE: &str = "queue_pause_since";
/// Prefix of the meta keys of watched folders the agent cannot see (one key per folder).
const META_FOLDER_MISSING: &str = "folder_missing:";

const JOB_COLUMNS: &str = "id, folder, path, rel_path, size, mtime_ns, rule, state, attempts, \
    video_id, upload_url, url_issued_at, next_chunk, total_chunks, chunk_size, bytes_sent, \
    sha256, outcome, error, pause_reason, detected_at, started_at, finished_at, destination, \
    updated_at";

const ACTIVE: &[JobState] = &[JobState::Waiting, JobState::Uploading, JobState::Paused];
const UNFINISHED: &[JobState] = &[
    JobState::Waiting,
    JobState::Uploading,
    JobState::Paused,
    JobState::Finishing,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {}: {source}", path.display())]
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
    #[error("state store: job {id} is {state}, so it cannot be {action}")]
    WrongState {
        id: i64,
        state: JobState,
        action: &'static str,
    },
}

/// Where a job is in its life; stored as lower-case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Complete on disk, waiting for an upload slot (or to resume).
    Waiting,
    Uploading,
    /// Waiting for something outside the file (quota, credentials, network); see `pause_reason`.
    Paused,
    /// Outcome decided and recorded; the file is about to be moved. Resumed after a crash.
    Finishing,
    /// Uploaded and moved to done/.
    Done,
    /// Failed and moved to failed/.
    Failed,
    /// The file disappeared before it could be moved; nothing was moved. Not a failure.
    Gone,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Uploading => "uploading",
            JobState::Paused => "paused",
            JobState::Finishing => "finishing",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Gone => "gone",
        }
    }

    fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "waiting" => JobState::Waiting,
            "uploading" => JobState::Uploading,
            "paused" => JobState::Paused,
            "finishing" => JobState::Finishing,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "gone" => JobState::Gone,
            _ => return None,
        })
    }

    /// Waiting, Uploading, Paused or Finishing: the agent still owes this file something.
    pub fn is_unfinished(self) -> bool {
        UNFINISHED.contains(&self)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an upload ended; decides between done/ and failed/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Uploaded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file failed, as the sidecar shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The HTTP status of the answer that ended the upload, if there was one.
    pub status: Option<u16>,
    /// The server's message (or ours, for local failures), secrets removed.
    pub message: String,
    /// What it means, in words a video editor understands.
    pub meaning: String,
}

/// One line of a file's upload log, shown in its sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    #[serde(with = "rfc3339")]
    pub at: OffsetDateTime,
    pub event: String,
    pub detail: String,
}

/// What the ready stage hands to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The watched folder the file was found in.
    pub folder: PathBuf,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// `path` relative to `folder`; kept when the file moves to done/ or failed/.
    pub rel_path: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (fits an i64 until 2262).
    pub mtime_ns: i64,
    /// Which rule found the file complete, e.g. "size and mtime unchanged for 10s".
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job with this id.
    New(i64),
    /// The file already has an unfinished job (this id); nothing was added.
    AlreadyActive(i64),
}

impl Enqueued {
    pub fn id(self) -> i64 {
        match self {
            Enqueued::New(id) | Enqueued::AlreadyActive(id) => id,
        }
    }
}

/// Everything the store knows about one file's upload.
#[derive(Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub folder: PathBuf,
    pub path: PathBuf,
    pub rel_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub rule: String,
    pub state: JobState,
    /// How many times an upload of this file was started (resumes after a restart count).
    pub attempts: u32,
    /// Kept across restarts and content restarts: one file never gets a second video.
    pub video_id: Option<String>,
    /// Contains the `__token__` credential: never log it as is (Debug redacts it).
    pub upload_url: Option<String>,
    /// When the upload URL was issued; the platform's token lasts four hours.
    pub url_issued_at: Option<OffsetDateTime>,
    /// The next chunk to send, 1-based.
    pub next_chunk: u32,
    pub total_chunks: Option<u32>,
    pub chunk_size: Option<u64>,
    /// Bytes acknowledged by the server so far (of the current pass over the file).
    pub bytes_sent: u64,
    /// SHA-256 of the bytes sent, recorded with the outcome.
    pub sha256: Option<String>,
    pub outcome: Option<Outcome>,
    pub error: Option<JobError>,
    pub pause_reason: Option<String>,
    /// The upload log, oldest first.
    pub events: Vec<JobEvent>,
    pub detected_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    /// Where the file was moved (done/ or failed/), once it was.
    pub destination: Option<PathBuf>,
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("folder", &self.folder)
            .field("path", &self.path)
            .field("rel_path", &self.rel_path)
            .field("size", &self.size)
            .field("mtime_ns", &self.mtime_ns)
            .field("rule", &self.rule)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("video_id", &self.video_id)
            .field(
                "upload_url",
                &self.upload_url.as_ref().map(|_| "<redacted>"),
            )
            .field("url_issued_at", &self.url_issued_at)
            .field("next_chunk", &self.next_chunk)
            .field("total_chunks", &self.total_chunks)
            .field("chunk_size", &self.chunk_size)
            .field("bytes_sent", &self.bytes_sent)
            .field("sha256", &self.sha256)
            .field("outcome", &self.outcome)
            .field("error", &self.error)
            .field("pause_reason", &self.pause_reason)
            .field("events", &self.events)
            .field("detected_at", &self.detected_at)
            .field("started_at", &self.started_at)
            .field("finished_at", &self.finished_at)
            .field("destination", &self.destination)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Jobs per state, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    pub waiting: u64,
    pub uploading: u64,
    pub paused: u64,
    pub finishing: u64,
    pub done: u64,
    pub failed: u64,
    /// Files that vanished before they could be moved; not failures.
    pub gone: u64,
}

/// The job queue. One connection behind a mutex: every method is a single short transaction,
/// so `Arc<JobStore>` can be shared by the agent's tasks.
pub struct JobStore {
    /// The database file, for error messages.
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStore")
            .field("path", &self.path)
            .finish()
    }
}

impl JobStore {
    /// Opens (creating it and the state dir if needed) the store for writing, and upgrades its
    /// schema. Refuses a store written by a newer hotfolder.
    pub fn open(state_dir: &Path) -> Result<JobStore, StoreError> {
        fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DB_FILE_NAME);
        create_private_file(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Without WAL, `status` would block `run`; some file systems (network shares) refuse it.
            return Err(StoreError::NoWal { path, mode });
        }
        // FULL: a job recorded as uploaded must survive a power cut, or the file is re-uploaded.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;
        migrate(&mut conn, &path)?;
        Ok(JobStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Opens the store for reading only, for `hotfolder status` while `run` is writing to it
    /// (WAL readers do not block the writer).
    pub fn open_read_only(state_dir: &Path) -> Result<JobStore, StoreError> {
        let path = state_dir.join(DB_FILE_NAME);
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore { path });
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite)?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported || found < 0 {
            return Err(StoreError::TooNew {
                path,
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StoreError::NeedsUpgrade {
                path,
                found,
                supported,
            });
        }
        Ok(JobStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a job for a complete file, unless the file already has an unfinished one. A new job
    /// starts Waiting with a `detected` event whose detail is `rule`. A file whose last job
    /// ended (done, failed, gone) gets a new job: e.g. moved back from failed/ to retry it.
    pub fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        self.write(|tx| enqueue_in(tx, &job))
    }

    /// [`JobStore::enqueue`] for many files in one transaction (a rescan of a large folder).
    pub fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|tx| jobs.iter().map(|job| enqueue_in(tx, job)).collect())
    }

    pub fn job(&self, id: i64) -> Result<Job, StoreError> {
        self.read(|conn| {
            load_job(conn, "WHERE id = ?1", params![id])?.ok_or(StoreError::UnknownJob(id))
        })
    }

    /// The unfinished job (Waiting, Uploading, Paused or Finishing) for this file, if any.
    pub fn active_job_for_path(&self, path: &Path) -> Result<Option<Job>, StoreError> {
        self.read(|conn| {
            load_job(
                conn,
                &format!("WHERE path = ?1 AND state IN ({})", state_list(UNFINISHED)),
                params![SqlPath(path)],
            )
        })
    }

    /// Every unfinished job, oldest first: what a restart resumes.
    pub fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|conn| {
            load_jobs(
                conn,
                &format!("WHERE state IN ({}) ORDER BY id", state_list(UNFINISHED)),
                params![],
            )
        })
    }

    /// Jobs whose upload is over but whose file is not in done/ or failed/ yet, oldest first.
    pub fn finishing_ids(&self) -> Result<Vec<i64>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare("SELECT id FROM jobs WHERE state = 'finishing' ORDER BY id")?;
            let ids = statement
                .query_map(params![], |row| row.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(ids)
        })
    }

    /// The oldest waiting job that is not in `busy` (jobs a worker is already on).
    pub fn next_waiting(
        &self,
        busy: &std::collections::HashSet<i64>,
    ) -> Result<Option<Job>, StoreError> {
        let limit = i64::try_from(busy.len() + 1).unwrap_or(i64::MAX);
        self.read(|conn| {
            let jobs = load_jobs(
                conn,
                "WHERE state = 'waiting' ORDER BY id LIMIT ?1",
                params![limit],
            )?;
            Ok(jobs.into_iter().find(|job| !busy.contains(&job.id)))
        })
    }

    /// Done, failed and gone jobs, most recently finished first.
    pub fn recent_finished(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            load_jobs(
                conn,
                "WHERE state IN ('done', 'failed', 'gone') ORDER BY updated_at DESC, id DESC LIMIT ?1",
                params![limit],
            )
        })
    }

    pub fn summary(&self) -> Result<QueueSummary, StoreError> {
        self.read(|conn| {
            let mut summary = QueueSummary::default();
            let mut stmt =
                conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let state: JobState = row.get(0)?;
                let count: u64 = row.get(1)?;
                let slot = match state {
                    JobState::Waiting => &mut summary.waiting,
                    JobState::Uploading => &mut summary.uploading,
                    JobState::Paused => &mut summary.paused,
                    JobState::Finishing => &mut summary.finishing,
                    JobState::Done => &mut summary.done,
                    JobState::Failed => &mut summary.failed,
                    JobState::Gone => &mut summary.gone,
                };
                *slot = count;
            }
            Ok(summary)
        })
    }

    /// An upload of the file starts (or resumes): Uploading, one more attempt.
    pub fn start_attempt(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "started",
            ACTIVE,
            "UPDATE jobs SET state = 'uploading', attempts = attempts + 1,
                started_at = COALESCE(started_at, ?2), pause_reason = NULL, updated_at = ?2
             WHERE id = ?1",
            params![id, Stamp(now())],
        )
    }

    /// The platform created the video entity for this file.
    pub fn record_video(&self, id: i64, video_id: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "given a video id",
            ACTIVE,
            "UPDATE jobs SET video_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, video_id, Stamp(now())],
        )
    }

    /// A (new) upload URL for the video; `issued_at` tells when to renew it.
    pub fn record_url(
        &self,
        id: i64,
        url: &str,
        issued_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.update(
            id,
            "given an upload URL",
            ACTIVE,
            "UPDATE jobs SET upload_url = ?2, url_issued_at = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, url, Stamp(issued_at), Stamp(now())],
        )
    }

    /// Forgets the upload URL (refused or expired), so the next attempt fetches a fresh one.
    pub fn clear_url(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "cleared of its upload URL",
            ACTIVE,
            "UPDATE jobs SET upload_url = NULL, url_issued_at = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, Stamp(now())],
        )
    }

    /// The server acknowledged chunks up to `next_chunk - 1`.
    pub fn record_progress(
        &self,
        id: i64,
        next_chunk: u32,
        total_chunks: u32,
        chunk_size: u64,
        bytes_sent: u64,
    ) -> Result<(), StoreError> {
        self.update(
            id,
            "given progress",
            ACTIVE,
            "UPDATE jobs SET next_chunk = ?2, total_chunks = ?3, chunk_size = ?4, bytes_sent = ?5,
                updated_at = ?6
             WHERE id = ?1",
            params![
                id,
                next_chunk,
                total_chunks,
                chunk_size,
                bytes_sent,
                Stamp(now())
            ],
        )
    }

    /// The server will not continue this upload: send everything again, to the same video.
    pub fn restart_content(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "restarted",
            ACTIVE,
            "UPDATE jobs SET next_chunk = 1, bytes_sent = 0, updated_at = ?2 WHERE id = ?1",
            params![id, Stamp(now())],
        )
    }

    /// Appends a line to the job's upload log (any state).
    pub fn record_event(&self, id: i64, event: &str, detail: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            current_state(tx, id)?;
            insert_event(tx, id, event, detail)
        })
    }

    /// The job waits for something outside the file (quota, credentials, network).
    pub fn set_paused(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "paused",
            ACTIVE,
            "UPDATE jobs SET state = 'paused', pause_reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, reason, Stamp(now())],
        )
    }

    /// Back in the queue (after a pause, or an upload interrupted by shutdown).
    pub fn set_waiting(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "put back in the queue",
            ACTIVE,
            "UPDATE jobs SET state = 'waiting', pause_reason = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, Stamp(now())],
        )
    }

    /// Records how the upload ended, before the file is moved: Finishing.
    pub fn decide(
        &self,
        id: i64,
        outcome: Outcome,
        sha256: Option<&str>,
        error: Option<&JobError>,
    ) -> Result<(), StoreError> {
        self.update(
            id,
            "decided",
            ACTIVE,
            "UPDATE jobs SET state = 'finishing', outcome = ?2, sha256 = ?3, error = ?4,
                pause_reason = NULL, finished_at = ?5, updated_at = ?5
             WHERE id = ?1",
            params![id, outcome, sha256, error.map(Json), Stamp(now())],
        )
    }

    /// The file is in done/ or failed/ (by the recorded outcome) at `destination`.
    pub fn mark_moved(&self, id: i64, destination: &Path) -> Result<(), StoreError> {
        self.update(
            id,
            "marked as moved",
            &[JobState::Finishing],
            "UPDATE jobs SET state = CASE outcome WHEN 'uploaded' THEN 'done' ELSE 'failed' END,
                destination = ?2, updated_at = ?3
             WHERE id = ?1",
            params![id, SqlPath(destination), Stamp(now())],
        )
    }

    /// The file vanished (deleted or moved away by someone): Gone, with a `gone` event saying why.
    pub fn forget(&self, id: i64, why: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            check_state(tx, id, UNFINISHED, "forgotten")?;
            let at = now();
            tx.execute(
                "UPDATE jobs SET state = 'gone', pause_reason = NULL,
                    finished_at = COALESCE(finished_at, ?2), updated_at = ?2
                 WHERE id = ?1",
                params![id, Stamp(at)],
            )?;
            insert_event(tx, id, "gone", why)
        })
    }

    /// The file changed while it was uploading: back to Waiting with its new size and mtime;
    /// the content starts again at chunk 1, on the same video.
    pub fn requeue_changed(&self, id: i64, size: u64, mtime_ns: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "requeued",
            ACTIVE,
            "UPDATE jobs SET state = 'waiting', size = ?2, mtime_ns = ?3, next_chunk = 1,
                total_chunks = NULL, chunk_size = NULL, bytes_sent = 0, pause_reason = NULL,
                updated_at = ?4
             WHERE id = ?1",
            params![id, size, mtime_ns, Stamp(now())],
        )
    }

    /// Pauses (`Some(reason)`) or resumes (`None`) the whole queue, for `status`. Changing the
    /// reason of a queue that is already paused keeps the time it was first paused.
    pub fn set_queue_pause(&self, reason: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| {
            match reason {
                Some(reason) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![META_PAUSE_REASON, reason],
                    )?;
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO NOTHING",
                        params![META_PAUSE_SINCE, Stamp(now())],
                    )?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM meta WHERE key IN (?1, ?2)",
                        params![META_PAUSE_REASON, META_PAUSE_SINCE],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Why the whole queue is paused and since when, if it is.
    pub fn queue_pause(&self) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        self.read(|conn| {
            let reason: Option<String> = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    params![META_PAUSE_REASON],
                    |row| row.get(0),
                )
                .optional()?;
            let since: Option<Stamp> = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    params![META_PAUSE_SINCE],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(reason.map(|reason| (reason, since.map_or_else(now, |s| s.0))))
        })
    }

    /// Records that a watched folder cannot be seen (`Some(why)`) or is back (`None`), for
    /// `status`. A folder already missing keeps the time it went missing.
    pub fn set_folder_missing(&self, folder: &Path, why: Option<&str>) -> Result<(), StoreError> {
        let key = format!("{META_FOLDER_MISSING}{}", folder.display());
        self.write(|tx| {
            match why {
                Some(why) => {
                    let since = tx
                        .query_row(
                            "SELECT value FROM meta WHERE key = ?1",
                            params![key],
                            |row| row.get::<_, Json<StoredMissingFolder>>(0),
                        )
                        .optional()?
                        .map_or_else(now_text, |Json(old)| old.since);
                    let value = StoredMissingFolder {
                        path: folder.display().to_string(),
                        why: why.to_owned(),
                        since,
                    };
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![key, Json(&value)],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
                }
            }
            Ok(())
        })
    }

    /// Forgets every missing folder: the agent looks at its folders afresh when it starts.
    pub fn clear_missing_folders(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM meta WHERE substr(key, 1, ?2) = ?1",
                params![META_FOLDER_MISSING, META_FOLDER_MISSING.len()],
            )?;
            Ok(())
        })
    }

    /// Watched folders the running agent cannot see, oldest first.
    pub fn missing_folders(&self) -> Result<Vec<MissingFolder>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare("SELECT value FROM meta WHERE substr(key, 1, ?2) = ?1")?;
            let rows = statement.query_map(
                params![META_FOLDER_MISSING, META_FOLDER_MISSING.len()],
                |row| row.get::<_, Json<StoredMissingFolder>>(0),
            )?;
            let mut folders = Vec::new();
            for row in rows {
                let Json(stored) = row?;
                let since = time::PrimitiveDateTime::parse(&stored.since, STAMP_FORMAT)
                    .map_or_else(|_| now(), |t| t.assume_utc());
                folders.push(MissingFolder {
                    path: PathBuf::from(stored.path),
                    why: stored.why,
                    since,
                });
            }
            folders.sort_by_key(|folder| folder.since);
            Ok(folders)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock left no half-done transaction behind (it rolls back on
        // drop), so the connection is still good.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&conn).map_err(|e| e.at(&self.path))
    }

    /// Runs `f` in one IMMEDIATE transaction: it takes the write lock up front, so a
    /// read-then-write never fails halfway with "database is locked".
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
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

    /// A state transition: checks the job is in one of `allowed` states, then runs `sql`.
    fn update(
        &self,
        id: i64,
        action: &'static str,
        allowed: &[JobState],
        sql: &str,
        params: &[&dyn ToSql],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            check_state(tx, id, allowed, action)?;
            tx.execute(sql, params)?;
            Ok(())
        })
    }
}

impl StoreError {
    /// Fills in the database path of errors raised by code that does not know it.
    fn at(self, path: &Path) -> StoreError {
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

/// Creates the database file readable by its owner only: it holds upload URLs, whose
/// `__token__` is a credential. SQLite gives its -wal and -shm files the same permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let run = |conn: &mut Connection| -> Result<(), StoreError> {
        // IMMEDIATE so two processes opening a fresh store do not both run the migrations.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        let Ok(start) = usize::try_from(found) else {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        };
        if found > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        for migration in &MIGRATIONS[start..] {
            tx.execute_batch(migration)?;
        }
        if start < MIGRATIONS.len() {
            tx.pragma_update(None, "user_version", supported)?;
        }
        tx.commit()?;
        Ok(())
    };
    run(conn).map_err(|e| e.at(path))
}

fn enqueue_in(tx: &Transaction<'_>, job: &NewJob) -> Result<Enqueued, StoreError> {
    let existing: Option<i64> = tx
        .prepare_cached(&format!(
            "SELECT id FROM jobs WHERE path = ?1 AND state IN ({})",
            state_list(UNFINISHED)
        ))?
        .query_row(params![SqlPath(&job.path)], |row| row.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(Enqueued::AlreadyActive(id));
    }
    let at = now();
    tx.prepare_cached(
        "INSERT INTO jobs (folder, path, rel_path, size, mtime_ns, rule, state, detected_at,
            updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?7)",
    )?
    .execute(params![
        SqlPath(&job.folder),
        SqlPath(&job.path),
        SqlPath(&job.rel_path),
        job.size,
        job.mtime_ns,
        job.rule,
        Stamp(at),
    ])?;
    let id = tx.last_insert_rowid();
    insert_event(tx, id, "detected", &job.rule)?;
    Ok(Enqueued::New(id))
}

fn insert_event(conn: &Connection, id: i64, event: &str, detail: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO events (job_id, at, event, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, Stamp(now()), event, detail])?;
    Ok(())
}

fn current_state(conn: &Connection, id: i64) -> Result<JobState, StoreError> {
    conn.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
        .query_row(params![id], |row| row.get(0))
        .optional()?
        .ok_or(StoreError::UnknownJob(id))
}

fn check_state(
    conn: &Connection,
    id: i64,
    allowed: &[JobState],
    action: &'static str,
) -> Result<(), StoreError> {
    let state = current_state(conn, id)?;
    if allowed.contains(&state) {
        Ok(())
    } else {
        Err(StoreError::WrongState { id, state, action })
    }
}

fn state_list(states: &[JobState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_job(
    conn: &Connection,
    clause: &str,
    params: &[&dyn ToSql],
) -> Result<Option<Job>, StoreError> {
    Ok(load_jobs(conn, clause, params)?.into_iter().next())
}

fn load_jobs(
    conn: &Connection,
    clause: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<Job>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs {clause}"))?;
    let mut jobs = stmt
        .query_map(params, job_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut events =
        conn.prepare_cached("SELECT at, event, detail FROM events WHERE job_id = ?1 ORDER BY id")?;
    for job in &mut jobs {
        job.events = events
            .query_map(params![job.id], |row| {
                Ok(JobEvent {
                    at: row.get::<_, Stamp>(0)?.0,
                    event: row.get(1)?,
                    detail: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(jobs)
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get("id")?,
        folder: row.get::<_, OwnedPath>("folder")?.0,
        path: row.get::<_, OwnedPath>("path")?.0,
        rel_path: row.get::<_, OwnedPath>("rel_path")?.0,
        size: row.get("size")?,
        mtime_ns: row.get("mtime_ns")?,
        rule: row.get("rule")?,
        state: row.get("state")?,
        attempts: row.get("attempts")?,
        video_id: row.get("video_id")?,
        upload_url: row.get("upload_url")?,
        url_issued_at: row.get::<_, Option<Stamp>>("url_issued_at")?.map(|s| s.0),
        next_chunk: row.get("next_chunk")?,
        total_chunks: row.get("total_chunks")?,
        chunk_size: row.get("chunk_size")?,
        bytes_sent: row.get("bytes_sent")?,
        sha256: row.get("sha256")?,
        outcome: row.get("outcome")?,
        error: row.get::<_, Option<Json<JobError>>>("error")?.map(|j| j.0),
        pause_reason: row.get("pause_reason")?,
        events: Vec::new(),
        detected_at: row.get::<_, Stamp>("detected_at")?.0,
        started_at: row.get::<_, Option<Stamp>>("started_at")?.map(|s| s.0),
        finished_at: row.get::<_, Option<Stamp>>("finished_at")?.map(|s| s.0),
        destination: row.get::<_, Option<OwnedPath>>("destination")?.map(|p| p.0),
        updated_at: row.get::<_, Stamp>("updated_at")?.0,
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        JobState::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown job state {text:?}").into()))
    }
}

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Outcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "uploaded" => Ok(Outcome::Uploaded),
            "failed" => Ok(Outcome::Failed),
            other => Err(FromSqlError::Other(
                format!("unknown outcome {other:?}").into(),
            )),
        }
    }
}

/// A timestamp stored as fixed-width UTC text (`2025-01-31T12:00:00.000000000Z`): readable in
/// `sqlite3`, and it sorts in time order as text.
struct Stamp(OffsetDateTime);

const STAMP_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
);

impl ToSql for Stamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let text = self
            .0
            .to_offset(time::UtcOffset::UTC)
            .format(STAMP_FORMAT)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(text))
    }
}

impl FromSql for Stamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        time::PrimitiveDateTime::parse(text, STAMP_FORMAT)
            .map(|t| Stamp(t.assume_utc()))
            .map_err(|e| FromSqlError::Other(format!("bad timestamp {text:?}: {e}").into()))
    }
}

/// A watched folder the running agent cannot see: deleted, renamed, unmounted or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFolder {
    pub path: PathBuf,
    pub why: String,
    pub since: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct StoredMissingFolder {
    path: String,
    why: String,
    since: String,
}

/// The current time as stored in the database.
fn now_text() -> String {
    now().format(STAMP_FORMAT).unwrap_or_default()
}

/// A value stored as JSON text.
struct Json<T>(T);

impl<T: Serialize> ToSql for Json<&T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let text = serde_json::to_string(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(text))
    }
}

impl<T: for<'de> Deserialize<'de>> FromSql for Json<T> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(value.as_str()?)
            .map(Json)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A path as text when it is UTF-8 (readable in `sqlite3`), else as the raw bytes, so that
/// every file name the OS allows round-trips exactly. The same path always maps to the same
/// value, which the one-active-job-per-path index relies on.
struct SqlPath<'a>(&'a Path);

impl ToSql for SqlPath<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        if let Some(text) = self.0.to_str() {
            return Ok(ToSqlOutput::from(text));
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            Ok(ToSqlOutput::Owned(Value::Blob(
                self.0.as_os_str().as_bytes().to_vec(),
            )))
        }
        #[cfg(not(unix))]
        {
            Ok(ToSqlOutput::Owned(Value::Text(
                self.0.to_string_lossy().into_owned(),
            )))
        }
    }
}

struct OwnedPath(PathBuf);

impl FromSql for OwnedPath {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                #[cfg(unix)]
                {
                    use std::os::unix::ffi::OsStrExt;
                    Ok(OwnedPath(PathBuf::from(std::ffi::OsStr::from_bytes(bytes))))
                }
                #[cfg(not(unix))]
                {
                    Ok(OwnedPath(PathBuf::from(
                        String::from_utf8_lossy(bytes).into_owned(),
                    )))
                }
            }
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// `#[serde(with = "crate::store::rfc3339")]`: an `OffsetDateTime` as RFC 3339 text in sidecars.
/// (The `time` crate has this behind its `serde` feature, which this crate does not enable.)
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        let text = at.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<OffsetDateTime>` (`null` when unset).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] OffsetDateTime);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
        }
    }
}

/// The single-instance lock on a state dir: two agents sharing one store would upload the
/// same files twice. Held until dropped.
#[derive(Debug)]
pub struct StateLock {
    /// The OS lock lives as long as this handle is open.
    file: File,
    path: PathBuf,
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
        // `File::try_lock` is Rust 1.89; raising `rust-version` from 1.85 is the lead's call
        // (it also turns on newer lints across the crate).
        #[expect(
            clippy::incompatible_msrv,
            reason = "needs rust-version = 1.89 in Cargo.toml"
        )]
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
        Ok(StateLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
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
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Instant;

    fn new_job(dir: &Path, name: &str) -> NewJob {
        NewJob {
            folder: dir.to_path_buf(),
            path: dir.join(name),
            rel_path: PathBuf::from(name),
            size: 1000,
            mtime_ns: 1_700_000_000_000_000_000,
            rule: "size and mtime unchanged for 10s".into(),
        }
    }

    fn id_of(e: Enqueued) -> i64 {
        match e {
            Enqueued::New(id) => id,
            Enqueued::AlreadyActive(id) => panic!("expected a new job, got active {id}"),
        }
    }

    #[test]
    fn reopening_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let when = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_123_456_789).unwrap();
        let err = JobError {
            status: Some(415),
            message: "unsupported".into(),
            meaning: "the platform does not accept this kind of file".into(),
        };
        let (a, b) = {
            let store = JobStore::open(&state).unwrap();
            let a = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
            let b = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
            store.start_attempt(a).unwrap();
            store.record_video(a, "v-123").unwrap();
            store
                .record_url(a, "https://up.example/x?__token__=1~ab", when)
                .unwrap();
            store.record_progress(a, 3, 5, 1024, 2048).unwrap();
            store.record_event(a, "retry", "503 after chunk 2").unwrap();
            store.start_attempt(b).unwrap();
            store.decide(b, Outcome::Failed, None, Some(&err)).unwrap();
            store
                .set_queue_pause(Some("storage quota reached"))
                .unwrap();
            (a, b)
        };
        let store = JobStore::open(&state).unwrap();
        let job = store.job(a).unwrap();
        assert_eq!(job.state, JobState::Uploading);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.video_id.as_deref(), Some("v-123"));
        assert_eq!(
            job.upload_url.as_deref(),
            Some("https://up.example/x?__token__=1~ab")
        );
        assert_eq!(job.url_issued_at, Some(when));
        assert_eq!(
            (
                job.next_chunk,
                job.total_chunks,
                job.chunk_size,
                job.bytes_sent
            ),
            (3, Some(5), Some(1024), 2048)
        );
        assert_eq!(job.rel_path, PathBuf::from("a.mov"));
        assert_eq!(job.mtime_ns, 1_700_000_000_000_000_000);
        let events: Vec<_> = job.events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["detected", "retry"]);
        assert_eq!(job.events[0].detail, "size and mtime unchanged for 10s");
        assert!(job.started_at.is_some());

        let failed = store.job(b).unwrap();
        assert_eq!(failed.state, JobState::Finishing);
        assert_eq!(failed.outcome, Some(Outcome::Failed));
        assert_eq!(failed.error, Some(err));
        assert!(failed.finished_at.is_some());

        assert_eq!(
            store
                .unfinished()
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect::<Vec<_>>(),
            [a, b]
        );
        let (reason, _) = store.queue_pause().unwrap().unwrap();
        assert_eq!(reason, "storage quota reached");
    }

    #[cfg(unix)]
    #[test]
    fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn debug_output_hides_the_upload_url() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store
            .record_url(id, "https://up.example/?__token__=99~secret", now())
            .unwrap();
        let text = format!("{:?}", store.job(id).unwrap());
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn one_active_job_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let first = id_of(store.enqueue(new_job(dir.path(), "clip.mov")).unwrap());
        assert_eq!(
            store.enqueue(new_job(dir.path(), "clip.mov")).unwrap(),
            Enqueued::AlreadyActive(first)
        );
        store.start_attempt(first).unwrap();
        store.decide(first, Outcome::Failed, None, None).unwrap();
        // Still Finishing: the file has not left the folder yet, so it is still this job's.
        assert_eq!(
            store.enqueue(new_job(dir.path(), "clip.mov")).unwrap(),
            Enqueued::AlreadyActive(first)
        );
        store
            .mark_moved(first, &dir.path().join("failed/clip.mov"))
            .unwrap();
        // Moved back from failed/: a fresh job.
        let second = id_of(store.enqueue(new_job(dir.path(), "clip.mov")).unwrap());
        assert_ne!(first, second);
        assert_eq!(
            store
                .active_job_for_path(&dir.path().join("clip.mov"))
                .unwrap()
                .map(|j| j.id),
            Some(second)
        );
        assert_eq!(store.job(first).unwrap().state, JobState::Failed);
        // The index itself refuses a second active row, whatever the code above does.
        let conn = store.lock();
        let duplicate = conn.execute(
            "INSERT INTO jobs (folder, path, rel_path, size, mtime_ns, rule, state, detected_at,
                updated_at)
             SELECT folder, path, rel_path, size, mtime_ns, rule, 'waiting', detected_at,
                updated_at FROM jobs WHERE id = ?1",
            params![second],
        );
        assert!(duplicate.is_err());
    }

    #[test]
    fn upload_that_succeeds_goes_through_finishing_to_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        assert_eq!(store.job(id).unwrap().state, JobState::Waiting);

        // Moving before the outcome is recorded is refused.
        assert!(matches!(
            store.mark_moved(id, Path::new("/done/a.mov")),
            Err(StoreError::WrongState {
                state: JobState::Waiting,
                ..
            })
        ));

        store.start_attempt(id).unwrap();
        store.set_paused(id, "network down").unwrap();
        let paused = store.job(id).unwrap();
        assert_eq!(paused.state, JobState::Paused);
        assert_eq!(paused.pause_reason.as_deref(), Some("network down"));
        store.set_waiting(id).unwrap();
        assert_eq!(store.job(id).unwrap().pause_reason, None);
        store.start_attempt(id).unwrap();
        store.record_video(id, "v1").unwrap();
        store.record_progress(id, 2, 2, 512, 512).unwrap();
        store.record_progress(id, 3, 2, 512, 1000).unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("abc123"), None)
            .unwrap();
        let finishing = store.job(id).unwrap();
        assert_eq!(finishing.state, JobState::Finishing);
        assert_eq!(finishing.attempts, 2);
        assert_eq!(finishing.sha256.as_deref(), Some("abc123"));

        // No more progress or a second verdict once decided.
        assert!(matches!(
            store.record_progress(id, 1, 2, 512, 0),
            Err(StoreError::WrongState { .. })
        ));
        assert!(store.decide(id, Outcome::Failed, None, None).is_err());

        store
            .mark_moved(id, &dir.path().join("done/a.mov"))
            .unwrap();
        let done = store.job(id).unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.destination, Some(dir.path().join("done/a.mov")));
        assert!(store.start_attempt(id).is_err());
        assert!(store.unfinished().unwrap().is_empty());
    }

    #[test]
    fn changed_file_restarts_content_on_the_same_video() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store.start_attempt(id).unwrap();
        store.record_video(id, "v9").unwrap();
        store.record_progress(id, 4, 10, 100, 300).unwrap();
        store.requeue_changed(id, 5000, 42).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.state, JobState::Waiting);
        assert_eq!((job.size, job.mtime_ns), (5000, 42));
        assert_eq!(
            (job.next_chunk, job.bytes_sent, job.total_chunks),
            (1, 0, None)
        );
        assert_eq!(job.video_id.as_deref(), Some("v9"));

        store.start_attempt(id).unwrap();
        store.record_progress(id, 3, 50, 100, 200).unwrap();
        store.restart_content(id).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!((job.next_chunk, job.bytes_sent), (1, 0));
        assert_eq!(job.video_id.as_deref(), Some("v9"));

        store
            .record_url(id, "https://u/?__token__=1", now())
            .unwrap();
        store.clear_url(id).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!((job.upload_url, job.url_issued_at), (None, None));
    }

    #[test]
    fn vanished_file_is_gone_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store.forget(id, "deleted before upload").unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.state, JobState::Gone);
        assert_eq!(job.events.last().unwrap().event, "gone");
        assert_eq!(job.events.last().unwrap().detail, "deleted before upload");
        let summary = store.summary().unwrap();
        assert_eq!((summary.failed, summary.gone), (0, 1));
        assert!(store.forget(id, "again").is_err());
        // The same path can be queued again.
        assert!(matches!(
            store.enqueue(new_job(dir.path(), "a.mov")).unwrap(),
            Enqueued::New(_)
        ));
    }

    #[test]
    fn unknown_job_and_bad_progress_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert!(matches!(store.job(77), Err(StoreError::UnknownJob(77))));
        assert!(matches!(
            store.record_event(77, "x", "y"),
            Err(StoreError::UnknownJob(77))
        ));
        assert!(matches!(
            store.start_attempt(77),
            Err(StoreError::UnknownJob(77))
        ));
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        let err = store.record_progress(id, 0, 3, 10, 0).unwrap_err();
        assert!(err.to_string().contains(DB_FILE_NAME), "{err}");
        assert!(store.record_progress(id, 5, 3, 10, 0).is_err());
        assert_eq!(store.job(id).unwrap().next_chunk, 1);
    }

    #[test]
    fn summary_counts_each_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids: Vec<i64> = (0..7)
            .map(|i| {
                id_of(
                    store
                        .enqueue(new_job(dir.path(), &format!("{i}.mov")))
                        .unwrap(),
                )
            })
            .collect();
        store.start_attempt(ids[1]).unwrap();
        store.set_paused(ids[2], "quota").unwrap();
        store.decide(ids[3], Outcome::Uploaded, None, None).unwrap();
        store.decide(ids[4], Outcome::Uploaded, None, None).unwrap();
        store.mark_moved(ids[4], Path::new("/d/4.mov")).unwrap();
        store.decide(ids[5], Outcome::Failed, None, None).unwrap();
        store.mark_moved(ids[5], Path::new("/f/5.mov")).unwrap();
        store.forget(ids[6], "deleted").unwrap();
        assert_eq!(
            store.summary().unwrap(),
            QueueSummary {
                waiting: 1,
                uploading: 1,
                paused: 1,
                finishing: 1,
                done: 1,
                failed: 1,
                gone: 1,
            }
        );
        let recent: Vec<i64> = store
            .recent_finished(10)
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(recent, [ids[6], ids[5], ids[4]]);
        assert_eq!(store.recent_finished(1).unwrap().len(), 1);
    }

    #[test]
    fn queue_pause_keeps_its_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.queue_pause().unwrap(), None);
        store.set_queue_pause(Some("wrong password")).unwrap();
        let (_, since) = store.queue_pause().unwrap().unwrap();
        store.set_queue_pause(Some("network down")).unwrap();
        let (reason, since_again) = store.queue_pause().unwrap().unwrap();
        assert_eq!(reason, "network down");
        assert_eq!(since, since_again);
        store.set_queue_pause(None).unwrap();
        assert_eq!(store.queue_pause().unwrap(), None);
    }

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
        let again = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(again.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn reader_sees_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            JobStore::open_read_only(dir.path()),
            Err(StoreError::NoStore { .. })
        ));
        let writer = JobStore::open(dir.path()).unwrap();
        let reader = JobStore::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.summary().unwrap(), QueueSummary::default());
        let id = id_of(writer.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        writer.start_attempt(id).unwrap();
        assert_eq!(reader.summary().unwrap().uploading, 1);
        assert_eq!(reader.job(id).unwrap().state, JobState::Uploading);
        // The reader cannot change anything.
        assert!(reader.set_waiting(id).is_err());
        drop(writer);
        drop(reader);
        // After the writer is gone too.
        let reader = JobStore::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.job(id).unwrap().state, JobState::Uploading);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(JobStore::open(dir.path()).unwrap());
        {
            let conn = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = JobStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TooNew {
                    found: 99,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer hotfolder"));
        assert!(err.to_string().contains(DB_FILE_NAME));
        assert!(matches!(
            JobStore::open_read_only(dir.path()),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn ten_thousand_enqueues_are_quick() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let jobs: Vec<NewJob> = (0..10_000)
            .map(|i| new_job(dir.path(), &format!("clip{i}.mov")))
            .collect();
        let started = Instant::now();
        let results = store.enqueue_many(&jobs).unwrap();
        let elapsed = started.elapsed();
        assert!(results.iter().all(|r| matches!(r, Enqueued::New(_))));
        assert_eq!(store.summary().unwrap().waiting, 10_000);
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        // A rescan reports them all again: nothing new.
        let again = store.enqueue_many(&jobs).unwrap();
        assert!(
            again
                .iter()
                .all(|r| matches!(r, Enqueued::AlreadyActive(_)))
        );
        assert_eq!(store.unfinished().unwrap().len(), 10_000);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_round_trip() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let name = OsStr::from_bytes(b"caf\xe9.mov");
        let mut job = new_job(dir.path(), "x");
        job.path = dir.path().join(name);
        job.rel_path = PathBuf::from(name);
        let id = id_of(store.enqueue(job.clone()).unwrap());
        assert_eq!(store.job(id).unwrap().path, job.path);
        assert_eq!(store.enqueue(job).unwrap(), Enqueued::AlreadyActive(id));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(usize),
        Start(usize),
        Pause(usize),
        Resume(usize),
        Progress(usize, u32),
        Restart(usize),
        Decide(usize, bool),
        Moved(usize),
        Forget(usize),
        Changed(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Jobs are picked by index into the ids created so far (modulo), paths from 3 names.
        prop_oneof![
            (0..3usize).prop_map(Op::Enqueue),
            any::<usize>().prop_map(Op::Start),
            any::<usize>().prop_map(Op::Pause),
            any::<usize>().prop_map(Op::Resume),
            (any::<usize>(), 0..6u32).prop_map(|(j, c)| Op::Progress(j, c)),
            any::<usize>().prop_map(Op::Restart),
            (any::<usize>(), any::<bool>()).prop_map(|(j, ok)| Op::Decide(j, ok)),
            any::<usize>().prop_map(Op::Moved),
            any::<usize>().prop_map(Op::Forget),
            any::<usize>().prop_map(Op::Changed),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn state_machine_invariants_hold(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let store = JobStore::open(dir.path()).unwrap();
            let mut ids: Vec<i64> = Vec::new();
            let mut previous: HashMap<i64, Job> = HashMap::new();
            let pick = |ids: &[i64], j: usize| (!ids.is_empty()).then(|| ids[j % ids.len()]);
            for op in ops {
                let target = match &op {
                    Op::Enqueue(_) => None,
                    Op::Start(j) | Op::Pause(j) | Op::Resume(j) | Op::Progress(j, _)
                    | Op::Restart(j) | Op::Decide(j, _) | Op::Moved(j) | Op::Forget(j)
                    | Op::Changed(j) => pick(&ids, *j),
                };
                let result = match (&op, target) {
                    (Op::Enqueue(p), _) => store
                        .enqueue(new_job(dir.path(), &format!("{p}.mov")))
                        .map(|e| {
                            if let Enqueued::New(id) = e {
                                ids.push(id);
                            }
                        }),
                    (_, None) => continue,
                    (Op::Start(_), Some(id)) => store.start_attempt(id),
                    (Op::Pause(_), Some(id)) => store.set_paused(id, "quota"),
                    (Op::Resume(_), Some(id)) => store.set_waiting(id),
                    (Op::Progress(_, c), Some(id)) => store.record_progress(id, *c, 4, 10, 0),
                    (Op::Restart(_), Some(id)) => store.restart_content(id),
                    (Op::Decide(_, ok), Some(id)) => {
                        let outcome = if *ok { Outcome::Uploaded } else { Outcome::Failed };
                        store.decide(id, outcome, None, None)
                    }
                    (Op::Moved(_), Some(id)) => store.mark_moved(id, Path::new("/dest")),
                    (Op::Forget(_), Some(id)) => store.forget(id, "vanished"),
                    (Op::Changed(_), Some(id)) => store.requeue_changed(id, 7, 7),
                };
                if result.is_err() {
                    // A refused operation changes nothing.
                    if let Some(id) = target {
                        let now = store.job(id).unwrap();
                        let before = &previous[&id];
                        prop_assert_eq!(now.state, before.state);
                        prop_assert_eq!(now.next_chunk, before.next_chunk);
                        prop_assert_eq!(now.updated_at, before.updated_at);
                    }
                }

                let all: Vec<Job> = ids.iter().map(|id| store.job(*id).unwrap()).collect();
                let mut active_paths = std::collections::HashSet::new();
                for job in &all {
                    prop_assert!(job.next_chunk >= 1);
                    if job.state.is_unfinished() {
                        prop_assert!(active_paths.insert(job.path.clone()),
                            "two active jobs for {:?}", job.path);
                    }
                    let before = previous.get(&job.id).map(|j| j.state);
                    match job.state {
                        JobState::Done | JobState::Failed => {
                            prop_assert!(matches!(before,
                                Some(JobState::Finishing | JobState::Done | JobState::Failed)),
                                "job {} reached {} from {:?}", job.id, job.state, before);
                            let expected = if job.state == JobState::Done {
                                Outcome::Uploaded
                            } else {
                                Outcome::Failed
                            };
                            prop_assert_eq!(job.outcome, Some(expected));
                        }
                        JobState::Finishing => prop_assert!(job.outcome.is_some()),
                        _ => {}
                    }
                }
                previous = all.into_iter().map(|j| (j.id, j)).collect();
            }
        }
    }
}
