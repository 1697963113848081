//! Moving files to done/ and failed/ as the agent does it, through the real binary: names that
//! are taken (long ones too), a kill between the move and its record, and moves that copy
//! across file systems while the agent must keep answering its service manager.

use std::path::Path;
use std::time::Duration;

use hotfolder::Emulator;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

fn videos_named(emulator: &Emulator, file_name: &str) -> Vec<hotfolder::VideoRecord> {
    emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect()
}

/// Names in `dir` (not recursive), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A file exported twice under a 252-byte name: the second can only be numbered if the number
/// is fitted into the 255-byte limit, else its move fails ("File name too long") for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_name_already_taken_in_done_is_numbered_within_the_name_limit() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let name = format!("{}.mov", "Final_Cut_".repeat(25).split_at(248).0);
    assert_eq!(name.len(), 252);
    let agent = studio.start();
    let path = studio.inbox.join(&name);
    let sidecars = |studio: &Studio| {
        names_in(&studio.done())
            .into_iter()
            .filter(|n| n.ends_with(".upload.json"))
            .count()
    };
    let mut exports = Vec::new();
    for round in 0..3u64 {
        let data = export(&path, 1000 + round as usize, 90 + round);
        std::fs::write(&path, &data).unwrap();
        exports.push(data);
        eventually(WAIT, &format!("export {round} delivered"), || {
            sidecars(&studio) == round as usize + 1 && !path.exists()
        })
        .await;
    }
    let delivered: Vec<String> = names_in(&studio.done())
        .into_iter()
        .filter(|n| !n.ends_with(".upload.json"))
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for (round, data) in exports.iter().enumerate() {
        let file = if round == 0 {
            name.clone()
        } else {
            let wanted = format!(" ({round}).mov");
            delivered
                .iter()
                .find(|n| n.ends_with(&wanted))
                .unwrap_or_else(|| panic!("no name ending in {wanted:?}: {delivered:?}"))
                .clone()
        };
        assert!(file.len() <= 255, "{file}");
        assert!(file.starts_with("Final_Cut_"), "{file}");
        assert_eq!(&std::fs::read(studio.done().join(&file)).unwrap(), data);
    }
    let log = studio.log_text();
    assert!(!log.contains("too long"), "{log}");
    assert!(!log.contains("tried again every"), "{log}");
    assert_eq!(videos_named(&emulator, &name).len(), 3);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// The job row of the one job in the state store, as the test reads it from the SQLite file.
struct StoredJob {
    state: String,
    size: u64,
    video_id: Option<String>,
    sha256: Option<String>,
    started_at: Option<String>,
}

