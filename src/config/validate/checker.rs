//! The scoped checker: reads a section's raw fields under its key path, so a
//! key is named once, where its field is read. Each problem carries the full
//! dotted path (the legacy name when the key was mapped from one), and a bad
//! value is replaced by its default so validation goes on to find the rest.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use super::Context;
use crate::config::endpoint::{parse_endpoint, resolve, socket_path_problem};
use crate::config::model::{Choice, Endpoint};
use crate::config::problem::{Problem, closest, describe};
use crate::config::raw::{Field, Section};

/// A key of the section being read and its raw field: `key!(r.field)`, or
/// `("type", &r.kind)` for a field renamed from a Rust keyword.
pub(super) type Key<'f, T> = (&'static str, &'f Field<T>);

/// What a flag expects.
pub(super) const BOOL: &str = "true or false";
/// What a count expects.
pub(super) const WHOLE: &str = "a whole number";
/// What a key in milliseconds expects.
pub(super) const MILLIS: &str = "a whole number of milliseconds";

const ENDPOINT_FIX: &str =
    "write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock)";
const SHORTER: &str = "use a shorter path, e.g. under /run";

/// `name` inside the section at `path` (the top when empty).
pub(super) fn child(path: &str, name: &str) -> String {
    match path {
        "" => name.to_string(),
        path => format!("{path}.{name}"),
    }
}

