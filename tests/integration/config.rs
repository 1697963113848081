//! The config file through the library API: what parses, what is refused, and that every
//! refusal names the file, the key and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hotfolder::{ChunkSize, ConfigError, ConfigProblem, PasswordSource, STARTER_CONFIG, Settings};
use proptest::prelude::*;
use secrecy::ExposeSecret as _;

/// An environment variable no test run sets.
const UNSET_VAR: &str = "HOTFOLDER_TEST_SURELY_UNSET_3F9C1A";

const ACCOUNT: &str = r#"
[account]
username = "uploads@example.com"
password = "s3cret"
video_manager_id = 12345
"#;

/// A directory holding `config.toml` and an `exports` folder to watch.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exports")).unwrap();
        Setup { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    fn exports(&self) -> PathBuf {
        self.path().join("exports").canonicalize().unwrap()
    }

    fn load(&self, text: &str) -> Result<Settings, ConfigError> {
        std::fs::write(self.config_path(), text).unwrap();
        hotfolder::load_config(Some(&self.config_path()))
    }

    fn problems(&self, text: &str) -> Vec<ConfigProblem> {
        match self.load(text) {
            Err(ConfigError::Invalid { path, problems }) => {
                assert_eq!(path, self.config_path());
                assert!(!problems.is_empty());
                problems
            }
            Err(other) => panic!("expected Invalid, got {other:?}"),
            Ok(_) => panic!("expected problems, the config loaded"),
        }
    }

    /// The full error text a user sees.
    fn error_text(&self, text: &str) -> String {
        match self.load(text) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("expected an error, the config loaded"),
        }
    }
}

fn problem_at<'a>(problems: &'a [ConfigProblem], key: &str) -> &'a ConfigProblem {
    problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at {key}: {problems:#?}"))
}

fn with_folder(extra: &str) -> String {
    format!("{ACCOUNT}\n[[folder]]\npath = \"exports\"\n{extra}\n")
}

#[test]
fn starter_config_loads_once_its_folder_exists() {
    let setup = Setup::new();
    let exports = setup.path().join("exports");
    let text = STARTER_CONFIG
        .replace(
            "path = \"/srv/exports\"",
            &format!("path = {:?}", exports.to_str().unwrap()),
        )
        // PATH is set wherever tests run; HOTFOLDER_PASSWORD may not be.
        .replace(
            "password_env = \"HOTFOLDER_PASSWORD\"",
            "password_env = \"PATH\"",
        );
    assert_ne!(text, STARTER_CONFIG, "the starter config changed shape");
    let settings = setup.load(&text).unwrap();

    assert_eq!(
        settings.source.as_deref(),
        Some(setup.config_path().as_path())
    );
    assert_eq!(settings.account.username, "uploads@example.com");
    assert_eq!(settings.account.video_manager_id, 12345);
    assert_eq!(
        settings.account.api_url.as_str(),
        "https://api.video-cdn.net/v1/vms/"
    );
    assert_eq!(
        settings.account.password_source,
        PasswordSource::Env("PATH".into())
    );
    assert_eq!(settings.upload.chunk_size, ChunkSize::Auto);
    assert_eq!(settings.upload.parallel, 2);
    assert_eq!(settings.upload.max_attempts, 8);
    assert_eq!(settings.upload.backoff_max, Duration::from_secs(60));
    assert!(settings.upload.bandwidth.is_unlimited());
    assert_eq!(settings.log.keep_files, 14);
    assert_eq!(settings.folders.len(), 1);
    let folder = &settings.folders[0];
    assert_eq!(folder.path, setup.exports());
    assert_eq!(folder.done_dir, setup.exports().join("done"));
    assert_eq!(folder.failed_dir, setup.exports().join("failed"));
    assert_eq!(folder.stable_for, Duration::from_secs(10));
    assert!(folder.recursive);
    assert!(folder.include.contains(&"*.mp4".to_owned()));
    assert!(folder.exclude.contains(&".*".to_owned()));
    assert_eq!(folder.metadata.title, "{stem}");
    assert_eq!(folder.metadata.description, None);
}

