//! Pure rules, unit-tested without sockets: which routes exist and what every upstream URL
//! carries, how headers are rewritten, which client keys are admitted and what each client may
//! still send, and what browsers may call.

pub(crate) mod client_keys;
pub(crate) mod client_limits;
pub(crate) mod cors;
pub mod headers;
pub mod routes;
pub(crate) mod websocket;
