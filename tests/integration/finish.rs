//! Moving files to done/ and failed/ as the agent does it, through the real binary: names that
//! are taken (long ones too), a kill between the move and its record, and moves that copy
//! across file systems while the agent must keep answering its service manager.

use std::path::Path;
use std::time::Duration;

use hotfolder::Emulator;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);

fn videos_named(emulator: &Emulator, file_name: &str) -> Vec<hotfolder::VideoRecord> {
    emulator
        .videos()
        .into_iter()
        .filter(|v| v.file_name == file_name)
        .collect()
}

/// Names in `dir` (not recursive), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A file exported twice under a 252-byte name: the second can only be numbered if the number
/// is fitted into the 255-byte limit, else its move fails ("File name too long") for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_name_already_taken_in_done_is_numbered_within_the_name_limit() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    let name = format!("{}.mov", "Final_Cut_".repeat(25).split_at(248).0);
    assert_eq!(name.len(), 252);
    let agent = studio.start();
    let path = studio.inbox.join(&name);
    let sidecars = |studio: &Studio| {
        names_in(&studio.done())
            .into_iter()
            .filter(|n| n.ends_with(".upload.json"))
            .count()
    };
    let mut exports = Vec::new();
    for round in 0..3u64 {
        let data = content(1000 + round as usize, 90 + round);
        std::fs::write(&path, &data).unwrap();
        exports.push(data);
        eventually(WAIT, &format!("export {round} delivered"), || {
            sidecars(&studio) == round as usize + 1 && !path.exists()
        })
        .await;
    }
    let delivered: Vec<String> = names_in(&studio.done())
        .into_iter()
        .filter(|n| !n.ends_with(".upload.json"))
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for (round, data) in exports.iter().enumerate() {
        let file = if round == 0 {
            name.clone()
        } else {
            let wanted = format!(" ({round}).mov");
            delivered
                .iter()
                .find(|n| n.ends_with(&wanted))
                .unwrap_or_else(|| panic!("no name ending in {wanted:?}: {delivered:?}"))
                .clone()
        };
        assert!(file.len() <= 255, "{file}");
        assert!(file.starts_with("Final_Cut_"), "{file}");
        assert_eq!(&std::fs::read(studio.done().join(&file)).unwrap(), data);
    }
    let log = studio.log_text();
    assert!(!log.contains("too long"), "{log}");
    assert!(!log.contains("tried again every"), "{log}");
    assert_eq!(videos_named(&emulator, &name).len(), 3);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// The job row of the one job in the state store, as the test reads it from the SQLite file.
struct StoredJob {
    state: String,
    size: u64,
    video_id: Option<String>,
    sha256: Option<String>,
    started_at: Option<String>,
}

fn stored_jobs(studio: &Studio) -> Vec<StoredJob> {
    let db = studio.dir.path().join("state/jobs.sqlite3");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut statement = conn
        .prepare("SELECT state, size, video_id, sha256, started_at FROM jobs ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok(StoredJob {
                state: row.get(0)?,
                size: row.get(1)?,
                video_id: row.get(2)?,
                sha256: row.get(3)?,
                started_at: row.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A kill after the file was moved to done/ and its sidecar written, before the store recorded
/// the end: after the restart the job is done (not "gone" with a warning) and nothing moves
/// again. Simulated by hand: an agent whose move fails leaves the job finishing; the test then
/// moves the file and writes the sidecar as the agent would have, and restarts the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_move_and_its_record_ends_the_job_as_done() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, FAST_UPLOAD, QUICK);
    std::fs::write(studio.done(), b"in the way").unwrap();
    let agent = studio.start();
    let path = studio.inbox.join("clip.mov");
    let data = content(1500, 15);
    std::fs::write(&path, &data).unwrap();
    eventually(WAIT, "the failed move logged", || {
        studio.log_text().contains("tried again every")
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());

    let jobs = stored_jobs(&studio);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.state, "finishing");
    std::fs::remove_file(studio.done()).unwrap();
    std::fs::create_dir(studio.done()).unwrap();
    let moved = studio.done().join("clip.mov");
    std::fs::rename(&path, &moved).unwrap();
    // The stored start time is RFC 3339 text already, as the sidecar writes it.
    let sidecar_text = serde_json::json!({
        "file": "clip.mov",
        "size": job.size,
        "sha256": job.sha256,
        "status": "uploaded",
        "video_id": job.video_id,
        "error": null,
        "chunks": 1,
        "chunk_size": MIB,
        "attempts": 1,
        "started_at": job.started_at,
        "finished_at": job.started_at,
        "bytes_per_second": null,
        "events": [],
    });
    std::fs::write(sidecar_of(&moved), sidecar_text.to_string()).unwrap();

    let agent = studio.start();
    eventually(WAIT, "the job done", || {
        stored_jobs(&studio)[0].state == "done"
    })
    .await;
    let log = studio.log_text();
    assert!(!log.contains("removed from the folder"), "{log}");
    assert_eq!(
        names_in(&studio.done()),
        ["clip.mov", "clip.mov.upload.json"]
    );
    assert_eq!(std::fs::read(&moved).unwrap(), data);
    // The agent completed the sidecar: its events now include the move.
    let written = sidecar(&moved);
    assert_eq!(written["video_id"], job.video_id.clone().unwrap().as_str());
    assert!(
        written["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "moved"),
        "{written}"
    );
    let status = studio.status_json().await;
    assert_eq!(status["summary"]["done"], 1, "{status}");
    assert_eq!(status["summary"]["finishing"], 0, "{status}");
    assert_eq!(videos_named(&emulator, "clip.mov").len(), 1);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}
