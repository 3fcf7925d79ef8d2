//! Pool logic against plain unix sockets (no FastCGI needed: the pool only
//! connects, lends and takes back), on paused tokio time: every deadline,
//! connect timeout and idle lifetime is virtual, so a queue timeout takes
//! exactly its time and nothing sleeps for real. The sockets are in-process
//! and answer at once, which paused time needs (it jumps to the next timer
//! whenever every task waits).

use super::*;
use crate::config::Endpoint;
use std::path::PathBuf;

use tokio::net::UnixListener;

fn settings() -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_millis(500),
        idle_lifetime: None,
        failure_threshold: 2,
        open: Duration::from_secs(60),
    }
}

fn ready(generation: u64, path: &std::path::Path, pool_size: u32) -> PhpFpmState {
    PhpFpmState::Ready {
        backend: Backend::new(
            generation,
            Endpoint::Unix(path.to_path_buf()),
            None,
            pool_size,
            0,
        ),
    }
}

/// Plays the supervisor: publishes states and retires a backend that
/// stops being the current one.
struct Publisher(watch::Sender<PhpFpmState>);

impl Publisher {
    fn new(first: PhpFpmState) -> (Self, watch::Receiver<PhpFpmState>) {
        let (tx, rx) = watch::channel(first);
        (Publisher(tx), rx)
    }

    fn send(&self, s: PhpFpmState) {
        let old = self.0.send_replace(s);
        if let PhpFpmState::Ready { backend } = old
            && self.0.borrow().backend() != Some(&backend)
        {
            backend.retire();
        }
    }
}

/// A stand-in for php-fpm: a unix listener that accepts and keeps every
/// connection open.
struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Accepted server-side sockets, kept open.
    accepted: Arc<Mutex<Vec<tokio::net::UnixStream>>>,
}

impl Server {
    /// Waits (up to a virtual second) until `n` connections were accepted.
    async fn wait_accepted(&self, n: usize) {
        for _ in 0..1000 {
            if self.accepted.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{n} connections never accepted");
    }
}

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fpm.sock");
    let l = UnixListener::bind(&path).unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.lock().unwrap().push(s);
        }
    });
    Server {
        _dir: dir,
        path,
        accepted,
    }
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Lets spawned tasks run up to where they wait, and `ms` pass.
async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn at_most_pool_size_connections_then_fifo_queue_with_timeout() {
    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 2));
    let pool = UpstreamPool::new(rx, settings());
    let l1 = pool.acquire(soon(500)).await.unwrap();
    let l2 = pool.acquire(soon(500)).await.unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        pool.acquire(soon(100)).await,
        Err(AcquireError::QueueTimeout)
    ));
    assert_eq!(t0.elapsed(), Duration::from_millis(100), "at its deadline");
    // A waiter gets the connection given back, not a new one.
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.acquire(soon(2000)).await.map(|l| l.reused) });
    pass(50).await;
    l1.release();
    assert!(
        waiter.await.unwrap().unwrap(),
        "reused the released connection"
    );
    drop(l2);
    b.wait_accepted(2).await;
    pass(50).await;
    assert_eq!(
        b.accepted.lock().unwrap().len(),
        2,
        "never more than pool_size connections"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_wait_while_php_fpm_restarts_and_go_to_the_new_one() {
    let b = server();
    let (tx, rx) = Publisher::new(PhpFpmState::Starting);
    let pool = UpstreamPool::new(rx, settings());
    let p = pool.clone();
    tokio::spawn(p.clone().maintain(CancellationToken::new()));
    let queued = tokio::spawn(async move { p.acquire(soon(3000)).await.map(|l| l.reused) });
    pass(100).await;
    assert!(!queued.is_finished());
    tx.send(ready(1, &b.path, 1));
    assert!(!queued.await.unwrap().unwrap());

    // Generation 2 (a restart): the idle connection of generation 1 is dropped.
    pool.acquire(soon(500)).await.unwrap().release();
    assert_eq!(pool.idle_count(), 1);
    tx.send(PhpFpmState::Restarting);
    let p = pool.clone();
    let queued = tokio::spawn(async move { p.acquire(soon(3000)).await.map(|l| l.reused) });
    pass(100).await;
    assert!(
        !queued.is_finished(),
        "held in the queue during the restart"
    );
    tx.send(ready(2, &b.path, 1));
    assert!(
        !queued.await.unwrap().unwrap(),
        "a fresh connection to the new php-fpm"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connection_closed_by_php_fpm_is_not_reused() {
    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 1));
    let pool = UpstreamPool::new(rx, settings());
    pool.acquire(soon(500)).await.unwrap().release();
    assert_eq!(pool.idle_count(), 1);
    // php-fpm closes it (pm.max_requests reached).
    b.wait_accepted(1).await;
    b.accepted.lock().unwrap().clear();
    pass(50).await;
    pool.reap(Instant::now());
    assert_eq!(pool.idle_count(), 0);
    let l = pool.acquire(soon(500)).await.unwrap();
    assert!(!l.reused);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_expire() {
    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 1));
    let mut s = settings();
    s.idle_lifetime = Some(Duration::from_millis(100));
    let pool = UpstreamPool::new(rx, s);
    pool.acquire(soon(500)).await.unwrap().release();
    pool.reap(Instant::now());
    assert_eq!(pool.idle_count(), 1);
    tokio::time::advance(Duration::from_millis(99)).await;
    pool.reap(Instant::now());
    assert_eq!(pool.idle_count(), 1, "not before its lifetime");
    tokio::time::advance(Duration::from_millis(51)).await;
    pool.reap(Instant::now());
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn refused_connections_open_the_breaker_queue_timeouts_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.sock");
    let (_tx, rx) = Publisher::new(ready(1, &path, 1));
    let pool = UpstreamPool::new(rx, settings());
    assert!(matches!(
        pool.acquire(soon(500)).await,
        Err(AcquireError::Unreachable(_))
    ));
    assert!(matches!(
        pool.acquire(soon(500)).await,
        Err(AcquireError::Unreachable(_))
    ));
    assert!(matches!(
        pool.acquire(soon(500)).await,
        Err(AcquireError::BreakerOpen)
    ));

    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 1));
    let pool = UpstreamPool::new(rx, settings());
    let _held = pool.acquire(soon(500)).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            pool.acquire(soon(20)).await,
            Err(AcquireError::QueueTimeout)
        ));
    }
    assert!(
        pool.breaker()
            .lock()
            .unwrap()
            .allows_request(Instant::now())
    );
}

