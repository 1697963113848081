//! Several agents, one folder: who may watch a folder, and which agent uploads which file,
//! agreed through the file system alone (no coordinator, no network between agents).
//!
//! Everything lives in `.hotfolder/` inside the watched folder, so it works wherever the
//! folder does, on a local disk or a share seen by several machines:
//!
//! ```text
//! .hotfolder/agents/<agent>.json         an agent's presence: host, pid, since; renewed
//! .hotfolder/claims/<agent>/<key>.claim  a claim record: which file, its video, how far
//! .hotfolder/claims/<agent>/<key>.<ext>  the claimed file itself
//! ```
//!
//! **Presence** ([`presence`]). Every agent keeps a presence file in each folder it watches
//! and rewrites it every quarter of `claim_lease`. Without `shared = true` a folder is
//! exclusive: of the agents present on it, the one that came first keeps it and the others
//! refuse it, naming the first (host, pid). A presence not renewed for `claim_lease` belongs to
//! an agent that stopped; it no longer counts, and an agent that comes back after such a gap
//! (a `SIGSTOP`, a hung share) counts as new: it is the one that gives way. A lock file with a
//! heartbeat is used rather than `flock`, which does not cross NFS and SMB reliably. An
//! exclusive folder's uploads keep *in-place* claim records (the file is not moved): the
//! agent that takes the folder over from a dead one takes those records over too, and resumes
//! the uploads on their videos as below.
//!
//! **Claims** ([`claim`]). With `shared = true`, a complete file is claimed when a worker is
//! about to upload it, by renaming it into the agent's claim folder (the maildir pattern: a
//! rename is atomic on the file server, over NFS and SMB too, so of several agents exactly one
//! wins; the others find the file gone and forget it). Beside it, a small record says which
//! file it was (its name in the folder), its video, its marker keyword and how many chunks the
//! platform accepted. The owner rewrites the record at each step and at least every quarter
//! lease, and re-reads it before every request to the platform: a record that is no longer in
//! its folder was taken over, and the owner stops at once (an owner that wakes up from a stall
//! must not keep sending). The record holds no upload URL: that is a credential.
//!
//! **Takeover.** A record older than `claim_lease` is taken over by another agent with a
//! rename of the record into its own claim folder (again, one winner); the file follows. The
//! new owner resumes **on the same video** from the record, with a fresh upload URL: at the
//! recorded chunk, or at chunk 1 if the platform will not continue. A create whose answer was
//! lost is looked up by the marker keyword, as after a crash (see `vmpro::create`), so a
//! takeover never makes a second video. The marker stays on the video until the file is in
//! done/ or failed/: a record is only believed through it (a record written by hand could
//! name anyone's video), so the new owner looks the video up by the marker rather than taking
//! the record's video id.
//!
//! **Clocks.** Staleness is judged by modification times on the share, that is by the file
//! server's clock: an agent learns "now" on the server from the mtime of its own presence
//! file just rewritten, and compares that with the mtime of a record. Hosts' clocks are never
//! compared with each other.
//!
//! **Assumptions and limits.** Rename must be atomic on the server and fail when the source is
//! gone (true for local file systems, NFS, SMB and SFTP). A file server whose clock jumps can
//! make a claim look stale early: its owner then stops before its next request, so the upload
//! continues once, elsewhere. A network file system's caches can make a rename seen late: an
//! owner whose claim was taken over can send at most the request it had already started. A
//! move to done/ that copies across file systems is not atomic: an owner stalled for longer
//! than the lease in the middle of that copy can leave a second copy in done/ (one video).
//! Agents must run compatible versions and each folder must be configured `shared` on every
//! agent that watches it; an agent that refuses a folder says so in its log and `status`.

pub mod claim;
pub mod presence;

use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The folder inside every watched folder that holds presences and claims; never scanned as
/// input (see `watch::WatchSpec`).
pub const SHARE_DIR: &str = ".hotfolder";

/// The file in the state dir that keeps this agent's id.
pub const AGENT_ID_FILE_NAME: &str = "agent-id";

