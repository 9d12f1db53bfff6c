//! [`AppState`]: what every handler shares (backend, engine, registry, settings, metrics,
//! semaphores, guest threads, fleet), built once at start-up.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::Settings;
use crate::auth_failures::AuthFailures;
use crate::backend::Backend;
use crate::engine::Runtime;
use crate::fleet;
use crate::guests::Guests;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Shared by every handler: one `Arc`, so the clone axum makes for each request is one atomic
/// increment rather than a dozen (and no allocation).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub backend: Backend,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// One permit per pooled instance slot: a request holds one while its instance exists, so
    /// the pool is never asked for more slots than it has.
    pub instance_slots: Arc<Semaphore>,
    /// Failed admin logins per client address.
    pub auth_failures: Arc<AuthFailures>,
    /// One permit per invocation in flight ([`Settings::max_in_flight`]).
    pub in_flight: Arc<Semaphore>,
    /// The threads guests run on (each with its own connection to the store), and each
    /// function's concurrency cap.
    pub guests: Arc<Guests>,
    /// This host's identity and recent figures, for its heartbeat and the status page.
    pub fleet: Arc<fleet::Fleet>,
}

impl AppState {
    /// Builds the engine and registry over `backend`, and the guest threads, each with a
    /// connection of its own to the same store.
    pub async fn new(backend: Backend, settings: Settings) -> anyhow::Result<Self> {
        let runtime = Runtime::new(settings.limits.max_memory_bytes, settings.max_instances)?;
        let registry = Registry::new(backend.clone(), runtime.clone(), settings.compile.clone())?;
        let guests = Arc::new(
            Guests::new(
                settings.guest_threads,
                settings.max_concurrency_per_function,
                settings.max_instances as usize,
                settings.low_priority_guests,
                &backend,
            )
            .await?,
        );
        Ok(AppState(Arc::new(Shared {
            backend,
            runtime,
            registry,
            instance_slots: Arc::new(Semaphore::new(settings.max_instances as usize)),
            auth_failures: Arc::default(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            guests,
            settings: Arc::new(settings),
            metrics: Metrics::new()?,
            fleet: Arc::new(fleet::Fleet::new()),
        })))
    }
}
