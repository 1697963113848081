//! Access tokens: the Keycloak password grant and refresh (the default), or the legacy JSON
//! login. One refresh at a time for every upload (the token lock is held across the request),
//! done ahead of expiry so that no API call is sent with a token about to die.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Answer, Transport};
use super::error::{Disposition, Step, VmproError, classify};
use crate::chain;
use crate::config::{AccountSettings, AuthStyle};

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
    account: AccountSettings,
    /// `None` until the first login. The lock is what makes refreshes single-flight.
    tokens: Mutex<Option<Tokens>>,
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
    pub fn new(transport: Transport, account: AccountSettings) -> Self {
        Session {
            transport,
            account,
            tokens: Mutex::new(None),
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
            None => self.login(shutdown).await?,
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

    async fn login(&self, shutdown: &CancellationToken) -> Result<Tokens, VmproError> {
        let answer = match self.account.auth {
            AuthStyle::Keycloak => {
                let form = [
                    ("client_id", "anonymous"),
                    ("grant_type", "password"),
                    ("response_type", "token"),
                    ("scope", "openid"),
                    ("username", self.account.username.as_str()),
                    ("password", self.account.password.expose_secret()),
                ];
                self.post_token_form(Step::Login, &form, shutdown).await?
            }
            AuthStyle::Legacy => {
                let body = serde_json::json!({
                    "username": self.account.username,
                    "password": self.account.password.expose_secret(),
                });
                let url = self.api_join("auth/login")?;
                self.transport
                    .exchange(Step::Login, shutdown, || {
                        self.transport.http.post(url.clone()).json(&body)
                    })
                    .await?
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
        let disposition = classify(step, answer.status, &answer.body, answer.retry_after());
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
