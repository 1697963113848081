//! Tests of the writer check with real processes: shells that hold the file open for writing or
//! reading, the `/proc` scan on its own and on odd contents, a lease broken by a writer, writers
//! hammering a file while leases come and go, and the check run as an unprivileged user with
//! and without the `CAP_LEASE` the system unit grants. Child processes that must run the check
//! itself (as another user) are this test binary again, started at `helper_process_entry`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::linux::{
    FileId, NoLease, ProcScan, Viewpoint, Writer, nested_pid_namespace, on_network_file_system,
    parse_fdinfo, scan_proc, set_lease, sigio_is_harmless, take_and_release_read_lease,
    user_phrase, verdict, writers_text,
};
use super::{WriterCheck, check};
use crate::escape::escaped;

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process, killed and reaped when dropped so that no test leaves one behind.
struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `command` and waits until it has become `sleep`: its redirections are then open.
    fn start(mut command: Command) -> Holder {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        let holder = Holder { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", holder.pid()));
            if comm.is_ok_and(|c| c.trim_end() == "sleep") {
                return holder;
            }
            assert!(Instant::now() < deadline, "{command:?} never reached sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh -c 'exec 3>>FILE; exec sleep 30'` (or with `redirect` `<` for reading), optionally
/// behind `prefix` (e.g. setpriv): one process, named sleep, holding FILE as descriptor 3.
fn holding(path: &Path, redirect: &str, prefix: &[&str]) -> Holder {
    let script = format!("exec 3{redirect}\"$1\"; exec sleep 30");
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg("sh");
            command
        }
        None => Command::new("sh"),
    };
    command.arg("-c").arg(script).arg("sh").arg(path);
    Holder::start(command)
}

fn writer_text(pid: u32) -> String {
    format!("open for writing by sleep (pid {pid})")
}

/// What the check says about a file nobody writes, on the file system `file` is on.
fn nobody_writes(file: &File) -> WriterCheck {
    let elsewhere = if on_network_file_system(file) {
        " (writers on other machines cannot be seen)"
    } else {
        ""
    };
    WriterCheck::NotOpen {
        rule: format!("not open for writing on this machine{elsewhere}"),
    }
}

fn clip(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mov");
    std::fs::write(&path, b"not finished yet").unwrap();
    path
}

fn identity(path: &Path) -> FileId {
    let meta = std::fs::metadata(path).unwrap();
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

// ---------------------------------------------------------------------------------------------
// The check, with real writers and readers

#[test]
fn a_file_nobody_has_open_is_not_open_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    assert_eq!(check(&file, &path), nobody_writes(&file));
    // Asked again with the same handle: the lease was given up, nothing is left behind.
    assert_eq!(check(&file, &path), nobody_writes(&file));
}

#[test]
fn a_process_writing_is_named_until_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    let writer = holding(&path, ">>", &[]);
    let pid = writer.pid();
    let found = check(&file, &path);
    assert_eq!(
        found,
        WriterCheck::OpenForWriting {
            reason: writer_text(pid)
        }
    );
    assert_eq!(
        found.to_string(),
        format!("open for writing by sleep (pid {pid})")
    );
    drop(writer);
    assert_eq!(check(&file, &path), nobody_writes(&file));
}

#[test]
fn a_process_reading_is_not_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    let _reader = holding(&path, "<", &[]);
    assert_eq!(check(&file, &path), nobody_writes(&file));
}

#[test]
fn two_writers_are_both_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    let first = holding(&path, ">>", &[]);
    let second = holding(&path, "<>", &[]);
    let (low, high) = if first.pid() < second.pid() {
        (first.pid(), second.pid())
    } else {
        (second.pid(), first.pid())
    };
    assert_eq!(
        check(&file, &path).to_string(),
        format!("open for writing by sleep (pid {low}) and sleep (pid {high})")
    );
}

// ---------------------------------------------------------------------------------------------
// The /proc scan on its own

