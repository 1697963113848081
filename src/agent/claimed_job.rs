//! A worker's part in shared folders (design: `shared_folder`): claiming the job's file before
//! anything is sent, giving it back to the folder when it changed after the claim, and
//! letting go of a job whose claim another agent took over.

use std::sync::Arc;

use super::Shared;
use crate::chain;
use crate::shared_folder::claim::{self, Claim, ClaimError};
use crate::store::Job;

/// What became of a job's claim at the start of its upload.
pub(super) enum Claimed {
    /// The file is claimed by this agent (now, or before a restart): upload it.
    Held(Claim),
    /// The job ends here (another agent won, or took it over); its store record says why.
    Ended,
    /// The claim could not be made (the share refused a write): the job waits until its file
    /// is looked at again.
    NotNow,
}

/// Claims the file of `job` (a shared folder's) for this agent, or checks that the claim it has
/// (a resumed job) is still this agent's. Updates `job.path` to where the file is now.
pub(super) async fn take(
    shared: &Arc<Shared>,
    job: &mut Job,
    name: &str,
    video_manager: u64,
) -> Claimed {
    let holds = &shared.holds;
    if let Some(existing) = claim::Claim::of_file(&job.folder, &job.path) {
        let read = tokio::task::spawn_blocking({
            let existing = existing.clone();
            move || existing.read()
        })
        .await
        .unwrap_or_else(|err| Err(ClaimError::Io(std::io::Error::other(err))));
        let me = &holds.agent().id;
        return match read {
            Ok(record) if record.agent == *me => {
                holds.hold(&job.folder, existing.clone(), record);
                Claimed::Held(existing)
            }
            // A share that dropped cannot tell: not a takeover (see `Claim::held_by`).
            Err(ClaimError::Io(err)) => not_now(
                shared,
                job,
                name,
                &format!("cannot read the file's claim record now: {err}"),
                "cannot read the file's claim record now (a share that dropped?); trying again",
            ),
            _ => {
                taken_over(shared, job.id, name);
                Claimed::Ended
            }
        };
    }
    let (folder, path, rel_path, size) = (
        job.folder.clone(),
        job.path.clone(),
        job.rel_path.clone(),
        job.size,
    );
    let agent = holds.agent();
    let made =
        tokio::task::spawn_blocking(move || claim::claim(&folder, agent, &path, &rel_path, size))
            .await
            .unwrap_or_else(|err| Err(ClaimError::Io(std::io::Error::other(err))));
    match made {
        Ok((claim, mut record)) => {
            record.video_manager_id = Some(video_manager);
            holds.hold(&job.folder, claim.clone(), record);
            let _ = holds.update(&claim, |_| {});
            if let Err(err) = shared.store.record_claimed_path(job.id, &claim.file) {
                // The claim stays this agent's; without its path in the store, the keeper
                // adopts it as a job of its own, and this one is forgotten.
                shared.store_failed(&format!("cannot record the claim of job {}", job.id), &err);
                holds.end(&claim, false);
                return Claimed::Ended;
            }
            tracing::debug!(file = %name, "claimed: {}", crate::escape::escaped(&claim.file));
            job.path = claim.file.clone();
            Claimed::Held(claim)
        }
        Err(ClaimError::Gone) => {
            tracing::info!(file = %name, "another agent claimed the file first (or it was moved away); forgetting it here");
            if let Err(err) = shared.store.forget(
                job.id,
                "another agent claimed the file first, or it was moved away",
            ) {
                shared.store_failed(&format!("cannot forget job {}", job.id), &err);
            }
            Claimed::Ended
        }
        Err(err) => not_now(
            shared,
            job,
            name,
            &chain(&err).to_string(),
            "cannot claim the file in the shared folder; trying again",
        ),
    }
}

/// The claim cannot be made or checked now (`why`): the job waits, paused with
/// `pause_reason`, until the intake looks at its file again.
fn not_now(shared: &Shared, job: &Job, name: &str, why: &str, pause_reason: &str) -> Claimed {
    tracing::warn!(file = %name, "{why}; trying again once the file is looked at again");
    if let Err(err) = shared.store.pause_changed(job.id, why, pause_reason) {
        shared.store_failed(&format!("cannot requeue job {}", job.id), &err);
    }
    let _ = shared.retrack.send(job.path.clone());
    Claimed::NotNow
}

