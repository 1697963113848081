//! Installing it like a real tool (issue 14): `--version` with the commit and the build date,
//! shell completions and the man page, the journal (priorities, no timestamp of our own, no copy
//! in files), a start-up failure under launchd (stderr on /dev/null) written to the daily files,
//! proxies through a real one (Debian `tinyproxy`, started here on 127.0.0.1), a machine without
//! a CA bundle, and the package's files (Cargo.toml's [package.metadata.deb], the maintainer
//! scripts, the starter config, the Homebrew formula). Installing the package and booting it
//! under systemd change the machine, so they are `.ci/run`'s (packaging/tests/), not here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{self, hotfolder, run, text};

/// The build script's date arithmetic, tested here (a build script has no tests of its own).
#[allow(dead_code)]
#[path = "../../build.rs"]
mod build_script;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap()
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hotfolder"));
    command
        .env_remove("HOTFOLDER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM");
    command
}

fn found(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// --version

#[test]
fn version_names_the_commit_and_the_build_date() {
    let output = binary().arg("--version").output().unwrap();
    assert!(output.status.success());
    let line = text(&output.stdout);
    let expected_start = format!("hotfolder {} (", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected_start), "{line}");
    let date = line
        .split("built ")
        .nth(1)
        .and_then(|rest| rest.get(..10))
        .unwrap_or_else(|| panic!("no build date: {line}"));
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{date}"
    );
    // In a git checkout the commit is the one built; from a tarball there is none to show.
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| text(&o.stdout).trim().to_owned())
    };
    let checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).ok()
    });
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) if checkout => {
            assert!(
                line.contains(&format!("commit {head}")),
                "{line} (HEAD {head})"
            );
        }
        _ => {
            eprintln!("not a git checkout of its own (or no git): no commit to show");
            assert!(!line.contains("commit"), "{line}");
        }
    }
    // `-V` says the same: scripts use either.
    let short = binary().arg("-V").output().unwrap();
    assert_eq!(text(&short.stdout), line);
}

#[test]
fn build_dates_are_calendar_dates() {
    assert_eq!(build_script::civil_date(0), "1970-01-01");
    assert_eq!(build_script::civil_date(86_399), "1970-01-01");
    assert_eq!(build_script::civil_date(951_782_400), "2000-02-29");
    assert_eq!(build_script::civil_date(1_709_164_800), "2024-02-29");
    assert_eq!(build_script::civil_date(1_735_689_599), "2024-12-31");
    assert_eq!(build_script::civil_date(4_107_542_400), "2100-03-01");
    assert_eq!(build_script::civil_date(-1), "1969-12-31");
}

// ---------------------------------------------------------------------------------------------
// Completions and the man page

#[test]
fn completions_are_written_for_each_shell_and_bash_loads_them() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef hotfolder"),
        ("fish", "complete -c hotfolder"),
    ] {
        let output = binary().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in\n{script}"
        );
        // Every command is offered.
        for command in ["run", "upload", "status", "completions", "manpage"] {
            assert!(
                script.contains(command),
                "{shell}: {command} is not completed"
            );
        }
    }
    let unknown = binary().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    if !found("bash") {
        eprintln!("bash not found: the bash completions are not loaded");
        return;
    }
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p hotfolder",
            env!("CARGO_BIN_EXE_hotfolder")
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    assert!(
        text(&loaded.stdout).contains("hotfolder"),
        "{}",
        text(&loaded.stdout)
    );
    assert!(text(&loaded.stderr).is_empty(), "{}", text(&loaded.stderr));
    // The other shells check their syntax when they are here.
    for (shell, check) in [("zsh", "-n"), ("fish", "--no-execute")] {
        if !found(shell) {
            eprintln!("{shell} not found: its completions are checked as text only");
            continue;
        }
        let script = binary().args(["completions", shell]).output().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("completion");
        std::fs::write(&file, &script.stdout).unwrap();
        let checked = Command::new(shell).arg(check).arg(&file).output().unwrap();
        assert!(
            checked.status.success(),
            "{shell}: {}",
            text(&checked.stderr)
        );
    }
}

