//! Step 3 of loading: raw values to [`Settings`]. Each key is checked and given its default,
//! paths are resolved and the password is read. A problem is recorded in [`Problems`] and
//! checking goes on, so that one run lists them all; settings come out only when there was
//! none.
//!
//! The file runs a little past 800 lines because it holds one rule per key of the config
//! file; it stays whole so that every rule, and the helpers they share (`in_range`,
//! `positive_duration`), are in one place.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::bandwidth::{Bandwidth, BandwidthPlan, BandwidthSchedule};
use crate::metadata::{CompanionMode, CompanionRule, DEFAULT_METADATA_WAIT};
use crate::vmpro::api::VideoMetadata;

use super::diagnostics::Problems;
use super::http::{HttpSettings, parse_allowed_host, parse_listen};
use super::paths::{
    canonical_prefix, default_log_dir, default_state_dir, resolve_path, systemd_log_dir,
};
use super::raw::{
    HumanDuration, RawAccount, RawAuth, RawConfig, RawFolder, RawHttp, RawLog, RawLogFormat,
    RawUpload,
};
use super::units::{MIB, format_size};
use super::{
    AccountSettings, AuthStyle, ChunkSize, DEFAULT_API_URL, DEFAULT_CLAIM_LEASE,
    DEFAULT_INCOMPLETE_AFTER, DEFAULT_KEEP_JOBS_FOR, DEFAULT_STABLE_FOR, DEFAULT_TITLE,
    DEFAULT_TOKEN_URL, EnvLookup, FolderSettings, LogFormat, LogSettings, MIN_CLAIM_LEASE,
    PasswordSource, Purpose, Settings, UploadSettings, default_exclude, default_include,
};

const MIN_CHUNK_SIZE: u64 = MIB;
const MAX_CHUNK_SIZE: u64 = 64 * MIB;
const MAX_PARALLEL: u64 = 64;
const MAX_ATTEMPTS: u64 = 100;
/// The platform's upload URL token lasts four hours; renewing later than that is renewing an
/// expired URL.
const UPLOAD_TOKEN_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// The longest `lookup_wait`: a file with a lost create-video answer waits this long.
const MAX_LOOKUP_WAIT: Duration = Duration::from_secs(3600);
pub(crate) const DEFAULT_KEEP_FILES: u64 = 14;
/// Placeholders the title template understands (substituted by the upload code).
const TITLE_PLACEHOLDERS: &[&str] = &["stem", "name"];

/// Turns raw values into settings, recording every problem; `None` if there was any.
pub(super) fn validate(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Option<Settings> {
    let account = match raw.account {
        Some(account) => validate_account(account, base, env, purpose, problems),
        None => {
            if !problems.has_problem_at("account") {
                problems.add(
                    "account",
                    "missing: the [account] table is required (username, one of \
                     password_env/password_file/password, video_manager_id)",
                );
            }
            None
        }
    };
    let upload = validate_upload(raw.upload.unwrap_or_default(), problems);
    let state = raw.state.unwrap_or_default();
    let state_dir = match state.dir {
        Some(dir) => resolve_path(base, &dir),
        None => default_state_dir(),
    };
    let keep_jobs_for = positive_duration(
        state.keep_jobs_for,
        DEFAULT_KEEP_JOBS_FOR,
        "state.keep_jobs_for",
        problems,
    );
    let log = validate_log(raw.log.unwrap_or_default(), base, problems);
    let http = raw.http.and_then(|http| validate_http(http, problems));
    let no_folder_tables = raw.folder.is_empty();
    let folders = validate_folders(raw.folder, base, purpose, keep_jobs_for, problems);
    let smtp = raw
        .smtp
        .and_then(|smtp| super::notify::validate_smtp(smtp, base, env, purpose, problems));
    let notify =
        super::notify::validate_notify(raw.notify, smtp.is_some(), base, env, purpose, problems);
    // `run` has nothing to do without a folder; `check` must say so rather than "looks good".
    // A `[folder]` written with single brackets has its own problem at this key already.
    if purpose == Purpose::Watch && no_folder_tables && !problems.has_problem_at("folder") {
        problems.add(
            "folder",
            "missing: `hotfolder run` watches the folders given in [[folder]] tables, and there \
             is none; add one, such as [[folder]] with path = \"/srv/exports\"",
        );
    }
    if !problems.list.is_empty() {
        return None;
    }
    Some(Settings {
        source: Some(source.to_path_buf()),
        account: account?,
        upload,
        state_dir,
        keep_jobs_for,
        log,
        http,
        folders,
        notify,
        smtp,
    })
}

/// `[http]`: no `listen` is no listener, as no table is.
fn validate_http(raw: RawHttp, problems: &mut Problems) -> Option<HttpSettings> {
    let mut allowed_hosts = Vec::new();
    for (i, host) in raw.allowed_hosts.unwrap_or_default().iter().enumerate() {
        match parse_allowed_host(host) {
            Ok(host) => allowed_hosts.push(host),
            Err(message) => problems.add(format!("http.allowed_hosts[{}]", i + 1), message),
        }
    }
    match parse_listen(raw.listen.as_deref()?) {
        Ok(listen) => Some(HttpSettings {
            listen,
            allowed_hosts,
        }),
        Err(message) => {
            problems.add("http.listen", message);
            None
        }
    }
}

fn validate_url(
    raw: Option<String>,
    default: &str,
    key: &str,
    problems: &mut Problems,
) -> Option<Url> {
    let text = raw.unwrap_or_else(|| default.to_owned());
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(url) => {
            problems.add(
                key,
                format!(
                    "{text:?} is a {}: URL; use http:// or https://",
                    url.scheme()
                ),
            );
            None
        }
        Err(err) => {
            problems.add(key, format!("{text:?} is not a URL ({err})"));
            None
        }
    }
}

