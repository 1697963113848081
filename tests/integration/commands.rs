//! The commands as a newcomer meets them, through the real binary (issue 10, items 16–19, 22,
//! 23): output piped into a reader that went away, `check` with the platform down, what each
//! command requires of the config, what `upload` refuses before sending anything, the file
//! `init` writes, and the units sizes and rates are printed in.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use hotfolder::{Emulator, STARTER_CONFIG};
use tokio::net::TcpListener;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// The writing end of a pipe whose reader is gone: what `| head -1` leaves once head exits.
/// Closed before the child starts, so its first write already meets it.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer
}

/// Runs `command` to completion with stdout on a closed pipe (and stderr too when
/// `stderr_closed`, else captured). Not `util::run`: tokio's `output()` replaces both with
/// pipes of its own.
async fn run_into_closed_pipe(
    command: &mut tokio::process::Command,
    stderr_closed: bool,
) -> Output {
    let pipe = closed_pipe();
    let stderr = if stderr_closed {
        std::process::Stdio::from(pipe.try_clone().unwrap())
    } else {
        std::process::Stdio::piped()
    };
    let child = command
        .stdout(pipe)
        .stderr(stderr)
        .spawn()
        .expect("hotfolder starts");
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("hotfolder finished within 120 s")
        .expect("hotfolder ran")
}

/// No panic, no "Broken pipe" on stderr, and not killed by a signal.
fn assert_ended_quietly(what: &str, output: &Output) {
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "{what}: {stderr}"
    );
    assert!(
        output.status.code().is_some(),
        "{what}: {:?}",
        output.status
    );
}

/// A config for `emulator` with fast retries and one existing folder, in `dir`.
fn studio_config(emulator: &Emulator, dir: &Path) -> std::path::PathBuf {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_config(
        dir,
        &format!(
            "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\n",
            account_toml(emulator, "keycloak"),
            inbox.display()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Item 16: a closed stdout is a normal end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_ends_normally_when_stdout_is_closed() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = studio_config(&emulator, dir.path());
    let clip = dir.path().join("media/clip.mov");
    write_file(&clip, 3 * MIB + 5, 1);

    let quiet: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("status, no store yet", vec!["status".into()]),
        ("status --json", vec!["status".into(), "--json".into()]),
        ("check", vec!["check".into()]),
        (
            "init",
            vec!["init".into(), dir.path().join("new.toml").into()],
        ),
        ("--version", vec!["--version".into()]),
        ("--help", vec!["--help".into()]),
        ("help status", vec!["help".into(), "status".into()]),
    ];
    for (what, args) in quiet {
        let mut command = hotfolder();
        command.args(&args);
        if !matches!(what, "init" | "--version" | "--help" | "help status") {
            command.arg("--config").arg(&config);
        }
        let output = run_into_closed_pipe(&mut command, false).await;
        assert_ended_quietly(what, &output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{what}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stderr), "", "{what}: nothing on stderr");
    }
    assert!(
        dir.path().join("new.toml").exists(),
        "init wrote its file although nobody read what it said"
    );

    // `upload` still uploads; its stderr carries its progress lines (not a terminal).
    let output = run_into_closed_pipe(
        hotfolder()
            .arg("upload")
            .arg("--config")
            .arg(&config)
            .arg(&clip),
        false,
    )
    .await;
    assert_ended_quietly("upload", &output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert!(videos[0].complete, "{videos:?}");
}

/// `check 2>&1 | head -1`: stderr is the closed pipe too. Its verdict still comes through the
/// exit code: a closed pipe neither hides a problem nor makes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_and_stderr_leave_the_exit_code_alone() {
    // A config problem, printed by `main` as the process ends.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[account]\nusername = \"u\"\npassword = \"p\"\nvideo_manager_id = 1\n",
    );
    let output =
        run_into_closed_pipe(hotfolder().arg("check").arg("--config").arg(&config), true).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "no [[folder]]: a config problem"
    );

    // The settings and each try on stdout, the failed login on stderr.
    let dir = tempfile::tempdir().unwrap();
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = config_for_platform_at(dir.path(), closed_port);
    let output =
        run_into_closed_pipe(hotfolder().arg("check").arg("--config").arg(&config), true).await;
    assert_eq!(output.status.code(), Some(1), "the platform is down");
}

/// What the emulator on `port` answers to `GET /_emulator/stats`, or "" when nothing listens.
async fn stats_answer(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = "GET /_emulator/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    let exchanged = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut answer).await
    };
    match tokio::time::timeout(Duration::from_secs(5), exchanged).await {
        Ok(Ok(_)) => text(&answer),
        _ => String::new(),
    }
}

