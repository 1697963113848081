//! The durable job queue: one SQLite file in the state dir that remembers every file the agent
//! has seen, how far its upload got (video id, upload URL, next chunk) and how it ended, so a
//! restart resumes instead of uploading twice. Also the single-instance lock on the state dir.
//!
//! A job moves through these states:
//!
//! ```text
//!   Waiting ◄──► Uploading ◄──► Paused      from any of these three:
//!      └────────────┴──────────────┘         ──► Uploading  start_attempt
//!                   │ decide                  ──► Paused     set_paused, pause_changed
//!                   ▼                         ──► Waiting    set_waiting, requeue_changed
//!              Finishing ──mark_moved──► Done (outcome uploaded) / Failed (outcome failed)
//!
//!   forget: any unfinished state ──► Gone (the file vanished; not a failure)
//! ```
//!
//! `Finishing` is what makes the move crash-safe: the outcome is recorded *before* the file is
//! moved, so after a crash the agent knows whether a file it finds in the watched folder was
//! already uploaded, and only a job recorded as Finishing with outcome `uploaded` ever goes to
//! done/. Where the file went is recorded (`record_move`) before its sidecar is written, so a
//! kill after that finds it there. Every method is one short transaction; the agent calls them
//! from async code. A job that ends keeps no upload URL, and finished jobs are pruned after
//! `keep_jobs_for` (`prune_finished`).
//!
//! This file holds [`JobStore`] itself: opening it, the state-guarded transitions above and
//! the transaction helpers they share. The rest, each re-exported here so callers only ever
//! name `crate::store::X`:
//!
//! - `job`: the plain data (`Job`, `JobState`, `Outcome`, events, `NewJob`, `QueueSummary`);
//! - `schema`: migrations, and how rows map to those types;
//! - `queries`: read-only questions about jobs (also what `status` asks);
//! - `status`: agent-wide status in the `meta` table (queue pause, missing folders, how each
//!   folder is watched);
//! - `settling`: the files the agent is watching settle, copied for `status`;
//! - `outbox`: `[[notify]]` events waiting for their destinations, written by the
//!   transitions here (done, failed, refused as incomplete) and in `status` (a pause
//!   announced or over, a folder missing or back);
//! - `transcoding`: the videos followed after their upload (`follow_transcoding`), written
//!   with the job's end here (moved, or removed before the move);
//! - `lock`: the single-instance lock file, and the note it carries for `status` when the
//!   store itself cannot be written;
//! - `link`: the link to the platform as uploads measured it (`chunk_size = "auto"`), in
//!   both databases;
//! - `manual`: what `hotfolder upload` remembers, in its own file (`uploads.sqlite3`), which
//!   the agent never opens;
//! - `error`: `StoreError`;
//! - `rfc3339`: serde for timestamps in sidecars.
//!
//! This file is over 800 lines because it keeps the state machine's unit tests (about half of
//! it) next to the transitions they check; the code itself is about 500 lines.

mod claimed;
mod companion;
mod error;
mod job;
mod link;
mod lock;
mod manual;
mod outbox;
mod queries;
pub mod rfc3339;
mod schema;
mod settling;
mod status;
mod transcoding;

pub use claimed::ClaimedUpload;
pub use companion::JobCompanion;
pub use error::StoreError;
pub use job::{Enqueued, Job, JobError, JobEvent, JobState, NewJob, Outcome, Placed, QueueSummary};
pub use lock::{AgentNote, LOCK_FILE_NAME, StateLock, read_agent_note};
pub use manual::{
    Fingerprint, MANUAL_DB_FILE_NAME, ManualState, ManualUpload, ManualUploads, UploadTarget,
};
pub use outbox::{NotifyBacklog, NotifyRoute, PendingNotice};
pub use settling::{SettlingChange, SettlingFile};
pub use status::{FolderMode, HeldVideoManager, MissingFolder};
pub use transcoding::{FollowedVideo, TranscodingEnd};

use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, ToSql, Transaction, TransactionBehavior, params,
};
use time::OffsetDateTime;

use crate::notify;
use job::{ACTIVE, FINISHED, UNFINISHED};
use schema::{Json, SqlPath, Stamp, load_jobs, state_list};

/// The database file inside the state dir.
pub const DB_FILE_NAME: &str = "jobs.sqlite3";

/// The lock `hotfolder retry` holds in the state dir, so that two runs never move one file.
pub const RETRY_LOCK_FILE_NAME: &str = "retry.lock";

/// The suffixes SQLite adds to a database's name for the files beside it: the WAL and its
/// shared-memory index, or the rollback journal where WAL is refused (a network file system).
pub const SQLITE_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Jobs deleted per transaction when pruning.
const PRUNE_BATCH: usize = 500;

