//! The sidecar `<file name>.upload.json` written beside a file in done/ or failed/: what
//! happened to the upload, in the contract's field names, written so that a reader never sees
//! half of one.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{FinishError, SIDECAR_SUFFIX, TEMP_SUFFIX, fit_name, split, sync_dir};
use crate::escape::escaped;
use crate::store::{Job, JobError, JobEvent, Outcome, rfc3339};
use crate::vmpro::transcoding::QualityStatus;

/// The sidecar's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarStatus {
    Uploaded,
    Failed,
}

/// What `<file name>.upload.json` says about one upload; field names are part of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The file's name as it is now (after a collision suffix, if one was added), as text: a
    /// name that is not valid UTF-8 has U+FFFD in place of each invalid sequence, as the
    /// platform got it.
    pub file: String,
    /// Only for a name that is not valid UTF-8: its exact bytes, escaped (`caf\xe9.mov`; a
    /// backslash is doubled), so the file can be told from others that read alike in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_raw: Option<String>,
    /// The watched folder the file was dropped in (as text, like `file`): where `hotfolder
    /// retry` puts it back when several folders share one failed/. Missing in sidecars written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    pub size: u64,
    /// SHA-256 of the bytes sent.
    pub sha256: Option<String>,
    pub status: SidecarStatus,
    pub video_id: Option<String>,
    pub error: Option<JobError>,
    pub chunks: Option<u32>,
    pub chunk_size: Option<u64>,
    pub attempts: u32,
    #[serde(with = "rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The upload's rate as the log and `status` show it: bytes over the time their chunks
    /// took to send (waiting for the create, backoff and pauses left out; `started_at` and
    /// `finished_at` tell the whole time).
    pub bytes_per_second: Option<f64>,
    pub events: Vec<JobEvent>,
    /// What the platform made of the video afterwards (`follow_transcoding`): added when the
    /// agent stops following it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding: Option<TranscodingRecord>,
    /// Fields this hotfolder does not know (a newer one, or a person, wrote them): kept as
    /// they are when the sidecar is rewritten.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The sidecar's `transcoding`: how following the video after its upload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscodingRecord {
    /// `transcoded` (every quality done), `slow` (not done within the time limit) or `gone`
    /// (the platform no longer has the video).
    pub status: String,
    /// When hotfolder saw every quality done (`null` unless `transcoded`).
    #[serde(with = "rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// When hotfolder stopped following the video.
    #[serde(with = "rfc3339")]
    pub followed_until: OffsetDateTime,
    /// The qualities as the platform last listed them.
    pub qualities: Vec<QualityStatus>,
    /// How often the platform was asked.
    pub polls: u32,
    /// The outcome in words.
    pub summary: String,
}

impl Sidecar {
    pub fn from_job(job: &Job, file_name: impl AsRef<OsStr>) -> Sidecar {
        let file_name = file_name.as_ref();
        let status = match job.outcome {
            Some(Outcome::Uploaded) => SidecarStatus::Uploaded,
            // A job without a recorded outcome was never confirmed uploaded.
            Some(Outcome::Failed) | None => SidecarStatus::Failed,
        };
        let bytes_per_second = crate::status_report::bytes_per_second(job);
        Sidecar {
            file: file_name.to_string_lossy().into_owned(),
            file_raw: file_name
                .to_str()
                .is_none()
                .then(|| escaped(file_name).to_string()),
            folder: Some(job.folder.to_string_lossy().into_owned()),
            size: job.size,
            sha256: job.sha256.clone(),
            status,
            video_id: job.video_id.clone(),
            error: job.error.clone(),
            chunks: job.total_chunks,
            chunk_size: job.chunk_size,
            attempts: job.attempts,
            started_at: job.started_at,
            finished_at: job.finished_at,
            bytes_per_second,
            events: job.events.clone(),
            transcoding: None,
            other: serde_json::Map::new(),
        }
    }
}

