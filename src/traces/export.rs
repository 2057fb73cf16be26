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
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::collector::Collector;
use super::otlp::{export_request, Preamble};
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
}

/// Asks the export task to send every span queued now, and says when it has.
pub(super) type Flush = oneshot::Sender<()>;

/// The queue, and the task that empties it into the collector; the task ends when the
/// queue's sender is dropped with the last tracer.
pub(super) fn start(
    collector: Collector,
    preamble: Preamble,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> (Queue, mpsc::Sender<Flush>) {
    let (spans, queued) = mpsc::channel(batching.max_queue);
    let (flush, flushes) = mpsc::channel(4);
    let task = Exporting {
        collector,
        preamble,
        queued,
        flushes,
        batching,
        metrics: metrics.clone(),
        failing: false,
    };
    tokio::spawn(task.run());
    (Queue { spans, metrics }, flush)
}

struct Exporting {
    collector: Collector,
    preamble: Preamble,
    queued: mpsc::Receiver<SpanData>,
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
        // Sized exactly before it is written: one allocation, handed to hyper as it is.
        let mut body = Vec::new();
        export_request(&self.preamble, batch, &mut body);
        batch.clear();
        let result = self.collector.send(body).await;
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
