//! This agent's side of several agents on one folder (design: `shared_folder`): its presence
//! on every watched folder, renewed every quarter `claim_lease`, and the verdict whether it may
//! watch an exclusive folder; on shared folders, the claims it holds (renewed, kept current as
//! uploads go) and the takeover of claims other agents stopped renewing, which become jobs
//! here that resume on the same video.
//!
//! A folder another agent keeps is treated as missing (the intake does not watch it, `status`
//! and the log say who has it) and its queued jobs do not start; it is watched again once that
//! agent is gone for a lease.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::chain;
use crate::escape::escaped;
use crate::shared_folder::AgentId;
use crate::shared_folder::claim::{self, Claim, ClaimError, ClaimRecord};
use crate::shared_folder::presence::FolderPresence;
use crate::store::{ClaimedUpload, Enqueued, NewJob};

/// What this agent holds on its folders.
pub(super) struct ShareHolds {
    agent: &'static AgentId,
    folders: Mutex<HashMap<PathBuf, FolderHold>>,
    /// The claims this agent holds, by record path, with what their records say.
    claims: Mutex<HashMap<PathBuf, HeldClaim>>,
}

struct FolderHold {
    presence: FolderPresence,
    shared: bool,
    lease: Duration,
    /// Why this agent may not watch the folder (another agent keeps it).
    refusal: Option<String>,
    /// A presence that cannot be written was said once.
    io_warned: bool,
    /// The network file system the folder was on when last renewed (`fuse.sshfs`): found on
    /// a local one now, its share is not mounted (see `round`).
    share: Option<String>,
}

struct HeldClaim {
    folder: PathBuf,
    claim: Claim,
    record: ClaimRecord,
    confirmed: ClaimFreshness,
    /// Since when this agent holds it: one held for a lease without a job is let go.
    held_since: std::time::Instant,
}

/// When a held claim was last known to be this agent's (its record written or read back), by
/// the local monotonic clock, which a stopped process cannot escape; for the check a chunk's
/// body makes before each piece, without I/O.
#[derive(Clone)]
pub(super) struct ClaimFreshness {
    at: Arc<Mutex<std::time::Instant>>,
    lease: Duration,
}

impl ClaimFreshness {
    fn confirm(&self) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Confirmed within half a lease: no other agent can have taken it over yet (a takeover
    /// needs a full lease without renewal, by the file server's clock).
    pub(super) fn fresh(&self) -> bool {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).elapsed() <= self.lease / 2
    }
}

