//! The platform's API calls (create the video entity, fetch its upload URL) and the transport
//! they share: one HTTP client, answers read with a size limit, transient failures retried
//! with the Fibonacci policy, API calls paced to the platform's request limit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::Session;
use super::bandwidth::BandwidthLimiter;
pub use super::bandwidth::BodyProgress;
use super::error::{Disposition, Step, VmproError, classify};
use super::link::LinkMeter;
use super::login_policy::LoginPolicy;
use super::system_roots;
use crate::chain;
use crate::config::{AccountSettings, AuthStyle, UploadSettings};
use crate::retry::{RetryPolicy, parse_retry_after};

/// What the platform stores about a new video, filled from the folder's config.
/// Fields that are `None` (or empty) are left out of the create-video body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoMetadata {
    /// Title template: `{stem}` is the file name without its suffix, `{name}` the whole name.
    pub title: String,
    pub description: Option<String>,
    pub channel: Option<u64>,
    pub group: Option<u64>,
    pub keywords: Vec<String>,
    pub auto_publish: Option<bool>,
    /// The title is sent as written, `{stem}` and `{name}` included (a companion's title: it
    /// is the video's own, not a template).
    pub title_as_written: bool,
}

/// File suffixes the platform accepts (lower case); others are answered `415`.
pub const PLATFORM_SUFFIXES: &[&str] = &[
    "mp4", "mov", "flv", "wmv", "mpg", "avi", "mp3", "mpeg", "m4v", "vob", "f4v", "wav", "3gp",
    "rm", "mts", "m2v", "wma", "mxf", "m2p", "m2t", "mkv", "webm", "qt", "mp2", "m2ts", "ogv",
];

/// Error bodies beyond this are cut: an endless body must not fill memory.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

impl VideoMetadata {
    /// The title for `file_name`: `{stem}` and `{name}` replaced.
    pub fn title_for(&self, file_name: &str) -> String {
        let stem = std::path::Path::new(file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| file_name.to_string());
        if self.title_as_written && !self.title.trim().is_empty() {
            return self.title.clone();
        }
        let template = if self.title.trim().is_empty() {
            "{stem}"
        } else {
            self.title.as_str()
        };
        template
            .replace("{stem}", &stem)
            .replace("{name}", file_name)
    }

    /// The create-video body (`VideoUploadRequestDTO`), leaving out what is not set.
    pub fn create_body(&self, file_name: &str) -> Value {
        let mut body = Map::new();
        body.insert("fileName".into(), Value::from(file_name));
        body.insert("title".into(), Value::from(self.title_for(file_name)));
        if let Some(description) = self.description.as_deref().filter(|d| !d.is_empty()) {
            body.insert("description".into(), Value::from(description));
        }
        if !self.keywords.is_empty() {
            body.insert("keywords".into(), Value::from(self.keywords.clone()));
        }
        if let Some(channel) = self.channel {
            body.insert("channel".into(), Value::from(channel));
        }
        if let Some(group) = self.group {
            body.insert("group".into(), Value::from(group));
        }
        if let Some(auto_publish) = self.auto_publish {
            body.insert("autoPublish".into(), Value::from(auto_publish));
        }
        Value::Object(body)
    }
}

/// An upload URL exactly as the platform gave it, with when it was issued. Its `__token__`
/// query value is a credential: `Display` and `Debug` mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadUrl {
    raw: String,
    issued_at: SystemTime,
}

impl UploadUrl {
    pub fn new(raw: String, issued_at: SystemTime) -> Self {
        UploadUrl { raw, issued_at }
    }

    /// The URL verbatim, for sending chunks and for the state store only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// How long ago it was issued (zero if the clock went backwards).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO)
    }

    /// The `fileId` query value: a different one after renewal means the server starts over.
    pub fn file_id(&self) -> Option<String> {
        let url = Url::parse(&self.raw).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == "fileId")
            .map(|(_, v)| v.into_owned())
    }

    /// The URL with the `__token__` value replaced by `***`, safe for logs.
    pub fn masked(&self) -> String {
        mask_token(&self.raw)
    }
}

