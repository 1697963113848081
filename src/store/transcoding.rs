//! Videos whose transcoding the agent follows after their upload (`follow_transcoding`): one
//! `transcoding` row per uploaded job of a folder that follows it. The row is written in the
//! transaction that ends the job (its file moved to done/, or removed before the move), so a
//! kill at any moment neither loses a video to follow nor follows one twice; it ends in the
//! transaction that writes its `transcoded` or `transcoding_slow` event, so the event is sent
//! exactly when the end is recorded. Which folders follow is a table too (replaced at each
//! start and reload, like the `[[notify]]` routes), so the job's end needs no config.
//!
//! The poll schedule is not stored: the next poll is due a delay after the last one (or after
//! the upload's end, `since`), which the agent's schedule says from the number of polls made.

use std::path::{Path, PathBuf};

use rusqlite::{Row, Transaction, params};
use time::OffsetDateTime;

use super::schema::{Json, OwnedPath, SqlPath, Stamp};
use super::{JobStore, StoreError, insert_event, now, outbox};
use crate::notify::EventKind;
use crate::vmpro::transcoding::QualityStatus;

/// How following a video ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodingEnd {
    /// Every quality is transcoded: a `transcoded` event.
    Transcoded,
    /// Not transcoded within the time limit: a `transcoding_slow` event.
    Slow,
    /// The platform answered 404: the video was deleted. No event (nothing to wait for).
    Gone,
}

impl TranscodingEnd {
    /// As stored, and as the sidecar's `transcoding.status` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            TranscodingEnd::Transcoded => "transcoded",
            TranscodingEnd::Slow => "slow",
            TranscodingEnd::Gone => "gone",
        }
    }

    fn parse(text: &str) -> Option<TranscodingEnd> {
        [
            TranscodingEnd::Transcoded,
            TranscodingEnd::Slow,
            TranscodingEnd::Gone,
        ]
        .into_iter()
        .find(|end| end.as_str() == text)
    }

    /// The event name in the job's upload log (and the sidecar's `events`).
    pub fn log_event(self) -> &'static str {
        match self {
            TranscodingEnd::Transcoded => "transcoded",
            TranscodingEnd::Slow => "transcoding_slow",
            TranscodingEnd::Gone => "transcoding_video_gone",
        }
    }
}

/// A video followed after its upload, with what the last poll said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedVideo {
    pub job_id: i64,
    pub folder: PathBuf,
    /// Where the file was when it was found.
    pub path: PathBuf,
    pub rel_path: PathBuf,
    /// Where it was moved (its sidecar is beside it); `None`: removed before the move.
    pub destination: Option<PathBuf>,
    pub video_id: String,
    /// The VideoManager the video is in (`None`: the folder's, from the config).
    pub video_manager_id: Option<u64>,
    /// The upload's end: the time limit counts from here.
    pub since: OffsetDateTime,
    pub polls: u32,
    pub last_poll_at: Option<OffsetDateTime>,
    /// What the last poll said, in words (`2 of 3 qualities done`, or why it failed).
    pub last_answer: Option<String>,
    /// The qualities as the last poll that got them listed them.
    pub qualities: Vec<QualityStatus>,
    /// When following ended, and how; `None` while it goes on.
    pub ended: Option<(OffsetDateTime, TranscodingEnd)>,
}

const FOLLOWED_COLUMNS: &str = "t.job_id, j.folder, j.path, j.rel_path, j.destination, \
    j.video_id, j.video_manager_id, t.since, t.polls, t.last_poll_at, t.last_answer, \
    t.qualities, t.ended_at, t.outcome";

fn followed_from_row(row: &Row<'_>) -> rusqlite::Result<FollowedVideo> {
    let outcome: Option<String> = row.get(13)?;
    let ended = match (row.get::<_, Option<Stamp>>(12)?, outcome.as_deref()) {
        (Some(at), Some(text)) => {
            let end = TranscodingEnd::parse(text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    13,
                    rusqlite::types::Type::Text,
                    format!("unknown transcoding outcome {text:?}").into(),
                )
            })?;
            Some((at.0, end))
        }
        _ => None,
    };
    Ok(FollowedVideo {
        job_id: row.get(0)?,
        folder: row.get::<_, OwnedPath>(1)?.0,
        path: row.get::<_, OwnedPath>(2)?.0,
        rel_path: row.get::<_, OwnedPath>(3)?.0,
        destination: row.get::<_, Option<OwnedPath>>(4)?.map(|p| p.0),
        // The row is only ever written for a job with a video id.
        video_id: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
        video_manager_id: row.get(6)?,
        since: row.get::<_, Stamp>(7)?.0,
        polls: row.get(8)?,
        last_poll_at: row.get::<_, Option<Stamp>>(9)?.map(|s| s.0),
        last_answer: row.get(10)?,
        qualities: row
            .get::<_, Option<Json<Vec<QualityStatus>>>>(11)?
            .map(|j| j.0)
            .unwrap_or_default(),
        ended,
    })
}

