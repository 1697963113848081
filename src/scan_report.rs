//! `hotfolder scan`: the dry run. For every watched folder, every file in it and what the agent
//! would do with it right now (upload it, wait for it to be stable, wait for its writer, wait
//! for its container to be whole, fail it, or leave it alone and why), without uploading,
//! moving or recording anything.
//!
//! It applies the same rules as the agent, in the same order: the name patterns, what the path
//! is (links are never followed), whether the queue already has the file, the quiet period,
//! then the other signals through `ready::release` on the file itself. A scan cannot wait out
//! `stable_for`, so a file modified less than `stable_for` ago is reported as waiting for
//! stability, as the agent's own first scan treats it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{FolderSettings, Settings, human_size};
use crate::escape::escaped;
use crate::ready::{self, HeldBy, Inspection, NameFilter, NameVerdict, Release, ReleaseRules};
use crate::store::JobStore;
use crate::watch::WatchSpec;

/// What the agent would do with one file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanAction {
    /// Every signal agrees: it would be queued and uploaded.
    Upload,
    /// Modified less than `stable_for` ago.
    WaitStable,
    /// A process on this machine has it open for writing.
    WaitWriter,
    /// Its container is not whole yet.
    WaitContainer,
    /// It waits for its companion (`metadata_file`).
    WaitCompanion,
    /// It would go to failed/ without an upload.
    Fail,
    /// The queue has it already (waiting, uploading, paused or being moved).
    Queued,
    /// Hotfolder uploaded this very file and placed it in done/; it turned up in the folder
    /// again (done/ renamed, `done_dir` changed) and is not uploaded twice.
    AlreadyUploaded,
    /// Not a candidate: its name, or what it is (a link, a pipe).
    Skip,
    /// It cannot be looked at or read.
    Unreadable,
}

impl ScanAction {
    fn label(self) -> &'static str {
        match self {
            ScanAction::Upload => "would upload",
            ScanAction::WaitStable => "not stable yet",
            ScanAction::WaitWriter => "open for writing",
            ScanAction::WaitContainer => "incomplete",
            ScanAction::WaitCompanion => "waiting for its companion",
            ScanAction::Fail => "would fail",
            ScanAction::Queued => "in the queue",
            ScanAction::AlreadyUploaded => "already uploaded",
            ScanAction::Skip => "skipped",
            ScanAction::Unreadable => "unreadable",
        }
    }
}

/// One file and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ScannedFile {
    pub path: PathBuf,
    pub size: Option<u64>,
    pub action: ScanAction,
    /// Why, in words: the rule that would release it, what it waits for, why it is skipped.
    pub detail: String,
}

/// One folder's files.
#[derive(Debug, Clone, Serialize)]
pub struct ScannedFolder {
    pub path: PathBuf,
    /// How `run` would watch it: "events (ext4)", "events + polling every 10 s (fuse.sshfs)".
    pub mode: Option<String>,
    /// Why the folder itself cannot be scanned, when it cannot.
    pub problem: Option<String>,
    pub files: Vec<ScannedFile>,
}

/// Scans every folder of `settings`. `store` (read-only, when there is one) tells which files
/// the queue already has. Blocking: it reads the folders and the files' headers.
pub fn scan(settings: &Settings, store: Option<&JobStore>, now: SystemTime) -> Vec<ScannedFolder> {
    settings
        .folders
        .iter()
        .map(|folder| scan_folder(folder, store, now))
        .collect()
}

fn scan_folder(
    folder: &FolderSettings,
    store: Option<&JobStore>,
    now: SystemTime,
) -> ScannedFolder {
    let spec = WatchSpec::for_folder(folder);
    let mut scanned = ScannedFolder {
        path: folder.path.clone(),
        mode: None,
        problem: None,
        files: Vec::new(),
    };
    if let Err(err) = std::fs::symlink_metadata(&folder.path) {
        scanned.problem = Some(format!("cannot be read: {err}"));
        return scanned;
    }
    match crate::watch::mode_now(&spec) {
        Ok(mode) => scanned.mode = Some(mode.to_string()),
        Err(err) => scanned.problem = Some(crate::chain(&err)),
    }
    let found = crate::watch::scan(&spec);
    for (path, err) in found.errors {
        scanned.files.push(ScannedFile {
            path,
            size: None,
            action: ScanAction::Unreadable,
            detail: err.to_string(),
        });
    }
    for (path, reason) in found.skipped {
        scanned.files.push(ScannedFile {
            path,
            size: None,
            action: ScanAction::Skip,
            detail: format!("it is {reason}"),
        });
    }
    let filter = NameFilter::new(&folder.include, &folder.exclude);
    let rules = ReleaseRules::of(folder);
    for path in found.files {
        let file = judge(&path, folder, &filter, rules, store, now);
        scanned.files.push(file);
    }
    scanned.files.sort_by(|a, b| a.path.cmp(&b.path));
    scanned
}

