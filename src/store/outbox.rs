//! The outbox of `[[notify]]`: events waiting for their destinations, in the same database as
//! the jobs so that an event is written in the transaction of the change that causes it (a
//! crash cannot record a file as failed and lose its `failed` event, nor the other way round).
//!
//! One `notify_events` row per event (its `id` and JSON body, fixed once) and one
//! `notify_pending` row per destination still owed it. Rows per event and destination rather
//! than a read cursor per destination, because each pair has a fate of its own: a destination
//! that refuses one event (a 4xx) or is dead for a day drops just its own rows, "pending" is a
//! count, and a destination removed from the config takes its rows with it. The routes (which
//! destination wants which kinds) are a table too, so the insert is one `INSERT … SELECT` in
//! whatever transaction causes the event, with no config passed around.

use std::path::Path;
use std::sync::atomic::Ordering;

use rusqlite::{OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::schema::{OwnedPath, Stamp};
use super::{JobError, JobStore, Outcome, StoreError, now};
use crate::notify::{EventKind, Notice, path_text};

/// One destination as the config has it now, and the kinds of event it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRoute {
    /// `[[notify]] name`: the identity that survives any change of URL, format or place.
    pub name: Option<String>,
    /// What it is, without showing it: a hash of the URL and format, or of the addresses.
    pub target: String,
    /// Its place among the `[[notify]]` tables, from 1.
    pub position: usize,
    /// `webhook` or `email`.
    pub kind: &'static str,
    /// How logs, `status` and `/metrics` name it: `notify[2] (https://hooks.example.com/…)`.
    pub shown: String,
    pub events: Vec<EventKind>,
}

#[cfg(test)]
impl NotifyRoute {
    /// A webhook route at place 1 whose target (and so its key, when new) is `target`.
    pub(crate) fn for_tests(target: &str, events: &[EventKind]) -> NotifyRoute {
        NotifyRoute {
            name: None,
            target: target.to_owned(),
            position: 1,
            kind: "webhook",
            shown: format!("notify[1] ({target})"),
            events: events.to_vec(),
        }
    }
}

/// A destination as the store knew it before the routes were replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRoute {
    key: String,
    name: Option<String>,
    target: Option<String>,
    position: Option<usize>,
    kind: Option<String>,
    shown: Option<String>,
}

/// What replacing the routes did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutesSet {
    /// The key each route's events are kept under, in the order of the routes given.
    pub keys: Vec<String>,
    /// Destinations no longer configured that were still owed events: how each is shown, and
    /// how many of its events were dropped.
    pub removed: Vec<(String, u64)>,
    /// Events dropped because their destination no longer wants their kind.
    pub unwanted: u64,
}

/// Which stored destination each route is, so that the events it is owed follow it:
///
/// 1. the same `name`;
/// 2. else the same target (URL and format, or addresses): the same destination, moved;
/// 3. else, for a route whose old self had no name, the same place and kind: the table the
///    user edited (a new URL, another format);
/// 4. else a new destination, with a key of its own.
///
/// Each stored destination is claimed once; one nobody claims is gone, with its events.
fn assign_keys(old: &[StoredRoute], new: &[NotifyRoute]) -> Vec<String> {
    let mut claimed = vec![false; old.len()];
    let mut keys: Vec<Option<String>> = vec![None; new.len()];
    let claim = |keys: &mut Vec<Option<String>>,
                 claimed: &mut Vec<bool>,
                 same: &dyn Fn(&StoredRoute, &NotifyRoute) -> bool| {
        for (i, route) in new.iter().enumerate() {
            if keys[i].is_some() {
                continue;
            }
            if let Some(j) = (0..old.len()).find(|&j| !claimed[j] && same(&old[j], route)) {
                claimed[j] = true;
                keys[i] = Some(old[j].key.clone());
            }
        }
    };
    claim(&mut keys, &mut claimed, &|old, new| {
        new.name.is_some() && old.name == new.name
    });
    claim(&mut keys, &mut claimed, &|old, new| {
        old.target.as_deref() == Some(new.target.as_str())
    });
    claim(&mut keys, &mut claimed, &|old, new| {
        old.name.is_none()
            && old.position == Some(new.position)
            && old.kind.as_deref() == Some(new.kind)
    });
    let taken: Vec<String> = keys.iter().flatten().cloned().collect();
    keys.into_iter()
        .zip(new)
        .map(|(key, route)| {
            key.unwrap_or_else(|| {
                if taken.contains(&route.target) {
                    format!("{}-{}", route.target, uuid::Uuid::new_v4().simple())
                } else {
                    route.target.clone()
                }
            })
        })
        .collect()
}

