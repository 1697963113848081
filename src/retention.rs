//! done/ retention (`keep_done_for`): which uploaded files in done/ may be deleted, and when.
//!
//! Only a file hotfolder put there is ever deleted, and only while it is still that file: the
//! store records when the move happened and the file's device, inode, size, mtime and ctime as
//! it was placed (`finish`). The age counts from the move, not from the mtime, which a rename
//! keeps from the export. The ctime catches what the others miss: content rewritten in place
//! with its mtime set back (`touch -r`). Sidecars are never deleted, nor anything in failed/,
//! nor a file reached through a link. And the platform must still have the video: a video it
//! answers 404 for (while it knows the VideoManager) means the file in done/ may be the only
//! copy left, so it stays (and the log says why).
//!
//! A file not in done/ when retention looks is not given up on: it may be on its way back (a
//! user moved it and back, done/ on a share that is remounting). It is looked for each round,
//! which costs one `lstat`; only a file that comes back unchanged is ever deleted, and one
//! that comes back changed (a rename alone moves the ctime on) is kept for good.
//!
//! [`judge`] decides from what the store recorded, what is at the path now and the time it is
//! given (tests pass their own clock); the agent's task (`agent::retention`) asks the platform
//! and deletes.

use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

use crate::escape::escaped;
use crate::nofollow::{Entry, NoFollowError};
use crate::store::{Job, Placed};

/// Retention runs at least this often when any folder has `keep_done_for`.
pub const CHECK_AT_MOST_EVERY: Duration = Duration::from_secs(3600);

/// The shortest interval between two checks, so a tiny `keep_done_for` cannot spin.
const CHECK_AT_LEAST_EVERY: Duration = Duration::from_millis(100);

/// How often retention looks: min(1 h, keep_done_for / 4) over the folders that set it;
/// `None` when none does.
pub fn check_every(keep_for: impl IntoIterator<Item = Duration>) -> Option<Duration> {
    keep_for
        .into_iter()
        .map(|keep| (keep / 4).clamp(CHECK_AT_LEAST_EVERY, CHECK_AT_MOST_EVERY))
        .min()
}

/// What is at a done job's destination now, as `nofollow::lstat` found it.
pub type Found = Result<Entry, NoFollowError>;

/// What to do about one uploaded file in done/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not old enough yet: due at this time.
    NotYet { due: OffsetDateTime },
    /// Old enough and still the file placed there: delete it if the platform still has the
    /// video.
    AskPlatform { video_id: String },
    /// Never to be deleted (recorded, so it is not looked at again): the reason.
    Keep(String),
    /// Not in done/ now: looked for again next round.
    Absent,
    /// Not now (it cannot be looked at, or only through a link): tried again next time.
    Later(String),
}

/// Decides about the done job `job` of a folder whose done/ is `done_dir` and whose
/// `keep_done_for` is `keep_for`, with `found` at its destination at `now`.
pub fn judge(
    job: &Job,
    done_dir: &Path,
    failed_dir: &Path,
    keep_for: Duration,
    found: &Found,
    now: OffsetDateTime,
) -> Verdict {
    let (Some(dest), Some(moved_at)) = (&job.destination, job.moved_at) else {
        return Verdict::Keep("the store has no record of its move into done/".into());
    };
    // Also when done/ is configured inside failed/ or the other way round: failed/ is never
    // touched.
    if !dest.starts_with(done_dir) || dest.starts_with(failed_dir) {
        return Verdict::Keep(format!(
            "it is not in the folder's done/ ({}) now that the config changed",
            escaped(done_dir)
        ));
    }
    let Some(placed) = job.placed else {
        return Verdict::Keep(
            "the store has no record of the file as it was placed (inode, size, mtime)".into(),
        );
    };
    let Some(video_id) = job.video_id.clone() else {
        return Verdict::Keep("the store has no video id for it".into());
    };
    let due = time::Duration::try_from(keep_for)
        .ok()
        .and_then(|keep| moved_at.checked_add(keep));
    let Some(due) = due else {
        return Verdict::Keep("keep_done_for is too long to count".into());
    };
    if now < due {
        return Verdict::NotYet { due };
    }
    let entry = match found {
        Ok(entry) => entry,
        Err(NoFollowError::Missing { .. }) => return Verdict::Absent,
        Err(err @ NoFollowError::Link { .. }) => return Verdict::Later(err.to_string()),
        Err(err) => return Verdict::Later(crate::chain(err)),
    };
    if let Some(what) = entry.skip {
        return Verdict::Keep(format!("another file took its name: it is now {what}"));
    }
    if entry.identity != placed.identity {
        return Verdict::Keep(
            "another file took its name (a different inode from the one hotfolder placed)".into(),
        );
    }
    if entry.size != placed.size || entry.mtime_ns != i128::from(placed.mtime_ns) {
        return Verdict::Keep("it changed after hotfolder placed it (size or mtime)".into());
    }
    if !same_ctime(&placed, entry) {
        return Verdict::Keep(
            "it was changed after hotfolder placed it: its ctime moved on (written to with the \
             mtime set back, renamed away and back, linked, or its permissions changed)"
                .into(),
        );
    }
    Verdict::AskPlatform { video_id }
}

