//! The dispatcher's bookkeeping, [`DispatchState`]: which jobs a worker is on, whether the
//! whole queue is paused (and which job probes whether it may resume), which VideoManagers'
//! uploads are held because the platform does not know them, and which finished files could
//! not be moved yet. One lock, because the dispatcher's decisions read several of these at
//! once; its rules are tested in `dispatch`'s tests, which drive it as the dispatcher does.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Which jobs a worker is on, whether the whole queue is paused, and which finished files could
/// not be moved: one lock, because the dispatcher's decisions read several of them at once.
#[derive(Default)]
pub(super) struct DispatchState {
    board: Mutex<Board>,
    /// Held from a pause's start or end until it is recorded (store and log), so records
    /// follow the order of the changes; the board itself is locked only for the change, so
    /// workers starting and ending never wait on a store write.
    pause_order: Mutex<()>,
}

#[derive(Default)]
struct Board {
    /// Jobs a worker is on, so the dispatcher does not start them twice.
    in_flight: HashSet<i64>,
    pause: Option<QueuePause>,
    /// VideoManagers the platform answered 404 for, by id: only their jobs wait.
    holds: HashMap<u64, VideoManagerHold>,
    /// Jobs whose file could not be moved to done/ or failed/, with the reason last logged:
    /// tried again every [`FINISH_RETRY_EVERY`], logged again only when the reason changes.
    stuck_finishes: HashMap<i64, String>,
    /// Jobs whose file is being moved right now, so a move is never started twice at once.
    finishing_now: HashSet<i64>,
}

/// A whole-queue pause: the account or the network is the problem, not the files.
struct QueuePause {
    reason: String,
    /// Failed probes in a row; the wait before the next one grows with it.
    failures: u32,
    retry_at: Instant,
    /// One job is trying whether the cause went away; no other starts meanwhile.
    probing: bool,
    /// The first probe of this pause was logged; the others are logged at debug level, so a
    /// pause of hours is a few lines in the log, not a line per probe.
    announced: bool,
}

/// A VideoManager the platform does not know (a 404 on create): a config problem of the
/// folders that upload into it, not of their files (nothing moves to failed/) nor of the other
/// folders (they keep uploading). Its jobs wait; one probes now and then, and at a reload.
struct VideoManagerHold {
    reason: String,
    /// Failed probes in a row; the wait before the next one grows with it.
    failures: u32,
    retry_at: Instant,
    /// The job trying whether the platform knows it now.
    probe: Option<i64>,
}

/// Which held VideoManagers' jobs may start now, as the dispatcher reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Holds {
    /// Held, with no job of theirs to start now.
    closed: HashSet<u64>,
    /// When the first of those may probe again.
    pub(super) next_probe: Option<Instant>,
}

impl Holds {
    pub(super) fn admits(&self, video_manager: u64) -> bool {
        !self.closed.contains(&video_manager)
    }
}

/// What a worker starting on a job is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Upload,
    /// The queue is paused: this job tries whether the cause went away.
    Probe {
        first: bool,
    },
}

/// What a pause changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PauseNote {
    /// A new pause, or one for another reason than before: worth a log line.
    pub reason_changed: bool,
    /// Until the next probe.
    pub delay: Duration,
}

impl DispatchState {
    fn board(&self) -> MutexGuard<'_, Board> {
        // Poisoned only if a thread panicked while holding it; every change to the board is
        // a single insert, remove or assignment, so what it holds is still consistent.
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pause_order(&self) -> MutexGuard<'_, ()> {
        self.pause_order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a job start now, with `parallel` allowed at once? `Ok` with the jobs already
    /// running, or `Err` with when to look again (`None`: when woken).
    pub(super) fn may_start(
        &self,
        now: Instant,
        parallel: usize,
    ) -> Result<HashSet<i64>, Option<Instant>> {
        let board = self.board();
        if let Some(pause) = &board.pause {
            // While paused only one job probes, once the retry time has come.
            if pause.probing {
                return Err(None);
            }
            if now < pause.retry_at {
                return Err(Some(pause.retry_at));
            }
        }
        if board.in_flight.len() >= parallel.max(1) {
            return Err(None);
        }
        Ok(board.in_flight.clone())
    }

    /// A worker starts on job `id`; while paused, it is the probe.
    pub(super) fn begin(&self, id: i64) -> Start {
        let mut board = self.board();
        let start = match board.pause.as_mut() {
            Some(pause) => {
                pause.probing = true;
                Start::Probe {
                    first: !std::mem::replace(&mut pause.announced, true),
                }
            }
            None => Start::Upload,
        };
        board.in_flight.insert(id);
        start
    }

    /// The worker on job `id` is done, whatever the outcome.
    pub(super) fn end(&self, id: i64) {
        let mut board = self.board();
        board.in_flight.remove(&id);
        if let Some(pause) = board.pause.as_mut() {
            pause.probing = false;
        }
        for hold in board.holds.values_mut() {
            if hold.probe == Some(id) {
                hold.probe = None;
            }
        }
    }

    /// Which held VideoManagers' jobs may start at `now`: none while one of theirs probes or
    /// before their retry time; then one, the probe.
    pub(super) fn holds(&self, now: Instant) -> Holds {
        let board = self.board();
        let mut holds = Holds::default();
        for (id, hold) in &board.holds {
            if hold.probe.is_some() || now < hold.retry_at {
                holds.closed.insert(*id);
                if hold.probe.is_none() {
                    holds.next_probe = Some(
                        holds
                            .next_probe
                            .map_or(hold.retry_at, |at| at.min(hold.retry_at)),
                    );
                }
            }
        }
        holds
    }

