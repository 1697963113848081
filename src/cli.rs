//! The command line: clap definitions and one function per command. Each command returns an
//! exit code or a [`CommandError`] that says which exit code it means (2 for bad config or
//! usage, 1 for everything else), so `main` stays a few lines.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::config::{self, ConfigError, Settings};
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
    /// Anything else: exit 1.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CommandError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => ExitCode::from(2),
            CommandError::Other(_) => ExitCode::from(1),
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
        eprintln!("hotfolder: second signal, exiting at once");
        std::process::exit(130);
    });
    token
}

fn load_settings(arg: &ConfigArg) -> Result<Settings, CommandError> {
    Ok(config::load(arg.config.as_deref())?)
}

/// `hotfolder init [PATH]`.
fn init(path: Option<&Path>) -> Result<ExitCode, CommandError> {
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
        .open(&target)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CommandError::Usage(format!(
                "{} already exists; not overwriting it",
                target.display()
            )));
        }
        Err(err) => {
            let err = anyhow::Error::new(err).context(format!("cannot write {}", target.display()));
            return Err(err.into());
        }
    };
    use std::io::Write;
    file.write_all(config::STARTER_CONFIG.as_bytes())
        .with_context(|| format!("cannot write {}", target.display()))?;
    println!("wrote a starter config to {}", target.display());
    println!(
        "edit [account] and [[folder]], then run: hotfolder check --config {}",
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `hotfolder check`: every problem listed, exit 2 if any.
async fn check(arg: &ConfigArg) -> Result<ExitCode, CommandError> {
    let _log = crate::logging::init_stderr("warn").map_err(anyhow::Error::from)?;
    let settings = load_settings(arg)?;
    let source = settings
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built-in)".into());
    println!("config: {source}");
    println!("{}", settings.describe());
    let mut problems: Vec<String> = config::check_folder_access(&settings)
        .into_iter()
        .map(|p| format!("{source}: {}: {}", p.key, p.message))
        .collect();
    for warning in config::secret_file_warnings(&settings) {
        println!("warning: {warning}");
    }
    let shutdown = shutdown_on_signals();
    match Platform::new(&settings.account, &settings.upload) {
        Ok(platform) => match platform.login(&shutdown).await {
            Ok(()) => println!(
                "login: ok as {} at {}",
                settings.account.username,
                login_url(&settings)
            ),
            Err(err) => problems.push(format!("{source}: account: login failed: {}", chain(&err))),
        },
        Err(err) => problems.push(format!("{source}: account: {}", chain(&err))),
    }
    if problems.is_empty() {
        println!("everything looks good");
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &problems {
            eprintln!("problem: {problem}");
        }
        eprintln!("{} problem(s) found", problems.len());
        Ok(ExitCode::from(2))
    }
}

