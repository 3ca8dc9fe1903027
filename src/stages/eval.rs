//! # eval: what coltrast bought, against what a user already has
//!
//! **What.** Ranks the held-out queries with these systems and scores the rankings:
//! - `base-whole`: the baseline a user has without coltrast: the base model over whole documents
//!   (`title + " " + text`, truncated at max_seq_length, as sentence-transformers embeds a BEIR corpus), no
//!   chunks, no fine-tuning. Document level only. Every other system's gain is measured against it;
//! - `base`: the base model over the chunks;
//! - `base+hybrid`: `base` fused with BM25 over the chunks (`index.lexical_weight`, see [`crate::lexical`]);
//! - `coltrast`: the fine-tuned model over the chunks, pooled embeddings only;
//! - `coltrast+rerank`: `coltrast`'s top `index.rerank_depth` re-scored by
//!   `(1 - index.rerank_weight) * cosine + index.rerank_weight * MaxSim` (late interaction over token
//!   embeddings; weight 1 is a pure MaxSim rerank);
//! - `coltrast+hybrid`: `coltrast` fused with BM25, as the query commands rank by default.
//!
//! All models go through the same ONNX export and ONNX Runtime path. Search is exact (inner product over all
//! chunks), so the comparison of models is not blurred by the ANN settings of `index.factory`. Embeddings come
//! from the same (model hash, text hash) cache as the index stage.
//!
//! **Levels.** `chunk`: the relevant item is the pair's positive chunk (pairs whose positive is the answer text
//! are left out at this level). `document`: any chunk of the right project; a project ranks at its best chunk.
//! **Measures.** recall@1, recall@5, recall@10, mrr@10, ndcg@10 (binary relevance).
//!
//! **Queries.** `eval.split`: `"auto"` (default) takes the BEIR `test` split if present, else `val`, else `dev`;
//! `"all"` takes every pair; any other value names a split.
//!
//! **Weights on validation.** When the pairs have a `val` (or `dev`) split other than the evaluated one,
//! eval also sweeps `index.lexical_weight` and `index.rerank_weight` for `coltrast` on it and reports the
//! document-level nDCG@10 of each value and the best one (`eval.md`, stats `val_best_lexical_weight`,
//! `val_best_rerank_weight`): the numbers to tune those settings with, never the test split.
//!
//! **Served.** The index stage chose what is served on validation ([`crate::guard`]); eval makes the same
//! choice from the same inputs (without reading the index, so a new `index.factory` does not rerun it) and
//! reports that system's test figures next to the others (stats `served_system`, `served_model`, `served_reason`,
//! `served/document/ndcg@10`, `served_gain_vs_base`), and `eval.md` ends with two lines: the best system
//! (ties at document level go to the chunk-level figure) and `served: <system> (<why>)`.
//!
//! **Inputs.** `ingest/projects.parquet`, `chunk/chunks.parquet`, `mine/pairs.parquet`,
//! `export/{base,coltrast}/`.
//!
//! **Outputs.** `eval.parquet` (`system` Utf8, `level` Utf8, `metric` Utf8, `value` Float64, `queries` Int64),
//! `eval_queries.parquet` (`qa_id` Utf8, `system` Utf8, `level` Utf8, `rank` Int64 nullable: 1-based rank of the
//! first relevant item within the retrieved list, null if not retrieved), and `eval.md`, a readable table
//! with each system's gain over `base-whole`. The manifest's stats name the best system (`best_system`, by
//! document-level nDCG@10) and its gain (`best_gain_ndcg@10`).
//!
//! **Params.** `eval.split`, `index.rerank_depth`, `index.rerank_weight`, `index.lexical_weight`, `export.model`,
//! `export.guard_margin`, `export.guard_noise`, `export.guard_queries`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};

use crate::artifacts::eval::{eval_schema, queries_schema, BASELINE, EVAL, QUERIES, REPORT, SYSTEMS};
use crate::artifacts::export::{self};
use crate::artifacts::{chunks, dataset, pairs, Split, StageId};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::guard::Served;
use crate::metrics::{docs_from_chunks, mean_metrics, QueryMetrics, METRIC_NAMES};
use crate::settings::{EvalSplit, Settings};
use crate::table;

/// The values swept on validation.
pub const LEXICAL_GRID: [f64; 9] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5];
pub const RERANK_GRID: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

pub struct Eval;

/// Pick the evaluation pairs per `eval.split`.
pub fn select(pairs: &[pairs::Pair], split: EvalSplit) -> (String, Vec<&pairs::Pair>) {
    let present: BTreeSet<Split> = pairs.iter().map(|p| p.split).collect();
    let chosen = match (split, split.split()) {
        (EvalSplit::All, _) => return ("all".into(), pairs.iter().collect()),
        (_, Some(one)) => one,
        _ => [Split::Test, Split::Val, Split::Dev].into_iter().find(|s| present.contains(s)).unwrap_or(Split::Train),
    };
    (chosen.to_string(), pairs.iter().filter(|p| p.split == chosen).collect())
}

