//! Running for months: what systemd sees on NOTIFY_SOCKET, the log files, secrets in logs,
//! SIGHUP reloads and secret-file warnings, through the real binary.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let socket_path = studio.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(studio.stderr_log()).unwrap();
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    let receive = |messages: &mut Vec<String>, buffer: &mut [u8]| {
        if let Ok(n) = socket.recv(buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    };
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        receive(&mut messages, &mut buffer);
        let all = messages.join("\n");
        if all.contains("READY=1") && all.matches("WATCHDOG=1").count() >= 2 {
            break;
        }
    }
    let all = messages.join("\n");
    assert!(all.contains("READY=1"), "{all}");
    assert!(
        all.matches("WATCHDOG=1").count() >= 2,
        "watchdog pings: {all}"
    );
    assert!(all.contains("STATUS=0 waiting, 0 uploading"), "{all}");
    let (status, _) = stop(agent).await;
    assert!(status.success());
    for _ in 0..20 {
        receive(&mut messages, &mut buffer);
    }
    assert!(messages.join("\n").contains("STOPPING=1"), "{messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_old_files_are_pruned_and_no_secret_is_logged() {
    let emulator = emulator(|o| o.url_max_chunks = Some(1)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let logs = studio.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for day in 1..=5 {
        std::fs::write(logs.join(format!("hotfolder.2020-01-0{day}.log")), "old\n").unwrap();
    }
    let text = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(
        &studio.config,
        text.replace("[log]\n", "[log]\nformat = \"json\"\nkeep_files = 2\n"),
    )
    .unwrap();
    write_file(&studio.inbox.join("clip.mov"), 3 * 1024 * 1024, 1);
    let log = std::fs::File::create(studio.stderr_log()).unwrap();
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("RUST_LOG", "trace")
        .stderr(log)
        .spawn()
        .unwrap();
    let sidecar = studio.done().join("clip.mov.upload.json");
    eventually(WAIT, "clip.mov done", || sidecar.exists()).await;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let files = files_under(&logs);
    assert!(files.len() <= 2, "keep_files = 2: {files:?}");
    let current = files
        .iter()
        .find(|f| !f.contains("2020-"))
        .expect("today's log file");
    let content = std::fs::read_to_string(logs.join(current)).unwrap();
    let mut lines = 0;
    for line in content.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 10, "{content}");
    assert!(content.contains("done"), "the move is logged");

    let everything = format!("{content}{}", studio.log_text());
    assert!(!everything.contains(PASSWORD), "password in a log");
    for secret in emulator.issued_secrets() {
        assert!(!everything.contains(&secret), "a token in a log: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_folder_and_refuses_a_broken_config() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    eventually(WAIT, "watching", || studio.log_text().contains("watching")).await;

    let second = studio.dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let second = std::fs::canonicalize(second).unwrap();
    let original = std::fs::read_to_string(&studio.config).unwrap();
    let with_second = format!(
        "{original}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n",
        second.display()
    );
    std::fs::write(&studio.config, &with_second).unwrap();
    signal(&agent, 1);
    eventually(WAIT, "reloaded", || {
        studio.log_text().contains("config reloaded")
    })
    .await;
    write_file(&second.join("b.mov"), 2000, 2);
    eventually(WAIT, "b.mov in second/done", || {
        second.join("done/b.mov.upload.json").exists()
    })
    .await;

    // A broken config is refused and the running one stays in force.
    let broken = with_second.replace("chunk_size = \"1 MiB\"", "chunk_size = 0");
    assert_ne!(broken, with_second);
    std::fs::write(&studio.config, broken).unwrap();
    signal(&agent, 1);
    eventually(WAIT, "refusal logged", || {
        studio.log_text().contains("config reload refused")
    })
    .await;
    assert!(
        studio.log_text().contains("chunk_size"),
        "{}",
        studio.log_text()
    );
    // Second hostile test of issue 13, D13: one readable line, no literal `\n` in it.
    let log = studio.log_text();
    let refusal = log
        .lines()
        .find(|line| line.contains("config reload refused"))
        .unwrap();
    assert!(
        !refusal.contains("\\n") && refusal.contains("chunk_size"),
        "{refusal}"
    );
    write_file(&second.join("c.mov"), 2000, 3);
    write_file(&studio.inbox.join("a.mov"), 2000, 4);
    eventually(WAIT, "both still watched", || {
        second.join("done/c.mov.upload.json").exists()
            && studio.done().join("a.mov.upload.json").exists()
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_readable_inline_password() {
    use std::os::unix::fs::PermissionsExt;
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // `check` checks what `run` needs, a folder among it.
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let folder = format!("\n[[folder]]\npath = \"{}\"\n", inbox.display());
    let config = write_config(
        dir.path(),
        &format!("{}{folder}", account_toml(&emulator, "keycloak")),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("warning")
            && stdout.contains("chmod o-r")
            && stdout.contains("password_file"),
        "{stdout}"
    );

    // A password file: its trailing newline is not part of the password.
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let body = account_toml(&emulator, "keycloak").replace(
        &format!("password = \"{PASSWORD}\""),
        &format!("password_file = \"{}\"", password_file.display()),
    );
    let config = write_config(dir.path(), &format!("{body}{folder}"));
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        !text(&output.stdout).contains("warning"),
        "{}",
        text(&output.stdout)
    );
}

/// An admin's shell under systemd: the credential file exists only inside the service, and
/// `status` is what they run when a share is gone. It needs neither; `check` still needs both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_works_without_the_service_credential_and_with_a_folder_gone() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    let path = studio.inbox.join("one.mov");
    write_file(&path, 500, 51);
    eventually(WAIT, "one.mov in done/", || {
        studio.done().join("one.mov").exists()
    })
    .await;
    stop(agent).await;

    let credential = studio
        .dir
        .path()
        .join("run/credentials/hotfolder.service/password");
    let text_before = std::fs::read_to_string(&studio.config).unwrap();
    let body = text_before.replace(
        &format!("password = \"{PASSWORD}\""),
        &format!("password_file = \"{}\"", credential.display()),
    );
    assert_ne!(
        body, text_before,
        "the test config has an inline password to replace"
    );
    std::fs::write(&studio.config, body).unwrap();
    std::fs::remove_dir_all(&studio.inbox).unwrap();

    let output = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("1 done") && stdout.contains("one.mov"),
        "{stdout}"
    );

    let output = run(hotfolder().arg("check").arg("--config").arg(&studio.config)).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("account.password_file") && stderr.contains("folder[1].path"),
        "{stderr}"
    );
}