fn validate_account(
    raw: RawAccount,
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Option<AccountSettings> {
    let api_url = validate_url(raw.api_url, DEFAULT_API_URL, "account.api_url", problems).and_then(
        |mut url| {
            if url.query().is_some() || url.fragment().is_some() {
                problems.add(
                    "account.api_url",
                    "must not have a query (?…) or fragment (#…): API paths are appended to it",
                );
                return None;
            }
            if !url.path().ends_with('/') {
                // Without it, joining "12345/videos" would replace the last path segment.
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Some(url)
        },
    );
    let token_url = validate_url(
        raw.token_url,
        DEFAULT_TOKEN_URL,
        "account.token_url",
        problems,
    );
    let auth = match raw.auth {
        Some(RawAuth::Legacy) => AuthStyle::Legacy,
        Some(RawAuth::Keycloak) | None => AuthStyle::Keycloak,
    };

    let username = match raw.username {
        Some(name) if !name.trim().is_empty() => Some(name.trim().to_owned()),
        Some(_) => {
            problems.add(
                "account.username",
                "empty: the login name of the upload account",
            );
            None
        }
        None => {
            if !problems.has_problem_at("account.username") {
                problems.add(
                    "account.username",
                    "missing: the login name of the upload account",
                );
            }
            None
        }
    };

    let password = resolve_password(
        raw.password_env,
        raw.password_file,
        raw.password,
        base,
        env,
        purpose,
        problems,
    );

    let video_manager_id = match raw.video_manager_id {
        Some(0) => {
            problems.add("account.video_manager_id", "must be greater than 0");
            None
        }
        Some(id) => Some(id),
        None => {
            if !problems.has_problem_at("account.video_manager_id") {
                problems.add(
                    "account.video_manager_id",
                    "missing: the number of the VideoManager to upload into",
                );
            }
            None
        }
    };

    let (password, password_source) = password?;
    Some(AccountSettings {
        api_url: api_url?,
        token_url: token_url?,
        auth,
        username: username?,
        password,
        password_source,
        video_manager_id: video_manager_id?,
    })
}

/// Relative done/failed dirs are read against the watched folder, like their defaults.
fn side_dir(folder: &Path, value: Option<PathBuf>, default: &str) -> PathBuf {
    match value {
        Some(dir) => resolve_path(folder, &dir),
        None => folder.join(default),
    }
}

/// The password in `path`, or what is wrong with the file. Also read again while the agent
/// runs, to notice a new password (see `vmpro::auth`).
pub(crate) fn read_password_file(path: &Path) -> Result<SecretString, String> {
    /// Far more than any password: a wrong path (a video, a device) is not read whole.
    const LIMIT: u64 = 64 * 1024;
    use std::io::Read;
    // Checked before opening: a named pipe would block the open until a writer comes.
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(format!("{} is not a regular file", path.display()));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", path.display()));
        }
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(LIMIT).read_to_end(&mut bytes))
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let Ok(mut text) = String::from_utf8(bytes) else {
        return Err(format!("{} is not UTF-8 text", path.display()));
    };
    // `echo secret > file` leaves a newline that is not part of the password.
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    if text.is_empty() {
        return Err(format!(
            "{} is empty{}",
            path.display(),
            credential_hint(path)
        ));
    }
    Ok(SecretString::from(text))
}

/// Why a credential systemd handed over can be empty: the shipped unit pairs
/// `LoadCredential=` with `SetCredential=password:\n`, a stand-in that makes a missing source
/// file not fatal to systemd (243/CREDENTIALS), so that this message can say what is missing.
fn credential_hint(path: &Path) -> &'static str {
    let from_systemd = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|dir| !dir.is_empty() && path.starts_with(&dir));
    if from_systemd {
        " (systemd found no file to load it from: create the file the unit's LoadCredential= \
         names, /etc/hotfolder/password in the Debian package, readable by root only)"
    } else {
        ""
    }
}

