//! File names as text for people: [`escaped`] shows a path with every character that could
//! forge or hide part of a log line, a `status` line or a service-manager status written as an
//! escape (`\n`, `\x1b`, `\u{202e}`), and bytes that are not UTF-8 as `\xNN`.
//!
//! A file name may hold any byte but `/` and NUL. Printed raw, `clip\nERROR …` would add a
//! line of the sender's choosing to the agent's log, and an escape sequence would rewrite what
//! a terminal shows. Every place that prints a name (log fields `file=`/`path=`, messages,
//! `status` text) goes through this one helper; JSON output needs none (serde escapes).
//!
//! The form is reversible: a backslash is doubled, so `a\nb` (four characters) and `a` +
//! newline + `b` never print alike. The sidecar uses it for a name's exact bytes.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};

/// A path or file name that prints escaped; made by [`escaped`].
#[derive(Clone, Copy)]
pub struct EscapedPath<'a>(&'a OsStr);

/// Shows `name` (a path, a file name, any OS string) with control characters, Unicode
/// separators and direction overrides escaped, and bytes that are not UTF-8 as `\xNN`.
pub fn escaped<P: AsRef<OsStr> + ?Sized>(name: &P) -> EscapedPath<'_> {
    EscapedPath(name.as_ref())
}

impl fmt::Display for EscapedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_encoded_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                write_char(f, c)?;
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for EscapedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if (c as u32) < 0x80 && c.is_control() => write!(f, "\\x{:02x}", c as u32),
        c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32),
        c => f.write_char(c),
    }
}

/// Characters that end a line for some reader, or reorder or hide the text around them.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators: new lines for some log viewers and editors.
            '\u{2028}' | '\u{2029}'
            // Direction marks, embeddings, overrides and isolates: they reorder what follows.
            | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn ordinary_names_are_unchanged() {
        for name in [
            "clip.mov",
            "🎬 take 1 🎞️.mov",
            "Café.mov",
            "/srv/exports/a b.mxf",
        ] {
            assert_eq!(escaped(name).to_string(), name);
        }
    }

    #[test]
    fn line_breaks_and_terminal_escapes_cannot_reach_the_output() {
        let name = "clip\n2026-01-01T00:00:00Z ERROR forged\r\x1b[2J\u{7f}\u{85}.mov";
        let shown = escaped(Path::new(name)).to_string();
        assert_eq!(
            shown,
            "clip\\n2026-01-01T00:00:00Z ERROR forged\\r\\x1b[2J\\x7f\\u{85}.mov"
        );
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }

    #[test]
    fn separators_and_direction_overrides_are_escaped() {
        let shown = escaped("evil\u{202e}vom.exe\u{2028}x").to_string();
        assert_eq!(shown, "evil\\u{202e}vom.exe\\u{2028}x");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        let name = OsStr::from_bytes(b"caf\xe9 \xff\xfe.mov");
        assert_eq!(escaped(name).to_string(), "caf\\xe9 \\xff\\xfe.mov");
    }

    #[test]
    fn a_backslash_is_doubled_so_the_form_is_unambiguous() {
        assert_eq!(escaped("a\\nb").to_string(), "a\\\\nb");
        assert_ne!(escaped("a\\nb").to_string(), escaped("a\nb").to_string());
    }
}
