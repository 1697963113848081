//! Build script: what `hotfolder --version` says beyond the crate version, the git commit and
//! the build date, when they are known. The commit comes from `git rev-parse` in a checkout, or
//! from `HOTFOLDER_GIT_COMMIT` for a build from a tarball; the date from `SOURCE_DATE_EPOCH`
//! when set (reproducible builds: Debian and Homebrew set it), else the day of the build. No
//! dependencies: a few lines of std.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=HOTFOLDER_GIT_COMMIT");

    let commit = std::env::var("HOTFOLDER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_owned())
        .or_else(git_commit);
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text.trim().parse::<i64>().ok(),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok()),
    };
    let date = epoch.map(civil_date);

    let details = match (commit, date) {
        (Some(commit), Some(date)) => format!(" (commit {commit}, built {date})"),
        (Some(commit), None) => format!(" (commit {commit})"),
        (None, Some(date)) => format!(" (built {date})"),
        (None, None) => String::new(),
    };
    println!(
        "cargo:rustc-env=HOTFOLDER_VERSION={}{details}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}

/// The checkout's commit (12 hex digits), with the files that change when it does marked for a
/// rerun; `None` outside a git checkout or without git.
fn git_commit() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8(output.stdout).ok()?;
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    };
    // A tarball unpacked inside some other checkout (a home directory kept in git) would
    // otherwise show that checkout's commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(&manifest_dir).ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD moves when a branch is checked out; the branch's ref (loose or packed) when a commit
    // is made. Only files that exist are named: cargo reruns a script every time for a missing
    // one, and that would rebuild the crate at every build.
    let mut watched = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(manifest_dir.join(git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = manifest_dir.join(common);
        watched.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
    }
    for path in watched.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}

/// Seconds since 1970 as a UTC date, `YYYY-MM-DD` (Howard Hinnant's days-to-civil algorithm).
pub(crate) fn civil_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
