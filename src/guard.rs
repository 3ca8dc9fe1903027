//! # guard: never serve a model that validation says is worse than its base
//!
//! **What.** Fine-tuning on a few dozen labelled questions can make a good pretrained encoder worse on some
//! data (issue 22: −0.013 to −0.017 document nDCG@10 on two FAQ sets). The index stage therefore decides
//! which exported model it indexes and the query commands serve, from the validation queries of the mine
//! stage (split `val` or `dev`, never `test`):
//!
//! - Each model ranks every chunk for each validation query as it would be served: dense, fused with BM25 at
//!   `index.lexical_weight` when that is above 0 (the `+hybrid` systems of eval).
//! - The score is document-level nDCG@10 (a query's document ranks at its best chunk), compared per query:
//!   `d` is the mean of the paired differences (fine-tuned − base) and `se` its standard error.
//! - `export.model = "auto"` serves the fine-tuned model unless it is below the base model by more than the
//!   noise: `d < −(export.guard_margin + export.guard_noise · se)`; then the base model. With the 7 validation
//!   questions of a small dev set one question moving from rank 1 to 2 is −0.05: a guard without the noise
//!   term would act on a coin flip. A tie serves the fine-tuned model. Without validation queries the
//!   fine-tuned model is served and the reason says it went unchecked. `"coltrast"` and `"base"` force a model.
//!
//! **Outputs.** [`Served`], written into the index stage's `index.json` (key `served`) and its manifest
//! stats, read back by the query commands and the server ([`read`]), and reported by eval (its last line).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::artifacts::export::ExportedModel;
use crate::artifacts::{chunks, pairs, StageId};
use crate::engine::StageContext;
use crate::error::{Error, Result};
use crate::metrics::{docs_from_chunks, QueryMetrics};
use crate::settings::{ServedModel, Settings};

/// The exported model names (the export stage's output dirs).
pub const FINETUNED: &str = "coltrast";
pub const BASE: &str = "base";

/// One model's validation score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValScore {
    /// Mean document-level nDCG@10 over the validation queries.
    pub document: f64,
    /// Mean chunk-level nDCG@10 over the validation queries whose positive is a chunk (None: none is).
    pub chunk: Option<f64>,
}

/// Both models on the same validation queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub base: ValScore,
    pub coltrast: ValScore,
    /// Per query, document nDCG@10 of the fine-tuned model minus the base model's.
    pub diffs: Vec<f64>,
    /// How many of the queries are synthetic (the generate stage's): 0 unless the dataset's own validation
    /// questions are missing or `export.guard_queries = "all"`.
    pub synthetic: usize,
}

impl Validation {
    /// The standard error of the mean paired difference (0 with fewer than two queries).
    pub fn standard_error(&self) -> f64 {
        let n = self.diffs.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.diffs.iter().sum::<f64>() / n as f64;
        let var = self.diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt()
    }
}

/// What is served, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// The exported model dir: [`FINETUNED`] or [`BASE`].
    pub model: String,
    /// The system as eval names it: `base`, `base+hybrid`, `coltrast` or `coltrast+hybrid`.
    pub system: String,
    /// `export.model` as set: `auto`, `coltrast` or `base`.
    pub setting: String,
    /// Validation queries the choice was made on (0: none, or a forced setting).
    pub val_queries: usize,
    pub val_base: Option<ValScore>,
    pub val_coltrast: Option<ValScore>,
    /// The noise the guard allowed: `export.guard_margin + export.guard_noise · se` (None: not measured).
    #[serde(default)]
    pub val_noise: Option<f64>,
    /// One line: why this model.
    pub reason: String,
}

impl Served {
    /// The fine-tuned model's validation nDCG@10 minus the base model's, when both were measured.
    pub fn val_gain(&self) -> Option<f64> {
        Some(self.val_coltrast?.document - self.val_base?.document)
    }

