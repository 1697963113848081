//! Claims in a shared folder (`.hotfolder/claims/<agent>/`): claiming a complete file by
//! renaming it in, the record beside it that its owner keeps current, the owner's check that
//! the claim is still its own, and the takeover of a claim whose owner stopped renewing it
//! (see the module doc of `shared_folder` for the design).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AgentId, age, read_small, rewrite_existing, share_dir};

/// The suffix of a claim record; the claimed file is `<key>.<its suffix>` beside it.
pub const RECORD_SUFFIX: &str = "claim";

/// What a claim record says. No upload URL: it is a credential, and a new owner asks for a
/// fresh one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The agent that holds the claim now.
    pub agent: String,
    pub host: String,
    pub pid: u32,
    /// The file's name relative to the watched folder, as text (for people and `status`).
    pub rel_path: String,
    /// The same, byte for byte, in hex: what a new owner uses (names need not be UTF-8).
    pub rel_path_hex: String,
    pub size: u64,
    /// The platform's video for this file, once it exists.
    pub video_id: Option<String>,
    /// The marker keyword of the file's create: a create whose answer was lost is found by it.
    pub marker: Option<String>,
    /// A create was sent and its answer is not known.
    pub create_sent: bool,
    /// The VideoManager the video is in (once it may exist).
    pub video_manager_id: Option<u64>,
    /// The next chunk to send, 1-based; chunks before it were accepted.
    pub next_chunk: u32,
    pub total_chunks: Option<u32>,
    pub chunk_size: Option<u64>,
    /// The file was not moved: it is still at its name in the folder. An exclusive folder's
    /// uploads keep such a record, so that an agent that takes the folder over from a dead one
    /// resumes them on their videos.
    #[serde(default)]
    pub in_place: bool,
    /// The owner's `claim_lease` in milliseconds: others judge the claim stale only after the
    /// longer of theirs and this, so agents configured with different leases never take a
    /// claim that is being renewed.
    #[serde(default)]
    pub lease_ms: u64,
}

impl ClaimRecord {
    /// A record for a file not yet started, held by `agent`.
    pub fn new(agent: &AgentId, rel_path: &Path, size: u64) -> ClaimRecord {
        use std::os::unix::ffi::OsStrExt as _;
        ClaimRecord {
            agent: agent.id.clone(),
            host: agent.host.clone(),
            pid: std::process::id(),
            rel_path: rel_path.to_string_lossy().into_owned(),
            rel_path_hex: hex::encode(rel_path.as_os_str().as_bytes()),
            size,
            video_id: None,
            marker: None,
            create_sent: false,
            video_manager_id: None,
            next_chunk: 1,
            total_chunks: None,
            chunk_size: None,
            in_place: false,
            lease_ms: 0,
        }
    }

