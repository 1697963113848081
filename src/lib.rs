//! hotfolder: watches folders for finished video exports and uploads them to movingimage
//! VideoManager Pro with the platform's chunked upload protocol.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! watch ──► ready ──► queue ──► upload ──► finish
//! ```
//!
//! `config` turns the TOML file into validated [`Settings`]; `vmpro` is the platform client
//! (auth, API calls, the chunked upload engine); `retry` is the Fibonacci backoff; `emulator` is
//! the built-in VideoManager Pro emulator used by `demo`, `emulator` and tests; `cli` holds one
//! function per command and `agent` wires the stages for `run`.
//!
//! The modules are private: what the binary and the integration tests use is re-exported below,
//! so anything else that nothing uses is reported as dead code.
//!
//! Unix only (Linux and macOS): file identity (device and inode), permissions, signals and the
//! service managers it runs under are Unix's.

#[cfg(not(unix))]
compile_error!("hotfolder runs on Linux and macOS only");

mod agent;
mod cli;
mod config;
mod console;
mod emulator;
mod error_chain;
mod escape;
mod finish;
mod logging;
mod manual_upload;
mod nofollow;
mod preflight;
mod ready;
mod retry;
mod status_report;
mod store;
mod vmpro;
mod watch;

// The commands, and the one way an error and its causes are printed.
pub use cli::{Cli, CommandError, run};
pub use error_chain::chain;
// The configuration file.
pub use config::{
    AuthStyle, ConfigError, ConfigProblem, LogFormat, PasswordSource, STARTER_CONFIG, Settings,
    check_folder_access, default_exclude, default_include, human_rate, human_size,
    load as load_config, parse_duration, parse_rate, parse_size, secret_file_warnings,
};
// The built-in platform emulator.
pub use emulator::{
    Emulator, EmulatorOptions, EmulatorStats, Faults, PlatformRefusal, VideoRecord,
};
// The completeness stage's verdicts and the folder watcher.
pub use ready::SkipReason;
pub use watch::{FolderWatcher, WatchError, WatchEvent, WatchSpec, scan};
// The platform client and the upload engine.
pub use vmpro::api::{Platform, Unobserved, UploadObserver, VideoMetadata};
pub use vmpro::chunks::{ResumePoint, UploadReport, UploadRequest, upload_file};
pub use vmpro::create::is_marker;
pub use vmpro::error::{Blame, Step, VmproError};
