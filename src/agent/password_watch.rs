//! Notices a new password in `password_file` while the agent runs: the file is looked at every
//! [`PASSWORD_CHECK_EVERY`] and read again when its `stat` changed. A new password is used by
//! the next login, and a queue paused for refused logins tries it at once: writing the right
//! password into the file is enough, without a reload or a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// How often the password file is looked at (a `stat`; it is read only when that changed).
pub(super) const PASSWORD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Watches the password file of the platform client in use until `shutdown`.
pub(super) async fn watch_password_file(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PASSWORD_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once until it changes: a file being rewritten is unreadable for a moment.
    let mut last_problem: Option<String> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Read again each time: a reload replaces the client (and maybe the file's path).
        let platform = shared.platform();
        // Off the async threads: the file may be on a slow or hung file system.
        let checked =
            tokio::task::spawn_blocking(move || platform.session.reread_password_file()).await;
        match checked {
            Ok(Ok(changed)) => {
                last_problem = None;
                if changed {
                    tracing::info!(
                        "the password file changed; the next login uses the new password"
                    );
                    if shared.dispatch.probe_now(Instant::now()) {
                        shared.wake.notify_one();
                    }
                }
            }
            Ok(Err(problem)) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(
                        "cannot read the password file again ({problem}); logins keep the password read before"
                    );
                    last_problem = Some(problem);
                }
            }
            Err(err) => tracing::warn!("checking the password file failed: {err}"),
        }
    }
}
