//! `hotfolder status` without blind spots (issue 10, item 21), through the real binary while
//! `run` works: files still settling, recent results with times, counts that agree with a
//! paused queue, local human times, the rate of a finished upload, and a pause's log lines.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// A time zone 5 h 30 min east of UTC (POSIX `TZ` counts the other way), so that a time shown
/// in UTC cannot pass for local time.
const TZ: &str = "HFT-5:30";

async fn status(studio: &Studio, args: &[&str]) -> Output {
    let output = run(hotfolder()
        .env("TZ", TZ)
        .arg("status")
        .arg("--config")
        .arg(&studio.config)
        .args(args))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    output
}

async fn status_text(studio: &Studio, args: &[&str]) -> String {
    text(&status(studio, args).await.stdout)
}

async fn status_json(studio: &Studio, args: &[&str]) -> Value {
    let output = status(studio, &[&["--json"], args].concat()).await;
    serde_json::from_slice(&output.stdout).expect("status --json is JSON")
}

/// An RFC 3339 time from `status --json` as `status` shows it in [`TZ`].
fn shown(rfc3339: &Value) -> String {
    let at = OffsetDateTime::parse(rfc3339.as_str().expect("a time"), &Rfc3339).unwrap();
    let offset = time::UtcOffset::from_hms(5, 30, 0).unwrap();
    at.to_offset(offset)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap()
}

/// No raw timestamps: no fractions of seconds, no `+00:00:00`, no `T…Z`.
fn assert_human_times(text: &str) {
    for line in text.lines() {
        let raw = line.contains("+00:00")
            || line.split_whitespace().any(|word| word == "UTC")
            || line
                .split_whitespace()
                .any(|word| word.len() > 9 && word.contains(':') && word.contains('.'))
            || line
                .split_whitespace()
                .any(|word| word.contains('T') && word.ends_with('Z') && word.contains(':'));
        assert!(!raw, "a raw timestamp in: {line}");
    }
}

