//! Logging in once for `hotfolder check`, the way a person at a terminal waits for it: a line
//! before every try, a few tries for a platform that is briefly away, and a verdict within
//! [`LOGIN_CHECK_BUDGET`] even when the server takes the connection and never answers.
//!
//! The agent's own logins go through the transport's retries, which may take minutes; `check`
//! makes each try a single request and does the retrying here, so that it can say what it is
//! doing between tries and stop at the budget.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::Platform;
use super::error::{Disposition, Step, VmproError};
use crate::config::{AccountSettings, UploadSettings};
use crate::retry::RetryPolicy;

/// How long `check` spends on the login at most: long enough for a few tries with the usual
/// backoff (1 + 1 + 2 + 3 + 5 + 8 s), short enough that nobody thinks it hangs.
pub const LOGIN_CHECK_BUDGET: Duration = Duration::from_secs(30);

/// Why `check`'s login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginCheckError {
    /// Every try failed on the way (connection refused, a timeout, 5xx, 429). Transient: the
    /// same config may work once the platform or the network is back.
    #[error("the platform could not be reached (gave up after {tries} tries in {:.1} s)", waited.as_secs_f64())]
    Unreachable {
        tries: u32,
        waited: Duration,
        #[source]
        last: VmproError,
    },
    /// A try was still waiting for an answer when the budget ran out. Transient, as above.
    #[error(
        "the platform did not answer within {} s (try {tries}); is api_url/token_url right, and is a firewall or proxy holding the connection?",
        budget.as_secs()
    )]
    NoAnswer { tries: u32, budget: Duration },
    /// The platform answered, and not with a token (wrong password, a 404 from a wrong
    /// token_url, an unexpected answer): trying again gives the same answer, and repeated
    /// refused logins can lock the account. Not retried.
    #[error("the login failed")]
    Failed(#[source] VmproError),
    /// The HTTP client could not be made. Not retried.
    #[error("cannot prepare the login")]
    Setup(#[source] VmproError),
    /// Ctrl-C.
    #[error("stopped before the login finished")]
    Cancelled,
}

impl LoginCheckError {
    /// What to do about it, for the line after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            LoginCheckError::Unreachable { .. } | LoginCheckError::NoAnswer { .. } => Some(
                "the config itself may be fine: check the network (a proxy or firewall), \
                 api_url and token_url, or try again later"
                    .to_owned(),
            ),
            LoginCheckError::Failed(error) => Some(error.meaning()),
            LoginCheckError::Setup(_) | LoginCheckError::Cancelled => None,
        }
    }
}

/// A moment of the login check worth telling the person waiting.
#[derive(Debug)]
pub enum LoginProgress<'a> {
    /// Try `number` of at most `of` starts now.
    Trying { number: u32, of: u32 },
    /// A try failed in a way worth repeating; the next starts in `retry_in`.
    WillRetry {
        error: &'a VmproError,
        retry_in: Duration,
    },
}