/// Replaces every `__token__=` value in `text` with `***`.
pub fn mask_token(text: &str) -> String {
    const KEY: &str = "__token__=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(KEY) {
        out.push_str(&rest[..pos + KEY.len()]);
        out.push_str("***");
        let after = &rest[pos + KEY.len()..];
        let end = after
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

impl std::fmt::Display for UploadUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl std::fmt::Debug for UploadUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadUrl({})", self.masked())
    }
}

/// One answer, its body read up to [`ANSWER_BODY_LIMIT`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }

    /// What this answer to `step` means (see `error::classify`).
    pub fn disposition(&self, step: Step) -> Disposition {
        let content_type = self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        classify(
            step,
            self.status,
            content_type,
            &self.body,
            self.retry_after(),
        )
    }
}

/// Told about retries and other noteworthy moments of one file's upload (the sidecar's event
/// log, the state store, progress bars). Every method has a do-nothing default.
pub trait UploadObserver: Send + Sync {
    /// A sidecar event: `event` is a short keyword, `detail` a sentence.
    fn event(&self, _event: &str, _detail: &str) {}
    /// A request of `step` is about to be sent again after `error` (the `retry` event says
    /// the same in words); for counting retries by their cause.
    fn retrying(&self, _step: Step, _error: &VmproError) {}
    /// A create-video request tagged with `marker` (`None`: untagged) is about to be sent.
    /// From now until `video_created` or `create_settled`, the platform may hold a video for
    /// this file that nobody knows of: a job that keeps this on record looks it up after a
    /// crash. An `Err` (it could not be recorded) stops the request from being sent.
    fn create_sending(
        &self,
        _marker: Option<&str>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
    /// The create-video request was answered and made no video.
    fn create_settled(&self) {}
    /// The file's video is known: created, or found by its marker keyword.
    fn video_created(&self, _video_id: &str) {}
    /// Whether the id last given to `video_created` is safely recorded. Until it is, the marker
    /// keyword is the only way to find the video again after a crash, so it stays on.
    fn video_on_record(&self) -> bool {
        true
    }
    /// The marker keyword is off the platform again.
    fn marker_removed(&self) {}
    /// The marker keyword stays on until the caller takes it off itself (a claimed file's,
    /// until the file is moved: see `shared_folder`).
    fn keeps_marker(&self) -> bool {
        false
    }
    fn url_issued(&self, _url: &UploadUrl) {}
    /// Chunk `index` of `total` was accepted; `next_chunk` is what a resume starts from.
    /// `took` is the time it was being sent (see `UploadReport::sending`), for rates that do
    /// not count waiting.
    fn chunk_accepted(
        &self,
        _index: u32,
        _total: u32,
        _chunk_size: u64,
        _bytes_done: u64,
        _took: Duration,
    ) {
    }
    /// The content starts again at chunk 1 (same video).
    fn restarted(&self) {}
    /// Asked before every request that creates or sends (the create, an upload URL, each
    /// chunk): `false` stops the upload as if it were cancelled. For shared folders, where
    /// another agent may have taken the file over (see `shared_folder`).
    fn may_continue(&self) -> bool {
        true
    }
    /// A check asked before each piece of a chunk's body, without I/O: `false` ends the body
    /// unfinished (the server drops a request cut short) and the upload as if cancelled. For
    /// a process stopped in the middle of a chunk (`SIGSTOP`, a frozen VM) whose file another
    /// agent took over meanwhile: the rest of its old chunk must not reach the server after
    /// the new owner's.
    fn sending_check(&self) -> Option<SendingCheck> {
        None
    }
    /// The same, asked as the create-video request's body is written: a process stopped after
    /// it recorded the create but before the request left must not make a second video for a
    /// file another agent took over meanwhile. A failed check is then asked of `may_continue`
    /// (with I/O): a file that is still this agent's gets its create sent again at once.
    fn create_check(&self) -> Option<SendingCheck> {
        self.sending_check()
    }
    /// The server refused a chunk for its size, and `link` (the link to `api_url`) now caps
    /// auto's choice: kept at once, so that a process killed before the file ends keeps it.
    fn size_refused(&self, _api_url: &str, _link: &super::link::MeasuredLink) {}
}

/// See [`UploadObserver::sending_check`].
pub type SendingCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// An observer that ignores everything.
pub struct Unobserved;
impl UploadObserver for Unobserved {}

/// The HTTP client and retry policy every request shares.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
    /// `request_timeout`: the client applies it to whole requests; a chunk instead times out
    /// when it stops moving for this long (see [`BodyProgress`]).
    pub request_timeout: Duration,
    /// The link as the requests measure it (`chunk_size = "auto"` chooses from it): shared by
    /// every clone, so all uploads of a process measure one link.
    pub link: Arc<LinkMeter>,
}

