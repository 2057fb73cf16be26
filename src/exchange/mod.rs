//! One exchange: its record (id, counters, the access log line) and the bodies that carry its
//! frames, with their limits and timeouts.

pub mod body;
pub mod record;
pub mod session;
