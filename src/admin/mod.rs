//! The admin HTTP endpoint (DESIGN §9): `/metrics`, `/healthz`, `/readyz`,
//! `/status`, on TCP or a unix socket. Off unless `admin.listen` is set.
//! php-fpm's status page is scraped in `status.rs` and exported as the
//! gauges of `metrics.rs`; readiness is decided in `ready.rs`, from the
//! supervisor's and the breaker's state.

pub mod metrics;
mod ready;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Endpoint;
use crate::fcgi::breaker;
use crate::fcgi::breaker::SharedBreaker;
use crate::fcgi::io::Stream;
use crate::fcgi::listen::Listener;
use crate::fcgi::upstream::PhpFpmState;
use crate::supervisor::{breaker_word, summary};
pub use ready::not_ready_reason;
pub use status::{PoolStatus, ScrapeFn, Scraper};

/// What the admin endpoint reads: the supervisor's and the forwarder's
/// state, and php-fpm's status page.
pub struct AdminView {
    /// php-fpm as the supervisor published it.
    pub state: watch::Receiver<PhpFpmState>,
    /// Whether php-fpm answered the supervisor's last ping; None when tqsup
    /// does not launch php-fpm (forward-only: nothing pings it but the
    /// forwarder's health probe, which drives the breaker).
    answering: Option<watch::Receiver<bool>>,
    /// The forwarder's breaker; None without a forwarder.
    breaker: Option<SharedBreaker>,
    /// php-fpm's status page.
    scraper: Scraper,
    /// The forwarder's lanes, for `/status`.
    lanes: Arc<crate::fcgi::lanes::Lanes>,
}

impl AdminView {
    /// A view of `state`, scraping php-fpm's pool `www` (until its status
    /// page names it) with `scrape`.
    pub fn new(state: watch::Receiver<PhpFpmState>, scrape: ScrapeFn) -> Self {
        AdminView {
            state,
            answering: None,
            breaker: None,
            scraper: Scraper::new(scrape, "www"),
            lanes: Arc::default(),
        }
    }

    /// The supervisor's liveness (`Supervisor::answering`).
    pub fn with_answering(mut self, answering: watch::Receiver<bool>) -> Self {
        self.answering = Some(answering);
        self
    }

    /// The forwarder's breaker.
    pub fn with_breaker(mut self, breaker: SharedBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The forwarder's lanes, shown by `/status`.
    pub fn with_lanes(mut self, lanes: Arc<crate::fcgi::lanes::Lanes>) -> Self {
        self.lanes = lanes;
        self
    }

    /// The configured pool name, the `pool` label until a scrape names it.
    pub fn with_pool_name(mut self, pool: &str) -> Self {
        self.scraper.name_pool(pool);
        self
    }

    /// php-fpm's pool status, at most a second old; None when php-fpm is not
    /// ready or did not answer.
    pub async fn pool_status(&self) -> Option<PoolStatus> {
        // php-fpm's status pool answers even when every child of the main
        // pool is busy or held by the forwarder (DESIGN §6, liveness).
        let endpoint = self
            .state
            .borrow()
            .backend()
            .map(|b| b.status.clone().unwrap_or_else(|| b.endpoint.clone()));
        self.scraper.pool_status(endpoint).await
    }

    /// Why tqsup is not ready, or None when it is (see
    /// [`not_ready_reason`]).
    pub fn not_ready_reason(&self) -> Option<String> {
        let answering = self.answering.as_ref().map(|a| *a.borrow());
        let breaker = breaker::position(self.breaker.as_ref());
        not_ready_reason(&self.state.borrow(), answering, breaker)
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

async fn handle(
    view: Arc<AdminView>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(respond(&view, req.uri().path()).await)
}

/// The answer to a GET of `path`.
async fn respond(view: &AdminView, path: &str) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            view.pool_status().await;
            response(
                StatusCode::OK,
                // What prometheus-client's text encoder writes (`# EOF`,
                // `# UNIT`, counters' `_total`); Prometheus scrapes it.
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                crate::metrics::encode(),
            )
        }
        "/healthz" => response(StatusCode::OK, text, "ok\n"),
        "/readyz" => match view.not_ready_reason() {
            None => response(StatusCode::OK, text, "ready\n"),
            Some(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                format!("not ready: {why}\n"),
            ),
        },
        "/status" => {
            let pool = view.pool_status().await;
            let state = view.state.borrow().clone();
            let not_ready = view.not_ready_reason();
            let php_fpm = crate::supervisor::metrics::global();
            let m = crate::fcgi::metrics::global();
            let children = pool.as_ref().map(PoolStatus::children);
            let body = serde_json::json!({
                "summary": summary(&state, children, view.breaker.as_ref()),
                "ready": not_ready.is_none(),
                "not_ready_reason": not_ready,
                "php_fpm": {
                    "state": match &state {
                        PhpFpmState::Starting => "starting",
                        PhpFpmState::Ready { .. } => "ready",
                        PhpFpmState::Restarting => "restarting",
                        PhpFpmState::Stopped => "stopped",
                    },
                    "generation": state.backend().map(|b| b.generation),
                    "uptime_seconds": php_fpm.php_fpm_uptime(),
                    "restarts": php_fpm.restarts_total(),
                    "pool": pool,
                },
                "forward": {
                    "in_flight": m.in_flight.get(),
                    "queue_depth": m.queue_depth.get(),
                    "upstream_connections_open": m.upstream_open.get(),
                    "upstream_connections_idle": m.upstream_idle.get(),
                    "downstream_connections_open": m.downstream_open.get(),
                    "breaker": breaker_word(breaker::position(view.breaker.as_ref())),
                    "lanes": view.lanes.iter().map(|l| serde_json::json!({
                        "name": l.name,
                        "max": l.max,
                        "in_use": l.in_use(),
                        "queued": l.queued(),
                        "queue_timeout_ms": l.queue_timeout.as_millis() as u64,
                    })).collect::<Vec<_>>(),
                },
            });
            response(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => response(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics, /healthz, /readyz or /status\n",
        ),
    }
}

async fn serve_conn<IO>(io: IO, view: Arc<AdminView>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(view.clone(), req));
    if let Err(err) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%err, "admin connection ended with an error");
    }
}

/// Serves the admin endpoint until `shutdown` is cancelled.
pub async fn run_admin(
    listen: Endpoint,
    view: Arc<AdminView>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = Listener::bind(&listen, None).with_context(|| {
        let shown = match &listen {
            Endpoint::Tcp(addr) => addr.clone(),
            Endpoint::Unix(path) => path.display().to_string(),
        };
        format!("admin.listen: cannot listen on {shown}")
    })?;
    tracing::info!(listen = %listener.local_addr(), "admin endpoint listening");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(Stream::Tcp(s)) => {
                    tokio::spawn(serve_conn(s, view.clone()));
                }
                Ok(Stream::Unix(s)) => {
                    tokio::spawn(serve_conn(s, view.clone()));
                }
                Err(err) => {
                    tracing::warn!(%err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
