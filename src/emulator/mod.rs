//! The built-in VideoManager Pro emulator: a strict, fast model of the platform's login, API and
//! chunked upload protocol on loopback, with fault injection. Used by the tests, the benchmark,
//! `hotfolder demo` and `hotfolder emulator`.
//!
//! It never keeps file contents: each video's sha256 is computed as chunk bodies stream in
//! (or, with `sink`, not even that: chunks are checked and counted only, so that a benchmark
//! measures the client and not the emulator's hashing). `link` models a long-distance link
//! (one shared rate, a latency per answer); `max_chunk_size` a server that refuses big chunks.
//! The video search (`GET …/videos`) and the keyword endpoints are modelled as far as
//! hotfolder's lookup of a lost create needs them (vmpro-protocol.md section 4).
//! A video's transcoding (`…/transcoding-status`) finishes quality by quality some time after
//! its upload ([`EmulatorOptions::transcode_after`]), or never.
//! Besides the platform's endpoints it answers `GET /_emulator/videos` and
//! `GET /_emulator/stats` with the same JSON as [`Emulator::videos`] and [`Emulator::stats`].

mod cli;
mod faults;
mod link;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

pub use cli::{EmulatorArgs, run_cli};
pub use state::DEFAULT_VIDEO_MANAGER_ID;

/// How long the emulator takes to transcode an uploaded video unless told otherwise.
pub const DEFAULT_TRANSCODE_AFTER: Duration = Duration::from_secs(10);

/// How the emulated platform behaves. The switches model the places where the platform's
/// documentation contradicts itself, so clients can be tested against each reading.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub username: String,
    pub password: String,
    /// Keycloak's `expires_in`; also the lifetime of legacy access tokens.
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Lifetime of an upload URL's `__token__` (the platform's is four hours).
    pub url_ttl: Duration,
    /// An upload URL is refused (403) after this many chunk posts.
    pub url_max_chunks: Option<u32>,
    /// Every `GET .../url` after the first issues a new fileId, and an unfinished video's
    /// received content starts over.
    pub new_file_id_on_renew: bool,
    /// Answer 201 to every chunk instead of 202 ... 202, 201.
    pub created_on_every_chunk: bool,
    /// Answer `GET .../url` with 200 (as the OpenAPI says) instead of 201 (as the guide says).
    pub url_status_ok: bool,
    /// The legacy login's `validForVideoManager` as `"12345"` instead of `12345`.
    pub legacy_vm_id_as_string: bool,
    /// Storage quota across all videos; beyond it the platform answers 403 with code 1101.
    pub quota_bytes: Option<u64>,
    /// API calls (not chunk posts, not logins at the token endpoint) beyond this many in a
    /// sliding minute get 429 with `Retry-After`.
    pub api_requests_per_minute: Option<u32>,
    /// A slow platform: a video is created at once, but the answer saying so comes this much
    /// later (a client that gives up meanwhile never learns the id of a video that exists).
    pub create_answer_delay: Option<Duration>,
    /// The VideoManager ids that exist; others are answered 404. Empty: every numeric id.
    pub video_managers: Vec<u64>,
    /// A search index behind the database: a new video is missing from `GET …/videos`
    /// answers for this long after its creation (its other endpoints know it at once).
    pub search_lag: Option<Duration>,
    /// `GET …/videos/{id}/transcoding-status`: a video's qualities are transcoded one after
    /// another, the last this long after its upload was complete; `None`: never (a platform
    /// whose transcoding is stuck).
    pub transcode_after: Option<Duration>,
    /// Chunks are checked (headers, order, length) and counted, but not hashed: the videos'
    /// `sha256` stays `None`. For measuring a client without the server's hashing.
    pub sink: bool,
    /// A long-distance link: every answer is delayed this much (a round trip).
    pub latency: Duration,
    /// A long-distance link: chunk bodies of all connections together are read at most this
    /// many bytes per second. `None`: as fast as loopback goes.
    pub link_rate: Option<u64>,
    /// Chunks longer than this are refused with `413 Payload Too Large` before their body is
    /// read (a server or proxy with a body size limit).
    pub max_chunk_size: Option<u64>,
    /// Size refusals (`max_chunk_size`) are answered `400` with a body saying "Request Entity
    /// Too Large", as some proxies do, instead of 413.
    pub too_large_as_400: bool,
    /// The Nth chunk post (1-based, every upload's counted) is refused with 413 whatever its
    /// size, once: a proxy's hiccup, not a size limit.
    pub too_large_on_post: Option<u64>,
    pub faults: Faults,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            username: "demo".to_owned(),
            password: "demo-password".to_owned(),
            access_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(3600),
            url_ttl: Duration::from_secs(4 * 3600),
            url_max_chunks: None,
            new_file_id_on_renew: false,
            created_on_every_chunk: false,
            url_status_ok: false,
            legacy_vm_id_as_string: false,
            quota_bytes: None,
            api_requests_per_minute: None,
            create_answer_delay: None,
            video_managers: Vec::new(),
            search_lag: None,
            transcode_after: Some(DEFAULT_TRANSCODE_AFTER),
            sink: false,
            latency: Duration::ZERO,
            link_rate: None,
            max_chunk_size: None,
            too_large_as_400: false,
            too_large_on_post: None,
            faults: Faults::default(),
        }
    }
}

