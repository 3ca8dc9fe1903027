//! # guard: never serve a model that validation says is worse than its base
//!
//! **What.** Fine-tuning on a few dozen labelled questions can make a good pretrained encoder worse on some
//! data (issue 22: −0.013 to −0.017 document nDCG@10 on two FAQ sets). The index stage therefore decides
//! which exported model it indexes and the query commands serve, from the validation queries of the mine
//! stage (split `val` or `dev`, never `test`):
//!
//! - Each model ranks every chunk for each validation query as it would be served: dense, fused with BM25 at
//!   `index.lexical_weight` when that is above 0 (the `+hybrid` systems of eval).
//! - The score is document-level nDCG@10 (a query's document ranks at its best chunk), with chunk-level
//!   nDCG@10 of the positive chunk as the tie-break (a sample where every system finds every document ties at
//!   document level).
//! - `export.model = "auto"` serves the fine-tuned model unless its validation score is below the base
//!   model's by more than `export.guard_margin`; then the base model. Without validation queries the
//!   fine-tuned model is served and the reason says it went unchecked. `"coltrast"` and `"base"` force a model.
//!
//! **Outputs.** [`Served`], written into the index stage's `index.json` (key `served`) and its manifest
//! stats, read back by the query commands and the server ([`read`]), and reported by eval (its last line).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

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

/// The choice, from the setting, whether the served systems are hybrid, and the validation scores of both
/// models (None: no validation queries).
pub fn choose(setting: ServedModel, hybrid: bool, margin: f64, val: Option<(usize, ValScore, ValScore)>) -> Served {
    let (val_queries, val_base, val_coltrast) = match val {
        Some((n, b, c)) => (n, Some(b), Some(c)),
        None => (0, None, None),
    };
    let make = |model: &str, reason: String| Served {
        model: model.to_string(),
        system: system_name(model, hybrid),
        setting: setting.as_str().to_string(),
        val_queries,
        val_base,
        val_coltrast,
        reason,
    };
    match (setting, val) {
        (ServedModel::Coltrast, _) => make(FINETUNED, "export.model = \"coltrast\"".into()),
        (ServedModel::Base, _) => make(BASE, "export.model = \"base\"".into()),
        (ServedModel::Auto, None) => {
            make(FINETUNED, "no validation queries: coltrast was not checked against the base model".into())
        }
        (ServedModel::Auto, Some((n, b, c))) => {
            let d = c.document - b.document;
            let eps = 1e-9;
            if d < -margin - eps {
                make(BASE, format!("coltrast was {} on validation, {n} queries", signed(d)))
            } else if d.abs() <= eps {
                match (c.chunk, b.chunk) {
                    (Some(cc), Some(bc)) if cc + eps < bc - margin => make(
                        BASE,
                        format!(
                            "tied on validation at document level ({n} queries); coltrast was {} at chunk level",
                            signed(cc - bc)
                        ),
                    ),
                    (Some(cc), Some(bc)) => make(
                        FINETUNED,
                        format!(
                            "tied with base on validation at document level ({n} queries); {} at chunk level",
                            signed(cc - bc)
                        ),
                    ),
                    _ => make(FINETUNED, format!("tied with base on validation ({n} queries)")),
                }
            } else if d < 0.0 {
                make(
                    FINETUNED,
                    format!("{} on validation, {n} queries: within export.guard_margin {margin}", signed(d)),
                )
            } else {
                make(FINETUNED, format!("{} over base on validation, {n} queries", signed(d)))
            }
        }
    }
}

/// A query to score: its relevant document and, when it has one, its positive chunk's row.
pub struct Judged<'a> {
    pub document: &'a str,
    pub positive_row: Option<i64>,
}

