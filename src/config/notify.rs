//! Step 3 of loading for `[[notify]]` and `[smtp]`: where events go and how. Every problem
//! names its key (`notify[2].events[1]`), like the rest of the config; a webhook URL is shown
//! masked even in a problem, since it often carries a token.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::diagnostics::Problems;
use super::paths::resolve_path;
use super::raw::{RawNotify, RawNotifyFormat, RawSmtp};
use super::validate::read_password_file;
use super::{
    EnvLookup, NotifySecret, NotifySettings, NotifyTarget, PasswordSource, Purpose, Settings,
    SmtpSecurity, SmtpSettings, WebhookFormat,
};
use crate::notify::{EventKind, SecretUrl, masked_url};

/// How long e-mail collects events before it sends them in one message, unless configured.
pub(super) const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(30);
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(3600);

/// The `[[notify]]` tables; `have_smtp` says whether `[smtp]` was given and usable.
pub(super) fn validate_notify(
    raw: Vec<RawNotify>,
    have_smtp: bool,
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Vec<NotifySettings> {
    let mut out: Vec<NotifySettings> = Vec::new();
    // What identifies each destination so far, to refuse the same one twice.
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let n = index + 1;
        let key = |field: &str| format!("notify[{n}].{field}");
        let events = validate_events(raw.events, n, problems);
        let name = match raw.name.as_deref().map(str::trim) {
            None => Ok(None),
            Some(name) => validate_name(name, &out, &key("name"), problems).map(Some),
        };
        let target = match (raw.url, raw.email_to) {
            (Some(_), Some(_)) => {
                problems.add(
                    format!("notify[{n}]"),
                    "url and email_to are both set: one [[notify]] table per destination",
                );
                None
            }
            (None, None) => {
                if !problems.has_problem_at(&format!("notify[{n}]")) {
                    problems.add(
                        format!("notify[{n}]"),
                        "missing url (a webhook) or email_to (e-mail through [smtp])",
                    );
                }
                None
            }
            (Some(url), None) => {
                let url = webhook_url(&url, &key("url"), problems);
                let format = match raw.format {
                    Some(RawNotifyFormat::Slack) => WebhookFormat::Slack,
                    Some(RawNotifyFormat::Json) | None => WebhookFormat::Json,
                };
                let secret = resolve_secret(
                    raw.secret_env,
                    raw.secret_file,
                    (&key("secret_env"), &key("secret_file")),
                    base,
                    env,
                    purpose,
                    problems,
                );
                match (url, secret) {
                    (Some(url), Ok(secret)) => Some(NotifyTarget::Webhook {
                        url: SecretUrl::new(url),
                        format,
                        secret,
                    }),
                    _ => None,
                }
            }
            (None, Some(to)) => {
                if raw.format.is_some() {
                    problems.add(
                        key("format"),
                        "applies to webhooks (url) only; e-mail is plain text",
                    );
                }
                for field in [
                    raw.secret_env.as_ref().map(|_| "secret_env"),
                    raw.secret_file.as_ref().map(|_| "secret_file"),
                ]
                .into_iter()
                .flatten()
                {
                    problems.add(
                        key(field),
                        "signs webhook bodies (url) only; e-mail has no use for it",
                    );
                }
                validate_addresses(to, n, have_smtp, problems).map(|to| NotifyTarget::Email { to })
            }
        };
        let (Some(target), Some(events), Ok(name)) = (target, events, name) else {
            continue;
        };
        let identity = match &target {
            NotifyTarget::Webhook { url, format, .. } => {
                format!("{} {format:?}", url.expose())
            }
            NotifyTarget::Email { to } => {
                let mut to = to.clone();
                to.sort();
                format!("mailto:{}", to.join(","))
            }
        };
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == identity) {
            problems.add(
                format!("notify[{n}]"),
                format!(
                    "the same destination as notify[{first}]; put every event it should get in one table's events"
                ),
            );
            continue;
        }
        seen.push((identity, n));
        out.push(NotifySettings {
            number: n,
            name,
            target,
            events,
        });
    }
    out
}

