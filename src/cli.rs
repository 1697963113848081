//! The command line: clap definitions and one function per command. Each command returns an
//! exit code or a [`CommandError`] that says which exit code it means (2 for bad config or
//! usage, 1 for everything else), so `main` stays a few lines.
//!
//! Everything printed goes through `console::outln!`/`errln!`: `println!` panics when stdout is
//! a closed pipe (`hotfolder status | head -1`).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::config::{self, ConfigError, Settings};
use crate::console::{errln, outln};
use crate::emulator::EmulatorArgs;
use crate::vmpro::api::{Platform, UploadObserver, VideoMetadata};
use crate::vmpro::chunks::{ResumePoint, UploadRequest, upload_file};
use crate::vmpro::error::VmproError;

#[derive(Debug, Parser)]
#[command(
    name = "hotfolder",
    version,
    about = "Watches folders for finished video exports and uploads them to movingimage VideoManager Pro"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file (default: $HOTFOLDER_CONFIG, then the platform config path).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch every configured folder and upload what arrives, until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Upload the given files now; they stay where they are.
    Upload {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per file on stdout instead of `path<TAB>video id`.
        #[arg(long)]
        json: bool,
        /// Files to upload.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Validate the config, show the effective settings, check the folders and log in once.
    Check(ConfigArg),
    /// Show the queue from the state store (works while `run` is running).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter config (refuses to overwrite).
    Init {
        /// Where to write it (default: the platform config path).
        path: Option<PathBuf>,
    },
    /// The whole flow with no account: built-in emulator, a sample video, done/ and failed/.
    Demo {
        /// Where to create inbox/, done/ and failed/ (default: ./hotfolder-demo).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The built-in VideoManager Pro emulator alone, for trying configurations offline.
    Emulator(Box<EmulatorArgs>),
}

/// A command that could not do its job; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad config or usage: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    /// stdout failed for a reason other than its reader going away (that one is no error).
    #[error(transparent)]
    Output(#[from] crate::console::StdoutError),
    /// Anything else: exit 1.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CommandError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => ExitCode::from(2),
            CommandError::Output(_) | CommandError::Other(_) => ExitCode::from(1),
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Upload {
                config,
                json,
                paths,
            } => upload(&config, json, &paths).await,
            Command::Check(config) => check(&config).await,
            Command::Init { path } => init(path.as_deref()),
            Command::Emulator(args) => {
                let _log = crate::logging::init_stderr("info").map_err(anyhow::Error::from)?;
                let shutdown = shutdown_on_signals();
                crate::emulator::run_cli(&args, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Run(config) => run_agent(&config).await,
            Command::Status { config, json } => status(&config, json),
            Command::Demo { dir } => demo(dir).await,
        }
    })
}

/// A token cancelled on the first SIGINT/SIGTERM; a second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let cancel = token.clone();
    // The streams are made once: a stream made after a signal would report that signal again.
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    let (Ok(mut interrupt), Ok(mut terminate)) = streams else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM; stop hotfolder with SIGKILL");
        return token;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        cancel.cancel();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        errln!("hotfolder: second signal, exiting at once");
        std::process::exit(130);
    });
    token
}

/// The settings the agent needs, for `run` and `check` (which checks what `run` needs).
fn load_settings(arg: &ConfigArg) -> Result<Settings, CommandError> {
    Ok(config::load_for(
        arg.config.as_deref(),
        config::Purpose::Watch,
    )?)
}