#[test]
fn starter_config_as_written_only_lacks_its_folder_and_maybe_the_password() {
    let setup = Setup::new();
    let problems = setup.problems(STARTER_CONFIG);
    for problem in &problems {
        assert!(
            problem.key == "folder[1].path" || problem.key == "account.password_env",
            "unexpected problem in the starter config: {problem}"
        );
    }
    let line = line_of(STARTER_CONFIG, "path = \"/srv/exports\"");
    assert_eq!(
        problem_at(&problems, "folder[1].path").message,
        format!("/srv/exports does not exist (line {line})")
    );
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.starts_with(needle)).unwrap() + 1
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let setup = Setup::new();
    let settings = setup.load(&with_folder("")).unwrap();
    assert_eq!(
        settings.account.token_url.as_str(),
        "https://login.movingimage.com/auth/realms/platform/protocol/openid-connect/token"
    );
    assert_eq!(settings.account.auth, hotfolder::AuthStyle::Keycloak);
    assert_eq!(settings.account.password.expose_secret(), "s3cret");
    assert_eq!(settings.upload.request_timeout, Duration::from_secs(120));
    assert_eq!(settings.upload.url_renew_after, Duration::from_secs(13_500));
    assert_eq!(settings.upload.api_requests_per_minute, 100);
    assert_eq!(settings.log.level, "info");
    assert_eq!(settings.log.format, hotfolder::LogFormat::Text);
    assert_eq!(settings.folders[0].include, hotfolder::default_include());
    assert_eq!(settings.folders[0].exclude, hotfolder::default_exclude());
}

#[test]
fn keep_jobs_for_defaults_to_90_days_and_must_be_positive() {
    let setup = Setup::new();
    let settings = setup.load(&with_folder("")).unwrap();
    assert_eq!(settings.keep_jobs_for, Duration::from_secs(90 * 24 * 3600));
    assert!(
        settings.describe().contains("keep_jobs_for = \"90d\""),
        "{}",
        settings.describe()
    );
    let settings = setup
        .load(&format!(
            "{}\n[state]\nkeep_jobs_for = \"30d\"\n",
            with_folder("")
        ))
        .unwrap();
    assert_eq!(settings.keep_jobs_for, Duration::from_secs(30 * 24 * 3600));
    let problems = setup.problems(&format!(
        "{}\n[state]\nkeep_jobs_for = \"0s\"\n",
        with_folder("")
    ));
    let problem = problem_at(&problems, "state.keep_jobs_for");
    assert!(problem.message.contains("longer than 0s"), "{problem}");
    let problems = setup.problems(&format!(
        "{}\n[state]\nkeep_jobs_for = \"forever\"\n",
        with_folder("")
    ));
    problem_at(&problems, "state.keep_jobs_for");
}

#[test]
fn follow_transcoding_is_off_unless_a_folder_asks_and_check_shows_it() {
    let setup = Setup::new();
    let settings = setup.load(&with_folder("")).unwrap();
    assert!(!settings.folders[0].follow_transcoding);
    assert!(settings.describe().contains("follow_transcoding = false\n"));
    let settings = setup
        .load(&with_folder("follow_transcoding = true"))
        .unwrap();
    assert!(settings.folders[0].follow_transcoding);
    assert!(
        settings
            .describe()
            .contains("follow_transcoding = true  # transcoding followed for up to 2 h"),
        "{}",
        settings.describe()
    );
    let problems = setup.problems(&with_folder("follow_transcoding = \"yes\""));
    problem_at(&problems, "folder[1].follow_transcoding");
}

#[test]
fn no_folder_is_fine_for_the_upload_command() {
    let setup = Setup::new();
    let settings = setup.load(ACCOUNT).unwrap();
    assert!(settings.folders.is_empty());
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}\n[upload]\nchunksize = \"8 MiB\"\n");
    let message = setup.error_text(&text);
    let file = setup.config_path().display().to_string();
    assert!(
        message.starts_with(&format!(
            "{file}: upload.chunksize: unknown field `chunksize`"
        )),
        "{message}"
    );
    assert!(
        message.contains("chunk_size"),
        "the message should list the known keys: {message}"
    );
    assert!(message.contains("(line 8)"), "{message}");
}

#[test]
fn unknown_table_is_named() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[uplaod]\nparallel = 2\n"));
    assert!(
        problem_at(&problems, "uplaod")
            .message
            .contains("unknown field")
    );
}

#[test]
fn unknown_key_in_a_later_folder_names_that_folder() {
    let setup = Setup::new();
    std::fs::create_dir(setup.path().join("second")).unwrap();
    let text = format!(
        "{ACCOUNT}\n[[folder]]\npath = \"exports\"\n\n[[folder]]\npath = \"second\"\ntitel = \"x\"\n"
    );
    let problems = setup.problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problem_at(&problems, "folder[2].titel");
    assert!(
        problem.message.contains("unknown field `titel`"),
        "{problem}"
    );
    assert!(problem.message.contains("(line 12)"), "{problem}");
}

#[test]
fn bad_duration_is_named() {
    let setup = Setup::new();
    let problems = setup.problems(&with_folder("stable_for = \"10 parsecs\""));
    let problem = problem_at(&problems, "folder[1].stable_for");
    assert!(
        problem.message.contains("\"10 parsecs\" is not a duration"),
        "{problem}"
    );
}

