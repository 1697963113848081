//! [`JobObserver`]: what the store and the log learn while one job uploads (the video id, the
//! upload URL, each accepted chunk and its sending time, retries for the sidecar), and the end
//! of a pause when a probing job's first chunk is accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use time::OffsetDateTime;

use super::Shared;
use super::dispatch::end_pause;
use crate::config::human_size;
use crate::http::RetryReason;
use crate::shared_folder::claim::{Claim, ClaimError, ClaimRecord};
use crate::store::StoreError;
use crate::vmpro::api::{SendingCheck, UploadObserver, UploadUrl};
use crate::vmpro::error::{Step, VmproError};

/// Records one job's upload in the store as it happens.
pub(super) struct JobObserver {
    pub(super) shared: Arc<Shared>,
    pub(super) id: i64,
    pub(super) name: String,
    /// The last quarter of the chunks logged at info level, so a long upload says how far it
    /// is four times, not once per chunk.
    pub(super) last_logged_quarter: AtomicU64,
    /// This job tries whether a paused queue can resume: its events (retries, mostly) are
    /// logged at debug level, and its first accepted chunk ends the pause. Not earlier: a
    /// quota refuses chunks of videos it let the platform create.
    pub(super) probing: AtomicBool,
    /// The job's video id is in the store (resumed with one, or recorded since): only then may
    /// its marker keyword come off.
    pub(super) video_recorded: AtomicBool,
    /// The job's video id (known when it resumes, or since the platform created it), for the
    /// `VIDEO_ID` of the job's event lines, "created: video …" among them.
    pub(super) video_id: std::sync::Mutex<Option<String>>,
    /// The job's claim, in a shared folder: its record follows the upload (marker, video,
    /// chunks), and is checked to be this agent's before every request.
    pub(super) claim: Option<Claim>,
    /// Otherwise the job's folder, which must still be this agent's (see `share_keeper`).
    pub(super) exclusive_folder: Option<std::path::PathBuf>,
    /// Another agent took the claim (or the folder) over: the upload stopped for that.
    pub(super) taken_over: Arc<AtomicBool>,
}

/// Runs `io` (reads and writes of claim records and presences on the watched folder's file
/// system) so that it cannot stall the async runtime: on a share that hangs it waits until the
/// share answers, and on a runtime worker that would hold up every other folder's uploads, the
/// status page and `/healthz` (hostile test). Inside the multi-thread runtime the worker hands
/// its other tasks to another thread first (`block_in_place`); anywhere else it just runs.
fn off_the_runtime<T>(io: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(io)
        }
        _ => io(),
    }
}

impl JobObserver {
    /// The job's video id as far as this upload knows it.
    pub(super) fn video_id(&self) -> Option<String> {
        // A poisoned lock (a panic while setting it) only costs the field on later lines.
        self.video_id.lock().ok().and_then(|known| known.clone())
    }

    /// Changes the claim record, if the job has a claim. A claim taken over stops the upload
    /// at its next request (`may_continue`); a record that cannot be written now is renewed
    /// by the keeper's next round.
    fn update_claim(&self, change: impl FnOnce(&mut ClaimRecord)) -> Result<(), ClaimError> {
        let Some(claim) = &self.claim else {
            return Ok(());
        };
        let result = off_the_runtime(|| self.shared.holds.update(claim, change));
        if matches!(result, Err(ClaimError::Lost)) {
            self.taken_over.store(true, Ordering::Relaxed);
        }
        result
    }

    /// A record the upload can go on without (it resumes from an earlier chunk after a crash):
    /// logged, and during an outage said once for all.
    fn log_store_error(&self, what: &str, result: Result<(), StoreError>) {
        if let Err(err) = result {
            self.shared
                .store_failed(&format!("cannot record {what} of job {}", self.id), &err);
        }
    }
}