/// The long-running commands keep doing their job when nobody reads their banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_and_demo_keep_running_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let emulator = hotfolder()
        .arg("emulator")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut answered = false;
    for _ in 0..100 {
        if stats_answer(port).await.starts_with("HTTP/1.1 200") {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered,
        "the emulator serves after its banner met a closed pipe"
    );
    signal(&emulator, 15);
    let output = tokio::time::timeout(WAIT, emulator.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_ended_quietly("emulator", &output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let demo_dir = dir.path().join("demo");
    let demo = hotfolder()
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(WAIT, "the demo's sample in done/", || {
        files_under(&demo_dir.join("done"))
            .iter()
            .any(|f| f.ends_with(".mov.upload.json"))
    })
    .await;
    signal(&demo, 2);
    let output = tokio::time::timeout(WAIT, demo.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_ended_quietly("demo", &output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

// ---------------------------------------------------------------------------------------------
// Item 17: `check` with the platform down says what it does, and exits 1 in time.

/// A config whose platform is at `addr`, with short timeouts: 3 tries, 20 ms backoff cap,
/// 1 s per request.
fn config_for_platform_at(dir: &Path, addr: std::net::SocketAddr) -> std::path::PathBuf {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_config(
        dir,
        &format!(
            "[account]\napi_url = \"http://{addr}/api/\"\ntoken_url = \"http://{addr}/token\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\nvideo_manager_id = 12345\n\
             [upload]\nmax_attempts = 3\nbackoff_max = \"20ms\"\nrequest_timeout = \"1s\"\n\
             [[folder]]\npath = \"{}\"\n",
            inbox.display()
        ),
    )
}

/// Runs `check` and asserts what a user sees when the platform cannot be reached: a line per
/// try, the reason, exit 1 (not 2: the config may be fine), well within 35 s.
async fn check_sees_the_platform_down(config: &Path, reason: &str) {
    let started = Instant::now();
    let output = run(hotfolder().arg("check").arg("--config").arg(config)).await;
    let took = started.elapsed();
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    for number in 1..=3 {
        assert!(
            stdout.contains("logging in to http://")
                && stdout.contains(&format!("/token as {USER}, try {number} of 3")),
            "try {number} is announced:\n{stdout}"
        );
    }
    assert!(
        stderr.contains("could not be reached") || stderr.contains("did not answer"),
        "{stderr}"
    );
    assert!(stderr.contains(reason), "{stderr}");
    assert!(
        !stderr.contains("problem"),
        "not a config problem: {stderr}"
    );
    assert!(!stdout.contains("everything looks good"), "{stdout}");
    assert!(took < Duration::from_secs(35), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_closed_port_shows_each_try_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = config_for_platform_at(dir.path(), addr);
    check_sees_the_platform_down(&config, "connection failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_server_that_never_answers_gives_up_in_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Takes every connection and says nothing.
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config_for_platform_at(dir.path(), addr);
    check_sees_the_platform_down(&config, "timed out").await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_wrong_password_exits_1_after_one_login() {
    let emulator = emulator(|_| {}).await;
    emulator.set_password("rotated");
    let dir = tempfile::tempdir().unwrap();
    let config = studio_config(&emulator, dir.path());
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wrong username or password"), "{stderr}");
    // Repeating a refused login only brings the account closer to a lockout.
    assert_eq!(emulator.stats().logins_refused, 1);
}

// ---------------------------------------------------------------------------------------------
// Item 18: each command checks what it needs; `check` what `run` needs.

/// `check` run as the package's service user (HOME=/var/lib/hotfolder) with no `[log] dir`
/// made ~/.local/share/hotfolder/logs, which nothing writes to under the journal and which kept
/// purge from removing /var/lib/hotfolder. Only a chosen log dir is made and probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_makes_no_log_dir_that_was_not_chosen() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let state = dir.path().join("state");
    let body = format!(
        "{}\n[state]\ndir = \"{}\"\n[[folder]]\npath = \"{}\"\n",
        account_toml(&emulator, "keycloak"),
        state.display(),
        inbox.display()
    );
    // Not `write_config`: it names a log dir.
    let config = dir.path().join("config.toml");
    let write = |text: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let check = || async {
        run(hotfolder()
            .arg("check")
            .arg("--config")
            .arg(&config)
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME"))
        .await
    };
    write(&body);
    let output = check().await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        !home.join(".local/share/hotfolder/logs").exists(),
        "check made the default log dir: {:?}",
        files_under(&home)
    );

    // A chosen one is made and probed.
    let logs = dir.path().join("logs");
    write(&format!("{body}\n[log]\ndir = \"{}\"\n", logs.display()));
    let output = check().await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(logs.is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_config_without_a_folder_like_run_does() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{FAST_UPLOAD}", account_toml(&emulator, "keycloak")),
    );
    for command in ["check", "run"] {
        let output = run(hotfolder().arg(command).arg("--config").arg(&config)).await;
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {stdout}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("{}: folder: missing", config.display()))
                && stderr.contains("[[folder]]"),
            "{command}: {stderr}"
        );
        assert!(
            !stdout.contains("everything looks good"),
            "{command}: {stdout}"
        );
    }
    assert_eq!(emulator.stats().logins, 0, "refused before any login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_does_not_need_the_watched_folders() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let unplugged = dir.path().join("nas/exports");
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\n",
            account_toml(&emulator, "keycloak"),
            unplugged.display()
        ),
    );
    let clip = dir.path().join("desk/clip.mp4");
    write_file(&clip, 1000, 3);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&clip))
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(emulator.videos().len(), 1);

    // `run` and `check` do need it.
    for command in ["check", "run"] {
        let output = run(hotfolder().arg(command).arg("--config").arg(&config)).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("folder[1].path") && stderr.contains("does not exist"),
            "{command}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 19: `upload` checks each path before any request.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_refuses_what_could_never_be_uploaded_before_any_request() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{FAST_UPLOAD}", account_toml(&emulator, "keycloak")),
    );
    let at = |name: &str| dir.path().join(name);
    std::fs::create_dir(at("folder.mov")).unwrap();
    std::fs::write(at("notes.txt"), b"call the client").unwrap();
    std::fs::write(at("README"), b"read me").unwrap();
    std::fs::write(at("empty.mp4"), b"").unwrap();
    let made_fifo = std::process::Command::new("mkfifo")
        .arg(at("pipe.mov"))
        .status()
        .is_ok_and(|s| s.success());
    let bad: Vec<(&str, &str)> = {
        let mut bad = vec![
            ("missing.mov", "missing.mov does not exist"),
            ("folder.mov", "folder.mov is a folder, not a video file"),
            ("notes.txt", "the platform does not accept .txt files"),
            ("README", "README has no suffix"),
            ("empty.mp4", "empty.mp4 is empty (0 bytes)"),
        ];
        if made_fifo {
            bad.push((
                "pipe.mov",
                "pipe.mov is a named pipe (FIFO), not a video file",
            ));
        }
        bad
    };

    // Only bad paths: nothing reaches the platform, not even a login.
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .args(bad.iter().map(|(name, _)| at(name))))
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for (name, words) in &bad {
        assert!(
            stderr.contains(words)
                && stderr.contains(&format!("{}: not uploaded", at(name).display())),
            "{name}: {stderr}"
        );
    }
    assert!(!stderr.contains("permissions?"), "{stderr}");
    assert!(emulator.videos().is_empty(), "{:?}", emulator.videos());
    assert_eq!(emulator.stats().requests, 0);

    // Mixed with a good file, in --json: one line per path in order, the good one uploaded.
    let clip = at("clip.mov");
    write_file(&clip, 2 * MIB, 9);
    let mut paths: Vec<_> = bad.iter().map(|(name, _)| at(name)).collect();
    paths.insert(2, clip.clone());
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .args(&paths))
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), paths.len(), "{lines:?}");
    for (line, path) in lines.iter().zip(&paths) {
        assert_eq!(line["path"], path.display().to_string(), "{line}");
        if path == &clip {
            assert_eq!(line["status"], "uploaded", "{line}");
        } else {
            assert_eq!(line["status"], "failed", "{line}");
            assert!(
                line["meaning"].as_str().is_some_and(|m| !m.is_empty()),
                "{line}"
            );
        }
    }
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "one video, for clip.mov only: {videos:?}");
    assert_eq!(videos[0].file_name, "clip.mov");
}