/// `<moved file's whole name>.upload.json`, beside it.
/// A name too long for the file system (a 255-byte video name plus `.upload.json`) keeps the
/// start of the name and a hash of all of it, so it still fits and stays unique.
pub fn sidecar_path(moved_file: &Path) -> PathBuf {
    let name = moved_file.file_name().unwrap_or_default();
    moved_file.with_file_name(fit_name("", name, SIDECAR_SUFFIX))
}

/// Writes the sidecar beside `moved_file` and returns its path. Written to a temporary name,
/// fsynced and renamed into place, so a reader never sees half a sidecar.
pub fn write_sidecar(moved_file: &Path, sidecar: &Sidecar) -> Result<PathBuf, FinishError> {
    let path = sidecar_path(moved_file);
    let error = |source| FinishError::Sidecar {
        path: path.clone(),
        source,
    };
    let mut json = serde_json::to_vec_pretty(sidecar).map_err(|e| error(io::Error::other(e)))?;
    json.push(b'\n');
    replace_file(&path, &json).map_err(error)?;
    Ok(path)
}

/// Puts `bytes` at `path` whole or not at all: written to a temporary name beside it, fsynced
/// and renamed into place, so a reader never sees half of it.
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, name) = split(path)?;
    // One fixed temp name per sidecar and agent (only the job that owns the file writes it): a
    // writer killed before its rename leaves a temp that the next try replaces instead of a
    // stray.
    let temp = dir.join(fit_name(
        ".",
        name,
        format!("{}{TEMP_SUFFIX}", super::agent_suffix()),
    ));
    let written = (|| {
        match fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Why [`add_transcoding`] left a sidecar as it was.
#[derive(Debug, thiserror::Error)]
pub enum SidecarUpdateError {
    /// Moved away from done/ (or deleted) since the upload.
    #[error("the sidecar {} is no longer there", escaped(path))]
    Gone { path: PathBuf },
    /// Something else is there now: another file's sidecar, a link, a folder, or text that
    /// is not a sidecar any more. Rewriting it would lose what it holds.
    #[error("{} is not this upload's sidecar any more ({why})", escaped(path))]
    NotThisUpload { path: PathBuf, why: String },
    #[error("cannot read the sidecar {}", escaped(path))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Write(#[from] FinishError),
}

/// Adds `record` to the sidecar beside `moved_file` (the job's file in done/), with `event`
/// at the end of its `events`, rewritten whole as [`write_sidecar`] writes it. Everything it
/// held stays, fields this hotfolder does not know included; a `transcoding` and an event of
/// the same name from an earlier try (a kill before the store recorded the end) are replaced,
/// not repeated. Only this job's own sidecar is rewritten: one that is gone, or is not the one
/// written for `job`, is left as it is.
pub fn add_transcoding(
    moved_file: &Path,
    job: &Job,
    record: &TranscodingRecord,
    event: &JobEvent,
) -> Result<PathBuf, SidecarUpdateError> {
    let path = sidecar_path(moved_file);
    let text = match read_sidecar(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(SidecarUpdateError::Gone { path });
        }
        Err(source) => return Err(SidecarUpdateError::Unreadable { path, source }),
    };
    let not_this = |why: String| SidecarUpdateError::NotThisUpload {
        path: path.clone(),
        why,
    };
    let unreadable = |err: serde_json::Error| not_this(format!("it cannot be read as one: {err}"));
    let identity: SidecarIdentity = serde_json::from_slice(&text).map_err(unreadable)?;
    if !identity.matches(job) {
        return Err(not_this(
            "its size, status, video id, sha256 or start time differ".into(),
        ));
    }
    let mut sidecar: Sidecar = serde_json::from_slice(&text).map_err(unreadable)?;
    sidecar.events.retain(|e| e.event != event.event);
    sidecar.events.push(event.clone());
    sidecar.transcoding = Some(record.clone());
    let error = |source| FinishError::Sidecar {
        path: path.clone(),
        source,
    };
    let mut json = serde_json::to_vec_pretty(&sidecar).map_err(|e| error(io::Error::other(e)))?;
    json.push(b'\n');
    replace_file(&path, &json).map_err(error)?;
    Ok(path)
}

/// The fields of a sidecar that tell which job wrote it.
#[derive(Deserialize)]
struct SidecarIdentity {
    size: u64,
    status: SidecarStatus,
    #[serde(default)]
    video_id: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    started_at: Option<OffsetDateTime>,
}

/// Sidecars are a few KiB; anything far larger under that name is not one of ours.
const SIDECAR_READ_LIMIT: u64 = 16 * 1024 * 1024;

/// Whether the sidecar at `path` was written for `job`: same size, status, video id, sha256 and
/// start time (to the nanosecond), which together no other job shares. A sidecar that cannot be
/// read or parsed is not this job's.
pub(super) fn written_for(path: &Path, job: &Job) -> bool {
    read_sidecar(path).is_ok_and(|text| is_for(&text, job))
}

/// The bytes of the sidecar at `path`, up to [`SIDECAR_READ_LIMIT`]. Not through a symlink,
/// and without waiting for a writer if it is a FIFO: only a regular file can be a sidecar,
/// and a name in done/ must never hang the agent.
fn read_sidecar(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    file.take(SIDECAR_READ_LIMIT).read_to_end(&mut text)?;
    Ok(text)
}

/// Whether the sidecar `text` was written for `job` (see [`written_for`]).
fn is_for(text: &[u8], job: &Job) -> bool {
    serde_json::from_slice::<SidecarIdentity>(text).is_ok_and(|identity| identity.matches(job))
}

impl SidecarIdentity {
    fn matches(&self, job: &Job) -> bool {
        let status = match job.outcome {
            Some(Outcome::Uploaded) => SidecarStatus::Uploaded,
            Some(Outcome::Failed) | None => SidecarStatus::Failed,
        };
        self.size == job.size
            && self.status == status
            && self.video_id == job.video_id
            && self.sha256 == job.sha256
            && self.started_at == job.started_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finish::tests::{names_in, write};
    use crate::store::{JobState, JobStore, NewJob};

    fn finished_job(dir: &Path) -> Job {
        let store = JobStore::open(&dir.join("state")).unwrap();
        let id = store
            .enqueue(NewJob {
                folder: dir.to_path_buf(),
                path: dir.join("clip.mov"),
                rel_path: PathBuf::from("clip.mov"),
                size: 2048,
                mtime_ns: 0,
                rule: "size and mtime unchanged for 10s".into(),
            })
            .unwrap()
            .id();
        store.start_attempt(id).unwrap();
        store.record_video(id, "v-42").unwrap();
        store
            .record_progress(id, 3, 2, 1024, 2048, std::time::Duration::ZERO)
            .unwrap();
        store.record_event(id, "finished", "2 chunks").unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("ab12"), None)
            .unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.state, JobState::Finishing);
        job
    }

    #[test]
    fn sidecar_has_every_contract_field() {
        let dir = tempfile::tempdir().unwrap();
        let job = finished_job(dir.path());
        let moved = dir.path().join("done/clip (1).mov");
        write(&moved, b"x");

        let path = write_sidecar(&moved, &Sidecar::from_job(&job, "clip (1).mov")).unwrap();
        assert_eq!(path, dir.path().join("done/clip (1).mov.upload.json"));
        assert_eq!(
            names_in(&dir.path().join("done")),
            ["clip (1).mov", "clip (1).mov.upload.json"]
        );

        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let object = json.as_object().unwrap();
        for field in [
            "file",
            "size",
            "sha256",
            "status",
            "video_id",
            "error",
            "chunks",
            "chunk_size",
            "attempts",
            "started_at",
            "finished_at",
            "bytes_per_second",
            "events",
        ] {
            assert!(object.contains_key(field), "missing {field} in {json}");
        }
        assert_eq!(json["file"], "clip (1).mov");
        assert_eq!(json["size"], 2048);
        assert_eq!(json["sha256"], "ab12");
        assert_eq!(json["status"], "uploaded");
        assert_eq!(json["video_id"], "v-42");
        assert!(json["error"].is_null());
        assert_eq!(json["chunks"], 2);
        assert_eq!(json["chunk_size"], 1024);
        assert_eq!(json["attempts"], 1);
        let started = json["started_at"].as_str().unwrap();
        OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339).unwrap();
        let events = json["events"].as_array().unwrap();
        assert_eq!(events[0]["event"], "detected");
        assert_eq!(events[0]["detail"], "size and mtime unchanged for 10s");
        assert_eq!(events[1]["event"], "finished");
        assert!(events[0]["at"].as_str().unwrap().ends_with('Z'));

        // It also reads back as a Sidecar.
        let back: Sidecar = serde_json::from_value(json).unwrap();
        assert_eq!(back.started_at, job.started_at);
    }

    /// What a writer killed before its rename leaves behind is replaced by the next write.
    #[test]
    fn a_sidecar_write_killed_before_its_rename_leaves_no_stray() {
        let dir = tempfile::tempdir().unwrap();
        let job = finished_job(dir.path());
        let moved = dir.path().join("done/clip.mov");
        write(&moved, b"x");
        write(
            &dir.path().join("done/.clip.mov.upload.json.hotfolder-tmp"),
            b"{\"fi",
        );

        write_sidecar(&moved, &Sidecar::from_job(&job, "clip.mov")).unwrap();
        assert_eq!(
            names_in(&dir.path().join("done")),
            ["clip.mov", "clip.mov.upload.json"]
        );
    }

    #[test]
    fn failed_sidecar_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = finished_job(dir.path());
        job.outcome = Some(Outcome::Failed);
        job.error = Some(JobError {
            status: Some(415),
            message: "Unsupported Media Type".into(),
            meaning: "the platform does not accept this kind of file".into(),
        });
        let moved = dir.path().join("clip.mov");
        write(&moved, b"x");
        let path = write_sidecar(&moved, &Sidecar::from_job(&job, "clip.mov")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"]["status"], 415);
        assert_eq!(json["error"]["message"], "Unsupported Media Type");
        assert_eq!(
            json["error"]["meaning"],
            "the platform does not accept this kind of file"
        );
    }

    #[test]
    fn rate_is_bytes_over_their_sending_time_not_the_whole_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = finished_job(dir.path());
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        job.started_at = Some(start);
        job.finished_at = Some(start + time::Duration::seconds(40));
        job.bytes_sent = 2048;
        job.sending = std::time::Duration::from_secs(4);
        assert_eq!(Sidecar::from_job(&job, "a").bytes_per_second, Some(512.0));
        job.sending = std::time::Duration::ZERO;
        assert_eq!(Sidecar::from_job(&job, "a").bytes_per_second, None);
    }

    fn transcoded(polls: u32) -> (TranscodingRecord, JobEvent) {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let record = TranscodingRecord {
            status: "transcoded".into(),
            finished_at: Some(at),
            followed_until: at,
            qualities: vec![QualityStatus {
                quality: "720p".into(),
                profile_key: Some("p720".into()),
                file_extension: Some("mp4".into()),
                completed: true,
            }],
            polls,
            summary: "every quality transcoded: 720p".into(),
        };
        let event = JobEvent {
            at,
            event: "transcoded".into(),
            detail: "every quality transcoded: 720p".into(),
        };
        (record, event)
    }

    #[test]
    fn transcoding_is_added_without_losing_anything_and_not_twice() {
        let dir = tempfile::tempdir().unwrap();
        let job = finished_job(dir.path());
        let moved = dir.path().join("done/clip.mov");
        write(&moved, b"x");
        let path = write_sidecar(&moved, &Sidecar::from_job(&job, "clip.mov")).unwrap();
        // Someone (or a newer hotfolder) added a field of their own.
        let mut before: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        before["reviewed_by"] = serde_json::json!({"name": "Ana", "ok": true});
        fs::write(&path, serde_json::to_vec_pretty(&before).unwrap()).unwrap();

        let (record, event) = transcoded(3);
        assert_eq!(
            add_transcoding(&moved, &job, &record, &event).unwrap(),
            path
        );
        // Again, as after a kill before the store recorded it: replaced, not repeated.
        let (record, event) = transcoded(4);
        add_transcoding(&moved, &job, &record, &event).unwrap();
        let after: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for (key, value) in before.as_object().unwrap() {
            if key != "events" {
                assert_eq!(&after[key], value, "{key} changed");
            }
        }
        let events = after["events"].as_array().unwrap();
        let old_events = before["events"].as_array().unwrap();
        assert_eq!(&events[..old_events.len()], &old_events[..]);
        assert_eq!(events.len(), old_events.len() + 1);
        assert_eq!(events.last().unwrap()["event"], "transcoded");
        let transcoding = &after["transcoding"];
        assert_eq!(transcoding["status"], "transcoded");
        assert_eq!(transcoding["polls"], 4);
        assert_eq!(transcoding["finished_at"], "2027-01-15T08:00:00Z");
        assert_eq!(transcoding["qualities"][0]["quality"], "720p");
        assert_eq!(transcoding["qualities"][0]["completed"], true);
        assert_eq!(
            names_in(&dir.path().join("done")),
            ["clip.mov", "clip.mov.upload.json"],
            "no temp file left"
        );
    }

    #[test]
    fn a_sidecar_moved_away_or_replaced_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let job = finished_job(dir.path());
        let moved = dir.path().join("done/clip.mov");
        write(&moved, b"x");
        let (record, event) = transcoded(1);
        assert!(matches!(
            add_transcoding(&moved, &job, &record, &event),
            Err(SidecarUpdateError::Gone { .. })
        ));
        // Another upload's sidecar under the name now.
        let mut other = job.clone();
        other.video_id = Some("someone-else".into());
        let path = write_sidecar(&moved, &Sidecar::from_job(&other, "clip.mov")).unwrap();
        let theirs = fs::read(&path).unwrap();
        let err = add_transcoding(&moved, &job, &record, &event).unwrap_err();
        assert!(
            matches!(err, SidecarUpdateError::NotThisUpload { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), theirs);
        // Text that is no sidecar.
        fs::write(&path, b"notes").unwrap();
        let err = add_transcoding(&moved, &job, &record, &event).unwrap_err();
        assert!(err.to_string().contains("cannot be read as one"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"notes");
    }

    #[test]
    fn sidecar_path_appends_to_the_whole_name() {
        assert_eq!(
            sidecar_path(Path::new("/d/a.b.mov")),
            PathBuf::from("/d/a.b.mov.upload.json")
        );
    }
}

#[cfg(test)]
mod long_name_tests {
    use super::*;
    use crate::finish::NAME_MAX;

    #[test]
    fn names_too_long_for_the_file_system_are_shortened_uniquely() {
        let a = format!("{}.mov", "ü".repeat(125));
        let b = format!("{}x.mov", "ü".repeat(125));
        let side_a = sidecar_path(&Path::new("/done").join(&a));
        let side_b = sidecar_path(&Path::new("/done").join(&b));
        let name_a = side_a.file_name().unwrap().to_str().unwrap();
        assert!(
            name_a.len() <= NAME_MAX && name_a.ends_with(SIDECAR_SUFFIX),
            "{name_a}"
        );
        assert_ne!(side_a, side_b);
        // Short names are untouched.
        assert_eq!(
            sidecar_path(Path::new("/done/clip.mov")),
            Path::new("/done/clip.mov.upload.json")
        );
    }
}
