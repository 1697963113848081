//! Logging: tracing to stderr (colours only on a terminal) and, for the agent, daily rolling
//! files in the log dir; text or one JSON object per line. Under systemd, when stderr is the
//! journal (`JOURNAL_STREAM`), events go to the journal natively instead (`journal.rs`): with
//! their priority (`journalctl -p err`), their fields as journal fields (`FILE=`, `VIDEO_ID=`,
//! `JOB=`), no timestamp of our own, and no copy in files unless the config or the unit asked for
//! a log dir.
//!
//! Every line passes through a masking writer so that an upload URL's `__token__` never reaches
//! a log, whatever library printed it, and so that one event is always one line: a line break
//! inside an event (a file name, a server's message) is written as `\n`, so no one can add lines
//! of their choosing to the log by naming a file. The journal entries are masked and kept to one
//! line the same way. File names are also escaped where they are printed (`escape::escaped`);
//! this is the net under that.

mod journal;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use tracing::{Event, Level};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use self::journal::JournalLayer;
use crate::config::{LogFormat, LogSettings};
use crate::vmpro::api::mask_token;

/// The target of events that go to the log file only: the error `run` ends with, which `main`
/// prints on stderr as the process exits. Sent to stderr too, it would be shown twice there
/// (and twice in the journal, which collects stderr).
pub const EXIT_TARGET: &str = "hotfolder::exit";

/// The daily files are `hotfolder.YYYY-MM-DD.log` (tracing-appender's `prefix.date.suffix`),
/// text or JSON alike; the Debian package's purge deletes exactly these names.
pub const LOG_FILE_PREFIX: &str = "hotfolder";
pub const LOG_FILE_SUFFIX: &str = "log";

/// Keeps the file writer's worker alive; dropping it flushes every buffered line, so `main`
/// holds it until the very end (no line lost at shutdown).
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot create the log directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // `message` rather than a source: tracing-appender's `InitError` and tracing-subscriber's
    // filter `ParseError` already print their cause in their own text and return it as
    // `source()` too, so their text alone is the whole reason, shown once.
    #[error("cannot open a log file in {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid log level {level:?}: {message}")]
    Level { level: String, message: String },
}

/// One layer of the subscriber; the layers are kept in a list because which ones there are
/// depends on where stderr goes and on the config.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Builds the filter: `RUST_LOG` when set, else `level`.
fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    if let Ok(from_env) = EnvFilter::try_from_default_env() {
        return Ok(from_env);
    }
    EnvFilter::try_new(level).map_err(|err| LoggingError::Level {
        level: level.to_string(),
        message: err.to_string(),
    })
}

/// Whether stderr is systemd's journal: `JOURNAL_STREAM` holds the device and inode of the
/// stream systemd connected, and stderr must still be that stream (a command started from the
/// service's shell script with `2>file` inherits the variable but not the stream). This is the
/// check systemd.exec(5) documents.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    // dev_t and ino_t are u64 on Linux, not everywhere (macOS's dev_t is an i32).
    #[allow(clippy::useless_conversion)]
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(stat) => {
            u64::try_from(stat.st_dev).ok() == Some(device)
                && u64::try_from(stat.st_ino).ok() == Some(inode)
        }
        Err(_) => false,
    }
}

/// Where stderr's events go, decided once at start.
enum StderrSink {
    /// A terminal, a pipe, a file: formatted lines with their time, as a person reads them.
    Plain,
    /// The journal, natively: one entry per event with its priority and fields.
    Journal(JournalLayer),
    /// The journal's stream, when its socket for native entries cannot be reached (a container
    /// that hands its services a stream only): lines with a `<N>` priority prefix, which the
    /// journal reads as the priority, and no time (the journal adds its own).
    JournalStream,
}

impl StderrSink {
    fn detect() -> StderrSink {
        if !stderr_is_journal() {
            return StderrSink::Plain;
        }
        match JournalLayer::connect() {
            Ok(layer) => StderrSink::Journal(layer),
            Err(_) => StderrSink::JournalStream,
        }
    }

