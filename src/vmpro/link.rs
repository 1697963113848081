//! The link to the platform as the uploads see it, and `chunk_size = "auto"`'s choice from it.
//!
//! Chunks of one file go one at a time, each waiting for its answer before the next is sent
//! (vmpro-protocol.md section 3): on a long link every chunk costs a round trip in which the
//! file sends nothing. The wait is the same whatever the chunk's size, so bigger chunks waste
//! less of the link: a chunk of `size` bytes at `rate` takes `size / rate` to send, and the
//! wait stays under a tenth of that when `size >= 10 × round trip × rate`.
//!
//! [`LinkMeter`] measures both as the uploads go: the round trip from the API calls (the create
//! and the upload URL come before any chunk, so the first file already has one) and from each
//! chunk's answer; the rate from each chunk's time without its wait. Before any chunk was
//! measured, the rate is assumed to be fast (the bandwidth limit when one is set, else
//! 1 Gbit/s): a chunk too big for a slow link costs little (it times out only when nothing
//! moves), one too small for a fast link costs a round trip per chunk. What was measured is
//! kept in the state store between runs ([`MeasuredLink`]).
//!
//! A chunk refused for its size (413) halves the size, down to 1 MiB, and the smaller size is
//! remembered as the most the server takes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::{human_rate, human_size};

const MIB: u64 = 1024 * 1024;

/// The smallest size auto picks from the link (the size before auto existed).
pub const AUTO_MIN: u64 = 8 * MIB;
/// The largest: the most the config allows.
pub const AUTO_MAX: u64 = 64 * MIB;
/// A refused size is never halved below this.
pub const SMALLEST_CHUNK: u64 = MIB;

/// All the uploads' chunks in memory together stay under about this much with auto: each file
/// holds its chunk in flight (plus a few read-ahead pieces), so `parallel` files at 64 MiB
/// would hold 64 MiB × `parallel`. See [`auto_ceiling`].
pub const AUTO_MEMORY: u64 = 128 * MIB;

/// How long a size the server refused caps auto's choice. A body size limit is a proxy's or
/// the platform's setting, which can be raised; a day is long enough that a cap learnt in
/// the evening still holds for the next working day's uploads (each refusal costs a restart
/// of a file), and short enough that a raised limit is used again without anyone clearing
/// the state store. Counted from the refusal, in the store as in the running agent.
pub const CAP_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The wait for an answer may cost at most this share of a chunk's sending time.
const WAIT_SHARE: f64 = 0.10;

/// The rate assumed before any chunk was measured (1 Gbit/s), when no limit is set.
const ASSUMED_RATE: f64 = 125_000_000.0;

/// How many of the latest answers (API calls and chunks alike, in the order they came) the
/// round trip is the smallest of: one slow answer (a new connection, a busy server) must not
/// count as the link's latency, and a link that became slower is seen after this many
/// answers of any kind. One window for both kinds: the API is asked only a few times per file,
/// so a window of its own would keep a fast answer from many chunks ago for the whole file.
const RECENT: usize = 6;

/// Weight of one 8 MiB chunk's rate in the running average; smaller chunks weigh less (the last
/// chunk of a file is often a few bytes, whose time is mostly the wait).
const RATE_WEIGHT: f64 = 0.25;

/// The most the server takes, learnt from a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCap {
    /// The largest chunk size auto uses until the cap expires.
    pub max: u64,
    /// The size of the chunk the server refused (the bytes sent).
    pub refused: u64,
    /// When it refused it; the cap lasts [`CAP_LIFETIME`] from then.
    pub at: SystemTime,
}

impl ChunkCap {
    /// Whether the cap still holds at `now`. A refusal stamped in the future (a clock set
    /// back) counts as just now.
    pub fn in_force(&self, now: SystemTime) -> bool {
        now.duration_since(self.at)
            .map_or(true, |age| age < CAP_LIFETIME)
    }

    /// When it stops holding.
    pub fn expires(&self) -> SystemTime {
        self.at + CAP_LIFETIME
    }
}

