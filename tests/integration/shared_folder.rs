//! Several agents on one folder, through the real binary: without `shared` a second agent
//! refuses the folder and names the first, and takes it once the first is gone; with
//! `shared = true` three agents (separate state dirs) upload every file exactly once, one video
//! per file, through random SIGKILLs and SIGSTOPs, on a local folder and on an sshfs share seen
//! through three separate mounts; an agent stopped mid-upload has its claim taken over and the
//! upload continues on the same video.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::util::loopback_share::LoopbackShare;
use crate::util::*;

/// One agent: its own dir (config, state, logs), watching `folder`.
struct Agent {
    dir: PathBuf,
    config: PathBuf,
    child: Option<tokio::process::Child>,
    stopped_until: Option<std::time::Instant>,
}

impl Agent {
    fn new(
        base: &Path,
        name: &str,
        emulator: &hotfolder::Emulator,
        folder: &Path,
        extra: &str,
    ) -> Agent {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let body = format!(
            "{}\n{FAST_UPLOAD}\n[[folder]]\npath = \"{}\"\nstable_for = \"300ms\"\n{extra}\n",
            account_toml(emulator, "keycloak"),
            folder.display()
        );
        let config = write_config(&dir, &body);
        Agent {
            dir,
            config,
            child: None,
            stopped_until: None,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("run-stderr.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        self.child = Some(
            hotfolder()
                .arg("run")
                .arg("--config")
                .arg(&self.config)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("hotfolder run starts"),
        );
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            signal(child, sig);
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped_until.take().is_some() {
                signal(&child, libc::SIGCONT);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The port of its status listener, from its log line.
    fn listener_port(&self) -> u16 {
        let log = self.log_text();
        let marker = "listening on http://127.0.0.1:";
        log[log.find(marker).expect("the listener's log line") + marker.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a port in the listener's log line")
    }

    async fn status_text(&self) -> String {
        let output = run(hotfolder().arg("status").arg("--config").arg(&self.config)).await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    }
}

/// Waits until `agent`'s log holds `needle`.
async fn says(agent: &Agent, needle: &str, limit: Duration) {
    eventually(limit, &format!("the log to say {needle:?}"), || {
        agent.log_text().contains(needle)
    })
    .await;
}

/// Files under the folder's claim folders (records and claimed files).
fn claimed(folder: &Path) -> Vec<String> {
    files_under(&folder.join(".hotfolder").join("claims"))
}

#[tokio::test(flavor = "multi_thread")]
async fn without_shared_a_second_agent_refuses_the_folder_naming_the_first_and_takes_it_when_the_first_is_gone()
 {
    let emulator = emulator(|_| {}).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut first = Agent::new(
        base.path(),
        "first",
        &emulator,
        &inbox,
        "claim_lease = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"",
    );
    let mut second = Agent::new(
        base.path(),
        "second",
        &emulator,
        &inbox,
        "claim_lease = \"2s\"",
    );
    first.start();
    says(
        &first,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    second.start();
    let refusal = format!("another hotfolder agent watches it: host {}", hostname());
    says(&second, &refusal, Duration::from_secs(20)).await;
    let log = second.log_text();
    assert!(
        log.contains(&format!("pid {}", first.pid())),
        "the refusal names the first agent's pid: {log}"
    );
    let status = second.status_text().await;
    assert!(
        status.contains("FOLDER MISSING") && status.contains(&format!("pid {}", first.pid())),
        "{status}"
    );
    // The first one's status (command, /api/status, the page) shows the second one on the
    // folder, giving way.
    let status = first.status_text().await;
    assert!(
        status.contains("agents on") && status.contains(&format!("pid {}", second.pid())),
        "{status}"
    );
    let port = first.listener_port();
    let api: serde_json::Value =
        serde_json::from_str(&crate::http::get(port, "/api/status").await.body).unwrap();
    let seen = &api["agents"][0]["agents"];
    assert!(
        seen.as_array().unwrap().iter().any(|agent| {
            agent["pid"] == second.pid() && agent["active"] == true && agent["this_agent"] == false
        }),
        "{api}"
    );
    let page = crate::http::get(port, "/").await.body;
    assert!(page.contains("Agents on"), "{page}");

    // Files go through the first agent only: one video each.
    let sha = write_file(&inbox.join("one.mp4"), 300_000, 1);
    eventually(Duration::from_secs(30), "one.mp4 in done/", || {
        arrived(&inbox.join("done/one.mp4"))
    })
    .await;
    assert_eq!(sidecar(&inbox.join("done/one.mp4"))["sha256"], sha);
    assert_eq!(emulator.videos().len(), 1);

    // The first dies without a word (its presence stays behind): the second takes the folder
    // once the presence is older than claim_lease, and uploads what comes next.
    first.kill().await;
    says(
        &second,
        "this agent watches it now",
        Duration::from_secs(20),
    )
    .await;
    let sha = write_file(&inbox.join("two.mp4"), 300_000, 2);
    eventually(Duration::from_secs(30), "two.mp4 in done/", || {
        arrived(&inbox.join("done/two.mp4"))
    })
    .await;
    assert_eq!(sidecar(&inbox.join("done/two.mp4"))["sha256"], sha);
    assert_eq!(emulator.videos().len(), 2, "one video per file");
    second.kill().await;
}

fn hostname() -> String {
    let output = std::process::Command::new("uname")
        .arg("-n")
        .output()
        .unwrap();
    text(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_stopped_mid_upload_has_its_claim_taken_over_and_the_upload_continues_on_the_same_video()
 {
    let emulator = emulator(slow_server).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let shared = "shared = true\nclaim_lease = \"2s\"";
    let mut stalled = Agent::new(base.path(), "stalled", &emulator, &inbox, shared);
    let mut taker = Agent::new(base.path(), "taker", &emulator, &inbox, shared);
    stalled.start();
    says(
        &stalled,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    let sha = write_file(&inbox.join("big.mp4"), 20 * MIB, 3);
    eventually(Duration::from_secs(30), "a few chunks of the video", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 3)
    })
    .await;
    stalled.signal(libc::SIGSTOP);
    let video = emulator.videos()[0].clone();
    assert!(!video.complete);
    taker.start();
    says(&taker, "taken over from agent", Duration::from_secs(30)).await;
    eventually(Duration::from_secs(60), "big.mp4 in done/", || {
        arrived(&inbox.join("done/big.mp4"))
    })
    .await;
    let log = taker.log_text();
    assert!(
        log.contains("resuming on the same video at chunk"),
        "the taker resumes where the record says: {log}"
    );
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "one video for the file: {videos:?}");
    assert_eq!(videos[0].id, video.id);
    assert!(videos[0].complete);
    assert_eq!(videos[0].sha256.as_deref(), Some(sha.as_str()));
    let side = sidecar(&inbox.join("done/big.mp4"));
    assert_eq!(side["video_id"], video.id.as_str());
    assert_eq!(side["sha256"], sha);

    // The stalled agent wakes up: it finds its claim gone and stops before its next request,
    // sends nothing more, and moves nothing.
    let chunk_posts = emulator.stats().chunk_posts;
    stalled.signal(libc::SIGCONT);
    stalled.stopped_until = None;
    says(
        &stalled,
        "this file's claim is no longer this agent's",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        emulator.stats().chunk_posts <= chunk_posts + 1,
        "at most the request it had started"
    );
    assert_eq!(
        files_under(&inbox.join("done")).len(),
        2,
        "big.mp4 and its sidecar"
    );
    assert!(claimed(&inbox).is_empty(), "{:?}", claimed(&inbox));
    let status = taker.status_text().await;
    assert!(status.contains("agents on"), "{status}");
    // The marker keyword, kept on while the file was claimed (how the taker knew the video was
    // the file's), comes off once the file is in done/.
    eventually(
        Duration::from_secs(20),
        "the marker keyword off the video",
        || {
            emulator
                .video(&video.id)
                .is_some_and(|v| !v.keywords.iter().any(|k| k.starts_with("hotfolder-")))
        },
    )
    .await;
    stalled.kill().await;
    taker.kill().await;
}

/// What the chaos does to an agent.
enum Blow {
    Kill,
    Stop(Duration),
}

/// The issue's test: three agents, 200 files, `claim_lease = "3s"`, random SIGKILLs and
/// SIGSTOPs of any agent; every file exactly once in done/, one video per file, nothing left
/// claimed. `folders[i]` is where agent `i` sees the folder; files are written into `source`.
async fn three_agents_upload_every_file_once(source: &Path, folders: [PathBuf; 3], seed: u64) {
    let emulator = emulator(slow_server).await;
    let base = tempfile::tempdir().unwrap();
    let shared = "shared = true\nclaim_lease = \"3s\"";
    let mut agents: Vec<Agent> = folders
        .iter()
        .enumerate()
        .map(|(i, folder)| Agent::new(base.path(), &format!("agent{i}"), &emulator, folder, shared))
        .collect();
    for agent in &mut agents {
        agent.start();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut expected = BTreeMap::new();
    let started = std::time::Instant::now();
    let mut next_blow = started + Duration::from_secs(2);
    let mut written = 0;
    let mut blows = (0, 0);
    // Files arrive over 15 s; the chaos goes on for 30 s.
    while started.elapsed() < Duration::from_secs(30) || written < 200 {
        if written < 200 && started.elapsed() > Duration::from_millis(75 * written as u64) {
            let name = format!("clip{written:03}.mp4");
            let size = rng.random_range(100_000..4 * MIB);
            expected.insert(
                name.clone(),
                write_file(&source.join(&name), size, seed * 1000 + written as u64),
            );
            written += 1;
        }
        let now = std::time::Instant::now();
        for agent in &mut agents {
            if agent.stopped_until.is_some_and(|until| until <= now) {
                agent.signal(libc::SIGCONT);
                agent.stopped_until = None;
            }
            if agent.child.is_none() {
                agent.start();
            }
        }
        if now >= next_blow && started.elapsed() < Duration::from_secs(30) {
            next_blow = now + Duration::from_millis(rng.random_range(700..1800));
            let i = rng.random_range(0..3);
            // Never all three down at once: the files must keep moving.
            let down = agents
                .iter()
                .filter(|a| a.stopped_until.is_some() || a.child.is_none())
                .count();
            if down < 2 && agents[i].stopped_until.is_none() {
                let blow = if rng.random_bool(0.5) {
                    Blow::Kill
                } else {
                    Blow::Stop(Duration::from_millis(rng.random_range(1500..6000)))
                };
                match blow {
                    Blow::Kill => {
                        blows.0 += 1;
                        agents[i].kill().await;
                    }
                    Blow::Stop(how_long) => {
                        blows.1 += 1;
                        agents[i].signal(libc::SIGSTOP);
                        agents[i].stopped_until = Some(now + how_long);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for agent in &mut agents {
        if agent.stopped_until.take().is_some() {
            agent.signal(libc::SIGCONT);
        }
    }
    let done = source.join("done");
    let all_done = || {
        expected
            .keys()
            .all(|name| done.join(name).exists() && sidecar_of(&done.join(name)).exists())
    };
    let limit = Duration::from_secs(150);
    let waited = std::time::Instant::now();
    while !(all_done() && claimed(source).is_empty()) {
        if waited.elapsed() > limit {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|name| !done.join(name).exists())
                .collect();
            let logs: String = agents
                .iter()
                .map(|a| format!("--- {}\n{}", a.dir.display(), a.log_text()))
                .collect();
            panic!(
                "not every file arrived within {limit:?}: missing {missing:?}, claimed {:?}\n{}",
                claimed(source),
                &logs[logs.len().saturating_sub(20_000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for agent in &mut agents {
        agent.kill().await;
    }

    // Exactly once in done/: no numbered second copy, nothing failed, nothing left anywhere.
    let in_done: BTreeSet<String> = files_under(&done)
        .into_iter()
        .filter(|name| !name.ends_with(".upload.json"))
        .collect();
    let wanted: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(in_done, wanted, "done/ holds each file once");
    assert!(files_under(&source.join("failed")).is_empty());
    let left: Vec<String> = files_under(source)
        .into_iter()
        .filter(|name| !name.starts_with("done/"))
        .collect();
    assert!(left.is_empty(), "left in the folder: {left:?}");
    // One complete video per file, with the file's bytes, and the sidecar names it.
    let videos = emulator.videos();
    if videos.len() != expected.len() {
        let named: BTreeSet<String> = expected
            .keys()
            .filter_map(|name| {
                sidecar(&done.join(name))["video_id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let extra: Vec<String> = videos
            .iter()
            .filter(|video| !named.contains(&video.id))
            .map(|video| {
                let lines: String = agents
                    .iter()
                    .flat_map(|a| {
                        a.log_text()
                            .lines()
                            .filter(|line| line.contains(&video.file_name))
                            .map(|line| format!("{}: {line}\n", a.dir.display()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                format!("{video:?}\n{lines}")
            })
            .collect();
        panic!(
            "{} videos for {} files; not named by a sidecar:\n{}",
            videos.len(),
            expected.len(),
            extra.join("\n")
        );
    }
    let mut by_id = BTreeMap::new();
    for video in &videos {
        assert!(video.complete, "incomplete video {video:?}");
        by_id.insert(video.id.clone(), video.sha256.clone());
    }
    for (name, sha) in &expected {
        let side = sidecar(&done.join(name));
        assert_eq!(side["status"], "uploaded", "{name}");
        assert_eq!(side["sha256"], sha.as_str(), "{name}");
        let id = side["video_id"].as_str().unwrap_or_default();
        assert_eq!(
            by_id.get(id),
            Some(&Some(sha.clone())),
            "{name}'s video {id}"
        );
    }
    let takeovers: usize = agents
        .iter()
        .map(|a| a.log_text().matches("taken over from agent").count())
        .sum();
    eprintln!(
        "{} files, {} SIGKILLs, {} SIGSTOPs, {takeovers} claims taken over, {:.0} s",
        expected.len(),
        blows.0,
        blows.1,
        started.elapsed().as_secs_f64()
    );
    assert!(blows.0 > 0 && blows.1 > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_on_one_local_folder_upload_every_file_once_through_kills_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(dir.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    three_agents_upload_every_file_once(&inbox, [inbox.clone(), inbox.clone(), inbox.clone()], 15)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_on_three_sshfs_mounts_of_one_share_upload_every_file_once() {
    let Some(mut share) = LoopbackShare::start_or_skip() else {
        return;
    };
    let mounts = [
        share.mount.clone(),
        share.mount_again(),
        share.mount_again(),
    ];
    let server = share.server.clone();
    three_agents_upload_every_file_once(&server, mounts, 16).await;
    drop(share);
}

/// A stale claim record written by hand in `folder`'s claim folder of a dead agent `owner`,
/// with its file: `video_id` and `marker` as given; both made an hour old.
fn plant_claim(
    folder: &Path,
    owner: &str,
    rel_path: &str,
    video_id: &str,
    marker: &str,
    seed: u64,
) -> String {
    let dir = folder.join(".hotfolder/claims").join(owner);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dddddddddddddddd.mp4");
    let sha = write_file(&file, 200_000, seed);
    let size = std::fs::metadata(&file).unwrap().len();
    let record = serde_json::json!({
        "agent": owner, "host": "gone", "pid": 1,
        "rel_path": rel_path, "rel_path_hex": hex::encode(rel_path),
        "size": size, "video_id": video_id, "marker": marker, "create_sent": false,
        "video_manager_id": 12345, "next_chunk": 1, "total_chunks": null, "chunk_size": null,
    });
    let record_path = dir.join("dddddddddddddddd.claim");
    std::fs::write(&record_path, record.to_string()).unwrap();
    for path in [&file, &record_path] {
        let status = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    sha
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_record_written_by_hand_cannot_send_its_file_into_another_files_video() {
    let emulator = emulator(|_| {}).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut agent = Agent::new(
        base.path(),
        "agent",
        &emulator,
        &inbox,
        "shared = true\nclaim_lease = \"2s\"",
    );
    agent.start();
    let first = write_file(&inbox.join("first.mp4"), 300_000, 1);
    eventually(Duration::from_secs(30), "first.mp4 in done/", || {
        arrived(&inbox.join("done/first.mp4"))
    })
    .await;
    let victim = emulator.videos()[0].clone();
    assert_eq!(victim.sha256.as_deref(), Some(first.as_str()));
    // A record naming first.mp4's video, with a marker that video does not carry.
    let planted = plant_claim(
        &inbox,
        "vm-dead0002",
        "hijack.mp4",
        &victim.id,
        "hotfolder-not-its-marker",
        2,
    );
    eventually(Duration::from_secs(30), "hijack.mp4 in done/", || {
        arrived(&inbox.join("done/hijack.mp4"))
    })
    .await;
    let still = emulator.video(&victim.id).unwrap();
    assert_eq!(
        still.sha256.as_deref(),
        Some(first.as_str()),
        "first.mp4's video untouched"
    );
    assert_eq!(still.restarts, 0);
    let side = sidecar(&inbox.join("done/hijack.mp4"));
    assert_ne!(side["video_id"], victim.id.as_str());
    assert_eq!(side["sha256"], planted);
    assert_eq!(emulator.videos().len(), 2);
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_reached_through_a_link_under_hotfolder_are_never_taken() {
    let emulator = emulator(|_| {}).await;
    let base = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(base.path()).unwrap();
    let inbox = root.join("inbox");
    let outside = root.join("outside");
    std::fs::create_dir_all(inbox.join(".hotfolder")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // Someone points .hotfolder/claims at a folder elsewhere, with a stale "claim" in it.
    std::os::unix::fs::symlink(&outside, inbox.join(".hotfolder/claims")).unwrap();
    plant_claim(
        &root.join("fake"),
        "vm-dead0003",
        "secret.mp4",
        "x",
        "hotfolder-x",
        3,
    );
    std::fs::rename(
        root.join("fake/.hotfolder/claims/vm-dead0003"),
        outside.join("vm-dead0003"),
    )
    .unwrap();
    let mut agent = Agent::new(
        base.path(),
        "agent",
        &emulator,
        &inbox,
        "shared = true\nclaim_lease = \"2s\"",
    );
    agent.start();
    let dropped = write_file(&inbox.join("clip.mp4"), 300_000, 4);
    says(&agent, "not watching the folder", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing is taken from outside, and the folder's own file stays where it was dropped
    // (the folder cannot be shared through a link: it is refused, and says why).
    assert!(outside.join("vm-dead0003/dddddddddddddddd.mp4").exists());
    assert!(emulator.videos().is_empty());
    assert_eq!(
        sha256_hex(&std::fs::read(inbox.join("clip.mp4")).unwrap()),
        dropped
    );
    let log = agent.log_text();
    assert!(log.contains("is a link, not a folder"), "{log}");
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_shared_the_agent_that_takes_a_dead_agents_folder_over_resumes_its_upload_on_the_same_video()
 {
    let emulator = emulator(slow_server).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let lease = "claim_lease = \"2s\"";
    let mut dead = Agent::new(base.path(), "dead", &emulator, &inbox, lease);
    let mut heir = Agent::new(base.path(), "heir", &emulator, &inbox, lease);
    dead.start();
    says(
        &dead,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    heir.start();
    says(
        &heir,
        "another hotfolder agent watches it",
        Duration::from_secs(20),
    )
    .await;
    let sha = write_file(&inbox.join("big.mp4"), 20 * MIB, 5);
    eventually(Duration::from_secs(30), "a few chunks of the video", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 3)
    })
    .await;
    dead.kill().await;
    let video = emulator.videos()[0].clone();
    eventually(Duration::from_secs(60), "big.mp4 in done/", || {
        arrived(&inbox.join("done/big.mp4"))
    })
    .await;
    let log = heir.log_text();
    assert!(log.contains("taken over from agent"), "{log}");
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "no second video: {videos:?}");
    assert_eq!(videos[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(
        sidecar(&inbox.join("done/big.mp4"))["video_id"],
        video.id.as_str()
    );
    assert!(claimed(&inbox).is_empty(), "{:?}", claimed(&inbox));
    heir.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_a_shorter_claim_lease_never_takes_a_live_agent_with_a_longer_one_for_gone() {
    let emulator = emulator(|_| {}).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // The first renews every 15 s; the second would call anything older than 2 s gone.
    let mut patient = Agent::new(
        base.path(),
        "patient",
        &emulator,
        &inbox,
        "claim_lease = \"60s\"",
    );
    let mut hasty = Agent::new(
        base.path(),
        "hasty",
        &emulator,
        &inbox,
        "claim_lease = \"2s\"",
    );
    patient.start();
    says(
        &patient,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    hasty.start();
    says(
        &hasty,
        "another hotfolder agent watches it",
        Duration::from_secs(20),
    )
    .await;
    let mut wanted = Vec::new();
    for i in 0..3 {
        wanted.push(write_file(
            &inbox.join(format!("clip{i}.mp4")),
            200_000,
            40 + i,
        ));
    }
    eventually(Duration::from_secs(30), "every clip in done/", || {
        (0..3).all(|i| arrived(&inbox.join(format!("done/clip{i}.mp4"))))
    })
    .await;
    // Well past the short lease, and past a renewal of the long one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = hasty.log_text();
    assert!(!log.contains("this agent watches it now"), "{log}");
    assert_eq!(emulator.videos().len(), 3, "one video per file");
    patient.kill().await;
    hasty.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claimed_videos_job_xml_is_no_other_agents_orphan() {
    let emulator = emulator(slow_server).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let extra = "shared = true\nclaim_lease = \"2s\"\nmetadata_file = \"required\"\nincomplete_after = \"2s\"";
    let mut uploader = Agent::new(base.path(), "uploader", &emulator, &inbox, extra);
    let mut other = Agent::new(base.path(), "other", &emulator, &inbox, extra);
    uploader.start();
    says(
        &uploader,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    // The video, then its job XML (the trigger): a long upload (one request every 60 ms).
    write_file(&inbox.join("long.mp4"), 120 * MIB, 8);
    std::fs::write(
        inbox.join("job.xml"),
        format!(
            r#"<job xmlns="{}"><title>Long one</title><source><file>long.mp4</file></source></job>"#,
            "http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/job.xsd"
        ),
    )
    .unwrap();
    eventually(Duration::from_secs(30), "the upload under way", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;
    // The other agent sees job.xml beside no long.mp4 (it is claimed) for longer than
    // incomplete_after: it must leave it for the video's agent.
    other.start();
    eventually(Duration::from_secs(120), "long.mp4 in done/", || {
        arrived(&inbox.join("done/long.mp4"))
    })
    .await;
    assert!(
        inbox.join("done/job.xml").exists(),
        "the job XML moved with its video"
    );
    assert!(
        files_under(&inbox.join("failed")).is_empty(),
        "{:?}",
        files_under(&inbox.join("failed"))
    );
    assert_eq!(emulator.videos()[0].title.as_deref(), Some("Long one"));
    uploader.kill().await;
    other.kill().await;
}

/// A network share that hangs (its server stopped) must hang neither `hotfolder status` nor
/// the agent's `/api/status` and page: the folder is named as not answering within a few
/// seconds, again on the next request (no second thread is left waiting on it), and shown as
/// before once the share answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_share_hangs_neither_status_nor_the_page_and_is_named_not_answering() {
    let Some(share) = LoopbackShare::start_or_skip() else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = share.mount.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // A second folder, on the local disk, must not be reported with the hung one.
    let local = std::fs::canonicalize(base.path()).unwrap().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut agent = Agent::new(
        base.path(),
        "agent",
        &emulator,
        &inbox,
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[[folder]]\npath = \"{}\"\n",
            local.display()
        ),
    );
    agent.start();
    says(
        &agent,
        "ready: every folder is watched",
        Duration::from_secs(30),
    )
    .await;
    let port = agent.listener_port();
    let folder = inbox.to_string_lossy().into_owned();

    share.freeze(true);
    for round in 1..=2 {
        let asked = std::time::Instant::now();
        let api = tokio::time::timeout(
            Duration::from_secs(15),
            crate::http::get(port, "/api/status"),
        )
        .await
        .expect("/api/status answers while the share hangs");
        let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!(
            api["folders_not_answering"],
            serde_json::json!([folder]),
            "round {round}: {api}"
        );
        let page = tokio::time::timeout(Duration::from_secs(15), crate::http::get(port, "/"))
            .await
            .expect("the page answers while the share hangs")
            .body;
        assert!(page.contains("FOLDER NOT ANSWERING"), "{page}");
        let status = tokio::time::timeout(Duration::from_secs(15), agent.status_text())
            .await
            .expect("`hotfolder status` answers while the share hangs");
        assert!(
            status.contains(&format!("FOLDER NOT ANSWERING: {folder}: ")),
            "{status}"
        );
        let json = run(hotfolder()
            .args(["status", "--json", "--config"])
            .arg(&agent.config))
        .await;
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(
            json["folders_not_answering"],
            serde_json::json!([folder]),
            "only the hung folder: {json}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(12),
            "round {round} took {:?}",
            asked.elapsed()
        );
    }
    share.freeze(false);
    let answering_again = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = run(hotfolder()
            .args(["status", "--json", "--config"])
            .arg(&agent.config))
        .await;
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if json["folders_not_answering"] == serde_json::json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < answering_again,
            "the folder answers again once the share does: {json}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.kill().await;
    drop(share);
}

/// An agent stopped for longer than half its `claim_lease` but less than a whole one (a
/// SIGSTOP, a VM paused for a moment) still holds its claim: no other agent may have taken it
/// yet. Its chunk body stops at the claim check, the file server confirms the claim, and the
/// chunk goes again: one video, the file in done/, and no false "another agent took it over"
/// or "claimed before a restart" in its log (hostile test).
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_stopped_for_less_than_a_lease_keeps_its_claim_and_says_nothing_false() {
    // 8 MiB/s: a 16 MiB chunk's body takes 2 s, so the stop lands in one.
    let emulator = emulator(|o| o.link_rate = Some(8 * MIB as u64)).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(base.path()).unwrap().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut agent = Agent::new(
        base.path(),
        "alone",
        &emulator,
        &inbox,
        "shared = true\nclaim_lease = \"4s\"",
    );
    // Chunks larger than the socket's buffers: a body is handed over as the link takes it.
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let config = config.replace("chunk_size = \"1 MiB\"", "chunk_size = \"16 MiB\"");
    std::fs::write(&agent.config, config).unwrap();
    agent.start();
    says(
        &agent,
        "ready: every folder is watched",
        Duration::from_secs(20),
    )
    .await;
    let sha = write_file(&inbox.join("big.mp4"), 40 * MIB, 5);
    eventually(Duration::from_secs(30), "the file's video", || {
        !emulator.videos().is_empty()
    })
    .await;
    // Into the first chunk's body (2 s long).
    tokio::time::sleep(Duration::from_millis(700)).await;
    agent.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    agent.signal(libc::SIGCONT);
    eventually(Duration::from_secs(60), "big.mp4 in done/", || {
        arrived(&inbox.join("done/big.mp4"))
    })
    .await;
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "one video for the file: {videos:?}");
    assert!(videos[0].complete);
    assert_eq!(videos[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(sidecar(&inbox.join("done/big.mp4"))["sha256"], sha);
    let log = agent.log_text();
    for false_claim in [
        "another agent took it over",
        "claimed by this agent before a restart",
        "whose answer was lost",
    ] {
        assert!(!log.contains(false_claim), "{false_claim:?} in {log}");
    }
    agent.kill().await;
}

/// A share that hangs in the middle of an upload holds up that upload and nothing else: the
/// agent's `/healthz`, `/api/status` and page answer within seconds while the share hangs
/// (hostile test: the claim record's read on a runtime thread froze the whole agent), and the
/// upload finishes on its one video once the share answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_share_that_hangs_mid_upload_does_not_freeze_the_agent() {
    let Some(share) = LoopbackShare::start_or_skip() else {
        return;
    };
    // 4 MiB/s: the 16 MiB file takes about 4 s.
    let emulator = emulator(|o| o.link_rate = Some(4 * MIB as u64)).await;
    let base = tempfile::tempdir().unwrap();
    let inbox = share.mount.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut agent = Agent::new(
        base.path(),
        "agent",
        &emulator,
        &inbox,
        "[http]\nlisten = \"127.0.0.1:0\"",
    );
    agent.start();
    says(
        &agent,
        "ready: every folder is watched",
        Duration::from_secs(30),
    )
    .await;
    let port = agent.listener_port();
    let sha = write_file(&share.server.join("inbox/big.mp4"), 16 * MIB, 8);
    eventually(Duration::from_secs(30), "a few chunks of the video", || {
        emulator
            .videos()
            .first()
            .is_some_and(|v| v.chunks_received >= 2)
    })
    .await;
    share.freeze(true);
    // Long enough for the upload to reach its next check of the share.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for path in ["/healthz", "/api/status", "/"] {
        let answered =
            tokio::time::timeout(Duration::from_secs(10), crate::http::get(port, path)).await;
        assert!(
            answered.is_ok(),
            "{path} answers while the share hangs: {}",
            agent.log_text()
        );
    }
    share.freeze(false);
    eventually(Duration::from_secs(60), "big.mp4 in done/", || {
        arrived(&share.server.join("inbox/done/big.mp4"))
    })
    .await;
    let videos = emulator.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert_eq!(videos[0].sha256.as_deref(), Some(sha.as_str()));
    agent.kill().await;
    drop(share);
}