/// One destination's backlog, for `status`, the page and `/metrics`: how many events wait for
/// it, since when, and whether its deliveries are failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyBacklog {
    /// As log lines show it: `notify[2] (https://hooks.example.com/…)`.
    pub shown: String,
    /// Its `destination` label in `/metrics`: its name, else `notify[2]`.
    pub label: String,
    pub pending: u64,
    /// When the oldest event it is owed happened.
    pub oldest: Option<OffsetDateTime>,
    /// Since when its deliveries fail (its first failure in a row), and the last reason logged.
    pub failing_since: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

/// An event a destination is still owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotice {
    /// The order events happened in; what a destination's rows are sent by.
    pub seq: i64,
    /// When it was written to the outbox: after [`crate::notify::GIVE_UP_AFTER`] it is dropped.
    pub queued_at: OffsetDateTime,
    /// The body exactly as stored: what is sent and signed, byte for byte, on every try.
    pub body: String,
    pub notice: Notice,
}

/// `,failed,paused,`: a list `instr` can look a kind up in.
fn route_events(events: &[EventKind]) -> String {
    let mut text = String::from(",");
    for kind in events {
        text.push_str(kind.as_str());
        text.push(',');
    }
    text
}

/// Writes an event of `kind` for every destination that wants it, in the caller's transaction;
/// `fill` adds what the event is about. Nothing is written when no destination wants it.
pub(super) fn notify_in(
    tx: &Transaction<'_>,
    kind: EventKind,
    fill: impl FnOnce(&mut Notice),
) -> Result<(), StoreError> {
    let wanted: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM notify_routes WHERE instr(events, ',' || ?1 || ',') > 0)",
        )?
        .query_row(params![kind.as_str()], |row| row.get(0))?;
    if !wanted {
        return Ok(());
    }
    let at = now();
    let mut notice = Notice::new(kind, at);
    fill(&mut notice);
    let body = serde_json::to_string(&notice)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached("INSERT INTO notify_events (id, event, at, body) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![notice.id, kind.as_str(), Stamp(at), body])?;
    let seq = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO notify_pending (destination, seq)
         SELECT destination, ?1 FROM notify_routes WHERE instr(events, ',' || ?2 || ',') > 0",
    )?
    .execute(params![seq, kind.as_str()])?;
    Ok(())
}

/// An event about job `id`'s file: `uploaded` or `failed` by its outcome when `kind` is
/// `None`. Read inside the transaction, so it says what the change just recorded.
pub(super) fn notify_job_in(
    tx: &Transaction<'_>,
    id: i64,
    kind: Option<EventKind>,
) -> Result<(), StoreError> {
    notify_job_about(tx, id, kind, None)
}

/// An event of `kind` about job `id`'s file whose `reason` is `reason` (not the job's error).
pub(super) fn notify_job_with_reason_in(
    tx: &Transaction<'_>,
    id: i64,
    kind: EventKind,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    notify_job_about(tx, id, Some(kind), Some(reason))
}

