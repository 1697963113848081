//! The service files in packaging/: the systemd units say what an admin relies on (notify,
//! watchdog, restarts, directories, credentials, sandbox, the one capability) and pass
//! `systemd-analyze verify` where that tool runs; the launchd plist is a valid plist with the keys launchd needs; the
//! config the install notes tell an admin to write is one hotfolder accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

const SYSTEM_UNIT: &str = "packaging/systemd/hotfolder.service";
const USER_UNIT: &str = "packaging/systemd/hotfolder-user.service";
const PLIST: &str = "packaging/launchd/com.movingimage.hotfolder.plist";
const INSTALL_NOTES: &str = "packaging/README.md";
/// The plist's program: launchd needs an absolute path.
const INSTALLED_BINARY: &str = "/usr/local/bin/hotfolder";
/// The units' program: a bare name, which systemd looks up in /usr/local/bin, then /usr/bin
/// (the Debian package's), so one unit serves both installs.
const UNIT_COMMAND: &str = "hotfolder";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A unit file as systemd reads it: sections of `Key=value` lines, `#`/`;` comments, and a
// trailing backslash continuing a line.

struct UnitFile {
    /// (section, key, value) in file order; a key may repeat (lists, resets).
    entries: Vec<(String, String, String)>,
}

impl UnitFile {
    fn parse(text: &str) -> Result<UnitFile, String> {
        let mut entries = Vec::new();
        let mut section: Option<String> = None;
        let mut pending = String::new();
        for (number, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            let line = format!("{pending}{line}");
            pending.clear();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.to_string());
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: not Key=value: {raw:?}", number + 1));
            };
            let Some(section) = &section else {
                return Err(format!("line {}: {key} is outside a section", number + 1));
            };
            entries.push((
                section.clone(),
                key.trim().to_string(),
                value.trim().to_string(),
            ));
        }
        if !pending.is_empty() {
            return Err("the file ends in a line continuation".into());
        }
        Ok(UnitFile { entries })
    }

    /// Every value of `key` in `section`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value in force: the last one, as systemd applies it.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }
}

fn system_unit() -> UnitFile {
    UnitFile::parse(&read(SYSTEM_UNIT)).unwrap()
}

fn user_unit() -> UnitFile {
    UnitFile::parse(&read(USER_UNIT)).unwrap()
}

#[test]
fn unit_parser_reads_sections_comments_and_continuations() {
    let unit = UnitFile::parse(
        "# comment\n[Service]\n; other comment\nType=notify\nExecStart=/bin/a \\\n  --flag\n\
         ReadWritePaths=/a\nReadWritePaths=/b\n",
    )
    .unwrap();
    assert_eq!(unit.get("Service", "Type"), Some("notify"));
    assert_eq!(unit.get("Unit", "Type"), None);
    assert_eq!(unit.get("Service", "ExecStart"), Some("/bin/a  --flag"));
    assert_eq!(unit.all("Service", "ReadWritePaths"), ["/a", "/b"]);
    assert!(
        UnitFile::parse("Type=notify\n").is_err(),
        "a key outside a section"
    );
    assert!(UnitFile::parse("[Service]\nno equals sign\n").is_err());
}

