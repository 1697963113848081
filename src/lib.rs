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
mod bandwidth;
mod cli;
mod config;
mod console;
mod emulator;
mod error_chain;
mod escape;
mod failed_files;
mod finish;
mod http;
mod logging;
mod manual_upload;
mod metadata;
mod nofollow;
mod notify;
mod preflight;
mod ready;
mod reappeared;
mod retention;
mod retry;
mod sample_video;
mod scan_report;
mod shared_folder;
mod status_report;
mod store;
mod test_skip;
mod transcoding;
mod vmpro;
mod watch;

// The commands, and the one way an error and its causes are printed.
pub use cli::{Cli, CommandError, run};
pub use error_chain::chain;
pub use test_skip::test_skipped;
// `main` marks its last line as an error when stderr is the journal.
pub use logging::{LOG_FILE_PREFIX, LOG_FILE_SUFFIX, stderr_is_journal};
/// The names of the files hotfolder makes in its state dir, for the package's purge (tested
/// against packaging/deb/postrm).
pub use shared_folder::AGENT_ID_FILE_NAME;
pub use store::{
    DB_FILE_NAME, LOCK_FILE_NAME, MANUAL_DB_FILE_NAME, RETRY_LOCK_FILE_NAME, SQLITE_SIDE_SUFFIXES,
};
// Bandwidth limits and the weekly timetable.
pub use bandwidth::{Bandwidth, BandwidthPlan, BandwidthSchedule, Limit};
// The configuration file.
pub use config::{
    AuthStyle, ChunkSize, ConfigError, ConfigProblem, LogFormat, PasswordSource, STARTER_CONFIG,
    Settings, check_folder_access, default_exclude, default_include, human_rate, human_size,
    load as load_config, parse_duration, parse_rate, parse_size, secret_file_warnings,
};
// The built-in platform emulator.
pub use emulator::{
    Emulator, EmulatorOptions, EmulatorStats, Faults, PlatformRefusal, VideoRecord,
};
// The completeness stage's verdicts and the folder watcher.
pub use ready::{
    ContainerCheck, ContainerKind, ContainerVerdict, SkipReason, WriterCheck, check_container,
    check_writers,
};
pub use watch::{
    AUTO_POLL_EVERY, FileSystem, FolderWatcher, WatchError, WatchEvent, WatchLimit, WatchMode,
    WatchSpec, file_system_of, mode_now, scan,
};
// The platform client and the upload engine.
pub use vmpro::api::{Platform, SendingCheck, Unobserved, UploadObserver, VideoMetadata};
pub use vmpro::chunks::{ResumePoint, UploadReport, UploadRequest, upload_file};
pub use vmpro::create::is_marker;
pub use vmpro::error::{Blame, Step, VmproError};
// Generated exports that pass the container check: the tests, the soak and `demo` write them.
pub use sample_video::{ColourBars, Pieces, SampleError, SampleFormat, SampleVideo};
