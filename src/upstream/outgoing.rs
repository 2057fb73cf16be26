//! What the pools send: a request body bounded as hyper's clients need it, and boxed as the
//! retry rule keeps it.

use bytes::Bytes;

use super::retry::Replayable;
use crate::outcome::BoxError;

/// A request body as the pools send it. Boxed: hyper's HTTP/1.1 client queues requests in a
/// channel per connection whose first block holds 32 of them inline (tokio's `BLOCK_CAP`), so
/// an inline body would be held 32 times over by every upstream connection; the box costs
/// each request one small allocation.
pub(super) type Outgoing<B> = Box<Replayable<B>>;

/// A request body the pools can send: hyper's bounds, named once.
pub(crate) trait SendBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> SendBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}