#[tokio::test(start_paused = true)]
async fn a_smaller_pool_size_takes_effect() {
    let b = server();
    let (tx, rx) = Publisher::new(ready(1, &b.path, 3));
    let pool = UpstreamPool::new(rx, settings());
    tokio::spawn(pool.clone().maintain(CancellationToken::new()));
    tx.send(ready(1, &b.path, 1));
    pass(50).await;
    let _l = pool.acquire(soon(500)).await.unwrap();
    assert!(matches!(
        pool.acquire(soon(50)).await,
        Err(AcquireError::QueueTimeout)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_connection_read_to_the_end_is_reused() {
    use tokio::io::AsyncWriteExt as _;
    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 1));
    let pool = UpstreamPool::new(rx, settings());
    let mut l = pool.acquire(soon(500)).await.unwrap();
    b.wait_accepted(1).await;
    let mut server = b.accepted.lock().unwrap().pop().unwrap();
    server.write_all(b"response").await.unwrap();
    // Read exactly what came: readiness still says "readable" afterwards.
    let (up, buf) = l.parts();
    while buf.len() < 8 {
        up.read_buf(buf).await.unwrap();
    }
    buf.clear();
    l.release();
    assert_eq!(
        pool.idle_count(),
        1,
        "a stale readable flag must not drop it"
    );
    assert!(pool.acquire(soon(500)).await.unwrap().reused);
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn a_replay_after_php_fpm_died_waits_for_the_restarted_one() {
    let b1 = server();
    let (tx, rx) = Publisher::new(ready(1, &b1.path, 1));
    let pool = UpstreamPool::new(rx, settings());
    tokio::spawn(pool.clone().maintain(CancellationToken::new()));
    let first = pool.acquire(soon(500)).await.unwrap();
    // php-fpm is killed: its socket is gone.
    std::fs::remove_file(&b1.path).unwrap();
    let b2 = server();
    let path2 = b2.path.clone();
    let t0 = Instant::now();
    tokio::spawn(async move {
        pass(200).await;
        tx.send(PhpFpmState::Restarting);
        pass(200).await;
        tx.send(ready(2, &path2, 1));
        pass(5000).await;
    });
    let lease = pool.acquire_fresh(soon(3000), Some(1)).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(400),
        "when it was ready"
    );
    assert!(!lease.reused);
    assert_eq!(lease.backend().generation, 2, "never the php-fpm that died");
    b2.wait_accepted(1).await;
    // Released into the new generation's pool; the old lease is not.
    lease.release();
    first.release();
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retired_backend_drains_and_its_queue_moves_to_the_next() {
    let b1 = server();
    let b2 = server();
    let (tx, rx) = Publisher::new(ready(1, &b1.path, 1));
    let pool = UpstreamPool::new(rx, settings());
    let held = pool.acquire(soon(500)).await.unwrap();
    pool.acquire(soon(500)).await.err();
    let old = held.backend().clone();
    assert_eq!(old.busy(), 1);
    let p = pool.clone();
    let queued =
        tokio::spawn(async move { p.acquire(soon(3000)).await.map(|l| l.backend().generation) });
    pass(50).await;
    assert!(!queued.is_finished(), "waits for the one connection");
    // A reload: generation 2 beside generation 1.
    tx.send(ready(2, &b2.path, 1));
    assert_eq!(queued.await.unwrap().unwrap(), 2, "the queue moved on");
    assert!(old.is_retired());
    let drained = tokio::spawn(async move { old.drained().await });
    pass(50).await;
    assert!(
        !drained.is_finished(),
        "a request still runs on the old one"
    );
    held.release();
    drained.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_retired_at_max_requests() {
    let b = server();
    let backend = Backend::new(1, Endpoint::Unix(b.path.clone()), None, 1, 2);
    let (_tx, rx) = Publisher::new(PhpFpmState::Ready { backend });
    let pool = UpstreamPool::new(rx, settings());
    pool.acquire(soon(500)).await.unwrap().release();
    let second = pool.acquire(soon(500)).await.unwrap();
    assert!(second.reused);
    second.release();
    assert_eq!(pool.idle_count(), 0, "php-fpm closes it after 2 requests");
}

#[tokio::test(start_paused = true)]
async fn failures_of_a_replaced_php_fpm_never_count() {
    let dir = tempfile::tempdir().unwrap();
    let b = server();
    let (tx, rx) = Publisher::new(ready(1, &dir.path().join("gone.sock"), 1));
    let pool = UpstreamPool::new(rx, settings());
    tx.send(ready(2, &b.path, 1));
    for _ in 0..5 {
        pool.report_failure(1);
    }
    assert!(
        pool.acquire(soon(500)).await.is_ok(),
        "breaker still closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lane_takes_at_most_its_max_and_leaves_the_rest_of_the_pool_free() {
    let b = server();
    let (_tx, rx) = Publisher::new(ready(1, &b.path, 3));
    let pool = UpstreamPool::new(rx, settings());
    let lanes = crate::fcgi::lanes::Lanes::new(&[crate::config::Lane {
        name: "export".into(),
        matches: "/export/*".into(),
        max: 1,
        queue_timeout: Duration::from_secs(1),
    }]);
    let export = lanes.get(0).unwrap();
    let held = pool.acquire_in(soon(500), Some(export)).await.unwrap();
    // A second export request waits in the lane's queue, then times out…
    let t0 = Instant::now();
    assert!(matches!(
        pool.acquire_in(soon(100), Some(export)).await,
        Err(AcquireError::QueueTimeout)
    ));
    assert_eq!(t0.elapsed(), Duration::from_millis(100), "at its deadline");
    // …while everything else still gets the pool's other connections.
    let a = pool.acquire(soon(100)).await.unwrap();
    let b2 = pool.acquire(soon(100)).await.unwrap();
    assert_eq!(export.in_use(), 1);
    held.release();
    assert_eq!(export.in_use(), 0, "given back with the connection");
    let again = pool.acquire_in(soon(500), Some(export)).await.unwrap();
    assert!(again.reused);
    drop((a, b2));
}