/// Logs in with `account`, trying up to `upload.max_attempts` times with the configured
/// backoff, each try bounded by `upload.request_timeout`, all of it by `budget`. Returns the
/// number of tries it took and the logged-in platform, for [`Platform::check_video_manager`].
pub async fn check_login(
    account: &AccountSettings,
    upload: &UploadSettings,
    budget: Duration,
    progress: &mut dyn FnMut(LoginProgress<'_>),
    shutdown: &CancellationToken,
) -> Result<(u32, std::sync::Arc<Platform>), LoginCheckError> {
    let single_try = UploadSettings {
        max_attempts: 1,
        ..upload.clone()
    };
    let platform = Platform::new(account, &single_try).map_err(LoginCheckError::Setup)?;
    let policy = RetryPolicy::new(upload.max_attempts, upload.backoff_max);
    let attempt = || {
        let platform = platform.clone();
        let shutdown = shutdown.clone();
        async move { platform.login(&shutdown).await }
    };
    let tries = login_within(attempt, policy, budget, progress, shutdown).await?;
    Ok((tries, platform))
}

impl Platform {
    /// One cheap call into the configured VideoManager (a video search for one video), so that
    /// `check` can tell a `video_manager_id` the platform does not know (404) or the account may
    /// not use (403) before the first upload fails on it. Sent once: the caller bounds it.
    pub async fn check_video_manager(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), VmproError> {
        let mut url = self.videos_url("")?;
        url.query_pairs_mut().append_pair("limit", "1");
        self.api_call(
            Step::CheckVideoManager,
            shutdown,
            &super::api::Unobserved,
            |token| self.transport.http.get(url.clone()).bearer_auth(token),
        )
        .await
        .map(|_| ())
        .map_err(single_try_error)
    }
}

/// The loop of [`check_login`], with the login itself passed in so that tests can run it on
/// paused time against a login that fails, or never answers, as they like.
async fn login_within<F, Fut>(
    mut attempt: F,
    policy: RetryPolicy,
    budget: Duration,
    progress: &mut dyn FnMut(LoginProgress<'_>),
    shutdown: &CancellationToken,
) -> Result<u32, LoginCheckError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), VmproError>>,
{
    let started = Instant::now();
    let deadline = started + budget;
    let mut tries = 0;
    loop {
        tries += 1;
        progress(LoginProgress::Trying {
            number: tries,
            of: policy.max_attempts,
        });
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Err(LoginCheckError::Cancelled),
            outcome = tokio::time::timeout_at(deadline, attempt()) => outcome,
        };
        let error = match outcome {
            Ok(Ok(())) => return Ok(tries),
            Ok(Err(error)) => single_try_error(error),
            Err(_elapsed) => return Err(LoginCheckError::NoAnswer { tries, budget }),
        };
        let retry_after = match &error {
            VmproError::Cancelled => return Err(LoginCheckError::Cancelled),
            VmproError::Unreachable { .. } => None,
            VmproError::Status {
                disposition: Disposition::Retry { retry_after },
                ..
            } => *retry_after,
            _ => return Err(LoginCheckError::Failed(error)),
        };
        let retry_in = policy.delay(tries, retry_after);
        if !policy.may_retry(tries) || Instant::now() + retry_in >= deadline {
            return Err(LoginCheckError::Unreachable {
                tries,
                waited: started.elapsed(),
                last: error,
            });
        }
        progress(LoginProgress::WillRetry {
            error: &error,
            retry_in,
        });
        tokio::select! {
            _ = shutdown.cancelled() => return Err(LoginCheckError::Cancelled),
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// The transport reports a request it was allowed to send once as "gave up after 1 tries";
/// the error of that one try says more.
fn single_try_error(error: VmproError) -> VmproError {
    match error {
        VmproError::GaveUp {
            attempts: 1, last, ..
        } => *last,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> VmproError {
        VmproError::Unreachable {
            step: Step::Login,
            message: "connection failed: connection refused".into(),
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::new(max_attempts, Duration::from_secs(60))
        }
    }

    /// Runs the loop and returns its outcome with what it told the user, one string each.
    async fn run(
        attempt: impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), VmproError>>>>,
        max_attempts: u32,
    ) -> (Result<u32, LoginCheckError>, Vec<String>) {
        let mut told = Vec::new();
        let mut progress = |p: LoginProgress<'_>| {
            told.push(match p {
                LoginProgress::Trying { number, of } => format!("try {number} of {of}"),
                LoginProgress::WillRetry { retry_in, .. } => format!("wait {}", retry_in.as_secs()),
            })
        };
        let shutdown = CancellationToken::new();
        let outcome = login_within(
            attempt,
            policy(max_attempts),
            LOGIN_CHECK_BUDGET,
            &mut progress,
            &shutdown,
        )
        .await;
        (outcome, told)
    }

    #[tokio::test(start_paused = true)]
    async fn a_platform_that_is_down_is_given_up_within_the_budget() {
        let started = Instant::now();
        let (outcome, told) = run(|| Box::pin(async { Err(unreachable()) }), 8).await;
        // 1 + 1 + 2 + 3 + 5 + 8 = 20 s of waiting; the next wait (13 s) would pass 30 s.
        match outcome {
            Err(LoginCheckError::Unreachable { tries: 7, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() <= LOGIN_CHECK_BUDGET,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            told,
            [
                "try 1 of 8",
                "wait 1",
                "try 2 of 8",
                "wait 1",
                "try 3 of 8",
                "wait 2",
                "try 4 of 8",
                "wait 3",
                "try 5 of 8",
                "wait 5",
                "try 6 of 8",
                "wait 8",
                "try 7 of 8"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_ends_at_the_budget() {
        let started = Instant::now();
        let (outcome, told) = run(|| Box::pin(std::future::pending()), 8).await;
        assert!(
            matches!(outcome, Err(LoginCheckError::NoAnswer { tries: 1, .. })),
            "{outcome:?}"
        );
        assert_eq!(started.elapsed(), LOGIN_CHECK_BUDGET);
        assert_eq!(told, ["try 1 of 8"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_is_not_repeated() {
        let mut tries = 0;
        let (outcome, told) = run(
            || {
                tries += 1;
                Box::pin(async {
                    Err(VmproError::Credentials {
                        username: "editor".into(),
                        status: 401,
                        message: "invalid_grant".into(),
                    })
                })
            },
            8,
        )
        .await;
        assert!(
            matches!(
                outcome,
                Err(LoginCheckError::Failed(VmproError::Credentials { .. }))
            ),
            "{outcome:?}"
        );
        assert_eq!(tries, 1);
        assert_eq!(told, ["try 1 of 8"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_platform_that_comes_back_is_logged_into() {
        let mut tries = 0;
        let (outcome, _) = run(
            || {
                tries += 1;
                let result = if tries < 3 {
                    Err(unreachable())
                } else {
                    Ok(())
                };
                Box::pin(async move { result })
            },
            8,
        )
        .await;
        assert_eq!(outcome.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_counts_too() {
        let (outcome, told) = run(|| Box::pin(async { Err(unreachable()) }), 2).await;
        assert!(
            matches!(outcome, Err(LoginCheckError::Unreachable { tries: 2, .. })),
            "{outcome:?}"
        );
        assert_eq!(told, ["try 1 of 2", "wait 1", "try 2 of 2"]);
    }

    #[test]
    fn one_try_reports_its_own_error() {
        let error = single_try_error(VmproError::GaveUp {
            step: Step::Login,
            attempts: 1,
            last: Box::new(unreachable()),
        });
        assert!(matches!(error, VmproError::Unreachable { .. }));
    }
}
