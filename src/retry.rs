//! The retry policy: Fibonacci delays (1, 1, 2, 3, 5, 8, … s) with jitter, capped by
//! `backoff_max`, at most `max_attempts` tries per request, and the server's `Retry-After`
//! honoured. The schedule is a pure function of the try number so that it can be tested
//! exhaustively and, if needed, resumed after a restart.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The longest `Retry-After` we obey. A server asking for more is treated as asking for this:
/// an unattended agent should not sleep for a day because of one header.
pub const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(15 * 60);

/// How often and how long to wait before trying a request again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries per request, the first one included.
    pub max_attempts: u32,
    /// Unit of the Fibonacci sequence: 1 s in production, shorter in tests.
    pub base: Duration,
    /// No single delay exceeds this (except an explicit `Retry-After`).
    pub cap: Duration,
    /// Jitter removes up to this fraction of each delay, so that many files failing at once do
    /// not retry in lockstep. 0.0 gives the exact sequence.
    pub jitter: f64,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, cap: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base: Duration::from_secs(1),
            cap,
            jitter: 0.25,
        }
    }

    /// The delay before try number `failed + 1`, after `failed` (≥ 1) tries failed, without
    /// jitter: base × fib(failed), capped.
    pub fn nominal_delay(&self, failed: u32) -> Duration {
        let factor = fibonacci(failed.max(1));
        let nanos = (self.base.as_nanos()).saturating_mul(u128::from(factor));
        let delay = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        delay.min(self.cap)
    }

    /// The delay actually waited: the nominal delay less up to `jitter` of it, but never less
    /// than what the server asked for with `Retry-After`.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        let nominal = self.nominal_delay(failed);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let jittered = if jitter > 0.0 {
            let keep = 1.0 - rand::rng().random_range(0.0..=jitter);
            nominal.mul_f64(keep)
        } else {
            nominal
        };
        match retry_after {
            Some(asked) => jittered.max(asked.min(RETRY_AFTER_LIMIT)),
            None => jittered,
        }
    }

    /// Whether another try is allowed after `failed` tries failed.
    pub fn may_retry(&self, failed: u32) -> bool {
        failed < self.max_attempts
    }
}

/// fib(1) = 1, fib(2) = 1, fib(3) = 2, … saturating instead of overflowing.
pub fn fibonacci(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        let next = a.saturating_add(b);
        a = b;
        b = next;
    }
    a
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fibonacci_sequence() {
        let seq: Vec<u64> = (1..=10).map(fibonacci).collect();
        assert_eq!(seq, vec![1, 1, 2, 3, 5, 8, 13, 21, 34, 55]);
        assert_eq!(fibonacci(200), u64::MAX);
    }

    #[test]
    fn nominal_schedule_is_capped() {
        let policy = RetryPolicy::new(8, Duration::from_secs(10));
        let delays: Vec<u64> = (1..=8).map(|n| policy.nominal_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 1, 2, 3, 5, 8, 10, 10]);
    }

    #[test]
    fn retry_after_wins_over_a_shorter_delay_but_is_bounded() {
        let policy = RetryPolicy::new(8, Duration::from_secs(60));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))).as_secs(), 7);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(86_400))),
            RETRY_AFTER_LIMIT
        );
    }

    #[test]
    fn attempts_are_counted() {
        let policy = RetryPolicy::new(3, Duration::from_secs(60));
        assert!(policy.may_retry(1));
        assert!(policy.may_retry(2));
        assert!(!policy.may_retry(3));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// The schedule as a user waits it: under paused time, a loop that sleeps the policy's
    /// delays between five failed tries takes exactly 1+1+2+3 = 7 s.
    #[tokio::test(start_paused = true)]
    async fn schedule_under_paused_time() {
        let mut policy = RetryPolicy::new(5, Duration::from_secs(60));
        policy.jitter = 0.0;
        let start = tokio::time::Instant::now();
        let mut failed = 0;
        let mut waits = Vec::new();
        loop {
            failed += 1;
            if !policy.may_retry(failed) {
                break;
            }
            let delay = policy.delay(failed, None);
            waits.push(delay.as_secs());
            tokio::time::sleep(delay).await;
        }
        assert_eq!(waits, vec![1, 1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(failed in 1u32..200, cap_s in 1u64..3600, jitter in 0.0f64..1.0) {
            let mut policy = RetryPolicy::new(10, Duration::from_secs(cap_s));
            policy.jitter = jitter;
            let nominal = policy.nominal_delay(failed);
            let d = policy.delay(failed, None);
            prop_assert!(d <= nominal);
            prop_assert!(d >= nominal.mul_f64(1.0 - jitter).saturating_sub(Duration::from_millis(1)));
            prop_assert!(nominal <= Duration::from_secs(cap_s));
        }

        #[test]
        fn nominal_delays_never_decrease(failed in 1u32..500) {
            let policy = RetryPolicy::new(10, Duration::from_secs(60));
            prop_assert!(policy.nominal_delay(failed + 1) >= policy.nominal_delay(failed));
        }
    }
}
