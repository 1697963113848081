//! What `hotfolder status` shows: the queue read from the state store (which `run` keeps up to
//! date from another process), as text for people or JSON for scripts.
//!
//! Text shows times in local time to the second; JSON keeps RFC 3339 UTC. Both agree on what
//! each job is shown as: while the whole queue is paused, nothing waits or uploads (see
//! [`ShownCounts`]).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::agent::{ShownCounts, queue_counts};
use crate::config::{human_rate, human_size};
use crate::escape::escaped;
use crate::store::{Job, JobState, JobStore, MissingFolder, SettlingFile, StoreError};

/// How many settling files the text lists: a folder that just received 10,000 files would
/// bury the rest of the report.
const SETTLING_SHOWN: usize = 20;

/// Everything `status` shows, read from the store in one go.
pub struct StatusSnapshot {
    pub store_path: PathBuf,
    pub counts: ShownCounts,
    /// Why the whole queue is paused, and since when.
    pub pause: Option<(String, OffsetDateTime)>,
    pub missing: Vec<MissingFolder>,
    /// Files waiting out `stable_for`, without those that already have a job (the agent
    /// records a file's job before the next batch of settling changes says it is complete).
    pub settling: Vec<SettlingFile>,
    pub unfinished: Vec<Job>,
    /// Done, failed and gone jobs, most recently finished first.
    pub recent: Vec<Job>,
}

impl StatusSnapshot {
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
            missing: store.missing_folders()?,
            recent: store.recent_finished(recent)?,
            pause,
            settling,
            unfinished,
        })
    }

    /// What an unfinished job is shown as (see [`ShownCounts`]).
    fn shown_state(&self, job: &Job) -> &'static str {
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

/// The average upload rate of a job, in bytes per second: up to now while it uploads, up to
/// the end of its upload once it is over (not up to now: a file uploaded at 460 MiB/s an hour
/// ago would show as a few hundred kB/s). The same figure as the sidecar's.
pub fn bytes_per_second(job: &Job, now: OffsetDateTime) -> Option<f64> {
    let started = job.started_at?;
    let until = match job.state {
        JobState::Waiting | JobState::Uploading | JobState::Paused => now,
        JobState::Finishing | JobState::Done | JobState::Failed | JobState::Gone => {
            job.finished_at?
        }
    };
    let secs = (until - started).as_seconds_f64();
    (secs > 0.0 && job.bytes_sent > 0).then(|| job.bytes_sent as f64 / secs)
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
    for file in snapshot.settling.iter().take(SETTLING_SHOWN) {
        writeln!(
            out,
            "settling   {}  {}, unchanged since {}; complete at {} if it stays so",
            escaped(&file.path),
            human_size(file.size),
            clock.show(file.since),
            clock.show(file.since + file.stable_for),
        )?;
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
                bytes_per_second(job, clock.now)
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
                bytes_per_second(job, clock.now)
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
                "gone       {}  {name}  (it disappeared before it was uploaded)",
                clock.show(at)
            )?,
        }
    }
    Ok(())
}

/// The report as one JSON object. Paths are text (a name that is not UTF-8 gets U+FFFD): a
/// JSON string holds text only, and serializing such a path as it is would fail.
pub fn to_json(snapshot: &StatusSnapshot, clock: &ReportClock) -> serde_json::Value {
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
            "bytes_per_second": bytes_per_second(job, clock.now),
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
        "queue_paused": snapshot.pause.as_ref().map(|(reason, since)| serde_json::json!({
            "reason": reason,
            "since": rfc3339(*since),
        })),
        "missing_folders": snapshot.missing.iter().map(|folder| serde_json::json!({
            "path": folder.path.to_string_lossy(),
            "why": folder.why,
            "since": rfc3339(folder.since),
        })).collect::<Vec<_>>(),
        "settling": snapshot.settling.iter().map(|file| serde_json::json!({
            "path": file.path.to_string_lossy(),
            "folder": file.folder.to_string_lossy(),
            "size": file.size,
            "unchanged_since": rfc3339(file.since),
            "stable_for_seconds": file.stable_for.as_secs_f64(),
            "complete_at": rfc3339(file.since + file.stable_for),
        })).collect::<Vec<_>>(),
        "jobs": snapshot.unfinished.iter().map(job_json).collect::<Vec<_>>(),
        "recent": snapshot.recent.iter().map(job_json).collect::<Vec<_>>(),
    })
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
    fn a_finished_upload_keeps_the_rate_it_had() {
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
        store.record_progress(id, 2, 2, 1, 241_500_000).unwrap();
        store.record_progress(id, 3, 2, 1, 483_000_000).unwrap();
        let mut job = store.job(id).unwrap();
        let started = job.started_at.unwrap();
        let one_second_later = started + time::Duration::seconds(1);
        let rate = bytes_per_second(&job, one_second_later).unwrap();
        assert!((rate - 483e6).abs() < 1.0, "{rate}");

        store
            .decide(id, crate::store::Outcome::Uploaded, Some("abc"), None)
            .unwrap();
        store
            .mark_moved(id, &dir.path().join("done/a.mov"))
            .unwrap();
        job = store.job(id).unwrap();
        // As the store records it: one second from the start to the end of the upload.
        job.finished_at = Some(started + time::Duration::seconds(1));
        let an_hour_later = started + time::Duration::hours(1);
        let rate = bytes_per_second(&job, an_hour_later).unwrap();
        assert!((rate - 483e6).abs() < 1.0, "{rate}");
    }
}
