//! An agent's presence on a watched folder (`.hotfolder/agents/<agent>.json`), renewed every
//! quarter lease, and the verdict it leads to: may this agent watch the folder, or does an
//! agent that came first keep it (see the module doc of `shared_folder`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AgentId, age, read_small, rewrite_existing, share_dir};

/// What a presence file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub agent: String,
    pub host: String,
    pub pid: u32,
    /// Whether this agent watches the folder with `shared = true`.
    pub shared: bool,
    /// When this agent's current stay on the folder began, by the file server's clock
    /// (nanoseconds since the epoch): the earlier agent keeps an exclusive folder.
    pub since_ns: i128,
    /// Its version, for a person reading the file.
    pub version: String,
    /// Random per run: a presence of this agent's id rewritten with another nonce is a second
    /// process running with the same id (a state dir copied to another machine).
    #[serde(default)]
    pub nonce: u64,
    /// Its `claim_lease` in milliseconds: the others count it present until the longer of
    /// theirs and this has passed without a renewal (agents configured with different leases
    /// must not take each other for gone).
    #[serde(default)]
    pub lease_ms: u64,
}

impl PresenceRecord {
    /// How long this presence counts without a renewal, for an agent whose own lease is
    /// `mine`.
    pub fn lease_for(&self, mine: Duration) -> Duration {
        mine.max(Duration::from_millis(self.lease_ms))
    }
}

/// Another agent's presence as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAgent {
    pub record: PresenceRecord,
    /// Since its last renewal, by the file server's clock.
    pub age: Duration,
}

impl SeenAgent {
    /// "host vm (pid 123, agent vm-1a2b3c4d)", for messages.
    pub fn describe(&self) -> String {
        format!(
            "host {} (pid {}, agent {})",
            self.record.host, self.record.pid, self.record.agent
        )
    }
}

/// May this agent watch the folder?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes; `others` are the other agents present (sharing it, or newcomers that give way).
    Ours { others: Vec<SeenAgent> },
    /// No: `holder` came first, and one of the two does not share the folder.
    Refused { holder: SeenAgent },
    /// No: another process runs with this agent's id (host, pid): both would upload.
    Twin { host: String, pid: u32 },
}

impl Verdict {
    /// Why the folder is not watched, in words for the log and `status`.
    pub fn refusal(&self, shared: bool) -> Option<String> {
        let holder = match self {
            Verdict::Ours { .. } => return None,
            Verdict::Twin { host, pid } => {
                return Some(format!(
                    "another hotfolder agent runs with this agent's id (host {host}, pid {pid}): was the state dir copied from another machine? Stop one of them and delete its agent-id file in the state dir"
                ));
            }
            Verdict::Refused { holder } => holder,
        };
        let advice = if shared {
            "it does not share the folder; set shared = true on both agents"
        } else {
            "set shared = true on both agents to let them share it"
        };
        Some(format!(
            "another hotfolder agent watches it: {} ({advice})",
            holder.describe()
        ))
    }
}

/// This agent's presence on one folder.
#[derive(Debug)]
pub struct FolderPresence {
    path: PathBuf,
    agents_dir: PathBuf,
    me: PresenceRecord,
    lease: Duration,
    /// The last renewal that worked, by the local monotonic clock.
    last_renewed: Option<std::time::Instant>,
    /// When another process was last seen writing this agent's presence, and who it was.
    twin: Option<(std::time::Instant, String, u32)>,
}

impl FolderPresence {
    pub fn new(folder: &Path, agent: &AgentId, shared: bool, lease: Duration) -> FolderPresence {
        let agents_dir = share_dir(folder).join("agents");
        FolderPresence {
            path: agents_dir.join(format!("{}.json", agent.id)),
            agents_dir,
            me: PresenceRecord {
                agent: agent.id.clone(),
                host: agent.host.clone(),
                pid: std::process::id(),
                shared,
                since_ns: i128::MAX,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                nonce: rand::random(),
                lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            },
            lease,
            last_renewed: None,
            twin: None,
        }
    }

    /// A reload changed `shared` or `claim_lease`.
    pub fn reconfigure(&mut self, shared: bool, lease: Duration) {
        self.me.shared = shared;
        self.lease = lease;
        self.me.lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    }

