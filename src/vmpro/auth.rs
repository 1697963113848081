//! Access tokens: the Keycloak password grant and refresh (the default), or the legacy JSON
//! login. One refresh at a time for every upload (the token lock is held across the request),
//! done ahead of expiry so that no API call is sent with a token about to die.
//!
//! Password logins go through the [`LoginPolicy`]: a password refused three times is tried
//! again only when it changes or after an hour. A `password_file` is read again while running
//! ([`Session::reread_password_file`]), so that writing the new password there is enough.

use std::path::Path;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Answer, Transport};
use super::error::{Disposition, Step, VmproError};
use super::login_policy::{CredentialId, Held, LoginPolicy};
use crate::chain;
use crate::config::{AccountSettings, AuthStyle, PasswordSource};

/// When the server does not say how long a token lives (legacy login), assume this.
const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The tokens in hand and when they stop being usable.
struct Tokens {
    access: SecretString,
    /// Refresh at this instant (a margin before the real expiry).
    refresh_at: Instant,
    refresh: Option<SecretString>,
    refresh_usable_until: Option<Instant>,
}

/// Logs in and keeps a valid access token for every API call.
pub struct Session {
    transport: Transport,
    /// The settings it was made with; the password logins use is in `password`.
    account: AccountSettings,
    /// `None` until the first login. The lock is what makes refreshes single-flight.
    tokens: Mutex<Option<Tokens>>,
    /// The password in use: the configured one, or a newer one from `password_file`.
    password: std::sync::Mutex<PasswordInUse>,
    /// Refused logins; shared with the session that replaces this one at a reload, so that a
    /// reload does not start the count again.
    logins: Arc<std::sync::Mutex<LoginPolicy>>,
}

/// The password logins send, and what tells a new one from it.
struct PasswordInUse {
    secret: SecretString,
    id: CredentialId,
    /// The password file as it was when last read; a file that still looks the same is not
    /// read again.
    file_stamp: Option<FileStamp>,
}

/// What `stat` says of a file: a changed stamp means the content may have changed. Device and
/// inode catch a file replaced by a rename (editors, Kubernetes secret volumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Tells credentials apart without keeping another copy of the password.
fn credential_id(username: &str, password: &SecretString) -> CredentialId {
    let mut hash = Sha256::new();
    hash.update(username.as_bytes());
    hash.update([0]);
    hash.update(password.expose_secret().as_bytes());
    hash.finalize().into()
}

/// A time of day for people: "14:05 UTC" (the log's timestamps are UTC too).
fn clock_time(at: SystemTime) -> String {
    let format = time::macros::format_description!("[hour]:[minute] UTC");
    time::OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| "in an hour".into())
}

#[derive(Deserialize)]
struct KeycloakAnswer {
    access_token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    refresh_expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyLoginAnswer {
    access_token: String,
    refresh_token: Option<String>,
}

/// The VideoManager a legacy login's token is for (`validForVideoManager`, a number in one
/// source and a string in another); `None` when the answer does not say.
fn legacy_valid_for(body: &[u8]) -> Option<u64> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    match answer.get("validForVideoManager")? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Longer lifetimes are read as this one: an absurd `expires_in` from a broken server must
/// not overflow the clock (`Instant + Duration` panics), and refreshing a day-old token early
/// costs nothing.
const LONGEST_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Refresh this long before the token expires: 60 s, or a quarter of a short lifetime.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(60))
}

/// When a token issued at `now` that lives `lifetime` should be refreshed.
fn refresh_deadline(now: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.min(LONGEST_TOKEN_LIFETIME);
    now + lifetime - margin(lifetime)
}

impl Session {
    /// A session whose refused logins are counted in `logins` (a new policy, or the one of the
    /// session it replaces).
    pub fn new(
        transport: Transport,
        account: AccountSettings,
        logins: Arc<std::sync::Mutex<LoginPolicy>>,
    ) -> Self {
        let password = PasswordInUse {
            id: credential_id(&account.username, &account.password),
            secret: account.password.clone(),
            file_stamp: None,
        };
        Session {
            transport,
            account,
            tokens: Mutex::new(None),
            password: std::sync::Mutex::new(password),
            logins,
        }
    }

    /// The refused logins, to hand on to the session that replaces this one.
    pub fn login_policy(&self) -> Arc<std::sync::Mutex<LoginPolicy>> {
        self.logins.clone()
    }

