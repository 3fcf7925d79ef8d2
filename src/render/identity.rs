//! Who the pool's children run as (DESIGN §4, "Running as root"): the
//! configured user, or one tqsup chooses when it runs as root, and what an
//! operator should hear about that choice.

use std::path::{Path, PathBuf};

use crate::config::Config;

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

/// Chooses the pool user/group (DESIGN §4, "Running as root").
///
/// Not root: the configured user/group (php-fpm ignores them with a notice
/// when they match its own user, and fails when they don't, as it should).
/// Root: the configured ones; else in dev mode the owner of the document
/// root (with `-R` and a warning when that owner is root); else `www-data`,
/// or `nobody`, whichever exists.
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
}
