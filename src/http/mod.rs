//! The agent's HTTP listener (`[http] listen`): `/metrics` for Prometheus, `/healthz` for a
//! monitor, `/api/status` (exactly what `hotfolder status --json` prints) and a status page at
//! `/` for people. Read-only: it changes nothing and has no login, so it listens on loopback
//! unless the user writes another address (and `check` then warns).
//!
//! It never slows uploads. Each request reads the state store through a read-only connection
//! of its own (SQLite's WAL lets readers and the agent's writes pass each other), on a blocking
//! thread, and builds the whole answer before sending any of it: a slow or stalled client holds
//! a buffer, never a lock. The in-memory counters are atomics ([`UploadCounters`]). A client
//! that does not send its headers within [`HEADER_PATIENCE`] is dropped, and every connection
//! after [`CONNECTION_LIFETIME`]. At most [`MAX_CONNECTIONS`] connections are kept: when a new
//! one comes and all places are taken, the oldest connection not in the middle of a request
//! (an idle keep-alive, a client that sends nothing, or one that sends its headers a byte at a
//! time) is closed to make room, so idle connections can never lock out a monitor
//! ([`Connections`]).
//!
//! DNS rebinding: a web page from anywhere can make a browser on this machine send requests to
//! 127.0.0.1 under a name of the page's choosing, and read the answers. Only requests for the
//! listener's own address, `localhost` (on loopback), this machine's names and the names in
//! `[http] allowed_hosts` are answered ([`AllowedHosts`]); others get 421. The name is the
//! request's `Host`, or its URI's authority when the request line has the absolute form
//! (RFC 9112, 3.2.2); a request with two `Host` headers, or an HTTP/1.1 request without one,
//! gets 400; HTTP/1.0 without `Host` is answered (it predates the header).
//!
//! `health` decides `/healthz`, `metrics` writes `/metrics` (and says which figures survive a
//! restart), `page` renders the status page.

mod health;
mod metrics;
mod page;

pub use metrics::{RetryReason, UploadCounters};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::config::HttpSettings;
use crate::status_report::{RECENT_SHOWN, ReportClock, StatusSnapshot, to_json};
use crate::store::{JobStore, StoreError};

use health::{FolderHealth, folder_health};

/// Connections kept at once; a new one beyond it closes the oldest idle one. A status page and
/// a Prometheus server need a few.
pub const MAX_CONNECTIONS: usize = 64;

/// While every kept connection is in the middle of a request (answers the client does not
/// read), new ones are still taken up to this many; beyond it they are closed at once.
const CONNECTIONS_BUSY_LIMIT: usize = 2 * MAX_CONNECTIONS;

/// How long the listener waits, when it starts, for the resolver to give this machine's fully
/// qualified name (accepted as `Host`).
const NAME_LOOKUP_PATIENCE: Duration = Duration::from_secs(2);

/// How long a client has to send a request's headers.
pub const HEADER_PATIENCE: Duration = Duration::from_secs(10);

/// The longest a connection is served: a client that asks and never reads its answers would
/// otherwise keep its place for ever (hyper has no write timeout). A keep-alive client simply
/// connects again.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The longest wait before trying again to bind an address that was taken.
const BIND_RETRY_CAP: Duration = Duration::from_secs(60);

type Answer = Response<Full<Bytes>>;

/// What the listener shows, besides the state store: handed over by the agent.
pub struct StatusSource {
    /// Where the store and the agent's lock file (with a pause the store could not take) are.
    pub state_dir: PathBuf,
    pub counters: Arc<UploadCounters>,
    /// The configured folders now (a reload changes them).
    pub folders: Box<dyn Fn() -> Vec<PathBuf> + Send + Sync>,
    /// The bandwidth limit in force now and its next change, as `status` shows it.
    pub bandwidth: Box<dyn Fn() -> Option<crate::bandwidth::BandwidthNow> + Send + Sync>,
    /// The cap a refused chunk set on `chunk_size = "auto"` now, as `status` shows it.
    pub chunk_cap: Box<dyn Fn() -> Option<crate::vmpro::link::ChunkCap> + Send + Sync>,
    /// The agents on each folder and their claims, as `status` shows them (read from the
    /// folders: for `/api/status` and the page only, not `/healthz`).
    pub agents: Box<dyn Fn() -> AgentsOnFolders + Send + Sync>,
}

