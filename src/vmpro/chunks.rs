//! One file's chunked upload: the plan (`N = ceil(size / chunk)`), chunks streamed from disk
//! piece by piece with bounded memory (the chunk in flight and a few pieces ahead, never the
//! file), the sha256 of the bytes sent, and every chunk answer acted on: retried, URL renewed,
//! restarted at chunk 1 on the same video, or stopped. Never a second video entity for one file.
//! The chunk size is the config's, or chosen for the file from the measured link (`link`);
//! a chunk refused for its size (413) restarts the file in smaller chunks, on the same video.
//!
//! Longer than most files here because it is one state machine (plan, reader, sender, answer
//! handling) whose parts only make sense together; its tests are at the end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::api::{Platform, SendingCheck, UploadObserver, UploadUrl, VideoMetadata};
use super::bandwidth::{Admission, BandwidthLimiter, BodyProgress, PACE_SLICE};
use super::create::{
    CreateResume, KnownVideo, create_or_find, remove_marker_or_note, report_late_duplicates,
};
use super::error::{Disposition, Step, VmproError};
use super::link::{AUTO_MIN, ChunkChoice, auto_ceiling, choose_chunk_size};
use crate::config::{ChunkSize, human_size};

/// How a file is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    pub size: u64,
    pub chunk_size: u64,
    pub total: u32,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the file is empty")]
    Empty,
    #[error("chunk size must be at least 1 byte")]
    ZeroChunk,
    #[error("{size} bytes in chunks of {chunk_size} would need more than 4294967295 chunks")]
    TooManyChunks { size: u64, chunk_size: u64 },
}

impl ChunkPlan {
    pub fn new(size: u64, chunk_size: u64) -> Result<ChunkPlan, PlanError> {
        if size == 0 {
            return Err(PlanError::Empty);
        }
        if chunk_size == 0 {
            return Err(PlanError::ZeroChunk);
        }
        let total = size.div_ceil(chunk_size);
        let total =
            u32::try_from(total).map_err(|_| PlanError::TooManyChunks { size, chunk_size })?;
        Ok(ChunkPlan {
            size,
            chunk_size,
            total,
        })
    }

    /// Byte offset and length of chunk `index` (1-based, `1..=total`).
    pub fn span(&self, index: u32) -> (u64, u64) {
        let start = u64::from(index.saturating_sub(1)) * self.chunk_size;
        let len = self.chunk_size.min(self.size.saturating_sub(start));
        (start, len)
    }
}

/// Where a previous attempt stopped, from the state store.
#[derive(Debug, Clone, Default)]
pub struct ResumePoint {
    pub video_id: Option<String>,
    pub url: Option<UploadUrl>,
    /// 1-based chunk to send next; 1 = from the start.
    pub next_chunk: u32,
    /// The chunk size the previous attempt used: with chunks accepted (`next_chunk > 1`) the
    /// server expects the same total, so a resume keeps it; otherwise the size is chosen anew.
    pub chunk_size: Option<u64>,
    /// The job's marker keyword: the one its creates carry, or (with `video_id`) the one
    /// still to be removed from the video.
    pub marker: Option<String>,
    /// A create was sent whose answer never settled: before creating, look the video up.
    pub create_outcome_unknown: bool,
}

/// What to upload.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub path: PathBuf,
    /// The name sent as `fileName` (its suffix tells the platform the media type).
    pub file_name: String,
    pub metadata: VideoMetadata,
    pub resume: ResumePoint,
}

/// What a finished upload did.
#[derive(Debug, Clone)]
pub struct UploadReport {
    pub video_id: String,
    pub sha256: String,
    pub size: u64,
    pub chunks: u32,
    pub chunk_size: u64,
    /// Chunk bytes sent, re-sends included.
    pub bytes_sent: u64,
    /// Bytes of the chunks accepted in this run (a resume does not count what came before).
    pub bytes_accepted: u64,
    /// Time spent sending those chunks: from the bandwidth limit's wait before each to its
    /// answer, without the create, URL requests, backoff between tries, or pauses. The rate
    /// shown for an upload is `bytes_accepted / sending`, so waiting does not lower it.
    pub sending: Duration,
    pub elapsed: Duration,
    pub url_renewals: u32,
    pub restarts: u32,
    /// Size and mtime the content was read with (the agent compares them again).
    pub mtime: SystemTime,
}

impl UploadReport {
    /// The rate of this run's chunks while they were being sent (see `sending`); `None` when
    /// no chunk was sent (everything had been accepted before a restart).
    pub fn bytes_per_second(&self) -> Option<f64> {
        sending_rate(self.bytes_accepted, self.sending)
    }
}

/// Bytes per second over the time they took to send; `None` for nothing sent.
pub fn sending_rate(bytes: u64, sending: Duration) -> Option<f64> {
    let secs = sending.as_secs_f64();
    (bytes > 0 && secs > 0.0).then(|| bytes as f64 / secs)
}

/// One piece of a chunk as read from disk; the file's last piece carries the sha256 of the
/// whole content.
struct ReadPiece {
    data: Bytes,
    digest: Option<[u8; 32]>,
}

/// Piece buffers reused from one chunk to the next: fresh memory for every piece costs page
/// faults on every read and leaves the allocator holding freed memory (RSS creeps up).
#[derive(Clone)]
struct BufferPool {
    buffers: Arc<Mutex<Vec<BytesMut>>>,
    /// The pieces of the chunk in flight, those read ahead (for the socket and the hasher), the
    /// ones being read and hashed, and a spare.
    keep: usize,
}

impl BufferPool {
    fn new(plan: ChunkPlan) -> BufferPool {
        let pieces_per_chunk =
            usize::try_from(plan.chunk_size.div_ceil(READ_PIECE as u64)).unwrap_or(usize::MAX);
        BufferPool {
            buffers: Arc::default(),
            keep: pieces_per_chunk.saturating_add(PIECES_AHEAD + HASH_AHEAD + 3),
        }
    }

    fn take(&self, len: usize) -> BytesMut {
        let reused = self.buffers.lock().ok().and_then(|mut pool| pool.pop());
        match reused {
            // A reused buffer is overwritten by the read: no zeroing.
            Some(mut buffer) if buffer.capacity() >= len => {
                if buffer.len() >= len {
                    buffer.truncate(len);
                } else {
                    buffer.resize(len, 0);
                }
                buffer
            }
            _ => page_aligned(len),
        }
    }