/// MaxSim of the query against each of the first `depth` of `ranked`.
pub fn maxsim_head(
    ranked: &[(i64, f32)],
    q_tokens: &[f32],
    doc_tokens: &[Vec<f32>],
    dim: usize,
    depth: usize,
) -> Vec<f32> {
    ranked[..depth.min(ranked.len())]
        .iter()
        .map(|&(row, _)| crate::late::maxsim(q_tokens, &doc_tokens[row as usize], dim))
        .collect()
}

/// Re-score the first `depth` of `ranked` by `(1 - w) * score + w * MaxSim`; the rest keep their order.
pub fn rerank_rows(
    ranked: &[(i64, f32)],
    q_tokens: &[f32],
    doc_tokens: &[Vec<f32>],
    dim: usize,
    depth: usize,
    w: f32,
) -> Vec<(i64, f32)> {
    crate::lexical::fuse_maxsim(ranked, &maxsim_head(ranked, q_tokens, doc_tokens, dim, depth), w)
}

/// Document-level nDCG@10 of rankings over chunk rows.
fn doc_ndcg(rankings: &[Vec<(i64, f32)>], pairs: &[&pairs::Pair], project_of: &[&str]) -> f64 {
    let ms: Vec<QueryMetrics> = rankings
        .iter()
        .zip(pairs)
        .map(|(ranked, pair)| {
            let docs: Vec<String> = docs_from_chunks(ranked, |r| project_of.get(r as usize).map(|p| p.to_string()))
                .into_iter()
                .map(|d| d.0)
                .collect();
            QueryMetrics::compute(&docs, &[pair.project_id.clone()].into_iter().collect::<BTreeSet<String>>())
        })
        .collect();
    mean_metrics(&ms).get("ndcg@10").copied().unwrap_or(0.0)
}

struct SystemRun {
    name: &'static str,
    chunk_ranks: Vec<(String, Option<i64>, Option<QueryMetrics>)>,
    doc_ranks: Vec<(String, Option<i64>, QueryMetrics)>,
}

impl Stage<Settings> for Eval {
    fn id(&self) -> StageId {
        StageId::Eval
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Ingest, StageId::Chunk, StageId::Mine, StageId::Export]
    }
    fn code_version(&self) -> u32 {
        // 3: reports the served system (the index stage's validation guard); best system ties broken at chunk
        // level
        // 4: the guard decides on the dataset's own validation questions (export.guard_queries); a tie with
        // base-whole at document level is reported at chunk level first
        4
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&EvalKey::of(s))
    }
    fn external_inputs(&self, _s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let inputs = Inputs::read(ctx)?;
        let plan = Plan::new(ctx, &inputs)?;
        let (runs, sweep) = plan.rank(ctx)?;
        let (results, per_query) = tabulate(&runs);
        record_metrics(ctx, &results);
        write_tables(ctx, &results, &per_query)?;
        record_best(ctx, &results);
        let served = plan.record_served(ctx, &results)?;
        let best_w = record_best_weights(ctx, &sweep);
        plan.write_report(ctx, &results, &sweep, &best_w, &served)
    }
}

/// Rankings of several queries: per query, (chunk or document row, score), best first.
type Rankings = Vec<Vec<(i64, f32)>>;
/// A row of eval.parquet: (system, level, metric, value, queries).
type ResultRow = (String, String, String, f64, i64);
/// A row of eval_queries.parquet: (qa_id, system, level, rank).
type QueryRow = (String, String, String, Option<i64>);
/// One point of a validation sweep: (weight's name, its value, document nDCG@10).
type SweepPoint = (&'static str, f64, f64);

/// What eval reads: the dataset, the chunks and the labelled pairs.
struct Inputs {
    ds: dataset::Dataset,
    chunks: Vec<chunks::Chunk>,
    pairs: Vec<pairs::Pair>,
}

impl Inputs {
    /// Reads the upstream artifacts, keeping only the dataset's own (labelled) questions.
    fn read(ctx: &StageContext<'_, Settings>) -> Result<Self> {
        let ds = crate::artifacts::dataset::read(ctx.upstream_dir(StageId::Ingest)?)?;
        let (chunks, _, _) = chunks::read_chunks(ctx.upstream_dir(StageId::Chunk)?)?;
        // Only the dataset's own questions are scored: synthetic queries (the generate stage) train and
        // validate, they are not what a user asks.
        let pairs: Vec<pairs::Pair> =
            pairs::read_pairs(ctx.upstream_dir(StageId::Mine)?)?.into_iter().filter(|p| p.is_labelled()).collect();
        Ok(Inputs { ds, chunks, pairs })
    }
}

/// What the system runs share: the evaluated and validation queries, the chunks' rows, BM25's rankings and
/// the weights.
struct Plan<'a> {
    ds: &'a dataset::Dataset,
    chunks: &'a [chunks::Chunk],
    split: String,
    queries: Vec<&'a pairs::Pair>,
    val_pairs: Vec<&'a pairs::Pair>,
    row_of: HashMap<&'a str, i64>,
    project_of: Vec<&'a str>,
    texts: Vec<&'a str>,
    qtexts: Vec<&'a str>,
    vtexts: Vec<&'a str>,
    depth: usize,
    k: usize,
    lw: f32,
    rw: f32,
    q_bm25: Rankings,
    v_bm25: Rankings,
}

