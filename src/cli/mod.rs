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
use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::config::{self, ConfigError, Settings};
use crate::console::{errln, outln};
use crate::emulator::EmulatorArgs;

mod upload;

#[derive(Debug, Parser)]
#[command(
    name = "hotfolder",
    // The crate version, then the commit and the build date when known (build.rs).
    version = env!("HOTFOLDER_VERSION"),
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
        #[arg(long, value_name = "N", default_value_t = crate::status_report::RECENT_SHOWN)]
        recent: usize,
    },
    /// A dry run: every file in every watched folder and what `run` would do with it now
    /// (upload it, wait for it, or skip it, and why). Uploads, moves and records nothing.
    Scan {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// The files in failed/ with why they failed, newest first.
    Failed {
        #[command(flatten)]
        config: ConfigArg,
        /// Only files that failed within this long (e.g. "24h", "7d").
        #[arg(long, value_name = "DUR", value_parser = parse_since)]
        since: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Move failed files back into their watched folder (same sub-folder, never over another
    /// file) so that `run` tries them again; their sidecars are removed.
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        /// Every file in every folder's failed/.
        #[arg(long, conflicts_with = "paths")]
        all: bool,
        /// Files in a failed/ folder.
        #[arg(value_name = "PATH", required_unless_present = "all")]
        paths: Vec<PathBuf>,
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
    /// Shell completions on stdout, e.g. `source <(hotfolder completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout, e.g. `hotfolder manpage | man -l -`.
    Manpage,
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
    // Text from the command line's own definitions: no config, no runtime.
    match &cli.command {
        Command::Completions { shell } => return completions(*shell),
        Command::Manpage => return manpage(),
        _ => {}
    }
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
    // Blocking reads of folders and file headers, nothing to wait on at the same time.
    if let Command::Scan { config, json } = &cli.command {
        return scan(config, *json);
    }
    // Before the runtime too: `failed` shows times in the local time zone, as `status` does.
    if let Command::Failed {
        config,
        since,
        json,
    } = &cli.command
    {
        return failed(config, *since, *json);
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
            Command::Scan { config, json } => scan(&config, json),
            Command::Failed {
                config,
                since,
                json,
            } => failed(&config, since, json),
            Command::Retry { config, all, paths } => retry(&config, all, &paths),
            Command::Demo { dir } => demo(dir).await,
            Command::Completions { shell } => completions(shell),
            Command::Manpage => manpage(),
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

/// The cap a refused chunk set on `chunk_size = "auto"`, while it holds, from the state store
/// when there is one (read-only; `check` runs before any `run`, too).
fn chunk_cap_on_record(settings: &Settings) -> Option<crate::vmpro::link::ChunkCap> {
    if settings.upload.chunk_size != crate::config::ChunkSize::Auto {
        return None;
    }
    let store = crate::store::JobStore::open_read_only(&settings.state_dir).ok()?;
    store
        .link(settings.account.api_url.as_str())
        .ok()?
        .cap_at(std::time::SystemTime::now())
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
    outln!(
        "{}",
        settings.describe_with_cap(chunk_cap_on_record(&settings).as_ref())
    )?;
    // Watched as `run` watches them, so that a network share (polled) or a system watch limit
    // is shown before the agent meets it.
    for (i, folder) in settings.folders.iter().enumerate() {
        let shown = crate::escape::escaped(&folder.path);
        match crate::watch::mode_for(folder).await {
            Ok(mode) => outln!("folder[{}] {shown} is watched with {mode}", i + 1)?,
            Err(why) => outln!("folder[{}] {shown}: {why}", i + 1)?,
        }
    }
    let problems: Vec<String> = config::check_folder_access(&settings)
        .into_iter()
        .map(|p| format!("{source}: {}: {}", p.key, p.message))
        .collect();
    for warning in config::secret_file_warnings(&settings)
        .into_iter()
        .chain(config::listener_warnings(&settings))
        .chain(config::notify_warnings(&settings))
    {
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
        Ok((_, platform)) => {
            outln!("login: ok as {user} at {url}")?;
            // Each VideoManager the config uploads into: the account's and the folders' own.
            let mut all_answer = true;
            for id in settings.video_managers() {
                let used_by = video_manager_users(&settings, id);
                let answers =
                    video_manager_answers(&platform.for_video_manager(id), id, &shutdown).await?;
                if !answers {
                    errln!("  (video_manager_id {id} is {used_by})");
                }
                all_answer &= answers;
            }
            !all_answer
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

/// Who uploads into the VideoManager `id`, for `check`'s message about it: the account
/// (`[account]`, with the folders that have no id of their own) and the folders that name it.
fn video_manager_users(settings: &Settings, id: u64) -> String {
    let mut users = Vec::new();
    if id == settings.account.video_manager_id {
        users.push("[account]'s".to_owned());
    }
    for (i, folder) in settings.folders.iter().enumerate() {
        if folder.video_manager_id == Some(id) {
            users.push(format!(
                "folder[{}]'s ({})",
                i + 1,
                crate::escape::escaped(&folder.path)
            ));
        }
    }
    users.join(" and ")
}

/// How long `check` waits for its one call into the VideoManager.
const VIDEO_MANAGER_CHECK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// `check`'s look into the VideoManager after the login: a login works for any
/// `video_manager_id`, so only a call into it shows a wrong one before the first upload does.
/// Prints the verdict; `Ok(false)` when the platform refused or did not answer.
async fn video_manager_answers(
    platform: &crate::Platform,
    id: u64,
    shutdown: &CancellationToken,
) -> Result<bool, CommandError> {
    let answered = tokio::time::timeout(
        VIDEO_MANAGER_CHECK_PATIENCE,
        platform.check_video_manager(shutdown),
    )
    .await;
    match answered {
        Ok(Ok(())) => {
            outln!("video manager {id}: ok, this account can use it")?;
            Ok(true)
        }
        // A search the account may not make (403) says nothing about uploads, which need
        // other rights: the first upload tells.
        Ok(Err(err @ crate::vmpro::error::VmproError::Status { status: 403, .. })) => {
            outln!(
                "warning: video manager {id}: this account may not list its videos ({}); uploads may still work",
                chain(&err)
            )?;
            Ok(true)
        }
        Ok(Err(err)) => {
            errln!("video manager {id}: {}", chain(&err));
            errln!("  {}", err.meaning());
            Ok(false)
        }
        Err(_) => {
            errln!(
                "video manager {id}: the platform did not answer within {} s",
                VIDEO_MANAGER_CHECK_PATIENCE.as_secs()
            );
            Ok(false)
        }
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

/// `hotfolder completions SHELL`: the completion script for `shell`, from the clap definitions.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CommandError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hotfolder", &mut script);
    outln!("{}", String::from_utf8_lossy(&script).trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `hotfolder manpage`: one page, hotfolder(1): the commands, then each command's synopsis and
/// options in a section of its own, so that the page is whole without a page per command.
fn manpage() -> Result<ExitCode, CommandError> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .and_then(|()| man.render_options_section(&mut page))
        .and_then(|()| man.render_subcommands_section(&mut page))
        .context("cannot render the man page")?;
    let mut names = vec!["help".to_owned()];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        names.push(sub.get_name().to_owned());
        let name = format!("hotfolder {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().display_name(&name).bin_name(&name));
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)
            .and_then(|()| man.render_description_section(&mut section))
            .and_then(|()| man.render_options_section(&mut section))
            .context("cannot render the man page")?;
        // The command's parts as subsections of its own section.
        page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        for line in String::from_utf8_lossy(&section).lines() {
            let line = match line.strip_prefix(".SH ") {
                Some(title) => format!(".SS {title}"),
                None => line.to_owned(),
            };
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
    }
    man.render_version_section(&mut page)
        .context("cannot render the man page")?;
    // clap_mangen names a page per command (hotfolder-run(1)); here they are sections below.
    let mut text = String::from_utf8_lossy(&page).into_owned();
    for name in names {
        text = text.replace(
            &format!("hotfolder\\-{name}(1)"),
            &format!("hotfolder {name}"),
        );
    }
    outln!("{}", text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `hotfolder run`: the agent until SIGTERM/SIGINT.
async fn run_agent(arg: &ConfigArg) -> Result<ExitCode, CommandError> {
    let settings = match load_settings(arg) {
        Ok(settings) => settings,
        Err(err) => {
            // Under launchd nobody reads stderr: the reason goes where the logs are.
            crate::logging::record_start_failure(&chain(&err));
            return Err(err);
        }
    };
    let _log = crate::logging::init_agent(&settings.log).map_err(anyhow::Error::from)?;
    tracing::info!(
        config = %settings.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "hotfolder {} starting",
        env!("HOTFOLDER_VERSION")
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
                // One line: the log escapes a newline, and a literal `\n` read as garbage.
                Err(err) => tracing::error!(
                    "config reload refused; the running config stays in force: {}",
                    chain(&err)
                        .lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        }
    });
    receiver
}

/// `hotfolder status [--json] [--recent N]`: the queue from the state store, read-only.
/// `hotfolder scan`: what `run` would do with every file now, without doing any of it.
fn scan(arg: &ConfigArg, json: bool) -> Result<ExitCode, CommandError> {
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Inspect)?;
    // The queue, when there is one, tells which files are already on their way.
    let store = crate::store::JobStore::open_read_only(&settings.state_dir).ok();
    let folders = crate::scan_report::scan(&settings, store.as_ref(), std::time::SystemTime::now());
    if json {
        outln!("{}", crate::scan_report::to_json(&folders))?;
    } else {
        if settings.folders.is_empty() {
            outln!("no [[folder]] in the config: nothing to scan")?;
        }
        outln!("{}", crate::scan_report::to_text(&folders).trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(text).map_err(|e| e.to_string())
}

fn failed(
    arg: &ConfigArg,
    since: Option<std::time::Duration>,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Inspect)?;
    let store = crate::store::JobStore::open_read_only(&settings.state_dir).ok();
    let mut files = crate::failed_files::list(&settings, store.as_ref());
    let clock = crate::status_report::ReportClock::system();
    if let Some(since) = since {
        let after = time::Duration::try_from(since)
            .ok()
            .and_then(|since| clock.now.checked_sub(since));
        // A file whose time nobody recorded may be recent: it is shown (marked "time
        // unknown"), not hidden.
        files.retain(|file| match (file.failed_at, after) {
            (Some(at), Some(after)) => at >= after,
            _ => true,
        });
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&files).map_err(anyhow::Error::from)?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if files.is_empty() {
        outln!("no failed files")?;
        return Ok(ExitCode::SUCCESS);
    }
    let shared_failed_dir = |file: &crate::failed_files::FailedFile| {
        settings
            .folders
            .iter()
            .filter(|f| file.path.starts_with(&f.failed_dir))
            .count()
            > 1
    };
    for file in &files {
        let when = file
            .failed_at
            .map_or_else(|| "(time unknown)".to_owned(), |at| clock.show(at));
        if file.file_missing {
            let sidecar = file.sidecar.as_deref().unwrap_or(&file.path);
            outln!("{when}  {} (sidecar only)", crate::escape::escaped(sidecar))?;
        } else {
            outln!("{when}  {}", crate::escape::escaped(&file.path))?;
        }
        outln!("    {}", file.reason)?;
        // Where it goes back to matters only where failed/ is shared.
        match &file.folder {
            Some(folder) if shared_failed_dir(file) => {
                outln!("    from {}", crate::escape::escaped(folder))?;
            }
            Some(_) => {}
            None => outln!(
                "    from: unknown (one of {}); `retry` leaves it to you",
                file.candidates
                    .iter()
                    .map(|c| crate::escape::escaped(c).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
        }
    }
    let orphans = files.iter().filter(|f| f.file_missing).count();
    outln!(
        "{} failed file(s); `hotfolder retry PATH` or `hotfolder retry --all` tries them again",
        files.len() - orphans
    )?;
    if orphans > 0 {
        outln!(
            "{orphans} sidecar(s) whose file is gone (moved or deleted by someone): delete them once nobody needs their record"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn retry(arg: &ConfigArg, all: bool, paths: &[PathBuf]) -> Result<ExitCode, CommandError> {
    use crate::escape::escaped;
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Inspect)?;
    // Two `retry` runs at once could each take the other's half-done move of one file for an
    // interrupted one and clean it up, losing the file (hostile test): one run at a time.
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("cannot make the state dir {}", settings.state_dir.display()))?;
    let lock_path = settings.state_dir.join(crate::store::RETRY_LOCK_FILE_NAME);
    let one_at_a_time = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    one_at_a_time
        .lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // Read-only: where a file came from, when its sidecar does not say.
    let store = crate::store::JobStore::open_read_only(&settings.state_dir).ok();
    let paths: Vec<PathBuf> = if all {
        crate::failed_files::list(&settings, store.as_ref())
            .into_iter()
            .filter(|file| !file.file_missing)
            .map(|file| file.path)
            .collect()
    } else {
        paths.to_vec()
    };
    if all && paths.is_empty() {
        outln!("no failed files")?;
    }
    let mut refused = 0;
    for path in &paths {
        match crate::failed_files::retry(&settings, store.as_ref(), path) {
            Ok(done) => {
                let renamed = if done.renamed {
                    " (its name was taken)"
                } else {
                    ""
                };
                outln!("{} -> {}{renamed}", escaped(path), escaped(&done.to))?;
                if let Some(note) = &done.note {
                    errln!("  {note}");
                }
                if let Err(why) = done.sidecar {
                    errln!("  {why}");
                }
            }
            Err(err) => {
                refused += 1;
                errln!("cannot retry {}: {}", escaped(path), chain(&err));
            }
        }
    }
    if refused > 0 {
        errln!(
            "{refused} of {} file(s) could not be moved back",
            paths.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn status(arg: &ConfigArg, json: bool, recent: usize) -> Result<ExitCode, CommandError> {
    use crate::status_report::{ReportClock, StatusSnapshot};
    use crate::store::{JobStore, StoreError};
    let settings = config::load_for(arg.config.as_deref(), config::Purpose::Status)?;
    // A store at schema version 0 is one that `run` is creating this very moment.
    let mut opened = JobStore::open_read_only(&settings.state_dir);
    for _ in 0..20 {
        if !matches!(opened, Err(StoreError::NeedsUpgrade { found: 0, .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        opened = JobStore::open_read_only(&settings.state_dir);
    }
    // From the config and the clock: shown whether or not `run` has run.
    let bandwidth =
        crate::bandwidth::BandwidthNow::of(&settings.upload.bandwidth, &jiff::Zoned::now());
    let store = match opened {
        Ok(store) => store,
        Err(StoreError::NoStore { path }) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"state_store": path, "jobs": [], "summary": null,
                        "bandwidth": bandwidth.to_json()})
                )?;
            } else {
                outln!(
                    "no state store at {} yet: `hotfolder run` has not run with this config",
                    path.display()
                )?;
                if bandwidth.configured {
                    outln!("bandwidth: {}", bandwidth.text)?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) => return Err(anyhow::Error::from(err).into()),
    };
    // While the store cannot be written (a full disk), the agent says why in its lock file.
    let mut snapshot = StatusSnapshot::read_state_dir(&store, &settings.state_dir, recent)
        .map_err(anyhow::Error::from)?;
    snapshot.bandwidth = Some(bandwidth);
    let me = crate::shared_folder::agent_id_in(&settings.state_dir);
    // Still one thread here (see `run`): the folders are read in a child process.
    snapshot.set_surveys(crate::shared_folder::survey_apart(
        &settings.folders,
        me.as_deref(),
    ));
    if settings.upload.chunk_size == crate::config::ChunkSize::Auto {
        // A store from before the link was kept has no such row: nothing to show.
        snapshot.chunk_cap = store
            .link(settings.account.api_url.as_str())
            .ok()
            .and_then(|link| link.cap_at(std::time::SystemTime::now()));
    }
    let clock = ReportClock::system();
    if json {
        outln!("{}", crate::status_report::to_json(&snapshot))?;
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
            chunk_size: config::ChunkSize::Fixed(1024 * 1024),
            ..UploadSettings::default()
        },
        state_dir: dir.join(".hotfolder-state"),
        keep_jobs_for: config::DEFAULT_KEEP_JOBS_FOR,
        http: None,
        log: LogSettings {
            dir: dir.join("logs"),
            level: "info".into(),
            format: LogFormat::Text,
            keep_files: 3,
            // The demo's own folder, next to inbox/ and done/: where it says the logs are.
            dir_chosen: true,
        },
        folders: vec![folder],
        notify: Vec::new(),
        smtp: None,
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
        "sample-{}.mov",
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

/// Writes the sample export, a real QuickTime movie of colour bars (about 12 MiB, see
/// `ColourBars::DEMO`), in 1 MiB pieces over about a second, the way an editing application
/// does, so the demo shows hotfolder waiting for the file to be complete: its index (`moov`)
/// comes last, and until then the container check says it is not finished.
async fn write_sample_slowly(path: PathBuf) {
    use tokio::io::AsyncWriteExt;
    let shown = crate::escape::escaped(&path).to_string();
    let Ok(mut file) = tokio::fs::File::create(&path).await else {
        tracing::warn!(file = %shown, "cannot write the sample video");
        return;
    };
    let movie = crate::sample_video::ColourBars::DEMO;
    for piece in movie.pieces(1024 * 1024) {
        if let Err(err) = file.write_all(&piece).await {
            tracing::warn!(file = %shown, error = %err, "cannot write the sample video");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    }
    if let Err(err) = file.sync_all().await {
        tracing::warn!(file = %shown, error = %err, "cannot write the sample video");
        return;
    }
    tracing::info!(
        file = %shown,
        "sample video written ({}, {} frames of colour bars)",
        config::human_size(movie.len()),
        movie.frames
    );
}