impl UploadObserver for JobObserver {
    fn retrying(&self, _step: Step, error: &VmproError) {
        self.shared.counters.retried(RetryReason::of(error));
    }
    fn size_refused(&self, api_url: &str, link: &crate::vmpro::link::MeasuredLink) {
        if let Err(err) = self.shared.store.record_link(api_url, link) {
            self.shared
                .store_failed("cannot record the chunk size the server refused", &err);
        }
    }
    fn event(&self, event: &str, detail: &str) {
        let video_id = self.video_id();
        let video_id = video_id.as_deref();
        if self.probing.load(Ordering::Relaxed) {
            tracing::debug!(file = %self.name, job = self.id, video_id, "{event}: {detail}");
        } else {
            tracing::info!(file = %self.name, job = self.id, video_id, "{event}: {detail}");
        }
        self.log_store_error(
            "an event",
            self.shared.store.record_event(self.id, event, detail),
        );
    }
    fn create_sending(
        &self,
        marker: Option<&str>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.shared.store.record_create_sent(self.id, marker)?;
        // Before the create leaves: an agent that takes the claim over looks the video up by
        // this marker instead of making a second one.
        self.update_claim(|record| {
            if record.marker.is_none() {
                record.marker = marker.map(str::to_owned);
            }
            record.create_sent = true;
        })?;
        Ok(())
    }
    fn create_settled(&self) {
        let _ = self.update_claim(|record| record.create_sent = false);
        self.log_store_error(
            "that the create was answered",
            self.shared.store.record_create_settled(self.id),
        );
    }
    fn video_created(&self, video_id: &str) {
        // A second create (the first video was deleted meanwhile) replaces the first id.
        if let Ok(mut known) = self.video_id.lock() {
            *known = Some(video_id.to_owned());
        }
        // In a shared folder the claim record counts as a record too: until it holds the id,
        // an agent that takes the claim over can find the video only by its marker, which
        // must then stay on.
        let in_claim = self
            .update_claim(|record| {
                record.video_id = Some(video_id.to_owned());
                record.create_sent = false;
            })
            .is_ok();
        let recorded = self.shared.store.record_video(self.id, video_id);
        self.video_recorded
            .store(recorded.is_ok() && in_claim, Ordering::Relaxed);
        self.log_store_error("the video id", recorded);
    }
    fn video_on_record(&self) -> bool {
        self.video_recorded.load(Ordering::Relaxed)
    }
    fn keeps_marker(&self) -> bool {
        // A claimed file's marker stays on until the file is moved (see `markers::clear_soon`):
        // an agent that takes the claim over finds the video by it, and so knows the video in
        // the claim record is really this file's.
        self.claim.is_some()
    }
    fn marker_removed(&self) {
        self.log_store_error(
            "that the marker keyword is off",
            self.shared.store.clear_marker(self.id),
        );
    }
    fn url_issued(&self, url: &UploadUrl) {
        let issued = OffsetDateTime::from(url.issued_at());
        self.log_store_error(
            "the upload URL",
            self.shared.store.record_url(self.id, url.expose(), issued),
        );
    }
    fn chunk_accepted(
        &self,
        index: u32,
        total: u32,
        chunk_size: u64,
        bytes_done: u64,
        took: std::time::Duration,
    ) {
        if self.probing.swap(false, Ordering::Relaxed) {
            end_pause(&self.shared);
        }
        // The chunk's own bytes: it starts where the chunks before it end.
        let start = u64::from(index.saturating_sub(1)) * chunk_size;
        self.shared
            .counters
            .bytes_accepted(bytes_done.saturating_sub(start));
        self.log_store_error(
            "the progress",
            self.shared.store.record_progress(
                self.id,
                index + 1,
                total,
                chunk_size,
                bytes_done,
                took,
            ),
        );
        let _ = self.update_claim(|record| {
            record.next_chunk = index + 1;
            record.total_chunks = Some(total);
            record.chunk_size = Some(chunk_size);
        });
        let quarter = u64::from(index) * 4 / u64::from(total.max(1));
        if index < total
            && self
                .last_logged_quarter
                .fetch_max(quarter, Ordering::Relaxed)
                < quarter
        {
            // The share of the chunks, not the quarter that triggered the line: "1/3 (33%)".
            let percent = u64::from(index) * 100 / u64::from(total.max(1));
            tracing::info!(
                file = %self.name,
                "chunk {index}/{total} sent ({percent}%, {} so far)",
                human_size(bytes_done)
            );
        }
        tracing::debug!(file = %self.name, "chunk {index}/{total} accepted");
    }
    fn restarted(&self) {
        self.shared.counters.retried(RetryReason::Restart);
        let _ = self.update_claim(|record| record.next_chunk = 1);
        self.log_store_error("the restart", self.shared.store.restart_content(self.id));
    }
    fn sending_check(&self) -> Option<SendingCheck> {
        // Without marking the job taken over: a body cut short is followed by `may_continue`,
        // which asks the file server (a process stopped for less than a lease still holds
        // its claim).
        let freshness = self.shared.holds.freshness(self.claim.as_ref()?)?;
        Some(Arc::new(move || freshness.fresh()))
    }
    fn create_check(&self) -> Option<SendingCheck> {
        if self.claim.is_some() {
            return self.sending_check();
        }
        // An exclusive folder's upload: the folder's presence renewed within half a lease (a
        // takeover of the folder needs a whole lease without renewal). Only for the create,
        // not for chunk bodies: a late renewal then costs one more request, not a chunk.
        let folder = self.exclusive_folder.clone()?;
        let shared = self.shared.clone();
        Some(Arc::new(move || shared.holds.folder_recently_ours(&folder)))
    }
    fn may_continue(&self) -> bool {
        let ours = match (&self.claim, &self.exclusive_folder) {
            (Some(claim), _) => off_the_runtime(|| self.shared.holds.still_held(claim)),
            (None, Some(folder)) => off_the_runtime(|| self.shared.holds.folder_still_ours(folder)),
            (None, None) => true,
        };
        if !ours {
            self.taken_over.store(true, Ordering::Relaxed);
        }
        ours
    }
}
