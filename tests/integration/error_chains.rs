//! Each command that can fail, run through the real binary with a nested error (an error that
//! wraps an OS error): stderr must show the whole chain, and each cause exactly once. The
//! expected OS texts are made by the same failing call here, so they match this platform.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;

use crate::util;

/// The `hotfolder` binary with a clean environment (no user config, no RUST_LOG).
fn hotfolder() -> Command {
    let mut command = Command::cargo_bin("hotfolder").expect("the hotfolder binary is built");
    command
        .env_remove("HOTFOLDER_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .timeout(Duration::from_secs(120));
    command
}

fn run(command: &mut Command) -> (Option<i32>, String) {
    let Output { status, stderr, .. } = command.output().expect("hotfolder ran");
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

/// `stderr` shows `chain` on one line, and `cause` nowhere else.
fn assert_chain_once(what: &str, stderr: &str, chain: &str, cause: &str) {
    assert!(
        stderr.contains(chain),
        "{what}: stderr lacks the whole chain {chain:?}:\n{stderr}"
    );
    assert_eq!(
        stderr.matches(cause).count(),
        1,
        "{what}: the cause {cause:?} must be shown exactly once:\n{stderr}"
    );
}

/// The commands that read the config file first, with what each needs after `-c FILE`.
const CONFIG_COMMANDS: [&[&str]; 4] = [&["check"], &["run"], &["status"], &["upload", "x.mov"]];

/// Runs every config-reading command with `-c config` and expects the config error, exit 2.
fn config_commands_show(config: &Path, cause: &str) {
    let chain = format!(
        "hotfolder: cannot read the config file {}: {cause}",
        config.display()
    );
    for command in CONFIG_COMMANDS {
        let (code, stderr) = run(hotfolder()
            .arg(command[0])
            .arg("-c")
            .arg(config)
            .args(&command[1..]));
        let what = format!("hotfolder {}", command.join(" "));
        assert_eq!(code, Some(2), "{what}: bad config is exit 2:\n{stderr}");
        assert_chain_once(&what, &stderr, &chain, cause);
    }
}

#[test]
fn a_config_path_that_is_a_directory_says_why_it_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let cause = std::fs::read_to_string(dir.path()).unwrap_err().to_string();
    config_commands_show(dir.path(), &cause);
}

#[cfg(unix)]
#[test]
fn a_config_file_without_read_permission_says_why_it_cannot_be_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = util::write_config(dir.path(), "");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o000)).unwrap();
    let Err(err) = std::fs::read_to_string(&config) else {
        hotfolder::test_skipped(format_args!(
            "running as root (or with CAP_DAC_OVERRIDE), which reads a file without \
             read permission, so there is no error to show"
        ));
        return;
    };
    config_commands_show(&config, &err.to_string());
}

/// A config with one watched folder and an account nobody answers for; `run` fails before it
/// would log in.
fn agent_config(dir: &Path) -> std::path::PathBuf {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    util::write_config(
        dir,
        &format!(
            "[account]\napi_url = \"http://127.0.0.1:9/api/\"\n\
             token_url = \"http://127.0.0.1:9/token\"\nusername = \"editor\"\n\
             password = \"pw\"\nvideo_manager_id = 12345\n\n[[folder]]\npath = \"{}\"\n",
            inbox.display()
        ),
    )
}

#[test]
fn a_state_dir_that_is_a_file_says_why_for_run_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let state = dir.path().join("state");
    std::fs::write(&state, "not a folder").unwrap();

    let cause = std::fs::create_dir_all(&state).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder().arg("run").arg("-c").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("hotfolder: state store {}: {cause}", state.display());
    assert_chain_once("hotfolder run", &stderr, &chain, &cause);
    // The log file still records why the agent stopped.
    let logs = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        logs.contains(&format!("state store {}: {cause}", state.display())),
        "{logs}"
    );

    let db = state.join("jobs.sqlite3");
    let cause = std::fs::metadata(&db).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder().arg("status").arg("-c").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("hotfolder: state store {}: {cause}", db.display());
    assert_chain_once("hotfolder status", &stderr, &chain, &cause);
}