/// Polls `status --json` until `ready` holds.
async fn json_until(studio: &Studio, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let json = status_json(studio, &[]).await;
        if ready(&json) {
            return json;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn settling_size(json: &Value, path: &Path) -> Option<u64> {
    json["settling"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == path.display().to_string())?["size"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_files_still_settling_as_they_grow_with_local_times() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"30s\"");
    let agent = studio.start();
    eventually(WAIT, "run watching", || {
        studio.log_text().contains("watching")
    })
    .await;
    let file = studio.inbox.join("sub/growing.mov");
    write_file(&file, 2_000_000, 1);

    let json = json_until(&studio, "the file settling", |json| {
        settling_size(json, &file) == Some(2_000_000)
    })
    .await;
    assert_eq!(json["summary"]["settling"], 1, "{json}");
    assert_eq!(json["jobs"], Value::Array(vec![]), "not a job yet: {json}");
    let entry = &json["settling"][0];
    assert_eq!(entry["stable_for_seconds"], 30.0);
    let text = status_text(&studio, &[]).await;
    assert!(text.starts_with("queue: 1 settling"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("settling"))
        .unwrap_or_else(|| panic!("no settling line: {text}"));
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(line.contains("1.91 MiB"), "2,000,000 bytes: {line}");
    assert!(
        line.contains(&format!(
            "unchanged since {}",
            shown(&entry["unchanged_since"])
        )),
        "local time, to the second: {line}"
    );
    assert!(
        line.contains(&format!("complete at {}", shown(&entry["complete_at"]))),
        "{line}"
    );
    assert_human_times(&text);

    // Written to again: status follows (within the agent's batching, about a second).
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut more, &content(1_000_000, 2)).unwrap();
    drop(more);
    json_until(&studio, "the new size", |json| {
        settling_size(json, &file) == Some(3_000_000)
    })
    .await;

    let (code, _) = stop(agent).await;
    assert_eq!(code.code(), Some(0));
    // Nothing watches it settle any more.
    let json = status_json(&studio, &[]).await;
    assert_eq!(json["summary"]["settling"], 0, "{json}");
    assert!(!status_text(&studio, &[]).await.contains("settling"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_as_many_recent_files_as_asked_with_when_each_finished() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    for i in 0..12 {
        write_file(
            &studio.inbox.join(format!("clip{i:02}.mov")),
            1000 + i,
            i as u64,
        );
    }
    let agent = studio.start();
    eventually(WAIT, "12 files in done/", || {
        (0..12).all(|i| arrived(&studio.done().join(format!("clip{i:02}.mov"))))
    })
    .await;
    stop(agent).await;

    let done_lines = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("done "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let default = status_text(&studio, &[]).await;
    assert_eq!(done_lines(&default).len(), 10, "ten by default: {default}");
    assert!(done_lines(&status_text(&studio, &["--recent", "0"]).await).is_empty());

    let all = status_text(&studio, &["--recent", "12"]).await;
    let lines = done_lines(&all);
    assert_eq!(lines.len(), 12, "{all}");
    assert_human_times(&all);
    let json = status_json(&studio, &["--recent", "12"]).await;
    let recent = json["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 12);
    for (line, job) in lines.iter().zip(recent) {
        assert!(
            line.contains(&shown(&job["finished_at"])),
            "finished at, local time: {line} / {job}"
        );
        let name = Path::new(job["path"].as_str().unwrap())
            .file_name()
            .unwrap();
        assert!(line.contains(&*name.to_string_lossy()), "{line} / {job}");
    }
    // Newest first.
    let finished: Vec<&str> = recent
        .iter()
        .map(|j| j["finished_at"].as_str().unwrap())
        .collect();
    let mut sorted = finished.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(finished, sorted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_paused_queue_nothing_shows_as_uploading_and_the_log_says_so_once() {
    let emulator = emulator(|o| o.quota_bytes = Some(0)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    for name in ["a.mov", "b.mov", "c.mov"] {
        write_file(&studio.inbox.join(name), 100_000, 3);
    }
    let agent = studio.start();
    let json = json_until(&studio, "all three held by the pause", |json| {
        !json["queue_paused"].is_null() && json["summary"]["paused"] == 3
    })
    .await;
    assert_eq!(
        (&json["summary"]["waiting"], &json["summary"]["uploading"]),
        (&Value::from(0), &Value::from(0)),
        "{json}"
    );
    for job in json["jobs"].as_array().unwrap() {
        let shown_as = job["shown_as"].as_str().unwrap();
        assert!(shown_as == "paused" || shown_as == "trying", "{job}");
    }
    // Many probes meanwhile (backoff_max = 20ms: one every 100 ms at most).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = status_text(&studio, &[]).await;
    assert!(text.contains("0 waiting, 0 uploading, 3 paused"), "{text}");
    let since = status_json(&studio, &[]).await["queue_paused"]["since"].clone();
    assert!(
        text.contains(&format!("PAUSED since {} (", shown(&since))),
        "local time, to the second: {text}"
    );
    assert_human_times(&text);
    for line in text.lines().filter(|l| l.contains(".mov")) {
        assert!(
            line.starts_with("paused ") || line.starts_with("trying "),
            "{line}"
        );
    }

    let log = studio.log_text();
    assert_eq!(
        log.matches("trying whether the platform is back").count(),
        1,
        "one line for the probes of one pause:\n{log}"
    );
    let uploading = log
        .lines()
        .filter(|l| l.contains(" uploading file="))
        .count();
    assert!(
        uploading <= 2,
        "\"uploading\" only for the files started before the pause (parallel = 2):\n{log}"
    );

    emulator.set_quota(None);
    eventually(WAIT, "all three in done/ once the quota is raised", || {
        ["a.mov", "b.mov", "c.mov"]
            .iter()
            .all(|n| arrived(&studio.done().join(n)))
    })
    .await;
    stop(agent).await;
    assert_eq!(studio.log_text().matches("uploads resumed").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_of_a_finished_upload_is_up_to_its_end_not_up_to_now() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let file = studio.inbox.join("rate.mov");
    write_file(&file, 4 * MIB, 4);
    let agent = studio.start();
    let done = studio.done().join("rate.mov");
    eventually(WAIT, "rate.mov in done/", || arrived(&done)).await;
    stop(agent).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let json = status_json(&studio, &[]).await;
    let job = &json["recent"][0];
    let rate = job["bytes_per_second"].as_f64().expect("a rate");
    let in_sidecar = sidecar(&done)["bytes_per_second"].as_f64().unwrap();
    assert!(
        (rate - in_sidecar).abs() <= in_sidecar * 1e-6,
        "status {rate} and sidecar {in_sidecar} agree"
    );
    let started = OffsetDateTime::parse(job["started_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let up_to_now = (4 * MIB) as f64 / (OffsetDateTime::now_utc() - started).as_seconds_f64();
    assert!(
        rate > 2.0 * up_to_now,
        "{rate} B/s is the upload's, not {up_to_now} B/s up to now"
    );
    let text = status_text(&studio, &[]).await;
    assert!(text.contains(&hotfolder::human_rate(rate)), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_from_an_earlier_run_is_not_shown_after_a_restart() {
    let emulator = emulator(|o| o.quota_bytes = Some(0)).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    write_file(&studio.inbox.join("a.mov"), 100_000, 3);
    let agent = studio.start();
    json_until(&studio, "the queue paused", |json| {
        !json["queue_paused"].is_null()
    })
    .await;
    stop(agent).await;
    // Nothing left to try: the next run has no reason to pause.
    std::fs::remove_file(studio.inbox.join("a.mov")).unwrap();
    let agent = studio.start();
    eventually(WAIT, "agent watching again", || {
        studio.log_text().matches("watching").count() >= 2
    })
    .await;
    let json = json_until(&studio, "the old pause cleared", |json| {
        json["queue_paused"].is_null()
    })
    .await;
    assert!(json["queue_paused"].is_null(), "{json}");
    let text = status_text(&studio, &[]).await;
    assert!(!text.contains("PAUSED"), "{text}");
    stop(agent).await;
}

/// Issue 10's follow-up: a rate that counted waiting (a platform away for seconds before the
/// first chunk) showed a fast link as slow, and the log, the sidecar and `status` each gave
/// their own figure for one upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_has_one_rate_and_waiting_for_the_platform_does_not_lower_it() {
    let emulator = emulator(|_| {}).await;
    // Every request fails until the platform comes back: the create waits through retries and
    // a pause.
    emulator.set_faults(hotfolder::Faults {
        seed: 3,
        error_rate: 1.0,
        ..Default::default()
    });
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let file = studio.inbox.join("wait.mov");
    write_file(&file, 4 * MIB, 5);
    let agent = studio.start();
    let away = Duration::from_secs(3);
    tokio::time::sleep(away).await;
    emulator.set_faults(hotfolder::Faults::default());
    let done = studio.done().join("wait.mov");
    eventually(WAIT, "wait.mov in done/", || arrived(&done)).await;
    stop(agent).await;

    let json = status_json(&studio, &[]).await;
    let rate = json["recent"][0]["bytes_per_second"]
        .as_f64()
        .expect("a rate");
    // 4 MiB over at least the 3 s away would be under 1.4 MiB/s; loopback sends it far faster.
    assert!(
        rate > (4 * MIB) as f64 / away.as_secs_f64() * 3.0,
        "{rate} B/s counts the wait"
    );
    let in_sidecar = sidecar(&done)["bytes_per_second"].as_f64().unwrap();
    assert!(
        (rate - in_sidecar).abs() <= rate * 1e-6,
        "{rate} vs {in_sidecar}"
    );
    let shown = hotfolder::human_rate(rate);
    let log = studio.log_text();
    let uploaded = log
        .lines()
        .find(|line| line.contains("wait.mov") && line.contains("uploaded ("))
        .unwrap_or_else(|| panic!("no uploaded line in\n{log}"));
    assert!(
        uploaded.contains(&shown),
        "log says {uploaded}, status {shown}"
    );
    let text = status_text(&studio, &["--recent", "5"]).await;
    assert!(text.contains(&shown), "{text}");
}
