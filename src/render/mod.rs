//! Rendering php-fpm's configuration from `templates/` (compiled in) and
//! building the php-fpm command line (DESIGN §5–§6).
//!
//! `print-cmd`, `check` and `run` all go through [`render`] and
//! [`php_fpm_command`], so what is printed is what runs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::{Config, Endpoint};

mod identity;
mod internal_paths;

pub use identity::{Identity, checked_identity, identity_warnings, resolve_identity};
pub use internal_paths::InternalPaths;

const MAIN_TEMPLATE: &str = include_str!("../../templates/php-fpm.conf");
const POOL_TEMPLATE: &str = include_str!("../../templates/pool.conf");

/// php-fpm's main file name inside a rendered directory.
pub const MAIN_FILE: &str = "php-fpm.conf";
/// The private socket's name inside the runtime directory.
pub const SOCKET_FILE: &str = "php-fpm.sock";
/// The socket of php-fpm's status pool (`pm.status_listen`) of the first
/// instance; see [`socket_files`].
pub const STATUS_SOCKET_FILE: &str = "status.sock";

/// The socket files of php-fpm instance `instance` (1 = the first start,
/// the one `print-cmd` shows). A reload starts the new php-fpm beside the
/// old one, so each instance listens on sockets of its own: a request is
/// never sent to an instance that is being retired.
pub fn socket_files(instance: u64) -> (String, String) {
    if instance <= 1 {
        (SOCKET_FILE.to_string(), STATUS_SOCKET_FILE.to_string())
    } else {
        (
            format!("php-fpm.{instance}.sock"),
            format!("status.{instance}.sock"),
        )
    }
}

/// The text of a rendered file set, before it is written anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFiles {
    /// The directory the files refer to (include path, socket).
    pub dir: PathBuf,
    /// `php-fpm.conf`.
    pub main: String,
    /// `pool.d/<pool>.conf`, relative path and text.
    pub pool_file: PathBuf,
    pub pool: String,
    /// php-fpm's listen address as rendered.
    pub endpoint: Endpoint,
    /// php-fpm's status pool (`pm.status_listen`): a unix socket in `dir`
    /// answering the ping and status paths with children of its own, so
    /// liveness and metrics never wait for a child of the main pool.
    pub status: Endpoint,
}

impl RenderedFiles {
    pub fn main_path(&self) -> PathBuf {
        self.dir.join(MAIN_FILE)
    }