fn resolve_password(
    from_env: Option<String>,
    from_file: Option<PathBuf>,
    inline: Option<String>,
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Option<(SecretString, PasswordSource)> {
    let given: Vec<&str> = [
        from_env.as_ref().map(|_| "password_env"),
        from_file.as_ref().map(|_| "password_file"),
        inline.as_ref().map(|_| "password"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        problems.add(
            "account",
            format!(
                "{} are {} set: keep exactly one password source, and put a # in front of \
                 the other {}",
                given.join(" and "),
                if given.len() == 2 { "both" } else { "all" },
                if given.len() == 2 { "line" } else { "lines" },
            ),
        );
        return None;
    }
    if let Some(name) = from_env {
        let name = name.trim().to_owned();
        if name.is_empty() {
            problems.add(
                "account.password_env",
                "empty: name the environment variable that holds the password",
            );
            return None;
        }
        if matches!(purpose, Purpose::Inspect | Purpose::Status) {
            return Some((SecretString::from(String::new()), PasswordSource::Env(name)));
        }
        return match env(&name).map(OsString::into_string) {
            None => {
                problems.add(
                    "account.password_env",
                    format!("environment variable {name} is not set"),
                );
                None
            }
            Some(Err(_)) => {
                problems.add(
                    "account.password_env",
                    format!("environment variable {name} is not valid UTF-8"),
                );
                None
            }
            Some(Ok(value)) if value.is_empty() => {
                problems.add(
                    "account.password_env",
                    format!("environment variable {name} is empty"),
                );
                None
            }
            Some(Ok(value)) => Some((SecretString::from(value), PasswordSource::Env(name))),
        };
    }
    if let Some(file) = from_file {
        let path = resolve_path(base, &file);
        if matches!(purpose, Purpose::Inspect | Purpose::Status) {
            return Some((
                SecretString::from(String::new()),
                PasswordSource::File(path),
            ));
        }
        return match read_password_file(&path) {
            Ok(password) => Some((password, PasswordSource::File(path))),
            Err(problem) => {
                problems.add("account.password_file", problem);
                None
            }
        };
    }
    if let Some(password) = inline {
        if password.is_empty() {
            problems.add("account.password", "empty");
            return None;
        }
        return Some((SecretString::from(password), PasswordSource::Inline));
    }
    if !problems.has_problem_at("account.password")
        && !problems.has_problem_at("account.password_env")
        && !problems.has_problem_at("account.password_file")
    {
        problems.add(
            "account",
            "no password: set exactly one of password_env (an environment variable), \
             password_file or password",
        );
    }
    None
}

/// Checks `value` is within `range`, recording a problem naming the key if not.
fn in_range(
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    key: &str,
    problems: &mut Problems,
) -> u64 {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        problems.add(
            key,
            format!(
                "must be between {} and {}, not {value}",
                range.start(),
                range.end()
            ),
        );
    }
    value
}

fn positive_duration(
    value: Option<HumanDuration>,
    default: Duration,
    key: &str,
    problems: &mut Problems,
) -> Duration {
    let value = value.map_or(default, |d| d.0);
    if value.is_zero() {
        problems.add(key, "must be longer than 0s");
    }
    value
}

fn validate_upload(raw: RawUpload, problems: &mut Problems) -> UploadSettings {
    let defaults = UploadSettings::default();
    let chunk_size = raw.chunk_size.map_or(defaults.chunk_size, |s| s.0);
    if let ChunkSize::Fixed(bytes) = chunk_size
        && !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&bytes)
    {
        problems.add(
            "upload.chunk_size",
            format!(
                "must be \"auto\" or between 1 MiB and 64 MiB, not {}",
                format_size(bytes)
            ),
        );
    }
    let parallel = in_range(
        raw.parallel,
        defaults.parallel as u64,
        1..=MAX_PARALLEL,
        "upload.parallel",
        problems,
    );
    let max_attempts = in_range(
        raw.max_attempts,
        defaults.max_attempts.into(),
        1..=MAX_ATTEMPTS,
        "upload.max_attempts",
        problems,
    );
    let backoff_max = positive_duration(
        raw.backoff_max,
        defaults.backoff_max,
        "upload.backoff_max",
        problems,
    );
    let request_timeout = positive_duration(
        raw.request_timeout,
        defaults.request_timeout,
        "upload.request_timeout",
        problems,
    );
    let url_renew_after = positive_duration(
        raw.url_renew_after,
        defaults.url_renew_after,
        "upload.url_renew_after",
        problems,
    );
    if url_renew_after >= UPLOAD_TOKEN_LIFETIME {
        problems.add(
            "upload.url_renew_after",
            "must be shorter than 4h: the platform's upload URL expires after 4 hours",
        );
    }
    let bandwidth = bandwidth_plan(
        raw.bandwidth_limit.map(|r| r.0),
        raw.bandwidth_schedule.as_deref(),
        problems,
    );
    let api_requests_per_minute = in_range(
        raw.api_requests_per_minute,
        defaults.api_requests_per_minute.into(),
        1..=u64::from(u32::MAX),
        "upload.api_requests_per_minute",
        problems,
    );
    // Zero is allowed: one lookup and no repeats (a platform whose search never lags).
    let lookup_wait = raw.lookup_wait.map_or(defaults.lookup_wait, |d| d.0);
    if lookup_wait > MAX_LOOKUP_WAIT {
        problems.add(
            "upload.lookup_wait",
            "must be at most 1h: a file whose create-video answer was lost waits this long",
        );
    }
    UploadSettings {
        chunk_size,
        // The ranges checked above fit these types; on a problem the value is never used.
        parallel: usize::try_from(parallel).unwrap_or(defaults.parallel),
        max_attempts: u32::try_from(max_attempts).unwrap_or(defaults.max_attempts),
        backoff_max,
        request_timeout,
        url_renew_after,
        bandwidth,
        api_requests_per_minute: u32::try_from(api_requests_per_minute)
            .unwrap_or(defaults.api_requests_per_minute),
        tag_videos: raw.tag_videos.unwrap_or(defaults.tag_videos),
        lookup_wait,
    }
}

