//! The server's Prometheus metrics (the `prometheus` crate writes the text format), on a registry of its own.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Request latency by route, seconds.
    pub latency: HistogramVec,
    /// Texts per ONNX Runtime call of the batcher.
    pub batch_size: Histogram,
    /// Tokens (unpadded) per batcher call.
    pub batch_tokens: Histogram,
    /// Encode jobs waiting for the batching thread.
    pub queue_depth: IntGauge,
    /// Vectors in the served index.
    pub index_size: IntGauge,
    /// The generation served (1 for the first load, +1 per swap).
    pub generation: IntGauge,
    /// Reloads by result: `swapped`, `unchanged` or `failed`.
    pub reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("coltrast".into()), None).expect("a valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
            &["route"],
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "texts per ONNX Runtime call of the batcher")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let batch_tokens = Histogram::with_opts(
            HistogramOpts::new("batch_tokens", "tokens per ONNX Runtime call of the batcher")
                .buckets(vec![16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0]),
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new("queue_depth", "encode jobs waiting for the batcher").expect("valid metric");
        let index_size = IntGauge::new("index_vectors", "vectors in the served index").expect("valid metric");
        let generation = IntGauge::new("generation", "the artifact generation served").expect("valid metric");
        let reloads = IntCounterVec::new(Opts::new("reloads_total", "index reloads by result"), &["result"])
            .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(batch_tokens.clone()),
            Box::new(queue_depth.clone()),
            Box::new(index_size.clone()),
            Box::new(generation.clone()),
            Box::new(reloads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics { registry, requests, latency, batch_size, batch_tokens, queue_depth, index_size, generation, reloads }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