/// See [`StatusSource::agents`].
pub type AgentsOnFolders = crate::shared_folder::Surveys;

/// The read side of one listener.
struct Reader {
    source: StatusSource,
    /// Opened at the first request that needs it, and again after a failure.
    store: Mutex<Option<Arc<JobStore>>>,
    /// This machine's name, for the page's title.
    host_name: String,
}

/// Listens on `settings.listen` until `shutdown`. An address that cannot be bound (taken by
/// another program) is logged and tried again, with growing pauses: the listener must never
/// stop the uploads, nor give up for good.
pub async fn serve(settings: HttpSettings, source: StatusSource, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(1);
    let mut failures = 0u32;
    let listener = loop {
        match TcpListener::bind(settings.listen).await {
            Ok(listener) => break listener,
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(
                        "cannot listen on {} ([http] listen): {err}; no metrics, health or status page until it can (trying again, less and less often)",
                        settings.listen
                    );
                } else {
                    tracing::debug!("cannot listen on {} yet: {err}", settings.listen);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(BIND_RETRY_CAP);
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(err) => {
            tracing::error!("the HTTP listener has no address: {err}");
            return;
        }
    };
    if !bound.ip().to_canonical().is_loopback() {
        tracing::warn!(
            "the HTTP listener on {bound} is reachable from other machines and has no authentication"
        );
    }
    tracing::info!(
        "listening on http://{bound}/ (status page; /metrics, /healthz, /api/status){}",
        if failures > 0 { " at last" } else { "" }
    );
    let host_name = host_name();
    let mut names = vec![host_name.clone()];
    let node = host_name.clone();
    let lookup = tokio::task::spawn_blocking(move || canonical_name(&node));
    if let Ok(Ok(Some(full))) = tokio::time::timeout(NAME_LOOKUP_PATIENCE, lookup).await {
        names.push(full);
    }
    let allowed = Arc::new(AllowedHosts::new(bound, &names, &settings.allowed_hosts));
    let reader = Arc::new(Reader {
        source,
        store: Mutex::new(None),
        host_name,
    });
    accept_loop(listener, allowed, reader, shutdown).await;
}

async fn accept_loop(
    listener: TcpListener,
    allowed: Arc<AllowedHosts>,
    reader: Arc<Reader>,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let Some(open) = lock(&connections).admit() else {
                    tracing::debug!(
                        "HTTP: {CONNECTIONS_BUSY_LIMIT} connections are in the middle of a request; closing a new one"
                    );
                    continue;
                };
                let allowed = allowed.clone();
                let reader = reader.clone();
                let shutdown = shutdown.clone();
                let connections = connections.clone();
                tokio::spawn(async move {
                    serve_connection(stream, allowed, reader, &open, shutdown).await;
                    lock(&connections).open.remove(&open.id);
                });
            }
            Err(err) => {
                // Usually out of file descriptors: wait for some to close, do not spin.
                tracing::debug!("the HTTP listener could not accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    // Every change is a map insert or remove: a panic elsewhere leaves it whole.
    connections.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connections being served, oldest first, so that a new one can take the place of the
/// oldest that is idle.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: std::collections::BTreeMap<u64, OpenConnection>,
}

/// One connection as [`Connections`] sees it.
#[derive(Clone)]
struct OpenConnection {
    id: u64,
    /// Set while a request of it is being answered (its headers are in): not closed for room.
    busy: Arc<AtomicBool>,
    /// Cancelled to close it, to make room.
    close: CancellationToken,
}

impl Connections {
    /// Takes a new connection in, closing the oldest idle one when every place is taken;
    /// `None` when even that is not possible (see [`CONNECTIONS_BUSY_LIMIT`]).
    fn admit(&mut self) -> Option<OpenConnection> {
        if self.open.len() >= MAX_CONNECTIONS {
            let idle = self
                .open
                .values()
                .find(|open| !open.busy.load(Ordering::Relaxed))
                .map(|open| open.id);
            match idle {
                Some(id) => {
                    if let Some(evicted) = self.open.remove(&id) {
                        evicted.close.cancel();
                    }
                }
                None if self.open.len() >= CONNECTIONS_BUSY_LIMIT => return None,
                None => {}
            }
        }
        self.next_id += 1;
        let open = OpenConnection {
            id: self.next_id,
            busy: Arc::new(AtomicBool::new(false)),
            close: CancellationToken::new(),
        };
        self.open.insert(open.id, open.clone());
        Some(open)
    }
}

async fn serve_connection(
    stream: TcpStream,
    allowed: Arc<AllowedHosts>,
    reader: Arc<Reader>,
    open: &OpenConnection,
    shutdown: CancellationToken,
) {
    let busy = open.busy.clone();
    let service = service_fn(move |request| {
        let allowed = allowed.clone();
        let reader = reader.clone();
        let busy = busy.clone();
        async move {
            busy.store(true, Ordering::Relaxed);
            let answer = answer(&allowed, reader, request).await;
            busy.store(false, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_PATIENCE)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!("HTTP connection ended: {}", chain(&err));
            }
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            tracing::debug!("HTTP connection closed after {CONNECTION_LIFETIME:?}");
        }
        _ = open.close.cancelled() => {
            tracing::debug!("HTTP connection closed to make room for a new one");
        }
        _ = shutdown.cancelled() => {}
    }
}

/// The answer to one request.
async fn answer(allowed: &AllowedHosts, reader: Arc<Reader>, request: Request<Incoming>) -> Answer {
    match requested_host(&request) {
        Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        Ok(Some(host)) if !allowed.allows(&host) => {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "This is hotfolder's status listener; it answers requests for {} only \
                     (more names: [http] allowed_hosts).\n",
                    allowed.shown()
                ),
            );
        }
        // Allowed, or HTTP/1.0 without a Host: a client older than the header, not a page in
        // a browser (every browser sends one).
        Ok(_) => {}
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut refused = text(StatusCode::METHOD_NOT_ALLOWED, "Only GET and HEAD.\n");
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let route = match request.uri().path() {
        "/" => Route::Page,
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        "/api/status" => Route::Status,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "Not found. There are /, /metrics, /healthz and /api/status.\n",
            );
        }
    };
    // The store is read on a blocking thread: SQLite waits on the disk.
    let read = tokio::task::spawn_blocking(move || reader.respond(route)).await;
    match read {
        Ok(answer) => answer,
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reading the status failed: {err}\n"),
        ),
    }
}

