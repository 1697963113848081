//! The movingimage VideoManager Pro platform: login, API calls and the chunked upload engine.
//! See `docs/` and the protocol notes in the README for what each answer means.

pub mod api;
pub mod auth;
pub mod chunks;
pub mod error;
