//! How the store is laid out in SQLite: the schema migrations and their version checks, and the
//! mapping between rows and Rust values (jobs, states, timestamps, paths, JSON columns).
//! Nothing here decides *when* a row changes; that is the state machine in `mod.rs`.

use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, Row, ToSql, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Job, JobError, JobEvent, JobState, Outcome, Placed, StoreError};

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
    // v2
    "
    -- Files the running agent is watching settle (waiting out stable_for): only in its memory
    -- otherwise, and `status` is another process. Emptied when the agent starts and stops.
    CREATE TABLE settling (
        path          TEXT    PRIMARY KEY,
        folder        TEXT    NOT NULL,
        size          INTEGER NOT NULL,
        since         TEXT    NOT NULL,
        stable_for_ms INTEGER NOT NULL
    );
    ",
    // v3: the lookup of a video whose create-video answer was lost (vmpro-protocol.md
    // section 4). `marker` is the job's marker keyword, written before the first create is
    // sent and cleared once it is off the platform again; `create_sent_at` is set before each
    // create is sent and cleared when its answer settles it, so a job found with it set (and
    // no video id) after a crash looks its video up instead of creating a second one.
    "
    ALTER TABLE jobs ADD COLUMN marker TEXT;
    ALTER TABLE jobs ADD COLUMN create_sent_at TEXT;
    CREATE INDEX jobs_with_marker ON jobs (state) WHERE marker IS NOT NULL;
    ",
    // v4: how long the acknowledged chunks took to send, for a rate that leaves out waiting.
    "ALTER TABLE jobs ADD COLUMN sending_us INTEGER NOT NULL DEFAULT 0;",
    // v5: a stable file another signal holds back says what it waits for.
    "ALTER TABLE settling ADD COLUMN waiting_for TEXT;",
    // v6: the outbox of `[[notify]]` (see `outbox.rs`). An event is written in the transaction
    // of the change that causes it, with one `notify_pending` row per destination that
    // subscribes to it (`notify_routes`, replaced at each start and reload); a row goes when
    // its destination took the event or gave it up, an event when its last row went.
    // Destinations are named by a hash, never by their URL, which may carry a token.
    "
    CREATE TABLE notify_routes (
        destination TEXT PRIMARY KEY,
        events      TEXT NOT NULL
    );
    CREATE TABLE notify_events (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        id     TEXT    NOT NULL UNIQUE,
        event  TEXT    NOT NULL,
        at     TEXT    NOT NULL,
        body   TEXT    NOT NULL
    );
    CREATE TABLE notify_pending (
        destination TEXT    NOT NULL,
        seq         INTEGER NOT NULL REFERENCES notify_events (seq) ON DELETE CASCADE,
        PRIMARY KEY (destination, seq)
    ) WITHOUT ROWID;
    CREATE INDEX notify_pending_by_seq ON notify_pending (seq);
    ",
    // v7: the VideoManager a job uploads into (set when its first attempt starts, so a resume
    // after a config change stays in the one it started in); when and as what file a job's
    // file was placed in done/ or failed/ (device, inode, size, mtime: `keep_done_for` deletes
    // only that file, and counts from the move, not from the mtime a rename keeps); and what
    // retention did with it (`deleted …` or `kept: …`), so each file is decided once.
    "
    ALTER TABLE jobs ADD COLUMN video_manager_id INTEGER;
    ALTER TABLE jobs ADD COLUMN moved_at TEXT;
    ALTER TABLE jobs ADD COLUMN placed_dev INTEGER;
    ALTER TABLE jobs ADD COLUMN placed_ino INTEGER;
    ALTER TABLE jobs ADD COLUMN placed_size INTEGER;
    ALTER TABLE jobs ADD COLUMN placed_mtime_ns INTEGER;
    ALTER TABLE jobs ADD COLUMN retention TEXT;
    CREATE INDEX jobs_for_retention ON jobs (state, moved_at) WHERE retention IS NULL;
    ",
    // v8: the placed file's ctime, so that `keep_done_for` keeps a
    // file rewritten in place with its mtime set back (`touch -r`), which keeps inode, size
    // and mtime. NULL for files placed before: checked without it.
    "ALTER TABLE jobs ADD COLUMN placed_ctime_ns INTEGER;",
    // v9: following a video's transcoding after its upload (`follow_transcoding`, see
    // `transcoding.rs`). A `transcoding` row is written in the transaction that ends an
    // uploaded job (moved to done/, or removed before the move) whose folder is among
    // `transcoding_folders` (replaced at each start and reload, as `notify_routes` are), and
    // ended (`outcome`) in the transaction that writes its `[[notify]]` event. `since` is the
    // upload's end: the time limit counts from there, across restarts.
    "
    CREATE TABLE transcoding_folders (
        folder TEXT PRIMARY KEY
    );
    CREATE TABLE transcoding (
        job_id       INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        since        TEXT    NOT NULL,
        polls        INTEGER NOT NULL DEFAULT 0,
        last_poll_at TEXT,
        last_answer  TEXT,
        qualities    TEXT,
        ended_at     TEXT,
        outcome      TEXT CHECK (outcome IN ('transcoded', 'slow', 'gone')),
        CHECK ((outcome IS NULL) = (ended_at IS NULL))
    );
    CREATE INDEX transcoding_open ON transcoding (since) WHERE outcome IS NULL;
    ",
    // v10: what a `[[notify]]`
    // destination is, so that its events follow it when its URL, format or place changes
    // (see `outbox::assign_keys`): its `name` from the config, `target` (the hash that was its
    // key until now, so existing rows keep theirs), its place among the tables, its kind, and
    // how logs and `status` show it (masked). And whether its deliveries are failing, since
    // when and why, for `status`, `/metrics` and the page.
    "
    ALTER TABLE notify_routes ADD COLUMN name TEXT;
    ALTER TABLE notify_routes ADD COLUMN target TEXT;
    ALTER TABLE notify_routes ADD COLUMN position INTEGER;
    ALTER TABLE notify_routes ADD COLUMN kind TEXT;
    ALTER TABLE notify_routes ADD COLUMN shown TEXT;
    ALTER TABLE notify_routes ADD COLUMN failing_since TEXT;
    ALTER TABLE notify_routes ADD COLUMN last_error TEXT;
    UPDATE notify_routes SET target = destination,
        kind = substr(destination, 1, instr(destination, '-') - 1);
    ",
    // v11: the link to the platform as uploads measured it, for `chunk_size = "auto"` (see
    // `link.rs`).
    super::link::LINK_TABLE,
    // v12: files found in a watched folder are looked up by the inode hotfolder placed them
    // under in done/, so that one it uploaded is not uploaded again when it reappears (done/
    // renamed inside the folder, `done_dir` changed); without the index, a folder of 10,000
    // new files would read the whole history 10,000 times.
    "CREATE INDEX jobs_placed ON jobs (placed_ino) WHERE placed_ino IS NOT NULL;",
    // v13: the chunk size the server refused and when, so that the cap it set on auto's
    // choice (`link.max_chunk`) expires and `check`/`status` can say why it is there.
    super::link::LINK_REFUSAL_COLUMNS,
    // v14: a job's companion (`metadata_file`) and the calls after its upload, so that a
    // restart mid-upload applies the metadata it started with (see `companion.rs`).
    super::companion::COMPANION_TABLE,
    // v15: the file's inode change time when its upload started, so that a resume after a
    // restart notices content rewritten with its mtime put back (`touch -r`, `rsync
    // --inplace`), which size and mtime alone do not show.
    "ALTER TABLE jobs ADD COLUMN content_ctime_ns INTEGER;",
];

