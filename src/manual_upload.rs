//! `hotfolder upload` with a memory: the same unchanged file uploaded again resumes its
//! interrupted upload on the same video, or is answered "already uploaded as <id>" without a
//! request; `--again` makes a new video on purpose. What is remembered, and where, is in
//! `store::manual`.
//!
//! Two `hotfolder upload`s of one file at once would both find nothing remembered and make a
//! video each: the file is locked (`flock`, advisory: nobody else's reads or writes are
//! affected) while it uploads, and the second one is refused at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::ready::SkipReason;
use crate::store::{
    Fingerprint, ManualState, ManualUpload, ManualUploads, StoreError, UploadTarget,
};
use crate::vmpro::api::{Platform, UploadObserver, UploadUrl, VideoMetadata};
use crate::vmpro::chunks::{ResumePoint, UploadReport, UploadRequest, upload_file};
use crate::vmpro::error::{Blame, VmproError};

/// How much of each end of a file its fingerprint hashes.
const SAMPLE: u64 = 64 * 1024;

/// One file for `hotfolder upload`.
pub struct ManualRequest {
    /// As the user gave it.
    pub path: PathBuf,
    pub metadata: VideoMetadata,
    /// `--again`: a new video even when this file was uploaded before.
    pub again: bool,
}

/// How one file of `hotfolder upload` ended well.
#[derive(Debug)]
pub enum ManualOutcome {
    Uploaded {
        report: UploadReport,
        /// It continued an upload that an earlier `hotfolder upload` started.
        resumed: bool,
    },
    /// Uploaded before, unchanged since: nothing was sent.
    AlreadyUploaded {
        video_id: String,
        size: u64,
        sha256: Option<String>,
        at: Option<OffsetDateTime>,
    },
}

/// Why one file of `hotfolder upload` was not uploaded.
#[derive(Debug, thiserror::Error)]
pub enum ManualUploadError {
    /// Not retryable as it is: the path is wrong or unreadable.
    #[error("cannot read {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not retryable: a named pipe, a device, a socket. (Reading a pipe would wait for a
    /// writer forever.)
    #[error("{} is {what}, not a file to upload", path.display())]
    NotAFile { path: PathBuf, what: SkipReason },
    /// Retryable once the other upload ended.
    #[error(
        "another `hotfolder upload` is sending {} right now; wait until it ends, then run this again",
        path.display()
    )]
    Busy { path: PathBuf },
    /// Not retryable as it is: the file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not retryable until the state dir is writable: without the memory a repeat could not be
    /// told from a new upload, so nothing was sent.
    #[error("cannot remember the upload in the state dir, so it was not started")]
    Memory(#[source] StoreError),
    /// As the upload engine says (`VmproError::blame`).
    #[error(transparent)]
    Upload(#[from] VmproError),
}

impl ManualUploadError {
    /// What it means for someone who ran `hotfolder upload`, in words: unlike the agent,
    /// nothing tries again by itself.
    pub fn meaning(&self) -> String {
        const AGAIN: &str = "run the same command again to resume where it stopped";
        match self {
            ManualUploadError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                "there is no such file".into()
            }
            ManualUploadError::Open { .. } | ManualUploadError::Read { .. } => {
                "the file could not be read (permissions?)".into()
            }
            ManualUploadError::NotAFile { .. } => "only files can be uploaded".into(),
            ManualUploadError::Busy { .. } => "it is being uploaded already".into(),
            ManualUploadError::Memory(_) => {
                "set `[state] dir` to a folder this user can write; nothing was sent".into()
            }
            ManualUploadError::Upload(err) => match (err.blame(), err) {
                (Blame::Cancelled, _) => format!("interrupted: {AGAIN}"),
                (Blame::AccountOrNetwork, VmproError::Quota { .. }) => {
                    format!("the account's booked storage is full: free space or book more, then {AGAIN}")
                }
                (Blame::AccountOrNetwork, VmproError::Credentials { .. }) => {
                    "the username or password in the config is wrong".into()
                }
                (Blame::AccountOrNetwork, _) => {
                    format!("the platform could not be reached or kept failing: {AGAIN}")
                }
                (Blame::StillChanging, _) => {
                    "the file changed while it was sent: run the same command again once it is complete (it goes to the same video)".into()
                }
                (Blame::File, err) => err.meaning(),
            },
        }
    }
}

