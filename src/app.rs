//! `tqsup run`: everything wired together under one cancellation tree.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli;
use crate::exit;
use crate::render;
use crate::upstream::InternalPaths;

/// What `tqsup run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub dev: bool,
    pub verbose: u8,
}

/// Foreground runner (to be replaced by the supervisor): render, test,
/// launch php-fpm and wait for it.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let (config, _notes) = cli::load_config(args.config.as_deref(), args.dev)?;
    crate::logging::init(config.log.format, &config.log.level);
    if !config.php_fpm.enabled {
        return forward_only(config); // forwarder (temporary wiring)
    }
    let binary = cli::find_binary(&config)?;
    let dev = args.dev || config.dev.enabled;
    let identity = render::resolve_identity(&config, dev);
    let tmp = tempfile::Builder::new()
        .prefix("tqsup-")
        .tempdir()
        .context("creating the runtime directory")?;
    let dir = cli::private_dir(tmp.path())?;
    let files = render::render(&config, &InternalPaths::generate(), &identity, &dir, dev)?;
    files.write()?;
    let command = render::php_fpm_command(&binary.path, &config, &identity, &files.main_path());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        crate::phpfpm_test::test(&command, &files.main_path()).await?;
        let status = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .status()
            .await?;
        anyhow::Ok(status)
    })?;
    Ok(exit::OK)
}

// forwarder (temporary wiring): serve the forward listener in front of a
// php-fpm run elsewhere, until SIGTERM/SIGINT.
fn forward_only(config: crate::config::Config) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let state = crate::fcgi::standalone::forward_only(&config);
        let fwd = crate::fcgi::run_forwarder(
            std::sync::Arc::new(config),
            state,
            InternalPaths::generate(),
            shutdown.clone(),
        );
        let stop = async {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} };
            shutdown.cancel();
            std::future::pending::<()>().await
        };
        tokio::select! { r = fwd => r?, _ = stop => {} }
        anyhow::Ok(exit::OK)
    })
}
