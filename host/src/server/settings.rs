//! Everything `serve` takes besides the socket ([`Settings`]), its defaults, and the bounds of
//! one call of a function (the host's, narrowed by what the function set at deploy).

use std::time::Duration;

use crate::connections::ConnectionLimits;
use crate::engine::{DEFAULT_MAX_INSTANCES, RequestLimits};
use crate::kv::KvBudget;
use crate::registry::{CompileSettings, FunctionEntry};

/// Default largest request body a function receives (413 beyond).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default for [`Settings::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest component an operator may upload (413 beyond).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Default wall-clock limit of one invocation (504 beyond).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default CPU budget of one invocation (500 beyond): well under the deadline, so a busy loop is
/// stopped for what it is rather than by the clock.
pub const DEFAULT_CPU_BUDGET: Duration = Duration::from_secs(5);
/// Default linear memory limit of one instance.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 << 20;

/// Everything `serve` needs besides the socket. Its `Debug` never shows the admin token.
#[derive(Clone)]
pub struct Settings {
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub max_component_bytes: usize,
    /// Instances this host may hold at once (pooled slots).
    pub max_instances: u32,
    /// Concurrent calls of one function on this host; more wait (then 503).
    pub max_concurrency_per_function: usize,
    /// Threads guests run on, each with a runtime and a Redis connection of its own.
    pub guest_threads: usize,
    /// Run guest threads at the lowest scheduling priority.
    pub low_priority_guests: bool,
    /// Serve the public listener's connections on the guest threads (see [`crate::guests`]);
    /// when false they are served on the threads of the runtime `run` is called on.
    pub http_on_guest_threads: bool,
    /// Longest a request body may take to arrive (408 beyond): a slow client cannot hold a
    /// connection, a buffer and an in-flight place for long.
    pub body_timeout: Duration,
    /// Invocations in flight at once, counted before the body is read; past it the host
    /// answers 503 at once (load shedding) instead of buffering more bodies.
    pub max_in_flight: usize,
    /// Host-wide per-request bounds; `max_memory_bytes` is also the most a function may ask
    /// for at deploy (`?memory_mib=`).
    pub limits: RequestLimits,
    /// What one request may do through kv (operations, bytes).
    pub kv_budget: KvBudget,
    /// How compiles run: how many at once, how long each may take, where machine code is cached.
    pub compile: CompileSettings,
    /// How each listener treats connections: header deadline, how many may be open.
    pub connections: ConnectionLimits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_component_bytes", &self.max_component_bytes)
            .field("max_instances", &self.max_instances)
            .field(
                "max_concurrency_per_function",
                &self.max_concurrency_per_function,
            )
            .field("guest_threads", &self.guest_threads)
            .field("low_priority_guests", &self.low_priority_guests)
            .field("http_on_guest_threads", &self.http_on_guest_threads)
            .field("limits", &self.limits)
            .field("kv_budget", &self.kv_budget)
            .field("compile", &self.compile)
            .field("connections", &self.connections)
            .finish()
    }
}

impl Settings {
    /// The kv budget of one call of `entry`: the host's, or the function's own when it set a
    /// smaller one at deploy.
    pub fn kv_budget_for(&self, entry: &FunctionEntry) -> KvBudget {
        KvBudget {
            max_ops: entry.kv_ops.map_or(self.kv_budget.max_ops, |own| {
                own.min(self.kv_budget.max_ops)
            }),
            max_bytes: entry.kv_bytes.map_or(self.kv_budget.max_bytes, |own| {
                own.min(self.kv_budget.max_bytes)
            }),
        }
    }

    /// The bounds for one call of `entry`: the host's, with the function's own memory limit
    /// when it set one at deploy (never above the host's).
    pub fn limits_for(&self, entry: &FunctionEntry) -> RequestLimits {
        let mut limits = self.limits.clone();
        if let Some(mib) = entry.memory_mib {
            limits.max_memory_bytes = limits.max_memory_bytes.min((mib as usize) << 20);
        }
        if let Some(ms) = entry.cpu_ms {
            let own = Duration::from_millis(ms.into());
            limits.cpu_budget = Some(limits.cpu_budget.map_or(own, |host| host.min(own)));
        }
        limits
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            admin_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_in_flight: DEFAULT_MAX_INSTANCES as usize * 2,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_concurrency_per_function: DEFAULT_MAX_INSTANCES as usize / 2,
            guest_threads: default_guest_threads(),
            low_priority_guests: false,
            http_on_guest_threads: true,
            limits: RequestLimits {
                max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
                timeout: DEFAULT_TIMEOUT,
                cpu_budget: Some(DEFAULT_CPU_BUDGET),
            },
            kv_budget: KvBudget::default(),
            compile: CompileSettings::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// One guest worker per core: guests are CPU work, more threads than cores only adds switching.
pub fn default_guest_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
