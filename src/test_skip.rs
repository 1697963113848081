//! How a test that cannot run on this machine (no root, no ffmpeg, no sshd…) says so.
//!
//! libtest hides what a passing test prints, so a skipped test would look like a pass. The line
//! is written to the process's stderr itself, past libtest's capture, and, when
//! `HOTFOLDER_SKIP_LOG` names a file, appended there too: `.ci/run` prints that list at the end.

use std::io::Write;

/// Says that the calling test skips, and why. Call it, then return from the test.
#[doc(hidden)]
pub fn test_skipped(why: std::fmt::Arguments<'_>) {
    // libtest names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let line = format!("skipped: {test}: {why}\n");
    // Best effort: a test's report line must never fail the test.
    std::io::stderr().write_all(line.as_bytes()).ok();
    if let Some(path) = std::env::var_os("HOTFOLDER_SKIP_LOG")
        && let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write per line, so that tests skipping at once do not interleave.
        log.write_all(line.as_bytes()).ok();
    }
}
