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
use crate::upstream::InternalPaths;

const MAIN_TEMPLATE: &str = include_str!("../templates/php-fpm.conf");
const POOL_TEMPLATE: &str = include_str!("../templates/pool.conf");

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

/// Who the pool's children run as, and whether php-fpm needs `-R`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<String>,
    pub group: Option<String>,
    /// Pass `-R` (allow the pool to run as root: dev containers).
    pub allow_root: bool,
    /// One line saying what was chosen and why, when tqsup chose it.
    pub note: Option<String>,
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

/// Chooses the pool user/group (DESIGN §4, "Running as root").
///
/// Not root: the configured user/group (php-fpm ignores them with a notice
/// when they match its own user, and fails when they don't, as it should).
/// Root: the configured ones; else in dev mode the owner of the document
/// root (with `-R` and a warning when that owner is root); else `www-data`,
/// or `nobody`, whichever exists.
/// What an operator should hear about the pool's identity before the first
/// request finds out: php-fpm ignores `user` when its master is not root,
/// and a document root the pool user cannot read makes every request
/// "File not found". Logged at start and printed by `check`.
pub fn identity_warnings(config: &Config, identity: &Identity) -> Vec<String> {
    use nix::unistd::{Uid, User};
    let php = &config.php_fpm;
    let mut out = Vec::new();
    if !Uid::effective().is_root() && php.user.is_some() {
        out.push(format!(
            "php_fpm.user is set but tqsup does not run as root: php-fpm ignores it and the pool runs as {}; fix: remove php_fpm.user, or run tqsup as root",
            User::from_uid(Uid::effective())
                .ok()
                .flatten()
                .map_or_else(|| Uid::effective().to_string(), |u| u.name)
        ));
    }
    let pool_user = match (&identity.user, Uid::effective().is_root()) {
        (Some(name), true) => User::from_name(name).ok().flatten(),
        _ => User::from_uid(Uid::effective()).ok().flatten(),
    };
    if let Some(u) = pool_user
        && !u.uid.is_root()
    {
        let gids: Vec<u32> = nix::unistd::getgrouplist(
            &std::ffi::CString::new(u.name.clone()).unwrap_or_default(),
            u.gid,
        )
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![u.gid.as_raw()]);
        if let Some(blocked) = unreadable(&php.document_root, u.uid.as_raw(), &gids) {
            out.push(format!(
                "the pool user {} cannot read the document root {} ({} lacks {}): every request would be \"File not found\"; fix: chmod o+rx (or make it group-readable by {}), or set php_fpm.user",
                u.name,
                php.document_root.display(),
                blocked.0.display(),
                blocked.1,
                u.name,
            ));
        }
    }
    out
}

/// The first directory on the way to `root` that `uid`/`gids` cannot pass
/// (x on every ancestor, r and x on the root itself), by mode bits.
fn unreadable(root: &Path, uid: u32, gids: &[u32]) -> Option<(PathBuf, &'static str)> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::canonicalize(root).ok()?;
    let allowed = |p: &Path, need: u32| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            let bits = if m.uid() == uid {
                mode >> 6
            } else if gids.contains(&m.gid()) {
                mode >> 3
            } else {
                mode
            } & 0o7;
            bits & need == need
        })
    };
    for a in root
        .ancestors()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        if !allowed(a, 0o1) {
            return Some((a.to_path_buf(), "search (x) permission"));
        }
    }
    (!allowed(&root, 0o5)).then(|| (root.clone(), "read and search (r-x) permission"))
}

/// [`resolve_identity`], refusing to run PHP as root outside dev mode
/// unless `php_fpm.allow_root` says it is meant (php-fpm's `-R`).
pub fn checked_identity(config: &Config, dev: bool) -> anyhow::Result<Identity> {
    let identity = resolve_identity(config, dev);
    if identity.allow_root && !dev && !config.php_fpm.allow_root {
        return Err(crate::exit::Fatal::new(
            crate::exit::CONFIG,
            "php_fpm.user: root would run every PHP request as root (php-fpm's -R); fix: set an unprivileged php_fpm.user (e.g. www-data), or set php_fpm.allow_root: true if that is really meant",
        )
        .into());
    }
    Ok(identity)
}

pub fn resolve_identity(config: &Config, dev: bool) -> Identity {
    use nix::unistd::{Gid, Group, Uid, User};
    let php = &config.php_fpm;
    let configured = Identity {
        user: php.user.clone(),
        group: php.group.clone(),
        allow_root: false,
        note: None,
    };
    if !Uid::effective().is_root() || php.user.is_some() {
        let mut id = configured;
        id.allow_root = id.user.as_deref() == Some("root");
        return id;
    }
    if dev {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(&php.document_root) {
            let user = User::from_uid(Uid::from_raw(meta.uid())).ok().flatten();
            let group = Group::from_gid(Gid::from_raw(meta.gid())).ok().flatten();
            if let Some(u) = user {
                let root = u.uid.is_root();
                return Identity {
                    note: Some(if root {
                        format!(
                            "dev mode as root and {} is owned by root: the pool runs as root (-R)",
                            php.document_root.display()
                        )
                    } else {
                        format!(
                            "dev mode as root: the pool runs as {}, the owner of {}",
                            u.name,
                            php.document_root.display()
                        )
                    }),
                    user: Some(u.name),
                    group: group.map(|g| g.name).or_else(|| php.group.clone()),
                    allow_root: root,
                };
            }
        }
    }
    for candidate in ["www-data", "nobody"] {
        if let Ok(Some(u)) = User::from_name(candidate) {
            let group = php
                .group
                .clone()
                .or_else(|| Group::from_gid(u.gid).ok().flatten().map(|g| g.name));
            return Identity {
                note: Some(format!(
                    "running as root with no php_fpm.user: the pool runs as {candidate} (set php_fpm.user to choose)"
                )),
                user: Some(candidate.to_string()),
                group,
                allow_root: false,
            };
        }
    }
    configured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_root_the_pool_user_cannot_read_is_found() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("app/public");
        std::fs::create_dir_all(&root).unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(base.path(), 0o755);
        mode(&base.path().join("app"), 0o755);
        mode(&root, 0o755);
        // uid 65534 (nobody), in no group of the test's files.
        assert_eq!(unreadable(&root, 65534, &[65534]), None);
        mode(&base.path().join("app"), 0o750);
        let (dir, why) = unreadable(&root, 65534, &[65534]).unwrap();
        assert_eq!(dir, base.path().join("app").canonicalize().unwrap());
        assert!(why.contains("x"));
        mode(&base.path().join("app"), 0o755);
        mode(&root, 0o711);
        assert_eq!(
            unreadable(&root, 65534, &[65534]).unwrap().0,
            root.canonicalize().unwrap()
        );
    }

    #[test]
    fn quoting_keeps_values_literal() {
        assert_eq!(ini_quote("plain"), "\"plain\"");
        assert_eq!(ini_quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(ini_quote("x${HOME}"), r#""x\${HOME}""#);
        assert_eq!(ini_quote(r"a\"), r#""a\\""#);
    }
}
