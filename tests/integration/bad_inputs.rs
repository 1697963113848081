//! A catalogue of bad inputs, each with its expected outcome: broken configs through the real
//! binary, hostile file-system situations through `hotfolder run`, and misbehaving servers
//! (tiny canned HTTP servers on 127.0.0.1) through the upload engine. Every case asserts a
//! clear message, a defined place for the file, and that nothing panicked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotfolder::Emulator;
use hotfolder::Settings;
use hotfolder::{Blame, Step, VmproError};
use hotfolder::{Platform, Unobserved, VideoMetadata};
use hotfolder::{ResumePoint, UploadReport, UploadRequest, upload_file};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

/// Fast retries and a short request timeout, so a hanging server costs a second, not minutes.
fn upload_toml() -> String {
    FAST_UPLOAD.replace("request_timeout = \"2s\"", "request_timeout = \"1s\"")
}

fn assert_no_panic(what: &str, text: &str) {
    assert!(!text.contains("panicked"), "{what} panicked:\n{text}");
}

/// The effective user id, from /proc (no libc in the dev-dependencies).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn skip(test: &str, why: &str) {
    hotfolder::test_skipped(format_args!("{test}: {why}"));
}

fn videos_named(emulator: &Emulator, file_name: &str) -> Vec<hotfolder::VideoRecord> {
    emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect()
}

async fn chunks_arrived(emulator: &Emulator, at_least: u32) {
    eventually(WAIT, "the first chunks arrived", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= at_least)
    })
    .await;
}

