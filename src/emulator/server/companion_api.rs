//! The calls a companion's metadata needs after the create (as the vendor's PHP client makes
//! them): adding a video to one more channel, setting its custom metadata, and updating it
//! (`autoPublish`). Each is recorded on the video, so tests can see what it received.

use hyper::StatusCode;
use hyper::header::HeaderMap;

use super::video_api::{known_video_manager, no_video};
use super::{Answer, Shared, empty, message, parse_decimal, parse_json};

/// `POST /v1/vms/{vm}/channels/{channelId}/videos/{videoId}`: 204.
pub(super) fn add_to_channel(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    channel: &str,
    video: &str,
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    let Some(channel_id) = parse_decimal::<u64>(channel).filter(|id| *id > 0) else {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("channel id {channel:?} is not a positive number"),
        );
    };
    change_or_404(shared, vm_id, video, |record| {
        if !record.added_channels.contains(&channel_id) {
            record.added_channels.push(channel_id);
        }
    })
}

/// `PATCH /v1/vms/{vm}/videos/{videoId}/metadata` with `{"name": "value", …}`: 204.
pub(super) fn custom_metadata(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    video: &str,
    body: &[u8],
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    let fields: std::collections::BTreeMap<String, serde_json::Value> =
        match parse_json(headers, body) {
            Ok(fields) => fields,
            Err(answer) => return *answer,
        };
    // The platform knows its custom fields by name; a nameless one is none of them.
    if fields.keys().any(|name| name.trim().is_empty()) {
        return message(
            StatusCode::BAD_REQUEST,
            "custom metadata field without a name",
        );
    }
    change_or_404(shared, vm_id, video, |record| {
        for (name, value) in fields {
            let text = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            record.custom_metadata.insert(name, text);
        }
    })
}

/// `PATCH /v1/vms/{vm}/videos/{videoId}` with `title`, `description`, `autoPublish`: 204.
pub(super) fn update_video(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    video: &str,
    body: &[u8],
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    let update: serde_json::Value = match parse_json(headers, body) {
        Ok(update) => update,
        Err(answer) => return *answer,
    };
    if !update.is_object() {
        return message(StatusCode::BAD_REQUEST, "the update must be a JSON object");
    }
    change_or_404(shared, vm_id, video, |record| {
        if let Some(title) = update.get("title").and_then(|t| t.as_str()) {
            record.title = Some(title.to_owned());
        }
        if let Some(description) = update.get("description").and_then(|d| d.as_str()) {
            record.description = Some(description.to_owned());
        }
        if let Some(publish) = update.get("autoPublish").and_then(|p| p.as_bool()) {
            record.auto_publish = Some(publish);
        }
        record.updates.push(update.clone());
    })
}

/// Applies `change` to video `video` of VideoManager `vm_id`: 204, or 404 for a video it does
/// not have.
fn change_or_404(
    shared: &Shared,
    vm_id: u64,
    video: &str,
    change: impl FnOnce(&mut crate::emulator::VideoRecord),
) -> Answer {
    if shared.state().change_video(vm_id, video, change) {
        empty(StatusCode::NO_CONTENT)
    } else {
        no_video(video, vm_id)
    }
}
