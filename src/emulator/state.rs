//! What the emulated platform remembers: accounts and tokens, videos and their received content,
//! upload URLs, the storage quota and the API rate window. No HTTP here, so the protocol rules
//! can be tested without sockets (and with paused tokio time: the clock is tokio's).
//!
//! One concern, the platform's rules, kept whole with the tests that pin them down: tokens,
//! upload URLs, chunks and the quota live behind one lock and share one purge and one record of
//! issued secrets, so splitting them would spread that state across files.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{EmulatorOptions, VideoRecord};
use crate::vmpro::api::PLATFORM_SUFFIXES;

/// The video manager the legacy login advertises; API calls accept any numeric id.
pub const DEFAULT_VIDEO_MANAGER_ID: u64 = 12345;

/// Body of every storage-quota refusal, as the platform words it.
pub(crate) const QUOTA_MESSAGE: &str =
    "upload denied because you reached the limits of your booked storage capacity";

/// Wall-clock time derived from tokio's clock, so that tests with paused time can expire tokens
/// by advancing it, and the `__token__` expiry in URLs still reads like a real unix time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
    origin_unix: SystemTime,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            origin_unix: SystemTime::now(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }

    /// Whole seconds since the unix epoch at `at` (rounded down).
    pub(crate) fn unix_secs(&self, at: Instant) -> u64 {
        let wall = self.origin_unix + at.saturating_duration_since(self.origin);
        wall.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A random opaque string: tokens, video ids, file ids.
pub(crate) fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The signature in `__token__={expiry}~{hex}`: sha256 over the emulator's secret and everything
/// the token grants, so an edited path, fileId or expiry no longer matches. The serial makes two
/// URLs issued within the same second differ, so each has its own `url_max_chunks` count.
fn sign_upload_url(secret: &[u8], serial: u64, path: &str, file_id: &str, expiry: u64) -> String {
    let mut mac = Sha256::new();
    mac.update(secret);
    mac.update(serial.to_le_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(file_id.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    hex::encode(mac.finalize())
}

/// Which login produced a token: refresh tokens only work at the endpoint of their own style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginStyle {
    Keycloak,
    Legacy,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

/// Why a login or refresh was refused; the server words it per login style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginRefusal {
    BadCredentials,
    BadRefreshToken,
}

/// The create-video body (`VideoUploadRequestDTO`); every field optional here so that a missing
/// `fileName` gets the platform's 400 with a message instead of a serde error.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateVideoBody {
    pub file_name: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub channel: Option<u64>,
    pub group: Option<u64>,
    pub auto_publish: Option<bool>,
}

/// Which field a video search looks in (`search_in_field`); `Any` when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchField {
    Any,
    Title,
    Description,
    Keywords,
}

/// `GET …/videos` as the server parsed it from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchQuery {
    /// `search_term`; `None` lists every video.
    pub term: Option<String>,
    pub field: SearchField,
    /// `exact_string`: the whole field (or one whole keyword) must equal the term, ignoring
    /// case; otherwise containing it is enough.
    pub exact: bool,
    /// `include_keywords`: without it the answer leaves keywords out, as the platform does.
    pub include_keywords: bool,
    pub limit: usize,
    pub offset: usize,
}

/// One video in a search answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchHit {
    pub id: String,
    pub title: Option<String>,
    pub file_name: String,
    pub created_at: Instant,
    pub keywords: Option<Vec<String>>,
}

/// Why a keyword could not be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeywordRefusal {
    NoVideo,
    NoKeyword,
    /// `Emulator::set_keyword_changes_refused`: a platform where they are not allowed.
    Refused,
}

/// The qualities every video is transcoded into, with their profile keys, in the order they
/// finish.
pub(crate) const QUALITIES: [(&str, &str); 3] = [
    ("360p", "mp4-h264-360p"),
    ("720p", "mp4-h264-720p"),
    ("1080p", "mp4-h264-1080p"),
];

/// One entry of a transcoding-status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QualityState {
    pub quality: &'static str,
    pub profile_key: &'static str,
    pub file_extension: &'static str,
    pub completed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreateRefusal {
    BadRequest(String),
    UnsupportedSuffix(String),
    Quota,
}

/// What the server needs to build the upload URL's `Location`.
#[derive(Debug, Clone)]
pub(crate) struct UploadUrl {
    pub path: String,
    pub query: String,
}

/// One chunk post, after the HTTP layer checked its headers and split its `__token__`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRequest {
    /// The request path, as signed: `/chunks/vms/{vm}/videos/{id}`.
    pub path: String,
    pub vm: u64,
    pub video_id: String,
    pub file_id: String,
    /// The two halves of `__token__={expiry}~{signature}`.
    pub expiry: u64,
    pub signature: String,
    pub total: u32,
    pub current: u32,
    pub len: u64,
}

/// Why a chunk was refused, each with the status the platform would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkRefusal {
    /// 403: the upload token is unknown, expired, used up or for a replaced fileId.
    Forbidden(String),
    NotFound,
    BadRequest(String),
    OutOfOrder {
        got: u32,
        expected: u32,
    },
    /// 409 for everything else that conflicts with the video's current content.
    Conflict(String),
    Quota,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkKind {
    /// Chunk 1: the content starts over (unless it turns out to be chunk 1 re-sent).
    Restart,
    /// The next chunk in order.
    Append,
    /// The last accepted chunk again, after its answer was lost.
    Resend,
}

/// A chunk the state agreed to receive: the server feeds the body into `hasher` and hands it
/// back to [`PlatformState::finish_chunk`]. Nothing is committed before that.
#[derive(Debug, Clone)]
pub(crate) struct ChunkPlan {
    pub hasher: Sha256,
    video_id: String,
    /// The video's generation when the plan was made: a concurrent change in between (another
    /// chunk, a new fileId) makes the commit refuse instead of mixing two streams.
    generation: u64,
    kind: ChunkKind,
    current: u32,
    total: u32,
    len: u64,
}