/// How long a write waits for another connection (a `status` reader checkpointing, a second
/// process migrating) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The job queue. One connection behind a mutex: every method is a single short transaction,
/// so `Arc<JobStore>` can be shared by the agent's tasks.
pub struct JobStore {
    /// The database file, for error messages.
    path: PathBuf,
    /// Device and inode of the database file opened for writing, to notice it being deleted or
    /// replaced under the running agent.
    identity: Option<(u64, u64)>,
    conn: Mutex<Connection>,
    /// Bumped after a write that may have added a `[[notify]]` event, to wake the delivery
    /// tasks at once instead of having them poll.
    outbox: tokio::sync::watch::Sender<u64>,
    /// Some destination is configured (else nobody waits on `outbox`).
    has_routes: AtomicBool,
}

impl fmt::Debug for JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Opens `state_dir/file_name` for writing, creating the state dir and a private (0600) file if
/// needed: the busy timeout set, WAL asked for (the journal mode SQLite settled on is returned,
/// for the caller to judge), and `synchronous = FULL`, because a record of an upload that ended
/// must survive a power cut, or the file is uploaded again.
pub(super) fn open_database(
    state_dir: &Path,
    file_name: &str,
) -> Result<(PathBuf, Connection, String), StoreError> {
    fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(file_name);
    // Private: it holds upload URLs, whose `__token__` is a credential.
    create_private_file(&path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    let sqlite = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    Ok((path, conn, mode))
}

impl JobStore {
    /// Opens (creating it and the state dir if needed) the store for writing, and upgrades its
    /// schema. Refuses a store written by a newer hotfolder.
    pub fn open(state_dir: &Path) -> Result<JobStore, StoreError> {
        let (path, mut conn, mode) = open_database(state_dir, DB_FILE_NAME)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Without WAL, `status` would block `run`; some file systems (network shares) refuse it.
            return Err(StoreError::NoWal { path, mode });
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;
        // The write-ahead log is checkpointed every 256 pages (1 MiB, not SQLite's 4 MiB) and
        // cut back to 1 MiB after each checkpoint: on a small state disk that filled up, a log
        // left at its largest would fill it again the moment space returned.
        conn.pragma_update(None, "wal_autocheckpoint", 256)
            .map_err(sqlite)?;
        conn.pragma_update(None, "journal_size_limit", 1024 * 1024)
            .map_err(sqlite)?;
        // Deleted and replaced content (upload URLs, whose `__token__` is a credential, and
        // pruned jobs) is overwritten with zeros instead of lingering in free space.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(sqlite)?;
        schema::migrate(&mut conn, &path)?;
        let identity = file_identity(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(JobStore {
            path,
            identity: Some(identity),
            conn: Mutex::new(conn),
            outbox: tokio::sync::watch::Sender::new(0),
            has_routes: AtomicBool::new(false),
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
        schema::check_read_only_version(&conn, &path)?;
        Ok(JobStore {
            path,
            identity: None,
            conn: Mutex::new(conn),
            outbox: tokio::sync::watch::Sender::new(0),
            has_routes: AtomicBool::new(false),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the database file at the store's path is still the one this store opened
    /// ([`StoreError::Vanished`] if it was deleted or replaced).
    pub fn still_in_place(&self) -> Result<(), StoreError> {
        check_identity(&self.path, self.identity)
    }

    /// Adds a job for a complete file, unless the file already has an unfinished one. A new job
    /// starts Waiting with a `detected` event whose detail is `rule`. A file whose last job
    /// ended (done, failed, gone) gets a new job: e.g. moved back from failed/ to retry it.
    #[cfg(test)] // the agent uses enqueue_many and pause_changed
    pub fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        self.write(|tx| enqueue_in(tx, &job))
    }

    /// [`JobStore::enqueue`] for many files in one transaction (a rescan of a large folder).
    pub fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|tx| jobs.iter().map(|job| enqueue_in(tx, job)).collect())
    }

    /// A complete-looking file that will not be uploaded (not the container its name says, or
    /// an export that never finished): a job that goes straight to Finishing with a failed
    /// outcome and `error`, in one transaction, so no worker ever picks it up; the finish stage
    /// moves it to failed/ with its sidecar. A file with an unfinished job is left to that job.
    /// An export that `never_finished` (its container stayed incomplete) is an `incomplete`
    /// event now; like every file it is a `failed` one once it is in failed/.
    pub fn enqueue_refused(
        &self,
        job: &NewJob,
        error: &JobError,
        never_finished: bool,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = self.write(|tx| {
            let enqueued = enqueue_in(tx, job)?;
            if let Enqueued::New(id) = enqueued {
                let at = Stamp(now());
                tx.execute(
                    "UPDATE jobs SET state = 'finishing', outcome = ?2, error = ?3,
                        finished_at = ?4, updated_at = ?4
                     WHERE id = ?1",
                    params![id, Outcome::Failed, Json(error), at],
                )?;
                insert_event(tx, id, "refused", &error.message)?;
                if never_finished {
                    outbox::notify_job_in(tx, id, Some(notify::EventKind::Incomplete))?;
                }
            }
            Ok(enqueued)
        })?;
        if never_finished {
            self.outbox_changed();
        }
        Ok(enqueued)
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

    /// The platform created the video entity for this file (or it was found by the job's
    /// marker): no create is outstanding any more.
    pub fn record_video(&self, id: i64, video_id: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "given a video id",
            ACTIVE,
            "UPDATE jobs SET video_id = ?2, create_sent_at = NULL, updated_at = ?3 WHERE id = ?1",
            params![id, video_id, Stamp(now())],
        )
    }

    /// A create-video request tagged with `marker` is about to be sent: recorded first, so a
    /// crash before its answer arrives leaves a job that looks its video up. The job's marker,
    /// once set, is kept (every create of one job carries the same one).
    pub fn record_create_sent(&self, id: i64, marker: Option<&str>) -> Result<(), StoreError> {
        self.update(
            id,
            "about to create its video",
            ACTIVE,
            "UPDATE jobs SET marker = COALESCE(marker, ?2), create_sent_at = ?3, updated_at = ?3
             WHERE id = ?1",
            params![id, marker, Stamp(now())],
        )
    }

    /// The file's inode change time as its content starts uploading (kept only if none is).
    pub fn record_content_ctime(&self, id: i64, ctime_ns: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "the file's change time",
            ACTIVE,
            "UPDATE jobs SET content_ctime_ns = COALESCE(content_ctime_ns, ?2) WHERE id = ?1",
            params![id, ctime_ns],
        )
    }

    /// The create-video request was answered and made no video: nothing to look up.
    pub fn record_create_settled(&self, id: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "told its create was answered",
            ACTIVE,
            "UPDATE jobs SET create_sent_at = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, Stamp(now())],
        )
    }

    /// The job's marker keyword is off the platform (any state: finished jobs are swept
    /// too). `updated_at` stays, so the order of recent results does not change.
    pub fn clear_marker(&self, id: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            current_state(tx, id)?;
            tx.execute("UPDATE jobs SET marker = NULL WHERE id = ?1", params![id])?;
            Ok(())
        })
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

    /// The server acknowledged chunks up to `next_chunk - 1`; the last one took `took` to send.
    /// Not waiting for the disk (see [`commit_unsynced`]): the next chunk goes meanwhile.
    pub fn record_progress(
        &self,
        id: i64,
        next_chunk: u32,
        total_chunks: u32,
        chunk_size: u64,
        bytes_sent: u64,
        took: std::time::Duration,
    ) -> Result<(), StoreError> {
        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            commit_unsynced(conn, |tx| {
                transition(
                    tx,
                    id,
                    "given progress",
                    ACTIVE,
                    "UPDATE jobs SET next_chunk = ?2, total_chunks = ?3, chunk_size = ?4, bytes_sent = ?5,
                sending_us = sending_us + ?7, updated_at = ?6
             WHERE id = ?1",
                    params![
                        id,
                        next_chunk,
                        total_chunks,
                        chunk_size,
                        bytes_sent,
                        Stamp(now()),
                        took_us
                    ],
                )
            })
        };
        run(&mut conn).map_err(|e: StoreError| e.at(&self.path))
    }

    /// The server will not continue this upload: send everything again, to the same video.
    pub fn restart_content(&self, id: i64) -> Result<(), StoreError> {
        self.write(|tx| restart_content_in(tx, id))
    }

    /// Appends a line to the job's upload log (any state).
    pub fn record_event(&self, id: i64, event: &str, detail: &str) -> Result<(), StoreError> {
        self.write(|tx| record_event_in(tx, id, event, detail))
    }

    /// The job waits for something outside the file (quota, credentials, network).
    #[cfg(test)] // the agent uses enqueue_many and pause_changed
    pub fn set_paused(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.write(|tx| set_paused_in(tx, id, reason))
    }

    /// The file changed under an unfinished upload: a `changed` event saying `why`, Paused with
    /// `pause_reason` until the file is stable again, and the content restarts at chunk 1 on the
    /// same video. What [`JobStore::record_event`], [`JobStore::set_paused`] and
    /// [`JobStore::restart_content`] do in that order, with their state guards, but in one
    /// transaction: a crash in between cannot leave a paused job that would resume mid-file,
    /// and if a step is refused (unknown job; not Waiting, Uploading or Paused) nothing is
    /// written, not even the event.
    pub fn pause_changed(&self, id: i64, why: &str, pause_reason: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            record_event_in(tx, id, "changed", why)?;
            set_paused_in(tx, id, pause_reason)?;
            restart_content_in(tx, id)
        })
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

    /// Records how the upload ended, before the file is moved: Finishing. The upload URL is
    /// dropped: its `__token__` is a credential, and nothing is sent to it any more.
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
                pause_reason = NULL, upload_url = NULL, url_issued_at = NULL,
                finished_at = ?5, updated_at = ?5
             WHERE id = ?1",
            params![id, outcome, sha256, error.map(Json), Stamp(now())],
        )
    }

    /// The file is in done/ or failed/ (by the recorded outcome) at `destination`.
    #[cfg(test)]
    pub fn mark_moved(&self, id: i64, destination: &Path) -> Result<(), StoreError> {
        self.mark_moved_as(id, destination, None)
    }

    /// [`mark_moved`](Self::mark_moved), with the file as it was placed there (`None`: it could
    /// not be looked at; retention then never deletes it). The time of the move is recorded,
    /// and the `uploaded` or `failed` event is written with it.
    pub fn mark_moved_as(
        &self,
        id: i64,
        destination: &Path,
        placed: Option<&Placed>,
    ) -> Result<(), StoreError> {
        let at = now();
        // Device and inode bit for bit as i64: SQLite has no unsigned type.
        let (dev, ino, size, mtime_ns, ctime_ns) = match placed {
            Some(p) => (
                Some(p.identity.0 as i64),
                Some(p.identity.1 as i64),
                Some(p.size),
                Some(p.mtime_ns),
                p.ctime_ns,
            ),
            None => (None, None, None, None, None),
        };
        self.write(|tx| {
            transition(
                tx,
                id,
                "marked as moved",
                &[JobState::Finishing],
                "UPDATE jobs SET state = CASE outcome WHEN 'uploaded' THEN 'done' ELSE 'failed' END,
                    destination = ?2, upload_url = NULL, url_issued_at = NULL, updated_at = ?3,
                    moved_at = ?3, placed_dev = ?4, placed_ino = ?5, placed_size = ?6,
                    placed_mtime_ns = ?7, placed_ctime_ns = ?8
                 WHERE id = ?1",
                params![
                    id,
                    SqlPath(destination),
                    Stamp(at),
                    dev,
                    ino,
                    size,
                    mtime_ns,
                    ctime_ns
                ],
            )?;
            outbox::notify_job_in(tx, id, None)?;
            transcoding::follow_in(tx, id)
        })?;
        self.outbox_changed();
        Ok(())
    }

    /// Records the VideoManager a job uploads into, before an attempt sends anything (the
    /// dispatcher keeps a recorded one once the platform may hold the job's video).
    pub fn record_video_manager(&self, id: i64, video_manager_id: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            current_state(tx, id)?;
            tx.execute(
                "UPDATE jobs SET video_manager_id = ?2 WHERE id = ?1",
                params![id, video_manager_id],
            )?;
            Ok(())
        })
    }

    /// The chunk size a failed attempt last tried, for the sidecar, when no accepted chunk
    /// recorded one: a job with accepted chunks keeps theirs (a resume needs it).
    pub fn record_chunk_size_tried(&self, id: i64, chunk_size: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            current_state(tx, id)?;
            tx.execute(
                "UPDATE jobs SET chunk_size = ?2 WHERE id = ?1 AND chunk_size IS NULL",
                params![id, i64::try_from(chunk_size).unwrap_or(i64::MAX)],
            )?;
            Ok(())
        })
    }

    /// Uploaded files in done/ that retention has not decided about yet, the longest there
    /// first.
    pub fn done_undecided(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|conn| {
            load_jobs(
                conn,
                "WHERE state = 'done' AND outcome = 'uploaded' AND retention IS NULL
                   AND moved_at IS NOT NULL AND destination IS NOT NULL
                 ORDER BY moved_at, id",
                &[],
            )
        })
    }

    /// What retention did with a done job's file (`deleted …` or `kept: …`): decided, with an
    /// event in its log.
    pub fn record_retention(&self, id: i64, what: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            transition(
                tx,
                id,
                "retention recorded",
                &[JobState::Done],
                "UPDATE jobs SET retention = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, what, Stamp(now())],
            )?;
            insert_event(tx, id, "retention", what)
        })
    }

    /// The file is at `destination` in done/ or failed/ and its sidecar is about to be written:
    /// a `moved` event, and the place, so that a restart after a kill from here on finds the file
    /// by what was recorded instead of reporting it gone.
    pub fn record_move(&self, id: i64, destination: &Path) -> Result<(), StoreError> {
        self.write(|tx| {
            transition(
                tx,
                id,
                "recorded as moved",
                &[JobState::Finishing],
                "UPDATE jobs SET destination = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, SqlPath(destination), Stamp(now())],
            )?;
            insert_event(tx, id, "moved", &format!("to {}", destination.display()))
        })
    }

    /// The file vanished (deleted or moved away by someone): Gone, with a `gone` event saying why.
    /// One whose upload had ended (Finishing) is still an `uploaded` or `failed` event: the
    /// video exists, or the failure happened, whether or not the file could be moved.
    pub fn forget(&self, id: i64, why: &str) -> Result<(), StoreError> {
        let ended = self.write(|tx| {
            check_state(tx, id, UNFINISHED, "forgotten")?;
            let ended = current_state(tx, id)? == JobState::Finishing;
            if ended {
                outbox::notify_job_in(tx, id, None)?;
                transcoding::follow_in(tx, id)?;
            }
            let at = now();
            tx.execute(
                "UPDATE jobs SET state = 'gone', pause_reason = NULL, upload_url = NULL,
                    url_issued_at = NULL, finished_at = COALESCE(finished_at, ?2), updated_at = ?2
                 WHERE id = ?1",
                params![id, Stamp(at)],
            )?;
            insert_event(tx, id, "gone", why)?;
            Ok(ended)
        })?;
        if ended {
            self.outbox_changed();
        }
        Ok(())
    }

    /// Deletes finished jobs (done, failed, gone) that reached that state before `before`,
    /// with their events (but not one whose video is still followed), and drops any upload
    /// URL a finished job still holds (stores written by a hotfolder that kept them). Returns
    /// how many jobs were deleted. Works in batches of
    /// [`PRUNE_BATCH`], each its own transaction, so that the first prune of a large store
    /// never holds the store (and the agent's heartbeat, which reads it) for long.
    pub fn prune_finished(&self, before: OffsetDateTime) -> Result<usize, StoreError> {
        let finished = state_list(FINISHED);
        self.write(|tx| {
            tx.execute(
                &format!(
                    "UPDATE jobs SET upload_url = NULL, url_issued_at = NULL
                     WHERE state IN ({finished}, 'finishing') AND upload_url IS NOT NULL"
                ),
                params![],
            )?;
            Ok(())
        })?;
        let mut deleted = 0;
        loop {
            let batch = self.write(|tx| {
                Ok(tx.execute(
                    &format!(
                        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
                         WHERE state IN ({finished}) AND updated_at < ?1
                           AND id NOT IN (SELECT job_id FROM transcoding WHERE outcome IS NULL)
                         LIMIT ?2)"
                    ),
                    params![Stamp(before), PRUNE_BATCH],
                )?)
            })?;
            deleted += batch;
            if batch < PRUNE_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// The file changed while it was uploading: back to Waiting with its new size and mtime;
    /// the content starts again at chunk 1, on the same video.
    pub fn requeue_changed(&self, id: i64, size: u64, mtime_ns: i64) -> Result<(), StoreError> {
        self.update(
            id,
            "requeued",
            ACTIVE,
            "UPDATE jobs SET state = 'waiting', size = ?2, mtime_ns = ?3, next_chunk = 1,
                total_chunks = NULL, chunk_size = NULL, bytes_sent = 0, sending_us = 0,
                pause_reason = NULL, updated_at = ?4
             WHERE id = ?1",
            params![id, size, mtime_ns, Stamp(now())],
        )
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
        self.write(|tx| transition(tx, id, action, allowed, sql, params))
    }
}