impl Transport {
    /// `needs_tls`: the platform's URLs include an `https://` one (see [`system_roots`]).
    pub fn new(upload: &UploadSettings, needs_tls: bool) -> Result<Transport, VmproError> {
        // reqwest is built without a default TLS provider (ring builds faster than aws-lc).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Proxies: reqwest reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (either case)
        // by default, which the units document (Environment=); nothing here turns that off.
        let configure = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15).min(upload.request_timeout))
                .timeout(upload.request_timeout)
                // A followed 301/302/303 turns a chunk POST into a GET without the chunk, and
                // a 2xx from there would count a chunk that never arrived. No step of the
                // protocol redirects: a 3xx is an answer to act on (an error), not to follow.
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("hotfolder/", env!("CARGO_PKG_VERSION")))
        };
        let http =
            system_roots::build(configure, needs_tls).map_err(|err| VmproError::NoClient {
                message: err.to_string(),
            })?;
        Ok(Transport {
            http,
            policy: RetryPolicy::new(upload.max_attempts, upload.backoff_max),
            request_timeout: upload.request_timeout,
            link: Arc::default(),
        })
    }

    /// Sends one request once and reads its answer.
    pub async fn send_once(
        &self,
        step: Step,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, VmproError> {
        let sent = tokio::time::Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| VmproError::from_transport(step, e))?;
        let answer = read_answer(step, response).await?;
        // The API's answers measure the round trip before any chunk does (the token endpoint
        // is another host; chunks are measured by the upload itself).
        if !matches!(step, Step::Login | Step::Refresh | Step::Chunk) {
            self.link.round_trip(sent.elapsed());
        }
        Ok(answer)
    }

    /// Sends the request built by `build` until it gets an answer that is not transient
    /// (returned whatever it is), retrying connection failures, timeouts, 408, 429 and 5xx with
    /// the Fibonacci policy. Gives up with [`VmproError::GaveUp`] after `max_attempts`.
    pub async fn exchange(
        &self,
        step: Step,
        shutdown: &CancellationToken,
        build: impl FnMut() -> reqwest::RequestBuilder,
    ) -> Result<Answer, VmproError> {
        self.exchange_observed(step, shutdown, &Unobserved, build)
            .await
    }

    pub async fn exchange_observed(
        &self,
        step: Step,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
        build: impl FnMut() -> reqwest::RequestBuilder,
    ) -> Result<Answer, VmproError> {
        self.exchange_paced(step, shutdown, observer, None, None, false, build)
            .await
    }

    /// [`exchange_observed`](Self::exchange_observed) for a request whose body is paced by
    /// the bandwidth limiter (and built without the client's whole-request timeout): each try
    /// times out when `progress` shows nothing moved for `request_timeout`. Each try waits
    /// first for the end of `quiet_hours`' quiet hours: a retry's request opened then would hold
    /// a body that waits for hours, which proxies cut, and the retries would run out (pausing
    /// the queue) over nothing being wrong. The wait is not a failed try.
    ///
    /// `too_large_is_transient`: a refusal for size (413) is retried like a 503, each a failed
    /// try: for a chunk no longer than one the server already took, it is not about the size.
    /// A third such refusal in a row is returned as it is (the server's limit has come down).
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange_paced(
        &self,
        step: Step,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
        progress: Option<&BodyProgress>,
        quiet_hours: Option<&BandwidthLimiter>,
        too_large_is_transient: bool,
        mut build: impl FnMut() -> reqwest::RequestBuilder,
    ) -> Result<Answer, VmproError> {
        let mut failed = 0;
        let mut size_refusals_retried = 0;
        loop {
            if shutdown.is_cancelled() {
                return Err(VmproError::Cancelled);
            }
            if let Some(limiter) = quiet_hours {
                limiter
                    .wait_out_quiet_hours(shutdown, || {
                        observer.event(
                            "waiting",
                            "quiet hours (bandwidth_schedule): the next try waits until they end",
                        );
                    })
                    .await?;
            }
            if let Some(progress) = progress {
                progress.restart();
            }
            let stalled = async {
                match progress {
                    Some(progress) => progress.stalled(self.request_timeout).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = if step == Step::CreateVideo {
                // Not abandoned on shutdown once sent: the platform may create the video and
                // answer late, and a client that stopped listening would create a second one
                // for the same file after its restart. `request_timeout` bounds the wait.
                self.send_once(step, build()).await
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                    outcome = self.send_once(step, build()) => outcome,
                    () = stalled => Err(VmproError::Unreachable {
                        step,
                        message: format!(
                            "timed out: nothing moved for {}s (request_timeout)",
                            self.request_timeout.as_secs_f64()
                        ),
                    }),
                }
            };
            let (error, retry_after) = match outcome {
                Ok(answer) => match answer.disposition(step) {
                    Disposition::Retry { retry_after } => {
                        let disposition = Disposition::Retry { retry_after };
                        let err =
                            VmproError::from_answer(step, answer.status, &answer.body, disposition);
                        (err, retry_after)
                    }
                    // Twice at most: a server that has really lowered its limit since is
                    // then answered by the smaller size, not by failing the file.
                    Disposition::ChunkTooLarge
                        if too_large_is_transient && size_refusals_retried < 2 =>
                    {
                        size_refusals_retried += 1;
                        let retry_after = answer.retry_after();
                        let disposition = Disposition::Retry { retry_after };
                        let err =
                            VmproError::from_answer(step, answer.status, &answer.body, disposition);
                        (err, retry_after)
                    }
                    _ => return Ok(answer),
                },
                Err(err @ VmproError::Unreachable { .. }) => (err, None),
                Err(err) => return Err(err),
            };
            failed += 1;
            if !self.policy.may_retry(failed) {
                return Err(VmproError::GaveUp {
                    step,
                    attempts: failed,
                    last: Box::new(error),
                });
            }
            let delay = self.policy.delay(failed, retry_after);
            observer.retrying(step, &error);
            observer.event(
                "retry",
                &format!(
                    "{}; try {} of {} in {:.1}s",
                    chain(&error),
                    failed + 1,
                    self.policy.max_attempts,
                    delay.as_secs_f64()
                ),
            );
            tracing::debug!(%step, try_number = failed + 1, delay_ms = delay.as_millis() as u64, "retrying after: {}", chain(&error));
            tokio::select! {
                _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// A token bucket shared by every upload for API calls per minute (the platform allows 100).
/// It starts full; taking more than is there leaves a debt that the taker sleeps off. Chunk
/// bytes are paced by `bandwidth::BandwidthLimiter`, which must never burst.
pub struct RateLimiter {
    /// Units added per second.
    rate: f64,
    capacity: f64,
    bucket: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    pub fn new(rate_per_second: f64, capacity: f64) -> Self {
        let rate = rate_per_second.max(f64::MIN_POSITIVE);
        let capacity = capacity.max(1.0);
        RateLimiter {
            rate,
            capacity,
            bucket: tokio::sync::Mutex::new((capacity, tokio::time::Instant::now())),
        }
    }

    /// `per_minute` API calls a minute, all of them allowed in a burst.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = f64::from(per_minute.max(1));
        RateLimiter::new(n / 60.0, n)
    }

    /// Takes `amount` units, waiting as long as that overdraws the bucket.
    pub async fn take(&self, amount: f64) {
        let debt = {
            let mut bucket = self.bucket.lock().await;
            let now = tokio::time::Instant::now();
            let (tokens, last) = *bucket;
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.capacity);
            *bucket = (refilled - amount, now);
            amount - refilled
        };
        if debt > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(debt / self.rate)).await;
        }
    }
}

