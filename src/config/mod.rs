//! The config file: raw serde structs that mirror the TOML (unknown keys refused) and their
//! conversion into validated [`Settings`] that the rest of the program uses.
//!
//! Loading collects every problem instead of stopping at the first, because a user fixing a
//! config wants the whole list in one go:
//!
//! 1. the text is parsed into a spanned TOML document; a syntax error ends loading here, since
//!    nothing after it can be trusted;
//! 2. the raw structs are deserialized; a value of the wrong type or an unknown key is recorded,
//!    taken out of the document, and deserialization is tried again, so one typo does not hide
//!    the next;
//! 3. the raw values are validated and resolved: ranges, URLs, paths, the password.
//!
//! Problems name the key (`upload.chunk_size`, `folder[2].stable_for`; folders are counted
//! from 1, in the order of their `[[folder]]` tables) and, where known, the line.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use crate::vmpro::api::{PLATFORM_SUFFIXES, VideoMetadata};

/// The commented starter config that `hotfolder init` writes.
pub const STARTER_CONFIG: &str = include_str!("../../config.example.toml");

/// The platform's documented endpoints (see docs/vmpro-protocol.md).
pub const DEFAULT_API_URL: &str = "https://api.video-cdn.net/v1/vms/";
pub const DEFAULT_TOKEN_URL: &str =
    "https://login.movingimage.com/auth/realms/platform/protocol/openid-connect/token";

const MIB: u64 = 1024 * 1024;
const MIN_CHUNK_SIZE: u64 = MIB;
const MAX_CHUNK_SIZE: u64 = 64 * MIB;
const MAX_PARALLEL: u64 = 64;
const MAX_ATTEMPTS: u64 = 100;
/// The platform's upload URL token lasts four hours; renewing later than that is renewing an
/// expired URL.
const UPLOAD_TOKEN_LIFETIME: Duration = Duration::from_secs(4 * 3600);
const DEFAULT_STABLE_FOR: Duration = Duration::from_secs(10);
/// The longest duration any setting takes; nothing here needs more than days.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
const DEFAULT_KEEP_FILES: u64 = 14;
const DEFAULT_TITLE: &str = "{stem}";
/// Placeholders the title template understands (substituted by the upload code).
const TITLE_PLACEHOLDERS: &[&str] = &["stem", "name"];

/// Everything hotfolder needs, validated: absolute paths, parsed durations and sizes, the
/// password resolved from its source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from (for messages), or `None` when built in code (demo).
    pub source: Option<PathBuf>,
    pub account: AccountSettings,
    pub upload: UploadSettings,
    pub state_dir: PathBuf,
    pub log: LogSettings,
    pub folders: Vec<FolderSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// OpenID Connect password grant at `token_url` (the default).
    Keycloak,
    /// `POST {api_url}auth/login` with a JSON body, still in the OpenAPI description.
    Legacy,
}

/// Where the password came from, so `check` can show it without showing the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
    Inline,
}

#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Base of the API, always ending in `/` so that joining `"{vm}/videos"` works.
    pub api_url: Url,
    pub token_url: Url,
    pub auth: AuthStyle,
    pub username: String,
    pub password: SecretString,
    pub password_source: PasswordSource,
    pub video_manager_id: u64,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Bytes per chunk, 1 MiB ..= 64 MiB.
    pub chunk_size: u64,
    /// Files uploading at once.
    pub parallel: usize,
    /// Tries per request before the file fails (or, for network outages, the queue pauses).
    pub max_attempts: u32,
    /// Cap of the Fibonacci delay between tries.
    pub backoff_max: Duration,
    /// Time limit for one request, chunk posts included.
    pub request_timeout: Duration,
    /// Renew the upload URL between chunks once it is this old (the platform's token lasts 4 h).
    pub url_renew_after: Duration,
    /// Chunk bytes per second across all uploads; `None` = unlimited.
    pub bandwidth_limit: Option<u64>,
    /// API calls (not chunk posts) per minute; the platform allows 100.
    pub api_requests_per_minute: u32,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            chunk_size: 8 * 1024 * 1024,
            parallel: 2,
            max_attempts: 8,
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            url_renew_after: Duration::from_secs(3 * 3600 + 45 * 60),
            bandwidth_limit: None,
            api_requests_per_minute: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub dir: PathBuf,
    /// A tracing filter directive such as `info` or `hotfolder=debug`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
    /// How many daily log files to keep.
    pub keep_files: usize,
}

#[derive(Debug, Clone)]
pub struct FolderSettings {
    pub path: PathBuf,
    pub done_dir: PathBuf,
    pub failed_dir: PathBuf,
    /// Size and mtime unchanged this long = the export is complete.
    pub stable_for: Duration,
    pub recursive: bool,
    /// Glob patterns on the file name; a file must match one to be picked up.
    pub include: Vec<String>,
    /// Glob patterns on the file name; a file matching one is never picked up.
    pub exclude: Vec<String>,
    /// `Some` puts the folder on the polling watcher (network shares).
    pub poll_interval: Option<Duration>,
    pub metadata: VideoMetadata,
}

