//! Every answer the platform can give, classified: retry, refresh the access token, renew the
//! upload URL, storage quota (1101), or permanent. And the errors an upload ends with, each
//! saying in words whether it is the file's fault or the account's/network's (which pauses the
//! queue instead of failing the file).

use std::time::Duration;

use serde_json::Value;

use crate::escape::escaped;

/// Which request of the protocol an answer belongs to, for messages and classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Login,
    Refresh,
    CreateVideo,
    /// Looking up a video by the job's marker keyword (vmpro-protocol.md section 4).
    FindVideo,
    /// Reading or deleting a video's keywords, to take the marker off again.
    RemoveMarker,
    /// `check`'s one look at the VideoManager (does the platform know `video_manager_id`?).
    CheckVideoManager,
    /// Does an uploaded video still exist (`GET …/videos/{id}`), before done/ retention deletes
    /// its file.
    GetVideo,
    /// How far the platform has transcoded an uploaded video (`follow_transcoding`).
    TranscodingStatus,
    /// A companion's further channels, custom metadata or publish, after the upload
    /// (`crate::metadata::apply`).
    CompanionMetadata,
    UploadUrl,
    Chunk,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Login => "login",
            Step::Refresh => "token refresh",
            Step::CreateVideo => "create video",
            Step::FindVideo => "look up video by marker",
            Step::RemoveMarker => "remove marker keyword",
            Step::CheckVideoManager => "check VideoManager",
            Step::GetVideo => "check the video still exists",
            Step::TranscodingStatus => "transcoding status",
            Step::CompanionMetadata => "apply the companion's metadata",
            Step::UploadUrl => "get upload URL",
            Step::Chunk => "chunk upload",
        })
    }
}

/// What to do about one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// 200, 201, 202: done.
    Accepted,
    /// Transient: wait (at least `retry_after`) and send the same request again.
    Retry { retry_after: Option<Duration> },
    /// 401 on an API call: the access token is stale; refresh it once and retry once.
    RefreshToken,
    /// 401/403 on a chunk: the upload URL's token expired or was refused; fetch a new URL for
    /// the same video and send the same chunk again.
    RenewUrl,
    /// A chunk refused in a way that means "start over" (out of order, unknown upload).
    RestartContent,
    /// A chunk refused for its size (413, or a 400 saying "too large"): smaller chunks may pass (the docs suggest up to
    /// 10 MB; anything above is untested against the platform).
    ChunkTooLarge,
    /// Storage quota reached (1101): not the file's fault, do not retry now.
    Quota,
    /// Wrong username or password.
    Credentials,
    /// A refusal every file would get alike: the account may not create videos (403), the
    /// VideoManager does not exist (404), a redirect to somewhere else than the API (a
    /// maintenance page). Not the file's fault: the queue pauses and no file moves.
    AccountWide,
    /// Anything else: the request will not succeed by repeating it.
    Permanent,
}

/// How much of an error body we keep for logs and sidecars.
pub const BODY_EXCERPT_LIMIT: usize = 300;

