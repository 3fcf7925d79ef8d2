//! Forwarding to a php-fpm that tqsup does not run (`php_fpm.enabled:
//! false`): php-fpm is taken as always ready at `php_fpm.listen`.

use tokio::sync::watch;

use crate::config::Config;
use crate::upstream::PhpFpmState;

/// A state receiver that says `Ready` once and forever.
pub fn forward_only(config: &Config) -> watch::Receiver<PhpFpmState> {
    let endpoint = config
        .php_fpm
        .listen
        .clone()
        .expect("validation requires php_fpm.listen when php_fpm.enabled is false");
    let (_tx, rx) = watch::channel(PhpFpmState::Ready {
        generation: 1,
        endpoint,
        pool_size: config.php_fpm.pool_size,
    });
    rx
}