#[test]
fn duration_without_quotes_is_explained() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nbackoff_max = 60\n"));
    let problem = problem_at(&problems, "upload.backoff_max");
    assert!(problem.message.contains("\"10s\""), "{problem}");
}

#[test]
fn zero_chunk_size_is_refused() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nchunk_size = 0\n"));
    let problem = problem_at(&problems, "upload.chunk_size");
    assert!(
        problem.message.contains("between 1 MiB and 64 MiB"),
        "{problem}"
    );
}

#[test]
fn chunk_size_above_64_mib_is_refused() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nchunk_size = \"65 MiB\"\n"));
    let problem = problem_at(&problems, "upload.chunk_size");
    assert!(problem.message.contains("not 65 MiB"), "{problem}");
}

#[test]
fn chunk_size_bounds_are_inclusive() {
    let setup = Setup::new();
    for size in ["1 MiB", "64 MiB", "1048576"] {
        let text = format!("{ACCOUNT}\n[upload]\nchunk_size = {size:?}\n");
        assert!(setup.load(&text).is_ok(), "{size} should be accepted");
    }
    let settings = setup
        .load(&format!("{ACCOUNT}\n[upload]\nchunk_size = \"16MiB\"\n"))
        .unwrap();
    assert_eq!(
        settings.upload.chunk_size,
        ChunkSize::Fixed(16 * 1024 * 1024)
    );
    for auto in ["auto", "Auto", " AUTO "] {
        let settings = setup
            .load(&format!("{ACCOUNT}\n[upload]\nchunk_size = {auto:?}\n"))
            .unwrap();
        assert_eq!(settings.upload.chunk_size, ChunkSize::Auto, "{auto}");
    }
}

#[test]
fn chunk_size_is_auto_by_default_and_a_typo_says_what_else_it_takes() {
    let setup = Setup::new();
    let settings = setup.load(ACCOUNT).unwrap();
    assert_eq!(settings.upload.chunk_size, ChunkSize::Auto);
    assert!(
        settings
            .describe()
            .contains("chunk_size = \"auto\"  # auto (8..64 MiB by the measured link)"),
        "{}",
        settings.describe()
    );
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nchunk_size = \"atuo\"\n"));
    let problem = problem_at(&problems, "upload.chunk_size");
    assert!(problem.message.contains("or \"auto\""), "{problem}");
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nchunk_size = true\n"));
    let problem = problem_at(&problems, "upload.chunk_size");
    assert!(problem.message.contains("\"auto\", or a size"), "{problem}");
}

#[test]
fn bandwidth_limit_reads_a_rate_in_bytes_or_bits() {
    let setup = Setup::new();
    for (written, bytes) in [
        ("20 MiB/s", 20 * 1024 * 1024),
        ("20 MB/s", 20_000_000),
        ("100 Mbit/s", 12_500_000),
        ("1 Gbit/s", 125_000_000),
        ("800 kbit/s", 100_000),
    ] {
        let settings = setup
            .load(&format!(
                "{ACCOUNT}\n[upload]\nbandwidth_limit = \"{written}\"\n"
            ))
            .unwrap();
        match settings.upload.bandwidth {
            hotfolder::BandwidthPlan::Fixed(rate) => {
                assert_eq!(rate.bytes_per_second, bytes, "{written}");
                assert_eq!(rate.to_string(), written);
            }
            other => panic!("{written}: {other:?}"),
        }
    }
}

/// Second hostile test of issue 13, D5: "100 MBps" was read as 100 megabits (it contains
/// "bps"). A capital B is bytes, a small b bits; all capitals say neither and are refused.
#[test]
fn bandwidth_limit_reads_a_capital_b_as_bytes_and_refuses_shouted_units() {
    let setup = Setup::new();
    for (written, bytes, bits) in [
        ("100 MBps", 100_000_000, false),
        ("100 KBps", 100_000, false),
        ("1 GBps", 1_000_000_000, false),
        ("100 Mbps", 12_500_000, true),
    ] {
        let settings = setup
            .load(&format!(
                "{ACCOUNT}\n[upload]\nbandwidth_limit = \"{written}\"\n"
            ))
            .unwrap();
        match settings.upload.bandwidth {
            hotfolder::BandwidthPlan::Fixed(rate) => {
                assert_eq!(
                    (rate.bytes_per_second, rate.bits),
                    (bytes, bits),
                    "{written}"
                );
            }
            other => panic!("{written}: {other:?}"),
        }
    }
    let problems = setup.problems(&format!(
        "{ACCOUNT}\n[upload]\nbandwidth_limit = \"100 MBPS\"\n"
    ));
    let problem = problem_at(&problems, "upload.bandwidth_limit");
    assert!(problem.message.contains("ambiguous"), "{problem}");
}