/// What is known about the link: what the store keeps between runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeasuredLink {
    /// Bytes per second one upload's chunks cross the link at (a running average); `None`
    /// before any chunk was measured.
    pub rate: Option<f64>,
    /// The wait for an answer: the smallest recent round trip.
    pub round_trip: Option<Duration>,
    /// The largest chunk the server takes: set when it refused one for its size (413), for
    /// [`CAP_LIFETIME`].
    pub cap: Option<ChunkCap>,
}

impl MeasuredLink {
    /// The cap, while it holds at `now`.
    pub fn cap_at(&self, now: SystemTime) -> Option<ChunkCap> {
        self.cap.filter(|cap| cap.in_force(now))
    }
}

/// Measures the link as uploads use it; one for all the uploads of a process (and its
/// VideoManagers: they share the platform's hosts).
#[derive(Debug, Default)]
pub struct LinkMeter {
    state: Mutex<MeterState>,
}

#[derive(Debug, Default)]
struct MeterState {
    link: MeasuredLink,
    /// The latest answers' round trips, API calls and chunks alike, newest last. A chunk's is
    /// from its last byte handed over to its answer, so it includes the time the socket's
    /// buffer takes to drain: it can only be longer than the link's (measured: 40 ms on a
    /// 10 ms link), so the smallest of the window is still the best estimate when API answers
    /// are in it, and no worse than the truth when only chunks are.
    answers: VecDeque<Duration>,
    /// The longest chunk the server accepted in this run: a refusal of a chunk no longer than
    /// this is not about its size.
    largest_accepted: u64,
}

