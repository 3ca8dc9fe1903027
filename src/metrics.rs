//! # metrics: retrieval metrics on ranked lists
//!
//! **What.** The numbers the eval stage reports, computed the way sentence-transformers'
//! `InformationRetrievalEvaluator` (and BEIR) compute them, with binary relevance:
//! - `recall@k`: the fraction of a query's relevant documents that appear in its top `k`;
//! - `mrr@k`: `1 / rank` of the first relevant document within the top `k` (0 if none);
//! - `ndcg@k`: DCG = Σ over relevant documents at rank `r ≤ k` of `1 / log2(r + 1)`, divided by the ideal DCG
//!   of `min(|relevant|, k)` relevant documents at ranks 1, 2, ...
//!
//! A document counts once: a repeated id in a ranked list earns nothing the second time. Per query, the
//! metrics come together as [`QueryMetrics`]; [`evaluate`] averages them over queries into a map keyed
//! `"recall@1"`, `"recall@5"`, `"recall@10"`, `"mrr@10"`, `"ndcg@10"` ([`METRIC_NAMES`]). Queries without any
//! relevant document are left out of the means (as BEIR and pytrec_eval do); with no queries left every mean
//! is 0.
//!
//! Retrieval runs on chunks but is judged on documents (projects): [`docs_from_chunks`] turns a ranked chunk
//! list into a ranked, de-duplicated document list where each document takes the place (and score) of its
//! first, i.e. best-ranked, chunk.
//!
//! **Inputs.** Ranked ids, best first (any `PartialEq` type: chunk rows, project ids), and the set of relevant
//! ids (`HashSet` or `BTreeSet`).
//!
//! **Outputs.** Numbers in [0, 1]; a `BTreeMap<String, f64>` of means for the manifest and reports.
//!
//! **Example.**
//! ```
//! use std::collections::BTreeSet;
//! use coltrast::metrics::{mrr_at_k, ndcg_at_k, recall_at_k};
//! let ranked = ["a", "b", "c", "d"];
//! let relevant: BTreeSet<&str> = ["c"].into();
//! assert_eq!(recall_at_k(&ranked, &relevant, 10), 1.0);
//! assert!((mrr_at_k(&ranked, &relevant, 10) - 1.0 / 3.0).abs() < 1e-12);
//! assert!((ndcg_at_k(&ranked, &relevant, 10) - 0.5).abs() < 1e-12);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hash;

/// The keys of [`evaluate`]'s map, in report order.
pub const METRIC_NAMES: [&str; 5] = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"];

/// A set of relevant ids.
pub trait RelevantSet<T> {
    fn is_relevant(&self, id: &T) -> bool;
    fn num_relevant(&self) -> usize;
}

impl<T: Eq + Hash> RelevantSet<T> for HashSet<T> {
    fn is_relevant(&self, id: &T) -> bool {
        self.contains(id)
    }
    fn num_relevant(&self) -> usize {
        self.len()
    }
}

impl<T: Ord> RelevantSet<T> for BTreeSet<T> {
    fn is_relevant(&self, id: &T) -> bool {
        self.contains(id)
    }
    fn num_relevant(&self) -> usize {
        self.len()
    }
}