/// Second hostile test of issue 13, D13: "0" was told to write "0 MiB/s", which was then
/// refused too; "off" was told to write a size. Both now say what to do instead.
#[test]
fn a_bandwidth_limit_of_zero_or_off_says_what_to_write_instead() {
    let setup = Setup::new();
    for value in ["0", "\"0\"", "\"0 MiB/s\""] {
        let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nbandwidth_limit = {value}\n"));
        let problem = problem_at(&problems, "upload.bandwidth_limit");
        assert!(
            problem.message.contains("remove the key") || problem.message.contains("leave it out"),
            "{value}: {problem}"
        );
        assert!(
            !problem.message.contains("write \"0 MiB/s\""),
            "{value}: {problem}"
        );
    }
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nbandwidth_limit = \"off\"\n"));
    let problem = problem_at(&problems, "upload.bandwidth_limit");
    assert!(
        problem.message.contains("is not a limit") && problem.message.contains("remove the key"),
        "{problem}"
    );
}

#[test]
fn a_bandwidth_without_a_unit_is_refused_with_the_reason() {
    let setup = Setup::new();
    for value in ["20", "\"20\""] {
        let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nbandwidth_limit = {value}\n"));
        let problem = problem_at(&problems, "upload.bandwidth_limit");
        assert!(problem.message.contains("no unit"), "{problem}");
        assert!(problem.message.contains("20 Mbit/s"), "{problem}");
    }
}

#[test]
fn bandwidth_schedule_problems_name_the_entry() {
    let setup = Setup::new();
    let problems = setup.problems(&format!(
        "{ACCOUNT}\n[upload]\nbandwidth_schedule = \"Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,fast Sat 25:00,off\"\n"
    ));
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("upload.bandwidth_schedule")
                && m.contains("entry 2 \"Mon-Fri 19:00,fast\"")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("entry 3 \"Sat 25:00,off\"") && m.contains("HH:MM")),
        "{messages:#?}"
    );
}

#[test]
fn a_limit_and_a_schedule_together_are_refused() {
    let setup = Setup::new();
    let problems = setup.problems(&format!(
        "{ACCOUNT}\n[upload]\nbandwidth_limit = \"20 MiB/s\"\nbandwidth_schedule = \"Mon-Fri 19:00,off\"\n"
    ));
    let problem = problem_at(&problems, "upload.bandwidth_limit");
    assert!(problem.message.contains("bandwidth_schedule"), "{problem}");
    let settings = setup
        .load(&format!(
            "{ACCOUNT}\n[upload]\nbandwidth_schedule = \"Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off\"\n"
        ))
        .unwrap();
    assert!(matches!(
        settings.upload.bandwidth,
        hotfolder::BandwidthPlan::Scheduled(_)
    ));
}

#[test]
fn missing_password_source_is_refused() {
    let setup = Setup::new();
    let text = "[account]\nusername = \"u\"\nvideo_manager_id = 1\n";
    let problems = setup.problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problem_at(&problems, "account");
    assert!(problem.message.contains("password_env"), "{problem}");
}

#[test]
fn two_password_sources_are_refused() {
    let setup = Setup::new();
    let text = "[account]\nusername = \"u\"\nvideo_manager_id = 1\n\
                password = \"x\"\npassword_env = \"PATH\"\n";
    let problems = setup.problems(text);
    let problem = problem_at(&problems, "account");
    assert!(
        problem.message.contains("password_env and password"),
        "{problem}"
    );
    assert!(problem.message.contains("exactly one"), "{problem}");
}

#[test]
fn unset_password_variable_is_named() {
    let setup = Setup::new();
    let text = format!(
        "[account]\nusername = \"u\"\nvideo_manager_id = 1\npassword_env = \"{UNSET_VAR}\"\n"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "account.password_env");
    assert!(
        problem.message.contains(&format!("{UNSET_VAR} is not set")),
        "{problem}"
    );
}

#[test]
fn password_file_loses_its_trailing_newline() {
    let setup = Setup::new();
    for (contents, name) in [("s3cret\n", "unix.txt"), ("s3cret\r\n", "windows.txt")] {
        std::fs::write(setup.path().join(name), contents).unwrap();
        let text = format!(
            "[account]\nusername = \"u\"\nvideo_manager_id = 1\npassword_file = \"{name}\"\n"
        );
        let settings = setup.load(&text).unwrap();
        assert_eq!(settings.account.password.expose_secret(), "s3cret");
        assert_eq!(
            settings.account.password_source,
            PasswordSource::File(setup.path().join(name))
        );
    }
}

#[test]
fn empty_or_missing_password_file_is_refused() {
    let setup = Setup::new();
    std::fs::write(setup.path().join("empty.txt"), "\n").unwrap();
    for (name, expected) in [("empty.txt", "is empty"), ("absent.txt", "does not exist")] {
        let text = format!(
            "[account]\nusername = \"u\"\nvideo_manager_id = 1\npassword_file = \"{name}\"\n"
        );
        let problems = setup.problems(&text);
        let problem = problem_at(&problems, "account.password_file");
        assert!(problem.message.contains(expected), "{problem}");
    }
}

