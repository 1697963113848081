//! Shared test harness: an emulator on 127.0.0.1:0, config files pointing at it, generated
//! content, and the real `hotfolder` binary. A module of the integration binary; the soak
//! includes it too (`#[path]` in `tests/soak.rs`).

pub mod loopback_share;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hotfolder::{Emulator, EmulatorOptions, Faults};
use sha2::{Digest, Sha256};

pub const MIB: usize = 1024 * 1024;

pub const USER: &str = "editor@example.com";
pub const PASSWORD: &str = "s3cret-Pa55word-never-logged";

/// Starts the emulator with the test credentials and `tweak` applied to the options.
pub async fn emulator(tweak: impl FnOnce(&mut EmulatorOptions)) -> Emulator {
    let mut options = EmulatorOptions {
        username: USER.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    tweak(&mut options);
    start_emulator(options).await
}

/// Starts the emulator on a free port of 127.0.0.1 with `options` as they are (the emulator's
/// own defaults log in `demo` with `demo-password`).
pub async fn start_emulator(options: EmulatorOptions) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("emulator starts")
}

/// The `[account]` table for `emulator`, with an inline password.
pub fn account_toml(emulator: &Emulator, auth: &str) -> String {
    format!(
        "[account]\napi_url = \"{}\"\ntoken_url = \"{}\"\nauth = \"{auth}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nvideo_manager_id = 12345\n",
        emulator.api_url(),
        emulator.token_url()
    )
}

/// Every request waits 60 ms: slow enough to act in the middle of an upload. For `emulator`.
pub fn slow_server(options: &mut EmulatorOptions) {
    options.faults = Faults {
        seed: 9,
        stall_rate: 1.0,
        stall: Duration::from_millis(60),
        ..Default::default()
    };
}

/// Fast retries for tests: delays capped at 20 ms, and a lost create-video answer looked up
/// for 300 ms (instead of 30 s) before the video is created again.
pub const FAST_UPLOAD: &str = "[upload]\nchunk_size = \"1 MiB\"\nparallel = 2\nmax_attempts = 30\nbackoff_max = \"20ms\"\nrequest_timeout = \"2s\"\napi_requests_per_minute = 6000\nlookup_wait = \"300ms\"\n";

/// Writes `config.toml` in `dir` (state and log dirs inside `dir` too) and returns its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "{body}\n[state]\ndir = \"{}\"\n\n[log]\ndir = \"{}\"\n",
        dir.join("state").display(),
        dir.join("logs").display()
    );
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce: a chunk's body, or the
/// inside of a file that is not an export. An export to be uploaded is made by [`export`].
pub fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// The bytes of a finished export named like `path`, exactly `size` long: a whole MP4/MOV
/// container or MXF file for those suffixes (the agent checks the container before it queues
/// a file), seeded pseudo-random bytes for any other name. Size 0 is an empty file.
pub fn export(path: impl AsRef<Path>, size: usize, seed: u64) -> Vec<u8> {
    if size == 0 {
        return Vec::new();
    }
    hotfolder::SampleVideo::for_path(path.as_ref(), size as u64, seed)
        .unwrap_or_else(|err| panic!("{}: {err}", path.as_ref().display()))
        .to_vec()
}

/// Writes a finished export (see [`export`]) to `path`, making its folders; returns its sha256.
pub fn write_file(path: &Path, size: usize, seed: u64) -> String {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let data = export(path, size, seed);
    std::fs::write(path, &data).unwrap();
    sha256_hex(&data)
}