/// What the platform says of an uploaded video ([`Platform::video_presence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPresence {
    Present,
    /// A 404 for the video, from a VideoManager that answers: it is gone.
    Gone,
    /// A 404 that may not be the video's (the VideoManager did not answer either): why.
    Unsure(String),
}

/// The platform as hotfolder uses it: login, create video, upload URL (and, in `chunks`, the
/// chunk posts). Cheap to share between uploads behind an `Arc`.
///
/// A `Platform` talks to one VideoManager (`account.video_manager_id`);
/// [`for_video_manager`](Platform::for_video_manager) gives the one for another, sharing the
/// connection pool, the API's request budget and the bandwidth limit (all per account), and the
/// login where tokens are per user (Keycloak). A legacy login's tokens belong to one
/// VideoManager (vmpro-protocol.md section 1), so there each VideoManager has a session of
/// its own.
pub struct Platform {
    pub transport: Transport,
    pub session: Arc<Session>,
    pub account: AccountSettings,
    pub upload: UploadSettings,
    pacer: Arc<RateLimiter>,
    /// Chunk bytes per second across all uploads (`bandwidth_limit`, `bandwidth_schedule`):
    /// one limiter for every VideoManager's client, handed on to the client of a reload.
    pub bandwidth: Arc<BandwidthLimiter>,
    /// The clients for the other VideoManagers, made once each (a legacy session each, which
    /// must not log in again for every file).
    others: std::sync::Mutex<std::collections::HashMap<u64, Arc<Platform>>>,
}

