//! The files in failed/ for `hotfolder failed` (with their reasons, newest first) and
//! `hotfolder retry` (back into their watched folder, so the agent tries them again).
//!
//! The reasons come from each file's sidecar, and from the state store for a file whose
//! sidecar is missing. A retried file goes back under the sub-folder path it came from, never
//! over another file (a numbered name, as done/ and failed/ get), moved without following a
//! link; its sidecar is removed afterwards, so it does not sit in failed/ alone (the store
//! keeps the upload's log, and the next try writes a new sidecar).
//!
//! Several folders may share one failed/: the folder a file goes back to is the one it was
//! dropped in, as its sidecar (`folder`) or the store's record of its job says, never simply
//! the first folder with that failed/ (which sent files to the wrong VideoManager). Where
//! neither says, `retry` refuses the file and names the folders it could have come from.
//!
//! A path given to `retry` may reach failed/ through links above it (`/srv` a link to
//! `/mnt/nas`), or with `..` in it: it is resolved to failed/ as the config resolved it. Below
//! failed/ no link is followed (see `nofollow`).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::{FolderSettings, Settings};
use crate::escape::escaped;
use crate::finish::{SIDECAR_SUFFIX, Sidecar, TEMP_SUFFIX, move_without_overwrite, sidecar_path};
use crate::store::{Job, JobStore};

/// One file in a failed/ folder (or, with `file_missing`, only its sidecar).
#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    /// Where it is now. Paths are JSON text: a name that is not valid UTF-8 is shown with
    /// U+FFFD (as in the sidecar's `file`), rather than failing the whole list.
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    /// Its path under failed/: where it goes back to under the watched folder.
    #[serde(serialize_with = "lossy")]
    pub rel_path: PathBuf,
    /// The watched folder it came from; `None` when several folders share its failed/ and
    /// neither its sidecar nor the state store says which (`candidates` names them).
    #[serde(serialize_with = "lossy_option")]
    pub folder: Option<PathBuf>,
    /// The folders that share its failed/, when `folder` cannot be told.
    #[serde(serialize_with = "lossy_list", skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<PathBuf>,
    /// When its upload ended (the sidecar's `finished_at`, else the store's); `None` when
    /// neither says.
    #[serde(with = "crate::store::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
    /// Why, in the sidecar's words: the status, the server's message and what it means.
    pub reason: String,
    /// The HTTP status of the answer that ended the upload, if there was one.
    pub status: Option<u16>,
    pub video_id: Option<String>,
    /// The sidecar beside it, if there is one.
    #[serde(serialize_with = "lossy_option")]
    pub sidecar: Option<PathBuf>,
    /// Only the sidecar is in failed/: the file itself was moved or deleted by someone.
    /// Nothing to retry; the sidecar can be deleted once nobody needs its record.
    pub file_missing: bool,
}

fn lossy<S: serde::Serializer>(path: &Path, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(&path.to_string_lossy())
}

fn lossy_option<S: serde::Serializer>(path: &Option<PathBuf>, to: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => lossy(path, to),
        None => to.serialize_none(),
    }
}

fn lossy_list<S: serde::Serializer>(paths: &[PathBuf], to: S) -> Result<S::Ok, S::Error> {
    to.collect_seq(paths.iter().map(|path| path.to_string_lossy()))
}

