//! `hotfolder upload` through the real binary against the emulator on 127.0.0.1: byte-exact
//! content, every fault, the odd readings of the protocol, and what a user sees on failure.

use std::time::Duration;

use hotfolder::{Emulator, Faults, PlatformRefusal};
use serde_json::Value;

use crate::util::*;

/// Uploads `files` (name, size, seed) with `hotfolder upload --json` and returns the parsed
/// lines, the process output and the expected hashes.
async fn upload_json(
    emulator: &Emulator,
    upload_toml: &str,
    auth: &str,
    files: &[(&str, usize, u64)],
) -> (Vec<Value>, std::process::Output, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{upload_toml}", account_toml(emulator, auth)),
    );
    let mut paths = Vec::new();
    let mut hashes = Vec::new();
    for (name, size, seed) in files {
        let path = dir.path().join("media").join(name);
        hashes.push(write_file(&path, *size, *seed));
        paths.push(path);
    }
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .args(&paths))
    .await;
    let lines = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("stdout is JSON lines"))
        .collect();
    // The files stay where they are.
    for path in &paths {
        assert!(path.exists(), "{} must stay in place", path.display());
    }
    (lines, output, hashes)
}

/// Every line uploaded, and the emulator holds exactly one complete, byte-exact video per file.
fn assert_byte_exact(
    emulator: &Emulator,
    lines: &[Value],
    hashes: &[String],
    output: &std::process::Output,
) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(lines.len(), hashes.len());
    for (line, hash) in lines.iter().zip(hashes) {
        assert_eq!(line["status"], "uploaded", "{line}");
        assert_eq!(line["sha256"].as_str(), Some(hash.as_str()), "{line}");
        let id = line["video_id"].as_str().unwrap();
        let video = emulator.video(id).expect("the video exists on the server");
        assert!(video.complete, "{video:?}");
        assert_eq!(
            video.sha256.as_deref(),
            Some(hash.as_str()),
            "server content differs"
        );
    }
    assert_eq!(
        emulator.videos().len(),
        hashes.len(),
        "exactly one video entity per file: {:?}",
        emulator.videos()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_chunk_boundaries_arrive_byte_exact() {
    let emulator = emulator(|_| {}).await;
    let files = [
        // Not a container the agent checks: one byte is still a file to send.
        ("one-byte.mkv", 1, 1),
        ("exactly-one-chunk.mov", MIB, 2),
        ("one-chunk-plus-one.mov", MIB + 1, 3),
        ("many-chunks.mxf", 5 * MIB + 12345, 4),
        ("Übergabe – 日本 clip.mov", 70_000, 5),
    ];
    let (lines, output, hashes) = upload_json(&emulator, FAST_UPLOAD, "keycloak", &files).await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
    let names: Vec<String> = emulator.videos().into_iter().map(|v| v.file_name).collect();
    assert!(
        names.contains(&"Übergabe – 日本 clip.mov".to_string()),
        "{names:?}"
    );
    let chunks: Vec<u64> = lines
        .iter()
        .map(|l| l["chunks"].as_u64().unwrap())
        .collect();
    assert_eq!(chunks, vec![1, 1, 2, 6, 1]);
    let titled = emulator
        .videos()
        .into_iter()
        .find(|v| v.file_name == "one-byte.mkv")
        .unwrap();
    assert_eq!(titled.title.as_deref(), Some("one-byte"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_output_is_path_and_video_id() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{FAST_UPLOAD}", account_toml(&emulator, "keycloak")),
    );
    let path = dir.path().join("a.mp4");
    write_file(&path, 3 * MIB, 9);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&path))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let video = &emulator.videos()[0];
    assert_eq!(stdout.trim(), format!("{}\t{}", path.display(), video.id));
    // Not a terminal: plain progress lines on stderr, no escape codes.
    let stderr = text(&output.stderr);
    assert!(stderr.contains("chunk 3/3"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

async fn with_faults(faults: Faults) {
    let emulator = emulator(|o| o.faults = faults).await;
    let files = [
        ("a.mp4", 4 * MIB + 7, 11),
        ("b.mov", 3 * MIB, 12),
        ("c.mov", 1000, 13),
    ];
    let upload = FAST_UPLOAD.replace("request_timeout = \"2s\"", "request_timeout = \"1s\"");
    let (lines, output, hashes) = upload_json(&emulator, &upload, "keycloak", &files).await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
    assert!(
        emulator.stats().faults_injected.total > 0,
        "no fault was injected: {:?}",
        emulator.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    with_faults(Faults {
        seed: 1,
        error_rate: 0.4,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_mid_body_are_retried() {
    with_faults(Faults {
        seed: 2,
        // High enough that the chunk posts meet at least one whatever order the two uploads'
        // requests draw the dice in.
        reset_rate: 0.6,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_are_resent_without_duplicating() {
    with_faults(Faults {
        seed: 3,
        // High enough that the nine chunk posts meet at least one whatever order the two
        // uploads' requests draw the dice in (0.4 left about 1 % of runs without a fault).
        lost_ack_rate: 0.6,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_time_out_and_are_retried() {
    with_faults(Faults {
        seed: 4,
        stall_rate: 0.3,
        stall: Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_with_retry_after_is_honoured() {
    with_faults(Faults {
        seed: 5,
        throttle_rate: 0.4,
        retry_after_secs: 0,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_faults_together_at_high_rates() {
    with_faults(Faults {
        seed: 6,
        error_rate: 0.15,
        reset_rate: 0.15,
        lost_ack_rate: 0.15,
        stall_rate: 0.05,
        stall: Duration::from_millis(1500),
        throttle_rate: 0.1,
        retry_after_secs: 0,
        lost_create_rate: 0.15,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_on_every_chunk_and_url_answered_200() {
    let emulator = emulator(|o| {
        o.created_on_every_chunk = true;
        o.url_status_ok = true;
    })
    .await;
    let (lines, output, hashes) = upload_json(
        &emulator,
        FAST_UPLOAD,
        "keycloak",
        &[("x.mp4", 5 * MIB + 1, 21)],
    )
    .await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_url_expiring_mid_file_is_renewed_for_the_same_video() {
    let emulator = emulator(|o| o.url_max_chunks = Some(2)).await;
    let (lines, output, hashes) = upload_json(
        &emulator,
        FAST_UPLOAD,
        "keycloak",
        &[("x.mov", 7 * MIB, 22)],
    )
    .await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
    let video = &emulator.videos()[0];
    assert!(video.urls_issued >= 4, "{video:?}");
    assert_eq!(
        video.restarts, 0,
        "a renewal with the same fileId continues: {video:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_lets_a_file_finish_stops_with_one_video() {
    // Every renewal names a new file and each URL takes only two chunks: a five-chunk file can
    // never finish. It must stop with a clear message instead of looping, with one video.
    let emulator = emulator(|o| {
        o.url_max_chunks = Some(2);
        o.new_file_id_on_renew = true;
    })
    .await;
    let upload = FAST_UPLOAD.replace("max_attempts = 30", "max_attempts = 3");
    let (lines, output, _) =
        upload_json(&emulator, &upload, "keycloak", &[("y.mov", 5 * MIB, 24)]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(lines[0]["status"], "failed");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("refusing to continue"),
        "{}",
        lines[0]
    );
    let video = &emulator.videos()[0];
    assert_eq!(emulator.videos().len(), 1);
    assert!(video.restarts >= 2, "{video:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_expiring_mid_file_is_refreshed() {
    let emulator = emulator(|o| {
        o.access_ttl = Duration::from_secs(1);
        o.url_max_chunks = Some(1);
        o.faults = Faults {
            seed: 7,
            stall_rate: 1.0,
            stall: Duration::from_millis(150),
            ..Default::default()
        };
    })
    .await;
    let (lines, output, hashes) = upload_json(
        &emulator,
        FAST_UPLOAD,
        "keycloak",
        &[("x.mov", 6 * MIB, 25)],
    )
    .await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
    let stats = emulator.stats();
    assert!(
        stats.refreshes + stats.logins >= 2,
        "the token was never renewed: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_auth_uploads() {
    let emulator = emulator(|o| o.legacy_vm_id_as_string = true).await;
    let (lines, output, hashes) = upload_json(
        &emulator,
        FAST_UPLOAD,
        "legacy",
        &[("x.mp4", 2 * MIB + 3, 26)],
    )
    .await;
    assert_byte_exact(&emulator, &lines, &hashes, &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_quota_stops_without_a_retry_storm() {
    let emulator = emulator(|o| o.quota_bytes = Some(2 * MIB as u64)).await;
    let (lines, output, _) = upload_json(
        &emulator,
        FAST_UPLOAD,
        "keycloak",
        &[("big.mov", 5 * MIB, 27)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    // The account's problem, not the file's.
    assert_eq!(lines[0]["status"], "not_uploaded");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("upload stopped: "), "{stderr}");
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.contains("storage quota"), "{error}");
    assert!(
        lines[0]["meaning"].as_str().unwrap().contains("storage"),
        "{}",
        lines[0]
    );
    // Two chunks fit, the third is refused once, and nothing is tried again.
    let stats = emulator.stats();
    assert!(stats.chunk_posts <= 3, "retry storm: {stats:?}\n{stderr}");
    assert_eq!(emulator.videos().len(), 1);
}

/// A suffix the platform would answer 415 is refused before any request (issue 10, item 19):
/// no login, no empty video left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_format_is_refused_before_the_platform_sees_it() {
    let emulator = emulator(|_| {}).await;
    let (lines, output, _) =
        upload_json(&emulator, FAST_UPLOAD, "keycloak", &[("notes.txt", 10, 28)]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("the platform does not accept .txt files"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0]["meaning"]
            .as_str()
            .unwrap()
            .contains("video format"),
        "{}",
        lines[0]
    );
    assert_eq!(emulator.stats().requests, 0);
    assert!(emulator.videos().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_tried_once_for_all_files_and_said_once() {
    let emulator = emulator(|_| {}).await;
    emulator.set_password("another-password");
    let files = [
        ("x.mp4", 1000, 29),
        ("y.mp4", 1000, 31),
        ("z.mp4", 1000, 32),
    ];
    let (lines, output, _) = upload_json(&emulator, FAST_UPLOAD, "keycloak", &files).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(lines.len(), 3, "one line per file");
    for line in &lines {
        assert_eq!(line["status"], "not_uploaded", "{line}");
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("wrong username or password"), "{error}");
    }
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr.matches("wrong username or password").count(),
        1,
        "said once:\n{stderr}"
    );
    // Each refusal brings the account closer to a lockout: one login for all three files.
    assert_eq!(emulator.stats().logins_refused, 1);
    assert!(emulator.videos().is_empty());
    assert!(!text(&output.stdout).contains(PASSWORD));

    // Without --json: no file is called failed, and the account's problem is said once.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &account_toml(&emulator, "keycloak"));
    let path = dir.path().join("clip.mov");
    write_file(&path, 1000, 33);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&path))
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("clip.mov: not uploaded"), "{stderr}");
    assert!(
        stderr.contains("upload stopped: login refused") && !stderr.contains("failed"),
        "{stderr}"
    );
    assert_eq!(emulator.stats().logins_refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_refusal_is_reported_as_the_accounts_problem() {
    let emulator = emulator(|o| {
        o.faults.platform_refusal = Some(PlatformRefusal::CreateForbidden);
    })
    .await;
    let files = [
        ("a.mp4", 1000, 34),
        ("b.mp4", 1000, 35),
        ("c.mp4", 1000, 36),
    ];
    let upload_toml = FAST_UPLOAD.replace("parallel = 2", "parallel = 1");
    let (lines, output, _) = upload_json(&emulator, &upload_toml, "keycloak", &files).await;
    assert_eq!(output.status.code(), Some(1));
    for line in &lines {
        assert_eq!(line["status"], "not_uploaded", "{line}");
        assert!(
            line["meaning"].as_str().unwrap().contains("this account"),
            "{line}"
        );
    }
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("upload stopped: create video: the server answered 403"),
        "{stderr}"
    );
    // The first file found out; the others were not sent to be refused the same way. (Its
    // create is sent twice: once more with a fresh token, in case rights changed.)
    let stats = emulator.stats();
    assert_eq!(stats.videos_created, 0);
    assert_eq!(stats.refreshes, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_before_any_request() {
    let emulator = emulator(|_| {}).await;
    let (lines, output, _) =
        upload_json(&emulator, FAST_UPLOAD, "keycloak", &[("empty.mp4", 0, 30)]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        lines[0]["error"].as_str().unwrap().contains("empty"),
        "{}",
        lines[0]
    );
    assert_eq!(emulator.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_at_trace_level() {
    let emulator = emulator(|o| {
        o.url_max_chunks = Some(1);
        o.faults = Faults {
            seed: 8,
            error_rate: 0.2,
            reset_rate: 0.1,
            ..Default::default()
        };
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{FAST_UPLOAD}", account_toml(&emulator, "keycloak")),
    );
    let path = dir.path().join("a.mp4");
    write_file(&path, 3 * MIB, 31);
    let output = run(hotfolder()
        .env("RUST_LOG", "trace")
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&path))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "trace logging was not on"
    );
    assert!(!all.contains(PASSWORD), "the password leaked");
    let secrets = emulator.issued_secrets();
    assert!(
        secrets.len() >= 4,
        "login and several upload URLs: {secrets:?}"
    );
    for token in secrets {
        assert!(!all.contains(&token), "a token leaked: {token}");
    }
    // URLs appear only masked.
    for line in all.lines().filter(|l| l.contains("__token__=")) {
        assert!(line.contains("__token__=***"), "{line}");
    }
}

/// Bad configs are refused with exit 2 and the key named, before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_exit_2_naming_the_key() {
    let emulator = emulator(|_| {}).await;
    let account = account_toml(&emulator, "keycloak");
    let cases = [
        (
            format!("{account}\n[upload]\nchunk_sise = \"8 MiB\"\n"),
            "chunk_sise",
        ),
        (
            format!("{account}\n[upload]\nbackoff_max = \"ten seconds\"\n"),
            "backoff_max",
        ),
        (
            format!("{account}\n[upload]\nchunk_size = 0\n"),
            "chunk_size",
        ),
        (
            account.replace(&format!("password = \"{PASSWORD}\"\n"), ""),
            "password",
        ),
    ];
    for (body, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &body);
        let media = dir.path().join("a.mp4");
        write_file(&media, 1000, 1);
        let output = run(hotfolder()
            .arg("upload")
            .arg("--config")
            .arg(&config)
            .arg(&media))
        .await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
        assert!(stderr.contains("config.toml"), "file not named: {stderr}");
    }
    assert_eq!(emulator.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_logs_in_and_reports_problems() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("exports");
    std::fs::create_dir(&folder).unwrap();
    let body = format!(
        "{}\n[[folder]]\npath = \"{}\"\n",
        account_toml(&emulator, "keycloak"),
        folder.display()
    );
    let config = write_config(dir.path(), &body);
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("login: ok"), "{stdout}");
    assert!(!stdout.contains(PASSWORD), "{stdout}");
    assert_eq!(emulator.stats().logins, 1);

    // A refused login is not a config problem (exit 1, not 2), and is tried once.
    emulator.set_password("changed");
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("wrong username or password"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(emulator.stats().logins_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limit_caps_the_rate() {
    let emulator = emulator(|_| {}).await;
    let upload = format!("{FAST_UPLOAD}bandwidth_limit = \"2 MiB/s\"\n");
    let start = std::time::Instant::now();
    let (lines, output, hashes) =
        upload_json(&emulator, &upload, "keycloak", &[("x.mp4", 6 * MIB, 40)]).await;
    let took = start.elapsed();
    assert_byte_exact(&emulator, &lines, &hashes, &output);
    // No burst: all 6 MiB take 3 s at 2 MiB/s.
    assert!(took >= Duration::from_millis(2700), "took {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// The library's view of `emulator` with [`FAST_UPLOAD`]'s settings, from a config written
/// in `dir`.
fn library_platform(
    emulator: &Emulator,
    dir: &std::path::Path,
) -> std::sync::Arc<hotfolder::Platform> {
    let config = write_config(
        dir,
        &format!("{}\n{FAST_UPLOAD}", account_toml(emulator, "keycloak")),
    );
    let settings =
        hotfolder::Settings::from_toml_str(&std::fs::read_to_string(&config).unwrap(), &config)
            .unwrap();
    hotfolder::Platform::new(&settings.account, &settings.upload).unwrap()
}

/// The library's resume: a job whose chunks were all accepted before the agent stopped (it
/// died between the last chunk and the move) finishes with the hash of the content and sends
/// nothing more; a resume in the middle sends only the rest, to the same video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_sends_only_what_the_platform_has_not_accepted() {
    use hotfolder::Unobserved;
    use hotfolder::{ResumePoint, UploadRequest, upload_file};
    use tokio_util::sync::CancellationToken;

    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let platform = library_platform(&emulator, dir.path());
    let path = dir.path().join("resumed.mov");
    let expected = write_file(&path, 3 * MIB + 10, 91);
    let request = |resume: ResumePoint| UploadRequest {
        path: path.clone(),
        file_name: "resumed.mov".into(),
        metadata: Default::default(),
        resume,
    };
    let stop = CancellationToken::new();

    let first = upload_file(
        &platform,
        request(ResumePoint::default()),
        &Unobserved,
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(
        (first.chunks, first.sha256.as_str()),
        (4, expected.as_str())
    );
    let posts = emulator.stats().chunk_posts;

    let all_accepted = ResumePoint {
        video_id: Some(first.video_id.clone()),
        url: None,
        next_chunk: 5,
        chunk_size: Some(first.chunk_size),
        ..ResumePoint::default()
    };
    let again = upload_file(&platform, request(all_accepted), &Unobserved, &stop)
        .await
        .unwrap();
    assert_eq!(again.video_id, first.video_id);
    assert_eq!(again.sha256, expected);
    assert_eq!(again.bytes_sent, 0);
    assert_eq!(
        emulator.stats().chunk_posts,
        posts,
        "nothing was sent again"
    );
    assert_eq!(emulator.videos().len(), 1);

    // Stopped after chunk 2 of 4, then resumed at chunk 3.
    struct StopAfterTwo {
        stop: CancellationToken,
        video: std::sync::Mutex<Option<String>>,
    }
    impl hotfolder::UploadObserver for StopAfterTwo {
        fn video_created(&self, video_id: &str) {
            *self.video.lock().unwrap() = Some(video_id.to_owned());
        }
        fn chunk_accepted(
            &self,
            index: u32,
            _total: u32,
            _chunk_size: u64,
            _done: u64,
            _took: Duration,
        ) {
            if index == 2 {
                self.stop.cancel();
            }
        }
    }
    let observer = StopAfterTwo {
        stop: CancellationToken::new(),
        video: Default::default(),
    };
    let stopped = upload_file(
        &platform,
        request(ResumePoint::default()),
        &observer,
        &observer.stop,
    )
    .await;
    assert!(stopped.is_err(), "{stopped:?}");
    let video_id = observer.video.lock().unwrap().clone().unwrap();
    let posts = emulator.stats().chunk_posts;
    let middle = ResumePoint {
        video_id: Some(video_id.clone()),
        url: None,
        next_chunk: 3,
        chunk_size: Some(first.chunk_size),
        ..ResumePoint::default()
    };
    let resumed = upload_file(&platform, request(middle), &Unobserved, &stop)
        .await
        .unwrap();
    assert_eq!(resumed.video_id, video_id);
    assert_eq!(resumed.sha256, expected);
    assert_eq!(
        emulator.stats().chunk_posts - posts,
        2,
        "only chunks 3 and 4"
    );
    let videos = emulator.videos();
    let video = videos.iter().find(|v| v.id == video_id).unwrap();
    assert_eq!(video.sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(
        videos.len(),
        2,
        "one video per upload_file without a resume point"
    );
}

/// A process stopped (SIGSTOP, a frozen VM) after it recorded "a create is on its way" and
/// before the request left must not create the video when it wakes: by then another agent
/// may have taken the file over, found no video by its marker and created it. The create's
/// body asks the observer's check when it is written; a failed check cuts it short, so the
/// platform makes nothing, and the file server (`may_continue`) decides: taken over, the
/// upload stops as if cancelled; still this agent's (it was only slow), the create goes again
/// and makes the file's one video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_claim_went_stale_after_it_was_recorded_makes_no_video() {
    use hotfolder::{ResumePoint, SendingCheck, UploadRequest, VmproError, upload_file};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tokio_util::sync::CancellationToken;

    /// Goes stale the moment the create is recorded, as a claim does when its process is
    /// stopped for longer than half a lease right there.
    struct StoppedAfterRecording {
        /// What the file server says when asked: the claim is still this process's.
        still_ours: bool,
        stale: Arc<AtomicBool>,
        recorded: AtomicU32,
    }
    impl hotfolder::UploadObserver for StoppedAfterRecording {
        fn create_sending(
            &self,
            _marker: Option<&str>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if self.recorded.fetch_add(1, Ordering::SeqCst) == 0 {
                self.stale.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
        fn sending_check(&self) -> Option<SendingCheck> {
            let stale = self.stale.clone();
            Some(Arc::new(move || !stale.load(Ordering::SeqCst)))
        }
        fn may_continue(&self) -> bool {
            // Taken over (if at all) while stopped after recording the create.
            let ours = self.still_ours || self.recorded.load(Ordering::SeqCst) == 0;
            if ours {
                // Asked of the file server, which confirms the claim again.
                self.stale.store(false, Ordering::SeqCst);
            }
            ours
        }
    }

    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let platform = library_platform(&emulator, dir.path());
    let path = dir.path().join("claimed.mov");
    let expected = write_file(&path, MIB + 10, 17);
    let request = || UploadRequest {
        path: path.clone(),
        file_name: "claimed.mov".into(),
        metadata: Default::default(),
        resume: ResumePoint::default(),
    };
    let stop = CancellationToken::new();

    let taken_over = StoppedAfterRecording {
        still_ours: false,
        stale: Arc::default(),
        recorded: AtomicU32::new(0),
    };
    let result = upload_file(&platform, request(), &taken_over, &stop).await;
    assert_eq!(
        taken_over.recorded.load(Ordering::SeqCst),
        1,
        "the create got as far as being recorded, once"
    );
    assert!(
        matches!(result, Err(VmproError::Cancelled)),
        "stops as if cancelled: {result:?}"
    );
    assert!(
        emulator.videos().is_empty(),
        "the late create made a video: {:?}",
        emulator.videos()
    );

    let only_slow = StoppedAfterRecording {
        still_ours: true,
        stale: Arc::default(),
        recorded: AtomicU32::new(0),
    };
    let report = upload_file(&platform, request(), &only_slow, &stop)
        .await
        .unwrap();
    assert_eq!(
        only_slow.recorded.load(Ordering::SeqCst),
        2,
        "the create was cut short once, then sent again"
    );
    assert_eq!(report.sha256, expected);
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert_eq!(videos[0].id, report.video_id);
    assert!(videos[0].complete, "{videos:?}");
}

/// A chunk body cut short by the claim check (the process was stopped for more than half a
/// lease) is not the end of the upload when the file server says the claim is still this
/// process's: the chunk goes again, whole, and the upload finishes on its one video (hostile
/// test: the job was taken for taken over, and adopted again as if after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_cut_short_by_the_claim_check_goes_again_while_the_claim_is_still_held() {
    use hotfolder::{ResumePoint, SendingCheck, UploadRequest, upload_file};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio_util::sync::CancellationToken;

    /// Stale once, at the third piece (the first of chunk 2); the file server then confirms.
    struct StaleOnce {
        checks: Arc<AtomicU32>,
        asked: AtomicU32,
    }
    impl hotfolder::UploadObserver for StaleOnce {
        fn sending_check(&self) -> Option<SendingCheck> {
            let checks = self.checks.clone();
            Some(Arc::new(move || checks.fetch_add(1, Ordering::SeqCst) != 2))
        }
        fn may_continue(&self) -> bool {
            self.asked.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let platform = library_platform(&emulator, dir.path());
    let path = dir.path().join("held.mov");
    let expected = write_file(&path, 3 * MIB + 10, 23);
    let observer = StaleOnce {
        checks: Arc::default(),
        asked: AtomicU32::new(0),
    };
    let request = UploadRequest {
        path: path.clone(),
        file_name: "held.mov".into(),
        metadata: Default::default(),
        resume: ResumePoint::default(),
    };
    let report = upload_file(&platform, request, &observer, &CancellationToken::new())
        .await
        .expect("the upload goes on after the claim is confirmed");
    assert_eq!(report.sha256, expected);
    assert_eq!(report.chunks, 4);
    assert_eq!(
        emulator.stats().chunk_posts,
        5,
        "chunk 2 went twice, the rest once"
    );
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert!(videos[0].complete);
    assert_eq!(videos[0].sha256.as_deref(), Some(expected.as_str()));
}
