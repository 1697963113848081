//! Per-file metadata from a *companion* beside a video (`metadata_file`): movingimage's own FTP
//! ingest job XML, accepted as it is, or `<video name>.json`.
//!
//! - [`job_xml`] reads a job XML (namespace [`JOB_NAMESPACE`]; it names its video in
//!   `source/file`, as on FTP) and [`json`] reads `clip.mov.json` for `clip.mov`.
//! - [`find_companion`] looks for a video's companion; `ready::release` holds the video back
//!   until it has come (`required`) or for `metadata_wait` (`optional`).
//! - [`apply`] turns a companion into the create call's fields and the extra calls after the
//!   upload (more channels, custom metadata, an immediate publish).
//! - [`finish`] moves the companion with its video, records it in the sidecar and writes the
//!   FTP-style result XML ([`result_xml`]).
//!
//! The JSON companion is the video's *whole* name plus `.json` (`clip.mov.json`), never
//! `clip.json`: two videos `clip.mov` and `clip.mxf` in one folder must not share one.

pub(crate) mod apply;
pub(crate) mod finish;
pub(crate) mod job_xml;
pub(crate) mod json;
pub(crate) mod result_xml;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::escape::escaped;

/// The FTP ingest's job XML namespace: only XML in it is a companion.
pub const JOB_NAMESPACE: &str = "http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/job.xsd";

/// The FTP ingest's result XML namespace.
pub const RESULT_NAMESPACE: &str =
    "http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/result.xsd";

/// A companion larger than this is refused: metadata is a few kilobytes, and a large `.xml`
/// beside media is a project file, never read whole.
pub const COMPANION_SIZE_LIMIT: u64 = 1024 * 1024;

/// `metadata_wait`'s default.
pub const DEFAULT_METADATA_WAIT: Duration = Duration::from_secs(60);

/// `metadata_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompanionMode {
    /// Companions are not looked for; every video gets the folder's metadata.
    #[default]
    Off,
    /// A complete video waits up to `metadata_wait` for a companion, then goes without.
    Optional,
    /// A video waits for its companion; none after `incomplete_after`: failed/.
    Required,
}

/// What a folder asks of companions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompanionRule {
    pub mode: CompanionMode,
    /// `metadata_wait`: how long an `optional` video waits.
    pub wait: Duration,
}

impl Default for CompanionRule {
    fn default() -> CompanionRule {
        CompanionRule {
            mode: CompanionMode::Off,
            wait: DEFAULT_METADATA_WAIT,
        }
    }
}

/// Which kind of file the companion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompanionFormat {
    JobXml,
    Json,
}

/// What a companion asks for, whatever its format: the fields hotfolder applies, and the ones
/// it read but cannot apply (each said in words, for the sidecar's warning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `None`: the folder's keywords; `Some` (also empty): these instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    /// The first goes into the create call, the others are added after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
    /// Custom metadata fields, by name (a multiselect's options joined by `,`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_metadata: BTreeMap<String, String>,
    /// Publish the video at once (`<publish/>` in a job XML, `auto_publish` in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// What the companion holds that hotfolder does not apply, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
}

/// A video's companion, read and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Companion {
    /// Where it was found (beside the video).
    pub path: PathBuf,
    pub format: CompanionFormat,
    /// The job XML's `reference` attribute (or JSON's `reference`): returned in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub metadata: FileMetadata,
}