/// Stops the agent, expecting a clean exit and a log without panics.
async fn stop_cleanly(studio: &Studio, agent: tokio::process::Child) {
    let (status, _) = stop(agent).await;
    let log = studio.log_text();
    assert_no_panic("hotfolder run", &log);
    assert!(status.success(), "exit {status:?}\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Config edge cases, through the binary: `check` and `run` both exit 2 and name the key.

/// Runs `hotfolder <command> --config <config>` and returns (exit code, stdout + stderr).
async fn with_config(command: &str, config: &Path, cwd: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = hotfolder();
    cmd.arg(command).arg("--config").arg(config);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let output = run(&mut cmd).await;
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_no_panic(&format!("hotfolder {command}"), &all);
    (output.status.code(), all)
}

/// Writes `body` as the config in a fresh dir with an `inbox/` folder; both commands must
/// refuse it with exit 2 and a message containing every one of `expected`.
async fn refused(case: &str, body: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inbox/done/nested")).unwrap();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, body).unwrap();
    for command in ["check", "run"] {
        let (code, output) = with_config(command, &config, None).await;
        assert_eq!(code, Some(2), "{case}: `{command}` exit code\n{output}");
        assert!(
            output.contains(&config.display().to_string()),
            "{case}: `{command}` names the file\n{output}"
        );
        for needle in expected {
            assert!(
                output.contains(needle),
                "{case}: `{command}` says {needle:?}\n{output}"
            );
        }
    }
}

const ACCOUNT: &str = "[account]\nusername = \"u\"\npassword = \"p\"\nvideo_manager_id = 1\napi_url = \"http://127.0.0.1:9/\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_configs_exit_2_and_name_the_key() {
    refused(
        "empty file",
        "",
        &["account", "the [account] table is required"],
    )
    .await;
    refused(
        "wrong types",
        &format!(
            "{ACCOUNT}[upload]\nparallel = \"two\"\n[[folder]]\npath = \"inbox\"\nrecursive = \"yes\"\nstable_for = 10\n"
        ),
        &[
            "upload.parallel",
            "expected a whole number",
            "folder[1].recursive",
            "expected true or false",
            "folder[1].stable_for",
            "a duration in quotes",
            "(line 7)",
        ],
    )
    .await;
    refused(
        "the same folder twice, written differently",
        &format!("{ACCOUNT}[[folder]]\npath = \"inbox\"\n[[folder]]\npath = \"./inbox/\"\n"),
        &["folder[2].path", "already watched by folder[1]"],
    )
    .await;
    refused(
        "a folder inside another folder's done_dir",
        &format!(
            "{ACCOUNT}[[folder]]\npath = \"inbox\"\nrecursive = false\n[[folder]]\npath = \"inbox/done/nested\"\n"
        ),
        &["folder[2].path", "inside folder[1]'s done_dir", "uploaded again"],
    )
    .await;
    // Hostile test of issue 13, D4: `retry --all` sent uploaded files again, and another
    // folder's failed files into this one.
    refused(
        "a done_dir inside the failed_dir",
        &format!(
            "{ACCOUNT}[[folder]]\npath = \"inbox\"\nfailed_dir = \"../out\"\ndone_dir = \"../out/done\"\n"
        ),
        &["folder[1].failed_dir", "inside one another"],
    )
    .await;
    refused(
        "a failed_dir inside another folder's failed_dir",
        &format!(
            "{ACCOUNT}[[folder]]\npath = \"inbox\"\nfailed_dir = \"../out\"\n[[folder]]\npath = \"other\"\nfailed_dir = \"../out/c\"\n"
        ),
        &["folder[2].failed_dir", "inside folder[1]'s failed_dir"],
    )
    .await;
    refused(
        "done_dir equal to the watched folder",
        &format!("{ACCOUNT}[[folder]]\npath = \"other\"\ndone_dir = \"../other/.\"\n"),
        &["folder[1].done_dir", "is the watched folder itself"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_are_refused_not_overflowed() {
    // Durations of centuries used to pass validation and then abort the agent with an
    // arithmetic overflow (`now + stable_for`, `backoff_max * 5`).
    refused(
        "huge numbers",
        "[account]\nusername = \"u\"\npassword = \"p\"\nvideo_manager_id = 18446744073709551616\n\
         [upload]\nchunk_size = \"99999999999999999999 GiB\"\nparallel = 9223372036854775807\n\
         max_attempts = 4294967296\nbackoff_max = \"500000000000y\"\n\
         request_timeout = \"584000000000y\"\napi_requests_per_minute = 4294967296\n\
         [[folder]]\npath = \"inbox\"\nstable_for = \"500000000000y\"\npoll_interval = \"400000000000y\"\n",
        &[
            "account.video_manager_id: 18446744073709551616 is too large",
            "upload.chunk_size",
            "upload.parallel: must be between 1 and 64",
            "upload.max_attempts",
            "upload.backoff_max",
            "upload.request_timeout",
            "upload.api_requests_per_minute",
            "folder[1].stable_for",
            "folder[1].poll_interval",
            "too long",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_read_from_the_config_directory_not_the_working_directory() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}\n[state]\ndir = \"state\"\n[log]\ndir = \"logs\"\n\
             [[folder]]\npath = \"inbox\"\ndone_dir = \"../delivered\"\n{QUICK}\n",
            account_toml(&emulator, "keycloak"),
            upload_toml()
        ),
    )
    .unwrap();
    // From `/`, a path resolved against the working directory would point nowhere useful.
    let (code, output) = with_config("check", &config, Some(Path::new("/"))).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("everything looks good"), "{output}");
    let hash = write_file(&dir.path().join("inbox/rel.mov"), 1000, 1);
    let log = std::fs::File::create(dir.path().join("run-stderr.log")).unwrap();
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .current_dir("/")
        .stderr(log)
        .spawn()
        .unwrap();
    let delivered = dir.path().join("delivered/rel.mov");
    eventually(WAIT, "rel.mov in ../delivered", || arrived(&delivered)).await;
    assert_eq!(sha256_hex(&std::fs::read(&delivered).unwrap()), hash);
    assert!(dir.path().join("state").is_dir());
    let (status, _) = stop(agent).await;
    let log = std::fs::read_to_string(dir.path().join("run-stderr.log")).unwrap();
    assert_no_panic("hotfolder run", &log);
    assert!(status.success(), "{log}");
}

// ---------------------------------------------------------------------------------------------
// File-system cases through `hotfolder run`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_waits_in_the_inbox_until_it_can_be_read() {
    const TEST: &str = "an_unreadable_file_waits_in_the_inbox_until_it_can_be_read";
    if running_as_root() {
        skip(
            TEST,
            "running as root, where chmod 000 does not stop reading",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    let path = studio.inbox.join("locked.mov");
    let hash = write_file(&path, 5000, 2);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let agent = studio.start();
    eventually(WAIT, "the log says the file cannot be read", || {
        let log = studio.log_text();
        log.contains("locked.mov") && log.contains("permission denied")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(path.exists(), "the file stays where it is");
    assert!(
        files_under(&studio.failed()).is_empty(),
        "not the file's fault"
    );
    assert!(emulator.videos().is_empty(), "nothing sent");
    // Readable again: it goes through like any other file.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let done = studio.done().join("locked.mov");
    eventually(WAIT, "locked.mov in done/ once readable", || arrived(&done)).await;
    assert_eq!(sha256_hex(&std::fs::read(&done).unwrap()), hash);
    assert_eq!(videos_named(&emulator, "locked.mov").len(), 1);
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_mid_upload_is_forgotten() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    let path = studio.inbox.join("gone.mov");
    write_file(&path, 24 * MIB, 3);
    let agent = studio.start();
    chunks_arrived(&emulator, 2).await;
    std::fs::remove_file(&path).unwrap();
    eventually(WAIT, "the log says the file disappeared", || {
        studio.log_text().contains("disappeared")
    })
    .await;
    assert!(files_under(&studio.failed()).is_empty());
    assert!(files_under(&studio.done()).is_empty());
    assert!(files_under(&studio.inbox).is_empty());
    assert_eq!(emulator.videos().len(), 1, "{:?}", emulator.videos());
    // The last chunk is not sent for a file that is gone: no complete video of a deleted file.
    assert!(!emulator.videos()[0].complete, "{:?}", emulator.videos());
    let status = studio.status_json().await;
    assert_eq!(status["jobs"], Value::Array(vec![]), "{status}");
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_mid_upload_is_sent_again_once_stable() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    // An MKV, whose container is not checked: a shorter file is still an export. (A cut MP4,
    // MOV or MXF waits for its index instead: see the container tests.)
    let path = studio.inbox.join("cut.mkv");
    let original = export(&path, 12 * MIB, 4);
    std::fs::write(&path, &original).unwrap();
    let agent = studio.start();
    chunks_arrived(&emulator, 2).await;
    let kept = 5 * MIB + 123;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(kept as u64)
        .unwrap();
    let done = studio.done().join("cut.mkv");
    eventually(Duration::from_secs(60), "cut.mkv in done/", || {
        arrived(&done)
    })
    .await;
    let expected = &original[..kept];
    assert_eq!(std::fs::read(&done).unwrap(), expected);
    let videos = videos_named(&emulator, "cut.mkv");
    assert_eq!(videos.len(), 1, "one video entity: {videos:?}");
    assert_eq!(
        videos[0].sha256.as_deref(),
        Some(sha256_hex(expected).as_str())
    );
    let side = sidecar(&done);
    assert_eq!(side["size"], kept);
    assert!(side["events"].to_string().contains("changed"), "{side}");
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_named_like_a_video_is_a_folder() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    write_file(&studio.inbox.join("clip.mov/inner.mp4"), 3000, 5);
    write_file(&studio.inbox.join("clip.mov/notes.txt"), 100, 6);
    let agent = studio.start();
    // One more, renamed in whole while the agent runs: its files send no events of their own.
    let staging = studio.dir.path().join("staging/take2.mov");
    write_file(&staging.join("inner2.mp4"), 4000, 7);
    std::fs::rename(&staging, studio.inbox.join("take2.mov")).unwrap();
    let first = studio.done().join("clip.mov/inner.mp4");
    let second = studio.done().join("take2.mov/inner2.mp4");
    eventually(WAIT, "both inner files in done/", || {
        arrived(&first) && arrived(&second)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<String> = emulator.videos().into_iter().map(|v| v.file_name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|n| n != "clip.mov" && n != "take2.mov"),
        "{names:?}"
    );
    assert!(studio.inbox.join("clip.mov/notes.txt").is_file());
    assert!(studio.inbox.join("take2.mov").is_dir());
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_arrive_under_their_own_names() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    let names = [
        "line\nbreak.mov",
        "🎬 take 1 🎞️.mov",
        // The same visible name twice: precomposed é (NFC) and e + combining acute (NFD).
        "Caf\u{e9}.mov",
        "Cafe\u{301}.mov",
    ];
    let mut hashes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        hashes.push(write_file(
            &studio.inbox.join(name),
            2000 + i,
            10 + i as u64,
        ));
    }
    let agent = studio.start();
    eventually(WAIT, "every odd name in done/", || {
        names.iter().all(|n| arrived(&studio.done().join(n)))
    })
    .await;
    for (name, hash) in names.iter().zip(&hashes) {
        let done = studio.done().join(name);
        assert_eq!(
            &sha256_hex(&std::fs::read(&done).unwrap()),
            hash,
            "{name:?}"
        );
        assert_eq!(sidecar(&done)["file"], *name);
        let videos = videos_named(&emulator, name);
        assert_eq!(videos.len(), 1, "{name:?}: {:?}", emulator.videos());
        assert_eq!(videos[0].sha256.as_ref(), Some(hash), "{name:?}");
    }
    assert_eq!(emulator.videos().len(), names.len());
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_255_byte_name_arrives_with_a_sidecar() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    let name = format!("{}.mov", "n".repeat(251));
    assert_eq!(name.len(), 255);
    let hash = write_file(&studio.inbox.join(&name), 3000, 20);
    let agent = studio.start();
    eventually(WAIT, "the long name uploaded", || {
        !videos_named(&emulator, &name).is_empty()
    })
    .await;
    let done = studio.done().join(&name);
    eventually(WAIT, "the long name in done/ with a sidecar", || {
        done.exists()
            && files_under(&studio.done())
                .iter()
                .any(|f| f.ends_with(".upload.json"))
    })
    .await;
    assert_eq!(sha256_hex(&std::fs::read(&done).unwrap()), hash);
    assert_eq!(videos_named(&emulator, &name).len(), 1);
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_link_loops_are_skipped_with_a_log_line() {
    use std::os::unix::fs::symlink;
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    let outside = studio.dir.path().join("outside.mov");
    let outside_hash = write_file(&outside, 2000, 30);
    symlink("loop.mov", studio.inbox.join("loop.mov")).unwrap();
    std::fs::create_dir_all(studio.inbox.join("sub")).unwrap();
    symlink("..", studio.inbox.join("sub/up")).unwrap();
    symlink(&outside, studio.inbox.join("linked.mov")).unwrap();
    let real_hash = write_file(&studio.inbox.join("sub/real.mov"), 2500, 31);
    let mut agent = studio.start();
    let real = studio.done().join("sub/real.mov");
    eventually(WAIT, "the regular file in done/", || arrived(&real)).await;
    // A link made while the agent runs arrives through an event, not the start-up scan.
    symlink(&outside, studio.inbox.join("late-link.mov")).unwrap();
    eventually(WAIT, "every link logged as skipped", || {
        let log = studio.log_text();
        ["loop.mov", "sub/up", "linked.mov", "late-link.mov"]
            .iter()
            .all(|name| {
                log.lines().any(|l| {
                    l.contains("skipped") && l.contains("symbolic link") && l.contains(name)
                })
            })
    })
    .await;
    assert_eq!(sha256_hex(&std::fs::read(&real).unwrap()), real_hash);
    assert_eq!(emulator.videos().len(), 1, "{:?}", emulator.videos());
    assert_eq!(sha256_hex(&std::fs::read(&outside).unwrap()), outside_hash);
    for link in ["loop.mov", "sub/up", "linked.mov", "late-link.mov"] {
        let meta = std::fs::symlink_metadata(studio.inbox.join(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} left alone");
    }
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    stop_cleanly(&studio, agent).await;
}

/// Removes a directory tree on drop (for places outside the test's temp dir).
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_dir_on_another_file_system_receives_a_copy() {
    let emulator = emulator(|_| {}).await;
    let other = PathBuf::from(format!(
        "/dev/shm/hotfolder-bad-inputs-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let probe = tempfile::tempdir().unwrap();
    if std::fs::create_dir_all(&other).is_err() || device_of(&other) == device_of(probe.path()) {
        let _ = std::fs::remove_dir_all(&other);
        skip(
            "done_dir_on_another_file_system_receives_a_copy",
            "/dev/shm is missing or on the same file system as the temp dir",
        );
        return;
    }
    let _cleanup = RemoveOnDrop(other.clone());
    let studio = Studio::new(
        &emulator,
        &upload_toml(),
        &format!("{QUICK}\ndone_dir = \"{}\"", other.display()),
    );
    let data = export("far.mov", 3 * MIB + 5, 40);
    std::fs::write(studio.inbox.join("far.mov"), &data).unwrap();
    let agent = studio.start();
    let done = other.join("far.mov");
    eventually(WAIT, "far.mov in the done_dir on /dev/shm", || {
        arrived(&done)
    })
    .await;
    assert_eq!(std::fs::read(&done).unwrap(), data);
    assert_eq!(files_under(&other), vec!["far.mov", "far.mov.upload.json"]);
    assert!(!studio.inbox.join("far.mov").exists());
    assert_eq!(sidecar(&done)["status"], "uploaded");
    stop_cleanly(&studio, agent).await;
}

/// A directory made read-only for the agent, made writable again on drop (so the temp dir can
/// be removed even if the test fails). Root ignores permission bits, so as root it takes the
/// immutable attribute (`chattr +i`), which stops root too.
struct ReadOnlyDir {
    dir: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn set(dir: &Path) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt;
        if !running_as_root() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).ok()?;
            return Some(ReadOnlyDir {
                dir: dir.to_path_buf(),
                immutable: false,
            });
        }
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| ReadOnlyDir {
            dir: dir.to_path_buf(),
            immutable: true,
        })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.dir)
                .status();
        } else {
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_dir_not_writable_keeps_the_file_in_the_inbox() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    std::fs::create_dir_all(studio.done()).unwrap();
    let Some(_read_only) = ReadOnlyDir::set(&studio.done()) else {
        skip(
            "done_dir_not_writable_keeps_the_file_in_the_inbox",
            "running as root and chattr +i is not available or not permitted here",
        );
        return;
    };
    let data = export("stuck.mov", 2 * MIB, 50);
    let path = studio.inbox.join("stuck.mov");
    std::fs::write(&path, &data).unwrap();
    let agent = studio.start();
    eventually(WAIT, "the log says why the file was not moved", || {
        studio.log_text().contains("stays where it is")
    })
    .await;
    let log = studio.log_text();
    assert!(
        log.contains("Operation not permitted") || log.contains("Permission denied"),
        "{log}"
    );
    assert!(log.contains("stuck.mov"), "{log}");
    assert_eq!(std::fs::read(&path).unwrap(), data, "the file is intact");
    assert!(files_under(&studio.done()).is_empty());
    assert!(files_under(&studio.failed()).is_empty());
    // Left in the inbox, it must not be taken for a new file and uploaded again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(videos_named(&emulator, "stuck.mov").len(), 1);
    stop_cleanly(&studio, agent).await;
}

/// A tiny tmpfs mounted over a directory, unmounted on drop.
struct TinyMount(PathBuf);
impl TinyMount {
    fn mount(dir: &Path) -> Option<TinyMount> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| TinyMount(dir.to_path_buf()))
    }
}
impl Drop for TinyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_in_done_dir_keeps_the_file_intact_in_the_inbox() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &upload_toml(), QUICK);
    std::fs::create_dir_all(studio.done()).unwrap();
    let Some(_mount) = TinyMount::mount(&studio.done()) else {
        skip(
            "disk_full_in_done_dir_keeps_the_file_intact_in_the_inbox",
            "mounting a 1 MiB tmpfs needs privileges this environment lacks",
        );
        return;
    };
    let data = export("big.mov", 3 * MIB, 60);
    let path = studio.inbox.join("big.mov");
    std::fs::write(&path, &data).unwrap();
    let agent = studio.start();
    eventually(WAIT, "the log says why the file was not moved", || {
        studio.log_text().contains("stays where it is")
    })
    .await;
    let log = studio.log_text();
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(std::fs::read(&path).unwrap(), data, "the file is intact");
    assert!(
        files_under(&studio.done()).is_empty(),
        "no partial copy is left behind"
    );
    assert!(files_under(&studio.failed()).is_empty());
    assert_eq!(videos_named(&emulator, "big.mov").len(), 1);
    stop_cleanly(&studio, agent).await;
}

// ---------------------------------------------------------------------------------------------
// Server cases: canned raw HTTP/1.1 answers on 127.0.0.1, one request per connection.

/// What the canned server does with one request.
enum Reply {
    /// Writes these bytes and closes the connection.
    Raw(Vec<u8>),
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Writes this head, then one body byte every 100 ms for ever.
    Trickle(String),
}

type Route = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

/// A server answering each request with what `route(method, target)` says.
struct Canned {
    addr: SocketAddr,
    /// `"METHOD /target"` of every complete request, in order.
    requests: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which ends every connection too.
        self.accept.abort();
    }
}

