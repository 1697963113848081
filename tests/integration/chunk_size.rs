//! `chunk_size = "auto"` through `hotfolder run` against the emulator's model of a long link
//! (a latency per answer, one shared rate): the size chosen per file and why (sidecar, log),
//! a chunk refused for its size (413) halving it on the same video and the smaller size kept
//! for later files, a fixed size refused with a clear failure, and a resume after `kill -9`
//! keeping the size its accepted chunks were sent in.

use std::time::Duration;

use hotfolder::Emulator;
use serde_json::Value;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(60);

/// Fast retries like `FAST_UPLOAD`, without a `chunk_size`: the default, auto.
const AUTO_UPLOAD: &str = "[upload]\nparallel = 2\nmax_attempts = 30\nbackoff_max = \"20ms\"\nrequest_timeout = \"5s\"\napi_requests_per_minute = 6000\nlookup_wait = \"300ms\"\n";

fn only_video(emulator: &Emulator, file_name: &str) -> hotfolder::VideoRecord {
    let videos: Vec<_> = emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect();
    assert_eq!(videos.len(), 1, "one video for {file_name}: {videos:?}");
    videos.into_iter().next().unwrap()
}

/// The sidecar's events of one kind, as their texts.
fn events(sidecar: &Value, event: &str) -> Vec<String> {
    sidecar["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == event)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn chunk_size(sidecar: &Value) -> u64 {
    sidecar["chunk_size"]
        .as_u64()
        .expect("the sidecar has chunk_size")
}

/// Drops `name` into the inbox and waits for it in done/; returns its sidecar.
async fn upload_one(studio: &Studio, name: &str, size: usize, seed: u64) -> (Value, String) {
    let hash = write_file(&studio.inbox.join(name), size, seed);
    let done = studio.done().join(name);
    eventually(WAIT, &format!("{name} in done/"), || arrived(&done)).await;
    let sidecar = sidecar(&done);
    assert_eq!(sidecar["status"], "uploaded", "{sidecar}");
    assert_eq!(sidecar["sha256"], hash.as_str());
    (sidecar, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_bigger_chunks_on_a_long_link_and_says_why() {
    let emulator = emulator(|options| {
        options.latency = Duration::from_millis(20);
        options.link_rate = Some(50_000_000); // 400 Mbit/s
    })
    .await;
    let studio = Studio::new(&emulator, AUTO_UPLOAD, QUICK);
    let agent = studio.start();

    // The first file: the round trip from the create and the URL, 1 Gbit/s assumed.
    let (first, hash) = upload_one(&studio, "first.mp4", 50 * MIB, 1).await;
    let first_size = chunk_size(&first);
    assert!(
        first_size > 8 * MIB as u64 && first_size.is_multiple_of(MIB as u64),
        "{first}"
    );
    let why = events(&first, "chunk size");
    assert_eq!(why.len(), 1, "{first}");
    assert!(why[0].starts_with("auto: answers take"), "{why:?}");
    assert!(why[0].contains("1 Gbit/s is assumed"), "{why:?}");
    let video = only_video(&emulator, "first.mp4");
    assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(
        u64::from(video.total_chunks.unwrap()),
        (50 * MIB as u64).div_ceil(first_size)
    );
    assert!(
        studio.log_text().contains("chunk size: auto: answers take"),
        "{}",
        studio.log_text()
    );

    // The second: from the rate the first one measured (at most the link's 400 Mbit/s).
    let (second, _) = upload_one(&studio, "second.mp4", 50 * MIB, 2).await;
    let second_size = chunk_size(&second);
    let why = events(&second, "chunk size");
    assert!(why[0].contains("chunks cross at"), "{why:?}");
    assert!(
        (8 * MIB as u64..first_size).contains(&second_size),
        "{second_size} after {first_size}: {why:?}"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_for_its_size_halves_it_on_the_same_video_and_later_files_start_there() {
    let emulator = emulator(|options| {
        options.latency = Duration::from_millis(20);
        options.max_chunk_size = Some(8 * MIB as u64);
    })
    .await;
    let studio = Studio::new(&emulator, AUTO_UPLOAD, QUICK);
    let agent = studio.start();

    let (first, hash) = upload_one(&studio, "big.mov", 40 * MIB, 3).await;
    let halved = chunk_size(&first);
    assert!(halved <= 8 * MIB as u64, "{first}");
    let video = only_video(&emulator, "big.mov");
    assert!(video.complete);
    assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(
        video.total_chunks,
        Some((40 * MIB as u64).div_ceil(halved) as u32)
    );
    let refused = emulator.stats().chunks_too_large;
    assert!(refused >= 1);
    let why = events(&first, "chunk size");
    assert!(
        why.iter()
            .any(|w| w.contains("the server refused a chunk of") && w.contains("413")),
        "{why:?}"
    );

    // The next file starts at the size the server took: no chunk of it is refused.
    let (second, _) = upload_one(&studio, "next.mov", 40 * MIB, 4).await;
    assert_eq!(chunk_size(&second), halved, "{second}");
    assert_eq!(emulator.stats().chunks_too_large, refused);
    assert!(
        events(&second, "chunk size")[0].contains("the server refused bigger chunks"),
        "{second}"
    );
    stop(agent).await;

    // And so does the next run: the size is kept in the state store.
    let agent = studio.start();
    let (third, _) = upload_one(&studio, "later.mov", 20 * MIB, 5).await;
    assert_eq!(chunk_size(&third), halved, "{third}");
    assert_eq!(emulator.stats().chunks_too_large, refused);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_chunk_size_the_server_refuses_fails_the_file_saying_so() {
    let emulator = emulator(|options| options.max_chunk_size = Some(4 * MIB as u64)).await;
    let upload = AUTO_UPLOAD.replace("[upload]\n", "[upload]\nchunk_size = \"8 MiB\"\n");
    let studio = Studio::new(&emulator, &upload, QUICK);
    let agent = studio.start();
    write_file(&studio.inbox.join("clip.mp4"), 20 * MIB, 6);
    let failed = studio.failed().join("clip.mp4");
    eventually(WAIT, "clip.mp4 in failed/", || arrived(&failed)).await;
    let sidecar = sidecar(&failed);
    assert_eq!(sidecar["status"], "failed");
    let error = &sidecar["error"];
    assert_eq!(error["status"], 413, "{sidecar}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("the server refuses chunks of 8 MiB"),
        "{message}"
    );
    let meaning = error["meaning"].as_str().unwrap();
    assert!(meaning.contains("upload.chunk_size"), "{meaning}");
    // Refused once, not halved and not retried.
    assert_eq!(emulator.stats().chunks_too_large, 1);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_kill_9_keeps_the_chunk_size_it_started_with() {
    let emulator = emulator(|options| {
        options.latency = Duration::from_millis(20);
        options.link_rate = Some(6_250_000); // 50 Mbit/s: slow enough to stop it midway
    })
    .await;
    let fixed = AUTO_UPLOAD.replace("[upload]\n", "[upload]\nchunk_size = \"2 MiB\"\n");
    let studio = Studio::new(&emulator, &fixed, QUICK);
    let data = export("long.mov", 30 * MIB, 7);
    std::fs::write(studio.inbox.join("long.mov"), &data).unwrap();
    let mut agent = studio.start();
    eventually(WAIT, "some chunks received", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 3)
    })
    .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();

    // Started again with auto, which would pick 8 MiB or more on this link: the chunks
    // accepted so far were 2 MiB ones, and the server expects the rest the same.
    let body = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(&studio.config, body.replace("chunk_size = \"2 MiB\"\n", "")).unwrap();
    let agent = studio.start();
    let done = studio.done().join("long.mov");
    eventually(WAIT, "long.mov in done/", || arrived(&done)).await;
    let sidecar = sidecar(&done);
    assert_eq!(chunk_size(&sidecar), 2 * MIB as u64, "{sidecar}");
    assert!(events(&sidecar, "chunk size").is_empty(), "{sidecar}");
    let video = only_video(&emulator, "long.mov");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(video.total_chunks, Some(15));
    assert_eq!(video.restarts, 0, "resumed, not sent again: {video:?}");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotfolder_upload_remembers_a_refused_size_for_its_next_run_too() {
    let emulator = emulator(|options| {
        options.latency = Duration::from_millis(20);
        options.max_chunk_size = Some(8 * MIB as u64);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{AUTO_UPLOAD}", account_toml(&emulator, "keycloak")),
    );
    let mut sizes = Vec::new();
    let mut refused = Vec::new();
    for (name, seed) in [("one.mp4", 8), ("two.mp4", 9)] {
        let path = dir.path().join(name);
        let hash = write_file(&path, 30 * MIB, seed);
        let output = run(hotfolder()
            .arg("upload")
            .arg("--config")
            .arg(&config)
            .arg("--json")
            .arg(&path))
        .await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        let line: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(line["sha256"], hash.as_str());
        sizes.push(line["chunk_size"].as_u64().unwrap());
        refused.push(emulator.stats().chunks_too_large);
    }
    assert!(refused[0] >= 1 && refused[1] == refused[0], "{refused:?}");
    assert!(sizes[0] <= 8 * MIB as u64, "{sizes:?}");
    assert_eq!(
        sizes[1], sizes[0],
        "the second run starts where the first ended"
    );
    assert_eq!(
        only_video(&emulator, "two.mp4").total_chunks.map(u64::from),
        Some((30 * MIB as u64).div_ceil(sizes[0]))
    );
}
