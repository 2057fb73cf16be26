//! Memoctopus: a small, fast OpenAI passthrough proxy on hyper.
//!
//! It keeps a server-held OpenAI key out of clients: each request to a known route is
//! forwarded with the server's key in `Authorization`, and the answer, JSON or Server-Sent
//! Events, is streamed back frame by frame. Bodies are never collected or parsed.
//!
//! # Layout
//! From the bottom layer up; each layer uses only the ones listed before it, and no two files
//! import each other.
//! - [`bounds`], [`outcome`], [`drain`], [`trim`], [`tls`]: the protocol bounds more than one
//!   layer needs (head sizes, HTTP/2 settings and request bounds, the retry buffer, the admin
//!   listener's cap, the upstream pools' idle time), the words for how things end (outcomes,
//!   retry reasons, failure kinds, and for traces where an upstream is and each resend), what
//!   graceful shutdown counts, handing freed heap back to the OS, and the TLS client
//!   configuration every outbound connection starts from.
//! - [`usage`]: the usage meter, which reads an answer's `usage` object as its bytes pass, and
//!   the estimate for an answer without one.
//! - [`policy`]: pure rules: routes and the upstream query, header rewriting, the key swap and
//!   the `Via` loop guard, client keys with their names and limits, the rules of the per-client
//!   limits and token budgets, WebSocket upgrades, CORS.
//! - [`config`]: the environment, `.env` and key files to a validated [`Config`], a file per
//!   group of settings, all parsed from one table that declares each setting once (its name,
//!   default and meaning), which `--help`, `--check-config`, the unknown-variable warnings and
//!   the documentation test also read.
//! - [`error`]: every error the proxy answers itself, one row each: whose fault, its status,
//!   `code`, outcome and message, in OpenAI's shape.
//! - [`metrics`]: the Prometheus series behind `/metrics`.
//! - [`telemetry`]: log setup.
//! - [`traces`]: OpenTelemetry traces: an exchange's `SERVER` span and its upstream call's GenAI
//!   `CLIENT` span, the bounded queue that drops and counts rather than wait and wakes its
//!   exporter only for a full batch, and the OTLP export on a hyper client.
//! - [`keys`]: the client keys in force.
//! - [`store`]: where the client limits are counted: in the process (`store::local`), or in a
//!   Redis that every replica shares (`store::shared`), with the fallback while it does not
//!   answer.
//! - [`upstream`]: connecting (TCP, forward-proxy tunnel, TLS and ALPN), the HTTP/1.1 and
//!   HTTP/2 pools, the retry rule with its one failure shape, and WebSocket upgrades on
//!   connections of their own.
//! - [`upstreams`]: the set of upstreams in force (one, or those of `PROXY_UPSTREAMS_FILE`):
//!   which one a request tries next by priority and weight, how long one rests, the retry
//!   budget that bounds failovers, and the failover rule itself.
//! - [`watch`]: the watcher that re-reads the key files and the upstreams file while serving,
//!   and applies a change to the keys or the upstreams in force.
//! - [`exchange`]: one request and its answer: the record (ended, counted, charged and logged
//!   once, where the answer ends), the bodies that forward frames with their limits and
//!   timeouts, and a WebSocket session's byte pipe.
//! - [`proxy`]: the service: the state every flow shares, the steps of an upstream call,
//!   forwarding, WebSocket sessions, the proxy's own answers, and routing to the flow.
//! - [`inbound`]: client connections: the HTTP/1 framing guard, an HTTP/2 connection's streams
//!   and bounds, the graceful close, panics, one connection served, a listener's accept loop
//!   under its cap, and [`run`], the entry point, with its drain.
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
pub(crate) mod tls;
pub(crate) mod traces;
pub(crate) mod trim;
pub(crate) mod upstream;
pub(crate) mod upstreams;
pub mod usage;
pub(crate) mod watch;

pub use config::Config;
pub use drain::DrainReport;
pub use inbound::server::{run, run_with_admin_listener};