#[test]
fn the_proc_scan_finds_a_writer_by_identity_and_not_our_own_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    // Our own read handle, open throughout: not a writer.
    let _ours = File::open(&path).unwrap();
    let id = identity(&path);
    let scan = scan_proc(Path::new("/proc"), id).unwrap();
    assert_eq!(scan.writers, []);

    let writer = holding(&path, ">>", &[]);
    // Renamed while open: found by device and inode, not by name.
    let renamed = dir.path().join("renamed.mov");
    std::fs::rename(&path, &renamed).unwrap();
    let scan = scan_proc(Path::new("/proc"), id).unwrap();
    assert_eq!(
        scan.writers,
        [Writer {
            pid: writer.pid(),
            command: "sleep".into()
        }]
    );
    // Another file with a writer is not this one's.
    let other = clip(dir.path());
    let _other_writer = holding(&other, ">>", &[]);
    let scan = scan_proc(Path::new("/proc"), id).unwrap();
    assert_eq!(scan.writers.len(), 1, "{:?}", scan.writers);

    drop(writer);
    assert_eq!(scan_proc(Path::new("/proc"), id).unwrap().writers, []);
}

/// A made-up /proc: every odd entry is passed over, none panics, and the writers in it are
/// still found (a stat through a plain symlink stands in for the kernel's magic link).
#[test]
fn the_proc_scan_passes_over_odd_contents() {
    let dir = tempfile::tempdir().unwrap();
    let target = clip(dir.path());
    let unrelated = dir.path().join("other.mov");
    std::fs::write(&unrelated, b"x").unwrap();
    let id = identity(&target);
    let proc_root = dir.path().join("proc");
    let process = |pid: &str, fd: &str, link: &Path, fdinfo: Option<&str>, comm: Option<&[u8]>| {
        let base = proc_root.join(pid);
        std::fs::create_dir_all(base.join("fd")).unwrap();
        std::fs::create_dir_all(base.join("fdinfo")).unwrap();
        std::os::unix::fs::symlink(link, base.join("fd").join(fd)).unwrap();
        if let Some(info) = fdinfo {
            std::fs::write(base.join("fdinfo").join(fd), info).unwrap();
        }
        if let Some(comm) = comm {
            std::fs::write(base.join("comm"), comm).unwrap();
        }
    };
    let ino = id.ino;
    let write_only = format!("pos:\t0\nflags:\t0100001\nmnt_id:\t5\nino:\t{ino}\n");
    // Writers: a normal one with a hostile name, one from before fdinfo had `ino:`, one whose
    // `ino:` does not parse (the stat decides).
    process(
        "100",
        "3",
        &target,
        Some(&write_only),
        Some(b"render\x1b[31m\n"),
    );
    process("105", "3", &target, Some("flags:\t02\n"), None);
    process(
        "110",
        "7",
        &target,
        Some("flags:\t0100002\nino:\tmany\n"),
        Some(b"\n"),
    );
    // Not writers, or not readable.
    process(
        "101",
        "3",
        &target,
        Some(&format!("flags:\t0100000\nino:\t{ino}\n")),
        None,
    );
    process("102", "3", &target, Some("flags:\txyz\n"), None);
    process("103", "3", &target, None, None);
    process(
        "104",
        "4",
        Path::new("socket:[12345]"),
        Some("flags:\t02\n"),
        None,
    );
    process(
        "106",
        "3",
        &unrelated,
        Some(&format!("flags:\t01\nino:\t{ino}\n")),
        None,
    );
    process(
        "107",
        "3",
        Path::new("/nonexistent/x"),
        Some(&write_only),
        None,
    );
    process("108", "3", &unrelated, Some("flags:\t01\nino:\t1\n"), None);
    std::fs::create_dir_all(proc_root.join("self")).unwrap();
    std::fs::write(
        proc_root.join("109"),
        b"a file where a process folder belongs",
    )
    .unwrap();
    std::fs::write(proc_root.join("sys"), b"").unwrap();
    std::fs::create_dir_all(proc_root.join("111")).unwrap();
    std::fs::create_dir_all(proc_root.join("99999999999999999999/fd")).unwrap();

    let scan = scan_proc(&proc_root, id).unwrap();
    let hostile = escaped(std::ffi::OsStr::new("render\x1b[31m")).to_string();
    assert!(!hostile.contains('\x1b'), "{hostile}");
    assert_eq!(
        scan.writers,
        [
            Writer {
                pid: 100,
                command: hostile
            },
            Writer {
                pid: 105,
                command: "a process".into()
            },
            Writer {
                pid: 110,
                command: "a process".into()
            },
        ]
    );
    assert_eq!(scan.hidden, 0);
    assert!(scan_proc(&dir.path().join("no-proc-here"), id).is_err());
}

