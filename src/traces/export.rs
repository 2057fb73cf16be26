//! Spans off the request path: an exchange's spans, once it ends, go into a bounded queue, or,
//! when the queue is full, are dropped and counted; one task takes them out in batches, writes
//! their OTLP body and sends it. The request path never waits for the collector, however slow
//! or gone it is, and the drops are counted in `memoctopus_trace_spans_dropped_total` (the
//! SDK's batch processor counts its own only in its logs).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use super::collector::Collector;
use super::otlp::{export_request, Preamble};
use super::spans::{Finished, Sink};

/// How the export task batches: at most `max_queue` exchanges wait, `max_batch` go at once,
/// and what waits goes every `delay` even when no batch is full.
pub(super) struct Batching {
    pub(super) max_queue: usize,
    pub(super) max_batch: usize,
    pub(super) delay: Duration,
}

/// Asks the export task to send every span queued now, and says when it has.
pub(super) type Flush = oneshot::Sender<()>;

/// The task that empties `sink`'s queue into the collector; it ends, once it has sent what
/// waits, when the flush's last sender is dropped.
pub(super) fn start(
    collector: Collector,
    preamble: Preamble,
    sink: Arc<Sink>,
    batching: &Batching,
) -> mpsc::Sender<Flush> {
    let (flush, flushes) = mpsc::channel(4);
    let task = Exporting {
        collector,
        preamble,
        sink,
        flushes,
        max_batch: batching.max_batch,
        delay: batching.delay,
        failing: false,
        body_len: 0,
    };
    tokio::spawn(task.run());
    flush
}

struct Exporting {
    collector: Collector,
    preamble: Preamble,
    sink: Arc<Sink>,
    flushes: mpsc::Receiver<Flush>,
    max_batch: usize,
    delay: Duration,
    /// Whether the last export failed.
    failing: bool,
    /// The last body's length: the next one's room.
    body_len: usize,
}

impl Exporting {
    async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.delay);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // What waited, swapped for an empty queue with the same room.
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let flush = tokio::select! {
                () = self.sink.queue.batch_full() => None,
                _ = ticks.tick() => None,
                flush = self.flushes.recv() => match flush {
                    Some(flush) => Some(flush),
                    None => {
                        self.export_waiting(&mut batch).await;
                        return;
                    }
                },
            };
            self.export_waiting(&mut batch).await;
            if let Some(flush) = flush {
                let _ = flush.send(());
            }
        }
    }

    /// Sends everything that waits, in batches of at most `max_batch` exchanges.
    async fn export_waiting(&mut self, batch: &mut Vec<Finished>) {
        self.sink.queue.take(batch);
        for exchanges in batch.chunks(self.max_batch) {
            self.export(exchanges).await;
        }
        batch.clear();
    }

    async fn export(&mut self, batch: &[Finished]) {
        let spans: u64 = batch.iter().map(|f| f.started.spans()).sum();
        let body = export_request(&self.preamble, batch, self.body_len);
        self.body_len = body.len();
        let result = self.collector.send(body).await;
        match &result {
            Ok(()) => self.failing = false,
            // Said once while the collector keeps failing, and again when it failed anew.
            Err(error) if !std::mem::replace(&mut self.failing, true) => {
                tracing::warn!(spans, %error, "trace export failed; its spans are dropped until the collector takes them")
            }
            Err(error) => tracing::debug!(spans, %error, "trace export failed"),
        }
        self.sink.metrics.traces.exported(spans, result.is_ok());
    }
}