/// Uploads one file, remembering it in `memory`: resumes an unfinished upload of the same
/// file, answers an unchanged finished one without a request, and starts a new video
/// otherwise (or with `again`).
pub async fn upload_remembered(
    platform: &Platform,
    memory: &ManualUploads,
    target: &UploadTarget,
    request: ManualRequest,
    observer: &dyn UploadObserver,
    shutdown: &CancellationToken,
) -> Result<ManualOutcome, ManualUploadError> {
    let given = request.path.clone();
    // Opening and reading the ends of a file on a slow share must not hold up other uploads.
    let claimed = tokio::task::spawn_blocking(move || claim(&given))
        .await
        .map_err(|err| ManualUploadError::Read {
            path: request.path.clone(),
            source: io::Error::other(err),
        })??;
    let known = memory
        .latest(target, &claimed.path)
        .map_err(ManualUploadError::Memory)?;
    let plan = plan(known, &claimed.fingerprint, request.again);
    let (id, resume, resumed) = match plan {
        Plan::AlreadyUploaded(done) => {
            return Ok(ManualOutcome::AlreadyUploaded {
                video_id: done.video_id.unwrap_or_default(),
                size: done.fingerprint.size,
                sha256: done.sha256,
                at: done.finished_at,
            });
        }
        Plan::New => {
            let id = memory
                .begin(target, &claimed.path, &claimed.fingerprint)
                .map_err(ManualUploadError::Memory)?;
            (id, ResumePoint::default(), false)
        }
        Plan::Resume(unfinished) => {
            let video = unfinished.video_id.as_deref().unwrap_or("-");
            if unfinished.next_chunk > 1 {
                observer.event(
                    "resuming",
                    &format!(
                        "an earlier `hotfolder upload` stopped; resuming at chunk {} on video {video}",
                        unfinished.next_chunk
                    ),
                );
            }
            (unfinished.id, resume_point(&unfinished), true)
        }
        Plan::SendChangedAgain(unfinished) => {
            memory
                .restart_changed(unfinished.id, &claimed.fingerprint)
                .map_err(ManualUploadError::Memory)?;
            if let Some(video) = &unfinished.video_id {
                observer.event(
                    "changed",
                    &format!("the file changed since an earlier `hotfolder upload` stopped; sending it again from the start to video {video}"),
                );
            }
            let resume = ResumePoint {
                next_chunk: 1,
                chunk_size: None,
                ..resume_point(&unfinished)
            };
            (unfinished.id, resume, true)
        }
    };
    let file_name = request
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let upload = UploadRequest {
        path: claimed.path.clone(),
        file_name,
        metadata: request.metadata,
        resume,
    };
    let remembering = Remembering {
        memory,
        id,
        inner: observer,
        failed: AtomicBool::new(false),
    };
    // Quiet hours: as the agent does, no video is created and nothing is sent until they end
    // (an upload that created its video first would leave it empty on the platform meanwhile).
    platform
        .bandwidth
        .wait_out_quiet_hours(shutdown, || {
            observer.event(
                "waiting",
                "quiet hours (bandwidth_schedule): the upload starts when they end",
            );
        })
        .await?;
    let report = upload_file(platform, upload, &remembering, shutdown).await?;
    if let Err(err) = memory.finish(id, &report.sha256) {
        // Uploaded all the same: say so, and that a repeat would not know.
        tracing::error!(
            "{} was uploaded as video {}, but that could not be remembered; running `hotfolder upload` on it again would upload it again: {}",
            claimed.path.display(),
            report.video_id,
            chain(&err)
        );
    }
    drop(claimed);
    Ok(ManualOutcome::Uploaded { report, resumed })
}

/// Whether [`upload_remembered`] would send anything for `path`: false for a file an earlier
/// `hotfolder upload` finished that is unchanged (answered from memory, without a request).
/// A path that cannot be claimed counts as one to send: its upload then says what is wrong.
pub fn needs_sending(
    memory: &ManualUploads,
    target: &UploadTarget,
    path: &Path,
    again: bool,
) -> bool {
    let Ok(claimed) = claim(path) else {
        return true;
    };
    match memory.latest(target, &claimed.path) {
        Ok(known) => !matches!(
            plan(known, &claimed.fingerprint, again),
            Plan::AlreadyUploaded(_)
        ),
        Err(_) => true,
    }
}

/// What to do with a file, from what is remembered about it.
#[derive(Debug)]
enum Plan {
    AlreadyUploaded(ManualUpload),
    New,
    /// The same file, unfinished: continue where it stopped.
    Resume(ManualUpload),
    /// Unfinished, but the file changed: everything again, to the same video (as the agent
    /// does with a file that changes before its upload is finished).
    SendChangedAgain(ManualUpload),
}