    /// Rewrites this agent's presence and returns "now" by the file server's clock. A presence
    /// that lapsed (not renewed for a lease: the process was stopped, or the share hung), or
    /// that is new, starts a new stay: other agents may have taken the folder meanwhile, and
    /// this one must then give way. A restart within the lease keeps the stay it had.
    pub fn renew(&mut self) -> io::Result<i128> {
        let folder = self
            .agents_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        super::make_inside(folder, &[super::SHARE_DIR, "agents"])?;
        let previous_record = read_small(&self.path).ok().map(|(bytes, mtime)| {
            let record = serde_json::from_slice::<PresenceRecord>(&bytes)
                .ok()
                .filter(|record| record.agent == self.me.agent);
            (record, mtime)
        });
        // Rewritten by someone else since this process's last renewal: a twin runs.
        if self.last_renewed.is_some()
            && let Some((Some(record), _)) = &previous_record
            && record.nonce != self.me.nonce
        {
            self.twin = Some((std::time::Instant::now(), record.host.clone(), record.pid));
        }
        let previous =
            previous_record.map(|(record, mtime)| (record.map(|record| record.since_ns), mtime));
        // Until the server's clock says whether the stay goes on, the file says "newest": for
        // a moment this agent may look junior to the others, never senior.
        let unsure = self
            .last_renewed
            .is_none_or(|at| at.elapsed() > self.lease / 2);
        let kept_since = self.me.since_ns;
        if unsure {
            self.me.since_ns = i128::MAX;
        }
        let now = match rewrite_existing(&self.path, &self.bytes()) {
            Ok(now) => now,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                std::fs::write(&self.path, self.bytes())?;
                read_small(&self.path)?.1
            }
            Err(err) => return Err(err),
        };
        if unsure {
            let fresh = |mtime: i128| age(now, mtime) <= self.lease;
            self.me.since_ns = match previous {
                // Renewed in time (by the server's clock): the stay goes on.
                Some((_, mtime)) if self.last_renewed.is_some() && fresh(mtime) => kept_since,
                // A restart of this agent within the lease.
                Some((Some(since), mtime)) if self.last_renewed.is_none() && fresh(mtime) => since,
                _ => now,
            };
            rewrite_existing(&self.path, &self.bytes())?;
        }
        self.last_renewed = Some(std::time::Instant::now());
        Ok(now)
    }

    /// When this agent last renewed its presence (by its own monotonic clock, which a stopped
    /// process does not escape): `None` before the first renewal.
    pub fn last_renewed(&self) -> Option<std::time::Instant> {
        self.last_renewed
    }

    /// The other agents on the folder whose presence is fresh (renewed within a lease), and
    /// the verdict. `now` is what [`FolderPresence::renew`] returned.
    pub fn verdict(&self, now: i128) -> io::Result<Verdict> {
        if let Some((seen, host, pid)) = &self.twin
            && seen.elapsed() <= self.lease
        {
            return Ok(Verdict::Twin {
                host: host.clone(),
                pid: *pid,
            });
        }
        let others = present_agents(&self.agents_dir, now)?
            .into_iter()
            .filter(|seen| {
                seen.record.agent != self.me.agent && seen.age <= seen.record.lease_for(self.lease)
            })
            .collect::<Vec<_>>();
        let me = (self.me.since_ns, self.me.agent.as_str());
        let holder = others
            .iter()
            .filter(|seen| !(seen.record.shared && self.me.shared))
            .filter(|seen| (seen.record.since_ns, seen.record.agent.as_str()) < me)
            .min_by(|a, b| {
                (a.record.since_ns, &a.record.agent).cmp(&(b.record.since_ns, &b.record.agent))
            })
            .cloned();
        Ok(match holder {
            Some(holder) => Verdict::Refused { holder },
            None => Verdict::Ours { others },
        })
    }

    /// The agent stops: its presence goes, so that another may take the folder at once.
    pub fn leave(&self) {
        if self.last_renewed.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.me).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Every presence in `agents_dir` that can be read, with its age at `now` (server clock).
