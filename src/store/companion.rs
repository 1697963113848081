//! A job's companion (`metadata_file`), kept so that a restart mid-upload still applies the
//! metadata it was started with (the companion may be gone or changed by then), and what the
//! calls after the upload made of it, for the sidecar. One row per job that had one.

use rusqlite::{OptionalExtension, params};

use super::schema::Json;
use super::{JobStore, StoreError};
use crate::metadata::Companion;
use crate::metadata::apply::CompanionCall;

/// v14: the table.
pub(super) const COMPANION_TABLE: &str = "
    CREATE TABLE job_companions (
        job_id        INTEGER PRIMARY KEY,
        -- the companion as read when the upload started (crate::metadata::Companion, JSON)
        companion     TEXT NOT NULL,
        -- the calls after the upload and how each went (JSON list), once they ran
        calls         TEXT
    );
";

/// What the store keeps of a job's companion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCompanion {
    pub companion: Companion,
    /// `None` until the calls after the upload ran.
    pub calls: Option<Vec<CompanionCall>>,
}

impl JobStore {
    /// Records the companion a job's upload starts with (again: the same job, the same row).
    pub fn record_companion(&self, id: i64, companion: &Companion) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO job_companions (job_id, companion) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO UPDATE SET companion = excluded.companion",
                params![id, Json(companion)],
            )?;
            Ok(())
        })
    }

    /// Records how the calls after the upload went.
    pub fn record_companion_calls(
        &self,
        id: i64,
        calls: &[CompanionCall],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE job_companions SET calls = ?2 WHERE job_id = ?1",
                params![id, Json(&calls)],
            )?;
            Ok(())
        })
    }

    /// The job's companion, if its upload started with one.
    pub fn companion(&self, id: i64) -> Result<Option<JobCompanion>, StoreError> {
        self.read(|conn| {
            let row = conn
                .prepare_cached("SELECT companion, calls FROM job_companions WHERE job_id = ?1")?
                .query_row(params![id], |row| {
                    let companion: Json<Companion> = row.get(0)?;
                    let calls: Option<Json<Vec<CompanionCall>>> = row.get(1)?;
                    Ok(JobCompanion {
                        companion: companion.0,
                        calls: calls.map(|c| c.0),
                    })
                })
                .optional()?;
            Ok(row)
        })
    }
}
