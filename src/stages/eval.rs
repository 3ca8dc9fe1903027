//! # eval: what fine-tuning bought
//!
//! **What.** Ranks every chunk for each held-out query with three systems and scores the rankings:
//! - `base`: the base model, through the same ONNX export and ONNX Runtime path;
//! - `coltrast`: the fine-tuned model, pooled embeddings only;
//! - `coltrast+rerank`: the fine-tuned model, its top `index.rerank_depth` re-scored by late-interaction MaxSim
//!   over token embeddings.
//!
//! Search is exact (inner product over all chunks), so the comparison of models is not blurred by the ANN
//! settings of `index.factory`. Embeddings come from the same (model hash, text hash) cache as the index stage.
//!
//! **Levels.** `chunk`: the relevant item is the pair's positive chunk (pairs whose positive is the answer text
//! are left out at this level). `document`: any chunk of the right project; a project ranks at its best chunk.
//! **Measures.** recall@1, recall@5, recall@10, mrr@10, ndcg@10 (binary relevance).
//!
//! **Queries.** `eval.split`: `"auto"` (default) takes the BEIR `test` split if present, else `val`, else `dev`;
//! `"all"` takes every pair; any other value names a split.
//!
//! **Inputs.** `chunk/chunks.parquet`, `mine/pairs.parquet`, `export/{base,coltrast}/`.
//!
//! **Outputs.** `eval.parquet` (`system` Utf8, `level` Utf8, `metric` Utf8, `value` Float64, `queries` Int64),
//! `eval_queries.parquet` (`qa_id` Utf8, `system` Utf8, `level` Utf8, `rank` Int64 nullable: 1-based rank of the
//! first relevant item within the retrieved list, null if not retrieved), and `eval.md`, a readable table.
//!
//! **Params.** `eval.split`, `index.rerank_depth`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::metrics::{docs_from_chunks, mean_metrics, QueryMetrics, METRIC_NAMES};
use crate::settings::Settings;
use crate::stages::{chunk, export, index, mine};
use crate::table;

pub const EVAL: &str = "eval.parquet";
pub const QUERIES: &str = "eval_queries.parquet";
pub const REPORT: &str = "eval.md";
pub const SYSTEMS: [&str; 3] = ["base", "coltrast", "coltrast+rerank"];

pub fn eval_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("system", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("queries", DataType::Int64, false),
    ]))
}

pub fn queries_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("qa_id", DataType::Utf8, false),
        Field::new("system", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, true),
    ]))
}

pub struct Eval;

/// Pick the evaluation pairs per `eval.split`.
pub fn select<'a>(pairs: &'a [mine::Pair], split: &str) -> (String, Vec<&'a mine::Pair>) {
    let splits: BTreeSet<&str> = pairs.iter().map(|p| p.split.as_str()).collect();
    let chosen = match split {
        "all" => return ("all".into(), pairs.iter().collect()),
        "auto" => ["test", "val", "dev"].into_iter().find(|s| splits.contains(s)).unwrap_or("train"),
        other => other,
    };
    (chosen.to_string(), pairs.iter().filter(|p| p.split == chosen).collect())
}

/// Re-score the first `depth` of `ranked` by MaxSim; the rest keep their order after them.
pub fn rerank_rows(
    ranked: &[(i64, f32)],
    q_tokens: &[f32],
    doc_tokens: &[Vec<f32>],
    dim: usize,
    depth: usize,
) -> Vec<(i64, f32)> {
    let d = depth.min(ranked.len());
    let mut head: Vec<(usize, i64, f32)> = ranked[..d]
        .iter()
        .enumerate()
        .map(|(i, &(row, _))| (i, row, crate::late::maxsim(q_tokens, &doc_tokens[row as usize], dim)))
        .collect();
    head.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    head.into_iter().map(|(_, r, s)| (r, s)).chain(ranked[d..].iter().copied()).collect()
}

struct SystemRun {
    name: &'static str,
    chunk_ranks: Vec<(String, Option<i64>, Option<QueryMetrics>)>,
    doc_ranks: Vec<(String, Option<i64>, QueryMetrics)>,
}