#[test]
fn fdinfo_fields_are_read_and_garbage_refused() {
    assert_eq!(
        parse_fdinfo("pos:\t0\nflags:\t0102001\nmnt_id:\t27\nino:\t10010738\n"),
        Some((0o102001, Some(10_010_738)))
    );
    assert_eq!(parse_fdinfo("flags:\t02\n"), Some((2, None)));
    assert_eq!(parse_fdinfo("pos:\t0\n"), None);
    assert_eq!(parse_fdinfo("flags:\t09\n"), None);
    assert_eq!(parse_fdinfo(""), None);
}

// ---------------------------------------------------------------------------------------------
// The words, for every way the lease and the scan can answer

fn viewpoint(user: &str, root: bool, in_container: bool) -> Viewpoint {
    Viewpoint {
        user: user.into(),
        root,
        in_container,
    }
}

fn found(writers: &[(u32, &str)], hidden: usize) -> io::Result<ProcScan> {
    Ok(ProcScan {
        writers: writers
            .iter()
            .map(|(pid, command)| Writer {
                pid: *pid,
                command: (*command).into(),
            })
            .collect(),
        hidden,
    })
}

fn not_open(rule: &str) -> WriterCheck {
    WriterCheck::NotOpen { rule: rule.into() }
}

fn open(reason: &str) -> WriterCheck {
    WriterCheck::OpenForWriting {
        reason: reason.into(),
    }
}

