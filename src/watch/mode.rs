//! How one folder is watched: native events, polling, or both, and why, in the words `check`,
//! `status`, `scan` and the log show ("events (ext4)", "events + polling every 10 s
//! (fuse.sshfs)").

use std::fmt;
use std::time::Duration;

use super::file_system::FileSystem;

/// How often a folder is polled when nobody said (`poll_interval` unset) and it needs it: on a
/// network or FUSE file system, or once the system's limit of watches is reached.
pub const AUTO_POLL_EVERY: Duration = Duration::from_secs(10);

/// How one folder is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchMode {
    /// Native events (inotify, FSEvents) are in place, for the folder or the part of it the
    /// system's limits allowed.
    pub events: bool,
    /// The folder is walked at this interval for changes that send no event.
    pub poll_every: Option<Duration>,
    /// `poll_interval` was set in the config.
    pub configured: bool,
    /// The file system, when it could be told.
    pub file_system: Option<FileSystem>,
    /// A system limit on watches was met: part or all of the folder sends no events.
    pub limit: Option<WatchLimit>,
}

/// A system limit on native watches, and the sysctl that raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchLimit {
    /// `fs.inotify.max_user_watches`: one watch per folder in the tree.
    Watches,
    /// `fs.inotify.max_user_instances` (or the open-file limit): one per watched folder tree.
    Instances,
    /// Not a system limit: a subfolder the agent may not read (a volume's `lost+found`) cannot
    /// be watched, so the tree is polled and the walk skips what it cannot read.
    Unreadable,
}

impl WatchLimit {
    /// What is reached and how to raise it, in one clause.
    pub fn advice(self) -> &'static str {
        match self {
            WatchLimit::Watches => {
                "the system's limit of inotify watches is reached: raise \
                 fs.inotify.max_user_watches with `sudo sysctl -w \
                 fs.inotify.max_user_watches=524288` and keep it in \
                 /etc/sysctl.d/90-hotfolder.conf"
            }
            WatchLimit::Instances => {
                "the system's limit of inotify instances is reached: raise \
                 fs.inotify.max_user_instances with `sudo sysctl -w \
                 fs.inotify.max_user_instances=1024` and keep it in \
                 /etc/sysctl.d/90-hotfolder.conf, or raise LimitNOFILE in the service unit"
            }
            WatchLimit::Unreadable => {
                "a subfolder cannot be read by the user hotfolder runs as (permission denied, \
                 e.g. lost+found): give that user read access to every subfolder, or keep \
                 unreadable folders out of the watched one"
            }
        }
    }

    /// The limit as it stands now: the system's sysctl and, since Linux 5.11, the user
    /// namespace's own (which a container may set lower), read from `/proc`; compared with the
    /// values when the limit was met to notice that someone raised it. `None` where they cannot
    /// be read.
    pub fn current(self) -> [Option<u64>; 2] {
        let files = match self {
            WatchLimit::Watches => [
                "/proc/sys/fs/inotify/max_user_watches",
                "/proc/sys/user/max_inotify_watches",
            ],
            WatchLimit::Instances => [
                "/proc/sys/fs/inotify/max_user_instances",
                "/proc/sys/user/max_inotify_instances",
            ],
            WatchLimit::Unreadable => return [None, None],
        };
        files.map(|file| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
        })
    }

    /// The sysctl to raise.
    pub fn sysctl(self) -> &'static str {
        match self {
            WatchLimit::Watches => "fs.inotify.max_user_watches",
            WatchLimit::Instances => "fs.inotify.max_user_instances",
            WatchLimit::Unreadable => "",
        }
    }
}

impl WatchMode {
    /// The mode of a folder on `file_system`, with `poll_interval` as configured, when its
    /// native watch is in place: events, and polling too where the file system needs it or the
    /// config asks for it.
    pub fn planned(file_system: Option<FileSystem>, poll_interval: Option<Duration>) -> WatchMode {
        let remote = file_system.as_ref().is_some_and(|fs| fs.remote);
        WatchMode {
            events: true,
            poll_every: poll_interval.or(remote.then_some(AUTO_POLL_EVERY)),
            configured: poll_interval.is_some(),
            file_system,
            limit: None,
        }
    }

    /// The same folder once `limit` was met: polled (at the configured interval, or every
    /// [`AUTO_POLL_EVERY`]); `events` says whether a part of it is still watched natively.
    pub fn limited(mut self, limit: WatchLimit, events: bool) -> WatchMode {
        self.events = events;
        self.poll_every = self.poll_every.or(Some(AUTO_POLL_EVERY));
        self.limit = Some(limit);
        self
    }

