//! `log:`: tqsup's own log and the access log.

use super::*;

pub(super) fn read(c: &mut Checker, r: &RawLog) -> Log {
    let format = c.choice(key!(r.format)).unwrap_or(LOG_FORMAT);
    let expect = "a level such as info or debug";
    let level = c.or(key!(r.level), LOG_LEVEL.into(), expect);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        let why = format!("`{level}` is not a log filter: {e}");
        c.problem("level", why, "use error, warn, info, debug or trace");
    }
    let expect = "true, false or a file path";
    let access = match c.or(key!(r.access), Scalar::Bool(false), expect) {
        Scalar::Bool(false) => None,
        Scalar::Bool(true) => Some(None),
        Scalar::Str(p) if !p.trim().is_empty() => Some(Some(c.path(&p))),
        other => {
            let why = format!("`{}` is neither true, false nor a file path", other.text());
            let fix = "write true (into tqsup's log), false, or the path of a file";
            c.problem("access", why, fix);
            None
        }
    };
    Log {
        format,
        level,
        access,
    }
}