/// Every column of `jobs`, for [`job_from_row`] (which reads them by name).
const JOB_COLUMNS: &str = "id, folder, path, rel_path, size, mtime_ns, rule, state, attempts, \
    video_id, upload_url, url_issued_at, next_chunk, total_chunks, chunk_size, bytes_sent, \
    sha256, outcome, error, pause_reason, detected_at, started_at, finished_at, destination, \
    updated_at, marker, create_sent_at, sending_us, video_manager_id, moved_at, placed_dev, \
    placed_ino, placed_size, placed_mtime_ns, placed_ctime_ns, retention, content_ctime_ns";

/// Brings the schema up to date (or creates it), in one transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// [`migrate`] for a database with other migrations (`hotfolder upload`'s memory).
pub(super) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), StoreError> {
    let run = |conn: &mut Connection| -> Result<(), StoreError> {
        // IMMEDIATE so two processes opening a fresh store do not both run the migrations.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let supported = migrations.len() as i64;
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
        for migration in &migrations[start..] {
            tx.execute_batch(migration)?;
        }
        if start < migrations.len() {
            tx.pragma_update(None, "user_version", supported)?;
        }
        tx.commit()?;
        Ok(())
    };
    run(conn).map_err(|e| e.at(path))
}

/// Checks that a store opened read-only has exactly the schema this hotfolder knows: a reader
/// cannot upgrade an older one, and must not guess at a newer one.
pub(super) fn check_read_only_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported || found < 0 {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    if found < supported {
        return Err(StoreError::NeedsUpgrade {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(())
}

/// `'waiting', 'uploading', …` for an SQL `IN (…)`.
pub(super) fn state_list(states: &[JobState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first job matching `clause` (`WHERE …`), with its events.
pub(super) fn load_job(
    conn: &Connection,
    clause: &str,
    params: &[&dyn ToSql],
) -> Result<Option<Job>, StoreError> {
    Ok(load_jobs(conn, clause, params)?.into_iter().next())
}

/// The jobs matching `clause` (`WHERE … ORDER BY …`), each with its events.
pub(super) fn load_jobs(
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
        sending: std::time::Duration::from_micros(row.get::<_, u64>("sending_us")?),
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
        marker: row.get("marker")?,
        create_sent_at: row.get::<_, Option<Stamp>>("create_sent_at")?.map(|s| s.0),
        video_manager_id: row.get("video_manager_id")?,
        moved_at: row.get::<_, Option<Stamp>>("moved_at")?.map(|s| s.0),
        placed: match (
            row.get::<_, Option<i64>>("placed_dev")?,
            row.get::<_, Option<i64>>("placed_ino")?,
            row.get::<_, Option<u64>>("placed_size")?,
            row.get::<_, Option<i64>>("placed_mtime_ns")?,
        ) {
            // Device and inode are stored bit for bit as i64 (SQLite has no unsigned type).
            (Some(dev), Some(ino), Some(size), Some(mtime_ns)) => Some(Placed {
                identity: (dev as u64, ino as u64),
                size,
                mtime_ns,
                ctime_ns: row.get("placed_ctime_ns")?,
            }),
            _ => None,
        },
        retention: row.get("retention")?,
        content_ctime_ns: row.get("content_ctime_ns")?,
    })
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
pub(super) struct Stamp(pub(super) OffsetDateTime);

pub(super) const STAMP_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
);

impl Stamp {
    /// As it is stored.
    pub(super) fn to_text(&self) -> String {
        self.0
            .to_offset(time::UtcOffset::UTC)
            .format(STAMP_FORMAT)
            .unwrap_or_default()
    }
}

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

/// A value stored as JSON text.
pub(super) struct Json<T>(pub(super) T);

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
pub(super) struct SqlPath<'a>(pub(super) &'a Path);

impl ToSql for SqlPath<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        if let Some(text) = self.0.to_str() {
            return Ok(ToSqlOutput::from(text));
        }
        use std::os::unix::ffi::OsStrExt;
        Ok(ToSqlOutput::Owned(Value::Blob(
            self.0.as_os_str().as_bytes().to_vec(),
        )))
    }
}

