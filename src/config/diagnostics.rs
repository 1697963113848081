//! Where a problem is and how it is reported: the problem list that loading fills, the error
//! it becomes, and the mapping from byte offsets in the TOML text to lines and dotted keys
//! (`folder[2].stable_for`), so that every message can point at the place to fix.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a dotted key such as `upload.chunk_size` or `folder[2].stable_for` (folders
    /// counted from 1), a table such as `account`, or `line 3` for a TOML syntax error.
    pub key: String,
    /// What is wrong, in words that say how to fix it (with the line where known).
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: no config file there; write a starter one with `hotfolder init` or pass --config FILE",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("cannot read the config file {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, one per line as `{file}: {key}: {message}`.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{}: {problem}", path.display());
    }
    out
}

/// What loading has found wrong so far; each step adds to it and goes on.
pub(super) struct Problems {
    /// Each problem with its line, so that the list can be given in file order.
    pub(super) list: Vec<(Option<usize>, ConfigProblem)>,
    /// The line of each key present in the file.
    pub(super) key_lines: HashMap<String, usize>,
}

impl Problems {
    /// Records a problem, with the key's line when the key is in the file.
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let line = self.key_lines.get(&key).copied();
        self.add_at(key, message, line);
    }

    pub(super) fn add_at(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        line: Option<usize>,
    ) {
        let mut message = message.into();
        if let Some(line) = line {
            let _ = write!(message, " (line {line})");
        }
        self.list.push((
            line,
            ConfigProblem {
                key: key.into(),
                message,
            },
        ));
    }

    /// Whether a problem was already recorded at `key` or below it (so "missing" is not added
    /// for a key whose value was refused).
    pub(super) fn has_problem_at(&self, key: &str) -> bool {
        self.list.iter().any(|(_, p)| {
            p.key == key
                || p.key
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

/// Maps byte offsets to line numbers.
pub(super) struct LineIndex<'t> {
    pub(super) text: &'t str,
}

impl LineIndex<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    /// The text of the 1-based line, trimmed, for syntax-error messages.
    pub(super) fn line_text(&self, line: usize) -> &str {
        self.text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim()
    }
}

/// One step of a path into the document: a table key or an array index.
#[derive(Debug, Clone)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

pub(super) fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            // Counted from 1: "folder[1]" is the first [[folder]] table a reader sees.
            Step::Index(i) => {
                let _ = write!(out, "[{}]", i + 1);
            }
        }
    }
    out
}

fn span_contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// The deepest entry whose key or value covers `offset`. Children are searched first, and
/// without requiring the parent's span to cover them, because the span of a `[table]` does
/// not always cover the lines below its header.
pub(super) fn locate_in_table(table: &DeTable<'_>, offset: usize) -> Option<Vec<Step>> {
    for (key, value) in table.iter() {
        let step = Step::Key(key.get_ref().to_string());
        if let Some(mut rest) = locate_in_value(value.get_ref(), offset) {
            rest.insert(0, step);
            return Some(rest);
        }
        if span_contains(&key.span(), offset) || span_contains(&value.span(), offset) {
            return Some(vec![step]);
        }
    }
    None
}

fn locate_in_value(value: &DeValue<'_>, offset: usize) -> Option<Vec<Step>> {
    match value {
        DeValue::Table(table) => locate_in_table(table, offset),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(mut rest) = locate_in_value(item.get_ref(), offset) {
                    rest.insert(0, Step::Index(i));
                    return Some(rest);
                }
                if span_contains(&item.span(), offset) {
                    return Some(vec![Step::Index(i)]);
                }
            }
            None
        }
        _ => None,
    }
}

/// Records the line of every key in the document, so that validation problems can say where.
pub(super) fn index_lines(
    table: &DeTable<'_>,
    prefix: &mut Vec<Step>,
    lines: &LineIndex<'_>,
    out: &mut HashMap<String, usize>,
) {
    for (key, value) in table.iter() {
        prefix.push(Step::Key(key.get_ref().to_string()));
        out.insert(render_path(prefix), lines.line(key.span().start));
        index_value_lines(value.get_ref(), prefix, lines, out);
        prefix.pop();
    }
}

fn index_value_lines(
    value: &DeValue<'_>,
    prefix: &mut Vec<Step>,
    lines: &LineIndex<'_>,
    out: &mut HashMap<String, usize>,
) {
    match value {
        DeValue::Table(table) => index_lines(table, prefix, lines, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                out.insert(render_path(prefix), lines.line(item.span().start));
                index_value_lines(item.get_ref(), prefix, lines, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}
