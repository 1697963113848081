//! Chunk posts (`POST /chunks/vms/{vm}/videos/{id}`). Everything that can be checked before the
//! body is read (the `__token__`, the headers, the video's state) is checked first, so a refused
//! chunk costs no hashing. The body is then hashed frame by frame as it arrives and never kept;
//! only a chunk whose whole body arrived is committed.
//!
//! Bodies of refused requests, chunk or not, are drained here too, so that the client reads the
//! answer instead of a broken pipe; and the reset fault, which reads part of a body and then
//! drops the connection, lives beside them.
//!
//! In `sink` mode a body is counted, not hashed; with a link model, every chunk body (refused
//! ones too: they cross the link as well) is read at the link's rate.

use std::sync::atomic::Ordering;

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::http::request::Parts;
use sha2::{Digest, Sha256};

use super::{
    Answer, ConnectionDropped, Refused, Shared, bad_video_manager, bump, empty, has_media_type,
    message, parse_decimal, quota_answer, refuse,
};
use crate::emulator::state::{ChunkPlan, ChunkRefusal, ChunkRequest};

/// Bodies of refused chunks are read and discarded up to this much, so the client gets to read
/// the answer instead of a broken pipe (the protocol allows chunks of up to 64 MiB).
const DRAIN_LIMIT: u64 = 128 * 1024 * 1024;

const TOTAL_CHUNKS: &str = "mi24-upload-total-chunks";
const CURRENT_CHUNK: &str = "mi24-upload-current-chunk";

pub(super) async fn chunk(
    shared: &Shared,
    parts: &Parts,
    mut body: Incoming,
    vm: &str,
    video: &str,
) -> Result<Answer, ConnectionDropped> {
    let mut plan = match begin_chunk(shared, parts, vm, video) {
        Ok(plan) => plan,
        Err(answer) => {
            drain(shared, body, true).await?;
            return Ok(*answer);
        }
    };
    let (hasher, received) = hash_body(shared, &mut body, std::mem::take(&mut plan.hasher)).await?;
    plan.hasher = hasher;
    if received != plan.len() {
        return Ok(message(
            StatusCode::BAD_REQUEST,
            &format!(
                "body has {received} bytes, Content-Length said {}",
                plan.len()
            ),
        ));
    }
    let finished = shared.state().finish_chunk(plan);
    Ok(match finished {
        Ok(accepted) => {
            bump(&shared.counters.chunks_accepted);
            if accepted.complete || shared.created_on_every_chunk {
                empty(StatusCode::CREATED)
            } else {
                empty(StatusCode::ACCEPTED)
            }
        }
        Err(refusal) => chunk_refusal(refusal),
    })
}

/// Feeds a chunk body into `hasher` frame by frame as hyper hands the frames over: nothing is
/// buffered. (Hashing on a separate thread was measured: no gain, sha256 and the socket copy
/// already overlap with the client's sending.) A sink only counts the frames.
async fn hash_body(
    shared: &Shared,
    body: &mut Incoming,
    mut hasher: Sha256,
) -> Result<(Sha256, u64), ConnectionDropped> {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if let Some(link) = &shared.link {
                link.carry(data.len()).await;
            }
            if !shared.sink {
                hasher.update(&data);
            }
            received += data.len() as u64;
            shared
                .counters
                .bytes_received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    Ok((hasher, received))
}