fn login_url(settings: &Settings) -> String {
    match settings.account.auth {
        config::AuthStyle::Keycloak => settings.account.token_url.to_string(),
        config::AuthStyle::Legacy => settings.account.api_url.to_string(),
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

/// `hotfolder upload [--json] PATH...`.
async fn upload(arg: &ConfigArg, json: bool, paths: &[PathBuf]) -> Result<ExitCode, CommandError> {
    let _log = crate::logging::init_stderr("warn").map_err(anyhow::Error::from)?;
    let settings = load_settings(arg)?;
    let platform =
        Platform::new(&settings.account, &settings.upload).map_err(anyhow::Error::from)?;
    let shutdown = shutdown_on_signals();
    let progress = Progress::new(json);

    let limit = Arc::new(tokio::sync::Semaphore::new(settings.upload.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (order, path) in paths.iter().enumerate() {
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
            (order, path, result)
        });
    }
    let mut results = Vec::new();
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
    for (_, path, result) in results {
        let line = match result {
            Ok(report) => UploadLine {
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
            Err(err) => {
                failed += 1;
                UploadLine {
                    path: path.display().to_string(),
                    status: "failed",
                    video_id: None,
                    size: None,
                    sha256: None,
                    chunks: None,
                    seconds: None,
                    bytes_per_second: None,
                    error: Some(chain(&err)),
                    meaning: Some(err.meaning()),
                }
            }
        };
        if json {
            println!(
                "{}",
                serde_json::to_string(&line).context("cannot encode the upload result as JSON")?
            );
        } else if let Some(video_id) = &line.video_id {
            println!("{}\t{}", line.path, video_id);
        } else {
            eprintln!(
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
            let style = indicatif::ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
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
            eprintln!("{}: {event}: {detail}", self.name);
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
                eprintln!(
                    "{}: chunk {index}/{total}, {} of {} bytes, {:.1} MB/s",
                    self.name,
                    bytes_done,
                    self.size,
                    bytes_done as f64 / secs / 1e6
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
            match config::load(source.as_deref()) {
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
                println!(
                    "{}",
                    serde_json::json!({"state_store": path, "jobs": [], "summary": null})
                );
            } else {
                println!(
                    "no state store at {} yet: `hotfolder run` has not run with this config",
                    path.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) => return Err(anyhow::Error::from(err).into()),
    };
    let summary = store.summary().map_err(anyhow::Error::from)?;
    let pause = store.queue_pause().map_err(anyhow::Error::from)?;
    // While the store cannot be written (a full disk), the agent says why in its lock file.
    let pause = crate::store::read_agent_note(&settings.state_dir)
        .map(|note| (note.paused, note.since))
        .or(pause);
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
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("queue: {}", crate::agent::queue_counts(&summary));
    if let Some((reason, since)) = &pause {
        println!("PAUSED since {since}: {reason}");
        println!("  files stay where they are; hotfolder keeps trying and resumes by itself");
    }
    for folder in &missing {
        println!(
            "FOLDER MISSING since {}: {}: {}",
            folder.since,
            folder.path.display(),
            folder.why
        );
        println!(
            "  new files there are not noticed until it is back; hotfolder checks every few seconds"
        );
    }
    for job in &unfinished {
        let name = job.path.display();
        match job.state {
            JobState::Uploading => println!(
                "uploading  {name}  chunk {}/{}  {}  video {}",
                job.next_chunk.saturating_sub(1),
                job.total_chunks
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                rate(job)
                    .map(|r| format!("{:.1} MB/s", r / 1e6))
                    .unwrap_or_else(|| "-".into()),
                job.video_id.as_deref().unwrap_or("-")
            ),
            JobState::Paused => println!(
                "paused     {name}  ({})",
                job.pause_reason.as_deref().unwrap_or("no reason recorded")
            ),
            JobState::Finishing => println!("finishing  {name}"),
            _ => println!("waiting    {name}"),
        }
    }
    for job in &recent {
        let target = job
            .destination
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        match job.state {
            JobState::Done => println!(
                "done       {name} → {target}  video {}",
                job.video_id.as_deref().unwrap_or("-"),
                name = job.rel_path.display()
            ),
            JobState::Failed => println!(
                "failed     {name} → {target}  {}",
                job.error.as_ref().map(|e| e.meaning.as_str()).unwrap_or(""),
                name = job.rel_path.display()
            ),
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
        keep_jobs_for: config::DEFAULT_KEEP_JOBS_FOR,
        log: LogSettings {
            dir: dir.join("logs"),
            level: "info".into(),
            format: LogFormat::Text,
            keep_files: 3,
        },
        folders: vec![folder],
    };
    let _log = crate::logging::init_agent(&settings.log).map_err(anyhow::Error::from)?;
    println!("hotfolder demo");
    println!(
        "  emulated VideoManager Pro: {} (user {:?})",
        emulator.base_url(),
        options.username
    );
    println!("  watching:  {}", inbox.display());
    println!("  done:      {}", dir.join("done").display());
    println!("  failed:    {}", dir.join("failed").display());
    println!(
        "  A sample video is being written into the inbox now. Drop your own files there too;"
    );
    println!(
        "  press Ctrl-C to stop. Uploaded videos: {}_emulator/videos",
        emulator.base_url()
    );
    println!();

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