impl FolderSettings {
    /// A folder with every default the config file would give it: `done/` and `failed/`
    /// inside it, 10 s of stability, recursive, the default include/exclude lists and the
    /// file's stem as title. For settings built in code (demo, tests).
    pub fn with_defaults(path: PathBuf) -> FolderSettings {
        FolderSettings {
            done_dir: path.join("done"),
            failed_dir: path.join("failed"),
            path,
            stable_for: DEFAULT_STABLE_FOR,
            recursive: true,
            include: default_include(),
            exclude: default_exclude(),
            poll_interval: None,
            metadata: VideoMetadata {
                title: DEFAULT_TITLE.to_owned(),
                ..VideoMetadata::default()
            },
        }
    }
}

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a dotted key such as `upload.chunk_size` or `folder[2].stable_for` (folders
    /// counted from 1), a table such as `account`, or `line 3` for a TOML syntax error.
    pub key: String,
    /// What is wrong, in words that say how to fix it (with the line where known).
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: no config file there; write a starter one with `hotfolder init` or pass --config FILE",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("cannot read the config file {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, one per line as `{file}: {key}: {message}`.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{}: {problem}", path.display());
    }
    out
}

/// A size, duration or similar value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// The config file to use when none is given: `$HOTFOLDER_CONFIG`, then the platform config
/// directory (`~/.config/hotfolder/config.toml` on Linux). `None` only when neither is known.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("HOTFOLDER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    project_dirs().map(|dirs| dirs.config_dir().join("config.toml"))
}

/// Where the state store lives unless `[state] dir` says otherwise: `$STATE_DIRECTORY` (set by
/// systemd's `StateDirectory=`; its first entry when there are several), then the platform
/// data directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = first_systemd_dir("STATE_DIRECTORY") {
        return dir;
    }
    data_dir().join("state")
}

/// Where logs go unless `[log] dir` says otherwise: `$LOGS_DIRECTORY` (systemd's
/// `LogsDirectory=`), then the platform data directory.
pub fn default_log_dir() -> PathBuf {
    if let Some(dir) = first_systemd_dir("LOGS_DIRECTORY") {
        return dir;
    }
    data_dir().join("logs")
}

fn first_systemd_dir(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var)?;
    // systemd joins several directories with ':'; paths with a ':' of their own are not
    // something systemd creates.
    let value = value.to_string_lossy().into_owned();
    value
        .split(':')
        .find(|part| !part.is_empty())
        .map(PathBuf::from)
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "hotfolder")
}

fn data_dir() -> PathBuf {
    match project_dirs() {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        // No home directory (a bare service account): the temp dir at least exists and is
        // writable; `check` shows the path so the operator can set one explicitly.
        None => std::env::temp_dir().join("hotfolder"),
    }
}

/// `*.{suffix}` for every suffix the platform accepts.
pub fn default_include() -> Vec<String> {
    PLATFORM_SUFFIXES.iter().map(|s| format!("*.{s}")).collect()
}

/// Names that are never a finished export. The include list already keeps out anything that
/// does not end in a video suffix, so these matter for names that do (`._clip.mp4`) and for
/// users who widen `include`.
///
/// Premiere Pro, Adobe Media Encoder, After Effects and DaVinci Resolve write an export under
/// its final name and let it grow; no name gives those away, which is what `stable_for` is for.
pub fn default_exclude() -> Vec<String> {
    [
        // Hidden files: macOS AppleDouble (`._clip.mp4`), rsync's in-flight `.clip.mp4.XXXXXX`,
        // Syncthing's `.syncthing.*.tmp`, and anything else a tool wants out of sight.
        ".*",
        // Spelled out although `.*` covers them, so they stay excluded if a user trims `.*`.
        ".DS_Store",
        "._*",
        // Downloads in flight: Firefox and many downloaders, Chrome/Edge, Safari.
        "*.part",
        "*.partial",
        "*.crdownload",
        "*.download",
        // WinSCP uploads under this name and renames when done.
        "*.filepart",
        // Aspera: `.partial` is its partial-file suffix when configured; `.aspx` and
        // `.aspera-ckpt` are its resume files beside a file still arriving.
        "*.aspx",
        "*.aspera-ckpt",
        // Generic temporary names (`clip.mp4.tmp`, `export.temp`).
        "*.tmp",
        "*.temp",
        // Lock and backup files of editors and office tools (`~$notes.docx`, `clip.mov~`).
        "~*",
        "*~",
        // Adobe media cache: conformed audio and peak files, written beside the media when
        // the cache is set to live next to the originals.
        "*.cfa",
        "*.pek",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// What a config is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Uploading (`run`, `upload`, `check`): everything must be usable, the password included.
    Run,
    /// Reading the state store (`status`): the password is not read, and watched folders need
    /// not exist. An admin asks for the status exactly when a share is gone, and from a shell
    /// without the service's credentials.
    Inspect,
}

/// Reads the config file: `explicit` if given, else [`default_config_path`].
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
    load_for(explicit, Purpose::Run)
}

/// [`load`] for a [`Purpose`].
pub fn load_for(explicit: Option<&Path>, purpose: Purpose) -> Result<Settings, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => default_config_path().ok_or_else(|| ConfigError::NotFound {
            path: PathBuf::from("$HOTFOLDER_CONFIG"),
        })?,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound { path });
        }
        Err(source) => return Err(ConfigError::Unreadable { path, source }),
    };
    from_toml_str_with_env(&text, &path, &|name| std::env::var_os(name), purpose)
}

impl Settings {
    /// Parses and validates config text. `source` is the file it came from: messages name it
    /// and relative paths are resolved against its directory.
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Settings, ConfigError> {
        from_toml_str_with_env(text, source, &|name| std::env::var_os(name), Purpose::Run)
    }