fn validate_log(raw: RawLog, base: &Path, problems: &mut Problems) -> LogSettings {
    let dir_chosen = raw.dir.is_some() || systemd_log_dir().is_some();
    let dir = match raw.dir {
        Some(dir) => resolve_path(base, &dir),
        None => default_log_dir(),
    };
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if level.trim().is_empty() {
        problems.add("log.level", "empty: use error, warn, info, debug or trace");
    } else if let Err(err) = tracing_subscriber::EnvFilter::try_new(&level) {
        problems.add(
            "log.level",
            format!(
                "{level:?} is not a log filter ({err}); use e.g. \"info\" or \"hotfolder=debug\""
            ),
        );
    }
    let format = match raw.format {
        Some(RawLogFormat::Json) => LogFormat::Json,
        Some(RawLogFormat::Text) | None => LogFormat::Text,
    };
    let keep_files = in_range(
        raw.keep_files,
        DEFAULT_KEEP_FILES,
        1..=100_000,
        "log.keep_files",
        problems,
    );
    LogSettings {
        dir,
        level,
        format,
        keep_files: usize::try_from(keep_files).unwrap_or(DEFAULT_KEEP_FILES as usize),
        dir_chosen,
    }
}

fn validate_patterns(
    patterns: Option<Vec<String>>,
    default: fn() -> Vec<String>,
    key: &str,
    problems: &mut Problems,
) -> Vec<String> {
    let Some(patterns) = patterns else {
        return default();
    };
    let mut usable = true;
    for (i, pattern) in patterns.iter().enumerate() {
        let item_key = format!("{key}[{}]", i + 1);
        let problem = if pattern.trim().is_empty() {
            Some("empty pattern".to_string())
        } else if pattern.contains(['/', '\\']) {
            Some(format!(
                "{pattern:?}: patterns match the file name only, not a path"
            ))
        } else {
            // The very check the name filter compiles with, so a pattern that loads is one it
            // takes as written.
            crate::ready::compile_pattern(pattern)
                .err()
                .map(|why| format!("{pattern:?} is not a usable pattern: {why}"))
        };
        if let Some(problem) = problem {
            problems.add(item_key, problem);
            usable = false;
        }
    }
    if usable && let Err(why) = crate::ready::compile_patterns(&patterns) {
        problems.add(
            key,
            format!("the patterns cannot be compiled together: {why}"),
        );
    }
    patterns
}

fn validate_folders(
    raw: Vec<RawFolder>,
    base: &Path,
    purpose: Purpose,
    keep_jobs_for: Duration,
    problems: &mut Problems,
) -> Vec<FolderSettings> {
    let mut folders = Vec::new();
    // Index in the file of each folder that made it, for cross-folder messages.
    let mut numbers = Vec::new();
    // The agent's folders that cannot be used now (not there, not a directory): the agent
    // watches the others and reports these missing until they appear, unless none is usable.
    let mut missing = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let n = i + 1;
        if let Some(folder) = validate_folder(raw, n, base, purpose, problems, &mut missing) {
            // Retention finds an uploaded file through its job: once the store has forgotten
            // the job, the file would stay in done/ for ever.
            if let Some(keep) = folder.keep_done_for
                && keep >= keep_jobs_for
            {
                problems.add(
                    format!("folder[{n}].keep_done_for"),
                    format!(
                        "{} is not shorter than [state] keep_jobs_for ({}): the state store forgets an upload after keep_jobs_for, and a file it has forgotten is never deleted; shorten keep_done_for or lengthen keep_jobs_for",
                        humantime::format_duration(keep),
                        humantime::format_duration(keep_jobs_for)
                    ),
                );
            }
            folders.push(folder);
            numbers.push(n);
        }
    }
    if !missing.is_empty() && missing.len() == folders.len() {
        // Not one folder to watch: most likely a typo or the wrong machine, said at once
        // (exit 2); a share mounted late is picked up by the service manager's restart.
        for (key, message) in missing {
            problems.add(key, message);
        }
    }
    check_folder_overlaps(&folders, &numbers, problems);
    folders
}

