//! The emulator's model of a long-distance link (`--latency`, `--link-rate`): one link shared by
//! every connection, whose rate paces chunk bodies as they are read (the socket is then read no
//! faster, so TCP backpressure slows the client as a real link would), and a latency that
//! delays every answer, as a round trip across a WAN does. Only built when asked for: without
//! it the emulator reads and answers at loopback speed, with no per-frame work.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bytes the link may carry ahead of its schedule: the reader wakes up to a timer tick late,
/// and without this allowance every late wake-up would be lost time (a lower rate than set).
const CATCH_UP: Duration = Duration::from_millis(2);

/// One link for all connections.
#[derive(Debug)]
pub(crate) struct LinkModel {
    /// Bytes per second; `None`: bodies are not paced (only the latency applies).
    rate: Option<f64>,
    /// Added before every answer.
    latency: Duration,
    /// When the bytes taken so far will have crossed the link: a virtual clock, so that the
    /// pacing does not drift with the timer's resolution.
    free_at: Mutex<Instant>,
}

impl LinkModel {
    /// `None` when neither a latency nor a rate is set (the normal, unpaced emulator).
    pub(crate) fn new(latency: Duration, bytes_per_second: Option<u64>) -> Option<LinkModel> {
        let rate = bytes_per_second
            .filter(|rate| *rate > 0)
            .map(|rate| rate as f64);
        (rate.is_some() || !latency.is_zero()).then(|| LinkModel {
            rate,
            latency,
            free_at: Mutex::new(Instant::now()),
        })
    }

    /// Waits until `bytes` more have crossed the link (shared with every other connection).
    pub(crate) async fn carry(&self, bytes: usize) {
        let Some(rate) = self.rate else {
            return;
        };
        let done_at = {
            let mut free_at = self
                .free_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let start = (*free_at).max(now.checked_sub(CATCH_UP).unwrap_or(now));
            let done_at = start + Duration::from_secs_f64(bytes as f64 / rate);
            *free_at = done_at;
            done_at
        };
        if done_at > Instant::now() {
            tokio::time::sleep_until(done_at).await;
        }
    }

    /// Waits out the latency before an answer goes back.
    pub(crate) async fn answer_delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_is_no_link() {
        assert!(LinkModel::new(Duration::ZERO, None).is_none());
        assert!(LinkModel::new(Duration::ZERO, Some(0)).is_none());
        assert!(LinkModel::new(Duration::from_millis(1), None).is_some());
        assert!(LinkModel::new(Duration::ZERO, Some(1)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn two_connections_share_the_rate() {
        let link = std::sync::Arc::new(LinkModel::new(Duration::ZERO, Some(1 << 20)).unwrap());
        let start = Instant::now();
        let send = |link: std::sync::Arc<LinkModel>| async move {
            for _ in 0..16 {
                link.carry(64 * 1024).await;
            }
        };
        // 2 × 1 MiB at 1 MiB/s: two seconds, however the two interleave.
        tokio::join!(send(link.clone()), send(link.clone()));
        let took = start.elapsed().as_secs_f64();
        assert!((1.99..2.01).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_latency_delays_each_answer() {
        let link = LinkModel::new(Duration::from_millis(40), None).unwrap();
        let start = Instant::now();
        link.carry(1 << 30).await;
        link.answer_delay().await;
        link.answer_delay().await;
        assert_eq!(start.elapsed(), Duration::from_millis(80));
    }
}
