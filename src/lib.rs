//! Memoctopus: a small, fast OpenAI passthrough proxy on hyper.
//!
//! It keeps a server-held OpenAI key out of clients: each request to a known route is
//! forwarded with the server's key in `Authorization`, and the answer, JSON or Server-Sent
//! Events, is streamed back frame by frame. Bodies are never collected or parsed.
//!
//! # Layout
//! - [`cli`]: `--help`, `--version`, `--check-config`.
//! - [`config`]: the environment and `.env` to a validated [`Config`].
//! - [`routes`]: which method and path go where; pure.
//! - [`headers`]: hop-by-hop removal, the key swap, request ids; pure.
//! - [`client_keys`]: the optional inbound bearer check.
//! - [`cors`]: browser preflights and origin headers.
//! - [`upstream`]: the upstream: HTTP/2 or HTTP/1.1 over rustls, or plain HTTP/1.1 via [`pool`].
//! - [`pool`]: keep-alive HTTP/1.1 connections driven inside their exchange.
//! - [`body`]: the body types and the frame-forwarding wrappers (limits, timeouts, counting).
//! - [`exchange`]: one request and its answer, and the access log line it writes.
//! - [`framing`]: HTTP/1 request heads checked before hyper reads them; no smuggling.
//! - [`proxy`]: the service that ties these together.
//! - [`error`]: who is at fault, to an OpenAI-style JSON answer.
//! - [`metrics`]: the Prometheus series behind `/metrics`.
//! - [`panics`]: a panicking request gets a 500; panic messages are logged without secrets.
//! - [`drain`]: what graceful shutdown counts.
//! - [`server`]: the accept loop, connection limit and drain; [`run`] is the entry point.
//! - [`telemetry`]: log setup.
//! - [`trim`]: handing freed heap back to the OS when idle.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod body;
pub mod cli;
pub mod client_keys;
pub mod config;
pub mod cors;
pub mod drain;
pub mod error;
pub mod exchange;
pub mod framing;
pub mod headers;
pub mod metrics;
pub mod panics;
pub mod pool;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod trim;
pub mod upstream;

pub use config::Config;
pub use drain::DrainReport;
pub use server::{run, run_with_metrics_listener};