#[test]
fn the_man_page_lists_every_command_and_renders() {
    let output = binary().arg("manpage").output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let page = text(&output.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH hotfolder 1"),
        "{page}"
    );
    assert!(page.contains(".TH hotfolder 1"), "no title line");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section}");
    }
    for command in [
        "run",
        "upload",
        "check",
        "status",
        "scan",
        "failed",
        "retry",
        "init",
        "demo",
        "emulator",
        "completions",
        "manpage",
        "help",
    ] {
        // Listed, and described in a section of its own (no page per command).
        assert!(
            page.contains(&format!("\nhotfolder {command}\n")),
            "the page does not list {command}"
        );
        if command != "help" {
            assert!(
                page.contains(&format!(".SH \"HOTFOLDER {}\"", command.to_uppercase())),
                "no section for {command}"
            );
        }
    }
    if !found("man") || !found("groff") {
        eprintln!("man or groff not found: the page is checked as text only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hotfolder.1");
    std::fs::write(&file, &output.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    // Bold and underlined as a terminal shows them (a character, backspace, the character
    // again): the plain text is what is left when each backspace takes the character before it.
    let mut shown = String::new();
    for c in text(&rendered.stdout).chars() {
        if c == '\u{8}' {
            shown.pop();
        } else {
            shown.push(c);
        }
    }
    for heading in [
        "NAME",
        "SUBCOMMANDS",
        "HOTFOLDER RUN",
        "HOTFOLDER COMPLETIONS",
    ] {
        assert!(shown.contains(heading), "no {heading} in\n{shown}");
    }
    assert!(
        text(&rendered.stderr).is_empty(),
        "{}",
        text(&rendered.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The journal

/// A config in `dir` whose logs go wherever the defaults say (no [log] dir), with one folder.
fn config_without_log_dir(dir: &Path, emulator: &hotfolder::Emulator, log: &str) -> PathBuf {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[state]\ndir = \"{}\"\n{log}\n[[folder]]\npath = \"{}\"\n",
            util::account_toml(emulator, "keycloak"),
            dir.join("state").display(),
            inbox.display()
        ),
    )
    .unwrap();
    path
}

/// `JOURNAL_STREAM` for a file: its device and inode, as systemd sets them for a stream.
fn journal_stream_of(file: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// `hotfolder run` with stderr on `stderr` (a file) and `JOURNAL_STREAM` naming it, until it
/// logs that it is ready; then SIGTERM. Returns what it wrote on stderr.
async fn run_under_journal_stream(config: &Path, home: &Path, stderr: &Path) -> String {
    let file = std::fs::File::create(stderr).unwrap();
    let child = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("JOURNAL_STREAM", journal_stream_of(stderr))
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    util::eventually(Duration::from_secs(30), "the agent ready", || {
        std::fs::read_to_string(stderr).is_ok_and(|t| t.contains("ready:"))
    })
    .await;
    let (status, _) = util::stop(child).await;
    assert!(status.success(), "{status}");
    std::fs::read_to_string(stderr).unwrap()
}

/// Where the journal's native socket is; while it exists, events go there, not to stderr.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_journal_lines_carry_priorities_and_no_copy_goes_to_files() {
    if Path::new(JOURNAL_SOCKET).exists() {
        hotfolder::test_skipped(format_args!(
            "{JOURNAL_SOCKET} exists, so events go to this machine's journal natively \
             (packaging/tests/nspawn.sh checks that under a real systemd)"
        ));
        return;
    }
    let emulator = util::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let config = config_without_log_dir(dir.path(), &emulator, "");
    let stderr = dir.path().join("journal-stream");
    let written = run_under_journal_stream(&config, &home, &stderr).await;
    let lines: Vec<&str> = written.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let priority = line.get(..3).unwrap_or_default();
        assert!(
            matches!(priority, "<3>" | "<4>" | "<6>" | "<7>"),
            "a line without its priority: {line}"
        );
        // The journal stamps each line itself: a time of our own would be a second one.
        assert!(
            !line[3..].starts_with(|c: char| c.is_ascii_digit()),
            "a line with a timestamp: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("<6>ready:")),
        "{written}"
    );
    // No [log] dir and no $LOGS_DIRECTORY: the journal is the log, no files are written.
    assert_eq!(
        util::files_under(&home),
        Vec::<String>::new(),
        "files were written beside the journal"
    );

    // With [log] dir set, the daily files are written as well, with their own timestamps.
    let logs = dir.path().join("logs");
    let config = config_without_log_dir(
        dir.path(),
        &emulator,
        &format!("[log]\ndir = \"{}\"\n", logs.display()),
    );
    run_under_journal_stream(&config, &home, &stderr).await;
    let files = util::files_under(&logs);
    assert_eq!(files.len(), 1, "{files:?}");
    // The name the package's purge deletes (packaging/deb/postrm), as really written.
    let purged = purge_patterns(&read("packaging/deb/postrm"))
        .into_iter()
        .find(|(dir, _)| dir == "/var/log/hotfolder")
        .map(|(_, patterns)| patterns)
        .unwrap_or_default();
    assert!(sh_matches(&files[0], &purged), "{files:?} vs {purged:?}");
    let file_text = std::fs::read_to_string(logs.join(&files[0])).unwrap();
    assert!(file_text.contains("ready:"), "{file_text}");
    assert!(
        file_text.starts_with(|c: char| c.is_ascii_digit()),
        "{file_text}"
    );
    emulator.shutdown().await;
}

/// A journal of the test's own: binds a datagram socket, as journald's, and collects each entry
/// (its `KEY=value` lines, or the length-prefixed form for values with a line break) until
/// dropped.
struct FakeJournal {
    path: PathBuf,
    entries: std::sync::Arc<std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeJournal {
    fn bind(dir: &Path) -> FakeJournal {
        use std::sync::atomic::Ordering;
        let path = dir.join("journal.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::spawn({
            let entries = entries.clone();
            let done = done.clone();
            move || {
                let mut buffer = vec![0u8; 1 << 20];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buffer) {
                        let entry = FakeJournal::parse(&buffer[..n]);
                        entries.lock().unwrap().push(entry);
                    }
                }
            }
        });
        FakeJournal {
            path,
            entries,
            done,
        }
    }

    fn parse(mut data: &[u8]) -> std::collections::HashMap<String, String> {
        let mut entry = std::collections::HashMap::new();
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let line = &data[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                entry.insert(text(&line[..eq]), text(&line[eq + 1..]));
                data = &data[end + 1..];
            } else {
                let rest = &data[end + 1..];
                let size = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                entry.insert(text(line), text(&rest[8..8 + size]));
                data = &rest[8 + size + 1..];
            }
        }
        entry
    }

    fn entries(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.entries.lock().unwrap().clone()
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `journalctl -u hotfolder FILE=clip.mov` is one file's story (packaging/README.md): every
/// line about it carries the same FILE, relative to its folder, from "complete" to the move
/// into done/, with JOB and VIDEO_ID where they are known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_files_journal_entries_carry_its_name_from_complete_to_done() {
    let emulator = util::emulator(|_| {}).await;
    let studio = util::Studio::new(&emulator, util::FAST_UPLOAD, "stable_for = \"300ms\"");
    let journal = FakeJournal::bind(studio.dir.path());
    let stderr = studio.dir.path().join("journal-stream");
    let stream = std::fs::File::create(&stderr).unwrap();
    let agent = hotfolder()
        .arg("run")
        .arg("--config")
        .arg(&studio.config)
        .env("JOURNAL_STREAM", journal_stream_of(&stderr))
        .env("HOTFOLDER_TEST_JOURNAL_SOCKET", &journal.path)
        .stdout(Stdio::null())
        .stderr(stream)
        .spawn()
        .unwrap();
    let path = studio.inbox.join("clip.mov");
    util::write_file(&path, 2 * 1024 * 1024 + 5, 7);
    let done = studio.done().join("clip.mov");
    util::eventually(Duration::from_secs(30), "clip.mov in done/", || {
        util::arrived(&done)
    })
    .await;
    let video_id = util::sidecar(&done)["video_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The move's line is logged right after the sidecar is written.
    util::eventually(Duration::from_secs(10), "the move in the journal", || {
        journal
            .entries()
            .iter()
            .any(|e| e.get("MESSAGE").is_some_and(|m| m.starts_with("done → ")))
    })
    .await;
    let (status, _) = util::stop(agent).await;
    assert!(status.success(), "{status}");

    let entries = journal.entries();
    let all: Vec<&String> = entries.iter().filter_map(|e| e.get("MESSAGE")).collect();
    for entry in &entries {
        if let Some(file) = entry.get("FILE") {
            assert!(
                !file.starts_with('/'),
                "FILE as an absolute path: {entry:?}"
            );
        }
    }
    let story: Vec<&std::collections::HashMap<String, String>> = entries
        .iter()
        .filter(|e| e.get("FILE").map(String::as_str) == Some("clip.mov"))
        .collect();
    let find = |start: &str| {
        story
            .iter()
            .find(|e| e.get("MESSAGE").is_some_and(|m| m.starts_with(start)))
            .unwrap_or_else(|| panic!("no {start:?} line with FILE=clip.mov among {all:#?}"))
    };
    find("complete: ");
    let created = find("created: video ");
    assert_eq!(created.get("VIDEO_ID"), Some(&video_id), "{created:?}");
    let uploaded = find("uploaded (");
    assert_eq!(uploaded.get("VIDEO_ID"), Some(&video_id), "{uploaded:?}");
    let moved = find("done → ");
    assert_eq!(moved.get("VIDEO_ID"), Some(&video_id), "{moved:?}");
    assert_eq!(moved.get("PRIORITY").map(String::as_str), Some("6"));
    assert!(moved.contains_key("JOB"), "{moved:?}");
    assert_eq!(created.get("JOB"), moved.get("JOB"));
    emulator.shutdown().await;
}

#[test]
fn under_the_journal_the_error_a_command_ends_with_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Two unknown keys: a message of several lines, one problem each.
    std::fs::write(
        &config,
        "[account]\nusername = \"x\"\nbogus = 1\nworse = 2\n",
    )
    .unwrap();
    let stderr = dir.path().join("journal-stream");
    let file = std::fs::File::create(&stderr).unwrap();
    let status = binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", journal_stream_of(&stderr))
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let written = std::fs::read_to_string(&stderr).unwrap();
    assert!(written.starts_with("<3>hotfolder: "), "{written}");
    // The journal makes each line an entry: every one is an error, or `journalctl -p err`
    // shows the first problem and hides the rest.
    assert!(
        written.contains("bogus") && written.contains("worse"),
        "{written}"
    );
    assert!(written.lines().count() > 1, "{written}");
    for line in written.lines() {
        assert!(
            line.starts_with("<3>"),
            "a line without its priority: {line}"
        );
    }
    // Elsewhere (the variable names another stream) the line is as it always was.
    let file = std::fs::File::create(&stderr).unwrap();
    binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", "1:1")
        .stderr(file)
        .status()
        .unwrap();
    let written = std::fs::read_to_string(&stderr).unwrap();
    assert!(written.starts_with("hotfolder: "), "{written}");
}