    /// Job `id` starts uploading into `video_manager`: if that one is held, the job is its
    /// probe (true).
    pub(super) fn probe_hold(&self, id: i64, video_manager: u64) -> bool {
        match self.board().holds.get_mut(&video_manager) {
            Some(hold) => {
                hold.probe = Some(id);
                true
            }
            None => false,
        }
    }

    /// Holds the uploads into `video_manager` for `reason`, or extends the hold: the
    /// `failures`-th probe failed, and `delay(failures)` is how long until the next. Returns
    /// whether the hold is new or its reason changed (worth a log line), and the delay.
    pub(super) fn hold(
        &self,
        video_manager: u64,
        reason: String,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> (bool, Duration) {
        let mut board = self.board();
        let before = board.holds.get(&video_manager);
        let failures = before.map_or(1, |hold| hold.failures + 1);
        let news = before.is_none_or(|hold| hold.reason != reason);
        let delay = delay(failures);
        board.holds.insert(
            video_manager,
            VideoManagerHold {
                reason,
                failures,
                retry_at: now + delay,
                probe: None,
            },
        );
        (news, delay)
    }

    /// Ends the holds of VideoManagers not in `in_use` (a reload fixed the ids that named
    /// them); the ids released. The others probe at once ([`probe_now`](Self::probe_now)).
    pub(super) fn release_unused(&self, in_use: &[u64]) -> Vec<u64> {
        let mut board = self.board();
        let unused: Vec<u64> = board
            .holds
            .keys()
            .filter(|id| !in_use.contains(id))
            .copied()
            .collect();
        for id in &unused {
            board.holds.remove(id);
        }
        unused
    }

    /// Ends the hold of `video_manager`; its reason, if it was held.
    pub(super) fn release(&self, video_manager: u64) -> Option<String> {
        self.board()
            .holds
            .remove(&video_manager)
            .map(|hold| hold.reason)
    }

    pub(super) fn busy(&self) -> HashSet<i64> {
        self.board().in_flight.clone()
    }

    /// Pauses the queue for `reason`, or extends the pause: the `failures`-th probe in a row
    /// failed, and `delay(failures)` is how long until the next. `record(reason, delay)` runs
    /// when the reason changed, before any later pause or resume is recorded.
    pub(super) fn pause(
        &self,
        reason: String,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
        record: impl FnOnce(&str, Duration),
    ) -> PauseNote {
        let _order = self.pause_order();
        let (reason_changed, delay) = {
            let mut board = self.board();
            let failures = board.pause.as_ref().map_or(1, |p| p.failures + 1);
            let delay = delay(failures);
            let reason_changed = board.pause.as_ref().is_none_or(|p| p.reason != reason);
            let announced = board.pause.as_ref().is_some_and(|p| p.announced);
            board.pause = Some(QueuePause {
                reason: reason.clone(),
                failures,
                retry_at: now + delay,
                probing: false,
                announced: announced && !reason_changed,
            });
            (reason_changed, delay)
        };
        if reason_changed {
            record(&reason, delay);
        }
        PauseNote {
            reason_changed,
            delay,
        }
    }

    /// Ends a pause; the reason it had, if there was one. `record` runs before any later
    /// pause or resume is recorded.
    pub(super) fn resume(&self, record: impl FnOnce(&str)) -> Option<String> {
        let _order = self.pause_order();
        let old = self.board().pause.take()?;
        record(&old.reason);
        Some(old.reason)
    }

    /// Something that may have ended the pause's cause changed (a new password): the next
    /// probe may start now. False when not paused, or a probe is already on its way.
    /// Held VideoManagers may probe now too (a reload may have fixed `video_manager_id`).
    pub(super) fn probe_now(&self, now: Instant) -> bool {
        let mut board = self.board();
        for hold in board.holds.values_mut() {
            hold.retry_at = hold.retry_at.min(now);
        }
        match board.pause.as_mut() {
            Some(pause) if !pause.probing => {
                pause.retry_at = pause.retry_at.min(now);
                true
            }
            _ => false,
        }
    }

    pub(super) fn pause_reason(&self) -> Option<String> {
        self.board().pause.as_ref().map(|p| p.reason.clone())
    }

    /// Job `id`'s file could not be moved; true when `message` is new for it (worth logging).
    pub(super) fn finish_stuck(&self, id: i64, message: String) -> bool {
        let mut board = self.board();
        let new = board.stuck_finishes.get(&id) != Some(&message);
        board.stuck_finishes.insert(id, message);
        new
    }

    pub(super) fn finish_unstuck(&self, id: i64) {
        self.board().stuck_finishes.remove(&id);
    }

    /// Forgets stuck jobs not in `finishing` (they left that state some other way).
    pub(super) fn keep_stuck_among(&self, finishing: &[i64]) {
        self.board()
            .stuck_finishes
            .retain(|id, _| finishing.contains(id));
    }

    pub(super) fn any_stuck(&self) -> bool {
        !self.board().stuck_finishes.is_empty()
    }

    /// A move of job `id`'s file is about to start: false if one is already running.
    pub(super) fn begin_finish(&self, id: i64) -> bool {
        self.board().finishing_now.insert(id)
    }

    pub(super) fn end_finish(&self, id: i64) {
        self.board().finishing_now.remove(&id);
    }
}