    /// The line `coltrast run` ends with, e.g. `served: base+hybrid (coltrast was −0.012 on validation)`.
    pub fn line(&self) -> String {
        format!("served: {} ({})", self.system, self.reason)
    }
}

/// The system name of `model` served dense or hybrid.
pub fn system_name(model: &str, hybrid: bool) -> String {
    if hybrid {
        format!("{model}+hybrid")
    } else {
        model.to_string()
    }
}

fn signed(x: f64) -> String {
    // a true minus sign reads better than a hyphen in the final line
    if x < 0.0 {
        format!("\u{2212}{:.3}", -x)
    } else {
        format!("+{x:.3}")
    }
}

/// The choice, from the setting, whether the served systems are hybrid, the margin and the number of standard
/// errors that count as noise, and both models' validation scores (None: no validation queries).
pub fn choose(setting: ServedModel, hybrid: bool, margin: f64, noise: f64, val: Option<&Validation>) -> Served {
    let n = val.map_or(0, |v| v.diffs.len());
    let queries = match val.map_or(0, |v| v.synthetic) {
        0 => format!("{n} queries"),
        k => format!("{n} queries, {k} synthetic"),
    };
    let allowed = val.map(|v| margin + noise * v.standard_error());
    let make = |model: &str, reason: String| Served {
        model: model.to_string(),
        system: system_name(model, hybrid),
        setting: setting.as_str().to_string(),
        val_queries: n,
        val_base: val.map(|v| v.base),
        val_coltrast: val.map(|v| v.coltrast),
        val_noise: allowed,
        reason,
    };
    match (setting, val, allowed) {
        (ServedModel::Coltrast, ..) => make(FINETUNED, "export.model = \"coltrast\"".into()),
        (ServedModel::Base, ..) => make(BASE, "export.model = \"base\"".into()),
        (ServedModel::Auto, Some(v), Some(allowed)) if n > 0 => {
            let d = v.coltrast.document - v.base.document;
            let eps = 1e-9;
            if d < -allowed - eps {
                make(BASE, format!("coltrast was {} on validation, {queries}, noise ±{allowed:.3}", signed(d)))
            } else if d < -eps {
                make(FINETUNED, format!("{} on validation, {queries}: within the noise ±{allowed:.3}", signed(d)))
            } else if d <= eps {
                make(FINETUNED, format!("tied with base on validation, {queries}"))
            } else {
                make(FINETUNED, format!("{} over base on validation, {queries}", signed(d)))
            }
        }
        (ServedModel::Auto, ..) => {
            make(FINETUNED, "no validation queries: coltrast was not checked against the base model".into())
        }
    }
}

/// A query to score: its relevant document and, when it has one, its positive chunk's row.
pub struct Judged<'a> {
    pub document: &'a str,
    pub positive_row: Option<i64>,
}

/// Mean document-level and chunk-level nDCG@10 of `rankings` (chunk rows, best first) of `queries`, and each
/// query's document-level nDCG@10; `document_of[row]` is a chunk row's document.
pub fn score(rankings: &[Vec<(i64, f32)>], queries: &[Judged<'_>], document_of: &[&str]) -> (ValScore, Vec<f64>) {
    let mut doc = Vec::with_capacity(queries.len());
    let mut chunk = Vec::new();
    for (ranked, q) in rankings.iter().zip(queries) {
        let docs: Vec<&str> =
            docs_from_chunks(ranked, |r| document_of.get(r as usize).copied()).into_iter().map(|d| d.0).collect();
        let rel: BTreeSet<&str> = [q.document].into();
        doc.push(QueryMetrics::compute(&docs, &rel).ndcg_at_10);
        if let Some(p) = q.positive_row {
            let rows: Vec<i64> = ranked.iter().map(|r| r.0).collect();
            chunk.push(QueryMetrics::compute(&rows, &BTreeSet::from([p])).ndcg_at_10);
        }
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    (ValScore { document: mean(&doc), chunk: (!chunk.is_empty()).then(|| mean(&chunk)) }, doc)
}

/// Chunk row by chunk id, for [`Judged::positive_row`].
pub fn rows_by_id<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<&'a str, i64> {
    ids.enumerate().map(|(i, id)| (id, i as i64)).collect()
}

/// The index stage's `index.json`, as far as the served choice goes.
#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    served: Option<Served>,
    #[serde(default)]
    onnx_model: Option<String>,
}

