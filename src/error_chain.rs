//! One way to show an error with its causes. Every error type in this crate either prints its
//! cause in its own message or exposes it as `source()`, never both: so an error shown with
//! `{err}` alone can lack its reason, and any text meant for a person (the final message, a log
//! line, a job's events, a sidecar's `error.message`) goes through [`chain`] instead.

use std::error::Error;

/// The error's message followed by each cause's, joined with `": "`, e.g.
/// `cannot read the config file /x: Is a directory (os error 21)`.
///
/// A cause whose text the previous one's already ends with is left out: some libraries both
/// print their inner error and return it as `source()` (rusqlite's `SqliteFailure` without a
/// message; lettre's `internal client error: STARTTLS is not supported on this server`), and
/// the reader gains nothing from seeing it twice.
pub fn chain(err: &dyn Error) -> String {
    let mut previous = err.to_string();
    let mut out = previous.clone();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !previous.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::chain;
    use crate::agent::AgentError;
    use crate::cli::CommandError;
    use crate::config::ConfigError;
    use crate::finish::{FinishError, SidecarUpdateError};
    use crate::logging::LoggingError;
    use crate::store::StoreError;
    use crate::vmpro::error::{Step, VmproError};
    use crate::watch::WatchError;

    /// A cause whose text is easy to count.
    const CAUSE: &str = "the-one-cause";

    fn io_cause() -> io::Error {
        io::Error::other(CAUSE)
    }

    fn path() -> PathBuf {
        PathBuf::from("/somewhere/x")
    }

    /// Every variant that wraps a cause, built around [`CAUSE`].
    fn wrapping_variants() -> Vec<(&'static str, Box<dyn std::error::Error + Send + Sync>)> {
        let vmpro_read = || VmproError::Read {
            path: path(),
            source: io_cause(),
        };
        let store_io = || StoreError::Io {
            path: path(),
            source: io_cause(),
        };
        let watch_io = || WatchError::Io {
            path: path(),
            source: io_cause(),
        };
        let unreadable = || ConfigError::Unreadable {
            path: path(),
            source: io_cause(),
        };
        vec![
            ("VmproError::Read", Box::new(vmpro_read())),
            (
                "VmproError::GaveUp",
                Box::new(VmproError::GaveUp {
                    step: Step::Chunk,
                    attempts: 3,
                    last: Box::new(VmproError::Unreachable {
                        step: Step::Chunk,
                        message: CAUSE.into(),
                    }),
                }),
            ),
            (
                "StoreError::Sqlite",
                Box::new(StoreError::Sqlite {
                    path: path(),
                    source: rusqlite::Error::InvalidParameterName(CAUSE.into()),
                }),
            ),
            ("StoreError::Io", Box::new(store_io())),
            (
                "FinishError::Destination",
                Box::new(FinishError::Destination {
                    base: path(),
                    rel_path: "a.mov".into(),
                    source: io_cause(),
                }),
            ),
            (
                "FinishError::Move",
                Box::new(FinishError::Move {
                    src: path(),
                    dest: path(),
                    source: io_cause(),
                }),
            ),
            (
                "FinishError::Sidecar",
                Box::new(FinishError::Sidecar {
                    path: path(),
                    source: io_cause(),
                }),
            ),
            (
                "SidecarUpdateError::Unreadable",
                Box::new(SidecarUpdateError::Unreadable {
                    path: path(),
                    source: io_cause(),
                }),
            ),
            (
                "SidecarUpdateError::Write",
                Box::new(SidecarUpdateError::from(FinishError::Sidecar {
                    path: path(),
                    source: io_cause(),
                })),
            ),
            ("WatchError::Io", Box::new(watch_io())),
            (
                "WatchError::Notify",
                Box::new(WatchError::Notify {
                    path: path(),
                    source: notify::Error::generic(CAUSE),
                }),
            ),
            (
                "LoggingError::Dir",
                Box::new(LoggingError::Dir {
                    path: path(),
                    source: io_cause(),
                }),
            ),
            (
                "AgentError::Platform",
                Box::new(AgentError::from(vmpro_read())),
            ),
            ("AgentError::Store", Box::new(AgentError::from(store_io()))),
            ("AgentError::Watch", Box::new(AgentError::from(watch_io()))),
            ("ConfigError::Unreadable", Box::new(unreadable())),
            (
                "CommandError::Config",
                Box::new(CommandError::from(unreadable())),
            ),
            (
                "CommandError::Other",
                Box::new(CommandError::from(
                    anyhow::Error::from(io_cause()).context("cannot do it"),
                )),
            ),
            (
                "CommandError::Other (a crate error inside)",
                Box::new(CommandError::from(anyhow::Error::from(store_io()))),
            ),
        ]
    }

    #[test]
    fn no_variant_prints_its_source_in_its_own_message() {
        for (name, err) in wrapping_variants() {
            let message = err.to_string();
            let mut source = err.source();
            // Down the whole chain: a transparent wrapper's message is its inner error's.
            let mut outer = message.clone();
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                assert!(
                    !outer.contains(&cause_text),
                    "{name}: the message {outer:?} repeats its source {cause_text:?}; \
                     with `{{:#}}` or `chain` the cause would be shown twice"
                );
                outer = cause_text;
                source = cause.source();
            }
        }
    }

    #[test]
    fn every_wrapped_cause_is_shown_exactly_once() {
        for (name, err) in wrapping_variants() {
            let shown = chain(err.as_ref());
            assert_eq!(
                shown.matches(CAUSE).count(),
                1,
                "{name}: {shown:?} must show the cause once (neither lost nor repeated)"
            );
        }
    }

    /// Also covers variants added later: thiserror makes a field named `source` the source
    /// whether or not it is marked, so `{source}` in a message always prints it twice.
    #[test]
    fn no_error_message_in_the_sources_formats_its_source_field() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (start, _) in text.match_indices("#[error(") {
                        let attribute = &text[start..];
                        let end = attribute.find(")]").unwrap_or(attribute.len());
                        if attribute[..end].contains("{source}") {
                            found.push(format!("{}: {}", path.display(), &attribute[..end]));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        // This file's own assertion text names the pattern; only attributes count.
        found.retain(|hit| !hit.contains("error_chain.rs"));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn chain_joins_the_causes_and_skips_a_cause_identical_to_its_wrapper() {
        let unreadable = ConfigError::Unreadable {
            path: "/etc/hotfolder.toml".into(),
            source: io::Error::from_raw_os_error(21),
        };
        assert_eq!(
            chain(&CommandError::from(unreadable)),
            format!(
                "cannot read the config file /etc/hotfolder.toml: {}",
                io::Error::from_raw_os_error(21)
            )
        );
        // rusqlite prints the inner SQLite error and also returns it as its source.
        let sqlite = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(14), None);
        let shown = chain(&sqlite);
        assert_eq!(shown, sqlite.to_string());

        // One that ends its own message with its cause's (lettre's STARTTLS refusal).
        #[derive(Debug, thiserror::Error)]
        #[error("internal client error: {0}")]
        struct Wrapper(#[source] io::Error);
        let starttls = Wrapper(io::Error::other("STARTTLS is not supported on this server"));
        assert_eq!(
            chain(&starttls),
            "internal client error: STARTTLS is not supported on this server"
        );
    }
}
