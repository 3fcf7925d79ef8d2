//! The project's own ignore files, as ripgrep and watchexec read them (the
//! `ignore` crate's gitignore matcher): `.gitignore` and `.ignore` in every
//! directory of the project (a deeper file wins; in one directory `.ignore`
//! wins over `.gitignore`), then `.git/info/exclude`. They apply whether or
//! not the project is a git repository yet. A path is ignored when it, or
//! one of its directories, is ignored, since git cannot re-include a file
//! below an ignored directory either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tracing::{debug, warn};

/// The files that make up one directory's rules, lowest precedence first.
const PER_DIRECTORY: [&str; 2] = [".gitignore", ".ignore"];

/// The ignore files of one project, read lazily, per directory.
#[derive(Debug)]
pub struct ProjectIgnores {
    base: PathBuf,
    /// Each directory's `.gitignore` + `.ignore`; None: it has neither.
    dirs: HashMap<PathBuf, Option<Gitignore>>,
    /// `.git/info/exclude`, rooted at the project.
    exclude: Option<Gitignore>,
}

impl ProjectIgnores {
    pub fn new(base: &Path) -> Self {
        let exclude = compile(base, &[base.join(".git/info/exclude")]);
        ProjectIgnores {
            base: base.to_path_buf(),
            dirs: HashMap::new(),
            exclude,
        }
    }

    /// Whether `path` (inside the project; others are never ignored here)
    /// is ignored by the project's ignore files.
    pub fn is_ignored(&mut self, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(&self.base) else {
            return false;
        };
        let mut at = self.base.clone();
        let count = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            at.push(c);
            let last = i + 1 == count;
            if self.decide(&at.clone(), if last { is_dir } else { true }) {
                return true;
            }
        }
        false
    }

    /// The rules for `path` itself (not its parents): the deepest ignore
    /// file with an opinion decides.
    fn decide(&mut self, path: &Path, is_dir: bool) -> bool {
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&self.base)) {
            if let Some(m) = self.rules(d) {
                match m.matched(path, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            dir = d.parent();
        }
        self.exclude
            .as_ref()
            .is_some_and(|m| m.matched(path, is_dir).is_ignore())
    }

    fn rules(&mut self, dir: &Path) -> Option<&Gitignore> {
        self.dirs
            .entry(dir.to_path_buf())
            .or_insert_with(|| compile(dir, &PER_DIRECTORY.map(|f| dir.join(f))))
            .as_ref()
    }

    /// Takes note of a changed path: an edited ignore file is read again
    /// when next needed.
    pub fn changed(&mut self, path: &Path) {
        let name = path.file_name().and_then(|n| n.to_str());
        if name.is_some_and(|n| PER_DIRECTORY.contains(&n))
            && let Some(dir) = path.parent()
        {
            debug!(file = %path.display(), "ignore file changed");
            self.dirs.remove(dir);
        }
    }
}

/// The rules of the existing `files`, rooted at `root`; None when none
/// exists or none has a rule.
fn compile(root: &Path, files: &[PathBuf]) -> Option<Gitignore> {
    let mut b = GitignoreBuilder::new(root);
    let mut any = false;
    for f in files.iter().filter(|f| f.is_file()) {
        any = true;
        if let Some(e) = b.add(f) {
            warn!(file = %f.display(), error = %e, "ignore file partly unreadable");
        }
    }
    if !any {
        return None;
    }
    match b.build() {
        Ok(g) if !g.is_empty() => Some(g),
        Ok(_) => None,
        Err(e) => {
            warn!(root = %root.display(), error = %e, "ignore files unusable; not applied");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(base: &Path, rel: &str, text: &str) {
        let p = base.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn nested_files_and_precedence() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path();
        write(base, ".gitignore", "/var/\n*.log\nbuild\n!keep.log\n");
        write(base, "src/.gitignore", "generated.php\n!debug.log\n");
        write(base, "src/.ignore", "generated.php\n!generated.php\n");
        write(base, ".git/info/exclude", "local.txt\n");
        let mut ig = ProjectIgnores::new(base);
        let mut is = |rel: &str, dir: bool| ig.is_ignored(&base.join(rel), dir);
        assert!(is("var", true));
        assert!(is("var/cache/x.php", false), "below an ignored directory");
        assert!(!is("src/var", false), "/var/ is anchored");
        assert!(is("a.log", false));
        assert!(!is("keep.log", false));
        assert!(is("src/sub/build/x.js", false));
        assert!(!is("src/debug.log", false), "a deeper whitelist wins");
        assert!(
            !is("src/generated.php", false),
            ".ignore wins over .gitignore"
        );
        assert!(is("local.txt", false));
        assert!(!is("public/index.php", false));
        assert!(!ig.is_ignored(Path::new("/elsewhere/a.log"), false));
    }

    #[test]
    fn an_edited_ignore_file_is_read_again() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path();
        let mut ig = ProjectIgnores::new(base);
        assert!(!ig.is_ignored(&base.join("tmp/x"), false));
        write(base, ".gitignore", "tmp/\n");
        assert!(!ig.is_ignored(&base.join("tmp/x"), false), "cached");
        ig.changed(&base.join(".gitignore"));
        assert!(ig.is_ignored(&base.join("tmp/x"), false));
    }
}
