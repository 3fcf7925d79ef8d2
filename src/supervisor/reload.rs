//! Validate, then apply (DESIGN §6): a reload re-reads the config, renders
//! it into a fresh sibling directory, has php-fpm test it there, and only
//! then writes the same file set into the running directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{self, Config, ConfigError};
use crate::render::{self, Identity, RenderedFiles};
use crate::upstream::InternalPaths;

/// What a supervisor runs: the config, the files rendered from it and the
/// command that reads them. Replaced whole by a good reload.
#[derive(Debug, Clone)]
pub struct Generation {
    pub config: Config,
    pub identity: Identity,
    /// The files in the running directory.
    pub files: RenderedFiles,
    /// `render::php_fpm_command` for `files`.
    pub command: Vec<OsString>,
}

/// A tested candidate, not yet applied.
#[derive(Debug)]
pub struct Candidate(Generation);

/// Re-reads `path`, renders into a staging directory beside `dir`, and runs
/// `php-fpm -t` there. Nothing in `dir` changes.
pub async fn prepare(
    path: &Path,
    dir: &Path,
    paths: &InternalPaths,
    dev: bool,
) -> anyhow::Result<Candidate> {
    let (config, _notes) = config::load(path)?;
    if !config.php_fpm.enabled {
        anyhow::bail!(
            "php_fpm.enabled: false cannot be applied by a reload; fix: restart tqsup to stop launching php-fpm"
        );
    }
    let binary = crate::cli::find_binary(&config)?;
    let identity = render::resolve_identity(&config, dev);
    let stage = crate::runtime_dir::staging_beside(dir)?;
    let staged = render::render(&config, paths, &identity, stage.path(), dev)?;
    staged.write()?;
    let staged_command =
        render::php_fpm_command(&binary.path, &config, &identity, &staged.main_path());
    crate::phpfpm_test::test(&staged_command, &staged.main_path()).await?;
    let files = render::render(&config, paths, &identity, dir, dev)?;
    let command = render::php_fpm_command(&binary.path, &config, &identity, &files.main_path());
    Ok(Candidate(Generation {
        config,
        identity,
        files,
        command,
    }))
}

impl Candidate {
    /// Writes the files into the running directory (each by atomic rename)
    /// and removes pool files of a renamed pool.
    pub fn apply(self) -> anyhow::Result<Generation> {
        let g = self.0;
        g.files.write()?;
        let pool_dir = g.files.dir.join("pool.d");
        let keep: PathBuf = g.files.dir.join(&g.files.pool_file);
        for e in std::fs::read_dir(&pool_dir)
            .with_context(|| format!("reading {}", pool_dir.display()))?
            .flatten()
        {
            let p = e.path();
            if p != keep && p.extension().is_some_and(|x| x == "conf") {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(g)
    }

    pub fn generation(&self) -> &Generation {
        &self.0
    }
}

/// Logs why a reload was refused: every config problem on its own line,
/// naming its key.
pub fn log_refusal(err: &anyhow::Error) {
    let problems = err
        .chain()
        .find_map(|c| c.downcast_ref::<ConfigError>())
        .map(ConfigError::problems)
        .unwrap_or_default();
    for p in problems {
        tracing::error!(key = %p.key, fix = %p.fix, "reload refused: {}: {}", p.key, p.message);
    }
    tracing::error!("reload refused; php-fpm keeps serving the previous config: {err:#}");
}
