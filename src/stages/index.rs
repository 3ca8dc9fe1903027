//! # index: ONNX Runtime embeddings and a FAISS index of the chunks
//!
//! **What.** Decides which exported model to serve ([`crate::guard`]: under `export.model = "auto"`, the
//! fine-tuned model unless it ranks the validation queries worse than the base model), embeds every chunk's
//! `embed_text` with it through ONNX Runtime ([`crate::embed`]), builds a FAISS index from `index.factory`
//! ([`crate::index`]), and stores each chunk's token embeddings for late-interaction reranking
//! ([`crate::late`]).
//!
//! **Embedding cache.** Sentence and token embeddings are cached by (ONNX model hash, text hash) under
//! `artifacts/.cache/`, so re-indexing after one README changes embeds only that README's changed chunks
//! (the manifest's `texts_embedded` says how many).
//!
//! **Inputs.** `chunk/chunks.parquet`; `mine/pairs.parquet` (its validation queries, for the guard);
//! `export/<model>/model.onnx`.
//!
//! **Outputs.**
//! - `chunk_embeddings.parquet`: `chunk_id` Utf8, `project_id` Utf8, `embedding` FixedSizeList<Float32, D>.
//!   Row i is FAISS id i (and row i of `chunks.parquet`).
//! - `index.faiss`: inner product over unit vectors (cosine). "Flat" (exact, default), "HNSW32", "IVF{n},Flat"
//!   (trained on the embeddings; needs at least n chunks) and other FAISS factory strings.
//! - `tokens/`: `token_embeddings.f16` (little-endian binary16, each chunk's token vectors back to back,
//!   `[CLS]`/`[SEP]` included, padding excluded), `token_offsets.parquet` (`chunk_row` Int64, `offset` Int64 in
//!   tokens, `n_tokens` Int32) and `token_embeddings.json` (`dim`, `dtype`, counts).
//! - `bm25/`: a tantivy index of every chunk's `embed_text` (field `text`, row number as fast field `row`), for
//!   BM25 in hybrid search ([`crate::lexical`]). Its bytes differ between runs (tantivy names segments by
//!   random UUIDs); its content does not, and no stage reads it, so fingerprints and early cutoff are unaffected.
//! - `index.json`: the served model, factory, dims and count; `served`: the guard's choice and its reason
//!   ([`crate::guard::Served`], also in the manifest's stats `served_system`, `served_model`, `served_reason`).
//!
//! **Executor.** The texts the caches lack are embedded shard by shard first, in this process or on a Ray
//! cluster (`[executor]`, see [`crate::executor`]); the stage then reads every embedding from the caches, so
//! what it writes does not depend on where the shards ran. The manifest records the shards (per Ray node).
//!
//! **Params.** `index.factory`, `export.model`, `export.guard_margin`, `export.guard_noise`,
//! `export.guard_queries`, `index.lexical_weight` (the guard
//! compares the models as they are served: hybrid when it is above 0). `index.rerank_depth` is used by queries
//! and eval, not here.
//! `model.device` picks ONNX Runtime's execution provider (CPU or CUDA); it is not hashed (speed only, see
//! [`crate::settings::ModelDevice`]) and is recorded as the manifest's `device` stat.
//! `[executor]` is speed only and not in the key.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};

use crate::artifacts::export::ExportedModel;
use crate::artifacts::index::{embeddings_schema, BM25, EMBEDDINGS, FAISS, INFO, TOKENS};
use crate::artifacts::{chunks, StageId};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::settings::ServedModel;
use crate::settings::Settings;
use crate::table;

pub struct IndexStage;