/// Classifies an HTTP answer to `step`: its status, `Content-Type` header and body.
pub fn classify(
    step: Step,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Disposition {
    if matches!(status, 200..=299) {
        // No API step answers with a web page: a 2xx HTML page is a maintenance page or a
        // captive portal in front of the platform, which has not seen the request (a chunk
        // answered so was not stored). Retried like a 503, then the queue pauses. (A login
        // answered so is not JSON, which says the same: see `auth`.)
        if !matches!(step, Step::Login | Step::Refresh) && is_html(content_type, body) {
            return Disposition::Retry { retry_after };
        }
        return Disposition::Accepted;
    }
    // 1101 can hide in any non-2xx body, even a 500: it wins over everything else, so that a
    // full account never turns into a retry storm.
    if is_quota_body(body) {
        return Disposition::Quota;
    }
    match (step, status) {
        (_, 408 | 429 | 500 | 502 | 503 | 504) => Disposition::Retry { retry_after },
        (Step::Login, 400 | 401 | 403) => Disposition::Credentials,
        // A refused refresh token: log in with the password again (the caller does that).
        (Step::Refresh, 400 | 401 | 403) => Disposition::RefreshToken,
        (Step::Chunk, 401 | 403) => Disposition::RenewUrl,
        (Step::Chunk, 413) => Disposition::ChunkTooLarge,
        // Some servers and proxies refuse a body over their limit with a 400 that says so
        // ("Request Entity Too Large"): the same refusal of the size, not a broken upload.
        (Step::Chunk, 400) if says_too_large(body) => Disposition::ChunkTooLarge,
        (Step::Chunk, 400 | 404 | 409 | 410 | 412 | 422) => Disposition::RestartContent,
        (
            Step::CreateVideo
            | Step::UploadUrl
            | Step::FindVideo
            | Step::RemoveMarker
            | Step::CheckVideoManager
            | Step::GetVideo
            | Step::TranscodingStatus
            | Step::CompanionMetadata,
            401,
        ) => Disposition::RefreshToken,
        // The account's rights (the caller refreshes the token once first, so a token issued
        // before a change of rights is not mistaken for them) and the VideoManager in the path.
        (Step::CreateVideo | Step::UploadUrl | Step::CheckVideoManager, 403)
        | (Step::CreateVideo | Step::CheckVideoManager, 404) => Disposition::AccountWide,
        // Redirects are not followed (see `Transport::new`): the answer came from somewhere
        // that is not the API, for every file alike.
        (Step::CreateVideo | Step::UploadUrl | Step::Chunk, 300..=399) => Disposition::AccountWide,
        _ => Disposition::Permanent,
    }
}

/// Whether an answer's body says the request was too large (any case), as a 400 for a body
/// over a server's limit does.
fn says_too_large(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"too large";
    body.windows(NEEDLE.len())
        .any(|window| window.eq_ignore_ascii_case(NEEDLE))
}

/// Whether an answer is a web page: an HTML `Content-Type`, or a body that starts like one.
pub fn is_html(content_type: Option<&str>, body: &[u8]) -> bool {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if matches!(
        media_type.as_deref(),
        Some("text/html" | "application/xhtml+xml")
    ) {
        return true;
    }
    let start = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = &start[start
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(start.len())..];
    let head = String::from_utf8_lossy(&start[..start.len().min(16)]).to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// The `<title>` of an HTML page, if it has one (what a maintenance page says in a few words).
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = excerpt(text[start..end].as_bytes());
    (!title.is_empty()).then_some(title)
}

/// Whether an error body says "storage quota reached": 1101 as a number or string in `code`,
/// `errorCode`, `error` or `message` (at any depth), or the words "storage" with "limit" or
/// "capacity". The body format is undocumented, so plain text is searched too.
pub fn is_quota_body(body: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(body).to_lowercase();
    if lower.contains("storage") && (lower.contains("limit") || lower.contains("capacity")) {
        return true;
    }
    match serde_json::from_slice::<Value>(body) {
        // A bare `1101` or `"1101"` as the whole body counts too.
        Ok(json) => json_has_quota_code(&json) || value_says_1101(&json),
        // Plain text such as "error 1101: upload denied", but not "11010" or an id containing it.
        Err(_) => lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "1101"),
    }
}

fn json_has_quota_code(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| {
            let keyed = matches!(key.as_str(), "code" | "errorCode" | "error" | "message");
            (keyed && value_says_1101(v)) || json_has_quota_code(v)
        }),
        Value::Array(items) => items.iter().any(json_has_quota_code),
        _ => false,
    }
}

fn value_says_1101(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_u64() == Some(1101),
        Value::String(s) => s
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "1101"),
        _ => false,
    }
}

/// The server's own words from an error body: `message`, `error_description`, `error`,
/// `errorMessage` of a JSON body, a web page's title, else the start of the body as text.
pub fn server_message(body: &[u8]) -> String {
    if is_html(None, body) {
        return match html_title(body) {
            Some(title) => format!("a web page ({title:?}) instead of the platform's answer"),
            None => "a web page instead of the platform's answer".into(),
        };
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        for key in [
            "message",
            "error_description",
            "errorMessage",
            "error",
            "detail",
        ] {
            if let Some(Value::String(s)) = map.get(key)
                && !s.trim().is_empty()
            {
                return excerpt(s.as_bytes());
            }
        }
    }
    excerpt(body)
}