#[test]
fn system_unit_has_the_service_directives_the_agent_relies_on() {
    let unit = system_unit();
    let expect = |key: &str, value: &str| {
        assert_eq!(
            unit.get("Service", key),
            Some(value),
            "{SYSTEM_UNIT}: [Service] {key}"
        );
    };
    // The agent sends READY/STATUS/WATCHDOG/STOPPING itself, from its main process.
    expect("Type", "notify");
    expect("NotifyAccess", "main");
    expect("WatchdogSec", "60");
    expect("Restart", "on-failure");
    expect("KillSignal", "SIGTERM");
    expect("TimeoutStopSec", "20");
    assert!(
        unit.get("Service", "RestartSec").is_some(),
        "RestartSec keeps a failing start from spinning"
    );
    expect(
        "ExecStart",
        "hotfolder run --config /etc/hotfolder/config.toml",
    );
    expect("ExecReload", "/bin/kill -HUP $MAINPID");
    expect("User", "hotfolder");
    expect("Group", "hotfolder");
    expect("UMask", "0027");
    // The config default of [state] dir comes from this.
    expect("StateDirectory", "hotfolder");
    // The log goes to the journal, with no second copy in files unless asked for.
    assert_eq!(unit.get("Service", "LogsDirectory"), None);
    expect("ConfigurationDirectory", "hotfolder");
    expect("LoadCredential", "password:/etc/hotfolder/password");
    // systemd 252 has no optional LoadCredential=: alone, a missing /etc/hotfolder/password
    // stops the start with status=243/CREDENTIALS. A SetCredential= of the same id is the
    // fallback (systemd.exec(5)); a bare line break, which the agent reads as an empty password
    // and refuses with exit 2, naming the file to create (never a password it would try).
    expect("SetCredential", "password:\\n");
    assert_eq!(
        unit.get("Install", "WantedBy"),
        Some("multi-user.target"),
        "`systemctl enable` needs an [Install] target"
    );
}

#[test]
fn system_unit_is_sandboxed() {
    let unit = system_unit();
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(
            unit.get("Service", key),
            Some(value),
            "{SYSTEM_UNIT}: [Service] {key}"
        );
    }
    let protect_home = unit.get("Service", "ProtectHome");
    assert!(
        matches!(protect_home, Some("yes" | "read-only" | "tmpfs")),
        "ProtectHome is {protect_home:?}"
    );
    // ProtectSystem=strict makes everything read-only: the agent must still be able to move
    // files out of the watched folders, so they are listed, as absolute paths.
    let writable: Vec<&str> = unit
        .all("Service", "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert!(!writable.is_empty(), "ReadWritePaths lists no folder");
    for path in writable {
        // A folder that is not there must not stop systemd itself (status=226/NAMESPACE, no
        // word of which path): with '-' the agent starts and names the missing folder.
        assert!(
            path.starts_with('-'),
            "ReadWritePaths: {path} without '-' fails the start with 226/NAMESPACE when missing"
        );
        let path = path.trim_start_matches(['-', '+']);
        assert!(
            path.starts_with('/'),
            "ReadWritePaths: {path} is not absolute"
        );
    }
}

/// A capability list as systemd applies it: lines add up, an empty one clears what came before.
fn capabilities(unit: &UnitFile, key: &str) -> Vec<String> {
    let mut list = Vec::new();
    for value in unit.all("Service", key) {
        if value.is_empty() {
            list.clear();
        }
        for cap in value.split_whitespace() {
            assert!(
                !cap.starts_with('~'),
                "{key}={value}: keep the list explicit"
            );
            list.push(cap.to_string());
        }
    }
    list
}

