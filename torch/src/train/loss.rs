//! The ColTrast objective: `L = w_c · L_contrastive + w_li · L_late`.
//!
//! A batch holds `B` training pairs (query, positive, hard negatives). Its documents are the distinct texts
//! among the positives and hard negatives ([`BatchPlan`]); each is encoded once.
//!
//! **L_contrastive** (InfoNCE). Row `i` scores query `i` against every document by the cosine of pooled
//! embeddings divided by the temperature. Its candidates are its own positive, its own hard negatives and the
//! other queries' positives; other queries' hard negatives are not candidates. An in-batch positive that is
//! really a positive for query `i` (the same positive text, the same Q&A id or the same query text — BEIR
//! queries with several relevant documents) is masked out. The label is the column of query `i`'s own
//! positive: rows are always queries, never documents, so no row ever has a negative as its "positive".
//! Cross-entropy over the row, mean over rows.
//!
//! **L_late** (ColBERT MaxSim). For query `i` and document `d`: for each real query token the maximum cosine
//! over the document's real tokens, summed and divided by the number of real query tokens, so the score lies
//! in [-1, 1]. Padding is masked on both sides; every other token counts, `[CLS]`, `[SEP]` and punctuation
//! included. The score becomes a logit `scale · score + shift`, and binary cross-entropy takes label 1 for the
//! query's positive and 0 for each of its hard negatives (mean over all those pairs).
//!
//! **L_distill** (with `train.teacher`). Each query's own list, its positive then its hard negatives, is
//! scored by the student (pooled cosines) and, once before training, by the teacher; both lists are divided
//! by the temperature and turned into distributions by softmax, and the loss is the KL divergence from the
//! teacher's distribution to the student's (mean over queries). Unlike the 0/1 labels of the other two terms
//! it keeps how close each negative is to being right, the fine distinctions between sibling answers that
//! contrastive training on a few pairs tends to blur.

use std::collections::HashMap;

use tch::{Kind, Reduction, Tensor};

/// One training pair as the loop sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub qa_id: String,
    pub query: String,
    pub positive: String,
    pub negatives: Vec<String>,
    /// The teacher's scores of the positive and then each hard negative (cosines); empty without a teacher.
    pub teacher: Vec<f32>,
}

/// Which documents a batch encodes and how the losses read them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    /// Distinct document texts: the positives in query order, then the hard negatives not seen yet.
    pub docs: Vec<String>,
    /// Per query, the column (index into `docs`) of its own positive.
    pub labels: Vec<i64>,
    /// Row-major `[B, docs.len()]`: true where the document is a candidate for the query.
    pub candidates: Vec<bool>,
    /// Late-interaction pairs: query row, document column, label (1 positive, 0 hard negative).
    pub late_query: Vec<i64>,
    pub late_doc: Vec<i64>,
    pub late_label: Vec<f32>,
    /// Distillation, when every query has teacher scores: row-major `[B, width]` document columns (the
    /// positive first, then the hard negatives that are candidates), their teacher scores, and a mask of the
    /// real entries (rows are padded to the longest).
    pub distill: Option<Distill>,
}

/// The teacher's lists of a batch (see [`BatchPlan::distill`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Distill {
    pub width: usize,
    pub cols: Vec<i64>,
    pub teacher: Vec<f32>,
    pub mask: Vec<bool>,
}