#[test]
fn relative_paths_are_read_from_the_config_directory() {
    let setup = Setup::new();
    let sub = setup.path().join("etc");
    std::fs::create_dir(&sub).unwrap();
    std::fs::create_dir(sub.join("inbox")).unwrap();
    std::fs::write(sub.join("password.txt"), "pw\n").unwrap();
    let text = r#"
[account]
username = "u"
video_manager_id = 1
password_file = "password.txt"

[state]
dir = "state"

[log]
dir = "../logs"

[[folder]]
path = "inbox"
done_dir = "uploaded"
"#;
    let config_path = sub.join("config.toml");
    std::fs::write(&config_path, text).unwrap();
    // Loaded from another working directory on purpose: only the file's location counts.
    let settings = hotfolder::load_config(Some(&config_path)).unwrap();
    let inbox = sub.join("inbox").canonicalize().unwrap();
    assert_eq!(settings.state_dir, sub.join("state"));
    assert_eq!(settings.log.dir, setup.path().join("logs"));
    assert_eq!(settings.account.password.expose_secret(), "pw");
    assert_eq!(settings.folders[0].path, inbox);
    // A relative done_dir is read from the watched folder, like its default.
    assert_eq!(settings.folders[0].done_dir, inbox.join("uploaded"));
}

#[test]
fn several_problems_are_reported_at_once() {
    let setup = Setup::new();
    let text = r#"
[account]
username = ""
video_manager_id = 0
password = "x"

[upload]
chunk_size = 0
parallel = 0
max_attempts = 1000
request_timeout = "0s"

[[folder]]
path = "exports"
stable_for = "soon"
title = ""
"#;
    let problems = setup.problems(text);
    for key in [
        "account.username",
        "account.video_manager_id",
        "upload.chunk_size",
        "upload.parallel",
        "upload.max_attempts",
        "upload.request_timeout",
        "folder[1].stable_for",
        "folder[1].title",
    ] {
        problem_at(&problems, key);
    }
    let message = setup.error_text(text);
    assert_eq!(
        message.lines().count(),
        problems.len(),
        "one line per problem:\n{message}"
    );
    let file = setup.config_path().display().to_string();
    assert!(
        message
            .lines()
            .all(|line| line.starts_with(&format!("{file}: "))),
        "{message}"
    );
}

#[test]
fn type_errors_do_not_hide_other_problems() {
    let setup = Setup::new();
    let text =
        format!("{ACCOUNT}\n[upload]\nparallel = \"two\"\nmax_attempts = true\nchunk_size = 0\n");
    let problems = setup.problems(&text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let parallel = problem_at(&problems, "upload.parallel");
    assert!(
        parallel
            .message
            .contains("invalid type: string \"two\", expected a whole number"),
        "{parallel}"
    );
    assert!(parallel.message.contains("(line 8)"), "{parallel}");
    problem_at(&problems, "upload.max_attempts");
    problem_at(&problems, "upload.chunk_size");
}

#[test]
fn done_dir_equal_to_the_folder_is_refused() {
    let setup = Setup::new();
    // Written differently from `path` on purpose: comparison is on the resolved folder.
    let problems = setup.problems(&with_folder("done_dir = \"../exports/.\""));
    let problem = problem_at(&problems, "folder[1].done_dir");
    assert!(
        problem.message.contains("watched folder itself"),
        "{problem}"
    );
}

#[test]
fn done_dir_equal_to_failed_dir_is_refused() {
    let setup = Setup::new();
    let problems = setup.problems(&with_folder("done_dir = \"out\"\nfailed_dir = \"out\""));
    let problem = problem_at(&problems, "folder[1].failed_dir");
    assert!(problem.message.contains("same as done_dir"), "{problem}");
}

/// A done folder that contains the watched folder (`..`): the watched folder would lie in what
/// the agent ignores, and nothing would ever be picked up.
#[test]
fn a_done_or_failed_dir_that_contains_the_watched_folder_is_refused() {
    let setup = Setup::new();
    let problems = setup.problems(&with_folder("done_dir = \"..\""));
    let problem = problem_at(&problems, "folder[1].done_dir");
    assert!(
        problem.message.contains("contains the watched folder")
            && problem.message.contains("no file would ever be picked up"),
        "{problem}"
    );
    assert!(
        problem
            .message
            .contains(&setup.exports().display().to_string()),
        "{problem}"
    );

    let problems = setup.problems(&with_folder("failed_dir = \"../..\""));
    let problem = problem_at(&problems, "folder[1].failed_dir");
    assert!(
        problem.message.contains("contains the watched folder"),
        "{problem}"
    );

    // The same place reached through a symlink is the same place.
    std::os::unix::fs::symlink(setup.path(), setup.path().join("outer")).unwrap();
    let problems = setup.problems(&with_folder(&format!(
        "done_dir = {:?}",
        setup.path().join("outer").display().to_string()
    )));
    problem_at(&problems, "folder[1].done_dir");
    // And a watched folder given as a symlink inside the done dir.
    std::os::unix::fs::symlink(setup.exports(), setup.path().join("linked-exports")).unwrap();
    let text = format!(
        "{ACCOUNT}\n[[folder]]\npath = \"linked-exports\"\ndone_dir = {:?}\n",
        setup.path().display().to_string()
    );
    problem_at(&setup.problems(&text), "folder[1].done_dir");

    // Beside the watched folder, or inside it, is fine.
    assert!(
        setup
            .load(&with_folder("done_dir = \"../delivered\""))
            .is_ok()
    );
    assert!(setup.load(&with_folder("done_dir = \"sent/ok\"")).is_ok());
}

#[test]
fn a_done_dir_that_is_another_folders_watched_or_failed_folder_is_refused() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.path().join("second")).unwrap();
    // folder[2] is not watched recursively, but its own files are: a done dir equal to it
    // feeds it.
    let text = format!(
        "{ACCOUNT}
[[folder]]
path = \"exports\"
done_dir = \"../second\"

[[folder]]
path = \"second\"
recursive = false
"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[1].done_dir");
    assert!(
        problem.message.contains("the folder watched by folder[2]"),
        "{problem}"
    );

    let text = format!(
        "{ACCOUNT}
[[folder]]
path = \"exports\"
done_dir = \"../out\"

[[folder]]
path = \"second\"
failed_dir = \"../out\"
"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[1].done_dir");
    assert!(
        problem.message.contains("folder[2]'s failed_dir"),
        "{problem}"
    );
    // Two folders sharing one done dir is allowed: names that are taken get a number.
    let shared = text.replace("failed_dir = \"../out\"", "done_dir = \"../out\"");
    assert!(setup.load(&shared).is_ok());
}