/// Why a companion cannot be used: its video goes to failed/ with this reason.
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    #[error("the companion {} cannot be read", escaped(path))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the companion {} is {size} bytes; a companion may be at most 1 MiB",
        escaped(path)
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the job XML {} is not valid: {why}", escaped(path))]
    InvalidXml { path: PathBuf, why: String },
    #[error("the JSON companion {} is not valid: {why}", escaped(path))]
    InvalidJson { path: PathBuf, why: String },
    #[error(
        "the companion {} is not a regular file (a link, a folder, a pipe); companions are never read through a link",
        escaped(path)
    )]
    NotAFile { path: PathBuf },
    #[error(
        "two job XMLs name {}: {} and {}; a video is uploaded with one job",
        escaped(video),
        escaped(first),
        escaped(second)
    )]
    TwoJobXmls {
        video: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// What looking for a video's companion found.
#[derive(Debug)]
pub enum Search {
    /// None beside it.
    Missing,
    /// One that changed less than `settle` ago: still being written (the FTP rule is that the
    /// XML comes last; it must be whole before it is read).
    Arriving(PathBuf),
    Found(Companion),
}

/// Looks for `video`'s companion: a job XML in its folder whose `source/file` names it, else
/// `<video name>.json`. A job XML beside it that is not valid counts as its companion (and so
/// refuses the video) when its name is the video's (`clip.xml`, `clip.mov.xml`); other XML
/// (a project file, another video's job) is left alone. Blocking: reads the folder.
///
/// `settle`: a companion changed more recently than this is [`Search::Arriving`].
pub fn find_companion(
    video: &Path,
    settle: Duration,
    now: SystemTime,
) -> Result<Search, CompanionError> {
    let Some(dir) = video.parent() else {
        return Ok(Search::Missing);
    };
    let Some(video_name) = video.file_name().and_then(|n| n.to_str()) else {
        // The platform's names are text; a job XML cannot name this one.
        return Ok(Search::Missing);
    };
    let mut found: Option<Companion> = None;
    for candidate in job_xml_candidates(dir) {
        let owned_by_name = named_after(&candidate, video_name);
        let parsed = match load_job_xml(&candidate) {
            // Premiere's and Resolve's XML beside media: not ours.
            Ok(None) => continue,
            Ok(Some(parsed)) => parsed,
            Err(err) if owned_by_name => return Err(err),
            Err(_) => continue,
        };
        match parsed {
            Ok(job) if job.source_file == video_name => {
                if recently_changed(&candidate, settle, now) {
                    return Ok(Search::Arriving(candidate));
                }
                if let Some(first) = found {
                    // Two jobs for one video: which one is meant is not for hotfolder to guess.
                    return Err(CompanionError::TwoJobXmls {
                        video: video_name.to_owned(),
                        first: first.path,
                        second: candidate,
                    });
                }
                found = Some(Companion {
                    path: candidate,
                    format: CompanionFormat::JobXml,
                    reference: job.reference,
                    metadata: job.metadata,
                });
            }
            Ok(_) => {}
            // Named after the video, or naming it in <source><file> (under any name).
            Err(refused) if owned_by_name || refused.source_file.as_deref() == Some(video_name) => {
                if recently_changed(&candidate, settle, now) {
                    return Ok(Search::Arriving(candidate));
                }
                return Err(CompanionError::InvalidXml {
                    path: candidate,
                    why: refused.error.to_string(),
                });
            }
            Err(_) => {}
        }
    }
    if let Some(companion) = found {
        return Ok(Search::Found(companion));
    }
    let json_path = json_companion_path(video);
    let json_meta = std::fs::symlink_metadata(&json_path);
    if json_meta.as_ref().is_ok_and(|m| !m.is_file()) {
        // A link (or anything but a file) under the companion's name: said, never opened,
        // rather than waited for as if nothing were there.
        return Err(CompanionError::NotAFile { path: json_path });
    }
    if json_meta.is_ok_and(|m| m.is_file()) {
        if recently_changed(&json_path, settle, now) {
            return Ok(Search::Arriving(json_path));
        }
        let text = read_companion(&json_path)?;
        let parsed = json::parse(&text).map_err(|why| CompanionError::InvalidJson {
            path: json_path.clone(),
            why: why.to_string(),
        })?;
        return Ok(Search::Found(Companion {
            path: json_path,
            format: CompanionFormat::Json,
            reference: parsed.reference,
            metadata: parsed.metadata,
        }));
    }
    Ok(Search::Missing)
}

/// The companion file beside `video` whatever state it is in (for moving it with a video that
/// failed because of it): the same search as [`find_companion`], without the checks.
pub fn companion_path_for(video: &Path) -> Option<PathBuf> {
    match find_companion(video, Duration::ZERO, SystemTime::now()) {
        Ok(Search::Found(companion)) => Some(companion.path),
        Ok(Search::Arriving(path)) => Some(path),
        Ok(Search::Missing) => None,
        Err(
            CompanionError::Unreadable { path, .. }
            | CompanionError::TooLarge { path, .. }
            | CompanionError::InvalidXml { path, .. }
            | CompanionError::InvalidJson { path, .. }
            | CompanionError::NotAFile { path }
            | CompanionError::TwoJobXmls { first: path, .. },
        ) => Some(path),
    }
}

/// A job XML whose video is not beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanJobXml {
    pub path: PathBuf,
    /// The video it names (`source/file`), not there.
    pub video: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    /// A job XML, or a `<video name>.json` whose video is not beside it.
    pub format: CompanionFormat,
}

