//! The fault-injection soak: evidence that `hotfolder run` never loses or duplicates a
//! delivery. Files of random sizes arrive in bursts (some written slowly in place, some under a
//! `.part` name and renamed, some in sub-folders, a few empty ones that must fail); an MP4, MOV
//! or MXF is a whole container once its last piece is written (`util::export`); the emulator
//! fails, resets, stalls, throttles and drops answers at high rates and refuses upload URLs
//! every few chunks; the agent is killed with SIGKILL at random moments and restarted, and
//! sometimes stopped with SIGTERM, until the queue drains. Then every file is checked where a
//! user would look: done/ or failed/, its sidecar, and what the platform holds.
//!
//! `HOTFOLDER_SOAK=quick` (the default, run by CI) takes well under two minutes;
//! `HOTFOLDER_SOAK=full cargo test --release --test soak -- --nocapture` runs a few hundred files
//! up to 50 MiB for several minutes. `HOTFOLDER_SOAK_SEED=n` replays another scenario (the
//! files, their sizes and arrival, the fault dice and the kill schedule; the moments the kills
//! land still depend on timing).

// The integration tests' harness, shared rather than copied. The soak uses part of it; what it
// leaves unused is used by the integration binary, where dead helpers are still reported.
#[allow(dead_code)]
#[path = "integration/util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use hotfolder::{Emulator, EmulatorOptions, Faults, SampleFormat, VideoRecord};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use util::*;

/// Quiet time that makes a file complete. Slow writers pause at most `SLOW_GAP_MAX` between
/// pieces, so even a badly loaded machine never sees a half-written file as finished.
const STABLE_FOR: &str = "2s";
const SLOW_GAP_MAX: Duration = Duration::from_millis(150);

/// The emulator's search index lags this far behind a create; the agent repeats an empty
/// lookup over `lookup_wait`, longer than the lag.
const SEARCH_LAG: Duration = Duration::from_millis(300);
const LOOKUP_WAIT: &str = "800ms";

/// How long a SIGTERM may take, as the contract and the service unit promise.
const TERM_LIMIT: Duration = Duration::from_secs(10);

/// However fast the queue drains, every run kills and stops the agent at least this often.
const MIN_KILLS: u32 = 3;
const MIN_TERMS: u32 = 1;

/// The size of one soak.
#[derive(Debug, Clone)]
struct Profile {
    name: &'static str,
    files: usize,
    max_size: usize,
    burst_max: usize,
    burst_gap_max: Duration,
    parallel: u32,
    /// After this many kills and terms the agent is left alone to drain the queue, so a run
    /// always ends.
    max_interruptions: u32,
    /// The longest one agent lives before it is interrupted.
    life_max: Duration,
    /// A limit that catches hangs, far above the expected time.
    drain_limit: Duration,
}

impl Profile {
    fn from_env() -> Profile {
        let wanted = std::env::var("HOTFOLDER_SOAK").unwrap_or_default();
        match wanted.trim() {
            "full" => Profile {
                name: "full",
                files: 300,
                max_size: 50 * MIB,
                burst_max: 16,
                burst_gap_max: Duration::from_secs(4),
                parallel: 4,
                max_interruptions: 120,
                life_max: Duration::from_secs(8),
                drain_limit: Duration::from_secs(3600),
            },
            "" | "quick" => Profile {
                name: "quick",
                files: 40,
                max_size: 6 * MIB,
                burst_max: 10,
                burst_gap_max: Duration::from_secs(2),
                parallel: 3,
                max_interruptions: 14,
                life_max: Duration::from_secs(5),
                drain_limit: Duration::from_secs(300),
            },
            other => panic!("HOTFOLDER_SOAK must be `quick` or `full`, not `{other}`"),
        }
    }
}

/// How a file gets into the inbox.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    AtOnce,
    /// Written in place, piece by piece.
    Slowly {
        pieces: usize,
        gap: Duration,
    },
    /// Written under `<name>.part` (at once or slowly), then renamed into place.
    PartThenRename {
        slowly: Option<(usize, Duration)>,
        delay: Duration,
    },
}