/// `hotfolder init [PATH]`: the starter config, readable and writable by its owner only
/// (0600), since the password may be written into it. Never overwrites a file and never writes
/// through a symlink: `create_new` is `O_CREAT | O_EXCL`, which refuses every existing name,
/// a dangling link included.
fn init(path: Option<&Path>) -> Result<ExitCode, CommandError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let target = match path {
        Some(path) => path.to_path_buf(),
        None => config::default_config_path().ok_or_else(|| {
            CommandError::Usage("no home directory to put the config in; give a PATH".into())
        })?,
    };
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let is_link =
                std::fs::symlink_metadata(&target).is_ok_and(|meta| meta.file_type().is_symlink());
            return Err(CommandError::Usage(if is_link {
                format!(
                    "{} is a symbolic link; not writing through it (give the path it should be)",
                    target.display()
                )
            } else {
                format!("{} already exists; not overwriting it", target.display())
            }));
        }
        Err(err) => {
            let err = anyhow::Error::new(err).context(format!("cannot write {}", target.display()));
            return Err(err.into());
        }
    };
    let written = file
        .write_all(config::STARTER_CONFIG.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(err) = written {
        // Ours, made a moment ago: a half-written starter would make the next `init` refuse.
        drop(file);
        let _ = std::fs::remove_file(&target);
        let err = anyhow::Error::new(err).context(format!("cannot write {}", target.display()));
        return Err(err.into());
    }
    outln!(
        "wrote a starter config to {} (only you can read it: it may hold a password)",
        target.display()
    )?;
    outln!(
        "edit [account] (the password: see the comment above password_env) and [[folder]], \
         then run: hotfolder check --config {}",
        target.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `hotfolder check`: what `run` needs. Every config problem listed (exit 2), then one login
/// with a line per try (exit 1 when the platform could not be reached or refused it: the
/// config may be right and the network down, and a script must tell the two apart).
async fn check(arg: &ConfigArg) -> Result<ExitCode, CommandError> {
    use crate::vmpro::login_check::{LOGIN_CHECK_BUDGET, LoginProgress, check_login};
    let _log = crate::logging::init_stderr("warn").map_err(anyhow::Error::from)?;
    let settings = load_settings(arg)?;
    let source = settings
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built-in)".into());
    outln!("config: {source}")?;
    outln!("{}", settings.describe())?;
    let problems: Vec<String> = config::check_folder_access(&settings)
        .into_iter()
        .map(|p| format!("{source}: {}: {}", p.key, p.message))
        .collect();
    for warning in config::secret_file_warnings(&settings) {
        outln!("warning: {warning}")?;
    }

    let shutdown = shutdown_on_signals();
    let url = login_url(&settings);
    let user = &settings.account.username;
    // The progress callback cannot return an error; the first one is kept and returned after.
    let mut output_error = None;
    let mut progress = |moment: LoginProgress<'_>| {
        let printed = match moment {
            LoginProgress::Trying { number, of } => {
                outln!("logging in to {url} as {user}, try {number} of {of}")
            }
            LoginProgress::WillRetry { error, retry_in } => outln!(
                "  {}; trying again in {:.1} s",
                chain(error),
                retry_in.as_secs_f64()
            ),
        };
        if let Err(err) = printed {
            output_error.get_or_insert(err);
        }
    };
    let login = check_login(
        &settings.account,
        &settings.upload,
        LOGIN_CHECK_BUDGET,
        &mut progress,
        &shutdown,
    )
    .await;
    if let Some(err) = output_error {
        return Err(err.into());
    }
    let login_failed = match login {
        Ok(_) => {
            outln!("login: ok as {user} at {url}")?;
            false
        }
        Err(err) => {
            errln!("login: {}", chain(&err));
            if let Some(hint) = err.hint() {
                errln!("  {hint}");
            }
            true
        }
    };

    for problem in &problems {
        errln!("problem: {problem}");
    }
    if !problems.is_empty() {
        errln!("{} problem(s) found in the config", problems.len());
        Ok(ExitCode::from(2))
    } else if login_failed {
        Ok(ExitCode::from(1))
    } else {
        outln!("everything looks good")?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Where the login goes, for people: the token endpoint, or the legacy login call.
fn login_url(settings: &Settings) -> String {
    let account = &settings.account;
    match account.auth {
        config::AuthStyle::Keycloak => account.token_url.to_string(),
        config::AuthStyle::Legacy => account
            .api_url
            .join("auth/login")
            .unwrap_or_else(|_| account.api_url.clone())
            .to_string(),
    }
}

/// The metadata for a file: the folder's when it lies inside a configured folder.
fn metadata_for(settings: &Settings, path: &Path) -> VideoMetadata {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    settings
        .folders
        .iter()
        .find(|folder| absolute.starts_with(&folder.path))
        .map(|folder| folder.metadata.clone())
        .unwrap_or_else(|| VideoMetadata {
            title: "{stem}".into(),
            ..Default::default()
        })
}

/// The outcome of one file of `hotfolder upload`.
#[derive(serde::Serialize)]
struct UploadLine {
    path: String,
    status: &'static str,
    video_id: Option<String>,
    size: Option<u64>,
    sha256: Option<String>,
    chunks: Option<u32>,
    seconds: Option<f64>,
    bytes_per_second: Option<f64>,
    error: Option<String>,
    meaning: Option<String>,
}

impl UploadLine {
    fn failed(path: &Path, error: String, meaning: String) -> UploadLine {
        UploadLine {
            path: path.display().to_string(),
            status: "failed",
            video_id: None,
            size: None,
            sha256: None,
            chunks: None,
            seconds: None,
            bytes_per_second: None,
            error: Some(error),
            meaning: Some(meaning),
        }
    }
}

/// What became of one path given to `hotfolder upload`.
enum FileOutcome {
    Uploaded(crate::vmpro::chunks::UploadReport),
    Failed(VmproError),
    /// Refused before any request: it could never be uploaded.
    Refused(crate::preflight::LocalFileError),
}

/// `hotfolder upload [--json] PATH...`.
async fn upload(arg: &ConfigArg, json: bool, paths: &[PathBuf]) -> Result<ExitCode, CommandError> {
    let _log = crate::logging::init_stderr("warn").map_err(anyhow::Error::from)?;
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Upload)?;
    let platform =
        Platform::new(&settings.account, &settings.upload).map_err(anyhow::Error::from)?;
    let shutdown = shutdown_on_signals();
    let progress = Progress::new(json);

    // Every path is looked at before the first request, so that a typo or a stray .txt is
    // reported at once, not after the other files' uploads, and never reaches the platform.
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for (order, path) in paths.iter().enumerate() {
        match crate::preflight::check_upload_path(path) {
            Ok(_) => accepted.push((order, path)),
            Err(err) => {
                errln!(
                    "{}: not uploaded: {} ({})",
                    path.display(),
                    chain(&err),
                    err.meaning()
                );
                results.push((order, path.clone(), FileOutcome::Refused(err)));
            }
        }
    }

    let limit = Arc::new(tokio::sync::Semaphore::new(settings.upload.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (order, path) in accepted {
        let platform = platform.clone();
        let shutdown = shutdown.clone();
        let limit = limit.clone();
        let metadata = metadata_for(&settings, path);
        let observer = progress.file(path);
        let path = path.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let request = UploadRequest {
                path: path.clone(),
                file_name,
                metadata,
                resume: ResumePoint::default(),
            };
            let result = upload_file(&platform, request, observer.as_ref(), &shutdown).await;
            observer.finish(&result);
            let outcome = match result {
                Ok(report) => FileOutcome::Uploaded(report),
                Err(err) => FileOutcome::Failed(err),
            };
            (order, path, outcome)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context("an upload task failed")
                    .into());
            }
        }
    }
    results.sort_by_key(|(order, _, _)| *order);

    let mut failed = 0;
    for (_, path, outcome) in results {
        let line = match outcome {
            FileOutcome::Uploaded(report) => UploadLine {
                path: path.display().to_string(),
                status: "uploaded",
                video_id: Some(report.video_id.clone()),
                size: Some(report.size),
                sha256: Some(report.sha256.clone()),
                chunks: Some(report.chunks),
                seconds: Some(report.elapsed.as_secs_f64()),
                bytes_per_second: Some(report.bytes_per_second()),
                error: None,
                meaning: None,
            },
            FileOutcome::Failed(err) => {
                failed += 1;
                UploadLine::failed(&path, chain(&err), err.meaning())
            }
            FileOutcome::Refused(err) => {
                failed += 1;
                if !json {
                    // Said before the uploads began.
                    continue;
                }
                UploadLine::failed(&path, chain(&err), err.meaning().to_owned())
            }
        };
        if json {
            outln!(
                "{}",
                serde_json::to_string(&line).context("cannot encode the upload result as JSON")?
            )?;
        } else if let Some(video_id) = &line.video_id {
            outln!("{}\t{}", line.path, video_id)?;
        } else {
            errln!(
                "{}: failed: {} ({})",
                line.path,
                line.error.as_deref().unwrap_or(""),
                line.meaning.as_deref().unwrap_or("")
            );
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress display for `upload`: bars on a terminal, a few plain lines otherwise.
struct Progress {
    bars: Option<indicatif::MultiProgress>,
    quiet: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        let bars = (std::io::stderr().is_terminal() && !json).then(indicatif::MultiProgress::new);
        Progress { bars, quiet: json }
    }

    fn file(&self, path: &Path) -> Arc<FileProgress> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(indicatif::ProgressBar::new(size));
            // indicatif's own {bytes} and {bytes_per_sec} print "12.00 MiB"; these keys print
            // sizes the way every other place does.
            let style = indicatif::ProgressStyle::with_template(
                "{msg:30!} {bar:30} {done}/{size} {rate} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key(
                "done",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&config::human_size(state.pos()));
                },
            )
            .with_key(
                "size",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&config::human_size(state.len().unwrap_or(0)));
                },
            )
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&config::human_rate(state.per_sec()));
                },
            );
            bar.set_style(style);
            bar.set_message(name.clone());
            bar
        });
        Arc::new(FileProgress {
            name,
            size,
            bar,
            plain: self.bars.is_none() && !self.quiet,
            started: std::time::Instant::now(),
            last_tenth: Mutex::new(0),
        })
    }
}

