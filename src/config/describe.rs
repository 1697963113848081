//! What `hotfolder check` prints: the effective settings as TOML-like text, so that a user
//! sees the defaults that applied and the paths as resolved, with the password masked.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use super::units::format_size;
use super::{AuthStyle, LogFormat, PasswordSource, Settings};

impl Settings {
    /// The effective settings as TOML-like text, defaults filled in and the password masked.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> fmt::Result {
        match &self.source {
            Some(source) => writeln!(out, "# effective settings from {}", source.display())?,
            None => writeln!(out, "# effective settings (built in, no config file)")?,
        }
        let account = &self.account;
        writeln!(out, "\n[account]")?;
        writeln!(out, "api_url = {}", quote(account.api_url.as_str()))?;
        writeln!(out, "token_url = {}", quote(account.token_url.as_str()))?;
        let auth = match account.auth {
            AuthStyle::Keycloak => "keycloak",
            AuthStyle::Legacy => "legacy",
        };
        writeln!(out, "auth = {}", quote(auth))?;
        writeln!(out, "username = {}", quote(&account.username))?;
        let masked = match &account.password_source {
            PasswordSource::Env(name) => format!("*** (from env {name})"),
            PasswordSource::File(path) => format!("*** (from file {})", path.display()),
            PasswordSource::Inline => "*** (inline in the config file)".to_owned(),
        };
        writeln!(out, "password = {}", quote(&masked))?;
        writeln!(out, "video_manager_id = {}", account.video_manager_id)?;

        let upload = &self.upload;
        writeln!(out, "\n[upload]")?;
        writeln!(
            out,
            "chunk_size = {}",
            quote(&format_size(upload.chunk_size))
        )?;
        writeln!(out, "parallel = {}", upload.parallel)?;
        writeln!(out, "max_attempts = {}", upload.max_attempts)?;
        writeln!(out, "backoff_max = {}", quote_duration(upload.backoff_max))?;
        writeln!(
            out,
            "request_timeout = {}",
            quote_duration(upload.request_timeout)
        )?;
        writeln!(
            out,
            "url_renew_after = {}",
            quote_duration(upload.url_renew_after)
        )?;
        match upload.bandwidth_limit {
            Some(limit) => writeln!(
                out,
                "bandwidth_limit = {}",
                quote(&format!("{}/s", format_size(limit)))
            )?,
            None => writeln!(out, "# bandwidth_limit: not set, unlimited")?,
        }
        writeln!(
            out,
            "api_requests_per_minute = {}",
            upload.api_requests_per_minute
        )?;
        writeln!(out, "tag_videos = {}", upload.tag_videos)?;
        writeln!(out, "lookup_wait = {}", quote_duration(upload.lookup_wait))?;

        writeln!(out, "\n[state]")?;
        writeln!(out, "dir = {}", quote_path(&self.state_dir))?;
        writeln!(
            out,
            "keep_jobs_for = {}  # finished jobs are deleted from the store after this",
            quote_duration(self.keep_jobs_for)
        )?;

        let log = &self.log;
        writeln!(out, "\n[log]")?;
        writeln!(out, "dir = {}", quote_path(&log.dir))?;
        writeln!(out, "level = {}", quote(&log.level))?;
        let format = match log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(out, "format = {}", quote(format))?;
        writeln!(out, "keep_files = {}", log.keep_files)?;

        if self.folders.is_empty() {
            writeln!(out, "\n# no [[folder]]: `run` has nothing to watch")?;
        }
        for (i, folder) in self.folders.iter().enumerate() {
            writeln!(out, "\n[[folder]]  # folder[{}]", i + 1)?;
            writeln!(out, "path = {}", quote_path(&folder.path))?;
            writeln!(out, "done_dir = {}", quote_path(&folder.done_dir))?;
            writeln!(out, "failed_dir = {}", quote_path(&folder.failed_dir))?;
            writeln!(out, "stable_for = {}", quote_duration(folder.stable_for))?;
            writeln!(out, "recursive = {}", folder.recursive)?;
            writeln!(out, "include = {}", quote_list(&folder.include))?;
            writeln!(out, "exclude = {}", quote_list(&folder.exclude))?;
            match folder.poll_interval {
                Some(interval) => writeln!(out, "poll_interval = {}", quote_duration(interval))?,
                None => writeln!(out, "# poll_interval: not set, native file-system events")?,
            }
            let meta = &folder.metadata;
            writeln!(out, "title = {}", quote(&meta.title))?;
            writeln!(
                out,
                "description = {}",
                quote(meta.description.as_deref().unwrap_or(""))
            )?;
            match meta.channel {
                Some(channel) => writeln!(out, "channel = {channel}")?,
                None => writeln!(out, "# channel: not set")?,
            }
            match meta.group {
                Some(group) => writeln!(out, "group = {group}")?,
                None => writeln!(out, "# group: not set")?,
            }
            writeln!(out, "keywords = {}", quote_list(&meta.keywords))?;
            match meta.auto_publish {
                Some(publish) => writeln!(out, "auto_publish = {publish}")?,
                None => writeln!(out, "# auto_publish: not set, the platform decides")?,
            }
        }
        Ok(())
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// Whole days as days (`"90d"`): humantime would write 90 days as months, days and hours.
fn quote_duration(duration: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    if duration.subsec_nanos() == 0
        && duration.as_secs() >= DAY
        && duration.as_secs().is_multiple_of(DAY)
    {
        return quote(&format!("{}d", duration.as_secs() / DAY));
    }
    quote(&humantime::format_duration(duration).to_string())
}

fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}
