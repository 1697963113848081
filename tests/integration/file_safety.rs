//! Issue 10's file-safety items, through the real binary: nothing is read, uploaded or moved
//! through a symbolic link swapped in for a watched folder or a folder on the way to a queued
//! file; a named pipe never blocks anything; a second signal always ends the process; a file
//! name can neither forge a log or status line nor, when it is not UTF-8, be left behind.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotfolder::Emulator;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

/// One file at a time, so a second file waits behind a slow first one.
fn one_at_a_time() -> String {
    FAST_UPLOAD.replace("parallel = 2", "parallel = 1")
}

fn videos_named(emulator: &Emulator, file_name: &str) -> usize {
    emulator
        .videos()
        .iter()
        .filter(|v| v.file_name == file_name)
        .count()
}

fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the agent logged: its stderr and its log files.
fn all_logs(studio: &Studio) -> String {
    let mut text = std::fs::read(studio.stderr_log()).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(studio.dir.path().join("logs")) {
        for entry in entries.flatten() {
            text.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Waits until the first chunks of the only video so far have arrived: an upload is under way.
async fn first_upload_under_way(emulator: &Emulator) {
    eventually(WAIT, "the first upload under way", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;
}

/// Stops the agent, expecting a clean exit and no panic.
async fn stop_cleanly(studio: &Studio, agent: tokio::process::Child) {
    let (status, _) = stop(agent).await;
    let log = studio.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(status.success(), "exit {status:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_swapped_for_a_symlink_is_missing_once_and_never_read_through() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let private = studio.dir.path().join("private");
    let secret = private.join("secret.mov");
    let secret_hash = write_file(&secret, 3000, 50);
    let agent = studio.start();
    eventually(WAIT, "agent watching", || {
        studio.log_text().contains("watching")
    })
    .await;

    let old = studio.dir.path().join("inbox.old");
    std::fs::rename(&studio.inbox, &old).unwrap();
    symlink(&private, &studio.inbox).unwrap();
    // The first look may catch the moment between the move and the link (then the reason is
    // "does not exist"); the next folder check, 3 s later, names the link.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = studio.status_json().await;
        let why = status["missing_folders"][0]["why"].as_str().unwrap_or("");
        if why.contains("symbolic link") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never named the link: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The log says what status says (the first look may have caught the moment between the
    // move and the link, when the folder did not exist at all).
    eventually(WAIT, "the log naming the link", || {
        studio.log_text().contains("symbolic link")
    })
    .await;
    // Three more folder checks (every 3 s): no more words, no rescans through the link.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = studio.log_text();
    assert_eq!(
        log.matches("cannot see the watched folder").count(),
        1,
        "reported once:\n{log}"
    );
    assert!(!log.contains("watching the new one"), "{log}");
    assert!(!log.contains("rescanning"), "{log}");
    assert!(!log.contains("secret.mov"), "{log}");
    assert_eq!(emulator.videos().len(), 0, "{:?}", emulator.videos());
    assert_eq!(
        files_under(&private),
        ["secret.mov"],
        "nothing moved in or out"
    );
    assert_eq!(sha256_hex(&std::fs::read(&secret).unwrap()), secret_hash);
    let text = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(text_of(&text.stdout).contains("FOLDER MISSING"));

    // A reload (SIGHUP, sent for any reason) does not adopt the link either.
    signal(&agent, 1);
    eventually(WAIT, "the reload", || {
        studio.log_text().contains("config reloaded")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = studio.log_text();
    assert!(log.contains("a link changed since start"), "{log}");
    assert!(!log.contains("watching a new folder"), "{log}");
    assert_eq!(emulator.videos().len(), 0, "{:?}", emulator.videos());
    assert_eq!(files_under(&private), ["secret.mov"], "nothing moved");

    // The real folder back in place: watched again, and new files are uploaded.
    std::fs::remove_file(&studio.inbox).unwrap();
    std::fs::rename(&old, &studio.inbox).unwrap();
    write_file(&studio.inbox.join("after.mov"), 2000, 51);
    eventually(WAIT, "after.mov in done/", || {
        arrived(&studio.done().join("after.mov"))
    })
    .await;
    assert!(studio.log_text().contains("the folder is back"));
    assert_eq!(videos_named(&emulator, "secret.mov"), 0);
    stop_cleanly(&studio, agent).await;
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_configured_as_a_symlink_keeps_working() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("nas/exports");
    std::fs::create_dir_all(&real).unwrap();
    let link = dir.path().join("exports");
    symlink(&real, &link).unwrap();
    let body = format!(
        "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\n{QUICK}\n",
        account_toml(&emulator, "keycloak"),
        link.display()
    );
    let config = write_config(dir.path(), &body);
    let stderr = dir.path().join("run-stderr.log");
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let hash = write_file(&link.join("clip.mov"), 2500, 52);
    let done = real.join("done/clip.mov");
    eventually(
        WAIT,
        "clip.mov in done/ of the folder the link names",
        || arrived(&done),
    )
    .await;
    assert_eq!(sha256_hex(&std::fs::read(&done).unwrap()), hash);
    // Several folder checks later it is still the folder watched, said once.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!log.contains("cannot see the watched folder"), "{log}");
    assert!(!log.contains("watching the new one"), "{log}");
    let (status, _) = stop(agent).await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subfolder_swapped_for_a_symlink_while_its_file_is_queued_is_not_followed() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, &one_at_a_time(), QUICK);
    let private = studio.dir.path().join("private");
    let private_hash = write_file(&private.join("clip.mov"), 3000, 60);
    let big_hash = write_file(&studio.inbox.join("big.mov"), 16 * MIB, 61);
    let queued_hash = write_file(&studio.inbox.join("sub/clip.mov"), 2000, 62);
    let agent = studio.start();
    first_upload_under_way(&emulator).await;

    // While big.mov uploads, sub/clip.mov waits in the queue: its folder is swapped for a link.
    let moved_away = studio.dir.path().join("x");
    std::fs::rename(studio.inbox.join("sub"), &moved_away).unwrap();
    symlink(&private, studio.inbox.join("sub")).unwrap();

    eventually(WAIT, "big.mov in done/", || {
        arrived(&studio.done().join("big.mov"))
    })
    .await;
    eventually(WAIT, "the queued file forgotten with a log line", || {
        studio.log_text().lines().any(|l| {
            l.contains("sub/clip.mov") && l.contains("symbolic link") && l.contains("forgetting")
        })
    })
    .await;
    let status = studio.status_json().await;
    assert_eq!(status["jobs"].as_array().map(Vec::len), Some(0), "{status}");
    assert_eq!(
        videos_named(&emulator, "clip.mov"),
        0,
        "{:?}",
        emulator.videos()
    );
    assert_eq!(
        sha256_hex(&std::fs::read(private.join("clip.mov")).unwrap()),
        private_hash
    );
    assert_eq!(
        files_under(&private),
        ["clip.mov"],
        "nothing moved in or out"
    );
    assert_eq!(
        sha256_hex(&std::fs::read(moved_away.join("clip.mov")).unwrap()),
        queued_hash
    );
    assert!(!studio.done().join("sub").exists());
    assert_eq!(
        sha256_hex(&std::fs::read(studio.done().join("big.mov")).unwrap()),
        big_hash
    );
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_newline_and_an_escape_is_one_log_line_and_one_status_line() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let forged = "2026-01-01T00:00:00.000000Z ERROR hotfolder: forged";
    let name = format!("evil\n{forged}\x1b[31m.mov");
    write_file(&studio.inbox.join(&name), 2000, 70);
    let agent = studio.start();
    eventually(WAIT, "the file in done/", || {
        arrived(&studio.done().join(&name))
    })
    .await;
    let shown = format!("evil\\n{forged}\\x1b[31m.mov");
    let logs = all_logs(&studio);
    assert!(logs.contains(&shown), "escaped in the log:\n{logs}");
    assert!(!logs.contains('\x1b'), "{logs:?}");
    assert!(
        !logs.lines().any(|l| l.starts_with(forged)),
        "a line forged by the name:\n{logs}"
    );

    let status = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(status.status.success(), "{}", text_of(&status.stderr));
    let out = text_of(&status.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("evil")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains(&shown), "{out}");
    assert!(
        !out.contains('\x1b') && !out.lines().any(|l| l.starts_with(forged)),
        "{out:?}"
    );
    stop_cleanly(&studio, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_a_named_pipe_ends_at_once_with_a_clear_error() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let fifo = studio.dir.path().join("clip.mov");
    if !mkfifo(&fifo) {
        hotfolder::test_skipped(format_args!("mkfifo unavailable"));
        return;
    }
    let start = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        hotfolder()
            .arg("upload")
            .arg("--config")
            .arg(&studio.config)
            .arg(&fifo)
            .output(),
    )
    .await
    .expect("`hotfolder upload fifo.mov` ended instead of blocking")
    .unwrap();
    let stderr = text_of(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("named pipe"), "{stderr}");
    assert!(stderr.contains("clip.mov"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(emulator.videos().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_swapped_in_for_a_queued_file_does_not_block_the_agent() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, &one_at_a_time(), QUICK);
    write_file(&studio.inbox.join("big.mov"), 16 * MIB, 80);
    write_file(&studio.inbox.join("clip.mov"), 2000, 81);
    let agent = studio.start();
    first_upload_under_way(&emulator).await;
    std::fs::remove_file(studio.inbox.join("clip.mov")).unwrap();
    if !mkfifo(&studio.inbox.join("clip.mov")) {
        hotfolder::test_skipped(format_args!("mkfifo unavailable"));
        stop(agent).await;
        return;
    }
    eventually(WAIT, "the pipe's job forgotten with a log line", || {
        studio
            .log_text()
            .lines()
            .any(|l| l.contains("clip.mov") && l.contains("named pipe") && l.contains("forgetting"))
    })
    .await;
    // The agent goes on: a file dropped now is uploaded, and a stop is prompt.
    write_file(&studio.inbox.join("later.mov"), 2500, 82);
    eventually(WAIT, "later.mov in done/", || {
        arrived(&studio.done().join("later.mov"))
    })
    .await;
    assert_eq!(videos_named(&emulator, "clip.mov"), 0);
    let pipe = std::fs::symlink_metadata(studio.inbox.join("clip.mov")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()),
        "the pipe is left where it is"
    );
    stop_cleanly(&studio, agent).await;
}

/// `hotfolder run` with one blocking thread stuck for good (as a read from a share that
/// stopped answering is), via the debug builds' `HOTFOLDER_TEST_STUCK_THREAD`.
fn start_with_a_stuck_thread(studio: &Studio) -> (tokio::process::Child, PathBuf) {
    let stderr = studio.dir.path().join("stuck-stderr.log");
    let child = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("HOTFOLDER_TEST_STUCK_THREAD", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (child, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_a_stuck_process_at_once() {
    let emulator = emulator(|_| {}).await;
    // The second signal as a service manager sends it, and as Ctrl-C does.
    for second in [15, 2] {
        let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
        let (mut agent, stderr) = start_with_a_stuck_thread(&studio);
        let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
        eventually(WAIT, "agent watching", || log().contains("watching")).await;
        signal(&agent, 15);
        // Drained and stopped; now only the stuck thread holds the process.
        eventually(WAIT, "the agent stopped", || {
            log().contains("stopped; state saved")
        })
        .await;
        let start = Instant::now();
        signal(&agent, second);
        let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
            .await
            .expect("the process ended after the second signal")
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "signal {second}: {:?}",
            start.elapsed()
        );
        assert_eq!(
            status.code(),
            Some(130),
            "signal {second}: {status:?}\n{}",
            log()
        );
        assert!(log().contains("second signal"), "{}", log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_ever_on_a_stuck_thread() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let (mut agent, stderr) = start_with_a_stuck_thread(&studio);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    eventually(WAIT, "agent watching", || log().contains("watching")).await;
    let start = Instant::now();
    signal(&agent, 15);
    let status = tokio::time::timeout(Duration::from_secs(20), agent.wait())
        .await
        .expect("one SIGTERM ends the process even with a stuck thread")
        .unwrap();
    assert!(
        status.success(),
        "{status:?} {:?}\n{}",
        status.signal(),
        log()
    );
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_utf8_is_uploaded_and_its_bytes_kept_in_the_sidecar() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let name = OsStr::from_bytes(b"caf\xe9 \xff.mov");
    let hash = write_file(&studio.inbox.join(name), 2000, 90);
    let agent = studio.start();
    let done = studio.done().join(name);
    eventually(WAIT, "the file in done/ under its own name", || {
        arrived(&done)
    })
    .await;
    assert_eq!(sha256_hex(&std::fs::read(&done).unwrap()), hash);
    let lossy = "caf\u{fffd} \u{fffd}.mov";
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert_eq!(videos[0].file_name, lossy);
    assert_eq!(videos[0].sha256.as_ref(), Some(&hash));
    let sidecar = sidecar(&done);
    assert_eq!(sidecar["file"], lossy);
    assert_eq!(sidecar["file_raw"], "caf\\xe9 \\xff.mov");
    assert_eq!(sidecar["status"], "uploaded");
    let log = studio.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("not valid UTF-8")),
        "{log}"
    );
    // Both forms of status show it, without failing on the name. The sidecar (which
    // `arrived` waits for) is written just before the store records the move: wait for that.
    let mut json = studio.status_json().await;
    let started = std::time::Instant::now();
    while json["recent"][0].is_null() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        json = studio.status_json().await;
    }
    assert_eq!(
        json["recent"][0]["path"],
        studio.inbox.join(lossy).to_string_lossy().as_ref()
    );
    let text = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(text.status.success(), "{}", text_of(&text.stderr));
    assert!(
        text_of(&text.stdout).contains("caf\\xe9 \\xff.mov"),
        "{}",
        text_of(&text.stdout)
    );
    stop_cleanly(&studio, agent).await;
}

/// The upload engine itself, against the emulator: a named pipe (or a folder on the way
/// swapped for a link) is refused at the open, at once, before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_engine_refuses_pipes_and_links_at_the_open_without_blocking() {
    use hotfolder::{
        Blame, Platform, ResumePoint, Settings, Unobserved, UploadRequest, VideoMetadata,
        upload_file,
    };
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let text = format!(
        "{}\n{FAST_UPLOAD}\n[state]\ndir = \"state\"\n[log]\ndir = \"logs\"\n",
        account_toml(&emulator, "keycloak")
    );
    let settings = Settings::from_toml_str(&text, &root.join("config.toml")).unwrap();
    let platform = Platform::new(&settings.account, &settings.upload).unwrap();
    let fifo = root.join("pipe.mov");
    let have_fifo = mkfifo(&fifo);
    write_file(&root.join("private/clip.mov"), 2000, 95);
    std::fs::create_dir_all(root.join("in")).unwrap();
    symlink(root.join("private"), root.join("in/sub")).unwrap();

    let mut cases = vec![(root.join("in/sub/clip.mov"), "symbolic link")];
    if have_fifo {
        cases.push((fifo, "named pipe"));
    }
    for (path, words) in cases {
        let request = UploadRequest {
            path: path.clone(),
            file_name: "clip.mov".into(),
            metadata: VideoMetadata::default(),
            resume: ResumePoint::default(),
        };
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            upload_file(
                &platform,
                request,
                &Unobserved,
                &tokio_util::sync::CancellationToken::new(),
            ),
        )
        .await
        .expect("the upload ended instead of blocking");
        let err = result.expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.blame(), Blame::File, "{path:?}");
        assert!(
            hotfolder::chain(&err).contains(words),
            "{}",
            hotfolder::chain(&err)
        );
    }
    assert!(emulator.videos().is_empty(), "{:?}", emulator.videos());
}