#[test]
fn a_log_dir_that_is_a_file_says_why_for_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let logs = dir.path().join("logs");
    std::fs::write(&logs, "not a folder").unwrap();
    let cause = std::fs::create_dir_all(&logs).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder().arg("run").arg("-c").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!(
        "hotfolder: cannot create the log directory {}: {cause}",
        logs.display()
    );
    assert_chain_once("hotfolder run", &stderr, &chain, &cause);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_a_folder_or_a_missing_file_says_what_it_is() {
    let emulator = util::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = util::write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            util::account_toml(&emulator, "keycloak"),
            util::FAST_UPLOAD
        ),
    );
    // Named like a video: before issue 10 it got as far as being read (after the create
    // call). Both are now refused before any request, saying what the path is.
    let folder = dir.path().join("folder.mov");
    std::fs::create_dir(&folder).unwrap();
    let missing = dir.path().join("missing.mov");

    for (path, what_it_is) in [
        (&folder, "is a folder, not a video file"),
        (&missing, "does not exist"),
    ] {
        let mut plain = hotfolder();
        plain.arg("upload").arg("-c").arg(&config).arg(path);
        let mut json = hotfolder();
        json.arg("upload")
            .arg("--json")
            .arg("-c")
            .arg(&config)
            .arg(path);
        let ((code, stderr), json_output) = tokio::task::spawn_blocking(move || {
            (run(&mut plain), json.output().expect("hotfolder ran"))
        })
        .await
        .unwrap();
        let what = format!("hotfolder upload {}", path.display());
        assert_eq!(code, Some(1), "{what}: {stderr}");
        let reason = format!("{} {what_it_is}", path.display());
        assert_chain_once(
            &what,
            &stderr,
            &format!("not uploaded: {reason}"),
            what_it_is,
        );

        assert_eq!(json_output.status.code(), Some(1));
        let line: serde_json::Value =
            serde_json::from_slice(&json_output.stdout).expect("one JSON line");
        let error = line["error"].as_str().unwrap_or_default();
        assert_eq!(error, reason, "{what} --json: {line}");
    }
    assert!(emulator.videos().is_empty(), "{:?}", emulator.videos());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_an_unreadable_file_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.mov");
    std::fs::write(&path, b"video").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let Err(err) = std::fs::File::open(&path) else {
        hotfolder::test_skipped(format_args!(
            "running as root (or with CAP_DAC_OVERRIDE), which opens a file without \
             read permission, so there is no error to show"
        ));
        return;
    };
    let cause = err.to_string();
    let emulator = util::emulator(|_| {}).await;
    let config = util::write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            util::account_toml(&emulator, "keycloak"),
            util::FAST_UPLOAD
        ),
    );
    let mut command = hotfolder();
    command.arg("upload").arg("-c").arg(&config).arg(&path);
    let (code, stderr) = tokio::task::spawn_blocking(move || run(&mut command))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("cannot read {}: {cause}", path.display());
    assert_chain_once("hotfolder upload", &stderr, &chain, &cause);
}

#[test]
fn init_under_a_file_says_why_the_folder_cannot_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let parent = file.join("sub");
    let cause = std::fs::create_dir_all(&parent).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder().arg("init").arg(parent.join("config.toml")));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("hotfolder: cannot create {}: {cause}", parent.display());
    assert_chain_once("hotfolder init", &stderr, &chain, &cause);
}

#[test]
fn demo_under_a_file_says_why_the_folder_cannot_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let demo = file.join("demo");
    let inbox = demo.join("inbox");
    let cause = std::fs::create_dir_all(&inbox).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder().arg("demo").arg("--dir").arg(&demo));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("hotfolder: cannot create {}: {cause}", inbox.display());
    assert_chain_once("hotfolder demo", &stderr, &chain, &cause);
}

#[test]
fn emulator_on_a_taken_address_says_why_it_cannot_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cause = std::net::TcpListener::bind(addr).unwrap_err().to_string();
    let (code, stderr) = run(hotfolder()
        .arg("emulator")
        .arg("--listen")
        .arg(addr.to_string()));
    assert_eq!(code, Some(1), "{stderr}");
    let chain = format!("hotfolder: cannot listen on {addr}: {cause}");
    assert_chain_once("hotfolder emulator", &stderr, &chain, &cause);
}