fn validate_folder(
    raw: RawFolder,
    n: usize,
    base: &Path,
    purpose: Purpose,
    problems: &mut Problems,
    missing: &mut Vec<(String, String)>,
) -> Option<FolderSettings> {
    let key = |field: &str| format!("folder[{n}].{field}");
    let configured_path = raw
        .path
        .as_ref()
        .map(|path| resolve_path(base, path))
        .unwrap_or_default();
    let path = match raw.path {
        Some(path) if path.as_os_str().is_empty() => {
            problems.add(key("path"), "empty: the folder to watch");
            None
        }
        // Not looked at: `status` reads the folders apart (see `shared_folder::survey_apart`).
        Some(path) if purpose == Purpose::Status => Some(resolve_path(base, &path)),
        Some(path) => {
            let path = resolve_path(base, &path);
            match std::fs::metadata(&path) {
                // Links in the configured path are resolved here, once per load (start and
                // reload): from then on the agent walks the resolved path without following a
                // link anywhere (`nofollow`), so a link swapped in later is never read through.
                Ok(meta) if meta.is_dir() => Some(std::fs::canonicalize(&path).unwrap_or(path)),
                // The agent records a missing folder in the store; status must still open it.
                // `upload` only reads a folder's metadata, for files inside it.
                _ if matches!(purpose, Purpose::Upload | Purpose::Inspect) => Some(path),
                // The agent watches the other folders and this one once it appears (see
                // `validate_folders`); links in the part that exists are resolved.
                Ok(_) | Err(_) if purpose == Purpose::Watch => {
                    let why = match std::fs::metadata(&path) {
                        Ok(_) => format!("{} is not a directory", path.display()),
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                            format!("{} does not exist", path.display())
                        }
                        Err(err) => format!("cannot use {}: {err}", path.display()),
                    };
                    missing.push((key("path"), why));
                    Some(canonical_prefix(&path))
                }
                Ok(_) => {
                    problems.add(
                        key("path"),
                        format!("{} is not a directory", path.display()),
                    );
                    None
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    problems.add(key("path"), format!("{} does not exist", path.display()));
                    None
                }
                Err(err) => {
                    problems.add(key("path"), format!("cannot use {}: {err}", path.display()));
                    None
                }
            }
        }
        None => {
            if !problems.has_problem_at(&key("path")) {
                problems.add(format!("folder[{n}]"), "missing path: the folder to watch");
            }
            None
        }
    };

    let (path, done_dir, failed_dir) = match path {
        Some(path) if purpose == Purpose::Status => {
            let done = side_dir(&path, raw.done_dir, "done");
            let failed = side_dir(&path, raw.failed_dir, "failed");
            (Some(path), Some(done), Some(failed))
        }
        Some(path) => {
            let done = canonical_prefix(&side_dir(&path, raw.done_dir, "done"));
            let failed = canonical_prefix(&side_dir(&path, raw.failed_dir, "failed"));
            (Some(path), Some(done), Some(failed))
        }
        None => (None, None, None),
    };
    if let (Some(path), Some(done), Some(failed)) = (&path, &done_dir, &failed_dir) {
        for (dir, what, files) in [
            (done, "done_dir", "uploaded"),
            (failed, "failed_dir", "failed"),
        ] {
            if dir == path {
                problems.add(
                    key(what),
                    format!(
                        "is the watched folder itself; {files} files must be moved somewhere else"
                    ),
                );
            } else if path.starts_with(dir) {
                // The intake ignores everything under done/ and failed/, so a folder inside
                // one of them would never see a file (and every move would feed it again).
                problems.add(
                    key(what),
                    format!(
                        "{} contains the watched folder {}: hotfolder ignores everything in \
                         its {what}, so no file would ever be picked up; use a folder beside \
                         or inside the watched one",
                        dir.display(),
                        path.display()
                    ),
                );
            }
        }
        if done == failed {
            problems.add(
                key("failed_dir"),
                format!(
                    "is the same as done_dir ({}); keep uploaded and failed files apart",
                    done.display()
                ),
            );
        } else if done.starts_with(failed) || failed.starts_with(done) {
            // `failed` and `retry --all` walk failed/ whole: uploaded files inside it would be
            // listed as failed and sent again.
            problems.add(
                key("failed_dir"),
                format!(
                    "{} and done_dir ({}) are inside one another; keep uploaded and failed files apart",
                    failed.display(),
                    done.display()
                ),
            );
        }
    }

    let stable_for = raw.stable_for.map_or(DEFAULT_STABLE_FOR, |d| d.0);
    let poll_interval = raw.poll_interval.map(|d| d.0);
    if poll_interval.is_some_and(|d| d.is_zero()) {
        problems.add(
            key("poll_interval"),
            "must be longer than 0s; leave it out to use native events",
        );
    }
    let incomplete_after = raw
        .incomplete_after
        .map_or(DEFAULT_INCOMPLETE_AFTER, |d| d.0);
    if incomplete_after < stable_for {
        problems.add(
            key("incomplete_after"),
            format!(
                "{} is shorter than stable_for ({}): a file must at least be stable before it can count as an export that never finished",
                humantime::format_duration(incomplete_after),
                humantime::format_duration(stable_for)
            ),
        );
    }
    let keep_done_for = raw.keep_done_for.map(|d| d.0);
    if keep_done_for.is_some_and(|d| d.is_zero()) {
        problems.add(
            key("keep_done_for"),
            "must be longer than 0s; leave it out to keep uploaded files in done/",
        );
    }
    let claim_lease = raw.claim_lease.map_or(DEFAULT_CLAIM_LEASE, |d| d.0);
    if claim_lease < MIN_CLAIM_LEASE {
        problems.add(
            key("claim_lease"),
            format!(
                "{} is too short: agents renew their claims every quarter of the lease, and a file server's timestamps may be a second coarse; use at least {}",
                humantime::format_duration(claim_lease),
                humantime::format_duration(MIN_CLAIM_LEASE)
            ),
        );
    }
    if raw.video_manager_id == Some(0) {
        problems.add(
            key("video_manager_id"),
            "must be greater than 0; leave it out to upload into the account's VideoManager",
        );
    }
    let include = validate_patterns(raw.include, default_include, &key("include"), problems);
    if include.is_empty() {
        problems.add(
            key("include"),
            "empty list: no file would ever be picked up; \
             leave include out for every video suffix the platform accepts",
        );
    }
    let mut exclude = validate_patterns(raw.exclude, default_exclude, &key("exclude"), problems);
    let companion = companion_rule(raw.metadata_file, raw.metadata_wait, &key, problems);
    if companion.mode != CompanionMode::Off {
        // Companions are metadata, never videos, even where `include` is widened to `*`;
        // other `.xml` files stay out too (they are no video either).
        for pattern in crate::metadata::COMPANION_PATTERNS {
            if !exclude.iter().any(|p| p == pattern) {
                exclude.push((*pattern).to_owned());
            }
        }
    }

    let title = raw.title.unwrap_or_else(|| DEFAULT_TITLE.to_owned());
    if title.trim().is_empty() {
        problems.add(
            key("title"),
            "empty: the platform needs a title; \"{stem}\" uses the file name",
        );
    } else {
        for placeholder in unknown_placeholders(&title) {
            problems.add(
                key("title"),
                format!(
                    "unknown placeholder {{{placeholder}}}; \
                     use {{stem}} (file name without suffix) or {{name}}"
                ),
            );
        }
    }
    let keywords = raw.keywords.unwrap_or_default();
    for (i, keyword) in keywords.iter().enumerate() {
        if keyword.trim().is_empty() {
            problems.add(format!("folder[{n}].keywords[{}]", i + 1), "empty keyword");
        }
    }

    Some(FolderSettings {
        configured_path,
        path: path?,
        done_dir: done_dir?,
        failed_dir: failed_dir?,
        stable_for,
        recursive: raw.recursive.unwrap_or(true),
        include,
        exclude,
        poll_interval,
        check_container: raw.check_container.unwrap_or(true),
        incomplete_after,
        keep_done_for,
        follow_transcoding: raw.follow_transcoding.unwrap_or(false),
        shared: raw.shared.unwrap_or(false),
        claim_lease,
        companion,
        result_xml: raw.result_xml.unwrap_or(false),
        video_manager_id: raw.video_manager_id,
        metadata: VideoMetadata {
            title,
            description: raw.description.filter(|d| !d.is_empty()),
            channel: raw.channel,
            group: raw.group,
            keywords,
            auto_publish: raw.auto_publish,
            title_as_written: false,
        },
    })
}