impl Platform {
    pub fn new(
        account: &AccountSettings,
        upload: &UploadSettings,
    ) -> Result<Arc<Platform>, VmproError> {
        let bandwidth = Arc::new(BandwidthLimiter::for_plan(&upload.bandwidth));
        Platform::with_login_policy(account, upload, Arc::default(), bandwidth, None)
    }

    /// The client for reloaded settings. It carries on this one's count of refused logins: a
    /// reload with a new password tries it at once; one with the same password does not lift
    /// a hold (SIGHUP is sent for many reasons, and each try brings the account closer to a
    /// lockout). And its bandwidth limiter, with the new plan: the uploads in flight keep this
    /// client, and two buckets would each let the whole limit through.
    pub fn successor(
        &self,
        account: &AccountSettings,
        upload: &UploadSettings,
    ) -> Result<Arc<Platform>, VmproError> {
        let logins = self.session.login_policy();
        // Set before the new client is made: a limit applies even when the rest of the
        // reload cannot (the uploads go on with this client then).
        self.bandwidth.set_plan(&upload.bandwidth);
        // The same platform is the same link: what was measured carries on.
        let link = (account.api_url == self.account.api_url).then(|| self.transport.link.clone());
        Platform::with_login_policy(account, upload, logins, self.bandwidth.clone(), link)
    }

    fn with_login_policy(
        account: &AccountSettings,
        upload: &UploadSettings,
        logins: Arc<std::sync::Mutex<LoginPolicy>>,
        bandwidth: Arc<BandwidthLimiter>,
        link: Option<Arc<LinkMeter>>,
    ) -> Result<Arc<Platform>, VmproError> {
        let needs_tls = [&account.api_url, &account.token_url]
            .iter()
            .any(|url| url.scheme() == "https");
        let mut transport = Transport::new(upload, needs_tls)?;
        if let Some(link) = link {
            transport.link = link;
        }
        Ok(Arc::new(Platform {
            session: Arc::new(Session::new(transport.clone(), account.clone(), logins)),
            transport,
            account: account.clone(),
            upload: upload.clone(),
            pacer: Arc::new(RateLimiter::per_minute(upload.api_requests_per_minute)),
            bandwidth,
            others: std::sync::Mutex::default(),
        }))
    }