/// Every file in every folder's failed/ (a failed/ shared by several folders once), newest
/// first, files without a time last; sidecars whose file is gone among them.
pub fn list(settings: &Settings, store: Option<&JobStore>) -> Vec<FailedFile> {
    let mut files = Vec::new();
    let mut seen: Vec<&Path> = Vec::new();
    for folder in &settings.folders {
        let failed_dir = folder.failed_dir.as_path();
        if seen.contains(&failed_dir) {
            continue;
        }
        seen.push(failed_dir);
        let mut found = Found::default();
        walk(failed_dir, &mut found);
        let sidecars_of_files: HashSet<PathBuf> =
            found.files.iter().map(|f| sidecar_path(f)).collect();
        // A video's companion (`metadata_file`) and its result XML are listed with it, not as
        // failures of their own.
        let companions: HashSet<PathBuf> = sidecars_of_files
            .iter()
            .filter_map(|sidecar| read_sidecar(sidecar))
            .flat_map(|sidecar| {
                let mut files = crate::metadata::finish::companions_moved_to(&sidecar);
                files.extend(crate::metadata::finish::result_xml_of(&sidecar));
                files
            })
            .collect();
        for path in found.files {
            if companions.contains(&path) {
                continue;
            }
            files.push(describe(settings, failed_dir, path, store));
        }
        for sidecar in found.sidecars {
            if !sidecars_of_files.contains(&sidecar)
                && let Some(orphan) = describe_orphan(settings, failed_dir, sidecar)
            {
                files.push(orphan);
            }
        }
    }
    files.sort_by(|a, b| b.failed_at.cmp(&a.failed_at).then(a.path.cmp(&b.path)));
    files
}

/// What a walk of failed/ found.
#[derive(Default)]
struct Found {
    /// Regular files that are not ours (sidecars, temp files).
    files: Vec<PathBuf>,
    /// Sidecars (regular files only), to find those whose file is gone.
    sidecars: Vec<PathBuf>,
}

/// The regular files under `dir`; links are not followed (a link to a folder is not walked
/// into, a link to a file not listed).
fn walk(dir: &Path, out: &mut Found) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            walk(&path, out);
        } else if !kind.is_file() || is_temp(&name) {
            continue;
        } else if name.ends_with(SIDECAR_SUFFIX) {
            out.sidecars.push(path);
        } else {
            out.files.push(path);
        }
    }
}

/// A temp file of a move or sidecar write in progress.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

fn read_sidecar(path: &Path) -> Option<Sidecar> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<Sidecar>(&bytes).ok()
}

fn rel_under(failed_dir: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(failed_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(path.file_name().unwrap_or_default()))
}

fn describe(
    settings: &Settings,
    failed_dir: &Path,
    path: PathBuf,
    store: Option<&JobStore>,
) -> FailedFile {
    let rel_path = rel_under(failed_dir, &path);
    let sidecar_at = sidecar_path(&path);
    let sidecar = read_sidecar(&sidecar_at);
    // The store gives the reason where there is no sidecar, and the folder always: it wins
    // over a sidecar's (see `source_of`), as `retry` decides.
    let job = store.and_then(|store| store.job_moved_to(&path).ok().flatten());
    let (failed_at, error, video_id) = match (&sidecar, &job) {
        (Some(sidecar), _) => (
            sidecar.finished_at,
            sidecar.error.clone(),
            sidecar.video_id.clone(),
        ),
        (None, Some(job)) => (job.finished_at, job.error.clone(), job.video_id.clone()),
        (None, None) => (None, None, None),
    };
    let reason = match &error {
        Some(error) => {
            let status = error.status.map(|s| format!("{s} ")).unwrap_or_default();
            format!("{status}{}", error.in_words())
        }
        None if sidecar.is_some() => "the sidecar gives no reason".to_owned(),
        None => "no sidecar, and the state store has no record of it".to_owned(),
    };
    let Source {
        folder, candidates, ..
    } = source_of(settings, failed_dir, sidecar.as_ref(), job.as_ref());
    FailedFile {
        rel_path,
        folder,
        candidates,
        failed_at,
        reason,
        status: error.and_then(|e| e.status),
        video_id,
        sidecar: sidecar.is_some().then_some(sidecar_at),
        file_missing: false,
        path,
    }
}

