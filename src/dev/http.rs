//! The dev HTTP/1.1 front (`dev.http_listen`): static files from the
//! document root, everything else to PHP over FastCGI (see `route`), so a
//! developer needs no web server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::route::{self, Route};
use super::{php, static_files};
use crate::config::Endpoint;
use crate::fcgi::io::Stream;
use crate::fcgi::listen::Listener;

/// Every response body: a file, PHP's output, or a short text.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A short plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::copy_from_slice(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

/// What the front needs to answer requests.
#[derive(Debug, Clone)]
pub struct Front {
    /// The document root (absolute).
    pub root: PathBuf,
    /// Where PHP requests go (the forward listener, or php-fpm itself).
    pub target: Endpoint,
    pub connect_timeout: Duration,
    /// Longest silence from php-fpm while a response is open.
    pub read_timeout: Duration,
    /// What the error pages say about php-fpm.
    pub diagnostics: super::Diagnostics,
}

impl Front {
    async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route = {
            let root = self.root.clone();
            let p = path.clone();
            tokio::task::spawn_blocking(move || route::route(&root, &p, route::fs_kind))
                .await
                .unwrap_or(Route::NotFound)
        };
        let resp = match route {
            Route::Forbidden => text(StatusCode::FORBIDDEN, "forbidden\n"),
            Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            Route::Static(file) => static_files::serve(&file, &method, req.headers()).await,
            Route::Php(script) => php::respond(self, req, script, remote, local).await,
        };
        debug!(
            %method,
            path,
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dev http"
        );
        resp
    }
}

/// Binds `listen` (host:port) exactly; with `next_free` (zero-config dev
/// mode), a taken port makes it try the next ones, up to `last_port`.
pub fn bind(listen: &str, next_free: bool, last_port: u16) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    let tcp = |addr: String| Listener::bind(&Endpoint::Tcp(addr), None);
    let first = tcp(listen.to_string());
    let port_taken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    match first {
        Ok(l) => return Ok(l),
        Err(e) if !(next_free && port_taken(&e)) => {
            return Err(e).with_context(|| {
                format!("binding dev.http_listen {listen}; fix: stop what listens there or set dev.http_listen to another address")
            });
        }
        Err(_) => {}
    }
    let (host, port) = listen
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .with_context(|| format!("dev.http_listen {listen} is not host:port"))?;
    for p in port.saturating_add(1)..=last_port {
        match tcp(format!("{host}:{p}")) {
            Ok(l) => return Ok(l),
            Err(e) if port_taken(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("binding {host}:{p}")),
        }
    }
    anyhow::bail!(
        "ports {port} to {last_port} on {host} are all taken; fix: free one, or set dev.http_listen in a tqsup.yaml"
    )
}

/// Serves until `shutdown`, then lets open connections finish (bounded).
pub async fn serve(listener: Listener, front: Arc<Front>, shutdown: CancellationToken) {
    let addr = listener.local_addr();
    info!(url = %format!("http://{addr}/"), root = %front.root.display(), "dev HTTP front listening");
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(Stream::Tcp(s)) => s,
                Ok(Stream::Unix(_)) => unreachable!("dev.http_listen is host:port (validated)"),
                Err(e) => {
                    warn!(error = %e, "dev http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(remote) = stream.peer_addr() else {
            continue;
        };
        let local = stream.local_addr().unwrap_or(remote);
        let front = front.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.handle(req, remote, local).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "dev http connection ended with an error");
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        warn!("dev http: connections still open after the drain; dropping them");
    }
}