#[derive(Debug, Clone)]
struct PlannedFile {
    /// Path relative to the inbox; the file name is unique over the whole run, because the
    /// platform only sees the name.
    rel: PathBuf,
    size: usize,
    seed: u64,
    arrival: Arrival,
}

impl PlannedFile {
    fn name(&self) -> String {
        self.rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Empty files are refused before any request: they belong in failed/.
    fn designed_to_fail(&self) -> bool {
        self.size == 0
    }

    fn rel_text(&self) -> String {
        self.rel.display().to_string()
    }
}

/// A burst: files dropped together, then a quiet time.
struct Burst {
    files: Vec<PlannedFile>,
    gap_after: Duration,
}

fn slow_pieces(rng: &mut StdRng) -> (usize, Duration) {
    let gap_ms = rng.random_range(30..=SLOW_GAP_MAX.as_millis() as u64);
    (rng.random_range(3..=10), Duration::from_millis(gap_ms))
}

/// The scenario: sizes, folders, arrival styles and bursts, all from the seeded RNG.
fn plan(profile: &Profile, rng: &mut StdRng) -> Vec<Burst> {
    const SUFFIXES: [&str; 8] = ["mp4", "mov", "mxf", "mkv", "m4v", "webm", "mts", "mpg"];
    // Chunk boundaries (1 MiB chunks, URLs refused after 3 chunk posts) and empty files.
    let edges = [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB, 3 * MIB + 1, 0];
    let mut files = Vec::with_capacity(profile.files);
    for i in 0..profile.files {
        let size = match edges.get(i) {
            Some(&edge) => edge.min(profile.max_size),
            None => match rng.random_range(0..100) {
                0..5 => 0,
                5..80 => {
                    // Log-uniform: many small files, some big ones, as in a real export folder.
                    let exponent = rng.random_range(0.0..(profile.max_size as f64).ln());
                    (exponent.exp() as usize).clamp(1, profile.max_size)
                }
                _ => rng.random_range(profile.max_size / 2..=profile.max_size),
            },
        };
        let dir = match rng.random_range(0..10) {
            0..6 => PathBuf::new(),
            6..8 => PathBuf::from(format!("reel-{}", rng.random_range(1..=4))),
            _ => PathBuf::from(format!(
                "reel-{}/cam-{}",
                rng.random_range(1..=4),
                ["a", "b"][rng.random_range(0..2)]
            )),
        };
        let suffix = SUFFIXES[rng.random_range(0..SUFFIXES.len())];
        let name = format!("soak-{i:03}.{suffix}");
        // An MP4/MOV/MXF export is at least its container's structure; empty ones stay empty.
        let smallest = SampleFormat::for_path(Path::new(&name)).smallest() as usize;
        let size = if size == 0 { 0 } else { size.max(smallest) };
        let arrival = match rng.random_range(0..4) {
            _ if size == 0 => Arrival::AtOnce,
            0 | 1 => Arrival::AtOnce,
            2 => {
                let (pieces, gap) = slow_pieces(rng);
                Arrival::Slowly { pieces, gap }
            }
            _ => Arrival::PartThenRename {
                slowly: rng.random_bool(0.5).then(|| slow_pieces(rng)),
                delay: Duration::from_millis(rng.random_range(0..400)),
            },
        };
        files.push(PlannedFile {
            rel: dir.join(name),
            size,
            seed: 1000 + i as u64,
            arrival,
        });
    }
    files.shuffle(rng);
    let mut bursts = Vec::new();
    let mut rest = files.into_iter().peekable();
    while rest.peek().is_some() {
        let take = rng.random_range(1..=profile.burst_max);
        let gap_ms = rng.random_range(0..=profile.burst_gap_max.as_millis() as u64);
        bursts.push(Burst {
            files: rest.by_ref().take(take).collect(),
            gap_after: Duration::from_millis(gap_ms),
        });
    }
    bursts
}

/// Writes `data` to `path` in `pieces`, pausing `gap` between them, like a render in progress.
fn write_slowly(path: &Path, data: &[u8], pieces: usize, gap: Duration) {
    let mut file = std::fs::File::create(path).unwrap();
    let piece = data.len().div_ceil(pieces.max(1)).max(1);
    for (i, part) in data.chunks(piece).enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        file.write_all(part).unwrap();
        file.flush().unwrap();
    }
}

