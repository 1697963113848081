//! Finishing a job's file, also after a crash: the move to done/ or failed/ with its sidecar,
//! recognising a move that a kill interrupted (so a file is never moved twice nor reported
//! gone while it is in done/), and clearing our own temp files left by a kill.

use std::path::{Path, PathBuf};

use super::{Sidecar, TEMP_SUFFIX, move_without_overwrite, sidecar_path, write_sidecar};
use crate::chain;
use crate::escape::escaped;
use crate::store::{Job, JobStore, Outcome};

/// How a job's file left the watched folder.
pub enum Finished {
    Moved(PathBuf),
    /// Someone removed it after its upload ended and before the move: nothing to move.
    RemovedBeforeMove(String),
}

/// Moves a decided job's file to `base` (done/ or failed/) under its path relative to the
/// watched folder, writes its sidecar and records the move. Also completes a move a kill
/// interrupted: a file already moved is found by [`find_moved`] instead of being moved twice.
/// An error is the reason in words; the file is then where it was and the job still finishing.
pub fn finish_job_file(store: &JobStore, job: &Job, base: &Path) -> Result<Finished, String> {
    // A regular file reached without a link (see `nofollow`); anything else at the path now
    // (a link, a pipe, a folder on the way swapped for a link) is not the uploaded file.
    let dest = if crate::nofollow::is_regular_file(&job.path) {
        move_without_overwrite(&job.path, base, &job.rel_path).map_err(|e| chain(&e))?
    } else if let Some(moved) = find_moved(base, &job.rel_path, job.size) {
        // A crash between the move and the record: the moved file is the one without a sidecar.
        moved
    } else if job.folder.is_dir() {
        // The folder is there but the file is not (with a missing folder, wait for it instead).
        let ended = match (&job.outcome, &job.video_id) {
            (Some(Outcome::Uploaded), Some(video)) => format!("uploaded as video {video}"),
            _ => "failed".to_owned(),
        };
        let why = format!(
            "{} was removed from the folder after it {ended}, before it could be moved to {}; \
             nothing to move",
            escaped(&job.path),
            escaped(base)
        );
        store.forget(job.id, &why).map_err(|e| chain(&e))?;
        return Ok(Finished::RemovedBeforeMove(why));
    } else {
        return Err(format!(
            "{} cannot be seen (its folder is missing) and was not found in {}",
            escaped(&job.path),
            escaped(base)
        ));
    };
    let file_name = dest.file_name().unwrap_or_default();
    if let Err(err) = store.record_event(job.id, "moved", &format!("to {}", escaped(&dest))) {
        // The sidecar then lacks this one event; the move itself is recorded below.
        tracing::warn!(
            job = job.id,
            "cannot record the move in the job's events: {}",
            chain(&err)
        );
    }
    let fresh = store.job(job.id).map_err(|e| chain(&e))?;
    let sidecar = Sidecar::from_job(&fresh, file_name);
    write_sidecar(&dest, &sidecar).map_err(|e| chain(&e))?;
    store.mark_moved(job.id, &dest).map_err(|e| chain(&e))?;
    Ok(Finished::Moved(dest))
}

/// After a crash mid-finish: the file in `base` named like `rel_path` (or with a ` (n)` suffix)
/// of the right size that has no sidecar yet.
fn find_moved(base: &Path, rel_path: &Path, size: u64) -> Option<PathBuf> {
    let first = base.join(rel_path);
    let dir = first.parent()?.to_path_buf();
    let stem = first.file_stem()?.to_string_lossy().into_owned();
    let ext = first
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    std::iter::once(first.clone())
        .chain((1..1000).map(|n| dir.join(format!("{stem} ({n}){ext}"))))
        .take_while(|p| p.exists() || p == &first)
        .find(|p| {
            p.metadata().map(|m| m.len() == size).unwrap_or(false) && !sidecar_path(p).exists()
        })
}

/// Removes our own temporary files (`.…hotfolder-tmp`: a copy across file systems or a
/// sidecar being written) that a kill left in done/ or failed/. Only ours: nothing else is
/// touched.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            remove_stale_temps(&path);
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %escaped(&path), "removed a temporary file left by an interrupted move")
                }
                Err(err) => {
                    tracing::warn!(path = %escaped(&path), "cannot remove a stale temporary file: {err}")
                }
            }
        }
    }
}
