//! What a companion does to an upload: the create call's fields (title, description,
//! keywords, group, the first channel; `publish` as `autoPublish`) in place of the folder's,
//! and the calls after the upload for what the create call cannot carry (further channels,
//! custom metadata, an immediate publish). Each of those is retried like any API call
//! (`Platform::api_call`); one that still fails is recorded for the sidecar and the video is
//! never uploaded again for it.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::FileMetadata;
use crate::vmpro::api::{Platform, UploadObserver, VideoMetadata};
use crate::vmpro::error::VmproError;

/// One call after the upload and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanionCall {
    /// What it did, in words ("add to channel 3055").
    pub call: String,
    pub ok: bool,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The create call's metadata: the folder's, with every field the companion gives in its
/// place. The companion's title is used as it is written (no `{stem}` template of its own is
/// expected in one).
pub fn create_metadata(folder: &VideoMetadata, companion: &FileMetadata) -> VideoMetadata {
    let mut metadata = folder.clone();
    if let Some(title) = companion.title.as_ref().filter(|t| !t.trim().is_empty()) {
        metadata.title = title.clone();
        metadata.title_as_written = true;
    }
    if let Some(description) = &companion.description {
        metadata.description = Some(description.clone()).filter(|d| !d.is_empty());
    }
    if let Some(keywords) = &companion.keywords {
        metadata.keywords = keywords.clone();
    }
    if let Some(first) = companion.channels.first() {
        metadata.channel = Some(*first);
    }
    if let Some(group) = companion.group {
        metadata.group = Some(group);
    }
    if let Some(publish) = companion.publish {
        metadata.auto_publish = Some(publish);
    }
    metadata
}

/// The calls after the upload, in order: the further channels, the custom metadata, the
/// publish. `Err(Cancelled)` when the agent stops meanwhile: nothing is recorded, and the
/// resumed job (which finds every chunk accepted) makes them again.
pub async fn calls_after_upload(
    platform: &Platform,
    video_id: &str,
    metadata: &FileMetadata,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
) -> Result<Vec<CompanionCall>, VmproError> {
    let mut calls = Vec::new();
    let mut record = |call: String, result: Result<(), VmproError>| match result {
        Err(VmproError::Cancelled) => Err(VmproError::Cancelled),
        Ok(()) => {
            calls.push(CompanionCall {
                call,
                ok: true,
                error: None,
            });
            Ok(())
        }
        Err(err) => {
            calls.push(CompanionCall {
                call,
                ok: false,
                error: Some(crate::chain(&err)),
            });
            Ok(())
        }
    };
    for channel in metadata.channels.iter().skip(1) {
        let result = platform
            .add_video_to_channel(video_id, *channel, shutdown, observer)
            .await;
        record(format!("add to channel {channel}"), result)?;
    }
    if !metadata.custom_metadata.is_empty() {
        let result = platform
            .set_custom_metadata(video_id, &metadata.custom_metadata, shutdown, observer)
            .await;
        let names: Vec<&str> = metadata
            .custom_metadata
            .keys()
            .map(String::as_str)
            .collect();
        record(format!("set custom metadata {}", names.join(", ")), result)?;
    }
    if metadata.publish == Some(true) {
        let result = platform.publish_video(video_id, shutdown, observer).await;
        record("publish".to_owned(), result)?;
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_a_companion_replaces_only_the_fields_it_gives() {
        let folder = VideoMetadata {
            title: "{stem}".into(),
            description: Some("folder".into()),
            channel: Some(1),
            group: Some(2),
            keywords: vec!["folder".into()],
            auto_publish: None,
            title_as_written: false,
        };
        let companion = FileMetadata {
            title: Some("Summer".into()),
            channels: vec![3054, 3055],
            keywords: Some(vec![]),
            ..FileMetadata::default()
        };
        let merged = create_metadata(&folder, &companion);
        assert_eq!(merged.title, "Summer");
        assert_eq!(merged.description.as_deref(), Some("folder"));
        assert_eq!(merged.channel, Some(3054));
        assert_eq!(merged.group, Some(2));
        assert!(merged.keywords.is_empty());
    }

    #[test]
    fn metadata_a_companion_title_is_sent_as_written_not_as_a_template() {
        let folder = VideoMetadata {
            title: "Folder {stem}".into(),
            ..VideoMetadata::default()
        };
        let companion = FileMetadata {
            title: Some("{stem} X {name}".into()),
            ..FileMetadata::default()
        };
        let merged = create_metadata(&folder, &companion);
        assert_eq!(merged.title_for("a.mp4"), "{stem} X {name}");
        assert_eq!(merged.create_body("a.mp4")["title"], "{stem} X {name}");
        // Without a title of its own, the folder's template still applies.
        let merged = create_metadata(&folder, &FileMetadata::default());
        assert_eq!(merged.title_for("a.mp4"), "Folder a");
    }
}
