//! `/metrics` in the Prometheus text format (version 0.0.4), and [`UploadCounters`], what the
//! agent counts in memory for it.
//!
//! Where each number comes from:
//!
//! - counted in memory since the agent started, so they start at 0 with each start (which
//!   Prometheus' `rate()` and `increase()` treat as a counter reset; `hotfolder_start_time_seconds`
//!   says when): `hotfolder_files_total`, `hotfolder_bytes_uploaded_total`,
//!   `hotfolder_retries_total`, `hotfolder_upload_duration_seconds`. Not from the store,
//!   because the store forgets finished jobs after `keep_jobs_for`: a count taken from it would
//!   go down, which Prometheus reads as a reset and turns into a false burst;
//! - read from the state store at each scrape, so they survive restarts and say what `status`
//!   says: `hotfolder_queue_jobs`, `hotfolder_paused`, `hotfolder_folder_up`,
//!   `hotfolder_last_upload_timestamp_seconds`, `hotfolder_notifications_pending` and, per
//!   destination, `hotfolder_notify_pending` and `hotfolder_notify_failing`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::health::FolderHealth;
use crate::status_report::StatusSnapshot;
use crate::vmpro::error::VmproError;

/// Upper bounds of the upload duration buckets, in seconds: a short clip on a fast link takes
/// a second, a feature film on a slow one hours.
const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// Why a request (or a whole file) was sent again: the label of `hotfolder_retries_total`. A
/// closed set, so that the series stay few and each is there from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// No answer: connection refused or lost, DNS, TLS, a timeout.
    Unreachable,
    /// 408 Request Timeout.
    RequestTimeout,
    /// 429 Too Many Requests.
    Throttled,
    /// 500, 502, 503, 504.
    ServerError,
    /// A 2xx web page instead of the platform's answer (maintenance, a captive portal).
    WebPage,
    /// The server would not continue an upload: the file is sent again from chunk 1.
    Restart,
    /// Anything else the transport retried.
    Other,
}

impl RetryReason {
    const ALL: [RetryReason; 7] = [
        RetryReason::Unreachable,
        RetryReason::RequestTimeout,
        RetryReason::Throttled,
        RetryReason::ServerError,
        RetryReason::WebPage,
        RetryReason::Restart,
        RetryReason::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            RetryReason::Unreachable => "unreachable",
            RetryReason::RequestTimeout => "http_408",
            RetryReason::Throttled => "http_429",
            RetryReason::ServerError => "http_5xx",
            RetryReason::WebPage => "web_page",
            RetryReason::Restart => "restart",
            RetryReason::Other => "other",
        }
    }

    /// Why the transport sends a request again after `error`.
    pub fn of(error: &VmproError) -> RetryReason {
        match error {
            VmproError::Unreachable { .. } => RetryReason::Unreachable,
            VmproError::Status { status: 408, .. } => RetryReason::RequestTimeout,
            VmproError::Status { status: 429, .. } => RetryReason::Throttled,
            VmproError::Status {
                status: 500..=599, ..
            } => RetryReason::ServerError,
            VmproError::Status {
                status: 200..=299, ..
            } => RetryReason::WebPage,
            _ => RetryReason::Other,
        }
    }

    fn index(self) -> usize {
        // ALL lists every variant once, so this always finds it.
        RetryReason::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or(RetryReason::ALL.len() - 1)
    }
}

/// What the agent counts for `/metrics` while it runs. Each call is an atomic add or a short
/// lock held for an addition, so counting never slows an upload, and a scrape only copies.
pub struct UploadCounters {
    /// When the agent started, for `hotfolder_start_time_seconds`.
    started: OffsetDateTime,
    /// Files whose upload ended and whose file went to done/.
    uploaded: AtomicU64,
    /// Files that went to failed/ (refused before or during the upload).
    failed: AtomicU64,
    /// Chunk bytes the platform accepted.
    bytes: AtomicU64,
    retries: [AtomicU64; RetryReason::ALL.len()],
    durations: Mutex<Histogram>,
}

/// `hotfolder_upload_duration_seconds`: counts per bucket (not yet cumulative), sum, count.
#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Default for UploadCounters {
    fn default() -> Self {
        UploadCounters {
            started: OffsetDateTime::now_utc(),
            uploaded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: Default::default(),
            durations: Mutex::new(Histogram::default()),
        }
    }
}

