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
use std::time::Duration;

use crate::config::{human_rate, human_size};

const MIB: u64 = 1024 * 1024;

/// The smallest size auto picks from the link (the size before auto existed).
pub const AUTO_MIN: u64 = 8 * MIB;
/// The largest: the most the config allows.
pub const AUTO_MAX: u64 = 64 * MIB;
/// A refused size is never halved below this.
pub const SMALLEST_CHUNK: u64 = MIB;

/// The wait for an answer may cost at most this share of a chunk's sending time.
const WAIT_SHARE: f64 = 0.10;

/// The rate assumed before any chunk was measured (1 Gbit/s), when no limit is set.
const ASSUMED_RATE: f64 = 125_000_000.0;

/// How many recent round trips the smallest is taken from: one slow answer (a new connection,
/// a busy server) must not count as the link's latency, and a link that became slower is seen
/// within this many answers.
const RECENT: usize = 16;

/// Weight of one 8 MiB chunk's rate in the running average; smaller chunks weigh less (the last
/// chunk of a file is often a few bytes, whose time is mostly the wait).
const RATE_WEIGHT: f64 = 0.25;

/// What is known about the link: what the store keeps between runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeasuredLink {
    /// Bytes per second one upload's chunks cross the link at (a running average); `None`
    /// before any chunk was measured.
    pub rate: Option<f64>,
    /// The wait for an answer: the smallest recent round trip.
    pub round_trip: Option<Duration>,
    /// The largest chunk the server takes: set when it refused one for its size (413).
    pub max_chunk: Option<u64>,
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
    /// The API's recent round trips, newest last.
    api: VecDeque<Duration>,
    /// Recent chunks' waits from their last byte handed over to their answer, newest last.
    /// Kept apart from the API's: they include the time the socket's buffer (megabytes) takes
    /// to drain, so a file's chunks would crowd the API's truer round trips out and make the
    /// wait look longer with every file (measured: 40 ms on a 10 ms link).
    chunks: VecDeque<Duration>,
}