/// The first [`BODY_EXCERPT_LIMIT`] bytes of a body as one line of text.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT_LIMIT)];
    let text = String::from_utf8_lossy(cut);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if body.len() > BODY_EXCERPT_LIMIT {
        format!("{trimmed}…")
    } else {
        trimmed.to_string()
    }
}

/// Why an upload (or one request of it) did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VmproError {
    /// Connection refused, DNS, TLS, timeout, connection lost: the network or the server is
    /// down. Transient; after all tries it pauses the queue rather than failing the file.
    #[error("{step}: could not reach the server: {message}")]
    Unreachable { step: Step, message: String },

    /// A non-2xx answer.
    #[error("{step}: the server answered {status}: {message}")]
    Status {
        step: Step,
        status: u16,
        message: String,
        disposition: Disposition,
    },

    /// 1101: the account's booked storage is full.
    #[error(
        "{step}: storage quota reached (1101: upload denied because the booked storage capacity is used up); the server answered {status}: {message}"
    )]
    Quota {
        step: Step,
        status: u16,
        message: String,
    },

    /// The login was refused.
    #[error(
        "login refused for user {username:?}: wrong username or password ({status}: {message})"
    )]
    Credentials {
        username: String,
        status: u16,
        message: String,
    },

    /// Logins with these credentials were refused again and again: none is sent until they
    /// change or the hold ends, so that retries do not lock the account (see `login_policy`).
    #[error(
        "login refused {refusals} times for user {username:?}; next try when the password changes ({how}) or at {at}"
    )]
    LoginHeld {
        username: String,
        refusals: u32,
        /// How to change the password for the source in use.
        how: String,
        /// The time of the next try, for people ("14:05 UTC").
        at: String,
        /// Until the next try.
        retry_in: Duration,
    },

    /// A 2xx answer that does not say what the protocol promises (no `Location`, bad JSON).
    #[error("{step}: unexpected answer from the server: {message}")]
    Protocol { step: Step, message: String },

    /// No request could be sent at all: this machine cannot make the HTTP client (no CA
    /// certificates for an https:// platform). Every file would fail alike.
    #[error("cannot build the HTTP client: {message}")]
    NoClient { message: String },

    /// Every try of one request failed; `last` says how.
    #[error("{step}: gave up after {attempts} tries: {last}")]
    GaveUp {
        step: Step,
        attempts: u32,
        last: Box<VmproError>,
    },

    /// The server refused a chunk for its size (413), and no smaller one is tried: the size
    /// is the config's (`chosen` false), or auto already halved it down to 1 MiB.
    #[error(
        "chunk upload: the server refuses chunks of {}: it answered {status}: {message}",
        crate::config::human_size(*chunk_size)
    )]
    ChunkTooLarge {
        chunk_size: u64,
        status: u16,
        message: String,
        chosen: bool,
    },

    /// The local file could not be read.
    #[error("cannot read {}", escaped(.path))]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is empty: nothing to upload, and the platform cannot take it.
    #[error("{} is empty (0 bytes): nothing to upload", escaped(.path))]
    EmptyFile { path: std::path::PathBuf },

    /// The file changed (size or mtime) while it was being uploaded.
    #[error("{} changed while it was uploading ({what})", escaped(.path))]
    FileChanged {
        path: std::path::PathBuf,
        what: String,
    },

    /// Shutdown was requested; the upload stopped between or during chunks and can resume.
    #[error("stopped by shutdown")]
    Cancelled,

    /// A create-video request may have made a video that cannot be found (no marker keyword,
    /// or the lookup refused), so no second one is created: a person has to look.
    #[error(
        "create video: the platform may have created a video for this file, and {why}; no second video is created"
    )]
    CreateUnconfirmed {
        why: String,
        #[source]
        source: Option<Box<VmproError>>,
    },

    /// The job's bookkeeping for a create-video request could not be saved, so the request was
    /// not sent: after a crash nobody would know to look for the video it made.
    #[error("cannot record {what}, so the create-video request was not sent")]
    NotRecorded {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The three kinds of outcome the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The file (or what the server thinks of it) is the problem: it goes to failed/.
    File,
    /// Credentials, quota, the network or the platform being down: every file would fail
    /// alike, so the queue pauses and files stay where they are.
    AccountOrNetwork,
    /// The file changed or vanished while it was sent: wait for it to settle and try again.
    StillChanging,
    /// Shutdown.
    Cancelled,
}

