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
//!
//! This file holds the settings types and the entry points that run those steps; each step,
//! and what `check` does with the result, has a file of its own:
//!
//! - `raw`: step 2, the structs as written and how they are read past a bad entry;
//! - `validate`: step 3;
//! - `diagnostics`: the problem list, and how a problem finds its key and line;
//! - `units`: sizes, rates and durations as users write them;
//! - `paths`: where files go by default and how paths in the file are resolved;
//! - `notify`: step 3 for `[[notify]]` and `[smtp]`;
//! - `describe`: the effective settings that `hotfolder check` prints;
//! - `http`: the `[http]` listener's address, and what `check` warns about it;
//! - `probe`: what only the file system can tell, also for `hotfolder check`.

mod describe;
mod diagnostics;
mod http;
mod notify;
mod paths;
mod probe;
mod raw;
mod units;
mod validate;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use toml::de::DeTable;
use url::Url;

use crate::bandwidth::BandwidthPlan;
use crate::metadata::CompanionRule;
use crate::notify::{EventKind, SecretUrl};
use crate::vmpro::api::{PLATFORM_SUFFIXES, VideoMetadata};

pub use diagnostics::{ConfigError, ConfigProblem};
pub use http::{HttpSettings, listener_warnings};
pub use notify::notify_warnings;
pub use paths::{default_config_path, default_log_dir};
pub use probe::{check_folder_access, secret_file_warnings};
pub use units::{
    format_bandwidth, human_rate, human_size, parse_bandwidth, parse_duration, parse_rate,
    parse_size,
};
pub(crate) use validate::{DEFAULT_KEEP_FILES, read_password_file};

use diagnostics::{LineIndex, Problems, index_lines};
use raw::deserialize_leniently;
use validate::validate;

/// The commented starter config that `hotfolder init` writes.
pub const STARTER_CONFIG: &str = include_str!("../../config.example.toml");

impl Settings {
    /// The VideoManager a folder's files upload into: its own `video_manager_id`, else the
    /// account's. `None` for a folder the config no longer has: its files must not go to the
    /// account's VideoManager by default, which may be another customer's.
    pub fn video_manager_of(&self, folder: &Path) -> Option<u64> {
        let configured = self.folders.iter().find(|f| f.path == folder)?;
        Some(
            configured
                .video_manager_id
                .unwrap_or(self.account.video_manager_id),
        )
    }

    /// Every VideoManager the config uploads into, the account's first, each once.
    pub fn video_managers(&self) -> Vec<u64> {
        let mut ids = vec![self.account.video_manager_id];
        for id in self.folders.iter().filter_map(|f| f.video_manager_id) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

/// The platform's documented API endpoint.
pub const DEFAULT_API_URL: &str = "https://api.video-cdn.net/v1/vms/";
/// The platform's documented token endpoint (Keycloak, OpenID Connect).
pub const DEFAULT_TOKEN_URL: &str =
    "https://login.movingimage.com/auth/realms/platform/protocol/openid-connect/token";

// Shared by the file's defaults (validate) and the defaults of settings built in code.
const DEFAULT_STABLE_FOR: Duration = Duration::from_secs(10);
/// How long a stable file may stay an unfinished container before it goes to failed/.
const DEFAULT_INCOMPLETE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// `claim_lease` unless set: long enough for a share that stalls a minute, short enough that a
/// dead agent's files move on within minutes.
const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Below this, renewals every quarter lease meet the coarse timestamps of some file servers.
const MIN_CLAIM_LEASE: Duration = Duration::from_secs(2);
const DEFAULT_TITLE: &str = "{stem}";
/// How long finished jobs stay in the state store (`[state] keep_jobs_for`): long enough for
/// `status` and an admin's questions about last quarter's deliveries.
pub const DEFAULT_KEEP_JOBS_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

/// Everything hotfolder needs, validated: absolute paths, parsed durations and sizes, the
/// password resolved from its source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from (for messages), or `None` when built in code (demo).
    pub source: Option<PathBuf>,
    pub account: AccountSettings,
    pub upload: UploadSettings,
    pub state_dir: PathBuf,
    /// Finished jobs (done, failed, gone) are deleted from the state store this long after
    /// they finished.
    pub keep_jobs_for: Duration,
    pub log: LogSettings,
    /// `[http] listen`; `None`: no listener.
    pub http: Option<HttpSettings>,
    pub folders: Vec<FolderSettings>,
    /// `[[notify]]` destinations, in the order of their tables.
    pub notify: Vec<NotifySettings>,
    /// `[smtp]`, for e-mail destinations.
    pub smtp: Option<SmtpSettings>,
}

/// One `[[notify]]` table.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The table's number, counted from 1 as in problems (`notify[2]`), for log lines.
    pub number: usize,
    /// `name`: who it is, whatever its URL, format or place; the events it is owed follow it.
    pub name: Option<String>,
    pub target: NotifyTarget,
    /// What it is told; never empty, no kind twice.
    pub events: Vec<EventKind>,
}

