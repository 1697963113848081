//! The video API: creating a video and issuing its upload URLs. Both answer with a `Location`
//! built from the `Host` the client used, so a client that reaches the emulator by another name
//! than loopback still gets links it can follow.

use hyper::StatusCode;
use hyper::header::{self, HeaderMap};

use super::login::authorize;
use super::{
    Answer, Shared, api_url, bad_video_manager, bump, empty, message, parse_decimal, parse_json,
    quota_answer, unknown_video_manager, with_header,
};
use crate::emulator::PlatformRefusal;
use crate::emulator::state::{CreateRefusal, CreateVideoBody};

pub(super) fn create_video(shared: &Shared, headers: &HeaderMap, vm: &str, body: &[u8]) -> Answer {
    if let Err(answer) = authorize(shared, headers) {
        return *answer;
    }
    let Some(vm_id) = parse_decimal::<u64>(vm) else {
        return bad_video_manager(vm);
    };
    if !shared.knows_video_manager(vm_id) {
        return unknown_video_manager(vm_id);
    }
    let request: CreateVideoBody = match parse_json(headers, body) {
        Ok(request) => request,
        Err(answer) => return *answer,
    };
    match shared.platform_refusal() {
        Some(PlatformRefusal::CreateForbidden) => {
            return message(
                StatusCode::FORBIDDEN,
                &format!("user may not create videos in video manager {vm_id}"),
            );
        }
        Some(PlatformRefusal::CreateWithoutLocation) => return empty(StatusCode::CREATED),
        Some(PlatformRefusal::MaintenancePage) | None => {}
    }
    let created = shared.state().create_video(vm_id, request);
    match created {
        Ok(id) => {
            bump(&shared.counters.videos_created);
            let base = shared.request_base(headers);
            let location = format!("{}{vm_id}/videos/{id}", api_url(&base));
            with_header(empty(StatusCode::CREATED), header::LOCATION, &location)
        }
        Err(CreateRefusal::BadRequest(text)) => message(StatusCode::BAD_REQUEST, &text),
        Err(CreateRefusal::UnsupportedSuffix(text)) => {
            message(StatusCode::UNSUPPORTED_MEDIA_TYPE, &text)
        }
        Err(CreateRefusal::Quota) => quota_answer(),
    }
}

pub(super) fn upload_url(shared: &Shared, headers: &HeaderMap, vm: &str, video: &str) -> Answer {
    if let Err(answer) = authorize(shared, headers) {
        return *answer;
    }
    let Some(vm_id) = parse_decimal::<u64>(vm) else {
        return bad_video_manager(vm);
    };
    if !shared.knows_video_manager(vm_id) {
        return unknown_video_manager(vm_id);
    }
    let now = shared.clock.now();
    let issued = shared
        .state()
        .issue_upload_url(&shared.clock, vm_id, video, now);
    let Some(url) = issued else {
        return message(
            StatusCode::NOT_FOUND,
            &format!("video {video:?} not found in video manager {vm_id}"),
        );
    };
    bump(&shared.counters.urls_issued);
    let base = shared.request_base(headers);
    let location = format!(
        "{}{}?{}",
        base.as_str().trim_end_matches('/'),
        url.path,
        url.query
    );
    let status = if shared.url_status_ok {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    with_header(empty(status), header::LOCATION, &location)
}
