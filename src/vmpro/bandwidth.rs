//! The limiter that paces chunk bodies to `bandwidth_limit` or `bandwidth_schedule`: one for
//! all uploads, asked before each small slice of a body is handed to the socket, so a new
//! limit applies within a second to chunks in flight, and a small bucket that starts empty, so
//! no burst gets through (a full 1-second bucket once let a progress bar show 42 MiB/s against
//! a 20 MiB/s limit).
//!
//! One limiter lives as long as the agent: a reload changes its plan, never its bucket. A
//! fresh limiter per reload let the uploads in flight (which keep the client they started
//! with) and the new ones each send the whole limit, twice the limit together.
//!
//! Quiet hours: no request starts ([`BandwidthLimiter::until_not_quiet`]), and a body that has
//! not sent a byte waits. A chunk already under way when quiet hours begin finishes at the
//! rate before them: a body held open for hours would be cut by the server or a proxy, wasting
//! what was sent and counting as a network failure; finishing costs at most one chunk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bandwidth::{BandwidthPlan, Limit};
use crate::vmpro::error::VmproError;

/// Bytes of a body released at a time while a limit applies: 64 KiB takes 0.65 s at the
/// lowest rate people set (800 kbit/s), so a change applies within a second.
pub const PACE_SLICE: usize = 64 * 1024;

/// The bucket holds this much of a second's rate: bursts stay invisible to a progress bar.
const BUCKET_SECONDS: f64 = 0.1;

/// How long a limit read from the clock is trusted before it is read again: schedule changes
/// (and wall-clock jumps) apply within this.
const RECHECK: Duration = Duration::from_secs(1);

/// The shortest wait the limiter asks for.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Where the limiter learns the limit now, and for how long it holds at most.
pub trait LimitSource: Send + Sync {
    fn limit_now(&self) -> (Limit, Option<Duration>);
}

/// The configured plan, read on the system clock in local time.
struct LocalTime(BandwidthPlan);

impl LimitSource for LocalTime {
    fn limit_now(&self) -> (Limit, Option<Duration>) {
        let now = jiff::Zoned::now();
        let (limit, next) = self.0.at(&now);
        let left = next.and_then(|(at, _)| {
            let nanos = at.timestamp().as_nanosecond() - now.timestamp().as_nanosecond();
            u64::try_from(nanos).ok().map(Duration::from_nanos)
        });
        (limit, left)
    }
}

/// What a body may do with its next slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Ask again at this time (at most [`RECHECK`] away, so changes are seen).
    WaitUntil(Instant),
}

/// When a chunk body last moved, or until when it is known to be waiting for the limiter:
/// the client's whole-request timeout would cut a chunk sent for longer than
/// `request_timeout` (64 MiB at 800 kbit/s takes 11 minutes, paced or on a slow link), so a
/// chunk instead times out when nothing moved for that long: the socket stopped taking the
/// body, or the answer did not come after it. Also when the body's last byte was handed over,
/// which tells the wait for the answer from the time spent sending (see `vmpro::link`).
pub struct BodyProgress {
    alive_until: Mutex<Instant>,
    sent_at: Mutex<Option<Instant>>,
}

impl Default for BodyProgress {
    fn default() -> Self {
        BodyProgress {
            alive_until: Mutex::new(Instant::now()),
            sent_at: Mutex::new(None),
        }
    }
}

impl BodyProgress {
    /// A new try starts now.
    pub fn restart(&self) {
        if let Ok(mut alive) = self.alive_until.lock() {
            *alive = Instant::now();
        }
        if let Ok(mut sent_at) = self.sent_at.lock() {
            *sent_at = None;
        }
    }

    /// The body's last byte was handed to the connection now.
    pub fn sent(&self) {
        let now = Instant::now();
        self.alive(now);
        if let Ok(mut sent_at) = self.sent_at.lock() {
            *sent_at = Some(now);
        }
    }

    /// When this try's body was handed over whole, if it was.
    pub fn sent_at(&self) -> Option<Instant> {
        self.sent_at.lock().ok().and_then(|sent_at| *sent_at)
    }

    /// The body moved, or is waiting for the limiter, until `until`.
    pub fn alive(&self, until: Instant) {
        if let Ok(mut alive) = self.alive_until.lock() {
            *alive = (*alive).max(until);
        }
    }

