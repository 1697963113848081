//! Notifications (`[[notify]]`): telling people and other systems what happened, without ever
//! losing an event and without ever slowing an upload.
//!
//! ```text
//! job change ──(same transaction)──► outbox in the state store ──► one task per destination
//!                                     (store/outbox.rs)              webhook POST / e-mail
//! ```
//!
//! An event is written to the store in the transaction of the change that causes it (a file
//! done or failed, a pause announced, a folder gone), one row per destination that subscribes
//! to it; a task per destination sends its rows in order and deletes each once the destination
//! took it (`2xx`), refused it for good (a `4xx` other than 408 and 429), or it is older than
//! [`GIVE_UP_AFTER`]. So an event survives `kill -9` and goes out after the restart, at least
//! once, with the same `id`.
//!
//! - `event`: the kinds of event and the JSON body;
//! - `secret_url`: URLs shown as scheme and host only (webhook URLs carry tokens);
//! - `webhook`: the JSON and Slack bodies, the signature, the POST and how its answer counts;
//! - `email`: messages through `[smtp]` (STARTTLS or TLS, never plain), a batch per message;
//! - `delivery`: the per-destination loop: order, backoff, giving up.

mod delivery;
mod email;
mod event;
mod secret_url;
mod webhook;

use std::time::Duration;

pub use delivery::Outbox;
pub use event::{EventKind, Notice, host_name, path_text};
pub use secret_url::{SecretUrl, masked as masked_url};

/// How long an event is tried before it is dropped with a log line.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A pause is announced (`paused`) only once it has lasted this long, so a network blip of a
/// few seconds is not an alert; `resumed` is sent only for a pause that was announced.
pub const PAUSE_NOTICE_AFTER: Duration = Duration::from_secs(120);

/// [`PAUSE_NOTICE_AFTER`]; in debug builds `HOTFOLDER_TEST_PAUSE_NOTICE_AFTER` (`3s`) shortens
/// it, so that tests of the binary need not wait 2 minutes per pause.
pub fn pause_notice_after() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(wait) = std::env::var("HOTFOLDER_TEST_PAUSE_NOTICE_AFTER")
        .ok()
        .and_then(|text| humantime::parse_duration(&text).ok())
    {
        return wait;
    }
    PAUSE_NOTICE_AFTER
}
