//! The dispatcher's side of companions (`metadata_file`, see `crate::metadata`): which
//! metadata a job's create call carries, and the calls after its upload.
//!
//! The companion is read when the upload starts and kept in the store, so that a restart
//! mid-upload applies the same metadata even if the companion changed or went meanwhile. The
//! intake already held the video back until its companion came (or refused it for an invalid
//! one); a companion found invalid only now (rewritten since) fails the job the same way.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::FolderSettings;
use crate::escape::escaped;
use crate::metadata::apply::{CompanionCall, calls_after_upload, create_metadata};
use crate::metadata::{Companion, CompanionMode, Search, find_companion};
use crate::store::{Job, JobError};
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
    match find_companion(&job.path, Duration::ZERO, SystemTime::now()) {
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