/// Job XMLs directly in `dir` that name a video not there, unchanged for `waited` (the FTP
/// rule: the video comes first, so a job XML alone this long waits for nothing). Other XML,
/// invalid job XML (it refuses the video named like it) and XML whose video is there are
/// left alone. Blocking (reads the folder).
pub fn orphan_job_xmls(dir: &Path, waited: Duration, now: SystemTime) -> Vec<OrphanJobXml> {
    use std::os::unix::fs::MetadataExt;
    let mut orphans = Vec::new();
    for candidate in job_xml_candidates(dir) {
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
            continue;
        };
        let changed = |secs: i64, nanos: i64| {
            std::time::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(secs).unwrap_or(0),
                    u32::try_from(nanos).unwrap_or(0).min(999_999_999),
                )
        };
        let last_change =
            changed(meta.ctime(), meta.ctime_nsec()).max(changed(meta.mtime(), meta.mtime_nsec()));
        if now.duration_since(last_change).unwrap_or_default() < waited {
            continue;
        }
        let Ok(Some(Ok(job))) = load_job_xml(&candidate) else {
            continue;
        };
        let video = dir.join(&job.source_file);
        // A job XML naming itself names no video.
        if std::fs::symlink_metadata(&video).is_ok() && video != candidate {
            continue;
        }
        orphans.push(OrphanJobXml {
            path: candidate,
            video,
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            format: CompanionFormat::JobXml,
        });
    }
    // `clip.mov.json` without `clip.mov`, as long: left, it would be applied to the next
    // `clip.mov` dropped there, whenever that comes (its video left before it arrived).
    for (candidate, video) in json_candidates(dir) {
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
            continue;
        };
        if now
            .duration_since(last_change_of(&meta))
            .unwrap_or_default()
            < waited
            || std::fs::symlink_metadata(&video).is_ok()
        {
            continue;
        }
        orphans.push(OrphanJobXml {
            path: candidate,
            video,
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            format: CompanionFormat::Json,
        });
    }
    orphans
}

/// The later of a file's mtime and ctime.
fn last_change_of(meta: &std::fs::Metadata) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    let changed = |secs: i64, nanos: i64| {
        std::time::UNIX_EPOCH
            + Duration::new(
                u64::try_from(secs).unwrap_or(0),
                u32::try_from(nanos).unwrap_or(0).min(999_999_999),
            )
    };
    changed(meta.ctime(), meta.ctime_nsec()).max(changed(meta.mtime(), meta.mtime_nsec()))
}

/// Regular files `<video name>.json` directly in `dir` (not hidden), with the video each is
/// for: only a name with an extension before `.json` (`clip.mov.json`), so a `settings.json`
/// is not taken for a companion.
fn json_candidates(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, PathBuf)> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| {
            let name = entry.file_name();
            let video = name.to_str()?.strip_suffix(".json")?;
            let (stem, extension) = video.rsplit_once('.')?;
            if name.to_str()?.starts_with('.') || stem.is_empty() || extension.is_empty() {
                return None;
            }
            Some((entry.path(), dir.join(video)))
        })
        .collect();
    found.sort();
    found
}