fn deliver(inbox: &Path, file: &PlannedFile, data: &[u8]) {
    let path = inbox.join(&file.rel);
    match file.arrival {
        Arrival::AtOnce => std::fs::write(&path, data).unwrap(),
        Arrival::Slowly { pieces, gap } => write_slowly(&path, data, pieces, gap),
        Arrival::PartThenRename { slowly, delay } => {
            let mut part_name = path.file_name().unwrap().to_os_string();
            part_name.push(".part");
            let part = path.with_file_name(part_name);
            match slowly {
                Some((pieces, gap)) => write_slowly(&part, data, pieces, gap),
                None => std::fs::write(&part, data).unwrap(),
            }
            std::thread::sleep(delay);
            std::fs::rename(&part, &path).unwrap();
        }
    }
}

/// Drops every burst into the inbox on its own threads (slow writers overlap the next
/// bursts) and returns each file's sha256 by relative path.
fn drop_bursts(inbox: &Path, bursts: Vec<Burst>) -> BTreeMap<PathBuf, String> {
    let mut hashes = BTreeMap::new();
    std::thread::scope(|scope| {
        for burst in bursts {
            for file in burst.files {
                let data = match file.size {
                    0 => Vec::new(),
                    size => export(&file.rel, size, file.seed),
                };
                hashes.insert(file.rel.clone(), sha256_hex(&data));
                if let Some(parent) = inbox.join(&file.rel).parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                match file.arrival {
                    Arrival::AtOnce => deliver(inbox, &file, &data),
                    _ => {
                        scope.spawn(move || deliver(inbox, &file, &data));
                    }
                }
            }
            std::thread::sleep(burst.gap_after);
        }
    });
    hashes
}

/// What happened to the agent processes.
#[derive(Debug, Default)]
struct Interruptions {
    kills: u32,
    terms: u32,
    slowest_term: Duration,
}

fn log_tail(studio: &Studio, lines: usize) -> String {
    let log = studio.log_text();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_about(studio: &Studio, name: &str) -> String {
    let log = studio.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(name)).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// How a SIGTERM went.
struct TermOutcome {
    status: Result<ExitStatus, &'static str>,
    took: Duration,
}

impl TermOutcome {
    /// What is wrong, if the agent did not exit 0 within `TERM_LIMIT`.
    fn problem(&self) -> Option<String> {
        match self.status {
            Ok(status) if status.code() == Some(0) && self.took < TERM_LIMIT => None,
            _ => Some(format!("{self}; expected exit 0 within {TERM_LIMIT:?}")),
        }
    }
}

impl std::fmt::Display for TermOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Ok(status) => write!(f, "{status} in {:.2}s", self.took.as_secs_f64()),
            Err(why) => write!(f, "{why} ({:.2}s)", self.took.as_secs_f64()),
        }
    }
}

/// One `hotfolder run` process and where its part of the shared stderr log begins (earlier
/// runs are dead by the time it starts, so everything after that offset is its own).
struct AgentRun {
    child: tokio::process::Child,
    log_from: usize,
}

fn start_agent(studio: &Studio) -> AgentRun {
    let log_from = std::fs::read(studio.stderr_log())
        .map(|log| log.len())
        .unwrap_or(0);
    AgentRun {
        child: studio.start(),
        log_from,
    }
}

impl AgentRun {
    /// The agent logs `watching folder=…` once its signal handlers are in place: from then on
    /// SIGTERM means "shut down cleanly".
    fn is_watching(&self, studio: &Studio) -> bool {
        let log = std::fs::read(studio.stderr_log()).unwrap_or_default();
        let own = log.get(self.log_from..).unwrap_or_default();
        String::from_utf8_lossy(own).contains("watching folder=")
    }

