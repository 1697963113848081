//! The second completeness signal: no process on this machine holds the file open for writing.
//! A render that pauses longer than `stable_for` still has its output open; this is what tells
//! such a file apart from a finished one.
//!
//! ## The mechanism: a read lease, then `/proc` where the lease cannot answer
//!
//! [`check`] first takes a read lease on the caller's read-only handle and drops it at once:
//! `fcntl(fd, F_SETLEASE, F_RDLCK)` then `F_UNLCK`. The kernel grants a read lease only while
//! no process — of any user, in any container — has the file open for writing, and refuses it
//! with `EAGAIN` otherwise. One system call answers the whole question, at the instant it is
//! asked, whatever the number of processes. It needs the agent to own the file or to hold
//! `CAP_LEASE`, which the packaged system unit grants (`AmbientCapabilities=CAP_LEASE`).
//!
//! Where the lease cannot answer, a scan of `/proc/*/fd` decides instead, and the rule says
//! what it could not see:
//!
//! - the lease is refused for permission (`EACCES`/`EPERM`: a file of another user, no
//!   `CAP_LEASE`): the scan sees only the processes the agent may inspect, its own user's
//!   unless it runs as root: "… by any process of user hotfolder (other users' processes are not
//!   visible)";
//! - the file system has no leases (`EINVAL`: NFSv3, `fs.leases-enable = 0`) or anything else
//!   goes wrong taking one;
//! - the file is on a network or FUSE file system: there `EAGAIN` does not mean a writer
//!   (NFSv4 refuses every lease it holds no delegation for, SMB every lease without a read
//!   oplock), and neither the lease nor `/proc` can see a writer on another machine, which the
//!   rule says.
//!
//! When the lease is refused because a writer has the file open, the same scan names it
//! ("open for writing by ffmpeg (pid 4242)"), or the rule says "by a process on this machine"
//! when that process is not one the agent may inspect.
//!
//! A process that mapped the file writable and closed its descriptor still counts as a writer
//! for the kernel; no descriptor names it, so the rule says "by a process on this machine".
//!
//! The scan alone would have been simpler, but it is blind to other users' processes unless the
//! agent runs as root (or with `CAP_SYS_PTRACE`, a far broader grant than `CAP_LEASE`), blind to
//! processes outside its container, and it costs a look at every open file of every process:
//! measured on a 2-core VM (release build), a lease takes about 1 µs and the scan 0.7 ms with
//! 380 descriptors open on the machine, 170 ms with 31,500.
//!
//! ## The lease is never held
//!
//! A writer that opens the file while the lease is held waits (up to `lease-break-time`, 45 s)
//! for the holder to give it up. The lease is released on the next line, so a writer waits for
//! two system calls at most. Breaking a lease also sends the holder SIGIO, whose default action
//! ends the process: SIGIO is ignored process-wide before the first lease (see
//! `sigio_is_harmless` below); where that cannot be done no lease is taken at all.
//!
//! ## Other systems
//!
//! macOS has no public call that tells whether another process has a file open for writing
//! (`lsof` uses libproc's private interfaces): [`check`] says "not checked on this system
//! (macOS)" and the other signals decide.
//!
//! [`check`] blocks (it reads `/proc`): the agent calls it off its async threads.

use std::fmt;
use std::fs::File;
use std::path::Path;

/// What [`check`] found. Each variant carries the words for the log, the sidecar and `scan`,
/// written to be joined with the other signals' rules by "; ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterCheck {
    /// Nothing the check could see has the file open for writing: "not open for writing on
    /// this machine", with what it could not see in parentheses.
    NotOpen { rule: String },
    /// A process has it open for writing: "open for writing by ffmpeg (pid 4242)", or "by a
    /// process on this machine" when it cannot be named.
    OpenForWriting { reason: String },
    /// The check could not be made: "not checked on this system (macOS)", "not checked: …".
    NotChecked { reason: String },
}