struct FileProgress {
    name: String,
    size: u64,
    bar: Option<indicatif::ProgressBar>,
    /// Not a terminal: a line at each tenth of the file, on stderr.
    plain: bool,
    started: std::time::Instant,
    last_tenth: Mutex<u64>,
}

impl FileProgress {
    fn finish(&self, result: &Result<crate::vmpro::chunks::UploadReport, VmproError>) {
        if let Some(bar) = &self.bar {
            match result {
                Ok(_) => bar.finish_with_message(format!("{} uploaded", self.name)),
                Err(_) => bar.abandon_with_message(format!("{} failed", self.name)),
            }
        }
    }
}

impl UploadObserver for FileProgress {
    fn event(&self, event: &str, detail: &str) {
        if self.plain {
            errln!("{}: {event}: {detail}", self.name);
        } else if let Some(bar) = &self.bar {
            bar.println(format!("{}: {event}: {detail}", self.name));
        }
    }

    fn chunk_accepted(&self, index: u32, total: u32, _chunk_size: u64, bytes_done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes_done);
        } else if self.plain {
            let tenth = (bytes_done * 10).checked_div(self.size).unwrap_or(10);
            let mut last = self.last_tenth.lock().unwrap_or_else(|e| e.into_inner());
            if tenth > *last || index == total {
                *last = tenth;
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                errln!(
                    "{}: chunk {index}/{total}, {} of {}, {}",
                    self.name,
                    config::human_size(bytes_done),
                    config::human_size(self.size),
                    config::human_rate(bytes_done as f64 / secs)
                );
            }
        }
    }

    fn restarted(&self) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }
}

