//! The movingimage VideoManager Pro platform: login, API calls and the chunked upload engine.
//! What each answer means is decided in one place, `error::classify`; the emulator in
//! `crate::emulator` is a strict model of the documented protocol.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod bandwidth;
pub(crate) mod chunks;
pub(crate) mod companion_calls;
pub(crate) mod create;
pub(crate) mod error;
pub(crate) mod link;
pub(crate) mod login_check;
pub(crate) mod login_policy;
pub(crate) mod system_roots;
pub(crate) mod transcoding;
