//! Step 2 of loading: the TOML as written, and reading it past the entries that do not fit.
//!
//! Every field is optional so that "missing" is reported by the validation step (with a
//! helpful message) rather than by serde. Unknown keys are refused (`deny_unknown_fields`)
//! because a misspelt key would otherwise be ignored and its setting silently left at the
//! default.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ChunkSize;
use super::diagnostics::{LineIndex, Problems, Step, locate_in_table, render_path};
use super::units::{InvalidValue, parse_duration, parse_size};
use crate::bandwidth::Bandwidth;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) account: Option<RawAccount>,
    pub(super) upload: Option<RawUpload>,
    pub(super) state: Option<RawState>,
    pub(super) log: Option<RawLog>,
    pub(super) http: Option<RawHttp>,
    #[serde(default)]
    pub(super) folder: Vec<RawFolder>,
    #[serde(default)]
    pub(super) notify: Vec<RawNotify>,
    pub(super) smtp: Option<RawSmtp>,
}

// No Debug: it holds the inline password.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) api_url: Option<String>,
    pub(super) token_url: Option<String>,
    pub(super) auth: Option<RawAuth>,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password: Option<String>,
    pub(super) video_manager_id: Option<u64>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawAuth {
    Keycloak,
    Legacy,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpload {
    pub(super) chunk_size: Option<RawChunkSize>,
    pub(super) parallel: Option<u64>,
    pub(super) max_attempts: Option<u64>,
    pub(super) backoff_max: Option<HumanDuration>,
    pub(super) request_timeout: Option<HumanDuration>,
    pub(super) url_renew_after: Option<HumanDuration>,
    pub(super) bandwidth_limit: Option<Rate>,
    pub(super) bandwidth_schedule: Option<String>,
    pub(super) api_requests_per_minute: Option<u64>,
    pub(super) tag_videos: Option<bool>,
    pub(super) lookup_wait: Option<HumanDuration>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<PathBuf>,
    pub(super) keep_jobs_for: Option<HumanDuration>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) dir: Option<PathBuf>,
    pub(super) level: Option<String>,
    pub(super) format: Option<RawLogFormat>,
    pub(super) keep_files: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) allowed_hosts: Option<Vec<String>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLogFormat {
    Text,
    Json,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFolder {
    pub(super) path: Option<PathBuf>,
    pub(super) done_dir: Option<PathBuf>,
    pub(super) failed_dir: Option<PathBuf>,
    pub(super) stable_for: Option<HumanDuration>,
    pub(super) recursive: Option<bool>,
    pub(super) include: Option<Vec<String>>,
    pub(super) exclude: Option<Vec<String>>,
    pub(super) poll_interval: Option<HumanDuration>,
    pub(super) check_container: Option<bool>,
    pub(super) incomplete_after: Option<HumanDuration>,
    pub(super) keep_done_for: Option<HumanDuration>,
    pub(super) follow_transcoding: Option<bool>,
    pub(super) shared: Option<bool>,
    pub(super) claim_lease: Option<HumanDuration>,
    pub(super) metadata_file: Option<RawMetadataFile>,
    pub(super) metadata_wait: Option<HumanDuration>,
    pub(super) result_xml: Option<bool>,
    pub(super) video_manager_id: Option<u64>,
    pub(super) title: Option<String>,
    pub(super) description: Option<String>,
    pub(super) channel: Option<u64>,
    pub(super) group: Option<u64>,
    pub(super) keywords: Option<Vec<String>>,
    pub(super) auto_publish: Option<bool>,
}

/// `metadata_file`: whether a video comes with a companion (job XML or JSON) and must wait.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMetadataFile {
    Off,
    Optional,
    Required,
}

/// One `[[notify]]` table: a webhook (`url`) or e-mail (`email_to`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    pub(super) email_to: Option<Vec<String>>,
    pub(super) format: Option<RawNotifyFormat>,
    pub(super) events: Option<Vec<String>>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawNotifyFormat {
    Json,
    Slack,
}

