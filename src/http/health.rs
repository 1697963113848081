//! `/healthz`: healthy while every configured folder is watched and uploads are not paused
//! (nor held for a VideoManager the platform does not know),
//! read from the same snapshot as `status`. A load balancer or a service monitor needs only the
//! status code; the JSON says why, in the words `status` uses.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::status_report::StatusSnapshot;

/// One configured folder as health and `hotfolder_folder_up` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FolderHealth {
    pub path: PathBuf,
    /// Why it is not watched; `None` while it is.
    pub problem: Option<String>,
}

/// Each configured folder (`configured`, the agent's settings now) against what the agent
/// recorded for `status`: missing (with the reason it gave), watched, or neither yet (the agent
/// is starting, or a reload just added it).
pub(super) fn folder_health(
    configured: &[PathBuf],
    snapshot: &StatusSnapshot,
) -> Vec<FolderHealth> {
    configured
        .iter()
        .map(|path| {
            let missing = snapshot.missing.iter().find(|m| &m.path == path);
            let watched = snapshot.watched.iter().any(|w| &w.path == path);
            let problem = match (missing, watched) {
                (Some(missing), _) => Some(missing.why.clone()),
                (None, true) => None,
                (None, false) => Some("not watched yet".to_owned()),
            };
            FolderHealth {
                path: path.clone(),
                problem,
            }
        })
        .collect()
}

/// Healthy or not, and the JSON body: `{"status":"ok"}`, or `{"status":"unhealthy",
/// "reasons":[…]}` with one sentence per problem, plus the pause and the folders as fields.
pub(super) fn health(snapshot: &StatusSnapshot, folders: &[FolderHealth]) -> (bool, Value) {
    let mut reasons = Vec::new();
    if let Some((reason, _)) = &snapshot.pause {
        reasons.push(format!("uploads are paused: {reason}"));
    }
    for held in &snapshot.held {
        reasons.push(format!(
            "uploads into VideoManager {} are held: {}",
            held.id, held.reason
        ));
    }
    let unwatched: Vec<Value> = folders
        .iter()
        .filter_map(|folder| {
            let problem = folder.problem.as_ref()?;
            reasons.push(format!(
                "folder {} is not watched: {problem}",
                folder.path.to_string_lossy()
            ));
            Some(json!({"path": folder.path.to_string_lossy(), "why": problem}))
        })
        .collect();
    if reasons.is_empty() {
        // A notification backlog is not ill health (uploads go on), but a monitor reading the
        // body should see it: a destination failing for hours loses alerts after 24 h.
        let notes: Vec<String> = snapshot
            .notifications
            .iter()
            .filter(|b| b.pending > 0 && b.failing_since.is_some())
            .map(|b| {
                format!(
                    "{} notification(s) waiting for {}, whose deliveries fail: {}",
                    b.pending,
                    b.shown,
                    b.last_error.as_deref().unwrap_or("unknown")
                )
            })
            .collect();
        if notes.is_empty() {
            return (true, json!({"status": "ok"}));
        }
        return (true, json!({"status": "ok", "notes": notes}));
    }
    let pause = snapshot.pause.as_ref().map(|(reason, since)| {
        json!({
            "reason": reason,
            "since": since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        })
    });
    (
        false,
        json!({
            "status": "unhealthy",
            "reason": reasons.join("; "),
            "reasons": reasons,
            "queue_paused": pause,
            "folders_not_watched": unwatched,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ShownCounts;
    use crate::store::{FolderMode, MissingFolder};
    use time::OffsetDateTime;

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            store_path: PathBuf::from("/state/jobs.sqlite3"),
            counts: ShownCounts::default(),
            pause: None,
            held: Vec::new(),
            missing: Vec::new(),
            watched: Vec::new(),
            settling: Vec::new(),
            unfinished: Vec::new(),
            recent: Vec::new(),
            transcoding: Vec::new(),
            bandwidth: None,
            notifications: Vec::new(),
            chunk_cap: None,
            agents: Vec::new(),
            not_answering: Vec::new(),
        }
    }

    fn watched(path: &str) -> FolderMode {
        FolderMode {
            path: PathBuf::from(path),
            mode: "events (ext4)".into(),
            events: true,
            polling_every: None,
            file_system: Some("ext4".into()),
            network: false,
            limit_sysctl: None,
        }
    }

    #[test]
    fn healthy_only_while_every_folder_is_watched_and_nothing_is_paused() {
        let configured = [PathBuf::from("/a"), PathBuf::from("/b")];
        let mut snapshot = snapshot();
        snapshot.watched = vec![watched("/a"), watched("/b")];
        let (healthy, body) = health(&snapshot, &folder_health(&configured, &snapshot));
        assert!(healthy);
        assert_eq!(body, json!({"status": "ok"}));

        snapshot.watched.pop();
        snapshot.missing.push(MissingFolder {
            path: PathBuf::from("/b"),
            why: "it does not exist".into(),
            since: OffsetDateTime::UNIX_EPOCH,
        });
        snapshot.pause = Some(("storage quota reached".into(), OffsetDateTime::UNIX_EPOCH));
        let (healthy, body) = health(&snapshot, &folder_health(&configured, &snapshot));
        assert!(!healthy);
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(
            body["reasons"],
            json!([
                "uploads are paused: storage quota reached",
                "folder /b is not watched: it does not exist"
            ])
        );
        assert_eq!(body["queue_paused"]["since"], "1970-01-01T00:00:00Z");
        assert_eq!(body["folders_not_watched"][0]["path"], "/b");
    }

    #[test]
    fn a_folder_neither_watched_nor_missing_is_not_watched_yet() {
        let snapshot = snapshot();
        let folders = folder_health(&[PathBuf::from("/new")], &snapshot);
        assert_eq!(folders[0].problem.as_deref(), Some("not watched yet"));
        assert!(!health(&snapshot, &folders).0);
    }
}