/// Whether reading a file failed in a way that may pass: an I/O error (a network share's
/// connection dropping shows as one), or a network file system that lost its server. A file
/// that cannot be read for these waits and is tried again instead of failing.
pub fn may_recover(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::EIO
                | libc::ENOTCONN
                | libc::ESTALE
                | libc::ETIMEDOUT
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::ECONNRESET
                | libc::ECONNABORTED
                | libc::ECONNREFUSED
                | libc::EAGAIN
                | libc::EINTR
        )
    )
}

impl VmproError {
    /// Who is at fault, which decides where the file goes.
    pub fn blame(&self) -> Blame {
        match self {
            VmproError::Unreachable { .. } | VmproError::Quota { .. } => Blame::AccountOrNetwork,
            VmproError::Credentials { .. } | VmproError::LoginHeld { .. } => {
                Blame::AccountOrNetwork
            }
            VmproError::GaveUp { last, .. } => match last.as_ref() {
                VmproError::Unreachable { .. } => Blame::AccountOrNetwork,
                // 5xx/429 for every try: the platform is down or throttling us, not the file.
                VmproError::Status {
                    disposition: Disposition::Retry { .. },
                    ..
                } => Blame::AccountOrNetwork,
                other => other.blame(),
            },
            VmproError::FileChanged { .. } => Blame::StillChanging,
            // A network share that dropped (or a disk that failed once): waited out like a file
            // still changing, on the same video, rather than failed for good.
            VmproError::Read { source, .. } if may_recover(source) => Blame::StillChanging,
            VmproError::Cancelled => Blame::Cancelled,
            // The state store failing is not the file's fault; the pause probes until it works.
            VmproError::NotRecorded { .. } => Blame::AccountOrNetwork,
            VmproError::NoClient { .. } => Blame::AccountOrNetwork,
            // No usable token (an answer that is not the expected JSON, a redirect, a 404 from
            // a wrong token_url): every file would fail alike, so none of them is to blame.
            VmproError::Status {
                step: Step::Login | Step::Refresh,
                ..
            }
            | VmproError::Protocol {
                step: Step::Login | Step::Refresh,
                ..
            } => Blame::AccountOrNetwork,
            // Refusals every file would get alike, and a token refused even after a refresh.
            VmproError::Status {
                disposition: Disposition::AccountWide | Disposition::RefreshToken,
                ..
            } => Blame::AccountOrNetwork,
            // An API answer without its `Location` (or a URL that cannot be built from
            // `api_url`) stops every file at the same step; a chunk's protocol errors (a server
            // that will not continue this upload) are about the file.
            VmproError::Protocol {
                step: Step::CreateVideo | Step::UploadUrl,
                ..
            } => Blame::AccountOrNetwork,
            VmproError::Status { .. }
            | VmproError::Protocol { .. }
            | VmproError::Read { .. }
            | VmproError::EmptyFile { .. }
            | VmproError::ChunkTooLarge { .. }
            | VmproError::CreateUnconfirmed { .. } => Blame::File,
        }
    }

    /// A 404 on create video: the platform does not know the VideoManager in its URL (which
    /// names nothing else). A problem of the folders that upload into it, not of every folder.
    pub fn is_unknown_video_manager(&self) -> bool {
        match self {
            VmproError::Status {
                step: Step::CreateVideo,
                status: 404,
                disposition: Disposition::AccountWide,
                ..
            } => true,
            VmproError::GaveUp { last, .. } => last.is_unknown_video_manager(),
            _ => false,
        }
    }

