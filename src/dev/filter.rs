//! Which changed paths matter: `dev.watch.ignore` (names or globs matched
//! against every component of a path relative to the project), and which
//! hooks a batch of changes triggers (`paths` globs relative to the project).

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::Hook;

/// A glob where `*` stays inside one path component and `**` crosses them,
/// as in `.gitignore`.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// `dev.watch.ignore`, compiled.
#[derive(Debug, Clone)]
pub struct IgnoreSet {
    set: GlobSet,
}

impl IgnoreSet {
    pub fn new(patterns: &[String]) -> Result<Self, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(glob(p.trim_end_matches('/'))?);
        }
        Ok(IgnoreSet { set: b.build()? })
    }

    /// Whether `rel` (relative to the project) is ignored: some component
    /// (`vendor`, `*.swp`) or some leading run of components (`var/cache`)
    /// matches a pattern.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            if self.set.is_match(Path::new(c.as_os_str())) || self.set.is_match(&prefix) {
                return true;
            }
        }
        false
    }
}

/// `path` relative to `base`, when it is inside it.
pub fn relative<'a>(base: &Path, path: &'a Path) -> Option<&'a Path> {
    path.strip_prefix(base).ok()
}

/// The hooks with their `paths` globs compiled, in config order.
#[derive(Debug, Clone)]
pub struct HookSet {
    base_dir: PathBuf,
    hooks: Vec<(Hook, GlobSet)>,
}

impl HookSet {
    pub fn new(base_dir: &Path, hooks: &[Hook]) -> Result<Self, globset::Error> {
        let mut out = Vec::new();
        for h in hooks {
            let mut b = GlobSetBuilder::new();
            for p in &h.paths {
                b.add(glob(p.trim_start_matches("./"))?);
            }
            out.push((h.clone(), b.build()?));
        }
        Ok(HookSet {
            base_dir: base_dir.to_path_buf(),
            hooks: out,
        })
    }

    /// The hooks (config order) one of whose globs matches a changed path.
    pub fn matching(&self, changed: &[PathBuf]) -> Vec<&Hook> {
        let rel: Vec<&Path> = changed
            .iter()
            .filter_map(|p| relative(&self.base_dir, p))
            .collect();
        self.hooks
            .iter()
            .filter(|(_, set)| rel.iter().any(|p| set.is_match(p)))
            .map(|(h, _)| h)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HookAction;

    fn ignore() -> IgnoreSet {
        let p: Vec<String> = [".git", "vendor", "node_modules", "*.swp", "var/cache/"]
            .map(String::from)
            .to_vec();
        IgnoreSet::new(&p).unwrap()
    }

    #[test]
    fn ignore_matches_any_component() {
        let i = ignore();
        assert!(i.is_ignored(Path::new(".git/index")));
        assert!(i.is_ignored(Path::new("vendor/a/b.php")));
        assert!(i.is_ignored(Path::new("src/vendor/x.php")));
        assert!(i.is_ignored(Path::new("src/.a.php.swp")));
        assert!(i.is_ignored(Path::new("var/cache/prod/x")));
        assert!(!i.is_ignored(Path::new("var/log/x")));
        assert!(!i.is_ignored(Path::new("src/vendors.php")));
        assert!(!i.is_ignored(Path::new("public/index.php")));
    }

    fn hook(name: &str, paths: &[&str]) -> Hook {
        Hook {
            name: name.into(),
            run: "true".into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            then: HookAction::None,
        }
    }

    #[test]
    fn hooks_match_relative_to_base() {
        let set = HookSet::new(
            Path::new("/p"),
            &[
                hook("src", &["src/**"]),
                hook("css", &["assets/*.css", "./theme/**/*.scss"]),
            ],
        )
        .unwrap();
        let names = |paths: &[&str]| -> Vec<String> {
            let v: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            set.matching(&v).iter().map(|h| h.name.clone()).collect()
        };
        assert_eq!(names(&["/p/src/a/b.php"]), ["src"]);
        assert_eq!(names(&["/p/assets/site.css"]), ["css"]);
        assert!(names(&["/p/assets/sub/site.css"]).is_empty());
        assert_eq!(names(&["/p/theme/x/y.scss", "/p/src/z"]), ["src", "css"]);
        assert!(names(&["/other/src/a.php", "/p/public/index.php"]).is_empty());
    }
}