/// Before a file is queued the agent takes a read lease on it for an instant, to learn whether
/// any process on the machine still has it open for writing (src/ready/writers.rs). The editors'
/// files are not the service user's, so the system unit grants CAP_LEASE, and nothing else.
#[test]
fn system_unit_grants_the_lease_the_writer_check_needs_and_nothing_more() {
    let unit = system_unit();
    assert_eq!(capabilities(&unit, "AmbientCapabilities"), ["CAP_LEASE"]);
    // An ambient capability outside the bounding set is dropped without a word.
    assert_eq!(capabilities(&unit, "CapabilityBoundingSet"), ["CAP_LEASE"]);
    // Ambient capabilities survive NoNewPrivileges; the sandbox stays as it was.
    assert_eq!(unit.get("Service", "NoNewPrivileges"), Some("yes"));
    assert_eq!(unit.get("Service", "User"), Some("hotfolder"));
    // The lease and SIGIO's disposition are calls @system-service allows and the deny list
    // does not take away: fcntl (in @file-system) and rt_sigaction (in @signal).
    assert_eq!(
        unit.all("Service", "SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );
}

#[test]
fn user_unit_asks_for_no_capability_a_user_manager_cannot_grant() {
    let unit = user_unit();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        assert_eq!(
            unit.get("Service", key),
            None,
            "{USER_UNIT}: a user manager has no capabilities to hand out; with {key}= the \
             service would not start"
        );
    }
}

#[test]
fn user_unit_runs_as_the_user_with_the_same_config_and_state_as_the_shell() {
    let unit = user_unit();
    assert_eq!(unit.get("Service", "Type"), Some("notify"));
    assert_eq!(unit.get("Service", "NotifyAccess"), Some("main"));
    assert_eq!(unit.get("Service", "WatchdogSec"), Some("60"));
    assert_eq!(unit.get("Service", "Restart"), Some("on-failure"));
    assert_eq!(
        unit.get("Service", "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(
        unit.get("Service", "ExecStart"),
        Some("hotfolder run --config %E/hotfolder/config.toml"),
        "%E is ~/.config in a user unit: the config `hotfolder init` writes"
    );
    // A user manager cannot switch users, and a unit that tried would not start.
    assert_eq!(unit.get("Service", "User"), None);
    assert_eq!(unit.get("Service", "Group"), None);
    // With these, the agent's state would be where `hotfolder status` does not look.
    assert_eq!(unit.get("Service", "StateDirectory"), None);
    assert_eq!(unit.get("Service", "LogsDirectory"), None);
    assert_eq!(unit.get("Install", "WantedBy"), Some("default.target"));
}

// ---------------------------------------------------------------------------------------------
// systemd-analyze verify

/// The unit with `ExecStart` pointing at the binary cargo built, since verify refuses a unit
/// whose command does not exist.
fn with_built_binary(unit_text: &str) -> String {
    let built = env!("CARGO_BIN_EXE_hotfolder");
    let mut rewritten = 0;
    let lines: Vec<String> = unit_text
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(command) if command.starts_with(&format!("{UNIT_COMMAND} ")) => {
                rewritten += 1;
                format!("ExecStart={built}{}", &command[UNIT_COMMAND.len()..])
            }
            _ => line.to_string(),
        })
        .collect();
    assert_eq!(rewritten, 1, "one ExecStart={UNIT_COMMAND} line");
    lines.join("\n") + "\n"
}

enum Verdict {
    Clean,
    Problems(String),
    /// systemd-analyze is missing or cannot work here; the reason says why.
    CannotRun(String),
}

