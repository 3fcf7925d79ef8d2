//! One rendered php-fpm generation, made by the one pipeline `run`, a
//! reload, `print-cmd` and `check` share (DESIGN §6, "Validate, then
//! apply"): find the php-fpm binary, decide the pool's identity, render the
//! files for a directory, build the command line — then write them and have
//! `php-fpm -t` check them, in that order, each step once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Config;
use crate::discover::PhpFpmBinary;
use crate::phpfpm_test::TestError;
use crate::render::{self, Identity, InternalPaths, RenderedFiles};

/// What a supervisor runs: the config, the files rendered from it and the
/// command that reads them. Replaced whole by a good reload.
#[derive(Debug, Clone)]
pub struct Generation {
    pub config: Config,
    /// The php-fpm binary and why it was chosen.
    pub binary: PhpFpmBinary,
    pub identity: Identity,
    /// The files, for the directory they were rendered for.
    pub files: RenderedFiles,
    /// `render::php_fpm_command` for `files`: what `run` executes and
    /// `print-cmd` prints.
    pub command: Vec<OsString>,
}

impl Generation {
    /// Renders `config` for `dir` (instance 1: the sockets `print-cmd`
    /// shows). Nothing is written.
    pub fn prepare(
        config: Config,
        paths: &InternalPaths,
        dir: &Path,
        dev: bool,
    ) -> anyhow::Result<Self> {
        let binary = crate::discover::for_config(&config)?;
        let identity = render::checked_identity(&config, dev)?;
        let files = render::render(&config, paths, &identity, dir, dev)?;
        let command = render::php_fpm_command(&binary.path, &config, &identity, &files.main_path());
        Ok(Generation {
            config,
            binary,
            identity,
            files,
            command,
        })
    }

    /// The same generation rendered for another directory (a tested staging
    /// set applied to the running one).
    pub fn moved_to(&self, paths: &InternalPaths, dir: &Path, dev: bool) -> anyhow::Result<Self> {
        let files = render::render(&self.config, paths, &self.identity, dir, dev)?;
        let command = render::php_fpm_command(
            &self.binary.path,
            &self.config,
            &self.identity,
            &files.main_path(),
        );
        Ok(Generation {
            files,
            command,
            ..self.clone()
        })
    }

    /// Writes the files (each by atomic rename); the paths written.
    pub fn write(&self) -> anyhow::Result<Vec<PathBuf>> {
        let written = self.files.write()?;
        self.remove_other_pools()?;
        Ok(written)
    }

    /// `php-fpm -t` on the written files.
    pub async fn test(&self) -> Result<(), TestError> {
        crate::phpfpm_test::test(&self.command, &self.files.main_path()).await
    }

    /// Renders and writes this generation's files for php-fpm instance
    /// `instance` (its own sockets) in their directory. php-fpm reads them
    /// only when it starts (or on SIGUSR2), so a php-fpm running beside is
    /// unaffected.
    pub fn write_instance(
        &mut self,
        paths: &InternalPaths,
        dev: bool,
        instance: u64,
    ) -> anyhow::Result<()> {
        let files = render::render_instance(
            &self.config,
            paths,
            &self.identity,
            &self.files.dir,
            dev,
            instance,
        )?;
        self.files = files;
        self.write().map(drop)
    }

    /// Removes pool files of a renamed pool.
    fn remove_other_pools(&self) -> anyhow::Result<()> {
        let pool_dir = self.files.dir.join("pool.d");
        let keep: PathBuf = self.files.dir.join(&self.files.pool_file);
        for e in std::fs::read_dir(&pool_dir)
            .with_context(|| format!("reading {}", pool_dir.display()))?
            .flatten()
        {
            let p = e.path();
            if p != keep && p.extension().is_some_and(|x| x == "conf") {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }
}
