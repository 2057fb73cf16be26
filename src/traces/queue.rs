//! The bounded queue between the exchanges and the export task. An exchange adds its spans
//! under a short lock and goes on; only when a batch is full is the task woken, so that the
//! request path pays no wake-up and no cross-thread hand-off per span, and the task no poll
//! per span. Otherwise the task comes on its schedule, as the SDK's batch processor does.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// At most `max` items wait; the taker is woken each time `batch` of them do.
pub(super) struct Queue<T> {
    waiting: Mutex<Vec<T>>,
    full: Notify,
    max: usize,
    batch: usize,
}

impl<T> Queue<T> {
    pub(super) fn new(max: usize, batch: usize) -> Queue<T> {
        Queue {
            waiting: Mutex::new(Vec::new()),
            full: Notify::new(),
            max,
            batch: batch.min(max),
        }
    }

    /// Adds `item`, or gives it back when `max` items wait already.
    pub(super) fn push(&self, item: T) -> Result<(), T> {
        let mut waiting = self.lock();
        if waiting.len() >= self.max {
            return Err(item);
        }
        waiting.push(item);
        let full = waiting.len() == self.batch;
        drop(waiting);
        if full {
            // Kept if the taker is busy, so that it comes back at once.
            self.full.notify_one();
        }
        Ok(())
    }

    /// A batch is full (or was, since the last wait).
    pub(super) async fn batch_full(&self) {
        self.full.notified().await;
    }

    /// Swaps what waits for `spare`, an empty vector kept from the last batch, so that the
    /// queue grows into room it already has.
    pub(super) fn take(&self, spare: &mut Vec<T>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut *self.lock(), spare);
    }

    /// Nothing under the lock can panic, so a poisoned lock still holds a whole vector.
    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_gives_the_item_back_and_a_take_empties_it() {
        let queue = Queue::new(3, 2);
        assert!(queue.push(1).is_ok());
        assert!(queue.push(2).is_ok());
        assert!(queue.push(3).is_ok());
        assert_eq!(queue.push(4), Err(4));
        let mut spare = Vec::new();
        queue.take(&mut spare);
        assert_eq!(spare, [1, 2, 3]);
        assert!(queue.push(5).is_ok());
    }

    #[tokio::test]
    async fn the_taker_is_woken_when_a_batch_is_full_and_not_before() {
        let queue = Queue::new(8, 2);
        queue.push(1).unwrap();
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), queue.batch_full());
        assert!(early.await.is_err(), "woken by one item of a batch of two");
        queue.push(2).unwrap();
        // The wake-up is kept for a taker that was not waiting.
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), queue.batch_full());
        assert!(woken.await.is_ok());
    }
}
