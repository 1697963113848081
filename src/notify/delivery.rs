//! The delivery side of the outbox: one task per `[[notify]]` destination, sending the events
//! it is owed in the order they happened. A try that fails waits out the Fibonacci backoff
//! (`[upload] backoff_max` caps it, as for uploads) and is made again until the destination
//! takes the event, refuses it for good (dropped, logged), or [`GIVE_UP_AFTER`] has passed
//! since it happened (dropped, logged). Nothing here is awaited by an upload: a slow or dead
//! destination only ever delays its own events.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::GIVE_UP_AFTER;
use super::email::{MAX_PER_MESSAGE, Mailer};
use super::event::{EventKind, Notice};
use super::secret_url::SecretUrl;
use super::webhook::{self, Answer};
use crate::chain;
use crate::config::{NotifySettings, NotifyTarget, Settings, WebhookFormat};
use crate::escape::escaped;
use crate::retry::RetryPolicy;
use crate::store::{JobStore, NotifyRoute, PendingNotice};

/// While a destination keeps failing, its failure is said again at warn this often.
const FAILING_REMINDER: Duration = Duration::from_secs(3600);

/// The longest an e-mail batch stays open after its first event while more keep coming.
pub const BATCH_CAP: Duration = Duration::from_secs(600);

/// How long a delivery task waits before asking a failing state store again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// An event the state store could not take, because it cannot be written (a full disk): the
/// pause that this causes is announced all the same, from memory, best effort (lost if the
/// agent stops first). Each destination that wants its kind is sent it before what the store
/// holds for it, since settling those needs a write that fails. Once the store can be written
/// again it is recorded for the destinations that did not take it ([`Outbox::unstored_over`]).
pub struct UnstoredNotice {
    pub notice: Notice,
    body: String,
    /// The destinations (their keys) that took it.
    taken_by: Mutex<Vec<String>>,
}