fn stored_jobs(studio: &Studio) -> Vec<StoredJob> {
    let db = studio.dir.path().join("state/jobs.sqlite3");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut statement = conn
        .prepare("SELECT state, size, video_id, sha256, started_at FROM jobs ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok(StoredJob {
                state: row.get(0)?,
                size: row.get(1)?,
                video_id: row.get(2)?,
                sha256: row.get(3)?,
                started_at: row.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A kill after the file was moved to done/ and its sidecar written, before the store recorded
/// the end: after the restart the job is done (not "gone" with a warning) and nothing moves
/// again. Simulated by hand: an agent whose move fails leaves the job finishing; the test then
/// moves the file and writes the sidecar as the agent would have, and restarts the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_move_and_its_record_ends_the_job_as_done() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    std::fs::write(studio.done(), b"in the way").unwrap();
    let agent = studio.start();
    let path = studio.inbox.join("clip.mov");
    let data = export(&path, 1500, 15);
    std::fs::write(&path, &data).unwrap();
    eventually(WAIT, "the failed move logged", || {
        studio.log_text().contains("tried again every")
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let jobs = stored_jobs(&studio);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.state, "finishing");
    std::fs::remove_file(studio.done()).unwrap();
    std::fs::create_dir(studio.done()).unwrap();
    let moved = studio.done().join("clip.mov");
    std::fs::rename(&path, &moved).unwrap();
    // The stored start time is RFC 3339 text already, as the sidecar writes it.
    let sidecar_text = serde_json::json!({
        "file": "clip.mov",
        "size": job.size,
        "sha256": job.sha256,
        "status": "uploaded",
        "video_id": job.video_id,
        "error": null,
        "chunks": 1,
        "chunk_size": MIB,
        "attempts": 1,
        "started_at": job.started_at,
        "finished_at": job.started_at,
        "bytes_per_second": null,
        "events": [],
    });
    std::fs::write(sidecar_of(&moved), sidecar_text.to_string()).unwrap();

    let agent = studio.start();
    eventually(WAIT, "the job done", || {
        stored_jobs(&studio)[0].state == "done"
    })
    .await;
    let log = studio.log_text();
    assert!(!log.contains("removed from the folder"), "{log}");
    assert_eq!(
        names_in(&studio.done()),
        ["clip.mov", "clip.mov.upload.json"]
    );
    assert_eq!(std::fs::read(&moved).unwrap(), data);
    // The agent completed the sidecar: its events now include the move.
    let written = sidecar(&moved);
    assert_eq!(written["video_id"], job.video_id.clone().unwrap().as_str());
    assert!(
        written["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "moved"),
        "{written}"
    );
    let status = studio.status_json().await;
    assert_eq!(status["summary"]["done"], 1, "{status}");
    assert_eq!(status["summary"]["finishing"], 0, "{status}");
    assert_eq!(videos_named(&emulator, "clip.mov").len(), 1);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// A directory on another file system than the temp dir (/dev/shm), removed on drop; `None`
/// where there is no such thing.
struct OtherFileSystem(std::path::PathBuf);

impl OtherFileSystem {
    fn make() -> Option<OtherFileSystem> {
        use std::os::unix::fs::MetadataExt;
        let dir = std::path::PathBuf::from(format!(
            "/dev/shm/hotfolder-finish-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let here = tempfile::tempdir().ok()?;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let other = OtherFileSystem(dir);
        (dev(&other.0).is_some() && dev(&other.0) != dev(here.path())).then_some(other)
    }
}

impl Drop for OtherFileSystem {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `hotfolder run` with systemd's notify socket and watchdog (ping every 200 ms), and every
/// copy across file systems made 3 s slower (a NAS), its stderr appended to the studio's log.
fn start_notified(studio: &Studio, notify: &NotifySocket) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(studio.stderr_log())
        .unwrap();
    // systemd names the watched process in WATCHDOG_PID; without it the watchdog is off. A
    // shell that puts its own pid there and then becomes hotfolder (exec keeps the pid) does
    // what systemd does.
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hotfolder"))
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env_remove("HOTFOLDER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .env("HOTFOLDER_TEST_SLOW_COPY", "3000")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    command.spawn().expect("hotfolder run starts")
}

/// The longest time between two watchdog pings from `from` on.
fn longest_watchdog_gap(notify: &NotifySocket, from: std::time::Instant) -> Duration {
    let pings: Vec<std::time::Instant> = notify
        .messages()
        .into_iter()
        .filter(|(at, m)| *at >= from && m.contains("WATCHDOG=1"))
        .map(|(at, _)| at)
        .collect();
    let last = pings.last().copied().unwrap_or(from);
    pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([std::time::Instant::now() - last])
        .max()
        .unwrap_or_default()
}

/// A move to a done_dir on another file system is a copy, and at NAS speed a long one. It must
/// not hold up the loop that answers systemd's watchdog (a retried move), nor READY (a move
/// resumed at start), nor a stop (the copy stops; the next start moves the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_copy_to_done_delays_neither_ready_nor_the_watchdog_nor_a_stop() {
    let Some(other) = OtherFileSystem::make() else {
        hotfolder::test_skipped(format_args!(
            "a_slow_copy_to_done_delays_neither_ready_nor_the_watchdog_nor_a_stop: \
             /dev/shm is missing or on the same file system as the temp dir"
        ));
        return;
    };
    let emulator = emulator(|_| {}).await;
    let done = other.0.join("done");
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &format!("{QUICK}\ndone_dir = \"{}\"", done.display()),
    );
    let copying = |studio: &Studio| {
        studio
            .log_text()
            .matches("copying to another file system")
            .count()
    };

    // 1. A move that failed (done_dir blocked) is retried by the intake's loop: the copy then
    //    runs beside it, and the watchdog keeps being answered.
    std::fs::write(&done, b"in the way").unwrap();
    let notify = NotifySocket::bind(studio.dir.path());
    let agent = start_notified(&studio, &notify);
    let one = studio.inbox.join("one.mov");
    let one_data = export(&one, 2 * MIB, 81);
    std::fs::write(&one, &one_data).unwrap();
    eventually(WAIT, "the failed move logged", || {
        studio.log_text().contains("tried again every")
    })
    .await;
    std::fs::remove_file(&done).unwrap();
    let unblocked = std::time::Instant::now();
    eventually(WAIT, "one.mov delivered by a retried move", || {
        arrived(&done.join("one.mov"))
    })
    .await;
    assert_eq!(copying(&studio), 1, "{}", studio.log_text());
    let gap = longest_watchdog_gap(&notify, unblocked);
    eprintln!("retried move with a 3 s copy: longest watchdog gap {gap:?}");
    assert!(
        gap < Duration::from_secs(1),
        "watchdog silent for {gap:?}\n{}",
        studio.log_text()
    );
    assert_eq!(std::fs::read(done.join("one.mov")).unwrap(), one_data);

    // 2. A stop during a copy is prompt; the file stays in the inbox, no partial copy is left.
    let two = studio.inbox.join("two.mov");
    let two_data = export(&two, MIB + 7, 82);
    std::fs::write(&two, &two_data).unwrap();
    eventually(WAIT, "two.mov's copy started", || copying(&studio) == 2).await;
    let (status, took) = stop(agent).await;
    eprintln!("stop during a copy took {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(2),
        "the stop waited {took:?} for the copy"
    );
    assert_eq!(std::fs::read(&two).unwrap(), two_data);
    assert_eq!(names_in(&done), ["one.mov", "one.mov.upload.json"]);
    drop(notify);

    // 3. The next start resumes that move, and says READY at once, not after the copy.
    std::fs::remove_file(studio.dir.path().join("notify.sock")).unwrap();
    let notify = NotifySocket::bind(studio.dir.path());
    let spawned = std::time::Instant::now();
    let agent = start_notified(&studio, &notify);
    eventually(WAIT, "READY", || notify.first("READY=1").is_some()).await;
    let ready_after = notify.first("READY=1").unwrap() - spawned;
    eventually(WAIT, "two.mov delivered by the resumed move", || {
        arrived(&done.join("two.mov"))
    })
    .await;
    let delivered_after = spawned.elapsed();
    let gap = longest_watchdog_gap(&notify, spawned + ready_after);
    eprintln!(
        "start with a move to resume: READY after {ready_after:?}, delivered after {delivered_after:?}, longest watchdog gap {gap:?}"
    );
    assert!(
        ready_after < Duration::from_millis(1500),
        "READY after {ready_after:?}"
    );
    assert!(delivered_after > Duration::from_secs(3));
    assert!(gap < Duration::from_secs(1), "watchdog silent for {gap:?}");
    assert_eq!(std::fs::read(done.join("two.mov")).unwrap(), two_data);
    assert_eq!(videos_named(&emulator, "two.mov").len(), 1);
    assert_eq!(videos_named(&emulator, "one.mov").len(), 1);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}