/// Through the binary: `check` and `run` both refuse it (exit 2), naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_refuse_a_done_dir_that_contains_the_watched_folder() {
    use crate::util::{hotfolder, run, text, write_config};
    let setup = Setup::new();
    let body = format!(
        "{ACCOUNT}\n[[folder]]\npath = {:?}\ndone_dir = \"..\"\n",
        setup.exports().display().to_string()
    );
    let config = write_config(setup.path(), &body);
    for command in ["check", "run"] {
        let output = run(hotfolder().arg(command).arg("--config").arg(&config)).await;
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("folder[1].done_dir") && stderr.contains("contains the watched folder"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn the_same_folder_twice_is_refused() {
    let setup = Setup::new();
    let exports = setup.exports();
    let text = format!(
        "{ACCOUNT}\n[[folder]]\npath = \"exports\"\n\n[[folder]]\npath = {:?}\n",
        format!("{}/", exports.display())
    );
    let problems = setup.problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problem_at(&problems, "folder[2].path");
    assert!(
        problem.message.contains("already watched by folder[1]"),
        "{problem}"
    );
}

#[test]
fn folder_inside_another_folders_done_dir_is_refused() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.path().join("archive/incoming")).unwrap();
    let text = format!(
        "{ACCOUNT}
[[folder]]
path = \"exports\"
done_dir = \"../archive\"

[[folder]]
path = \"archive/incoming\"
"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[2].path");
    assert!(
        problem.message.contains("inside folder[1]'s done_dir"),
        "{problem}"
    );
}

#[test]
fn folder_inside_a_recursively_watched_folder_is_refused() {
    let setup = Setup::new();
    std::fs::create_dir(setup.path().join("exports/team")).unwrap();
    let text = format!(
        "{ACCOUNT}\n[[folder]]\npath = \"exports\"\n\n[[folder]]\npath = \"exports/team\"\n"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[2].path");
    assert!(problem.message.contains("watched recursively"), "{problem}");

    let not_recursive = text.replacen(
        "path = \"exports\"\n",
        "path = \"exports\"\nrecursive = false\n",
        1,
    );
    assert!(setup.load(&not_recursive).is_ok());
}

#[test]
fn folder_that_does_not_exist_is_named() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}\n[[folder]]\npath = \"nowhere\"\n");
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[1].path");
    assert!(
        problem.message.contains("nowhere does not exist"),
        "{problem}"
    );
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let setup = Setup::new();
    let message = setup.error_text(&format!("{ACCOUNT}\n[upload]\nparallel = \"two\"\n"));
    let file = setup.config_path().display().to_string();
    assert_eq!(
        message,
        format!(
            "{file}: upload.parallel: invalid type: string \"two\", \
             expected a whole number (no quotes) (line 8)"
        )
    );
}