impl UnstoredNotice {
    fn taken_by(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A push or a read: a panic elsewhere leaves it whole.
        self.taken_by.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running delivery tasks; replaced as a whole when the config is reloaded.
pub struct Outbox {
    /// Weak, here and in the tasks: the agent's own handle must be the last, so that the
    /// database is closed (its last checkpoint written) before the state dir's lock is let go;
    /// on a full disk the other order gives the lock file's block to the checkpoint, and the
    /// next start cannot write its pid.
    store: Weak<JobStore>,
    /// Cancelled when the agent stops; each generation of tasks runs under a child of it.
    stop: CancellationToken,
    /// The current generation's token, cancelled by a reload.
    generation: Mutex<CancellationToken>,
    /// An event sent from memory while the store cannot be written (see [`UnstoredNotice`]).
    unstored: tokio::sync::watch::Sender<Option<Arc<UnstoredNotice>>>,
}

/// How one destination's events leave.
enum Channel {
    Webhook {
        client: reqwest::Client,
        url: SecretUrl,
        format: WebhookFormat,
        secret: Option<SecretString>,
    },
    Email {
        mailer: Mailer,
        /// Events within this long of the oldest one go in one message.
        window: Duration,
    },
}

/// One destination as its task sees it.
struct Destination {
    /// Its name in the store (a hash: the URL may carry a token).
    key: String,
    /// The kinds it wants, for an event the store could not take.
    events: Vec<EventKind>,
    /// `notify[2] (https://hooks.example.com/…)`, for log lines.
    shown: String,
    channel: Channel,
}

impl Outbox {
    /// Tells the store where events go and starts a task per destination, until `stop`.
    pub fn start(settings: &Settings, store: Arc<JobStore>, stop: CancellationToken) -> Outbox {
        let outbox = Outbox {
            store: Arc::downgrade(&store),
            generation: Mutex::new(stop.child_token()),
            stop,
            unstored: tokio::sync::watch::Sender::new(None),
        };
        outbox.spawn(settings);
        outbox
    }

    /// A reload: the tasks of the old settings stop (an event in flight is sent again, with
    /// its id) and those of the new ones start. Events owed to a destination that is gone are
    /// dropped, with a log line.
    pub fn reconfigure(&self, settings: &Settings) {
        let fresh = self.stop.child_token();
        let old = std::mem::replace(
            &mut *self.generation.lock().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        old.cancel();
        self.spawn(settings);
    }

    /// Sends `notice` (which the store could not take) from memory to each destination that
    /// wants its kind, replacing one sent before.
    pub fn send_unstored(&self, notice: Notice) {
        let body = match serde_json::to_string(&notice) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!("cannot make the {} event: {err}", notice.event);
                return;
            }
        };
        self.unstored.send_replace(Some(Arc::new(UnstoredNotice {
            notice,
            body,
            taken_by: Mutex::new(Vec::new()),
        })));
    }

    /// The event sent from memory, if any, and the destinations that took it.
    pub fn unstored(&self) -> Option<(Notice, Vec<String>)> {
        let current = self.unstored.borrow().clone()?;
        let taken_by = current.taken_by().clone();
        Some((current.notice.clone(), taken_by))
    }

    /// The event sent from memory is in the store now (or no longer matters): not sent again.
    pub fn unstored_over(&self) {
        self.unstored.send_replace(None);
    }

    fn spawn(&self, settings: &Settings) {
        let Some(store) = self.store.upgrade() else {
            return;
        };
        let routes: Vec<NotifyRoute> = settings
            .notify
            .iter()
            .map(|destination| NotifyRoute {
                name: destination.name.clone(),
                target: destination_target(destination),
                position: destination.number,
                kind: match destination.target {
                    NotifyTarget::Webhook { .. } => "webhook",
                    NotifyTarget::Email { .. } => "email",
                },
                shown: shown(destination),
                events: destination.events.clone(),
            })
            .collect();
        let keys = match store.set_notify_routes(&routes) {
            Ok(set) => {
                for (gone, dropped) in &set.removed {
                    tracing::warn!(
                        "{dropped} notification(s) owed to {gone} dropped: that destination is no longer in [[notify]]"
                    );
                }
                if set.unwanted > 0 {
                    tracing::warn!(
                        "{} notification(s) dropped: their destination no longer wants their kind of event",
                        set.unwanted
                    );
                }
                set.keys
            }
            Err(err) => {
                tracing::error!(
                    "cannot record the [[notify]] destinations in the state store: {}",
                    chain(&err)
                );
                // Still deliver what each is owed, under the keys it would have.
                store
                    .notify_route_keys(&routes)
                    .unwrap_or_else(|_| routes.iter().map(|route| route.target.clone()).collect())
            }
        };
        if settings.notify.is_empty() {
            return;
        }
        match store.notifications_pending() {
            Ok(0) => {}
            Ok(waiting) => tracing::info!("{waiting} notification(s) waiting to be delivered"),
            Err(err) => tracing::warn!("cannot count the notifications waiting: {}", chain(&err)),
        }
        let client = match webhook::client() {
            Ok(client) => client,
            Err(why) => {
                tracing::error!("notifications cannot be sent: {why}");
                return;
            }
        };
        let mut policy = RetryPolicy::new(u32::MAX, settings.upload.backoff_max);
        policy.jitter = 0.1;
        let generation = self
            .generation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (destination, key) in settings.notify.iter().zip(keys) {
            let channel = match &destination.target {
                NotifyTarget::Webhook {
                    url,
                    format,
                    secret,
                } => Channel::Webhook {
                    client: client.clone(),
                    url: url.clone(),
                    format: *format,
                    secret: secret.as_ref().map(|s| s.value.clone()),
                },
                NotifyTarget::Email { to } => {
                    let Some(smtp) = &settings.smtp else {
                        // The config refuses e-mail without [smtp].
                        continue;
                    };
                    match Mailer::new(smtp, to) {
                        Ok(mailer) => Channel::Email {
                            mailer,
                            window: smtp.batch_window,
                        },
                        Err(why) => {
                            tracing::error!(
                                "notify[{}]: e-mail cannot be sent: {why}",
                                destination.number
                            );
                            continue;
                        }
                    }
                }
            };
            let task = Destination {
                key,
                events: destination.events.clone(),
                shown: shown(destination),
                channel,
            };
            tokio::spawn(deliver(
                task,
                self.store.clone(),
                self.unstored.subscribe(),
                policy,
                generation.clone(),
            ));
        }
    }
}

/// What a destination is, as the store may keep it: a hash of its URL and format (or its
/// addresses), so that a URL (which may carry a token) is written nowhere. It was the
/// destination's key before destinations had an identity of their own (see
/// `store::outbox::assign_keys`), and is still the key of a new one.
fn destination_target(destination: &NotifySettings) -> String {
    let what = match &destination.target {
        NotifyTarget::Webhook { url, format, .. } => format!("webhook {} {format:?}", url.expose()),
        NotifyTarget::Email { to } => {
            let mut to = to.clone();
            to.sort();
            format!("email {}", to.join(","))
        }
    };
    let hash = hex::encode(Sha256::digest(what.as_bytes()));
    let kind = match destination.target {
        NotifyTarget::Webhook { .. } => "webhook",
        NotifyTarget::Email { .. } => "email",
    };
    format!("{kind}-{}", &hash[..16])
}

/// `notify[2] (https://hooks.example.com/…)`, or `notify[2] "ops" (…)` with a name: no token
/// in a log line.
fn shown(destination: &NotifySettings) -> String {
    let what = match &destination.target {
        NotifyTarget::Webhook { url, .. } => url.to_string(),
        NotifyTarget::Email { to } => format!("e-mail to {}", escaped(&to.join(", "))),
    };
    match &destination.name {
        Some(name) => format!(
            "notify[{}] \"{}\" ({what})",
            destination.number,
            escaped(name)
        ),
        None => format!("notify[{}] ({what})", destination.number),
    }
}

/// An event named for a log line: its kind, what it is about, and its id.
fn about(notice: &crate::notify::Notice) -> String {
    let subject = notice.file.as_ref().or(notice.folder.as_ref());
    match subject {
        Some(subject) => format!("{} {} (id {})", notice.event, escaped(subject), notice.id),
        None => format!("{} (id {})", notice.event, notice.id),
    }
}

/// Sleeps `delay`; `false` when `stop` came first.
async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// When the e-mail events from `first` to `last` go out: once none came for `window` (so a
/// burst of failures that trickles out at the API budget keeps the message open), but never
/// later than [`BATCH_CAP`] after the first (or `window`, if that is longer), so the first
/// alert of a long burst waits at most that long.
pub(super) fn batch_ready_at(
    first: OffsetDateTime,
    last: OffsetDateTime,
    window: Duration,
) -> OffsetDateTime {
    (last + window).min(first + BATCH_CAP.max(window))
}

/// One destination's loop (see the module's documentation).
async fn deliver(
    destination: Destination,
    store: Weak<JobStore>,
    mut unstored: tokio::sync::watch::Receiver<Option<Arc<UnstoredNotice>>>,
    policy: RetryPolicy,
    stop: CancellationToken,
) {
    let Some(mut changes) = store.upgrade().map(|store| store.outbox_changes()) else {
        return;
    };
    let limit = match destination.channel {
        Channel::Webhook { .. } => 1,
        Channel::Email { .. } => MAX_PER_MESSAGE,
    };
    // Tries that failed in a row; the backoff grows with it.
    let mut failures: u32 = 0;
    // While tries fail: when the first of them failed, and when that was last said at warn.
    let mut failing: Option<(Instant, Instant)> = None;
    // The store may still say it fails from before a restart: cleared at the first delivery.
    let mut recorded_failing = true;
    // Delivered (or dropped) but not yet recorded as such, because the store could not be
    // written: recorded before anything is read from the store again, so that an event the
    // destination already took is not sent to it every few seconds while a disk stays full.
    // Lost with a restart, which then sends them once more (at least once, never lost).
    let mut unsettled: Vec<i64> = Vec::new();
    loop {
        // Marked seen before looking, so an event written meanwhile wakes the wait below.
        changes.borrow_and_update();
        // An event the store could not take goes first (see `UnstoredNotice`).
        let from_memory = unstored.borrow_and_update().clone().filter(|current| {
            current
                .notice
                .kind()
                .is_some_and(|kind| destination.events.contains(&kind))
                && !current.taken_by().contains(&destination.key)
        });
        if let Some(current) = from_memory {
            let answer = match &destination.channel {
                Channel::Webhook {
                    client,
                    url,
                    format,
                    secret,
                } => {
                    let body = webhook::body(*format, &current.body, &current.notice);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        answer = webhook::post(client, url, body, secret.as_ref()) => answer,
                    }
                }
                Channel::Email { mailer, .. } => {
                    let pending = PendingNotice {
                        seq: 0,
                        queued_at: OffsetDateTime::now_utc(),
                        body: current.body.clone(),
                        notice: current.notice.clone(),
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        answer = mailer.send(std::slice::from_ref(&pending)) => answer,
                    }
                }
            };
            match answer {
                Answer::Delivered | Answer::Refused(_) => {
                    tracing::info!(
                        "{}: sent {} from memory (the state store cannot take it)",
                        destination.shown,
                        about(&current.notice)
                    );
                    current.taken_by().push(destination.key.clone());
                    failures = 0;
                }
                Answer::Failed { why, retry_after } => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(
                        "{}: cannot send {} from memory: {why}",
                        destination.shown,
                        about(&current.notice)
                    );
                    let delay = policy.delay(failures, retry_after);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                        // Recorded in the store meanwhile: sent from there.
                        _ = unstored.changed() => {}
                    }
                }
            }
            continue;
        }
        if !unsettled.is_empty() {
            if settle(&store, &destination, &unsettled) {
                unsettled.clear();
            } else if !pause(STORE_RETRY, &stop).await {
                return;
            }
            continue;
        }
        let Some(read) = store
            .upgrade()
            .map(|store| store.pending_notices(&destination.key, limit))
        else {
            return;
        };
        let pending = match read {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(
                    "{}: cannot read the notifications waiting: {}",
                    destination.shown,
                    chain(&err)
                );
                if !pause(STORE_RETRY, &stop).await {
                    return;
                }
                continue;
            }
        };
        if pending.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
                changed = unstored.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let now = OffsetDateTime::now_utc();
        let expired: Vec<&PendingNotice> = pending
            .iter()
            .filter(|p| now - p.queued_at >= GIVE_UP_AFTER)
            .collect();
        if !expired.is_empty() {
            for notice in &expired {
                tracing::error!(
                    "{}: dropping {}: not delivered within {} h",
                    destination.shown,
                    about(&notice.notice),
                    GIVE_UP_AFTER.as_secs() / 3600
                );
            }
            let seqs: Vec<i64> = expired.iter().map(|p| p.seq).collect();
            if !settle(&store, &destination, &seqs) {
                unsettled = seqs;
                if !pause(STORE_RETRY, &stop).await {
                    return;
                }
            }
            continue;
        }
        let answer = match &destination.channel {
            Channel::Webhook {
                client,
                url,
                format,
                secret,
            } => {
                let first = &pending[0];
                let body = webhook::body(*format, &first.body, &first.notice);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    answer = webhook::post(client, url, body, secret.as_ref()) => answer,
                }
            }
            Channel::Email { mailer, window } => {
                // A burst waits for the rest of it: one message, not 500.
                let last = pending[pending.len() - 1].queued_at;
                let ready_at = batch_ready_at(pending[0].queued_at, last, *window);
                if now < ready_at && pending.len() < MAX_PER_MESSAGE {
                    let wait = Duration::try_from(ready_at - now).unwrap_or_default();
                    if !pause(wait, &stop).await {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    answer = mailer.send(&pending) => answer,
                }
            }
        };
        let sent: Vec<i64> = match &destination.channel {
            Channel::Webhook { .. } => vec![pending[0].seq],
            Channel::Email { .. } => pending.iter().map(|p| p.seq).collect(),
        };
        if !matches!(answer, Answer::Failed { .. }) {
            // The destination answered: whatever it said, it is reachable again.
            if recorded_failing {
                recorded_failing = !record_failing(&store, &destination, None);
            }
            if let Some((since, _)) = failing.take() {
                tracing::info!(
                    "{}: delivering again after {failures} failed tries over {}",
                    destination.shown,
                    humantime::format_duration(Duration::from_secs(
                        since.elapsed().as_secs().max(1)
                    ))
                );
            }
        }
        match answer {
            Answer::Delivered => {
                failures = 0;
                tracing::debug!(
                    "{}: delivered {} event(s), the first {}",
                    destination.shown,
                    sent.len(),
                    about(&pending[0].notice)
                );
                if !settle(&store, &destination, &sent) {
                    unsettled = sent;
                    if !pause(STORE_RETRY, &stop).await {
                        return;
                    }
                }
            }
            Answer::Refused(why) => {
                failures = 0;
                for notice in pending.iter().filter(|p| sent.contains(&p.seq)) {
                    tracing::warn!(
                        "{}: dropping {}: the destination {why}, which will not change by sending it again",
                        destination.shown,
                        about(&notice.notice)
                    );
                }
                if !settle(&store, &destination, &sent) {
                    unsettled = sent;
                    if !pause(STORE_RETRY, &stop).await {
                        return;
                    }
                }
            }
            Answer::Failed { why, retry_after } => {
                failures = failures.saturating_add(1);
                let delay = policy.delay(failures, retry_after);
                let now = Instant::now();
                match &mut failing {
                    None => {
                        failing = Some((now, now));
                        tracing::warn!(
                            "{}: cannot deliver {}: {why}; trying again, for up to {} h (said again once an hour while it fails)",
                            destination.shown,
                            about(&pending[0].notice),
                            GIVE_UP_AFTER.as_secs() / 3600
                        );
                        recorded_failing = true;
                        record_failing(&store, &destination, Some(&why));
                    }
                    Some((since, warned)) if now.duration_since(*warned) >= FAILING_REMINDER => {
                        *warned = now;
                        let waiting = store
                            .upgrade()
                            .and_then(|store| store.notify_backlog().ok())
                            .and_then(|backlog| {
                                backlog.into_iter().find(|b| b.shown == destination.shown)
                            })
                            .map_or_else(String::new, |b| {
                                format!("; {} notification(s) waiting", b.pending)
                            });
                        tracing::warn!(
                            "{}: still cannot deliver, for {} now ({failures} tries): {why}{waiting}",
                            destination.shown,
                            humantime::format_duration(Duration::from_secs(
                                now.duration_since(*since).as_secs()
                            ))
                        );
                        record_failing(&store, &destination, Some(&why));
                    }
                    Some(_) => tracing::debug!(
                        "{}: try {failures} failed: {why}; next in {:.1} s",
                        destination.shown,
                        delay.as_secs_f64()
                    ),
                }
                if !pause(delay, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Records for `status` that the destination's deliveries fail (`Some(why)`) or work again.
/// `false` when the store could not take it (logged at debug: the delivery itself matters
/// more, and a store that cannot be written is said elsewhere).
fn record_failing(store: &Weak<JobStore>, destination: &Destination, why: Option<&str>) -> bool {
    let Some(store) = store.upgrade() else {
        return false;
    };
    match store.set_notify_failing(&destination.key, why) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(
                "{}: cannot record the state of its deliveries, for status: {}",
                destination.shown,
                chain(&err)
            );
            false
        }
    }
}

/// The destination is owed these no more. `false` when the store could not record it: they
/// are sent again later (at least once, never lost), after a wait.
fn settle(store: &Weak<JobStore>, destination: &Destination, seqs: &[i64]) -> bool {
    let Some(store) = store.upgrade() else {
        // The agent is stopping: they are sent again after the restart.
        return true;
    };
    match store.notices_settled(&destination.key, seqs) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(
                "{}: cannot record what was delivered (recorded once the store can be written; sent again only if the agent stops before that): {}",
                destination.shown,
                chain(&err)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many messages a burst of events at `times` (seconds from the first) makes.
    fn messages(times: &[f64], window: Duration) -> usize {
        let at = |s: f64| OffsetDateTime::UNIX_EPOCH + Duration::from_secs_f64(s);
        let mut sent = 0;
        let mut next = 0;
        while next < times.len() {
            let first = at(times[next]);
            let mut last = next;
            // More events join while they come before the batch is ready.
            while last + 1 < times.len()
                && at(times[last + 1]) < batch_ready_at(first, at(times[last]), window)
            {
                last += 1;
            }
            sent += 1;
            next = last + 1;
        }
        sent
    }

    #[test]
    fn an_email_batch_stays_open_while_events_come_but_never_past_its_cap() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let window = Duration::from_secs(30);
        assert_eq!(batch_ready_at(t0, t0, window), t0 + window);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(batch_ready_at(t0, later, window), later + window);
        // A burst that never pauses: the cap, from the first event.
        let much_later = t0 + Duration::from_secs(3000);
        assert_eq!(batch_ready_at(t0, much_later, window), t0 + BATCH_CAP);
        // A window longer than the cap is not cut by it.
        let hour = Duration::from_secs(3600);
        assert_eq!(batch_ready_at(t0, t0, hour), t0 + hour);
    }

    #[test]
    fn a_thousand_failures_at_the_api_budget_are_a_few_mails() {
        // Hostile test of issue 12, D4: 1,000 failures, one every 1.4 s (about 24 minutes),
        // made 48 mails with a window fixed from each batch's first event.
        let times: Vec<f64> = (0..1000).map(|i| f64::from(i) * 1.4).collect();
        let mails = messages(&times, Duration::from_secs(30));
        assert!(mails <= 3, "{mails} mails");
        // Two bursts an hour apart are two mails; a lone event is one.
        let mut two: Vec<f64> = (0..10).map(f64::from).collect();
        two.extend((0..10).map(|i| 3600.0 + f64::from(i)));
        assert_eq!(messages(&two, Duration::from_secs(30)), 2);
        assert_eq!(messages(&[0.0], Duration::from_secs(30)), 1);
    }
}