/// `.hotfolder/` of a watched folder.
pub fn share_dir(folder: &Path) -> PathBuf {
    folder.join(SHARE_DIR)
}

/// Makes the folders `parts` inside `folder` (e.g. `.hotfolder`, `agents`) and returns the
/// innermost. `folder` itself must exist: a watched folder that is gone must not be made again
/// here (the intake reports it missing, and a share not mounted must not be written into its
/// mount point). A part that is a link, or not a folder, is refused: nothing is written
/// through a link swapped in.
pub(crate) fn make_inside(folder: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut path = folder.to_path_buf();
    for part in parts {
        path.push(part);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is {}, not a folder",
                crate::escape::escaped(&path),
                if meta.file_type().is_symlink() {
                    "a link"
                } else {
                    "a file"
                }
            )));
        }
    }
    Ok(path)
}

/// Who this agent is, on every folder it watches: the same across restarts (it is kept in the
/// state dir), different for two agents with their own state dirs on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentId {
    /// `<host>-<8 hex>`: a file name (see [`AgentId::new`]).
    pub id: String,
    pub host: String,
}

impl AgentId {
    /// A new id for this machine: its host name (letters, digits, `-` and `.` only, at most 64)
    /// and 8 random hex digits.
    pub fn new(host: &str) -> AgentId {
        let mut safe: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if safe.is_empty() || safe.starts_with('.') {
            safe.insert(0, 'h');
        }
        AgentId {
            id: format!("{safe}-{:08x}", rand::random::<u32>()),
            host: host.to_owned(),
        }
    }

    /// The part that is unique to this agent: what its temp files in done/ carry.
    pub fn tag(&self) -> &str {
        self.id.rsplit('-').next().unwrap_or(&self.id)
    }

    /// The agent of the state dir `state_dir` (`agent-id` there), made on first use.
    pub fn of_state_dir(state_dir: &Path) -> io::Result<AgentId> {
        let path = state_dir.join(AGENT_ID_FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                if is_file_name(id) {
                    return Ok(AgentId {
                        id: id.to_owned(),
                        host: crate::notify::host_name().to_owned(),
                    });
                }
                tracing::warn!(
                    "{} does not hold an agent id; making a new one",
                    crate::escape::escaped(&path)
                );
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let id = AgentId::new(crate::notify::host_name());
        std::fs::write(&path, format!("{}\n", id.id))?;
        Ok(id)
    }
}

/// A name that can be one path component, made by [`AgentId::new`] (or by hand, sensibly).
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

static THIS_AGENT: OnceLock<AgentId> = OnceLock::new();

/// Makes `agent` the one this process runs as (the first call wins; `run` calls it once).
pub fn set_this_agent(agent: AgentId) -> &'static AgentId {
    THIS_AGENT.get_or_init(|| agent)
}

/// The agent this process runs as, once `run` has set it (`None` for `upload`, `status`...).
pub fn this_agent() -> Option<&'static AgentId> {
    THIS_AGENT.get()
}

/// Nanoseconds since the Unix epoch of a modification time.
pub(crate) fn nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// How far in the future a timestamp on the share may be and still count: every agent's
/// times come from the one file server, so more than this is a hand-set mtime or a server
/// clock that stepped back, and must not keep a claim or presence alive for ever.
const FUTURE_SLACK_NS: i128 = 10_000_000_000;

/// How long before `now_ns` the time `then_ns` was, both by the file server's clock: zero for a
/// time just after it, and "for ever" for one far in the future (see [`FUTURE_SLACK_NS`]).
pub(crate) fn age(now_ns: i128, then_ns: i128) -> Duration {
    if then_ns > now_ns.saturating_add(FUTURE_SLACK_NS) {
        return Duration::MAX;
    }
    let ns = now_ns.saturating_sub(then_ns).max(0);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Whether `path` is a folder itself, not a link to one: claims are never listed, taken or
/// moved through a link swapped in under `.hotfolder/`.
pub(crate) fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())
}