/// `clip.mov.json` for `clip.mov`.
pub fn json_companion_path(video: &Path) -> PathBuf {
    let mut name = video.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    video.with_file_name(name)
}

/// Names added to a folder's `exclude` when companions are on: a companion is never uploaded
/// as a video, even where `include` is widened to `*`.
pub const COMPANION_PATTERNS: &[&str] = &["*.xml", "*.json"];

/// What a complete video waits for, by its folder's [`CompanionRule`].
#[derive(Debug)]
pub enum CompanionWait {
    /// Queue it; the words for the sidecar's detection rule.
    Go(String),
    /// Look again later.
    Wait {
        why: String,
        gives_up_at: Option<SystemTime>,
    },
    /// To failed/ with this reason.
    Refuse { message: String, meaning: String },
}

/// Applies `rule` to the complete video at `video`: `since` is when it last changed (or was
/// first seen as it is), `settle` how long a companion must be unchanged to count as whole,
/// `incomplete_after` how long `required` waits. Blocking (reads the folder).
pub fn wait_for_companion(
    video: &Path,
    rule: CompanionRule,
    settle: Duration,
    incomplete_after: Duration,
    since: SystemTime,
    now: SystemTime,
) -> CompanionWait {
    if rule.mode == CompanionMode::Off {
        return CompanionWait::Go(String::new());
    }
    let name_of = |path: &Path| escaped(path.file_name().unwrap_or_default()).to_string();
    match find_companion(video, settle, now) {
        Ok(Search::Found(companion)) => CompanionWait::Go(format!(
            "companion {} ({})",
            name_of(&companion.path),
            match companion.format {
                CompanionFormat::JobXml => "job XML",
                CompanionFormat::Json => "JSON",
            }
        )),
        Ok(Search::Arriving(path)) => CompanionWait::Wait {
            why: format!(
                "its companion {} is still being written",
                name_of(&path)
            ),
            gives_up_at: None,
        },
        Ok(Search::Missing) => {
            let (limit, gives_up_at) = match rule.mode {
                CompanionMode::Required => (incomplete_after, since + incomplete_after),
                _ => (rule.wait, since + rule.wait),
            };
            if now < gives_up_at {
                return CompanionWait::Wait {
                    why: format!(
                        "waiting for its companion (a job XML naming it, or {}; metadata_file = \"{}\")",
                        name_of(&json_companion_path(video)),
                        if rule.mode == CompanionMode::Required { "required" } else { "optional" }
                    ),
                    gives_up_at: Some(gives_up_at),
                };
            }
            let waited = humantime::format_duration(limit);
            // A job XML under the video's name that is a link (or a pipe): never opened, and
            // said, so that "no companion" does not look like a lie.
            let skipped: String = unread_named_after(video)
                .iter()
                .map(|path| {
                    format!(
                        "; {} is not a regular file (a link?) and was not read",
                        name_of(path)
                    )
                })
                .collect();
            match rule.mode {
                CompanionMode::Required => CompanionWait::Refuse {
                    message: format!("no companion arrived within {waited}{skipped}"),
                    meaning: format!(
                        "metadata_file = \"required\": a video is uploaded only with its job XML or {}; none came within incomplete_after ({waited}). Deliver the companion, then move the video back with `hotfolder retry`",
                        name_of(&json_companion_path(video))
                    ),
                },
                _ => CompanionWait::Go(format!(
                    "no companion within metadata_wait ({waited}): the folder's metadata{skipped}"
                )),
            }
        }
        Err(err) => CompanionWait::Refuse {
            message: crate::chain(&err),
            meaning: "the companion was checked before anything was created, as the FTP ingest checks a job XML; fix it, then move the video and its companion back with `hotfolder retry`".into(),
        },
    }
}

/// Regular `.xml` files in `dir` (not hidden), sorted so the choice is the same every time.
fn job_xml_candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.to_ascii_lowercase().ends_with(".xml"))
        })
        .collect();
    found.sort();
    found
}

