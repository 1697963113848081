//! Folders whose changes send no event, through the real binary: a real network file system on
//! loopback (sshfs against a local sshd, written on the server side), a share mounted inside a
//! folder with `poll_interval` set, the system's inotify watch limit met (lowered in a user
//! namespace of its own, which no other watcher shares), and the kernel's event queue
//! overflowing. Each needs something not every machine has (root, FUSE, sshd, user
//! namespaces); without it the test says why and returns.
//!
//! The exports are MP4 files written as whole boxes (`ftyp`, `moov`, then one `mdat` per
//! piece), so the file is a structurally complete MP4 after every piece: only its size and
//! mtime staying still can tell that the writer has not finished.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::util::loopback_share::{LoopbackShare, which};
use crate::util::*;

/// An MP4 as `pieces` to write one after the other, each ending on a box boundary: `ftyp` and
/// `moov` first, then `count` `mdat` boxes of `size` bytes of content each.
fn mp4_pieces(count: usize, size: usize, seed: u64) -> Vec<Vec<u8>> {
    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let total = u32::try_from(8 + body.len()).unwrap();
        let mut out = total.to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }
    let mut head = boxed(b"ftyp", b"isom\0\0\x02\0isommp42");
    head.extend(boxed(b"moov", &boxed(b"free", &[0; 8])));
    let mut pieces = vec![head];
    for i in 0..count {
        pieces.push(boxed(b"mdat", &content(size, seed * 1000 + i as u64)));
    }
    pieces
}

/// Writes `pieces` to `path` one at a time, flushed, pausing `pause` after each but the last;
/// returns the moment the file was closed. Blocking.
fn write_slowly(path: &Path, pieces: &[Vec<u8>], pause: Duration) -> SystemTime {
    let mut file = std::fs::File::create(path).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        if i + 1 < pieces.len() {
            std::thread::sleep(pause);
        }
    }
    drop(file);
    SystemTime::now()
}

/// When the agent's log says `name` in `folder` was queued ("complete: ..."), from the line's
/// timestamp. The line names the file relative to its folder and the folder on its own.
fn queued_at(log: &str, folder: &Path, name: &str) -> Option<OffsetDateTime> {
    let file = format!("file={name} ");
    let folder = format!("folder={} ", folder.display());
    log.lines()
        .filter(|line| {
            line.contains(" complete: ") && line.contains(&file) && line.contains(&folder)
        })
        .find_map(|line| {
            let stamp = line.split_whitespace().next()?;
            OffsetDateTime::parse(stamp, &Rfc3339).ok()
        })
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
fn seconds_between(from: SystemTime, to: OffsetDateTime) -> f64 {
    (to - OffsetDateTime::from(from)).as_seconds_f64()
}

/// How the running agent says it watches `folder`, from `status --json`.
fn watch_mode<'a>(status: &'a Value, folder: &Path) -> Option<&'a Value> {
    status["folders"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == folder.to_string_lossy().as_ref())
}

