//! The emulator's HTTP side, on hyper 1 directly: the accept loop, one http1 connection task per
//! client, the router, and the answer helpers every handler shares. The handlers that turn
//! requests into [`PlatformState`] calls are its submodules, one per part of the protocol:
//! `login` (keycloak's token endpoint, the legacy login, the bearer check), `video_api`
//! (creating and searching videos, their keywords, issuing upload URLs, transcoding status) and `chunk_upload`
//! (chunk posts, hashed as they stream).
//!
//! hyper rather than a framework because two faults must close the TCP connection without any
//! answer: a service that returns `Err` makes hyper drop the connection on the spot.

mod chunk_upload;
mod companion_api;
mod login;
mod video_api;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::faults::{FaultCounters, FaultDice, FaultPlan};
use super::link::LinkModel;
use super::state::{Clock, PlatformState, QUOTA_MESSAGE};
use super::{EmulatorOptions, EmulatorStats, Faults, PlatformRefusal};
use chunk_upload::{chunk, drain, read_part_then_drop};
use login::{keycloak_token, legacy_login, legacy_refresh};
use video_api::{
    create_video, delete_keyword, keywords, one_video, search_videos, transcoding_status,
    upload_url,
};

type Answer = Response<Full<Bytes>>;

/// An answer that refuses a request, boxed so that `Result`s stay small.
type Refused = Box<Answer>;

/// Largest login or create-video body read; the platform's are a few hundred bytes.
const API_BODY_LIMIT: usize = 1024 * 1024;

/// hyper's read buffer per connection. Larger than its default (~400 KiB) so that chunk bodies
/// arrive in fewer, bigger frames: fewer syscalls and wake-ups per hashed byte.
const READ_BUFFER: usize = 1024 * 1024;

/// Why the emulator closed a connection instead of answering. Returned from the hyper service,
/// which makes hyper drop the connection without writing a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionDropped {
    #[error("injected fault: connection reset in the middle of a chunk body")]
    ResetMidBody,
    #[error("injected fault: chunk stored, answer lost")]
    LostAck,
    #[error("request body could not be read")]
    Body(#[from] hyper::Error),
}

