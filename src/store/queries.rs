//! Read-only questions about jobs: one job, the jobs to resume or finish, the next job to
//! upload, recent results and per-state counts. Used by the agent and by `hotfolder status`
//! (through a read-only store); none of them changes anything.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::params;
use time::OffsetDateTime;

use super::job::UNFINISHED;
use super::schema::{OwnedPath, SqlPath, Stamp, load_job, load_jobs, state_list};
use super::{Job, JobState, JobStore, QueueSummary, StoreError};

impl JobStore {
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

    /// The latest job whose file was moved to `destination` (done/ or failed/), if the store
    /// still has it: what `hotfolder failed` says about a file whose sidecar is missing.
    pub fn job_moved_to(&self, destination: &Path) -> Result<Option<Job>, StoreError> {
        self.read(|conn| {
            load_job(
                conn,
                "WHERE destination = ?1 ORDER BY id DESC LIMIT 1",
                params![SqlPath(destination)],
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

    /// How many unfinished jobs (waiting, uploading, paused) a folder has: what is said of a
    /// folder removed from the config, whose jobs then wait.
    pub fn unfinished_in(&self, folder: &Path) -> Result<usize, StoreError> {
        self.read(|conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE folder = ?1 AND state IN ('waiting', 'uploading', 'paused')",
                params![SqlPath(folder)],
                |row| row.get(0),
            )?;
            Ok(usize::try_from(count).unwrap_or(0))
        })
    }

    /// The uploaded job whose file hotfolder placed in done/ as exactly this file (device,
    /// inode, size, mtime; not ctime, which a rename of done/ may change), if any: the same
    /// file seen again in a watched folder, which must not become a second video.
    pub fn uploaded_as(
        &self,
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
    ) -> Result<Option<Job>, StoreError> {
        // Stored as SQLite integers, as `record_moved` wrote them.
        let (Ok(mtime_ns), Ok(size)) = (i64::try_from(mtime_ns), i64::try_from(size)) else {
            return Ok(None);
        };
        self.read(|conn| {
            load_job(
                conn,
                "WHERE placed_ino = ?1 AND placed_dev = ?2 AND placed_size = ?3
                   AND placed_mtime_ns = ?4 AND outcome = 'uploaded' AND video_id IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                params![ino as i64, dev as i64, size, mtime_ns],
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
    #[cfg(test)]
    pub fn next_waiting(&self, busy: &HashSet<i64>) -> Result<Option<Job>, StoreError> {
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

    /// [`next_waiting`](Self::next_waiting) skipping the jobs `admits` refuses, judged by the
    /// job's folder and the VideoManager it is bound to (the recorded one once the platform may
    /// hold its video: a video id, or a create sent). Looks at the waiting jobs' few columns,
    /// and loads only the one that starts.
    pub fn next_waiting_where(
        &self,
        busy: &HashSet<i64>,
        admits: impl Fn(&Path, Option<u64>) -> bool,
    ) -> Result<Option<Job>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, folder,
                    CASE WHEN video_id IS NOT NULL OR create_sent_at IS NOT NULL
                         THEN video_manager_id END
                 FROM jobs WHERE state = 'waiting' ORDER BY id",
            )?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let OwnedPath(folder) = row.get(1)?;
                let bound: Option<u64> = row.get(2)?;
                if !busy.contains(&id) && admits(&folder, bound) {
                    return load_job(conn, "WHERE id = ?1", params![id]);
                }
            }
            Ok(None)
        })
    }

    /// Finished jobs (done, failed, gone) whose marker keyword may still be on the platform,
    /// oldest first, at most `limit`. Unfinished ones are left to their upload.
    pub fn finished_with_marker(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            load_jobs(
                conn,
                "WHERE marker IS NOT NULL AND state IN ('done', 'failed', 'gone') ORDER BY id LIMIT ?1",
                params![limit],
            )
        })
    }

