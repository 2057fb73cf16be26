//! Limits that more than one layer needs. They live here, at the bottom, so that the layer that
//! enforces a limit and the one that explains it in an answer share one number.

/// The largest HTTP/1 request head (request line plus headers) a client may send; beyond it the
/// framing guard answers 431. Real OpenAI requests carry well under 8 KiB of headers.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// hyper's own limit on the number of header lines in one request.
pub const MAX_HEADERS: usize = 100;

/// The request body bytes kept, as shared `Bytes` handles, until the upstream's response head
/// arrives, so that a request the upstream provably did not process can be sent again. A
/// larger body that was already sent is not retried. Pingora's retry buffer and linkerd's
/// `max_request_bytes` use the same bound.
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;
