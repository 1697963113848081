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
use crate::escape::escaped;
use crate::manual_upload::{ManualOutcome, ManualRequest, ManualUploadError, upload_remembered};
use crate::status_report::ReportClock;
use crate::store::{ManualUploads, UploadTarget};
use crate::vmpro::api::{Platform, UploadObserver, VideoMetadata};
use crate::vmpro::error::{Blame, VmproError};

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
    /// Upload the given files now; they stay where they are. A file uploaded before and
    /// unchanged since is not sent again; an interrupted upload resumes on its video.
    Upload {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per file on stdout instead of `path<TAB>video id`.
        #[arg(long)]
        json: bool,
        /// Upload as a new video even when the file was uploaded before.
        #[arg(long)]
        again: bool,
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
        /// How many recently finished files to show, newest first.
        #[arg(long, value_name = "N", default_value_t = 10)]
        recent: usize,
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

/// How long the end of a command waits for blocking work still running (a read from a share
/// that stopped answering never returns): after this the process exits anyway. Dropping the
/// runtime instead would wait for it for ever.
const LEFTOVER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    crate::status_report::remember_local_offset();
    // Before the runtime's threads exist: only a single-threaded process may ask for the
    // local time zone, which `status` shows its times in.
    if let Command::Status {
        config,
        json,
        recent,
    } = &cli.command
    {
        return status(config, *json, *recent);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Upload {
                config,
                json,
                again,
                paths,
            } => upload(&config, json, again, &paths).await,
            Command::Check(config) => check(&config).await,
            Command::Init { path } => init(path.as_deref()),
            Command::Emulator(args) => {
                let _log = crate::logging::init_stderr("info").map_err(anyhow::Error::from)?;
                let shutdown = shutdown_on_signals();
                crate::emulator::run_cli(&args, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Run(config) => run_agent(&config).await,
            Command::Status {
                config,
                json,
                recent,
            } => status(&config, json, recent),
            Command::Demo { dir } => demo(dir).await,
        }
    });
    runtime.shutdown_timeout(LEFTOVER_PATIENCE);
    result
}

/// A token cancelled on the first SIGINT/SIGTERM; a second signal exits at once.
///
/// The signals are listened for on a thread of their own with its own small runtime, not on
/// the command's: the second signal is for when the command is stuck, and then the command's
/// runtime may be too (every worker thread blocked, or the runtime already shutting down and
/// waiting for a blocking task, which drops every task, a listener included).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let (listening, installed) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("hotfolder-signals".into())
        .spawn(move || listen_for_signals(&cancel, &listening));
    // Wait until the handlers are in place, so that a signal right after this returns is
    // not missed.
    let ready = match spawned {
        Ok(_) => installed.recv().unwrap_or(false),
        Err(_) => false,
    };
    if !ready {
        tracing::warn!("cannot listen for SIGINT/SIGTERM; stop hotfolder with SIGKILL");
    }
    token
}