impl UploadCounters {
    /// A job's file went to done/ (`uploaded`) or failed/.
    pub fn file_finished(&self, uploaded: bool) {
        let counter = if uploaded {
            &self.uploaded
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The platform accepted a chunk of `bytes`.
    pub fn bytes_accepted(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn retried(&self, reason: RetryReason) {
        self.retries[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A file's upload succeeded after `took` (from its worker's start to the last chunk).
    pub fn upload_took(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        // Only an addition happens under the lock: a panic cannot leave it half done.
        let mut histogram = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            histogram.buckets[bucket] += 1;
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    fn histogram(&self) -> Histogram {
        self.durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What one scrape reads from the store, besides the counters.
pub(super) struct StoreFigures<'a> {
    pub snapshot: &'a StatusSnapshot,
    pub folders: &'a [FolderHealth],
    pub last_upload: Option<OffsetDateTime>,
    /// `[[notify]]` events the outbox still owes, once per destination.
    pub notifications_pending: u64,
}

/// The whole `/metrics` answer.
pub(super) fn render(counters: &UploadCounters, store: &StoreFigures<'_>) -> String {
    let mut out = Exposition::default();
    out.family(
        "hotfolder_files_total",
        "counter",
        "Files whose upload ended since the agent started, by outcome: uploaded (moved to done/) or failed (moved to failed/).",
    );
    out.sample(
        "hotfolder_files_total",
        &[("outcome", "uploaded")],
        counters.uploaded.load(Ordering::Relaxed),
    );
    out.sample(
        "hotfolder_files_total",
        &[("outcome", "failed")],
        counters.failed.load(Ordering::Relaxed),
    );

    out.family(
        "hotfolder_bytes_uploaded_total",
        "counter",
        "Chunk bytes the platform accepted since the agent started (a file sent again from the start counts again).",
    );
    out.sample(
        "hotfolder_bytes_uploaded_total",
        &[],
        counters.bytes.load(Ordering::Relaxed),
    );

    let snapshot = store.snapshot;
    let counts = &snapshot.counts;
    out.family(
        "hotfolder_queue_jobs",
        "gauge",
        "Files per state as `hotfolder status` shows them (trying is part of paused; done and failed are those still on record).",
    );
    let settling = u64::try_from(snapshot.settling.len()).unwrap_or(u64::MAX);
    for (state, count) in [
        ("settling", settling),
        ("waiting", counts.waiting),
        ("uploading", counts.uploading),
        ("paused", counts.paused),
        ("trying", counts.trying),
        ("finishing", counts.finishing),
        ("done", counts.done),
        ("failed", counts.failed),
    ] {
        out.sample("hotfolder_queue_jobs", &[("state", state)], count);
    }

    out.family(
        "hotfolder_paused",
        "gauge",
        "1 while every upload is paused (credentials, quota, network, a state store that cannot be written), else 0.",
    );
    out.sample("hotfolder_paused", &[], u64::from(snapshot.pause.is_some()));

    out.family(
        "hotfolder_retries_total",
        "counter",
        "Requests sent again since the agent started, by why (restart: a whole file sent again from chunk 1).",
    );
    for reason in RetryReason::ALL {
        out.sample(
            "hotfolder_retries_total",
            &[("reason", reason.label())],
            counters.retries[reason.index()].load(Ordering::Relaxed),
        );
    }

    let histogram = counters.histogram();
    out.family(
        "hotfolder_upload_duration_seconds",
        "histogram",
        "How long each successful upload since the agent started took, from its start to its last chunk.",
    );
    let mut cumulative = 0;
    for (le, count) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
        cumulative += count;
        out.sample(
            "hotfolder_upload_duration_seconds_bucket",
            &[("le", &le.to_string())],
            cumulative,
        );
    }
    out.sample(
        "hotfolder_upload_duration_seconds_bucket",
        &[("le", "+Inf")],
        histogram.count,
    );
    out.sample_f64("hotfolder_upload_duration_seconds_sum", histogram.sum);
    out.sample(
        "hotfolder_upload_duration_seconds_count",
        &[],
        histogram.count,
    );

    out.family(
        "hotfolder_folder_up",
        "gauge",
        "1 while the configured folder is watched, 0 while it cannot be seen or is not watched yet.",
    );
    for folder in store.folders {
        out.sample(
            "hotfolder_folder_up",
            &[("folder", &folder.path.to_string_lossy())],
            u64::from(folder.problem.is_none()),
        );
    }

    out.family(
        "hotfolder_last_upload_timestamp_seconds",
        "gauge",
        "When the last upload still in the state store ended, in seconds since 1970 (0: none on record).",
    );
    out.sample_f64(
        "hotfolder_last_upload_timestamp_seconds",
        store.last_upload.map_or(0.0, unix_seconds),
    );

    out.family(
        "hotfolder_notifications_pending",
        "gauge",
        "Notifications ([[notify]]) waiting in the state store to be delivered, counted once per destination.",
    );
    out.sample(
        "hotfolder_notifications_pending",
        &[],
        store.notifications_pending,
    );

    out.family(
        "hotfolder_notify_pending",
        "gauge",
        "Notifications waiting in the state store for one [[notify]] destination (its name, else notify[N]).",
    );
    for backlog in &snapshot.notifications {
        out.sample(
            "hotfolder_notify_pending",
            &[("destination", &backlog.label)],
            backlog.pending,
        );
    }
    out.family(
        "hotfolder_notify_failing",
        "gauge",
        "1 while deliveries to the [[notify]] destination fail (they are tried again for 24 h), else 0.",
    );
    for backlog in &snapshot.notifications {
        out.sample(
            "hotfolder_notify_failing",
            &[("destination", &backlog.label)],
            u64::from(backlog.failing_since.is_some()),
        );
    }

    out.family(
        "hotfolder_start_time_seconds",
        "gauge",
        "When the agent started, in seconds since 1970: the counters above count from here.",
    );
    out.sample_f64(
        "hotfolder_start_time_seconds",
        unix_seconds(counters.started),
    );
    out.text
}

fn unix_seconds(at: OffsetDateTime) -> f64 {
    // i128 nanoseconds to f64 keeps microseconds for any date this century.
    at.unix_timestamp_nanos() as f64 / 1e9
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, name: &str, value: f64) {
        self.labels(name, &[]);
        let _ = writeln!(self.text, " {value}");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.text.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
        }
        self.text.push('}');
    }
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape_label("/srv/a \"b\"\\c\nd"),
            "/srv/a \\\"b\\\"\\\\c\\nd"
        );
        let mut out = Exposition::default();
        out.sample("m", &[("folder", "x\"y"), ("k", "v")], 3);
        assert_eq!(out.text, "m{folder=\"x\\\"y\",k=\"v\"} 3\n");
    }

    #[test]
    fn durations_fall_in_their_bucket_and_add_up() {
        let counters = UploadCounters::default();
        counters.upload_took(Duration::from_millis(500));
        counters.upload_took(Duration::from_secs(5));
        counters.upload_took(Duration::from_secs(20_000));
        let histogram = counters.histogram();
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[1], 1, "5 s is in le=\"5\"");
        assert_eq!(
            histogram.buckets.iter().sum::<u64>(),
            2,
            "past the last bucket"
        );
        assert_eq!(histogram.count, 3);
        assert!((histogram.sum - 20_005.5).abs() < 1e-9);
    }

    #[test]
    fn retry_reasons_come_from_the_answer() {
        use crate::vmpro::error::{Disposition, Step};
        let status = |status| VmproError::Status {
            step: Step::Chunk,
            status,
            message: String::new(),
            disposition: Disposition::Retry { retry_after: None },
        };
        assert_eq!(RetryReason::of(&status(503)), RetryReason::ServerError);
        assert_eq!(RetryReason::of(&status(429)), RetryReason::Throttled);
        assert_eq!(RetryReason::of(&status(408)), RetryReason::RequestTimeout);
        assert_eq!(RetryReason::of(&status(200)), RetryReason::WebPage);
        let unreachable = VmproError::Unreachable {
            step: Step::Chunk,
            message: "connection refused".into(),
        };
        assert_eq!(RetryReason::of(&unreachable), RetryReason::Unreachable);
        for reason in RetryReason::ALL {
            assert_eq!(RetryReason::ALL[reason.index()], reason);
        }
    }
}