/// Unreadable or foreign files are passed over.
pub fn present_agents(agents_dir: &Path, now: i128) -> io::Result<Vec<SeenAgent>> {
    let entries = match std::fs::read_dir(agents_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut seen = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let Ok((bytes, mtime)) = read_small(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<PresenceRecord>(&bytes) else {
            continue;
        };
        seen.push(SeenAgent {
            record,
            age: age(now, mtime),
        });
    }
    seen.sort_by(|a, b| a.record.agent.cmp(&b.record.agent));
    Ok(seen)
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
    fn the_first_agent_keeps_an_exclusive_folder_and_the_second_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(60);
        let mut first = FolderPresence::new(dir.path(), &agent("a-1"), false, lease);
        let now = first.renew().unwrap();
        assert!(matches!(first.verdict(now).unwrap(), Verdict::Ours { .. }));
        std::thread::sleep(Duration::from_millis(20));
        let mut second = FolderPresence::new(dir.path(), &agent("b-2"), false, lease);
        let now = second.renew().unwrap();
        let verdict = second.verdict(now).unwrap();
        let why = verdict.refusal(false).unwrap();
        assert!(why.contains("host studio"), "{why}");
        assert!(why.contains("agent a-1"), "{why}");
        // The first one still keeps it, and sees the second.
        let now = first.renew().unwrap();
        match first.verdict(now).unwrap() {
            Verdict::Ours { others } => assert_eq!(others[0].record.agent, "b-2"),
            other => panic!("{other:?}"),
        }
        // Two shared agents share it.
        first.reconfigure(true, lease);
        second.reconfigure(true, lease);
        first.renew().unwrap();
        let now = second.renew().unwrap();
        assert!(matches!(second.verdict(now).unwrap(), Verdict::Ours { .. }));
        // The first leaves: the second has it.
        first.leave();
        second.reconfigure(false, lease);
        let now = second.renew().unwrap();
        assert!(matches!(second.verdict(now).unwrap(), Verdict::Ours { .. }));
    }

    #[test]
    fn an_agent_with_a_shorter_lease_still_sees_one_with_a_longer_lease_as_present() {
        let dir = tempfile::tempdir().unwrap();
        let mut slow =
            FolderPresence::new(dir.path(), &agent("a-1"), false, Duration::from_secs(60));
        slow.renew().unwrap();
        let mut quick =
            FolderPresence::new(dir.path(), &agent("b-2"), false, Duration::from_secs(2));
        // The long-lease agent renews every 15 s; 3 s after its renewal it is still there.
        let now = quick.renew().unwrap() + 3_000_000_000;
        assert!(matches!(
            quick.verdict(now).unwrap(),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn two_processes_with_one_agent_id_both_give_the_folder_up() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(60);
        let mut one = FolderPresence::new(dir.path(), &agent("a-1"), true, lease);
        let mut clone = FolderPresence::new(dir.path(), &agent("a-1"), true, lease);
        one.renew().unwrap();
        clone.renew().unwrap();
        let now = one.renew().unwrap();
        let why = one.verdict(now).unwrap().refusal(true).unwrap();
        assert!(why.contains("runs with this agent's id"), "{why}");
        let now = clone.renew().unwrap();
        assert!(matches!(clone.verdict(now).unwrap(), Verdict::Twin { .. }));
    }

    #[test]
    fn an_agent_that_stopped_renewing_loses_the_folder_and_gives_way_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(2);
        let mut first = FolderPresence::new(dir.path(), &agent("a-1"), false, lease);
        first.renew().unwrap();
        let mut second = FolderPresence::new(dir.path(), &agent("b-2"), false, lease);
        let now = second.renew().unwrap();
        assert!(matches!(
            second.verdict(now).unwrap(),
            Verdict::Refused { .. }
        ));
        // The first stops renewing for longer than the lease: the second takes the folder.
        std::thread::sleep(lease + Duration::from_millis(300));
        let now = second.renew().unwrap();
        assert!(matches!(second.verdict(now).unwrap(), Verdict::Ours { .. }));
        // The first wakes up: it is a newcomer now and gives way.
        let now = first.renew().unwrap();
        let verdict = first.verdict(now).unwrap();
        assert!(
            verdict.refusal(false).unwrap().contains("agent b-2"),
            "{verdict:?}"
        );
    }
}
