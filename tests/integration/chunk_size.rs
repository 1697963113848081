//! `chunk_size = "auto"` through `hotfolder run` against the emulator's model of a long link
//! (a latency per answer, one shared rate): the size chosen per file and why (sidecar, log),
//! a chunk refused for its size (413) halving it on the same video and the smaller size kept
//! for later files, a fixed size refused with a clear failure, and a resume after `kill -9`
//! keeping the size its accepted chunks were sent in. And what a hostile test found: a refusal
//! of a size already taken is a hiccup, not a limit; a 400 saying "too large" is a refusal of
//! the size; the cap is shown and lasts a day; halving starts from the bytes sent; a reload to
//! another platform and back keeps the cap; a kill right after a refusal keeps it.

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
        events(&second, "chunk size")[0].contains("but the server refused a chunk of"),
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
    // Refused once, not halved and not retried; the sidecar says the size tried.
    assert_eq!(emulator.stats().chunks_too_large, 1);
    assert_eq!(chunk_size(&sidecar), 8 * MIB as u64, "{sidecar}");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_kill_9_keeps_the_chunk_size_it_started_with() {
    let (emulator, studio, data) = killed_midway_in_2_mib_chunks(7).await;

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

/// Auto with 16 files in parallel: its ceiling is then the 8 MiB floor (memory stays bounded),
/// so every choice is 8 MiB whatever the test machine's round trips.
fn eight_mib_auto() -> String {
    AUTO_UPLOAD.replace("parallel = 2", "parallel = 16")
}

/// The state store's database of a studio.
fn state_db(studio: &Studio) -> rusqlite::Connection {
    rusqlite::Connection::open(studio.dir.path().join("state").join("jobs.sqlite3")).unwrap()
}

async fn status_text(studio: &Studio) -> String {
    let output = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_on_a_chunk_of_a_size_already_accepted_is_retried_not_halved() {
    // The third chunk post is refused once, whatever its size: a proxy's hiccup.
    let emulator = emulator(|options| options.too_large_on_post = Some(3)).await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (sidecar, hash) = upload_one(&studio, "hiccup.mp4", 40 * MIB, 11).await;
    assert_eq!(chunk_size(&sidecar), 8 * MIB as u64, "{sidecar}");
    let video = only_video(&emulator, "hiccup.mp4");
    assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(video.restarts, 0, "not sent again from chunk 1: {video:?}");
    assert_eq!(emulator.stats().chunks_too_large, 1);
    let retries = events(&sidecar, "retry");
    assert!(retries.iter().any(|r| r.contains("413")), "{sidecar}");
    assert!(
        !events(&sidecar, "chunk size")
            .iter()
            .any(|w| w.contains("refused")),
        "{sidecar}"
    );
    // Nothing remembered: the next file is not capped.
    assert!(studio.status_json().await["chunk_size_cap"].is_null());
    let (next, _) = upload_one(&studio, "after.mp4", 20 * MIB, 12).await;
    assert_eq!(chunk_size(&next), 8 * MIB as u64, "{next}");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lowers_its_limit_mid_run_gets_smaller_chunks_not_a_failed_file() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (first, _) = upload_one(&studio, "before.mp4", 20 * MIB, 21).await;
    assert_eq!(chunk_size(&first), 8 * MIB as u64, "{first}");
    // 8 MiB was taken in this run; now a proxy in front takes no more than 4 MiB.
    emulator.set_max_chunk_size(Some(4 * MIB as u64));
    let (second, hash) = upload_one(&studio, "after.mp4", 20 * MIB, 22).await;
    assert_eq!(chunk_size(&second), 4 * MIB as u64, "{second}");
    let video = only_video(&emulator, "after.mp4");
    assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    // Two refusals taken for a hiccup, the third for the size.
    assert_eq!(emulator.stats().chunks_too_large, 3);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_saying_too_large_halves_the_size_like_a_413() {
    let emulator = emulator(|options| {
        options.max_chunk_size = Some(4 * MIB as u64);
        options.too_large_as_400 = true;
    })
    .await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (sidecar, hash) = upload_one(&studio, "proxy.mp4", 20 * MIB, 13).await;
    assert_eq!(chunk_size(&sidecar), 4 * MIB as u64, "{sidecar}");
    let video = only_video(&emulator, "proxy.mp4");
    assert_eq!(video.sha256.as_deref(), Some(hash.as_str()));
    let why = events(&sidecar, "chunk size");
    assert!(
        why.iter()
            .any(|w| w.contains("refused a chunk of 8 MiB") && w.contains("400")),
        "{why:?}"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_is_shown_by_check_and_status_and_forgotten_a_day_after_the_refusal() {
    let emulator = emulator(|options| options.max_chunk_size = Some(4 * MIB as u64)).await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (first, _) = upload_one(&studio, "one.mp4", 20 * MIB, 14).await;
    assert_eq!(chunk_size(&first), 4 * MIB as u64, "{first}");
    assert_eq!(emulator.stats().chunks_too_large, 1);
    let cap = studio.status_json().await["chunk_size_cap"].clone();
    assert_eq!(cap["max"], 4 * MIB as u64, "{cap}");
    assert_eq!(cap["refused"], 8 * MIB as u64, "{cap}");
    assert!(
        cap["refused_at"].is_string() && cap["until"].is_string(),
        "{cap}"
    );
    let shown = status_text(&studio).await;
    assert!(
        shown.contains("chunk size: auto, at most 4 MiB since the platform refused 8 MiB at"),
        "{shown}"
    );
    let checked = run(hotfolder().arg("check").arg("--config").arg(&studio.config)).await;
    let checked = text(&checked.stdout);
    assert!(
        checked.contains("# auto, at most 4 MiB since the platform refused 8 MiB at"),
        "{checked}"
    );
    stop(agent).await;

    // A day and an hour later: the larger size is tried again (and refused again here).
    state_db(&studio)
        .execute(
            "UPDATE link SET refused_at = strftime('%Y-%m-%dT%H:%M:%S.000000000Z', 'now', '-25 hours')",
            [],
        )
        .unwrap();
    assert!(studio.status_json().await["chunk_size_cap"].is_null());
    let agent = studio.start();
    let (later, _) = upload_one(&studio, "two.mp4", 20 * MIB, 15).await;
    assert_eq!(chunk_size(&later), 4 * MIB as u64, "{later}");
    assert_eq!(
        emulator.stats().chunks_too_large,
        2,
        "8 MiB was tried again"
    );
    assert_eq!(
        studio.status_json().await["chunk_size_cap"]["max"],
        4 * MIB as u64
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halving_starts_from_the_bytes_sent_in_the_refused_chunk() {
    // A 6 MiB file is one chunk of 6 MiB in an 8 MiB plan: refused, it halves to 3 MiB.
    let emulator = emulator(|options| options.max_chunk_size = Some(5 * MIB as u64)).await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (sidecar, _) = upload_one(&studio, "short.mp4", 6 * MIB, 16).await;
    assert_eq!(chunk_size(&sidecar), 3 * MIB as u64, "{sidecar}");
    let why = events(&sidecar, "chunk size");
    assert!(
        why.iter()
            .any(|w| w.contains("refused a chunk of 6 MiB") && w.contains("chunks of 3 MiB")),
        "{why:?}"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_file_refused_at_its_old_size_restarts_at_the_configured_size() {
    let (emulator, studio, data) = killed_midway_in_2_mib_chunks(17).await;

    // The config now says 1 MiB, and the server takes no more than 1.5 MiB any longer: the
    // resume's 2 MiB chunks are refused, and the file goes again at the config's size.
    let body = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(
        &studio.config,
        body.replace("chunk_size = \"2 MiB\"", "chunk_size = \"1 MiB\""),
    )
    .unwrap();
    emulator.set_max_chunk_size(Some(3 * MIB as u64 / 2));
    let agent = studio.start();
    let done = studio.done().join("long.mov");
    eventually(WAIT, "long.mov in done/", || arrived(&done)).await;
    let sidecar = sidecar(&done);
    assert_eq!(sidecar["status"], "uploaded", "{sidecar}");
    assert_eq!(chunk_size(&sidecar), MIB as u64, "{sidecar}");
    let why = events(&sidecar, "chunk size");
    assert!(
        why.iter().any(|w| w.contains("refused a chunk of 2 MiB")
            && w.contains("chunks of 1 MiB")
            && w.contains("upload.chunk_size")),
        "{why:?}"
    );
    let video = only_video(&emulator, "long.mov");
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(video.total_chunks, Some(30));
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_right_after_a_refusal_keeps_the_refused_size() {
    let emulator = emulator(|options| {
        options.max_chunk_size = Some(4 * MIB as u64);
        options.link_rate = Some(6_250_000); // 50 Mbit/s: the file takes seconds
    })
    .await;
    let studio = Studio::new(&emulator, &eight_mib_auto(), QUICK);
    write_file(&studio.inbox.join("cut.mp4"), 40 * MIB, 18);
    let mut agent = studio.start();
    eventually(WAIT, "a refusal and a smaller chunk accepted", || {
        emulator.stats().chunks_too_large >= 1
            && emulator
                .videos()
                .first()
                .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let cap = studio.status_json().await["chunk_size_cap"].clone();
    assert_eq!(cap["max"], 4 * MIB as u64, "{cap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_api_url_and_back_keeps_the_refused_size() {
    let capped = emulator(|options| options.max_chunk_size = Some(4 * MIB as u64)).await;
    let other = emulator(|_| {}).await;
    let studio = Studio::new(&capped, &eight_mib_auto(), QUICK);
    let agent = studio.start();
    let (first, _) = upload_one(&studio, "one.mp4", 20 * MIB, 19).await;
    assert_eq!(chunk_size(&first), 4 * MIB as u64, "{first}");
    let refused = capped.stats().chunks_too_large;
    assert_eq!(refused, 1);

    let original = std::fs::read_to_string(&studio.config).unwrap();
    let reload = |body: String| {
        let studio = &studio;
        let agent = &agent;
        async move {
            let before = studio.log_text().matches("config reloaded").count();
            std::fs::write(&studio.config, body).unwrap();
            signal(agent, 1);
            eventually(WAIT, "the reload", || {
                studio.log_text().matches("config reloaded").count() > before
            })
            .await;
        }
    };
    reload(original.replace(
        capped.base_url().as_str().trim_end_matches('/'),
        other.base_url().as_str().trim_end_matches('/'),
    ))
    .await;
    let (elsewhere, _) = upload_one(&studio, "two.mp4", 20 * MIB, 20).await;
    assert_eq!(chunk_size(&elsewhere), 8 * MIB as u64, "{elsewhere}");
    assert_eq!(other.videos().len(), 1);

    reload(original).await;
    let (back, _) = upload_one(&studio, "three.mp4", 20 * MIB, 21).await;
    assert_eq!(chunk_size(&back), 4 * MIB as u64, "{back}");
    assert_eq!(
        capped.stats().chunks_too_large,
        refused,
        "not refused again"
    );
    assert_eq!(
        studio.status_json().await["chunk_size_cap"]["max"],
        4 * MIB as u64
    );
    stop(agent).await;
}

/// `long.mov` (30 MiB) uploading in 2 MiB chunks over a 50 Mbit/s link, killed with SIGKILL
/// once the emulator has 3 chunks of it: the emulator, the studio and the file's bytes.
async fn killed_midway_in_2_mib_chunks(seed: u64) -> (Emulator, Studio, Vec<u8>) {
    let emulator = emulator(|options| {
        options.latency = Duration::from_millis(20);
        options.link_rate = Some(6_250_000); // 50 Mbit/s: slow enough to stop it midway
    })
    .await;
    let fixed = AUTO_UPLOAD.replace("[upload]\n", "[upload]\nchunk_size = \"2 MiB\"\n");
    let studio = Studio::new(&emulator, &fixed, QUICK);
    let data = export("long.mov", 30 * MIB, seed);
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
    (emulator, studio, data)
}
