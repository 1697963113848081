//! Agent-wide status that is not about any one job, kept in the `meta` table so that
//! `hotfolder status` (another process) can show it: whether the whole queue is paused and why,
//! which VideoManagers' uploads wait because the platform does not know them, which watched
//! folders the running agent cannot see, and how it watches the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use rusqlite::Transaction;

use super::outbox::{notify_folder_in, notify_in};
use super::schema::{Json, STAMP_FORMAT, Stamp};
use super::{JobStore, StoreError, now};
use crate::notify::EventKind;

const META_PAUSE_REASON: &str = "queue_pause_reason";
const META_PAUSE_SINCE: &str = "queue_pause_since";
/// Set while a pause was announced to `[[notify]]` (`paused`) and its `resumed` is still owed;
/// kept across a restart, so the pause a restart interrupted still ends with `resumed`.
const META_PAUSE_ANNOUNCED: &str = "queue_pause_announced";
/// The start of the pause an earlier run was in when it stopped, and when the run that kept it
/// started: a run that meets a pause again soon after (an agent that crash-loops) counts the
/// pause from then, so that it is announced after 2 minutes of pause, not of one run.
const META_PAUSE_CARRIED: &str = "queue_pause_carried_since";
const META_PAUSE_CARRIED_AT: &str = "queue_pause_carried_at";
/// How soon after a start a pause must come back to continue the earlier run's.
const PAUSE_CARRY_WINDOW: Duration = Duration::from_secs(600);
/// When the agent last wrote to learn whether the store can be written again.
const META_WRITE_PROBE: &str = "write_probe_at";
/// Prefix of the meta keys of watched folders the agent cannot see (one key per folder).
const META_FOLDER_MISSING: &str = "folder_missing:";
/// Prefix of the meta keys saying how the running agent watches each folder.
const META_FOLDER_MODE: &str = "folder_mode:";
/// Prefix of the meta keys of VideoManagers whose uploads are held (one key per id).
const META_HELD: &str = "video_manager_held:";

/// A VideoManager the platform answered 404 for: its folders' files wait, the others upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldVideoManager {
    pub id: u64,
    /// Which folders wait, what the platform said, and what to do.
    pub reason: String,
    pub since: OffsetDateTime,
}

/// A [`HeldVideoManager`] as a JSON meta value (the id is in the key).
#[derive(Serialize, Deserialize)]
struct StoredHold {
    reason: String,
    since: String,
}

/// How the running agent watches one folder (see `watch::WatchMode`), as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderMode {
    pub path: PathBuf,
    /// In words: "events + polling every 10 s (fuse.sshfs)".
    pub mode: String,
    /// Native events are in place (for the folder, or the part the system's limits allowed).
    pub events: bool,
    /// The folder is walked at this interval.
    #[serde(with = "optional_millis")]
    pub polling_every: Option<Duration>,
    /// The file system's name, when it could be told.
    pub file_system: Option<String>,
    /// On a network or FUSE file system: writes made elsewhere send no event.
    pub network: bool,
    /// The sysctl to raise when a system limit on watches made the folder poll.
    pub limit_sysctl: Option<String>,
}

/// A duration as whole milliseconds in the stored JSON.
mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

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

/// Deletes every `meta` row whose key starts with `prefix` (one kind of per-folder or
/// per-VideoManager record).
fn delete_meta_under(tx: &Transaction, prefix: &str) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM meta WHERE substr(key, 1, ?2) = ?1",
        params![prefix, prefix.len()],
    )?;
    Ok(())
}

