//! What only the file system can tell about settings that are valid on paper, for
//! `hotfolder check`: whether the folders can really be listed and written to, and whether
//! others can read the password. Apart from loading because this writes (it creates missing
//! directories and a probe file), while loading only reads.

use std::path::{Path, PathBuf};

use super::{ConfigProblem, NotifyTarget, PasswordSource, Settings};

/// Checks what only the file system can tell: each watched folder can be listed, each
/// done/failed folder (and the state directory, and the log directory when one was chosen) can
/// be created and written. Creates missing directories; leaves no probe file behind.
pub fn check_folder_access(settings: &Settings) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut writable = |key: String, dir: &Path| {
        if let Err(message) = probe_writable(dir) {
            problems.push(ConfigProblem { key, message });
        }
    };
    writable("state.dir".to_owned(), &settings.state_dir);
    // The default log dir is used only outside the journal, and `run` makes it then; made here,
    // it would be a folder nobody asked for (in the service user's home, one that keeps
    // /var/lib/hotfolder from being purged). An existing one is still checked.
    if settings.log.dir_chosen || settings.log.dir.is_dir() {
        writable("log.dir".to_owned(), &settings.log.dir);
    }
    for (i, folder) in settings.folders.iter().enumerate() {
        // A folder that is not there is reported below; making its done/ inside it would make
        // the folder too, and hide that it is missing (an unmounted share's mount point).
        if !folder.path.is_dir() {
            continue;
        }
        let n = i + 1;
        writable(format!("folder[{n}].done_dir"), &folder.done_dir);
        writable(format!("folder[{n}].failed_dir"), &folder.failed_dir);
    }
    for (i, folder) in settings.folders.iter().enumerate() {
        let listed = std::fs::read_dir(&folder.path).and_then(|mut entries| {
            entries.next().transpose()?;
            Ok(())
        });
        if let Err(err) = listed {
            problems.push(ConfigProblem {
                key: format!("folder[{}].path", i + 1),
                message: format!("cannot list {}: {err}", folder.path.display()),
            });
        }
    }
    problems
}

fn probe_writable(dir: &Path) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    // Hidden, so the default exclude list ignores it should a crash leave it behind.
    let probe = dir.join(format!(".hotfolder-probe-{}", uuid::Uuid::new_v4()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut file| file.write_all(b"probe"));
    let removed = std::fs::remove_file(&probe);
    written.map_err(|err| format!("cannot write in {}: {err}", dir.display()))?;
    removed.map_err(|err| {
        format!(
            "wrote but cannot remove {} (files could not be moved out of it): {err}",
            probe.display()
        )
    })
}

/// Warnings about files that hold a secret and that others on the machine can read: the
/// account's password file, `[smtp] password_file`, each `[[notify]] secret_file`, and the
/// config file itself when it holds the password inline or a webhook URL (which carries its
/// token in the path, or a login). One warning per file, naming what it holds.
pub fn secret_file_warnings(settings: &Settings) -> Vec<String> {
    let holds = |file: &Path, what: &'static str, found: &mut Vec<(PathBuf, Vec<&'static str>)>| {
        match found.iter_mut().find(|(f, _)| f == file) {
            Some((_, list)) if !list.contains(&what) => list.push(what),
            Some(_) => {}
            None => found.push((file.to_path_buf(), vec![what])),
        }
    };
    let mut found: Vec<(PathBuf, Vec<&'static str>)> = Vec::new();
    match (&settings.account.password_source, &settings.source) {
        (PasswordSource::File(path), _) => holds(path, "the account's password", &mut found),
        (PasswordSource::Inline, Some(source)) => {
            holds(source, "the account's password", &mut found)
        }
        _ => {}
    }
    if let Some(smtp) = &settings.smtp
        && let Some((_, secret)) = &smtp.login
        && let PasswordSource::File(path) = &secret.source
    {
        holds(path, "the mail server's password", &mut found);
    }
    for destination in &settings.notify {
        let NotifyTarget::Webhook { secret, .. } = &destination.target else {
            continue;
        };
        if let Some(secret) = secret
            && let PasswordSource::File(path) = &secret.source
        {
            holds(path, "a webhook's signing secret", &mut found);
        }
        if let Some(source) = &settings.source {
            holds(source, "webhook URLs (their tokens)", &mut found);
        }
    }
    found
        .iter()
        .filter_map(|(path, what)| {
            let inline = matches!(settings.account.password_source, PasswordSource::Inline)
                && settings.source.as_ref() == Some(path);
            readable_by_others(path, &what.join(" and "), inline)
        })
        .collect()
}

/// A warning when users outside the file's owner and group can read it. Only the "others" bits
/// count: a group-readable secret is how the service reads it (the Debian package ships the
/// config as 0640 root:hotfolder, and the agent runs as group hotfolder), so advising `chmod
/// 600` there would lock the service out of its own config.
fn readable_by_others(path: &Path, what: &str, inline_password: bool) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        let mut warning = format!(
            "{} holds {what} and other users can read it (mode {:o}); run `chmod o-r {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
        if inline_password {
            warning.push_str(
                ", or move the password to a file of its own and name it in [account] password_file",
            );
        }
        warning
    })
}
