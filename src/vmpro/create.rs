//! Creating a file's video without ever making a second one (vmpro-protocol.md section 4).
//!
//! The create-video call is not idempotent: when its answer is lost (a timeout after the
//! request went out, a connection reset, a 500/502/504, hotfolder killed before the id was
//! stored), the platform may have created the video anyway. So every create carries a marker
//! keyword unique to the job (`hotfolder-` and a random id) that the observer records, with
//! "a create is on its way", *before* the request is sent. When an outcome is unknown, the next
//! attempt looks the marker up first and adopts the video it finds; a search index may lag
//! behind a create, so an empty lookup is repeated ([`EMPTY_LOOKUP_REPEATS`] times, spread over
//! `lookup_wait`) before a new create. Once the video's id is recorded, the marker is removed
//! again (`GET …/keywords`, `DELETE …/keywords/{id}`) so that users never see it; that is
//! best effort, and a failure never fails the file.
//!
//! With `tag_videos = false` there is nothing to look up: an unknown outcome is reported as
//! [`VmproError::CreateUnconfirmed`] (the file goes to failed/ saying what to check) instead
//! of being repeated blindly.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::api::{
    Platform, SendingCheck, UploadObserver, VideoMetadata, created_video_id,
    percent_encode_segment, read_answer,
};
use super::error::{Blame, Disposition, Step, VmproError, excerpt};
use crate::chain;

/// Every marker keyword starts with this; the rest is a random id.
pub const MARKER_PREFIX: &str = "hotfolder-";

/// How often an empty lookup is looked at again before a new create is allowed.
pub const EMPTY_LOOKUP_REPEATS: u32 = 3;

/// Videos asked for per lookup: one is expected, more mean duplicates to report.
const LOOKUP_LIMIT: u32 = 10;

/// A new marker keyword: `hotfolder-` and 128 random bits, so no two jobs ever share one.
pub fn new_marker() -> String {
    format!("{MARKER_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether a keyword is one of hotfolder's markers.
pub fn is_marker(keyword: &str) -> bool {
    keyword
        .strip_prefix(MARKER_PREFIX)
        .is_some_and(|rest| !rest.is_empty())
}

/// What a previous attempt left for the create step, from the state store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateResume {
    /// The job's marker keyword, if a create was ever tagged with it.
    pub marker: Option<String>,
    /// A create was sent whose answer never settled: the video may exist.
    pub outcome_unknown: bool,
}

/// The file's video, and the marker to take off it (if it carries one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownVideo {
    pub id: String,
    pub marker: Option<String>,
    /// A create was sent after lookups came back empty: if the search lagged longer than
    /// `lookup_wait`, an earlier create's video may still turn up carrying the marker.
    pub recreated: bool,
}

/// How one create-video request failed.
struct FailedCreate {
    error: VmproError,
    /// The platform may have created the video anyway (the answer was lost or says nothing).
    maybe_created: bool,
    next: NextTry,
}

enum NextTry {
    /// Send it again after the policy's delay (at least `retry_after`).
    Retry(Option<Duration>),
    /// The platform says it made the video, but not which: look it up, and never create
    /// again (that would be a second video for sure).
    LookUpThenStop,
    /// 401, or a 403 that a token issued before a change of rights may explain: refresh the
    /// access token and send it again once.
    RefreshToken,
    Stop,
}

