//! The copy of the settling files that `status` reads (another process): changes collected
//! and written in batches, and written whole after a reload or a failed write.

use super::*;

impl Intake {
    /// Schedules a write of the settling files when the trackers changed and none is due.
    pub(super) fn schedule_settling_flush(&mut self) {
        if self.settling_flush_at.is_none()
            && (self.settling_resync || self.folders.iter().any(|f| f.tracker.has_changes()))
        {
            self.settling_flush_at = Some(Instant::now() + SETTLING_FLUSH_EVERY);
        }
    }

    /// What changed among the settling files since the last call, for the store: every file
    /// and `true` when the whole set is to be written.
    pub(super) fn settling_changes(&mut self) -> (Vec<SettlingChange>, bool) {
        let full = std::mem::take(&mut self.settling_resync);
        // The tracker counts in monotonic time; `status` shows wall-clock times.
        let (now, wall_now) = (Instant::now(), OffsetDateTime::now_utc());
        let mut changes = Vec::new();
        for folder in &mut self.folders {
            let stable_for = folder.tracker.stable_for();
            let entries = if full {
                folder.tracker.take_all()
            } else {
                folder.tracker.take_changes()
            };
            changes.extend(entries.into_iter().map(|entry| match entry.quiet {
                Some(quiet) => SettlingChange::Settling(SettlingFile {
                    path: entry.path,
                    folder: folder.spec.root.clone(),
                    size: quiet.snapshot.size,
                    since: wall_now - now.saturating_duration_since(quiet.since),
                    stable_for,
                    waiting_for: quiet.waiting_for,
                }),
                None => SettlingChange::Done(entry.path),
            }));
        }
        (changes, full)
    }

    /// Writes the settling files' changes for `status`, in one transaction.
    pub(super) fn flush_settling(&mut self, store: &JobStore) {
        self.settling_flush_at = None;
        let (changes, full) = self.settling_changes();
        let result = if full {
            let files: Vec<SettlingFile> = changes
                .into_iter()
                .filter_map(|change| match change {
                    SettlingChange::Settling(file) => Some(file),
                    SettlingChange::Done(_) => None,
                })
                .collect();
            store.replace_settling(&files)
        } else {
            store.record_settling(&changes)
        };
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.settling_failing) {
                    tracing::info!("the files waiting to be complete are shown in status again");
                }
            }
            Err(err) => {
                if !self.settling_failing {
                    tracing::warn!(
                        "cannot record the files waiting to be complete, for status: {}; trying again every {} s",
                        chain(&err),
                        SETTLING_FLUSH_EVERY.as_secs()
                    );
                }
                self.settling_failing = true;
                self.settling_resync = true;
            }
        }
    }
}