/// Where a destination's events go.
#[derive(Debug, Clone)]
pub enum NotifyTarget {
    /// A POST per event.
    Webhook {
        url: SecretUrl,
        format: WebhookFormat,
        /// Signs each body (`X-Hotfolder-Signature`).
        secret: Option<NotifySecret>,
    },
    /// Events batched into messages through `[smtp]`.
    Email { to: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as the contract shows it.
    Json,
    /// `{"text": ...}`, which Slack, Mattermost and Teams incoming webhooks take.
    Slack,
}

/// A secret and where it came from, so `check` can say so without showing it.
#[derive(Debug, Clone)]
pub struct NotifySecret {
    pub value: SecretString,
    pub source: PasswordSource,
}

/// How the connection to the mail server is protected; there is no third way: SMTP never
/// logs in, nor sends a message, without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plain TCP that must turn into TLS with STARTTLS before anything else.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// As written, for `check` (masked).
    pub url: SecretUrl,
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The sender, `hotfolder@studio.example` or `Hotfolder <hotfolder@studio.example>`.
    pub from: String,
    /// The login, when the server wants one.
    pub login: Option<(String, NotifySecret)>,
    /// Extra trusted roots (PEM) for a server with a private CA, read when loaded.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    /// Events for one address list within this long go in one message.
    pub batch_window: Duration,
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

/// `chunk_size`: chosen per file from the measured link, or one size for every file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkSize {
    /// 8 ..= 64 MiB, so that waiting for each chunk's answer costs under 10 % of its time
    /// (see `vmpro::link`); halved when the server refuses a chunk for its size.
    Auto,
    /// Bytes per chunk, 1 MiB ..= 64 MiB; a refusal of that size fails the file.
    Fixed(u64),
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub chunk_size: ChunkSize,
    /// Files uploading at once.
    pub parallel: usize,
    /// Tries per request before the file fails (or, for network outages, the queue pauses).
    pub max_attempts: u32,
    /// Cap of the Fibonacci delay between tries.
    pub backoff_max: Duration,
    /// Time limit for one request; a chunk post times out when nothing moved for this long.
    pub request_timeout: Duration,
    /// Renew the upload URL between chunks once it is this old (the platform's token lasts 4 h).
    pub url_renew_after: Duration,
    /// Chunk bytes per second across all uploads: none, `bandwidth_limit`, or
    /// `bandwidth_schedule` (local time).
    pub bandwidth: BandwidthPlan,
    /// API calls (not chunk posts) per minute; the platform allows 100.
    pub api_requests_per_minute: u32,
    /// Every create-video request carries a marker keyword unique to the job, so a create whose
    /// answer was lost can be looked up instead of repeated (vmpro-protocol.md section 4).
    pub tag_videos: bool,
    /// How long an empty lookup is repeated before a new create: the platform's search index
    /// may lag behind a create.
    pub lookup_wait: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            chunk_size: ChunkSize::Auto,
            parallel: 2,
            max_attempts: 8,
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            url_renew_after: Duration::from_secs(3 * 3600 + 45 * 60),
            bandwidth: BandwidthPlan::Unlimited,
            api_requests_per_minute: 100,
            tag_videos: true,
            lookup_wait: Duration::from_secs(30),
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
    /// `dir` was asked for (`[log] dir`, or systemd's `LogsDirectory=`), not the platform's
    /// default: under the journal, the daily files are written only then.
    pub dir_chosen: bool,
}