    /// The client for the VideoManager `id` (this one for its own id): every URL it builds
    /// names `id`.
    pub fn for_video_manager(self: &Arc<Self>, id: u64) -> Arc<Platform> {
        if id == self.account.video_manager_id {
            return self.clone();
        }
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        others
            .entry(id)
            .or_insert_with(|| {
                let mut account = self.account.clone();
                account.video_manager_id = id;
                let session = match account.auth {
                    AuthStyle::Keycloak => self.session.clone(),
                    AuthStyle::Legacy => Arc::new(Session::new(
                        self.transport.clone(),
                        account.clone(),
                        self.session.login_policy(),
                    )),
                };
                Arc::new(Platform {
                    transport: self.transport.clone(),
                    session,
                    account,
                    upload: self.upload.clone(),
                    pacer: self.pacer.clone(),
                    bandwidth: self.bandwidth.clone(),
                    others: std::sync::Mutex::default(),
                })
            })
            .clone()
    }

    /// Whether the platform still has the video `video_id` (`GET …/videos/{id}`), for done/
    /// retention. A 404 is the video's only when the VideoManager answers a request of its own
    /// (a one-video search): the platform answers 404 for a VideoManager it does not know
    /// too, and so may whatever stands in front of it.
    pub async fn video_presence(
        &self,
        video_id: &str,
        shutdown: &CancellationToken,
    ) -> Result<VideoPresence, VmproError> {
        let url = self.videos_url(&format!("/{}", percent_encode_segment(video_id)))?;
        let answer = self
            .api_call(Step::GetVideo, shutdown, &Unobserved, |token| {
                self.transport.http.get(url.clone()).bearer_auth(token)
            })
            .await;
        let not_found = match answer {
            Ok(_) => return Ok(VideoPresence::Present),
            Err(VmproError::Status {
                status: 404,
                message,
                ..
            }) => message,
            Err(err) => return Err(err),
        };
        match self.check_video_manager(shutdown).await {
            Ok(()) => Ok(VideoPresence::Gone),
            Err(err @ VmproError::Status { .. }) => Ok(VideoPresence::Unsure(format!(
                "the platform answered 404 for video {video_id} ({not_found}), but VideoManager {} \
                 did not answer for itself either ({}): that 404 may not be about the video",
                self.account.video_manager_id,
                crate::chain(&err)
            ))),
            Err(err) => Err(err),
        }
    }

    /// Logs in (or confirms the token in hand still works): `hotfolder check`.
    pub async fn login(&self, shutdown: &CancellationToken) -> Result<(), VmproError> {
        self.session.access_token(shutdown).await.map(|_| ())
    }

    pub(super) fn videos_url(&self, suffix: &str) -> Result<Url, VmproError> {
        let path = format!("{}/videos{suffix}", self.account.video_manager_id);
        self.account
            .api_url
            .join(&path)
            .map_err(|err| VmproError::Protocol {
                step: Step::CreateVideo,
                message: format!("cannot build the URL {path} from api_url: {err}"),
            })
    }

    /// Waits for a slot of the API's requests-per-minute budget.
    pub(super) async fn pace(&self) {
        self.pacer.take(1.0).await;
    }

