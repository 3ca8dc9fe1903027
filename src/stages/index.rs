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
use arrow::datatypes::{DataType, Field, Schema};

use crate::embed::OrtEncoder;
use crate::embed_cache::{EmbeddingCache, TokenCache};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::guard::{self, Judged, Served};
use crate::settings::ServedModel;
use crate::settings::Settings;
use crate::stages::{chunk, export, mine};
use crate::table;

pub const EMBEDDINGS: &str = "chunk_embeddings.parquet";
pub const FAISS: &str = "index.faiss";
pub const TOKENS: &str = "tokens";
pub const INFO: &str = "index.json";
pub const BM25: &str = "bm25";

pub fn embeddings_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("embedding", table::embedding_type(dim), false),
    ]))
}

pub struct IndexStage;

/// One exported ONNX model, ready to embed through its (model hash, text hash) caches.
pub struct ExportedModel {
    /// `export/<fingerprint>/<name>/`.
    pub dir: std::path::PathBuf,
    /// The caches' key: `onnx-<blake3 of model.onnx>`.
    pub key: String,
    pub info: crate::onnx::OnnxModelInfo,
    pub encoder: OrtEncoder,
    pub embeddings: EmbeddingCache,
    pub tokens: TokenCache,
}

impl ExportedModel {
    /// Open `export/<name>/` (name: [`export::FINETUNED`] or [`export::BASE`]); its cache key is the blake3 of
    /// its model.onnx as recorded in the export manifest.
    pub fn open(ctx: &StageContext<'_, Settings>, name: &str) -> Result<ExportedModel> {
        let dir = ctx.upstream_dir("export")?.join(name);
        let rel = format!("{name}/{}", export::MODEL_FILE);
        let hash = ctx
            .upstream_manifest("export")?
            .output(&rel)
            .map(|o| o.blake3.clone())
            .ok_or_else(|| Error::internal(format!("export manifest has no {rel}")))?;
        let info = crate::onnx::OnnxModelInfo::read(&dir)?;
        let encoder = OrtEncoder::from_settings(&dir, ctx.config)?;
        let key = format!("onnx-{hash}");
        let embeddings = EmbeddingCache::open(ctx.cache_root(), &key, info.embedding_dim)?;
        let tokens = TokenCache::open(ctx.cache_root(), &key, info.token_dim)?;
        Ok(ExportedModel { dir, key, info, encoder, embeddings, tokens })
    }

    /// Embed what the caches lack on the executor of `s` (see [`crate::executor`]); afterwards every text of
    /// `texts` is a cache hit.
    pub fn prefill(&mut self, s: &Settings, texts: &[&str], what: &str) -> Result<crate::executor::Prefill> {
        let m = crate::executor::Model {
            dir: &self.dir,
            key: &self.key,
            encoder: &self.encoder,
            embeddings: &mut self.embeddings,
            tokens: &mut self.tokens,
        };
        crate::executor::prefill(s, m, texts, what)
    }

    /// Sentence and token embeddings of `texts` through the caches (see [`embed_cached`]); caches are flushed.
    pub fn embed(&mut self, texts: &[&str], what: &str) -> Result<(Vec<f32>, Vec<Vec<f32>>, usize)> {
        let before = self.embeddings.misses;
        let out = embed_cached(&self.encoder, &mut self.embeddings, &mut self.tokens, texts, what)?;
        self.embeddings.flush()?;
        self.tokens.flush()?;
        Ok((out.0, out.1, self.embeddings.misses - before))
    }
}