/// Mean document-level and chunk-level nDCG@10 of `rankings` (chunk rows, best first) of `queries`;
/// `document_of[row]` is a chunk row's document.
pub fn score(rankings: &[Vec<(i64, f32)>], queries: &[Judged<'_>], document_of: &[&str]) -> ValScore {
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
    ValScore { document: mean(&doc), chunk: (!chunk.is_empty()).then(|| mean(&chunk)) }
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
        reason: "index built before the validation guard".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(document: f64, chunk: Option<f64>) -> ValScore {
        ValScore { document, chunk }
    }

    #[test]
    fn a_worse_finetuned_model_is_not_served() {
        let s = choose(ServedModel::Auto, true, 0.0, Some((40, v(0.80, None), v(0.788, None))));
        assert_eq!((s.model.as_str(), s.system.as_str()), ("base", "base+hybrid"));
        assert_eq!(s.line(), "served: base+hybrid (coltrast was \u{2212}0.012 on validation, 40 queries)");
        assert!((s.val_gain().unwrap() + 0.012).abs() < 1e-12);
        // better, or worse within the margin: the fine-tuned model
        let s = choose(ServedModel::Auto, false, 0.0, Some((40, v(0.80, None), v(0.83, None))));
        assert_eq!(s.system, "coltrast");
        let s = choose(ServedModel::Auto, false, 0.02, Some((40, v(0.80, None), v(0.79, None))));
        assert_eq!(s.system, "coltrast", "{}", s.reason);
        let s = choose(ServedModel::Auto, false, 0.005, Some((40, v(0.80, None), v(0.79, None))));
        assert_eq!(s.system, "base");
    }

    #[test]
    fn ties_go_to_the_chunk_level_then_to_the_finetuned_model() {
        let s = choose(ServedModel::Auto, true, 0.0, Some((3, v(1.0, Some(0.938)), v(1.0, Some(1.0)))));
        assert_eq!(s.model, "coltrast");
        assert!(s.reason.contains("+0.062 at chunk level"), "{}", s.reason);
        let s = choose(ServedModel::Auto, true, 0.0, Some((3, v(1.0, Some(1.0)), v(1.0, Some(0.9)))));
        assert_eq!(s.model, "base");
        let s = choose(ServedModel::Auto, true, 0.0, Some((3, v(1.0, None), v(1.0, None))));
        assert_eq!(s.model, "coltrast");
    }

    #[test]
    fn forced_settings_and_no_validation() {
        let worse = Some((40, v(0.9, None), v(0.1, None)));
        assert_eq!(choose(ServedModel::Coltrast, false, 0.0, worse).model, "coltrast");
        assert_eq!(choose(ServedModel::Base, false, 0.0, Some((40, v(0.1, None), v(0.9, None)))).model, "base");
        let s = choose(ServedModel::Auto, false, 0.0, None);
        assert_eq!(s.model, "coltrast");
        assert!(s.reason.contains("no validation"), "{}", s.reason);
    }

    #[test]
    fn scores_documents_at_their_best_chunk() {
        // rows 0,1 are document a; 2 is b; 3 is c
        let docs = ["a", "a", "b", "c"];
        let q = [Judged { document: "b", positive_row: Some(2) }, Judged { document: "a", positive_row: None }];
        let rankings = vec![vec![(0, 0.9), (1, 0.8), (2, 0.7)], vec![(1, 0.9), (3, 0.5)]];
        let s = score(&rankings, &q, &docs);
        // query 1: b at document rank 2 (1/log2 3), chunk rank 3 (1/log2 4 = 0.5); query 2: a first (1)
        let want = (1.0 / 3f64.log2() + 1.0) / 2.0;
        assert!((s.document - want).abs() < 1e-12, "{s:?}");
        assert!((s.chunk.unwrap() - 0.5).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn reads_what_the_index_wrote_and_refuses_an_unknown_model() {
        let dir = tempfile::tempdir().unwrap();
        let served = choose(ServedModel::Auto, true, 0.0, Some((5, v(0.9, None), v(0.8, None))));
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
