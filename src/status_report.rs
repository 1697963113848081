//! What `hotfolder status` shows: the queue read from the state store (which `run` keeps up to
//! date from another process), as text for people or JSON for scripts.
//!
//! Text shows times in local time to the second; JSON keeps RFC 3339 UTC. Both agree on what
//! each job is shown as: while the whole queue is paused, nothing waits or uploads (see
//! [`ShownCounts`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::agent::{ShownCounts, queue_counts};
use crate::bandwidth::BandwidthNow;
use crate::config::{human_rate, human_size};
use crate::escape::escaped;
use crate::shared_folder::AgentOnFolder;
use crate::store::{
    FolderMode, FollowedVideo, HeldVideoManager, Job, JobState, JobStore, MissingFolder,
    NotifyBacklog, SettlingFile, StoreError,
};
use crate::vmpro::link::{ChunkCap, describe_cap};

/// How many finished files `status` shows unless told otherwise (`--recent`); the status page
/// and `/api/status` show as many, so that they print what `status --json` prints.
pub const RECENT_SHOWN: usize = 10;

/// How many settling files the text lists: a folder that just received 10,000 files would
/// bury the rest of the report.
const SETTLING_SHOWN: usize = 20;

/// Everything `status` shows, read from the store in one go.
pub struct StatusSnapshot {
    pub store_path: PathBuf,
    pub counts: ShownCounts,
    /// Why the whole queue is paused, and since when.
    pub pause: Option<(String, OffsetDateTime)>,
    /// VideoManagers the platform does not know: their folders' files wait, the others upload.
    pub held: Vec<HeldVideoManager>,
    pub missing: Vec<MissingFolder>,
    /// How the running agent watches each folder it can see (none while it is not running).
    pub watched: Vec<FolderMode>,
    /// Files waiting out `stable_for`, without those that already have a job (the agent
    /// records a file's job before the next batch of settling changes says it is complete).
    pub settling: Vec<SettlingFile>,
    pub unfinished: Vec<Job>,
    /// Done, failed and gone jobs, most recently finished first.
    pub recent: Vec<Job>,
    /// Uploaded videos whose transcoding is still followed (`follow_transcoding`), the longest
    /// followed first.
    pub transcoding: Vec<FollowedVideo>,
    /// The bandwidth limit in force now and its next change (from the config and the clock,
    /// not the store); `None` leaves it out.
    pub bandwidth: Option<BandwidthNow>,
    /// Each `[[notify]]` destination: what it is still owed, and whether delivering fails.
    pub notifications: Vec<NotifyBacklog>,
    /// With `chunk_size = "auto"`: the most it picks since the platform refused a bigger chunk,
    /// while that holds (from the store and the config; `None` leaves it out).
    pub chunk_cap: Option<ChunkCap>,
    /// Per folder where more than this agent was seen, or claims are held: the agents and
    /// their claims (read from the folders, not the store; empty leaves it out).
    pub agents: Vec<(PathBuf, Vec<AgentOnFolder>)>,
    /// Folders whose `.hotfolder/` did not answer in time (a hung share): agents not known.
    pub not_answering: Vec<PathBuf>,
}

impl StatusSnapshot {
    /// What reading the folders found (see [`crate::shared_folder::survey_all`]).
    pub fn set_surveys(&mut self, surveys: crate::shared_folder::Surveys) {
        self.agents = surveys.agents;
        self.not_answering = surveys.not_answering;
    }

