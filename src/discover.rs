//! Finding the php-fpm binary (DESIGN §4, "php-fpm discovery").

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The binary chosen, and why (for `print-cmd --explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpFpmBinary {
    pub path: PathBuf,
    pub reason: String,
}

/// No php-fpm could be found: exit 69 with the install command.
#[derive(Debug, thiserror::Error)]
#[error(
    "php-fpm not found ({tried}); fix: install it with `{install}`, or set php_fpm.binary or TQSUP_PHP_FPM to its path"
)]
pub struct NotFound {
    pub tried: String,
    pub install: String,
}

/// Where to look, injected so tests need not touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct SearchEnv {
    /// `$TQSUP_PHP_FPM`.
    pub override_path: Option<OsString>,
    /// `$PATH`.
    pub path: Option<OsString>,
    /// Directories searched for `php-fpmX.Y` besides PATH.
    pub sbin_dirs: Vec<PathBuf>,
}

impl SearchEnv {
    pub fn from_process() -> Self {
        SearchEnv {
            override_path: std::env::var_os("TQSUP_PHP_FPM").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            sbin_dirs: vec!["/usr/sbin".into(), "/usr/local/sbin".into()],
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `php-fpm8.2` → `(8, 2)`.
fn versioned(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("php-fpm")?;
    let (major, minor) = rest.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Finds php-fpm: the configured binary when not `auto`, else
/// `$TQSUP_PHP_FPM`, `php-fpm` on PATH, the highest `php-fpmX.Y` on PATH and
/// in `/usr/sbin`, `/usr/local/sbin`, then `/usr/sbin/php-fpm`.
pub fn discover(configured: Option<&str>, env: &SearchEnv) -> Result<PhpFpmBinary, NotFound> {
    let path_dirs: Vec<PathBuf> = env
        .path
        .as_ref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    let on_path = |name: &str| {
        path_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    };
    let mut tried = Vec::new();

    if let Some(name) = configured {
        if name.contains('/') {
            let p = PathBuf::from(name);
            if is_executable(&p) {
                return Ok(PhpFpmBinary {
                    path: p,
                    reason: "php_fpm.binary in the config".into(),
                });
            }
        } else if let Some(p) = on_path(name) {
            return Ok(PhpFpmBinary {
                path: p,
                reason: format!("php_fpm.binary `{name}` found on PATH"),
            });
        }
        tried.push(format!("php_fpm.binary = {name}"));
        return Err(not_found(tried));
    }
    if let Some(o) = &env.override_path {
        let p = PathBuf::from(o);
        let found = if p.components().count() > 1 {
            is_executable(&p).then_some(p.clone())
        } else {
            on_path(&p.to_string_lossy())
        };
        if let Some(path) = found {
            return Ok(PhpFpmBinary {
                path,
                reason: "$TQSUP_PHP_FPM".into(),
            });
        }
        tried.push(format!("$TQSUP_PHP_FPM = {}", p.display()));
        return Err(not_found(tried));
    }
    if let Some(p) = on_path("php-fpm") {
        return Ok(PhpFpmBinary {
            path: p,
            reason: "`php-fpm` on PATH".into(),
        });
    }
    tried.push("php-fpm on PATH".into());
    let mut best: Option<((u32, u32), PathBuf)> = None;
    for dir in path_dirs.iter().chain(env.sbin_dirs.iter()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(v) = name.to_str().and_then(versioned) else {
                continue;
            };
            let p = entry.path();
            if is_executable(&p) && best.as_ref().is_none_or(|(bv, _)| v > *bv) {
                best = Some((v, p));
            }
        }
    }
    if let Some(((major, minor), path)) = best {
        return Ok(PhpFpmBinary {
            path,
            reason: format!("highest versioned php-fpm found: php-fpm{major}.{minor}"),
        });
    }
    tried.push("php-fpmX.Y on PATH, /usr/sbin, /usr/local/sbin".into());
    let fallback = PathBuf::from("/usr/sbin/php-fpm");
    if is_executable(&fallback) {
        return Ok(PhpFpmBinary {
            path: fallback,
            reason: "/usr/sbin/php-fpm".into(),
        });
    }
    tried.push("/usr/sbin/php-fpm".into());
    Err(not_found(tried))
}

fn not_found(tried: Vec<String>) -> NotFound {
    NotFound {
        tried: format!("tried {}", tried.join(", ")),
        install: install_command(),
    }
}

/// The install command for this platform.
pub fn install_command() -> String {
    if cfg!(target_os = "macos") {
        "brew install php".into()
    } else if Path::new("/etc/debian_version").exists() {
        "apt-get install php-fpm".into()
    } else if Path::new("/etc/alpine-release").exists() {
        "apk add php-fpm".into()
    } else if Path::new("/etc/redhat-release").exists() || Path::new("/etc/fedora-release").exists()
    {
        "dnf install php-fpm".into()
    } else {
        "apt-get install php-fpm".into()
    }
}

/// php-fpm's version line (`php-fpm -v`, first line).
pub fn version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary).arg("-v").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn highest_version_wins_and_plain_name_first() {
        let d = tempfile::tempdir().unwrap();
        exe(d.path(), "php-fpm7.4");
        let best = exe(d.path(), "php-fpm8.10");
        exe(d.path(), "php-fpm8.2");
        let env = SearchEnv {
            path: Some(d.path().into()),
            ..Default::default()
        };
        assert_eq!(discover(None, &env).unwrap().path, best);
        let plain = exe(d.path(), "php-fpm");
        assert_eq!(discover(None, &env).unwrap().path, plain);
    }

    #[test]
    fn override_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let custom = exe(d.path(), "my-fpm");
        let env = SearchEnv {
            override_path: Some(custom.clone().into()),
            path: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert_eq!(discover(None, &env).unwrap().path, custom);
        let env = SearchEnv {
            path: Some("/nonexistent".into()),
            ..Default::default()
        };
        let err = discover(Some("/nope/php-fpm"), &env).unwrap_err();
        assert!(err.to_string().contains("install"), "{err}");
    }
}
