//! Pure rules, unit-tested without sockets: which routes exist, how headers are rewritten,
//! which client keys are admitted, and what browsers may call.

pub mod client_keys;
pub mod cors;
pub mod headers;
pub mod routes;