impl ShareHolds {
    pub(super) fn new(agent: &'static AgentId) -> ShareHolds {
        ShareHolds {
            agent,
            folders: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn agent(&self) -> &'static AgentId {
        self.agent
    }

    fn folders(&self) -> MutexGuard<'_, HashMap<PathBuf, FolderHold>> {
        self.folders.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<PathBuf, HeldClaim>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why this agent may not watch `folder`, if another agent keeps it.
    pub(super) fn refusal(&self, folder: &Path) -> Option<String> {
        self.folders()
            .get(folder)
            .and_then(|hold| hold.refusal.clone())
    }

    /// Whether `folder` was confirmed this agent's within half a lease, without I/O (see
    /// `JobObserver::create_check`). A folder without a hold is not contended.
    pub(super) fn folder_recently_ours(&self, folder: &Path) -> bool {
        let folders = self.folders();
        let Some(hold) = folders.get(folder) else {
            return true;
        };
        hold.refusal.is_none()
            && hold
                .presence
                .last_renewed()
                .is_some_and(|at| at.elapsed() <= hold.lease / 2)
    }

    /// For an upload from an exclusive folder, before each request: the folder is still this
    /// agent's. Renewed here when the last renewal is older than half a lease (the process was
    /// stopped, or the keeper is late): another agent may have taken the folder meanwhile.
    pub(super) fn folder_still_ours(&self, folder: &Path) -> bool {
        let mut folders = self.folders();
        let Some(hold) = folders.get_mut(folder) else {
            return true;
        };
        if hold.refusal.is_some() {
            return false;
        }
        if hold
            .presence
            .last_renewed()
            .is_some_and(|at| at.elapsed() <= hold.lease / 2)
        {
            return true;
        }
        match hold
            .presence
            .renew()
            .and_then(|now| hold.presence.verdict(now))
        {
            Ok(verdict) => {
                hold.refusal = verdict.refusal(hold.shared);
                hold.refusal.is_none()
            }
            // Cannot tell: the share does not answer. The request would not get through it
            // either; the upload's own errors decide.
            Err(_) => true,
        }
    }

    /// Holds `claim` (just made, or found again after a restart) with `record`.
    pub(super) fn hold(&self, folder: &Path, claim: Claim, mut record: ClaimRecord) {
        let lease = self
            .folders()
            .get(folder)
            .map_or(Duration::from_secs(120), |hold| hold.lease);
        // Written with the next renewal: others wait out the longer of the two leases.
        record.lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.claims().insert(
            claim.record.clone(),
            HeldClaim {
                folder: folder.to_path_buf(),
                claim,
                record,
                confirmed: ClaimFreshness {
                    at: Arc::new(Mutex::new(std::time::Instant::now())),
                    lease,
                },
                held_since: std::time::Instant::now(),
            },
        );
    }

    /// The claim held for the file at `file` (a claimed file, or an in-place record's file).
    pub(super) fn claim_for_file(&self, file: &Path) -> Option<Claim> {
        self.claims()
            .values()
            .find(|held| held.claim.file == file)
            .map(|held| held.claim.clone())
    }

    /// How fresh the hold on `claim` is (see [`ClaimFreshness`]); `None` if not held.
    pub(super) fn freshness(&self, claim: &Claim) -> Option<ClaimFreshness> {
        self.claims()
            .get(&claim.record)
            .map(|held| held.confirmed.clone())
    }

    /// Changes the record of a held claim and writes it (which renews it). `Lost` when another
    /// agent took it over; the claim is then no longer held.
    pub(super) fn update(
        &self,
        claim: &Claim,
        change: impl FnOnce(&mut ClaimRecord),
    ) -> Result<(), ClaimError> {
        let mut claims = self.claims();
        let Some(held) = claims.get_mut(&claim.record) else {
            return Err(ClaimError::Lost);
        };
        change(&mut held.record);
        let result = held.claim.update(&held.record);
        match &result {
            Ok(()) => held.confirmed.confirm(),
            Err(ClaimError::Lost) => {
                claims.remove(&claim.record);
            }
            Err(_) => {}
        }
        result
    }

    /// Whether `claim` is still this agent's, asked of the file server.
    /// A file server that cannot tell (a share that dropped) counts as still held, without
    /// confirming it: chunk bodies then stop within half a lease (see `ClaimFreshness`), and
    /// nothing is given up for a hiccup.
    pub(super) fn still_held(&self, claim: &Claim) -> bool {
        let held = match claim.held_by(&self.agent.id) {
            Ok(held) => held,
            Err(err) => {
                tracing::debug!(
                    "cannot read the claim record {}: {err}; taken as still held",
                    crate::escape::escaped(&claim.record)
                );
                return true;
            }
        };
        let mut claims = self.claims();
        if held {
            if let Some(known) = claims.get(&claim.record) {
                known.confirmed.confirm();
            }
        } else {
            claims.remove(&claim.record);
        }
        held
    }

    /// The claim ends: its file left the claim folder (or was taken over, `release` false).
    pub(super) fn end(&self, claim: &Claim, release: bool) {
        self.claims().remove(&claim.record);
        if release {
            claim.release();
        }
    }

    fn is_held(&self, record: &Path) -> bool {
        self.claims().contains_key(record)
    }

    /// The agent stops: its presences go, so that another agent may take its exclusive folders
    /// at once. Claims stay: a restart within the lease resumes them; after it, others do.
    pub(super) fn leave(&self) {
        for hold in self.folders().values() {
            hold.presence.leave();
        }
    }
}

/// One round over every folder: presences renewed and verdicts updated; on shared folders
/// this agent may watch, claims renewed, and stale claims taken over. Blocking file I/O.
pub(super) fn round(shared: &Arc<Shared>) {
    let holds = &shared.holds;
    let folders: Vec<(PathBuf, bool, Duration)> = shared
        .settings()
        .folders
        .iter()
        .map(|f| (f.path.clone(), f.shared, f.claim_lease))
        .collect();
    let mut keep_claims = Vec::new();
    {
        let mut held = holds.folders();
        held.retain(|path, hold| {
            let kept = folders.iter().any(|(p, ..)| p == path);
            if !kept {
                hold.presence.leave();
            }
            kept
        });
        for (path, is_shared, lease) in &folders {
            let hold = held.entry(path.clone()).or_insert_with(|| FolderHold {
                presence: FolderPresence::new(path, holds.agent, *is_shared, *lease),
                shared: *is_shared,
                lease: *lease,
                refusal: None,
                io_warned: false,
                share: None,
            });
            // A share that is not mounted now leaves its empty mount point on the disk below:
            // nothing is written there (it would hide under the share when it comes back, and
            // make this agent's claims there look taken over); the intake says the folder is
            // missing, and the claims wait for the share.
            match crate::watch::file_system_of(path) {
                Ok(fs) if fs.remote => hold.share = Some(fs.name),
                Ok(_) if hold.share.is_some() => continue,
                _ => {}
            }
            hold.shared = *is_shared;
            hold.lease = *lease;
            hold.presence.reconfigure(*is_shared, *lease);
            let verdict = hold
                .presence
                .renew()
                .and_then(|now| Ok((now, hold.presence.verdict(now)?)));
            let refusal = match verdict {
                Ok((now, verdict)) => {
                    hold.io_warned = false;
                    let mut refusal = verdict.refusal(hold.shared);
                    if !hold.shared && refusal.is_none() {
                        // An exclusive folder's uploads keep in-place records too (see
                        // `claimed_job::keep_in_place`): renewed, and taken over from a dead
                        // agent. Without a claim folder there are none to keep.
                        let mine = [crate::shared_folder::SHARE_DIR, "claims", &holds.agent.id];
                        if crate::shared_folder::make_inside(path, &mine).is_ok() {
                            keep_claims.push((path.clone(), now, *lease));
                        }
                    }
                    if hold.shared && refusal.is_none() {
                        // Claims need a folder of this agent's under .hotfolder/claims, never
                        // reached through a link: without it every claim would fail, again
                        // and again.
                        let mine = [crate::shared_folder::SHARE_DIR, "claims", &holds.agent.id];
                        match crate::shared_folder::make_inside(path, &mine) {
                            Ok(_) => keep_claims.push((path.clone(), now, *lease)),
                            Err(err) => {
                                refusal = Some(format!(
                                    "this agent cannot keep its claims in {} ({err}), which a shared folder needs",
                                    escaped(&crate::shared_folder::claim::claims_dir(path))
                                ));
                            }
                        }
                    }
                    refusal
                }
                // A folder that is not there: the intake says so.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                // A shared folder cannot be shared without writing in it: claiming would fail
                // for every file, again and again.
                Err(err) if hold.shared => Some(format!(
                    "this agent cannot write its presence in {} ({err}), which a shared folder needs",
                    escaped(&crate::shared_folder::share_dir(path))
                )),
                Err(err) => {
                    if !std::mem::replace(&mut hold.io_warned, true) {
                        tracing::warn!(
                            folder = %escaped(path),
                            "cannot keep this agent's presence in {}: {err}; another agent on this folder would not be noticed",
                            escaped(&crate::shared_folder::share_dir(path))
                        );
                    }
                    None
                }
            };
            if refusal.is_none() && hold.refusal.is_some() {
                tracing::info!(folder = %escaped(path), "the folder can be watched again (the agent that kept it is gone, or what stood in the way was mended): this agent watches it now");
            }
            hold.refusal = refusal;
        }
    }
    for (folder, now, lease) in keep_claims {
        keep_claims_of(shared, &folder, now, lease);
    }
}

/// Renews this agent's claims in `folder`, adopts its own claims no job holds (a kill between
/// the claim and the store), and takes over the claims other agents stopped renewing.
fn keep_claims_of(shared: &Arc<Shared>, folder: &Path, now: i128, lease: Duration) {
    let holds = &shared.holds;
    let mine: Vec<Claim> = holds
        .claims()
        .values()
        .filter(|held| held.folder == folder)
        .map(|held| held.claim.clone())
        .collect();
    for claim in mine {
        // A claim whose job ended without moving its file (the file vanished, or the job was
        // forgotten) is let go; a moment after it was made its job may not be stored yet.
        let old_enough = holds
            .claims()
            .get(&claim.record)
            .is_some_and(|held| held.held_since.elapsed() > lease);
        let job = shared.store.active_job_for_path(&claim.file);
        if old_enough && matches!(job, Ok(None)) {
            holds.end(&claim, true);
            continue;
        }
        // A claimed upload that waits because its file could not be read (its share dropped)
        // goes back in the queue once the file can be looked at: the intake does not look
        // inside claim folders.
        if let Ok(Some(job)) = &job
            && job.state == crate::store::JobState::Paused
            && job.pause_reason.as_deref() == Some(crate::agent::dispatch::UNREADABLE_PAUSE)
            && crate::nofollow::is_regular_file(&claim.file)
        {
            match shared.store.set_waiting(job.id) {
                Ok(()) => shared.wake.notify_waiters(),
                Err(err) => {
                    shared.store_failed(&format!("cannot requeue job {}", job.id), &err);
                }
            }
        }
        if let Err(ClaimError::Lost) = holds.update(&claim, |_| {}) {
            tracing::warn!(folder = %escaped(folder), "a claim of this agent was taken over by another agent (this agent did not renew it in time); its upload stops before its next request");
        }
    }
    let records = match claim::records(folder) {
        Ok(records) => records,
        Err(err) => {
            tracing::debug!(folder = %escaped(folder), "cannot list the claims: {err}");
            return;
        }
    };
    for (owner, record) in records {
        if owner != holds.agent.id || holds.is_held(&record) {
            continue;
        }
        // Only once it is older than half a lease: a worker claiming a file right now writes
        // the record just before the rename, and holds it just after.
        let old = crate::shared_folder::read_small(&record)
            .is_ok_and(|(_, mtime)| crate::shared_folder::age(now, mtime) > lease / 2);
        if old {
            adopt_own(shared, folder, &record);
        }
    }
    let stale = match claim::stale_claims(folder, &holds.agent.id, now, lease) {
        Ok(stale) => stale,
        Err(err) => {
            tracing::debug!(folder = %escaped(folder), "cannot list the claims: {err}");
            return;
        }
    };
    for claim in stale {
        match claim::take_over(folder, holds.agent, &claim) {
            Ok(Some(taken)) => {
                let why = format!(
                    "taken over from agent {}: its claim was not renewed for {}",
                    taken.from,
                    humantime::format_duration(Duration::from_secs(claim.age.as_secs()))
                );
                adopt(
                    shared,
                    folder,
                    taken.claim,
                    taken.record,
                    taken.file_found,
                    &why,
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(
                folder = %escaped(folder),
                "cannot take over the stale claim {}: {}",
                escaped(&claim.record),
                chain(&err)
            ),
        }
    }
}

/// A claim record of this agent that no job holds: its job's file (after a restart, the
/// worker holds it when it resumes) or a claim cut short by a kill.
fn adopt_own(shared: &Arc<Shared>, folder: &Path, record_path: &Path) {
    let Some(key) = record_path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .map(str::to_owned)
    else {
        return;
    };
    let unread = Claim {
        file: PathBuf::new(),
        record: record_path.to_path_buf(),
    };
    let record = match unread.read() {
        Ok(record) => record,
        Err(ClaimError::Lost) => return,
        Err(err) => {
            let fresh = claim::unreadable_record(shared.holds.agent, folder, &key, &err);
            if unread.update(&fresh).is_err() {
                return;
            }
            fresh
        }
    };
    let file = if record.in_place {
        record
            .rel_path()
            .map(|rel_path| folder.join(rel_path))
            .filter(|file| std::fs::symlink_metadata(file).is_ok_and(|meta| meta.is_file()))
    } else {
        claim::find_claimed_file(folder, &key).ok().flatten()
    };
    let found = file.is_some();
    let claim = Claim {
        file: file.unwrap_or_default(),
        record: record_path.to_path_buf(),
    };
    if found && let Ok(Some(_)) = shared.store.active_job_for_path(&claim.file) {
        shared.holds.hold(folder, claim, record);
        return;
    }
    adopt(
        shared,
        folder,
        claim,
        record,
        found,
        "claimed by this agent before a restart",
    );
}

/// Makes a taken-over claim a job that resumes on its video; a claim whose file is nowhere
/// (its agent finished it just before it was taken over, or someone removed it) is dropped.
fn adopt(
    shared: &Arc<Shared>,
    folder: &Path,
    claim: Claim,
    record: ClaimRecord,
    file_found: bool,
    why: &str,
) {
    let rel_path = match record.rel_path() {
        Some(rel_path) => rel_path,
        None => {
            let instead = PathBuf::from(claim.file.file_name().unwrap_or_default());
            tracing::warn!(
                record = %escaped(&claim.record),
                "the claim record names its file {:?}, which is not a plain name in the folder; it goes to done/ or failed/ as {} instead",
                record.rel_path,
                escaped(&instead)
            );
            instead
        }
    };
    if !file_found {
        tracing::info!(file = %escaped(&rel_path), folder = %escaped(folder), "dropping a claim whose file is no longer in any claim folder (the agent that held it finished it, or it was removed)");
        claim.release();
        return;
    }
    let meta = match std::fs::symlink_metadata(&claim.file) {
        Ok(meta) if meta.is_file() => meta,
        _ => {
            claim.release();
            return;
        }
    };
    let mtime_ns = meta
        .modified()
        .map(crate::shared_folder::nanos)
        .unwrap_or_default();
    let job = NewJob {
        folder: folder.to_path_buf(),
        path: claim.file.clone(),
        rel_path: rel_path.clone(),
        size: meta.len(),
        mtime_ns: i64::try_from(mtime_ns).unwrap_or(i64::MAX),
        rule: why.to_owned(),
    };
    // The record's video is trusted only through its marker keyword: the video that carries
    // it is the file's (a record written by hand could name anyone's video). Without a marker
    // (`tag_videos = false`) the video id is taken as it is. Neither is believed for a record
    // whose size is not its file's, or whose marker another claim of the folder holds too (a
    // copy of a live record).
    let believed = record.size == meta.len() && !marker_held_elsewhere(folder, &claim, &record);
    let (video_id, marker, create_sent) = match (&record.video_id, &record.marker) {
        _ if !believed => {
            tracing::warn!(file = %escaped(&rel_path), "the claim record does not match its file (size) or shares its marker with another claim; its video is not resumed, a new one is made");
            (None, None, false)
        }
        (Some(_), Some(marker)) => (None, Some(marker.clone()), true),
        (Some(video), None) => (Some(video.clone()), None, false),
        (None, marker) => (None, marker.clone(), record.create_sent),
    };
    // Chunk progress that does not fit the file starts the content again at chunk 1.
    let fits = match (record.chunk_size, record.total_chunks) {
        (Some(chunk), Some(total)) if chunk > 0 && chunk <= 4 << 30 && total > 0 => {
            let total = u64::from(total);
            chunk
                .checked_mul(total)
                .is_some_and(|all| all >= meta.len())
                && chunk
                    .checked_mul(total - 1)
                    .is_some_and(|before| before < meta.len())
                && u64::from(record.next_chunk) <= total + 1
        }
        _ => false,
    };
    let (next_chunk, total_chunks, chunk_size) = if fits && believed {
        (record.next_chunk, record.total_chunks, record.chunk_size)
    } else {
        (1, None, None)
    };
    let upload = ClaimedUpload {
        video_id,
        marker,
        create_sent,
        video_manager_id: record.video_manager_id,
        next_chunk,
        total_chunks,
        chunk_size,
    };
    match shared.store.adopt_claim(&job, &upload, why) {
        Ok(Enqueued::New(_)) => {
            match &record.video_id {
                Some(video) => tracing::info!(
                    file = %escaped(&rel_path),
                    video_id = %video,
                    "{why}; resuming on the same video at chunk {}",
                    record.next_chunk.max(1)
                ),
                None => tracing::info!(file = %escaped(&rel_path), "{why}; uploading it"),
            }
            shared.holds.hold(folder, claim, record);
            shared.wake.notify_one();
        }
        Ok(Enqueued::AlreadyActive(id)) => {
            // An in-place file this agent had queued itself before it took the folder over:
            // that job resumes the dead agent's upload, if it has not started one of its own.
            if record.in_place
                && let Err(err) = shared.store.resume_from_claim(id, &upload, why)
            {
                shared.store_failed("cannot resume a claim taken over", &err);
            }
            shared.holds.hold(folder, claim, record);
        }
        Err(err) => {
            // Not held: not renewed either, so another agent (or the next round) takes it.
            shared.store_failed("cannot queue a claim taken over", &err);
        }
    }
}

/// Whether another claim record in `folder` than `claim`'s carries `record`'s marker.
fn marker_held_elsewhere(folder: &Path, claim: &Claim, record: &ClaimRecord) -> bool {
    let Some(marker) = &record.marker else {
        return false;
    };
    claim::records(folder)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, path)| *path != claim.record)
        .filter_map(|(_, path)| {
            let (bytes, _) = crate::shared_folder::read_small(&path).ok()?;
            serde_json::from_slice::<ClaimRecord>(&bytes).ok()
        })
        .any(|other| other.marker.as_ref() == Some(marker))
}

/// Keeps the presences and claims every quarter of the shortest lease until `stop`. A round
/// still hanging on a share when the next is due is not doubled.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let period = shared
            .settings()
            .folders
            .iter()
            .map(|f| f.claim_lease)
            .min()
            .unwrap_or(Duration::from_secs(120))
            / 4;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
        if running.as_ref().is_some_and(|round| !round.is_finished()) {
            tracing::debug!(
                "the last round over the folders' presences has not ended yet (a share that hangs?)"
            );
            continue;
        }
        let worker = shared.clone();
        running = Some(tokio::task::spawn_blocking(move || round(&worker)));
    }
    shared.holds.leave();
}
