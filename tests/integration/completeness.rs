//! Never upload half an export (issue 11): every completeness signal must agree before a file
//! is queued. Through the binary against the emulator, with real writers: a process that keeps
//! the file open, a writer that pauses longer than `stable_for`, ffmpeg stopped mid-write, and
//! exports cut short; and `hotfolder scan`, which says what each file waits for.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// The videos the emulator holds for `name`.
fn videos_named(emulator: &hotfolder::Emulator, name: &str) -> Vec<hotfolder::VideoRecord> {
    emulator
        .videos()
        .into_iter()
        .filter(|video| video.file_name == name)
        .collect()
}

/// `name`, uploaded exactly once, with the bytes the file in done/ has.
fn uploaded_once_byte_exact(studio: &Studio, emulator: &hotfolder::Emulator, name: &str) {
    let done = studio.done().join(name);
    let bytes = std::fs::read(&done).unwrap_or_else(|err| panic!("{name} in done/: {err}"));
    let videos = videos_named(emulator, name);
    assert_eq!(videos.len(), 1, "one video for {name}: {videos:?}");
    assert_eq!(
        videos[0].sha256.as_deref(),
        Some(sha256_hex(&bytes).as_str()),
        "{name}: the platform has the whole file"
    );
}

async fn scan_json(studio: &Studio) -> Value {
    let output = run(hotfolder()
        .arg("scan")
        .arg("--json")
        .arg("--config")
        .arg(&studio.config))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("scan --json is JSON")
}

/// The scan's verdict on `name` in the first folder.
fn scanned<'a>(scan: &'a Value, name: &str) -> &'a Value {
    scan["folders"][0]["files"]
        .as_array()
        .and_then(|files| {
            files
                .iter()
                .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
        })
        .unwrap_or_else(|| panic!("{name} not in {scan}"))
}

/// The settling entry `status --json` shows for `name`.
fn settling<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["settling"].as_array()?.iter().find(|f| {
        f["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/{name}")))
    })
}

/// A shell that holds `path` open for writing for `seconds`, writing nothing.
fn hold_open_for_writing(path: &Path, seconds: u32) -> std::process::Child {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>>\"$0\"; sleep {seconds}"))
        .arg(path)
        .stdin(Stdio::null())
        .spawn()
        .expect("sh starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_cut_short_wait_are_shown_and_go_to_failed_after_incomplete_after() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nincomplete_after = \"4s\"",
    );
    for (name, seed) in [("cut.mp4", 1), ("cut.mxf", 2)] {
        let whole = export(name, 400_000, seed);
        std::fs::write(studio.inbox.join(name), &whole[..whole.len() * 6 / 10]).unwrap();
    }
    let agent = studio.start();

    // Stable, not queued, and status says what they wait for.
    eventually(WAIT, "both cut files shown as waiting", || {
        let status = status_now(&studio);
        ["cut.mp4", "cut.mxf"].iter().all(|name| {
            settling(&status, name)
                .and_then(|f| f["waiting_for"].as_str())
                .is_some_and(|why| why.contains("container not whole"))
        })
    })
    .await;
    let scan = scan_json(&studio).await;
    for name in ["cut.mp4", "cut.mxf"] {
        assert_eq!(scanned(&scan, name)["action"], "wait_container", "{scan}");
    }

    for name in ["cut.mp4", "cut.mxf"] {
        let failed = studio.failed().join(name);
        eventually(WAIT, &format!("{name} in failed/"), || arrived(&failed)).await;
        let sidecar = sidecar(&failed);
        assert_eq!(sidecar["status"], "failed", "{sidecar}");
        let meaning = sidecar["error"]["meaning"].as_str().unwrap_or_default();
        assert!(meaning.contains("export it again"), "{sidecar}");
        assert!(videos_named(&emulator, name).is_empty(), "never uploaded");
    }
    stop(agent).await;
    let log = studio.log_text();
    assert!(log.contains("not uploaded"), "{log}");
}