/// Everything the connection tasks share.
pub(crate) struct Shared {
    state: Mutex<PlatformState>,
    dice: Mutex<FaultDice>,
    fault_counters: FaultCounters,
    counters: Counters,
    clock: Clock,
    /// Used for `Location` headers when a request has no usable `Host`.
    base_url: Url,
    created_on_every_chunk: bool,
    url_status_ok: bool,
    legacy_vm_id_as_string: bool,
    create_answer_delay: Option<std::time::Duration>,
    /// VideoManager ids that exist; empty: every numeric id.
    video_managers: Mutex<Vec<u64>>,
    /// Chunks are checked and counted, not hashed (`EmulatorOptions::sink`).
    sink: bool,
    /// The long-distance link, when one is modelled; `None` costs nothing per frame.
    link: Option<LinkModel>,
    /// Chunks longer than this get 413 before their body is read; 0: any size is taken.
    /// Changed at run time by `Emulator::set_max_chunk_size` (a proxy's limit lowered).
    max_chunk_size: AtomicU64,
    /// Those refusals are 400 "Request Entity Too Large" instead.
    too_large_as_400: bool,
    /// The chunk post (1-based, as `size_checks` counts) refused with 413 whatever its size.
    too_large_on_post: Option<u64>,
    /// Chunk posts whose size was looked at (their token was genuine).
    size_checks: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    chunk_posts: AtomicU64,
    chunks_accepted: AtomicU64,
    bytes_received: AtomicU64,
    chunks_too_large: AtomicU64,
    videos_created: AtomicU64,
    logins: AtomicU64,
    logins_refused: AtomicU64,
    refreshes: AtomicU64,
    urls_issued: AtomicU64,
    searches: AtomicU64,
    keywords_deleted: AtomicU64,
    transcoding_polls: AtomicU64,
    rate_limited: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    pub(crate) fn new(options: EmulatorOptions, base_url: Url) -> Shared {
        Shared {
            state: Mutex::new(PlatformState::new(&options)),
            dice: Mutex::new(FaultDice::new(options.faults.clone())),
            fault_counters: FaultCounters::default(),
            counters: Counters::default(),
            clock: Clock::new(),
            base_url,
            created_on_every_chunk: options.created_on_every_chunk,
            url_status_ok: options.url_status_ok,
            legacy_vm_id_as_string: options.legacy_vm_id_as_string,
            create_answer_delay: options.create_answer_delay,
            video_managers: Mutex::new(options.video_managers),
            sink: options.sink,
            link: LinkModel::new(options.latency, options.link_rate),
            max_chunk_size: AtomicU64::new(options.max_chunk_size.unwrap_or(0)),
            too_large_as_400: options.too_large_as_400,
            too_large_on_post: options.too_large_on_post,
            size_checks: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_max_chunk_size(&self, max: Option<u64>) {
        self.max_chunk_size
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn max_chunk_size(&self) -> Option<u64> {
        Some(self.max_chunk_size.load(Ordering::Relaxed)).filter(|max| *max > 0)
    }

    pub(crate) fn set_video_managers(&self, ids: Vec<u64>) {
        *self
            .video_managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ids;
    }

    pub(crate) fn knows_video_manager(&self, id: u64) -> bool {
        let known = self
            .video_managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.is_empty() || known.contains(&id)
    }

    pub(crate) fn platform_refusal(&self) -> Option<PlatformRefusal> {
        self.dice
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .platform_refusal()
    }

    /// The state lock is never held across an await, so a poisoned lock can only mean a panic
    /// in plain bookkeeping; the data is still consistent enough for an emulator.
    pub(crate) fn state(&self) -> MutexGuard<'_, PlatformState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.dice.lock().unwrap_or_else(PoisonError::into_inner) = FaultDice::new(faults);
    }

    fn roll_faults(&self, chunk_post: bool, create_post: bool) -> FaultPlan {
        let plan = self
            .dice
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .roll(chunk_post, create_post);
        self.fault_counters.count(&plan);
        plan
    }

    pub(crate) fn stats(&self) -> EmulatorStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        EmulatorStats {
            requests: load(&c.requests),
            chunk_posts: load(&c.chunk_posts),
            chunks_accepted: load(&c.chunks_accepted),
            bytes_received: load(&c.bytes_received),
            chunks_too_large: load(&c.chunks_too_large),
            bytes_stored: self.state().stored_bytes(),
            videos_created: load(&c.videos_created),
            logins: load(&c.logins),
            logins_refused: load(&c.logins_refused),
            refreshes: load(&c.refreshes),
            urls_issued: load(&c.urls_issued),
            searches: load(&c.searches),
            keywords_deleted: load(&c.keywords_deleted),
            transcoding_polls: load(&c.transcoding_polls),
            rate_limited: load(&c.rate_limited),
            faults_injected: self.fault_counters.snapshot(),
        }
    }

    /// The base URL the client used (its `Host`), so `Location` headers work for clients that
    /// reach the emulator by another name or address than loopback.
    fn request_base(&self, headers: &HeaderMap) -> Url {
        headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| Url::parse(&format!("http://{host}/")).ok())
            .filter(|url| {
                url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
            })
            .unwrap_or_else(|| self.base_url.clone())
    }
}

/// Where clients reach a listener: an unspecified address (`0.0.0.0`) is reached on loopback.
pub(crate) fn base_url_for(local: SocketAddr) -> Result<Url, url::ParseError> {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Url::parse(&format!("http://{}/", SocketAddr::new(ip, local.port())))
}

pub(crate) fn api_url(base: &Url) -> Url {
    base.join("v1/vms/").unwrap_or_else(|_| base.clone())
}

