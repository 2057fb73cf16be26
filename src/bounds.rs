//! Protocol bounds that more than one layer needs: head sizes, HTTP/2 settings, the retry
//! buffer, idle times. (A client's own limits are [`crate::policy::client_limits`].) They live
//! here, at the bottom, so that the layer that enforces a bound and the one that explains it in
//! an answer share one number.

/// The largest HTTP/1 request head (request line plus headers) a client may send; beyond it the
/// framing guard answers 431. Real OpenAI requests carry well under 8 KiB of headers.
pub(crate) const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// hyper's own limit on the number of header lines in one request.
pub(crate) const MAX_HEADERS: usize = 100;

/// The request body bytes kept, as shared `Bytes` handles, until the upstream's response head
/// arrives, so that a request the upstream provably did not process can be sent again. A
/// larger body that was already sent is not retried. Pingora's retry buffer and linkerd's
/// `max_request_bytes` use the same bound.
pub(crate) const RETRY_BUFFER_BYTES: usize = 64 * 1024;

/// How long an idle upstream connection, HTTP/1.1 or HTTP/2, is kept for reuse.
pub(crate) const UPSTREAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// HTTP/2 streams one client connection may have open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// The largest HTTP/2 header list a client may send.
pub(crate) const H2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Streams a client may open and reset before we read them (the "rapid reset" attack).
pub(crate) const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams we may reset for a client's protocol errors before the connection is closed.
pub(crate) const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// Requests one HTTP/2 client connection may carry before it is closed gracefully.
pub(crate) const H2_MAX_REQUESTS: u64 = 1000;

/// Connections the admin listener (`PROXY_METRICS_ADDR`) holds at once: probes and a scraper
/// need a few.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
