//! Finishing a job's file, also after a crash: the move to done/ or failed/ with its sidecar,
//! recognising a move that a kill interrupted (so a file is never moved twice nor reported
//! gone while it is in done/), and clearing our own temp files left by a kill.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::sidecar::written_for;
use super::{
    MAX_SUFFIX, Sidecar, TEMP_SUFFIX, move_without_overwrite, numbered, sidecar_path, write_sidecar,
};
use crate::chain;
use crate::escape::escaped;
use crate::metadata::finish::CompanionFinish;
use crate::store::{Job, JobStore, Outcome, Placed};

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
/// A copy across file systems stops when `stop` is cancelled (an error; the file stays).
#[cfg(test)]
pub fn finish_job_file(
    store: &JobStore,
    job: &Job,
    base: &Path,
    stop: &CancellationToken,
) -> Result<Finished, String> {
    finish_job_file_with(store, job, base, &CompanionFinish::default(), stop)
}

/// [`finish_job_file`] for a folder with companions or `result_xml` (`crate::metadata`): the
/// companion moves with the video and the sidecar records it.
pub fn finish_job_file_with(
    store: &JobStore,
    job: &Job,
    base: &Path,
    companion: &CompanionFinish,
    stop: &CancellationToken,
) -> Result<Finished, String> {
    let dest = if let Some(recorded) = recorded_destination(job) {
        // The move was recorded: a file now at the job's old path is a new one, not this job's.
        recorded
    } else if crate::nofollow::is_regular_file(&job.path) {
        // A regular file reached without a link (see `nofollow`); anything else at the path
        // now (a link, a pipe, a folder on the way swapped for a link) is not the uploaded file.
        move_without_overwrite(&job.path, base, &job.rel_path, stop).map_err(|e| chain(&e))?
    } else if let Some(moved) = find_moved(base, job) {
        // A kill after the move, before the store recorded its end.
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
    // Recorded before the sidecar exists, so that from here on a kill cannot lose track of it;
    // until it is recorded the file counts as not finished and the whole step is tried again.
    if recorded_destination(job).as_ref() != Some(&dest) {
        store.record_move(job.id, &dest).map_err(|e| chain(&e))?;
    }
    let fresh = store.job(job.id).map_err(|e| chain(&e))?;
    let mut sidecar = Sidecar::from_job(&fresh, file_name);
    sidecar
        .other
        .extend(crate::metadata::finish::finish_companion(
            store, &fresh, base, &dest, companion, stop,
        ));
    write_sidecar(&dest, &sidecar).map_err(|e| chain(&e))?;
    store
        .mark_moved_as(job.id, &dest, placed(&dest).as_ref())
        .map_err(|e| chain(&e))?;
    Ok(Finished::Moved(dest))
}

/// The file at `dest` as it was placed, for `keep_done_for`; `None` (never deleted by
/// retention) when it cannot be looked at without following a link.
fn placed(dest: &Path) -> Option<Placed> {
    match crate::nofollow::lstat(dest) {
        Ok(entry) if entry.skip.is_none() => Some(Placed {
            identity: entry.identity,
            size: entry.size,
            mtime_ns: i64::try_from(entry.mtime_ns).ok()?,
            ctime_ns: i64::try_from(entry.ctime_ns).ok(),
        }),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(
                "cannot record how {} was placed (it will never be deleted by keep_done_for): {}",
                escaped(dest),
                chain(&err)
            );
            None
        }
    }
}

/// The destination recorded for a job still finishing, if its file is there (the same size).
fn recorded_destination(job: &Job) -> Option<PathBuf> {
    let dest = job.destination.as_ref()?;
    is_file_of_size(dest, job.size).then(|| dest.clone())
}