    /// Reads the store; `recent` is how many finished jobs to include.
    /// `agent_pause` is a pause the agent could not record in the store (its disk is full) and
    /// noted in its lock file instead; it wins over what the store says.
    pub fn read(
        store: &JobStore,
        recent: usize,
        agent_pause: Option<(String, OffsetDateTime)>,
    ) -> Result<StatusSnapshot, StoreError> {
        let summary = store.summary()?;
        let pause = agent_pause.or(store.queue_pause()?);
        let unfinished = store.unfinished()?;
        let mut settling = store.settling()?;
        settling.retain(|file| !unfinished.iter().any(|job| job.path == file.path));
        Ok(StatusSnapshot {
            store_path: store.path().to_path_buf(),
            counts: ShownCounts::new(&summary, pause.is_some()),
            held: store.held_video_managers()?,
            missing: store.missing_folders()?,
            watched: store.folder_modes()?,
            recent: store.recent_finished(recent)?,
            transcoding: store.transcoding_followed()?,
            pause,
            settling,
            unfinished,
            bandwidth: None,
            notifications: store.notify_backlog()?,
            chunk_cap: None,
            agents: Vec::new(),
            not_answering: Vec::new(),
        })
    }

    /// What `hotfolder status` and the agent's listener show: the store read-only, with the
    /// pause the agent could only note in its lock file in `state_dir` (see [`Self::read`]).
    pub fn read_state_dir(
        store: &JobStore,
        state_dir: &Path,
        recent: usize,
    ) -> Result<StatusSnapshot, StoreError> {
        let agent_pause =
            crate::store::read_agent_note(state_dir).map(|note| (note.paused, note.since));
        StatusSnapshot::read(store, recent, agent_pause)
    }

    /// What an unfinished job is shown as (see [`ShownCounts`]).
    pub fn shown_state(&self, job: &Job) -> &'static str {
        match (job.state, self.pause.is_some()) {
            (JobState::Uploading, true) => "trying",
            (JobState::Waiting, true) => "paused",
            (state, _) => state.as_str(),
        }
    }
}