    fn exited(&mut self, studio: &Studio) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the agent exited by itself ({status}):\n{}",
                log_tail(studio, 60)
            );
        }
    }
}

/// Sends SIGTERM once the agent is up, and waits for it to exit (with slack beyond
/// `TERM_LIMIT` to tell "slow" from "hung").
async fn stop_cleanly(studio: &Studio, mut agent: AgentRun) -> TermOutcome {
    let ready_limit = Instant::now() + Duration::from_secs(60);
    while !agent.is_watching(studio) {
        assert!(
            Instant::now() < ready_limit,
            "the agent never said it was watching:\n{}",
            log_tail(studio, 60)
        );
        agent.exited(studio);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    signal(&agent.child, 15);
    let status = match tokio::time::timeout(
        TERM_LIMIT + Duration::from_secs(20),
        agent.child.wait(),
    )
    .await
    {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(_)) => Err("could not wait for the agent"),
        Err(_) => {
            let _ = agent.child.start_kill();
            let _ = agent.child.wait().await;
            Err("did not exit after SIGTERM")
        }
    };
    TermOutcome {
        status,
        took: start.elapsed(),
    }
}

/// Every planned file has reached its place (file and sidecar) and nothing else is left in
/// the inbox: the queue has drained.
fn drained(studio: &Studio, files: &[PlannedFile]) -> bool {
    let placed = files.iter().all(|file| {
        let base = if file.designed_to_fail() {
            studio.failed()
        } else {
            studio.done()
        };
        let path = base.join(&file.rel);
        path.exists() && sidecar_of(&path).exists()
    });
    placed && leftovers(studio).is_empty()
}

/// Files in the inbox outside done/ and failed/.
fn leftovers(studio: &Studio) -> Vec<String> {
    files_under(&studio.inbox)
        .into_iter()
        .filter(|f| !f.starts_with("done/") && !f.starts_with("failed/"))
        .collect()
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

fn file_sha256(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|data| sha256_hex(&data))
}

/// Checks one file where a user would: its place, its bytes, its sidecar, its video.
fn check_file(
    studio: &Studio,
    file: &PlannedFile,
    expected_sha: &str,
    videos: &[VideoRecord],
    problems: &mut Vec<String>,
) {
    let name = file.name();
    let rel = file.rel_text();
    let mine: Vec<&VideoRecord> = videos.iter().filter(|v| v.file_name == name).collect();
    let (base, other) = if file.designed_to_fail() {
        (studio.failed(), studio.done())
    } else {
        (studio.done(), studio.failed())
    };
    let path = base.join(&file.rel);
    if other.join(&file.rel).exists() {
        problems.push(format!("{rel}: also in {}", other.display()));
    }
    match file_sha256(&path) {
        Some(sha) if sha == expected_sha => {}
        Some(sha) => problems.push(format!(
            "{rel}: bytes in {} differ from what was written (sha256 {sha}, wrote {expected_sha})",
            path.display()
        )),
        None => {
            problems.push(format!("{rel}: not in {}", base.display()));
            return;
        }
    }
    let sidecar = match read_json(&sidecar_of(&path)) {
        Ok(sidecar) => sidecar,
        Err(err) => {
            problems.push(format!("{rel}: sidecar: {err}"));
            return;
        }
    };
    if sidecar["file"] != name.as_str() || sidecar["size"] != file.size {
        problems.push(format!(
            "{rel}: sidecar names {} of {} bytes, expected {name} of {}",
            sidecar["file"], sidecar["size"], file.size
        ));
    }
    if file.designed_to_fail() {
        let message = sidecar["error"]["message"].as_str().unwrap_or_default();
        if sidecar["status"] != "failed" || !message.contains("empty") {
            problems.push(format!(
                "{rel}: an empty file's sidecar must say failed and why: status {}, error {}",
                sidecar["status"], sidecar["error"]
            ));
        }
        if !mine.is_empty() {
            problems.push(format!(
                "{rel}: an empty file must not reach the platform, but it holds {mine:?}"
            ));
        }
        return;
    }
    if sidecar["status"] != "uploaded" || sidecar["sha256"] != expected_sha {
        problems.push(format!(
            "{rel}: sidecar says status {}, sha256 {}; wrote {expected_sha}",
            sidecar["status"], sidecar["sha256"]
        ));
    }
    match mine.as_slice() {
        [video] => {
            if !video.complete || video.sha256.as_deref() != Some(expected_sha) {
                problems.push(format!(
                    "{rel}: the platform holds {:?} (complete {}), wrote {expected_sha}",
                    video.sha256, video.complete
                ));
            }
            if sidecar["video_id"] != video.id.as_str() {
                problems.push(format!(
                    "{rel}: sidecar video_id {} but the platform's video is {}",
                    sidecar["video_id"], video.id
                ));
            }
        }
        [] => problems.push(format!("{rel}: no video on the platform")),
        several => problems.push(format!(
            "{rel}: {} video entities for one file: {:?}",
            several.len(),
            several.iter().map(|v| &v.id).collect::<Vec<_>>()
        )),
    }
}