/// Embed `texts` with `enc`, through both caches; returns (flat sentence embeddings, per-text token rows).
pub fn embed_cached(
    enc: &OrtEncoder,
    emb_cache: &mut EmbeddingCache,
    tok_cache: &mut TokenCache,
    texts: &[&str],
    what: &str,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let mut missing: Vec<&str> =
        texts.iter().copied().filter(|t| !emb_cache.contains(t) || !tok_cache.contains(t)).collect();
    // by length first, so each group of 256 (and so each padded batch) holds texts of similar length
    missing.sort_unstable_by_key(|t| (t.len(), *t));
    missing.dedup();
    if !missing.is_empty() {
        let bar = crate::progress::bar(missing.len() as u64, what);
        for group in missing.chunks(256) {
            let (e, toks) = enc.embed_both(group)?;
            emb_cache.embed(group, |_| Ok(e.data.clone()))?;
            for (t, rows) in group.iter().zip(&toks) {
                tok_cache.insert(t, &rows.data);
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
    }
    let flat = emb_cache.embed(texts, |m| Err(Error::internal(format!("{} texts missing from the cache", m.len()))))?;
    let tokens = texts
        .iter()
        .map(|t| tok_cache.get(t).ok_or_else(|| Error::internal("token cache miss after embedding")))
        .collect::<Result<Vec<_>>>()?;
    Ok((flat, tokens))
}

/// The validation pairs (split `val` or `dev`) the guard decides on: under `"labelled"` the dataset's own
/// questions, or the synthetic ones when there are none; under `"all"` every one.
pub fn guard_queries(pairs: &[mine::Pair], which: crate::settings::GuardQueries) -> Vec<&mine::Pair> {
    let val: Vec<&mine::Pair> = pairs.iter().filter(|p| p.split == "val" || p.split == "dev").collect();
    if which == crate::settings::GuardQueries::All || !val.iter().any(|p| p.is_labelled()) {
        return val;
    }
    val.into_iter().filter(|p| p.is_labelled()).collect()
}

/// The guard's choice ([`crate::guard`]): under `export.model = "auto"` with validation queries, both models
/// rank every chunk for them (through the same embedding caches eval uses, so nothing is embedded twice).
/// Needs the upstreams `mine` and `export` (eval calls it too, and gets the same answer).
/// The chunks are embedded on the stage's executor (Ray too); returned with the choice is the executor's
/// summary for the served model.
pub fn choose_served(
    ctx: &StageContext<'_, Settings>,
    chunks: &[chunk::Chunk],
    texts: &[&str],
    what: &str,
) -> Result<(Served, Option<crate::executor::Prefill>)> {
    let s = ctx.config;
    let w = s.index.lexical_weight as f32;
    let hybrid = w > 0.0;
    if s.export.model != ServedModel::Auto {
        return Ok((guard::choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, None), None));
    }
    let pairs = mine::read_pairs(ctx.upstream_dir("mine")?)?;
    let val = guard_queries(&pairs, s.export.guard_queries);
    if val.is_empty() || chunks.is_empty() {
        return Ok((guard::choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, None), None));
    }
    let row_of = guard::rows_by_id(chunks.iter().map(|c| c.chunk_id.as_str()));
    let document_of: Vec<&str> = chunks.iter().map(|c| c.project_id.as_str()).collect();
    let judged: Vec<Judged<'_>> = val
        .iter()
        .map(|p| Judged {
            document: p.project_id.as_str(),
            positive_row: p.positive_chunk_id.as_deref().and_then(|id| row_of.get(id)).copied(),
        })
        .collect();
    let queries: Vec<&str> = val.iter().map(|p| p.query.as_str()).collect();
    let k = chunks.len().min(100);
    let lexical = if hybrid {
        let l = crate::lexical::LexicalIndex::build(None, texts)?;
        queries.iter().map(|q| l.search(q, k)).collect::<Result<Vec<_>>>()?
    } else {
        vec![]
    };
    let mut scores = Vec::new();
    let mut prefills = Vec::new();
    for name in [export::BASE, export::FINETUNED] {
        let mut m = ExportedModel::open(ctx, name)?;
        prefills.push(m.prefill(s, texts, &format!("{what}, {name}"))?);
        let (emb, _, _) = m.embed(texts, &format!("embedding chunks ({name}, validation guard)"))?;
        let idx = crate::index::VectorIndex::build("Flat", m.info.embedding_dim, &emb, None)?;
        let q = m.encoder.embed(&queries)?;
        let mut hits = idx.search(&q.data, k)?;
        if hybrid {
            hits = hits.iter().zip(&lexical).map(|(d, l)| crate::lexical::fuse(d, l, w)).collect();
        }
        scores.push(guard::score(&hits, &judged, &document_of));
    }
    tracing::info!(queries = val.len(), base = ?scores[0].0, coltrast = ?scores[1].0, "validation guard");
    let (base, coltrast) = (scores.swap_remove(0), scores.swap_remove(0));
    let diffs = coltrast.1.iter().zip(&base.1).map(|(c, b)| c - b).collect();
    let synthetic = val.iter().filter(|p| !p.is_labelled()).count();
    let v = guard::Validation { base: base.0, coltrast: coltrast.0, diffs, synthetic };
    let choice = guard::choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, Some(&v));
    let pre = prefills.swap_remove(if choice.model == export::BASE { 0 } else { 1 });
    Ok((choice, Some(pre)))
}