impl BatchPlan {
    pub fn new(batch: &[&Example]) -> BatchPlan {
        fn col<'a>(text: &'a str, docs: &mut Vec<String>, index: &mut HashMap<&'a str, usize>) -> usize {
            *index.entry(text).or_insert_with(|| {
                docs.push(text.to_string());
                docs.len() - 1
            })
        }
        let mut docs: Vec<String> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let labels: Vec<i64> = batch.iter().map(|e| col(&e.positive, &mut docs, &mut index) as i64).collect();
        let mut neg_cols: Vec<Vec<usize>> = Vec::with_capacity(batch.len());
        // per query, (column, teacher score) of its distinct hard negatives
        let mut neg_teacher: Vec<Vec<(usize, Option<f32>)>> = Vec::with_capacity(batch.len());
        for e in batch {
            let mut cols = Vec::new();
            let mut with_scores = Vec::new();
            for (k, n) in e.negatives.iter().enumerate() {
                let c = col(n, &mut docs, &mut index);
                if !cols.contains(&c) {
                    cols.push(c);
                    with_scores.push((c, e.teacher.get(k + 1).copied()));
                }
            }
            neg_cols.push(cols);
            neg_teacher.push(with_scores);
        }
        let n_docs = docs.len();
        let mut candidates = vec![false; batch.len() * n_docs];
        let (mut late_query, mut late_doc, mut late_label) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in batch.iter().enumerate() {
            let row = &mut candidates[i * n_docs..(i + 1) * n_docs];
            // Other queries' positives, unless they are positives for this query too.
            for (j, other) in batch.iter().enumerate() {
                let same_qa = other.qa_id == e.qa_id || other.query == e.query;
                let c = labels[j] as usize;
                if j != i && !same_qa && c != labels[i] as usize {
                    row[c] = true;
                }
            }
            for &c in &neg_cols[i] {
                if c != labels[i] as usize {
                    row[c] = true;
                }
            }
            // A column that is the positive of another pair of the same Q&A is never a candidate.
            for (j, other) in batch.iter().enumerate() {
                if j != i && (other.qa_id == e.qa_id || other.query == e.query) {
                    row[labels[j] as usize] = false;
                }
            }
            row[labels[i] as usize] = true;
            late_query.push(i as i64);
            late_doc.push(labels[i]);
            late_label.push(1.0);
            for &c in &neg_cols[i] {
                if row[c] && c != labels[i] as usize {
                    late_query.push(i as i64);
                    late_doc.push(c as i64);
                    late_label.push(0.0);
                }
            }
        }
        let distill = if !batch.is_empty() && batch.iter().all(|e| e.teacher.len() == e.negatives.len() + 1) {
            let lists: Vec<Vec<(i64, f32)>> = batch
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let row = &candidates[i * n_docs..(i + 1) * n_docs];
                    std::iter::once((labels[i], e.teacher[0]))
                        .chain(
                            neg_teacher[i]
                                .iter()
                                .filter(|(c, _)| row[*c] && *c != labels[i] as usize)
                                .filter_map(|(c, t)| t.map(|t| (*c as i64, t))),
                        )
                        .collect()
                })
                .collect();
            let width = lists.iter().map(|l| l.len()).max().unwrap_or(1);
            let mut d = Distill { width, cols: vec![], teacher: vec![], mask: vec![] };
            for l in &lists {
                for k in 0..width {
                    let (c, t) = l.get(k).copied().unwrap_or((l[0].0, 0.0));
                    d.cols.push(c);
                    d.teacher.push(t);
                    d.mask.push(k < l.len());
                }
            }
            Some(d)
        } else {
            None
        };
        BatchPlan { docs, labels, candidates, late_query, late_doc, late_label, distill }
    }
}

/// Listwise distillation: `q` `[B, D]` and `d` `[N, D]` unit vectors, `cols` int64 `[B, W]` (each query's
/// list of document columns), `teacher` `[B, W]` cosines, `mask` bool `[B, W]` → mean over queries of
/// KL(teacher ‖ student), both distributions the softmax of the masked scores divided by `temperature`.
pub fn distill_kl(q: &Tensor, d: &Tensor, cols: &Tensor, teacher: &Tensor, mask: &Tensor, temperature: f64) -> Tensor {
    let student = q.matmul(&d.tr()).gather(1, cols, false) / temperature;
    let off = mask.logical_not();
    let log_s = student.masked_fill(&off, -1e9).log_softmax(-1, Kind::Float);
    let log_t = (teacher / temperature).masked_fill(&off, -1e9).log_softmax(-1, Kind::Float);
    let p_t = log_t.exp();
    // masked entries have p_t = 0: their terms vanish (and are zeroed to keep 0 · (-inf) out)
    let terms = (&p_t * (&log_t - &log_s)).masked_fill(&off, 0.0);
    terms.sum_dim_intlist(1, false, None::<Kind>).mean(Kind::Float)
}

