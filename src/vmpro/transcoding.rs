//! How far the platform has transcoded a video (vmpro-protocol.md section 5):
//! `GET {api_url}{vm}/videos/{id}/transcoding-status` answers one entry per quality,
//! `[{"quality": "720p", "profileKey": "…", "fileExtension": "…", "transcodingCompleted": false}, …]`
//! (the vendor client's fixture), and the video is transcoded when every entry is completed.
//! Asked like every other API call: within the API's request budget, transient answers retried,
//! a 401 refreshing the token.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::api::{Platform, Unobserved, percent_encode_segment};
use super::error::{Step, VmproError, excerpt};

/// One quality of a video as the platform reported it. Only `transcodingCompleted` is needed;
/// the rest is shown to people and may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityStatus {
    /// `720p`; `profileKey` stands in when the platform leaves it out.
    pub quality: String,
    pub profile_key: Option<String>,
    pub file_extension: Option<String>,
    pub completed: bool,
}

/// Whether the platform is done with the video: every quality completed. An empty list is
/// not done (transcoding has not started, or the platform has not planned it yet).
pub fn all_completed(qualities: &[QualityStatus]) -> bool {
    !qualities.is_empty() && qualities.iter().all(|q| q.completed)
}

impl Platform {
    /// How far the platform has transcoded `video_id`; `Ok(None)` only for a 404, the
    /// platform's word that the video is gone. An answer that is not a list of qualities is
    /// [`VmproError::Protocol`].
    pub async fn transcoding_status(
        &self,
        video_id: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<QualityStatus>>, VmproError> {
        let url = self.videos_url(&format!(
            "/{}/transcoding-status",
            percent_encode_segment(video_id)
        ))?;
        let answer = self
            .api_call(Step::TranscodingStatus, shutdown, &Unobserved, |token| {
                self.transport.http.get(url.clone()).bearer_auth(token)
            })
            .await;
        match answer {
            Ok(answer) => parse(&answer.body)
                .map(Some)
                .map_err(|message| VmproError::Protocol {
                    step: Step::TranscodingStatus,
                    message,
                }),
            Err(VmproError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// The qualities in a transcoding-status answer, or why it is not one.
fn parse(body: &[u8]) -> Result<Vec<QualityStatus>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|err| {
        format!(
            "the transcoding status is not JSON ({err}): {}",
            excerpt(body)
        )
    })?;
    let Value::Array(entries) = json else {
        return Err(format!(
            "the transcoding status is not a list of qualities: {}",
            excerpt(body)
        ));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
            let completed = entry
                .get("transcodingCompleted")
                .and_then(Value::as_bool)
                .ok_or_else(|| {
                    format!(
                        "quality {} of the transcoding status has no true or false \
                         `transcodingCompleted`: {}",
                        i + 1,
                        excerpt(entry.to_string().as_bytes())
                    )
                })?;
            let profile_key = text("profileKey");
            Ok(QualityStatus {
                quality: text("quality")
                    .or_else(|| profile_key.clone())
                    .unwrap_or_else(|| format!("quality {}", i + 1)),
                profile_key,
                file_extension: text("fileExtension"),
                completed,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_fixture_is_read_and_done_means_every_quality() {
        let body = br#"[
            {"quality": "360p", "profileKey": "p360", "fileExtension": "mp4", "transcodingCompleted": true},
            {"quality": "720p", "profileKey": "p720", "fileExtension": "mp4", "transcodingCompleted": false, "extra": 1}
        ]"#;
        let qualities = parse(body).unwrap();
        assert_eq!(
            qualities[0],
            QualityStatus {
                quality: "360p".into(),
                profile_key: Some("p360".into()),
                file_extension: Some("mp4".into()),
                completed: true,
            }
        );
        assert!(!all_completed(&qualities));
        let mut done = qualities.clone();
        done[1].completed = true;
        assert!(all_completed(&done));
        assert!(!all_completed(&[]), "nothing planned yet is not done");
        // A quality without its name is named by its profile, or its place.
        let unnamed = parse(br#"[{"profileKey": "hls", "transcodingCompleted": true}, {"transcodingCompleted": false}]"#).unwrap();
        assert_eq!(unnamed[0].quality, "hls");
        assert_eq!(unnamed[1].quality, "quality 2");
    }

    #[test]
    fn answers_that_are_not_a_list_of_qualities_say_what_they_are() {
        let not_json = parse(b"<html>maintenance</html>").unwrap_err();
        assert!(
            not_json.contains("not JSON") && not_json.contains("maintenance"),
            "{not_json}"
        );
        let object = parse(br#"{"message": "ok"}"#).unwrap_err();
        assert!(object.contains("not a list of qualities"), "{object}");
        let no_flag =
            parse(br#"[{"quality": "720p", "transcodingCompleted": "yes"}]"#).unwrap_err();
        assert!(
            no_flag.contains("quality 1") && no_flag.contains("transcodingCompleted"),
            "{no_flag}"
        );
    }
}