/// Starts following job `id`'s video, in the caller's transaction, when its upload succeeded,
/// it has a video id and its folder follows transcoding. Once per job.
pub(super) fn follow_in(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO transcoding (job_id, since)
         SELECT id, COALESCE(finished_at, ?2) FROM jobs
         WHERE id = ?1 AND outcome = 'uploaded' AND video_id IS NOT NULL
           AND folder IN (SELECT folder FROM transcoding_folders)",
    )?
    .execute(params![id, Stamp(now())])?;
    Ok(())
}

impl JobStore {
    /// Replaces the folders whose uploads are followed (at start and at each reload). Videos
    /// already followed go on being followed whatever the new config says.
    pub fn set_transcoding_folders(&self, folders: &[&Path]) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM transcoding_folders", [])?;
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO transcoding_folders (folder) VALUES (?1)")?;
            for folder in folders {
                insert.execute(params![SqlPath(folder)])?;
            }
            Ok(())
        })
    }

    /// The videos still followed, the longest followed first.
    pub fn transcoding_followed(&self) -> Result<Vec<FollowedVideo>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {FOLLOWED_COLUMNS} FROM transcoding t JOIN jobs j ON j.id = t.job_id
                 WHERE t.outcome IS NULL ORDER BY t.since, t.job_id"
            ))?;
            let rows = statement.query_map([], followed_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// How following job `id`'s video goes or went; `None` if it never was.
    #[cfg(test)]
    pub fn transcoding_of(&self, id: i64) -> Result<Option<FollowedVideo>, StoreError> {
        use rusqlite::OptionalExtension as _;
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {FOLLOWED_COLUMNS} FROM transcoding t JOIN jobs j ON j.id = t.job_id
                     WHERE t.job_id = ?1"
                ))?
                .query_row(params![id], followed_from_row)
                .optional()?)
        })
    }

    /// A poll of job `id`'s video was made `at`: one more, what it said in words, and the
    /// qualities when it got them (a failed poll keeps the last ones known).
    pub fn record_transcoding_poll(
        &self,
        id: i64,
        at: OffsetDateTime,
        answer: &str,
        qualities: Option<&[QualityStatus]>,
    ) -> Result<(), StoreError> {
        // `Json` takes a reference to a sized value: the slice's reference is one.
        let qualities = qualities.as_ref().map(Json);
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE transcoding SET polls = polls + 1, last_poll_at = ?2, last_answer = ?3,
                    qualities = COALESCE(?4, qualities)
                 WHERE job_id = ?1 AND outcome IS NULL",
                params![id, Stamp(at), answer, qualities],
            )?;
            if changed == 0 {
                return Err(StoreError::UnknownJob(id));
            }
            Ok(())
        })
    }

    /// Following job `id`'s video ends `at` with `end`, in one transaction: recorded, a line
    /// in the job's upload log (`detail`, then each of `notes`: what became of the sidecar),
    /// and the `transcoded` or `transcoding_slow` event, whose `reason` is `reason`. `false`
    /// when it had ended already (nothing is written again).
    pub fn end_transcoding(
        &self,
        id: i64,
        at: OffsetDateTime,
        end: TranscodingEnd,
        detail: &str,
        notes: &[(&str, &str)],
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let ended = self.write(|tx| {
            let changed = tx.execute(
                "UPDATE transcoding SET ended_at = ?2, outcome = ?3
                 WHERE job_id = ?1 AND outcome IS NULL",
                params![id, Stamp(at), end.as_str()],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            insert_event(tx, id, end.log_event(), detail)?;
            for (event, note) in notes {
                insert_event(tx, id, event, note)?;
            }
            let kind = match end {
                TranscodingEnd::Transcoded => Some(EventKind::Transcoded),
                TranscodingEnd::Slow => Some(EventKind::TranscodingSlow),
                TranscodingEnd::Gone => None,
            };
            if let Some(kind) = kind {
                outbox::notify_job_with_reason_in(tx, id, kind, reason)?;
            }
            Ok(true)
        })?;
        if ended {
            self.outbox_changed();
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{id_of, new_job};
    use crate::store::{NotifyRoute, Outcome};

    fn quality(name: &str, completed: bool) -> QualityStatus {
        QualityStatus {
            quality: name.into(),
            profile_key: None,
            file_extension: Some("mp4".into()),
            completed,
        }
    }

    /// A job of `folder` uploaded as `video` and decided, not moved yet.
    fn uploaded(store: &JobStore, folder: &Path, name: &str, video: &str) -> i64 {
        let id = id_of(store.enqueue(new_job(folder, name)).unwrap());
        store.start_attempt(id).unwrap();
        store.record_video(id, video).unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("abc"), None)
            .unwrap();
        id
    }

    #[test]
    fn an_upload_of_a_following_folder_is_followed_from_its_move_and_ends_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        store
            .set_notify_routes(&[NotifyRoute::for_tests(
                "hook",
                &[EventKind::Transcoded, EventKind::TranscodingSlow],
            )])
            .unwrap();
        let follows = dir.path().join("follows");
        let other = dir.path().join("other");
        store.set_transcoding_folders(&[&follows]).unwrap();

        let id = uploaded(&store, &follows, "a.mov", "v-1");
        let not_followed = uploaded(&store, &other, "b.mov", "v-2");
        let failed = id_of(store.enqueue(new_job(&follows, "c.mov")).unwrap());
        store.decide(failed, Outcome::Failed, None, None).unwrap();
        assert!(
            store.transcoding_followed().unwrap().is_empty(),
            "not before the file is in done/"
        );
        store.mark_moved(id, &follows.join("done/a.mov")).unwrap();
        store
            .mark_moved(not_followed, &other.join("done/b.mov"))
            .unwrap();
        store
            .mark_moved(failed, &follows.join("failed/c.mov"))
            .unwrap();
        let followed = store.transcoding_followed().unwrap();
        assert_eq!(followed.len(), 1);
        let video = &followed[0];
        assert_eq!(video.job_id, id);
        assert_eq!(video.video_id, "v-1");
        assert_eq!(video.destination, Some(follows.join("done/a.mov")));
        assert_eq!(
            Some(video.since),
            store.job(id).unwrap().finished_at,
            "counted from the upload's end"
        );
        assert_eq!((video.polls, video.ended), (0, None));

        let at = now();
        let some = [quality("360p", true), quality("720p", false)];
        store
            .record_transcoding_poll(id, at, "1 of 2 qualities done", Some(&some))
            .unwrap();
        // A failed poll keeps the qualities known.
        store
            .record_transcoding_poll(id, at, "503 Service Unavailable", None)
            .unwrap();
        let video = store.transcoding_of(id).unwrap().unwrap();
        assert_eq!(video.polls, 2);
        assert_eq!(video.qualities, some);
        assert_eq!(
            video.last_answer.as_deref(),
            Some("503 Service Unavailable")
        );

        let before = store.notifications_pending().unwrap();
        assert!(
            store
                .end_transcoding(
                    id,
                    at,
                    TranscodingEnd::Transcoded,
                    "every quality done",
                    &[("sidecar", "updated")],
                    None
                )
                .unwrap()
        );
        assert!(
            !store
                .end_transcoding(id, at, TranscodingEnd::Slow, "late", &[], Some("late"))
                .unwrap(),
            "once"
        );
        assert!(store.transcoding_followed().unwrap().is_empty());
        assert_eq!(
            store.transcoding_of(id).unwrap().unwrap().ended,
            Some((at, TranscodingEnd::Transcoded))
        );
        let notices = store.pending_notices("hook", 10).unwrap();
        assert_eq!(notices.len() as u64, before + 1);
        let notice = &notices[0].notice;
        assert_eq!(notice.event, "transcoded");
        assert_eq!(notice.video_id.as_deref(), Some("v-1"));
        assert_eq!(notice.file.as_deref(), Some("a.mov"));
        assert_eq!(notice.reason, None);
        let log: Vec<String> = store
            .job(id)
            .unwrap()
            .events
            .iter()
            .map(|e| format!("{} {}", e.event, e.detail))
            .collect();
        assert!(
            log.ends_with(&[
                "transcoded every quality done".to_owned(),
                "sidecar updated".to_owned()
            ]),
            "{log:?}"
        );
        // A poll after the end changes nothing.
        assert!(store.record_transcoding_poll(id, at, "x", None).is_err());
    }

    #[test]
    fn a_file_removed_before_its_move_is_still_followed_and_slow_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        store
            .set_notify_routes(&[NotifyRoute::for_tests(
                "hook",
                &[EventKind::TranscodingSlow],
            )])
            .unwrap();
        store.set_transcoding_folders(&[dir.path()]).unwrap();
        let id = uploaded(&store, dir.path(), "a.mov", "v-1");
        store.forget(id, "removed before the move").unwrap();
        let followed = store.transcoding_followed().unwrap();
        assert_eq!(followed[0].destination, None);
        // A reload that stops following does not drop what is followed.
        store.set_transcoding_folders(&[]).unwrap();
        assert_eq!(store.transcoding_followed().unwrap().len(), 1);
        let at = now();
        store
            .end_transcoding(
                id,
                at,
                TranscodingEnd::Slow,
                "not done after 2 h",
                &[],
                Some("720p not transcoded 2 h after the upload"),
            )
            .unwrap();
        let notice = &store.pending_notices("hook", 10).unwrap()[0].notice;
        assert_eq!(notice.event, "transcoding_slow");
        assert_eq!(
            notice.reason.as_deref(),
            Some("720p not transcoded 2 h after the upload")
        );
        // Survives reopening.
        drop(store);
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        assert_eq!(
            store.transcoding_of(id).unwrap().unwrap().ended,
            Some((at, TranscodingEnd::Slow))
        );
    }

    #[test]
    fn a_video_gone_sends_nothing_and_followed_jobs_are_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        store
            .set_notify_routes(&[NotifyRoute::for_tests(
                "hook",
                &[EventKind::Transcoded, EventKind::TranscodingSlow],
            )])
            .unwrap();
        store.set_transcoding_folders(&[dir.path()]).unwrap();
        let id = uploaded(&store, dir.path(), "a.mov", "v-1");
        store
            .mark_moved(id, &dir.path().join("done/a.mov"))
            .unwrap();
        // Pruning everything finished keeps a job whose video is still followed.
        let later = now() + time::Duration::hours(1);
        assert_eq!(store.prune_finished(later).unwrap(), 0);
        assert!(store.transcoding_of(id).unwrap().is_some());
        store
            .end_transcoding(id, now(), TranscodingEnd::Gone, "404", &[], None)
            .unwrap();
        assert_eq!(store.notifications_pending().unwrap(), 0);
        assert_eq!(store.prune_finished(later).unwrap(), 1);
        assert_eq!(store.transcoding_of(id).unwrap(), None);
    }

    /// The follower reads the whole list after every poll: with a day's uploads followed at
    /// once it must stay cheap.
    #[test]
    fn two_thousand_followed_videos_are_listed_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        store.set_transcoding_folders(&[dir.path()]).unwrap();
        let jobs: Vec<_> = (0..2000)
            .map(|i| new_job(dir.path(), &format!("clip{i}.mov")))
            .collect();
        store.enqueue_many(&jobs).unwrap();
        // Uploaded, moved and polled once each, in one go (one transaction per job would
        // make the setup take far longer than what is measured).
        let qualities =
            serde_json::to_string(&[quality("360p", true), quality("720p", false)]).unwrap();
        store
            .lock()
            .execute_batch(&format!(
                "UPDATE jobs SET state = 'done', outcome = 'uploaded', video_id = 'v',
                    finished_at = updated_at, destination = path;
                 INSERT INTO transcoding (job_id, since, polls, last_poll_at, last_answer, qualities)
                    SELECT id, updated_at, 1, updated_at, '1 of 2 qualities done', '{qualities}'
                    FROM jobs;"
            ))
            .unwrap();
        let started = std::time::Instant::now();
        let listed = store.transcoding_followed().unwrap();
        let took = started.elapsed();
        assert_eq!(listed.len(), 2000);
        eprintln!("2000 followed videos listed in {took:?}");
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    }
}
