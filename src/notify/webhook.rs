//! Webhooks: one POST per event, its body the event as JSON (the contract's) or a Slack-style
//! `{"text": …}`, signed with HMAC-SHA256 when a secret is set; and what the answer means
//! for the event (delivered, refused for good, or to be tried again).

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

use super::event::{EventKind, Notice};
use super::secret_url::SecretUrl;
use crate::chain;
use crate::config::WebhookFormat;
use crate::escape::escaped;
use crate::retry::parse_retry_after;

/// The header that carries the signature: `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "X-Hotfolder-Signature";

/// How long one POST may take: a destination that hangs is tried again later, it never holds
/// up the events of other destinations (each has its own task) nor any upload.
pub(super) const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of one try at delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// The destination took it (`2xx`).
    Delivered,
    /// The destination will never take it (a `4xx` other than 408 and 429): dropped at once,
    /// so one bad event does not block the others.
    Refused(String),
    /// Try again later (no answer, a `5xx`, 408, 429, a redirect), not before `retry_after`
    /// when the destination asked for that.
    Failed {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// The HTTP client every webhook shares.
pub(super) fn client() -> Result<reqwest::Client, String> {
    // reqwest is built without a default TLS provider (see vmpro::api::Transport).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let configure = || {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(POST_TIMEOUT)
            // A followed 301/302 would turn the POST into a GET without the event.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hotfolder/", env!("CARGO_PKG_VERSION")))
    };
    // One client for every destination, any of which may be https://.
    crate::vmpro::system_roots::build(configure, true)
        .map_err(|err| format!("cannot build the HTTP client: {err}"))
}