    /// Files can change without an event and their attributes may be cached: look at them
    /// afresh (open and `fstat`, see `ready::inspect_fresh`) rather than with `lstat`.
    pub fn needs_fresh_attributes(&self) -> bool {
        self.file_system.as_ref().is_some_and(|fs| fs.remote)
    }

    /// Whether the folder is polled.
    pub fn polls(&self) -> bool {
        self.poll_every.is_some()
    }
}

impl fmt::Display for WatchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.events, self.poll_every) {
            (true, None) => f.write_str("events")?,
            (true, Some(every)) => write!(f, "events + polling every {}", seconds(every))?,
            (false, Some(every)) => write!(f, "polling every {}", seconds(every))?,
            (false, None) => f.write_str("not watched")?,
        }
        let mut why = Vec::new();
        if let Some(fs) = &self.file_system {
            why.push(fs.name.clone());
        }
        if self.configured {
            why.push("poll_interval set".to_owned());
        }
        match (self.limit, self.events) {
            (Some(limit), true) => why.push(format!(
                "some subfolders send no events: {}",
                limit.advice()
            )),
            (Some(limit), false) => why.push(format!("no events: {}", limit.advice())),
            (None, _) => {}
        }
        if !why.is_empty() {
            write!(f, " ({})", why.join("; "))?;
        }
        Ok(())
    }
}

/// `10 s`, `1.5 s`, `2 min`: as the rest of `status` counts time.
fn seconds(every: Duration) -> String {
    let secs = every.as_secs_f64();
    if every.subsec_nanos() == 0 && every.as_secs() >= 120 && every.as_secs().is_multiple_of(60) {
        format!("{} min", every.as_secs() / 60)
    } else if every.subsec_nanos() == 0 {
        format!("{} s", every.as_secs())
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(name: &str, remote: bool) -> Option<FileSystem> {
        Some(FileSystem {
            name: name.into(),
            remote,
        })
    }

    #[test]
    fn local_folders_use_events_and_shares_are_polled_as_well() {
        let local = WatchMode::planned(fs("ext4", false), None);
        assert_eq!(local.to_string(), "events (ext4)");
        assert!(!local.polls() && !local.needs_fresh_attributes());

        let share = WatchMode::planned(fs("fuse.sshfs", true), None);
        assert_eq!(
            share.to_string(),
            "events + polling every 10 s (fuse.sshfs)"
        );
        assert_eq!(share.poll_every, Some(AUTO_POLL_EVERY));
        assert!(share.needs_fresh_attributes());

        assert_eq!(WatchMode::planned(None, None).to_string(), "events");
    }

    #[test]
    fn an_explicit_poll_interval_polls_anywhere() {
        let local = WatchMode::planned(fs("ext4", false), Some(Duration::from_secs(30)));
        assert_eq!(
            local.to_string(),
            "events + polling every 30 s (ext4; poll_interval set)"
        );
        assert!(
            !local.needs_fresh_attributes(),
            "a local disk caches nothing"
        );
        let share = WatchMode::planned(fs("nfs4", true), Some(Duration::from_millis(1500)));
        assert_eq!(
            share.to_string(),
            "events + polling every 1.5 s (nfs4; poll_interval set)"
        );
        let slow = WatchMode::planned(fs("cifs", true), Some(Duration::from_secs(300)));
        assert!(slow.to_string().starts_with("events + polling every 5 min"));
    }

    #[test]
    fn a_watch_limit_polls_and_names_the_sysctl() {
        let whole = WatchMode::planned(fs("ext4", false), None).limited(WatchLimit::Watches, false);
        let text = whole.to_string();
        assert!(
            text.starts_with("polling every 10 s (ext4; no events: "),
            "{text}"
        );
        assert!(text.contains("fs.inotify.max_user_watches"), "{text}");
        assert!(text.contains("sysctl -w"), "{text}");

        let part = WatchMode::planned(fs("xfs", false), Some(Duration::from_secs(20)))
            .limited(WatchLimit::Instances, true);
        let text = part.to_string();
        assert!(text.starts_with("events + polling every 20 s"), "{text}");
        assert!(text.contains("some subfolders send no events"), "{text}");
        assert!(text.contains("fs.inotify.max_user_instances"), "{text}");
        assert_eq!(WatchLimit::Watches.sysctl(), "fs.inotify.max_user_watches");
    }
}