    /// Writes the files into `self.dir` (which must exist): 0600 files, the
    /// `pool.d` directory 0700. Returns the paths written.
    pub fn write(&self) -> anyhow::Result<Vec<PathBuf>> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let pool_dir = self.dir.join("pool.d");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&pool_dir)
            .with_context(|| format!("creating {}", pool_dir.display()))?;
        let mut written = Vec::new();
        for (path, text) in [
            (self.main_path(), &self.main),
            (self.dir.join(&self.pool_file), &self.pool),
        ] {
            // Write beside, then rename: a reader (php-fpm re-executing on
            // SIGUSR2) never sees half a file.
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::io::Write::write_all(&mut f, text.as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Quotes a value for php-fpm's ini syntax: double quotes with `\`, `"` and
/// `$` escaped, so a value is always one literal string (no `${VAR}`
/// expansion, no end of value). Control characters never get here
/// (validation rejects them).
pub fn ini_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[derive(Serialize)]
struct PoolView<'a> {
    name: &'a str,
    kind: &'a str,
    max_children: u32,
    start_servers: u32,
    min_spare_servers: u32,
    max_spare_servers: u32,
    max_requests: u32,
    process_idle_timeout: u64,
    request_terminate_timeout: u64,
}

#[derive(Serialize)]
struct SettingView {
    value: String,
    flag: bool,
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// The settings dev mode adds unless the config sets them: opcache
/// revalidates on every request, so editing a `.php` file needs no reload.
pub const DEV_SETTINGS: &[(&str, &str)] = &[
    ("opcache.validate_timestamps", "1"),
    ("opcache.revalidate_freq", "0"),
];

/// Renders the file set for `dir` (nothing is written).
pub fn render(
    config: &Config,
    paths: &InternalPaths,
    identity: &Identity,
    dir: &Path,
    dev: bool,
) -> anyhow::Result<RenderedFiles> {
    render_instance(config, paths, identity, dir, dev, 1)
}

/// [`render`] for php-fpm instance `instance` (its own sockets, see
/// [`socket_files`]).
pub fn render_instance(
    config: &Config,
    paths: &InternalPaths,
    identity: &Identity,
    dir: &Path,
    dev: bool,
    instance: u64,
) -> anyhow::Result<RenderedFiles> {
    let php = &config.php_fpm;
    check_dir(dir)?;
    let (socket, status_socket) = socket_files(instance);
    let endpoint = php
        .listen
        .clone()
        .unwrap_or_else(|| Endpoint::Unix(dir.join(socket)));
    let status = Endpoint::Unix(dir.join(status_socket));
    for e in [&endpoint, &status] {
        if let Endpoint::Unix(p) = e
            && p.starts_with(dir)
            && let Some(why) = crate::config::socket_path_problem(p)
        {
            return Err(crate::exit::Fatal::new(
                crate::exit::CONFIG,
                format!(
                    "{why} (php-fpm would bind a truncated path outside {}); fix: use a shorter dev.config_dir (dev mode) or point RUNTIME_DIRECTORY or XDG_RUNTIME_DIR at a shorter directory",
                    dir.display()
                ),
            )
            .into());
        }
    }
    for (k, v) in std::env::vars() {
        if k.starts_with("PHP_") && v.starts_with('$') && !php.env.contains_key(&k) {
            tracing::warn!(
                variable = %k,
                "not passed to the pool: its value starts with `$`, which php-fpm's env[] reads as the name of another variable"
            );
        }
    }
    let pool = &php.pool;
    let mut settings: BTreeMap<String, SettingView> = php
        .settings
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                SettingView {
                    value: s.value.clone(),
                    flag: s.flag,
                },
            )
        })
        .collect();
    if dev {
        for (k, v) in DEV_SETTINGS {
            settings.entry(k.to_string()).or_insert(SettingView {
                value: v.to_string(),
                flag: false,
            });
        }
    }
    let mut env = minijinja::Environment::new();
    env.add_filter("q", |v: String| ini_quote(&v));
    env.add_template("php-fpm.conf", MAIN_TEMPLATE)?;
    env.add_template("pool.conf", POOL_TEMPLATE)?;
    let main = env
        .get_template("php-fpm.conf")?
        .render(minijinja::context! {
            log_limit => 8192,
            process_control_timeout => ceil_secs(config.supervisor.stop_timeout),
            include => dir.join("pool.d").join("*.conf").display().to_string(),
        })?;
    let pool_text = env.get_template("pool.conf")?.render(minijinja::context! {
        listen => endpoint.php_fpm_listen(),
        listen_is_unix => matches!(endpoint, Endpoint::Unix(_)),
        user => identity.user.clone(),
        group => identity.group.clone(),
        pool => minijinja::value::Serde(PoolView {
            name: &pool.name,
            kind: pool.kind.as_str(),
            max_children: pool.max_children,
            start_servers: pool.start_servers,
            min_spare_servers: pool.min_spare_servers,
            max_spare_servers: pool.max_spare_servers,
            max_requests: pool.max_requests,
            process_idle_timeout: ceil_secs(pool.process_idle_timeout),
            request_terminate_timeout: ceil_secs(pool.request_terminate_timeout),
        }),
        status_listen => status.php_fpm_listen(),
        ping_path => paths.ping.clone(),
        status_path => paths.status.clone(),
        env => php.env.clone(),
        document_root => php.document_root.display().to_string(),
        settings => minijinja::value::Serde(&settings),
    })?;
    Ok(RenderedFiles {
        dir: dir.to_path_buf(),
        main: ensure_newline(main),
        pool_file: PathBuf::from("pool.d").join(format!("{}.conf", pool.name)),
        pool: ensure_newline(pool_text),
        endpoint,
        status,
    })
}

/// A directory php-fpm's `include` glob can name: no glob characters.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(crate::exit::Fatal::new(
            crate::exit::CONFIG,
            format!(
                "the directory {} contains a glob character (`*`, `?` or `[`), which php-fpm's include= would read as a pattern; fix: use a path without them for dev.config_dir (dev mode), RUNTIME_DIRECTORY or XDG_RUNTIME_DIR",
                dir.display()
            ),
        )
        .into());
    }
    Ok(())
}

fn ensure_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The php-fpm command line: `<php-fpm> -F -O -y <dir>/php-fpm.conf [-c php.ini] [-R]`.
/// The one builder for `run`, `check` (with `-t` added) and `print-cmd`.
pub fn php_fpm_command(
    binary: &Path,
    config: &Config,
    identity: &Identity,
    main_conf: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        binary.into(),
        "-F".into(),
        "-O".into(),
        "-y".into(),
        main_conf.into(),
    ];
    if let Some(ini) = &config.php_fpm.php_ini {
        args.push("-c".into());
        args.push(ini.into());
    }
    if identity.allow_root {
        args.push("-R".into());
    }
    args
}

/// The same command, shell-quoted on one line.
pub fn shell_line(args: &[OsString]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_values_literal() {
        assert_eq!(ini_quote("plain"), "\"plain\"");
        assert_eq!(ini_quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(ini_quote("x${HOME}"), r#""x\${HOME}""#);
        assert_eq!(ini_quote(r"a\"), r#""a\\""#);
    }
}