/// The body sent for an event: the stored JSON as it is, or the Slack text.
pub(super) fn body(format: WebhookFormat, stored: &str, notice: &Notice) -> String {
    match format {
        WebhookFormat::Json => stored.to_owned(),
        WebhookFormat::Slack => serde_json::json!({ "text": slack_text(notice) }).to_string(),
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`.
pub(super) fn signature(secret: &SecretString, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one body and judges the answer.
pub(super) async fn post(
    client: &reqwest::Client,
    url: &SecretUrl,
    body: String,
    secret: Option<&SecretString>,
) -> Answer {
    let mut request = client
        .post(url.expose().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, body.as_bytes()));
    }
    match request.body(body).send().await {
        Ok(response) => judge(
            response.status().as_u16(),
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        ),
        // Without the URL: it may carry a token.
        Err(err) => Answer::Failed {
            why: chain(&err.without_url()),
            retry_after: None,
        },
    }
}

/// What an HTTP status means for the event.
pub(super) fn judge(status: u16, retry_after: Option<Duration>) -> Answer {
    let text = http_status_text(status);
    match status {
        200..=299 => Answer::Delivered,
        408 | 429 => Answer::Failed {
            why: format!("answered {text}"),
            retry_after,
        },
        400..=499 => Answer::Refused(format!("answered {text}")),
        300..=399 => Answer::Failed {
            why: format!("answered {text} (a redirect, not followed: put the final URL in url)"),
            retry_after: None,
        },
        _ => Answer::Failed {
            why: format!("answered {text}"),
            retry_after,
        },
    }
}

fn http_status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// One readable line with the file, the reason and the video id: what Slack, Mattermost and
/// Teams show. Each of them acts on something in a file name: Slack on `<!channel>` (so `<`,
/// `>` and `&` are escaped as Slack asks), Mattermost on `@channel`, `@here`, `@all` and any
/// `@user`, all three on markdown (`*bold*`, `[x](https://…)`, bare links). So everything that
/// comes from outside (the file, the folder, the reason, the video id) is shown as inline code,
/// which none of them formats, links or reads mentions in, with its backticks (which would end
/// the code) turned into `ˋ`; control characters are escaped as in the log, so a name cannot
/// break the line either.
pub(super) fn slack_text(notice: &Notice) -> String {
    let mut line = format!("[{}] ", plain(&notice.host));
    let what = match notice.kind() {
        Some(EventKind::Uploaded) => "uploaded",
        Some(EventKind::Failed) => "failed",
        Some(EventKind::Incomplete) => "never finished (incomplete export)",
        Some(EventKind::Paused) => "uploads paused",
        Some(EventKind::Resumed) => "uploads resumed",
        Some(EventKind::FolderMissing) => "watched folder missing",
        Some(EventKind::FolderBack) => "watched folder back",
        Some(EventKind::Transcoded) => "transcoded",
        Some(EventKind::TranscodingSlow) => "transcoding not finished in time",
        _ => notice.event.as_str(),
    };
    line.push_str(&plain(what));
    match (&notice.file, &notice.folder) {
        (Some(file), _) => {
            line.push_str(": ");
            line.push_str(&code(file));
        }
        (None, Some(folder)) => {
            line.push_str(": ");
            line.push_str(&code(folder));
        }
        (None, None) => {}
    }
    if let Some(video) = &notice.video_id {
        line.push_str(" (video ");
        line.push_str(&code(video));
        line.push(')');
    }
    if let Some(reason) = &notice.reason {
        line.push_str(if notice.kind() == Some(EventKind::Resumed) {
            " after a pause because: "
        } else {
            " because: "
        });
        line.push_str(&code(reason));
    }
    line
}

/// Text from outside as inline code: escaped as in the log, its backticks made harmless.
fn code(text: &str) -> String {
    let shown = escaped(text).to_string().replace('`', "\u{2cb}");
    if shown.trim().is_empty() {
        // An empty or blank code span is not code to markdown: it would show its backticks.
        return format!("\"{}\"", slack_escape(&shown));
    }
    format!("`{}`", slack_escape(&shown))
}

/// Our own words and the host's name, outside code: Slack's three characters escaped, and an
/// `@` kept from starting a mention by a word joiner (invisible) after it.
fn plain(text: &str) -> String {
    slack_escape(&escaped(text).to_string()).replace('@', "@\u{2060}")
}

/// Slack's three control characters in message text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: EventKind) -> Notice {
        Notice::new(kind, time::OffsetDateTime::now_utc())
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2.
        let secret = SecretString::from("Jefe".to_owned());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_are_delivered_dropped_or_tried_again() {
        assert_eq!(judge(200, None), Answer::Delivered);
        assert_eq!(judge(204, None), Answer::Delivered);
        assert!(
            matches!(judge(400, None), Answer::Refused(why) if why == "answered 400 Bad Request")
        );
        assert!(matches!(judge(410, None), Answer::Refused(_)));
        for status in [408, 429, 500, 503, 301] {
            assert!(
                matches!(judge(status, None), Answer::Failed { .. }),
                "{status}"
            );
        }
        let asked = Some(Duration::from_secs(7));
        assert!(matches!(
            judge(429, asked),
            Answer::Failed { retry_after, .. } if retry_after == asked
        ));
    }

    #[test]
    fn slack_text_is_one_line_with_file_reason_and_video_and_cannot_ping() {
        let mut failed = notice(EventKind::Failed);
        failed.host = "edit-bay-3".into();
        failed.file = Some("sub/<!channel> & co\n.mov".into());
        failed.reason = Some("415: the platform does not accept <this>".into());
        let text = slack_text(&failed);
        assert_eq!(
            text,
            "[edit-bay-3] failed: `sub/&lt;!channel&gt; &amp; co\\n.mov` because: `415: the platform does not accept &lt;this&gt;`"
        );
        let mut uploaded = notice(EventKind::Uploaded);
        uploaded.host = "h".into();
        uploaded.file = Some("a.mov".into());
        uploaded.video_id = Some("v-42".into());
        assert_eq!(
            slack_text(&uploaded),
            "[h] uploaded: `a.mov` (video `v-42`)"
        );
        let mut slow = notice(EventKind::TranscodingSlow);
        slow.host = "h".into();
        slow.file = Some("a.mov".into());
        slow.video_id = Some("v-42".into());
        slow.reason = Some("not transcoded 2 hours after the upload".into());
        assert_eq!(
            slack_text(&slow),
            "[h] transcoding not finished in time: `a.mov` (video `v-42`) because: `not transcoded 2 hours after the upload`"
        );
        let json: serde_json::Value =
            serde_json::from_str(&body(WebhookFormat::Slack, "{}", &uploaded)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"text": "[h] uploaded: `a.mov` (video `v-42`)"})
        );
        assert_eq!(
            body(WebhookFormat::Json, "{\"a\":1}", &uploaded),
            "{\"a\":1}"
        );
    }

    #[test]
    fn slack_text_cannot_mention_nor_format_nor_link_from_a_file_name() {
        let mut failed = notice(EventKind::Failed);
        failed.host = "bay@here".into();
        failed.file = Some("@channel @all *bold* _it_ [x](https://evil.example) `rm`.mov".into());
        failed.reason = Some("`".into());
        let text = slack_text(&failed);
        assert_eq!(
            text,
            "[bay@\u{2060}here] failed: `@channel @all *bold* _it_ [x](https://evil.example) \u{2cb}rm\u{2cb}.mov` because: `\u{2cb}`"
        );
        // Exactly the four backticks of the two code spans: nothing from outside ends one.
        assert_eq!(text.matches('`').count(), 4, "{text}");
        failed.file = Some(" ".into());
        assert!(slack_text(&failed).contains("failed: \" \" because"));
    }
}