/// Runs `f` in one IMMEDIATE transaction whose commit does not wait for the disk: WAL with
/// `synchronous = NORMAL` for it alone, then FULL again. For chunk progress only: its commit
/// is in the log, so a crash or `kill -9` loses nothing (the operating system writes it);
/// a power cut may lose the last few, and the upload then resumes from an earlier chunk, which
/// the server refuses as out of order, and starts again at chunk 1 on the same video. Waiting
/// for the disk after every chunk instead held the next chunk back: measured, 2-5 ms a chunk on
/// a VM disk, 15 % of an upload of 8 MiB chunks over loopback.
pub(super) fn commit_unsynced<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let run = |conn: &mut Connection| -> Result<T, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    };
    let outcome = run(conn);
    // Every other write waits for the disk: back to FULL whatever happened, and an error
    // doing so is this call's error (the next write must not run unsynced unknowingly).
    conn.pragma_update(None, "synchronous", "FULL")?;
    outcome
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

/// Device and inode of the file at `path`.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// `Ok` while the file at `path` is the one with `expected` identity (or none is expected).
fn check_identity(path: &Path, expected: Option<(u64, u64)>) -> Result<(), StoreError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match file_identity(path) {
        Ok(found) if found == expected => Ok(()),
        Ok(_) => Err(StoreError::Vanished {
            path: path.to_path_buf(),
            what: "replaced by another file",
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Vanished {
            path: path.to_path_buf(),
            what: "deleted",
        }),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
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

/// The body of [`JobStore::update`], for methods that chain several steps in one transaction.
fn transition(
    tx: &Transaction<'_>,
    id: i64,
    action: &'static str,
    allowed: &[JobState],
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<(), StoreError> {
    check_state(tx, id, allowed, action)?;
    tx.execute(sql, params)?;
    Ok(())
}

// The steps that `JobStore::pause_changed` chains, shared with the methods that run each one
// alone, so the combined method cannot drift from them.

fn record_event_in(
    tx: &Transaction<'_>,
    id: i64,
    event: &str,
    detail: &str,
) -> Result<(), StoreError> {
    current_state(tx, id)?;
    insert_event(tx, id, event, detail)
}

fn set_paused_in(tx: &Transaction<'_>, id: i64, reason: &str) -> Result<(), StoreError> {
    transition(
        tx,
        id,
        "paused",
        ACTIVE,
        "UPDATE jobs SET state = 'paused', pause_reason = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, reason, Stamp(now())],
    )
}

fn restart_content_in(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    transition(
        tx,
        id,
        "restarted",
        ACTIVE,
        "UPDATE jobs SET next_chunk = 1, bytes_sent = 0, sending_us = 0, content_ctime_ns = NULL,
         updated_at = ?2 WHERE id = ?1",
        params![id, Stamp(now())],
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Helpers for the store's unit tests, which live next to the code they test in each file.
#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    use super::{Enqueued, NewJob};

    pub(super) fn new_job(dir: &Path, name: &str) -> NewJob {
        NewJob {
            folder: dir.to_path_buf(),
            path: dir.join(name),
            rel_path: PathBuf::from(name),
            size: 1000,
            mtime_ns: 1_700_000_000_000_000_000,
            rule: "size and mtime unchanged for 10s".into(),
        }
    }

    pub(super) fn id_of(e: Enqueued) -> i64 {
        match e {
            Enqueued::New(id) => id,
            Enqueued::AlreadyActive(id) => panic!("expected a new job, got active {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Instant;

    use super::test_support::{id_of, new_job};

    #[test]
    fn a_refused_file_goes_straight_to_finishing_and_is_never_handed_to_a_worker() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let job = NewJob {
            folder: PathBuf::from("/in"),
            path: PathBuf::from("/in/cut.mov"),
            rel_path: PathBuf::from("cut.mov"),
            size: 10,
            mtime_ns: 0,
            rule: "stable 1s".into(),
        };
        let error = JobError {
            status: None,
            message: "no moov box".into(),
            meaning: "the export never finished".into(),
        };
        let id = match store.enqueue_refused(&job, &error, false).unwrap() {
            Enqueued::New(id) => id,
            other => panic!("{other:?}"),
        };
        let stored = store.job(id).unwrap();
        assert_eq!(stored.state, JobState::Finishing);
        assert_eq!(stored.outcome, Some(Outcome::Failed));
        assert_eq!(stored.error.as_ref(), Some(&error));
        assert!(store.next_waiting(&Default::default()).unwrap().is_none());
        // Found again while its move is pending: nothing new.
        assert_eq!(
            store.enqueue_refused(&job, &error, false).unwrap(),
            Enqueued::AlreadyActive(id)
        );
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
            store
                .record_progress(a, 3, 5, 1024, 2048, std::time::Duration::ZERO)
                .unwrap();
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
        store
            .record_progress(id, 2, 2, 512, 512, std::time::Duration::ZERO)
            .unwrap();
        store
            .record_progress(id, 3, 2, 512, 1000, std::time::Duration::ZERO)
            .unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("abc123"), None)
            .unwrap();
        let finishing = store.job(id).unwrap();
        assert_eq!(finishing.state, JobState::Finishing);
        assert_eq!(finishing.attempts, 2);
        assert_eq!(finishing.sha256.as_deref(), Some("abc123"));

        // No more progress or a second verdict once decided.
        assert!(matches!(
            store.record_progress(id, 1, 2, 512, 0, std::time::Duration::ZERO),
            Err(StoreError::WrongState { .. })
        ));
        // Progress alone is committed without waiting for the disk, refused or not.
        let synchronous: i64 = store
            .lock()
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL again after progress");
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

    /// Bytes of the database and its WAL, as anyone reading the state dir would see them.
    fn raw_store_bytes(state_dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            let path = state_dir.join(format!("{DB_FILE_NAME}{suffix}"));
            if let Ok(more) = fs::read(path) {
                bytes.extend(more);
            }
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_job_that_ends_keeps_no_upload_url_not_even_in_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            let id = id_of(
                store
                    .enqueue(new_job(dir.path(), &format!("{name}.mov")))
                    .unwrap(),
            );
            store.start_attempt(id).unwrap();
            // A renewal replaces the first URL: neither may linger.
            for renewal in ["", "renewed"] {
                let url = format!("https://up.example/x?__token__=1~SECRET{name}SECRET{renewal}");
                store.record_url(id, &url, now()).unwrap();
                store
                    .record_event(id, "url renewed", "new upload URL")
                    .unwrap();
            }
            ids.push(id);
        }
        store.decide(ids[0], Outcome::Uploaded, None, None).unwrap();
        assert_eq!(store.job(ids[0]).unwrap().upload_url, None);
        assert_eq!(store.job(ids[0]).unwrap().url_issued_at, None);
        store.mark_moved(ids[0], Path::new("/done/a.mov")).unwrap();
        store.forget(ids[1], "deleted").unwrap();
        assert_eq!(store.job(ids[1]).unwrap().upload_url, None);
        // Still uploading: it needs its URL to resume.
        assert!(store.job(ids[2]).unwrap().upload_url.is_some());
        drop(store);

        let bytes = raw_store_bytes(dir.path());
        assert!(!contains(&bytes, "SECRETaSECRET"));
        assert!(!contains(&bytes, "SECRETbSECRET"));
        // The search would see a token that is there.
        assert!(contains(&bytes, "SECRETcSECRET"));
    }

    #[test]
    fn finished_jobs_older_than_the_limit_are_pruned_with_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let done = id_of(store.enqueue(new_job(dir.path(), "done.mov")).unwrap());
        store.decide(done, Outcome::Uploaded, None, None).unwrap();
        store.mark_moved(done, Path::new("/done/done.mov")).unwrap();
        let gone = id_of(store.enqueue(new_job(dir.path(), "gone.mov")).unwrap());
        store.forget(gone, "deleted").unwrap();
        let finishing = id_of(store.enqueue(new_job(dir.path(), "finishing.mov")).unwrap());
        store
            .decide(finishing, Outcome::Failed, None, None)
            .unwrap();
        let waiting = id_of(store.enqueue(new_job(dir.path(), "waiting.mov")).unwrap());
        // A store from a hotfolder that kept the URL of finished jobs.
        store
            .lock()
            .execute(
                "UPDATE jobs SET upload_url = 'https://up/x?__token__=1~old' WHERE id = ?1",
                params![done],
            )
            .unwrap();

        let hour = time::Duration::hours(1);
        assert_eq!(store.prune_finished(now() - hour).unwrap(), 0);
        assert_eq!(store.job(done).unwrap().upload_url, None);
        assert_eq!(store.prune_finished(now() + hour).unwrap(), 2);
        assert!(matches!(store.job(done), Err(StoreError::UnknownJob(_))));
        assert!(matches!(store.job(gone), Err(StoreError::UnknownJob(_))));
        let events: i64 = store
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE job_id IN (?1, ?2)",
                params![done, gone],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(events, 0);
        // Unfinished jobs stay, however old.
        assert_eq!(store.job(finishing).unwrap().state, JobState::Finishing);
        assert_eq!(store.job(waiting).unwrap().state, JobState::Waiting);

        // Many more than one batch.
        let many: Vec<NewJob> = (0..PRUNE_BATCH * 2 + 7)
            .map(|i| new_job(dir.path(), &format!("old-{i}.mov")))
            .collect();
        for enqueued in store.enqueue_many(&many).unwrap() {
            store.forget(id_of(enqueued), "deleted").unwrap();
        }
        assert_eq!(
            store.prune_finished(now() + hour).unwrap(),
            PRUNE_BATCH * 2 + 7
        );
        assert_eq!(store.summary().unwrap().gone, 0);
    }

    #[test]
    fn a_database_deleted_or_replaced_under_the_store_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store.still_in_place().unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(dir.path().join(format!("{DB_FILE_NAME}{suffix}")));
        }
        let err = store.still_in_place().unwrap_err();
        assert!(err.to_string().contains("was deleted"), "{err}");
        assert!(err.to_string().contains(DB_FILE_NAME), "{err}");
        drop(JobStore::open(dir.path()).unwrap());
        let err = store.still_in_place().unwrap_err();
        assert!(
            err.to_string().contains("replaced by another file"),
            "{err}"
        );
        // A reader (`status`) never claims a file.
        JobStore::open_read_only(dir.path())
            .unwrap()
            .still_in_place()
            .unwrap();
    }

    /// SQLite's own "database or disk is full" (here its page limit) is an outage to wait out,
    /// not a refusal of the request.
    #[test]
    fn a_full_store_is_a_retryable_failure_and_a_refusal_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let pages: i64 = store
            .lock()
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        store
            .lock()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let jobs: Vec<NewJob> = (0..2000)
            .map(|i| new_job(dir.path(), &format!("clip-with-a-long-name-{i:05}.mov")))
            .collect();
        let err = store.enqueue_many(&jobs).unwrap_err();
        assert!(err.retryable(), "{err:?}");
        assert!(
            crate::chain(&err).contains("full"),
            "{}",
            crate::chain(&err)
        );
        let err = store.probe_write();
        // Nothing was written, and a small write may still fit in the last page.
        assert!(err.is_ok() || err.is_err_and(|e| e.retryable()));
        assert!(!store.start_attempt(77).unwrap_err().retryable());
        assert!(
            !StoreError::WrongState {
                id: 1,
                state: JobState::Done,
                action: "started"
            }
            .retryable()
        );
    }

    #[test]
    fn changed_file_restarts_content_on_the_same_video() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store.start_attempt(id).unwrap();
        store.record_video(id, "v9").unwrap();
        store
            .record_progress(id, 4, 10, 100, 300, std::time::Duration::ZERO)
            .unwrap();
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
        store
            .record_progress(id, 3, 50, 100, 200, std::time::Duration::ZERO)
            .unwrap();
        store.restart_content(id).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!((job.next_chunk, job.bytes_sent), (1, 0));
        assert_eq!(job.video_id.as_deref(), Some("v9"));
    }

    #[test]
    fn pause_changed_is_the_three_steps_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let started = |name: &str| {
            let id = id_of(store.enqueue(new_job(dir.path(), name)).unwrap());
            store.start_attempt(id).unwrap();
            store.record_video(id, "v7").unwrap();
            store
                .record_progress(id, 4, 10, 100, 300, std::time::Duration::ZERO)
                .unwrap();
            id
        };
        let why = "size 1000 -> 1200";
        let reason = "the file changed; waiting until it is stable";
        let combined = started("a.mov");
        let stepwise = started("b.mov");
        store.pause_changed(combined, why, reason).unwrap();
        store.record_event(stepwise, "changed", why).unwrap();
        store.set_paused(stepwise, reason).unwrap();
        store.restart_content(stepwise).unwrap();

        let job = store.job(combined).unwrap();
        assert_eq!(job.state, JobState::Paused);
        assert_eq!(job.pause_reason.as_deref(), Some(reason));
        assert_eq!((job.next_chunk, job.bytes_sent), (1, 0));
        assert_eq!(job.video_id.as_deref(), Some("v7"));
        let last = job.events.last().unwrap();
        assert_eq!(
            (last.event.as_str(), last.detail.as_str()),
            ("changed", why)
        );

        // Everything but the ids, paths and clocks matches the three separate calls.
        let same = |job: &Job| {
            (
                job.state,
                job.pause_reason.clone(),
                job.attempts,
                job.video_id.clone(),
                (
                    job.next_chunk,
                    job.total_chunks,
                    job.chunk_size,
                    job.bytes_sent,
                ),
                job.events
                    .iter()
                    .map(|e| (e.event.clone(), e.detail.clone()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(same(&job), same(&store.job(stepwise).unwrap()));

        // A paused job can change again.
        store.pause_changed(combined, "grew again", reason).unwrap();
        assert_eq!(
            store.job(combined).unwrap().events.len(),
            job.events.len() + 1
        );
    }

    #[test]
    fn pause_changed_writes_nothing_when_a_step_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.pause_changed(77, "x", "y"),
            Err(StoreError::UnknownJob(77))
        ));

        // Refused by the pause's state guard: the event, which on its own would be recorded
        // (any state), is rolled back with it.
        let decided = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store
            .decide(decided, Outcome::Uploaded, None, None)
            .unwrap();
        let before = store.job(decided).unwrap();
        assert!(matches!(
            store.pause_changed(decided, "grew", "changed"),
            Err(StoreError::WrongState {
                state: JobState::Finishing,
                action: "paused",
                ..
            })
        ));
        assert_eq!(store.job(decided).unwrap(), before);

        // Refused at the last step, after the event and the pause were written: both are undone.
        let id = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
        store.start_attempt(id).unwrap();
        store
            .record_progress(id, 4, 10, 100, 300, std::time::Duration::ZERO)
            .unwrap();
        let before = store.job(id).unwrap();
        store
            .lock()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse_restart BEFORE UPDATE OF next_chunk ON jobs
                 BEGIN SELECT RAISE(ABORT, 'restart refused by the test'); END;",
            )
            .unwrap();
        let err = store.pause_changed(id, "grew", "changed").unwrap_err();
        let shown = crate::chain(&err);
        assert!(shown.contains("restart refused by the test"), "{shown}");
        assert_eq!(store.job(id).unwrap(), before);
        // The same failure with the three separate calls leaves a half-done change behind.
        store.record_event(id, "changed", "grew").unwrap();
        store.set_paused(id, "changed").unwrap();
        assert!(store.restart_content(id).is_err());
        let half = store.job(id).unwrap();
        assert_eq!((half.state, half.next_chunk), (JobState::Paused, 4));
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
        let err = store
            .record_progress(id, 0, 3, 10, 0, std::time::Duration::ZERO)
            .unwrap_err();
        assert!(err.to_string().contains(DB_FILE_NAME), "{err}");
        assert!(
            store
                .record_progress(id, 5, 3, 10, 0, std::time::Duration::ZERO)
                .is_err()
        );
        assert_eq!(store.job(id).unwrap().next_chunk, 1);
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
        PauseChanged(usize),
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
            any::<usize>().prop_map(Op::PauseChanged),
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
                    | Op::Changed(j) | Op::PauseChanged(j) => pick(&ids, *j),
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
                    (Op::Progress(_, c), Some(id)) => store.record_progress(id, *c, 4, 10, 0, std::time::Duration::ZERO),
                    (Op::Restart(_), Some(id)) => store.restart_content(id),
                    (Op::Decide(_, ok), Some(id)) => {
                        let outcome = if *ok { Outcome::Uploaded } else { Outcome::Failed };
                        store.decide(id, outcome, None, None)
                    }
                    (Op::Moved(_), Some(id)) => store.mark_moved(id, Path::new("/dest")),
                    (Op::Forget(_), Some(id)) => store.forget(id, "vanished"),
                    (Op::Changed(_), Some(id)) => store.requeue_changed(id, 7, 7),
                    (Op::PauseChanged(_), Some(id)) => store.pause_changed(id, "grew", "changed"),
                };
                if result.is_err() {
                    // A refused operation changes nothing.
                    if let Some(id) = target {
                        let now = store.job(id).unwrap();
                        let before = &previous[&id];
                        prop_assert_eq!(now.state, before.state);
                        prop_assert_eq!(now.next_chunk, before.next_chunk);
                        prop_assert_eq!(now.updated_at, before.updated_at);
                        prop_assert_eq!(now.events.len(), before.events.len());
                    }
                }

                let all: Vec<Job> = ids.iter().map(|id| store.job(*id).unwrap()).collect();
                let mut active_paths = std::collections::HashSet::new();
                for job in &all {
                    prop_assert!(job.next_chunk >= 1);
                    if UNFINISHED.contains(&job.state) {
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