impl ChunkPlan {
    /// The chunk's announced length (`Content-Length`).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkAccepted {
    /// The video has all its chunks (201 instead of 202).
    pub complete: bool,
}

/// One upload URL as issued: the signature is stateless, but expiry must be exact (the URL only
/// carries whole seconds) and `url_max_chunks` needs a use counter.
#[derive(Debug, Clone)]
struct UrlGrant {
    serial: u64,
    expires_at: Instant,
    chunk_posts: u32,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    style: LoginStyle,
    expires_at: Instant,
}

#[derive(Debug, Clone)]
struct Video {
    record: VideoRecord,
    /// Running hash of the content received so far.
    hasher: Sha256,
    /// The hash state before the last accepted chunk, to check that a re-sent last chunk holds
    /// the same bytes with a single pass over them.
    before_last: Sha256,
    last_chunk_len: u64,
    generation: u64,
    /// When it was created: a search finds it only `search_lag` later.
    created_at: Instant,
    /// The id of each keyword in `record.keywords`, in the same order.
    keyword_ids: Vec<u64>,
    /// When its last chunk arrived: transcoding counts from here.
    uploaded_at: Option<Instant>,
}

impl Video {
    fn reset_content(&mut self) -> u64 {
        let freed = self.record.bytes_received;
        if freed > 0 {
            self.record.restarts += 1;
        }
        self.record.bytes_received = 0;
        self.record.chunks_received = 0;
        self.record.total_chunks = None;
        self.record.complete = false;
        self.record.sha256 = None;
        self.uploaded_at = None;
        self.hasher = Sha256::new();
        self.before_last = Sha256::new();
        self.last_chunk_len = 0;
        self.generation += 1;
        freed
    }
}

/// The settings the state needs from [`EmulatorOptions`], kept apart so `set_*` can change them.
#[derive(Debug, Clone)]
pub(crate) struct PlatformState {
    username: String,
    password: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    url_ttl: Duration,
    url_max_chunks: Option<u32>,
    new_file_id_on_renew: bool,
    quota_bytes: Option<u64>,
    api_requests_per_minute: Option<u32>,
    /// Signs `__token__` values; random per emulator so tokens cannot be forged or carried over
    /// from another run.
    secret: [u8; 32],
    /// Numbers upload URLs, so that no two are the same.
    url_serial: u64,
    /// Per-emulator values that appear in every upload URL, like the platform's bucket and user.
    bucket_id: String,
    user_id: String,
    access_tokens: HashMap<String, Instant>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// Every secret handed out (tokens, `__token__` signatures), first few thousand only, so
    /// tests can prove none of them reaches a log.
    issued_secrets: Vec<String>,
    url_grants: HashMap<String, UrlGrant>,
    videos: HashMap<String, Video>,
    /// Creation order, so listings are stable.
    video_order: Vec<String>,
    /// Sum of `bytes_received` over all videos: what counts against the quota.
    stored_bytes: u64,
    /// When recent API calls arrived, for the per-minute limit.
    api_calls: VecDeque<Instant>,
    /// How long after its creation a video is still missing from search answers.
    search_lag: Option<Duration>,
    /// Numbers keywords across all videos, as the platform's keyword ids.
    keyword_serial: u64,
    /// Keyword deletions are answered 403.
    keyword_changes_refused: bool,
    /// Video searches are answered 403.
    search_refused: bool,
    /// How long after its upload a video's last quality is transcoded; `None`: never.
    transcode_after: Option<Duration>,
    /// Chunks are not hashed (`EmulatorOptions::sink`): a re-sent chunk is taken for the same
    /// bytes when its length is the same, and no video gets a `sha256`.
    sink: bool,
}

/// Tokens are purged of expired entries once a map grows past this, so a long benchmark does not
/// grow without bound.
const PURGE_THRESHOLD: usize = 4096;

