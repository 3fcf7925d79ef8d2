//! Finding the php-fpm binary (DESIGN §4, "php-fpm discovery"). With
//! `binary: auto`, a `.php-version` file in the project (or a parent)
//! chooses the version, as Symfony CLI does.

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
    "{what} not found ({tried}); fix: install it with `{install}`, or set php_fpm.binary or TQSUP_PHP_FPM to its path"
)]
pub struct NotFound {
    /// `php-fpm`, or `php-fpm 8.1 (asked for by /p/.php-version)`.
    pub what: String,
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
    /// The project directory, where (or above which) a `.php-version` file
    /// may name the PHP version.
    pub project_dir: Option<PathBuf>,
}

impl SearchEnv {
    pub fn from_process() -> Self {
        SearchEnv {
            override_path: std::env::var_os("TQSUP_PHP_FPM").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            sbin_dirs: vec!["/usr/sbin".into(), "/usr/local/sbin".into()],
            project_dir: None,
        }
    }
}

/// The `.php-version` in `dir` or its nearest parent that has one, and the
/// `(major, minor)` it names (`8.1`, `8.1.27`, `php-8.1`; other text: None).
pub fn php_version_file(dir: &Path) -> Option<(PathBuf, Option<(u32, u32)>)> {
    let file = dir
        .ancestors()
        .map(|d| d.join(".php-version"))
        .find(|f| f.is_file())?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let first = text.lines().next().unwrap_or("").trim();
    let digits = first.trim_start_matches(|c: char| !c.is_ascii_digit());
    let mut parts = digits.split('.');
    let version = (|| {
        let major = parts.next()?.parse().ok()?;
        let minor = parts
            .next()?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some((major, minor))
    })();
    Some((file, version))
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
/// The php-fpm binary for `config`: its `php_fpm.binary`, else discovery
/// from the process environment and the project's `.php-version`.
pub fn for_config(config: &crate::config::Config) -> Result<PhpFpmBinary, NotFound> {
    let env = SearchEnv {
        project_dir: Some(config.base_dir.clone()),
        ..SearchEnv::from_process()
    };
    discover(config.php_fpm.binary.as_deref(), &env)
}

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
    if let Some((file, version)) = env.project_dir.as_deref().and_then(php_version_file) {
        let Some((major, minor)) = version else {
            return Err(NotFound {
                what: format!(
                    "a PHP version in {} (write e.g. `8.2` on its first line)",
                    file.display()
                ),
                tried: "reading its first line".into(),
                install: install_command(),
            });
        };
        let name = format!("php-fpm{major}.{minor}");
        let found = on_path(&name).or_else(|| {
            env.sbin_dirs
                .iter()
                .map(|d| d.join(&name))
                .find(|p| is_executable(p))
        });
        return match found {
            Some(path) => Ok(PhpFpmBinary {
                path,
                reason: format!("{} asks for PHP {major}.{minor}", file.display()),
            }),
            None => Err(NotFound {
                what: format!("php-fpm {major}.{minor} (asked for by {})", file.display()),
                tried: format!("tried {name} on PATH, /usr/sbin, /usr/local/sbin"),
                install: install_command_for(major, minor),
            }),
        };
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
        what: "php-fpm".into(),
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

/// The install command for PHP `major.minor`'s php-fpm on this platform
/// (Debian and Ubuntu name the package `phpX.Y-fpm`).
pub fn install_command_for(major: u32, minor: u32) -> String {
    if cfg!(target_os = "macos") {
        format!("brew install php@{major}.{minor}")
    } else if Path::new("/etc/alpine-release").exists() {
        format!("apk add php{major}{minor}-fpm")
    } else if Path::new("/etc/redhat-release").exists() || Path::new("/etc/fedora-release").exists()
    {
        format!("dnf module install php:{major}.{minor}")
    } else {
        format!("apt-get install php{major}.{minor}-fpm")
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

    #[test]
    fn php_version_file_chooses_the_version() {
        let bin = tempfile::tempdir().unwrap();
        let v81 = exe(bin.path(), "php-fpm8.1");
        exe(bin.path(), "php-fpm8.2");
        exe(bin.path(), "php-fpm");
        let project = tempfile::tempdir().unwrap();
        let sub = project.path().join("app/public");
        std::fs::create_dir_all(&sub).unwrap();
        let env = SearchEnv {
            path: Some(bin.path().into()),
            project_dir: Some(sub.clone()),
            ..Default::default()
        };
        // No file: `php-fpm` on PATH, as before.
        assert_eq!(
            discover(None, &env).unwrap().path,
            bin.path().join("php-fpm")
        );
        let file = project.path().join(".php-version");
        std::fs::write(&file, "8.1.27\n").unwrap();
        let found = discover(None, &env).unwrap();
        assert_eq!(found.path, v81);
        assert!(
            found.reason.contains(&file.display().to_string()),
            "{}",
            found.reason
        );
        // An explicit binary wins over the file.
        assert!(
            discover(Some("php-fpm8.2"), &env)
                .unwrap()
                .path
                .ends_with("php-fpm8.2")
        );
        std::fs::write(&file, "5.6\n").unwrap();
        let err = discover(None, &env).unwrap_err().to_string();
        assert!(
            err.contains("php-fpm 5.6") && err.contains("php5.6-fpm"),
            "{err}"
        );
        std::fs::write(&file, "latest\n").unwrap();
        assert!(discover(None, &env).is_err());
    }

    #[test]
    fn php_version_file_formats() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(".php-version");
        for (text, want) in [
            ("8.3", Some((8, 3))),
            ("php-7.4\n", Some((7, 4))),
            (" 8.2.1 ", Some((8, 2))),
            ("8", None),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(
                php_version_file(d.path()),
                Some((f.clone(), want)),
                "{text:?}"
            );
        }
    }
}
