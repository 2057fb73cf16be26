//! Spans off the request path: a span that ends goes into a bounded queue, or, when the queue
//! is full, is dropped and counted; one task takes them out in batches and exports them. The
//! request path never waits for the collector, however slow or gone it is.
//!
//! The SDK's own batch processor counts what it drops only in its logs, and runs on a thread
//! of its own; this one counts into `memoctopus_trace_spans_dropped_total` and runs on the
//! proxy's runtime, whose hyper client carries the exports.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The ends of the queue on the request path's side.
pub(super) struct Queue {
    spans: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.metrics.traces.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// How the export task batches.
pub(super) struct Batching {
    pub(super) max_queue: usize,
    pub(super) max_batch: usize,
    pub(super) delay: Duration,
    pub(super) timeout: Duration,
}

/// Asks the export task to send every span queued now, and says when it has.
pub(super) type Flush = oneshot::Sender<()>;

/// The queue, and the task that empties it into `exporter`; the task ends when the queue's
/// sender is dropped with the last tracer.
pub(super) fn start<E: SpanExporter + 'static>(
    exporter: E,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> (Queue, mpsc::Sender<Flush>) {
    let (spans, queued) = mpsc::channel(batching.max_queue);
    let (flush, flushes) = mpsc::channel(4);
    let task = Exporting {
        exporter,
        queued,
        flushes,
        batching,
        metrics: metrics.clone(),
    };
    tokio::spawn(task.run());
    (Queue { spans, metrics }, flush)
}

struct Exporting<E> {
    exporter: E,
    queued: mpsc::Receiver<SpanData>,
    flushes: mpsc::Receiver<Flush>,
    batching: Batching,
    metrics: Arc<Metrics>,
}

impl<E: SpanExporter> Exporting<E> {
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
    async fn fill(&mut self, batch: &mut Vec<SpanData>) -> Option<Flush> {
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

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = batch.len();
        let sent = std::mem::replace(batch, Vec::with_capacity(self.batching.max_batch));
        let result = tokio::time::timeout(self.batching.timeout, self.exporter.export(sent)).await;
        let ok = matches!(result, Ok(Ok(())));
        if !ok {
            let error = match result {
                Ok(Err(error)) => error.to_string(),
                _ => format!("no answer within {:?}", self.batching.timeout),
            };
            tracing::warn!(spans, %error, "trace export failed; its spans are dropped");
        }
        self.metrics.traces.exported(spans, ok);
    }
}
