//! Following a video to the end (`follow_transcoding = true`): after a file of such a folder
//! is uploaded and in done/, the agent asks the platform how far it has transcoded the video
//! (`GET …/videos/{id}/transcoding-status`), at first after [`Schedule::STANDARD`]'s 30 s and
//! then less and less often (up to every 5 minutes), for up to 2 hours after the upload's end.
//! When every quality is done the sidecar gains a `transcoding` record and a `transcoded`
//! event is sent; when the 2 hours pass first, the sidecar says so and `transcoding_slow` is
//! sent. A 404 means the video was deleted (once the video route and its VideoManager confirm
//! it, see `agent::transcoding`): recorded, and following stops without an event.
//!
//! What is followed lives in the state store (`store/transcoding.rs`), written with the job's
//! end, so following survives `kill -9` and a restart resumes with the time spent counted:
//! the limit runs from the upload's end, and the next poll is due a delay after the last one.
//! One task polls one video at a time, and no faster than [`TranscodingSource::spacing`]
//! (the agent's: a quarter of the API's requests per minute), so following never takes more
//! than that from the budget uploads share.
//!
//! The task takes its clock and the platform as arguments ([`TranscodingSource`]), so the
//! schedule is tested on paused tokio time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::escape::escaped;
use crate::finish::{SidecarUpdateError, TranscodingRecord, add_transcoding};
use crate::retention::age_in_words;
use crate::store::{FollowedVideo, JobEvent, JobStore, StoreError, TranscodingEnd};
use crate::vmpro::transcoding::{QualityStatus, all_completed};

/// How long to wait before asking a failing state store again.
const STORE_RETRY: Duration = Duration::from_secs(10);

/// When the platform is asked about a followed video, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The wait before the first poll (counted from the upload's end), doubled after each poll.
    pub first: Duration,
    /// The longest wait between two polls.
    pub cap: Duration,
    /// How long after the upload's end transcoding may take before it counts as slow.
    pub limit: Duration,
}

impl Schedule {
    /// 30 s, 1, 2, 4 min, then every 5 min up to 2 h: about 27 requests per video, a few
    /// while the video is fresh (most finish within minutes) and few for a slow one.
    pub const STANDARD: Schedule = Schedule {
        first: Duration::from_secs(30),
        cap: Duration::from_secs(300),
        limit: Duration::from_secs(2 * 3600),
    };

    /// The schedule `run` follows: [`Schedule::STANDARD`]. Debug builds only:
    /// `HOTFOLDER_TEST_TRANSCODING_POLL_MS=<ms>` sets the first wait (the longest is ten
    /// times that) and `HOTFOLDER_TEST_TRANSCODING_LIMIT_MS=<ms>` the limit, so that tests of
    /// the binary need not wait for hours.
    pub fn for_run() -> Schedule {
        #[cfg(debug_assertions)]
        {
            let ms = |name: &str| {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis)
            };
            let mut schedule = Schedule::STANDARD;
            if let Some(first) = ms("HOTFOLDER_TEST_TRANSCODING_POLL_MS") {
                schedule.first = first;
                schedule.cap = first * 10;
            }
            if let Some(limit) = ms("HOTFOLDER_TEST_TRANSCODING_LIMIT_MS") {
                schedule.limit = limit;
            }
            schedule
        }
        #[cfg(not(debug_assertions))]
        Schedule::STANDARD
    }

    /// The wait after `polls` polls before the next: `first`, doubled each time, at most `cap`.
    pub fn delay_after(&self, polls: u32) -> Duration {
        self.first.saturating_mul(1 << polls.min(20)).min(self.cap)
    }

    /// When following a video that ended its upload at `since` gives up.
    pub fn deadline(&self, since: OffsetDateTime) -> OffsetDateTime {
        since + self.limit
    }

    /// When `video` is asked about next: a delay after its last poll (or its upload's end),
    /// and never after its deadline, so that the last look is made at the deadline itself.
    pub fn next_poll(&self, video: &FollowedVideo) -> OffsetDateTime {
        let last = video.last_poll_at.unwrap_or(video.since);
        (last + self.delay_after(video.polls)).min(self.deadline(video.since))
    }
}

/// What one poll learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAnswer {
    Qualities(Vec<QualityStatus>),
    /// 404: the platform no longer has the video.
    Gone,
    /// No answer that says anything (the network, a 5xx after its retries, a body that is not
    /// a transcoding status): asked again at the next poll. The reason, in words.
    Failed(String),
}

/// What following needs from its surroundings: the platform's answer for a video, and where
/// a failing state store is reported (the agent pauses uploads on it).
pub trait TranscodingSource: Send + Sync {
    fn poll(&self, video: &FollowedVideo) -> impl Future<Output = PollAnswer> + Send;

    /// A store call failed; `what` could not be done.
    fn store_failed(&self, what: &str, err: &StoreError) {
        tracing::error!("{what}: {}", chain(err));
    }

