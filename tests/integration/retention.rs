//! done/ retention (`keep_done_for`) against what the hostile test of issue 13 did to it,
//! through the binary against the emulator: a file briefly away when it is due, content
//! rewritten in place with its mtime set back, a VideoManager that does not answer for itself,
//! done/ replaced by a link, and a reload that sets `keep_done_for`.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the agent recorded `n` files as done: their move and how they were placed
/// (after the sidecar, which [`arrived`] waits for) are in the store.
async fn recorded_done(studio: &Studio, n: u64) {
    let start = Instant::now();
    loop {
        let status = studio.status_json().await;
        if status["summary"]["done"] == n {
            return;
        }
        assert!(start.elapsed() < WAIT, "{n} done never recorded: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// M3: content rewritten in place with its mtime set back (`touch -r`) keeps inode, size and
/// mtime; it was deleted as the file hotfolder placed. Its ctime moved on: it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_done_for_keeps_a_file_rewritten_in_place_with_its_mtime_set_back() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"3s\"",
    );
    write_file(&studio.inbox.join("rewritten.mov"), MIB + 7, 1);
    write_file(&studio.inbox.join("untouched.mov"), MIB + 7, 2);
    let agent = studio.start();
    let done = |name: &str| studio.done().join(name);
    eventually(WAIT, "both in done/", || {
        arrived(&done("rewritten.mov")) && arrived(&done("untouched.mov"))
    })
    .await;
    recorded_done(&studio, 2).await;

    let path = done("rewritten.mov");
    let before = std::fs::metadata(&path).unwrap();
    {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(4096)).unwrap();
        file.write_all(&[0x42; 4096]).unwrap();
        file.set_modified(before.modified().unwrap()).unwrap();
    }
    let after = std::fs::metadata(&path).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        // The premise: what was compared before cannot tell.
        assert_eq!(
            (after.ino(), after.len(), after.modified().unwrap()),
            (before.ino(), before.len(), before.modified().unwrap())
        );
        assert_ne!(
            (after.ctime(), after.ctime_nsec()),
            (before.ctime(), before.ctime_nsec())
        );
    }

    eventually(WAIT, "done/untouched.mov deleted", || {
        !done("untouched.mov").exists()
    })
    .await;
    eventually(WAIT, "the rewritten file kept, and said why", || {
        studio.log_text().contains("keeping done/rewritten.mov")
    })
    .await;
    let log = studio.log_text();
    assert!(path.exists(), "{log}");
    assert!(log.contains("ctime"), "{log}");
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// M1: a file not in done/ when it was due (done/ moved away and back: a share remounting)
/// was recorded as kept and never looked at again. Now it is looked for each round (said
/// once), and deleted once it is back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_done_for_looks_again_for_a_file_that_was_away_when_it_was_due() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"1s\"",
    );
    write_file(&studio.inbox.join("away.mov"), MIB + 7, 1);
    let agent = studio.start();
    let file = studio.done().join("away.mov");
    eventually(WAIT, "in done/", || arrived(&file)).await;
    recorded_done(&studio, 1).await;
    // Renaming its folder leaves the file's own ctime as it was.
    let elsewhere = studio.dir.path().join("done-elsewhere");
    std::fs::rename(studio.done(), &elsewhere).unwrap();
    eventually(WAIT, "its absence said", || {
        studio
            .log_text()
            .contains("done/away.mov is not in done/ now")
    })
    .await;
    // Several rounds (every 0.25 s) go by: said once, nothing recorded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = studio.log_text();
    assert_eq!(count(&log, "is not in done/ now"), 1, "{log}");
    assert!(!log.contains("keeping done/away.mov"), "{log}");
    assert!(elsewhere.join("away.mov").exists());

    std::fs::rename(&elsewhere, studio.done()).unwrap();
    eventually(WAIT, "deleted once back", || !file.exists()).await;
    let log = studio.log_text();
    assert!(log.contains("done/away.mov is back in done/"), "{log}");
    assert!(log.contains("deleted done/away.mov"), "{log}");
    assert!(sidecar_of(&file).exists(), "its sidecar stays");
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// M2: a 404 from the VideoManager itself (one the platform no longer knows) was read as "the
/// video is gone", and the file kept for good. Now the file stays while the VideoManager does
/// not answer for itself, and is deleted once it does and has the video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_done_for_keeps_files_while_their_video_manager_does_not_answer() {
    let emulator = emulator(|o| o.video_managers = vec![12345]).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"3s\"",
    );
    write_file(&studio.inbox.join("clip.mov"), MIB + 7, 1);
    let agent = studio.start();
    let file = studio.done().join("clip.mov");
    eventually(WAIT, "in done/", || arrived(&file)).await;
    recorded_done(&studio, 1).await;
    // Before it is due: the platform stops knowing VideoManager 12345 (both the video and the
    // search are answered 404 "video manager 12345 not found").
    emulator.set_video_managers(vec![999]);
    eventually(WAIT, "the doubt logged", || {
        studio
            .log_text()
            .contains("keeping the files uploaded into VideoManager 12345 for now")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = studio.log_text();
    assert!(file.exists(), "{log}");
    assert!(!log.contains("no longer has its video"), "{log}");
    assert_eq!(count(&log, "for now (done/clip.mov first)"), 1, "{log}");

    emulator.set_video_managers(vec![12345]);
    eventually(WAIT, "deleted once the VideoManager answers", || {
        !file.exists()
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Second hostile test of issue 13, D12: while the platform could not be reached, every
/// round logged a warning (80 lines in 40 s). Now one per outage, and a line when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_done_for_warns_once_per_outage_and_says_when_the_platform_is_back() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"2s\"",
    );
    write_file(&studio.inbox.join("clip.mov"), MIB + 7, 1);
    let agent = studio.start();
    let file = studio.done().join("clip.mov");
    eventually(WAIT, "in done/", || arrived(&file)).await;
    recorded_done(&studio, 1).await;
    emulator.set_faults(hotfolder::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    eventually(WAIT, "the outage logged", || {
        studio
            .log_text()
            .contains("keep_done_for: cannot ask the platform")
    })
    .await;
    // Several rounds of it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = studio.log_text();
    assert!(file.exists(), "{log}");
    assert_eq!(
        count(&log, "keep_done_for: cannot ask the platform"),
        1,
        "{log}"
    );

    emulator.set_faults(hotfolder::Faults::default());
    eventually(WAIT, "deleted once the platform answers", || !file.exists()).await;
    let log = studio.log_text();
    assert_eq!(
        count(&log, "keep_done_for: the platform answers again"),
        1,
        "{log}"
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// M4: done/ replaced by a link while files wait there was only logged at debug level, every
/// round. Now it is a warning, once, and nothing is deleted through the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_dir_replaced_by_a_link_is_warned_about_once_and_nothing_is_deleted_through_it() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        FAST_UPLOAD,
        "stable_for = \"300ms\"\nkeep_done_for = \"1s\"",
    );
    write_file(&studio.inbox.join("a.mov"), MIB + 7, 1);
    write_file(&studio.inbox.join("b.mov"), MIB + 7, 2);
    let agent = studio.start();
    eventually(WAIT, "both in done/", || {
        arrived(&studio.done().join("a.mov")) && arrived(&studio.done().join("b.mov"))
    })
    .await;
    recorded_done(&studio, 2).await;
    let real = studio.dir.path().join("real-done");
    std::fs::rename(studio.done(), &real).unwrap();
    std::os::unix::fs::symlink(&real, studio.done()).unwrap();
    eventually(WAIT, "the link warned about", || {
        studio.log_text().contains("through the symbolic link")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = studio.log_text();
    assert_eq!(count(&log, "through the symbolic link"), 1, "{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(real.join("a.mov").exists() && real.join("b.mov").exists());
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// M4: a reload that set `keep_done_for` took effect only after the sleep retention had
/// begun (a minute with none set, up to an hour with one). Now the reload wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_keep_done_for_at_once() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, "stable_for = \"300ms\"");
    write_file(&studio.inbox.join("clip.mov"), MIB + 7, 1);
    let agent = studio.start();
    let file = studio.done().join("clip.mov");
    eventually(WAIT, "in done/", || arrived(&file)).await;
    recorded_done(&studio, 1).await;
    // Retention now sleeps its idle minute.
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_folder_keys(&studio.config, "keep_done_for = \"1s\"");
    signal(&agent, 1);
    let reloaded = Instant::now();
    eventually(Duration::from_secs(20), "deleted after the reload", || {
        !file.exists()
    })
    .await;
    assert!(
        reloaded.elapsed() < Duration::from_secs(20),
        "{:?}",
        reloaded.elapsed()
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Adds `lines` to the (only) `[[folder]]` table of `config`, after its `stable_for`.
fn set_folder_keys(config: &Path, lines: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let changed = text.replacen(
        "stable_for = \"300ms\"",
        &format!("stable_for = \"300ms\"\n{lines}"),
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(config, changed).unwrap();
}