    /// The effective settings as TOML-like text, defaults filled in and the password masked.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> fmt::Result {
        match &self.source {
            Some(source) => writeln!(out, "# effective settings from {}", source.display())?,
            None => writeln!(out, "# effective settings (built in, no config file)")?,
        }
        let account = &self.account;
        writeln!(out, "\n[account]")?;
        writeln!(out, "api_url = {}", quote(account.api_url.as_str()))?;
        writeln!(out, "token_url = {}", quote(account.token_url.as_str()))?;
        let auth = match account.auth {
            AuthStyle::Keycloak => "keycloak",
            AuthStyle::Legacy => "legacy",
        };
        writeln!(out, "auth = {}", quote(auth))?;
        writeln!(out, "username = {}", quote(&account.username))?;
        let masked = match &account.password_source {
            PasswordSource::Env(name) => format!("*** (from env {name})"),
            PasswordSource::File(path) => format!("*** (from file {})", path.display()),
            PasswordSource::Inline => "*** (inline in the config file)".to_owned(),
        };
        writeln!(out, "password = {}", quote(&masked))?;
        writeln!(out, "video_manager_id = {}", account.video_manager_id)?;

        let upload = &self.upload;
        writeln!(out, "\n[upload]")?;
        writeln!(
            out,
            "chunk_size = {}",
            quote(&format_size(upload.chunk_size))
        )?;
        writeln!(out, "parallel = {}", upload.parallel)?;
        writeln!(out, "max_attempts = {}", upload.max_attempts)?;
        writeln!(out, "backoff_max = {}", quote_duration(upload.backoff_max))?;
        writeln!(
            out,
            "request_timeout = {}",
            quote_duration(upload.request_timeout)
        )?;
        writeln!(
            out,
            "url_renew_after = {}",
            quote_duration(upload.url_renew_after)
        )?;
        match upload.bandwidth_limit {
            Some(limit) => writeln!(
                out,
                "bandwidth_limit = {}",
                quote(&format!("{}/s", format_size(limit)))
            )?,
            None => writeln!(out, "# bandwidth_limit: not set, unlimited")?,
        }
        writeln!(
            out,
            "api_requests_per_minute = {}",
            upload.api_requests_per_minute
        )?;

        writeln!(out, "\n[state]")?;
        writeln!(out, "dir = {}", quote_path(&self.state_dir))?;

        let log = &self.log;
        writeln!(out, "\n[log]")?;
        writeln!(out, "dir = {}", quote_path(&log.dir))?;
        writeln!(out, "level = {}", quote(&log.level))?;
        let format = match log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(out, "format = {}", quote(format))?;
        writeln!(out, "keep_files = {}", log.keep_files)?;

        if self.folders.is_empty() {
            writeln!(out, "\n# no [[folder]]: `run` has nothing to watch")?;
        }
        for (i, folder) in self.folders.iter().enumerate() {
            writeln!(out, "\n[[folder]]  # folder[{}]", i + 1)?;
            writeln!(out, "path = {}", quote_path(&folder.path))?;
            writeln!(out, "done_dir = {}", quote_path(&folder.done_dir))?;
            writeln!(out, "failed_dir = {}", quote_path(&folder.failed_dir))?;
            writeln!(out, "stable_for = {}", quote_duration(folder.stable_for))?;
            writeln!(out, "recursive = {}", folder.recursive)?;
            writeln!(out, "include = {}", quote_list(&folder.include))?;
            writeln!(out, "exclude = {}", quote_list(&folder.exclude))?;
            match folder.poll_interval {
                Some(interval) => writeln!(out, "poll_interval = {}", quote_duration(interval))?,
                None => writeln!(out, "# poll_interval: not set, native file-system events")?,
            }
            let meta = &folder.metadata;
            writeln!(out, "title = {}", quote(&meta.title))?;
            writeln!(
                out,
                "description = {}",
                quote(meta.description.as_deref().unwrap_or(""))
            )?;
            match meta.channel {
                Some(channel) => writeln!(out, "channel = {channel}")?,
                None => writeln!(out, "# channel: not set")?,
            }
            match meta.group {
                Some(group) => writeln!(out, "group = {group}")?,
                None => writeln!(out, "# group: not set")?,
            }
            writeln!(out, "keywords = {}", quote_list(&meta.keywords))?;
            match meta.auto_publish {
                Some(publish) => writeln!(out, "auto_publish = {publish}")?,
                None => writeln!(out, "# auto_publish: not set, the platform decides")?,
            }
        }
        Ok(())
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn quote_duration(duration: Duration) -> String {
    quote(&humantime::format_duration(duration).to_string())
}

fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Reads a size: `"8 MiB"`, `"512 KiB"`, `"1.5 GiB"`, `"8MiB"`, `"20 MB"` (decimal units:
/// KB, MB, GB, TB), `"4096"` or `"4096 B"` (bytes). A lower-case `b` after a prefix (`Mb`) is
/// refused: it reads as bits.
pub fn parse_size(text: &str) -> Result<u64, InvalidValue> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidValue(
            "empty: write a size such as \"8 MiB\"".to_owned(),
        ));
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(InvalidValue(format!(
            "{trimmed:?} does not start with a number; write a size such as \"8 MiB\""
        )));
    }
    let multiplier = size_unit(unit)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let too_large = || InvalidValue(format!("{trimmed:?} is too large"));
    if whole.is_empty() {
        return Err(InvalidValue(format!(
            "{trimmed:?} is not a number; write a size such as \"8 MiB\""
        )));
    }
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier.into()).ok_or_else(too_large)?;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || fraction.len() > 9 || fraction.contains('.') {
            return Err(InvalidValue(format!(
                "{trimmed:?} is not a number; write a size such as \"1.5 GiB\""
            )));
        }
        if multiplier == 1 {
            return Err(InvalidValue(format!(
                "{trimmed:?}: a number of bytes must be whole"
            )));
        }
        let digits: u128 = fraction.parse().map_err(|_| too_large())?;
        // At most 9 fraction digits and a multiplier below 2^41: no overflow in u128.
        bytes += digits * u128::from(multiplier) / 10u128.pow(fraction.len() as u32);
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

