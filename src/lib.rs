//! tqsup: runs php-fpm behind one FastCGI endpoint.
//!
//! See DESIGN.md for the contract; `README.md` for use.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod discover;
pub mod exit;
pub mod fcgi;
pub mod logging;
pub mod phpfpm_test;
pub mod render;
pub mod upstream;