impl Stage<Settings> for IndexStage {
    fn name(&self) -> &'static str {
        "index"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["chunk", "mine", "export"]
    }
    fn code_version(&self) -> u32 {
        // 3: the validation guard chooses the served model (index.json `served`)
        // 4: the guard decides on the dataset's own validation questions (export.guard_queries)
        // 5: FAISS 1.7.3 (Debian's libfaiss-dev) writes the index instead of the bundled FAISS 1.12
        5
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        let mut t = toml::Table::new();
        t.insert("factory".into(), s.index.factory.clone().into());
        t.insert("model".into(), s.export.model.as_str().into());
        if s.export.model == ServedModel::Auto {
            t.insert("guard_margin".into(), s.export.guard_margin.into());
            t.insert("guard_noise".into(), s.export.guard_noise.into());
            t.insert("guard_queries".into(), s.export.guard_queries.as_str().into());
            t.insert("lexical_weight".into(), s.index.lexical_weight.into());
        }
        Ok(toml::Value::Table(t))
    }
    fn external_inputs(&self, _s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config;
        let (chunks, _, _) = chunk::read_chunks(ctx.upstream_dir("chunk")?)?;
        let texts: Vec<&str> = chunks.iter().map(|c| c.embed_text.as_str()).collect();
        let what = match s.executor.kind {
            crate::settings::ExecutorKind::Local => "embedding chunks (ort)",
            crate::settings::ExecutorKind::Ray => "embedding shards (ray)",
        };
        let (choice, guard_prefill) = choose_served(ctx, &chunks, &texts, what)?;
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

#[cfg(test)]
mod guard_query_tests {
    use super::*;
    use crate::settings::GuardQueries;

    fn pair(id: &str, split: &str, source: &str) -> mine::Pair {
        mine::Pair {
            qa_id: id.into(),
            project_id: "p".into(),
            split: split.into(),
            query: id.into(),
            positive_text: "t".into(),
            positive_chunk_id: None,
            positive_source: "chunk".into(),
            positive_score: 0.5,
            negative_chunk_ids: vec![],
            negative_texts: vec![],
            negative_scores: vec![],
            source: source.into(),
        }
    }

    fn ids(v: Vec<&mine::Pair>) -> Vec<&str> {
        v.into_iter().map(|p| p.qa_id.as_str()).collect()
    }

    #[test]
    fn the_guard_decides_on_labelled_validation_questions_unless_there_are_none() {
        let pairs = vec![
            pair("q1", "val", mine::LABELLED),
            pair("g1", "val", "cloze"),
            pair("q2", "dev", mine::LABELLED),
            pair("q3", "train", mine::LABELLED),
            pair("q4", "test", mine::LABELLED),
            pair("g2", "val", "llm"),
        ];
        assert_eq!(ids(guard_queries(&pairs, GuardQueries::Labelled)), ["q1", "q2"]);
        assert_eq!(ids(guard_queries(&pairs, GuardQueries::All)), ["q1", "g1", "q2", "g2"]);
        // only synthetic validation queries: better than none
        let synthetic_only: Vec<mine::Pair> = pairs.into_iter().filter(|p| p.source != mine::LABELLED).collect();
        assert_eq!(ids(guard_queries(&synthetic_only, GuardQueries::Labelled)), ["g1", "g2"]);
    }
}
