//! What the intake does with a stable file once the other completeness signals have had their
//! say (`ready::release`): the look itself, off the async threads and with a time limit; how
//! long a held-back file waits before it is looked at again; and files that will never be
//! uploaded (not the container their name says, or an export that never finished), which go
//! straight to failed/ with a sidecar saying why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Shared, dispatch};
use crate::escape::escaped;
use crate::ready::{self, HeldBy, Inspection, Release, ReleaseRules};
use crate::store::{Enqueued, JobError, NewJob};

/// How long one look at a candidate may take before it counts as failed for now (a network
/// share that hangs); the look goes on in the background and the intake carries on.
const FILE_LOOK_PATIENCE: Duration = Duration::from_secs(10);

/// A held-back file is looked at again after its folder's `stable_for`, but not more often
/// than this (a `stable_for` of a few milliseconds in a test must not mean a busy loop).
const LOOK_AGAIN_AT_LEAST: Duration = Duration::from_millis(500);

/// What one look at a candidate found.
pub(super) struct Look {
    pub(super) inspection: std::io::Result<Inspection>,
    /// The other signals' verdict, when it is a regular file and the caller asked: `Err` when
    /// it cannot be opened or read.
    pub(super) release: Option<std::io::Result<Release>>,
    /// The file system did not answer within [`FILE_LOOK_PATIENCE`] (a share that hangs).
    pub(super) timed_out: bool,
}

/// Inspects `path` and, when it is a regular file for which `check_release` says so, applies
/// the other completeness signals to it (which opens and reads it): off the async threads,
/// because both wait on the file system, and with a limit, so a hanging share does not stall
/// the intake loop (and with it the watchdog). `fresh` looks through an open handle with
/// attributes no cache served ([`ready::inspect_fresh`]), and the signals read through that
/// same handle.
pub(super) async fn look_at(
    path: PathBuf,
    fresh: bool,
    rules: ReleaseRules,
    seen_since: SystemTime,
    check_release: impl FnOnce(&ready::FileSnapshot) -> bool + Send + 'static,
) -> Look {
    let looking = tokio::task::spawn_blocking(move || {
        let (inspection, opened) = if fresh {
            match ready::inspect_fresh(&path) {
                Ok((inspection, opened)) => (Ok(inspection), opened),
                Err(err) => (Err(err), None),
            }
        } else {
            (ready::inspect(&path), None)
        };
        let release = match &inspection {
            Ok(Inspection::Regular(snapshot)) if check_release(snapshot) => {
                Some(ready::release::look(
                    &path,
                    opened,
                    *snapshot,
                    rules,
                    SystemTime::now(),
                    seen_since,
                ))
            }
            _ => None,
        };
        Look {
            inspection,
            release,
            timed_out: false,
        }
    });
    let failed = |why: String, timed_out| Look {
        inspection: Err(std::io::Error::other(why)),
        release: None,
        timed_out,
    };
    match tokio::time::timeout(FILE_LOOK_PATIENCE, looking).await {
        Ok(Ok(look)) => look,
        Ok(Err(err)) => failed(format!("the check failed: {err}"), false),
        Err(_) => failed(
            format!(
                "it did not answer within {} s (a network share that hangs?)",
                FILE_LOOK_PATIENCE.as_secs()
            ),
            true,
        ),
    }
}

/// When a held-back file is looked at again: after `stable_for`, and no later than the moment
/// an unfinished container gives up.
pub(super) fn look_again_in(
    stable_for: Duration,
    gives_up_at: Option<SystemTime>,
    now: SystemTime,
) -> Duration {
    let mut wait = stable_for.max(LOOK_AGAIN_AT_LEAST);
    if let Some(at) = gives_up_at {
        let until = at.duration_since(now).unwrap_or_default();
        wait = wait.min(until.max(LOOK_AGAIN_AT_LEAST));
    }
    wait
}

/// What `status` and the log say a held-back file waits for.
pub(super) fn held_text(by: HeldBy, why: &str) -> String {
    match by {
        HeldBy::Writer => format!("still {why}"),
        HeldBy::Container => format!("container not whole yet: {why}"),
        HeldBy::Companion => why.to_owned(),
    }
}

/// A file that goes to failed/ without an upload.
pub(super) struct Refusal {
    pub(super) job: NewJob,
    pub(super) error: JobError,
    /// An export that never finished (an `incomplete` event), not a file that lies about what
    /// it is.
    pub(super) never_finished: bool,
}

/// Puts each refused file into the store as a failed job and starts its move to failed/.
/// Returns the ones the store could not take, to try again with the next batch.
pub(super) fn queue_refused(shared: &Arc<Shared>, refused: Vec<Refusal>) -> Vec<Refusal> {
    let mut again = Vec::new();
    for refusal in refused {
        match shared
            .store
            .enqueue_refused(&refusal.job, &refusal.error, refusal.never_finished)
        {
            Ok(Enqueued::New(id)) => {
                // An error: a file in failed/ waits for a person, like an upload that failed.
                tracing::error!(
                    file = %escaped(&refusal.job.rel_path),
                    "not uploaded: {}; moving it to failed/",
                    refusal.error.message
                );
                dispatch::start_finish(shared, id);
            }
            // A job paused because its file changed during the upload, waiting for it to
            // settle again (a re-export over the same name that then crashed): it ends here,
            // or it would wait for ever. Any other job still decides itself.
            Ok(Enqueued::AlreadyActive(id)) => {
                let paused = shared
                    .store
                    .job(id)
                    .is_ok_and(|job| job.state == crate::store::JobState::Paused);
                if !paused {
                    continue;
                }
                match shared.store.decide(
                    id,
                    crate::store::Outcome::Failed,
                    None,
                    Some(&refusal.error),
                ) {
                    Ok(()) => {
                        tracing::error!(
                            file = %escaped(&refusal.job.rel_path),
                            "not uploaded: {}; its upload stopped when the file changed, and it never became whole again; moving it to failed/",
                            refusal.error.message
                        );
                        dispatch::start_finish(shared, id);
                    }
                    Err(err) => {
                        let what = format!("cannot record that job {id} is refused");
                        if shared.store_failed(&what, &err) {
                            again.push(refusal);
                        }
                    }
                }
            }
            Err(err) => {
                let what = format!(
                    "cannot record that {} is refused",
                    escaped(&refusal.job.path)
                );
                if shared.store_failed(&what, &err) {
                    again.push(refusal);
                }
            }
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_is_looked_at_after_stable_for_but_not_after_it_gives_up() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ten = Duration::from_secs(10);
        assert_eq!(look_again_in(ten, None, now), ten);
        assert_eq!(
            look_again_in(ten, Some(now + Duration::from_secs(3)), now),
            Duration::from_secs(3)
        );
        // Already past: soon, not at once in a loop.
        assert_eq!(
            look_again_in(ten, Some(now - ten), now),
            LOOK_AGAIN_AT_LEAST
        );
        assert_eq!(
            look_again_in(Duration::from_millis(1), None, now),
            LOOK_AGAIN_AT_LEAST
        );
    }
}