    /// Returns a piece's memory, if nothing else still holds it.
    fn give(&self, data: Bytes) {
        if let Ok(buffer) = data.try_into_mut()
            && let Ok(mut pool) = self.buffers.lock()
            && pool.len() < self.keep
        {
            pool.push(buffer);
        }
    }
}

/// Memory pages are this large (or a multiple of it).
const PAGE: usize = 4096;

/// A zeroed buffer starting on a page boundary. A large allocation starts 16 bytes past one,
/// and on AMD EPYC the kernel's copy from the page cache into such a buffer runs at a fifth of
/// the speed (measured: 1.7 GB/s against 8 GB/s page-aligned): it was most of the gap to curl.
fn page_aligned(len: usize) -> BytesMut {
    let mut buffer = BytesMut::zeroed(len.saturating_add(PAGE));
    let skip = buffer.as_ptr().align_offset(PAGE);
    if skip < PAGE {
        buffer.advance(skip);
    }
    buffer.truncate(len);
    buffer
}

/// What happened to one chunk.
enum ChunkOutcome {
    /// `took`: the chunk's sending time (see `UploadReport::sending`).
    Accepted { took: Duration },
    /// The server will not continue this content: start again at chunk 1, same video.
    Restart(&'static str),
    /// The server refused the chunk of `sent` bytes for its size (413, or a 400 saying so).
    TooLarge {
        status: u16,
        message: String,
        sent: u64,
    },
}

/// The plan for `size` bytes in chunks of `chunk_size`; `size` is never 0 here.
fn plan_for(path: &Path, size: u64, chunk_size: u64) -> Result<ChunkPlan, VmproError> {
    ChunkPlan::new(size, chunk_size).map_err(|err| match err {
        PlanError::Empty => VmproError::EmptyFile {
            path: path.to_path_buf(),
        },
        other => VmproError::Protocol {
            step: Step::Chunk,
            message: other.to_string(),
        },
    })
}

/// The chunk size for a file starting at chunk 1: the config's, or chosen from the link.
fn choose_for(platform: &Platform) -> ChunkChoice {
    match platform.upload.chunk_size {
        ChunkSize::Fixed(size) => ChunkChoice {
            size,
            why: format!("chunk_size = {} in the config", human_size(size)),
        },
        ChunkSize::Auto => {
            // The limit now is the rate to assume before any chunk was measured.
            let limit = platform
                .upload
                .bandwidth
                .at(&jiff::Zoned::now())
                .0
                .bytes_per_second()
                .filter(|rate| *rate > 0);
            // Bounded by `parallel`: each file holds its chunk in memory (see `auto_ceiling`).
            choose_chunk_size(
                &platform.transport.link.snapshot(),
                limit,
                auto_ceiling(platform.upload.parallel),
                SystemTime::now(),
            )
        }
    }
}

/// Uploads one file: creates its video unless the resume point has one, then sends every
/// chunk. The observer hears of the video id, URLs and each accepted chunk so that a crash
/// loses at most one chunk of work.
pub async fn upload_file(
    platform: &Platform,
    request: UploadRequest,
    observer: &dyn UploadObserver,
    shutdown: &CancellationToken,
) -> Result<UploadReport, VmproError> {
    let started = Instant::now();
    let path = Arc::new(request.path.clone());
    let (file, size, mtime) = open_for_upload(&path).await?;
    let opened = Opened::of(&file, size, mtime);
    let file = Arc::new(file);

    if size == 0 {
        return Err(VmproError::EmptyFile {
            path: request.path.clone(),
        });
    }

    let resume = request.resume;
    // Chunks already accepted define the plan: a resume keeps the size it started with.
    let resumed_plan = match resume.chunk_size {
        Some(chunk_size) if resume.next_chunk > 1 => {
            Some(plan_for(&request.path, size, chunk_size)?)
        }
        _ => None,
    };
    let next = resume.next_chunk.max(1);
    // Every chunk was accepted before a restart (the agent stopped between the last chunk and
    // the move): the video is complete, only the hash of the content is left to compute.
    let all_accepted = resume.video_id.is_some()
        && resumed_plan.is_some_and(|plan| next == plan.total.saturating_add(1));

    // A marker left on a known video (a removal that failed or was cut short) comes off first.
    let mut marker_left = match &resume.video_id {
        Some(id) => resume.marker.clone().map(|marker| KnownVideo {
            id: id.clone(),
            marker: Some(marker),
            recreated: false,
        }),
        None => None,
    };
    if let Some(video) = &marker_left
        && remove_marker_or_note(platform, video, shutdown, observer).await
    {
        marker_left = None;
    }

    if let Some(plan) = resumed_plan.filter(|_| all_accepted)
        && let Some(video_id) = resume.video_id
    {
        let source = ChunkSource {
            file,
            path: path.clone(),
            plan,
            buffers: BufferPool::new(plan),
        };
        let digest = tokio::task::spawn_blocking(move || hash_all_blocking(&source))
            .await
            .map_err(|err| VmproError::Read {
                path: request.path.clone(),
                source: std::io::Error::other(err),
            })??;
        unchanged_since_start(&request.path, opened).await?;
        observer.event(
            "resumed",
            &format!("all {} chunks were accepted before a restart", plan.total),
        );
        return Ok(UploadReport {
            video_id,
            sha256: hex::encode(digest),
            size,
            chunks: plan.total,
            chunk_size: plan.chunk_size,
            bytes_sent: 0,
            bytes_accepted: 0,
            sending: Duration::ZERO,
            elapsed: started.elapsed(),
            url_renewals: 0,
            restarts: 0,
            mtime,
        });
    }

    let mut recreated = None;
    may_continue(observer)?;
    let video_id = match resume.video_id {
        Some(id) => id,
        None => {
            let create = CreateResume {
                marker: resume.marker,
                outcome_unknown: resume.create_outcome_unknown,
            };
            let video = create_or_find(
                platform,
                &request.file_name,
                &request.metadata,
                create,
                shutdown,
                observer,
            )
            .await?;
            if !remove_marker_or_note(platform, &video, shutdown, observer).await {
                marker_left = Some(video.clone());
            }
            let id = video.id.clone();
            recreated = video.recreated.then_some(video);
            id
        }
    };

    let mut url = match resume.url {
        Some(url) if url.age() < platform.upload.url_renew_after => url,
        _ => {
            may_continue(observer)?;
            let url = platform.upload_url(&video_id, shutdown, observer).await?;
            observer.url_issued(&url);
            url
        }
    };

    // Chosen after the create and the URL request: their round trips are the first measure
    // of the link.
    let (mut plan, mut index) = match resumed_plan {
        Some(plan) if next <= plan.total => (plan, next),
        _ => {
            let choice = choose_for(platform);
            // Only where it matters: a file of one smallest chunk is one chunk at any size.
            if platform.upload.chunk_size == ChunkSize::Auto && size > AUTO_MIN {
                observer.event("chunk size", &choice.why);
            }
            (plan_for(&request.path, size, choice.size)?, 1)
        }
    };

    let mut report = UploadReport {
        video_id: video_id.clone(),
        sha256: String::new(),
        size,
        chunks: plan.total,
        chunk_size: plan.chunk_size,
        bytes_sent: 0,
        bytes_accepted: 0,
        sending: Duration::ZERO,
        elapsed: Duration::ZERO,
        url_renewals: 0,
        restarts: 0,
        mtime,
    };

    // The hash covers the bytes sent; on a resume, the chunks sent before are read again.
    let mut source = ChunkSource {
        file,
        path,
        plan,
        buffers: BufferPool::new(plan),
    };
    let mut feed = ChunkFeed::start(&source, index);
    let mut restarts_left = platform.upload.max_attempts;
    while index <= plan.total {
        let (start, len) = plan.span(index);
        feed.begin_chunk(len);
        // Before the last chunk completes the video: a file deleted or rewritten meanwhile
        // must not become a complete video on the platform.
        if index == plan.total {
            unchanged_since_start(&request.path, opened).await?;
        }
        let outcome = send_chunk(
            platform,
            &video_id,
            &mut url,
            plan,
            index,
            &feed,
            observer,
            shutdown,
            &mut report,
        )
        .await?;
        match outcome {
            ChunkOutcome::Accepted { took } => {
                report.bytes_accepted += len;
                report.sending += took;
                observer.chunk_accepted(index, plan.total, plan.chunk_size, start + len, took);
                index += 1;
            }
            ChunkOutcome::Restart(why) => {
                if restarts_left == 0 {
                    return Err(VmproError::Protocol {
                        step: Step::Chunk,
                        message: format!("the server kept refusing to continue the upload ({why})"),
                    });
                }
                restarts_left -= 1;
                report.restarts += 1;
                observer.restarted();
                observer.event(
                    "restart",
                    &format!("{why}: sending the file again from chunk 1 to the same video"),
                );
                tracing::info!(file = %crate::escape::escaped(&request.path), video_id = %video_id, "{why}; restarting at chunk 1");
                index = 1;
                feed.recycle();
                feed = ChunkFeed::start(&source, index);
            }
            ChunkOutcome::TooLarge {
                status,
                message,
                sent,
            } => {
                // Halving starts from the bytes sent: a file's last chunk is often shorter
                // than the plan's size. Halvings end at 1 MiB, so they need no limit of their
                // own; a fixed size is tried once more only when a resume's plan had another.
                let (smaller, later) = match platform.upload.chunk_size {
                    ChunkSize::Auto => {
                        let smaller = platform.transport.link.refused(sent, SystemTime::now());
                        if smaller.is_some() {
                            // At once, not after the file: a kill -9 meanwhile keeps it.
                            observer.size_refused(
                                platform.account.api_url.as_str(),
                                &platform.transport.link.snapshot(),
                            );
                        }
                        (smaller, "later files start at that size")
                    }
                    ChunkSize::Fixed(size) if size != plan.chunk_size => {
                        (Some(size), "the size set in upload.chunk_size")
                    }
                    ChunkSize::Fixed(_) => (None, ""),
                };
                let Some(smaller) = smaller else {
                    return Err(VmproError::ChunkTooLarge {
                        chunk_size: match platform.upload.chunk_size {
                            ChunkSize::Auto => sent,
                            ChunkSize::Fixed(_) => plan.chunk_size,
                        },
                        status,
                        message,
                        chosen: platform.upload.chunk_size == ChunkSize::Auto,
                    });
                };
                let why = format!(
                    "the server refused a chunk of {} ({status}: {message}): sending the file \
                     again from chunk 1 in chunks of {}, to the same video; {later}",
                    human_size(sent),
                    human_size(smaller)
                );
                report.restarts += 1;
                observer.restarted();
                observer.event("chunk size", &why);
                feed.recycle();
                plan = plan_for(&request.path, size, smaller)?;
                source = ChunkSource {
                    plan,
                    buffers: BufferPool::new(plan),
                    ..source
                };
                report.chunks = plan.total;
                report.chunk_size = plan.chunk_size;
                index = 1;
                feed = ChunkFeed::start(&source, index);
            }
        }
    }
    let digest = feed.digest();
    feed.recycle();

    // And after it: a change during the last chunk means the platform has a mix. A file
    // deleted meanwhile is another matter: what was read through the open file is the file's
    // (deleting changes no byte), so the video holds it whole and the upload counts (the
    // agent then says it was removed before it could be moved).
    match unchanged_since_start(&request.path, opened).await {
        Ok(()) => {}
        Err(changed) if deleted_unchanged(&source.file, opened) => {
            observer.event(
                "deleted",
                &format!(
                    "the file was deleted while its last chunk was on its way ({}); the video holds it whole",
                    crate::chain(&changed)
                ),
            );
        }
        Err(changed) => return Err(changed),
    }

    let Some(digest) = digest else {
        return Err(VmproError::Protocol {
            step: Step::Chunk,
            message: "internal: the last chunk was accepted without its hash".into(),
        });
    };
    if let Some(video) = &recreated {
        report_late_duplicates(platform, video, shutdown, observer).await;
    }
    // Once more before the file is done; if it still fails, the agent's sweep of finished jobs
    // tries again later.
    if let Some(video) = &marker_left {
        remove_marker_or_note(platform, video, shutdown, observer).await;
    }
    report.sha256 = hex::encode(digest);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Stops the upload, as a cancellation does, when the observer says it may not go on (another
/// agent took the file over).
fn may_continue(observer: &dyn UploadObserver) -> Result<(), VmproError> {
    if observer.may_continue() {
        Ok(())
    } else {
        Err(VmproError::Cancelled)
    }
}

/// Sends chunk `index` until it is accepted, acting on each answer.
#[allow(clippy::too_many_arguments)]
async fn send_chunk(
    platform: &Platform,
    video_id: &str,
    url: &mut UploadUrl,
    plan: ChunkPlan,
    index: u32,
    feed: &ChunkFeed,
    observer: &dyn UploadObserver,
    shutdown: &CancellationToken,
    report: &mut UploadReport,
) -> Result<ChunkOutcome, VmproError> {
    // Renewals in a row without an accepted chunk: a URL refused again and again means the
    // server refuses this upload, not that the token expired.
    let mut renewals = 0u32;
    // Sends cut short in a row by the body's claim check (see `UploadObserver::sending_check`).
    let mut checks_failed = 0u32;
    loop {
        may_continue(observer)?;
        // Quiet hours: no request starts (one under way finishes; see `bandwidth`). Waited out
        // before the URL's age is looked at: hours of waiting may bring it near its limit.
        platform
            .bandwidth
            .wait_out_quiet_hours(shutdown, || {
                tracing::info!(
                    video_id,
                    "quiet hours (bandwidth_schedule): chunk {index}/{} waits until they end",
                    plan.total
                );
            })
            .await?;
        if url.age() >= platform.upload.url_renew_after {
            let why = "the upload URL is close to its 4-hour limit";
            let fresh = renew(platform, video_id, shutdown, observer, report, why).await?;
            let restart = index > 1 && fresh.file_id() != url.file_id();
            *url = fresh;
            if restart {
                return Ok(ChunkOutcome::Restart(
                    "the renewed upload URL names a new file",
                ));
            }
        }
        // A read failure inside a body must end the upload, not look like a lost connection to
        // be retried: the body cancels `stop` and leaves its error in the feed.
        let stop = shutdown.child_token();
        let quiet = UnlessReadFailed {
            observer,
            feed,
            stop: &stop,
        };
        // Decided per chunk: after a reload that sets a limit, an upload in flight is paced
        // from its next chunk.
        let pacing = Pacing {
            limiter: platform
                .bandwidth
                .limits()
                .then(|| platform.bandwidth.clone()),
            progress: Arc::new(BodyProgress::default()),
        };
        // Transient failures (connection lost, timeouts, 408/429/5xx) are retried in here. The
        // chunk's time runs from each try's start, its pacing included: the rate shown for a
        // limited upload is the limited rate.
        let sends = std::sync::atomic::AtomicU64::new(0);
        // A refusal for size of a chunk no longer than one the server took in this run (this
        // file's or another's) is not about its size: retried like a 503, each a failed try,
        // twice; a third in a row halves the size as any refusal of it does.
        let size_taken_before = platform.transport.link.accepted_before(feed.chunk_len());
        let last_try = std::sync::Mutex::new(tokio::time::Instant::now());
        let check = observer.sending_check();
        let answer = platform
            .transport
            .exchange_paced(
                Step::Chunk,
                &stop,
                &quiet,
                Some(pacing.progress.as_ref()),
                Some(platform.bandwidth.as_ref()),
                size_taken_before,
                || {
                    sends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut started) = last_try.lock() {
                        *started = tokio::time::Instant::now();
                    }
                    // The client's whole-request timeout would cut a big chunk on a slow or
                    // limited link; the exchange times it out when it stops moving instead.
                    platform
                        .transport
                        .http
                        .post(url.expose())
                        .header("Mi24-Upload-Total-Chunks", plan.total)
                        .header("Mi24-Upload-Current-Chunk", index)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, feed.chunk_len())
                        .body(feed.body(stop.clone(), pacing.clone(), check.clone()))
                        .timeout(CHUNK_REQUEST_LIMIT)
                },
            )
            .await;
        report.bytes_sent += sends.into_inner() * feed.chunk_len();
        if let Some(failure) = feed.take_failure() {
            if matches!(failure, VmproError::Cancelled) && !shutdown.is_cancelled() {
                // The claim check cut the body short (the server drops it): the file server
                // decides at the top of the loop. Taken over, the upload stops there; still
                // this agent's, the chunk goes again. A claim confirmed again goes at once; one
                // the share cannot confirm now (it dropped) waits a little between tries.
                super::create::after_failed_check(&mut checks_failed, shutdown).await?;
                continue;
            }
            return Err(failure);
        }
        checks_failed = 0;
        let answer = answer?;
        match answer.disposition(Step::Chunk) {
            Disposition::Accepted => {
                let answered = tokio::time::Instant::now();
                let sent_in = last_try
                    .lock()
                    .map(|started| answered.saturating_duration_since(*started))
                    .unwrap_or_default();
                let answered_in = pacing
                    .progress
                    .sent_at()
                    .map(|sent| answered.saturating_duration_since(sent));
                platform
                    .transport
                    .link
                    .chunk(feed.chunk_len(), sent_in, answered_in);
                return Ok(ChunkOutcome::Accepted { took: sent_in });
            }
            Disposition::ChunkTooLarge => {
                return Ok(ChunkOutcome::TooLarge {
                    status: answer.status,
                    message: super::error::server_message(&answer.body),
                    sent: feed.chunk_len(),
                });
            }
            Disposition::RenewUrl if renewals < 3 => {
                renewals += 1;
                let why = format!(
                    "chunk {index}/{}: upload URL refused ({} {})",
                    plan.total,
                    answer.status,
                    super::error::server_message(&answer.body)
                );
                let fresh = renew(platform, video_id, shutdown, observer, report, &why).await?;
                let restart = index > 1 && fresh.file_id() != url.file_id();
                *url = fresh;
                if restart {
                    return Ok(ChunkOutcome::Restart(
                        "the renewed upload URL names a new file",
                    ));
                }
            }
            Disposition::RestartContent if index > 1 => {
                return Ok(ChunkOutcome::Restart(
                    "the server will not continue this upload",
                ));
            }
            other => {
                return Err(VmproError::from_answer(
                    Step::Chunk,
                    answer.status,
                    &answer.body,
                    other,
                ));
            }
        }
    }
}

async fn renew(
    platform: &Platform,
    video_id: &str,
    shutdown: &CancellationToken,
    observer: &dyn UploadObserver,
    report: &mut UploadReport,
    why: &str,
) -> Result<UploadUrl, VmproError> {
    let fresh = platform.upload_url(video_id, shutdown, observer).await?;
    report.url_renewals += 1;
    observer.url_issued(&fresh);
    observer.event("url renewed", &format!("{why}; new upload URL {fresh}"));
    tracing::info!(video_id, url = %fresh, "upload URL renewed: {why}");
    Ok(fresh)
}

/// Opens the file to upload: never through a link in any component of its path, and never
/// blocking on what is not a regular file (a named pipe is refused at once; see `nofollow`).
async fn open_for_upload(path: &Arc<PathBuf>) -> Result<(File, u64, SystemTime), VmproError> {
    let owned = path.clone();
    let opened =
        tokio::task::spawn_blocking(move || -> std::io::Result<(File, u64, SystemTime)> {
            let file = crate::nofollow::open_file(owned.as_path())
                .map_err(crate::nofollow::NoFollowError::into_io)?;
            let meta = file.metadata()?;
            Ok((file, meta.len(), meta.modified()?))
        })
        .await;
    match opened {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(source)) => Err(VmproError::Read {
            path: path.to_path_buf(),
            source,
        }),
        Err(join) => Err(VmproError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(join),
        }),
    }
}