#[test]
fn single_bracket_folder_table_gets_a_hint() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[folder]\npath = \"exports\"\n"));
    let problem = problem_at(&problems, "folder");
    assert!(problem.message.contains("[[folder]]"), "{problem}");
}

#[test]
fn empty_file_names_the_missing_account_table() {
    let setup = Setup::new();
    let problems = setup.problems("");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problem_at(&problems, "account");
    assert!(problem.message.starts_with("missing"), "{problem}");
    assert!(problem.message.contains("[account]"), "{problem}");
}

#[test]
fn huge_number_is_a_clear_problem() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}\n[upload]\nparallel = 99999999999999999999\n");
    let problems = setup.problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problem_at(&problems, "upload.parallel").message,
        "99999999999999999999 is too large (line 8)"
    );
}

#[test]
fn negative_number_is_a_clear_problem() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}\n[upload]\nmax_attempts = -3\n"));
    let problem = problem_at(&problems, "upload.max_attempts");
    assert!(problem.message.starts_with("-3 is negative"), "{problem}");
}

#[test]
fn syntax_error_names_the_line() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}\n[upload\nparallel = 2\n");
    let problems = setup.problems(&text);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "line 7");
    assert!(
        problems[0].message.starts_with("not valid TOML"),
        "{:?}",
        problems[0]
    );
    assert!(problems[0].message.contains("[upload"), "{:?}", problems[0]);
}

#[test]
fn api_url_gets_a_trailing_slash() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}api_url = \"http://127.0.0.1:8080/v1/vms\"\n");
    let settings = setup.load(&text).unwrap();
    assert_eq!(
        settings.account.api_url.as_str(),
        "http://127.0.0.1:8080/v1/vms/"
    );
    assert_eq!(
        settings
            .account
            .api_url
            .join("12345/videos")
            .unwrap()
            .as_str(),
        "http://127.0.0.1:8080/v1/vms/12345/videos"
    );
}

#[test]
fn non_http_urls_are_refused() {
    let setup = Setup::new();
    let text = format!("{ACCOUNT}api_url = \"ftp://example.com/\"\ntoken_url = \"not a url\"\n");
    let problems = setup.problems(&text);
    problem_at(&problems, "account.api_url");
    problem_at(&problems, "account.token_url");
}

#[test]
fn unknown_auth_style_lists_the_choices() {
    let setup = Setup::new();
    let problems = setup.problems(&format!("{ACCOUNT}auth = \"oauth\"\n"));
    let problem = problem_at(&problems, "account.auth");
    assert!(
        problem.message.contains("keycloak") && problem.message.contains("legacy"),
        "{problem}"
    );
}

#[test]
fn missing_file_is_not_found() {
    let setup = Setup::new();
    let path = setup.path().join("absent.toml");
    match hotfolder::load_config(Some(&path)) {
        Err(ConfigError::NotFound { path: reported }) => assert_eq!(reported, path),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn describe_shows_effective_settings_without_the_password() {
    let setup = Setup::new();
    let settings = setup.load(&with_folder("channel = 7")).unwrap();
    let described = settings.describe();
    assert!(!described.contains("s3cret"), "{described}");
    assert!(
        described.contains("password = \"*** (inline in the config file)\""),
        "{described}"
    );
    assert!(
        described.contains("chunk_size = \"auto\"  # auto (8..64 MiB by the measured link)"),
        "{described}"
    );
    assert!(described.contains("channel = 7"), "{described}");
    assert!(
        described.contains(&format!(
            "path = {:?}",
            setup.exports().display().to_string()
        )),
        "{described}"
    );
}

#[test]
fn check_folder_access_creates_done_and_failed() {
    let setup = Setup::new();
    let text = format!(
        "{ACCOUNT}\n[state]\ndir = \"state\"\n[log]\ndir = \"logs\"\n\
         [[folder]]\npath = \"exports\"\n"
    );
    let settings = setup.load(&text).unwrap();
    assert_eq!(hotfolder::check_folder_access(&settings), Vec::new());
    let exports = setup.exports();
    assert!(exports.join("done").is_dir());
    assert!(exports.join("failed").is_dir());
    // The probe files are gone again.
    assert_eq!(std::fs::read_dir(exports.join("done")).unwrap().count(), 0);
}

#[test]
fn check_folder_access_reports_a_done_dir_that_cannot_be_created() {
    let setup = Setup::new();
    std::fs::write(setup.path().join("a-file"), "x").unwrap();
    let text = format!(
        "{ACCOUNT}\n[state]\ndir = \"state\"\n[log]\ndir = \"logs\"\n\
         [[folder]]\npath = \"exports\"\ndone_dir = \"../a-file/done\"\n"
    );
    let settings = setup.load(&text).unwrap();
    let problems = hotfolder::check_folder_access(&settings);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "folder[1].done_dir");
    assert!(
        problems[0].message.contains("cannot create"),
        "{:?}",
        problems[0]
    );
}

#[cfg(unix)]
#[test]
fn readable_secrets_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let setup = Setup::new();
    let settings = setup.load(ACCOUNT).unwrap();
    let config_path = setup.config_path();

    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warnings = hotfolder::secret_file_warnings(&settings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&config_path.display().to_string()),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains(&format!("chmod o-r {}", config_path.display())),
        "{warnings:?}"
    );
    // The password is inline in this config: a file of its own is the better fix.
    assert!(warnings[0].contains("password_file"), "{warnings:?}");

    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(hotfolder::secret_file_warnings(&settings).is_empty());
    // Readable by its group only: the Debian package's 0640 root:hotfolder, which the service
    // (group hotfolder) needs. `chmod 600` would lock it out; no warning.
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(
        hotfolder::secret_file_warnings(&settings).is_empty(),
        "{:?}",
        hotfolder::secret_file_warnings(&settings)
    );
}

