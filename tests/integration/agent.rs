//! `hotfolder run` as the studio runs it: the real binary, temp folders, the emulator on
//! 127.0.0.1. Each test asserts what an editor or an admin would check: where the file ended
//! up, what its sidecar says, and what the platform received.

use std::io::Write;
use std::time::Duration;

use hotfolder::Emulator;
use serde_json::Value;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

/// The video the emulator holds for `file_name` (exactly one).
fn only_video(emulator: &Emulator, file_name: &str) -> hotfolder::VideoRecord {
    let videos: Vec<_> = emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect();
    assert_eq!(
        videos.len(),
        1,
        "one video entity for {file_name}: {videos:?}"
    );
    videos.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_is_uploaded_once_complete() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"700ms\"");
    let agent = studio.start();
    let path = studio.inbox.join("export.mov");
    let data = export(&path, 3 * MIB + 17, 1);
    let mut file = std::fs::File::create(&path).unwrap();
    for piece in data.chunks(MIB / 4) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            emulator.videos().is_empty(),
            "uploaded before the export was complete"
        );
    }
    drop(file);
    let done = studio.done().join("export.mov");
    eventually(WAIT, "export.mov in done/", || arrived(&done)).await;
    let video = only_video(&emulator, "export.mov");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    let side = sidecar(&done);
    assert_eq!(side["status"], "uploaded");
    assert_eq!(side["video_id"], video.id.as_str());
    assert_eq!(side["sha256"], sha256_hex(&data));
    assert_eq!(side["size"], data.len());
    let events: Vec<&str> = side["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"detected") && events.contains(&"created") && events.contains(&"uploaded"),
        "{events:?}"
    );
    let rule = side["events"].to_string();
    assert!(
        rule.contains("unchanged for"),
        "the rule that released the file: {rule}"
    );
    assert!(!path.exists());
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_then_rename_exports_and_junk_names() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    for junk in [
        ".DS_Store",
        "._clip.mov",
        ".hidden.mov",
        "render.tmp",
        "clip.mov.part",
        "x.crdownload",
        "notes.txt",
        "~lock.mov",
    ] {
        write_file(&studio.inbox.join(junk), 1000, 3);
    }
    // An export written under a temporary name, then renamed into place.
    let temp = studio.inbox.join("final.mp4.part");
    let data = export("final.mp4", 2 * MIB, 4);
    std::fs::write(&temp, &data).unwrap();
    let hash = sha256_hex(&data);
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::rename(&temp, studio.inbox.join("final.mp4")).unwrap();
    let done = studio.done().join("final.mp4");
    eventually(WAIT, "final.mp4 in done/", || arrived(&done)).await;
    assert_eq!(
        only_video(&emulator, "final.mp4").sha256.as_deref(),
        Some(hash.as_str())
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        emulator.videos().len(),
        1,
        "junk was uploaded: {:?}",
        emulator.videos()
    );
    for junk in [
        ".DS_Store",
        "._clip.mov",
        ".hidden.mov",
        "render.tmp",
        "clip.mov.part",
        "notes.txt",
    ] {
        assert!(
            studio.inbox.join(junk).exists(),
            "{junk} must stay untouched"
        );
    }
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subfolders_keep_their_path_and_names_never_collide() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    std::fs::create_dir_all(studio.done()).unwrap();
    std::fs::write(studio.done().join("clip.mov"), b"an earlier delivery").unwrap();
    write_file(&studio.inbox.join("clip.mov"), 5000, 5);
    write_file(&studio.inbox.join("show/ep1/clip.mov"), 6000, 6);
    let agent = studio.start();
    let renamed = studio.done().join("clip (1).mov");
    let nested = studio.done().join("show/ep1/clip.mov");
    eventually(WAIT, "both files in done/", || {
        arrived(&renamed) && arrived(&nested)
    })
    .await;
    assert_eq!(
        std::fs::read(studio.done().join("clip.mov")).unwrap(),
        b"an earlier delivery"
    );
    assert_eq!(sidecar(&renamed)["file"], "clip (1).mov");
    assert_eq!(sidecar(&nested)["status"], "uploaded");
    assert_eq!(emulator.videos().len(), 2);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_files_dropped_at_once_arrive_exactly_once() {
    let emulator = emulator(|_| {}).await;
    let upload = FAST_UPLOAD.replace("parallel = 2", "parallel = 4");
    let studio = Studio::new(&emulator, &upload, QUICK);
    let agent = studio.start();
    let mut hashes = std::collections::HashMap::new();
    for i in 0..100 {
        let name = format!("batch-{i:03}.mp4");
        hashes.insert(
            name.clone(),
            write_file(&studio.inbox.join(&name), 1000 + i * 997, i as u64),
        );
    }
    eventually(Duration::from_secs(60), "100 files in done/", || {
        files_under(&studio.done()).len() == 200
    })
    .await;
    assert_eq!(emulator.videos().len(), 100);
    for video in emulator.videos() {
        assert_eq!(
            video.sha256.as_ref(),
            hashes.get(&video.file_name),
            "{}",
            video.file_name
        );
    }
    assert!(
        files_under(&studio.inbox)
            .iter()
            .all(|f| f.starts_with("done/"))
    );
    // The sidecar is written just before the job is recorded as done: the last one may be a
    // moment behind the files.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = studio.status_json().await;
        if status["summary"]["done"] == 100 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_restart_finishes_on_the_same_video() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let data = export("big.mxf", 20 * MIB, 10);
    std::fs::write(studio.inbox.join("big.mxf"), &data).unwrap();
    for round in 0..3 {
        let mut agent = studio.start();
        let target = 4 + round * 5;
        eventually(WAIT, "some chunks received", || {
            emulator
                .videos()
                .first()
                .map(|v| v.chunks_received >= target)
                .unwrap_or(false)
        })
        .await;
        agent.start_kill().unwrap();
        agent.wait().await.unwrap();
    }
    let agent = studio.start();
    let done = studio.done().join("big.mxf");
    eventually(WAIT, "big.mxf in done/", || arrived(&done)).await;
    let video = only_video(&emulator, "big.mxf");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(std::fs::read(&done).unwrap(), data);
    assert_eq!(
        files_under(&studio.done()),
        vec!["big.mxf", "big.mxf.upload.json"]
    );
    assert_eq!(sidecar(&done)["sha256"], sha256_hex(&data));
    assert_eq!(
        video.restarts, 0,
        "resumed where it stopped, not from chunk 1: {video:?}"
    );
    stop(agent).await;
}

