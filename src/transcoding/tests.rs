//! The follower on paused tokio time: when it polls, when it gives up, what it records, and how
//! it resumes after a stop, against a platform that answers from a script.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::time::Instant;

use super::*;
use crate::finish::{Sidecar, write_sidecar};
use crate::notify::EventKind;
use crate::store::{NewJob, NotifyRoute, Outcome};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn polls_come_after_30_s_then_less_often_up_to_every_5_min_never_after_the_limit() {
    let schedule = Schedule::STANDARD;
    let delays: Vec<u64> = (0..7).map(|n| schedule.delay_after(n).as_secs()).collect();
    assert_eq!(delays, [30, 60, 120, 240, 300, 300, 300]);
    assert_eq!(schedule.delay_after(u32::MAX), schedule.cap);
}

/// A platform whose answer depends on the time since the upload's end; it records when it
/// was asked (in seconds after the upload's end).
struct ScriptedPlatform {
    since: OffsetDateTime,
    clock: Box<dyn Fn() -> OffsetDateTime + Send + Sync>,
    answer: Box<dyn Fn(u64) -> PollAnswer + Send + Sync>,
    asked: Mutex<Vec<u64>>,
}

impl TranscodingSource for &ScriptedPlatform {
    fn poll(&self, _video: &FollowedVideo) -> impl Future<Output = PollAnswer> + Send {
        let after = duration_between(self.since, (self.clock)()).as_secs();
        self.asked.lock().unwrap().push(after);
        let answer = (self.answer)(after);
        async move { answer }
    }
}

fn quality(name: &str, completed: bool) -> QualityStatus {
    QualityStatus {
        quality: name.into(),
        profile_key: None,
        file_extension: Some("mp4".into()),
        completed,
    }
}

/// 360p done after 1 min, 720p after `all_done_after` s (if ever).
fn two_qualities(all_done_after: Option<u64>) -> impl Fn(u64) -> PollAnswer + Send + Sync {
    move |after| {
        PollAnswer::Qualities(vec![
            quality("360p", after >= 60),
            quality("720p", all_done_after.is_some_and(|done| after >= done)),
        ])
    }
}

/// A store with a `[[notify]]` route for both events, and one uploaded job of a following
/// folder, moved to done/ with its sidecar: (store, job id, its file in done/).
fn followed_upload(dir: &Path) -> (Arc<JobStore>, i64, PathBuf) {
    let store = Arc::new(JobStore::open(&dir.join("state")).unwrap());
    store
        .set_notify_routes(&[NotifyRoute::for_tests(
            "hook",
            &[EventKind::Transcoded, EventKind::TranscodingSlow],
        )])
        .unwrap();
    let inbox = dir.join("inbox");
    store.set_transcoding_folders(&[&inbox]).unwrap();
    let id = store
        .enqueue_many(&[NewJob {
            folder: inbox.clone(),
            path: inbox.join("clip.mov"),
            rel_path: "clip.mov".into(),
            size: 4,
            mtime_ns: 0,
            rule: "test".into(),
        }])
        .unwrap()[0]
        .id();
    store.start_attempt(id).unwrap();
    store.record_video(id, "v-1").unwrap();
    store
        .decide(id, Outcome::Uploaded, Some("abcd"), None)
        .unwrap();
    let dest = inbox.join("done/clip.mov");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"clip").unwrap();
    write_sidecar(
        &dest,
        &Sidecar::from_job(&store.job(id).unwrap(), "clip.mov"),
    )
    .unwrap();
    store.mark_moved(id, &dest).unwrap();
    (store, id, dest)
}

/// A wall clock that reads `start` now and runs with tokio's (paused) clock.
fn clock_from(start: OffsetDateTime) -> impl Fn() -> OffsetDateTime + Send + Sync + Clone {
    let origin = Instant::now();
    move || start + origin.elapsed()
}

fn platform(
    since: OffsetDateTime,
    clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    answer: impl Fn(u64) -> PollAnswer + Send + Sync + 'static,
) -> ScriptedPlatform {
    ScriptedPlatform {
        since,
        clock: Box::new(clock),
        answer: Box::new(answer),
        asked: Mutex::new(Vec::new()),
    }
}

/// Runs the follower until the job's following ended (or `give_up` of paused time passed).
async fn follow_until_ended(
    store: &Arc<JobStore>,
    id: i64,
    source: &ScriptedPlatform,
    clock: impl Fn() -> OffsetDateTime + Send + Sync,
    give_up: Duration,
) {
    let stop = CancellationToken::new();
    let following = follow(
        store.clone(),
        source,
        Schedule::STANDARD,
        clock,
        stop.clone(),
    );
    let watching = async {
        let start = Instant::now();
        while store.transcoding_of(id).unwrap().unwrap().ended.is_none()
            && start.elapsed() < give_up
        {
            tokio::time::sleep(SECOND).await;
        }
        stop.cancel();
    };
    tokio::join!(following, watching);
}