/// `status --json` from a blocking closure (the `eventually` condition is not async).
fn status_now(studio: &Studio) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hotfolder"))
        .arg("status")
        .arg("--json")
        .arg("--config")
        .arg(&studio.config)
        .output()
        .expect("status runs");
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_the_container_its_name_says_fails_at_once_with_the_reason() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    std::fs::write(
        studio.inbox.join("notes.mov"),
        b"these are the director's notes, saved with the wrong name",
    )
    .unwrap();
    let agent = studio.start();
    let failed = studio.failed().join("notes.mov");
    // incomplete_after is 24 h: this does not wait for it.
    eventually(Duration::from_secs(10), "notes.mov in failed/", || {
        arrived(&failed)
    })
    .await;
    stop(agent).await;
    let sidecar = sidecar(&failed);
    let message = sidecar["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not"), "{sidecar}");
    assert!(emulator.videos().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_keeps_the_file_open_holds_it_back_until_it_closes() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let path = studio.inbox.join("open.mov");
    write_file(&path, 300_000, 7);
    let mut writer = hold_open_for_writing(&path, 4);
    let agent = studio.start();

    eventually(WAIT, "open.mov shown as open for writing", || {
        settling(&status_now(&studio), "open.mov")
            .and_then(|f| f["waiting_for"].as_str())
            .is_some_and(|why| why.contains("open for writing"))
    })
    .await;
    let scan = scan_json(&studio).await;
    assert_eq!(
        scanned(&scan, "open.mov")["action"],
        "wait_writer",
        "{scan}"
    );
    assert!(videos_named(&emulator, "open.mov").is_empty());

    let closed = tokio::task::spawn_blocking(move || {
        writer.wait().unwrap();
        Instant::now()
    })
    .await
    .unwrap();
    eventually(WAIT, "open.mov in done/", || {
        arrived(&studio.done().join("open.mov"))
    })
    .await;
    let queued_after = closed.elapsed();
    stop(agent).await;
    uploaded_once_byte_exact(&studio, &emulator, "open.mov");
    let rule = sidecar(&studio.done().join("open.mov"))["events"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(rule.contains("not open for writing"), "{rule}");
    assert!(rule.contains("MOV complete"), "{rule}");
    eprintln!("open.mov: in done/ {queued_after:?} after its writer closed it");
}

/// The first complaint of every hot-folder tool: a writer pauses longer than `stable_for`
/// (here 3 × 300 ms) with half the file written, closing it between pieces as a network copy
/// does. The half file must not be uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_pausing_longer_than_stable_for_is_uploaded_once_whole() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let agent = studio.start();
    let path = studio.inbox.join("pausing.mp4");
    let whole = export(&path, 2_000_000, 11);
    let half = whole.len() / 2;
    std::fs::write(&path, &whole[..half]).unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(videos_named(&emulator, "pausing.mp4").is_empty());
    assert!(!arrived(&studio.done().join("pausing.mp4")));
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&whole[half..]).unwrap();
    }
    eventually(WAIT, "pausing.mp4 in done/", || {
        arrived(&studio.done().join("pausing.mp4"))
    })
    .await;
    stop(agent).await;
    uploaded_once_byte_exact(&studio, &emulator, "pausing.mp4");
    assert_eq!(
        std::fs::read(studio.done().join("pausing.mp4")).unwrap(),
        whole
    );
}