/// Content rewritten while the agent was down, with the size and the modification time put
/// back (`touch -r`, `rsync --inplace`), is not resumed as if it were the same: the inode's
/// change time moved, so the upload starts again at chunk 1 on the same video, and the video,
/// the sidecar and the file in done/ agree (hostile test: old chunks 1-4 and new 5-10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rewritten_with_its_mtime_put_back_while_stopped_is_sent_again_from_chunk_1() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let path = studio.inbox.join("big.mxf");
    let mut data = export("big.mxf", 12 * MIB, 12);
    std::fs::write(&path, &data).unwrap();
    let mut agent = studio.start();
    eventually(WAIT, "some chunks received", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 4)
    })
    .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();

    // 16 bytes of chunk 1 rewritten in place; size and mtime as before.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    for byte in &mut data[1000..1016] {
        *byte ^= 0xff;
    }
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(1000)).unwrap();
        file.write_all(&data[1000..1016]).unwrap();
        file.set_modified(mtime).unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

    let agent = studio.start();
    let done = studio.done().join("big.mxf");
    eventually(WAIT, "big.mxf in done/", || arrived(&done)).await;
    let video = only_video(&emulator, "big.mxf");
    let sha = sha256_hex(&data);
    assert_eq!(video.sha256.as_deref(), Some(sha.as_str()), "{video:?}");
    assert_eq!(sidecar(&done)["sha256"], sha);
    assert_eq!(std::fs::read(&done).unwrap(), data);
    assert!(video.restarts >= 1, "sent again from chunk 1: {video:?}");
    stop(agent).await;
}

