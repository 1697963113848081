//! The agent's HTTP listener (`[http] listen`, issue 12 items 4 and 5) through the real
//! binary: `/metrics` counts what was uploaded and passes `promtool check metrics`, `/healthz`
//! follows a folder that goes away and comes back, `/api/status` is what `status --json`
//! prints, the status page in headless Chromium shows a file in flight and a `<script>` file
//! name as text, and requests for another `Host` are refused.
//!
//! promtool (Debian `prometheus`) and Chromium (Debian `chromium`) are real tools: where one is
//! missing, the part that needs it says so and skips.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

const QUICK: &str = "stable_for = \"300ms\"";
const WAIT: Duration = Duration::from_secs(30);
/// The listener on a port the system picks; the agent logs which.
const LISTEN_ANY_PORT: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

/// One HTTP answer: status, headers (names in lower case) and body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `method path` sent to the listener with `Host: host`, on a connection of its own.
pub(crate) async fn request(port: u16, method: &str, path: &str, host: &str) -> Reply {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_request(port, &head).await
}

/// `head` (a request line and headers, up to the empty line) sent as it is, on a connection
/// of its own.
async fn raw_request(port: u16, head: &str) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("the listener answered within 20 s")
        .unwrap();
    let raw = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub(crate) async fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, &format!("127.0.0.1:{port}")).await
}