/// What the file was when it was opened: the content sent must stay that file, unchanged.
#[derive(Debug, Clone, Copy)]
struct Opened {
    size: u64,
    mtime: SystemTime,
    /// Device and inode: a file put in its place (or a link swapped in on the way) is another.
    identity: Option<(u64, u64)>,
    /// The inode's change time (ns): a write moves it even when the mtime is put back.
    ctime_ns: Option<i128>,
}

impl Opened {
    fn of(file: &File, size: u64, mtime: SystemTime) -> Opened {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok();
        Opened {
            size,
            mtime,
            identity: meta.as_ref().map(|m| (m.dev(), m.ino())),
            ctime_ns: meta
                .as_ref()
                .map(|m| i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())),
        }
    }
}

/// Whether the open `file` has no name left (deleted) and is otherwise as it was opened: the
/// same size and modification time (deleting moves only its change time).
fn deleted_unchanged(file: &File, opened: Opened) -> bool {
    file.metadata().is_ok_and(|meta| {
        use std::os::unix::fs::MetadataExt;
        meta.nlink() == 0
            && meta.len() == opened.size
            && meta.modified().is_ok_and(|mtime| mtime == opened.mtime)
    })
}

/// The content must be what it was when the upload started: the same file at the path (reached
/// without a link), with the same size and modification time.
async fn unchanged_since_start(path: &Path, opened: Opened) -> Result<(), VmproError> {
    let owned = path.to_path_buf();
    let looked = tokio::task::spawn_blocking(move || crate::nofollow::lstat(&owned)).await;
    let changed = |what: String| VmproError::FileChanged {
        path: path.to_path_buf(),
        what,
    };
    let now = match looked {
        Ok(Ok(entry)) => entry,
        Ok(Err(err)) => {
            return Err(changed(format!(
                "it can no longer be read: {}",
                crate::chain(&err)
            )));
        }
        Err(join) => return Err(changed(format!("it can no longer be read: {join}"))),
    };
    if opened
        .identity
        .is_some_and(|identity| identity != now.identity)
    {
        return Err(changed("another file was put in its place".into()));
    }
    if now.size != opened.size || now.mtime_ns != crate::ready::system_time_ns(opened.mtime) {
        return Err(changed(format!(
            "size {} → {} bytes or modification time changed",
            opened.size, now.size
        )));
    }
    if opened
        .ctime_ns
        .is_some_and(|ctime_ns| ctime_ns != now.ctime_ns)
    {
        return Err(changed(
            "it was rewritten (its change time moved, though size and modification time are as before)".into(),
        ));
    }
    Ok(())
}