impl Canned {
    async fn start(route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let route: Route = Arc::new(route);
        let log = requests.clone();
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve(stream, route.clone(), log.clone()));
                }
                while connections.try_join_next().is_some() {}
            }
        });
        Canned {
            addr,
            requests,
            accept,
        }
    }

    fn count(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    fn log(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, route: Route, log: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&piece[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body_read = buffer.len() - head_end;
    while body_read < length {
        match stream.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body_read += n,
        }
    }
    log.lock().unwrap().push(format!("{method} {target}"));
    match route(&method, &target) {
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::Silent => std::future::pending::<()>().await,
        Reply::Trickle(head) => {
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A complete answer that closes the connection.
fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Reply::Raw(text.into_bytes())
}

const TOKEN_JSON: &str =
    r#"{"access_token":"acc","expires_in":300,"refresh_token":"ref","refresh_expires_in":3600}"#;

/// How a well-behaved platform answers; each test replaces one route.
fn well_behaved(method: &str, target: &str) -> Reply {
    match method {
        "POST" if target == "/token" => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            TOKEN_JSON,
        ),
        "POST" if target == "/api/12345/videos" => {
            http("201 Created", &[("Location", "/api/12345/videos/v1")], "")
        }
        "GET" if target == "/api/12345/videos/v1/url" => http(
            "201 Created",
            &[("Location", "/upload/v1?fileId=f1&__token__=1~abcdef")],
            "",
        ),
        "POST" if target.starts_with("/upload/") => http("201 Created", &[], ""),
        // The lookup by marker keyword finds nothing; the video has no keywords to remove.
        "GET" if target.starts_with("/api/12345/videos?") => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            r#"{"total":0,"videos":[]}"#,
        ),
        "GET" if target == "/api/12345/videos/v1/keywords" => {
            http("200 OK", &[("Content-Type", "application/json")], "[]")
        }
        _ => http("404 Not Found", &[], r#"{"message":"no such route"}"#),
    }
}

/// Uploads a `size`-byte file with the library against `server` (3 tries per request, 20 ms
/// backoff cap, 1 s request timeout) and returns the outcome and how long it took.
async fn upload_to(server: &Canned, size: usize) -> (Result<UploadReport, VmproError>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[account]\napi_url = \"http://{addr}/api/\"\ntoken_url = \"http://{addr}/token\"\n\
         username = \"editor\"\npassword = \"pw\"\nvideo_manager_id = 12345\n\
         [upload]\nchunk_size = \"1 MiB\"\nmax_attempts = 3\nbackoff_max = \"20ms\"\n\
         request_timeout = \"1s\"\nlookup_wait = \"300ms\"\n[state]\ndir = \"state\"\n[log]\ndir = \"logs\"\n",
        addr = server.addr
    );
    let settings = Settings::from_toml_str(&text, &dir.path().join("config.toml"))
        .expect("the test config is valid");
    let platform = Platform::new(&settings.account, &settings.upload).unwrap();
    let path = dir.path().join("clip.mp4");
    write_file(&path, size, 70);
    let request = UploadRequest {
        path,
        file_name: "clip.mp4".into(),
        metadata: VideoMetadata::default(),
        resume: ResumePoint::default(),
    };
    let started = Instant::now();
    let result = upload_file(&platform, request, &Unobserved, &CancellationToken::new()).await;
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_answer_that_is_not_json_is_a_login_problem() {
    let server = Canned::start(|method, target| match target {
        "/token" => http(
            "200 OK",
            &[("Content-Type", "text/html")],
            "<html><body>Down for maintenance</body></html>",
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("no usable token");
    assert!(
        matches!(
            err,
            VmproError::Protocol {
                step: Step::Login,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("login") && message.contains("not the expected JSON"),
        "{message}"
    );
    // Not the file's fault: the agent pauses the queue instead of moving files to failed/.
    assert_eq!(err.blame(), Blame::AccountOrNetwork, "{err}");
    assert_eq!(server.log(), vec!["POST /token"], "no video created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_token_lifetimes_do_not_crash() {
    let server = Canned::start(|method, target| match target {
        "/token" => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            r#"{"access_token":"acc","expires_in":18446744073709551615,"refresh_token":"r","refresh_expires_in":18446744073709551615}"#,
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let report = result.expect("the upload works with any token lifetime");
    assert_eq!(report.video_id, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_without_location_blames_the_platform_without_a_second_video() {
    let server = Canned::start(|method, target| match (method, target) {
        ("POST", "/api/12345/videos") => http("201 Created", &[], r#"{"id":"v1"}"#),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("no video id");
    assert!(
        matches!(
            err,
            VmproError::Protocol {
                step: Step::CreateVideo,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no Location header"), "{err}");
    // Every file would get the same answer: the agent pauses instead of failing them all.
    assert_eq!(err.blame(), Blame::AccountOrNetwork, "{err}");
    assert_eq!(server.count("POST /api/12345/videos"), 1);
    // The video it says it made is looked up by its marker (and not found here); no upload
    // URL is asked for, and no second create is sent.
    assert!(
        server.count("GET /api/12345/videos?") >= 1,
        "{:?}",
        server.log()
    );
    assert_eq!(server.count("GET /api/12345/videos/"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_without_an_id_fails_without_a_second_video() {
    for location in ["/api/12345/videos/", "http://elsewhere.invalid/"] {
        let server = Canned::start(move |method, target| match (method, target) {
            ("POST", "/api/12345/videos") => http("201 Created", &[("Location", location)], ""),
            _ => well_behaved(method, target),
        })
        .await;
        let (result, _) = upload_to(&server, 1000).await;
        let err = result.expect_err("no video id");
        assert!(
            matches!(
                err,
                VmproError::Protocol {
                    step: Step::CreateVideo,
                    ..
                }
            ),
            "{location}: {err:?}"
        );
        assert!(
            err.to_string().contains("does not end with a video id"),
            "{location}: {err}"
        );
        assert_eq!(server.count("POST /api/12345/videos"), 1, "{location}");
        assert_eq!(server.count("GET /api/12345/videos/"), 0, "{location}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_2xx_with_an_odd_body_counts_as_accepted() {
    // The protocol notes: 200, 201 and 202 all mean "chunk accepted", whatever the body says
    // (unless it is a web page: see the next test).
    let server = Canned::start(|method, target| match method {
        "POST" if target.starts_with("/upload/") => http(
            "200 OK",
            &[("Content-Type", "text/plain")],
            "thanks {not json",
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 2 * MIB + 1).await;
    let report = result.expect("accepted");
    assert_eq!(report.chunks, 3);
    assert_eq!(server.count("POST /upload/"), 3);
    assert_eq!(server.count("POST /api/12345/videos"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_answered_with_a_maintenance_page_is_not_an_accepted_chunk() {
    // A load balancer's "down for maintenance" page, answered 200: the platform never saw the
    // chunk. Counting it would move the file to done/ while the platform has nothing.
    let server = Canned::start(|method, target| match method {
        "POST" if target.starts_with("/upload/") => http(
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8")],
            "<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head></html>",
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("a web page is not an accepted chunk");
    assert!(
        matches!(
            err,
            VmproError::GaveUp {
                step: Step::Chunk,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Scheduled maintenance"), "{err}");
    assert_eq!(err.blame(), Blame::AccountOrNetwork, "{err}");
    assert_eq!(
        server.count("POST /upload/"),
        3,
        "sent again like after a 503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_chunk_is_an_error_not_a_silent_get() {
    // Following a 302 turns the POST into a GET without the chunk; a 2xx from there would
    // count a chunk that never arrived as accepted. Redirects are not followed at all.
    let server = Canned::start(|method, target| match method {
        "POST" if target.starts_with("/upload/") => {
            http("302 Found", &[("Location", "/elsewhere")], "")
        }
        _ if target == "/elsewhere" => http("200 OK", &[], ""),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("a redirect is not an accepted chunk");
    assert_eq!(err.status(), Some(302), "{err}");
    assert!(err.to_string().contains("chunk upload"), "{err}");
    assert_eq!(server.count("GET /elsewhere"), 0, "{:?}", server.log());
    assert_eq!(server.count("POST /api/12345/videos"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_1101_inside_a_500_is_not_retried() {
    let quota = r#"{"code":1101,"message":"upload denied"}"#;
    // On a chunk…
    let server = Canned::start(move |method, target| match method {
        "POST" if target.starts_with("/upload/") => http("500 Internal Server Error", &[], quota),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("quota");
    assert!(
        matches!(
            err,
            VmproError::Quota {
                step: Step::Chunk,
                status: 500,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("storage quota"), "{err}");
    assert_eq!(err.blame(), Blame::AccountOrNetwork);
    assert_eq!(server.count("POST /upload/"), 1, "no retry storm");
    // …and on create-video.
    let server = Canned::start(move |method, target| match (method, target) {
        ("POST", "/api/12345/videos") => http("500 Internal Server Error", &[], quota),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("quota");
    assert!(
        matches!(
            err,
            VmproError::Quota {
                step: Step::CreateVideo,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.count("POST /api/12345/videos"), 1, "no retry storm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_slow_body_is_cut_by_the_request_timeout() {
    let server = Canned::start(|method, target| match method {
        "POST" if target.starts_with("/upload/") => {
            Reply::Trickle("HTTP/1.1 201 Created\r\nContent-Length: 100000000\r\n\r\n".into())
        }
        _ => well_behaved(method, target),
    })
    .await;
    let (result, took) = upload_to(&server, 1000).await;
    let err = result.expect_err("never finished");
    assert!(
        matches!(
            &err,
            VmproError::GaveUp {
                step: Step::Chunk,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(
        err.blame(),
        Blame::AccountOrNetwork,
        "the server's fault, not the file's"
    );
    assert_eq!(server.count("POST /upload/"), 3);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(server.count("POST /api/12345/videos"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_answer_that_cannot_be_read_fails_the_file_instead_of_creating_again() {
    // The create's answer is a gateway's 504 (the video may exist); the lookup's answer cannot
    // be read. Nothing can tell whether the video exists: reported, not repeated. (A
    // maintenance page there is the platform's state, not an answer: it pauses the queue.)
    let server = Canned::start(|method, target| match (method, target) {
        ("POST", "/api/12345/videos") => http("504 Gateway Timeout", &[], ""),
        ("GET", t) if t.starts_with("/api/12345/videos?") => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            "{\"total\": 1, \"videos\": [tru",
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let err = result.expect_err("the outcome cannot be confirmed");
    let shown = hotfolder::chain(&err);
    assert!(
        matches!(err, VmproError::CreateUnconfirmed { .. }),
        "{err:?}"
    );
    assert!(
        shown.contains("may have created a video") && shown.contains("not JSON"),
        "{shown}"
    );
    assert_eq!(err.blame(), Blame::File);
    assert_eq!(server.count("POST /api/12345/videos"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_without_the_marker_in_a_search_answer_are_never_adopted() {
    // A search that ignores its parameters and lists other videos: none carries this job's
    // marker, so none is taken; the second create (after the lookups) makes the video.
    let creates = std::sync::atomic::AtomicUsize::new(0);
    let server = Canned::start(move |method, target| match (method, target) {
        ("POST", "/api/12345/videos")
            if creates.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 =>
        {
            http("502 Bad Gateway", &[], "")
        }
        ("GET", t) if t.starts_with("/api/12345/videos?") => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            r#"{"total": 3, "videos": [{"id": "someone-elses", "title": "x"},
                {"id": "other", "keywords": ["hotfolder-0000", "studio"]}, "junk"]}"#,
        ),
        _ => well_behaved(method, target),
    })
    .await;
    let (result, _) = upload_to(&server, 1000).await;
    let report = result.expect("uploaded to the video the second create made");
    assert_eq!(report.video_id, "v1");
    assert_eq!(server.count("POST /api/12345/videos"), 2);
    let log = server.log();
    let second_create = log
        .iter()
        .rposition(|r| r == "POST /api/12345/videos")
        .unwrap();
    let lookups_before = log[..second_create]
        .iter()
        .filter(|r| r.starts_with("GET /api/12345/videos?"))
        .count();
    assert_eq!(
        lookups_before, 4,
        "one lookup and three repeats before the second create: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_given_up_on_naming_the_step() {
    let server = Canned::start(|method, target| match (method, target) {
        ("POST", "/api/12345/videos") => Reply::Silent,
        _ => well_behaved(method, target),
    })
    .await;
    let (result, took) = upload_to(&server, 1000).await;
    let err = result.expect_err("never answered");
    let message = err.to_string();
    assert!(
        message.starts_with("create video: gave up after 3 tries") && message.contains("timed out"),
        "{message}"
    );
    assert_eq!(err.blame(), Blame::AccountOrNetwork);
    assert_eq!(server.count("POST /api/12345/videos"), 3);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "three 1 s timeouts, took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_command_reports_a_broken_server_in_one_json_line() {
    let server = Canned::start(|method, target| match target {
        "/token" => http("200 OK", &[], "{\"access_token\": 42"),
        _ => well_behaved(method, target),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[account]\napi_url = \"http://{addr}/api/\"\ntoken_url = \"http://{addr}/token\"\n\
             username = \"editor\"\npassword = \"pw\"\nvideo_manager_id = 12345\n{}",
            upload_toml(),
            addr = server.addr
        ),
    );
    let path = dir.path().join("clip.mov");
    let hash = write_file(&path, 1000, 80);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--json")
        .arg("--config")
        .arg(&config)
        .arg(&path))
    .await;
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_no_panic("hotfolder upload", &all);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    // Not the file's failure: the platform's login is broken for every file alike.
    assert_eq!(line["status"], "not_uploaded");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(error.contains("login") && error.contains("JSON"), "{line}");
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), hash);
    assert_eq!(server.count("POST /api/"), 0);
}
