//! The service: route, check, rewrite, forward, and stream the answer back. A file per flow,
//! from the bottom up:
//! - [`context`]: what every flow shares, and admitting a client;
//! - [`upstream_call`]: the steps both flows take: the head sent up, the wait for the answer's
//!   head, the answer's head passed back, failures made answers;
//! - [`forward`]: a request forwarded and its answer passed back frame by frame;
//! - [`session`]: a WebSocket upgrade and the session it opens;
//! - [`answers`]: the proxy's own answers (health, readiness, metrics, refusals) and the admin
//!   listener's service;
//! - [`service`]: routing a request, and the branch to the flow for it.

mod answers;
mod context;
mod forward;
mod service;
mod session;
mod upstream_call;

pub(crate) use answers::{refused, Admin};
pub(crate) use service::Proxy;
