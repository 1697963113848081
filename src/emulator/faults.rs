//! Fault injection: which misbehaviour, if any, one request gets, decided from a seeded RNG so a
//! failing run can be repeated, and counted so tests can tell that faults really happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{FaultCounts, Faults, PlatformRefusal};

/// What one request suffers. At most one of the answer-changing faults applies; a stall can come
/// on top of any of them (a slow server that then also fails).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FaultPlan {
    pub stall: Option<Duration>,
    pub throttle: Option<u64>,
    pub error: Option<StatusCode>,
    /// Chunk posts only: read part of the body, then close the connection.
    pub reset: bool,
    /// Chunk posts only: store the chunk, then close the connection without answering.
    pub lost_ack: bool,
    /// Create-video calls only: create the video, then answer 504.
    pub lost_create: bool,
}

/// The configured rates and the RNG they draw from; replaced (and reseeded) by `set_faults`.
#[derive(Debug)]
pub(crate) struct FaultDice {
    faults: Faults,
    rng: StdRng,
}

const ERROR_STATUSES: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

impl FaultDice {
    pub(crate) fn new(faults: Faults) -> FaultDice {
        FaultDice {
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
        }
    }

    pub(crate) fn platform_refusal(&self) -> Option<PlatformRefusal> {
        self.faults.platform_refusal
    }

    /// Every roll is drawn whatever the rates, so the same seed and request sequence give the
    /// same faults even when some rates are zero.
    pub(crate) fn roll(&mut self, chunk_post: bool, create_post: bool) -> FaultPlan {
        let faults = &self.faults;
        let stall_hit = self.rng.random::<f64>() < faults.stall_rate;
        let throttle_hit = self.rng.random::<f64>() < faults.throttle_rate;
        let error_hit = self.rng.random::<f64>() < faults.error_rate;
        let error_status = ERROR_STATUSES[self.rng.random_range(0..ERROR_STATUSES.len())];
        let reset_hit = self.rng.random::<f64>() < faults.reset_rate;
        let lost_ack_hit = self.rng.random::<f64>() < faults.lost_ack_rate;
        let lost_create_hit = self.rng.random::<f64>() < faults.lost_create_rate;

        let mut plan = FaultPlan {
            stall: stall_hit.then_some(faults.stall),
            ..FaultPlan::default()
        };
        if throttle_hit {
            plan.throttle = Some(faults.retry_after_secs);
        } else if error_hit {
            plan.error = Some(error_status);
        } else if chunk_post && reset_hit {
            plan.reset = true;
        } else if chunk_post && lost_ack_hit {
            plan.lost_ack = true;
        } else if create_post && lost_create_hit {
            plan.lost_create = true;
        }
        plan
    }
}

/// Faults injected so far, per kind.
#[derive(Debug, Default)]
pub(crate) struct FaultCounters {
    errors: AtomicU64,
    resets: AtomicU64,
    lost_acks: AtomicU64,
    stalls: AtomicU64,
    throttles: AtomicU64,
    lost_creates: AtomicU64,
}

impl FaultCounters {
    /// Counted when the plan is made: every planned fault is carried out (a stalled request
    /// whose client gave up still stalled).
    pub(crate) fn count(&self, plan: &FaultPlan) {
        let bump = |counter: &AtomicU64, hit: bool| {
            if hit {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        bump(&self.stalls, plan.stall.is_some());
        bump(&self.throttles, plan.throttle.is_some());
        bump(&self.errors, plan.error.is_some());
        bump(&self.resets, plan.reset);
        bump(&self.lost_acks, plan.lost_ack);
        bump(&self.lost_creates, plan.lost_create);
    }

    pub(crate) fn snapshot(&self) -> FaultCounts {
        let errors = self.errors.load(Ordering::Relaxed);
        let resets = self.resets.load(Ordering::Relaxed);
        let lost_acks = self.lost_acks.load(Ordering::Relaxed);
        let stalls = self.stalls.load(Ordering::Relaxed);
        let throttles = self.throttles.load(Ordering::Relaxed);
        let lost_creates = self.lost_creates.load(Ordering::Relaxed);
        FaultCounts {
            errors,
            resets,
            lost_acks,
            stalls,
            throttles,
            lost_creates,
            total: errors + resets + lost_acks + stalls + throttles + lost_creates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(faults: Faults, chunk_post: bool, n: usize) -> Vec<FaultPlan> {
        let mut dice = FaultDice::new(faults);
        (0..n).map(|_| dice.roll(chunk_post, !chunk_post)).collect()
    }

    #[test]
    fn no_rates_means_no_faults() {
        let all = plans(Faults::default(), true, 1000);
        assert!(all.iter().all(|plan| *plan == FaultPlan::default()));
    }

    #[test]
    fn same_seed_gives_same_faults() {
        let faults = Faults {
            seed: 7,
            error_rate: 0.3,
            reset_rate: 0.3,
            lost_ack_rate: 0.3,
            ..Faults::default()
        };
        assert_eq!(
            plans(faults.clone(), true, 200),
            plans(faults.clone(), true, 200)
        );
        let other_seed = Faults { seed: 8, ..faults };
        assert_ne!(
            plans(other_seed.clone(), true, 200),
            plans(
                Faults {
                    seed: 7,
                    ..other_seed
                },
                true,
                200
            )
        );
    }

    #[test]
    fn rates_are_roughly_honoured() {
        let faults = Faults {
            error_rate: 0.25,
            ..Faults::default()
        };
        let errors = plans(faults, false, 4000)
            .iter()
            .filter(|plan| plan.error.is_some())
            .count();
        assert!((800..1200).contains(&errors), "{errors} errors in 4000");
    }

    #[test]
    fn lost_creates_only_hit_create_calls() {
        let faults = Faults {
            lost_create_rate: 1.0,
            ..Faults::default()
        };
        let mut dice = FaultDice::new(faults);
        assert!(dice.roll(false, true).lost_create);
        assert!(!dice.roll(false, false).lost_create);
        assert!(!dice.roll(true, false).lost_create);
    }

    #[test]
    fn connection_faults_only_hit_chunk_posts() {
        let faults = Faults {
            reset_rate: 1.0,
            lost_ack_rate: 1.0,
            ..Faults::default()
        };
        assert!(
            plans(faults.clone(), false, 100)
                .iter()
                .all(|plan| !plan.reset && !plan.lost_ack)
        );
        assert!(plans(faults, true, 100).iter().all(|plan| plan.reset));
    }

    #[test]
    fn counters_add_up() {
        let counters = FaultCounters::default();
        counters.count(&FaultPlan {
            stall: Some(Duration::from_secs(1)),
            error: Some(StatusCode::BAD_GATEWAY),
            ..FaultPlan::default()
        });
        counters.count(&FaultPlan {
            lost_ack: true,
            ..FaultPlan::default()
        });
        let counts = counters.snapshot();
        assert_eq!(
            (counts.stalls, counts.errors, counts.lost_acks, counts.total),
            (1, 1, 1, 3)
        );
    }
}