impl<'a> Plan<'a> {
    /// Chooses the evaluated split (recording it) and its validation queries, and ranks both with BM25.
    fn new(ctx: &mut StageContext<'_, Settings>, inputs: &'a Inputs) -> Result<Self> {
        let s = ctx.config;
        let chunks = inputs.chunks.as_slice();
        let (split, queries) = choose_queries(ctx, &inputs.pairs, chunks.len())?;
        let row_of: HashMap<&str, i64> =
            chunks.iter().enumerate().map(|(i, c)| (c.chunk_id.as_str(), i as i64)).collect();
        let project_of: Vec<&str> = chunks.iter().map(|c| c.project_id.as_str()).collect();
        let texts: Vec<&str> = chunks.iter().map(|c| c.embed_text.as_str()).collect();
        let qtexts: Vec<&str> = queries.iter().map(|p| p.query.as_str()).collect();
        let depth = s.index.rerank_depth as usize;
        let k = chunks.len().min(depth.max(100));
        let val_pairs = validation_pairs(&inputs.pairs, &split);
        let vtexts: Vec<&str> = val_pairs.iter().map(|p| p.query.as_str()).collect();
        let (lw, rw) = (s.index.lexical_weight as f32, s.index.rerank_weight as f32);
        let lexical = crate::lexical::LexicalIndex::build(None, &texts)?;
        let bm25 = |qs: &[&str]| -> Result<Rankings> { qs.iter().map(|q| lexical.search(q, k)).collect() };
        let (q_bm25, v_bm25) = (bm25(&qtexts)?, bm25(&vtexts)?);
        Ok(Plan {
            ds: &inputs.ds,
            chunks,
            split,
            queries,
            val_pairs,
            row_of,
            project_of,
            texts,
            qtexts,
            vtexts,
            depth,
            k,
            lw,
            rw,
            q_bm25,
            v_bm25,
        })
    }

    /// Ranks the queries with each model's systems, and sweeps the weights on validation with the fine-tuned one.
    fn rank(&self, ctx: &StageContext<'_, Settings>) -> Result<(Vec<SystemRun>, Vec<SweepPoint>)> {
        let mut runs: Vec<SystemRun> = Vec::new();
        let mut sweep: Vec<SweepPoint> = Vec::new();
        for model in [export::BASE, export::FINETUNED] {
            let mut m = export::ExportedModel::open(ctx, model)?;
            let (doc_emb, doc_tok, _) = m.embed(&self.texts, &format!("embedding chunks ({model})"))?;
            let idx = crate::index::VectorIndex::build("Flat", m.info.embedding_dim, &doc_emb, None)?;
            let q = m.encoder.embed_both(&self.qtexts)?;
            let hits = idx.search(&q.0.data, self.k)?;
            if model == export::BASE {
                runs.extend(self.base_runs(&mut m, &q.0.data, &hits)?);
            } else {
                runs.extend(self.finetuned_runs(&hits, &q.1, &doc_tok, m.info.token_dim));
                if !self.val_pairs.is_empty() {
                    sweep = self.sweep(&m, &idx, &doc_tok)?;
                }
            }
        }
        Ok((runs, sweep))
    }

    /// The base model's systems: `base-whole` over whole documents, `base` and `base+hybrid` over the chunks.
    fn base_runs(&self, m: &mut export::ExportedModel, q_emb: &[f32], hits: &Rankings) -> Result<Vec<SystemRun>> {
        // The baseline: whole documents, one vector each, ranked directly.
        let projects = &self.ds.projects;
        let whole: Vec<String> = projects.iter().map(dataset::titled_text).collect();
        let wrefs: Vec<&str> = whole.iter().map(|t| t.as_str()).collect();
        let (wemb, _, _) = m.embed(&wrefs, "embedding whole documents (base)")?;
        let widx = crate::index::VectorIndex::build("Flat", m.info.embedding_dim, &wemb, None)?;
        let whits = widx.search(q_emb, projects.len().min(100))?;
        let pids: Vec<&str> = projects.iter().map(|p| p.project_id.as_str()).collect();
        Ok(vec![
            score_documents(BASELINE, &whits, &self.queries, &pids),
            self.score("base", hits),
            self.score("base+hybrid", &hybrid(hits, &self.q_bm25, self.lw)),
        ])
    }