/// InfoNCE over cosine similarities: `q` `[B, D]` and `d` `[N, D]` unit vectors, `candidates` bool `[B, N]`,
/// `labels` int64 `[B]` → mean cross-entropy. Non-candidates get a logit of -1e9 (zero probability, zero
/// gradient).
pub fn info_nce(q: &Tensor, d: &Tensor, candidates: &Tensor, labels: &Tensor, temperature: f64) -> Tensor {
    let logits = q.matmul(&d.tr()) / temperature;
    let logits = logits.masked_fill(&candidates.logical_not(), -1e9);
    logits.log_softmax(-1, Kind::Float).nll_loss(labels)
}

/// Normalised MaxSim scores `[P]` of pairs (`qi[p]`, `di[p]`): `q_tok` `[Bq, Lq, T]` and `d_tok` `[Bd, Ld, T]`
/// unit token vectors with their 0/1 masks `[Bq, Lq]`, `[Bd, Ld]`. Each lies in [-1, 1].
pub fn maxsim(q_tok: &Tensor, q_mask: &Tensor, d_tok: &Tensor, d_mask: &Tensor, qi: &Tensor, di: &Tensor) -> Tensor {
    let q = q_tok.index_select(0, qi);
    let qm = q_mask.index_select(0, qi).to_kind(q.kind());
    let d = d_tok.index_select(0, di);
    let d_pad = d_mask.index_select(0, di).eq(0).unsqueeze(1);
    let sim = q.bmm(&d.transpose(1, 2)).masked_fill(&d_pad, -1e4);
    let best = sim.amax(2, false);
    (best * &qm).sum_dim_intlist(1, false, None::<Kind>) / qm.sum_dim_intlist(1, false, None::<Kind>).clamp_min(1.0)
}