/// A sidecar in failed/ whose file is gone; `None` when something else (a link, a folder) is
/// at the file's name.
fn describe_orphan(
    settings: &Settings,
    failed_dir: &Path,
    sidecar_at: PathBuf,
) -> Option<FailedFile> {
    let sidecar = read_sidecar(&sidecar_at);
    let name = sidecar_at.file_name()?.to_string_lossy().into_owned();
    let stripped = sidecar_at.with_file_name(name.strip_suffix(SIDECAR_SUFFIX)?);
    // A long name's sidecar is shortened with a hash: then the sidecar's own `file` names it.
    let path = match &sidecar {
        Some(sidecar) if sidecar_path(&stripped) != sidecar_at => {
            sidecar_at.with_file_name(&sidecar.file)
        }
        _ => stripped,
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        return None;
    }
    let said = sidecar
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .map(|e| format!("; it failed with: {}", e.message))
        .unwrap_or_default();
    let Source {
        folder, candidates, ..
    } = source_of(settings, failed_dir, sidecar.as_ref(), None);
    Some(FailedFile {
        rel_path: rel_under(failed_dir, &path),
        folder,
        candidates,
        failed_at: sidecar.as_ref().and_then(|s| s.finished_at),
        reason: format!(
            "only its sidecar is in failed/: the file was moved or deleted by someone{said}"
        ),
        status: sidecar.as_ref().and_then(|s| s.error.as_ref()?.status),
        video_id: sidecar.as_ref().and_then(|s| s.video_id.clone()),
        sidecar: Some(sidecar_at),
        file_missing: true,
        path,
    })
}

/// Where a file in failed/ goes back to, as [`source_of`] tells it.
struct Source {
    /// `None` when it cannot be told.
    folder: Option<PathBuf>,
    /// The folders that share its failed/, when `folder` cannot be told.
    candidates: Vec<PathBuf>,
    /// Why it cannot be told; or, when it can, that the sidecar said otherwise.
    note: Option<String>,
}

/// The watched folder a file in `failed_dir` came from. What was recorded decides: the
/// store's job, else the sidecar (which can be edited by hand, so the store wins when they
/// disagree); a recorded folder counts only while it is configured with this failed/, and is
/// never replaced by a guess (another folder would upload into another VideoManager). With
/// nothing recorded, the only folder whose failed/ this is.
fn source_of(
    settings: &Settings,
    failed_dir: &Path,
    sidecar: Option<&Sidecar>,
    job: Option<&Job>,
) -> Source {
    let sharing: Vec<PathBuf> = settings
        .folders
        .iter()
        .filter(|f| f.failed_dir == failed_dir)
        .map(|f| f.path.clone())
        .collect();
    let listed = || {
        if sharing.is_empty() {
            "no watched folder".to_owned()
        } else {
            sharing
                .iter()
                .map(|c| escaped(c).to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        }
    };
    // The sidecar has the folder as text (U+FFFD for bytes that are not UTF-8).
    let from_sidecar = sidecar.and_then(|s| s.folder.clone());
    let from_job = job.map(|job| job.folder.clone());
    let (recorded, by, disagreement) = match (&from_job, &from_sidecar) {
        (Some(folder), Some(named)) if folder.to_string_lossy() != named.as_str() => (
            folder.to_string_lossy().into_owned(),
            "the state store",
            Some(format!(
                "its sidecar says it came from {} but the state store says {}; the store is trusted (a sidecar can be edited by hand)",
                escaped(named.as_str()),
                escaped(folder)
            )),
        ),
        (Some(folder), _) => (
            folder.to_string_lossy().into_owned(),
            "the state store",
            None,
        ),
        (None, Some(named)) => (named.clone(), "its sidecar", None),
        (None, None) => {
            return match sharing.as_slice() {
                [only] => Source {
                    folder: Some(only.clone()),
                    candidates: Vec::new(),
                    note: None,
                },
                _ => Source {
                    folder: None,
                    note: Some(format!(
                        "{} is the failed_dir of {}, and neither its sidecar nor the state store says which",
                        escaped(failed_dir),
                        listed()
                    )),
                    candidates: sharing,
                },
            };
        }
    };
    let configured: Vec<&FolderSettings> = settings
        .folders
        .iter()
        .filter(|f| f.path.to_string_lossy() == recorded)
        .collect();
    let refused = |why: String| {
        let why = match &disagreement {
            Some(said) => format!("{said}; {why}"),
            None => why,
        };
        Source {
            folder: None,
            candidates: sharing.clone(),
            note: Some(why),
        }
    };
    match configured.as_slice() {
        [folder] if folder.failed_dir == failed_dir => Source {
            folder: Some(folder.path.clone()),
            candidates: Vec::new(),
            note: disagreement.clone(),
        },
        [folder] => refused(format!(
            "{by} says it came from {}, whose failed_dir is now {}, not {} (the failed_dir of {})",
            escaped(&folder.path),
            escaped(&folder.failed_dir),
            escaped(failed_dir),
            listed()
        )),
        _ => refused(format!(
            "{by} says it came from {}, which is not a configured folder any more ({} is the failed_dir of {})",
            escaped(recorded.as_str()),
            escaped(failed_dir),
            listed()
        )),
    }
}

/// Why a file could not be moved back.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("{} is not in the failed/ folder of any watched folder ({})", escaped(.path), .failed_dirs)]
    NotInFailed { path: PathBuf, failed_dirs: String },
    #[error(
        "{} has `..` after a folder that is a symbolic link or does not exist; give the file's path in {} without `..`",
        escaped(.path),
        escaped(.failed_dir)
    )]
    ParentComponent { path: PathBuf, failed_dir: PathBuf },
    #[error("{} is a sidecar; give the file it belongs to", escaped(.path))]
    Sidecar { path: PathBuf },
    #[error("{} is not a regular file (links are not followed, folders not moved)", escaped(.path))]
    NotAFile { path: PathBuf },
    #[error("{} does not exist", escaped(.path))]
    Missing { path: PathBuf },
    #[error(
        "cannot tell which watched folder {} came from: {why}; move it back into the right one by hand",
        escaped(.path)
    )]
    UnknownFolder { path: PathBuf, why: String },
    #[error(transparent)]
    Move(#[from] crate::finish::FinishError),
}