/// Runs `systemd-analyze [--user] verify` on `unit_path`. systemd-analyze exits 0 even for an
/// unknown key or a bad value, so any line it prints about the unit is a problem too.
fn verify(unit_path: &Path, user: bool, runtime_dir: &Path) -> Verdict {
    let mut command = Command::new("systemd-analyze");
    if user {
        command.arg("--user");
    }
    // A user manager needs a runtime directory; a private one makes the check the same in a
    // container, in CI and on a desktop.
    command
        .arg("verify")
        .arg(unit_path)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env("SYSTEMD_LOG_COLOR", "0");
    let output = match command.output() {
        Ok(output) => output,
        Err(err) => return Verdict::CannotRun(format!("systemd-analyze cannot start: {err}")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let unit_name = unit_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // On a real host verify may also grumble about unrelated units it loads as dependencies.
    let about_this_unit: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|line| line.contains(&unit_name))
        .collect();
    if output.status.success() && about_this_unit.is_empty() {
        Verdict::Clean
    } else {
        Verdict::Problems(format!(
            "systemd-analyze{} verify {} exited with {}:\n{stderr}{stdout}",
            if user { " --user" } else { "" },
            unit_path.display(),
            output.status
        ))
    }
}

/// Verifies one of our units. A minimal unit is verified first: when even that fails, the tool
/// cannot work here and the test is skipped with the reason, rather than blaming our unit.
fn verify_packaged_unit(relative: &str, user: bool) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("runtime");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(
        &runtime_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    let probe = dir.path().join("hotfolder-probe.service");
    std::fs::write(
        &probe,
        format!(
            "[Unit]\nDescription=probe\n[Service]\nExecStart={} --version\n\
             ExecReload=/bin/kill -HUP $MAINPID\n",
            env!("CARGO_BIN_EXE_hotfolder")
        ),
    )
    .unwrap();
    match verify(&probe, user, &runtime_dir) {
        Verdict::Clean => {}
        Verdict::CannotRun(reason) | Verdict::Problems(reason) => {
            hotfolder::test_skipped(format_args!(
                "systemd-analyze verify does not work here ({reason})"
            ));
            return None;
        }
    }

    let unit_path = dir.path().join(Path::new(relative).file_name().unwrap());
    std::fs::write(&unit_path, with_built_binary(&read(relative))).unwrap();
    match verify(&unit_path, user, &runtime_dir) {
        Verdict::Clean => Some(format!("{relative}: clean")),
        Verdict::Problems(report) => panic!("{relative} does not verify:\n{report}"),
        Verdict::CannotRun(reason) => {
            hotfolder::test_skipped(format_args!("{reason}"));
            None
        }
    }
}

#[test]
fn system_unit_passes_systemd_analyze_verify() {
    if let Some(result) = verify_packaged_unit(SYSTEM_UNIT, false) {
        eprintln!("{result}");
    }
}

#[test]
fn user_unit_passes_systemd_analyze_verify() {
    if let Some(result) = verify_packaged_unit(USER_UNIT, true) {
        eprintln!("{result}");
    }
}

/// The verify check has teeth: the mistakes it exists for are reported, not waved through.
#[test]
fn systemd_analyze_verify_reports_a_broken_unit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("runtime");
    std::fs::create_dir(&runtime_dir).unwrap();
    let good = dir.path().join("hotfolder.service");
    std::fs::write(&good, with_built_binary(&read(SYSTEM_UNIT))).unwrap();
    if let Verdict::CannotRun(reason) | Verdict::Problems(reason) =
        verify(&good, false, &runtime_dir)
    {
        hotfolder::test_skipped(format_args!(
            "systemd-analyze verify does not work here ({reason})"
        ));
        return;
    }
    let typo = with_built_binary(&read(SYSTEM_UNIT)).replace("WatchdogSec=", "WatchdgSec=");
    std::fs::write(&good, typo).unwrap();
    assert!(
        matches!(verify(&good, false, &runtime_dir), Verdict::Problems(_)),
        "a misspelt key passed"
    );
    // The unit as shipped, pointing at a binary that is not installed here.
    let missing = dir.path().join("hotfolder-missing.service");
    std::fs::write(
        &missing,
        read(SYSTEM_UNIT).replace(INSTALLED_BINARY, "/nonexistent/bin/hotfolder"),
    )
    .unwrap();
    assert!(
        matches!(verify(&missing, false, &runtime_dir), Verdict::Problems(_)),
        "a missing ExecStart binary passed"
    );
}

// ---------------------------------------------------------------------------------------------
// The launchd plist

/// A minimal reader for XML property lists, into JSON values: enough to prove the file is
/// well-formed and to check its keys where python3's plistlib is not available.
mod plist {
    use serde_json::{Map, Number, Value};

