//! A URL that may carry a credential: a webhook's token sits in its path (Slack, Teams,
//! Mattermost all work that way) and an SMTP URL may hold a login. Shown everywhere (logs,
//! `check`, Debug output) as its scheme, host and port followed by "…".

use std::fmt;

use url::Url;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn new(url: Url) -> SecretUrl {
        SecretUrl(url)
    }

    /// The whole URL, for the request itself: never for a message.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// It carries a login (`https://user:pass@host/…`), which requests send as Basic auth.
    pub fn has_login(&self) -> bool {
        !self.0.username().is_empty() || self.0.password().is_some()
    }

    /// `https://hooks.example.com/…`: enough to tell destinations apart.
    pub fn masked(&self) -> String {
        masked(&self.0)
    }
}

/// `url` as scheme, host and (an explicit) port, then "…".
pub fn masked(url: &Url) -> String {
    match url.host_str() {
        Some(host) => match url.port() {
            Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
            None => format!("{}://{host}/…", url.scheme()),
        },
        None => format!("{}:…", url.scheme()),
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        let url = SecretUrl::new(
            Url::parse("https://hooks.slack.com/services/T000/B000/XXXXsecret?x=1").unwrap(),
        );
        assert_eq!(url.to_string(), "https://hooks.slack.com/…");
        assert!(!format!("{url:?}").contains("secret"));
        let local = SecretUrl::new(Url::parse("http://user:pw@127.0.0.1:8080/hook").unwrap());
        assert_eq!(local.masked(), "http://127.0.0.1:8080/…");
        let smtp = SecretUrl::new(Url::parse("smtp://mail.example:587").unwrap());
        assert_eq!(smtp.masked(), "smtp://mail.example:587/…");
        assert_eq!(
            masked(&Url::parse("mailto:ops@example.com").unwrap()),
            "mailto:…"
        );
    }
}