/// Where chunks are read from: the open file and the buffers to read into.
#[derive(Clone)]
struct ChunkSource {
    file: Arc<File>,
    path: Arc<PathBuf>,
    plan: ChunkPlan,
    buffers: BufferPool,
}

/// Bytes read, hashed and handed to the socket at a time: small enough to be in the CPU cache
/// when hashed and, soon after, copied into the socket (an 8 MiB chunk read long before it is
/// sent is not: measured, the kernel's send copy took twice the time), large enough that
/// handing pieces between threads costs little (512 KiB was ~1.5% faster than 256 KiB, and
/// as fast as 1 MiB, in interleaved runs of `bench/upload_bench.py`).
const READ_PIECE: usize = 512 * 1024;

/// Pieces hashed ahead of the socket (2 MiB): the hasher goes on while the server answers a
/// chunk, and they are still in cache when sent.
const PIECES_AHEAD: usize = 4;

/// Pieces read ahead of the hasher: the reader is about four times faster, so the hasher
/// never waits for the disk's page cache.
const HASH_AHEAD: usize = 2;

/// The file's pieces as the reader thread delivers them, and the current chunk's pieces so far:
/// every send of a chunk (retries, lost answers, renewed URLs) passes on exactly the same bytes
/// from memory, without reading or hashing them again.
struct ChunkFeed {
    state: Arc<Mutex<FeedState>>,
    buffers: BufferPool,
    path: Arc<PathBuf>,
}