fn size_unit(unit: &str) -> Result<u64, InvalidValue> {
    if unit.len() > 1 && unit.ends_with('b') && !unit.eq_ignore_ascii_case("bytes") {
        let prefix = &unit[..unit.len() - 1];
        return Err(InvalidValue(format!(
            "unit {unit:?} reads as bits; write {}B (powers of 1000) or {}iB (powers of 1024)",
            prefix.trim_end_matches(['i', 'I']).to_uppercase(),
            prefix.trim_end_matches(['i', 'I']).to_uppercase(),
        )));
    }
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" | "BYTE" | "BYTES" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        "K" | "M" | "G" | "T" => {
            let prefix = unit.to_ascii_uppercase();
            return Err(InvalidValue(format!(
                "unit {unit:?} is ambiguous; \
                 write {prefix}iB (powers of 1024) or {prefix}B (powers of 1000)"
            )));
        }
        _ => {
            return Err(InvalidValue(format!(
                "unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB"
            )));
        }
    };
    Ok(multiplier)
}

/// Reads a rate: a size per second, `"20 MiB"` or `"20 MiB/s"`.
pub fn parse_rate(text: &str) -> Result<u64, InvalidValue> {
    let trimmed = text.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/sec"))
        .unwrap_or(trimmed);
    parse_size(size)
}

/// Formats a byte count the way [`parse_size`] reads it: `"8 MiB"`, `"1.5 GiB"`, `"1000 B"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for &(unit, name) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{} {name}", bytes / unit);
        }
    }
    for &(unit, name) in UNITS {
        // Exact to the byte when printed with up to three decimals, else fall through to bytes.
        let thousandths = u128::from(bytes) * 1000 / u128::from(unit);
        if bytes >= unit && thousandths * u128::from(unit) == u128::from(bytes) * 1000 {
            let text = format!("{}.{:03}", thousandths / 1000, thousandths % 1000);
            return format!("{} {name}", text.trim_end_matches('0'));
        }
    }
    format!("{bytes} B")
}

/// Reads a duration written like `"500ms"`, `"10s"`, `"4h"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidValue(
            "empty: write a duration such as \"10s\", \"500ms\" or \"4h\"".to_owned(),
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|err| {
        InvalidValue(format!(
            "{trimmed:?} is not a duration ({err}); write e.g. \"10s\", \"500ms\" or \"4h\""
        ))
    })?;
    // Deadlines are computed as `now + duration` (and backoff caps multiplied): a duration of
    // centuries would overflow the clock and abort the agent instead of being refused here.
    if duration > MAX_DURATION {
        return Err(InvalidValue(format!(
            "{trimmed:?} is too long: at most \"{}d\"",
            MAX_DURATION.as_secs() / 86_400
        )));
    }
    Ok(duration)
}

/// Checks what only the file system can tell: each watched folder can be listed, each
/// done/failed folder (and the state and log directories) can be created and written. Creates
/// missing directories; leaves no probe file behind.
pub fn check_folder_access(settings: &Settings) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut writable = |key: String, dir: &Path| {
        if let Err(message) = probe_writable(dir) {
            problems.push(ConfigProblem { key, message });
        }
    };
    writable("state.dir".to_owned(), &settings.state_dir);
    writable("log.dir".to_owned(), &settings.log.dir);
    for (i, folder) in settings.folders.iter().enumerate() {
        let n = i + 1;
        writable(format!("folder[{n}].done_dir"), &folder.done_dir);
        writable(format!("folder[{n}].failed_dir"), &folder.failed_dir);
    }
    for (i, folder) in settings.folders.iter().enumerate() {
        let listed = std::fs::read_dir(&folder.path).and_then(|mut entries| {
            entries.next().transpose()?;
            Ok(())
        });
        if let Err(err) = listed {
            problems.push(ConfigProblem {
                key: format!("folder[{}].path", i + 1),
                message: format!("cannot list {}: {err}", folder.path.display()),
            });
        }
    }
    problems
}

fn probe_writable(dir: &Path) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    // Hidden, so the default exclude list ignores it should a crash leave it behind.
    let probe = dir.join(format!(".hotfolder-probe-{}", uuid::Uuid::new_v4()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut file| file.write_all(b"probe"));
    let removed = std::fs::remove_file(&probe);
    written.map_err(|err| format!("cannot write in {}: {err}", dir.display()))?;
    removed.map_err(|err| {
        format!(
            "wrote but cannot remove {} (files could not be moved out of it): {err}",
            probe.display()
        )
    })
}

