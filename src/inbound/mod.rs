//! Client connections: the accept loop and its limits, the HTTP/1 framing guard in front of
//! hyper, the panic guard around each request, and the graceful close of them all.

pub(crate) mod closing;
pub mod framing;
pub mod listener;
pub mod panics;
pub mod server;
pub(crate) mod streams;