/// The signal thread: cancels `cancel` at the first SIGINT/SIGTERM and ends the process at the
/// second. Says on `listening` whether the handlers could be installed.
fn listen_for_signals(cancel: &CancellationToken, listening: &std::sync::mpsc::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => {
            // The receiver waits for this answer; it cannot be gone yet.
            let _ = listening.send(false);
            return;
        }
    };
    runtime.block_on(async {
        // The streams are made once: a stream made after a signal would report it again.
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        let (Ok(mut interrupt), Ok(mut terminate)) = streams else {
            let _ = listening.send(false);
            return;
        };
        let _ = listening.send(true);
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

/// The metadata for a file: the folder's when it lies inside a configured folder (and that
/// folder, outside its done/ and failed/).
fn metadata_for(settings: &Settings, path: &Path) -> (VideoMetadata, Option<PathBuf>) {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match settings
        .folders
        .iter()
        .find(|folder| absolute.starts_with(&folder.path))
    {
        Some(folder) => {
            let watched = !absolute.starts_with(&folder.done_dir)
                && !absolute.starts_with(&folder.failed_dir);
            (
                folder.metadata.clone(),
                watched.then(|| folder.path.clone()),
            )
        }
        None => (
            VideoMetadata {
                title: "{stem}".into(),
                ..Default::default()
            },
            None,
        ),
    }
}

/// The outcome of one file of `hotfolder upload`.
#[derive(serde::Serialize)]
struct UploadLine {
    path: String,
    status: &'static str,
    video_id: Option<String>,
    /// Uploaded by an earlier `hotfolder upload` and unchanged since: nothing was sent.
    already_uploaded: bool,
    /// Continued an upload an earlier `hotfolder upload` started.
    resumed: bool,
    size: Option<u64>,
    sha256: Option<String>,
    chunks: Option<u32>,
    seconds: Option<f64>,
    bytes_per_second: Option<f64>,
    /// When it was uploaded, for an `already_uploaded` file (RFC 3339).
    uploaded_at: Option<String>,
    error: Option<String>,
    meaning: Option<String>,
    /// `uploaded_at` for people.
    #[serde(skip)]
    uploaded_at_local: Option<String>,
}

impl UploadLine {
    /// A path refused before any request (`error`), in the `--json` output.
    fn failed(path: &Path, error: String, meaning: String) -> UploadLine {
        UploadLine {
            status: "failed",
            error: Some(error),
            meaning: Some(meaning),
            ..UploadLine::not_uploaded(path, None)
        }
    }

    /// A file not tried because of `refused`, a refusal every file would get.
    fn not_uploaded(path: &Path, refused: Option<&VmproError>) -> UploadLine {
        UploadLine {
            path: escaped(path).to_string(),
            status: "not_uploaded",
            video_id: None,
            already_uploaded: false,
            resumed: false,
            size: None,
            sha256: None,
            chunks: None,
            seconds: None,
            bytes_per_second: None,
            uploaded_at: None,
            error: refused.map(|err| chain(err)),
            meaning: refused.map(VmproError::meaning),
            uploaded_at_local: None,
        }
    }

    fn new(path: &Path, outcome: Result<ManualOutcome, ManualUploadError>) -> UploadLine {
        let mut line = UploadLine {
            path: escaped(path).to_string(),
            status: "uploaded",
            video_id: None,
            already_uploaded: false,
            resumed: false,
            size: None,
            sha256: None,
            chunks: None,
            seconds: None,
            bytes_per_second: None,
            uploaded_at: None,
            error: None,
            meaning: None,
            uploaded_at_local: None,
        };
        match outcome {
            Ok(ManualOutcome::Uploaded { report, resumed }) => UploadLine {
                video_id: Some(report.video_id.clone()),
                resumed,
                size: Some(report.size),
                sha256: Some(report.sha256.clone()),
                chunks: Some(report.chunks),
                seconds: Some(report.elapsed.as_secs_f64()),
                // A resumed upload sent only the rest of the file in this time.
                bytes_per_second: Some(if resumed {
                    report.bytes_sent as f64 / report.elapsed.as_secs_f64().max(1e-3)
                } else {
                    report.bytes_per_second()
                }),
                ..line
            },
            Ok(ManualOutcome::AlreadyUploaded {
                video_id,
                size,
                sha256,
                at,
            }) => UploadLine {
                video_id: Some(video_id),
                already_uploaded: true,
                size: Some(size),
                sha256,
                uploaded_at: at.and_then(|at| {
                    at.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
                uploaded_at_local: at.map(|at| ReportClock::system().show(at)),
                ..line
            },
            Err(err) => {
                line.status = match &err {
                    ManualUploadError::Upload(VmproError::Cancelled) => "interrupted",
                    _ => "failed",
                };
                line.error = Some(chain(&err));
                line.meaning = Some(err.meaning());
                line
            }
        }
    }
}

/// What became of one path given to `hotfolder upload`.
enum FileOutcome {
    /// Sent, resumed, or found already uploaded; or failed on the way.
    Done(Result<ManualOutcome, ManualUploadError>),
    /// Not tried: a refusal every file would get stopped the uploads first.
    NotTried,
    /// Refused before any request: it could never be uploaded.
    Refused(crate::preflight::LocalFileError),
}

/// `hotfolder upload [--json] [--again] PATH...`.
async fn upload(
    arg: &ConfigArg,
    json: bool,
    again: bool,
    paths: &[PathBuf],
) -> Result<ExitCode, CommandError> {
    let _log = crate::logging::init_stderr("warn").map_err(anyhow::Error::from)?;
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Upload)?;
    let platform =
        Platform::new(&settings.account, &settings.upload).map_err(anyhow::Error::from)?;
    // Before any request: without it a repeat could not be told from a new upload.
    let memory = ManualUploads::open(&settings.state_dir)
        .map(Arc::new)
        .with_context(|| {
            format!(
                "cannot remember uploads in the state dir {} (set `[state] dir` to a folder this user can write); nothing was sent",
                settings.state_dir.display()
            )
        })?;
    let target = UploadTarget {
        api_url: settings.account.api_url.to_string(),
        video_manager_id: settings.account.video_manager_id,
    };
    let shutdown = shutdown_on_signals();

    // Every path is looked at before the first request, so that a typo or a stray .txt is
    // reported at once, not after the other files' uploads, and never reaches the platform.
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for (order, path) in paths.iter().enumerate() {
        match crate::preflight::check_upload_path(path) {
            Ok(_) => accepted.push((order, path.clone())),
            Err(err) => {
                errln!(
                    "{}: not uploaded: {} ({})",
                    escaped(path),
                    chain(&err),
                    err.meaning()
                );
                refused.push((order, path.clone(), FileOutcome::Refused(err)));
            }
        }
    }

    // One login for all the files: a wrong password is one refused login, said once, not one
    // per file (each refusal brings the account closer to a lockout). Not when no file could
    // be sent anyway (missing, empty): those are refused before any request.
    // Nor for files already uploaded and unchanged: those are answered from memory alone.
    let anything_to_send = {
        let (memory, target) = (memory.clone(), target.clone());
        let paths: Vec<PathBuf> = accepted.iter().map(|(_, path)| path.clone()).collect();
        tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .any(|path| crate::manual_upload::needs_sending(&memory, &target, path, again))
        })
        .await
        .unwrap_or(true)
    };
    if anything_to_send && let Err(err) = platform.login(&shutdown).await {
        let mut all = refused;
        all.extend(
            accepted
                .into_iter()
                .map(|(order, path)| (order, path, FileOutcome::NotTried)),
        );
        all.sort_by_key(|(order, _, _)| *order);
        let all = all.into_iter().map(|(_, path, outcome)| (path, outcome));
        return report_uploads(json, all.collect(), Some(err));
    }
    let progress = Progress::new(json);
    let mut results = refused;

    let limit = Arc::new(tokio::sync::Semaphore::new(settings.upload.parallel.max(1)));
    // Cancelled by a refusal that every file would get (the account's rights, the platform
    // down): the files not started yet are not tried.
    let account_refused = CancellationToken::new();
    // A file given twice (`a.mov ./a.mov`) is uploaded once: the second waits for the first and
    // then finds it already uploaded, instead of being refused as busy.
    let mut one_at_a_time: std::collections::HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>> =
        std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (order, path) in accepted {
        let platform = platform.clone();
        let shutdown = shutdown.clone();
        let limit = limit.clone();
        let account_refused = account_refused.clone();
        let memory = memory.clone();
        let same_file = one_at_a_time
            .entry(std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()))
            .or_default()
            .clone();
        // Taken here, in the order given, so the first mention is the one that uploads.
        let held = same_file.clone().try_lock_owned().ok();
        let target = target.clone();
        let (metadata, watched) = metadata_for(&settings, &path);
        if let Some(folder) = watched.filter(|_| path.is_file()) {
            errln!(
                "note: {} is in the watched folder {}: `hotfolder run` uploads it too, as a video of its own, and moves it to done/",
                escaped(&path),
                escaped(&folder)
            );
        }
        let observer = progress.file(&path);
        let request = ManualRequest {
            path: path.clone(),
            metadata,
            again,
        };
        tasks.spawn(async move {
            let _same_file = match held {
                Some(guard) => guard,
                None => same_file.lock_owned().await,
            };
            let _permit = limit.acquire_owned().await;
            if account_refused.is_cancelled() {
                observer.not_tried();
                return (order, path, FileOutcome::NotTried);
            }
            let result = upload_remembered(
                &platform,
                &memory,
                &target,
                request,
                observer.as_ref(),
                &shutdown,
            )
            .await;
            observer.finish(&result);
            if let Err(ManualUploadError::Upload(err)) = &result
                && err.blame() == Blame::AccountOrNetwork
            {
                account_refused.cancel();
            }
            (order, path, FileOutcome::Done(result))
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
    report_uploads(
        json,
        results
            .into_iter()
            .map(|(_, path, result)| (path, result))
            .collect(),
        None,
    )
}

/// Prints one line per file of `hotfolder upload` and says what exit code
/// that makes. A refusal every file would get (`refused`: the login; or the account's rights,
/// the platform down) is said once, as the account's or the platform's problem, and the files
/// it stopped are listed as not uploaded rather than as failed.
fn report_uploads(
    json: bool,
    results: Vec<(PathBuf, FileOutcome)>,
    refused: Option<VmproError>,
) -> Result<ExitCode, CommandError> {
    let mut account_problem = refused;
    let mut files = Vec::new();
    for (path, result) in results {
        match result {
            FileOutcome::Done(Err(ManualUploadError::Upload(err)))
                if err.blame() == Blame::AccountOrNetwork =>
            {
                account_problem.get_or_insert(err);
                files.push((path, FileOutcome::NotTried));
            }
            other => files.push((path, other)),
        }
    }
    let mut failed = 0;
    for (path, result) in files {
        let line = match result {
            FileOutcome::NotTried => UploadLine::not_uploaded(&path, account_problem.as_ref()),
            FileOutcome::Done(outcome) => UploadLine::new(&path, outcome),
            FileOutcome::Refused(err) => {
                failed += 1;
                if !json {
                    // Said before the uploads began.
                    continue;
                }
                UploadLine::failed(&path, chain(&err), err.meaning().to_owned())
            }
        };
        if line.video_id.is_none() {
            failed += 1;
        }
        if json {
            outln!(
                "{}",
                serde_json::to_string(&line).context("cannot encode the upload result as JSON")?
            )?;
        } else if let Some(video_id) = &line.video_id {
            if line.already_uploaded {
                errln!(
                    "{}: already uploaded as {video_id}{}; nothing sent (--again uploads it as a new video)",
                    line.path,
                    line.uploaded_at_local
                        .as_deref()
                        .map(|at| format!(" on {at}"))
                        .unwrap_or_default()
                );
            }
            outln!("{}\t{}", line.path, video_id)?;
        } else if line.status == "not_uploaded" {
            errln!("{}: not uploaded", line.path);
        } else if line.status == "interrupted" {
            errln!(
                "{}: {}",
                line.path,
                line.meaning.as_deref().unwrap_or("interrupted")
            );
        } else {
            errln!(
                "{}: failed: {} ({})",
                escaped(&path),
                line.error.as_deref().unwrap_or(""),
                line.meaning.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(err) = &account_problem {
        errln!("upload stopped: {}", chain(err));
        errln!(
            "  {}; this is not about the files, which are unchanged: run the same command again once it is fixed",
            err.meaning()
        );
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
        let name = escaped(path.file_name().unwrap_or(path.as_os_str())).to_string();
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
            sent_before: Mutex::new(None),
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
    /// Bytes an earlier, interrupted run had sent: not part of this run's rate.
    sent_before: Mutex<Option<u64>>,
}

impl FileProgress {
    fn finish(&self, result: &Result<ManualOutcome, ManualUploadError>) {
        if let Some(bar) = &self.bar {
            match result {
                Ok(ManualOutcome::Uploaded { .. }) => {
                    bar.finish_with_message(format!("{} uploaded", self.name))
                }
                Ok(ManualOutcome::AlreadyUploaded { .. }) => {
                    bar.finish_with_message(format!("{} already uploaded", self.name))
                }
                Err(ManualUploadError::Upload(VmproError::Cancelled)) => {
                    bar.abandon_with_message(format!("{} interrupted", self.name))
                }
                Err(ManualUploadError::Upload(err)) if err.blame() == Blame::AccountOrNetwork => {
                    bar.abandon_with_message(format!("{} not uploaded", self.name))
                }
                Err(_) => bar.abandon_with_message(format!("{} failed", self.name)),
            }
        }
    }

    /// Not tried: another file's upload was refused in a way this one would be too.
    fn not_tried(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message(format!("{} not uploaded", self.name));
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

    fn chunk_accepted(&self, index: u32, total: u32, chunk_size: u64, bytes_done: u64) {
        let sent_before = *self
            .sent_before
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(u64::from(index.saturating_sub(1)) * chunk_size);
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
                    config::human_rate(bytes_done.saturating_sub(sent_before) as f64 / secs)
                );
            }
        }
    }

    fn restarted(&self) {
        *self.sent_before.lock().unwrap_or_else(|e| e.into_inner()) = Some(0);
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

/// `hotfolder status [--json] [--recent N]`: the queue from the state store, read-only.
fn status(arg: &ConfigArg, json: bool, recent: usize) -> Result<ExitCode, CommandError> {
    use crate::status_report::{ReportClock, StatusSnapshot};
    use crate::store::{JobStore, StoreError};
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
    // While the store cannot be written (a full disk), the agent says why in its lock file.
    let agent_pause =
        crate::store::read_agent_note(&settings.state_dir).map(|note| (note.paused, note.since));
    let snapshot =
        StatusSnapshot::read(&store, recent, agent_pause).map_err(anyhow::Error::from)?;
    let clock = ReportClock::system();
    if json {
        outln!("{}", crate::status_report::to_json(&snapshot, &clock))?;
    } else {
        // Rendered whole, then printed line by line through `console`, so that a reader that
        // goes away (`status | head -1`) ends the printing, not the command.
        let mut text = Vec::new();
        crate::status_report::write_text(&snapshot, &clock, &mut text)
            .context("cannot render the status")?;
        for line in String::from_utf8_lossy(&text).lines() {
            outln!("{line}")?;
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
