//! The link to the platform as uploads measured it (`vmpro::link::MeasuredLink`), kept between
//! runs so that `chunk_size = "auto"` starts from what was learnt: the rate, the round trip, and
//! the largest chunk the server takes once it refused a bigger one (for a day: see
//! `vmpro::link::CAP_LIFETIME`). One row per `api_url` (the platform), in the agent's queue and
//! in `hotfolder upload`'s memory alike.
//!
//! The row is read as untrusted: a value no link has (a 1000-byte cap, a rate of 1e308 bytes
//! per second, a negative or NaN one) is brought into range, with one warning per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::schema::Stamp;
use super::{JobStore, StoreError, now};
use crate::vmpro::link::{AUTO_MAX, ChunkCap, MeasuredLink, SMALLEST_CHUNK};

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

/// A later migration of both databases: the refusal behind `max_chunk`, whose time starts the
/// cap's lifetime. A row from before it has none; its `updated_at` stands in (the row was
/// written after the file whose chunk was refused).
pub(super) const LINK_REFUSAL_COLUMNS: &str = "
    ALTER TABLE link ADD COLUMN refused_chunk INTEGER;
    ALTER TABLE link ADD COLUMN refused_at TEXT;
";

/// The slowest rate taken from the store (1 KiB/s): below it, a link is not measured but broken.
const SLOWEST_RATE: f64 = 1024.0;
/// The fastest (100 Gbit/s).
const FASTEST_RATE: f64 = 12.5e9;
/// The longest round trip taken from the store: a minute is no link's latency.
const LONGEST_ROUND_TRIP: Duration = Duration::from_secs(60);

/// Whether an out-of-range row was already warned about in this process.
static WARNED: AtomicBool = AtomicBool::new(false);

/// A row as stored, before it is brought into range.
#[derive(Debug, Clone, Copy, Default)]
struct StoredLink {
    rate: Option<f64>,
    round_trip_us: Option<i64>,
    max_chunk: Option<i64>,
    refused_chunk: Option<i64>,
    refused_at: Option<OffsetDateTime>,
    updated_at: Option<OffsetDateTime>,
}

/// `stored` in range: what auto may use. The second value says what was out of range.
fn sane(stored: StoredLink) -> (MeasuredLink, Vec<&'static str>) {
    let mut odd = Vec::new();
    let rate = stored.rate.and_then(|rate| {
        if !rate.is_finite() || rate <= 0.0 {
            odd.push("rate");
            None
        } else if !(SLOWEST_RATE..=FASTEST_RATE).contains(&rate) {
            odd.push("rate");
            Some(rate.clamp(SLOWEST_RATE, FASTEST_RATE))
        } else {
            Some(rate)
        }
    });
    let round_trip = stored.round_trip_us.and_then(|us| match u64::try_from(us) {
        Ok(us) => {
            let took = Duration::from_micros(us);
            if took > LONGEST_ROUND_TRIP {
                odd.push("round_trip_us");
            }
            Some(took.min(LONGEST_ROUND_TRIP))
        }
        Err(_) => {
            odd.push("round_trip_us");
            None
        }
    });
    let in_range = |size: i64| {
        u64::try_from(size)
            .unwrap_or(0)
            .clamp(SMALLEST_CHUNK, AUTO_MAX)
    };
    let cap = stored.max_chunk.and_then(|max| {
        if max <= 0 {
            odd.push("max_chunk");
            return None;
        }
        let clamped = in_range(max);
        if i64::try_from(clamped).ok() != Some(max) {
            odd.push("max_chunk");
        }
        // A refusal's size is at least the cap's (the cap is half of it, or less).
        let refused = stored
            .refused_chunk
            .map_or(clamped.saturating_mul(2), |refused| {
                u64::try_from(refused).unwrap_or(0).max(clamped)
            });
        let at = stored.refused_at.or(stored.updated_at)?;
        Some(ChunkCap {
            max: clamped,
            refused,
            at: SystemTime::from(at),
        })
    });
    (
        MeasuredLink {
            rate,
            round_trip,
            cap,
        },
        odd,
    )
}

/// What was measured for `api_url`, in range; nothing known is all `None`. An expired cap is
/// returned too (the caller judges it against its clock).
pub(super) fn read_link(conn: &Connection, api_url: &str) -> Result<MeasuredLink, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT rate, round_trip_us, max_chunk, refused_chunk, refused_at, updated_at
             FROM link WHERE api_url = ?1",
        )?
        .query_row(params![api_url], |row| {
            // A value of the wrong type is as absurd as one out of range: read as nothing.
            Ok(StoredLink {
                rate: row.get::<_, Option<f64>>(0).ok().flatten(),
                round_trip_us: row.get::<_, Option<i64>>(1).ok().flatten(),
                max_chunk: row.get::<_, Option<i64>>(2).ok().flatten(),
                refused_chunk: row.get::<_, Option<i64>>(3).ok().flatten(),
                refused_at: row.get::<_, Option<Stamp>>(4).ok().flatten().map(|s| s.0),
                updated_at: row.get::<_, Option<Stamp>>(5).ok().flatten().map(|s| s.0),
            })
        })
        .optional()?;
    let (link, odd) = sane(found.unwrap_or_default());
    if !odd.is_empty() && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            api_url,
            "the state store's measured link has values no link has ({}); using them brought \
             into range",
            odd.join(", ")
        );
    }
    Ok(link)
}

