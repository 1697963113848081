//! The config file: raw serde structs that mirror the TOML (unknown keys refused) and their
//! conversion into validated [`Settings`] that the rest of the program uses.
//!
//! SKELETON: the types below are the contract between modules; parsing is being written.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::vmpro::api::VideoMetadata;

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