/// `.xml` entries named after `video` ([`named_after`]) that are not regular files, which
/// [`job_xml_candidates`] leaves out.
fn unread_named_after(video: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(video_name)) =
        (video.parent(), video.file_name().and_then(|n| n.to_str()))
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_file()))
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".xml"))
                && named_after(path, video_name)
        })
        .collect();
    found.sort();
    found
}

/// `clip.xml` or `clip.mov.xml` for `clip.mov`.
fn named_after(xml: &Path, video_name: &str) -> bool {
    let Some(stem) = xml.file_stem().and_then(|s| s.to_str()) else {
        return false;
    };
    let video_stem = Path::new(video_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(video_name);
    stem == video_name || stem == video_stem
}

/// What a file's metadata says of its content: the same key, the same bytes (a rewrite
/// changes the size, the mtime or the ctime; a replacement the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(FileKey {
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    })
}

/// A job XML read: `None` when it is not in the job namespace (not ours).
type JobXmlRead = Option<Result<job_xml::JobXml, job_xml::Refused>>;

/// Job XMLs already read, by path and [`FileKey`]: every video's check and every orphan sweep
/// looks at every XML of its folder, and a file is read and parsed again only when it changed.
static JOB_XML_CACHE: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<PathBuf, (FileKey, JobXmlRead)>>,
> = std::sync::LazyLock::new(Default::default);

/// How many job XMLs the cache holds before it starts again.
const JOB_XML_CACHE_SIZE: usize = 4096;

/// Reads and parses the XML at `path`, at most once per change (see [`JOB_XML_CACHE`]).
fn load_job_xml(path: &Path) -> Result<JobXmlRead, CompanionError> {
    let before = file_key(path);
    if let Some(key) = before {
        let cache = JOB_XML_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_key, read)) = cache.get(path)
            && *cached_key == key
        {
            return Ok(read.clone());
        }
    }
    let text = read_companion(path)?;
    // The namespace named somewhere (a comment, an attribute of another tool's XML) does not
    // make a job XML: only a root element in it does.
    let read = if text.contains(JOB_NAMESPACE) {
        match job_xml::parse_detailed(&text) {
            Err(refused) if matches!(refused.error, job_xml::JobXmlError::NotAJob(_)) => None,
            parsed => Some(parsed),
        }
    } else {
        None
    };
    // Kept only if the file did not change while it was read.
    if let Some(key) = before
        && file_key(path) == Some(key)
    {
        let mut cache = JOB_XML_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= JOB_XML_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (key, read.clone()));
    }
    Ok(read)
}

/// Reads a companion of at most [`COMPANION_SIZE_LIMIT`] bytes as UTF-8 text.
fn read_companion(path: &Path) -> Result<String, CompanionError> {
    let unreadable = |source| CompanionError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > COMPANION_SIZE_LIMIT {
        return Err(CompanionError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut bytes = Vec::new();
    file.take(COMPANION_SIZE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    String::from_utf8(bytes).map_err(|err| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({err})"),
        ))
    })
}