/// `[smtp]`: the mail server e-mail notifications go through.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) url: Option<String>,
    pub(super) from: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) batch_window: Option<HumanDuration>,
}

/// `chunk_size`: `"auto"`, or a size read with [`parse_size`].
#[derive(Clone, Copy)]
pub(super) struct RawChunkSize(pub(super) ChunkSize);

/// A bandwidth read with [`Bandwidth::parse`]: a string with a unit, never a bare number.
#[derive(Clone, Copy)]
pub(super) struct Rate(pub(super) Bandwidth);

/// A duration read with [`parse_duration`].
#[derive(Clone, Copy)]
pub(super) struct HumanDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for RawChunkSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SizeVisitor {
                parse: |text| {
                    if text.trim().eq_ignore_ascii_case("auto") {
                        return Ok(None);
                    }
                    parse_size(text)
                        .map(Some)
                        .map_err(|err| err.noting(", or \"auto\""))
                },
                expecting: "\"auto\", or a size such as \"8 MiB\" or a number of bytes",
            })
            .map(|size| RawChunkSize(size.map_or(ChunkSize::Auto, ChunkSize::Fixed)))
    }
}

/// What a `bandwidth_limit` of 0 is told.
const NO_RATE: &str = "0 sends nothing, for ever: remove the key for no limit, or use \
     bandwidth_schedule with a \"0\" entry for quiet hours";

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl serde::de::Visitor<'_> for RateVisitor {
            type Value = Bandwidth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate in quotes, such as \"20 MiB/s\" or \"100 Mbit/s\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Bandwidth, E> {
                if n == 0 {
                    return Err(E::custom(NO_RATE));
                }
                Err(E::custom(format!(
                    "{n} has no unit; write \"{n} MiB/s\" (bytes) or \"{n} Mbit/s\" (bits) \
                     in quotes (rclone reads a bare number as KiB/s, which is rarely what was meant)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Bandwidth, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom("a rate cannot be negative")),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Bandwidth, E> {
                Err(E::custom(format!(
                    "{n} has no unit; write \"{n} MiB/s\" (bytes) or \"{n} Mbit/s\" (bits) in quotes"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Bandwidth, E> {
                let words = text.trim().to_ascii_lowercase();
                // Not rates: suggesting a unit for them ("0 MiB/s") led to another refusal.
                if words == "off" || words == "none" || words == "unlimited" {
                    return Err(E::custom(format!(
                        "{text:?} is not a limit: remove the key for no limit, or use \
                         bandwidth_schedule (its entries take \"off\")"
                    )));
                }
                if !words.is_empty() && words.chars().all(|c| c == '0' || c == '.') {
                    return Err(E::custom(NO_RATE));
                }
                Bandwidth::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(RateVisitor).map(Rate)
    }
}

/// Reads a size as a string with a unit or an integer number of bytes; `parse` reads the
/// string (`None`: a word the setting takes instead of a size, such as `"auto"`).
struct SizeVisitor {
    parse: fn(&str) -> Result<Option<u64>, InvalidValue>,
    expecting: &'static str,
}

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<Option<u64>, E> {
        Ok(Some(bytes))
    }

    fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<Option<u64>, E> {
        u64::try_from(bytes)
            .map(Some)
            .map_err(|_| E::custom("a size cannot be negative"))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Option<u64>, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl serde::de::Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration in quotes, such as \"10s\", \"500ms\" or \"4h\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                parse_duration(text).map_err(E::custom)
            }
        }
        deserializer
            .deserialize_str(DurationVisitor)
            .map(HumanDuration)
    }
}

/// Removes the last table key of `path` (an array element is removed with its whole key, as
/// arrays here are lists of strings). Returns false when there is nothing to remove.
fn remove_entry(table: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let (parents, last) = path.split_at(last_key);
    let Some(Step::Key(key)) = last.first() else {
        return false;
    };
    let mut current = table;
    let mut steps = parents.iter();
    while let Some(step) = steps.next() {
        let Step::Key(parent_key) = step else {
            return false;
        };
        let Some(value) = current.get_mut(parent_key.as_str()) else {
            return false;
        };
        let mut value = value.get_mut();
        // Follow array indices until the next table.
        loop {
            match value {
                DeValue::Table(next) => {
                    current = next;
                    break;
                }
                DeValue::Array(items) => {
                    let Some(Step::Index(i)) = steps.next() else {
                        return false;
                    };
                    let Some(item) = items.get_mut(*i) else {
                        return false;
                    };
                    value = item.get_mut();
                }
                _ => return false,
            }
        }
    }
    current.remove(key.as_str()).is_some()
}

/// Serde's words for Rust types, in the user's words.
fn humanize(message: &str) -> String {
    // toml reads integers beyond i64 as i128 before the target type refuses them.
    if let Some(rest) = message.strip_prefix("invalid type: integer `")
        && let Some((number, _)) = rest.split_once("` as i128")
    {
        return format!("{number} is too large");
    }
    if let Some(rest) = message.strip_prefix("invalid value: integer `-")
        && let Some((number, _)) = rest.split_once('`')
    {
        return format!("-{number} is negative; expected a whole number of 0 or more");
    }
    let mut text = message.to_owned();
    for rust_type in ["u64", "u32", "usize", "i64", "u16", "u8"] {
        text = text.replace(
            &format!("expected {rust_type}"),
            "expected a whole number (no quotes)",
        );
    }
    // Our raw struct names mean nothing to a user; they are all TOML tables.
    if let Some(at) = text.find("expected struct Raw") {
        text.truncate(at);
        text.push_str("expected a table");
    }
    text.replace(
        "expected a sequence",
        "expected a list such as [\"a\", \"b\"]",
    )
    .replace("expected a boolean", "expected true or false")
    .replace("expected path string", "expected a path in quotes")
}

/// Deserializes the raw structs; each entry that fails is recorded in `problems` and removed,
/// and the rest tried again.
pub(super) fn deserialize_leniently(
    root: Spanned<DeTable<'_>>,
    lines: &LineIndex<'_>,
    problems: &mut Problems,
) -> Option<RawConfig> {
    let span = root.span();
    let mut table = root.into_inner();
    // Each failed round removes one entry, so this ends; the bound is only a guard.
    for _ in 0..=table_size(&table) {
        let attempt = toml::de::Deserializer::from(Spanned::new(span.clone(), table.clone()));
        let err = match RawConfig::deserialize(attempt) {
            Ok(raw) => return Some(raw),
            Err(err) => err,
        };
        let path = err
            .span()
            .and_then(|span| locate_in_table(&table, span.start));
        let line = err.span().map(|span| lines.line(span.start));
        let mut message = humanize(err.message());
        match path {
            Some(path) => {
                let key = render_path(&path);
                if key == "folder" && message.contains("expected a list") {
                    message.push_str("; each watched folder is a [[folder]] table (two brackets)");
                }
                problems.add_at(key, message, line);
                if !remove_entry(&mut table, &path) {
                    return None;
                }
            }
            None => {
                let key = line.map_or_else(|| "config".to_owned(), |l| format!("line {l}"));
                problems.add_at(key, message, None);
                return None;
            }
        }
    }
    None
}

fn table_size(table: &DeTable<'_>) -> usize {
    table
        .values()
        .map(|value| 1 + value_size(value.get_ref()))
        .sum()
}

fn value_size(value: &DeValue<'_>) -> usize {
    match value {
        DeValue::Table(table) => table_size(table),
        DeValue::Array(items) => items.iter().map(|item| value_size(item.get_ref())).sum(),
        _ => 0,
    }
}