/// Real exports: ffmpeg writes MP4, MOV and MXF into the watched folder at the speed of its
/// source, and is stopped with SIGSTOP mid-write for 3 × `stable_for`. Each file is uploaded
/// once, after ffmpeg has finished it, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ffmpeg_exports_stopped_mid_write_are_uploaded_once_after_ffmpeg_exits() {
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        hotfolder::test_skipped(format_args!(
            "ffmpeg is not installed (Debian package ffmpeg; .ci/run installs it)"
        ));
        return;
    }
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"1s\"");
    let agent = studio.start();
    let exports = [
        ("render.mp4", &["-c:v", "mpeg4", "-f", "mp4"][..]),
        ("render.mov", &["-c:v", "mpeg4", "-f", "mov"][..]),
        ("render.mxf", &["-c:v", "mpeg2video", "-f", "mxf"][..]),
    ];
    let mut writers = Vec::new();
    for (name, codec) in exports {
        let child = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc=duration=4:size=640x360:rate=25")
            .args(codec)
            .arg(studio.inbox.join(name))
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg starts");
        writers.push((name, child));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (_, child) in &writers {
        send_signal(child.id(), "STOP");
    }
    // Stopped mid-write for 3 × stable_for: stable, but not finished.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _) in &writers {
        assert!(
            videos_named(&emulator, name).is_empty(),
            "{name} uploaded while ffmpeg was stopped"
        );
    }
    for (_, child) in &writers {
        send_signal(child.id(), "CONT");
    }
    for (name, child) in &mut writers {
        let status = child.wait().unwrap();
        assert!(status.success(), "ffmpeg for {name}: {status}");
    }
    for (name, _) in &writers {
        eventually(WAIT, &format!("{name} in done/"), || {
            arrived(&studio.done().join(name))
        })
        .await;
    }
    stop(agent).await;
    for (name, _) in &writers {
        uploaded_once_byte_exact(&studio, &emulator, name);
    }
    assert!(files_under(&studio.failed()).is_empty());
}

/// Sends `sig` (`STOP`, `CONT`) to a process by pid with the `kill` command.
fn send_signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_says_what_each_file_waits_for_and_changes_nothing() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    write_file(&studio.inbox.join("ready.mp4"), 100_000, 1);
    let cut = export("cut.mov", 100_000, 2);
    std::fs::write(studio.inbox.join("cut.mov"), &cut[..50_000]).unwrap();
    std::fs::write(studio.inbox.join("notes.txt"), b"not a video").unwrap();
    write_file(&studio.inbox.join("open.mxf"), 100_000, 3);
    let mut writer = hold_open_for_writing(&studio.inbox.join("open.mxf"), 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_file(&studio.inbox.join("fresh.mp4"), 100_000, 4);

    let scan = scan_json(&studio).await;
    writer.kill().ok();
    writer.wait().ok();
    assert_eq!(scanned(&scan, "ready.mp4")["action"], "upload", "{scan}");
    let rule = scanned(&scan, "ready.mp4")["detail"].as_str().unwrap();
    assert!(rule.contains("MP4 complete"), "{rule}");
    assert_eq!(scanned(&scan, "cut.mov")["action"], "wait_container");
    assert_eq!(scanned(&scan, "notes.txt")["action"], "skip");
    assert_eq!(scanned(&scan, "open.mxf")["action"], "wait_writer");
    assert_eq!(scanned(&scan, "fresh.mp4")["action"], "wait_stable");

    let output = run(hotfolder().arg("scan").arg("--config").arg(&studio.config)).await;
    let shown = text(&output.stdout);
    assert!(
        shown.contains("would upload") && shown.contains("ready.mp4"),
        "{shown}"
    );
    assert!(
        shown.contains("incomplete") && shown.contains("cut.mov"),
        "{shown}"
    );
    // A dry run: nothing moved, nothing uploaded, no queue made.
    assert!(!studio.done().exists() || files_under(&studio.done()).is_empty());
    assert!(emulator.videos().is_empty());
    assert!(studio.inbox.join("ready.mp4").exists());
}

