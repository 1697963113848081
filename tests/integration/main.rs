//! The integration tests: one test binary with a module per area, all against the library and
//! the real `hotfolder` binary, on loopback only. One binary (instead of one per file) links the
//! dependency graph once; its tests run as threads of one process, so none may change the
//! process's environment, working directory or other global state (children get theirs with
//! `Command::env` and `Command::current_dir`).
//!
//! One area: `cargo test --test integration agent::`; one test: add its name after the `::`.
//! The fault-injection soak is its own binary, `tests/soak.rs` (`cargo test --test soak`).

mod account;
mod agent;
mod bad_inputs;
mod bandwidth;
mod chunk_size;
mod commands;
mod completeness;
mod config;
mod emulator;
mod error_chains;
mod file_safety;
mod finish;
mod http;
mod install;
mod lookup;
mod metadata;
mod notify;
mod operate;
mod packaging;
mod retention;
mod service;
mod shared_folder;
mod shares;
mod status;
mod store;
mod transcoding;
mod upload;
mod upload_memory;
mod util;
mod watch;
