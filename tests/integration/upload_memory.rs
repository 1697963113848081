//! `hotfolder upload` remembers what it did (issue 10, item 20): run twice it makes one video,
//! interrupted it resumes on the same video, `--again` makes a new one, a changed file is a new
//! upload, and none of it gets in the way of a `hotfolder run` on the same state dir.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use hotfolder::Emulator;
use serde_json::Value;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// A config for `emulator` with its state dir in `dir`.
fn config_in(dir: &Path, emulator: &Emulator) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("{}\n{FAST_UPLOAD}", account_toml(emulator, "keycloak")),
    )
}

async fn upload(config: &Path, args: &[&str], file: &Path) -> Output {
    run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(config)
        .args(args)
        .arg(file))
    .await
}

/// The one JSON line of `upload --json`.
fn json_line(output: &Output) -> Value {
    let stdout = text(&output.stdout);
    let mut lines = stdout.lines();
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no output line; stderr:\n{}", text(&output.stderr)));
    assert_eq!(lines.next(), None, "one line per file: {stdout}");
    serde_json::from_str(line).expect("stdout is JSON")
}

fn video_id(line: &Value) -> String {
    line["video_id"].as_str().expect("a video id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploading_one_file_twice_makes_one_video_and_the_second_says_already_uploaded() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &emulator);
    let file = dir.path().join("media/a.mov");
    let hash = write_file(&file, 3 * MIB, 1);

    // Given twice in one command: uploaded once, the second answered from memory.
    let both = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&file)
        .arg(dir.path().join("media/../media/a.mov")))
    .await;
    assert!(both.status.success(), "{}", text(&both.stderr));
    let lines: Vec<Value> = text(&both.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per path given");
    let first = &lines[0];
    assert_eq!(first["already_uploaded"], false, "{first}");
    let id = video_id(first);
    assert_eq!(lines[1]["already_uploaded"], true, "{}", lines[1]);
    assert_eq!(lines[1]["video_id"], id.as_str());
    let requests = emulator.stats().requests;

    // Plain output, the way a person runs it again; from another directory, by another path.
    let again = run(hotfolder()
        .current_dir(dir.path().join("media"))
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("./a.mov"))
    .await;
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("already uploaded as {id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("--again"),
        "says how to upload it anyway: {stderr}"
    );
    assert_eq!(text(&again.stdout).trim(), format!("./a.mov\t{id}"));

    let json = json_line(&upload(&config, &["--json"], &file).await);
    assert_eq!(json["already_uploaded"], true, "{json}");
    assert_eq!(json["status"], "uploaded", "{json}");
    assert_eq!(json["video_id"], id.as_str());
    assert_eq!(json["sha256"], hash.as_str());
    assert!(json["uploaded_at"].is_string(), "{json}");

    assert_eq!(emulator.videos().len(), 1, "{:?}", emulator.videos());
    assert_eq!(
        emulator.stats().requests,
        requests,
        "nothing is sent for a file already uploaded"
    );
    assert!(file.exists(), "the file stays where it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn again_makes_a_second_video_and_a_changed_file_is_a_new_upload() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &emulator);
    let file = dir.path().join("b.mp4");
    let hash = write_file(&file, 2 * MIB + 5, 2);

    let first = video_id(&json_line(&upload(&config, &["--json"], &file).await));
    let forced = upload(&config, &["--json", "--again"], &file).await;
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let forced = json_line(&forced);
    assert_eq!(forced["already_uploaded"], false);
    let second = video_id(&forced);
    assert_ne!(first, second, "--again makes a new video");
    for id in [&first, &second] {
        let video = emulator.video(id).unwrap();
        assert!(video.complete);
        assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    }
    // From now on the file is known by its latest video.
    let json = json_line(&upload(&config, &["--json"], &file).await);
    assert_eq!(
        (
            json["already_uploaded"].as_bool(),
            json["video_id"].as_str()
        ),
        (Some(true), Some(second.as_str()))
    );

    // A new version of the file (re-exported) is a new upload, and a new video: the old one
    // was finished.
    std::thread::sleep(Duration::from_millis(20));
    let changed_hash = write_file(&file, 2 * MIB + 5, 3);
    let changed = json_line(&upload(&config, &["--json"], &file).await);
    assert_eq!(changed["already_uploaded"], false, "{changed}");
    let third = video_id(&changed);
    assert!(third != first && third != second);
    assert_eq!(
        emulator.video(&third).unwrap().sha256.as_deref(),
        Some(changed_hash.as_str())
    );
    assert_eq!(emulator.videos().len(), 3);
}

/// Waits until the emulator has received at least `chunks` chunks of its only video.
async fn chunks_received(emulator: &Emulator, chunks: u32) {
    eventually(WAIT, "chunks received", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= chunks)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_then_the_same_command_resumes_on_the_same_video_and_run_leaves_it_alone() {
    let emulator = emulator(slow_server).await;
    // `run`'s config and state dir; the file lies outside its watched folder.
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let file = studio.dir.path().join("outside/big.mov");
    let data = export(&file, 16 * MIB, 4);
    write_file(&file, 16 * MIB, 4);

    let child = hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&studio.config)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chunks_received(&emulator, 3).await;
    signal(&child, 2);
    let interrupted = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("upload stops after Ctrl-C")
        .unwrap();
    let stderr = text(&interrupted.stderr);
    assert_eq!(interrupted.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("resumes on restart"), "{stderr}");
    let video = emulator.videos()[0].clone();
    assert!(!video.complete);

    // `run` on the same state dir: a manual upload is not its job, to resume or to move.
    let agent = studio.start();
    eventually(WAIT, "run watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = studio.status_json().await;
    assert_eq!(status["jobs"], Value::Array(vec![]), "{status}");
    assert_eq!(status["recent"], Value::Array(vec![]), "{status}");
    let (code, _) = stop(agent).await;
    assert_eq!(code.code(), Some(0));
    assert!(file.exists());
    assert_eq!(
        emulator.video(&video.id).unwrap(),
        video,
        "run sent nothing"
    );

    let resumed = upload(&studio.config, &[], &file).await;
    let stderr = text(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("resuming at chunk") && stderr.contains(&video.id),
        "{stderr}"
    );
    assert_eq!(
        text(&resumed.stdout).trim(),
        format!("{}\t{}", file.display(), video.id),
        "the same video"
    );
    assert_eq!(emulator.videos().len(), 1, "{:?}", emulator.videos());
    let done = emulator.video(&video.id).unwrap();
    assert!(done.complete);
    assert_eq!(done.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(done.restarts, 0, "continued where it stopped: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_an_interrupted_upload_goes_again_to_the_same_video() {
    let emulator = emulator(slow_server).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &emulator);
    let file = dir.path().join("c.mov");
    write_file(&file, 10 * MIB, 5);
    let child = hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    chunks_received(&emulator, 2).await;
    signal(&child, 2);
    let mut child = child;
    tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();

    let changed = write_file(&file, 9 * MIB, 6);
    let output = upload(&config, &["--json"], &file).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let line = json_line(&output);
    assert_eq!(line["resumed"], true, "{line}");
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "one video: {videos:?}");
    assert_eq!(line["video_id"], videos[0].id.as_str());
    assert_eq!(videos[0].sha256.as_deref(), Some(changed.as_str()));
    assert!(
        videos[0].restarts >= 1,
        "sent again from chunk 1: {:?}",
        videos[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_of_one_file_at_once_make_one_video() {
    let emulator = emulator(slow_server).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &emulator);
    let file = dir.path().join("d.mov");
    write_file(&file, 6 * MIB, 7);
    let first = hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chunks_received(&emulator, 1).await;
    let second = upload(&config, &[], &file).await;
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another `hotfolder upload` is sending"),
        "{stderr}"
    );
    let first = tokio::time::timeout(WAIT, first.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(emulator.videos().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_works_while_run_holds_the_state_dir_and_stays_out_of_its_queue() {
    let emulator = emulator(|_| {}).await;
    // A long stable_for: `run` only watches the file settle during the test.
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"60s\"");
    let agent = studio.start();
    eventually(WAIT, "run watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    let file = studio.inbox.join("e.mov");
    let hash = write_file(&file, MIB + 1, 8);

    let output = upload(&studio.config, &["--json"], &file).await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in the watched folder"),
        "warns that run uploads it too: {stderr}"
    );
    let id = video_id(&json_line(&output));
    assert_eq!(
        emulator.video(&id).unwrap().sha256.as_deref(),
        Some(hash.as_str())
    );
    let again = json_line(&upload(&studio.config, &["--json"], &file).await);
    assert_eq!(again["already_uploaded"], true);

    // `run` is watching the file settle, and has no job for it.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = studio.status_json().await;
        let settling = status["settling"].as_array().cloned().unwrap_or_default();
        if settling
            .iter()
            .any(|f| f["path"] == file.display().to_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["summary"]["settling"], 1, "{status}");
    assert_eq!(status["jobs"], Value::Array(vec![]), "{status}");
    let (code, _) = stop(agent).await;
    assert_eq!(code.code(), Some(0), "{}", studio.log_text());
    assert!(file.exists(), "nothing moved it");
    assert_eq!(emulator.videos().len(), 1);
}
