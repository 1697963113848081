//! Native journal entries: systemd's journal protocol (one datagram per entry, `KEY=value`
//! lines, a length-prefixed form for values with a line break) sent to the journal's socket.
//!
//! Written here rather than through `tracing-journald` for two reasons that crate cannot meet:
//! its `MESSAGE` is the message alone, so `journalctl -u hotfolder` would show "resuming at chunk
//! 3" without the file it is about; and it writes to its socket itself, past the masking that
//! keeps upload tokens out of every log. Here `MESSAGE` is the line the other outputs show
//! (message, then `key=value` for each field), each field is also a journal field of its own
//! (`FILE`, `VIDEO_ID`, `JOB`, ...), and every value is masked.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::{one_line, priority};
use crate::vmpro::api::mask_token;

/// Where journald listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The tag `journalctl -t` and the short output show.
const IDENTIFIER: &str = "hotfolder";

/// Sends each event to the journal as one entry.
pub struct JournalLayer {
    /// Connected to the journal's socket; non-blocking, so that a journal that stopped reading
    /// never stalls the agent (the entry then goes to the stream instead).
    socket: UnixDatagram,
    /// The socket's path, to connect again after journald restarted (it makes a new socket).
    path: PathBuf,
}

impl JournalLayer {
    /// Connects to the journal; fails when it does not listen here.
    pub fn connect() -> std::io::Result<JournalLayer> {
        // In debug builds `HOTFOLDER_TEST_JOURNAL_SOCKET` names a socket of the test's own, so
        // that tests of the binary read the entries (fields included) an agent sends.
        #[cfg(debug_assertions)]
        if let Some(path) = std::env::var_os("HOTFOLDER_TEST_JOURNAL_SOCKET") {
            return JournalLayer::at(Path::new(&path));
        }
        JournalLayer::at(Path::new(JOURNAL_SOCKET))
    }

    fn at(path: &Path) -> std::io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        Ok(JournalLayer {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Sends one entry; after a failure, connects again once and resends.
    fn send(&self, entry: &[u8]) -> bool {
        self.socket.send(entry).is_ok()
            || (self.socket.connect(&self.path).is_ok() && self.socket.send(entry).is_ok())
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let entry = entry(
            meta.level(),
            meta.target(),
            meta.file(),
            meta.line(),
            &fields,
        );
        if !self.send(&entry) {
            // Too big for a datagram, or the journal is not reading: the stream (stderr) is
            // the journal too, and takes the line with its priority.
            let line = format!("<{}>{}\n", priority(meta.level()), fields.line());
            let _ = std::io::stderr().write_all(&one_line(line.as_bytes()));
        }
    }
}

/// An event's message and fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    /// (name, value as the journal field holds it, value as the line shows it)
    others: Vec<(&'static str, String, String)>,
}

impl Fields {
    /// The line the other outputs show: the message, then ` name=value` per field.
    fn line(&self) -> String {
        let mut line = mask_token(&self.message);
        for (name, _, shown) in &self.others {
            line.push(' ');
            line.push_str(name);
            line.push('=');
            line.push_str(&mask_token(shown));
        }
        line
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.others
                .push((field.name(), value.to_owned(), format!("{value:?}")));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.others.push((field.name(), text.clone(), text));
        }
    }
}

/// One entry in the journal's native format.
fn entry(
    level: &Level,
    target: &str,
    file: Option<&str>,
    line: Option<u32>,
    fields: &Fields,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put(&mut out, "PRIORITY", &priority(level).to_string());
    put(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER);
    // One event, one line, as in the other outputs: a line break in a file name cannot start a
    // line of its own in `journalctl`'s output.
    let message = fields.line();
    put(
        &mut out,
        "MESSAGE",
        &String::from_utf8_lossy(&one_line(message.as_bytes())),
    );
    for (name, value, _) in &fields.others {
        put(&mut out, &field_name(name), &mask_token(value));
    }
    put(&mut out, "TARGET", target);
    if let Some(file) = file {
        put(&mut out, "CODE_FILE", file);
    }
    if let Some(line) = line {
        put(&mut out, "CODE_LINE", &line.to_string());
    }
    out
}

/// Appends `KEY=value`, or, for a value with a line break, `KEY`, its length (64-bit little
/// endian) and the value, which the journal stores as it is.
fn put(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// A field's name as a journal field: upper case, `_` for anything else, starting with a
/// letter, at most 64 characters, and never one of the fields this layer writes itself.
fn field_name(name: &str) -> String {
    let mut key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .skip_while(|c| !c.is_ascii_alphabetic())
        .take(58)
        .collect();
    if key.is_empty()
        || matches!(
            key.as_str(),
            "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET" | "CODE_FILE" | "CODE_LINE"
        )
    {
        key.insert_str(0, "FIELD_");
    }
    key
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Reads one entry: `KEY=value` lines and length-prefixed values.
    fn parse(mut data: &[u8]) -> HashMap<String, String> {
        let mut fields = HashMap::new();
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'\n').unwrap();
            let line = &data[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                fields.insert(
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                );
                data = &data[end + 1..];
            } else {
                let key = String::from_utf8(line.to_vec()).unwrap();
                let rest = &data[end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                let value = String::from_utf8(rest[8..8 + len].to_vec()).unwrap();
                assert_eq!(rest[8 + len], b'\n');
                fields.insert(key, value);
                data = &rest[9 + len..];
            }
        }
        fields
    }

    /// The entries `emit` produces, as the journal receives them.
    fn entries(emit: impl FnOnce()) -> Vec<HashMap<String, String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        journal.set_nonblocking(true).unwrap();
        let layer = JournalLayer::at(&path).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let mut found = Vec::new();
        let mut buf = vec![0; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            found.push(parse(&buf[..n]));
        }
        found
    }

