//! Accepting connections: each listener's serve loop, with a deadline for request headers, a cap
//! on open connections, the client's address for handlers, and graceful shutdown.
//!
//! Served with hyper's HTTP/1 connection directly rather than `axum::serve`, which sets no timer
//! and so no header-read deadline: a client sending its headers a byte at a time (slowloris)
//! held its connection, and a task, for ever. Not hyper-util's `auto` builder either: it first
//! reads the protocol preface with no deadline at all, so a silent connection would still be held;
//! HTTP/2 was never offered (`axum::serve` here built HTTP/1 only), so nothing is lost.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::guests::Guests;

/// Default for [`ConnectionLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConnectionLimits::max_connections`]: well above what two cores serve at once,
/// and below the open-file limit production units set (`LimitNOFILE=65536`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long the accept loop waits after an accept error that is not the client's doing (the
/// process is out of file descriptors, say) before accepting again; as `axum::serve` did.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// At most one "connection limit reached" warning per this long, however often it is reached.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How one listener treats its clients' connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request line and headers, counted from when the host
    /// starts waiting for them: when the connection opens, and on a kept-alive connection when
    /// the previous response has gone out (so it is also how long an idle connection is kept).
    /// Past it the connection is closed without an answer.
    pub header_timeout: Duration,
    /// Connections open at once on each listener (public and admin apart). Past it the host
    /// accepts nothing until one closes: new connections wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then accepts nothing more, lets each
/// connection finish the request it is serving (idle ones close at once), and returns when all
/// have closed. The caller bounds that wait. With `homes`, each connection is served on one of
/// those guest threads ([`Guests::connection_home`]), where its requests' guests then run too;
/// without, on the runtime this runs on.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    homes: Option<Arc<Guests>>,
    shutdown: impl Future<Output = ()>,
) {
    // One permit per open connection, released when its task ends.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // The header deadline needs a timer; without one hyper silently has no deadline.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // When this listener last said it was full (at most once per FULL_WARNING_EVERY).
    let mut warned_full: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0
            && warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY)
        {
            warned_full = Some(Instant::now());
            tracing::warn!(
                "{} connections open (--max-connections): new connections wait until one \
                 closes; clients that send no complete headers are closed after \
                 --header-timeout-ms",
                limits.max_connections
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // Nothing closes the semaphore; were it closed, stop rather than spin.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after_accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Handlers see the client's address (failed admin logins are limited per address).
        let service = router
            .clone()
            .map_request(move |mut request: http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(client));
                request
            });
        let watcher = connections.watcher();
        let http = http.clone();
        let Some(guests) = &homes else {
            tokio::spawn(serve_one(http, stream, service, watcher, client, slot));
            continue;
        };
        // Moved to its guest thread's reactor, so its I/O wakes that thread alone.
        let (home, counted) = guests.connection_home();
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%client, "connection dropped: {e}");
                continue;
            }
        };
        home.spawn(async move {
            let _counted = counted;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve_one(http, stream, service, watcher, client, slot).await,
                Err(e) => tracing::debug!(%client, "connection dropped: {e}"),
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one connection until it closes; `slot` is its place among the listener's open
/// connections.
async fn serve_one<S>(
    http: http1::Builder,
    stream: TcpStream,
    service: S,
    watcher: Watcher,
    client: SocketAddr,
    slot: OwnedSemaphorePermit,
) where
    S: tower::Service<http::Request<Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let connection = watcher
        .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
    if let Err(e) = connection.await {
        // A client that went away or sent its headers too slowly: its business.
        tracing::debug!(%client, "connection ended: {e}");
    }
    drop(slot);
}

/// Errors the client caused (it hung up before we accepted) need no pause; anything else, such
/// as running out of file descriptors, is logged and waited out.
async fn pause_after_accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(
        "cannot accept connections: {e}; retrying in {ACCEPT_ERROR_PAUSE:?} (raise the open-file \
         limit or lower --max-connections)"
    );
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
