//! Following a video's transcoding after its upload (`follow_transcoding`, issue 12 item 7)
//! through the real binary: the emulator transcodes each video some time after its upload (or
//! never), a webhook receiver on 127.0.0.1 takes the events, and the schedule is shortened with
//! the debug builds' `HOTFOLDER_TEST_TRANSCODING_POLL_MS` / `_LIMIT_MS`.

use std::time::Duration;

use crate::notify::{Hook, Plan};
use crate::util::*;

const WAIT: Duration = Duration::from_secs(60);

/// A folder that follows transcoding (or not), its events to `hook`.
fn studio(emulator: &hotfolder::Emulator, hook: &Hook, follow: bool) -> Studio {
    let folder = format!(
        "stable_for = \"300ms\"\ninclude = [\"*.mov\"]\nfollow_transcoding = {follow}\n\n\
         [[notify]]\nurl = \"{}\"\nevents = [\"uploaded\", \"transcoded\", \"transcoding_slow\"]\n",
        hook.url()
    );
    Studio::new(emulator, FAST_UPLOAD, &folder)
}

/// `hotfolder run` polling first after `poll_ms` (at most every ten times that) and giving up
/// `limit_ms` after the upload.
fn start(studio: &Studio, poll_ms: u64, limit_ms: u64) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(studio.stderr_log())
        .unwrap();
    hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("HOTFOLDER_TEST_TRANSCODING_POLL_MS", poll_ms.to_string())
        .env("HOTFOLDER_TEST_TRANSCODING_LIMIT_MS", limit_ms.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("hotfolder run starts")
}

/// The events of `kind` the receiver took, each once.
fn taken(hook: &Hook, kind: &str) -> Vec<serde_json::Value> {
    hook.accepted()
        .into_iter()
        .map(|d| d.json())
        .filter(|json| json["event"] == kind)
        .collect()
}