/// The host a request is for: its URI's authority in the absolute form (`GET http://h/ …`,
/// where the `Host` header must be ignored), else its one `Host` header; `None` for HTTP/1.0
/// without one. Two `Host` headers, or none on HTTP/1.1, are refused (RFC 9112, 3.2).
fn requested_host<B>(request: &Request<B>) -> Result<Option<String>, &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("More than one Host header.");
    }
    if let Some(authority) = request.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("A login in the request's URI is not accepted here.");
        }
        return Ok(Some(authority.as_str().to_owned()));
    }
    match first {
        Some(host) => host
            .to_str()
            .map(|host| Some(host.to_owned()))
            .map_err(|_| "The Host header is not text."),
        None if request.version() <= hyper::Version::HTTP_10 => Ok(None),
        None => Err("The request has no Host header (HTTP/1.1 requires one)."),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Page,
    Metrics,
    Health,
    Status,
}

impl Reader {
    /// Reads what `route` shows from the store and renders it.
    fn respond(&self, route: Route) -> Answer {
        let store = match self.store() {
            Ok(store) => store,
            Err(err) => return self.unreadable(route, &err),
        };
        let state_dir = &self.source.state_dir;
        let snapshot = match StatusSnapshot::read_state_dir(&store, state_dir, RECENT_SHOWN) {
            Ok(mut snapshot) => {
                snapshot.bandwidth = (self.source.bandwidth)();
                snapshot.chunk_cap = (self.source.chunk_cap)();
                snapshot
            }
            Err(err) => {
                // Perhaps replaced under us (the agent then exits): open it afresh next time.
                *self.store.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return self.unreadable(route, &err);
            }
        };
        match route {
            Route::Status => {
                let mut snapshot = snapshot;
                snapshot.set_surveys((self.source.agents)());
                json(StatusCode::OK, &to_json(&snapshot))
            }
            Route::Health => {
                let folders = self.folders(&snapshot);
                let (healthy, body) = health::health(&snapshot, &folders);
                let status = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, &body)
            }
            Route::Metrics => {
                let folders = self.folders(&snapshot);
                let read = store
                    .last_upload_at()
                    .and_then(|at| Ok((at, store.notifications_pending()?)));
                let (last_upload, notifications_pending) = match read {
                    Ok(read) => read,
                    Err(err) => return self.unreadable(route, &err),
                };
                let figures = metrics::StoreFigures {
                    snapshot: &snapshot,
                    folders: &folders,
                    last_upload,
                    notifications_pending,
                };
                let body = metrics::render(&self.source.counters, &figures);
                let mut answer = Response::new(Full::new(Bytes::from(body)));
                answer.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                with_common_headers(answer)
            }
            Route::Page => {
                let mut snapshot = snapshot;
                snapshot.set_surveys((self.source.agents)());
                let body = page::render(&snapshot, &ReportClock::system(), &self.host_name);
                let mut answer = Response::new(Full::new(Bytes::from(body)));
                let headers = answer.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(page::content_security_policy()),
                );
                with_common_headers(answer)
            }
        }
    }

    /// The read-only store, opened now if it is not yet.
    fn store(&self) -> Result<Arc<JobStore>, StoreError> {
        let mut slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(JobStore::open_read_only(&self.source.state_dir)?);
        *slot = Some(store.clone());
        Ok(store)
    }

    fn folders(&self, snapshot: &StatusSnapshot) -> Vec<FolderHealth> {
        folder_health(&(self.source.folders)(), snapshot)
    }

    /// The store cannot be read: 503 everywhere, since nothing can be told.
    fn unreadable(&self, route: Route, err: &StoreError) -> Answer {
        let why = format!("the state store cannot be read: {}", chain(err));
        tracing::debug!("HTTP {route:?}: {why}");
        match route {
            Route::Health | Route::Status => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "unhealthy", "reason": why, "reasons": [why]}),
            ),
            Route::Metrics | Route::Page => text(StatusCode::SERVICE_UNAVAILABLE, &(why + "\n")),
        }
    }
}

