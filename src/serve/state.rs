//! What the server serves: one generation of artifacts at a time, swapped atomically.
//!
//! A [`Generation`] is a loaded [`Searcher`] (model, FAISS index, token store, chunks) with its own batching
//! queue. Requests take an `Arc` of the current generation when they start and keep it to the end, so a swap
//! never mixes generations within a request, and an old generation is dropped (its batching thread ends)
//! when its last request finishes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::query::Searcher;
use crate::settings::Settings;

use super::batch::{BatchConfig, Batcher};
use super::telemetry::Metrics;

pub struct Generation {
    pub number: u64,
    pub searcher: Searcher,
    pub batcher: Batcher,
    /// Seconds since the Unix epoch at which it was loaded.
    pub loaded_at: u64,
}

impl Generation {
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        self.searcher.located().fingerprints()
    }
}

/// Why a reload did or did not swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Swapped(u64),
    Unchanged(u64),
}

pub struct AppState {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub batch: BatchConfig,
    /// HTTP requests in progress (the batcher waits for company only while others are in flight).
    pub inflight: Arc<AtomicUsize>,
    pub api_key: Option<blake3::Hash>,
    pub body_limit: usize,
    /// Whether ONNX Runtime's threads spin while idle.
    pub spin: bool,
    current: RwLock<Option<Arc<Generation>>>,
    next: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        batch: BatchConfig,
        api_key: Option<&str>,
        body_limit: usize,
        spin: bool,
    ) -> AppState {
        AppState {
            settings,
            metrics: Arc::new(Metrics::new()),
            batch,
            inflight: Arc::new(AtomicUsize::new(0)),
            api_key: api_key.map(|k| blake3::hash(k.as_bytes())),
            body_limit,
            spin,
            current: RwLock::new(None),
            next: AtomicU64::new(1),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The generation being served, if one is loaded.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Does `given` equal the API key? Compares the two blake3 digests, whose equality is constant-time, so
    /// neither the key's bytes nor its length leak through timing.
    pub fn key_matches(&self, given: &str) -> bool {
        match &self.api_key {
            Some(k) => *k == blake3::hash(given.as_bytes()),
            None => true,
        }
    }

    /// Locate the artifacts for the server's settings and, when they differ from those served (or `force`),
    /// load them and swap. One reload at a time; a failed load keeps the generation served.
    pub async fn reload(self: &Arc<Self>, force: bool) -> Result<Reloaded> {
        let _one = self.reloading.lock().await;
        let me = self.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<Option<Searcher>> {
            let located = Searcher::locate(&me.settings)?;
            if let Some(g) = me.current() {
                if !force && *g.searcher.located() == located {
                    return Ok(None);
                }
            }
            Searcher::open_located_with(&me.settings, located, me.spin).map(Some)
        })
        .await
        .map_err(|e| Error::internal(format!("loading the artifacts: {e}")));
        let searcher = match loaded.and_then(|r| r) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.metrics.reloads.with_label_values(&["unchanged"]).inc();
                let n = self.current().map(|g| g.number).unwrap_or(0);
                return Ok(Reloaded::Unchanged(n));
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["failed"]).inc();
                return Err(e);
            }
        };
        let number = self.next.fetch_add(1, Ordering::SeqCst);
        let batcher = Batcher::start(
            searcher.encoder().clone(),
            self.batch,
            self.metrics.clone(),
            self.inflight.clone(),
            format!("coltrast-batch-{number}"),
        )?;
        let loaded_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let generation = Arc::new(Generation { number, searcher, batcher, loaded_at });
        self.metrics.index_size.set(generation.searcher.num_chunks() as i64);
        self.metrics.generation.set(number as i64);
        self.metrics.reloads.with_label_values(&["swapped"]).inc();
        tracing::info!(
            generation = number,
            index = %generation.fingerprints().get("index").map(String::as_str).unwrap_or("?"),
            "serving generation {number}"
        );
        let old = self.current.write().unwrap_or_else(|p| p.into_inner()).replace(generation);
        // The old generation (and its batching thread) goes when its last request ends; drop our handle off the
        // async threads, since the batcher's drop joins its thread.
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || drop(old));
        }
        Ok(Reloaded::Swapped(number))
    }
}