/// What [`retry`] did.
pub struct Retried {
    /// Where the file is now, in the watched folder.
    pub to: PathBuf,
    /// Whether it got a numbered name because its own was taken.
    pub renamed: bool,
    /// The sidecar that was removed, or why it could not be.
    pub sidecar: Result<Option<PathBuf>, String>,
    /// What the user should know about where it went: its sidecar named another folder.
    pub note: Option<String>,
}

/// Moves the failed file `path` back into the watched folder it came from (see the module's
/// note), under the path it has below failed/ (never over another file), then removes its
/// sidecar. `store` (read-only) tells where a file came from when its sidecar does not.
pub fn retry(
    settings: &Settings,
    store: Option<&JobStore>,
    path: &Path,
) -> Result<Retried, RetryError> {
    let given = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (failed_dir, rel_path) = locate(settings, &given)?;
    let path = failed_dir.join(&rel_path);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.ends_with(SIDECAR_SUFFIX) {
        return Err(RetryError::Sidecar { path: given });
    }
    match crate::nofollow::lstat(&path) {
        Ok(entry) if entry.skip.is_none() => {}
        Err(crate::nofollow::NoFollowError::Missing { .. }) => {
            return Err(RetryError::Missing { path: given });
        }
        _ => return Err(RetryError::NotAFile { path: given }),
    }
    let sidecar_at = sidecar_path(&path);
    let sidecar = read_sidecar(&sidecar_at);
    // Asked even when the sidecar names a folder: the store wins if they disagree.
    let job = store.and_then(|store| store.job_moved_to(&path).ok().flatten());
    let source = source_of(settings, &failed_dir, sidecar.as_ref(), job.as_ref());
    let Some(folder) = source.folder else {
        return Err(RetryError::UnknownFolder {
            path: given,
            why: source.note.unwrap_or_default(),
        });
    };
    let to = move_without_overwrite(&path, &folder, &rel_path, &CancellationToken::new())?;
    let mut note = source.note;
    // Its companion goes back with it, or the video would wait for one that is not there.
    let companions = sidecar
        .as_ref()
        .map(crate::metadata::finish::companions_moved_to)
        .unwrap_or_default();
    for companion in companions {
        if !(companion.starts_with(&failed_dir) && companion.exists()) {
            continue;
        }
        let Ok(companion_rel) = companion.strip_prefix(&failed_dir) else {
            continue;
        };
        let back = move_without_overwrite(
            &companion,
            &folder,
            companion_rel,
            &CancellationToken::new(),
        );
        let said = match back {
            Ok(to) => format!("its companion went back too, as {}", escaped(&to)),
            Err(err) => format!(
                "its companion {} could not be moved back ({}); move it beside the video by hand",
                escaped(&companion),
                crate::chain(&err)
            ),
        };
        note = Some(match note {
            Some(before) => format!("{before}; {said}"),
            None => said,
        });
    }
    // The result XML reported this failure; it goes with the sidecar.
    if let Some(result) = sidecar
        .as_ref()
        .and_then(crate::metadata::finish::result_xml_of)
        .filter(|result| result.starts_with(&failed_dir))
        && let Err(err) = std::fs::remove_file(&result)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        let said = format!("its result XML {} stays: {err}", escaped(&result));
        note = Some(match note {
            Some(before) => format!("{before}; {said}"),
            None => said,
        });
    }
    let sidecar = match std::fs::remove_file(&sidecar_at) {
        Ok(()) => Ok(Some(sidecar_at)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("its sidecar {} stays: {err}", escaped(&sidecar_at))),
    };
    Ok(Retried {
        note,
        renamed: to != folder.join(&rel_path),
        to,
        sidecar,
    })
}