pub(crate) fn token_url(base: &Url) -> Url {
    base.join("auth/realms/platform/protocol/openid-connect/token")
        .unwrap_or_else(|_| base.clone())
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tasks.spawn(serve_connection(
                    stream,
                    Arc::clone(&shared),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                // Usually out of file descriptors: wait for connections to close, do not spin.
                tracing::warn!(%error, "emulator could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    // Answers are tiny; Nagle would hold each one back waiting for the client's next ACK.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "emulator could not set TCP_NODELAY");
    }
    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(READ_BUFFER)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(error = %crate::chain(&error), "emulator connection ended");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

/// Where a request goes, from its method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    KeycloakToken,
    LegacyLogin,
    LegacyRefresh {
        vm: String,
    },
    CreateVideo {
        vm: String,
    },
    SearchVideos {
        vm: String,
    },
    Keywords {
        vm: String,
        video: String,
    },
    /// `GET` (does it exist?) or `DELETE` (a user deleting it) one video.
    Video {
        vm: String,
        video: String,
        delete: bool,
    },
    DeleteKeyword {
        vm: String,
        video: String,
        keyword: String,
    },
    UploadUrl {
        vm: String,
        video: String,
    },
    TranscodingStatus {
        vm: String,
        video: String,
    },
    Chunk {
        vm: String,
        video: String,
    },
    /// `POST …/channels/{channel}/videos/{video}`: one more channel.
    AddToChannel {
        vm: String,
        channel: String,
        video: String,
    },
    /// `PATCH …/videos/{video}/metadata`: custom metadata.
    CustomMetadata {
        vm: String,
        video: String,
    },
    /// `PATCH …/videos/{video}`: title, description, autoPublish.
    UpdateVideo {
        vm: String,
        video: String,
    },
    ListVideos,
    Stats,
    MethodNotAllowed,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (route, allowed) = match segments.as_slice() {
            [
                "auth",
                "realms",
                "platform",
                "protocol",
                "openid-connect",
                "token",
            ] => (Route::KeycloakToken, Method::POST),
            ["v1", "vms", "auth", "login"] => (Route::LegacyLogin, Method::POST),
            ["v1", "vms", "auth", "refresh", vm] => (
                Route::LegacyRefresh {
                    vm: (*vm).to_owned(),
                },
                Method::POST,
            ),
            ["v1", "vms", vm, "videos"] if *method == Method::GET => (
                Route::SearchVideos {
                    vm: (*vm).to_owned(),
                },
                Method::GET,
            ),
            ["v1", "vms", vm, "videos"] => (
                Route::CreateVideo {
                    vm: (*vm).to_owned(),
                },
                Method::POST,
            ),
            ["v1", "vms", vm, "videos", video] if *method == Method::PATCH => (
                Route::UpdateVideo {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::PATCH,
            ),
            ["v1", "vms", vm, "videos", video, "metadata"] => (
                Route::CustomMetadata {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::PATCH,
            ),
            ["v1", "vms", vm, "channels", channel, "videos", video] => (
                Route::AddToChannel {
                    vm: (*vm).to_owned(),
                    channel: (*channel).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::POST,
            ),
            ["v1", "vms", vm, "videos", video] if *method == Method::DELETE => (
                Route::Video {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                    delete: true,
                },
                Method::DELETE,
            ),
            ["v1", "vms", vm, "videos", video] => (
                Route::Video {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                    delete: false,
                },
                Method::GET,
            ),
            ["v1", "vms", vm, "videos", video, "keywords"] => (
                Route::Keywords {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::GET,
            ),
            ["v1", "vms", vm, "videos", video, "keywords", keyword] => (
                Route::DeleteKeyword {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                    keyword: (*keyword).to_owned(),
                },
                Method::DELETE,
            ),
            ["v1", "vms", vm, "videos", video, "url"] => (
                Route::UploadUrl {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::GET,
            ),
            ["v1", "vms", vm, "videos", video, "transcoding-status"] => (
                Route::TranscodingStatus {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::GET,
            ),
            ["chunks", "vms", vm, "videos", video] => (
                Route::Chunk {
                    vm: (*vm).to_owned(),
                    video: (*video).to_owned(),
                },
                Method::POST,
            ),
            ["_emulator", "videos"] => (Route::ListVideos, Method::GET),
            ["_emulator", "stats"] => (Route::Stats, Method::GET),
            _ => return Route::NotFound,
        };
        if *method == allowed {
            route
        } else {
            Route::MethodNotAllowed
        }
    }

    /// Requests that reach the API's and the upload URLs' host (not the token endpoint's, nor
    /// the emulator's own pages): what a maintenance page stands in front of.
    fn behind_maintenance(&self) -> bool {
        !matches!(
            self,
            Route::KeycloakToken | Route::ListVideos | Route::Stats
        )
    }

    /// Calls that count against the API's requests-per-minute limit.
    fn is_api_call(&self) -> bool {
        matches!(
            self,
            Route::LegacyLogin
                | Route::LegacyRefresh { .. }
                | Route::CreateVideo { .. }
                | Route::SearchVideos { .. }
                | Route::Keywords { .. }
                | Route::Video { .. }
                | Route::DeleteKeyword { .. }
                | Route::UploadUrl { .. }
                | Route::TranscodingStatus { .. }
                | Route::AddToChannel { .. }
                | Route::CustomMetadata { .. }
                | Route::UpdateVideo { .. }
        )
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Answer, ConnectionDropped> {
    let route = Route::of(request.method(), request.uri().path());
    match route {
        Route::ListVideos => return Ok(json_answer(StatusCode::OK, &shared.state().videos())),
        Route::Stats => return Ok(json_answer(StatusCode::OK, &shared.stats())),
        _ => {}
    }
    let answer = answer_platform_request(&shared, route, request).await;
    // The far end of a long link: every answer the platform gives is one latency away.
    if let Some(link) = &shared.link
        && answer.is_ok()
    {
        link.answer_delay().await;
    }
    answer
}

/// Everything but the emulator's own pages: faults first, then the route's handler.
async fn answer_platform_request(
    shared: &Arc<Shared>,
    route: Route,
    request: Request<Incoming>,
) -> Result<Answer, ConnectionDropped> {
    let shared = Arc::clone(shared);
    bump(&shared.counters.requests);
    let chunk_post = matches!(route, Route::Chunk { .. });
    if chunk_post {
        bump(&shared.counters.chunk_posts);
    }
    let creating = matches!(route, Route::CreateVideo { .. });
    let plan = shared.roll_faults(chunk_post, creating);
    if let Some(stall) = plan.stall {
        tokio::time::sleep(stall).await;
    }
    let (parts, body) = request.into_parts();
    if plan.reset {
        return Err(read_part_then_drop(&shared, &parts.headers, body).await);
    }
    if let Some(retry_after) = plan.throttle {
        drain(&shared, body, chunk_post).await?;
        let answer = message(
            StatusCode::TOO_MANY_REQUESTS,
            "injected fault: too many requests",
        );
        return Ok(with_header(
            answer,
            header::RETRY_AFTER,
            &retry_after.to_string(),
        ));
    }
    if let Some(status) = plan.error {
        drain(&shared, body, chunk_post).await?;
        return Ok(json_answer(
            status,
            &json!({"message": format!("injected fault: {status}"), "code": status.as_u16()}),
        ));
    }

    if route.behind_maintenance()
        && shared.platform_refusal() == Some(PlatformRefusal::MaintenancePage)
    {
        drain(&shared, body, chunk_post).await?;
        return Ok(maintenance_page());
    }

    let answer = match route {
        Route::Chunk { vm, video } => chunk(&shared, &parts, body, &vm, &video).await?,
        Route::MethodNotAllowed => {
            drain(&shared, body, false).await?;
            message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        Route::NotFound => {
            drain(&shared, body, false).await?;
            message(StatusCode::NOT_FOUND, "no such resource")
        }
        route => {
            let body = match read_small_body(body).await? {
                Some(body) => body,
                None => {
                    return Ok(message(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    ));
                }
            };
            let answer = api_call(&shared, route, &parts, body);
            if let Some(delay) = shared.create_answer_delay.filter(|_| creating) {
                tokio::time::sleep(delay).await;
            }
            if plan.lost_create && answer.status() == StatusCode::CREATED {
                // The video exists; the gateway in front of the platform gave up waiting.
                json_answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    &json!({"message": "injected fault: gateway timeout (the video was created)"}),
                )
            } else {
                answer
            }
        }
    };
    if plan.lost_ack {
        return Err(ConnectionDropped::LostAck);
    }
    Ok(answer)
}

/// Handlers for everything but chunk posts: their bodies are small and already read.
fn api_call(shared: &Shared, route: Route, parts: &Parts, body: Bytes) -> Answer {
    let now = shared.clock.now();
    let admitted = if route.is_api_call() {
        shared.state().admit_api_call(now)
    } else {
        Ok(())
    };
    if let Err(wait) = admitted {
        bump(&shared.counters.rate_limited);
        return with_header(
            message(
                StatusCode::TOO_MANY_REQUESTS,
                "API rate limit exceeded: too many requests per minute",
            ),
            header::RETRY_AFTER,
            &whole_seconds(wait).max(1).to_string(),
        );
    }
    match route {
        Route::KeycloakToken => keycloak_token(shared, &parts.headers, &body),
        Route::LegacyLogin => legacy_login(shared, &parts.headers, &body),
        Route::LegacyRefresh { vm } => legacy_refresh(shared, &parts.headers, &vm, &body),
        Route::CreateVideo { vm } => create_video(shared, &parts.headers, &vm, &body),
        Route::SearchVideos { vm } => search_videos(shared, &parts.headers, &vm, parts.uri.query()),
        Route::Keywords { vm, video } => keywords(shared, &parts.headers, &vm, &video),
        Route::Video { vm, video, delete } => {
            one_video(shared, &parts.headers, &vm, &video, delete)
        }
        Route::DeleteKeyword { vm, video, keyword } => {
            delete_keyword(shared, &parts.headers, &vm, &video, &keyword)
        }
        Route::UploadUrl { vm, video } => upload_url(shared, &parts.headers, &vm, &video),
        Route::TranscodingStatus { vm, video } => {
            bump(&shared.counters.transcoding_polls);
            transcoding_status(shared, &parts.headers, &vm, &video)
        }
        Route::AddToChannel { vm, channel, video } => {
            companion_api::add_to_channel(shared, &parts.headers, &vm, &channel, &video)
        }
        Route::CustomMetadata { vm, video } => {
            companion_api::custom_metadata(shared, &parts.headers, &vm, &video, &body)
        }
        Route::UpdateVideo { vm, video } => {
            companion_api::update_video(shared, &parts.headers, &vm, &video, &body)
        }
        _ => message(StatusCode::NOT_FOUND, "no such resource"),
    }
}

/// `None` when the body exceeds [`API_BODY_LIMIT`].
async fn read_small_body(mut body: Incoming) -> Result<Option<Bytes>, ConnectionDropped> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if collected.len() + data.len() > API_BODY_LIMIT {
                return Ok(None);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Some(collected.freeze()))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Refused> {
    if !has_media_type(headers, "application/json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        refuse(
            StatusCode::BAD_REQUEST,
            &format!("malformed JSON body: {error}"),
        )
    })
}

/// True when `Content-Type` names `media_type`, parameters (`; charset=…`) and spacing aside:
/// curl's `Content-Type:application/octet-stream` (no space) must pass.
fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(media_type))
}

/// Digits only: `u64::from_str` would also take a leading `+`, which the platform would not.
fn parse_decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A lifetime as the integer seconds of `expires_in`, rounded up so that a sub-second test
/// lifetime does not read as "already expired".
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = status;
    answer
}

fn json_answer<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut answer = Response::new(Full::new(Bytes::from(bytes)));
            *answer.status_mut() = status;
            answer.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            answer
        }
        Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn message(status: StatusCode, text: &str) -> Answer {
    json_answer(status, &json!({"message": text}))
}

fn refuse(status: StatusCode, text: &str) -> Refused {
    Box::new(message(status, text))
}

/// Header values here are built from URLs and numbers, so they are always valid; if one is not,
/// the emulator says so instead of sending a half-formed answer.
fn with_header(mut answer: Answer, name: HeaderName, value: &str) -> Answer {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            answer.headers_mut().insert(name, value);
            answer
        }
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "emulator built an invalid header value",
        ),
    }
}

