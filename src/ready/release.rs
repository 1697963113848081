//! The last look before a stable file is queued: every completeness signal must agree.
//!
//! The stability tracker says a file's size and mtime held still for `stable_for`. That is one
//! signal, and a render or a copy that stalls for longer passes it with half a file. So once
//! a file is stable, [`look`] opens it (never through a link: see `nofollow`) and asks, on that
//! one handle:
//!
//! 1. **Is it still the file that was stable?** The size and mtime come from `fstat` on the
//!    open handle, not from the path: on a network share that caches attributes, opening
//!    revalidates them (close-to-open), so a file that grew meanwhile is seen to have changed.
//! 2. **Is anyone on this machine writing it?** (`writers`: a read lease, or a scan of
//!    `/proc`, with what each cannot see said in the rule.)
//! 3. **Is the container whole?** (`container`: MP4/MOV/MXF headers, with `check_container`.)
//!
//! The answer is a [`Release`]: queue it with the list of signals it passed (the log's and the
//! sidecar's "detected" rule: "size 1048576 B and mtime unchanged for 10s; not open for writing
//! on this machine; MP4 complete (moov after mdat)"), hold it back and look again later (with
//! what it waits for, for `status` and `scan`), or refuse it: a file whose name promises a
//! container its bytes are not, or a container still not whole `incomplete_after` after the
//! file last changed. "Last changed" is the inode's ctime, which a writer, a rename into the
//! folder and a copy tool setting an old mtime all move forward, and which survives a restart
//! of the agent (no clock of our own to lose).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::container::{self, ContainerKind, ContainerVerdict};
use super::writers::{self, WriterCheck};
use super::{FileSnapshot, fresh_snapshot, open_readable, reads};
use crate::metadata::{CompanionRule, CompanionWait, wait_for_companion};

/// What the folder's config asks of a file before it is queued, besides stability.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseRules {
    /// `check_container`: MP4/MOV/MXF must be structurally whole.
    pub check_container: bool,
    /// `incomplete_after`: how long a stable file may stay an unfinished container.
    pub incomplete_after: Duration,
    /// `metadata_file` and `metadata_wait`: whether it waits for a companion.
    pub companion: CompanionRule,
    /// `stable_for`: how long a companion must be unchanged to count as whole.
    pub stable_for: Duration,
}

impl ReleaseRules {
    /// The rules a configured folder asks for.
    pub fn of(folder: &crate::config::FolderSettings) -> ReleaseRules {
        ReleaseRules {
            check_container: folder.check_container,
            incomplete_after: folder.incomplete_after,
            companion: folder.companion,
            stable_for: folder.stable_for,
        }
    }
}

/// Which signal holds a stable file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// A process on this machine has it open for writing.
    Writer,
    /// Its container is not whole yet.
    Container,
    /// Its companion (`metadata_file`) has not come yet, or is still being written.
    Companion,
}

/// The verdict of [`look`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Every signal agrees: queue it. `signals` are the ones it passed beyond stability, in
    /// words for the rule ("not open for writing on this machine", "MP4 complete (moov after
    /// mdat)").
    Ready { signals: Vec<String> },
    /// The open handle shows another size or mtime than the tracker saw: it is being written.
    Changed(FileSnapshot),
    /// Stable, but not finished by another signal's account: look again later.
    Held {
        by: HeldBy,
        why: String,
        /// For a container that is not whole: when waiting ends and it fails.
        gives_up_at: Option<SystemTime>,
    },
    /// Never to be uploaded: it goes to failed/ with this reason.
    Refused {
        /// What was found ("no moov box: the export never finished").
        message: String,
        /// What it means for the user.
        meaning: String,
        /// An export whose writer stopped before finishing (its container stayed incomplete
        /// for `incomplete_after`), rather than a file that is not what its name says.
        never_finished: bool,
    },
}