impl WriterCheck {
    /// The words for people, whichever the outcome.
    pub fn text(&self) -> &str {
        match self {
            WriterCheck::NotOpen { rule } => rule,
            WriterCheck::OpenForWriting { reason } | WriterCheck::NotChecked { reason } => reason,
        }
    }
}

impl fmt::Display for WriterCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Whether a process on this machine holds the file open for writing. `file` is a read-only
/// handle the caller opened without following links; `path` names it in messages. Blocking.
#[cfg(target_os = "linux")]
pub fn check(file: &File, path: &Path) -> WriterCheck {
    linux::check(file, path)
}

/// Not checked on this system: see the module documentation.
#[cfg(not(target_os = "linux"))]
pub fn check(_file: &File, _path: &Path) -> WriterCheck {
    let system = match std::env::consts::OS {
        "macos" => "macOS",
        other => other,
    };
    WriterCheck::NotChecked {
        reason: format!("not checked on this system ({system})"),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsStr;
    use std::fmt;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::OnceLock;

    use super::WriterCheck;
    use crate::escape::escaped;

    /// A file's identity, as `/proc/PID/fd/N` must match it.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) struct FileId {
        pub dev: u64,
        pub ino: u64,
    }

    pub(super) fn check(file: &File, path: &Path) -> WriterCheck {
        let id = match file.metadata() {
            Ok(meta) => FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            Err(err) => {
                return WriterCheck::NotChecked {
                    reason: format!("not checked: cannot look at {}: {err}", escaped(path)),
                };
            }
        };
        let remote = on_network_file_system(file);
        let lease = take_and_release_read_lease(file);
        verdict(lease, remote, &Viewpoint::of_this_process(), || {
            scan_proc(Path::new("/proc"), id)
        })
    }

    /// Why no lease was had.
    #[derive(Debug)]
    pub(super) enum NoLease {
        /// `EAGAIN`: someone has the file open for writing (on a local file system; see
        /// [`verdict`] for network ones).
        OpenForWriting,
        /// `EACCES`/`EPERM`: the agent neither owns the file nor holds `CAP_LEASE`.
        NotPermitted,
        /// `EINVAL`: this file system has no leases, or they are turned off.
        Unsupported,
        /// SIGIO could not be ignored, so no lease was tried (a broken one would end the agent).
        SigioNotIgnored,
        Failed(io::Error),
    }

    impl fmt::Display for NoLease {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                NoLease::OpenForWriting => f.write_str("the file is open for writing"),
                NoLease::NotPermitted => f.write_str(
                    "the agent may not take a lease on a file it does not own (that needs CAP_LEASE)",
                ),
                NoLease::Unsupported => {
                    f.write_str("this file system does not support leases, or they are turned off")
                }
                NoLease::SigioNotIgnored => f.write_str("SIGIO could not be ignored"),
                NoLease::Failed(err) => write!(f, "a lease could not be taken ({err})"),
            }
        }
    }

    /// Takes a read lease and gives it up on the next line: granted means that at that instant
    /// no process had the file open for writing.
    pub(super) fn take_and_release_read_lease(file: &File) -> Result<(), NoLease> {
        if !sigio_is_harmless() {
            return Err(NoLease::SigioNotIgnored);
        }
        let fd = file.as_fd();
        match set_lease(fd, libc::F_RDLCK) {
            Ok(()) => {}
            Err(err) => {
                return Err(match err.raw_os_error() {
                    Some(libc::EAGAIN) => NoLease::OpenForWriting,
                    Some(libc::EACCES | libc::EPERM) => NoLease::NotPermitted,
                    Some(libc::EINVAL) => NoLease::Unsupported,
                    _ => NoLease::Failed(err),
                });
            }
        }
        // Released at once: a writer opening the file now waits until this returns. Giving up a
        // lease we hold cannot fail in practice; if it did, the kernel still breaks it for the
        // writer after lease-break-time and it goes when the caller closes the handle, and the
        // answer already had is right either way.
        let _ = set_lease(fd, libc::F_UNLCK);
        Ok(())
    }

    /// `fcntl(fd, F_SETLEASE, kind)`; rustix has no wrapper for leases.
    pub(super) fn set_lease(fd: BorrowedFd<'_>, kind: libc::c_int) -> io::Result<()> {
        // SAFETY: `fd` is a descriptor borrowed for the duration of the call; F_SETLEASE takes
        // an integer argument and touches no memory of ours.
        let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, kind) };
        if result == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Makes sure a broken lease cannot end the process, once; `false` when that failed.
    ///
    /// When a writer opens a file we hold a lease on, the kernel sends us SIGIO, whose default
    /// action terminates the process: without this, an editor saving a file at the wrong
    /// microsecond would kill the agent. The disposition is process-wide, so it is set once
    /// for all threads; a handler someone already installed is left alone (it does not
    /// terminate either). Ignoring rather than handling it: an ignored signal is discarded
    /// when sent, so it interrupts no system call in any thread. Children the agent starts
    /// inherit the ignored SIGIO; no program it runs relies on being killed by one.
    pub fn sigio_is_harmless() -> bool {
        static HARMLESS: OnceLock<bool> = OnceLock::new();
        *HARMLESS.get_or_init(|| {
            // SAFETY: sigaction with a null new action only reads the current one into
            // `current`, a zeroed plain C struct that lives across the call.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            if unsafe { libc::sigaction(libc::SIGIO, std::ptr::null(), &mut current) } != 0 {
                return false;
            }
            if current.sa_sigaction != libc::SIG_DFL {
                return true;
            }
            // SAFETY: a zeroed sigaction is a valid C struct; SIG_IGN installs no handler code,
            // and the old action is not asked for.
            let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
            ignore.sa_sigaction = libc::SIG_IGN;
            unsafe {
                libc::sigemptyset(&mut ignore.sa_mask);
                libc::sigaction(libc::SIGIO, &ignore, std::ptr::null_mut()) == 0
            }
        })
    }

    /// File systems whose files other machines can write (and FUSE, which may be a network
    /// file system underneath: sshfs, rclone). Neither a lease nor `/proc` sees those writers,
    /// and some refuse every lease with EAGAIN (NFSv4 without a delegation, SMB without a read
    /// oplock), which must not be taken for a local writer.
    const NETWORK_FILE_SYSTEMS: [u32; 12] = [
        0x6969,      // NFS
        0x517B,      // SMB (smbfs)
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2/3
        0x6573_5546, // FUSE
        0x5346_414F, // AFS
        0x00C3_6400, // Ceph
        0x0102_1997, // 9p
        0x7375_7245, // Coda
        0x0116_1970, // GFS2 (a cluster file system: other nodes write too)
        0x7461_636F, // OCFS2 (same)
        0x0BD0_0BD0, // Lustre
    ];

    pub(super) fn on_network_file_system(file: &File) -> bool {
        match rustix::fs::fstatfs(file) {
            // The magic is a signed word on some targets; its low 32 bits are the magic.
            #[allow(clippy::unnecessary_cast)]
            Ok(stat) => NETWORK_FILE_SYSTEMS.contains(&(stat.f_type as u32)),
            // Unknown: local, the common case. A network file system taken for local could
            // only hold a file back while its lease is refused, and fstatfs on an open
            // descriptor does not fail in practice.
            Err(_) => false,
        }
    }

    /// Who the agent is, for what the scan can see.
    #[derive(Debug, Clone)]
    pub(super) struct Viewpoint {
        /// "user hotfolder", or "uid 998" when the name is unknown.
        pub user: String,
        /// Root sees every process's open files (unless a missing CAP_SYS_PTRACE hides some,
        /// which the scan counts).
        pub root: bool,
        /// In a child PID namespace (a container), `/proc` lists only its processes.
        pub in_container: bool,
    }

    impl Viewpoint {
        pub fn of_this_process() -> Viewpoint {
            static THIS: OnceLock<Viewpoint> = OnceLock::new();
            THIS.get_or_init(|| {
                // SAFETY: geteuid takes no arguments and cannot fail.
                let uid = unsafe { libc::geteuid() };
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                Viewpoint {
                    user: user_phrase(uid, &std::fs::read("/etc/passwd").unwrap_or_default()),
                    root: uid == 0,
                    in_container: nested_pid_namespace(&status),
                }
            })
            .clone()
        }
    }

    /// "user NAME" from passwd-format text, or "uid N". Read from /etc/passwd rather than
    /// through NSS, which may ask a directory server over the network.
    pub(super) fn user_phrase(uid: u32, passwd: &[u8]) -> String {
        let name = passwd.split(|&b| b == b'\n').find_map(|line| {
            let mut fields = line.split(|&b| b == b':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let id = std::str::from_utf8(fields.next()?)
                .ok()?
                .parse::<u32>()
                .ok()?;
            (id == uid && !name.is_empty()).then_some(name)
        });
        match name {
            Some(name) => format!("user {}", escaped(OsStr::from_bytes(name))),
            None => format!("uid {uid}"),
        }
    }

    /// Whether `/proc/self/status` shows more than one PID namespace level (`NSpid: 42 7`).
    pub(super) fn nested_pid_namespace(status: &str) -> bool {
        status
            .lines()
            .find_map(|line| line.strip_prefix("NSpid:"))
            .is_some_and(|pids| pids.split_whitespace().count() > 1)
    }

    /// What the lease said, the file system, who the agent is and (only when needed) the scan,
    /// turned into the outcome and its words.
    pub(super) fn verdict(
        lease: Result<(), NoLease>,
        remote: bool,
        viewpoint: &Viewpoint,
        scan: impl FnOnce() -> io::Result<ProcScan>,
    ) -> WriterCheck {
        let elsewhere = if remote {
            " (writers on other machines cannot be seen)"
        } else {
            ""
        };
        let refused = match lease {
            Ok(()) => {
                return WriterCheck::NotOpen {
                    rule: format!("not open for writing on this machine{elsewhere}"),
                };
            }
            Err(refused) => refused,
        };
        match (scan(), refused) {
            (Ok(found), _) if !found.writers.is_empty() => WriterCheck::OpenForWriting {
                reason: format!("open for writing by {}", writers_text(&found.writers)),
            },
            // The kernel knows a writer the scan cannot see (another user's, or outside this
            // container). Only on a local file system: see NETWORK_FILE_SYSTEMS.
            (_, NoLease::OpenForWriting) if !remote => WriterCheck::OpenForWriting {
                reason: "open for writing by a process on this machine".into(),
            },
            (Ok(found), _) => WriterCheck::NotOpen {
                rule: scan_rule(&found, remote, viewpoint),
            },
            (Err(err), refused) => WriterCheck::NotChecked {
                reason: format!("not checked: {refused}, and /proc cannot be read ({err})"),
            },
        }
    }

    /// The rule after a scan that found no writer: whose processes it saw, and what it could not.
    fn scan_rule(scan: &ProcScan, remote: bool, viewpoint: &Viewpoint) -> String {
        let partial = !viewpoint.root || scan.hidden > 0;
        let mut unseen = Vec::new();
        if partial {
            unseen.push("other users' processes are not visible");
        }
        if viewpoint.in_container {
            unseen.push("processes outside this container are not visible");
        }
        if remote {
            unseen.push("writers on other machines cannot be seen");
        }
        let head = if partial {
            format!("not open for writing by any process of {}", viewpoint.user)
        } else if viewpoint.in_container {
            "not open for writing by any process in this container".to_string()
        } else {
            "not open for writing on this machine".to_string()
        };
        if unseen.is_empty() {
            head
        } else {
            format!("{head} ({})", unseen.join("; "))
        }
    }

    /// "ffmpeg (pid 4242)", "a (pid 1) and b (pid 2)", "a (pid 1), b (pid 2), c (pid 3) and 4 more".
    pub(super) fn writers_text(writers: &[Writer]) -> String {
        const NAMED: usize = 3;
        let named: Vec<String> = writers
            .iter()
            .take(NAMED)
            .map(|w| format!("{} (pid {})", w.command, w.pid))
            .collect();
        if writers.len() > NAMED {
            return format!("{} and {} more", named.join(", "), writers.len() - NAMED);
        }
        match named.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// A process with the file open for writing.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Writer {
        pub pid: u32,
        /// Its command name (`/proc/PID/comm`), escaped for printing.
        pub command: String,
    }

    /// What one pass over `/proc` saw.
    #[derive(Debug, Default)]
    pub(super) struct ProcScan {
        /// Ordered by pid.
        pub writers: Vec<Writer>,
        /// Processes whose open files the agent may not look at.
        pub hidden: usize,
    }

    /// Every process under `proc_root` (normally `/proc`) with `target` open for writing.
    /// Fails only when `proc_root` cannot be listed: a process that ends, or a descriptor that
    /// closes, mid-scan is passed over, and so is anything that does not parse.
    ///
    /// Per descriptor, cheapest first: its link text (sockets, pipes and the like are not
    /// paths); its `fdinfo` (access mode and inode number, read from memory); and only for a
    /// writable descriptor of the same inode number, a `stat` through it for the device. So
    /// the scan never waits on a file system other than the target's, such as a dead NFS mount
    /// another process has a file open on.
    pub(super) fn scan_proc(proc_root: &Path, target: FileId) -> io::Result<ProcScan> {
        let mut scan = ProcScan::default();
        for entry in std::fs::read_dir(proc_root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let process = entry.path();
            let fds = match std::fs::read_dir(process.join("fd")) {
                Ok(fds) => fds,
                Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                    scan.hidden += 1;
                    continue;
                }
                // Gone since the listing, or not a process directory after all.
                Err(_) => continue,
            };
            let writes = fds
                .filter_map(Result::ok)
                .any(|fd| is_writer_of(&process, &fd.file_name(), target).unwrap_or(false));
            if writes {
                scan.writers.push(Writer {
                    pid,
                    command: command_name(&process),
                });
            }
        }
        scan.writers.sort_by_key(|w| w.pid);
        Ok(scan)
    }

    /// Whether descriptor `fd` of `process` is `target` opened for writing; `None` for
    /// anything that vanished or does not parse.
    fn is_writer_of(process: &Path, fd: &OsStr, target: FileId) -> Option<bool> {
        let link = process.join("fd").join(fd);
        if !std::fs::read_link(&link).ok()?.starts_with("/") {
            return Some(false);
        }
        let info = std::fs::read_to_string(process.join("fdinfo").join(fd)).ok()?;
        let (flags, ino) = parse_fdinfo(&info)?;
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Some(false);
        }
        // `ino:` is there since Linux 5.14; without it the stat below decides alone.
        if ino.is_some_and(|ino| ino != target.ino) {
            return Some(false);
        }
        let meta = std::fs::metadata(&link).ok()?;
        Some(meta.dev() == target.dev && meta.ino() == target.ino)
    }

    /// The `flags:` (octal) and `ino:` fields of an fdinfo file.
    pub(super) fn parse_fdinfo(info: &str) -> Option<(libc::c_int, Option<u64>)> {
        let mut flags = None;
        let mut ino = None;
        for line in info.lines() {
            if let Some(value) = line.strip_prefix("flags:") {
                flags = libc::c_int::from_str_radix(value.trim(), 8).ok();
            } else if let Some(value) = line.strip_prefix("ino:") {
                ino = value.trim().parse().ok();
            }
        }
        Some((flags?, ino))
    }

    fn command_name(process: &Path) -> String {
        match std::fs::read(process.join("comm")) {
            Ok(name) => {
                let name = name.strip_suffix(b"\n").unwrap_or(&name);
                if name.is_empty() {
                    "a process".to_string()
                } else {
                    escaped(OsStr::from_bytes(name)).to_string()
                }
            }
            Err(_) => "a process".to_string(),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
