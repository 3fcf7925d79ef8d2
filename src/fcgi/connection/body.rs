//! A request's body on its way from the client to the request's task:
//! handed over at once when the task's channel has room (no copy), else
//! queued here, copied back to back and bounded per connection by the caller,
//! so that reading the connection never waits on one request's queue slot.

use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use crate::fcgi::exchange::StdinMsg;

/// The STDIN side of a running request.
pub struct Body {
    /// None: the request has no body to pass on (its empty STDIN is in its
    /// head).
    tx: Option<mpsc::Sender<StdinMsg>>,
    /// Waits for room in the channel; made the first time it was full (it
    /// boxes its wait, so a request whose body always fits costs nothing).
    waiter: Option<PollSender<StdinMsg>>,
    /// STDIN records for php-fpm the task has not taken yet, back to back.
    queued: BytesMut,
    /// `End` or `Bad`, to hand over after `queued`.
    last: Option<StdinMsg>,
    /// Body bytes still expected per CONTENT_LENGTH.
    pub remaining: u64,
    /// Every STDIN record has come, or the body was given up on: later ones
    /// are ignored and no timeout applies.
    pub complete: bool,
    /// The body reached CONTENT_LENGTH and its end went to php-fpm at once
    /// (php-fpm may answer before the client's own empty record arrives;
    /// if that record only reached php-fpm afterwards, the kept connection
    /// would be out of step and could not be reused). The client's empty
    /// record then adds nothing, and the request is whole.
    pub ended: bool,
    /// When the client last sent some of it (`stdin_timeout`).
    pub last_input: Instant,
}

impl Body {
    /// A body of `remaining` bytes still to come.
    pub fn new(tx: mpsc::Sender<StdinMsg>, remaining: u64) -> Self {
        Body {
            tx: Some(tx),
            waiter: None,
            queued: BytesMut::new(),
            last: None,
            remaining,
            complete: false,
            ended: false,
            last_input: Instant::now(),
        }
    }

    /// A request whose (empty) body is already in its head; `tx` tells a
    /// task's end (a request run inline has none: the connection sees it end).
    pub fn none(tx: Option<mpsc::Sender<StdinMsg>>) -> Self {
        Body {
            tx,
            waiter: None,
            queued: BytesMut::new(),
            last: None,
            remaining: 0,
            complete: true,
            ended: true,
            last_input: Instant::now(),
        }
    }

    /// The task has let go of its STDIN: the request is over.
    pub fn task_done(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.is_closed())
    }

    /// Bytes queued here.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Something waits for room in the channel.
    pub fn pending(&self) -> bool {
        !self.queued.is_empty() || self.last.is_some()
    }

    /// Hands `msg` over, or queues it behind what already waits. A `Bad`
    /// drops what is queued: the task only has to fail.
    pub fn push(&mut self, mut msg: StdinMsg) {
        if matches!(msg, StdinMsg::Bad(_)) {
            self.queued = BytesMut::new();
        }
        let Some(tx) = &self.tx else { return };
        if !self.pending() {
            match tx.try_send(msg) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(m)) => msg = m,
            }
        }
        match msg {
            StdinMsg::Data(b) => self.queued.extend_from_slice(&b),
            other => self.last = Some(other),
        }
    }

    /// Gives up on the rest of the body: the task gets `Bad(status)`
    /// (answers it, closes its php-fpm connection).
    pub fn give_up(&mut self, status: u16) {
        self.complete = true;
        self.push(StdinMsg::Bad(status));
    }

    /// Moves what is queued into the channel as room appears. Ready when
    /// something moved or the task is gone (nothing left to wait for).
    pub fn poll_deliver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(tx) = &self.tx else {
            return Poll::Ready(());
        };
        let waiter = self
            .waiter
            .get_or_insert_with(|| PollSender::new(tx.clone()));
        let mut moved = false;
        while !self.queued.is_empty() || self.last.is_some() {
            match waiter.poll_reserve(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => {
                    self.queued = BytesMut::new();
                    self.last = None;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {
                    let msg = if self.queued.is_empty() {
                        self.last.take().expect("checked above")
                    } else {
                        StdinMsg::Data(self.queued.split().freeze())
                    };
                    let _ = waiter.send_item(msg);
                    moved = true;
                }
            }
        }
        if moved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::FutureExt as _;

    use super::*;

    fn data(s: &'static [u8]) -> StdinMsg {
        StdinMsg::Data(Bytes::from_static(s))
    }

    #[tokio::test]
    async fn a_full_channel_queues_without_waiting_then_delivers_in_order() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut b = Body::new(tx, 10);
        for m in [&b"a"[..], b"b", b"c", b"d"] {
            b.push(StdinMsg::Data(Bytes::copy_from_slice(m)));
        }
        b.push(StdinMsg::End(Bytes::from_static(b"end")));
        assert_eq!(b.queued(), 2);
        assert!(b.pending());
        let mut got = Vec::new();
        while b.pending() {
            let m = rx.recv().await.unwrap();
            got.push(m);
            let _ = std::future::poll_fn(|cx| Poll::Ready(b.poll_deliver(cx))).await;
        }
        while let Some(m) = rx.recv().now_or_never().flatten() {
            got.push(m);
        }
        let text: Vec<String> = got
            .iter()
            .map(|m| match m {
                StdinMsg::Data(b) => String::from_utf8_lossy(b).into_owned(),
                StdinMsg::End(_) => "END".into(),
                StdinMsg::Bad(s) => format!("BAD{s}"),
            })
            .collect();
        assert_eq!(text, ["a", "b", "cd", "END"]);
    }

    #[tokio::test]
    async fn giving_up_drops_the_queue_and_a_gone_task_frees_it() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut b = Body::new(tx, 10);
        for _ in 0..4 {
            b.push(data(b"x"));
        }
        b.give_up(408);
        assert!(b.complete);
        assert_eq!(b.queued(), 0);
        rx.recv().await.unwrap();
        let _ = std::future::poll_fn(|cx| Poll::Ready(b.poll_deliver(cx))).await;
        rx.recv().await.unwrap();
        assert!(matches!(rx.recv().await, Some(StdinMsg::Bad(408))));
        // The task closes its side: whatever is queued is dropped.
        b.push(data(b"y"));
        b.push(data(b"y"));
        b.push(data(b"y"));
        rx.close();
        assert!(b.task_done());
        let r = std::future::poll_fn(|cx| Poll::Ready(b.poll_deliver(cx))).await;
        assert!(r.is_ready());
        assert!(!b.pending());
    }
}