    #[derive(Debug, PartialEq)]
    enum Token {
        Open(String),
        Close(String),
        Empty(String),
        Text(String),
    }

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<!--") {
                let end = after.find("-->").ok_or("an unterminated comment")?;
                rest = &after[end + 3..];
            } else if let Some(after) = rest.strip_prefix("<?") {
                let end = after.find("?>").ok_or("an unterminated <?...?>")?;
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix("<!") {
                let end = after.find('>').ok_or("an unterminated <!...>")?;
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix('<') {
                let end = after.find('>').ok_or("an unterminated tag")?;
                let tag = &after[..end];
                rest = &after[end + 1..];
                if let Some(name) = tag.strip_prefix('/') {
                    out.push(Token::Close(name.trim().to_string()));
                } else if let Some(name) = tag.strip_suffix('/') {
                    out.push(Token::Empty(name.trim().to_string()));
                } else {
                    // Attributes (plist version="1.0") do not matter here.
                    let name = tag.split_whitespace().next().ok_or("an empty tag")?;
                    out.push(Token::Open(name.to_string()));
                }
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                out.push(Token::Text(unescape(&rest[..end])?));
                rest = &rest[end..];
            }
        }
        Ok(out)
    }

    fn unescape(text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            let end = rest[at..].find(';').ok_or("a bare &")? + at;
            out.push(match &rest[at + 1..end] {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                other => return Err(format!("unknown entity &{other};")),
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    struct Reader {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Reader {
        /// The next token that is not whitespace between elements.
        fn next(&mut self) -> Option<&Token> {
            while let Some(Token::Text(text)) = self.tokens.get(self.at) {
                if !text.trim().is_empty() {
                    break;
                }
                self.at += 1;
            }
            let token = self.tokens.get(self.at);
            self.at += 1;
            token
        }

        fn peek_close(&mut self, name: &str) -> bool {
            let saved = self.at;
            let closes = matches!(self.next(), Some(Token::Close(n)) if n == name);
            if !closes {
                self.at = saved;
            }
            closes
        }

        /// Text up to `</name>`.
        fn text_of(&mut self, name: &str) -> Result<String, String> {
            let text = match self.tokens.get(self.at) {
                Some(Token::Text(text)) => {
                    self.at += 1;
                    text.clone()
                }
                _ => String::new(),
            };
            match self.tokens.get(self.at) {
                Some(Token::Close(n)) if n == name => {
                    self.at += 1;
                    Ok(text)
                }
                other => Err(format!("<{name}> closed by {other:?}")),
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            let token = self.next().ok_or("the file ends where a value belongs")?;
            match token {
                Token::Empty(name) => match name.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "dict" => Ok(Value::Object(Map::new())),
                    "array" => Ok(Value::Array(Vec::new())),
                    "string" => Ok(Value::String(String::new())),
                    other => Err(format!("unexpected <{other}/>")),
                },
                Token::Open(name) => match name.clone().as_str() {
                    "dict" => {
                        let mut map = Map::new();
                        while !self.peek_close("dict") {
                            match self.next() {
                                Some(Token::Open(n)) if n == "key" => {}
                                other => return Err(format!("expected <key>, found {other:?}")),
                            }
                            let key = self.text_of("key")?;
                            let value = self.value()?;
                            if map.insert(key.clone(), value).is_some() {
                                return Err(format!("key {key:?} appears twice"));
                            }
                        }
                        Ok(Value::Object(map))
                    }
                    "array" => {
                        let mut items = Vec::new();
                        while !self.peek_close("array") {
                            items.push(self.value()?);
                        }
                        Ok(Value::Array(items))
                    }
                    "string" => Ok(Value::String(self.text_of("string")?)),
                    "integer" => {
                        let text = self.text_of("integer")?;
                        let number: i64 = text
                            .trim()
                            .parse()
                            .map_err(|_| format!("<integer>{text}</integer>"))?;
                        Ok(Value::Number(Number::from(number)))
                    }
                    other => Err(format!("unexpected <{other}>")),
                },
                other => Err(format!("expected a value, found {other:?}")),
            }
        }
    }

    /// Parses a whole plist document: one `<plist>` holding one value, nothing after it.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut reader = Reader {
            tokens: tokens(text)?,
            at: 0,
        };
        match reader.next() {
            Some(Token::Open(name)) if name == "plist" => {}
            other => return Err(format!("expected <plist>, found {other:?}")),
        }
        let value = reader.value()?;
        if !reader.peek_close("plist") {
            return Err("<plist> holds more than one value or is not closed".into());
        }
        if let Some(extra) = reader.next() {
            return Err(format!("{extra:?} after </plist>"));
        }
        Ok(value)
    }
}

/// python3's plistlib as the reference reader, as JSON; `None` when python3 is not here.
fn plistlib(path: &Path) -> Option<Result<Value, String>> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, plistlib, sys\n\
             with open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f)))",
        )
        .arg(path)
        .output()
        .ok()?;
    if !output.status.success() {
        return Some(Err(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    Some(serde_json::from_slice(&output.stdout).map_err(|err| err.to_string()))
}

fn as_object<'a>(value: &'a Value, what: &str) -> &'a Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a dictionary: {value}"))
}

