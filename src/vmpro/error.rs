//! Every answer the platform can give, classified: retry, refresh the access token, renew the
//! upload URL, storage quota (1101), or permanent. And the errors an upload ends with, each
//! saying in words whether it is the file's fault or the account's/network's (which pauses the
//! queue instead of failing the file).

use std::time::Duration;

use serde_json::Value;

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
    /// Storage quota reached (1101): not the file's fault, do not retry now.
    Quota,
    /// Wrong username or password.
    Credentials,
    /// Anything else: the request will not succeed by repeating it.
    Permanent,
}

/// How much of an error body we keep for logs and sidecars.
pub const BODY_EXCERPT_LIMIT: usize = 300;

/// Classifies an HTTP answer to `step`.
pub fn classify(
    step: Step,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Disposition {
    if matches!(status, 200..=299) {
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
        (Step::Chunk, 400 | 404 | 409 | 410 | 412 | 422) => Disposition::RestartContent,
        (Step::CreateVideo | Step::UploadUrl | Step::FindVideo | Step::RemoveMarker, 401) => {
            Disposition::RefreshToken
        }
        _ => Disposition::Permanent,
    }
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
/// `errorMessage` of a JSON body, else the start of the body as text.
pub fn server_message(body: &[u8]) -> String {
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

    /// A 2xx answer that does not say what the protocol promises (no `Location`, bad JSON).
    #[error("{step}: unexpected answer from the server: {message}")]
    Protocol { step: Step, message: String },

    /// Every try of one request failed; `last` says how.
    #[error("{step}: gave up after {attempts} tries: {last}")]
    GaveUp {
        step: Step,
        attempts: u32,
        last: Box<VmproError>,
    },

    /// The local file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is empty: nothing to upload, and the platform cannot take it.
    #[error("{path} is empty (0 bytes): nothing to upload")]
    EmptyFile { path: std::path::PathBuf },

    /// The file changed (size or mtime) while it was being uploaded.
    #[error("{path} changed while it was uploading ({what})")]
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

impl VmproError {
    /// Who is at fault, which decides where the file goes.
    pub fn blame(&self) -> Blame {
        match self {
            VmproError::Unreachable { .. } | VmproError::Quota { .. } => Blame::AccountOrNetwork,
            VmproError::Credentials { .. } => Blame::AccountOrNetwork,
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
            VmproError::Cancelled => Blame::Cancelled,
            // The state store failing is not the file's fault; the pause probes until it works.
            VmproError::NotRecorded { .. } => Blame::AccountOrNetwork,
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
            VmproError::Status { .. }
            | VmproError::Protocol { .. }
            | VmproError::Read { .. }
            | VmproError::EmptyFile { .. }
            | VmproError::CreateUnconfirmed { .. } => Blame::File,
        }
    }

    /// The HTTP status behind this error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            VmproError::Status { status, .. }
            | VmproError::Quota { status, .. }
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
                "the platform could not be reached; the file will be tried again".into()
            }
            VmproError::Quota { .. } => {
                "the account's booked storage is full: free space or book more, then it is tried again".into()
            }
            VmproError::Credentials { .. } => {
                "the username or password in the config is wrong".into()
            }
            VmproError::Status { status: 415, .. } => {
                "the platform does not accept this file type".into()
            }
            VmproError::Status { status, .. } if (400..500).contains(status) => {
                "the platform refused this file or request".into()
            }
            VmproError::Status { .. } => "the platform had an error".into(),
            VmproError::Protocol { .. } => "the platform answered in an unexpected way".into(),
            VmproError::GaveUp { last, .. } => format!("{} (retried until the limit)", last.meaning()),
            VmproError::Read { .. } => "the file could not be read (permissions?)".into(),
            VmproError::EmptyFile { .. } => "the file is empty; nothing was sent".into(),
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
                classify(Step::Chunk, status, b"", None),
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
                    classify(Step::Chunk, status, body, None),
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
    fn chunk_answers() {
        assert_eq!(classify(Step::Chunk, 401, b"", None), Disposition::RenewUrl);
        assert_eq!(
            classify(Step::Chunk, 403, br#"{"message":"token expired"}"#, None),
            Disposition::RenewUrl
        );
        assert_eq!(
            classify(Step::Chunk, 409, b"", None),
            Disposition::RestartContent
        );
        assert_eq!(
            classify(Step::Chunk, 415, b"", None),
            Disposition::Permanent
        );
        assert_eq!(
            classify(Step::Chunk, 429, b"", Some(Duration::from_secs(3))),
            Disposition::Retry {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn api_answers() {
        assert_eq!(
            classify(Step::CreateVideo, 401, b"", None),
            Disposition::RefreshToken
        );
        assert_eq!(
            classify(Step::CreateVideo, 415, b"", None),
            Disposition::Permanent
        );
        assert_eq!(
            classify(Step::CreateVideo, 403, b"{}", None),
            Disposition::Permanent
        );
        assert_eq!(
            classify(Step::Login, 401, b"", None),
            Disposition::Credentials
        );
        assert_eq!(
            classify(Step::UploadUrl, 503, b"", None),
            Disposition::Retry { retry_after: None }
        );
    }

    #[test]
    fn a_broken_login_answer_blames_the_account_not_the_file() {
        let protocol = |step| VmproError::Protocol {
            step,
            message: "the token answer is not the expected JSON".into(),
        };
        assert_eq!(protocol(Step::Login).blame(), Blame::AccountOrNetwork);
        assert_eq!(protocol(Step::Refresh).blame(), Blame::AccountOrNetwork);
        assert_eq!(protocol(Step::CreateVideo).blame(), Blame::File);
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
                let d = classify(step, status, &body, None);
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
