//! One file's chunked upload: the plan (`N = ceil(size / chunk)`), chunks read from disk with
//! bounded memory (the chunk in flight and the next one, never the file), the sha256 of the
//! bytes sent, and every chunk answer acted on: retried, URL renewed, restarted at chunk 1 on
//! the same video, or stopped. Never a second video entity for one file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::CONTENT_TYPE;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::api::{Platform, UploadObserver, UploadUrl, VideoMetadata};
use super::error::{Disposition, Step, VmproError, classify};

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
    /// The chunk size the previous attempt used: the server expects the same total.
    pub chunk_size: Option<u64>,
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
    pub elapsed: Duration,
    pub url_renewals: u32,
    pub restarts: u32,
    /// Size and mtime the content was read with (the agent compares them again).
    pub mtime: SystemTime,
}

impl UploadReport {
    pub fn bytes_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.size as f64 / secs
        } else {
            self.size as f64
        }
    }
}

/// A chunk read from disk; the last one carries the sha256 of the whole content.
struct ReadChunk {
    data: Bytes,
    digest: Option<[u8; 32]>,
}

/// Chunk buffers reused from one chunk to the next: a fresh 8 MiB allocation per chunk costs
/// page faults on every read and leaves the allocator holding freed memory (RSS creeps up).
#[derive(Clone, Default)]
struct BufferPool(Arc<std::sync::Mutex<Vec<BytesMut>>>);

impl BufferPool {
    /// In flight, read ahead, and one spare.
    const KEEP: usize = 3;

    fn take(&self, len: usize) -> BytesMut {
        let reused = self.0.lock().ok().and_then(|mut pool| pool.pop());
        let mut buffer = reused.unwrap_or_default();
        // A reused buffer is overwritten by the read: only growth needs zeroing.
        if buffer.len() >= len {
            buffer.truncate(len);
        } else {
            buffer.resize(len, 0);
        }
        buffer
    }

    /// Returns a sent chunk's memory, if nothing else still holds it.
    fn give(&self, data: Bytes) {
        if let Ok(buffer) = data.try_into_mut()
            && let Ok(mut pool) = self.0.lock()
            && pool.len() < Self::KEEP
        {
            pool.push(buffer);
        }
    }
}

