//! Agent-wide status that is not about any one job, kept in the `meta` table so that
//! `hotfolder status` (another process) can show it: whether the whole queue is paused and why,
//! and which watched folders the running agent cannot see.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::schema::{Json, STAMP_FORMAT, Stamp};
use super::{JobStore, StoreError, now};

const META_PAUSE_REASON: &str = "queue_pause_reason";
const META_PAUSE_SINCE: &str = "queue_pause_since";
/// When the agent last wrote to learn whether the store can be written again.
const META_WRITE_PROBE: &str = "write_probe_at";
/// Prefix of the meta keys of watched folders the agent cannot see (one key per folder).
const META_FOLDER_MISSING: &str = "folder_missing:";

/// A watched folder the running agent cannot see: deleted, renamed, unmounted or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFolder {
    pub path: PathBuf,
    pub why: String,
    pub since: OffsetDateTime,
}

/// A [`MissingFolder`] as a JSON meta value; `since` is stamp text, like every stored time.
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

impl JobStore {
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

    /// A small write, to learn whether the store can be written again after a failure.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![META_WRITE_PROBE, Stamp(now())],
            )?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