impl LinkMeter {
    fn state(&self) -> std::sync::MutexGuard<'_, MeterState> {
        // Plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts from what an earlier run measured (from the state store); what this run measured
    /// already wins, and of two caps that hold, the smaller.
    pub fn seed(&self, stored: MeasuredLink) {
        let now = SystemTime::now();
        let mut state = self.state();
        let link = &mut state.link;
        link.rate = link.rate.or(stored.rate);
        link.round_trip = link.round_trip.or(stored.round_trip);
        link.cap = match (link.cap_at(now), stored.cap_at(now)) {
            (Some(a), Some(b)) => Some(if b.max < a.max { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    pub fn snapshot(&self) -> MeasuredLink {
        self.state().link
    }

    /// An API call was answered `took` after it was sent.
    pub fn round_trip(&self, took: Duration) {
        let mut state = self.state();
        state.answered(took);
    }

    /// A chunk of `len` bytes was accepted `took` after its request started, `answered_in`
    /// after its last byte was handed to the connection.
    pub fn chunk(&self, len: u64, took: Duration, answered_in: Option<Duration>) {
        let mut state = self.state();
        state.largest_accepted = state.largest_accepted.max(len);
        if let Some(answered_in) = answered_in {
            state.answered(answered_in);
        }
        let wait = state.link.round_trip.unwrap_or(Duration::ZERO);
        let Some(sending) = took.checked_sub(wait).filter(|d| !d.is_zero()) else {
            return;
        };
        let sample = len as f64 / sending.as_secs_f64();
        let weight = RATE_WEIGHT * (len as f64 / AUTO_MIN as f64).min(1.0);
        state.link.rate = Some(match state.link.rate {
            Some(rate) => rate + weight * (sample - rate),
            None => sample,
        });
    }

    /// Whether a chunk of `len` bytes is no longer than one the server accepted in this run:
    /// a refusal of it then is not about its size (a proxy's hiccup, a server's bad moment).
    pub fn accepted_before(&self, len: u64) -> bool {
        len <= self.state().largest_accepted
    }

    /// The server refused a chunk of `sent` bytes for its size at `now`: the size to try
    /// instead (half, in whole MiB), remembered as the most the server takes; `None` below
    /// 2 MiB.
    pub fn refused(&self, sent: u64, now: SystemTime) -> Option<u64> {
        let half = (sent / 2 / MIB) * MIB;
        if half < SMALLEST_CHUNK {
            return None;
        }
        let mut state = self.state();
        let max = state.link.cap_at(now).map_or(half, |cap| cap.max.min(half));
        state.link.cap = Some(ChunkCap {
            max,
            refused: sent,
            at: now,
        });
        Some(max)
    }
}

impl MeterState {
    /// Notes an answer's round trip; the estimate is the smallest of the latest [`RECENT`].
    fn answered(&mut self, took: Duration) {
        if self.answers.len() == RECENT {
            self.answers.pop_front();
        }
        self.answers.push_back(took);
        self.link.round_trip = self.answers.iter().min().copied();
    }
}

/// The most auto picks for one file when `parallel` files upload at once: 128 MiB of chunks
/// in all ([`AUTO_MEMORY`]), at least the 8 MiB floor and at most 64 MiB, in whole MiB
/// (parallel 1-2: 64 MiB, 4: 32 MiB, 8: 16 MiB, 16 or more: 8 MiB).
pub fn auto_ceiling(parallel: usize) -> u64 {
    let parallel = u64::try_from(parallel.max(1)).unwrap_or(u64::MAX);
    (AUTO_MEMORY / parallel / MIB * MIB).clamp(AUTO_MIN, AUTO_MAX)
}

/// A file's chunk size and why, for its log line and its sidecar's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChoice {
    pub size: u64,
    pub why: String,
}

/// `chunk_size = "auto"`: the size that keeps the wait for each answer under a tenth of the
/// chunk's sending time on `link`, in whole MiB, 8 MiB ..= `ceiling` (64 MiB, less with many
/// files in parallel: [`auto_ceiling`]), and no more than the server takes while a refusal's
/// cap holds at `now`. `limit`: the bandwidth limit now, the rate assumed before any chunk was
/// measured.
pub fn choose_chunk_size(
    link: &MeasuredLink,
    limit: Option<u64>,
    ceiling: u64,
    now: SystemTime,
) -> ChunkChoice {
    let ceiling = ceiling.clamp(AUTO_MIN, AUTO_MAX);
    let Some(round_trip) = link.round_trip else {
        return capped(
            link,
            now,
            AUTO_MIN,
            format!(
                "auto: {} until the link's round trip is measured",
                human_size(AUTO_MIN)
            ),
        );
    };
    let (rate, rate_said) = match (link.rate, limit) {
        (Some(rate), _) => (rate, format!("chunks cross at {}", human_rate(rate))),
        (None, Some(limit)) => (
            limit as f64,
            format!(
                "the bandwidth limit {} is assumed until a chunk is measured",
                human_rate(limit as f64)
            ),
        ),
        (None, None) => (
            ASSUMED_RATE,
            "1 Gbit/s is assumed until a chunk is measured".to_owned(),
        ),
    };
    let wanted = round_trip.as_secs_f64() * rate / WAIT_SHARE;
    const UNDER: &str = "keeps the wait under 10 % of a chunk's time";
    let (size, outcome) = if wanted <= AUTO_MIN as f64 {
        (
            AUTO_MIN,
            format!("{}, the least auto uses, {UNDER}", human_size(AUTO_MIN)),
        )
    } else if wanted.is_finite() && wanted <= ceiling as f64 {
        // In whole MiB, rounded up: the wait stays under the share.
        let size = (wanted / MIB as f64).ceil() as u64 * MIB;
        (size.min(ceiling), format!("{} {UNDER}", human_size(size)))
    } else {
        // A float beyond u64 is only "very large": `as` saturates.
        let needed = human_size(wanted as u64);
        let most = if ceiling < AUTO_MAX {
            "the most auto uses with this many files in parallel"
        } else {
            "the most auto uses"
        };
        (
            ceiling,
            format!("{}, {most} ({needed} {UNDER})", human_size(ceiling)),
        )
    };
    let why = format!(
        "auto: answers take {} ms and {rate_said}: {outcome}",
        round_trip.as_millis()
    );
    capped(link, now, size, why)
}

/// `size`, or the most the server takes when that is less.
fn capped(link: &MeasuredLink, now: SystemTime, size: u64, why: String) -> ChunkChoice {
    match link.cap_at(now) {
        Some(cap) if cap.max < size => ChunkChoice {
            size: cap.max,
            why: format!(
                "{why}; but the server refused a chunk of {} at {}, so at most {} until {}",
                human_size(cap.refused),
                timestamp(cap.at),
                human_size(cap.max),
                timestamp(cap.expires()),
            ),
        },
        _ => ChunkChoice { size, why },
    }
}

/// A time as people read it in logs and `status`: UTC, to the second.
pub fn timestamp(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at)
        .map(|at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| "an unknown time".to_owned())
}

/// How `check` and `status` describe auto's cap: "at most 4 MiB since the platform refused
/// 8 MiB at <time> (until <time>)".
pub fn describe_cap(cap: &ChunkCap) -> String {
    format!(
        "at most {} since the platform refused {} at {} (until {})",
        human_size(cap.max),
        human_size(cap.refused),
        timestamp(cap.at),
        timestamp(cap.expires())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(round_trip_ms: u64, rate: Option<f64>) -> MeasuredLink {
        MeasuredLink {
            rate,
            round_trip: Some(Duration::from_millis(round_trip_ms)),
            cap: None,
        }
    }

    const GBIT: f64 = 125_000_000.0;

    #[test]
    fn a_long_fast_link_gets_chunks_ten_round_trips_of_rate_long() {
        // 40 ms × 125 MB/s × 10 = 50 MB = 47.7 MiB: 48 MiB, rounded up to whole MiB.
        let choice = choose_chunk_size(&link(40, Some(GBIT)), None, AUTO_MAX, SystemTime::now());
        assert_eq!(choice.size, 48 * MIB);
        assert!(choice.why.contains("40 ms"), "{}", choice.why);
        assert!(choice.why.contains("48 MiB"), "{}", choice.why);
        // 10 ms: 12.5 MB = 11.9 MiB.
        assert_eq!(
            choose_chunk_size(&link(10, Some(GBIT)), None, AUTO_MAX, SystemTime::now()).size,
            12 * MIB
        );
    }

    #[test]
    fn the_choice_keeps_the_wait_under_a_tenth_of_the_sending_time() {
        for round_trip_ms in 1..200 {
            for rate in [1e6, 12.5e6, 50e6, GBIT, 1e9] {
                let choice = choose_chunk_size(
                    &link(round_trip_ms, Some(rate)),
                    None,
                    AUTO_MAX,
                    SystemTime::now(),
                );
                assert!((AUTO_MIN..=AUTO_MAX).contains(&choice.size));
                assert!(choice.size.is_multiple_of(MIB));
                let sending = choice.size as f64 / rate;
                let wait = round_trip_ms as f64 / 1000.0;
                if choice.size < AUTO_MAX {
                    assert!(
                        wait <= sending * WAIT_SHARE + 1e-9,
                        "{round_trip_ms} ms {rate}"
                    );
                }
                // Never a whole MiB more than needed (unless at the floor).
                if choice.size > AUTO_MIN && choice.size < AUTO_MAX {
                    let smaller = (choice.size - MIB) as f64 / rate;
                    assert!(wait > smaller * WAIT_SHARE, "{round_trip_ms} ms {rate}");
                }
            }
        }
    }

    #[test]
    fn short_or_slow_links_get_the_floor_and_very_long_fast_ones_the_ceiling() {
        let lan = choose_chunk_size(&link(1, Some(GBIT)), None, AUTO_MAX, SystemTime::now());
        assert_eq!(lan.size, AUTO_MIN);
        assert!(lan.why.contains("the least auto uses"), "{}", lan.why);
        let slow = choose_chunk_size(&link(100, Some(2e6)), None, AUTO_MAX, SystemTime::now());
        assert_eq!(slow.size, AUTO_MIN);
        let far = choose_chunk_size(&link(150, Some(GBIT)), None, AUTO_MAX, SystemTime::now());
        assert_eq!(far.size, AUTO_MAX);
        assert!(far.why.contains("the most auto uses"), "{}", far.why);
    }

    #[test]
    fn before_any_chunk_the_rate_is_assumed_from_the_limit_or_as_fast() {
        let guess = choose_chunk_size(&link(20, None), None, AUTO_MAX, SystemTime::now());
        // 20 ms × 125 MB/s × 10 = 25 MB = 23.8 MiB.
        assert_eq!(guess.size, 24 * MIB);
        assert!(guess.why.contains("1 Gbit/s is assumed"), "{}", guess.why);
        let limited = choose_chunk_size(
            &link(20, None),
            Some(12_500_000),
            AUTO_MAX,
            SystemTime::now(),
        );
        assert_eq!(limited.size, AUTO_MIN);
        assert!(limited.why.contains("bandwidth limit"), "{}", limited.why);
        let nothing =
            choose_chunk_size(&MeasuredLink::default(), None, AUTO_MAX, SystemTime::now());
        assert_eq!(nothing.size, AUTO_MIN);
    }

    #[test]
    fn a_refused_size_caps_the_choice_below_the_floor() {
        let meter = LinkMeter::default();
        meter.seed(link(40, Some(GBIT)));
        let now = SystemTime::now();
        assert_eq!(meter.refused(48 * MIB, now), Some(24 * MIB));
        assert_eq!(meter.refused(24 * MIB, now), Some(12 * MIB));
        assert_eq!(meter.refused(12 * MIB, now), Some(6 * MIB));
        let choice = choose_chunk_size(&meter.snapshot(), None, AUTO_MAX, now);
        assert_eq!(choice.size, 6 * MIB);
        assert!(
            choice.why.contains("refused a chunk of 12 MiB"),
            "{}",
            choice.why
        );
        // Halved in whole MiB, never below 1 MiB.
        assert_eq!(meter.refused(3 * MIB, now), Some(MIB));
        assert_eq!(meter.refused(MIB, now), None);
        let cap = meter.snapshot().cap.unwrap();
        assert_eq!((cap.max, cap.refused), (MIB, 3 * MIB));
    }

    #[test]
    fn halving_starts_from_the_bytes_sent_not_the_planned_size() {
        // A 30 MiB file's last chunk of a 24 MiB plan is 6 MiB: refused, it halves to 3 MiB.
        let meter = LinkMeter::default();
        assert_eq!(meter.refused(6 * MIB, SystemTime::now()), Some(3 * MIB));
        // 9.5 MiB sent: 4 MiB (whole MiB, down).
        let meter = LinkMeter::default();
        assert_eq!(
            meter.refused(9 * MIB + MIB / 2, SystemTime::now()),
            Some(4 * MIB)
        );
    }

    #[test]
    fn a_cap_lasts_a_day_from_the_refusal_then_auto_tries_bigger_again() {
        let refused_at = SystemTime::now() - Duration::from_secs(3600);
        let cap = ChunkCap {
            max: 4 * MIB,
            refused: 8 * MIB,
            at: refused_at,
        };
        let measured = MeasuredLink {
            cap: Some(cap),
            ..link(40, Some(GBIT))
        };
        let within = choose_chunk_size(&measured, None, AUTO_MAX, refused_at + CAP_LIFETIME / 2);
        assert_eq!(within.size, 4 * MIB);
        assert!(within.why.contains("at most 4 MiB until"), "{}", within.why);
        let after = refused_at + CAP_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            choose_chunk_size(&measured, None, AUTO_MAX, after).size,
            48 * MIB
        );
        assert!(!cap.in_force(after));
        // A stamp from the future (a clock set back) holds, as if just now.
        assert!(ChunkCap { at: after, ..cap }.in_force(refused_at));
        // An expired cap neither seeds a meter nor lowers a new refusal's half.
        let meter = LinkMeter::default();
        meter.seed(MeasuredLink {
            cap: Some(ChunkCap {
                at: SystemTime::now() - CAP_LIFETIME - Duration::from_secs(1),
                ..cap
            }),
            ..MeasuredLink::default()
        });
        assert_eq!(meter.snapshot().cap, None);
        assert_eq!(meter.refused(32 * MIB, SystemTime::now()), Some(16 * MIB));
        let described = describe_cap(&cap);
        assert!(
            described.starts_with("at most 4 MiB since the platform refused 8 MiB at "),
            "{described}"
        );
    }

    #[test]
    fn many_files_in_parallel_get_smaller_ceilings_so_memory_stays_bounded() {
        assert_eq!(auto_ceiling(0), 64 * MIB);
        assert_eq!(auto_ceiling(1), 64 * MIB);
        assert_eq!(auto_ceiling(2), 64 * MIB);
        assert_eq!(auto_ceiling(3), 42 * MIB);
        assert_eq!(auto_ceiling(4), 32 * MIB);
        assert_eq!(auto_ceiling(8), 16 * MIB);
        assert_eq!(auto_ceiling(16), 8 * MIB);
        assert_eq!(auto_ceiling(1000), 8 * MIB);
        for parallel in 1..=64 {
            let ceiling = auto_ceiling(parallel);
            assert!(ceiling.is_multiple_of(MIB));
            assert!(ceiling * parallel as u64 <= AUTO_MEMORY.max(AUTO_MIN * parallel as u64));
            // Even a link that wants the most gets no more than the ceiling.
            let far = choose_chunk_size(&link(150, Some(GBIT)), None, ceiling, SystemTime::now());
            assert_eq!(far.size, ceiling, "{parallel}");
        }
        let far = choose_chunk_size(
            &link(150, Some(GBIT)),
            None,
            auto_ceiling(4),
            SystemTime::now(),
        );
        assert!(far.why.contains("in parallel"), "{}", far.why);
    }

    #[test]
    fn a_refusal_of_a_size_accepted_in_this_run_is_not_about_size() {
        let meter = LinkMeter::default();
        assert!(!meter.accepted_before(MIB));
        meter.chunk(8 * MIB, Duration::from_millis(100), None);
        assert!(meter.accepted_before(8 * MIB));
        assert!(meter.accepted_before(MIB));
        assert!(!meter.accepted_before(8 * MIB + 1));
    }

    #[test]
    fn the_meter_takes_the_smallest_recent_round_trip_and_the_rate_without_the_wait() {
        let meter = LinkMeter::default();
        meter.round_trip(Duration::from_millis(90)); // a new connection: more than one trip
        meter.round_trip(Duration::from_millis(41));
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(41)));
        // 40 MiB in 0.4 s of sending plus a 40 ms answer: 100 MiB/s.
        meter.chunk(
            40 * MIB,
            Duration::from_millis(440),
            Some(Duration::from_millis(40)),
        );
        let measured = meter.snapshot();
        assert_eq!(measured.round_trip, Some(Duration::from_millis(40)));
        let rate = measured.rate.unwrap();
        assert!((rate - 100.0 * MIB as f64).abs() < MIB as f64, "{rate}");
        // A short last chunk moves the average only a little.
        meter.chunk(
            1000,
            Duration::from_millis(41),
            Some(Duration::from_millis(40)),
        );
        let after = meter.snapshot().rate.unwrap();
        assert!((after - rate).abs() < 0.01 * rate, "{after}");
    }