struct FeedState {
    pieces: tokio::sync::mpsc::Receiver<Result<ReadPiece, VmproError>>,
    /// The current chunk's pieces received so far, in order.
    chunk: Vec<Bytes>,
    chunk_len: u64,
    /// The sha256 of the whole content, once its last piece has been received.
    digest: Option<[u8; 32]>,
    /// Why the reader stopped, for the upload loop to report instead of a transport error.
    failure: Option<VmproError>,
}

impl ChunkFeed {
    /// Starts reading at chunk `from`; chunks before it (sent before a restart of the agent)
    /// are read and hashed only, so that the final hash covers the whole content.
    fn start(source: &ChunkSource, from: u32) -> ChunkFeed {
        let (sender, pieces) = tokio::sync::mpsc::channel(PIECES_AHEAD);
        let (to_hash, read) = std::sync::mpsc::sync_channel(HASH_AHEAD);
        let reading = source.clone();
        tokio::task::spawn_blocking(move || read_pieces_blocking(&reading, &to_hash));
        let buffers = source.buffers.clone();
        tokio::task::spawn_blocking(move || hash_pieces_blocking(&read, from, &buffers, &sender));
        ChunkFeed {
            state: Arc::new(Mutex::new(FeedState {
                pieces,
                chunk: Vec::new(),
                chunk_len: 0,
                digest: None,
                failure: None,
            })),
            buffers: source.buffers.clone(),
            path: source.path.clone(),
        }
    }