async fn status_text(config: &Path) -> String {
    let output = run(hotfolder().arg("status").arg("--config").arg(config)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// `hotfolder run` with `config`; its stderr goes to `run-stderr.log` beside the config.
fn start_agent(config: &Path) -> (tokio::process::Child, PathBuf) {
    let stderr = config.with_file_name("run-stderr.log");
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (agent, stderr)
}

/// Waits until the agent's log holds `needle`.
async fn log_says(studio_log: impl Fn() -> String, needle: &str, limit: Duration) {
    eventually(limit, &format!("the log to say {needle:?}"), || {
        studio_log().contains(needle)
    })
    .await;
}

/// The network share: files written on the server side of an sshfs mount, slowly,
/// while the agent watches the mount (poll_interval unset: auto). Each is queued within
/// poll_interval + stable_for + 2 s of its writer closing it, never before it is complete
/// (the upload is byte-exact), and `status` says the share is polled. A local folder gets the
/// same writes, for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_on_the_far_side_of_an_sshfs_share_are_found_and_never_taken_early() {
    let Some(share) = LoopbackShare::start_or_skip() else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let local = std::fs::canonicalize(dir.path()).unwrap().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let stable_for = Duration::from_secs(3);
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"3s\"\n\n[[folder]]\npath = \"{}\"\nstable_for = \"3s\"\n",
        account_toml(&emulator, "keycloak"),
        share.mount.display(),
        local.display()
    );
    let config = write_config(dir.path(), &body);
    let (agent, stderr) = start_agent(&config);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    log_says(log, "mode=events (", Duration::from_secs(20)).await;
    let status = run(hotfolder()
        .args(["status", "--json", "--config"])
        .arg(&config))
    .await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let shown = watch_mode(&status, &share.mount).unwrap_or_else(|| panic!("{status}"));
    assert_eq!(
        shown["watch_mode"], "events + polling every 10 s (fuse.sshfs)",
        "{status}"
    );
    assert_eq!(shown["polling_every_seconds"], 10.0);
    assert_eq!(shown["network"], true);
    let shown = watch_mode(&status, &local).unwrap_or_else(|| panic!("{status}"));
    assert!(
        shown["watch_mode"]
            .as_str()
            .unwrap()
            .starts_with("events ("),
        "{status}"
    );
    assert_eq!(shown["polling_every_seconds"], Value::Null);
    let text = status_text(&config).await;
    assert!(
        text.contains(&format!(
            "watching   {}  events + polling every 10 s (fuse.sshfs)",
            share.mount.display()
        )),
        "{text}"
    );

    // Pauses shorter than stable_for, for longer than poll_interval + stable_for in all (a
    // writer on another machine exporting over the network): whenever the first poll sees the
    // file, it is still being written a quiet period later. Read through the attribute cache
    // the size would stay still between polls, and the file would be taken early.
    let pause = Duration::from_millis(1500);
    let names = ["first.mp4", "second.mp4"];
    let mut writers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let pieces = mp4_pieces(14, 150_000, i as u64 + 1);
        let data: Vec<u8> = pieces.concat();
        let on_server = share.server.join(name);
        let in_local = local.join(name);
        let local_pieces = pieces.clone();
        writers.push((
            name,
            data,
            tokio::task::spawn_blocking(move || write_slowly(&on_server, &pieces, pause)),
            tokio::task::spawn_blocking(move || write_slowly(&in_local, &local_pieces, pause)),
        ));
        // The second starts while the first is being written.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let limit = Duration::from_secs(10) + stable_for + Duration::from_secs(2);
    for (name, data, on_share, in_local) in writers {
        let share_done = on_share.await.unwrap();
        let local_done = in_local.await.unwrap();
        let done_on_server = share.server.join("done").join(name);
        let done_locally = local.join("done").join(name);
        eventually(
            Duration::from_secs(60),
            &format!("{name} in the share's done/"),
            || arrived(&done_on_server),
        )
        .await;
        eventually(
            Duration::from_secs(30),
            &format!("{name} in the local done/"),
            || arrived(&done_locally),
        )
        .await;
        let log = log();
        let from_share = queued_at(&log, &share.mount, name)
            .unwrap_or_else(|| panic!("no 'complete:' line for the share's {name}: {log}"));
        let from_local = queued_at(&log, &local, name)
            .unwrap_or_else(|| panic!("no 'complete:' line for the local {name}: {log}"));
        let share_took = seconds_between(share_done, from_share);
        let local_took = seconds_between(local_done, from_local);
        eprintln!(
            "{name}: writer's exit to queued: {share_took:.2} s on the sshfs share (auto poll \
             every 10 s, stable_for 3 s), {local_took:.2} s on the local disk (events, \
             stable_for 3 s)"
        );
        // The quiet period starts at the last write, whatever the file system: queued sooner,
        // the file was judged on attributes older than its last write.
        let quiet = stable_for.as_secs_f64() - 0.25;
        assert!(
            share_took >= quiet && local_took >= quiet,
            "queued less than stable_for after its writer finished: share {share_took:.2} s, \
             local {local_took:.2} s"
        );
        assert!(
            share_took <= limit.as_secs_f64(),
            "{name} on the share queued {share_took:.2} s after its writer finished (limit {limit:?})"
        );
        let sha = sha256_hex(&data);
        let videos: Vec<_> = emulator
            .videos()
            .into_iter()
            .filter(|v| v.file_name == *name)
            .collect();
        assert_eq!(videos.len(), 2, "one video per folder: {videos:?}");
        for video in videos {
            assert_eq!(video.sha256.as_deref(), Some(sha.as_str()), "byte-exact");
        }
        assert_eq!(sidecar(&done_on_server)["size"], data.len());
    }
    let (status, _) = stop(agent).await;
    assert!(status.success());
    drop(share);
}

