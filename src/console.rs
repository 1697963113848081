//! What the commands print, on stdout for people and scripts and on stderr for messages that
//! have nowhere else to go, without `println!`'s panics.
//!
//! A reader that goes away early (`hotfolder status | head -1`, `| grep -q`) closes the pipe;
//! Rust ignores SIGPIPE, so the next write fails with `BrokenPipe` and `println!` panics (exit
//! 101, a panic message for the user). Here a closed stdout only ends the printing: later lines
//! are dropped and the command carries on with the rest of its work and exits as it would have
//! (an upload is not abandoned, `check` still says by its exit code whether the config is
//! good). Any other write error (a full disk behind `> status.txt`) is returned, so the command
//! fails with the reason instead of leaving a truncated file that looks complete.
//!
//! stderr gets the same treatment, except that its errors are never returned: there is nowhere
//! left to report them.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone; from then on lines for stdout are dropped. Process-wide
/// like stdout itself.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Standard output could not be written for a reason other than its reader going away.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct StdoutError(#[source] io::Error);

/// Writes one line to stdout. A closed pipe is not an error (see the module documentation).
pub fn stdout_line(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    write_line(&mut io::stdout().lock(), &STDOUT_CLOSED, args).map_err(StdoutError)
}

/// Writes one line to stderr; a failure is ignored, since stderr is where it would be reported.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
    let _ = write_line(&mut io::stderr().lock(), &STDERR_CLOSED, args);
}

/// The line and its newline in one write, so that a line is never half printed when another
/// thread prints too, and `BrokenPipe` turned into `closed` being set.
fn write_line(
    out: &mut impl Write,
    closed: &AtomicBool,
    args: fmt::Arguments<'_>,
) -> io::Result<()> {
    if closed.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut line = fmt::format(args);
    line.push('\n');
    // Flushed here: stdout is line-buffered, so an error shows up now, not at exit.
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
            closed.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// `println!` without the panic: `outln!("...")?` in a command.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` without the panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::stderr_line(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct ClosedPipe {
        writes: usize,
    }

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_printing_without_an_error() {
        let closed = AtomicBool::new(false);
        let mut pipe = ClosedPipe { writes: 0 };
        assert!(write_line(&mut pipe, &closed, format_args!("first")).is_ok());
        assert!(closed.load(Ordering::Relaxed));
        assert!(write_line(&mut pipe, &closed, format_args!("second")).is_ok());
        assert_eq!(
            pipe.writes, 1,
            "nothing is written after the reader went away"
        );
    }

    #[test]
    fn other_write_errors_are_returned() {
        let closed = AtomicBool::new(false);
        let mut full: &mut [u8] = &mut [0u8; 4];
        let err = write_line(&mut full, &closed, format_args!("longer than four")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(!closed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_line_is_written_whole_with_its_newline() {
        let closed = AtomicBool::new(false);
        let mut out = Vec::new();
        write_line(&mut out, &closed, format_args!("a {}", 1)).unwrap();
        assert_eq!(out, b"a 1\n");
    }
}