#[test]
fn default_lists_cover_platform_suffixes_and_temp_names() {
    let include = hotfolder::default_include();
    for pattern in ["*.mp4", "*.mov", "*.mxf", "*.m2ts"] {
        assert!(include.contains(&pattern.to_owned()), "{pattern}");
    }
    let exclude = hotfolder::default_exclude();
    for pattern in [
        ".*",
        "._*",
        ".DS_Store",
        "*.part",
        "*.tmp",
        "*.crdownload",
        "~*",
        "*~",
    ] {
        assert!(exclude.contains(&pattern.to_owned()), "{pattern}");
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

proptest! {
    #[test]
    fn any_chunk_size_text_is_accepted_in_range_or_named(text in ".*") {
        let setup = Setup::new();
        let config = format!("{ACCOUNT}\n[upload]\nchunk_size = {}\n", toml_string(&text));
        match setup.load(&config) {
            Ok(settings) => {
                match settings.upload.chunk_size {
                    ChunkSize::Fixed(size) => prop_assert!((1 << 20..=64 << 20).contains(&size)),
                    ChunkSize::Auto => prop_assert!(text.trim().eq_ignore_ascii_case("auto")),
                }
            }
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(
                    problems.iter().all(|p| p.key == "upload.chunk_size"),
                    "{:?}",
                    problems
                );
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn any_duration_text_is_accepted_or_named(text in ".*") {
        let setup = Setup::new();
        let config = format!(
            "{ACCOUNT}\n[[folder]]\npath = \"exports\"\nstable_for = {}\n",
            toml_string(&text)
        );
        match setup.load(&config) {
            Ok(settings) => {
                prop_assert_eq!(
                    hotfolder::parse_duration(&text).ok(),
                    Some(settings.folders[0].stable_for)
                );
            }
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(
                    problems.iter().all(|p| p.key == "folder[1].stable_for"),
                    "{:?}",
                    problems
                );
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn size_and_duration_parsers_never_panic(text in "\\PC*") {
        let _ = hotfolder::parse_size(&text);
        let _ = hotfolder::parse_rate(&text);
        let _ = hotfolder::parse_duration(&text);
    }

    #[test]
    fn sizes_with_units_parse_exactly(
        n in 0u64..100_000,
        unit in prop::sample::select(vec![
            ("B", 1u64),
            ("KiB", 1 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
            ("KB", 1000),
            ("MB", 1_000_000),
        ]),
        space in prop::bool::ANY,
    ) {
        let text = format!("{n}{}{}", if space { " " } else { "" }, unit.0);
        prop_assert_eq!(hotfolder::parse_size(&text), Ok(n * unit.1));
    }
}

#[test]
fn keep_done_for_must_be_shorter_than_the_store_keeps_its_jobs() {
    let setup = Setup::new();
    // Retention finds a file in done/ through its job; a forgotten job's file is never deleted.
    let text = format!(
        "{ACCOUNT}\n[state]\nkeep_jobs_for = \"30d\"\n[[folder]]\npath = \"exports\"\nkeep_done_for = \"30d\"\n"
    );
    let problems = setup.problems(&text);
    let problem = problem_at(&problems, "folder[1].keep_done_for");
    assert!(
        problem.message.contains("keep_jobs_for"),
        "{}",
        problem.message
    );
    // Shorter is fine, with the default keep_jobs_for (90 days) too.
    setup
        .load(&with_folder("keep_done_for = \"29d\""))
        .expect("keep_done_for shorter than keep_jobs_for loads");
}