    // Poisoned only by a panic in a few lines of bookkeeping: what they hold stays usable.
    fn policy(&self) -> MutexGuard<'_, LoginPolicy> {
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn password_in_use(&self) -> MutexGuard<'_, PasswordInUse> {
        self.password.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `password_file` again if it looks changed (blocking: call it off the async
    /// threads). `Ok(true)` when it now holds another password, which the next login uses;
    /// `Err` says why it cannot be read (the password in use stays). Other password sources
    /// cannot change while hotfolder runs: always `Ok(false)`.
    pub fn reread_password_file(&self) -> Result<bool, String> {
        let PasswordSource::File(path) = &self.account.password_source else {
            return Ok(false);
        };
        let stamp = FileStamp::of(path).map_err(|err| format!("{}: {err}", path.display()))?;
        if self.password_in_use().file_stamp == Some(stamp) {
            return Ok(false);
        }
        // Read without the lock: a slow file system must not hold up logins.
        let secret = crate::config::read_password_file(path)?;
        let id = credential_id(&self.account.username, &secret);
        let mut password = self.password_in_use();
        password.file_stamp = Some(stamp);
        if password.id == id {
            return Ok(false);
        }
        *password = PasswordInUse {
            secret,
            id,
            file_stamp: Some(stamp),
        };
        Ok(true)
    }

    /// Logs in with the password in use, unless the login policy holds it back.
    async fn login_within_policy(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Tokens, VmproError> {
        let (secret, id) = {
            let password = self.password_in_use();
            (password.secret.clone(), password.id)
        };
        let now = Instant::now();
        if let Err(held) = self.policy().may_try(&id, now) {
            return Err(self.held(held, now));
        }
        match self.login(&secret, shutdown).await {
            Ok(tokens) => {
                self.policy().accepted();
                Ok(tokens)
            }
            Err(err @ VmproError::Credentials { .. }) => {
                let now = Instant::now();
                let held = self.policy().refused(&id, now);
                match held {
                    Some(held) => Err(self.held(held, now)),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// The error that says logins are held back, and how to end that.
    fn held(&self, held: Held, now: Instant) -> VmproError {
        let retry_in = held.until.saturating_duration_since(now);
        let how = match &self.account.password_source {
            PasswordSource::File(path) => format!("write the new one into {}", path.display()),
            PasswordSource::Inline => {
                "edit it in the config, then reload with SIGHUP or restart".into()
            }
            PasswordSource::Env(name) => format!("restart hotfolder with the new one in {name}"),
        };
        VmproError::LoginHeld {
            username: self.account.username.clone(),
            refusals: held.refusals,
            how,
            at: clock_time(SystemTime::now() + retry_in),
            retry_in,
        }
    }

    /// A valid access token, logging in or refreshing first when needed.
    pub async fn access_token(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<SecretString, VmproError> {
        let mut tokens = self.tokens.lock().await;
        let now = Instant::now();
        if let Some(current) = tokens.as_ref()
            && now < current.refresh_at
        {
            return Ok(current.access.clone());
        }
        let refreshed = match tokens.take() {
            Some(old) => match old.refresh {
                Some(refresh) if old.refresh_usable_until.is_none_or(|until| now < until) => {
                    match self.refresh(&refresh, shutdown).await {
                        Ok(new) => Some(new),
                        Err(VmproError::Cancelled) => return Err(VmproError::Cancelled),
                        Err(err) => {
                            tracing::info!(
                                "token refresh refused ({}); logging in again",
                                chain(&err)
                            );
                            None
                        }
                    }
                }
                _ => None,
            },
            None => None,
        };
        let new = match refreshed {
            Some(new) => new,
            None => self.login_within_policy(shutdown).await?,
        };
        let access = new.access.clone();
        *tokens = Some(new);
        Ok(access)
    }

    /// Called after a 401 on an API call made with `used`: the next call refreshes.
    pub async fn invalidate(&self, used: &SecretString) {
        let mut tokens = self.tokens.lock().await;
        if let Some(current) = tokens.as_mut()
            && current.access.expose_secret() == used.expose_secret()
        {
            current.refresh_at = Instant::now();
        }
    }

    async fn login(
        &self,
        password: &SecretString,
        shutdown: &CancellationToken,
    ) -> Result<Tokens, VmproError> {
        let answer = match self.account.auth {
            AuthStyle::Keycloak => {
                let form = [
                    ("client_id", "anonymous"),
                    ("grant_type", "password"),
                    ("response_type", "token"),
                    ("scope", "openid"),
                    ("username", self.account.username.as_str()),
                    ("password", password.expose_secret()),
                ];
                self.post_token_form(Step::Login, &form, shutdown).await?
            }
            AuthStyle::Legacy => {
                let body = serde_json::json!({
                    "username": self.account.username,
                    "password": password.expose_secret(),
                });
                let url = self.api_join("auth/login")?;
                let answer = self
                    .transport
                    .exchange(Step::Login, shutdown, || {
                        self.transport.http.post(url.clone()).json(&body)
                    })
                    .await?;
                // A legacy token belongs to the VideoManager the login names; for another one
                // of the account's, the refresh for that VideoManager issues its token.
                let valid_for = legacy_valid_for(&answer.body);
                let tokens = self.read_tokens(Step::Login, answer)?;
                return match (valid_for, &tokens.refresh) {
                    (Some(vm), Some(refresh)) if vm != self.account.video_manager_id => {
                        tracing::debug!(
                            "the login's token is for VideoManager {vm}; asking for one for {}",
                            self.account.video_manager_id
                        );
                        let refresh = refresh.clone();
                        self.refresh(&refresh, shutdown).await
                    }
                    _ => Ok(tokens),
                };
            }
        };
        self.read_tokens(Step::Login, answer)
    }

    async fn refresh(
        &self,
        refresh: &SecretString,
        shutdown: &CancellationToken,
    ) -> Result<Tokens, VmproError> {
        let answer = match self.account.auth {
            AuthStyle::Keycloak => {
                let form = [
                    ("client_id", "anonymous"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.expose_secret()),
                ];
                self.post_token_form(Step::Refresh, &form, shutdown).await?
            }
            AuthStyle::Legacy => {
                let body = serde_json::json!({ "refreshToken": refresh.expose_secret() });
                let url =
                    self.api_join(&format!("auth/refresh/{}", self.account.video_manager_id))?;
                self.transport
                    .exchange(Step::Refresh, shutdown, || {
                        self.transport.http.post(url.clone()).json(&body)
                    })
                    .await?
            }
        };
        let mut tokens = self.read_tokens(Step::Refresh, answer)?;
        // The legacy refresh answers only a new access token: keep the refresh token we have.
        if tokens.refresh.is_none() {
            tokens.refresh = Some(refresh.clone());
        }
        Ok(tokens)
    }

    /// A form POST to the Keycloak token endpoint, transient failures retried.
    async fn post_token_form(
        &self,
        step: Step,
        form: &[(&str, &str)],
        shutdown: &CancellationToken,
    ) -> Result<Answer, VmproError> {
        self.transport
            .exchange(step, shutdown, || {
                self.transport
                    .http
                    .post(self.account.token_url.clone())
                    .form(form)
            })
            .await
    }

    fn api_join(&self, path: &str) -> Result<url::Url, VmproError> {
        self.account
            .api_url
            .join(path)
            .map_err(|err| VmproError::Protocol {
                step: Step::Login,
                message: format!("cannot build the URL {path} from api_url: {err}"),
            })
    }

    /// Turns a login or refresh answer into tokens, or the error it means.
    fn read_tokens(&self, step: Step, answer: Answer) -> Result<Tokens, VmproError> {
        let disposition = answer.disposition(step);
        match disposition {
            Disposition::Accepted => {}
            Disposition::Credentials => {
                return Err(VmproError::Credentials {
                    username: self.account.username.clone(),
                    status: answer.status,
                    message: super::error::server_message(&answer.body),
                });
            }
            other => {
                return Err(VmproError::from_answer(
                    step,
                    answer.status,
                    &answer.body,
                    other,
                ));
            }
        }
        let now = Instant::now();
        let protocol = |what: &str, err: serde_json::Error| VmproError::Protocol {
            step,
            message: format!("{what} answer is not the expected JSON ({err})"),
        };
        match self.account.auth {
            AuthStyle::Keycloak => {
                let parsed: KeycloakAnswer =
                    serde_json::from_slice(&answer.body).map_err(|e| protocol("the token", e))?;
                let lifetime = parsed
                    .expires_in
                    .map(Duration::from_secs)
                    .unwrap_or(ASSUMED_TOKEN_LIFETIME);
                Ok(Tokens {
                    access: SecretString::from(parsed.access_token),
                    refresh_at: refresh_deadline(now, lifetime),
                    refresh: parsed.refresh_token.map(SecretString::from),
                    refresh_usable_until: parsed
                        .refresh_expires_in
                        .map(|secs| refresh_deadline(now, Duration::from_secs(secs))),
                })
            }
            AuthStyle::Legacy => {
                let parsed: LegacyLoginAnswer =
                    serde_json::from_slice(&answer.body).map_err(|e| protocol("the login", e))?;
                Ok(Tokens {
                    access: SecretString::from(parsed.access_token),
                    refresh_at: refresh_deadline(now, ASSUMED_TOKEN_LIFETIME),
                    refresh: parsed.refresh_token.map(SecretString::from),
                    refresh_usable_until: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_legacy_login_names_its_video_manager_as_a_number_or_a_string() {
        assert_eq!(
            super::legacy_valid_for(br#"{"validForVideoManager": 777}"#),
            Some(777)
        );
        assert_eq!(
            super::legacy_valid_for(br#"{"validForVideoManager": "777"}"#),
            Some(777)
        );
        assert_eq!(super::legacy_valid_for(br#"{"accessToken": "t"}"#), None);
    }
}