/// What `check` warns about destinations that are valid: a webhook URL with a login
/// (`https://user:pass@host/…`) is sent with it as Basic auth, which over `http://` travels in
/// the clear, with every event.
pub fn notify_warnings(settings: &Settings) -> Vec<String> {
    settings
        .notify
        .iter()
        .filter_map(|destination| match &destination.target {
            NotifyTarget::Webhook { url, .. }
                if url.has_login() && url.expose().scheme() == "http" =>
            {
                Some(format!(
                    "notify[{}].url holds a login, which is sent as Basic auth with every \
                     event; over http:// ({url}) it and the events travel unencrypted: use https://",
                    destination.number
                ))
            }
            _ => None,
        })
        .collect()
}

/// A destination's `name`: short, printable, and not another table's.
fn validate_name(
    name: &str,
    before: &[NotifySettings],
    key: &str,
    problems: &mut Problems,
) -> Result<String, ()> {
    let problem = if name.is_empty() {
        Some("empty: leave name out, or give the destination a name such as \"ops-slack\"".into())
    } else if name.chars().count() > 64 {
        Some("longer than 64 characters".into())
    } else if name.chars().any(char::is_control) {
        Some("holds a control character".into())
    } else {
        before
            .iter()
            .find(|other| other.name.as_deref() == Some(name))
            .map(|other| format!("{name:?} is already the name of notify[{}]", other.number))
    };
    match problem {
        Some(problem) => {
            problems.add(key, problem);
            Err(())
        }
        None => Ok(name.to_owned()),
    }
}

/// The `events` list, each name known; the default when it is left out.
fn validate_events(
    raw: Option<Vec<String>>,
    n: usize,
    problems: &mut Problems,
) -> Option<Vec<EventKind>> {
    let Some(names) = raw else {
        return Some(EventKind::DEFAULT.to_vec());
    };
    if names.is_empty() {
        problems.add(
            format!("notify[{n}].events"),
            "empty list: nothing would be sent; leave events out for the default \
             [\"failed\", \"paused\", \"resumed\", \"folder_missing\"]",
        );
        return None;
    }
    let mut kinds = Vec::new();
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        match EventKind::parse(name.trim()) {
            Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => {
                ok = false;
                problems.add(
                    format!("notify[{n}].events[{}]", i + 1),
                    format!(
                        "unknown event {name:?}; the events are {}",
                        EventKind::names()
                    ),
                );
            }
        }
    }
    ok.then_some(kinds)
}

/// A webhook URL: http or https, shown masked in every problem.
fn webhook_url(text: &str, key: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        Ok(url) => {
            problems.add(
                key,
                format!(
                    "{} is not a web address; a webhook is http:// or https://",
                    masked_url(&url)
                ),
            );
            None
        }
        // The parser's reason names no part of the text, so no token is shown.
        Err(err) => {
            problems.add(key, format!("not a URL ({err})"));
            None
        }
    }
}

fn validate_addresses(
    to: Vec<String>,
    n: usize,
    have_smtp: bool,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let key = format!("notify[{n}].email_to");
    if to.is_empty() {
        problems.add(&key, "empty list: name at least one address");
        return None;
    }
    let mut ok = true;
    for (i, address) in to.iter().enumerate() {
        if lettre::Address::from_str(address.trim()).is_err() {
            ok = false;
            problems.add(
                format!("{key}[{}]", i + 1),
                format!("{address:?} is not an e-mail address"),
            );
        }
    }
    if !have_smtp {
        ok = false;
        if !problems.has_problem_at("smtp") {
            problems.add(
                &key,
                "e-mail goes through a mail server: add an [smtp] table (url, from)",
            );
        }
    }
    ok.then(|| to.iter().map(|a| a.trim().to_owned()).collect())
}

