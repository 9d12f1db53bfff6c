//! Goldfish: a serverless function host where every request runs on a fresh WebAssembly
//! instance and the only state a function can touch is a key-value store in Redis.
//!
//! # Layout
//! - [`server`]: the router, shared state, limits, `run` with graceful shutdown, `/healthz`, `/readyz`
//!   (a file each: `router`, `state`, `settings`, `body` for bounded body reads).
//! - [`connections`]: each listener's accept loop: header-read deadline, cap on open
//!   connections, the client's address for handlers, draining on shutdown; each public
//!   connection handed to a guest thread.
//! - [`admin`]: `PUT/GET/DELETE /v1/functions/{name}`, `GET /v1/functions` and recent
//!   failures; versions and rollback; bearer-token auth (a file each); [`auth_failures`]: failed
//!   logins limited per client address.
//! - [`openapi`]: `GET /v1/openapi.json`, generated from the handlers' annotations.
//! - [`invoke`]: `/fn/{name}/...`: HTTP ⇄ the WIT request/response, validation of guest answers.
//! - [`cookies`]: cookies scoped per app (renamed on the way out, filtered on the way in).
//! - [`engine`]: wasmtime engine and linker (what a guest may import and what each import grants),
//!   deploy-time validation, one fresh `Store` + instance per call with memory and time bounds,
//!   trap classification (a file each: `config`, `validation`, `call`, `trap`); `engine::epoch`
//!   ticks the epoch and tells a guest's CPU from its waits;
//!   `engine::inlining` bounds component nesting and inlined instances before a compile.
//! - [`worlds`]: one file per guest ABI (`goldfish:function`, `wasi:http/proxy`): HTTP in, HTTP out.
//! - [`bindings`]: every `bindgen!` (goldfish world, wasi:keyvalue drafts, Spin key-value).
//! - [`registry`]: deployed names → digests (shared through the backend), bounded compiles,
//!   compiled components in memory; [`compile_cache`]: their machine code on local disk.
//! - [`kv`]: key checks and the per-app namespace in one place (`namespace`), the request's
//!   session with its budget and batch calls (a file each), then one thin adapter per dialect
//!   (`goldfish:function/kv`, `wasi:keyvalue` draft and draft2, `fermyon:spin/key-value`).
//! - [`backend`]: storage, with [`backend::redis`] (shared; its connection, Lua scripts, kv keys
//!   and index, and registry keys in a file each) and [`backend::memory`] (dev, single node;
//!   its kv and registry parts in a file each, as for Redis).
//! - [`metrics`]: Prometheus metrics (`GET /metrics`): instances, requests, kv, deploys, process.
//! - [`fleet`]: each host's heartbeat in the store (who, where, what it served), every host's
//!   list of the others, and this host's per-function figures read from its metrics.
//! - [`status`]: `GET /`, the status page (gathered, then rendered as HTML): hosts, functions
//!   with their figures, Redis status.
//! - [`stress`]: `goldfish stress`: load generator that checks one-instance-per-request through
//!   `/metrics` and the recycle probe; flags, checked plan, load, sampling, text, JSON and SVG
//!   reports in a file each.
//! - [`guests`]: the guest threads, which also serve the public connections (a request's guest
//!   runs where its connection is, unless that thread is busy with CPU-bound guests), and
//!   per-function concurrency caps.
//! - [`cli`]: `goldfish deploy`, `ls`, `show`, `invoke`, `rm`, `versions`, `rollback`, `errors`:
//!   client commands over the admin and invoke APIs, tables for people, `--json` for scripts.
//! - [`guest_log`]: bounded capture of guest stdout/stderr into the host log.
//! - [`error`]: [`error::HostError`], the only place that picks HTTP status codes, and what an
//!   invoke caller may be told of a failure ([`error::FailureClass`]).
//! - [`failures`]: each function's recent failures with their whole detail, kept in the store
//!   for `GET /v1/functions/{name}/errors` and `goldfish errors`.
// One `unsafe` block in the whole host, with its proof: loading machine code this host cached
// (`compile_cache`). Everything else stays safe code.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth_failures;
pub mod backend;
pub mod bindings;
pub mod cli;
pub mod compile_cache;
pub mod connections;
pub mod cookies;
pub mod engine;
pub mod error;
pub mod failures;
pub mod fleet;
pub mod guest_log;
pub mod guests;
pub mod invoke;
pub mod kv;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod server;
pub mod status;
pub mod stress;
pub mod worlds;