    /// The file's name in its folder, as it was (falls back to the text form). `None` for a
    /// name that is not plain (absolute, `..`, empty): a record written by hand or damaged must
    /// not send a file outside done/.
    pub fn rel_path(&self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt as _;
        let path = match hex::decode(&self.rel_path_hex) {
            Ok(bytes) if !bytes.is_empty() => PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
            _ => PathBuf::from(&self.rel_path),
        };
        let plain = !path.as_os_str().is_empty()
            && !path.as_os_str().as_bytes().contains(&0)
            && path.components().all(|c| match c {
                std::path::Component::Normal(name) => name.len() <= 255,
                _ => false,
            });
        plain.then_some(path)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<ClaimRecord, ClaimError> {
        serde_json::from_slice(bytes).map_err(|err| ClaimError::Unreadable(err.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The file is no longer where the job found it: another agent claimed it first (or
    /// someone moved it away). Not a failure: the job is forgotten.
    #[error("the file is gone from the folder: another agent claimed it, or it was moved away")]
    Gone,
    /// The claim was taken over by another agent (its record left this agent's folder).
    #[error("another agent took the claim over")]
    Lost,
    #[error("the claim record cannot be read: {0}")]
    Unreadable(String),
    #[error("cannot claim the file in the shared folder: {0}")]
    Io(#[from] io::Error),
}

/// A claim this agent holds: the file and its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub file: PathBuf,
    pub record: PathBuf,
}

impl Claim {
    /// The claim a claimed file belongs to, if `file` is in a claim folder of `folder`.
    pub fn of_file(folder: &Path, file: &Path) -> Option<Claim> {
        let claims = claims_dir(folder);
        let dir = file.parent()?;
        if dir.parent()? != claims {
            return None;
        }
        let name = file.file_name()?.to_str()?;
        let key = name.split('.').next()?;
        Some(Claim {
            file: file.to_path_buf(),
            record: dir.join(format!("{key}.{RECORD_SUFFIX}")),
        })
    }

    /// Whether the claim is still `agent`'s: its record is in `agent`'s folder and names it.
    #[cfg(test)]
    pub fn is_held_by(&self, agent: &str) -> bool {
        self.held_by(agent).unwrap_or(false)
    }

    /// Whether the claim is still `agent`'s: its record is in `agent`'s folder and names it.
    /// Asked of the file server (the record is opened and read), before every request. `Err`
    /// where the file server cannot tell: an I/O error (a share whose connection dropped), or
    /// no record because this agent's claim folder is gone too (a share not mounted now). A
    /// takeover renames the record out of that folder and leaves the folder.
    pub fn held_by(&self, agent: &str) -> io::Result<bool> {
        match read_small(&self.record) {
            Ok((bytes, _)) => {
                Ok(ClaimRecord::parse(&bytes).is_ok_and(|record| record.agent == agent))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.folder_is_there() => {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Writes `record` over the claim's record (which renews it). `Lost` when the record is no
    /// longer here: another agent took it over.
    pub fn update(&self, record: &ClaimRecord) -> Result<(), ClaimError> {
        match rewrite_existing(&self.record, &record.bytes()) {
            Ok(_) => Ok(()),
            // Gone with this agent's claim folder: a share not mounted now, not a takeover.
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.folder_is_there() => {
                Err(ClaimError::Lost)
            }
            Err(err) => Err(ClaimError::Io(err)),
        }
    }

    /// The record as it is now.
    pub fn read(&self) -> Result<ClaimRecord, ClaimError> {
        match read_small(&self.record) {
            Ok((bytes, _)) => ClaimRecord::parse(&bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.folder_is_there() => {
                Err(ClaimError::Lost)
            }
            Err(err) => Err(ClaimError::Io(err)),
        }
    }

    /// Whether the record's claim folder is there: a takeover renames the record out of it
    /// and leaves it; a share not mounted now takes it away too.
    fn folder_is_there(&self) -> bool {
        self.record
            .parent()
            .is_none_or(|folder| std::fs::symlink_metadata(folder).is_ok())
    }

    /// Writes the claim's record, which must not exist yet. A record cut short (a full disk)
    /// is removed again: it must not be left for other agents to trip over.
    fn write_new(&self, record: &ClaimRecord) -> Result<(), ClaimError> {
        let written = (|| {
            use std::io::Write as _;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.record)?;
            out.write_all(&record.bytes())
        })();
        written.map_err(|err| {
            self.release();
            ClaimError::Io(err)
        })
    }

    /// The file has left the claim folder (done/, failed/) or is gone: the claim ends.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.record);
    }
}

/// `.hotfolder/claims/` of a folder.
pub fn claims_dir(folder: &Path) -> PathBuf {
    share_dir(folder).join("claims")
}

/// Claims `file` (in `folder`, named `rel_path` there) for `agent`: the record first (so that
/// a kill in between leaves a record without a file, which is simply dropped), then the
/// rename that decides. `Gone` when the rename finds no file: another agent won.
pub fn claim(
    folder: &Path,
    agent: &AgentId,
    file: &Path,
    rel_path: &Path,
    size: u64,
) -> Result<(Claim, ClaimRecord), ClaimError> {
    let (dir, key, record_path) = new_record_place(folder, agent)?;
    let claim = Claim {
        file: dir.join(claimed_name(&key, rel_path)),
        record: record_path,
    };
    let record = ClaimRecord::new(agent, rel_path, size);
    claim.write_new(&record)?;
    match std::fs::rename(file, &claim.file) {
        Ok(()) => Ok((claim, record)),
        Err(err) => {
            claim.release();
            if err.kind() == io::ErrorKind::NotFound {
                Err(ClaimError::Gone)
            } else {
                Err(ClaimError::Io(err))
            }
        }
    }
}

/// Where a new record of `agent` goes in `folder`: its claim folder (made, never through a
/// link), a new random key, and the record's path.
fn new_record_place(
    folder: &Path,
    agent: &AgentId,
) -> Result<(PathBuf, String, PathBuf), ClaimError> {
    let dir = super::make_inside(folder, &[super::SHARE_DIR, "claims", &agent.id])?;
    let key = format!("{:016x}", rand::random::<u64>());
    let record = dir.join(format!("{key}.{RECORD_SUFFIX}"));
    Ok((dir, key, record))
}

/// A record of an upload from an exclusive folder, the file left where it is (see
/// [`ClaimRecord::in_place`]).
pub fn record_in_place(
    folder: &Path,
    agent: &AgentId,
    file: &Path,
    rel_path: &Path,
    size: u64,
) -> Result<(Claim, ClaimRecord), ClaimError> {
    let (_, _, record) = new_record_place(folder, agent)?;
    let claim = Claim {
        file: file.to_path_buf(),
        record,
    };
    let mut record = ClaimRecord::new(agent, rel_path, size);
    record.in_place = true;
    claim.write_new(&record)?;
    Ok((claim, record))
}

/// This agent's in-place record of the file named `rel_path` in `folder`, if it has one (an
/// upload that resumes after a restart keeps its record).
pub fn find_own_in_place(
    folder: &Path,
    agent: &AgentId,
    rel_path: &Path,
) -> Option<(Claim, ClaimRecord)> {
    for (owner, record_path) in records(folder).ok()? {
        if owner != agent.id {
            continue;
        }
        let Ok((bytes, _)) = read_small(&record_path) else {
            continue;
        };
        let Ok(record) = ClaimRecord::parse(&bytes) else {
            continue;
        };
        if record.in_place && record.rel_path().as_deref() == Some(rel_path) {
            return Some((
                Claim {
                    file: folder.join(rel_path),
                    record: record_path,
                },
                record,
            ));
        }
    }
    None
}

/// `<key>.<suffix>`: the suffix kept (short and plain only) so that a person looking into the
/// claim folder sees what kind of file it is.
fn claimed_name(key: &str, rel_path: &Path) -> String {
    match rel_path.extension().and_then(|ext| ext.to_str()) {
        Some(ext)
            if !ext.is_empty()
                && ext.len() <= 10
                && ext != RECORD_SUFFIX
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!("{key}.{ext}")
        }
        _ => format!("{key}.file"),
    }
}

/// A claim record of another agent that nobody renewed for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleClaim {
    pub owner: String,
    pub record: PathBuf,
    pub age: Duration,
}

/// Every claim of agents other than `me` in `folder` not renewed for `lease`, by the file
/// server's clock (`now` from this agent's presence just renewed).
pub fn stale_claims(
    folder: &Path,
    me: &str,
    now: i128,
    lease: Duration,
) -> io::Result<Vec<StaleClaim>> {
    let mut stale = Vec::new();
    for (owner, record) in records(folder)? {
        if owner == me {
            continue;
        }
        let Ok((bytes, mtime)) = read_small(&record) else {
            continue;
        };
        let theirs = ClaimRecord::parse(&bytes)
            .map(|record| Duration::from_millis(record.lease_ms))
            .unwrap_or_default();
        let age = age(now, mtime);
        if age > lease.max(theirs) {
            stale.push(StaleClaim { owner, record, age });
        }
    }
    Ok(stale)
}

/// Every claim record in `folder`: (owner, record path).
pub fn records(folder: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let root = claims_dir(folder);
    if !super::real_dir(&share_dir(folder)) || !super::real_dir(&root) {
        return Ok(Vec::new());
    }
    let owners = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    for owner in owners.flatten() {
        let Some(name) = owner.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !owner.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Keys are hex, as `claim` makes them: a file of another shape is not a claim
            // (its file could not be told from its record).
            let is_key = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .is_some_and(|stem| {
                    !stem.is_empty()
                        && stem.len() <= 32
                        && stem.chars().all(|c| c.is_ascii_hexdigit())
                });
            if is_key && path.extension().is_some_and(|ext| ext == RECORD_SUFFIX) {
                found.push((name.clone(), path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether some agent holds a claim on the file named `rel_path` in `folder` (moved into a claim
/// folder, or in place): its companion is not an orphan, whoever's queue it is in.
pub fn is_claimed(folder: &Path, rel_path: &Path) -> bool {
    records(folder)
        .unwrap_or_default()
        .into_iter()
        .any(|(_, path)| {
            read_small(&path)
                .ok()
                .and_then(|(bytes, _)| ClaimRecord::parse(&bytes).ok())
                .and_then(|record| record.rel_path())
                .is_some_and(|claimed| claimed == rel_path)
        })
}

/// A claim taken over: the record (now `agent`'s) and where the file is, if it was found.
#[derive(Debug)]
pub struct TakenOver {
    pub claim: Claim,
    pub record: ClaimRecord,
    /// The agent that held it.
    pub from: String,
    /// Whether the file was found (in any claim folder) and is now beside the record.
    pub file_found: bool,
}

/// Takes `stale` over for `agent`: renames its record into `agent`'s claim folder (of several
/// agents trying, one wins: `Ok(None)` for the others), rewrites it as `agent`'s (which renews
/// it), then moves the file beside it, wherever it is (a takeover cut short leaves it in
/// another claim folder).
pub fn take_over(
    folder: &Path,
    agent: &AgentId,
    stale: &StaleClaim,
) -> Result<Option<TakenOver>, ClaimError> {
    let Some(name) = stale.record.file_name() else {
        return Ok(None);
    };
    let dir = super::make_inside(folder, &[super::SHARE_DIR, "claims", &agent.id])?;
    let record_path = dir.join(name);
    match std::fs::rename(&stale.record, &record_path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ClaimError::Io(err)),
    }
    let key = name
        .to_str()
        .and_then(|n| n.strip_suffix(&format!(".{RECORD_SUFFIX}")))
        .unwrap_or_default()
        .to_owned();
    let (bytes, _) = read_small(&record_path)?;
    let mut record = match ClaimRecord::parse(&bytes) {
        Ok(record) => record,
        // Cut short by a kill or a full disk, or written by hand: its file (if any) goes on
        // under its claimed name rather than circulating between agents for ever.
        Err(err) => unreadable_record(agent, folder, &key, &err),
    };
    let from = std::mem::replace(&mut record.agent, agent.id.clone());
    record.host = agent.host.clone();
    record.pid = std::process::id();
    let placeholder = Claim {
        file: dir.join(claimed_name(&key, &record.rel_path().unwrap_or_default())),
        record: record_path,
    };
    placeholder.update(&record)?;
    if record.in_place {
        // The file was never moved: it is where it was dropped, if it is still there.
        let Some(rel_path) = record.rel_path() else {
            return Ok(Some(TakenOver {
                claim: placeholder,
                record,
                from,
                file_found: false,
            }));
        };
        let file = folder.join(&rel_path);
        let found = std::fs::symlink_metadata(&file).is_ok_and(|meta| meta.is_file());
        return Ok(Some(TakenOver {
            claim: Claim {
                file,
                ..placeholder
            },
            record,
            from,
            file_found: found,
        }));
    }
    let file = find_claimed_file(folder, &key)?;
    let (claim, file_found) = match file {
        Some(found) if found.parent() == Some(dir.as_path()) => (
            Claim {
                file: found,
                ..placeholder
            },
            true,
        ),
        Some(found) => {
            let Some(file_name) = found.file_name() else {
                return Ok(None);
            };
            let target = dir.join(file_name);
            match std::fs::rename(&found, &target) {
                Ok(()) => (
                    Claim {
                        file: target,
                        ..placeholder
                    },
                    true,
                ),
                Err(err) if err.kind() == io::ErrorKind::NotFound => (placeholder, false),
                Err(err) => return Err(ClaimError::Io(err)),
            }
        }
        None => (placeholder, false),
    };
    Ok(Some(TakenOver {
        claim,
        record,
        from,
        file_found,
    }))
}

/// A fresh record for a claim whose record cannot be read: the file keeps its claimed name
/// (`<key>.<suffix>`), as nothing says what it was called; no video is known.
pub fn unreadable_record(
    agent: &AgentId,
    folder: &Path,
    key: &str,
    why: &ClaimError,
) -> ClaimRecord {
    let file = find_claimed_file(folder, key).ok().flatten();
    let name = file
        .as_ref()
        .and_then(|f| f.file_name())
        .map_or_else(|| PathBuf::from(format!("{key}.file")), PathBuf::from);
    let size = file
        .as_ref()
        .and_then(|f| std::fs::symlink_metadata(f).ok())
        .map_or(0, |meta| meta.len());
    tracing::warn!(
        folder = %crate::escape::escaped(folder),
        "the claim record {key}.{RECORD_SUFFIX} cannot be read ({why}); its file goes on as {}",
        crate::escape::escaped(&name)
    );
    ClaimRecord::new(agent, &name, size)
}

/// The claimed file of `key`, in whichever claim folder it is.
pub fn find_claimed_file(folder: &Path, key: &str) -> io::Result<Option<PathBuf>> {
    let root = claims_dir(folder);
    if !super::real_dir(&share_dir(folder)) || !super::real_dir(&root) {
        return Ok(None);
    }
    let owners = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let prefix = format!("{key}.");
    for owner in owners.flatten() {
        if !owner.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with(&prefix)
                && !name.ends_with(&format!(".{RECORD_SUFFIX}"))
                && entry.file_type().is_ok_and(|kind| kind.is_file())
            {
                return Ok(Some(entry.path()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentId {
        AgentId {
            id: name.to_owned(),
            host: "studio".to_owned(),
        }
    }

    #[test]
    fn of_two_agents_claiming_one_file_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mov");
        std::fs::write(&file, b"video").unwrap();
        let a = agent("a-1");
        let b = agent("b-2");
        let (won, _) = claim(dir.path(), &a, &file, Path::new("clip.mov"), 5).unwrap();
        let lost = claim(dir.path(), &b, &file, Path::new("clip.mov"), 5);
        assert!(matches!(lost, Err(ClaimError::Gone)), "{lost:?}");
        assert_eq!(won.file.extension().unwrap(), "mov");
        assert_eq!(std::fs::read(&won.file).unwrap(), b"video");
        assert!(won.is_held_by("a-1"));
        assert!(!won.is_held_by("b-2"));
        // The loser left no record behind.
        assert_eq!(records(dir.path()).unwrap().len(), 1);
        assert_eq!(Claim::of_file(dir.path(), &won.file), Some(won.clone()));
        assert_eq!(Claim::of_file(dir.path(), &file), None);
    }

    #[test]
    fn a_stale_claim_is_taken_over_once_with_its_video_and_the_old_owner_sees_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("clip.mov");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"video").unwrap();
        let a = agent("a-1");
        let (held, _) = claim(dir.path(), &a, &file, Path::new("sub/clip.mov"), 5).unwrap();
        let mut record = held.read().unwrap();
        record.video_id = Some("v-1".into());
        record.next_chunk = 3;
        held.update(&record).unwrap();

        let now = super::super::nanos(std::time::SystemTime::now()) + 10_000_000_000;
        let lease = Duration::from_secs(3);
        assert!(
            stale_claims(dir.path(), "a-1", now, lease)
                .unwrap()
                .is_empty()
        );
        let stale = stale_claims(dir.path(), "b-2", now, lease).unwrap();
        assert_eq!(stale.len(), 1);
        let taken = take_over(dir.path(), &agent("b-2"), &stale[0])
            .unwrap()
            .unwrap();
        assert_eq!(taken.from, "a-1");
        assert!(taken.file_found);
        assert_eq!(taken.record.video_id.as_deref(), Some("v-1"));
        assert_eq!(taken.record.next_chunk, 3);
        assert_eq!(
            taken.record.rel_path().as_deref(),
            Some(Path::new("sub/clip.mov"))
        );
        let mut hostile = taken.record.clone();
        hostile.rel_path_hex = hex::encode("../../etc/passwd");
        assert_eq!(hostile.rel_path(), None);
        assert_eq!(std::fs::read(&taken.claim.file).unwrap(), b"video");
        assert!(taken.claim.is_held_by("b-2"));
        // A third agent that judged it stale too finds nothing to take.
        assert!(
            take_over(dir.path(), &agent("c-3"), &stale[0])
                .unwrap()
                .is_none()
        );
        // The old owner's record is gone: its updates and checks say so.
        assert!(!held.is_held_by("a-1"));
        assert!(matches!(held.update(&record), Err(ClaimError::Lost)));
        assert!(!held.file.exists());
    }

    #[test]
    fn an_unreadable_stale_record_is_taken_once_and_its_file_goes_on_under_its_claimed_name() {
        let dir = tempfile::tempdir().unwrap();
        let owner = claims_dir(dir.path()).join("dead-1");
        std::fs::create_dir_all(&owner).unwrap();
        std::fs::write(owner.join("aaaa.claim"), b"{\"agent\": 5, garbage").unwrap();
        std::fs::write(owner.join("aaaa.mov"), b"video").unwrap();
        let now = super::super::nanos(std::time::SystemTime::now()) + 10_000_000_000;
        let stale = stale_claims(dir.path(), "b-2", now, Duration::from_secs(3)).unwrap();
        let taken = take_over(dir.path(), &agent("b-2"), &stale[0])
            .unwrap()
            .unwrap();
        assert!(taken.file_found);
        assert_eq!(
            taken.record.rel_path().as_deref(),
            Some(Path::new("aaaa.mov"))
        );
        assert!(
            taken.claim.is_held_by("b-2"),
            "the record is readable again"
        );
        assert_eq!(taken.record.video_id, None);
    }
}