/// launchd starts a LaunchAgent with stderr on /dev/null (the plist names no file, so none
/// grows unrotated): a config that stops `run` from starting is written to the daily files.
#[test]
fn a_start_failure_with_stderr_on_dev_null_is_written_to_the_daily_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[account]\nusername = \"x\"\nbogus = 1\n").unwrap();
    let data = dir.path().join("data");
    let status = binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", &data)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let logs = data.join("hotfolder/logs");
    let files = util::files_under(&logs);
    assert_eq!(files.len(), 1, "{files:?} in {}", logs.display());
    let written = std::fs::read_to_string(logs.join(&files[0])).unwrap();
    assert!(written.contains("hotfolder could not start"), "{written}");
    assert!(
        written.contains("bogus"),
        "the reason is missing: {written}"
    );

    // With stderr going somewhere, that is where it goes, and no file is made.
    let elsewhere = dir.path().join("elsewhere");
    let output = binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", &elsewhere)
        .output()
        .unwrap();
    assert!(text(&output.stderr).contains("bogus"));
    assert!(!elsewhere.exists());
}

// ---------------------------------------------------------------------------------------------
// Proxies

/// Debian's tinyproxy on a free port of 127.0.0.1, in the foreground, logging every request to
/// a file of its own; stopped when dropped.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Option<Tinyproxy> {
        let binary = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        // No ConnectPort lines: CONNECT to any port (the test's servers have random ones).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\n\
                 LogLevel Info\nMaxClients 20\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let proxy = Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tinyproxy did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(proxy)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hotfolder upload` of one generated export with the proxy variables in `env`.
async fn upload_through(
    config: &Path,
    file: &Path,
    env: &[(&str, String)],
) -> std::process::Output {
    let mut command = hotfolder();
    command
        .arg("upload")
        .arg("--config")
        .arg(config)
        .arg(file)
        // The test's own environment must not decide which way the requests go.
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_proxy_the_environment_names() {
    let Some(proxy) = Tinyproxy::start() else {
        hotfolder::test_skipped(format_args!(
            "tinyproxy is not installed (Debian tinyproxy; .ci/run installs it)"
        ));
        return;
    };
    let emulator = util::emulator(|_| {}).await;
    let port = emulator.api_url().port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = util::write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            util::account_toml(&emulator, "keycloak"),
            util::FAST_UPLOAD
        ),
    );
    let first = dir.path().join("first.mp4");
    util::write_file(&first, 2 * util::MIB, 1);

    // HTTP_PROXY: every request to the (http://) platform goes through the proxy.
    let output = upload_through(&config, &first, &[("HTTP_PROXY", proxy.url())]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = proxy.log();
    let through = log
        .lines()
        .filter(|l| l.contains(&format!("127.0.0.1:{port}/")))
        .count();
    assert!(
        through >= 3,
        "the login, the create and the chunks should pass the proxy; its log:\n{log}"
    );
    assert_eq!(emulator.videos().len(), 1);

    // NO_PROXY: the same requests bypass it.
    let second = dir.path().join("second.mp4");
    util::write_file(&second, 2 * util::MIB, 2);
    let before = proxy.log().len();
    let output = upload_through(
        &config,
        &second,
        &[
            ("HTTP_PROXY", proxy.url()),
            ("NO_PROXY", "127.0.0.1".to_owned()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let after = proxy.log();
    assert!(
        !after[before..].contains(&format!("127.0.0.1:{port}")),
        "NO_PROXY=127.0.0.1 still went through the proxy:\n{}",
        &after[before..]
    );
    assert_eq!(emulator.videos().len(), 2);

    // HTTPS_PROXY: an https:// platform is reached with CONNECT through the proxy. Nothing
    // answers TLS behind it here, so the upload fails; the proxy's log shows the way it took.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let https_port = closed.local_addr().unwrap().port();
    drop(closed);
    let https_config = dir.path().join("https.toml");
    std::fs::write(
        &https_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(
                &emulator.api_url().to_string(),
                &format!("https://127.0.0.1:{https_port}/api/"),
            )
            .replace(
                &emulator.token_url().to_string(),
                &format!("https://127.0.0.1:{https_port}/token"),
            )
            .replace("max_attempts = 30", "max_attempts = 1"),
    )
    .unwrap();
    let output = upload_through(&https_config, &second, &[("HTTPS_PROXY", proxy.url())]).await;
    assert!(!output.status.success());
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{https_port}")),
        "no CONNECT through the proxy:\n{}",
        proxy.log()
    );
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A machine without a CA bundle (a minimal root without ca-certificates)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_certificates_http_works_and_https_says_what_is_missing() {
    let emulator = util::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // An empty bundle where the system's would be: no CA certificate at all.
    let empty = dir.path().join("no-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let config = util::write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            util::account_toml(&emulator, "keycloak"),
            util::FAST_UPLOAD
        ),
    );
    let file = dir.path().join("clip.mp4");
    util::write_file(&file, util::MIB, 3);
    let no_dir = dir.path().join("no-ca");
    std::fs::create_dir(&no_dir).unwrap();
    // Both: the system's bundle is found through either (and the test's environment may name
    // them).
    let no_ca = [
        ("SSL_CERT_FILE", empty.display().to_string()),
        ("SSL_CERT_DIR", no_dir.display().to_string()),
    ];
    let output = upload_through(&config, &file, &no_ca).await;
    assert!(
        output.status.success(),
        "an http:// platform needs no CA: {}",
        text(&output.stderr)
    );

    let https_config = dir.path().join("https.toml");
    std::fs::write(
        &https_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("http://127.0.0.1", "https://127.0.0.1"),
    )
    .unwrap();
    let output = upload_through(&https_config, &file, &no_ca).await;
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(
        said.contains("no CA certificates") && said.contains("ca-certificates"),
        "{said}"
    );
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The Debian package's files

fn manifest() -> toml::Table {
    read("Cargo.toml").parse().unwrap()
}

fn deb_metadata() -> toml::Table {
    manifest()["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

#[test]
fn the_package_ships_the_unit_disabled_and_every_file_it_names() {
    let deb = deb_metadata();
    let units = deb["systemd-units"].as_table().unwrap();
    assert_eq!(
        units["enable"].as_bool(),
        Some(false),
        "enabled before its config is edited, the unit would exit 2 in a loop"
    );
    let unit_dir = units["unit-scripts"].as_str().unwrap();
    assert!(repo_file(unit_dir).join("hotfolder.service").is_file());
    let depends = deb["depends"].as_str().unwrap();
    for needed in ["$auto", "ca-certificates", "procps", "adduser", "passwd"] {
        assert!(
            depends.contains(needed),
            "depends lacks {needed}: {depends}"
        );
    }
    let build_script = read("packaging/deb/build.sh");
    let mut destinations = Vec::new();
    for asset in deb["assets"].as_array().unwrap() {
        let asset = asset.as_array().unwrap();
        let (source, dest, mode) = (
            asset[0].as_str().unwrap(),
            asset[1].as_str().unwrap(),
            asset[2].as_str().unwrap(),
        );
        destinations.push(dest.to_owned());
        match source.strip_prefix("target/release/") {
            // Made by the build: the binary, or a file build.sh writes.
            Some("hotfolder") => {}
            Some(made) => {
                let name = Path::new(made).file_name().unwrap().to_str().unwrap();
                assert!(
                    build_script.contains(&format!("$assets/{name}\"")),
                    "build.sh does not write {made}"
                );
            }
            None => assert!(repo_file(source).is_file(), "{source} is missing"),
        }
        assert!(matches!(mode, "644" | "640" | "755"), "{dest}: mode {mode}");
    }
    for wanted in [
        "usr/bin/",
        "etc/hotfolder/config.toml",
        "usr/share/bash-completion/completions/hotfolder",
        "usr/share/zsh/vendor-completions/_hotfolder",
        "usr/share/fish/vendor_completions.d/hotfolder.fish",
        "usr/share/man/man1/hotfolder.1.gz",
        "usr/lib/systemd/user/hotfolder.service",
    ] {
        assert!(
            destinations.iter().any(|d| d == wanted),
            "the package has no {wanted}"
        );
    }
}

#[test]
fn maintainer_scripts_are_valid_and_purge_deletes_only_what_hotfolder_made() {
    let dir = repo_file("packaging/deb");
    for script in ["postinst", "postrm"] {
        let path = dir.join(script);
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            body.starts_with("#!/bin/sh\n"),
            "{script}: Debian runs it with sh"
        );
        assert!(
            body.contains("#DEBHELPER#"),
            "{script}: cargo-deb adds the unit's snippets there"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let checked = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            checked.status.success(),
            "{script}: {}",
            text(&checked.stderr)
        );
        if found("shellcheck") {
            let checked = Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                checked.status.success(),
                "{script}: {}",
                text(&checked.stdout)
            );
        }
    }
    let postrm = read("packaging/deb/postrm");
    // A watched folder, done/ or failed/ may live under one of hotfolder's directories.
    assert!(!postrm.contains("rm -r"), "postrm removes a whole tree");
    for dir in ["/etc/hotfolder", "/var/lib/hotfolder", "/var/log/hotfolder"] {
        assert!(
            postrm.contains(&format!("remove_ours {dir}")),
            "purge leaves {dir}"
        );
    }
    // The names purge deletes are the names the agent writes, taken from the code, and no
    // others: an admin's files beside them stay.
    let sqlite = |name: &str| {
        std::iter::once(name.to_owned())
            .chain(
                hotfolder::SQLITE_SIDE_SUFFIXES
                    .iter()
                    .map(|suffix| format!("{name}{suffix}")),
            )
            .collect::<Vec<_>>()
    };
    let mut state_names = sqlite(hotfolder::DB_FILE_NAME);
    state_names.extend(sqlite(hotfolder::MANUAL_DB_FILE_NAME));
    state_names.push(hotfolder::LOCK_FILE_NAME.to_owned());
    state_names.push(hotfolder::RETRY_LOCK_FILE_NAME.to_owned());
    state_names.push(hotfolder::AGENT_ID_FILE_NAME.to_owned());
    let log_names = [
        format!(
            "{}.2026-12-02.{}",
            hotfolder::LOG_FILE_PREFIX,
            hotfolder::LOG_FILE_SUFFIX
        ),
        format!(
            "{}.1999-01-31.{}",
            hotfolder::LOG_FILE_PREFIX,
            hotfolder::LOG_FILE_SUFFIX
        ),
    ];
    let admins = [
        "hotfolder.catalog.txt",
        "hotfolder.log.txt",
        "hotfolder.notes.log",
        "mine.lock",
        "jobs.sqlite3.bak",
        "jobs.sqlite3-old",
        "uploads.sqlite3.copy",
        "clip.mov",
    ];
    let patterns = purge_patterns(&postrm);
    for (dir, ours) in [
        ("/var/lib/hotfolder", state_names.as_slice()),
        ("/var/log/hotfolder", log_names.as_slice()),
    ] {
        let patterns = patterns
            .iter()
            .find(|(d, _)| d == dir)
            .map(|(_, p)| p.as_slice())
            .unwrap_or_else(|| panic!("purge leaves {dir}"));
        for name in ours {
            assert!(sh_matches(name, patterns), "purge would leave {dir}/{name}");
        }
        for name in admins {
            assert!(
                !sh_matches(name, patterns),
                "purge would delete an admin's {dir}/{name}"
            );
        }
    }
}

/// Each `remove_ours DIR PATTERN...` call in postrm (backslash-continued lines joined), with
/// its patterns unquoted.
fn purge_patterns(postrm: &str) -> Vec<(String, Vec<String>)> {
    postrm
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("remove_ours "))
        .map(|call| {
            let mut words = call
                .split_whitespace()
                .map(|w| w.trim_matches('\'').to_owned());
            let dir = words.next().unwrap_or_default();
            (dir, words.collect())
        })
        .collect()
}

/// Whether `name` matches one of the shell patterns, as sh itself matches them.
fn sh_matches(name: &str, patterns: &[String]) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("n=$1; shift; for p; do case $n in $p) exit 0;; esac; done; exit 1")
        .arg("sh")
        .arg(name)
        .args(patterns)
        .status()
        .unwrap()
        .success()
}

/// The unit's `SetCredential=password:\n` stands in while /etc/hotfolder/password is missing
/// (systemd would otherwise stop with 243/CREDENTIALS): the agent refuses the empty password
/// with exit 2 and says which file to create.
#[test]
fn an_empty_credential_names_the_file_to_create() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("password"), "\n").unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[account]\nusername = \"x\"\npassword_file = \"{}\"\nvideo_manager_id = 1\n\
             [state]\ndir = \"{}\"\n[[folder]]\npath = \"{}\"\n",
            credentials.join("password").display(),
            dir.path().join("state").display(),
            inbox.display()
        ),
    )
    .unwrap();
    let output = binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is empty") && stderr.contains("/etc/hotfolder/password"),
        "{stderr}"
    );
    // Outside systemd an empty file is just that.
    let output = binary()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is empty") && !stderr.contains("LoadCredential"),
        "{stderr}"
    );
}

#[test]
fn the_packaged_config_is_accepted_and_reads_the_credential_the_unit_loads() {
    let shipped = read("packaging/deb/config.toml");
    let unit = read("packaging/systemd/hotfolder.service");
    assert!(unit.contains("LoadCredential=password:/etc/hotfolder/password"));
    assert!(shipped.contains("password_file = \"/run/credentials/hotfolder.service/password\""));
    assert!(unit.contains("StateDirectory=hotfolder"));
    assert!(shipped.contains("dir = \"/var/lib/hotfolder\""));
    assert!(unit.contains("ReadWritePaths=-/srv/exports"));
    assert!(shipped.contains("path = \"/srv/exports\""));
    // Accepted by hotfolder once the paths exist (moved into a temp dir).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("srv/exports")).unwrap();
    std::fs::create_dir_all(root.join("credentials")).unwrap();
    std::fs::write(root.join("credentials/password"), "secret\n").unwrap();
    let text = shipped
        .replace(
            "/run/credentials/hotfolder.service/password",
            &root.join("credentials/password").display().to_string(),
        )
        .replace("\"/srv/", &format!("\"{}/srv/", root.display()))
        .replace("\"/var/", &format!("\"{}/var/", root.display()));
    let settings = hotfolder::Settings::from_toml_str(&text, &root.join("config.toml"))
        .unwrap_or_else(|err| panic!("packaging/deb/config.toml is refused:\n{err}"));
    assert_eq!(settings.folders.len(), 1);
}

#[test]
fn the_test_scripts_are_valid_shell() {
    for script in [
        "packaging/deb/build.sh",
        "packaging/tests/deb.sh",
        "packaging/tests/nspawn.sh",
        ".ci/run",
    ] {
        let checked = Command::new("bash")
            .arg("-n")
            .arg(repo_file(script))
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{script}: {}",
            text(&checked.stderr)
        );
        if found("shellcheck") {
            let checked = Command::new("shellcheck")
                .arg(repo_file(script))
                .output()
                .unwrap();
            assert!(
                checked.status.success(),
                "{script}: {}",
                text(&checked.stdout)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Homebrew formula, read structurally (Ruby is not needed to build or test hotfolder)

/// The formula's lines outside heredocs, trimmed, without comments.
fn formula_code(formula: &str) -> Vec<String> {
    let mut code = Vec::new();
    let mut heredoc_end: Option<String> = None;
    for line in formula.lines() {
        let trimmed = line.trim();
        if let Some(end) = &heredoc_end {
            if trimmed == end {
                heredoc_end = None;
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some((_, rest)) = trimmed.split_once("<<~") {
            let end: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            heredoc_end = Some(end);
        }
        code.push(trimmed.to_owned());
    }
    assert!(heredoc_end.is_none(), "a heredoc is never closed");
    code
}

/// The lines of the block that `opener` starts (`def install`, `service do`), up to its `end`.
fn formula_block(code: &[String], opener: &str) -> Vec<String> {
    let start = code
        .iter()
        .position(|l| l.starts_with(opener))
        .unwrap_or_else(|| panic!("no `{opener}` block"));
    let mut depth = 0;
    for (offset, line) in code[start..].iter().enumerate() {
        depth += opens(line);
        if line == "end" {
            depth -= 1;
            if depth == 0 {
                return code[start + 1..start + offset].to_vec();
            }
        }
    }
    panic!("`{opener}` is never closed")
}

/// How many blocks a line opens: `class`, `def`, `do` at its end, or a statement `if`/`unless`.
fn opens(line: &str) -> i32 {
    let first = line.split_whitespace().next().unwrap_or("");
    let keyword = matches!(first, "class" | "def" | "if" | "unless" | "case" | "begin");
    let block = line.ends_with(" do") || line.contains(" do |");
    i32::from(keyword || block)
}

#[test]
fn the_homebrew_formula_builds_from_source_names_the_plist_and_tests_the_version() {
    let formula = read("packaging/homebrew/hotfolder.rb");
    let code = formula_code(&formula);
    // Balanced: every block closed, nothing closed twice, the class around everything.
    let mut depth = 0;
    for line in &code {
        depth += opens(line);
        if line == "end" {
            depth -= 1;
            assert!(depth >= 0, "an `end` too many");
        }
    }
    assert_eq!(depth, 0, "a block is never closed");
    assert_eq!(code[0], "class Hotfolder < Formula");
    for stanza in ["desc \"", "homepage \"", "url \"", "sha256 \"", "license "] {
        assert!(
            code.iter().any(|l| l.starts_with(stanza)),
            "no {stanza} stanza"
        );
    }
    let sha = code
        .iter()
        .find_map(|l| l.strip_prefix("sha256 \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(code.contains(&"depends_on \"rust\" => :build".to_owned()));

    let install = formula_block(&code, "def install");
    assert!(
        install
            .iter()
            .any(|l| l.contains("\"cargo\", \"install\"") && l.contains("std_cargo_args")),
        "not built from source with cargo: {install:?}"
    );
    assert!(
        install
            .iter()
            .any(|l| l.contains("generate_completions_from_executable")
                && l.contains("\"completions\"")),
        "no completions: {install:?}"
    );
    assert!(
        install.iter().any(|l| l.contains("\"manpage\"")),
        "no man page"
    );

    // The LaunchAgent has the plist's label, so `brew services` and the hand install agree.
    let plist = Path::new("packaging/launchd/com.movingimage.hotfolder.plist");
    let label = plist.file_stem().unwrap().to_str().unwrap();
    assert!(read(plist.to_str().unwrap()).contains(&format!("<string>{label}</string>")));
    let service = formula_block(&code, "service do");
    assert!(
        service.contains(&format!("name macos: \"{label}\"")),
        "the service is not named {label}: {service:?}"
    );
    assert!(service.contains(&"run [opt_bin/\"hotfolder\", \"run\"]".to_owned()));
    assert!(service.contains(&"keep_alive successful_exit: false".to_owned()));
    assert!(
        !service
            .iter()
            .any(|l| l.starts_with("log_path") || l.starts_with("error_log_path")),
        "a log file launchd never rotates"
    );

    let test = formula_block(&code, "test do");
    assert!(
        test.iter()
            .any(|l| l.contains("#{bin}/hotfolder --version") && l.contains("version")),
        "the test block does not run --version: {test:?}"
    );

    if found("ruby") {
        let checked = Command::new("ruby")
            .arg("-c")
            .arg(repo_file("packaging/homebrew/hotfolder.rb"))
            .output()
            .unwrap();
        assert!(checked.status.success(), "{}", text(&checked.stderr));
    } else {
        eprintln!("ruby not found: the formula is checked structurally only");
    }
}

#[test]
fn the_formula_reader_catches_unbalanced_blocks() {
    let broken = "class Hotfolder < Formula\n  def install\n    system \"cargo\"\nend\n";
    let code = formula_code(broken);
    let depth: i32 = code.iter().map(|l| opens(l) - i32::from(l == "end")).sum();
    assert_eq!(depth, 1);
    let heredoc =
        "class A < Formula\n  def caveats\n    <<~EOS\n      if end do\n    EOS\n  end\nend\n";
    let code = formula_code(heredoc);
    let depth: i32 = code.iter().map(|l| opens(l) - i32::from(l == "end")).sum();
    assert_eq!(depth, 0, "{code:?}");
}