fn events(store: &JobStore) -> Vec<(String, Option<String>, Option<String>)> {
    store
        .pending_notices("hook", 10)
        .unwrap()
        .into_iter()
        .map(|p| (p.notice.event, p.notice.video_id, p.notice.reason))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_video_is_polled_on_schedule_until_every_quality_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, dest) = followed_upload(dir.path());
    let since = store.transcoding_of(id).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), two_qualities(Some(600)));
    follow_until_ended(&store, id, &source, clock, Duration::from_secs(3 * 3600)).await;

    assert_eq!(*source.asked.lock().unwrap(), [30, 90, 210, 450, 750]);
    let video = store.transcoding_of(id).unwrap().unwrap();
    assert_eq!(video.polls, 5);
    let (ended_at, end) = video.ended.unwrap();
    assert_eq!(end, TranscodingEnd::Transcoded);
    assert_eq!(ended_at, since + Duration::from_secs(750));
    assert_eq!(
        events(&store),
        [("transcoded".to_owned(), Some("v-1".to_owned()), None)]
    );

    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate::finish::sidecar_path(&dest)).unwrap())
            .unwrap();
    let record = &sidecar["transcoding"];
    assert_eq!(record["status"], "transcoded");
    assert_eq!(record["polls"], 5);
    assert_eq!(record["qualities"][1]["quality"], "720p");
    assert_eq!(record["qualities"][1]["completed"], true);
    assert!(record["finished_at"].is_string());
    assert_eq!(
        record["summary"],
        "every quality transcoded 12 minutes after the upload: 360p, 720p"
    );
    let last = sidecar["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["event"], "transcoded");
    // The job's log says where the record went.
    let log = store.job(id).unwrap().events;
    let note = log.last().unwrap();
    assert_eq!(note.event, "sidecar");
    assert!(note.detail.starts_with("added to the sidecar"), "{note:?}");
}

#[tokio::test(start_paused = true)]
async fn transcoding_that_never_finishes_is_slow_at_the_limit_and_the_sidecar_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, dest) = followed_upload(dir.path());
    let since = store.transcoding_of(id).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), two_qualities(None));
    follow_until_ended(&store, id, &source, clock, Duration::from_secs(3 * 3600)).await;

    let asked = source.asked.lock().unwrap().clone();
    assert_eq!(asked[..5], [30, 90, 210, 450, 750]);
    assert_eq!(
        *asked.last().unwrap(),
        7200,
        "the last look is at the limit"
    );
    assert!(asked.windows(2).all(|w| w[1] - w[0] <= 300), "{asked:?}");
    assert_eq!(asked.len(), 27);
    let (_, end) = store.transcoding_of(id).unwrap().unwrap().ended.unwrap();
    assert_eq!(end, TranscodingEnd::Slow);
    let reason =
        "not transcoded 2 hours after the upload: 1 of 2 qualities done (360p); 720p not yet";
    assert_eq!(
        events(&store),
        [(
            "transcoding_slow".to_owned(),
            Some("v-1".to_owned()),
            Some(reason.to_owned())
        )]
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate::finish::sidecar_path(&dest)).unwrap())
            .unwrap();
    assert_eq!(sidecar["transcoding"]["status"], "slow");
    assert!(sidecar["transcoding"]["finished_at"].is_null());
    assert_eq!(sidecar["transcoding"]["summary"], reason);
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_following_resumes_with_the_time_spent_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, _dest) = followed_upload(dir.path());
    let since = store.transcoding_of(id).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), two_qualities(None));

    // Three polls (30, 90, 210 s), then the agent stops.
    let stop = CancellationToken::new();
    let following = follow(
        store.clone(),
        &source,
        Schedule::STANDARD,
        clock.clone(),
        stop.clone(),
    );
    let stopping = async {
        tokio::time::sleep(Duration::from_secs(300)).await;
        stop.cancel();
    };
    tokio::join!(following, stopping);
    assert_eq!(*source.asked.lock().unwrap(), [30, 90, 210]);

    // Down for an hour and a half: at the restart the overdue poll is made at once, and the
    // limit is still 2 h after the upload, not after the restart.
    tokio::time::sleep(Duration::from_secs(5400)).await;
    let reopened = Arc::new(JobStore::open(&dir.path().join("state")).unwrap());
    follow_until_ended(&reopened, id, &source, clock, Duration::from_secs(3 * 3600)).await;
    let asked = source.asked.lock().unwrap().clone();
    assert_eq!(asked[..5], [30, 90, 210, 5700, 6000]);
    assert_eq!(*asked.last().unwrap(), 7200);
    let video = reopened.transcoding_of(id).unwrap().unwrap();
    assert_eq!(video.polls as usize, asked.len());
    assert_eq!(video.ended.unwrap().1, TranscodingEnd::Slow);
    assert_eq!(events(&reopened).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_polls_are_tried_again_and_a_deleted_video_ends_it_without_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, dest) = followed_upload(dir.path());
    let since = store.transcoding_of(id).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), |after| match after {
        ..=100 => PollAnswer::Failed("transcoding status: the server answered 503".into()),
        101..=300 => PollAnswer::Qualities(vec![quality("360p", false)]),
        _ => PollAnswer::Gone,
    });
    follow_until_ended(&store, id, &source, clock, Duration::from_secs(3 * 3600)).await;
    assert_eq!(*source.asked.lock().unwrap(), [30, 90, 210, 450]);
    let video = store.transcoding_of(id).unwrap().unwrap();
    assert_eq!(video.ended.unwrap().1, TranscodingEnd::Gone);
    // What the last good poll said is kept.
    assert_eq!(video.qualities, [quality("360p", false)]);
    assert!(events(&store).is_empty(), "no event for a deleted video");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate::finish::sidecar_path(&dest)).unwrap())
            .unwrap();
    assert_eq!(sidecar["transcoding"]["status"], "gone");
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_moved_away_is_noted_and_the_event_still_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, dest) = followed_upload(dir.path());
    // The editor moved the file and its sidecar elsewhere.
    std::fs::remove_file(crate::finish::sidecar_path(&dest)).unwrap();
    std::fs::remove_file(&dest).unwrap();
    let since = store.transcoding_of(id).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), two_qualities(Some(0)));
    follow_until_ended(&store, id, &source, clock, Duration::from_secs(3600)).await;
    assert_eq!(events(&store)[0].0, "transcoded");
    let note = store.job(id).unwrap().events.last().unwrap().clone();
    assert!(
        note.detail.starts_with("not added to the sidecar")
            && note.detail.contains("no longer there"),
        "{note:?}"
    );
    assert!(
        !crate::finish::sidecar_path(&dest).exists(),
        "not made anew"
    );
}

