//! The video API: creating a video, issuing its upload URLs, searching videos, listing and
//! deleting their keywords, and how far their transcoding is. `Location` headers are built from the `Host` the client used, so a
//! client that reaches the emulator by another name than loopback still gets links it can
//! follow.

use hyper::StatusCode;
use hyper::header::{self, HeaderMap};

use super::login::authorize;
use super::{
    Answer, Shared, api_url, bad_video_manager, bump, empty, json_answer, message, parse_decimal,
    parse_json, quota_answer, unknown_video_manager, with_header,
};
use crate::emulator::PlatformRefusal;
use crate::emulator::state::{
    CreateRefusal, CreateVideoBody, KeywordRefusal, SearchField, SearchQuery,
};

pub(super) fn create_video(shared: &Shared, headers: &HeaderMap, vm: &str, body: &[u8]) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
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
    let now = shared.clock.now();
    let created = shared.state().create_video(vm_id, request, now);
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
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
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

/// Videos per search answer when `limit` is not given, and the most a client may ask for.
const DEFAULT_SEARCH_LIMIT: usize = 50;
const MAX_SEARCH_LIMIT: usize = 100;

/// `GET /v1/vms/{vm}/videos?search_term=…&search_in_field=…&exact_string=…&include_keywords=…
/// &limit=…&offset=…`: `{"total": n, "videos": [...]}`, each video with `id`, `title`,
/// `uploadFileName`, `createdDate` and, when asked for, `keywords`. Unknown parameters are
/// ignored, as the platform ignores the many this model leaves out; known ones with a value
/// it cannot read are refused with 400.
pub(super) fn search_videos(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    query: Option<&str>,
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    if shared.state().search_refused() {
        return message(StatusCode::FORBIDDEN, "this account may not search videos");
    }
    let search = match parse_search(query.unwrap_or("")) {
        Ok(search) => search,
        Err(text) => return message(StatusCode::BAD_REQUEST, &text),
    };
    let now = shared.clock.now();
    let (total, hits) = shared.state().search_videos(vm_id, &search, now);
    bump(&shared.counters.searches);
    let videos: Vec<serde_json::Value> = hits
        .into_iter()
        .map(|hit| {
            let created = time::OffsetDateTime::from_unix_timestamp(
                i64::try_from(shared.clock.unix_secs(hit.created_at)).unwrap_or(0),
            )
            .ok()
            .and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
            let mut video = serde_json::json!({
                "id": hit.id,
                "title": hit.title,
                "uploadFileName": hit.file_name,
                "createdDate": created,
            });
            if let (Some(keywords), Some(fields)) = (hit.keywords, video.as_object_mut()) {
                fields.insert("keywords".into(), keywords.into());
            }
            video
        })
        .collect();
    json_answer(
        StatusCode::OK,
        &serde_json::json!({"total": total, "videos": videos}),
    )
}

/// The caller's token checked and the VideoManager in the path one the platform knows, or the
/// answer that refuses the request (401, 400 for a path that is not a number, 404).
pub(super) fn known_video_manager(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
) -> Result<u64, Box<Answer>> {
    authorize(shared, headers)?;
    let vm_id = parse_decimal::<u64>(vm).ok_or_else(|| Box::new(bad_video_manager(vm)))?;
    if !shared.knows_video_manager(vm_id) {
        return Err(Box::new(unknown_video_manager(vm_id)));
    }
    Ok(vm_id)
}

fn parse_search(query: &str) -> Result<SearchQuery, String> {
    let mut search = SearchQuery {
        term: None,
        field: SearchField::Any,
        exact: false,
        include_keywords: false,
        limit: DEFAULT_SEARCH_LIMIT,
        offset: 0,
    };
    let flag = |key: &str, value: &str| match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{key} must be true or false, not {other:?}")),
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "search_term" => search.term = Some(value.into_owned()).filter(|t| !t.is_empty()),
            "search_in_field" => {
                search.field = match value.as_ref() {
                    "title" => SearchField::Title,
                    "description" => SearchField::Description,
                    "keywords" => SearchField::Keywords,
                    other => {
                        return Err(format!(
                            "search_in_field {other:?} is not one of title, description, keywords"
                        ));
                    }
                }
            }
            "exact_string" => search.exact = flag("exact_string", &value)?,
            "include_keywords" => search.include_keywords = flag("include_keywords", &value)?,
            "limit" => {
                search.limit = parse_decimal::<usize>(&value)
                    .filter(|limit| (1..=MAX_SEARCH_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        format!(
                            "limit must be a number from 1 to {MAX_SEARCH_LIMIT}, not {value:?}"
                        )
                    })?;
            }
            "offset" => {
                search.offset = parse_decimal::<usize>(&value)
                    .ok_or_else(|| format!("offset must be a number, not {value:?}"))?;
            }
            _ => {}
        }
    }
    Ok(search)
}

