//! The HTTP server: state shared by handlers, the router, health endpoints, and `run` with
//! graceful shutdown.
//!
//! Split by responsibility: `settings` (every limit and default `serve` takes), `state`
//! ([`AppState`], what every handler shares), `router` (routes, layers, health, metrics and the
//! JSON 404/405), `body` (reading a request body with a size and time bound); this file holds
//! [`run`].

mod body;
mod router;
mod settings;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::{connections, fleet};

pub use body::{declared_length, drain, read_body};
pub use router::{admin_app, app, public_app};
pub use settings::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_CPU_BUDGET, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_COMPONENT_BYTES,
    DEFAULT_MAX_MEMORY_BYTES, DEFAULT_TIMEOUT, Settings, default_guest_threads,
};
pub use state::{AppState, Shared};

/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` (and the admin API on `admin_listener` when given, then not on
/// `listener`) until `shutdown` resolves, then drains in-flight requests for up to
/// [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Load the registry before the first request, so that request and the refresher see the
    // same snapshot (a miss remembered in a placeholder snapshot would be lost a moment later).
    match state.registry.refresh().await {
        // Functions deployed before this host started are compiled (or loaded from the disk
        // cache) in the background right away.
        Ok(_) => state.registry.precompile(),
        Err(e) => tracing::warn!("could not load the function registry yet (will retry): {e}"),
    }
    // Aborted once serving ends; until then it keeps this host's view of the registry fresh.
    let refresher = tokio::spawn(state.registry.clone().keep_fresh());
    // Writes this host into the store every few seconds until serving ends.
    let heartbeat = fleet::HeartbeatTask::start(
        state.fleet.clone(),
        state.backend.clone(),
        state.metrics.clone(),
        listener.local_addr()?,
    );
    let (stop_tx, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = {
        let stopped = stopped.clone();
        move || {
            let mut stopped = stopped.clone();
            async move {
                stopped.wait_for(|s| *s).await.ok();
            }
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        stop_tx.send(true).ok();
    });
    let limits = state.settings.connections.clone();
    let homes = state
        .settings
        .http_on_guest_threads
        .then(|| state.guests.clone());
    let serve = |listener: TcpListener, router: Router, homes| {
        connections::serve(listener, router, limits.clone(), homes, stop_signal())
    };
    let server = async {
        match admin_listener {
            Some(admin_listener) => {
                tokio::join!(
                    serve(listener, public_app(state.clone()), homes),
                    serve(admin_listener, admin_app(state), None)
                );
            }
            None => serve(listener, app(state), homes).await,
        }
    };
    let mut stopped = stopped;
    tokio::select! {
        () = server => {}
        _ = async {
            stopped.wait_for(|s| *s).await.ok();
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    };
    refresher.abort();
    heartbeat.stop().await;
    Ok(())
}