impl Stage<Settings> for Eval {
    fn name(&self) -> &'static str {
        "eval"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["chunk", "mine", "export"]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        let mut t = toml::Table::new();
        t.insert("split".into(), s.eval.split.clone().into());
        t.insert("rerank_depth".into(), s.index.rerank_depth.into());
        Ok(toml::Value::Table(t))
    }
    fn external_inputs(&self, _s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config;
        let (chunks, _, _) = chunk::read_chunks(ctx.upstream_dir("chunk")?)?;
        let pairs = mine::read_pairs(ctx.upstream_dir("mine")?)?;
        let (split, queries) = select(&pairs, &s.eval.split);
        if queries.is_empty() {
            return Err(Error::Usage(format!("eval: no pairs in split {split:?} (eval.split = {:?})", s.eval.split)));
        }
        tracing::info!(split = %split, queries = queries.len(), chunks = chunks.len(), "evaluating");
        ctx.record_stat("split", split.clone());
        ctx.record_stat("queries", queries.len() as u64);
        let row_of: HashMap<&str, i64> =
            chunks.iter().enumerate().map(|(i, c)| (c.chunk_id.as_str(), i as i64)).collect();
        let project_of: Vec<&str> = chunks.iter().map(|c| c.project_id.as_str()).collect();
        let texts: Vec<&str> = chunks.iter().map(|c| c.embed_text.as_str()).collect();
        let qtexts: Vec<&str> = queries.iter().map(|p| p.query.as_str()).collect();
        let depth = s.index.rerank_depth as usize;
        let k = chunks.len().min(depth.max(100));

        let mut runs: Vec<SystemRun> = Vec::new();
        for model in [export::BASE, export::FINETUNED] {
            let mut m = index::ExportedModel::open(ctx, model)?;
            let (doc_emb, doc_tok, _) = m.embed(&texts, &format!("embedding chunks ({model})"))?;
            let (info, enc) = (&m.info, &m.encoder);
            let q = enc.embed_both(&qtexts)?;
            let idx = crate::index::VectorIndex::build("Flat", info.embedding_dim, &doc_emb, None)?;
            let hits = idx.search(&q.0.data, k)?;
            let systems: &[&'static str] =
                if model == export::BASE { &["base"] } else { &["coltrast", "coltrast+rerank"] };
            for &name in systems {
                let mut run = SystemRun { name, chunk_ranks: vec![], doc_ranks: vec![] };
                for (qi, pair) in queries.iter().enumerate() {
                    let ranked = if name == "coltrast+rerank" {
                        rerank_rows(&hits[qi], &q.1[qi].data, &doc_tok, info.token_dim, depth)
                    } else {
                        hits[qi].clone()
                    };
                    let rows: Vec<i64> = ranked.iter().map(|r| r.0).collect();
                    let pos = pair.positive_chunk_id.as_deref().and_then(|id| row_of.get(id)).copied();
                    let (crank, cm) = match pos {
                        Some(p) => {
                            let rel: BTreeSet<i64> = [p].into();
                            (
                                rows.iter().position(|r| *r == p).map(|i| i as i64 + 1),
                                Some(QueryMetrics::compute(&rows, &rel)),
                            )
                        }
                        None => (None, None),
                    };
                    run.chunk_ranks.push((pair.qa_id.clone(), crank, cm));
                    let docs: Vec<String> =
                        docs_from_chunks(&ranked, |r| project_of.get(r as usize).map(|p| p.to_string()))
                            .into_iter()
                            .map(|d| d.0)
                            .collect();
                    let rel: BTreeSet<String> = [pair.project_id.clone()].into();
                    let drank = docs.iter().position(|d| *d == pair.project_id).map(|i| i as i64 + 1);
                    run.doc_ranks.push((pair.qa_id.clone(), drank, QueryMetrics::compute(&docs, &rel)));
                }
                runs.push(run);
            }
        }

        // Tables.
        let mut results: Vec<(String, String, String, f64, i64)> = Vec::new();
        let mut per_query: Vec<(String, String, String, Option<i64>)> = Vec::new();
        for run in &runs {
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
        for (sys, level, metric, v, _) in &results {
            if metric == "ndcg@10" || metric == "recall@1" {
                ctx.record_stat(&format!("{sys}/{level}/{metric}"), *v);
            }
        }
        let col = |f: &dyn Fn(&(String, String, String, f64, i64)) -> String| -> ArrayRef {
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
        let md = report(&results, &split, queries.len(), chunks.len(), depth);
        let p = ctx.output(REPORT);
        std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
        Ok(())
    }
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
    let mut out = String::new();
    let _ = writeln!(out, "# eval: {queries} queries ({split} split), {chunks} chunks, rerank depth {depth}\n");
    let _ = writeln!(out, "| level | system | queries | {} |", METRIC_NAMES.join(" | "));
    let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(METRIC_NAMES.len()));
    for level in ["document", "chunk"] {
        for sys in SYSTEMS {
            if let Some(m) = by.get(&(level.to_string(), sys.to_string())) {
                let n = m.values().next().map(|x| x.1).unwrap_or(0);
                let vals: Vec<String> =
                    METRIC_NAMES.iter().map(|k| format!("{:.3}", m.get(*k).map(|x| x.0).unwrap_or(0.0))).collect();
                let _ = writeln!(out, "| {level} | {sys} | {n} | {} |", vals.join(" | "));
            }
        }
    }
    out
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
        let out = rerank_rows(&ranked, &q, &docs, 2, 3);
        let rows: Vec<i64> = out.iter().map(|r| r.0).collect();
        assert_eq!(rows, [2, 1, 0, 3]);
    }

    #[test]
    fn split_selection() {
        let mk = |s: &str| mine::Pair {
            qa_id: s.into(),
            project_id: "p".into(),
            split: s.into(),
            query: "q".into(),
            positive_text: "t".into(),
            positive_chunk_id: None,
            positive_source: "answer".into(),
            positive_score: 0.0,
            negative_chunk_ids: vec![],
            negative_texts: vec![],
            negative_scores: vec![],
        };
        let pairs = vec![mk("train"), mk("val"), mk("val")];
        assert_eq!(select(&pairs, "auto").1.len(), 2);
        assert_eq!(select(&pairs, "all").1.len(), 3);
        let beir = vec![mk("train"), mk("test"), mk("dev")];
        assert_eq!(select(&beir, "auto").0, "test");
    }
}
