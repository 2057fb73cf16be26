//! Client connections: the accept loop and its limits, the HTTP/1 framing guard in front of
//! hyper, and the panic guard around each request.

pub mod framing;
pub mod listener;
pub mod panics;
pub mod server;
