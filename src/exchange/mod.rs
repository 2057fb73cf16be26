//! One exchange: its record (id, counters, the access log line) and the bodies that carry its
//! frames, with their limits and timeouts.

pub(crate) mod body;
pub(crate) mod record;
pub(crate) mod session;