    /// The fine-tuned model's systems over the chunks: `coltrast`, `coltrast+rerank` and `coltrast+hybrid`.
    fn finetuned_runs(
        &self,
        hits: &Rankings,
        q_tok: &[crate::embed::TokenRows],
        doc_tok: &[Vec<f32>],
        token_dim: usize,
    ) -> Vec<SystemRun> {
        let reranked: Rankings = hits
            .iter()
            .zip(q_tok)
            .map(|(h, t)| rerank_rows(h, &t.data, doc_tok, token_dim, self.depth, self.rw))
            .collect();
        vec![
            self.score("coltrast", hits),
            self.score("coltrast+rerank", &reranked),
            self.score("coltrast+hybrid", &hybrid(hits, &self.q_bm25, self.lw)),
        ]
    }

    /// The fine-tuned model's document nDCG@10 on validation at each value of the lexical and rerank grids.
    fn sweep(
        &self,
        m: &export::ExportedModel,
        idx: &crate::index::VectorIndex,
        doc_tok: &[Vec<f32>],
    ) -> Result<Vec<SweepPoint>> {
        let v = m.encoder.embed_both(&self.vtexts)?;
        let vhits = idx.search(&v.0.data, self.k)?;
        let mut sweep: Vec<SweepPoint> = Vec::new();
        for w in LEXICAL_GRID {
            sweep.push((
                "lexical_weight",
                w,
                doc_ndcg(&hybrid(&vhits, &self.v_bm25, w as f32), &self.val_pairs, &self.project_of),
            ));
        }
        let token_dim = m.info.token_dim;
        let heads: Vec<Vec<f32>> =
            vhits.iter().zip(&v.1).map(|(h, t)| maxsim_head(h, &t.data, doc_tok, token_dim, self.depth)).collect();
        for w in RERANK_GRID {
            let r: Rankings =
                vhits.iter().zip(&heads).map(|(h, m)| crate::lexical::fuse_maxsim(h, m, w as f32)).collect();
            sweep.push(("rerank_weight", w, doc_ndcg(&r, &self.val_pairs, &self.project_of)));
        }
        Ok(sweep)
    }

    /// Scores rankings over chunk rows of the evaluated queries as system `name`.
    fn score(&self, name: &'static str, rankings: &[Vec<(i64, f32)>]) -> SystemRun {
        score_system(name, rankings, &self.queries, &self.row_of, &self.project_of)
    }

    /// Makes the index stage's choice of the served system again, and records it with its test figures.
    fn record_served(&self, ctx: &mut StageContext<'_, Settings>, results: &[ResultRow]) -> Result<Served> {
        // The index stage's choice, made again from the same inputs (so eval need not wait for the index,
        // and a new index.factory leaves eval cached); its chunk embeddings are cache hits by now.
        let (served, _) = crate::guard::choose_served(ctx, self.chunks, &self.texts, "embedding chunks (ort)")?;
        ctx.record_stat("served_system", served.system.clone());
        ctx.record_stat("served_model", served.model.clone());
        ctx.record_stat("served_reason", served.reason.clone());
        if let Some(g) = served.val_gain() {
            ctx.record_stat("served_val_gain_ndcg@10", g);
        }
        if let Some(v) = ndcg(results, &served.system, "document") {
            ctx.record_stat("served/document/ndcg@10", v);
            if let Some(b) = ndcg(results, "base", "document") {
                ctx.record_stat("served_gain_vs_base", v - b);
            }
        }
        Ok(served)
    }

    /// Writes eval.md: the table, the validation sweeps, the best system's line and the served line.
    fn write_report(
        &self,
        ctx: &StageContext<'_, Settings>,
        results: &[ResultRow],
        sweep: &[SweepPoint],
        best_w: &BTreeMap<&str, (f64, f64)>,
        served: &Served,
    ) -> Result<()> {
        let mut md = report(results, &self.split, self.queries.len(), self.chunks.len(), self.depth);
        if !sweep.is_empty() {
            let _ = writeln!(
                md,
                "\n## Weights on validation ({} val queries, coltrast, document nDCG@10)\n",
                self.val_pairs.len()
            );
            for key in ["lexical_weight", "rerank_weight"] {
                let row: Vec<String> =
                    sweep.iter().filter(|r| r.0 == key).map(|r| format!("{}: {:.3}", r.1, r.2)).collect();
                let best = best_w.get(key).map(|b| b.0).unwrap_or(0.0);
                let _ = writeln!(md, "- `index.{key}` (best {best}): {}", row.join(", "));
            }
        }
        // The last lines: what fine-tuning changed, and what is served.
        let _ = writeln!(md);
        if let (Some(b), Some(best)) = (ndcg(results, BASELINE, "document"), best_system(results)) {
            let _ = writeln!(md, "{}", best.line(b));
        }
        let _ = writeln!(md, "{}", served.line());
        let p = ctx.output(REPORT);
        std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
        Ok(())
    }
}

