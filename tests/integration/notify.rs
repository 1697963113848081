//! Notifications (`[[notify]]`, issue 12) through the real binary: a webhook receiver on
//! 127.0.0.1 that fails, refuses and goes down while the agent is killed; the Slack format;
//! and e-mail to a real SMTP server (Python's aiosmtpd) with STARTTLS and a login.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"\ninclude = [\"*\"]";
const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "hook-secret-for-tests";

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    body: Vec<u8>,
    signature: Option<String>,
    content_type: Option<String>,
    /// The `Authorization` header, when one was sent.
    authorization: Option<String>,
    /// What the receiver answered.
    status: u16,
    at: Instant,
}

impl Delivery {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn id(&self) -> String {
        self.json()["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// How the receiver answers.
#[derive(Default)]
pub(crate) struct Plan {
    /// The first this many requests get 500.
    fail_first: usize,
    /// A request whose body contains this gets 400 (once it is past `fail_first`).
    refuse_containing: Option<String>,
    /// Every answer waits this long: a destination that hangs.
    stall: Option<Duration>,
}

/// A webhook receiver on 127.0.0.1 that can go down and come back on the same port (also
/// used by `transcoding.rs`).
pub(crate) struct Hook {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Delivery>>>,
    plan: Arc<Mutex<Plan>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Hook {
    pub(crate) async fn start(plan: Plan) -> Hook {
        let mut hook = Hook {
            addr: "127.0.0.1:0".parse().unwrap(),
            log: Arc::default(),
            plan: Arc::new(Mutex::new(plan)),
            server: None,
        };
        hook.up().await;
        hook
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks/T0KEN-in-the-path", self.addr)
    }

    /// Listens again (on the port it had).
    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the receiver binds");
        self.addr = listener.local_addr().unwrap();
        let log = self.log.clone();
        let plan = self.plan.clone();
        self.server = Some(tokio::spawn(async move {
            // Dropped with the server task: a kept-alive connection dies with it too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                let plan = plan.clone();
                connections.spawn(async move {
                    let service =
                        service_fn(move |request| answer(request, log.clone(), plan.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops listening and drops every connection: the destination is down.
    async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// The events taken (answered 2xx), by id, the first time each was.
    pub(crate) fn accepted(&self) -> Vec<Delivery> {
        let mut seen = HashSet::new();
        self.deliveries()
            .into_iter()
            .filter(|d| d.status == 200 && seen.insert(d.id()))
            .collect()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn answer(
    request: Request<Incoming>,
    log: Arc<Mutex<Vec<Delivery>>>,
    plan: Arc<Mutex<Plan>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let signature = header("x-hotfolder-signature");
    let content_type = header("content-type");
    let authorization = header("authorization");
    let body = request.into_body().collect().await?.to_bytes().to_vec();
    let stall = plan.lock().unwrap().stall;
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    let mut log = log.lock().unwrap();
    let status = {
        let plan = plan.lock().unwrap();
        let refused = plan
            .refuse_containing
            .as_ref()
            .is_some_and(|needle| String::from_utf8_lossy(&body).contains(needle.as_str()));
        if log.len() < plan.fail_first {
            500
        } else if refused {
            400
        } else {
            200
        }
    };
    log.push(Delivery {
        body,
        signature,
        content_type,
        authorization,
        status,
        at: Instant::now(),
    });
    Ok(Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap())
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `[[notify]]` for `hook` after the folder's own keys, with the secret in a file.
fn webhook_table(dir: &Path, hook: &Hook, extra: &str) -> String {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        "\n[[notify]]\nurl = \"{}\"\nsecret_file = \"{}\"\n{extra}\n",
        hook.url(),
        secret.display()
    )
}

/// A batch of exports (`.mov`, uploaded) and text files (`.txt`, refused by the platform as
/// 415): the files of the batch, each with the event it should cause.
fn write_batch(inbox: &Path, batch: usize, count: usize) -> Vec<(String, &'static str)> {
    let mut expected = Vec::new();
    for i in 0..count {
        let name = format!("b{batch}-clip{i}.mov");
        write_file(&inbox.join(&name), 64 * 1024, (batch * 100 + i) as u64);
        expected.push((name, "uploaded"));
        let name = format!("b{batch}-notes{i}.txt");
        write_file(&inbox.join(&name), 100, (batch * 100 + i) as u64);
        expected.push((name, "failed"));
    }
    expected
}

fn all_finished(studio: &Studio, expected: &[(String, &str)]) -> bool {
    expected.iter().all(|(name, event)| {
        let dir = if *event == "uploaded" {
            studio.done()
        } else {
            studio.failed()
        };
        arrived(&dir.join(name))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_failing_webhook_that_is_down_across_a_kill() {
    let emulator = emulator(|_| {}).await;
    let per_batch = 4;
    // Two batches of 2 × 4 files: 16 events, and the first 8 deliveries answered 500.
    let mut hook = Hook::start(Plan {
        fail_first: 8,
        ..Plan::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let table = webhook_table(dir.path(), &hook, "events = [\"uploaded\", \"failed\"]");
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let mut expected = write_batch(&studio.inbox, 1, per_batch);
    let agent = studio.start();
    eventually(WAIT, "the first batch in done/ and failed/", || {
        all_finished(&studio, &expected)
    })
    .await;

    // The receiver goes down; the second batch finishes meanwhile, and the agent is killed
    // with its events undelivered, then started again while the receiver is still down.
    hook.down().await;
    let second = write_batch(&studio.inbox, 2, per_batch);
    eventually(WAIT, "the second batch in done/ and failed/", || {
        all_finished(&studio, &second)
    })
    .await;
    expected.extend(second);
    signal(&agent, 9);
    let mut agent = agent;
    agent.wait().await.unwrap();
    let agent = studio.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    hook.up().await;

    eventually(WAIT, "every event accepted by the receiver", || {
        hook.accepted().len() >= expected.len()
    })
    .await;
    stop(agent).await;

    let deliveries = hook.deliveries();
    assert!(
        deliveries.iter().filter(|d| d.status == 500).count() == 8,
        "the first half failed"
    );
    // Every request signed, with the signature of its raw body, and JSON.
    for delivery in &deliveries {
        assert_eq!(
            delivery.signature.as_deref(),
            Some(expected_signature(&delivery.body).as_str())
        );
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
    }
    // Each expected event, once by id (no id missing, none invented).
    let accepted = hook.accepted();
    let by_file: HashMap<String, serde_json::Value> = accepted
        .iter()
        .map(|d| {
            let json = d.json();
            (json["file"].as_str().unwrap().to_owned(), json)
        })
        .collect();
    assert_eq!(accepted.len(), expected.len(), "{by_file:#?}");
    for (name, event) in &expected {
        let json = by_file
            .get(name)
            .unwrap_or_else(|| panic!("no event for {name}"));
        assert_eq!(json["event"], *event, "{json}");
        assert_eq!(json["folder"], studio.inbox.display().to_string());
        assert!(json["host"].as_str().is_some_and(|h| !h.is_empty()));
        if *event == "uploaded" {
            assert!(json["video_id"].is_string(), "{json}");
            assert_eq!(json["sha256"].as_str().map(str::len), Some(64), "{json}");
            assert!(json["reason"].is_null());
        } else {
            assert!(json["video_id"].is_null());
            assert!(json["reason"].as_str().unwrap().contains("415"), "{json}");
        }
    }
    // In order: each event's tries are together (the next one is sent only once the one before
    // was taken), and the events came in the order they happened.
    let ids: Vec<String> = deliveries.iter().map(Delivery::id).collect();
    let mut finished: HashSet<&str> = HashSet::new();
    for pair in ids.windows(2) {
        if pair[0] != pair[1] {
            assert!(
                finished.insert(&pair[0]),
                "{} was sent again after a later event: {ids:?}",
                pair[0]
            );
        }
    }
    let times: Vec<String> = accepted
        .iter()
        .map(|d| d.json()["at"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    assert!(
        !studio.log_text().contains("T0KEN"),
        "the URL's token in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_with_400_is_dropped_and_later_events_still_arrive() {
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan {
        refuse_containing: Some("\"file\":\"first.txt\"".into()),
        ..Plan::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let table = webhook_table(dir.path(), &hook, "");
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    write_file(&studio.inbox.join("first.txt"), 100, 1);
    let agent = studio.start();
    eventually(WAIT, "the first event refused", || {
        hook.deliveries().iter().any(|d| d.status == 400)
    })
    .await;
    write_file(&studio.inbox.join("second.txt"), 100, 2);
    eventually(WAIT, "the second event taken", || {
        hook.accepted()
            .iter()
            .any(|d| d.json()["file"] == "second.txt")
    })
    .await;
    stop(agent).await;
    let refused: Vec<Delivery> = hook
        .deliveries()
        .into_iter()
        .filter(|d| d.json()["file"] == "first.txt")
        .collect();
    assert_eq!(refused.len(), 1, "a refused event is not sent again");
    let log = studio.log_text();
    assert!(
        log.contains("dropping failed first.txt") && log.contains("400 Bad Request"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_never_answers_does_not_slow_uploads() {
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan {
        stall: Some(Duration::from_secs(600)),
        ..Plan::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let table = webhook_table(dir.path(), &hook, "events = [\"uploaded\", \"failed\"]");
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let agent = studio.start();
    let expected = write_batch(&studio.inbox, 1, 4);
    // The first event's POST hangs (for 30 s, then it is tried again); every file goes on.
    eventually(
        Duration::from_secs(20),
        "every file in done/ and failed/",
        || all_finished(&studio, &expected),
    )
    .await;
    assert!(hook.deliveries().is_empty(), "no answer was given");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_escapes_a_name_that_would_ping_the_channel() {
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let table = webhook_table(dir.path(), &hook, "format = \"slack\"");
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let agent = studio.start();
    let name = "<!channel> & co.txt";
    write_file(&studio.inbox.join(name), 100, 1);
    // The delay from the file's arrival in failed/ (its sidecar is written just before the
    // store records the move and its event) to the receiver getting the event.
    let started = Instant::now();
    let arrived_at = loop {
        if arrived(&studio.failed().join(name)) {
            break Instant::now();
        }
        assert!(started.elapsed() < WAIT, "the file never reached failed/");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eventually(WAIT, "the event taken", || !hook.accepted().is_empty()).await;
    let delay = hook.accepted()[0].at.saturating_duration_since(arrived_at);
    eprintln!(
        "delivery delay to a healthy receiver: {} ms after the file reached failed/",
        delay.as_millis()
    );
    // Hostile test of issue 12, D5: Mattermost and Teams act on mentions and markdown.
    let mattermost = "@channel @here *bold* [x](evil.example) `tick`.txt";
    write_file(&studio.inbox.join(mattermost), 100, 2);
    // Slack bodies carry no id: every answered delivery counts.
    let taken = || -> Vec<Delivery> {
        hook.deliveries()
            .into_iter()
            .filter(|d| d.status == 200)
            .collect()
    };
    eventually(WAIT, "the second event taken", || taken().len() >= 2).await;
    stop(agent).await;
    let json = hook.accepted()[0].json();
    let text = json["text"].as_str().unwrap();
    assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    assert!(
        text.contains("failed: `&lt;!channel&gt; &amp; co.txt` because: `"),
        "{text}"
    );
    assert!(text.contains("415"), "{text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    let text = taken()[1].json()["text"].as_str().unwrap().to_owned();
    // The name inside one code span (no mention, no markdown, no link there), its own
    // backticks unable to end it: the line has just the four of its two spans.
    assert!(
        text.contains(
            "failed: `@channel @here *bold* [x](evil.example) \u{2cb}tick\u{2cb}.txt` because: `"
        ),
        "{text}"
    );
    assert_eq!(text.matches('`').count(), 4, "{text}");
}

/// Hostile test of issue 12, D1: the events a destination is owed follow it when its URL
/// changes in the config (the same `[[notify]]` table, edited), across a restart; a destination
/// removed takes what it was owed with it, said in one log line with how many and to what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_owed_follow_a_destination_whose_url_changed() {
    let emulator = emulator(|_| {}).await;
    let old = Hook::start(Plan {
        fail_first: usize::MAX,
        ..Plan::default()
    })
    .await;
    let new = Hook::start(Plan::default()).await;
    let table = format!("\n[[notify]]\nurl = \"{}\"\n", old.url());
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let agent = studio.start();
    write_file(&studio.inbox.join("first.txt"), 100, 1);
    eventually(WAIT, "the old URL tried", || !old.deliveries().is_empty()).await;
    stop(agent).await;
    let owed = old.deliveries()[0].id();

    // The user fixes the URL; the event waiting for the old one goes to the new one.
    let config = std::fs::read_to_string(&studio.config).unwrap();
    let edited = config.replace(&old.url(), &new.url());
    assert_ne!(config, edited);
    std::fs::write(&studio.config, &edited).unwrap();
    let agent = studio.start();
    eventually(WAIT, "the owed event at the new URL", || {
        hook_ids(&new).contains(&owed)
    })
    .await;
    stop(agent).await;
    assert!(
        !studio.log_text().contains("dropped"),
        "{}",
        studio.log_text()
    );

    // Removed while it is owed an event: dropped, in one line.
    new.plan.lock().unwrap().fail_first = usize::MAX;
    let agent = studio.start();
    write_file(&studio.inbox.join("second.txt"), 100, 2);
    eventually(WAIT, "the second event tried", || {
        new.deliveries()
            .iter()
            .any(|d| d.json()["file"] == "second.txt")
    })
    .await;
    stop(agent).await;
    let without = edited.replace(&table.replace(&old.url(), &new.url()), "\n");
    assert_ne!(without, edited);
    std::fs::write(&studio.config, without).unwrap();
    let agent = studio.start();
    let line = format!(
        "1 notification(s) owed to notify[1] (http://{}/…) dropped: that destination is no longer in [[notify]]",
        new.addr
    );
    eventually(WAIT, "the drop in the log", || {
        studio.log_text().contains(&line)
    })
    .await;
    stop(agent).await;
    assert_eq!(studio.log_text().matches("dropped").count(), 1);
}

/// The ids of the events `hook` took.
fn hook_ids(hook: &Hook) -> Vec<String> {
    hook.accepted().iter().map(Delivery::id).collect()
}

/// Hostile test of issue 12, D12: a watched folder missing when the agent starts does not stop
/// it: the other folders upload, `folder_missing` is sent for it, and once it appears it is
/// watched (`folder_back`) and its files uploaded. With no folder there at all, `run` still
/// refuses the config (exit 2), as the contract says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_missing_at_start_is_announced_and_watched_once_it_appears() {
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("not-mounted-yet");
    let table = format!(
        "\n[[folder]]\npath = \"{}\"\n{QUICK}\n\n[[notify]]\nurl = \"{}\"\nevents = [\"folder_missing\", \"folder_back\", \"uploaded\"]\n",
        later.display(),
        hook.url()
    );
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    write_file(&studio.inbox.join("here.mov"), 64 * 1024, 1);
    let agent = studio.start();
    let events = |hook: &Hook| -> Vec<(String, String)> {
        hook.accepted()
            .iter()
            .map(|d| {
                let json = d.json();
                let about = json["file"]
                    .as_str()
                    .or(json["folder"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                (json["event"].as_str().unwrap_or_default().to_owned(), about)
            })
            .collect()
    };
    let later_text = later.display().to_string();
    eventually(WAIT, "folder_missing for the missing folder", || {
        events(&hook).contains(&("folder_missing".to_owned(), later_text.clone()))
    })
    .await;
    eventually(WAIT, "the other folder's file uploaded", || {
        arrived(&studio.done().join("here.mov"))
    })
    .await;
    let missing = hook
        .accepted()
        .into_iter()
        .find(|d| d.json()["event"] == "folder_missing")
        .unwrap()
        .json();
    assert!(missing["reason"].is_string(), "{missing}");
    let status = studio.status_json().await;
    assert_eq!(status["missing_folders"][0]["path"], later_text, "{status}");

    std::fs::create_dir(&later).unwrap();
    eventually(WAIT, "folder_back once it appears", || {
        events(&hook).contains(&("folder_back".to_owned(), later_text.clone()))
    })
    .await;
    write_file(&later.join("late.mov"), 64 * 1024, 2);
    eventually(WAIT, "the late folder's file uploaded", || {
        arrived(&later.join("done").join("late.mov"))
    })
    .await;
    let (status, _) = stop(agent).await;
    assert!(status.success());
    let missing_events = events(&hook)
        .iter()
        .filter(|(event, _)| event == "folder_missing")
        .count();
    assert_eq!(missing_events, 1, "{:?}", events(&hook));

    // No folder there at all: a config problem, exit 2, each folder named.
    let gone = dir.path().join("gone");
    let config = std::fs::read_to_string(&studio.config)
        .unwrap()
        .replace(
            &studio.inbox.display().to_string(),
            &gone.display().to_string(),
        )
        .replace(
            &later_text,
            &dir.path().join("gone-too").display().to_string(),
        );
    std::fs::write(&studio.config, config).unwrap();
    let output = run(hotfolder().arg("run").arg("--config").arg(&studio.config)).await;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("folder[1].path") && err.contains("folder[2].path"),
        "{err}"
    );
}

/// Hostile test of issue 12, D2: a pause because the state store cannot be written (its disk
/// is full) is announced like any other, from memory since the store cannot take the event;
/// once the disk has room, `resumed` follows through the store, and `paused` is not sent twice.
/// Needs a tmpfs (root); skipped with a message otherwise. The 2 minutes before a pause is
/// announced are 2 seconds here (`HOTFOLDER_TEST_PAUSE_NOTICE_AFTER`, debug builds only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_for_a_full_state_store_is_announced() {
    use crate::store::{start_with_env, state_dir};
    // Every request waits 150 ms: the upload is still running when the disk fills.
    let emulator = emulator(|o| {
        o.faults = hotfolder::Faults {
            seed: 3,
            stall_rate: 1.0,
            stall: Duration::from_millis(150),
            ..Default::default()
        };
    })
    .await;
    let hook = Hook::start(Plan::default()).await;
    let table = format!(
        "\n[[notify]]\nurl = \"{}\"\nevents = [\"paused\", \"resumed\"]\n",
        hook.url()
    );
    let upload = FAST_UPLOAD.replace("parallel = 2", "parallel = 1");
    let studio = Studio::new(&emulator, &upload, &format!("{QUICK}\n{table}"));
    let Some(tmpfs) = Tmpfs::mount(&state_dir(&studio), "4m") else {
        hotfolder::test_skipped(format_args!(
            "a_pause_for_a_full_state_store_is_announced: mounting a tmpfs for the \
             state dir needs root (or CAP_SYS_ADMIN)"
        ));
        return;
    };
    let agent = start_with_env(
        &studio,
        &[(
            "HOTFOLDER_TEST_PAUSE_NOTICE_AFTER",
            std::ffi::OsStr::new("2s"),
        )],
    );
    let big = studio.inbox.join("big.mov");
    std::fs::write(&big, export(&big, 6 * MIB, 61)).unwrap();
    eventually(WAIT, "big.mov's upload under way", || {
        crate::store::videos_named(&emulator, "big.mov")
            .first()
            .is_some_and(|v| v.chunks_received >= 1)
    })
    .await;
    let filler = tmpfs.fill("filler");
    eventually(WAIT, "the pause logged", || {
        studio
            .log_text()
            .contains("uploads paused: the state store cannot be written")
    })
    .await;
    eventually(WAIT, "paused at the receiver", || {
        hook.accepted()
            .iter()
            .any(|d| d.json()["event"] == "paused")
    })
    .await;
    let paused = hook.accepted()[0].json();
    assert_eq!(paused["event"], "paused", "{paused}");
    assert!(
        paused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("state store cannot be written"),
        "{paused}"
    );

    std::fs::remove_file(&filler).unwrap();
    eventually(WAIT, "resumed at the receiver", || {
        hook.accepted()
            .iter()
            .any(|d| d.json()["event"] == "resumed")
    })
    .await;
    eventually(WAIT, "big.mov delivered", || {
        arrived(&studio.done().join("big.mov"))
    })
    .await;
    let (stopped, _) = stop(agent).await;
    assert!(stopped.success());
    let events: Vec<String> = hook
        .deliveries()
        .iter()
        .map(|d| d.json()["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(events, ["paused", "resumed"], "{}", studio.log_text());
    drop(tmpfs);
}

/// Second hostile test of issue 12, D1: an event the destination took while the state store
/// could not record that it did is not sent again every few seconds: it is recorded once the
/// store can be written, and the receiver has it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_while_the_store_is_full_is_not_sent_again_and_again() {
    use crate::store::{start_with_env, state_dir};
    let emulator = emulator(|_| {}).await;
    let mut hook = Hook::start(Plan::default()).await;
    hook.down().await;
    let table = format!(
        "\n[[notify]]\nurl = \"{}\"\nevents = [\"uploaded\"]\n",
        hook.url()
    );
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let Some(tmpfs) = Tmpfs::mount(&state_dir(&studio), "4m") else {
        hotfolder::test_skipped(format_args!(
            "an_event_delivered_while_the_store_is_full_is_not_sent_again_and_again: \
             mounting a tmpfs for the state dir needs root (or CAP_SYS_ADMIN)"
        ));
        return;
    };
    let agent = start_with_env(&studio, &[]);
    let clip = studio.inbox.join("clip.mov");
    std::fs::write(&clip, export(&clip, MIB, 62)).unwrap();
    eventually(WAIT, "clip.mov in done/", || {
        arrived(&studio.done().join("clip.mov"))
    })
    .await;
    // The event waits in the store for a destination that is down; then the disk fills, and
    // the destination comes back.
    let filler = tmpfs.fill("filler");
    hook.up().await;
    eventually(WAIT, "uploaded at the receiver", || {
        !hook.accepted().is_empty()
    })
    .await;
    // Three of the store's 5 s retries.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let taken_while_full = hook.deliveries().iter().filter(|d| d.status == 200).count();
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (stopped, _) = stop(agent).await;
    assert!(stopped.success());
    let taken = hook.deliveries().iter().filter(|d| d.status == 200).count();
    assert_eq!(taken_while_full, 1, "{}", studio.log_text());
    assert_eq!(taken, 1, "{}", studio.log_text());
    drop(tmpfs);
}

/// Hostile test of issue 12, D3: an agent killed every few seconds while its uploads are
/// paused still announces the pause once it has lasted the notice time, counted from when it
/// began in the first run, not anew in each. The 2 minutes are 6 seconds here
/// (`HOTFOLDER_TEST_PAUSE_NOTICE_AFTER`, debug builds only), and each run lives 3.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_is_announced_even_when_the_agent_crash_loops() {
    use crate::store::start_with_env;
    let hook = Hook::start(Plan::default()).await;
    let table = format!(
        "\n[[notify]]\nurl = \"{}\"\nevents = [\"paused\", \"resumed\"]\n",
        hook.url()
    );
    let studio = {
        let emulator = emulator(|_| {}).await;
        let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
        // The platform is gone for good: every run pauses soon after it starts.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let live = emulator.api_url().port().unwrap();
        let config = std::fs::read_to_string(&studio.config).unwrap().replace(
            &format!("127.0.0.1:{live}"),
            &format!("127.0.0.1:{dead_port}"),
        );
        std::fs::write(&studio.config, config).unwrap();
        studio
    };
    write_file(&studio.inbox.join("clip.mov"), 64 * 1024, 1);
    let env = [(
        "HOTFOLDER_TEST_PAUSE_NOTICE_AFTER",
        std::ffi::OsStr::new("6s"),
    )];
    let mut runs = 0;
    while hook.accepted().is_empty() {
        assert!(
            runs < 8,
            "no paused after {runs} runs of 3.5 s:\n{}",
            studio.log_text()
        );
        runs += 1;
        let mut agent = start_with_env(&studio, &env);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        signal(&agent, 9);
        agent.wait().await.unwrap();
    }
    assert!(runs >= 2, "announced within the first run: {runs}");
    let events: Vec<String> = hook
        .deliveries()
        .iter()
        .map(|d| d.json()["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(events, ["paused"], "{}", studio.log_text());
    let log = studio.log_text();
    assert!(log.contains("uploads paused"), "{log}");
}

/// Hostile test of issue 12, D8: a destination that keeps failing shows in `status` (text and
/// JSON), `/api/status`, the page and `/metrics`, while `/healthz` stays 200 with a note; its
/// failure is logged at warn once (then hourly), and its recovery at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_shows_in_status_metrics_and_the_page() {
    use crate::http::{get, listener_port, sample};
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan {
        fail_first: usize::MAX,
        ..Plan::default()
    })
    .await;
    let table = format!("\n[[notify]]\nurl = \"{}\"\n", hook.url());
    let studio = Studio::new(
        &emulator,
        &format!("{FAST_UPLOAD}\n[http]\nlisten = \"127.0.0.1:0\"\n"),
        &format!("{QUICK}\n{table}"),
    );
    let agent = studio.start();
    let port = listener_port(&studio).await;
    write_file(&studio.inbox.join("wrong.txt"), 100, 1);
    eventually(WAIT, "several failed deliveries", || {
        hook.deliveries().len() >= 5
    })
    .await;

    let output = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    let shown = text(&output.stdout);
    let destination = format!("notify[1] (http://{}/…)", hook.addr);
    let line = shown
        .lines()
        .find(|line| line.starts_with("NOTIFICATIONS FAILING since "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.contains(&format!("1 waiting for {destination}")),
        "{line}"
    );
    assert!(line.contains("500 Internal Server Error"), "{line}");
    assert!(!shown.contains("T0KEN"), "{shown}");
    let json = studio.status_json().await;
    assert_eq!(json["notifications_pending"], 1, "{json}");
    let backlog = &json["notifications"][0];
    assert_eq!(backlog["destination"], "notify[1]", "{json}");
    assert_eq!(backlog["pending"], 1, "{json}");
    assert!(backlog["failing_since"].is_string(), "{json}");
    assert!(backlog["oldest"].is_string(), "{json}");
    assert!(
        backlog["last_error"].as_str().unwrap().contains("500"),
        "{json}"
    );
    let api = get(port, "/api/status").await.json();
    assert_eq!(api["notifications"][0]["pending"], 1, "{api}");
    let metrics = get(port, "/metrics").await.body;
    assert_eq!(
        sample(
            &metrics,
            "hotfolder_notify_pending{destination=\"notify[1]\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "hotfolder_notify_failing{destination=\"notify[1]\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "hotfolder_notifications_pending"),
        Some(1.0)
    );
    match crate::http::promtool(&metrics).await {
        Some((ok, out)) => assert!(ok, "promtool: {out}\n{metrics}"),
        None => eprintln!("promtool not installed: the metrics' format is not checked here"),
    }
    let health = get(port, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let health = health.json();
    assert_eq!(health["status"], "ok");
    assert!(
        health["notes"][0].as_str().unwrap().contains(&destination),
        "{health}"
    );
    let page = get(port, "/").await.body;
    assert!(page.contains("NOTIFICATIONS FAILING since"), "{page}");
    let log = studio.log_text();
    assert_eq!(log.matches("cannot deliver").count(), 1, "{log}");

    // The destination works again: the backlog goes, and the log says so.
    hook.plan.lock().unwrap().fail_first = 0;
    eventually(WAIT, "the event taken", || !hook.accepted().is_empty()).await;
    eventually(WAIT, "the recovery in the log", || {
        studio.log_text().contains("delivering again after")
    })
    .await;
    let metrics = get(port, "/metrics").await.body;
    assert_eq!(
        sample(
            &metrics,
            "hotfolder_notify_failing{destination=\"notify[1]\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    stop(agent).await;
    let output = run(hotfolder()
        .arg("status")
        .arg("--config")
        .arg(&studio.config))
    .await;
    let shown = text(&output.stdout);
    assert!(!shown.contains("NOTIFICATIONS"), "{shown}");
}

/// Hostile test of issue 12, D10: a webhook URL with a login (`https://user:pass@host/…`, as
/// some receivers behind a proxy want) is sent with that login as Basic auth, and the login
/// shows neither in the log nor in `check`, which warns that over http:// it travels in the
/// clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_with_a_login_is_sent_with_basic_auth_and_never_shown() {
    use base64::Engine as _;
    let emulator = emulator(|_| {}).await;
    let hook = Hook::start(Plan::default()).await;
    let url = format!("http://hook-user:p%40ss-w0rd@{}/hooks/T0KEN", hook.addr);
    let table = format!("\n[[notify]]\nurl = \"{url}\"\n");
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{table}"));
    let output = run(hotfolder().arg("check").arg("--config").arg(&studio.config)).await;
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}{}", text(&output.stderr));
    assert!(
        out.contains("notify[1].url holds a login") && out.contains("http://"),
        "{out}"
    );
    let agent = studio.start();
    write_file(&studio.inbox.join("wrong.txt"), 100, 1);
    eventually(WAIT, "the event taken", || !hook.accepted().is_empty()).await;
    stop(agent).await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("hook-user:p@ss-w0rd")
    );
    assert_eq!(
        hook.accepted()[0].authorization.as_deref(),
        Some(expected.as_str())
    );
    for shown in [out, studio.log_text()] {
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss") && !shown.contains("hook-user"),
            "{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_the_destinations_with_urls_and_secrets_masked() {
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let body = format!(
        "{}\n[[folder]]\npath = \"{}\"\n\n[[notify]]\nurl = \"https://hooks.example.com/services/T0KEN\"\nformat = \"slack\"\nevents = [\"failed\", \"uploaded\"]\n\n[[notify]]\nemail_to = [\"ops@studio.example\"]\n\n[smtp]\nurl = \"smtps://mail.studio.example\"\nfrom = \"hotfolder@studio.example\"\nusername = \"hotfolder\"\npassword_env = \"SMTP_PW\"\n",
        account_toml(&emulator, "keycloak"),
        inbox.display()
    );
    let config = write_config(dir.path(), &body);
    let output = run(hotfolder()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("SMTP_PW", "mail-pa55word"))
    .await;
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}{}", text(&output.stderr));
    assert!(
        out.contains("url = \"https://hooks.example.com/…\""),
        "{out}"
    );
    assert!(out.contains("events = [\"failed\", \"uploaded\"]"), "{out}");
    assert!(out.contains("email_to = [\"ops@studio.example\"]"), "{out}");
    assert!(
        out.contains("url = \"smtps://mail.studio.example/…\""),
        "{out}"
    );
    assert!(out.contains("mail.studio.example:465, TLS"), "{out}");
    assert!(
        out.contains("password = \"*** (from env SMTP_PW)\""),
        "{out}"
    );
    assert!(
        !out.contains("T0KEN") && !out.contains("mail-pa55word"),
        "{out}"
    );

    // A problem shows the URL masked too.
    let bad = body.replace("https://hooks", "ftp://hooks");
    let config = write_config(dir.path(), &bad);
    let output = run(hotfolder()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("SMTP_PW", "x"))
    .await;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("notify[1].url"), "{err}");
    assert!(!err.contains("T0KEN"), "{err}");
}

/// Hostile test of issue 12, D9: the files that hold the secrets of `[[notify]]` and `[smtp]`
/// (and the config, with its webhook URL) are warned about by `check` when other users can
/// read them, each named with the `chmod` that fixes it; quiet once they are 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_notify_secrets_that_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let emulator = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let secret = dir.path().join("hook-secret");
    let password = dir.path().join("smtp-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::write(&password, "mail-pa55word\n").unwrap();
    let body = format!(
        "{}\n[[folder]]\npath = \"{}\"\n\n[[notify]]\nurl = \"https://hooks.example.com/services/T0KEN\"\nsecret_file = \"{}\"\n\n[[notify]]\nemail_to = [\"ops@studio.example\"]\n\n[smtp]\nurl = \"smtps://mail.studio.example\"\nfrom = \"hotfolder@studio.example\"\nusername = \"hotfolder\"\npassword_file = \"{}\"\n",
        account_toml(&emulator, "keycloak"),
        inbox.display(),
        secret.display(),
        password.display()
    );
    let config = write_config(dir.path(), &body);
    let files = [&config, &secret, &password];
    for file in files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let check = || async {
        let output = run(hotfolder().arg("check").arg("--config").arg(&config)).await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let out = check().await;
    let warnings: Vec<&str> = out
        .lines()
        .filter(|line| line.starts_with("warning:") && line.contains("chmod o-r"))
        .collect();
    assert_eq!(warnings.len(), 3, "{out}");
    for (file, what) in [
        (&config, "webhook URLs"),
        (&secret, "signing secret"),
        (&password, "mail server's password"),
    ] {
        let shown = file.display().to_string();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("{shown} holds"))
                    && w.contains(what)
                    && w.contains(&format!("chmod o-r {shown}"))),
            "{shown}: {out}"
        );
    }
    for file in files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = check().await;
    assert!(!out.contains("chmod"), "{out}");
}

/// What the test's SMTP server saw of one message.
#[derive(serde::Deserialize, Debug)]
struct Received {
    tls: bool,
    authenticated: bool,
    recipients: Vec<String>,
    content: String,
}

/// Python's aiosmtpd on 127.0.0.1 with STARTTLS required and a login, its certificate from a
/// CA made here with openssl. `None` (and why) when python3, aiosmtpd or openssl is missing.
struct SmtpServer {
    port: u16,
    ca: PathBuf,
    inbox: PathBuf,
    child: tokio::process::Child,
}

const SERVER_PY: &str = r#"
import asyncio, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
# "plain": a server that offers no STARTTLS and takes a login in the clear.
plain = len(sys.argv) > 5 and sys.argv[5] == "plain"

class Handler:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Handler.count += 1
        record = {
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "recipients": list(envelope.rcpt_tos),
            "content": envelope.content.decode("utf-8", "replace"),
        }
        path = os.path.join(out, "%03d.json" % Handler.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"hotfolder" \
        and auth_data.password == b"mail-pa55word"
    return AuthResult(success=ok)

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
if plain:
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
        authenticator=authenticate, auth_required=True, auth_require_tls=False)
else:
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
        require_starttls=True, authenticator=authenticate, auth_required=True)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// The mail server of an e-mail test (`plain`: without STARTTLS) and the file holding the
/// password of its login; `None` when this machine cannot run one (the test says so and skips).
async fn mail_server(dir: &Path, plain: bool) -> Option<(SmtpServer, PathBuf)> {
    match SmtpServer::start_with(dir, plain).await {
        Ok(server) => {
            let password = dir.join("smtp-password");
            std::fs::write(&password, "mail-pa55word\n").unwrap();
            Some((server, password))
        }
        Err(why) => {
            hotfolder::test_skipped(format_args!(
                "no local SMTP server for the e-mail test: {why}"
            ));
            None
        }
    }
}

impl SmtpServer {
    /// A server that offers no STARTTLS at all (`plain`).
    async fn start_with(dir: &Path, plain: bool) -> Result<SmtpServer, String> {
        // The first python3 on PATH may be another installation (pyenv) than the system's,
        // which is where Debian's python3-aiosmtpd goes.
        let python = ["python3", "/usr/bin/python3"]
            .into_iter()
            .find(|python| {
                std::process::Command::new(python)
                    .args(["-c", "import aiosmtpd"])
                    .output()
                    .is_ok_and(|out| out.status.success())
            })
            .ok_or("no python3 with aiosmtpd (Debian: python3-aiosmtpd)")?;
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .map_err(|e| format!("openssl cannot run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("openssl {args:?}: {}", text(&out.stderr)))
            }
        };
        // A CA, and the server's certificate for 127.0.0.1 signed by it.
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hotfolder test CA",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            probe.local_addr().map_err(|e| e.to_string())?.port()
        };
        let inbox = dir.join("mail");
        std::fs::create_dir_all(&inbox).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("server.py"), SERVER_PY).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(python)
            .arg(dir.join("server.py"))
            .arg(port.to_string())
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&inbox)
            .arg(if plain { "plain" } else { "tls" })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the SMTP server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => {}
            other => return Err(format!("the SMTP server did not start: {other:?}")),
        }
        Ok(SmtpServer {
            port,
            ca: dir.join("ca.pem"),
            inbox,
            child,
        })
    }

    fn messages(&self) -> Vec<Received> {
        let mut names: Vec<_> = std::fs::read_dir(&self.inbox)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_is_one_email_over_starttls_with_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, password)) = mail_server(dir.path(), false).await else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let tables = format!(
        "\n[[notify]]\nemail_to = [\"ops@studio.example\", \"lead@studio.example\"]\nevents = [\"failed\"]\n\n[smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"hotfolder@studio.example\"\nusername = \"hotfolder\"\npassword_file = \"{}\"\nca_file = \"{}\"\nbatch_window = \"4s\"\n",
        server.port,
        password.display(),
        server.ca.display()
    );
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{tables}"));
    let names: Vec<String> = (0..6).map(|i| format!("wrong-type-{i}.txt")).collect();
    for (i, name) in names.iter().enumerate() {
        write_file(&studio.inbox.join(name), 100, i as u64);
    }
    let agent = studio.start();
    eventually(WAIT, "a message at the SMTP server", || {
        !server.messages().is_empty()
    })
    .await;
    // Nothing more comes: the burst was one message.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop(agent).await;
    let _ = server.child.kill().await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{}", studio.log_text());
    let mail = &messages[0];
    assert!(mail.tls, "sent without TLS");
    assert!(mail.authenticated, "not logged in");
    assert_eq!(
        mail.recipients,
        ["ops@studio.example", "lead@studio.example"]
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    // The header as a mail reader shows it: folded lines joined again (RFC 5322, 2.2.3).
    let mut subject = String::new();
    let mut lines = mail.content.lines();
    while let Some(line) = lines.next() {
        if let Some(first) = line.strip_prefix("Subject: ") {
            subject.push_str(first);
            for more in lines.by_ref() {
                match more.strip_prefix([' ', '\t']) {
                    Some(rest) => {
                        subject.push(' ');
                        subject.push_str(rest);
                    }
                    None => break,
                }
            }
            break;
        }
    }
    assert!(
        subject.starts_with(&format!("hotfolder on {host}: 6 failed: wrong-type-")),
        "{subject}"
    );
    assert!(subject.ends_with("and 3 more"), "{subject}");
    for name in &names {
        assert!(
            mail.content.contains(name.as_str()),
            "{name} in {}",
            mail.content
        );
    }
}

/// Hostile test of issue 12, D4: failures that trickle out (one a second here, at the API
/// budget in real life) keep the batch open: one mail for the whole burst, not one per window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_that_trickle_out_are_one_email_not_one_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, password)) = mail_server(dir.path(), false).await else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let tables = format!(
        "\n[[notify]]\nemail_to = [\"ops@studio.example\"]\nevents = [\"failed\"]\n\n[smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"hotfolder@studio.example\"\nusername = \"hotfolder\"\npassword_file = \"{}\"\nca_file = \"{}\"\nbatch_window = \"3s\"\n",
        server.port,
        password.display(),
        server.ca.display()
    );
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{tables}"));
    let agent = studio.start();
    let count = 9;
    for i in 0..count {
        write_file(&studio.inbox.join(format!("trickle-{i}.txt")), 100, i);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eventually(WAIT, "a message at the SMTP server", || {
        !server.messages().is_empty()
    })
    .await;
    // Quiet for longer than the window: nothing more comes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop(agent).await;
    let _ = server.child.kill().await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{}", studio.log_text());
    let content = &messages[0].content;
    assert!(
        content.contains(&format!("reports {count} events")),
        "{content}"
    );
    for i in 0..count {
        assert!(
            content.contains(&format!("trickle-{i}.txt")),
            "{i}: {content}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_without_starttls_gets_neither_the_login_nor_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, password)) = mail_server(dir.path(), true).await else {
        return;
    };
    let emulator = emulator(|_| {}).await;
    let tables = format!(
        "\n[[notify]]\nemail_to = [\"ops@studio.example\"]\n\n[smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"hotfolder@studio.example\"\nusername = \"hotfolder\"\npassword_file = \"{}\"\nbatch_window = \"1s\"\n",
        server.port,
        password.display(),
    );
    let studio = Studio::new(&emulator, FAST_UPLOAD, &format!("{QUICK}\n{tables}"));
    write_file(&studio.inbox.join("wrong.txt"), 100, 1);
    let agent = studio.start();
    eventually(WAIT, "the refusal to send in the log", || {
        studio
            .log_text()
            .contains("SMTP never logs in nor sends without TLS")
    })
    .await;
    stop(agent).await;
    let _ = server.child.kill().await;
    assert!(
        server.messages().is_empty(),
        "a message went out in the clear"
    );
    let log = studio.log_text();
    assert!(log.contains("STARTTLS"), "{log}");
    // Said once, not once by lettre's message and again by its cause.
    let line = log
        .lines()
        .find(|line| line.contains("cannot deliver"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        line.matches("STARTTLS is not supported").count(),
        1,
        "{line}"
    );
    assert!(!log.contains("mail-pa55word"), "{log}");
}
