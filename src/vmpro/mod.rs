//! The movingimage VideoManager Pro platform: login, API calls and the chunked upload engine.
//! What each answer means is decided in one place, `error::classify`; the emulator in
//! `crate::emulator` is a strict model of the documented protocol.

pub mod api;
pub mod auth;
pub mod chunks;
pub mod error;