#[test]
fn every_outcome_says_what_was_seen_and_what_was_not() {
    let agent = viewpoint("user hotfolder", false, false);
    let root = viewpoint("user root", true, false);
    let contained = viewpoint("user root", true, true);
    let never = || -> io::Result<ProcScan> { panic!("a granted lease needs no scan") };
    let no_proc = || Err(io::Error::from_raw_os_error(libc::ENOENT));

    // The lease answered.
    assert_eq!(
        verdict(Ok(()), false, &agent, never),
        not_open("not open for writing on this machine")
    );
    assert_eq!(
        verdict(Ok(()), true, &agent, never),
        not_open("not open for writing on this machine (writers on other machines cannot be seen)")
    );
    // Refused for a writer on a local file system: named when the scan sees it.
    assert_eq!(
        verdict(Err(NoLease::OpenForWriting), false, &agent, || found(
            &[(4242, "ffmpeg")],
            0
        )),
        open("open for writing by ffmpeg (pid 4242)")
    );
    assert_eq!(
        verdict(Err(NoLease::OpenForWriting), false, &agent, || found(
            &[],
            12
        )),
        open("open for writing by a process on this machine")
    );
    assert_eq!(
        verdict(Err(NoLease::OpenForWriting), false, &agent, no_proc),
        open("open for writing by a process on this machine")
    );
    // On a network file system EAGAIN may only mean "no delegation": the scan decides.
    assert_eq!(
        verdict(Err(NoLease::OpenForWriting), true, &root, || found(&[], 0)),
        not_open("not open for writing on this machine (writers on other machines cannot be seen)")
    );
    assert_eq!(
        verdict(Err(NoLease::OpenForWriting), true, &root, || found(
            &[(7, "rsync")],
            0
        )),
        open("open for writing by rsync (pid 7)")
    );
    // No permission for a lease: the scan, and what it could not see.
    assert_eq!(
        verdict(Err(NoLease::NotPermitted), false, &agent, || found(&[], 40)),
        not_open(
            "not open for writing by any process of user hotfolder \
             (other users' processes are not visible)"
        )
    );
    assert_eq!(
        verdict(Err(NoLease::NotPermitted), true, &agent, || found(&[], 40)),
        not_open(
            "not open for writing by any process of user hotfolder \
             (other users' processes are not visible; writers on other machines cannot be seen)"
        )
    );
    assert_eq!(
        verdict(Err(NoLease::NotPermitted), false, &root, || found(&[], 0)),
        not_open("not open for writing on this machine")
    );
    // Root without CAP_SYS_PTRACE does not see other users' processes either.
    assert_eq!(
        verdict(Err(NoLease::Unsupported), false, &root, || found(&[], 3)),
        not_open(
            "not open for writing by any process of user root \
             (other users' processes are not visible)"
        )
    );
    assert_eq!(
        verdict(Err(NoLease::SigioNotIgnored), false, &contained, || found(
            &[],
            0
        )),
        not_open(
            "not open for writing by any process in this container \
             (processes outside this container are not visible)"
        )
    );
    // Neither a lease nor /proc.
    assert_eq!(
        verdict(Err(NoLease::NotPermitted), false, &agent, no_proc),
        WriterCheck::NotChecked {
            reason: "not checked: the agent may not take a lease on a file it does not own \
                     (that needs CAP_LEASE), and /proc cannot be read (No such file or directory \
                     (os error 2))"
                .into()
        }
    );
    let failed = NoLease::Failed(io::Error::from_raw_os_error(libc::ENOLCK));
    assert!(
        verdict(Err(failed), false, &agent, no_proc)
            .to_string()
            .starts_with("not checked: a lease could not be taken (No locks available")
    );
}

#[test]
fn writers_are_listed_in_a_sentence() {
    let w = |pid, command: &str| Writer {
        pid,
        command: command.into(),
    };
    assert_eq!(writers_text(&[w(1, "ffmpeg")]), "ffmpeg (pid 1)");
    assert_eq!(
        writers_text(&[w(1, "a"), w(2, "b")]),
        "a (pid 1) and b (pid 2)"
    );
    assert_eq!(
        writers_text(&[w(1, "a"), w(2, "b"), w(3, "c")]),
        "a (pid 1), b (pid 2) and c (pid 3)"
    );
    assert_eq!(
        writers_text(&[w(1, "a"), w(2, "b"), w(3, "c"), w(4, "d"), w(5, "e")]),
        "a (pid 1), b (pid 2), c (pid 3) and 2 more"
    );
}

#[test]
fn the_user_is_named_from_passwd_or_by_number() {
    let passwd = b"root:x:0:0:root:/root:/bin/bash\n\
                   broken line\n\
                   hotfolder:x:998:998::/var/lib/hotfolder:/usr/sbin/nologin\n";
    assert_eq!(user_phrase(998, passwd), "user hotfolder");
    assert_eq!(user_phrase(0, passwd), "user root");
    assert_eq!(user_phrase(1234, passwd), "uid 1234");
    assert_eq!(user_phrase(5, b"\xff\n::5:5\n"), "uid 5");
    assert!(!nested_pid_namespace("Name:\tx\nNSpid:\t31580\n"));
    assert!(nested_pid_namespace("NSpid:\t31580\t7\n"));
    assert!(!nested_pid_namespace(""));
}

// ---------------------------------------------------------------------------------------------
// SIGIO and writers never waiting