/// A `free` box of `size` bytes (at least 8): appended to an MP4/MOV export, the file changes
/// and stays a whole container, as when an editor writes more.
pub fn free_box(size: usize, seed: u64) -> Vec<u8> {
    let mut out = u32::try_from(size)
        .expect("a free box under 4 GiB")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(b"free");
    out.extend(content(size - 8, seed));
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The `hotfolder` binary with a clean environment (no user config, no RUST_LOG).
pub fn hotfolder() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotfolder"));
    command
        .env_remove("HOTFOLDER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion (with a generous limit so a hang fails instead of blocking).
pub async fn run(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("hotfolder finished within 120 s")
        .expect("hotfolder ran")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A watched folder layout in a temp dir: `inbox/`, `inbox/done/`, `inbox/failed/` (defaults).
pub struct Studio {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    pub config: PathBuf,
}

impl Studio {
    /// Config with the emulator's account, fast retries, and one folder with `folder_extra`
    /// lines (e.g. `stable_for = "300ms"`) appended to its table.
    pub fn new(emulator: &Emulator, upload_toml: &str, folder_extra: &str) -> Studio {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let inbox = std::fs::canonicalize(&inbox).unwrap();
        let body = format!(
            "{}\n{upload_toml}\n[[folder]]\npath = \"{}\"\n{folder_extra}\n",
            account_toml(emulator, "keycloak"),
            inbox.display()
        );
        let config = write_config(dir.path(), &body);
        Studio { dir, inbox, config }
    }

    pub fn done(&self) -> PathBuf {
        self.inbox.join("done")
    }

    pub fn failed(&self) -> PathBuf {
        self.inbox.join("failed")
    }

    /// `hotfolder run` in the background; its stderr goes to `run-stderr.log` (appended).
    pub fn start(&self) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_log())
            .unwrap();
        hotfolder()
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hotfolder run starts")
    }

    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("run-stderr.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.stderr_log()).unwrap_or_default()
    }

    pub async fn status_json(&self) -> serde_json::Value {
        let output = run(hotfolder()
            .arg("status")
            .arg("--json")
            .arg("--config")
            .arg(&self.config))
        .await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("status --json is JSON")
    }
}

/// Where the sidecar of a file in done/ or failed/ is: `<name>.upload.json` next to it.
pub fn sidecar_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".upload.json");
    path.with_file_name(name)
}

pub fn sidecar(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(sidecar_of(path)).expect("sidecar exists");
    serde_json::from_str(&text).expect("sidecar is JSON")
}

/// A file has arrived in done/ or failed/ once its sidecar is written (it is written last).
pub fn arrived(path: &Path) -> bool {
    path.exists() && sidecar_of(path).exists()
}

/// Waits up to `limit` for `condition`, checking every 50 ms.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files (not dirs) under `dir`, relative, sorted; the agents' own `.hotfolder/` (presences
/// and claims) left out.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|name| name == ".hotfolder") {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Sends SIGTERM (or another signal) to a child.
pub fn signal(child: &tokio::process::Child, sig: i32) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops a child with SIGTERM; returns its exit status and how long it took.
pub async fn stop(mut child: tokio::process::Child) -> (std::process::ExitStatus, Duration) {
    let start = std::time::Instant::now();
    signal(&child, 15);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("hotfolder stopped within 15 s of SIGTERM")
        .unwrap();
    (status, start.elapsed())
}

/// The datagrams `hotfolder run` sends to its `NOTIFY_SOCKET` (systemd `Type=notify`), each with
/// the moment it arrived, collected by a thread until dropped.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NotifySocket {
    /// Binds `dir/notify.sock`.
    pub fn bind(dir: &Path) -> NotifySocket {
        use std::sync::atomic::Ordering;
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::spawn({
            let messages = messages.clone();
            let done = done.clone();
            move || {
                let mut buffer = [0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buffer) {
                        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                        messages
                            .lock()
                            .unwrap()
                            .push((std::time::Instant::now(), text));
                    }
                }
            }
        });
        NotifySocket {
            path,
            messages,
            done,
        }
    }

    pub fn messages(&self) -> Vec<(std::time::Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Every message so far, one per line.
    pub fn text(&self) -> String {
        self.messages()
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When the first message containing `needle` arrived.
    pub fn first(&self, needle: &str) -> Option<std::time::Instant> {
        self.messages()
            .into_iter()
            .find(|(_, m)| m.contains(needle))
            .map(|(at, _)| at)
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A small tmpfs mounted over `dir` for the length of a test, to have a file system that can
/// be filled. Mounting needs root (or CAP_SYS_ADMIN): `None` where it is not allowed, and the
/// test says it skipped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Writes `name` in the file system until it is full; returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // Whatever still fits in smaller pieces, so not even a page is left.
        while file.write_all(&block[..512]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold a file in it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