/// The failed/ folder `path` is in (as the config resolved it) and the path below it. The
/// folders above failed/ may be reached through links, or named with `..`: each ancestor of
/// the path is resolved until one is a failed/; what is below it is used as given, and a link
/// there is refused where the file is looked at, never followed.
fn locate(settings: &Settings, path: &Path) -> Result<(PathBuf, PathBuf), RetryError> {
    let failed_dirs: Vec<&Path> = settings
        .folders
        .iter()
        .map(|f| f.failed_dir.as_path())
        .collect();
    let plain = |rel: &Path| rel.components().all(|c| matches!(c, Component::Normal(_)));
    // The usual case, and what `retry --all` passes: the path as the config has it.
    let found = failed_dirs
        .iter()
        .find_map(|dir| {
            let rel = path.strip_prefix(dir).ok()?;
            plain(rel).then(|| (dir.to_path_buf(), rel.to_path_buf()))
        })
        .or_else(|| {
            path.ancestors().skip(1).find_map(|ancestor| {
                let resolved = std::fs::canonicalize(ancestor).ok()?;
                let dir = failed_dirs.iter().find(|dir| **dir == resolved)?;
                let rel = path.strip_prefix(ancestor).ok()?;
                Some((dir.to_path_buf(), rel.to_path_buf()))
            })
        });
    let not_in_failed = || RetryError::NotInFailed {
        path: path.to_path_buf(),
        failed_dirs: failed_dirs
            .iter()
            .map(|dir| escaped(dir).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let Some((failed_dir, rel)) = found else {
        return Err(not_in_failed());
    };
    if rel.as_os_str().is_empty() {
        return Err(RetryError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if !plain(&rel) {
        // `failed/../x.mov` is not in failed/ however it is read; other `..` is after a link
        // or a folder that does not exist, which the resolution above could not pass.
        if leaves(&rel) {
            return Err(not_in_failed());
        }
        return Err(RetryError::ParentComponent {
            path: path.to_path_buf(),
            failed_dir,
        });
    }
    Ok((failed_dir, rel))
}

/// Whether a relative path climbs above where it starts, read by its words (`a/../../b`).
fn leaves(rel: &Path) -> bool {
    let mut depth = 0usize;
    for component in rel.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            _ => {}
        }
    }
    false
}
