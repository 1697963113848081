//! Files hotfolder itself placed in done/ that turn up again inside a watched folder: done/
//! renamed to a plain sub-folder, or `done_dir` changed so that the old done/ is now watched.
//! Such a file is the very file that was uploaded (same device, inode, size and mtime as the
//! store recorded when it was placed), so uploading it would make a second video of one
//! delivery. The intake holds it and says why once; `scan` reports it. A new export, even under
//! the same name, is a new inode and uploads as usual.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::escape::escaped;
use crate::store::{JobStore, StoreError};

/// An uploaded job whose placed file this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reappeared {
    pub job_id: i64,
    pub video_id: String,
    pub uploaded_at: Option<OffsetDateTime>,
    /// Where hotfolder placed it.
    pub placed_at: Option<PathBuf>,
}

/// The uploaded job `path` is the placed file of, if any. A file that cannot be looked at is
/// not one: the ordinary checks decide what becomes of it.
pub fn uploaded_before(store: &JobStore, path: &Path) -> Result<Option<Reappeared>, StoreError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    if !meta.file_type().is_file() {
        return Ok(None);
    }
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let Some(job) = store.uploaded_as(meta.dev(), meta.ino(), meta.size(), mtime_ns)? else {
        return Ok(None);
    };
    Ok(job.video_id.clone().map(|video_id| Reappeared {
        job_id: job.id,
        video_id,
        uploaded_at: job.finished_at,
        placed_at: job.destination.clone(),
    }))
}

impl Reappeared {
    /// Why it is not uploaded, and what the user can do, in one sentence.
    pub fn explanation(&self) -> String {
        let date = self
            .uploaded_at
            .and_then(|at| {
                at.format(time::macros::format_description!("[year]-[month]-[day]"))
                    .ok()
            })
            .map(|day| format!(" on {day}"))
            .unwrap_or_default();
        let placed = self
            .placed_at
            .as_deref()
            .map(|p| format!(" as {}", escaped(p)))
            .unwrap_or_default();
        format!(
            "already uploaded as video {}{date} and placed in done/{placed}; not uploading it again: move it out of the watched folder, or copy it to upload it as a new video",
            self.video_id
        )
    }
}