/// Opens `path` (or takes the handle `opened` already has on it) and applies every signal to
/// the file that was stable as `stable`. Blocking (it opens and reads headers): call it off the
/// async threads. `Err` when the file cannot be opened or read, in words (see
/// [`open_readable`]).
///
/// `seen_since`: since when the caller has seen the file as it is now. An unfinished file's
/// `incomplete_after` never counts from before it: some file systems report the mtime as the
/// ctime (sshfs), so a copy that set an old mtime would otherwise fail at once.
pub fn look(
    path: &Path,
    opened: Option<File>,
    stable: FileSnapshot,
    rules: ReleaseRules,
    now: SystemTime,
    seen_since: SystemTime,
) -> io::Result<Release> {
    let (file, meta) = match opened {
        Some(file) => reads(file, path)?,
        None => open_readable(path)?,
    };
    // Asked of the file system, not of an attribute cache (see `inspect_fresh`).
    let seen = fresh_snapshot(&file)?;
    if seen != stable {
        return Ok(Release::Changed(seen));
    }
    let mut signals = Vec::new();
    match writers::check(&file, path) {
        WriterCheck::OpenForWriting { reason } => {
            return Ok(Release::Held {
                by: HeldBy::Writer,
                why: reason,
                gives_up_at: None,
            });
        }
        WriterCheck::NotOpen { rule } => signals.push(rule),
        WriterCheck::NotChecked { reason } => signals.push(reason),
    }
    let kind = path.file_name().and_then(ContainerKind::for_name);
    let verdict = if seen.size == 0 {
        // A writer on another machine creates the file first and writes later (a render, an
        // SMB copy): empty is not finished, whatever the name.
        Some(ContainerVerdict::Incomplete {
            missing: "the file is empty: nothing written yet".into(),
        })
    } else if let (true, Some(kind)) = (rules.check_container, kind) {
        Some(container_verdict(&file, seen.size, kind)?)
    } else {
        None
    };
    if let Some(verdict) = verdict {
        match verdict {
            ContainerVerdict::Complete { summary } | ContainerVerdict::Unprovable { summary } => {
                signals.push(summary)
            }
            ContainerVerdict::NotThisContainer { why } => {
                return Ok(Release::Refused {
                    meaning: format!(
                        "{why}; the file's name says it is one, so it was not uploaded (a wrong suffix, or a damaged file)"
                    ),
                    message: why,
                    never_finished: false,
                });
            }
            ContainerVerdict::Incomplete { missing } => {
                let changed = changed_at(&meta).max(seen_since);
                let gives_up_at = changed + rules.incomplete_after;
                if now >= gives_up_at {
                    return Ok(Release::Refused {
                        meaning: format!(
                            "the export is not whole ({missing}) and did not change for {}: its writer stopped before finishing; export it again",
                            humantime::format_duration(rules.incomplete_after)
                        ),
                        message: missing,
                        never_finished: true,
                    });
                }
                return Ok(Release::Held {
                    by: HeldBy::Container,
                    why: missing,
                    gives_up_at: Some(gives_up_at),
                });
            }
        }
    }
    // Last: the companion is the trigger, as on FTP (the XML comes after the video).
    let since = changed_at(&meta).max(seen_since);
    match wait_for_companion(
        path,
        rules.companion,
        rules.stable_for,
        rules.incomplete_after,
        since,
        now,
    ) {
        CompanionWait::Go(signal) => {
            if !signal.is_empty() {
                signals.push(signal);
            }
        }
        CompanionWait::Wait { why, gives_up_at } => {
            return Ok(Release::Held {
                by: HeldBy::Companion,
                why,
                gives_up_at,
            });
        }
        CompanionWait::Refuse { message, meaning } => {
            return Ok(Release::Refused {
                message,
                meaning,
                never_finished: false,
            });
        }
    }
    Ok(Release::Ready { signals })
}

/// The container check; a read error is the file's (it is reported like an unreadable file).
fn container_verdict(file: &File, len: u64, kind: ContainerKind) -> io::Result<ContainerVerdict> {
    container::check(file, len, kind).map(|check| check.verdict)
}