fn sidecar_events(path: &std::path::Path, kind: &str) -> usize {
    sidecar(path)["events"].as_array().map_or(0, |events| {
        events.iter().filter(|e| e["event"] == kind).count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_upload_gains_its_transcoding_record_and_a_transcoded_event() {
    let emulator = emulator(|options| options.transcode_after = Some(Duration::from_secs(6))).await;
    let hook = Hook::start(Plan::default()).await;
    let studio = studio(&emulator, &hook, true);
    write_file(&studio.inbox.join("clip.mov"), 300 * 1024, 1);
    let agent = start(&studio, 200, 60_000);
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    // In done/ at once, and followed meanwhile: status shows it once the move is recorded
    // (the file is in done/ a moment before the store says so).
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        let status = studio.status_json().await;
        if status["summary"]["done"] == 1 || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let followed = status["transcoding"].as_array().unwrap();
    assert_eq!(followed.len(), 1, "{status:#}");
    assert!(followed[0]["path"].as_str().unwrap().ends_with("clip.mov"));
    assert!(
        sidecar(&done).get("transcoding").is_none(),
        "not transcoded yet"
    );

    eventually(WAIT, "the transcoded event", || {
        !taken(&hook, "transcoded").is_empty()
    })
    .await;
    let video_id = sidecar(&done)["video_id"].as_str().unwrap().to_owned();
    let event = &taken(&hook, "transcoded")[0];
    assert_eq!(event["video_id"], video_id.as_str());
    assert_eq!(event["file"], "clip.mov");
    assert_eq!(event["folder"], studio.inbox.display().to_string());
    assert!(event["reason"].is_null(), "{event}");
    // The uploaded event came first.
    let order: Vec<String> = hook
        .accepted()
        .iter()
        .map(|d| d.json()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["uploaded", "transcoded"]);

    let side = sidecar(&done);
    let record = &side["transcoding"];
    assert_eq!(record["status"], "transcoded", "{side:#}");
    assert!(record["finished_at"].is_string(), "{record}");
    let qualities = record["qualities"].as_array().unwrap();
    let names: Vec<&str> = qualities
        .iter()
        .map(|q| q["quality"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["360p", "720p", "1080p"]);
    assert!(qualities.iter().all(|q| q["completed"] == true));
    // Nothing of the first sidecar was lost.
    for field in [
        "file",
        "size",
        "sha256",
        "status",
        "video_id",
        "chunks",
        "started_at",
    ] {
        assert!(!side[field].is_null(), "{field} lost: {side:#}");
    }
    assert_eq!(sidecar_events(&done, "detected"), 1);
    assert_eq!(sidecar_events(&done, "transcoded"), 1);
    let polls = emulator.stats().transcoding_polls;
    assert!(polls >= 2, "asked {polls} times");
    assert!(
        studio.status_json().await["transcoding"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    stop(agent).await;
    let log = studio.log_text();
    assert!(
        log.contains("transcoded: every quality transcoded"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoding_that_never_finishes_is_reported_slow_after_the_limit() {
    let emulator = emulator(|options| options.transcode_after = None).await;
    let hook = Hook::start(Plan::default()).await;
    let studio = studio(&emulator, &hook, true);
    write_file(&studio.inbox.join("stuck.mov"), 200 * 1024, 2);
    let agent = start(&studio, 100, 3_000);
    let done = studio.done().join("stuck.mov");
    eventually(WAIT, "stuck.mov in done/", || arrived(&done)).await;
    eventually(WAIT, "the transcoding_slow event", || {
        !taken(&hook, "transcoding_slow").is_empty()
    })
    .await;
    stop(agent).await;
    let event = &taken(&hook, "transcoding_slow")[0];
    let side = sidecar(&done);
    assert_eq!(event["video_id"], side["video_id"]);
    let reason = event["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not transcoded 3 seconds after the upload") && reason.contains("1080p"),
        "{reason}"
    );
    assert!(taken(&hook, "transcoded").is_empty());
    let record = &side["transcoding"];
    assert_eq!(record["status"], "slow", "{side:#}");
    assert!(record["finished_at"].is_null());
    assert_eq!(record["summary"], reason);
    // Given up no earlier than the limit after the upload's end.
    let parse = |text: &serde_json::Value| {
        time::OffsetDateTime::parse(
            text.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let waited = parse(&record["followed_until"]) - parse(&side["finished_at"]);
    assert!(waited >= time::Duration::seconds(3), "{waited}");
    assert_eq!(sidecar_events(&done, "transcoding_slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_following_resumes_after_the_restart_with_one_transcoded_event() {
    let emulator = emulator(|options| options.transcode_after = Some(Duration::from_secs(8))).await;
    let hook = Hook::start(Plan::default()).await;
    let studio = studio(&emulator, &hook, true);
    write_file(&studio.inbox.join("clip.mov"), 200 * 1024, 3);
    let agent = start(&studio, 200, 60_000);
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    eventually(WAIT, "a first transcoding poll", || {
        emulator.stats().transcoding_polls >= 1
    })
    .await;
    signal(&agent, 9);
    let mut agent = agent;
    agent.wait().await.unwrap();
    assert!(
        taken(&hook, "transcoded").is_empty(),
        "killed before it was done"
    );
    assert!(sidecar(&done).get("transcoding").is_none());
    let asked_before = emulator.stats().transcoding_polls;

    let agent = start(&studio, 200, 60_000);
    eventually(WAIT, "the transcoded event after the restart", || {
        !taken(&hook, "transcoded").is_empty()
    })
    .await;
    assert!(emulator.stats().transcoding_polls > asked_before);
    // A while longer: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(agent).await;
    let transcoded: Vec<_> = hook
        .deliveries()
        .into_iter()
        .filter(|d| d.json()["event"] == "transcoded")
        .collect();
    assert_eq!(transcoded.len(), 1, "exactly one transcoded event");
    assert_eq!(sidecar(&done)["transcoding"]["status"], "transcoded");
    assert_eq!(sidecar_events(&done, "transcoded"), 1);
    assert_eq!(
        taken(&hook, "uploaded").len(),
        1,
        "the upload was not repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_without_follow_transcoding_never_asks_about_transcoding() {
    let emulator =
        emulator(|options| options.transcode_after = Some(Duration::from_millis(100))).await;
    let hook = Hook::start(Plan::default()).await;
    let studio = studio(&emulator, &hook, false);
    write_file(&studio.inbox.join("clip.mov"), 100 * 1024, 4);
    let agent = start(&studio, 50, 2_000);
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    eventually(WAIT, "the uploaded event", || {
        !taken(&hook, "uploaded").is_empty()
    })
    .await;
    // Long enough for many polls and the limit, had it followed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        studio.status_json().await["transcoding"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    stop(agent).await;
    assert_eq!(emulator.stats().transcoding_polls, 0);
    assert!(sidecar(&done).get("transcoding").is_none());
    assert!(taken(&hook, "transcoded").is_empty());
    assert!(taken(&hook, "transcoding_slow").is_empty());
}

/// Second hostile test of issue 12, D2: a 404 that is not about the video (here its
/// VideoManager unknown for a while, as a gateway or a platform hiccup answers) does not end
/// following: the video is asked about again, and `transcoded` arrives once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_that_is_not_about_the_video_does_not_end_following() {
    let emulator = emulator(|options| options.transcode_after = Some(Duration::from_secs(4))).await;
    let hook = Hook::start(Plan::default()).await;
    let studio = studio(&emulator, &hook, true);
    write_file(&studio.inbox.join("clip.mov"), 300 * 1024, 2);
    let agent = start(&studio, 200, 60_000);
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    // Every route of the VideoManager answers 404 for a while, the search included.
    emulator.set_video_managers(vec![4242]);
    let polls = emulator.stats().transcoding_polls;
    eventually(WAIT, "two polls answered 404", || {
        emulator.stats().transcoding_polls >= polls + 2
    })
    .await;
    emulator.set_video_managers(Vec::new());
    eventually(WAIT, "the transcoded event", || {
        !taken(&hook, "transcoded").is_empty()
    })
    .await;
    stop(agent).await;
    let log = studio.log_text();
    assert!(!log.contains("stopped following"), "{log}");
    assert_eq!(sidecar(&done)["transcoding"]["status"], "transcoded");
}