// ---------------------------------------------------------------------------------------------
// Item 22: `init`'s file may hold a password.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_the_config_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotfolder/config.toml");
    let output = run(hotfolder().arg("init").arg(&path)).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), STARTER_CONFIG);

    // `--config FILE`, as the other commands take it, names the file too.
    let spelled = dir.path().join("spelled/config.toml");
    let output = run(hotfolder().arg("init").arg("--config").arg(&spelled)).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_to_string(&spelled).unwrap(), STARTER_CONFIG);

    // The folder it makes is the owner's only, whatever the umask: nobody else can swap the
    // config for their own.
    let path = dir.path().join("open/hotfolder/config.toml");
    let output = run(tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" init \"$1\"")
        .arg(env!("CARGO_BIN_EXE_hotfolder"))
        .arg(&path))
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for folder in [path.parent().unwrap(), dir.path().join("open").as_path()] {
        let mode = std::fs::metadata(folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: mode {mode:o}", folder.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_does_not_write_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere.toml");
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let output = run(hotfolder().arg("init").arg(&link)).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(
        !elsewhere.exists(),
        "nothing was written where the link points"
    );
}

/// Following the starter's own words: adding a password beside the switched-on password_env
/// is refused with a message that says what to do, and doing what the starter says works.
#[test]
fn the_starter_config_says_which_password_line_to_comment_out() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let starter = STARTER_CONFIG.replace("\"/srv/exports\"", &format!("{:?}", exports));
    assert!(
        starter.contains("put a\n# # in front of the password_env line"),
        "the starter says which line to comment out"
    );
    let with_password = starter.replace("# password = \"...\"", "password = \"s3cret\"");
    assert_ne!(with_password, starter);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &with_password).unwrap();
    let message = hotfolder::load_config(Some(&path)).unwrap_err().to_string();
    assert!(
        message.contains("password_env and password are both set")
            && message.contains("put a # in front of the other line"),
        "{message}"
    );
    let commented = with_password.replace(
        "\npassword_env = \"HOTFOLDER_PASSWORD\"",
        "\n# password_env = \"HOTFOLDER_PASSWORD\"",
    );
    std::fs::write(&path, &commented).unwrap();
    let settings = hotfolder::load_config(Some(&path)).unwrap();
    assert_eq!(
        settings.account.password_source,
        hotfolder::PasswordSource::Inline
    );
}

