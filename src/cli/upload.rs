//! `hotfolder upload`: the files named on the command line, checked first, uploaded with
//! progress, remembered (an unchanged file is not sent twice), and one line per file at the end.
//! A refusal every file would get (the login, the account's rights, the platform down) is said
//! once, as the account's or the platform's problem, and stops the files not yet started.

// Everything printed goes through `console` (see the parent module).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{CommandError, ConfigArg, shutdown_on_signals};
use crate::chain;
use crate::config::{self, Settings};
use crate::console::{errln, outln};
use crate::escape::escaped;
use crate::manual_upload::{ManualOutcome, ManualRequest, ManualUploadError, upload_remembered};
use crate::status_report::ReportClock;
use crate::store::{ManualUploads, UploadTarget};
use crate::vmpro::api::{Platform, UploadObserver, VideoMetadata};
use crate::vmpro::error::{Blame, VmproError};

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
    /// Bytes per chunk (the size `chunk_size = "auto"` chose, or the config's).
    chunk_size: Option<u64>,
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
            chunk_size: None,
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
            chunk_size: None,
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
                chunk_size: Some(report.chunk_size),
                seconds: Some(report.elapsed.as_secs_f64()),
                // The chunks sent in this run over the time they took to send (a resume sent
                // only the rest; the create and pauses are not sending).
                bytes_per_second: report.bytes_per_second(),
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
pub(super) async fn upload(
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
    // `chunk_size = "auto"` starts from what earlier uploads measured of the link.
    match memory.link(&target.api_url) {
        Ok(link) => platform.transport.link.seed(link),
        Err(err) => tracing::warn!("cannot read the measured link: {}", chain(&err)),
    }
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
    if let Err(err) = memory.record_link(&target.api_url, &platform.transport.link.snapshot()) {
        tracing::warn!("cannot remember the measured link: {}", chain(&err));
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
            last_tenth: Mutex::new(0),
            sent_before: Mutex::new(None),
            sending: Mutex::new(Duration::ZERO),
        })
    }
}

struct FileProgress {
    name: String,
    size: u64,
    bar: Option<indicatif::ProgressBar>,
    /// Not a terminal: a line at each tenth of the file, on stderr.
    plain: bool,
    last_tenth: Mutex<u64>,
    /// Bytes an earlier, interrupted run had sent: not part of this run's rate.
    sent_before: Mutex<Option<u64>>,
    /// This run's time spent sending chunks: the rate shown does not count the create, the
    /// URL requests or backoff.
    sending: Mutex<Duration>,
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

    fn chunk_accepted(
        &self,
        index: u32,
        total: u32,
        chunk_size: u64,
        bytes_done: u64,
        took: Duration,
    ) {
        let sent_before = *self
            .sent_before
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(u64::from(index.saturating_sub(1)) * chunk_size);
        let sending = {
            let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
            *sending += took;
            *sending
        };
        if let Some(bar) = &self.bar {
            bar.set_position(bytes_done);
        } else if self.plain {
            let tenth = (bytes_done * 10).checked_div(self.size).unwrap_or(10);
            let mut last = self.last_tenth.lock().unwrap_or_else(|e| e.into_inner());
            if tenth > *last || index == total {
                *last = tenth;
                let rate = crate::vmpro::chunks::sending_rate(
                    bytes_done.saturating_sub(sent_before),
                    sending,
                )
                .map(config::human_rate)
                .unwrap_or_default();
                errln!(
                    "{}: chunk {index}/{total}, {} of {}, {rate}",
                    self.name,
                    config::human_size(bytes_done),
                    config::human_size(self.size),
                );
            }
        }
    }

    fn restarted(&self) {
        *self.sent_before.lock().unwrap_or_else(|e| e.into_inner()) = Some(0);
        *self.sending.lock().unwrap_or_else(|e| e.into_inner()) = Duration::ZERO;
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }
}