    #[test]
    fn an_entry_has_its_priority_its_fields_and_the_whole_line() {
        let found = entries(|| {
            tracing::error!(file = %"sub/clip.mov", video_id = "v-1", job = 7, "failed: 415");
            tracing::info!("ready: every folder is watched");
            tracing::debug!("detail");
        });
        assert_eq!(found.len(), 3);
        let failed = &found[0];
        assert_eq!(failed["PRIORITY"], "3");
        assert_eq!(failed["SYSLOG_IDENTIFIER"], "hotfolder");
        assert_eq!(
            failed["MESSAGE"],
            "failed: 415 file=sub/clip.mov video_id=\"v-1\" job=7"
        );
        assert_eq!(failed["FILE"], "sub/clip.mov");
        assert_eq!(failed["VIDEO_ID"], "v-1");
        assert_eq!(failed["JOB"], "7");
        assert!(failed.contains_key("CODE_LINE"));
        assert_eq!(found[1]["PRIORITY"], "6");
        assert_eq!(found[1]["MESSAGE"], "ready: every folder is watched");
        assert_eq!(found[2]["PRIORITY"], "7");
    }

    #[test]
    fn tokens_are_masked_and_a_line_break_stays_inside_its_field() {
        let found = entries(|| {
            tracing::warn!(
                url = "https://h/c?fileId=1&__token__=9~secret&x=1",
                file = %"in/clip\nERROR forged.mov",
                "chunk refused at https://h/c?__token__=9~secret"
            );
        });
        let entry = &found[0];
        for (key, value) in entry {
            assert!(!value.contains("secret"), "{key}={value}");
        }
        assert!(
            entry["URL"].contains("__token__=***&x=1"),
            "{}",
            entry["URL"]
        );
        // The field holds the name as it is; the line shows the break as `\n`.
        assert_eq!(entry["FILE"], "in/clip\nERROR forged.mov");
        assert!(
            entry["MESSAGE"].contains("file=in/clip\\nERROR forged.mov"),
            "{}",
            entry["MESSAGE"]
        );
        assert!(!entry["MESSAGE"].contains('\n'));
    }

    #[test]
    fn field_names_are_journal_field_names() {
        assert_eq!(field_name("video_id"), "VIDEO_ID");
        assert_eq!(field_name("delay.ms"), "DELAY_MS");
        assert_eq!(field_name("_private"), "PRIVATE");
        assert_eq!(field_name("9lives"), "LIVES");
        assert_eq!(field_name("message"), "FIELD_MESSAGE");
        assert_eq!(field_name("priority"), "FIELD_PRIORITY");
        assert_eq!(field_name(&"x".repeat(100)).len(), 58);
    }

    /// journald restarted: its socket is a new one at the same path.
    #[test]
    fn entries_reach_a_journal_that_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let first = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::at(&path).unwrap();
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = UnixDatagram::bind(&path).unwrap();
        second.set_nonblocking(true).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("after the restart");
        });
        let mut buf = vec![0; 4096];
        let n = second.recv(&mut buf).unwrap();
        assert_eq!(parse(&buf[..n])["MESSAGE"], "after the restart");
    }

    #[test]
    fn without_a_journal_listening_there_is_no_layer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalLayer::at(&dir.path().join("nobody")).is_err());
    }
}