/// What happened to one chunk.
enum ChunkOutcome {
    Accepted,
    /// The server will not continue this content: start again at chunk 1, same video.
    Restart(&'static str),
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
    let file = Arc::new(file);

    let resume = request.resume;
    let chunk_size = resume.chunk_size.unwrap_or(platform.upload.chunk_size);
    let plan = ChunkPlan::new(size, chunk_size).map_err(|err| match err {
        PlanError::Empty => VmproError::EmptyFile {
            path: request.path.clone(),
        },
        other => VmproError::Protocol {
            step: Step::Chunk,
            message: other.to_string(),
        },
    })?;
    let mut next = resume.next_chunk.max(1);
    if next > plan.total {
        next = 1;
    }

    let video_id = match resume.video_id {
        Some(id) => id,
        None => {
            let id = platform
                .create_video(&request.file_name, &request.metadata, shutdown, observer)
                .await?;
            observer.video_created(&id);
            observer.event("created", &format!("video {id} created"));
            id
        }
    };

    let mut url = match resume.url {
        Some(url) if url.age() < platform.upload.url_renew_after => url,
        _ => {
            let url = platform.upload_url(&video_id, shutdown, observer).await?;
            observer.url_issued(&url);
            url
        }
    };

    let mut report = UploadReport {
        video_id: video_id.clone(),
        sha256: String::new(),
        size,
        chunks: plan.total,
        chunk_size,
        bytes_sent: 0,
        elapsed: Duration::ZERO,
        url_renewals: 0,
        restarts: 0,
        mtime,
    };

    // The hash covers the bytes sent; on a resume, the chunks sent before are read again.
    let source = ChunkSource {
        file,
        path,
        plan,
        buffers: BufferPool::default(),
    };
    let mut index = next;
    let mut reader = ChunkReader::start(&source, index);
    let mut digest = None;
    let mut restarts_left = platform.upload.max_attempts;
    while index <= plan.total {
        let current = reader.next(&source).await?;
        // Before the last chunk completes the video: a file deleted or rewritten meanwhile
        // must not become a complete video on the platform.
        if index == plan.total {
            unchanged_since_start(&request.path, size, mtime).await?;
        }
        let outcome = send_chunk(
            platform,
            &video_id,
            &mut url,
            plan,
            index,
            &current.data,
            observer,
            shutdown,
            &mut report,
        )
        .await?;
        match outcome {
            ChunkOutcome::Accepted => {
                digest = current.digest.or(digest);
                source.buffers.give(current.data);
                let (start, len) = plan.span(index);
                observer.chunk_accepted(index, plan.total, chunk_size, start + len);
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
                source.buffers.give(current.data);
                report.restarts += 1;
                observer.restarted();
                observer.event(
                    "restart",
                    &format!("{why}: sending the file again from chunk 1 to the same video"),
                );
                tracing::info!(file = %request.path.display(), video_id = %video_id, "{why}; restarting at chunk 1");
                index = 1;
                reader = ChunkReader::start(&source, index);
            }
        }
    }

    // And after it: a change during the last chunk means the platform has a mix.
    unchanged_since_start(&request.path, size, mtime).await?;

    let Some(digest) = digest else {
        return Err(VmproError::Protocol {
            step: Step::Chunk,
            message: "internal: the last chunk was accepted without its hash".into(),
        });
    };
    report.sha256 = hex::encode(digest);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Sends chunk `index` until it is accepted, acting on each answer.
#[allow(clippy::too_many_arguments)]
async fn send_chunk(
    platform: &Platform,
    video_id: &str,
    url: &mut UploadUrl,
    plan: ChunkPlan,
    index: u32,
    data: &Bytes,
    observer: &dyn UploadObserver,
    shutdown: &CancellationToken,
    report: &mut UploadReport,
) -> Result<ChunkOutcome, VmproError> {
    // Renewals in a row without an accepted chunk: a URL refused again and again means the
    // server refuses this upload, not that the token expired.
    let mut renewals = 0u32;
    loop {
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
        if let Some(bandwidth) = &platform.bandwidth {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                _ = bandwidth.take(data.len() as f64) => {}
            }
        }
        // Transient failures (connection lost, timeouts, 408/429/5xx) are retried in here.
        let sends = std::sync::atomic::AtomicU64::new(0);
        let answer = platform
            .transport
            .exchange_observed(Step::Chunk, shutdown, observer, || {
                sends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                platform
                    .transport
                    .http
                    .post(url.expose())
                    .header("Mi24-Upload-Total-Chunks", plan.total)
                    .header("Mi24-Upload-Current-Chunk", index)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
            })
            .await;
        report.bytes_sent += sends.into_inner() * data.len() as u64;
        let answer = answer?;
        match classify(
            Step::Chunk,
            answer.status,
            &answer.body,
            answer.retry_after(),
        ) {
            Disposition::Accepted => return Ok(ChunkOutcome::Accepted),
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

async fn open_for_upload(path: &Arc<PathBuf>) -> Result<(File, u64, SystemTime), VmproError> {
    let owned = path.clone();
    let opened =
        tokio::task::spawn_blocking(move || -> std::io::Result<(File, u64, SystemTime)> {
            let file = File::open(owned.as_path())?;
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
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// The content must be what it was when the upload started.
async fn unchanged_since_start(
    path: &Path,
    size: u64,
    mtime: SystemTime,
) -> Result<(), VmproError> {
    let (now_size, now_mtime) = stat(path).await?;
    if now_size != size || now_mtime != mtime {
        return Err(VmproError::FileChanged {
            path: path.to_path_buf(),
            what: format!("size {size} → {now_size} bytes or modification time changed"),
        });
    }
    Ok(())
}

async fn stat(path: &Path) -> Result<(u64, SystemTime), VmproError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|source| VmproError::FileChanged {
            path: path.to_path_buf(),
            what: format!("it can no longer be read: {source}"),
        })?;
    let mtime = meta.modified().map_err(|source| VmproError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((meta.len(), mtime))
}

/// Where chunks are read from: the open file and the buffers to read into.
#[derive(Clone)]
struct ChunkSource {
    file: Arc<File>,
    path: Arc<PathBuf>,
    plan: ChunkPlan,
    buffers: BufferPool,
}

/// Reads and hashes chunks on a blocking thread, one chunk ahead of the network: the chunk
/// on the wire, one waiting in the channel and one being read are all that is in memory.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Result<ReadChunk, VmproError>>,
}

impl ChunkReader {
    /// Starts reading at chunk `from`; chunks before it (sent before a restart of the agent)
    /// are read and hashed only, so that the final hash covers the whole content.
    fn start(source: &ChunkSource, from: u32) -> ChunkReader {
        let (sender, chunks) = tokio::sync::mpsc::channel(1);
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            for index in 1..=source.plan.total {
                let data = match read_chunk_blocking(&source, index, &mut hasher) {
                    Ok(data) => data,
                    Err(err) => {
                        let _ = sender.blocking_send(Err(err));
                        return;
                    }
                };
                if index < from {
                    source.buffers.give(data);
                    continue;
                }
                let digest = (index == source.plan.total).then(|| hasher.clone().finalize().into());
                // The receiver is gone when the upload stopped or restarted: stop reading.
                if sender
                    .blocking_send(Ok(ReadChunk { data, digest }))
                    .is_err()
                {
                    return;
                }
            }
        });
        ChunkReader { chunks }
    }

    async fn next(&mut self, source: &ChunkSource) -> Result<ReadChunk, VmproError> {
        self.chunks.recv().await.unwrap_or_else(|| {
            Err(VmproError::Read {
                path: source.path.to_path_buf(),
                source: std::io::Error::other("the chunk reader stopped unexpectedly"),
            })
        })
    }
}

/// Bytes read and hashed at a time: small enough to still be in the CPU cache when hashed.
const READ_PIECE: usize = 256 * 1024;

/// Reads chunk `index` exactly and feeds it to `hasher` piece by piece; a short read means the
/// file shrank under us.
fn read_chunk_blocking(
    source: &ChunkSource,
    index: u32,
    hasher: &mut Sha256,
) -> Result<Bytes, VmproError> {
    let (path, plan) = (source.path.as_path(), source.plan);
    let (offset, len) = plan.span(index);
    let len_usize = usize::try_from(len).map_err(|_| VmproError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other("chunk larger than memory can address"),
    })?;
    let mut buffer = source.buffers.take(len_usize);
    let mut piece_offset = offset;
    for piece in buffer.chunks_mut(READ_PIECE) {
        source
            .file
            .read_exact_at(piece, piece_offset)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    VmproError::FileChanged {
                        path: path.to_path_buf(),
                        what: format!("it became shorter than {} bytes", plan.size),
                    }
                } else {
                    VmproError::Read {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        hasher.update(&*piece);
        piece_offset += piece.len() as u64;
    }
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
