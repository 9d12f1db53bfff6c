//! A round-robin TCP load balancer for tests, for machines without nginx: each client connection
//! goes to the next upstream that accepts a connection, and bytes are copied both ways until
//! either side closes.
//!
//! It balances connections, not requests (a keep-alive connection stays on its host), and it
//! never retries a request: only a refused *connect* moves on to the next upstream, when nothing
//! has been sent yet, which is safe for any method. A host that dies mid-request closes the
//! client's connection, and the client decides whether to retry, exactly as behind nginx with
//! `proxy_next_upstream error timeout` and a POST.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a connect to one upstream may take before the next one is tried; a dead host on
/// 127.0.0.1 refuses at once, so this only bounds a host that hangs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running balancer; stops accepting when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 in front of `upstreams` (a fixed list: a restarted
    /// host must come back on its port).
    pub async fn start(upstreams: Vec<SocketAddr>) -> Proxy {
        assert!(!upstreams.is_empty(), "a balancer needs an upstream");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstreams = Arc::new(upstreams);
        // Shared by every connection's task; only its increments matter, not their order.
        let next = Arc::new(AtomicUsize::new(0));
        let accept_loop = tokio::spawn(async move {
            loop {
                // A failed accept (the client gave up already) concerns that client only.
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let first = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, Arc::clone(&upstreams), first));
            }
        });
        Proxy { addr, accept_loop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Connects `client` to the first upstream from index `first` on that accepts, and relays.
async fn relay(mut client: TcpStream, upstreams: Arc<Vec<SocketAddr>>, first: usize) {
    let _ = client.set_nodelay(true);
    for offset in 0..upstreams.len() {
        let upstream = upstreams[(first + offset) % upstreams.len()];
        let Ok(Ok(mut server)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
        else {
            continue;
        };
        let _ = server.set_nodelay(true);
        // Ends when either side closes or fails; dropping both then closes the other.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    // No upstream accepted: the client sees its connection closed, as from a dead host.
}