/// Warnings about files that hold the password and that others on the machine can read: the
/// config file when the password is inline, or the password file. Empty on non-Unix systems.
pub fn secret_file_warnings(settings: &Settings) -> Vec<String> {
    let file = match (&settings.account.password_source, &settings.source) {
        (PasswordSource::File(path), _) => Some(path),
        (PasswordSource::Inline, Some(source)) => Some(source),
        _ => None,
    };
    file.and_then(|path| readable_by_others(path))
        .into_iter()
        .collect()
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds the password and other users can read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> Option<String> {
    None
}

// ---------------------------------------------------------------------------------------------
// Raw structs: the TOML as written, every field optional so that "missing" is reported by the
// validation step (with a helpful message) rather than by serde.

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    account: Option<RawAccount>,
    upload: Option<RawUpload>,
    state: Option<RawState>,
    log: Option<RawLog>,
    #[serde(default)]
    folder: Vec<RawFolder>,
}

// No Debug: it holds the inline password.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    api_url: Option<String>,
    token_url: Option<String>,
    auth: Option<RawAuth>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password: Option<String>,
    video_manager_id: Option<u64>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAuth {
    Keycloak,
    Legacy,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpload {
    chunk_size: Option<Size>,
    parallel: Option<u64>,
    max_attempts: Option<u64>,
    backoff_max: Option<HumanDuration>,
    request_timeout: Option<HumanDuration>,
    url_renew_after: Option<HumanDuration>,
    bandwidth_limit: Option<Rate>,
    api_requests_per_minute: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    dir: Option<PathBuf>,
    level: Option<String>,
    format: Option<RawLogFormat>,
    keep_files: Option<u64>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLogFormat {
    Text,
    Json,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFolder {
    path: Option<PathBuf>,
    done_dir: Option<PathBuf>,
    failed_dir: Option<PathBuf>,
    stable_for: Option<HumanDuration>,
    recursive: Option<bool>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    poll_interval: Option<HumanDuration>,
    title: Option<String>,
    description: Option<String>,
    channel: Option<u64>,
    group: Option<u64>,
    keywords: Option<Vec<String>>,
    auto_publish: Option<bool>,
}

/// A size read with [`parse_size`]: a string with a unit, or an integer number of bytes.
#[derive(Clone, Copy)]
struct Size(u64);

/// A rate read with [`parse_rate`].
#[derive(Clone, Copy)]
struct Rate(u64);

/// A duration read with [`parse_duration`].
#[derive(Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SizeVisitor {
                parse: parse_size,
                expecting: "a size such as \"8 MiB\" or a number of bytes",
            })
            .map(Size)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SizeVisitor {
                parse: parse_rate,
                expecting: "a rate such as \"20 MiB/s\" or a number of bytes per second",
            })
            .map(Rate)
    }
}

struct SizeVisitor {
    parse: fn(&str) -> Result<u64, InvalidValue>,
    expecting: &'static str,
}

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
        Ok(bytes)
    }

    fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<u64, E> {
        u64::try_from(bytes).map_err(|_| E::custom("a size cannot be negative"))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl serde::de::Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration in quotes, such as \"10s\", \"500ms\" or \"4h\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                parse_duration(text).map_err(E::custom)
            }
        }
        deserializer
            .deserialize_str(DurationVisitor)
            .map(HumanDuration)
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1 and 2: TOML text to raw structs, recording and skipping bad entries.

/// Maps byte offsets to line numbers.
struct LineIndex<'t> {
    text: &'t str,
}

impl LineIndex<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    /// The text of the 1-based line, trimmed, for syntax-error messages.
    fn line_text(&self, line: usize) -> &str {
        self.text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim()
    }
}

/// One step of a path into the document: a table key or an array index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            // Counted from 1: "folder[1]" is the first [[folder]] table a reader sees.
            Step::Index(i) => {
                let _ = write!(out, "[{}]", i + 1);
            }
        }
    }
    out
}

fn span_contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// The deepest entry whose key or value covers `offset`. Children are searched first, and
/// without requiring the parent's span to cover them, because the span of a `[table]` does
/// not always cover the lines below its header.
fn locate_in_table(table: &DeTable<'_>, offset: usize) -> Option<Vec<Step>> {
    for (key, value) in table.iter() {
        let step = Step::Key(key.get_ref().to_string());
        if let Some(mut rest) = locate_in_value(value.get_ref(), offset) {
            rest.insert(0, step);
            return Some(rest);
        }
        if span_contains(&key.span(), offset) || span_contains(&value.span(), offset) {
            return Some(vec![step]);
        }
    }
    None
}

fn locate_in_value(value: &DeValue<'_>, offset: usize) -> Option<Vec<Step>> {
    match value {
        DeValue::Table(table) => locate_in_table(table, offset),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(mut rest) = locate_in_value(item.get_ref(), offset) {
                    rest.insert(0, Step::Index(i));
                    return Some(rest);
                }
                if span_contains(&item.span(), offset) {
                    return Some(vec![Step::Index(i)]);
                }
            }
            None
        }
        _ => None,
    }
}

