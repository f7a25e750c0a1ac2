//! kache: a build cache for Rust and C/C++.
//!
//! The binary (`src/main.rs`) decides between wrapper mode (`kache <compiler>
//! <args…>`) and CLI mode; this library holds what both use: the store, the
//! counters, the configuration, and the wrappers' glue between the pure
//! argument understanding in `kache-wrapper` and the store.

pub mod cli_ops;
pub mod config;
pub mod daemon;
pub mod debug;
pub mod doctor;
pub mod env;
pub mod events;
pub mod gc;
pub mod init;
pub mod log;
pub mod mount;
pub mod path_search;
pub mod remote;
pub mod report;
pub mod seed;
pub mod shims;
pub mod stats;
pub mod store;
pub mod worktree;
pub mod wrap;
