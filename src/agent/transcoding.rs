//! The agent's side of following transcoding (`follow_transcoding`, see
//! `crate::transcoding`): which folders follow, told to the store at start and at each
//! reload; the task that follows, started with `run`; and the platform it asks, the agent's
//! client of the moment (a reload replaces it) in the VideoManager the video went to.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::chain;
use crate::config::Settings;
use crate::store::{FollowedVideo, JobStore, StoreError};
use crate::transcoding::{PollAnswer, Schedule, TranscodingSource, follow};
use crate::vmpro::api::VideoPresence;

/// How long one question to the platform may take (its retries included) before it counts as
/// failed and waits for the next poll.
const PLATFORM_PATIENCE: Duration = Duration::from_secs(60);

/// Tells the store which folders' uploads are followed from now on.
pub(super) fn set_followed_folders(store: &JobStore, settings: &Settings) {
    let folders: Vec<&Path> = settings
        .folders
        .iter()
        .filter(|folder| folder.follow_transcoding)
        .map(|folder| folder.path.as_path())
        .collect();
    if let Err(err) = store.set_transcoding_folders(&folders) {
        tracing::error!(
            "cannot record which folders follow transcoding (uploads finishing now may not be followed): {}",
            chain(&err)
        );
    }
}

/// Starts following, until `stop`.
pub(super) fn start(shared: &Arc<Shared>, stop: &CancellationToken) {
    let source = AgentPlatform {
        shared: shared.clone(),
        stop: stop.clone(),
    };
    shared.tasks.spawn(follow(
        shared.store.clone(),
        source,
        Schedule::for_run(),
        OffsetDateTime::now_utc,
        stop.clone(),
    ));
}

/// The platform as the agent asks it.
struct AgentPlatform {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl TranscodingSource for AgentPlatform {
    fn poll(&self, video: &FollowedVideo) -> impl Future<Output = PollAnswer> + Send {
        let video_manager = video
            .video_manager_id
            .or_else(|| self.shared.settings().video_manager_of(&video.folder));
        let platform = video_manager.map(|id| self.shared.platform().for_video_manager(id));
        let video_id = video.video_id.clone();
        let stop = self.stop.clone();
        async move {
            // Never guessed: asking the account's VideoManager could read another one's video.
            let Some(platform) = platform else {
                return PollAnswer::Failed(
                    "no VideoManager recorded for it and its folder is no longer configured"
                        .to_owned(),
                );
            };
            let asked = tokio::time::timeout(
                PLATFORM_PATIENCE,
                platform.transcoding_status(&video_id, &stop),
            )
            .await;
            match asked {
                Ok(Ok(Some(qualities))) => PollAnswer::Qualities(qualities),
                // A 404 is the video's only when the platform says so twice: the video route
                // answers 404 too and its VideoManager answers for itself (as retention reads
                // it). A gateway's or an unknown VideoManager's 404 is asked again next time.
                Ok(Ok(None)) => match platform.video_presence(&video_id, &stop).await {
                    Ok(VideoPresence::Gone) => PollAnswer::Gone,
                    Ok(VideoPresence::Present) => PollAnswer::Failed(format!(
                        "transcoding-status answered 404 for video {video_id}, but the video is there"
                    )),
                    Ok(VideoPresence::Unsure(why)) => PollAnswer::Failed(why),
                    Err(err) => PollAnswer::Failed(format!(
                        "transcoding-status answered 404 and the video could not be looked up: {}",
                        chain(&err)
                    )),
                },
                Ok(Err(err)) => PollAnswer::Failed(chain(&err)),
                Err(_) => PollAnswer::Failed(format!(
                    "no answer within {} s",
                    PLATFORM_PATIENCE.as_secs()
                )),
            }
        }
    }

    /// A quarter of `api_requests_per_minute` at most (25 a minute on the platform's 100).
    fn spacing(&self) -> Duration {
        let per_minute = self.shared.settings().upload.api_requests_per_minute.max(1);
        Duration::from_secs(60 * 4) / per_minute
    }

    fn store_failed(&self, what: &str, err: &StoreError) {
        self.shared.store_failed(what, err);
    }

    fn store_writable(&self) -> bool {
        self.shared.store_health.is_writable()
    }
}
