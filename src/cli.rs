//! The command line: clap definitions and one function per command. Each command returns an
//! exit code or a [`CommandError`] that says which exit code it means (2 for bad config or
//! usage, 1 for everything else), so `main` stays a few lines.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
    Emulator(EmulatorArgs),
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
        .map_err(|err| anyhow::anyhow!("cannot start the async runtime: {err}"))?;
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
            Command::Run(_) | Command::Status { .. } | Command::Demo { .. } => Err(
                CommandError::Usage("this command arrives with the agent (issue 3)".into()),
            ),
        }
    })
}

/// A token cancelled on the first SIGINT/SIGTERM; a second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        cancel.cancel();
        wait_for_signal().await;
        eprintln!("hotfolder: second signal, exiting at once");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
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
            .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", parent.display()))?;
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
            return Err(anyhow::anyhow!("cannot write {}: {err}", target.display()).into());
        }
    };
    use std::io::Write;
    file.write_all(config::STARTER_CONFIG.as_bytes())
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", target.display()))?;
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
            Err(err) => problems.push(format!("{source}: account: login failed: {err}")),
        },
        Err(err) => problems.push(format!("{source}: account: {err}")),
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
    let platform = Platform::new(&settings.account, &settings.upload)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
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
            Err(err) => return Err(anyhow::anyhow!("an upload task failed: {err}").into()),
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
                    error: Some(err.to_string()),
                    meaning: Some(err.meaning()),
                }
            }
        };
        if json {
            println!(
                "{}",
                serde_json::to_string(&line).map_err(|e| anyhow::anyhow!("{e}"))?
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
            let tenth = if self.size == 0 {
                10
            } else {
                bytes_done * 10 / self.size
            };
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
