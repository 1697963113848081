//! Bandwidth limits and the weekly timetable (issue 13, item 1) through the real binary against
//! the emulator on 127.0.0.1: an upload takes the time its limit implies, quiet hours send
//! nothing until the timetable says so, and `status` and `check` show what applies.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::*;

const MB: usize = 1_000_000;
const WAIT: Duration = Duration::from_secs(30);

/// Writes a config with `upload` and one file of `size` bytes; returns (dir, config, file).
fn setup(
    emulator: &hotfolder::Emulator,
    upload: &str,
    size: usize,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}\n{upload}", account_toml(emulator, "keycloak")),
    );
    let file = dir.path().join("media").join("clip.mp4");
    write_file(&file, size, 17);
    (dir, config, file)
}

fn upload_line(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let line = stdout.lines().next().expect("one line per file");
    serde_json::from_str(line).expect("a JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_at_16_mbit_takes_the_time_the_limit_implies() {
    let emulator = emulator(|_| {}).await;
    let upload = format!("{FAST_UPLOAD}bandwidth_limit = \"16 Mbit/s\"\n");
    // 6 MB at 2 MB/s: 3 s, with no burst at the start.
    let (_dir, config, file) = setup(&emulator, &upload, 6 * MB);
    let start = Instant::now();
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&file))
    .await;
    let took = start.elapsed().as_secs_f64();
    let line = upload_line(&output);
    assert_eq!(emulator.stats().bytes_stored, 6 * MB as u64);
    let rate = line["bytes_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        (rate / 2e6 - 1.0).abs() <= 0.15,
        "{rate} B/s against 2 MB/s: {line}"
    );
    // The whole run (login and create included) takes at least the paced time.
    assert!(
        (3.0 * 0.85..3.0 * 1.15 + 2.0).contains(&took),
        "took {took} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_send_nothing_until_the_timetable_switches_to_a_rate() {
    let emulator = emulator(|_| {}).await;
    // A zone whose clock reads hh:mm:56 now (TZ set for the child, POSIX form "east of UTC
    // by N seconds"), so that the next minute, when the timetable switches from quiet to
    // 16 Mbit/s, is 4 s away.
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let started = Instant::now();
    let utc = since_epoch.as_secs();
    let offset = (56 + 60 - utc % 60) % 60;
    let local_minute = (utc + offset) / 60 % 1440;
    let switch = (local_minute + 1) % 1440;
    let before = (switch + 1439) % 1440;
    let hhmm = |minute: u64| format!("{:02}:{:02}", minute / 60, minute % 60);
    let schedule = format!("{},0 {},16Mbit/s", hhmm(before), hhmm(switch));
    let switch_in = Duration::from_secs(60 - (utc + offset) % 60)
        - Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    let switch_at = started + switch_in;
    let zone = format!("HFT-00:00:{offset:02}");
    let upload = format!("{FAST_UPLOAD}bandwidth_schedule = \"{schedule}\"\n");
    let (_dir, config, file) = setup(&emulator, &upload, 2 * MB);

    // `status` says so, in that zone.
    let status = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&config)
        .env("TZ", &zone))
    .await;
    let status = text(&status.stdout);
    assert!(
        (status.contains("bandwidth: quiet hours until ")
            && status.contains(&format!(
                " {} (nothing is sent), then 16 Mbit/s",
                hhmm(switch)
            )))
            || Instant::now() >= switch_at,
        "{status}"
    );

    let child = hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&file)
        .env("TZ", &zone)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the switch, not a byte of the file arrives, and no video is made (it would sit
    // empty on the platform through the quiet hours).
    while Instant::now() + Duration::from_millis(150) < switch_at {
        let stats = emulator.stats();
        assert_eq!(
            (
                stats.videos_created,
                stats.chunk_posts,
                stats.bytes_received
            ),
            (0, 0, 0),
            "sent {:?} before the switch",
            switch_at - Instant::now()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the upload finishes after the switch")
        .unwrap();
    let finished = Instant::now();
    upload_line(&output);
    assert_eq!(emulator.stats().bytes_stored, 2 * MB as u64);
    // 2 MB at 2 MB/s after the switch.
    assert!(
        finished >= switch_at + Duration::from_millis(800),
        "finished {:?} after the switch",
        finished.saturating_duration_since(switch_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_the_timetable_and_refuses_two_limits() {
    let emulator = emulator(|_| {}).await;
    let upload = format!(
        "{FAST_UPLOAD}bandwidth_schedule = \"Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off Sat,Sun 00:00,0\"\n\n[[folder]]\npath = \"media\"\n"
    );
    let (_dir, config, _file) = setup(&emulator, &upload, MB);
    let output = run(hotfolder()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("TZ", "Europe/Berlin"))
    .await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains(
            "bandwidth_schedule = \"Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off Sat,Sun 00:00,0\""
        ),
        "{stdout}"
    );
    assert!(stdout.contains("Europe/Berlin"), "{stdout}");
    assert!(stdout.contains("#   Sat,Sun 00:00,0"), "{stdout}");
    assert!(stdout.contains("# now: "), "{stdout}");

    let both = format!(
        "{FAST_UPLOAD}bandwidth_limit = \"100 Mbit/s\"\nbandwidth_schedule = \"19:00,off\"\n"
    );
    let (_dir, config, _file) = setup(&emulator, &both, MB);
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("upload.bandwidth_limit") && stderr.contains("bandwidth_schedule"),
        "{stderr}"
    );

    let bare = format!("{FAST_UPLOAD}bandwidth_limit = \"20\"\n");
    let (_dir, config, _file) = setup(&emulator, &bare, MB);
    let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("no unit"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_paced_for_longer_than_request_timeout_does_not_time_out() {
    let emulator = emulator(|_| {}).await;
    // Each 2 MiB chunk takes 2 s at 1 MiB/s, twice `request_timeout`.
    let upload = "[upload]\nchunk_size = \"2 MiB\"\nmax_attempts = 2\nbackoff_max = \"20ms\"\n\
                  request_timeout = \"1s\"\nbandwidth_limit = \"1 MiB/s\"\n";
    let (_dir, config, file) = setup(&emulator, upload, 4 << 20);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&file))
    .await;
    upload_line(&output);
    let stats = emulator.stats();
    assert_eq!(stats.bytes_stored, 4 << 20);
    // Each chunk went once: none was cut off and sent again.
    assert_eq!(stats.chunk_posts, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_chunk_whose_answer_stalls_still_times_out_after_request_timeout() {
    // Half the requests stall 3 s before the server reads them: a paced chunk try that stops
    // moving is cut after `request_timeout` (1 s) and sent again, not waited out. (A stalled
    // create is looked up: `lookup_wait` keeps that short.)
    let emulator = emulator(|options| {
        options.faults = hotfolder::Faults {
            seed: 1,
            stall_rate: 0.5,
            stall: Duration::from_secs(3),
            ..Default::default()
        };
    })
    .await;
    let upload = "[upload]\nchunk_size = \"1 MiB\"\nmax_attempts = 30\nbackoff_max = \"20ms\"\n\
                  request_timeout = \"1s\"\nbandwidth_limit = \"16 MiB/s\"\nlookup_wait = \"300ms\"\n";
    let (_dir, config, file) = setup(&emulator, upload, 3 << 20);
    let output = run(hotfolder()
        .arg("upload")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&file))
    .await;
    upload_line(&output);
    let stats = emulator.stats();
    assert_eq!(stats.bytes_stored, 3 << 20);
    assert!(stats.faults_injected.stalls > 0, "{stats:?}");
    assert!(stats.chunk_posts > 3, "no chunk try was cut: {stats:?}");
}

/// Hostile test of issue 13: a reload (SIGHUP) made the new client a limiter of its own. The
/// uploads in flight kept the old one, at the old rate, and those started after the reload
/// used the new one: together far above the limit until the old files were done. Now one
/// bucket carries on; measured over 4 s after the reload, with uploads from before and after
/// it, the rate stays within the new limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_limited_uploads_keeps_the_rate_within_the_limit() {
    const MIB_U64: u64 = 1 << 20;
    let emulator = emulator(|_| {}).await;
    let upload = |limit: &str| {
        format!(
            "{}bandwidth_limit = \"{limit}\"\n",
            FAST_UPLOAD.replace("parallel = 2", "parallel = 4")
        )
    };
    let studio = Studio::new(&emulator, &upload("4 MiB/s"), "stable_for = \"300ms\"");
    let before = ["before-1.mp4", "before-2.mp4"];
    for (seed, name) in before.iter().enumerate() {
        write_file(&studio.inbox.join(name), 12 * MIB, seed as u64);
    }
    let agent = studio.start();
    eventually(Duration::from_secs(30), "the first two uploading", || {
        emulator.stats().bytes_received >= 2 * MIB_U64
    })
    .await;
    // The limit halves at the reload, and two more files start after it.
    let config = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(
        &studio.config,
        config.replace(
            "bandwidth_limit = \"4 MiB/s\"",
            "bandwidth_limit = \"2 MiB/s\"",
        ),
    )
    .unwrap();
    signal(&agent, 1);
    eventually(Duration::from_secs(10), "the reload", || {
        studio.log_text().contains("config reloaded")
    })
    .await;
    for (seed, name) in ["after-1.mp4", "after-2.mp4"].iter().enumerate() {
        write_file(&studio.inbox.join(name), 12 * MIB, 10 + seed as u64);
    }
    eventually(Duration::from_secs(30), "all four uploading", || {
        emulator.stats().videos_created == 4
    })
    .await;
    // Within a second the new limit holds for all of them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, start_bytes) = (Instant::now(), emulator.stats().bytes_received);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = emulator.stats().bytes_received - start_bytes;
    let rate = sent as f64 / start.elapsed().as_secs_f64();
    let limit = 2.0 * MIB_U64 as f64;
    let log = studio.log_text();
    eprintln!("{rate:.0} B/s over 4 s after the reload, against {limit} B/s");
    assert!(
        rate <= limit * 1.05,
        "{rate:.0} B/s over 4 s against a limit of {limit} B/s\n{log}"
    );
    assert!(
        rate >= limit * 0.8,
        "{rate:.0} B/s: the uploads stalled\n{log}"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Second hostile test of issue 13, D6: quiet hours still started uploads (a video created that
/// sat empty for hours, holding a `parallel` slot while its upload URL aged). Now no upload
/// starts: the file waits in the queue, the log and `status` say until when, and it goes once
/// the quiet hours end (here: a reload that drops them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_start_no_upload_and_create_no_video() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        &format!("{FAST_UPLOAD}bandwidth_schedule = \"00:00,0\"\n"),
        "stable_for = \"300ms\"",
    );
    write_file(&studio.inbox.join("clip.mov"), MB, 5);
    let agent = studio.start();
    eventually(WAIT, "the file queued", || {
        studio.log_text().contains("complete:")
    })
    .await;
    eventually(WAIT, "quiet hours said", || {
        studio
            .log_text()
            .contains("quiet hours (nothing is sent): queued files wait; no upload starts")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = emulator.stats();
    assert_eq!(
        (stats.videos_created, stats.chunk_posts),
        (0, 0),
        "{}",
        studio.log_text()
    );
    let status = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    let status = text(&status.stdout);
    assert!(
        status.contains("1 waiting") && status.contains("bandwidth: quiet hours"),
        "{status}"
    );

    let config = std::fs::read_to_string(&studio.config).unwrap();
    std::fs::write(
        &studio.config,
        config.replace("bandwidth_schedule = \"00:00,0\"\n", ""),
    )
    .unwrap();
    signal(&agent, 1);
    eventually(WAIT, "done/clip.mov", || {
        arrived(&studio.done().join("clip.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
    assert!(
        !studio.log_text().contains("paused"),
        "{}",
        studio.log_text()
    );
}