    /// An API call with a bearer token: transient failures retried, a 401 refreshes the token
    /// once and retries once. Returns the accepted answer or the error it means.
    pub(super) async fn api_call(
        &self,
        step: Step,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Answer, VmproError> {
        let mut refreshed = false;
        loop {
            let token = self.session.access_token(shutdown).await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                _ = self.pacer.take(1.0) => {}
            }
            let answer = self
                .transport
                .exchange_observed(step, shutdown, observer, || build(token.expose_secret()))
                .await?;
            match answer.disposition(step) {
                Disposition::Accepted => return Ok(answer),
                Disposition::RefreshToken if !refreshed => {
                    refreshed = true;
                    observer.event(
                        "token",
                        &format!("{step}: access token refused (401); refreshing it"),
                    );
                    self.session.invalidate(&token).await;
                }
                // "May not create videos" could be a token issued before the account was given
                // its rights: a fresh token decides whether it is really the account's.
                Disposition::AccountWide if answer.status == 403 && !refreshed => {
                    refreshed = true;
                    observer.event(
                        "token",
                        &format!("{step}: refused (403); trying once more with a fresh token"),
                    );
                    self.session.invalidate(&token).await;
                }
                disposition => {
                    return Err(VmproError::from_answer(
                        step,
                        answer.status,
                        &answer.body,
                        disposition,
                    ));
                }
            }
        }
    }

    /// Fetches a fresh upload URL for `video_id`.
    pub async fn upload_url(
        &self,
        video_id: &str,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<UploadUrl, VmproError> {
        let url = self.videos_url(&format!("/{}/url", percent_encode_segment(video_id)))?;
        let answer = self
            .api_call(Step::UploadUrl, shutdown, observer, |token| {
                self.transport.http.get(url.clone()).bearer_auth(token)
            })
            .await?;
        let location = location(Step::UploadUrl, &answer, &url)?;
        Ok(UploadUrl::new(location.to_string(), SystemTime::now()))
    }
}

/// Reads an answer's status, headers and body (up to [`ANSWER_BODY_LIMIT`]).
pub(super) async fn read_answer(
    step: Step,
    mut response: reqwest::Response,
) -> Result<Answer, VmproError> {
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let mut body = BytesMut::new();
    while body.len() < ANSWER_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            Ok(None) => break,
            Err(err) => return Err(VmproError::from_transport(step, err)),
        }
    }
    body.truncate(ANSWER_BODY_LIMIT);
    Ok(Answer {
        status,
        headers,
        body: body.freeze(),
    })
}

/// The id of the video a create-video answer names: the last segment of its `Location`.
pub(super) fn created_video_id(answer: &Answer, request: &Url) -> Result<String, VmproError> {
    let location = location(Step::CreateVideo, answer, request)?;
    location
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(percent_decode)
        .filter(|id| !id.is_empty() && id != "videos")
        .ok_or_else(|| VmproError::Protocol {
            step: Step::CreateVideo,
            message: format!("the Location header {location} does not end with a video id"),
        })
}

/// The `Location` header of an accepted answer, resolved against the request URL.
fn location(step: Step, answer: &Answer, request: &Url) -> Result<Url, VmproError> {
    let raw = answer
        .headers
        .get(LOCATION)
        .ok_or_else(|| VmproError::Protocol {
            step,
            message: format!("answer {} has no Location header", answer.status),
        })?
        .to_str()
        .map_err(|_| VmproError::Protocol {
            step,
            message: "the Location header is not text".into(),
        })?;
    request
        .join(raw.trim())
        .map_err(|err| VmproError::Protocol {
            step,
            message: format!("the Location header is not a URL ({err})"),
        })
}

fn percent_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| segment.to_string())
}