    /// Moves on to the next chunk, `len` bytes long: the previous chunk's memory is reused.
    fn begin_chunk(&self, len: u64) {
        if let Ok(mut state) = self.state.lock() {
            for piece in state.chunk.drain(..) {
                self.buffers.give(piece);
            }
            state.chunk_len = len;
        }
    }

    /// Returns the current chunk's memory before the feed is dropped.
    fn recycle(&self) {
        self.begin_chunk(0);
    }

    fn chunk_len(&self) -> u64 {
        self.state.lock().map(|state| state.chunk_len).unwrap_or(0)
    }

    fn digest(&self) -> Option<[u8; 32]> {
        self.state.lock().ok().and_then(|state| state.digest)
    }

    fn read_failed(&self) -> bool {
        self.state
            .lock()
            .map(|state| state.failure.is_some())
            .unwrap_or(true)
    }

    fn take_failure(&self) -> Option<VmproError> {
        match self.state.lock() {
            Ok(mut state) => state.failure.take(),
            Err(_) => Some(VmproError::Read {
                path: self.path.to_path_buf(),
                source: std::io::Error::other("the chunk reader failed"),
            }),
        }
    }

    /// One send of the current chunk: the pieces received so far, then the rest as the reader
    /// delivers them. The length is exact, so the request carries a `Content-Length`.
    fn body(
        &self,
        stop: CancellationToken,
        pacing: Pacing,
        check: Option<SendingCheck>,
    ) -> reqwest::Body {
        let remaining = self.chunk_len();
        reqwest::Body::wrap(ChunkBody {
            check,
            state: self.state.clone(),
            path: self.path.clone(),
            next: 0,
            offset: 0,
            remaining,
            stop,
            pacing,
            waiting: None,
            under_way: false,
        })
    }
}

/// One send of one chunk, streamed piece by piece.
struct ChunkBody {
    /// Asked before each piece: `false` (the file may have been taken over by another agent
    /// while this process was stopped) ends the body unfinished, so the server drops it.
    check: Option<SendingCheck>,
    state: Arc<Mutex<FeedState>>,
    path: Arc<PathBuf>,
    /// Index into the chunk's pieces of the next one to pass on.
    next: usize,
    /// Bytes of the chunk not passed on yet.
    remaining: u64,
    /// Cancelled when the reader failed, so the retry loop stops instead of retrying.
    stop: CancellationToken,
    /// Bytes of piece `next` already passed on (a paced body passes pieces on in slices).
    offset: usize,
    /// The bandwidth limit, when one is set, and the body's progress.
    pacing: Pacing,
    /// The limiter's wait for the next slice.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether any byte has gone: quiet hours stop a body only before its first.
    under_way: bool,
}

/// The limiter a chunk body asks before each slice (when a limit is set), and where it notes
/// that it moved and when it was all handed over.
#[derive(Clone)]
struct Pacing {
    limiter: Option<Arc<BandwidthLimiter>>,
    progress: Arc<BodyProgress>,
}

/// The whole-request limit of a chunk post: longer than any chunk takes at a rate anyone
/// sets; the exchange's own stall timeout (`request_timeout`) is the one that acts.
const CHUNK_REQUEST_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

impl ChunkBody {
    fn fail(&self, state: &mut FeedState, failure: VmproError) -> std::io::Error {
        let error = std::io::Error::other(crate::chain(&failure));
        state.failure.get_or_insert(failure);
        self.stop.cancel();
        error
    }
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let body = &mut *self;
        if let Some(waiting) = body.waiting.as_mut() {
            if waiting.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            body.waiting = None;
        }
        let Ok(mut state) = body.state.lock() else {
            return Poll::Ready(Some(Err(std::io::Error::other("the chunk reader failed"))));
        };
        if let Some(check) = &body.check
            && !check()
        {
            return Poll::Ready(Some(Err(body.fail(&mut state, VmproError::Cancelled))));
        }
        let piece = match state.chunk.get(body.next) {
            Some(piece) => piece.clone(),
            None => match state.pieces.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(read))) => {
                    state.digest = read.digest.or(state.digest);
                    state.chunk.push(read.data.clone());
                    read.data
                }
                Poll::Ready(Some(Err(failure))) => {
                    return Poll::Ready(Some(Err(body.fail(&mut state, failure))));
                }
                Poll::Ready(None) => {
                    let failure = VmproError::Read {
                        path: body.path.to_path_buf(),
                        source: std::io::Error::other("the chunk reader stopped unexpectedly"),
                    };
                    return Poll::Ready(Some(Err(body.fail(&mut state, failure))));
                }
            },
        };
        drop(state);
        let end = match &body.pacing.limiter {
            Some(_) => piece.len().min(body.offset + PACE_SLICE),
            None => piece.len(),
        };
        let slice = piece.slice(body.offset.min(end)..end);
        match &body.pacing.limiter {
            None => body.pacing.progress.alive(tokio::time::Instant::now()),
            Some(limiter) => match limiter.admit(slice.len(), body.under_way) {
                Admission::Go => body.pacing.progress.alive(tokio::time::Instant::now()),
                Admission::WaitUntil(at) => {
                    // Waiting for the limiter is not a stall.
                    body.pacing.progress.alive(at);
                    let mut waiting = Box::pin(tokio::time::sleep_until(at));
                    if waiting.as_mut().poll(cx).is_ready() {
                        cx.waker().wake_by_ref();
                    } else {
                        body.waiting = Some(waiting);
                    }
                    return Poll::Pending;
                }
            },
        }
        let Some(remaining) = body.remaining.checked_sub(slice.len() as u64) else {
            let failure = VmproError::Protocol {
                step: Step::Chunk,
                message: "internal: a piece crosses the end of its chunk".into(),
            };
            return match body.state.lock() {
                Ok(mut state) => Poll::Ready(Some(Err(body.fail(&mut state, failure)))),
                Err(_) => Poll::Ready(Some(Err(std::io::Error::other("the chunk reader failed")))),
            };
        };
        body.remaining = remaining;
        if end >= piece.len() {
            body.next += 1;
            body.offset = 0;
        } else {
            body.offset = end;
        }
        body.under_way = true;
        if remaining == 0 {
            body.pacing.progress.sent();
        }
        Poll::Ready(Some(Ok(hyper::body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// Passes everything on to the upload's observer, except the retry the transport announces
/// when a body stopped because the file could not be read: that is not a network problem and
/// nothing is retried.
struct UnlessReadFailed<'a> {
    observer: &'a dyn UploadObserver,
    feed: &'a ChunkFeed,
    stop: &'a CancellationToken,
}

impl UnlessReadFailed<'_> {
    /// The body stopped because the file could not be read: what the transport says next is
    /// not about the network.
    fn read_failed(&self) -> bool {
        self.stop.is_cancelled() && self.feed.read_failed()
    }
}

impl UploadObserver for UnlessReadFailed<'_> {
    fn event(&self, event: &str, detail: &str) {
        if !self.read_failed() {
            self.observer.event(event, detail);
        }
    }
    fn retrying(&self, step: Step, error: &VmproError) {
        if !self.read_failed() {
            self.observer.retrying(step, error);
        }
    }
    fn create_sending(
        &self,
        marker: Option<&str>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.observer.create_sending(marker)
    }
    fn create_settled(&self) {
        self.observer.create_settled();
    }
    fn video_created(&self, video_id: &str) {
        self.observer.video_created(video_id);
    }
    fn video_on_record(&self) -> bool {
        self.observer.video_on_record()
    }
    fn keeps_marker(&self) -> bool {
        self.observer.keeps_marker()
    }
    fn marker_removed(&self) {
        self.observer.marker_removed();
    }
    fn url_issued(&self, url: &UploadUrl) {
        self.observer.url_issued(url);
    }
    fn chunk_accepted(
        &self,
        index: u32,
        total: u32,
        chunk_size: u64,
        bytes_done: u64,
        took: Duration,
    ) {
        self.observer
            .chunk_accepted(index, total, chunk_size, bytes_done, took);
    }
    fn restarted(&self) {
        self.observer.restarted();
    }
    fn may_continue(&self) -> bool {
        self.observer.may_continue()
    }
    fn sending_check(&self) -> Option<SendingCheck> {
        self.observer.sending_check()
    }
    fn create_check(&self) -> Option<SendingCheck> {
        self.observer.create_check()
    }
}