/// Injected misbehaviour; every rate is a probability per request in `0.0..=1.0`.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seeds the RNG that decides, request by request, which fault happens.
    pub seed: u64,
    /// Any request is answered 500, 502, 503 or 504 with a JSON body; a chunk is not stored.
    pub error_rate: f64,
    /// Chunk posts: part of the body is read, then the connection is closed with no answer.
    pub reset_rate: f64,
    /// Chunk posts: the chunk is stored, then the connection is closed with no answer.
    pub lost_ack_rate: f64,
    /// Any request waits `stall` before it is handled (so clients time out).
    pub stall_rate: f64,
    pub stall: Duration,
    /// Any request is answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    /// Create-video calls: the video is created, then answered 504 (a gateway that gave up
    /// waiting), so the client never learns its id.
    pub lost_create_rate: f64,
    /// Every request of a kind refused alike, as long as this is set.
    pub platform_refusal: Option<PlatformRefusal>,
}

/// A refusal that hits every upload alike, as a misconfigured account or a platform in
/// maintenance gives: not the fault of any one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformRefusal {
    /// Create-video is answered 403 ("may not create videos") once the bearer token is checked.
    CreateForbidden,
    /// Create-video is answered 201 without a `Location` header, and no video is created.
    CreateWithoutLocation,
    /// Every request to the API and to the upload URLs is answered 200 with an HTML maintenance
    /// page; nothing is created or stored. The token endpoint (another host) still works.
    MaintenancePage,
}

/// What the emulator knows about one video, as tests and scripts see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VideoRecord {
    pub id: String,
    pub video_manager_id: u64,
    pub file_name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub keywords: Vec<String>,
    pub channel: Option<u64>,
    pub group: Option<u64>,
    pub auto_publish: Option<bool>,
    /// `Mi24-Upload-Total-Chunks` of the current upload, set by its chunk 1.
    pub total_chunks: Option<u32>,
    /// Chunks 1 ..= this are stored.
    pub chunks_received: u32,
    pub bytes_received: u64,
    /// Lower-case hex sha256 of the complete content; `Some` only when complete (and never
    /// in `sink` mode, which does not hash).
    pub sha256: Option<String>,
    pub complete: bool,
    /// How often received content was thrown away (chunk 1 again, or a new fileId).
    pub restarts: u32,
    pub urls_issued: u32,
    /// The fileId that upload URLs must carry now.
    pub file_id: String,
    /// Channels the video was added to after its create
    /// (`POST {vm}/channels/{channelId}/videos/{videoId}`), in order.
    #[serde(default)]
    pub added_channels: Vec<u64>,
    /// Custom metadata as set by `PATCH {vm}/videos/{videoId}/metadata` (later calls add to
    /// and overwrite earlier ones).
    #[serde(default)]
    pub custom_metadata: std::collections::BTreeMap<String, String>,
    /// What `PATCH {vm}/videos/{videoId}` asked, each body as it came.
    #[serde(default)]
    pub updates: Vec<serde_json::Value>,
}

