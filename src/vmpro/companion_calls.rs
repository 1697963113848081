//! The calls a companion's metadata needs beyond the create call, as the vendor's PHP client
//! makes them (`AbstractApiClient`): `addVideoToChannel` (`POST {vm}/channels/{channelId}/
//! videos/{videoId}`), `setCustomMetaData` (`PATCH {vm}/videos/{videoId}/metadata`, the fields
//! as a JSON object) and `updateVideo` (`PATCH {vm}/videos/{videoId}`, here only
//! `{"autoPublish": true}`). Each goes through [`Platform::api_call`]: within the request
//! budget, transient answers retried, a 401 refreshing the token.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{Platform, UploadObserver, percent_encode_segment};
use super::error::{Step, VmproError};

impl Platform {
    /// Adds the video to one more channel (the create call takes one).
    pub async fn add_video_to_channel(
        &self,
        video_id: &str,
        channel: u64,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<(), VmproError> {
        let path = format!(
            "{}/channels/{channel}/videos/{}",
            self.account.video_manager_id,
            percent_encode_segment(video_id)
        );
        let url = self.api_url_for(&path)?;
        self.api_call(Step::CompanionMetadata, shutdown, observer, |token| {
            self.transport.http.post(url.clone()).bearer_auth(token)
        })
        .await
        .map(|_| ())
    }

    /// Sets the video's custom metadata fields.
    pub async fn set_custom_metadata(
        &self,
        video_id: &str,
        fields: &BTreeMap<String, String>,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<(), VmproError> {
        let url = self.videos_url(&format!("/{}/metadata", percent_encode_segment(video_id)))?;
        let body: Value = fields
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into();
        self.api_call(Step::CompanionMetadata, shutdown, observer, |token| {
            self.transport
                .http
                .patch(url.clone())
                .bearer_auth(token)
                .json(&body)
        })
        .await
        .map(|_| ())
    }

    /// Publishes the video at once (`updateVideo` with `autoPublish`).
    pub async fn publish_video(
        &self,
        video_id: &str,
        shutdown: &CancellationToken,
        observer: &dyn UploadObserver,
    ) -> Result<(), VmproError> {
        let url = self.videos_url(&format!("/{}", percent_encode_segment(video_id)))?;
        let body = json!({"autoPublish": true});
        self.api_call(Step::CompanionMetadata, shutdown, observer, |token| {
            self.transport
                .http
                .patch(url.clone())
                .bearer_auth(token)
                .json(&body)
        })
        .await
        .map(|_| ())
    }

    /// `api_url` joined with `path` (relative to it, like [`Platform::videos_url`]).
    fn api_url_for(&self, path: &str) -> Result<url::Url, VmproError> {
        self.account
            .api_url
            .join(path)
            .map_err(|err| VmproError::Protocol {
                step: Step::CompanionMetadata,
                message: format!("cannot build the URL {path} from api_url: {err}"),
            })
    }
}
