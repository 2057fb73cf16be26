//! Pure rules, unit-tested without sockets: which routes exist and what every upstream URL
//! carries, how headers are rewritten, which client keys are admitted and what each client may
//! still send, and what browsers may call.

pub mod client_keys;
pub mod client_limits;
pub mod cors;
pub mod headers;
pub mod routes;
pub mod websocket;