/// `GET /v1/vms/{vm}/videos/{id}`: `200` with the video (`id`, `title`, `uploadFileName`,
/// `keywords`), `404` once it is gone; `DELETE` the same path: `204`, the video and its content
/// deleted (what a user does in the web interface, and how tests take a video away).
pub(super) fn one_video(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    video: &str,
    delete: bool,
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    if delete {
        return if shared.state().delete_video(Some(vm_id), video) {
            empty(StatusCode::NO_CONTENT)
        } else {
            no_video(video, vm_id)
        };
    }
    match shared.state().video_in(vm_id, video) {
        Some(record) => json_answer(
            StatusCode::OK,
            &serde_json::json!({
                "id": record.id,
                "title": record.title,
                "uploadFileName": record.file_name,
                "keywords": record.keywords,
            }),
        ),
        None => no_video(video, vm_id),
    }
}

/// `GET /v1/vms/{vm}/videos/{id}/transcoding-status`: `[{"quality": "720p", "profileKey": …,
/// "fileExtension": "mp4", "transcodingCompleted": false}, …]` (the vendor client's fixture),
/// `404` for a video the VideoManager does not have.
pub(super) fn transcoding_status(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    video: &str,
) -> Answer {
    let vm_id = match known_video_manager(shared, headers, vm) {
        Ok(vm_id) => vm_id,
        Err(answer) => return *answer,
    };
    let now = shared.clock.now();
    let Some(qualities) = shared.state().transcoding_status(vm_id, video, now) else {
        return no_video(video, vm_id);
    };
    let listed: Vec<serde_json::Value> = qualities
        .iter()
        .map(|q| {
            serde_json::json!({
                "quality": q.quality,
                "profileKey": q.profile_key,
                "fileExtension": q.file_extension,
                "transcodingCompleted": q.completed,
            })
        })
        .collect();
    json_answer(StatusCode::OK, &listed)
}

/// `GET /v1/vms/{vm}/videos/{id}/keywords`: `[{"id": 123, "text": "…"}, …]`.
pub(super) fn keywords(shared: &Shared, headers: &HeaderMap, vm: &str, video: &str) -> Answer {
    if let Err(answer) = authorize(shared, headers) {
        return *answer;
    }
    let Some(vm_id) = parse_decimal::<u64>(vm) else {
        return bad_video_manager(vm);
    };
    match shared.state().keywords(vm_id, video) {
        Some(keywords) => {
            let listed: Vec<serde_json::Value> = keywords
                .into_iter()
                .map(|(id, text)| serde_json::json!({"id": id, "text": text}))
                .collect();
            json_answer(StatusCode::OK, &listed)
        }
        None => no_video(video, vm_id),
    }
}

/// `DELETE /v1/vms/{vm}/videos/{id}/keywords/{keywordId}`: 204.
pub(super) fn delete_keyword(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    video: &str,
    keyword: &str,
) -> Answer {
    if let Err(answer) = authorize(shared, headers) {
        return *answer;
    }
    let Some(vm_id) = parse_decimal::<u64>(vm) else {
        return bad_video_manager(vm);
    };
    let Some(keyword_id) = parse_decimal::<u64>(keyword) else {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("keyword id {keyword:?} is not a number"),
        );
    };
    let deleted = shared.state().delete_keyword(vm_id, video, keyword_id);
    match deleted {
        Ok(()) => {
            bump(&shared.counters.keywords_deleted);
            empty(StatusCode::NO_CONTENT)
        }
        Err(KeywordRefusal::NoVideo) => no_video(video, vm_id),
        Err(KeywordRefusal::NoKeyword) => message(
            StatusCode::NOT_FOUND,
            &format!("video {video:?} has no keyword {keyword_id}"),
        ),
        Err(KeywordRefusal::Refused) => message(
            StatusCode::FORBIDDEN,
            "this account may not change keywords",
        ),
    }
}

pub(super) fn no_video(video: &str, vm_id: u64) -> Answer {
    message(
        StatusCode::NOT_FOUND,
        &format!("video {video:?} not found in video manager {vm_id}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_are_read_and_bad_values_refused() {
        let search = parse_search(
            "search_term=hotfolder-x&search_in_field=keywords&exact_string=true&include_keywords=true&limit=10&order=asc",
        )
        .unwrap();
        assert_eq!(
            search,
            SearchQuery {
                term: Some("hotfolder-x".into()),
                field: SearchField::Keywords,
                exact: true,
                include_keywords: true,
                limit: 10,
                offset: 0,
            }
        );
        assert_eq!(parse_search("").unwrap().limit, DEFAULT_SEARCH_LIMIT);
        for bad in [
            "search_in_field=colour",
            "exact_string=yes",
            "include_keywords=1",
            "limit=0",
            "limit=101",
            "limit=-1",
            "offset=x",
        ] {
            assert!(parse_search(bad).is_err(), "{bad}");
        }
    }
}