    /// Returns once nothing moved for `timeout`.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            let deadline = match self.alive_until.lock() {
                Ok(alive) => *alive + timeout,
                Err(_) => return,
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The token bucket all uploads share, across reloads too.
pub struct BandwidthLimiter {
    /// Replaced by a reload ([`set_plan`](Self::set_plan)); the bucket stays.
    source: Mutex<Box<dyn LimitSource>>,
    /// Whether a limit or timetable is configured at all: chunks are paced only then, so an
    /// unlimited upload costs no per-slice work.
    limits: AtomicBool,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes that may go now; negative = owed, sent ahead of the rate.
    tokens: f64,
    refilled_at: Instant,
    limit: Limit,
    /// When to read the limit again.
    recheck_at: Instant,
    /// The last limit that let bytes through: a chunk in flight finishes at it in quiet hours.
    last_flowing: Limit,
}

impl BandwidthLimiter {
    /// A limiter for the plan (which may be unlimited: a reload can set one later).
    pub fn for_plan(plan: &BandwidthPlan) -> BandwidthLimiter {
        let limiter = BandwidthLimiter::new(Box::new(LocalTime(plan.clone())));
        limiter
            .limits
            .store(!plan.is_unlimited(), Ordering::Relaxed);
        limiter
    }

    pub fn new(source: Box<dyn LimitSource>) -> BandwidthLimiter {
        let now = Instant::now();
        BandwidthLimiter {
            source: Mutex::new(source),
            limits: AtomicBool::new(true),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled_at: now,
                limit: Limit::Unlimited,
                recheck_at: now,
                last_flowing: Limit::Unlimited,
            }),
        }
    }

    /// A reload's plan: read at the next slice of every body, the uploads in flight included.
    /// The bucket (what was sent ahead of the rate) carries on, so the change lets no burst
    /// through.
    pub fn set_plan(&self, plan: &BandwidthPlan) {
        self.set_source(Box::new(LocalTime(plan.clone())));
        self.limits.store(!plan.is_unlimited(), Ordering::Relaxed);
    }

    fn set_source(&self, source: Box<dyn LimitSource>) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = source;
        if let Ok(mut bucket) = self.bucket.lock() {
            bucket.recheck_at = Instant::now();
        }
    }

    /// Whether a limit or timetable is configured: a chunk starting now is paced.
    pub fn limits(&self) -> bool {
        self.limits.load(Ordering::Relaxed)
    }

    /// Reads the limit again when it is due.
    fn refresh(&self, bucket: &mut Bucket, now: Instant) {
        if now < bucket.recheck_at {
            return;
        }
        // Poisoned only by a panic inside `limit_now`, which changes nothing: still usable.
        let (limit, left) = self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .limit_now();
        bucket.recheck_at = now + left.map_or(RECHECK, |left| left.min(RECHECK)).max(MIN_WAIT);
        if !matches!(limit, Limit::Quiet) {
            bucket.last_flowing = limit;
        }
        bucket.limit = limit;
    }

    /// Whether `bytes` may be sent now. `under_way`: the body has sent bytes already (it is
    /// not stopped by quiet hours, see the module's note).
    pub fn admit(&self, bytes: usize, under_way: bool) -> Admission {
        let now = Instant::now();
        let Ok(mut bucket) = self.bucket.lock() else {
            // A panic while holding the lock left no consistent state: do not limit.
            return Admission::Go;
        };
        self.refresh(&mut bucket, now);
        let limit = match bucket.limit {
            Limit::Quiet if under_way => bucket.last_flowing,
            Limit::Quiet => return Admission::WaitUntil(bucket.recheck_at),
            limit => limit,
        };
        let Some(rate) = limit.bytes_per_second().map(|rate| rate.max(1) as f64) else {
            bucket.tokens = 0.0;
            bucket.refilled_at = now;
            return Admission::Go;
        };
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate * BUCKET_SECONDS);
        bucket.refilled_at = now;
        if bucket.tokens >= 0.0 {
            bucket.tokens -= bytes as f64;
            return Admission::Go;
        }
        // At least a millisecond (the timer's resolution): a debt of a rounding error must not
        // make a caller ask again at once, for ever.
        let owed = Duration::from_secs_f64(-bucket.tokens / rate).max(MIN_WAIT);
        // Asked again by the time the limit is read again, so a new one applies to the debt.
        Admission::WaitUntil((now + owed).min(bucket.recheck_at.max(now + MIN_WAIT)))
    }

    /// While it is quiet hours: when to look again (at most a second away).
    pub fn quiet_until(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut bucket = self.bucket.lock().ok()?;
        self.refresh(&mut bucket, now);
        matches!(bucket.limit, Limit::Quiet).then_some(bucket.recheck_at)
    }

    /// Waits while it is quiet hours, so that no request starts then; returns at once
    /// otherwise.
    pub async fn until_not_quiet(&self) {
        while let Some(at) = self.quiet_until() {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Waits out quiet hours when it is quiet now, calling `announce` first to say what waits;
    /// returns at once otherwise. `Cancelled` when `shutdown` comes first.
    pub async fn wait_out_quiet_hours(
        &self,
        shutdown: &CancellationToken,
        announce: impl FnOnce(),
    ) -> Result<(), VmproError> {
        if self.limits() && self.quiet_until().is_some() {
            announce();
            tokio::select! {
                _ = shutdown.cancelled() => return Err(VmproError::Cancelled),
                _ = self.until_not_quiet() => {}
            }
        }
        Ok(())
    }

    /// Sends `bytes` in slices the way a body does, for tests.
    #[cfg(test)]
    pub async fn take(&self, bytes: usize, under_way: bool) {
        let mut left = bytes;
        let mut started = under_way;
        while left > 0 {
            let slice = left.min(PACE_SLICE);
            match self.admit(slice, started) {
                Admission::Go => {
                    left -= slice;
                    started = true;
                }
                Admission::WaitUntil(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::bandwidth::Bandwidth;

    /// A limit that tests change as they go.
    struct Settable(Arc<Mutex<Limit>>);

    impl LimitSource for Settable {
        fn limit_now(&self) -> (Limit, Option<Duration>) {
            (*self.0.lock().expect("test lock"), None)
        }
    }

    fn rate(bytes_per_second: u64) -> Limit {
        Limit::Rate(Bandwidth {
            bytes_per_second,
            bits: false,
        })
    }

    fn limiter(limit: Limit) -> (Arc<BandwidthLimiter>, Arc<Mutex<Limit>>) {
        let shared = Arc::new(Mutex::new(limit));
        let limiter = BandwidthLimiter::new(Box::new(Settable(shared.clone())));
        (Arc::new(limiter), shared)
    }

    /// Sends slices for ever, counting the bytes that were let through.
    fn sender(limiter: Arc<BandwidthLimiter>, sent: Arc<AtomicU64>, under_way: bool) {
        tokio::spawn(async move {
            loop {
                match limiter.admit(PACE_SLICE, under_way) {
                    Admission::Go => {
                        sent.fetch_add(PACE_SLICE as u64, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                    Admission::WaitUntil(at) => tokio::time::sleep_until(at).await,
                }
            }
        });
    }

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn the_first_second_sends_no_more_than_the_rate() {
        let (limiter, _) = limiter(rate(20 * MIB));
        let sent = Arc::new(AtomicU64::new(0));
        // Two uploads share the limit.
        sender(limiter.clone(), sent.clone(), false);
        sender(limiter.clone(), sent.clone(), false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first_tenth = sent.load(Ordering::SeqCst);
        assert!(first_tenth <= 2 * MIB + PACE_SLICE as u64, "{first_tenth}");
        tokio::time::sleep(Duration::from_millis(900)).await;
        let first_second = sent.load(Ordering::SeqCst);
        assert!(
            first_second <= 20 * MIB + PACE_SLICE as u64,
            "{first_second}"
        );
        assert!(first_second >= 19 * MIB, "{first_second}");
        tokio::time::sleep(Duration::from_secs(29)).await;
        let thirty = sent.load(Ordering::SeqCst) as f64 / 30.0;
        assert!((thirty / (20 * MIB) as f64 - 1.0).abs() < 0.01, "{thirty}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_rate_paces_a_chunk_in_slices_of_under_a_second() {
        // 800 kbit/s: an 8 MiB chunk takes 84 s, and no slice waits longer than a second.
        let (limiter, _) = limiter(rate(100_000));
        let start = Instant::now();
        limiter.take(8 * MIB as usize, false).await;
        let took = start.elapsed().as_secs_f64();
        assert!((took - 8.0 * MIB as f64 / 100_000.0).abs() < 1.0, "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_within_a_second_mid_chunk() {
        let (limiter, limit) = limiter(rate(MIB));
        let sent = Arc::new(AtomicU64::new(0));
        sender(limiter.clone(), sent.clone(), false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        *limit.lock().expect("test lock") = rate(10 * MIB);
        // Within a second the new rate shows.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per_second = (sent.load(Ordering::SeqCst) - before) / 2;
        assert!(
            per_second >= 9 * MIB && per_second <= 10 * MIB + PACE_SLICE as u64,
            "{per_second}"
        );
        // And down again.
        *limit.lock().expect("test lock") = rate(MIB);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per_second = (sent.load(Ordering::SeqCst) - before) / 2;
        assert!(
            per_second >= MIB - PACE_SLICE as u64 && per_second <= MIB + PACE_SLICE as u64,
            "{per_second}"
        );
    }

    /// Hostile test of issue 13: a reload made a second limiter, and the uploads in flight
    /// (on the old one) and those started after it (on the new one) sent twice the limit.
    #[tokio::test(start_paused = true)]
    async fn a_reload_changes_the_rate_of_the_one_bucket_uploads_in_flight_share() {
        let (limiter, _) = limiter(rate(4 * MIB));
        let sent = Arc::new(AtomicU64::new(0));
        // An upload in flight before the reload, and one started after it: both hold the one
        // limiter, as the old and the new client do.
        sender(limiter.clone(), sent.clone(), false);
        tokio::time::sleep(Duration::from_secs(2)).await;
        limiter.set_source(Box::new(Settable(Arc::new(Mutex::new(rate(2 * MIB))))));
        sender(limiter.clone(), sent.clone(), false);
        let before = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let per_second = (sent.load(Ordering::SeqCst) - before) / 4;
        assert!(
            per_second <= 2 * MIB + PACE_SLICE as u64 && per_second >= 2 * MIB - PACE_SLICE as u64,
            "{per_second} B/s against 2 MiB/s"
        );
    }

    #[test]
    fn a_plan_set_by_a_reload_says_whether_chunks_are_paced() {
        let limiter = BandwidthLimiter::for_plan(&BandwidthPlan::Unlimited);
        assert!(!limiter.limits());
        let fixed = BandwidthPlan::Fixed(Bandwidth {
            bytes_per_second: MIB,
            bits: false,
        });
        limiter.set_plan(&fixed);
        assert!(limiter.limits());
        assert_eq!(limiter.admit(PACE_SLICE, false), Admission::Go);
        assert!(matches!(
            limiter.admit(PACE_SLICE, false),
            Admission::WaitUntil(_)
        ));
        limiter.set_plan(&BandwidthPlan::Unlimited);
        assert!(!limiter.limits());
        assert_eq!(limiter.admit(64 * MIB as usize, false), Admission::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_hours_send_nothing_new() {
        let (limiter, limit) = limiter(Limit::Quiet);
        let sent = Arc::new(AtomicU64::new(0));
        sender(limiter.clone(), sent.clone(), false);
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter.until_not_quiet().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        assert!(limiter.quiet_until().is_some());
        assert!(!waiting.is_finished());
        let end_of_quiet = Instant::now();
        *limit.lock().expect("test lock") = rate(MIB);
        let started = waiting.await.expect("the waiting task");
        assert!(started - end_of_quiet <= Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(sent.load(Ordering::SeqCst) >= MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_under_way_when_quiet_hours_begin_finishes_at_the_rate_before() {
        let (limiter, limit) = limiter(rate(MIB));
        let sent = Arc::new(AtomicU64::new(0));
        sender(limiter.clone(), sent.clone(), true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        *limit.lock().expect("test lock") = Limit::Quiet;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per_second = (sent.load(Ordering::SeqCst) - before) / 2;
        assert!(per_second <= MIB + PACE_SLICE as u64, "{per_second}");
        assert!(per_second >= MIB - PACE_SLICE as u64, "{per_second}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_lets_everything_through_at_once() {
        let (limiter, _) = limiter(Limit::Unlimited);
        let start = Instant::now();
        limiter.take(64 * MIB as usize, false).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
