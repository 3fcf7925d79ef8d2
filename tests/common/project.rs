//! Temp projects: a directory with `public/index.php` ([`Project`]) and,
//! for tqsup, its config held as a typed value ([`TqsupProject::config`])
//! that is serialized with serde_yaml, never formatted by hand. Tests that
//! feed tqsup malformed or legacy text write that text themselves.

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Ran, Tqsup, run_with_timeout, set_mode, tqsup_at};

/// How long a one-shot tqsup command (`check`, `render`, …) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A temp project: `public/index.php` and whatever files the test adds.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tqsup-test-")
            .tempdir()
            .unwrap();
        // php-fpm children may run as www-data when tests run as root.
        set_mode(dir.path(), 0o755);
        let p = Project { dir };
        p.write("public/index.php", "<?php echo \"hello from php\\n\";\n");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parent directories, world-readable).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
            let mut d = parent.to_path_buf();
            while d.starts_with(self.path()) && d != self.path() {
                set_mode(&d, 0o755);
                d.pop();
            }
        }
        std::fs::write(&p, text).unwrap();
        set_mode(&p, 0o644);
        p
    }
}

/// RFC 7396 merge patch: objects merge key by key, a `null` removes the
/// key, anything else replaces.
pub fn merge(base: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *base = patch;
        return;
    };
    if !base.is_object() {
        *base = Value::Object(Default::default());
    }
    let fields = base.as_object_mut().unwrap();
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(&k);
        } else {
            merge(fields.entry(k).or_insert(Value::Null), v);
        }
    }
}

/// A project tqsup runs in: its `tqsup.yaml` (from [`Self::config`]) and
/// `run/`, the `RUNTIME_DIRECTORY` tqsup is given (so nothing goes to the
/// shared /run or /tmp).
pub struct TqsupProject {
    project: Project,
    /// tqsup.yaml as a value, written before each command. `null` (the
    /// start) writes nothing: the test's own file, or none, is used.
    pub config: Value,
}

impl Deref for TqsupProject {
    type Target = Project;

    fn deref(&self) -> &Project {
        &self.project
    }
}

impl TqsupProject {
    pub fn new() -> Self {
        Self::in_project(Project::new())
    }

    pub fn in_project(project: Project) -> Self {
        std::fs::create_dir_all(project.join("run")).unwrap();
        TqsupProject {
            project,
            config: Value::Null,
        }
    }

    /// The project with `patch` merged into its config.
    pub fn with(mut self, patch: Value) -> Self {
        self.merge(patch);
        self
    }

    /// Merges `patch` into the config ([`merge`]).
    pub fn merge(&mut self, patch: Value) -> &mut Self {
        merge(&mut self.config, patch);
        self
    }

    /// Sets one dotted key, e.g. `php_fpm.pool.max_children`.
    pub fn set(&mut self, key: &str, value: impl serde::Serialize) -> &mut Self {
        let mut patch = serde_json::to_value(value).unwrap();
        for k in key.rsplit('.') {
            patch = Value::Object([(k.to_string(), patch)].into_iter().collect());
        }
        self.merge(patch)
    }

    /// One dotted key of the config (`null` when unset).
    pub fn get(&self, key: &str) -> &Value {
        key.split('.').fold(&self.config, |v, k| &v[k])
    }

    /// The config as YAML.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.config).unwrap()
    }

    pub fn config_path(&self) -> PathBuf {
        self.join("tqsup.yaml")
    }

    /// `RUNTIME_DIRECTORY`: the runtime dir is made inside.
    pub fn run_dir(&self) -> PathBuf {
        self.join("run")
    }

    /// Writes tqsup.yaml (unless the config is `null`) atomically: a
    /// reload running at that moment never reads half a file.
    pub fn write_config(&self) -> PathBuf {
        let path = self.config_path();
        if !self.config.is_null() {
            let next = self.write("tqsup.yaml.next", &self.yaml());
            std::fs::rename(next, &path).unwrap();
        }
        path
    }

    /// `program args…` (a tqsup binary) in the project, with its runtime dir.
    pub fn command_of<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Command {
        let mut c = tqsup_at(program);
        c.args(args)
            .env("RUNTIME_DIRECTORY", self.run_dir())
            .current_dir(self.path());
        c
    }

    /// `tqsup args…` in the project.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_tqsup")), args)
    }

    /// Writes the config and runs `tqsup args…` to its end.
    pub fn run(&self, args: &[&str]) -> Ran {
        self.write_config();
        run_with_timeout(&mut self.command(args), COMMAND_TIMEOUT)
    }

    /// `run -c <tqsup.yaml>` plus `extra`, as arguments.
    pub fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("-c".into());
        args.push(self.config_path().display().to_string());
        args
    }

    /// Writes the config and starts `tqsup run -c tqsup.yaml` (not waiting
    /// for anything).
    pub fn spawn(&self) -> Tqsup {
        self.spawn_with(&[])
    }

    /// [`Self::spawn`] with `extra` arguments of `run` (`--dev`).
    pub fn spawn_with(&self, extra: &[&str]) -> Tqsup {
        self.spawn_command(self.command(&self.run_args(extra)))
    }

    /// Writes the config and starts `cmd` (from [`Self::command_of`]).
    pub fn spawn_command(&self, mut cmd: Command) -> Tqsup {
        self.write_config();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let runs = args.first().is_some_and(|a| a == "run");
        let dev = args.iter().any(|a| a == "--dev");
        if runs && !dev && !self.config.is_null() {
            assert!(
                self.get("forward.enabled") == &Value::Bool(false)
                    || !self.get("forward.listen").is_null(),
                "set forward.listen: tests never bind forward's default 127.0.0.1:9000"
            );
        }
        Tqsup::spawn(&mut cmd, self)
    }

    /// [`Self::spawn`], then waits until php-fpm is ready and the forward
    /// listener listens (those of them the config runs).
    pub fn start(&self) -> Tqsup {
        let t = self.spawn();
        t.wait_ready();
        t
    }

    /// A setting (`pm.status_path`, …) of the rendered php-fpm files under
    /// the runtime dir, unquoted.
    pub fn rendered_setting(&self, key: &str) -> String {
        fn find(dir: &Path, key: &str) -> Option<String> {
            for e in std::fs::read_dir(dir).ok()?.flatten() {
                let p = e.path();
                let found = if p.is_dir() {
                    find(&p, key)
                } else {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    text.lines()
                        .filter_map(|l| l.trim_start().strip_prefix(key))
                        .find_map(|rest| rest.trim_start().strip_prefix('='))
                        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
                };
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        find(&self.run_dir(), key).unwrap_or_else(|| {
            panic!(
                "no `{key} =` in the files under {}",
                self.run_dir().display()
            )
        })
    }
}