/// Collects problems while validation reads the raw document.
pub(super) struct Checker<'a> {
    /// The config file's directory, the mode, the environment, the aliases.
    pub ctx: &'a Context<'a>,
    /// The section being read, e.g. `php_fpm.pool`; empty at the top.
    path: String,
    /// Every problem found so far, in the order found.
    pub problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    /// A checker at the top of the document, with nothing found yet.
    pub fn new(ctx: &'a Context<'a>) -> Self {
        let (path, problems) = (String::new(), Vec::new());
        Checker {
            ctx,
            path,
            problems,
        }
    }

    /// The dotted path problems show for `name`: the legacy key it was
    /// mapped from, if any.
    fn shown(&self, name: &str) -> String {
        let key = child(&self.path, name);
        self.ctx.aliases.get(&key).cloned().unwrap_or(key)
    }

    /// The fix "set `name` to {what}", naming the key as the file writes it.
    fn set(&self, name: &str, what: impl Display) -> String {
        let shown = self.shown(name);
        let written = shown.rsplit('.').next().unwrap_or(name);
        format!("set `{written}` to {what}")
    }

    /// Reports a problem at `name` in the current section.
    pub fn problem(&mut self, name: &str, message: impl Into<String>, fix: impl Into<String>) {
        let key = self.shown(name);
        self.problems.push(Problem::new(key, message, fix));
    }

    /// Reports a problem at `at` unless `ok`.
    pub fn require(&mut self, ok: bool, at: &str, why: impl Into<String>, fix: impl Into<String>) {
        if !ok {
            self.problem(at, why, fix);
        }
    }

    /// The value when set; a value of the wrong type is reported
    /// ("expected {expect}") and read as unset.
    pub fn get<T: Clone>(&mut self, (name, field): Key<T>, expect: &str) -> Option<T> {
        if let Field::Bad { value } = field {
            let message = format!("expected {expect}, found {}", describe(value));
            self.problem(name, message, self.set(name, expect));
        }
        field.get().cloned()
    }

    /// The value, or `default` when unset or of the wrong type.
    pub fn or<T: Clone>(&mut self, key: Key<T>, default: T, expect: &str) -> T {
        self.get(key, expect).unwrap_or(default)
    }

    /// A count that must be at least 1 (else reported with `fix`).
    pub fn count(&mut self, key: Key<u32>, default: u32, fix: String) -> u32 {
        let n = self.or(key, default, WHOLE);
        self.require(n >= 1, key.0, "must be at least 1", fix);
        n
    }

    /// A duration written in milliseconds, at least `min`.
    pub fn ms(&mut self, key: Key<u64>, default: Duration, min: u64) -> Duration {
        let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        let v = self.or(key, default, MILLIS);
        let fix = self.set(key.0, format!("{min} or more"));
        let why = format!("must be at least {min} ms, is {v}");
        self.require(v >= min, key.0, why, fix);
        Duration::from_millis(v)
    }

    /// One of the words of `T`; None when unset, of the wrong type or unknown.
    pub fn choice<T: Choice>(&mut self, key: Key<String>) -> Option<T> {
        let word = self.get(key, &T::one_of())?;
        let value = T::from_word(&word);
        if value.is_none() {
            let message = format!("unknown {} `{word}`", T::WHAT);
            self.problem(key.0, message, format!("use {}", T::one_of()));
        }
        value
    }

    /// A path, absolute against the config file's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        resolve(self.ctx.base_dir, p)
    }

    /// Reads a section (empty when unset or not a mapping) with `f`, inside
    /// its key path.
    pub fn section<T: Section, R>(&mut self, key: Key<T>, f: impl FnOnce(&mut Self, &T) -> R) -> R {
        let section = self.or(key, T::default(), "a mapping (key: value lines)");
        self.within(key.0, &section, |c| f(c, &section))
    }

    /// Reads each item of a list with `f`, inside `name[i]`.
    pub fn list<T: Section, R>(
        &mut self,
        key: Key<Vec<T>>,
        expect: &str,
        mut f: impl FnMut(&mut Self, usize, &T) -> R,
    ) -> Vec<R> {
        let items = self.or(key, Vec::new(), expect);
        let read = |(i, item)| self.within(&format!("{}[{i}]", key.0), item, |c| f(c, i, item));
        items.iter().enumerate().map(read).collect()
    }

    /// Runs `f` inside the section `name`, after reporting the keys of
    /// `section` it does not know.
    fn within<T: Section, R>(&mut self, name: &str, s: &T, f: impl FnOnce(&mut Self) -> R) -> R {
        let inner = child(&self.path, name);
        let outer = std::mem::replace(&mut self.path, inner);
        self.unknown(s);
        let out = f(self);
        self.path = outer;
        out
    }

    /// Reports each key of `section` it does not know, with the closest
    /// known one as the fix.
    pub fn unknown<T: Section>(&mut self, section: &T) {
        let known = T::known_keys();
        for key in section.unknown().keys() {
            let fix = match closest(key, &known) {
                Some(k) => format!("did you mean `{}`?", child(&self.path, k)),
                None => format!("remove it; known keys here: {}", known.join(", ")),
            };
            self.problem(key, "unknown key", fix);
        }
    }

    /// Reports `pattern` at `name` when it is not a valid glob.
    pub fn glob(&mut self, name: &str, pattern: &str) {
        if let Err(e) = globset::Glob::new(pattern) {
            let message = format!("`{pattern}` is not a valid glob: {e}");
            self.problem(name, message, "fix the pattern");
        }
    }

    /// [`Checker::glob`] for each item of the list `name`.
    pub fn globs(&mut self, name: &str, patterns: &[String]) {
        for (i, pattern) in patterns.iter().enumerate() {
            self.glob(&format!("{name}[{i}]"), pattern);
        }
    }

    /// The endpoint a key names, a unix socket path the kernel can take.
    pub fn endpoint(&mut self, key: Key<String>, expect: &str) -> Option<Endpoint> {
        let text = self.get(key, expect)?;
        let (why, fix) = match parse_endpoint(self.ctx.base_dir, &text) {
            Ok(Endpoint::Unix(p)) if let Some(why) = socket_path_problem(&p) => (why, SHORTER),
            Ok(endpoint) => return Some(endpoint),
            Err(why) => (why, ENDPOINT_FIX),
        };
        self.problem(key.0, why, fix);
        None
    }
}