/// A file deleted while its last chunk is on its way has a complete video on the platform:
/// the upload counts (what was read through the open file is the file), the log and history
/// say it was removed before it could be moved, and neither its claim record nor its marker
/// keyword stays behind (hostile test: "disappeared before it was uploaded", a record left
/// for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_during_its_last_chunk_is_reported_uploaded_and_leaves_nothing_behind() {
    // 1 MiB/s: each 1 MiB chunk takes a second.
    let emulator = emulator(|o| o.link_rate = Some(MIB as u64)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let path = studio.inbox.join("gone.mxf");
    let data = export("gone.mxf", 2 * MIB, 14);
    std::fs::write(&path, &data).unwrap();
    let agent = studio.start();
    eventually(WAIT, "chunk 1 of 2 received", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&path).unwrap();

    eventually(WAIT, "the removal after the upload in the log", || {
        studio
            .log_text()
            .contains("was removed from the folder after it uploaded as video")
    })
    .await;
    let video = only_video(&emulator, "gone.mxf");
    assert!(video.complete, "{video:?}");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    let log = studio.log_text();
    assert!(!log.contains("disappeared before it was uploaded"), "{log}");
    assert!(
        files_under(&studio.inbox.join(".hotfolder/claims")).is_empty(),
        "no claim record left: {:?}",
        files_under(&studio.inbox.join(".hotfolder/claims"))
    );
    eventually(WAIT, "the marker keyword off the video", || {
        only_video(&emulator, "gone.mxf")
            .keywords
            .iter()
            .all(|keyword| !hotfolder::is_marker(keyword))
    })
    .await;
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_quickly_and_a_restart_finishes() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let hash = write_file(&studio.inbox.join("a.mov"), 12 * MIB, 11);
    let agent = studio.start();
    eventually(WAIT, "upload started", || {
        emulator
            .videos()
            .first()
            .map(|v| v.chunks_received >= 2)
            .unwrap_or(false)
    })
    .await;
    let (status, took) = stop(agent).await;
    assert_eq!(status.code(), Some(0), "{}", studio.log_text());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        studio.inbox.join("a.mov").exists(),
        "the file stays until uploaded"
    );
    let status = studio.status_json().await;
    assert_eq!(
        status["jobs"][0]["video_id"],
        emulator.videos()[0].id.as_str(),
        "{status}"
    );

    let agent = studio.start();
    eventually(WAIT, "a.mov in done/", || {
        arrived(&studio.done().join("a.mov"))
    })
    .await;
    assert_eq!(
        only_video(&emulator, "a.mov").sha256.as_deref(),
        Some(hash.as_str())
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_pauses_without_moving_files_and_resumes() {
    let emulator = emulator(|o| o.quota_bytes = Some(0)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let hash = write_file(&studio.inbox.join("q.mov"), MIB, 12);
    let agent = studio.start();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = studio.status_json().await;
        if !status["queue_paused"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reason = status["queue_paused"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("storage quota"), "{status}");
    assert!(studio.inbox.join("q.mov").exists());
    assert!(files_under(&studio.failed()).is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = studio.log_text();
    assert_eq!(
        log.matches("uploads paused").count(),
        1,
        "one log line per state change:\n{log}"
    );

    emulator.set_quota(None);
    eventually(WAIT, "q.mov in done/ after the quota was raised", || {
        arrived(&studio.done().join("q.mov"))
    })
    .await;
    assert_eq!(
        only_video(&emulator, "q.mov").sha256.as_deref(),
        Some(hash.as_str())
    );
    assert!(studio.status_json().await["queue_paused"].is_null());
    stop(agent).await;
    assert!(studio.log_text().contains("uploads resumed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_and_empty_files_go_to_failed_with_a_reason() {
    let emulator = emulator(|_| {}).await;
    // An empty file may be a writer's first step: it goes to failed/ only once it stayed
    // empty for incomplete_after.
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &format!("{QUICK}\ninclude = [\"*\"]\nincomplete_after = \"1s\""),
    );
    write_file(&studio.inbox.join("notes.txt"), 100, 14);
    std::fs::write(studio.inbox.join("empty.mov"), b"").unwrap();
    let agent = studio.start();
    let notes = studio.failed().join("notes.txt");
    let empty = studio.failed().join("empty.mov");
    eventually(WAIT, "both in failed/", || {
        arrived(&notes) && arrived(&empty)
    })
    .await;
    let side = sidecar(&notes);
    assert_eq!(side["status"], "failed");
    assert_eq!(side["error"]["status"], 415, "{side}");
    assert!(
        side["error"]["meaning"]
            .as_str()
            .unwrap()
            .contains("file type"),
        "{side}"
    );
    let side = sidecar(&empty);
    assert!(
        side["error"]["message"].as_str().unwrap().contains("empty"),
        "{side}"
    );
    assert!(
        emulator.videos().iter().all(|v| v.file_name != "empty.mov"),
        "nothing sent for the empty file"
    );
    // Moving a failed file back tries it again.
    write_file(&empty, 2000, 14);
    std::fs::rename(&empty, studio.inbox.join("empty.mov")).unwrap();
    eventually(WAIT, "retried file in done/", || {
        arrived(&studio.done().join("empty.mov"))
    })
    .await;
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_modified_during_upload_is_uploaded_again_to_the_same_video() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let path = studio.inbox.join("m.mov");
    write_file(&path, 8 * MIB, 15);
    let agent = studio.start();
    eventually(WAIT, "upload started", || {
        emulator
            .videos()
            .first()
            .map(|v| v.chunks_received >= 2)
            .unwrap_or(false)
    })
    .await;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&free_box(MIB, 16)).unwrap();
    drop(file);
    let expected = std::fs::read(&path).unwrap();
    let done = studio.done().join("m.mov");
    eventually(Duration::from_secs(60), "m.mov in done/", || arrived(&done)).await;
    let video = only_video(&emulator, "m.mov");
    assert_eq!(
        video.sha256.as_deref(),
        Some(sha256_hex(&expected).as_str())
    );
    assert_eq!(std::fs::read(&done).unwrap(), expected);
    assert!(sidecar(&done)["events"].to_string().contains("changed"));
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_while_queued_is_forgotten() {
    let emulator = emulator(slow_server).await;
    let upload = FAST_UPLOAD.replace("parallel = 2", "parallel = 1");
    let studio = Studio::new(&emulator, &upload, QUICK);
    write_file(&studio.inbox.join("first.mov"), 24 * MIB, 17);
    let agent = studio.start();
    eventually(WAIT, "first upload started", || {
        !emulator.videos().is_empty()
    })
    .await;
    let second = studio.inbox.join("second.mov");
    write_file(&second, 1000, 18);
    eventually(WAIT, "second queued", || {
        studio.log_text().contains("second.mov")
    })
    .await;
    std::fs::remove_file(&second).unwrap();
    eventually(WAIT, "first in done/", || {
        arrived(&studio.done().join("first.mov"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        emulator
            .videos()
            .iter()
            .all(|v| v.file_name != "second.mov")
    );
    assert!(files_under(&studio.failed()).is_empty());
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_state_dir_is_refused() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    eventually(WAIT, "first agent watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    let output = run(hotfolder().arg("run").arg("--config").arg(&studio.config)).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("another `hotfolder run`") && stderr.contains("state"),
        "{stderr}"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_starter_config_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf/hotfolder.toml");
    let output = run(hotfolder().arg("init").arg(&path)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[account]") && written.contains("[[folder]]"));
    let output = run(hotfolder().arg("init").arg(&path)).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written,
        "not overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uploads_its_sample_and_keeps_watching_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let demo = hotfolder()
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let done = demo_dir.join("done");
    eventually(WAIT, "the sample in done/ with its sidecar", || {
        files_under(&done)
            .iter()
            .any(|f| f.ends_with(".mov.upload.json"))
    })
    .await;
    // It keeps watching: a file the user drops arrives too.
    write_file(&demo_dir.join("inbox/mine.mov"), 5000, 20);
    eventually(WAIT, "the user's file in done/", || {
        arrived(&done.join("mine.mov"))
    })
    .await;
    signal(&demo, 2);
    let mut demo = demo;
    let status = tokio::time::timeout(Duration::from_secs(15), demo.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_while_hotfolder_was_stopped_is_sent_again_whole() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let path = studio.inbox.join("re.mov");
    write_file(&path, 10 * MIB, 1);
    let mut agent = studio.start();
    eventually(WAIT, "a few chunks received", || {
        emulator
            .videos()
            .first()
            .map(|v| v.chunks_received >= 4)
            .unwrap_or(false)
    })
    .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    // The editor re-exports over the same name, same size, while hotfolder is down.
    let new = export(&path, 10 * MIB, 2);
    std::fs::write(&path, &new).unwrap();
    let agent = studio.start();
    let done = studio.done().join("re.mov");
    eventually(Duration::from_secs(60), "re.mov in done/", || {
        arrived(&done)
    })
    .await;
    let video = only_video(&emulator, "re.mov");
    assert_eq!(
        video.sha256.as_deref(),
        Some(sha256_hex(&new).as_str()),
        "the platform holds a mix"
    );
    assert_eq!(sidecar(&done)["sha256"], sha256_hex(&new));
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_left_by_an_interrupted_move_are_removed_at_start() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let stale = studio.done().join("show/.clip.mov.0123abcd.hotfolder-tmp");
    let editors = studio.done().join("show/.notes.txt");
    write_file(&stale, 100, 1);
    write_file(&editors, 100, 2);
    let agent = studio.start();
    eventually(WAIT, "stale temp removed", || !stale.exists()).await;
    assert!(
        editors.exists(),
        "only hotfolder's own temp files are removed"
    );
    stop(agent).await;
}

/// `missing_folders` of `hotfolder status --json`, polled until `wanted` holds or `limit`.
async fn wait_for_missing_folders(
    studio: &Studio,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let status = studio.status_json().await;
        let missing = status["missing_folders"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if wanted(&missing) {
            return missing;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}; status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_that_disappears_is_reported_and_watched_again_when_back() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    let first = studio.inbox.join("first.mov");
    write_file(&first, 1000, 41);
    eventually(WAIT, "first.mov in done/", || {
        arrived(&studio.done().join("first.mov"))
    })
    .await;

    // The share goes away (deleted, or unmounted): said in the log and in status.
    std::fs::remove_dir_all(&studio.inbox).unwrap();
    let missing = wait_for_missing_folders(&studio, WAIT, "the inbox reported missing", |m| {
        !m.is_empty()
    })
    .await;
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0]["path"], studio.inbox.to_string_lossy().as_ref());
    assert!(
        missing[0]["why"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{missing:?}"
    );
    let plain = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stdout).contains("FOLDER MISSING"),
        "{}",
        text(&plain.stdout)
    );
    assert!(
        studio.log_text().contains("cannot see the watched folder"),
        "{}",
        studio.log_text()
    );

    // It comes back, and a file dropped there is noticed without waiting for a rescan.
    std::fs::create_dir(&studio.inbox).unwrap();
    let second = studio.inbox.join("second.mov");
    let data = export(&second, 2 * MIB + 5, 42);
    std::fs::write(&second, &data).unwrap();
    eventually(Duration::from_secs(20), "second.mov in done/", || {
        arrived(&studio.done().join("second.mov"))
    })
    .await;
    assert_eq!(
        only_video(&emulator, "second.mov").sha256.as_deref(),
        Some(sha256_hex(&data).as_str())
    );
    wait_for_missing_folders(&studio, WAIT, "the inbox no longer missing", |m| {
        m.is_empty()
    })
    .await;
    assert!(studio.log_text().contains("the folder is back"));
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_replaced_by_a_new_one_is_watched_at_once() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    eventually(WAIT, "agent watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    // Renamed away and made again in one go (a script that rotates folders, a remount): the
    // old watch follows the old folder; files in the new one must still be seen.
    std::fs::rename(&studio.inbox, studio.dir.path().join("inbox-old")).unwrap();
    std::fs::create_dir(&studio.inbox).unwrap();
    let path = studio.inbox.join("fresh.mov");
    write_file(&path, 3000, 43);
    eventually(Duration::from_secs(20), "fresh.mov in done/", || {
        arrived(&studio.done().join("fresh.mov"))
    })
    .await;
    only_video(&emulator, "fresh.mov");
    assert!(
        files_under(&studio.dir.path().join("inbox-old")).is_empty(),
        "nothing was moved into the old folder"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_folder_watcher_makes_the_agent_exit_for_a_restart_and_nothing_is_lost() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"5s\"");
    let path = studio.inbox.join("waiting.mov");
    let data = export(&path, 3 * MIB, 61);
    std::fs::write(&path, &data).unwrap();
    let log = std::fs::File::create(studio.stderr_log()).unwrap();
    let mut agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("HOTFOLDER_TEST_INTAKE_PANIC", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Not carrying on deaf: it exits, with a code the service manager restarts on.
    let status = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("the agent exits when its folder watcher dies")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", studio.log_text());
    assert!(
        studio
            .log_text()
            .contains("the folder watcher stopped (it panicked"),
        "{}",
        studio.log_text()
    );
    assert!(path.exists(), "the file is still in the inbox");

    // The restart picks the file up as usual.
    let agent = studio.start();
    let done = studio.done().join("waiting.mov");
    eventually(WAIT, "waiting.mov in done/", || arrived(&done)).await;
    assert_eq!(
        only_video(&emulator, "waiting.mov").sha256.as_deref(),
        Some(sha256_hex(&data).as_str())
    );
    stop(agent).await;
}

/// An agent that uploads `name` but cannot move it: a file named `done` stands where done/
/// should be made (works as root too, unlike a read-only folder). Returns once the failed move
/// was logged.
async fn upload_with_done_blocked(
    name: &str,
    seed: u64,
) -> (Emulator, Studio, tokio::process::Child, Vec<u8>) {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let agent = studio.start();
    eventually(WAIT, "agent watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    let _ = std::fs::remove_dir_all(studio.done());
    std::fs::write(studio.done(), b"in the way").unwrap();
    let data = export(name, 1500, seed);
    std::fs::write(studio.inbox.join(name), &data).unwrap();
    eventually(WAIT, "the failed move logged", || {
        studio.log_text().contains("tried again every")
    })
    .await;
    (emulator, studio, agent, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_moved_to_done_is_moved_soon_after_the_cause_is_fixed() {
    let (emulator, studio, agent, data) = upload_with_done_blocked("stuck.mov", 71).await;
    let path = studio.inbox.join("stuck.mov");
    assert!(path.exists(), "the file stays in the inbox");
    only_video(&emulator, "stuck.mov");

    // The admin clears the way: the file leaves the inbox without waiting for a rescan.
    std::fs::remove_file(studio.done()).unwrap();
    let done = studio.done().join("stuck.mov");
    eventually(Duration::from_secs(25), "stuck.mov in done/", || {
        arrived(&done)
    })
    .await;
    assert_eq!(std::fs::read(&done).unwrap(), data);
    assert_eq!(sidecar(&done)["status"], "uploaded");
    assert_eq!(
        studio.log_text().matches("tried again every").count(),
        1,
        "the same failure is logged once: {}",
        studio.log_text()
    );
    only_video(&emulator, "stuck.mov");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_platform_is_creating_the_video_does_not_make_a_second_one() {
    // The platform creates the video at once but answers 2 s later.
    let emulator = emulator(|o| o.create_answer_delay = Some(Duration::from_secs(2))).await;
    let upload = FAST_UPLOAD.replace("request_timeout = \"2s\"", "request_timeout = \"5s\"");
    let studio = Studio::new(&emulator, &upload, QUICK);
    let agent = studio.start();
    let path = studio.inbox.join("slow-create.mov");
    let data = export(&path, MIB + 3, 81);
    std::fs::write(&path, &data).unwrap();
    eventually(WAIT, "the video exists on the platform", || {
        !emulator.videos().is_empty()
    })
    .await;
    // Stopped while the answer with the video's id is still on its way.
    let (status, took) = stop(agent).await;
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");

    let agent = studio.start();
    let done = studio.done().join("slow-create.mov");
    eventually(WAIT, "slow-create.mov in done/", || arrived(&done)).await;
    let video = only_video(&emulator, "slow-create.mov");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(sidecar(&done)["video_id"], video.id.as_str());
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_while_its_move_was_failing_ends_its_job_with_the_reason() {
    let (emulator, studio, agent, _) = upload_with_done_blocked("taken.mov", 72).await;
    let path = studio.inbox.join("taken.mov");
    // The editor takes the file away by hand; the admin then clears done/.
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(studio.done()).unwrap();
    let video = only_video(&emulator, "taken.mov");
    eventually(
        Duration::from_secs(25),
        "the job ended with the reason",
        || {
            studio
                .log_text()
                .contains(&format!("after it uploaded as video {}", video.id))
        },
    )
    .await;
    let status = studio.status_json().await;
    assert_eq!(status["summary"]["finishing"], 0, "{status}");
    assert_eq!(status["jobs"].as_array().map(Vec::len), Some(0), "{status}");
    assert!(files_under(&studio.done()).is_empty());
    stop(agent).await;
}
