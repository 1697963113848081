//! When the account or the platform refuses every file alike (403 "may not create videos", a
//! maintenance page, a create answer without `Location`, a wrong password), `hotfolder run`
//! pauses the queue and moves no file, and resumes once the cause is gone; a wrong password is
//! not retried into an account lockout. A wrong `video_manager_id` holds the uploads into that
//! VideoManager only (see also `operate`), and moves no file either. Through the real binary
//! against the emulator on 127.0.0.1.

use std::time::Duration;

use hotfolder::{Emulator, Faults, PlatformRefusal};
use serde_json::Value;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);
const FILES: [&str; 3] = ["a.mov", "b.mov", "sub/c.mov"];

/// Polls `status --json` until the queue is paused; returns the pause's reason.
async fn paused_reason(studio: &Studio) -> String {
    let start = std::time::Instant::now();
    loop {
        let status = studio.status_json().await;
        if let Some(reason) = status["queue_paused"]["reason"].as_str() {
            return reason.to_owned();
        }
        assert!(
            start.elapsed() < WAIT,
            "the queue never paused: {status}\n{}",
            studio.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `hotfolder status` as a person reads it.
async fn status_text(studio: &Studio) -> String {
    let output = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Every file is still in the watched folder, nothing in failed/ or done/.
fn nothing_moved(studio: &Studio) {
    for name in FILES {
        assert!(studio.inbox.join(name).exists(), "{name} left the folder");
    }
    assert!(
        files_under(&studio.failed()).is_empty(),
        "failed/: {:?}",
        files_under(&studio.failed())
    );
    assert!(files_under(&studio.done()).is_empty());
}

/// Each file arrives in done/ with exactly one complete video on the platform.
async fn every_file_arrives(studio: &Studio, emulator: &Emulator, hashes: &[String]) {
    eventually(WAIT, "every file in done/", || {
        FILES.iter().all(|name| arrived(&studio.done().join(name)))
    })
    .await;
    for (name, hash) in FILES.iter().zip(hashes) {
        let file_name = name.rsplit('/').next().unwrap_or(name);
        let videos: Vec<_> = emulator
            .videos()
            .into_iter()
            .filter(|v| v.file_name == file_name)
            .collect();
        assert_eq!(videos.len(), 1, "one video for {name}: {videos:?}");
        assert_eq!(videos[0].sha256.as_deref(), Some(hash.as_str()), "{name}");
    }
    assert!(files_under(&studio.failed()).is_empty());
}

fn write_files(studio: &Studio) -> Vec<String> {
    FILES
        .iter()
        .enumerate()
        .map(|(i, name)| write_file(&studio.inbox.join(name), 1000 + i, 40 + i as u64))
        .collect()
}

/// The whole backlog meets `refusal`: the queue pauses with a reason that `says`, one log
/// line, no file moves; once the platform stops refusing, every file arrives.
async fn a_platform_refusal_pauses_the_queue_until_it_ends(refusal: PlatformRefusal, says: &str) {
    let emulator = emulator(|o| o.faults.platform_refusal = Some(refusal)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let hashes = write_files(&studio);
    let agent = studio.start();

    let reason = paused_reason(&studio).await;
    assert!(reason.contains(says), "{refusal:?}: {reason}");
    // Probes go on meanwhile (every 100 ms here), and still nothing moves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nothing_moved(&studio);
    let status = status_text(&studio).await;
    assert!(
        status.contains("PAUSED") && status.contains(says),
        "{refusal:?}: {status}"
    );
    let log = studio.log_text();
    assert_eq!(
        log.matches("uploads paused").count(),
        1,
        "{refusal:?}: one log line for the pause:\n{log}"
    );
    assert_eq!(emulator.stats().videos_created, 0);

    emulator.set_faults(Faults::default());
    every_file_arrives(&studio, &emulator, &hashes).await;
    assert!(studio.status_json().await["queue_paused"].is_null());
    stop(agent).await;
    assert!(studio.log_text().contains("uploads resumed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_create_pauses_the_queue_and_no_file_moves() {
    a_platform_refusal_pauses_the_queue_until_it_ends(
        PlatformRefusal::CreateForbidden,
        "may not create videos",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answer_without_location_pauses_the_queue_and_no_file_moves() {
    a_platform_refusal_pauses_the_queue_until_it_ends(
        PlatformRefusal::CreateWithoutLocation,
        "no Location header",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_page_pauses_the_queue_and_no_file_moves() {
    a_platform_refusal_pauses_the_queue_until_it_ends(
        PlatformRefusal::MaintenancePage,
        "down for maintenance",
    )
    .await;
}

/// The account's `video_manager_id` wrong: every folder uploads into it, so every file waits;
/// held, not paused (a folder with a right id would go on: `operate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_video_manager_id_holds_the_files_until_the_config_is_fixed() {
    let emulator = emulator(|o| o.video_managers = vec![12345]).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let config = std::fs::read_to_string(&studio.config).unwrap();
    let wrong = config.replace("video_manager_id = 12345", "video_manager_id = 54321");
    assert_ne!(wrong, config);
    std::fs::write(&studio.config, &wrong).unwrap();
    let hashes = write_files(&studio);
    let agent = studio.start();

    let start = std::time::Instant::now();
    let reason = loop {
        let status = studio.status_json().await;
        if let Some(reason) = status["held_video_managers"][0]["reason"].as_str() {
            assert_eq!(status["queue_paused"], Value::Null, "{status}");
            break reason.to_owned();
        }
        assert!(start.elapsed() < WAIT, "never held: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.contains("VideoManager 54321") && reason.contains("video_manager_id"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nothing_moved(&studio);
    assert!(status_text(&studio).await.contains("HELD since"));

    // The admin fixes the id and reloads.
    std::fs::write(&studio.config, &config).unwrap();
    signal(&agent, 1);
    every_file_arrives(&studio, &emulator, &hashes).await;
    stop(agent).await;
}

/// The studio's config with `password_file = "password"` (next to it) instead of the inline
/// password, and that file holding `password`.
fn with_password_file(studio: &Studio, password: &str) -> std::path::PathBuf {
    let config = std::fs::read_to_string(&studio.config).unwrap();
    let line = format!("password = \"{PASSWORD}\"");
    assert!(config.contains(&line));
    let config = config.replace(&line, "password_file = \"password\"");
    std::fs::write(&studio.config, config).unwrap();
    let file = studio.dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_tried_three_times_then_waits_for_the_password_file() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let password_file = with_password_file(&studio, "last-months-password");
    let hashes = write_files(&studio);
    let agent = studio.start();

    eventually(WAIT, "logins held back", || {
        studio.log_text().contains("login refused 3 times")
    })
    .await;
    // Left alone for a while (the pause's probes come every 100 ms here), it does not try
    // again: Keycloak would lock the account after 30 refusals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = emulator.stats().logins_refused;
    assert!(
        (3..=4).contains(&refused),
        "{refused} refused logins\n{}",
        studio.log_text()
    );
    nothing_moved(&studio);
    let status = status_text(&studio).await;
    assert!(
        status.contains("PAUSED")
            && status.contains("login refused 3 times")
            && status.contains("next try when the password changes")
            && status.contains(&password_file.display().to_string())
            && status.contains(" UTC"),
        "{status}"
    );
    let log = studio.log_text();
    assert!(log.contains("wrong username or password"), "{log}");
    assert_eq!(
        log.matches("login refused 3 times").count(),
        1,
        "said once:\n{log}"
    );
    assert!(!log.contains(PASSWORD) && !log.contains("last-months-password"));

    // SIGHUP is sent for many reasons: reloads that change nothing do not lift the hold.
    for _ in 0..3 {
        signal(&agent, 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        emulator.stats().logins_refused,
        refused,
        "{}",
        studio.log_text()
    );

    // The admin writes the new password into the file: no reload, no restart.
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    every_file_arrives(&studio, &emulator, &hashes).await;
    assert_eq!(emulator.stats().logins_refused, refused);
    stop(agent).await;
    assert!(
        studio
            .log_text()
            .contains("the password file changed; the next login uses the new password")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_rotated_on_the_platform_is_held_until_a_reload_brings_the_new_one() {
    // The password is inline: only a reload (or a restart) can change it. Access tokens that
    // expire soon, so that the rotation is noticed at once.
    let emulator = emulator(|o| o.access_ttl = Duration::from_secs(1)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    write_file(&studio.inbox.join("first.mov"), 1000, 50);
    let agent = studio.start();
    eventually(WAIT, "first.mov in done/", || {
        arrived(&studio.done().join("first.mov"))
    })
    .await;

    // Rotated on the platform: the refresh token stops working, the password is refused, and
    // the access token in hand has expired by the time the next file comes.
    emulator.set_password("rotated-by-it");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let hash = write_file(&studio.inbox.join("second.mov"), 1000, 51);
    let start = std::time::Instant::now();
    while !studio.log_text().contains("login refused 3 times") {
        assert!(
            start.elapsed() < WAIT,
            "logins not held back:\n{}",
            studio.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(emulator.stats().logins_refused, 3);
    let status: Value = studio.status_json().await;
    let reason = status["queue_paused"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("edit it in the config, then reload with SIGHUP or restart"),
        "{status}"
    );

    let config = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(&studio.config, config.replace(PASSWORD, "rotated-by-it")).unwrap();
    signal(&agent, 1);
    eventually(WAIT, "second.mov in done/", || {
        arrived(&studio.done().join("second.mov"))
    })
    .await;
    assert_eq!(
        sidecar(&studio.done().join("second.mov"))["sha256"],
        hash.as_str()
    );
    assert_eq!(emulator.stats().logins_refused, 3);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_video_manager_the_platform_does_not_know() {
    let emulator = emulator(|o| o.video_managers = vec![12345]).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let check = || async {
        let output = run(hotfolder().arg("check").arg("--config").arg(&studio.config)).await;
        let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
        (output.status.code(), all)
    };

    let (code, output) = check().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("video manager 12345: ok"), "{output}");
    assert!(output.contains("everything looks good"), "{output}");

    // The login works for any id; only the call into the VideoManager shows it is wrong.
    let config = std::fs::read_to_string(&studio.config).unwrap();
    let wrong = config.replace("video_manager_id = 12345", "video_manager_id = 54321");
    std::fs::write(&studio.config, &wrong).unwrap();
    let (code, output) = check().await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("login: ok"), "{output}");
    assert!(
        output.contains("video manager 54321") && output.contains("check video_manager_id"),
        "{output}"
    );
    assert!(!output.contains("everything looks good"), "{output}");
}