/// The `Host` values the listener answers: its own address as clients write it, with its port
/// or without one (a client on the scheme's default port, a proxy that drops it); `localhost`
/// for a loopback address; for every interface (`0.0.0.0`, `::`) any IP address; this
/// machine's names (its node name, `name.local` and its fully qualified name, as the resolver
/// gives it); and the entries of `[http] allowed_hosts` (a reverse proxy's name, a DNS alias).
/// A name that merely ends in the machine's name is not enough: an attacker can make
/// `edit-bay-3.evil.example` resolve to this machine.
#[derive(Debug)]
struct AllowedHosts {
    port: u16,
    /// Lower case, without the port: answered with the listener's port or none.
    names: Vec<String>,
    /// `allowed_hosts`: a name (lower case) and the one port it is answered with, or any.
    extra: Vec<(String, Option<u16>)>,
    /// The address it listens on (`None`: every address of this machine).
    address: Option<IpAddr>,
}

impl AllowedHosts {
    fn new(bound: SocketAddr, machine_names: &[String], extra: &[String]) -> AllowedHosts {
        let ip = bound.ip().to_canonical();
        let mut names = Vec::new();
        if ip.is_loopback() || ip.is_unspecified() {
            names.push("localhost".to_owned());
        }
        for name in machine_names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() || name == "localhost" {
                continue;
            }
            if !name.contains('.') {
                names.push(format!("{name}.local"));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let extra = extra
            .iter()
            .filter_map(|entry| {
                let (name, port) = split_host(entry)?;
                Some((name.to_ascii_lowercase(), port))
            })
            .collect();
        AllowedHosts {
            port: bound.port(),
            names,
            extra,
            address: (!ip.is_unspecified()).then_some(ip),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let name = name.trim_end_matches('.');
        if self.extra.iter().any(|(allowed, allowed_port)| {
            allowed.eq_ignore_ascii_case(name) && allowed_port.is_none_or(|p| port == Some(p))
        }) {
            return true;
        }
        if port.is_some_and(|port| port != self.port) {
            return false;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return match self.address {
                Some(address) => address == ip.to_canonical(),
                // Any address of this machine: an IP address cannot be rebound to another
                // machine, so none is a foreign name.
                None => true,
            };
        }
        self.names
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }

    /// What the refusal says to use.
    fn shown(&self) -> String {
        let address = match self.address {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Some(ip) => format!("{ip}:{}", self.port),
            None => format!("this machine's addresses, port {}", self.port),
        };
        match self.names.first() {
            Some(name) => format!("{address} (or {name}:{})", self.port),
            None => address,
        }
    }
}

/// A `Host` header split into its name (without brackets) and port (`None` when absent).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((name, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((name, None)),
            None => None,
        };
    }
    match host.rsplit_once(':') {
        // A bare IPv6 address without brackets is not a valid Host.
        Some((name, _)) if name.contains(':') => None,
        Some((name, port)) => Some((name, Some(port.parse().ok()?))),
        None => Some((host, None)),
    }
}

