//! The state store under `hotfolder run`, through the real binary: a full disk under it, the
//! database deleted while the agent runs, and what it keeps (no upload-URL tokens of finished
//! jobs, no finished jobs older than `keep_jobs_for`). The tests read the SQLite file directly,
//! as an admin with `sqlite3` would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotfolder::Emulator;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn videos_named(emulator: &Emulator, file_name: &str) -> Vec<hotfolder::VideoRecord> {
    emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect()
}

pub(crate) fn state_dir(studio: &Studio) -> PathBuf {
    studio.dir.path().join("state")
}

/// Runs `sql` on the store's database, read-only (the agent may be running: WAL readers do
/// not block it); no rows while the agent has not made the database yet.
fn query<T>(studio: &Studio, sql: &str, read: impl Fn(&rusqlite::Row<'_>) -> T) -> Vec<T> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        state_dir(studio).join("jobs.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let Ok(mut statement) = conn.prepare(sql) else {
        return Vec::new();
    };
    statement
        .query_map([], |row| Ok(read(row)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `hotfolder run` with extra environment, its stderr appended to the studio's log.
pub(crate) fn start_with_env(
    studio: &Studio,
    env: &[(&str, &std::ffi::OsStr)],
) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(studio.stderr_log())
        .unwrap();
    let mut command = hotfolder();
    command
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("hotfolder run starts")
}

/// CPU seconds (user + system) a process has used so far, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}

/// The state dir on a small file system that fills up while the agent runs, mid-upload: no
/// flood of log lines and no busy loop, the reason in `status` and in STATUS=, a restart while
/// the disk is still full works, and once space is back every file is delivered by itself,
/// once, with nothing left "uploading". Needs a tmpfs (root); skipped with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_state_store_pauses_quietly_and_resumes_by_itself() {
    // Every request waits 150 ms: an upload of 6 chunks is still running when the disk fills.
    let emulator = emulator(|o| {
        o.faults = hotfolder::Faults {
            seed: 3,
            stall_rate: 1.0,
            stall: Duration::from_millis(150),
            ..Default::default()
        };
    })
    .await;
    let upload = FAST_UPLOAD.replace("parallel = 2", "parallel = 1");
    let studio = Studio::new(&emulator, &upload, QUICK);
    let Some(tmpfs) = Tmpfs::mount(&state_dir(&studio), "4m") else {
        hotfolder::test_skipped(format_args!(
            "a_full_disk_under_the_state_store_pauses_quietly_and_resumes_by_itself: \
             mounting a tmpfs for the state dir needs root (or CAP_SYS_ADMIN)"
        ));
        return;
    };
    let agent = studio.start();
    let big = studio.inbox.join("big.mov");
    let big_data = export(&big, 6 * MIB, 51);
    std::fs::write(&big, &big_data).unwrap();
    eventually(WAIT, "big.mov's upload under way", || {
        videos_named(&emulator, "big.mov")
            .first()
            .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;

    let filler = tmpfs.fill("filler");
    let small = studio.inbox.join("small.mov");
    let small_data = export(&small, 5000, 52);
    std::fs::write(&small, &small_data).unwrap();
    eventually(WAIT, "the pause logged", || {
        studio
            .log_text()
            .contains("uploads paused: the state store cannot be written")
    })
    .await;

    // Three seconds of a full disk: a handful of lines at most, and an idle process.
    let pid = agent.id().unwrap();
    let lines_before = studio.log_text().lines().count();
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = studio.log_text().lines().count() - lines_before;
    let cpu = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    eprintln!("full disk, 3 s: {lines} log line(s), {cpu:?} CPU seconds");
    assert!(lines <= 5, "{lines} lines in 3 s:\n{}", studio.log_text());
    if let Some(cpu) = cpu {
        assert!(cpu < 0.5, "{cpu} CPU seconds in 3 s");
    }
    let log = studio.log_text();
    assert_eq!(
        log.matches("uploads paused: the state store").count(),
        1,
        "{log}"
    );
    assert!(log.contains("full"), "{log}");
    let status = studio.status_json().await;
    let reason = status["queue_paused"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("state store cannot be written") && reason.contains("full"),
        "{status}"
    );
    assert!(big.exists() && small.exists(), "nothing moved meanwhile");

    // A stop while the disk is full, and a start on it: both work.
    let (stopped, took) = stop(agent).await;
    assert!(stopped.success(), "{stopped:?}");
    assert!(took < Duration::from_secs(12), "{took:?}");
    let notify = NotifySocket::bind(studio.dir.path());
    let agent = start_with_env(
        &studio,
        &[
            ("NOTIFY_SOCKET", notify.path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("400000")),
        ],
    );
    let start = Instant::now();
    loop {
        let text = notify.text();
        if text.contains("READY=1") && text.contains("PAUSED: the state store cannot be written") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "READY and the reason on STATUS=:\n{text}\n{}",
            studio.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Space comes back: everything resumes without anyone touching the agent.
    std::fs::remove_file(&filler).unwrap();
    let resumed = Instant::now();
    eventually(WAIT, "both files delivered", || {
        arrived(&studio.done().join("big.mov")) && arrived(&studio.done().join("small.mov"))
    })
    .await;
    eprintln!(
        "delivered {:.1} s after space came back",
        resumed.elapsed().as_secs_f64()
    );
    assert!(
        studio.log_text().contains("can be written again"),
        "{}",
        studio.log_text()
    );
    assert_eq!(
        std::fs::read(studio.done().join("big.mov")).unwrap(),
        big_data
    );
    assert_eq!(
        std::fs::read(studio.done().join("small.mov")).unwrap(),
        small_data
    );
    for name in ["big.mov", "small.mov"] {
        let videos = videos_named(&emulator, name);
        assert_eq!(videos.len(), 1, "{name}: {videos:?}");
        let written = sidecar(&studio.done().join(name));
        assert_eq!(written["video_id"], videos[0].id.as_str(), "{written}");
        assert_eq!(written["status"], "uploaded");
    }
    let status = studio.status_json().await;
    assert_eq!(status["summary"]["uploading"], 0, "{status}");
    assert_eq!(status["summary"]["waiting"], 0, "{status}");
    assert_eq!(status["summary"]["done"], 2, "{status}");
    assert!(status["queue_paused"].is_null(), "{status}");
    let (stopped, _) = stop(agent).await;
    assert!(stopped.success());
    drop(tmpfs);
}

/// The database, or the whole state dir, deleted under a running agent: it stops with exit 1
/// (for the service manager to restart it) instead of carrying on where no one can see, and a
/// new agent then works on a fresh store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_store_deleted_while_running_stops_the_agent_for_a_restart() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    for (round, delete) in ["the database", "the whole state dir", "the lock file"]
        .into_iter()
        .enumerate()
    {
        let mut agent = studio.start();
        let name = format!("clip{round}.mov");
        write_file(&studio.inbox.join(&name), 1000, 60 + round as u64);
        eventually(WAIT, &format!("{name} delivered"), || {
            arrived(&studio.done().join(&name))
        })
        .await;
        let state = state_dir(&studio);
        match delete {
            "the database" => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(state.join(format!("jobs.sqlite3{suffix}")));
                }
            }
            "the whole state dir" => std::fs::remove_dir_all(&state).unwrap(),
            _ => std::fs::remove_file(state.join("hotfolder.lock")).unwrap(),
        }
        let deleted = Instant::now();
        let status = tokio::time::timeout(WAIT, agent.wait())
            .await
            .unwrap_or_else(|_| panic!("the agent exits once {delete} is deleted"))
            .unwrap();
        let took = deleted.elapsed();
        eprintln!("{delete} deleted: exit {status:?} after {took:?}");
        assert_eq!(status.code(), Some(1), "{delete}: {}", studio.log_text());
        assert!(took < Duration::from_secs(10), "{delete}: {took:?}");
        let log = studio.log_text();
        assert!(
            log.contains("was deleted while hotfolder was running")
                && log.contains("restarts hotfolder"),
            "{delete}: {log}"
        );
    }
    // What the service manager then does: a new agent works as usual.
    let agent = studio.start();
    write_file(&studio.inbox.join("after.mov"), 1000, 69);
    eventually(WAIT, "after.mov delivered", || {
        arrived(&studio.done().join("after.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Every file under `dir`, read whole.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in files_under(dir) {
        if let Ok(more) = std::fs::read(dir.join(name)) {
            bytes.extend(more);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// An upload-URL `__token__` is a credential: the store holds one only while the upload runs,
/// nowhere in its files once the job is done. A job finished longer ago than `keep_jobs_for`
/// is deleted at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_keeps_no_upload_token_and_old_ones_are_pruned() {
    let emulator = emulator(|o| {
        o.faults = hotfolder::Faults {
            seed: 4,
            stall_rate: 1.0,
            stall: Duration::from_millis(100),
            ..Default::default()
        };
        // Several URLs per file: renewals replace the first, and none may linger.
        o.url_max_chunks = Some(2);
    })
    .await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    let path = studio.inbox.join("clip.mov");
    write_file(&path, 5 * MIB, 70);
    // While it uploads, the URL is there: what the test reads is what the agent wrote.
    let mut seen_while_uploading = false;
    let start = Instant::now();
    while !arrived(&studio.done().join("clip.mov")) {
        assert!(start.elapsed() < WAIT, "clip.mov delivered");
        let urls = query(
            &studio,
            "SELECT upload_url FROM jobs WHERE upload_url IS NOT NULL",
            |row| row.get::<_, String>(0).unwrap(),
        );
        if urls.iter().any(|url| url.contains("__token__=")) {
            seen_while_uploading = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_while_uploading,
        "the upload URL was never seen in the store"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let urls = query(
        &studio,
        "SELECT COUNT(*) FROM jobs WHERE upload_url IS NOT NULL OR url_issued_at IS NOT NULL",
        |row| row.get::<_, i64>(0).unwrap(),
    );
    assert_eq!(urls, [0]);
    let secrets = emulator.issued_secrets();
    assert!(secrets.len() >= 3, "{secrets:?}");
    let files = bytes_under(&state_dir(&studio));
    for secret in &secrets {
        assert!(
            !contains(&files, secret),
            "a token in the state dir: {secret}"
        );
    }

    // A job finished 100 days ago (the default keeps 90): gone after the next start.
    let conn = rusqlite::Connection::open(state_dir(&studio).join("jobs.sqlite3")).unwrap();
    conn.execute(
        "UPDATE jobs SET updated_at = '2000-01-01T00:00:00.000000000Z'",
        [],
    )
    .unwrap();
    drop(conn);
    write_file(&studio.inbox.join("recent.mov"), 1000, 71);
    let agent = studio.start();
    eventually(WAIT, "recent.mov delivered", || {
        arrived(&studio.done().join("recent.mov"))
    })
    .await;
    eventually(WAIT, "the old job pruned", || {
        query(&studio, "SELECT rel_path FROM jobs", |row| {
            row.get::<_, String>(0).unwrap()
        }) == ["recent.mov"]
    })
    .await;
    let events = query(
        &studio,
        "SELECT COUNT(*) FROM events WHERE job_id NOT IN (SELECT id FROM jobs)",
        |row| row.get::<_, i64>(0).unwrap(),
    );
    assert_eq!(events, [0]);
    assert!(
        studio
            .log_text()
            .contains("removed 1 job(s) that finished more than"),
        "{}",
        studio.log_text()
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
    // The file it delivered is of course still in done/.
    assert!(studio.done().join("clip.mov").exists());
}
