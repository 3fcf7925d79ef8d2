//! tqsup: runs php-fpm behind one FastCGI endpoint.
//!
//! See DESIGN.md for the contract; `README.md` for use.

// `deny`, not `forbid`: supervisor/child.rs holds the one allowed unsafe
// block (PR_SET_PDEATHSIG in `pre_exec`).
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod dev;
pub mod discover;
pub mod exit;
pub mod fcgi;
pub mod generation;
pub mod logging;
pub mod metrics;
pub mod phpfpm_test;
pub mod render;
pub mod runtime_dir;
pub mod signals;
pub mod supervisor;