/// This machine's name, as `uname -n` says it.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// This machine's fully qualified name, as `hostname -f` finds it: the resolver's canonical
/// name for its node name (`/etc/hosts`, then DNS). `None` when it has none.
fn canonical_name(node: &str) -> Option<String> {
    let node = std::ffi::CString::new(node).ok()?;
    // SAFETY: an all-zero addrinfo is the documented "no hints" value; fields are set below.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut found: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `node` is a NUL-terminated string, `hints` and `found` are valid for the call;
    // the list it returns is freed below, once, and read only before that.
    let rc = unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), &hints, &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: `found` is the non-null head of the list getaddrinfo returned; its canonical
    // name, when set, is a NUL-terminated string that lives until freeaddrinfo.
    let name = unsafe {
        let canonical = (*found).ai_canonname;
        let name = (!canonical.is_null()).then(|| {
            std::ffi::CStr::from_ptr(canonical)
                .to_string_lossy()
                .into_owned()
        });
        libc::freeaddrinfo(found);
        name
    };
    name.filter(|name| !name.is_empty())
}

/// Headers on every answer: no caching of live figures, no guessing of content types, no
/// framing, no referrer, nothing loaded (the page widens the policy for its style).
fn with_common_headers(mut answer: Answer) -> Answer {
    let headers = answer.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    answer
}

