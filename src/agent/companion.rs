//! The dispatcher's side of companions (`metadata_file`, see `crate::metadata`): which
//! metadata a job's create call carries, and the calls after its upload.
//!
//! The companion is read when the upload starts and kept in the store, so that a restart
//! mid-upload applies the same metadata even if the companion changed or went meanwhile. The
//! intake already held the video back until its companion came (or refused it for an invalid
//! one); a companion found invalid only now (rewritten since) fails the job the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::release::{Refusal, queue_refused};
use crate::config::FolderSettings;
use crate::escape::escaped;
use crate::metadata::apply::{CompanionCall, calls_after_upload, create_metadata};
use crate::metadata::{
    Companion, CompanionFormat, CompanionMode, OrphanJobXml, Search, find_companion,
    orphan_job_xmls,
};
use crate::store::{Job, JobError, NewJob};
use crate::vmpro::api::{Platform, UploadObserver, VideoMetadata};
use crate::vmpro::error::VmproError;

/// The create call's metadata for `job`, and its companion when it has one. `Err`: the
/// companion is not valid; the job fails with this error.
pub(super) fn metadata_for_job(
    shared: &Arc<Shared>,
    job: &Job,
    folder: Option<&FolderSettings>,
) -> Result<(VideoMetadata, Option<Companion>), JobError> {
    let folder_metadata = folder.map(|f| f.metadata.clone()).unwrap_or_default();
    let mode = folder.map_or(CompanionMode::Off, |f| f.companion.mode);
    if mode == CompanionMode::Off {
        return Ok((folder_metadata, None));
    }
    match shared.store.companion(job.id) {
        Ok(Some(stored)) => {
            let metadata = create_metadata(&folder_metadata, &stored.companion.metadata);
            return Ok((metadata, Some(stored.companion)));
        }
        Ok(None) => {}
        Err(err) => {
            // Read again from the file below; the upload is not held back for it.
            shared.store_failed("cannot read the job's companion", &err);
        }
    }
    // The intake waited for it to settle; here it is read as it is.
    // Beside the video where it was dropped: a shared folder's video is in a claim folder by
    // now, its companion still where it was.
    let dropped_at = job.folder.join(&job.rel_path);
    match find_companion(&dropped_at, Duration::ZERO, SystemTime::now()) {
        Ok(Search::Found(companion)) => {
            if let Err(err) = shared.store.record_companion(job.id, &companion) {
                shared.store_failed("cannot record the job's companion", &err);
            }
            let metadata = create_metadata(&folder_metadata, &companion.metadata);
            for what in &companion.metadata.not_applied {
                tracing::warn!(file = %escaped(&job.rel_path), "companion {}: not applied: {what}", escaped(&companion.path));
            }
            Ok((metadata, Some(companion)))
        }
        // `required`: the video goes only with its companion. It was there at intake and is
        // gone (removed, renamed, a job XML rewritten to name another video) or is being
        // written again: the folder's metadata would be a silent substitute.
        Ok(Search::Missing) if mode == CompanionMode::Required => Err(JobError {
            status: None,
            message: "its companion is no longer beside it (removed, renamed, or a job XML now naming another video)".into(),
            meaning: "metadata_file = \"required\": a video is uploaded only with its companion, and it was gone when the upload was to start; nothing was created. Deliver the companion, then move the video back with `hotfolder retry`".into(),
        }),
        Ok(Search::Arriving(path)) if mode == CompanionMode::Required => Err(JobError {
            status: None,
            message: format!(
                "its companion {} was being changed when the upload was to start",
                escaped(path.file_name().unwrap_or_default())
            ),
            meaning: "metadata_file = \"required\": a video is uploaded only with a companion that is whole; nothing was created. Move the video back with `hotfolder retry` once the companion is written".into(),
        }),
        Ok(Search::Missing | Search::Arriving(_)) => Ok((folder_metadata, None)),
        Err(err) => Err(JobError {
            status: None,
            message: crate::chain(&err),
            meaning: "the video was not uploaded: fix its companion (or remove it), then move both back with `hotfolder retry`".into(),
        }),
    }
}

