//! Memoctopus: a small, fast OpenAI passthrough proxy on hyper.
//!
//! It keeps a server-held OpenAI key out of clients: each request to a known route is
//! forwarded with the server's key in `Authorization`, and the answer, JSON or Server-Sent
//! Events, is streamed back frame by frame. Bodies are never collected or parsed.
//!
//! # Layout
//! From the bottom layer up; each layer uses only the ones listed before it.
//! - [`bounds`], [`outcome`], [`drain`], [`trim`]: the protocol bounds more than one layer needs (head
//!   sizes, HTTP/2 settings and request bounds, the admin listener's cap, the upstream pools'
//!   idle time), the words for how things end and whose fault a failure is, what graceful
//!   shutdown counts, and handing freed heap back to the OS.
//! - [`usage`]: the usage meter, which reads an answer's `usage` object as its bytes pass, and
//!   the estimate for an answer without one.
//! - [`policy`]: pure rules: routes and the upstream query, header rewriting, the key swap and
//!   the `Via` loop guard, client keys with their names and limits, the per-client limits and
//!   token budgets, WebSocket upgrades, CORS.
//! - [`config`]: the environment, `.env` and key files to a validated [`Config`], a file per
//!   group of settings, all parsed from one table that declares each setting once (its name,
//!   default and meaning), which `--help`, the unknown-variable warnings and the documentation
//!   test also read.
//! - [`error`]: who is at fault, to an OpenAI-style JSON answer and the exchange's outcome.
//! - [`metrics`]: the Prometheus series behind `/metrics`.
//! - [`telemetry`]: log setup.
//! - [`keys`]: the keys in force, and the watcher that reloads their files while serving.
//! - [`store`]: where the client limits are kept: in the process, or in a Redis that every
//!   replica shares, with the fallback while it does not answer.
//! - [`upstream`]: connecting (TCP, forward-proxy tunnel, TLS and ALPN), the HTTP/1.1 and
//!   HTTP/2 pools, the retry rule, and WebSocket upgrades on connections of their own.
//! - [`exchange`]: one request and its answer: the record and access log line, the bodies
//!   that forward frames with their limits and timeouts, and a WebSocket session's byte pipe.
//! - [`proxy`]: the service that ties these together, and the admin listener's answers.
//! - [`inbound`]: client connections: one accept loop for the proxy's port and the admin
//!   listener, with its connection limit and drain, the graceful close of open connections,
//!   an HTTP/2 connection's idle and request bounds, the HTTP/1 framing guard, panics; [`run`]
//!   is the entry point.
//! - [`cli`]: `--help`, `--version`, `--check-config`.
//!
//! # Public surface
//! What the binary, the integration tests and the fuzz target need: [`Config`] with its
//! listening fields and the table of settings, [`run`] and [`run_with_admin_listener`],
//! binding a listener, the panic hook, log setup and the command line, the pure rules the
//! property tests drive (routes, header rewriting, the HTTP/1 framing guard), and the usage
//! meter its benchmark times. Everything else is `pub(crate)`.
#![deny(unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bounds;
pub mod cli;
pub mod config;
pub(crate) mod drain;
pub(crate) mod error;
pub(crate) mod exchange;
pub mod inbound;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod outcome;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod store;
pub mod telemetry;
pub(crate) mod trim;
pub(crate) mod upstream;
pub mod usage;

pub use config::Config;
pub use drain::DrainReport;
pub use inbound::server::{run, run_with_admin_listener};