/// Reads a small JSON file (a presence or a record): at most 64 KiB, never through a link.
pub(crate) fn read_small(path: &Path) -> io::Result<(Vec<u8>, i128)> {
    use std::io::Read as _;
    let mut file = crate::nofollow::open_file(path).map_err(|e| e.into_io())?;
    let mtime = crate::ready::fresh_snapshot(&file)?.mtime_ns;
    let mut bytes = Vec::new();
    (&mut file).take(64 * 1024).read_to_end(&mut bytes)?;
    Ok((bytes, mtime))
}

/// Rewrites an existing small file in place (never creating it: a record taken over by
/// another agent must not come back) and returns its new mtime, the file server's "now".
pub(crate) fn rewrite_existing(path: &Path, bytes: &[u8]) -> io::Result<i128> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)?;
    Ok(crate::ready::fresh_snapshot(&file)?.mtime_ns)
}

/// One agent seen on a folder, for `status`: from its presence and the claims it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOnFolder {
    pub agent: String,
    /// `None` for claims whose agent has no presence left (it stopped).
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub shared: Option<bool>,
    /// Since its presence was last renewed, by this machine's clock (for showing only).
    pub seen_secs_ago: Option<u64>,
    /// Renewed within `claim_lease`: running.
    pub active: bool,
    pub this_agent: bool,
    /// The files it holds claimed, by their names in the folder.
    pub claims: Vec<String>,
}

/// The agents on `folder` and their claims, read without writing anything (for `status`).
/// `me` is this state dir's agent id, if it has one. Empty when only `me` is there: a folder
/// with one agent needs no such line.
pub fn survey(folder: &Path, lease: Duration, me: Option<&str>) -> Vec<AgentOnFolder> {
    let now = nanos(SystemTime::now());
    let agents_dir = share_dir(folder).join("agents");
    let mut seen: Vec<AgentOnFolder> = presence::present_agents(&agents_dir, now)
        .unwrap_or_default()
        .into_iter()
        .map(|agent| AgentOnFolder {
            this_agent: me == Some(agent.record.agent.as_str()),
            active: agent.age <= agent.record.lease_for(lease),
            agent: agent.record.agent,
            host: Some(agent.record.host),
            pid: Some(agent.record.pid),
            shared: Some(agent.record.shared),
            seen_secs_ago: Some(agent.age.as_secs()),
            claims: Vec::new(),
        })
        .collect();
    for (owner, record) in claim::records(folder).unwrap_or_default() {
        let name = read_small(&record)
            .ok()
            .and_then(|(bytes, _)| serde_json::from_slice::<claim::ClaimRecord>(&bytes).ok())
            .map_or_else(|| "(unreadable claim record)".to_owned(), |r| r.rel_path);
        match seen.iter_mut().find(|agent| agent.agent == owner) {
            Some(agent) => agent.claims.push(name),
            None => seen.push(AgentOnFolder {
                this_agent: me == Some(owner.as_str()),
                agent: owner,
                host: None,
                pid: None,
                shared: None,
                seen_secs_ago: None,
                active: false,
                claims: vec![name],
            }),
        }
    }
    // One agent alone on its folder (its own uploads' records included): nothing to show.
    if seen.iter().all(|agent| agent.this_agent) {
        return Vec::new();
    }
    seen.sort_by(|a, b| (!a.this_agent, &a.agent).cmp(&(!b.this_agent, &b.agent)));
    seen
}

/// [`survey`] of every folder in `folders` where there is something to show.
/// How long `status`, `/api/status` and the status page wait for the folders' `.hotfolder/`
/// to be read: a hung network share must not hang them.
pub const SURVEY_WAIT: Duration = Duration::from_secs(2);

/// What reading the configured folders' `.hotfolder/` found (see [`survey_all`]).
#[derive(Debug, Clone, Default)]
pub struct Surveys {
    /// Per folder where more than this agent was seen, or claims are held: the agents and
    /// their claims.
    pub agents: Vec<(PathBuf, Vec<AgentOnFolder>)>,
    /// Folders whose `.hotfolder/` was not read within [`SURVEY_WAIT`] (a hung share): their
    /// agents and claims are not known.
    pub not_answering: Vec<PathBuf>,
}