/// The agent's rules, in its order, for one file.
fn judge(
    path: &Path,
    folder: &FolderSettings,
    filter: &NameFilter,
    rules: ReleaseRules,
    store: Option<&JobStore>,
    now: SystemTime,
) -> ScannedFile {
    let verdict = |action, size, detail: String| ScannedFile {
        path: path.to_path_buf(),
        size,
        action,
        detail,
    };
    let name_verdict = path
        .file_name()
        .map(|name| filter.verdict(name))
        .unwrap_or(NameVerdict::NotIncluded);
    if !matches!(name_verdict, NameVerdict::Accepted { .. }) {
        return verdict(ScanAction::Skip, None, name_verdict.to_string());
    }
    let snapshot = match ready::inspect(path) {
        Ok(Inspection::Regular(snapshot)) => snapshot,
        Ok(Inspection::Vanished) => {
            return verdict(ScanAction::Skip, None, "it is gone".into());
        }
        Ok(Inspection::Skipped(reason)) => {
            return verdict(ScanAction::Skip, None, format!("it is {reason}"));
        }
        Err(err) => return verdict(ScanAction::Unreadable, None, err.to_string()),
    };
    let size = Some(snapshot.size);
    if let Some(store) = store
        && let Ok(Some(job)) = store.active_job_for_path(path)
    {
        return verdict(
            ScanAction::Queued,
            size,
            format!("job {} is {}", job.id, job.state),
        );
    }
    if let Some(store) = store
        && let Ok(Some(before)) = crate::reappeared::uploaded_before(store, path)
    {
        return verdict(ScanAction::AlreadyUploaded, size, before.explanation());
    }
    let modified = SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(snapshot.mtime_ns).unwrap_or(0));
    let age = now.duration_since(modified).unwrap_or_default();
    if age < folder.stable_for {
        return verdict(
            ScanAction::WaitStable,
            size,
            format!(
                "modified {} ago; stable_for is {}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(folder.stable_for)
            ),
        );
    }
    let stable_rule = format!(
        "not modified for {}",
        humantime::format_duration(Duration::from_secs(age.as_secs()))
    );
    // A scan has not watched the file: the deadline counts from its ctime alone.
    match ready::release::look(path, None, snapshot, rules, now, SystemTime::UNIX_EPOCH) {
        Ok(Release::Ready { signals }) => {
            let mut rule = stable_rule;
            for signal in signals {
                rule.push_str("; ");
                rule.push_str(&signal);
            }
            verdict(ScanAction::Upload, size, rule)
        }
        Ok(Release::Changed(_)) => verdict(
            ScanAction::WaitStable,
            size,
            "it changed while it was looked at".into(),
        ),
        Ok(Release::Held {
            by: HeldBy::Writer,
            why,
            ..
        }) => verdict(ScanAction::WaitWriter, size, why),
        Ok(Release::Held {
            by: HeldBy::Container,
            why,
            gives_up_at,
        }) => {
            let until = gives_up_at
                .map(|at| {
                    let left = at.duration_since(now).unwrap_or_default();
                    format!(
                        "; goes to failed/ in {} if it stays so",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    )
                })
                .unwrap_or_default();
            verdict(ScanAction::WaitContainer, size, format!("{why}{until}"))
        }
        Ok(Release::Held {
            by: HeldBy::Companion,
            why,
            ..
        }) => verdict(ScanAction::WaitCompanion, size, why),
        Ok(Release::Refused { message, .. }) => verdict(ScanAction::Fail, size, message),
        Err(err) => verdict(ScanAction::Unreadable, size, err.to_string()),
    }
}

/// The report as text: a heading per folder, a line per file.
pub fn to_text(folders: &[ScannedFolder]) -> String {
    let mut out = String::new();
    for (i, folder) in folders.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mode = folder
            .mode
            .as_ref()
            .map(|mode| format!("  mode: {mode}"))
            .unwrap_or_default();
        let _ = writeln!(out, "folder {}{mode}", escaped(&folder.path));
        if let Some(problem) = &folder.problem {
            let _ = writeln!(out, "  {problem}");
            continue;
        }
        if folder.files.is_empty() {
            let _ = writeln!(out, "  no files");
        }
        for file in &folder.files {
            let shown = file.path.strip_prefix(&folder.path).unwrap_or(&file.path);
            let size = file
                .size
                .map(|s| format!("  {}", human_size(s)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<16}  {}{size}  ({})",
                file.action.label(),
                escaped(shown),
                escaped(&file.detail)
            );
        }
    }
    out
}

/// The report for scripts.
pub fn to_json(folders: &[ScannedFolder]) -> serde_json::Value {
    serde_json::json!({ "folders": folders })
}
