//! hotfolder: watches folders for finished video exports and uploads them to movingimage
//! VideoManager Pro with the platform's chunked upload protocol.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! watch ──► ready ──► queue ──► upload ──► finish
//! ```
//!
//! `config` turns the TOML file into validated [`config::Settings`]; `vmpro` is the platform
//! client (auth, API calls, the chunked upload engine); `retry` is the Fibonacci backoff;
//! `emulator` is the built-in VideoManager Pro emulator used by `demo`, `emulator` and tests.

pub mod agent;
pub mod cli;
pub mod config;
pub mod emulator;
mod error_chain;
pub mod finish;
pub mod logging;
pub mod ready;
pub mod retry;
pub mod store;
pub mod vmpro;
pub mod watch;

pub use error_chain::chain;