/// Counters since the emulator started. `_emulator/*` requests are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmulatorStats {
    pub requests: u64,
    pub chunk_posts: u64,
    /// Chunks committed to a video (re-sent duplicates included).
    pub chunks_accepted: u64,
    /// Chunk body bytes read from the network, whatever became of them.
    pub bytes_received: u64,
    /// Chunk posts refused for their size: longer than `max_chunk_size` (413, or 400 with
    /// `too_large_as_400`), or the one `too_large_on_post` names.
    pub chunks_too_large: u64,
    /// Bytes held by all videos now: what counts against the quota.
    pub bytes_stored: u64,
    pub videos_created: u64,
    /// Successful password logins, both styles.
    pub logins: u64,
    pub logins_refused: u64,
    /// Successful refreshes, both styles.
    pub refreshes: u64,
    pub urls_issued: u64,
    /// `GET …/videos` searches answered.
    pub searches: u64,
    /// Keywords deleted through `DELETE …/keywords/{id}`.
    pub keywords_deleted: u64,
    /// `GET …/videos/{id}/transcoding-status` requests answered (404s included).
    pub transcoding_polls: u64,
    /// API calls refused by `api_requests_per_minute` (not counted as faults).
    pub rate_limited: u64,
    pub faults_injected: FaultCounts,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultCounts {
    pub errors: u64,
    pub resets: u64,
    pub lost_acks: u64,
    pub stalls: u64,
    pub throttles: u64,
    pub lost_creates: u64,
    pub total: u64,
}

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits
/// until every connection is closed.
pub struct Emulator {
    shared: Arc<server::Shared>,
    base_url: Url,
    /// Stops the accept loop and every connection task.
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Emulator {
    /// Binds `addr` (use `127.0.0.1:0` for a free port) and starts serving in the background.
    pub async fn start(addr: SocketAddr, options: EmulatorOptions) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = server::base_url_for(local)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let shared = Arc::new(server::Shared::new(options, base_url.clone()));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(Emulator {
            shared,
            base_url,
            shutdown,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT/` (the loopback address when listening on every interface).
    pub fn base_url(&self) -> Url {
        self.base_url.clone()
    }

    /// `{base}v1/vms/`, ending in `/` like the platform's `api_url`.
    pub fn api_url(&self) -> Url {
        server::api_url(&self.base_url)
    }

    pub fn token_url(&self) -> Url {
        server::token_url(&self.base_url)
    }

    /// Every video in creation order.
    pub fn videos(&self) -> Vec<VideoRecord> {
        self.shared.state().videos()
    }

    pub fn video(&self, id: &str) -> Option<VideoRecord> {
        self.shared.state().video(id)
    }

    /// Deletes a video as a user would in the platform's web interface: afterwards
    /// `GET …/videos/{id}` answers 404. Returns whether there was one.
    pub fn delete_video(&self, id: &str) -> bool {
        self.shared.state().delete_video(None, id)
    }

    pub fn stats(&self) -> EmulatorStats {
        self.shared.stats()
    }

    /// Every access and refresh token and every upload-URL `__token__` signature this emulator
    /// handed out (the first 5000), so tests can assert that none of them was ever logged.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.shared.state().issued_secrets()
    }

    /// Replaces the fault rates and reseeds the fault RNG with `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// From now on chunks longer than `max` are refused for their size (`None`: any size), as
    /// when a proxy's body size limit changes.
    pub fn set_max_chunk_size(&self, max: Option<u64>) {
        self.shared.set_max_chunk_size(max);
    }

    pub fn set_quota(&self, quota_bytes: Option<u64>) {
        self.shared.state().set_quota(quota_bytes);
    }

    /// Changes the accepted password. Refresh tokens stop working at once (sessions end, as
    /// after a credential reset); access tokens already issued run until they expire.
    pub fn set_password(&self, password: &str) {
        self.shared.state().set_password(password);
    }

    /// Keyword deletions are answered 403 while this is on (a platform that does not let the
    /// account change keywords).
    pub fn set_keyword_changes_refused(&self, refused: bool) {
        self.shared.state().set_keyword_changes_refused(refused);
    }

    /// The VideoManagers the platform knows from now on (empty: any), as when one is deleted
    /// or comes back; their videos stay.
    pub fn set_video_managers(&self, ids: Vec<u64>) {
        self.shared.set_video_managers(ids);
    }

    /// From now on every video's last quality is transcoded `after` its upload (`None`:
    /// transcoding never finishes), also for videos uploaded before.
    pub fn set_transcode_after(&self, after: Option<Duration>) {
        self.shared.state().set_transcode_after(after);
    }

    /// Video searches are answered 403 while this is on (a platform, or an account, without
    /// the search).
    pub fn set_search_refused(&self, refused: bool) {
        self.shared.state().set_search_refused(refused);
    }

    /// Stops accepting, closes every connection (requests in flight get no answer) and waits
    /// until all of it is done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