impl Stage<Settings> for IndexStage {
    fn id(&self) -> StageId {
        StageId::Index
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Chunk, StageId::Mine, StageId::Export]
    }
    fn code_version(&self) -> u32 {
        // 3: the validation guard chooses the served model (index.json `served`)
        // 4: the guard decides on the dataset's own validation questions (export.guard_queries)
        // 5: FAISS 1.7.3 (Debian's libfaiss-dev) writes the index instead of the bundled FAISS 1.12
        5
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&IndexKey::of(s))
    }
    fn external_inputs(&self, _s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config;
        let (chunks, _, _) = chunks::read_chunks(ctx.upstream_dir(StageId::Chunk)?)?;
        let texts: Vec<&str> = chunks.iter().map(|c| c.embed_text.as_str()).collect();
        let what = match s.executor.kind {
            crate::settings::ExecutorKind::Local => "embedding chunks (ort)",
            crate::settings::ExecutorKind::Ray => "embedding shards (ray)",
        };
        let (choice, guard_prefill) = crate::guard::choose_served(ctx, &chunks, &texts, what)?;
        eprintln!("index: {}", choice.line());
        ctx.record_stat("served_system", choice.system.clone());
        ctx.record_stat("served_model", choice.model.clone());
        ctx.record_stat("served_reason", choice.reason.clone());
        if let Some(g) = choice.val_gain() {
            ctx.record_stat("served_val_gain_ndcg@10", g);
        }
        let served = choice.model.as_str();
        let mut model = ExportedModel::open(ctx, served)?;
        let pre = match guard_prefill {
            Some(p) => p,
            None => model.prefill(s, &texts, what)?,
        };
        for (k, v) in pre.stats() {
            ctx.record_stat(k, v);
        }
        let (flat, tokens, after) = model.embed(&texts, "embedding chunks (ort)")?;
        let embedded = pre.texts + after;
        let info = &model.info;
        ctx.record_stat("texts_embedded", embedded as u64);
        // model.device is speed only (not hashed), but the manifest says where the vectors were made.
        ctx.record_stat("device", ctx.config.model.device.as_str());
        // model.engine / model.precision are speed only too; the manifest says which engine made the vectors
        ctx.record_stat("engine", model.encoder.engine());
        ctx.record_stat("engine_precision", model.encoder.computes_in());
        ctx.record_stat("texts_from_cache", (texts.len() - embedded) as u64);
        tracing::info!(chunks = chunks.len(), embedded, "indexing");

        let dim = info.embedding_dim;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(chunks.iter().map(|c| c.chunk_id.as_str()))),
            Arc::new(StringArray::from_iter_values(chunks.iter().map(|c| c.project_id.as_str()))),
            table::embedding_array(flat.clone(), dim)?,
        ];
        let n = table::write_parquet(&ctx.output(EMBEDDINGS), embeddings_schema(dim), cols)?;
        ctx.record_rows(EMBEDDINGS, n);
        let index = crate::index::VectorIndex::build(&s.index.factory, dim, &flat, None)?;
        index.write(&ctx.output(FAISS))?;
        let mut writer = crate::late::TokenStoreWriter::create(&ctx.output(TOKENS), info.token_dim)?;
        for (row, t) in tokens.iter().enumerate() {
            if !t.is_empty() {
                writer.add(row as i64, t)?;
            }
        }
        writer.finish()?;
        crate::lexical::LexicalIndex::build(Some(&ctx.output(BM25)), &texts)?;
        let meta = serde_json::json!({
            "model": s.export.model.as_str(), "factory": s.index.factory, "embedding_dim": dim,
            "token_dim": info.token_dim, "count": chunks.len(), "onnx_model": served, "served": choice,
        });
        let p = ctx.output(INFO);
        std::fs::write(&p, serde_json::to_vec_pretty(&meta).map_err(Error::internal)?).map_err(|e| Error::io(&p, e))?;
        Ok(())
    }
}
/// The index stage's cache key: the FAISS factory and which model is served; under `export.model = "auto"` also
/// what the guard decides with.
#[derive(Debug, serde::Serialize)]
pub struct IndexKey<'a> {
    pub factory: &'a str,
    pub model: ServedModel,
    #[serde(flatten)]
    pub guard: Option<GuardKey>,
}

/// The guard's settings (`export.model = "auto"`), and the fusion weight its validation ranks with.
#[derive(Debug, serde::Serialize)]
pub struct GuardKey {
    pub guard_margin: f64,
    pub guard_noise: f64,
    pub guard_queries: crate::settings::GuardQueries,
    pub lexical_weight: f64,
}

impl<'a> IndexKey<'a> {
    pub fn of(s: &'a Settings) -> Self {
        let guard = (s.export.model == ServedModel::Auto).then_some(GuardKey {
            guard_margin: s.export.guard_margin,
            guard_noise: s.export.guard_noise,
            guard_queries: s.export.guard_queries,
            lexical_weight: s.index.lexical_weight,
        });
        IndexKey { factory: &s.index.factory, model: s.export.model, guard }
    }
}