/// The scripted platform, asking no faster than `spacing`.
struct Spaced<'a>(&'a ScriptedPlatform, Duration);

impl TranscodingSource for Spaced<'_> {
    fn poll(&self, video: &FollowedVideo) -> impl Future<Output = PollAnswer> + Send {
        (&self.0).poll(video)
    }

    fn spacing(&self) -> Duration {
        self.1
    }
}

#[tokio::test(start_paused = true)]
async fn videos_due_together_are_asked_about_no_faster_than_the_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, first, _) = followed_upload(dir.path());
    // A second upload of the same folder, ended at the same moment as far as polls go.
    let inbox = dir.path().join("inbox");
    let second = store
        .enqueue_many(&[NewJob {
            folder: inbox.clone(),
            path: inbox.join("b.mov"),
            rel_path: "b.mov".into(),
            size: 4,
            mtime_ns: 0,
            rule: "test".into(),
        }])
        .unwrap()[0]
        .id();
    store.start_attempt(second).unwrap();
    store.record_video(second, "v-2").unwrap();
    store.decide(second, Outcome::Uploaded, None, None).unwrap();
    store.mark_moved(second, &inbox.join("done/b.mov")).unwrap();
    let since = store.transcoding_of(first).unwrap().unwrap().since;
    let clock = clock_from(since);
    let source = platform(since, clock.clone(), two_qualities(None));
    let stop = CancellationToken::new();
    let following = follow(
        store.clone(),
        Spaced(&source, Duration::from_secs(2)),
        Schedule::STANDARD,
        clock,
        stop.clone(),
    );
    let stopping = async {
        tokio::time::sleep(Duration::from_secs(100)).await;
        stop.cancel();
    };
    tokio::join!(following, stopping);
    // Both due at 30 s (the second a hair later: its upload ended after the first's).
    assert_eq!(*source.asked.lock().unwrap(), [30, 32, 90, 92]);
}

#[test]
fn progress_in_words() {
    assert_eq!(progress(&[]), "no quality listed yet");
    assert_eq!(
        progress(&[
            quality("360p", true),
            quality("720p", false),
            quality("1080p", false)
        ]),
        "1 of 3 qualities done (360p); 720p, 1080p not yet"
    );
    assert_eq!(
        progress(&[quality("360p", false)]),
        "0 of 1 qualities done; 360p not yet"
    );
}