/// `metadata_file` and `metadata_wait`: a wait only means something with `optional`, and a
/// zero wait would make `optional` the same as going without a companion.
fn companion_rule(
    mode: Option<super::raw::RawMetadataFile>,
    wait: Option<super::raw::HumanDuration>,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> CompanionRule {
    use super::raw::RawMetadataFile;
    let mode = match mode {
        None | Some(RawMetadataFile::Off) => CompanionMode::Off,
        Some(RawMetadataFile::Optional) => CompanionMode::Optional,
        Some(RawMetadataFile::Required) => CompanionMode::Required,
    };
    let wait = wait.map(|d| d.0);
    if wait.is_some() && mode != CompanionMode::Optional {
        problems.add(
            key("metadata_wait"),
            "only applies with metadata_file = \"optional\" (with \"required\" a video waits for its companion up to incomplete_after); remove it or set metadata_file = \"optional\"",
        );
    }
    if wait.is_some_and(|d| d.is_zero()) {
        problems.add(
            key("metadata_wait"),
            "must be longer than 0s: a video would never wait for its companion",
        );
    }
    CompanionRule {
        mode,
        wait: wait.unwrap_or(DEFAULT_METADATA_WAIT),
    }
}

/// `{word}` placeholders in a title that the upload code will not fill in.
fn unknown_placeholders(title: &str) -> Vec<&str> {
    let mut unknown = Vec::new();
    let mut rest = title;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !TITLE_PLACEHOLDERS.contains(&name)
        {
            unknown.push(name);
        }
        rest = &after[close + 1..];
    }
    unknown
}