/// Folders whose survey is still under way: a thread stuck on a hung share stays stuck, so a
/// folder is not surveyed again until it returns (else every status request would leave one
/// more thread behind).
fn surveys_under_way() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    static UNDER_WAY: OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        OnceLock::new();
    UNDER_WAY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// [`survey`] of every folder, each on a thread of its own, waited for at most
/// [`SURVEY_WAIT`] in all.
pub fn survey_all(folders: &[crate::config::FolderSettings], me: Option<&str>) -> Surveys {
    let (found, answers) = std::sync::mpsc::channel();
    let mut asked = vec![false; folders.len()];
    for (index, folder) in folders.iter().enumerate() {
        if !surveys_under_way().insert(folder.path.clone()) {
            continue;
        }
        let (path, lease, me) = (
            folder.path.clone(),
            folder.claim_lease,
            me.map(str::to_owned),
        );
        let found = found.clone();
        let started = std::thread::Builder::new()
            .name("survey".into())
            .spawn(move || {
                let agents = survey(&path, lease, me.as_deref());
                surveys_under_way().remove(&path);
                // The receiver is gone when the answer came too late: nothing to do.
                let _ = found.send((index, agents));
            });
        match started {
            Ok(_) => asked[index] = true,
            Err(_) => {
                surveys_under_way().remove(&folder.path);
            }
        }
    }
    drop(found);
    let deadline = std::time::Instant::now() + SURVEY_WAIT;
    let mut answered: Vec<Option<Vec<AgentOnFolder>>> = vec![None; folders.len()];
    let mut waiting = asked.iter().filter(|asked| **asked).count();
    while waiting > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match answers.recv_timeout(left) {
            Ok((index, agents)) => {
                answered[index] = Some(agents);
                waiting -= 1;
            }
            Err(_) => break,
        }
    }
    let mut surveys = Surveys::default();
    for (folder, agents) in folders.iter().zip(answered) {
        match agents {
            Some(agents) if agents.is_empty() => {}
            Some(agents) => surveys.agents.push((folder.path.clone(), agents)),
            None => surveys.not_answering.push(folder.path.clone()),
        }
    }
    surveys
}