/// `poll_interval` set on a local folder polls it: a share mounted inside the folder after the
/// watch started sends no event for the files written into it, and they are found all the
/// same; the same share in a folder watched with events only is not noticed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_poll_interval_finds_files_that_send_no_event() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let (polled, evented) = (base.join("polled"), base.join("evented"));
    for folder in [&polled, &evented] {
        std::fs::create_dir_all(folder.join("mnt")).unwrap();
    }
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\npoll_interval = \"1s\"\n\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n",
        account_toml(&emulator, "keycloak"),
        polled.display(),
        evented.display()
    );
    let config = write_config(&base, &body);
    let (agent, stderr) = start_agent(&config);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    log_says(log, "poll_interval set)", Duration::from_secs(20)).await;
    log_says(log, "mode=events (", Duration::from_secs(20)).await;
    // Mounted after the watch was set up: the watch is on the folder underneath.
    let Some(polled_share) = Tmpfs::mount(&polled.join("mnt"), "8m") else {
        hotfolder::test_skipped(format_args!("cannot mount a tmpfs here (needs root)"));
        return;
    };
    let Some(evented_share) = Tmpfs::mount(&evented.join("mnt"), "8m") else {
        hotfolder::test_skipped(format_args!("cannot mount a tmpfs here (needs root)"));
        return;
    };
    let data = mp4_pieces(2, 100_000, 7).concat();
    std::fs::write(polled.join("mnt/clip.mp4"), &data).unwrap();
    std::fs::write(evented.join("mnt/clip.mp4"), &data).unwrap();
    let written = Instant::now();
    let done = polled.join("done/mnt/clip.mp4");
    eventually(
        Duration::from_secs(15),
        "the polled folder's clip in done/",
        || arrived(&done),
    )
    .await;
    let took = written.elapsed();
    assert!(
        took < Duration::from_secs(1) + Duration::from_millis(300) + Duration::from_secs(4),
        "found {took:?} after it was written"
    );
    assert_eq!(
        sidecar(&done)["sha256"],
        sha256_hex(&data),
        "byte-exact upload"
    );
    assert!(
        evented.join("mnt/clip.mp4").exists() && !evented.join("done/mnt/clip.mp4").exists(),
        "the folder without polling noticed a file that sent no event: {:?}",
        emulator.videos()
    );
    let status = run(hotfolder()
        .args(["status", "--json", "--config"])
        .arg(&config))
    .await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let mode = watch_mode(&status, &polled).unwrap_or_else(|| panic!("{status}"));
    let mode = mode["watch_mode"].as_str().unwrap();
    assert!(
        mode.starts_with("events + polling every 1 s (") && mode.ends_with("; poll_interval set)"),
        "{mode}"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
    drop((polled_share, evented_share));
}

/// Whether this machine lets a process lower its own inotify limits in a user namespace of
/// its own (`/proc/sys/user/max_inotify_watches` is per user namespace since Linux 5.11): the
/// only way to meet the real limit without taking watches from every other program of the
/// same user, other tests included.
fn own_watch_limit_possible() -> Result<(), String> {
    if which("unshare").is_none() {
        return Err("unshare is not installed (util-linux)".into());
    }
    let tried = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 3 > /proc/sys/user/max_inotify_watches")
        .output()
        .map_err(|err| format!("cannot run unshare: {err}"))?;
    if !tried.status.success() {
        return Err(format!(
            "cannot lower the inotify watch limit in a user namespace: {}",
            text(&tried.stderr).trim()
        ));
    }
    Ok(())
}

