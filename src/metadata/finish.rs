//! The companion at the end of a job: it moves with its video to done/ or failed/ (keeping
//! its path relative to the watched folder, never overwriting: ` (1)` on a clash), the sidecar
//! records it (`companion`: file, format, reference, the fields applied, the ones not applied,
//! the calls after the upload and how each went), and with `result_xml = true`
//! `<video file name>.xml` is written beside the video in the FTP ingest's result format.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::result_xml::{ResultOutcome, UploadResult};
use super::{CompanionMode, CompanionRule, companion_path_for};
use crate::config::FolderSettings;
use crate::escape::escaped;
use crate::store::{Job, JobStore, Outcome};
use crate::vmpro::api::VideoMetadata;

/// What the finish needs of the folder's settings for companions.
#[derive(Debug, Clone, Default)]
pub struct CompanionFinish {
    pub rule: CompanionRule,
    pub result_xml: bool,
    /// The folder's metadata, for the result's `videoTitle`.
    pub folder_metadata: VideoMetadata,
}

impl CompanionFinish {
    /// For a job of `folder` (`None`: a folder no longer configured; nothing extra is done).
    pub fn of(folder: Option<&FolderSettings>) -> CompanionFinish {
        match folder {
            Some(folder) => CompanionFinish {
                rule: folder.companion,
                result_xml: folder.result_xml,
                folder_metadata: folder.metadata.clone(),
            },
            None => CompanionFinish::default(),
        }
    }

    fn wanted(&self) -> bool {
        self.rule.mode != CompanionMode::Off || self.result_xml
    }
}

/// After `job`'s video was moved to `dest` under `base`: moves its companion along and writes
/// the result XML. Returns the sidecar's fields to add (`companion`, `result_xml`). A failure
/// here is logged and recorded in those fields, never a reason to keep the video back: the
/// upload's outcome is already decided.
pub fn finish_companion(
    store: &JobStore,
    job: &Job,
    base: &Path,
    dest: &Path,
    finish: &CompanionFinish,
    stop: &CancellationToken,
) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    if !finish.wanted() {
        return fields;
    }
    let stored = match store.companion(job.id) {
        Ok(stored) => stored,
        Err(err) => {
            tracing::warn!(
                job = job.id,
                "cannot read the job's companion: {}",
                crate::chain(&err)
            );
            None
        }
    };
    let companion_path = match &stored {
        Some(stored) => Some(stored.companion.path.clone()),
        // Where the video was dropped (a claimed video is elsewhere by now).
        None if finish.rule.mode != CompanionMode::Off => {
            companion_path_for(&job.folder.join(&job.rel_path))
                .or_else(|| moved_companion_in(job, base))
        }
        None => None,
    };
    if let Some(path) = &companion_path {
        let moved = match moved_before(path, job, base) {
            // An earlier finish of this job moved it, then was interrupted (a kill).
            Some(there) if !path.exists() => Ok(there),
            _ => move_companion(path, job, base, stop),
        };
        let mut record = serde_json::Map::new();
        record.insert(
            "file".into(),
            Value::from(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            ),
        );
        match moved {
            Ok(to) => {
                record.insert(
                    "moved_to".into(),
                    Value::from(to.to_string_lossy().into_owned()),
                );
            }
            Err(why) => {
                tracing::warn!(file = %escaped(&job.rel_path), "{why}");
                record.insert("moved_to".into(), Value::Null);
                record.insert("move_error".into(), Value::from(why));
            }
        }
        if let Some(stored) = &stored {
            let companion = &stored.companion;
            record.insert("format".into(), json!(companion.format));
            record.insert("reference".into(), json!(companion.reference));
            let mut applied = companion.metadata.clone();
            let not_applied = std::mem::take(&mut applied.not_applied);
            record.insert("applied".into(), json!(applied));
            record.insert("not_applied".into(), json!(not_applied));
            if !not_applied.is_empty() {
                record.insert(
                    "warning".into(),
                    Value::from(format!(
                        "{} field(s) of the companion were not applied; see not_applied",
                        not_applied.len()
                    )),
                );
            }
            record.insert(
                "calls".into(),
                json!(stored.calls.clone().unwrap_or_default()),
            );
        }
        fields.insert("companion".into(), Value::Object(record));
    }
    // `clip.mov.json` beside a video whose job XML was used (or that left without one): kept
    // in the folder it would be applied to the next `clip.mov` dropped there. It goes with
    // this video, recorded as not used.
    if finish.rule.mode != CompanionMode::Off {
        let json = super::json_companion_path(&job.folder.join(&job.rel_path));
        let used = companion_path.as_deref() == Some(json.as_path());
        let here = std::fs::symlink_metadata(&json).is_ok_and(|m| m.is_file());
        // Moved by an earlier finish of this job that was killed before the sidecar.
        let moved_earlier = (!used && !here)
            .then(|| moved_before(&json, job, base))
            .flatten();
        if !used && (here || moved_earlier.is_some()) {
            let mut record = serde_json::Map::new();
            record.insert(
                "file".into(),
                Value::from(
                    json.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ),
            );
            let why = if companion_path.is_some() {
                "not used: the job XML naming the video was used instead"
            } else {
                "not used: it was not there (or not whole) when the upload started"
            };
            record.insert("why".into(), Value::from(why));
            let moved = match moved_earlier {
                Some(there) => Ok(there),
                None => move_companion(&json, job, base, stop),
            };
            match moved {
                Ok(to) => {
                    tracing::warn!(
                        file = %escaped(&job.rel_path),
                        "the JSON companion {} was {why}; it was moved with the video to {}",
                        escaped(json.file_name().unwrap_or_default()),
                        escaped(&to)
                    );
                    record.insert(
                        "moved_to".into(),
                        Value::from(to.to_string_lossy().into_owned()),
                    );
                }
                Err(err) => {
                    tracing::warn!(file = %escaped(&job.rel_path), "the JSON companion was {why}: {err}");
                    record.insert("moved_to".into(), Value::Null);
                    record.insert("move_error".into(), Value::from(err));
                }
            }
            fields.insert("unused_companion".into(), Value::Object(record));
        }
    }
    if finish.result_xml {
        let result = upload_result(job, finish, stored.as_ref());
        match write_result_xml(dest, &result) {
            Ok(path) => {
                fields.insert(
                    "result_xml".into(),
                    Value::from(path.to_string_lossy().into_owned()),
                );
            }
            Err(err) => {
                tracing::warn!(file = %escaped(&job.rel_path), "cannot write the result XML beside {}: {err}", escaped(dest));
            }
        }
    }
    fields
}