/// Binary cross-entropy of MaxSim logits `scale · score + shift` against 1/0 labels, mean over pairs.
pub fn late_bce(scores: &Tensor, labels: &Tensor, scale: f64, shift: f64) -> Tensor {
    let logits = scores * scale + shift;
    logits.binary_cross_entropy_with_logits::<Tensor>(labels, None, None, Reduction::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(qa: &str, q: &str, pos: &str, negs: &[&str]) -> Example {
        Example {
            qa_id: qa.into(),
            query: q.into(),
            positive: pos.into(),
            negatives: negs.iter().map(|s| s.to_string()).collect(),
            teacher: vec![],
        }
    }

    #[test]
    fn distill_lists_follow_the_candidates_and_need_every_teacher() {
        let mut a = ex("a", "qa", "P1", &["N1", "N2", "N1"]);
        a.teacher = vec![0.9, 0.5, 0.4, 0.5];
        let mut b = ex("b", "qb", "P2", &["P1"]);
        b.teacher = vec![0.8, 0.7];
        let p = BatchPlan::new(&[&a, &b]);
        let d = p.distill.clone().unwrap();
        // a: P1 (0), N1 (2), N2 (3); b: P2 (1), then P1 as its hard negative (a's positive, a candidate)
        assert_eq!(d.width, 3);
        assert_eq!(d.cols, [0, 2, 3, 1, 0, 1]);
        assert_eq!(d.teacher, [0.9, 0.5, 0.4, 0.8, 0.7, 0.0]);
        assert_eq!(d.mask, [true, true, true, true, true, false]);
        // one query without teacher scores: no distillation for the batch
        let c = ex("c", "qc", "P3", &[]);
        assert!(BatchPlan::new(&[&a, &c]).distill.is_none());
    }

    #[test]
    fn distill_kl_is_zero_when_the_student_agrees_and_grows_when_it_does_not() {
        let q = t(&[1.0, 0.0], &[1, 2]);
        let d = t(&[1.0, 0.0, 0.6, 0.8, 0.0, 1.0], &[3, 2]);
        let cols = Tensor::from_slice(&[0i64, 1, 2, 0]).view([1, 4]);
        let mask = Tensor::from_slice(&[true, true, true, false]).view([1, 4]);
        // the student's own cosines (1, 0.6, 0) as the teacher: KL 0
        let same = t(&[1.0, 0.6, 0.0, 0.3], &[1, 4]);
        let kl = distill_kl(&q, &d, &cols, &same, &mask, 0.1).double_value(&[]);
        assert!(kl.abs() < 1e-6, "{kl}");
        // a teacher that ranks the second document first
        let other = t(&[0.6, 1.0, 0.0, 0.3], &[1, 4]);
        let kl2 = distill_kl(&q, &d, &cols, &other, &mask, 0.1).double_value(&[]);
        let (s, tt) = ([10.0f64, 6.0, 0.0], [6.0f64, 10.0, 0.0]);
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want: f64 = (0..3).map(|k| (tt[k] - lse(&tt)).exp() * ((tt[k] - lse(&tt)) - (s[k] - lse(&s)))).sum();
        assert!((kl2 - want).abs() < 1e-4, "{kl2} vs {want}");
    }

    fn row(p: &BatchPlan, i: usize) -> Vec<bool> {
        let n = p.docs.len();
        p.candidates[i * n..(i + 1) * n].to_vec()
    }

    #[test]
    fn plan_labels_point_at_own_positive_and_other_negatives_are_excluded() {
        let a = ex("a", "qa", "P1", &["N1", "N2"]);
        let b = ex("b", "qb", "P2", &["N2", "N3"]);
        let p = BatchPlan::new(&[&a, &b]);
        assert_eq!(p.docs, ["P1", "P2", "N1", "N2", "N3"]);
        assert_eq!(p.labels, [0, 1]);
        // a: P1 (own), P2 (in-batch), N1, N2 (own negatives); not N3 (b's negative).
        assert_eq!(row(&p, 0), [true, true, true, true, false]);
        assert_eq!(row(&p, 1), [true, true, false, true, true]);
        assert_eq!(p.late_query, [0, 0, 0, 1, 1, 1]);
        assert_eq!(p.late_doc, [0, 2, 3, 1, 3, 4]);
        assert_eq!(p.late_label, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn duplicate_positives_and_same_qa_are_masked() {
        // b shares a's positive text; c is the same Q&A as a with another positive (BEIR, two qrels);
        // d asks the same question under another id.
        let a = ex("q1", "what", "P", &["N"]);
        let b = ex("q2", "other", "P", &[]);
        let c = ex("q1", "what", "P3", &[]);
        let d = ex("q9", "what", "P4", &[]);
        let p = BatchPlan::new(&[&a, &b, &c, &d]);
        assert_eq!(p.docs, ["P", "P3", "P4", "N"]);
        assert_eq!(p.labels, [0, 0, 1, 2]);
        // a: its positive P; P3 (same Q&A) and P4 (same query) masked; N its negative.
        assert_eq!(row(&p, 0), [true, false, false, true]);
        // b: the label column P is its own; P3 and P4 are genuine in-batch negatives for it.
        assert_eq!(row(&p, 1), [true, true, true, false]);
        // c: P (the positive of the same Q&A) masked.
        assert_eq!(row(&p, 2), [false, true, false, false]);
        for i in 0..4 {
            assert!(row(&p, i)[p.labels[i] as usize], "the label is always a candidate");
        }
    }

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn info_nce_matches_hand_computation() {
        // Two queries, three docs (2-d unit vectors). q0 = (1,0), q1 = (0,1);
        // d0 = (1,0), d1 = (0,1), d2 = (0.6, 0.8).
        let q = t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
        let d = t(&[1.0, 0.0, 0.0, 1.0, 0.6, 0.8], &[3, 2]);
        let tau = 0.5;
        // Row 0: all three candidates, label 0. Row 1: d2 masked, label 1.
        let cand = Tensor::from_slice(&[true, true, true, true, true, false]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 1]);
        let got = info_nce(&q, &d, &cand, &labels, tau).double_value(&[]);
        let l0 = {
            let (a, b, c) = (1.0 / tau, 0.0 / tau, 0.6 / tau);
            -(f64::exp(a) / (f64::exp(a) + f64::exp(b) + f64::exp(c))).ln()
        };
        let l1 = {
            let (a, b) = (0.0 / tau, 1.0 / tau);
            -(f64::exp(b) / (f64::exp(a) + f64::exp(b))).ln()
        };
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-5, "{got} vs {}", (l0 + l1) / 2.0);
        // Diagonal labels on a "positive" that is really a negative would differ: label 2 for row 0.
        let wrong = info_nce(&q, &d, &cand, &Tensor::from_slice(&[2i64, 1]), tau).double_value(&[]);
        assert!((wrong - got).abs() > 0.1);
    }

    #[test]
    fn maxsim_masks_padding_on_both_sides_and_normalises() {
        // Query: 2 real tokens + 1 pad; doc: 2 real tokens + 1 pad whose vector would win every max.
        let q_tok = t(&[1.0, 0.0, 0.0, 1.0, 0.6, 0.8], &[1, 3, 2]);
        let q_mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        let d_tok = t(&[1.0, 0.0, -1.0, 0.0, 0.6, 0.8], &[1, 3, 2]);
        let d_mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        let idx = Tensor::from_slice(&[0i64]);
        let s = maxsim(&q_tok, &q_mask, &d_tok, &d_mask, &idx, &idx).double_value(&[0]);
        // q token (1,0): max(1, -1) = 1; q token (0,1): max(0, 0) = 0; mean over 2 real tokens = 0.5.
        assert!((s - 0.5).abs() < 1e-6, "{s}");
        // Without the doc mask the pad (0.6,0.8) would give (0.6 + 0.8)/2 = 0.7 ... check masks matter.
        let all = Tensor::from_slice(&[1i64, 1, 1]).view([1, 3]);
        let s2 = maxsim(&q_tok, &all, &d_tok, &all, &idx, &idx).double_value(&[0]);
        assert!((s2 - (1.0 + 0.8 + 1.0) / 3.0).abs() < 1e-6, "{s2}");
        // BCE on a positive with score 0.5, scale 10, shift -5: logit 0, loss ln 2.
        let l = late_bce(&Tensor::from_slice(&[0.5f32]), &Tensor::from_slice(&[1.0f32]), 10.0, -5.0);
        assert!((l.double_value(&[]) - 2f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn maxsim_scores_stay_in_range() {
        tch::manual_seed(0);
        let norm = |x: Tensor| &x / x.norm_scalaropt_dim(2, [-1], true);
        let q = norm(Tensor::randn([3, 5, 4], (Kind::Float, tch::Device::Cpu)));
        let d = norm(Tensor::randn([2, 7, 4], (Kind::Float, tch::Device::Cpu)));
        let qm = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]).view([3, 5]);
        let dm = Tensor::ones([2, 7], (Kind::Int64, tch::Device::Cpu));
        let qi = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let di = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let s = Vec::<f32>::try_from(maxsim(&q, &qm, &d, &dm, &qi, &di)).unwrap();
        assert!(s.iter().all(|x| (-1.0..=1.0).contains(x)), "{s:?}");
    }
}