/// [`notify_job_in`], with `reason` given (`Some`) or taken from the job's error (`None`).
fn notify_job_about(
    tx: &Transaction<'_>,
    id: i64,
    kind: Option<EventKind>,
    reason: Option<Option<&str>>,
) -> Result<(), StoreError> {
    let row = tx
        .prepare_cached(
            "SELECT folder, rel_path, size, video_id, sha256, outcome, error FROM jobs WHERE id = ?1",
        )?
        .query_row(params![id], |row| {
            Ok((
                row.get::<_, OwnedPath>(0)?.0,
                row.get::<_, OwnedPath>(1)?.0,
                row.get::<_, u64>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, Option<Outcome>>(5)?,
                row.get::<_, Option<super::schema::Json<JobError>>>(6)?
                    .map(|j| j.0),
            ))
        })
        .optional()?;
    let Some((folder, rel_path, size, video_id, sha256, outcome, error)) = row else {
        return Err(StoreError::UnknownJob(id));
    };
    let kind = match (kind, outcome) {
        (Some(kind), _) => kind,
        (None, Some(Outcome::Uploaded)) => EventKind::Uploaded,
        (None, _) => EventKind::Failed,
    };
    notify_in(tx, kind, |notice| {
        notice.folder = Some(path_text(&folder));
        notice.file = Some(path_text(&rel_path));
        notice.size = Some(size);
        notice.video_id = video_id;
        notice.sha256 = sha256;
        notice.reason = match reason {
            Some(reason) => reason.map(str::to_owned),
            None => error.map(|e| e.in_words()),
        };
    })
}

/// An event about a watched folder.
pub(super) fn notify_folder_in(
    tx: &Transaction<'_>,
    kind: EventKind,
    folder: &Path,
    why: Option<&str>,
) -> Result<(), StoreError> {
    notify_in(tx, kind, |notice| {
        notice.folder = Some(path_text(folder));
        notice.reason = why.map(str::to_owned);
    })
}