/// Removes the last table key of `path` (an array element is removed with its whole key, as
/// arrays here are lists of strings). Returns false when there is nothing to remove.
fn remove_entry(table: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let (parents, last) = path.split_at(last_key);
    let Some(Step::Key(key)) = last.first() else {
        return false;
    };
    let mut current = table;
    let mut steps = parents.iter();
    while let Some(step) = steps.next() {
        let Step::Key(parent_key) = step else {
            return false;
        };
        let Some(value) = current.get_mut(parent_key.as_str()) else {
            return false;
        };
        let mut value = value.get_mut();
        // Follow array indices until the next table.
        loop {
            match value {
                DeValue::Table(next) => {
                    current = next;
                    break;
                }
                DeValue::Array(items) => {
                    let Some(Step::Index(i)) = steps.next() else {
                        return false;
                    };
                    let Some(item) = items.get_mut(*i) else {
                        return false;
                    };
                    value = item.get_mut();
                }
                _ => return false,
            }
        }
    }
    current.remove(key.as_str()).is_some()
}

/// Records the line of every key in the document, so that validation problems can say where.
fn index_lines(
    table: &DeTable<'_>,
    prefix: &mut Vec<Step>,
    lines: &LineIndex<'_>,
    out: &mut HashMap<String, usize>,
) {
    for (key, value) in table.iter() {
        prefix.push(Step::Key(key.get_ref().to_string()));
        out.insert(render_path(prefix), lines.line(key.span().start));
        index_value_lines(value.get_ref(), prefix, lines, out);
        prefix.pop();
    }
}

