//! `GET /`: the status page. One server-rendered HTML page with no script and no external asset:
//! this host and every host it sees through the store (from their heartbeats, see
//! [`crate::fleet`]), the deployed functions with this host's and all hosts' figures, and
//! whether the store answers. Every value printed is escaped. With Redis down the page still
//! answers 200, says so, and shows what this host knows by itself.
//!
//! Unauthenticated, like `/metrics`: it names functions and host addresses, so keep it internal
//! (`deploy/nginx.conf` serves only `/fn/` to the outside).
//!
//! Split by responsibility: this file gathers what the page shows ([`View`]); `render.rs` writes
//! the page and `tables.rs` its hosts and functions tables; `format.rs` escapes text and writes
//! figures for people; `style.rs` holds the logo and the stylesheet.

mod format;
mod render;
mod style;
mod tables;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};

use crate::fleet::{self, FunctionFigures, Heartbeat};
use crate::registry::FunctionEntry;
use crate::server::AppState;

pub use format::escape;
pub use render::render;

/// Everything the page shows, gathered before any HTML is written.
pub struct View {
    pub now_ms: u64,
    /// This host as of now (fresher than its last heartbeat in the store).
    pub this: Heartbeat,
    /// What the store is, for people (`redis at redis://...`, or the memory store).
    pub store: String,
    /// The store's answer to a ping: its round trip, or why it failed.
    pub store_ping: Result<Duration, String>,
    /// Every host's heartbeat, or why they could not be read.
    pub hosts: Result<Vec<Heartbeat>, String>,
    /// Every deployed function, or why they could not be read.
    pub functions: Result<Vec<FunctionEntry>, String>,
    /// This host's figures per function, since it started.
    pub figures: BTreeMap<String, FunctionFigures>,
}

/// `GET /`.
pub async fn page(State(state): State<AppState>) -> impl IntoResponse {
    let view = gather(&state).await;
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Nothing on the page loads or runs anything; say so to the browser too.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        Html(render(&view)),
    )
}

async fn gather(state: &AppState) -> View {
    let figures = fleet::figures(&state.metrics);
    let this = state
        .fleet
        .heartbeat(&figures, state.metrics.instances_live.get());
    let started = Instant::now();
    let store_ping = state
        .backend
        .ping()
        .await
        .map(|()| started.elapsed())
        .map_err(|e| e.to_string());
    // With the store down every read would fail the same way, each after a timeout: skip them.
    let (hosts, functions) = match &store_ping {
        Ok(_) => (
            fleet::hosts(&state.backend)
                .await
                .map_err(|e| e.to_string()),
            state.registry.list().await.map_err(|e| e.to_string()),
        ),
        Err(e) => (Err(e.clone()), Err(e.clone())),
    };
    View {
        now_ms: fleet::unix_ms(),
        this,
        store: state.backend.describe(),
        store_ping,
        hosts,
        functions,
        figures,
    }
}
