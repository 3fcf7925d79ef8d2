//! `log:`: tqsup's own log and the access log.

use super::Checker;
use crate::config::defaults::*;
use crate::config::model::Log;
use crate::config::raw::{RawLog, Scalar};

pub(super) fn read(c: &mut Checker, r: &RawLog) -> Log {
    let format = c.choice(key!(r.format)).unwrap_or(LOG_FORMAT);
    let level = c.or(
        key!(r.level),
        LOG_LEVEL.into(),
        "a level such as info or debug",
    );
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        let message = format!("`{level}` is not a log filter: {e}");
        c.problem("level", message, "use error, warn, info, debug or trace");
    }
    let access = match c.or(
        key!(r.access),
        Scalar::Bool(false),
        "true, false or a file path",
    ) {
        Scalar::Bool(false) => None,
        Scalar::Bool(true) => Some(None),
        Scalar::Str(p) if !p.trim().is_empty() => Some(Some(c.path(&p))),
        other => {
            let message = format!("`{}` is neither true, false nor a file path", other.text());
            c.problem(
                "access",
                message,
                "write true (into tqsup's log), false, or the path of a file",
            );
            None
        }
    };
    Log {
        format,
        level,
        access,
    }
}