/// A secret from an environment variable or a file (at most one of them); `Ok(None)` when
/// neither is given. Read only for the agent: `status` and `upload` have no use for it.
fn resolve_secret(
    from_env: Option<String>,
    from_file: Option<PathBuf>,
    (env_key, file_key): (&str, &str),
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Result<Option<NotifySecret>, ()> {
    let read = matches!(purpose, Purpose::Run | Purpose::Watch);
    match (from_env, from_file) {
        (Some(_), Some(_)) => {
            problems.add(
                env_key,
                format!("and {file_key} are both set: keep one of them"),
            );
            Err(())
        }
        (None, None) => Ok(None),
        (Some(name), None) => {
            let name = name.trim().to_owned();
            if name.is_empty() {
                problems.add(env_key, "empty: name the environment variable");
                return Err(());
            }
            let source = PasswordSource::Env(name.clone());
            if !read {
                return Ok(Some(NotifySecret {
                    value: SecretString::from(String::new()),
                    source,
                }));
            }
            match env(&name).map(OsString::into_string) {
                None => {
                    problems.add(env_key, format!("environment variable {name} is not set"));
                    Err(())
                }
                Some(Err(_)) => {
                    problems.add(
                        env_key,
                        format!("environment variable {name} is not valid UTF-8"),
                    );
                    Err(())
                }
                Some(Ok(value)) if value.is_empty() => {
                    problems.add(env_key, format!("environment variable {name} is empty"));
                    Err(())
                }
                Some(Ok(value)) => Ok(Some(NotifySecret {
                    value: SecretString::from(value),
                    source,
                })),
            }
        }
        (None, Some(file)) => {
            let path = resolve_path(base, &file);
            let source = PasswordSource::File(path.clone());
            if !read {
                return Ok(Some(NotifySecret {
                    value: SecretString::from(String::new()),
                    source,
                }));
            }
            match read_password_file(&path) {
                Ok(value) => Ok(Some(NotifySecret { value, source })),
                Err(problem) => {
                    problems.add(file_key, problem);
                    Err(())
                }
            }
        }
    }
}

/// `[smtp]`.
pub(super) fn validate_smtp(
    raw: RawSmtp,
    base: &Path,
    env: EnvLookup<'_>,
    purpose: Purpose,
    problems: &mut Problems,
) -> Option<SmtpSettings> {
    let before = problems.list.len();
    let server = match &raw.url {
        None => {
            problems.add(
                "smtp.url",
                "missing: the mail server, smtp://host:587 (STARTTLS) or smtps://host:465 (TLS)",
            );
            None
        }
        Some(text) => smtp_server(text, problems),
    };
    let from = match raw.from.as_deref().map(str::trim) {
        None | Some("") => {
            problems.add(
                "smtp.from",
                "missing: the sender address, such as \"hotfolder@studio.example\"",
            );
            None
        }
        Some(from) => match lettre::message::Mailbox::from_str(from) {
            Ok(_) => Some(from.to_owned()),
            Err(_) => {
                problems.add("smtp.from", format!("{from:?} is not an e-mail address"));
                None
            }
        },
    };
    let secret = resolve_secret(
        raw.password_env,
        raw.password_file,
        ("smtp.password_env", "smtp.password_file"),
        base,
        env,
        purpose,
        problems,
    );
    let username = raw
        .username
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let login = match (username, secret) {
        (Some(user), Ok(Some(secret))) => Some((user, secret)),
        (None, Ok(None)) => None,
        (Some(_), Ok(None)) => {
            problems.add(
                "smtp.username",
                "has no password: set password_env or password_file too",
            );
            None
        }
        (None, Ok(Some(_))) => {
            problems.add(
                "smtp.username",
                "missing: a password is set, so the server wants a login name",
            );
            None
        }
        (_, Err(())) => None,
    };
    let (ca_file, ca_pem) = match raw.ca_file {
        None => (None, None),
        // Like the secrets, read only for the agent: `status` must work without it.
        Some(file) if !matches!(purpose, Purpose::Run | Purpose::Watch) => {
            (Some(resolve_path(base, &file)), None)
        }
        Some(file) => {
            let path = resolve_path(base, &file);
            match std::fs::read(&path) {
                Ok(pem)
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    (Some(path), Some(pem))
                }
                Ok(_) => {
                    problems.add(
                        "smtp.ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    );
                    (None, None)
                }
                Err(err) => {
                    problems.add(
                        "smtp.ca_file",
                        format!("cannot read {}: {err}", path.display()),
                    );
                    (None, None)
                }
            }
        }
    };
    let batch_window = raw.batch_window.map_or(DEFAULT_BATCH_WINDOW, |d| d.0);
    if batch_window < Duration::from_secs(1) || batch_window > MAX_BATCH_WINDOW {
        problems.add(
            "smtp.batch_window",
            "must be between 1s and 1h: events within it go out in one message",
        );
    }
    if problems.list.len() > before {
        return None;
    }
    let (url, host, port, security) = server?;
    Some(SmtpSettings {
        url: SecretUrl::new(url),
        host,
        port,
        security,
        from: from?,
        login,
        ca_file,
        ca_pem,
        batch_window,
    })
}

/// The server's URL: `smtp://` (STARTTLS, port 587 by default) or `smtps://` (TLS, 465); no
/// login in it and no options, since the one option a mail URL usually has turns TLS off.
fn smtp_server(text: &str, problems: &mut Problems) -> Option<(Url, String, u16, SmtpSecurity)> {
    let url = match Url::parse(text.trim()) {
        Ok(url) => url,
        Err(err) => {
            problems.add("smtp.url", format!("not a URL ({err})"));
            return None;
        }
    };
    let (security, default_port) = match url.scheme() {
        "smtp" => (SmtpSecurity::StartTls, 587),
        "smtps" => (SmtpSecurity::Tls, 465),
        other => {
            problems.add(
                "smtp.url",
                format!(
                    "{} is a {other}: URL; use smtp://host:587 (STARTTLS) or smtps://host:465 \
                     (TLS): SMTP never logs in without TLS",
                    masked_url(&url)
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    if !url.username().is_empty() || url.password().is_some() {
        ok = false;
        problems.add(
            "smtp.url",
            "holds a login: put it in username and password_env or password_file, where it is not shown",
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        ok = false;
        problems.add(
            "smtp.url",
            "must not have options (?…): STARTTLS on smtp:// and TLS on smtps:// cannot be \
             turned off, because SMTP never logs in without TLS",
        );
    }
    if !matches!(url.path(), "" | "/") {
        ok = false;
        problems.add("smtp.url", "must be only the server: smtp://host:port");
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        problems.add("smtp.url", "names no server: smtp://host:587");
        return None;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(default_port);
    ok.then_some((url, host, port, security))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::ExposeSecret as _;

    use crate::config::{
        ConfigError, ConfigProblem, NotifyTarget, Purpose, Settings, SmtpSecurity, WebhookFormat,
        from_toml_str_with_env,
    };
    use crate::notify::EventKind;

    const ACCOUNT: &str = "[account]\nusername = \"u\"\nvideo_manager_id = 1\npassword = \"x\"\n";

    fn load(extra: &str) -> Result<Settings, ConfigError> {
        from_toml_str_with_env(
            &format!("{ACCOUNT}{extra}"),
            Path::new("/etc/hotfolder/config.toml"),
            &|name| (name == "HOOK_SECRET").then(|| "s3cr3t".into()),
            Purpose::Run,
        )
    }

    fn problems(extra: &str) -> Vec<ConfigProblem> {
        match load(extra) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn about(found: &[ConfigProblem], key: &str) -> String {
        found
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem at {key}: {found:?}"))
            .message
            .clone()
    }

    #[test]
    fn a_webhook_gets_the_default_events_and_its_secret() {
        let settings = load(
            "[[notify]]\nurl = \"https://hooks.example.com/T0/B0/T0KEN\"\nsecret_env = \"HOOK_SECRET\"\n\
             [[notify]]\nurl = \"https://chat.example.com/hooks/xyz\"\nformat = \"slack\"\n\
             events = [\"uploaded\", \"failed\", \"failed\"]\n",
        )
        .unwrap();
        assert_eq!(settings.notify.len(), 2);
        assert_eq!(settings.notify[0].events, EventKind::DEFAULT);
        match &settings.notify[0].target {
            NotifyTarget::Webhook {
                url,
                format,
                secret,
            } => {
                assert_eq!(url.expose().path(), "/T0/B0/T0KEN");
                assert_eq!(*format, WebhookFormat::Json);
                assert_eq!(secret.as_ref().unwrap().value.expose_secret(), "s3cr3t");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            settings.notify[1].events,
            [EventKind::Uploaded, EventKind::Failed]
        );
        assert!(!format!("{settings:?}").contains("T0KEN"));
    }

    #[test]
    fn every_notify_problem_is_named_with_its_key_and_no_token_is_shown() {
        let found = problems(
            "[[notify]]\nurl = \"ftp://files.example.com/secret-token\"\n\
             [[notify]]\nurl = \"https://h.example.com/a\"\nevents = [\"failed\", \"exploded\"]\n\
             [[notify]]\nemail_to = [\"ops@studio.example\"]\n\
             [[notify]]\nurl = \"https://h.example.com/b\"\nemail_to = [\"x@y.z\"]\n\
             [[notify]]\nevents = []\n\
             [[notify]]\nurl = \"https://h.example.com/c\"\nsecret_env = \"UNSET\"\n",
        );
        let ftp = about(&found, "notify[1].url");
        assert!(ftp.contains("ftp://files.example.com/…"), "{ftp}");
        assert!(!ftp.contains("secret-token"), "{ftp}");
        assert!(about(&found, "notify[2].events[2]").contains("unknown event \"exploded\""));
        assert!(about(&found, "notify[3].email_to").contains("[smtp]"));
        assert!(about(&found, "notify[4]").contains("both set"));
        assert!(about(&found, "notify[5].events").contains("empty"));
        assert!(about(&found, "notify[6].secret_env").contains("UNSET is not set"));
    }

    #[test]
    fn a_name_is_optional_short_and_not_another_destinations() {
        let settings = load(
            "[[notify]]\nname = \" ops-slack \"\nurl = \"https://h.example.com/a\"\n\
             [[notify]]\nurl = \"https://h.example.com/b\"\n",
        )
        .unwrap();
        assert_eq!(settings.notify[0].name.as_deref(), Some("ops-slack"));
        assert_eq!(settings.notify[1].name, None);
        let found = problems(
            "[[notify]]\nname = \"ops\"\nurl = \"https://h.example.com/a\"\n\
             [[notify]]\nname = \"ops\"\nurl = \"https://h.example.com/b\"\n\
             [[notify]]\nname = \"\"\nurl = \"https://h.example.com/c\"\n",
        );
        assert!(
            about(&found, "notify[2].name").contains("already the name of notify[1]"),
            "{found:?}"
        );
        assert!(
            about(&found, "notify[3].name").contains("empty"),
            "{found:?}"
        );
    }

    #[test]
    fn a_login_in_a_webhook_url_over_http_is_warned_about() {
        let settings = load(
            "[[notify]]\nurl = \"http://user:pw@h.example.com/a\"\n\
             [[notify]]\nurl = \"https://user:pw@h.example.com/b\"\n\
             [[notify]]\nurl = \"http://h.example.com/c\"\n",
        )
        .unwrap();
        let warnings = super::notify_warnings(&settings);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("notify[1].url holds a login"));
        assert!(!warnings[0].contains("pw"), "{warnings:?}");
    }

    #[test]
    fn the_same_destination_twice_is_refused() {
        let found = problems(
            "[[notify]]\nurl = \"https://h.example.com/a\"\n\
             [[notify]]\nurl = \"https://h.example.com/a\"\nevents = [\"uploaded\"]\n",
        );
        assert!(
            about(&found, "notify[2]").contains("notify[1]"),
            "{found:?}"
        );
    }

    #[test]
    fn smtp_is_starttls_or_tls_and_never_plain() {
        let settings = load(
            "[smtp]\nurl = \"smtp://mail.studio.example\"\nfrom = \"hotfolder@studio.example\"\n\
             [[notify]]\nemail_to = [\"ops@studio.example\"]\nevents = [\"failed\"]\n",
        )
        .unwrap();
        let smtp = settings.smtp.unwrap();
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.security),
            ("mail.studio.example", 587, SmtpSecurity::StartTls)
        );
        assert_eq!(smtp.batch_window, super::DEFAULT_BATCH_WINDOW);
        let tls = load("[smtp]\nurl = \"smtps://mail.example\"\nfrom = \"a@b.c\"\n").unwrap();
        assert_eq!(
            tls.smtp.map(|s| (s.port, s.security)),
            Some((465, SmtpSecurity::Tls))
        );

        let found =
            problems("[smtp]\nurl = \"http://mail.example:25\"\nfrom = \"not an address\"\n");
        assert!(
            about(&found, "smtp.url").contains("SMTP never logs in without TLS"),
            "{found:?}"
        );
        assert!(about(&found, "smtp.from").contains("not an e-mail address"));
        let found = problems(
            "[smtp]\nurl = \"smtp://user:pw@mail.example:25?tls=none\"\nfrom = \"a@b.c\"\n\
             password_env = \"HOOK_SECRET\"\n",
        );
        let shown: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
        assert!(
            shown.iter().any(|m| m.contains("holds a login")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|m| m.contains("SMTP never logs in without TLS")),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|m| m.contains("pw")), "{shown:?}");
        assert!(about(&found, "smtp.username").contains("missing"));
    }
}
