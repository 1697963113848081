//! The `hotfolder` binary: parse the command line, run the command, map the outcome to an exit
//! code (0 ok, 1 failure, 2 bad config or usage) and print the whole cause chain, each cause
//! once.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hotfolder::Cli::parse();
    match hotfolder::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Not `{err:#}`: that walks the causes only of an `anyhow::Error`, and a
            // `CommandError::Config` would lose the reason a config file cannot be read.
            // Not `eprintln!`: it panics when stderr is a closed pipe (`2>&1 | head -1`).
            let message = format!("hotfolder: {}\n", hotfolder::chain(&err));
            // Under systemd's journal, `<3>` makes a line an error (`journalctl -p err`) and the
            // journal takes the prefix off. The journal reads each line of the stream as an
            // entry of its own, so every line needs it: a bad config lists one problem a line.
            let message = if hotfolder::stderr_is_journal() {
                message.lines().map(|line| format!("<3>{line}\n")).collect()
            } else {
                message
            };
            let _ = std::io::stderr().write_all(message.as_bytes());
            err.exit_code()
        }
    }
}