/// Everything in done/ and failed/ must be a planned file or its sidecar: no duplicates under
/// another name (`x (1).mp4`), no temp files, no strays.
fn check_folders(studio: &Studio, files: &[PlannedFile], problems: &mut Vec<String>) {
    for (base, prefix, failing) in [
        (studio.done(), "done", false),
        (studio.failed(), "failed", true),
    ] {
        let mut expected: Vec<String> = files
            .iter()
            .filter(|f| f.designed_to_fail() == failing)
            .flat_map(|f| {
                let rel = f.rel_text();
                [format!("{rel}.upload.json"), rel]
            })
            .collect();
        expected.sort();
        let found = files_under(&base);
        for stray in found.iter().filter(|f| !expected.contains(f)) {
            let name = Path::new(stray)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kind = if name.starts_with('.') || name.contains("hotfolder") {
                "temp file left behind"
            } else {
                "unexpected file"
            };
            problems.push(format!("{prefix}/{stray}: {kind}"));
        }
    }
    for left in leftovers(studio) {
        problems.push(format!("inbox/{left}: left behind"));
    }
}

/// Every video on the platform belongs to a file in done/ whose sidecar names it, and none
/// still carries a marker keyword: no orphan (an empty video a lost create-video answer left
/// behind), nothing a user would see of the lookup.
/// Returns how many files were uploaded into a video that a lost create-video answer had made
/// (their sidecars say `adopted`).
fn check_no_orphans(studio: &Studio, videos: &[VideoRecord], problems: &mut Vec<String>) -> usize {
    let done = studio.done();
    let sidecars: Vec<Value> = files_under(&done)
        .iter()
        .filter(|rel| rel.ends_with(".upload.json"))
        .filter_map(|rel| read_json(&done.join(rel)).ok())
        .collect();
    let claimed: Vec<String> = sidecars
        .iter()
        .filter_map(|sidecar| sidecar["video_id"].as_str().map(str::to_owned))
        .collect();
    for video in videos {
        if !claimed.contains(&video.id) {
            problems.push(format!(
                "orphan video {} ({}, {} bytes, complete {}): no file in done/ points to it",
                video.id, video.file_name, video.bytes_received, video.complete
            ));
        }
        if let Some(marker) = video.keywords.iter().find(|k| hotfolder::is_marker(k)) {
            problems.push(format!(
                "video {} ({}) still carries the marker keyword {marker}",
                video.id, video.file_name
            ));
        }
    }
    sidecars
        .iter()
        .filter(|sidecar| {
            sidecar["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event"] == "adopted"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nothing_lost_nothing_duplicated() {
    let profile = Profile::from_env();
    let seed: u64 = std::env::var("HOTFOLDER_SOAK_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(5);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let emulator: Emulator = emulator(|o: &mut EmulatorOptions| {
        o.url_max_chunks = Some(3);
        // Tokens that expire within most agent lives, so refreshes are part of the soak too.
        o.access_ttl = Duration::from_secs(4);
        o.faults = Faults {
            seed,
            error_rate: 0.1,
            reset_rate: 0.1,
            lost_ack_rate: 0.1,
            stall_rate: 0.1,
            // Longer than request_timeout: a stalled request is a timed-out request.
            stall: Duration::from_millis(1500),
            throttle_rate: 0.1,
            retry_after_secs: 1,
            // The video is made, the answer is a gateway's 504: only the lookup by the
            // marker keyword keeps a second video from being made.
            lost_create_rate: 0.1,
            ..Faults::default()
        };
        // A search index that lags behind: a lookup right after a lost create may come back
        // empty, and must be repeated before a new create.
        o.search_lag = Some(SEARCH_LAG);
    })
    .await;
    let upload = format!(
        "[upload]\nchunk_size = \"1 MiB\"\nparallel = {}\nmax_attempts = 30\nbackoff_max = \"250ms\"\nrequest_timeout = \"1s\"\napi_requests_per_minute = 6000\nlookup_wait = \"{LOOKUP_WAIT}\"\n",
        profile.parallel
    );
    let studio = Studio::new(
        &emulator,
        &upload,
        // An empty file waits for its writer up to incomplete_after (as long as stable_for
        // allows here), then fails saying it stayed empty.
        &format!("stable_for = \"{STABLE_FOR}\"\nincomplete_after = \"{STABLE_FOR}\""),
    );

    let bursts = plan(&profile, &mut rng);
    let files: Vec<PlannedFile> = bursts.iter().flat_map(|b| b.files.clone()).collect();
    let total_bytes: usize = files.iter().map(|f| f.size).sum();
    let inbox = studio.inbox.clone();
    let mut writer = Some(std::thread::spawn(move || drop_bursts(&inbox, bursts)));
    let mut hashes = None;

    // Interrupt the agent at random moments until the queue drains (and at least a few
    // times, however fast it drains).
    let mut interruptions = Interruptions::default();
    let mut problems = Vec::new();
    let mut agent = start_agent(&studio);
    loop {
        let enough = interruptions.kills >= MIN_KILLS && interruptions.terms >= MIN_TERMS;
        let life = (!enough
            || interruptions.kills + interruptions.terms < profile.max_interruptions)
            .then(|| {
                Duration::from_millis(rng.random_range(200..=profile.life_max.as_millis() as u64))
            });
        let born = Instant::now();
        let mut finished = false;
        loop {
            if writer.as_ref().is_some_and(|w| w.is_finished()) {
                let done = writer
                    .take()
                    .map(|w| w.join().expect("the writer thread finished"));
                hashes = done;
            }
            if enough && hashes.is_some() && drained(&studio, &files) {
                finished = true;
                break;
            }
            agent.exited(&studio);
            if life.is_some_and(|life| born.elapsed() >= life) {
                break;
            }
            assert!(
                started.elapsed() < profile.drain_limit,
                "the queue did not drain within {:?}; missing: {:?}; left in the inbox: {:?}\n{}",
                profile.drain_limit,
                files
                    .iter()
                    .filter(|f| {
                        let base = if f.designed_to_fail() {
                            studio.failed()
                        } else {
                            studio.done()
                        };
                        !sidecar_of(&base.join(&f.rel)).exists()
                    })
                    .map(PlannedFile::rel_text)
                    .collect::<Vec<_>>(),
                leftovers(&studio),
                log_tail(&studio, 80)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if finished {
            break;
        }
        // Now and then a clean stop instead of a kill, and one early on in every run.
        let alive = born.elapsed();
        if rng.random_bool(0.25) || (interruptions.terms == 0 && interruptions.kills >= 2) {
            interruptions.terms += 1;
            let outcome = stop_cleanly(&studio, agent).await;
            println!(
                "{:7.1}s  SIGTERM after {:.1}s alive: {outcome}",
                started.elapsed().as_secs_f64(),
                alive.as_secs_f64(),
            );
            interruptions.slowest_term = interruptions.slowest_term.max(outcome.took);
            if let Some(problem) = outcome.problem() {
                problems.push(format!("SIGTERM #{}: {problem}", interruptions.terms));
            }
        } else {
            agent.child.start_kill().unwrap();
            agent.child.wait().await.unwrap();
            interruptions.kills += 1;
            println!(
                "{:7.1}s  SIGKILL after {:.1}s alive",
                started.elapsed().as_secs_f64(),
                alive.as_secs_f64()
            );
        }
        agent = start_agent(&studio);
    }
    let outcome = stop_cleanly(&studio, agent).await;
    interruptions.slowest_term = interruptions.slowest_term.max(outcome.took);
    if let Some(problem) = outcome.problem() {
        problems.push(format!("the final SIGTERM: {problem}"));
    }
    let hashes = hashes.expect("the queue drained after every file was written");
    let wall = started.elapsed();

    // The proof.
    let videos = emulator.videos();
    for file in &files {
        let before = problems.len();
        check_file(&studio, file, &hashes[&file.rel], &videos, &mut problems);
        if problems.len() > before {
            problems.push(format!(
                "  log lines about {}:\n{}",
                file.name(),
                log_about(&studio, &file.name())
            ));
        }
    }
    check_folders(&studio, &files, &mut problems);
    let uploaded = files.iter().filter(|f| !f.designed_to_fail()).count();
    let names: Vec<String> = files.iter().map(PlannedFile::name).collect();
    for video in &videos {
        if !names.contains(&video.file_name) {
            problems.push(format!("a video for a file never written: {video:?}"));
        }
    }
    if videos.len() != uploaded {
        problems.push(format!(
            "{} videos on the platform for {uploaded} files",
            videos.len()
        ));
    }
    let adopted = check_no_orphans(&studio, &videos, &mut problems);
    let status = studio.status_json().await;
    let summary = &status["summary"];
    let failing = files.len() - uploaded;
    if summary["done"] != uploaded || summary["failed"] != failing {
        problems.push(format!(
            "status says {} done and {} failed; expected {uploaded} and {failing}",
            summary["done"], summary["failed"]
        ));
    }
    for state in ["waiting", "uploading", "paused", "finishing"] {
        if summary[state] != 0 {
            problems.push(format!("status still shows {} {state}", summary[state]));
        }
    }

    let stats = emulator.stats();
    let faults = &stats.faults_injected;
    println!(
        "soak {}: {} files ({failing} designed to fail), {:.1} MiB; faults injected {} \
         ({} errors, {} resets, {} lost acks, {} stalls, {} throttles, {} lost creates); {} kills, {} SIGTERMs \
         mid-run and one at the end (slowest exit {:.1}s); {} chunk posts for {} chunks, {} upload URLs, {} logins, {} refreshes, \
         {} creates, {} lookups, {adopted} videos adopted after a lost answer, {} markers removed; wall {:.1}s (seed {seed})",
        profile.name,
        files.len(),
        total_bytes as f64 / MIB as f64,
        faults.total,
        faults.errors,
        faults.resets,
        faults.lost_acks,
        faults.stalls,
        faults.throttles,
        faults.lost_creates,
        interruptions.kills,
        interruptions.terms,
        interruptions.slowest_term.as_secs_f64(),
        stats.chunk_posts,
        files.iter().map(|f| f.size.div_ceil(MIB)).sum::<usize>(),
        stats.urls_issued,
        stats.logins,
        stats.refreshes,
        stats.videos_created,
        stats.searches,
        stats.keywords_deleted,
        wall.as_secs_f64(),
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) (seed {seed}):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The soak proves nothing unless the faults really happened.
    assert!(
        faults.errors > 0
            && faults.resets > 0
            && faults.lost_acks > 0
            && faults.stalls > 0
            && faults.throttles > 0
            && faults.lost_creates > 0,
        "every kind of fault was injected: {faults:?}"
    );
}
