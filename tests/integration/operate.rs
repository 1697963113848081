//! The weekly tasks of issue 13 through the binary: done/ retention (`keep_done_for`), several
//! VideoManagers (`video_manager_id` per folder), and `hotfolder failed` / `hotfolder retry`.

use std::path::Path;
use std::time::{Duration, Instant};

use hotfolder::Emulator;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

fn video_of(emulator: &Emulator, file_name: &str) -> hotfolder::VideoRecord {
    emulator
        .videos()
        .into_iter()
        .find(|v| v.file_name == file_name && v.complete)
        .unwrap_or_else(|| panic!("no complete video for {file_name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_done_for_deletes_only_the_uploaded_files_hotfolder_placed() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"2s\"\ninclude = [\"*.mov\", \"*.txt\"]",
    );
    // One that stays untouched in failed/ (415), and one that never was ours in done/.
    write_file(&studio.inbox.join("notes.txt"), 100, 3);
    std::fs::create_dir_all(studio.done()).unwrap();
    let stranger = studio.done().join("stranger.mov");
    write_file(&stranger, 1000, 4);
    for (name, seed) in [("kept.mov", 1), ("replaced.mov", 2), ("gone.mov", 5)] {
        write_file(&studio.inbox.join(name), MIB + 7, seed);
    }
    let agent = studio.start();
    let done = |name: &str| studio.done().join(name);
    eventually(WAIT, "all three in done/", || {
        arrived(&done("kept.mov")) && arrived(&done("replaced.mov")) && arrived(&done("gone.mov"))
    })
    .await;
    let arrived_at = Instant::now();
    // Within the 2 s: another file under one name (a new inode), and one video deleted on the
    // platform.
    let other = studio.dir.path().join("other.mov");
    write_file(&other, 500, 9);
    std::fs::rename(&other, done("replaced.mov")).unwrap();
    let gone_video = video_of(&emulator, "gone.mov").id;
    assert!(emulator.delete_video(&gone_video));
    eventually(WAIT, "failed/notes.txt", || {
        arrived(&studio.failed().join("notes.txt"))
    })
    .await;

    eventually(WAIT, "done/kept.mov deleted", || !done("kept.mov").exists()).await;
    assert!(
        arrived_at.elapsed() >= Duration::from_millis(1500),
        "deleted {:?} after it arrived, before keep_done_for (2 s) passed",
        arrived_at.elapsed()
    );
    eventually(WAIT, "the 404 logged", || {
        studio.log_text().contains("keeping done/gone.mov")
    })
    .await;
    // Another round at least (every 0.5 s), to see that nothing else goes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = studio.log_text();
    assert!(
        log.contains("deleted done/kept.mov, uploaded") && log.contains("its sidecar stays"),
        "{log}"
    );
    assert!(log.contains(&gone_video) && log.contains("404"), "{log}");
    assert!(sidecar_of(&done("kept.mov")).exists(), "its sidecar stays");
    assert_eq!(std::fs::read(done("replaced.mov")).unwrap().len(), 500);
    assert!(done("gone.mov").exists(), "the only copy stays");
    assert!(
        stranger.exists(),
        "a file hotfolder did not put there stays"
    );
    assert!(studio.failed().join("notes.txt").exists());
    assert!(sidecar_of(&studio.failed().join("notes.txt")).exists());
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_folder_uploads_into_its_own_video_manager_and_check_names_an_unknown_one() {
    let emulator = emulator(|o| o.video_managers = vec![12345, 777]).await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let folders = |other_vm: u64| {
        format!(
            "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\nvideo_manager_id = {other_vm}\n",
            account_toml(&emulator, "keycloak"),
            first.display(),
            second.display()
        )
    };
    let config = write_config(dir.path(), &folders(777));
    write_file(&first.join("a.mov"), MIB, 1);
    write_file(&second.join("b.mov"), MIB, 2);
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(WAIT, "both in done/", || {
        arrived(&first.join("done/a.mov")) && arrived(&second.join("done/b.mov"))
    })
    .await;
    assert_eq!(video_of(&emulator, "a.mov").video_manager_id, 12345);
    assert_eq!(video_of(&emulator, "b.mov").video_manager_id, 777);
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(
        out.contains("video manager 12345: ok") && out.contains("video manager 777: ok"),
        "{out}"
    );

    let config = write_config(dir.path(), &folders(999));
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert!(
        err.contains("video manager 999") && err.contains("folder[2]"),
        "{err}"
    );
}

async fn hotfolder_in(config: &Path, args: &[&str]) -> std::process::Output {
    run(hotfolder().args(args).arg("--config").arg(config)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lists_reasons_and_retry_puts_files_back_for_the_running_agent() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        // Empty files wait for their writer up to incomplete_after, then fail.
        "stable_for = \"300ms\"\nincomplete_after = \"1s\"\ninclude = [\"*.mov\", \"*.txt\"]",
    );
    std::fs::create_dir_all(studio.inbox.join("sub")).unwrap();
    std::fs::write(studio.inbox.join("empty.mov"), b"").unwrap();
    std::fs::write(studio.inbox.join("sub/empty.mov"), b"").unwrap();
    let agent = studio.start();
    let failed = |rel: &str| studio.failed().join(rel);
    eventually(WAIT, "both empty files in failed/", || {
        arrived(&failed("empty.mov")) && arrived(&failed("sub/empty.mov"))
    })
    .await;
    // A later failure: the newest comes first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    write_file(&studio.inbox.join("notes.txt"), 100, 3);
    eventually(WAIT, "notes.txt in failed/", || {
        arrived(&failed("notes.txt"))
    })
    .await;

    let output = hotfolder_in(&studio.config, &["failed", "--json"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        listed[0]["rel_path"], "notes.txt",
        "newest first: {listed:?}"
    );
    assert_eq!(listed[0]["status"], 415);
    assert!(
        listed[1..]
            .iter()
            .all(|f| f["reason"].as_str().unwrap().contains("empty")),
        "{listed:?}"
    );
    let output = hotfolder_in(&studio.config, &["failed"]).await;
    let out = text(&output.stdout);
    assert!(output.status.success());
    assert!(
        out.contains("415") && out.contains("3 failed file(s)"),
        "{out}"
    );
    let output = hotfolder_in(&studio.config, &["failed", "--since", "2s", "--json"]).await;
    let recent: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(recent.as_array().unwrap().len(), 1, "{recent}");

    // A path outside failed/ is refused, and said why.
    let outside = studio.dir.path().join("elsewhere.mov");
    write_file(&outside, 1000, 1);
    let output = hotfolder_in(&studio.config, &["retry", outside.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("not in the failed/"),
        "{}",
        text(&output.stderr)
    );
    std::fs::remove_file(&outside).unwrap();

    // Fixed, and put back while the agent runs: one by path, the rest with --all.
    let fixed = write_file(&failed("empty.mov"), MIB, 7);
    write_file(&failed("sub/empty.mov"), MIB, 8);
    let output = hotfolder_in(
        &studio.config,
        &["retry", failed("empty.mov").to_str().unwrap()],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        !sidecar_of(&failed("empty.mov")).exists(),
        "no sidecar left alone"
    );
    eventually(WAIT, "done/empty.mov", || {
        arrived(&studio.done().join("empty.mov"))
    })
    .await;
    assert_eq!(
        video_of(&emulator, "empty.mov").sha256.as_deref(),
        Some(fixed.as_str())
    );
    let output = hotfolder_in(&studio.config, &["retry", "--all"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    eventually(WAIT, "done/sub/empty.mov", || {
        arrived(&studio.done().join("sub/empty.mov"))
    })
    .await;
    // notes.txt went back too, and failed again.
    eventually(WAIT, "notes.txt back in failed/", || {
        arrived(&failed("notes.txt"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    // A name taken in the watched folder: the file comes back under a numbered name.
    std::fs::write(studio.inbox.join("notes.txt"), b"someone else's").unwrap();
    let output = hotfolder_in(
        &studio.config,
        &["retry", failed("notes.txt").to_str().unwrap()],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("notes (1).txt"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        std::fs::read(studio.inbox.join("notes.txt")).unwrap(),
        b"someone else's"
    );
    assert_eq!(
        std::fs::read(studio.inbox.join("notes (1).txt"))
            .unwrap()
            .len(),
        100
    );
}

/// Hostile test of issue 13, D1: two `retry --all` at once (a cron job and an admin) each took
/// the other's half-done move for an interrupted one and cleaned it up: files were lost. Now
/// one run waits for the other, and every file is back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_retries_at_once_lose_no_file() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let mut names = Vec::new();
    for i in 0..150 {
        let sub = if i % 3 == 0 {
            format!("s{}/", i % 7)
        } else {
            String::new()
        };
        let name = format!("{sub}f{i}.mp4");
        let path = studio.failed().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("content {i}")).unwrap();
        names.push(name);
    }
    let both = [0, 1].map(|_| {
        hotfolder()
            .arg("retry")
            .arg("--config")
            .arg(&studio.config)
            .arg("--all")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    });
    for mut run in both {
        run.wait().await.unwrap();
    }
    for name in &names {
        assert!(studio.inbox.join(name).exists(), "{name} is back");
        assert!(!studio.failed().join(name).exists(), "{name} left failed/");
    }
}

/// Hostile test of issue 13, D5: one failed file whose name is not valid UTF-8 made
/// `failed --json` print nothing and exit 1, so a monitoring script saw no failed file at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_json_lists_a_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    std::fs::create_dir_all(studio.failed()).unwrap();
    let odd = studio
        .failed()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.mp4"));
    std::fs::write(&odd, b"x").unwrap();
    std::fs::write(studio.failed().join("plain.mp4"), b"y").unwrap();
    let output = hotfolder_in(&studio.config, &["failed", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let listed = text(&output.stdout);
    assert!(listed.contains("caf\u{fffd}.mp4"), "{listed}");
    assert!(listed.contains("plain.mp4"), "{listed}");
}

/// `hotfolder run --config CONFIG` in the background, its stderr appended to `log`.
fn start_run(config: &Path, log: &Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    hotfolder()
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Hostile test of issue 13, finding 1: with two folders sharing one failed/, `failed` and
/// `retry` took the first folder for every file, so a retried file went back into the wrong
/// folder and was uploaded into the other folder's VideoManager. Now it goes back where it was
/// dropped (its sidecar says), and a file nobody can place is refused, naming both folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_puts_a_file_from_a_shared_failed_dir_back_into_the_folder_it_came_from() {
    let emulator = emulator(|o| o.video_managers = vec![12345, 777]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (first, second, failed) = (root.join("first"), root.join("second"), root.join("failed"));
    for folder in [&first, &second, &failed] {
        std::fs::create_dir_all(folder).unwrap();
    }
    let folder = |path: &Path, extra: &str| {
        format!(
            "[[folder]]\npath = \"{}\"\nfailed_dir = \"{}\"\nstable_for = \"300ms\"\nincomplete_after = \"1s\"\n{extra}\n",
            path.display(),
            failed.display()
        )
    };
    let config = write_config(
        &root,
        &format!(
            "{}\n{FAST_UPLOAD}\n{}\n{}",
            account_toml(&emulator, "keycloak"),
            folder(&first, ""),
            folder(&second, "video_manager_id = 777")
        ),
    );
    let log = root.join("run.log");
    // An empty file waits for its writer, then fails: into the shared failed/.
    std::fs::write(second.join("clip.mov"), b"").unwrap();
    let agent = start_run(&config, &log);
    eventually(WAIT, "failed/clip.mov", || {
        arrived(&failed.join("clip.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
    assert_eq!(
        sidecar(&failed.join("clip.mov"))["folder"],
        second.to_str().unwrap()
    );

    // And one put there by hand: no sidecar, no job.
    std::fs::write(failed.join("stray.mov"), b"x").unwrap();
    let output = hotfolder_in(&config, &["failed", "--json"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "the shared failed/ once: {listed:?}");
    let entry = |name: &str| {
        listed
            .iter()
            .find(|f| f["rel_path"] == name)
            .unwrap_or_else(|| panic!("{name} in {listed:?}"))
    };
    assert_eq!(entry("clip.mov")["folder"], second.to_str().unwrap());
    assert_eq!(entry("stray.mov")["folder"], serde_json::Value::Null);
    assert_eq!(
        entry("stray.mov")["candidates"],
        serde_json::json!([first.to_str().unwrap(), second.to_str().unwrap()])
    );
    let output = hotfolder_in(&config, &["failed"]).await;
    let out = text(&output.stdout);
    assert!(
        out.contains(&format!("from {}", second.display())) && out.contains("from: unknown"),
        "{out}"
    );

    // Fixed, and retried: back into the second folder; the stray is refused.
    write_file(&failed.join("clip.mov"), MIB, 3);
    let output = hotfolder_in(&config, &["retry", "--all"]).await;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot tell which watched folder")
            && err.contains(first.to_str().unwrap())
            && err.contains(second.to_str().unwrap()),
        "{err}"
    );
    assert!(second.join("clip.mov").exists());
    assert!(!first.join("clip.mov").exists());
    assert!(failed.join("stray.mov").exists(), "the stray stays");

    // The agent uploads it into the second folder's VideoManager.
    let agent = start_run(&config, &log);
    eventually(WAIT, "second/done/clip.mov", || {
        arrived(&second.join("done/clip.mov"))
    })
    .await;
    assert_eq!(video_of(&emulator, "clip.mov").video_manager_id, 777);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Second hostile test of issue 13, D3/D8: `retry` put a file whose recorded folder is no
/// longer configured into "the only folder sharing this failed/", another VideoManager. Now
/// what was recorded decides: the store over the sidecar (which can be edited by hand), and a
/// recorded folder that is not configured with this failed/ is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_never_guesses_a_folder_when_the_recorded_one_is_not_configured() {
    let emulator = emulator(|o| o.video_managers = vec![12345, 777]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (first, second, failed) = (root.join("first"), root.join("second"), root.join("failed"));
    for folder in [&first, &second, &failed] {
        std::fs::create_dir_all(folder).unwrap();
    }
    let folder = |path: &Path, extra: &str| {
        format!(
            "[[folder]]\npath = \"{}\"\nfailed_dir = \"{}\"\nstable_for = \"300ms\"\nincomplete_after = \"1s\"\n{extra}\n",
            path.display(),
            failed.display()
        )
    };
    let head = format!("{}\n{FAST_UPLOAD}\n", account_toml(&emulator, "keycloak"));
    let both = format!(
        "{head}{}{}",
        folder(&first, ""),
        folder(&second, "video_manager_id = 777")
    );
    let config = write_config(&root, &both);
    let log = root.join("run.log");
    std::fs::write(second.join("clip.mov"), b"").unwrap();
    let agent = start_run(&config, &log);
    eventually(WAIT, "failed/clip.mov", || {
        arrived(&failed.join("clip.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
    let second_text = second.to_str().unwrap();

    // The second folder removed: the store (and the sidecar) say it came from there.
    write_config(&root, &format!("{head}{}", folder(&first, "")));
    let clip = failed.join("clip.mov");
    let output = hotfolder_in(&config, &["retry", clip.to_str().unwrap()]).await;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the state store says it came from {second_text}"))
            && err.contains("not a configured folder any more")
            && err.contains(first.to_str().unwrap()),
        "{err}"
    );
    assert!(
        clip.exists() && !first.join("clip.mov").exists(),
        "nothing moved"
    );

    // Renamed in failed/, only its sidecar tells.
    let other = failed.join("other.mov");
    std::fs::rename(&clip, &other).unwrap();
    std::fs::rename(sidecar_of(&clip), sidecar_of(&other)).unwrap();
    let output = hotfolder_in(&config, &["retry", other.to_str().unwrap()]).await;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("its sidecar says it came from {second_text}"))
            && !err.contains("neither its sidecar"),
        "{err}"
    );
    assert!(
        other.exists() && !first.join("other.mov").exists(),
        "nothing moved"
    );
    std::fs::rename(&other, &clip).unwrap();
    std::fs::rename(sidecar_of(&other), sidecar_of(&clip)).unwrap();

    // Both configured again, and the sidecar edited to name the first: the store wins.
    write_config(&root, &both);
    let mut edited = sidecar(&clip);
    edited["folder"] = serde_json::json!(first.to_str().unwrap());
    std::fs::write(sidecar_of(&clip), edited.to_string()).unwrap();
    let output = hotfolder_in(&config, &["retry", clip.to_str().unwrap()]).await;
    let err = text(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("the store is trusted"), "{err}");
    assert!(second.join("clip.mov").exists(), "back where it came from");
    assert!(!first.join("clip.mov").exists());
}

/// Hostile test of issue 13, finding 2: one folder whose `video_manager_id` the platform does
/// not know paused every folder's uploads. Now only that folder's files wait (in their folder,
/// not failed), the others arrive, `status` says why, and a fixed config lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_an_unknown_video_manager_holds_only_its_own_files() {
    let emulator = emulator(|o| o.video_managers = vec![12345]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (good, bad) = (root.join("good"), root.join("bad"));
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    let body = |bad_vm: u64| {
        format!(
            "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\nvideo_manager_id = {bad_vm}\n",
            account_toml(&emulator, "keycloak"),
            good.display(),
            bad.display()
        )
    };
    let config = write_config(&root, &body(999));
    let log = root.join("run.log");
    // The bad folder's file first, so that it is the oldest job (the one a pause probes with).
    write_file(&bad.join("x.mov"), MIB, 1);
    let agent = start_run(&config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(WAIT, "the hold logged", || {
        log_text().contains("uploads into VideoManager 999 held")
    })
    .await;
    write_file(&good.join("a.mov"), MIB, 2);
    write_file(&good.join("b.mov"), MIB, 3);
    eventually(WAIT, "the good folder's files in done/", || {
        arrived(&good.join("done/a.mov")) && arrived(&good.join("done/b.mov"))
    })
    .await;
    assert_eq!(video_of(&emulator, "a.mov").video_manager_id, 12345);
    assert!(bad.join("x.mov").exists(), "it waits in its folder");
    assert!(!bad.join("failed").exists(), "nothing failed");

    let output = hotfolder_in(&config, &["status"]).await;
    let out = text(&output.stdout);
    assert!(
        out.contains("HELD since") && out.contains("VideoManager 999") && !out.contains("PAUSED"),
        "{out}"
    );
    let output = hotfolder_in(&config, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        status["held_video_managers"][0]["video_manager_id"], 999,
        "{status}"
    );
    assert_eq!(status["queue_paused"], serde_json::Value::Null, "{status}");

    // The id fixed, and reloaded: the hold ends, and its file goes.
    write_config(&root, &body(12345));
    signal(&agent, 1);
    eventually(WAIT, "bad/done/x.mov", || arrived(&bad.join("done/x.mov"))).await;
    assert_eq!(video_of(&emulator, "x.mov").video_manager_id, 12345);
    let output = hotfolder_in(&config, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        status["held_video_managers"],
        serde_json::json!([]),
        "{status}"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Second hostile test of issue 13, D1: a folder removed from the config (reload or restart)
/// had its queued files uploaded into the account's VideoManager, possibly another customer's.
/// Now they stay where they are, the log says so, and they go once the folder is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_folder_files_never_upload_into_the_account_video_manager() {
    let emulator = emulator(|o| o.video_managers = vec![12345, 777]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (good, other) = (root.join("good"), root.join("other"));
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let folder = |path: &Path, vm: u64| {
        format!(
            "[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\nvideo_manager_id = {vm}\n",
            path.display()
        )
    };
    let head = format!("{}\n{FAST_UPLOAD}\n", account_toml(&emulator, "keycloak"));
    let both = format!("{head}{}{}", folder(&good, 12345), folder(&other, 999));
    let config = write_config(&root, &both);
    let log = root.join("run.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    write_file(&other.join("x.mov"), MIB, 1);
    let agent = start_run(&config, &log);
    eventually(WAIT, "the hold logged", || {
        log_text().contains("uploads into VideoManager 999 held")
    })
    .await;

    // The held folder removed: its file must not go to the account's VideoManager (12345).
    write_config(&root, &format!("{head}{}", folder(&good, 12345)));
    signal(&agent, 1);
    eventually(WAIT, "the waiting file named", || {
        log_text().contains("1 queued file(s) of a folder no longer configured")
    })
    .await;
    write_file(&good.join("a.mov"), MIB, 2);
    eventually(WAIT, "good/done/a.mov", || {
        arrived(&good.join("done/a.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
    let uploaded = |name: &str| emulator.videos().iter().any(|v| v.file_name == name);
    assert!(!uploaded("x.mov"), "{:?}", emulator.videos());
    assert!(other.join("x.mov").exists(), "it stays where it was");

    // Nor after a restart.
    let agent = start_run(&config, &log);
    write_file(&good.join("b.mov"), MIB, 3);
    eventually(WAIT, "good/done/b.mov", || {
        arrived(&good.join("done/b.mov"))
    })
    .await;
    assert_eq!(
        log_text()
            .matches("1 queued file(s) of a folder no longer configured")
            .count(),
        2,
        "said again at the start"
    );
    assert!(!uploaded("x.mov"), "{:?}", emulator.videos());

    // Configured again, with a VideoManager the platform knows: it goes there.
    write_config(
        &root,
        &format!("{head}{}{}", folder(&good, 12345), folder(&other, 777)),
    );
    signal(&agent, 1);
    eventually(WAIT, "other/done/x.mov", || {
        arrived(&other.join("done/x.mov"))
    })
    .await;
    assert_eq!(video_of(&emulator, "x.mov").video_manager_id, 777);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Second hostile test of issue 13, D2: files hotfolder placed in done/ were uploaded again as
/// new videos once done/ was renamed inside the watched folder (or `done_dir` changed, leaving
/// the old done/ a plain sub-folder). Now the very file placed there is held with a warning,
/// `scan` and `status` say why, its sidecar is not a candidate, and a copy (a new file) still
/// uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_hotfolder_placed_in_done_is_not_uploaded_again_when_it_reappears() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    write_file(&studio.inbox.join("x.mov"), MIB, 1);
    let agent = studio.start();
    eventually(WAIT, "done/x.mov", || arrived(&studio.done().join("x.mov"))).await;
    let video = video_of(&emulator, "x.mov").id;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let away = studio.inbox.join("done.away");
    std::fs::rename(studio.done(), &away).unwrap();
    let agent = studio.start();
    eventually(WAIT, "the warning", || {
        studio.log_text().contains("already uploaded as video")
    })
    .await;
    // A copy is a new file: it uploads.
    std::fs::copy(away.join("x.mov"), studio.inbox.join("copy.mov")).unwrap();
    eventually(WAIT, "done/copy.mov", || {
        arrived(&studio.done().join("copy.mov"))
    })
    .await;
    let names: Vec<String> = emulator.videos().into_iter().map(|v| v.file_name).collect();
    assert_eq!(
        names.iter().filter(|n| *n == "x.mov").count(),
        1,
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".json")), "{names:?}");
    assert!(away.join("x.mov").exists(), "it stays where it is");
    let log = studio.log_text();
    assert!(
        log.contains(&format!("already uploaded as video {video}"))
            && log.contains("not uploading it again"),
        "{log}"
    );
    assert_eq!(log.matches("already uploaded as video").count(), 1, "{log}");

    // `status` reads the settling files the agent writes about once a second.
    let deadline = Instant::now() + WAIT;
    loop {
        let output = hotfolder_in(&studio.config, &["status"]).await;
        let out = text(&output.stdout);
        if out.contains("already uploaded as video") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = hotfolder_in(&studio.config, &["scan"]).await;
    let out = text(&output.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("x.mov") && l.contains("already uploaded")),
        "{out}"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Hostile test of issue 13, M4: `retry` said "not a regular file" for a path with `..` in it,
/// and refused a path that reached failed/ through a link above it (only links inside the
/// tree are refused, as everywhere else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resolves_dotdot_and_links_above_failed_but_refuses_links_inside_it() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let failed = studio.failed();
    std::fs::create_dir_all(failed.join("sub")).unwrap();
    for name in ["one.mov", "two.mov", "sub/three.mov"] {
        std::fs::write(failed.join(name), name).unwrap();
    }
    let retry = |path: std::path::PathBuf| {
        let config = studio.config.clone();
        async move {
            run(hotfolder()
                .arg("retry")
                .arg("--config")
                .arg(&config)
                .arg(path))
            .await
        }
    };

    let dotted = failed.join("sub").join("..").join("one.mov");
    let output = retry(dotted).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(studio.inbox.join("one.mov").exists());

    // A link to the studio, above failed/.
    let alias = studio.dir.path().join("alias");
    std::os::unix::fs::symlink(&studio.inbox, &alias).unwrap();
    let output = retry(alias.join("failed").join("two.mov")).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(studio.inbox.join("two.mov").exists());

    // A link inside failed/: never followed.
    std::os::unix::fs::symlink(failed.join("sub"), failed.join("link")).unwrap();
    let output = retry(failed.join("link").join("three.mov")).await;
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert!(err.contains("links are not followed"), "{err}");
    assert!(failed.join("sub/three.mov").exists());

    // `..` out of failed/: not in failed/, said so.
    let out_of = failed.join("..").join("elsewhere.mov");
    let output = retry(out_of).await;
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert!(err.contains("is not in the failed/ folder"), "{err}");
}

/// Hostile test of issue 13, M4: `failed --since` hid files whose time nobody recorded (no
/// sidecar, no job), and a sidecar whose file was gone was not reported at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_since_shows_files_of_unknown_time_and_reports_sidecars_whose_file_is_gone() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let failed = studio.failed();
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(failed.join("unknown.mov"), b"x").unwrap();
    let sidecar = serde_json::json!({
        "file": "gone.mov", "size": 3, "sha256": null, "status": "failed", "video_id": null,
        "error": {"status": 415, "message": "unsupported", "meaning": "not accepted"},
        "chunks": null, "chunk_size": null, "attempts": 1,
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "bytes_per_second": null, "events": [],
    });
    std::fs::write(sidecar_of(&failed.join("gone.mov")), sidecar.to_string()).unwrap();

    let output = hotfolder_in(&studio.config, &["failed", "--since", "1h", "--json"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["rel_path"], "unknown.mov");
    assert_eq!(listed[0]["failed_at"], serde_json::Value::Null);

    let output = hotfolder_in(&studio.config, &["failed"]).await;
    let out = text(&output.stdout);
    assert!(
        out.contains("(time unknown)") && out.contains("gone.mov.upload.json (sidecar only)"),
        "{out}"
    );
    assert!(
        out.contains("1 failed file(s)") && out.contains("1 sidecar(s) whose file is gone"),
        "{out}"
    );
    let output = hotfolder_in(&studio.config, &["failed", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let gone = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file_missing"] == true)
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(gone["rel_path"], "gone.mov");
    assert_eq!(gone["status"], 415);

    // `retry --all` moves the file back and leaves the lone sidecar alone.
    let output = hotfolder_in(&studio.config, &["retry", "--all"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(studio.inbox.join("unknown.mov").exists());
    assert!(sidecar_of(&failed.join("gone.mov")).exists());
}