/// Everything about a chunk post that can be checked before its body is read: the `__token__`,
/// the headers, and then the video's state.
fn begin_chunk(
    shared: &Shared,
    parts: &Parts,
    vm: &str,
    video: &str,
) -> Result<ChunkPlan, Refused> {
    let forbidden = |text: &str| refuse(StatusCode::FORBIDDEN, text);
    let query = parts.uri.query().unwrap_or_default();
    let mut file_id = None;
    let mut token = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "fileId" if file_id.is_none() => file_id = Some(value.into_owned()),
            "__token__" if token.is_none() => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(token) = token else {
        return Err(forbidden("upload token (__token__) missing"));
    };
    let Some(file_id) = file_id else {
        return Err(forbidden("fileId missing from the upload URL"));
    };
    let Some((expiry, signature)) = token
        .split_once('~')
        .and_then(|(expiry, signature)| Some((parse_decimal::<u64>(expiry)?, signature)))
    else {
        return Err(forbidden("upload token is not valid"));
    };
    let path = parts.uri.path();
    // The token is the credential: it is checked before anything else about the request.
    if !shared
        .state()
        .upload_token_is_genuine(path, &file_id, expiry, signature)
    {
        return Err(forbidden("upload token is not valid"));
    }

    let total = chunk_number(&parts.headers, TOTAL_CHUNKS)?;
    let current = chunk_number(&parts.headers, CURRENT_CHUNK)?;
    if total == 0 || current == 0 || current > total {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "chunk {current} of {total}: need 1 <= Mi24-Upload-Current-Chunk <= \
                 Mi24-Upload-Total-Chunks"
            ),
        ));
    }
    if !has_media_type(&parts.headers, "application/octet-stream") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/octet-stream",
        ));
    }
    let Some(length) = parts.headers.get(header::CONTENT_LENGTH) else {
        return Err(refuse(
            StatusCode::LENGTH_REQUIRED,
            "Content-Length required (chunked transfer encoding is not accepted)",
        ));
    };
    let Some(len) = length.to_str().ok().and_then(parse_decimal::<u64>) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Content-Length is not a number",
        ));
    };
    if len == 0 {
        return Err(refuse(StatusCode::BAD_REQUEST, "empty chunk"));
    }
    let checked = shared
        .size_checks
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if shared.too_large_on_post == Some(checked) {
        bump(&shared.counters.chunks_too_large);
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("chunk post {checked} is refused as too large once (too_large_on_post)"),
        ));
    }
    if let Some(max) = shared.max_chunk_size().filter(|max| len > *max) {
        bump(&shared.counters.chunks_too_large);
        let (status, said) = if shared.too_large_as_400 {
            (StatusCode::BAD_REQUEST, "Request Entity Too Large: ")
        } else {
            (StatusCode::PAYLOAD_TOO_LARGE, "")
        };
        return Err(refuse(
            status,
            &format!(
                "{said}chunk of {len} bytes is larger than the {max} bytes this server accepts"
            ),
        ));
    }
    let Some(vm) = parse_decimal::<u64>(vm) else {
        return Err(Box::new(bad_video_manager(vm)));
    };
    let request = ChunkRequest {
        path: path.to_owned(),
        vm,
        video_id: video.to_owned(),
        file_id,
        expiry,
        signature: signature.to_owned(),
        total,
        current,
        len,
    };
    let now = shared.clock.now();
    shared
        .state()
        .begin_chunk(&request, now)
        .map_err(|refusal| Box::new(chunk_refusal(refusal)))
}

fn chunk_number(headers: &HeaderMap, name: &str) -> Result<u32, Refused> {
    let Some(value) = headers.get(name) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("header {name} missing"),
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|text| parse_decimal::<u32>(text.trim()))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                &format!("header {name} must be a decimal number"),
            )
        })
}

fn chunk_refusal(refusal: ChunkRefusal) -> Answer {
    match refusal {
        ChunkRefusal::Forbidden(text) => message(StatusCode::FORBIDDEN, &text),
        ChunkRefusal::NotFound => message(StatusCode::NOT_FOUND, "video not found"),
        ChunkRefusal::BadRequest(text) => message(StatusCode::BAD_REQUEST, &text),
        ChunkRefusal::OutOfOrder { got, expected } => message(
            StatusCode::CONFLICT,
            &format!("chunk {got} out of order: expected {expected}"),
        ),
        ChunkRefusal::Conflict(text) => message(StatusCode::CONFLICT, &text),
        ChunkRefusal::Quota => quota_answer(),
    }
}

/// The reset fault: take in about half of the body, then give up on the connection.
pub(super) async fn read_part_then_drop(
    shared: &Shared,
    headers: &HeaderMap,
    mut body: Incoming,
) -> ConnectionDropped {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_decimal::<u64>)
        .unwrap_or(0);
    let mut received = 0u64;
    while received == 0 || received < announced / 2 {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    shared
                        .counters
                        .bytes_received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Some(Err(error)) => return ConnectionDropped::Body(error),
            None => break,
        }
    }
    ConnectionDropped::ResetMidBody
}

/// Reads and discards a body we are going to refuse, so the client is still listening when the
/// answer comes. Past [`DRAIN_LIMIT`] hyper closes the connection after answering.
pub(super) async fn drain(
    shared: &Shared,
    mut body: Incoming,
    chunk_body: bool,
) -> Result<(), ConnectionDropped> {
    let mut drained = 0u64;
    while drained < DRAIN_LIMIT {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            drained += data.len() as u64;
            if let Some(link) = shared.link.as_ref().filter(|_| chunk_body) {
                link.carry(data.len()).await;
            }
            if chunk_body {
                shared
                    .counters
                    .bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