/// Every `meta` row whose key starts with `prefix`: its key and its JSON value.
fn meta_under<T: for<'de> Deserialize<'de>>(
    conn: &Connection,
    prefix: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut statement =
        conn.prepare("SELECT key, value FROM meta WHERE substr(key, 1, ?2) = ?1")?;
    let rows = statement.query_map(params![prefix, prefix.len()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Json<T>>(1)?.0))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A time stored as stamp text; one that cannot be read counts as now.
fn stored_time(text: &str) -> OffsetDateTime {
    time::PrimitiveDateTime::parse(text, STAMP_FORMAT).map_or_else(|_| now(), |t| t.assume_utc())
}

/// The current time as stored in the database.
fn now_text() -> String {
    now().format(STAMP_FORMAT).unwrap_or_default()
}

impl JobStore {
    /// Pauses (`Some(reason)`) or resumes (`None`) the whole queue, for `status`. Changing the
    /// reason of a queue that is already paused keeps the time it was first paused.
    ///
    /// The end of a pause that was announced ([`JobStore::announce_pause`]) is a `resumed`
    /// event, written with it.
    pub fn set_queue_pause(&self, reason: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| {
            match reason {
                Some(reason) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![META_PAUSE_REASON, reason],
                    )?;
                    let since = carried_pause_in(tx)?
                        .map_or_else(|| Stamp(now()).to_text(), |(since, _)| since);
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO NOTHING",
                        params![META_PAUSE_SINCE, since],
                    )?;
                    forget_carried_pause_in(tx)?;
                }
                None => {
                    if pause_announced_in(tx)? {
                        let reason = pause_in(tx)?.map(|(reason, _)| reason);
                        notify_in(tx, EventKind::Resumed, |notice| notice.reason = reason)?;
                        set_pause_announced_in(tx, false)?;
                    }
                    tx.execute(
                        "DELETE FROM meta WHERE key IN (?1, ?2)",
                        params![META_PAUSE_REASON, META_PAUSE_SINCE],
                    )?;
                    forget_carried_pause_in(tx)?;
                }
            }
            Ok(())
        })?;
        if reason.is_none() {
            self.outbox_changed();
        }
        Ok(())
    }

    /// Forgets the pause an earlier run recorded (this run pauses, and says so, only when it
    /// meets the cause itself), but not when it began: a pause this run meets within
    /// [`PAUSE_CARRY_WINDOW`] continues it (its 2 minutes count from the first run's start), so
    /// an agent that crash-loops still announces its pause. Returns whether that earlier pause
    /// is still open, for the first upload that works to close it: its start kept, or its
    /// `resumed` owed (it was announced).
    pub fn forget_queue_pause(&self) -> Result<bool, StoreError> {
        self.write(|tx| {
            let current = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    params![META_PAUSE_SINCE],
                    |row| row.get::<_, String>(0),
                )
                .optional()?;
            match current {
                Some(since) => {
                    set_meta_in(tx, META_PAUSE_CARRIED, &since)?;
                    set_meta_in(tx, META_PAUSE_CARRIED_AT, &Stamp(now()).to_text())?;
                }
                // The last run did not meet the pause again: carried on only while recent.
                None if carried_pause_in(tx)?.is_some() => {}
                None => forget_carried_pause_in(tx)?,
            }
            tx.execute(
                "DELETE FROM meta WHERE key IN (?1, ?2)",
                params![META_PAUSE_REASON, META_PAUSE_SINCE],
            )?;
            Ok(pause_announced_in(tx)? || carried_pause_in(tx)?.is_some())
        })
    }

    /// Moves the start of the pause back by `by`, as if it began that much earlier.
    #[cfg(test)]
    pub(crate) fn backdate_queue_pause(&self, by: Duration) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some((_, since)) = pause_in(tx)? {
                set_meta_in(tx, META_PAUSE_SINCE, &Stamp(since - by).to_text())?;
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
    /// `status`. A folder already missing keeps the time it went missing. Going missing is a
    /// `folder_missing` event and coming back a `folder_back`, each written with the change.
    pub fn set_folder_missing(&self, folder: &Path, why: Option<&str>) -> Result<(), StoreError> {
        let key = format!("{META_FOLDER_MISSING}{}", folder.display());
        self.write(|tx| {
            let before = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    params![key],
                    |row| row.get::<_, Json<StoredMissingFolder>>(0),
                )
                .optional()?;
            match why {
                Some(why) => {
                    if before.is_none() {
                        notify_folder_in(tx, EventKind::FolderMissing, folder, Some(why))?;
                    }
                    let since = before.map_or_else(now_text, |Json(old)| old.since);
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
                    if before.is_some() {
                        notify_folder_in(tx, EventKind::FolderBack, folder, None)?;
                    }
                    tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
                }
            }
            Ok(())
        })?;
        self.outbox_changed();
        Ok(())
    }

    /// Forgets every missing folder but those `still_missing`: the agent looks at its folders
    /// afresh when it starts. Those among `watched` (the folders it just started watching) are
    /// back: a `folder_back` each, since their `folder_missing` went out before the restart.
    pub fn clear_missing_folders(
        &self,
        watched: &[PathBuf],
        still_missing: &[PathBuf],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let missing: Vec<(String, String)> =
                meta_under::<StoredMissingFolder>(tx, META_FOLDER_MISSING)?
                    .into_iter()
                    .map(|(key, stored)| (key, stored.path))
                    .collect();
            let shown =
                |list: &[PathBuf], path: &str| list.iter().any(|p| p.display().to_string() == path);
            for (key, path) in missing {
                if shown(still_missing, &path) {
                    continue;
                }
                if shown(watched, &path) {
                    notify_folder_in(tx, EventKind::FolderBack, Path::new(&path), None)?;
                }
                tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
            }
            Ok(())
        })?;
        self.outbox_changed();
        Ok(())
    }

    /// A folder is no longer watched (a reload removed it): forgotten for `status`, missing or
    /// not, without an event (it is not back, nobody watches it any more).
    pub fn forget_folder(&self, folder: &Path) -> Result<(), StoreError> {
        let missing = format!("{META_FOLDER_MISSING}{}", folder.display());
        let mode = format!("{META_FOLDER_MODE}{}", folder.display());
        self.write(|tx| {
            tx.execute(
                "DELETE FROM meta WHERE key IN (?1, ?2)",
                params![missing, mode],
            )?;
            Ok(())
        })
    }

    /// Records how the running agent watches `folder` (`None`: it does not, or no longer).
    pub fn set_folder_mode(
        &self,
        folder: &Path,
        mode: Option<&FolderMode>,
    ) -> Result<(), StoreError> {
        let key = format!("{META_FOLDER_MODE}{}", folder.display());
        self.write(|tx| {
            match mode {
                Some(mode) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![key, Json(mode)],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
                }
            }
            Ok(())
        })
    }

    /// Forgets every folder's mode: the agent starts or stops watching.
    pub fn clear_folder_modes(&self) -> Result<(), StoreError> {
        self.write(|tx| delete_meta_under(tx, META_FOLDER_MODE))
    }

    /// How the running agent watches each folder, by path.
    pub fn folder_modes(&self) -> Result<Vec<FolderMode>, StoreError> {
        self.read(|conn| {
            let mut modes: Vec<FolderMode> = meta_under(conn, META_FOLDER_MODE)?
                .into_iter()
                .map(|(_, mode)| mode)
                .collect();
            modes.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(modes)
        })
    }

    /// Holds (`Some(reason)`) or releases (`None`) the uploads into VideoManager `id`, for
    /// `status`. A hold whose reason changes keeps the time it began. A new hold is a `paused`
    /// event for `[[notify]]` at once (a config to fix, not an outage that may pass within
    /// the 2 minutes a queue pause waits), its release a `resumed`, written with the change.
    pub fn set_video_manager_held(&self, id: u64, reason: Option<&str>) -> Result<(), StoreError> {
        let key = format!("{META_HELD}{id}");
        self.write(|tx| {
            let before = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    params![key],
                    |row| row.get::<_, Json<StoredHold>>(0),
                )
                .optional()?
                .map(|Json(held)| held);
            match reason {
                Some(reason) => {
                    if before.is_none() {
                        notify_in(tx, EventKind::Paused, |notice| {
                            notice.reason =
                                Some(format!("uploads into VideoManager {id} held: {reason}"));
                        })?;
                    }
                    let since = before.map_or_else(now_text, |held| held.since);
                    let value = StoredHold {
                        reason: reason.to_owned(),
                        since,
                    };
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![key, Json(&value)],
                    )?;
                }
                None => {
                    if let Some(held) = before {
                        notify_in(tx, EventKind::Resumed, |notice| {
                            notice.reason = Some(format!(
                                "uploads into VideoManager {id} were held: {}",
                                held.reason
                            ));
                        })?;
                    }
                    tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
                }
            }
            Ok(())
        })?;
        self.outbox_changed();
        Ok(())
    }

    /// Forgets every hold: the agent learns afresh, when it starts, which VideoManagers the
    /// platform knows.
    pub fn clear_held_video_managers(&self) -> Result<(), StoreError> {
        self.write(|tx| delete_meta_under(tx, META_HELD))
    }

    /// The VideoManagers whose uploads are held, oldest first.
    pub fn held_video_managers(&self) -> Result<Vec<HeldVideoManager>, StoreError> {
        self.read(|conn| {
            let mut held = Vec::new();
            for (key, stored) in meta_under::<StoredHold>(conn, META_HELD)? {
                let Some(Ok(id)) = key.strip_prefix(META_HELD).map(str::parse) else {
                    continue;
                };
                held.push(HeldVideoManager {
                    id,
                    reason: stored.reason,
                    since: stored_time(&stored.since),
                });
            }
            held.sort_by_key(|held| held.since);
            Ok(held)
        })
    }

    /// Watched folders the running agent cannot see, oldest first.
    pub fn missing_folders(&self) -> Result<Vec<MissingFolder>, StoreError> {
        self.read(|conn| {
            let mut folders: Vec<MissingFolder> =
                meta_under::<StoredMissingFolder>(conn, META_FOLDER_MISSING)?
                    .into_iter()
                    .map(|(_, stored)| MissingFolder {
                        since: stored_time(&stored.since),
                        path: PathBuf::from(stored.path),
                        why: stored.why,
                    })
                    .collect();
            folders.sort_by_key(|folder| folder.since);
            Ok(folders)
        })
    }
}