/// Picks the evaluated split and its queries per `eval.split` (an error when there are none), logs and records
/// them.
fn choose_queries<'p>(
    ctx: &mut StageContext<'_, Settings>,
    pairs: &'p [pairs::Pair],
    chunks: usize,
) -> Result<(String, Vec<&'p pairs::Pair>)> {
    let s = ctx.config;
    let (split, queries) = select(pairs, s.eval.split);
    if queries.is_empty() {
        return Err(Error::Usage(format!(
            "eval: no pairs in split {split:?} (eval.split = {:?})",
            s.eval.split.as_str()
        )));
    }
    tracing::info!(split = %split, queries = queries.len(), chunks = chunks, "evaluating");
    ctx.record_stat("split", split.clone());
    ctx.record_stat("queries", queries.len() as u64);
    Ok((split, queries))
}

/// The validation pairs the weights are swept on: none when the evaluated split is itself validation.
fn validation_pairs<'p>(pairs: &'p [pairs::Pair], split: &str) -> Vec<&'p pairs::Pair> {
    if split == "val" || split == "dev" {
        vec![]
    } else {
        pairs.iter().filter(|p| p.split.is_validation()).collect()
    }
}

/// Dense rankings fused with BM25's at lexical weight `w`, query by query.
fn hybrid(dense: &[Vec<(i64, f32)>], lex: &[Vec<(i64, f32)>], w: f32) -> Rankings {
    dense.iter().zip(lex).map(|(d, l)| crate::lexical::fuse(d, l, w)).collect()
}

/// The nDCG@10 of `sys` at `level` in `results`, if it was scored there.
fn ndcg(results: &[ResultRow], sys: &str, level: &str) -> Option<f64> {
    results.iter().find(|r| r.0 == sys && r.1 == level && r.2 == "ndcg@10").map(|r| r.3)
}

/// The rows of eval.parquet (mean metrics per system and level) and eval_queries.parquet (rank per query).
fn tabulate(runs: &[SystemRun]) -> (Vec<ResultRow>, Vec<QueryRow>) {
    let mut results: Vec<ResultRow> = Vec::new();
    let mut per_query: Vec<QueryRow> = Vec::new();
    for run in runs {
        let chunk_m: Vec<QueryMetrics> = run.chunk_ranks.iter().filter_map(|r| r.2).collect();
        let doc_m: Vec<QueryMetrics> = run.doc_ranks.iter().map(|r| r.2).collect();
        for (level, ms) in [("chunk", &chunk_m), ("document", &doc_m)] {
            if ms.is_empty() {
                continue;
            }
            let means = mean_metrics(ms);
            for name in METRIC_NAMES {
                results.push((run.name.into(), level.into(), name.to_string(), means[name], ms.len() as i64));
            }
        }
        for (qa, rank, m) in &run.chunk_ranks {
            if m.is_some() {
                per_query.push((qa.clone(), run.name.into(), "chunk".into(), *rank));
            }
        }
        for (qa, rank, _) in &run.doc_ranks {
            per_query.push((qa.clone(), run.name.into(), "document".into(), *rank));
        }
    }
    (results, per_query)
}

/// Records each system's nDCG@10, recall@1 and MRR@10 at each level as stats.
fn record_metrics(ctx: &mut StageContext<'_, Settings>, results: &[ResultRow]) {
    for (sys, level, metric, v, _) in results {
        if metric == "ndcg@10" || metric == "recall@1" || metric == "mrr@10" {
            ctx.record_stat(&format!("{sys}/{level}/{metric}"), *v);
        }
    }
}

/// Writes eval.parquet and eval_queries.parquet, recording their row counts.
fn write_tables(ctx: &mut StageContext<'_, Settings>, results: &[ResultRow], per_query: &[QueryRow]) -> Result<()> {
    let col = |f: &dyn Fn(&ResultRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(results.iter().map(f)))
    };
    let n = table::write_parquet(
        &ctx.output(EVAL),
        eval_schema(),
        vec![
            col(&|r| r.0.clone()),
            col(&|r| r.1.clone()),
            col(&|r| r.2.clone()),
            Arc::new(Float64Array::from_iter_values(results.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter_values(results.iter().map(|r| r.4))),
        ],
    )?;
    ctx.record_rows(EVAL, n);
    let n = table::write_parquet(
        &ctx.output(QUERIES),
        queries_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(per_query.iter().map(|r| r.0.as_str()))),
            Arc::new(StringArray::from_iter_values(per_query.iter().map(|r| r.1.as_str()))),
            Arc::new(StringArray::from_iter_values(per_query.iter().map(|r| r.2.as_str()))),
            Arc::new(Int64Array::from(per_query.iter().map(|r| r.3).collect::<Vec<_>>())),
        ],
    )?;
    ctx.record_rows(QUERIES, n);
    Ok(())
}