/// The calls after the upload for `companion`, recorded for the sidecar (failures also in
/// the job's events and the log). `Err(Cancelled)`: the agent stops; they are made again when
/// the job resumes.
pub(super) async fn apply_after_upload(
    shared: &Arc<Shared>,
    job: &Job,
    platform: &Platform,
    video_id: &str,
    companion: &Companion,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> Result<Vec<CompanionCall>, VmproError> {
    let calls =
        calls_after_upload(platform, video_id, &companion.metadata, shutdown, observer).await?;
    for call in calls.iter().filter(|c| !c.ok) {
        let text = format!(
            "{} failed: {}; the video stays uploaded without it",
            call.call,
            call.error.as_deref().unwrap_or("")
        );
        tracing::warn!(file = %escaped(&job.rel_path), video_id, "{text}");
        if let Err(err) = shared.store.record_event(job.id, "companion", &text) {
            shared.store_failed("cannot record a companion call", &err);
        }
    }
    if let Err(err) = shared.store.record_companion_calls(job.id, &calls) {
        shared.store_failed("cannot record the companion's calls", &err);
    }
    Ok(calls)
}

/// How often the watched folders are looked at for job XMLs whose video never came.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long one sweep of a folder may take (a share that hangs): the next round tries again.
const ORPHAN_SWEEP_PATIENCE: Duration = Duration::from_secs(20);

/// Runs until `stop`: a job XML directly in a folder with companions on that names a video not
/// there, unchanged for `incomplete_after`, goes to failed/ with the reason, as the FTP ingest
/// fails a job whose source is missing.
pub(super) async fn sweep_orphan_job_xmls(shared: Arc<Shared>, stop: CancellationToken) {
    let mut refused: Vec<Refusal> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ORPHAN_SWEEP_EVERY) => {}
        }
        if !shared.store_health.is_writable() {
            continue;
        }
        let folders: Vec<FolderSettings> = shared
            .settings()
            .folders
            .iter()
            .filter(|f| f.companion.mode != CompanionMode::Off)
            .cloned()
            .collect();
        for folder in folders {
            let dir = folder.path.clone();
            let waited = folder.incomplete_after;
            let names = crate::ready::NameFilter::new(&folder.include, &folder.exclude);
            let found = tokio::time::timeout(
                ORPHAN_SWEEP_PATIENCE,
                tokio::task::spawn_blocking(move || {
                    let mut orphans = orphan_job_xmls(&dir, waited, SystemTime::now());
                    orphans.retain(|orphan| {
                        let video = orphan.video.file_name().unwrap_or_default();
                        // `notes.txt.json` is not the companion of a video this folder takes.
                        let a_video = orphan.format != CompanionFormat::Json
                            || names.verdict(video).is_accepted();
                        // A video claimed by some agent (moved into a claim folder, or being
                        // uploaded in place) is on its way: its companion waits for it.
                        let claimed = orphan.video.strip_prefix(&dir).is_ok_and(|rel_path| {
                            crate::shared_folder::claim::is_claimed(&dir, rel_path)
                        });
                        a_video && !claimed
                    });
                    orphans
                }),
            )
            .await;
            let Ok(Ok(orphans)) = found else {
                continue;
            };
            for orphan in orphans {
                // Its video may be on its way out (moved to done/ a moment before its
                // companion): a job for it still open means it is not an orphan.
                if shared
                    .store
                    .active_job_for_path(&orphan.video)
                    .is_ok_and(|job| job.is_some())
                {
                    continue;
                }
                refused.push(orphan_refusal(&folder, &orphan));
            }
        }
        if !refused.is_empty() {
            refused = queue_refused(&shared, std::mem::take(&mut refused));
        }
    }
}

fn orphan_refusal(folder: &FolderSettings, orphan: &OrphanJobXml) -> Refusal {
    let rel_path = orphan
        .path
        .strip_prefix(&folder.path)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| orphan.path.clone());
    let video = escaped(orphan.video.file_name().unwrap_or_default()).to_string();
    let waited = humantime::format_duration(folder.incomplete_after);
    let (rule, message, meaning) = match orphan.format {
        CompanionFormat::JobXml => (
            format!("job XML naming {video}, which is not in the folder"),
            format!(
                "the job XML names {video}, which has not been beside it for {waited} (it never came, or it left before this XML did)"
            ),
            format!(
                "a job XML is the trigger for the video it names in <source><file>; {video} is not beside it. Deliver the video, then move the XML back with `hotfolder retry`"
            ),
        ),
        CompanionFormat::Json => (
            format!("JSON companion of {video}, which is not in the folder"),
            format!(
                "the JSON companion is for {video}, which has not been beside it for {waited} (it never came, or it left before this JSON did)"
            ),
            format!(
                "left in the folder it would be applied to the next {video} dropped there; to use it, deliver the video, then move the JSON back with `hotfolder retry`"
            ),
        ),
    };
    Refusal {
        job: NewJob {
            folder: folder.path.clone(),
            path: orphan.path.clone(),
            rel_path,
            size: orphan.size,
            mtime_ns: i64::try_from(orphan.mtime_ns).unwrap_or(i64::MAX),
            rule,
        },
        error: JobError {
            status: None,
            message,
            meaning,
        },
        never_finished: false,
    }
}
