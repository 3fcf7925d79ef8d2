//! One pooled php-fpm connection lent to one request, and how it goes back
//! to the pool (or is closed) when the request ends.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Backend;
use crate::config::Endpoint;
use crate::fcgi::backend::{BusyGuard, Held, Holder, Idle};
use crate::fcgi::io::Stream;
use crate::fcgi::lanes::LanePermit;
use crate::fcgi::metrics::{self, GaugeGuard};

/// One connection lent to one request. Dropping it closes the connection;
/// [`Lease::release`] gives it back.
pub struct Lease {
    pub(super) backend: Arc<Backend>,
    pub(super) _permit: OwnedSemaphorePermit,
    /// Counts the lease in the backend's requests in flight.
    pub(super) _busy: BusyGuard,
    pub(super) conn: Stream,
    /// The php-fpm child holding the other end, when tqsup recycles.
    pub(super) held: Option<Held>,
    /// The response read buffer (empty when lent).
    pub buf: BytesMut,
    /// Whether the connection was pooled (so it may have died while idle).
    pub reused: bool,
    /// Requests php-fpm completed on this connection before this one.
    pub(super) served: u32,
    /// Counts the connection in `upstream_connections_open`.
    pub(super) open: GaugeGuard,
    /// Counts it in `upstream_connections_busy`.
    pub(super) _busy_gauge: GaugeGuard,
    /// The room this request holds in its lane, if it has one.
    pub(super) lane: Option<LanePermit>,
}

impl Lease {
    pub fn stream(&self) -> &Stream {
        &self.conn
    }

    /// Moves the lane room to another lease (a replay's).
    pub fn take_lane(&mut self) -> Option<LanePermit> {
        self.lane.take()
    }

    pub fn set_lane(&mut self, lane: Option<LanePermit>) {
        self.lane = lane;
    }

    /// The php-fpm instance this connection goes to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The connection and its read buffer, borrowed together.
    pub fn parts(&mut self) -> (&Stream, &mut BytesMut) {
        (&self.conn, &mut self.buf)
    }

    /// Replaces a connection found dead by a fresh one to the same php-fpm
    /// (for a replay), keeping this lease's place in the pool.
    pub async fn reconnect(&mut self, timeout: Duration) -> io::Result<()> {
        // Which child takes it is learnt when it is first given back.
        self.conn = connect(&self.backend.endpoint, timeout).await?;
        self.held = None;
        self.buf.clear();
        self.reused = false;
        self.served = 0;
        Ok(())
    }

    /// Returns a connection whose last exchange ended cleanly (php-fpm sent
    /// END_REQUEST and nothing after it).
    ///
    /// When tqsup recycles children, a connection is pooled only once it is
    /// known which child holds it, learnt here at its first return: by now
    /// a child has accepted it and served a request (at connect time it may
    /// still wait in the listen backlog). One that cannot be placed, or
    /// whose child is being recycled, is closed instead.
    pub fn release(mut self) {
        if self.held.is_none() && self.backend.children().is_some() {
            match self.backend.identify(&self.conn) {
                Holder::Child(h) => self.held = Some(h),
                Holder::Recycling | Holder::Unknown => return,
            }
        }
        let served = self.served.saturating_add(1);
        let b = &self.backend;
        if b.is_retired()
            || !self.buf.is_empty()
            || (b.max_requests > 0 && served >= b.max_requests)
            || !b.lendable(&self.held)
        {
            // php-fpm closes a child's connection after its max_requests:
            // never lend one that is about to be shut.
            return;
        }
        let backend = self.backend.clone();
        let mut idle = backend.idle.lock().unwrap();
        idle.push(Idle {
            conn: self.conn,
            held: self.held,
            buf: self.buf,
            since: Instant::now(),
            served,
            open: self.open,
            _idle: metrics::global().hold(|m| &m.upstream_idle),
        });
    }
}

pub(super) async fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Stream> {
    match tokio::time::timeout(timeout, Stream::connect(endpoint)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}
