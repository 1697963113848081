//! The plain data the store hands out and takes in: a job's state and outcome, the job itself,
//! its upload log, what the ready stage enqueues, and per-state counts. No SQL here; how these
//! are stored is in `schema.rs`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rfc3339;

/// Waiting, Uploading or Paused: the states an upload can still move between (and the states
/// most transitions accept).
pub(super) const ACTIVE: &[JobState] = &[JobState::Waiting, JobState::Uploading, JobState::Paused];
/// [`ACTIVE`] plus Finishing: the states in which the agent still owes the file something.
pub(super) const UNFINISHED: &[JobState] = &[
    JobState::Waiting,
    JobState::Uploading,
    JobState::Paused,
    JobState::Finishing,
];

/// The states a job ends in: nothing more happens to it.
pub(super) const FINISHED: &[JobState] = &[JobState::Done, JobState::Failed, JobState::Gone];

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

    pub(super) fn parse(text: &str) -> Option<JobState> {
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

impl JobError {
    /// The message and its meaning in one line, the message said once: a meaning that
    /// already repeats the message (local refusals) is shown alone.
    pub fn in_words(&self) -> String {
        if self.meaning.is_empty() || self.meaning == self.message {
            self.message.clone()
        } else if self.meaning.contains(&self.message) {
            self.meaning.clone()
        } else {
            format!("{}: {}", self.message, self.meaning)
        }
    }
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
    #[cfg(test)]
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
    /// How long sending those bytes took (the chunks' own time, not the waits between them).
    pub sending: std::time::Duration,
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
    /// The marker keyword the job's create-video requests carry (`hotfolder-…`), until it is
    /// removed from the video again; `None` before the first create or with `tag_videos = false`.
    pub marker: Option<String>,
    /// When a create-video request was sent whose answer has not settled yet: with no
    /// `video_id`, the platform may hold a video for this file that must be looked up.
    pub create_sent_at: Option<OffsetDateTime>,
    /// The VideoManager the upload went (or goes) into, recorded when an attempt starts and
    /// kept once the platform may hold the job's video; `None` before the first attempt, and for
    /// jobs of a hotfolder that did not record it.
    pub video_manager_id: Option<u64>,
    /// When the file was moved into done/ or failed/ (its mtime is the export's: a rename keeps
    /// it). What `keep_done_for` counts from.
    pub moved_at: Option<OffsetDateTime>,
    /// The file as it was placed there; `None` where it was not recorded.
    pub placed: Option<Placed>,
    /// What done/ retention did with the file (`deleted …`, `kept: …`); `None` while undecided.
    pub retention: Option<String>,
    /// The file's inode change time (ns) when its content started uploading; `None` before,
    /// and again after a restart of the content.
    pub content_ctime_ns: Option<i64>,
}

/// A file as hotfolder placed it in done/ or failed/: only a file still the same (the same
/// inode, size, mtime and ctime) is ever deleted by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Device and inode.
    pub identity: (u64, u64),
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The inode's change time, in the same unit: content rewritten in place with its mtime
    /// set back (`touch -r`) keeps inode, size and mtime, not this. `None` for a file placed
    /// by a hotfolder that did not record it.
    pub ctime_ns: Option<i64>,
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
            .field("sending", &self.sending)
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
            .field("marker", &self.marker)
            .field("create_sent_at", &self.create_sent_at)
            .field("video_manager_id", &self.video_manager_id)
            .field("moved_at", &self.moved_at)
            .field("placed", &self.placed)
            .field("retention", &self.retention)
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

#[cfg(test)]
mod tests {
    use crate::store::test_support::{id_of, new_job};
    use crate::store::{JobStore, now};

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

    /// Second hostile test of issue 13, D13: a local refusal's meaning repeats its message;
    /// `failed` and the notices said it twice.
    #[test]
    fn an_error_in_words_says_its_message_once() {
        let error = |message: &str, meaning: &str| super::JobError {
            status: None,
            message: message.into(),
            meaning: meaning.into(),
        };
        let refused = error(
            "not an MP4/MOV file: no valid first box",
            "not an MP4/MOV file: no valid first box; the file's name says it is one",
        );
        assert_eq!(refused.in_words(), refused.meaning);
        assert_eq!(error("quota", "").in_words(), "quota");
        assert_eq!(
            error("403 forbidden", "the account may not upload").in_words(),
            "403 forbidden: the account may not upload"
        );
    }
}