/// When the file last changed in any way: its ctime (status change), which writes, renames and
/// a copy tool's setting of an old mtime all move forward. Never before its mtime.
fn changed_at(meta: &std::fs::Metadata) -> SystemTime {
    let at = |secs: i64, nanos: i64| {
        let secs = u64::try_from(secs).unwrap_or(0);
        let nanos = u32::try_from(nanos).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
    };
    at(meta.ctime(), meta.ctime_nsec()).max(at(meta.mtime(), meta.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_video::SampleVideo;

    /// A whole export of `size` bytes for `path`'s suffix.
    fn write_export(path: &Path, size: u64, seed: u64) {
        let video = SampleVideo::for_path(path, size, seed).unwrap();
        std::fs::write(path, video.to_vec()).unwrap();
    }

    const RULES: ReleaseRules = ReleaseRules {
        check_container: true,
        incomplete_after: Duration::from_secs(3600),
        companion: CompanionRule {
            mode: crate::metadata::CompanionMode::Off,
            wait: crate::metadata::DEFAULT_METADATA_WAIT,
        },
        stable_for: Duration::from_secs(1),
    };

    fn snapshot_of(path: &Path) -> FileSnapshot {
        let meta = std::fs::symlink_metadata(path).unwrap();
        FileSnapshot {
            size: meta.len(),
            mtime_ns: crate::ready::system_time_ns(meta.modified().unwrap()),
        }
    }

    #[test]
    fn a_whole_mp4_nobody_writes_is_released_with_every_signal_it_passed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        write_export(&path, 200_000, 1);
        match look(
            &path,
            None,
            snapshot_of(&path),
            RULES,
            SystemTime::now(),
            UNIX_EPOCH,
        )
        .unwrap()
        {
            Release::Ready { signals } => {
                let rule = signals.join("; ");
                assert!(rule.contains("not open for writing"), "{rule}");
                assert!(rule.contains("MP4 complete"), "{rule}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cut_mp4_is_held_until_incomplete_after_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.mp4");
        write_export(&path, 200_000, 2);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(120_000).unwrap();
        drop(file);
        let stable = snapshot_of(&path);
        let now = SystemTime::now();
        match look(&path, None, stable, RULES, now, UNIX_EPOCH).unwrap() {
            Release::Held {
                by: HeldBy::Container,
                gives_up_at: Some(at),
                why,
            } => {
                assert!(at > now + Duration::from_secs(3500), "{at:?}");
                assert!(!why.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let later = now + Duration::from_secs(3601);
        match look(&path, None, stable, RULES, later, UNIX_EPOCH).unwrap() {
            Release::Refused {
                message,
                meaning,
                never_finished,
            } => {
                assert!(never_finished);
                assert!(meaning.contains("export it again"), "{meaning}");
                assert!(meaning.contains(&message), "{meaning}");
            }
            other => panic!("{other:?}"),
        }
        // Without the container check the other signals decide alone.
        let unchecked = ReleaseRules {
            check_container: false,
            ..RULES
        };
        assert!(matches!(
            look(&path, None, stable, unchecked, later, UNIX_EPOCH).unwrap(),
            Release::Ready { .. }
        ));
    }

    #[test]
    fn a_file_that_is_not_the_container_its_name_says_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.mov");
        std::fs::write(&path, b"these are my notes, not a movie").unwrap();
        assert!(matches!(
            look(
                &path,
                None,
                snapshot_of(&path),
                RULES,
                SystemTime::now(),
                UNIX_EPOCH
            )
            .unwrap(),
            Release::Refused {
                never_finished: false,
                ..
            }
        ));
        // Other suffixes have no container to check.
        let other = dir.path().join("clip.avi");
        std::fs::write(&other, b"whatever an AVI holds").unwrap();
        assert!(matches!(
            look(
                &other,
                None,
                snapshot_of(&other),
                RULES,
                SystemTime::now(),
                UNIX_EPOCH
            )
            .unwrap(),
            Release::Ready { .. }
        ));
    }

    #[test]
    fn a_file_that_grew_since_the_tracker_looked_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.mp4");
        write_export(&path, 100_000, 3);
        let before = snapshot_of(&path);
        write_export(&path, 150_000, 3);
        match look(&path, None, before, RULES, SystemTime::now(), UNIX_EPOCH).unwrap() {
            Release::Changed(now) => assert_eq!(now.size, 150_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_open_for_writing_here_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.mp4");
        write_export(&path, 100_000, 4);
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let verdict = look(
            &path,
            None,
            snapshot_of(&path),
            RULES,
            SystemTime::now(),
            UNIX_EPOCH,
        )
        .unwrap();
        drop(writer);
        assert!(
            matches!(
                verdict,
                Release::Held {
                    by: HeldBy::Writer,
                    ..
                }
            ),
            "{verdict:?}"
        );
    }
}