/// A piece on its way from the reader thread to the hasher thread.
struct ReadInOrder {
    data: Bytes,
    /// The chunk it belongs to.
    index: u32,
    /// Whether it is the file's last piece.
    last: bool,
}

/// Reads the file piece by piece on a blocking thread and hands each piece, in order, to the
/// hasher thread; stops at the first failure, or when the hasher is gone.
fn read_pieces_blocking(
    source: &ChunkSource,
    to_hash: &std::sync::mpsc::SyncSender<Result<ReadInOrder, VmproError>>,
) {
    let plan = source.plan;
    for index in 1..=plan.total {
        let (offset, len) = plan.span(index);
        let mut done = 0;
        while done < len {
            // At most READ_PIECE, so it fits a usize.
            let piece_len = (len - done).min(READ_PIECE as u64) as usize;
            let data = match read_piece_blocking(source, offset + done, piece_len) {
                Ok(data) => data,
                Err(err) => {
                    let _ = to_hash.send(Err(err));
                    return;
                }
            };
            done += piece_len as u64;
            let last = index == plan.total && done == len;
            if to_hash.send(Ok(ReadInOrder { data, index, last })).is_err() {
                return;
            }
        }
    }
}

/// Hashes the pieces on a blocking thread of its own, while the reader reads the next ones and
/// the socket takes earlier ones: with the sha256 on the reader's thread, reading and hashing
/// one GiB (0.64 s on the development VM) was the longest chain of the upload, longer than
/// curl's whole run. Passes the pieces from chunk `from` on (the file's last one carrying the
/// digest); chunks before it, sent before a restart, are hashed only. Stops when the feed is
/// dropped.
fn hash_pieces_blocking(
    read: &std::sync::mpsc::Receiver<Result<ReadInOrder, VmproError>>,
    from: u32,
    buffers: &BufferPool,
    sender: &tokio::sync::mpsc::Sender<Result<ReadPiece, VmproError>>,
) {
    let mut hasher = Sha256::new();
    // Ends when the reader is done (or stopped after sending its failure).
    while let Ok(piece) = read.recv() {
        let ReadInOrder { data, index, last } = match piece {
            Ok(piece) => piece,
            Err(err) => {
                let _ = sender.blocking_send(Err(err));
                return;
            }
        };
        hasher.update(&data);
        if index < from {
            buffers.give(data);
            continue;
        }
        let digest = last.then(|| hasher.clone().finalize().into());
        // The receiver is gone when the upload stopped or restarted: stop hashing (and so
        // the reader, whose next hand-over fails).
        if sender
            .blocking_send(Ok(ReadPiece { data, digest }))
            .is_err()
        {
            return;
        }
    }
}

/// The sha256 of the whole content, read piece by piece (for an upload whose chunks were all
/// sent before).
fn hash_all_blocking(source: &ChunkSource) -> Result<[u8; 32], VmproError> {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < source.plan.size {
        // At most READ_PIECE, so it fits a usize.
        let len = (source.plan.size - offset).min(READ_PIECE as u64) as usize;
        let data = read_piece_blocking(source, offset, len)?;
        hasher.update(&data);
        source.buffers.give(data);
        offset += len as u64;
    }
    Ok(hasher.finalize().into())
}