/// Records the baseline's document nDCG@10, and the best system with its gain over it.
fn record_best(ctx: &mut StageContext<'_, Settings>, results: &[ResultRow]) {
    if let Some(base) = ndcg(results, BASELINE, "document") {
        ctx.record_stat("baseline_ndcg@10", base);
        if let Some(b) = best_system(results) {
            ctx.record_stat("best_system", b.system.to_string());
            ctx.record_stat("best_ndcg@10", b.document);
            ctx.record_stat("best_gain_ndcg@10", b.document - base);
        }
    }
}

/// The best value of each swept weight (the first of equals), recorded as `val_best_<weight>`.
fn record_best_weights(
    ctx: &mut StageContext<'_, Settings>,
    sweep: &[SweepPoint],
) -> BTreeMap<&'static str, (f64, f64)> {
    let mut best_w: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
    for &(key, w, v) in sweep {
        let e = best_w.entry(key).or_insert((w, v));
        if v > e.1 + 1e-12 {
            *e = (w, v);
        }
    }
    for (key, (w, _)) in &best_w {
        ctx.record_stat(&format!("val_best_{key}"), *w);
    }
    best_w
}

fn report(
    results: &[(String, String, String, f64, i64)],
    split: &str,
    queries: usize,
    chunks: usize,
    depth: usize,
) -> String {
    let mut by: BTreeMap<(String, String), BTreeMap<String, (f64, i64)>> = BTreeMap::new();
    for (s, l, m, v, n) in results {
        by.entry((l.clone(), s.clone())).or_default().insert(m.clone(), (*v, *n));
    }
    let baseline = by.get(&("document".to_string(), BASELINE.to_string())).and_then(|m| m.get("ndcg@10")).map(|x| x.0);
    let mut out = String::new();
    let _ = writeln!(out, "# eval: {queries} queries ({split} split), {chunks} chunks, rerank depth {depth}\n");
    let _ = writeln!(out, "| level | system | queries | {} | gain vs {BASELINE} |", METRIC_NAMES.join(" | "));
    let _ = writeln!(out, "|---|---|---|{}---|", "---|".repeat(METRIC_NAMES.len()));
    for level in ["document", "chunk"] {
        for sys in SYSTEMS {
            if let Some(m) = by.get(&(level.to_string(), sys.to_string())) {
                let n = m.values().next().map(|x| x.1).unwrap_or(0);
                let vals: Vec<String> =
                    METRIC_NAMES.iter().map(|k| format!("{:.3}", m.get(*k).map(|x| x.0).unwrap_or(0.0))).collect();
                let gain = match (level, baseline, m.get("ndcg@10")) {
                    ("document", Some(b), Some(v)) if sys != BASELINE => format!("{:+.3}", v.0 - b),
                    _ => String::new(),
                };
                let _ = writeln!(out, "| {level} | {sys} | {n} | {} | {gain} |", vals.join(" | "));
            }
        }
    }
    out
}

/// The best system by document nDCG@10, and how it was told from the runner-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub system: &'static str,
    pub document: f64,
    /// When others tie with it at document level: (chunk nDCG@10 of the best, the best tied other system and
    /// its chunk nDCG@10).
    pub tie: Option<(f64, &'static str, f64)>,
}

impl Best {
    /// The line eval.md (and so `coltrast run`) ends with, before the served line.
    pub fn line(&self, baseline: f64) -> String {
        // The best systems no better than base-whole at document level (a small sample where they find every
        // document): the chunk level is where fine-tuning shows, so the line leads with it.
        if let (Some((c, other, oc)), true) = (self.tie, (self.document - baseline).abs() <= 1e-9) {
            let d = c - oc;
            let word = if d >= 0.0 { "gain" } else { "loss" };
            return format!(
                "best system: {}, chunk nDCG@10 {c:.3}: {word} of {:.3} over {other} ({oc:.3}); at document level \
                 it ties with {other} and {BASELINE} (nDCG@10 {baseline:.3}), so this data cannot show more there",
                self.system,
                d.abs()
            );
        }
        let mut l = summary_line(self.system, self.document, baseline);
        if let Some((c, other, oc)) = self.tie {
            let _ =
                write!(l, "; tied at document level, so chunk level decides: chunk nDCG@10 {c:.3} vs {other} {oc:.3}");
        }
        l
    }
}