/// The in-place record of an exclusive folder's upload (see `ClaimRecord::in_place`): the one
/// this agent holds or left before a restart, or a new one. `None` where none can be written
/// (a read-only folder): the upload goes on without, as before records existed.
pub(super) async fn keep_in_place(
    shared: &Arc<Shared>,
    job: &Job,
    video_manager: u64,
) -> Option<Claim> {
    let holds = &shared.holds;
    if let Some(claim) = holds.claim_for_file(&job.path) {
        return Some(claim);
    }
    let (folder, path, rel_path, size) = (
        job.folder.clone(),
        job.path.clone(),
        job.rel_path.clone(),
        job.size,
    );
    let agent = holds.agent();
    let made = tokio::task::spawn_blocking(move || {
        match claim::find_own_in_place(&folder, agent, &rel_path) {
            Some(found) => Ok(found),
            None => claim::record_in_place(&folder, agent, &path, &rel_path, size),
        }
    })
    .await
    .unwrap_or_else(|err| Err(ClaimError::Io(std::io::Error::other(err))));
    match made {
        Ok((claim, mut record)) => {
            record.video_manager_id = Some(video_manager);
            holds.hold(&job.folder, claim.clone(), record);
            let _ = holds.update(&claim, |_| {});
            Some(claim)
        }
        Err(err) => {
            tracing::debug!(file = %crate::escape::escaped(&job.rel_path), "no record of the upload in the folder: {}", chain(&err));
            None
        }
    }
}

/// Whether `claim` is an in-place record (its file is where it was dropped).
pub(super) fn in_place(job: &Job, claim: &Claim) -> bool {
    claim.file == job.folder.join(&job.rel_path)
}

/// Another agent took the claim of job `id` over: the job ends here, quietly (that agent
/// uploads the file, on the same video).
pub(super) fn taken_over(shared: &Shared, id: i64, name: &str) {
    tracing::warn!(file = %name, job = id, "this file's claim is no longer this agent's: another agent took it over (this agent did not renew it in time) and continues the upload on the same video, or someone changed .hotfolder/ by hand");
    // The marker keyword is the new owner's now (it may be how it finds the video): this
    // agent's sweep of finished jobs' markers must leave it alone.
    if let Err(err) = shared.store.clear_marker(id) {
        shared.store_failed(&format!("cannot let go of job {id}'s marker"), &err);
    }
    if let Err(err) = shared.store.forget(
        id,
        "the claim was taken over by another agent (which continues the upload on the same video) or removed by hand",
    ) {
        shared.store_failed(&format!("cannot forget job {id}"), &err);
    }
}

/// The claimed file changed after it was claimed (a writer still had it open): it goes back
/// into the folder under its name (numbered if the name is taken meanwhile) and the claim
/// ends; the intake finds it there and queues it once it is stable again.
pub(super) fn give_back(shared: &Arc<Shared>, job: &Job, claim: &Claim, name: &str) {
    if std::fs::symlink_metadata(&claim.file).is_err() {
        // Deleted from the claim folder by someone: nothing to give back or upload.
        tracing::info!(file = %name, "the claimed file is gone from the claim folder; forgetting it");
        shared.holds.end(claim, true);
        if let Err(err) = shared.store.forget(
            job.id,
            "the file disappeared from the claim folder before it was uploaded",
        ) {
            shared.store_failed(&format!("cannot forget job {}", job.id), &err);
        }
        return;
    }
    if let Ok(Some(video)) = shared.store.job(job.id).map(|job| job.video_id) {
        tracing::warn!(file = %name, video_id = %video, "the file changed after it was claimed: it is uploaded again once stable, by whichever agent claims it, as a new video; video {video} stays incomplete on the platform (delete it in VideoManager Pro)");
    }
    let result = crate::finish::move_without_overwrite(
        &claim.file,
        &job.folder,
        &job.rel_path,
        &shared.stop,
    );
    match result {
        Ok(back) => {
            tracing::info!(file = %name, "the file changed after it was claimed; it is back in the folder as {} until it is stable", crate::escape::escaped(&back));
            shared.holds.end(claim, true);
            if let Err(err) = shared.store.forget(
                job.id,
                "the file changed after it was claimed; back in the folder until it is stable",
            ) {
                shared.store_failed(&format!("cannot forget job {}", job.id), &err);
            }
        }
        Err(err) => {
            tracing::error!(file = %name, "the file changed after it was claimed, and cannot go back into the folder: {}; it stays in {}, paused", chain(&err), crate::escape::escaped(&claim.file));
            if let Err(err) = shared.store.pause_changed(
                job.id,
                "the file changed after it was claimed",
                "changed after it was claimed, and cannot go back into the folder",
            ) {
                shared.store_failed(&format!("cannot pause job {}", job.id), &err);
            }
        }
    }
}

/// Whether the job's file is in a claim folder (claimed before a restart, or taken over).
pub(super) fn is_claim_path(job: &Job) -> bool {
    Claim::of_file(&job.folder, &job.path).is_some()
}