/// Folders that would feed each other: the same folder twice, a folder inside another's
/// done/failed dir, a folder (or a done/failed dir) inside a folder watched recursively or
/// equal to one that is not; and one folder's done_dir used as another's failed_dir.
fn check_folder_overlaps(folders: &[FolderSettings], numbers: &[usize], problems: &mut Problems) {
    for (a, folder) in folders.iter().enumerate() {
        let na = numbers[a];
        for (b, other) in folders.iter().enumerate() {
            if a == b {
                continue;
            }
            let nb = numbers[b];
            if folder.path == other.path {
                if b < a {
                    problems.add(
                        format!("folder[{na}].path"),
                        format!(
                            "{} is already watched by folder[{nb}]",
                            folder.path.display()
                        ),
                    );
                }
                continue;
            }
            for (dir, what) in [
                (&other.done_dir, "done_dir"),
                (&other.failed_dir, "failed_dir"),
            ] {
                if folder.path.starts_with(dir) {
                    problems.add(
                        format!("folder[{na}].path"),
                        format!(
                            "{} is inside folder[{nb}]'s {what} ({}): \
                             files moved there would be uploaded again",
                            folder.path.display(),
                            dir.display()
                        ),
                    );
                }
            }
            if other.recursive && folder.path.starts_with(&other.path) {
                problems.add(
                    format!("folder[{na}].path"),
                    format!(
                        "{} is inside folder[{nb}] ({}), which is watched recursively: \
                         files would be uploaded twice",
                        folder.path.display(),
                        other.path.display()
                    ),
                );
            }
            // Already reported above when the whole folder is inside the other one.
            let folder_inside = other.recursive && folder.path.starts_with(&other.path);
            for (dir, what) in [
                (&folder.done_dir, "done_dir"),
                (&folder.failed_dir, "failed_dir"),
            ] {
                // Only a recursive watch sees into subfolders; a done dir beside the files of a
                // non-recursive folder is not watched, but that folder itself is.
                if other.recursive && !folder_inside && dir.starts_with(&other.path) {
                    problems.add(
                        format!("folder[{na}].{what}"),
                        format!(
                            "{} is inside folder[{nb}] ({}), which is watched recursively: \
                             files moved there would be uploaded again",
                            dir.display(),
                            other.path.display()
                        ),
                    );
                } else if !other.recursive && dir == &other.path {
                    problems.add(
                        format!("folder[{na}].{what}"),
                        format!(
                            "{} is the folder watched by folder[{nb}]: files moved there would \
                             be uploaded again",
                            dir.display()
                        ),
                    );
                }
            }
            // Inside another folder's failed/: `failed` and `retry --all` walk it whole and
            // would take this folder's files for that folder's failures (hostile test: uploaded
            // files sent again, into the other folder's VideoManager).
            for (dir, what) in [
                (&folder.done_dir, "done_dir"),
                (&folder.failed_dir, "failed_dir"),
            ] {
                if dir != &other.failed_dir && dir.starts_with(&other.failed_dir) {
                    problems.add(
                        format!("folder[{na}].{what}"),
                        format!(
                            "{} is inside folder[{nb}]'s failed_dir ({}): `retry --all` would \
                             move its files into folder[{nb}]",
                            dir.display(),
                            other.failed_dir.display()
                        ),
                    );
                }
            }
            // One folder's uploaded files mixed with another's failed ones: `retry` and people
            // looking for failures could no longer tell them apart.
            if folder.done_dir == other.failed_dir {
                problems.add(
                    format!("folder[{na}].done_dir"),
                    format!(
                        "{} is also folder[{nb}]'s failed_dir; keep uploaded and failed files apart",
                        folder.done_dir.display()
                    ),
                );
            }
        }
    }
}

