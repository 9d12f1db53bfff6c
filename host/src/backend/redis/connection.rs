//! The one multiplexed connection (a single server or a cluster) and the shared record of
//! whether Redis answers, which makes commands fail fast while it does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// One Redis server, or a Redis Cluster, with the shared record of whether it is answering.
/// Multiplexed, reconnecting by itself, cheap to clone.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) inner: Inner,
    pub(super) health: Arc<Health>,
    /// [`Health::losses`] when this connection (shared by its clones) was last known alive:
    /// when it was opened, or last checked by [`Connection::check_after_losses`].
    alive_at_losses: Arc<AtomicU64>,
}

#[derive(Clone)]
pub(super) enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether Redis is known to be down. A command that times out or loses its connection makes
/// Redis *suspect*; a second such failure with no success in between makes it *down*: every
/// command then fails at once until `window` has passed, and the next one tries again (and the
/// connection reconnects). A hung Redis then costs about two timeouts per window, not one per
/// command, while one slow answer on a busy machine (with successes around it) changes nothing.
pub(super) struct Health {
    started: Instant,
    /// Milliseconds since `started` before which commands fail fast; 0 when healthy.
    down_until_ms: AtomicU64,
    /// Failures (timeouts, lost connections) since the last success.
    failures: AtomicU64,
    /// Failures of that kind ever seen, on any of the host's connections.
    losses: AtomicU64,
    window: Duration,
}

/// Failures in a row, with no success between, that make Redis down.
const FAILURES_TO_FAIL_FAST: u64 = 2;

impl Health {
    pub(super) fn new(window: Duration) -> Self {
        Health {
            started: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            window,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn is_down(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Records the outcome of a command that was sent.
    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Err(e)
                if e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                self.losses.fetch_add(1, Ordering::Relaxed);
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_FAIL_FAST {
                    let until = self.now_ms() + self.window.as_millis() as u64;
                    self.down_until_ms.store(until, Ordering::Relaxed);
                }
            }
            // Any answer from Redis, even an error reply, means it is up.
            _ => self.failures.store(0, Ordering::Relaxed),
        }
    }
}

/// The error every command gets while Redis is known to be down.
fn failing_fast() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis did not answer a moment ago; failing fast until it does",
    ))
}

impl Connection {
    pub(super) fn new(inner: Inner, health: Arc<Health>) -> Self {
        let losses = health.losses.load(Ordering::Relaxed);
        Connection {
            inner,
            health,
            alive_at_losses: Arc::new(AtomicU64::new(losses)),
        }
    }

    /// Makes sure a single server's connection is alive before a command goes over it, when
    /// one of the host's connections has lost Redis since this one last got an answer.
    ///
    /// Without the redis crate's RESP3 push notifications, a connection learns that Redis
    /// closed its socket only by failing its next command; a connection that failed
    /// reconnecting keeps that error for its next command too. Either way one command fails
    /// after Redis is back, on each connection of the host (one per guest thread, and the
    /// host's own). So a `PING` goes first, which is safe to send twice: the first may find the
    /// dead socket or the stale error (and start the reconnection), the second goes over the
    /// new connection. A command itself is never sent twice: once on the wire, whether Redis
    /// ran it cannot be known. While Redis stays away, the second `PING` waits for one
    /// reconnection (bounded by the connection timeout) before the command fails.
    async fn check_after_losses(&mut self) -> redis::RedisResult<()> {
        let Inner::Single(connection) = &mut self.inner else {
            // The cluster client reconnects and retries by itself.
            return Ok(());
        };
        let losses = self.health.losses.load(Ordering::Relaxed);
        if self.alive_at_losses.load(Ordering::Relaxed) >= losses {
            return Ok(());
        }
        let ping = redis::cmd("PING");
        if ping.query_async::<Value>(connection).await.is_err() {
            ping.query_async::<Value>(connection).await?;
        }
        self.alive_at_losses.fetch_max(losses, Ordering::Relaxed);
        Ok(())
    }
}

impl Connection {
    /// Sends what `send` sends over this connection: at once a failure while Redis is known to
    /// be down, else after [`Connection::check_after_losses`], recording the outcome in
    /// [`Health`]. Both of [`ConnectionLike`]'s sending methods go through here.
    async fn send<T>(
        &mut self,
        send: impl AsyncFnOnce(&mut Inner) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        if self.health.is_down() {
            return Err(failing_fast());
        }
        let result = match self.check_after_losses().await {
            Ok(()) => send(&mut self.inner).await,
            Err(e) => Err(e),
        };
        self.health.observe(&result);
        result
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send(async |inner| match inner {
            Inner::Single(c) => c.req_packed_command(cmd).await,
            Inner::Cluster(c) => c.req_packed_command(cmd).await,
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.send(async move |inner| match inner {
            Inner::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
        }))
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}