pub(super) fn percent_encode_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_templates() {
        let meta = VideoMetadata {
            title: "Delivery: {stem} ({name})".into(),
            ..Default::default()
        };
        assert_eq!(
            meta.title_for("clip.final.mov"),
            "Delivery: clip.final (clip.final.mov)"
        );
        let plain = VideoMetadata::default();
        assert_eq!(plain.title_for("a.mp4"), "a");
    }

    #[test]
    fn create_body_leaves_out_unset_fields() {
        let meta = VideoMetadata {
            title: "{stem}".into(),
            channel: Some(3),
            ..Default::default()
        };
        let body = meta.create_body("x.mp4");
        assert_eq!(
            body,
            serde_json::json!({"fileName": "x.mp4", "title": "x", "channel": 3})
        );
    }

    #[test]
    fn token_is_masked() {
        let url = UploadUrl::new(
            "https://h/chunks?bucketId=b&fileId=f1&__token__=123~abcdef&userId=u".into(),
            SystemTime::now(),
        );
        assert_eq!(
            url.masked(),
            "https://h/chunks?bucketId=b&fileId=f1&__token__=***&userId=u"
        );
        assert!(!format!("{url} {url:?}").contains("abcdef"));
        assert_eq!(url.file_id().as_deref(), Some("f1"));
        assert_eq!(
            mask_token("a __token__=x b __token__=y"),
            "a __token__=*** b __token__=***"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_allows_a_burst_then_spaces_calls() {
        let pacer = RateLimiter::per_minute(60);
        let start = tokio::time::Instant::now();
        for _ in 0..60 {
            pacer.take(1.0).await;
        }
        assert!(start.elapsed() < Duration::from_millis(10));
        pacer.take(1.0).await;
        pacer.take(1.0).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100),
            "{waited:?}"
        );
    }

    /// Second hostile test of issue 13, D4: a retry during quiet hours opened a request whose
    /// body waited for their end; proxies cut it, the retries ran out and the queue paused.
    /// Now the retry waits for the end of quiet hours before its request, and the wait is no
    /// failed try.
    #[tokio::test]
    async fn a_retry_in_quiet_hours_opens_no_request_until_they_end() {
        use super::super::bandwidth::LimitSource;
        use crate::bandwidth::{Bandwidth, Limit};
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        struct Settable(Arc<Mutex<Limit>>);
        impl LimitSource for Settable {
            fn limit_now(&self) -> (Limit, Option<Duration>) {
                (*self.0.lock().expect("test lock"), None)
            }
        }
        let limit = Arc::new(Mutex::new(Limit::Rate(Bandwidth {
            bytes_per_second: 1 << 20,
            bits: false,
        })));
        let limiter = BandwidthLimiter::new(Box::new(Settable(limit.clone())));

        // Answers 503 to the first request, 200 to the rest, counting them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/chunk", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let requests = requests.clone();
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            break;
                        }
                        head.push(byte[0]);
                    }
                    let status = if requests.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Past the limiter's recheck time, so that the retry reads the limit.
                        tokio::time::sleep(Duration::from_millis(1200)).await;
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            }
        });

        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = Transport {
            http: reqwest::Client::new(),
            policy: RetryPolicy::new(2, Duration::from_millis(10)),
            request_timeout: Duration::from_secs(5),
            link: Arc::default(),
        };
        let quiet_for = Duration::from_secs(3);
        let started = std::time::Instant::now();
        // Quiet hours begin while the first try is under way.
        let build = || {
            *limit.lock().expect("test lock") = Limit::Quiet;
            transport.http.get(&url)
        };
        let ends = tokio::spawn({
            let limit = limit.clone();
            let requests = requests.clone();
            async move {
                tokio::time::sleep(quiet_for).await;
                let seen = requests.load(Ordering::SeqCst);
                *limit.lock().expect("test lock") = Limit::Unlimited;
                seen
            }
        });
        // Only the first build begins quiet hours; the retry's must not set them again.
        let built = std::sync::atomic::AtomicBool::new(false);
        let answer = transport
            .exchange_paced(
                Step::Chunk,
                &CancellationToken::new(),
                &Unobserved,
                None,
                Some(&limiter),
                false,
                || {
                    if built.swap(true, Ordering::SeqCst) {
                        transport.http.get(&url)
                    } else {
                        build()
                    }
                },
            )
            .await
            .expect("the retry after quiet hours is answered, and the wait used no try");
        assert_eq!(answer.status, 200);
        assert_eq!(
            ends.await.unwrap(),
            1,
            "no request during quiet hours but the first"
        );
        assert!(started.elapsed() >= quiet_for, "{:?}", started.elapsed());
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }
}
