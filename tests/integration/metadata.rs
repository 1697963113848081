//! Per-file metadata (`metadata_file`, issue 17) through the real binary against the emulator:
//! movingimage's FTP ingest job XML (the documentation's sample, with its own values) and the
//! JSON companion, arriving before, after or never; invalid companions; `result_xml`.

use std::path::Path;
use std::time::Duration;

use hotfolder::Emulator;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);
const JOB_NAMESPACE: &str = "http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/job.xsd";
const RESULT_NAMESPACE: &str = "http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/result.xsd";

/// The sample job XML of movingimage's FTP ingest documentation (`docs/platform/vmpro/vam/ftp/
/// xml.md` in `movingimage-evp/documentation`), with its own values.
const DOCUMENTATION_SAMPLE: &str = include_str!("../fixtures/ftp-job-sample.xml");

fn folder(lines: &str) -> String {
    format!("stable_for = \"300ms\"\n{lines}")
}

fn the_video(emulator: &Emulator, file_name: &str) -> hotfolder::VideoRecord {
    let videos: Vec<_> = emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect();
    assert_eq!(videos.len(), 1, "{videos:?}");
    videos.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn error_text(path: &Path) -> String {
    let sidecar = sidecar(path);
    format!(
        "{} {}",
        sidecar["error"]["message"].as_str().unwrap_or(""),
        sidecar["error"]["meaning"].as_str().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_sample_job_xml_uploads_its_video_with_every_supported_field() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder(
            "metadata_file = \"required\"\nresult_xml = true\ntitle = \"folder title\"\nkeywords = [\"folder\"]",
        ),
    );
    let agent = studio.start();
    // The job XML first, under a name of its own (it names its video in source/file), then the
    // video; a Premiere project XML beside them is left alone.
    std::fs::write(studio.inbox.join("upload-job.xml"), DOCUMENTATION_SAMPLE).unwrap();
    std::fs::write(
        studio.inbox.join("project.xml"),
        "<xmeml version=\"5\"><sequence/></xmeml>",
    )
    .unwrap();
    write_file(&studio.inbox.join("video001.mp4"), 40_000, 1);
    let done = studio.done().join("video001.mp4");
    eventually(WAIT, "video001.mp4 in done/", || arrived(&done)).await;
    stop(agent).await;

    let video = the_video(&emulator, "video001.mp4");
    assert_eq!(video.title.as_deref(), Some("FtpImportMetaData"));
    assert!(
        video
            .description
            .as_deref()
            .unwrap_or("")
            .starts_with("Lorem ipsum dolor"),
        "{video:?}"
    );
    assert_eq!(
        video.keywords,
        vec!["summer".to_string(), "autumn".to_string()]
    );
    assert_eq!(video.channel, Some(3054));
    assert_eq!(video.group, Some(2233));
    assert_eq!(
        video
            .custom_metadata
            .get("production company")
            .map(String::as_str),
        Some("MGM")
    );
    // A publish *period* is not an immediate publish: no update was sent.
    assert!(video.updates.is_empty(), "{video:?}");

    // The companion moved with its video; the project file stayed.
    assert!(studio.done().join("upload-job.xml").exists());
    assert!(!studio.inbox.join("upload-job.xml").exists());
    assert!(studio.inbox.join("project.xml").exists());

    let sidecar = sidecar(&done);
    assert_eq!(sidecar["status"], "uploaded");
    let companion = &sidecar["companion"];
    assert_eq!(companion["file"], "upload-job.xml");
    assert_eq!(companion["format"], "job_xml");
    assert_eq!(companion["reference"], "abc");
    assert_eq!(companion["applied"]["title"], "FtpImportMetaData");
    assert_eq!(companion["applied"]["group"], 2233);
    assert_eq!(companion["applied"]["channels"][0], 3054);
    assert_eq!(
        companion["applied"]["custom_metadata"]["production company"],
        "MGM"
    );
    let not_applied = companion["not_applied"].to_string();
    for what in [
        "securityPolicyId 950",
        "publish/period",
        "still Chysathemum.jpg",
        "delete/time",
        "inform employee.name@company.com",
    ] {
        assert!(not_applied.contains(what), "{what} in {not_applied}");
    }
    assert!(companion["warning"].as_str().is_some(), "{companion}");
    assert_eq!(companion["calls"][0]["ok"], true, "{companion}");

    // The result XML, in the FTP ingest's result format.
    let result_path = studio.done().join("video001.mp4.xml");
    let result = std::fs::read_to_string(&result_path).expect("result XML written");
    assert!(result.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<result fileName=\"video001.mp4\" reference=\"abc\" jobReference=\""), "{result}");
    assert!(
        result.contains(&format!("xmlns=\"{RESULT_NAMESPACE}\">")),
        "{result}"
    );
    assert!(
        result.contains("<success>\n        <videoTitle>FtpImportMetaData</videoTitle>\n"),
        "{result}"
    );
    assert!(
        result.contains(&format!("<video id=\"{}\"/>", video.id)),
        "{result}"
    );
    assert_eq!(
        sidecar["result_xml"],
        result_path.to_string_lossy().as_ref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_a_video_waits_for_its_job_xml_and_goes_once_it_arrives() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let agent = studio.start();
    let video = studio.inbox.join("clip.mov");
    write_file(&video, 30_000, 2);
    eventually(WAIT, "the wait for the companion logged", || {
        studio.log_text().contains("waiting for its companion")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(video.exists(), "uploaded without its companion");
    assert!(emulator.videos().is_empty());
    // The trigger comes last, as on FTP.
    let xml = format!(
        r#"<job xmlns="{JOB_NAMESPACE}"><title>After the video</title><source><file>clip.mov</file></source></job>"#
    );
    std::fs::write(studio.inbox.join("clip.xml"), xml).unwrap();
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    stop(agent).await;
    assert_eq!(
        the_video(&emulator, "clip.mov").title.as_deref(),
        Some("After the video")
    );
    assert!(studio.done().join("clip.xml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_a_video_whose_companion_never_comes_goes_to_failed_after_incomplete_after() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\"\nincomplete_after = \"2s\"\nresult_xml = true"),
    );
    let agent = studio.start();
    write_file(&studio.inbox.join("lonely.mov"), 30_000, 3);
    let failed = studio.failed().join("lonely.mov");
    eventually(WAIT, "lonely.mov in failed/", || arrived(&failed)).await;
    stop(agent).await;
    assert!(emulator.videos().is_empty());
    let reason = error_text(&failed);
    assert!(
        reason.contains("no companion arrived within 2s"),
        "{reason}"
    );
    let result =
        std::fs::read_to_string(studio.failed().join("lonely.mov.xml")).expect("result XML");
    assert!(
        result.contains("<error>\n        <message>no companion arrived within 2s</message>"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_a_video_without_companion_goes_after_metadata_wait_with_the_folders_metadata() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"optional\"\nmetadata_wait = \"2s\"\ntitle = \"Folder {stem}\""),
    );
    let agent = studio.start();
    let started = std::time::Instant::now();
    write_file(&studio.inbox.join("plain.mov"), 30_000, 4);
    let done = studio.done().join("plain.mov");
    eventually(WAIT, "plain.mov in done/", || arrived(&done)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "went before metadata_wait"
    );
    stop(agent).await;
    assert_eq!(
        the_video(&emulator, "plain.mov").title.as_deref(),
        Some("Folder plain")
    );
    assert!(sidecar(&done).get("companion").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_companion_before_its_video_adds_channels_custom_metadata_and_publishes() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"optional\"\nmetadata_wait = \"1m\""),
    );
    let agent = studio.start();
    std::fs::write(
        studio.inbox.join("clip.mp4.json"),
        r#"{"title": "From JSON", "keywords": ["a"], "channels": [11, 12, 13], "group": 7,
            "custom_metadata": {"season": "2"}, "auto_publish": true, "reference": "ref-1"}"#,
    )
    .unwrap();
    write_file(&studio.inbox.join("clip.mp4"), 30_000, 5);
    let done = studio.done().join("clip.mp4");
    eventually(WAIT, "clip.mp4 in done/", || arrived(&done)).await;
    stop(agent).await;
    let video = the_video(&emulator, "clip.mp4");
    assert_eq!(video.title.as_deref(), Some("From JSON"));
    assert_eq!(video.channel, Some(11));
    assert_eq!(video.added_channels, vec![12, 13]);
    assert_eq!(video.group, Some(7));
    assert_eq!(
        video.custom_metadata.get("season").map(String::as_str),
        Some("2")
    );
    assert_eq!(video.auto_publish, Some(true));
    assert_eq!(video.updates.len(), 1, "{video:?}");
    assert!(studio.done().join("clip.mp4.json").exists());
    let companion = &sidecar(&done)["companion"];
    assert_eq!(companion["format"], "json");
    assert_eq!(companion["reference"], "ref-1");
    let calls: Vec<String> = companion["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| format!("{} {}", c["call"], c["ok"]))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        calls,
        vec![
            "\"add to channel 12\" true",
            "\"add to channel 13\" true",
            "\"set custom metadata season\" true",
            "\"publish\" true"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_xml_or_a_json_with_a_wrong_type_sends_its_video_to_failed_with_the_reason()
{
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let agent = studio.start();
    // source/file with a path, which the schema forbids.
    std::fs::write(
        studio.inbox.join("bad.xml"),
        format!(r#"<job xmlns="{JOB_NAMESPACE}"><source><file>sub/bad.mov</file></source></job>"#),
    )
    .unwrap();
    write_file(&studio.inbox.join("bad.mov"), 30_000, 6);
    // A DOCTYPE with an entity.
    std::fs::write(
        studio.inbox.join("entity.xml"),
        format!(r#"<!DOCTYPE job [<!ENTITY e "x">]><job xmlns="{JOB_NAMESPACE}"><title>&e;</title><source><file>entity.mov</file></source></job>"#),
    )
    .unwrap();
    write_file(&studio.inbox.join("entity.mov"), 30_000, 7);
    // channels as text, not a list.
    std::fs::write(
        studio.inbox.join("typed.mov.json"),
        r#"{"channels": "3054"}"#,
    )
    .unwrap();
    write_file(&studio.inbox.join("typed.mov"), 30_000, 8);

    for (video, expected) in [
        ("bad.mov", "it must be a file name without / or \\"),
        ("entity.mov", "DOCTYPE"),
        (
            "typed.mov",
            "`channels`: expected a list of channel ids, found text \"3054\"",
        ),
    ] {
        let failed = studio.failed().join(video);
        eventually(WAIT, &format!("{video} in failed/"), || arrived(&failed)).await;
        let reason = error_text(&failed);
        assert!(reason.contains(expected), "{video}: {reason}");
        assert!(reason.contains("hotfolder retry"), "{video}: {reason}");
    }
    stop(agent).await;
    assert!(
        emulator.videos().is_empty(),
        "nothing is created for an invalid companion"
    );
    // Each companion went to failed/ with its video.
    for companion in ["bad.xml", "entity.xml", "typed.mov.json"] {
        assert!(studio.failed().join(companion).exists(), "{companion}");
    }
    // `failed` lists the videos, not their companions; `retry` puts both back.
    let listed = run(hotfolder()
        .arg("failed")
        .arg("--json")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let mut names: Vec<String> = listed
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| f["rel_path"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, vec!["bad.mov", "entity.mov", "typed.mov"]);
    let retried = run(hotfolder()
        .arg("retry")
        .arg("--config")
        .arg(&studio.config)
        .arg(studio.failed().join("typed.mov")))
    .await;
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    assert!(
        text(&retried.stderr).contains("its companion went back too"),
        "{}",
        text(&retried.stderr)
    );
    assert!(studio.inbox.join("typed.mov").exists());
    assert!(studio.inbox.join("typed.mov.json").exists());
    assert!(!studio.failed().join("typed.mov.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_upload_applies_the_companion_the_upload_started_with() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let video = studio.inbox.join("long.mxf");
    let companion = studio.inbox.join("long.mxf.json");
    std::fs::write(
        &companion,
        r#"{"title": "First", "channels": [5, 6], "custom_metadata": {"take": "1"}}"#,
    )
    .unwrap();
    std::fs::write(&video, export(&video, 12 * 1024 * 1024, 9)).unwrap();
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
    // Rewritten while the agent was down: the upload keeps what it started with.
    std::fs::write(
        &companion,
        r#"{"title": "Second", "channels": [7], "custom_metadata": {"take": "2"}}"#,
    )
    .unwrap();
    let agent = studio.start();
    let done = studio.done().join("long.mxf");
    eventually(WAIT, "long.mxf in done/", || arrived(&done)).await;
    stop(agent).await;
    let record = the_video(&emulator, "long.mxf");
    assert_eq!(record.title.as_deref(), Some("First"));
    assert_eq!(record.channel, Some(5));
    assert_eq!(record.added_channels, vec![6]);
    assert_eq!(
        record.custom_metadata.get("take").map(String::as_str),
        Some("1")
    );
    assert_eq!(sidecar(&done)["companion"]["applied"]["title"], "First");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_xml_naming_a_video_that_never_comes_goes_to_failed_with_the_reason() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\"\nincomplete_after = \"2s\""),
    );
    let agent = studio.start();
    std::fs::write(
        studio.inbox.join("job.xml"),
        format!(r#"<job xmlns="{JOB_NAMESPACE}"><source><file>missing.mp4</file></source></job>"#),
    )
    .unwrap();
    let failed = studio.failed().join("job.xml");
    eventually(WAIT, "job.xml in failed/", || arrived(&failed)).await;
    stop(agent).await;
    let reason = error_text(&failed);
    assert!(
        reason.contains("the job XML names missing.mp4, which has not been beside it for 2s"),
        "{reason}"
    );
    assert!(emulator.videos().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_after_the_upload_is_recorded_and_the_video_is_not_uploaded_again() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let agent = studio.start();
    // A <field> without a name, which the schema allows and the platform refuses (400).
    std::fs::write(
        studio.inbox.join("clip.xml"),
        format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>clip.mov</file></source><channels><id>1</id><id>2</id></channels><customMetadata><field>nameless</field></customMetadata></job>"#
        ),
    )
    .unwrap();
    write_file(&studio.inbox.join("clip.mov"), 30_000, 10);
    let done = studio.done().join("clip.mov");
    eventually(WAIT, "clip.mov in done/", || arrived(&done)).await;
    stop(agent).await;
    let video = the_video(&emulator, "clip.mov");
    assert!(video.complete);
    assert_eq!(video.added_channels, vec![2]);
    assert!(video.custom_metadata.is_empty());
    let sidecar = sidecar(&done);
    assert_eq!(sidecar["status"], "uploaded");
    let calls = &sidecar["companion"]["calls"];
    assert_eq!(calls[0]["ok"], true, "{calls}");
    assert_eq!(calls[1]["ok"], false, "{calls}");
    assert!(
        calls[1]["error"]
            .as_str()
            .unwrap_or("")
            .contains("custom metadata field without a name"),
        "{calls}"
    );
    let events = sidecar["events"].to_string();
    assert!(
        events.contains("the video stays uploaded without it"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_job_xml_is_refused_at_once_and_does_not_hold_up_other_videos() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let agent = studio.start();
    // 140 000 levels, under 1 MiB: parsing it whole took minutes of CPU, on every check.
    let deep = format!(
        r#"<job xmlns="{JOB_NAMESPACE}"><source><file>n.mp4</file></source>{}{}</job>"#,
        "<a>".repeat(140_000),
        "</a>".repeat(140_000)
    );
    std::fs::write(studio.inbox.join("n.xml"), &deep).unwrap();
    std::fs::write(studio.inbox.join("deep.xml"), &deep).unwrap();
    write_file(&studio.inbox.join("n.mp4"), 30_000, 11);
    write_file(&studio.inbox.join("other2.mp4"), 30_000, 12);
    std::fs::write(
        studio.inbox.join("other2.mp4.json"),
        r#"{"title": "Other two"}"#,
    )
    .unwrap();
    let done = studio.done().join("other2.mp4");
    eventually(WAIT, "other2.mp4 in done/", || arrived(&done)).await;
    let failed = studio.failed().join("n.mp4");
    eventually(WAIT, "n.mp4 in failed/", || arrived(&failed)).await;
    stop(agent).await;
    assert_eq!(
        the_video(&emulator, "other2.mp4").title.as_deref(),
        Some("Other two")
    );
    let reason = error_text(&failed);
    assert!(reason.contains("nested more than 64 deep"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_a_companion_gone_before_the_upload_starts_fails_the_video_not_folder_metadata() {
    let emulator = emulator(slow_server).await;
    let upload = FAST_UPLOAD.replace("parallel = 2", "parallel = 1");
    let studio = Studio::new(
        &emulator,
        &upload,
        &folder("metadata_file = \"required\"\nincomplete_after = \"1h\""),
    );
    std::fs::write(studio.inbox.join("v1.mov.json"), r#"{"title": "V1 meta"}"#).unwrap();
    write_file(&studio.inbox.join("v1.mov"), 24 * 1024 * 1024, 21);
    let agent = studio.start();
    eventually(WAIT, "first upload started", || {
        !emulator.videos().is_empty()
    })
    .await;
    let companion = studio.inbox.join("v2.mov.json");
    std::fs::write(&companion, r#"{"title": "V2 meta", "channels": [77]}"#).unwrap();
    write_file(&studio.inbox.join("v2.mov"), 30_000, 22);
    eventually(WAIT, "v2.mov queued with its companion", || {
        studio.log_text().contains("v2.mov")
            && !studio
                .log_text()
                .lines()
                .any(|l| l.contains("v2.mov") && l.contains("waiting for its companion"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !arrived(&studio.done().join("v1.mov")),
        "v1 finished too soon"
    );
    std::fs::remove_file(&companion).unwrap();
    let failed = studio.failed().join("v2.mov");
    eventually(WAIT, "v2.mov in failed/", || arrived(&failed)).await;
    stop(agent).await;
    assert!(
        emulator.videos().iter().all(|v| v.file_name != "v2.mov"),
        "v2 uploaded with the folder's metadata"
    );
    let reason = error_text(&failed);
    assert!(reason.contains("no longer beside it"), "{reason}");
    assert!(reason.contains("hotfolder retry"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_companion_not_used_is_not_kept_for_a_later_video_of_the_same_name() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"optional\"\nmetadata_wait = \"1s\"\nincomplete_after = \"2s\""),
    );
    let agent = studio.start();
    // A job XML and a JSON for k.mp4: the job XML wins, the JSON goes with the video.
    std::fs::write(
        studio.inbox.join("k.mp4.json"),
        r#"{"title": "K from json"}"#,
    )
    .unwrap();
    std::fs::write(
        studio.inbox.join("k.xml"),
        format!(r#"<job xmlns="{JOB_NAMESPACE}"><title>K from xml</title><source><file>k.mp4</file></source></job>"#),
    )
    .unwrap();
    write_file(&studio.inbox.join("k.mp4"), 30_000, 31);
    let done = studio.done().join("k.mp4");
    eventually(WAIT, "k.mp4 in done/", || arrived(&done)).await;
    assert!(studio.done().join("k.mp4.json").exists());
    assert!(!studio.inbox.join("k.mp4.json").exists());
    let record = sidecar(&done);
    assert_eq!(record["companion"]["file"], "k.xml");
    assert_eq!(record["unused_companion"]["file"], "k.mp4.json");
    assert!(
        record["unused_companion"]["why"]
            .as_str()
            .unwrap_or("")
            .contains("job XML"),
        "{record}"
    );
    // A JSON after its (optional) video left: to failed/ after incomplete_after, not applied
    // to the next video of that name.
    write_file(&studio.inbox.join("late.mp4"), 30_000, 32);
    let late_done = studio.done().join("late.mp4");
    eventually(WAIT, "late.mp4 in done/", || arrived(&late_done)).await;
    std::fs::write(studio.inbox.join("late.mp4.json"), r#"{"title": "LATE"}"#).unwrap();
    let failed = studio.failed().join("late.mp4.json");
    eventually(WAIT, "late.mp4.json in failed/", || arrived(&failed)).await;
    let reason = error_text(&failed);
    assert!(
        reason.contains("the JSON companion is for late.mp4, which has not been beside it"),
        "{reason}"
    );
    std::fs::copy(&late_done, studio.inbox.join("late.mp4")).unwrap();
    eventually(WAIT, "the second late.mp4 uploaded", || {
        emulator
            .videos()
            .iter()
            .filter(|v| v.file_name == "late.mp4")
            .count()
            == 2
    })
    .await;
    stop(agent).await;
    assert!(
        emulator.videos().iter().all(
            |v| v.title.as_deref() != Some("LATE") && v.title.as_deref() != Some("K from json")
        ),
        "{:?}",
        emulator.videos()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_xmls_in_failed_are_not_listed_and_retry_removes_them_with_the_sidecar() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\"\nincomplete_after = \"1s\"\nresult_xml = true"),
    );
    let agent = studio.start();
    std::fs::write(studio.inbox.join("c.mp4.json"), r#"{"channels": "x"}"#).unwrap();
    write_file(&studio.inbox.join("c.mp4"), 30_000, 33);
    write_file(&studio.inbox.join("nocomp.mp4"), 30_000, 34);
    for name in ["c.mp4", "nocomp.mp4"] {
        let failed = studio.failed().join(name);
        eventually(WAIT, &format!("{name} in failed/"), || arrived(&failed)).await;
    }
    stop(agent).await;
    assert!(studio.failed().join("c.mp4.xml").exists());
    assert!(studio.failed().join("nocomp.mp4.xml").exists());
    let listed = run(hotfolder()
        .arg("failed")
        .arg("--json")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let mut names: Vec<String> = listed
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| f["rel_path"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, vec!["c.mp4", "nocomp.mp4"]);
    let retried = run(hotfolder()
        .arg("retry")
        .arg("--all")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    let mut back: Vec<String> = std::fs::read_dir(&studio.inbox)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !matches!(n.as_str(), "failed" | "done"))
        .collect();
    back.sort();
    assert_eq!(back, vec!["c.mp4", "c.mp4.json", "nocomp.mp4"]);
    assert!(
        files_under(&studio.failed()).is_empty(),
        "{:?}",
        files_under(&studio.failed())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_job_xmls_for_one_video_or_an_invalid_one_under_another_name_refuse_it_by_name() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\""),
    );
    let agent = studio.start();
    for (name, title) in [("j1.xml", "J one"), ("j2.xml", "J two")] {
        std::fs::write(
            studio.inbox.join(name),
            format!(r#"<job xmlns="{JOB_NAMESPACE}"><title>{title}</title><source><file>j.mp4</file></source></job>"#),
        )
        .unwrap();
    }
    write_file(&studio.inbox.join("j.mp4"), 30_000, 41);
    std::fs::write(
        studio.inbox.join("upload-job.xml"),
        format!(r#"<job xmlns="{JOB_NAMESPACE}"><groupId>-5</groupId><source><file>gv.mp4</file></source></job>"#),
    )
    .unwrap();
    write_file(&studio.inbox.join("gv.mp4"), 30_000, 42);
    let failed = studio.failed().join("j.mp4");
    eventually(WAIT, "j.mp4 in failed/", || arrived(&failed)).await;
    let reason = error_text(&failed);
    assert!(
        reason.contains("two job XMLs name j.mp4")
            && reason.contains("j1.xml")
            && reason.contains("j2.xml"),
        "{reason}"
    );
    let failed = studio.failed().join("gv.mp4");
    eventually(WAIT, "gv.mp4 in failed/", || arrived(&failed)).await;
    stop(agent).await;
    let reason = error_text(&failed);
    assert!(
        reason.contains("upload-job.xml") && reason.contains("groupId"),
        "{reason}"
    );
    assert!(studio.failed().join("upload-job.xml").exists());
    assert!(emulator.videos().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_only_look_like_companions_are_left_alone() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        &folder("metadata_file = \"required\"\nincomplete_after = \"2s\""),
    );
    let agent = studio.start();
    // Not a companion of any video this folder takes, and another tool's XML that merely
    // mentions the job namespace (in a comment): neither is failed, neither refuses m.mp4.
    std::fs::write(studio.inbox.join("notes.txt.json"), r#"{"title": "x"}"#).unwrap();
    std::fs::write(
        studio.inbox.join("m.xml"),
        format!(
            "<?xml version=\"1.0\"?>\n<!-- exported for {JOB_NAMESPACE} -->\n<xmeml version=\"5\"/>"
        ),
    )
    .unwrap();
    std::fs::write(studio.inbox.join("m.mp4.json"), r#"{"title": "From JSON"}"#).unwrap();
    write_file(&studio.inbox.join("m.mp4"), 40_000, 7);
    let done = studio.done().join("m.mp4");
    eventually(WAIT, "m.mp4 in done/", || arrived(&done)).await;
    // Past incomplete_after and a sweep of the folder.
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop(agent).await;
    assert_eq!(
        the_video(&emulator, "m.mp4").title.as_deref(),
        Some("From JSON")
    );
    assert!(studio.inbox.join("notes.txt.json").exists());
    assert!(studio.inbox.join("m.xml").exists());
    assert!(
        files_under(&studio.failed()).is_empty(),
        "{:?}",
        files_under(&studio.failed())
    );
}
