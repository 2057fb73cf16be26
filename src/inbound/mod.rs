//! Client connections, from the bottom up: the HTTP/1 framing guard in front of hyper
//! ([`framing`]), an HTTP/2 connection's streams and bounds (`streams`), the graceful close of
//! open connections (`closing`), the panic guard around each request ([`panics`]), one
//! connection served (`connection`), a listener's accept loop under its connection cap
//! (`accept`), and the entry point with its drain ([`server`]).

pub(crate) mod accept;
pub(crate) mod closing;
pub(crate) mod connection;
pub mod framing;
pub mod listener;
pub mod panics;
pub mod server;
pub(crate) mod streams;