    /// Done, failed and gone jobs, most recently finished first (by the time `status` shows,
    /// not by when the file was moved).
    pub fn recent_finished(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            load_jobs(
                conn,
                "WHERE state IN ('done', 'failed', 'gone')
                 ORDER BY finished_at DESC, id DESC LIMIT ?1",
                params![limit],
            )
        })
    }

    /// When the last upload that is still on record ended (its outcome decided), if any.
    pub fn last_upload_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.read(|conn| {
            let at: Option<Stamp> = conn.query_row(
                "SELECT MAX(finished_at) FROM jobs WHERE outcome = 'uploaded'",
                params![],
                |row| row.get(0),
            )?;
            Ok(at.map(|stamp| stamp.0))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outcome;
    use crate::store::test_support::{id_of, new_job};

    #[test]
    fn a_create_on_its_way_is_on_record_until_its_answer_settles_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = id_of(store.enqueue(new_job(dir.path(), "a.mov")).unwrap());
        store.start_attempt(id).unwrap();

        // Before the create is sent: the marker and the moment, in one write.
        store.record_create_sent(id, Some("hotfolder-1")).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.marker.as_deref(), Some("hotfolder-1"));
        assert!(job.create_sent_at.is_some());
        // Answered without a video: nothing to look up; the job keeps its marker.
        store.record_create_settled(id).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(
            (job.marker.as_deref(), job.create_sent_at),
            (Some("hotfolder-1"), None)
        );
        // Every create of a job carries its first marker.
        store.record_create_sent(id, Some("hotfolder-2")).unwrap();
        assert_eq!(
            store.job(id).unwrap().marker.as_deref(),
            Some("hotfolder-1")
        );
        // The video known: no create is outstanding; the marker waits for its removal.
        store.record_video(id, "v1").unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.create_sent_at, None);
        assert_eq!(job.marker.as_deref(), Some("hotfolder-1"));
        // Untagged creates (tag_videos = false) are on record too, without a marker.
        let untagged = id_of(store.enqueue(new_job(dir.path(), "b.mov")).unwrap());
        store.start_attempt(untagged).unwrap();
        store.record_create_sent(untagged, None).unwrap();
        let job = store.job(untagged).unwrap();
        assert_eq!(job.marker, None);
        assert!(job.create_sent_at.is_some());
        // Only while the job is active.
        store.decide(untagged, Outcome::Failed, None, None).unwrap();
        assert!(store.record_create_sent(untagged, None).is_err());
        assert!(store.record_create_settled(untagged).is_err());
    }

    #[test]
    fn finished_jobs_with_a_marker_are_listed_until_it_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids: Vec<i64> = ["a.mov", "b.mov", "c.mov"]
            .iter()
            .map(|name| id_of(store.enqueue(new_job(dir.path(), name)).unwrap()))
            .collect();
        for id in &ids {
            store.start_attempt(*id).unwrap();
            store.record_create_sent(*id, Some("hotfolder-m")).unwrap();
        }
        store.record_video(ids[0], "v").unwrap();
        store.decide(ids[0], Outcome::Uploaded, None, None).unwrap();
        store.mark_moved(ids[0], Path::new("/d/a.mov")).unwrap();
        store.forget(ids[1], "deleted").unwrap();
        // ids[2] is still uploading: its upload removes the marker itself.
        let listed: Vec<i64> = store
            .finished_with_marker(10)
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, [ids[0], ids[1]]);
        assert_eq!(store.finished_with_marker(1).unwrap().len(), 1);

        let before = store.job(ids[0]).unwrap();
        store.clear_marker(ids[0]).unwrap();
        let after = store.job(ids[0]).unwrap();
        assert_eq!(after.marker, None);
        assert_eq!(
            after.updated_at, before.updated_at,
            "recent order unchanged"
        );
        assert_eq!(store.finished_with_marker(10).unwrap().len(), 1);
        assert!(matches!(
            store.clear_marker(99),
            Err(StoreError::UnknownJob(99))
        ));
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
}