/// Where an interrupted finish of `job` moved the companion that was at `original`: the same
/// path under `base`, put there (its ctime) after the job was detected; an older file of that
/// name is an earlier delivery's.
fn moved_before(original: &Path, job: &Job, base: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let there = base.join(original.strip_prefix(&job.folder).ok()?);
    let meta = std::fs::symlink_metadata(&there).ok()?;
    let ctime_ns = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    (meta.is_file() && ctime_ns >= job.detected_at.unix_timestamp_nanos()).then_some(there)
}

/// The companion of `job` an interrupted finish already moved to `base`, when the store has
/// none recorded (the job failed before its upload): returned as where it was in the folder.
fn moved_companion_in(job: &Job, base: &Path) -> Option<PathBuf> {
    let in_base = companion_path_for(&base.join(&job.rel_path))?;
    let original = job.folder.join(in_base.strip_prefix(base).ok()?);
    moved_before(&original, job, base).map(|_| original)
}

/// Moves the companion to `base` under its path relative to the watched folder; `Ok` with
/// where it is now (also when an earlier, interrupted finish moved it already).
fn move_companion(
    path: &Path,
    job: &Job,
    base: &Path,
    stop: &CancellationToken,
) -> Result<PathBuf, String> {
    let Ok(rel) = path.strip_prefix(&job.folder) else {
        return Err(format!(
            "the companion {} is not inside the watched folder; it was left where it is",
            escaped(path)
        ));
    };
    if !path.exists() {
        return Err(format!(
            "the companion {} was no longer there to move",
            escaped(path)
        ));
    }
    crate::finish::move_without_overwrite(path, base, rel, stop).map_err(|err| {
        format!(
            "the companion could not be moved with its video: {}",
            crate::chain(&err)
        )
    })
}

fn upload_result(
    job: &Job,
    finish: &CompanionFinish,
    stored: Option<&crate::store::JobCompanion>,
) -> UploadResult {
    let file_name = job
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let outcome = match (&job.outcome, &job.video_id) {
        (Some(Outcome::Uploaded), Some(video_id)) => {
            let metadata = match stored {
                Some(stored) => super::apply::create_metadata(
                    &finish.folder_metadata,
                    &stored.companion.metadata,
                ),
                None => finish.folder_metadata.clone(),
            };
            ResultOutcome::Success {
                video_id: video_id.clone(),
                title: metadata.title_for(&file_name),
            }
        }
        _ => ResultOutcome::Error {
            message: job
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "not uploaded".into()),
        },
    };
    UploadResult {
        file_name,
        reference: stored.and_then(|s| s.companion.reference.clone()),
        job_reference: uuid::Uuid::new_v4().to_string(),
        outcome,
    }
}

/// `<dest's name>.xml` beside it, or `<dest's name> (1).xml`… when that is taken (by the
/// moved companion `clip.mov.xml`, or an earlier delivery's result).
fn write_result_xml(dest: &Path, result: &UploadResult) -> std::io::Result<PathBuf> {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".xml");
    let wanted = dest.with_file_name(name);
    let text = result.to_xml();
    for n in 0..1000 {
        let candidate = crate::finish::numbered(&wanted, n);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
                return Ok(candidate);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::other("no free name for the result XML"))
}

/// Where a sidecar says its video's companions were moved (`companion.moved_to`, and
/// `unused_companion.moved_to`), for `retry` (which puts them back with the video) and
/// `failed` (which does not list them on their own).
pub fn companions_moved_to(sidecar: &crate::finish::Sidecar) -> Vec<PathBuf> {
    ["companion", "unused_companion"]
        .iter()
        .filter_map(|field| {
            sidecar
                .other
                .get(*field)?
                .get("moved_to")?
                .as_str()
                .map(PathBuf::from)
        })
        .collect()
}

/// The result XML the sidecar says was written beside its video (`result_xml`): hotfolder's
/// own report, like the sidecar, never a failed file of its own.
pub fn result_xml_of(sidecar: &crate::finish::Sidecar) -> Option<PathBuf> {
    sidecar.other.get("result_xml")?.as_str().map(PathBuf::from)
}