/// The system's inotify watch limit, met for real (lowered to 6 watches in the agent's own
/// user namespace): a folder whose tree needs more is polled instead of refused, a folder
/// whose new subfolder cannot be watched is polled as well, each said once as a warning, and
/// `status` and `check` name the sysctl to raise. Files in both are found. Once the limit is
/// raised, the folder that was only polled is watched with events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_limit_makes_folders_poll_and_names_the_sysctl() {
    if let Err(why) = own_watch_limit_possible() {
        hotfolder::test_skipped(format_args!("{why}"));
        return;
    }
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    // 7 watches (the folder, done/, failed/, and the agent's .hotfolder/ with agents/, claims/
    // and claims/<agent>/) of the 10, then new subfolders at run time.
    let growing = base.join("growing");
    std::fs::create_dir_all(&growing).unwrap();
    // 17 watches: never fits.
    let big = base.join("big");
    for i in 0..10 {
        std::fs::create_dir_all(big.join(format!("day-{i}"))).unwrap();
    }
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n",
        account_toml(&emulator, "keycloak"),
        growing.display(),
        big.display()
    );
    let config = write_config(&base, &body);
    for sub in ["done", "failed"] {
        std::fs::create_dir_all(growing.join(sub)).unwrap();
        std::fs::create_dir_all(big.join(sub)).unwrap();
    }
    let stderr = base.join("run-stderr.log");
    let agent = in_own_user_namespace(10)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    log_says(log, "mode=events (", Duration::from_secs(20)).await;
    log_says(
        log,
        "the folder cannot be watched with events",
        Duration::from_secs(20),
    )
    .await;
    // Three more subfolders fit, the fourth does not.
    for i in 1..=4 {
        std::fs::create_dir(growing.join(format!("shoot-{i}"))).unwrap();
    }
    log_says(
        log,
        "some of its subfolders cannot be watched with events",
        Duration::from_secs(10),
    )
    .await;
    let data = mp4_pieces(2, 100_000, 9).concat();
    std::fs::write(growing.join("shoot-4/clip.mp4"), &data).unwrap();
    std::fs::write(big.join("day-3/clip.mp4"), &data).unwrap();
    let written = Instant::now();
    for done in [
        growing.join("done/shoot-4/clip.mp4"),
        big.join("done/day-3/clip.mp4"),
    ] {
        eventually(
            Duration::from_secs(20),
            &format!("{}", done.display()),
            || arrived(&done),
        )
        .await;
        assert_eq!(sidecar(&done)["sha256"], sha256_hex(&data));
    }
    let took = written.elapsed();
    assert!(
        took <= Duration::from_secs(10) + Duration::from_millis(300) + Duration::from_secs(2),
        "found {took:?} after they were written (polled every 10 s)"
    );

    let logged = log();
    for (what, folder) in [
        ("the folder cannot be watched", &big),
        ("some of its subfolders cannot be watched", &growing),
    ] {
        let warnings: Vec<&str> = logged
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(what))
            .collect();
        assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
        assert!(
            warnings[0].contains(&folder.display().to_string())
                && warnings[0].contains("fs.inotify.max_user_watches"),
            "{}",
            warnings[0]
        );
    }
    assert!(
        !logged.contains(" ERROR "),
        "a limit is not an error: {logged}"
    );

    let status = run(hotfolder()
        .args(["status", "--json", "--config"])
        .arg(&config))
    .await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let big_mode = watch_mode(&status, &big).unwrap_or_else(|| panic!("{status}"));
    assert_eq!(big_mode["events"], false, "{status}");
    assert_eq!(big_mode["polling_every_seconds"], 10.0);
    assert_eq!(
        big_mode["watch_limit_sysctl"],
        "fs.inotify.max_user_watches"
    );
    let growing_mode = watch_mode(&status, &growing).unwrap_or_else(|| panic!("{status}"));
    assert_eq!(growing_mode["events"], true, "{status}");
    assert_eq!(
        growing_mode["watch_limit_sysctl"],
        "fs.inotify.max_user_watches"
    );
    let shown = status_text(&config).await;
    let line = shown
        .lines()
        .find(|l| l.starts_with("watching") && l.contains(&big.display().to_string()))
        .unwrap_or_else(|| panic!("{shown}"));
    eprintln!("status says: {line}");
    assert!(
        line.contains("polling every 10 s")
            && line.contains("sudo sysctl -w fs.inotify.max_user_watches="),
        "{line}"
    );

    // `check` watches as `run` does, under the same limit, and says the same.
    let checked = run(in_own_user_namespace(6)
        .arg("check")
        .arg("--config")
        .arg(&config))
    .await;
    let out = text(&checked.stdout);
    assert!(checked.status.success(), "{out}{}", text(&checked.stderr));
    let line = out
        .lines()
        .find(|l| l.starts_with("folder[2]"))
        .unwrap_or_else(|| panic!("{out}"));
    eprintln!("check says: {line}");
    assert!(
        line.contains("is watched with polling every 10 s")
            && line.contains("fs.inotify.max_user_watches"),
        "{line}"
    );

    // Raised as advised (in the agent's namespace): events again, without a restart.
    let pid = agent.id().unwrap().to_string();
    let raised = Command::new("nsenter")
        .args(["--user", "--target", &pid, "sh", "-c"])
        .arg("echo 100 > /proc/sys/user/max_inotify_watches")
        .output();
    match raised {
        Ok(raised) if raised.status.success() => {
            log_says(
                log,
                "the system's watch limit no longer stops events",
                Duration::from_secs(10),
            )
            .await;
            let status = run(hotfolder()
                .args(["status", "--json", "--config"])
                .arg(&config))
            .await;
            let status: Value = serde_json::from_slice(&status.stdout).unwrap();
            let big_mode = watch_mode(&status, &big).unwrap_or_else(|| panic!("{status}"));
            assert_eq!(big_mode["events"], true, "{status}");
            assert_eq!(big_mode["watch_limit_sysctl"], Value::Null, "{status}");
            assert_eq!(big_mode["polling_every_seconds"], Value::Null, "{status}");
        }
        other => eprintln!("not checked: raising the limit in the agent's namespace: {other:?}"),
    }
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// `hotfolder` in a user namespace of its own whose inotify watch limit is `watches`.
fn in_own_user_namespace(watches: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo {watches} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_hotfolder"))
        .env_remove("HOTFOLDER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .kill_on_drop(true);
    command
}

/// The kernel's event queue overflows while the agent cannot read it (stopped with SIGSTOP
/// while more changes than `fs.inotify.max_queued_events` happen): once it runs again, the
/// folder is walked at once, with one warning, and the export whose events were dropped is
/// uploaded (not 5 minutes later at the periodic rescan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queue_overflow_is_walked_at_once_with_one_warning() {
    let max_queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    if max_queued == 0 || max_queued > 200_000 {
        hotfolder::test_skipped(format_args!(
            "fs.inotify.max_queued_events is {max_queued} here: too many files to \
             overflow it in a test (or no inotify)"
        ));
        return;
    }
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    log_says(|| studio.log_text(), "mode=events", Duration::from_secs(20)).await;
    signal(&agent, libc::SIGSTOP);
    // Each empty file costs three events (create, open, close after writing).
    let noise = max_queued / 2 + 100;
    for i in 0..noise {
        std::fs::File::create(studio.inbox.join(format!("noise-{i}.txt"))).unwrap();
    }
    let data = mp4_pieces(2, 100_000, 11).concat();
    std::fs::write(studio.inbox.join("lost.mp4"), &data).unwrap();
    signal(&agent, libc::SIGCONT);
    let continued = Instant::now();
    let done = studio.done().join("lost.mp4");
    eventually(Duration::from_secs(20), "lost.mp4 in done/", || {
        arrived(&done)
    })
    .await;
    eprintln!(
        "after an overflow ({noise} files, max_queued_events {max_queued}): lost.mp4 done {:?} \
         after the agent ran again",
        continued.elapsed()
    );
    assert_eq!(sidecar(&done)["sha256"], sha256_hex(&data));
    let log = studio.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("dropped change events"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    assert!(
        warnings[0].contains("fs.inotify.max_queued_events"),
        "{}",
        warnings[0]
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Hostile test of issue 11, D5: an unmounted share leaves its empty mount point behind; the
/// folder must be reported missing (FOLDER MISSING in status), not watched as a new, empty,
/// local folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmounted_share_is_a_missing_folder_not_an_empty_local_one() {
    let Some(mut share) = LoopbackShare::start_or_skip() else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"1s\"\n",
        account_toml(&emulator, "keycloak"),
        share.mount.display(),
    );
    let config = write_config(dir.path(), &body);
    let (agent, stderr) = start_agent(&config);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    log_says(log, "fuse.sshfs", Duration::from_secs(20)).await;

    assert!(share.unmount(), "the share could be unmounted");
    log_says(log, "is not mounted", Duration::from_secs(20)).await;
    let status = run(hotfolder()
        .args(["status", "--json", "--config"])
        .arg(&config))
    .await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let missing = status["missing_folders"].to_string();
    assert!(missing.contains("not mounted"), "{status}");
    assert!(!log().contains("watching the new one"), "{}", log());
    stop(agent).await;
}

/// A share whose connection drops in the middle of an upload and comes back (sshd's sessions
/// killed, the share mounted again) costs neither the file nor a second video: reading fails
/// for a while, the upload waits until the file can be read and is stable, then sends it to
/// the same video. Nothing goes to failed/, and no other agent is blamed (hostile test: the
/// claim record's read error was taken for a takeover, and a read error failed the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_that_drops_mid_upload_and_comes_back_uploads_its_file_once_to_one_video() {
    share_drops_mid_upload_and_comes_back("").await;
}

