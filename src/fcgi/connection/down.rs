//! The downstream connection as its requests see it: the socket, one writer
//! at a time, and how a request learns it is aborted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fcgi::io::{self, Stream};
use crate::fcgi::metrics;

/// The downstream connection as requests see it: one writer at a time.
pub struct Down {
    pub stream: Stream,
    /// Serialises whole batches of records from concurrent requests (only
    /// multiplexed connections ever contend for it; uncontended it is one
    /// atomic operation, and it cannot be held across a request).
    pub write_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the connection is finished (client gone, protocol
    /// error, or a request without KEEP_CONN ended): requests still running
    /// on it are abandoned and their upstream connections closed.
    pub done: CancellationToken,
    pub write_timeout: Duration,
    /// The request the connection runs inline (see [`Abort::Inline`]) is
    /// aborted; cleared by the connection when it ends.
    inline_abort: AtomicBool,
}

/// How a request learns that it is aborted (FCGI_ABORT_REQUEST, a client
/// that stopped sending its body, or the connection finished).
#[derive(Clone)]
pub enum Abort {
    /// A request running in its own task (multiplexed connections): a
    /// child of [`Down::done`].
    Token(CancellationToken),
    /// The one request a connection runs inline, in its own task: the
    /// connection's [`Down::abort_inline`], which it also calls when it is
    /// finished. Costs nothing per request: no token, no waker (the flag is
    /// set by the task that polls the exchange, which polls it again next).
    Inline,
}

impl Abort {
    /// Aborts the request (its exchange answers END_REQUEST and closes
    /// php-fpm's connection).
    pub fn cancel(&self, down: &Down) {
        match self {
            Abort::Token(t) => t.cancel(),
            Abort::Inline => down.abort_inline(),
        }
    }
}

impl Down {
    pub fn new(stream: Stream, write_timeout: Duration) -> Self {
        Down {
            stream,
            write_lock: tokio::sync::Mutex::new(()),
            done: CancellationToken::new(),
            write_timeout,
            inline_abort: AtomicBool::new(false),
        }
    }

    /// Aborts the request running inline. Only the connection's own task
    /// calls it: that task polls the inline exchange again before it waits.
    pub fn abort_inline(&self) {
        self.inline_abort.store(true, Ordering::Relaxed);
    }

    /// Readies the abort signal for the next inline request.
    pub fn reset_inline(&self) {
        self.inline_abort.store(false, Ordering::Relaxed);
    }

    /// Resolves when the request is aborted.
    pub(crate) async fn aborted(&self, abort: &Abort) {
        match abort {
            Abort::Token(t) => t.cancelled().await,
            Abort::Inline => {
                std::future::poll_fn(|_| {
                    if self.inline_abort.load(Ordering::Relaxed) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }

    /// Writes `parts` as one batch; on failure the connection is finished.
    pub async fn send(&self, parts: &[&[u8]]) -> bool {
        let _g = match self.write_lock.try_lock() {
            Ok(g) => g,
            Err(_) => self.write_lock.lock().await,
        };
        if self.done.is_cancelled() {
            return false;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        match io::write_all(&self.stream, parts, self.write_timeout).await {
            Ok(()) => {
                metrics::global().sent_bytes.inc_by(len as u64);
                true
            }
            Err(e) => {
                tracing::info!(error = %e, "FastCGI client connection lost while writing");
                self.done.cancel();
                false
            }
        }
    }
}