    fn is_journal(&self) -> bool {
        !matches!(self, StderrSink::Plain)
    }
}

/// A level as a syslog priority: info is informational (6), not notice (5), so that
/// `journalctl -p notice` shows warnings and errors only.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The layers that write to stderr, each with its filter.
fn stderr_layers(
    sink: StderrSink,
    level: &str,
    json: bool,
    exit_off: bool,
) -> Result<Vec<BoxedLayer>, LoggingError> {
    let filtered = |level: &str| -> Result<EnvFilter, LoggingError> {
        let filter = filter(level)?;
        Ok(if exit_off {
            filter.add_directive(exit_directive())
        } else {
            filter
        })
    };
    Ok(match sink {
        StderrSink::Plain => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(Masking(std::io::stderr))
                .with_ansi(std::io::stderr().is_terminal() && !json)
                .with_target(false);
            let layer = if json {
                layer.json().boxed()
            } else {
                layer.boxed()
            };
            vec![layer.with_filter(filtered(level)?).boxed()]
        }
        StderrSink::Journal(journal) => vec![journal.with_filter(filtered(level)?).boxed()],
        StderrSink::JournalStream => {
            let layer = tracing_subscriber::fmt::layer()
                .event_format(PriorityPrefix(
                    tracing_subscriber::fmt::format()
                        .without_time()
                        .with_level(false)
                        .with_target(false),
                ))
                .with_writer(Masking(std::io::stderr))
                .with_ansi(false);
            vec![layer.with_filter(filtered(level)?).boxed()]
        }
    })
}

/// stderr only, for one-shot commands (`upload`, `check`): warnings unless `RUST_LOG` says more.
pub fn init_stderr(default_level: &str) -> Result<LogGuard, LoggingError> {
    let layers = stderr_layers(StderrSink::detect(), default_level, false, false)?;
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(LogGuard { _file: None })
}

/// stderr (or the journal) plus daily rolling files in `settings.dir`, for `run` and `demo`.
/// Under the journal the files are written only when a log dir was asked for (`[log] dir`,
/// `$LOGS_DIRECTORY`): the journal already keeps every line, with more than a file can hold.
pub fn init_agent(settings: &LogSettings) -> Result<LogGuard, LoggingError> {
    let sink = StderrSink::detect();
    let files = !sink.is_journal() || settings.dir_chosen;
    let json = settings.format == LogFormat::Json;
    let mut layers = stderr_layers(sink, &settings.level, json, true)?;
    let mut guard = None;
    if files {
        let (layer, file_guard) = file_layer(settings)?;
        layers.push(layer);
        guard = Some(file_guard);
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(LogGuard { _file: guard })
}

/// The daily files in `settings.dir`, through a lossless background writer.
fn file_layer(settings: &LogSettings) -> Result<(BoxedLayer, WorkerGuard), LoggingError> {
    std::fs::create_dir_all(&settings.dir).map_err(|source| LoggingError::Dir {
        path: settings.dir.clone(),
        source,
    })?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_FILE_PREFIX)
        .filename_suffix(LOG_FILE_SUFFIX)
        .max_log_files(settings.keep_files.max(1))
        .build(&settings.dir)
        .map_err(|err| LoggingError::File {
            path: settings.dir.clone(),
            message: err.to_string(),
        })?;
    // Lossless: an agent's log is its record of what happened to each file.
    let (file_writer, guard) = NonBlockingBuilder::default().lossy(false).finish(appender);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Masking(file_writer))
        .with_ansi(false);
    let layer = if settings.format == LogFormat::Json {
        layer.json().boxed()
    } else {
        layer.boxed()
    };
    Ok((layer.with_filter(filter(&settings.level)?).boxed(), guard))
}