// ---------------------------------------------------------------------------------------------
// Item 23: one unit family, and percentages that match the counts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_rates_are_printed_in_binary_units_with_true_percentages() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    // 2.5 MiB in 1 MiB chunks: three chunks, the last one half full.
    write_file(&studio.inbox.join("three.mov"), 5 * MIB / 2, 4);
    let done = studio.done().join("three.mov");
    eventually(WAIT, "three.mov in done/", || arrived(&done)).await;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let log = studio.log_text();
    assert!(log.contains("uploading (2.5 MiB)"), "{log}");
    assert!(log.contains("chunk 1/3 sent (33%, 1 MiB so far)"), "{log}");
    assert!(log.contains("chunk 2/3 sent (66%, 2 MiB so far)"), "{log}");
    assert!(log.contains("uploaded (2.5 MiB at "), "{log}");
    assert!(!log.contains("25%") && !log.contains("MB/s"), "{log}");
    let events = sidecar(&done)["events"].to_string();
    assert!(
        events.contains("2.5 MiB (2621440 bytes) in 3 chunks at ") && events.contains(" MiB/s"),
        "{events}"
    );

    // `hotfolder upload` off a terminal: a line per tenth, in the same units.
    let clip = studio.dir.path().join("clip.mp4");
    write_file(&clip, 5 * MIB / 2, 5);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&studio.config)
        .arg(&clip))
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("chunk 1/3, 1 MiB of 2.5 MiB, "), "{stderr}");
    assert!(
        stderr.contains("chunk 3/3, 2.5 MiB of 2.5 MiB, "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("MB/s") && !stderr.contains(" bytes"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_rate_in_binary_units_while_uploading() {
    // 60 ms a request: twenty chunks take over a second, time enough to look.
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    write_file(&studio.inbox.join("long.mov"), 20 * MIB, 6);
    let mut seen = None;
    let started = Instant::now();
    while seen.is_none() && started.elapsed() < WAIT {
        let output = run(hotfolder()
            .arg("status")
            .arg("--config")
            .arg(&studio.config))
        .await;
        seen = text(&output.stdout)
            .lines()
            .find(|l| l.starts_with("uploading") && l.contains("/s"))
            .map(str::to_owned);
    }
    stop(agent).await;
    let line = seen.expect("status showed the upload with its rate");
    assert!(line.contains(" MiB/s") || line.contains(" KiB/s"), "{line}");
    assert!(!line.contains("MB/s"), "{line}");
}