/// The local offset when the process started, for times shown once other threads run.
static START_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Remembers the local offset while the process has one thread (the `time` crate refuses to
/// read the time zone once there are more: reading it from the environment is not
/// thread-safe). Call at the start of `main`'s work.
pub fn remember_local_offset() {
    if let Ok(offset) = UtcOffset::current_local_offset() {
        // Set once per process; a second call finds it set and changes nothing.
        let _ = START_OFFSET.set(offset);
    }
}

/// The clock the report reads: the current time, and how to show a time in local time.
pub struct ReportClock {
    pub now: OffsetDateTime,
    zone: Zone,
}

enum Zone {
    /// The system's time zone, asked per time shown (a time before a DST change has the
    /// offset it had then).
    Local,
    #[cfg(test)]
    Fixed(UtcOffset),
}

impl ReportClock {
    /// The system clock and time zone. The `time` crate knows the local offset only while the
    /// process has one thread, so `status` runs before the async runtime starts; elsewhere
    /// the offset at the start of the process stands in ([`remember_local_offset`]), and
    /// without that times are shown in UTC.
    pub fn system() -> ReportClock {
        ReportClock {
            now: OffsetDateTime::now_utc(),
            zone: Zone::Local,
        }
    }

    /// A fixed time and offset, for tests.
    #[cfg(test)]
    pub fn fixed(now: OffsetDateTime, offset: UtcOffset) -> ReportClock {
        ReportClock {
            now,
            zone: Zone::Fixed(offset),
        }
    }

    /// `2026-12-01 15:03:52` in local time, or `2026-12-01 14:03:52 UTC` when the local offset
    /// is unknown.
    pub fn show(&self, at: OffsetDateTime) -> String {
        let offset = match self.zone {
            Zone::Local => UtcOffset::local_offset_at(at)
                .ok()
                .or_else(|| START_OFFSET.get().copied()),
            #[cfg(test)]
            Zone::Fixed(offset) => Some(offset),
        };
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        match offset {
            Some(offset) => at.to_offset(offset).format(format).unwrap_or_default(),
            None => format!(
                "{} UTC",
                at.to_offset(UtcOffset::UTC)
                    .format(format)
                    .unwrap_or_default()
            ),
        }
    }

    /// `5 min ago`, to the coarsest unit that says it.
    pub fn ago(&self, at: OffsetDateTime) -> String {
        let secs = (self.now - at).whole_seconds();
        match secs {
            ..=1 => "just now".into(),
            2..=119 => format!("{secs} s ago"),
            120..=7_199 => format!("{} min ago", secs / 60),
            7_200..=172_799 => format!("{} h ago", secs / 3600),
            _ => format!("{} days ago", secs / 86_400),
        }
    }
}

/// The upload rate of a job, in bytes per second: the acknowledged bytes over the time their
/// chunks took to send. Waiting is left out (the create, URL requests, backoff, pauses, a
/// queue ahead of it), so a file sent at 460 MiB/s shows 460 MiB/s however long it waited, and
/// an upload that finished an hour ago keeps its rate. The agent's "uploaded" log line and the
/// sidecar use this same figure.
pub fn bytes_per_second(job: &Job) -> Option<f64> {
    crate::vmpro::chunks::sending_rate(job.bytes_sent, job.sending)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The report as text.
pub fn write_text(
    snapshot: &StatusSnapshot,
    clock: &ReportClock,
    out: &mut impl Write,
) -> io::Result<()> {
    let counts = queue_counts(&snapshot.counts);
    if snapshot.settling.is_empty() {
        writeln!(out, "queue: {counts}")?;
    } else {
        let settling = snapshot.settling.len();
        writeln!(
            out,
            "queue: {settling} settling (not complete yet), {counts}"
        )?;
    }
    if let Some(bandwidth) = &snapshot.bandwidth
        && bandwidth.configured
    {
        writeln!(out, "bandwidth: {}", bandwidth.text)?;
    }
    if let Some(cap) = &snapshot.chunk_cap {
        writeln!(out, "chunk size: auto, {}", describe_cap(cap))?;
    }
    if let Some((reason, since)) = &snapshot.pause {
        writeln!(
            out,
            "PAUSED since {} ({}): {reason}",
            clock.show(*since),
            clock.ago(*since)
        )?;
        writeln!(
            out,
            "  files stay where they are; hotfolder keeps trying and resumes by itself"
        )?;
    }
    for held in &snapshot.held {
        writeln!(
            out,
            "HELD since {} ({}): VideoManager {}: {}",
            clock.show(held.since),
            clock.ago(held.since),
            held.id,
            held.reason
        )?;
        writeln!(
            out,
            "  its files wait where they are while the other folders upload; hotfolder tries again by itself and at a reload"
        )?;
    }
    for (folder, agents) in &snapshot.agents {
        writeln!(out, "agents on {}", escaped(folder))?;
        for agent in agents {
            writeln!(out, "  {}", describe_agent(agent))?;
        }
    }
    for folder in &snapshot.not_answering {
        writeln!(out, "{}", not_answering_line(folder))?;
    }
    for folder in &snapshot.missing {
        writeln!(
            out,
            "FOLDER MISSING since {} ({}): {}: {}",
            clock.show(folder.since),
            clock.ago(folder.since),
            escaped(&folder.path),
            escaped(&folder.why)
        )?;
        writeln!(
            out,
            "  new files there are not noticed until it is back; hotfolder checks every few seconds"
        )?;
    }
    for backlog in snapshot.notifications.iter().filter(|b| b.pending > 0) {
        writeln!(out, "{}", notification_line(backlog, clock))?;
    }
    for folder in &snapshot.watched {
        writeln!(out, "watching   {}  {}", escaped(&folder.path), folder.mode)?;
    }
    for file in snapshot.settling.iter().take(SETTLING_SHOWN) {
        match &file.waiting_for {
            // Stable, but another signal says it is not finished.
            Some(waiting_for) => writeln!(
                out,
                "waiting    {}  {}, unchanged since {}; not queued: {}",
                escaped(&file.path),
                human_size(file.size),
                clock.show(file.since),
                escaped(waiting_for),
            )?,
            None => writeln!(
                out,
                "settling   {}  {}, unchanged since {}; complete at {} if it stays so",
                escaped(&file.path),
                human_size(file.size),
                clock.show(file.since),
                clock.show(file.since + file.stable_for),
            )?,
        }
    }
    if let Some(more) = snapshot.settling.len().checked_sub(SETTLING_SHOWN)
        && more > 0
    {
        writeln!(
            out,
            "settling   … and {more} more (`status --json` lists them all)"
        )?;
    }
    for job in &snapshot.unfinished {
        let name = escaped(&job.path);
        let state = snapshot.shown_state(job);
        match job.state {
            JobState::Uploading => writeln!(
                out,
                "{state:<10} {name}  chunk {}/{}  {}  video {}{}",
                job.next_chunk.saturating_sub(1),
                job.total_chunks
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                bytes_per_second(job)
                    .map(human_rate)
                    .unwrap_or_else(|| "-".into()),
                job.video_id.as_deref().unwrap_or("-"),
                if state == "trying" {
                    "  (trying whether the platform is back)"
                } else {
                    ""
                }
            )?,
            JobState::Paused => writeln!(
                out,
                "{state:<10} {name}  ({})",
                job.pause_reason.as_deref().unwrap_or("no reason recorded")
            )?,
            JobState::Waiting if state == "paused" => {
                writeln!(out, "{state:<10} {name}  (held until uploads resume)")?
            }
            _ => writeln!(out, "{state:<10} {name}")?,
        }
    }
    for video in &snapshot.transcoding {
        writeln!(
            out,
            "transcoding {}  video {}, uploaded {}: {}",
            escaped(&video.path),
            escaped(&video.video_id),
            clock.ago(video.since),
            transcoding_said(video)
        )?;
    }
    for job in &snapshot.recent {
        let at = job.finished_at.unwrap_or(job.updated_at);
        let name = escaped(&job.rel_path);
        let target = job
            .destination
            .as_deref()
            .map(|d| escaped(d).to_string())
            .unwrap_or_default();
        match job.state {
            JobState::Done => writeln!(
                out,
                "done       {}  {name} → {target}  video {}{}",
                clock.show(at),
                job.video_id.as_deref().unwrap_or("-"),
                bytes_per_second(job)
                    .map(|r| format!("  {}", human_rate(r)))
                    .unwrap_or_default()
            )?,
            JobState::Failed => writeln!(
                out,
                "failed     {}  {name} → {target}  {}",
                clock.show(at),
                job.error.as_ref().map(|e| e.meaning.as_str()).unwrap_or("")
            )?,
            _ => writeln!(
                out,
                "gone       {}  {name}  ({})",
                clock.show(at),
                gone_reason(job)
            )?,
        }
    }
    Ok(())
}

/// Why a job ended without its file being moved: what its `gone` event says (another agent
/// claimed it, it was replaced...), or that it disappeared.
pub fn gone_reason(job: &Job) -> &str {
    job.events
        .iter()
        .rev()
        .find(|event| event.event == "gone")
        .map_or("it disappeared before it was uploaded", |event| {
            event.detail.as_str()
        })
}

/// What the platform last said about a followed video's transcoding, in words.
/// One agent on a folder, in one line: who, whether it runs, what it holds claimed.
pub fn describe_agent(agent: &AgentOnFolder) -> String {
    let who = match (&agent.host, agent.pid) {
        (Some(host), Some(pid)) => format!("{} (host {}, pid {pid})", agent.agent, escaped(host)),
        _ => agent.agent.clone(),
    };
    let this = if agent.this_agent { ", this agent" } else { "" };
    let state = match (agent.active, agent.seen_secs_ago) {
        (true, Some(ago)) => format!("active, seen {ago} s ago"),
        (false, Some(ago)) => format!("stopped: not seen for {ago} s"),
        (_, None) => "stopped: no presence left".to_owned(),
    };
    let mode = match agent.shared {
        Some(true) => ", shared",
        Some(false) => ", not shared",
        None => "",
    };
    let claims = match agent.claims.len() {
        0 => String::new(),
        n => {
            let names: Vec<String> = agent
                .claims
                .iter()
                .take(5)
                .map(|name| escaped(name).to_string())
                .collect();
            let more = if n > 5 {
                format!(" and {} more", n - 5)
            } else {
                String::new()
            };
            let taken = if agent.active {
                ""
            } else {
                " (taken over after claim_lease)"
            };
            format!("; {n} claimed: {}{more}{taken}", names.join(", "))
        }
    };
    format!("{who}{this}: {state}{mode}{claims}")
}

pub fn transcoding_said(video: &FollowedVideo) -> String {
    match &video.last_answer {
        Some(said) => said.clone(),
        None => "not asked yet".to_owned(),
    }
}

/// A destination's backlog in one line, for `status` and the page: `NOTIFICATIONS FAILING`
/// while its deliveries fail (a backlog that grows for hours must be seen), else how many wait
/// (an e-mail batch waiting out its window, a destination just taking them).
pub fn notification_line(backlog: &NotifyBacklog, clock: &ReportClock) -> String {
    let oldest = backlog
        .oldest
        .map(|at| format!(", the oldest from {} ({})", clock.show(at), clock.ago(at)))
        .unwrap_or_default();
    match backlog.failing_since {
        Some(since) => format!(
            "NOTIFICATIONS FAILING since {} ({}): {} waiting for {}{oldest}; last error: {}",
            clock.show(since),
            clock.ago(since),
            backlog.pending,
            backlog.shown,
            escaped(backlog.last_error.as_deref().unwrap_or("unknown")),
        ),
        None => format!(
            "notifications: {} waiting for {}{oldest}",
            backlog.pending, backlog.shown
        ),
    }
}

/// The report as one JSON object. Paths are text (a name that is not UTF-8 gets U+FFFD): a
/// JSON string holds text only, and serializing such a path as it is would fail.
pub fn to_json(snapshot: &StatusSnapshot) -> serde_json::Value {
    let job_json = |job: &Job| {
        let shown = match job.state {
            JobState::Waiting | JobState::Uploading | JobState::Paused => snapshot.shown_state(job),
            state => state.as_str(),
        };
        serde_json::json!({
            "id": job.id,
            "path": job.path.to_string_lossy(),
            "state": job.state.as_str(),
            "shown_as": shown,
            "size": job.size,
            "video_id": job.video_id,
            "next_chunk": job.next_chunk,
            "total_chunks": job.total_chunks,
            "bytes_sent": job.bytes_sent,
            "bytes_per_second": bytes_per_second(job),
            "attempts": job.attempts,
            "pause_reason": job.pause_reason,
            "error": job.error,
            "destination": job.destination.as_ref().map(|d| d.to_string_lossy()),
            "detected_at": rfc3339(job.detected_at),
            "started_at": job.started_at.map(rfc3339),
            "finished_at": job.finished_at.map(rfc3339),
        })
    };
    let counts = &snapshot.counts;
    serde_json::json!({
        "state_store": snapshot.store_path.to_string_lossy(),
        "summary": {
            "settling": snapshot.settling.len(),
            "waiting": counts.waiting, "uploading": counts.uploading, "paused": counts.paused,
            "trying": counts.trying, "finishing": counts.finishing, "done": counts.done,
            "failed": counts.failed,
        },
        "bandwidth": snapshot.bandwidth.as_ref().map(BandwidthNow::to_json),
        "chunk_size_cap": snapshot.chunk_cap.as_ref().map(|cap| serde_json::json!({
            "max": cap.max,
            "refused": cap.refused,
            "refused_at": rfc3339(OffsetDateTime::from(cap.at)),
            "until": rfc3339(OffsetDateTime::from(cap.expires())),
            "text": format!("auto, {}", describe_cap(cap)),
        })),
        "queue_paused": snapshot.pause.as_ref().map(|(reason, since)| serde_json::json!({
            "reason": reason,
            "since": rfc3339(*since),
        })),
        "held_video_managers": snapshot.held.iter().map(|held| serde_json::json!({
            "video_manager_id": held.id,
            "reason": held.reason,
            "since": rfc3339(held.since),
        })).collect::<Vec<_>>(),
        "agents": snapshot.agents.iter().map(|(folder, agents)| serde_json::json!({
            "folder": folder.to_string_lossy(),
            "agents": agents,
        })).collect::<Vec<_>>(),
        "folders_not_answering": snapshot.not_answering.iter()
            .map(|folder| folder.to_string_lossy()).collect::<Vec<_>>(),
        "missing_folders": snapshot.missing.iter().map(|folder| serde_json::json!({
            "path": folder.path.to_string_lossy(),
            "why": folder.why,
            "since": rfc3339(folder.since),
        })).collect::<Vec<_>>(),
        "folders": snapshot.watched.iter().map(|folder| serde_json::json!({
            "path": folder.path.to_string_lossy(),
            "watch_mode": folder.mode,
            "events": folder.events,
            "polling_every_seconds": folder.polling_every.map(|every| every.as_secs_f64()),
            "file_system": folder.file_system,
            "network": folder.network,
            "watch_limit_sysctl": folder.limit_sysctl,
        })).collect::<Vec<_>>(),
        "settling": snapshot.settling.iter().map(|file| serde_json::json!({
            "path": file.path.to_string_lossy(),
            "folder": file.folder.to_string_lossy(),
            "size": file.size,
            "unchanged_since": rfc3339(file.since),
            "stable_for_seconds": file.stable_for.as_secs_f64(),
            "complete_at": rfc3339(file.since + file.stable_for),
            "waiting_for": file.waiting_for,
        })).collect::<Vec<_>>(),
        "notifications_pending": snapshot.notifications.iter().map(|b| b.pending).sum::<u64>(),
        "notifications": snapshot.notifications.iter().map(|backlog| serde_json::json!({
            "destination": backlog.label,
            "shown": backlog.shown,
            "pending": backlog.pending,
            "oldest": backlog.oldest.map(rfc3339),
            "failing_since": backlog.failing_since.map(rfc3339),
            "last_error": backlog.last_error,
        })).collect::<Vec<_>>(),
        "jobs": snapshot.unfinished.iter().map(job_json).collect::<Vec<_>>(),
        "transcoding": snapshot.transcoding.iter().map(|video| serde_json::json!({
            "path": video.path.to_string_lossy(),
            "destination": video.destination.as_ref().map(|d| d.to_string_lossy()),
            "video_id": video.video_id,
            "uploaded_at": rfc3339(video.since),
            "polls": video.polls,
            "last_poll_at": video.last_poll_at.map(rfc3339),
            "last_answer": video.last_answer,
            "qualities": video.qualities,
        })).collect::<Vec<_>>(),
        "recent": snapshot.recent.iter().map(job_json).collect::<Vec<_>>(),
    })
}

/// The line `status` and the page show for a folder whose `.hotfolder/` did not answer.
pub fn not_answering_line(folder: &std::path::Path) -> String {
    format!(
        "FOLDER NOT ANSWERING: {}: reading it took longer than {} s (a hung network share?); the agents and claims there are not shown",
        escaped(folder),
        crate::shared_folder::SURVEY_WAIT.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn times_are_local_to_the_second_and_ages_are_coarse() {
        let now = at(1_800_000_000) + time::Duration::nanoseconds(349_151_399);
        let clock = ReportClock::fixed(now, UtcOffset::from_hms(5, 30, 0).unwrap());
        // 2027-01-15 08:00:00 UTC
        assert_eq!(clock.show(now), "2027-01-15 13:30:00");
        assert_eq!(clock.ago(now - time::Duration::seconds(45)), "45 s ago");
        assert_eq!(clock.ago(now - time::Duration::minutes(12)), "12 min ago");
        assert_eq!(clock.ago(now - time::Duration::hours(5)), "5 h ago");
        assert_eq!(clock.ago(now - time::Duration::days(3)), "3 days ago");
        assert_eq!(clock.ago(now), "just now");
    }

    #[test]
    fn videos_whose_transcoding_is_followed_are_listed_with_what_the_platform_said() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("state")).unwrap();
        store.set_transcoding_folders(&[dir.path()]).unwrap();
        let id = match store
            .enqueue_many(&[crate::store::NewJob {
                folder: dir.path().to_path_buf(),
                path: dir.path().join("clip.mov"),
                rel_path: "clip.mov".into(),
                size: 10,
                mtime_ns: 0,
                rule: "test".into(),
            }])
            .unwrap()[0]
        {
            crate::store::Enqueued::New(id) => id,
            other => panic!("{other:?}"),
        };
        store.start_attempt(id).unwrap();
        store.record_video(id, "v-9").unwrap();
        store
            .decide(id, crate::store::Outcome::Uploaded, None, None)
            .unwrap();
        store
            .mark_moved(id, &dir.path().join("done/clip.mov"))
            .unwrap();
        let clock = ReportClock::fixed(OffsetDateTime::now_utc(), UtcOffset::UTC);
        let text = |store: &JobStore| {
            let snapshot = StatusSnapshot::read(store, 10, None).unwrap();
            let mut out = Vec::new();
            write_text(&snapshot, &clock, &mut out).unwrap();
            (String::from_utf8(out).unwrap(), to_json(&snapshot))
        };
        let (shown, json) = text(&store);
        let line = shown
            .lines()
            .find(|l| l.starts_with("transcoding"))
            .unwrap_or_else(|| panic!("{shown}"));
        assert!(
            line.contains("clip.mov")
                && line.contains("video v-9")
                && line.ends_with("not asked yet"),
            "{line}"
        );
        assert_eq!(json["transcoding"][0]["video_id"], "v-9");
        assert_eq!(json["transcoding"][0]["polls"], 0);

        store
            .record_transcoding_poll(
                id,
                OffsetDateTime::now_utc(),
                "0 of 3 qualities done",
                Some(&[]),
            )
            .unwrap();
        let (shown, json) = text(&store);
        assert!(shown.contains(": 0 of 3 qualities done"), "{shown}");
        assert_eq!(
            json["transcoding"][0]["last_answer"],
            "0 of 3 qualities done"
        );
        store
            .end_transcoding(
                id,
                OffsetDateTime::now_utc(),
                crate::store::TranscodingEnd::Gone,
                "404",
                &[],
                None,
            )
            .unwrap();
        let (shown, json) = text(&store);
        assert!(!shown.contains("transcoding"), "{shown}");
        assert_eq!(json["transcoding"], serde_json::json!([]));
    }

    #[test]
    fn the_rate_counts_the_chunks_time_not_the_waiting_around_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = match store
            .enqueue_many(&[crate::store::NewJob {
                folder: dir.path().to_path_buf(),
                path: dir.path().join("a.mov"),
                rel_path: "a.mov".into(),
                size: 483_000_000,
                mtime_ns: 0,
                rule: "test".into(),
            }])
            .unwrap()[0]
        {
            crate::store::Enqueued::New(id) => id,
            other => panic!("{other:?}"),
        };
        store.start_attempt(id).unwrap();
        store
            .record_progress(
                id,
                2,
                2,
                1,
                241_500_000,
                std::time::Duration::from_millis(500),
            )
            .unwrap();
        store
            .record_progress(
                id,
                3,
                2,
                1,
                483_000_000,
                std::time::Duration::from_millis(500),
            )
            .unwrap();
        // Two chunks of half a second each, whatever time passed around them.
        let rate = bytes_per_second(&store.job(id).unwrap()).unwrap();
        assert!((rate - 483e6).abs() < 1.0, "{rate}");

        store
            .decide(id, crate::store::Outcome::Uploaded, Some("abc"), None)
            .unwrap();
        store
            .mark_moved(id, &dir.path().join("done/a.mov"))
            .unwrap();
        let rate = bytes_per_second(&store.job(id).unwrap()).unwrap();
        assert!((rate - 483e6).abs() < 1.0, "{rate}");

        assert_eq!(
            store.job(id).unwrap().sending,
            std::time::Duration::from_secs(1)
        );
    }
}