/// `hotfolder run`: the agent until SIGTERM/SIGINT.
async fn run_agent(arg: &ConfigArg) -> Result<ExitCode, CommandError> {
    let settings = load_settings(arg)?;
    let _log = crate::logging::init_agent(&settings.log).map_err(anyhow::Error::from)?;
    tracing::info!(
        config = %settings.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "hotfolder {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let shutdown = shutdown_on_signals();
    let reloads = reload_on_sighup(settings.source.clone());
    match crate::agent::run(settings, shutdown, || {}, reloads).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::agent::AgentError::NoFolders) => Err(CommandError::Usage(
            "the config has no [[folder]]: nothing to watch".into(),
        )),
        Err(err) => {
            tracing::error!(target: crate::logging::EXIT_TARGET, "{}", chain(&err));
            Err(anyhow::Error::from(err).into())
        }
    }
}

/// Re-reads the config file at each SIGHUP and hands the new settings to the agent; a broken
/// file is refused with a log line and the running settings stay in force.
fn reload_on_sighup(source: Option<PathBuf>) -> tokio::sync::mpsc::UnboundedReceiver<Settings> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!("cannot listen for SIGHUP ({err}); config reload is off");
            return receiver;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: re-reading the config");
            match config::load_for(source.as_deref(), config::Purpose::Watch) {
                Ok(settings) => {
                    if sender.send(settings).is_err() {
                        return;
                    }
                }
                Err(err) => tracing::error!(
                    "config reload refused; the running config stays in force:\n{}",
                    chain(&err)
                ),
            }
        }
    });
    receiver
}

