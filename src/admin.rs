//! The admin HTTP endpoint (DESIGN §9): `/metrics`, `/healthz`, `/readyz`,
//! `/status`, on TCP or a unix socket. Off unless `admin.listen` is set.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Endpoint;
use crate::fcgi::io::Stream;
use crate::fcgi::listen::Listener;
use crate::fcgi::upstream::PhpFpmState;
use crate::metrics::{self, BreakerState, PoolStatus};

/// Fetches php-fpm's `pm.status_path?json` body from an endpoint.
pub type ScrapeFn = Arc<
    dyn Fn(Endpoint) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<u8>>> + Send>> + Send + Sync,
>;

/// What the admin endpoint reads.
pub struct AdminView {
    pub state: watch::Receiver<PhpFpmState>,
    /// How to reach php-fpm's status page.
    pub scrape: ScrapeFn,
    /// The last scrape, reused for a second so a busy scraper costs php-fpm
    /// at most one status request per second.
    cache: Mutex<Option<(Instant, Option<PoolStatus>)>>,
    /// The forwarder's lanes, for `/status`.
    pub lanes: Arc<crate::fcgi::lanes::Lanes>,
}

impl AdminView {
    pub fn new(state: watch::Receiver<PhpFpmState>, scrape: ScrapeFn) -> Arc<Self> {
        Self::with_lanes(state, scrape, Arc::default())
    }

    /// A view that also shows the forwarder's lanes.
    pub fn with_lanes(
        state: watch::Receiver<PhpFpmState>,
        scrape: ScrapeFn,
        lanes: Arc<crate::fcgi::lanes::Lanes>,
    ) -> Arc<Self> {
        Arc::new(AdminView {
            state,
            scrape,
            cache: Mutex::new(None),
            lanes,
        })
    }

    /// php-fpm's pool status, at most a second old; None when php-fpm is not
    /// ready or did not answer.
    pub async fn pool_status(&self) -> Option<PoolStatus> {
        let mut cache = self.cache.lock().await;
        if let Some((at, status)) = cache.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return status.clone();
        }
        // php-fpm's status pool answers even when every child of the main
        // pool is busy or held by the forwarder (DESIGN §6, liveness).
        let endpoint = self
            .state
            .borrow()
            .backend()
            .map(|b| b.status.clone().unwrap_or_else(|| b.endpoint.clone()));
        let status = match endpoint {
            Some(e) => match (self.scrape)(e).await {
                Ok(body) => serde_json::from_slice::<PoolStatus>(&body)
                    .inspect_err(|err| tracing::debug!(%err, "php-fpm status page did not parse"))
                    .ok(),
                Err(err) => {
                    tracing::debug!(%err, "php-fpm status scrape failed");
                    None
                }
            },
            None => None,
        };
        if let Some(s) = &status {
            metrics::global().pool_status(s);
        }
        *cache = Some((Instant::now(), status.clone()));
        status
    }

    /// Why tqsup is not ready, or None when it is: php-fpm is up, answered
    /// the supervisor's last ping, and the forwarder's breaker is closed.
    pub fn not_ready_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            PhpFpmState::Ready { .. } => {}
            PhpFpmState::Starting => return Some("php-fpm is starting".into()),
            PhpFpmState::Restarting => return Some("php-fpm is restarting".into()),
            PhpFpmState::Stopped => return Some("tqsup is stopping".into()),
        }
        let m = metrics::global();
        if m.php_fpm_answering() == Some(false) {
            return Some("php-fpm did not answer its last ping".into());
        }
        match m.breaker_state() {
            BreakerState::Closed => None,
            BreakerState::HalfOpen => {
                Some("circuit breaker half-open: php-fpm failed its probes".into())
            }
            BreakerState::Open => Some("circuit breaker open: php-fpm failed its probes".into()),
        }
    }
}

/// The one-line summary shared by `/status` and systemd's `STATUS=`.
pub fn summary(state: &PhpFpmState, pool: Option<&PoolStatus>) -> String {
    let m = metrics::global();
    let head = match state {
        PhpFpmState::Starting => "php-fpm starting".to_string(),
        PhpFpmState::Ready { backend } => {
            format!("php-fpm ready (generation {})", backend.generation)
        }
        PhpFpmState::Restarting => "php-fpm restarting".to_string(),
        PhpFpmState::Stopped => "stopping".to_string(),
    };
    let children = match pool {
        Some(p) => format!(
            "; {} children: {} active, {} idle",
            p.total_processes, p.active_processes, p.idle_processes
        ),
        None => String::new(),
    };
    let breaker = match m.breaker_state() {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
    };
    format!(
        "{head}{children}; {} in flight, {} queued; breaker {breaker}; {} restarts",
        m.in_flight.get(),
        m.queue_depth.get(),
        m.restarts_total()
    )
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
    let text = "text/plain; charset=utf-8";
    Ok(match req.uri().path() {
        "/metrics" => {
            view.pool_status().await;
            response(
                StatusCode::OK,
                // What prometheus-client's text encoder writes (`# EOF`,
                // `# UNIT`, counters' `_total`); Prometheus scrapes it.
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics::global().encode(),
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
            let m = metrics::global();
            let body = serde_json::json!({
                "summary": summary(&state, pool.as_ref()),
                "ready": view.not_ready_reason().is_none(),
                "not_ready_reason": view.not_ready_reason(),
                "php_fpm": {
                    "state": match &state {
                        PhpFpmState::Starting => "starting",
                        PhpFpmState::Ready { .. } => "ready",
                        PhpFpmState::Restarting => "restarting",
                        PhpFpmState::Stopped => "stopped",
                    },
                    "generation": state.backend().map(|b| b.generation),
                    "uptime_seconds": m.php_fpm_uptime(),
                    "restarts": m.restarts_total(),
                    "pool": pool,
                },
                "forward": {
                    "in_flight": m.in_flight.get(),
                    "queue_depth": m.queue_depth.get(),
                    "upstream_connections_open": m.upstream_open.get(),
                    "upstream_connections_idle": m.upstream_idle.get(),
                    "downstream_connections_open": m.downstream_open.get(),
                    "breaker": match m.breaker_state() {
                        BreakerState::Closed => "closed",
                        BreakerState::HalfOpen => "half-open",
                        BreakerState::Open => "open",
                    },
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
    })
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