/// The queue's pause, if any: its reason and when it began.
pub(super) fn pause_in(
    tx: &Transaction<'_>,
) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
    let get = |key: &str| -> Result<Option<String>, StoreError> {
        Ok(tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    };
    let (Some(reason), Some(since)) = (get(META_PAUSE_REASON)?, get(META_PAUSE_SINCE)?) else {
        return Ok(None);
    };
    Ok(time::PrimitiveDateTime::parse(&since, STAMP_FORMAT)
        .ok()
        .map(|since| (reason, since.assume_utc())))
}

/// The start of an earlier run's pause (as stored text) and when it was carried over, while
/// that was within [`PAUSE_CARRY_WINDOW`].
fn carried_pause_in(tx: &Transaction<'_>) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
    let get = |key: &str| -> Result<Option<String>, StoreError> {
        Ok(tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    };
    let (Some(since), Some(at)) = (get(META_PAUSE_CARRIED)?, get(META_PAUSE_CARRIED_AT)?) else {
        return Ok(None);
    };
    let Ok(at) = time::PrimitiveDateTime::parse(&at, STAMP_FORMAT).map(|t| t.assume_utc()) else {
        return Ok(None);
    };
    Ok((now() - at < PAUSE_CARRY_WINDOW).then_some((since, at)))
}

fn forget_carried_pause_in(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM meta WHERE key IN (?1, ?2)",
        params![META_PAUSE_CARRIED, META_PAUSE_CARRIED_AT],
    )?;
    Ok(())
}