    /// The HTTP status behind this error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            VmproError::Status { status, .. }
            | VmproError::Quota { status, .. }
            | VmproError::ChunkTooLarge { status, .. }
            | VmproError::Credentials { status, .. } => Some(*status),
            VmproError::GaveUp { last, .. } => last.status(),
            VmproError::CreateUnconfirmed {
                source: Some(source),
                ..
            } => source.status(),
            _ => None,
        }
    }

    /// What this means, in words a video editor understands (for sidecars and `upload`).
    pub fn meaning(&self) -> String {
        match self {
            VmproError::Unreachable { .. } => {
                "the platform could not be reached (the network, or the platform is down)".into()
            }
            VmproError::Quota { .. } => {
                "the account's booked storage is full: free space or book more, then it is tried again".into()
            }
            VmproError::Credentials { .. } => {
                "the username or password in the config is wrong".into()
            }
            VmproError::LoginHeld { .. } => {
                "the platform refused the password several times; hotfolder waits for it to change rather than lock the account".into()
            }
            VmproError::Status { status: 415, .. } => {
                "the platform does not accept this file type".into()
            }
            VmproError::Status {
                status: 403,
                disposition: Disposition::AccountWide,
                ..
            } => "the platform does not let this account upload videos (its rights?); nothing is wrong with the file".into(),
            VmproError::Status {
                status: 404,
                disposition: Disposition::AccountWide,
                ..
            } => "the platform does not know this VideoManager: check video_manager_id".into(),
            VmproError::Status {
                disposition: Disposition::AccountWide | Disposition::RefreshToken,
                ..
            } => "the platform refused every upload alike (a redirect or a refused token); nothing is wrong with the file".into(),
            VmproError::Status {
                status: 200..=299,
                ..
            } => "the platform answered with a web page (down for maintenance?)".into(),
            VmproError::Status { status, .. } if (400..500).contains(status) => {
                "the platform refused this file or request".into()
            }
            VmproError::Status { .. } => "the platform had an error".into(),
            VmproError::Protocol { .. } => "the platform answered in an unexpected way".into(),
            VmproError::NoClient { .. } => {
                "this machine cannot connect to the platform as it is set up; nothing is wrong with the file".into()
            }
            VmproError::GaveUp { last, .. } => format!("{} (retried until the limit)", last.meaning()),
            VmproError::Read { source, .. } if may_recover(source) => {
                "the file could not be read just now (a network share that dropped?): hotfolder waits until it can be read and is stable, then sends it again to the same video".into()
            }
            VmproError::Read { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => {
                    "the file is gone: it was moved or deleted before it was read".into()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "hotfolder may not read the file: check its permissions".into()
                }
                std::io::ErrorKind::IsADirectory => "it is a folder, not a file".into(),
                _ => "the file could not be read".into(),
            },
            VmproError::EmptyFile { .. } => "the file is empty; nothing was sent".into(),
            VmproError::ChunkTooLarge { chosen: false, .. } => {
                "the platform refuses chunks of the size set in upload.chunk_size: set a smaller one, or \"auto\" (which halves the size when it is refused); nothing is wrong with the file".into()
            }
            VmproError::ChunkTooLarge { chosen: true, .. } => {
                "the platform refused even the smallest chunks (1 MiB) for their size".into()
            }
            VmproError::FileChanged { .. } => {
                "the file was still being written; it is uploaded again once it is stable".into()
            }
            VmproError::Cancelled => "hotfolder was stopped; the upload resumes on restart".into(),
            VmproError::CreateUnconfirmed { .. } => {
                "the platform may already hold an empty video for this file: check VideoManager Pro before uploading it again (moving it back into the watched folder makes a new video)".into()
            }
            VmproError::NotRecorded { .. } => {
                "hotfolder could not write to its state store; the file is tried again once it can".into()
            }
        }
    }

    /// The server's message (or our description) without the step prefix.
    pub fn server_message(&self) -> String {
        match self {
            VmproError::Status { message, .. }
            | VmproError::Quota { message, .. }
            | VmproError::ChunkTooLarge { message, .. }
            | VmproError::Credentials { message, .. } => message.clone(),
            VmproError::GaveUp { last, .. } => last.server_message(),
            other => crate::chain(other),
        }
    }

    /// Builds the error for a non-2xx answer.
    pub fn from_answer(step: Step, status: u16, body: &[u8], disposition: Disposition) -> Self {
        let message = server_message(body);
        match disposition {
            Disposition::Quota => VmproError::Quota {
                step,
                status,
                message,
            },
            disposition => VmproError::Status {
                step,
                status,
                message,
                disposition,
            },
        }
    }

    /// Builds the error for a request that got no answer. reqwest's message includes the URL,
    /// whose `__token__` is a secret: it is always removed.
    pub fn from_transport(step: Step, err: reqwest::Error) -> Self {
        let err = err.without_url();
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_request() {
            "connection lost"
        } else {
            "request failed"
        };
        let mut message = format!("{kind}: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        VmproError::Unreachable { step, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_answers() {
        for status in [200, 201, 202] {
            assert_eq!(
                classify(Step::Chunk, status, None, b"", None),
                Disposition::Accepted
            );
        }
    }

    #[test]
    fn quota_in_any_body_and_any_status() {
        for body in [
            &br#"{"code":1101,"message":"upload denied"}"#[..],
            br#"{"errorCode":"1101"}"#,
            br#"{"error":{"code":1101}}"#,
            br#"{"message":"Error 1101: denied"}"#,
            b"upload denied because you reached the limits of your booked storage capacity",
            b"1101",
        ] {
            for status in [403, 500, 400, 413] {
                assert_eq!(
                    classify(Step::Chunk, status, None, body, None),
                    Disposition::Quota,
                    "{status} {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert!(!is_quota_body(br#"{"code":11010,"message":"x"}"#));
        assert!(!is_quota_body(br#"{"id":1101}"#));
    }

    #[test]
    fn a_400_saying_too_large_is_a_refusal_of_the_size() {
        for body in [
            &br#"{"message":"Request Entity Too Large"}"#[..],
            b"<html><title>400 Request entity TOO LARGE</title></html>",
            b"payload too large",
        ] {
            assert_eq!(
                classify(Step::Chunk, 400, None, body, None),
                Disposition::ChunkTooLarge,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Other 400s on a chunk still restart the content; other steps are not chunks.
        assert_eq!(
            classify(Step::Chunk, 400, None, b"chunk out of order", None),
            Disposition::RestartContent
        );
        assert_eq!(
            classify(Step::CreateVideo, 400, None, b"title too large", None),
            Disposition::Permanent
        );
    }

    #[test]
    fn chunk_answers() {
        assert_eq!(
            classify(Step::Chunk, 401, None, b"", None),
            Disposition::RenewUrl
        );
        assert_eq!(
            classify(
                Step::Chunk,
                403,
                None,
                br#"{"message":"token expired"}"#,
                None
            ),
            Disposition::RenewUrl
        );
        assert_eq!(
            classify(Step::Chunk, 409, None, b"", None),
            Disposition::RestartContent
        );
        assert_eq!(
            classify(Step::Chunk, 415, None, b"", None),
            Disposition::Permanent
        );
        assert_eq!(
            classify(Step::Chunk, 429, None, b"", Some(Duration::from_secs(3))),
            Disposition::Retry {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn api_answers() {
        assert_eq!(
            classify(Step::CreateVideo, 401, None, b"", None),
            Disposition::RefreshToken
        );
        assert_eq!(
            classify(Step::CreateVideo, 415, None, b"", None),
            Disposition::Permanent
        );
        assert_eq!(
            classify(Step::Login, 401, None, b"", None),
            Disposition::Credentials
        );
        assert_eq!(
            classify(Step::UploadUrl, 503, None, b"", None),
            Disposition::Retry { retry_after: None }
        );
    }

    #[test]
    fn refusals_every_file_would_get_blame_the_account_and_file_refusals_the_file() {
        let blame = |step, status: u16, body: &[u8]| {
            let disposition = classify(step, status, None, body, None);
            VmproError::from_answer(step, status, body, disposition).blame()
        };
        let forbidden = br#"{"message":"user may not create videos"}"#;
        assert_eq!(
            classify(Step::CreateVideo, 403, None, forbidden, None),
            Disposition::AccountWide
        );
        assert_eq!(
            blame(Step::CreateVideo, 403, forbidden),
            Blame::AccountOrNetwork
        );
        assert_eq!(
            blame(Step::UploadUrl, 403, forbidden),
            Blame::AccountOrNetwork
        );
        // The VideoManager in the path does not exist.
        assert_eq!(
            blame(Step::CreateVideo, 404, b"{}"),
            Blame::AccountOrNetwork
        );
        // A redirect (to a maintenance page) is nobody's file.
        for step in [Step::CreateVideo, Step::UploadUrl, Step::Chunk] {
            assert_eq!(blame(step, 302, b""), Blame::AccountOrNetwork, "{step}");
        }
        // A 401 that a refreshed token did not cure.
        assert_eq!(blame(Step::CreateVideo, 401, b""), Blame::AccountOrNetwork);
        // 1101 in a 403 is the quota, not the account's rights.
        assert_eq!(
            classify(Step::CreateVideo, 403, None, br#"{"code":1101}"#, None),
            Disposition::Quota
        );
        // What is about this file still fails it.
        assert_eq!(blame(Step::CreateVideo, 415, b""), Blame::File);
        assert_eq!(blame(Step::CreateVideo, 400, b"{}"), Blame::File);
        assert_eq!(blame(Step::Chunk, 415, b""), Blame::File);
        assert_eq!(blame(Step::Chunk, 422, b""), Blame::File);
        // A 404 for one video (deleted on the platform) is about that file's upload.
        assert_eq!(blame(Step::UploadUrl, 404, b"{}"), Blame::File);
        // An answer without Location stops every file at the same step.
        let no_location = |step| VmproError::Protocol {
            step,
            message: "answer 201 has no Location header".into(),
        };
        assert_eq!(
            no_location(Step::CreateVideo).blame(),
            Blame::AccountOrNetwork
        );
        assert_eq!(
            no_location(Step::UploadUrl).blame(),
            Blame::AccountOrNetwork
        );
        assert_eq!(no_location(Step::Chunk).blame(), Blame::File);
    }

    #[test]
    fn a_2xx_web_page_is_a_maintenance_page_not_an_answer() {
        let page =
            b"\n <!DOCTYPE html><html><head><title>Scheduled maintenance</title></head></html>";
        for step in [Step::CreateVideo, Step::UploadUrl, Step::Chunk] {
            assert_eq!(
                classify(step, 200, None, page, None),
                Disposition::Retry { retry_after: None },
                "{step}"
            );
            // The Content-Type alone says it too.
            assert_eq!(
                classify(step, 201, Some("text/html; charset=utf-8"), b"ok", None),
                Disposition::Retry { retry_after: None },
                "{step}"
            );
            assert_eq!(
                classify(step, 202, Some("application/json"), b"{}", None),
                Disposition::Accepted
            );
        }
        assert_eq!(
            server_message(page),
            "a web page (\"Scheduled maintenance\") instead of the platform's answer"
        );
        // Given up on after every try: the platform's problem, said in words.
        let err = VmproError::GaveUp {
            step: Step::CreateVideo,
            attempts: 8,
            last: Box::new(VmproError::from_answer(
                Step::CreateVideo,
                200,
                page,
                Disposition::Retry { retry_after: None },
            )),
        };
        assert_eq!(err.blame(), Blame::AccountOrNetwork);
        assert!(err.meaning().contains("maintenance"), "{}", err.meaning());
        assert!(!is_html(None, b"{\"message\":\"<html>\"}"));
    }

    #[test]
    fn a_broken_login_answer_blames_the_account_not_the_file() {
        let protocol = |step| VmproError::Protocol {
            step,
            message: "the token answer is not the expected JSON".into(),
        };
        assert_eq!(protocol(Step::Login).blame(), Blame::AccountOrNetwork);
        assert_eq!(protocol(Step::Refresh).blame(), Blame::AccountOrNetwork);
        assert_eq!(protocol(Step::Chunk).blame(), Blame::File);
        let redirected = VmproError::from_answer(Step::Login, 302, b"", Disposition::Permanent);
        assert_eq!(redirected.blame(), Blame::AccountOrNetwork);
    }

    #[test]
    fn server_message_prefers_json_fields_and_is_short() {
        assert_eq!(
            server_message(br#"{"message":"no such video"}"#),
            "no such video"
        );
        assert_eq!(
            server_message(
                br#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#
            ),
            "Invalid user credentials"
        );
        let long = vec![b'x'; 5000];
        assert!(server_message(&long).chars().count() <= BODY_EXCERPT_LIMIT + 1);
        assert_eq!(server_message(b"line1\nline2"), "line1 line2");
    }

    proptest! {
        #[test]
        fn classification_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..400)) {
            for step in [Step::Login, Step::Refresh, Step::CreateVideo, Step::UploadUrl, Step::Chunk] {
                let d = classify(step, status, None, &body, None);
                if (200..300).contains(&status) {
                    prop_assert_eq!(d, Disposition::Accepted);
                } else {
                    prop_assert_ne!(d, Disposition::Accepted);
                }
            }
            let _ = server_message(&body);
        }
    }
}
