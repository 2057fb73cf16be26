//! Spans off the request path: an exchange's spans, once it ends, go into a bounded queue, or,
//! when the queue is full, are dropped and counted; one task takes them out in batches, writes
//! their OTLP body and sends it. The request path never waits for the collector, however slow
//! or gone it is, and the drops are counted in `memoctopus_trace_spans_dropped_total` (the
//! SDK's batch processor counts its own only in its logs).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::collector::Collector;
use super::otlp::{export_request, Preamble};
use super::spans::Finished;
use crate::metrics::Metrics;

/// How the export task batches: at most `max_queue` exchanges wait, `max_batch` go at once.
pub(super) struct Batching {
    pub(super) max_queue: usize,
    pub(super) max_batch: usize,
    pub(super) delay: Duration,
}

/// Asks the export task to send every span queued now, and says when it has.
pub(super) type Flush = oneshot::Sender<()>;

/// The queue, and the task that empties it into the collector; the task ends when the
/// queue's last sender is dropped.
pub(super) fn start(
    collector: Collector,
    preamble: Preamble,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> (mpsc::Sender<Finished>, mpsc::Sender<Flush>) {
    let (spans, queued) = mpsc::channel(batching.max_queue);
    let (flush, flushes) = mpsc::channel(4);
    let task = Exporting {
        collector,
        preamble,
        queued,
        flushes,
        batching,
        metrics,
        failing: false,
    };
    tokio::spawn(task.run());
    (spans, flush)
}

struct Exporting {
    collector: Collector,
    preamble: Preamble,
    queued: mpsc::Receiver<Finished>,
    flushes: mpsc::Receiver<Flush>,
    batching: Batching,
    metrics: Arc<Metrics>,
    /// Whether the last export failed.
    failing: bool,
}

impl Exporting {
    async fn run(mut self) {
        let max = self.batching.max_batch;
        let mut batch = Vec::with_capacity(max);
        loop {
            // A first span, or a flush with nothing waiting.
            let flush = tokio::select! {
                n = self.queued.recv_many(&mut batch, max) => {
                    if n == 0 {
                        return;
                    }
                    None
                }
                Some(flush) = self.flushes.recv() => Some(flush),
            };
            let flush = match flush {
                Some(flush) => Some(flush),
                None => self.fill(&mut batch).await,
            };
            self.export(&mut batch).await;
            if let Some(flush) = flush {
                while !self.queued.is_empty() {
                    self.queued.recv_many(&mut batch, max).await;
                    self.export(&mut batch).await;
                }
                let _ = flush.send(());
            }
        }
    }

    /// Adds to `batch` until it is full or its first span has waited the delay; a flush asked
    /// for meanwhile ends the wait and is returned.
    async fn fill(&mut self, batch: &mut Vec<Finished>) -> Option<Flush> {
        let max = self.batching.max_batch;
        let deadline = Instant::now() + self.batching.delay;
        while batch.len() < max {
            tokio::select! {
                n = self.queued.recv_many(batch, max - batch.len()) => {
                    if n == 0 {
                        return None;
                    }
                }
                Some(flush) = self.flushes.recv() => return Some(flush),
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
        None
    }

    async fn export(&mut self, batch: &mut Vec<Finished>) {
        if batch.is_empty() {
            return;
        }
        let spans: u64 = batch.iter().map(|f| f.started.spans()).sum();
        let body = export_request(&self.preamble, batch);
        batch.clear();
        let result = match body {
            Some(body) => self.collector.send(body).await,
            None => Err("the batch's protobuf lengths were miscounted".to_owned()),
        };
        match &result {
            Ok(()) => self.failing = false,
            // Said once while the collector keeps failing, and again when it failed anew.
            Err(error) if !std::mem::replace(&mut self.failing, true) => {
                tracing::warn!(spans, %error, "trace export failed; its spans are dropped until the collector takes them")
            }
            Err(error) => tracing::debug!(spans, %error, "trace export failed"),
        }
        self.metrics.traces.exported(spans, result.is_ok());
    }
}