/// The 1-based ranks, within the top `k`, of the relevant documents, each document counted at its first
/// appearance only.
fn relevant_ranks<T: PartialEq, R: RelevantSet<T>>(ranked: &[T], relevant: &R, k: usize) -> Vec<usize> {
    let top = &ranked[..k.min(ranked.len())];
    top.iter()
        .enumerate()
        .filter(|(i, id)| relevant.is_relevant(id) && !top[..*i].contains(id))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Fraction of the relevant documents found in the top `k`; 0 when nothing is relevant.
pub fn recall_at_k<T: PartialEq, R: RelevantSet<T>>(ranked: &[T], relevant: &R, k: usize) -> f64 {
    let n = relevant.num_relevant();
    if n == 0 {
        return 0.0;
    }
    relevant_ranks(ranked, relevant, k).len() as f64 / n as f64
}

/// Reciprocal rank of the first relevant document in the top `k`; 0 when there is none.
pub fn mrr_at_k<T: PartialEq, R: RelevantSet<T>>(ranked: &[T], relevant: &R, k: usize) -> f64 {
    ranked.iter().take(k).position(|id| relevant.is_relevant(id)).map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// nDCG@k with binary gains and a log2 discount; the ideal DCG puts `min(|relevant|, k)` relevant documents
/// first. 0 when nothing is relevant.
pub fn ndcg_at_k<T: PartialEq, R: RelevantSet<T>>(ranked: &[T], relevant: &R, k: usize) -> f64 {
    let ideal_n = relevant.num_relevant().min(k);
    if ideal_n == 0 {
        return 0.0;
    }
    let discount = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let dcg: f64 = relevant_ranks(ranked, relevant, k).into_iter().map(discount).sum();
    let idcg: f64 = (1..=ideal_n).map(discount).sum();
    dcg / idcg
}

/// The metrics of one query.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryMetrics {
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

impl QueryMetrics {
    /// All five metrics of one ranked list.
    pub fn compute<T: PartialEq, R: RelevantSet<T>>(ranked: &[T], relevant: &R) -> QueryMetrics {
        QueryMetrics {
            recall_at_1: recall_at_k(ranked, relevant, 1),
            recall_at_5: recall_at_k(ranked, relevant, 5),
            recall_at_10: recall_at_k(ranked, relevant, 10),
            mrr_at_10: mrr_at_k(ranked, relevant, 10),
            ndcg_at_10: ndcg_at_k(ranked, relevant, 10),
        }
    }

    /// The values in [`METRIC_NAMES`] order.
    pub fn values(&self) -> [f64; 5] {
        [self.recall_at_1, self.recall_at_5, self.recall_at_10, self.mrr_at_10, self.ndcg_at_10]
    }
}

/// The mean of each metric over `per_query`, keyed by [`METRIC_NAMES`]; zeros when it is empty.
pub fn mean_metrics(per_query: &[QueryMetrics]) -> BTreeMap<String, f64> {
    let mut sums = [0f64; 5];
    for m in per_query {
        for (s, v) in sums.iter_mut().zip(m.values()) {
            *s += v;
        }
    }
    let n = per_query.len().max(1) as f64;
    METRIC_NAMES.iter().zip(sums).map(|(name, s)| (name.to_string(), s / n)).collect()
}

/// Mean metrics over queries, each given as (ranked ids, relevant ids). Queries with no relevant id are
/// skipped.
pub fn evaluate<'a, T, R, I>(queries: I) -> BTreeMap<String, f64>
where
    T: PartialEq + 'a,
    R: RelevantSet<T> + 'a,
    I: IntoIterator<Item = (&'a [T], &'a R)>,
{
    let per_query: Vec<QueryMetrics> = queries
        .into_iter()
        .filter(|(_, rel)| rel.num_relevant() > 0)
        .map(|(ranked, rel)| QueryMetrics::compute(ranked, rel))
        .collect();
    mean_metrics(&per_query)
}

/// A ranked, de-duplicated document list from a ranked chunk list: each document appears once, at the place
/// of its first (best-ranked) chunk, with that chunk's score. `doc_of` maps a chunk row to its document;
/// chunks it maps to `None` are dropped.
pub fn docs_from_chunks<D, F>(ranked_chunks: &[(i64, f32)], mut doc_of: F) -> Vec<(D, f32)>
where
    D: Eq + Hash + Clone,
    F: FnMut(i64) -> Option<D>,
{
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for &(row, score) in ranked_chunks {
        if let Some(doc) = doc_of(row) {
            if seen.insert(doc.clone()) {
                out.push((doc, score));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn one_relevant_at_rank_three() {
        let ranked = [10, 20, 30, 40];
        let rel: HashSet<i32> = [30].into();
        assert_eq!(recall_at_k(&ranked, &rel, 1), 0.0);
        assert_eq!(recall_at_k(&ranked, &rel, 2), 0.0);
        assert_eq!(recall_at_k(&ranked, &rel, 3), 1.0);
        assert!(close(mrr_at_k(&ranked, &rel, 10), 1.0 / 3.0));
        assert_eq!(mrr_at_k(&ranked, &rel, 2), 0.0);
        // DCG = 1/log2(4) = 0.5; ideal DCG = 1/log2(2) = 1.
        assert!(close(ndcg_at_k(&ranked, &rel, 10), 0.5));
        assert_eq!(ndcg_at_k(&ranked, &rel, 2), 0.0);
    }

    #[test]
    fn two_relevant_documents() {
        let ranked = ["a", "x", "b", "y"];
        let rel: BTreeSet<&str> = ["a", "b"].into();
        assert_eq!(recall_at_k(&ranked, &rel, 1), 0.5);
        assert_eq!(recall_at_k(&ranked, &rel, 5), 1.0);
        assert_eq!(mrr_at_k(&ranked, &rel, 10), 1.0);
        // DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3).
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!(close(ndcg_at_k(&ranked, &rel, 10), 1.5 / ideal));
        // With k = 1 the ideal DCG counts min(2, 1) = 1 document: nDCG@1 = 1.
        assert!(close(ndcg_at_k(&ranked, &rel, 1), 1.0));
        // Second relevant one missing entirely: recall 0.5, DCG 1, ideal 1 + 1/log2 3.
        let ranked = ["a", "x", "y"];
        assert_eq!(recall_at_k(&ranked, &rel, 10), 0.5);
        assert!(close(ndcg_at_k(&ranked, &rel, 10), 1.0 / ideal));
    }

    #[test]
    fn nothing_relevant_retrieved_is_zero() {
        let ranked = [1, 2, 3];
        let rel: HashSet<i32> = [9].into();
        let m = QueryMetrics::compute(&ranked, &rel);
        assert_eq!(m, QueryMetrics::default());
        // Empty list, empty relevant set.
        let empty: [i32; 0] = [];
        assert_eq!(QueryMetrics::compute(&empty, &rel), QueryMetrics::default());
        assert_eq!(QueryMetrics::compute(&ranked, &HashSet::new()), QueryMetrics::default());
    }

    #[test]
    fn duplicates_count_once() {
        let ranked = [5, 5, 5];
        let rel: HashSet<i32> = [5, 6].into();
        assert_eq!(recall_at_k(&ranked, &rel, 10), 0.5);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!(close(ndcg_at_k(&ranked, &rel, 10), 1.0 / ideal));
    }

    #[test]
    fn evaluate_averages_and_skips_queries_without_relevant_documents() {
        let q1 = (vec![1, 2, 3], HashSet::from([1])); // everything 1
        let q2 = (vec![1, 2, 3], HashSet::from([3])); // r@1 0, r@5 1, mrr 1/3, ndcg 0.5
        let q3 = (vec![1, 2, 3], HashSet::new()); // skipped
        let qs = [q1, q2, q3];
        let m = evaluate(qs.iter().map(|(r, rel)| (r.as_slice(), rel)));
        assert_eq!(m.keys().cloned().collect::<BTreeSet<_>>(), METRIC_NAMES.iter().map(|s| s.to_string()).collect());
        assert!(close(m["recall@1"], 0.5));
        assert!(close(m["recall@5"], 1.0));
        assert!(close(m["recall@10"], 1.0));
        assert!(close(m["mrr@10"], (1.0 + 1.0 / 3.0) / 2.0));
        assert!(close(m["ndcg@10"], 0.75));
        let none: Vec<(&[i32], &HashSet<i32>)> = Vec::new();
        assert!(evaluate(none).values().all(|&v| v == 0.0));
    }

    #[test]
    fn rank_beyond_ten_does_not_count() {
        let ranked: Vec<i32> = (0..20).collect();
        let rel = HashSet::from([12]);
        let m = QueryMetrics::compute(&ranked, &rel);
        assert_eq!(m, QueryMetrics::default());
        let rel = HashSet::from([9]); // rank 10
        let m = QueryMetrics::compute(&ranked, &rel);
        assert_eq!((m.recall_at_5, m.recall_at_10), (0.0, 1.0));
        assert!(close(m.mrr_at_10, 0.1));
        assert!(close(m.ndcg_at_10, 1.0 / 11f64.log2()));
    }

    #[test]
    fn documents_rank_at_their_best_chunk() {
        // Chunk rows → projects: 0,1 → "a"; 2 → "b"; 3,4 → "c"; 5 → unknown.
        let project = |row: i64| match row {
            0 | 1 => Some("a"),
            2 => Some("b"),
            3 | 4 => Some("c"),
            _ => None,
        };
        let ranked = [(4, 0.9), (1, 0.8), (3, 0.7), (5, 0.65), (0, 0.6), (2, 0.5)];
        let docs = docs_from_chunks(&ranked, project);
        assert_eq!(docs, vec![("c", 0.9), ("a", 0.8), ("b", 0.5)]);
        let ids: Vec<&str> = docs.iter().map(|d| d.0).collect();
        let rel: BTreeSet<&str> = ["b"].into();
        assert!(close(mrr_at_k(&ids, &rel, 10), 1.0 / 3.0));
        assert!(close(ndcg_at_k(&ids, &rel, 10), 0.5));
    }
}