/// Hostile test of issue 11, D2: a writer on another machine creates the file first and writes
/// later (a render), or reserves its space first (an SMB client preallocating). Empty or all
/// zeros is not finished: it waits, and is uploaded once written, instead of going to failed/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_created_empty_or_preallocated_waits_for_its_writer_instead_of_failing() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    let empty = studio.inbox.join("created-first.mp4");
    std::fs::write(&empty, b"").unwrap();
    let reserved = studio.inbox.join("reserved.mov");
    let whole = export(&reserved, 400_000, 21);
    std::fs::File::create(&reserved)
        .unwrap()
        .set_len(whole.len() as u64)
        .unwrap();
    let agent = studio.start();
    eventually(WAIT, "both shown as waiting", || {
        let status = status_now(&studio);
        ["created-first.mp4", "reserved.mov"]
            .iter()
            .all(|name| settling(&status, name).is_some_and(|f| !f["waiting_for"].is_null()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(files_under(&studio.failed()).is_empty(), "nothing failed");

    std::fs::write(&empty, export(&empty, 300_000, 22)).unwrap();
    std::fs::write(&reserved, &whole).unwrap();
    for name in ["created-first.mp4", "reserved.mov"] {
        eventually(WAIT, &format!("{name} in done/"), || {
            arrived(&studio.done().join(name))
        })
        .await;
    }
    stop(agent).await;
    uploaded_once_byte_exact(&studio, &emulator, "created-first.mp4");
    uploaded_once_byte_exact(&studio, &emulator, "reserved.mov");
}

/// Hostile test of issue 11, D3: a file that changes during its upload pauses its job until it
/// is stable again; if it then never becomes a whole export again (a re-export over the same
/// name that crashed), the job ends in failed/ after incomplete_after instead of waiting for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_during_its_upload_goes_to_failed_when_it_never_becomes_whole_again() {
    let emulator = emulator(slow_server).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nincomplete_after = \"2s\"",
    );
    let path = studio.inbox.join("recut.mp4");
    write_file(&path, 12 * MIB, 23);
    let agent = studio.start();
    eventually(WAIT, "recut.mp4 uploading", || {
        emulator.videos().iter().any(|v| v.file_name == "recut.mp4")
    })
    .await;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(7 * MIB as u64).unwrap();
    drop(file);
    let failed = studio.failed().join("recut.mp4");
    eventually(WAIT, "recut.mp4 in failed/", || arrived(&failed)).await;
    stop(agent).await;
    let sidecar = sidecar(&failed);
    assert_eq!(sidecar["status"], "failed", "{sidecar}");
    assert!(
        sidecar["error"]["meaning"]
            .as_str()
            .is_some_and(|m| m.contains("export it again")),
        "{sidecar}"
    );
}

/// Hostile test of issue 11, D8: a subfolder the agent may not read (a volume's `lost+found`,
/// mode 700, owned by root) made the whole folder unwatchable: `run` exited and `scan` showed
/// no files. Now the folder is polled, the unreadable subfolder is named, the rest is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_subfolder_makes_the_folder_polled_not_unwatchable() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| text(&out.stdout).trim() == "0");
    let has_setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    if !is_root || !has_setpriv {
        hotfolder::test_skipped(format_args!(
            "needs root and setpriv, to run hotfolder as nobody"
        ));
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    let inbox = dir.path().join("in");
    std::fs::create_dir_all(inbox.join("lost+found")).unwrap();
    open(&inbox, 0o755);
    open(&inbox.join("lost+found"), 0o700);
    write_file(&inbox.join("clip.mp4"), 100_000, 31);
    open(&inbox.join("clip.mp4"), 0o644);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[account]\nusername = \"u\"\npassword = \"p\"\nvideo_manager_id = 1\n\
             [state]\ndir = \"{}\"\n[[folder]]\npath = \"{}\"\nstable_for = \"0s\"\n",
            dir.path().join("state").display(),
            inbox.display()
        ),
    )
    .unwrap();
    open(&config, 0o644);
    let output = run(tokio::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_hotfolder"))
        .arg("scan")
        .arg("--config")
        .arg(&config))
    .await;
    let shown = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("polling every"), "{shown}");
    assert!(shown.contains("cannot be read"), "{shown}");
    assert!(
        shown.contains("would upload") && shown.contains("clip.mp4"),
        "{shown}"
    );
}