fn recently_changed(path: &Path, settle: Duration, now: SystemTime) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|mtime| now.duration_since(mtime).unwrap_or_default() < settle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const LATER: Duration = Duration::from_secs(3600);

    fn find(video: &Path) -> Result<Search, CompanionError> {
        find_companion(video, Duration::from_secs(1), SystemTime::now() + LATER)
    }

    fn job(file: &str) -> String {
        format!(
            r#"<job xmlns="{JOB_NAMESPACE}" reference="r1"><title>T</title><source><file>{file}</file></source></job>"#
        )
    }

    #[test]
    fn metadata_job_xml_under_any_name_is_found_by_its_source_file() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "video001.mp4", "x");
        write(dir.path(), "premiere.xml", "<xmeml><sequence/></xmeml>");
        write(dir.path(), "other.xml", &job("other.mp4"));
        let xml = write(dir.path(), "upload-job.xml", &job("video001.mp4"));
        match find(&video).unwrap() {
            Search::Found(companion) => {
                assert_eq!(companion.path, xml);
                assert_eq!(companion.reference.as_deref(), Some("r1"));
                assert_eq!(companion.metadata.title.as_deref(), Some("T"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_json_companion_is_the_whole_name_plus_json() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        write(dir.path(), "clip.json", r#"{"title": "not this one"}"#);
        assert!(matches!(find(&video).unwrap(), Search::Missing));
        write(dir.path(), "clip.mov.json", r#"{"title": "this one"}"#);
        match find(&video).unwrap() {
            Search::Found(c) => assert_eq!(c.metadata.title.as_deref(), Some("this one")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_a_companion_just_written_is_still_arriving() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        write(dir.path(), "clip.mov.json", "{");
        let now = SystemTime::now();
        assert!(matches!(
            find_companion(&video, Duration::from_secs(60), now).unwrap(),
            Search::Arriving(_)
        ));
    }

    #[test]
    fn metadata_an_invalid_job_xml_named_after_the_video_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        write(
            dir.path(),
            "clip.xml",
            &format!(r#"<job xmlns="{JOB_NAMESPACE}"><title>no source</title></job>"#),
        );
        let err = find(&video).unwrap_err();
        assert!(err.to_string().contains("source"), "{err}");
        // Named after something else, it is left alone.
        let other = write(dir.path(), "other.mov", "x");
        assert!(matches!(find(&other).unwrap(), Search::Missing));
    }

    #[test]
    fn metadata_a_job_xml_alone_long_enough_is_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "here.mov", "x");
        write(dir.path(), "here.xml", &job("here.mov"));
        let alone = write(dir.path(), "alone.xml", &job("gone.mov"));
        write(dir.path(), "project.xml", "<xmeml/>");
        let now = SystemTime::now();
        assert!(orphan_job_xmls(dir.path(), LATER, now).is_empty());
        let orphans = orphan_job_xmls(dir.path(), Duration::from_secs(1), now + LATER);
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!(orphans[0].path, alone);
        assert_eq!(orphans[0].video, dir.path().join("gone.mov"));
        // A JSON companion without its video too; a settings.json is no companion.
        write(dir.path(), "here.mov.json", "{}");
        let alone_json = write(dir.path(), "left.mov.json", "{}");
        write(dir.path(), "settings.json", "{}");
        let orphans = orphan_job_xmls(dir.path(), Duration::from_secs(1), now + LATER);
        let found: Vec<_> = orphans.iter().map(|o| (&o.path, o.format)).collect();
        assert_eq!(
            found,
            vec![
                (&alone, CompanionFormat::JobXml),
                (&alone_json, CompanionFormat::Json)
            ]
        );
    }

    #[test]
    fn metadata_optional_waits_metadata_wait_and_required_waits_incomplete_after() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        let since = SystemTime::now();
        let minute = Duration::from_secs(60);
        let day = Duration::from_secs(86_400);
        let optional = CompanionRule {
            mode: CompanionMode::Optional,
            wait: minute,
        };
        let required = CompanionRule {
            mode: CompanionMode::Required,
            wait: minute,
        };
        let at = |rule, after| {
            wait_for_companion(&video, rule, Duration::ZERO, day, since, since + after)
        };
        match at(optional, Duration::from_secs(59)) {
            CompanionWait::Wait { gives_up_at, why } => {
                assert_eq!(gives_up_at, Some(since + minute));
                assert!(why.contains("clip.mov.json"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        match at(optional, minute) {
            CompanionWait::Go(signal) => assert!(signal.contains("folder's metadata"), "{signal}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(at(required, minute), CompanionWait::Wait { .. }));
        match at(required, day) {
            CompanionWait::Refuse { message, .. } => {
                assert_eq!(message, "no companion arrived within 1day")
            }
            other => panic!("{other:?}"),
        }
        write(dir.path(), "clip.mov.json", r#"{"title": "t"}"#);
        match at(required, Duration::from_secs(3600)) {
            CompanionWait::Go(signal) => {
                assert!(signal.contains("clip.mov.json (JSON)"), "{signal}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_a_job_xml_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        let xml = write(dir.path(), "clip.xml", &job("clip.mov"));
        let title = |search: Search| match search {
            Search::Found(c) => c.metadata.title,
            other => panic!("{other:?}"),
        };
        assert_eq!(title(find(&video).unwrap()).as_deref(), Some("T"));
        // Cached: the same answer again.
        assert_eq!(title(find(&video).unwrap()).as_deref(), Some("T"));
        // Rewritten (same size, another title): read again.
        std::fs::write(&xml, job("clip.mov").replace("<title>T<", "<title>U<")).unwrap();
        assert_eq!(title(find(&video).unwrap()).as_deref(), Some("U"));
        std::fs::write(&xml, job("else.mov")).unwrap();
        assert!(matches!(find(&video).unwrap(), Search::Missing));
    }

    #[test]
    fn metadata_two_job_xmls_for_one_video_refuse_it_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "j.mp4", "x");
        write(dir.path(), "j1.xml", &job("j.mp4"));
        write(dir.path(), "j2.xml", &job("j.mp4"));
        let err = find(&video).unwrap_err().to_string();
        assert!(
            err.contains("two job XMLs name j.mp4")
                && err.contains("j1.xml")
                && err.contains("j2.xml"),
            "{err}"
        );
    }

    #[test]
    fn metadata_an_invalid_job_xml_under_another_name_naming_the_video_refuses_it_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "gv.mp4", "x");
        let bad = write(
            dir.path(),
            "upload-job.xml",
            &format!(
                r#"<job xmlns="{JOB_NAMESPACE}"><groupId>-5</groupId><source><file>gv.mp4</file></source></job>"#
            ),
        );
        let err = find(&video).unwrap_err();
        assert!(
            matches!(&err, CompanionError::InvalidXml { path, .. } if *path == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains("groupId"), "{err}");
        assert_eq!(companion_path_for(&video), Some(bad));
        // Another video is not refused for it.
        let other = write(dir.path(), "other.mp4", "x");
        assert!(matches!(find(&other).unwrap(), Search::Missing));
    }

    #[test]
    fn metadata_a_linked_json_companion_is_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "g.mp4", "x");
        let target = write(dir.path(), "elsewhere.txt", r#"{"title": "t"}"#);
        std::os::unix::fs::symlink(&target, dir.path().join("g.mp4.json")).unwrap();
        let err = find(&video).unwrap_err();
        assert!(matches!(err, CompanionError::NotAFile { .. }), "{err:?}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn metadata_a_linked_job_xml_under_the_videos_name_is_named_when_no_companion_came() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "h.mp4", "x");
        let target = write(dir.path(), "elsewhere.txt", &job("h.mp4"));
        std::os::unix::fs::symlink(&target, dir.path().join("h.xml")).unwrap();
        let since = SystemTime::now() - Duration::from_secs(7200);
        let rule = CompanionRule {
            mode: CompanionMode::Required,
            ..CompanionRule::default()
        };
        let wait = wait_for_companion(
            &video,
            rule,
            Duration::ZERO,
            Duration::from_secs(60),
            since,
            SystemTime::now(),
        );
        let CompanionWait::Refuse { message, .. } = wait else {
            panic!("refused after incomplete_after: {wait:?}");
        };
        assert_eq!(
            message,
            "no companion arrived within 1m; h.xml is not a regular file (a link?) and was not read"
        );
    }

    #[test]
    fn metadata_a_job_xml_naming_itself_is_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let own = write(dir.path(), "self.xml", &job("self.xml"));
        let orphans = orphan_job_xmls(
            dir.path(),
            Duration::from_secs(1),
            SystemTime::now() + LATER,
        );
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!(orphans[0].path, own);
    }

    #[test]
    fn metadata_a_companion_over_one_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let video = write(dir.path(), "clip.mov", "x");
        write(dir.path(), "clip.mov.json", &" ".repeat(1024 * 1024 + 1));
        assert!(matches!(
            find(&video).unwrap_err(),
            CompanionError::TooLarge { .. }
        ));
    }
}