/// Reads `len` bytes at `offset` exactly; a short read means the file shrank under us.
fn read_piece_blocking(source: &ChunkSource, offset: u64, len: usize) -> Result<Bytes, VmproError> {
    let path = source.path.as_path();
    let mut buffer = source.buffers.take(len);
    source
        .file
        .read_exact_at(&mut buffer, offset)
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                VmproError::FileChanged {
                    path: path.to_path_buf(),
                    what: format!("it became shorter than {} bytes", source.plan.size),
                }
            } else {
                VmproError::Read {
                    path: path.to_path_buf(),
                    source: err,
                }
            }
        })?;
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plan_edges() {
        assert_eq!(ChunkPlan::new(0, 8), Err(PlanError::Empty));
        let one = ChunkPlan::new(1, 8).unwrap();
        assert_eq!((one.total, one.span(1)), (1, (0, 1)));
        let exact = ChunkPlan::new(16, 8).unwrap();
        assert_eq!((exact.total, exact.span(2)), (2, (8, 8)));
        let plus_one = ChunkPlan::new(17, 8).unwrap();
        assert_eq!((plus_one.total, plus_one.span(3)), (3, (16, 1)));
    }

    #[test]
    fn piece_buffers_start_on_a_page_boundary_even_when_reused_and_grown() {
        let plan = ChunkPlan::new(10 * READ_PIECE as u64, 4 * READ_PIECE as u64).unwrap();
        let pool = BufferPool::new(plan);
        let short = pool.take(5);
        assert_eq!((short.len(), short.as_ptr() as usize % PAGE), (5, 0));
        pool.give(short.freeze());
        let grown = pool.take(READ_PIECE);
        assert_eq!(
            (grown.len(), grown.as_ptr() as usize % PAGE),
            (READ_PIECE, 0)
        );
    }

    fn unlimited() -> Pacing {
        Pacing {
            limiter: None,
            progress: Arc::new(BodyProgress::default()),
        }
    }

    fn collect(body: reqwest::Body) -> impl std::future::Future<Output = Vec<u8>> {
        use http_body_util::BodyExt;
        async move { body.collect().await.unwrap().to_bytes().to_vec() }
    }

    #[tokio::test]
    async fn a_paced_chunk_is_sent_in_small_slices_at_the_limit_without_a_burst() {
        use crate::bandwidth::{Bandwidth, BandwidthPlan};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let content: Vec<u8> = (0..2 * READ_PIECE + 5).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let plan = ChunkPlan::new(content.len() as u64, content.len() as u64).unwrap();
        let source = ChunkSource {
            file: Arc::new(File::open(&path).unwrap()),
            path: Arc::new(path.clone()),
            plan,
            buffers: BufferPool::new(plan),
        };
        let feed = ChunkFeed::start(&source, 1);
        feed.begin_chunk(content.len() as u64);
        // 2 MiB/s: the 512 KiB chunk takes a quarter of a second, starting with an empty bucket.
        let limit = BandwidthPlan::Fixed(Bandwidth {
            bytes_per_second: 2 << 20,
            bits: false,
        });
        let pacing = Pacing {
            limiter: Some(Arc::new(BandwidthLimiter::for_plan(&limit))),
            progress: Arc::new(BodyProgress::default()),
        };
        let start = tokio::time::Instant::now();
        let mut body = feed.body(CancellationToken::new(), pacing, None);
        let mut sent = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= PACE_SLICE);
            sent.extend_from_slice(&data);
        }
        let took = start.elapsed().as_secs_f64();
        assert_eq!(sent, content);
        let expected = content.len() as f64 / f64::from(2 << 20);
        assert!(took >= expected - 0.04 && took < expected + 0.5, "{took}");
    }

    #[tokio::test]
    async fn every_send_of_a_chunk_streams_the_same_bytes_and_the_hash_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let content: Vec<u8> = (0..5 * READ_PIECE + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        // Chunks of two and a bit pieces: pieces do not line up with chunk ends.
        let plan = ChunkPlan::new(content.len() as u64, 2 * READ_PIECE as u64 + 3).unwrap();
        let source = ChunkSource {
            file: Arc::new(File::open(&path).unwrap()),
            path: Arc::new(path.clone()),
            plan,
            buffers: BufferPool::new(plan),
        };
        let feed = ChunkFeed::start(&source, 1);
        let stop = CancellationToken::new();
        for index in 1..=plan.total {
            let (start, len) = plan.span(index);
            feed.begin_chunk(len);
            let expected = &content[start as usize..(start + len) as usize];
            // A send cut off after its first piece (connection lost), then two full sends.
            let mut cut = feed.body(stop.clone(), unlimited(), None);
            assert_eq!(hyper::body::Body::size_hint(&cut).exact(), Some(len));
            let first = http_body_util::BodyExt::frame(&mut cut)
                .await
                .unwrap()
                .unwrap();
            assert!(first.is_data());
            drop(cut);
            assert_eq!(
                collect(feed.body(stop.clone(), unlimited(), None)).await,
                expected,
                "chunk {index}"
            );
            assert_eq!(
                collect(feed.body(stop.clone(), unlimited(), None)).await,
                expected,
                "chunk {index}"
            );
        }
        let whole: [u8; 32] = Sha256::digest(&content).into();
        assert_eq!(feed.digest(), Some(whole));
        assert!(feed.take_failure().is_none());
    }

    #[tokio::test]
    async fn a_body_whose_sending_check_fails_ends_unfinished_and_stops_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let content = vec![7u8; 3 * READ_PIECE];
        std::fs::write(&path, &content).unwrap();
        let plan = ChunkPlan::new(content.len() as u64, content.len() as u64).unwrap();
        let source = ChunkSource {
            file: Arc::new(File::open(&path).unwrap()),
            path: Arc::new(path.clone()),
            plan,
            buffers: BufferPool::new(plan),
        };
        let feed = ChunkFeed::start(&source, 1);
        feed.begin_chunk(plan.span(1).1);
        let fresh = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let check: SendingCheck = {
            let fresh = fresh.clone();
            Arc::new(move || fresh.load(std::sync::atomic::Ordering::Relaxed))
        };
        let stop = CancellationToken::new();
        let mut body = feed.body(stop.clone(), unlimited(), Some(check));
        let first = http_body_util::BodyExt::frame(&mut body).await.unwrap();
        assert!(first.is_ok());
        // The process was stopped, and the file may have changed hands meanwhile.
        fresh.store(false, std::sync::atomic::Ordering::Relaxed);
        let next = http_body_util::BodyExt::frame(&mut body).await.unwrap();
        assert!(next.is_err(), "the body ends unfinished");
        assert!(stop.is_cancelled(), "the chunk's retries stop");
        assert!(matches!(feed.take_failure(), Some(VmproError::Cancelled)));
    }

    proptest! {
        #[test]
        fn chunks_cover_the_file_exactly(size in 1u64..10_000_000, chunk in 1u64..3_000_000) {
            let plan = ChunkPlan::new(size, chunk).unwrap();
            let mut expected_start = 0;
            for index in 1..=plan.total {
                let (start, len) = plan.span(index);
                prop_assert_eq!(start, expected_start);
                prop_assert!(len >= 1 && len <= chunk);
                if index < plan.total {
                    prop_assert_eq!(len, chunk);
                }
                expected_start += len;
            }
            prop_assert_eq!(expected_start, size);
        }
    }
}