/// Whether `entry` is the file placed as `placed`: the same inode, size, mtime and (where it
/// was recorded) ctime. What [`judge`] checks, and the agent again just before it deletes.
pub fn is_placed_file(placed: &Placed, entry: &Entry) -> bool {
    entry.skip.is_none()
        && entry.identity == placed.identity
        && entry.size == placed.size
        && entry.mtime_ns == i128::from(placed.mtime_ns)
        && same_ctime(placed, entry)
}

/// A file placed by a hotfolder that did not record the ctime is judged without it.
fn same_ctime(placed: &Placed, entry: &Entry) -> bool {
    placed
        .ctime_ns
        .is_none_or(|ctime| i128::from(ctime) == entry.ctime_ns)
}

/// An age in the largest unit that fits twice: "31 days", "5 hours", "2 seconds".
pub fn age_in_words(age: Duration) -> String {
    let secs = age.as_secs();
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s if s >= 2 * 60 => (s / 60, "minutes"),
        1 => (1, "second"),
        s => (s, "seconds"),
    };
    format!("{n} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobStore, NewJob, Outcome, Placed};
    use std::path::PathBuf;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A done job of `/in/done/clip.mov`, moved at the time the store gave it, placed as
    /// `placed`.
    fn done_job(placed: Option<Placed>) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = store
            .enqueue(NewJob {
                folder: "/in".into(),
                path: "/in/clip.mov".into(),
                rel_path: "clip.mov".into(),
                size: 10,
                mtime_ns: 5,
                rule: "test".into(),
            })
            .unwrap()
            .id();
        store.start_attempt(id).unwrap();
        store.record_video(id, "v1").unwrap();
        store
            .decide(id, Outcome::Uploaded, Some("h"), None)
            .unwrap();
        store
            .mark_moved_as(id, Path::new("/in/done/clip.mov"), placed.as_ref())
            .unwrap();
        let job = store.job(id).unwrap();
        drop(store);
        (dir, job)
    }

    const CTIME: i128 = 7;

    fn placed() -> Placed {
        Placed {
            identity: (1, 42),
            size: 10,
            mtime_ns: 5,
            ctime_ns: Some(CTIME as i64),
        }
    }

    fn entry(identity: (u64, u64), size: u64, mtime_ns: i128) -> Found {
        entry_with_ctime(identity, size, mtime_ns, CTIME)
    }

    fn entry_with_ctime(identity: (u64, u64), size: u64, mtime_ns: i128, ctime_ns: i128) -> Found {
        Ok(Entry {
            skip: None,
            size,
            mtime_ns,
            ctime_ns,
            identity,
        })
    }

    fn judge_at(job: &Job, found: &Found, after: Duration) -> Verdict {
        let now = job.moved_at.unwrap() + time::Duration::try_from(after).unwrap();
        judge(
            job,
            Path::new("/in/done"),
            Path::new("/in/failed"),
            30 * DAY,
            found,
            now,
        )
    }

    #[test]
    fn the_age_counts_from_the_move_not_the_mtime() {
        let (_dir, job) = done_job(Some(placed()));
        // The mtime (5 ns after 1970) is ancient; the move was just now.
        let found = entry((1, 42), 10, 5);
        let due = job.moved_at.unwrap() + time::Duration::days(30);
        assert_eq!(judge_at(&job, &found, 29 * DAY), Verdict::NotYet { due });
        assert_eq!(
            judge_at(&job, &found, 30 * DAY - Duration::from_secs(1)),
            Verdict::NotYet { due }
        );
        assert_eq!(
            judge_at(&job, &found, 30 * DAY),
            Verdict::AskPlatform {
                video_id: "v1".into()
            }
        );
    }

    #[test]
    fn another_file_under_the_name_stays() {
        let (_dir, job) = done_job(Some(placed()));
        let other_inode = entry((1, 43), 10, 5);
        assert!(matches!(
            judge_at(&job, &other_inode, 31 * DAY),
            Verdict::Keep(why) if why.contains("different inode")
        ));
        let grown = entry((1, 42), 11, 5);
        assert!(matches!(judge_at(&job, &grown, 31 * DAY), Verdict::Keep(_)));
        let touched = entry((1, 42), 10, 6);
        assert!(matches!(
            judge_at(&job, &touched, 31 * DAY),
            Verdict::Keep(_)
        ));
        let link = Ok(Entry {
            skip: Some(crate::ready::SkipReason::Symlink),
            ..entry((1, 42), 10, 5).unwrap()
        });
        assert!(matches!(judge_at(&job, &link, 31 * DAY), Verdict::Keep(_)));
    }

    /// Hostile test of issue 13, M3: content rewritten in place and its mtime set back
    /// (`touch -r`) keeps inode, size and mtime; the ctime moved on, so the file stays.
    #[test]
    fn a_file_rewritten_in_place_with_its_mtime_set_back_is_kept() {
        let (_dir, job) = done_job(Some(placed()));
        let rewritten = entry_with_ctime((1, 42), 10, 5, CTIME + 1_000_000);
        assert!(matches!(
            judge_at(&job, &rewritten, 31 * DAY),
            Verdict::Keep(why) if why.contains("ctime")
        ));
        // Placed by a hotfolder that recorded no ctime: judged on the rest, as it was promised.
        let (_dir, old) = done_job(Some(Placed {
            ctime_ns: None,
            ..placed()
        }));
        assert!(matches!(
            judge_at(&old, &rewritten, 31 * DAY),
            Verdict::AskPlatform { .. }
        ));
    }

    /// Hostile test of issue 13, M1: a file briefly not in done/ (moved away and back, a
    /// rename in progress, a share remounting) was recorded as kept and never looked at again.
    #[test]
    fn a_file_not_in_done_now_is_looked_for_again_not_given_up() {
        let (_dir, job) = done_job(Some(placed()));
        let missing = Err(NoFollowError::Missing {
            path: PathBuf::from("/in/done/clip.mov"),
        });
        assert_eq!(judge_at(&job, &missing, 31 * DAY), Verdict::Absent);
        // Back unchanged (done/ was not mounted for a while): deleted as any other.
        assert!(matches!(
            judge_at(&job, &entry((1, 42), 10, 5), 32 * DAY),
            Verdict::AskPlatform { .. }
        ));
    }

    #[test]
    fn a_link_on_the_way_waits() {
        let (_dir, job) = done_job(Some(placed()));
        let through_link = Err(NoFollowError::Link {
            path: PathBuf::from("/in/done/clip.mov"),
            link: PathBuf::from("/in/done"),
        });
        assert!(matches!(
            judge_at(&job, &through_link, 31 * DAY),
            Verdict::Later(_)
        ));
    }

    #[test]
    fn without_a_record_of_the_placed_file_nothing_is_deleted() {
        let (_dir, job) = done_job(None);
        assert!(matches!(
            judge_at(&job, &entry((1, 42), 10, 5), 365 * DAY),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn failed_and_other_folders_are_never_touched() {
        let (_dir, job) = done_job(Some(placed()));
        let now = job.moved_at.unwrap() + time::Duration::days(31);
        let found = entry((1, 42), 10, 5);
        // done/ moved elsewhere in the config.
        let moved = judge(
            &job,
            Path::new("/elsewhere"),
            Path::new("/in/failed"),
            DAY,
            &found,
            now,
        );
        assert!(matches!(moved, Verdict::Keep(_)));
        // done/ configured inside failed/.
        let nested = judge(
            &job,
            Path::new("/in/done"),
            Path::new("/in"),
            DAY,
            &found,
            now,
        );
        assert!(matches!(nested, Verdict::Keep(_)));
    }

    #[test]
    fn checks_run_every_quarter_of_the_shortest_keep_at_most_hourly() {
        assert_eq!(check_every([]), None);
        assert_eq!(
            check_every([Duration::from_secs(8), 30 * DAY]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(check_every([30 * DAY]), Some(CHECK_AT_MOST_EVERY));
        assert_eq!(
            check_every([Duration::from_millis(1)]),
            Some(CHECK_AT_LEAST_EVERY)
        );
    }

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(age_in_words(31 * DAY + Duration::from_secs(5)), "31 days");
        assert_eq!(age_in_words(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(age_in_words(Duration::from_secs(2)), "2 seconds");
        assert_eq!(age_in_words(Duration::from_secs(1)), "1 second");
    }
}
