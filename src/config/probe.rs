//! What only the file system can tell about settings that are valid on paper, for
//! `hotfolder check`: whether the folders can really be listed and written to, and whether
//! others can read the password. Apart from loading because this writes (it creates missing
//! directories and a probe file), while loading only reads.

use std::path::Path;

use super::{ConfigProblem, PasswordSource, Settings};

/// Checks what only the file system can tell: each watched folder can be listed, each
/// done/failed folder (and the state and log directories) can be created and written. Creates
/// missing directories; leaves no probe file behind.
pub fn check_folder_access(settings: &Settings) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut writable = |key: String, dir: &Path| {
        if let Err(message) = probe_writable(dir) {
            problems.push(ConfigProblem { key, message });
        }
    };
    writable("state.dir".to_owned(), &settings.state_dir);
    writable("log.dir".to_owned(), &settings.log.dir);
    for (i, folder) in settings.folders.iter().enumerate() {
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

/// Warnings about files that hold the password and that others on the machine can read: the
/// config file when the password is inline, or the password file. Empty on non-Unix systems.
pub fn secret_file_warnings(settings: &Settings) -> Vec<String> {
    let file = match (&settings.account.password_source, &settings.source) {
        (PasswordSource::File(path), _) => Some(path),
        (PasswordSource::Inline, Some(source)) => Some(source),
        _ => None,
    };
    file.and_then(|path| readable_by_others(path))
        .into_iter()
        .collect()
}

fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds the password and other users can read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}