    /// The least time between two polls, of any videos: many videos due at once (after a
    /// restart, after a batch) are asked about at this pace, leaving the rest of the API's
    /// request budget to uploads.
    fn spacing(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether the store can be written now; while it cannot, nothing is polled (an answer
    /// that cannot be recorded would be asked for again and again).
    fn store_writable(&self) -> bool {
        true
    }
}

/// Follows every video the store lists until `stop`: the one due first is polled when its
/// time comes, one at a time, and what it said is recorded. New videos are found by reading
/// the store again at least every [`Schedule::first`], soon enough for their first poll.
/// `clock` is the wall clock (a test's runs on paused tokio time).
pub async fn follow(
    store: Arc<JobStore>,
    source: impl TranscodingSource,
    schedule: Schedule,
    clock: impl Fn() -> OffsetDateTime + Send + Sync,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let listed = if source.store_writable() {
            store.transcoding_followed().map(Some)
        } else {
            Ok(None)
        };
        let nap = match listed {
            Ok(None) => STORE_RETRY,
            Ok(Some(videos)) => {
                let now = clock();
                let due = videos
                    .into_iter()
                    .map(|video| (schedule.next_poll(&video), video))
                    .min_by_key(|(at, video)| (*at, video.job_id));
                match due {
                    Some((at, video)) if at <= now => {
                        if poll_once(&store, &source, &schedule, &clock, &video, &stop).await {
                            source.spacing()
                        } else {
                            // Not recorded: asked again once the store may take it.
                            STORE_RETRY
                        }
                    }
                    Some((at, _)) => duration_between(now, at).min(schedule.first),
                    None => schedule.first,
                }
            }
            Err(err) => {
                source.store_failed("cannot read the videos whose transcoding is followed", &err);
                STORE_RETRY
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// `to - from`, or zero when `to` is not later.
fn duration_between(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

/// Asks about one video and records what it said, ending the following when it is done,
/// gone, or out of time. `false` when what it said could not be recorded.
async fn poll_once(
    store: &Arc<JobStore>,
    source: &impl TranscodingSource,
    schedule: &Schedule,
    clock: &impl Fn() -> OffsetDateTime,
    video: &FollowedVideo,
    stop: &CancellationToken,
) -> bool {
    let answer = tokio::select! {
        biased;
        _ = stop.cancelled() => return true,
        answer = source.poll(video) => answer,
    };
    if stop.is_cancelled() {
        // An answer cut short by the stop is not recorded: the poll is made after the restart.
        return true;
    }
    let at = clock();
    let out_of_time = at >= schedule.deadline(video.since);
    let name = escaped(&video.rel_path).to_string();
    let ending = match answer {
        PollAnswer::Gone => Ending {
            end: TranscodingEnd::Gone,
            summary: format!(
                "the platform no longer has video {} (404): it was deleted before it was seen transcoded",
                video.video_id
            ),
            qualities: video.qualities.clone(),
        },
        PollAnswer::Qualities(qualities) if all_completed(&qualities) => Ending {
            end: TranscodingEnd::Transcoded,
            summary: format!(
                "every quality transcoded {} after the upload: {}",
                age_in_words(duration_between(video.since, at)),
                names(&qualities, true)
            ),
            qualities,
        },
        PollAnswer::Qualities(qualities) if out_of_time => Ending {
            end: TranscodingEnd::Slow,
            summary: format!(
                "not transcoded {} after the upload: {}",
                age_in_words(schedule.limit),
                progress(&qualities)
            ),
            qualities,
        },
        PollAnswer::Failed(why) if out_of_time => Ending {
            end: TranscodingEnd::Slow,
            summary: format!(
                "not seen transcoded {} after the upload (the last try to ask the platform failed: {why})",
                age_in_words(schedule.limit)
            ),
            qualities: video.qualities.clone(),
        },
        PollAnswer::Qualities(qualities) => {
            let said = progress(&qualities);
            tracing::debug!(file = %name, video_id = %video.video_id, "transcoding: {said}");
            return record_poll(store, source, video, at, &said, Some(&qualities));
        }
        PollAnswer::Failed(why) => {
            // Once per kind of trouble, not at every poll.
            if video.last_answer.as_deref() != Some(why.as_str()) {
                tracing::warn!(
                    file = %name,
                    video_id = %video.video_id,
                    "cannot ask the platform how far video {} is transcoded (asked again later): {why}",
                    video.video_id
                );
            }
            return record_poll(store, source, video, at, &why, None);
        }
    };
    conclude(store, source, video, at, ending).await
}

/// How following a video ends, before it is recorded.
struct Ending {
    end: TranscodingEnd,
    summary: String,
    qualities: Vec<QualityStatus>,
}

fn record_poll(
    store: &JobStore,
    source: &impl TranscodingSource,
    video: &FollowedVideo,
    at: OffsetDateTime,
    said: &str,
    qualities: Option<&[QualityStatus]>,
) -> bool {
    match store.record_transcoding_poll(video.job_id, at, said, qualities) {
        Ok(()) => true,
        Err(err) => {
            source.store_failed(
                &format!(
                    "cannot record the transcoding status of video {}",
                    video.video_id
                ),
                &err,
            );
            false
        }
    }
}

/// Ends following `video`: the sidecar first (rewritten whole; a kill before the store
/// records the end rewrites it again, the same), then, in one store transaction, the end, a
/// line in the job's log and the event. A sidecar that cannot be updated (moved away from
/// done/, no longer this upload's) is noted in the store and the log; the event goes anyway.
async fn conclude(
    store: &Arc<JobStore>,
    source: &impl TranscodingSource,
    video: &FollowedVideo,
    at: OffsetDateTime,
    ending: Ending,
) -> bool {
    let name = escaped(&video.rel_path).to_string();
    if let Err(err) =
        store.record_transcoding_poll(video.job_id, at, &ending.summary, Some(&ending.qualities))
    {
        source.store_failed("cannot record the end of following a video", &err);
        return false;
    }
    let record = TranscodingRecord {
        status: ending.end.as_str().to_owned(),
        finished_at: (ending.end == TranscodingEnd::Transcoded).then_some(at),
        followed_until: at,
        qualities: ending.qualities.clone(),
        polls: video.polls + 1,
        summary: ending.summary.clone(),
    };
    let event = JobEvent {
        at,
        event: ending.end.log_event().to_owned(),
        detail: ending.summary.clone(),
    };
    let sidecar_note = match &video.destination {
        None => "not added to a sidecar: the file was removed before it could be moved to done/"
            .to_owned(),
        Some(dest) => {
            let job = match store.job(video.job_id) {
                Ok(job) => job,
                Err(err) => {
                    source.store_failed("cannot read the job of a followed video", &err);
                    return false;
                }
            };
            let dest = dest.clone();
            let updated =
                tokio::task::spawn_blocking(move || add_transcoding(&dest, &job, &record, &event))
                    .await;
            match updated {
                Ok(Ok(path)) => format!("added to the sidecar {}", escaped(&path)),
                Ok(Err(err)) => {
                    let why = chain(&err);
                    if matches!(err, SidecarUpdateError::Gone { .. }) {
                        // The editor took the file and its sidecar from done/: theirs now.
                        tracing::info!(
                            file = %name,
                            video_id = %video.video_id,
                            "transcoding not recorded in a sidecar: {why}"
                        );
                    } else {
                        tracing::warn!(
                            file = %name,
                            video_id = %video.video_id,
                            "transcoding not recorded in the sidecar: {why}"
                        );
                    }
                    format!("not added to the sidecar: {why}")
                }
                Err(err) => format!("not added to the sidecar: {err}"),
            }
        }
    };
    let reason = (ending.end == TranscodingEnd::Slow).then_some(ending.summary.as_str());
    match store.end_transcoding(
        video.job_id,
        at,
        ending.end,
        &ending.summary,
        &[("sidecar", &sidecar_note)],
        reason,
    ) {
        Ok(true) => match ending.end {
            TranscodingEnd::Transcoded => tracing::info!(
                file = %name,
                video_id = %video.video_id,
                "transcoded: {}",
                ending.summary
            ),
            TranscodingEnd::Slow => tracing::warn!(
                file = %name,
                video_id = %video.video_id,
                "transcoding slow: {}",
                ending.summary
            ),
            TranscodingEnd::Gone => tracing::warn!(
                file = %name,
                video_id = %video.video_id,
                "stopped following the transcoding: {}",
                ending.summary
            ),
        },
        Ok(false) => {}
        Err(err) => {
            source.store_failed("cannot record the end of following a video", &err);
            return false;
        }
    }
    true
}

/// `360p, 720p` (the qualities `done` or not).
fn names(qualities: &[QualityStatus], done: bool) -> String {
    let listed: Vec<&str> = qualities
        .iter()
        .filter(|q| q.completed == done)
        .map(|q| q.quality.as_str())
        .collect();
    listed.join(", ")
}

/// How far transcoding is, in words: `1 of 3 qualities done (360p); 720p, 1080p not yet`.
pub fn progress(qualities: &[QualityStatus]) -> String {
    if qualities.is_empty() {
        return "no quality listed yet".to_owned();
    }
    let done = qualities.iter().filter(|q| q.completed).count();
    let mut text = format!("{done} of {} qualities done", qualities.len());
    if done > 0 {
        text.push_str(&format!(" ({})", names(qualities, true)));
    }
    if done < qualities.len() {
        text.push_str(&format!("; {} not yet", names(qualities, false)));
    }
    text
}

#[cfg(test)]
mod tests;
