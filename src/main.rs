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
            // Under systemd's journal, `<3>` makes the line an error (`journalctl -p err`); the
            // journal takes the prefix off.
            let priority = if hotfolder::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            let _ = writeln!(
                std::io::stderr(),
                "{priority}hotfolder: {}",
                hotfolder::chain(&err)
            );
            err.exit_code()
        }
    }
}
