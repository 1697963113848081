//! The command line: clap definitions and one function per command. Each command returns an
//! exit code or a [`CommandError`] that says which exit code it means (2 for bad config or
//! usage, 1 for everything else), so `main` stays a few lines.
//!
//! Everything printed goes through `console::outln!`/`errln!`: `println!` panics when stdout is
//! a closed pipe (`hotfolder status | head -1`).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::config::{self, ConfigError, Settings};
use crate::console::{errln, outln};
use crate::emulator::EmulatorArgs;

mod upload;

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
        /// Where to write it (default: $HOTFOLDER_CONFIG, then the platform config path).
        path: Option<PathBuf>,
        /// The same as PATH, spelled as the other commands take their config file.
        #[arg(
            long = "config",
            short = 'c',
            value_name = "FILE",
            conflicts_with = "path"
        )]
        config: Option<PathBuf>,
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
            } => upload::upload(&config, json, again, &paths).await,
            Command::Check(config) => check(&config).await,
            Command::Init { path, config } => init(path.or(config).as_deref()),
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
        // Folders made here are the owner's only (whatever the umask): another user who could
        // write in them could replace the 0600 config, which may hold the password.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
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
