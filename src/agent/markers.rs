//! Marker keywords left behind by finished jobs. An upload removes its video's marker as soon
//! as the video's id is recorded, but that may fail (the keywords call refused, the network
//! down at that moment) and must never fail the file; so finished jobs that still hold a marker
//! are swept here: at start and then every [`MARKER_SWEEP_EVERY`], off the intake loop and
//! never while the queue is paused.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::chain;
use crate::store::{Job, JobState};
use crate::vmpro::api::{Platform, Unobserved};
use crate::vmpro::error::{Blame, VmproError};

/// How often finished jobs' markers are looked at again.
pub(super) const MARKER_SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Jobs handled per sweep; the rest wait for the next one (API calls are paced anyway).
const SWEEP_BATCH: usize = 50;

/// Sweeps until `shutdown`.
pub(super) async fn sweep_markers(shared: Arc<Shared>, shutdown: CancellationToken) {
    // Jobs whose failure was logged at warn level already: later ones go to debug, so a
    // platform that refuses keyword changes for months does not fill the log.
    let mut warned = HashSet::new();
    loop {
        if shared.dispatch.pause_reason().is_none() {
            sweep_once(&shared, &shutdown, &mut warned).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MARKER_SWEEP_EVERY) => {}
        }
    }
}

async fn sweep_once(shared: &Shared, shutdown: &CancellationToken, warned: &mut HashSet<i64>) {
    let jobs = match shared.store.finished_with_marker(SWEEP_BATCH) {
        Ok(jobs) => jobs,
        Err(err) => {
            tracing::error!(
                "state store: cannot list marker keywords to remove: {}",
                chain(&err)
            );
            return;
        }
    };
    if jobs.is_empty() {
        return;
    }
    let platform = shared.platform();
    for job in jobs {
        match clear_on_platform(&platform, &job, shutdown).await {
            Ok(()) => {
                warned.remove(&job.id);
                if let Err(err) = shared.store.clear_marker(job.id) {
                    tracing::error!(job = job.id, "state store: {}", chain(&err));
                }
            }
            Err(VmproError::Cancelled) => return,
            Err(err) => {
                // The network or the platform failing would fail every job alike: the rest
                // waits for the next sweep instead of spending API calls on the same answer.
                let everyone = err.blame() == Blame::AccountOrNetwork;
                let text = format!(
                    "cannot remove the marker keyword of {} from the platform yet (tried again in {} min): {}",
                    job.rel_path.display(),
                    MARKER_SWEEP_EVERY.as_secs() / 60,
                    chain(&err)
                );
                if warned.insert(job.id) {
                    tracing::warn!(job = job.id, "{text}");
                } else {
                    tracing::debug!(job = job.id, "{text}");
                }
                if everyone {
                    return;
                }
            }
        }
    }
}

/// How long [`clear_soon`] tries before it leaves a marker to the sweep.
const CLEAR_SOON_PATIENCE: Duration = Duration::from_secs(30);

/// Takes a finished job's marker off the platform now rather than at the next sweep (a
/// claimed file's marker stays on its video until the file is in done/ or failed/: it is how
/// an agent that takes the claim over proves the video is the file's). A failure is left to
/// the sweep.
pub(super) fn clear_soon(shared: &Arc<Shared>, id: i64) {
    let shared = shared.clone();
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let Ok(job) = shared.store.job(id) else {
            return;
        };
        if job.marker.is_none() {
            return;
        }
        let platform = shared.platform();
        // Not cut short by a stop: one request (and its retries), which the shutdown's grace
        // waits for, rather than a marker left on until the next start.
        let unstopped = CancellationToken::new();
        let cleared = tokio::time::timeout(
            CLEAR_SOON_PATIENCE,
            clear_on_platform(&platform, &job, &unstopped),
        )
        .await
        .unwrap_or(Err(VmproError::Cancelled));
        match cleared {
            Ok(()) => {
                if let Err(err) = shared.store.clear_marker(id) {
                    tracing::debug!(job = id, "state store: {}", chain(&err));
                }
            }
            Err(VmproError::Cancelled) => {}
            Err(err) => tracing::warn!(
                job = id,
                "cannot remove the marker keyword of {} from the platform yet (tried again in {} min): {}",
                job.rel_path.display(),
                MARKER_SWEEP_EVERY.as_secs() / 60,
                chain(&err)
            ),
        }
    });
}

/// Takes the job's marker off the platform: off its video, or, for a job that ended while a
/// create's outcome was unknown, off whatever video that create made (reported: nobody
/// uploaded into it).
async fn clear_on_platform(
    platform: &Arc<Platform>,
    job: &Job,
    shutdown: &CancellationToken,
) -> Result<(), VmproError> {
    let Some(marker) = job.marker.as_deref() else {
        return Ok(());
    };
    // The marker is in the VideoManager the job uploaded into.
    let platform = &*match job.video_manager_id {
        Some(id) => platform.for_video_manager(id),
        None => platform.clone(),
    };
    if let Some(video_id) = &job.video_id {
        return platform
            .remove_marker(video_id, marker, shutdown, &Unobserved)
            .await;
    }
    if job.create_sent_at.is_none() {
        // Every create of this job was answered without making a video.
        return Ok(());
    }
    let found = platform.find_marked(marker, shutdown, &Unobserved).await?;
    for video_id in &found {
        if job.state == JobState::Done && found.len() == 1 {
            // Uploaded, but the store failed to take the id: this is the upload itself.
            tracing::info!(
                job = job.id,
                video_id,
                "{} was uploaded into this video (its id was not on record)",
                job.rel_path.display()
            );
        } else {
            tracing::warn!(
                job = job.id,
                video_id,
                "an empty video on the platform: a create-video request for {} made it, but its answer was lost and the job ended ({}) without uploading into it; delete it in VideoManager Pro",
                job.rel_path.display(),
                job.state
            );
        }
        platform
            .remove_marker(video_id, marker, shutdown, &Unobserved)
            .await?;
    }
    Ok(())
}