/// [`survey_all`] for `hotfolder status`, in a child process: a thread that waits on a hung
/// network share cannot be ended, and keeps its process from exiting (a FUSE request already
/// with its server is waited out even by a killed process), so `status` would print and then
/// never return. The child resolves each folder's path as the agent does (links), surveys it
/// and writes one line per folder; the folders whose line has not come within
/// [`SURVEY_WAIT`] are not answering, and the child is left to end when its share answers.
///
/// Must be called while the process has one thread: `fork` copies only the calling thread,
/// and the child must not find a lock held by another one.
pub fn survey_apart(folders: &[crate::config::FolderSettings], me: Option<&str>) -> Surveys {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count());
    if threads != 1 {
        return survey_all(folders, me);
    }
    let mut ends = [0; 2];
    // SAFETY: pipe2 fills the two-element array with two new descriptors.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return survey_all(folders, me);
    }
    let [read_end, write_end] = ends;
    // SAFETY: single-threaded here (see above); the child only reads files, writes to its
    // pipe and leaves with `_exit`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // The child: nothing of the parent's output stays open in it (a `$(hotfolder status)`
        // would wait for it), only its pipe.
        // SAFETY: descriptors of this process; /dev/null is a C string literal.
        unsafe {
            libc::close(read_end);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        // SAFETY: the write end is this process's and owned by the File from here on.
        let out = std::sync::Mutex::new(unsafe { std::fs::File::from_raw_fd(write_end) });
        // Each folder on a thread of its own (the child is a new, single-threaded process):
        // a folder on a hung share must not keep the others from answering.
        std::thread::scope(|scope| {
            for (index, folder) in folders.iter().enumerate() {
                let out = &out;
                scope.spawn(move || {
                    let path = match std::fs::metadata(&folder.path) {
                        Ok(meta) if meta.is_dir() => std::fs::canonicalize(&folder.path)
                            .unwrap_or_else(|_| folder.path.clone()),
                        _ => folder.path.clone(),
                    };
                    let agents = survey(&path, folder.claim_lease, me);
                    let line = serde_json::json!({
                        "index": index,
                        "path_hex": hex::encode(path.as_os_str().as_encoded_bytes()),
                        "agents": agents,
                    });
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{line}");
                });
            }
        });
        // SAFETY: ends the child without running the parent's exit handlers or destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent's copy of the write end; the child holds its own.
    unsafe { libc::close(write_end) };
    if child < 0 {
        // SAFETY: the read end is this process's.
        unsafe { libc::close(read_end) };
        return survey_all(folders, me);
    }
    // SAFETY: the read end is this process's and owned by the File from here on.
    let from_child = unsafe { std::fs::File::from_raw_fd(read_end) };
    let (lines, ended) = read_lines_until(&from_child, std::time::Instant::now() + SURVEY_WAIT);
    drop(from_child);
    if !ended {
        // Stuck on a share: it dies once the share answers, instead of going on surveying.
        // SAFETY: kill(2) of this process's own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    // SAFETY: waitpid(2) of this process's own child; WNOHANG never blocks.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), libc::WNOHANG) };

    let mut answered: Vec<Option<(PathBuf, Vec<AgentOnFolder>)>> = vec![None; folders.len()];
    for line in lines {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let index = value["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok());
        let path = value["path_hex"]
            .as_str()
            .and_then(|text| hex::decode(text).ok())
            .map(|bytes| PathBuf::from(std::ffi::OsString::from_vec(bytes)));
        let agents = serde_json::from_value::<Vec<AgentOnFolder>>(value["agents"].clone()).ok();
        if let (Some(index), Some(path), Some(agents)) = (index, path, agents)
            && let Some(slot) = answered.get_mut(index)
        {
            *slot = Some((path, agents));
        }
    }
    let mut surveys = Surveys::default();
    for (folder, answer) in folders.iter().zip(answered) {
        match answer {
            Some((_, agents)) if agents.is_empty() => {}
            Some((path, agents)) => surveys.agents.push((path, agents)),
            None => surveys.not_answering.push(folder.path.clone()),
        }
    }
    surveys
}

/// The lines read from `pipe` until it ends (`true`) or `deadline` passes (`false`).
fn read_lines_until(pipe: &std::fs::File, deadline: std::time::Instant) -> (Vec<Vec<u8>>, bool) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut got = Vec::new();
    let mut ended = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut ready = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let wait = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, valid for the call.
        let polled = unsafe { libc::poll(&mut ready, 1, wait) };
        if polled < 0 && std::io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if polled <= 0 {
            break;
        }
        let mut buffer = [0u8; 64 * 1024];
        match (&*pipe).read(&mut buffer) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Only whole lines: one cut short by the deadline is not an answer.
    let whole = got
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    let lines = got[..whole]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (lines, ended)
}

/// This state dir's agent id, if an agent ever ran with it.
pub fn agent_id_in(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(AGENT_ID_FILE_NAME)).ok()?;
    let id = text.trim();
    is_file_name(id).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_id_is_one_safe_file_name_and_kept_in_the_state_dir() {
        let odd = AgentId::new("../studio host/é");
        assert!(is_file_name(&odd.id), "{}", odd.id);
        assert!(odd.id.starts_with("h.._studio_host__-"), "{}", odd.id);
        assert_eq!(odd.tag().len(), 8);

        let dir = tempfile::tempdir().unwrap();
        let first = AgentId::of_state_dir(dir.path()).unwrap();
        let again = AgentId::of_state_dir(dir.path()).unwrap();
        assert_eq!(first.id, again.id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(AgentId::of_state_dir(other.path()).unwrap().id, first.id);
    }

    #[test]
    fn ages_are_never_negative_and_far_future_times_are_stale() {
        assert_eq!(age(10, 20), Duration::ZERO);
        assert_eq!(age(0, 3_600_000_000_000), Duration::MAX);
        assert_eq!(age(3_000_000_000, 1_000_000_000), Duration::from_secs(2));
    }
}