/// Keeps `link` for `api_url`. A cap still in force in the row is not erased by a link that
/// knows of none (a client for another platform between, or one that was not seeded): only its
/// lifetime ends it.
pub(super) fn write_link(
    conn: &Connection,
    api_url: &str,
    link: &MeasuredLink,
) -> Result<(), StoreError> {
    let round_trip_us = link
        .round_trip
        .map(|took| i64::try_from(took.as_micros()).unwrap_or(i64::MAX));
    let written = now();
    let mut cap = link.cap_at(SystemTime::from(written));
    if cap.is_none() {
        cap = read_link(conn, api_url)?.cap_at(SystemTime::from(written));
    }
    let max_chunk = cap.map(|cap| i64::try_from(cap.max).unwrap_or(i64::MAX));
    let refused_chunk = cap.map(|cap| i64::try_from(cap.refused).unwrap_or(i64::MAX));
    let refused_at = cap.map(|cap| Stamp(OffsetDateTime::from(cap.at)));
    conn.execute(
        "INSERT INTO link (api_url, rate, round_trip_us, max_chunk, refused_chunk, refused_at,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (api_url) DO UPDATE SET rate = ?2, round_trip_us = ?3, max_chunk = ?4,
             refused_chunk = ?5, refused_at = ?6, updated_at = ?7",
        params![
            api_url,
            link.rate,
            round_trip_us,
            max_chunk,
            refused_chunk,
            refused_at,
            Stamp(written)
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

    const MIB: u64 = 1 << 20;

    fn cap_now(max: u64) -> ChunkCap {
        // Whole seconds: the store keeps nanoseconds, SystemTime may have finer ones.
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            );
        ChunkCap {
            max,
            refused: 2 * max,
            at,
        }
    }

    #[test]
    fn a_measured_link_survives_a_reopen_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.link("https://a/").unwrap(), MeasuredLink::default());
        let measured = MeasuredLink {
            rate: Some(117.5e6),
            round_trip: Some(Duration::from_micros(40_250)),
            cap: Some(cap_now(8 * MIB)),
        };
        store.record_link("https://a/", &measured).unwrap();
        let later = MeasuredLink {
            cap: None,
            ..measured
        };
        store.record_link("https://b/", &later).unwrap();
        drop(store);
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.link("https://a/").unwrap(), measured);
        assert_eq!(store.link("https://b/").unwrap(), later);
    }

    #[test]
    fn a_cap_in_force_is_not_erased_by_a_link_that_knows_of_none_but_an_expired_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let capped = MeasuredLink {
            cap: Some(cap_now(4 * MIB)),
            ..MeasuredLink::default()
        };
        store.record_link("https://a/", &capped).unwrap();
        // A client for another platform and back: its meter started without the cap.
        let unseeded = MeasuredLink {
            rate: Some(1e6),
            ..MeasuredLink::default()
        };
        store.record_link("https://a/", &unseeded).unwrap();
        let kept = store.link("https://a/").unwrap();
        assert_eq!(kept.cap, capped.cap);
        assert_eq!(kept.rate, Some(1e6));
        // A day later it is gone.
        let expired = ChunkCap {
            at: SystemTime::now() - crate::vmpro::link::CAP_LIFETIME - Duration::from_secs(5),
            ..cap_now(4 * MIB)
        };
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE link SET refused_at = ?1",
                    params![Stamp(OffsetDateTime::from(expired.at))],
                )?;
                Ok(())
            })
            .unwrap();
        assert!(
            store
                .link("https://a/")
                .unwrap()
                .cap_at(SystemTime::now())
                .is_none()
        );
        store.record_link("https://a/", &unseeded).unwrap();
        assert_eq!(store.link("https://a/").unwrap().cap, None);
    }

    #[test]
    fn garbage_in_the_link_row_is_brought_into_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        store
            .record_link(
                "https://a/",
                &MeasuredLink {
                    cap: Some(cap_now(4 * MIB)),
                    ..MeasuredLink::default()
                },
            )
            .unwrap();
        let set = |sql: &str| {
            store
                .write(|tx| {
                    tx.execute_batch(sql)?;
                    Ok(())
                })
                .unwrap();
            store.link("https://a/").unwrap()
        };
        let link = set("UPDATE link SET max_chunk = 1000, rate = 1e308, round_trip_us = 1e12");
        assert_eq!(link.cap.unwrap().max, SMALLEST_CHUNK);
        assert_eq!(link.rate, Some(FASTEST_RATE));
        assert_eq!(link.round_trip, Some(LONGEST_ROUND_TRIP));
        let link = set("UPDATE link SET max_chunk = 1e15, rate = 0.001, round_trip_us = -5");
        assert_eq!(link.cap.unwrap().max, AUTO_MAX);
        assert_eq!(link.rate, Some(SLOWEST_RATE));
        assert_eq!(link.round_trip, None);
        let link = set("UPDATE link SET max_chunk = -3, rate = -1e6");
        assert_eq!((link.cap, link.rate), (None, None));
        // NaN is stored as NULL by SQLite; text where a number belongs reads as nothing.
        let link = set("UPDATE link SET max_chunk = 'lots', rate = 'fast', refused_at = 'then'");
        assert_eq!((link.cap, link.rate), (None, None));
        let (nan, odd) = sane(StoredLink {
            rate: Some(f64::NAN),
            ..StoredLink::default()
        });
        assert_eq!((nan.rate, odd), (None, vec!["rate"]));
        let (inf, _) = sane(StoredLink {
            rate: Some(f64::INFINITY),
            ..StoredLink::default()
        });
        assert_eq!(inf.rate, None);
    }
}