    #[test]
    fn a_slower_link_is_seen_within_a_few_answers_even_when_the_api_was_fast_long_ago() {
        // The hostile test's case: the create and URL answered in 2 ms, then the link became
        // 100 ms slower; the API is asked again only at the next file, so only chunk answers
        // come in.
        let meter = LinkMeter::default();
        for _ in 0..4 {
            meter.round_trip(Duration::from_millis(2));
        }
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(2)));
        let mut seen_after = None;
        for answer in 1..=20 {
            meter.chunk(
                8 * MIB,
                Duration::from_millis(180),
                Some(Duration::from_millis(102)),
            );
            if seen_after.is_none()
                && meter.snapshot().round_trip == Some(Duration::from_millis(102))
            {
                seen_after = Some(answer);
            }
        }
        assert_eq!(seen_after, Some(RECENT));
        // And one slow answer among fast ones is not taken for the link's latency.
        meter.round_trip(Duration::from_millis(30));
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(30)));
        meter.round_trip(Duration::from_millis(400));
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(30)));
    }

    #[test]
    fn what_this_run_measured_wins_over_the_store() {
        let meter = LinkMeter::default();
        meter.round_trip(Duration::from_millis(5));
        let cap = ChunkCap {
            max: 16 * MIB,
            refused: 32 * MIB,
            at: SystemTime::now(),
        };
        meter.seed(MeasuredLink {
            rate: Some(1e6),
            round_trip: Some(Duration::from_millis(50)),
            cap: Some(cap),
        });
        let link = meter.snapshot();
        assert_eq!(link.round_trip, Some(Duration::from_millis(5)));
        assert_eq!(link.rate, Some(1e6));
        assert_eq!(link.cap, Some(cap));
    }
}