fn is_file_of_size(path: &Path, size: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// After a kill mid-finish with no destination recorded yet: the job's file among the names a
/// move would have given it in `base` (`rel_path`, `stem (1).ext`, … shortened like the move
/// shortens them). One whose sidecar was written for this job (the kill came after it) is
/// certain; otherwise one of the job's size with no sidecar at all (the kill came before it).
/// A file of that size with someone else's sidecar is an earlier delivery, never this job's.
fn find_moved(base: &Path, job: &Job) -> Option<PathBuf> {
    let wanted = base.join(&job.rel_path);
    let mut without_sidecar = None;
    for n in 0..=MAX_SUFFIX {
        let candidate = numbered(&wanted, n);
        let sidecar = sidecar_path(&candidate);
        let has_sidecar = std::fs::symlink_metadata(&sidecar).is_ok();
        if is_file_of_size(&candidate, job.size) {
            if !has_sidecar {
                without_sidecar.get_or_insert(candidate);
            } else if written_for(&sidecar, job) {
                return Some(candidate);
            }
        } else if !has_sidecar && std::fs::symlink_metadata(&candidate).is_err() {
            // The first free name ends the walk: a move never went past it.
            break;
        }
    }
    without_sidecar
}

/// Removes our own temporary files (`.…hotfolder-tmp`: a copy across file systems or a
/// sidecar being written) that a kill left in done/ or failed/. Only ours: nothing else is
/// touched; with `only_of`, only those of the agent with that tag (a shared folder). Stops
/// early when `stop` is cancelled (a large done/ on a share takes a while).
pub fn remove_stale_temps(dir: &Path, only_of: Option<&str>, stop: &CancellationToken) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if stop.is_cancelled() {
            return;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            remove_stale_temps(&path, only_of, stop);
        } else if kind.is_file()
            && name.starts_with('.')
            && name.ends_with(TEMP_SUFFIX)
            && only_of.is_none_or(|tag| name.ends_with(&format!(".{tag}{TEMP_SUFFIX}")))
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finish::tests::{names_in, write};
    use crate::finish::{NAME_MAX, free_destination};
    use crate::store::{JobState, NewJob};
    use std::fs;

    /// A store in `dir/state` with one uploaded job for `dir/inbox/<name>` (`bytes` long),
    /// decided and waiting to be moved.
    fn decided(dir: &Path, name: &str, bytes: &[u8]) -> (JobStore, Job) {
        let store = JobStore::open(&dir.join("state")).unwrap();
        let path = dir.join("inbox").join(name);
        write(&path, bytes);
        let id = store
            .enqueue(NewJob {
                folder: dir.join("inbox"),
                path,
                rel_path: PathBuf::from(name),
                size: bytes.len() as u64,
                mtime_ns: 0,
                rule: "test".into(),
            })
            .unwrap()
            .id();
        store.start_attempt(id).unwrap();
        store.record_video(id, &format!("v-{name}")).unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("sha-of-bytes"), None)
            .unwrap();
        let job = store.job(id).unwrap();
        (store, job)
    }

    fn moved_to(finished: Finished) -> PathBuf {
        match finished {
            Finished::Moved(dest) => dest,
            Finished::RemovedBeforeMove(why) => panic!("expected a move, got: {why}"),
        }
    }

    /// What a kill right after the sidecar was written leaves: the file and its sidecar in
    /// done/, the destination recorded, the job still finishing.
    #[test]
    fn a_kill_after_the_sidecar_was_written_finishes_the_job_where_the_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = decided(dir.path(), "clip.mov", b"video bytes");
        let base = dir.path().join("done");
        let dest =
            move_without_overwrite(&job.path, &base, &job.rel_path, &CancellationToken::new())
                .unwrap();
        store.record_move(job.id, &dest).unwrap();
        let fresh = store.job(job.id).unwrap();
        write_sidecar(&dest, &Sidecar::from_job(&fresh, "clip.mov")).unwrap();
        // The editor has meanwhile dropped a new export under the same name.
        write(&job.path, b"a new export");

        let again = store.job(job.id).unwrap();
        assert_eq!(again.state, JobState::Finishing);
        let finished =
            moved_to(finish_job_file(&store, &again, &base, &CancellationToken::new()).unwrap());
        assert_eq!(finished, dest);
        let done = store.job(job.id).unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.destination.as_deref(), Some(dest.as_path()));
        assert_eq!(names_in(&base), ["clip.mov", "clip.mov.upload.json"]);
        // The new export is not this job's: it stays for a job of its own.
        assert_eq!(fs::read(&job.path).unwrap(), b"a new export");
    }

    /// The same kill with nothing recorded but the sidecar (a hotfolder that did not record the
    /// destination yet, or a sidecar put back by hand): the sidecar says whose file it is.
    #[test]
    fn a_moved_file_whose_sidecar_names_the_job_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = decided(dir.path(), "clip.mov", b"video bytes");
        let base = dir.path().join("done");
        // An earlier delivery of the same size takes the plain name, with its own sidecar.
        write(&base.join("clip.mov"), b"older bytes");
        let (other_store, other) = decided(&dir.path().join("other"), "clip.mov", b"older bytes");
        write_sidecar(
            &base.join("clip.mov"),
            &Sidecar::from_job(&other_store.job(other.id).unwrap(), "clip.mov"),
        )
        .unwrap();
        let dest =
            move_without_overwrite(&job.path, &base, &job.rel_path, &CancellationToken::new())
                .unwrap();
        assert_eq!(dest, base.join("clip (1).mov"));
        write_sidecar(&dest, &Sidecar::from_job(&job, "clip (1).mov")).unwrap();

        assert_eq!(find_moved(&base, &job), Some(dest.clone()));
        assert_eq!(
            moved_to(finish_job_file(&store, &job, &base, &CancellationToken::new()).unwrap()),
            dest
        );
        assert_eq!(store.job(job.id).unwrap().state, JobState::Done);
        assert_eq!(
            names_in(&base),
            [
                "clip (1).mov",
                "clip (1).mov.upload.json",
                "clip.mov",
                "clip.mov.upload.json"
            ]
        );
        // The other job's file was never taken for this one.
        assert_eq!(find_moved(&base, &other), Some(base.join("clip.mov")));
    }

    #[test]
    fn a_file_of_the_right_size_with_someone_elses_sidecar_is_not_the_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = decided(dir.path(), "clip.mov", b"video bytes");
        let base = dir.path().join("done");
        fs::remove_file(&job.path).unwrap();
        write(&base.join("clip.mov"), b"video bytes");
        write(
            &sidecar_path(&base.join("clip.mov")),
            br#"{"size": 11, "status": "uploaded", "video_id": "someone-else", "sha256": "sha-of-bytes"}"#,
        );
        assert_eq!(find_moved(&base, &job), None);
        // With the folder there, the job ends as gone, and nothing in done/ is touched.
        let finished = finish_job_file(&store, &job, &base, &CancellationToken::new()).unwrap();
        assert!(matches!(finished, Finished::RemovedBeforeMove(_)));
        assert_eq!(names_in(&base), ["clip.mov", "clip.mov.upload.json"]);
    }

    /// A FIFO or a symlink where a sidecar would be (someone's mischief in done/) is no sidecar
    /// of this job, and reading it neither blocks nor follows it.
    #[test]
    fn a_fifo_or_symlink_as_sidecar_neither_hangs_nor_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = decided(dir.path(), "clip.mov", b"video bytes");
        let base = dir.path().join("done");
        fs::create_dir_all(&base).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(sidecar_path(&base.join("clip.mov")))
            .status();
        if !made.is_ok_and(|s| s.success()) {
            crate::test_skipped(format_args!("mkfifo is not available"));
            return;
        }
        write(&base.join("clip.mov"), b"video bytes");
        // The real sidecar's content, behind a symlink: not followed.
        let elsewhere = dir.path().join("elsewhere.json");
        write_sidecar(&elsewhere, &Sidecar::from_job(&job, "clip (1).mov")).unwrap();
        write(&base.join("clip (1).mov"), b"video bytes");
        std::os::unix::fs::symlink(
            sidecar_path(&elsewhere),
            sidecar_path(&base.join("clip (1).mov")),
        )
        .unwrap();
        fs::remove_file(&job.path).unwrap();
        assert_eq!(find_moved(&base, &job), None);
        let finished = finish_job_file(&store, &job, &base, &CancellationToken::new()).unwrap();
        assert!(matches!(finished, Finished::RemovedBeforeMove(_)));
    }

    /// A 252-byte name already delivered: the second file of that name gets a shortened
    /// numbered name, and a kill right after that move is still recognised.
    #[test]
    fn long_names_that_are_taken_are_numbered_within_the_limit_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.mov", "n".repeat(248));
        assert_eq!(name.len(), 252);
        let (store, job) = decided(dir.path(), &name, b"second export");
        let base = dir.path().join("done");
        write(&base.join(&name), b"first export");
        write(&sidecar_path(&base.join(&name)), b"{}");

        let dest =
            move_without_overwrite(&job.path, &base, &job.rel_path, &CancellationToken::new())
                .unwrap();
        let dest_name = dest.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(dest_name.len() <= NAME_MAX, "{dest_name}");
        assert!(dest_name.ends_with(" (1).mov"), "{dest_name}");
        assert!(dest_name.starts_with("nnnn"), "{dest_name}");
        assert_eq!(fs::read(&dest).unwrap(), b"second export");
        // A third one gets (2), also within the limit, and distinct.
        let third = free_destination(&base, Path::new(&name)).unwrap();
        let third_name = third.file_name().unwrap().to_str().unwrap();
        assert!(
            third_name.len() <= NAME_MAX && third_name.ends_with(" (2).mov"),
            "{third_name}"
        );

        assert_eq!(find_moved(&base, &job), Some(dest.clone()));
        assert_eq!(
            moved_to(finish_job_file(&store, &job, &base, &CancellationToken::new()).unwrap()),
            dest
        );
        assert!(sidecar_path(&dest).exists());
    }

    /// A kill after the companion was moved, before the sidecar was written: the companion is
    /// found in done/ (or failed/) and recorded where it is, with a companion recorded in the
    /// store or without one (a job that failed before its upload).
    #[test]
    fn metadata_a_companion_moved_by_an_interrupted_finish_is_recorded_where_it_is() {
        use crate::metadata::finish::CompanionFinish;
        use crate::metadata::{
            Companion, CompanionFormat, CompanionMode, CompanionRule, DEFAULT_METADATA_WAIT,
        };
        let finish = CompanionFinish {
            rule: CompanionRule {
                mode: CompanionMode::Required,
                wait: DEFAULT_METADATA_WAIT,
            },
            ..CompanionFinish::default()
        };
        for stored in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (store, job) = decided(dir.path(), "z.mp4", b"video bytes");
            let inbox = dir.path().join("inbox");
            let json = inbox.join("z.mp4.json");
            write(&json, br#"{"title": "Z"}"#);
            if stored {
                let companion = Companion {
                    path: json.clone(),
                    format: CompanionFormat::Json,
                    reference: None,
                    metadata: Default::default(),
                };
                store.record_companion(job.id, &companion).unwrap();
            }
            let base = dir.path().join("done");
            let stop = CancellationToken::new();
            // The killed run: the video and its companion moved, nothing recorded after.
            let dest = move_without_overwrite(&job.path, &base, &job.rel_path, &stop).unwrap();
            move_without_overwrite(&json, &base, Path::new("z.mp4.json"), &stop).unwrap();

            let again = store.job(job.id).unwrap();
            let finished =
                moved_to(finish_job_file_with(&store, &again, &base, &finish, &stop).unwrap());
            assert_eq!(finished, dest);
            let sidecar: serde_json::Value =
                serde_json::from_slice(&fs::read(sidecar_path(&dest)).unwrap()).unwrap();
            assert_eq!(
                sidecar["companion"]["moved_to"],
                base.join("z.mp4.json").to_string_lossy().as_ref(),
                "stored {stored}: {sidecar}"
            );
            assert!(
                sidecar["companion"].get("move_error").is_none(),
                "{sidecar}"
            );
        }
    }

    /// The same for a JSON companion that was not used (a job XML was): found where the killed
    /// finish put it and recorded as `unused_companion`.
    #[test]
    fn metadata_an_unused_json_moved_by_an_interrupted_finish_is_recorded_where_it_is() {
        use crate::metadata::finish::CompanionFinish;
        use crate::metadata::{
            Companion, CompanionFormat, CompanionMode, CompanionRule, DEFAULT_METADATA_WAIT,
        };
        let finish = CompanionFinish {
            rule: CompanionRule {
                mode: CompanionMode::Required,
                wait: DEFAULT_METADATA_WAIT,
            },
            ..CompanionFinish::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = decided(dir.path(), "k.mp4", b"video bytes");
        let inbox = dir.path().join("inbox");
        let xml = inbox.join("k.xml");
        let json = inbox.join("k.mp4.json");
        write(&xml, b"<job/>");
        write(&json, br#"{"title": "K"}"#);
        let companion = Companion {
            path: xml.clone(),
            format: CompanionFormat::JobXml,
            reference: None,
            metadata: Default::default(),
        };
        store.record_companion(job.id, &companion).unwrap();
        let base = dir.path().join("done");
        let stop = CancellationToken::new();
        let dest = move_without_overwrite(&job.path, &base, &job.rel_path, &stop).unwrap();
        move_without_overwrite(&xml, &base, Path::new("k.xml"), &stop).unwrap();
        move_without_overwrite(&json, &base, Path::new("k.mp4.json"), &stop).unwrap();

        let again = store.job(job.id).unwrap();
        moved_to(finish_job_file_with(&store, &again, &base, &finish, &stop).unwrap());
        let sidecar: serde_json::Value =
            serde_json::from_slice(&fs::read(sidecar_path(&dest)).unwrap()).unwrap();
        assert_eq!(
            sidecar["companion"]["moved_to"],
            base.join("k.xml").to_string_lossy().as_ref(),
            "{sidecar}"
        );
        assert_eq!(
            sidecar["unused_companion"]["moved_to"],
            base.join("k.mp4.json").to_string_lossy().as_ref(),
            "{sidecar}"
        );
    }
}