impl JobStore {
    /// Replaces the destinations and what each wants (at start and at each reload). Each
    /// keeps the events it is owed under its key when it is the same destination as before
    /// (see [`assign_keys`]); a destination no longer configured loses them, and one that no
    /// longer wants a kind loses those of that kind: both counted, to log.
    pub fn set_notify_routes(&self, routes: &[NotifyRoute]) -> Result<RoutesSet, StoreError> {
        let set = self.write(|tx| {
            let old = stored_routes(tx)?;
            let keys = assign_keys(&old, routes);
            let mut removed = Vec::new();
            for gone in old.iter().filter(|old| !keys.contains(&old.key)) {
                let dropped = tx.execute(
                    "DELETE FROM notify_pending WHERE destination = ?1",
                    params![gone.key],
                )? as u64;
                if dropped > 0 {
                    let shown = gone.shown.clone().unwrap_or_else(|| {
                        format!(
                            "a {} destination",
                            gone.kind.as_deref().unwrap_or("removed")
                        )
                    });
                    removed.push((shown, dropped));
                }
            }
            tx.execute("DELETE FROM notify_routes", [])?;
            for (route, key) in routes.iter().zip(&keys) {
                tx.execute(
                    "INSERT OR REPLACE INTO notify_routes
                        (destination, events, name, target, position, kind, shown)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        key,
                        route_events(&route.events),
                        route.name,
                        route.target,
                        route.position as i64,
                        route.kind,
                        route.shown
                    ],
                )?;
            }
            let unwanted = tx.execute(
                "DELETE FROM notify_pending WHERE NOT EXISTS (
                    SELECT 1 FROM notify_routes r JOIN notify_events e
                    ON instr(r.events, ',' || e.event || ',') > 0
                    WHERE r.destination = notify_pending.destination
                      AND e.seq = notify_pending.seq)",
                [],
            )? as u64;
            delete_delivered(tx)?;
            Ok(RoutesSet {
                keys,
                removed,
                unwanted,
            })
        })?;
        self.has_routes.store(!routes.is_empty(), Ordering::Relaxed);
        self.outbox_changed();
        Ok(set)
    }

    /// The keys `routes` would get from [`JobStore::set_notify_routes`], without writing: for
    /// delivering what is owed while the store cannot be written.
    pub fn notify_route_keys(&self, routes: &[NotifyRoute]) -> Result<Vec<String>, StoreError> {
        self.read(|conn| Ok(assign_keys(&stored_routes(conn)?, routes)))
    }

    /// Events not yet delivered (nor given up), counted once per destination owed them.
    pub fn notifications_pending(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM notify_pending")?
                .query_row([], |row| row.get(0))?)
        })
    }

    /// Each configured destination's backlog, in the order of the `[[notify]]` tables.
    pub fn notify_backlog(&self) -> Result<Vec<NotifyBacklog>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT r.destination, r.name, r.position, r.shown, r.failing_since,
                        r.last_error, count(p.seq), min(e.at)
                 FROM notify_routes r
                 LEFT JOIN notify_pending p ON p.destination = r.destination
                 LEFT JOIN notify_events e ON e.seq = p.seq
                 GROUP BY r.destination
                 ORDER BY r.position, r.destination",
            )?;
            let rows = statement.query_map([], |row| {
                let key: String = row.get(0)?;
                let name: Option<String> = row.get(1)?;
                let position: Option<i64> = row.get(2)?;
                let label = match (name, position) {
                    (Some(name), _) => name,
                    (None, Some(position)) => format!("notify[{position}]"),
                    (None, None) => key.clone(),
                };
                Ok(NotifyBacklog {
                    shown: row.get::<_, Option<String>>(3)?.unwrap_or(key),
                    label,
                    failing_since: row.get::<_, Option<Stamp>>(4)?.map(|s| s.0),
                    last_error: row.get(5)?,
                    pending: row.get(6)?,
                    oldest: row.get::<_, Option<Stamp>>(7)?.map(|s| s.0),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Records that `destination`'s deliveries fail (`Some(why)`; the first failure in a row
    /// keeps its time) or work again (`None`).
    pub fn set_notify_failing(
        &self,
        destination: &str,
        why: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            match why {
                Some(why) => tx.execute(
                    "UPDATE notify_routes SET failing_since = coalesce(failing_since, ?2),
                        last_error = ?3 WHERE destination = ?1",
                    params![destination, Stamp(now()), why],
                )?,
                None => tx.execute(
                    "UPDATE notify_routes SET failing_since = NULL, last_error = NULL
                     WHERE destination = ?1",
                    params![destination],
                )?,
            };
            Ok(())
        })
    }

    /// The first `limit` events `destination` is owed, oldest first.
    pub fn pending_notices(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<PendingNotice>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT e.seq, e.at, e.body FROM notify_pending p
                 JOIN notify_events e ON e.seq = p.seq
                 WHERE p.destination = ?1 ORDER BY p.seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![destination, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Stamp>(1)?.0,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, queued_at, body) = row?;
                let notice: Notice = serde_json::from_str(&body).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                out.push(PendingNotice {
                    seq,
                    queued_at,
                    body,
                    notice,
                });
            }
            Ok(out)
        })
    }

    /// `destination` is owed these events no more: it took them, refused them for good, or
    /// they were given up.
    pub fn notices_settled(&self, destination: &str, seqs: &[i64]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut delete = tx
                .prepare_cached("DELETE FROM notify_pending WHERE destination = ?1 AND seq = ?2")?;
            for seq in seqs {
                delete.execute(params![destination, seq])?;
            }
            delete_delivered(tx)
        })
    }

    /// The pause that began at `since` has lasted long enough to be announced: a `paused` event
    /// with its reason, once per pause. `false` when that pause is over (a blip: nothing is
    /// sent, neither now nor when it ends) or already announced.
    pub fn announce_pause(&self, since: OffsetDateTime) -> Result<bool, StoreError> {
        let announced = self.write(|tx| {
            let Some((reason, current)) = super::status::pause_in(tx)? else {
                return Ok(false);
            };
            if current != since || super::status::pause_announced_in(tx)? {
                return Ok(false);
            }
            super::status::set_pause_announced_in(tx, true)?;
            notify_in(tx, EventKind::Paused, |notice| notice.reason = Some(reason))?;
            Ok(true)
        })?;
        if announced {
            self.outbox_changed();
        }
        Ok(announced)
    }

    /// A pause the store could not record (it could not be written) is over, and was announced
    /// from memory as `paused`: that event (with its id) is written for the destinations that
    /// want it and did not take it (`taken_by`), then a `resumed` for all that want one, so a
    /// destination that was down meanwhile still hears both, in order.
    pub fn unstored_pause_over(
        &self,
        paused: &Notice,
        taken_by: &[String],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let body = serde_json::to_string(paused)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let owed: Vec<String> = {
                let mut statement = tx.prepare_cached(
                    "SELECT destination FROM notify_routes WHERE instr(events, ',paused,') > 0",
                )?;
                let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
                let mut owed = Vec::new();
                for row in rows {
                    let destination = row?;
                    if !taken_by.contains(&destination) {
                        owed.push(destination);
                    }
                }
                owed
            };
            if !owed.is_empty() {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO notify_events (id, event, at, body) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![paused.id, paused.event, Stamp(now()), body])?;
                let seq: i64 = tx
                    .prepare_cached("SELECT seq FROM notify_events WHERE id = ?1")?
                    .query_row(params![paused.id], |row| row.get(0))?;
                for destination in owed {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO notify_pending (destination, seq) VALUES (?1, ?2)",
                    )?
                    .execute(params![destination, seq])?;
                }
            }
            let reason = paused.reason.clone();
            notify_in(tx, EventKind::Resumed, |notice| notice.reason = reason)
        })?;
        self.outbox_changed();
        Ok(())
    }

    /// Wakes the delivery tasks: the outbox may hold something new.
    pub(super) fn outbox_changed(&self) {
        if self.has_routes.load(Ordering::Relaxed) {
            self.outbox.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Changes whenever an event may have been added (for the delivery tasks to wait on).
    pub fn outbox_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox.subscribe()
    }
}

