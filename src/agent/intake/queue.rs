//! Complete files into the queue: one transaction per batch, each path once, a paused job of a
//! changed file made waiting again, and the rule that goes into each job's `detected` event.

use super::*;

/// The files in their order, each path once, with what was found last about it.
pub(super) fn latest_per_path(files: Vec<ReadyFile>) -> Vec<ReadyFile> {
    let mut seen = HashSet::new();
    let mut latest: Vec<ReadyFile> = files
        .into_iter()
        .rev()
        .filter(|file| seen.insert(file.stable.path.clone()))
        .collect();
    latest.reverse();
    latest
}

/// Complete files become jobs (or a paused job of a changed file becomes waiting again).
/// Returns the files that could not be queued because the store cannot be written, to be
/// queued once it can.
pub(super) fn enqueue(shared: &Arc<Shared>, files: Vec<ReadyFile>) -> Vec<ReadyFile> {
    let jobs: Vec<NewJob> = files.iter().map(new_job).collect();
    let results = match shared.store.enqueue_many(&jobs) {
        Ok(results) => results,
        Err(err) => {
            let what = format!("cannot queue {} complete file(s)", jobs.len());
            return if shared.store_failed(&what, &err) {
                files
            } else {
                Vec::new()
            };
        }
    };
    let mut again = Vec::new();
    for ((job, result), file) in jobs.iter().zip(results).zip(files) {
        match result {
            Enqueued::New(_) => {
                tracing::info!(
                    file = %escaped(&job.rel_path),
                    folder = %escaped(&job.folder),
                    size = job.size,
                    "complete: {}",
                    job.rule
                );
                if let Some(name) = job.path.file_name()
                    && name.to_str().is_none()
                {
                    tracing::warn!(
                        file = %escaped(&job.rel_path),
                        "the file name is not valid UTF-8: it is uploaded under the name \"{}\"; the sidecar's file_raw keeps the exact bytes",
                        escaped(&*name.to_string_lossy())
                    );
                }
            }
            Enqueued::AlreadyActive(id) => {
                // A file that changed while uploading is waiting (paused) to settle again.
                if let Ok(active) = shared.store.job(id)
                    && active.state == JobState::Paused
                {
                    match shared.store.requeue_changed(id, job.size, job.mtime_ns) {
                        Ok(()) => {
                            if let Err(err) = shared.store.record_event(
                                id,
                                "complete",
                                &format!("stable again: {}", job.rule),
                            ) {
                                shared.store_failed(
                                    &format!("cannot record an event of job {id}"),
                                    &err,
                                );
                            }
                            tracing::info!(file = %escaped(&job.rel_path), "stable again; uploading it again to the same video");
                        }
                        Err(err) => {
                            if shared.store_failed(&format!("cannot requeue job {id}"), &err) {
                                again.push(file);
                            }
                        }
                    }
                }
            }
        }
    }
    shared.wake.notify_one();
    again
}

/// A file's name relative to its watched folder (`sub/clip.mov`): the job's `rel_path`, and the
/// `FILE` of every log line about it, so that `journalctl -u hotfolder FILE=clip.mov` finds
/// them all (packaging/README.md). Outside the folder (never, but not worth a panic): its name.
pub(in crate::agent) fn name_in_folder(folder: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(folder)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.file_name().map(PathBuf::from).unwrap_or_default())
}

/// The job for a complete file; its rule lists every signal it passed.
pub(super) fn new_job(file: &ReadyFile) -> NewJob {
    let path = &file.stable.path;
    let name = if file.verdict.is_empty() {
        String::new()
    } else {
        format!("; name {}", file.verdict)
    };
    NewJob {
        folder: file.folder.path.clone(),
        path: path.clone(),
        rel_path: name_in_folder(&file.folder.path, path),
        size: file.stable.snapshot.size,
        mtime_ns: i64::try_from(file.stable.snapshot.mtime_ns).unwrap_or(i64::MAX),
        rule: format!("{}{name}{}", file.stable.rule, not_utf8_note(path)),
    }
}

/// For the job's rule (and so the sidecar's events): a name that is not valid UTF-8 is sent
/// with U+FFFD in place of each invalid sequence, because the platform takes text only. Such
/// files are uploaded rather than left behind: an export from an old share or tool with a
/// Latin-1 name is still the studio's delivery, and a warning nobody reads would leave it
/// sitting in the folder for good.
pub(super) fn not_utf8_note(path: &Path) -> String {
    match path.file_name() {
        Some(name) if name.to_str().is_none() => format!(
            "; the name is not valid UTF-8 ({}) and is sent as \"{}\"",
            escaped(name),
            escaped(&*name.to_string_lossy())
        ),
        _ => String::new(),
    }
}