/// The best system (the baseline excluded) by document-level nDCG@10; systems within 1e-9 of it are told
/// apart by chunk-level nDCG@10 (a small sample where every system finds every document ties at document
/// level, while the chunk level still shows what fine-tuning changed); then the order of [`SYSTEMS`].
pub fn best_system(results: &[(String, String, String, f64, i64)]) -> Option<Best> {
    let get =
        |sys: &str, level: &str| results.iter().find(|r| r.0 == sys && r.1 == level && r.2 == "ndcg@10").map(|r| r.3);
    let docs: Vec<(&'static str, f64)> =
        SYSTEMS.iter().filter(|s| **s != BASELINE).filter_map(|s| get(s, "document").map(|v| (*s, v))).collect();
    let top = docs.iter().map(|d| d.1).fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<(&'static str, f64)> = docs.into_iter().filter(|d| (top - d.1).abs() <= 1e-9).collect();
    let chunk = |s: &str| get(s, "chunk").unwrap_or(f64::NEG_INFINITY);
    let mut best = *tied.first()?;
    for &t in &tied[1..] {
        if chunk(t.0) > chunk(best.0) + 1e-9 {
            best = t;
        }
    }
    // What fine-tuning changed: compare with the best tied system of the other model (base ↔ coltrast).
    let family = |s: &str| s.split('+').next().unwrap_or(s).to_string();
    let others =
        |same_family: bool| {
            tied.iter()
                .filter(move |t| t.0 != best.0 && (family(t.0) == family(best.0)) == same_family)
                .reduce(|a, b| if chunk(b.0) > chunk(a.0) + 1e-9 { b } else { a })
        };
    let runner_up = others(false);
    let tie = match runner_up {
        Some(r) if get(best.0, "chunk").is_some() && get(r.0, "chunk").is_some() => {
            Some((chunk(best.0), r.0, chunk(r.0)))
        }
        _ => None,
    };
    Some(Best { system: best.0, document: best.1, tie })
}

/// The best system and its gain (or loss) over `base-whole`.
pub fn summary_line(best: &str, ndcg: f64, baseline: f64) -> String {
    let d = ndcg - baseline;
    let word = if d >= 0.0 { "gain" } else { "loss" };
    format!("best system: {best}, document nDCG@10 {ndcg:.3}: {word} of {:.3} over {BASELINE} ({baseline:.3})", d.abs())
}

/// Score rankings over chunk rows at chunk and document level.
fn score_system(
    name: &'static str,
    rankings: &[Vec<(i64, f32)>],
    queries: &[&pairs::Pair],
    row_of: &HashMap<&str, i64>,
    project_of: &[&str],
) -> SystemRun {
    let mut run = SystemRun { name, chunk_ranks: vec![], doc_ranks: vec![] };
    for (ranked, pair) in rankings.iter().zip(queries) {
        let rows: Vec<i64> = ranked.iter().map(|r| r.0).collect();
        let pos = pair.positive_chunk_id.as_deref().and_then(|id| row_of.get(id)).copied();
        let (crank, cm) = match pos {
            Some(p) => {
                let rel: BTreeSet<i64> = [p].into();
                (rows.iter().position(|r| *r == p).map(|i| i as i64 + 1), Some(QueryMetrics::compute(&rows, &rel)))
            }
            None => (None, None),
        };
        run.chunk_ranks.push((pair.qa_id.clone(), crank, cm));
        let docs: Vec<String> = docs_from_chunks(ranked, |r| project_of.get(r as usize).map(|p| p.to_string()))
            .into_iter()
            .map(|d| d.0)
            .collect();
        run.doc_ranks.push(doc_rank(pair, &docs));
    }
    run
}

/// Score rankings over documents (rows of `project_ids`), at document level only.
fn score_documents(
    name: &'static str,
    rankings: &[Vec<(i64, f32)>],
    queries: &[&pairs::Pair],
    project_ids: &[&str],
) -> SystemRun {
    let mut run = SystemRun { name, chunk_ranks: vec![], doc_ranks: vec![] };
    for (ranked, pair) in rankings.iter().zip(queries) {
        let docs: Vec<String> =
            ranked.iter().filter_map(|r| project_ids.get(r.0 as usize).map(|p| p.to_string())).collect();
        run.doc_ranks.push(doc_rank(pair, &docs));
    }
    run
}

fn doc_rank(pair: &pairs::Pair, docs: &[String]) -> (String, Option<i64>, QueryMetrics) {
    let rel: BTreeSet<String> = [pair.project_id.clone()].into();
    let rank = docs.iter().position(|d| *d == pair.project_id).map(|i| i as i64 + 1);
    (pair.qa_id.clone(), rank, QueryMetrics::compute(docs, &rel))
}

/// The eval stage's cache key: the split, the reranking and fusion weights, and the served model's guard (eval
/// reports what is served).
#[derive(Debug, serde::Serialize)]
pub struct EvalKey {
    pub split: EvalSplit,
    pub rerank_depth: u64,
    pub rerank_weight: f64,
    pub lexical_weight: f64,
    pub served_model: crate::settings::ServedModel,
    pub guard_margin: f64,
    pub guard_noise: f64,
    pub guard_queries: crate::settings::GuardQueries,
}

impl EvalKey {
    pub fn of(s: &Settings) -> Self {
        EvalKey {
            split: s.eval.split,
            rerank_depth: s.index.rerank_depth,
            rerank_weight: s.index.rerank_weight,
            lexical_weight: s.index.lexical_weight,
            served_model: s.export.model,
            guard_margin: s.export.guard_margin,
            guard_noise: s.export.guard_noise,
            guard_queries: s.export.guard_queries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerank_only_reorders_within_depth() {
        // 2-d unit token vectors; doc 2 matches the query best, doc 3 would too but is beyond depth.
        let q = vec![1.0, 0.0];
        let docs = vec![vec![0.0, 1.0], vec![0.6, 0.8], vec![1.0, 0.0], vec![1.0, 0.0]];
        let ranked = vec![(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6)];
        let out = rerank_rows(&ranked, &q, &docs, 2, 3, 1.0);
        assert_eq!(rerank_rows(&ranked, &q, &docs, 2, 3, 0.0), ranked);
        let rows: Vec<i64> = out.iter().map(|r| r.0).collect();
        assert_eq!(rows, [2, 1, 0, 3]);
    }

    #[test]
    fn report_shows_each_gain_over_base_whole_and_ends_with_the_best() {
        let row = |sys: &str, level: &str, v: f64| (sys.to_string(), level.to_string(), "ndcg@10".to_string(), v, 10);
        let results = vec![
            row(BASELINE, "document", 0.80),
            row("base", "document", 0.78),
            row("coltrast+rerank", "document", 0.85),
            row("base", "chunk", 0.70),
        ];
        let md = report(&results, "test", 10, 40, 50);
        assert!(md.contains("| document | base | 10 |") && md.contains("| -0.020 |"), "{md}");
        assert!(md.contains("| document | coltrast+rerank | 10 |") && md.contains("| +0.050 |"), "{md}");
        // no gain for the baseline itself or at chunk level
        assert!(md.lines().any(|l| l.starts_with("| chunk | base |") && l.ends_with("|  |")), "{md}");
        let best = best_system(&results).unwrap();
        assert_eq!(
            best.line(0.8),
            "best system: coltrast+rerank, document nDCG@10 0.850: gain of 0.050 over base-whole (0.800)"
        );
        assert!(!md.contains("best system"), "the summary is written once, by the stage: {md}");
        assert_eq!(
            summary_line("base", 0.78, 0.8),
            "best system: base, document nDCG@10 0.780: loss of 0.020 over base-whole (0.800)"
        );
    }

    #[test]
    fn a_tie_at_document_level_is_decided_at_chunk_level() {
        let row = |sys: &str, level: &str, v: f64| (sys.to_string(), level.to_string(), "ndcg@10".to_string(), v, 4);
        let mut results = vec![row(BASELINE, "document", 1.0)];
        for sys in ["base", "base+hybrid", "coltrast", "coltrast+rerank", "coltrast+hybrid"] {
            results.push(row(sys, "document", 1.0));
        }
        for (sys, v) in [("base", 0.938), ("base+hybrid", 0.938), ("coltrast", 1.0), ("coltrast+hybrid", 1.0)] {
            results.push(row(sys, "chunk", v));
        }
        let best = best_system(&results).unwrap();
        assert_eq!(best.system, "coltrast");
        assert_eq!(best.tie, Some((1.0, "base", 0.938)));
        // the sample's case: nothing to see at document level, so the line says what the chunk level shows
        assert_eq!(
            best.line(1.0),
            "best system: coltrast, chunk nDCG@10 1.000: gain of 0.062 over base (0.938); at document level it \
             ties with base and base-whole (nDCG@10 1.000), so this data cannot show more there"
        );
        // a tie between the systems above base-whole: the document-level gain, then the chunk level decides
        assert!(best
            .line(0.9)
            .ends_with("tied at document level, so chunk level decides: chunk nDCG@10 1.000 vs base 0.938"));
        // no tie: no chunk-level clause
        results[3].3 = 0.9;
        results[4].3 = 0.9;
        results[5].3 = 0.95;
        let best = best_system(&results).unwrap();
        assert_eq!((best.system, best.tie), ("base", None));
    }

    #[test]
    fn split_selection() {
        let mk = |s: &str| pairs::Pair {
            qa_id: s.into(),
            project_id: "p".into(),
            split: s.parse().unwrap(),
            query: "q".into(),
            positive_text: "t".into(),
            positive_chunk_id: None,
            positive_source: "answer".into(),
            positive_score: 0.0,
            negative_chunk_ids: vec![],
            negative_texts: vec![],
            negative_scores: vec![],
            source: pairs::LABELLED.into(),
        };
        let pairs = vec![mk("train"), mk("val"), mk("val")];
        assert_eq!(select(&pairs, EvalSplit::Auto).1.len(), 2);
        assert_eq!(select(&pairs, EvalSplit::All).1.len(), 3);
        let beir = vec![mk("train"), mk("test"), mk("dev")];
        assert_eq!(select(&beir, EvalSplit::Auto).0, "test");
    }
}