fn text(status: StatusCode, body: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_owned())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_common_headers(answer)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(value.to_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_common_headers(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_loopback_listener_answers_its_address_localhost_and_the_machines_names() {
        let machine = names(&["edit-bay-3", "edit-bay-3.studio.example"]);
        let allowed = AllowedHosts::new("127.0.0.1:9811".parse().unwrap(), &machine, &[]);
        for host in [
            "127.0.0.1:9811",
            "localhost:9811",
            "LOCALHOST:9811",
            // Without the port: a proxy that drops it, a client on the default port.
            "127.0.0.1",
            "localhost",
            "localhost.",
            "edit-bay-3:9811",
            "edit-bay-3.local",
            "Edit-Bay-3.Studio.Example:9811",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9811",
            "127.0.0.1:80",
            "localhost:80",
            "localhost.evil.example:9811",
            "edit-bay-3.evil.example:9811",
            "evil-edit-bay-3:9811",
            "127.0.0.2:9811",
            "[::1]:9811",
            "",
            "127.0.0.1:",
            "127.0.0.1:x",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
        assert_eq!(allowed.shown(), "127.0.0.1:9811 (or localhost:9811)");

        let v6 = AllowedHosts::new("[::1]:9811".parse().unwrap(), &machine, &[]);
        assert!(v6.allows("[::1]:9811"));
        assert!(v6.allows("[::1]"));
        assert!(v6.allows("localhost:9811"));
        assert!(!v6.allows("::1:9811"));
        assert!(!v6.allows("127.0.0.1:9811"));

        // An IPv4 address written as IPv6 (::ffff:127.0.0.1) is the same loopback address.
        let mapped = AllowedHosts::new("[::ffff:127.0.0.1]:9811".parse().unwrap(), &[], &[]);
        assert!(mapped.allows("127.0.0.1:9811"));
        assert!(mapped.allows("localhost:9811"));
    }

    #[test]
    fn allowed_hosts_add_names_with_their_port_or_any() {
        let extra = names(&["status.studio.example", "proxy.internal:8080", "[fd00::7]"]);
        let allowed = AllowedHosts::new("127.0.0.1:9811".parse().unwrap(), &[], &extra);
        for host in [
            "status.studio.example",
            "STATUS.studio.example:443",
            "proxy.internal:8080",
            "[fd00::7]:1",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "proxy.internal",
            "proxy.internal:9811",
            "studio.example",
            "x.status.studio.example",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn every_interface_answers_ip_addresses_and_the_machines_own_name() {
        let allowed = AllowedHosts::new(
            "0.0.0.0:9811".parse().unwrap(),
            &names(&["Edit-Bay-3"]),
            &[],
        );
        for host in [
            "192.168.1.20:9811",
            "[fe80::1]:9811",
            "localhost:9811",
            "edit-bay-3:9811",
            "edit-bay-3.local:9811",
            "edit-bay-3",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "edit-bay-3.evil.example:9811",
            "evil.example:9811",
            "192.168.1.20:80",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
        let one = AllowedHosts::new(
            "192.168.1.20:9811".parse().unwrap(),
            &names(&["edit-bay-3"]),
            &[],
        );
        assert!(one.allows("192.168.1.20:9811"));
        assert!(one.allows("edit-bay-3:9811"));
        assert!(!one.allows("192.168.1.21:9811"));
        assert!(!one.allows("localhost:9811"));
    }

    #[test]
    fn the_host_is_the_absolute_uri_s_else_the_one_host_header() {
        let request = |uri: &str, version, hosts: &[&str]| {
            let mut builder = Request::builder().uri(uri).version(version);
            for host in hosts {
                builder = builder.header(header::HOST, *host);
            }
            builder.body(()).unwrap()
        };
        let v11 = hyper::Version::HTTP_11;
        let v10 = hyper::Version::HTTP_10;
        assert_eq!(
            requested_host(&request("/", v11, &["127.0.0.1:9811"])),
            Ok(Some("127.0.0.1:9811".to_owned()))
        );
        // The absolute form wins over the header (RFC 9112, 3.2.2).
        assert_eq!(
            requested_host(&request(
                "http://evil.example/metrics",
                v11,
                &["127.0.0.1:9811"]
            )),
            Ok(Some("evil.example".to_owned()))
        );
        assert_eq!(
            requested_host(&request("http://127.0.0.1:9811/", v11, &[])),
            Ok(Some("127.0.0.1:9811".to_owned()))
        );
        assert_eq!(requested_host(&request("/", v10, &[])), Ok(None));
        assert!(requested_host(&request("/", v11, &[])).is_err());
        assert!(requested_host(&request("/", v11, &["127.0.0.1:9811", "evil.example"])).is_err());
        assert!(requested_host(&request("http://u:p@127.0.0.1:9811/", v11, &[])).is_err());
    }

    #[test]
    fn a_new_connection_takes_the_place_of_the_oldest_idle_one() {
        let mut connections = Connections::default();
        let first: Vec<OpenConnection> = (0..MAX_CONNECTIONS)
            .map(|_| connections.admit().unwrap())
            .collect();
        first[0].busy.store(true, Ordering::Relaxed);
        let next = connections.admit().unwrap();
        assert!(!first[0].close.is_cancelled(), "busy: kept");
        assert!(first[1].close.is_cancelled(), "the oldest idle one");
        assert!(!next.close.is_cancelled());
        assert_eq!(connections.open.len(), MAX_CONNECTIONS);
        // All busy: taken up to the busy limit, then refused.
        for open in connections.open.values() {
            open.busy.store(true, Ordering::Relaxed);
        }
        for _ in MAX_CONNECTIONS..CONNECTIONS_BUSY_LIMIT {
            let open = connections.admit().unwrap();
            open.busy.store(true, Ordering::Relaxed);
        }
        assert!(connections.admit().is_none());
    }
}
