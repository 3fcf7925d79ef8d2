//! tqsup: runs php-fpm behind one FastCGI endpoint.
//!
//! See DESIGN.md for the contract; `README.md` for use.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod dev;
pub mod discover;
pub mod exit;
pub mod logging;
pub mod metrics;
pub mod phpfpm_test;
pub mod render;
pub mod upstream;
