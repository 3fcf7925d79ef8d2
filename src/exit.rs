//! Exit codes (sysexits, DESIGN §3) and the mapping from errors to them.

use crate::config::ConfigError;
use crate::discover::NotFound;
use crate::phpfpm_test::{Rejected, TestError};

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNAVAILABLE: u8 = 69;
pub const CONFIG: u8 = 78;

/// An error that carries its own exit code (e.g. php-fpm rejected the
/// rendered config: 78; php-fpm kept crashing: 1).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

impl Fatal {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

/// The exit code for an error: the first cause that knows its code.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<Rejected>()
            || matches!(cause.downcast_ref(), Some(TestError::Rejected(_)))
        {
            return CONFIG;
        }
        if cause.is::<NotFound>() {
            return UNAVAILABLE;
        }
        if let Some(f) = cause.downcast_ref::<Fatal>() {
            return f.code;
        }
    }
    FAILURE
}
