//! When a refused login may be tried again. Keycloak locks an account after 30 failed logins
//! (its default), so an agent that retries a wrong password at its usual pace locks the
//! studio's upload account within hours of a password rotation. After
//! [`REFUSALS_BEFORE_HOLD`] refusals in a row, [`LoginPolicy`] allows the next try only when
//! the credentials change (a new password file, a reload with a new password, a restart) or
//! once [`HOLD`] has passed: at most 3 + 24 = 27 refusals a day, plus one for each new password
//! an admin puts in (the count is not started afresh for it: a new password that is refused
//! too is held at once), while Keycloak locks at 30. A reload that changes nothing does not
//! lift a hold: SIGHUP is sent for many reasons.
//!
//! Time is passed in, so the policy is tested on a simulated day.

use tokio::time::Instant;

use std::time::Duration;

/// Refused logins of the same credentials before they are held back.
pub const REFUSALS_BEFORE_HOLD: u32 = 3;

/// How long held credentials wait before they are tried once more.
pub const HOLD: Duration = Duration::from_secs(3600);

/// Which credentials a refusal was for: a hash of the user name and password, so that the
/// policy can tell a new password from the old one without keeping a copy of either.
pub type CredentialId = [u8; 32];

/// Logins refused and when the next may be tried.
#[derive(Debug, Default)]
pub struct LoginPolicy {
    /// The credentials refused last.
    refused: Option<CredentialId>,
    /// Refusals in a row since the last accepted login, whatever the credentials: what the
    /// platform counts towards its lock.
    refusals: u32,
    /// No login with `refused` before this.
    held_until: Option<Instant>,
}

/// Why a login is not tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Refusals in a row of these credentials.
    pub refusals: u32,
    /// When they may be tried again (unless they change first).
    pub until: Instant,
}

impl LoginPolicy {
    /// May a login with `credentials` be sent now? Other credentials than the refused ones are
    /// always tried at once: the admin changed something.
    pub fn may_try(&self, credentials: &CredentialId, now: Instant) -> Result<(), Held> {
        if self.refused.as_ref() != Some(credentials) {
            return Ok(());
        }
        match self.held_until {
            Some(until) if now < until => Err(Held {
                refusals: self.refusals,
                until,
            }),
            _ => Ok(()),
        }
    }

    /// A login with `credentials` was refused (wrong user name or password). `Some` when they
    /// are now held back.
    pub fn refused(&mut self, credentials: &CredentialId, now: Instant) -> Option<Held> {
        self.refused = Some(*credentials);
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals < REFUSALS_BEFORE_HOLD {
            return None;
        }
        let until = now + HOLD;
        self.held_until = Some(until);
        Some(Held {
            refusals: self.refusals,
            until,
        })
    }

    /// A login succeeded: whatever was refused before is forgotten.
    pub fn accepted(&mut self) {
        *self = LoginPolicy::default();
    }

    /// Refusals in a row since the last accepted login.
    pub fn refusals(&self) -> u32 {
        self.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRONG: CredentialId = [1; 32];
    const FIXED: CredentialId = [2; 32];

    #[tokio::test(start_paused = true)]
    async fn a_wrong_password_is_refused_at_most_30_times_in_a_day() {
        // A client as eager as the agent with `backoff_max = "20ms"`: it asks every 100 ms.
        let mut policy = LoginPolicy::default();
        let start = Instant::now();
        let day = Duration::from_secs(24 * 3600);
        let step = Duration::from_millis(100);
        let mut now = start;
        let mut refusals = 0;
        let mut refused_at = Vec::new();
        while now < start + day {
            if policy.may_try(&WRONG, now).is_ok() {
                refusals += 1;
                refused_at.push(now - start);
                policy.refused(&WRONG, now);
            }
            now += step;
        }
        assert!(refusals <= 30, "{refusals} refusals in 24 h");
        // It does keep trying: three at once, then one an hour (the 24th hour's falls just
        // past the simulated day).
        assert_eq!(refusals, 3 + 23, "{refused_at:?}");
        assert!(refused_at[2] < Duration::from_secs(1));
        assert_eq!(refused_at[3], HOLD + Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn new_credentials_are_tried_at_once_and_start_afresh() {
        let mut policy = LoginPolicy::default();
        let now = Instant::now();
        assert_eq!(policy.refused(&WRONG, now), None);
        assert_eq!(policy.refused(&WRONG, now), None);
        let held = policy.refused(&WRONG, now).expect("held after the third");
        assert_eq!(held.refusals, 3);
        assert_eq!(held.until, now + HOLD);
        let later = now + Duration::from_secs(60);
        assert_eq!(policy.may_try(&WRONG, later), Err(held));

        // The password file now holds another password: tried at once.
        assert_eq!(policy.may_try(&FIXED, later), Ok(()));
        // Refused too (a typo): held at once, not given three more tries, and the count goes
        // on (the platform counts every refusal towards its lock).
        let held = policy.refused(&FIXED, later).expect("held at once");
        assert_eq!(held.refusals, 4);
        assert!(policy.may_try(&FIXED, later).is_err());
        // Going back to an earlier password is a change too: one try.
        assert_eq!(policy.may_try(&WRONG, later), Ok(()));

        // Accepted: nothing is held any more.
        policy.accepted();
        assert_eq!(policy.refusals(), 0);
        assert_eq!(policy.may_try(&FIXED, later), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn held_credentials_wait_their_hour_and_a_refusal_then_holds_again() {
        let mut policy = LoginPolicy::default();
        let now = Instant::now();
        for _ in 0..REFUSALS_BEFORE_HOLD {
            policy.refused(&WRONG, now);
        }
        assert!(policy.may_try(&WRONG, now).is_err());
        // An hour later, one more; refused, held again at once.
        assert_eq!(policy.may_try(&WRONG, now + HOLD), Ok(()));
        let held = policy
            .refused(&WRONG, now + HOLD)
            .expect("held again after one more refusal");
        assert_eq!(held.refusals, 4);
        assert!(policy.may_try(&WRONG, now + HOLD).is_err());
    }
}