fn set_meta_in(tx: &Transaction<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Whether a pause was announced and its `resumed` is still owed.
pub(super) fn pause_announced_in(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?1)",
        params![META_PAUSE_ANNOUNCED],
        |row| row.get(0),
    )?)
}

pub(super) fn set_pause_announced_in(
    tx: &Transaction<'_>,
    announced: bool,
) -> Result<(), StoreError> {
    if announced {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![META_PAUSE_ANNOUNCED, now_text()],
        )?;
    } else {
        tx.execute(
            "DELETE FROM meta WHERE key = ?1",
            params![META_PAUSE_ANNOUNCED],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_video_managers_keep_their_start_until_released_or_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert!(store.held_video_managers().unwrap().is_empty());
        store.set_video_manager_held(999, Some("unknown")).unwrap();
        store
            .set_video_manager_held(7, Some("unknown too"))
            .unwrap();
        let first = store.held_video_managers().unwrap();
        assert_eq!(
            first.iter().map(|h| h.id).collect::<Vec<_>>(),
            [999, 7],
            "oldest first"
        );
        store
            .set_video_manager_held(999, Some("still unknown"))
            .unwrap();
        let held = store.held_video_managers().unwrap();
        assert_eq!(held[0].reason, "still unknown");
        assert_eq!(
            held[0].since, first[0].since,
            "a new reason keeps the start"
        );
        store.set_video_manager_held(999, None).unwrap();
        assert_eq!(store.held_video_managers().unwrap()[0].id, 7);
        store.clear_held_video_managers().unwrap();
        assert!(store.held_video_managers().unwrap().is_empty());
    }

    #[test]
    fn a_hold_is_announced_at_once_and_its_release_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[crate::store::NotifyRoute::for_tests(
                "hook",
                &[EventKind::Paused, EventKind::Resumed],
            )])
            .unwrap();
        store.set_video_manager_held(999, Some("unknown")).unwrap();
        // A probe that fails again is no news.
        store.set_video_manager_held(999, Some("unknown")).unwrap();
        store.set_video_manager_held(999, None).unwrap();
        store.set_video_manager_held(999, None).unwrap();
        let sent: Vec<(String, String)> = store
            .pending_notices("hook", 10)
            .unwrap()
            .into_iter()
            .map(|p| (p.notice.event, p.notice.reason.unwrap_or_default()))
            .collect();
        assert_eq!(
            sent,
            [
                (
                    "paused".to_owned(),
                    "uploads into VideoManager 999 held: unknown".to_owned()
                ),
                (
                    "resumed".to_owned(),
                    "uploads into VideoManager 999 were held: unknown".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn folder_modes_are_kept_per_folder_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert!(store.folder_modes().unwrap().is_empty());
        let share = FolderMode {
            path: PathBuf::from("/mnt/share"),
            mode: "events + polling every 10 s (fuse.sshfs)".into(),
            events: true,
            polling_every: Some(Duration::from_secs(10)),
            file_system: Some("fuse.sshfs".into()),
            network: true,
            limit_sysctl: None,
        };
        let local = FolderMode {
            path: PathBuf::from("/srv/exports"),
            mode: "events (ext4)".into(),
            events: true,
            polling_every: None,
            file_system: Some("ext4".into()),
            network: false,
            limit_sysctl: None,
        };
        store.set_folder_mode(&local.path, Some(&local)).unwrap();
        store.set_folder_mode(&share.path, Some(&share)).unwrap();
        assert_eq!(
            store.folder_modes().unwrap(),
            [share.clone(), local.clone()]
        );
        let limited = FolderMode {
            mode: "polling every 10 s (ext4; no events: ...)".into(),
            events: false,
            polling_every: Some(Duration::from_secs(10)),
            limit_sysctl: Some("fs.inotify.max_user_watches".into()),
            ..local.clone()
        };
        store.set_folder_mode(&local.path, Some(&limited)).unwrap();
        store.set_folder_mode(&share.path, None).unwrap();
        assert_eq!(store.folder_modes().unwrap(), [limited]);
        store.clear_folder_modes().unwrap();
        assert!(store.folder_modes().unwrap().is_empty());
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
}