fn plan(known: Option<ManualUpload>, now: &Fingerprint, again: bool) -> Plan {
    let Some(known) = known else {
        return Plan::New;
    };
    if again {
        return Plan::New;
    }
    let same = known.fingerprint == *now;
    match known.state {
        ManualState::Done if same && known.video_id.is_some() => Plan::AlreadyUploaded(known),
        // Changed since it was uploaded: a new version of the file, a new video.
        ManualState::Done | ManualState::Abandoned => Plan::New,
        ManualState::Uploading if same => Plan::Resume(known),
        ManualState::Uploading => Plan::SendChangedAgain(known),
    }
}

fn resume_point(known: &ManualUpload) -> ResumePoint {
    let url = match (&known.upload_url, known.url_issued_at) {
        (Some(raw), Some(issued)) => Some(UploadUrl::new(
            raw.clone(),
            std::time::SystemTime::from(issued),
        )),
        _ => None,
    };
    ResumePoint {
        video_id: known.video_id.clone(),
        url,
        next_chunk: known.next_chunk,
        chunk_size: known.chunk_size,
        // No marker is kept for manual uploads (yet): a lost create answer is not looked up.
        ..ResumePoint::default()
    }
}

/// A file opened and locked by this process, and what it looks like now.
struct Claimed {
    /// Canonical: `./clip.mov` and `/work/clip.mov` are one file to remember.
    path: PathBuf,
    /// Holds the lock until the upload ends.
    _lock: File,
    fingerprint: Fingerprint,
}

fn claim(given: &Path) -> Result<Claimed, ManualUploadError> {
    let open_error = |source| ManualUploadError::Open {
        path: given.to_path_buf(),
        source,
    };
    let path = std::fs::canonicalize(given).map_err(open_error)?;
    // Non-blocking: opening a named pipe would wait for a writer; what it is comes from the
    // open file itself, so it cannot be swapped between a check and the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(open_error)?;
    let read_error = |source| ManualUploadError::Read {
        path: given.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(read_error)?;
    match SkipReason::of(meta.file_type()) {
        None => {}
        // What reading a folder says: the words the upload has always used for it.
        Some(SkipReason::Directory) => {
            return Err(read_error(io::Error::from_raw_os_error(libc::EISDIR)));
        }
        Some(what) => {
            return Err(ManualUploadError::NotAFile {
                path: given.to_path_buf(),
                what,
            });
        }
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ManualUploadError::Busy {
                path: given.to_path_buf(),
            });
        }
        // Some network file systems have no locks: upload unlocked rather than not at all.
        Err(std::fs::TryLockError::Error(err)) => {
            tracing::debug!(file = %path.display(), "cannot lock the file ({err}); uploading it unlocked");
        }
    }
    let fingerprint = fingerprint(&file, &meta).map_err(read_error)?;
    Ok(Claimed {
        path,
        _lock: file,
        fingerprint,
    })
}

/// Size, mtime and the sha256 of the first and last [`SAMPLE`] bytes.
fn fingerprint(file: &File, meta: &std::fs::Metadata) -> io::Result<Fingerprint> {
    let size = meta.len();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; usize::try_from(SAMPLE).unwrap_or(65_536)];
    let tail_start = size.saturating_sub(SAMPLE).max(SAMPLE.min(size));
    for (start, end) in [(0, SAMPLE.min(size)), (tail_start, size)] {
        let mut offset = start;
        while offset < end {
            let want = usize::try_from(end - offset)
                .unwrap_or(buffer.len())
                .min(buffer.len());
            let read = file.read_at(&mut buffer[..want], offset)?;
            if read == 0 {
                break; // cut short meanwhile: the size in the fingerprint tells it apart
            }
            hasher.update(&buffer[..read]);
            offset += read as u64;
        }
    }
    let mtime_ns = meta
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec());
    Ok(Fingerprint {
        size,
        mtime_ns,
        sample_sha256: hex::encode(hasher.finalize()),
    })
}

/// Records the upload in the memory as it happens, and passes everything on to the progress
/// display.
struct Remembering<'a> {
    memory: &'a ManualUploads,
    id: i64,
    inner: &'a dyn UploadObserver,
    /// A failed write was logged: one line, not one per chunk of a disk that is full.
    failed: AtomicBool,
}

impl Remembering<'_> {
    fn check(&self, what: &str, result: Result<(), StoreError>) {
        if let Err(err) = result
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                "cannot remember {what}; running the same command again may not resume where this stops: {}",
                chain(&err)
            );
        }
    }
}

