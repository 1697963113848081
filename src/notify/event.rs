//! What a `[[notify]]` destination is told: the kinds of event (their names are fixed in the
//! contract), and the JSON body each event carries. The body is made once, when the event is
//! written to the state store, so every re-delivery sends the same bytes with the same `id`.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A kind of event a destination can subscribe to (`events = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A file uploaded and moved to done/.
    Uploaded,
    /// A file moved to failed/ (an upload the platform refused, or a file refused before it).
    Failed,
    /// Uploads have been paused for [`PAUSE_NOTICE_AFTER`](crate::notify::PAUSE_NOTICE_AFTER).
    Paused,
    /// Uploads go again after a pause that was announced.
    Resumed,
    /// A watched folder cannot be seen (deleted, unmounted, unreadable).
    FolderMissing,
    /// A folder that was missing is watched again.
    FolderBack,
    /// A file refused because its export never finished (its container stayed incomplete).
    Incomplete,
    /// Every quality of an uploaded video is transcoded (`follow_transcoding`).
    Transcoded,
    /// An uploaded video was not transcoded within 2 hours of its upload; `reason` says how
    /// far it got.
    TranscodingSlow,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Uploaded,
        EventKind::Failed,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::FolderMissing,
        EventKind::FolderBack,
        EventKind::Incomplete,
        EventKind::Transcoded,
        EventKind::TranscodingSlow,
    ];

    /// What a destination gets when its table has no `events`: what needs a person.
    pub const DEFAULT: [EventKind; 4] = [
        EventKind::Failed,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::FolderMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "uploaded",
            EventKind::Failed => "failed",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::FolderMissing => "folder_missing",
            EventKind::FolderBack => "folder_back",
            EventKind::Incomplete => "incomplete",
            EventKind::Transcoded => "transcoded",
            EventKind::TranscodingSlow => "transcoding_slow",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Every name, for a message listing what is allowed.
    pub fn names() -> String {
        EventKind::ALL
            .iter()
            .map(|kind| format!("\"{}\"", kind.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of one event, as the contract shows it; fields that do not apply are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique per event, the same on every re-delivery: receivers drop duplicates by it.
    pub id: String,
    pub event: String,
    /// When it happened, UTC, to the second (`2026-12-01T14:03:52Z`).
    pub at: String,
    pub host: String,
    pub folder: Option<String>,
    /// The file's path relative to its watched folder.
    pub file: Option<String>,
    pub size: Option<u64>,
    pub video_id: Option<String>,
    pub sha256: Option<String>,
    pub reason: Option<String>,
}

impl Notice {
    /// A new event of `kind` happening `at`, with a fresh id and this machine's name; the
    /// fields about a file or folder are filled in by the caller.
    pub fn new(kind: EventKind, at: OffsetDateTime) -> Notice {
        Notice {
            id: uuid::Uuid::new_v4().to_string(),
            event: kind.as_str().to_owned(),
            at: utc_seconds(at),
            host: host_name().to_owned(),
            folder: None,
            file: None,
            size: None,
            video_id: None,
            sha256: None,
            reason: None,
        }
    }

    /// The event's kind (`None` for a name this hotfolder does not know: a newer one wrote it).
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.event)
    }
}

/// A path as JSON text: JSON cannot carry bytes that are not UTF-8, so those become U+FFFD.
pub fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `2026-12-01T14:03:52Z`.
pub fn utc_seconds(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// This machine's name, as events and e-mail subjects say it: `gethostname`, read once.
pub fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buffer = [0u8; 256];
        // SAFETY: the buffer is valid for its whole length; gethostname writes at most that
        // much, and the name is cut at the first NUL (or at the end if there is none).
        let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        match rc {
            0 if end > 0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
            _ => "unknown-host".to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_default_is_the_contracts() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("Failed"), None);
        let default: Vec<&str> = EventKind::DEFAULT.iter().map(|k| k.as_str()).collect();
        assert_eq!(default, ["failed", "paused", "resumed", "folder_missing"]);
    }

    #[test]
    fn a_notice_has_every_contract_field_and_nulls_for_what_does_not_apply() {
        let at = time::macros::datetime!(2026-12-01 14:03:52.75 UTC);
        let notice = Notice::new(EventKind::Paused, at);
        let json: serde_json::Value = serde_json::to_value(&notice).unwrap();
        assert_eq!(json["at"], "2026-12-01T14:03:52Z");
        assert_eq!(json["event"], "paused");
        assert!(!json["host"].as_str().unwrap().is_empty());
        assert_eq!(json["id"].as_str().unwrap().len(), 36);
        for field in ["folder", "file", "size", "video_id", "sha256", "reason"] {
            assert!(json[field].is_null(), "{field} in {json}");
        }
        assert_eq!(json.as_object().unwrap().len(), 10);
        assert_ne!(Notice::new(EventKind::Paused, at).id, notice.id);
    }
}