/// The same with `shared = true`: the file waits in its claim folder, claimed, and goes on to
/// the same video (it must not go back to the folder as a changed file, a new video).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folders_share_that_drops_mid_upload_uploads_its_file_once_to_one_video() {
    share_drops_mid_upload_and_comes_back("shared = true\nclaim_lease = \"4s\"").await;
}

async fn share_drops_mid_upload_and_comes_back(extra: &str) {
    let Some(mut share) = LoopbackShare::start_or_skip() else {
        return;
    };
    // 4 MiB/s: the 12 MiB file takes about 3 s, time to drop the share in the middle.
    let emulator = emulator(|o| o.link_rate = Some(4 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"1s\"\npoll_interval = \"1s\"\n{extra}\n",
        account_toml(&emulator, "keycloak"),
        share.mount.display(),
    );
    let config = write_config(dir.path(), &body);
    let (agent, stderr) = start_agent(&config);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    log_says(
        log,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    let sha = write_file(&share.server.join("clip.mp4"), 12 << 20, 77);

    eventually(Duration::from_secs(30), "3 chunks accepted", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 3)
    })
    .await;
    share.cut();
    let cut = Instant::now();
    // Reads through the dead mount fail ("cannot read") or come up short ("changed"):
    // either way the upload waits.
    while !log().contains("waiting until it is stable, then sending it again") {
        assert!(
            cut.elapsed() < Duration::from_secs(20),
            "the upload notices the share is gone: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    share.remount();

    let back = Instant::now();
    while !arrived(&share.server.join("done/clip.mp4")) {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "clip.mp4 in done/ once the share is back: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "one video for the file: {videos:?}");
    assert!(videos[0].complete, "{videos:?}");
    assert_eq!(videos[0].sha256.as_deref(), Some(sha.as_str()));
    let sidecar = sidecar(&share.server.join("done/clip.mp4"));
    assert_eq!(sidecar["video_id"], videos[0].id.as_str(), "{sidecar}");
    assert_eq!(sidecar["sha256"], sha.as_str(), "{sidecar}");
    assert!(
        !share.server.join("failed").exists()
            || std::fs::read_dir(share.server.join("failed"))
                .unwrap()
                .next()
                .is_none(),
        "nothing in failed/"
    );
    let log = log();
    assert!(!log.contains("another agent took it over"), "{log}");
    assert!(!log.contains("forgetting it"), "{log}");
    stop(agent).await;
}