impl UploadObserver for Remembering<'_> {
    fn event(&self, event: &str, detail: &str) {
        self.inner.event(event, detail);
    }
    fn retrying(&self, step: crate::vmpro::error::Step, error: &crate::vmpro::error::VmproError) {
        self.inner.retrying(step, error);
    }
    fn video_created(&self, video_id: &str) {
        self.check(
            "the new video's id",
            self.memory.record_video(self.id, video_id),
        );
        self.inner.video_created(video_id);
    }
    fn url_issued(&self, url: &UploadUrl) {
        let issued = OffsetDateTime::from(url.issued_at());
        self.check(
            "the upload URL",
            self.memory.record_url(self.id, url.expose(), issued),
        );
        self.inner.url_issued(url);
    }
    fn chunk_accepted(
        &self,
        index: u32,
        total: u32,
        chunk_size: u64,
        bytes_done: u64,
        took: std::time::Duration,
    ) {
        self.check(
            "how far the upload got",
            self.memory
                .record_progress(self.id, index + 1, total, chunk_size, bytes_done),
        );
        self.inner
            .chunk_accepted(index, total, chunk_size, bytes_done, took);
    }
    fn restarted(&self) {
        self.check(
            "that the upload started over",
            self.memory.restart_content(self.id),
        );
        self.inner.restarted();
    }
    fn size_refused(&self, api_url: &str, link: &crate::vmpro::link::MeasuredLink) {
        self.check(
            "the chunk size the server refused",
            self.memory.record_link(api_url, link),
        );
        self.inner.size_refused(api_url, link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(state: ManualState, size: u64) -> ManualUpload {
        ManualUpload {
            id: 1,
            path: PathBuf::from("/media/clip.mov"),
            fingerprint: print(size),
            state,
            video_id: Some("v1".into()),
            upload_url: None,
            url_issued_at: None,
            next_chunk: 3,
            total_chunks: Some(5),
            chunk_size: Some(2),
            sha256: None,
            started_at: OffsetDateTime::UNIX_EPOCH,
            finished_at: None,
        }
    }

    fn print(size: u64) -> Fingerprint {
        Fingerprint {
            size,
            mtime_ns: 7,
            sample_sha256: "ab".into(),
        }
    }

    #[test]
    fn the_plan_follows_what_is_remembered_like_the_agent_does() {
        let name = |plan: Plan| format!("{plan:?}").split('(').next().unwrap().to_owned();
        assert_eq!(name(plan(None, &print(10), false)), "New");
        let done = || Some(remembered(ManualState::Done, 10));
        let unfinished = || Some(remembered(ManualState::Uploading, 10));
        assert_eq!(name(plan(done(), &print(10), false)), "AlreadyUploaded");
        assert_eq!(name(plan(done(), &print(11), false)), "New");
        assert_eq!(name(plan(done(), &print(10), true)), "New");
        assert_eq!(name(plan(unfinished(), &print(10), false)), "Resume");
        assert_eq!(
            name(plan(unfinished(), &print(11), false)),
            "SendChangedAgain"
        );
        assert_eq!(name(plan(unfinished(), &print(10), true)), "New");
    }

    #[test]
    fn the_fingerprint_sees_a_change_in_either_end_of_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mov");
        let of = |data: &[u8]| {
            std::fs::write(&path, data).unwrap();
            let file = File::open(&path).unwrap();
            let meta = file.metadata().unwrap();
            fingerprint(&file, &meta).unwrap().sample_sha256
        };
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let base = of(&big);
        let mut head = big.clone();
        head[10] ^= 1;
        let mut tail = big.clone();
        tail[299_990] ^= 1;
        let mut middle = big.clone();
        middle[150_000] ^= 1;
        assert_ne!(of(&head), base);
        assert_ne!(of(&tail), base);
        // The middle is not sampled: size and mtime have to tell that change.
        assert_eq!(of(&middle), base);
        // Files shorter than the two samples are hashed once, whole.
        assert_ne!(of(b"short"), of(b"shorT"));
    }

    #[test]
    fn a_named_pipe_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.mov");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = claim(&fifo).err().expect("refused");
        assert!(
            matches!(
                err,
                ManualUploadError::NotAFile {
                    what: SkipReason::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("named pipe"), "{err}");
    }

    #[test]
    fn a_file_claimed_by_one_upload_is_refused_to_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mov");
        std::fs::write(&path, b"data").unwrap();
        let first = claim(&path).unwrap();
        assert!(matches!(
            claim(&dir.path().join(".").join("clip.mov")),
            Err(ManualUploadError::Busy { .. })
        ));
        drop(first);
        // Another test of this process that spawns a program at this moment holds a copy of
        // every descriptor between its fork and its exec, the lock's too: try for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let again = loop {
            match claim(&path) {
                Err(ManualUploadError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(again.path, std::fs::canonicalize(&path).unwrap());
    }
}