/// `bandwidth_limit` or `bandwidth_schedule` (not both), as the plan the limiter follows.
fn bandwidth_plan(
    limit: Option<Bandwidth>,
    schedule: Option<&str>,
    problems: &mut Problems,
) -> BandwidthPlan {
    if let Some(limit) = limit
        && limit.bytes_per_second == 0
    {
        problems.add(
            "upload.bandwidth_limit",
            "must be at least 1 byte per second; leave it out for no limit, or use \
             bandwidth_schedule with a \"0\" entry for quiet hours",
        );
    }
    let Some(schedule) = schedule else {
        return limit.map_or(BandwidthPlan::Unlimited, BandwidthPlan::Fixed);
    };
    // Refused rather than one silently winning: whichever were chosen, a reader of the file
    // would believe the other one.
    if let Some(limit) = limit {
        problems.add(
            "upload.bandwidth_limit",
            format!(
                "set together with bandwidth_schedule; use one: the schedule gives the limit at \
                 every hour (for {limit} all the time, write bandwidth_schedule = \"00:00,{}\" \
                 and add its other entries)",
                limit.to_string().replace(' ', "")
            ),
        );
    }
    match BandwidthSchedule::parse(schedule) {
        Ok(schedule) => BandwidthPlan::Scheduled(schedule),
        Err(errors) => {
            for error in errors {
                problems.add("upload.bandwidth_schedule", error.to_string());
            }
            BandwidthPlan::Unlimited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ConfigProblem, from_toml_str_with_env};
    use secrecy::ExposeSecret as _;

    fn config_with(password_lines: &str) -> String {
        format!("[account]\nusername = \"u\"\nvideo_manager_id = 1\n{password_lines}\n")
    }

    fn load_with_env(text: &str, env: EnvLookup<'_>) -> Result<Settings, ConfigError> {
        from_toml_str_with_env(
            text,
            Path::new("/etc/hotfolder/config.toml"),
            env,
            Purpose::Run,
        )
    }

    fn problems(result: Result<Settings, ConfigError>) -> Vec<ConfigProblem> {
        match result {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn password_from_a_set_env_var_is_used() {
        let text = config_with("password_env = \"VM_PASSWORD\"");
        let settings = load_with_env(&text, &|name| {
            (name == "VM_PASSWORD").then(|| OsString::from("hunter2"))
        })
        .unwrap();
        assert_eq!(settings.account.password.expose_secret(), "hunter2");
        assert_eq!(
            settings.account.password_source,
            PasswordSource::Env("VM_PASSWORD".into())
        );
    }

    #[test]
    fn empty_env_var_is_a_problem() {
        let text = config_with("password_env = \"VM_PASSWORD\"");
        let found = problems(load_with_env(&text, &|_| Some(OsString::new())));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "account.password_env");
        assert!(
            found[0].message.contains("VM_PASSWORD is empty"),
            "{found:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_env_var_is_a_problem() {
        use std::os::unix::ffi::OsStringExt as _;
        let text = config_with("password_env = \"VM_PASSWORD\"");
        let found = problems(load_with_env(&text, &|_| {
            Some(OsString::from_vec(vec![0xff]))
        }));
        assert!(found[0].message.contains("not valid UTF-8"), "{found:?}");
    }

    #[test]
    fn metadata_file_keys_are_read_and_a_wait_without_optional_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let folder = |lines: &str| {
            format!(
                "{}\n[[folder]]\npath = \"{}\"\n{lines}\n",
                config_with("password = \"x\""),
                dir.path().display()
            )
        };
        let settings = load_with_env(
            &folder("metadata_file = \"optional\"\nmetadata_wait = \"5m\"\nresult_xml = true"),
            &|_| None,
        )
        .unwrap();
        let f = &settings.folders[0];
        assert_eq!(f.companion.mode, CompanionMode::Optional);
        assert_eq!(f.companion.wait, Duration::from_secs(300));
        assert!(f.result_xml);
        assert!(f.exclude.iter().any(|p| p == "*.xml"), "{:?}", f.exclude);
        let defaults = load_with_env(&folder(""), &|_| None).unwrap();
        assert_eq!(defaults.folders[0].companion, CompanionRule::default());
        assert!(!defaults.folders[0].exclude.iter().any(|p| p == "*.json"));

        let found = problems(load_with_env(
            &folder("metadata_file = \"required\"\nmetadata_wait = \"5m\""),
            &|_| None,
        ));
        assert_eq!(found[0].key, "folder[1].metadata_wait", "{found:?}");
        assert!(
            found[0]
                .message
                .contains("only applies with metadata_file = \"optional\""),
            "{found:?}"
        );
        let found = problems(load_with_env(
            &folder("metadata_file = \"always\""),
            &|_| None,
        ));
        assert!(found[0].key.contains("metadata_file"), "{found:?}");
    }

    #[test]
    fn a_pattern_the_matcher_refuses_is_a_problem_naming_key_and_pattern() {
        let text = format!(
            "{}\n[[folder]]\npath = \"/nonexistent/exports\"\n\
             include = [\"*.mov\", \"[abc*.mp4\", \"*.{{mov,mp4\"]\n\
             exclude = [\"[éè]*\"]\n",
            config_with("password = \"x\"")
        );
        let found = problems(load_with_env(&text, &|_| None));
        let about = |key: &str| {
            found
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("no problem for {key}: {found:?}"))
                .message
                .clone()
        };
        let message = about("folder[1].include[2]");
        assert!(message.contains("\"[abc*.mp4\""), "{message}");
        assert!(message.contains("unclosed character class"), "{message}");
        assert!(message.contains("[[]"), "{message}");
        let message = about("folder[1].include[3]");
        assert!(message.contains("\"*.{mov,mp4\""), "{message}");
        assert!(message.contains("unclosed alternate group"), "{message}");
        let message = about("folder[1].exclude[1]");
        assert!(message.contains("ASCII"), "{message}");
        assert!(
            found.iter().all(|p| p.key != "folder[1].include[1]"),
            "{found:?}"
        );
    }

    #[test]
    fn tag_videos_is_on_by_default_and_lookup_wait_is_bounded() {
        let defaults = load_with_env(&config_with("password = \"x\""), &|_| None).unwrap();
        assert!(defaults.upload.tag_videos);
        assert_eq!(defaults.upload.lookup_wait, Duration::from_secs(30));

        let text = format!(
            "{}\n[upload]\ntag_videos = false\nlookup_wait = \"0s\"\n",
            config_with("password = \"x\"")
        );
        let settings = load_with_env(&text, &|_| None).unwrap();
        assert!(!settings.upload.tag_videos);
        assert_eq!(settings.upload.lookup_wait, Duration::ZERO);

        let text = format!(
            "{}\n[upload]\ntag_videos = \"yes\"\nlookup_wait = \"2h\"\n",
            config_with("password = \"x\"")
        );
        let found = problems(load_with_env(&text, &|_| None));
        assert!(
            found.iter().any(|p| p.key.contains("tag_videos")),
            "{found:?}"
        );
        let text = format!(
            "{}\n[upload]\nlookup_wait = \"2h\"\n",
            config_with("password = \"x\"")
        );
        let found = problems(load_with_env(&text, &|_| None));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "upload.lookup_wait");
        assert!(found[0].message.contains("at most 1h"), "{found:?}");
    }

    #[test]
    fn unknown_title_placeholders_are_found() {
        assert_eq!(unknown_placeholders("{stem} by {author}"), vec!["author"]);
        assert!(unknown_placeholders("{stem} {name} {}").is_empty());
    }
}