/// `hotfolder status [--json]`: the queue from the state store, read-only.
fn status(arg: &ConfigArg, json: bool) -> Result<ExitCode, CommandError> {
    use crate::store::{JobState, JobStore, StoreError};
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Inspect)?;
    // A store at schema version 0 is one that `run` is creating this very moment.
    let mut opened = JobStore::open_read_only(&settings.state_dir);
    for _ in 0..20 {
        if !matches!(opened, Err(StoreError::NeedsUpgrade { found: 0, .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        opened = JobStore::open_read_only(&settings.state_dir);
    }
    let store = match opened {
        Ok(store) => store,
        Err(StoreError::NoStore { path }) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"state_store": path, "jobs": [], "summary": null})
                )?;
            } else {
                outln!(
                    "no state store at {} yet: `hotfolder run` has not run with this config",
                    path.display()
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) => return Err(anyhow::Error::from(err).into()),
    };
    let summary = store.summary().map_err(anyhow::Error::from)?;
    let pause = store.queue_pause().map_err(anyhow::Error::from)?;
    let missing = store.missing_folders().map_err(anyhow::Error::from)?;
    let unfinished = store.unfinished().map_err(anyhow::Error::from)?;
    let recent = store.recent_finished(10).map_err(anyhow::Error::from)?;
    let now = time::OffsetDateTime::now_utc();
    let rate = |job: &crate::store::Job| -> Option<f64> {
        let started = job.started_at?;
        let secs = (now - started).as_seconds_f64();
        (secs > 0.0 && job.bytes_sent > 0).then(|| job.bytes_sent as f64 / secs)
    };
    if json {
        let job_json = |job: &crate::store::Job| {
            serde_json::json!({
                "id": job.id,
                "path": job.path,
                "state": job.state.as_str(),
                "size": job.size,
                "video_id": job.video_id,
                "next_chunk": job.next_chunk,
                "total_chunks": job.total_chunks,
                "bytes_sent": job.bytes_sent,
                "bytes_per_second": rate(job),
                "attempts": job.attempts,
                "pause_reason": job.pause_reason,
                "error": job.error,
                "destination": job.destination,
            })
        };
        let out = serde_json::json!({
            "state_store": store.path(),
            "summary": {
                "waiting": summary.waiting, "uploading": summary.uploading, "paused": summary.paused,
                "finishing": summary.finishing, "done": summary.done, "failed": summary.failed,
            },
            "queue_paused": pause.as_ref().map(|(reason, since)| serde_json::json!({
                "reason": reason,
                "since": since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            })),
            "missing_folders": missing.iter().map(|folder| serde_json::json!({
                "path": folder.path,
                "why": folder.why,
                "since": folder.since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "jobs": unfinished.iter().map(job_json).collect::<Vec<_>>(),
            "recent": recent.iter().map(job_json).collect::<Vec<_>>(),
        });
        outln!("{out}")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("queue: {}", crate::agent::queue_counts(&summary))?;
    if let Some((reason, since)) = &pause {
        outln!("PAUSED since {since}: {reason}")?;
        outln!("  files stay where they are; hotfolder keeps trying and resumes by itself")?;
    }
    for folder in &missing {
        outln!(
            "FOLDER MISSING since {}: {}: {}",
            folder.since,
            folder.path.display(),
            folder.why
        )?;
        outln!(
            "  new files there are not noticed until it is back; hotfolder checks every few seconds"
        )?;
    }
    for job in &unfinished {
        let name = job.path.display();
        match job.state {
            JobState::Uploading => outln!(
                "uploading  {name}  chunk {}/{}  {}  video {}",
                job.next_chunk.saturating_sub(1),
                job.total_chunks
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                rate(job)
                    .map(config::human_rate)
                    .unwrap_or_else(|| "-".into()),
                job.video_id.as_deref().unwrap_or("-")
            )?,
            JobState::Paused => outln!(
                "paused     {name}  ({})",
                job.pause_reason.as_deref().unwrap_or("no reason recorded")
            )?,
            JobState::Finishing => outln!("finishing  {name}")?,
            _ => outln!("waiting    {name}")?,
        }
    }
    for job in &recent {
        let target = job
            .destination
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        match job.state {
            JobState::Done => outln!(
                "done       {name} → {target}  video {}",
                job.video_id.as_deref().unwrap_or("-"),
                name = job.rel_path.display()
            )?,
            JobState::Failed => outln!(
                "failed     {name} → {target}  {}",
                job.error.as_ref().map(|e| e.meaning.as_str()).unwrap_or(""),
                name = job.rel_path.display()
            )?,
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hotfolder demo [--dir DIR]`: the built-in emulator, a sample export, and the agent.
async fn demo(dir: Option<PathBuf>) -> Result<ExitCode, CommandError> {
    use crate::config::{
        AccountSettings, AuthStyle, FolderSettings, LogFormat, LogSettings, PasswordSource,
        UploadSettings,
    };
    use crate::emulator::{Emulator, EmulatorOptions};

    let dir = dir.unwrap_or_else(|| PathBuf::from("hotfolder-demo"));
    let inbox = dir.join("inbox");
    for sub in ["inbox", "done", "failed"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let inbox = std::fs::canonicalize(&inbox).unwrap_or(inbox);
    let options = EmulatorOptions::default();
    let emulator = Emulator::start(([127, 0, 0, 1], 0).into(), options.clone())
        .await
        .context("cannot start the emulator on 127.0.0.1")?;

    let mut folder = FolderSettings::with_defaults(inbox.clone());
    folder.done_dir = dir.join("done");
    folder.failed_dir = dir.join("failed");
    folder.stable_for = std::time::Duration::from_secs(2);
    let settings = Settings {
        source: None,
        account: AccountSettings {
            api_url: emulator.api_url(),
            token_url: emulator.token_url(),
            auth: AuthStyle::Keycloak,
            username: options.username.clone(),
            password: options.password.clone().into(),
            password_source: PasswordSource::Inline,
            video_manager_id: crate::emulator::DEFAULT_VIDEO_MANAGER_ID,
        },
        upload: UploadSettings {
            chunk_size: 1024 * 1024,
            ..UploadSettings::default()
        },
        state_dir: dir.join(".hotfolder-state"),
        log: LogSettings {
            dir: dir.join("logs"),
            level: "info".into(),
            format: LogFormat::Text,
            keep_files: 3,
        },
        folders: vec![folder],
    };
    let _log = crate::logging::init_agent(&settings.log).map_err(anyhow::Error::from)?;
    outln!("hotfolder demo")?;
    outln!(
        "  emulated VideoManager Pro: {} (user {:?})",
        emulator.base_url(),
        options.username
    )?;
    outln!("  watching:  {}", inbox.display())?;
    outln!("  done:      {}", dir.join("done").display())?;
    outln!("  failed:    {}", dir.join("failed").display())?;
    outln!("  A sample video is being written into the inbox now. Drop your own files there too;")?;
    outln!(
        "  press Ctrl-C to stop. Uploaded videos: {}_emulator/videos",
        emulator.base_url()
    )?;
    outln!("")?;

    let shutdown = shutdown_on_signals();
    let sample = inbox.join(format!(
        "sample-{}.mp4",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
    let ready = move || {
        tokio::spawn(write_sample_slowly(sample));
    };
    // The demo's settings are built in code: there is nothing to reload.
    let (_no_reloads, reloads) = tokio::sync::mpsc::unbounded_channel();
    let result = crate::agent::run(settings, shutdown, ready, reloads).await;
    emulator.shutdown().await;
    result.map_err(anyhow::Error::from)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a 12 MiB sample "export" in pieces over about a second, the way an editing
/// application does, so the demo shows hotfolder waiting for the file to be complete.
async fn write_sample_slowly(path: PathBuf) {
    use tokio::io::AsyncWriteExt;
    let Ok(mut file) = tokio::fs::File::create(&path).await else {
        tracing::warn!(file = %path.display(), "cannot write the sample video");
        return;
    };
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..12 {
        let mut piece = Vec::with_capacity(1024 * 1024);
        while piece.len() < 1024 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            piece.extend_from_slice(&state.to_le_bytes());
        }
        if file.write_all(&piece).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    }
    let _ = file.sync_all().await;
    tracing::info!(file = %path.display(), "sample video written (12 MiB)");
}
