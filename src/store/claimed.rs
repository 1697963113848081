//! Jobs of shared folders: the path of a file claimed into this agent's claim folder, and a
//! job adopted from a claim another agent (or an earlier run of this one) left behind, which
//! resumes on the same video from what the claim record says.

use rusqlite::params;

use super::job::ACTIVE;
use super::schema::{SqlPath, Stamp};
use super::{Enqueued, JobStore, NewJob, StoreError, enqueue_in, insert_event, now};

/// What a claim record says of an upload under way, for the job that takes it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedUpload {
    pub video_id: Option<String>,
    pub marker: Option<String>,
    /// A create was sent whose answer is not known: the video is looked up by the marker.
    pub create_sent: bool,
    pub video_manager_id: Option<u64>,
    pub next_chunk: u32,
    pub total_chunks: Option<u32>,
    pub chunk_size: Option<u64>,
}

impl JobStore {
    /// The job's file was claimed: it is now at `path`, in this agent's claim folder.
    pub fn record_claimed_path(&self, id: i64, path: &std::path::Path) -> Result<(), StoreError> {
        self.update(
            id,
            "claimed",
            ACTIVE,
            "UPDATE jobs SET path = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, SqlPath(path), Stamp(now())],
        )
    }

    /// A job for a claimed file taken over from another agent (`why` says from whom): waiting,
    /// and resuming where the record says. A file that already has an unfinished job keeps it.
    pub fn adopt_claim(
        &self,
        job: &NewJob,
        upload: &ClaimedUpload,
        why: &str,
    ) -> Result<Enqueued, StoreError> {
        self.write(|tx| {
            let enqueued = enqueue_in(tx, job)?;
            if let Enqueued::New(id) = enqueued {
                resume_in(tx, id, upload, why, "")?;
            }
            Ok(enqueued)
        })
    }

    /// Job `id` (waiting, not started on a video of its own) resumes the upload `upload` that
    /// another agent's record describes. A job that already made or asked for a video keeps
    /// its own.
    pub fn resume_from_claim(
        &self,
        id: i64,
        upload: &ClaimedUpload,
        why: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            resume_in(
                tx,
                id,
                upload,
                why,
                "AND state = 'waiting' AND video_id IS NULL AND create_sent_at IS NULL
                    AND marker IS NULL",
            )
        })
    }
}

/// Puts `upload` on job `id` (when `only_if`, more SQL conditions, holds) with a `taken over`
/// event saying `why`.
fn resume_in(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    upload: &ClaimedUpload,
    why: &str,
    only_if: &str,
) -> Result<(), StoreError> {
    let create_sent_at = upload.create_sent.then(|| Stamp(now()));
    let changed = tx.execute(
        &format!(
            "UPDATE jobs SET video_id = ?2, marker = ?3, create_sent_at = ?4,
                video_manager_id = ?5, next_chunk = ?6, total_chunks = ?7, chunk_size = ?8
             WHERE id = ?1 {only_if}"
        ),
        params![
            id,
            upload.video_id,
            upload.marker,
            create_sent_at,
            upload.video_manager_id,
            upload.next_chunk.max(1),
            upload.total_chunks,
            upload.chunk_size,
        ],
    )?;
    if changed > 0 {
        insert_event(tx, id, "taken over", why)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;
    use crate::store::test_support::new_job;

    #[test]
    fn an_adopted_claim_resumes_on_its_video_at_the_recorded_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        let job = new_job(dir.path(), "clip.mov");
        let upload = ClaimedUpload {
            video_id: Some("v-9".into()),
            marker: Some("hotfolder-m".into()),
            create_sent: false,
            video_manager_id: Some(7),
            next_chunk: 4,
            total_chunks: Some(10),
            chunk_size: Some(8 << 20),
        };
        let id = store
            .adopt_claim(&job, &upload, "from agent a-1")
            .unwrap()
            .id();
        let adopted = store.job(id).unwrap();
        assert_eq!(adopted.state, JobState::Waiting);
        assert_eq!(adopted.video_id.as_deref(), Some("v-9"));
        assert_eq!(adopted.next_chunk, 4);
        assert_eq!(adopted.chunk_size, Some(8 << 20));
        assert_eq!(adopted.video_manager_id, Some(7));
        assert!(adopted.create_sent_at.is_none());
        // Adopted again (the keeper's next round): still one job.
        assert_eq!(
            store.adopt_claim(&job, &upload, "again").unwrap(),
            Enqueued::AlreadyActive(id)
        );
        let moved = dir.path().join("claims/x.mov");
        store.record_claimed_path(id, &moved).unwrap();
        assert_eq!(store.job(id).unwrap().path, moved);
    }
}
