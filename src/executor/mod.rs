//! # executor: sharded embedding, in this process or on a Ray cluster
//!
//! **What.** Before the index stage embeds its chunks through the embedding caches, [`prefill`] finds the
//! texts the caches lack, cuts them into shards and has each shard embedded: in this process
//! (`executor.kind = "local"`) or by one Ray task per shard (`"ray"`, see [`ray`]), each task running
//! `coltrast worker embed` ([`worker`]) on a shard file in `executor.shared_dir`. The shard outputs are merged
//! into the caches; the stage then runs exactly as it always did, every text a cache hit, so its artifacts,
//! fingerprint and early cutoff are the same whichever executor ran.
//!
//! **Planning** ([`shard::plan`]). The misses, deduplicated and sorted by (byte length, text) as the local path
//! has always sorted them, cut into contiguous runs of `executor.shard_texts`. Inside a shard texts are
//! embedded in groups of 256, as before, so with the default 1024 the batches (and so the vectors) are the
//! ones the stage computed before shards existed; both executors embed the same groups. A shard's id is the
//! blake3 of the model key and its texts' hashes, so a rerun plans the same shards and finds the finished ones.
//!
//! **Inputs.** The exported model (its dir and its cache key), the texts, `[executor]`.
//!
//! **Outputs.** The embedding and token caches, flushed; a [`Prefill`] summary that the stage records in its
//! manifest (`executor`, `shards`, `shards_embedded`, `shards_reused`, `shards_per_node`, timings).
//!
//! **Params.** `[executor]`: all speed-only, in no cache key ([`crate::settings::ExecutorSettings`]).
//!
//! **Scope.** Only the index stage shards its embedding. The chunk and mine stages embed with the base model in
//! libtorch, which `coltrast worker` must not link; moving them onto an exported base model is left for later
//! (README, "Running on a cluster").

pub mod ray;
pub mod shard;
pub mod worker;

use std::collections::BTreeMap;
use std::path::Path;

use crate::embed::cache::{EmbeddingCache, TokenCache};
use crate::embed::OrtEncoder;
use crate::error::Result;
use crate::settings::{ExecutorKind, Settings};

/// What [`prefill`] did, for the stage's manifest.
#[derive(Debug, Clone, Default)]
pub struct Prefill {
    pub kind: &'static str,
    /// Texts the caches lacked (all embedded now, by whichever executor).
    pub texts: usize,
    pub shards: usize,
    /// Shards embedded by this run.
    pub shards_embedded: usize,
    /// Shards whose output an earlier, interrupted run had already written (Ray only).
    pub shards_reused: usize,
    /// Shards embedded by this run, per Ray node (`ip/node-id-prefix`).
    pub per_node: BTreeMap<String, u64>,
    /// Seconds spent: the whole prefill, and summed over this run's shards the worker's model load and
    /// embedding and the task's whole attempt (Ray only).
    pub wall_s: f64,
    pub load_s: f64,
    pub embed_s: f64,
    pub attempt_s: f64,
    /// Seconds spent reading the shard outputs back and merging them into the caches, flush included (Ray
    /// only; the local executor merges as it embeds).
    pub merge_s: f64,
}

impl Prefill {
    /// The manifest stats (`texts_embedded` stays the stage's own).
    pub fn stats(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut v = vec![
            ("executor", self.kind.into()),
            ("shards", (self.shards as u64).into()),
            ("shards_embedded", (self.shards_embedded as u64).into()),
            ("shards_reused", (self.shards_reused as u64).into()),
            ("executor_wall_s", self.wall_s.into()),
        ];
        if self.kind == "ray" {
            v.push(("shards_per_node", serde_json::to_value(&self.per_node).unwrap_or_default()));
            v.push(("shard_load_s_total", self.load_s.into()));
            v.push(("shard_embed_s_total", self.embed_s.into()));
            v.push(("shard_attempt_s_total", self.attempt_s.into()));
            v.push(("merge_s", self.merge_s.into()));
        }
        v
    }
}

/// One exported model as the executors need it.
pub struct Model<'a> {
    /// `export/<fingerprint>/<name>/`: model.onnx, tokenizer.json, onnx_model.json.
    pub dir: &'a Path,
    /// The caches' key of the model (`onnx-<blake3 of model.onnx>`).
    pub key: &'a str,
    pub encoder: &'a OrtEncoder,
    pub embeddings: &'a mut EmbeddingCache,
    pub tokens: &'a mut TokenCache,
}

/// Embed every text of `texts` that the caches lack, shard by shard, on the executor of `s`, and flush the
/// caches. Afterwards every text is a hit.
pub fn prefill(s: &Settings, model: Model<'_>, texts: &[&str], what: &str) -> Result<Prefill> {
    let start = std::time::Instant::now();
    let missing = shard::missing(model.embeddings, model.tokens, texts);
    let shards = shard::plan(model.key, &missing, s.executor.shard_texts.max(1) as usize);
    let mut out = match s.executor.kind {
        ExecutorKind::Local => local(model, &shards, missing.len(), what)?,
        ExecutorKind::Ray => ray::run(s, model, &shards, what)?,
    };
    out.texts = missing.len();
    out.shards = shards.len();
    out.wall_s = start.elapsed().as_secs_f64();
    if !shards.is_empty() {
        tracing::info!(
            executor = out.kind,
            texts = out.texts,
            shards = out.shards,
            reused = out.shards_reused,
            "prefilled"
        );
    }
    Ok(out)
}

/// `"local"`: each shard in this process, one after another (ONNX Runtime already runs every core of
/// `model.threads` inside each batch; shards side by side would only contend for them).
fn local(model: Model<'_>, shards: &[shard::Shard<'_>], n_texts: usize, what: &str) -> Result<Prefill> {
    if shards.is_empty() {
        return Ok(Prefill { kind: "local", ..Default::default() });
    }
    let bar = crate::progress::bar(n_texts as u64, what);
    for sh in shards {
        let (emb, toks) = worker::embed_texts(model.encoder, &sh.texts, |n| bar.inc(n as u64))?;
        let dim = model.encoder.dim();
        for (i, t) in sh.texts.iter().enumerate() {
            let k = crate::embed::cache::key(t);
            model.embeddings.insert_key(k, &emb[i * dim..(i + 1) * dim])?;
            model.tokens.insert(t, &toks[i]);
        }
    }
    bar.finish_and_clear();
    model.embeddings.flush()?;
    model.tokens.flush()?;
    Ok(Prefill { kind: "local", shards_embedded: shards.len(), ..Default::default() })
}
