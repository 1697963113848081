//! Files the running agent is watching settle: seen in a watched folder, but their size and
//! mtime have not yet held still for `stable_for`. The stability tracker keeps them in the
//! agent's memory; this table is a copy for `hotfolder status` (another process), written in
//! batches (a folder of 10,000 new files is one transaction, not 10,000 commits), emptied when
//! the agent starts and stops.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Transaction, params};
use time::OffsetDateTime;

use super::schema::{OwnedPath, SqlPath, Stamp};
use super::{JobStore, StoreError};

/// A file waiting out its folder's `stable_for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlingFile {
    pub path: PathBuf,
    /// The watched folder it lies in.
    pub folder: PathBuf,
    pub size: u64,
    /// When the agent first saw this size and mtime; the file is complete once they have held
    /// until `since + stable_for` (the agent looks again then).
    pub since: OffsetDateTime,
    pub stable_for: Duration,
    /// Stable, but held back by another signal: what it waits for ("still open for writing
    /// by ffmpeg (pid 42)", "no moov box yet").
    pub waiting_for: Option<String>,
}

/// One change to the set of settling files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlingChange {
    /// Started settling, or changed again (a new size or mtime restarts its clock).
    Settling(SettlingFile),
    /// No longer settling: complete (now a job), vanished, skipped, or no longer watched.
    Done(PathBuf),
}

impl JobStore {
    /// Applies a batch of changes in one transaction.
    pub fn record_settling(&self, changes: &[SettlingChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(|tx| apply(tx, changes))
    }

    /// Replaces the whole set (after a reload, or after a write failed and changes were lost).
    pub fn replace_settling(&self, files: &[SettlingFile]) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM settling", [])?;
            let changes: Vec<SettlingChange> = files
                .iter()
                .cloned()
                .map(SettlingChange::Settling)
                .collect();
            apply(tx, &changes)
        })
    }

    /// Forgets every settling file: the agent starts with an empty tracker, and one that stops
    /// watches nothing.
    pub fn clear_settling(&self) -> Result<(), StoreError> {
        self.replace_settling(&[])
    }

    /// The settling files, the ones complete soonest first.
    pub fn settling(&self) -> Result<Vec<SettlingFile>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT path, folder, size, since, stable_for_ms, waiting_for FROM settling
                 ORDER BY since, path",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(SettlingFile {
                    path: row.get::<_, OwnedPath>(0)?.0,
                    folder: row.get::<_, OwnedPath>(1)?.0,
                    size: row.get(2)?,
                    since: row.get::<_, Stamp>(3)?.0,
                    stable_for: Duration::from_millis(row.get(4)?),
                    waiting_for: row.get(5)?,
                })
            })?;
            let mut files = rows.collect::<Result<Vec<_>, _>>()?;
            files.sort_by_key(|file| (file.since + file.stable_for, file.path.clone()));
            Ok(files)
        })
    }
}

fn apply(tx: &Transaction<'_>, changes: &[SettlingChange]) -> Result<(), StoreError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO settling (path, folder, size, since, stable_for_ms, waiting_for)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (path) DO UPDATE SET folder = excluded.folder, size = excluded.size,
             since = excluded.since, stable_for_ms = excluded.stable_for_ms,
             waiting_for = excluded.waiting_for",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM settling WHERE path = ?1")?;
    for change in changes {
        match change {
            SettlingChange::Settling(file) => {
                let stable_for_ms = i64::try_from(file.stable_for.as_millis()).unwrap_or(i64::MAX);
                upsert.execute(params![
                    SqlPath(&file.path),
                    SqlPath(&file.folder),
                    file.size,
                    Stamp(file.since),
                    stable_for_ms,
                    file.waiting_for
                ])?;
            }
            SettlingChange::Done(path) => {
                delete.execute(params![SqlPath(path)])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;

    fn file(dir: &Path, name: &str, size: u64) -> SettlingFile {
        SettlingFile {
            path: dir.join(name),
            folder: dir.to_path_buf(),
            size,
            since: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            stable_for: Duration::from_secs(10),
            waiting_for: None,
        }
    }

    #[test]
    fn changes_are_applied_in_order_and_a_reader_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let reader = JobStore::open_read_only(dir.path()).unwrap();
        let a = file(dir.path(), "a.mov", 1);
        let mut grown = a.clone();
        grown.size = 2;
        grown.since += Duration::from_secs(3);
        store
            .record_settling(&[
                SettlingChange::Settling(a.clone()),
                SettlingChange::Settling(file(dir.path(), "b.mov", 5)),
                SettlingChange::Settling(grown.clone()),
                SettlingChange::Done(dir.path().join("b.mov")),
                // Done for a file never recorded: nothing to do, not an error.
                SettlingChange::Done(dir.path().join("never.mov")),
            ])
            .unwrap();
        assert_eq!(reader.settling().unwrap(), [grown.clone()]);
        store.replace_settling(std::slice::from_ref(&a)).unwrap();
        assert_eq!(reader.settling().unwrap(), [a]);
        store.clear_settling().unwrap();
        assert!(reader.settling().unwrap().is_empty());
    }

    #[test]
    fn ten_thousand_settling_files_are_one_quick_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let changes: Vec<SettlingChange> = (0..10_000)
            .map(|i| SettlingChange::Settling(file(dir.path(), &format!("clip{i}.mov"), i)))
            .collect();
        let started = Instant::now();
        store.record_settling(&changes).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(store.settling().unwrap().len(), 10_000);
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    }
}