impl PlatformState {
    pub(crate) fn new(options: &EmulatorOptions) -> PlatformState {
        PlatformState {
            username: options.username.clone(),
            password: options.password.clone(),
            access_ttl: options.access_ttl,
            refresh_ttl: options.refresh_ttl,
            url_ttl: options.url_ttl,
            url_max_chunks: options.url_max_chunks,
            new_file_id_on_renew: options.new_file_id_on_renew,
            quota_bytes: options.quota_bytes,
            api_requests_per_minute: options.api_requests_per_minute,
            secret: rand::rng().random(),
            url_serial: 0,
            bucket_id: random_id(12).to_lowercase(),
            user_id: rand::rng().random_range(100_000..1_000_000u32).to_string(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            issued_secrets: Vec::new(),
            url_grants: HashMap::new(),
            videos: HashMap::new(),
            video_order: Vec::new(),
            stored_bytes: 0,
            api_calls: VecDeque::new(),
            search_lag: options.search_lag,
            keyword_serial: 1000,
            keyword_changes_refused: false,
            search_refused: false,
            transcode_after: options.transcode_after,
            sink: options.sink,
        }
    }

    pub(crate) fn set_transcode_after(&mut self, after: Option<Duration>) {
        self.transcode_after = after;
    }

    pub(crate) fn set_search_refused(&mut self, refused: bool) {
        self.search_refused = refused;
    }

    pub(crate) fn search_refused(&self) -> bool {
        self.search_refused
    }

    pub(crate) fn set_keyword_changes_refused(&mut self, refused: bool) {
        self.keyword_changes_refused = refused;
    }

    pub(crate) fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub(crate) fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    pub(crate) fn set_quota(&mut self, quota_bytes: Option<u64>) {
        self.quota_bytes = quota_bytes;
    }

    /// A password change ends every session: refresh tokens stop working (as when an
    /// administrator resets credentials), access tokens run out at their expiry.
    pub(crate) fn set_password(&mut self, password: &str) {
        self.password = password.to_owned();
        self.refresh_tokens.clear();
    }

    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    pub(crate) fn password_login(
        &mut self,
        style: LoginStyle,
        username: &str,
        password: &str,
        now: Instant,
    ) -> Result<TokenPair, LoginRefusal> {
        if username != self.username || password != self.password {
            return Err(LoginRefusal::BadCredentials);
        }
        let access_token = self.new_access_token(now);
        let refresh_token = random_id(48);
        self.remember_secret(&refresh_token);
        self.purge(now);
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                style,
                expires_at: now + self.refresh_ttl,
            },
        );
        Ok(TokenPair {
            access_token,
            refresh_token,
        })
    }

    /// A new access token for a valid refresh token of the same style; keycloak also hands out
    /// a new refresh token (the old one stays valid until it expires, as keycloak's default).
    pub(crate) fn refresh(
        &mut self,
        style: LoginStyle,
        refresh_token: &str,
        now: Instant,
    ) -> Result<TokenPair, LoginRefusal> {
        let valid = self
            .refresh_tokens
            .get(refresh_token)
            .is_some_and(|grant| grant.style == style && now < grant.expires_at);
        if !valid {
            return Err(LoginRefusal::BadRefreshToken);
        }
        let access_token = self.new_access_token(now);
        let refresh_token = match style {
            LoginStyle::Keycloak => {
                let fresh = random_id(48);
                self.remember_secret(&fresh);
                self.refresh_tokens.insert(
                    fresh.clone(),
                    RefreshGrant {
                        style,
                        expires_at: now + self.refresh_ttl,
                    },
                );
                fresh
            }
            LoginStyle::Legacy => refresh_token.to_owned(),
        };
        Ok(TokenPair {
            access_token,
            refresh_token,
        })
    }

    fn remember_secret(&mut self, secret: &str) {
        if self.issued_secrets.len() < 5000 {
            self.issued_secrets.push(secret.to_owned());
        }
    }

    /// Every access/refresh token and upload-URL signature issued so far (capped).
    pub(crate) fn issued_secrets(&self) -> Vec<String> {
        self.issued_secrets.clone()
    }

    fn new_access_token(&mut self, now: Instant) -> String {
        let token = random_id(48);
        self.remember_secret(&token);
        self.access_tokens
            .insert(token.clone(), now + self.access_ttl);
        token
    }

    fn purge(&mut self, now: Instant) {
        if self.access_tokens.len() > PURGE_THRESHOLD {
            self.access_tokens.retain(|_, expires_at| now < *expires_at);
        }
        if self.refresh_tokens.len() > PURGE_THRESHOLD {
            self.refresh_tokens
                .retain(|_, grant| now < grant.expires_at);
        }
        if self.url_grants.len() > PURGE_THRESHOLD {
            self.url_grants.retain(|_, grant| now < grant.expires_at);
        }
    }

    pub(crate) fn is_authorized(&self, access_token: &str, now: Instant) -> bool {
        self.access_tokens
            .get(access_token)
            .is_some_and(|expires_at| now < *expires_at)
    }

    /// Counts an API call against the per-minute limit; `Err` holds how long until a slot frees.
    pub(crate) fn admit_api_call(&mut self, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.api_requests_per_minute else {
            return Ok(());
        };
        let window = Duration::from_secs(60);
        while self
            .api_calls
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= window)
        {
            self.api_calls.pop_front();
        }
        if self.api_calls.len() >= limit as usize {
            let oldest = self.api_calls.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.saturating_duration_since(oldest)));
        }
        self.api_calls.push_back(now);
        Ok(())
    }

    pub(crate) fn create_video(
        &mut self,
        vm: u64,
        body: CreateVideoBody,
        now: Instant,
    ) -> Result<String, CreateRefusal> {
        let file_name = body.file_name.unwrap_or_default();
        if file_name.trim().is_empty() {
            return Err(CreateRefusal::BadRequest(
                "fileName is required and must not be empty".to_owned(),
            ));
        }
        let suffix = file_name
            .rsplit_once('.')
            .map(|(_, suffix)| suffix.to_ascii_lowercase())
            .unwrap_or_default();
        if !PLATFORM_SUFFIXES.contains(&suffix.as_str()) {
            return Err(CreateRefusal::UnsupportedSuffix(format!(
                "unsupported media type: {file_name:?} has no accepted suffix \
                 (accepted: {})",
                PLATFORM_SUFFIXES.join(", ")
            )));
        }
        if self
            .quota_bytes
            .is_some_and(|quota| self.stored_bytes >= quota)
        {
            return Err(CreateRefusal::Quota);
        }
        let id = loop {
            let candidate = random_id(22);
            if !self.videos.contains_key(&candidate) {
                break candidate;
            }
        };
        let keywords = body.keywords.unwrap_or_default();
        let keyword_ids = keywords
            .iter()
            .map(|_| {
                self.keyword_serial += 1;
                self.keyword_serial
            })
            .collect();
        let record = VideoRecord {
            id: id.clone(),
            video_manager_id: vm,
            file_name,
            title: body.title,
            description: body.description,
            keywords,
            channel: body.channel,
            group: body.group,
            auto_publish: body.auto_publish,
            total_chunks: None,
            chunks_received: 0,
            bytes_received: 0,
            sha256: None,
            complete: false,
            restarts: 0,
            urls_issued: 0,
            file_id: random_id(16),
            added_channels: Vec::new(),
            custom_metadata: std::collections::BTreeMap::new(),
            updates: Vec::new(),
        };
        self.videos.insert(
            id.clone(),
            Video {
                record,
                hasher: Sha256::new(),
                before_last: Sha256::new(),
                last_chunk_len: 0,
                generation: 0,
                created_at: now,
                keyword_ids,
                uploaded_at: None,
            },
        );
        self.video_order.push(id.clone());
        Ok(id)
    }

    /// The videos of `vm` that match `query` and are old enough for the search index, in
    /// creation order, from `offset` on and at most `limit`; and how many matched in all.
    pub(crate) fn search_videos(
        &self,
        vm: u64,
        query: &SearchQuery,
        now: Instant,
    ) -> (usize, Vec<SearchHit>) {
        let lag = self.search_lag.unwrap_or(Duration::ZERO);
        let term = query.term.as_deref().map(str::to_lowercase);
        let matches = |text: &str| match &term {
            None => true,
            Some(term) if query.exact => text.to_lowercase() == *term,
            Some(term) => text.to_lowercase().contains(term.as_str()),
        };
        let hits: Vec<&Video> = self
            .video_order
            .iter()
            .filter_map(|id| self.videos.get(id))
            .filter(|video| video.record.video_manager_id == vm)
            .filter(|video| now.saturating_duration_since(video.created_at) >= lag)
            .filter(|video| {
                let record = &video.record;
                let title = || record.title.as_deref().is_some_and(matches);
                let description = || record.description.as_deref().is_some_and(matches);
                let keywords = || record.keywords.iter().any(|k| matches(k));
                match query.field {
                    SearchField::Any => term.is_none() || title() || description() || keywords(),
                    SearchField::Title => term.is_none() || title(),
                    SearchField::Description => term.is_none() || description(),
                    SearchField::Keywords => term.is_none() || keywords(),
                }
            })
            .collect();
        let total = hits.len();
        let page = hits
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|video| SearchHit {
                id: video.record.id.clone(),
                title: video.record.title.clone(),
                file_name: video.record.file_name.clone(),
                created_at: video.created_at,
                keywords: query
                    .include_keywords
                    .then(|| video.record.keywords.clone()),
            })
            .collect();
        (total, page)
    }

    /// A video's keywords with their ids (`None`: no such video in `vm`).
    pub(crate) fn keywords(&self, vm: u64, video_id: &str) -> Option<Vec<(u64, String)>> {
        let video = self
            .videos
            .get(video_id)
            .filter(|video| video.record.video_manager_id == vm)?;
        Some(
            video
                .keyword_ids
                .iter()
                .copied()
                .zip(video.record.keywords.iter().cloned())
                .collect(),
        )
    }

    pub(crate) fn delete_keyword(
        &mut self,
        vm: u64,
        video_id: &str,
        keyword_id: u64,
    ) -> Result<(), KeywordRefusal> {
        let refused = self.keyword_changes_refused;
        let video = self
            .videos
            .get_mut(video_id)
            .filter(|video| video.record.video_manager_id == vm)
            .ok_or(KeywordRefusal::NoVideo)?;
        let index = video
            .keyword_ids
            .iter()
            .position(|id| *id == keyword_id)
            .ok_or(KeywordRefusal::NoKeyword)?;
        if refused {
            return Err(KeywordRefusal::Refused);
        }
        video.keyword_ids.remove(index);
        video.record.keywords.remove(index);
        Ok(())
    }

    /// Issues an upload URL for the video (`None` if there is no such video in this manager).
    pub(crate) fn issue_upload_url(
        &mut self,
        clock: &Clock,
        vm: u64,
        video_id: &str,
        now: Instant,
    ) -> Option<UploadUrl> {
        self.purge(now);
        let renew_file_id = self.new_file_id_on_renew;
        let video = self
            .videos
            .get_mut(video_id)
            .filter(|video| video.record.video_manager_id == vm)?;
        if renew_file_id && video.record.urls_issued > 0 {
            video.record.file_id = random_id(16);
            // A completed upload has been handed over to the platform; only an unfinished one
            // loses what it received when its fileId changes.
            if !video.record.complete {
                let freed = video.reset_content();
                self.stored_bytes = self.stored_bytes.saturating_sub(freed);
            }
        }
        video.record.urls_issued += 1;
        let file_id = video.record.file_id.clone();
        let expires_at = now + self.url_ttl;
        let expiry = clock.unix_secs(expires_at);
        let path = format!("/chunks/vms/{vm}/videos/{video_id}");
        self.url_serial += 1;
        let serial = self.url_serial;
        let signature = sign_upload_url(&self.secret, serial, &path, &file_id, expiry);
        self.remember_secret(&signature);
        self.url_grants.insert(
            signature.clone(),
            UrlGrant {
                serial,
                expires_at,
                chunk_posts: 0,
            },
        );
        let query = format!(
            "bucketId={}&fileId={}&userId={}&__token__={}~{}",
            self.bucket_id, file_id, self.user_id, expiry, signature
        );
        Some(UploadUrl { path, query })
    }

    /// True when this emulator issued exactly this token for exactly this path and fileId (it
    /// may have expired or been used up since). The signature names the grant; re-signing what
    /// the request carries with the grant's serial proves that nothing was edited.
    pub(crate) fn upload_token_is_genuine(
        &self,
        path: &str,
        file_id: &str,
        expiry: u64,
        signature: &str,
    ) -> bool {
        self.url_grants.get(signature).is_some_and(|grant| {
            sign_upload_url(&self.secret, grant.serial, path, file_id, expiry) == signature
        })
    }

    /// Checks a chunk post against its URL grant and the video's state, before its body is read.
    pub(crate) fn begin_chunk(
        &mut self,
        request: &ChunkRequest,
        now: Instant,
    ) -> Result<ChunkPlan, ChunkRefusal> {
        if !self.upload_token_is_genuine(
            &request.path,
            &request.file_id,
            request.expiry,
            &request.signature,
        ) {
            return Err(ChunkRefusal::Forbidden(
                "upload token is not valid".to_owned(),
            ));
        }
        let grant = self
            .url_grants
            .get_mut(&request.signature)
            .ok_or_else(|| ChunkRefusal::Forbidden("upload token is not valid".to_owned()))?;
        if now >= grant.expires_at {
            return Err(ChunkRefusal::Forbidden(
                "upload token expired: request a new upload URL".to_owned(),
            ));
        }
        if let Some(max) = self.url_max_chunks.filter(|max| grant.chunk_posts >= *max) {
            return Err(ChunkRefusal::Forbidden(format!(
                "upload token used up after {max} chunks: request a new upload URL"
            )));
        }
        grant.chunk_posts += 1;

        let video = self
            .videos
            .get(&request.video_id)
            .filter(|video| video.record.video_manager_id == request.vm)
            .ok_or(ChunkRefusal::NotFound)?;
        if video.record.file_id != request.file_id {
            return Err(ChunkRefusal::Forbidden(
                "upload URL belongs to a replaced file: request a new upload URL".to_owned(),
            ));
        }
        let last = video.record.chunks_received;
        let kind = if request.current == 1 {
            ChunkKind::Restart
        } else if request.current == last + 1 || request.current == last {
            if video.record.total_chunks != Some(request.total) {
                return Err(ChunkRefusal::BadRequest(format!(
                    "Mi24-Upload-Total-Chunks {} does not match this upload's {}",
                    request.total,
                    video
                        .record
                        .total_chunks
                        .map_or_else(|| "(none)".to_owned(), |t| t.to_string())
                )));
            }
            if request.current == last + 1 {
                ChunkKind::Append
            } else if request.len == video.last_chunk_len {
                ChunkKind::Resend
            } else {
                return Err(ChunkRefusal::Conflict(format!(
                    "chunk {} re-sent with {} bytes, but it had {} bytes",
                    request.current, request.len, video.last_chunk_len
                )));
            }
        } else {
            return Err(ChunkRefusal::OutOfOrder {
                got: request.current,
                expected: last + 1,
            });
        };

        if let Some(quota) = self.quota_bytes {
            let after = match kind {
                ChunkKind::Restart => {
                    self.stored_bytes
                        .saturating_sub(video.record.bytes_received)
                        + request.len
                }
                ChunkKind::Append => self.stored_bytes + request.len,
                ChunkKind::Resend => self.stored_bytes,
            };
            if after > quota && kind != ChunkKind::Resend {
                return Err(ChunkRefusal::Quota);
            }
        }

        let hasher = match kind {
            ChunkKind::Restart => Sha256::new(),
            ChunkKind::Append => video.hasher.clone(),
            ChunkKind::Resend => video.before_last.clone(),
        };
        Ok(ChunkPlan {
            hasher,
            video_id: request.video_id.clone(),
            generation: video.generation,
            kind,
            current: request.current,
            total: request.total,
            len: request.len,
        })
    }

    /// Commits a chunk whose whole body went through `plan.hasher`.
    pub(crate) fn finish_chunk(&mut self, plan: ChunkPlan) -> Result<ChunkAccepted, ChunkRefusal> {
        let hashed = !self.sink;
        let video = self
            .videos
            .get_mut(&plan.video_id)
            .ok_or(ChunkRefusal::NotFound)?;
        if video.generation != plan.generation {
            return Err(ChunkRefusal::Conflict(format!(
                "chunk {} arrived while another request changed this upload",
                plan.current
            )));
        }
        let same_as_last = || plan.hasher.clone().finalize() == video.hasher.clone().finalize();
        match plan.kind {
            ChunkKind::Resend => {
                if !same_as_last() {
                    return Err(ChunkRefusal::Conflict(format!(
                        "chunk {} re-sent with different bytes",
                        plan.current
                    )));
                }
                return Ok(ChunkAccepted {
                    complete: video.record.complete,
                });
            }
            // Chunk 1 sent again after a lost answer: the same content, not a restart.
            ChunkKind::Restart
                if video.record.chunks_received == 1
                    && video.record.total_chunks == Some(plan.total)
                    && video.last_chunk_len == plan.len
                    && same_as_last() =>
            {
                return Ok(ChunkAccepted {
                    complete: video.record.complete,
                });
            }
            ChunkKind::Restart => {
                let freed = video.reset_content();
                self.stored_bytes = self.stored_bytes.saturating_sub(freed);
                video.record.total_chunks = Some(plan.total);
            }
            ChunkKind::Append => {}
        }
        video.before_last = std::mem::replace(&mut video.hasher, plan.hasher);
        video.last_chunk_len = plan.len;
        video.generation += 1;
        video.record.chunks_received = plan.current;
        video.record.bytes_received += plan.len;
        self.stored_bytes += plan.len;
        let complete = plan.current == plan.total;
        video.record.complete = complete;
        video.record.sha256 =
            (complete && hashed).then(|| hex::encode(video.hasher.clone().finalize()));
        // tokio's clock, as every `now` here: tests with paused time advance it.
        video.uploaded_at = complete.then(Instant::now);
        Ok(ChunkAccepted { complete })
    }

    /// `GET …/videos/{id}/transcoding-status` (vmpro-protocol.md section 5) at `now`: one entry
    /// per quality of [`QUALITIES`], in order; `None` when `vm` has no such video. Nothing is
    /// transcoded before the upload is complete; then quality `i` of `n` is done at
    /// `(i + 1) / n` of `transcode_after`, so a poll in between sees some done and some not.
    pub(crate) fn transcoding_status(
        &self,
        vm: u64,
        id: &str,
        now: Instant,
    ) -> Option<Vec<QualityState>> {
        let video = self
            .videos
            .get(id)
            .filter(|video| video.record.video_manager_id == vm)?;
        let count = QUALITIES.len() as u32;
        Some(
            QUALITIES
                .iter()
                .zip(1..)
                .map(|(&(quality, profile_key), nth)| {
                    let completed = match (video.uploaded_at, self.transcode_after) {
                        (Some(uploaded), Some(after)) => now >= uploaded + after * nth / count,
                        _ => false,
                    };
                    QualityState {
                        quality,
                        profile_key,
                        file_extension: "mp4",
                        completed,
                    }
                })
                .collect(),
        )
    }

    pub(crate) fn videos(&self) -> Vec<VideoRecord> {
        self.video_order
            .iter()
            .filter_map(|id| self.videos.get(id))
            .map(|video| video.record.clone())
            .collect()
    }

    pub(crate) fn video(&self, id: &str) -> Option<VideoRecord> {
        self.videos.get(id).map(|video| video.record.clone())
    }

    /// The video `id` in `vm`, as `GET …/videos/{id}` answers it (`None`: no such video there).
    /// Changes the record of the video `id` in `vm` (the calls after a create: channels,
    /// custom metadata, updates). `false` when there is no such video.
    pub(crate) fn change_video(
        &mut self,
        vm: u64,
        id: &str,
        change: impl FnOnce(&mut VideoRecord),
    ) -> bool {
        match self
            .videos
            .get_mut(id)
            .filter(|video| video.record.video_manager_id == vm)
        {
            Some(video) => {
                change(&mut video.record);
                true
            }
            None => false,
        }
    }

    pub(crate) fn video_in(&self, vm: u64, id: &str) -> Option<VideoRecord> {
        self.videos
            .get(id)
            .filter(|video| video.record.video_manager_id == vm)
            .map(|video| video.record.clone())
    }

    /// Deletes the video `id` (in `vm`, when given) with its content, as a user deleting it in
    /// the platform's web interface would. Returns whether there was one.
    pub(crate) fn delete_video(&mut self, vm: Option<u64>, id: &str) -> bool {
        let found = self
            .videos
            .get(id)
            .is_some_and(|video| vm.is_none_or(|vm| video.record.video_manager_id == vm));
        if found && let Some(mut video) = self.videos.remove(id) {
            let freed = video.reset_content();
            self.stored_bytes = self.stored_bytes.saturating_sub(freed);
            self.video_order.retain(|kept| kept != id);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(options: EmulatorOptions) -> (PlatformState, Clock) {
        (PlatformState::new(&options), Clock::new())
    }

    fn login(state: &mut PlatformState) -> TokenPair {
        state
            .password_login(
                LoginStyle::Keycloak,
                "demo",
                "demo-password",
                Instant::now(),
            )
            .unwrap()
    }

    fn new_video(state: &mut PlatformState, name: &str) -> String {
        state
            .create_video(
                12345,
                CreateVideoBody {
                    file_name: Some(name.to_owned()),
                    ..CreateVideoBody::default()
                },
                Instant::now(),
            )
            .unwrap()
    }

    /// Issues a URL and turns it into the request the server would build for chunk `current`.
    fn chunk_request(
        state: &mut PlatformState,
        clock: &Clock,
        video: &str,
        total: u32,
        current: u32,
        len: u64,
    ) -> ChunkRequest {
        let url = state
            .issue_upload_url(clock, 12345, video, Instant::now())
            .unwrap();
        request_for(&url, video, total, current, len)
    }

    fn request_for(
        url: &UploadUrl,
        video: &str,
        total: u32,
        current: u32,
        len: u64,
    ) -> ChunkRequest {
        let query: HashMap<String, String> = url::form_urlencoded::parse(url.query.as_bytes())
            .into_owned()
            .collect();
        let (expiry, signature) = query["__token__"].split_once('~').unwrap();
        ChunkRequest {
            path: url.path.clone(),
            vm: 12345,
            video_id: video.to_owned(),
            file_id: query["fileId"].clone(),
            expiry: expiry.parse().unwrap(),
            signature: signature.to_owned(),
            total,
            current,
            len,
        }
    }

    fn send(
        state: &mut PlatformState,
        request: &ChunkRequest,
        bytes: &[u8],
    ) -> Result<ChunkAccepted, ChunkRefusal> {
        let mut plan = state.begin_chunk(request, Instant::now())?;
        plan.hasher.update(bytes);
        state.finish_chunk(plan)
    }

    fn with_current(request: &ChunkRequest, current: u32, len: u64) -> ChunkRequest {
        ChunkRequest {
            current,
            len,
            ..request.clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn access_tokens_expire_after_access_ttl() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let tokens = login(&mut state);
        assert!(state.is_authorized(&tokens.access_token, Instant::now()));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(state.is_authorized(&tokens.access_token, Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!state.is_authorized(&tokens.access_token, Instant::now()));
        assert!(!state.is_authorized("made-up", Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_tokens_expire_and_keep_to_their_style() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let tokens = login(&mut state);
        assert_eq!(
            state
                .refresh(LoginStyle::Legacy, &tokens.refresh_token, Instant::now())
                .unwrap_err(),
            LoginRefusal::BadRefreshToken
        );
        let renewed = state
            .refresh(LoginStyle::Keycloak, &tokens.refresh_token, Instant::now())
            .unwrap();
        assert_ne!(renewed.access_token, tokens.access_token);
        assert!(state.is_authorized(&renewed.access_token, Instant::now()));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(
            state
                .refresh(LoginStyle::Keycloak, &tokens.refresh_token, Instant::now())
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn password_change_ends_sessions() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let tokens = login(&mut state);
        state.set_password("new");
        assert!(
            state
                .refresh(LoginStyle::Keycloak, &tokens.refresh_token, Instant::now())
                .is_err()
        );
        let old = state.password_login(
            LoginStyle::Keycloak,
            "demo",
            "demo-password",
            Instant::now(),
        );
        assert_eq!(old.unwrap_err(), LoginRefusal::BadCredentials);
        assert!(
            state
                .password_login(LoginStyle::Keycloak, "demo", "new", Instant::now())
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upload_url_expires_exactly_at_url_ttl() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mp4");
        let request = chunk_request(&mut state, &clock, &video, 2, 1, 3);
        tokio::time::advance(Duration::from_secs(4 * 3600 - 1)).await;
        assert!(send(&mut state, &request, b"abc").is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        let refused = send(&mut state, &with_current(&request, 2, 3), b"def");
        assert!(matches!(refused, Err(ChunkRefusal::Forbidden(text)) if text.contains("expired")));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_in_the_url_is_unix_time() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mp4");
        let url = state
            .issue_upload_url(&clock, 12345, &video, Instant::now())
            .unwrap();
        let expiry: u64 = url
            .query
            .split("__token__=")
            .nth(1)
            .and_then(|token| token.split('~').next())
            .unwrap()
            .parse()
            .unwrap();
        let wall_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((wall_now + 4 * 3600).abs_diff(expiry) <= 2);
    }

    #[test]
    fn api_rate_limit_slides_over_a_minute() {
        let (mut state, _) = state_with(EmulatorOptions {
            api_requests_per_minute: Some(2),
            ..EmulatorOptions::default()
        });
        let start = Instant::now();
        assert!(state.admit_api_call(start).is_ok());
        assert!(
            state
                .admit_api_call(start + Duration::from_secs(10))
                .is_ok()
        );
        let wait = state
            .admit_api_call(start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(
            state
                .admit_api_call(start + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn resent_chunk_must_hold_the_same_bytes() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mov");
        let first = chunk_request(&mut state, &clock, &video, 3, 1, 3);
        send(&mut state, &first, b"abc").unwrap();
        send(&mut state, &with_current(&first, 2, 3), b"def").unwrap();
        let refused = send(&mut state, &with_current(&first, 2, 3), b"xyz");
        assert!(matches!(refused, Err(ChunkRefusal::Conflict(_))));
        send(&mut state, &with_current(&first, 2, 3), b"def").unwrap();
        let done = send(&mut state, &with_current(&first, 3, 1), b"g").unwrap();
        assert!(done.complete);
        let record = state.video(&video).unwrap();
        assert_eq!(
            record.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"abcdefg")).as_str())
        );
        assert_eq!(record.restarts, 0);
    }

    #[test]
    fn chunk_one_again_restarts_unless_it_is_the_same_chunk() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mov");
        let first = chunk_request(&mut state, &clock, &video, 2, 1, 3);
        send(&mut state, &first, b"abc").unwrap();
        send(&mut state, &first, b"abc").unwrap();
        assert_eq!(state.video(&video).unwrap().restarts, 0);
        send(&mut state, &first, b"xyz").unwrap();
        let record = state.video(&video).unwrap();
        assert_eq!((record.restarts, record.bytes_received), (1, 3));
        assert_eq!(state.stored_bytes(), 3);
    }

    #[test]
    fn a_plan_overtaken_by_another_chunk_is_not_committed() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mov");
        let first = chunk_request(&mut state, &clock, &video, 3, 1, 3);
        send(&mut state, &first, b"abc").unwrap();
        let mut slow = state
            .begin_chunk(&with_current(&first, 2, 3), Instant::now())
            .unwrap();
        send(&mut state, &with_current(&first, 2, 3), b"def").unwrap();
        slow.hasher.update(b"def");
        assert!(matches!(
            state.finish_chunk(slow),
            Err(ChunkRefusal::Conflict(_))
        ));
        assert_eq!(state.video(&video).unwrap().chunks_received, 2);
    }

    #[test]
    fn quota_counts_every_video_and_frees_restarted_content() {
        let (mut state, clock) = state_with(EmulatorOptions {
            quota_bytes: Some(5),
            ..EmulatorOptions::default()
        });
        let a = new_video(&mut state, "a.mp4");
        let b = new_video(&mut state, "b.mp4");
        let to_a = chunk_request(&mut state, &clock, &a, 2, 1, 3);
        send(&mut state, &to_a, b"abc").unwrap();
        let to_b = chunk_request(&mut state, &clock, &b, 1, 1, 3);
        assert_eq!(send(&mut state, &to_b, b"xyz"), Err(ChunkRefusal::Quota));
        // Restarting a with a 2-byte chunk 1 frees its 3 bytes first.
        send(&mut state, &with_current(&to_a, 1, 2), b"ab").unwrap();
        assert_eq!(state.stored_bytes(), 2);
        assert!(send(&mut state, &to_b, b"xyz").is_ok());
        assert!(matches!(
            state.create_video(
                12345,
                CreateVideoBody {
                    file_name: Some("c.mp4".into()),
                    ..CreateVideoBody::default()
                },
                Instant::now(),
            ),
            Err(CreateRefusal::Quota)
        ));
    }

    #[test]
    fn file_names_need_a_platform_suffix() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let create = |state: &mut PlatformState, name: Option<&str>| {
            state.create_video(
                1,
                CreateVideoBody {
                    file_name: name.map(str::to_owned),
                    ..CreateVideoBody::default()
                },
                Instant::now(),
            )
        };
        assert!(create(&mut state, Some("Clip.MOV")).is_ok());
        assert!(matches!(
            create(&mut state, Some("notes.txt")),
            Err(CreateRefusal::UnsupportedSuffix(_))
        ));
        assert!(matches!(
            create(&mut state, Some("mp4")),
            Err(CreateRefusal::UnsupportedSuffix(_))
        ));
        assert!(matches!(
            create(&mut state, None),
            Err(CreateRefusal::BadRequest(_))
        ));
        assert!(matches!(
            create(&mut state, Some(" ")),
            Err(CreateRefusal::BadRequest(_))
        ));
    }

    fn search(term: &str, field: SearchField, exact: bool) -> SearchQuery {
        SearchQuery {
            term: Some(term.to_owned()),
            field,
            exact,
            include_keywords: true,
            limit: 10,
            offset: 0,
        }
    }

    fn tagged(state: &mut PlatformState, name: &str, keywords: &[&str], vm: u64) -> String {
        state
            .create_video(
                vm,
                CreateVideoBody {
                    file_name: Some(name.to_owned()),
                    title: Some(name.to_owned()),
                    keywords: Some(keywords.iter().map(|k| (*k).to_owned()).collect()),
                    ..CreateVideoBody::default()
                },
                Instant::now(),
            )
            .unwrap()
    }

    fn ids(hits: &(usize, Vec<SearchHit>)) -> Vec<String> {
        hits.1.iter().map(|hit| hit.id.clone()).collect()
    }

    #[test]
    fn a_keyword_search_with_exact_string_matches_whole_keywords_only() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let marked = tagged(&mut state, "a.mov", &["studio", "hotfolder-abc"], 12345);
        let longer = tagged(&mut state, "b.mov", &["hotfolder-abcd"], 12345);
        tagged(&mut state, "hotfolder-abc.mov", &[], 12345);
        tagged(&mut state, "c.mov", &["hotfolder-abc"], 999);
        let now = Instant::now();
        let exact = state.search_videos(
            12345,
            &search("hotfolder-abc", SearchField::Keywords, true),
            now,
        );
        assert_eq!(ids(&exact), [marked.as_str()]);
        assert_eq!(
            exact.1[0].keywords.as_deref(),
            Some(&["studio".to_owned(), "hotfolder-abc".to_owned()][..])
        );
        let loose = state.search_videos(
            12345,
            &search("HOTFOLDER-abc", SearchField::Keywords, false),
            now,
        );
        assert_eq!(ids(&loose), [marked.as_str(), longer.as_str()]);
        let titles = state.search_videos(
            12345,
            &search("hotfolder-abc", SearchField::Title, false),
            now,
        );
        assert_eq!(titles.0, 1);
        let mut without = search("hotfolder-abc", SearchField::Keywords, true);
        without.include_keywords = false;
        assert_eq!(
            state.search_videos(12345, &without, now).1[0].keywords,
            None
        );
        let mut page = search("hotfolder", SearchField::Any, false);
        page.limit = 1;
        page.offset = 1;
        let (total, hits) = state.search_videos(12345, &page, now);
        assert_eq!((total, hits.len()), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_video_is_found_only_after_the_search_lag() {
        let (mut state, _) = state_with(EmulatorOptions {
            search_lag: Some(Duration::from_secs(2)),
            ..EmulatorOptions::default()
        });
        let id = tagged(&mut state, "a.mov", &["hotfolder-x"], 12345);
        let query = search("hotfolder-x", SearchField::Keywords, true);
        assert!(
            state
                .search_videos(12345, &query, Instant::now())
                .1
                .is_empty()
        );
        // Its keywords can be read at once; only the search index lags.
        assert_eq!(state.keywords(12345, &id).unwrap().len(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            ids(&state.search_videos(12345, &query, Instant::now())),
            [id]
        );
    }

    #[test]
    fn keywords_are_listed_with_ids_and_deleted_one_by_one() {
        let (mut state, _) = state_with(EmulatorOptions::default());
        let id = tagged(&mut state, "a.mov", &["studio", "hotfolder-x"], 12345);
        let listed = state.keywords(12345, &id).unwrap();
        assert_eq!(listed.len(), 2);
        assert_ne!(listed[0].0, listed[1].0);
        assert_eq!(state.keywords(999, &id), None);
        assert_eq!(
            state.delete_keyword(12345, &id, 1),
            Err(KeywordRefusal::NoKeyword)
        );
        assert_eq!(
            state.delete_keyword(12345, "nope", listed[1].0),
            Err(KeywordRefusal::NoVideo)
        );
        state.set_keyword_changes_refused(true);
        assert_eq!(
            state.delete_keyword(12345, &id, listed[1].0),
            Err(KeywordRefusal::Refused)
        );
        state.set_keyword_changes_refused(false);
        state.delete_keyword(12345, &id, listed[1].0).unwrap();
        assert_eq!(state.video(&id).unwrap().keywords, ["studio"]);
        assert_eq!(
            state.keywords(12345, &id).unwrap(),
            [(listed[0].0, "studio".to_owned())]
        );
        assert_eq!(
            state.delete_keyword(12345, &id, listed[1].0),
            Err(KeywordRefusal::NoKeyword)
        );
    }

    #[test]
    fn url_of_another_video_manager_is_not_found() {
        let (mut state, clock) = state_with(EmulatorOptions::default());
        let video = new_video(&mut state, "a.mp4");
        assert!(
            state
                .issue_upload_url(&clock, 999, &video, Instant::now())
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn qualities_finish_one_by_one_after_the_upload_or_never() {
        let (mut state, clock) = state_with(EmulatorOptions {
            transcode_after: Some(Duration::from_secs(30)),
            ..EmulatorOptions::default()
        });
        let video = new_video(&mut state, "a.mp4");
        let done = |state: &PlatformState| -> Vec<bool> {
            state
                .transcoding_status(12345, &video, Instant::now())
                .unwrap()
                .iter()
                .map(|q| q.completed)
                .collect()
        };
        // Nothing transcodes before the content is there, however long it takes.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(done(&state), [false, false, false]);
        let request = chunk_request(&mut state, &clock, &video, 1, 1, 3);
        send(&mut state, &request, b"abc").unwrap();
        assert_eq!(done(&state), [false, false, false]);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(done(&state), [true, false, false]);
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(done(&state), [true, true, false]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(done(&state), [true, true, true]);
        let qualities = state
            .transcoding_status(12345, &video, Instant::now())
            .unwrap();
        assert_eq!(qualities[2].quality, "1080p");

        state.set_transcode_after(None);
        assert_eq!(done(&state), [false, false, false]);
        // Another VideoManager's, or a deleted video: none.
        assert!(
            state
                .transcoding_status(999, &video, Instant::now())
                .is_none()
        );
        assert!(state.delete_video(None, &video));
        assert!(
            state
                .transcoding_status(12345, &video, Instant::now())
                .is_none()
        );
    }
}