/// The file's video: found by the job's marker when a create may have made it, else created.
/// Never makes a second video for a create whose outcome is unknown.
pub(super) async fn create_or_find(
    platform: &Platform,
    file_name: &str,
    metadata: &VideoMetadata,
    resume: CreateResume,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> Result<KnownVideo, VmproError> {
    // The marker earlier creates of this job carried. A job tagged once keeps its marker even
    // if `tag_videos` was switched off since (its earlier creates can only be found by it);
    // one whose earlier creates went out untagged cannot look them up even if it was switched
    // on since: a new marker is only drawn for the job's first tagged create.
    let mut marker = resume.marker;
    let url = platform.videos_url("")?;
    let mut outcome_unknown = resume.outcome_unknown;
    // Why the last outcome is unknown, for the report when it cannot be looked up.
    let mut unknown_because: Option<VmproError> = None;
    let mut failed = 0u32;
    let mut refreshed = false;
    let mut recreated = false;
    // Create bodies cut short in a row by the check while the file was still ours.
    let mut checks_failed = 0u32;
    loop {
        if outcome_unknown {
            let Some(marker) = marker.as_deref() else {
                let why = match unknown_because {
                    Some(_) => "its answer was lost",
                    None => "hotfolder stopped before an answer naming the video was recorded",
                };
                return Err(VmproError::CreateUnconfirmed {
                    why: format!(
                        "{why}; it carried no marker keyword (tag_videos = false), so it cannot be looked up"
                    ),
                    source: unknown_because.map(Box::new),
                });
            };
            let found = find_patiently(platform, marker, shutdown, observer)
                .await
                .map_err(|err| unconfirmed_unless_passing(err, marker))?;
            if let Some((adopted, duplicates)) = found.split_first() {
                let found = Found {
                    adopted,
                    duplicates,
                    marker,
                    recreated,
                };
                return Ok(adopt(platform, found, shutdown, observer).await);
            }
            observer.event(
                "lookup",
                &format!(
                    "no video carries the marker {marker} after {} lookups over {:.1}s: the create made none; creating it again",
                    EMPTY_LOOKUP_REPEATS + 1,
                    platform.upload.lookup_wait.as_secs_f64()
                ),
            );
            outcome_unknown = false;
            recreated = true;
        }

        if marker.is_none() && platform.upload.tag_videos {
            marker = Some(new_marker());
        }
        let body = tagged_body(metadata, file_name, marker.as_deref());
        let token = platform.session.access_token(shutdown).await?;
        tokio::select! {
            _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
            _ = platform.pace() => {}
        }
        observer
            .create_sending(marker.as_deref())
            .map_err(|source| VmproError::NotRecorded {
                what: "that a create-video request is on its way",
                source,
            })?;
        // Not abandoned on shutdown once sent: the platform may create the video and answer
        // late, and a client that stopped listening would have to look it up after a restart.
        // `request_timeout` bounds the wait.
        let checked = CheckedJson::new(&body, observer.create_check());
        let refused = checked.refused.clone();
        let request = platform
            .transport
            .http
            .post(url.clone())
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap(checked));
        let answered = create_once(request, &url).await;
        if refused.load(Ordering::Relaxed) {
            // The body never went out whole, so the platform made no video.
            observer.create_settled();
            // The check is local and strict; the file server decides. Taken over: the agent
            // that took the file makes the video (or has made it) under the marker. Still ours
            // (the process was merely slow, and this confirmed it again): sent again at once;
            // again and again refused (a share that cannot confirm it now): a pause between.
            if !observer.may_continue() {
                return Err(VmproError::Cancelled);
            }
            after_failed_check(&mut checks_failed, shutdown).await?;
            continue;
        }
        let failure = match answered {
            Ok(id) => {
                observer.video_created(&id);
                observer.event("created", &format!("video {id} created"));
                return Ok(KnownVideo {
                    id,
                    marker,
                    recreated,
                });
            }
            Err(failure) => failure,
        };
        if failure.maybe_created {
            outcome_unknown = true;
        } else {
            observer.create_settled();
        }
        let retry_after = match failure.next {
            NextTry::Stop => return Err(failure.error),
            NextTry::LookUpThenStop => {
                if let Some(marker) = marker.as_deref() {
                    match find_patiently(platform, marker, shutdown, observer).await {
                        Ok(found) => {
                            if let Some((adopted, duplicates)) = found.split_first() {
                                let found = Found {
                                    adopted,
                                    duplicates,
                                    marker,
                                    recreated,
                                };
                                return Ok(adopt(platform, found, shutdown, observer).await);
                            }
                        }
                        Err(VmproError::Cancelled) => return Err(VmproError::Cancelled),
                        Err(err) => observer.event(
                            "lookup",
                            &format!("looking the video up failed: {}", chain(&err)),
                        ),
                    }
                }
                return Err(failure.error);
            }
            NextTry::RefreshToken if refreshed => return Err(failure.error),
            NextTry::RefreshToken => {
                refreshed = true;
                observer.event(
                    "token",
                    &format!(
                        "create video: refused ({}); trying once more with a fresh token",
                        failure.error.status().unwrap_or_default()
                    ),
                );
                platform.session.invalidate(&token).await;
                continue;
            }
            NextTry::Retry(retry_after) => retry_after,
        };
        if failure.maybe_created && marker.is_none() {
            return Err(VmproError::CreateUnconfirmed {
                why: "its answer was lost; it carried no marker keyword (tag_videos = false), so it cannot be looked up".into(),
                source: Some(Box::new(failure.error)),
            });
        }
        failed += 1;
        let policy = &platform.transport.policy;
        if !policy.may_retry(failed) {
            return Err(VmproError::GaveUp {
                step: Step::CreateVideo,
                attempts: failed,
                last: Box::new(failure.error),
            });
        }
        let delay = policy.delay(failed, retry_after);
        let next = if failure.maybe_created {
            "looking the video up by its marker"
        } else {
            "trying again"
        };
        observer.event(
            "retry",
            &format!(
                "{}; {next} in {:.1}s (try {} of {})",
                chain(&failure.error),
                delay.as_secs_f64(),
                failed + 1,
                policy.max_attempts
            ),
        );
        if failure.maybe_created {
            unknown_because = Some(failure.error);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Between sends (a create, a chunk) whose claim the file server cannot confirm now (a share
/// that dropped): the body's check would cut each one short.
const CHECK_FAILED_PAUSE: Duration = Duration::from_secs(1);

/// Counts a send cut short by the claim check while the claim is still this agent's, and
/// waits [`CHECK_FAILED_PAUSE`] before the next one unless it is the first in a row (a claim
/// confirmed again goes at once). `Cancelled` at shutdown.
pub(super) async fn after_failed_check(
    checks_failed: &mut u32,
    shutdown: &CancellationToken,
) -> Result<(), VmproError> {
    *checks_failed += 1;
    if *checks_failed > 1 {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
            _ = tokio::time::sleep(CHECK_FAILED_PAUSE) => {}
        }
    }
    Ok(())
}

/// The create-video body, handed to the connection only if the observer's sending check still
/// passes at that moment. A process stopped (`SIGSTOP`, a frozen VM) after it recorded "a
/// create is on its way" but before the request left may wake after another agent took its
/// file over, looked the marker up, found nothing and created the video itself: the late
/// create would be a second video. The check is the one chunk bodies ask (the claim confirmed
/// within half a lease, no I/O), asked as late as it can be: when the body is written.
struct CheckedJson {
    data: Option<Bytes>,
    len: u64,
    check: Option<SendingCheck>,
    /// Set when the check failed and the body was cut short.
    refused: Arc<AtomicBool>,
}

impl CheckedJson {
    fn new(body: &Value, check: Option<SendingCheck>) -> CheckedJson {
        let data = Bytes::from(body.to_string());
        CheckedJson {
            len: data.len() as u64,
            data: Some(data),
            check,
            refused: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl hyper::body::Body for CheckedJson {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let Some(data) = self.data.take() else {
            return Poll::Ready(None);
        };
        if let Some(check) = &self.check
            && !check()
        {
            self.refused.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(std::io::Error::other(
                "the file's claim was not confirmed recently enough to create its video",
            ))));
        }
        Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

/// The create-video body with the marker added to the folder's keywords.
fn tagged_body(metadata: &VideoMetadata, file_name: &str, marker: Option<&str>) -> Value {
    let mut body = metadata.create_body(file_name);
    if let (Some(marker), Value::Object(fields)) = (marker, &mut body) {
        let keywords = fields
            .entry("keywords")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = keywords {
            list.push(Value::from(marker));
        }
    }
    body
}

/// Sends one create-video request and says what its answer means.
async fn create_once(request: reqwest::RequestBuilder, url: &Url) -> Result<String, FailedCreate> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            // A connection that was never made carried no request; a timeout or a reset after
            // it was made may come after the platform acted on it.
            let never_sent = err.is_connect() || err.is_builder();
            let next = if err.is_builder() {
                NextTry::Stop
            } else {
                NextTry::Retry(None)
            };
            return Err(FailedCreate {
                error: VmproError::from_transport(Step::CreateVideo, err),
                maybe_created: !never_sent,
                next,
            });
        }
    };
    let answer = read_answer(Step::CreateVideo, response)
        .await
        .map_err(|error| FailedCreate {
            error,
            maybe_created: true,
            next: NextTry::Retry(None),
        })?;
    match answer.disposition(Step::CreateVideo) {
        // A 2xx whose Location names no video: the platform says it made one, not which.
        Disposition::Accepted => created_video_id(&answer, url).map_err(|error| FailedCreate {
            error,
            maybe_created: true,
            next: NextTry::LookUpThenStop,
        }),
        Disposition::Retry { retry_after } => Err(FailedCreate {
            error: VmproError::from_answer(
                Step::CreateVideo,
                answer.status,
                &answer.body,
                Disposition::Retry { retry_after },
            ),
            // 408, 429 and 503 say the request was not taken on; a 500 (the platform failed
            // on the way) or a gateway's 502/504 may come after the video was made.
            maybe_created: matches!(answer.status, 500 | 502 | 504),
            next: NextTry::Retry(retry_after),
        }),
        disposition => {
            let next = match disposition {
                Disposition::RefreshToken => NextTry::RefreshToken,
                Disposition::AccountWide if answer.status == 403 => NextTry::RefreshToken,
                _ => NextTry::Stop,
            };
            Err(FailedCreate {
                error: VmproError::from_answer(
                    Step::CreateVideo,
                    answer.status,
                    &answer.body,
                    disposition,
                ),
                maybe_created: false,
                next,
            })
        }
    }
}

/// Looks the marker up, and again [`EMPTY_LOOKUP_REPEATS`] times over `lookup_wait` while
/// nothing is found: the platform's search index may not know a new video yet.
async fn find_patiently(
    platform: &Platform,
    marker: &str,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> Result<Vec<String>, VmproError> {
    let pause = platform.upload.lookup_wait / EMPTY_LOOKUP_REPEATS;
    for round in 0..=EMPTY_LOOKUP_REPEATS {
        if round > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let found = platform.find_marked(marker, shutdown, observer).await?;
        if !found.is_empty() {
            return Ok(found);
        }
        tracing::debug!(
            marker,
            round,
            "no video carries the marker yet; the search index may lag behind"
        );
    }
    Ok(Vec::new())
}

/// A lookup that failed for good (a refusal, an answer that cannot be read) leaves the outcome
/// unknown for this file: reported, not repeated. Transient failures, shutdown and the
/// account's problems pass through (they pause the queue or stop, and the lookup is done
/// again later).
fn unconfirmed_unless_passing(err: VmproError, marker: &str) -> VmproError {
    match err.blame() {
        Blame::File => VmproError::CreateUnconfirmed {
            why: format!("looking it up by its marker keyword {marker} failed"),
            source: Some(Box::new(err)),
        },
        _ => err,
    }
}

/// What a lookup found for a create whose outcome was unknown.
struct Found<'a> {
    adopted: &'a str,
    /// More videos with the marker: creates repeated after lookups came back empty too early.
    duplicates: &'a [String],
    marker: &'a str,
    recreated: bool,
}

/// Takes on the video a lost create made; the duplicates are said loudly, markers removed.
async fn adopt(
    platform: &Platform,
    found: Found<'_>,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> KnownVideo {
    let Found {
        adopted,
        duplicates,
        marker,
        recreated,
    } = found;
    observer.video_created(adopted);
    observer.event(
        "adopted",
        &format!(
            "video {adopted} found by its marker keyword: a create whose answer was lost had made it; no second video is created"
        ),
    );
    tracing::info!(
        video_id = adopted,
        marker,
        "found the video a lost create-video answer had made; uploading into it"
    );
    report_duplicates(platform, adopted, duplicates, marker, shutdown, observer).await;
    KnownVideo {
        id: adopted.to_owned(),
        marker: Some(marker.to_owned()),
        recreated,
    }
}

/// Says loudly that `duplicates` are empty videos made for the file of `video_id`, and takes
/// the marker off them.
async fn report_duplicates(
    platform: &Platform,
    video_id: &str,
    duplicates: &[String],
    marker: &str,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) {
    for duplicate in duplicates {
        let note = format!(
            "video {duplicate} carries this file's marker too: an empty duplicate of video {video_id} (the platform's search lagged longer than lookup_wait); delete it in VideoManager Pro"
        );
        tracing::warn!(video_id, "{note}");
        observer.event("duplicate", &note);
        if let Err(err) = platform
            .remove_marker(duplicate, marker, shutdown, observer)
            .await
        {
            tracing::warn!(video_id = %duplicate, "cannot remove the marker keyword from the duplicate: {}", chain(&err));
        }
    }
}

/// After a create that was repeated because lookups came back empty: looks the marker up once
/// more (the search has had the upload's time to catch up) and reports any other video that
/// carries it. Best effort, like the marker's removal.
pub(super) async fn report_late_duplicates(
    platform: &Platform,
    video: &KnownVideo,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) {
    let (true, Some(marker)) = (video.recreated, video.marker.as_deref()) else {
        return;
    };
    match platform.find_marked(marker, shutdown, observer).await {
        Ok(found) => {
            let others: Vec<String> = found.into_iter().filter(|id| *id != video.id).collect();
            report_duplicates(platform, &video.id, &others, marker, shutdown, observer).await;
        }
        Err(VmproError::Cancelled) => {}
        Err(err) => tracing::warn!(
            video_id = %video.id,
            "cannot look for duplicates of the video: {}",
            chain(&err)
        ),
    }
}

/// Takes the marker off the file's video; a failure is noted in the file's log and left for
/// later (the agent sweeps finished jobs), never failing the upload. True when it is off.
pub(super) async fn remove_marker_or_note(
    platform: &Platform,
    video: &KnownVideo,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> bool {
    let Some(marker) = video.marker.as_deref() else {
        return true;
    };
    if observer.keeps_marker() {
        return false;
    }
    if !observer.video_on_record() {
        tracing::warn!(video_id = %video.id, "the video's id could not be recorded; its marker keyword stays on so that it can be found again");
        return false;
    }
    match platform
        .remove_marker(&video.id, marker, shutdown, observer)
        .await
    {
        Ok(()) => {
            observer.marker_removed();
            true
        }
        Err(VmproError::Cancelled) => false,
        Err(err) => {
            let note = format!(
                "could not remove the marker keyword {marker} from video {}: {}; tried again later",
                video.id,
                chain(&err)
            );
            tracing::warn!(video_id = %video.id, "{note}");
            observer.event("marker", &note);
            false
        }
    }
}

impl Platform {
    /// The ids of the videos whose keywords hold `marker` exactly (the search's
    /// `exact_string` is trusted for nothing: a video is ours only if its keywords say so).
    pub async fn find_marked(
        &self,
        marker: &str,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<Vec<String>, VmproError> {
        let mut url = self.videos_url("")?;
        url.query_pairs_mut()
            .append_pair("search_term", marker)
            .append_pair("search_in_field", "keywords")
            .append_pair("exact_string", "true")
            .append_pair("include_keywords", "true")
            .append_pair("limit", &LOOKUP_LIMIT.to_string());
        let answer = self
            .api_call(Step::FindVideo, shutdown, observer, |token| {
                self.transport.http.get(url.clone()).bearer_auth(token)
            })
            .await?;
        marked_videos(&answer.body, marker).map_err(|message| VmproError::Protocol {
            step: Step::FindVideo,
            message,
        })
    }

    /// Deletes `marker` from the keywords of `video_id`. A video or keyword that is gone
    /// already counts as removed.
    pub async fn remove_marker(
        &self,
        video_id: &str,
        marker: &str,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<(), VmproError> {
        let path = format!("/{}/keywords", percent_encode_segment(video_id));
        let url = self.videos_url(&path)?;
        let listed = self
            .api_call(Step::RemoveMarker, shutdown, observer, |token| {
                self.transport.http.get(url.clone()).bearer_auth(token)
            })
            .await;
        let answer = match listed {
            Ok(answer) => answer,
            Err(err) if err.status() == Some(404) => return Ok(()),
            Err(err) => return Err(err),
        };
        let ids =
            marker_keyword_ids(&answer.body, marker).map_err(|message| VmproError::Protocol {
                step: Step::RemoveMarker,
                message,
            })?;
        for keyword_id in ids {
            let url =
                self.videos_url(&format!("{path}/{}", percent_encode_segment(&keyword_id)))?;
            let deleted = self
                .api_call(Step::RemoveMarker, shutdown, observer, |token| {
                    self.transport.http.delete(url.clone()).bearer_auth(token)
                })
                .await;
            match deleted {
                Ok(_) => {}
                Err(err) if err.status() == Some(404) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// The ids of the videos in a search answer whose keywords hold `marker`. The answer is
/// `{"total": …, "videos": [{"id": …, "keywords": […]}, …]}` (a bare list of videos is taken
/// too); only `id` and `keywords` are read, and entries without the marker are not ours,
/// whatever else they hold or lack.
fn marked_videos(body: &[u8], marker: &str) -> Result<Vec<String>, String> {
    let videos = listed(body, "search", "videos", "an object with `videos`")?;
    let mut found = Vec::new();
    for video in &videos {
        let carries_marker = video
            .get("keywords")
            .and_then(Value::as_array)
            .is_some_and(|keywords| keywords.iter().any(|k| keyword_text(k) == Some(marker)));
        if !carries_marker {
            continue;
        }
        match video.get("id").and_then(id_text) {
            Some(id) => found.push(id),
            None => {
                return Err(format!(
                    "a video in the search answer carries the marker {marker} but no usable id"
                ));
            }
        }
    }
    Ok(found)
}

/// The list an answer holds: the answer itself, or its `field` (missing or null: empty). The
/// errors name the `answer` ("search", "keywords") and what it should have been (`expected`).
fn listed(body: &[u8], answer: &str, field: &str, expected: &str) -> Result<Vec<Value>, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|err| format!("the {answer} answer is not JSON ({err}): {}", excerpt(body)))?;
    match json {
        Value::Array(list) => Ok(list),
        Value::Object(mut fields) => match fields.remove(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => Ok(list),
            Some(other) => Err(format!(
                "the {answer} answer's `{field}` is {}, not a list",
                kind(&other)
            )),
        },
        other => Err(format!(
            "the {answer} answer is {}, not {expected}",
            kind(&other)
        )),
    }
}

/// The ids of `marker` in a keywords answer, `[{"id": 123, "text": "…"}, …]` (also taken
/// inside `{"keywords": […]}`).
fn marker_keyword_ids(body: &[u8], marker: &str) -> Result<Vec<String>, String> {
    let keywords = listed(body, "keywords", "keywords", "a list")?;
    let mut ids = Vec::new();
    for keyword in &keywords {
        if keyword_text(keyword) != Some(marker) {
            continue;
        }
        match keyword.get("id").and_then(id_text) {
            Some(id) => ids.push(id),
            None => {
                return Err(format!(
                    "the keyword {marker} is listed without a usable id"
                ));
            }
        }
    }
    Ok(ids)
}

/// A keyword as a string, or as an object with its `text`.
fn keyword_text(keyword: &Value) -> Option<&str> {
    match keyword {
        Value::String(text) => Some(text),
        Value::Object(fields) => fields.get("text").and_then(Value::as_str),
        _ => None,
    }
}

/// Ids longer than this are not ids (and would flood a log line).
const MAX_ID_LEN: usize = 200;

/// An id given as a non-empty string (no control characters: ids reach log lines) or as a
/// whole number.
fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(text)
            if !text.trim().is_empty()
                && text.len() <= MAX_ID_LEN
                && !text.chars().any(char::is_control) =>
        {
            Some(text.clone())
        }
        Value::Number(number) if number.is_u64() || number.is_i64() => Some(number.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "hotfolder-0123456789abcdef0123456789abcdef";

    #[test]
    fn markers_are_unique_and_recognisable() {
        let a = new_marker();
        let b = new_marker();
        assert_ne!(a, b);
        assert!(is_marker(&a) && a.len() == MARKER_PREFIX.len() + 32, "{a}");
        assert!(!is_marker("hotfolder-") && !is_marker("studio"));
    }

    #[test]
    fn the_marker_joins_the_folders_keywords() {
        let meta = VideoMetadata {
            title: "{stem}".into(),
            keywords: vec!["studio".into()],
            ..Default::default()
        };
        let body = tagged_body(&meta, "a.mov", Some(MARKER));
        assert_eq!(body["keywords"], serde_json::json!(["studio", MARKER]));
        let plain = tagged_body(&VideoMetadata::default(), "a.mov", Some(MARKER));
        assert_eq!(plain["keywords"], serde_json::json!([MARKER]));
        let untagged = tagged_body(&VideoMetadata::default(), "a.mov", None);
        assert!(untagged.get("keywords").is_none());
    }

    #[test]
    fn a_search_answer_yields_only_videos_that_carry_the_marker() {
        // The vendor fixture's shape, with extra and missing fields around.
        let body = format!(
            r#"{{"total": 4, "videos": [
                {{"id": "1wGJbtN7QPwkAkd8_VcgKH", "title": "x", "uploadFileName": "clip.mov",
                  "createdDate": "2017-09-07T13:20:19Z", "keywords": ["studio", "{MARKER}"],
                  "customMetadata": {{"a": 1}}}},
                {{"id": "other", "keywords": ["{MARKER}-not-quite", "HOTFOLDER"]}},
                {{"title": "no id and no keywords"}},
                {{"id": 42, "keywords": [{{"id": 7, "text": "{MARKER}"}}]}}
            ], "extra": true}}"#
        );
        assert_eq!(
            marked_videos(body.as_bytes(), MARKER).unwrap(),
            ["1wGJbtN7QPwkAkd8_VcgKH", "42"]
        );
        assert!(
            marked_videos(br#"{"total": 0}"#, MARKER)
                .unwrap()
                .is_empty()
        );
        assert!(
            marked_videos(br#"{"videos": null}"#, MARKER)
                .unwrap()
                .is_empty()
        );
        assert!(marked_videos(b"[]", MARKER).unwrap().is_empty());
    }

    #[test]
    fn a_malformed_search_answer_is_an_error_that_says_what_is_wrong() {
        for (body, expected) in [
            (&b"<html>maintenance</html>"[..], "not JSON"),
            (br#"{"videos": {"id": "x"}}"#, "is an object, not a list"),
            (br#""videos""#, "is a string, not an object"),
        ] {
            let err = marked_videos(body, MARKER).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        for id in ["\"\"", "\"v1\\nforged log line\"", "null", "1.5"] {
            let body = format!(r#"{{"videos": [{{"id": {id}, "keywords": ["{MARKER}"]}}]}}"#);
            let err = marked_videos(body.as_bytes(), MARKER).unwrap_err();
            assert!(err.contains("no usable id"), "{id}: {err}");
        }
    }

    #[test]
    fn keyword_ids_of_the_marker_are_read_from_either_shape() {
        let body = format!(
            r#"[{{"id": 123, "text": "studio"}}, {{"id": 124, "text": "{MARKER}"}}, {{"id": "k9", "text": "{MARKER}", "extra": 1}}]"#
        );
        assert_eq!(
            marker_keyword_ids(body.as_bytes(), MARKER).unwrap(),
            ["124", "k9"]
        );
        let wrapped = format!(r#"{{"keywords": [{{"id": 5, "text": "{MARKER}"}}]}}"#);
        assert_eq!(
            marker_keyword_ids(wrapped.as_bytes(), MARKER).unwrap(),
            ["5"]
        );
        assert!(marker_keyword_ids(b"[]", MARKER).unwrap().is_empty());
        assert!(marker_keyword_ids(b"{}", MARKER).unwrap().is_empty());
        let idless = format!(r#"[{{"text": "{MARKER}"}}]"#);
        assert!(marker_keyword_ids(idless.as_bytes(), MARKER).is_err());
        assert!(marker_keyword_ids(b"nope", MARKER).is_err());
        assert!(marker_keyword_ids(b"7", MARKER).is_err());
    }

    #[test]
    fn parsing_never_panics_on_any_bytes() {
        for body in [
            &b""[..],
            b"\xff\xfe",
            b"{\"videos\":[1,2,[]]}",
            b"[{\"id\":1.5}]",
        ] {
            let _ = marked_videos(body, MARKER);
            let _ = marker_keyword_ids(body, MARKER);
        }
    }
}