#[derive(Debug, Clone)]
pub struct FolderSettings {
    /// The folder as the config names it (made absolute, links not resolved): what a reload
    /// matches folders by, so that a link swapped in later is noticed rather than followed.
    pub configured_path: PathBuf,
    /// `configured_path` with its links resolved when the config was loaded.
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
    /// MP4/MOV/M4V/3GP and MXF files must be structurally whole before they are queued.
    pub check_container: bool,
    /// A stable file whose container is still not whole this long after it last changed goes
    /// to failed/.
    pub incomplete_after: Duration,
    /// Uploaded files are deleted from done/ (their sidecars stay) this long after they were
    /// moved there; `None` keeps them.
    pub keep_done_for: Option<Duration>,
    /// After each upload, follow the platform's transcoding of the video (up to 2 h) and
    /// report it: the sidecar, `transcoded` / `transcoding_slow`.
    pub follow_transcoding: bool,
    /// Several agents watch this folder: each file is claimed (see `shared_folder`) and
    /// uploaded by the one agent whose claim won. Without it, a second agent refuses the
    /// folder.
    pub shared: bool,
    /// A claim (or an agent's presence on the folder) not renewed this long, by the file
    /// server's clock, belongs to an agent that stopped: it is taken over.
    pub claim_lease: Duration,
    /// `metadata_file` and `metadata_wait`: per-file metadata from a companion beside the
    /// video (see `crate::metadata`).
    pub companion: CompanionRule,
    /// `result_xml`: also write `<file name>.xml` in the FTP ingest's result format.
    pub result_xml: bool,
    /// The VideoManager this folder uploads into; `None` = the account's.
    pub video_manager_id: Option<u64>,
    pub metadata: VideoMetadata,
}

impl FolderSettings {
    /// A folder with every default the config file would give it: `done/` and `failed/`
    /// inside it, 10 s of stability, recursive, the default include/exclude lists and the
    /// file's stem as title. For settings built in code (demo, tests).
    pub fn with_defaults(path: PathBuf) -> FolderSettings {
        FolderSettings {
            configured_path: path.clone(),
            done_dir: path.join("done"),
            failed_dir: path.join("failed"),
            path,
            stable_for: DEFAULT_STABLE_FOR,
            recursive: true,
            include: default_include(),
            exclude: default_exclude(),
            poll_interval: None,
            check_container: true,
            incomplete_after: DEFAULT_INCOMPLETE_AFTER,
            keep_done_for: None,
            follow_transcoding: false,
            shared: false,
            claim_lease: DEFAULT_CLAIM_LEASE,
            companion: CompanionRule::default(),
            result_xml: false,
            video_manager_id: None,
            metadata: VideoMetadata {
                title: DEFAULT_TITLE.to_owned(),
                ..VideoMetadata::default()
            },
        }
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

/// What a config is loaded for: each command is refused only for what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Everything the file names must be usable: every watched folder there, the password
    /// readable. [`load`] and [`Settings::from_toml_str`] load for this.
    Run,
    /// The agent (`run`, a reload, and `check`, which checks what `run` needs): as [`Run`],
    /// and at least one `[[folder]]`, since an agent without one has nothing to do.
    ///
    /// [`Run`]: Purpose::Run
    Watch,
    /// `upload`: the password readable; folders are optional and need not exist, since
    /// `upload` only takes a folder's metadata for a file that lies inside it.
    Upload,
    /// Reading the state store (`status`): the password is not read, and watched folders need
    /// not exist. An admin asks for the status exactly when a share is gone, and from a shell
    /// without the service's credentials.
    Inspect,
    /// `status`: as [`Inspect`](Purpose::Inspect), and the folders are not looked at at all
    /// (paths as written): a folder on a hung share would hang the process for good, even
    /// its exit. `status` reads them in a process of its own (see
    /// `shared_folder::survey_apart`).
    Status,
}

/// Reads the config file ([`Purpose::Run`]): `explicit` if given, else
/// [`default_config_path`].
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
    /// Parses and validates config text ([`Purpose::Run`]). `source` is the file it came
    /// from: messages name it and relative paths are resolved against its directory.
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Settings, ConfigError> {
        from_toml_str_with_env(text, source, &|name| std::env::var_os(name), Purpose::Run)
    }
}

/// Stands in for `std::env::var_os`, so that tests can give the password variable without
/// changing the process environment.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The three loading steps of the module documentation, for [`load_for`] and
/// [`Settings::from_toml_str`].
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
    if problems.list.is_empty()
        && let Some(settings) = settings
    {
        return Ok(settings);
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
