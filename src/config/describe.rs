//! What `hotfolder check` prints: the effective settings as TOML-like text, so that a user
//! sees the defaults that applied and the paths as resolved, with the password masked.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use super::units::format_size;
use super::{
    AuthStyle, ChunkSize, LogFormat, NotifySecret, NotifyTarget, PasswordSource, Settings,
    SmtpSecurity, WebhookFormat,
};
use crate::bandwidth::BandwidthPlan;
use crate::vmpro::link::{AUTO_MAX, ChunkCap, auto_ceiling, describe_cap};

impl Settings {
    /// The effective settings as TOML-like text, defaults filled in and the password masked.
    pub fn describe(&self) -> String {
        self.describe_with_cap(None)
    }

    /// [`describe`](Self::describe), with the cap a refused chunk set on `chunk_size = "auto"`
    /// (from the state store) when one holds.
    pub fn describe_with_cap(&self, cap: Option<&ChunkCap>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.write_description(&mut out, cap);
        out
    }

    fn write_description(&self, out: &mut String, cap: Option<&ChunkCap>) -> fmt::Result {
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
        writeln!(
            out,
            "password = {}",
            quote(&masked_secret(&account.password_source))
        )?;
        writeln!(out, "video_manager_id = {}", account.video_manager_id)?;

        let upload = &self.upload;
        writeln!(out, "\n[upload]")?;
        match upload.chunk_size {
            ChunkSize::Auto => match cap {
                Some(cap) => writeln!(out, "chunk_size = \"auto\"  # auto, {}", describe_cap(cap))?,
                None => writeln!(
                    out,
                    "chunk_size = \"auto\"  # auto (8..{} by the measured link{})",
                    format_size(auto_ceiling(upload.parallel)),
                    if auto_ceiling(upload.parallel) < AUTO_MAX {
                        format!(", at most that with parallel = {}", upload.parallel)
                    } else {
                        String::new()
                    }
                )?,
            },
            ChunkSize::Fixed(bytes) => {
                writeln!(out, "chunk_size = {}", quote(&format_size(bytes)))?
            }
        }
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
        match &upload.bandwidth {
            BandwidthPlan::Fixed(limit) => {
                writeln!(out, "bandwidth_limit = {}", quote(&limit.to_string()))?
            }
            BandwidthPlan::Scheduled(schedule) => {
                writeln!(
                    out,
                    "bandwidth_schedule = {}",
                    quote(&schedule.entries().join(" "))
                )?;
                writeln!(
                    out,
                    "# in local time ({}); the latest earlier entry applies:",
                    jiff::tz::TimeZone::system()
                        .iana_name()
                        .unwrap_or("the system's zone")
                )?;
                for entry in schedule.entries() {
                    writeln!(out, "#   {entry}")?;
                }
                writeln!(
                    out,
                    "# now: {}",
                    crate::bandwidth::describe_now(&upload.bandwidth, &jiff::Zoned::now())
                )?;
            }
            BandwidthPlan::Unlimited => writeln!(out, "# bandwidth_limit: not set, unlimited")?,
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

        match &self.http {
            Some(http) => {
                writeln!(out, "\n[http]")?;
                writeln!(out, "listen = {}", quote(&http.listen.to_string()))?;
                if !http.allowed_hosts.is_empty() {
                    writeln!(out, "allowed_hosts = {}", quote_list(&http.allowed_hosts))?;
                }
            }
            None => writeln!(
                out,
                "\n# [http] listen: not set, no listener (metrics, health, status page)"
            )?,
        }

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
                None => writeln!(
                    out,
                    "# poll_interval: not set = auto: polled every {} s as well as watched when on a network or FUSE file system",
                    crate::watch::AUTO_POLL_EVERY.as_secs()
                )?,
            }
            writeln!(out, "check_container = {}", folder.check_container)?;
            writeln!(
                out,
                "incomplete_after = {}",
                quote_duration(folder.incomplete_after)
            )?;
            match folder.keep_done_for {
                Some(keep) => writeln!(out, "keep_done_for = {}", quote_duration(keep))?,
                None => writeln!(
                    out,
                    "# keep_done_for: not set = uploaded files stay in done/"
                )?,
            }
            writeln!(
                out,
                "follow_transcoding = {}{}",
                folder.follow_transcoding,
                if folder.follow_transcoding {
                    "  # transcoding followed for up to 2 h after each upload"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "shared = {}{}",
                folder.shared,
                if folder.shared {
                    "  # several agents: files are claimed, never uploaded twice"
                } else {
                    "  # a second agent on this folder refuses it"
                }
            )?;
            writeln!(out, "claim_lease = {}", quote_duration(folder.claim_lease))?;
            match folder.video_manager_id {
                Some(id) => writeln!(out, "video_manager_id = {id}")?,
                None => writeln!(
                    out,
                    "# video_manager_id: not set = the account's ({})",
                    self.account.video_manager_id
                )?,
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
        self.describe_notify(out)
    }

    /// `[[notify]]` and `[smtp]`: URLs as scheme and host only, secrets as where they come from.
    fn describe_notify(&self, out: &mut String) -> fmt::Result {
        for destination in &self.notify {
            writeln!(out, "\n[[notify]]  # notify[{}]", destination.number)?;
            match &destination.name {
                Some(name) => writeln!(out, "name = {}", quote(name))?,
                None => writeln!(
                    out,
                    "# name: not set; its events stay with it while it keeps its place"
                )?,
            }
            match &destination.target {
                NotifyTarget::Webhook {
                    url,
                    format,
                    secret,
                } => {
                    writeln!(
                        out,
                        "url = {}  # masked: it may hold a token",
                        quote(&url.masked())
                    )?;
                    let format = match format {
                        WebhookFormat::Json => "json",
                        WebhookFormat::Slack => "slack",
                    };
                    writeln!(out, "format = {}", quote(format))?;
                    match secret {
                        Some(NotifySecret { source, .. }) => writeln!(
                            out,
                            "secret = {}  # signs each body",
                            quote(&masked_secret(source))
                        )?,
                        None => writeln!(out, "# secret: not set, bodies are not signed")?,
                    }
                }
                NotifyTarget::Email { to } => {
                    writeln!(out, "email_to = {}", quote_list(to))?;
                }
            }
            let events: Vec<String> = destination
                .events
                .iter()
                .map(|kind| kind.as_str().to_owned())
                .collect();
            writeln!(out, "events = {}", quote_list(&events))?;
        }
        if let Some(smtp) = &self.smtp {
            writeln!(out, "\n[smtp]")?;
            let how = match smtp.security {
                SmtpSecurity::StartTls => "STARTTLS required",
                SmtpSecurity::Tls => "TLS",
            };
            writeln!(
                out,
                "url = {}  # masked; {}:{}, {how}",
                quote(&smtp.url.masked()),
                smtp.host,
                smtp.port
            )?;
            writeln!(out, "from = {}", quote(&smtp.from))?;
            match &smtp.login {
                Some((user, secret)) => {
                    writeln!(out, "username = {}", quote(user))?;
                    writeln!(out, "password = {}", quote(&masked_secret(&secret.source)))?;
                }
                None => writeln!(out, "# username: not set, no login")?,
            }
            if let Some(ca) = &smtp.ca_file {
                writeln!(out, "ca_file = {}", quote_path(ca))?;
            }
            writeln!(out, "batch_window = {}", quote_duration(smtp.batch_window))?;
        }
        Ok(())
    }
}

/// A secret as where it comes from, never its value.
fn masked_secret(source: &PasswordSource) -> String {
    match source {
        PasswordSource::Env(name) => format!("*** (from env {name})"),
        PasswordSource::File(path) => format!("*** (from file {})", path.display()),
        PasswordSource::Inline => "*** (inline in the config file)".to_owned(),
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