fn index_value_lines(
    value: &DeValue<'_>,
    prefix: &mut Vec<Step>,
    lines: &LineIndex<'_>,
    out: &mut HashMap<String, usize>,
) {
    match value {
        DeValue::Table(table) => index_lines(table, prefix, lines, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                out.insert(render_path(prefix), lines.line(item.span().start));
                index_value_lines(item.get_ref(), prefix, lines, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Serde's words for Rust types, in the user's words.
fn humanize(message: &str) -> String {
    // toml reads integers beyond i64 as i128 before the target type refuses them.
    if let Some(rest) = message.strip_prefix("invalid type: integer `") {
        if let Some((number, _)) = rest.split_once("` as i128") {
            return format!("{number} is too large");
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: integer `-") {
        if let Some((number, _)) = rest.split_once('`') {
            return format!("-{number} is negative; expected a whole number of 0 or more");
        }
    }
    let mut text = message.to_owned();
    for rust_type in ["u64", "u32", "usize", "i64", "u16", "u8"] {
        text = text.replace(
            &format!("expected {rust_type}"),
            "expected a whole number (no quotes)",
        );
    }
    // Our raw struct names mean nothing to a user; they are all TOML tables.
    if let Some(at) = text.find("expected struct Raw") {
        text.truncate(at);
        text.push_str("expected a table");
    }
    text.replace(
        "expected a sequence",
        "expected a list such as [\"a\", \"b\"]",
    )
    .replace("expected a boolean", "expected true or false")
    .replace("expected path string", "expected a path in quotes")
}

/// Deserializes the raw structs; each entry that fails is recorded in `problems` and removed,
/// and the rest tried again.
fn deserialize_leniently(
    root: Spanned<DeTable<'_>>,
    lines: &LineIndex<'_>,
    problems: &mut Problems,
) -> Option<RawConfig> {
    let span = root.span();
    let mut table = root.into_inner();
    // Each failed round removes one entry, so this ends; the bound is only a guard.
    for _ in 0..=table_size(&table) {
        let attempt = toml::de::Deserializer::from(Spanned::new(span.clone(), table.clone()));
        let err = match RawConfig::deserialize(attempt) {
            Ok(raw) => return Some(raw),
            Err(err) => err,
        };
        let path = err
            .span()
            .and_then(|span| locate_in_table(&table, span.start));
        let line = err.span().map(|span| lines.line(span.start));
        let mut message = humanize(err.message());
        match path {
            Some(path) => {
                let key = render_path(&path);
                if key == "folder" && message.contains("expected a list") {
                    message.push_str("; each watched folder is a [[folder]] table (two brackets)");
                }
                problems.add_at(key, message, line);
                if !remove_entry(&mut table, &path) {
                    return None;
                }
            }
            None => {
                let key = line.map_or_else(|| "config".to_owned(), |l| format!("line {l}"));
                problems.add_at(key, message, None);
                return None;
            }
        }
    }
    None
}

fn table_size(table: &DeTable<'_>) -> usize {
    table
        .values()
        .map(|value| 1 + value_size(value.get_ref()))
        .sum()
}

fn value_size(value: &DeValue<'_>) -> usize {
    match value {
        DeValue::Table(table) => table_size(table),
        DeValue::Array(items) => items.iter().map(|item| value_size(item.get_ref())).sum(),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Step 3: validation.

struct Problems {
    /// Each problem with its line, so that the list can be given in file order.
    list: Vec<(Option<usize>, ConfigProblem)>,
    /// The line of each key present in the file.
    key_lines: HashMap<String, usize>,
}

impl Problems {
    /// Records a problem, with the key's line when the key is in the file.
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let line = self.key_lines.get(&key).copied();
        self.add_at(key, message, line);
    }

    fn add_at(&mut self, key: impl Into<String>, message: impl Into<String>, line: Option<usize>) {
        let mut message = message.into();
        if let Some(line) = line {
            let _ = write!(message, " (line {line})");
        }
        self.list.push((
            line,
            ConfigProblem {
                key: key.into(),
                message,
            },
        ));
    }

    /// Whether a problem was already recorded at `key` or below it (so "missing" is not added
    /// for a key whose value was refused).
    fn has_problem_at(&self, key: &str) -> bool {
        self.list.iter().any(|(_, p)| {
            p.key == key
                || p.key
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn from_toml_str_with_env(
    text: &str,
    source: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
) -> Result<Settings, ConfigError> {
    let source = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
    let base = source.parent().map(Path::to_path_buf).unwrap_or_default();
    // Windows editors like to start files with a byte-order mark, which TOML does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex { text };
    let invalid = |problems: Vec<ConfigProblem>| ConfigError::Invalid {
        path: source.clone(),
        problems,
    };

    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(err) => {
            let (line, column) = err.span().map_or((1, 1), |span| lines.position(span.start));
            let message = format!(
                "not valid TOML: {} (column {column}: `{}`)",
                err.message().trim_end(),
                lines.line_text(line)
            );
            return Err(invalid(vec![ConfigProblem {
                key: format!("line {line}"),
                message,
            }]));
        }
    };

    let mut key_lines = HashMap::new();
    index_lines(document.get_ref(), &mut Vec::new(), &lines, &mut key_lines);
    let mut problems = Problems {
        list: Vec::new(),
        key_lines,
    };
    let raw = deserialize_leniently(document, &lines, &mut problems);
    let settings = raw.and_then(|raw| validate(raw, &source, &base, env, purpose, &mut problems));
    if problems.list.is_empty() {
        if let Some(settings) = settings {
            return Ok(settings);
        }
    }
    // File order; problems without a line (a missing table) first. The sort is stable.
    problems.list.sort_by_key(|(line, _)| line.unwrap_or(0));
    Err(invalid(
        problems
            .list
            .into_iter()
            .map(|(_, problem)| problem)
            .collect(),
    ))
}

/// Turns raw values into settings, recording every problem; `None` if there was any.
fn validate(
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
    let state_dir = match raw.state.and_then(|s| s.dir) {
        Some(dir) => resolve_path(base, &dir),
        None => default_state_dir(),
    };
    let log = validate_log(raw.log.unwrap_or_default(), base, problems);
    let folders = validate_folders(raw.folder, base, purpose, problems);
    if !problems.list.is_empty() {
        return None;
    }
    Some(Settings {
        source: Some(source.to_path_buf()),
        account: account?,
        upload,
        state_dir,
        log,
        folders,
    })
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
                "{} are all set: keep exactly one password source",
                given.join(" and ")
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
        if purpose == Purpose::Inspect {
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
        if purpose == Purpose::Inspect {
            return Some((
                SecretString::from(String::new()),
                PasswordSource::File(path),
            ));
        }
        let key = "account.password_file";
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                problems.add(key, format!("{} does not exist", path.display()));
                return None;
            }
            Err(err) => {
                problems.add(key, format!("cannot read {}: {err}", path.display()));
                return None;
            }
        };
        let Ok(mut text) = String::from_utf8(bytes) else {
            problems.add(key, format!("{} is not UTF-8 text", path.display()));
            return None;
        };
        // `echo secret > file` leaves a newline that is not part of the password.
        let kept = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(kept);
        if text.is_empty() {
            problems.add(key, format!("{} is empty", path.display()));
            return None;
        }
        return Some((SecretString::from(text), PasswordSource::File(path)));
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
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        problems.add(
            "upload.chunk_size",
            format!(
                "must be between 1 MiB and 64 MiB, not {}",
                format_size(chunk_size)
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
    let bandwidth_limit = raw.bandwidth_limit.map(|r| r.0);
    if bandwidth_limit == Some(0) {
        problems.add(
            "upload.bandwidth_limit",
            "must be greater than 0; leave it out for no limit",
        );
    }
    let api_requests_per_minute = in_range(
        raw.api_requests_per_minute,
        defaults.api_requests_per_minute.into(),
        1..=u64::from(u32::MAX),
        "upload.api_requests_per_minute",
        problems,
    );
    UploadSettings {
        chunk_size,
        // The ranges checked above fit these types; on a problem the value is never used.
        parallel: usize::try_from(parallel).unwrap_or(defaults.parallel),
        max_attempts: u32::try_from(max_attempts).unwrap_or(defaults.max_attempts),
        backoff_max,
        request_timeout,
        url_renew_after,
        bandwidth_limit,
        api_requests_per_minute: u32::try_from(api_requests_per_minute)
            .unwrap_or(defaults.api_requests_per_minute),
    }
}

fn validate_log(raw: RawLog, base: &Path, problems: &mut Problems) -> LogSettings {
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
    for (i, pattern) in patterns.iter().enumerate() {
        let item_key = format!("{key}[{}]", i + 1);
        if pattern.trim().is_empty() {
            problems.add(item_key, "empty pattern");
        } else if pattern.contains(['/', '\\']) {
            problems.add(
                item_key,
                format!("{pattern:?}: patterns match the file name only, not a path"),
            );
        }
    }
    patterns
}

fn validate_folders(
    raw: Vec<RawFolder>,
    base: &Path,
    purpose: Purpose,
    problems: &mut Problems,
) -> Vec<FolderSettings> {
    let mut folders = Vec::new();
    // Index in the file of each folder that made it, for cross-folder messages.
    let mut numbers = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let n = i + 1;
        if let Some(folder) = validate_folder(raw, n, base, purpose, problems) {
            folders.push(folder);
            numbers.push(n);
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
) -> Option<FolderSettings> {
    let key = |field: &str| format!("folder[{n}].{field}");
    let path = match raw.path {
        Some(path) if path.as_os_str().is_empty() => {
            problems.add(key("path"), "empty: the folder to watch");
            None
        }
        Some(path) => {
            let path = resolve_path(base, &path);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => Some(std::fs::canonicalize(&path).unwrap_or(path)),
                // The agent records a missing folder in the store; status must still open it.
                _ if purpose == Purpose::Inspect => Some(path),
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

    // Relative done/failed dirs are read against the watched folder, like their defaults.
    let side_dir = |value: Option<PathBuf>, default: &str| -> Option<PathBuf> {
        let path = path.as_ref()?;
        Some(match value {
            Some(dir) => resolve_path(path, &dir),
            None => path.join(default),
        })
        .map(|dir| canonical_prefix(&dir))
    };
    let done_dir = side_dir(raw.done_dir, "done");
    let failed_dir = side_dir(raw.failed_dir, "failed");
    if let (Some(path), Some(done), Some(failed)) = (&path, &done_dir, &failed_dir) {
        if done == path {
            problems.add(
                key("done_dir"),
                "is the watched folder itself; uploaded files must be moved somewhere else",
            );
        }
        if failed == path {
            problems.add(
                key("failed_dir"),
                "is the watched folder itself; failed files must be moved somewhere else",
            );
        }
        if done == failed {
            problems.add(
                key("failed_dir"),
                format!(
                    "is the same as done_dir ({}); keep uploaded and failed files apart",
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
    let include = validate_patterns(raw.include, default_include, &key("include"), problems);
    if include.is_empty() {
        problems.add(
            key("include"),
            "empty list: no file would ever be picked up; \
             leave include out for every video suffix the platform accepts",
        );
    }
    let exclude = validate_patterns(raw.exclude, default_exclude, &key("exclude"), problems);

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
        path: path?,
        done_dir: done_dir?,
        failed_dir: failed_dir?,
        stable_for,
        recursive: raw.recursive.unwrap_or(true),
        include,
        exclude,
        poll_interval,
        metadata: VideoMetadata {
            title,
            description: raw.description.filter(|d| !d.is_empty()),
            channel: raw.channel,
            group: raw.group,
            keywords,
            auto_publish: raw.auto_publish,
        },
    })
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
/// done/failed dir, a folder (or a done/failed dir) inside a folder watched recursively.
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
                // non-recursive folder is not watched.
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
                }
            }
        }
    }
}

/// `~/x` to the home directory, relative paths against `base`, `.` and `..` removed.
fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    let expanded = match path.strip_prefix("~") {
        Ok(rest) => match directories::BaseDirs::new() {
            Some(dirs) => dirs.home_dir().join(rest),
            None => path.to_path_buf(),
        },
        Err(_) => path.to_path_buf(),
    };
    normalize_lexically(&base.join(expanded))
}

fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The path with its longest existing ancestor canonicalised, so that a done dir that does
/// not exist yet still compares equal to the same place written another way.
fn canonical_prefix(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut out = canonical;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn sizes_read_as_users_write_them() {
        assert_eq!(parse_size("8 MiB"), Ok(8 * MIB));
        assert_eq!(parse_size("8MiB"), Ok(8 * MIB));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("20 MB"), Ok(20_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096 B"), Ok(4096));
        assert_eq!(parse_size(" 2 MIB "), Ok(2 * MIB));
        assert!(parse_size("2 mib").unwrap_err().0.contains("bits"));
        assert!(parse_size("8 Mb").unwrap_err().0.contains("bits"));
        assert!(parse_size("8M").unwrap_err().0.contains("ambiguous"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(
            parse_size("99999999999999999999 TiB")
                .unwrap_err()
                .0
                .contains("too large")
        );
        assert!(parse_size("").is_err());
    }

    #[test]
    fn rates_accept_a_per_second_suffix() {
        assert_eq!(parse_rate("20 MiB/s"), Ok(20 * MIB));
        assert_eq!(parse_rate("20 MiB"), Ok(20 * MIB));
    }

    #[test]
    fn formatted_sizes_read_back_to_the_same_bytes() {
        for bytes in [
            0,
            1,
            1000,
            1024,
            1536,
            8 * MIB,
            3 << 29,
            5 * MIB + 1,
            u64::MAX,
        ] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(8 * MIB), "8 MiB");
    }

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert!(parse_duration("10").unwrap_err().0.contains("10s"));
        assert_eq!(
            parse_duration("366d"),
            Ok(Duration::from_secs(366 * 24 * 3600))
        );
        let huge = parse_duration("500000000000y").unwrap_err().0;
        assert!(huge.contains("too long"), "{huge}");
    }

    #[test]
    fn unknown_title_placeholders_are_found() {
        assert_eq!(unknown_placeholders("{stem} by {author}"), vec!["author"]);
        assert!(unknown_placeholders("{stem} {name} {}").is_empty());
    }

    #[test]
    fn relative_paths_lose_dot_segments() {
        assert_eq!(
            resolve_path(Path::new("/etc/hotfolder"), Path::new("../srv/./x")),
            PathBuf::from("/etc/srv/x")
        );
    }
}
