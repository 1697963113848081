//! The link to the platform as uploads measured it (`vmpro::link::MeasuredLink`), kept between
//! runs so that `chunk_size = "auto"` starts from what was learnt: the rate, the round trip, and
//! the largest chunk the server takes once it refused a bigger one. One row per `api_url` (the
//! platform), in the agent's queue and in `hotfolder upload`'s memory alike.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::Stamp;
use super::{JobStore, StoreError, now};
use crate::vmpro::link::MeasuredLink;

/// The table, as a migration of both databases creates it.
pub(super) const LINK_TABLE: &str = "
    CREATE TABLE link (
        api_url       TEXT PRIMARY KEY,
        -- bytes per second one upload's chunks crossed at (a running average)
        rate          REAL,
        -- the wait for an answer: the smallest recent round trip
        round_trip_us INTEGER,
        -- the largest chunk the server takes, once it refused a bigger one (413)
        max_chunk     INTEGER,
        updated_at    TEXT NOT NULL
    );
";

/// What was measured for `api_url`; nothing known is all `None`.
pub(super) fn read_link(conn: &Connection, api_url: &str) -> Result<MeasuredLink, StoreError> {
    let found = conn
        .prepare_cached("SELECT rate, round_trip_us, max_chunk FROM link WHERE api_url = ?1")?
        .query_row(params![api_url], |row| {
            Ok(MeasuredLink {
                rate: row
                    .get::<_, Option<f64>>(0)?
                    .filter(|rate| rate.is_finite() && *rate > 0.0),
                round_trip: row.get::<_, Option<u64>>(1)?.map(Duration::from_micros),
                max_chunk: row.get::<_, Option<u64>>(2)?.filter(|size| *size > 0),
            })
        })
        .optional()?;
    Ok(found.unwrap_or_default())
}

pub(super) fn write_link(
    conn: &Connection,
    api_url: &str,
    link: &MeasuredLink,
) -> Result<(), StoreError> {
    let round_trip_us = link
        .round_trip
        .map(|took| u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    conn.execute(
        "INSERT INTO link (api_url, rate, round_trip_us, max_chunk, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (api_url) DO UPDATE SET rate = ?2, round_trip_us = ?3, max_chunk = ?4,
             updated_at = ?5",
        params![
            api_url,
            link.rate,
            round_trip_us,
            link.max_chunk,
            Stamp(now())
        ],
    )?;
    Ok(())
}

impl JobStore {
    /// What earlier runs measured of the link to `api_url`.
    pub fn link(&self, api_url: &str) -> Result<MeasuredLink, StoreError> {
        self.read(|conn| read_link(conn, api_url))
    }

    /// Keeps what was measured of the link to `api_url` for later runs.
    pub fn record_link(&self, api_url: &str, link: &MeasuredLink) -> Result<(), StoreError> {
        self.write(|tx| write_link(tx, api_url, link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_link_survives_a_reopen_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.link("https://a/").unwrap(), MeasuredLink::default());
        let measured = MeasuredLink {
            rate: Some(117.5e6),
            round_trip: Some(Duration::from_micros(40_250)),
            max_chunk: Some(8 << 20),
        };
        store.record_link("https://a/", &measured).unwrap();
        let later = MeasuredLink {
            max_chunk: None,
            ..measured
        };
        store.record_link("https://b/", &later).unwrap();
        drop(store);
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.link("https://a/").unwrap(), measured);
        assert_eq!(store.link("https://b/").unwrap(), later);
    }
}