/// A path read back from a column written as [`SqlPath`].
pub(super) struct OwnedPath(pub(super) PathBuf);

impl FromSql for OwnedPath {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                use std::os::unix::ffi::OsStrExt;
                Ok(OwnedPath(PathBuf::from(std::ffi::OsStr::from_bytes(bytes))))
            }
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DB_FILE_NAME, JobStore};

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
                    supported,
                    ..
                } if supported == MIGRATIONS.len() as i64
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
    fn a_v1_store_is_upgraded_with_its_jobs_and_a_reader_waits_for_that() {
        use crate::store::test_support::{id_of, new_job};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate_with(&mut conn, &path, &MIGRATIONS[..1]).unwrap();
        }
        assert!(matches!(
            JobStore::open_read_only(dir.path()),
            Err(StoreError::NeedsUpgrade { found: 1, .. })
        ));
        {
            // Jobs written by the version before.
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO jobs (folder, path, rel_path, size, mtime_ns, rule, state,
                     detected_at, updated_at)
                 VALUES ('/in', '/in/a.mov', 'a.mov', 1, 0, 'old', 'waiting',
                     '2025-01-31T12:00:00.000000000Z', '2025-01-31T12:00:00.000000000Z')",
                [],
            )
            .unwrap();
        }
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.summary().unwrap().waiting, 1);
        assert!(store.settling().unwrap().is_empty());
        let id = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
        assert_eq!(store.job(id).unwrap().rule, new_job(dir.path(), "b").rule);
        assert!(JobStore::open_read_only(dir.path()).is_ok());
    }

    #[test]
    fn a_version_1_store_is_upgraded_and_its_jobs_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO jobs (folder, path, rel_path, size, mtime_ns, rule, state,
                    video_id, detected_at, updated_at)
                 VALUES ('/in', '/in/a.mov', 'a.mov', 5, 0, 'r', 'uploading', 'v1',
                    '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z')",
                [],
            )
            .unwrap();
        }
        // A reader cannot upgrade it; the writer does, and the job is still there.
        assert!(matches!(
            JobStore::open_read_only(dir.path()),
            Err(StoreError::NeedsUpgrade { found: 1, .. })
        ));
        let store = JobStore::open(dir.path()).unwrap();
        let job = store.unfinished().unwrap().remove(0);
        assert_eq!(job.video_id.as_deref(), Some("v1"));
        assert_eq!((job.marker, job.create_sent_at), (None, None));
        store
            .record_create_sent(job.id, Some("hotfolder-x"))
            .unwrap();
        assert_eq!(
            store.job(job.id).unwrap().marker.as_deref(),
            Some("hotfolder-x")
        );
        drop(store);
        assert!(JobStore::open_read_only(dir.path()).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_round_trip() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        use crate::store::Enqueued;
        use crate::store::test_support::{id_of, new_job};

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
}
