//! Logging: tracing to stderr (colours only on a terminal, so journald stays clean) and, for
//! the agent, daily rolling files in the log dir; text or one JSON object per line. Every line
//! passes through a masking writer so that an upload URL's `__token__` never reaches a log,
//! whatever library printed it, and so that one event is always one line: a line break inside
//! an event (a file name, a server's message) is written as `\n`, so no one can add lines of
//! their choosing to the log by naming a file. File names are also escaped where they are
//! printed (`escape::escaped`); this is the net under that.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};
use crate::vmpro::api::mask_token;

/// The target of events that go to the log file only: the error `run` ends with, which `main`
/// prints on stderr as the process exits. Sent to stderr too, it would be shown twice there
/// (and twice in the journal, which collects stderr).
pub const EXIT_TARGET: &str = "hotfolder::exit";

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

/// stderr only, for one-shot commands (`upload`, `check`): warnings unless `RUST_LOG` says more.
pub fn init_stderr(default_level: &str) -> Result<LogGuard, LoggingError> {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Masking(std::io::stderr))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter(default_level)?))
        .try_init();
    Ok(LogGuard { _file: None })
}

/// stderr plus daily rolling files in `settings.dir`, for `run` and `demo`.
pub fn init_agent(settings: &LogSettings) -> Result<LogGuard, LoggingError> {
    std::fs::create_dir_all(&settings.dir).map_err(|source| LoggingError::Dir {
        path: settings.dir.clone(),
        source,
    })?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("hotfolder")
        .filename_suffix("log")
        .max_log_files(settings.keep_files.max(1))
        .build(&settings.dir)
        .map_err(|err| LoggingError::File {
            path: settings.dir.clone(),
            message: err.to_string(),
        })?;
    // Lossless: an agent's log is its record of what happened to each file.
    let (file_writer, guard) = NonBlockingBuilder::default().lossy(false).finish(appender);
    let json = settings.format == LogFormat::Json;
    let stderr_ansi = std::io::stderr().is_terminal() && !json;

    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(Masking(std::io::stderr))
        .with_ansi(stderr_ansi)
        .with_target(false);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(Masking(file_writer))
        .with_ansi(false);
    let stderr_layer = if json {
        stderr_layer.json().boxed()
    } else {
        stderr_layer.boxed()
    };
    let file_layer = if json {
        file_layer.json().boxed()
    } else {
        file_layer.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer.with_filter(filter(&settings.level)?.add_directive(exit_off())))
        .with(file_layer.with_filter(filter(&settings.level)?))
        .try_init();
    Ok(LogGuard { _file: Some(guard) })
}

/// Turns [`EXIT_TARGET`] off, whatever the level or `RUST_LOG` says.
fn exit_off() -> tracing_subscriber::filter::Directive {
    format!("{EXIT_TARGET}=off")
        .parse()
        .expect("a target with a level is a valid directive")
}

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
    buf.windows(10).any(|w| w == b"__token__=")
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
}