/// The port the agent's listener is on, from its log line.
pub(crate) async fn listener_port(studio: &Studio) -> u16 {
    let marker = "listening on http://127.0.0.1:";
    eventually(WAIT, "the listener's log line", || {
        studio.log_text().contains(marker)
    })
    .await;
    let log = studio.log_text();
    let after = &log[log.find(marker).unwrap() + marker.len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a port in the log line")
}

/// The value of the sample `series` (name and labels exactly as written) in a `/metrics`
/// answer.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed.
pub(crate) async fn promtool(text: &str) -> Option<(bool, String)> {
    let spawned = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => panic!("promtool: {err}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    Some((
        output.status.success(),
        format!("{}{}", text_of(&output.stdout), text_of(&output.stderr)),
    ))
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_uploaded_and_pass_promtool() {
    let emulator = emulator(|_| {}).await;
    // An empty file waits for its writer up to incomplete_after, then fails.
    let studio = Studio::new(
        &emulator,
        &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"),
        &format!("{QUICK}\nincomplete_after = \"1s\""),
    );
    let sizes = [MIB + 1, 2 * MIB + 3, 3 * MIB / 2];
    for (i, size) in sizes.iter().enumerate() {
        write_file(&studio.inbox.join(format!("clip{i}.mov")), *size, i as u64);
    }
    // Stays empty: refused once incomplete_after has passed.
    std::fs::write(studio.inbox.join("empty.mov"), b"").unwrap();
    let agent = studio.start();
    let port = listener_port(&studio).await;

    eventually(WAIT, "three files in done/, one in failed/", || {
        (0..sizes.len()).all(|i| arrived(&studio.done().join(format!("clip{i}.mov"))))
            && arrived(&studio.failed().join("empty.mov"))
    })
    .await;
    // The counters move when the files have moved; the sidecar is the last thing written.
    // The settling list for status is written in batches, a second behind the agent; a
    // loaded machine (CI) adds its own delay.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let metrics = get(port, "/metrics").await.body;
        if sample(&metrics, "hotfolder_files_total{outcome=\"uploaded\"}") == Some(3.0)
            && sample(&metrics, "hotfolder_files_total{outcome=\"failed\"}") == Some(1.0)
            && sample(&metrics, "hotfolder_queue_jobs{state=\"settling\"}") == Some(0.0)
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            // Which file is still counted, for the failure's message.
            let status = get(port, "/api/status").await.body;
            panic!("the counters never settled:\n{metrics}\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = get(port, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    let metrics = reply.body;
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(value("hotfolder_files_total{outcome=\"uploaded\"}"), 3.0);
    assert_eq!(value("hotfolder_files_total{outcome=\"failed\"}"), 1.0);
    let total: usize = sizes.iter().sum();
    assert_eq!(value("hotfolder_bytes_uploaded_total"), total as f64);
    assert_eq!(value("hotfolder_queue_jobs{state=\"done\"}"), 3.0);
    assert_eq!(value("hotfolder_queue_jobs{state=\"failed\"}"), 1.0);
    for state in [
        "settling",
        "waiting",
        "uploading",
        "paused",
        "trying",
        "finishing",
    ] {
        assert_eq!(
            value(&format!("hotfolder_queue_jobs{{state=\"{state}\"}}")),
            0.0,
            "{state}"
        );
    }
    assert_eq!(value("hotfolder_paused"), 0.0);
    // No [[notify]]: nothing owed.
    assert_eq!(value("hotfolder_notifications_pending"), 0.0);
    assert_eq!(value("hotfolder_upload_duration_seconds_count"), 3.0);
    assert_eq!(
        value("hotfolder_upload_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(value("hotfolder_retries_total{reason=\"http_5xx\"}"), 0.0);
    let folder = studio.inbox.display().to_string();
    assert_eq!(
        value(&format!("hotfolder_folder_up{{folder=\"{folder}\"}}")),
        1.0
    );
    let last = value("hotfolder_last_upload_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - 120.0 < last && last <= now + 1.0, "{last} vs {now}");
    for name in [
        "hotfolder_files_total",
        "hotfolder_bytes_uploaded_total",
        "hotfolder_queue_jobs",
        "hotfolder_paused",
        "hotfolder_retries_total",
        "hotfolder_upload_duration_seconds",
        "hotfolder_folder_up",
        "hotfolder_last_upload_timestamp_seconds",
        "hotfolder_notifications_pending",
    ] {
        assert!(metrics.contains(&format!("# HELP {name} ")), "{name}");
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name}");
    }
    match promtool(&metrics).await {
        Some((passed, said)) => assert!(passed, "promtool check metrics:\n{said}\n{metrics}"),
        None => hotfolder::test_skipped(format_args!(
            "the promtool part of metrics_count_what_was_uploaded_and_pass_promtool: \
             promtool is not installed (Debian package `prometheus`)"
        )),
    }

    // /api/status is what `status --json` prints, from the same snapshot.
    let api = get(port, "/api/status").await;
    assert_eq!(api.status, 200);
    assert_eq!(api.header("content-type"), Some("application/json"));
    assert_eq!(api.json(), studio.status_json().await);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_while_a_folder_is_gone_and_200_when_it_is_back() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"), QUICK);
    let agent = studio.start();
    let port = listener_port(&studio).await;
    let health = async || get(port, "/healthz").await;

    let mut reply = health().await;
    for _ in 0..100 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = health().await;
    }
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));

    let away = studio.dir.path().join("inbox-away");
    std::fs::rename(&studio.inbox, &away).unwrap();
    let started = std::time::Instant::now();
    loop {
        reply = health().await;
        if reply.status == 503 || started.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reply.status, 503, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["status"], "unhealthy");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(&studio.inbox.display().to_string()) && reason.contains("not watched"),
        "{body}"
    );
    let folder = studio.inbox.display().to_string();
    let metrics = get(port, "/metrics").await.body;
    assert_eq!(
        sample(
            &metrics,
            &format!("hotfolder_folder_up{{folder=\"{folder}\"}}")
        ),
        Some(0.0)
    );

    std::fs::rename(&away, &studio.inbox).unwrap();
    let started = std::time::Instant::now();
    loop {
        reply = health().await;
        if reply.status == 200 || started.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_answers_only_its_own_host_and_only_reads() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"), QUICK);
    let agent = studio.start();
    let port = listener_port(&studio).await;

    // DNS rebinding: a page from evil.example that resolves its name to 127.0.0.1.
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
    ] {
        for path in ["/", "/metrics", "/api/status", "/healthz"] {
            let reply = request(port, "GET", path, &host).await;
            assert_eq!(reply.status, 421, "{host} {path}: {}", reply.body);
            assert!(
                reply.body.contains(&format!("127.0.0.1:{port}")),
                "{}",
                reply.body
            );
            assert!(!reply.body.contains("hotfolder_"), "{}", reply.body);
        }
    }
    let page = request(port, "GET", "/", &format!("localhost:{port}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<h1>hotfolder on "), "{}", page.body);
    let policy = page.header("content-security-policy").unwrap();
    assert!(
        policy.starts_with("default-src 'none'; style-src 'sha256-"),
        "{policy}"
    );
    assert!(
        !policy.contains("script-src") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );

    let post = request(port, "POST", "/api/status", &format!("127.0.0.1:{port}")).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let missing = get(port, "/admin").await;
    assert_eq!(missing.status, 404);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Hostile test of issue 12, D6: the `Host` check answers legitimate clients (the address
/// without its port, HTTP/1.0 without a Host, this machine's name, a proxy's name listed in
/// `allowed_hosts`) and still refuses a rebound name, also in an absolute URI, and a request
/// with two Host headers or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_check_answers_real_clients_and_still_refuses_rebinding() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(
        &emulator,
        &format!(
            "{FAST_UPLOAD}\n[http]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"status.studio.example\"]\n"
        ),
        QUICK,
    );
    let agent = studio.start();
    let port = listener_port(&studio).await;
    // The listener answers before the folder is watched, and /healthz is 503 until it is.
    let mut watched = false;
    for _ in 0..100 {
        if get(port, "/healthz").await.status == 200 {
            watched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        watched,
        "the agent never became healthy: {}",
        studio.log_text()
    );
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let mut answered = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        format!("localhost:{port}"),
        "status.studio.example".to_owned(),
        format!("STATUS.studio.example:{}", port.wrapping_add(7)),
    ];
    if !machine.is_empty() {
        answered.push(format!("{machine}:{port}"));
    }
    for host in &answered {
        let reply = request(port, "GET", "/healthz", host).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
    }
    let old = raw_request(port, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200, "HTTP/1.0 without Host: {}", old.body);
    let absolute = raw_request(
        port,
        &format!("GET http://127.0.0.1:{port}/healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(absolute.status, 200, "{}", absolute.body);

    for host in ["evil.example", "status.studio.example.evil.example"] {
        let reply = request(port, "GET", "/api/status", host).await;
        assert_eq!(reply.status, 421, "{host}: {}", reply.body);
        assert!(reply.body.contains("allowed_hosts"), "{}", reply.body);
    }
    // The absolute form names the host; the Host header beside it does not count.
    let rebound = raw_request(
        port,
        &format!("GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let twice = raw_request(
        port,
        &format!("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(twice.status, 400, "{}", twice.body);
    let none = raw_request(
        port,
        "GET /api/status HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(none.status, 400, "{}", none.body);
    for refused in [rebound, twice, none] {
        assert!(!refused.body.contains("\"jobs\""), "{}", refused.body);
    }
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// Hostile test of issue 12, D7: a hundred connections that send nothing do not keep a
/// monitor waiting: the newest takes the place of the oldest idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_idle_connections_do_not_keep_healthz_waiting() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"), QUICK);
    let agent = studio.start();
    let port = listener_port(&studio).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Let the listener take them all in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), get(port, "/healthz"))
            .await
            .expect("an answer while 100 connections idle");
        let took = started.elapsed();
        eprintln!(
            "/healthz with 100 idle connections held: {} ms",
            took.as_millis()
        );
        assert!(reply.status == 200 || reply.status == 503, "{}", reply.body);
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    drop(idle);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// `chromium --headless --dump-dom` of `url`: the page's DOM after it loaded, or `None` when
/// Chromium is not installed.
async fn chromium_dom(url: &str) -> Option<String> {
    let profile = tempfile::tempdir().unwrap();
    let spawned = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => panic!("chromium: {err}"),
    };
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        text_of(&output.stderr)
    );
    Some(text_of(&output.stdout))
}

fn chromium_installed() -> bool {
    std::process::Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The job of `name` in `status --json`'s `jobs`, if it is there.
fn job<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["jobs"]
        .as_array()?
        .iter()
        .find(|job| job["path"].as_str().is_some_and(|p| p.ends_with(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_shows_a_file_in_flight_and_names_as_text() {
    if !chromium_installed() {
        hotfolder::test_skipped(format_args!(
            "the_status_page_in_chromium_shows_a_file_in_flight_and_names_as_text: \
             chromium is not installed (Debian package `chromium`)"
        ));
        return;
    }
    // Every request waits 200 ms: 40 chunks of 1 MiB take 8 s or more.
    let emulator = emulator(|options| {
        options.faults = hotfolder::Faults {
            seed: 12,
            stall_rate: 1.0,
            stall: Duration::from_millis(200),
            ..Default::default()
        };
    })
    .await;
    let studio = Studio::new(&emulator, &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"), QUICK);
    // Markup in a name: shown as text on the page, never parsed (a name cannot hold `/`, so
    // `<script>` cannot be closed; an event handler needs no closing tag).
    let script = "<script>document.title='pwned'<script>.mov";
    let image = "<img src=x onerror=\"document.title='pwned'\">.mov";
    write_file(&studio.inbox.join(script), MIB / 2, 1);
    write_file(&studio.inbox.join(image), MIB / 2, 2);
    let agent = studio.start();
    let port = listener_port(&studio).await;
    eventually(WAIT, "both small files in done/", || {
        arrived(&studio.done().join(script)) && arrived(&studio.done().join(image))
    })
    .await;

    write_file(&studio.inbox.join("feature.mov"), 40 * MIB, 3);
    let started = std::time::Instant::now();
    loop {
        let status = get(port, "/api/status").await.json();
        let sent = job(&status, "feature.mov")
            .filter(|job| job["state"] == "uploading")
            .and_then(|job| job["next_chunk"].as_u64());
        if sent.is_some_and(|next| next > 3) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "feature.mov never got going: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("http://127.0.0.1:{port}/");
    let Some(dom) = chromium_dom(&url).await else {
        hotfolder::test_skipped(format_args!("chromium disappeared while the test ran"));
        return;
    };
    let uploading = dom
        .split("<table id=\"uploading\">")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no uploads table in:\n{dom}"));
    assert!(uploading.contains("feature.mov"), "{uploading}");
    assert!(uploading.contains("<progress"), "{uploading}");
    assert!(uploading.contains("/40</td>"), "chunk k/40: {uploading}");
    assert!(uploading.contains("% of 40 MiB"), "{uploading}");

    // The names are text in the page: escaped in the markup, no element made of them.
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;script&gt;.mov"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;img src=x onerror=\"document.title='pwned'\"&gt;.mov"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(!dom.contains("pwned</title>"), "a script ran: {dom}");
    assert!(dom.contains("<title>hotfolder on "), "{dom}");
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

/// `check` with `listen` as the `[http]` table; its stdout, stderr and exit code.
async fn check_with_listen(emulator: &hotfolder::Emulator, listen: &str) -> (String, String, i32) {
    let studio = Studio::new(
        emulator,
        &format!("{FAST_UPLOAD}\n[http]\nlisten = \"{listen}\"\n"),
        QUICK,
    );
    let output = run(hotfolder().arg("check").arg("--config").arg(&studio.config)).await;
    (
        text(&output.stdout),
        text(&output.stderr),
        output.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_listener_other_machines_can_reach() {
    let emulator = emulator(|_| {}).await;
    let (stdout, stderr, code) = check_with_listen(&emulator, "127.0.0.1:9811").await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[http]\nlisten = \"127.0.0.1:9811\""),
        "{stdout}"
    );
    assert!(!stdout.contains("authentication"), "{stdout}");

    let (stdout, stderr, code) = check_with_listen(&emulator, "localhost:9811").await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:9811\""), "{stdout}");

    let (stdout, stderr, code) = check_with_listen(&emulator, "0.0.0.0:9811").await;
    assert_eq!(code, 0, "a warning, not a problem: {stdout}\n{stderr}");
    let warning = stdout
        .lines()
        .find(|line| line.starts_with("warning: http.listen"))
        .unwrap_or_else(|| panic!("no warning in:\n{stdout}"));
    assert!(warning.contains("no authentication"), "{warning}");

    let (stdout, stderr, code) = check_with_listen(&emulator, "edit-bay-3:9811").await;
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("http.listen") && stderr.contains("127.0.0.1:9811"),
        "{stderr}"
    );
}

/// Hostile test of issue 12, D11: `check` binds the listen address for a moment, so a port
/// another program holds is said before the agent meets it (a warning: uploads would work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_when_the_listen_port_is_taken() {
    let emulator = emulator(|_| {}).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let (stdout, stderr, code) = check_with_listen(&emulator, &listen).await;
    assert_eq!(code, 0, "a warning, not a problem: {stdout}\n{stderr}");
    let warning = stdout
        .lines()
        .find(|line| line.starts_with(&format!("warning: http.listen = \"{listen}\"")))
        .unwrap_or_else(|| panic!("no warning in:\n{stdout}"));
    assert!(warning.contains("in use by another program"), "{warning}");
    drop(taken);
    let (stdout, _, code) = check_with_listen(&emulator, &listen).await;
    assert_eq!(code, 0);
    assert!(!stdout.contains("in use"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_hold_up_no_upload_and_no_client_after_them() {
    let emulator = emulator(|_| {}).await;
    let studio = Studio::new(&emulator, &format!("{FAST_UPLOAD}{LISTEN_ANY_PORT}"), QUICK);
    let agent = studio.start();
    let port = listener_port(&studio).await;
    // More silent connections than the listener serves at once, and clients that ask for the
    // page and never read it.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    for _ in 0..4 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        for _ in 0..50 {
            if stream.write_all(head.as_bytes()).await.is_err() {
                break;
            }
        }
        stalled.push(stream);
    }
    for i in 0..3 {
        write_file(
            &studio.inbox.join(format!("during{i}.mov")),
            MIB + i,
            i as u64,
        );
    }
    eventually(WAIT, "the files in done/ while clients stall", || {
        (0..3).all(|i| arrived(&studio.done().join(format!("during{i}.mov"))))
    })
    .await;
    // Once they go away, others are served at once.
    drop(stalled);
    let started = std::time::Instant::now();
    let reply = get(port, "/healthz").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    let (status, _) = stop(agent).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_is_taken_is_logged_and_listened_on_once_free_while_uploads_go_on() {
    let emulator = emulator(|_| {}).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let studio = Studio::new(
        &emulator,
        &format!("{FAST_UPLOAD}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        QUICK,
    );
    write_file(&studio.inbox.join("clip.mov"), MIB, 5);
    let agent = studio.start();
    eventually(WAIT, "clip.mov in done/", || {
        arrived(&studio.done().join("clip.mov"))
    })
    .await;
    let log = studio.log_text();
    assert!(
        log.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([http] listen)"
        )),
        "{log}"
    );
    drop(taken);
    eventually(WAIT, "the listener once the port is free", || {
        studio.log_text().contains("at last")
    })
    .await;
    let reply = get(port, "/healthz").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, _) = stop(agent).await;
    assert!(status.success());
}
