//! manifold: a repo-server for Argo CD.
//!
//! Codemap (dependency direction is top to bottom; nothing lower imports
//! anything higher):
//!
//! - [`server`]: composition root. Builds every component, binds the gRPC and
//!   HTTP listeners, runs until SIGTERM and drains.
//! - [`grpc`], [`http`]: the transports. Only [`grpc`] knows protobuf types.
//! - [`pipeline`]: the request pipeline (resolve, fetch, snapshot, render)
//!   in domain types.
//! - [`source`], [`render`], [`git`], [`cache`]: snapshots of commits, the
//!   renderers, the git object stores, keys and single-flight.
//! - [`exec`]: the process supervisor, the only place that spawns programs,
//!   and the reaper of orphaned descendants.
//! - [`metrics`]: every metric family, registered once.
//! - [`domain`]: plain value types shared by everything above.
//! - [`config`]: flags and environment, parsed and validated once.

pub mod cache;
pub mod charts;
pub mod cmp_server;
pub mod config;
pub mod disk;
pub mod domain;
pub mod exec;
pub mod git;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod render;
pub mod semver;
pub mod server;
pub mod source;
pub mod webhook;
