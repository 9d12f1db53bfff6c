//! Goldfish: a serverless function host where every request runs on a fresh WebAssembly
//! instance and the only state a function can touch is a key-value store in Redis.
//!
//! # Layout
//! - [`server`]: the router, shared state, limits, `run` with graceful shutdown, `/healthz`, `/readyz`.
//! - [`admin`]: `PUT/GET/DELETE /v1/functions/{name}`, `GET /v1/functions`, bearer-token auth.
//! - [`invoke`]: `/fn/{name}/...`: HTTP ⇄ the WIT request/response, validation of guest answers.
//! - [`engine`]: wasmtime engine and linker (what a guest may import), deploy-time validation,
//!   one fresh `Store` + instance per call with memory and time bounds.
//! - [`registry`]: deployed names → digests (shared through the backend), compiled-component cache.
//! - [`kv`]: the guest-facing `kv` interface: key checks and the per-app namespace.
//! - [`backend`]: storage, with [`backend::redis`] (shared) and [`backend::memory`] (dev, single node).
//! - [`metrics`]: Prometheus metrics (`GET /metrics`): instances, requests, kv, deploys, process.
//! - [`stress`]: `goldfish stress`: load generator that checks one-instance-per-request through
//!   `/metrics` and the recycle probe; text, JSON and SVG reports.
//! - [`guest_log`]: bounded capture of guest stdout/stderr into the host log.
//! - [`error`]: [`error::HostError`], the only place that picks HTTP status codes.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod engine;
pub mod error;
pub mod guest_log;
pub mod invoke;
pub mod kv;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod stress;