/// What the index at `index_dir` serves, from its `index.json`. An index from before the guard names only
/// its model (`onnx_model`); one without even that serves what `export.model` says (`auto`: coltrast).
pub fn read(index_dir: &Path, s: &Settings) -> Result<Served> {
    let p = index_dir.join("index.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let j: IndexJson =
        serde_json::from_str(&text).map_err(|e| Error::data(&p, "index.json", format!("not valid JSON: {e}")))?;
    if let Some(served) = j.served {
        if served.model != FINETUNED && served.model != BASE {
            return Err(Error::data(
                &p,
                "served.model",
                format!("expected \"coltrast\" or \"base\", got {:?}", served.model),
            ));
        }
        return Ok(served);
    }
    let model = j.onnx_model.unwrap_or_else(|| match s.export.model {
        ServedModel::Base => BASE.to_string(),
        _ => FINETUNED.to_string(),
    });
    Ok(Served {
        system: system_name(&model, s.index.lexical_weight > 0.0),
        model,
        setting: s.export.model.as_str().to_string(),
        val_queries: 0,
        val_base: None,
        val_coltrast: None,
        val_noise: None,
        reason: "index built before the validation guard".into(),
    })
}

/// The validation pairs (split `val` or `dev`) the guard decides on: under `"labelled"` the dataset's own
/// questions, or the synthetic ones when there are none; under `"all"` every one.
pub fn guard_queries(pairs: &[pairs::Pair], which: crate::settings::GuardQueries) -> Vec<&pairs::Pair> {
    let val: Vec<&pairs::Pair> = pairs.iter().filter(|p| p.split.is_validation()).collect();
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
    chunks: &[chunks::Chunk],
    texts: &[&str],
    what: &str,
) -> Result<(Served, Option<crate::executor::Prefill>)> {
    let s = ctx.config;
    let w = s.index.lexical_weight as f32;
    let hybrid = w > 0.0;
    if s.export.model != ServedModel::Auto {
        return Ok((choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, None), None));
    }
    let pairs = pairs::read_pairs(ctx.upstream_dir(StageId::Mine)?)?;
    let val = guard_queries(&pairs, s.export.guard_queries);
    if val.is_empty() || chunks.is_empty() {
        return Ok((choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, None), None));
    }
    let row_of = rows_by_id(chunks.iter().map(|c| c.chunk_id.as_str()));
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
    for name in [BASE, FINETUNED] {
        let mut m = ExportedModel::open(ctx, name)?;
        prefills.push(m.prefill(s, texts, &format!("{what}, {name}"))?);
        let (emb, _, _) = m.embed(texts, &format!("embedding chunks ({name}, validation guard)"))?;
        let idx = crate::index::VectorIndex::build("Flat", m.info.embedding_dim, &emb, None)?;
        let q = m.encoder.embed(&queries)?;
        let mut hits = idx.search(&q.data, k)?;
        if hybrid {
            hits = hits.iter().zip(&lexical).map(|(d, l)| crate::lexical::fuse(d, l, w)).collect();
        }
        scores.push(score(&hits, &judged, &document_of));
    }
    tracing::info!(queries = val.len(), base = ?scores[0].0, coltrast = ?scores[1].0, "validation guard");
    let (base, coltrast) = (scores.swap_remove(0), scores.swap_remove(0));
    let diffs = coltrast.1.iter().zip(&base.1).map(|(c, b)| c - b).collect();
    let synthetic = val.iter().filter(|p| !p.is_labelled()).count();
    let v = Validation { base: base.0, coltrast: coltrast.0, diffs, synthetic };
    let choice = choose(s.export.model, hybrid, s.export.guard_margin, s.export.guard_noise, Some(&v));
    let pre = prefills.swap_remove(if choice.model == BASE { 0 } else { 1 });
    Ok((choice, Some(pre)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(document: f64, chunk: Option<f64>) -> ValScore {
        ValScore { document, chunk }
    }

    /// `n` queries where the fine-tuned model loses `lost` of them by `by` each and ties the rest.
    fn val(n: usize, lost: usize, by: f64, base: f64) -> Validation {
        let diffs: Vec<f64> = (0..n).map(|i| if i < lost { -by } else { 0.0 }).collect();
        let d = diffs.iter().sum::<f64>() / n as f64;
        Validation { base: v(base, None), coltrast: v(base + d, None), diffs, synthetic: 0 }
    }

    #[test]
    fn a_worse_finetuned_model_is_not_served() {
        // 40 queries, 4 lost by 0.369 (rank 1 → 2): −0.037, beyond one standard error (0.018)
        let w = val(40, 4, 0.369, 0.8);
        assert!((w.standard_error() - 0.0184).abs() < 1e-3, "{}", w.standard_error());
        let s = choose(ServedModel::Auto, true, 0.0, 1.0, Some(&w));
        assert_eq!((s.model.as_str(), s.system.as_str()), ("base", "base+hybrid"));
        assert_eq!(
            s.line(),
            "served: base+hybrid (coltrast was \u{2212}0.037 on validation, 40 queries, noise ±0.018)"
        );
        assert!((s.val_gain().unwrap() + 0.0369).abs() < 1e-9);
        // without the noise term even that is acted on; with a margin of 0.05 it is not
        assert_eq!(choose(ServedModel::Auto, true, 0.0, 0.0, Some(&val(40, 1, 0.369, 0.8))).model, "base");
        assert_eq!(choose(ServedModel::Auto, true, 0.05, 0.0, Some(&w)).model, "coltrast");
    }

    #[test]
    fn one_question_of_seven_is_noise_and_a_tie_serves_the_finetuned_model() {
        // the small dev set: 7 validation questions, one moves from rank 1 to 2
        let s = choose(ServedModel::Auto, true, 0.0, 1.0, Some(&val(7, 1, 0.369, 0.9)));
        assert_eq!(s.model, "coltrast", "{}", s.reason);
        assert!(s.reason.contains("within the noise"), "{}", s.reason);
        // two of seven is more than the noise
        assert_eq!(choose(ServedModel::Auto, true, 0.0, 1.0, Some(&val(7, 3, 0.369, 0.9))).model, "base");
        let tie = choose(ServedModel::Auto, false, 0.0, 1.0, Some(&val(7, 0, 0.0, 1.0)));
        assert_eq!((tie.model.as_str(), tie.reason.as_str()), ("coltrast", "tied with base on validation, 7 queries"));
        let better = Validation { base: v(0.8, None), coltrast: v(0.83, None), diffs: vec![0.03; 10], synthetic: 0 };
        let s = choose(ServedModel::Auto, false, 0.0, 1.0, Some(&better));
        assert_eq!((s.system.as_str(), s.reason.as_str()), ("coltrast", "+0.030 over base on validation, 10 queries"));
        let mixed = Validation { synthetic: 4, ..better };
        let s = choose(ServedModel::Auto, false, 0.0, 1.0, Some(&mixed));
        assert_eq!(s.reason, "+0.030 over base on validation, 10 queries, 4 synthetic");
    }

    #[test]
    fn forced_settings_and_no_validation() {
        let worse = val(40, 40, 0.5, 0.9);
        assert_eq!(choose(ServedModel::Coltrast, false, 0.0, 1.0, Some(&worse)).model, "coltrast");
        assert_eq!(choose(ServedModel::Base, false, 0.0, 1.0, None).model, "base");
        let s = choose(ServedModel::Auto, false, 0.0, 1.0, None);
        assert_eq!(s.model, "coltrast");
        assert!(s.reason.contains("no validation"), "{}", s.reason);
    }

    #[test]
    fn scores_documents_at_their_best_chunk() {
        // rows 0,1 are document a; 2 is b; 3 is c
        let docs = ["a", "a", "b", "c"];
        let q = [Judged { document: "b", positive_row: Some(2) }, Judged { document: "a", positive_row: None }];
        let rankings = vec![vec![(0, 0.9), (1, 0.8), (2, 0.7)], vec![(1, 0.9), (3, 0.5)]];
        let (s, per_query) = score(&rankings, &q, &docs);
        // query 1: b at document rank 2 (1/log2 3), chunk rank 3 (1/log2 4 = 0.5); query 2: a first (1)
        assert!((per_query[0] - 1.0 / 3f64.log2()).abs() < 1e-12 && per_query[1] == 1.0, "{per_query:?}");
        let want = (1.0 / 3f64.log2() + 1.0) / 2.0;
        assert!((s.document - want).abs() < 1e-12, "{s:?}");
        assert!((s.chunk.unwrap() - 0.5).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn reads_what_the_index_wrote_and_refuses_an_unknown_model() {
        let dir = tempfile::tempdir().unwrap();
        let served = choose(ServedModel::Auto, true, 0.0, 1.0, Some(&val(20, 10, 0.5, 0.9)));
        assert_eq!(served.model, "base");
        let j = serde_json::json!({ "model": "auto", "onnx_model": "base", "served": served });
        std::fs::write(dir.path().join("index.json"), j.to_string()).unwrap();
        assert_eq!(read(dir.path(), &Settings::default()).unwrap(), served);
        let old = serde_json::json!({ "model": "base", "onnx_model": "base" });
        std::fs::write(dir.path().join("index.json"), old.to_string()).unwrap();
        assert_eq!(read(dir.path(), &Settings::default()).unwrap().model, "base");
        let mut bad = served.clone();
        bad.model = "other".into();
        std::fs::write(dir.path().join("index.json"), serde_json::json!({ "served": bad }).to_string()).unwrap();
        let e = read(dir.path(), &Settings::default()).unwrap_err().to_string();
        assert!(e.contains("index.json") && e.contains("served.model"), "{e}");
    }
}

#[cfg(test)]
mod guard_query_tests {
    use super::*;
    use crate::settings::GuardQueries;

    fn pair(id: &str, split: &str, source: &str) -> pairs::Pair {
        pairs::Pair {
            qa_id: id.into(),
            project_id: "p".into(),
            split: split.parse().unwrap(),
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

    fn ids(v: Vec<&pairs::Pair>) -> Vec<&str> {
        v.into_iter().map(|p| p.qa_id.as_str()).collect()
    }

    #[test]
    fn the_guard_decides_on_labelled_validation_questions_unless_there_are_none() {
        let pairs = vec![
            pair("q1", "val", pairs::LABELLED),
            pair("g1", "val", "cloze"),
            pair("q2", "dev", pairs::LABELLED),
            pair("q3", "train", pairs::LABELLED),
            pair("q4", "test", pairs::LABELLED),
            pair("g2", "val", "llm"),
        ];
        assert_eq!(ids(guard_queries(&pairs, GuardQueries::Labelled)), ["q1", "q2"]);
        assert_eq!(ids(guard_queries(&pairs, GuardQueries::All)), ["q1", "g1", "q2", "g2"]);
        // only synthetic validation queries: better than none
        let synthetic_only: Vec<pairs::Pair> = pairs.into_iter().filter(|p| p.source != pairs::LABELLED).collect();
        assert_eq!(ids(guard_queries(&synthetic_only, GuardQueries::Labelled)), ["g1", "g2"]);
    }
}