/// A lease held while a writer opens the file: the writer waits until it is given up, and the
/// SIGIO the kernel sends us for it does not end this process.
#[test]
fn a_lease_broken_by_a_writer_does_not_end_the_process() {
    assert!(sigio_is_harmless());
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap();
    let sigio = u32::try_from(libc::SIGIO).unwrap();
    assert_ne!(
        ignored & (1 << (sigio - 1)),
        0,
        "SIGIO is ignored: {ignored:x}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    set_lease(file.as_fd(), libc::F_RDLCK).unwrap();
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(": >> \"$1\"")
        .arg("sh")
        .arg(&path)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let waiting = writer.try_wait().unwrap().is_none();
    set_lease(file.as_fd(), libc::F_UNLCK).unwrap();
    let released = Instant::now();
    let status = writer.wait().unwrap();
    assert!(waiting, "the writer did not wait for the held lease");
    assert!(status.success());
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "the writer went on {:?} after the lease was given up",
        released.elapsed()
    );
}

/// Leases taken and given up in a tight loop while another process opens the file for writing
/// over and over: this process survives every break, and no open waits more than a moment.
#[test]
fn writers_hammering_a_file_never_wait_for_the_check() {
    let Some(exe) = helper_exe(None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path());
    let file = File::open(&path).unwrap();
    let seconds = 3;
    let helper = helper_command(&exe, "open-loop", &path, &[])
        .env(HELPER_SECONDS_ENV, seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut granted, mut refused) = (0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        match take_and_release_read_lease(&file) {
            Ok(()) => granted += 1,
            Err(NoLease::OpenForWriting) => refused += 1,
            Err(other) => panic!("lease: {other}"),
        }
    }
    let output = helper_result(helper);
    let fields: Vec<u64> = output
        .split_whitespace()
        .filter_map(|f| f.split_once('=')?.1.parse().ok())
        .collect();
    let [opens, slowest_us] = fields[..] else {
        panic!("helper said {output:?}")
    };
    eprintln!(
        "{granted} leases granted, {refused} refused while {opens} opens for writing ran; \
         slowest open {slowest_us} µs"
    );
    assert!(opens > 100, "{output}");
    assert!(granted > 100, "{granted} leases granted");
    assert!(
        slowest_us < 1_000_000,
        "an open for writing waited {slowest_us} µs"
    );
}

// ---------------------------------------------------------------------------------------------
// The check as an unprivileged user: without CAP_LEASE, and with it as the system unit grants

/// Runs the check as `nobody` on a file root owns (mode 0666, so `nobody` may write it too):
/// the lease is refused for permission and the scan says what it cannot see; with the ambient
/// CAP_LEASE the system unit grants, the lease sees every writer again.
#[test]
fn without_cap_lease_the_rule_says_what_it_cannot_see() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        crate::test_skipped(format_args!("switching to the user nobody needs root"));
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        crate::test_skipped(format_args!("setpriv (util-linux) is not installed"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let Some(exe) = helper_exe(Some(dir.path())) else {
        return;
    };
    let path = clip(dir.path());
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o666)).unwrap();

    const NOBODY: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    const NOBODY_WITH_CAP_LEASE: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+lease",
        "--ambient-caps=+lease",
    ];
    let check_as = |prefix: &[&str]| {
        let helper = helper_command(&exe, "check", &path, prefix)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        helper_result(helper)
    };
    let nobody = user_phrase(65534, &std::fs::read("/etc/passwd").unwrap_or_default());
    let file = File::open(&path).unwrap();
    let elsewhere = on_network_file_system(&file);
    if elsewhere {
        crate::test_skipped(format_args!(
            "the temporary folder is on a network file system"
        ));
        return;
    }
    let not_visible = format!(
        "NotOpen: not open for writing by any process of {nobody} \
         (other users' processes are not visible)"
    );

    // Nobody writes it.
    assert_eq!(check_as(NOBODY), not_visible);
    // Root writes it: invisible without the lease, and the rule said so.
    let root_writer = holding(&path, ">>", &[]);
    assert_eq!(check_as(NOBODY), not_visible);
    // With CAP_LEASE, as the system unit runs the agent: the kernel sees root's writer, though
    // nobody may not name it.
    assert_eq!(
        check_as(NOBODY_WITH_CAP_LEASE),
        "OpenForWriting: open for writing by a process on this machine"
    );
    drop(root_writer);
    assert_eq!(
        check_as(NOBODY_WITH_CAP_LEASE),
        "NotOpen: not open for writing on this machine"
    );
    // A writer of the agent's own user is seen and named by the scan alone.
    let own_writer = holding(&path, ">>", NOBODY);
    assert_eq!(
        check_as(NOBODY),
        format!("OpenForWriting: {}", writer_text(own_writer.pid()))
    );
    // And root, which may take the lease, names it too.
    assert_eq!(
        check(&file, &path),
        WriterCheck::OpenForWriting {
            reason: writer_text(own_writer.pid())
        }
    );
}