fn bad_video_manager(vm: &str) -> Answer {
    message(
        StatusCode::BAD_REQUEST,
        &format!("video manager id {vm:?} is not a number"),
    )
}

fn unknown_video_manager(vm: u64) -> Answer {
    message(
        StatusCode::NOT_FOUND,
        &format!("video manager {vm} not found"),
    )
}

/// What a load balancer in front of the platform answers during maintenance: a web page, 200.
fn maintenance_page() -> Answer {
    let page = "<!DOCTYPE html>\n<html><head><title>Scheduled maintenance</title></head>\
                <body><h1>VideoManager Pro is down for maintenance</h1>\
                <p>We will be back shortly.</p></body></html>\n";
    let mut answer = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
}

fn quota_answer() -> Answer {
    json_answer(
        StatusCode::FORBIDDEN,
        &json!({"code": 1101, "message": QUOTA_MESSAGE}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_platform_paths() {
        let route = |method: Method, path: &str| Route::of(&method, path);
        assert_eq!(
            route(
                Method::POST,
                "/auth/realms/platform/protocol/openid-connect/token"
            ),
            Route::KeycloakToken
        );
        assert_eq!(
            route(Method::POST, "/v1/vms/12345/videos"),
            Route::CreateVideo { vm: "12345".into() }
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/12345/videos/abc/url"),
            Route::UploadUrl {
                vm: "12345".into(),
                video: "abc".into()
            }
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/12345/videos"),
            Route::SearchVideos { vm: "12345".into() }
        );
        assert_eq!(
            route(Method::PUT, "/v1/vms/12345/videos"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/1/videos/abc"),
            Route::Video {
                vm: "1".into(),
                video: "abc".into(),
                delete: false,
            }
        );
        assert_eq!(
            route(Method::DELETE, "/v1/vms/1/videos/abc"),
            Route::Video {
                vm: "1".into(),
                video: "abc".into(),
                delete: true,
            }
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/1/videos/abc/keywords"),
            Route::Keywords {
                vm: "1".into(),
                video: "abc".into()
            }
        );
        assert_eq!(
            route(Method::DELETE, "/v1/vms/1/videos/abc/keywords/77"),
            Route::DeleteKeyword {
                vm: "1".into(),
                video: "abc".into(),
                keyword: "77".into()
            }
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/1/videos/abc/keywords/77"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(Method::GET, "/v1/vms/1/videos/abc/transcoding-status"),
            Route::TranscodingStatus {
                vm: "1".into(),
                video: "abc".into()
            }
        );
        // A client that joins URLs badly produces double slashes: that must not match.
        assert_eq!(
            route(Method::POST, "/v1/vms//12345/videos"),
            Route::NotFound
        );
    }

    #[test]
    fn decimal_means_digits_only() {
        assert_eq!(parse_decimal::<u32>("7"), Some(7));
        assert_eq!(parse_decimal::<u32>("+7"), None);
        assert_eq!(parse_decimal::<u32>("-1"), None);
        assert_eq!(parse_decimal::<u32>(""), None);
        assert_eq!(parse_decimal::<u32>("99999999999"), None);
    }

    #[test]
    fn base_url_uses_loopback_for_unspecified_addresses() {
        let url = base_url_for("0.0.0.0:8080".parse().unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
        let url = base_url_for("[::]:8080".parse().unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://[::1]:8080/");
    }
}