/// `run` could not start (its config, for one) and stderr goes nowhere: launchd starts the
/// LaunchAgent with stderr on /dev/null, so the reason is written to the daily files in the
/// default log dir, where the agent's other lines are. Does nothing when stderr goes somewhere
/// (a terminal, a pipe, a file, the journal): `main` prints the reason there.
pub fn record_start_failure(reason: &str) {
    if !stderr_is_null() {
        return;
    }
    let settings = LogSettings {
        dir: crate::config::default_log_dir(),
        level: "info".to_owned(),
        format: LogFormat::Text,
        keep_files: crate::config::DEFAULT_KEEP_FILES as usize,
        dir_chosen: false,
    };
    // Nothing else to try when even this fails: there is no one to tell.
    if let Ok((layer, guard)) = file_layer(&settings) {
        let subscriber = tracing_subscriber::registry().with(vec![layer]);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("hotfolder could not start: {reason}");
        });
        drop(guard);
    }
}

/// Whether stderr is /dev/null (the same device and inode).
fn stderr_is_null() -> bool {
    let (Ok(stderr), Ok(null)) = (
        rustix::fs::fstat(std::io::stderr()),
        rustix::fs::stat("/dev/null"),
    ) else {
        return false;
    };
    // Any character device with /dev/null's number is the null device (a container may have
    // its own node for it).
    let char_device = rustix::fs::FileType::CharacterDevice;
    rustix::fs::FileType::from_raw_mode(stderr.st_mode) == char_device
        && rustix::fs::FileType::from_raw_mode(null.st_mode) == char_device
        && stderr.st_rdev == null.st_rdev
}

/// Turns [`EXIT_TARGET`] off, whatever the level or `RUST_LOG` says.
fn exit_directive() -> tracing_subscriber::filter::Directive {
    format!("{EXIT_TARGET}=off")
        .parse()
        .expect("a target with a level is a valid directive")
}

/// Writes the event's priority as `<N>` before the line, for the journal's stream.
struct PriorityPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

const TOKEN_KEY: &str = "__token__=";

/// Wraps a writer factory so that every write has `__token__` values masked. tracing's fmt
/// layer formats a whole event and writes it at once, so a token is never split across writes.
#[derive(Clone)]
pub struct Masking<M>(pub M);

pub struct MaskingWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if memchr_token(buf) {
            let masked = mask_token(&String::from_utf8_lossy(buf));
            self.0.write_all(&one_line(masked.as_bytes()))?;
        } else {
            self.0.write_all(&one_line(buf))?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// One event as one line: line breaks before the event's final newline are written as `\n`
/// and `\r`. tracing's fmt layer writes each event whole, with one newline at its end.
fn one_line(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return std::borrow::Cow::Borrowed(buf);
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
    if body.len() < buf.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

fn memchr_token(buf: &[u8]) -> bool {
    buf.windows(TOKEN_KEY.len())
        .any(|w| w == TOKEN_KEY.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_writer_hides_tokens() {
        let mut out = Vec::new();
        {
            let mut writer = MaskingWriter(&mut out);
            writer
                .write_all(b"url=http://h/c?fileId=1&__token__=999~deadbeef&x=1\n")
                .unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("deadbeef"));
        assert!(text.contains("__token__=***&x=1"));
    }

    #[test]
    fn an_event_is_always_one_line() {
        let mut out = Vec::new();
        {
            let mut writer = MaskingWriter(&mut out);
            writer
                .write_all(b"INFO complete file=in/clip\nERROR forged\r.mov\n")
                .unwrap();
            writer.write_all(b"INFO plain line\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INFO complete file=in/clip\\nERROR forged\\r.mov\nINFO plain line\n"
        );
    }

    /// A writer the test reads back, shared with the layer that writes into it.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The journal's stream lines: the priority first, no time, no level word, the fields.
    #[test]
    fn stream_lines_carry_the_priority_and_no_time() {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(PriorityPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_target(false),
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(file = "clip.mov", "failed: 415");
            tracing::warn!("uploads paused");
            tracing::info!(video_id = "v1", "uploaded");
            tracing::debug!("detail");
        });
        assert_eq!(
            captured.text(),
            "<3>failed: 415 file=\"clip.mov\"\n<4>uploads paused\n<6>uploaded video_id=\"v1\"\n<7>detail\n"
        );
    }
}