// ---------------------------------------------------------------------------------------------
// The helper process: this test binary started again at `helper_process_entry`

const HELPER_ENV: &str = "HOTFOLDER_WRITERS_HELPER";
const HELPER_FILE_ENV: &str = "HOTFOLDER_WRITERS_FILE";
const HELPER_SECONDS_ENV: &str = "HOTFOLDER_WRITERS_SECONDS";
const HELPER_RESULT: &str = "HELPER-RESULT ";

/// The entry point of the child processes the tests above start; in a plain test run it does
/// nothing and is not a test of its own.
#[test]
fn helper_process_entry() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let path = PathBuf::from(std::env::var_os(HELPER_FILE_ENV).unwrap());
    match mode.as_str() {
        "check" => {
            let file = File::open(&path).unwrap();
            let outcome = match check(&file, &path) {
                WriterCheck::NotOpen { rule } => format!("NotOpen: {rule}"),
                WriterCheck::OpenForWriting { reason } => format!("OpenForWriting: {reason}"),
                WriterCheck::NotChecked { reason } => format!("NotChecked: {reason}"),
            };
            println!("{HELPER_RESULT}{outcome}");
        }
        "open-loop" => {
            let seconds: u64 = std::env::var(HELPER_SECONDS_ENV).unwrap().parse().unwrap();
            let until = Instant::now() + Duration::from_secs(seconds);
            let (mut opens, mut slowest) = (0u64, Duration::ZERO);
            while Instant::now() < until {
                let started = Instant::now();
                let file = File::options().append(true).open(&path).unwrap();
                slowest = slowest.max(started.elapsed());
                drop(file);
                opens += 1;
            }
            println!(
                "{HELPER_RESULT}opens={opens} slowest_us={}",
                slowest.as_micros()
            );
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// This test binary, where the user nobody can run it: in place when every folder above it
/// lets everyone through, otherwise hard-linked into `reachable_dir`. `None` (with the reason
/// printed) when neither works.
fn helper_exe(reachable_dir: Option<&Path>) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let Some(dir) = reachable_dir else {
        return Some(exe);
    };
    let everyone_may_run = exe
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if everyone_may_run {
        return Some(exe);
    }
    let linked = dir.join("helper");
    match std::fs::hard_link(&exe, &linked) {
        Ok(()) => Some(linked),
        Err(err) => {
            crate::test_skipped(format_args!(
                "the test binary {} is not reachable by other users and cannot be \
                 linked into {}: {err}",
                exe.display(),
                dir.display()
            ));
            None
        }
    }
}

fn helper_command(exe: &Path, mode: &str, path: &Path, prefix: &[&str]) -> Command {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .args(["--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .arg(format!("{module}::helper_process_entry"))
        .env(HELPER_ENV, mode)
        .env(HELPER_FILE_ENV, path)
        .stdin(Stdio::null());
    command
}

/// The helper's result line; panics with its output when it has none.
fn helper_result(mut helper: Child) -> String {
    let stdout = helper.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = helper.wait().unwrap();
    lines
        .iter()
        .find_map(|l| l.strip_prefix(HELPER_RESULT))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "the helper ({status}) printed no result:\n{}",
                lines.join("\n")
            )
        })
}