#[test]
fn plist_parses_and_has_what_launchd_needs() {
    let path = repo_file(PLIST);
    let ours = plist::parse(&read(PLIST)).unwrap_or_else(|err| panic!("{PLIST}: {err}"));
    match plistlib(&path) {
        Some(reference) => {
            let reference =
                reference.unwrap_or_else(|err| panic!("plistlib rejects {PLIST}: {err}"));
            assert_eq!(ours, reference, "plistlib reads {PLIST} differently");
        }
        None => eprintln!("python3 not found: {PLIST} checked by the built-in reader only"),
    }

    let top = as_object(&ours, "the plist");
    assert_eq!(top["Label"], "com.movingimage.hotfolder");
    assert_eq!(
        path.file_stem().and_then(|s| s.to_str()),
        Some("com.movingimage.hotfolder"),
        "launchctl expects the file named after its Label"
    );
    let arguments: Vec<&str> = top["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .map(|a| a.as_str().expect("every argument is a string"))
        .collect();
    assert_eq!(arguments[..3], [INSTALLED_BINARY, "run", "--config"]);
    assert_eq!(arguments.len(), 4, "{arguments:?}");
    assert!(
        arguments[3].starts_with('/') && arguments[3].ends_with("/hotfolder/config.toml"),
        "launchd expands no ~ or $HOME: {}",
        arguments[3]
    );
    assert_eq!(top["RunAtLoad"], true);
    // Restarted after a crash, not after a clean stop.
    assert_eq!(
        as_object(&top["KeepAlive"], "KeepAlive")["SuccessfulExit"],
        false
    );
    // launchd never rotates such a file: the agent logs to its daily files (and a start-up
    // failure too, tests/integration/install.rs).
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert!(!top.contains_key(key), "{key}: a log file nothing rotates");
    }
    assert_eq!(top["ProcessType"], "Background");
    assert!(
        top["ThrottleInterval"].as_u64().is_some_and(|s| s >= 10),
        "ThrottleInterval {}",
        top["ThrottleInterval"]
    );
    let environment = as_object(&top["EnvironmentVariables"], "EnvironmentVariables");
    assert!(
        !environment.contains_key("HOTFOLDER_PASSWORD"),
        "a password in the shipped plist would be a shared secret"
    );
}

/// The built-in reader is a real check, not a pass-through.
#[test]
fn plist_reader_rejects_malformed_documents() {
    let ok = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>A</key>\
              <string>x &amp; y</string><key>B</key><array><integer>3</integer><true/></array>\
              </dict></plist>";
    assert_eq!(
        plist::parse(ok).unwrap(),
        serde_json::json!({"A": "x & y", "B": [3, true]})
    );
    for broken in [
        "<plist><dict><key>A</key><string>x</dict></plist>",
        "<plist><dict><key>A</key></dict></plist>",
        "<plist><dict><string>x</string></dict></plist>",
        "<plist><dict><key>A</key><true/><key>A</key><false/></dict></plist>",
        "<plist><dict></dict>",
        "<plist><dict/></plist><plist/>",
        "<plist><string>a & b</string></plist>",
        "<plist><!-- never closed <dict/></plist>",
    ] {
        assert!(plist::parse(broken).is_err(), "accepted: {broken}");
    }
}

// ---------------------------------------------------------------------------------------------
// The install notes and the unit agree, and the config they give is one hotfolder accepts.

/// The first ```toml block in the install notes that sets `password_file`.
fn documented_system_config() -> String {
    let notes = read(INSTALL_NOTES);
    notes
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("password_file"))
        .expect("packaging/README.md shows the system config")
        .to_string()
}