impl LinkMeter {
    fn state(&self) -> std::sync::MutexGuard<'_, MeterState> {
        // Plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts from what an earlier run measured (from the state store); what this run measured
    /// already wins.
    pub fn seed(&self, stored: MeasuredLink) {
        let mut state = self.state();
        let link = &mut state.link;
        link.rate = link.rate.or(stored.rate);
        link.round_trip = link.round_trip.or(stored.round_trip);
        link.max_chunk = match (link.max_chunk, stored.max_chunk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn snapshot(&self) -> MeasuredLink {
        self.state().link
    }

    /// An API call was answered `took` after it was sent.
    pub fn round_trip(&self, took: Duration) {
        let mut state = self.state();
        note(&mut state.api, took);
        state.update_round_trip();
    }

    /// A chunk of `len` bytes was accepted `took` after its request started, `answered_in`
    /// after its last byte was handed to the connection.
    pub fn chunk(&self, len: u64, took: Duration, answered_in: Option<Duration>) {
        let mut state = self.state();
        if let Some(answered_in) = answered_in {
            note(&mut state.chunks, answered_in);
            state.update_round_trip();
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

    /// The server refused a chunk of `size` bytes for its size: the size to try instead (half,
    /// in whole MiB), remembered as the most the server takes; `None` below 2 MiB.
    pub fn refused(&self, size: u64) -> Option<u64> {
        let half = (size / 2 / MIB) * MIB;
        if half < SMALLEST_CHUNK {
            return None;
        }
        let mut state = self.state();
        let cap = state.link.max_chunk.map_or(half, |cap| cap.min(half));
        state.link.max_chunk = Some(cap);
        Some(cap)
    }
}

impl MeterState {
    /// The smallest recent wait of either kind.
    fn update_round_trip(&mut self) {
        self.link.round_trip = self.api.iter().chain(&self.chunks).min().copied();
    }
}

/// Adds `took` to `recent`, dropping the oldest beyond [`RECENT`].
fn note(recent: &mut VecDeque<Duration>, took: Duration) {
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back(took);
}

/// A file's chunk size and why, for its log line and its sidecar's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChoice {
    pub size: u64,
    pub why: String,
}

/// `chunk_size = "auto"`: the size that keeps the wait for each answer under a tenth of the
/// chunk's sending time on `link`, in whole MiB, 8 ..= 64 MiB, and no more than the server
/// takes. `limit`: the bandwidth limit now, the rate assumed before any chunk was measured.
pub fn choose_chunk_size(link: &MeasuredLink, limit: Option<u64>) -> ChunkChoice {
    let Some(round_trip) = link.round_trip else {
        return capped(
            link,
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
    } else if wanted.is_finite() && wanted <= AUTO_MAX as f64 {
        // In whole MiB, rounded up: the wait stays under the share.
        let size = (wanted / MIB as f64).ceil() as u64 * MIB;
        (size, format!("{} {UNDER}", human_size(size)))
    } else {
        // A float beyond u64 is only "very large": `as` saturates.
        let needed = human_size(wanted as u64);
        (
            AUTO_MAX,
            format!(
                "{}, the most auto uses ({needed} {UNDER})",
                human_size(AUTO_MAX)
            ),
        )
    };
    let why = format!(
        "auto: answers take {} ms and {rate_said}: {outcome}",
        round_trip.as_millis()
    );
    capped(link, size, why)
}

/// `size`, or the most the server takes when that is less.
fn capped(link: &MeasuredLink, size: u64, why: String) -> ChunkChoice {
    match link.max_chunk {
        Some(cap) if cap < size => ChunkChoice {
            size: cap,
            why: format!(
                "{why}; but the server refused bigger chunks, so {}",
                human_size(cap)
            ),
        },
        _ => ChunkChoice { size, why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(round_trip_ms: u64, rate: Option<f64>) -> MeasuredLink {
        MeasuredLink {
            rate,
            round_trip: Some(Duration::from_millis(round_trip_ms)),
            max_chunk: None,
        }
    }

    const GBIT: f64 = 125_000_000.0;

    #[test]
    fn a_long_fast_link_gets_chunks_ten_round_trips_of_rate_long() {
        // 40 ms × 125 MB/s × 10 = 50 MB = 47.7 MiB: 48 MiB, rounded up to whole MiB.
        let choice = choose_chunk_size(&link(40, Some(GBIT)), None);
        assert_eq!(choice.size, 48 * MIB);
        assert!(choice.why.contains("40 ms"), "{}", choice.why);
        assert!(choice.why.contains("48 MiB"), "{}", choice.why);
        // 10 ms: 12.5 MB = 11.9 MiB.
        assert_eq!(
            choose_chunk_size(&link(10, Some(GBIT)), None).size,
            12 * MIB
        );
    }

    #[test]
    fn the_choice_keeps_the_wait_under_a_tenth_of_the_sending_time() {
        for round_trip_ms in 1..200 {
            for rate in [1e6, 12.5e6, 50e6, GBIT, 1e9] {
                let choice = choose_chunk_size(&link(round_trip_ms, Some(rate)), None);
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
        let lan = choose_chunk_size(&link(1, Some(GBIT)), None);
        assert_eq!(lan.size, AUTO_MIN);
        assert!(lan.why.contains("the least auto uses"), "{}", lan.why);
        let slow = choose_chunk_size(&link(100, Some(2e6)), None);
        assert_eq!(slow.size, AUTO_MIN);
        let far = choose_chunk_size(&link(150, Some(GBIT)), None);
        assert_eq!(far.size, AUTO_MAX);
        assert!(far.why.contains("the most auto uses"), "{}", far.why);
    }

    #[test]
    fn before_any_chunk_the_rate_is_assumed_from_the_limit_or_as_fast() {
        let guess = choose_chunk_size(&link(20, None), None);
        // 20 ms × 125 MB/s × 10 = 25 MB = 23.8 MiB.
        assert_eq!(guess.size, 24 * MIB);
        assert!(guess.why.contains("1 Gbit/s is assumed"), "{}", guess.why);
        let limited = choose_chunk_size(&link(20, None), Some(12_500_000));
        assert_eq!(limited.size, AUTO_MIN);
        assert!(limited.why.contains("bandwidth limit"), "{}", limited.why);
        let nothing = choose_chunk_size(&MeasuredLink::default(), None);
        assert_eq!(nothing.size, AUTO_MIN);
    }

    #[test]
    fn a_refused_size_caps_the_choice_below_the_floor() {
        let meter = LinkMeter::default();
        meter.seed(link(40, Some(GBIT)));
        assert_eq!(meter.refused(48 * MIB), Some(24 * MIB));
        assert_eq!(meter.refused(24 * MIB), Some(12 * MIB));
        assert_eq!(meter.refused(12 * MIB), Some(6 * MIB));
        let choice = choose_chunk_size(&meter.snapshot(), None);
        assert_eq!(choice.size, 6 * MIB);
        assert!(choice.why.contains("refused"), "{}", choice.why);
        // Halved in whole MiB, never below 1 MiB.
        assert_eq!(meter.refused(3 * MIB), Some(MIB));
        assert_eq!(meter.refused(MIB), None);
        assert_eq!(meter.snapshot().max_chunk, Some(MIB));
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
        // Chunks whose answers look slower (the socket buffer draining after the last byte
        // was handed over) do not crowd the API's round trips out.
        for _ in 0..2 * RECENT {
            meter.chunk(
                40 * MIB,
                Duration::from_millis(480),
                Some(Duration::from_millis(75)),
            );
        }
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(41)));
        // The round trips age out: a link that became slower is seen.
        for _ in 0..RECENT {
            meter.round_trip(Duration::from_millis(70));
        }
        assert_eq!(meter.snapshot().round_trip, Some(Duration::from_millis(70)));
    }

    #[test]
    fn what_this_run_measured_wins_over_the_store() {
        let meter = LinkMeter::default();
        meter.round_trip(Duration::from_millis(5));
        meter.seed(MeasuredLink {
            rate: Some(1e6),
            round_trip: Some(Duration::from_millis(50)),
            max_chunk: Some(16 * MIB),
        });
        let link = meter.snapshot();
        assert_eq!(link.round_trip, Some(Duration::from_millis(5)));
        assert_eq!(link.rate, Some(1e6));
        assert_eq!(link.max_chunk, Some(16 * MIB));
    }
}
