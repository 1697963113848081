//! Where things are: the default config, state and log locations (systemd's directories
//! first, then the platform's), and how a path written in the config file becomes the
//! absolute path the agent uses.

use std::path::{Component, Path, PathBuf};

/// The config file to use when none is given: `$HOTFOLDER_CONFIG`, then the platform config
/// directory (`~/.config/hotfolder/config.toml` on Linux). `None` only when neither is known.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("HOTFOLDER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    project_dirs().map(|dirs| dirs.config_dir().join("config.toml"))
}

/// Where the state store lives unless `[state] dir` says otherwise: `$STATE_DIRECTORY` (set by
/// systemd's `StateDirectory=`; its first entry when there are several), then the platform
/// data directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = first_systemd_dir("STATE_DIRECTORY") {
        return dir;
    }
    data_dir().join("state")
}

/// Where logs go unless `[log] dir` says otherwise: `$LOGS_DIRECTORY` (systemd's
/// `LogsDirectory=`), then the platform data directory.
pub fn default_log_dir() -> PathBuf {
    if let Some(dir) = systemd_log_dir() {
        return dir;
    }
    data_dir().join("logs")
}

/// `$LOGS_DIRECTORY`: the unit asked systemd for a log directory (`LogsDirectory=`).
pub(super) fn systemd_log_dir() -> Option<PathBuf> {
    first_systemd_dir("LOGS_DIRECTORY")
}

fn first_systemd_dir(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var)?;
    // systemd joins several directories with ':'; paths with a ':' of their own are not
    // something systemd creates.
    let value = value.to_string_lossy().into_owned();
    value
        .split(':')
        .find(|part| !part.is_empty())
        .map(PathBuf::from)
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "hotfolder")
}

fn data_dir() -> PathBuf {
    match project_dirs() {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        // No home directory (a bare service account): the temp dir at least exists and is
        // writable; `check` shows the path so the operator can set one explicitly.
        None => std::env::temp_dir().join("hotfolder"),
    }
}

/// `~/x` to the home directory, relative paths against `base`, `.` and `..` removed.
pub(super) fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    let expanded = match path.strip_prefix("~") {
        Ok(rest) => match directories::BaseDirs::new() {
            Some(dirs) => dirs.home_dir().join(rest),
            None => path.to_path_buf(),
        },
        Err(_) => path.to_path_buf(),
    };
    normalize_lexically(&base.join(expanded))
}

fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The path with its longest existing ancestor canonicalised, so that a done dir that does
/// not exist yet still compares equal to the same place written another way.
pub(super) fn canonical_prefix(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut out = canonical;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_lose_dot_segments() {
        assert_eq!(
            resolve_path(Path::new("/etc/hotfolder"), Path::new("../srv/./x")),
            PathBuf::from("/etc/srv/x")
        );
    }
}