/// The destinations as last stored.
fn stored_routes(conn: &rusqlite::Connection) -> Result<Vec<StoredRoute>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT destination, name, target, position, kind, shown FROM notify_routes
         ORDER BY position, destination",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(StoredRoute {
            key: row.get(0)?,
            name: row.get(1)?,
            target: row.get(2)?,
            position: row
                .get::<_, Option<i64>>(3)?
                .and_then(|p| usize::try_from(p).ok()),
            kind: row.get(4)?,
            shown: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events no destination is owed any more are deleted.
fn delete_delivered(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM notify_events WHERE NOT EXISTS
            (SELECT 1 FROM notify_pending p WHERE p.seq = notify_events.seq)",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::store::test_support::{id_of, new_job};
    use crate::store::{JobError, NewJob};

    fn route(name: &str, events: &[EventKind]) -> NotifyRoute {
        NotifyRoute::for_tests(name, events)
    }

    fn kinds(store: &JobStore, destination: &str) -> Vec<String> {
        store
            .pending_notices(destination, 100)
            .unwrap()
            .into_iter()
            .map(|p| p.notice.event)
            .collect()
    }

    #[test]
    fn a_file_done_or_failed_is_an_event_for_each_destination_that_wants_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[
                route("all", &[EventKind::Uploaded, EventKind::Failed]),
                route("failures", &[EventKind::Failed]),
            ])
            .unwrap();
        let ok = id_of(store.enqueue(new_job(dir.path(), "ok.mov")).unwrap());
        let bad = id_of(store.enqueue(new_job(dir.path(), "sub/bad.mov")).unwrap());
        store.record_video(ok, "v-1").unwrap();
        store
            .decide(ok, Outcome::Uploaded, Some("abc"), None)
            .unwrap();
        let error = JobError {
            status: Some(415),
            message: "create video: the server answered 415".into(),
            meaning: "the platform does not accept this kind of file".into(),
        };
        store
            .decide(bad, Outcome::Failed, None, Some(&error))
            .unwrap();
        assert_eq!(
            store.notifications_pending().unwrap(),
            0,
            "not before the move"
        );
        store.mark_moved(ok, Path::new("/done/ok.mov")).unwrap();
        store
            .mark_moved(bad, Path::new("/failed/sub/bad.mov"))
            .unwrap();
        assert_eq!(kinds(&store, "all"), ["uploaded", "failed"]);
        assert_eq!(kinds(&store, "failures"), ["failed"]);
        assert_eq!(store.notifications_pending().unwrap(), 3);

        let all = store.pending_notices("all", 10).unwrap();
        let uploaded = &all[0].notice;
        assert_eq!(uploaded.file.as_deref(), Some("ok.mov"));
        assert_eq!(uploaded.video_id.as_deref(), Some("v-1"));
        assert_eq!(uploaded.sha256.as_deref(), Some("abc"));
        assert_eq!(uploaded.size, Some(1000));
        assert_eq!(uploaded.reason, None);
        let failed = &all[1].notice;
        assert_eq!(failed.file.as_deref(), Some("sub/bad.mov"));
        assert_eq!(
            failed.reason.as_deref(),
            Some(
                "create video: the server answered 415: the platform does not accept this kind of file"
            )
        );
        // The same event, with the same id, for both destinations.
        let for_failures = store.pending_notices("failures", 10).unwrap();
        assert_eq!(for_failures[0].notice.id, failed.id);
        assert_eq!(for_failures[0].body, all[1].body);

        store.notices_settled("all", &[all[0].seq]).unwrap();
        assert_eq!(kinds(&store, "all"), ["failed"]);
        store.notices_settled("all", &[all[1].seq]).unwrap();
        // Still owed to the other destination.
        assert_eq!(kinds(&store, "failures"), ["failed"]);
        store
            .notices_settled("failures", &[for_failures[0].seq])
            .unwrap();
        assert_eq!(store.notifications_pending().unwrap(), 0);
        let events: i64 = store
            .lock()
            .query_row("SELECT count(*) FROM notify_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 0, "an event nobody is owed is deleted");
    }

    #[test]
    fn with_no_destination_nothing_is_written_and_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store.decide(id, Outcome::Uploaded, None, None).unwrap();
        store.mark_moved(id, Path::new("/done/a.mov")).unwrap();
        assert_eq!(store.notifications_pending().unwrap(), 0);

        store
            .set_notify_routes(&[route("hook", &[EventKind::Failed])])
            .unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
        store.decide(id, Outcome::Failed, None, None).unwrap();
        store.mark_moved(id, Path::new("/failed/b.mov")).unwrap();
        let before = store.pending_notices("hook", 10).unwrap();
        drop(store);
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.pending_notices("hook", 10).unwrap(), before);
    }

    #[test]
    fn a_refused_export_that_never_finished_is_incomplete_then_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[route("hook", &[EventKind::Incomplete, EventKind::Failed])])
            .unwrap();
        let error = JobError {
            status: None,
            message: "no moov box".into(),
            meaning: "the export is not whole".into(),
        };
        let job = |name: &str| NewJob {
            folder: PathBuf::from("/in"),
            path: PathBuf::from("/in").join(name),
            rel_path: PathBuf::from(name),
            size: 10,
            mtime_ns: 0,
            rule: "stable".into(),
        };
        let cut = store
            .enqueue_refused(&job("cut.mov"), &error, true)
            .unwrap();
        store
            .enqueue_refused(&job("fake.mov"), &error, false)
            .unwrap();
        assert_eq!(kinds(&store, "hook"), ["incomplete"]);
        store
            .mark_moved(cut.id(), Path::new("/in/failed/cut.mov"))
            .unwrap();
        assert_eq!(kinds(&store, "hook"), ["incomplete", "failed"]);
    }

    #[test]
    fn a_file_removed_after_its_upload_still_tells_of_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[route("hook", &[EventKind::Uploaded, EventKind::Failed])])
            .unwrap();
        let uploaded = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        let waiting = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
        store
            .decide(uploaded, Outcome::Uploaded, None, None)
            .unwrap();
        store.forget(uploaded, "removed before the move").unwrap();
        store.forget(waiting, "deleted before upload").unwrap();
        assert_eq!(kinds(&store, "hook"), ["uploaded"]);
    }

    #[test]
    fn routes_replaced_drop_what_nobody_wants_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[
                route("a", &[EventKind::Uploaded, EventKind::Failed]),
                route("b", &[EventKind::Failed]),
            ])
            .unwrap();
        for (name, outcome) in [("x.mov", Outcome::Uploaded), ("y.mov", Outcome::Failed)] {
            let id = id_of(store.enqueue(new_job(dir.path(), name)).unwrap());
            store.decide(id, outcome, None, None).unwrap();
            store.mark_moved(id, Path::new("/d")).unwrap();
        }
        assert_eq!(store.notifications_pending().unwrap(), 3);
        // b is gone, a wants only failures now.
        let set = store
            .set_notify_routes(&[route("a", &[EventKind::Failed])])
            .unwrap();
        assert_eq!(set.keys, ["a"]);
        assert_eq!(set.removed, [("notify[1] (b)".to_owned(), 1)]);
        assert_eq!(set.unwanted, 1);
        assert_eq!(kinds(&store, "a"), ["failed"]);
        assert_eq!(store.notifications_pending().unwrap(), 1);
    }

    #[test]
    fn folders_missing_and_back_are_told_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .set_notify_routes(&[route(
                "hook",
                &[EventKind::FolderMissing, EventKind::FolderBack],
            )])
            .unwrap();
        let folder = Path::new("/srv/exports");
        store.set_folder_missing(folder, Some("deleted")).unwrap();
        store
            .set_folder_missing(folder, Some("now a link"))
            .unwrap();
        store.set_folder_missing(folder, None).unwrap();
        // A folder replaced (never missing) is not "back".
        store.set_folder_missing(folder, None).unwrap();
        assert_eq!(kinds(&store, "hook"), ["folder_missing", "folder_back"]);
        let first = &store.pending_notices("hook", 10).unwrap()[0].notice;
        assert_eq!(first.folder.as_deref(), Some("/srv/exports"));
        assert_eq!(first.reason.as_deref(), Some("deleted"));

        // Missing when the agent stopped, there when it starts: back; a folder no longer
        // configured is forgotten without a word.
        let other = Path::new("/srv/other");
        store.set_folder_missing(folder, Some("unmounted")).unwrap();
        store.set_folder_missing(other, Some("unmounted")).unwrap();
        store
            .clear_missing_folders(&[folder.to_path_buf()], &[])
            .unwrap();
        assert!(store.missing_folders().unwrap().is_empty());
        assert_eq!(
            kinds(&store, "hook"),
            [
                "folder_missing",
                "folder_back",
                "folder_missing",
                "folder_missing",
                "folder_back"
            ]
        );
        store.set_folder_missing(other, Some("unmounted")).unwrap();
        store.forget_folder(other).unwrap();
        assert!(store.missing_folders().unwrap().is_empty());
        assert_eq!(kinds(&store, "hook").len(), 6);
    }

    fn at(target: &str, position: usize, name: Option<&str>) -> NotifyRoute {
        NotifyRoute {
            name: name.map(str::to_owned),
            target: target.into(),
            position,
            kind: "webhook",
            shown: format!("notify[{position}] ({target})"),
            events: vec![EventKind::Failed],
        }
    }

    fn stored(key: &str, target: &str, position: usize, name: Option<&str>) -> StoredRoute {
        StoredRoute {
            key: key.into(),
            name: name.map(str::to_owned),
            target: Some(target.into()),
            position: Some(position),
            kind: Some("webhook".into()),
            shown: None,
        }
    }

    #[test]
    fn a_destination_keeps_its_key_by_name_then_target_then_place() {
        let old = [
            stored("k1", "url-a", 1, None),
            stored("k2", "url-b", 2, Some("ops")),
        ];
        // The same config: the same keys.
        assert_eq!(
            assign_keys(&old, &[at("url-a", 1, None), at("url-b", 2, Some("ops"))]),
            ["k1", "k2"]
        );
        // A new URL in the first table, the named one moved first with a new URL too.
        assert_eq!(
            assign_keys(&old, &[at("url-c", 1, Some("ops")), at("url-d", 2, None)]),
            ["k2", "url-d"]
        );
        assert_eq!(
            assign_keys(&old, &[at("url-x", 2, Some("ops")), at("url-y", 1, None)]),
            ["k2", "k1"]
        );
        // A table put in front: the others are found by their URL, the new one is new.
        assert_eq!(
            assign_keys(&old, &[at("url-new", 1, None), at("url-a", 2, None)]),
            ["url-new", "k1"]
        );
        // Another kind in the same place is another destination.
        let mut email = at("mail", 1, None);
        email.kind = "email";
        assert_eq!(assign_keys(&old, &[email]), ["mail"]);
        // A named destination's place is not taken over by an unnamed one.
        assert_eq!(assign_keys(&old, &[at("url-z", 2, None)]), ["url-z"]);
        // A new destination whose target is a key already kept (by the destination that had
        // that URL once and was edited since) gets a key of its own.
        let keys = assign_keys(
            &[stored("url-a", "url-x", 1, None)],
            &[at("url-x", 1, None), at("url-a", 2, None)],
        );
        assert_eq!(keys[0], "url-a");
        assert!(
            keys[1].starts_with("url-a-") && keys[1].len() > 6,
            "{keys:?}"
        );
    }

    #[test]
    fn events_owed_follow_an_edited_destination_and_a_removed_one_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let set = store
            .set_notify_routes(&[at("url-a", 1, None), at("url-b", 2, None)])
            .unwrap();
        assert_eq!(set.keys, ["url-a", "url-b"]);
        let id = id_of(store.enqueue(new_job(dir.path(), "x.mov")).unwrap());
        store.decide(id, Outcome::Failed, None, None).unwrap();
        store.mark_moved(id, Path::new("/failed/x.mov")).unwrap();
        // The first table's URL edited, the second removed.
        let set = store.set_notify_routes(&[at("url-c", 1, None)]).unwrap();
        assert_eq!(set.keys, ["url-a"]);
        assert_eq!(set.removed, [("notify[2] (url-b)".to_owned(), 1)]);
        assert_eq!(kinds(&store, "url-a"), ["failed"]);
        let backlog = store.notify_backlog().unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].shown, "notify[1] (url-c)");
        assert_eq!(backlog[0].label, "notify[1]");
        assert_eq!(backlog[0].pending, 1);
        assert!(backlog[0].oldest.is_some());
        assert_eq!(backlog[0].failing_since, None);
        store.set_notify_failing("url-a", Some("503")).unwrap();
        let since = store.notify_backlog().unwrap()[0].failing_since;
        assert!(since.is_some());
        store
            .set_notify_failing("url-a", Some("timed out"))
            .unwrap();
        let backlog = &store.notify_backlog().unwrap()[0];
        assert_eq!(
            backlog.failing_since, since,
            "the first failure keeps its time"
        );
        assert_eq!(backlog.last_error.as_deref(), Some("timed out"));
        store.set_notify_failing("url-a", None).unwrap();
        assert_eq!(store.notify_backlog().unwrap()[0].failing_since, None);
    }
}