#[test]
fn documented_config_reads_the_credential_the_unit_loads() {
    let unit = system_unit();
    let credential = unit
        .get("Service", "LoadCredential")
        .and_then(|v| v.split_once(':'))
        .map(|(id, _)| id)
        .expect("LoadCredential=ID:PATH");
    let unit_name = Path::new(SYSTEM_UNIT).file_name().unwrap();
    // systemd places credentials in /run/credentials/<unit name>/<id>, i.e. $CREDENTIALS_DIRECTORY.
    let expected = Path::new("/run/credentials")
        .join(unit_name)
        .join(credential);

    let config: toml::Table = documented_system_config().parse().unwrap();
    let account = config["account"].as_table().unwrap();
    assert_eq!(
        account.get("password_file").and_then(|v| v.as_str()),
        expected.to_str()
    );
    // Spelled out so that `hotfolder status` from a shell finds the store the service writes.
    let state_dir = config["state"]["dir"].as_str();
    assert_eq!(
        state_dir.map(PathBuf::from),
        Some(Path::new("/var/lib").join(unit.get("Service", "StateDirectory").unwrap()))
    );
    // No [log] dir: under systemd the journal is the log (a dir would add files as well).
    assert!(
        config.get("log").is_none(),
        "the notes ask for a second copy of the log"
    );
    // The folder the notes watch is the one the unit makes writable.
    let folder = config["folder"][0]["path"].as_str().unwrap();
    assert!(
        unit.all("Service", "ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .any(|p| p.trim_start_matches('-') == folder),
        "{folder} is not in ReadWritePaths"
    );
}

#[test]
fn documented_config_is_accepted_by_hotfolder() {
    // The same text with its absolute paths moved into a temp dir: the folder must exist and
    // the password file must be readable for the config to validate.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let credential = root.join("credentials/password");
    std::fs::create_dir_all(credential.parent().unwrap()).unwrap();
    std::fs::write(&credential, "secret\n").unwrap();
    std::fs::create_dir_all(root.join("srv/exports")).unwrap();
    let text = documented_system_config()
        .replace(
            "/run/credentials/hotfolder.service/password",
            credential.to_str().unwrap(),
        )
        .replace("\"/srv/", &format!("\"{}/srv/", root.display()))
        .replace("\"/var/", &format!("\"{}/var/", root.display()));
    assert!(
        !text.contains("\"/run/") && !text.contains("\"/srv/") && !text.contains("\"/var/"),
        "a documented path was not moved into the temp dir:\n{text}"
    );
    let source = root.join("config.toml");
    let settings = hotfolder::Settings::from_toml_str(&text, &source)
        .unwrap_or_else(|err| panic!("the config in {INSTALL_NOTES} is refused:\n{err}"));
    assert_eq!(settings.state_dir, root.join("var/lib/hotfolder"));
    assert_eq!(settings.folders.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The licence: Cargo.toml's `license` names two, and a published crate or a copied tree must
// carry both texts.

#[test]
fn every_license_cargo_toml_names_has_its_text_in_the_tree() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let expression = manifest["package"]["license"].as_str().unwrap().to_owned();
    // The SPDX identifier, the file the Rust ecosystem keeps its text in, and words of the text.
    let known = [
        (
            "MIT",
            "LICENSE-MIT",
            "Permission is hereby granted, free of charge",
        ),
        (
            "Apache-2.0",
            "LICENSE-APACHE",
            "Apache License\n                           Version 2.0, January 2004",
        ),
    ];
    let named: Vec<&str> = expression.split(" OR ").map(str::trim).collect();
    assert_eq!(named, ["MIT", "Apache-2.0"], "{expression}");
    for id in named {
        let (_, file, words) = known.iter().find(|(k, _, _)| *k == id).unwrap();
        let text = std::fs::read_to_string(repo_file(file))
            .unwrap_or_else(|err| panic!("Cargo.toml names {id}, but {file} is missing: {err}"));
        assert!(text.contains(words), "{file} is not the {id} text");
    }
    let mit = read("LICENSE-MIT");
    assert!(
        mit.contains("Copyright (c) the hotfolder developers"),
        "LICENSE-MIT has no copyright line: {mit}"
    );
    // The whole Apache text, appendix included, not an excerpt.
    let apache = read("LICENSE-APACHE");
    for part in [
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ] {
        assert!(apache.contains(part), "LICENSE-APACHE lacks {part:?}");
    }
}
